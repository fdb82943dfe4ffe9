// Residual connection: out = a + b. Its backward hands dout unchanged to both branches, which needs no
// op: the model passes the residual stream's gradient on as it is (model/llama.c).
#include "model/ops/cpu/cpu.h"

void residual_forward_cpu(const struct backend *be, dbuf *out_, const dbuf *a_, const dbuf *b_, size_t N) {
    float *out = F32(out_);
    const float *a = CF32(a_), *b = CF32(b_);
#pragma omp parallel for simd
    for (size_t i = 0; i < N; i++) out[i] = a[i] + b[i];
}
