#!/usr/bin/env bash
# Compiles every kernels/*.cu without a GPU and checks it with ptxas:
#   kernels/NAME.cu --nvcc -O3 -ptx (compute_80)--> build/kernels/NAME.ptx
#   ptxas -v for sm_80 and sm_90 on each PTX      --> one table: registers, spills, shared memory per entry point
#   NAME.ptx --nvcc -fatbin--> build/kernels/NAME.fatbin (sm_80, sm_86, sm_89, sm_90 cubins + compute_80 PTX, compressed),
#                              which src/FastMM.Cuda embeds when it is built afterwards.
# Installs Debian 12's CUDA 11.8 toolkit (and clang-14: nvcc 11.8 rejects gcc 12) when nvcc is missing; needs root
# for that. Exits non-zero if any file fails to compile or assemble.
# Environment: FASTMM_CUDA_HOST_CXX (default clang-14) is nvcc's host compiler; FASTMM_KERNELS_OUT the output folder.
set -uo pipefail
cd "$(dirname "$0")/.."

host_cxx=${FASTMM_CUDA_HOST_CXX:-clang-14}
out=${FASTMM_KERNELS_OUT:-build/kernels}

install_toolkit() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "check-kernels: nvcc/ptxas or $host_cxx is missing and this is not root: install nvidia-cuda-toolkit and clang-14" >&2
    return 1
  fi
  # nvidia-cuda-toolkit is in bookworm's contrib/non-free; add them unless a source already has non-free
  # (non-free-firmware alone does not count).
  if ! grep -rqsE '^[^#]*(Components:|deb[[:space:]]).*[[:space:]]non-free([[:space:]]|$)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    cat > /etc/apt/sources.list.d/fastmm-nonfree.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  fi
  echo "check-kernels: installing nvidia-cuda-toolkit and clang-14 (a few minutes)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends nvidia-cuda-toolkit clang-14 >/dev/null
}

if ! command -v nvcc >/dev/null || ! command -v ptxas >/dev/null || ! command -v "$host_cxx" >/dev/null; then
  install_toolkit || exit 1
  for tool in nvcc ptxas "$host_cxx"; do
    command -v "$tool" >/dev/null || { echo "check-kernels: $tool still missing after the install" >&2; exit 1; }
  done
fi

shopt -s nullglob
sources=(kernels/*.cu)
if [ ${#sources[@]} -eq 0 ]; then
  echo "check-kernels: no kernels/*.cu" >&2
  exit 1
fi
mkdir -p "$out"
# Outputs of a failed or deleted source must not linger and be embedded as if current.
rm -f "$out"/*.ptx "$out"/*.fatbin
echo "check-kernels: $(nvcc --version | grep -o 'release [0-9.]*'), host compiler $host_cxx, ${#sources[@]} files -> $out"

# Turns `ptxas -v` output into rows: file entry arch registers spill-stores spill-loads smem-bytes.
ptxas_rows() { # file arch < ptxas output
  awk -v file="$1" -v arch="$2" '
    /Compiling entry function/ { split($0, q, "'"'"'"); entry = q[2]; props = ""; regs[entry] = 0; smem[entry] = 0; order[n++] = entry }
    /Function properties for/ { props = $NF }
    /bytes spill stores/ && props == entry { st[entry] = $5; ld[entry] = $9 }
    /Used [0-9]+ registers/ {
      for (i = 1; i <= NF; i++) { if ($(i + 1) ~ /^registers/) regs[entry] = $i; if ($(i + 1) == "bytes" && $(i + 2) ~ /^smem/) smem[entry] = $i }
    }
    END { for (i = 0; i < n; i++) { e = order[i]; printf "%s %s %s %s %s %s %s\n", file, e, arch, regs[e], st[e] + 0, ld[e] + 0, smem[e] } }'
}

failed=0
rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
for src in "${sources[@]}"; do
  name=$(basename "$src" .cu)
  ptx="$out/$name.ptx"
  if ! nvcc -ccbin "$host_cxx" -O3 -std=c++17 -ptx -arch=compute_80 -Ikernels "$src" -o "$ptx"; then
    echo "check-kernels: FAILED to compile $src" >&2
    failed=$((failed + 1)); continue
  fi
  for arch in sm_80 sm_90; do
    if ! log=$(ptxas -v -O3 -arch="$arch" "$ptx" -o /dev/null 2>&1); then
      echo "$log" >&2
      echo "check-kernels: FAILED ptxas $arch on $ptx" >&2
      failed=$((failed + 1)); continue
    fi
    ptxas_rows "$name.cu" "$arch" <<<"$log" >>"$rows"
  done
  if ! nvcc -ccbin "$host_cxx" -fatbin -Xfatbin -compress-all -arch=compute_80 -code=sm_80,sm_86,sm_89,sm_90,compute_80 "$ptx" -o "$out/$name.fatbin"; then
    echo "check-kernels: FAILED to build $out/$name.fatbin" >&2
    failed=$((failed + 1))
  fi
done

sort -k1,1 -k2,2 -k3,3 "$rows" | awk '
  BEGIN { printf "%-16s %-30s %-5s %5s %8s %8s %7s\n", "file", "entry point", "arch", "regs", "spill-st", "spill-ld", "smem" }
  { printf "%-16s %-30s %-5s %5s %8s %8s %7s\n", $1, $2, $3, $4, $5, $6, $7 }'
spilling=$(awk '$5 > 0 || $6 > 0' "$rows" | wc -l)
echo "check-kernels: $(wc -l <"$rows") entry/arch pairs, $spilling with spills, $failed failures"
[ "$failed" -eq 0 ]
