// The MPI communicator (launch/mpi_comm.c) on the world, TP and DP groups of a 4-rank grid with tp = 2:
// every collective, every dtype, both ops, exact expected values computed from the members' world ranks
// (so a wrong group or a wrong order shows), the non-blocking all-reduce overlapping computation, and
// the same again with MPI calls cut into 7-element pieces (the path huge buffers take).
//
// Run: mpirun --oversubscribe -np 4 mpi_comm_test
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/half.h"
#include "core/timer.h"
#include "launch/grid.h"
#include "launch/mpi_comm.h"
#include "mpitest.h"

static struct grid g;
static int n_checks;

// World ranks of a group, in group-rank order (TP innermost: TP group r / tp, DP group r % tp).
static int members(const char *kind, int wr, int *out) {
    int n = 0, tp = g.tp_size;
    for (int r = 0; r < g.world_size; r++) {
        int in = !strcmp(kind, "world") || (!strcmp(kind, "tp") && r / tp == wr / tp) ||
                 (!strcmp(kind, "dp") && r % tp == wr % tp);
        if (in) out[n++] = r;
    }
    return n;
}

static void put(void *b, enum comm_dtype t, size_t i, double v) {
    switch (t) {
    case COMM_F32: ((float *)b)[i] = (float)v; break;
    case COMM_F64: ((double *)b)[i] = v; break;
    case COMM_I64: ((int64_t *)b)[i] = (int64_t)v; break;
    case COMM_U8: ((uint8_t *)b)[i] = (uint8_t)v; break;
    case COMM_BF16: ((uint16_t *)b)[i] = f32_to_bf16((float)v); break;
    }
}
static double get(const void *b, enum comm_dtype t, size_t i) {
    switch (t) {
    case COMM_F32: return ((const float *)b)[i];
    case COMM_F64: return ((const double *)b)[i];
    case COMM_I64: return (double)((const int64_t *)b)[i];
    case COMM_U8: return ((const uint8_t *)b)[i];
    case COMM_BF16: return bf16_to_f32(((const uint16_t *)b)[i]);
    }
    return 0;
}
static const char *dname(enum comm_dtype t) {
    static const char *n[] = {"f32", "f64", "i64", "u8", "bf16"};
    return n[t];
}

// Values exact in every type and in every sum of 4: I64 above 2^32 (a 32-bit path would lose them),
// U8 small enough that 4 of them fit in a byte, BF16 integers whose sums stay below 256 (8 bits of
// mantissa), so that a sum rounded to bf16 at each step is still exact.
static double val_sum(enum comm_dtype t, int wr, size_t i) {
    switch (t) {
    case COMM_F32: return wr * 100.0 + 0.5 * (double)i;
    case COMM_F64: return wr * 1e6 + 0.125 * (double)i;
    case COMM_I64: return (double)((int64_t)(wr + 1) << 40) + (double)i;
    case COMM_U8: return wr * 10 + (int)(i % 10);
    case COMM_BF16: return wr * 8 + (int)(i % 16);
    }
    return 0;
}
// The maximum moves between ranks with i; negative in the signed types.
static double val_max(enum comm_dtype t, int wr, size_t i) {
    double v = (double)((wr * 7 + (int)i * 3) % 11);
    return t == COMM_U8 ? v : v - 5.0;
}

