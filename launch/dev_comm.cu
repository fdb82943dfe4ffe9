// Device communicators: the shared layer (ordering, requests, timing) over two transports (NCCL, host-
// staged MPI). See launch/dev_comm.h for the design and launch/README.md for when each is used.
//
// Layout of this file: the transports' primitives first (staged_*, nccl_*), each moving the bytes of one
// collective on a given stream; then the layer, whose comm_ops call them through one switch per
// operation. Nothing above the primitives knows which transport runs.
#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>
#ifdef LLAMAC_WITH_NCCL
#include <nccl.h>
#endif

#include "core/cuda_check.h"
#include "core/cuda_ctx.h"

extern "C" {
#include "core/comm.h"
#include "core/error.h"
#include "launch/dev_comm.h"
}

// The staging buffer of blocking staged operations: 64 MiB, or LLAMAC_GPU_STAGE_BYTES (at least 64; the
// tests set it small so that every operation goes piece by piece).
static size_t stage_bytes(void) {
    const char *e = getenv("LLAMAC_GPU_STAGE_BYTES");
    long long v = e ? atoll(e) : 0;
    return v >= 64 ? (size_t)v : (size_t)64 << 20;
}

enum req_state { REQ_COPY_OUT, REQ_REDUCING, REQ_COPY_IN };

struct dev_req {
    struct dev_req *next;    // the communicator's queue, in start order
    void *buf;
    size_t n;
    enum comm_dtype t;
    enum comm_op op;
    enum req_state state;
    cudaEvent_t copied;      // staged: buf is on the host
    cudaEvent_t done;        // buf holds the result (on the side stream)
    struct comm_req host;    // staged: the MPI request
    void *stage;             // staged: pinned host copy of buf ...
    size_t stage_bytes;      // ... of this many bytes (from the communicator's pool)
    int timing;              // index of its event pair
    int written;             // the done event is recorded
};

struct timing_pair {
    cudaEvent_t start, end;
};

struct dev_comm {
    struct comm base;  // first: a struct comm * of ours is a struct dev_comm *
    struct comm *host;
    const struct backend *be;
    enum dev_transport transport;
    cudaStream_t side;          // non-blocking all-reduces run here
    void *stage;                // stage_size bytes, pinned (staged transport)
    size_t stage_size;
    struct dev_req *head, *tail;
    // pinned host buffers of finished non-blocking requests, kept for the next ones (the same buckets
    // come back every step; cudaMallocHost and cudaFreeHost are slow and may synchronize the device)
    struct pinned { void *p; size_t bytes; } pool[64];
    int n_pool;
    struct timing_pair *tm;     // one pair per operation since the last dev_comm_take_seconds
    int n_tm, cap_tm;
#ifdef LLAMAC_WITH_NCCL
    ncclComm_t nccl;
#endif
};

static struct dev_comm *dc_of(struct comm *c) { return (struct dev_comm *)c; }
static cudaStream_t compute(const struct dev_comm *d) { return cuda_stream(d->be); }
static char *at(const void *p, size_t i, enum comm_dtype t) { return (char *)p + i * comm_dtype_size(t); }
static size_t min_sz(size_t a, size_t b) { return a < b ? a : b; }

// An event query that leaves no error behind when the event has not completed yet.
static int event_done(cudaEvent_t e) {
    cudaError_t r = cudaEventQuery(e);
    if (r == cudaErrorNotReady) {
        if (cudaPeekAtLastError() == cudaErrorNotReady) (void)cudaGetLastError();
        return 0;
    }
    CUDA_CHECK(r);
    return 1;
}

// ---------------------------------------------------------------------------------------------------
// Staged transport: device -> pinned host -> the host communicator's collective -> device. Blocking
// primitives synchronize stream s around the host part; pieces of at most stage_size bytes.
// ---------------------------------------------------------------------------------------------------

static void d2h(void *h, const void *d, size_t bytes, cudaStream_t s) {
    CUDA_CHECK(cudaMemcpyAsync(h, d, bytes, cudaMemcpyDeviceToHost, s));
}
static void h2d(void *d, const void *h, size_t bytes, cudaStream_t s) {
    CUDA_CHECK(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, s));
}

