// LoRA (model/lora.h) against PyTorch and against itself. The "lora" case of tests/ref/gen_model_ref.py is
// a small LLaMA with PEFT-layout adapters (rank 4, alpha 8 on q, v, o, up, down; random A and B) whose
// base weights are frozen: llamac loads the base and the adapters (PEFT's adapter_model.safetensors and
// adapter_config.json), and its loss and the gradients of every A and B must match PyTorch autograd in
// float64 (loss 1e-5, gradients 1e-4 relative). Then: the base gets no gradient block; merging gives
// W + (alpha/r) B A and a plain model with merged weights computes the adapted model's logits; adapters
// written in PEFT's layout load back into a fresh model with the same loss bit for bit; plain freezing
// leaves the frozen tensors' gradients untouched and computes the rest as before.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/comm.h"
#include "core/error.h"
#include "model/hf.h"
#include "model/llama.h"
#include "model/lora.h"
#include "model/ops/backends.h"
#include "optim/adamw.h"
#include "model/safetensors.h"
#include "testutil.h"

#define CASE LLAMAC_TEST_TMP "/model_ref/lora"

struct tokens {
    int B, T, *tok, *tgt;
    double loss;
};

static void read_tokens(struct tokens *k) {
    FILE *f = fopen(CASE "/tokens.txt", "r");
    cr_assert(f, "missing " CASE "/tokens.txt (the ref_model_gen fixture writes it)");
    cr_assert(fscanf(f, "%d %d %lf", &k->B, &k->T, &k->loss) == 3);
    k->tok = malloc(sizeof(int) * k->B * k->T);
    k->tgt = malloc(sizeof(int) * k->B * k->T);
    for (int i = 0; i < k->B * k->T; i++) cr_assert(fscanf(f, "%d", &k->tok[i]) == 1);
    for (int i = 0; i < k->B * k->T; i++) cr_assert(fscanf(f, "%d", &k->tgt[i]) == 1);
    fclose(f);
}

// The base model of the case with the PEFT adapters of `dir` attached.
static void open_model(struct llama *m, const struct tokens *k, const char *dir) {
    struct llama_config c = {0};
    cr_assert(hf_read_config(&c, CASE) == 0, "%s", err_msg());
    cr_assert(llama_init(m, &c, backend_cpu(), comm_self()) == 0, "%s", err_msg());
    cr_assert(hf_load_weights(m, CASE) == 0, "%s", err_msg());
    llama_alloc_acts(m, k->B, k->T, 0);
    if (!dir) return;
    struct lora_config lc;
    cr_assert(lora_read_peft_config(dir, &lc) == 0, "%s", err_msg());
    cr_assert(lora_attach(m, &lc, 1) == 0, "%s", err_msg());
    cr_assert(lora_load_peft(m, dir) == 0, "%s", err_msg());
}

static double loss_of(struct llama *m, const struct tokens *k) {
    long n;
    return llama_forward(m, k->tok, k->tgt, k->B, k->T, &n) / (double)n;
}

Test(lora, gradients_of_the_adapters_match_pytorch) {
    struct tokens k;
    read_tokens(&k);
    struct llama m;
    open_model(&m, &k, CASE);
    cr_expect(m.grads == NULL, "the frozen base has no gradient block");
    llama_zero_grads(&m);
    long n;
    double loss = llama_forward(&m, k.tok, k.tgt, k.B, k.T, &n) / (double)n;
    llama_backward(&m, 1.0f / (float)n);
    double lerr = fabs(loss - k.loss) / fabs(k.loss);
    cr_expect(lerr < 1e-5, "loss %.9f vs PyTorch %.9f", loss, k.loss);

    struct st_file ref;
    cr_assert(st_open(&ref, CASE "/ref.safetensors") == 0, "%s", err_msg());
    const struct param_layout *pl = &m.lora->layout;
    float *g = malloc(sizeof(float) * pl->total);
    lora_grads_to_host(&m, g);
    double worst = 0;
    for (int i = 0; i < pl->n; i++) {
        char name[160];
        snprintf(name, sizeof(name), "grad.%s", pl->t[i].name);
        const struct st_tensor *t = st_find(&ref, name);
        cr_assert(t, "PyTorch has no gradient for %s", pl->t[i].name);
        float *want = malloc(sizeof(float) * pl->t[i].numel);
        cr_assert(st_read_f32(&ref, t, want) == 0);
        double e = rel_err(g + pl->t[i].offset, want, pl->t[i].numel);
        cr_expect(e < 1e-4, "gradient of %s: relative error %.3g", pl->t[i].name, e);
        if (e > worst) worst = e;
        free(want);
    }
    cr_expect_eq(pl->n, 2 * 5 * m.cfg.n_layers, "A and B of 5 projections per layer (%d)", pl->n);
    printf("lora: loss %.9f (PyTorch %.9f, relative error %.2g), %d adapter tensors, worst gradient relative error %.2g\n",
           loss, k.loss, lerr, pl->n, worst);
    st_close(&ref);
    free(g);
    llama_free(&m);
}

