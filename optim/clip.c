// Sum of squares of the gradients on the host, and the clip coefficient (see clip.h).
#include "optim/clip.h"

#include <math.h>
#include <stdlib.h>

#include "core/error.h"

// Chunks of a fixed size, summed in parallel and then added in order: the result does not depend on
// the number of threads.
#define SUMSQ_CHUNK 16384

double grad_sumsq_cpu(const struct backend *be, const dbuf *grads, size_t n) {
    const float *g = (const float *)grads;
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

float clip_coef(double norm, double max_norm) {
    if (max_norm <= 0) return 1.0f;
    if (isnan(norm)) return NAN;  // as torch's clamp; the trainer stops before it is used
    double c = max_norm / (norm + 1e-6);
    return (float)(c < 1.0 ? c : 1.0);
}
