// Cross-entropy on the GPU over a (possibly vocabulary-parallel) slice [vstart, vstart+Vl) of the logits,
// fused with its softmax, in the same four steps as the CPU oracle (model/ops/cpu/crossentropy.c) so that
// a tensor-parallel group can reduce between them: rowmax (then MAX), sums (then SUM), loss, backward.
// Columns whose global id is >= V are padding: they never count and get a zero gradient. Rows whose
// target is < 0 are ignored: loss 0 and a zero gradient row.
//
// Precision: logits and dlogits are the compute type T (BUF_ACT); rowmax, sums, losses and lse are fp32
// (BUF_ACT32) and all arithmetic is fp32 (expf/logf, not the fast intrinsics).
//
// Launch: the row steps (max, sums, backward) use one block of 256 threads per row (grid BT), each thread
// striding over the Vl columns: V = 32000 and more need no multiple of the block size, and a row's max or
// sum is one block reduction. The loss step is one thread per row (256 per block). Backward reads and
// writes each element in the same thread, so dlogits may alias logits (in place).
#include <float.h>
#include <math.h>

#include "model/ops/cuda/common.cuh"
#include "model/ops/cuda/cuda_ops.h"

// Columns of this slice that are real vocabulary (the rest is padding to a multiple of tp).
static int ce_valid_cols(int Vl, int vstart, int V) {
    int n = V - vstart;
    return n < 0 ? 0 : (n < Vl ? n : Vl);
}

// rowmax (BT), logits (BT,Vl); max over the nv valid columns, -FLT_MAX when there are none (as the CPU)
template <typename T> __global__ void ce_max_kernel(float *rowmax, const T *logits, int Vl, int nv) {
    __shared__ float shared[32];
    const T *x = logits + (size_t)blockIdx.x * Vl;
    float m = -FLT_MAX;
    for (int c = threadIdx.x; c < nv; c += blockDim.x) m = fmaxf(m, to_f(x[c]));
    m = block_max(m, shared);
    if (threadIdx.x == 0) rowmax[blockIdx.x] = m;
}

// sums (2,BT): [sum_c exp(x_c - rowmax), the target's logit when it is in this slice else 0]
template <typename T>
__global__ void ce_sums_kernel(float *sums, const T *logits, const float *rowmax, const int *targets, int BT, int Vl,
                               int vstart, int nv) {
    __shared__ float shared[32];
    int i = blockIdx.x;
    const T *x = logits + (size_t)i * Vl;
    float m = rowmax[i], s = 0.0f;
    for (int c = threadIdx.x; c < nv; c += blockDim.x) s += expf(to_f(x[c]) - m);
    s = block_sum(s, shared);
    if (threadIdx.x == 0) {
        int t = targets[i] - vstart;
        sums[i] = s;
        sums[BT + i] = (targets[i] >= 0 && t >= 0 && t < nv) ? to_f(x[t]) : 0.0f;
    }
}

// losses (BT) = lse - target logit for counted rows, else 0; lse (BT) = rowmax + log(sum)
__global__ void ce_loss_kernel(float *losses, float *lse, const float *rowmax, const float *sums, const int *targets,
                               int BT) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= BT) return;
    float l = rowmax[i] + logf(sums[i]);
    lse[i] = l;
    losses[i] = targets[i] >= 0 ? l - sums[BT + i] : 0.0f;
}

// dlogits (BT,Vl) = dloss * (softmax - onehot) on valid columns of counted rows, 0 elsewhere
template <typename T>
__global__ void ce_backward_kernel(T *dlogits, const T *logits, const float *lse, const int *targets, float dloss,
                                   int Vl, int vstart, int nv) {
    int i = blockIdx.x;
    const T *x = logits + (size_t)i * Vl;
    T *dx = dlogits + (size_t)i * Vl;
    int counted = targets[i] >= 0, t = targets[i] - vstart;
    float l = lse[i];
    for (int c = threadIdx.x; c < Vl; c += blockDim.x) {
        float g = 0.0f;
        if (counted && c < nv) {
            g = dloss * expf(to_f(x[c]) - l);
            if (c == t) g -= dloss;
        }
        dx[c] = from_f<T>(g);
    }
}

static void ce_check(int BT, int Vl, const char *op) {
    CHECKF(BT >= 0 && Vl > 0, "%s: needs Vl > 0 and BT >= 0 (got BT=%d Vl=%d)", op, BT, Vl);
}

extern "C" void crossentropy_max_cuda(const struct backend *be, dbuf *rowmax, const dbuf *logits, int BT, int Vl,
                                      int vstart, int V) {
    ce_check(BT, Vl, "crossentropy_max");
    if (!BT) return;
    int nv = ce_valid_cols(Vl, vstart, V);
    DISPATCH_PRECISION(be, {
        auto k = ce_max_kernel<T>;  // one 256-thread block per row
        LAUNCH(k, BT, 256, 0, cuda_stream(be), (float *)rowmax, (const T *)logits, Vl, nv);
    });
}

extern "C" void crossentropy_sums_cuda(const struct backend *be, dbuf *sums, const dbuf *logits, const dbuf *rowmax,
                                       const dbuf *targets, int BT, int Vl, int vstart, int V) {
    ce_check(BT, Vl, "crossentropy_sums");
    if (!BT) return;
    int nv = ce_valid_cols(Vl, vstart, V);
    DISPATCH_PRECISION(be, {
        auto k = ce_sums_kernel<T>;  // one 256-thread block per row
        LAUNCH(k, BT, 256, 0, cuda_stream(be), (float *)sums, (const T *)logits, (const float *)rowmax,
               (const int *)targets, BT, Vl, vstart, nv);
    });
}

extern "C" void crossentropy_loss_cuda(const struct backend *be, dbuf *losses, dbuf *lse, const dbuf *rowmax,
                                       const dbuf *sums, const dbuf *targets, int BT) {
    CHECKF(BT >= 0, "crossentropy_loss: BT=%d < 0", BT);
    if (!BT) return;
    // one thread per row: BT scalars, nothing to share
    LAUNCH(ce_loss_kernel, ceil_div(BT, 256), 256, 0, cuda_stream(be), (float *)losses, (float *)lse,
           (const float *)rowmax, (const float *)sums, (const int *)targets, BT);
}

extern "C" void crossentropy_backward_cuda(const struct backend *be, dbuf *dlogits, const dbuf *logits,
                                           const dbuf *lse, const dbuf *targets, float dloss, int BT, int Vl,
                                           int vstart, int V) {
    ce_check(BT, Vl, "crossentropy_backward");
    if (!BT) return;
    int nv = ce_valid_cols(Vl, vstart, V);
    DISPATCH_PRECISION(be, {
        auto k = ce_backward_kernel<T>;  // one 256-thread block per row, in place per element
        LAUNCH(k, BT, 256, 0, cuda_stream(be), (T *)dlogits, (const T *)logits, (const float *)lse,
               (const int *)targets, dloss, Vl, vstart, nv);
    });
}
