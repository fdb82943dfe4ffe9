#!/bin/bash
# launch/slurm.sbatch under a real Slurm (Debian's slurm-wlm): a single-node slurmctld + slurmd with
# munge, started and stopped by this test, all state under TMP. The job is submitted with a time limit
# and the script's own early warning (sbatch --time=2 --signal=B:USR1@30): Slurm sends USR1 to the batch
# shell once 30 s remain, the run checkpoints and the script requeues the job with `scontrol requeue`;
# the requeued job resumes and finishes. The run must then be bit-identical (losses and all tensors) to
# an uninterrupted run of the same steps. The run is long (train.steps = 100000) so that Slurm's signal
# always comes first; once the first stop is on disk, the test lowers train.steps in the INI so that a
# later job finishes (the schedule is constant, so the step count does not change the updates).
# Slurm may send the signal up to 60 s early (sbatch(1), --signal), so a 1-minute limit could signal a
# job that has not yet set its handlers: 2 minutes put the signal at least 30 s after the start. While
# the job waits for it, its trainer is stopped (SIGSTOP after step 3, SIGCONT once the batch shell has
# logged the USR1), so that it does not spend a core on steps that the uninterrupted run would repeat;
# USR1 is then handled as in any run. Slurm holds a requeued job for cred_expire seconds (slurm.conf(5),
# AuthInfo; 120 by default, 20 here) and starts it at its next scheduling pass (bf_interval and
# sched_interval, 30 and 60 s by default, 5 here): the uninterrupted run of the same steps trains meanwhile.
# Exit 77 (skipped) when slurm-wlm/munge are missing or this sandbox cannot run slurmd, saying why; the
# scheduler logic itself is also covered by the stand-ins of tests/mpi/test_scripts.sh.
#
# usage: slurm_real.sh LLAMAC SOURCE_DIR DATA_DIR TMP
set -u
LLAMAC=$1 SRC=$2 DATA=$3 TMP=$4
for c in slurmctld slurmd sbatch scontrol squeue munged; do
    command -v $c >/dev/null || { echo "SKIP: $c not found (apt-get install slurm-wlm munge)"; exit 77; }
done
[ "$(id -u)" = 0 ] || { echo "SKIP: starting slurmd needs root"; exit 77; }
S=$TMP/slurm_real
rm -rf "$S" && mkdir -p "$S/state" "$S/spool" "$S/log" "$S/munge" "$S/runs"
H=$(hostname -s)
port=$((17000 + ($$ % 1000) * 2))
cat > "$S/slurm.conf" <<CONF
ClusterName=llamactest
SlurmctldHost=$H
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$port
SlurmdPort=$((port + 1))
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/ctld.pid
SlurmdPidFile=$S/d.pid
SlurmctldLogFile=$S/log/ctld.log
SlurmdLogFile=$S/log/d.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AuthType=auth/munge
AuthInfo=socket=$S/munge/munge.socket,cred_expire=20
MpiDefault=none
ReturnToService=2
JobRequeue=1
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5,sched_interval=5
JobAcctGatherType=jobacct_gather/none
PlugStackConfig=/dev/null
NodeName=$H CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$S/slurm.conf
stop_all() {  # the daemons this test started, by their pid files
    scancel --quiet -u root 2>/dev/null
    for p in "$S/d.pid" "$S/ctld.pid" "$S/munge/munged.pid"; do [ -s "$p" ] && kill "$(cat "$p")" 2>/dev/null; done
}
trap stop_all EXIT
trap "exit 143" INT TERM
head -c 1024 /dev/urandom > "$S/munge/key" && chmod 400 "$S/munge/key"
munged --force --key-file="$S/munge/key" --socket="$S/munge/munge.socket" --pid-file="$S/munge/munged.pid" \
    --log-file="$S/munge/munged.log" --seed-file="$S/munge/seed" || { echo "SKIP: munged does not start: $(tail -1 "$S/munge/munged.log")"; exit 77; }
slurmctld || { echo "SKIP: slurmctld does not start: $(tail -1 "$S/log/ctld.log")"; exit 77; }
slurmd || { echo "SKIP: slurmd does not start here: $(tail -1 "$S/log/d.log")"; exit 77; }
for _ in $(seq 600); do sinfo -h -o %t 2>/dev/null | grep -q idle && break; sleep 0.1; done
sinfo -h -o %t | grep -q idle || { echo "SKIP: slurmd never became idle: $(tail -1 "$S/log/d.log")"; exit 77; }
echo "slurm: $(sinfo -h -o '%P %a %D %t %N')"

fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
mkini() {  # NAME STEPS
    cat > "$S/$1.ini" <<INI
[run]
run_dir = $S/runs/$1
seed = 7
log_every = 1000
[model]
name = slurm-test
dim = 64
n_layers = 2
n_heads = 4
n_kv_heads = 2
vocab_size = 512
multiple_of = 32
max_seq_len = 64
[data]
dir = $DATA
[train]
batch_size = 4
seq_len = 32
steps = $2
eval_every = 0
ckpt_every = 0
keep_ckpts = 2
[optim]
schedule = constant
warmup = 0
lr = 1e-3
INI
}
mkini job 100000
export LLAMAC_BIN=$LLAMAC LLAMAC_MPIRUN_ARGS="--allow-run-as-root --oversubscribe -np 1" OMP_NUM_THREADS=1
job=$(sbatch --parsable --time=2 --signal=B:USR1@30 --requeue --nodes=1 --ntasks-per-node=1 --cpus-per-task=1 -o "$S/job.out" -D "$S" "$SRC/launch/slurm.sbatch" "$S/job.ini")
echo "submitted job $job (--time=2 --signal=B:USR1@30)"
# polls with a 10-minute bound (not timing assumptions): step 3, the USR1, the first stop, the end
for _ in $(seq 6000); do grep -q '"step": 3,' "$S/runs/job/metrics.jsonl" 2>/dev/null && break; sleep 0.1; done
trainer=$(sed -n 's/.*pid \([0-9]*\).*/\1/p' "$S/runs/job/lock" 2>/dev/null)  # rank 0 writes "host H, pid P"
[ -n "$trainer" ] && kill -STOP "$trainer"
for _ in $(seq 6000); do grep -q "USR1: asking the run" "$S/job.out" 2>/dev/null && break; sleep 0.1; done
[ -n "$trainer" ] && kill -CONT "$trainer"
for _ in $(seq 6000); do [ -e "$S/runs/job/STOPPED" ] && break; sleep 0.1; done
[ -e "$S/runs/job/STOPPED" ] || fail "no stop within 10 minutes: $(tail -3 "$S/job.out")"
first=$(cat "$S/runs/job/ckpt/latest" 2>/dev/null)
echo "first stop: $(cat "$S/runs/job/STOPPED" 2>/dev/null), checkpoint $first"
n=$(echo "$first" | sed 's/step_0*\([0-9]*\)\.h5/\1/')
mkini job $((n + 5))
# the same steps without interruption, while Slurm holds the requeued job (cred_expire, above)
mkini whole $((n + 5))
"$LLAMAC" train "$S/whole.ini" >"$S/whole.log" 2>&1 &
whole_pid=$!
for _ in $(seq 6000); do [ -e "$S/runs/job/DONE" ] && break; sleep 0.1; done
[ -e "$S/runs/job/DONE" ] || fail "the job did not finish within 10 minutes: $(tail -5 "$S/job.out")"
for _ in $(seq 600); do [ -z "$(squeue -h -j "$job" 2>/dev/null)" ] && break; sleep 0.1; done
restarts=$(grep -c "requeueing job $job" "$S/job.out")
echo "job output:"; sed 's/^/    | /' "$S/job.out" | grep -v "^    | step\|checkpoint:" | head -40
[ "$restarts" -ge 1 ] || fail "the job was never requeued"
final=$(cat "$S/runs/job/ckpt/latest")
steps=$(echo "$final" | sed 's/step_0*\([0-9]*\)\.h5/\1/')
echo "requeued $restarts time(s); finished at step $steps"

[ "$steps" = $((n + 5)) ] || fail "the requeued job finished at step $steps, not $((n + 5))"
wait $whole_pid || fail "uninterrupted run: $(tail -2 "$S/whole.log")"
for g in /params /adam_m /adam_v; do
    h5diff -q "$S/runs/job/ckpt/$final" "$S/runs/whole/ckpt/$final" $g >/dev/null 2>&1 || fail "$g differs from the uninterrupted run"
done
loss() { sed -n 's/.*"step": \([0-9]*\), "loss": \([^,]*\),.*/\1 \2/p' "$1" | sort -n | uniq; }
[ "$(loss "$S/runs/job/metrics.jsonl")" = "$(loss "$S/runs/whole/metrics.jsonl")" ] || fail "losses differ from the uninterrupted run"
[ "$(loss "$S/runs/job/metrics.jsonl" | wc -l)" = "$steps" ] || fail "metrics.jsonl has not one row per step"
echo "slurm_real: $fails failed checks"
[ $fails = 0 ]
