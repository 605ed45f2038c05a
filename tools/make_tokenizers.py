#!/usr/bin/python3
"""Builds the small test tokenizers (tests/data/tokenizers/{clip,siglip,bytelevel}) in the exact
tokenizer.json layout HF publishes, and the Unicode tables the C# engine needs
(src/FastMM.Runtime/Tokenizers/UnicodeTables.g.cs) because the runtime runs with
InvariantGlobalization, where string.Normalize is a no-op and lowercasing is not Rust's.

stdlib only:  python3 tools/make_tokenizers.py            (writes everything)
Deterministic: re-running produces byte-identical files.
"""
import collections
import json
import math
import os
import random
import re
import string
import sys
import unicodedata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "tokenizers")

# ---------------------------------------------------------------- corpus
BASE_TEXT = """
A photo of a cat sitting on a wooden table next to a cup of coffee.
A dog is running through the park while children play with a red ball.
Two people are walking along the beach at sunset, holding hands.
The quick brown fox jumps over the lazy dog. It's a classic sentence, isn't it?
We've been working on this model for months; they'll release it soon, I'm sure.
An image of a mountain landscape with snow on the peaks and a lake below.
A close-up photograph of a flower with bright yellow petals and green leaves.
The city skyline at night, with tall buildings and lights reflecting in the river.
A bowl of fresh fruit: apples, oranges, bananas, and grapes on the kitchen counter.
A man riding a bicycle down a busy street in the rain, wearing a blue jacket.
There are 3 birds on the wire and 12 cars in the parking lot, from 1999 to 2024.
She said, "Hello, world!" and then he replied: 'Goodbye...' -- end of story.
Vision-language models learn to match images with text descriptions of their content.
The train station was crowded with travelers waiting for the morning express.
A painting of a ship sailing across a stormy ocean under dark clouds.
Café au lait, naïve résumé, Zürich, São Paulo, Ångström, façade, jalapeño, Ærø.
東京の夜景はとても綺麗です。北京 上海 香港。한국어 텍스트. Привет, мир! Γειά σου κόσμε.
Emoji time 😀🎉👍🏽 and symbols like €, £, ¥, ©, ®, ™, ±, ×, ÷, ≈, ∞, →, ←.
"""

WORDS = ("a an the of on in with and is are at to from by for photo picture image cat dog man woman "
         "child children people group red blue green yellow white black small large old young two three "
         "sitting standing running walking playing holding eating looking flying table street park beach "
         "house car train bus bicycle road tree flower sky water river mountain city building room kitchen "
         "window door food plate bowl cup ball boat bird horse field grass snow rain sun night day light "
         "shadow close view top front back side near next under over behind this that there it its they "
         "he she we you very some many one other new").split()


def corpus_lines():
    rnd = random.Random(1234)
    lines = [l for l in BASE_TEXT.strip().split("\n")]
    for _ in range(400):
        n = rnd.randint(4, 12)
        s = " ".join(rnd.choice(WORDS) for _ in range(n))
        if rnd.random() < 0.3:
            s += " " + str(rnd.randint(0, 2025))
        s = s.capitalize() + rnd.choice([".", ".", "!", "?", ",", "'s", ""])
        lines.append(s)
    return lines


# ---------------------------------------------------------------- byte-level helpers
def bytes_to_unicode():
    """GPT-2's reversible byte -> printable char table (same order HF/OpenAI use for the vocab)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return bs, [chr(c) for c in cs]


BS, CS = bytes_to_unicode()
BYTE_TO_CHAR = dict(zip(BS, CS))


def to_byte_chars(s):
    return "".join(BYTE_TO_CHAR[b] for b in s.encode("utf-8"))


def is_letter(c):
    return unicodedata.category(c).startswith("L")


def is_number(c):
    return unicodedata.category(c).startswith("N")


def clip_pretokenize(text):
    """CLIP's Split regex, done by hand (re has no \\p{L}): contractions | letters+ | one digit | other+."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        m = re.match(r"'(s|t|re|ve|m|ll|d)", text[i:])
        if m:
            out.append(m.group(0)); i += len(m.group(0)); continue
        if is_letter(c):
            j = i
            while j < n and is_letter(text[j]): j += 1
        elif is_number(c):
            j = i + 1
        elif c.isspace():
            i += 1; continue
        else:
            j = i
            while j < n and not (text[j].isspace() or is_letter(text[j]) or is_number(text[j])): j += 1
        out.append(text[i:j]); i = j
    return out


def gpt2_pretokenize(text):
    """Approximation of the GPT-2 regex, good enough to pick training merges."""
    out, i, n = [], 0, len(text)
    while i < n:
        m = re.match(r"'(s|t|re|ve|m|ll|d)", text[i:])
        if m:
            out.append(m.group(0)); i += len(m.group(0)); continue
        j = i + 1 if text[i] == " " and i + 1 < n and not text[i + 1].isspace() else i
        c = text[j]
        if is_letter(c):
            k = j
            while k < n and is_letter(text[k]): k += 1
        elif is_number(c):
            k = j
            while k < n and is_number(text[k]): k += 1
        elif c.isspace():
            k = j
            while k < n and text[k].isspace(): k += 1
        else:
            k = j
            while k < n and not (text[k].isspace() or is_letter(text[k]) or is_number(text[k])): k += 1
        out.append(text[i:k]); i = k
    return out


