// optim/: AdamW + global-norm clipping + LR schedules against PyTorch, and the properties the trainer
// relies on (no decay on norm ranges, ZeRO-1 shards update exactly like the whole block, deterministic
// gradient norms, clear errors for bad [optim] values).
//
// The reference file comes from tests/ref/optim_ref.py, run by ctest as the fixture ref_optim.
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "core/config.h"
#include "core/error.h"
#include "model/ops/backends.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/schedule.h"
#include "testutil.h"

#define D(p) ((dbuf *)(p))
#define REF_PATH LLAMAC_TEST_TMP "/optim_ref.txt"

// ---------------------------------------------------------------------------------------------------
// The reference file (format in tests/ref/optim_ref.py)
// ---------------------------------------------------------------------------------------------------

#define REF_MAX_TENSORS 8
#define REF_MAX_STEPS 16
#define REF_MAX_CURVES 8

struct ref_curve {
    struct lr_schedule s;
    int n;
    double *lr;
};

struct ref {
    struct adamw_config ac;
    struct lr_schedule sched;
    int n_tensors;
    struct adamw_range ranges[REF_MAX_TENSORS];
    size_t N;
    double *init;                       // (N)
    int n_steps;
    double lr[REF_MAX_STEPS], norm[REF_MAX_STEPS];
    double *grad[REF_MAX_STEPS], *param[REF_MAX_STEPS];  // (N) each
    int n_curves;
    struct ref_curve curves[REF_MAX_CURVES];
};

static void expect_word(FILE *f, const char *w) {
    char buf[64];
    cr_assert(fscanf(f, "%63s", buf) == 1 && !strcmp(buf, w), "%s: expected '%s', got '%s'", REF_PATH, w, buf);
}

static double *read_doubles(FILE *f, size_t n) {
    double *x = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) cr_assert(fscanf(f, "%lf", &x[i]) == 1, "%s: short record", REF_PATH);
    return x;
}

static enum sched_kind kind_of(const char *s) {
    if (!strcmp(s, "cosine")) return SCHED_COSINE;
    if (!strcmp(s, "constant")) return SCHED_CONSTANT;
    cr_assert(!strcmp(s, "wsd"), "unknown schedule '%s' in %s", s, REF_PATH);
    return SCHED_WSD;
}

static void read_ref(struct ref *r) {
    memset(r, 0, sizeof(*r));
    FILE *f = fopen(REF_PATH, "r");
    cr_assert(f, "%s is missing: run the tests through ctest, whose fixture ref_optim writes it", REF_PATH);
    int version = 0;
    expect_word(f, "llamac-optim-ref");
    cr_assert(fscanf(f, "%d", &version) == 1 && version == 1, "%s: unknown version %d", REF_PATH, version);
    expect_word(f, "adamw");
    double b1, b2, eps, wd, clip;
    cr_assert(fscanf(f, "%lf %lf %lf %lf %lf", &b1, &b2, &eps, &wd, &clip) == 5);
    r->ac = (struct adamw_config){(float)b1, (float)b2, (float)eps, (float)wd, (float)clip};
    char kind[32], shape[32];
    expect_word(f, "schedule");
    cr_assert(fscanf(f, "%31s %lf %lf %ld %ld", kind, &r->sched.lr, &r->sched.min_lr, &r->sched.warmup,
                     &r->sched.total) == 5);
    r->sched.kind = kind_of(kind);
    char word[64];
    for (;;) {
        cr_assert(fscanf(f, "%63s", word) == 1, "%s: truncated", REF_PATH);
        if (strcmp(word, "tensor")) break;
        cr_assert(r->n_tensors < REF_MAX_TENSORS);
        struct adamw_range *rg = &r->ranges[r->n_tensors++];
        char name[64];
        cr_assert(fscanf(f, "%63s %zu %d", name, &rg->n, &rg->decay) == 3);
        rg->offset = r->N;
        r->N += rg->n;
    }
    cr_assert(!strcmp(word, "init"), "%s: expected 'init', got '%s'", REF_PATH, word);
    r->init = read_doubles(f, r->N);
    for (;;) {
        cr_assert(fscanf(f, "%63s", word) == 1, "%s: truncated", REF_PATH);
        if (strcmp(word, "step")) break;
        int t;
        cr_assert(r->n_steps < REF_MAX_STEPS);
        cr_assert(fscanf(f, "%d %lf %lf", &t, &r->lr[r->n_steps], &r->norm[r->n_steps]) == 3);
        cr_assert(t == r->n_steps + 1, "%s: steps out of order", REF_PATH);
        r->grad[r->n_steps] = read_doubles(f, r->N);
        r->param[r->n_steps] = read_doubles(f, r->N);
        r->n_steps++;
    }
    while (!strcmp(word, "curve")) {
        cr_assert(r->n_curves < REF_MAX_CURVES);
        struct ref_curve *c = &r->curves[r->n_curves++];
        cr_assert(fscanf(f, "%31s %31s %lf %lf %ld %ld %lf %d", kind, shape, &c->s.lr, &c->s.min_lr, &c->s.warmup,
                         &c->s.total, &c->s.decay_frac, &c->n) == 8);
        c->s.kind = kind_of(kind);
        c->s.decay_shape = !strcmp(shape, "cosine") ? SCHED_SHAPE_COSINE : SCHED_SHAPE_LINEAR;
        c->lr = read_doubles(f, (size_t)c->n);
        cr_assert(fscanf(f, "%63s", word) == 1, "%s: truncated", REF_PATH);
    }
    cr_assert(!strcmp(word, "end"), "%s: expected 'end', got '%s'", REF_PATH, word);
    fclose(f);
    cr_assert(r->n_steps == 10 && r->n_tensors == 4, "%s: expected 10 steps over 4 tensors", REF_PATH);
}

