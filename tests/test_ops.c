// Every CPU op's hand-written backward against central finite differences of its forward (the CPU ops are
// the oracle that tests/gpu/test_gpu_ops.c holds every other backend to).
//
// For an op y = f(x) we take the scalar L = sum_i R_i y_i with fixed random R, so dL/dy = R is what the
// backward receives, and compare its dL/dx with (L(x + e) - L(x - e)) / 2e element by element.
#include <criterion/criterion.h>
#include <string.h>

#include "core/error.h"
#include "model/ops/backends.h"
#include "testutil.h"

#define D(p) ((dbuf *)(p))
#define CPU backend_cpu()
#define OPS (backend_cpu()->ops)

typedef double (*loss_fn)(void *ctx);

// Finite-difference gradient of fn() with respect to x[0..n) (every element), into g.
static void fd_grad(double *g, float *x, size_t n, float eps, loss_fn fn, void *ctx) {
    for (size_t k = 0; k < n; k++) {
        float keep = x[k];
        x[k] = keep + eps;
        double lp = fn(ctx);
        x[k] = keep - eps;
        double lm = fn(ctx);
        x[k] = keep;
        g[k] = (lp - lm) / (2.0 * eps);
    }
}

static double weighted_sum(const float *y, const float *r, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)y[i] * r[i];
    return s;
}

static void expect_grad(const char *what, const float *analytic, float *x, size_t n, float eps, loss_fn fn,
                        void *ctx, double tol) {
    double *g = malloc(sizeof(double) * n);
    fd_grad(g, x, n, eps, fn, ctx);
    double e = rel_err_d(analytic, g, n);
    cr_expect(e < tol, "%s: backward vs finite differences: relative error %.3g (tolerance %.3g)", what, e, tol);
    free(g);
}

// ---------------------------------------------------------------------------------------------------

struct mm { int BT, C, OC; float *out, *inp, *w, *r; };
static double mm_loss(void *p) {
    struct mm *c = p;
    OPS->matmul_forward(CPU, D(c->out), D(c->inp), D(c->w), c->BT, c->C, c->OC);
    return weighted_sum(c->out, c->r, (size_t)c->BT * c->OC);
}

Test(ops, matmul_backward_matches_finite_differences) {
    struct rng r;
    rng_seed(&r, 1);
    struct mm c = {6, 5, 7};
    c.out = calloc(42, 4); c.inp = malloc(30 * 4); c.w = malloc(35 * 4); c.r = malloc(42 * 4);
    fill_normal(c.inp, 30, 1, &r); fill_normal(c.w, 35, 1, &r); fill_normal(c.r, 42, 1, &r);
    float *dinp = malloc(30 * 4), *dw = calloc(35, 4);
    OPS->matmul_backward(CPU, D(dinp), D(dw), D(c.r), D(c.inp), D(c.w), 6, 5, 7);
    expect_grad("matmul dinp", dinp, c.inp, 30, 1e-2f, mm_loss, &c, 1e-3);
    expect_grad("matmul dweight", dw, c.w, 35, 1e-2f, mm_loss, &c, 1e-3);
    // dweight accumulates: a second backward doubles it
    float dw1 = dw[3];
    OPS->matmul_backward(CPU, D(dinp), D(dw), D(c.r), D(c.inp), D(c.w), 6, 5, 7);
    cr_expect_float_eq(dw[3], 2 * dw1, 1e-5, "dweight must accumulate (+=)");
}

struct rn { int BT, C; float *out, *rstd, *inp, *w, *r; };
static double rn_loss(void *p) {
    struct rn *c = p;
    OPS->rmsnorm_forward(CPU, D(c->out), D(c->rstd), D(c->inp), D(c->w), c->BT, c->C, 1e-5f);
    return weighted_sum(c->out, c->r, (size_t)c->BT * c->C);
}

