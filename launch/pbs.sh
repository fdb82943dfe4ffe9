#!/bin/bash
# llamac training under PBS (PBS Pro / OpenPBS / Torque), stopped before the walltime and resubmitted
# until the run is finished.
#
#   qsub -v LLAMAC_INI=RUN.ini launch/pbs.sh
#   qsub -v LLAMAC_INI=RUN.ini,LLAMAC_ARGS="--set optim.lr=1e-4" launch/pbs.sh
#
# Contract with `llamac train` (the same as launch/slurm.sbatch; keep both sides in step):
#   - On SIGUSR1, SIGTERM or SIGINT, or when its wall-time limit passes, the trainer finishes the step
#     it is in, writes a checkpoint, creates RUN_DIR/STOPPED and exits 0 ("stopped early").
#   - When the last step is done it writes the final checkpoint, creates RUN_DIR/DONE, exits 0.
#   - Any other exit (non-zero status, or 0 without either marker) is a failure.
#   - It resumes from RUN_DIR/latest by itself, so the next job simply runs the same command again.
# This script removes a stale STOPPED before it starts the trainer, then after the trainer exits:
#   DONE              -> exit 0, nothing more
#   STOPPED, status 0 -> submit this script again with the same settings (at most LLAMAC_MAX_REQUEUES
#                        times), exit 0
#   anything else     -> exit with the trainer's status (no resubmission: a crash would crash again)
#
# Signals: PBS has no early warning. At the walltime it sends SIGTERM to the job, then SIGKILL after
# the queue's kill_delay (often 10 s or so): too late to checkpoint. So this script keeps a watchdog
# that sends itself USR1 LLAMAC_STOP_MARGIN seconds (default 300) before the walltime; the trap
# forwards USR1 to mpirun (in the background, so that bash can run the trap), and mpirun passes it to
# every rank. To stop a job by hand and let it resubmit: `qsig -s USR1 JOBID` (PBS signals the
# session leader, this shell). A TERM is forwarded too, for what it is worth.
#
# The walltime comes from $LLAMAC_WALLTIME (seconds), else $PBS_WALLTIME (Torque), else
# `qstat -f $PBS_JOBID` (Resource_List.walltime). Resubmission uses qsub from the compute node; set
# LLAMAC_REQUEUE=qrerun where qsub is not available there and users may rerun their own jobs.
#
# Where RUN_DIR comes from: $LLAMAC_RUN_DIR, else `--set run.run_dir=...` in LLAMAC_ARGS, else run_dir
# in the [run] section of the INI (relative paths are relative to the submission directory).
#
# Environment: LLAMAC_BIN (default: llamac on PATH), LLAMAC_MPIRUN (default: mpirun),
# LLAMAC_MPIRUN_ARGS, LLAMAC_MAX_REQUEUES (default 100), LLAMAC_RESTART_COUNT (set by the script on
# resubmission), LLAMAC_PBS_SCRIPT (the script to resubmit; default: this file).
#
#PBS -N llamac
#PBS -l select=1:ncpus=32:mpiprocs=8
#PBS -l walltime=24:00:00
#PBS -j oe
#PBS -r y

set -u

log() { echo "[llamac-pbs $(date '+%F %T')] $*"; }

[ -n "${PBS_O_WORKDIR:-}" ] && cd "$PBS_O_WORKDIR"
INI=${LLAMAC_INI:-${1:-}}
if [ -z "$INI" ]; then
    echo "usage: qsub -v LLAMAC_INI=RUN.ini launch/pbs.sh" >&2
    exit 2
fi
if [ ! -f "$INI" ]; then
    echo "llamac-pbs: run config '$INI' not found (relative to $(pwd))" >&2
    exit 2
fi
# shellcheck disable=SC2206  # LLAMAC_ARGS is a list of words
ARGS=(${LLAMAC_ARGS:-})

