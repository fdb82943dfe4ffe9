// Rotary position embedding in Hugging Face's rotate-half layout: within each head of size HS, element i
// pairs with element i + HS/2 (i < HS/2) and the pair turns by the angle t * inv_freq[i].
//   forward:  (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)
//   backward: the transpose, i.e. the inverse rotation: (d1, d2) -> (d1 cos + d2 sin, d2 cos - d1 sin)
#include "model/ops/cpu/cpu.h"

// x (B,T,stride) in place on heads 0..NR-1 of each row; cos, sin (T,HS/2); docs (B,T) or NULL: token t of
// row b is at position t - docs[b,t] of its document (packed windows, core/backend.h)
static void rope_rotate(float *x, const float *cosb, const float *sinb, const int *docs, int B, int T, int NR, int HS,
                        int stride, float sign) {
    int half = HS / 2;
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const int pos = docs ? t - docs[(size_t)b * T + t] : t;
            const float *cs = cosb + (size_t)pos * half, *sn = sinb + (size_t)pos * half;
            float *row = x + ((size_t)b * T + t) * stride;
            for (int h = 0; h < NR; h++) {
                float *x1 = row + (size_t)h * HS, *x2 = x1 + half;
#pragma omp simd
                for (int i = 0; i < half; i++) {
                    float a = x1[i], c = x2[i], s = sign * sn[i];
                    x1[i] = a * cs[i] - c * s;
                    x2[i] = c * cs[i] + a * s;
                }
            }
        }
}

void rope_forward_cpu(const struct backend *be, dbuf *x, const dbuf *cos, const dbuf *sin, const dbuf *docs, int B, int T, int NR,
                      int HS, int stride) {
    rope_rotate(F32(x), CF32(cos), CF32(sin), CI32(docs), B, T, NR, HS, stride, 1.0f);
}

void rope_backward_cpu(const struct backend *be, dbuf *dx, const dbuf *cos, const dbuf *sin, const dbuf *docs, int B, int T, int NR,
                       int HS, int stride) {
    rope_rotate(F32(dx), CF32(cos), CF32(sin), CI32(docs), B, T, NR, HS, stride, -1.0f);
}