static void staged_all_reduce(struct dev_comm *d, void *buf, size_t n, enum comm_dtype t, enum comm_op op,
                              cudaStream_t s) {
    const size_t es = comm_dtype_size(t), piece = d->stage_size / es;
    for (size_t a = 0; a < n; a += piece) {
        size_t m = min_sz(piece, n - a);
        d2h(d->stage, at(buf, a, t), m * es, s);
        CUDA_CHECK(cudaStreamSynchronize(s));
        comm_all_reduce(d->host, d->stage, m, t, op);
        h2d(at(buf, a, t), d->stage, m * es, s);
        CUDA_CHECK(cudaStreamSynchronize(s));  // before the staging buffer is reused
    }
}

// out (n) = sum over ranks of in[rank*n, +n): piece [a, a+m) of every rank's block, packed, reduced.
static void staged_reduce_scatter(struct dev_comm *d, void *out, const void *in, size_t n, enum comm_dtype t,
                                  cudaStream_t s) {
    const size_t es = comm_dtype_size(t), size = (size_t)d->base.size, piece = d->stage_size / ((size + 1) * es);
    CHECKF(piece > 0, "reduce_scatter: %zu ranks do not fit the staging buffer", size);
    for (size_t a = 0; a < n; a += piece) {
        size_t m = min_sz(piece, n - a);
        char *packed = (char *)d->stage, *mine = packed + size * m * es;
        for (size_t r = 0; r < size; r++) d2h(packed + r * m * es, at(in, r * n + a, t), m * es, s);
        CUDA_CHECK(cudaStreamSynchronize(s));
        comm_reduce_scatter(d->host, mine, packed, m, t);
        h2d(at(out, a, t), mine, m * es, s);
        CUDA_CHECK(cudaStreamSynchronize(s));
    }
}

// out (size*n) = every rank's in (n) in rank order; in may be out's own block.
static void staged_all_gather(struct dev_comm *d, void *out, const void *in, size_t n, enum comm_dtype t,
                              cudaStream_t s) {
    const size_t es = comm_dtype_size(t), size = (size_t)d->base.size, rank = (size_t)d->base.rank;
    const size_t piece = d->stage_size / (size * es);
    CHECKF(piece > 0, "all_gather: %zu ranks do not fit the staging buffer", size);
    for (size_t a = 0; a < n; a += piece) {
        size_t m = min_sz(piece, n - a);
        char *h = (char *)d->stage;
        d2h(h + rank * m * es, at(in, a, t), m * es, s);
        CUDA_CHECK(cudaStreamSynchronize(s));
        comm_all_gather(d->host, h, h + rank * m * es, m, t);
        for (size_t r = 0; r < size; r++) h2d(at(out, r * n + a, t), h + r * m * es, m * es, s);
        CUDA_CHECK(cudaStreamSynchronize(s));
    }
}

static void staged_broadcast(struct dev_comm *d, void *buf, size_t n, enum comm_dtype t, int root, cudaStream_t s) {
    const size_t es = comm_dtype_size(t), piece = d->stage_size / es;
    for (size_t a = 0; a < n; a += piece) {
        size_t m = min_sz(piece, n - a);
        d2h(d->stage, at(buf, a, t), m * es, s);
        CUDA_CHECK(cudaStreamSynchronize(s));
        comm_broadcast(d->host, d->stage, m, t, root);
        h2d(at(buf, a, t), d->stage, m * es, s);
        CUDA_CHECK(cudaStreamSynchronize(s));
    }
}

// The non-blocking all-reduce: the copy to the host is queued on the side stream now; the MPI operation
// starts once it has finished (staged_progress), the copy back once that has finished.
static void *pinned_get(struct dev_comm *d, size_t bytes, size_t *got) {
    for (int i = 0; i < d->n_pool; i++)
        if (d->pool[i].bytes >= bytes) {
            void *p = d->pool[i].p;
            *got = d->pool[i].bytes;
            d->pool[i] = d->pool[--d->n_pool];
            return p;
        }
    void *p = NULL;
    CUDA_CHECK(cudaMallocHost(&p, bytes ? bytes : 1));
    *got = bytes;
    return p;
}

