#!/usr/bin/env bash
# llamac's CUDA backend against PyTorch on the same GPU, in one call (under 8 minutes on an H200):
#   1. the static figures of the kernels (bench/ptxas.txt: registers, shared memory, spills);
#   2. the dense bf16 GEMM rate (cuBLASLt, 8192^3) and memory bandwidth, measured now: the MFU peak;
#   3. attention forward + backward alone at T = 2048, head sizes 128 and 64, against that GEMM rate and
#      beside PyTorch SDPA (FlashAttention) at the same shapes;
#   4. training steps (forward, backward, grad norm, AdamW) at T = 2048 for a ~124M model, a ~1B LLaMA
#      shape (dim 2048, 16 layers, GQA 16/4) and a 7B shape with recomputation: llamac (plain launches,
#      and with the step captured in CUDA graphs, LLAMAC_CUDA_GRAPH=1), PyTorch eager and PyTorch
#      torch.compile (bench/torch_gpu_bench.py), tokens/s, MFU (6N + attention FLOPs over the measured
#      GEMM rate) and ratios, in one table;
#   5. the time of each op in one 1B step beside its floor from FLOPs and bytes (printed after the 1b rows).
#
# usage: bash bench/gpu.sh [BENCH_GPU] [OUT_DIR]
#   BENCH_GPU  the bench_gpu binary (default build/bench/bench_gpu); in a bundle (scripts/gpu-check.sh
#              --bundle) its libraries in DIR/lib next to it, or LD_LIBRARY_PATH, are used.
#   OUT_DIR    where the raw lines and logs go (default bench-gpu-out)
# Environment: PYTHON (default python3), SIZES (default "1b 124m 7b"), BUDGET_S (default 450: runs that
# would start later are skipped and say so), SMOKE=1 (tiny shapes, PyTorch on the CPU: checks this script
# where there is no GPU, e.g. with the EMU build's bench_gpu; its figures mean nothing).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-build/bench/bench_gpu}
out=${2:-bench-gpu-out}
py=${PYTHON:-python3}
budget=${BUDGET_S:-450}
mkdir -p "$out"
bindir=$(cd "$(dirname "$bin")" && pwd)
for d in "$bindir/lib" "$bindir/../lib"; do [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; done
[ -x "$bin" ] || { echo "gpu.sh: no bench_gpu binary at $bin" >&2; exit 2; }

left() { [ $((budget - SECONDS)) -gt "$1" ]; }
run() {  # run NAME TIMEOUT CMD...: stdout lines to $out/NAME.txt, stderr to $out/NAME.log
    local name=$1 t=$2
    shift 2
    if ! left 20; then echo "skipped (time budget): $name" | tee "$out/$name.txt"; return 1; fi
    local rem=$((budget - SECONDS))
    [ "$t" -gt "$rem" ] && t=$rem  # no run ends past the budget
    timeout "$t" "$@" >"$out/$name.txt" 2>"$out/$name.log"
    local rc=$?
    [ $rc -eq 0 ] || echo "failed (rc $rc, see $out/$name.log): $name" | tee -a "$out/$name.txt"
    return $rc
}

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv,noheader 2>/dev/null || echo "nvidia-smi: none"
$py -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>/dev/null || echo "no torch"
echo
echo "== static figures (nvcc -Xptxas -v, sm_90; bench/ptxas.sh)"
cat "$here/ptxas.txt" 2>/dev/null || echo "bench/ptxas.txt missing"
echo

echo "== peak"
smoke=${SMOKE:-0}
tdev=() peakargs=() attnT=2048 reps=10
if [ "$smoke" = 1 ]; then tdev=(--device cpu) peakargs=(--n 256 --reps 1) attnT=128 reps=1; fi
run peak 120 "$bin" peak "${peakargs[@]}"
cat "$out/peak.txt"
read -r _ _ peak _ membw <"$out/peak.txt" || true
case "$peak" in ''|*[!0-9.]*) peak=0 membw=0 ;; esac
echo

echo "== attention alone (T 2048, forward + backward, causal FLOPs)"
echo "attn B T NH KVH HS fwd_ms bwd_ms fwd_TFLOPs bwd_TFLOPs total_TFLOPs of_gemm_rate"
echo "(attn-check: the tensor-core kernels against the fp32-FMA ones on the same inputs, on this device;"
echo " sdpa: PyTorch's FlashAttention at the same shapes, same FLOP count; attn-fma: llamac's fp32-FMA kernels)"
run attn128 120 "$bin" attn --batch 4 --seq $attnT --heads 16 --kv-heads 4 --head-dim 128 --reps $reps --peak "$peak" && cat "$out/attn128.txt"
run attn64 120 "$bin" attn --batch 4 --seq $attnT --heads 32 --kv-heads 8 --head-dim 64 --reps $reps --peak "$peak" && cat "$out/attn64.txt"
run sdpa128 120 $py "$here/torch_gpu_bench.py" --attn-only --batch 4 --seq $attnT --heads 16 --kv-heads 4 --head-dim 128 "${tdev[@]}" \
    && cat "$out/sdpa128.txt"
