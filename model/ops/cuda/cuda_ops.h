// The CUDA backend's op functions (model/ops/cuda/NAME.cu), gathered into its op table by
// model/ops/cuda/backend.cu. Signatures and shapes as struct ops in core/backend.h.
#pragma once
#include "core/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

void embedding_forward_cuda(const struct backend *be, dbuf *out, const dbuf *tok, const dbuf *wte, int BT, int C,
                            int vstart, int Vl);
void embedding_backward_cuda(const struct backend *be, dbuf *dwte, const dbuf *dout, const dbuf *tok, int BT, int C,
                             int vstart, int Vl);
void rmsnorm_forward_cuda(const struct backend *be, dbuf *out, dbuf *rstd, const dbuf *inp, const dbuf *weight,
                          int BT, int C, float eps);
void rmsnorm_backward_cuda(const struct backend *be, dbuf *dinp, dbuf *dweight, const dbuf *dout, const dbuf *inp,
                           const dbuf *weight, const dbuf *rstd, int BT, int C);
void matmul_forward_cuda(const struct backend *be, dbuf *out, const dbuf *inp, const dbuf *weight, int BT, int C,
                         int OC);
void matmul_backward_cuda(const struct backend *be, dbuf *dinp, dbuf *dweight, const dbuf *dout, const dbuf *inp,
                          const dbuf *weight, int BT, int C, int OC);
void rope_forward_cuda(const struct backend *be, dbuf *x, const dbuf *cos, const dbuf *sin, const dbuf *docs, int B,
                       int T, int NR, int HS, int stride);
void rope_backward_cuda(const struct backend *be, dbuf *dx, const dbuf *cos, const dbuf *sin, const dbuf *docs, int B,
                        int T, int NR, int HS, int stride);
void attention_forward_cuda(const struct backend *be, dbuf *out, dbuf *lse, const dbuf *qkv, const dbuf *docs, int B,
                            int T, int NH, int KVH, int HS);
void attention_backward_cuda(const struct backend *be, dbuf *dqkv, const dbuf *dout, const dbuf *qkv,
                             const dbuf *out, const dbuf *lse, const dbuf *docs, int B, int T, int NH, int KVH, int HS);
void attention_decode_cuda(const struct backend *be, dbuf *out, dbuf *kcache, dbuf *vcache, const dbuf *qkv, int T,
                           int pos, int NH, int KVH, int HS);
void lora_scale_forward_cuda(const struct backend *be, dbuf *out, const dbuf *x, float alpha, int BT, int n, int ld,
                             int col0);
void lora_scale_backward_cuda(const struct backend *be, dbuf *dx, const dbuf *dout, float alpha, int BT, int n, int ld,
                              int col0);
void dropout_forward_cuda(const struct backend *be, dbuf *out, const dbuf *x, float p, uint64_t key, int BT,
                          int n);
void swiglu_forward_cuda(const struct backend *be, dbuf *out, const dbuf *gateup, int BT, int F);
void swiglu_backward_cuda(const struct backend *be, dbuf *dgateup, const dbuf *dout, const dbuf *gateup, int BT,
                          int F);
void residual_forward_cuda(const struct backend *be, dbuf *out, const dbuf *a, const dbuf *b, size_t N);
void residual_rmsnorm_forward_cuda(const struct backend *be, dbuf *res, dbuf *out, dbuf *rstd, const dbuf *a,
                                   const dbuf *b, const dbuf *weight, int BT, int C, float eps);
void crossentropy_max_cuda(const struct backend *be, dbuf *rowmax, const dbuf *logits, int BT, int Vl, int vstart,
                           int V);
void crossentropy_sums_cuda(const struct backend *be, dbuf *sums, const dbuf *logits, const dbuf *rowmax,
                            const dbuf *targets, int BT, int Vl, int vstart, int V);
void crossentropy_loss_cuda(const struct backend *be, dbuf *losses, dbuf *lse, const dbuf *rowmax, const dbuf *sums,
                            const dbuf *targets, int BT);
void crossentropy_backward_cuda(const struct backend *be, dbuf *dlogits, const dbuf *logits, const dbuf *lse,
                                const dbuf *targets, float dloss, int BT, int Vl, int vstart, int V);

#ifdef __cplusplus
}
#endif