Test(ops, rmsnorm_backward_matches_finite_differences) {
    struct rng r;
    rng_seed(&r, 2);
    struct rn c = {5, 8};
    size_t n = 40;
    c.out = malloc(n * 4); c.rstd = malloc(5 * 4); c.inp = malloc(n * 4); c.w = malloc(8 * 4); c.r = malloc(n * 4);
    fill_normal(c.inp, n, 1, &r); fill_normal(c.w, 8, 1, &r); fill_normal(c.r, n, 1, &r);
    rn_loss(&c);
    float *dinp = calloc(n, 4), *dw = calloc(8, 4);
    OPS->rmsnorm_backward(CPU, D(dinp), D(dw), D(c.r), D(c.inp), D(c.w), D(c.rstd), 5, 8);
    expect_grad("rmsnorm dinp", dinp, c.inp, n, 1e-2f, rn_loss, &c, 2e-3);
    expect_grad("rmsnorm dweight", dw, c.w, 8, 1e-2f, rn_loss, &c, 2e-3);
    // check the forward itself against the formula
    double ss = 0;
    for (int i = 0; i < 8; i++) ss += (double)c.inp[i] * c.inp[i];
    rn_loss(&c);
    cr_expect_float_eq(c.out[3], c.w[3] * c.inp[3] / sqrt(ss / 8 + 1e-5), 1e-5);
}

// The fused residual add + RMSNorm is the two ops one after the other, bit for bit, also when res aliases a.
Test(ops, residual_rmsnorm_forward_equals_residual_then_rmsnorm) {
    struct rng r;
    rng_seed(&r, 21);
    const int BT = 7, C = 37;
    const size_t n = (size_t)BT * C;
    float *a = malloc(n * 4), *b = malloc(n * 4), *w = malloc(C * 4);
    fill_normal(a, n, 1, &r); fill_normal(b, n, 1, &r); fill_normal(w, C, 1, &r);
    float *res = malloc(n * 4), *out = malloc(n * 4), *rstd = malloc(BT * 4);
    float *res2 = malloc(n * 4), *out2 = malloc(n * 4), *rstd2 = malloc(BT * 4);
    OPS->residual_forward(CPU, D(res), D(a), D(b), n);
    OPS->rmsnorm_forward(CPU, D(out), D(rstd), D(res), D(w), BT, C, 1e-5f);
    OPS->residual_rmsnorm_forward(CPU, D(res2), D(out2), D(rstd2), D(a), D(b), D(w), BT, C, 1e-5f);
    cr_expect(memcmp(res, res2, n * 4) == 0, "res differs");
    cr_expect(memcmp(out, out2, n * 4) == 0, "out differs");
    cr_expect(memcmp(rstd, rstd2, BT * 4) == 0, "rstd differs");
    OPS->residual_rmsnorm_forward(CPU, D(a), D(out2), D(rstd2), D(a), D(b), D(w), BT, C, 1e-5f);  // in place
    cr_expect(memcmp(a, res, n * 4) == 0, "res in place differs");
    cr_expect(memcmp(out, out2, n * 4) == 0, "out (res in place) differs");
    float *bufs[] = {a, b, w, res, out, rstd, res2, out2, rstd2};
    for (int i = 0; i < 9; i++) free(bufs[i]);
}

struct ro { int B, T, NR, HS, S; float *x, *x0, *cs, *sn, *r; int *docs; };
static double ro_loss(void *p) {
    struct ro *c = p;
    size_t n = (size_t)c->B * c->T * c->S;
    memcpy(c->x, c->x0, n * 4);
    OPS->rope_forward(CPU, D(c->x), D(c->cs), D(c->sn), D(c->docs), c->B, c->T, c->NR, c->HS, c->S);
    return weighted_sum(c->x, c->r, n);
}

