// The CUDA attention (model/ops/cuda/attention.cu) against the CPU oracle, in fp32 and bf16 precision:
// forward (out, lse) and backward (dqkv) on random inputs, with every output poisoned with NaN before
// the call so that an element the kernels forget to write fails. Shapes cover T = 1, odd T and T past
// several tiles, GQA groups 1, 2, 4 and 8, head sizes 16 to 128 and B 1 and 2; bf16 both on the
// tensor-core kernels and on the fp32-FMA ones. Errors are ||d|| / ||ref|| per output (fp32 <= 1e-5,
// bf16 <= 1e-2) and are printed with the max abs difference. The same shapes run again as packed
// windows: random document boundaries per row (docs, core/backend.h), short documents (a new one every
// 8 positions on average: most tiles mix documents, and whole tiles lie before a row's document) and
// long ones (every 96: tiles wholly inside one document), the CPU oracle attending within documents only.
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "model/ops/backends.h"
#include "testutil.h"

struct shape {
    int B, T, NH, KVH, HS;
};

static const struct shape shapes[] = {
    {1, 1, 2, 1, 16},  {2, 7, 4, 2, 64},   {1, 33, 4, 1, 128}, {2, 65, 8, 2, 16},  {1, 65, 4, 4, 64},
    {2, 33, 4, 1, 128}, {1, 65, 2, 1, 128}, {2, 7, 8, 2, 16},  {1, 150, 4, 2, 32}, {1, 97, 6, 3, 48},
    {1, 200, 4, 2, 128}, {2, 130, 8, 1, 64},
};

static const struct backend *gpu(enum precision p) {
    const struct backend *be = backend_cuda(p);
    cr_assert(be, "%s", err_msg());
    return be;
}

// Copies x (n floats) to a new buffer of `be` and returns it.
static dbuf *upload(const struct backend *be, enum buf_kind kind, const float *x, size_t n) {
    dbuf *d = be->alloc(be, kind, n);
    be->from_host(be, d, x, kind, n);
    return d;
}

static float *download(const struct backend *be, const dbuf *d, enum buf_kind kind, size_t n) {
    float *x = malloc(n * sizeof(float));
    be->to_host(be, x, d, kind, n);
    return x;
}

static float *nans(size_t n) {
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = NAN;
    return x;
}

static double max_abs(const float *a, const float *ref, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - ref[i]));
    return m;
}

static size_t count_nan(const float *a, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += isnan(a[i]) != 0;
    return k;
}

static void expect_close(const char *what, const struct shape *s, const float *a, const float *ref, size_t n,
                         double tol) {
    const size_t bad = count_nan(a, n);
    const double rel = rel_err(a, ref, n), mx = max_abs(a, ref, n);
    fprintf(stderr, "  %-5s B %d T %3d NH %d KVH %d HS %3d: rel %.2e max abs %.2e\n", what, s->B, s->T, s->NH,
            s->KVH, s->HS, rel, mx);
    cr_expect(bad == 0, "%s (B %d T %d NH %d KVH %d HS %d): %zu NaN of %zu", what, s->B, s->T, s->NH, s->KVH, s->HS,
              bad, n);
    cr_expect(rel <= tol, "%s (B %d T %d NH %d KVH %d HS %d): relative error %.3g above %.3g", what, s->B, s->T,
              s->NH, s->KVH, s->HS, rel, tol);
}

// Forward and backward of one shape on `be` and on the CPU, from the same inputs (rounded to the
// compute type of `be` first, so that only the kernels' own rounding is measured).
// Random document starts for each row of B x T: a new document begins at t with probability p (and at 0).
static int *random_docs(int B, int T, double p, struct rng *r) {
    int *docs = malloc(sizeof(int) * (size_t)B * T);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            docs[(size_t)b * T + t] = t == 0 || rng_uniform(r) < p ? t : docs[(size_t)b * T + t - 1];
    return docs;
}

