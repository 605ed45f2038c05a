"""Renders the sample images bundled in assets/samples (README demos) with the Shapes World renderer, named by
their captions. Run: /usr/bin/python3 tools/samples/make_samples.py"""
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "shapes"))
import render  # noqa: E402  (tools/shapes/render.py)

OUT = os.path.join(HERE, "..", "..", "assets", "samples")
SEED, COUNT = 20261130, 8

shutil.rmtree(OUT, ignore_errors=True)
os.makedirs(OUT)
for i in range(COUNT):
    rng = render.scene_rng(SEED, i)
    # Half single-object scenes (the README's simple queries), half with two or three objects.
    scene = render.sample_scene(rng, n_objects=1 if i % 2 == 0 else None)
    name = render.caption(scene).replace(", ", "-").replace(" and ", "-and-").replace(" ", "-") + ".png"
    render.draw(scene).save(os.path.join(OUT, name), optimize=True)
print("wrote", sorted(os.listdir(OUT)))
