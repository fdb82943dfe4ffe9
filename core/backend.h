// The backend interface: where tensors live and the ops that compute on them.
//
// Model code sizes buffers in elements, asks the backend for them, and passes them to the op table; it
// never dereferences a buffer. Each backend chooses its storage per kind of buffer (elem_size below):
// the CPU backend is fp32 everywhere; the CUDA backend in bf16 precision keeps bf16 parameters-for-compute
// and activations and fp32 master weights, gradients and AdamW state, and in fp32 precision is fp32
// everywhere. Host views (checkpoints, tests, import/export) go through be->to_host / be->from_host, which
// convert to and from fp32.
//
// Every function takes the backend itself first: its ctx holds what the backend needs between calls (the
// CUDA stream, the cuBLASLt handle and its workspace), so nothing lives in file statics. Calls are
// ordered: ops run in the order they are called (on the CUDA backend, on one stream); be->sync waits for
// all of them, which the host must do before reading a buffer through anything but be->to_host.
//
// Checklist when adding an op:
//   1. declare it in struct ops below (outputs, inputs, sizes; shapes in the comment);
//   2. the CPU oracle: model/ops/cpu/NAME.c, declared in model/ops/cpu/cpu.h, listed in model/ops/cpu/backend.c;
//   3. the CUDA kernels: model/ops/cuda/NAME.cu, declared in model/ops/cuda/cuda_ops.h, listed in
//      model/ops/cuda/backend.cu;
//   4. tests: a finite-difference test of the CPU backward in tests/test_ops.c and a case in the backend
//      table of tests/ops_cases.h, which tests/gpu/test_gpu_ops.c runs on every other backend of the build.
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef struct dbuf dbuf;  // an opaque device buffer; only the backend knows its element type

enum buf_kind {
    BUF_PARAM,   // parameters used for compute
    BUF_GRAD,    // parameter gradients (fp32 on every backend)
    BUF_ACT,     // activations and their gradients
    BUF_ACT32,   // small fp32 activations on every backend: norms' rstd, softmax statistics, losses
    BUF_STATE,   // fp32 on every backend: master weights, optimizer moments, RoPE tables
    BUF_INT,     // int32 token ids and targets
    BUF_KINDS
};

// The precision of a backend: fp32 computes in fp32 everywhere (GEMMs without TF32), bf16 stores
// parameters-for-compute and activations in bf16 and accumulates in fp32.
enum precision { PRECISION_FP32, PRECISION_BF16 };

struct backend;

// Ops, the backend first, then outputs, inputs and sizes. Letters: B batch, T time, C dim, NH/KVH heads of
// this rank, HS head size, F ffn hidden of this rank, V vocab, Vl vocab slice of this rank.
// Parameter gradients accumulate (+=); activation gradients are written (=) unless noted. A NULL parameter
// gradient (dweight) means the weight is frozen: only the input gradient is computed.
struct ops {
    // out (BT,C) = wte[tok - vstart] when vstart <= tok < vstart+Vl, else 0; wte (Vl,C), tok (BT)
    void (*embedding_forward)(const struct backend *be, dbuf *out, const dbuf *tok, const dbuf *wte, int BT, int C,
                              int vstart, int Vl);
    // dwte (Vl,C) += the rows of dout (BT,C) of the tokens in this slice
    void (*embedding_backward)(const struct backend *be, dbuf *dwte, const dbuf *dout, const dbuf *tok, int BT, int C,
                               int vstart, int Vl);

    // out (BT,C) = weight (C) * inp / sqrt(mean(inp^2) + eps); rstd (BT) saved for backward
    void (*rmsnorm_forward)(const struct backend *be, dbuf *out, dbuf *rstd, const dbuf *inp, const dbuf *weight,
                            int BT, int C, float eps);
    // dinp (BT,C) += (the residual stream accumulates), dweight (C) +=
    void (*rmsnorm_backward)(const struct backend *be, dbuf *dinp, dbuf *dweight, const dbuf *dout, const dbuf *inp,
                             const dbuf *weight, const dbuf *rstd, int BT, int C);

    // out (BT,OC) = inp (BT,C) @ weight (OC,C)^T
    void (*matmul_forward)(const struct backend *be, dbuf *out, const dbuf *inp, const dbuf *weight, int BT, int C,
                           int OC);
    // dinp (BT,C) =, dweight (OC,C) += (fp32)
    void (*matmul_backward)(const struct backend *be, dbuf *dinp, dbuf *dweight, const dbuf *dout, const dbuf *inp,
                            const dbuf *weight, int BT, int C, int OC);

