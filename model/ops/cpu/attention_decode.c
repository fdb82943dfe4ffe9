// Attention of new query rows against a key/value cache (sampling with a KV cache, model/kvcache.h).
// The arithmetic is attention_forward_cpu's, row by row (model/ops/cpu/attention.c): scores, max,
// exponentials, sum, weighted values, one division; only the keys and values come from the cache, so a
// decode step gives the row the full causal attention would give it. Forward only: sampling never
// differentiates.
//
// Layout: qkv (T,(NH+2KVH)*HS) holds per row the NH query heads, then KVH key heads, then KVH value
// heads; kcache and vcache (>= pos+T, KVH*HS) hold one row per position. Query head h reads kv head
// h / (NH/KVH).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "model/ops/cpu/cpu.h"

static inline float dot(const float *a, const float *b, int n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static inline void axpy(float *y, float a, const float *x, int n) {
#pragma omp simd
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

// out (T,NH*HS) =; kcache, vcache rows pos..pos+T-1 =; qkv (T,(NH+2KVH)*HS)
void attention_decode_cpu(const struct backend *be, dbuf *out_, dbuf *kcache_, dbuf *vcache_, const dbuf *qkv_, int T,
                          int pos, int NH, int KVH, int HS) {
    (void)be;
    CHECKF(T >= 1 && pos >= 0 && NH % KVH == 0, "attention_decode: T %d, pos %d, NH %d, KVH %d", T, pos, NH, KVH);
    float *out = F32(out_), *kc = F32(kcache_), *vc = F32(vcache_);
    const float *qkv = CF32(qkv_);
    const int S = (NH + 2 * KVH) * HS, KS = KVH * HS, group = NH / KVH;
    const float scale = 1.0f / sqrtf((float)HS);
    for (int t = 0; t < T; t++) {
        memcpy(kc + (size_t)(pos + t) * KS, qkv + (size_t)t * S + (size_t)NH * HS, sizeof(float) * (size_t)KS);
        memcpy(vc + (size_t)(pos + t) * KS, qkv + (size_t)t * S + (size_t)(NH + KVH) * HS, sizeof(float) * (size_t)KS);
    }
#pragma omp parallel
    {
        float *p = xmalloc_aligned(sizeof(float) * (size_t)(pos + T));
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int i = 0; i < T; i++)
            for (int h = 0; h < NH; h++) {
                const int kvh = h / group, n = pos + i + 1;
                const float *q = qkv + (size_t)i * S + (size_t)h * HS;
                float m = -INFINITY;
                for (int j = 0; j < n; j++) {
                    p[j] = dot(q, kc + (size_t)j * KS + (size_t)kvh * HS, HS) * scale;
                    if (p[j] > m) m = p[j];
                }
                float sum = 0.0f;
                for (int j = 0; j < n; j++) {
                    p[j] = expf(p[j] - m);
                    sum += p[j];
                }
                float *o = out + (size_t)i * NH * HS + (size_t)h * HS;
                memset(o, 0, sizeof(float) * (size_t)HS);
                for (int j = 0; j < n; j++) axpy(o, p[j], vc + (size_t)j * KS + (size_t)kvh * HS, HS);
                float inv = 1.0f / sum;
                for (int d = 0; d < HS; d++) o[d] *= inv;
            }
        free(p);
    }
}
