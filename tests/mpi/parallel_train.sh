#!/usr/bin/env bash
# `llamac train` under mpirun, end to end (README.md, Distributed training): parallel_train.sh MODE LLAMAC
# CKPT_COMPARE SOURCE_DIR DATA_DIR TMP_DIR, MODE one of
#
#   equiv    the same global batch at (dp, tp) = (1,1), (2,1), (1,2), (2,2), (4,1): the first step's loss
#            and grad norm within 1e-5 of (1,1), every gradient tensor within 1e-5 (||g - g1|| / ||g1||,
#            read from /adam_m and /adam_v of step 1: m = (1 - beta1) c g, v = (1 - beta2) (c g)^2), the
#            parameters after step 1 within 1e-5, and the losses of steps 2..11 within 1e-4.
#   zero1    parallel.zero1 at (2,1) and (2,2): losses, grad norms, and the parameters and both moments
#            of the final checkpoint (which every data-parallel rank writes a shard of) within 1e-5 of the
#            same layout without ZeRO-1; a ZeRO-1 checkpoint of (2,2) resumes at (1,1) without ZeRO-1,
#            and a plain one of (2,1) at (2,2) with ZeRO-1, continuing the curve within 1e-4.
#   reshard  a run stopped after step 5 at (2,2) (run.stop_after) resumes at (2,2), (4,1) and (1,1):
#            the same layout is bit-identical to an uninterrupted (2,2) run (losses and the final
#            checkpoint), the others give its losses within 1e-4.
#   eval     `llamac eval` on checkpoints of a dp 2 run prints the val_loss the run logged at their steps
#            (all 17 digits: both ranks' windows, summed in rank order as the trainer's all-reduce does).
#   sft      fine-tuning data (llamac prep --sft llama2, seq_len 64: packed examples, a loss mask, so that every
#            micro-batch counts another number of targets) at (dp, tp) = (1,1), (2,1), (4,1): the loss is
#            the mean over the targets of the whole global batch, so the first step's loss and grad norm
#            agree within 1e-5 and the losses of steps 2..11 within 1e-4; the same for LoRA adapters
#            (lora.rank 4 on every projection) at (2,1) against (1,1).
#   sigterm  SIGTERM to mpirun mid-run at (2,2): every rank stops after the same step, writes the
#            checkpoint of that step and STOPPED, and exits 0; the run resumed with the same command
#            is bit-identical to an uninterrupted run (GPU ranks: one sequence of 16 tokens per rank
#            and step, the batch that matters being none: only the stop and the resume are compared).
#   xbackend (LLAMAC_PAR_BACKEND=cuda) checkpoints across backends and layouts: a run stopped after step
#            5 at (2,2) on CUDA resumes at (1,1) on the CPU, and one stopped at (1,1) on the CPU resumes
#            at (2,2) on CUDA, both continuing the uninterrupted (2,2) CUDA run within 1e-4.
#
# LLAMAC_PAR_BACKEND=cuda (tests/gpu/tests.cmake: a GPU, or the CPU emulation of CUDA) runs every mode's
# multi-rank runs with run.backend = cuda in fp32 precision, each rank on the GPU of its node-local rank
# (several ranks share one GPU, so the GPU communicators are the host-staged ones: launch/dev_comm.h),
# while the (1,1) reference of equiv stays on the CPU backend: GPU ranks against the CPU single rank.
# The layouts of equiv are then (2,1), (1,2) and (2,2).
#
# The layouts keep one global batch: batch_size 2 per rank, seq_len 32, global_batch_tokens 256, so
# (1,1) and (1,2) accumulate 4 micro-batches, (2,1) and (2,2) 2, (4,1) 1 (with GPU ranks, seq_len 16 and
# 128 tokens: the same micro-batches, at half the emulator's cost). The model is
# tests/configs/tiny_run.ini (4 heads, 2 kv heads, ffn hidden 192: all divisible by tp = 2) on a
# 515-piece tokenizer (the par_data fixture), so tp = 2 pads the vocabulary to 516 and its slices
# differ in size. Clipping at 0.5 acts on every step, so the global gradient norm of each layout is
# part of what is compared.
set -u
backend=${LLAMAC_PAR_BACKEND:-cpu}
mode=$1 llamac=$2 compare=$3 src=$4 data=$5 tmp=$6/par_${backend}_$1
ini=$src/tests/configs/tiny_run.ini
mpirun=(mpirun --allow-run-as-root --oversubscribe)
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
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

