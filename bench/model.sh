#!/usr/bin/env bash
# Forward+backward tokens/s of llamac and PyTorch side by side: same machine, same threads, same model.
# usage: bench/model.sh [MODEL] [BATCH] [SEQ] [STEPS]    (defaults: small-15m 8 256 5)
# Run from the repository root after building (build/bench/bench_model).
set -euo pipefail
model=${1:-small-15m} B=${2:-8} T=${3:-256} steps=${4:-5}
threads=${OMP_NUM_THREADS:-$(nproc)}
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads
l=$(build/bench/bench_model --model "$model" --batch "$B" --seq "$T" --steps "$steps" 2>/dev/null)
t=$(/usr/bin/python3 bench/torch_bench.py --model "$model" --batch "$B" --seq "$T" --steps "$steps" --threads "$threads" 2>/dev/null)
read -r _ _ _ _ ltps lrss <<<"$l"
read -r _ _ _ _ ttps trss <<<"$t"
g=$(build/bench/bench_sgemm 1024 10 2>/dev/null || true)
echo "model $model, batch $B x $T, $threads threads"
read -r _ _ gflops core <<<"$g"
printf "  sgemm  : %10.1f GFLOP/s (1024^3, the BLAS ceiling; %s)\n" "${gflops:-0}" "${core:-?}"
printf "  llamac : %10.1f tokens/s, peak RSS %8.1f MiB\n" "$ltps" "$lrss"
printf "  PyTorch: %10.1f tokens/s, peak RSS %8.1f MiB\n" "$ttps" "$trss"
awk -v a="$ltps" -v b="$ttps" -v c="$lrss" -v d="$trss" \
  'BEGIN { printf "  ratio  : llamac/PyTorch speed %.2fx, memory %.2fx\n", a / b, c / d }'