static void check_shape(const struct backend *be, const struct shape *s, double tol, unsigned seed, int packed) {
    const struct backend *cpu = backend_cpu();
    const int B = s->B, T = s->T, NH = s->NH, KVH = s->KVH, HS = s->HS;
    const size_t nqkv = (size_t)B * T * (NH + 2 * KVH) * HS, nout = (size_t)B * T * NH * HS,
                 nlse = (size_t)B * NH * T;
    struct rng r;
    rng_seed(&r, seed);
    float *qkv = malloc(nqkv * sizeof(float)), *dout = malloc(nout * sizeof(float));
    fill_normal(qkv, nqkv, 1.0f, &r);
    fill_normal(dout, nout, 1.0f, &r);

    dbuf *g_qkv = upload(be, BUF_ACT, qkv, nqkv), *g_dout = upload(be, BUF_ACT, dout, nout);
    free(qkv);
    free(dout);
    qkv = download(be, g_qkv, BUF_ACT, nqkv);
    dout = download(be, g_dout, BUF_ACT, nout);
    float *poison_out = nans(nout), *poison_lse = nans(nlse), *poison_dqkv = nans(nqkv);
    dbuf *g_out = upload(be, BUF_ACT, poison_out, nout), *g_lse = upload(be, BUF_ACT32, poison_lse, nlse);
    dbuf *g_dqkv = upload(be, BUF_ACT, poison_dqkv, nqkv);

    dbuf *c_qkv = upload(cpu, BUF_ACT, qkv, nqkv), *c_dout = upload(cpu, BUF_ACT, dout, nout);
    dbuf *c_out = upload(cpu, BUF_ACT, poison_out, nout), *c_lse = upload(cpu, BUF_ACT32, poison_lse, nlse);
    dbuf *c_dqkv = upload(cpu, BUF_ACT, poison_dqkv, nqkv);
    dbuf *g_docs = NULL, *c_docs = NULL;
    if (packed) {
        int *docs = random_docs(B, T, seed % 2 ? 1.0 / 96 : 1.0 / 8, &r);
        g_docs = be->alloc(be, BUF_INT, (size_t)B * T);
        c_docs = cpu->alloc(cpu, BUF_INT, (size_t)B * T);
        be->ints_from_host(be, g_docs, docs, (size_t)B * T);
        cpu->ints_from_host(cpu, c_docs, docs, (size_t)B * T);
        free(docs);
    }

    be->ops->attention_forward(be, g_out, g_lse, g_qkv, g_docs, B, T, NH, KVH, HS);
    be->ops->attention_backward(be, g_dqkv, g_dout, g_qkv, g_out, g_lse, g_docs, B, T, NH, KVH, HS);
    cpu->ops->attention_forward(cpu, c_out, c_lse, c_qkv, c_docs, B, T, NH, KVH, HS);
    cpu->ops->attention_backward(cpu, c_dqkv, c_dout, c_qkv, c_out, c_lse, c_docs, B, T, NH, KVH, HS);
    if (packed) {
        be->free(be, g_docs);
        cpu->free(cpu, c_docs);
    }

    float *out = download(be, g_out, BUF_ACT, nout), *lse = download(be, g_lse, BUF_ACT32, nlse);
    float *dqkv = download(be, g_dqkv, BUF_ACT, nqkv);
    float *ref_out = download(cpu, c_out, BUF_ACT, nout), *ref_lse = download(cpu, c_lse, BUF_ACT32, nlse);
    float *ref_dqkv = download(cpu, c_dqkv, BUF_ACT, nqkv);
    expect_close("out", s, out, ref_out, nout, tol);
    expect_close("lse", s, lse, ref_lse, nlse, tol);
    expect_close("dqkv", s, dqkv, ref_dqkv, nqkv, tol);

    dbuf *bufs[] = {g_qkv, g_dout, g_out, g_lse, g_dqkv};
    for (int k = 0; k < 5; k++) be->free(be, bufs[k]);
    dbuf *cbufs[] = {c_qkv, c_dout, c_out, c_lse, c_dqkv};
    for (int k = 0; k < 5; k++) cpu->free(cpu, cbufs[k]);
    float *host[] = {qkv, dout, poison_out, poison_lse, poison_dqkv, out, lse, dqkv, ref_out, ref_lse, ref_dqkv};
    for (int k = 0; k < 11; k++) free(host[k]);
}

static void check_all(enum precision p, double tol, int packed) {
    const struct backend *be = gpu(p);
    fprintf(stderr, "attention%s, %s precision:\n", packed ? " (packed documents)" : "",
            p == PRECISION_BF16 ? "bf16" : "fp32");
    for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) check_shape(be, &shapes[k], tol, 100 + k, packed);
}

