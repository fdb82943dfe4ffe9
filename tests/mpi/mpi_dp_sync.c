// Bucketed data-parallel gradient sync (launch/dp.c) against a plain MPI_Allreduce of the same buffer,
// on the DP groups of a 4-rank grid with tp = 2 (2 ranks each) and on the whole world (4 ranks).
//
// Gradients are small integers stored as floats, so every sum is exact whatever order MPI adds in and
// the comparison is bitwise: a bucket reduced twice, skipped, or shifted shows. Bucket sizes go from
// 26 elements (smaller than any range) to larger than the whole buffer; ranges arrive as llama reports
// them (tail, layers last to first, embed), in a shuffled order, as one range, not at all, or only in
// part; the same sync runs several steps through dp_sync_reset. Then the ZeRO-1 reduce-scatter and
// all-gather.
//
// Run: mpirun --oversubscribe -np 4 mpi_dp_sync
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/rng.h"
#include "launch/dp.h"
#include "launch/grid.h"
#include "launch/mpi_comm.h"
#include "mpitest.h"

#define N_TOTAL 10007
#define MAX_RANGES 64

static struct grid g;

struct range { size_t off, n; };

static void fill(float *x, size_t n, int rank, int step) {
    for (size_t i = 0; i < n; i++) x[i] = (float)((int)((rank * 31 + step * 17 + (int)i * 7) % 97) - 48);
}

// llama's order: tail (norm, lm_head), layers from last to first, then embed_tokens.
static int ranges_llama(struct range *r) {
    const size_t embed = 1200, layer = 1700, L = 5;
    int k = 0;
    r[k++] = (struct range){embed + L * layer, N_TOTAL - embed - L * layer};
    for (size_t l = L; l-- > 0;) r[k++] = (struct range){embed + l * layer, layer};
    r[k++] = (struct range){0, embed};
    return k;
}

// A partition into random pieces (1 to 900 elements) reported in a random order, the same on every rank.
static int ranges_shuffled(struct range *r, uint64_t seed) {
    struct rng rg;
    rng_seed(&rg, seed);
    int k = 0;
    size_t off = 0;
    while (off < N_TOTAL) {
        size_t n = 1 + (size_t)(rng_uniform(&rg) * 900);
        if (k == MAX_RANGES - 1 || n > N_TOTAL - off) n = N_TOTAL - off;
        r[k++] = (struct range){off, n};
        off += n;
    }
    for (int i = k - 1; i > 0; i--) {
        int j = (int)(rng_uniform(&rg) * (i + 1));
        struct range t = r[i];
        r[i] = r[j];
        r[j] = t;
    }
    return k;
}

// Checks the bucket table: buckets tile [0, N) from the end, none larger than bucket_elems.
static void check_buckets(const struct dp_sync *s, const char *what) {
    size_t end = N_TOTAL;
    int ok = 1;
    for (int i = 0; i < s->n_buckets; i++) {
        const struct dp_bucket *b = &s->buckets[i];
        if (b->offset + b->n != end || b->n == 0 || b->n > s->bucket_elems) ok = 0;
        end = b->offset;
    }
    mpitest_expect(ok && end == 0, "%s: buckets do not tile the buffer from the end", what);
}

// One step: report the ranges (the first n_report of them), finish, compare with MPI_Allreduce.
static void run_case(const char *group, struct comm *dp, double mb, const char *pattern, const struct range *r, int nr,
                     int n_report, int steps) {
    float *grads = malloc(N_TOTAL * sizeof(float)), *ref = malloc(N_TOTAL * sizeof(float));
    struct dp_sync *s = dp_sync_create(dp, grads, N_TOTAL, mb);
    char what[160];
    char size[32];
    if (mb > 0) snprintf(size, sizeof(size), "%.4g MB", mb);
    else snprintf(size, sizeof(size), "default %g MB", DP_BUCKET_MB_DEFAULT);
    snprintf(what, sizeof(what), "%s, %s buckets (%zu elements, %d buckets), %s ranges (%d of %d reported)", group,
             size, s->bucket_elems, s->n_buckets, pattern, n_report, nr);
    check_buckets(s, what);
    for (int step = 0; step < steps; step++) {
        fill(grads, N_TOTAL, g.world_rank, step);
        MPI_CHECK(MPI_Allreduce(grads, ref, N_TOTAL, MPI_FLOAT, MPI_SUM, comm_mpi_handle(dp)));
        for (int k = 0; k < n_report; k++) dp_sync_on_ready(s, r[k].off, r[k].n);
        // Buckets wholly inside the reported ranges must have started during "backward".
        int expect_started = 0;
        for (int i = 0; i < s->n_buckets; i++) {
            size_t covered = 0;
            for (int k = 0; k < n_report; k++) {
                size_t lo = r[k].off > s->buckets[i].offset ? r[k].off : s->buckets[i].offset;
                size_t e1 = r[k].off + r[k].n, e2 = s->buckets[i].offset + s->buckets[i].n;
                size_t hi = e1 < e2 ? e1 : e2;
                if (hi > lo) covered += hi - lo;
            }
            expect_started += covered == s->buckets[i].n;
        }
        mpitest_expect(s->n_overlapped == expect_started, "%s: %d buckets started during backward, expected %d", what,
                       s->n_overlapped, expect_started);
        int early = s->n_overlapped;
        dp_sync_finish(s);
        size_t bad = 0, first = 0;
        for (size_t i = 0; i < N_TOTAL; i++)
            if (grads[i] != ref[i] && !bad++) first = i;
        if (!mpitest_expect(bad == 0, "%s, step %d: %zu elements differ from MPI_Allreduce (first [%zu]: %g vs %g)",
                            what, step, bad, first, grads[first], ref[first]))
            break;
        if (g.world_rank == 0 && step == steps - 1)
            printf("  ok  %s: %d/%d buckets overlapped, %d done before finish, %d step(s)\n", what, early,
                   s->n_buckets, s->n_done_early, steps);
        dp_sync_reset(s);
    }
    dp_sync_destroy(s);
    free(grads);
    free(ref);
}