static void free_ref(struct ref *r) {
    free(r->init);
    for (int s = 0; s < r->n_steps; s++) { free(r->grad[s]); free(r->param[s]); }
    for (int c = 0; c < r->n_curves; c++) free(r->curves[c].lr);
}

static float *to_f32(const double *x, size_t n) {
    float *y = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) y[i] = (float)x[i];
    return y;
}

// The optimizer state over host arrays master, m, v of n elements (CPU buffers are host memory).
#define HOST_STATE(master, m, v, n) (&(struct adamw_state){NULL, D(master), D(m), D(v), 0, (n)})

static double rel_diff(double a, double b) { return fabs(a - b) / fmax(fabs(b), 1e-300); }

// ---------------------------------------------------------------------------------------------------
// AdamW + clipping + schedule against torch.optim.AdamW (float64)
// ---------------------------------------------------------------------------------------------------

Test(optim, adamw_with_clip_and_schedule_matches_torch) {
    struct ref r;
    read_ref(&r);
    const struct backend *be = backend_cpu();
    size_t N = r.N;
    float *p = to_f32(r.init, N);  // exact: the reference starts from fp32 values
    float *m = calloc(N, 4), *v = calloc(N, 4);
    double *delta_c = malloc(N * sizeof(double)), *delta_ref = malloc(N * sizeof(double));
    double worst_param = 0, worst_update = 0;
    for (int s = 0; s < r.n_steps; s++) {
        float *g = to_f32(r.grad[s], N);
        double lr = lr_at(&r.sched, s);
        cr_expect(rel_diff(lr, r.lr[s]) < 1e-12, "step %d: lr %.17g, torch's LambdaLR %.17g", s + 1, lr, r.lr[s]);
        double norm = sqrt(grad_sumsq(be, D(g), N));
        cr_expect(rel_diff(norm, r.norm[s]) < 1e-12, "step %d: grad norm %.17g, torch %.17g", s + 1, norm, r.norm[s]);
        float coef = clip_coef(norm, r.ac.clip);
        for (size_t i = 0; i < N; i++) delta_c[i] = -(double)p[i];
        adamw_step(be, HOST_STATE(p, m, v, N), NULL, D(g), r.ranges, r.n_tensors, &r.ac, (float)lr, coef, s + 1);

        const double *before = s == 0 ? r.init : r.param[s - 1];
        for (size_t i = 0; i < N; i++) {
            delta_c[i] += p[i];
            delta_ref[i] = r.param[s][i] - before[i];
        }
        double e = rel_err_d(p, r.param[s], N);
        // this step's update alone, C's against torch's: a far stricter measure than the params
        double d = 0, dn = 0;
        for (size_t i = 0; i < N; i++) {
            d += (delta_c[i] - delta_ref[i]) * (delta_c[i] - delta_ref[i]);
            dn += delta_ref[i] * delta_ref[i];
        }
        double eu = sqrt(d / dn);
        worst_param = fmax(worst_param, e);
        worst_update = fmax(worst_update, eu);
        cr_expect(e < 1e-6, "step %d: params differ from torch by %.3g relative (tolerance 1e-6)", s + 1, e);
        cr_expect(eu < 2e-4, "step %d: the update differs from torch's by %.3g relative", s + 1, eu);
        free(g);
    }
    cr_log_info("AdamW vs torch float64 over %d steps: worst param rel err %.3g, worst per-step update rel err %.3g",
                r.n_steps, worst_param, worst_update);
    free(p); free(m); free(v); free(delta_c); free(delta_ref);
    free_ref(&r);
}

