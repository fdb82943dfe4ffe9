#!/bin/bash
# Write and sync failures other than a full disk, on the real binary (issue 10): EIO (a failing disk or
# network file system) and EDQUOT (a quota), injected by tests/harden/failio.c (LD_PRELOAD) into the files
# under one path, at many points of a checkpoint and of `llamac prep`.
#
# A checkpoint that fails must end `llamac train` with exit 1 and exactly one stderr line naming the file
# and the cause ("Input/output error", "Disk quota exceeded"), never a signal; the previous checkpoint and
# `latest` stay byte-identical, no .tmp is left, and the run resumes from them once the disk is well.
# Points: the checkpoint's data and metadata writes after 0 B .. 1.9 MB (of 2.0 MB), the write of `latest`,
# and every fsync in turn (the run's own files, OMPIO's sync, fs_publish's file and directory syncs) until
# the run gets through. A `prep` over an existing output that fails leaves that output byte-identical and
# no .prep-tmp/.prep-old directory behind (data/prep.c, move_into_place puts the old items back).
#
# usage: io_errors.sh LLAMAC FAILIO_SO INI DATA_DIR TMP
set -u
LLAMAC=$1 FAILIO=$2 INI=$3 DATA=$4 TMP=$5
W=$TMP/io_errors
rm -rf "$W" && mkdir -p "$W"
fails=0 runs=0 crashes=0 refused=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
export OMP_NUM_THREADS=1
R=$W/run

train() {  # STEPS [env...]: llamac train under failio with the given FAILIO_* settings
    local steps=$1
    shift
    rm -f "$W/injected"
    env FAILIO_LOG="$W/injected" "$@" "$LLAMAC" train "$INI" --set data.dir="$DATA" --set run.run_dir="$R" \
        --set train.steps="$steps" --set train.eval_every=0 --set train.ckpt_every=2 >"$W/out.txt" 2>"$W/err.txt"
    st=$?
    runs=$((runs + 1))
}

# WHAT CAUSE: the last run failed cleanly: exit 1, one line naming a file of the run and the cause, a failure
# was injected, the previous checkpoint and latest unchanged, no .tmp left
expect_clean_failure() {
    local what=$1 cause=$2 lines
    lines=$(wc -l <"$W/err.txt")
    if [ $st -ge 128 ]; then
        crashes=$((crashes + 1))
        fail "$what: killed by signal $((st - 128)): $(head -c 600 "$W/err.txt")"
        return
    fi
    [ -s "$W/injected" ] || fail "$what: no failure was injected (failio matched no call)"
    if [ $st = 1 ] && [ "$lines" = 1 ]; then refused=$((refused + 1)); else fail "$what: exit $st, $lines stderr lines: $(head -c 600 "$W/err.txt")"; fi
    grep -q "^llamac train: $R/" "$W/err.txt" || fail "$what: the line names no file of the run: $(cat "$W/err.txt")"
    grep -q "$cause" "$W/err.txt" || fail "$what: the cause ($cause) is not named: $(cat "$W/err.txt")"
    [ "$(md5sum "$R/ckpt/step_0000002.h5" "$R/ckpt/latest")" = "$before" ] || fail "$what: the previous checkpoint or latest changed"
    [ -z "$(find "$R" -name '*.tmp')" ] || fail "$what: .tmp left: $(find "$R" -name '*.tmp')"
}