Test(lora, merging_gives_w_plus_scaled_ba_and_the_same_logits) {
    struct tokens k;
    read_tokens(&k);
    struct llama m, plain;
    open_model(&m, &k, CASE);
    open_model(&plain, &k, NULL);
    const size_t N = m.layout.total;
    float *base = malloc(sizeof(float) * N), *merged = malloc(sizeof(float) * N);
    llama_params_to_host(&m, base);
    lora_merge_to_host(&m, merged);
    // one weight by the formula: q_proj of layer 1, element (3, 5)
    const struct param_tensor *wq = param_get(&m.layout, PARAM_WQ, 1);
    const struct lora *a = m.lora;
    const struct lora_adapter *ad = NULL;
    for (int i = 0; i < a->n; i++)
        if (a->ad[i].layer == 1 && a->ad[i].target == LORA_Q) ad = &a->ad[i];
    cr_assert(ad);
    float *ah = malloc(sizeof(float) * a->layout.total);
    lora_params_to_host(&m, ah);
    double s = 0;
    for (int r = 0; r < a->c.rank; r++) s += (double)ah[ad->B->offset + 3 * a->c.rank + r] * ah[ad->A->offset + r * ad->in + 5];
    const size_t e = wq->offset + 3 * (size_t)wq->cols + 5;
    cr_expect(fabs(merged[e] - (base[e] + a->scale * s)) < 1e-6, "merged %g vs W + (alpha/r) B A %g", merged[e],
              base[e] + a->scale * s);
    // k_proj has no adapter: unchanged
    const struct param_tensor *wk = param_get(&m.layout, PARAM_WK, 0);
    cr_expect(memcmp(merged + wk->offset, base + wk->offset, sizeof(float) * wk->numel) == 0);
    // the merged weights in a plain model compute the adapted model's loss
    llama_params_from_host(&plain, merged);
    double l1 = loss_of(&m, &k), l2 = loss_of(&plain, &k);
    cr_expect(fabs(l1 - l2) < 1e-5 * fabs(l1), "adapted %.9f vs merged %.9f", l1, l2);
    free(base); free(merged); free(ah);
    llama_free(&m);
    llama_free(&plain);
}

Test(lora, peft_layout_round_trip_gives_the_same_loss) {
    struct tokens k;
    read_tokens(&k);
    struct llama m, back;
    open_model(&m, &k, CASE);
    const char *dir = LLAMAC_TEST_TMP "/lora_peft_out";
    cr_assert(lora_save_peft(&m, dir, CASE) == 0, "%s", err_msg());
    open_model(&back, &k, dir);
    double l1 = loss_of(&m, &k), l2 = loss_of(&back, &k);
    cr_expect(l1 == l2, "saved and loaded adapters: loss %.9f vs %.9f", l1, l2);
    // a wrong rank is refused, naming the file
    struct lora_config lc;
    cr_assert(lora_read_peft_config(dir, &lc) == 0);
    cr_expect(lc.rank == 4 && lc.alpha == 8.0f && lc.targets == ((1u << LORA_Q) | (1u << LORA_V) | (1u << LORA_O) |
                                                                 (1u << LORA_UP) | (1u << LORA_DOWN)));
    llama_free(&back);
    struct llama other;
    open_model(&other, &k, NULL);
    lc.rank = 2;
    cr_assert(lora_attach(&other, &lc, 1) == 0);
    cr_expect(lora_load_peft(&other, dir) != 0 && strstr(err_msg(), "adapter_model.safetensors"), "%s", err_msg());
    llama_free(&other);
    llama_free(&m);
}