Test(optim, clip_is_active_on_some_reference_steps_only) {
    // guards the reference itself: the comparison above must cover clipped and unclipped steps
    struct ref r;
    read_ref(&r);
    int clipped = 0;
    for (int s = 0; s < r.n_steps; s++) clipped += r.norm[s] > r.ac.clip;
    cr_expect(clipped > 0 && clipped < r.n_steps, "%d of %d reference steps clipped", clipped, r.n_steps);
    free_ref(&r);
}

Test(optim, schedules_match_python_formulas) {
    struct ref r;
    read_ref(&r);
    cr_assert(r.n_curves >= 4);
    for (int c = 0; c < r.n_curves; c++) {
        const struct ref_curve *rc = &r.curves[c];
        cr_expect(lr_schedule_validate(&rc->s) == 0, "curve %d: %s", c, err_msg());
        for (int s = 0; s < rc->n; s++) {
            double lr = lr_at(&rc->s, s);
            cr_expect(fabs(lr - rc->lr[s]) <= 1e-12 * rc->s.lr, "%s curve %d step %d: %.17g vs python %.17g",
                      lr_schedule_name(rc->s.kind), c, s, lr, rc->lr[s]);
        }
    }
    free_ref(&r);
}

// ---------------------------------------------------------------------------------------------------
// AdamW properties
// ---------------------------------------------------------------------------------------------------

Test(optim, adamw_decays_only_ranges_with_decay) {
    // With zero gradients the Adam term is 0/(0+eps) = 0: only the decoupled decay moves a parameter.
    const struct backend *be = backend_cpu();
    float p[12], p0[12], g[12] = {0}, m[12] = {0}, v[12] = {0};
    for (int i = 0; i < 12; i++) p[i] = p0[i] = 0.5f + 0.1f * i;
    struct adamw_range rg[3] = {{0, 5, 1}, {5, 3, 0}, {8, 4, 1}};
    struct adamw_config ac;
    adamw_config_default(&ac);
    float lr = 0.01f;
    adamw_step(be, HOST_STATE(p, m, v, 12), NULL, D(g), rg, 3, &ac, lr, 1.0f, 1);
    float keep = (float)(1.0 - (double)lr * ac.weight_decay);
    for (int i = 0; i < 12; i++) {
        if (i >= 5 && i < 8)
            cr_expect(p[i] == p0[i], "norm element %d changed: %.9g -> %.9g", i, p0[i], p[i]);
        else
            cr_expect(p[i] == p0[i] * keep, "matrix element %d: %.9g, expected %.9g * (1 - lr wd)", i, p[i], p0[i]);
        cr_expect(m[i] == 0 && v[i] == 0);
    }
}