# train_args NAME TP [--set K=V...]: the command line of run NAME (into $tmp/NAME) in ${args[@]}; the
# backend is $RUN_BACKEND when set (RUN_BACKEND=cpu train ...), else $backend
train_args() {
    local name=$1 tp=$2
    shift 2
    args=("$llamac" train "$ini" --set data.dir="$data" --set run.run_dir="$tmp/$name"
        --set run.backend="${RUN_BACKEND:-$backend}" --set run.precision=fp32
        --set model.vocab_size=515 --set train.batch_size=2 --set train.seq_len=32
        --set train.global_batch_tokens=256 --set train.steps=11 --set train.eval_every=0
        --set train.ckpt_every=1 --set train.keep_ckpts=100 --set optim.clip=0.5 --set parallel.tp="$tp")
    # GPU ranks run on the CPU emulation of CUDA in CI: sequences of 16 tokens, the same micro-batches
    [ "$backend" = cuda ] && args+=(--set train.seq_len=16 --set train.global_batch_tokens=128)
    args+=("$@")
}

# train NAME DP TP [--set K=V...]: llamac train at (DP, TP) into $tmp/NAME (output in $tmp/NAME.log);
# one rank runs the binary without mpirun (the (1,1) case of the same code). Status in $rc.
train() {
    local name=$1 dp=$2 tp=$3
    shift 3
    local launch=()
    [ $((dp * tp)) -gt 1 ] && launch=("${mpirun[@]}" -np $((dp * tp)))
    train_args "$name" "$tp" "$@"
    "${launch[@]}" "${args[@]}" > "$tmp/$name.log" 2>&1
    rc=$?
    if [ $rc -ne 0 ]; then
        echo "FAIL  $name: llamac train at dp $dp, tp $tp exited with $rc:"
        sed 's/^/    | /' "$tmp/$name.log"
        failed=1
    fi
    return $rc
}

ckpt() { printf '%s/%s/ckpt/step_%07d.h5' "$tmp" "$1" "$2"; }
metrics() { printf '%s/%s/metrics.jsonl' "$tmp" "$1"; }
logged() { grep -q -e "$2" "$tmp/$1"; }
has() { [ -e "$1" ]; }
hasnt() { [ ! -e "$1" ]; }
same_text() { [ "$(cat "$1")" = "$2" ] || { echo "$1: '$(cat "$1")', expected '$2'"; return 1; }; }

# copy_run FROM TO: a copy of a run directory, to resume it elsewhere
copy_run() { rm -rf "$tmp/$2" && cp -r "$tmp/$1" "$tmp/$2"; }

layouts=("2 1" "1 2" "2 2" "4 1")
[ "$backend" = cuda ] && layouts=("2 1" "1 2" "2 2")

case $mode in
equiv)
    RUN_BACKEND=cpu train r11 1 1 || exit 1
    for l in "${layouts[@]}"; do
        set -- $l
        name=r$1$2
        train $name $1 $2 || continue
        echo "== (dp, tp) = ($1, $2) against (1, 1)"
        check "$name: loss of step 1 within 1e-5" "$compare" losses "$(metrics r11)" "$(metrics $name)" 1 1 1e-5
        check "$name: gradient norm of step 1 within 1e-5" "$compare" grad_norm "$(metrics r11)" "$(metrics $name)" 1 1 1e-5
        check "$name: every gradient tensor of step 1 within 1e-5 (adam_m, adam_v)" \
            "$compare" tensors "$(ckpt r11 1)" "$(ckpt $name 1)" adam_m,adam_v 1e-5
        check "$name: parameters after step 1 within 1e-5" "$compare" tensors "$(ckpt r11 1)" "$(ckpt $name 1)" params 1e-5
        check "$name: losses of steps 2..11 within 1e-4" "$compare" losses "$(metrics r11)" "$(metrics $name)" 2 11 1e-4
        check "$name: the banner names the layout" logged $name.log "dp $1 x tp $2"
        [ "$backend" = cuda ] && check "$name: on the CUDA backend, staged GPU communicators" \
            logged $name.log "backend cuda (fp32).*GPU communicators: staged"
    done
    ;;