run sdpa64 120 $py "$here/torch_gpu_bench.py" --attn-only --batch 4 --seq $attnT --heads 32 --kv-heads 8 --head-dim 64 "${tdev[@]}" \
    && cat "$out/sdpa64.txt"
LLAMAC_ATTN_FMA=1 run attn128fma 120 "$bin" attn --batch 4 --seq $attnT --heads 16 --kv-heads 4 --head-dim 128 --reps 2 --peak "$peak" --no-check \
    && sed 's/^attn/attn-fma/' "$out/attn128fma.txt"
echo

shape() {
    if [ "$smoke" = 1 ]; then
        echo "--name $1 --dim 64 --layers 2 --heads 4 --kv-heads 2 --ffn 128 --vocab 256 --batch 2 --seq 64 --steps 1 --warmup 1"
        return
    fi
    case $1 in
    124m) echo "--name 124m --dim 768 --layers 12 --heads 12 --kv-heads 12 --ffn 2048 --vocab 50304 --tie --batch 8 --seq 2048" ;;
    1b) echo "--name 1b --dim 2048 --layers 16 --heads 16 --kv-heads 4 --ffn 8192 --vocab 32000 --batch 4 --seq 2048" ;;
    7b) echo "--name 7b --dim 4096 --layers 32 --heads 32 --kv-heads 32 --ffn 11008 --vocab 32000 --batch 2 --seq 2048 --recompute" ;;
    esac
}
for s in ${SIZES:-1b 124m 7b}; do
    echo "== $s: $(shape "$s")"
    run "llamac_$s" 200 "$bin" model $(shape "$s") --peak "$peak" && cat "$out/llamac_$s.txt"
    run "eager_$s" 200 $py "$here/torch_gpu_bench.py" $(shape "$s") "${tdev[@]}" && cat "$out/eager_$s.txt"
    run "compile_$s" 260 $py "$here/torch_gpu_bench.py" $(shape "$s") --compile "${tdev[@]}" && cat "$out/compile_$s.txt"
    if [ "$s" != 7b ]; then  # at 7b a step is seconds of GPU work: launches cannot matter, and time is short
        LLAMAC_CUDA_GRAPH=1 run "graph_$s" 200 "$bin" model $(shape "$s") --peak "$peak" \
            && sed 's/^llamac/llamac+graph/' "$out/graph_$s.txt"
    fi
    if [ "$s" = 1b ]; then
        echo "-- per-op time of one 1b step (each op synchronised) beside its floor max(FLOPs/GEMM rate, bytes/bandwidth)"
        run kernels_1b 200 "$bin" model $(shape 1b) --kernels --peak "$peak" --membw "$membw" \
            && grep -v '^llamac' "$out/kernels_1b.txt"
    fi
done
echo

echo "== tokens/s and MFU (MFU over the measured GEMM rate, $peak TFLOP/s)"
echo "(llamac: the better of plain launches and LLAMAC_CUDA_GRAPH=1, the graph column; ratios use it)"
printf "%-6s %10s %7s %10s %10s %7s %10s %7s %9s %9s\n" size llamac MFU "+graph" eager MFU compile MFU "x eager" "x compile"
for s in ${SIZES:-1b 124m 7b}; do
    l=$(grep '^llamac' "$out/llamac_$s.txt" 2>/dev/null) g=$(grep '^llamac' "$out/graph_$s.txt" 2>/dev/null)
    e=$(grep '^torch' "$out/eager_$s.txt" 2>/dev/null) c=$(grep '^torch' "$out/compile_$s.txt" 2>/dev/null)
    read -r _ _ _ _ lt _ fpt _ <<<"${l:-x x x x 0 0 0 0}"
    read -r _ _ _ _ gt _ gfpt _ <<<"${g:-x x x x 0 0 0 0}"
    read -r _ _ _ _ et _ <<<"${e:-x x x x 0 0}"
    read -r _ _ _ _ ct _ <<<"${c:-x x x x 0 0}"
    [ "$fpt" = 0 ] && fpt=$gfpt
    awk -v s="$s" -v l="$lt" -v g="$gt" -v e="$et" -v c="$ct" -v f="$fpt" -v p="$peak" '
        function mfu(t) { return p > 0 ? 100 * t * f / (p * 1e12) : 0 }
        function r(a, b) { return b > 0 ? sprintf("%.2fx", a / b) : "-" }
        BEGIN { b = g > l ? g : l
                printf "%-6s %10.0f %6.1f%% %10.0f %10.0f %6.1f%% %10.0f %6.1f%% %9s %9s\n", s, l, mfu(b), g, e, mfu(e), c, mfu(c), r(b, e), r(b, c) }'
done
echo

echo "elapsed ${SECONDS}s; raw lines and logs in $out/"