static void check_collectives(const char *kind, struct comm *c, size_t n) {
    int mem[16];
    const int wr = g.world_rank, nm = members(kind, wr, mem);
    mpitest_expect(c->size == nm, "%s: size %d, expected %d", kind, c->size, nm);
    mpitest_expect(mem[c->rank] == wr, "%s: rank %d holds world rank %d, expected %d", kind, c->rank, mem[c->rank], wr);
    const size_t S = (size_t)c->size;
    for (int t = COMM_F32; t <= COMM_BF16; t++) {
        const size_t es = comm_dtype_size(t);
        char *buf = malloc(S * n * es), *out = malloc(S * n * es);
        int bad;

        // all_reduce SUM, in place
        for (size_t i = 0; i < n; i++) put(buf, t, i, val_sum(t, wr, i));
        comm_all_reduce(c, buf, n, t, COMM_SUM);
        bad = 0;
        for (size_t i = 0; i < n; i++) {
            double e = 0;
            for (int m = 0; m < nm; m++) e += val_sum(t, mem[m], i);
            if (get(buf, t, i) != e && !bad++)
                mpitest_expect(0, "%s all_reduce SUM %s [%zu]: %.17g, expected %.17g", kind, dname(t), i, get(buf, t, i), e);
        }
        n_checks++;

        // all_reduce MAX
        for (size_t i = 0; i < n; i++) put(buf, t, i, val_max(t, wr, i));
        comm_all_reduce(c, buf, n, t, COMM_MAX);
        bad = 0;
        for (size_t i = 0; i < n; i++) {
            double e = -1e300;
            for (int m = 0; m < nm; m++) e = fmax(e, val_max(t, mem[m], i));
            if (get(buf, t, i) != e && !bad++)
                mpitest_expect(0, "%s all_reduce MAX %s [%zu]: %g, expected %g", kind, dname(t), i, get(buf, t, i), e);
        }
        n_checks++;

        // broadcast from group rank size-1
        const int root = c->size - 1;
        for (size_t i = 0; i < n; i++) put(buf, t, i, val_sum(t, wr, i));
        comm_broadcast(c, buf, n, t, root);
        bad = 0;
        for (size_t i = 0; i < n; i++)
            if (get(buf, t, i) != val_sum(t, mem[root], i) && !bad++)
                mpitest_expect(0, "%s broadcast %s [%zu]: %g, expected %g", kind, dname(t), i, get(buf, t, i),
                               val_sum(t, mem[root], i));
        n_checks++;

        // all_gather: block r of out is group rank r's input
        for (size_t i = 0; i < n; i++) put(buf, t, i, val_sum(t, wr, i));
        memset(out, 0xff, S * n * es);
        comm_all_gather(c, out, buf, n, t);
        bad = 0;
        for (size_t r = 0; r < S; r++)
            for (size_t i = 0; i < n; i++)
                if (get(out, t, r * n + i) != val_sum(t, mem[r], i) && !bad++)
                    mpitest_expect(0, "%s all_gather %s block %zu [%zu]: %g, expected %g", kind, dname(t), r, i,
                                   get(out, t, r * n + i), val_sum(t, mem[r], i));
        n_checks++;

        // all_gather in place: the input is this rank's own block of out
        memset(out, 0xff, S * n * es);
        for (size_t i = 0; i < n; i++) put(out, t, (size_t)c->rank * n + i, val_sum(t, wr, i));
        comm_all_gather(c, out, out + (size_t)c->rank * n * es, n, t);
        bad = 0;
        for (size_t r = 0; r < S; r++)
            for (size_t i = 0; i < n; i++)
                if (get(out, t, r * n + i) != val_sum(t, mem[r], i) && !bad++)
                    mpitest_expect(0, "%s all_gather in place %s block %zu [%zu]: %g, expected %g", kind, dname(t), r,
                                   i, get(out, t, r * n + i), val_sum(t, mem[r], i));
        n_checks++;

        // reduce_scatter: out (n) = sum over members of their in[rank*n + i]
        if (t != COMM_U8) {  // U8 sums over S*n distinct values would overflow a byte; tested above
            for (size_t j = 0; j < S * n; j++) put(buf, t, j, val_sum(t, wr, j));
            memset(out, 0, n * es);
            comm_reduce_scatter(c, out, buf, n, t);
            bad = 0;
            for (size_t i = 0; i < n; i++) {
                double e = 0;
                for (int m = 0; m < nm; m++) e += val_sum(t, mem[m], (size_t)c->rank * n + i);
                if (get(out, t, i) != e && !bad++)
                    mpitest_expect(0, "%s reduce_scatter %s [%zu]: %.17g, expected %.17g", kind, dname(t), i,
                                   get(out, t, i), e);
            }
            n_checks++;
        }
        free(buf);
        free(out);
    }
}

