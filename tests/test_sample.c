// Sampling (train/sample.h, model/kvcache.h): the attention_decode op against the full causal attention,
// greedy decoding with the KV cache against the full recomputation, top-k/top-p/repetition penalty, stop
// strings and the chat templates (Llama 2 on the train_data fixture's SentencePiece model, Llama 3 on
// the genuine tokenizer of the ref_llama3_tok fixture, against the ids Meta's template gives), and
// `llamac sample` itself with and without the cache.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "data/tokenizer.h"
#include "kv_greedy.h"
#include "model/ops/cpu/cpu.h"
#include "train/sample.h"
#include "llamac_run.h"

#define TMP LLAMAC_TEST_TMP "/sample"
#define DATA LLAMAC_TEST_TMP "/train_data/data"
#define LLAMA3 LLAMAC_TEST_TMP "/llama3_tok"
#define INI LLAMAC_TEST_SOURCE_DIR "/tests/configs/tiny_run.ini"

Test(sample, attention_decode_equals_full_attention) {
    const struct backend *be = backend_cpu();
    enum { T = 19, NH = 4, KVH = 2, HS = 8, S = (NH + 2 * KVH) * HS, KS = KVH * HS };
    float *qkv = malloc(sizeof(float) * T * S), *full = malloc(sizeof(float) * T * NH * HS);
    float *lse = malloc(sizeof(float) * NH * T), *kc = malloc(sizeof(float) * T * KS), *vc = malloc(sizeof(float) * T * KS);
    float *out = malloc(sizeof(float) * T * NH * HS);
    struct rng r;
    rng_seed(&r, 5);
    for (int i = 0; i < T * S; i++) qkv[i] = (float)(rng_uniform(&r) * 4 - 2);
    attention_forward_cpu(be, (dbuf *)full, (dbuf *)lse, (const dbuf *)qkv, NULL, 1, T, NH, KVH, HS);
    for (int i = 0; i < T * NH * HS; i++) out[i] = NAN;
    // rows in pieces: 5 (a prefill), then 1, 1, 3, then one at a time
    int pos = 0, pieces[] = {5, 1, 1, 3};
    for (int p = 0; pos < T; p++) {
        int n = p < 4 ? pieces[p] : 1;
        be->ops->attention_decode(be, (dbuf *)(out + (size_t)pos * NH * HS), (dbuf *)kc, (dbuf *)vc,
                                  (const dbuf *)(qkv + (size_t)pos * S), n, pos, NH, KVH, HS);
        pos += n;
    }
    double worst = 0;
    for (int i = 0; i < T * NH * HS; i++) {
        double d = isfinite(out[i]) ? fabs(out[i] - full[i]) : INFINITY;
        if (d > worst) worst = d;
    }
    cr_expect(worst <= 1e-6, "attention_decode differs from attention_forward by %g", worst);
    for (int t = 0; t < T; t++)
        cr_expect(!memcmp(kc + t * KS, qkv + t * S + NH * HS, sizeof(float) * KS) &&
                      !memcmp(vc + t * KS, qkv + t * S + (NH + KVH) * HS, sizeof(float) * KS),
                  "row %d of the cache is not the row's k and v", t);
    free(qkv), free(full), free(lse), free(kc), free(vc), free(out);
}

Test(sample, kv_cache_greedy_equals_recomputation_on_the_cpu) {
    double e = kvg_compare(backend_cpu(), 7, 60, 4, 1e-4);
    cr_log_info("cpu: worst logit difference %.3g", e);
}

