#!/usr/bin/python3
"""Build tiny random-weight CLIP / SigLIP checkpoints laid out exactly like
Hugging Face model folders, plus golden outputs from an independent PyTorch
reimplementation of HF ``CLIPModel`` / ``SiglipModel`` forward passes.

Run with the Debian interpreter (it has torch 1.13 + numpy):

    /usr/bin/python3 tools/reference/make_reference.py

Outputs (relative to the repository root):

    tests/data/models/tiny-clip/          CLIPModel, F32, single model.safetensors
    tests/data/models/tiny-clip-f16/      CLIPModel, F16, 2 shards + index, legacy int64 position_ids
    tests/data/models/tiny-siglip/        SiglipModel, F32, single file
    tests/data/models/tiny-siglip-bf16/   SiglipModel, BF16, single file
    tests/data/goldens/<folder>.npz       inputs + reference outputs
    tests/data/goldens/<siglip folder>.masked.npz   SigLIP with an explicit attention_mask

Everything is deterministic (numpy PCG64 seeded per folder) and no part of it
needs `transformers` or `safetensors`: the safetensors writer/reader lives here.

The reference follows modeling_clip.py / modeling_siglip.py semantics
(see tools/reference/README.md for the list); it runs in float64 on the
weights *as stored* (F16/BF16 values upcast), and is cross-checked against a
second attention implementation (torch.nn.functional.multi_head_attention_forward
for the encoders, torch.nn.MultiheadAttention(batch_first=True) for SigLIP's
MAP head).
"""

import json
import math
import os
import shutil
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS_DIR = os.path.join(REPO, "tests", "data", "models")
GOLDENS_DIR = os.path.join(REPO, "tests", "data", "goldens")
TOKENIZERS_DIR = os.path.join(REPO, "tests", "data", "tokenizers")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

# transformers version stamped into config.json (informational only).
TRANSFORMERS_VERSION = "4.46.3"

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

torch.set_grad_enabled(False)

# --------------------------------------------------------------------------
# safetensors (written by hand, byte-compatible with the `safetensors` crate)
# --------------------------------------------------------------------------

# Order of safetensors' Rust `Dtype` enum; the crate lays tensors out sorted by
# *descending* dtype, then by name.
_ST_DTYPE_RANK = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16",
                  "I32", "U32", "F32", "F64", "I64", "U64"]
_ST_ITEMSIZE = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "U8": 1}


def _st_dtype(t):
    return {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
            torch.int64: "I64", torch.float64: "F64", torch.int32: "I32"}[t.dtype]


