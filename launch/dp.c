// Bucketed, overlapped data-parallel gradient sum and the ZeRO-1 collectives; see dp.h.
#include "launch/dp.h"

#include <stdlib.h>

#include "core/error.h"

struct dp_sync *dp_sync_create(struct comm *dp, void *grads, size_t n_total, double bucket_mb) {
    struct dp_sync *s = xcalloc(1, sizeof(*s));
    if (!(bucket_mb > 0)) bucket_mb = DP_BUCKET_MB_DEFAULT;
    double elems = bucket_mb * 1024.0 * 1024.0 / sizeof(float);
    s->dp = dp;
    s->grads = grads;
    s->n_total = n_total;
    s->bucket_elems = elems < 1 ? 1 : elems > (double)n_total ? (n_total ? n_total : 1) : (size_t)elems;
    s->n_buckets = (int)((n_total + s->bucket_elems - 1) / s->bucket_elems);
    s->buckets = xcalloc((size_t)s->n_buckets + 1, sizeof(*s->buckets));
    for (int i = 0; i < s->n_buckets; i++) {
        size_t end = n_total - (size_t)i * s->bucket_elems;
        size_t start = end > s->bucket_elems ? end - s->bucket_elems : 0;
        s->buckets[i].offset = start;
        s->buckets[i].n = end - start;
    }
    return s;
}

void dp_sync_destroy(struct dp_sync *s) {
    if (!s) return;
    for (int i = 0; i < s->n_buckets; i++) comm_wait(s->dp, &s->buckets[i].req);
    free(s->buckets);
    free(s);
}

// The bucket holding element x (buckets count from the end).
static int bucket_of(const struct dp_sync *s, size_t x) { return (int)((s->n_total - 1 - x) / s->bucket_elems); }

static void bucket_start(struct dp_sync *s, struct dp_bucket *b) {
    comm_all_reduce_start(s->dp, s->grads + b->offset, b->n, COMM_F32, COMM_SUM, &b->req);
    b->started = 1;
}

// Lets MPI move the data of the buckets in flight; notes the ones that completed.
static void progress(struct dp_sync *s) {
    for (int i = 0; i < s->n_buckets; i++) {
        struct dp_bucket *b = &s->buckets[i];
        if (b->started && !b->done && comm_test(s->dp, &b->req)) {
            b->done = 1;
            s->n_done_early++;
        }
    }
}

void dp_sync_on_ready(void *ctx, size_t off, size_t n) {
    struct dp_sync *s = ctx;
    CHECKF(!s->finished, "gradients reported ready after dp_sync_finish (missing dp_sync_reset?)");
    CHECKF(off <= s->n_total && n <= s->n_total - off, "range [%zu, %zu) outside the %zu gradients", off, off + n,
           s->n_total);
    if (n == 0) return;
    s->n_reported += n;
    // Tail-side bucket first, so that one long range starts its buckets in buffer order from the end.
    for (int i = bucket_of(s, off + n - 1); i <= bucket_of(s, off); i++) {
        struct dp_bucket *b = &s->buckets[i];
        size_t lo = off > b->offset ? off : b->offset;
        size_t hi = off + n < b->offset + b->n ? off + n : b->offset + b->n;
        b->ready += hi - lo;
        CHECKF(b->ready <= b->n, "gradient elements in [%zu, %zu) reported ready twice", b->offset, b->offset + b->n);
        if (b->ready == b->n) {
            bucket_start(s, b);
            s->n_overlapped++;
        }
    }
    progress(s);
}

void dp_sync_finish(struct dp_sync *s) {
    CHECKF(!s->finished, "dp_sync_finish called twice for one step");
    progress(s);
    for (int i = 0; i < s->n_buckets; i++) {
        struct dp_bucket *b = &s->buckets[i];
        if (!b->started) continue;
        comm_wait(s->dp, &b->req);
        b->done = 1;
    }
    // Nothing is left to overlap with: the blocking all-reduce is the faster one (Open MPI's tuned
    // collectives against libnbc's schedules). Every rank issues these in the same order after the
    // same non-blocking ones, so the collectives still match.
    for (int i = 0; i < s->n_buckets; i++) {
        struct dp_bucket *b = &s->buckets[i];
        if (b->started) continue;
        comm_all_reduce(s->dp, s->grads + b->offset, b->n, COMM_F32, COMM_SUM);
        b->started = b->done = 1;
    }
    s->finished = 1;
}

void dp_sync_reset(struct dp_sync *s) {
    for (int i = 0; i < s->n_buckets; i++) {
        struct dp_bucket *b = &s->buckets[i];
        CHECKF(!b->started || b->done, "dp_sync_reset while bucket %d is in flight (call dp_sync_finish)", i);
        b->ready = 0;
        b->started = b->done = 0;
    }
    s->finished = 0;
    s->n_overlapped = s->n_done_early = 0;
    s->n_reported = 0;
}

// ---------------------------------------------------------------------------------------------------
// ZeRO-1
// ---------------------------------------------------------------------------------------------------

size_t dp_shard_size(size_t n, int dp) { return (n + (size_t)dp - 1) / (size_t)dp; }

void dp_reduce_scatter_grads(struct comm *dp, void *shard, const void *grads, size_t n_padded) {
    CHECKF(n_padded % (size_t)dp->size == 0, "%zu elements are not padded to a multiple of dp %d", n_padded, dp->size);
    comm_reduce_scatter(dp, shard, grads, n_padded / (size_t)dp->size, COMM_F32);
}

void dp_all_gather_params(struct comm *dp, void *params, const void *shard, size_t n_padded, size_t elem_size) {
    CHECKF(n_padded % (size_t)dp->size == 0, "%zu elements are not padded to a multiple of dp %d", n_padded, dp->size);
    comm_all_gather(dp, params, shard, n_padded / (size_t)dp->size, comm_dtype_of(elem_size));
}
