// Rotary position embedding on the GPU, Hugging Face's rotate-half layout: in each of the first NR heads
// of a row of x (B,T,stride), element i (< HS/2) pairs with i + HS/2 and turns by the angle of position t:
//   forward:  (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)
//   backward: the inverse rotation (the transpose): (d1, d2) -> (d1 cos + d2 sin, d2 cos - d1 sin)
//
// Precision: x is the compute type T (BUF_ACT), rotated in place in fp32 and rounded once; cos and sin
// (T,HS/2) are fp32 BUF_STATE tables. With docs (B,T) (packed windows, core/backend.h) token t of row b
// turns by the angle of position t - docs[b,t].
//
// Launch: one thread per pair (b, t, head, i) in a grid-stride loop over B*T*NR*HS/2, 256 threads per
// block, at most 8192 blocks: each pair is independent and is read and written by one thread, so in
// place needs no synchronisation; i is fastest, so a warp reads consecutive elements of a head.
#include "model/ops/cuda/common.cuh"
#include "model/ops/cuda/cuda_ops.h"

// x (B,T,stride), cos, sin (T,HS/2), docs (B,T) or NULL; sign +1 forward, -1 backward; n = B*T*NR*half
template <typename T>
__global__ void rope_kernel(T *x, const float *cosb, const float *sinb, const int *docs, size_t n, int T_, int NR,
                            int half, int stride, float sign) {
    for (size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x; p < n; p += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(p % half);
        size_t rest = p / half;
        int h = (int)(rest % NR);
        size_t bt = rest / NR;
        int t = (int)(bt % T_);
        if (docs) t -= docs[bt];
        T *x1 = x + bt * stride + (size_t)h * 2 * half + i, *x2 = x1 + half;
        float a = to_f(*x1), c = to_f(*x2), cs = cosb[(size_t)t * half + i], s = sign * sinb[(size_t)t * half + i];
        *x1 = from_f<T>(a * cs - c * s);
        *x2 = from_f<T>(c * cs + a * s);
    }
}

static void rope_launch(const struct backend *be, dbuf *x, const dbuf *cos, const dbuf *sin, const dbuf *docs, int B,
                        int T_, int NR, int HS, int stride, float sign, const char *op) {
    CHECKF(HS > 0 && HS % 2 == 0 && NR >= 0 && (size_t)NR * HS <= (size_t)stride,
           "%s: needs an even head size and NR*HS <= stride (HS=%d NR=%d stride=%d)", op, HS, NR, stride);
    size_t n = (size_t)B * T_ * NR * (HS / 2);
    if (!n) return;
    unsigned grid = ceil_div(n, 256) < 8192 ? ceil_div(n, 256) : 8192;  // capped; the loop covers the rest
    DISPATCH_PRECISION(be, {
        auto k = rope_kernel<T>;
        LAUNCH(k, grid, 256, 0, cuda_stream(be), (T *)x, (const float *)cos, (const float *)sin, (const int *)docs, n,
               T_, NR, HS / 2, stride, sign);
    });
}

extern "C" void rope_forward_cuda(const struct backend *be, dbuf *x, const dbuf *cos, const dbuf *sin, const dbuf *docs,
                                  int B, int T, int NR, int HS, int stride) {
    rope_launch(be, x, cos, sin, docs, B, T, NR, HS, stride, 1.0f, "rope_forward");
}

extern "C" void rope_backward_cuda(const struct backend *be, dbuf *dx, const dbuf *cos, const dbuf *sin,
                                   const dbuf *docs, int B, int T, int NR, int HS, int stride) {
    rope_launch(be, dx, cos, sin, docs, B, T, NR, HS, stride, -1.0f, "rope_backward");
}