Test(ops, rope_backward_matches_finite_differences) {
    struct rng r;
    rng_seed(&r, 3);
    struct ro c = {2, 4, 3, 6, 24};  // 3 rotated heads of 6, one head left alone, per row
    size_t n = 2 * 4 * 24;
    c.x = malloc(n * 4); c.x0 = malloc(n * 4); c.r = malloc(n * 4);
    c.cs = malloc(4 * 3 * 4); c.sn = malloc(4 * 3 * 4);
    for (int t = 0; t < 4; t++)
        for (int i = 0; i < 3; i++) {
            double a = t * pow(10000.0, -2.0 * i / 6);
            c.cs[t * 3 + i] = (float)cos(a);
            c.sn[t * 3 + i] = (float)sin(a);
        }
    fill_normal(c.x0, n, 1, &r); fill_normal(c.r, n, 1, &r);
    float *dx = malloc(n * 4);
    memcpy(dx, c.r, n * 4);
    OPS->rope_backward(CPU, D(dx), D(c.cs), D(c.sn), NULL, 2, 4, 3, 6, 24);
    expect_grad("rope dx", dx, c.x0, n, 1e-2f, ro_loss, &c, 1e-3);
    // rotate-half layout: at t=1, element 0 pairs with element 3 of head 0
    ro_loss(&c);
    float a = c.x0[24], b = c.x0[27];
    cr_expect_float_eq(c.x[24], a * c.cs[3] - b * c.sn[3], 1e-6);
    cr_expect_float_eq(c.x[27], b * c.cs[3] + a * c.sn[3], 1e-6);

    // packed windows: row 0 holds documents [0,2) and [2,4), row 1 one document; positions restart at 2
    int docs[8] = {0, 0, 2, 2, 0, 0, 0, 0};
    c.docs = docs;
    memcpy(dx, c.r, n * 4);
    OPS->rope_backward(CPU, D(dx), D(c.cs), D(c.sn), D(docs), 2, 4, 3, 6, 24);
    expect_grad("rope dx (packed)", dx, c.x0, n, 1e-2f, ro_loss, &c, 1e-3);
    ro_loss(&c);
    cr_expect(memcmp(c.x + 2 * 24, c.x0 + 2 * 24, 24 * 4) == 0, "the first token of a document is at position 0");
    a = c.x0[3 * 24];
    b = c.x0[3 * 24 + 3];
    cr_expect_float_eq(c.x[3 * 24], a * c.cs[3] - b * c.sn[3], 1e-6, "t = 3 is position 1 of its document");
    cr_expect_float_eq(c.x[7 * 24], c.x0[7 * 24] * c.cs[9] - c.x0[7 * 24 + 3] * c.sn[9], 1e-6, "row 1 unchanged");
}

struct at { int B, T, NH, KVH, HS; float *out, *lse, *qkv, *r; int *docs; };
static double at_loss(void *p) {
    struct at *c = p;
    OPS->attention_forward(CPU, D(c->out), D(c->lse), D(c->qkv), D(c->docs), c->B, c->T, c->NH, c->KVH, c->HS);
    return weighted_sum(c->out, c->r, (size_t)c->B * c->T * c->NH * c->HS);
}

Test(ops, attention_backward_matches_finite_differences_with_gqa) {
    struct rng r;
    rng_seed(&r, 4);
    struct at c = {2, 5, 4, 2, 4};  // 4 query heads sharing 2 kv heads
    size_t nq = (size_t)2 * 5 * (4 + 2 * 2) * 4, no = (size_t)2 * 5 * 4 * 4;
    c.out = malloc(no * 4); c.lse = malloc(2 * 4 * 5 * 4); c.qkv = malloc(nq * 4); c.r = malloc(no * 4);
    fill_normal(c.qkv, nq, 1, &r); fill_normal(c.r, no, 1, &r);
    at_loss(&c);
    float *dqkv = malloc(nq * 4);
    memset(dqkv, 0x7f, nq * 4);  // backward must write every element (=)
    OPS->attention_backward(CPU, D(dqkv), D(c.r), D(c.qkv), D(c.out), D(c.lse), NULL, 2, 5, 4, 2, 4);
    expect_grad("attention dqkv", dqkv, c.qkv, nq, 1e-2f, at_loss, &c, 2e-3);
    // causality: the first output row equals v of position 0 for its kv head
    at_loss(&c);
    for (int d = 0; d < 4; d++) cr_expect_float_eq(c.out[3 * 4 + d], c.qkv[(4 + 2 + 1) * 4 + d], 1e-6);
}

