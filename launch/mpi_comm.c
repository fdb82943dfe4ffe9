// MPI collectives behind struct comm_ops; see mpi_comm.h for the contract.
#include "launch/mpi_comm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/half.h"

struct mpi_comm {
    struct comm base;  // first, so that a struct comm * of ours is a struct mpi_comm *
    MPI_Comm mc;
};

// A non-blocking all-reduce: one MPI request per chunk.
struct mpi_req {
    int n;
    MPI_Request r[];
};

static size_t chunk_elems = (size_t)1 << 30;

size_t comm_mpi_chunk(void) { return chunk_elems; }
void comm_mpi_set_chunk(size_t max_elems) {
    CHECKF(max_elems >= 1 && max_elems <= (size_t)1 << 30, "chunk %zu outside [1, 2^30]", max_elems);
    chunk_elems = max_elems;
}

void mpi_check_fail(const char *file, int line, const char *call, int rc) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof(msg), "MPI error %d", rc);
    int rank = -1, init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init && !fin) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    fprintf(stderr, "llamac[rank %d]: internal error at %s:%d: %s failed: %s\n", rank, file, line, call, msg);
    fflush(stderr);
    if (init && !fin) MPI_Abort(MPI_COMM_WORLD, 1);
    abort();
}

static MPI_Datatype mpi_dtype(enum comm_dtype t) {
    switch (t) {
    case COMM_BF16: return MPI_UINT16_T;
    case COMM_F32: return MPI_FLOAT;
    case COMM_F64: return MPI_DOUBLE;
    case COMM_I64: return MPI_INT64_T;
    case COMM_U8: return MPI_UINT8_T;
    }
    CHECKF(0, "unknown comm dtype %d", (int)t);
    return MPI_DATATYPE_NULL;
}

// MPI has no bf16: its reductions are user ops on uint16 bit patterns that compute in fp32.
static void bf16_sum(void *in, void *inout, int *len, MPI_Datatype *dt) {
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++) b[i] = f32_to_bf16(bf16_to_f32(a[i]) + bf16_to_f32(b[i]));
}
static void bf16_max(void *in, void *inout, int *len, MPI_Datatype *dt) {
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++)
        if (bf16_to_f32(a[i]) > bf16_to_f32(b[i])) b[i] = a[i];
}

static MPI_Op mpi_op(enum comm_op op, enum comm_dtype t) {
    if (t == COMM_BF16) {
        static MPI_Op sum = MPI_OP_NULL, max = MPI_OP_NULL;  // created once, after MPI_Init
        if (sum == MPI_OP_NULL) {
            MPI_CHECK(MPI_Op_create(bf16_sum, 1, &sum));
            MPI_CHECK(MPI_Op_create(bf16_max, 1, &max));
        }
        return op == COMM_SUM ? sum : max;
    }
    switch (op) {
    case COMM_SUM: return MPI_SUM;
    case COMM_MAX: return MPI_MAX;
    }
    CHECKF(0, "unknown comm op %d", (int)op);
    return MPI_OP_NULL;
}

static MPI_Comm handle(struct comm *c) { return ((struct mpi_comm *)c)->mc; }

static void *at(const void *base, size_t i, enum comm_dtype t) {
    return (char *)base + i * comm_dtype_size(t);
}

static size_t min_sz(size_t a, size_t b) { return a < b ? a : b; }

// ---------------------------------------------------------------------------------------------------
// The collectives
// ---------------------------------------------------------------------------------------------------

static void mpi_all_reduce(struct comm *c, void *buf, size_t n, enum comm_dtype t, enum comm_op op) {
    for (size_t a = 0; a < n; a += chunk_elems)
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, at(buf, a, t), (int)min_sz(chunk_elems, n - a), mpi_dtype(t),
                                mpi_op(op, t), handle(c)));
}

static void mpi_all_reduce_start(struct comm *c, void *buf, size_t n, enum comm_dtype t, enum comm_op op,
                                 struct comm_req *req) {
    req->impl = NULL;
    if (n == 0) return;
    int nr = (int)((n + chunk_elems - 1) / chunk_elems);
    struct mpi_req *r = xmalloc(sizeof(*r) + sizeof(MPI_Request) * (size_t)nr);
    r->n = nr;
    for (int i = 0; i < nr; i++) {
        size_t a = (size_t)i * chunk_elems;
        MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, at(buf, a, t), (int)min_sz(chunk_elems, n - a), mpi_dtype(t),
                                 mpi_op(op, t), handle(c), &r->r[i]));
    }
    req->impl = r;
}

static void mpi_wait(struct comm *c, struct comm_req *req) {
    struct mpi_req *r = req->impl;
    if (!r) return;
    MPI_CHECK(MPI_Waitall(r->n, r->r, MPI_STATUSES_IGNORE));
    free(r);
    req->impl = NULL;
}

