#!/usr/bin/env bash
# The GPU-machine checks of GPU training under mpirun (launch/README.md, GPU training), for
# scripts/gpu-check.sh to call on a machine with one GPU (an H200):
#
#   bash tests/gpu/multirank_check.sh BUILD_DIR [TMP_DIR]
#
# BUILD_DIR is a real CUDA build (cmake -DLLAMAC_CUDA=ON) with its tests built. Exit 77 without a GPU,
# 1 when a check fails. It takes about 5 minutes on an H200 (most of it the 7B model's random init).
#
#   1. ctest -L gpu for the multi-rank GPU tests: the device communicators against MPI (mpi_dev_comm_*),
#      `llamac train` with 2 and 4 ranks on the GPU against the CPU single rank, ZeRO-1, checkpoints
#      across backends and SIGTERM (par_cuda_*), and the memory plan against cudaMemGetInfo at one rank
#      (gpu_memory). All ranks share the one GPU, so the communicators are the host-staged ones.
#   2. 2 ranks sharing the GPU through the staged path equal 1 rank on the GPU: (2,1) and (1,2) in fp32
#      against (1,1) on the GPU, step 1 within 1e-5 (loss, every gradient), steps 2..11 within 1e-4.
#   3. a llama-7b-shaped model (dim 4096, 32 layers, 32 heads, ffn 11008; the test tokenizer's 515-piece
#      vocabulary) takes two bf16 training steps on the GPU with recomputation (batch 1 x 2048): the
#      bytes in use after step 1 (cudaMemGetInfo) within 10% of `llamac inspect --backend cuda`'s plan.
#      The run is stopped after step 2 (SIGKILL): its final checkpoint (80 GB) would not fit the disk.
#   4. llama-65b-shaped at one rank: refused before any allocation with one line naming the shortfall.
#
# NCCL (several GPUs, one rank each) cannot run on a one-GPU machine: the build compiles and links it
# (CMake prints "llamac: NCCL: ON"), step 1 above runs every line of launch/dev_comm.cu above the
# transport, and the NCCL primitives themselves stay unrun here.
set -u
build=$(cd "${1:?usage: multirank_check.sh BUILD_DIR [TMP_DIR]}" && pwd)
tmp=${2:-$build/tests/tmp}/multirank_check
src=$(cd "$(dirname "$0")/../.." && pwd)
llamac=$build/llamac compare=$build/tests/ckpt_compare
mpirun=(mpirun --allow-run-as-root --oversubscribe)
export OMP_NUM_THREADS=4 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
"$build/tests/gpu_probe" > /dev/null || { echo "multirank_check.sh: no GPU: skipped"; exit 77; }
# MULTIRANK_DRY=1 with an emulated build runs steps 2 and 4 only, to check this script without a GPU
dry=0
if grep -q "LLAMAC_CUDA_EMU:.*=ON\|LLAMAC_CUDA:STRING=EMU" "$build/CMakeCache.txt"; then
    [ "${MULTIRANK_DRY:-0}" = 1 ] || { echo "multirank_check.sh: $build is the CPU emulation; give a real CUDA build"; exit 2; }
    dry=1
