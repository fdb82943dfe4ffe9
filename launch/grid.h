// The process grid: MPI start-up and the data-parallel x tensor-parallel layout of the ranks.
//
// World = DP x TP with TP innermost (README.md, Distributed training): world rank r is tensor-parallel rank
// r % tp of TP group r / tp, and data-parallel rank r / tp of DP group r % tp. Consecutive ranks share
// a node under every launcher's default placement, so the TP all-reduces (four per block per step,
// latency-bound) stay on the node and only the DP gradient sync crosses the network.
//
//     world 8, tp 2:   TP groups {0,1} {2,3} {4,5} {6,7}     DP groups {0,2,4,6} {1,3,5,7}
//
// MPI is started with MPI_THREAD_FUNNELED: only the main thread calls MPI (the data loader's threads
// and OpenMP's never do). Started without mpirun, Open MPI gives a one-rank world (singleton), so
// `llamac train run.ini` works the same way as `mpirun -np 1 llamac train run.ini`.
//
// Whether the model fits the layout (n_heads, n_kv_heads, ffn_hidden divisible by tp) is checked by
// param_layout_init when the trainer builds the model; launch/ does not know the model.
#pragma once

#include "core/comm.h"

struct grid {
    int world_rank, world_size;
    int tp_size, tp_rank;      // the tensor-parallel group of this rank and the place in it
    int dp_size, dp_rank;      // the data-parallel group (ranks with the same tp_rank)
    struct comm *world;        // all ranks
    struct comm *tp;           // world ranks tp_size * dp_rank .. + tp_size - 1
    struct comm *dp;           // world ranks tp_rank, tp_rank + tp_size, ...
    int tp_on_one_node;        // 1 when every rank of this TP group runs on one node
    int ranks_per_node;        // ranks on this rank's node
    int local_rank;            // this rank's place among them (0 .. ranks_per_node - 1): its GPU (launch/gpu_comms.h)
    int max_ranks_per_node;    // the most ranks any node runs
    int owns_mpi;              // grid_init started MPI, so grid_finalize ends it
};

// Starts MPI (unless the program already did), builds the groups and sets the log rank. argc/argv may
// be NULL. Returns -1 with err_set on a layout that does not fit (tp < 1, world size not a multiple of
// tp), the same on every rank. MPI then stays up and g->world_rank is set: print err_msg() on rank 0,
// then call grid_finalize, then exit non-zero. In that order, because mpirun kills every rank as soon
// as one exits non-zero, and MPI_Finalize holds the others until rank 0 has printed.
//
//     if (grid_init(&g, &argc, &argv, tp) != 0) {
//         if (g.world_rank == 0) fprintf(stderr, "llamac: %s\n", err_msg());
//         grid_finalize(&g);
//         return 1;
//     }
int grid_init(struct grid *g, int *argc, char ***argv, int tp);
// Frees the communicators and ends MPI if grid_init started it (also after a failed grid_init).
void grid_finalize(struct grid *g);
// Ends every rank with `status` once all have arrived here (a world barrier), after flushing stdio,
// WITHOUT MPI_Finalize: for a run whose launcher is taking the job down (a stop on SIGTERM or SIGINT,
// with the checkpoint already published). Open MPI's mpirun, on SIGTERM or SIGINT, sends the ranks
// SIGCONT, then SIGTERM odls_base_sigkill_timeout seconds later (default 1), then SIGKILL as long
// after that; meanwhile its runtime is shutting down, so MPI_Finalize waits about 2 s in PMIx_Finalize
// and the rank is killed there instead of exiting 0. Collective; does not return.
void grid_exit_now(struct grid *g, int status) __attribute__((noreturn));
// "world 8 = dp 4 x tp 2" (for the start-up log line).
void grid_describe(const struct grid *g, char *out, int n);
