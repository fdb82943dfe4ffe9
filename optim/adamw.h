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
// Buffers: the fp32 master weights the update is applied to and the fp32 moments m and v live in one
// optimizer-state block (struct adamw_state); gradients are fp32. The parameters used for compute
// (BUF_PARAM: fp32 on the CPU, bf16 or fp32 on CUDA) are rewritten from the updated master weights in the
// same pass. The per-element pass is each backend's ops->adamw_update.
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

// One AdamW update of n contiguous elements on the host: the CPU backend's ops->adamw_update (see
// core/backend.h). param, when not NULL and not master itself, receives a copy of the updated master.
void adamw_update_cpu(const struct backend *be, dbuf *param, dbuf *master, dbuf *m, dbuf *v, const dbuf *grad,
                      size_t n, float lr, float beta1, float beta2, float eps, float wd, float grad_scale, long t);
// The same on the GPU (optim/adamw.cu): the CUDA backend's ops->adamw_update; param in the compute type.
void adamw_update_cuda(const struct backend *be, dbuf *param, dbuf *master, dbuf *m, dbuf *v, const dbuf *grad,
                       size_t n, float lr, float beta1, float beta2, float eps, float wd, float grad_scale, long t);

// The optimizer state of one rank: fp32 master weights and AdamW moments for the range [off, off + n) of
// the local parameter block (all of it, or this data-parallel rank's shard under ZeRO-1), one BUF_STATE
// block [master | m | v]. Checkpoints read and write it; the compute parameters are derived from master.
struct adamw_state {
    dbuf *block;           // BUF_STATE (3n)
    dbuf *master, *m, *v;  // views into block, n elements each
    size_t off, n;
};
void adamw_state_init(struct adamw_state *s, const struct backend *be, size_t off, size_t n);
void adamw_state_free(struct adamw_state *s, const struct backend *be);

// Updates every range of the state on backend `be` (ranges are relative to s->off, as adamw_ranges_clip
// makes them); grads (BUF_GRAD) are indexed like the state. param_compute (BUF_PARAM, the block's
// element s->off, may be NULL) receives the updated weights in the compute type.
void adamw_step(const struct backend *be, struct adamw_state *s, dbuf *param_compute, const dbuf *grads,
                const struct adamw_range *ranges, int n_ranges, const struct adamw_config *ac, float lr,
                float grad_scale, long t);

// Intersects ranges with the slice [lo, hi) of the block and rebases them to lo; writes at most n_in
// ranges to out and returns how many. For ZeRO-1: rank r passes its slice, then calls adamw_step with
// buffers that start at lo.
int adamw_ranges_clip(struct adamw_range *out, const struct adamw_range *in, int n_in, size_t lo, size_t hi);

#ifdef __cplusplus
}
#endif
