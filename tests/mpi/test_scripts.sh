#!/bin/sh
# The batch scripts end to end: test_scripts.sh slurm|pbs MPI_STOP SOURCE_DIR
#
# Runs launch/slurm.sbatch or launch/pbs.sh with bash (the #SBATCH / #PBS lines are comments then),
# a real mpirun with 4 ranks, tests/mpi/mpi_stop.c as the trainer, and stand-ins for scontrol, qsub,
# qrerun and qstat that record how they were called. Checks, for each script:
#   a signal to the batch shell (Slurm's B:USR1, `qsig -s USR1`, the PBS watchdog) reaches all four
#   ranks through mpirun, they stop after the same step, and the job requeues / resubmits itself;
#   a stop by the trainer's wall-time limit requeues too (Slurm), unless the requeue limit is reached;
#   a finished run (DONE) and a crashed run are not requeued, and a crash keeps its non-zero status;
#   a stale STOPPED from the previous job does not count.
set -u
mode=$1 bin=$2 src=$3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/llamac-scripts.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin"
for c in scontrol qsub qrerun; do
    printf '#!/bin/sh\necho "%s $*" >> "%s/sched.log"\n' "$c" "$tmp" > "$tmp/bin/$c"
    chmod +x "$tmp/bin/$c"
done
cat > "$tmp/bin/qstat" <<'EOF'
#!/bin/sh
echo "Job Id: $2"
echo "    Resource_List.walltime = ${FAKE_WALLTIME:-00:00:08}"
EOF
chmod +x "$tmp/bin/qstat"
PATH="$tmp/bin:$PATH"
export PATH
export LLAMAC_BIN="$bin" LLAMAC_MPIRUN_ARGS="--allow-run-as-root --oversubscribe -np 4" OMP_NUM_THREADS=1
case $mode in
    slurm) script="$src/launch/slurm.sbatch" ;;
    pbs) script="$src/launch/pbs.sh" ;;
    *) echo "test_scripts.sh: mode slurm or pbs" >&2; exit 2 ;;
esac
failed=0

check() {  # check NAME CONDITION...
    name=$1
    shift
    if "$@"; then echo "ok    $name"; else echo "FAIL  $name"; failed=1; fi
}

# mk_run NAME STEPS [KEY=VALUE...]: a run config $tmp/NAME.ini with run_dir $tmp/NAME
mk_run() {
    name=$1 steps=$2
    shift 2
    mkdir -p "$tmp/$name"
    {
        echo "[run]"
        echo "run_dir = $tmp/$name   ; inline comment"
        echo "[train]"
        echo "steps = $steps"
        echo "step_ms = 50"
        for kv in "$@"; do echo "${kv%%=*} = ${kv#*=}"; done
    } > "$tmp/$name.ini"
}

# start NAME: runs the script in the background on NAME.ini (output in NAME.log); pid in $spid
# (always in a subshell: exec, so that $! is the batch shell itself and signals reach it)
run_script() {
    if [ "$mode" = slurm ]; then exec bash "$script" "$tmp/$1.ini"; fi
    LLAMAC_INI="$tmp/$1.ini"
    export LLAMAC_INI
    exec bash "$script"
}
start() {
    : > "$tmp/sched.log"
    run_script "$1" > "$tmp/$1.log" 2>&1 &
    spid=$!
}
# start_piped NAME: the same through a pipe, $spid being the reader: it ends only when every process
# that holds the script's output (a watchdog's sleep left behind, say) has exited.
start_piped() {
    : > "$tmp/sched.log"
    run_script "$1" 2>&1 | cat > "$tmp/$1.log" &
    spid=$!
}

# finish NAME: waits for the script; status in $rc; prints its output
finish() {
    wait "$spid"
    rc=$?
    sed "s/^/    | /" "$tmp/$1.log"
}

wait_for() {  # wait_for FILE SECONDS
    n=0
    while [ ! -e "$1" ] && [ "$n" -lt $(($2 * 10)) ]; do sleep 0.1; n=$((n + 1)); done
    [ -e "$1" ]
}

# All four ranks stopped after the same step, below the last one, each having got signal $2 (0: none).
same_stop() {
    d=$tmp/$1
    [ -f "$d/stop.0" ] && [ -f "$d/stop.1" ] && [ -f "$d/stop.2" ] && [ -f "$d/stop.3" ] || return 1
    first=$(cat "$d/stop.0")
    for r in 1 2 3; do [ "$(cat "$d/stop.$r")" = "$first" ] || return 1; done
    [ "${first#* }" = "$2" ]
}
has() { [ -e "$1" ]; }
hasnt() { [ ! -e "$1" ]; }
logged() { grep -q -e "$2" "$tmp/$1"; }
status_is() { [ "$rc" -eq "$1" ]; }
status_nonzero() { [ "$rc" -ne 0 ]; }
no_sched() { [ ! -s "$tmp/sched.log" ]; }