xbackend)
    [ "$backend" = cuda ] || { echo "xbackend needs LLAMAC_PAR_BACKEND=cuda"; exit 2; }
    train gwhole 2 2 || exit 1
    echo "== saved at (2, 2) on CUDA, resumed at (1, 1) on the CPU"
    train gstop 2 2 --set run.stop_after=5 && copy_run gstop g2c && RUN_BACKEND=cpu train g2c 1 1 &&
        check "resumed on the CPU from the CUDA checkpoint of (2, 2)" logged g2c.log \
            "resumed from .*step_0000005.h5: step 5, .*saved at dp 2, tp 2; now dp 1, tp 1" &&
        check "losses of steps 6..11 within 1e-4 of the uninterrupted CUDA (2, 2) run" \
            "$compare" losses "$(metrics gwhole)" "$(metrics g2c)" 6 11 1e-4 &&
        check "parameters and moments at step 11 within 1e-4" \
            "$compare" tensors "$(ckpt gwhole 11)" "$(ckpt g2c 11)" params,adam_m,adam_v 1e-4
    echo "== saved at (1, 1) on the CPU, resumed at (2, 2) on CUDA"
    RUN_BACKEND=cpu train cstop 1 1 --set run.stop_after=5 && copy_run cstop c2g && train c2g 2 2 &&
        check "resumed on CUDA at (2, 2) from the CPU checkpoint of (1, 1)" logged c2g.log \
            "resumed from .*step_0000005.h5: step 5, .*saved at dp 1, tp 1; now dp 2, tp 2" &&
        check "losses of steps 6..11 within 1e-4 of the uninterrupted CUDA (2, 2) run" \
            "$compare" losses "$(metrics gwhole)" "$(metrics c2g)" 6 11 1e-4 &&
        check "parameters and moments at step 11 within 1e-4" \
            "$compare" tensors "$(ckpt gwhole 11)" "$(ckpt c2g 11)" params,adam_m,adam_v 1e-4
    ;;
zero1)
    for l in "2 1" "2 2"; do
        set -- $l
        train r$1$2 $1 $2 || continue
        train z$1$2 $1 $2 --set parallel.zero1=true || continue
        echo "== (dp, tp) = ($1, $2): ZeRO-1 against plain data parallel"
        check "z$1$2: ZeRO-1 in the banner" logged z$1$2.log "ZeRO-1"
        check "z$1$2: losses of steps 1..11 within 1e-5" "$compare" losses "$(metrics r$1$2)" "$(metrics z$1$2)" 1 11 1e-5
        check "z$1$2: gradient norms of steps 1..11 within 1e-5" \
            "$compare" grad_norm "$(metrics r$1$2)" "$(metrics z$1$2)" 1 11 1e-5
        check "z$1$2: gradients of step 1 within 1e-5" \
            "$compare" tensors "$(ckpt r$1$2 1)" "$(ckpt z$1$2 1)" adam_m,adam_v 1e-5
        check "z$1$2: final parameters and sharded moments within 1e-5" \
            "$compare" tensors "$(ckpt r$1$2 11)" "$(ckpt z$1$2 11)" params,adam_m,adam_v 1e-5
    done
    echo "== a ZeRO-1 checkpoint of (2, 2) resumes at (1, 1)"
    train zstop 2 2 --set parallel.zero1=true --set run.stop_after=5 &&
        copy_run zstop zresume11 && train zresume11 1 1 &&
        check "resumed from the ZeRO-1 checkpoint of dp 2, tp 2" logged zresume11.log \
            "resumed from .*step_0000005.h5: step 5, .*saved at dp 2, tp 2; now dp 1, tp 1" &&
        check "losses of steps 6..11 within 1e-4 of the uninterrupted ZeRO-1 run" \
            "$compare" losses "$(metrics z22)" "$(metrics zresume11)" 6 11 1e-4
    echo "== a checkpoint of plain (2, 1) resumes with ZeRO-1 at (2, 2)"
    copy_run r21 plain5
    rm -f "$tmp"/plain5/ckpt/step_00000{06,07,08,09,10,11}.h5 "$tmp/plain5/DONE"
    echo step_0000005.h5 > "$tmp/plain5/ckpt/latest"
    train plain5 2 2 --set parallel.zero1=true &&
        check "resumed from step 5 of dp 2, tp 1 with ZeRO-1" logged plain5.log \
            "resumed from .*step_0000005.h5: step 5, .*saved at dp 2, tp 1; now dp 2, tp 2" &&
        check "losses of steps 6..11 within 1e-4 of the uninterrupted run" \
            "$compare" losses "$(metrics r21)" "$(metrics plain5)" 6 11 1e-4
    ;;