// Packed windows: row 0 holds documents [0,2) and [2,5), row 1 documents [0,1), [1,4) and [4,5).
Test(ops, attention_with_documents_matches_finite_differences_and_each_document_alone) {
    struct rng r;
    rng_seed(&r, 14);
    int docs[10] = {0, 0, 2, 2, 2, 0, 1, 1, 1, 4};
    struct at c = {2, 5, 4, 2, 4};
    c.docs = docs;
    const int S = (4 + 2 * 2) * 4;
    size_t nq = (size_t)2 * 5 * S, no = (size_t)2 * 5 * 4 * 4;
    c.out = malloc(no * 4); c.lse = malloc(2 * 4 * 5 * 4); c.qkv = malloc(nq * 4); c.r = malloc(no * 4);
    fill_normal(c.qkv, nq, 1, &r); fill_normal(c.r, no, 1, &r);
    at_loss(&c);
    float *dqkv = malloc(nq * 4);
    memset(dqkv, 0x7f, nq * 4);
    OPS->attention_backward(CPU, D(dqkv), D(c.r), D(c.qkv), D(c.out), D(c.lse), D(docs), 2, 5, 4, 2, 4);
    expect_grad("attention dqkv (packed)", dqkv, c.qkv, nq, 1e-2f, at_loss, &c, 2e-3);
    // each document run alone (B = 1, T = its length, no docs) gives the same rows of out and dqkv
    at_loss(&c);
    int spans[5][3] = {{0, 0, 2}, {0, 2, 5}, {1, 0, 1}, {1, 1, 4}, {1, 4, 5}};  // row, start, end
    for (int k = 0; k < 5; k++) {
        int b = spans[k][0], s0 = spans[k][1], n = spans[k][2] - s0;
        float *q1 = malloc((size_t)n * S * 4), *o1 = malloc((size_t)n * 16 * 4), *l1 = malloc((size_t)4 * n * 4);
        float *r1 = malloc((size_t)n * 16 * 4), *d1 = malloc((size_t)n * S * 4);
        memcpy(q1, c.qkv + ((size_t)b * 5 + s0) * S, (size_t)n * S * 4);
        memcpy(r1, c.r + ((size_t)b * 5 + s0) * 16, (size_t)n * 16 * 4);
        OPS->attention_forward(CPU, D(o1), D(l1), D(q1), NULL, 1, n, 4, 2, 4);
        OPS->attention_backward(CPU, D(d1), D(r1), D(q1), D(o1), D(l1), NULL, 1, n, 4, 2, 4);
        cr_expect(rel_err(c.out + ((size_t)b * 5 + s0) * 16, o1, (size_t)n * 16) < 1e-6, "out of document %d", k);
        cr_expect(rel_err(dqkv + ((size_t)b * 5 + s0) * S, d1, (size_t)n * S) < 1e-6, "dqkv of document %d", k);
        free(q1); free(o1); free(l1); free(r1); free(d1);
    }
}

// lora_scale: y = out0 + alpha * x placed in columns [col0, col0+n) of rows of ld; L = sum R y
struct ls { int BT, n, ld, col0; float alpha; float *out, *out0, *x, *r; };
static double ls_loss(void *p) {
    struct ls *c = p;
    memcpy(c->out, c->out0, sizeof(float) * (size_t)c->BT * c->ld);
    OPS->lora_scale_forward(CPU, D(c->out), D(c->x), c->alpha, c->BT, c->n, c->ld, c->col0);
    return weighted_sum(c->out, c->r, (size_t)c->BT * c->ld);
}

Test(ops, lora_scale_backward_matches_finite_differences) {
    struct rng r;
    rng_seed(&r, 21);
    struct ls c = {3, 4, 10, 5, 1.75f};
    c.out = malloc(30 * 4); c.out0 = malloc(30 * 4); c.x = malloc(12 * 4); c.r = malloc(30 * 4);
    fill_normal(c.out0, 30, 1, &r); fill_normal(c.x, 12, 1, &r); fill_normal(c.r, 30, 1, &r);
    float *dx = malloc(12 * 4);
    memset(dx, 0x7f, 12 * 4);  // written (=)
    OPS->lora_scale_backward(CPU, D(dx), D(c.r), c.alpha, 3, 4, 10, 5);
    expect_grad("lora_scale dx", dx, c.x, 12, 1e-2f, ls_loss, &c, 1e-3);
    ls_loss(&c);
    cr_expect(c.out[4] == c.out0[4] && c.out[9] == c.out0[9], "columns outside [col0, col0+n) are untouched");
    cr_expect_float_eq(c.out[10 + 6], c.out0[10 + 6] + 1.75f * c.x[4 + 1], 1e-6);
}

