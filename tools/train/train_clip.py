#!/usr/bin/python3
"""Train a tiny CLIP (HF CLIPModel, model_type "clip") on Shapes World, contrastively, with freshly
rendered images every step (infinite data) and hard-negative captions, and write models/shapes-clip/
as a complete Hugging Face folder plus a golden file tools/train/goldens/shapes-clip.npz.

    nice -n 10 /usr/bin/python3 tools/train/train_clip.py --seed 0 --minutes 22

Training stops by time: the cosine learning-rate schedule follows wall-clock progress through --minutes, and
the steps taken and the exact learning rate of every step are saved in tools/train/goldens/shapes-clip.train.json.
Everything else (init, every rendered batch, hard negatives) is a function of --seed and the step index, so
`--replay tools/train/goldens/shapes-clip.train.json` repeats a run exactly (same seed/batch/threads), whatever
the machine's speed. `--steps N` runs a step-based schedule instead.
"""
import argparse
import json
import math
import os
import random
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shapes_clip import (REPO, ClipModel, load_folder, make_config, preprocess, preprocessor_config,  # noqa: E402
                         render, tokenize)
import make_shapes_tokenizer  # noqa: E402
from make_reference import clip_forward, read_safetensors, savez_deterministic, write_safetensors  # noqa: E402

# ----------------------------------------------------------------------------- data


def render_batch(rng, n, image_size, supersample_choices=(1, 2, 4, 4)):
    """n fresh scenes -> (pixel_values [n,3,s,s], scenes). Random supersampling (1 = aliased) varies edges."""
    scenes, px = [], []
    for _ in range(n):
        sc = render.sample_scene(rng)
        img = render.draw(sc, supersample=rng.choice(supersample_choices))
        scenes.append(sc)
        px.append(preprocess(img, image_size))
    return torch.from_numpy(np.stack(px)), scenes


def objs_caption(objs):
    parts = [f"a {c} {s}" for c, s in objs]
    return "a photo of " + (parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1])


def hard_negatives(rng, scene, k, kinds=("colour", "colour", "shape", "shape", "swap", "swap", "count")):
    """k captions that differ from the scene's in one detail: a colour, a shape, the order of two objects,
    one object dropped or one added (drawn from `kinds`). Always different from the true caption (no two
    identical objects)."""
    objs = [(o["color"], o["shape"]) for o in scene["objects"]]
    true = objs_caption(objs)
    out = []
    tries = 0
    while len(out) < k and tries < 100:
        tries += 1
        o = list(objs)
        kind = rng.choice(kinds)
        i = rng.randrange(len(o))
        if kind == "colour":
            o[i] = (rng.choice([c for c in render.COLOUR_NAMES if c != o[i][0]]), o[i][1])
        elif kind == "shape":
            o[i] = (o[i][0], rng.choice([s for s in render.SHAPES if s != o[i][1]]))
        elif kind == "swap":
            if len(o) < 2:
                continue
            j = rng.choice([j for j in range(len(o)) if j != i])
            o[i], o[j] = o[j], o[i]
        else:
            if len(o) > 1 and rng.random() < 0.5:
                del o[i]
            elif len(o) < 3:
                o.insert(rng.randrange(len(o) + 1), (rng.choice(render.COLOUR_NAMES), rng.choice(render.SHAPES)))
            else:
                continue
        if len(set(o)) != len(o):
            continue
        c = objs_caption(o)
        if c != true and c not in out:
            out.append(c)
    return out


# ----------------------------------------------------------------------------- eval


@torch.no_grad()
def recall_at_1(model, tok, seed, n, image_size, n_candidates=8):
    """Zero-shot retrieval: for each fresh image, its caption + 7 distinct captions of other random scenes."""
    rng = random.Random(seed)
    px, scenes = render_batch(rng, n, image_size, supersample_choices=(4,))
    caps = [render.retrieval_text(s) for s in scenes]
    ie = model.encode_image(px)
    hits = 0
    for i in range(n):
        cands = [caps[i]]
        while len(cands) < n_candidates:
            c = render.retrieval_text(render.sample_scene(rng))
            if c not in cands:
                cands.append(c)
        ids, mask = tokenize(tok, cands)
        te = model.encode_text(ids, mask)
        hits += int((te @ ie[i]).argmax().item() == 0)
    return hits / n


