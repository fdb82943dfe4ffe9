// Inverted dropout on the GPU (core/backend.h, dropout_forward; the CPU oracle is
// model/ops/cpu/dropout.c): out[e] = x[e] / (1 - p) where the mask of model/ops/dropout_mask.h keeps
// element e = i*n + j of the stream `key`, else 0. The mask is the same integer hash as on the CPU, so
// both backends drop the same elements; in fp32 the kept values are the same product, in bf16 that
// product (computed in fp32) rounded once.
//
// Launch: one thread per element in a grid-stride loop over BT*n, 256 threads per block, at most 8192
// blocks; each element is read and written by one thread and threads never exchange anything.
#include "model/ops/cuda/common.cuh"
#include "model/ops/cuda/cuda_ops.h"
#include "model/ops/dropout_mask.h"

template <typename T>
__global__ void dropout_forward_kernel(T *out, const T *x, uint32_t thr, float scale, uint64_t key, size_t N) {
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < N; e += (size_t)gridDim.x * blockDim.x)
        out[e] = from_f<T>(dropout_keep(key, e, thr) ? to_f(x[e]) * scale : 0.0f);
}

extern "C" void dropout_forward_cuda(const struct backend *be, dbuf *out, const dbuf *x, float p, uint64_t key, int BT,
                                     int n) {
    CHECKF(p >= 0 && p < 1, "dropout: p = %g outside [0, 1)", p);
    CHECKF(out != x, "dropout: out may not alias x");
    const size_t N = (size_t)BT * n;
    if (!N) return;
    unsigned grid = ceil_div(N, 256) < 8192 ? ceil_div(N, 256) : 8192;
    const uint32_t thr = dropout_threshold(p);
    const float scale = dropout_scale(p);
    DISPATCH_PRECISION(be, {
        auto k = dropout_forward_kernel<T>;
        LAUNCH(k, grid, 256, 0, cuda_stream(be), (T *)out, (const T *)x, thr, scale, key, N);
    });
}
