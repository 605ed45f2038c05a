#!/usr/bin/python3
"""Generate the image-preprocessing test fixtures under tests/data/images/.

Run with Debian's interpreter (it has numpy + Pillow):  /usr/bin/python3 tools/make_image_goldens.py

What it writes (all deterministic, seeded):
  *.png/*.jpg/*.webp/*.bmp/*.gif     small synthetic test images in several formats/modes
  decoded/<image>.npy                uint8 [H, W, 3]: PIL open -> exif_transpose -> convert("RGB")
  resize/<src>.npy                   uint8 [H, W, 3] resampler source pixels
  resize/<src>_f<filter>.npy         uint8 1-D: every PIL Image.resize result for that source and
                                     filter, concatenated in manifest order
  resize/manifest.json               sources, filters and target sizes
  configs/<name>/preprocessor_config.json
  pixel_values/<config>/<image>.npy  float32 [3, H, W]: HF CLIP/SigLIP semantics reimplemented
                                     below with PIL + numpy only (there is no transformers here)
  manifest.json                      which image goes with which config

The HF steps mirrored here (transformers image_transforms / image_processing_clip / _siglip):
  convert_rgb -> resize (PIL, reducing_gap=None) -> center_crop (with zero padding) ->
  rescale (float64 multiply, cast to float32) -> normalize ((x - mean) / std in float32) -> CHW.
"""
from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "images"

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


# ----------------------------------------------------------------------------- images

