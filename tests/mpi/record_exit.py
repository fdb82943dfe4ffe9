#!/usr/bin/env python3
"""Records how a rank's process ended, under an mpirun that is aborting the job.

    mpirun -np N python3 record_exit.py DIR COMMAND [ARGS...]

writes DIR/rankR (R = OMPI_COMM_WORLD_RANK) with "exit S" or "signal K" for COMMAND and DIR/rankR.time
with the moment it ended (seconds since the epoch), and exits with COMMAND's status. Used by parallel_train.sh sigterm to check that every rank exits 0 after SIGTERM to
mpirun.

Why not a shell wrapper: Open MPI's mpirun signals the process group of each rank it started (SIGCONT,
SIGTERM, SIGKILL), and once the first rank has exited it kills the rest at once, so a parent in that
group is often killed before it can record its child's status. Here the process mpirun started (the
group leader) ignores SIGTERM and waits; a recorder in a group of its own forks COMMAND and puts it
back into the leader's group, so COMMAND gets exactly the signals mpirun sends, and the recorder, out
of their reach, writes what became of it.
"""
import os
import signal
import sys
import time


def main():
    out_dir, cmd = sys.argv[1], sys.argv[2:]
    rank = os.environ.get("OMPI_COMM_WORLD_RANK", "0")
    group = os.getpgid(0)
    recorder = os.fork()
    if recorder == 0:
        os.setpgid(0, 0)
        child = os.fork()
        if child == 0:
            os.setpgid(0, group)
            os.execvp(cmd[0], cmd)
        _, status = os.waitpid(child, 0)
        ended = time.time()
        if os.WIFSIGNALED(status):
            text, code = "signal %d" % os.WTERMSIG(status), 128 + os.WTERMSIG(status)
        else:
            text, code = "exit %d" % os.WEXITSTATUS(status), os.WEXITSTATUS(status)
        with open(os.path.join(out_dir, "rank" + rank), "w") as f:
            f.write(text + "\n")
        with open(os.path.join(out_dir, "rank" + rank + ".time"), "w") as f:
            f.write("%.3f\n" % ended)
        os._exit(code)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _, status = os.waitpid(recorder, 0)
    sys.exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


main()