// out (n) = sum over ranks of every rank's in[rank*n .. rank*n + n)
static void mpi_reduce_scatter(struct comm *c, void *out, const void *in, size_t n, enum comm_dtype t) {
    const size_t es = comm_dtype_size(t), size = (size_t)c->size;
    const char *ib = in, *ob = out;
    CHECKF(ob + n * es <= ib || ib + size * n * es <= ob, "reduce_scatter: out overlaps in");
    if (n <= chunk_elems) {
        MPI_CHECK(MPI_Reduce_scatter_block(in, out, (int)n, mpi_dtype(t), mpi_op(COMM_SUM, t), handle(c)));
        return;
    }
    // Predefined reductions take only predefined types, so a strided piece cannot be described with a
    // derived type: pack each piece of every rank's block contiguously instead.
    char *tmp = xmalloc(size * chunk_elems * es);
    for (size_t a = 0; a < n; a += chunk_elems) {
        size_t m = min_sz(chunk_elems, n - a);
        for (size_t r = 0; r < size; r++) memcpy(tmp + r * m * es, ib + (r * n + a) * es, m * es);
        MPI_CHECK(MPI_Reduce_scatter_block(tmp, at(out, a, t), (int)m, mpi_dtype(t), mpi_op(COMM_SUM, t), handle(c)));
    }
    free(tmp);
}

// out (size*n) = every rank's in (n) in rank order; in may be out's own block (in place).
static void mpi_all_gather(struct comm *c, void *out, const void *in, size_t n, enum comm_dtype t) {
    const size_t es = comm_dtype_size(t);
    const int inplace = in == at(out, (size_t)c->rank * n, t);
    if (n <= chunk_elems) {
        MPI_CHECK(MPI_Allgather(inplace ? MPI_IN_PLACE : in, (int)n, mpi_dtype(t), out, (int)n, mpi_dtype(t),
                                handle(c)));
        return;
    }
    // Piece [a, a+m) of every rank lands at out + r*n + a: a receive type of m elements whose extent is
    // a whole rank block.
    for (size_t a = 0; a < n; a += chunk_elems) {
        size_t m = min_sz(chunk_elems, n - a);
        MPI_Datatype piece, strided;
        MPI_CHECK(MPI_Type_contiguous((int)m, mpi_dtype(t), &piece));
        MPI_CHECK(MPI_Type_create_resized(piece, 0, (MPI_Aint)(n * es), &strided));
        MPI_CHECK(MPI_Type_commit(&strided));
        MPI_CHECK(MPI_Allgather(inplace ? MPI_IN_PLACE : at(in, a, t), (int)m, mpi_dtype(t), at(out, a, t), 1,
                                strided, handle(c)));
        MPI_CHECK(MPI_Type_free(&strided));
        MPI_CHECK(MPI_Type_free(&piece));
    }
}

static void mpi_broadcast(struct comm *c, void *buf, size_t n, enum comm_dtype t, int root) {
    for (size_t a = 0; a < n; a += chunk_elems)
        MPI_CHECK(MPI_Bcast(at(buf, a, t), (int)min_sz(chunk_elems, n - a), mpi_dtype(t), root, handle(c)));
}

static void mpi_barrier(struct comm *c) { MPI_CHECK(MPI_Barrier(handle(c))); }

static int mpi_test(struct comm *c, struct comm_req *req) {
    struct mpi_req *r = req->impl;
    if (!r) return 1;
    int done = 0;
    MPI_CHECK(MPI_Testall(r->n, r->r, &done, MPI_STATUSES_IGNORE));
    return done;
}

static const struct comm_ops mpi_ops = {
    mpi_all_reduce, mpi_all_reduce_start, mpi_wait, mpi_reduce_scatter, mpi_all_gather, mpi_broadcast, mpi_barrier,
    mpi_test,
};

// ---------------------------------------------------------------------------------------------------
// Life cycle
// ---------------------------------------------------------------------------------------------------

struct comm *comm_mpi_create(MPI_Comm c) {
    struct mpi_comm *m = xcalloc(1, sizeof(*m));
    MPI_CHECK(MPI_Comm_dup(c, &m->mc));
    MPI_CHECK(MPI_Comm_set_errhandler(m->mc, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_rank(m->mc, &m->base.rank));
    MPI_CHECK(MPI_Comm_size(m->mc, &m->base.size));
    m->base.ops = &mpi_ops;
    m->base.impl = &m->mc;
    return &m->base;
}

void comm_mpi_destroy(struct comm *c) {
    if (!c) return;
    CHECK(comm_is_mpi(c));
    struct mpi_comm *m = (struct mpi_comm *)c;
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_CHECK(MPI_Comm_free(&m->mc));
    free(m);
}

int comm_is_mpi(const struct comm *c) { return c && c->ops == &mpi_ops; }

MPI_Comm comm_mpi_handle(const struct comm *c) {
    CHECKF(comm_is_mpi(c), "not an MPI communicator");
    return ((const struct mpi_comm *)c)->mc;
}

int comm_mpi_test(struct comm *c, struct comm_req *req) {
    if (!req->impl || !comm_is_mpi(c)) return 1;
    return mpi_test(c, req);
}