reshard)
    train whole 2 2 || exit 1
    train stop 2 2 --set run.stop_after=5 || exit 1
    check "the stopped run wrote STOPPED and the checkpoint of step 5" sh -c \
        "[ -f '$tmp/stop/STOPPED' ] && [ ! -f '$tmp/stop/DONE' ] && [ \"\$(cat '$tmp/stop/ckpt/latest')\" = step_0000005.h5 ]"
    check "the checkpoint of step 5 equals the uninterrupted run's" \
        "$compare" tensors "$(ckpt whole 5)" "$(ckpt stop 5)" params,adam_m,adam_v 0
    for l in "2 2" "4 1" "1 1"; do
        set -- $l
        name=resume$1$2
        copy_run stop $name
        train $name $1 $2 || continue
        echo "== saved at (2, 2), resumed at ($1, $2)"
        check "$name: resumed from step 5" logged $name.log "resumed from .*step_0000005.h5: step 5, .*now dp $1, tp $2"
        check "$name: finished (DONE)" has "$tmp/$name/DONE"
        if [ "$1$2" = 22 ]; then
            check "$name: losses of steps 1..11 identical to the uninterrupted run" \
                "$compare" losses "$(metrics whole)" "$(metrics $name)" 1 11 0
            check "$name: final parameters and moments bit-identical" \
                "$compare" tensors "$(ckpt whole 11)" "$(ckpt $name 11)" params,adam_m,adam_v 0
        else
            check "$name: losses of steps 6..11 within 1e-4 of the uninterrupted run" \
                "$compare" losses "$(metrics whole)" "$(metrics $name)" 6 11 1e-4
        fi
    done
    ;;