Test(lora, freezing_skips_the_frozen_gradients_only) {
    struct tokens k;
    read_tokens(&k);
    struct llama full, frz;
    open_model(&full, &k, NULL);
    open_model(&frz, &k, NULL);
    cr_assert(llama_freeze(&frz, "embeddings, layers 0-0, lm_head") == 0, "%s", err_msg());
    cr_expect(llama_freeze(&frz, "layers 0-7") != 0 && strstr(err_msg(), "layers are 0..1"), "%s", err_msg());
    cr_expect(llama_freeze(&frz, "heads") != 0 && strstr(err_msg(), "'heads'"), "%s", err_msg());
    const size_t N = full.layout.total;
    float *g1 = malloc(sizeof(float) * N), *g2 = malloc(sizeof(float) * N);
    struct llama *ms[2] = {&full, &frz};
    for (int i = 0; i < 2; i++) {
        llama_zero_grads(ms[i]);
        long n;
        llama_forward(ms[i], k.tok, k.tgt, k.B, k.T, &n);
        llama_backward(ms[i], 1.0f / (float)n);
    }
    llama_grads_to_host(&full, g1);
    llama_grads_to_host(&frz, g2);
    for (int i = 0; i < full.layout.n; i++) {
        const struct param_tensor *t = &full.layout.t[i];
        int frozen = t->kind == PARAM_EMBED || t->kind == PARAM_LM_HEAD || t->layer == 0;
        double z = 0;
        for (size_t e = 0; e < t->numel; e++) z += fabs(g2[t->offset + e]);
        if (frozen) cr_expect(z == 0, "%s is frozen but got a gradient", t->name);
        else cr_expect(rel_err(g2 + t->offset, g1 + t->offset, t->numel) < 1e-6, "%s differs when others are frozen", t->name);
    }
    free(g1);
    free(g2);
    llama_free(&full);
    llama_free(&frz);
}

// Training steps as the trainer takes them (AdamW on the adapter block only): the loss falls, the
// adapters move, and every base weight stays bit for bit what was loaded.
Test(lora, training_moves_the_adapters_and_leaves_the_base_bit_identical) {
    struct tokens k;
    read_tokens(&k);
    struct llama m;
    open_model(&m, &k, CASE);
    const struct backend *be = m.be;
    const size_t N = m.layout.total, NA = m.lora->layout.total;
    float *before = malloc(sizeof(float) * N), *after = malloc(sizeof(float) * N);
    float *a0 = malloc(sizeof(float) * NA), *a1 = malloc(sizeof(float) * NA);
    llama_params_to_host(&m, before);
    lora_params_to_host(&m, a0);
    struct adamw_state st;
    adamw_state_init(&st, be, 0, NA);
    m.lora->master = st.master;
    lora_params_from_host(&m, a0);
    struct adamw_range all = {0, NA, 1};
    struct adamw_config ac;
    adamw_config_default(&ac);
    double first = 0, last = 0;
    for (int step = 1; step <= 8; step++) {
        llama_zero_grads(&m);
        long n;
        double loss = llama_forward(&m, k.tok, k.tgt, k.B, k.T, &n) / (double)n;
        llama_backward(&m, 1.0f / (float)n);
        adamw_step(be, &st, m.lora->params, m.lora->grads, &all, 1, &ac, 1e-2f, 1.0f, step);
        if (step == 1) first = loss;
        last = loss;
    }
    llama_params_to_host(&m, after);
    lora_params_to_host(&m, a1);
    cr_expect(memcmp(before, after, sizeof(float) * N) == 0, "the base weights changed");
    cr_expect(memcmp(a0, a1, sizeof(float) * NA) != 0, "the adapters did not move");
    cr_expect(last < first, "loss %.6f after 8 steps, %.6f at the start", last, first);
    adamw_state_free(&st, be);
    free(before); free(after); free(a0); free(a1);
    llama_free(&m);
}

