// Linear layer without bias, as in LLaMA: out = inp @ weight^T with weight stored [out, in] (HF layout).
// All three products are BLAS sgemm calls; BLAS brings its own threads.
#include <cblas.h>

#include "model/ops/cpu/cpu.h"

// out (BT,OC), inp (BT,C), weight (OC,C)
void matmul_forward_cpu(dbuf *out, const dbuf *inp, const dbuf *weight, int BT, int C, int OC) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, BT, OC, C, 1.0f, CF32(inp), C, CF32(weight), C, 0.0f,
                F32(out), OC);
}

// dinp (BT,C) = dout (BT,OC) @ weight (OC,C); dweight (OC,C) += dout^T @ inp
void matmul_backward_cpu(dbuf *dinp, dbuf *dweight, const dbuf *dout, const dbuf *inp, const dbuf *weight,
                         int BT, int C, int OC) {
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, BT, C, OC, 1.0f, CF32(dout), OC, CF32(weight), C,
                    0.0f, F32(dinp), C);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, BT, 1.0f, CF32(dout), OC, CF32(inp), C, 1.0f,
                F32(dweight), C);
}
