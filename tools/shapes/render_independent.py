#!/usr/bin/env python3
"""Independent renderer for Shapes World v1 (written from the spec only).

Rendering: numpy signed-distance fields evaluated at pixel centres.
Per image one of three edge modes is drawn: analytic SDF anti-aliasing
(coverage = clip(0.5 - d, 0, 1)), 3x3 supersampled hard coverage, or no AA.
"""
import argparse, json, math, os
import numpy as np
from PIL import Image

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60),
           "blue": (40, 80, 220), "yellow": (235, 200, 30)}
COLOUR_NAMES = ["red", "green", "blue", "yellow"]
SHAPES = ["circle", "square", "triangle"]
SQ3 = math.sqrt(3.0)


def half_extents(shape, side):
    """(half width, half height) of the bounding box; side = larger of w/h."""
    if shape == "triangle":
        return side / 2.0, side * SQ3 / 4.0
    return side / 2.0, side / 2.0


def sdf(shape, cx, cy, side, X, Y):
    """Signed distance (negative inside) in pixel units; X, Y are sample coords."""
    if shape == "circle":
        return np.hypot(X - cx, Y - cy) - side / 2.0
    if shape == "square":
        h = side / 2.0
        return np.maximum(np.abs(X - cx) - h, np.abs(Y - cy) - h)
    # equilateral triangle, pointing up, bbox centred at (cx, cy); y grows down
    hw, hh = half_extents("triangle", side)
    top, bot = cy - hh, cy + hh
    d_base = Y - bot                       # below the base -> positive
    # slanted edges: outward normals (+-sin60... ) for lines through apex
    nx, ny = SQ3 / 2.0, -0.5               # right edge outward normal
    d_right = (X - cx) * nx + (Y - top) * ny
    d_left = -(X - cx) * nx + (Y - top) * ny
    return np.maximum(d_base, np.maximum(d_right, d_left))


def coverage(shape, cx, cy, side, S, mode):
    if mode == "ss3":
        k = 3
        off = (np.arange(k) + 0.5) / k
        acc = np.zeros((S, S), dtype=np.float64)
        base = np.arange(S, dtype=np.float64)
        for oy in off:
            for ox in off:
                X, Y = np.meshgrid(base + ox, base + oy)
                acc += (sdf(shape, cx, cy, side, X, Y) <= 0)
        return acc / (k * k)
    c = np.arange(S, dtype=np.float64) + 0.5
    X, Y = np.meshgrid(c, c)
    d = sdf(shape, cx, cy, side, X, Y)
    if mode == "none":
        return (d <= 0).astype(np.float64)
    return np.clip(0.5 - d, 0.0, 1.0)


def place(rng, S, objs):
    """Rejection-sample sizes/positions; returns list of (cx, cy, side) or None."""
    c = np.arange(S, dtype=np.float64) + 0.5
    X, Y = np.meshgrid(c, c)
    placed, masks = [], []
    for (_, shape) in objs:
        ok = False
        for _ in range(200):
            side = rng.uniform(0.18 * S, 0.32 * S)
            hw, hh = half_extents(shape, side)
            cx = rng.uniform(hw + 1.0, S - hw - 1.0)
            cy = rng.uniform(hh + 1.0, S - hh - 1.0)
            if any(abs(cx - p[0]) < 0.15 * S for p in placed):
                continue
            # 1.5 px guard band so anti-aliased fringes never touch
            m = sdf(shape, cx, cy, side, X, Y) < 1.5
            if any((m & mm).any() for mm in masks):
                continue
            placed.append((cx, cy, side)); masks.append(m); ok = True
            break
        if not ok:
            return None
    return placed


def article_list(names):
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def make_qa(objs):
    """objs: list of (colour, shape) sorted left to right."""
    qa = [{"kind": "caption", "question": "Describe the image.",
           "answer": article_list([f"a {c} {s}" for c, s in objs])},
          {"kind": "count", "question": "How many shapes are there?",
           "answer": str(len(objs))}]
    shapes = [s for _, s in objs]
    cols = [c for c, _ in objs]
    for s in SHAPES:
        if shapes.count(s) == 1:
            qa.append({"kind": "colour of shape", "question": f"What color is the {s}?",
                       "answer": cols[shapes.index(s)]})
    for c in COLOUR_NAMES:
        if cols.count(c) == 1:
            qa.append({"kind": "shape of colour", "question": f"What shape is {c}?",
                       "answer": shapes[cols.index(c)]})
    for c in COLOUR_NAMES:
        for s in SHAPES:
            qa.append({"kind": "existence", "question": f"Is there a {c} {s}?",
                       "answer": "yes" if (c, s) in objs else "no"})
    if len(objs) >= 2:
        qa.append({"kind": "leftmost", "question": "Which shape is on the left?",
                   "answer": shapes[0]})
        qa.append({"kind": "rightmost", "question": "Which shape is on the right?",
                   "answer": shapes[-1]})
    return qa


def render_scene(rng):
    while True:
        S = int(rng.integers(96, 257))
        n = int(rng.integers(1, 4))
        combos = [(c, s) for c in COLOUR_NAMES for s in SHAPES]
        idx = rng.choice(len(combos), size=n, replace=False)
        objs = [combos[i] for i in idx]
        geo = place(rng, S, objs)
        if geo is not None:
            break
    mode = rng.choice(["sdf", "ss3", "none"], p=[0.6, 0.2, 0.2])
    bg = rng.integers(225, 256, size=3).astype(np.float64)
    img = np.broadcast_to(bg, (S, S, 3)).copy()
    for (colour, shape), (cx, cy, side) in zip(objs, geo):
        jit = rng.integers(-20, 21, size=3)
        col = np.clip(np.array(COLOURS[colour]) + jit, 0, 255).astype(np.float64)
        a = coverage(shape, cx, cy, side, S, mode)[..., None]
        img = img * (1.0 - a) + col * a
    order = sorted(range(n), key=lambda i: geo[i][0])
    objs_lr = [objs[i] for i in order]
    arr = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB"), objs_lr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    with open(os.path.join(a.out, "scenes.jsonl"), "w") as f:
        for i in range(a.count):
            im, objs = render_scene(rng)
            name = f"{i:05d}.png"
            im.save(os.path.join(a.out, name))
            f.write(json.dumps({"image": name, "caption": make_qa(objs)[0]["answer"],
                                "qa": make_qa(objs)}) + "\n")


if __name__ == "__main__":
    main()