static void check_zero1(const char *group, struct comm *dp) {
    const size_t shard = dp_shard_size(N_TOTAL, dp->size), np = shard * (size_t)dp->size;
    mpitest_expect(np >= N_TOTAL && np - N_TOTAL < (size_t)dp->size, "%s: padded size %zu for %d ranks", group, np,
                   dp->size);
    float *grads = calloc(np, sizeof(float)), *ref = calloc(np, sizeof(float)), *sh = malloc(shard * sizeof(float));
    float *params = malloc(np * sizeof(float));
    fill(grads, N_TOTAL, g.world_rank, 5);
    MPI_CHECK(MPI_Allreduce(grads, ref, (int)np, MPI_FLOAT, MPI_SUM, comm_mpi_handle(dp)));
    dp_reduce_scatter_grads(dp, sh, grads, np);
    mpitest_expect(!memcmp(sh, ref + (size_t)dp->rank * shard, shard * sizeof(float)),
                   "%s: reduce-scatter shard %d differs from the same slice of the all-reduce", group, dp->rank);
    memset(params, 0, np * sizeof(float));
    dp_all_gather_params(dp, params, sh, np, sizeof(float));
    mpitest_expect(!memcmp(params, ref, np * sizeof(float)), "%s: all-gather of the shards differs", group);
    memset(params, 0, np * sizeof(float));  // in place: the shard already sits in its slot
    memcpy(params + (size_t)dp->rank * shard, sh, shard * sizeof(float));
    dp_all_gather_params(dp, params, params + (size_t)dp->rank * shard, np, sizeof(float));
    mpitest_expect(!memcmp(params, ref, np * sizeof(float)), "%s: in-place all-gather of the shards differs", group);
    if (g.world_rank == 0) printf("  ok  %s: ZeRO-1 reduce-scatter / all-gather of %zu (padded from %d)\n", group, np, N_TOTAL);
    free(grads);
    free(ref);
    free(sh);
    free(params);
}

int main(int argc, char **argv) {
    if (grid_init(&g, &argc, &argv, 2) != 0) {
        fprintf(stderr, "mpi_dp_sync: %s\n", err_msg());
        grid_finalize(&g);
        return 1;
    }
    struct range llama[MAX_RANGES], shuf[MAX_RANGES], whole = {0, N_TOTAL};
    int nl = ranges_llama(llama), ns = ranges_shuffled(shuf, 7);
    const double mbs[] = {1e-4, 1e-3, 1e-2, 0.04, 0.0};  // 26, 262, 2621, > whole buffer, default 25 MB
    struct comm *groups[] = {g.dp, g.world};
    const char *names[] = {"dp group (2 ranks)", "world (4 ranks)"};
    for (int gi = 0; gi < 2; gi++) {
        for (int k = 0; k < 5; k++) {
            run_case(names[gi], groups[gi], mbs[k], "llama-order", llama, nl, nl, 3);
            run_case(names[gi], groups[gi], mbs[k], "shuffled", shuf, ns, ns, 2);
        }
        run_case(names[gi], groups[gi], 1e-3, "one whole", &whole, 1, 1, 1);
        run_case(names[gi], groups[gi], 1e-3, "no", llama, nl, 0, 1);
        run_case(names[gi], groups[gi], 1e-3, "partial", llama, nl, 3, 2);
        check_zero1(names[gi], groups[gi]);
    }
    // The one-rank group: a sync over comm_self leaves the gradients as they are.
    float x[100], y[100];
    fill(x, 100, 3, 0);
    memcpy(y, x, sizeof(x));
    struct dp_sync *s = dp_sync_create(comm_self(), x, 100, 1e-4);
    dp_sync_on_ready(s, 50, 50);
    dp_sync_on_ready(s, 0, 50);
    dp_sync_finish(s);
    mpitest_expect(!memcmp(x, y, sizeof(x)) && s->n_overlapped == s->n_buckets, "comm_self sync changed the gradients");
    dp_sync_destroy(s);

    int rc = mpitest_finish("mpi_dp_sync");
    grid_finalize(&g);
    return rc;
}
