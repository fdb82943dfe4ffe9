#!/bin/bash
# Checkpoint writes on a full disk and under a file size limit, on the real binary (issue 10).
#
# A small tmpfs is mounted in a private mount namespace (unshare -m; it vanishes with the test) and
# filled with fallocate to many levels of free space. At each level `llamac train` must exit 0 (it fitted)
# or 1 with exactly one stderr line naming the file and "No space left on device" -- never a signal --
# and leave no .tmp file; when a previous checkpoint exists, it and `latest` stay byte-identical and the
# run resumes from them once space is back. Levels run both through the up-front room check and, with
# LLAMAC_CKPT_NO_ROOM_CHECK=1, through the real failing HDF5/MPI-IO writes; one rank, then two under mpirun.
# Then `ulimit -f` (EFBIG, SIGXFSZ ignored) below and above the checkpoint's size.
#
# usage: disk_full.sh LLAMAC INI DATA_DIR TMP
set -u
LLAMAC=$1 INI=$2 DATA=$3 TMP=$4
if [ "${LLAMAC_IN_NS:-}" != 1 ]; then
    if ! unshare -m true 2>/dev/null; then
        echo "SKIP: this sandbox does not allow a mount namespace (unshare -m), so no tmpfs can be filled"
        exit 77
    fi
    LLAMAC_IN_NS=1 exec unshare -m bash "$0" "$@"
fi
W=$TMP/disk_full
rm -rf "$W" && mkdir -p "$W/mnt"
if ! mount -t tmpfs -o size=8m tmpfs "$W/mnt" 2>"$W/mount.err"; then
    echo "SKIP: mount -t tmpfs failed: $(cat "$W/mount.err")"
    exit 77
fi
M=$W/mnt
fails=0 runs=0 crashes=0 clean=0 written=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

train() {  # RUN_DIR STEPS [env...]
    local dir=$1 steps=$2
    shift 2
    env "$@" "$LLAMAC" train "$INI" --set data.dir="$DATA" --set run.run_dir="$dir" --set train.steps="$steps" \
        --set train.eval_every=0 --set train.ckpt_every=2 >"$W/out.txt" 2>"$W/err.txt"
    st=$?
    runs=$((runs + 1))
}

fill_to() {  # leave about $1 KiB free on $M
    rm -f "$M/filler"
    local avail=$(df --output=avail -k "$M" | tail -1)
    local n=$((avail - $1))
    [ $n -gt 0 ] && fallocate -l "${n}k" "$M/filler"
}

check_failure() {  # LEVEL: the last run failed or succeeded cleanly
    local lines=$(wc -l <"$W/err.txt")
    if [ $st -ge 128 ]; then
        crashes=$((crashes + 1))
        fail "$1: killed by signal $((st - 128)): $(head -c 400 "$W/err.txt")"
    elif [ $st -eq 1 ]; then
        clean=$((clean + 1))
        [ "$lines" = 1 ] || fail "$1: $lines stderr lines: $(head -c 600 "$W/err.txt")"
        grep -q "No space left on device" "$W/err.txt" || fail "$1: cause not named: $(cat "$W/err.txt")"
    elif [ $st -ne 0 ]; then
        fail "$1: exit $st: $(cat "$W/err.txt")"
    else
        written=$((written + 1))
    fi
    if [ -n "$(find "$M" -name '*.tmp')" ]; then fail "$1: .tmp left: $(find "$M" -name '*.tmp')"; fi
}

# 1. The first checkpoint of a run (2.0 MB) at free space from 0 to 2.2 MB.
for nrc in "" 1; do
    for kib in 0 8 64 256 700 1200 1700 1900 1960 2000 2100 2200; do
        rm -rf "$M/a"
        fill_to $kib
        train "$M/a" 2 LLAMAC_CKPT_NO_ROOM_CHECK=$nrc
        check_failure "fresh run, ${kib} KiB free, room check ${nrc:-on}"
        if [ $st = 0 ]; then
            [ "$(cat "$M/a/ckpt/latest" 2>/dev/null)" = step_0000002.h5 ] || fail "${kib} KiB: exit 0 without latest"
        fi
    done
done

# 2. A later checkpoint: the previous one and latest stay byte-identical, then the run resumes.
rm -rf "$M/b" "$M/filler"
train "$M/b" 2
[ $st = 0 ] || fail "setting up the previous checkpoint: $(cat "$W/err.txt")"
before=$(md5sum "$M/b/ckpt/step_0000002.h5" "$M/b/ckpt/latest")
for nrc in "" 1; do
    for kib in 0 64 512 1024 1536 1900; do
        fill_to $kib
        train "$M/b" 4 LLAMAC_CKPT_NO_ROOM_CHECK=$nrc
        check_failure "second checkpoint, ${kib} KiB free, room check ${nrc:-on}"
        [ $st = 1 ] || fail "second checkpoint, ${kib} KiB free: expected a failure, got exit $st"
        grep -q "^llamac train: $M/b/" "$W/err.txt" || fail "${kib} KiB: the line names no file of the run: $(cat "$W/err.txt")"
        [ "$(md5sum "$M/b/ckpt/step_0000002.h5" "$M/b/ckpt/latest")" = "$before" ] ||
            fail "${kib} KiB: the previous checkpoint or latest changed"
        [ ! -e "$M/b/ckpt/step_0000004.h5" ] || fail "${kib} KiB: a step 4 file was published"
    done
