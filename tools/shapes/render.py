#!/usr/bin/python3
"""Shapes World v1 renderer (spec: SHAPES_WORLD.md, "Shapes World v1 — the bundled demo task").

Library use:
    import random, render
    scene = render.sample_scene(random.Random(7))     # the scene description (a dict)
    image = render.draw(scene)                        # PIL RGB image, S x S
    render.caption(scene)   -> "a red circle and a blue square"
    render.retrieval_text(scene) -> "a photo of a red circle and a blue square"
    render.questions(scene) -> [{"kind", "question", "answer"}, ...]  every applicable row of the table

CLI:
    /usr/bin/python3 tools/shapes/render.py --out DIR --count N --seed K
writes DIR/00000.png ... and DIR/scenes.jsonl, one line per image:
    {"image", "caption", "objects", "qa": [{"kind","question","answer"}], "size", "background"}
Scene i of seed K is drawn from random.Random(K * 1_000_003 + i), so any image can be re-rendered alone.
Needs only Pillow (the Debian /usr/bin/python3 has it).
"""
import argparse
import json
import math
import os
import random
import sys

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30)}
COLOUR_NAMES = tuple(COLOURS)

MIN_SIDE, MAX_SIDE = 96, 256
BG_MIN, BG_MAX = 225, 255
SIZE_MIN, SIZE_MAX = 0.18, 0.32          # bounding-box side (the larger of w, h) as a fraction of S
MIN_DX = 0.15                            # min horizontal distance of two centres, fraction of S
JITTER = 20                              # per-channel colour jitter
SUPERSAMPLE = 4                          # anti-aliasing: draw at 4x, box-filter down
SQRT3_2 = math.sqrt(3) / 2


def _box(shape, cx, cy, side):
    """Axis-aligned bounding box (x0, y0, x1, y1) of a shape whose bounding-box side is `side`.
    Circle/square: side x side. Triangle (equilateral, pointing up): width side, height side*sqrt(3)/2."""
    h = side * SQRT3_2 if shape == "triangle" else side
    return (cx - side / 2, cy - h / 2, cx + side / 2, cy + h / 2)


def _boxes_overlap(a, b, gap):
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def sample_scene(rng, size=None, n_objects=None):
    """Draw a random scene. rng: random.Random. size / n_objects: force S or the object count."""
    S = size if size is not None else rng.randint(MIN_SIDE, MAX_SIDE)
    assert MIN_SIDE <= S <= MAX_SIDE
    bg = [rng.randint(BG_MIN, BG_MAX) for _ in range(3)]
    n = n_objects if n_objects is not None else rng.randint(1, 3)
    margin = 1.0   # keep anti-aliased edges off the border: objects stay fully inside
    gap = 1.0      # and at least a pixel apart
    while True:  # restart the whole layout if it gets stuck (rare)
        objs = []
        kinds = set()
        for _ in range(n):
            for _attempt in range(200):
                shape = rng.choice(SHAPES)
                colour = rng.choice(COLOUR_NAMES)
                if (colour, shape) in kinds:
                    continue
                side = rng.uniform(SIZE_MIN, SIZE_MAX) * S
                h = side * SQRT3_2 if shape == "triangle" else side
                cx = rng.uniform(margin + side / 2, S - margin - side / 2)
                cy = rng.uniform(margin + h / 2, S - margin - h / 2)
                box = _box(shape, cx, cy, side)
                if any(abs(cx - o["cx"]) < MIN_DX * S or _boxes_overlap(box, o["box"], gap) for o in objs):
                    continue
                rgb = [min(255, max(0, c + rng.randint(-JITTER, JITTER))) for c in COLOURS[colour]]
                objs.append(dict(shape=shape, color=colour, cx=cx, cy=cy, size=side, box=box, rgb=rgb))
                kinds.add((colour, shape))
                break
            else:
                break
        if len(objs) == n:
            break
    objs.sort(key=lambda o: o["cx"])
    out = []
    for o in objs:
        out.append(dict(shape=o["shape"], color=o["color"], rgb=o["rgb"],
                        cx=round(o["cx"], 3), cy=round(o["cy"], 3), size=round(o["size"], 3),
                        box=[round(v, 3) for v in o["box"]]))
    return dict(size=S, background=bg, objects=out)


