// Every CUDA op, forward and backward, against the CPU backend's op on random inputs, in fp32 precision
// (relative error <= 1e-5) and bf16 precision (<= 1e-2), over shapes chosen to catch edge handling: odd
// T and BT, C not a multiple of 32, vocabularies not a multiple of the block size, vocabulary slices with
// vstart > 0 and padding columns, ignored targets. Helpers (pairs of buffers, poisoning, the error
// measure) are in tests/ops_cases.h. Each comparison prints one line: op, precision, shape, errors.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/error.h"
#include "model/ops/backends.h"
#include "ops_cases.h"

static const enum precision precisions[] = {PRECISION_FP32, PRECISION_BF16};
#define NPREC 2

static const struct backend *gpu(enum precision p) {
    const struct backend *be = backend_cuda(p);
    cr_assert(be, "%s", err_msg());
    return be;
}

static void expect_err(const struct backend *be, struct oc_err e, double tol, const char *op, const char *shape) {
    printf("%-32s %s %-34s rel %.3e maxabs %.3e nan %zu\n", op, oc_prec(be), shape, e.rel, e.maxabs, e.nans);
    fflush(stdout);
    cr_expect(e.nans == 0 && e.rel <= tol, "%s (%s, %s): rel %.3e (tolerance %.1e) maxabs %.3e, %zu non-finite", op,
              oc_prec(be), shape, e.rel, tol, e.maxabs, e.nans);
}

// Compares one output pair against the reference backend and prints the measured errors.
static void expect_close(const struct backend *cpu, const struct backend *be, const struct oc_pair *p, const char *op,
                         const char *shape) {
    expect_err(be, oc_check(cpu, be, p), oc_tol(be), op, shape);
}

// ---- embedding: {BT, C, Vl, vstart}; tokens in [0, vstart + Vl + 7), so some fall outside the slice
static const int emb_shapes[][4] = {{7, 33, 50, 0}, {13, 64, 40, 20}, {1, 300, 17, 5}, {65, 40, 10, 3}};

static void emb_case(const struct backend *cpu, const struct backend *be, const int *s, struct rng *r) {
    int BT = s[0], C = s[1], Vl = s[2], vstart = s[3];
    char shape[64];
    snprintf(shape, sizeof(shape), "BT=%d C=%d Vl=%d vstart=%d", BT, C, Vl, vstart);
    int *tok = malloc(BT * sizeof(int));
    for (int i = 0; i < BT; i++) tok[i] = (int)(rng_u64(r) % (uint64_t)(vstart + Vl + 7));
    struct oc_pair t = oc_ints(cpu, be, tok, BT);
    struct oc_pair wte = oc_random(cpu, be, BUF_PARAM, (size_t)Vl * C, -1, 1, r);
    struct oc_pair out = oc_output(cpu, be, BUF_ACT, (size_t)BT * C);
    cpu->ops->embedding_forward(cpu, out.ref, t.ref, wte.ref, BT, C, vstart, Vl);
    be->ops->embedding_forward(be, out.dut, t.dut, wte.dut, BT, C, vstart, Vl);
    expect_close(cpu, be, &out, "embedding_forward", shape);
    struct oc_pair dout = oc_random(cpu, be, BUF_ACT, (size_t)BT * C, -1, 1, r);
    struct oc_pair dwte = oc_random(cpu, be, BUF_GRAD, (size_t)Vl * C, -1, 1, r);
    cpu->ops->embedding_backward(cpu, dwte.ref, dout.ref, t.ref, BT, C, vstart, Vl);
    be->ops->embedding_backward(be, dwte.dut, dout.dut, t.dut, BT, C, vstart, Vl);
    expect_close(cpu, be, &dwte, "embedding_backward dwte", shape);
    struct oc_pair *all[] = {&t, &wte, &out, &dout, &dwte};
    for (int i = 0; i < 5; i++) oc_free(cpu, be, all[i]);
    free(tok);
}

Test(gpu_ops, embedding) {
    const struct backend *cpu = backend_cpu();
    struct rng r;
    rng_seed(&r, 11);
    for (int p = 0; p < NPREC; p++)
        for (size_t i = 0; i < sizeof(emb_shapes) / sizeof(emb_shapes[0]); i++) emb_case(cpu, gpu(precisions[p]), emb_shapes[i], &r);
}

// ---- rmsnorm: {BT, C}
static const int rms_shapes[][2] = {{1, 32}, {7, 33}, {13, 300}, {4, 2050}, {3, 8200}, {131, 40}};