Test(gpu_attention, matches_the_cpu_in_fp32) { check_all(PRECISION_FP32, 1e-5, 0); }

Test(gpu_attention, packed_documents_match_the_cpu_in_fp32) { check_all(PRECISION_FP32, 1e-5, 1); }

// bf16 runs the tensor-core kernels (mma.sync through model/ops/cuda/tensor_core.cuh); LLAMAC_ATTN_FMA=1
// selects the fp32-FMA kernels instead, which stay tested too. Criterion runs each test in its own
// process, so the variable does not leak into the others.
Test(gpu_attention, matches_the_cpu_in_bf16_on_tensor_cores) {
    unsetenv("LLAMAC_ATTN_FMA");
    check_all(PRECISION_BF16, 1e-2, 0);
}

Test(gpu_attention, packed_documents_match_the_cpu_in_bf16_on_tensor_cores) {
    unsetenv("LLAMAC_ATTN_FMA");
    check_all(PRECISION_BF16, 1e-2, 1);
}

Test(gpu_attention, matches_the_cpu_in_bf16_with_the_fma_kernels) {
    setenv("LLAMAC_ATTN_FMA", "1", 1);
    check_all(PRECISION_BF16, 1e-2, 0);
}

Test(gpu_attention, packed_documents_match_the_cpu_in_bf16_with_the_fma_kernels) {
    setenv("LLAMAC_ATTN_FMA", "1", 1);
    check_all(PRECISION_BF16, 1e-2, 1);
}

// No atomics: two backward calls give the same bits.
Test(gpu_attention, backward_is_deterministic) {
    unsetenv("LLAMAC_ATTN_FMA");
    const struct backend *be = gpu(PRECISION_BF16);
    const int B = 2, T = 65, NH = 4, KVH = 1, HS = 64;
    const size_t nqkv = (size_t)B * T * (NH + 2 * KVH) * HS, nout = (size_t)B * T * NH * HS;
    struct rng r;
    rng_seed(&r, 7);
    float *qkv = malloc(nqkv * sizeof(float)), *dout = malloc(nout * sizeof(float));
    fill_normal(qkv, nqkv, 1.0f, &r);
    fill_normal(dout, nout, 1.0f, &r);
    dbuf *g_qkv = upload(be, BUF_ACT, qkv, nqkv), *g_dout = upload(be, BUF_ACT, dout, nout);
    dbuf *g_out = be->alloc(be, BUF_ACT, nout), *g_lse = be->alloc(be, BUF_ACT32, (size_t)B * NH * T);
    dbuf *g_dqkv = be->alloc(be, BUF_ACT, nqkv);
    be->ops->attention_forward(be, g_out, g_lse, g_qkv, NULL, B, T, NH, KVH, HS);
    be->ops->attention_backward(be, g_dqkv, g_dout, g_qkv, g_out, g_lse, NULL, B, T, NH, KVH, HS);
    float *first = download(be, g_dqkv, BUF_ACT, nqkv);
    be->ops->attention_backward(be, g_dqkv, g_dout, g_qkv, g_out, g_lse, NULL, B, T, NH, KVH, HS);
    float *second = download(be, g_dqkv, BUF_ACT, nqkv);
    cr_expect(memcmp(first, second, nqkv * sizeof(float)) == 0, "two backward calls differ");
    dbuf *bufs[] = {g_qkv, g_dout, g_out, g_lse, g_dqkv};
    for (int k = 0; k < 5; k++) be->free(be, bufs[k]);
    free(qkv);
    free(dout);
    free(first);
    free(second);
}

// The size check comes before any buffer is touched, so the buffers may be NULL.
Test(gpu_attention, forward_refuses_head_size_200, .signal = SIGABRT) {
    const struct backend *be = gpu(PRECISION_BF16);
    be->ops->attention_forward(be, NULL, NULL, NULL, NULL, 1, 8, 2, 1, 200);
}

Test(gpu_attention, backward_refuses_head_size_24, .signal = SIGABRT) {
    const struct backend *be = gpu(PRECISION_FP32);
    be->ops->attention_backward(be, NULL, NULL, NULL, NULL, NULL, NULL, 1, 8, 2, 1, 24);
}