def train_bpe(word_counts, n_merges, existing):
    """Plain BPE: repeatedly merge the most frequent adjacent pair (ties: lexicographic, for determinism)."""
    words = [(list(w), c) for w, c in word_counts.items()]
    merges, vocab = [], set(existing)
    while len(merges) < n_merges:
        pairs = collections.Counter()
        for syms, c in words:
            for a, b in zip(syms, syms[1:]):
                pairs[(a, b)] += c
        best = None
        for (a, b), c in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0])):
            if a + b not in vocab:
                best = (a, b)
                break
        if best is None:
            raise SystemExit("corpus too small for %d merges" % n_merges)
        a, b = best
        merges.append(best)
        vocab.add(a + b)
        for syms, _ in words:
            i = 0
            while i < len(syms) - 1:
                if syms[i] == a and syms[i + 1] == b:
                    syms[i:i + 2] = [a + b]
                i += 1
    return merges


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
        f.write("\n")


def added(id_, content, special=True, lstrip=False, rstrip=False, normalized=False, single_word=False):
    return {"id": id_, "content": content, "single_word": single_word, "lstrip": lstrip,
            "rstrip": rstrip, "normalized": normalized, "special": special}


# ---------------------------------------------------------------- CLIP
def make_clip():
    counts = collections.Counter()
    for line in corpus_lines():
        text = re.sub(r"\s+", " ", unicodedata.normalize("NFC", line)).lower()
        for w in clip_pretokenize(text):
            bc = to_byte_chars(w)
            counts[tuple(list(bc[:-1]) + [bc[-1] + "</w>"])] += 1
    write_clip_tokenizer(os.path.join(OUT, "clip"), counts)


