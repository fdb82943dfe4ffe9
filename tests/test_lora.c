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
