// Attention of new query rows against a key/value cache on the GPU (sampling with a KV cache,
// model/kvcache.h; the CPU oracle is model/ops/cpu/attention_decode.c). Separate from attention.cu,
// whose tiled kernels serve training: decoding has one query row per head and a long cache, the shape
// of split-K ("flash-decoding"), not of 64-row query tiles.
//
// Precision: qkv, out and the caches are the compute type T (BUF_ACT); scores, exponentials and
// accumulators are fp32, the output is rounded once.
//
// Kernels:
//   store   one thread per element of the T new key and value rows (KVH*HS each) in a grid-stride loop:
//           qkv -> rows pos..pos+T-1 of kcache and vcache.
//   attend  grid (T, NH): a block of DEC_WARPS warps per (query row i, head h). Warp w takes keys
//           j = w, w + DEC_WARPS, ... < pos+i+1; its lanes split the head dimension (lane d holds
//           dims d, d+32, ...: at most DEC_MAXR = 8 per lane, HS <= 256), so a score is a warp_sum and
//           every lane keeps the same running max m and sum l and its own part of the accumulator
//           (online softmax). The warps' (m, l, acc) are then merged through shared memory:
//           M = max m_w, out = sum_w acc_w e^(m_w - M) / sum_w l_w e^(m_w - M).
// Reads each cached key and value once per query head (GQA heads of a group share the rows through
// the cache and L2); nothing of size T x (pos+T) is stored.
#include <math.h>

#include "model/ops/cuda/common.cuh"
#include "model/ops/cuda/cuda_ops.h"

#define DEC_WARPS 4
#define DEC_MAXR 8
#define DEC_MAXHS (32 * DEC_MAXR)

template <typename T>
__global__ void kv_store_kernel(T *kc, T *vc, const T *qkv, int T_, int pos, int NH, int KVH, int HS) {
    const int S = (NH + 2 * KVH) * HS, KS = KVH * HS;
    const size_t n = (size_t)T_ * KS;
    for (size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x; p < n; p += (size_t)gridDim.x * blockDim.x) {
        size_t t = p / KS, e = p % KS;
        kc[(size_t)(pos + t) * KS + e] = qkv[t * S + (size_t)NH * HS + e];
        vc[(size_t)(pos + t) * KS + e] = qkv[t * S + (size_t)(NH + KVH) * HS + e];
    }
}

template <typename T>
__global__ void attend_kernel(T *out, const T *kc, const T *vc, const T *qkv, int pos, int NH, int KVH, int HS) {
    __shared__ float q[DEC_MAXHS];
    __shared__ float wm[DEC_WARPS], wl[DEC_WARPS];
    __shared__ float wacc[DEC_WARPS][DEC_MAXHS];
    const int i = blockIdx.x, h = blockIdx.y, S = (NH + 2 * KVH) * HS, KS = KVH * HS;
    const int kvh = h / (NH / KVH), n = pos + i + 1;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const float scale = 1.0f / sqrtf((float)HS);
    for (int d = threadIdx.x; d < HS; d += blockDim.x) q[d] = to_f(qkv[(size_t)i * S + (size_t)h * HS + d]);
    __syncthreads();

    float m = -INFINITY, l = 0.0f, acc[DEC_MAXR];
    for (int r = 0; r < DEC_MAXR; r++) acc[r] = 0.0f;
    for (int j = warp; j < n; j += DEC_WARPS) {
        const T *k = kc + (size_t)j * KS + (size_t)kvh * HS, *v = vc + (size_t)j * KS + (size_t)kvh * HS;
        float s = 0.0f;
        for (int r = 0, d = lane; r < DEC_MAXR && d < HS; r++, d += 32) s += q[d] * to_f(k[d]);
        s = warp_sum(s) * scale;
        float mn = fmaxf(m, s), c = expf(m - mn), p = expf(s - mn);  // c = 0 on the first key (m = -inf)
        l = l * c + p;
        for (int r = 0, d = lane; r < DEC_MAXR && d < HS; r++, d += 32) acc[r] = acc[r] * c + p * to_f(v[d]);
        m = mn;
    }
    if (lane == 0) {
        wm[warp] = m;
        wl[warp] = l;
    }
    for (int r = 0, d = lane; r < DEC_MAXR && d < HS; r++, d += 32) wacc[warp][d] = acc[r];
    __syncthreads();

    float M = -INFINITY;
    for (int w = 0; w < DEC_WARPS; w++) M = fmaxf(M, wm[w]);  // key 0 is always visible: M is finite
    float L = 0.0f;
    for (int w = 0; w < DEC_WARPS; w++) L += wl[w] == 0.0f ? 0.0f : wl[w] * expf(wm[w] - M);
    for (int d = threadIdx.x; d < HS; d += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < DEC_WARPS; w++)
            if (wl[w] != 0.0f) o += wacc[w][d] * expf(wm[w] - M);
        out[(size_t)i * NH * HS + (size_t)h * HS + d] = from_f<T>(o / L);
    }
}

extern "C" void attention_decode_cuda(const struct backend *be, dbuf *out, dbuf *kcache, dbuf *vcache, const dbuf *qkv,
                                      int T_, int pos, int NH, int KVH, int HS) {
    CHECKF(T_ >= 1 && pos >= 0 && KVH > 0 && NH % KVH == 0 && HS >= 1 && HS <= DEC_MAXHS,
           "attention_decode: T %d, pos %d, NH %d, KVH %d, HS %d (HS <= %d)", T_, pos, NH, KVH, HS, DEC_MAXHS);
    size_t n = (size_t)T_ * KVH * HS;
    unsigned grid = ceil_div(n, 256) < 8192 ? ceil_div(n, 256) : 8192;
    dim3 agrid((unsigned)T_, (unsigned)NH);
    DISPATCH_PRECISION(be, {
        auto ks = kv_store_kernel<T>;
        LAUNCH(ks, grid, 256, 0, cuda_stream(be), (T *)kcache, (T *)vcache, (const T *)qkv, T_, pos, NH, KVH, HS);
        auto ka = attend_kernel<T>;
        LAUNCH(ka, agrid, 32 * DEC_WARPS, 0, cuda_stream(be), (T *)out, (const T *)kcache, (const T *)vcache,
               (const T *)qkv, pos, NH, KVH, HS);
    });
}
