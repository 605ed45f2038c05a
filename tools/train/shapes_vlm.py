"""Shared pieces of the Shapes World VLM trainer: the tokenizer (SmolLM2-style byte-level BPE with ChatML
specials), the config (HF LlavaForConditionalGeneration: CLIP vision tower + 2-layer projector + Llama),
the model in plain torch with HF's state_dict names (original llava-hf layout), and conversation encoding.
Run everything with /usr/bin/python3 (torch 1.13, numpy, Pillow, jinja2)."""
import collections
import json
import math
import os
import random
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from shapes_clip import (HERE, REPO, TRANSFORMERS_VERSION, Linear, VisionEmbeddings, Encoder,  # noqa: F401
                         preprocessor_config as clip_preprocessor_config, render)

sys.path.insert(0, os.path.join(REPO, "tools"))
import make_tokenizers as mt  # noqa: E402
import make_vlm_reference as mvr  # noqa: E402

IMAGE_TOKEN = "<image>"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0-2, in the model vocab like SmolLM2
VOCAB_SIZE = 512                                            # 3 specials + 256 bytes + 252 merges + <image>
IMAGE_TOKEN_ID = VOCAB_SIZE - 1
CHAT_TEMPLATE = mvr.LLAVA_CHATML_TEMPLATE                  # llava-hf ChatML template (<image>\n before the text)

# ----------------------------------------------------------------------------- tokenizer


def corpus_lines():
    """Shapes World questions and answers as they appear in chats, plus the general test corpus."""
    rnd = random.Random(4243)
    lines = []
    for _ in range(600):
        sc = render.sample_scene(rnd)
        for q in render.questions(sc):
            if q["kind"] != "existence" or rnd.random() < 0.1:
                lines += ["user\n" + q["question"], "assistant\n" + q["answer"], q["question"] + " " + q["answer"]]
    return mt.corpus_lines() + lines


def build_tokenizer(out_dir):
    """Writes tokenizer.json, tokenizer_config.json, special_tokens_map.json (SmolLM2 layout: Digits + ByteLevel
    pre-tokenizers, specials in the vocab, <image> appended as an added token)."""
    counts = collections.Counter()
    for line in corpus_lines():
        for chunk in mvr.split_digits(line):
            for w in mvr.pretok_gpt2(chunk):
                counts[tuple(mt.to_byte_chars(w))] += 1
    n_merges = VOCAB_SIZE - len(SPECIALS) - 256 - 1
    merges = mt.train_bpe(counts, n_merges, mt.CS)
    vocab = {t: i for i, t in enumerate(SPECIALS + mt.CS)}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    assert len(vocab) == IMAGE_TOKEN_ID
    toks = [mvr.added(i, s) for i, s in enumerate(SPECIALS)] + [mvr.added(IMAGE_TOKEN_ID, IMAGE_TOKEN)]
    tok = mvr.smollm2_tokenizer_json(vocab, [[a, b] for a, b in merges], toks)
    cfg = {
        "add_prefix_space": False, "added_tokens_decoder": mvr.added_decoder(toks),
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "bos_token": "<|im_start|>",
        "chat_template": CHAT_TEMPLATE, "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>",
        "extra_special_tokens": {"image_token": IMAGE_TOKEN}, "image_token": IMAGE_TOKEN,
        "model_max_length": 512, "pad_token": "<|endoftext|>", "padding_side": "left",
        "processor_class": "LlavaProcessor", "tokenizer_class": "GPT2Tokenizer", "unk_token": "<|endoftext|>"}
    special_map = {"additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
                   "bos_token": _special("<|im_start|>"), "eos_token": _special("<|im_end|>"),
                   "image_token": IMAGE_TOKEN, "pad_token": _special("<|endoftext|>"),
                   "unk_token": _special("<|endoftext|>")}
    mt.write_json(os.path.join(out_dir, "tokenizer.json"), tok)
    mt.write_json(os.path.join(out_dir, "tokenizer_config.json"), cfg)
    mt.write_json(os.path.join(out_dir, "special_tokens_map.json"), special_map)
    mt.write_json(os.path.join(out_dir, "chat_template.json"), {"chat_template": CHAT_TEMPLATE})
    return load_tokenizer(out_dir)


def _special(s):
    return {"content": s, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}


