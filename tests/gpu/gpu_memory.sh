#!/usr/bin/env bash
# GPU memory of `llamac train` against the plan `llamac inspect --backend cuda` prints (train/memory.h), and
# the refusal of a layout that does not fit: gpu_memory.sh LLAMAC SOURCE_DIR DATA_DIR TMP_DIR
#
#   plan     for (dp, tp) = (1,1), (1,1) with recompute, (2,1) with ZeRO-1 and (1,2) in fp32 and bf16: the
#            bytes in use on the GPU after step 1 (cudaMemGetInfo, less what was in use before the backend)
#            within 10% of the plan, and the plan equal to what `llamac inspect --backend cuda` prints for
#            the same layout.
#   auto     run.backend = auto takes the device, and without one (CUDAEMU_DEVICES=0) the CPU;
#            run.backend = cuda without a device stops with one line.
#   refuse   (emulator) a device too small for the layout (CUDAEMU_MEMORY_MB under the emulator): one line naming
#            the shortfall and the layouts that fit (tp 2, zero1), exit 1 before any allocation; and none
#            when nothing fits.
#
# Under the emulator CUDAEMU_MEMORY_MB gives each rank a device of that size whose cudaMemGetInfo counts
# exactly what cudaMalloc holds (cudaemu/README.md); on a GPU the multi-rank layouts share one device, so
# there only (1,1) is compared (tests/gpu/multirank_check.sh).
set -u
llamac=$1 src=$2 data=$3 tmp=$4/gpu_memory
ini=$src/tests/configs/tiny_run.ini
mpirun=(mpirun --allow-run-as-root --oversubscribe)
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
rm -rf "$tmp"
mkdir -p "$tmp"
failed=0
emu=0
"$llamac" inspect --model tiny-1m --backend cuda 2>/dev/null | grep -q "cudaemu" && emu=1
# a model where the cuBLASLt workspace (32 MiB) is not most of the memory
model=(--set model.dim=256 --set model.n_layers=4 --set model.vocab_size=515 --set model.max_seq_len=64)
common=(--set data.dir="$data" --set train.batch_size=4 --set train.seq_len=64 --set train.steps=1
    --set optim.warmup=1 --set train.eval_every=0 --set train.ckpt_every=0 --set run.backend=cuda "${model[@]}")

ok() { echo "ok    $*"; }
fail() { echo "FAIL  $*"; failed=1; }

