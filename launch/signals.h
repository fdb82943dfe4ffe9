// Scheduler-safe stops: a run that is asked to stop finishes its step, writes a checkpoint and exits 0.
//
// Who asks (launch/README.md):
//   SIGUSR1  the batch scripts (launch/slurm.sbatch, launch/pbs.sh) forward the scheduler's early
//            warning to mpirun, which passes it to every rank. This is the signal to rely on.
//   SIGTERM  the scheduler at the time limit, or mpirun passing on its own SIGTERM/SIGINT. Open MPI 4.1's
//            mpirun then aborts the job: SIGCONT to the ranks at once, SIGTERM odls_base_sigkill_timeout
//            seconds later (1 by default), SIGKILL as long after that, and it exits 1 whatever the
//            ranks did. One step and a checkpoint must fit in that window; the trainer then exits
//            without MPI_Finalize (grid_exit_now). Raise the window with
//            OMPI_MCA_odls_base_sigkill_timeout=N (it also delays the SIGTERM by N seconds).
//   SIGINT   Ctrl-C on an interactive run. A second SIGINT kills the process at once.
//   wall time  a limit in seconds (the run config's), checked at every step: the stop that needs no
//            signal at all, for schedulers whose warning comes too late.
//
// The handler only sets a sig_atomic_t. The training loop calls stop_agreed() once per step: every
// rank contributes its flag and its wall-time check to one MAX all-reduce over the world, so all ranks
// stop after the same step even when the signal reached them at different moments (or only some).
#pragma once

#include "core/comm.h"

enum stop_reason {
    STOP_NONE = 0,
    STOP_SIGNAL = 1,     // a signal reached at least one rank
    STOP_WALL_TIME = 2,  // the wall-time limit passed on at least one rank
};

struct stop_info {
    enum stop_reason reason;  // STOP_SIGNAL wins over STOP_WALL_TIME when both hold
    int signal;               // the signal (the largest number when ranks got different ones), or 0
    int rank_lo, rank_hi;     // the lowest and highest world ranks that received one, or -1
    double wall_limit_s;      // the limit checked (<= 0: none) ...
    double elapsed_s;         // ... and the longest time since start_time over the ranks
};

// Installs the handlers for SIGTERM, SIGUSR1 and SIGINT (SA_RESTART, so interrupted reads resume) and
// clears the flag. Call it right after grid_init, before anything slow: until then SIGUSR1 still has
// its default action, which kills the rank. signals_restore puts the previous handlers back.
void signals_install(void);
void signals_restore(void);
// The signal this process received since install (or stop_clear), or 0. Async-signal-safe to read.
int stop_requested_local(void);
// Forgets a received signal (tests; a loop that handled a stop and keeps running).
void stop_clear(void);

// 1 when every rank must stop now, the same answer on every rank of `world` (a collective: all ranks
// call it at the same step). wall_limit_s <= 0: no wall-time limit; start_time is a time_now() value
// (core/timer.h) taken when the run started.
int stop_agreed(struct comm *world, double wall_limit_s, double start_time);
// What the last stop_agreed found (the same on every rank).
void stop_last(struct stop_info *out);
// One line for the log: "SIGUSR1 received (ranks 0..7)", "wall-time limit of 3600 s reached after
// 3601 s", "no stop requested".
void stop_describe(char *out, int n, const struct stop_info *info);
// "SIGUSR1", "SIGTERM", "SIGINT", or "signal N".
const char *stop_signal_name(int sig);