done
rm -f "$M/filler"
train "$M/b" 4
[ $st = 0 ] && grep -q "resumed from $M/b/ckpt/step_0000002.h5: step 2" "$W/out.txt" ||
    fail "resume once space is back: exit $st: $(cat "$W/err.txt")"

# 3. Two ranks (mpirun -np 2: dp 2, each rank writing its part of the checkpoint collectively): the same
# at several fill levels, through the room check and through the failing MPI-IO writes. mpirun -q prints
# none of its own lines, so stderr holds what llamac says: one line, from rank 0.
mpirun=(mpirun --allow-run-as-root --oversubscribe -q -np 2 -x OMP_NUM_THREADS=1 -x LLAMAC_CKPT_NO_ROOM_CHECK)
train2() {  # STEPS: llamac train on two ranks in $M/c
    "${mpirun[@]}" "$LLAMAC" train "$INI" --set data.dir="$DATA" --set run.run_dir="$M/c" --set train.steps="$1" \
        --set train.eval_every=0 --set train.ckpt_every=2 >"$W/out.txt" 2>"$W/err.txt"
    st=$?
    runs=$((runs + 1))
}
rm -rf "$M/a" "$M/b" "$M/c" "$M/filler"  # the 8 MB tmpfs to this run alone
export LLAMAC_CKPT_NO_ROOM_CHECK=
train2 2
[ $st = 0 ] && grep -q "dp 2 x tp 1" "$W/out.txt" || fail "two ranks, the previous checkpoint: exit $st: $(cat "$W/err.txt")"
before=$(md5sum "$M/c/ckpt/step_0000002.h5" "$M/c/ckpt/latest")
for nrc in "" 1; do
    for kib in 0 256 1024 1900; do
        fill_to $kib
        LLAMAC_CKPT_NO_ROOM_CHECK=$nrc train2 4
        check_failure "two ranks, ${kib} KiB free, room check ${nrc:-on}"
        [ $st = 1 ] || fail "two ranks, ${kib} KiB free: expected a failure, got exit $st"
        grep -q "^llamac train: $M/c/" "$W/err.txt" || fail "two ranks, ${kib} KiB: the line names no file of the run: $(cat "$W/err.txt")"
        [ "$(md5sum "$M/c/ckpt/step_0000002.h5" "$M/c/ckpt/latest")" = "$before" ] ||
            fail "two ranks, ${kib} KiB: the previous checkpoint or latest changed"
        [ ! -e "$M/c/ckpt/step_0000004.h5" ] || fail "two ranks, ${kib} KiB: a step 4 file was published"
    done
done
rm -f "$M/filler"
train2 4
[ $st = 0 ] && grep -q "resumed from $M/c/ckpt/step_0000002.h5: step 2" "$W/out.txt" ||
    fail "two ranks, resume once space is back: exit $st: $(cat "$W/err.txt")"
rm -rf "$M/c"

# 4. A file size limit (ulimit -f): EFBIG, one line; a model whose checkpoint is 20.9 MB (Open MPI's own
# start-up needs limits above a few MB, so the tiny model's 2 MB checkpoint cannot be used here).
big="--set model.dim=256 --set model.n_heads=8 --set model.n_kv_heads=4"
for lim in 8000 20600 21500; do
    rm -rf "$W/f"
    (ulimit -f $lim; "$LLAMAC" train "$INI" --set data.dir="$DATA" --set run.run_dir="$W/f" --set train.steps=2 \
        --set train.eval_every=0 $big >"$W/out.txt" 2>"$W/err.txt")
    st=$?
    runs=$((runs + 1))
    if [ $lim = 21500 ]; then
        [ $st = 0 ] || fail "ulimit -f $lim: the 20.9 MB checkpoint fits, got exit $st: $(cat "$W/err.txt")"
    else
        [ $st = 1 ] && [ "$(wc -l <"$W/err.txt")" = 1 ] && grep -q "cannot write checkpoint: File too large" "$W/err.txt" ||
            fail "ulimit -f $lim: exit $st: $(head -c 600 "$W/err.txt")"
    fi
    [ -z "$(find "$W/f" -name '*.tmp')" ] || fail "ulimit -f $lim: .tmp left"
done

echo "disk_full: $runs runs of llamac train: $clean clean one-line failures, $written fitted, $crashes crashes, $fails failed checks"
[ $fails = 0 ]
