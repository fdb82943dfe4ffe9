// Helpers shared by llamac's Criterion tests: random tensors and relative errors.
#pragma once
#include <math.h>
#include <stdlib.h>

#include "core/rng.h"

static inline void fill_normal(float *x, size_t n, float scale, struct rng *r) {
    for (size_t i = 0; i < n; i++) x[i] = scale * rng_normal(r);
}

// ||a - b|| / ||b|| (norm of the difference over the norm of the reference)
static inline double rel_err(const float *a, const float *b, size_t n) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        s += (double)b[i] * b[i];
    }
    return s > 0 ? sqrt(d / s) : sqrt(d);
}

static inline double rel_err_d(const float *a, const double *b, size_t n) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        s += b[i] * b[i];
    }
    return s > 0 ? sqrt(d / s) : sqrt(d);
}
