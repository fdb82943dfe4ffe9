// The device communicators (launch/dev_comm.h) against the host MPI communicator they stage through, under
// mpirun -np 4 with every rank on the one GPU (or the emulated device): each collective on device buffers,
// in fp32 and bf16, blocking and non-blocking, must give exactly what the same MPI collective gives on the
// same values in host memory; the bucketed gradient sync (launch/dp.h) over a device communicator must
// equal the one over the host communicator; the transport rule must refuse NCCL where it cannot run.
// Exits 77 (skipped) without a device, non-zero on any mismatch.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/half.h"
#include "launch/dev_comm.h"
#include "launch/dp.h"
#include "launch/gpu.h"
#include "launch/gpu_comms.h"
#include "launch/grid.h"
#include "launch/mpi_comm.h"
#include "model/ops/backends.h"

static int failures = 0;
static int world_rank = 0;

#define EXPECT(cond, ...)                                                 \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "rank %d: FAIL %s:%d: ", world_rank, __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                                 \
            fprintf(stderr, "\n");                                        \
            failures++;                                                   \
        }                                                                 \
    } while (0)

// Values that differ per rank and element, exactly representable in bf16 so both dtypes compare exactly.
static void fill(float *x, size_t n, int rank, int salt) {
    for (size_t i = 0; i < n; i++) x[i] = bf16_to_f32(f32_to_bf16((float)((int)((i * 7 + rank * 13 + salt) % 61) - 30) / 8.0f));
}

// The host reference of a buffer kind: what the host communicator computes on the same values, in the
// buffer's comm dtype (bf16 as bit patterns).
static void host_view(const struct backend *be, enum buf_kind k, const float *x, size_t n, void *out) {
    if (be->elem_size[k] == 4) memcpy(out, x, n * 4);
    else
        for (size_t i = 0; i < n; i++) ((uint16_t *)out)[i] = f32_to_bf16(x[i]);
}
static float host_at(const struct backend *be, enum buf_kind k, const void *h, size_t i) {
    return be->elem_size[k] == 4 ? ((const float *)h)[i] : bf16_to_f32(((const uint16_t *)h)[i]);
}

static void compare(const struct backend *be, enum buf_kind k, const dbuf *d, const void *h, size_t n, const char *what) {
    float *got = malloc(sizeof(float) * n);
    be->to_host(be, got, d, k, n);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (got[i] != host_at(be, k, h, i) && !bad++) first = i;
    EXPECT(bad == 0, "%s (%s, %zu-byte elements): %zu of %zu elements differ from the host collective, first [%zu] %g vs %g",
           what, be->name, be->elem_size[k], bad, n, first, bad ? got[first] : 0, bad ? host_at(be, k, h, first) : 0);
    free(got);
}

