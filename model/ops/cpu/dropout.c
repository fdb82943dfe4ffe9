// Inverted dropout (core/backend.h, dropout_forward): out[e] = x[e] / (1 - p) where the mask of
// model/ops/dropout_mask.h keeps element e = i*n + j of the stream `key`, else 0. LoRA applies it to an
// adapter's input in training (model/lora.c); its backward is the same call on the gradient.
#include "core/error.h"
#include "model/ops/cpu/cpu.h"
#include "model/ops/dropout_mask.h"

void dropout_forward_cpu(const struct backend *be, dbuf *out_, const dbuf *x_, float p, uint64_t key, int BT, int n) {
    CHECKF(p >= 0 && p < 1, "dropout: p = %g outside [0, 1)", p);
    CHECKF(out_ != x_, "dropout: out may not alias x");
    float *out = F32(out_);
    const float *x = CF32(x_);
    const uint32_t thr = dropout_threshold(p);
    const float s = dropout_scale(p);
    const size_t N = (size_t)BT * n;
#pragma omp parallel for
    for (size_t e = 0; e < N; e++) out[e] = dropout_keep(key, e, thr) ? x[e] * s : 0.0f;
}
