"""Draws the small sample images bundled in assets/samples (README demos). Run: /usr/bin/python3 tools/samples/make_samples.py"""
import os
from PIL import Image, ImageDraw

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "assets", "samples")
COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 40)}

def draw(shape, color, bg=(245, 245, 240), size=160):
    im = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(im)
    box = (size * 0.22, size * 0.22, size * 0.78, size * 0.78)
    if shape == "circle":
        d.ellipse(box, fill=COLORS[color])
    elif shape == "square":
        d.rectangle(box, fill=COLORS[color])
    else:  # triangle
        d.polygon([(size / 2, size * 0.18), (size * 0.82, size * 0.8), (size * 0.18, size * 0.8)], fill=COLORS[color])
    return im

os.makedirs(OUT, exist_ok=True)
for shape, color in [("circle", "red"), ("square", "blue"), ("triangle", "green"), ("circle", "yellow"), ("square", "red"), ("triangle", "blue")]:
    draw(shape, color).save(os.path.join(OUT, f"{color}-{shape}.png"), optimize=True)
print("wrote", sorted(os.listdir(OUT)))
