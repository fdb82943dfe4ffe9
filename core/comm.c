#include "core/comm.h"

#include <string.h>

#include "core/error.h"

size_t comm_dtype_size(enum comm_dtype t) {
    switch (t) {
    case COMM_F32: return 4;
    case COMM_F64: return 8;
    case COMM_I64: return 8;
    case COMM_U8: return 1;
    case COMM_BF16: return 2;
    }
    return 0;
}

enum comm_dtype comm_dtype_of(size_t elem_size) {
    CHECKF(elem_size == 4 || elem_size == 2, "no floating-point comm dtype of %zu bytes", elem_size);
    return elem_size == 2 ? COMM_BF16 : COMM_F32;
}

// The one-rank group: reductions are the identity, gathers and scatters are copies.
static void self_all_reduce(struct comm *c, void *buf, size_t n, enum comm_dtype t, enum comm_op op) {}
static void self_all_reduce_start(struct comm *c, void *buf, size_t n, enum comm_dtype t, enum comm_op op,
                                  struct comm_req *req) { req->impl = NULL; }
static void self_wait(struct comm *c, struct comm_req *req) {}
static void self_copy(struct comm *c, void *out, const void *in, size_t n, enum comm_dtype t) {
    if (out != in) memmove(out, in, n * comm_dtype_size(t));
}
static void self_broadcast(struct comm *c, void *buf, size_t n, enum comm_dtype t, int root) {}
static void self_barrier(struct comm *c) {}
static int self_test(struct comm *c, struct comm_req *req) { return 1; }

static const struct comm_ops self_ops = {
    self_all_reduce, self_all_reduce_start, self_wait, self_copy, self_copy, self_broadcast, self_barrier, self_test,
};

struct comm *comm_self(void) {
    static struct comm self = {0, 1, &self_ops, NULL};
    return &self;
}