sft)
    # 300 records "count to N" -> "one two .. N" (N = 1..9): examples of 12 to 30 tokens, 1 to 9 answer words
    awk 'BEGIN { split("one two three four five six seven eight nine", w, " ")
        for (i = 0; i < 300; i++) { n = i % 9 + 1; a = w[1]; for (k = 2; k <= n; k++) a = a " " w[k]
            printf "{\"prompt\": \"count to %d\", \"response\": \"%s\"}\n", n, a } }' > "$tmp/records.jsonl"
    "$llamac" prep --out "$tmp/sftdata" --tokenizer "$data/tokenizer.model" --sft llama2 --val-fraction 0.05 \
        --input task:"$tmp/records.jsonl" --quiet || { echo "FAIL  prep --sft"; exit 1; }
    data=$tmp/sftdata
    w=(--set data.weights= --set train.seq_len=64 --set train.global_batch_tokens=512)  # one source, "task"
    train s11 1 1 "${w[@]}" || exit 1
    check "s11: packed fine-tuning data announced" logged s11.log "examples packed whole into"
    for l in "2 1" "4 1"; do
        set -- $l
        train s$1$2 $1 $2 "${w[@]}" || continue
        echo "== fine-tuning data at (dp, tp) = ($1, $2) against (1, 1)"
        check "s$1$2: loss of step 1 within 1e-5" "$compare" losses "$(metrics s11)" "$(metrics s$1$2)" 1 1 1e-5
        check "s$1$2: gradient norm of step 1 within 1e-5" "$compare" grad_norm "$(metrics s11)" "$(metrics s$1$2)" 1 1 1e-5
        check "s$1$2: every gradient tensor of step 1 within 1e-5" \
            "$compare" tensors "$(ckpt s11 1)" "$(ckpt s$1$2 1)" adam_m,adam_v 1e-5
        check "s$1$2: losses of steps 2..11 within 1e-4" "$compare" losses "$(metrics s11)" "$(metrics s$1$2)" 2 11 1e-4
    done
    lora=("${w[@]}" --set lora.rank=4 --set lora.alpha=8 --set lora.targets=all --set optim.lr=1e-2)
    train l11 1 1 "${lora[@]}" && train l21 2 1 "${lora[@]}" && {
        echo "== LoRA on fine-tuning data at (2, 1) against (1, 1)"
        check "l21: LoRA announced" logged l21.log "LoRA: rank 4"
        check "l21: loss and gradient norm of step 1 within 1e-5" sh -c \
            "'$compare' losses '$(metrics l11)' '$(metrics l21)' 1 1 1e-5 && '$compare' grad_norm '$(metrics l11)' '$(metrics l21)' 1 1 1e-5"
        # B starts at zero, so A has no gradient in step 1: the moments after step 2 hold both
        check "l21: adapter moments after step 2 within 1e-4" "$compare" tensors "$(ckpt l11 2)" "$(ckpt l21 2)" adam_m,adam_v 1e-4
        check "l21: losses of steps 2..11 within 1e-4" "$compare" losses "$(metrics l11)" "$(metrics l21)" 2 11 1e-4
    }
    ;;
