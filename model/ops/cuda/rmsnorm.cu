// RMSNorm on the GPU: y = w * x * rstd, rstd = 1 / sqrt(mean(x^2) + eps), over the last dimension C.
//
// Precision: inp, out, dout and dinp are the compute type T (BUF_ACT), weight is T (BUF_PARAM); the
// statistics are fp32: rstd (BT) is the fp32 BUF_ACT32 saved for backward, dweight (C) the fp32 BUF_GRAD.
// dinp accumulates (+=): it is the residual stream's gradient, so in bf16 it is read, added in fp32 and
// rounded back once.
//
// residual_rmsnorm_forward fuses the residual add before the norm: it reads a and b, writes res (= a + b
// in T) and out, where the two ops apart read a, b, write res, then read res again and write out.
//
// Forward and the dinp part of backward: one block of 256 threads per row (grid BT), each thread
// striding over the columns: any C works (8192 and more), the row's sum is one block_sum, and BT rows
// give enough blocks to fill the device.
//
// dweight (C) += sum over rows of dout * x * rstd must not use float atomics (their order changes the
// rounding from run to run), so it is two deterministic passes over a scratch of fp32 partial sums in
// the context's workspace (safe to borrow: every op runs on the one stream):
//   1. grid (ceil(C/256), nchunk), block 256: thread c of chunk j sums rows [j*R, (j+1)*R) in order into
//      partial[j][c] (consecutive threads read consecutive columns, so loads coalesce);
//   2. grid ceil(C/256), block 256: thread c adds partial[0..nchunk)[c] in order to dweight[c].
// R (rows per chunk) is 64 unless the workspace needs larger chunks to hold nchunk*C floats.
#include <math.h>

#include "model/ops/cuda/common.cuh"
#include "model/ops/cuda/cuda_ops.h"

// out (BT,C), rstd (BT), inp (BT,C), weight (C); one block per row
template <typename T>
__global__ void rmsnorm_forward_kernel(T *out, float *rstd, const T *inp, const T *weight, int C, float eps) {
    __shared__ float shared[32];
    const T *x = inp + (size_t)blockIdx.x * C;
    T *y = out + (size_t)blockIdx.x * C;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float v = to_f(x[c]);
        ss += v * v;
    }
    ss = block_sum(ss, shared);
    float r = 1.0f / sqrtf(ss / (float)C + eps);
    if (threadIdx.x == 0) rstd[blockIdx.x] = r;
    for (int c = threadIdx.x; c < C; c += blockDim.x) y[c] = from_f<T>(to_f(weight[c]) * (to_f(x[c]) * r));
}

// Fused with the residual add before it: res (BT,C) = a + b rounded to T, then the RMSNorm of the
// stored res; one block per row, each thread reading its own columns back (res may alias a or b).
template <typename T>
__global__ void residual_rmsnorm_forward_kernel(T *res, T *out, float *rstd, const T *a, const T *b, const T *weight,
                                                int C, float eps) {
    __shared__ float shared[32];
    const size_t off = (size_t)blockIdx.x * C;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const T v = from_f<T>(to_f(a[off + c]) + to_f(b[off + c]));
        res[off + c] = v;
        ss += to_f(v) * to_f(v);
    }
    ss = block_sum(ss, shared);
    float r = 1.0f / sqrtf(ss / (float)C + eps);
    if (threadIdx.x == 0) rstd[blockIdx.x] = r;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        out[off + c] = from_f<T>(to_f(weight[c]) * (to_f(res[off + c]) * r));
}

// dinp (BT,C) += rstd * w * dout - rstd^3 / C * x * sum_k(dout_k * w_k * x_k); one block per row
template <typename T>
__global__ void rmsnorm_backward_dinp_kernel(T *dinp, const T *dout, const T *inp, const T *weight,
                                             const float *rstd, int C) {
    __shared__ float shared[32];
    size_t off = (size_t)blockIdx.x * C;
    const T *x = inp + off, *d = dout + off;
    T *dx = dinp + off;
    float r = rstd[blockIdx.x], dot = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) dot += to_f(d[c]) * to_f(weight[c]) * to_f(x[c]);
    dot = block_sum(dot, shared);
    float k = r * r * r * dot / (float)C;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        dx[c] = from_f<T>(to_f(dx[c]) + (r * to_f(weight[c]) * to_f(d[c]) - k * to_f(x[c])));
}