static void rms_case(const struct backend *cpu, const struct backend *be, const int *s, struct rng *r) {
    int BT = s[0], C = s[1];
    size_t n = (size_t)BT * C;
    char shape[64];
    snprintf(shape, sizeof(shape), "BT=%d C=%d", BT, C);
    struct oc_pair inp = oc_random(cpu, be, BUF_ACT, n, -2, 2, r);
    struct oc_pair w = oc_random(cpu, be, BUF_PARAM, C, 0.5f, 1.5f, r);
    struct oc_pair out = oc_output(cpu, be, BUF_ACT, n), rstd = oc_output(cpu, be, BUF_ACT32, BT);
    cpu->ops->rmsnorm_forward(cpu, out.ref, rstd.ref, inp.ref, w.ref, BT, C, 1e-5f);
    be->ops->rmsnorm_forward(be, out.dut, rstd.dut, inp.dut, w.dut, BT, C, 1e-5f);
    expect_close(cpu, be, &out, "rmsnorm_forward out", shape);
    expect_close(cpu, be, &rstd, "rmsnorm_forward rstd", shape);
    // backward from the reference rstd on both sides, so that it tests the backward alone
    float *hr = oc_download(cpu, rstd.ref, BUF_ACT32, BT);
    struct oc_pair rs = oc_pair_of(cpu, be, BUF_ACT32, hr, BT);
    struct oc_pair dout = oc_random(cpu, be, BUF_ACT, n, -1, 1, r);
    struct oc_pair dinp = oc_random(cpu, be, BUF_ACT, n, -1, 1, r), dw = oc_random(cpu, be, BUF_GRAD, C, -1, 1, r);
    cpu->ops->rmsnorm_backward(cpu, dinp.ref, dw.ref, dout.ref, inp.ref, w.ref, rs.ref, BT, C);
    be->ops->rmsnorm_backward(be, dinp.dut, dw.dut, dout.dut, inp.dut, w.dut, rs.dut, BT, C);
    expect_close(cpu, be, &dinp, "rmsnorm_backward dinp", shape);
    expect_close(cpu, be, &dw, "rmsnorm_backward dweight", shape);
    struct oc_pair *all[] = {&inp, &w, &out, &rstd, &rs, &dout, &dinp, &dw};
    for (int i = 0; i < 8; i++) oc_free(cpu, be, all[i]);
    free(hr);
}

Test(gpu_ops, rmsnorm) {
    const struct backend *cpu = backend_cpu();
    struct rng r;
    rng_seed(&r, 12);
    for (int p = 0; p < NPREC; p++)
        for (size_t i = 0; i < sizeof(rms_shapes) / sizeof(rms_shapes[0]); i++) rms_case(cpu, gpu(precisions[p]), rms_shapes[i], &r);
}

// ---- matmul: {BT, C, OC}
static const int mm_shapes[][3] = {{1, 32, 16}, {7, 33, 17}, {13, 64, 96}, {33, 130, 70}};

static void mm_case(const struct backend *cpu, const struct backend *be, const int *s, struct rng *r) {
    int BT = s[0], C = s[1], OC = s[2];
    char shape[64];
    snprintf(shape, sizeof(shape), "BT=%d C=%d OC=%d", BT, C, OC);
    struct oc_pair inp = oc_random(cpu, be, BUF_ACT, (size_t)BT * C, -1, 1, r);
    struct oc_pair w = oc_random(cpu, be, BUF_PARAM, (size_t)OC * C, -1, 1, r);
    struct oc_pair out = oc_output(cpu, be, BUF_ACT, (size_t)BT * OC);
    cpu->ops->matmul_forward(cpu, out.ref, inp.ref, w.ref, BT, C, OC);
    be->ops->matmul_forward(be, out.dut, inp.dut, w.dut, BT, C, OC);
    expect_close(cpu, be, &out, "matmul_forward", shape);
    struct oc_pair dout = oc_random(cpu, be, BUF_ACT, (size_t)BT * OC, -1, 1, r);
    struct oc_pair dinp = oc_output(cpu, be, BUF_ACT, (size_t)BT * C);
    struct oc_pair dw = oc_random(cpu, be, BUF_GRAD, (size_t)OC * C, -1, 1, r);
    cpu->ops->matmul_backward(cpu, dinp.ref, dw.ref, dout.ref, inp.ref, w.ref, BT, C, OC);
    be->ops->matmul_backward(be, dinp.dut, dw.dut, dout.dut, inp.dut, w.dut, BT, C, OC);
    expect_close(cpu, be, &dinp, "matmul_backward dinp", shape);
    expect_close(cpu, be, &dw, "matmul_backward dweight", shape);
    // without dinp (the first layer's input needs no gradient): dweight accumulates a second time
    cpu->ops->matmul_backward(cpu, NULL, dw.ref, dout.ref, inp.ref, w.ref, BT, C, OC);
    be->ops->matmul_backward(be, NULL, dw.dut, dout.dut, inp.dut, w.dut, BT, C, OC);
    expect_close(cpu, be, &dw, "matmul_backward dweight (no dinp)", shape);
    struct oc_pair *all[] = {&inp, &w, &out, &dout, &dinp, &dw};
    for (int i = 0; i < 6; i++) oc_free(cpu, be, all[i]);
}

