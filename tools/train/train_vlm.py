#!/usr/bin/python3
"""Train a tiny LLaVA (HF LlavaForConditionalGeneration, model_type "llava") on Shapes World and write
models/shapes-vlm/ as a complete Hugging Face folder plus a golden file tools/train/goldens/shapes-vlm.npz.

    (the committed run's command is in tools/train/README.md)

The LLaVA recipe, scaled down:
  * vision tower = models/shapes-clip's CLIP vision tower (read at its penultimate layer, CLS dropped: 64 tokens);
  * stage 0 (--tower-minutes, our addition): the tower alone learns per-patch heads (colour, shape, left/right rank,
    colour+shape) from the renderer's geometry, so that each image token states its object's attributes; the heads
    are a training aid and are not saved. With --aux-weight their loss stays on while the tower trains in stage 2;
  * stage 1 (alignment, --align-minutes): the vision tower is frozen and the projector learns to feed it to the
    text model on captioning ("Describe the image."). Our text model has no pre-training (none can be
    downloaded), so unlike LLaVA's stage 1 it trains here too;
  * stage 2 (instruction tuning): everything trains (the tower at a lower learning rate) on multi-turn
    conversations over the spec's questions, the image in the first user turn, loss on the answers only.
Fresh scenes every step (infinite data). Every stage stops by wall clock and follow a cosine schedule over it; the
exact learning rate of every step is saved in tools/train/goldens/shapes-vlm.train.json, and `--replay` repeats
a run exactly (everything else is a function of --seed and the step index).
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
import shapes_vlm as sv  # noqa: E402
from shapes_clip import REPO, preprocess, render  # noqa: E402
from make_reference import read_safetensors, savez_deterministic, write_safetensors  # noqa: E402
import make_vlm_reference as mvr  # noqa: E402

COLOURS, SHAPES = render.COLOUR_NAMES, render.SHAPES

# ----------------------------------------------------------------------------- data


KINDS = ("caption", "count", "colour of shape", "shape of colour", "existence", "leftmost", "rightmost")


def parse_kind_weights(text):
    """"caption=2,leftmost=3,..." -> {kind: weight}; kinds not named weigh 1. Empty: None (every question alike)."""
    if not text:
        return None
    w = {k: 1.0 for k in KINDS}
    for item in filter(None, (t.strip() for t in text.split(","))):
        k, _, v = item.rpartition("=")
        if k not in w:
            raise SystemExit(f"--kind-weights: unknown question kind {k!r} (kinds: {', '.join(KINDS)})")
        w[k] = float(v)
    return w


def scene_qa(rng, scene, n_existence, kind_weights, max_turns, hard_negatives=0.0):
    """Up to max_turns distinct questions of the spec's table that apply to the scene, in random order: every question
    alike when kind_weights is None (v2's recipe), else drawn without replacement so that each kind is picked in
    proportion to its weight (split evenly over that kind's questions). Existence is n_existence distinct ones of the
    12, each a "yes" with probability 1/2 (the full table is mostly "no"); a "no" names a colour that is present (on
    another shape) with probability hard_negatives when the scene allows it."""
    qa = [(q["question"], q["answer"], q["kind"]) for q in render.questions(scene) if q["kind"] != "existence"]
    present = [(o["color"], o["shape"]) for o in scene["objects"]]
    absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
    yes, no = list(present), list(absent)
    colours = {c for c, _ in present}
    for _ in range(n_existence):
        pool = yes if (yes and rng.random() < 0.5) or not no else no
        near = [i for i, (c, _) in enumerate(pool) if pool is no and c in colours]
        if near and rng.random() < hard_negatives:  # a present colour on another shape: "no" needs both checked
            c, s = pool.pop(rng.choice(near))
        else:
            c, s = pool.pop(rng.randrange(len(pool)))
        qa.append((f"Is there a {c} {s}?", "yes" if (c, s) in present else "no", "existence"))
    if kind_weights is None:
        rng.shuffle(qa)
        return [x[:2] for x in qa[:max_turns]]
    per_kind = {}
    for _, _, k in qa:
        per_kind[k] = per_kind.get(k, 0) + 1
    weights = [kind_weights[k] / per_kind[k] for _, _, k in qa]
    picked = []
    while qa and len(picked) < max_turns:
        i = rng.choices(range(len(qa)), weights=weights)[0]
        picked.append(qa.pop(i)[:2])
        weights.pop(i)
    return picked


# Dense targets for the tower's patch tokens (a training aid, not part of the saved model): for every patch, the
# colour, the shape, the left-to-right and right-to-left rank of the object that covers it, and its (colour, shape)
# pair as one class (0 = background): the pair makes "is there a red circle" one direction to look up.
# Through the answers alone a randomly initialised language model teaches the tower to see shape only weakly; with
# these, each image token states its object's attributes in a form the text model's attention can key on.
AUX_CLASSES = (len(COLOURS) + 1, len(SHAPES) + 1, 4, 4, len(COLOURS) * len(SHAPES) + 1)


def patch_targets(scene, grid, sub=8):
    """[grid*grid, 5] int64: per patch (row-major, as the tower's tokens) colour+1, shape+1, rank from the left+1,
    rank from the right+1 and colour*3+shape+1 of the object covering most of it (at least 15% of its area; every
    object gets its best patch), zeros for background. Coverage is measured on sub x sub points per patch, in scene pixels (the processor only
    scales a square image)."""
    S, n = scene["size"], grid * sub
    c = (np.arange(n) + 0.5) * (S / n)
    X, Y = np.meshgrid(c, c)
    owner = np.full((grid, grid), -1)
    best = np.zeros((grid, grid))
    objs = scene["objects"]
    for i, o in enumerate(objs):
        x0, y0, x1, y1 = o["box"]
        if o["shape"] == "circle":
            inside = (X - o["cx"]) ** 2 + (Y - o["cy"]) ** 2 <= (o["size"] / 2) ** 2
        elif o["shape"] == "square":
            inside = (X >= x0) & (X <= x1) & (Y >= y0) & (Y <= y1)
        else:
            inside = (Y >= y0) & (Y <= y1) & (np.abs(X - o["cx"]) <= (Y - y0) / (y1 - y0) * (x1 - x0) / 2)
        cov = inside.reshape(grid, sub, grid, sub).mean((1, 3))
        take = (cov >= 0.15) & (cov > best)
        if not take.any():
            take = cov == cov.max()
        owner[take], best[take] = i, cov[take]
    t = np.zeros((grid * grid, len(AUX_CLASSES)), dtype=np.int64)
    for i, o in enumerate(objs):  # objects are sorted left to right
        c, s = COLOURS.index(o["color"]), SHAPES.index(o["shape"])
        t[owner.reshape(-1) == i] = (c + 1, s + 1, i + 1, len(objs) - i, c * len(SHAPES) + s + 1)
    return t


def aux_loss(head, h, targets):
    """Mean cross-entropy of the per-patch heads; also returns per-head accuracy on object patches. The colour
    head also tells objects from background; the shape and rank heads are scored on object patches only (most
    patches are background, which would otherwise drown them)."""
    logits = head(h).reshape(-1, sum(AUX_CLASSES)).split(AUX_CLASSES, dim=-1)
    t = targets.reshape(-1, len(AUX_CLASSES))
    obj = t[:, 0] > 0
    loss, acc = 0.0, []
    for j, lg in enumerate(logits):
        loss = loss + F.cross_entropy(lg, t[:, j] if j == 0 else t[:, j].masked_fill(~obj, -100), ignore_index=-100)
        acc.append((lg.argmax(-1)[obj] == t[obj, j]).float().mean().item())
    return loss / len(logits), acc


def make_batch(rng, tok, n, image_size, n_img, stage, a):
    px, seqs, targets = [], [], []
    grid = int(round(n_img ** 0.5))
    for _ in range(n):
        sc = render.sample_scene(rng)
        img = render.draw(sc, supersample=rng.choice((1, 2, 4, 4)))
        px.append(preprocess(img, image_size))
        targets.append(patch_targets(sc, grid))
        if stage == 0:
            continue
        if stage == 1:
            qa = [("Describe the image.", render.caption(sc))]
        else:
            # the picked questions come in random order (the image's tokens are paid for once), so each kind is
            # also often the first turn, which is exactly the single-question prompt used at inference
            qa = scene_qa(rng, sc, a.existence, a.kind_weights, a.max_turns, a.hard_negatives)
        seqs.append(sv.encode_conversation(tok, qa, n_img))
    ids, labels = sv.batch_tensors(seqs) if seqs else (None, None)
    return torch.from_numpy(np.stack(px)), ids, labels, torch.from_numpy(np.stack(targets))


# ----------------------------------------------------------------------------- eval


@torch.no_grad()
def exact_match(model, tok, seed, n_scenes, image_size, n_img):
    """Per-kind exact match of greedy answers, measured teacher-forced: greedy decoding reproduces the answer
    exactly iff the argmax at every answer position (answer tokens + <|im_end|>) is the target."""
    model.eval()
    rng = random.Random(seed)
    hits, totals = {}, {}
    for _ in range(n_scenes // 8):
        scenes = [render.sample_scene(rng) for _ in range(8)]
        px = torch.from_numpy(np.stack([preprocess(render.draw(s), image_size) for s in scenes]))
        feats = model.image_features(px)
        items = [(i, q) for i, s in enumerate(scenes) for q in render.questions(s)]
        for k in range(0, len(items), 32):
            chunk = items[k:k + 32]
            seqs = [sv.encode_conversation(tok, [(q["question"], q["answer"])], n_img) for _, q in chunk]
            ids, labels = sv.batch_tensors(seqs)
            f = feats[[i for i, _ in chunk]]
            pred = model(ids, None, features=f.reshape(-1, f.shape[-1])).argmax(-1)
            ok = ((pred[:, :-1] == labels[:, 1:]) | (labels[:, 1:] == -100)).all(-1)
            for (_, q), o in zip(chunk, ok.tolist()):
                totals[q["kind"]] = totals.get(q["kind"], 0) + 1
                hits[q["kind"]] = hits.get(q["kind"], 0) + int(o)
    model.train()
    per_kind = {k: hits[k] / totals[k] for k in totals}
    return sum(hits.values()) / sum(totals.values()), per_kind


# ----------------------------------------------------------------------------- training loop


def run_stage(name, model, aux_head, opt, tok, a, minutes, stage, step0, image_size, n_img, lrs_out, replay, log):
    """stage 0: the tower and the patch heads only; 1: captions; 2: every question kind. The patch-head loss
    (weight a.aux_weight) is added whenever the tower trains."""
    base_lrs = [g["lr"] for g in opt.param_groups]
    budget = minutes * 60
    total = None
    if replay is not None:
        total = len(replay)
    t0 = time.time()
    step = 0
    while True:
        elapsed = time.time() - t0
        if total is not None and step >= total:
            break
        if total is None and elapsed >= budget:
            break
        warm = min(1.0, (step + 1) / a.warmup)
        progress = min(1.0, elapsed / budget)
        f = replay[step] if replay is not None else warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))
        lrs_out.append(f)
        for g, b in zip(opt.param_groups, base_lrs):
            g["lr"] = b * f
        rng = random.Random(a.seed * 1_000_003 + step0 + step)
        px, ids, labels, targets = make_batch(rng, tok, a.batch, image_size, n_img, stage, a)
        h = model.vision_tower.vision_model(px)[:, 1:]
        loss, aux, acc = 0.0, None, None
        if stage > 0:
            feats = model.multi_modal_projector(h)
            logits = model(ids, None, features=feats.reshape(-1, feats.shape[-1]))
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                   ignore_index=-100)
        if stage == 0 or (h.requires_grad and a.aux_weight > 0):
            aux, acc = aux_loss(aux_head, h, targets)
            loss = loss + (1.0 if stage == 0 else a.aux_weight) * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
        opt.step()
        step += 1
        if step % 20 == 0:
            extra = "" if aux is None else f" patch loss {aux.item():.4f} acc " + "/".join(f"{x:.3f}" for x in acc)
            print(f"[{name}] step {step} {time.time() - t0:6.0f}s lr×{f:.3f} loss {loss.item():.4f}{extra}", flush=True)
        if step % a.eval_every == 0 and stage > 0:
            acc, kinds = exact_match(model, tok, 999_999, 64, image_size, n_img)
            log.append(dict(stage=name, step=step, seconds=round(time.time() - t0), loss=round(loss.item(), 4),
                            exact_match=round(acc, 4), per_kind={k: round(v, 3) for k, v in kinds.items()}))
            print(f"  eval exact match {acc:.3f} " + " ".join(f"{k}:{v:.2f}" for k, v in kinds.items()), flush=True)
    for g, b in zip(opt.param_groups, base_lrs):
        g["lr"] = b
    return step, time.time() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "models", "shapes-vlm"))
    ap.add_argument("--clip", default=os.path.join(REPO, "models", "shapes-clip"))
    ap.add_argument("--golden", default=os.path.join(REPO, "tools", "train", "goldens", "shapes-vlm.npz"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tower-minutes", type=float, default=0.0,
                    help="stage 0: the tower learns the per-patch heads alone before alignment")
    ap.add_argument("--tower-lr", type=float, default=0.0, help="peak learning rate of stage 0 (default: --vision-lr)")
    ap.add_argument("--aux-weight", type=float, default=0.0,
                    help="weight of the per-patch colour/shape/rank loss while the tower trains (0: off, v2's recipe)")
    ap.add_argument("--align-minutes", type=float, default=5.0)
    ap.add_argument("--minutes", type=float, default=37.0, help="wall-clock budget of stage 2")
    ap.add_argument("--replay", help="a .train.json from an earlier run: repeat its exact per-step learning rates")
    ap.add_argument("--batch", type=int, default=32, help="conversations (images) per step")
    ap.add_argument("--existence", type=int, default=3, help="existence questions per conversation (of the 12)")
    ap.add_argument("--hard-negatives", type=float, default=0.0,
                    help='share of "no" existence questions that name a present colour on an absent shape (when possible)')
    ap.add_argument("--max-turns", type=int, default=2, help="questions per conversation, at most")
    ap.add_argument("--kind-weights", default="", type=parse_kind_weights,
                    help='how often each question kind is drawn, e.g. "leftmost=3,rightmost=3" (others weigh 1); default: every question alike')
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--vision-lr", type=float, default=1.5e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--image-size", type=int, default=64, help="vision input (shapes-clip's 64 px positions are interpolated)")
    ap.add_argument("--text-hidden", type=int, default=128)
    ap.add_argument("--text-layers", type=int, default=4)
    ap.add_argument("--text-intermediate", type=int, default=384)
    ap.add_argument("--text-kv-heads", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=100)
    a = ap.parse_args()

    torch.set_grad_enabled(True)  # make_reference disables autograd when imported
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t_start = time.time()

    tmp = a.out + ".tmp"
    if os.path.isdir(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    tok = sv.build_tokenizer(tmp)
    sv.verify_tokenizer(tok)
    sv.check_template(tok)

    with open(os.path.join(a.clip, "config.json")) as f:
        clip_cfg = json.load(f)
    cfg = sv.make_config(clip_cfg, image_size=a.image_size, text=dict(hidden_size=a.text_hidden, num_hidden_layers=a.text_layers,
                                               intermediate_size=a.text_intermediate,
                                               num_attention_heads=a.text_hidden // 32,
                                               num_key_value_heads=a.text_kv_heads))
    v = cfg["vision_config"]
    S, n_img = v["image_size"], cfg["image_seq_length"]
    model = sv.ShapesVlm(cfg)
    model.init_text(torch.Generator().manual_seed(a.seed))
    _, clip_sd = read_safetensors(os.path.join(a.clip, "model.safetensors"))
    tower = {k[len("vision_model."):]: t.to(torch.float32) for k, t in clip_sd.items() if k.startswith("vision_model.")}
    key = "embeddings.position_embedding.weight"
    tower[key] = sv.resize_positions(tower[key], S // v["patch_size"])
    model.vision_tower.vision_model.load_state_dict(tower, strict=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params {n_params / 1e6:.2f} M; {n_img} image tokens; vocab {sv.VOCAB_SIZE}", flush=True)

    replay = None
    if a.replay:
        with open(a.replay) as f:
            r = json.load(f)
        replay = (r.get("lr_factor_tower", []), r["lr_factor_align"], r["lr_factor_tune"])

    def groups(params, lr):
        decay = [p for p in params if p.dim() >= 2]
        flat = [p for p in params if p.dim() < 2]
        return [dict(params=decay, lr=lr, weight_decay=0.01), dict(params=flat, lr=lr, weight_decay=0.0)]

    text_params = list(model.multi_modal_projector.parameters()) + list(model.language_model.parameters())
    vision_params = list(model.vision_tower.parameters())
    log, lr_tower, lr_align, lr_tune = [], [], [], []
    aux_head = torch.nn.Linear(v["hidden_size"], sum(AUX_CLASSES))  # trained, never saved
    head_params = list(aux_head.parameters())

    # stage 0: the tower learns the per-patch heads alone
    steps0, sec0 = 0, 0.0
    if a.tower_minutes > 0 or (replay and replay[0]):
        opt = torch.optim.AdamW(groups(vision_params + head_params, a.tower_lr or a.vision_lr), betas=(0.9, 0.98),
                                eps=1e-6)
        steps0, sec0 = run_stage("tower", model, aux_head, opt, tok, a, a.tower_minutes, 0, 20_000_000, S, n_img,
                                 lr_tower, replay[0] if replay else None, log)
        print(f"stage 0: {steps0} steps in {sec0 / 60:.1f} min", flush=True)

    # stage 1: alignment on captions, tower frozen
    for p in vision_params:
        p.requires_grad_(False)
    opt = torch.optim.AdamW(groups(text_params, a.lr), betas=(0.9, 0.98), eps=1e-6)
    steps1, sec1 = run_stage("align", model, aux_head, opt, tok, a, a.align_minutes, 1, 0, S, n_img, lr_align,
                             replay[1] if replay else None, log)
    print(f"stage 1: {steps1} steps in {sec1 / 60:.1f} min", flush=True)

    # stage 2: everything, all question kinds
    for p in vision_params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(groups(text_params, a.lr) + groups(vision_params + head_params, a.vision_lr),
                            betas=(0.9, 0.98), eps=1e-6)
    steps2, sec2 = run_stage("tune", model, aux_head, opt, tok, a, a.minutes, 2, 10_000_000, S, n_img, lr_tune,
                             replay[2] if replay else None, log)
    print(f"stage 2: {steps2} steps in {sec2 / 60:.1f} min", flush=True)

    # ---------------------------------------------------------------- save the HF folder (F16)
    model.eval()
    torch.set_grad_enabled(False)
    mt_write = sv.mt.write_json
    mt_write(os.path.join(tmp, "config.json"), cfg)
    mt_write(os.path.join(tmp, "preprocessor_config.json"), sv.preprocessor_config(S))
    mt_write(os.path.join(tmp, "processor_config.json"), sv.processor_config(cfg))
    mt_write(os.path.join(tmp, "generation_config.json"), sv.generation_config())
    sd = {k: t.detach().to(torch.float16).contiguous() for k, t in model.state_dict().items()}
    write_safetensors(os.path.join(tmp, "model.safetensors"), sd)
    if os.path.isdir(a.out):
        shutil.rmtree(a.out)
    os.rename(tmp, a.out)

    # ---------------------------------------------------------------- golden from the saved weights
    _, stored = read_safetensors(os.path.join(a.out, "model.safetensors"))
    m2 = sv.ShapesVlm(cfg)
    m2.load_state_dict({k: t.to(torch.float32) for k, t in stored.items()}, strict=True)
    m2.eval()
    ref = mvr.Model("llava", cfg, {k: t.to(torch.float64) for k, t in stored.items()})
    gscenes = [dict(size=160, background=[240, 238, 230], objects=[
                   dict(shape="circle", color="red", rgb=[220, 40, 40], cx=80.0, cy=80.0, size=48.0,
                        box=[56.0, 56.0, 104.0, 104.0])]),
               render.sample_scene(random.Random(12345), size=224, n_objects=3)]
    questions = ["What color is the circle?", "Describe the image."]
    imgs = [render.draw(s) for s in gscenes]
    arrays = {}
    os.makedirs(os.path.dirname(a.golden), exist_ok=True)
    for i, (im, q) in enumerate(zip(imgs, questions)):
        px = torch.from_numpy(preprocess(im, S))[None]
        ids = torch.tensor([sv.prompt_ids(tok, q, n_img)])
        logits = m2(ids, px)[0]
        pos = torch.arange(ids.shape[1])[None]
        rlogits, _, _ = ref.forward(ids, torch.ones_like(ids), pos, px.to(torch.float64))
        err = (logits.double() - rlogits[0]).norm() / rlogits[0].norm()
        print(f"golden {i}: float32 module vs float64 make_vlm_reference rel L2 {err:.2e}", flush=True)
        assert err < 1e-4
        gen, _ = mvr.greedy_generate(ref, ids, torch.ones_like(ids), px.to(torch.float64), None, 32, {2})
        answer = tok.decode(gen[0, ids.shape[1]:].tolist()).replace("<|im_end|>", "")
        print(f"golden {i}: {q!r} -> {answer!r} (truth {render.questions(gscenes[i])[0 if i else 2]['answer']!r})")
        arrays[f"input_ids_{i}"] = ids.numpy()
        arrays[f"pixel_values_{i}"] = px.numpy()
        arrays[f"logits_{i}"] = rlogits[0].to(torch.float32).numpy()
        arrays[f"generated_{i}"] = gen[0, ids.shape[1]:].numpy()
        im.save(a.golden.replace(".npz", f".image{i}.png"))
    savez_deterministic(a.golden, arrays)

    acc, kinds = exact_match(m2, tok, 777_777, 200, S, n_img)
    print(f"final exact match (200 scenes, saved F16 weights, teacher-forced): {acc:.4f} {kinds}", flush=True)
    size = sum(os.path.getsize(os.path.join(a.out, f)) for f in os.listdir(a.out))
    info = dict(seed=a.seed, tower_minutes=a.tower_minutes, tower_lr=a.tower_lr, aux_weight=a.aux_weight, image_size=a.image_size, batch=a.batch, existence=a.existence, hard_negatives=a.hard_negatives, max_turns=a.max_turns, kind_weights=a.kind_weights, lr=a.lr, vision_lr=a.vision_lr, warmup=a.warmup, threads=a.threads,
                steps_tower=steps0, minutes_tower=round(sec0 / 60, 2), steps_align=steps1, steps_tune=steps2, minutes_align=round(sec1 / 60, 2),
                minutes_tune=round(sec2 / 60, 2), total_minutes=round((time.time() - t_start) / 60, 2),
                params=n_params, folder_bytes=size, final_exact_match_200=acc, final_per_kind=kinds, evals=log,
                config=cfg, lr_factor_tower=lr_tower, lr_factor_align=lr_align, lr_factor_tune=lr_tune)
    with open(a.golden.replace(".npz", ".train.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    print(f"saved {a.out} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