class ShapesTokenizer(mvr.Tokenizer):
    """make_vlm_reference's faithful encoder (HF `tokenizers` semantics for these files) + a cache, because
    training encodes the same few hundred question/answer strings over and over."""

    def __init__(self, tok):
        super().__init__(tok, "smollm2")
        self._cache = {}

    def encode(self, text, add_special_tokens=False):
        ids = self._cache.get(text)
        if ids is None:
            ids = self._cache[text] = super().encode(text, add_special_tokens)
        return list(ids)


def load_tokenizer(folder):
    with open(os.path.join(folder, "tokenizer.json"), encoding="utf-8") as f:
        return ShapesTokenizer(json.load(f))


WORDS = ["red", "green", "blue", "yellow", "circle", "square", "triangle", "yes", "no", "1", "2", "3",
         " red", " green", " blue", " yellow", " circle", " square", " triangle", " and", "a", " a", ",",
         "user", "assistant", "Describe", " the", " image", "How", " many", " shapes", " are", " there", "What",
         " color", " is", " shape", "Which", " on", " left", " right", "Is", "?", "."]


def verify_tokenizer(tok):
    """Every Shapes World word (with and without its leading space) is one token."""
    bad = {w: tok.encode(w) for w in WORDS if len(tok.encode(w)) != 1}
    assert not bad, bad


# ----------------------------------------------------------------------------- config

