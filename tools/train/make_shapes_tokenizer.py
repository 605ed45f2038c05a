#!/usr/bin/python3
"""CLIP-format BPE tokenizer for the Shapes World models (vocab 1000, <|startoftext|> 998,
<|endoftext|> 999 = eos = pad = unk), built with tools/make_tokenizers.py's machinery and exact
tokenizer.json layout, on that script's corpus plus Shapes World captions and questions, so every
Shapes World word is one token (the test tokenizer splits circle/square/triangle into letters).

    /usr/bin/python3 tools/train/make_shapes_tokenizer.py OUT_DIR     (writes tokenizer.json, tokenizer_config.json)
Deterministic."""
import collections
import os
import random
import re
import sys
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "shapes"))
import make_tokenizers as mt  # noqa: E402
import render  # noqa: E402


def shapes_lines():
    rnd = random.Random(4242)
    lines = []
    for i in range(600):
        sc = render.sample_scene(rnd)
        lines.append(render.retrieval_text(sc))
        for q in render.questions(sc):
            if q["kind"] != "existence" or rnd.random() < 0.1:
                lines.append(q["question"] + " " + q["answer"])
    return lines


def build(out_dir):
    counts = collections.Counter()
    for line in mt.corpus_lines() + shapes_lines():
        text = re.sub(r"\s+", " ", unicodedata.normalize("NFC", line)).lower()
        for w in mt.clip_pretokenize(text):
            bc = mt.to_byte_chars(w)
            counts[tuple(list(bc[:-1]) + [bc[-1] + "</w>"])] += 1
    # Counting words (not lines) keeps the BPE fast: train on the word histogram.
    base = mt.CS + [c + "</w>" for c in mt.CS]
    merges = mt.train_bpe(counts, 1000 - 2 - len(base), base)
    vocab = {t: i for i, t in enumerate(base)}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    assert len(vocab) == 1000 and vocab["<|startoftext|>"] == 998 and vocab["<|endoftext|>"] == 999
    added = mt.added
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added(998, "<|startoftext|>", normalized=True), added(999, "<|endoftext|>", normalized=False)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"},
             "behavior": "Removed", "invert": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": {"type": "RobertaProcessing", "sep": ["<|endoftext|>", 999], "cls": ["<|startoftext|>", 998],
                           "trim_offsets": False, "add_prefix_space": False},
        "decoder": {"type": "BPEDecoder", "suffix": "</w>"},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<|endoftext|>", "continuing_subword_prefix": "",
                  "end_of_word_suffix": "</w>", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [a + " " + b for a, b in merges]},
    }
    os.makedirs(out_dir, exist_ok=True)
    mt.write_json(os.path.join(out_dir, "tokenizer.json"), tok)
    mt.write_json(os.path.join(out_dir, "tokenizer_config.json"), {
        "add_prefix_space": False,
        "added_tokens_decoder": {
            "998": {"content": "<|startoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False, "special": True},
            "999": {"content": "<|endoftext|>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}},
        "bos_token": "<|startoftext|>", "clean_up_tokenization_spaces": True, "do_lower_case": True,
        "eos_token": "<|endoftext|>", "errors": "replace", "model_max_length": 77, "pad_token": "<|endoftext|>",
        "processor_class": "CLIPProcessor", "tokenizer_class": "CLIPTokenizer", "unk_token": "<|endoftext|>"})


WORDS = ["a", "photo", "of", "and", ",", "red", "green", "blue", "yellow", "circle", "square", "triangle",
         "describe", "the", "image", ".", "how", "many", "shapes", "are", "there", "?", "what", "color", "is",
         "shape", "which", "on", "left", "right", "yes", "no", "1", "2", "3"]


def verify(out_dir):
    """Every Shapes World word must be exactly one token; returns {word: tokens}."""
    from clip_bpe import ClipBpe
    t = ClipBpe(os.path.join(out_dir, "tokenizer.json"))
    res = {w: t.tokens(w) for w in WORDS}
    bad = {w: v for w, v in res.items() if len(v) != 1}
    assert not bad, bad
    return t


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "models", "shapes-clip")
    build(out)
    t = verify(out)
    s = "a photo of a green triangle, a red circle and a yellow square"
    print(s, "->", t.tokens(s), t.encode(s))
