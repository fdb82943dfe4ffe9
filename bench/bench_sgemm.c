// sgemm GFLOP/s of the BLAS llamac links, and the OpenBLAS core it runs (core/blas_core.h): the ceiling of
// the CPU backend's matrix products, printed beside the model's tokens/s by bench/model.sh, so that a
// generic-kernel fallback (5x slower) shows at once.
// usage: bench_sgemm [N] [REPS]   (default 1024 10): prints "sgemm N GFLOPS CORE"
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/blas_core.h"
#include "core/timer.h"

int main(int argc, char **argv) {
    blas_core_select(argv);
    int n = argc > 1 ? atoi(argv[1]) : 1024, reps = argc > 2 ? atoi(argv[2]) : 10;
    if (n < 16 || reps < 1) return 2;
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
    for (long i = 0; i < (long)n * n; i++) a[i] = (float)(i % 7) * 0.1f, b[i] = (float)(i % 5) * 0.2f, c[i] = 0;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);  // warm-up
    double t0 = time_now();
    for (int r = 0; r < reps; r++) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    double dt = time_now() - t0;
    char core[160];
    blas_core_describe(core, sizeof(core));
    printf("sgemm %d %.1f %s\n", n, 2.0 * n * n * (double)n * reps / dt / 1e9, core);
    free(a);
    free(b);
    free(c);
    return 0;
}