def make_config(clip_cfg, image_size=None, text=None, dtype="float16"):
    v = dict(clip_cfg["vision_config"])
    v.pop("projection_dim", None)
    v["image_size"] = image_size or v["image_size"]
    t = dict(architectures=["LlamaForCausalLM"], attention_bias=False, attention_dropout=0.0, bos_token_id=1,
             eos_token_id=2, head_dim=32, hidden_act="silu", hidden_size=192, initializer_range=0.02,
             intermediate_size=512, max_position_embeddings=512, mlp_bias=False, model_type="llama",
             num_attention_heads=6, num_hidden_layers=4, num_key_value_heads=2, pad_token_id=0, pretraining_tp=1,
             rms_norm_eps=1e-5, rope_scaling=None, rope_theta=10000.0, tie_word_embeddings=False,
             torch_dtype=dtype, use_cache=True, vocab_size=VOCAB_SIZE)
    t.update(text or {})
    n_img = (v["image_size"] // v["patch_size"]) ** 2
    # vision_feature_layer -2 as LLaVA: CLIP's last layer only trains its class token, its penultimate patch tokens
    # are what the class token reads.
    return dict(architectures=["LlavaForConditionalGeneration"], ignore_index=-100, image_seq_length=n_img,
                image_token_index=IMAGE_TOKEN_ID, model_type="llava", multimodal_projector_bias=True,
                pad_token_id=0, projector_hidden_act="gelu", text_config=t, tie_word_embeddings=False,
                torch_dtype=dtype, transformers_version=TRANSFORMERS_VERSION, vision_config=v,
                vision_feature_layer=-2, vision_feature_select_strategy="default", vocab_size=VOCAB_SIZE)


def preprocessor_config(size):
    p = clip_preprocessor_config(size)
    p["processor_class"] = "LlavaProcessor"
    return p


def processor_config(cfg):
    return {"image_token": IMAGE_TOKEN, "num_additional_image_tokens": 1,
            "patch_size": cfg["vision_config"]["patch_size"], "processor_class": "LlavaProcessor",
            "vision_feature_select_strategy": cfg["vision_feature_select_strategy"]}


def generation_config():
    return {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "do_sample": False, "max_new_tokens": 32,
            "transformers_version": TRANSFORMERS_VERSION}


# ----------------------------------------------------------------------------- model (HF names)

def resize_positions(pos, grid):
    """CLIP position embeddings [1 + g*g, d] -> [1 + grid*grid, d]: the class position kept, the patch grid
    resized bicubically (what HF's interpolate_pos_encoding does at run time, done once here)."""
    g = int(round((pos.shape[0] - 1) ** 0.5))
    if g == grid:
        return pos
    patches = pos[1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([pos[:1], patches.permute(0, 2, 3, 1).reshape(grid * grid, -1)])


class VisionTower(nn.Module):
    """CLIPVisionModel.vision_model; returns hidden_states[feature_layer] (HF's indexing: 0 = embeddings). The
    layers above it and post_layernorm are kept (HF's CLIPVisionModel has them) but unused by LLaVA."""

    def __init__(self, c, feature_layer):
        super().__init__()
        self.embeddings = VisionEmbeddings(c)
        self.pre_layrnorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.encoder = Encoder(c)
        self.post_layernorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.feature_layers = c["num_hidden_layers"] + 1 + feature_layer if feature_layer < 0 else feature_layer

    def forward(self, px):
        h = self.pre_layrnorm(self.embeddings(px))
        for layer in self.encoder.layers[:self.feature_layers]:
            h = layer(h, None)
        return h


class Wrap(nn.Module):
    def __init__(self, **mods):
        super().__init__()
        for k, m in mods.items():
            setattr(self, k, m)


class Projector(nn.Module):
    def __init__(self, vd, d):
        super().__init__()
        self.linear_1 = Linear(vd, d)
        self.linear_2 = Linear(d, d)

    def forward(self, x):
        return self.linear_2(F.gelu(self.linear_1(x)))


class RmsNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rope_tables(L, hd, theta):
    inv = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd)
    f = torch.outer(torch.arange(L, dtype=torch.float32), inv)
    emb = torch.cat([f, f], dim=-1)
    return emb.cos(), emb.sin()


def scores(q, k):
    """q @ k^T for [B, h, Lq, d] x [B, h, Lk, d] as one grouped 1x1 convolution: this torch build's bmm uses a
    generic BLAS (~2 GFLOP/s here), its oneDNN convolutions are 3-5x faster (same result to 1e-6)."""
    B, h, Lq, d = q.shape
    Lk = k.shape[2]
    x = q.permute(0, 1, 3, 2).reshape(1, B * h * d, Lq, 1)
    return F.conv2d(x, k.reshape(B * h * Lk, d, 1, 1), groups=B * h).reshape(B, h, Lk, Lq).transpose(-1, -2)


def weighted_sum(p, v):
    """p @ v for [B, h, Lq, Lk] x [B, h, Lk, d], as a grouped 1x1 convolution (see scores)."""
    B, h, Lq, Lk = p.shape
    d = v.shape[-1]
    x = p.permute(0, 1, 3, 2).reshape(1, B * h * Lk, Lq, 1)
    w = v.transpose(-1, -2).reshape(B * h * d, Lk, 1, 1)
    return F.conv2d(x, w, groups=B * h).reshape(B, h, d, Lq).transpose(-1, -2)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class LlamaAttention(nn.Module):
    def __init__(self, t):
        super().__init__()
        d, self.h, self.kv, self.hd = t["hidden_size"], t["num_attention_heads"], t["num_key_value_heads"], t["head_dim"]
        self.q_proj = Linear(d, self.h * self.hd, bias=False)
        self.k_proj = Linear(d, self.kv * self.hd, bias=False)
        self.v_proj = Linear(d, self.kv * self.hd, bias=False)
        self.o_proj = Linear(self.h * self.hd, d, bias=False)

    def forward(self, x, cos, sin, mask):
        B, L, _ = x.shape
        q = self.q_proj(x).view(B, L, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, L, self.kv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, L, self.kv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.h // self.kv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        s = scores(q, k) * self.hd ** -0.5 + mask
        o = weighted_sum(torch.softmax(s, dim=-1), v)
        return self.o_proj(o.transpose(1, 2).reshape(B, L, self.h * self.hd))


class LlamaMlp(nn.Module):
    def __init__(self, d, inter):
        super().__init__()
        self.gate_proj = Linear(d, inter, bias=False)
        self.up_proj = Linear(d, inter, bias=False)
        self.down_proj = Linear(inter, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaLayer(nn.Module):
    def __init__(self, t):
        super().__init__()
        self.self_attn = LlamaAttention(t)
        self.mlp = LlamaMlp(t["hidden_size"], t["intermediate_size"])
        self.input_layernorm = RmsNorm(t["hidden_size"], t["rms_norm_eps"])
        self.post_attention_layernorm = RmsNorm(t["hidden_size"], t["rms_norm_eps"])

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, t):
        super().__init__()
        self.t = t
        self.embed_tokens = nn.Embedding(t["vocab_size"], t["hidden_size"])
        self.layers = nn.ModuleList([LlamaLayer(t) for _ in range(t["num_hidden_layers"])])
        self.norm = RmsNorm(t["hidden_size"], t["rms_norm_eps"])

    def forward(self, h):
        L = h.shape[1]
        cos, sin = rope_tables(L, self.t["head_dim"], self.t["rope_theta"])
        mask = torch.triu(torch.full((L, L), float("-inf")), diagonal=1)
        for layer in self.layers:
            h = layer(h, cos, sin, mask)
        return self.norm(h)


class ShapesVlm(nn.Module):
    """LlavaForConditionalGeneration with the original llava-hf names: vision_tower.vision_model.*,
    multi_modal_projector.*, language_model.model.*, language_model.lm_head."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        t, v = cfg["text_config"], cfg["vision_config"]
        self.vision_tower = Wrap(vision_model=VisionTower(v, cfg["vision_feature_layer"]))
        self.multi_modal_projector = Projector(v["hidden_size"], t["hidden_size"])
        self.language_model = Wrap(model=LlamaModel(t), lm_head=Linear(t["hidden_size"], t["vocab_size"], bias=False))

    def init_text(self, gen):
        std = self.cfg["text_config"]["initializer_range"]
        for name, p in list(self.multi_modal_projector.named_parameters()) + list(self.language_model.named_parameters()):
            with torch.no_grad():
                if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
                    p.fill_(1.0)
                elif name.endswith("bias"):
                    p.zero_()
                else:
                    p.normal_(0, std, generator=gen)

    def image_features(self, px):
        h = self.vision_tower.vision_model(px)[:, 1:]          # "default": drop CLS
        return self.multi_modal_projector(h)

    def forward(self, input_ids, pixel_values, features=None):
        lm = self.language_model
        e = lm.model.embed_tokens(input_ids)
        if features is None:
            features = self.image_features(pixel_values)
        mask = input_ids == self.cfg["image_token_index"]
        e = e.masked_scatter(mask[..., None], features.to(e.dtype))
        return lm.lm_head(lm.model(e))


# ----------------------------------------------------------------------------- conversations

def user_turn(question, with_image):
    return "<|im_start|>user\n" + ("<image>\n" if with_image else "") + question + "<|im_end|>\n"


def assistant_turn(answer):
    return "<|im_start|>assistant\n" + answer + "<|im_end|>\n"


def encode_conversation(tok, qa, n_image_tokens):
    """ChatML conversation (the chat template's output for these messages, image in the first user turn,
    <image> expanded as LlavaProcessor does) -> (ids, labels). Labels are -100 except on each answer and
    its <|im_end|> (what the model must produce); the template's trailing "\n" after <|im_end|> is not a target."""
    ids, labels = [], []
    for i, (q, a) in enumerate(qa):
        u = tok.encode(user_turn(q, i == 0).replace(IMAGE_TOKEN, IMAGE_TOKEN * n_image_tokens))
        ids += u
        labels += [-100] * len(u)
        head = tok.encode("<|im_start|>assistant\n")
        full = tok.encode(assistant_turn(a))
        assert full[:len(head)] == head and full[-1] == tok.id("\u010a"), (a, full)
        ids += full
        labels += [-100] * len(head) + full[len(head):-1] + [-100]
    return ids, labels


def prompt_ids(tok, question, n_image_tokens):
    text = user_turn(question, True) + "<|im_start|>assistant\n"
    return tok.encode(text.replace(IMAGE_TOKEN, IMAGE_TOKEN * n_image_tokens))


def check_template(tok):
    """Our turn strings are exactly what the folder's chat template renders (transformers' jinja setup)."""
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is the circle?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
            {"role": "user", "content": [{"type": "text", "text": "How many shapes are there?"}]}]
    got = mvr.render_chat(CHAT_TEMPLATE, msgs, add_generation_prompt=True)
    want = (user_turn("What color is the circle?", True) + assistant_turn("red")
            + user_turn("How many shapes are there?", False) + "<|im_start|>assistant\n")
    assert got == want, (got, want)


def batch_tensors(seqs, pad_id=0, bucket=32):
    """Right-padded (ids, labels) -> tensors; causal attention makes right padding harmless for real tokens. The
    length is rounded up to a multiple of `bucket` so that oneDNN sees few distinct shapes (it builds a new
    convolution primitive, slowly, for every new one)."""
    L = -(-max(len(i) for i, _ in seqs) // bucket) * bucket
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.int64)
    lab = torch.full((len(seqs), L), -100, dtype=torch.int64)
    for r, (i, l) in enumerate(seqs):
        ids[r, :len(i)] = torch.tensor(i)
        lab[r, :len(l)] = torch.tensor(l)
    return ids, lab