Test(optim, adamw_first_step_is_sign_times_lr) {
    // Step 1 with bias correction: m_hat = g, v_hat = g^2, so the move is lr * g / (|g| + eps): a
    // property of torch's AdamW that a wrong bias correction breaks.
    float p[4] = {1, 1, 1, 1}, g[4] = {0.5f, -2.0f, 1e-3f, -7.0f}, m[4] = {0}, v[4] = {0};
    adamw_update_cpu(backend_cpu(), NULL, D(p), D(m), D(v), D(g), 4, 0.1f, 0.9f, 0.95f, 1e-8f, 0.0f, 1.0f, 1);
    for (int i = 0; i < 4; i++)
        cr_expect(fabs((double)p[i] - (1.0 - 0.1 * (g[i] > 0 ? 1 : -1))) < 1e-6, "element %d: %.9g", i, p[i]);
    // grad_scale scales the gradient the moments see
    float q[2] = {0, 0}, gq[2] = {2.0f, -4.0f}, mq[2] = {0}, vq[2] = {0};
    adamw_update_cpu(backend_cpu(), NULL, D(q), D(mq), D(vq), D(gq), 2, 0.1f, 0.9f, 0.95f, 1e-8f, 0.0f, 0.25f, 1);
    cr_expect(fabsf(mq[0] - 0.1f * 0.5f) < 1e-7f && fabsf(vq[1] - 0.05f * 1.0f) < 1e-7f, "m %g v %g", mq[0], vq[1]);
}

Test(optim, zero1_shards_update_exactly_like_the_whole_block) {
    // Three ranks own [0,37), [37,70), [70,N): slices that cut through tensors. Each updates its slice
    // with clipped ranges on buffers that start at its slice; the union must equal the whole update.
    const struct backend *be = backend_cpu();
    enum { N = 101 };
    struct adamw_range rg[4] = {{0, 30, 1}, {30, 10, 0}, {40, 55, 1}, {95, 6, 0}};
    float pw[N], mw[N] = {0}, vw[N] = {0}, ps[N], ms[N] = {0}, vs[N] = {0}, g[N];
    struct rng r;
    rng_seed(&r, 7);
    fill_normal(pw, N, 0.5f, &r);
    memcpy(ps, pw, sizeof(pw));
    struct adamw_config ac;
    adamw_config_default(&ac);
    size_t cut[4] = {0, 37, 70, N};
    for (long t = 1; t <= 3; t++) {
        fill_normal(g, N, 0.1f, &r);
        adamw_step(be, HOST_STATE(pw, mw, vw, N), NULL, D(g), rg, 4, &ac, 1e-2f, 0.7f, t);
        for (int k = 0; k < 3; k++) {
            struct adamw_range local[4];
            int n = adamw_ranges_clip(local, rg, 4, cut[k], cut[k + 1]);
            cr_assert(n >= 1);
            size_t o = cut[k];
            adamw_step(be, HOST_STATE(ps + o, ms + o, vs + o, cut[k + 1] - o), NULL, D(g + o), local, n, &ac, 1e-2f, 0.7f, t);
        }
    }
    cr_expect(memcmp(pw, ps, sizeof(pw)) == 0, "sharded params differ from the whole-block update");
    cr_expect(memcmp(mw, ms, sizeof(mw)) == 0 && memcmp(vw, vs, sizeof(vw)) == 0, "sharded moments differ");
}

Test(optim, ranges_clip_cuts_and_rebases) {
    struct adamw_range in[3] = {{0, 10, 1}, {10, 5, 0}, {15, 20, 1}}, out[3];
    int n = adamw_ranges_clip(out, in, 3, 8, 20);
    cr_assert_eq(n, 3);
    cr_expect(out[0].offset == 0 && out[0].n == 2 && out[0].decay == 1);
    cr_expect(out[1].offset == 2 && out[1].n == 5 && out[1].decay == 0);
    cr_expect(out[2].offset == 7 && out[2].n == 5 && out[2].decay == 1);
    cr_expect_eq(adamw_ranges_clip(out, in, 3, 10, 15), 1);
    cr_expect(out[0].offset == 0 && out[0].n == 5 && out[0].decay == 0);
    cr_expect_eq(adamw_ranges_clip(out, in, 3, 35, 40), 0, "a slice past the block holds nothing");
}

