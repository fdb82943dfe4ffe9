// Residual connection on the GPU: out (N) = a + b, all three in the compute type T (BUF_ACT), added in
// fp32 and rounded once. Its backward hands dout to both branches unchanged, so there is no kernel for it
// (core/backend.h).
//
// Launch: one thread per element in a grid-stride loop, 256 threads per block and at most 8192 blocks:
// a memory-bound stream for which more blocks buy nothing, and the loop lets any size_t N fit the grid.
#include "model/ops/cuda/common.cuh"
#include "model/ops/cuda/cuda_ops.h"

template <typename T> __global__ void residual_forward_kernel(T *out, const T *a, const T *b, size_t N) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < N; i += (size_t)gridDim.x * blockDim.x)
        out[i] = from_f<T>(to_f(a[i]) + to_f(b[i]));
}

extern "C" void residual_forward_cuda(const struct backend *be, dbuf *out, const dbuf *a, const dbuf *b, size_t N) {
    if (!N) return;
    unsigned grid = ceil_div(N, 256) < 8192 ? ceil_div(N, 256) : 8192;  // capped; the loop covers the rest
    DISPATCH_PRECISION(be, {
        auto k = residual_forward_kernel<T>;
        LAUNCH(k, grid, 256, 0, cuda_stream(be), (T *)out, (const T *)a, (const T *)b, N);
    });
}
