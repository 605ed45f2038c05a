#!/usr/bin/env python3
"""Summarises an Nsight Compute CSV (--csv --page raw --metrics gpu__time_duration.sum,launch__grid_size) of a
`fastmm bench` run (decode: `--backend cuda`, the fused step graphs; image: `cuda:eager`), per kernel name, for one
unit of work:

    python3 tools/cuda-check/kernel_profile.py decode ncu-decode.csv   # the last two decode steps (SmolVLM bench)
    python3 tools/cuda-check/kernel_profile.py image ncu-image.csv     # the last whole image encode (SigLIP bench)

decode: a step ends with the LM head's GEMV, the launch with the largest grid of any *_gemv kernel; the kernels
between the last three such launches are the last two steps.
image: an encode starts with the patch embedding; the kernels from the second-to-last patch_embed_* launch up to the
last one are one whole encode (`bench --runs 1 --batch 1` encodes four single images before the text tower runs).
Each kernel was launched and timed alone by the profiler, so the sum is the GPU's busy time without launch gaps.
"""
import csv
import sys
from collections import defaultdict

if len(sys.argv) != 3 or sys.argv[1] not in ("decode", "image"):
    sys.exit(__doc__)
mode, path = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(line for line in open(path) if not line.startswith("==")))
rows = [r for r in rows if r.get("gpu__time_duration.sum", "").replace(".", "", 1).replace(",", "").isdigit()]
if not rows:
    sys.exit("no kernel rows in " + path)
name = lambda r: r["Kernel Name"].split("(")[0]
grid = lambda r: int(float(r["launch__grid_size"].replace(",", "")))

if mode == "decode":
    gemv = [i for i, r in enumerate(rows) if name(r).endswith("_gemv")]
    if not gemv:
        sys.exit("no *_gemv launches in " + path)
    biggest = max(grid(rows[i]) for i in gemv)
    ends = [i for i in gemv if grid(rows[i]) == biggest]
    if len(ends) < 3:
        sys.exit(f"found {len(ends)} step ends; need 3")
    units = [rows[ends[-3] + 1:ends[-2] + 1], rows[ends[-2] + 1:ends[-1] + 1]]
    what = "decode step"
else:
    starts = [i for i, r in enumerate(rows) if name(r).startswith("patch_embed_")]
    if len(starts) < 2:
        sys.exit(f"found {len(starts)} patch_embed launches; need 2")
    units = [rows[starts[-2]:starts[-1]]]
    what = "image encode"

per = defaultdict(lambda: [0, 0.0])
for unit in units:
    for r in unit:
        per[name(r)][0] += 1
        per[name(r)][1] += float(r["gpu__time_duration.sum"].replace(",", "")) / 1000  # ns -> us
n = len(units)
total = sum(t for _, t in per.values()) / n
print(f"{what}: {sum(c for c, _ in per.values()) // n} kernels, {total:.1f} us of kernel time (launched one by one, each timed alone)")
for k, (c, t) in sorted(per.items(), key=lambda kv: -kv[1][1]):
    print(f"  {k:34s} {c // n:4d} launches {t / n:8.1f} us  {t / c:6.2f} us each")