// dropout: y = x * mask / (1 - p) for a fixed key, L = sum R y; its backward is the same op on R
struct dr { int BT, n; float p; uint64_t key; float *out, *x, *r; };
static double dr_loss(void *p) {
    struct dr *c = p;
    OPS->dropout_forward(CPU, D(c->out), D(c->x), c->p, c->key, c->BT, c->n);
    return weighted_sum(c->out, c->r, (size_t)c->BT * c->n);
}

Test(ops, dropout_backward_matches_finite_differences) {
    struct rng r;
    rng_seed(&r, 22);
    struct dr c = {5, 7, 0.4f, 99};
    c.out = malloc(35 * 4); c.x = malloc(35 * 4); c.r = malloc(35 * 4);
    fill_normal(c.x, 35, 1, &r); fill_normal(c.r, 35, 1, &r);
    float *dx = malloc(35 * 4);
    memset(dx, 0x7f, 35 * 4);  // written (=)
    OPS->dropout_forward(CPU, D(dx), D(c.r), c.p, c.key, 5, 7);
    expect_grad("dropout dx", dx, c.x, 35, 1e-2f, dr_loss, &c, 1e-3);
    dr_loss(&c);
    int zeros = 0;
    for (int i = 0; i < 35; i++) zeros += c.out[i] == 0;
    cr_expect(zeros > 0 && zeros < 35, "some elements dropped, some kept (%d of 35 dropped)", zeros);
}

struct sw { int BT, F; float *out, *gu, *r; };
static double sw_loss(void *p) {
    struct sw *c = p;
    OPS->swiglu_forward(CPU, D(c->out), D(c->gu), c->BT, c->F);
    return weighted_sum(c->out, c->r, (size_t)c->BT * c->F);
}

Test(ops, swiglu_backward_matches_finite_differences) {
    struct rng r;
    rng_seed(&r, 5);
    struct sw c = {4, 6};
    c.out = malloc(24 * 4); c.gu = malloc(48 * 4); c.r = malloc(24 * 4);
    fill_normal(c.gu, 48, 2, &r); fill_normal(c.r, 24, 1, &r);
    float *dgu = malloc(48 * 4);
    OPS->swiglu_backward(CPU, D(dgu), D(c.r), D(c.gu), 4, 6);
    expect_grad("swiglu dgateup", dgu, c.gu, 48, 1e-2f, sw_loss, &c, 1e-3);
}

struct em { int BT, C, vstart, Vl; int *tok; float *out, *w, *r; };
static double em_loss(void *p) {
    struct em *c = p;
    OPS->embedding_forward(CPU, D(c->out), D(c->tok), D(c->w), c->BT, c->C, c->vstart, c->Vl);
    return weighted_sum(c->out, c->r, (size_t)c->BT * c->C);
}

Test(ops, embedding_backward_matches_finite_differences_on_a_vocab_slice) {
    struct rng r;
    rng_seed(&r, 7);
    int tok[6] = {3, 4, 3, 9, 5, 2};  // this rank holds ids 3..6; 9 and 2 belong to other ranks
    struct em c = {6, 4, 3, 4, tok};
    c.out = malloc(24 * 4); c.w = malloc(16 * 4); c.r = malloc(24 * 4);
    fill_normal(c.w, 16, 1, &r); fill_normal(c.r, 24, 1, &r);
    float *dw = calloc(16, 4);
    OPS->embedding_backward(CPU, D(dw), D(c.r), D(tok), 6, 4, 3, 4);
    expect_grad("embedding dweight", dw, c.w, 16, 1e-2f, em_loss, &c, 1e-4);
    em_loss(&c);
    cr_expect(c.out[3 * 4] == 0 && c.out[5 * 4 + 2] == 0, "ids outside the slice give zero rows");
}