def _tensor_bytes(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        arr = t.view(torch.int16).numpy()
    else:
        arr = t.numpy()
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def write_safetensors(path, tensors, metadata=None):
    """tensors: dict name -> torch tensor (already in the storage dtype)."""
    if metadata is None:
        metadata = {"format": "pt"}
    items = sorted(tensors.items(),
                   key=lambda kv: (-_ST_DTYPE_RANK.index(_st_dtype(kv[1])), kv[0]))
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name, t in items:
        b = _tensor_bytes(t)
        header[name] = {"dtype": _st_dtype(t), "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)
    return offset  # payload bytes


def read_safetensors(path):
    """Independent parser used for the round-trip check. Returns (meta, dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0, "header not 8-byte aligned"
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    meta = header.pop("__metadata__", None)
    out = {}
    covered = 0
    for name, info in header.items():
        b, e = info["data_offsets"]
        buf = data[b:e]
        shape = info["shape"]
        dt = info["dtype"]
        if dt == "BF16":
            a = np.frombuffer(buf, dtype="<i2").copy()
            t = torch.from_numpy(a).view(torch.bfloat16)
        else:
            npdt = {"F32": "<f4", "F16": "<f2", "I64": "<i8", "F64": "<f8", "I32": "<i4"}[dt]
            t = torch.from_numpy(np.frombuffer(buf, dtype=npdt).copy())
        assert t.numel() * _ST_ITEMSIZE[dt] == e - b
        out[name] = t.reshape(shape)
        covered += e - b
    assert covered == len(data), "data section has holes or trailing bytes"
    return meta, out


# --------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------

# HF configuration_clip.py / configuration_siglip.py constructor defaults.
CLIP_TEXT_DEFAULTS = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, projection_dim=512,
                          num_hidden_layers=12, num_attention_heads=8, max_position_embeddings=77,
                          hidden_act="quick_gelu", layer_norm_eps=1e-5, attention_dropout=0.0,
                          initializer_range=0.02, initializer_factor=1.0,
                          pad_token_id=1, bos_token_id=49406, eos_token_id=49407)
CLIP_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, projection_dim=512,
                            num_hidden_layers=12, num_attention_heads=12, num_channels=3,
                            image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                            attention_dropout=0.0, initializer_range=0.02, initializer_factor=1.0)
SIGLIP_TEXT_DEFAULTS = dict(vocab_size=32000, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                            num_attention_heads=12, max_position_embeddings=64, hidden_act="gelu_pytorch_tanh",
                            layer_norm_eps=1e-6, attention_dropout=0.0, pad_token_id=1,
                            bos_token_id=49406, eos_token_id=49407)
SIGLIP_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                              num_attention_heads=12, num_channels=3, image_size=224, patch_size=16,
                              hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, attention_dropout=0.0)


def clip_config(hidden_act, dtype_name, minimal):
    text = dict(model_type="clip_text_model", vocab_size=1000, hidden_size=32, intermediate_size=64,
                projection_dim=24, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=77, hidden_act=hidden_act, layer_norm_eps=1e-5,
                attention_dropout=0.0, initializer_range=0.02, initializer_factor=1.0,
                bos_token_id=998, eos_token_id=999, pad_token_id=1)
    vision = dict(model_type="clip_vision_model", hidden_size=48, intermediate_size=96,
                  projection_dim=24, num_hidden_layers=2, num_attention_heads=4, num_channels=3,
                  image_size=32, patch_size=8, hidden_act=hidden_act, layer_norm_eps=1e-5,
                  attention_dropout=0.0, initializer_range=0.02, initializer_factor=1.0)
    cfg = dict(architectures=["CLIPModel"], initializer_factor=1.0, logit_scale_init_value=2.6592,
               model_type="clip", projection_dim=24, text_config=text,
               torch_dtype=dtype_name, transformers_version=TRANSFORMERS_VERSION,
               vision_config=vision)
    if minimal:
        # What `save_pretrained` (use_diff=True) writes: only values that differ from
        # the CLIP{Text,Vision}Config defaults, like most configs on the Hub.
        text_defaults, vision_defaults = CLIP_TEXT_DEFAULTS, CLIP_VISION_DEFAULTS
        cfg["text_config"] = {k: v for k, v in text.items() if k == "model_type" or text_defaults.get(k, object()) != v}
        cfg["vision_config"] = {k: v for k, v in vision.items() if k == "model_type" or vision_defaults.get(k, object()) != v}
        cfg.pop("initializer_factor")
        cfg.pop("logit_scale_init_value")
    return cfg


def siglip_config(dtype_name, minimal):
    # SigLIP compares text_embeds (text hidden -> text head, projection_size defaults to
    # the text hidden size) with image_embeds (vision hidden, MAP head keeps the width),
    # so both towers must share the same width: text hidden_size == vision hidden_size == 48.
    text = dict(model_type="siglip_text_model", vocab_size=1000, hidden_size=48, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
                hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, attention_dropout=0.0,
                projection_size=48, pad_token_id=1, bos_token_id=49406, eos_token_id=1)
    vision = dict(model_type="siglip_vision_model", hidden_size=48, intermediate_size=96,
                  num_hidden_layers=2, num_attention_heads=4, num_channels=3, image_size=32,
                  patch_size=8, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
                  attention_dropout=0.0)
    cfg = dict(architectures=["SiglipModel"], initializer_factor=1.0, model_type="siglip",
               text_config=text, torch_dtype=dtype_name, transformers_version=TRANSFORMERS_VERSION,
               vision_config=vision)
    if minimal:
        text_defaults, vision_defaults = SIGLIP_TEXT_DEFAULTS, SIGLIP_VISION_DEFAULTS
        t = {k: v for k, v in text.items() if k == "model_type" or text_defaults.get(k, object()) != v}
        t.pop("projection_size")  # defaults to hidden_size (and is unknown to older transformers)
        cfg["text_config"] = t
        cfg["vision_config"] = {k: v for k, v in vision.items() if k == "model_type" or vision_defaults.get(k, object()) != v}
    return cfg


def clip_preprocessor(legacy):
    if legacy:
        # openai/clip-vit-base-patch32 style (old CLIPFeatureExtractor keys: ints, no rescale keys).
        return dict(crop_size=32, do_center_crop=True, do_normalize=True, do_resize=True,
                    feature_extractor_type="CLIPFeatureExtractor",
                    image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD, resample=3, size=32)
    return dict(crop_size={"height": 32, "width": 32}, do_center_crop=True, do_convert_rgb=True,
                do_normalize=True, do_rescale=True, do_resize=True, image_mean=OPENAI_CLIP_MEAN,
                image_processor_type="CLIPImageProcessor", image_std=OPENAI_CLIP_STD,
                processor_class="CLIPProcessor", resample=3, rescale_factor=1 / 255,
                size={"shortest_edge": 32})


def siglip_preprocessor():
    return dict(do_convert_rgb=True, do_normalize=True, do_rescale=True, do_resize=True,
                image_mean=[0.5, 0.5, 0.5], image_processor_type="SiglipImageProcessor",
                image_std=[0.5, 0.5, 0.5], processor_class="SiglipProcessor", resample=3,
                rescale_factor=1 / 255, size={"height": 32, "width": 32})


# --------------------------------------------------------------------------
# random weights, in HF state_dict order (own params first, then children)
# --------------------------------------------------------------------------

class Init:
    def __init__(self, seed):
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.sd = {}

    def _put(self, name, arr):
        self.sd[name] = torch.from_numpy(np.asarray(arr, dtype=np.float64)).to(torch.float32)

    def normal(self, name, shape, std, mean=0.0):
        self._put(name, mean + std * self.rng.standard_normal(shape))

    def linear(self, name, out_f, in_f, bias=True, gain=1.0):
        self.normal(name + ".weight", (out_f, in_f), gain / math.sqrt(in_f))
        if bias:
            self.normal(name + ".bias", (out_f,), 0.05)

    def layernorm(self, name, dim):
        self.normal(name + ".weight", (dim,), 0.1, mean=1.0)
        self.normal(name + ".bias", (dim,), 0.05)

    def encoder_layer(self, p, dim, inter):
        # CLIPEncoderLayer / SiglipEncoderLayer registration order
        self.linear(p + ".self_attn.k_proj", dim, dim, gain=1.5)
        self.linear(p + ".self_attn.v_proj", dim, dim)
        self.linear(p + ".self_attn.q_proj", dim, dim, gain=1.5)
        self.linear(p + ".self_attn.out_proj", dim, dim)
        self.layernorm(p + ".layer_norm1", dim)
        self.linear(p + ".mlp.fc1", inter, dim)
        self.linear(p + ".mlp.fc2", dim, inter)
        self.layernorm(p + ".layer_norm2", dim)


def build_clip_weights(cfg, seed):
    t, v = cfg["text_config"], cfg["vision_config"]
    ini = Init(seed)
    ini._put("logit_scale", np.array(math.log(1 / 0.07) + 0.05 * ini.rng.standard_normal()))  # shape []
    ini.normal("text_model.embeddings.token_embedding.weight", (t["vocab_size"], t["hidden_size"]), 0.5)
    ini.normal("text_model.embeddings.position_embedding.weight", (t["max_position_embeddings"], t["hidden_size"]), 0.5)
    for i in range(t["num_hidden_layers"]):
        ini.encoder_layer(f"text_model.encoder.layers.{i}", t["hidden_size"], t["intermediate_size"])
    ini.layernorm("text_model.final_layer_norm", t["hidden_size"])
    n_pos = (v["image_size"] // v["patch_size"]) ** 2 + 1
    ini.normal("vision_model.embeddings.class_embedding", (v["hidden_size"],), 0.5)
    ini.normal("vision_model.embeddings.patch_embedding.weight",
               (v["hidden_size"], v["num_channels"], v["patch_size"], v["patch_size"]),
               1.0 / math.sqrt(v["num_channels"] * v["patch_size"] ** 2))
    ini.normal("vision_model.embeddings.position_embedding.weight", (n_pos, v["hidden_size"]), 0.5)
    ini.layernorm("vision_model.pre_layrnorm", v["hidden_size"])  # sic: HF's typo
    for i in range(v["num_hidden_layers"]):
        ini.encoder_layer(f"vision_model.encoder.layers.{i}", v["hidden_size"], v["intermediate_size"])
    ini.layernorm("vision_model.post_layernorm", v["hidden_size"])
    ini.linear("visual_projection", cfg["projection_dim"], v["hidden_size"], bias=False)
    ini.linear("text_projection", cfg["projection_dim"], t["hidden_size"], bias=False)
    return ini.sd


def build_siglip_weights(cfg, seed):
    t, v = cfg["text_config"], cfg["vision_config"]
    ini = Init(seed)
    ini._put("logit_scale", np.array([math.log(1 / 0.07) + 0.05 * ini.rng.standard_normal()]))  # shape [1]
    ini._put("logit_bias", np.array([-10.0 + 0.5 * ini.rng.standard_normal()]))  # shape [1]
    ini.normal("text_model.embeddings.token_embedding.weight", (t["vocab_size"], t["hidden_size"]), 0.5)
    ini.normal("text_model.embeddings.position_embedding.weight", (t["max_position_embeddings"], t["hidden_size"]), 0.5)
    for i in range(t["num_hidden_layers"]):
        ini.encoder_layer(f"text_model.encoder.layers.{i}", t["hidden_size"], t["intermediate_size"])
    ini.layernorm("text_model.final_layer_norm", t["hidden_size"])
    ini.linear("text_model.head", t.get("projection_size", t["hidden_size"]), t["hidden_size"])
    d = v["hidden_size"]
    ini.normal("vision_model.embeddings.patch_embedding.weight",
               (d, v["num_channels"], v["patch_size"], v["patch_size"]),
               1.0 / math.sqrt(v["num_channels"] * v["patch_size"] ** 2))
    ini.normal("vision_model.embeddings.patch_embedding.bias", (d,), 0.05)
    ini.normal("vision_model.embeddings.position_embedding.weight", ((v["image_size"] // v["patch_size"]) ** 2, d), 0.5)
    for i in range(v["num_hidden_layers"]):
        ini.encoder_layer(f"vision_model.encoder.layers.{i}", d, v["intermediate_size"])
    ini.layernorm("vision_model.post_layernorm", d)
    ini.normal("vision_model.head.probe", (1, 1, d), 1.0)
    # torch.nn.MultiheadAttention: packed [q; k; v] in_proj, then out_proj (NonDynamicallyQuantizableLinear)
    w = ini.rng.standard_normal((3 * d, d)) / math.sqrt(d)
    w[: 2 * d] *= 1.5
    ini._put("vision_model.head.attention.in_proj_weight", w)
    ini.normal("vision_model.head.attention.in_proj_bias", (3 * d,), 0.05)
    ini.linear("vision_model.head.attention.out_proj", d, d)
    ini.layernorm("vision_model.head.layernorm", d)
    ini.linear("vision_model.head.mlp.fc1", v["intermediate_size"], d)
    ini.linear("vision_model.head.mlp.fc2", d, v["intermediate_size"])
    return ini.sd


# --------------------------------------------------------------------------
# reference forward (float64)
# --------------------------------------------------------------------------

def act_fn(name, x):
    if name == "quick_gelu":
        return x * torch.sigmoid(1.702 * x)
    if name == "gelu":
        return F.gelu(x)
    if name in ("gelu_pytorch_tanh", "gelu_new"):
        return F.gelu(x, approximate="tanh")
    raise ValueError(name)


def layer_norm(x, W, p, eps):
    return F.layer_norm(x, (x.shape[-1],), W[p + ".weight"], W[p + ".bias"], eps)


def linear(x, W, p, bias=True):
    return F.linear(x, W[p + ".weight"], W[p + ".bias"] if bias else None)


def self_attention_explicit(x, W, p, heads, causal, key_keep):
    """HF eager attention: softmax(q k^T * d^-0.5 + mask) v, mask additive.
    key_keep: bool [B, L] (True = attend) or None."""
    B, L, D = x.shape
    hd = D // heads
    q = linear(x, W, p + ".q_proj").view(B, L, heads, hd).transpose(1, 2)
    k = linear(x, W, p + ".k_proj").view(B, L, heads, hd).transpose(1, 2)
    v = linear(x, W, p + ".v_proj").view(B, L, heads, hd).transpose(1, 2)
    s = torch.matmul(q, k.transpose(-1, -2)) * hd ** -0.5
    mask = torch.zeros(B, 1, L, L, dtype=x.dtype)
    if causal:
        mask = mask + torch.triu(torch.full((L, L), float("-inf"), dtype=x.dtype), diagonal=1)
    if key_keep is not None:
        mask = mask.masked_fill(~key_keep[:, None, None, :], float("-inf"))
    a = torch.softmax(s + mask, dim=-1)
    o = torch.matmul(a, v).transpose(1, 2).reshape(B, L, D)
    return linear(o, W, p + ".out_proj")


def self_attention_mha(x, W, p, heads, causal, key_keep):
    """Second implementation: torch's packed multi_head_attention_forward."""
    B, L, D = x.shape
    in_w = torch.cat([W[p + ".q_proj.weight"], W[p + ".k_proj.weight"], W[p + ".v_proj.weight"]])
    in_b = torch.cat([W[p + ".q_proj.bias"], W[p + ".k_proj.bias"], W[p + ".v_proj.bias"]])
    attn_mask = torch.triu(torch.ones(L, L, dtype=torch.bool), diagonal=1) if causal else None
    kpm = (~key_keep) if key_keep is not None else None
    xt = x.transpose(0, 1)
    o, _ = F.multi_head_attention_forward(
        xt, xt, xt, D, heads, in_w, in_b, None, None, False, 0.0,
        W[p + ".out_proj.weight"], W[p + ".out_proj.bias"], training=False,
        key_padding_mask=kpm, need_weights=False, attn_mask=attn_mask)
    return o.transpose(0, 1)


def encoder(h, W, prefix, c, causal, key_keep, attn_impl):
    attn = self_attention_explicit if attn_impl == "explicit" else self_attention_mha
    for i in range(c["num_hidden_layers"]):
        p = f"{prefix}.encoder.layers.{i}"
        r = h
        h = layer_norm(h, W, p + ".layer_norm1", c["layer_norm_eps"])
        h = r + attn(h, W, p + ".self_attn", c["num_attention_heads"], causal, key_keep)
        r = h
        h = layer_norm(h, W, p + ".layer_norm2", c["layer_norm_eps"])
        h = linear(act_fn(c["hidden_act"], linear(h, W, p + ".mlp.fc1")), W, p + ".mlp.fc2")
        h = r + h
    return h


def l2_normalize(x):
    return x / torch.sqrt(torch.sum(x * x, dim=-1, keepdim=True))


def clip_forward(cfg, W, input_ids, attention_mask, pixel_values, attn_impl="explicit"):
    t, v = cfg["text_config"], cfg["vision_config"]
    # ---- text: CLIPTextTransformer
    B, L = input_ids.shape
    h = W["text_model.embeddings.token_embedding.weight"][input_ids] + \
        W["text_model.embeddings.position_embedding.weight"][:L][None]
    keep = attention_mask.bool() if attention_mask is not None else None
    h = encoder(h, W, "text_model", t, causal=True, key_keep=keep, attn_impl=attn_impl)
    text_last = layer_norm(h, W, "text_model.final_layer_norm", t["layer_norm_eps"])
    eos = t["eos_token_id"]
    if eos == 2 or bool(torch.all(input_ids.max(dim=-1).values == 49407)):
        # legacy configs (eos_token_id == 2) / newest HF check: eot = highest token id
        pos = input_ids.to(torch.int).argmax(dim=-1)
    else:
        # first position holding eos_token_id (pad may equal eos)
        pos = (input_ids.to(torch.int) == eos).int().argmax(dim=-1)
    text_pooled = text_last[torch.arange(B), pos]
    # ---- vision: CLIPVisionTransformer
    Bi = pixel_values.shape[0]
    pe = F.conv2d(pixel_values, W["vision_model.embeddings.patch_embedding.weight"], None,
                  stride=v["patch_size"])
    pe = pe.flatten(2).transpose(1, 2)
    cls = W["vision_model.embeddings.class_embedding"].expand(Bi, 1, -1)
    h = torch.cat([cls, pe], dim=1) + W["vision_model.embeddings.position_embedding.weight"][None]
    h = layer_norm(h, W, "vision_model.pre_layrnorm", v["layer_norm_eps"])
    vision_last = encoder(h, W, "vision_model", v, causal=False, key_keep=None, attn_impl=attn_impl)
    vision_pooled = layer_norm(vision_last[:, 0], W, "vision_model.post_layernorm", v["layer_norm_eps"])
    # ---- CLIPModel head
    image_embeds = l2_normalize(F.linear(vision_pooled, W["visual_projection.weight"]))
    text_embeds = l2_normalize(F.linear(text_pooled, W["text_projection.weight"]))
    logits_per_text = torch.matmul(text_embeds, image_embeds.t()) * W["logit_scale"].exp()
    return dict(image_embeds=image_embeds, text_embeds=text_embeds,
                logits_per_image=logits_per_text.t(), logits_per_text=logits_per_text,
                vision_last_hidden_state=vision_last, vision_pooler_output=vision_pooled,
                text_last_hidden_state=text_last, text_pooler_output=text_pooled)


def map_head_explicit(h, W, v):
    """SiglipMultiheadAttentionPoolingHead with nn.MultiheadAttention written out."""
    B, L, D = h.shape
    heads = v["num_attention_heads"]
    hd = D // heads
    p = "vision_model.head"
    probe = W[p + ".probe"].repeat(B, 1, 1)  # [B,1,D]
    wq, wk, wv = W[p + ".attention.in_proj_weight"].chunk(3)
    bq, bk, bv = W[p + ".attention.in_proj_bias"].chunk(3)
    q = F.linear(probe, wq, bq).view(B, 1, heads, hd).transpose(1, 2)
    k = F.linear(h, wk, bk).view(B, L, heads, hd).transpose(1, 2)
    vv = F.linear(h, wv, bv).view(B, L, heads, hd).transpose(1, 2)
    a = torch.softmax(torch.matmul(q * hd ** -0.5, k.transpose(-1, -2)), dim=-1)
    o = torch.matmul(a, vv).transpose(1, 2).reshape(B, 1, D)
    x = linear(o, W, p + ".attention.out_proj")
    return _map_head_tail(x, W, v)


def map_head_module(h, W, v):
    """Second implementation: the real torch.nn.MultiheadAttention(batch_first=True)."""
    D = h.shape[-1]
    p = "vision_model.head"
    mha = torch.nn.MultiheadAttention(D, v["num_attention_heads"], batch_first=True).to(h.dtype).eval()
    mha.load_state_dict({"in_proj_weight": W[p + ".attention.in_proj_weight"],
                         "in_proj_bias": W[p + ".attention.in_proj_bias"],
                         "out_proj.weight": W[p + ".attention.out_proj.weight"],
                         "out_proj.bias": W[p + ".attention.out_proj.bias"]})
    probe = W[p + ".probe"].repeat(h.shape[0], 1, 1)
    x = mha(probe, h, h)[0]
    return _map_head_tail(x, W, v)


def _map_head_tail(x, W, v):
    p = "vision_model.head"
    r = x
    y = layer_norm(x, W, p + ".layernorm", v["layer_norm_eps"])
    y = linear(act_fn(v["hidden_act"], linear(y, W, p + ".mlp.fc1")), W, p + ".mlp.fc2")
    return (r + y)[:, 0]


def siglip_forward(cfg, W, input_ids, attention_mask, pixel_values, attn_impl="explicit"):
    t, v = cfg["text_config"], cfg["vision_config"]
    # ---- text: SiglipTextTransformer (bidirectional, no causal mask)
    B, L = input_ids.shape
    h = W["text_model.embeddings.token_embedding.weight"][input_ids] + \
        W["text_model.embeddings.position_embedding.weight"][:L][None]
    keep = attention_mask.bool() if attention_mask is not None else None
    h = encoder(h, W, "text_model", t, causal=False, key_keep=keep, attn_impl=attn_impl)
    text_last = layer_norm(h, W, "text_model.final_layer_norm", t["layer_norm_eps"])
    text_pooled = linear(text_last[:, -1], W, "text_model.head")  # "sticky" EOS: last position
    # ---- vision: SiglipVisionTransformer
    pe = F.conv2d(pixel_values, W["vision_model.embeddings.patch_embedding.weight"],
                  W["vision_model.embeddings.patch_embedding.bias"], stride=v["patch_size"])
    h = pe.flatten(2).transpose(1, 2) + W["vision_model.embeddings.position_embedding.weight"][None]
    h = encoder(h, W, "vision_model", v, causal=False, key_keep=None, attn_impl=attn_impl)
    vision_last = layer_norm(h, W, "vision_model.post_layernorm", v["layer_norm_eps"])
    head = map_head_explicit if attn_impl == "explicit" else map_head_module
    vision_pooled = head(vision_last, W, v)
    # ---- SiglipModel head
    image_embeds = l2_normalize(vision_pooled)
    text_embeds = l2_normalize(text_pooled)
    logits_per_text = torch.matmul(text_embeds, image_embeds.t()) * W["logit_scale"].exp() + W["logit_bias"]
    return dict(image_embeds=image_embeds, text_embeds=text_embeds,
                logits_per_image=logits_per_text.t(), logits_per_text=logits_per_text,
                vision_last_hidden_state=vision_last, vision_pooler_output=vision_pooled,
                text_last_hidden_state=text_last, text_pooler_output=text_pooled)


# --------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------

def clip_inputs(rng, L=77, lengths=(5, 17, 75)):
    """CLIPProcessor(padding="max_length"): <bos> tokens <eos> then pad (= <|endoftext|> = eos)."""
    ids = np.full((len(lengths), L), 999, dtype=np.int64)
    mask = np.zeros((len(lengths), L), dtype=np.int64)
    for b, n in enumerate(lengths):
        toks = rng.integers(1, 998, size=n)  # [1, 997]
        seq = [998] + toks.tolist() + [999]
        ids[b, : len(seq)] = seq
        mask[b, : len(seq)] = 1
    return ids, mask


def siglip_inputs(rng, L=64, lengths=(4, 20, 63)):
    """SiglipTokenizer(padding="max_length"): tokens </s>(1) then pad </s>(1); no mask returned."""
    ids = np.full((len(lengths), L), 1, dtype=np.int64)
    mask = np.zeros((len(lengths), L), dtype=np.int64)
    for b, n in enumerate(lengths):
        toks = rng.integers(3, 1000, size=n)  # [3, 999]
        seq = toks.tolist() + [1]
        ids[b, : len(seq)] = seq
        mask[b, : len(seq)] = 1
    return ids, mask


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------

VARIANTS = [
    # name, family, seed, storage dtype, config/preprocessor "as published on the Hub" style
    dict(name="tiny-clip", family="clip", seed=1001, dtype=torch.float32, hidden_act="quick_gelu",
         minimal_config=False, legacy_preprocessor=False, shards=1, legacy_position_ids=False),
    dict(name="tiny-clip-f16", family="clip", seed=1002, dtype=torch.float16, hidden_act="gelu",
         minimal_config=True, legacy_preprocessor=True, shards=2, legacy_position_ids=True),
    dict(name="tiny-siglip", family="siglip", seed=2001, dtype=torch.float32,
         minimal_config=False, shards=1),
    dict(name="tiny-siglip-bf16", family="siglip", seed=2002, dtype=torch.bfloat16,
         minimal_config=True, shards=1),
]

DTYPE_NAME = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def savez_deterministic(path, arrays):
    """Byte-for-byte what numpy.savez writes (uncompressed zip, zip64 entries,
    one <key>.npy per array, insertion order) except that the zip timestamps are
    pinned, so reruns do not churn the files. Load with numpy.load."""
    import zipfile
    with zipfile.ZipFile(path, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, val in arrays.items():
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            with zf.open(info, "w", force_zip64=True) as fid:
                np.lib.format.write_array(fid, np.asanyarray(val), allow_pickle=False)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def _greedy_shards(sd_items, max_size):
    # transformers' shard_checkpoint / split_torch_state_dict_into_shards: walk the
    # state_dict in order, open a new shard when the next tensor would overflow.
    blocks, cur, cur_size = [], [], 0
    for name, t in sd_items:
        sz = t.numel() * t.element_size()
        if cur and cur_size + sz > max_size:
            blocks.append(cur)
            cur, cur_size = [], 0
        cur.append((name, t))
        cur_size += sz
    blocks.append(cur)
    return blocks


def shard_state_dict(sd_items, n_shards):
    """Greedy HF sharding with the smallest max_shard_size (in KiB steps) that
    yields exactly `n_shards` shards."""
    total = sum(t.numel() * t.element_size() for _, t in sd_items)
    max_size = -(-total // n_shards)
    while True:
        blocks = _greedy_shards(sd_items, max_size)
        if len(blocks) <= n_shards:
            break
        max_size += 1024
    assert len(blocks) == n_shards, [len(b) for b in blocks]
    return blocks, total


def full_cfg(cfg, family):
    """Resolve a config.json the way HF does: missing sub-config keys take the
    constructor defaults (the minimal configs omit them)."""
    c = json.loads(json.dumps(cfg))
    if family == "clip":
        defaults = {"text_config": CLIP_TEXT_DEFAULTS, "vision_config": CLIP_VISION_DEFAULTS}
        c.setdefault("projection_dim", 512)
    else:
        defaults = {"text_config": SIGLIP_TEXT_DEFAULTS, "vision_config": SIGLIP_VISION_DEFAULTS}
    for tower, d in defaults.items():
        for k, val in d.items():
            c[tower].setdefault(k, val)
    if family == "siglip":
        c["text_config"].setdefault("projection_size", c["text_config"]["hidden_size"])
    return c


def check_close(a, b, what, tol=1e-9):
    for k in a:
        err = (a[k] - b[k]).abs().max().item()
        assert err < tol, f"{what}: {k} differs by {err}"


def make_variant(var):
    name, family = var["name"], var["family"]
    folder = os.path.join(MODELS_DIR, name)
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)

    dtype_name = DTYPE_NAME[var["dtype"]]
    if family == "clip":
        cfg = clip_config(var["hidden_act"], dtype_name, var["minimal_config"])
        sd = build_clip_weights(full_cfg(cfg, family), var["seed"])
        pre = clip_preprocessor(var.get("legacy_preprocessor", False))
    else:
        cfg = siglip_config(dtype_name, var["minimal_config"])
        sd = build_siglip_weights(full_cfg(cfg, family), var["seed"])
        pre = siglip_preprocessor()
    fcfg = full_cfg(cfg, family)
    assert fcfg == full_cfg(fcfg, family)

    # storage dtype
    stored = {k: t.to(var["dtype"]) for k, t in sd.items()}
    items = list(stored.items())
    if var.get("legacy_position_ids"):
        # pre-4.31 checkpoints persisted these buffers (int64, shape [1, n]); must be ignored by loaders
        t = fcfg["text_config"]
        v = fcfg["vision_config"]
        n_vpos = (v["image_size"] // v["patch_size"]) ** 2 + 1
        extra = {"text_model.embeddings.position_ids": torch.arange(t["max_position_embeddings"]).unsqueeze(0),
                 "vision_model.embeddings.position_ids": torch.arange(n_vpos).unsqueeze(0)}
        new_items = []
        for k, tt in items:
            new_items.append((k, tt))
            if k == "text_model.embeddings.position_embedding.weight":
                new_items.append(("text_model.embeddings.position_ids", extra["text_model.embeddings.position_ids"]))
            if k == "vision_model.embeddings.position_embedding.weight":
                new_items.append(("vision_model.embeddings.position_ids", extra["vision_model.embeddings.position_ids"]))
        items = new_items
        stored = dict(items)

    write_json(os.path.join(folder, "config.json"), cfg)
    write_json(os.path.join(folder, "preprocessor_config.json"), pre)

    if var["shards"] == 1:
        write_safetensors(os.path.join(folder, "model.safetensors"), stored)
    else:
        blocks, total = shard_state_dict(items, var["shards"])
        weight_map = {}
        n = len(blocks)
        for i, blk in enumerate(blocks):
            fname = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            write_safetensors(os.path.join(folder, fname), dict(blk))
            for k, _ in blk:
                weight_map[k] = fname
        write_json(os.path.join(folder, "model.safetensors.index.json"),
                   {"metadata": {"total_size": total}, "weight_map": weight_map})

    # tokenizer files (produced elsewhere; copied whenever they exist)
    tok_src = os.path.join(TOKENIZERS_DIR, family)
    copied = []
    for fn in TOKENIZER_FILES:
        src = os.path.join(tok_src, fn)
        if os.path.isfile(src):
            shutil.copyfile(src, os.path.join(folder, fn))
            copied.append(fn)

    # ---- round-trip: parse what we wrote, compare bit-exactly
    loaded = {}
    if var["shards"] == 1:
        meta, loaded = read_safetensors(os.path.join(folder, "model.safetensors"))
        assert meta == {"format": "pt"}
    else:
        with open(os.path.join(folder, "model.safetensors.index.json")) as f:
            idx = json.load(f)
        for fname in sorted(set(idx["weight_map"].values())):
            meta, part = read_safetensors(os.path.join(folder, fname))
            assert meta == {"format": "pt"}
            for k in part:
                assert idx["weight_map"][k] == fname
            loaded.update(part)
        assert set(idx["weight_map"]) == set(loaded)
        assert idx["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in loaded.values())
    assert set(loaded) == set(stored), set(loaded) ^ set(stored)
    for k, t in stored.items():
        l = loaded[k]
        assert l.dtype == t.dtype and tuple(l.shape) == tuple(t.shape), k
        if t.dtype == torch.bfloat16:
            assert torch.equal(l.view(torch.int16), t.view(torch.int16)), k
        else:
            assert torch.equal(l, t), k

    # ---- reference forward on the stored values, float64
    W = {k: t.to(torch.float64) for k, t in loaded.items() if t.is_floating_point()}
    rng = np.random.Generator(np.random.PCG64(var["seed"] + 7))
    if family == "clip":
        ids, mask = clip_inputs(rng)
    else:
        ids, mask = siglip_inputs(rng)
    pixel_values = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    px = torch.from_numpy(pixel_values).to(torch.float64)

    fwd = clip_forward if family == "clip" else siglip_forward
    runs = []
    if family == "clip":
        runs.append(("", dict(input_ids=ids, attention_mask=mask), mask_t))
    else:
        runs.append(("", dict(input_ids=ids), None))  # SiglipProcessor returns no attention_mask
        runs.append((".masked", dict(input_ids=ids, attention_mask=mask), mask_t))

    os.makedirs(GOLDENS_DIR, exist_ok=True)
    summary = []
    for suffix, inputs, m in runs:
        out = fwd(fcfg, W, ids_t, m, px, attn_impl="explicit")
        alt = fwd(fcfg, W, ids_t, m, px, attn_impl="mha")
        check_close(out, alt, f"{name}{suffix} explicit-vs-torch-MHA")
        if m is not None:
            # masking check: scrambling the padded token ids must not move any real position
            ids2 = ids_t.clone()
            pad = mask_t == 0
            ids2[pad] = torch.from_numpy(rng.integers(3, 998, size=int(pad.sum())))
            out2 = fwd(fcfg, W, ids2, m, px, attn_impl="explicit")
            real = mask_t.bool()
            err = (out["text_last_hidden_state"][real] - out2["text_last_hidden_state"][real]).abs().max().item()
            assert err < 1e-9, f"{name}{suffix}: padding leaks into real positions ({err})"
            if family == "clip":  # eos pooling reads a real position
                check_close({"p": out["text_pooler_output"]}, {"p": out2["text_pooler_output"]}, "clip pooled vs pads")
        # sanity: nothing degenerate
        for k, val in out.items():
            assert torch.isfinite(val).all(), (name, k)
        lpi = out["logits_per_image"]
        assert lpi.std().item() > 1e-2, f"{name}{suffix}: logits do not vary across inputs"
        assert (out["text_embeds"][0] - out["text_embeds"][1]).abs().max() > 1e-2
        assert (out["image_embeds"][0] - out["image_embeds"][1]).abs().max() > 1e-2
        path = os.path.join(GOLDENS_DIR, f"{name}{suffix}.npz")
        arrays = dict(inputs)
        arrays["pixel_values"] = pixel_values
        arrays.update({k: val.to(torch.float32).numpy() for k, val in out.items()})
        savez_deterministic(path, arrays)
        summary.append((path, arrays, out))

    return folder, cfg, copied, summary, W


def attention_entropy_report(W, cfg, family, name):
    """Mean normalized entropy of layer-0 vision attention (1.0 = uniform)."""
    v = full_cfg(cfg, family)["vision_config"]
    # quick probe on a fresh random image batch
    px = torch.from_numpy(np.random.Generator(np.random.PCG64(5)).standard_normal((2, 3, 32, 32)))
    if family == "clip":
        pe = F.conv2d(px, W["vision_model.embeddings.patch_embedding.weight"], None, stride=v["patch_size"])
        pe = pe.flatten(2).transpose(1, 2)
        h = torch.cat([W["vision_model.embeddings.class_embedding"].expand(2, 1, -1), pe], 1)
        h = h + W["vision_model.embeddings.position_embedding.weight"][None]
        h = layer_norm(h, W, "vision_model.pre_layrnorm", v["layer_norm_eps"])
    else:
        pe = F.conv2d(px, W["vision_model.embeddings.patch_embedding.weight"],
                      W["vision_model.embeddings.patch_embedding.bias"], stride=v["patch_size"])
        h = pe.flatten(2).transpose(1, 2) + W["vision_model.embeddings.position_embedding.weight"][None]
    p = "vision_model.encoder.layers.0"
    x = layer_norm(h, W, p + ".layer_norm1", v["layer_norm_eps"])
    B, L, D = x.shape
    heads = v["num_attention_heads"]
    hd = D // heads
    q = linear(x, W, p + ".self_attn.q_proj").view(B, L, heads, hd).transpose(1, 2)
    k = linear(x, W, p + ".self_attn.k_proj").view(B, L, heads, hd).transpose(1, 2)
    a = torch.softmax(q @ k.transpose(-1, -2) * hd ** -0.5, -1)
    ent = -(a * a.clamp_min(1e-30).log()).sum(-1) / math.log(L)
    return ent.mean().item(), h.std().item()


def main():
    print(f"torch {torch.__version__}, numpy {np.__version__}")
    for var in VARIANTS:
        folder, cfg, copied, summary, W = make_variant(var)
        size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
        ent, emb_std = attention_entropy_report(W, cfg, var["family"], var["name"])
        print(f"\n== {var['name']}  ({size / 1024:.1f} KiB: {', '.join(sorted(os.listdir(folder)))})")
        print(f"   tokenizer files copied: {copied or 'none (tests/data/tokenizers/' + var['family'] + ' absent)'}")
        print(f"   vision embeddings std {emb_std:.3f}; layer-0 attention entropy/uniform {ent:.3f}")
        for path, arrays, out in summary:
            print(f"   {os.path.relpath(path, REPO)}")
            for k, a in arrays.items():
                print(f"      {k:26s} {str(a.dtype):8s} {list(a.shape)}")
            print(f"      text_pooler std {out['text_pooler_output'].std():.3f}, "
                  f"vision_pooler std {out['vision_pooler_output'].std():.3f}")
            np.set_printoptions(precision=4, suppress=True)
            print("      logits_per_image =\n        " +
                  str(out["logits_per_image"].numpy()).replace("\n", "\n        "))
    print("\nall self-checks passed")


if __name__ == "__main__":
    sys.exit(main())