@torch.no_grad()
def shape_accuracy(model, tok, seed, n, image_size):
    """How well the image embedding sees shape: the true caption against the two captions that differ from it only
    in one object's shape (3-way choice, chance 1/3)."""
    rng = random.Random(seed)
    px, scenes = render_batch(rng, n, image_size, supersample_choices=(4,))
    ie = model.encode_image(px)
    hits = 0
    for i, s in enumerate(scenes):
        objs = [(o["color"], o["shape"]) for o in s["objects"]]
        j = rng.randrange(len(objs))
        cands = [objs_caption(objs)]
        for shape in render.SHAPES:
            o = list(objs)
            if shape == o[j][1]:
                continue
            o[j] = (o[j][0], shape)
            if len(set(o)) == len(o):
                cands.append(objs_caption(o))
        ids, mask = tokenize(tok, cands)
        hits += int((model.encode_text(ids, mask) @ ie[i]).argmax().item() == 0)
    return hits / n


# ----------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "models", "shapes-clip"))
    ap.add_argument("--golden", default=os.path.join(REPO, "tools", "train", "goldens", "shapes-clip.npz"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=21.0, help="wall-clock budget for the training loop")
    ap.add_argument("--steps", type=int, default=0, help="fixed step count (reproducible); 0 = derive from --minutes")
    ap.add_argument("--replay", help="a .train.json from an earlier run: repeat its exact per-step learning rates")
    ap.add_argument("--batch", type=int, default=96)
    ap.add_argument("--hard", type=int, default=2, help="hard-negative captions per image")
    ap.add_argument("--shape-negatives", type=int, default=0,
                    help="extra hard negatives per image that change only one object's shape")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=100)
    a = ap.parse_args()

    torch.set_grad_enabled(True)  # make_reference disables autograd when imported
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t_start = time.time()

    # tokenizer (built deterministically into the output folder)
    tmp = a.out + ".tmp"
    if os.path.isdir(tmp):
        shutil.rmtree(tmp)
    make_shapes_tokenizer.build(tmp)
    tok = make_shapes_tokenizer.verify(tmp)

    cfg = make_config(vision=dict(image_size=a.image_size, patch_size=a.patch))
    S = cfg["vision_config"]["image_size"]
    model = ClipModel(cfg)
    gen = torch.Generator().manual_seed(a.seed)
    model.init_weights(gen)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params {n_params / 1e6:.2f} M; image {S}px patch {cfg['vision_config']['patch_size']}", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.98), eps=1e-6)

    replay = None
    if a.replay:
        with open(a.replay) as f:
            replay = json.load(f)["lr_per_step"]
    total = len(replay) if replay else (a.steps if a.steps > 0 else None)
    budget = a.minutes * 60
    t_loop = time.time()
    step = 0
    log, lrs = [], []
    while True:
        elapsed = time.time() - t_loop
        if total is not None and step >= total:
            break
        if total is None and elapsed >= budget:
            print(f"time budget reached at step {step}", flush=True)
            break
        warm = min(1.0, (step + 1) / a.warmup)
        # cosine to 2% of the peak over the run: by step (--steps) or by wall-clock progress (--minutes)
        progress = step / total if total is not None else elapsed / budget
        lr = replay[step] if replay else a.lr * warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))
        lrs.append(lr)
        for g in opt.param_groups:
            g["lr"] = lr

        rng = random.Random(a.seed * 1_000_003 + step)
        model.train()
        px, scenes = render_batch(rng, a.batch, S)
        caps = [render.retrieval_text(s) for s in scenes]
        negs = []
        for s in scenes:
            negs += hard_negatives(rng, s, a.hard)
            if a.shape_negatives:
                negs += hard_negatives(rng, s, a.shape_negatives, kinds=("shape",))
        texts = caps + negs
        ids, mask = tokenize(tok, texts)
        ie = model.encode_image(px)
        te = model.encode_text(ids, mask)
        scale = model.logit_scale.exp()
        li = scale * ie @ te.t()                      # [B, B + negs]
        # identical captions in the batch (e.g. two "a red circle" scenes) are not negatives of each other
        cap_idx = {}
        for j, c in enumerate(texts):
            cap_idx.setdefault(c, []).append(j)
        B = len(caps)
        same = torch.zeros(B, len(texts), dtype=torch.bool)
        for i, c in enumerate(caps):
            for j in cap_idx[c]:
                if j != i:
                    same[i, j] = True
        li_m = li.masked_fill(same, float("-inf"))
        lt_m = li[:, :B].t().masked_fill(same[:, :B].t(), float("-inf"))
        target = torch.arange(B)
        loss = 0.5 * (F.cross_entropy(li_m, target) + F.cross_entropy(lt_m, target))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
            acc = (li_m.argmax(1) == target).float().mean().item()
        step += 1
        if step % 25 == 0:
            print(f"step {step}/{total} {time.time() - t_loop:6.0f}s lr {lr:.2e} loss {loss.item():.3f} "
                  f"i2t-acc(batch+hard) {acc:.3f} scale {scale.item():.1f}", flush=True)
        if step % a.eval_every == 0:
            model.eval()
            r = recall_at_1(model, tok, 999_999, 200, S)
            sa = shape_accuracy(model, tok, 999_998, 200, S)
            log.append(dict(step=step, seconds=round(time.time() - t_loop), loss=round(loss.item(), 4), recall_at_1=r,
                            shape_accuracy=sa))
            print(f"  eval recall@1 (200 imgs, 8 cands) {r:.3f}; shape (true vs shape-changed captions) {sa:.3f}", flush=True)

    train_seconds = time.time() - t_loop
    print(f"trained {step} steps in {train_seconds / 60:.1f} min", flush=True)

    # ---------------------------------------------------------------- save HF folder (F16)
    model.eval()
    folder = tmp
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
        json.dump(preprocessor_config(S), f, indent=2, sort_keys=True)
        f.write("\n")
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    write_safetensors(os.path.join(folder, "model.safetensors"), sd)
    if os.path.isdir(a.out):
        shutil.rmtree(a.out)
    os.rename(folder, a.out)

    # ---------------------------------------------------------------- golden from the saved weights
    m2, tok2, cfg2 = load_folder(a.out)
    texts = ["a photo of a red circle", "a photo of a blue square and a green triangle",
             "a photo of a yellow triangle, a red square and a blue circle", "a photo of a green circle"]
    ids, mask = tokenize(tok2, texts, length=77)
    grng = random.Random(12345)
    gscenes = [dict(size=160, background=[240, 238, 230], objects=[
                   dict(shape="circle", color="red", rgb=[220, 40, 40], cx=80.0, cy=80.0, size=48.0,
                        box=[56.0, 56.0, 104.0, 104.0])]),
               render.sample_scene(grng, size=224, n_objects=3)]
    imgs = [render.draw(s) for s in gscenes]
    px = torch.from_numpy(np.stack([preprocess(im, S) for im in imgs]))
    with torch.no_grad():
        out = m2(ids, mask, px)
        _, stored = read_safetensors(os.path.join(a.out, "model.safetensors"))
        W = {k: v.to(torch.float64) for k, v in stored.items()}
        ref = clip_forward(cfg2, W, ids, mask, px.to(torch.float64))
    for k in ("image_embeds", "text_embeds", "logits_per_image", "logits_per_text"):
        err = (out[k].double() - ref[k]).abs().max().item()
        print(f"golden {k}: float32 module vs float64 make_reference.clip_forward max |diff| {err:.2e}")
        assert err < 1e-3, k
    os.makedirs(os.path.dirname(a.golden), exist_ok=True)
    arrays = dict(input_ids=ids.numpy(), attention_mask=mask.numpy(), pixel_values=px.numpy())
    arrays.update({k: out[k].to(torch.float32).numpy() for k in ("image_embeds", "text_embeds", "logits_per_image",
                                                                   "logits_per_text")})
    savez_deterministic(a.golden, arrays)
    for i, im in enumerate(imgs):
        im.save(a.golden.replace(".npz", f".image{i}.png"))
    np.set_printoptions(precision=3, suppress=True)
    print("golden texts:", texts)
    print("golden images:", [render.caption(s) for s in gscenes])
    print("logits_per_image:\n", out["logits_per_image"].numpy())

    r = recall_at_1(m2, tok2, 999_999, 500, S)
    size = sum(os.path.getsize(os.path.join(a.out, f)) for f in os.listdir(a.out))
    sa = shape_accuracy(m2, tok2, 999_998, 500, S)
    info = dict(seed=a.seed, steps=step, batch=a.batch, hard=a.hard, shape_negatives=a.shape_negatives,
                image_size=a.image_size, patch=a.patch, quick_shape_accuracy_500=sa, lr=a.lr, warmup=a.warmup, threads=a.threads,
                train_minutes=round(train_seconds / 60, 2), total_minutes=round((time.time() - t_start) / 60, 2),
                params=n_params, folder_bytes=size, quick_recall_at_1_500=r, evals=log, config=cfg,
                lr_per_step=lrs)
    with open(a.golden.replace(".npz", ".train.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    print(f"saved {a.out} ({size / 1e6:.2f} MB); quick recall@1 (500 imgs) {r:.3f}; shape {sa:.3f}")


if __name__ == "__main__":
    main()
