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
    mt.write_clip_tokenizer(out_dir, counts)


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
