// Token embedding, vocabulary-parallel: this rank holds rows [vstart, vstart+Vl) of the table; ids
// outside the slice give zero rows (the tensor-parallel group then sums the partial outputs).
#include <string.h>

#include "model/ops/cpu/cpu.h"

// out (BT,C), tok (BT), wte (Vl,C)
void embedding_forward_cpu(const struct backend *be, dbuf *out_, const dbuf *tok_, const dbuf *wte_, int BT, int C, int vstart, int Vl) {
    float *out = F32(out_);
    const int *tok = CI32(tok_);
    const float *wte = CF32(wte_);
#pragma omp parallel for
    for (int i = 0; i < BT; i++) {
        int id = tok[i] - vstart;
        if (id >= 0 && id < Vl) memcpy(out + (size_t)i * C, wte + (size_t)id * C, sizeof(float) * (size_t)C);
        else memset(out + (size_t)i * C, 0, sizeof(float) * (size_t)C);
    }
}

// dwte (Vl,C) += dout rows scattered by token id. Serial over tokens (ids repeat), vectorised over C.
void embedding_backward_cpu(const struct backend *be, dbuf *dwte_, const dbuf *dout_, const dbuf *tok_, int BT, int C, int vstart, int Vl) {
    float *dwte = F32(dwte_);
    const float *dout = CF32(dout_);
    const int *tok = CI32(tok_);
    for (int i = 0; i < BT; i++) {
        int id = tok[i] - vstart;
        if (id < 0 || id >= Vl) continue;
        float *row = dwte + (size_t)id * C;
        const float *d = dout + (size_t)i * C;
#pragma omp simd
        for (int c = 0; c < C; c++) row[c] += d[c];
    }
}