// ---------------------------------------------------------------------------------------------------
// Dropout (model/lora.h): a small random model on the CPU with adapters on every projection, p = 0.3.
// ---------------------------------------------------------------------------------------------------

enum { DB = 2, DT = 13 };

static void dropout_model(struct llama *m, float p, int recompute) {
    struct llama_config c;
    memset(&c, 0, sizeof(c));
    snprintf(c.name, sizeof(c.name), "dropout-test");
    c.dim = 64, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 16, c.ffn_hidden = 96;
    c.vocab_size = 97, c.norm_eps = 1e-5f, c.rope_theta = 10000.0f, c.max_seq_len = 32;
    cr_assert(llama_init(m, &c, backend_cpu(), comm_self()) == 0, "%s", err_msg());
    llama_init_random(m, 7);
    llama_alloc_acts(m, DB, DT, recompute);
    struct lora_config lc = {4, 8.0f, p, (1u << LORA_NT) - 1};
    cr_assert(lora_attach(m, &lc, 1) == 0, "%s", err_msg());
    const size_t n = m->lora->layout.total;  // B nonzero, so that A and the input get gradients
    float *h = malloc(sizeof(float) * n);
    struct rng r;
    rng_seed(&r, 5);
    fill_normal(h, n, 0.2f, &r);
    lora_params_from_host(m, h);
    free(h);
}

static void dropout_tokens(int *tok, int *tgt) {
    struct rng r;
    rng_seed(&r, 9);
    for (int i = 0; i < DB * DT; i++) tok[i] = (int)(rng_u64(&r) % 97), tgt[i] = i % 4 == 3 ? -1 : (int)(rng_u64(&r) % 97);
}

// Mean loss of one forward, and (when g is not NULL) the adapter gradients of the backward after it.
static double dropout_pass(struct llama *m, const int *tok, const int *tgt, float *g) {
    llama_zero_grads(m);
    long n;
    double loss = llama_forward(m, tok, tgt, DB, DT, &n) / (double)n;
    if (g) {
        llama_backward(m, 1.0f / (float)n);
        lora_grads_to_host(m, g);
    }
    return loss;
}

// The mask is core/rng.h's counter-based hash: dropped exactly where rng_uniform_at(key, i) < thr / 2^32;
// it drops a fraction p, scales the rest by 1 / (1 - p), and p = 0 is the identity.
Test(lora, dropout_mask_is_the_rng_stream_and_drops_a_fraction_p) {
    const struct backend *be = backend_cpu();
    const int BT = 400, n = 500;
    const size_t N = (size_t)BT * n;
    float *x = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * N), *y2 = malloc(sizeof(float) * N);
    struct rng r;
    rng_seed(&r, 3);
    for (size_t i = 0; i < N; i++) x[i] = 0.5f + (float)rng_uniform(&r);  // never 0
    const float p = 0.3f;
    const uint64_t key = 0x1234567890abcdefULL;
    be->ops->dropout_forward(be, (dbuf *)y, (dbuf *)x, p, key, BT, n);
    const double cut = (double)(uint32_t)((double)p * 4294967296.0) / 4294967296.0;
    size_t dropped = 0, agree = 0, scaled = 0;
    for (size_t i = 0; i < N; i++) {
        dropped += y[i] == 0;
        agree += (y[i] == 0) == (rng_uniform_at(key, i) < cut);
        scaled += y[i] == 0 || y[i] == x[i] * (1.0f / (1.0f - p));
    }
    const double frac = (double)dropped / N;
    printf("lora dropout op: p %.2f, dropped %.5f of %zu elements\n", p, frac, N);
    cr_expect(fabs(frac - p) < 5e-3, "dropped %.5f of the elements, p = %.2f", frac, p);  // sigma 1e-3
    cr_expect_eq(agree, N, "the mask is rng_uniform_at(key, i) < p at %zu of %zu elements", agree, N);
    cr_expect_eq(scaled, N, "kept elements are x / (1 - p) (%zu of %zu)", scaled, N);
    be->ops->dropout_forward(be, (dbuf *)y2, (dbuf *)x, p, key, BT, n);
    cr_expect(memcmp(y, y2, sizeof(float) * N) == 0, "the same key gives the same output");
    be->ops->dropout_forward(be, (dbuf *)y2, (dbuf *)x, p, key + 1, BT, n);
    size_t differ = 0;
    for (size_t i = 0; i < N; i++) differ += (y[i] == 0) != (y2[i] == 0);
    cr_expect(differ > N / 3, "another key gives another mask (%zu of %zu elements differ; 2p(1-p) expected)", differ, N);
    be->ops->dropout_forward(be, (dbuf *)y2, (dbuf *)x, 0.0f, key, BT, n);
    cr_expect(memcmp(x, y2, sizeof(float) * N) == 0, "p = 0 is the identity");
    free(x); free(y); free(y2);
}

