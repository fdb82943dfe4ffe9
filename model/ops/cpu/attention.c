// Causal self-attention with grouped-query heads, computed row by row so that the (T,T) score matrix is
// never stored: forward keeps only each row's log-sum-exp, and backward recomputes the probabilities
// from it (as FlashAttention does, here with plain loops that the compiler vectorises over HS).
//
// Layout: qkv (B,T,(NH+2KVH)*HS) holds per row the NH query heads, then KVH key heads, then KVH value
// heads. Query head h reads key/value head h / (NH/KVH).
//
// Packed windows (docs (B,T) not NULL, core/backend.h): query i sees keys j in [docs[b,i], i] only, so each
// document of a row attends to itself alone; a row of a document never sees an earlier one.
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

// The first key position query i of row b may see.
static inline int doc_start(const int *docs, int b, int T, int i) { return docs ? docs[(size_t)b * T + i] : 0; }

// out (B,T,NH*HS), lse (B,NH,T), qkv (B,T,(NH+2KVH)*HS), docs (B,T) or NULL
void attention_forward_cpu(const struct backend *be, dbuf *out_, dbuf *lse_, const dbuf *qkv_, const dbuf *docs_, int B, int T, int NH,
                           int KVH, int HS) {
    float *out = F32(out_), *lse = F32(lse_);
    const float *qkv = CF32(qkv_);
    const int *docs = CI32(docs_);
    const int S = (NH + 2 * KVH) * HS, group = NH / KVH;
    const float scale = 1.0f / sqrtf((float)HS);
#pragma omp parallel
    {
        float *p = xmalloc_aligned(sizeof(float) * (size_t)T);
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++) {
                const int kvh = h / group;
                const float *base = qkv + (size_t)b * T * S;
                for (int i = 0; i < T; i++) {
                    const float *q = base + (size_t)i * S + (size_t)h * HS;
                    const int j0 = doc_start(docs, b, T, i);
                    float m = -INFINITY;
                    for (int j = j0; j <= i; j++) {
                        const float *k = base + (size_t)j * S + (size_t)(NH + kvh) * HS;
                        p[j] = dot(q, k, HS) * scale;
                        if (p[j] > m) m = p[j];
                    }
                    float sum = 0.0f;
                    for (int j = j0; j <= i; j++) {
                        p[j] = expf(p[j] - m);
                        sum += p[j];
                    }
                    float *o = out + ((size_t)b * T + i) * NH * HS + (size_t)h * HS;
                    memset(o, 0, sizeof(float) * (size_t)HS);
                    for (int j = j0; j <= i; j++)
                        axpy(o, p[j], base + (size_t)j * S + (size_t)(NH + KVH + kvh) * HS, HS);
                    float inv = 1.0f / sum;
                    for (int d = 0; d < HS; d++) o[d] *= inv;
                    lse[((size_t)b * NH + h) * T + i] = m + logf(sum);
                }
            }
        free(p);
    }
}

// dqkv (B,T,(NH+2KVH)*HS) =. With P = softmax(scale * q k^T) recomputed from lse:
//   dv_j += p_ij do_i;  ds_ij = p_ij (do_i . v_j - do_i . o_i);  dq_i += scale ds_ij k_j;  dk_j += scale ds_ij q_i
// Work is split by (batch, kv head) so that the query heads sharing a kv head add into dk, dv from one thread.
void attention_backward_cpu(const struct backend *be, dbuf *dqkv_, const dbuf *dout_, const dbuf *qkv_, const dbuf *out_, const dbuf *lse_,
                            const dbuf *docs_, int B, int T, int NH, int KVH, int HS) {
    float *dqkv = F32(dqkv_);
    const int *docs = CI32(docs_);
    const float *dout = CF32(dout_), *qkv = CF32(qkv_), *out = CF32(out_), *lse = CF32(lse_);
    const int S = (NH + 2 * KVH) * HS, group = NH / KVH;
    const float scale = 1.0f / sqrtf((float)HS);
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        for (int kvh = 0; kvh < KVH; kvh++) {
            const float *base = qkv + (size_t)b * T * S;
            float *dbase = dqkv + (size_t)b * T * S;
            for (int t = 0; t < T; t++) {
                memset(dbase + (size_t)t * S + (size_t)(NH + kvh) * HS, 0, sizeof(float) * (size_t)HS);
                memset(dbase + (size_t)t * S + (size_t)(NH + KVH + kvh) * HS, 0, sizeof(float) * (size_t)HS);
            }
            for (int h = kvh * group; h < (kvh + 1) * group; h++)
                for (int i = 0; i < T; i++) {
                    const float *q = base + (size_t)i * S + (size_t)h * HS;
                    const float *dO = dout + ((size_t)b * T + i) * NH * HS + (size_t)h * HS;
                    const float *O = out + ((size_t)b * T + i) * NH * HS + (size_t)h * HS;
                    float *dq = dbase + (size_t)i * S + (size_t)h * HS;
                    const float l = lse[((size_t)b * NH + h) * T + i];
                    const float D = dot(dO, O, HS);
                    memset(dq, 0, sizeof(float) * (size_t)HS);
                    for (int j = doc_start(docs, b, T, i); j <= i; j++) {
                        const float *k = base + (size_t)j * S + (size_t)(NH + kvh) * HS;
                        const float *v = base + (size_t)j * S + (size_t)(NH + KVH + kvh) * HS;
                        float *dk = dbase + (size_t)j * S + (size_t)(NH + kvh) * HS;
                        float *dv = dbase + (size_t)j * S + (size_t)(NH + KVH + kvh) * HS;
                        float p = expf(dot(q, k, HS) * scale - l);
                        float ds = p * (dot(dO, v, HS) - D) * scale;
                        axpy(dv, p, dO, HS);
                        axpy(dq, ds, k, HS);
                        axpy(dk, ds, q, HS);
                    }
                }
        }
}
