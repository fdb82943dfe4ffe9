#!/usr/bin/env bash
# `llamac train` with backend = cuda end to end, against the CPU backend on the same run (a GPU, or the
# CPU emulation of CUDA in CI): train_cuda.sh MODE LLAMAC CKPT_COMPARE SOURCE_DIR DATA_DIR TMP_DIR, MODE
#
#   losses   20 steps of tests/configs/tiny_run.ini on the CPU, on CUDA in fp32 precision and in bf16
#            precision: fp32 losses within 1e-5 of the CPU's at every step, bf16 within 2%; the fp32 run's
#            final parameters within 1e-4.
#   resume   checkpoints cross backends: a CPU run stopped after step 5 resumes on CUDA (fp32) and an
#            fp32 CUDA run stopped after step 5 resumes on the CPU, each continuing the uninterrupted CPU
#            curve to step 10 within 1e-5; a bf16 CUDA checkpoint resumes on the CPU within 2%.
#
# Checkpoints hold the fp32 master weights and moments whatever the precision (train/ckpt.h), which is
# what lets a run change backend.
set -u
mode=$1 llamac=$2 compare=$3 src=$4 data=$5 tmp=$6/train_cuda_$1
ini=$src/tests/configs/tiny_run.ini
export OMP_NUM_THREADS=2
rm -rf "$tmp"
mkdir -p "$tmp"
failed=0

check() {  # check NAME COMMAND...: runs COMMAND, prints its output and ok/FAIL
    local name=$1
    shift
    local out
    out=$("$@" 2>&1)
    local rc=$?
    [ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/    /'
    if [ $rc -eq 0 ]; then echo "ok    $name"; else echo "FAIL  $name"; failed=1; fi
}

# train NAME BACKEND PRECISION STEPS [--set K=V...]: llamac train into $tmp/NAME (log in $tmp/NAME.log)
train() {
    local name=$1 backend=$2 precision=$3 steps=$4
    shift 4
    "$llamac" train "$ini" --set data.dir="$data" --set run.run_dir="$tmp/$name" --set run.backend="$backend" \
        --set run.precision="$precision" --set train.steps="$steps" --set train.eval_every=0 \
        --set train.ckpt_every=5 --set train.keep_ckpts=100 "$@" > "$tmp/$name.log" 2>&1
    local rc=$?
    if [ $rc -ne 0 ]; then
        echo "FAIL  $name: llamac train (backend $backend, precision $precision) exited with $rc:"
        sed 's/^/    | /' "$tmp/$name.log"
        failed=1
    fi
    return $rc
}

ckpt() { printf '%s/%s/ckpt/step_%07d.h5' "$tmp" "$1" "$2"; }
metrics() { printf '%s/%s/metrics.jsonl' "$tmp" "$1"; }

case $mode in
losses)
    train cpu cpu fp32 20 && train fp32 cuda fp32 20 && train bf16 cuda bf16 20 || exit 1
    grep -h "llamac train\|^.*step 20/20" "$tmp/fp32.log" "$tmp/bf16.log" | sed 's/^/    /'
    check "fp32 losses = CPU losses within 1e-5 (steps 1-20)" "$compare" losses "$(metrics cpu)" "$(metrics fp32)" 1 20 1e-5
    check "fp32 grad norms = CPU within 1e-4" "$compare" grad_norm "$(metrics cpu)" "$(metrics fp32)" 1 20 1e-4
    check "fp32 parameters after 20 steps = CPU within 1e-4" "$compare" tensors "$(ckpt cpu 20)" "$(ckpt fp32 20)" params 1e-4
    check "bf16 losses = CPU losses within 2% (steps 1-20)" "$compare" losses "$(metrics cpu)" "$(metrics bf16)" 1 20 0.02
    ;;
resume)
    train cpu cpu fp32 10 || exit 1
    # CPU -> CUDA: stopped after step 5 on the CPU, resumed on the GPU backend
    train c2g cpu fp32 10 --set run.stop_after=5 && train c2g cuda fp32 10 || exit 1
    check "CPU checkpoint resumed on CUDA (fp32): losses 6-10 = uninterrupted CPU within 1e-5" \
        "$compare" losses "$(metrics cpu)" "$(metrics c2g)" 6 10 1e-5
    check "resumed on CUDA: parameters at step 10 = CPU within 1e-4" \
        "$compare" tensors "$(ckpt cpu 10)" "$(ckpt c2g 10)" params,adam_m,adam_v 1e-4
    # CUDA -> CPU
    train g2c cuda fp32 10 --set run.stop_after=5 && train g2c cpu fp32 10 || exit 1
    check "CUDA (fp32) checkpoint resumed on the CPU: losses 6-10 = uninterrupted CPU within 1e-5" \
        "$compare" losses "$(metrics cpu)" "$(metrics g2c)" 6 10 1e-5
    # bf16 CUDA -> CPU: the checkpoint holds the fp32 master weights
    train b2c cuda bf16 10 --set run.stop_after=5 && train b2c cpu fp32 10 || exit 1
    check "bf16 CUDA checkpoint resumed on the CPU: losses 6-10 within 2%" \
        "$compare" losses "$(metrics cpu)" "$(metrics b2c)" 6 10 0.02
    grep -h "resumed from" "$tmp"/c2g.log "$tmp"/g2c.log "$tmp"/b2c.log | sed 's/^/    /'
    ;;
*)
    echo "usage: train_cuda.sh losses|resume LLAMAC CKPT_COMPARE SOURCE_DIR DATA_DIR TMP_DIR" >&2
    exit 2
    ;;
esac
exit $failed
