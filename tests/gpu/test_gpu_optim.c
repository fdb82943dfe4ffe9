// The CUDA backend's storage and optimizer kernels against their CPU oracles (run only with a GPU;
// tests/gpu/gpu_probe makes ctest report them skipped elsewhere). Tolerance |a-b| <= atol + rtol |ref|.
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "model/ops/backends.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "testutil.h"

static const struct backend *gpu(void) {
    const struct backend *be = backend_cuda(PRECISION_BF16);
    cr_assert(be, "%s", err_msg());
    return be;
}

static int close_to(const float *a, const float *ref, size_t n, double atol, double rtol, size_t *bad) {
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)a[i] - ref[i]) <= atol + rtol * fabs((double)ref[i]))) {
            *bad = i;
            return 0;
        }
    return 1;
}

Test(gpu, storage_round_trips_fp32_exactly_and_bf16_to_nearest) {
    const struct backend *be = gpu();
    struct rng r;
    rng_seed(&r, 1);
    size_t n = 100003;
    float *x = malloc(n * 4), *y = malloc(n * 4);
    fill_normal(x, n, 3, &r);
    dbuf *g = be->alloc(be, BUF_GRAD, n), *p = be->alloc(be, BUF_PARAM, n);
    be->from_host(be, g, x, BUF_GRAD, n);
    be->to_host(be, y, g, BUF_GRAD, n);
    cr_expect(memcmp(x, y, n * 4) == 0, "fp32 buffers round-trip exactly");
    be->from_host(be, p, x, BUF_PARAM, n);
    be->to_host(be, y, p, BUF_PARAM, n);
    size_t bad = 0;
    cr_expect(close_to(y, x, n, 0, 1.0 / 256, &bad), "bf16: element %zu is %g, was %g", bad, y[bad], x[bad]);
    be->free(be, g);
    be->free(be, p);
    free(x);
    free(y);
}

Test(gpu, adamw_step_matches_the_cpu_update) {
    const struct backend *be = gpu(), *cpu = backend_cpu();
    struct rng r;
    rng_seed(&r, 2);
    size_t n = 50000;
    float *p = malloc(n * 4), *g = malloc(n * 4), *m = calloc(n, 4), *v = calloc(n, 4), *out = malloc(n * 4);
    fill_normal(p, n, 1, &r);
    struct adamw_config ac;
    adamw_config_default(&ac);
    struct adamw_range ranges[2] = {{0, 30000, 1}, {30000, 20000, 0}};
    struct adamw_state st;
    adamw_state_init(&st, be, 0, n);
    dbuf *dg = be->alloc(be, BUF_GRAD, n), *dpc = be->alloc(be, BUF_PARAM, n);
    be->from_host(be, st.master, p, BUF_STATE, n);
    struct adamw_state host = {NULL, (dbuf *)p, (dbuf *)m, (dbuf *)v, 0, n};
    for (long t = 1; t <= 5; t++) {
        fill_normal(g, n, 0.1f, &r);
        be->from_host(be, dg, g, BUF_GRAD, n);
        adamw_step(cpu, &host, NULL, (dbuf *)g, ranges, 2, &ac, 1e-3f, 0.7f, t);
        adamw_step(be, &st, dpc, dg, ranges, 2, &ac, 1e-3f, 0.7f, t);
    }
    be->to_host(be, out, st.master, BUF_STATE, n);
    size_t bad = 0;
    cr_expect(close_to(out, p, n, 1e-6, 1e-5, &bad), "master weight %zu: GPU %g, CPU %g", bad, out[bad], p[bad]);
    be->to_host(be, out, dpc, BUF_PARAM, n);
    cr_expect(close_to(out, p, n, 0, 1.0 / 256, &bad), "bf16 compute copy %zu: GPU %g, CPU %g", bad, out[bad], p[bad]);
    be->to_host(be, out, st.m, BUF_STATE, n);
    cr_expect(close_to(out, m, n, 1e-7, 1e-5, &bad), "first moment %zu", bad);
    be->to_host(be, out, st.v, BUF_STATE, n);
    cr_expect(close_to(out, v, n, 1e-9, 1e-5, &bad), "second moment %zu", bad);
}

Test(gpu, gradient_sum_of_squares_matches_the_cpu) {
    const struct backend *be = gpu();
    struct rng r;
    rng_seed(&r, 3);
    size_t n = 3000017;
    float *g = malloc(n * 4);
    fill_normal(g, n, 0.5f, &r);
    dbuf *dg = be->alloc(be, BUF_GRAD, n);
    be->from_host(be, dg, g, BUF_GRAD, n);
    double want = grad_sumsq_cpu(backend_cpu(), (dbuf *)g, n), got = grad_sumsq(be, dg, n);
    cr_expect(fabs(got - want) <= 1e-9 * want, "GPU %.17g vs CPU %.17g", got, want);
    float nan = NAN;
    be->from_host(be, dg, &nan, BUF_GRAD, 1);
    cr_expect(isnan(grad_sumsq(be, dg, n)), "a NaN gradient makes the sum NaN");
}
