// Communicators: the collectives that data and tensor parallelism need, behind one interface.
//
// The model calls comm_all_reduce() at the tensor-parallel points and the trainer calls the data-
// parallel collectives; neither knows what is behind them. comm_self() is the one-rank communicator
// (every call a no-op or a copy), so a single-process run is the tp = 1, dp = 1 case of the same code.
// launch/ provides the MPI implementation for host buffers (launch/mpi_comm.h) and, with the CUDA
// backend, communicators for device buffers (launch/dev_comm.h: NCCL, or host-staged MPI). A device
// communicator has on_device set: its buffers are the backend's device buffers and its operations are
// ordered with the backend's stream (a blocking call returns once the result is ordered before any op
// called afterwards; the host need not be synchronized), so callers skip be->sync before calling it.
#pragma once
#include <stddef.h>

enum comm_op { COMM_SUM, COMM_MAX };
// COMM_BF16: bf16 bit patterns (2 bytes); reductions add in fp32 and round to nearest even.
enum comm_dtype { COMM_F32, COMM_F64, COMM_I64, COMM_U8, COMM_BF16 };

// A non-blocking operation in flight; filled by *_start, completed by comm_wait.
struct comm_req { void *impl; };

struct comm;
struct comm_ops {
    void (*all_reduce)(struct comm *c, void *buf, size_t n, enum comm_dtype t, enum comm_op op);
    void (*all_reduce_start)(struct comm *c, void *buf, size_t n, enum comm_dtype t, enum comm_op op,
                             struct comm_req *req);
    void (*wait)(struct comm *c, struct comm_req *req);
    // out (n) = reduction over ranks of in[rank*n .. rank*n+n) of every rank's in (size*n)
    void (*reduce_scatter)(struct comm *c, void *out, const void *in, size_t n, enum comm_dtype t);
    // out (size*n) = every rank's in (n), in rank order
    void (*all_gather)(struct comm *c, void *out, const void *in, size_t n, enum comm_dtype t);
    void (*broadcast)(struct comm *c, void *buf, size_t n, enum comm_dtype t, int root);
    void (*barrier)(struct comm *c);
    // 1 when a request of all_reduce_start has completed (comm_wait is still needed to release it), 0
    // while in flight. Calling it lets the transport progress (MPI moves data only inside MPI calls).
    int (*test)(struct comm *c, struct comm_req *req);
};

struct comm {
    int rank, size;
    const struct comm_ops *ops;
    void *impl;
    int on_device;  // buffers are device buffers, ordered with the backend's stream (see above)
};

struct comm *comm_self(void);
size_t comm_dtype_size(enum comm_dtype t);
// The dtype of a floating-point buffer of elem_size bytes per element (4: fp32, 2: bf16), as a
// backend's elem_size table gives them.
enum comm_dtype comm_dtype_of(size_t elem_size);

static inline void comm_all_reduce(struct comm *c, void *buf, size_t n, enum comm_dtype t, enum comm_op op) {
    if (c->size > 1) c->ops->all_reduce(c, buf, n, t, op);
}
static inline void comm_all_reduce_start(struct comm *c, void *buf, size_t n, enum comm_dtype t,
                                         enum comm_op op, struct comm_req *req) {
    req->impl = NULL;
    if (c->size > 1) c->ops->all_reduce_start(c, buf, n, t, op, req);
}
static inline void comm_wait(struct comm *c, struct comm_req *req) {
    if (req->impl) c->ops->wait(c, req);
    req->impl = NULL;
}
static inline int comm_test(struct comm *c, struct comm_req *req) {
    return !req->impl || !c->ops->test || c->ops->test(c, req);
}
static inline void comm_reduce_scatter(struct comm *c, void *out, const void *in, size_t n, enum comm_dtype t) {
    c->ops->reduce_scatter(c, out, in, n, t);
}
static inline void comm_all_gather(struct comm *c, void *out, const void *in, size_t n, enum comm_dtype t) {
    c->ops->all_gather(c, out, in, n, t);
}
static inline void comm_broadcast(struct comm *c, void *buf, size_t n, enum comm_dtype t, int root) {
    if (c->size > 1) c->ops->broadcast(c, buf, n, t, root);
}
static inline void comm_barrier(struct comm *c) {
    if (c->size > 1) c->ops->barrier(c);
}
// Sum (or max) of one double across the group: losses, token counts, norms.
static inline double comm_all_reduce_f64(struct comm *c, double x, enum comm_op op) {
    comm_all_reduce(c, &x, 1, COMM_F64, op);
    return x;
}