Test(optim, param_compute_copy_on_cpu) {
    const struct backend *be = backend_cpu();
    float p[3] = {1, 2, 3}, pc[3] = {0}, g[3] = {1, 1, 1}, m[3] = {0}, v[3] = {0};
    struct adamw_range rg = {0, 3, 1};
    struct adamw_config ac;
    adamw_config_default(&ac);
    adamw_step(be, HOST_STATE(p, m, v, 3), D(pc), D(g), &rg, 1, &ac, 1e-3f, 1.0f, 1);
    cr_expect(p[0] < 1 && memcmp(p, pc, sizeof(p)) == 0, "the compute copy must follow the master weights");
}

Test(optim, adamw_config_reads_optim_section) {
    struct cfg c;
    cfg_init(&c);
    struct adamw_config ac;
    cr_assert(adamw_config_from_cfg(&ac, &c) == 0);
    cr_expect(ac.beta1 == 0.9f && ac.beta2 == 0.95f && ac.eps == 1e-8f && ac.weight_decay == 0.1f && ac.clip == 1.0f);
    cfg_set(&c, "optim.betas=0.8, 0.99");
    cfg_set(&c, "optim.eps=1e-5");
    cfg_set(&c, "optim.clip=0");
    cr_assert(adamw_config_from_cfg(&ac, &c) == 0, "%s", err_msg());
    cr_expect(ac.beta1 == 0.8f && ac.beta2 == 0.99f && ac.eps == 1e-5f && ac.clip == 0.0f);
    cr_expect(cfg_finish(&c) == 0, "%s", err_msg());
    cfg_set(&c, "optim.betas=0.9");
    cr_expect(adamw_config_from_cfg(&ac, &c) == -1);
    cr_expect(strstr(err_msg(), "optim.betas") != NULL, "message: %s", err_msg());
    cfg_set(&c, "optim.betas=0.9, 1.0");
    cr_expect(adamw_config_from_cfg(&ac, &c) == -1, "beta2 = 1 must be rejected");
    cfg_set(&c, "optim.betas=0.9,0.95");
    cfg_set(&c, "optim.eps=0");
    cr_expect(adamw_config_from_cfg(&ac, &c) == -1 && strstr(err_msg(), "optim.eps"), "message: %s", err_msg());
    cfg_free(&c);
}

// ---------------------------------------------------------------------------------------------------
// Gradient norm and clip coefficient
// ---------------------------------------------------------------------------------------------------

Test(clip, sumsq_is_exact_and_flags_nonfinite) {
    const struct backend *be = backend_cpu();
    float g[5] = {3, 4, 0, -12, 0.5f};
    cr_expect(grad_sumsq(be, D(g), 5) == 9 + 16 + 144 + 0.25);
    cr_expect(grad_sumsq(be, D(g), 0) == 0);
    g[2] = NAN;
    cr_expect(isnan(grad_sumsq(be, D(g), 5)), "a NaN gradient must make the sum NaN");
    g[2] = INFINITY;
    cr_expect(isinf(grad_sumsq(be, D(g), 5)), "an Inf gradient must make the sum Inf");
    // the largest fp32 values square without overflow in double
    g[2] = 3e38f;
    cr_expect(isfinite(grad_sumsq(be, D(g), 5)));
}

Test(clip, sumsq_does_not_depend_on_thread_count) {
    size_t n = 1000003;
    float *g = malloc(n * 4);
    struct rng r;
    rng_seed(&r, 3);
    fill_normal(g, n, 1e-3f, &r);
    int keep = omp_get_max_threads();
    omp_set_num_threads(1);
    double s1 = grad_sumsq_cpu(backend_cpu(), D(g), n);
    omp_set_num_threads(2);
    double s2 = grad_sumsq_cpu(backend_cpu(), D(g), n);
    omp_set_num_threads(3);
    double s3 = grad_sumsq_cpu(backend_cpu(), D(g), n);
    omp_set_num_threads(keep);
    cr_expect(s1 == s2 && s2 == s3, "sum of squares %.17g / %.17g / %.17g with 1/2/3 threads", s1, s2, s3);
    double naive = 0;
    for (size_t i = 0; i < n; i++) naive += (double)g[i] * g[i];
    cr_expect(rel_diff(s1, naive) < 1e-12, "%.17g vs %.17g", s1, naive);
    free(g);
}