// Cross-entropy: the three forward steps on one rank, and the backward, with ignored targets and padded
// vocabulary columns (V = 7 real entries of 8 columns).
struct ce { int BT, Vl, vstart, V; int *tg; float *logits, *rowmax, *sums, *losses, *lse; };
static double ce_loss(void *p) {
    struct ce *c = p;
    OPS->crossentropy_max(CPU, D(c->rowmax), D(c->logits), c->BT, c->Vl, c->vstart, c->V);
    OPS->crossentropy_sums(CPU, D(c->sums), D(c->logits), D(c->rowmax), D(c->tg), c->BT, c->Vl, c->vstart, c->V);
    OPS->crossentropy_loss(CPU, D(c->losses), D(c->lse), D(c->rowmax), D(c->sums), D(c->tg), c->BT);
    double s = 0;
    for (int i = 0; i < c->BT; i++) s += c->losses[i];
    return s * 0.25;  // dloss = 0.25
}

Test(ops, crossentropy_backward_matches_finite_differences_with_ignore_and_padding) {
    struct rng r;
    rng_seed(&r, 8);
    int tg[5] = {1, -1, 6, 0, -1};
    struct ce c = {5, 8, 0, 7, tg};
    c.logits = malloc(40 * 4); c.rowmax = malloc(20); c.sums = malloc(40); c.losses = malloc(20); c.lse = malloc(20);
    fill_normal(c.logits, 40, 2, &r);
    for (int i = 0; i < 5; i++) c.logits[i * 8 + 7] = 50.0f;  // a padding column must never count
    ce_loss(&c);
    // loss of row 0 by the textbook formula over the 7 real columns
    double m = -1e30, s = 0;
    for (int v = 0; v < 7; v++) m = fmax(m, c.logits[v]);
    for (int v = 0; v < 7; v++) s += exp(c.logits[v] - m);
    cr_expect_float_eq(c.losses[0], (float)(log(s) + m - c.logits[1]), 1e-5);
    cr_expect(c.losses[1] == 0.0f && c.losses[4] == 0.0f, "ignored targets give zero loss");
    float *d = malloc(40 * 4);
    OPS->crossentropy_backward(CPU, D(d), D(c.logits), D(c.lse), D(tg), 0.25f, 5, 8, 0, 7);
    expect_grad("crossentropy dlogits", d, c.logits, 40, 1e-2f, ce_loss, &c, 1e-3);
    for (int v = 0; v < 8; v++) cr_expect(d[8 + v] == 0.0f, "ignored rows get no gradient");
    cr_expect(d[7] == 0.0f, "padding columns get no gradient");
}

Test(ops, crossentropy_vocab_slices_combine_to_the_full_loss) {
    struct rng r;
    rng_seed(&r, 9);
    int tg[3] = {2, 5, 1};
    float logits[3 * 6];
    fill_normal(logits, 18, 1, &r);
    struct ce full = {3, 6, 0, 6, tg};
    full.logits = logits; full.rowmax = malloc(12); full.sums = malloc(24); full.losses = malloc(12); full.lse = malloc(12);
    ce_loss(&full);
    // two ranks holding columns 0..2 and 3..5: reduce max, then sums, as the tp group does
    float sl[2][9], mx[2][3], sm[2][6], ls[3], lse[3];
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < 3; i++) memcpy(sl[k] + i * 3, logits + i * 6 + 3 * k, 12);
        OPS->crossentropy_max(CPU, D(mx[k]), D(sl[k]), 3, 3, 3 * k, 6);
    }
    float gmax[3], gsum[6] = {0};
    for (int i = 0; i < 3; i++) gmax[i] = fmaxf(mx[0][i], mx[1][i]);
    for (int k = 0; k < 2; k++) {
        OPS->crossentropy_sums(CPU, D(sm[k]), D(sl[k]), D(gmax), D(tg), 3, 3, 3 * k, 6);
        for (int i = 0; i < 6; i++) gsum[i] += sm[k][i];
    }
    OPS->crossentropy_loss(CPU, D(ls), D(lse), D(gmax), D(gsum), D(tg), 3);
    for (int i = 0; i < 3; i++) cr_expect_float_eq(ls[i], full.losses[i], 1e-5, "row %d", i);
}
