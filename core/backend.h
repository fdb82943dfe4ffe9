// The backend interface: where tensors live and the ops that compute on them.
//
// Model code sizes buffers in elements, asks the backend for them, and passes them to the op table; it
// never dereferences a buffer. Each backend chooses its storage per kind of buffer: the CPU backend is
// fp32 everywhere; the CUDA backend keeps bf16 parameters-for-compute and activations, fp32 master
// weights, gradients and AdamW state. Host views (checkpoints, tests, import/export) go through
// be->to_host / be->from_host, which convert to and from fp32.
//
// Checklist when adding an op: declare it in struct ops below, implement it in model/ops/cpu/NAME.c
// (the oracle) and model/ops/cuda/NAME.cu, add its finite-difference test in tests/test_ops.c.
#pragma once
#include <stddef.h>

typedef struct dbuf dbuf;  // an opaque device buffer; only the backend knows its element type

enum buf_kind {
    BUF_PARAM,   // parameters used for compute
    BUF_GRAD,    // parameter gradients
    BUF_ACT,     // activations and their gradients
    BUF_ACT32,   // small fp32 activations on every backend: norms' rstd, softmax statistics, losses
    BUF_STATE,   // fp32 on every backend: master weights, optimizer moments, RoPE tables
    BUF_INT,     // int32 token ids and targets
    BUF_KINDS
};

enum backend_kind { BACKEND_CPU, BACKEND_CUDA };

// Ops, outputs first, then inputs, then sizes. Letters: B batch, T time, C dim, NH/KVH heads of this
// rank, HS head size, F ffn hidden of this rank, V vocab, Vl vocab slice of this rank.
// Parameter gradients accumulate (+=); activation gradients are written (=) unless noted.
struct ops {
    // out (BT,C) = wte[tok - vstart] when vstart <= tok < vstart+Vl, else 0; wte (Vl,C), tok (BT)
    void (*embedding_forward)(dbuf *out, const dbuf *tok, const dbuf *wte, int BT, int C, int vstart, int Vl);
    void (*embedding_backward)(dbuf *dwte, const dbuf *dout, const dbuf *tok, int BT, int C, int vstart, int Vl);

    // out (BT,C) = weight (C) * inp / sqrt(mean(inp^2) + eps); rstd (BT) saved for backward
    void (*rmsnorm_forward)(dbuf *out, dbuf *rstd, const dbuf *inp, const dbuf *weight, int BT, int C, float eps);
    // dinp (BT,C) += (the residual stream accumulates), dweight (C) +=
    void (*rmsnorm_backward)(dbuf *dinp, dbuf *dweight, const dbuf *dout, const dbuf *inp, const dbuf *weight,
                             const dbuf *rstd, int BT, int C);

    // out (BT,OC) = inp (BT,C) @ weight (OC,C)^T
    void (*matmul_forward)(dbuf *out, const dbuf *inp, const dbuf *weight, int BT, int C, int OC);
    // dinp (BT,C) =, dweight (OC,C) +=
    void (*matmul_backward)(dbuf *dinp, dbuf *dweight, const dbuf *dout, const dbuf *inp, const dbuf *weight,
                            int BT, int C, int OC);

    // In place on the first NR heads of each row of x (B,T,stride): HF rotate-half layout, positions
    // 0..T-1; cos, sin (T,HS/2). Backward applies the inverse rotation to the gradient.
    void (*rope_forward)(dbuf *x, const dbuf *cos, const dbuf *sin, int B, int T, int NR, int HS, int stride);
    void (*rope_backward)(dbuf *dx, const dbuf *cos, const dbuf *sin, int B, int T, int NR, int HS, int stride);

    // Causal self-attention with grouped-query heads. qkv (B,T,(NH+2KVH)*HS) holds q, k, v per row;
    // out (B,T,NH*HS); lse (B,NH,T) the log-sum-exp of each softmax row (the score matrix is never stored).
    void (*attention_forward)(dbuf *out, dbuf *lse, const dbuf *qkv, int B, int T, int NH, int KVH, int HS);
    // dqkv (B,T,(NH+2KVH)*HS) =
    void (*attention_backward)(dbuf *dqkv, const dbuf *dout, const dbuf *qkv, const dbuf *out, const dbuf *lse,
                               int B, int T, int NH, int KVH, int HS);

    // out (BT,F) = silu(gate) * up where gateup (BT,2F) holds [gate | up] per row
    void (*swiglu_forward)(dbuf *out, const dbuf *gateup, int BT, int F);
    void (*swiglu_backward)(dbuf *dgateup, const dbuf *dout, const dbuf *gateup, int BT, int F);

    // out (N) = a + b; backward: da += dout, db += dout
    void (*residual_forward)(dbuf *out, const dbuf *a, const dbuf *b, size_t N);
    void (*residual_backward)(dbuf *da, dbuf *db, const dbuf *dout, size_t N);

    // Cross-entropy over the vocabulary slice [vstart, vstart+Vl) of logits (BT,Vl); columns whose global
    // id is >= V are padding and never count; targets < 0 are ignored (loss 0, no gradient). In three
    // steps so that a vocab-parallel group can reduce between them: rowmax (BT) of this slice (then MAX
    // across the group); sums (2,BT) = [sum exp(x - rowmax), target logit or 0] (then SUM); losses (BT)
    // and lse (BT).
    void (*crossentropy_max)(dbuf *rowmax, const dbuf *logits, int BT, int Vl, int vstart, int V);
    void (*crossentropy_sums)(dbuf *sums, const dbuf *logits, const dbuf *rowmax, const dbuf *targets,
                              int BT, int Vl, int vstart, int V);
    void (*crossentropy_loss)(dbuf *losses, dbuf *lse, const dbuf *rowmax, const dbuf *sums, const dbuf *targets,
                              int BT);
    // dlogits (BT,Vl) = dloss * (softmax - onehot) for counted rows, 0 elsewhere; may alias logits.
    void (*crossentropy_backward)(dbuf *dlogits, const dbuf *logits, const dbuf *lse, const dbuf *targets,
                                  float dloss, int BT, int Vl, int vstart, int V);
};

struct backend {
    const char *name;
    enum backend_kind kind;
    size_t elem_size[BUF_KINDS];
    dbuf *(*alloc)(enum buf_kind kind, size_t n);  // n elements, zeroed
    void (*free)(dbuf *p);
    void (*zero)(dbuf *p, enum buf_kind kind, size_t n);
    void (*to_host)(float *dst, const dbuf *src, enum buf_kind kind, size_t n);
    void (*from_host)(dbuf *dst, const float *src, enum buf_kind kind, size_t n);
    void (*ints_from_host)(dbuf *dst, const int *src, size_t n);
    void (*sync)(void);
    const struct ops *ops;
};

// The buffer `off` elements into `base` (a buffer of that kind).
static inline dbuf *be_at(const struct backend *be, enum buf_kind kind, const dbuf *base, size_t off) {
    return (dbuf *)((char *)base + off * be->elem_size[kind]);
}