static void pinned_put(struct dev_comm *d, void *p, size_t bytes) {
    if (d->n_pool == (int)(sizeof(d->pool) / sizeof(d->pool[0]))) {
        CUDA_CHECK(cudaFreeHost(p));
        return;
    }
    d->pool[d->n_pool].p = p;
    d->pool[d->n_pool++].bytes = bytes;
}

static void staged_start(struct dev_comm *d, struct dev_req *r) {
    const size_t bytes = r->n * comm_dtype_size(r->t);
    r->stage = pinned_get(d, bytes, &r->stage_bytes);
    CUDA_CHECK(cudaEventCreateWithFlags(&r->copied, cudaEventDisableTiming));
    d2h(r->stage, r->buf, bytes, d->side);
    CUDA_CHECK(cudaEventRecord(r->copied, d->side));
    r->state = REQ_COPY_OUT;
}

// Starts the MPI operations of queued requests whose copy has finished, strictly in start order (a
// request whose copy is still running holds back the later ones); with block, waits for the copies.
static void staged_progress(struct dev_comm *d, int block) {
    for (struct dev_req *r = d->head; r; r = r->next) {
        if (r->state != REQ_COPY_OUT) continue;
        if (block) CUDA_CHECK(cudaEventSynchronize(r->copied));
        else if (!event_done(r->copied)) return;
        comm_all_reduce_start(d->host, r->stage, r->n, r->t, r->op, &r->host);
        r->state = REQ_REDUCING;
    }
}

// The MPI operation of r has completed (or, with block, is waited for): queue the copy back.
static int staged_finish(struct dev_comm *d, struct dev_req *r, int block) {
    if (r->state == REQ_REDUCING) {
        if (!block && !comm_test(d->host, &r->host)) return 0;
        comm_wait(d->host, &r->host);
        h2d(r->buf, r->stage, r->n * comm_dtype_size(r->t), d->side);
        r->state = REQ_COPY_IN;
    }
    return r->state == REQ_COPY_IN;
}