    // Packed windows: `docs` (B,T) BUF_INT, or NULL, gives for each token the index in its row of the first
    // token of its document (docs[b,t] <= t, non-decreasing within a document). With it, attention lets
    // query i see keys j in [docs[b,i], i] only and RoPE positions restart at each document (position
    // t - docs[b,t]), so a window of packed examples computes exactly what the examples would one by one
    // (as variable-length FlashAttention does). NULL: one document per row, positions 0..T-1.

    // In place on the first NR heads of each row of x (B,T,stride): HF rotate-half layout, positions
    // 0..T-1 (or per docs); cos, sin (T,HS/2) fp32. Backward applies the inverse rotation to the gradient.
    void (*rope_forward)(const struct backend *be, dbuf *x, const dbuf *cos, const dbuf *sin, const dbuf *docs,
                         int B, int T, int NR, int HS, int stride);
    void (*rope_backward)(const struct backend *be, dbuf *dx, const dbuf *cos, const dbuf *sin, const dbuf *docs,
                          int B, int T, int NR, int HS, int stride);

    // Causal self-attention with grouped-query heads (within documents when docs is not NULL). qkv
    // (B,T,(NH+2KVH)*HS) holds q, k, v per row; out (B,T,NH*HS); lse (B,NH,T) fp32, the log-sum-exp of
    // each softmax row (the score matrix is never stored).
    void (*attention_forward)(const struct backend *be, dbuf *out, dbuf *lse, const dbuf *qkv, const dbuf *docs,
                              int B, int T, int NH, int KVH, int HS);
    // dqkv (B,T,(NH+2KVH)*HS) =
    void (*attention_backward)(const struct backend *be, dbuf *dqkv, const dbuf *dout, const dbuf *qkv,
                               const dbuf *out, const dbuf *lse, const dbuf *docs, int B, int T, int NH, int KVH,
                               int HS);

    // Attention of T new query rows against a key/value cache, for sampling with a KV cache (one
    // sequence; model/kvcache.h). qkv (T,(NH+2KVH)*HS) holds the new rows (q, k after RoPE at positions
    // pos..pos+T-1, and v); their k and v are first stored in rows pos..pos+T-1 of kcache and vcache
    // (>= pos+T rows of KVH*HS, BUF_ACT), then row i attends causally to cache rows 0..pos+i.
    // out (T,NH*HS) =. Forward only.
    void (*attention_decode)(const struct backend *be, dbuf *out, dbuf *kcache, dbuf *vcache, const dbuf *qkv, int T,
                             int pos, int NH, int KVH, int HS);

    // out (BT,F) = silu(gate) * up where gateup (BT,2F) holds [gate | up] per row
    void (*swiglu_forward)(const struct backend *be, dbuf *out, const dbuf *gateup, int BT, int F);
    void (*swiglu_backward)(const struct backend *be, dbuf *dgateup, const dbuf *dout, const dbuf *gateup, int BT,
                            int F);

    // out (N) = a + b (activations). Its backward hands dout unchanged to both inputs, so the model needs
    // no call for it (see model/llama.c).
    void (*residual_forward)(const struct backend *be, dbuf *out, const dbuf *a, const dbuf *b, size_t N);
    // The residual add fused with the RMSNorm that follows it, one pass instead of two: res (BT,C) = a + b
    // (in the activation type; res may alias a or b), then out = rmsnorm_forward(res) from the stored res,
    // rstd (BT) saved. Backward: rmsnorm_backward on res, the residual's gradient passes through.
    void (*residual_rmsnorm_forward)(const struct backend *be, dbuf *res, dbuf *out, dbuf *rstd, const dbuf *a,
                                     const dbuf *b, const dbuf *weight, int BT, int C, float eps);

    // LoRA (model/lora.c): out (BT,ld) columns [col0, col0+n) += alpha * x (BT,n); backward dx (BT,n) =
    // alpha * dout (BT,ld) columns [col0, col0+n).
    void (*lora_scale_forward)(const struct backend *be, dbuf *out, const dbuf *x, float alpha, int BT, int n, int ld,
                               int col0);
    void (*lora_scale_backward)(const struct backend *be, dbuf *dx, const dbuf *dout, float alpha, int BT, int n,
                                int ld, int col0);
    // Inverted dropout (LoRA's dropout on an adapter's input, model/lora.c): out (BT,n) = x * keep / (1 - p),
    // keep 0 or 1 per element from the stream `key` with the flat index i*n + j as its counter (the mask
    // of model/ops/dropout_mask.h, the same bits on every backend); 0 <= p < 1 (p = 0: out = x). out may
    // not alias x. Its backward is the same op with the same key on the gradient (the mask is linear).
    void (*dropout_forward)(const struct backend *be, dbuf *out, const dbuf *x, float p, uint64_t key, int BT, int n);

