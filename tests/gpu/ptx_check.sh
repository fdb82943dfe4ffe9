#!/bin/bash
# Static checks of the tensor-core attention kernels, without a device (real-CUDA builds only; ctest
# label "static"): the PTX of every attn_*_tc_kernel holds mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
# and ldmatrix, and ptxas reports no spills for them.
#   tests/gpu/ptx_check.sh NVCC SOURCE_ROOT ARCH TMPDIR     (ARCH: 90 for sm_90)
set -euo pipefail
nvcc=$1 root=$2 arch=$3 tmp=$4
mkdir -p "$tmp"
src=$root/model/ops/cuda/attention.cu
# one compile: --keep leaves the PTX that ptxas reads (attention.ptx, the same file as nvcc -ptx writes)
"$nvcc" -std=c++17 -O3 -arch=sm_$arch -I"$root" -Xptxas -v -c "$src" -o "$tmp/attention.o" --keep \
    --keep-dir "$tmp" 2>"$tmp/ptxas.txt"
fail=0
entries=$(grep -o '^\.visible \.entry [A-Za-z0-9_]*tc_kernel[A-Za-z0-9_]*' "$tmp/attention.ptx" | awk '{print $3}')
[ -n "$entries" ] || { echo "FAIL: no tensor-core attention kernels in the PTX"; exit 1; }
for e in $entries; do
    body=$(awk -v e="$e" '$0 ~ "^\\.visible \\.entry "e"\\(" {on=1} on && /^}/ {print; exit} on {print}' "$tmp/attention.ptx")
    mma=$(grep -c 'mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32' <<<"$body" || true)
    ldm=$(grep -c 'ldmatrix.sync.aligned' <<<"$body" || true)
    spill=$(grep -A2 "Compiling entry function '$e'" "$tmp/ptxas.txt" | grep -o '[0-9]* bytes spill stores' | awk '{print $1}')
    regs=$(grep -A3 "Compiling entry function '$e'" "$tmp/ptxas.txt" | grep -o 'Used [0-9]* registers' | awk '{print $2}')
    printf '%-60s mma %4s  ldmatrix %4s  registers %4s  spill stores %s\n' "$(c++filt "$e" | cut -c1-60)" "$mma" "$ldm" "$regs" "${spill:-?}"
    if [ "$mma" -eq 0 ] || [ "$ldm" -eq 0 ] || [ "${spill:-1}" != 0 ]; then echo "FAIL: $e"; fail=1; fi
done
exit $fail