Test(clip, coefficient_as_clip_grad_norm) {
    cr_expect(clip_coef(0.5, 1.0) == 1.0f, "no clipping below the threshold");
    cr_expect(clip_coef(1.0, 1.0) == (float)(1.0 / (1.0 + 1e-6)), "torch adds 1e-6 to the norm");
    cr_expect(clip_coef(4.0, 1.0) == (float)(1.0 / (4.0 + 1e-6)));
    cr_expect(clip_coef(100.0, 0.0) == 1.0f, "max_norm 0 turns clipping off");
    cr_expect(clip_coef(INFINITY, 1.0) == 0.0f);
    cr_expect(isnan(clip_coef(NAN, 1.0)), "a NaN norm must stay visible");
}

// ---------------------------------------------------------------------------------------------------
// Schedule shapes and config
// ---------------------------------------------------------------------------------------------------

Test(schedule, cosine_shape) {
    struct lr_schedule s = {SCHED_COSINE, 3e-4, 3e-5, 100, 1000, 0, SCHED_SHAPE_LINEAR};
    cr_assert(lr_schedule_validate(&s) == 0, "%s", err_msg());
    cr_expect(fabs(lr_at(&s, 0) - 3e-6) < 1e-18, "warmup starts at lr / warmup: %g", lr_at(&s, 0));
    cr_expect(fabs(lr_at(&s, 49) - 1.5e-4) < 1e-18, "half way through warmup: %g", lr_at(&s, 49));
    cr_expect(lr_at(&s, 99) == 3e-4, "peak at the last warmup step: %g", lr_at(&s, 99));
    cr_expect(fabs(lr_at(&s, 549) - 1.65e-4) < 1e-15, "mid-decay is the mean of peak and floor: %g", lr_at(&s, 549));
    cr_expect(fabs(lr_at(&s, 999) - 3e-5) < 1e-18, "the last step reaches min_lr: %g", lr_at(&s, 999));
    cr_expect(lr_at(&s, 5000) == lr_at(&s, 999), "steps past the end hold min_lr");
    for (long t = 100; t < 1000; t++) cr_expect(lr_at(&s, t) <= lr_at(&s, t - 1), "not monotone at %ld", t);
    for (long t = 1; t < 100; t++) cr_expect(lr_at(&s, t) > lr_at(&s, t - 1), "warmup not increasing at %ld", t);
    s.warmup = 0;
    cr_expect(lr_at(&s, 0) < 3e-4 && lr_at(&s, 0) > 2.99e-4, "no warmup: the first step is at the peak (%g)",
              lr_at(&s, 0));
}

Test(schedule, constant_shape) {
    struct lr_schedule s = {SCHED_CONSTANT, 1e-3, 1e-4, 10, 100, 0, SCHED_SHAPE_LINEAR};
    cr_expect(fabs(lr_at(&s, 0) - 1e-4) < 1e-18);
    for (long t = 9; t < 150; t++) cr_expect(lr_at(&s, t) == 1e-3, "step %ld: %g", t, lr_at(&s, t));
}

Test(schedule, wsd_plateau_then_decay) {
    struct lr_schedule s = {SCHED_WSD, 1e-3, 1e-4, 10, 100, 0.2, SCHED_SHAPE_LINEAR};
    cr_assert(lr_schedule_validate(&s) == 0, "%s", err_msg());
    cr_expect(fabs(lr_at(&s, 4) - 5e-4) < 1e-18, "warmup");
    for (long t = 9; t < 80; t++) cr_expect(lr_at(&s, t) == 1e-3, "plateau at step %ld: %g", t, lr_at(&s, t));
    cr_expect(lr_at(&s, 80) < 1e-3, "the decay starts at step 80 (the last 20%% of 100)");
    cr_expect(fabs(lr_at(&s, 89) - 5.5e-4) < 1e-15, "linear: half way at step 89: %g", lr_at(&s, 89));
    cr_expect(fabs(lr_at(&s, 99) - 1e-4) < 1e-18, "ends at min_lr: %g", lr_at(&s, 99));
    for (long t = 81; t < 100; t++)
        cr_expect(fabs((lr_at(&s, t - 1) - lr_at(&s, t)) - 4.5e-5) < 1e-15, "linear steps at %ld", t);
    s.decay_shape = SCHED_SHAPE_COSINE;
    cr_expect(fabs(lr_at(&s, 89) - 5.5e-4) < 1e-15, "cosine: half way at step 89: %g", lr_at(&s, 89));
    cr_expect(lr_at(&s, 82) > 1e-3 - 2 * 4.5e-5 + 1e-6, "cosine decays slower than linear at first");
    cr_expect(fabs(lr_at(&s, 99) - 1e-4) < 1e-18);
}