if [ "$mode" = slurm ]; then
    export SLURM_JOB_ID=4242
    unset SLURM_RESTART_COUNT 2>/dev/null

    echo "== slurm: USR1 to the batch shell"
    mk_run sig 1000
    start sig
    wait_for "$tmp/sig/RUNNING" 30 || echo "the run did not start"
    sleep 0.3
    kill -USR1 "$spid"
    finish sig
    check "exit status 0" status_is 0
    check "STOPPED written, no DONE" sh -c "[ -f '$tmp/sig/STOPPED' ] && [ ! -f '$tmp/sig/DONE' ]"
    check "every rank got SIGUSR1 and stopped after the same step" same_stop sig 10
    check "the trainer logged the reason" logged sig.log "SIGUSR1 received (ranks 0..3)"
    check "requeued: scontrol requeue 4242" logged sched.log "^scontrol requeue 4242$"

    echo "== slurm: the trainer's wall-time limit"
    mk_run wall 1000 wall_limit_s=1
    start wall
    finish wall
    check "exit status 0" status_is 0
    check "all ranks stopped after the same step, no signal" same_stop wall 0
    check "the trainer logged the wall-time limit" logged wall.log "wall-time limit of 1 s reached"
    check "requeued" logged sched.log "^scontrol requeue 4242$"

    echo "== slurm: requeue limit reached"
    rm -f "$tmp/wall/stop."* "$tmp/wall/progress"
    : > "$tmp/sched.log"
    SLURM_RESTART_COUNT=3 LLAMAC_MAX_REQUEUES=3 bash "$script" "$tmp/wall.ini" > "$tmp/wall2.log" 2>&1 &
    spid=$!
    finish wall2
    check "exit status 1" status_is 1
    check "not requeued" no_sched
else
    export PBS_JOBID=77.server PBS_O_WORKDIR="$tmp" LLAMAC_STOP_MARGIN=2 LLAMAC_PBS_SCRIPT="$script"
    unset LLAMAC_WALLTIME PBS_WALLTIME 2>/dev/null

    echo "== pbs: the watchdog stops the run 2 s before an 8 s walltime (from qstat -f)"
    export FAKE_WALLTIME=00:00:08
    mk_run watchdog 1000
    start watchdog
    finish watchdog
    check "exit status 0" status_is 0
    check "STOPPED written, no DONE" sh -c "[ -f '$tmp/watchdog/STOPPED' ] && [ ! -f '$tmp/watchdog/DONE' ]"
    check "every rank got SIGUSR1 and stopped after the same step" same_stop watchdog 10
    check "walltime read from qstat" logged watchdog.log "walltime 8 s"
    check "resubmitted with qsub, restart 1" \
        logged sched.log "^qsub -v LLAMAC_INI=$tmp/watchdog.ini,LLAMAC_RESTART_COUNT=1,.*LLAMAC_PBS_SCRIPT=$script $script\$"

    echo "== pbs: qsig -s USR1 (to the session leader), qrerun"
    mk_run qsig 1000
    export LLAMAC_WALLTIME=1000 LLAMAC_REQUEUE=qrerun
    start qsig
    wait_for "$tmp/qsig/RUNNING" 30 || echo "the run did not start"
    sleep 0.3
    kill -USR1 "$spid"
    finish qsig
    check "exit status 0" status_is 0
    check "every rank got SIGUSR1 and stopped after the same step" same_stop qsig 10
    check "qrerun 77.server" logged sched.log "^qrerun 77.server$"
    unset LLAMAC_REQUEUE
fi

echo "== $mode: a finished run, with a stale STOPPED from the job before"
mk_run done 6
echo 3 > "$tmp/done/progress"
echo 3 > "$tmp/done/STOPPED"
t0=$(date +%s)
start_piped done
finish done
t1=$(date +%s)
check "exit status 0" status_is 0
check "DONE written, stale STOPPED gone" sh -c "[ -f '$tmp/done/DONE' ] && [ ! -f '$tmp/done/STOPPED' ]"
check "resumed at step 3" logged done/RUNNING "^3$"
check "not requeued" no_sched
check "returned promptly (no watchdog left behind): $((t1 - t0)) s" [ $((t1 - t0)) -lt 20 ]

if [ "$mode" = slurm ]; then
    echo "== slurm: run_dir overridden on the command line (--set run.run_dir=...)"
    mk_run cfgdir 1000 wall_limit_s=1
    mkdir -p "$tmp/override"
    : > "$tmp/sched.log"
    bash "$script" "$tmp/cfgdir.ini" --set "run.run_dir=$tmp/override" > "$tmp/override.log" 2>&1 &
    spid=$!
    finish override
    check "the trainer and the script used the override" sh -c "[ -f '$tmp/override/STOPPED' ] && [ ! -e '$tmp/cfgdir/STOPPED' ]"
    check "requeued" logged sched.log "^scontrol requeue 4242$"
fi

echo "== $mode: a crash"
mk_run crash 1000 fail=1
start crash
finish crash
check "non-zero exit status ($rc)" status_nonzero
check "not requeued" no_sched

if [ "$failed" -ne 0 ]; then echo "test_scripts.sh $mode: FAILED"; exit 1; fi
echo "test_scripts.sh $mode: all checks passed"