def write_clip_tokenizer(out_dir, counts):
    """Trains CLIP's BPE (vocab 1000, specials 998/999) on a word histogram and writes openai/clip's layout."""
    base = CS + [c + "</w>" for c in CS]
    merges = train_bpe(counts, 1000 - 2 - len(base), base)
    vocab = {t: i for i, t in enumerate(base)}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    assert len(vocab) == 1000 and vocab["<|startoftext|>"] == 998 and vocab["<|endoftext|>"] == 999
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
    write_json(os.path.join(out_dir, "tokenizer.json"), tok)
    write_json(os.path.join(out_dir, "tokenizer_config.json"), {
        "add_prefix_space": False,
        "added_tokens_decoder": {
            "998": {"content": "<|startoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False, "special": True},
            "999": {"content": "<|endoftext|>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}},
        "bos_token": "<|startoftext|>", "clean_up_tokenization_spaces": True, "do_lower_case": True,
        "eos_token": "<|endoftext|>", "errors": "replace", "model_max_length": 77, "pad_token": "<|endoftext|>",
        "processor_class": "CLIPProcessor", "tokenizer_class": "CLIPTokenizer", "unk_token": "<|endoftext|>"})


# ---------------------------------------------------------------- GPT-2 style byte-level BPE
def make_bytelevel():
    counts = collections.Counter()
    for line in corpus_lines():
        for w in gpt2_pretokenize(line):
            counts[tuple(to_byte_chars(w))] += 1
    merges = train_bpe(counts, 1000 - 1 - 256, CS)
    vocab = {c: i for i, c in enumerate(CS)}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    assert len(vocab) == 1000
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [
            added(999, "<|endoftext|>"),
            added(1000, "<image>", lstrip=True, rstrip=True),
            added(1001, "<|im_start|>"),
            added(1002, " hello", special=False, normalized=True),
            added(1003, "yes", special=False, single_word=True),
        ],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [[a, b] for a, b in merges]},
    }
    d = os.path.join(OUT, "bytelevel")
    write_json(os.path.join(d, "tokenizer.json"), tok)
    write_json(os.path.join(d, "tokenizer_config.json"), {
        "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "model_max_length": 1024, "tokenizer_class": "GPT2Tokenizer"})


# ---------------------------------------------------------------- SigLIP (T5-style Unigram)
SIGLIP_PUNCT = string.punctuation


def siglip_canonicalize(text):
    text = text.lower()
    text = "".join(c for c in text if c not in SIGLIP_PUNCT)
    text = re.sub(" {2,}", " ", text)
    return text.strip()


def make_siglip():
    words = collections.Counter()
    for line in corpus_lines():
        for w in siglip_canonicalize(line).split(" "):
            if w:
                words["▁" + w] += 1
    chars = collections.Counter()
    subs = collections.Counter()
    for w, c in words.items():
        for ch in w:
            chars[ch] += c
        for i in range(len(w)):
            for j in range(i + 2, min(len(w), i + 8) + 1):
                subs[w[i:j]] += c
    pieces = collections.OrderedDict()
    specials = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    # Every character seen gets a piece (so Viterbi never falls back for corpus text); the rest of the budget
    # goes to the most useful multi-char substrings (frequency x length), whole words first.
    for ch, c in sorted(chars.items(), key=lambda kv: (-kv[1], kv[0])):
        pieces[ch] = c
    for extra in string.ascii_lowercase + string.digits + "▁":
        pieces.setdefault(extra, 1)
    ranked = sorted(subs.items(), key=lambda kv: (-(kv[1] * (len(kv[0]) - 1)), kv[0]))
    for s, c in ranked:
        if len(pieces) >= 1000 - len(specials):
            break
        if c >= 2 and s not in pieces:
            pieces[s] = c
    assert len(pieces) == 1000 - len(specials), len(pieces)
    total = sum(pieces.values())
    # Log-probabilities like a SentencePiece unigram model; single chars are penalised so longer pieces win.
    vocab = [[p, s] for p, s in specials]
    items = sorted(pieces.items(), key=lambda kv: (-kv[1], kv[0]))
    for p, c in items:
        score = math.log(c / total) - (2.0 if len(p) == 1 else 0.0)
        vocab.append([p, round(score, 6)])
    punct_class = "[" + re.sub(r"([\\\[\]\^\-])", r"\\\1", SIGLIP_PUNCT) + "]"
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added(0, "<pad>"), added(1, "</s>"), added(2, "<unk>")],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Lowercase"},
            {"type": "Replace", "pattern": {"Regex": punct_class}, "content": ""},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
            {"type": "Strip", "strip_left": True, "strip_right": True}]},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}},
                                    {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                           "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}},
        "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True},
        "model": {"type": "Unigram", "unk_id": 2, "vocab": vocab, "byte_fallback": False},
    }
    d = os.path.join(OUT, "siglip")
    write_json(os.path.join(d, "tokenizer.json"), tok)
    write_json(os.path.join(d, "tokenizer_config.json"), {
        "added_tokens_decoder": {
            "0": {"content": "<pad>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True},
            "1": {"content": "</s>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True},
            "2": {"content": "<unk>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}},
        "additional_special_tokens": [], "clean_up_tokenization_spaces": True, "do_lower_case": True,
        "eos_token": "</s>", "model_input_names": ["input_ids"], "model_max_length": 64, "pad_token": "</s>",
        "processor_class": "SiglipProcessor", "sp_model_kwargs": {}, "tokenizer_class": "SiglipTokenizer",
        "unk_token": "<unk>"})


# ---------------------------------------------------------------- Unicode tables for the C# engine
def make_unicode_tables():
    ccc, decomp, composites, lower = [], [], [], []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF or 0xAC00 <= cp <= 0xD7A3:  # surrogates; Hangul syllables are algorithmic
            continue
        c = chr(cp)
        k = unicodedata.combining(c)
        if k:
            ccc.append("%X:%X" % (cp, k))
        d = unicodedata.decomposition(c)
        if d:
            compat = d.startswith("<")
            parts = d.split()[1:] if compat else d.split()
            decomp.append(("!" if compat else "") + "%X:" % cp + ".".join(parts))
            # A primary composite: canonical pair that NFC recomposes to itself (drops exclusions/singletons).
            if not compat and len(parts) == 2 and unicodedata.normalize("NFC", c) == c:
                composites.append("%X" % cp)
        lo = c.lower()
        if lo != c:
            lower.append("%X:" % cp + ".".join("%X" % ord(x) for x in lo))

    def chunk(name, items):
        s = " ".join(items)
        parts = [s[i:i + 2000] for i in range(0, len(s), 2000)]
        return "    internal const string %s =\n        %s;\n" % (name, "\n        + ".join(json.dumps(p) for p in parts))

    path = os.path.join(ROOT, "src", "FastMM.Runtime", "Tokenizers", "UnicodeTables.g.cs")
    with open(path, "w", encoding="utf-8") as f:
        f.write("// <auto-generated> by tools/make_tokenizers.py from Python unicodedata %s. Do not edit.</auto-generated>\n"
                % unicodedata.unidata_version)
        f.write("namespace FastMM.Runtime.Tokenizers;\n\n")
        f.write("/// <summary>Hex-encoded Unicode data: combining classes, decompositions ('!' = compatibility),\n"
                "/// primary composites and per-code-point lowercase mappings.</summary>\n")
        f.write("internal static class UnicodeTables\n{\n")
        f.write(chunk("CombiningClasses", ccc))
        f.write(chunk("Decompositions", decomp))
        f.write(chunk("Composites", composites))
        f.write(chunk("Lowercase", lower))
        f.write("}\n")


if __name__ == "__main__":
    make_clip()
    make_siglip()
    make_bytelevel()
    if "--no-unicode" not in sys.argv:
        make_unicode_tables()
    print("ok")