// A view one element into a buffer (as be_at gives for a slice of qkv): operands only 2- or 4-byte
// aligned, which cuBLASLt must be told about.
Test(gpu_ops, matmul_on_unaligned_views) {
    const struct backend *cpu = backend_cpu();
    struct rng r;
    rng_seed(&r, 19);
    for (int p = 0; p < NPREC; p++) {
        const struct backend *be = gpu(precisions[p]);
        int BT = 9, C = 48, OC = 40;
        const char *shape = "BT=9 C=48 OC=40 at offset 1";
        struct oc_pair inp = oc_random(cpu, be, BUF_ACT, (size_t)BT * C + 1, -1, 1, &r);
        struct oc_pair w = oc_random(cpu, be, BUF_PARAM, (size_t)OC * C + 1, -1, 1, &r);
        struct oc_pair out = oc_output(cpu, be, BUF_ACT, (size_t)BT * OC + 1);
        cpu->ops->matmul_forward(cpu, be_at(cpu, BUF_ACT, out.ref, 1), be_at(cpu, BUF_ACT, inp.ref, 1),
                                 be_at(cpu, BUF_PARAM, w.ref, 1), BT, C, OC);
        be->ops->matmul_forward(be, be_at(be, BUF_ACT, out.dut, 1), be_at(be, BUF_ACT, inp.dut, 1),
                                be_at(be, BUF_PARAM, w.dut, 1), BT, C, OC);
        cpu->from_host(cpu, out.ref, (const float[]){NAN}, BUF_ACT, 1);  // element 0 is outside the view: NaN on both
        float *h = oc_download(be, out.dut, BUF_ACT, out.n), *ref = oc_download(cpu, out.ref, BUF_ACT, out.n);
        expect_err(be, oc_compare(h + 1, ref + 1, out.n - 1), oc_tol(be), "matmul_forward (view)", shape);
        cr_expect(isnan(h[0]), "matmul_forward (view) wrote outside its view");
        free(h);
        free(ref);
        oc_free(cpu, be, &inp);
        oc_free(cpu, be, &w);
        oc_free(cpu, be, &out);
    }
}

Test(gpu_ops, matmul) {
    const struct backend *cpu = backend_cpu();
    struct rng r;
    rng_seed(&r, 13);
    for (int p = 0; p < NPREC; p++)
        for (size_t i = 0; i < sizeof(mm_shapes) / sizeof(mm_shapes[0]); i++) mm_case(cpu, gpu(precisions[p]), mm_shapes[i], &r);
}

// ---- rope: {B, T, NR, HS, stride}; NR < stride/HS leaves heads (k, v) that must not change
static const int rope_shapes[][5] = {{1, 1, 1, 2, 2}, {2, 7, 3, 16, 80}, {3, 5, 4, 6, 30}, {1, 9, 2, 64, 256}};