fi
rm -rf "$tmp"
mkdir -p "$tmp"
failed=0
ok() { echo "ok    $*"; }
fail() { echo "FAIL  $*"; failed=1; }
check() {
    local name=$1
    shift
    local out
    out=$("$@" 2>&1)
    local rc=$?
    [ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/    /'
    [ $rc -eq 0 ] && ok "$name" || fail "$name"
}

echo "== 1. multi-rank GPU tests (ctest -L gpu)"
[ $dry = 1 ] && echo "    (dry run: skipped)" || (cd "$build" && ctest -L gpu -R "mpi_dev_comm|par_cuda_|gpu_memory" --output-on-failure) > "$tmp/ctest.log" 2>&1
rc=$?
if [ $dry = 0 ]; then
    grep -E "Test +#|tests passed|tests failed" "$tmp/ctest.log" | sed 's/^/    /'
    [ $rc -eq 0 ] && ok "ctest -L gpu (multi-rank)" || fail "ctest -L gpu (multi-rank): see $tmp/ctest.log"
fi
data=$build/tests/tmp/par_data
[ -d "$data" ] || { fail "no test data in $data (the par_data fixture)"; exit 1; }

echo "== 2. 2 ranks sharing the GPU (staged) against 1 rank on the GPU"
run() {  # run NAME DP TP [--set ...]
    local name=$1 dp=$2 tp=$3
    shift 3
    local launch=()
    [ $((dp * tp)) -gt 1 ] && launch=("${mpirun[@]}" -np $((dp * tp)))
    "${launch[@]}" "$llamac" train "$src/tests/configs/tiny_run.ini" --set data.dir="$data" --set run.run_dir="$tmp/$name" \
        --set model.vocab_size=515 --set train.batch_size=2 --set train.seq_len=32 --set train.global_batch_tokens=256 \
        --set train.steps=11 --set train.eval_every=0 --set train.ckpt_every=1 --set train.keep_ckpts=100 \
        --set optim.clip=0.5 --set run.backend=cuda --set run.precision=fp32 --set parallel.tp="$tp" "$@" \
        > "$tmp/$name.log" 2>&1 || { fail "$name: llamac train exited with $?"; tail -20 "$tmp/$name.log"; return 1; }
}
m() { echo "$tmp/$1/metrics.jsonl"; }
c1() { printf '%s/%s/ckpt/step_0000001.h5' "$tmp" "$1"; }
if run g11 1 1; then
    for l in "2 1" "1 2"; do
        set -- $l
        run g$1$2 $1 $2 || continue
        grep -h "GPU communicators" "$tmp/g$1$2.log" | sed 's/^/    /'
        check "g$1$2: step-1 loss within 1e-5 of one GPU rank" "$compare" losses "$(m g11)" "$(m g$1$2)" 1 1 1e-5
        check "g$1$2: every gradient of step 1 within 1e-5" "$compare" tensors "$(c1 g11)" "$(c1 g$1$2)" adam_m,adam_v 1e-5
        check "g$1$2: losses of steps 2..11 within 1e-4" "$compare" losses "$(m g11)" "$(m g$1$2)" 2 11 1e-4
        check "g$1$2: staged communicators" grep -q "GPU communicators: staged" "$tmp/g$1$2.log"
    done
fi

seven=(--set model.dim=4096 --set model.n_layers=32 --set model.n_heads=32 --set model.n_kv_heads=32
    --set model.ffn_hidden=11008 --set model.vocab_size=515 --set model.max_seq_len=2048)
cat > "$tmp/7b.ini" <<INI
[model]
name = llama-7b-shaped
dim = 4096
n_layers = 32
n_heads = 32
n_kv_heads = 32
ffn_hidden = 11008
vocab_size = 515
max_seq_len = 2048
INI

echo "== 3. a llama-7b-shaped model: two training steps on one GPU with recomputation"
if [ $dry = 1 ]; then
    echo "    (dry run: skipped)"
else
    "$llamac" inspect --model "$tmp/7b.ini" --backend cuda --batch 1 --seq 2048 --recompute | sed 's/^/    /'
    "$llamac" train "$src/tests/configs/tiny_run.ini" --set data.dir="$data" --set run.run_dir="$tmp/7b" "${seven[@]}" \
        --set train.batch_size=1 --set train.seq_len=2048 --set train.global_batch_tokens=2048 --set train.steps=3 \
        --set train.eval_every=0 --set train.ckpt_every=0 --set run.recompute=true --set run.backend=cuda \
        --set run.precision=bf16 > "$tmp/7b.log" 2>&1 &
    pid=$!
    for _ in $(seq 1800); do
        grep -q "step 2/3" "$tmp/7b.log" 2>/dev/null && break
        kill -0 $pid 2>/dev/null || break
        sleep 1
    done
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    sed 's/^/    | /' "$tmp/7b.log" | grep -v "^    | \[" | head -20
    if grep -q "step 2/3" "$tmp/7b.log"; then
        ok "llama-7b-shaped: two training steps (bf16, recompute, batch 1 x 2048)"
        line=$(grep "GPU memory:" "$tmp/7b.log")
        used=$(sed -n 's/.*(cudaMemGetInfo): \([0-9.]*\) MiB; planned.*/\1/p' <<< "$line")
        planned=$(sed -n 's/.*planned \([0-9.]*\) MiB.*/\1/p' <<< "$line")
        check "llama-7b-shaped: GPU memory in use within 10% of the plan" python3 -c "
u, p = $used, $planned
print('in use %.1f MiB, planned %.1f MiB: %+.2f%%' % (u, p, 100 * (u - p) / p))
raise SystemExit(abs(u - p) > 0.1 * p)"
    else
        fail "llama-7b-shaped: no second step"
    fi
fi

echo "== 4. llama-65b-shaped at one rank: refused with one line"
"$llamac" train "$src/tests/configs/tiny_run.ini" --set data.dir="$data" --set run.run_dir="$tmp/65b" \
    --set model.dim=8192 --set model.n_layers=80 --set model.n_heads=64 --set model.n_kv_heads=64 \
    --set model.ffn_hidden=22016 --set model.vocab_size=515 --set model.max_seq_len=2048 --set train.batch_size=1 \
    --set train.seq_len=2048 --set train.global_batch_tokens=2048 --set train.steps=2 --set run.backend=cuda \
    > "$tmp/65b.log" 2>&1
rc=$?
sed 's/^/    | /' "$tmp/65b.log"
[ $rc -ne 0 ] && grep -q "^llamac train: GPU memory: dp 1 x tp 1 needs .* GiB per GPU .* short; no layout of these ranks fits" \
    "$tmp/65b.log" && ok "llama-65b-shaped refused: one line with the shortfall" || fail "llama-65b-shaped refusal"

[ $failed -eq 0 ] && echo "multirank_check.sh: all checks passed" || echo "multirank_check.sh: FAILED"
exit $failed