static void collectives(const struct backend *be, struct comm *host, struct comm *dev) {
    const int P = host->size, r = host->rank;
    const enum buf_kind K[2] = {BUF_ACT, BUF_GRAD};  // bf16 in bf16 precision, fp32 always
    for (int ki = 0; ki < 2; ki++) {
        enum buf_kind k = K[ki];
        enum comm_dtype t = comm_dtype_of(be->elem_size[k]);
        const size_t n = 1000 + 3, es = be->elem_size[k], W = P > 3 ? (size_t)P : 3;  // W n: room for 3 buffers
        float *x = malloc(sizeof(float) * n * W);
        void *h = malloc(es * n * W), *h2 = malloc(es * n * W);
        dbuf *d = be->alloc(be, k, n * W), *d2 = be->alloc(be, k, n * W);

        for (int op = 0; op < 2; op++) {  // blocking all-reduce, SUM and MAX
            fill(x, n, r, op);
            host_view(be, k, x, n, h);
            be->from_host(be, d, x, k, n);
            comm_all_reduce(host, h, n, t, op ? COMM_MAX : COMM_SUM);
            comm_all_reduce(dev, d, n, t, op ? COMM_MAX : COMM_SUM);
            compare(be, k, d, h, n, op ? "all_reduce MAX" : "all_reduce SUM");
        }

        // three non-blocking all-reduces in flight with a blocking one issued between them, waited out of order
        struct comm_req q[3], hq[3];
        dbuf *parts[3];
        void *hp[3];
        for (int j = 0; j < 3; j++) {
            parts[j] = be_at(be, k, d2, (size_t)j * n);
            hp[j] = (char *)h2 + (size_t)j * n * es;
            fill(x, n, r, 10 + j);
            host_view(be, k, x, n, hp[j]);
            be->from_host(be, parts[j], x, k, n);
        }
        fill(x, n, r, 20);
        host_view(be, k, x, n, h);
        be->from_host(be, d, x, k, n);
        for (int j = 0; j < 2; j++) comm_all_reduce_start(dev, parts[j], n, t, COMM_SUM, &q[j]);
        comm_all_reduce(dev, d, n, t, COMM_SUM);
        comm_all_reduce_start(dev, parts[2], n, t, COMM_SUM, &q[2]);
        for (int spin = 0; spin < 1000 && !comm_test(dev, &q[0]); spin++) {}
        comm_wait(dev, &q[2]);
        comm_wait(dev, &q[0]);
        comm_wait(dev, &q[1]);
        for (int j = 0; j < 3; j++) comm_all_reduce_start(host, hp[j], n, t, COMM_SUM, &hq[j]);
        comm_all_reduce(host, h, n, t, COMM_SUM);
        for (int j = 0; j < 3; j++) comm_wait(host, &hq[j]);
        for (int j = 0; j < 3; j++) compare(be, k, parts[j], hp[j], n, "non-blocking all_reduce");
        compare(be, k, d, h, n, "blocking all_reduce between non-blocking ones");

        // reduce_scatter: out (n) of in (P n)
        fill(x, n * P, r, 30);
        host_view(be, k, x, n * P, h);
        be->from_host(be, d, x, k, n * P);
        comm_reduce_scatter(host, h2, h, n, t);
        comm_reduce_scatter(dev, d2, d, n, t);
        compare(be, k, d2, h2, n, "reduce_scatter");

        // all_gather, out of place and in place (ZeRO-1's parameter gather)
        fill(x, n, r, 40);
        host_view(be, k, x, n, h);
        be->from_host(be, d, x, k, n);
        comm_all_gather(host, h2, h, n, t);
        comm_all_gather(dev, d2, d, n, t);
        compare(be, k, d2, h2, n * P, "all_gather");
        fill(x, n * P, r, 50);
        be->from_host(be, d2, x, k, n * P);
        comm_all_gather(dev, d2, be_at(be, k, d2, (size_t)r * n), n, t);
        host_view(be, k, x, n * P, h2);
        comm_all_gather(host, h2, (char *)h2 + (size_t)r * n * es, n, t);
        compare(be, k, d2, h2, n * P, "all_gather in place");

        // broadcast from the last rank
        fill(x, n, r, 60);
        host_view(be, k, x, n, h);
        be->from_host(be, d, x, k, n);
        comm_broadcast(host, h, n, t, P - 1);
        comm_broadcast(dev, d, n, t, P - 1);
        compare(be, k, d, h, n, "broadcast");

        be->free(be, d);
        be->free(be, d2);
        free(x);
        free(h);
        free(h2);
    }
}