Test(sample, top_k_top_p_and_repetition_penalty) {
    const float logits[6] = {1.0f, 3.0f, 2.5f, -1.0f, 2.9f, 0.0f};  // order: 1, 4, 2, 0, 5, 3
    cr_expect_eq(sample_pick(logits, 6, 0.0f, 0, 1.0f, 0.99), 1, "temperature 0 is the argmax");
    int seen[6] = {0};
    for (int i = 0; i < 1000; i++) seen[sample_pick(logits, 6, 1.0f, 3, 1.0f, (i + 0.5) / 1000.0)]++;
    cr_expect(seen[1] && seen[4] && seen[2] && !seen[0] && !seen[5] && !seen[3], "top-k 3 draws only ids 1, 4, 2");
    for (int i = 0; i < 1000; i++) cr_expect_eq(sample_pick(logits, 6, 1.0f, 1, 1.0f, (i + 0.5) / 1000.0), 1);
    // top-p: p(1) = e^0 / Z, p(4) = e^-0.1 / Z, ... the first two hold 0.48 of the mass (Z = 3.9)
    memset(seen, 0, sizeof(seen));
    for (int i = 0; i < 1000; i++) seen[sample_pick(logits, 6, 1.0f, 0, 0.45f, (i + 0.5) / 1000.0)]++;
    cr_expect(seen[1] && seen[4] && !seen[2] && !seen[0], "top-p 0.45 keeps ids 1 and 4 (%d %d %d)", seen[1], seen[4],
              seen[2]);
    float x[6];
    memcpy(x, logits, sizeof(x));
    const int ctx[4] = {1, 3, 1, 5};
    sample_penalize(x, 6, ctx, 4, 2.0f);
    cr_expect(x[1] == 1.5f && x[3] == -2.0f && x[5] == 0.0f && x[0] == 1.0f && x[4] == 2.9f,
              "penalty 2: positive logits halved, negative doubled, once per id: %g %g %g", x[1], x[3], x[5]);
    cr_expect_eq(sample_pick(x, 6, 0.0f, 0, 1.0f, 0.5), 4, "after the penalty the argmax moves to id 4");
}

static struct tokenizer *load_tok(const char *path) {
    struct tokenizer *t = NULL;
    cr_assert_eq(tokenizer_load(&t, path), 0, "%s", err_msg());
    return t;
}

Test(sample, llama2_chat_template) {
    struct tokenizer *t = load_tok(DATA "/tokenizer.model");
    cr_expect(!chat_is_llama3(t, NULL));
    struct chat_msg msgs[4] = {{"system", "Be brief."}, {"user", "Hello there"}, {"assistant", "Hi"}, {"user", "Why?"}};
    struct token_buf got = {0}, want = {0};
    cr_assert_eq(chat_encode(t, msgs, 4, &got), 0, "%s", err_msg());
    // Llama 2: <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] {user} [/INST]
    const char *parts[] = {"[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHello there [/INST]", " Hi ", "[INST] Why? [/INST]"};
    token_buf_push(&want, tokenizer_bos_id(t));
    tokenizer_encode(t, parts[0], strlen(parts[0]), &want);
    tokenizer_encode(t, parts[1], strlen(parts[1]), &want);
    token_buf_push(&want, tokenizer_eos_id(t));
    token_buf_push(&want, tokenizer_bos_id(t));
    tokenizer_encode(t, parts[2], strlen(parts[2]), &want);
    cr_assert_eq(got.n, want.n, "%zu ids, expected %zu", got.n, want.n);
    cr_expect(!memcmp(got.ids, want.ids, sizeof(int) * got.n));
    size_t len;
    char *text = tokenizer_decode(t, got.ids, got.n, &len);
    cr_expect(strstr(text, "<<SYS>>\nBe brief.\n<</SYS>>\n\nHello there [/INST]") != NULL, "%s", text);
    free(text);
    struct token_buf bad = {0};
    struct chat_msg two_users[2] = {{"user", "a"}, {"user", "b"}};
    cr_expect_eq(chat_encode(t, two_users, 2, &bad), -1);
    cr_expect(strstr(err_msg(), "message 2") != NULL, "%s", err_msg());
    free(got.ids), free(want.ids), free(bad.ids);
    tokenizer_free(t);
}

Test(sample, llama3_chat_template_gives_metas_ids) {
    struct tokenizer *t = load_tok(LLAMA3 "/tokenizer.model");
    int header;
    cr_expect(chat_is_llama3(t, &header) && header == 128006);
    struct chat_msg msgs[1] = {{"user", "Hello"}};
    struct token_buf got = {0};
    cr_assert_eq(chat_encode(t, msgs, 1, &got), 0, "%s", err_msg());
    // <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n
    const int want[] = {128000, 128006, 882, 128007, 271, 9906, 128009, 128006, 78191, 128007, 271};
    cr_assert_eq(got.n, sizeof(want) / sizeof(want[0]), "%zu ids", got.n);
    for (size_t i = 0; i < got.n; i++) cr_expect_eq(got.ids[i], want[i], "id %zu: %d, expected %d", i, got.ids[i], want[i]);
    free(got.ids);
    tokenizer_free(t);
}

// ---- the binary ----