def draw(scene, supersample=SUPERSAMPLE):
    """Render a scene to a PIL RGB image of side S (anti-aliased by supersampling + box filter)."""
    S, k = scene["size"], supersample
    big = Image.new("RGB", (S * k, S * k), tuple(scene["background"]))
    d = ImageDraw.Draw(big)
    for o in scene["objects"]:
        x0, y0, x1, y1 = (v * k for v in o["box"])
        fill = tuple(o["rgb"])
        if o["shape"] == "circle":
            d.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
        elif o["shape"] == "square":
            d.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
        else:
            d.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    return big.reduce(k) if k > 1 else big


def _phrase(o):
    return f"a {o['color']} {o['shape']}"


def caption(scene):
    """Objects left to right as `a <colour> <shape>`, joined by `, ` and ` and ` before the last."""
    parts = [_phrase(o) for o in scene["objects"]]
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def retrieval_text(scene):
    return "a photo of " + caption(scene)


def questions(scene):
    """Every applicable question of the spec's table, in table order."""
    objs = scene["objects"]
    qa = [dict(kind="caption", question="Describe the image.", answer=caption(scene)),
          dict(kind="count", question="How many shapes are there?", answer=str(len(objs)))]
    for s in SHAPES:
        hits = [o for o in objs if o["shape"] == s]
        if len(hits) == 1:
            qa.append(dict(kind="colour of shape", question=f"What color is the {s}?", answer=hits[0]["color"]))
    for c in COLOUR_NAMES:
        hits = [o for o in objs if o["color"] == c]
        if len(hits) == 1:
            qa.append(dict(kind="shape of colour", question=f"What shape is {c}?", answer=hits[0]["shape"]))
    present = {(o["color"], o["shape"]) for o in objs}
    for c in COLOUR_NAMES:
        for s in SHAPES:
            qa.append(dict(kind="existence", question=f"Is there a {c} {s}?",
                           answer="yes" if (c, s) in present else "no"))
    if len(objs) >= 2:
        qa.append(dict(kind="leftmost", question="Which shape is on the left?", answer=objs[0]["shape"]))
        qa.append(dict(kind="rightmost", question="Which shape is on the right?", answer=objs[-1]["shape"]))
    return qa


def scene_rng(seed, index):
    return random.Random(seed * 1_000_003 + index)


def check_scene(scene):
    """Assert the spec's constraints on a scene description."""
    S = scene["size"]
    assert MIN_SIDE <= S <= MAX_SIDE
    assert all(BG_MIN <= c <= BG_MAX for c in scene["background"])
    objs = scene["objects"]
    assert 1 <= len(objs) <= 3
    assert len({(o["color"], o["shape"]) for o in objs}) == len(objs)
    for i, o in enumerate(objs):
        x0, y0, x1, y1 = o["box"]
        assert 0 <= x0 and 0 <= y0 and x1 <= S and y1 <= S, o
        assert SIZE_MIN * S - 1e-2 <= max(x1 - x0, y1 - y0) <= SIZE_MAX * S + 1e-2, o
        for p in objs[i + 1:]:
            assert abs(o["cx"] - p["cx"]) >= MIN_DX * S - 1e-2
            assert not _boxes_overlap(o["box"], p["box"], 0)
            assert p["cx"] > o["cx"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    width = max(5, len(str(a.count - 1)))
    with open(os.path.join(a.out, "scenes.jsonl"), "w") as f:
        for i in range(a.count):
            scene = sample_scene(scene_rng(a.seed, i))
            check_scene(scene)
            name = f"{i:0{width}d}.png"
            draw(scene).save(os.path.join(a.out, name), optimize=True)
            objects = [dict(shape=o["shape"], color=o["color"], rgb=o["rgb"], cx=o["cx"], cy=o["cy"],
                            size=o["size"], box=o["box"]) for o in scene["objects"]]
            f.write(json.dumps(dict(image=name, caption=caption(scene), objects=objects, qa=questions(scene),
                                    size=scene["size"], background=scene["background"])) + "\n")
    print(f"wrote {a.count} images + scenes.jsonl to {a.out}")


if __name__ == "__main__":
    sys.exit(main())