// The bucketed gradient sync over the device communicator against the same over the host one: 10 ranges
// reported in backward's order (tail first), buckets of 1000 elements that straddle them.
static void grad_sync(const struct backend *be, struct comm *host, struct comm *dev) {
    const size_t n = 10 * 777;
    float *x = malloc(sizeof(float) * n), *hx = malloc(sizeof(float) * n);
    dbuf *g = be->alloc(be, BUF_GRAD, n);
    fill(x, n, host->rank, 70);
    memcpy(hx, x, sizeof(float) * n);
    be->from_host(be, g, x, BUF_GRAD, n);
    double mb = 1000.0 * 4 / (1024.0 * 1024.0);
    struct dp_sync *sd = dp_sync_create(dev, g, n, mb), *sh = dp_sync_create(host, hx, n, mb);
    for (int j = 9; j >= 0; j--) {
        dp_sync_on_ready(sd, (size_t)j * 777, 777);
        dp_sync_on_ready(sh, (size_t)j * 777, 777);
    }
    EXPECT(sd->n_overlapped == sd->n_buckets, "device sync: %d of %d buckets started during backward", sd->n_overlapped,
           sd->n_buckets);
    dp_sync_finish(sd);
    dp_sync_finish(sh);
    compare(be, BUF_GRAD, g, hx, n, "dp_sync (bucketed, overlapped)");
    dp_sync_destroy(sd);
    dp_sync_destroy(sh);
    be->free(be, g);
    free(x);
    free(hx);
}

int main(int argc, char **argv) {
    struct grid g;
    if (grid_init(&g, &argc, &argv, 2) != 0) {
        if (g.world_rank == 0) fprintf(stderr, "mpi_dev_comm: %s\n", err_msg());
        grid_finalize(&g);
        return 1;
    }
    world_rank = g.world_rank;
    if (g.world_size != 4) {
        if (!g.world_rank) fprintf(stderr, "mpi_dev_comm: run with mpirun -np 4\n");
        grid_finalize(&g);
        return 2;
    }
    struct gpu_comms gc;
    if (gpu_bind(&gc, &g) != 0) {
        if (!g.world_rank) printf("mpi_dev_comm: %s: skipped\n", err_msg());
        grid_finalize(&g);
        return 77;
    }
    const struct backend *be = NULL;
    for (int p = 0; p < 2; p++) {
        if (backend_find("cuda", p ? "bf16" : "fp32", &be) != 0) {
            fprintf(stderr, "%s\n", err_msg());
            return 1;
        }
        struct comm *dev_world = dev_comm_create(g.world, be, DEV_STAGED);
        EXPECT(dev_world->on_device && dev_world->size == 4 && dev_world->rank == g.world_rank, "device comm shape");
        collectives(be, g.world, dev_world);
        // on the grid's DP group (ranks {0,2} and {1,3}) too, while the TP group's runs beside it
        EXPECT(gpu_comms_create(&gc, &g, be, "staged") == 0, "gpu_comms_create staged: %s", err_msg());
        collectives(be, gc.dp_host, gc.dp);
        collectives(be, gc.tp_host, gc.tp);
        grad_sync(be, gc.dp_host, gc.dp);
        double s = dev_comm_take_seconds(gc.dp);
        EXPECT(s > 0, "the DP communicator's operations took %g s", s);
        EXPECT(dev_comm_take_seconds(gc.dp) == 0, "the time is taken once");
        EXPECT(dev_comm_take_seconds(g.world) == 0, "a host communicator has no device time");
        gpu_comms_free(&gc);
        dev_comm_destroy(dev_world);
    }
    // the transport rule: ranks sharing a GPU (every rank here) never get NCCL
    EXPECT(gc.shared || gpu_count() >= g.ranks_per_node, "gpu_bind: 4 ranks on %d GPUs must share", gpu_count());
    if (gc.shared) {
        err_clear();
        EXPECT(gpu_comms_create(&gc, &g, be, "nccl") != 0, "NCCL accepted with ranks sharing a GPU");
        EXPECT(strstr(err_msg(), "parallel.gpu_comm = nccl: ") != NULL, "the refusal names the key: %s", err_msg());
        if (!g.world_rank) printf("refused as it should: %s\n", err_msg());
        EXPECT(gpu_comms_create(&gc, &g, be, "auto") == 0 && gc.transport == DEV_STAGED, "auto with shared GPUs: staged");
        gpu_comms_free(&gc);
    }
    int all = (int)comm_all_reduce_f64(g.world, failures, COMM_SUM);
    if (!g.world_rank) printf("mpi_dev_comm: %s (%d failures over 4 ranks)\n", all ? "FAILED" : "all checks passed", all);
    grid_finalize(&g);
    return all ? 1 : 0;
}
