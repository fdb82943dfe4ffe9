// The scaled, strided add of a LoRA update into a fused projection's output, and its backward, on the GPU
// (the CPU oracle is model/ops/cpu/lora_scale.c):
//   forward:  out[i, col0 + j] += alpha * x[i, j]      out (BT, ld), x (BT, n)
//   backward: dx[i, j] = alpha * dout[i, col0 + j]     dx (BT, n) =, dout (BT, ld)
// All in the compute type T (BUF_ACT), computed in fp32 and rounded once.
//
// Launch: one thread per element of x in a grid-stride loop over BT*n, 256 threads per block, at most
// 8192 blocks; each element is read and written by one thread, j fastest so a warp touches one row.
#include "model/ops/cuda/common.cuh"
#include "model/ops/cuda/cuda_ops.h"

template <typename T>
__global__ void lora_scale_kernel(T *wide, T *narrow, float alpha, size_t total, int n, int ld, int col0, int fwd) {
    for (size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x; p < total; p += (size_t)gridDim.x * blockDim.x) {
        const size_t i = p / n, j = p % n;
        T *w = wide + i * ld + col0 + j;
        if (fwd) *w = from_f<T>(to_f(*w) + alpha * to_f(narrow[p]));
        else narrow[p] = from_f<T>(alpha * to_f(*w));
    }
}

static void lora_scale_launch(const struct backend *be, dbuf *wide, dbuf *narrow, float alpha, int BT, int n, int ld,
                              int col0, int fwd) {
    CHECKF(BT >= 0 && n >= 0 && col0 >= 0 && col0 + n <= ld, "lora_scale: columns [%d, %d) outside a row of %d", col0,
           col0 + n, ld);
    const size_t total = (size_t)BT * n;
    if (!total) return;
    unsigned grid = ceil_div(total, 256) < 8192 ? ceil_div(total, 256) : 8192;
    DISPATCH_PRECISION(be, {
        auto k = lora_scale_kernel<T>;
        LAUNCH(k, grid, 256, 0, cuda_stream(be), (T *)wide, (T *)narrow, alpha, total, n, ld, col0, fwd);
    });
}

extern "C" void lora_scale_forward_cuda(const struct backend *be, dbuf *out, const dbuf *x, float alpha, int BT, int n,
                                        int ld, int col0) {
    lora_scale_launch(be, out, (dbuf *)x, alpha, BT, n, ld, col0, 1);
}

extern "C" void lora_scale_backward_cuda(const struct backend *be, dbuf *dx, const dbuf *dout, float alpha, int BT,
                                         int n, int ld, int col0) {
    lora_scale_launch(be, (dbuf *)dout, dx, alpha, BT, n, ld, col0, 0);
}