static void rope_case(const struct backend *cpu, const struct backend *be, const int *s, struct rng *r) {
    int B = s[0], T = s[1], NR = s[2], HS = s[3], stride = s[4], half = HS / 2;
    char shape[64];
    snprintf(shape, sizeof(shape), "B=%d T=%d NR=%d HS=%d stride=%d", B, T, NR, HS, stride);
    float *hc = malloc((size_t)T * half * sizeof(float)), *hs = malloc((size_t)T * half * sizeof(float));
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            double a = t * pow(10000.0, -2.0 * i / HS);
            hc[t * half + i] = (float)cos(a);
            hs[t * half + i] = (float)sin(a);
        }
    struct oc_pair c = oc_pair_of(cpu, be, BUF_STATE, hc, (size_t)T * half);
    struct oc_pair sn = oc_pair_of(cpu, be, BUF_STATE, hs, (size_t)T * half);
    size_t n = (size_t)B * T * stride;
    // packed windows: documents start at t = 0 and at every third position, positions restart there
    int *hd = malloc(sizeof(int) * (size_t)B * T);
    for (int i = 0; i < B * T; i++) hd[i] = (i % T) - (i % T) % 3;
    struct oc_pair docs = oc_ints(cpu, be, hd, (size_t)B * T);
    free(hd);
    for (int packed = 0; packed < 2; packed++) {
        const dbuf *dr = packed ? docs.ref : NULL, *dd = packed ? docs.dut : NULL;
        struct oc_pair x = oc_random(cpu, be, BUF_ACT, n, -1, 1, r);
        cpu->ops->rope_forward(cpu, x.ref, c.ref, sn.ref, dr, B, T, NR, HS, stride);
        be->ops->rope_forward(be, x.dut, c.dut, sn.dut, dd, B, T, NR, HS, stride);
        expect_close(cpu, be, &x, packed ? "rope_forward (packed)" : "rope_forward", shape);
        struct oc_pair dx = oc_random(cpu, be, BUF_ACT, n, -1, 1, r);
        cpu->ops->rope_backward(cpu, dx.ref, c.ref, sn.ref, dr, B, T, NR, HS, stride);
        be->ops->rope_backward(be, dx.dut, c.dut, sn.dut, dd, B, T, NR, HS, stride);
        expect_close(cpu, be, &dx, packed ? "rope_backward (packed)" : "rope_backward", shape);
        oc_free(cpu, be, &x);
        oc_free(cpu, be, &dx);
    }
    struct oc_pair *all[] = {&c, &sn, &docs};
    for (int i = 0; i < 3; i++) oc_free(cpu, be, all[i]);
    free(hc);
    free(hs);
}

Test(gpu_ops, rope) {
    const struct backend *cpu = backend_cpu();
    struct rng r;
    rng_seed(&r, 14);
    for (int p = 0; p < NPREC; p++)
        for (size_t i = 0; i < sizeof(rope_shapes) / sizeof(rope_shapes[0]); i++) rope_case(cpu, gpu(precisions[p]), rope_shapes[i], &r);
}

// ---- swiglu: {BT, F}
static const int swi_shapes[][2] = {{1, 1}, {7, 33}, {13, 300}, {3, 1000}};

static void swi_case(const struct backend *cpu, const struct backend *be, const int *s, struct rng *r) {
    int BT = s[0], F = s[1];
    size_t n = (size_t)BT * F;
    char shape[64];
    snprintf(shape, sizeof(shape), "BT=%d F=%d", BT, F);
    struct oc_pair gu = oc_random(cpu, be, BUF_ACT, 2 * n, -4, 4, r);
    struct oc_pair out = oc_output(cpu, be, BUF_ACT, n);
    cpu->ops->swiglu_forward(cpu, out.ref, gu.ref, BT, F);
    be->ops->swiglu_forward(be, out.dut, gu.dut, BT, F);
    expect_close(cpu, be, &out, "swiglu_forward", shape);
    struct oc_pair dout = oc_random(cpu, be, BUF_ACT, n, -1, 1, r);
    struct oc_pair dgu = oc_output(cpu, be, BUF_ACT, 2 * n);
    cpu->ops->swiglu_backward(cpu, dgu.ref, dout.ref, gu.ref, BT, F);
    be->ops->swiglu_backward(be, dgu.dut, dout.dut, gu.dut, BT, F);
    expect_close(cpu, be, &dgu, "swiglu_backward", shape);
    // in place: dgateup aliasing gateup
    cpu->ops->swiglu_backward(cpu, gu.ref, dout.ref, gu.ref, BT, F);
    be->ops->swiglu_backward(be, gu.dut, dout.dut, gu.dut, BT, F);
    expect_close(cpu, be, &gu, "swiglu_backward in place", shape);
    struct oc_pair *all[] = {&gu, &out, &dout, &dgu};
    for (int i = 0; i < 4; i++) oc_free(cpu, be, all[i]);
}

Test(gpu_ops, swiglu) {
    const struct backend *cpu = backend_cpu();
    struct rng r;
    rng_seed(&r, 15);
    for (int p = 0; p < NPREC; p++)
        for (size_t i = 0; i < sizeof(swi_shapes) / sizeof(swi_shapes[0]); i++) swi_case(cpu, gpu(precisions[p]), swi_shapes[i], &r);
}

