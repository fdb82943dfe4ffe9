// SwiGLU on the GPU: out = silu(gate) * up, silu(g) = g * sigmoid(g), where each row of gateup (BT,2F)
// is [gate (F) | up (F)] from one fused matmul.
//
// Precision: gateup, out, dout and dgateup are the compute type T (BUF_ACT); the arithmetic is fp32
// with expf (not the fast __expf) so that fp32 precision matches the CPU oracle to rounding.
// Backward writes (=) both halves of dgateup; every element is read and written by the same thread, so
// dgateup may alias gateup as on the CPU.
//
// Launch: one thread per (row, f) in a grid-stride loop over BT*F, 256 threads per block, at most 8192
// blocks: elementwise and memory-bound, consecutive threads touch consecutive f so loads coalesce.
#include "model/ops/cuda/common.cuh"
#include "model/ops/cuda/cuda_ops.h"

// out (BT,F), gateup (BT,2F)
template <typename T> __global__ void swiglu_forward_kernel(T *out, const T *gateup, size_t n, int F) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t row = i / F, f = i % F;
        const T *g = gateup + row * 2 * F;
        float gf = to_f(g[f]), uf = to_f(g[F + f]);
        out[i] = from_f<T>(gf / (1.0f + expf(-gf)) * uf);
    }
}

// dgateup (BT,2F) =: dgate = dout * up * sig(g) * (1 + g (1 - sig(g))), dup = dout * silu(g)
template <typename T>
__global__ void swiglu_backward_kernel(T *dgateup, const T *dout, const T *gateup, size_t n, int F) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t row = i / F, f = i % F;
        const T *g = gateup + row * 2 * F;
        T *dg = dgateup + row * 2 * F;
        float gf = to_f(g[f]), uf = to_f(g[F + f]), df = to_f(dout[i]);  // read before write (aliasing)
        float s = 1.0f / (1.0f + expf(-gf));
        dg[f] = from_f<T>(df * uf * s * (1.0f + gf * (1.0f - s)));
        dg[F + f] = from_f<T>(df * gf * s);
    }
}

static unsigned swiglu_grid(size_t n) { return ceil_div(n, 256) < 8192 ? ceil_div(n, 256) : 8192; }

extern "C" void swiglu_forward_cuda(const struct backend *be, dbuf *out, const dbuf *gateup, int BT, int F) {
    size_t n = (size_t)BT * F;
    CHECKF(BT >= 0 && F > 0, "swiglu_forward: needs F > 0 and BT >= 0 (got BT=%d F=%d)", BT, F);
    if (!n) return;
    DISPATCH_PRECISION(be, {
        auto k = swiglu_forward_kernel<T>;
        LAUNCH(k, swiglu_grid(n), 256, 0, cuda_stream(be), (T *)out, (const T *)gateup, n, F);
    });
}

extern "C" void swiglu_backward_cuda(const struct backend *be, dbuf *dgateup, const dbuf *dout, const dbuf *gateup,
                                     int BT, int F) {
    size_t n = (size_t)BT * F;
    CHECKF(BT >= 0 && F > 0, "swiglu_backward: needs F > 0 and BT >= 0 (got BT=%d F=%d)", BT, F);
    if (!n) return;
    DISPATCH_PRECISION(be, {
        auto k = swiglu_backward_kernel<T>;
        LAUNCH(k, swiglu_grid(n), 256, 0, cuda_stream(be), (T *)dgateup, (const T *)dout, (const T *)gateup, n, F);
    });
}
