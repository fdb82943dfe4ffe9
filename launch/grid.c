// MPI start-up and the DP x TP groups; see grid.h for the layout.
#define _XOPEN_SOURCE 700  // nftw
#include "launch/grid.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "launch/mpi_comm.h"

// Finds out whether each TP group lives on one node (shared memory) and how many ranks each node runs.
static void grid_check_nodes(struct grid *g) {
    MPI_Comm node, tpc = comm_mpi_handle(g->tp);
    MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g->world_rank, MPI_INFO_NULL, &node));
    MPI_CHECK(MPI_Comm_size(node, &g->ranks_per_node));
    MPI_CHECK(MPI_Comm_rank(node, &g->local_rank));
    MPI_CHECK(MPI_Allreduce(&g->ranks_per_node, &g->max_ranks_per_node, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    int node_id = g->world_rank, lo, hi;  // a node is named by its lowest world rank
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &node_id, 1, MPI_INT, MPI_MIN, node));
    MPI_CHECK(MPI_Allreduce(&node_id, &lo, 1, MPI_INT, MPI_MIN, tpc));
    MPI_CHECK(MPI_Allreduce(&node_id, &hi, 1, MPI_INT, MPI_MAX, tpc));
    MPI_CHECK(MPI_Comm_free(&node));
    g->tp_on_one_node = lo == hi;
    int all_on_one = g->tp_on_one_node;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &all_on_one, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
    if (!all_on_one && g->world_rank == 0)
        log_warn("a tensor-parallel group spans several nodes (tp %d, %d ranks on node 0): its all-reduces will "
                 "cross the network; run a multiple of tp ranks per node, placed by slot (mpirun --map-by slot)",
                 g->tp_size, g->ranks_per_node);
}

// Open MPI settings made before MPI_Init (a user's own OMPI_MCA_* variables win):
// - OMPIO's `lockedfile` shared-file-pointer component keeps file names in a 256-byte buffer and aborts
//   on longer ones (a run_dir of ~220 characters); the others serve HDF5 as well (launch/README.md).
// - A process no launcher started (no mpirun, srun or PMI variables) is a singleton: one rank that talks
//   to nobody. By default Open MPI 4.1 forks a helper daemon for it and tries its network transports
//   (UCX, libfabric, PSM) before settling on ob1: about 0.4 s of every `llamac eval`, `sample`,
//   `export` or one-rank `train` (MPI_Init alone: 0.47 s, 0.08 s without). So a singleton runs on ob1
//   and isolated (no daemon; llamac never spawns processes), as scripts/gpu-check.sh does. Isolated
//   singletons all get the same job id, hence the same session directory, where one process's exit
//   removes what another is creating: each gets a private one (TMPDIR/llamac-mpi-XXXXXX, removed by
//   grid_finalize and grid_exit_now).
static char *private_tmp;

static void mpi_defaults(void) {
    setenv("OMPI_MCA_sharedfp", "^lockedfile", 0);
    static const char *launched[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "PMI_FD"};
    for (size_t i = 0; i < sizeof(launched) / sizeof(launched[0]); i++)
        if (getenv(launched[i])) return;
    setenv("OMPI_MCA_pml", "ob1", 0);
    if (getenv("OMPI_MCA_ess_singleton_isolated") || getenv("OMPI_MCA_orte_tmpdir_base")) return;
    const char *tmp = getenv("TMPDIR");
    char *d = fs_printf("%s/llamac-mpi-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(d)) {  // no private directory: Open MPI's default (the daemon) it is
        free(d);
        return;
    }
    private_tmp = d;
    setenv("OMPI_MCA_orte_tmpdir_base", d, 1);
    setenv("OMPI_MCA_ess_singleton_isolated", "1", 1);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

// Removes the private session directory (only ever llamac's own mkdtemp directory).
static void private_tmp_remove(void) {
    if (!private_tmp) return;
    nftw(private_tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(private_tmp);
    private_tmp = NULL;
}

int grid_init(struct grid *g, int *argc, char ***argv, int tp) {
    memset(g, 0, sizeof(*g));
    int init = 0;
    MPI_CHECK(MPI_Initialized(&init));
    if (!init) {
        int provided = 0;
        mpi_defaults();
        MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
        g->owns_mpi = 1;
        // MPI_CHECK reports failures itself (file, line, call) instead of MPI aborting silently.
        MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
        if (provided < MPI_THREAD_FUNNELED)
            log_warn("MPI provides thread level %d, below MPI_THREAD_FUNNELED: keep the data loader in-process",
                     provided);
    }
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &g->world_rank));
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &g->world_size));
    log_set_rank(g->world_rank, g->world_size);

    if (tp < 1) return err_set("parallel.tp = %d: the tensor-parallel size must be at least 1", tp);
    if (g->world_size % tp != 0)
        return err_set("parallel.tp = %d does not divide the %d ranks started: launch a multiple of %d ranks "
                       "(mpirun -np N) or change parallel.tp", tp, g->world_size, tp);
    g->tp_size = tp;
    g->dp_size = g->world_size / tp;
    g->tp_rank = g->world_rank % tp;
    g->dp_rank = g->world_rank / tp;

    MPI_Comm tpc, dpc;
    MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, g->dp_rank, g->tp_rank, &tpc));  // same r / tp
    MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, g->tp_rank, g->dp_rank, &dpc));  // same r % tp
    g->world = comm_mpi_create(MPI_COMM_WORLD);
    g->tp = comm_mpi_create(tpc);
    g->dp = comm_mpi_create(dpc);
    MPI_CHECK(MPI_Comm_free(&tpc));
    MPI_CHECK(MPI_Comm_free(&dpc));
    CHECK(g->tp->rank == g->tp_rank && g->tp->size == g->tp_size);
    CHECK(g->dp->rank == g->dp_rank && g->dp->size == g->dp_size);
    grid_check_nodes(g);
    return 0;
}

void grid_finalize(struct grid *g) {
    comm_mpi_destroy(g->dp);
    comm_mpi_destroy(g->tp);
    comm_mpi_destroy(g->world);
    if (g->owns_mpi) {
        MPI_Finalize();
        private_tmp_remove();
    }
    memset(g, 0, sizeof(*g));
}

void grid_exit_now(struct grid *g, int status) {
    if (g->world) comm_barrier(g->world);  // nobody leaves while another rank still writes
    fflush(NULL);
    private_tmp_remove();  // Open MPI's own clean-up is skipped (no MPI_Finalize)
    _exit(status);
}

void grid_describe(const struct grid *g, char *out, int n) {
    snprintf(out, (size_t)n, "world %d = dp %d x tp %d (%d rank%s per node%s)", g->world_size, g->dp_size,
             g->tp_size, g->ranks_per_node, g->ranks_per_node == 1 ? "" : "s",
             g->tp_on_one_node ? "" : ", tp groups span nodes");
}