// ---------------------------------------------------------------------------------------------------
// NCCL transport: each collective on stream s, device buffers in and out.
// ---------------------------------------------------------------------------------------------------
#ifdef LLAMAC_WITH_NCCL
#define NCCL_CHECK(call)                                                                              \
    do {                                                                                              \
        ncclResult_t r_ = (call);                                                                     \
        if (r_ != ncclSuccess) check_fail(__FILE__, __LINE__, #call, "%s", ncclGetErrorString(r_));   \
    } while (0)

static ncclDataType_t nccl_type(enum comm_dtype t) {
    switch (t) {
    case COMM_F32: return ncclFloat32;
    case COMM_F64: return ncclFloat64;
    case COMM_I64: return ncclInt64;
    case COMM_U8: return ncclUint8;
    case COMM_BF16: return ncclBfloat16;
    }
    CHECKF(0, "unknown comm dtype %d", (int)t);
    return ncclFloat32;
}
static ncclRedOp_t nccl_op(enum comm_op op) { return op == COMM_MAX ? ncclMax : ncclSum; }

static void nccl_all_reduce(struct dev_comm *d, void *buf, size_t n, enum comm_dtype t, enum comm_op op,
                            cudaStream_t s) {
    NCCL_CHECK(ncclAllReduce(buf, buf, n, nccl_type(t), nccl_op(op), d->nccl, s));
}
static void nccl_reduce_scatter(struct dev_comm *d, void *out, const void *in, size_t n, enum comm_dtype t,
                                cudaStream_t s) {
    NCCL_CHECK(ncclReduceScatter(in, out, n, nccl_type(t), ncclSum, d->nccl, s));
}
static void nccl_all_gather(struct dev_comm *d, void *out, const void *in, size_t n, enum comm_dtype t,
                            cudaStream_t s) {
    NCCL_CHECK(ncclAllGather(in, out, n, nccl_type(t), d->nccl, s));  // in == out + rank*n is NCCL's in-place
}
static void nccl_broadcast(struct dev_comm *d, void *buf, size_t n, enum comm_dtype t, int root, cudaStream_t s) {
    NCCL_CHECK(ncclBroadcast(buf, buf, n, nccl_type(t), root, d->nccl, s));
}
#endif

// ---------------------------------------------------------------------------------------------------
// The layer: struct comm_ops for device buffers, the same for both transports.
// ---------------------------------------------------------------------------------------------------

// A pair of timing events; start recorded on s now (the operation's end is recorded by the caller).
static int timing_begin(struct dev_comm *d, cudaStream_t s) {
    if (d->n_tm == d->cap_tm) {
        int cap = d->cap_tm ? 2 * d->cap_tm : 64;
        d->tm = (struct timing_pair *)realloc(d->tm, sizeof(*d->tm) * (size_t)cap);
        CHECK(d->tm);
        for (int i = d->cap_tm; i < cap; i++) {
            CUDA_CHECK(cudaEventCreate(&d->tm[i].start));
            CUDA_CHECK(cudaEventCreate(&d->tm[i].end));
        }
        d->cap_tm = cap;
    }
    CUDA_CHECK(cudaEventRecord(d->tm[d->n_tm].start, s));
    return d->n_tm++;
}
static void timing_end(struct dev_comm *d, int i, cudaStream_t s) { CUDA_CHECK(cudaEventRecord(d->tm[i].end, s)); }

// Before a blocking operation: every non-blocking one started earlier has issued its MPI operation, so
// that the host communicator sees the same order on every rank.
static void before_blocking(struct dev_comm *d) {
    if (d->transport == DEV_STAGED) staged_progress(d, 1);
}

static void dc_all_reduce(struct comm *c, void *buf, size_t n, enum comm_dtype t, enum comm_op op) {
    struct dev_comm *d = dc_of(c);
    if (n == 0) return;
    before_blocking(d);
    int k = timing_begin(d, compute(d));
    if (d->transport == DEV_STAGED) staged_all_reduce(d, buf, n, t, op, compute(d));
#ifdef LLAMAC_WITH_NCCL
    else nccl_all_reduce(d, buf, n, t, op, compute(d));
#endif
    timing_end(d, k, compute(d));
}

static void dc_reduce_scatter(struct comm *c, void *out, const void *in, size_t n, enum comm_dtype t) {
    struct dev_comm *d = dc_of(c);
    if (n == 0) return;
    if (c->size == 1) {
        CUDA_CHECK(cudaMemcpyAsync(out, in, n * comm_dtype_size(t), cudaMemcpyDeviceToDevice, compute(d)));
        return;
    }
    before_blocking(d);
    int k = timing_begin(d, compute(d));
    if (d->transport == DEV_STAGED) staged_reduce_scatter(d, out, in, n, t, compute(d));
#ifdef LLAMAC_WITH_NCCL
    else nccl_reduce_scatter(d, out, in, n, t, compute(d));
#endif
    timing_end(d, k, compute(d));
}

static void dc_all_gather(struct comm *c, void *out, const void *in, size_t n, enum comm_dtype t) {
    struct dev_comm *d = dc_of(c);
    if (n == 0) return;
    if (c->size == 1) {
        if (out != in)
            CUDA_CHECK(cudaMemcpyAsync(out, in, n * comm_dtype_size(t), cudaMemcpyDeviceToDevice, compute(d)));
        return;
    }
    before_blocking(d);
    int k = timing_begin(d, compute(d));
    if (d->transport == DEV_STAGED) staged_all_gather(d, out, in, n, t, compute(d));
#ifdef LLAMAC_WITH_NCCL
    else nccl_all_gather(d, out, in, n, t, compute(d));
#endif
    timing_end(d, k, compute(d));
}

static void dc_broadcast(struct comm *c, void *buf, size_t n, enum comm_dtype t, int root) {
    struct dev_comm *d = dc_of(c);
    if (n == 0) return;
    before_blocking(d);
    int k = timing_begin(d, compute(d));
    if (d->transport == DEV_STAGED) staged_broadcast(d, buf, n, t, root, compute(d));
#ifdef LLAMAC_WITH_NCCL
    else nccl_broadcast(d, buf, n, t, root, compute(d));
#endif
    timing_end(d, k, compute(d));
}

static void dc_barrier(struct comm *c) {
    struct dev_comm *d = dc_of(c);
    before_blocking(d);
    CUDA_CHECK(cudaStreamSynchronize(compute(d)));
    comm_barrier(d->host);
}

// Non-blocking all-reduce: ordered after the ops called so far (an event on the compute stream that the
// side stream waits for), run on the side stream; comm_wait orders the compute stream after it.
static void dc_all_reduce_start(struct comm *c, void *buf, size_t n, enum comm_dtype t, enum comm_op op,
                                struct comm_req *req) {
    struct dev_comm *d = dc_of(c);
    req->impl = NULL;
    if (n == 0) return;
    struct dev_req *r = (struct dev_req *)xcalloc(1, sizeof(*r));
    r->buf = buf, r->n = n, r->t = t, r->op = op;
    cudaEvent_t ready;
    CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventRecord(ready, compute(d)));
    CUDA_CHECK(cudaStreamWaitEvent(d->side, ready, 0));
    CUDA_CHECK(cudaEventDestroy(ready));  // released once the wait has been enqueued
    CUDA_CHECK(cudaEventCreateWithFlags(&r->done, cudaEventDisableTiming));
    r->timing = timing_begin(d, d->side);
    if (d->transport == DEV_STAGED) {
        staged_start(d, r);
    } else {
#ifdef LLAMAC_WITH_NCCL
        nccl_all_reduce(d, buf, n, t, op, d->side);
#endif
        r->state = REQ_COPY_IN;
    }
    if (d->tail) d->tail->next = r;
    else d->head = r;
    d->tail = r;
    req->impl = r;
    if (d->transport == DEV_STAGED) staged_progress(d, 0);
}

