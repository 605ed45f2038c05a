"""Shared pieces of the Shapes World CLIP trainer / evaluator: the model (plain torch, HF CLIPModel
semantics and exact state_dict names), the CLIPImageProcessor preprocessing, the config, and the
folder reader. Run everything with /usr/bin/python3 (torch 1.13, numpy, Pillow)."""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tools", "shapes"))
sys.path.insert(0, os.path.join(REPO, "tools", "reference"))
sys.path.insert(0, HERE)

import render  # noqa: E402
from clip_bpe import ClipBpe  # noqa: E402

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
TRANSFORMERS_VERSION = "4.46.3"

# ----------------------------------------------------------------------------- config

IMAGE_SIZE = 64


def make_config(projection_dim=128, vision=None, text=None, dtype="float16"):
    t = dict(attention_dropout=0.0, bos_token_id=998, eos_token_id=999, hidden_act="quick_gelu", hidden_size=128,
             initializer_factor=1.0, initializer_range=0.02, intermediate_size=512, layer_norm_eps=1e-05,
             max_position_embeddings=77, model_type="clip_text_model", num_attention_heads=4, num_hidden_layers=3,
             pad_token_id=1, projection_dim=projection_dim, vocab_size=1000)
    v = dict(attention_dropout=0.0, hidden_act="quick_gelu", hidden_size=128, image_size=IMAGE_SIZE,
             initializer_factor=1.0, initializer_range=0.02, intermediate_size=512, layer_norm_eps=1e-05,
             model_type="clip_vision_model", num_attention_heads=4, num_channels=3, num_hidden_layers=4,
             patch_size=8, projection_dim=projection_dim)
    t.update(text or {})
    v.update(vision or {})
    return dict(architectures=["CLIPModel"], initializer_factor=1.0, logit_scale_init_value=2.6592,
                model_type="clip", projection_dim=projection_dim, text_config=t, torch_dtype=dtype,
                transformers_version=TRANSFORMERS_VERSION, vision_config=v)


def preprocessor_config(size=IMAGE_SIZE):
    return dict(crop_size={"height": size, "width": size}, do_center_crop=True, do_convert_rgb=True,
                do_normalize=True, do_rescale=True, do_resize=True, image_mean=OPENAI_CLIP_MEAN,
                image_processor_type="CLIPImageProcessor", image_std=OPENAI_CLIP_STD,
                processor_class="CLIPProcessor", resample=3, rescale_factor=1 / 255,
                size={"shortest_edge": size})


# ----------------------------------------------------------------------------- preprocessing

_MEAN = np.array(OPENAI_CLIP_MEAN, dtype=np.float32)[:, None, None]
_STD = np.array(OPENAI_CLIP_STD, dtype=np.float32)[:, None, None]


def preprocess(img, size=IMAGE_SIZE):
    """HF CLIPImageProcessor: RGB, resize shortest edge to `size` (PIL bicubic), center crop size x size,
    x/255, normalize with the OpenAI mean/std. Returns float32 [3, size, size]."""
    img = img.convert("RGB")
    w, h = img.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    if (nw, nh) != (size, size):
        img = img.crop((left, top, left + size, top + size))
    a = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) * np.float32(1 / 255)
    return (a - _MEAN) / _STD


# ----------------------------------------------------------------------------- model (HF names)

class Linear(nn.Linear):
    """nn.Linear (same parameters and names) computed as a 1x1 convolution over N = rows: this torch build
    has only a generic BLAS (~5 GFLOP/s on 2 cores) but oneDNN convolutions (~30-50 GFLOP/s)."""

    def forward(self, x):
        shp = x.shape
        y = F.conv2d(x.reshape(-1, shp[-1], 1, 1), self.weight[:, :, None, None], self.bias)
        return y.reshape(*shp[:-1], self.out_features)


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.k_proj = Linear(d, d)
        self.v_proj = Linear(d, d)
        self.q_proj = Linear(d, d)
        self.out_proj = Linear(d, d)

    def forward(self, x, mask):
        B, L, D = x.shape
        hd = D // self.heads
        q = self.q_proj(x).view(B, L, self.heads, hd).transpose(1, 2) * hd ** -0.5
        k = self.k_proj(x).view(B, L, self.heads, hd).transpose(1, 2)
        v = self.v_proj(x).view(B, L, self.heads, hd).transpose(1, 2)
        s = q @ k.transpose(-1, -2)
        if mask is not None:
            s = s + mask
        o = torch.softmax(s, dim=-1) @ v
        return self.out_proj(o.transpose(1, 2).reshape(B, L, D))


class Mlp(nn.Module):
    def __init__(self, d, inter):
        super().__init__()
        self.fc1 = Linear(d, inter)
        self.fc2 = Linear(inter, d)

    def forward(self, x):
        return self.fc2(quick_gelu(self.fc1(x)))