static int sched_from(struct lr_schedule *s, long total, const char **sets, int n) {
    struct cfg c;
    cfg_init(&c);
    for (int i = 0; i < n; i++) cr_assert(cfg_set(&c, sets[i]) == 0);
    int rc = lr_schedule_from_cfg(s, &c, total);
    if (rc == 0) cr_expect(cfg_finish(&c) == 0, "%s", err_msg());
    cfg_free(&c);
    return rc;
}

Test(schedule, from_cfg_defaults) {
    struct lr_schedule s;
    cr_assert(sched_from(&s, 100000, NULL, 0) == 0, "%s", err_msg());
    cr_expect(s.kind == SCHED_COSINE && s.lr == 3e-4 && fabs(s.min_lr - 3e-5) < 1e-18 && s.warmup == 2000 &&
              s.total == 100000);
    cr_assert(sched_from(&s, 500, NULL, 0) == 0, "%s", err_msg());
    cr_expect(s.warmup == 50, "short runs warm up for a tenth of the run: %ld", s.warmup);
    const char *wsd[] = {"optim.schedule=wsd", "optim.lr=1e-3", "optim.warmup=5", "optim.decay_frac=0.1",
                         "optim.decay_shape=cosine"};
    cr_assert(sched_from(&s, 100, wsd, 5) == 0, "%s", err_msg());
    cr_expect(s.kind == SCHED_WSD && s.lr == 1e-3 && fabs(s.min_lr - 1e-4) < 1e-18 && s.warmup == 5 &&
              s.decay_frac == 0.1 && s.decay_shape == SCHED_SHAPE_COSINE);
}

static void expect_cfg_error(long total, const char *set, const char *needle) {
    struct lr_schedule s;
    const char *sets[] = {set};
    cr_expect(sched_from(&s, total, sets, 1) == -1, "%s was accepted", set);
    cr_expect(strstr(err_msg(), needle) != NULL, "%s: message '%s' does not mention '%s'", set, err_msg(), needle);
    cr_expect(strchr(err_msg(), '\n') == NULL, "one-line messages");
}

Test(schedule, from_cfg_rejects_bad_values) {
    expect_cfg_error(100, "optim.schedule=linear", "optim.schedule = 'linear'");
    expect_cfg_error(100, "optim.warmup=101", "longer than the run");
    expect_cfg_error(100, "optim.warmup=-1", "optim.warmup");
    expect_cfg_error(100, "optim.min_lr=1", "optim.min_lr");
    expect_cfg_error(100, "optim.lr=0", "optim.lr");
    expect_cfg_error(0, "optim.warmup=0", "at least one");
    expect_cfg_error(100, "optim.decay_shape=step", "optim.decay_shape");
    struct lr_schedule s;
    const char *wsd_bad_frac[] = {"optim.schedule=wsd", "optim.decay_frac=1.5"};
    cr_expect(sched_from(&s, 100, wsd_bad_frac, 2) == -1 && strstr(err_msg(), "decay_frac"), "%s", err_msg());
    const char *wsd_overlap[] = {"optim.schedule=wsd", "optim.warmup=90", "optim.decay_frac=0.2"};
    cr_expect(sched_from(&s, 100, wsd_overlap, 3) == -1 && strstr(err_msg(), "overlaps"), "%s", err_msg());
}
