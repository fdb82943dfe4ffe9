// The process grid (launch/grid.c): `mpi_grid TP` builds the grid and checks that every group holds the
// world ranks the README says (TP innermost: TP group r / tp, DP group r % tp), exit 0; a layout that
// does not fit prints grid_init's one-line error on rank 0 and exits 2 (mpi_grid_bad_layout expects it).
// Run without mpirun it is the singleton case: a one-rank world. `mpi_grid 1 bad-root` (on 2 ranks or
// more) broadcasts from a rank that does not exist: MPI_CHECK must report the call with file and line
// and abort the job.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "launch/grid.h"
#include "mpitest.h"

static void check_members(const char *kind, struct comm *c, const int *expect, int n) {
    int me;
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    int64_t v = me, *all = malloc(sizeof(int64_t) * (size_t)c->size);
    comm_all_gather(c, all, &v, 1, COMM_I64);
    mpitest_expect(c->size == n, "%s: size %d, expected %d", kind, c->size, n);
    for (int i = 0; i < n && i < c->size; i++)
        mpitest_expect(all[i] == expect[i], "%s: group rank %d is world rank %lld, expected %d", kind, i,
                       (long long)all[i], expect[i]);
    free(all);
}

int main(int argc, char **argv) {
    int tp = argc > 1 ? atoi(argv[1]) : 1;
    struct grid g;
    if (grid_init(&g, &argc, &argv, tp) != 0) {
        if (g.world_rank == 0) fprintf(stderr, "llamac: %s\n", err_msg());
        grid_finalize(&g);
        return 2;
    }
    if (argc > 2 && !strcmp(argv[2], "bad-root")) {  // an MPI error must name the call, file and line
        float x = 0;
        comm_broadcast(g.world, &x, 1, COMM_F32, g.world_size + 5);
        grid_finalize(&g);
        return 0;
    }
    int expect[64];
    for (int i = 0; i < g.world_size; i++) expect[i] = i;
    check_members("world", g.world, expect, g.world_size);
    for (int i = 0; i < tp; i++) expect[i] = g.dp_rank * tp + i;
    check_members("tp", g.tp, expect, tp);
    for (int i = 0; i < g.dp_size; i++) expect[i] = i * tp + g.tp_rank;
    check_members("dp", g.dp, expect, g.dp_size);
    mpitest_expect(g.tp_rank == g.world_rank % tp && g.dp_rank == g.world_rank / tp,
                   "world rank %d: tp_rank %d dp_rank %d", g.world_rank, g.tp_rank, g.dp_rank);
    mpitest_expect(g.tp_on_one_node == 1 && g.ranks_per_node == g.world_size,
                   "one node: tp_on_one_node %d, ranks_per_node %d", g.tp_on_one_node, g.ranks_per_node);
    if (g.world_rank == 0) {
        char d[128];
        grid_describe(&g, d, sizeof(d));
        printf("mpi_grid: %s\n", d);
    }
    int rc = mpitest_finish("mpi_grid");
    grid_finalize(&g);
    return rc;
}