// One group hook (q,k,v; o; gate,up; down) of layer 1 alone: L = sum R * (y after lora_forward_group),
// a linear function of A, B and x for a fixed mask, so central differences are exact up to rounding.
struct group_fd {
    struct llama *m;
    int g, in, OCg, BT;
    float *x, *y, *R;
};

static double group_loss(void *p) {
    struct group_fd *c = p;
    memset(c->y, 0, sizeof(float) * (size_t)c->BT * c->OCg);
    lora_forward_group(c->m, 1, c->g, (dbuf *)c->x, (dbuf *)c->y, c->BT, c->OCg);
    double s = 0;
    for (size_t i = 0; i < (size_t)c->BT * c->OCg; i++) s += (double)c->y[i] * c->R[i];
    return s;
}

// Relative error of the analytic gradient g (n) of group_loss against central differences in v (n).
static double fd_error(struct group_fd *c, float *v, const float *g, size_t n, float eps) {
    double d = 0, s = 0;
    for (size_t k = 0; k < n; k++) {
        const float keep = v[k];
        v[k] = keep + eps;
        const double lp = group_loss(c);
        v[k] = keep - eps;
        const double lm = group_loss(c);
        v[k] = keep;
        const double fd = (lp - lm) / (2.0 * eps);
        d += (g[k] - fd) * (g[k] - fd);
        s += fd * fd;
    }
    return sqrt(d / s);
}