// ---- residual + rmsnorm fused: {BT, C} as rmsnorm; res computed in place of a in every other case
static void resrms_case(const struct backend *cpu, const struct backend *be, const int *s, int in_place, struct rng *r) {
    int BT = s[0], C = s[1];
    size_t n = (size_t)BT * C;
    char shape[64];
    snprintf(shape, sizeof(shape), "BT=%d C=%d%s", BT, C, in_place ? " in place" : "");
    struct oc_pair a = oc_random(cpu, be, BUF_ACT, n, -2, 2, r), b = oc_random(cpu, be, BUF_ACT, n, -2, 2, r);
    struct oc_pair w = oc_random(cpu, be, BUF_PARAM, C, 0.5f, 1.5f, r);
    struct oc_pair res = oc_output(cpu, be, BUF_ACT, n), out = oc_output(cpu, be, BUF_ACT, n);
    struct oc_pair rstd = oc_output(cpu, be, BUF_ACT32, BT);
    struct oc_pair *dst = in_place ? &a : &res;
    cpu->ops->residual_rmsnorm_forward(cpu, dst->ref, out.ref, rstd.ref, a.ref, b.ref, w.ref, BT, C, 1e-5f);
    be->ops->residual_rmsnorm_forward(be, dst->dut, out.dut, rstd.dut, a.dut, b.dut, w.dut, BT, C, 1e-5f);
    expect_close(cpu, be, dst, "residual_rmsnorm_forward res", shape);
    expect_close(cpu, be, &out, "residual_rmsnorm_forward out", shape);
    expect_close(cpu, be, &rstd, "residual_rmsnorm_forward rstd", shape);
    struct oc_pair *all[] = {&a, &b, &w, &res, &out, &rstd};
    for (int i = 0; i < 6; i++) oc_free(cpu, be, all[i]);
}

Test(gpu_ops, residual_rmsnorm) {
    const struct backend *cpu = backend_cpu();
    struct rng r;
    rng_seed(&r, 17);
    for (int p = 0; p < NPREC; p++)
        for (size_t i = 0; i < sizeof(rms_shapes) / sizeof(rms_shapes[0]); i++)
            resrms_case(cpu, gpu(precisions[p]), rms_shapes[i], (int)(i % 2), &r);
}

// ---- lora_scale: {BT, n, ld, col0}: an adapter's columns inside a fused output
static const int ls_shapes[][4] = {{1, 1, 1, 0}, {7, 16, 48, 16}, {33, 24, 80, 56}, {130, 64, 192, 0}};

Test(gpu_ops, lora_scale) {
    const struct backend *cpu = backend_cpu();
    struct rng r;
    rng_seed(&r, 19);
    for (int p = 0; p < NPREC; p++)
        for (size_t i = 0; i < sizeof(ls_shapes) / sizeof(ls_shapes[0]); i++) {
            const struct backend *be = gpu(precisions[p]);
            const int BT = ls_shapes[i][0], n = ls_shapes[i][1], ld = ls_shapes[i][2], col0 = ls_shapes[i][3];
            char shape[64];
            snprintf(shape, sizeof(shape), "BT=%d n=%d ld=%d col0=%d", BT, n, ld, col0);
            // forward accumulates into the wide output (same start on both sides); backward writes dx (poisoned)
            struct oc_pair wide = oc_random(cpu, be, BUF_ACT, (size_t)BT * ld, -1, 1, &r);
            struct oc_pair x = oc_random(cpu, be, BUF_ACT, (size_t)BT * n, -1, 1, &r);
            cpu->ops->lora_scale_forward(cpu, wide.ref, x.ref, 2.5f, BT, n, ld, col0);
            be->ops->lora_scale_forward(be, wide.dut, x.dut, 2.5f, BT, n, ld, col0);
            expect_close(cpu, be, &wide, "lora_scale_forward", shape);
            struct oc_pair dx = oc_output(cpu, be, BUF_ACT, (size_t)BT * n);
            cpu->ops->lora_scale_backward(cpu, dx.ref, wide.ref, 0.5f, BT, n, ld, col0);
            be->ops->lora_scale_backward(be, dx.dut, wide.dut, 0.5f, BT, n, ld, col0);
            expect_close(cpu, be, &dx, "lora_scale_backward", shape);
            oc_free(cpu, be, &wide);
            oc_free(cpu, be, &x);
            oc_free(cpu, be, &dx);
        }
}