# 1. The checkpoint of step 4, after the one of step 2, fails at every kind of write.
train 2
[ $st = 0 ] || fail "setting up the step-2 checkpoint: exit $st: $(cat "$W/err.txt")"
before=$(md5sum "$R/ckpt/step_0000002.h5" "$R/ckpt/latest")
cp "$R/ckpt/step_0000002.h5" "$W/step2.copy"
for e in "EIO:Input/output error" "EDQUOT:Disk quota exceeded"; do
    errno=${e%%:*} cause=${e#*:}
    for after in 0 1 512 8192 262144 1048576 1900000; do
        train 4 LD_PRELOAD="$FAILIO" FAILIO_PREFIX="$R/ckpt/step_" FAILIO_ERRNO=$errno FAILIO_AFTER=$after
        expect_clean_failure "$errno after $after bytes of the checkpoint" "$cause"
        [ ! -e "$R/ckpt/step_0000004.h5" ] || fail "$errno after $after bytes: a step-4 checkpoint was published"
    done
    # the checkpoint is whole and renamed, then `latest` cannot be written: latest still names step 2
    train 4 LD_PRELOAD="$FAILIO" FAILIO_PREFIX="$R/ckpt/latest" FAILIO_ERRNO=$errno
    expect_clean_failure "$errno writing latest" "$cause"
    grep -q "ckpt/latest" "$W/err.txt" || fail "$errno writing latest: latest not named: $(cat "$W/err.txt")"
    rm -f "$R/ckpt/step_0000004.h5"
done

# 2. Once the disk is well, the run resumes from the step-2 checkpoint and finishes.
train 4
[ $st = 0 ] && grep -q "resumed from $R/ckpt/step_0000002.h5: step 2" "$W/out.txt" ||
    fail "resume after the failures: exit $st: $(cat "$W/err.txt")"
rm -f "$R/ckpt/step_0000004.h5"
printf 'step_0000002.h5\n' >"$R/ckpt/latest"

# 3. Every fsync of the run in turn fails with EIO (skip = how many pass first), until one run gets through.
# Before the checkpoint is published a failure leaves the step-2 one as it was; after it, DONE that cannot
# be written is an error too (the batch scripts read it), with latest naming the new checkpoint; only the
# loss picture is a warning (exit 0, one line).
sync_points=0 plot_points=0
for skip in $(seq 0 40); do
    train 4 LD_PRELOAD="$FAILIO" FAILIO_PREFIX="$R" FAILIO_CALLS=fsync FAILIO_SKIP=$skip
    [ -n "${IO_ERRORS_VERBOSE:-}" ] && echo "fsync $((skip + 1)): exit $st: $(cat "$W/injected" 2>/dev/null): $(cat "$W/err.txt")"
    if [ ! -s "$W/injected" ]; then break; fi
    if grep -q "loss.png" "$W/err.txt"; then
        [ $st = 0 ] && [ "$(wc -l <"$W/err.txt")" = 1 ] && grep -q "loss.png.*Input/output error" "$W/err.txt" ||
            fail "fsync number $((skip + 1)), loss.png: exit $st: $(head -c 600 "$W/err.txt")"
        plot_points=$((plot_points + 1))
    elif grep -q "/DONE\|latest: cannot sync its directory" "$W/err.txt"; then
        # after latest was renamed into place: it names the new checkpoint, which is whole; step 2 is kept
        [ $st = 1 ] && [ "$(wc -l <"$W/err.txt")" = 1 ] && grep -q "^llamac train: $R/.*Input/output error" "$W/err.txt" ||
            fail "fsync number $((skip + 1)): exit $st: $(head -c 600 "$W/err.txt")"
        [ "$(cat "$R/ckpt/latest")" = step_0000004.h5 ] && [ -s "$R/ckpt/step_0000004.h5" ] ||
            fail "fsync number $((skip + 1)) failed after latest was published, but latest does not name the new checkpoint"
        [ "$(md5sum <"$R/ckpt/step_0000002.h5")" = "$(md5sum <"$W/step2.copy")" ] || fail "fsync number $((skip + 1)): step 2 changed"
        [ -z "$(find "$R" -name '*.tmp')" ] || fail "fsync number $((skip + 1)): .tmp left"
        sync_points=$((sync_points + 1))
    else
        expect_clean_failure "fsync number $((skip + 1))" "Input/output error"
        sync_points=$((sync_points + 1))
    fi
    rm -f "$R/ckpt/step_0000004.h5" "$R/DONE"
    printf 'step_0000002.h5\n' >"$R/ckpt/latest"
done
[ $st = 0 ] && [ "$(cat "$R/ckpt/latest")" = step_0000004.h5 ] || fail "no run got through every fsync (41 tried)"
[ $sync_points -ge 6 ] || fail "only $sync_points fsync points failed a run (the checkpoint alone has more)"

# 4. prep over an existing output: write failures (EIO, EDQUOT) and every fsync in turn; the old output
# stays as it was.
P=$W/prep
mkdir -p "$P"
python3 - "$P" <<'EOF'
import json, sys
for name, n in (("a", 40), ("b", 50)):
    with open("%s/%s.jsonl" % (sys.argv[1], name), "w") as f:
        for i in range(n):
            f.write(json.dumps({"text": "document %d of %s: %s" % (i, name, "some words " * (i % 6 + 1))}) + "\n")
EOF
prep() {  # INPUT [env...]
    local input=$1
    shift
    rm -f "$W/injected"
    env FAILIO_LOG="$W/injected" "$@" "$LLAMAC" prep --out "$P/out" --tokenizer "$DATA/tokenizer.model" \
        --input en:"$P/$input.jsonl" --quiet --val-fraction 0.1 --threads 1 >"$W/out.txt" 2>"$W/err.txt"
    st=$?
    runs=$((runs + 1))
}
snapshot() { (cd "$P/out" && find . -type f | sort | xargs md5sum); }
expect_prep_failure() {  # WHAT CAUSE
    local lines
    lines=$(wc -l <"$W/err.txt")
    [ $st -lt 128 ] || { crashes=$((crashes + 1)); fail "prep, $1: killed by signal $((st - 128))"; }
    [ -s "$W/injected" ] || fail "prep, $1: no failure was injected"
    if [ $st = 1 ] && [ "$lines" = 1 ]; then refused=$((refused + 1)); else fail "prep, $1: exit $st, $lines stderr lines: $(head -c 600 "$W/err.txt")"; fi
    grep -q "^llamac prep: $P/out/.*$2" "$W/err.txt" || fail "prep, $1: the file or the cause ($2) is not named: $(cat "$W/err.txt")"
    [ "$(snapshot)" = "$old" ] || fail "prep, $1: the previous output changed"
    [ -z "$(ls -A "$P/out" | grep '^\.prep-')" ] || fail "prep, $1: left $(ls -A "$P/out" | grep '^\.prep-')"
}
prep a
[ $st = 0 ] || fail "prep a: exit $st: $(cat "$W/err.txt")"
old=$(snapshot)
for e in "EIO:Input/output error" "EDQUOT:Disk quota exceeded"; do
    for after in 0 4096 30000; do
        prep b LD_PRELOAD="$FAILIO" FAILIO_PREFIX="$P/out/" FAILIO_ERRNO=${e%%:*} FAILIO_AFTER=$after
        expect_prep_failure "${e%%:*} after $after bytes" "${e#*:}"
    done
done
prep_points=0
for skip in $(seq 0 30); do
    prep b LD_PRELOAD="$FAILIO" FAILIO_PREFIX="$P/out/" FAILIO_CALLS=fsync FAILIO_SKIP=$skip
    if [ $st = 0 ] && [ ! -s "$W/injected" ]; then break; fi
    expect_prep_failure "fsync number $((skip + 1))" "Input/output error"
    prep_points=$((prep_points + 1))
done
[ $st = 0 ] && [ "$(snapshot)" != "$old" ] || fail "prep b never got through every fsync (31 tried)"
[ $prep_points -ge 8 ] || fail "only $prep_points fsync points failed prep (shards, tokenizer, manifest and the move have more)"
"$LLAMAC" prep --verify "$P/out" --quiet >/dev/null 2>&1 || fail "the output prep b published does not verify"

echo "io_errors: $runs runs: $refused clean one-line failures ($sync_points fsync points of a run, $plot_points of its" \
    "loss picture (a warning), $prep_points of prep), $crashes crashes, $fails failed checks"
[ $fails = 0 ]