Test(lora, dropout_gradients_of_a_b_and_the_input_match_finite_differences) {
    struct llama m;
    dropout_model(&m, 0.3f, 0);
    struct lora *a = m.lora;
    const int BT = DB * DT, C = m.cfg.dim, F = m.cfg.ffn_hidden, QKV = (4 + 2 * 2) * 16;
    const int ins[4] = {C, 4 * 16, C, F}, outs[4] = {QKV, C, 2 * F, C};
    float *pa = (float *)a->params;  // the CPU backend's buffers are host memory
    struct rng r;
    rng_seed(&r, 17);
    double worst = 0;
    for (int g = 0; g < 4; g++) {
        struct group_fd c = {&m, g, ins[g], outs[g], BT, NULL, NULL, NULL};
        c.x = malloc(sizeof(float) * BT * c.in);
        c.y = malloc(sizeof(float) * BT * c.OCg);
        c.R = malloc(sizeof(float) * BT * c.OCg);
        float *dx = calloc((size_t)BT * c.in, sizeof(float)), *grads = malloc(sizeof(float) * a->layout.total);
        fill_normal(c.x, (size_t)BT * c.in, 1, &r);
        fill_normal(c.R, (size_t)BT * c.OCg, 1, &r);
        lora_set_dropout(&m, 1, 0xfeedULL + (uint64_t)g);
        llama_zero_grads(&m);
        group_loss(&c);  // forward (keeps u), then backward: dy = R
        lora_backward_group(&m, 1, g, (dbuf *)c.R, (dbuf *)c.x, (dbuf *)dx, BT, c.OCg);
        lora_grads_to_host(&m, grads);
        // the scratch holds the last adapter's dropout(x) after a forward: the fraction dropped is near p
        group_loss(&c);
        const struct lora_adapter *last = NULL;
        for (int i = 0; i < a->n; i++)
            if (a->ad[i].layer == 1 && a->ad[i].group == g) last = &a->ad[i];
        size_t zeros = 0, ne = (size_t)BT * last->in;
        for (size_t i = 0; i < ne; i++) zeros += ((float *)a->xd)[i] == 0;
        const double frac = (double)zeros / ne;
        cr_expect(fabs(frac - 0.3) < 0.06, "group %d: dropped %.3f of the adapter's input, p = 0.3", g, frac);
        const double ex = fd_error(&c, c.x, dx, (size_t)BT * c.in, 5e-2f);
        cr_expect(ex < 1e-4, "group %d: input gradient vs finite differences: relative error %.3g", g, ex);
        if (ex > worst) worst = ex;
        for (int i = 0; i < a->n; i++) {
            const struct lora_adapter *ad = &a->ad[i];
            if (ad->layer != 1 || ad->group != g) continue;
            const struct param_tensor *ps[2] = {ad->A, ad->B};
            for (int w = 0; w < 2; w++) {
                const double e = fd_error(&c, pa + ps[w]->offset, grads + ps[w]->offset, ps[w]->numel, 5e-2f);
                cr_expect(e < 1e-4, "%s: gradient vs finite differences: relative error %.3g", ps[w]->name, e);
                if (e > worst) worst = e;
            }
        }
        printf("lora dropout p 0.3, group %d: dropped %.3f of the last adapter's input; input gradient FD error %.2g\n",
               g, frac, ex);
        free(c.x); free(c.y); free(c.R); free(dx); free(grads);
    }
    printf("lora dropout p 0.3: worst relative error of A, B and input gradients vs finite differences %.2g\n", worst);
    llama_free(&m);
}

// The whole model: the loss's gradient with respect to adapter weights against central differences of the
// loss (a nonlinear function: spot checks of the largest entries), with and without recomputation.
Test(lora, dropout_model_gradients_match_finite_differences_and_recomputation) {
    int tok[DB * DT], tgt[DB * DT];
    dropout_tokens(tok, tgt);
    struct llama m, mr;
    dropout_model(&m, 0.3f, 0);
    dropout_model(&mr, 0.3f, 1);
    const size_t n = m.lora->layout.total;
    float *g = malloc(sizeof(float) * n), *gr = malloc(sizeof(float) * n);
    lora_set_dropout(&m, 1, 42);
    lora_set_dropout(&mr, 1, 42);
    dropout_pass(&m, tok, tgt, g);
    dropout_pass(&mr, tok, tgt, gr);
    cr_expect(memcmp(g, gr, sizeof(float) * n) == 0, "recomputation redraws the same masks: the same gradients");
    float *pa = (float *)m.lora->params;
    double worst = 0;
    for (int k = 0; k < 12; k++) {  // the largest gradient entry in each of 12 slices of the block
        size_t lo = n * k / 12, hi = n * (k + 1) / 12, best = lo;
        for (size_t i = lo; i < hi; i++)
            if (fabsf(g[i]) > fabsf(g[best])) best = i;
        const float keep = pa[best], eps = 2e-3f;
        pa[best] = keep + eps;
        const double lp = dropout_pass(&m, tok, tgt, NULL);
        pa[best] = keep - eps;
        const double lm = dropout_pass(&m, tok, tgt, NULL);
        pa[best] = keep;
        const double fd = (lp - lm) / (2.0 * eps), e = fabs(g[best] - fd) / fabs(fd);
        cr_expect(e < 1e-2, "element %zu: gradient %.6g vs finite differences %.6g (relative error %.3g)", best, g[best],
                  fd, e);
        if (e > worst) worst = e;
    }
    printf("lora dropout p 0.3, whole model: worst relative error of 12 adapter gradients vs finite differences %.2g\n",
           worst);
    free(g); free(gr);
    llama_free(&m);
    llama_free(&mr);
}