// partial (nchunk,C): partial[j][c] = sum over rows [j*R, min((j+1)*R, BT)) of dout * x * rstd
template <typename T>
__global__ void rmsnorm_dweight_partial_kernel(float *partial, const T *dout, const T *inp, const float *rstd,
                                               int BT, int C, int R) {
    int c = blockIdx.x * blockDim.x + threadIdx.x, j = blockIdx.y;
    if (c >= C) return;
    int lo = j * R, hi = lo + R < BT ? lo + R : BT;
    float s = 0.0f;
    for (int i = lo; i < hi; i++) s += to_f(dout[(size_t)i * C + c]) * to_f(inp[(size_t)i * C + c]) * rstd[i];
    partial[(size_t)j * C + c] = s;
}

// dweight (C) += partial[0..nchunk)[c], in chunk order
__global__ void rmsnorm_dweight_sum_kernel(float *dweight, const float *partial, int nchunk, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float s = 0.0f;
    for (int j = 0; j < nchunk; j++) s += partial[(size_t)j * C + c];
    dweight[c] += s;
}

extern "C" void rmsnorm_forward_cuda(const struct backend *be, dbuf *out, dbuf *rstd, const dbuf *inp,
                                     const dbuf *weight, int BT, int C, float eps) {
    CHECKF(BT >= 0 && C > 0, "rmsnorm_forward: needs C > 0 and BT >= 0 (got BT=%d C=%d)", BT, C);
    if (!BT) return;
    DISPATCH_PRECISION(be, {
        auto k = rmsnorm_forward_kernel<T>;  // one 256-thread block per row: any C, one block reduction
        LAUNCH(k, BT, 256, 0, cuda_stream(be), (T *)out, (float *)rstd, (const T *)inp, (const T *)weight, C, eps);
    });
}

extern "C" void residual_rmsnorm_forward_cuda(const struct backend *be, dbuf *res, dbuf *out, dbuf *rstd, const dbuf *a,
                                              const dbuf *b, const dbuf *weight, int BT, int C, float eps) {
    CHECKF(BT >= 0 && C > 0, "residual_rmsnorm_forward: needs C > 0 and BT >= 0 (got BT=%d C=%d)", BT, C);
    if (!BT) return;
    DISPATCH_PRECISION(be, {
        auto k = residual_rmsnorm_forward_kernel<T>;  // as rmsnorm_forward: one 256-thread block per row
        LAUNCH(k, BT, 256, 0, cuda_stream(be), (T *)res, (T *)out, (float *)rstd, (const T *)a, (const T *)b,
               (const T *)weight, C, eps);
    });
}

extern "C" void rmsnorm_backward_cuda(const struct backend *be, dbuf *dinp, dbuf *dweight, const dbuf *dout,
                                      const dbuf *inp, const dbuf *weight, const dbuf *rstd, int BT, int C) {
    struct cuda_ctx *cx = cuda_ctx_of(be);
    CHECKF(BT >= 0 && C > 0, "rmsnorm_backward: needs C > 0 and BT >= 0 (got BT=%d C=%d)", BT, C);
    size_t maxchunks = cx->workspace_size / ((size_t)C * sizeof(float));
    CHECKF(maxchunks >= 1, "rmsnorm_backward: C=%d needs more than the %zu-byte workspace for one row of partials",
           C, cx->workspace_size);
    if (!BT) return;
    int R = 64;
    if (ceil_div(BT, R) > maxchunks) R = (int)ceil_div(BT, maxchunks);  // larger chunks to fit the workspace
    int nchunk = (int)ceil_div(BT, R);
    CHECKF(nchunk <= 65535, "rmsnorm_backward: %d row chunks exceed the grid's y limit 65535", nchunk);
    float *partial = (float *)cx->workspace;
    DISPATCH_PRECISION(be, {
        auto kd = rmsnorm_backward_dinp_kernel<T>;  // one 256-thread block per row, as the forward
        LAUNCH(kd, BT, 256, 0, cx->stream, (T *)dinp, (const T *)dout, (const T *)inp, (const T *)weight,
               (const float *)rstd, C);
        if (!dweight) return;  // frozen weight: the input gradient only
        auto kp = rmsnorm_dweight_partial_kernel<T>;  // (256 columns, one chunk of R rows) per block
        LAUNCH(kp, dim3(ceil_div(C, 256), nchunk), 256, 0, cx->stream, partial, (const T *)dout, (const T *)inp,
               (const float *)rstd, BT, C, R);
    });
    // one thread per column sums the chunks in order
    LAUNCH(rmsnorm_dweight_sum_kernel, ceil_div(C, 256), 256, 0, cx->stream, (float *)dweight, (const float *)partial,
           nchunk, C);
}
