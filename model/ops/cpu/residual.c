// Residual connection: out = a + b. Its backward hands the same gradient to both branches.
#include "model/ops/cpu/cpu.h"

void residual_forward_cpu(dbuf *out_, const dbuf *a_, const dbuf *b_, size_t N) {
    float *out = F32(out_);
    const float *a = CF32(a_), *b = CF32(b_);
#pragma omp parallel for simd
    for (size_t i = 0; i < N; i++) out[i] = a[i] + b[i];
}

void residual_backward_cpu(dbuf *da_, dbuf *db_, const dbuf *dout_, size_t N) {
    float *da = F32(da_), *db = F32(db_);
    const float *d = CF32(dout_);
#pragma omp parallel for simd
    for (size_t i = 0; i < N; i++) {
        da[i] += d[i];
        db[i] += d[i];
    }
}
