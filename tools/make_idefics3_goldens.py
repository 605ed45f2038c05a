#!/usr/bin/python3
"""Generate the Idefics3 / SmolVLM image-processing fixtures under tests/data/images/idefics3/.

Run with Debian's interpreter (it has numpy + Pillow; there is no transformers here):
    /usr/bin/python3 tools/make_idefics3_goldens.py

HF's slow Idefics3ImageProcessor (image_processing_idefics3.py) and the prompt expansion of Idefics3Processor
(processing_idefics3.py) are re-implemented below with PIL + numpy only, step for step:
  resize (longest edge, _resize_output_size_rescale_to_max_len + scale_below_upper_bound(4096)) ->
  do_image_splitting: resize_for_vision_encoder -> split_image (row-major tiles + global image squared last)
  else: resize to max_image_size x max_image_size ->
  rescale (float64 multiply, cast to float32) -> normalize ((x - mean) / std in float32) ->
  pad to the largest H/W and frame count in the batch, pixel_attention_mask 1 on real pixels.

What it writes:
  <image>.png                              small RGB test images (several aspect ratios)
  configs/<config>/preprocessor_config.json
  pixel_values/<config>/<image>.npy        float32 [N, 3, S, S] (one prompt holding one image)
  pixel_values/<config>/<image>.mask.npy   uint8   [N, S, S]
  batch/<config>.npy, batch/<config>.mask.npy   two prompts with different image counts, padded
  manifest.json                            grids, expanded prompts and, for the full-size config, checksums only
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "images" / "idefics3"

MAX_IMAGE_SIZE = 4096  # image_processing_idefics3.MAX_IMAGE_SIZE


# ----------------------------------------------------------------------------- HF image processing

def rescale_to_max_len(height: int, width: int, min_len: int = 1, max_len: int | None = None) -> tuple[int, int]:
    max_len = max(height, width) if max_len is None else max_len
    aspect_ratio = width / height
    if width >= height:
        width = max_len
        height = int(width / aspect_ratio)
        if height % 2 != 0:
            height += 1
    elif height > width:
        height = max_len
        width = int(height * aspect_ratio)
        if width % 2 != 0:
            width += 1
    return max(height, min_len), max(width, min_len)


def scale_below_upper_bound(height: int, width: int, max_len: int) -> tuple[int, int]:
    aspect_ratio = width / height
    if width >= height and width > max_len:
        width = max_len
        height = int(width / aspect_ratio)
    elif height > width and height > max_len:
        height = max_len
        width = int(height * aspect_ratio)
    return max(height, 1), max(width, 1)


def pil_resize(arr: np.ndarray, height: int, width: int, resample: int) -> np.ndarray:
    # HF: to_pil_image -> image.resize((w, h), resample=resample) (PIL's default reducing_gap=None)
    return np.array(Image.fromarray(arr).resize((width, height), resample=resample))


def resize(arr: np.ndarray, size: dict, resample: int) -> np.ndarray:
    if "longest_edge" in size:
        h, w = rescale_to_max_len(arr.shape[0], arr.shape[1], max_len=size["longest_edge"])
        h, w = scale_below_upper_bound(h, w, MAX_IMAGE_SIZE)
    else:
        h, w = size["height"], size["width"]
    return pil_resize(arr, h, w, resample)


def resize_for_vision_encoder(arr: np.ndarray, m: int, resample: int) -> np.ndarray:
    height, width = arr.shape[:2]
    aspect_ratio = width / height
    if width >= height:
        width = math.ceil(width / m) * m
        height = int(width / aspect_ratio)
        height = math.ceil(height / m) * m
    elif height > width:
        height = math.ceil(height / m) * m
        width = int(height * aspect_ratio)
        width = math.ceil(width / m) * m
    return resize(arr, {"height": height, "width": width}, resample)


def split_image(arr: np.ndarray, m: int, resample: int):
    height, width = arr.shape[:2]
    frames = []
    if height > m or width > m:
        num_splits_h = math.ceil(height / m)
        num_splits_w = math.ceil(width / m)
        optimal_height = math.ceil(height / num_splits_h)
        optimal_width = math.ceil(width / num_splits_w)
        for r in range(num_splits_h):
            for c in range(num_splits_w):
                start_x, start_y = c * optimal_width, r * optimal_height
                end_x, end_y = min(start_x + optimal_width, width), min(start_y + optimal_height, height)
                frames.append(arr[start_y:end_y, start_x:end_x])
        if height != m or width != m:
            arr = resize(arr, {"height": m, "width": m}, resample)
    else:
        num_splits_h, num_splits_w = 0, 0
    frames.append(arr)
    return frames, num_splits_h, num_splits_w


def preprocess(samples: list[list[np.ndarray]], cfg: dict):
    """Idefics3ImageProcessor.preprocess(images=list of prompts, return_row_col_info=True) on RGB uint8 HWC arrays."""
    resample = cfg.get("resample", 1)
    m = cfg["max_image_size"]["longest_edge"]
    if cfg.get("do_resize", True):
        samples = [[resize(a, cfg["size"], resample) for a in s] for s in samples]
    rows, cols = [], []
    if cfg.get("do_image_splitting", True):
        samples = [[resize_for_vision_encoder(a, m, resample) for a in s] for s in samples]
        split = []
        for s in samples:
            frames, r_, c_ = [], [], []
            for a in s:
                f, r, c = split_image(a, m, resample)
                frames.extend(f)
                r_.append(r)
                c_.append(c)
            split.append(frames)
            rows.append(r_)
            cols.append(c_)
        samples = split
    else:
        samples = [[resize(a, {"height": m, "width": m}, resample) for a in s] for s in samples]
        rows = [[0] * len(s) for s in samples]
        cols = [[0] * len(s) for s in samples]

    def to_float(a: np.ndarray) -> np.ndarray:
        x = a
        if cfg.get("do_rescale", True):
            x = (x.astype(np.float64) * cfg.get("rescale_factor", 1 / 255)).astype(np.float32)
        if cfg.get("do_normalize", True):
            x = x.astype(np.float32) if not np.issubdtype(x.dtype, np.floating) else x
            x = (x - np.array(cfg["image_mean"], dtype=x.dtype)) / np.array(cfg["image_std"], dtype=x.dtype)
        return np.ascontiguousarray(x.transpose(2, 0, 1)).astype(np.float32)

    samples = [[to_float(a) for a in s] for s in samples]

    # pad(): every prompt to max_num_images frames of max H x max W; empty frames are zeros with a zero mask.
    max_n = max(len(s) for s in samples)
    max_h = max(a.shape[1] for s in samples for a in s)
    max_w = max(a.shape[2] for s in samples for a in s)
    pv = np.zeros((len(samples), max_n, 3, max_h, max_w), np.float32)
    mask = np.zeros((len(samples), max_n, max_h, max_w), np.uint8)
    for i, s in enumerate(samples):
        for j, a in enumerate(s):
            pv[i, j, :, : a.shape[1], : a.shape[2]] = a
            mask[i, j, : a.shape[1], : a.shape[2]] = 1
    return pv, mask, rows, cols


# ----------------------------------------------------------------------------- HF prompt expansion

def prompt_split_image(seq_len, rows, cols, fake, image, glob):
    s = ""
    for n_h in range(rows):
        for n_w in range(cols):
            s += f"{fake}" + f"<row_{n_h + 1}_col_{n_w + 1}>" + f"{image}" * seq_len
        s += "\n"
    s += f"\n{fake}" + f"{glob}" + f"{image}" * seq_len + f"{fake}"
    return s


def prompt_single_image(seq_len, fake, image, glob):
    return f"{fake}" + f"{glob}" + f"{image}" * seq_len + f"{fake}"


def expand_prompt(text, rows, cols, seq_len, fake="<fake_token_around_image>", image="<image>", glob="<global-img>"):
    assert text.count(image) == len(rows)
    parts = text.split(image)
    out = parts[0]
    for i, (r, c) in enumerate(zip(rows, cols)):
        p = prompt_single_image(seq_len, fake, image, glob) if r == 0 and c == 0 else prompt_split_image(seq_len, r, c, fake, image, glob)
        out += p + parts[i + 1]
    return out


# ----------------------------------------------------------------------------- fixtures

def noise_gradient(w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([255.0 * xx / max(w - 1, 1), 255.0 * yy / max(h - 1, 1), 127.5 + 127.5 * np.sin((xx + 2 * yy) / 3.0)], -1)
    return np.clip(np.rint(base + rng.normal(0.0, 40.0, size=base.shape)), 0, 255).astype(np.uint8)


IMAGES = {"wide_100x60": (100, 60), "tall_60x100": (60, 100), "square_33x33": (33, 33), "near_150x149": (150, 149),
          "thin_20x90": (20, 90), "tiny_7x5": (7, 5)}

NORM = {"do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
CONFIGS = {
    # SmolVLM's preprocessing scaled down: tiles of 32, longest edge 64 (up to 2x2 tiles + the global image).
    "small_split": {"image_processor_type": "Idefics3ImageProcessor", "do_convert_rgb": True, "do_resize": True,
                    "size": {"longest_edge": 64}, "max_image_size": {"longest_edge": 32}, "resample": 1,
                    "do_image_splitting": True, "do_pad": True, **NORM},
    "small_nosplit": {"image_processor_type": "Idefics3ImageProcessor", "do_resize": True, "size": {"longest_edge": 64},
                      "max_image_size": {"longest_edge": 32}, "resample": 1, "do_image_splitting": False, **NORM},
    # Odd longest edge (the +1 evenness rule can exceed it), bicubic, CLIP-like stats, SmolVLM type name.
    "odd_bicubic": {"image_processor_type": "SmolVLMImageProcessor", "size": {"longest_edge": 45},
                    "max_image_size": {"longest_edge": 20}, "resample": 3, "do_image_splitting": True, "do_rescale": True,
                    "rescale_factor": 0.00392156862745098, "do_normalize": True,
                    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]},
    # No resize before splitting: resize_for_vision_encoder works on the original size.
    "noresize_split": {"image_processor_type": "Idefics3ImageProcessor", "do_resize": False, "size": {"longest_edge": 64},
                       "max_image_size": {"longest_edge": 32}, "resample": 2, "do_image_splitting": True, **NORM},
    # The real HuggingFaceTB/SmolVLM-256M-Instruct preprocessor_config.json values: checksums only (13 x 3 x 512 x 512).
    "smolvlm_256m": {"image_processor_type": "Idefics3ImageProcessor", "do_convert_rgb": True, "do_image_splitting": True,
                     "do_pad": True, "do_resize": True, "size": {"longest_edge": 2048}, "max_image_size": {"longest_edge": 512},
                     "resample": 1, "processor_class": "Idefics3Processor", **NORM},
}
FULL_SIZE = {"smolvlm_256m": ["wide_100x60"]}
# Without the pre-resize the frame counts grow with the image; keep the committed data under 2 MB.
SUBSET = {"noresize_split": ["wide_100x60", "square_33x33", "thin_20x90", "tiny_7x5"], **FULL_SIZE}
SEQ_LEN = {"small_split": 4, "small_nosplit": 4, "odd_bicubic": 3, "noresize_split": 2, "smolvlm_256m": 64}
BATCH = [["wide_100x60", "tall_60x100"], ["tiny_7x5"]]
PROMPTS = ["User:<image>Describe.<image>\nAssistant:", "<image>What is this?"]


def checksum(pv: np.ndarray) -> dict:
    frames = pv.reshape(pv.shape[0], -1).astype(np.float64)
    flat = pv.ravel()
    return {"sha256": hashlib.sha256(np.ascontiguousarray(pv).tobytes()).hexdigest(),
            "frame_sums": [float(s) for s in frames.sum(1)], "sample_stride": 997,
            "samples": [float(v) for v in flat[::997]]}


def main() -> None:
    for sub in ("configs", "pixel_values", "batch"):
        (OUT / sub).mkdir(parents=True, exist_ok=True)
    arrays = {}
    for i, (name, (w, h)) in enumerate(IMAGES.items()):
        Image.fromarray(noise_gradient(w, h, 100 + i)).save(OUT / f"{name}.png")
        arrays[name] = np.asarray(Image.open(OUT / f"{name}.png").convert("RGB"))

    manifest = {"images": list(IMAGES), "configs": {}, "batch": {}}
    for cname, cfg in CONFIGS.items():
        cdir = OUT / "configs" / cname
        cdir.mkdir(exist_ok=True)
        (cdir / "preprocessor_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        (OUT / "pixel_values" / cname).mkdir(exist_ok=True)
        entries = {}
        for name in SUBSET.get(cname, IMAGES):
            pv, mask, rows, cols = preprocess([[arrays[name]]], cfg)
            text = f"User:<image>What is in {name}?"
            entry = {"grid": [rows[0][0], cols[0][0]], "shape": list(pv.shape[1:]), "text": text,
                     "prompt": expand_prompt(text, rows[0], cols[0], SEQ_LEN[cname])}
            if cname in FULL_SIZE:
                entry["checksum"] = checksum(pv[0])
                assert mask.all()
            else:
                np.save(OUT / "pixel_values" / cname / f"{name}.npy", pv[0])
                np.save(OUT / "pixel_values" / cname / f"{name}.mask.npy", mask[0])
            entries[name] = entry
        manifest["configs"][cname] = {"image_seq_len": SEQ_LEN[cname], "images": entries}

    for cname in ("small_split", "small_nosplit", "odd_bicubic"):
        pv, mask, rows, cols = preprocess([[arrays[n] for n in s] for s in BATCH], CONFIGS[cname])
        np.save(OUT / "batch" / f"{cname}.npy", pv)
        np.save(OUT / "batch" / f"{cname}.mask.npy", mask)
        manifest["batch"][cname] = {"samples": BATCH, "rows": rows, "cols": cols, "shape": list(pv.shape),
                                    "texts": PROMPTS,
                                    "prompts": [expand_prompt(t, r, c, SEQ_LEN[cname]) for t, r, c in zip(PROMPTS, rows, cols)]}

    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    files = [p for p in OUT.rglob("*") if p.is_file()]
    print(f"wrote {len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.2f} MB under {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