def noise_gradient(w: int, h: int, seed: int) -> np.ndarray:
    """Gradients plus seeded noise: exercises every pixel value range and clipping on upscale."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255.0 * xx / max(w - 1, 1)
    g = 255.0 * yy / max(h - 1, 1)
    b = 127.5 + 127.5 * np.sin((xx + 2 * yy) / 3.0)
    base = np.stack([r, g, b], axis=-1)
    noisy = base + rng.normal(0.0, 40.0, size=base.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def shapes(w: int, h: int, seed: int) -> np.ndarray:
    """Smooth background with hard-edged shapes: compresses well, has sharp edges for ringing."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    bg = np.stack([40 + 150 * xx / w, 60 + 120 * yy / h, 200 - 100 * (xx + yy) / (w + h)], axis=-1)
    im = Image.fromarray(np.rint(bg).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(im)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 10))
        x1, y1 = x0 + int(rng.integers(5, w // 2)), y0 + int(rng.integers(5, h // 2))
        color = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            d.rectangle([x0, y0, x1, y1], fill=color)
        else:
            d.ellipse([x0, y0, x1, y1], fill=color)
    d.line([0, 0, w - 1, h - 1], fill=(255, 255, 255), width=3)
    return np.asarray(im).copy()


def quadrants(w: int, h: int) -> np.ndarray:
    """Four flat, distinct quadrants plus a marker: any wrong flip/rotation is a large error."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (230, 20, 20)
    a[: h // 2, w // 2 :] = (20, 230, 20)
    a[h // 2 :, : w // 2] = (20, 20, 230)
    a[h // 2 :, w // 2 :] = (230, 230, 20)
    a[0:2, 0:3] = (255, 255, 255)
    return a


def write_png16_rgb(path: Path, rgb16: np.ndarray) -> None:
    """Pillow cannot write 16-bit RGB PNGs, so emit the chunks by hand."""
    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    path.write_bytes(png)


def save_with_orientation(img: Image.Image, path: Path, orientation: int, **kw) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, exif=exif.tobytes(), **kw)


def make_images() -> list[str]:
    names: list[str] = []

    def add(name: str) -> None:
        names.append(name)

    Image.fromarray(noise_gradient(37, 23, 1)).save(OUT / "noise_37x23.png"); add("noise_37x23.png")
    Image.fromarray(noise_gradient(64, 48, 2)).save(OUT / "noise_64x48.png"); add("noise_64x48.png")
    Image.fromarray(shapes(300, 200, 3)).save(OUT / "shapes_300x200.png", optimize=True); add("shapes_300x200.png")
    Image.fromarray(noise_gradient(17, 91, 4)).save(OUT / "tall_17x91.png"); add("tall_17x91.png")

    # RGBA with alpha from 0 to 255 (including fully transparent pixels whose colour must survive).
    rgb = noise_gradient(64, 48, 5)
    alpha = np.tile(np.linspace(0, 255, 64).round().astype(np.uint8), (48, 1))
    alpha[:8, :8] = 0
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(OUT / "rgba_64x48.png"); add("rgba_64x48.png")

    Image.fromarray(noise_gradient(37, 23, 6)[..., 1], "L").save(OUT / "gray_37x23.png"); add("gray_37x23.png")

    pal = Image.fromarray(shapes(64, 48, 7)).quantize(colors=16, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    pal.save(OUT / "palette_64x48.png"); add("palette_64x48.png")

    # 16-bit RGB: low bytes carry noise so a decoder that rounds instead of truncating shows up.
    rng = np.random.default_rng(8)
    hi = noise_gradient(37, 23, 9).astype(np.uint16)
    write_png16_rgb(OUT / "rgb16_37x23.png", (hi << 8) | rng.integers(0, 256, size=hi.shape, dtype=np.uint16))
    add("rgb16_37x23.png")

    Image.fromarray(shapes(160, 120, 10)).save(OUT / "photo_160x120.jpg", quality=90); add("photo_160x120.jpg")
    Image.fromarray(noise_gradient(64, 48, 11)).save(OUT / "lossless_64x48.webp", lossless=True); add("lossless_64x48.webp")
    Image.fromarray(noise_gradient(37, 23, 12)).save(OUT / "bmp_37x23.bmp"); add("bmp_37x23.bmp")

    f0 = Image.fromarray(shapes(64, 48, 13)).quantize(colors=32, dither=Image.Dither.NONE)
    f1 = Image.fromarray(shapes(64, 48, 14)).quantize(colors=32, dither=Image.Dither.NONE)
    f0.save(OUT / "anim_64x48.gif", save_all=True, append_images=[f1], duration=100, loop=0)
    add("anim_64x48.gif")

    save_with_orientation(Image.fromarray(shapes(64, 48, 15)), OUT / "exif6_64x48.jpg", 6, quality=90); add("exif6_64x48.jpg")
    save_with_orientation(Image.fromarray(shapes(37, 23, 16)), OUT / "exif3_37x23.jpg", 3, quality=90); add("exif3_37x23.jpg")
    return names


def make_orientation_set() -> list[str]:
    """Tiny 13x7 JPEGs with every EXIF orientation; 4:4:4 q100 so decoders agree closely."""
    names = []
    for o in range(1, 9):
        name = f"orient{o}_13x7.jpg"
        save_with_orientation(Image.fromarray(quadrants(13, 7)), OUT / name, o, quality=100, subsampling=0)
        names.append(name)
    return names


def load_rgb(path: Path) -> Image.Image:
    im = Image.open(path)
    im = ImageOps.exif_transpose(im)
    return im if im.mode == "RGB" else im.convert("RGB")


# ----------------------------------------------------------------------------- HF semantics

def resize_output_size(h: int, w: int, size: dict) -> tuple[int, int]:
    if "shortest_edge" in size:  # get_resize_output_image_size(default_to_square=False)
        s = size["shortest_edge"]
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = s, int(s * long / short)
        return (new_long, new_short) if w <= h else (new_short, new_long)
    return size["height"], size["width"]


def center_crop(arr: np.ndarray, ch: int, cw: int) -> np.ndarray:
    """image_transforms.center_crop on HWC, including its zero-padding branch."""
    h, w = arr.shape[:2]
    top, left = (h - ch) // 2, (w - cw) // 2
    if top >= 0 and left >= 0 and top + ch <= h and left + cw <= w:
        return arr[top : top + ch, left : left + cw]
    nh, nw = max(ch, h), max(cw, w)
    padded = np.zeros((nh, nw) + arr.shape[2:], arr.dtype)
    tp, lp = -(-(nh - h) // 2), -(-(nw - w) // 2)  # ceil
    padded[tp : tp + h, lp : lp + w] = arr
    top, left = top + tp, left + lp
    return padded[max(0, top) : min(nh, top + ch), max(0, left) : min(nw, left + cw)]


def as_size_dict(v, default_to_square: bool) -> dict:
    """image_processing_utils.get_size_dict for the int and dict forms."""
    if isinstance(v, int):
        return {"height": v, "width": v} if default_to_square else {"shortest_edge": v}
    return v


def preprocess(im: Image.Image, cfg: dict) -> np.ndarray:
    arr = np.asarray(im)
    if cfg.get("do_resize", True):
        size = as_size_dict(cfg["size"], default_to_square=False)  # SigLIP requires {height, width}
        oh, ow = resize_output_size(arr.shape[0], arr.shape[1], size)
        arr = np.asarray(Image.fromarray(arr).resize((ow, oh), resample=cfg["resample"], reducing_gap=None))
    if cfg.get("do_center_crop", False):
        crop = as_size_dict(cfg["crop_size"], default_to_square=True)
        arr = center_crop(arr, crop["height"], crop["width"])
    x = arr
    if cfg.get("do_rescale", True):
        x = (x.astype(np.float64) * cfg["rescale_factor"]).astype(np.float32)
    if cfg.get("do_normalize", True):
        x = x.astype(np.float32) if not np.issubdtype(x.dtype, np.floating) else x
        x = (x - np.array(cfg["image_mean"], dtype=x.dtype)) / np.array(cfg["image_std"], dtype=x.dtype)
    return np.ascontiguousarray(x.transpose(2, 0, 1)).astype(np.float32)


CONFIGS = {
    # The real openai/clip-vit-* preprocessing.
    "clip224": {
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": 224},
        "resample": 3, "do_center_crop": True, "crop_size": {"height": 224, "width": 224}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
        "do_convert_rgb": True,
    },
    # The real google/siglip-*-224 preprocessing.
    "siglip224": {
        "image_processor_type": "SiglipImageProcessor", "do_resize": True, "size": {"height": 224, "width": 224},
        "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": True,
    },
    # Same semantics at small sizes so every image can have a golden; crop < resize exercises offsets.
    "clip_small": {
        "feature_extractor_type": "CLIPFeatureExtractor", "do_resize": True, "size": 48, "resample": 3,
        "do_center_crop": True, "crop_size": 40, "do_rescale": True, "rescale_factor": 0.00392156862745098,
        "do_normalize": True, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
    },
    "siglip_small": {
        "image_processor_type": "SiglipImageProcessor", "do_resize": True, "size": {"height": 32, "width": 40},
        "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    },
    # Crop larger than the resized image: HF's zero-padding branch; nearest and lanczos filters.
    "clip_pad": {
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": 24},
        "resample": 0, "do_center_crop": True, "crop_size": {"height": 32, "width": 29}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
    },
    "clip_lanczos": {
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": 20},
        "resample": 1, "do_center_crop": True, "crop_size": {"height": 18, "width": 20}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
    },
}

# The full-size configs get one golden each to keep committed data small (~600 KB per 224x224 golden).
CONFIG_IMAGES = {
    "clip224": ["shapes_300x200.png"],
    "siglip224": ["photo_160x120.jpg"],
}

RESIZE_SOURCES = {
    "noise_37x23": lambda: noise_gradient(37, 23, 101),
    "noise_120x80": lambda: noise_gradient(120, 80, 102),
    "tall_5x61": lambda: noise_gradient(5, 61, 103),
}
RESIZE_TARGETS = {
    "noise_37x23": [(1, 1), (2, 3), (9, 5), (18, 11), (36, 22), (37, 23), (38, 24), (37, 40), (74, 46), (111, 13), (50, 59)],
    "noise_120x80": [(1, 1), (7, 5), (29, 31), (40, 27), (59, 39), (60, 40), (61, 41), (119, 3), (2, 79), (121, 41), (90, 97)],
    "tall_5x61": [(1, 1), (3, 17), (4, 60), (5, 61), (6, 62), (11, 30), (23, 19), (40, 120)],
}
RESIZE_FILTERS = [0, 1, 2, 3, 4, 5]  # nearest, lanczos, bilinear, bicubic, box, hamming


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for sub in ("decoded", "resize", "configs", "pixel_values"):
        (OUT / sub).mkdir(exist_ok=True)

    images = make_images()
    orient = make_orientation_set()
    for name in images + orient:
        np.save(OUT / "decoded" / (name + ".npy"), np.asarray(load_rgb(OUT / name)))

    manifest_cfg = {}
    for cname, cfg in CONFIGS.items():
        cdir = OUT / "configs" / cname
        cdir.mkdir(exist_ok=True)
        (cdir / "preprocessor_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        pdir = OUT / "pixel_values" / cname
        pdir.mkdir(exist_ok=True)
        chosen = CONFIG_IMAGES.get(cname, images)
        for name in chosen:
            np.save(pdir / (name + ".npy"), preprocess(load_rgb(OUT / name), cfg))
        manifest_cfg[cname] = chosen

    resize_manifest = {"filters": RESIZE_FILTERS, "sources": {}}
    for src, fn in RESIZE_SOURCES.items():
        arr = fn()
        np.save(OUT / "resize" / (src + ".npy"), arr)
        im = Image.fromarray(arr)
        for f in RESIZE_FILTERS:
            parts = [np.asarray(im.resize((w, h), resample=f, reducing_gap=None)).ravel() for (w, h) in RESIZE_TARGETS[src]]
            np.save(OUT / "resize" / f"{src}_f{f}.npy", np.concatenate(parts))
        resize_manifest["sources"][src] = [[w, h] for (w, h) in RESIZE_TARGETS[src]]
    (OUT / "resize" / "manifest.json").write_text(json.dumps(resize_manifest, indent=1) + "\n")

    (OUT / "manifest.json").write_text(json.dumps({"images": images, "orientation": orient, "configs": manifest_cfg}, indent=1) + "\n")

    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {sum(1 for p in OUT.rglob('*') if p.is_file())} files, {total / 1e6:.2f} MB under {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
