// RMSNorm: y = w * x * rstd, rstd = 1 / sqrt(mean(x^2) + eps), over the last dimension.
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "model/ops/cpu/cpu.h"

// out (BT,C), rstd (BT), inp (BT,C), weight (C)
void rmsnorm_forward_cpu(const struct backend *be, dbuf *out_, dbuf *rstd_, const dbuf *inp_, const dbuf *weight_, int BT, int C, float eps) {
    float *out = F32(out_), *rstd = F32(rstd_);
    const float *inp = CF32(inp_), *w = CF32(weight_);
#pragma omp parallel for
    for (int i = 0; i < BT; i++) {
        const float *x = inp + (size_t)i * C;
        float *y = out + (size_t)i * C;
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int c = 0; c < C; c++) ss += x[c] * x[c];
        float r = 1.0f / sqrtf(ss / (float)C + eps);
        rstd[i] = r;
#pragma omp simd
        for (int c = 0; c < C; c++) y[c] = w[c] * (x[c] * r);
    }
}

// res (BT,C) = a + b, then out, rstd = rmsnorm_forward(res): the same arithmetic as residual_forward_cpu
// followed by rmsnorm_forward_cpu (bit for bit), one pass per row. res may alias a or b.
void residual_rmsnorm_forward_cpu(const struct backend *be, dbuf *res_, dbuf *out_, dbuf *rstd_, const dbuf *a_,
                                  const dbuf *b_, const dbuf *weight_, int BT, int C, float eps) {
    float *res = F32(res_), *out = F32(out_), *rstd = F32(rstd_);
    const float *a = CF32(a_), *b = CF32(b_), *w = CF32(weight_);
#pragma omp parallel for
    for (int i = 0; i < BT; i++) {
        const size_t o = (size_t)i * C;
        float *x = res + o, *y = out + o;
#pragma omp simd
        for (int c = 0; c < C; c++) x[c] = a[o + c] + b[o + c];
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int c = 0; c < C; c++) ss += x[c] * x[c];
        float r = 1.0f / sqrtf(ss / (float)C + eps);
        rstd[i] = r;
#pragma omp simd
        for (int c = 0; c < C; c++) y[c] = w[c] * (x[c] * r);
    }
}

// dinp (BT,C) += dx, dweight (C) += sum over rows of dout * x * rstd, where
//   dx_c = rstd * w_c * dout_c - rstd^3 / C * x_c * sum_k(dout_k * w_k * x_k)
void rmsnorm_backward_cpu(const struct backend *be, dbuf *dinp_, dbuf *dweight_, const dbuf *dout_, const dbuf *inp_, const dbuf *weight_,
                          const dbuf *rstd_, int BT, int C) {
    float *dinp = F32(dinp_), *dw = F32(dweight_);
    const float *dout = CF32(dout_), *inp = CF32(inp_), *w = CF32(weight_), *rstd = CF32(rstd_);
    int nt = omp_get_max_threads();
    float *partial = xcalloc((size_t)nt * C, sizeof(float));  // one dweight per thread, summed below
#pragma omp parallel
    {
        float *pdw = partial + (size_t)omp_get_thread_num() * C;
#pragma omp for
        for (int i = 0; i < BT; i++) {
            const float *x = inp + (size_t)i * C, *d = dout + (size_t)i * C;
            float *dx = dinp + (size_t)i * C;
            float r = rstd[i], dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (int c = 0; c < C; c++) dot += d[c] * w[c] * x[c];
            float k = r * r * r * dot / (float)C;
#pragma omp simd
            for (int c = 0; c < C; c++) {
                dx[c] += r * w[c] * d[c] - k * x[c];
                pdw[c] += d[c] * x[c] * r;
            }
        }
    }
    for (int t = 0; dw && t < nt; t++)  // dweight NULL: frozen
        for (int c = 0; c < C; c++) dw[c] += partial[(size_t)t * C + c];
    free(partial);
}