class EncoderLayer(nn.Module):
    def __init__(self, d, inter, heads, eps):
        super().__init__()
        self.self_attn = Attention(d, heads)
        self.layer_norm1 = nn.LayerNorm(d, eps=eps)
        self.mlp = Mlp(d, inter)
        self.layer_norm2 = nn.LayerNorm(d, eps=eps)

    def forward(self, x, mask):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(c["hidden_size"], c["intermediate_size"], c["num_attention_heads"],
                                                  c["layer_norm_eps"]) for _ in range(c["num_hidden_layers"])])

    def forward(self, x, mask=None):
        for layer in self.layers:
            x = layer(x, mask)
        return x


class TextEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.token_embedding = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.position_embedding = nn.Embedding(c["max_position_embeddings"], c["hidden_size"])


class TextTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embeddings = TextEmbeddings(c)
        self.encoder = Encoder(c)
        self.final_layer_norm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(self, input_ids, attention_mask=None):
        B, L = input_ids.shape
        e = self.embeddings
        h = e.token_embedding(input_ids) + e.position_embedding.weight[:L][None]
        neg = torch.finfo(h.dtype).min
        mask = torch.triu(torch.full((L, L), neg, dtype=h.dtype), diagonal=1)[None, None]
        if attention_mask is not None:
            mask = mask + (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * neg
            mask = mask.clamp_min(neg)
        h = self.final_layer_norm(self.encoder(h, mask))
        # HF (eos_token_id != 2): pool at the first position holding eos_token_id
        pos = (input_ids == self.c["eos_token_id"]).int().argmax(dim=-1)
        return h[torch.arange(B), pos]


class VisionEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.class_embedding = nn.Parameter(torch.zeros(d))
        self.patch_embedding = nn.Conv2d(c["num_channels"], d, c["patch_size"], stride=c["patch_size"], bias=False)
        n = (c["image_size"] // c["patch_size"]) ** 2 + 1
        self.position_embedding = nn.Embedding(n, d)

    def forward(self, px):
        B = px.shape[0]
        pe = self.patch_embedding(px).flatten(2).transpose(1, 2)
        h = torch.cat([self.class_embedding.expand(B, 1, -1), pe], dim=1)
        return h + self.position_embedding.weight[None]


class VisionTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embeddings = VisionEmbeddings(c)
        self.pre_layrnorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])  # sic: HF's name
        self.encoder = Encoder(c)
        self.post_layernorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(self, px):
        h = self.encoder(self.pre_layrnorm(self.embeddings(px)))
        return self.post_layernorm(h[:, 0])


class ClipModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        t, v, p = cfg["text_config"], cfg["vision_config"], cfg["projection_dim"]
        self.text_model = TextTransformer(t)
        self.vision_model = VisionTransformer(v)
        self.visual_projection = Linear(v["hidden_size"], p, bias=False)
        self.text_projection = Linear(t["hidden_size"], p, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(cfg["logit_scale_init_value"]))

    def init_weights(self, gen):
        """Small-normal init (CLIP-like), from a torch.Generator for reproducibility."""
        for name, p in self.named_parameters():
            with torch.no_grad():
                if name == "logit_scale":
                    continue
                if "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
                    p.fill_(1.0 if name.endswith("weight") else 0.0)
                elif name.endswith("bias"):
                    p.zero_()
                elif "position_embedding" in name:
                    p.normal_(0, 0.01, generator=gen)
                elif "out_proj" in name or "fc2" in name:
                    p.normal_(0, 0.02 / math.sqrt(2 * 4), generator=gen)
                else:
                    p.normal_(0, 0.02, generator=gen)

    def encode_image(self, px):
        return F.normalize(self.visual_projection(self.vision_model(px)), dim=-1)

    def encode_text(self, ids, mask=None):
        return F.normalize(self.text_projection(self.text_model(ids, mask)), dim=-1)

    def forward(self, input_ids, attention_mask, pixel_values):
        ie = self.encode_image(pixel_values)
        te = self.encode_text(input_ids, attention_mask)
        lpt = te @ ie.t() * self.logit_scale.exp()
        return dict(image_embeds=ie, text_embeds=te, logits_per_image=lpt.t(), logits_per_text=lpt)


# ----------------------------------------------------------------------------- folder I/O

def load_folder(folder):
    """Reads an HF CLIP folder written by train_clip.py: (model in float32, tokenizer, config)."""
    from make_reference import read_safetensors
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    _, sd = read_safetensors(os.path.join(folder, "model.safetensors"))
    model = ClipModel(cfg)
    model.load_state_dict({k: v.to(torch.float32) for k, v in sd.items()}, strict=True)
    model.eval()
    tok = ClipBpe(os.path.join(folder, "tokenizer.json"))
    return model, tok, cfg


def tokenize(tok, texts, length=None):
    """CLIPTokenizer(padding="max_length" if length else "longest"): <bos> ids <eos> then eos padding."""
    enc = [tok.encode(t) for t in texts]
    L = length or max(len(e) for e in enc)
    ids, mask = tok.batch(texts, length=L)
    return torch.tensor(ids, dtype=torch.int64), torch.tensor(mask, dtype=torch.int64)