// Off (evaluation, sampling) the adapters compute exactly what they compute with p = 0; on, the same key
// gives the same loss and gradients bit for bit and another key another loss.
Test(lora, dropout_off_is_p0_and_masks_follow_the_key) {
    int tok[DB * DT], tgt[DB * DT];
    dropout_tokens(tok, tgt);
    struct llama m, m0;
    dropout_model(&m, 0.3f, 0);
    dropout_model(&m0, 0.0f, 0);
    const size_t n = m.lora->layout.total;
    float *g = malloc(sizeof(float) * n), *g0 = malloc(sizeof(float) * n), *g1 = malloc(sizeof(float) * n);
    const double off = dropout_pass(&m, tok, tgt, g), p0 = dropout_pass(&m0, tok, tgt, g0);
    cr_expect(off == p0 && memcmp(g, g0, sizeof(float) * n) == 0,
              "dropout off: loss %.17g and gradients must equal p = 0's (%.17g)", off, p0);
    lora_set_dropout(&m0, 1, 42);  // p = 0 with the training flag on: still the identity
    cr_expect(dropout_pass(&m0, tok, tgt, NULL) == p0, "p = 0 drops nothing");
    lora_set_dropout(&m, 1, 42);
    const double on1 = dropout_pass(&m, tok, tgt, g);
    const double on2 = dropout_pass(&m, tok, tgt, g1);
    cr_expect(on1 == on2 && memcmp(g, g1, sizeof(float) * n) == 0, "the same key: %.17g vs %.17g", on1, on2);
    cr_expect(on1 != off, "dropout on changes the loss (%.17g, off %.17g)", on1, off);
    lora_set_dropout(&m, 1, 43);
    const double other = dropout_pass(&m, tok, tgt, g1);
    cr_expect(other != on1 && memcmp(g, g1, sizeof(float) * n) != 0, "another key: %.17g vs %.17g", other, on1);
    lora_set_dropout(&m, 0, 0);
    cr_expect(dropout_pass(&m, tok, tgt, NULL) == off, "turned off again: back to the p = 0 loss");
    printf("lora dropout p 0.3: loss off %.9f (= p 0), key 42 %.9f, key 43 %.9f\n", off, on1, other);
    // PEFT's layout keeps lora_dropout (as written: 0.3, not the float's 0.30000001192092896)
    const char *dir = LLAMAC_TEST_TMP "/lora_dropout_peft";
    cr_assert(lora_save_peft(&m, dir, NULL) == 0, "%s", err_msg());
    struct lora_config back;
    cr_assert(lora_read_peft_config(dir, &back) == 0, "%s", err_msg());
    cr_expect(back.dropout == 0.3f && back.rank == 4 && back.alpha == 8.0f, "read back: dropout %g", back.dropout);
    char json[4096] = {0};
    FILE *f = fopen(LLAMAC_TEST_TMP "/lora_dropout_peft/adapter_config.json", "r");
    cr_assert(f);
    cr_assert(fread(json, 1, sizeof(json) - 1, f) > 0);
    fclose(f);
    cr_expect(strstr(json, "\"lora_dropout\":\t0.3,") != NULL, "%s", json);
    // the keys of the trainer differ in every coordinate
    const uint64_t k0 = lora_dropout_key(1, 5, 0, 0);
    cr_expect(k0 == lora_dropout_key(1, 5, 0, 0) && k0 != lora_dropout_key(2, 5, 0, 0) &&
              k0 != lora_dropout_key(1, 6, 0, 0) && k0 != lora_dropout_key(1, 5, 1, 0) &&
              k0 != lora_dropout_key(1, 5, 0, 1));
    // out of range: refused by name
    struct llama bad;
    struct lora_config lc = {4, 8.0f, 1.0f, 1u << LORA_Q};
    struct llama_config c = m.cfg;
    cr_assert(llama_init(&bad, &c, backend_cpu(), comm_self()) == 0);
    llama_alloc_acts(&bad, 1, 4, 0);
    cr_expect(lora_attach(&bad, &lc, 1) != 0 && strstr(err_msg(), "lora.dropout"), "%s", err_msg());
    llama_free(&bad);
    free(g); free(g0); free(g1);
    llama_free(&m);
    llama_free(&m0);
}
