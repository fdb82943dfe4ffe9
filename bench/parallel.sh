#!/usr/bin/env bash
# Training throughput of `llamac train` at dp = 1 and dp = 2 (and tp = 2) on this machine, for the same
# global batch, so that the only difference is how the work is split over the cores:
#
#   dp 1        1 rank,  OMP_NUM_THREADS = CORES,   grad_accum 2 micro-batches of B x T
#   dp 2        2 ranks, OMP_NUM_THREADS = CORES/2, 1 micro-batch each, gradients all-reduced (bucketed,
#               overlapped with backward)
#   dp 1, tp 2  2 ranks, OMP_NUM_THREADS = CORES/2, grad_accum 2, 4 activation all-reduces per layer
#   dp 1 / 1 thread: the same on one core, the baseline for parallel efficiency
#
# Every configuration but the baseline uses all CORES cores (default: nproc), so the comparison is
# fair: dp 2 on 2 cores against one rank with 2 OpenMP threads. tokens/s is read from metrics.jsonl
# (tokens_per_s of each step: global batch tokens / the step's wall time, data loading, the gradient
# all-reduce and the optimizer included): the median of the steps after the first WARMUP, the best of
# REPEAT runs (the machine may be shared).
#
# usage: bench/parallel.sh [MODEL] [B] [T] [STEPS] [WARMUP]   (defaults: small-15m 4 256 12 3)
#   The model is the preset's shape with vocab_size 8000: the data is the demo corpus (en, de, ru)
#   tokenized with an 8000-piece tokenizer, prepared once into $LLAMAC_BENCH_DATA
#   (default build/bench/data-8000). Run from the repository root after building.
#   Environment: CORES (default nproc), REPEAT (default 1), LLAMAC_BENCH_TP=0 skips the tp = 2 run.
set -euo pipefail
model=${1:-small-15m} B=${2:-4} T=${3:-256} steps=${4:-12} warmup=${5:-3}
repeat=${REPEAT:-1}
cores=${CORES:-$(nproc)}
half=$(( cores / 2 > 0 ? cores / 2 : 1 ))
llamac=build/llamac
data=${LLAMAC_BENCH_DATA:-build/bench/data-8000}
work=$(mktemp -d "${TMPDIR:-/tmp}/llamac-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

if [ ! -f "$data/manifest.json" ]; then
    echo "preparing $data (demo corpus en/de/ru, 8000-piece tokenizer; once)" >&2
    $llamac prep --demo-corpus "$work/demo" >/dev/null
    $llamac prep --out "$data" --train-tokenizer --vocab-size 8000 --quiet \
        --input en:"$work/demo/en.txt" --input de:"$work/demo/de.txt" --input ru:"$work/demo/ru.txt"
fi

cat > "$work/run.ini" <<EOF
[run]
seed = 1
log_every = 1000
[model]
preset = $model
vocab_size = 8000
[data]
dir = $data
[train]
batch_size = $B
seq_len = $T
global_batch_tokens = $((2 * B * T))
steps = $steps
eval_every = 0
ckpt_every = 0
EOF

# measure NAME RANKS THREADS TP: prints the best over REPEAT runs of the median tokens/s
measure() {
    local name=$1 ranks=$2 threads=$3 tp=$4 best=0
    local launch=()
    [ "$ranks" -gt 1 ] && launch=(mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$ranks")
    for _ in $(seq "$repeat"); do
        rm -rf "${work:?}/$name"
        OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads "${launch[@]}" $llamac train "$work/run.ini" \
            --set run.run_dir="$work/$name" --set parallel.tp="$tp" > "$work/$name.log" 2>&1 ||
            { cat "$work/$name.log" >&2; exit 1; }
        local v
        v=$(sed -n 's/.*"tokens_per_s": \([0-9.]*\).*/\1/p' "$work/$name/metrics.jsonl" | tail -n +"$((warmup + 1))" |
            sort -g | awk '{ x[NR] = $1 } END { printf "%.1f\n", NR % 2 ? x[(NR + 1) / 2] : (x[NR / 2] + x[NR / 2 + 1]) / 2 }')
        best=$(awk -v a="$v" -v b="$best" 'BEGIN { print (a > b ? a : b) }')
    done
    echo "$best"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "llamac train, $model (vocab 8000), global batch $((2 * B * T)) tokens = 2 x $B x $T, $cores cores," \
     "median of steps $((warmup + 1))..$steps, best of $repeat"
d1=$(measure dp1 1 "$cores" 1)
printf "  dp 1        1 rank  x %d threads, 2 micro-batches: %8.1f tokens/s\n" "$cores" "$d1"
d2=$(measure dp2 2 "$half" 1)
printf "  dp 2        2 ranks x %d threads, 1 micro-batch:   %8.1f tokens/s  (%sx dp 1)\n" "$half" "$d2" "$(ratio "$d2" "$d1")"
if [ "${LLAMAC_BENCH_TP:-1}" != 0 ]; then
    t2=$(measure tp2 2 "$half" 2)
    printf "  dp 1, tp 2  2 ranks x %d threads, 2 micro-batches: %8.1f tokens/s  (%sx dp 1)\n" "$half" "$t2" "$(ratio "$t2" "$d1")"
fi
b1=$(measure base 1 1 1)
printf "  baseline    1 rank  x 1 thread,  2 micro-batches: %8.1f tokens/s  (dp 2: %sx, dp 1 x %d threads: %sx)\n" \
    "$b1" "$(ratio "$d2" "$b1")" "$cores" "$(ratio "$d1" "$b1")"