# plan NAME NP TP PRECISION [--set ...]: train 1 step (the run logs what is in use after step 1), compare
# in-use with the plan and with inspect
plan() {
    local name=$1 np=$2 tp=$3 prec=$4
    shift 4
    local launch=()
    [ "$np" -gt 1 ] && launch=("${mpirun[@]}" -np "$np")
    CUDAEMU_MEMORY_MB=${CUDAEMU_MEMORY_MB:-4096} "${launch[@]}" "$llamac" train "$ini" "${common[@]}" \
        --set run.run_dir="$tmp/$name" --set run.precision="$prec" --set parallel.tp="$tp" \
        --set train.global_batch_tokens=$((np / tp * 256)) "$@" > "$tmp/$name.log" 2>&1 ||
        { fail "$name: llamac train exited with $?"; sed 's/^/    | /' "$tmp/$name.log"; return; }
    local line used planned
    line=$(grep "GPU memory:" "$tmp/$name.log")
    echo "    $line"
    used=$(sed -n 's/.*(cudaMemGetInfo): \([0-9.]*\) MiB; planned.*/\1/p' <<< "$line")
    planned=$(sed -n 's/.*planned \([0-9.]*\) MiB.*/\1/p' <<< "$line")
    python3 -c "import sys; u, p = $used, $planned; print('    in use %.1f MiB, planned %.1f MiB: %+.2f%%' % (u, p, 100 * (u - p) / p)); sys.exit(abs(u - p) > 0.1 * p)" &&
        ok "$name: GPU memory in use within 10% of the plan" || fail "$name: GPU memory in use differs from the plan by more than 10%"
    # the same figure from llamac inspect (the layout's dp, tp, ZeRO-1 and recompute as the run's)
    local dp=$((np / tp)) flags=()
    [[ " $* " == *"parallel.zero1=true"* ]] && flags+=(--zero1)
    [[ " $* " == *"run.recompute=true"* ]] && flags+=(--recompute)
    "$llamac" inspect --model "$tmp/model.ini" --backend cuda --precision "$prec" --batch 4 --seq 64 --dp $dp \
        --tp "$tp" "${flags[@]}" > "$tmp/$name.inspect" 2>&1 || { fail "$name: llamac inspect failed"; cat "$tmp/$name.inspect"; return; }
    local total
    total=$(python3 -c "
import re, sys
t = [l for l in open('$tmp/$name.inspect') if l.strip().startswith('total')][0].split()
v, u = float(t[1]), t[2]
print(v * {'B': 1 / 2**20, 'KiB': 1 / 1024, 'MiB': 1, 'GiB': 1024}[u])")
    python3 -c "import sys; sys.exit(abs($total - $planned) > 0.01 * $planned + 0.1)" &&
        ok "$name: llamac inspect --backend cuda prints the plan ($total MiB)" ||
        fail "$name: llamac inspect prints $total MiB, the run planned $planned MiB"
}

# the model as an ini file for llamac inspect --model
cat > "$tmp/model.ini" <<INI
[model]
name = memtest
dim = 256
n_layers = 4
n_heads = 4
n_kv_heads = 2
vocab_size = 515
multiple_of = 32
max_seq_len = 64
INI

plan p11 1 1 fp32
plan p11r 1 1 fp32 --set run.recompute=true
plan p11b 1 1 bf16
if [ $emu = 1 ]; then
    plan z21 2 1 fp32 --set parallel.zero1=true
    plan p12 2 2 bf16
fi

if [ $emu = 1 ]; then
    echo "== refusal (a 180 MiB emulated device for two ranks: 90 MiB each)"
    CUDAEMU_MEMORY_MB=180 "${mpirun[@]}" -np 2 "$llamac" train "$ini" "${common[@]}" --set run.run_dir="$tmp/refuse" \
        --set run.precision=fp32 --set train.global_batch_tokens=512 > "$tmp/refuse.log" 2>&1
    rc=$?
    sed 's/^/    | /' "$tmp/refuse.log"
    [ $rc -ne 0 ] && ok "exit status $rc" || fail "a layout that does not fit was accepted"
    grep -q "^llamac train: GPU memory: dp 2 x tp 1 needs .* MiB per GPU (parameters .*) but GPU 0 (cudaemu (CPU emulation), shared) has .* MiB free for this rank: .* MiB short; layouts of these ranks that fit (parallel.tp, parallel.zero1, run.recompute): .*tp 2" "$tmp/refuse.log" &&
        ok "one line naming the shortfall and the layouts that fit (tp 2)" || fail "the refusal line"
    [ "$(grep -c "GPU memory" "$tmp/refuse.log")" = 1 ] && ok "printed once" || fail "printed more than once"
    [ ! -e "$tmp/refuse/ckpt" ] && ok "nothing written" || fail "the refused run wrote a checkpoint"
    CUDAEMU_MEMORY_MB=20 "$llamac" train "$ini" "${common[@]}" --set run.run_dir="$tmp/refuse1" --set run.precision=fp32 \
        --set train.global_batch_tokens=256 > "$tmp/refuse1.log" 2>&1
    rc=$?
    sed 's/^/    | /' "$tmp/refuse1.log"
    [ $rc -ne 0 ] && grep -q "short; no layout of these ranks fits: start more GPUs or lower train.batch_size" "$tmp/refuse1.log" &&
        ok "one rank, nothing fits: says so" || fail "the refusal when nothing fits"
fi
echo "== run.backend = auto"
"$llamac" train "$ini" "${common[@]}" --set run.run_dir="$tmp/auto" --set run.backend=auto --set run.precision=fp32 \
    --set train.global_batch_tokens=256 > "$tmp/auto.log" 2>&1 || { fail "auto: exited with $?"; cat "$tmp/auto.log"; }
grep -q "backend cuda (fp32)" "$tmp/auto.log" && grep -q '"gpu_mem_bytes"' "$tmp/auto/metrics.jsonl" &&
    ok "auto with a device: the CUDA backend (GPU memory in metrics.jsonl)" || fail "auto did not pick the device"
grep -h "step 1/1" "$tmp/auto.log" | sed 's/^/    /'
if [ $emu = 1 ]; then
    CUDAEMU_DEVICES=0 "$llamac" train "$ini" "${common[@]}" --set run.run_dir="$tmp/auto0" --set run.backend=auto \
        --set run.precision=fp32 --set train.global_batch_tokens=256 > "$tmp/auto0.log" 2>&1 || { fail "auto without a device: exited with $?"; cat "$tmp/auto0.log"; }
    ! grep -q "backend cuda" "$tmp/auto0.log" && ! grep -q '"gpu_mem_bytes"' "$tmp/auto0/metrics.jsonl" &&
        ok "auto without a device (CUDAEMU_DEVICES=0): the CPU backend" || fail "auto without a device"
    CUDAEMU_DEVICES=0 "$llamac" train "$ini" "${common[@]}" --set run.run_dir="$tmp/cuda0" --set run.precision=fp32 \
        --set train.global_batch_tokens=256 > "$tmp/cuda0.log" 2>&1
    rc=$?
    sed 's/^/    | /' "$tmp/cuda0.log"
    [ $rc -ne 0 ] && grep -q "^llamac train: run.backend = cuda: no CUDA device is visible on this machine$" "$tmp/cuda0.log" &&
        ok "cuda without a device: one line" || fail "cuda without a device"
fi

[ $failed -eq 0 ] && echo "gpu_memory.sh: all checks passed" || echo "gpu_memory.sh: FAILED"
exit $failed