// A non-blocking all-reduce of 16 MB on the world overlapped with a computation that tests the request;
// plus two in flight at once on TP and DP, waited in the opposite order.
static void check_nonblocking(void) {
    const size_t n = (size_t)4 << 20;
    float *buf = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) buf[i] = (float)(g.world_rank + 1) * (float)(i % 1000);
    struct comm_req req;
    comm_all_reduce_start(g.world, buf, n, COMM_F32, COMM_SUM, &req);
    mpitest_expect(req.impl != NULL, "all_reduce_start on 4 ranks returned no request");
    double acc = 0, t0 = time_now();
    long iters = 0;
    int done_before_wait = 0;
    while (time_now() - t0 < 20.0) {  // work while MPI moves the data
        for (int k = 0; k < 10000; k++) acc += sqrt((double)(k + iters));
        iters++;
        if (comm_mpi_test(g.world, &req)) {
            done_before_wait = 1;
            break;
        }
    }
    comm_wait(g.world, &req);
    mpitest_expect(req.impl == NULL, "comm_wait left the request set");
    mpitest_expect(done_before_wait, "the non-blocking all-reduce did not complete within 20 s of testing");
    mpitest_expect(acc > 0, "the overlapped computation did not run");
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (buf[i] != 10.0f * (float)(i % 1000)) bad++;  // (1+2+3+4) * x
    mpitest_expect(bad == 0, "non-blocking all-reduce: %zu of %zu elements wrong", bad, n);
    n_checks++;

    const size_t m = 1000;
    double *a = malloc(m * sizeof(double)), *b = malloc(m * sizeof(double));
    for (size_t i = 0; i < m; i++) a[i] = b[i] = g.world_rank + 0.25 * (double)i;
    struct comm_req ra, rb;
    comm_all_reduce_start(g.tp, a, m, COMM_F64, COMM_SUM, &ra);
    comm_all_reduce_start(g.dp, b, m, COMM_F64, COMM_MAX, &rb);
    comm_wait(g.dp, &rb);
    comm_wait(g.tp, &ra);
    int tp0 = g.world_rank / g.tp_size * g.tp_size, dpmax = g.world_size - g.tp_size + g.tp_rank;
    bad = 0;
    for (size_t i = 0; i < m; i++) {
        double ea = tp0 + (tp0 + 1) + 2 * 0.25 * (double)i, eb = dpmax + 0.25 * (double)i;
        if (a[i] != ea || b[i] != eb) bad++;
    }
    mpitest_expect(bad == 0, "two non-blocking all-reduces in flight (tp SUM, dp MAX): %zu wrong", bad);
    n_checks++;
    free(a);
    free(b);
    free(buf);
}

// Rank 0 arrives 300 ms late: nobody may leave the barrier before it arrives.
static void check_barrier(void) {
    comm_barrier(g.world);
    double t0 = time_now();
    if (g.world_rank == 0) usleep(300000);
    comm_barrier(g.world);
    double waited = time_now() - t0;
    mpitest_expect(waited > 0.25, "left the barrier after %.3f s while rank 0 slept 0.3 s", waited);
    n_checks++;
}

int main(int argc, char **argv) {
    if (grid_init(&g, &argc, &argv, 2) != 0) {
        fprintf(stderr, "mpi_comm_test: %s\n", err_msg());
        grid_finalize(&g);
        return 1;
    }
    if (g.world_size != 4) {
        if (g.world_rank == 0) fprintf(stderr, "mpi_comm_test: run with 4 ranks (got %d)\n", g.world_size);
        grid_finalize(&g);
        return 1;
    }
    mpitest_expect(g.tp_rank == g.world_rank % 2 && g.dp_rank == g.world_rank / 2 && g.dp_size == 2,
                   "grid: world %d -> tp_rank %d dp_rank %d dp_size %d", g.world_rank, g.tp_rank, g.dp_rank, g.dp_size);
    mpitest_expect(!comm_is_mpi(comm_self()) && comm_is_mpi(g.world), "comm_is_mpi");

    const size_t sizes[] = {1, 23, 1000};
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) comm_mpi_set_chunk(7);  // every call below is cut into pieces of 7
        for (int k = 0; k < 3; k++) {
            check_collectives("world", g.world, sizes[k]);
            check_collectives("tp", g.tp, sizes[k]);
            check_collectives("dp", g.dp, sizes[k]);
        }
        if (pass == 1) {  // a multi-piece non-blocking request
            float v[20];
            for (int i = 0; i < 20; i++) v[i] = (float)(g.world_rank * 20 + i);
            struct comm_req r;
            comm_all_reduce_start(g.world, v, 20, COMM_F32, COMM_SUM, &r);
            comm_wait(g.world, &r);
            int bad = 0;
            for (int i = 0; i < 20; i++) bad += v[i] != (float)(120 + 4 * i);  // 20*(0+1+2+3) + 4i
            mpitest_expect(!bad, "chunked non-blocking all-reduce: %d wrong", bad);
            n_checks++;
        }
    }
    comm_mpi_set_chunk((size_t)1 << 30);
    check_nonblocking();
    check_barrier();
    if (g.world_rank == 0) printf("mpi_comm_test: %d comparisons per rank (world/tp/dp x f32/f64/i64/u8 x 3 sizes, "
                                  "whole and in 7-element pieces)\n", n_checks);
    int rc = mpitest_finish("mpi_comm_test");
    grid_finalize(&g);
    return rc;
}