    // Cross-entropy over the vocabulary slice [vstart, vstart+Vl) of logits (BT,Vl); columns whose global
    // id is >= V are padding and never count; targets < 0 are ignored (loss 0, no gradient). In three
    // steps so that a vocab-parallel group can reduce between them: rowmax (BT) of this slice (then MAX
    // across the group); sums (2,BT) = [sum exp(x - rowmax), target logit or 0] (then SUM); losses (BT)
    // and lse (BT). rowmax, sums, losses and lse are fp32 (BUF_ACT32).
    void (*crossentropy_max)(const struct backend *be, dbuf *rowmax, const dbuf *logits, int BT, int Vl, int vstart,
                             int V);
    void (*crossentropy_sums)(const struct backend *be, dbuf *sums, const dbuf *logits, const dbuf *rowmax,
                              const dbuf *targets, int BT, int Vl, int vstart, int V);
    void (*crossentropy_loss)(const struct backend *be, dbuf *losses, dbuf *lse, const dbuf *rowmax, const dbuf *sums,
                              const dbuf *targets, int BT);
    // dlogits (BT,Vl) = dloss * (softmax - onehot) for counted rows, 0 elsewhere; may alias logits.
    void (*crossentropy_backward)(const struct backend *be, dbuf *dlogits, const dbuf *logits, const dbuf *lse,
                                  const dbuf *targets, float dloss, int BT, int Vl, int vstart, int V);

    // The optimizer's two passes over the parameter block (formulas in optim/adamw.h and optim/clip.h).
    // AdamW on n elements: master, m, v (BUF_STATE) and grad (BUF_GRAD) fp32; param (BUF_PARAM, may be
    // NULL) receives the updated master weights in the compute type. t >= 1.
    void (*adamw_update)(const struct backend *be, dbuf *param, dbuf *master, dbuf *m, dbuf *v, const dbuf *grad,
                         size_t n, float lr, float beta1, float beta2, float eps, float wd, float grad_scale, long t);
    // sum of grad[i]^2 over n fp32 gradients (BUF_GRAD), accumulated in double, deterministic
    double (*grad_sumsq)(const struct backend *be, const dbuf *grad, size_t n);
};

struct backend {
    const char *name;              // "cpu", "cuda"
    enum precision precision;
    size_t elem_size[BUF_KINDS];   // bytes per element of each kind: 4 (fp32, int32) or 2 (bf16)
    void *ctx;                     // the backend's own state (NULL on the CPU)
    dbuf *(*alloc)(const struct backend *be, enum buf_kind kind, size_t n);  // n elements, zeroed
    void (*free)(const struct backend *be, dbuf *p);
    void (*zero)(const struct backend *be, dbuf *p, enum buf_kind kind, size_t n);
    // n elements from or to fp32 host memory (converting bf16 by round-to-nearest-even); synchronous
    void (*to_host)(const struct backend *be, float *dst, const dbuf *src, enum buf_kind kind, size_t n);
    void (*from_host)(const struct backend *be, dbuf *dst, const float *src, enum buf_kind kind, size_t n);
    void (*ints_from_host)(const struct backend *be, dbuf *dst, const int *src, size_t n);
    // dst = src, n elements of kinds dk and sk (converting between fp32 and bf16 when they differ)
    void (*convert)(const struct backend *be, dbuf *dst, enum buf_kind dk, const dbuf *src, enum buf_kind sk,
                    size_t n);
    void (*sync)(const struct backend *be);  // waits for every op called so far
    // Optional (NULL: the caller runs fn(arg) itself). Runs fn(arg), a sequence of ops and be->zero calls
    // on device buffers only (no host transfer, no sync), whose addresses, sizes and scalar arguments are
    // all determined by `key`. The CUDA backend with LLAMAC_CUDA_GRAPH=1 calls fn directly the first time
    // a slot (0..3) sees a key, captures it into a CUDA graph the second time and replays the graph from
    // then on; without the variable, and under the CPU emulation, it calls fn directly.
    void (*run_region)(const struct backend *be, int slot, unsigned long long key, void (*fn)(void *arg),
                       void *arg);
    const struct ops *ops;
};

// The buffer `off` elements into `base` (a buffer of that kind).
static inline dbuf *be_at(const struct backend *be, enum buf_kind kind, const dbuf *base, size_t off) {
    return (dbuf *)((char *)base + off * be->elem_size[kind]);
}