// ---- dropout: {BT, n} (the last one past 8192 blocks of 256, so the grid-stride loop wraps); the mask is
// the same integer hash on both backends (model/ops/dropout_mask.h), so the outputs must be the CPU's
// exactly: in fp32 bit for bit, in bf16 the CPU's fp32 product rounded to bf16 (what the kernel rounds
// once). Outputs poisoned with NaN.
static const int drop_shapes[][2] = {{1, 1}, {7, 33}, {13, 300}, {1031, 2050}};
static const float drop_ps[] = {0.3f, 0.05f, 0.0f};

Test(gpu_ops, dropout) {
    const struct backend *cpu = backend_cpu();
    struct rng r;
    rng_seed(&r, 21);
    for (int p = 0; p < NPREC; p++)
        for (size_t i = 0; i < sizeof(drop_shapes) / sizeof(drop_shapes[0]); i++)
            for (int k = 0; k < 3; k++) {
                const struct backend *be = gpu(precisions[p]);
                const int BT = drop_shapes[i][0], n = drop_shapes[i][1];
                const size_t N = (size_t)BT * n;
                const float pr = drop_ps[k];
                const uint64_t key = rng_u64(&r);
                char shape[64];
                snprintf(shape, sizeof(shape), "BT=%d n=%d p=%.2f", BT, n, pr);
                struct oc_pair x = oc_random(cpu, be, BUF_ACT, N, -2, 2, &r);
                struct oc_pair out = oc_output(cpu, be, BUF_ACT, N);
                cpu->ops->dropout_forward(cpu, out.ref, x.ref, pr, key, BT, n);
                be->ops->dropout_forward(be, out.dut, x.dut, pr, key, BT, n);
                expect_close(cpu, be, &out, "dropout_forward", shape);
                float *got = oc_download(be, out.dut, BUF_ACT, N), *want = oc_download(cpu, out.ref, BUF_ACT, N);
                size_t zeros = 0;
                for (size_t e = 0; e < N; e++) zeros += want[e] == 0;
                oc_round(be, BUF_ACT, want, N);
                size_t differ = 0;
                for (size_t e = 0; e < N; e++) differ += memcmp(&got[e], &want[e], sizeof(float)) != 0;
                cr_expect_eq(differ, 0, "dropout_forward (%s, %s): %zu of %zu elements differ from the CPU's (rounded)",
                             oc_prec(be), shape, differ, N);
                if (N > 1000)
                    cr_expect(fabs((double)zeros / N - pr) < 0.01, "dropout_forward (%s): dropped %.4f, p %.2f", shape,
                              (double)zeros / N, pr);
                free(got);
                free(want);
                oc_free(cpu, be, &x);
                oc_free(cpu, be, &out);
            }
}

// ---- residual: N
static const size_t res_sizes[] = {1, 33, 1000, 70001};

Test(gpu_ops, residual) {
    const struct backend *cpu = backend_cpu();
    struct rng r;
    rng_seed(&r, 16);
    for (int p = 0; p < NPREC; p++)
        for (size_t i = 0; i < sizeof(res_sizes) / sizeof(res_sizes[0]); i++) {
            const struct backend *be = gpu(precisions[p]);
            size_t N = res_sizes[i];
            char shape[64];
            snprintf(shape, sizeof(shape), "N=%zu", N);
            struct oc_pair a = oc_random(cpu, be, BUF_ACT, N, -1, 1, &r), b = oc_random(cpu, be, BUF_ACT, N, -1, 1, &r);
            struct oc_pair out = oc_output(cpu, be, BUF_ACT, N);
            cpu->ops->residual_forward(cpu, out.ref, a.ref, b.ref, N);
            be->ops->residual_forward(be, out.dut, a.dut, b.dut, N);
            expect_close(cpu, be, &out, "residual_forward", shape);
            oc_free(cpu, be, &a);
            oc_free(cpu, be, &b);
            oc_free(cpu, be, &out);
        }
}

// ---- cross-entropy: {BT, Vl, vstart, V}. Targets in [-1, V): -1 is ignored, ids outside
// [vstart, vstart+Vl) belong to another rank; vstart + Vl > V leaves padding columns.
static const int ce_shapes[][4] = {{1, 10, 0, 10},      {7, 333, 0, 333},      {9, 300, 600, 890},
                                   {5, 1003, 1003, 2500}, {4, 100, 950, 1000}, {3, 32000, 0, 32000},
                                   {6, 1000, 32000, 32003}};