// Once the transport has written the result: record the done event (and the end of its timing).
static void mark_written(struct dev_comm *d, struct dev_req *r) {
    if (r->written) return;
    r->written = 1;
    timing_end(d, r->timing, d->side);
    CUDA_CHECK(cudaEventRecord(r->done, d->side));
}

static int dc_test(struct comm *c, struct comm_req *req) {
    struct dev_comm *d = dc_of(c);
    struct dev_req *r = (struct dev_req *)req->impl;
    if (!r) return 1;
    if (d->transport == DEV_STAGED) {
        staged_progress(d, 0);
        if (!staged_finish(d, r, 0)) return 0;
    }
    mark_written(d, r);
    return event_done(r->done);
}

static void dc_wait(struct comm *c, struct comm_req *req) {
    struct dev_comm *d = dc_of(c);
    struct dev_req *r = (struct dev_req *)req->impl;
    if (!r) return;
    if (d->transport == DEV_STAGED) {
        staged_progress(d, 1);
        staged_finish(d, r, 1);
    }
    mark_written(d, r);
    if (d->transport == DEV_STAGED) {
        CUDA_CHECK(cudaEventSynchronize(r->done));  // the staging buffer is free after the copy back
        pinned_put(d, r->stage, r->stage_bytes);
        CUDA_CHECK(cudaEventDestroy(r->copied));
    }
    CUDA_CHECK(cudaStreamWaitEvent(compute(d), r->done, 0));
    CUDA_CHECK(cudaEventDestroy(r->done));
    // unlink (requests may be waited for in any order)
    struct dev_req **p = &d->head, *prev = NULL;
    while (*p != r) prev = *p, p = &(*p)->next;
    *p = r->next;
    if (d->tail == r) d->tail = prev;
    free(r);
    req->impl = NULL;
}

static const struct comm_ops dev_ops = {
    dc_all_reduce, dc_all_reduce_start, dc_wait, dc_reduce_scatter, dc_all_gather, dc_broadcast, dc_barrier, dc_test,
};

