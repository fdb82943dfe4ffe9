// Global gradient-norm clipping, as torch.nn.utils.clip_grad_norm_ (L2 norm over all parameters).
//
// The norm spans every rank's gradients, so it comes in two halves: each rank sums the squares of the
// gradient elements it holds (grad_sumsq, accumulated in double), the trainer all-reduces the sums over
// the ranks whose elements differ (and counts replicated tensors once), takes the square root, and
// passes clip_coef(norm, max_norm) to adamw_step as its grad_scale; no pass over the gradients rescales
// them.
//
// Non-finite gradients are not checked separately: a NaN anywhere makes the sum NaN and an Inf makes it
// Inf (squares of finite fp32 values cannot overflow a double), so !isfinite(sum) after the all-reduce
// tells every rank at once that the step must stop rather than update.
//
// Both sums are deterministic: the CPU adds fixed chunks in a fixed order whatever the thread count,
// the GPU uses a fixed grid and a second pass over its partial sums (so the two may differ in the last
// bits, never from run to run).
#pragma once
#include <stddef.h>

#include "core/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

// sum of grads[i]^2 for i < n, grads fp32 (BUF_GRAD) on backend be (its ops->grad_sumsq).
static inline double grad_sumsq(const struct backend *be, const dbuf *grads, size_t n) {
    return be->ops->grad_sumsq(be, grads, n);
}
double grad_sumsq_cpu(const struct backend *be, const dbuf *grads, size_t n);
// The GPU pass (optim/clip.cu); synchronises with the backend's stream to return the value.
double grad_sumsq_cuda(const struct backend *be, const dbuf *grads, size_t n);

// min(1, max_norm / (norm + 1e-6)); 1 when max_norm <= 0 (clipping off); NaN when norm is NaN.
float clip_coef(double norm, double max_norm);

#ifdef __cplusplus
}
#endif
