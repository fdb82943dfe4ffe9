// Pieces shared by the tests that run a backend's ops against the CPU backend (tests/gpu/test_gpu_*.c):
// the same tensor on both backends, random inputs, poisoned outputs, and the error measure.
//
// A pair holds one tensor twice: `ref` on the reference backend (the CPU) and `dut` on the backend under
// test. Inputs get the same random values on both sides, first rounded to what the tested backend stores
// (bf16 for PARAM/ACT in bf16 precision), so that the comparison measures the op, not the input rounding.
// Written (=) outputs are poisoned with NaN on the tested side, so an element the op forgets stays NaN
// and fails; accumulated (+=) outputs start from the same random values on both sides.
#pragma once
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/rng.h"

struct oc_pair {
    enum buf_kind kind;
    size_t n;
    dbuf *ref, *dut;
};

struct oc_err {
    double rel;     // ||out - ref|| / ||ref|| (the plain norm of the difference when ref is zero)
    double maxabs;  // max |out - ref|
    size_t nans;    // elements of out that are not finite
};

// The tolerance on oc_err.rel for a backend: fp32 to rounding, bf16 to its 8-bit mantissa.
static inline double oc_tol(const struct backend *be) { return be->precision == PRECISION_BF16 ? 1e-2 : 1e-5; }
static inline const char *oc_prec(const struct backend *be) {
    return be->precision == PRECISION_BF16 ? "bf16" : "fp32";
}

static inline void oc_uniform(float *x, size_t n, float lo, float hi, struct rng *r) {
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * (float)rng_uniform(r);
}

// A host copy of n elements of d (fp32); free() it.
static inline float *oc_download(const struct backend *be, const dbuf *d, enum buf_kind kind, size_t n) {
    float *h = (float *)malloc((n ? n : 1) * sizeof(float));
    be->to_host(be, h, d, kind, n);
    return h;
}

static inline dbuf *oc_upload(const struct backend *be, enum buf_kind kind, const float *h, size_t n) {
    dbuf *d = be->alloc(be, kind, n);
    be->from_host(be, d, h, kind, n);
    return d;
}

// Rounds h to what be stores for kind (a round trip through be).
static inline void oc_round(const struct backend *be, enum buf_kind kind, float *h, size_t n) {
    dbuf *d = oc_upload(be, kind, h, n);
    be->to_host(be, h, d, kind, n);
    be->free(be, d);
}

static inline void oc_poison(const struct backend *be, dbuf *d, enum buf_kind kind, size_t n) {
    float *h = (float *)malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    be->from_host(be, d, h, kind, n);
    free(h);
}

// The same host values h (n) on both backends, rounded to the tested backend's storage first (h too).
static inline struct oc_pair oc_pair_of(const struct backend *ref, const struct backend *be, enum buf_kind kind,
                                        float *h, size_t n) {
    struct oc_pair p = {kind, n, NULL, NULL};
    oc_round(be, kind, h, n);
    p.ref = oc_upload(ref, kind, h, n);
    p.dut = oc_upload(be, kind, h, n);
    return p;
}

// An input (or accumulated output) of n uniform values in [lo, hi).
static inline struct oc_pair oc_random(const struct backend *ref, const struct backend *be, enum buf_kind kind,
                                       size_t n, float lo, float hi, struct rng *r) {
    float *h = (float *)malloc((n ? n : 1) * sizeof(float));
    oc_uniform(h, n, lo, hi, r);
    struct oc_pair p = oc_pair_of(ref, be, kind, h, n);
    free(h);
    return p;
}

// A written output: zero on the reference side, NaN on the tested side.
static inline struct oc_pair oc_output(const struct backend *ref, const struct backend *be, enum buf_kind kind,
                                       size_t n) {
    struct oc_pair p = {kind, n, ref->alloc(ref, kind, n), be->alloc(be, kind, n)};
    oc_poison(be, p.dut, kind, n);
    return p;
}

// int32 ids on both backends
static inline struct oc_pair oc_ints(const struct backend *ref, const struct backend *be, const int *h, size_t n) {
    struct oc_pair p = {BUF_INT, n, ref->alloc(ref, BUF_INT, n), be->alloc(be, BUF_INT, n)};
    ref->ints_from_host(ref, p.ref, h, n);
    be->ints_from_host(be, p.dut, h, n);
    return p;
}

static inline struct oc_err oc_compare(const float *out, const float *ref, size_t n) {
    struct oc_err e = {0, 0, 0};
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(out[i])) {
            e.nans++;
            continue;
        }
        double x = (double)out[i] - ref[i];
        d += x * x;
        s += (double)ref[i] * ref[i];
        if (fabs(x) > e.maxabs) e.maxabs = fabs(x);
    }
    e.rel = s > 0 ? sqrt(d / s) : sqrt(d);
    return e;
}

// Downloads both sides of p and compares the tested one against the reference.
static inline struct oc_err oc_check(const struct backend *ref, const struct backend *be, const struct oc_pair *p) {
    float *a = oc_download(be, p->dut, p->kind, p->n), *b = oc_download(ref, p->ref, p->kind, p->n);
    struct oc_err e = oc_compare(a, b, p->n);
    free(a);
    free(b);
    return e;
}

static inline void oc_free(const struct backend *ref, const struct backend *be, struct oc_pair *p) {
    ref->free(ref, p->ref);
    be->free(be, p->dut);
    p->ref = p->dut = NULL;
}