static void ce_case(const struct backend *cpu, const struct backend *be, const int *s, struct rng *r) {
    int BT = s[0], Vl = s[1], vstart = s[2], V = s[3];
    char shape[64];
    snprintf(shape, sizeof(shape), "BT=%d Vl=%d vstart=%d V=%d", BT, Vl, vstart, V);
    int *tg = malloc(BT * sizeof(int));
    for (int i = 0; i < BT; i++) {
        // a third in this slice's real columns, a sixth ignored, the rest anywhere in the vocabulary
        uint64_t u = rng_u64(r) % 6;
        int nv = V - vstart < Vl ? V - vstart : Vl;
        tg[i] = u == 0 ? -1 : u < 3 ? vstart + (int)(rng_u64(r) % (uint64_t)nv) : (int)(rng_u64(r) % (uint64_t)V);
    }
    if (BT > 1) tg[BT - 1] = -1;
    struct oc_pair t = oc_ints(cpu, be, tg, BT);
    struct oc_pair x = oc_random(cpu, be, BUF_ACT, (size_t)BT * Vl, -8, 8, r);
    struct oc_pair mx = oc_output(cpu, be, BUF_ACT32, BT);
    cpu->ops->crossentropy_max(cpu, mx.ref, x.ref, BT, Vl, vstart, V);
    be->ops->crossentropy_max(be, mx.dut, x.dut, BT, Vl, vstart, V);
    expect_close(cpu, be, &mx, "crossentropy_max", shape);
    // each later step from the reference results of the earlier ones, so that it is tested alone
    float *h = oc_download(cpu, mx.ref, BUF_ACT32, BT);
    struct oc_pair mref = oc_pair_of(cpu, be, BUF_ACT32, h, BT);
    free(h);
    struct oc_pair sums = oc_output(cpu, be, BUF_ACT32, 2 * (size_t)BT);
    cpu->ops->crossentropy_sums(cpu, sums.ref, x.ref, mref.ref, t.ref, BT, Vl, vstart, V);
    be->ops->crossentropy_sums(be, sums.dut, x.dut, mref.dut, t.dut, BT, Vl, vstart, V);
    expect_close(cpu, be, &sums, "crossentropy_sums", shape);
    h = oc_download(cpu, sums.ref, BUF_ACT32, 2 * (size_t)BT);
    struct oc_pair sref = oc_pair_of(cpu, be, BUF_ACT32, h, 2 * (size_t)BT);
    free(h);
    struct oc_pair loss = oc_output(cpu, be, BUF_ACT32, BT), lse = oc_output(cpu, be, BUF_ACT32, BT);
    cpu->ops->crossentropy_loss(cpu, loss.ref, lse.ref, mref.ref, sref.ref, t.ref, BT);
    be->ops->crossentropy_loss(be, loss.dut, lse.dut, mref.dut, sref.dut, t.dut, BT);
    expect_close(cpu, be, &loss, "crossentropy_loss losses", shape);
    expect_close(cpu, be, &lse, "crossentropy_loss lse", shape);
    h = oc_download(cpu, lse.ref, BUF_ACT32, BT);
    struct oc_pair lref = oc_pair_of(cpu, be, BUF_ACT32, h, BT);
    free(h);
    struct oc_pair dx = oc_output(cpu, be, BUF_ACT, (size_t)BT * Vl);
    cpu->ops->crossentropy_backward(cpu, dx.ref, x.ref, lref.ref, t.ref, 0.37f, BT, Vl, vstart, V);
    be->ops->crossentropy_backward(be, dx.dut, x.dut, lref.dut, t.dut, 0.37f, BT, Vl, vstart, V);
    expect_close(cpu, be, &dx, "crossentropy_backward", shape);
    cpu->ops->crossentropy_backward(cpu, x.ref, x.ref, lref.ref, t.ref, 0.37f, BT, Vl, vstart, V);
    be->ops->crossentropy_backward(be, x.dut, x.dut, lref.dut, t.dut, 0.37f, BT, Vl, vstart, V);
    expect_close(cpu, be, &x, "crossentropy_backward in place", shape);
    struct oc_pair *all[] = {&t, &x, &mx, &mref, &sums, &sref, &loss, &lse, &lref, &dx};
    for (int i = 0; i < 10; i++) oc_free(cpu, be, all[i]);
    free(tg);
}

