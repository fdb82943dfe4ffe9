// The CPU backend object: fp32 buffers in host memory, the op table of model/ops/cpu/*.c and the host
// optimizer passes of optim/. It has no state of its own (ctx NULL) and computes in fp32 only.
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "model/ops/backends.h"
#include "model/ops/cpu/cpu.h"
#include "optim/adamw.h"
#include "optim/clip.h"

static dbuf *cpu_alloc(const struct backend *be, enum buf_kind kind, size_t n) {
    void *p = xmalloc_aligned(n * 4);
    memset(p, 0, n * 4);
    return p;
}
static void cpu_free(const struct backend *be, dbuf *p) { free(p); }
static void cpu_zero(const struct backend *be, dbuf *p, enum buf_kind kind, size_t n) { memset(p, 0, n * 4); }
static void cpu_copy(void *dst, const void *src, size_t n) {
    if (dst != src) memcpy(dst, src, n * 4);
}
static void cpu_to_host(const struct backend *be, float *dst, const dbuf *src, enum buf_kind kind, size_t n) {
    cpu_copy(dst, src, n);
}
static void cpu_from_host(const struct backend *be, dbuf *dst, const float *src, enum buf_kind kind, size_t n) {
    cpu_copy(dst, src, n);
}
static void cpu_ints_from_host(const struct backend *be, dbuf *dst, const int *src, size_t n) { cpu_copy(dst, src, n); }
static void cpu_convert(const struct backend *be, dbuf *dst, enum buf_kind dk, const dbuf *src, enum buf_kind sk,
                        size_t n) {
    cpu_copy(dst, src, n);
}
static void cpu_sync(const struct backend *be) {}

static const struct ops cpu_ops = {
    .embedding_forward = embedding_forward_cpu,
    .embedding_backward = embedding_backward_cpu,
    .rmsnorm_forward = rmsnorm_forward_cpu,
    .rmsnorm_backward = rmsnorm_backward_cpu,
    .matmul_forward = matmul_forward_cpu,
    .matmul_backward = matmul_backward_cpu,
    .rope_forward = rope_forward_cpu,
    .rope_backward = rope_backward_cpu,
    .attention_forward = attention_forward_cpu,
    .attention_backward = attention_backward_cpu,
    .attention_decode = attention_decode_cpu,
    .swiglu_forward = swiglu_forward_cpu,
    .swiglu_backward = swiglu_backward_cpu,
    .residual_forward = residual_forward_cpu,
    .residual_rmsnorm_forward = residual_rmsnorm_forward_cpu,
    .lora_scale_forward = lora_scale_forward_cpu,
    .lora_scale_backward = lora_scale_backward_cpu,
    .dropout_forward = dropout_forward_cpu,
    .crossentropy_max = crossentropy_max_cpu,
    .crossentropy_sums = crossentropy_sums_cpu,
    .crossentropy_loss = crossentropy_loss_cpu,
    .crossentropy_backward = crossentropy_backward_cpu,
    .adamw_update = adamw_update_cpu,
    .grad_sumsq = grad_sumsq_cpu,
};

const struct backend *backend_cpu(void) {
    static const struct backend be = {
        .name = "cpu",
        .precision = PRECISION_FP32,
        .elem_size = {4, 4, 4, 4, 4, 4},
        .ctx = NULL,
        .alloc = cpu_alloc,
        .free = cpu_free,
        .zero = cpu_zero,
        .to_host = cpu_to_host,
        .from_host = cpu_from_host,
        .ints_from_host = cpu_ints_from_host,
        .convert = cpu_convert,
        .sync = cpu_sync,
        .ops = &cpu_ops,
    };
    return &be;
}
