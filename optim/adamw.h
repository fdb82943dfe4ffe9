// AdamW (Loshchilov & Hutter) exactly as torch.optim.AdamW (amsgrad off), on flat fp32 ranges.
//
// For each element, with g = grad * grad_scale (grad_scale folds in the clip coefficient and any
// averaging the trainer did not do) and t the 1-based step:
//
//   param *= 1 - lr * wd                        (decoupled decay; wd = 0 for ranges without decay)
//   m      = beta1 * m + (1 - beta1) * g
//   v      = beta2 * v + (1 - beta2) * g * g
//   param -= (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//
// The bias corrections are computed in double on the host, the per-element arithmetic in fp32.
//
// Buffers: `master` (fp32 weights the update is applied to), m and v (fp32 moments) and the fp32 grads
// are plain buffers of the same layout; the trainer saves and restores them through host copies. On the
// CPU backend the master weights are the parameters themselves. On CUDA, master, m and v are BUF_STATE
// and the bf16 parameters used for compute (BUF_PARAM) are rewritten from the updated master weights in
// the same kernel.
//
// The optimizer knows nothing of the model: the trainer describes its parameter block as ranges with a
// decay flag (matrices decay, norms do not). Under ZeRO-1 a rank owns a slice [lo, hi) of that block;
// adamw_ranges_clip() cuts the ranges to the slice so that the same adamw_step updates it.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "core/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

struct cfg;

struct adamw_config {
    float beta1, beta2;   // 0.9, 0.95 (LLaMA)
    float eps;            // 1e-8 (torch's default; Llama 2 used 1e-5)
    float weight_decay;   // 0.1, applied only to ranges with decay set
    float clip;           // max global gradient norm; 0 disables clipping (1.0, LLaMA)
};

// A piece of the flat parameter block: elements [offset, offset + n), decayed or not.
struct adamw_range {
    size_t offset, n;
    int decay;
};

// Fills the defaults above.
void adamw_config_default(struct adamw_config *ac);
// Reads [optim] betas = "0.9, 0.95", eps, weight_decay, clip over the defaults; -1 with err_set on a
// value out of range.
int adamw_config_from_cfg(struct adamw_config *ac, struct cfg *c);

// One AdamW update of n contiguous elements on the host. t >= 1.
void adamw_update_cpu(float *param, float *m, float *v, const float *grad, size_t n, float lr, float beta1,
                      float beta2, float eps, float wd, float grad_scale, long t);

// The same on device pointers (CUDA builds only), on the default stream. param_bf16, when not NULL,
// receives the updated weights rounded to bf16 (round to nearest even), as uint16 bit patterns.
void adamw_update_cuda(float *param, uint16_t *param_bf16, float *m, float *v, const float *grad, size_t n,
                       float lr, float beta1, float beta2, float eps, float wd, float grad_scale, long t);

// Updates every range of the block on backend `be`. master (fp32), m, v and grads are indexed by the
// ranges' offsets; param_compute (BUF_PARAM, may be NULL) receives a copy for compute: bf16 on CUDA,
// fp32 on the CPU (where passing master itself, or NULL, means no copy).
void adamw_step(const struct backend *be, dbuf *master, dbuf *param_compute, dbuf *m, dbuf *v,
                const dbuf *grads, const struct adamw_range *ranges, int n_ranges,
                const struct adamw_config *ac, float lr, float grad_scale, long t);

// Intersects ranges with the slice [lo, hi) of the block and rebases them to lo; writes at most n_in
// ranges to out and returns how many. For ZeRO-1: rank r passes its slice, then calls adamw_step with
// buffers that start at lo.
int adamw_ranges_clip(struct adamw_range *out, const struct adamw_range *in, int n_in, size_t lo, size_t hi);

#ifdef __cplusplus
}
#endif