// ---------------------------------------------------------------------------------------------------
// Life cycle
// ---------------------------------------------------------------------------------------------------

extern "C" int dev_comm_have_nccl(void) {
#ifdef LLAMAC_WITH_NCCL
    return 1;
#else
    return 0;
#endif
}

extern "C" const char *dev_transport_name(enum dev_transport t) { return t == DEV_NCCL ? "nccl" : "staged"; }

extern "C" struct comm *dev_comm_create(struct comm *host, const struct backend *be, enum dev_transport t) {
    CHECKF(be && !strcmp(be->name, "cuda"), "a device communicator needs the CUDA backend");
    if (t == DEV_NCCL && !dev_comm_have_nccl()) {
        err_set("this llamac was built without NCCL (parallel.gpu_comm = nccl)");
        return NULL;
    }
    struct dev_comm *d = (struct dev_comm *)xcalloc(1, sizeof(*d));
    d->base.rank = host->rank;
    d->base.size = host->size;
    d->base.ops = &dev_ops;
    d->base.impl = d;
    d->base.on_device = 1;
    d->host = host;
    d->be = be;
    d->transport = t;
    CUDA_CHECK(cudaStreamCreateWithFlags(&d->side, cudaStreamNonBlocking));
    d->stage_size = stage_bytes();
    if (t == DEV_STAGED) CUDA_CHECK(cudaMallocHost(&d->stage, d->stage_size));
#ifdef LLAMAC_WITH_NCCL
    if (t == DEV_NCCL) {
        ncclUniqueId id;
        if (host->rank == 0) NCCL_CHECK(ncclGetUniqueId(&id));
        comm_broadcast(host, &id, sizeof(id), COMM_U8, 0);
        NCCL_CHECK(ncclCommInitRank(&d->nccl, host->size, id, host->rank));
    }
#endif
    return &d->base;
}

extern "C" void dev_comm_destroy(struct comm *c) {
    if (!c) return;
    CHECKF(c->ops == &dev_ops, "not a device communicator");
    struct dev_comm *d = dc_of(c);
    while (d->head) {
        struct comm_req q = {d->head};
        dc_wait(c, &q);
    }
    CUDA_CHECK(cudaStreamSynchronize(d->side));
#ifdef LLAMAC_WITH_NCCL
    if (d->transport == DEV_NCCL) NCCL_CHECK(ncclCommDestroy(d->nccl));
#endif
    if (d->stage) CUDA_CHECK(cudaFreeHost(d->stage));
    for (int i = 0; i < d->n_pool; i++) CUDA_CHECK(cudaFreeHost(d->pool[i].p));
    for (int i = 0; i < d->cap_tm; i++) {
        CUDA_CHECK(cudaEventDestroy(d->tm[i].start));
        CUDA_CHECK(cudaEventDestroy(d->tm[i].end));
    }
    free(d->tm);
    CUDA_CHECK(cudaStreamDestroy(d->side));
    free(d);
}

extern "C" double dev_comm_take_seconds(struct comm *c) {
    if (!c || c->ops != &dev_ops) return 0;
    struct dev_comm *d = dc_of(c);
    double s = 0;
    int kept = 0;
    for (int i = 0; i < d->n_tm; i++) {
        // a pair whose end is not recorded yet belongs to a request still in flight: keep it
        int in_flight = 0;
        for (struct dev_req *r = d->head; r; r = r->next) in_flight |= r->timing == i;
        if (in_flight) {
            struct timing_pair tmp = d->tm[kept];
            d->tm[kept] = d->tm[i];
            d->tm[i] = tmp;
            for (struct dev_req *r = d->head; r; r = r->next)
                if (r->timing == i) r->timing = kept;
            kept++;
            continue;
        }
        float ms = 0;
        CUDA_CHECK(cudaEventSynchronize(d->tm[i].end));
        CUDA_CHECK(cudaEventElapsedTime(&ms, d->tm[i].start, d->tm[i].end));
        s += ms / 1e3;
    }
    d->n_tm = kept;
    return s;
}