Test(gpu_ops, crossentropy) {
    const struct backend *cpu = backend_cpu();
    struct rng r;
    rng_seed(&r, 17);
    for (int p = 0; p < NPREC; p++)
        for (size_t i = 0; i < sizeof(ce_shapes) / sizeof(ce_shapes[0]); i++) ce_case(cpu, gpu(precisions[p]), ce_shapes[i], &r);
}

// ---- convert between fp32 and bf16 kinds, both ways
Test(gpu_ops, convert) {
    const struct backend *cpu = backend_cpu();
    struct rng r;
    rng_seed(&r, 18);
    for (int p = 0; p < NPREC; p++) {
        const struct backend *be = gpu(precisions[p]);
        size_t n = 10007;
        struct oc_pair m = oc_random(cpu, be, BUF_STATE, n, -3, 3, &r);
        struct oc_pair w = oc_output(cpu, be, BUF_PARAM, n);
        cpu->convert(cpu, w.ref, BUF_PARAM, m.ref, BUF_STATE, n);
        be->convert(be, w.dut, BUF_PARAM, m.dut, BUF_STATE, n);
        float *h = oc_download(cpu, w.ref, BUF_PARAM, n);
        oc_round(be, BUF_PARAM, h, n);  // the reference rounded as the tested backend stores it
        cpu->from_host(cpu, w.ref, h, BUF_PARAM, n);
        free(h);
        expect_close(cpu, be, &w, "convert STATE->PARAM", "n=10007");
        struct oc_pair back = oc_output(cpu, be, BUF_GRAD, n);
        cpu->convert(cpu, back.ref, BUF_GRAD, w.ref, BUF_PARAM, n);
        be->convert(be, back.dut, BUF_GRAD, w.dut, BUF_PARAM, n);
        expect_close(cpu, be, &back, "convert PARAM->GRAD", "n=10007");
        oc_free(cpu, be, &m);
        oc_free(cpu, be, &w);
        oc_free(cpu, be, &back);
    }
}

// ---- the weight gradients that sum over rows are deterministic: the same inputs give the same bits
static void expect_same_bits(const struct backend *be, const dbuf *a, const dbuf *b, size_t n, const char *op) {
    float *ha = oc_download(be, a, BUF_GRAD, n), *hb = oc_download(be, b, BUF_GRAD, n);
    cr_expect(memcmp(ha, hb, n * sizeof(float)) == 0, "%s (%s): two runs differ", op, oc_prec(be));
    free(ha);
    free(hb);
}

Test(gpu_ops, weight_gradients_are_deterministic) {
    struct rng r;
    rng_seed(&r, 20);
    for (int p = 0; p < NPREC; p++) {
        const struct backend *be = gpu(precisions[p]);
        int BT = 300, C = 70, Vl = 5;  // few ids, so each row of dwte sums ~60 rows
        float *h = malloc((size_t)BT * C * sizeof(float));
        int *tok = malloc(BT * sizeof(int));
        for (int i = 0; i < BT; i++) tok[i] = (int)(rng_u64(&r) % 6);
        oc_uniform(h, (size_t)BT * C, -1, 1, &r);
        dbuf *t = be->alloc(be, BUF_INT, BT), *d = oc_upload(be, BUF_ACT, h, (size_t)BT * C),
             *x = oc_upload(be, BUF_ACT, h, (size_t)BT * C), *w = oc_upload(be, BUF_PARAM, h, C),
             *rs = oc_upload(be, BUF_ACT32, h, BT), *di = be->alloc(be, BUF_ACT, (size_t)BT * C);
        be->ints_from_host(be, t, tok, BT);
        dbuf *g[2];
        for (int k = 0; k < 2; k++) {
            g[k] = be->alloc(be, BUF_GRAD, (size_t)Vl * C);
            be->ops->embedding_backward(be, g[k], d, t, BT, C, 1, Vl);
        }
        expect_same_bits(be, g[0], g[1], (size_t)Vl * C, "embedding_backward");
        for (int k = 0; k < 2; k++) {
            be->zero(be, g[k], BUF_GRAD, C);
            be->ops->rmsnorm_backward(be, di, g[k], d, x, w, rs, BT, C);
        }
        expect_same_bits(be, g[0], g[1], C, "rmsnorm_backward dweight");
        dbuf *all[] = {t, d, x, w, rs, di, g[0], g[1]};
        for (int i = 0; i < 8; i++) be->free(be, all[i]);
        free(h);
        free(tok);
    }
}