sigterm)
    # Open MPI's mpirun (4.1) on SIGTERM aborts the job: SIGCONT to each rank's process group at once,
    # SIGTERM odls_base_sigkill_timeout seconds later (default 1), SIGKILL as long after that, and it
    # exits 1 whatever the ranks did. In that window the ranks finish their step, write the checkpoint
    # and STOPPED and exit 0 without MPI_Finalize (grid_exit_now). record_exit.py records each rank's own
    # exit status (mpirun kills the rest of the job as soon as one process has exited, shell wrappers
    # included). The run logs rarely (log_every) because mpirun stops reading the ranks' output while it
    # aborts: a rank that prints every few milliseconds would block on a full terminal buffer. The
    # window is 20 s, as the batch scripts set it (launch/README.md), and the stop happens under a CPU
    # hog of 4 busy processes on top of the 4 ranks: nothing here depends on how fast the machine is (a
    # 1 s window lost the checkpoint on a machine running three jobs). GPU ranks under the CPU emulation
    # of CUDA run one sequence of 16 tokens per rank and step, about half a second a step for the 4 ranks
    # (and no hog runs beside them): the same 20 s holds some 40 of their steps.
    # mpirun sleeps out its second window after the ranks have exited: the resumed and the uninterrupted
    # runs go meanwhile, and its own status is checked at the end.
    window=20
    export OMPI_MCA_odls_base_sigkill_timeout=$window
    common=(--set train.steps=100000 --set train.ckpt_every=0 --set run.log_every=100000)
    [ "$backend" = cuda ] && common+=(--set train.batch_size=1 --set train.seq_len=16 --set train.global_batch_tokens=32)
    mkdir -p "$tmp/status"
    train_args sig 2 "${common[@]}"
    "${mpirun[@]}" -np 4 python3 "$src/tests/mpi/record_exit.py" "$tmp/status" "${args[@]}" > "$tmp/sig_first.log" 2>&1 &
    pid=$!
    # poll (not a timing assumption: up to 10 minutes) until the run is under way
    for _ in $(seq 6000); do grep -q '"step": 3,' "$tmp/sig/metrics.jsonl" 2>/dev/null && break; sleep 0.1; done
    # the CPU hog once, for the CPU ranks: GPU ranks under the emulator stop through the same code
    hogs=()
    if [ "$backend" = cpu ]; then
        for _ in 1 2 3 4; do sh -c 'while :; do :; done' & hogs+=($!); done
    fi
    kill -TERM $pid
    # until every rank has ended (record_exit.py writes rankR.time last; a rank still running at the end
    # of the second window is killed and recorded as such), bounded by 10 minutes
    for _ in $(seq 6000); do
        [ -e "$tmp/status/rank0.time" ] && [ -e "$tmp/status/rank1.time" ] && [ -e "$tmp/status/rank2.time" ] &&
            [ -e "$tmp/status/rank3.time" ] && break
        sleep 0.1
    done
    for h in "${hogs[@]}"; do kill "$h" 2>/dev/null; wait "$h" 2>/dev/null; done
    for r in 0 1 2 3; do
        check "rank $r: llamac exited 0" same_text "$tmp/status/rank$r" "exit 0"
    done
    stop=$(sed -n 's/^{"step": \([0-9]*\),.*/\1/p' "$tmp/sig/metrics.jsonl" | tail -1)
    check "STOPPED names SIGTERM on all 4 ranks; no DONE" sh -c \
        "grep -q 'SIGTERM received (ranks 0..3)' '$tmp/sig/STOPPED' && [ ! -e '$tmp/sig/DONE' ]"
    [ -n "$stop" ] && [ -e "$tmp/sig/STOPPED" ] || { wait $pid; exit 1; }
    echo "    stopped after step $stop (the last row of metrics.jsonl)"
    check "the checkpoint of step $stop exists and is latest" same_text "$tmp/sig/ckpt/latest" "$(printf 'step_%07d.h5' $stop)"
    check "it is the only checkpoint (ckpt_every = 0)" test "$(ls "$tmp/sig/ckpt" | grep -c '^step_')" = 1
    # resume with the same command (5 more steps), and an uninterrupted run to the same step
    if train sig 2 2 "${common[@]}" --set run.stop_after=5; then
        check "resumed from the checkpoint of step $stop" logged sig.log "resumed from .*$(printf 'step_%07d.h5' $stop): step $stop,"
        if train whole 2 2 "${common[@]}" --set run.stop_after=$((stop + 5)); then
            check "losses of steps 1..$((stop + 5)) identical to the uninterrupted run" \
                "$compare" losses "$(metrics whole)" "$(metrics sig)" 1 $((stop + 5)) 0
            check "parameters and moments at step $((stop + 5)) bit-identical" \
                "$compare" tensors "$(ckpt whole $((stop + 5)))" "$(ckpt sig $((stop + 5)))" params,adam_m,adam_v 0
        fi
    fi
    wait $pid
    rc=$?
    sed 's/^/    | /' "$tmp/sig_first.log"
    echo "mpirun exited with $rc after SIGTERM (Open MPI 4 returns 1 for a job it aborted)"
    check "mpirun's status is 0 or Open MPI's 1 for an aborted job" test $rc -le 1
    if grep -q "stopped at step" "$tmp/sig_first.log"; then
        check "the log line names the step and the signal" logged sig_first.log "stopped at step $stop (SIGTERM received (ranks 0..3)) after a checkpoint"
    else
        echo "    (mpirun did not pass on the ranks' last lines)"
    fi
    ;;
eval)
    # llamac eval on a checkpoint of a dp 2 run reads the windows of both ranks (cli/eval.c), so it
    # prints the validation loss the run logged at that step, to the last digit of metrics.jsonl
    train e21 2 1 --set train.eval_every=5 --set train.eval_batches=3 || exit 1
    for step in 5 10; do
        want=$(sed -n "s/^{\"step\": $step, \"val_loss\": \([^,]*\),.*/\1/p" "$(metrics e21)")
        got=$("$llamac" eval --ckpt "$(ckpt e21 $step)" 2>&1 | sed -n 's/.*\[val_loss \(.*\)\].*/\1/p')
        check "eval of the dp 2 checkpoint of step $step: val_loss '$got', the run logged '$want'" \
            test -n "$want" -a "$got" = "$want"
    done
    ;;
*)
    echo "parallel_train.sh: MODE is equiv, zero1, reshard, sigterm, eval or xbackend" >&2
    exit 2
    ;;
esac
[ $failed -eq 0 ] && echo "parallel_train.sh $mode: all checks passed" || echo "parallel_train.sh $mode: FAILED"
exit $failed
