#!/usr/bin/env bash
# The GPU check in one command, for a machine with an NVIDIA GPU and PyTorch but no .NET (the project's H200 check
# machine). Two steps:
#
#   here (with .NET and CUDA 11.8):   scripts/device-check.sh --prepare
#       builds the kernels (scripts/check-kernels.sh) and a self-contained fastmm, packed as
#       build/device/fastmm-linux-x64.tar.xz (xz: the tree that travels must stay under 64 MiB)
#   there:                            scripts/device-check.sh            (carry build/device and build/kernels)
#       1. conformance of --backend cuda and --backend ilgpu:cuda against the CPU reference (every op, random inputs)
#       2. the bundled shapes-vlm scores the evaluation scenes exactly as on the CPU (per-kind exact match) on cuda / ilgpu:cuda
#       3. every kernels/*.cu entry point against PyTorch, with timings (tools/cuda-check/check_kernels.py --bench)
#       4. fastmm bench of SmolVLM-256M-shaped random weights at F16, Q8_0 and Q4_0 on cuda
#    and prints one table. Logs go to $OUT (or build/device-out). Exit status 1 when a check failed.
set -uo pipefail
cd "$(dirname "$0")/.."
pack=build/device/fastmm-linux-x64.tar.xz

if [ "${1:-}" = "--prepare" ]; then
  set -e
  scripts/check-kernels.sh >/dev/null
  rm -rf build/device/publish && mkdir -p build/device
  dotnet publish src/FastMM.Cli -c Release -r linux-x64 --self-contained -p:DebugType=none -o build/device/publish >/dev/null
  tar -C build/device/publish -cf - . | xz -T0 -6 > "$pack"
  rm -rf build/device/publish
  ls -la "$pack" build/kernels/*.fatbin | awk '{print $5, $9}'
  echo "carry build/device and build/kernels; run: bash scripts/device-check.sh"
  exit 0
fi

out=${OUT:-build/device-out}
mkdir -p "$out"
[ -f "$pack" ] || { echo "device-check: $pack is missing: run scripts/device-check.sh --prepare on a machine with .NET" >&2; exit 2; }
bin=$(mktemp -d)
tar -C "$bin" -xJf "$pack"
fastmm="$bin/fastmm"

# ILGPU looks for the unversioned libcuda.so, which driver-only machines lack.
libdir=$(mktemp -d)
real=$(ldconfig -p | awk '/libcuda\.so\.1 /{print $NF; exit}')
[ -n "$real" ] && ln -s "$real" "$libdir/libcuda.so"
export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$out/gpu.txt"
declare -A status
run() { # name, log, command...
  local name=$1 log=$2; shift 2
  local t0=$SECONDS
  if "$@" >"$out/$log" 2>&1; then status[$name]="ok ($((SECONDS - t0)) s)"; else status[$name]="FAILED ($((SECONDS - t0)) s, see $log)"; fi
  tail -n 3 "$out/$log"
}

seed=$RANDOM
for b in cuda ilgpu:cuda; do
  run "conformance $b" "conformance-${b/:/-}.txt" "$fastmm" conformance --backend "$b" --seed "$seed"
done

"$fastmm" eval --model models/shapes-vlm --data tests/data/shapes-eval --json "$out/eval-cpu.json" --threads 16 >"$out/eval-cpu.txt" 2>&1
for b in cuda ilgpu:cuda; do
  run "shapes-vlm eval $b" "eval-${b/:/-}.txt" "$fastmm" eval --backend "$b" --model models/shapes-vlm --data tests/data/shapes-eval --json "$out/eval-${b/:/-}.json"
  if [ "${status["shapes-vlm eval $b"]:0:2}" = "ok" ] && ! python3 - "$out/eval-cpu.json" "$out/eval-${b/:/-}.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
strip = lambda r: {k: v for k, v in r.items() if "second" not in k and "time" not in k and "backend" not in k}
sys.exit(0 if strip(a) == strip(b) else 1)
PY
  then status["shapes-vlm eval $b"]="FAILED (per-kind accuracy differs from the CPU's)"; fi
done

run "kernels vs PyTorch" kernels.txt env PYTHONUNBUFFERED=1 python3 tools/cuda-check/check_kernels.py build/kernels --bench

smol=$(mktemp -d)
"$fastmm" synth --arch smolvlm-256m --out "$smol/m" >/dev/null 2>&1
for q in f16 q8_0 q4_0; do
  run "bench smolvlm-256m $q" "bench-$q.txt" "$fastmm" bench --backend cuda --model "$smol/m" --quant-text "$q" --quant-vision f16 --runs 5 --json "$out/bench-$q.json"
done

echo
echo "| check | result |"
echo "|---|---|"
failed=0
for k in "${!status[@]}"; do
  echo "| $k | ${status[$k]} |"
  [ "${status[$k]:0:2}" = "ok" ] || failed=1
done | sort
grep -hE '^bench ' "$out/kernels.txt" 2>/dev/null | sed 's/^/  /'
for q in f16 q8_0 q4_0; do grep -hiE 'decode|ttft|encode' "$out/bench-$q.txt" 2>/dev/null | sed "s/^/  [$q] /"; done
for k in "${!status[@]}"; do [ "${status[$k]:0:2}" = "ok" ] || exit 1; done
exit 0
