// All-reduce bandwidth of the MPI communicator for 1 MB .. 64 MB of fp32 (the range of DP gradient
// buckets), and the same buffer through dp_sync with its default 25 MB buckets: "nb" with every bucket
// reported ready (non-blocking all-reduces, as during backward), "blk" with none reported (blocking
// all-reduces in dp_sync_finish).
//
//   mpirun -np 2 build/bench/bench_comm [max_MB]
//
// algbw = bytes / time; busbw = algbw * 2 (n - 1) / n, the traffic each rank's link carries in a ring
// all-reduce (NCCL's convention), comparable across rank counts.
#include <stdio.h>
#include <stdlib.h>

#include "core/error.h"
#include "core/timer.h"
#include "launch/dp.h"
#include "launch/grid.h"
#include "launch/mpi_comm.h"

static double time_all_reduce(struct comm *c, float *buf, size_t n, int iters) {
    comm_barrier(c);
    double t0 = time_now();
    for (int i = 0; i < iters; i++) comm_all_reduce(c, buf, n, COMM_F32, COMM_SUM);
    double t = (time_now() - t0) / iters;
    return comm_all_reduce_f64(c, t, COMM_MAX);  // the slowest rank's time
}

// report: the whole buffer reported ready (non-blocking buckets), else none (blocking at finish).
static double time_dp_sync(struct comm *c, float *buf, size_t n, int iters, int report) {
    struct dp_sync *s = dp_sync_create(c, buf, n, DP_BUCKET_MB_DEFAULT);
    comm_barrier(c);
    double t0 = time_now();
    for (int i = 0; i < iters; i++) {
        if (report) dp_sync_on_ready(s, 0, n);
        dp_sync_finish(s);
        dp_sync_reset(s);
    }
    double t = (time_now() - t0) / iters;
    dp_sync_destroy(s);
    return comm_all_reduce_f64(c, t, COMM_MAX);
}

int main(int argc, char **argv) {
    struct grid g;
    if (grid_init(&g, &argc, &argv, 1) != 0) {
        fprintf(stderr, "bench_comm: %s\n", err_msg());
        grid_finalize(&g);
        return 1;
    }
    int max_mb = argc > 1 ? atoi(argv[1]) : 64;
    if (g.world_size < 2 && g.world_rank == 0)
        fprintf(stderr, "bench_comm: one rank: nothing to reduce (mpirun -np 2 %s)\n", argv[0]);
    const size_t max_n = (size_t)max_mb * 1024 * 1024 / sizeof(float);
    float *buf = xmalloc_aligned(max_n * sizeof(float));
    for (size_t i = 0; i < max_n; i++) buf[i] = 1.0f;
    const double ring = g.world_size > 1 ? 2.0 * (g.world_size - 1) / g.world_size : 1.0;
    if (g.world_rank == 0) {
        printf("all-reduce, fp32 SUM, %d ranks\n", g.world_size);
        printf("%8s %10s %11s %11s %16s %16s\n", "size MB", "time ms", "algbw GB/s", "busbw GB/s",
               "dp_sync nb ms", "dp_sync blk ms");
    }
    for (int mb = 1; mb <= max_mb; mb *= 2) {
        const size_t n = (size_t)mb * 1024 * 1024 / sizeof(float);
        const int iters = mb <= 8 ? 20 : mb <= 32 ? 8 : 4;
        comm_all_reduce(g.world, buf, n, COMM_F32, COMM_SUM);  // warm-up
        double t = time_all_reduce(g.world, buf, n, iters);
        double ts = time_dp_sync(g.world, buf, n, iters, 1), tf = time_dp_sync(g.world, buf, n, iters, 0);
        double bytes = (double)n * sizeof(float);
        if (g.world_rank == 0)
            printf("%8d %10.3f %11.2f %11.2f %16.3f %16.3f\n", mb, 1e3 * t, bytes / t / 1e9, ring * bytes / t / 1e9,
                   1e3 * ts, 1e3 * tf);
    }
    free(buf);
    grid_finalize(&g);
    return 0;
}