# ini_get FILE SECTION KEY: the value of KEY in [SECTION] (inline ; comments and spaces stripped).
ini_get() {
    awk -v want="[$2]" -v key="$3" '
        /^[ \t]*[;#]/ { next }
        /^[ \t]*\[/ { sec = $0; gsub(/[ \t]/, "", sec); next }
        sec == want && index($0, "=") {
            k = substr($0, 1, index($0, "=") - 1); gsub(/^[ \t]+|[ \t]+$/, "", k)
            if (k != key) next
            v = substr($0, index($0, "=") + 1); sub(/[ \t]+;.*$/, "", v); gsub(/^[ \t]+|[ \t]+$/, "", v)
            print v; exit
        }' "$1"
}

# hms_to_s [[HH:]MM:]SS -> seconds
hms_to_s() { echo "$1" | awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; print int(s) }'; }

RUN_DIR=${LLAMAC_RUN_DIR:-}
if [ -z "$RUN_DIR" ]; then
    prev=""
    for a in ${ARGS[@]+"${ARGS[@]}"}; do  # the last of --set run.run_dir=X / --set=run.run_dir=X wins
        case $prev in --set) case $a in run.run_dir=*) RUN_DIR=${a#run.run_dir=} ;; esac ;; esac
        case $a in --set=run.run_dir=*) RUN_DIR=${a#--set=run.run_dir=} ;; esac
        prev=$a
    done
fi
[ -z "$RUN_DIR" ] && RUN_DIR=$(ini_get "$INI" run run_dir)
if [ -z "$RUN_DIR" ]; then
    echo "llamac-pbs: $INI has no run_dir in [run] (set it, or pass LLAMAC_RUN_DIR)" >&2
    exit 2
fi
mkdir -p "$RUN_DIR"
rm -f "$RUN_DIR/STOPPED"

walltime=${LLAMAC_WALLTIME:-${PBS_WALLTIME:-}}
if [ -z "$walltime" ] && [ -n "${PBS_JOBID:-}" ] && command -v qstat >/dev/null; then
    wt=$(qstat -f "$PBS_JOBID" 2>/dev/null | awk -F= '/Resource_List.walltime/ { gsub(/ /, "", $2); print $2; exit }')
    [ -n "$wt" ] && walltime=$(hms_to_s "$wt")
fi
margin=${LLAMAC_STOP_MARGIN:-300}
restarts=${LLAMAC_RESTART_COUNT:-0}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${NCPUS:-1}}
# A SIGTERM to mpirun (the scheduler's, or scancel/qdel) reaches the ranks after Open MPI's SIGKILL delay
# and they are killed as long after that: the delay must hold one step plus one checkpoint (the log's
# "checkpoint: ... (X s)" line), and 2 x delay must stay below the scheduler's grace time (Slurm's
# KillWait, 30 s by default; PBS's kill_delay). launch/README.md, "Stopping and resuming".
export OMPI_MCA_odls_base_sigkill_timeout=${OMPI_MCA_odls_base_sigkill_timeout:-10}
log "job ${PBS_JOBID:-?} (restart $restarts, walltime ${walltime:-unknown} s): ${LLAMAC_MPIRUN:-mpirun} ${LLAMAC_MPIRUN_ARGS:-} ${LLAMAC_BIN:-llamac} train $INI ${ARGS[*]+"${ARGS[*]}"}"

# shellcheck disable=SC2086  # LLAMAC_MPIRUN_ARGS is a list of options
${LLAMAC_MPIRUN:-mpirun} ${LLAMAC_MPIRUN_ARGS:-} "${LLAMAC_BIN:-llamac}" train "$INI" ${ARGS[@]+"${ARGS[@]}"} &
pid=$!
trap 'log "USR1: asking the run to checkpoint and stop"; kill -USR1 "$pid" 2>/dev/null' USR1
trap 'log "TERM: forwarding to mpirun"; kill -TERM "$pid" 2>/dev/null' TERM

watchdog=""
if [ -n "$walltime" ]; then
    delay=$((walltime - margin))
    [ "$delay" -lt 1 ] && delay=1
    log "will ask the run to stop after $delay s ($margin s before the walltime)"
    # A subshell that sleeps in the background so that a TERM from us ends it and its sleep at once.
    (
        trap 'kill "$sp" 2>/dev/null; exit 0' TERM
        sleep "$delay" &
        sp=$!
        wait "$sp" && kill -USR1 $$
    ) &
    watchdog=$!
else
    log "walltime unknown: no early stop (set LLAMAC_WALLTIME, or use the trainer's wall-time limit)"
fi

# wait returns early (status > 128) each time a trapped signal arrives: wait again until mpirun is gone.
while :; do
    wait "$pid"
    status=$?
    kill -0 "$pid" 2>/dev/null || break
done
trap - USR1 TERM
if [ -n "$watchdog" ]; then
    kill "$watchdog" 2>/dev/null
    wait "$watchdog" 2>/dev/null
fi

if [ -f "$RUN_DIR/DONE" ]; then
    log "run finished ($RUN_DIR/DONE)"
    exit 0
fi
if [ -f "$RUN_DIR/STOPPED" ] && [ "$status" -eq 0 ]; then
    if [ "$restarts" -ge "${LLAMAC_MAX_REQUEUES:-100}" ]; then
        log "stopped early, but resubmitted $restarts times already (LLAMAC_MAX_REQUEUES): not resubmitting"
        exit 1
    fi
    if [ "${LLAMAC_REQUEUE:-qsub}" = qrerun ]; then
        log "stopped early with a checkpoint: qrerun $PBS_JOBID"
        qrerun "$PBS_JOBID" || exit 1
        exit 0
    fi
    next=$((restarts + 1))
    vars="LLAMAC_INI=$INI,LLAMAC_RESTART_COUNT=$next"
    for v in LLAMAC_ARGS LLAMAC_RUN_DIR LLAMAC_BIN LLAMAC_MPIRUN LLAMAC_MPIRUN_ARGS LLAMAC_MAX_REQUEUES \
             LLAMAC_STOP_MARGIN LLAMAC_WALLTIME LLAMAC_PBS_SCRIPT; do
        [ -n "${!v:-}" ] && vars="$vars,$v=${!v}"
    done
    script=${LLAMAC_PBS_SCRIPT:-$0}
    log "stopped early with a checkpoint: resubmitting (restart $next): qsub -v ... $script"
    qsub -v "$vars" "$script" || { log "qsub failed: resubmit by hand"; exit 1; }
    exit 0
fi
log "training failed (exit status $status, no $RUN_DIR/STOPPED or DONE): not resubmitting"
[ "$status" -ne 0 ] && exit "$status"
exit 1
