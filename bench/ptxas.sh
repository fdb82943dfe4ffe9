#!/usr/bin/env bash
# Writes bench/ptxas.txt: what ptxas reports for every CUDA kernel of llamac (registers, static shared
# memory, spills) for sm_90, plus the dynamic shared memory of the attention kernels. No device needed;
# bench/gpu.sh prints the file. Run from the repository root after changing a kernel:
#   bash bench/ptxas.sh [NVCC] [ARCH]     (defaults /usr/local/cuda/bin/nvcc, 90)
set -euo pipefail
nvcc=${1:-/usr/local/cuda/bin/nvcc} arch=${2:-90}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
{
    echo "# nvcc -std=c++17 -O3 -arch=sm_$arch -Xptxas -v ($("$nvcc" --version | grep -o 'release [0-9.]*')), written by bench/ptxas.sh"
    echo "# kernel                                                     regs  smem(static)  spill st/ld"
    for f in model/ops/cuda/*.cu optim/*.cu; do
        if ! "$nvcc" -std=c++17 -O3 -arch=sm_$arch -I. -Xptxas -v -c "$f" -o "$tmp/x.o" 2>"$tmp/log"; then
            grep -v '^ptxas info' "$tmp/log" >&2
            echo "bench/ptxas.sh: $f does not compile" >&2
            exit 1
        fi
        echo "## $f"
        awk '/Compiling entry function/ { name = $0; sub(/.*function .\x27?/, "", name); sub(/\x27.*/, "", name) }
             /bytes spill stores/ { split($0, a, ","); st = a[2]; ld = a[3]; gsub(/[^0-9]/, "", st); gsub(/[^0-9]/, "", ld) }
             /Used [0-9]+ registers/ { r = $0; sub(/.*Used /, "", r); sub(/ registers.*/, "", r); s = 0;
                 if (match($0, /[0-9]+ bytes smem/)) { s = substr($0, RSTART, RLENGTH); sub(/ bytes smem/, "", s) }
                 print name "\t" r "\t" s "\t" st "/" ld }' "$tmp/log" |
        while IFS=$'\t' read -r n r s sp; do
            printf "  %-58s %5s %13s %12s\n" "$(c++filt "$n" | sed 's/(.*//' | cut -c1-58)" "$r" "$s" "$sp"
        done
    done
    cat <<'TXT'
# dynamic shared memory of the attention kernels (bytes, from the *_smem() formulas of attention.cu):
#   tensor cores (bf16 tiles of HSP + 8 columns, K/V or Q/dO double-buffered)
#     HS 128: forward 87040, dK dV 70144, dQ 69632      HS 64: forward 46080, dK dV 37376, dQ 36864
#   fp32 FMA      HS 128: forward 115456, dK dV 116352, dQ 107520
TXT
} >bench/ptxas.txt
cat bench/ptxas.txt
