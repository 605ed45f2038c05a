#!/usr/bin/python3
"""Build tiny random-weight *generative* VLM folders laid out exactly like the
Hugging Face Hub publishes them (LLaVA-1.5, LLaVA-interleave-Qwen, Idefics3 /
SmolVLM), plus goldens from an independent float64 PyTorch reimplementation of
HF ``LlavaForConditionalGeneration`` / ``Idefics3ForConditionalGeneration``
(forward logits, projected image features, greedy generation).

Run with the Debian interpreter (torch 1.13 + numpy + jinja2):

    /usr/bin/python3 tools/reference/make_vlm_reference.py

Outputs (relative to the repository root):

    tests/data/models/tiny-llava/        LLaVA-1.5 (CLIP + Llama), F32, OLD tensor layout
    tests/data/models/tiny-llava-f16/    same architecture, F16, 2 shards + index, Hub-minimal config
    tests/data/models/tiny-llava-qwen/   LLaVA-interleave (SigLIP + Qwen2, tied), F32, NEW tensor layout
    tests/data/models/tiny-idefics3/     Idefics3 / SmolVLM (SigLIP-like + pixel shuffle + Llama), F32
    tests/data/goldens/<folder>.npz        B=1 prompt: logits, image features, greedy generation
    tests/data/goldens/<folder>.batch.npz  B=2 left-padded batch: logits, image features

No `transformers`, `safetensors` or `tokenizers` needed: the safetensors
writer/reader and helpers come from make_reference.py (imported, unchanged),
the tokenizers are trained and applied here. See tools/reference/README.md.
"""

import json
import math
import os
import shutil
import sys
import unicodedata

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import make_reference as mr  # noqa: E402  (safetensors I/O, Init, CLIP/SigLIP building blocks)
import make_tokenizers as mt  # noqa: E402  (corpus, BPE trainer, GPT-2 byte table)

REPO = mr.REPO
MODELS_DIR = mr.MODELS_DIR
GOLDENS_DIR = mr.GOLDENS_DIR
TOKENIZERS_DIR = mr.TOKENIZERS_DIR
TRANSFORMERS_VERSION = mr.TRANSFORMERS_VERSION

torch.set_grad_enabled(False)

# --------------------------------------------------------------------------
# chat templates, verbatim as the model authors ship them
# --------------------------------------------------------------------------

# llava-hf/llava-1.5-7b-hf (chat_template.json / tokenizer_config.json)
LLAVA15_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != "
    "'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")

# llava-hf ChatML template for the Qwen-based LLaVA checkpoints (llava-interleave / onevision)
LLAVA_CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}"
    "{% endfor %}{# Render all video then #}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'video') %}{{ '<video>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != "
    "'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'text') %}{% generation %}{{ content['text'] }}{% endgeneration %}{% endfor %}{% endif %}"
    "{{'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

# HuggingFaceTB/SmolVLM-256M-Instruct
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'][0]"
    "['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}"
    "{% if line['type'] == 'text' %}{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}"
    "{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}"
    "{{ 'Assistant:' }}{% endif %}")


def render_chat(template, messages, add_generation_prompt=True, **extra):
    """transformers' apply_chat_template environment: ImmutableSandboxedEnvironment(trim_blocks,
    lstrip_blocks) + loopcontrols + the `{% generation %}` tag (renders its body)."""
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                            **extra)


# --------------------------------------------------------------------------
# tokenizers (tokenizer.json as HF writes it + a faithful encoder for our prompts)
# --------------------------------------------------------------------------

def added(id_, content, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False):
    return {"id": id_, "content": content, "single_word": single_word, "lstrip": lstrip,
            "rstrip": rstrip, "normalized": normalized, "special": special}


