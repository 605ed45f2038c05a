#!/usr/bin/env python3
"""Summarises an Nsight Compute CSV (--csv --page raw --metrics gpu__time_duration.sum,launch__grid_size) of a
`fastmm bench --backend cuda:eager` run: the kernels of the last decode steps, per kernel name.

    python3 tools/cuda-check/decode_profile.py ncu-decode.csv

A decode step ends with the LM head's GEMV, the launch with the largest grid of any *_gemv kernel; the kernels
between the last two such launches (and the two before) are the last decode steps.
"""
import csv
import sys
from collections import defaultdict

rows = list(csv.DictReader(line for line in open(sys.argv[1]) if not line.startswith("==")))
rows = [r for r in rows if r.get("gpu__time_duration.sum", "").replace(".", "", 1).replace(",", "").isdigit()]
if not rows:
    sys.exit("no kernel rows in " + sys.argv[1])
name = lambda r: r["Kernel Name"].split("(")[0]
grid = lambda r: int(float(r["launch__grid_size"].replace(",", "")))
gemv = [i for i, r in enumerate(rows) if name(r).endswith("_gemv")]
biggest = max(grid(rows[i]) for i in gemv)
ends = [i for i in gemv if grid(rows[i]) == biggest]
if len(ends) < 3:
    sys.exit(f"found {len(ends)} step ends; need 3")
steps = [rows[ends[-3] + 1:ends[-2] + 1], rows[ends[-2] + 1:ends[-1] + 1]]
per = defaultdict(lambda: [0, 0.0])
for step in steps:
    for r in step:
        per[name(r)][0] += 1
        per[name(r)][1] += float(r["gpu__time_duration.sum"].replace(",", "")) / 1000  # ns -> us
n = len(steps)
total = sum(t for _, t in per.values()) / n
print(f"decode step: {sum(c for c, _ in per.values()) // n} kernels, {total:.1f} us of kernel time (launched one by one, each timed alone)")
for k, (c, t) in sorted(per.items(), key=lambda kv: -kv[1][1]):
    print(f"  {k:34s} {c // n:4d} launches {t / n:8.1f} us  {t / c:6.2f} us each")
