// Linear layer without bias, as in LLaMA: out = inp @ weight^T with weight stored [out, in] (HF layout).
//
// All three products are BLAS sgemm calls. Threads come from OpenMP, not from BLAS: each thread runs a
// single-threaded sgemm on its own block of rows. With both libraries spawning threads on the same cores
// (OpenBLAS's pool spinning while OpenMP's does), small models ran 3x slower; one pool avoids that.
#include <cblas.h>
#include <omp.h>

#include "model/ops/cpu/cpu.h"

// Rows [lo, hi) of n split evenly over the team.
static void split_rows(int n, int *lo, int *hi) {
    int nt = omp_get_num_threads(), t = omp_get_thread_num();
    *lo = (int)((long)n * t / nt);
    *hi = (int)((long)n * (t + 1) / nt);
}

static void blas_single_threaded(void) {
    static int done = 0;
    if (!done) {
        openblas_set_num_threads(1);
        done = 1;
    }
}

// out (BT,OC), inp (BT,C), weight (OC,C)
void matmul_forward_cpu(const struct backend *be, dbuf *out, const dbuf *inp, const dbuf *weight, int BT, int C, int OC) {
    blas_single_threaded();
#pragma omp parallel
    {
        int lo, hi;
        split_rows(BT, &lo, &hi);
        if (hi > lo)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, hi - lo, OC, C, 1.0f, CF32(inp) + (size_t)lo * C, C,
                        CF32(weight), C, 0.0f, F32(out) + (size_t)lo * OC, OC);
    }
}

// dinp (BT,C) = dout (BT,OC) @ weight (OC,C); dweight (OC,C) += dout^T @ inp (skipped when NULL: frozen)
void matmul_backward_cpu(const struct backend *be, dbuf *dinp, dbuf *dweight, const dbuf *dout, const dbuf *inp, const dbuf *weight,
                         int BT, int C, int OC) {
    blas_single_threaded();
#pragma omp parallel
    {
        int lo, hi;
        if (dinp) {
            split_rows(BT, &lo, &hi);
            if (hi > lo)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, hi - lo, C, OC, 1.0f, CF32(dout) + (size_t)lo * OC,
                            OC, CF32(weight), C, 0.0f, F32(dinp) + (size_t)lo * C, C);
        }
        split_rows(OC, &lo, &hi);  // dweight rows lo..hi: dout columns lo..hi
        if (dweight && hi > lo)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, hi - lo, C, BT, 1.0f, CF32(dout) + lo, OC, CF32(inp), C,
                        1.0f, F32(dweight) + (size_t)lo * C, C);
    }
}
