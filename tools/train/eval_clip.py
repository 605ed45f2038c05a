#!/usr/bin/python3
"""Zero-shot retrieval check of a Shapes World CLIP folder (spec: "Retrieval (for CLIP-style models)").

    /usr/bin/python3 tools/train/eval_clip.py --model models/shapes-clip --count 1000 --seed 20240601

Renders `count` fresh scenes with a seed different from training's (training uses seeds
seed*1_000_003 + step for small seeds; the default here, 20240601, draws disjoint streams), across the whole
size range 96-256 px with tinted backgrounds, anti-aliased (4x supersampling), preprocesses each image as the
folder's CLIPImageProcessor says (bicubic resize to its size, centre crop, OpenAI mean/std), and for each image
ranks 8 candidate texts: its own "a photo of ..." caption plus 7 captions of other random scenes (distinct
from it and from each other; an identical caption could not be told apart). Reports recall@1, overall and by
object count, with the PyTorch model loaded from the folder's F16 weights (computed in F32).
"""
import argparse
import json
import os
import random
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shapes_clip import load_folder, preprocess, render, tokenize  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(os.path.dirname(__file__), "..", "..", "models", "shapes-clip"))
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_grad_enabled(False)
    t0 = time.time()

    model, tok, cfg = load_folder(a.model)
    with open(os.path.join(a.model, "preprocessor_config.json")) as f:
        pre = json.load(f)
    size = pre["crop_size"]["height"]
    assert pre["size"]["shortest_edge"] == size and pre["resample"] == 3

    rng = random.Random(a.seed)
    scenes = [render.sample_scene(rng) for _ in range(a.count)]
    sizes = [s["size"] for s in scenes]
    hits, by_n = [], {1: [], 2: [], 3: []}
    chunk = 128
    img_emb = []
    for i in range(0, a.count, chunk):
        px = torch.from_numpy(np.stack([preprocess(render.draw(s), size) for s in scenes[i:i + chunk]]))
        img_emb.append(model.encode_image(px))
    img_emb = torch.cat(img_emb)
    scale = model.logit_scale.exp()
    confusions = []
    for i, s in enumerate(scenes):
        own = render.retrieval_text(s)
        cands = [own]
        while len(cands) < a.candidates:
            c = render.retrieval_text(render.sample_scene(rng))
            if c not in cands:
                cands.append(c)
        ids, mask = tokenize(tok, cands)
        logits = scale * model.encode_text(ids, mask) @ img_emb[i]
        ok = int(logits.argmax().item() == 0)
        hits.append(ok)
        by_n[len(s["objects"])].append(ok)
        if not ok and len(confusions) < 8:
            confusions.append((own, cands[int(logits.argmax())]))
    r = sum(hits) / len(hits)
    print(f"model {os.path.normpath(a.model)}; {a.count} fresh scenes (seed {a.seed}, S {min(sizes)}-{max(sizes)} px), "
          f"{a.candidates} candidates each")
    for n, v in by_n.items():
        if v:
            print(f"  {n} object(s): recall@1 {sum(v) / len(v):.3f}  ({len(v)} images)")
    print("  some misses (true -> chosen):")
    for t, c in confusions:
        print(f"    {t!r} -> {c!r}")
    print(f"recall@1 = {r:.4f}  ({sum(hits)}/{len(hits)})   [{time.time() - t0:.0f}s]")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(recall_at_1=r, count=a.count, seed=a.seed, candidates=a.candidates,
                           by_objects={n: sum(v) / len(v) for n, v in by_n.items() if v}), f, indent=2)


if __name__ == "__main__":
    main()