static void run(struct result *r, const char *args) { llamac_run_in(r, TMP, "", args); }

// A 6-step tiny run, trained once per test binary.
static void trained(void) {
    struct stat st;
    if (stat(TMP "/run/ckpt/latest", &st) == 0) return;
    struct result r;
    run(&r, "train " INI " --set data.dir=" DATA " --set run.run_dir=" TMP "/run --set train.steps=6");
    cr_assert_eq(r.status, 0, "%s", r.err);
}

Test(sample, cli_greedy_with_and_without_the_cache_and_stop_strings, .timeout = 300) {
    trained();
    static struct result a, b, c;
    run(&a, "sample --ckpt " TMP "/run --prompt 'The truth is' --prompt 'Die' --temperature 0 --max-tokens 40");
    cr_assert_eq(a.status, 0, "%s", a.err);
    run(&b, "sample --ckpt " TMP "/run --prompt 'The truth is' --prompt 'Die' --temperature 0 --max-tokens 40 --no-cache");
    cr_assert_eq(b.status, 0, "%s", b.err);
    cr_expect_str_eq(a.out, b.out, "greedy text with the KV cache:\n%s\nwithout:\n%s", a.out, b.out);
    cr_expect(strstr(a.err, "prefill") && strstr(a.err, "decode") && strstr(b.err, "no KV cache"), "%s", a.err);
    // a stop string from the middle of the greedy output: the text ends just before its first occurrence
    const char *gen = a.out + strlen("The truth is");
    size_t glen = strcspn(gen, "\n");
    cr_assert(glen >= 8, "greedy output too short to take a stop string from: '%s'", a.out);
    size_t k = glen / 2;
    while (k + 3 < glen && (memchr(gen + k, '\'', 3) || memchr(gen + k, '\\', 3))) k++;  // shell-safe
    char stop[4] = {gen[k], gen[k + 1], gen[k + 2], 0};
    char args[512];
    snprintf(args, sizeof(args), "sample --ckpt " TMP "/run --prompt 'The truth is' --temperature 0 --max-tokens 40 --stop '%s'",
             stop);
    run(&c, args);
    cr_assert_eq(c.status, 0, "%s", c.err);
    const char *at = strstr(gen, stop);
    size_t keep = (size_t)(at - gen);
    cr_expect(strlen(c.out) == strlen("The truth is") + keep + 1 && !strncmp(c.out, a.out, strlen("The truth is") + keep),
              "--stop '%s': '%s', expected the greedy text up to it: '%.*s'", stop, c.out,
              (int)(strlen("The truth is") + keep), a.out);
}

Test(sample, cli_chat_and_bad_options, .timeout = 120) {
    trained();
    struct result r;
    run(&r, "sample --ckpt " TMP "/run --chat --system 'Be brief.' --prompt Hello --max-tokens 5 --top-k 5 "
            "--repetition-penalty 1.2");
    cr_expect_eq(r.status, 0, "%s", r.err);
    run(&r, "sample --ckpt " TMP "/run --system x --prompt Hello");
    cr_expect(r.status != 0 && r.err_lines == 1 && strstr(r.err, "--chat"), "%s", r.err);
    run(&r, "sample --ckpt " TMP "/run --hf " TMP " --prompt Hello");
    cr_expect(r.status != 0 && r.err_lines == 1 && strstr(r.err, "exactly one"), "%s", r.err);
}

Test(sample, kv_cache_memory_follows_the_context_not_max_seq_len) {
    struct llama_config c;
    kvg_config(&c, 4096);
    struct llama m;
    cr_assert(llama_init(&m, &c, backend_cpu(), comm_self()) == 0, "%s", err_msg());
    size_t a100, a200, f32a, f32b, full, full32;
    llama_kv_sizes(&m, 100, 16, &a100, &f32a);
    llama_kv_sizes(&m, 200, 16, &a200, &f32b);
    // 100 more positions: 100 more rows of keys and values in each layer, nothing else
    cr_expect_eq(a200 - a100, (size_t)2 * c.n_layers * 100 * c.n_kv_heads * c.head_dim);
    cr_expect_eq(f32a, 16);
    llama_act_sizes(&c, &m.layout, 1, 4096, 0, &full, &full32);
    cr_expect(a200 * 20 < full, "a 200-token cache (%zu elements) is far below the activations of a 4096-token "
              "forward (%zu)", a200, full);
    llama_free(&m);
}
