// Sum of squares of the gradients on the host, and the clip coefficient (see clip.h).
#include "optim/clip.h"

#include <math.h>
#include <stdlib.h>

#include "core/error.h"

// Chunks of a fixed size, summed in parallel and then added in order: the result does not depend on
// the number of threads.
#define SUMSQ_CHUNK 16384

double grad_sumsq_cpu(const float *g, size_t n) {
    size_t nc = (n + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK;
    double stack[64];
    double *part = nc <= 64 ? stack : xmalloc(nc * sizeof(double));
#pragma omp parallel for schedule(static) if (nc > 1)
    for (size_t c = 0; c < nc; c++) {
        size_t a = c * SUMSQ_CHUNK, b = a + SUMSQ_CHUNK < n ? a + SUMSQ_CHUNK : n;
        double s = 0;
        for (size_t i = a; i < b; i++) s += (double)g[i] * g[i];
        part[c] = s;
    }
    double s = 0;
    for (size_t c = 0; c < nc; c++) s += part[c];
    if (part != stack) free(part);
    return s;
}

double grad_sumsq(const struct backend *be, const dbuf *grads, size_t n) {
    CHECKF(be->elem_size[BUF_GRAD] == 4, "backend %s: the gradient norm needs fp32 gradients", be->name);
    if (be->kind == BACKEND_CPU) return grad_sumsq_cpu((const float *)grads, n);
#ifdef LLAMAC_WITH_CUDA
    return grad_sumsq_cuda((const float *)grads, n);
#else
    CHECKF(0, "backend %s: this build has no CUDA gradient norm", be->name);
#endif
}

float clip_coef(double norm, double max_norm) {
    if (max_norm <= 0) return 1.0f;
    if (isnan(norm)) return NAN;  // as torch's clamp; the trainer stops before it is used
    double c = max_norm / (norm + 1e-6);
    return (float)(c < 1.0 ? c : 1.0);
}
