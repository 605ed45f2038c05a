"""Minimal pure-Python encoder for CLIP-format BPE tokenizer.json files (HF `tokenizers` semantics for
the pieces CLIP uses: NFC + whitespace collapse + lowercase, CLIP's Split regex, ByteLevel (no regex),
BPE with the `</w>` end-of-word suffix, RobertaProcessing <bos> ... <eos>). Enough for Shapes World text;
no `tokenizers`/`transformers` needed."""
import json
import os
import re
import sys
import unicodedata

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import make_tokenizers  # noqa: E402  (GPT-2's byte table, shared with the tokenizer builders)


_BS, _CS = make_tokenizers.bytes_to_unicode()
_B2U = dict(zip(_BS, _CS))


def _cat(c):
    return unicodedata.category(c)[0]


def _pretokenize(text):
    """CLIP's Split regex: contractions | letters+ | one digit | other non-space run."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        m = re.match(r"'(s|t|re|ve|m|ll|d)", text[i:])
        if m:
            out.append(m.group(0)); i += len(m.group(0)); continue
        if _cat(c) == "L":
            j = i
            while j < n and _cat(text[j]) == "L":
                j += 1
        elif _cat(c) == "N":
            j = i + 1
        elif c.isspace():
            i += 1; continue
        else:
            j = i
            while j < n and not (text[j].isspace() or _cat(text[j]) in "LN"):
                j += 1
        out.append(text[i:j]); i = j
    return out


class ClipBpe:
    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            tok = json.load(f)
        m = tok["model"]
        assert m["type"] == "BPE" and m["end_of_word_suffix"] == "</w>"
        self.vocab = m["vocab"]
        self.inv = {i: t for t, i in self.vocab.items()}
        merges = [tuple(x.split(" ")) if isinstance(x, str) else tuple(x) for x in m["merges"]]
        self.ranks = {p: r for r, p in enumerate(merges)}
        pp = tok["post_processor"]
        self.bos = pp["cls"][1]
        self.eos = pp["sep"][1]
        self.unk = self.vocab.get(m.get("unk_token"))

    def _bpe(self, word):
        syms = list(word[:-1]) + [word[-1] + "</w>"]
        while len(syms) > 1:
            best, bi = None, -1
            for i in range(len(syms) - 1):
                r = self.ranks.get((syms[i], syms[i + 1]))
                if r is not None and (best is None or r < best):
                    best, bi = r, i
            if best is None:
                break
            a, b = syms[bi], syms[bi + 1]
            out, i = [], 0
            while i < len(syms):
                if i < len(syms) - 1 and syms[i] == a and syms[i + 1] == b:
                    out.append(a + b); i += 2
                else:
                    out.append(syms[i]); i += 1
            syms = out
        return syms

    def tokens(self, text):
        text = re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).lower()
        out = []
        for w in _pretokenize(text):
            bc = "".join(_B2U[b] for b in w.encode("utf-8"))
            out.extend(self._bpe(bc))
        return out

    def encode(self, text):
        """<bos> ids <eos> (what CLIPTokenizer(text) returns as input_ids)."""
        return [self.bos] + [self.vocab.get(t, self.unk) for t in self.tokens(text)] + [self.eos]

    def batch(self, texts, length=77, pad_id=None):
        """padding="max_length": pad with pad_id (default eos); returns (ids, mask) as lists."""
        pad_id = self.eos if pad_id is None else pad_id
        ids, mask = [], []
        for t in texts:
            e = self.encode(t)[:length]
            ids.append(e + [pad_id] * (length - len(e)))
            mask.append([1] * len(e) + [0] * (length - len(e)))
        return ids, mask
