// The scaled, strided add that puts a LoRA update into a fused projection's output, and its backward
// (model/lora.c): the adapter of q, k or v writes the columns of q, k or v inside the fused qkv output.
//   forward:  out[i, col0 + j] += alpha * x[i, j]      out (BT, ld), x (BT, n)
//   backward: dx[i, j] = alpha * dout[i, col0 + j]     the transpose: dx (BT, n) =, dout (BT, ld)
#include "model/ops/cpu/cpu.h"

void lora_scale_forward_cpu(const struct backend *be, dbuf *out_, const dbuf *x_, float alpha, int BT, int n, int ld,
                            int col0) {
    float *out = F32(out_);
    const float *x = CF32(x_);
#pragma omp parallel for
    for (int i = 0; i < BT; i++)
        for (int j = 0; j < n; j++) out[(size_t)i * ld + col0 + j] += alpha * x[(size_t)i * n + j];
}

void lora_scale_backward_cpu(const struct backend *be, dbuf *dx_, const dbuf *dout_, float alpha, int BT, int n, int ld,
                             int col0) {
    float *dx = F32(dx_);
    const float *dout = CF32(dout_);
#pragma omp parallel for
    for (int i = 0; i < BT; i++)
        for (int j = 0; j < n; j++) dx[(size_t)i * n + j] = alpha * dout[(size_t)i * ld + col0 + j];
}