def added_decoder(added_tokens):
    return {str(t["id"]): {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
            for t in added_tokens}


def llama_sp_tokenizer():
    """Llama / SentencePiece-BPE style tokenizer.json (what llava-hf/llava-1.5-7b-hf ships), trained on
    the shared test corpus: <unk> <s> </s>, 256 byte-fallback tokens, merges, then single characters."""
    counts = {}
    chars = {}
    for line in mt.corpus_lines():
        norm = "▁" + line.replace(" ", "▁")
        for i, w in enumerate(norm.split("▁")):
            if not w:
                continue
            w = "▁" + w
            counts[w] = counts.get(w, 0) + 1
            for c in w:
                chars[c] = chars.get(c, 0) + 1
    # Base alphabet: "▁", printable ASCII and characters seen at least 3 times; everything else
    # ("\n", most accented letters, CJK, emoji) goes through byte fallback.
    for c in [chr(i) for i in range(0x21, 0x7F)]:
        chars.setdefault(c, 0)
    alphabet = sorted((c for c, n in chars.items() if n >= 3 or 0x21 <= ord(c) < 0x7F),
                      key=lambda c: (-chars[c], c))
    words = {}
    for w, n in counts.items():
        if all(c in alphabet for c in w):
            words[tuple(w)] = n
    n_base = 1000
    n_merges = n_base - 3 - 256 - len(alphabet)
    merges = mt.train_bpe(words, n_merges, alphabet)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for a, b in merges:
        vocab[a + b] = len(vocab)
    for c in alphabet:
        vocab[c] = len(vocab)
    assert len(vocab) == n_base, len(vocab)
    toks = [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>"), added(1000, "<image>"), added(1001, "<pad>")]
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": toks,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": [a + " " + b for a, b in merges]},
    }
    cfg = {
        "add_bos_token": True, "add_eos_token": False,
        "added_tokens_decoder": added_decoder(toks),
        "bos_token": "<s>", "chat_template": LLAVA15_CHAT_TEMPLATE, "clean_up_tokenization_spaces": False,
        "eos_token": "</s>", "extra_special_tokens": {"image_token": "<image>"}, "image_token": "<image>",
        "model_max_length": 256, "pad_token": "<pad>", "padding_side": "left",
        "processor_class": "LlavaProcessor", "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>", "use_default_system_prompt": False}
    special_map = {"bos_token": {"content": "<s>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
                   "eos_token": {"content": "</s>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
                   "image_token": "<image>",
                   "pad_token": {"content": "<pad>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
                   "unk_token": {"content": "<unk>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}}
    return tok, cfg, special_map


def _bytelevel_base():
    with open(os.path.join(TOKENIZERS_DIR, "bytelevel", "tokenizer.json"), encoding="utf-8") as f:
        src = json.load(f)
    vocab = [t for t, _ in sorted(src["model"]["vocab"].items(), key=lambda kv: kv[1]) if t != "<|endoftext|>"]
    assert len(vocab) == 999
    return vocab, src["model"]["merges"]


QWEN2_SPLIT = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
               "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")


def qwen2_tokenizer():
    """Qwen2-style byte-level BPE (Split regex + ByteLevel), vocab/merges from tests/data/tokenizers/bytelevel,
    specials appended as added tokens like Qwen2 (not in the model vocab) + LLaVA's <image>."""
    base, merges = _bytelevel_base()
    vocab = {t: i for i, t in enumerate(base)}
    toks = [added(999, "<|endoftext|>"), added(1000, "<|im_start|>"), added(1001, "<|im_end|>"), added(1002, "<image>")]
    tok = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": toks,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }
    cfg = {
        "add_prefix_space": False, "added_tokens_decoder": added_decoder(toks),
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "bos_token": None,
        "chat_template": LLAVA_CHATML_TEMPLATE, "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>", "errors": "replace", "extra_special_tokens": {"image_token": "<image>"},
        "image_token": "<image>", "model_max_length": 256, "pad_token": "<|endoftext|>", "padding_side": "left",
        "processor_class": "LlavaProcessor", "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None}
    special_map = {"additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
                   "eos_token": {"content": "<|im_end|>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
                   "image_token": "<image>",
                   "pad_token": {"content": "<|endoftext|>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}}
    return tok, cfg, special_map


IDEFICS3_EXTRA = (["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
                  + ["<row_%d_col_%d>" % (i, j) for i in range(1, 7) for j in range(1, 7)])


def smollm2_tokenizer_json(vocab, merges, added_tokens):
    """SmolLM2's tokenizer.json layout: Digits + ByteLevel pre-tokenizers, byte-level BPE, no normalizer."""
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added_tokens,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


def smollm2_tokenizer():
    """SmolLM2 / SmolVLM-style byte-level BPE: the three chat specials live in the model vocab (ids 0-2),
    the VLM tokens are appended as added tokens (SmolVLM-256M-Instruct layout)."""
    base, merges = _bytelevel_base()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate(specials + base)}
    assert len(vocab) == 1002
    toks = [added(i, s) for i, s in enumerate(specials)]
    toks += [added(1002 + i, s) for i, s in enumerate(IDEFICS3_EXTRA)]
    tok = smollm2_tokenizer_json(vocab, merges, toks)
    extra_specials = ["<fake_token_around_image>", "<image>", "<end_of_utterance>"]
    cfg = {
        "add_prefix_space": False, "added_tokens_decoder": added_decoder(toks),
        "additional_special_tokens": extra_specials, "bos_token": "<|im_start|>",
        "chat_template": SMOLVLM_CHAT_TEMPLATE, "clean_up_tokenization_spaces": False,
        "end_of_utterance_token": "<end_of_utterance>", "eos_token": "<end_of_utterance>",
        "extra_special_tokens": {"end_of_utterance_token": "<end_of_utterance>",
                                 "fake_image_token": "<fake_token_around_image>",
                                 "global_image_token": "<global-img>", "image_token": "<image>"},
        "fake_image_token": "<fake_token_around_image>", "global_image_token": "<global-img>",
        "image_token": "<image>", "legacy": False, "model_max_length": 256, "pad_token": "<|im_end|>",
        "processor_class": "Idefics3Processor", "tokenizer_class": "GPT2Tokenizer",
        "truncation_side": "left", "unk_token": "<|endoftext|>", "vocab_size": 1002}
    special_map = {"additional_special_tokens": extra_specials,
                   "bos_token": {"content": "<|im_start|>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
                   "eos_token": {"content": "<end_of_utterance>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
                   "pad_token": {"content": "<|im_end|>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
                   "unk_token": {"content": "<|endoftext|>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}}
    return tok, cfg, special_map


# ---- encoder (the subset of HF `tokenizers` these tokenizer.json files use; prompts are ASCII)

def _split_added(text, added_tokens):
    """AddedVocabulary: leftmost-longest match of the (special, non-normalized) added tokens."""
    contents = sorted((t["content"] for t in added_tokens), key=len, reverse=True)
    out, buf, i = [], "", 0
    while i < len(text):
        for c in contents:
            if text.startswith(c, i):
                if buf:
                    out.append((buf, False))
                    buf = ""
                out.append((c, True))
                i += len(c)
                break
        else:
            buf += text[i]
            i += 1
    if buf:
        out.append((buf, False))
    return out


def _bpe(symbols, ranks):
    symbols = list(symbols)
    while len(symbols) > 1:
        best, pos = None, -1
        for k in range(len(symbols) - 1):
            r = ranks.get((symbols[k], symbols[k + 1]))
            if r is not None and (best is None or r < best):
                best, pos = r, k
        if best is None:
            break
        symbols[pos:pos + 2] = [symbols[pos] + symbols[pos + 1]]
    return symbols


def _ranks(tok):
    ms = tok["model"]["merges"]
    return {(tuple(m.split(" ")) if isinstance(m, str) else tuple(m)): r for r, m in enumerate(ms)}


def _is_l(c):
    return unicodedata.category(c).startswith("L")


def _is_n(c):
    return unicodedata.category(c).startswith("N")


def _ws_run(s, i):
    j = i
    while j < len(s) and s[j].isspace():
        j += 1
    return j


def _contraction(s, i, ci):
    for c in ("s", "t", "re", "ve", "m", "ll", "d"):
        seg = s[i + 1:i + 1 + len(c)]
        if s[i] == "'" and (seg.lower() == c if ci else seg == c):
            return i + 1 + len(c)
    return None


def pretok_qwen2(s):
    """QWEN2_SPLIT with behavior Isolated, alternation by alternation (leftmost-first, greedy)."""
    out, i, n = [], 0, len(s)
    other = lambda c: not (c in "\r\n" or _is_l(c) or _is_n(c))  # noqa: E731
    punct = lambda c: not (c.isspace() or _is_l(c) or _is_n(c))  # noqa: E731
    while i < n:
        j = _contraction(s, i, True)
        if j is None:
            if _is_l(s[i]) or (other(s[i]) and i + 1 < n and _is_l(s[i + 1])):
                j = i + 1
                while j < n and _is_l(s[j]):
                    j += 1
            elif _is_n(s[i]):
                j = i + 1
            else:
                k = i + 1 if s[i] == " " and i + 1 < n and punct(s[i + 1]) else i
                if k < n and punct(s[k]):
                    j = k
                    while j < n and punct(s[j]):
                        j += 1
                    while j < n and s[j] in "\r\n":
                        j += 1
                elif s[i].isspace():
                    e = _ws_run(s, i)
                    nl = [m for m in range(i, e) if s[m] in "\r\n"]
                    if nl:
                        j = nl[-1] + 1
                    elif e == n:
                        j = e
                    elif e - 1 > i:
                        j = e - 1
                    else:
                        j = e
                else:
                    raise ValueError("unexpected char %r" % s[i])
        out.append(s[i:j])
        i = j
    return out


def pretok_gpt2(s):
    """ByteLevel(use_regex=True): 's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"""
    out, i, n = [], 0, len(s)
    punct = lambda c: not (c.isspace() or _is_l(c) or _is_n(c))  # noqa: E731
    while i < n:
        j = _contraction(s, i, False)
        if j is None:
            k = i + 1 if s[i] == " " and i + 1 < n else i
            if k < n and (_is_l(s[k]) or _is_n(s[k]) or punct(s[k])) and (k == i or not s[k].isspace()):
                cls = _is_l if _is_l(s[k]) else _is_n if _is_n(s[k]) else punct
                j = k
                while j < n and cls(s[j]):
                    j += 1
            else:
                e = _ws_run(s, i)
                if e == n:
                    j = e
                elif e - 1 > i:
                    j = e - 1
                else:
                    j = e
        out.append(s[i:j])
        i = j
    return out


def split_digits(s):
    out, buf = [], ""
    for c in s:
        if _is_n(c):
            if buf:
                out.append(buf)
                buf = ""
            out.append(c)
        else:
            buf += c
    if buf:
        out.append(buf)
    return out


class Tokenizer:
    def __init__(self, tok, kind):
        self.tok, self.kind = tok, kind
        self.vocab = dict(tok["model"]["vocab"])
        for t in tok["added_tokens"]:
            self.vocab[t["content"]] = t["id"]
        self.inv = {i: t for t, i in self.vocab.items()}
        self.ranks = _ranks(tok)

    def id(self, token):
        return self.vocab[token]

    def encode(self, text, add_special_tokens=True):
        ids = []
        for piece, is_added in _split_added(text, self.tok["added_tokens"]):
            if is_added:
                ids.append(self.vocab[piece])
                continue
            if self.kind == "llama":
                norm = "▁" + piece.replace(" ", "▁")
                syms = []
                for c in norm:
                    if c in self.vocab:
                        syms.append(c)
                    else:  # byte_fallback; these never take part in merges
                        syms.extend("<0x%02X>" % b for b in c.encode("utf-8"))
                ids.extend(self.vocab[t] for t in _bpe(syms, self.ranks))
            else:
                piece = unicodedata.normalize("NFC", piece) if self.kind == "qwen2" else piece
                if self.kind == "qwen2":
                    words = pretok_qwen2(piece)
                else:
                    words = [w for chunk in split_digits(piece) for w in pretok_gpt2(chunk)]
                for w in words:
                    syms = [mt.BYTE_TO_CHAR[b] for b in w.encode("utf-8")]
                    ids.extend(self.vocab[t] for t in _bpe(syms, self.ranks))
        if add_special_tokens and self.kind == "llama":
            ids = [self.vocab["<s>"]] + ids
        return ids

    def decode(self, ids):
        toks = [self.inv[i] for i in ids]
        if self.kind == "llama":
            out = b""
            for t in toks:
                if len(t) == 6 and t.startswith("<0x"):
                    out += bytes([int(t[3:5], 16)])
                else:
                    out += t.replace("▁", " ").encode("utf-8")
            s = out.decode("utf-8", errors="replace")
            return s[1:] if s.startswith(" ") else s
        inv_bytes = {c: b for b, c in mt.BYTE_TO_CHAR.items()}
        special = {t["content"] for t in self.tok["added_tokens"]}
        out = b""
        for t in toks:
            out += t.encode("utf-8") if t in special else bytes(inv_bytes[c] for c in t)
        return out.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------

LLAMA_DEFAULTS = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=None, hidden_act="silu",
                      max_position_embeddings=2048, initializer_range=0.02, rms_norm_eps=1e-6, use_cache=True,
                      pad_token_id=None, bos_token_id=1, eos_token_id=2, pretraining_tp=1,
                      tie_word_embeddings=False, rope_theta=10000.0, rope_scaling=None, attention_bias=False,
                      attention_dropout=0.0, mlp_bias=False, head_dim=None)


def llama_text_config(vocab_size, rope_theta=10000.0, bos=1, eos=2, pad=None):
    return dict(architectures=["LlamaForCausalLM"], attention_bias=False, attention_dropout=0.0,
                bos_token_id=bos, eos_token_id=eos, head_dim=16, hidden_act="silu", hidden_size=64,
                initializer_range=0.02, intermediate_size=128, max_position_embeddings=256, mlp_bias=False,
                model_type="llama", num_attention_heads=4, num_hidden_layers=2, num_key_value_heads=2,
                pad_token_id=pad, pretraining_tp=1, rms_norm_eps=1e-5, rope_scaling=None, rope_theta=rope_theta,
                tie_word_embeddings=False, torch_dtype="float32", use_cache=True, vocab_size=vocab_size)


def resolve_text(tc):
    """Fill a (possibly Hub-minimal) Llama/Qwen2 text_config with the constructor defaults."""
    c = dict(LLAMA_DEFAULTS)
    c.update({k: v for k, v in tc.items()})
    if c["num_key_value_heads"] is None:
        c["num_key_value_heads"] = c["num_attention_heads"]
    if c.get("head_dim") is None:
        c["head_dim"] = c["hidden_size"] // c["num_attention_heads"]
    return c


def llava_config(minimal, dtype_name):
    text = llama_text_config(1008, pad=1001)
    text["torch_dtype"] = dtype_name
    vision = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, projection_dim=32,
                  num_hidden_layers=2, num_attention_heads=4, num_channels=3, image_size=32, patch_size=8,
                  hidden_act="quick_gelu", layer_norm_eps=1e-5, attention_dropout=0.0, initializer_range=0.02,
                  initializer_factor=1.0)
    if minimal:
        # like the real llava-hf/llava-1.5-7b-hf config.json: nested configs list only non-default values
        text = {k: v for k, v in text.items() if k in ("architectures", "model_type", "torch_dtype")
                or LLAMA_DEFAULTS.get(k, object()) != v}
        text.pop("head_dim")
        vision = {k: v for k, v in vision.items() if k == "model_type" or mr.CLIP_VISION_DEFAULTS.get(k, object()) != v}
        vision.pop("projection_dim")
    cfg = dict(architectures=["LlavaForConditionalGeneration"], ignore_index=-100, image_seq_length=16,
               image_token_index=1000, model_type="llava", multimodal_projector_bias=True, pad_token_id=1001,
               projector_hidden_act="gelu", text_config=text, tie_word_embeddings=False, torch_dtype=dtype_name,
               transformers_version=TRANSFORMERS_VERSION, vision_config=vision, vision_feature_layer=-2,
               vision_feature_select_strategy="default", vocab_size=1008)
    if minimal:
        for k in ("image_seq_length", "multimodal_projector_bias"):
            cfg.pop(k)
    return cfg


def llava_qwen_config():
    text = dict(architectures=["Qwen2ForCausalLM"], attention_dropout=0.0, bos_token_id=999, eos_token_id=1001,
                hidden_act="silu", hidden_size=64, initializer_range=0.02, intermediate_size=128,
                max_position_embeddings=256, max_window_layers=2, model_type="qwen2", num_attention_heads=4,
                num_hidden_layers=2, num_key_value_heads=2, rms_norm_eps=1e-6, rope_scaling=None,
                rope_theta=1000000.0, sliding_window=None, tie_word_embeddings=True, torch_dtype="float32",
                use_cache=True, use_sliding_window=False, vocab_size=1024)
    vision = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_channels=3, image_size=32, patch_size=8,
                  hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, attention_dropout=0.0,
                  vision_use_head=False)
    return dict(architectures=["LlavaForConditionalGeneration"], ignore_index=-100, image_seq_length=16,
                image_token_index=1002, model_type="llava", multimodal_projector_bias=True,
                projector_hidden_act="gelu", text_config=text, tie_word_embeddings=True, torch_dtype="float32",
                transformers_version=TRANSFORMERS_VERSION, vision_config=vision, vision_feature_layer=-1,
                vision_feature_select_strategy="full")


def idefics3_config(dtype_name):
    text = llama_text_config(1042, rope_theta=100000.0, bos=1, eos=2, pad=2)
    text["torch_dtype"] = dtype_name
    vision = dict(model_type="idefics3_vision", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_channels=3, image_size=32, patch_size=8,
                  hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, attention_dropout=0.0,
                  initializer_range=0.02, max_image_size={"longest_edge": 32}, size={"longest_edge": 64},
                  tie_word_embeddings=False, use_base_siglip=False)
    return dict(architectures=["Idefics3ForConditionalGeneration"], image_token_id=1003, model_type="idefics3",
                pad_token_id=2, scale_factor=2, text_config=text, tie_word_embeddings=False,
                torch_dtype=dtype_name, transformers_version=TRANSFORMERS_VERSION, use_cache=True,
                vision_config=vision, vocab_size=1042)


# --------------------------------------------------------------------------
# random weights, in HF state_dict registration order
# --------------------------------------------------------------------------

class Init(mr.Init):
    def rmsnorm(self, name, dim):
        self.normal(name + ".weight", (dim,), 0.1, mean=1.0)


def init_decoder(ini, p_layers, p_embed, p_norm, p_head, tc, qkv_bias):
    H, I = tc["hidden_size"], tc["intermediate_size"]
    nh, nkv, hd = tc["num_attention_heads"], tc["num_key_value_heads"], tc["head_dim"]
    ini.normal(p_embed + ".weight", (tc["vocab_size"], H), 0.5)
    for i in range(tc["num_hidden_layers"]):
        p = f"{p_layers}.{i}"
        ini.linear(p + ".self_attn.q_proj", nh * hd, H, bias=qkv_bias, gain=1.5)
        ini.linear(p + ".self_attn.k_proj", nkv * hd, H, bias=qkv_bias, gain=1.5)
        ini.linear(p + ".self_attn.v_proj", nkv * hd, H, bias=qkv_bias)
        ini.linear(p + ".self_attn.o_proj", H, nh * hd, bias=False)
        ini.linear(p + ".mlp.gate_proj", I, H, bias=False)
        ini.linear(p + ".mlp.up_proj", I, H, bias=False)
        ini.linear(p + ".mlp.down_proj", H, I, bias=False)
        ini.rmsnorm(p + ".input_layernorm", H)
        ini.rmsnorm(p + ".post_attention_layernorm", H)
    ini.rmsnorm(p_norm, H)
    if p_head is not None:
        ini.linear(p_head, tc["vocab_size"], H, bias=False)


def init_vision(ini, p, v, clip):
    d = v["hidden_size"]
    n_patch = (v["image_size"] // v["patch_size"]) ** 2
    if clip:
        ini.normal(p + ".embeddings.class_embedding", (d,), 0.5)
    ini.normal(p + ".embeddings.patch_embedding.weight", (d, v["num_channels"], v["patch_size"], v["patch_size"]),
               1.0 / math.sqrt(v["num_channels"] * v["patch_size"] ** 2))
    if not clip:
        ini.normal(p + ".embeddings.patch_embedding.bias", (d,), 0.05)
    ini.normal(p + ".embeddings.position_embedding.weight", (n_patch + (1 if clip else 0), d), 0.5)
    if clip:
        ini.layernorm(p + ".pre_layrnorm", d)  # sic
    for i in range(v["num_hidden_layers"]):
        ini.encoder_layer(f"{p}.encoder.layers.{i}", d, v["intermediate_size"])
    ini.layernorm(p + ".post_layernorm", d)


def build_llava_weights(cfg, seed, new_layout):
    tc, v = resolve_text(cfg["text_config"]), full_vision(cfg)
    ini = Init(seed)
    pre = "model." if new_layout else ""
    init_vision(ini, pre + "vision_tower.vision_model", v, clip=v["model_type"] == "clip_vision_model")
    ini.linear(pre + "multi_modal_projector.linear_1", tc["hidden_size"], v["hidden_size"])
    ini.linear(pre + "multi_modal_projector.linear_2", tc["hidden_size"], tc["hidden_size"])
    tied = tc["tie_word_embeddings"]
    if new_layout:
        lm = "model.language_model"
        init_decoder(ini, lm + ".layers", lm + ".embed_tokens", lm + ".norm", None if tied else "lm_head", tc,
                     qkv_bias=tc["model_type"] == "qwen2")
    else:
        lm = "language_model.model"
        init_decoder(ini, lm + ".layers", lm + ".embed_tokens", lm + ".norm",
                     None if tied else "language_model.lm_head", tc, qkv_bias=tc["model_type"] == "qwen2")
    return ini.sd


def build_idefics3_weights(cfg, seed):
    tc, v = resolve_text(cfg["text_config"]), cfg["vision_config"]
    ini = Init(seed)
    init_vision(ini, "model.vision_model", v, clip=False)
    ini.linear("model.connector.modality_projection.proj", tc["hidden_size"],
               v["hidden_size"] * cfg["scale_factor"] ** 2, bias=False)
    init_decoder(ini, "model.text_model.layers", "model.text_model.embed_tokens", "model.text_model.norm",
                 "lm_head", tc, qkv_bias=False)
    return ini.sd


def full_vision(cfg):
    v = dict(cfg["vision_config"])
    if v["model_type"] == "clip_vision_model":
        for k, val in mr.CLIP_VISION_DEFAULTS.items():
            v.setdefault(k, val)
    else:
        for k, val in mr.SIGLIP_VISION_DEFAULTS.items():
            v.setdefault(k, val)
    return v


# --------------------------------------------------------------------------
# reference forward (float64)
# --------------------------------------------------------------------------

def vision_tower_hidden_states(W, p, v, px, clip, attn_impl, patch_keep=None, position_ids=None):
    """CLIP/SigLIP/Idefics3 vision transformer. Returns (hidden_states tuple as HF's output_hidden_states
    gives it: [encoder input, after layer 1, ..., after layer N], post_layernormed last state)."""
    attn = mr.self_attention_explicit if attn_impl == "explicit" else mr.self_attention_mha
    pe = F.conv2d(px, W[p + ".embeddings.patch_embedding.weight"], W.get(p + ".embeddings.patch_embedding.bias"),
                  stride=v["patch_size"])
    h = pe.flatten(2).transpose(1, 2)
    pos = W[p + ".embeddings.position_embedding.weight"]
    if clip:
        h = torch.cat([W[p + ".embeddings.class_embedding"].expand(h.shape[0], 1, -1), h], dim=1) + pos[None]
        h = mr.layer_norm(h, W, p + ".pre_layrnorm", v["layer_norm_eps"])
    elif position_ids is not None:
        h = h + pos[position_ids]
    else:
        h = h + pos[None]
    hs = [h]
    for i in range(v["num_hidden_layers"]):
        q = f"{p}.encoder.layers.{i}"
        r = h
        x = mr.layer_norm(h, W, q + ".layer_norm1", v["layer_norm_eps"])
        h = r + attn(x, W, q + ".self_attn", v["num_attention_heads"], False, patch_keep)
        r = h
        x = mr.layer_norm(h, W, q + ".layer_norm2", v["layer_norm_eps"])
        h = r + mr.linear(mr.act_fn(v["hidden_act"], mr.linear(x, W, q + ".mlp.fc1")), W, q + ".mlp.fc2")
        hs.append(h)
    return hs, mr.layer_norm(h, W, p + ".post_layernorm", v["layer_norm_eps"])


def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope_cos_sin(position_ids, hd, theta):
    """LlamaRotaryEmbedding (default rope): inv_freq = 1/theta^(2i/d); emb = cat(freqs, freqs)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    freqs = position_ids.to(torch.float64)[..., None] * inv_freq  # [B, T, hd/2]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rope_complex(x, position_ids, theta):
    """Second RoPE implementation: (x1 + i x2) * e^{i pos inv_freq}, halves as real/imag parts."""
    hd = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = position_ids.to(torch.float64)[:, None, :, None] * inv_freq  # [B,1,T,hd/2]
    z = torch.complex(x[..., : hd // 2], x[..., hd // 2:]) * torch.polar(torch.ones_like(ang), ang)
    return torch.cat([z.real, z.imag], dim=-1)


def decoder_attention(x, W, p, tc, position_ids, key_keep, past, impl, qkv_bias):
    """Llama/Qwen2 self-attention with GQA, RoPE, causal + padding mask and a KV cache.
    x: [B, T, H]; key_keep: bool [B, P+T] (True = real token); past: (k, v) [B, nkv, P, hd] or None."""
    B, T, _ = x.shape
    nh, nkv, hd = tc["num_attention_heads"], tc["num_key_value_heads"], tc["head_dim"]
    b = (lambda n: W[p + n + ".bias"]) if qkv_bias else (lambda n: None)
    q = F.linear(x, W[p + ".q_proj.weight"], b(".q_proj")).view(B, T, nh, hd).transpose(1, 2)
    k = F.linear(x, W[p + ".k_proj.weight"], b(".k_proj")).view(B, T, nkv, hd).transpose(1, 2)
    v = F.linear(x, W[p + ".v_proj.weight"], b(".v_proj")).view(B, T, nkv, hd).transpose(1, 2)
    theta = tc["rope_theta"]
    if impl == "explicit":
        cos, sin = rope_cos_sin(position_ids, hd, theta)
        cos, sin = cos[:, None], sin[:, None]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
    else:
        q = rope_complex(q, position_ids, theta)
        k = rope_complex(k, position_ids, theta)
    if past is not None:
        k = torch.cat([past[0], k], dim=2)
        v = torch.cat([past[1], v], dim=2)
    new_past = (k, v)
    S = k.shape[2]
    P = S - T
    n_rep = nh // nkv
    if impl == "explicit":
        # repeat_kv + additive -inf mask, HF eager_attention_forward
        kk = k[:, :, None].expand(B, nkv, n_rep, S, hd).reshape(B, nh, S, hd)
        vv = v[:, :, None].expand(B, nkv, n_rep, S, hd).reshape(B, nh, S, hd)
        s = torch.matmul(q, kk.transpose(2, 3)) * hd ** -0.5
        causal = torch.arange(S)[None, :] <= (torch.arange(T)[:, None] + P)  # [T, S]
        keep = causal[None, None] & key_keep[:, None, None, :]
        s = s + torch.where(keep, torch.zeros((), dtype=s.dtype), torch.full((), float("-inf"), dtype=s.dtype))
        a = torch.softmax(s, dim=-1)
        a = torch.nan_to_num(a, nan=0.0)  # fully masked query rows (left padding) -> output 0
        o = torch.matmul(a, vv)
    else:
        # per-query-head loop, kv head = h // n_rep, masked_fill + explicit max-subtracted softmax
        o = torch.empty(B, nh, T, hd, dtype=x.dtype)
        for h in range(nh):
            kh, vh = k[:, h // n_rep], v[:, h // n_rep]
            s = torch.einsum("btd,bsd->bts", q[:, h], kh) / math.sqrt(hd)
            keep = torch.ones(B, T, S, dtype=torch.bool)
            for t in range(T):
                keep[:, t, P + t + 1:] = False
            keep &= key_keep[:, None, :]
            s = s.masked_fill(~keep, float("-inf"))
            m = s.max(dim=-1, keepdim=True).values
            e = torch.exp(s - m)
            a = torch.where(torch.isinf(m), torch.zeros_like(e), e / e.sum(-1, keepdim=True))
            o[:, h] = torch.einsum("bts,bsd->btd", a, vh)
    o = o.transpose(1, 2).reshape(B, T, nh * hd)
    return F.linear(o, W[p + ".o_proj.weight"]), new_past


def decoder_forward(W, names, tc, inputs_embeds, position_ids, key_keep, past=None, impl="explicit"):
    """LlamaModel / Qwen2Model + lm_head. Returns (logits [B,T,V], new past list)."""
    h = inputs_embeds
    eps = tc["rms_norm_eps"]
    new_past = []
    qkv_bias = tc["model_type"] == "qwen2"
    for i in range(tc["num_hidden_layers"]):
        p = f"{names['layers']}.{i}"
        r = h
        x = rms_norm(h, W[p + ".input_layernorm.weight"], eps)
        a, kv = decoder_attention(x, W, p + ".self_attn", tc, position_ids, key_keep,
                                  None if past is None else past[i], impl, qkv_bias)
        new_past.append(kv)
        h = r + a
        r = h
        x = rms_norm(h, W[p + ".post_attention_layernorm.weight"], eps)
        g = F.linear(x, W[p + ".mlp.gate_proj.weight"])
        u = F.linear(x, W[p + ".mlp.up_proj.weight"])
        h = r + F.linear(F.silu(g) * u, W[p + ".mlp.down_proj.weight"])
    h = rms_norm(h, W[names["norm"] + ".weight"], eps)
    return F.linear(h, W[names["head"]]), new_past


def pixel_shuffle(x, scale_factor):
    """Idefics3Connector.pixel_shuffle, verbatim reshape/permute order."""
    bsz, seq, embed_dim = x.size()
    height = width = int(seq ** 0.5)
    x = x.view(bsz, height, width, embed_dim)
    x = x.view(bsz, height, int(width / scale_factor), embed_dim * scale_factor)
    x = x.permute(0, 2, 1, 3)
    x = x.reshape(bsz, int(width / scale_factor), int(height / scale_factor), embed_dim * (scale_factor ** 2))
    x = x.permute(0, 2, 1, 3)
    x = x.reshape(bsz, int(seq / (scale_factor ** 2)), embed_dim * (scale_factor ** 2))
    return x


def pixel_shuffle_indexed(x, s):
    """Second implementation: output token (i, j) of the (h/s)x(w/s) grid (row-major) concatenates the
    input patches (s*i + b, s*j + a) for b (row offset) outer, a (column offset) inner."""
    bsz, seq, d = x.shape
    n = int(seq ** 0.5)
    g = x.view(bsz, n, n, d)
    out = torch.empty(bsz, (n // s) ** 2, d * s * s, dtype=x.dtype)
    for i in range(n // s):
        for j in range(n // s):
            parts = [g[:, s * i + b, s * j + a] for b in range(s) for a in range(s)]
            out[:, i * (n // s) + j] = torch.cat(parts, dim=-1)
    return out


def idefics3_patch_positions(patch_attention_mask, num_patches_per_side):
    """Idefics3VisionEmbeddings position ids (bucketize of fractional coordinates), verbatim."""
    bsz = patch_attention_mask.shape[0]
    max_h, max_w = patch_attention_mask.shape[1:]
    boundaries = torch.arange(1 / num_patches_per_side, 1.0, 1 / num_patches_per_side)
    position_ids = torch.full(size=(bsz, max_h * max_w), fill_value=0)
    for batch_idx, p_attn_mask in enumerate(patch_attention_mask):
        nb_patches_h = p_attn_mask[:, 0].sum()
        nb_patches_w = p_attn_mask[0].sum()
        fractional_coords_h = torch.arange(0, 1 - 1e-6, 1 / nb_patches_h)
        fractional_coords_w = torch.arange(0, 1 - 1e-6, 1 / nb_patches_w)
        bucket_coords_h = torch.bucketize(fractional_coords_h, boundaries, right=True)
        bucket_coords_w = torch.bucketize(fractional_coords_w, boundaries, right=True)
        pos_ids = (bucket_coords_h[:, None] * num_patches_per_side + bucket_coords_w).flatten()
        position_ids[batch_idx][p_attn_mask.view(-1)] = pos_ids
    return position_ids


class Model:
    """Holds the resolved config + float64 weights of one folder and runs the HF forward semantics."""

    def __init__(self, family, cfg, W, new_layout=False):
        self.family, self.cfg, self.W = family, cfg, W
        self.tc = resolve_text(cfg["text_config"])
        if family == "llava":
            self.v = full_vision(cfg)
            pre = "model." if new_layout else ""
            self.vp = pre + "vision_tower.vision_model"
            self.proj = pre + "multi_modal_projector"
            lm = "model.language_model" if new_layout else "language_model.model"
            head = ("model.language_model.embed_tokens.weight" if new_layout else lm + ".embed_tokens.weight") \
                if self.tc["tie_word_embeddings"] else ("lm_head.weight" if new_layout else "language_model.lm_head.weight")
            self.names = dict(layers=lm + ".layers", embed=lm + ".embed_tokens.weight", norm=lm + ".norm", head=head)
            self.image_token_id = cfg["image_token_index"]
        else:
            self.v = cfg["vision_config"]
            self.names = dict(layers="model.text_model.layers", embed="model.text_model.embed_tokens.weight",
                              norm="model.text_model.norm", head="lm_head.weight")
            self.image_token_id = cfg["image_token_id"]

    # ---- image features that replace the image tokens, [num_image_tokens_total, text_hidden]
    def image_features(self, pixel_values, pixel_attention_mask=None, impl="explicit"):
        W, v = self.W, self.v
        if self.family == "llava":
            clip = v["model_type"] == "clip_vision_model"
            hs, _ = vision_tower_hidden_states(W, self.vp, v, pixel_values, clip, impl)
            sel = hs[self.cfg["vision_feature_layer"]]
            if self.cfg["vision_feature_select_strategy"] == "default":
                sel = sel[:, 1:]
            x = mr.linear(sel, W, self.proj + ".linear_1")
            x = mr.act_fn(self.cfg["projector_hidden_act"], x)
            x = mr.linear(x, W, self.proj + ".linear_2")
            return x.reshape(-1, x.shape[-1])
        # idefics3
        B, N = pixel_values.shape[:2]
        px = pixel_values.reshape(B * N, *pixel_values.shape[2:])
        nb = px.shape[1:].numel()
        real = (px == 0.0).sum(dim=(-1, -2, -3)) != nb  # padding images are all zeros
        px = px[real]
        if pixel_attention_mask is None:
            pam = torch.ones(px.shape[0], px.shape[2], px.shape[3], dtype=torch.bool)
        else:
            pam = pixel_attention_mask.reshape(B * N, *pixel_attention_mask.shape[2:])[real]
        ps = v["patch_size"]
        sub = pam.unfold(1, ps, ps).unfold(2, ps, ps)
        patch_mask = (sub.sum(dim=(-1, -2)) > 0)
        pos_ids = idefics3_patch_positions(patch_mask, v["image_size"] // ps)
        flat = patch_mask.view(px.shape[0], -1)
        keep = None if bool(flat.all()) else flat
        _, last = vision_tower_hidden_states(W, "model.vision_model", v, px, False, impl, patch_keep=keep,
                                             position_ids=pos_ids)
        shuffle = pixel_shuffle if impl == "explicit" else pixel_shuffle_indexed
        x = shuffle(last, self.cfg["scale_factor"])
        x = F.linear(x, W["model.connector.modality_projection.proj.weight"])
        return x.reshape(-1, x.shape[-1])

    def embed(self, input_ids, image_features=None):
        e = self.W[self.names["embed"]][input_ids].clone()
        if image_features is not None:
            mask = input_ids == self.image_token_id
            assert int(mask.sum()) == image_features.shape[0], (int(mask.sum()), image_features.shape)
            e[mask] = image_features  # masked_scatter / inputs_merger: row-major order
        return e

    def forward(self, input_ids, attention_mask, position_ids, pixel_values=None, pixel_attention_mask=None,
                impl="explicit"):
        feats = None
        if pixel_values is not None:
            feats = self.image_features(pixel_values, pixel_attention_mask, impl)
        e = self.embed(input_ids, feats)
        logits, past = decoder_forward(self.W, self.names, self.tc, e, position_ids, attention_mask.bool(), impl=impl)
        return logits, feats, past

    def step(self, token_ids, position_ids, key_keep, past, impl="explicit"):
        e = self.embed(token_ids)
        return decoder_forward(self.W, self.names, self.tc, e, position_ids, key_keep, past=past, impl=impl)


def generation_positions(attention_mask):
    """GenerationMixin / prepare_inputs_for_generation: cumsum(mask) - 1, pads filled with 1."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


def greedy_generate(model, input_ids, attention_mask, pixel_values, pixel_attention_mask, max_new_tokens, eos_ids):
    """generate(do_sample=False): prefill with the images, then one token at a time through the KV cache.
    Stops early only when every row produced an EOS. Returns ids [B, T+n] and the step logits [n, V]."""
    pos = generation_positions(attention_mask)
    logits, _, past = model.forward(input_ids, attention_mask, pos, pixel_values, pixel_attention_mask)
    ids, mask = input_ids, attention_mask
    step_logits = []
    nxt_logits = logits[:, -1]
    for _ in range(max_new_tokens):
        step_logits.append(nxt_logits[0])
        top2 = torch.topk(nxt_logits, 2, dim=-1).values
        margin = float((top2[:, 0] - top2[:, 1]).min())
        assert margin > 1e-3, f"greedy step too close to a tie ({margin}); pick another seed/prompt"
        nxt = nxt_logits.argmax(-1)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        if all(int(t) in eos_ids for t in nxt):
            break
        p = (mask.long().sum(-1) - 1)[:, None]
        lg, past = model.step(nxt[:, None], p, mask.bool(), past)
        nxt_logits = lg[:, -1]
    return ids, torch.stack(step_logits)


# --------------------------------------------------------------------------
# inputs (what the HF processors return)
# --------------------------------------------------------------------------

def random_image(rng, h, w):
    """A deterministic RGB uint8 image with some structure (gradient + noise)."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255.0 / max(w - 1, 1), yy * 255.0 / max(h - 1, 1), (xx + yy) * 127.0 / max(h + w - 2, 1)], -1)
    img = np.clip(base * 0.6 + rng.integers(0, 102, size=(h, w, 3)), 0, 255)
    return img.astype(np.uint8)


def normalize(img_u8, mean, std):
    """rescale(1/255) + normalize, channels-first float32 (computed in float64, rounded once)."""
    x = img_u8.astype(np.float64) / 255.0
    x = (x - np.asarray(mean)) / np.asarray(std)
    return x.transpose(2, 0, 1).astype(np.float32)


def pad_left(seqs, pad_id):
    T = max(len(s) for s in seqs)
    ids = np.full((len(seqs), T), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), T), dtype=np.int64)
    for b, s in enumerate(seqs):
        ids[b, T - len(s):] = s
        mask[b, T - len(s):] = 1
    return ids, mask


def llava_expand(prompt, image_token, n):
    """LlavaProcessor: every <image> becomes <image> * num_image_tokens before tokenization."""
    return prompt.replace(image_token, image_token * n)


def idefics3_expand(prompt, rows_cols, image_seq_len):
    """Idefics3Processor.__call__ prompt expansion (get_image_prompt_string / _prompt_split_image)."""
    fake, img, glob = "<fake_token_around_image>", "<image>", "<global-img>"
    parts = prompt.split(img)
    assert len(parts) == len(rows_cols) + 1
    out = parts[0]
    for (rows, cols), rest in zip(rows_cols, parts[1:]):
        if rows == 0 and cols == 0:
            s = f"{fake}{glob}" + img * image_seq_len + f"{fake}"
        else:
            s = ""
            for n_h in range(rows):
                for n_w in range(cols):
                    s += f"{fake}" + f"<row_{n_h + 1}_col_{n_w + 1}>" + img * image_seq_len
                s += "\n"
            s += f"\n{fake}" + f"{glob}" + img * image_seq_len + f"{fake}"
        out += s + rest
    return out


def idefics3_tiles(img_u8, tile):
    """Idefics3ImageProcessor split_image for an image that is already a multiple of the tile size:
    row-major crops, then the global image. The global view here is a box-filter downsample (the real
    processor resizes with LANCZOS; pixel_values are an *input* of the golden, so this is only cosmetic)."""
    h, w = img_u8.shape[:2]
    rows, cols = h // tile, w // tile
    crops = [img_u8[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] for r in range(rows) for c in range(cols)]
    g = img_u8.astype(np.float64).reshape(tile, h // tile, tile, w // tile, 3).mean(axis=(1, 3))
    crops.append(np.round(g).astype(np.uint8))
    return crops, rows, cols


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------

VARIANTS = [
    dict(name="tiny-llava", family="llava", seed=3001, dtype=torch.float32, minimal_config=False, shards=1,
         new_layout=False),
    dict(name="tiny-llava-f16", family="llava", seed=3002, dtype=torch.float16, minimal_config=True, shards=2,
         new_layout=False),
    dict(name="tiny-llava-qwen", family="llava-qwen", seed=3104, dtype=torch.float32, shards=1, new_layout=True),
    # BF16 like HuggingFaceTB/SmolVLM-256M-Instruct (and F32 would not fit in 1 MB)
    dict(name="tiny-idefics3", family="idefics3", seed=3201, dtype=torch.bfloat16, shards=1),
]

DTYPE_NAME = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}

PROMPTS = ["What is shown in this image?", "Describe the photo of the cat on the table, please."]


def write_json(path, obj, sort_keys=True):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=sort_keys, ensure_ascii=False)
        f.write("\n")


def save_weights(folder, stored, shards):
    items = list(stored.items())
    if shards == 1:
        mr.write_safetensors(os.path.join(folder, "model.safetensors"), stored)
        meta, loaded = mr.read_safetensors(os.path.join(folder, "model.safetensors"))
        assert meta == {"format": "pt"}
    else:
        blocks, total = mr.shard_state_dict(items, shards)
        weight_map = {}
        for i, blk in enumerate(blocks):
            fname = f"model-{i + 1:05d}-of-{len(blocks):05d}.safetensors"
            mr.write_safetensors(os.path.join(folder, fname), dict(blk))
            for k, _ in blk:
                weight_map[k] = fname
        write_json(os.path.join(folder, "model.safetensors.index.json"),
                   {"metadata": {"total_size": total}, "weight_map": weight_map})
        loaded = {}
        for fname in sorted(set(weight_map.values())):
            meta, part = mr.read_safetensors(os.path.join(folder, fname))
            assert meta == {"format": "pt"}
            for k in part:
                assert weight_map[k] == fname
            loaded.update(part)
        assert total == sum(t.numel() * t.element_size() for t in loaded.values())
    # ---- round trip: every tensor back bit-exactly
    assert set(loaded) == set(stored), set(loaded) ^ set(stored)
    for k, t in stored.items():
        l = loaded[k]
        assert l.dtype == t.dtype and tuple(l.shape) == tuple(t.shape), k
        assert torch.equal(l.view(torch.int16) if t.dtype == torch.bfloat16 else l,
                           t.view(torch.int16) if t.dtype == torch.bfloat16 else t), k
    return loaded


def make_folder(var):
    name, family = var["name"], var["family"]
    folder = os.path.join(MODELS_DIR, name)
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    dtype_name = DTYPE_NAME[var["dtype"]]

    if family == "llava":
        cfg = llava_config(var["minimal_config"], dtype_name)
        sd = build_llava_weights(cfg, var["seed"], new_layout=False)
        tok_json, tok_cfg, special_map = llama_sp_tokenizer()
        kind = "llama"
        pre = mr.clip_preprocessor(False)
        pre["processor_class"] = "LlavaProcessor"
        proc = {"image_token": "<image>", "num_additional_image_tokens": 1, "patch_size": 8,
                "processor_class": "LlavaProcessor", "vision_feature_select_strategy": "default"}
        chat_template = LLAVA15_CHAT_TEMPLATE
        gen = {"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 1001,
               "transformers_version": TRANSFORMERS_VERSION}
    elif family == "llava-qwen":
        cfg = llava_qwen_config()
        sd = build_llava_weights(cfg, var["seed"], new_layout=True)
        tok_json, tok_cfg, special_map = qwen2_tokenizer()
        kind = "qwen2"
        pre = mr.siglip_preprocessor()
        pre["processor_class"] = "LlavaProcessor"
        proc = {"image_token": "<image>", "num_additional_image_tokens": 0, "patch_size": 8,
                "processor_class": "LlavaProcessor", "vision_feature_select_strategy": "full"}
        chat_template = LLAVA_CHATML_TEMPLATE
        gen = {"bos_token_id": 999, "eos_token_id": [1001, 999], "pad_token_id": 999,
               "transformers_version": TRANSFORMERS_VERSION}
    else:
        cfg = idefics3_config(dtype_name)
        sd = build_idefics3_weights(cfg, var["seed"])
        tok_json, tok_cfg, special_map = smollm2_tokenizer()
        kind = "smollm2"
        pre = {"do_convert_rgb": True, "do_image_splitting": True, "do_normalize": True, "do_pad": True,
               "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
               "image_processor_type": "Idefics3ImageProcessor", "image_std": [0.5, 0.5, 0.5],
               "max_image_size": {"longest_edge": 32}, "processor_class": "Idefics3Processor", "resample": 1,
               "rescale_factor": 1 / 255, "size": {"longest_edge": 64}}
        proc = {"image_seq_len": 4, "processor_class": "Idefics3Processor"}
        chat_template = SMOLVLM_CHAT_TEMPLATE
        gen = {"bos_token_id": 1, "eos_token_id": 1004, "pad_token_id": 2,
               "transformers_version": TRANSFORMERS_VERSION}

    stored = {k: t.to(var["dtype"]) for k, t in sd.items()}
    write_json(os.path.join(folder, "config.json"), cfg)
    write_json(os.path.join(folder, "generation_config.json"), gen)
    write_json(os.path.join(folder, "preprocessor_config.json"), pre)
    write_json(os.path.join(folder, "processor_config.json"), proc)
    write_json(os.path.join(folder, "chat_template.json"), {"chat_template": chat_template})
    write_json(os.path.join(folder, "tokenizer.json"), tok_json, sort_keys=False)
    write_json(os.path.join(folder, "tokenizer_config.json"), tok_cfg)
    write_json(os.path.join(folder, "special_tokens_map.json"), special_map)
    loaded = save_weights(folder, stored, var["shards"])
    W = {k: t.to(torch.float64) for k, t in loaded.items()}
    model = Model("idefics3" if family == "idefics3" else "llava", cfg, W, new_layout=var.get("new_layout", False))
    return folder, cfg, Tokenizer(tok_json, kind), model, pre, gen


def check_close(a, b, what, tol=1e-9):
    err = (a - b).abs().max().item()
    assert err < tol, f"{what}: differs by {err}"
    return err


def make_goldens(var, cfg, tok, model, pre, gen):
    name, family = var["name"], var["family"]
    rng = np.random.Generator(np.random.PCG64(var["seed"] + 7))
    eos = gen["eos_token_id"] if isinstance(gen["eos_token_id"], list) else [gen["eos_token_id"]]
    summary = {}

    # ---- tokenizer self-checks: round trip, and the template renders what the family documents
    for p in PROMPTS:
        ids = tok.encode(p, add_special_tokens=False)
        assert tok.decode(ids) == p, (tok.decode(ids), p)

    def conv(text):
        return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]

    samples = []  # per sample: dict(prompt, ids, pixel_values, [pixel_attention_mask], image_uint8)
    if family in ("llava", "llava-qwen"):
        template = LLAVA15_CHAT_TEMPLATE if family == "llava" else LLAVA_CHATML_TEMPLATE
        v = model.v
        n_img = (v["image_size"] // v["patch_size"]) ** 2 + (1 if family == "llava" else 0)
        if cfg["vision_feature_select_strategy"] == "default":
            n_img -= 1
        for text in PROMPTS:
            prompt = render_chat(template, conv(text))
            if family == "llava":
                assert prompt == f"USER: <image>\n{text} ASSISTANT:", prompt
            else:
                assert prompt == f"<|im_start|>user\n<image>\n{text}<|im_end|>\n<|im_start|>assistant\n", prompt
            ids = tok.encode(llava_expand(prompt, "<image>", n_img))
            img = random_image(rng, 32, 32)
            px = normalize(img, pre["image_mean"], pre["image_std"])[None]
            samples.append(dict(prompt=prompt, ids=ids, pixel_values=px, image_uint8=img))
        pad_id = gen["pad_token_id"]
    else:
        seq_len = 4
        # Images already at the processor's resize target (longest edge = size["longest_edge"] = 64, sides
        # multiples of max_image_size = 32), so resizing is the identity: 64x64 -> 2x2 tiles + global,
        # 32x64 (h x w) -> 1x2 tiles + global. (With do_image_splitting the processor upscales every image to
        # the 64 longest edge, so the single-view `_prompt_single_image` layout never occurs here.)
        specs = [(64, 64), (32, 64)]
        for text, (h, w) in zip(PROMPTS, specs):
            prompt = render_chat(SMOLVLM_CHAT_TEMPLATE, conv(text))
            assert prompt == f"<|im_start|>User:<image>{text}<end_of_utterance>\nAssistant:", prompt
            img = random_image(rng, h, w)
            if h > 32 or w > 32:
                crops, rows, cols = idefics3_tiles(img, 32)
            else:
                crops, rows, cols = [img], 0, 0
            ids = tok.encode(idefics3_expand(prompt, [(rows, cols)], seq_len))
            px = np.stack([normalize(c, pre["image_mean"], pre["image_std"]) for c in crops])
            samples.append(dict(prompt=prompt, ids=ids, pixel_values=px, rows=rows, cols=cols, image_uint8=img))
        pad_id = gen["pad_token_id"]

    def to_batch(ss):
        ids, mask = pad_left([s["ids"] for s in ss], pad_id)
        if family == "idefics3":
            N = max(s["pixel_values"].shape[0] for s in ss)
            px = np.zeros((len(ss), N, 3, 32, 32), dtype=np.float32)
            pam = np.zeros((len(ss), N, 32, 32), dtype=bool)
            for b, s in enumerate(ss):
                n = s["pixel_values"].shape[0]
                px[b, :n] = s["pixel_values"]
                pam[b, :n] = True
            return ids, mask, px, pam
        return ids, mask, np.concatenate([s["pixel_values"] for s in ss]), None

    def run(ids, mask, px, pam, impl="explicit", positions=None):
        ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
        pos = generation_positions(mask_t) if positions is None else positions
        return model.forward(ids_t, mask_t, pos, torch.from_numpy(px).to(torch.float64),
                             None if pam is None else torch.from_numpy(pam), impl=impl) + (pos,)

    # ================= B=1 golden: logits, image features, greedy generation
    ids, mask, px, pam = to_batch(samples[:1])
    logits, feats, _, pos = run(ids, mask, px, pam)
    logits2, feats2, _, _ = run(ids, mask, px, pam, impl="batched")
    check_close(logits, logits2, f"{name}: logits explicit vs batched attention/RoPE/pixel-shuffle")
    check_close(feats, feats2, f"{name}: image features explicit vs second implementation")
    assert torch.isfinite(logits).all()
    assert logits.std() > 0.3, f"{name}: degenerate logits"
    assert (logits[0, -1] - logits[0, -2]).abs().max() > 0.1
    # image tokens matter: other pixels change every position from the first image token on, nothing before
    first_img = int(np.argmax(ids[0] == model.image_token_id))
    px_other = px.copy()
    px_other[px_other != 0] = -px_other[px_other != 0]  # keep padding images (all zeros) as they are
    logits_o, _, _, _ = run(ids, mask, px_other, pam)
    assert (logits_o[0, :first_img] - logits[0, :first_img]).abs().max() < 1e-12
    assert (logits_o[0, first_img:] - logits[0, first_img:]).abs().amax(-1).min() > 1e-3, "image does not matter"

    gen_ids, step_logits = greedy_generate(model, torch.from_numpy(ids), torch.from_numpy(mask),
                                           torch.from_numpy(px).to(torch.float64),
                                           None if pam is None else torch.from_numpy(pam), 8, eos)
    T = ids.shape[1]
    new = gen_ids[0, T:].tolist()
    assert len(new) == 8 and not any(t in eos for t in new), f"{name}: EOS in first 8 tokens: {new}"
    assert model.image_token_id not in new, f"{name}: generated the image token: {new}"
    assert all(t in tok.inv for t in new), f"{name}: generated an id outside the tokenizer: {new}"
    assert len(set(new)) >= 3, f"{name}: generation is degenerate: {new}"
    # KV-cached incremental decode == one full forward over prompt + generated tokens
    full_mask = np.ones((1, gen_ids.shape[1]), dtype=np.int64)
    full_logits, _, _, _ = run(gen_ids.numpy(), full_mask, px, pam)
    check_close(step_logits, full_logits[0, T - 1:T + 7], f"{name}: KV-cached decode vs full forward")
    check_close(step_logits[0], logits[0, -1], f"{name}: first step vs prefill")
    # the same through the second attention implementation
    full_logits2, _, _, _ = run(gen_ids.numpy(), full_mask, px, pam, impl="batched")
    check_close(full_logits, full_logits2, f"{name}: full generated sequence, explicit vs batched")

    arrays = dict(input_ids=ids, attention_mask=mask, pixel_values=px)
    if pam is not None:
        arrays["pixel_attention_mask"] = pam
    else:
        arrays["image_uint8"] = samples[0]["image_uint8"][None]
    arrays.update(logits=logits.to(torch.float32).numpy(), image_features=feats.to(torch.float32).numpy(),
                  generated_ids=gen_ids.numpy().astype(np.int64),
                  generated_step_logits=step_logits.to(torch.float32).numpy())
    path = os.path.join(GOLDENS_DIR, f"{name}.npz")
    mr.savez_deterministic(path, arrays)
    summary[path] = (arrays, dict(prompt=samples[0]["prompt"], new_tokens=new,
                                  decoded=tok.decode(new), rows_cols=(samples[0].get("rows"), samples[0].get("cols"))))

    # ================= B=2 batch golden: left padding, generation-style positions
    ids, mask, px, pam = to_batch(samples)
    logits, feats, _, pos = run(ids, mask, px, pam)
    logits2, feats2, _, _ = run(ids, mask, px, pam, impl="batched")
    pad = torch.from_numpy(mask) == 0
    real = ~pad
    check_close(logits[real], logits2[real], f"{name}.batch: explicit vs batched")
    check_close(feats, feats2, f"{name}.batch: image features")
    # padding invariance: every row equals its own unpadded B=1 run
    off = 0
    for b, s in enumerate(samples):
        i1, m1, p1, a1 = to_batch([s])
        l1, f1, _, _ = run(i1, m1, p1, a1)
        check_close(logits[b, real[b]], l1[0], f"{name}.batch row {b}: padded vs unpadded")
        check_close(feats[off:off + f1.shape[0]], f1, f"{name}.batch row {b}: features")
        off += f1.shape[0]
    assert off == feats.shape[0]
    # left-padded query rows attend to nothing (all keys masked): undefined in HF, stored as 0
    logits = torch.where(pad[..., None], torch.zeros_like(logits), logits)
    arrays = dict(input_ids=ids, attention_mask=mask, position_ids=pos.numpy().astype(np.int64), pixel_values=px)
    if pam is not None:
        arrays["pixel_attention_mask"] = pam
    else:
        arrays["image_uint8"] = np.stack([s["image_uint8"] for s in samples])
    arrays.update(logits=logits.to(torch.float32).numpy(), image_features=feats.to(torch.float32).numpy())
    path = os.path.join(GOLDENS_DIR, f"{name}.batch.npz")
    mr.savez_deterministic(path, arrays)
    summary[path] = (arrays, dict(prompts=[s["prompt"] for s in samples]))
    return summary


def main():
    print(f"torch {torch.__version__}, numpy {np.__version__}")
    os.makedirs(GOLDENS_DIR, exist_ok=True)
    for var in VARIANTS:
        folder, cfg, tok, model, pre, gen = make_folder(var)
        summary = make_goldens(var, cfg, tok, model, pre, gen)
        files = sorted(os.listdir(folder))
        size = sum(os.path.getsize(os.path.join(folder, f)) for f in files)
        assert size < 1_000_000, f"{folder} is {size} bytes"
        print(f"\n== {var['name']}  ({size} bytes: {', '.join(files)})")
        specials = {t["content"]: t["id"] for t in tok.tok["added_tokens"]}
        print(f"   added tokens: {specials if len(specials) < 12 else dict(list(specials.items())[:8])} ...")
        for path, (arrays, info) in summary.items():
            print(f"   {os.path.relpath(path, REPO)}  {info if 'prompt' not in info else ''}")
            if "prompt" in info:
                print(f"      prompt {info['prompt']!r}; new tokens {info['new_tokens']} = {info['decoded']!r}")
            for k, a in arrays.items():
                print(f"      {k:24s} {str(a.dtype):8s} {list(a.shape)}")
    print("\nall self-checks passed")


if __name__ == "__main__":
    sys.exit(main())
