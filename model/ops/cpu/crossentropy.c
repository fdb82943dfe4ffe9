// Cross-entropy over a (possibly vocabulary-parallel) slice of the logits, fused with its softmax.
// Forward runs in three steps so that a tensor-parallel group can reduce between them (Megatron-LM's
// vocab-parallel cross-entropy); on one rank the reductions are no-ops. The sum of exponentials runs
// over up to V terms per row and is accumulated in double: in fp32 it would be off by ~1e-5 at
// V = 32000, and this op is the oracle the GPU kernels are held to. Backward is local:
// dlogits = dloss * (softmax - onehot), written over the logits in place when they alias.
#include <float.h>
#include <math.h>

#include "model/ops/cpu/cpu.h"

// Columns this rank holds that are real vocabulary (the rest is padding to a multiple of tp).
static inline int ce_valid_cols(int Vl, int vstart, int V) {
    int n = V - vstart;
    return n < 0 ? 0 : (n < Vl ? n : Vl);
}

// rowmax (BT), logits (BT,Vl)
void crossentropy_max_cpu(const struct backend *be, dbuf *rowmax_, const dbuf *logits_, int BT, int Vl, int vstart, int V) {
    float *rowmax = F32(rowmax_);
    const float *logits = CF32(logits_);
    int nv = ce_valid_cols(Vl, vstart, V);
#pragma omp parallel for
    for (int i = 0; i < BT; i++) {
        const float *x = logits + (size_t)i * Vl;
        float m = -FLT_MAX;
#pragma omp simd reduction(max : m)
        for (int c = 0; c < nv; c++) m = x[c] > m ? x[c] : m;
        rowmax[i] = m;
    }
}

// sums (2,BT): sums[i] = sum_c exp(x_c - rowmax_i), sums[BT+i] = logit of the target if it is in this slice
void crossentropy_sums_cpu(const struct backend *be, dbuf *sums_, const dbuf *logits_, const dbuf *rowmax_, const dbuf *targets_, int BT,
                           int Vl, int vstart, int V) {
    float *sums = F32(sums_);
    const float *logits = CF32(logits_), *rowmax = CF32(rowmax_);
    const int *targets = CI32(targets_);
    int nv = ce_valid_cols(Vl, vstart, V);
#pragma omp parallel for
    for (int i = 0; i < BT; i++) {
        const float *x = logits + (size_t)i * Vl;
        float m = rowmax[i];
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (int c = 0; c < nv; c++) s += (double)expf(x[c] - m);
        sums[i] = (float)s;
        int t = targets[i] - vstart;
        sums[BT + i] = (targets[i] >= 0 && t >= 0 && t < nv) ? x[t] : 0.0f;
    }
}

// losses (BT) = lse - target logit for counted rows (target >= 0), else 0; lse (BT) = rowmax + log(sum)
void crossentropy_loss_cpu(const struct backend *be, dbuf *losses_, dbuf *lse_, const dbuf *rowmax_, const dbuf *sums_, const dbuf *targets_,
                           int BT) {
    float *losses = F32(losses_), *lse = F32(lse_);
    const float *rowmax = CF32(rowmax_), *sums = CF32(sums_);
    const int *targets = CI32(targets_);
    for (int i = 0; i < BT; i++) {
        lse[i] = rowmax[i] + logf(sums[i]);
        losses[i] = targets[i] >= 0 ? lse[i] - sums[BT + i] : 0.0f;
    }
}

// dlogits (BT,Vl), logits (BT,Vl), lse (BT), targets (BT)
void crossentropy_backward_cpu(const struct backend *be, dbuf *dlogits_, const dbuf *logits_, const dbuf *lse_, const dbuf *targets_,
                               float dloss, int BT, int Vl, int vstart, int V) {
    float *dlogits = F32(dlogits_);
    const float *logits = CF32(logits_), *lse = CF32(lse_);
    const int *targets = CI32(targets_);
    int nv = ce_valid_cols(Vl, vstart, V);
#pragma omp parallel for
    for (int i = 0; i < BT; i++) {
        const float *x = logits + (size_t)i * Vl;
        float *dx = dlogits + (size_t)i * Vl;
        if (targets[i] < 0) {
            for (int c = 0; c < Vl; c++) dx[c] = 0.0f;
            continue;
        }
        float l = lse[i];
#pragma omp simd
        for (int c = 0; c < nv; c++) dx[c] = dloss * expf(x[c] - l);
        for (int c = nv; c < Vl; c++) dx[c] = 0.0f;
        int t = targets[i] - vstart;
        if (t >= 0 && t < nv) dx[t] -= dloss;
    }
}
