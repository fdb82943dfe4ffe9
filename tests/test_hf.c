// Hugging Face Llama directories: config.json parsing, save/load round trips (F32 exact, F16/BF16
// rounded), a sharded checkpoint with an index, tied embeddings, GQA shapes, loading into a tensor-
// parallel rank, the forward of loaded weights against a PyTorch transcription of HF's Llama, and the
// real `llamac inspect --hf` on each kind of bad checkpoint: exit status 1, no crash, and exactly one
// line on stderr naming the file and the problem.
#include <criterion/criterion.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/half.h"
#include "core/comm.h"
#include "core/error.h"
#include "model/hf.h"
#include "model/llama.h"
#include "model/ops/backends.h"
#include "model/safetensors.h"
#include "testutil.h"

#define TMP LLAMAC_TEST_TMP

extern char **environ;

// ---------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------

// A small GQA model: C 16, L 2, NH 4, KVH 2, HS 4, F 32, V 41 (odd, so tp = 2 pads the vocabulary).
static struct llama_config tiny(int tie) {
    struct llama_config c = {0};
    snprintf(c.name, sizeof(c.name), "tiny");
    c.dim = 16;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 4;
    c.vocab_size = 41;
    c.ffn_hidden = 32;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.rope_factor = 1.0f;
    c.rope_low_freq_factor = 1.0f;
    c.rope_high_freq_factor = 4.0f;
    c.rope_original_max_seq_len = 8192;
    c.max_seq_len = 32;
    c.tie_embeddings = tie;
    return c;
}

static void fresh_dir(const char *dir) {
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
    cr_assert_eq(mkdir(dir, 0755), 0);
}

static void write_text(const char *path, const char *text) {
    FILE *fp = fopen(path, "wb");
    cr_assert(fp, "cannot write %s", path);
    fputs(text, fp);
    fclose(fp);
}

static int is_norm(const struct param_tensor *t) {
    return t->kind == PARAM_ATTN_NORM || t->kind == PARAM_FFN_NORM || t->kind == PARAM_NORM;
}

// Parameters with O(1) activations: embeddings N(0,1), matrices N(0, 1/in), norms 1 + N(0, 0.1^2).
static void random_params(struct llama *m, uint64_t seed) {
    const struct param_layout *pl = &m->layout;
    float *h = malloc(sizeof(float) * pl->total);
    struct rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < pl->n; i++) {
        const struct param_tensor *t = &pl->t[i];
        float s = t->kind == PARAM_EMBED ? 1.0f : 1.0f / sqrtf((float)t->cols);
        for (size_t k = 0; k < t->numel; k++) h[t->offset + k] = is_norm(t) ? 1.0f + 0.1f * rng_normal(&r) : s * rng_normal(&r);
    }
    llama_params_from_host(m, h);
    free(h);
}

static float *params_host(const struct llama *m) {
    float *h = malloc(sizeof(float) * m->layout.total);
    llama_params_to_host(m, h);
    return h;
}

static void init_model(struct llama *m, const struct llama_config *c) {
    cr_assert_eq(llama_init(m, c, backend_cpu(), comm_self()), 0, "%s", err_msg());
}

// The model's tensors as st_write wants them (canonical shapes; tp = 1), data from host.
static int write_list(struct st_write_tensor *w, const struct llama *m, const float *host) {
    const struct param_layout *pl = &m->layout;
    for (int i = 0; i < pl->n; i++) {
        const struct param_tensor *t = &pl->t[i];
        w[i] = (struct st_write_tensor){t->name, is_norm(t) ? 1 : 2, {0}, host + t->offset};
        if (is_norm(t)) w[i].shape[0] = t->full_cols;
        else {
            w[i].shape[0] = t->full_rows;
            w[i].shape[1] = t->full_cols;
        }
    }
    return pl->n;
}

// A run of the real binary: exit status, signal, stdout and stderr.
struct run { int exited, code, signaled, sig; char out[8192], err[8192]; };

static void slurp(const char *path, char *buf, size_t n) {
    FILE *fp = fopen(path, "rb");
    size_t len = fp ? fread(buf, 1, n - 1, fp) : 0;
    buf[len] = '\0';
    if (fp) fclose(fp);
}

static void run_llamac(struct run *r, const char *a1, const char *a2, const char *a3, const char *a4) {
    const char *outp = TMP "/hf_run.out", *errp = TMP "/hf_run.err";
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, outp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, errp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    char *argv[] = {(char *)LLAMAC_BINARY, (char *)a1, (char *)a2, (char *)a3, (char *)a4, NULL, NULL, NULL};
    pid_t pid;
    cr_assert_eq(posix_spawn(&pid, LLAMAC_BINARY, &fa, NULL, argv, environ), 0, "cannot run %s", LLAMAC_BINARY);
    posix_spawn_file_actions_destroy(&fa);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    memset(r, 0, sizeof(*r));
    r->exited = WIFEXITED(status);
    r->code = r->exited ? WEXITSTATUS(status) : -1;
    r->signaled = WIFSIGNALED(status);
    r->sig = r->signaled ? WTERMSIG(status) : 0;
    slurp(outp, r->out, sizeof(r->out));
    slurp(errp, r->err, sizeof(r->err));
}

// `llamac inspect --hf DIR` (which checks the weights without a model) and `llamac forward --hf DIR`
// (which loads them into one) must both fail cleanly: exit 1, no signal, stderr one line naming `file`
// and containing `problem`.
static void expect_inspect_fails(const char *dir, const char *file, const char *problem) {
    static const char *const cmds[] = {"inspect", "forward"};
    for (int k = 0; k < 2; k++) {
        struct run r;
        run_llamac(&r, cmds[k], "--hf", dir, k ? "--seq=8" : NULL);
        cr_expect(!r.signaled, "%s: llamac was killed by signal %d (a crash); stderr: %s", cmds[k], r.sig, r.err);
        cr_expect(r.exited && r.code == 1, "%s: exit status %d, expected 1; stderr: %s", cmds[k], r.code, r.err);
        size_t len = strlen(r.err);
        const char *nl = strchr(r.err, '\n');
        cr_expect(len > 0 && nl == r.err + len - 1, "%s: stderr must be exactly one line, got:\n%s", cmds[k], r.err);
        char prefix[32];
        snprintf(prefix, sizeof(prefix), "llamac %s: ", cmds[k]);
        cr_expect(!strncmp(r.err, prefix, strlen(prefix)), "stderr: %s", r.err);
        cr_expect(strstr(r.err, file) != NULL, "%s: stderr must name %s: %s", cmds[k], file, r.err);
        cr_expect(strstr(r.err, problem) != NULL, "%s: stderr must say '%s': %s", cmds[k], problem, r.err);
    }
}

// ---------------------------------------------------------------------------------------------------
// config.json
// ---------------------------------------------------------------------------------------------------

Test(hf, config_defaults_for_absent_keys) {
    const char *dir = TMP "/hf_cfg_min/";
    fresh_dir(dir);
    write_text(TMP "/hf_cfg_min/config.json",
               "{\"hidden_size\": 64, \"intermediate_size\": 172, \"num_hidden_layers\": 3,\n"
               " \"num_attention_heads\": 4, \"vocab_size\": 100, \"num_key_value_heads\": null,\n"
               " \"bos_token_id\": 1, \"eos_token_id\": [2, 7], \"torch_dtype\": \"bfloat16\", \"rope_scaling\": null}");
    struct llama_config c;
    cr_assert_eq(hf_read_config(&c, dir), 0, "%s", err_msg());
    cr_expect_str_eq(c.name, "hf_cfg_min");
    cr_expect_eq(c.dim, 64);
    cr_expect_eq(c.ffn_hidden, 172);
    cr_expect_eq(c.n_layers, 3);
    cr_expect_eq(c.n_heads, 4);
    cr_expect_eq(c.n_kv_heads, 4, "absent/null num_key_value_heads = num_attention_heads");
    cr_expect_eq(c.head_dim, 16, "absent head_dim = hidden / heads");
    cr_expect_eq(c.vocab_size, 100);
    cr_expect_eq(c.norm_eps, 1e-6f);
    cr_expect_eq(c.rope_theta, 10000.0f);
    cr_expect_eq(c.rope_scaling, ROPE_SCALING_NONE);
    cr_expect_eq(c.max_seq_len, 2048);
    cr_expect_eq(c.tie_embeddings, 0);
}

Test(hf, config_reads_gqa_head_dim_theta_and_rope_scaling) {
    const char *dir = TMP "/hf_cfg_full";
    fresh_dir(dir);
    write_text(TMP "/hf_cfg_full/config.json",
               "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_act\": \"silu\",\n"
               " \"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 8,\n"
               " \"num_key_value_heads\": 2, \"head_dim\": 16, \"rms_norm_eps\": 1e-05, \"rope_theta\": 500000.0,\n"
               " \"rope_scaling\": {\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,\n"
               "   \"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"},\n"
               " \"vocab_size\": 128256, \"tie_word_embeddings\": true, \"max_position_embeddings\": 4096,\n"
               " \"attention_bias\": false, \"eos_token_id\": [128001, 128008, 128009]}");
    struct llama_config c;
    cr_assert_eq(hf_read_config(&c, dir), 0, "%s", err_msg());
    cr_expect_eq(c.n_heads, 8);
    cr_expect_eq(c.n_kv_heads, 2);
    cr_expect_eq(c.head_dim, 16, "head_dim given (not hidden / heads = 8)");
    cr_expect_eq(c.norm_eps, 1e-5f);
    cr_expect_eq(c.rope_theta, 500000.0f);
    cr_expect_eq(c.rope_scaling, ROPE_SCALING_LLAMA3);
    cr_expect_eq(c.rope_factor, 8.0f);
    cr_expect_eq(c.rope_low_freq_factor, 1.0f);
    cr_expect_eq(c.rope_high_freq_factor, 4.0f);
    cr_expect_eq(c.rope_original_max_seq_len, 8192);
    cr_expect_eq(c.tie_embeddings, 1);
    cr_expect_eq(c.max_seq_len, 4096);

    // The older spelling: {"type": "linear", "factor": F}
    write_text(TMP "/hf_cfg_full/config.json",
               "{\"hidden_size\": 32, \"intermediate_size\": 64, \"num_hidden_layers\": 1, \"num_attention_heads\": 4,\n"
               " \"vocab_size\": 50, \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.5}}");
    cr_assert_eq(hf_read_config(&c, dir), 0, "%s", err_msg());
    cr_expect_eq(c.rope_scaling, ROPE_SCALING_LINEAR);
    cr_expect_eq(c.rope_factor, 2.5f);
}

Test(hf, config_errors_name_the_file_and_the_key) {
    const char *dir = TMP "/hf_cfg_bad";
    const char *path = TMP "/hf_cfg_bad/config.json";
    fresh_dir(dir);
    const char *base = "\"intermediate_size\": 64, \"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"vocab_size\": 50";
    const struct { const char *extra, *expect; } cases[] = {
        {"", "'hidden_size' is missing"},
        {"\"hidden_size\": 32.5, ", "'hidden_size' must be an integer"},
        {"\"hidden_size\": \"32\", ", "'hidden_size' must be an integer"},
        {"\"hidden_size\": 32, \"num_key_value_heads\": 3, ", "not a multiple of n_kv_heads"},
        {"\"hidden_size\": 32, \"rms_norm_eps\": -1, ", "'rms_norm_eps' must be a positive number"},
        {"\"hidden_size\": 32, \"tie_word_embeddings\": 1, ", "'tie_word_embeddings' must be true or false"},
        {"\"hidden_size\": 32, \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}, ", "rope_scaling type 'yarn'"},
        {"\"hidden_size\": 32, \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8}, ",
         "'rope_scaling.low_freq_factor' is missing"},
        {"\"hidden_size\": 32, \"model_type\": \"gpt2\", ", "model_type 'gpt2' is not supported"},
        {"\"hidden_size\": 32, \"attention_bias\": true, ", "attention_bias is true"},
        {"\"hidden_size\": 30, ", "not a multiple of num_attention_heads"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[1024];
        snprintf(text, sizeof(text), "{%s%s}", cases[i].extra, base);
        write_text(path, text);
        struct llama_config c;
        cr_expect_eq(hf_read_config(&c, dir), -1, "case %zu must fail: %s", i, text);
        cr_expect(strstr(err_msg(), path) && strstr(err_msg(), cases[i].expect),
                  "case %zu: '%s' should name %s and say '%s'", i, err_msg(), path, cases[i].expect);
    }
    write_text(path, "{\"hidden_size\": 32,");
    struct llama_config c;
    cr_expect_eq(hf_read_config(&c, dir), -1);
    cr_expect(strstr(err_msg(), "not valid JSON") && strstr(err_msg(), path), "%s", err_msg());
    unlink(path);
    cr_expect_eq(hf_read_config(&c, dir), -1);
    cr_expect(strstr(err_msg(), "cannot open") && strstr(err_msg(), path), "%s", err_msg());
}

// ---------------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------------

Test(hf, save_load_round_trip_f32_is_exact_with_gqa_shapes) {
    const char *dir = TMP "/hf_rt_f32";
    system("rm -rf " TMP "/hf_rt_f32");
    struct llama_config c = tiny(0);
    c.rope_scaling = ROPE_SCALING_LINEAR;
    c.rope_factor = 2.0f;
    struct llama a, b;
    init_model(&a, &c);
    random_params(&a, 1);
    cr_assert_eq(hf_save(&a, dir, ST_F32), 0, "%s", err_msg());

    struct llama_config c2;
    cr_assert_eq(hf_read_config(&c2, dir), 0, "%s", err_msg());
    char why[128];
    cr_expect(llama_config_same_shape(&c, &c2, why, sizeof(why)), "config.json round trip: %s", why);
    cr_expect_eq(c2.norm_eps, c.norm_eps);
    cr_expect_eq(c2.max_seq_len, c.max_seq_len);
    cr_expect_eq(c2.rope_scaling, ROPE_SCALING_LINEAR);
    cr_expect_eq(c2.rope_factor, 2.0f);

    // The file holds HF's names and shapes: q [NH*HS, C], k/v [KVH*HS, C], o [C, NH*HS], norms [C]
    struct st_file f;
    cr_assert_eq(st_open(&f, TMP "/hf_rt_f32/model.safetensors"), 0, "%s", err_msg());
    cr_expect_eq(f.n, a.layout.n);
    cr_expect_str_eq(st_metadata(&f, "format"), "pt");
    const struct st_tensor *q = st_find(&f, "model.layers.1.self_attn.q_proj.weight"),
                           *k = st_find(&f, "model.layers.1.self_attn.k_proj.weight"),
                           *o = st_find(&f, "model.layers.0.self_attn.o_proj.weight"),
                           *n = st_find(&f, "model.layers.0.input_layernorm.weight"),
                           *d = st_find(&f, "model.layers.1.mlp.down_proj.weight"),
                           *h = st_find(&f, "lm_head.weight");
    cr_assert(q && k && o && n && d && h);
    cr_expect(q->ndim == 2 && q->shape[0] == 16 && q->shape[1] == 16);
    cr_expect(k->ndim == 2 && k->shape[0] == 8 && k->shape[1] == 16);
    cr_expect(o->ndim == 2 && o->shape[0] == 16 && o->shape[1] == 16);
    cr_expect(n->ndim == 1 && n->shape[0] == 16);
    cr_expect(d->ndim == 2 && d->shape[0] == 16 && d->shape[1] == 32);
    cr_expect(h->ndim == 2 && h->shape[0] == 41 && h->shape[1] == 16);
    cr_expect_eq(h->dtype, ST_F32);
    st_close(&f);

    init_model(&b, &c2);
    struct hf_weights_info info;
    cr_assert_eq(hf_load_weights_info(&b, dir, &info), 0, "%s", err_msg());
    cr_expect_eq(info.n_tensors, a.layout.n);
    cr_expect_eq(info.n_files, 1);
    cr_expect_str_eq(info.dtype, "F32");
    float *pa = params_host(&a), *pb = params_host(&b);
    cr_expect_eq(memcmp(pa, pb, sizeof(float) * a.layout.total), 0, "F32 round trip must be bit-exact");
    free(pa);
    free(pb);
    llama_free(&a);
    llama_free(&b);
}

static void check_rounded_round_trip(enum st_dtype dt, const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    system(cmd);
    struct llama_config c = tiny(0);
    struct llama a, b;
    init_model(&a, &c);
    random_params(&a, 2);
    cr_assert_eq(hf_save(&a, dir, dt), 0, "%s", err_msg());
    struct llama_config c2;
    cr_assert_eq(hf_read_config(&c2, dir), 0, "%s", err_msg());
    init_model(&b, &c2);
    struct hf_weights_info info;
    cr_assert_eq(hf_load_weights_info(&b, dir, &info), 0, "%s", err_msg());
    cr_expect_str_eq(info.dtype, st_dtype_name(dt));
    float *pa = params_host(&a), *pb = params_host(&b);
    int bad = 0, changed = 0;
    for (size_t i = 0; i < a.layout.total; i++) {
        float want = dt == ST_BF16 ? bf16_to_f32(f32_to_bf16(pa[i])) : f16_to_f32(f32_to_f16(pa[i]));
        if (pb[i] != want) bad++;
        if (pb[i] != pa[i]) changed++;
    }
    cr_expect_eq(bad, 0, "%s: %d parameters differ from their rounded values", st_dtype_name(dt), bad);
    cr_expect_gt(changed, (int)a.layout.total / 2, "%s must actually round most values", st_dtype_name(dt));
    free(pa);
    free(pb);
    llama_free(&a);
    llama_free(&b);
}

Test(hf, save_load_round_trip_bf16_and_f16_round_each_value) {
    check_rounded_round_trip(ST_BF16, TMP "/hf_rt_bf16");
    check_rounded_round_trip(ST_F16, TMP "/hf_rt_f16");
}

Test(hf, tied_embeddings_have_no_lm_head_and_accept_an_equal_one) {
    const char *dir = TMP "/hf_tied";
    system("rm -rf " TMP "/hf_tied");
    struct llama_config c = tiny(1);
    struct llama a, b;
    init_model(&a, &c);
    random_params(&a, 3);
    cr_assert_eq(hf_save(&a, dir, ST_F32), 0, "%s", err_msg());
    struct st_file f;
    cr_assert_eq(st_open(&f, TMP "/hf_tied/model.safetensors"), 0);
    cr_expect_null(st_find(&f, "lm_head.weight"), "tied: no lm_head.weight in the file");
    st_close(&f);
    struct llama_config c2;
    cr_assert_eq(hf_read_config(&c2, dir), 0);
    cr_expect_eq(c2.tie_embeddings, 1);
    init_model(&b, &c2);
    cr_assert_eq(hf_load_weights(&b, dir), 0, "%s", err_msg());
    float *pa = params_host(&a), *pb = params_host(&b);
    cr_expect_eq(memcmp(pa, pb, sizeof(float) * a.layout.total), 0);

    // lm_head saved beside tied embeddings: fine when equal, an error when not
    struct st_write_tensor w[64];
    int n = write_list(w, &a, pa);
    const struct param_tensor *e = param_get(&a.layout, PARAM_EMBED, -1);
    w[n] = (struct st_write_tensor){"lm_head.weight", 2, {e->full_rows, e->full_cols}, pa + e->offset};
    cr_assert_eq(st_write(TMP "/hf_tied/model.safetensors", w, n + 1, ST_F32, NULL), 0);
    struct hf_weights_info info;
    cr_expect_eq(hf_load_weights_info(&b, dir, &info), 0, "%s", err_msg());
    cr_expect_eq(info.n_tensors, n + 1);
    float *other = malloc(sizeof(float) * e->numel);
    for (size_t i = 0; i < e->numel; i++) other[i] = 2 * pa[e->offset + i];
    w[n].data = other;
    cr_assert_eq(st_write(TMP "/hf_tied/model.safetensors", w, n + 1, ST_F32, NULL), 0);
    cr_expect_eq(hf_load_weights(&b, dir), -1);
    cr_expect(strstr(err_msg(), "lm_head.weight differs") && strstr(err_msg(), "model.safetensors"), "%s", err_msg());
    free(other);
    free(pa);
    free(pb);
    llama_free(&a);
    llama_free(&b);
}

// Two shards in different dtypes, an index, and an ignored rotary_emb.inv_freq.
Test(hf, sharded_checkpoint_with_index) {
    const char *dir = TMP "/hf_sharded";
    fresh_dir(dir);
    struct llama_config c = tiny(0);
    struct llama a, b;
    init_model(&a, &c);
    random_params(&a, 4);
    cr_assert_eq(hf_write_config(&c, dir, ST_BF16), 0, "%s", err_msg());
    float *pa = params_host(&a);
    struct st_write_tensor w[64];
    int n = write_list(w, &a, pa);
    // shard 1: embed_tokens and layer 0 (F16) plus inv_freq; shard 2: the rest (BF16)
    int split = 1;
    while (a.layout.t[split].layer == 0) split++;
    float inv[2] = {1.0f, 0.01f};
    struct st_write_tensor s1[64];
    memcpy(s1, w, sizeof(*w) * (size_t)split);
    s1[split] = (struct st_write_tensor){"model.layers.0.self_attn.rotary_emb.inv_freq", 1, {2}, inv};
    cr_assert_eq(st_write(TMP "/hf_sharded/model-00001-of-00002.safetensors", s1, split + 1, ST_F16, NULL), 0);
    cr_assert_eq(st_write(TMP "/hf_sharded/model-00002-of-00002.safetensors", w + split, n - split, ST_BF16,
                          "{\"format\":\"pt\"}"), 0);
    char idx[16384];
    int len = snprintf(idx, sizeof(idx), "{\"metadata\": {\"total_size\": 12345}, \"weight_map\": {\n");
    for (int i = 0; i < n; i++)
        len += snprintf(idx + len, sizeof(idx) - (size_t)len, "  \"%s\": \"model-0000%d-of-00002.safetensors\",\n",
                        w[i].name, i < split ? 1 : 2);
    len += snprintf(idx + len, sizeof(idx) - (size_t)len,
                    "  \"model.layers.0.self_attn.rotary_emb.inv_freq\": \"model-00001-of-00002.safetensors\"}}\n");
    write_text(TMP "/hf_sharded/model.safetensors.index.json", idx);

    struct llama_config c2;
    cr_assert_eq(hf_read_config(&c2, dir), 0, "%s", err_msg());
    init_model(&b, &c2);
    struct hf_weights_info info;
    cr_assert_eq(hf_load_weights_info(&b, dir, &info), 0, "%s", err_msg());
    cr_expect_eq(info.n_files, 2);
    cr_expect_eq(info.n_tensors, n + 1);
    cr_expect_str_eq(info.dtype, "F16+BF16");
    cr_expect_eq(info.n_dtype[ST_F16], split);
    cr_expect_eq(info.n_dtype[ST_BF16], n - split);
    struct hf_weights_info checked;  // the model-less check sees the same
    cr_assert_eq(hf_check_weights(&c2, dir, &checked), 0, "%s", err_msg());
    cr_expect_eq(memcmp(&checked, &info, sizeof(info)), 0, "hf_check_weights and hf_load_weights_info disagree");
    float *pb = params_host(&b);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        const struct param_tensor *t = &a.layout.t[i];
        for (size_t k = 0; k < t->numel; k++) {
            float v = pa[t->offset + k];
            float want = i < split ? f16_to_f32(f32_to_f16(v)) : bf16_to_f32(f32_to_bf16(v));
            if (pb[t->offset + k] != want) bad++;
        }
    }
    cr_expect_eq(bad, 0, "%d values differ after loading the shards", bad);

    // The index must agree with the shards: a tensor listed under the wrong shard is an error
    char *wrong = strstr(idx, "\"model.norm.weight\": \"model-00002");
    cr_assert(wrong);
    wrong[strlen("\"model.norm.weight\": \"model-0000")] = '1';
    write_text(TMP "/hf_sharded/model.safetensors.index.json", idx);
    cr_expect_eq(hf_load_weights(&b, dir), -1);
    cr_expect(strstr(err_msg(), "model.norm.weight"), "%s", err_msg());
    free(pa);
    free(pb);
    llama_free(&a);
    llama_free(&b);
}

// A tensor-parallel rank loads only its slice (vocabulary padded: V = 41 over tp = 2), and cannot save.
Test(hf, gqa_weights_load_into_a_tensor_parallel_rank) {
    const char *dir = TMP "/hf_tp";
    system("rm -rf " TMP "/hf_tp");
    struct llama_config c = tiny(0);
    struct llama a, r1;
    init_model(&a, &c);
    random_params(&a, 5);
    cr_assert_eq(hf_save(&a, dir, ST_F32), 0, "%s", err_msg());
    struct comm rank1 = *comm_self();
    rank1.rank = 1;
    rank1.size = 2;
    cr_assert_eq(llama_init(&r1, &c, backend_cpu(), &rank1), 0, "%s", err_msg());
    cr_assert_eq(hf_load_weights(&r1, dir), 0, "%s", err_msg());
    float *full = params_host(&a), *local = params_host(&r1);
    int checked = 0;
    for (int i = 0; i < r1.layout.n; i++) {
        const struct param_tensor *t = &r1.layout.t[i];
        const struct param_tensor *ft = param_find(&a.layout, t->name);
        float *want = malloc(sizeof(float) * t->numel);
        param_slice_from_full(t, want, full + ft->offset);
        cr_expect_eq(memcmp(want, local + t->offset, sizeof(float) * t->numel), 0, "%s: rank 1 slice differs", t->name);
        free(want);
        checked++;
    }
    cr_expect_eq(checked, a.layout.n);
    const struct param_tensor *k = param_get(&r1.layout, PARAM_WK, 0);
    cr_expect_eq(k->rows, 4, "k_proj: one of two kv heads (HS 4) per rank");
    cr_expect_eq(k->start, 4);
    const struct param_tensor *e = param_get(&r1.layout, PARAM_EMBED, -1);
    cr_expect(e->rows == 21 && param_valid_rows(e) == 20, "rank 1 holds vocab rows 21..40 plus one padding row");
    cr_expect_eq(hf_save(&r1, TMP "/hf_tp_save", ST_F32), -1);
    cr_expect(strstr(err_msg(), "tp = 2"), "%s", err_msg());
    free(full);
    free(local);
    llama_free(&a);
    llama_free(&r1);
}

// ---------------------------------------------------------------------------------------------------
// Loaded weights compute what Hugging Face's Llama computes
// ---------------------------------------------------------------------------------------------------

Test(hf, forward_matches_pytorch_reference) {
    const char *dir = TMP "/hf_ref";
    system("rm -rf " TMP "/hf_ref");
    // GQA, head_dim (8) != hidden / heads (4), llama3 rope scaling with one frequency in its smoothed band
    struct llama_config c = tiny(0);
    c.head_dim = 8;
    c.ffn_hidden = 24;
    c.vocab_size = 37;
    c.rope_scaling = ROPE_SCALING_LLAMA3;
    c.rope_factor = 8.0f;
    c.rope_low_freq_factor = 1.0f;
    c.rope_high_freq_factor = 4.0f;
    c.rope_original_max_seq_len = 64;
    struct llama a, b;
    init_model(&a, &c);
    random_params(&a, 6);
    cr_assert_eq(hf_save(&a, dir, ST_F32), 0, "%s", err_msg());
    struct llama_config c2;
    cr_assert_eq(hf_read_config(&c2, dir), 0, "%s", err_msg());
    init_model(&b, &c2);
    cr_assert_eq(hf_load_weights(&b, dir), 0, "%s", err_msg());

    enum { T = 10 };
    const int tok[T] = {3, 17, 0, 36, 5, 5, 22, 9, 30, 1};
    const int V = c.vocab_size;
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s %s/tests/ref/hf_llama_forward.py %s 3,17,0,36,5,5,22,9,30,1 %s/hf_ref_logits.f32 2>&1",
             LLAMAC_PYTHON, LLAMAC_SOURCE_DIR, dir, TMP);
    FILE *p = popen(cmd, "r");
    char out[4096] = "";
    size_t len = fread(out, 1, sizeof(out) - 1, p);
    out[len] = '\0';
    cr_assert_eq(pclose(p), 0, "reference failed:\n%s", out);
    float *ref = malloc(sizeof(float) * T * V), *got = malloc(sizeof(float) * T * V);
    FILE *fp = fopen(TMP "/hf_ref_logits.f32", "rb");
    cr_assert(fp);
    cr_assert_eq(fread(ref, sizeof(float), (size_t)T * V, fp), (size_t)T * V);
    fclose(fp);

    llama_alloc_acts(&b, 1, T, 0);
    long counted;
    llama_forward(&b, tok, NULL, 1, T, &counted);
    for (int t = 0; t < T; t++) llama_logits_at(&b, 0, t, got + (size_t)t * V);
    double e = rel_err(got, ref, (size_t)T * V);
    cr_expect(e < 1e-5, "logits vs PyTorch HF Llama: relative error %.3g", e);
    double spread = 0;
    for (int i = 0; i < T * V; i++) spread = fmax(spread, fabs(ref[i]));
    cr_expect_gt(spread, 0.5, "the reference logits must not be trivially small");
    free(ref);
    free(got);
    llama_free(&a);
    llama_free(&b);
}

// ---------------------------------------------------------------------------------------------------
// The CLI on good checkpoints
// ---------------------------------------------------------------------------------------------------

Test(hf, cli_inspect_and_forward_load_a_checkpoint) {
    const char *dir = TMP "/hf_cli";
    system("rm -rf " TMP "/hf_cli");
    struct llama_config c = tiny(1);
    struct llama a;
    init_model(&a, &c);
    random_params(&a, 7);
    cr_assert_eq(hf_save(&a, dir, ST_BF16), 0, "%s", err_msg());
    struct run r;
    run_llamac(&r, "inspect", "--hf", dir, NULL);
    cr_expect(r.exited && r.code == 0, "exit %d; stderr: %s", r.code, r.err);
    cr_expect_str_eq(r.err, "");
    char want[128];
    snprintf(want, sizeof(want), "weights OK (%d tensors, dtype BF16; 1 file)\n", a.layout.n);
    cr_expect(strstr(r.out, want), "stdout should contain '%s':\n%s", want, r.out);
    cr_expect(strstr(r.out, "model       hf_cli\n"), "%s", r.out);
    cr_expect(strstr(r.out, "shape       dim 16, layers 2, heads 4, kv heads 2, head dim 4, ffn hidden 32, vocab 41, tied embeddings"),
              "%s", r.out);
    char params[64];
    long long np = llama_param_count(&c);
    cr_assert(np >= 1000 && np < 1000000);
    snprintf(params, sizeof(params), "parameters  %lld,%03lld (", np / 1000, np % 1000);
    cr_expect(strstr(r.out, params), "should report %s:\n%s", params, r.out);

    run_llamac(&r, "forward", "--hf", dir, "--seq=8");
    cr_expect(r.exited && r.code == 0, "exit %d; stderr: %s", r.code, r.err);
    cr_expect(strstr(r.out, "step 3: loss "), "%s", r.out);
    float loss = 0;
    const char *s = strstr(r.out, "step 1: loss ");
    cr_assert(s);
    sscanf(s, "step 1: loss %f", &loss);
    cr_expect(isfinite(loss) && loss > 0, "loss %g", loss);

    run_llamac(&r, "inspect", "--hf", dir, "--model=tiny-1m");
    cr_expect(r.exited && r.code == 1, "--hf and --model together are a usage error");
    llama_free(&a);
}

// ---------------------------------------------------------------------------------------------------
// Bad checkpoints through the real binary
// ---------------------------------------------------------------------------------------------------

// The tensors of a tiny untied model as a safetensors header we can break: name, dtype, shape, offsets.
struct spec { char name[128]; char dtype[8]; int ndim; long long shape[2], b, e; };

static int tiny_specs(struct spec *s) {
    struct llama_config c = tiny(0);
    struct param_layout pl;
    cr_assert_eq(param_layout_init(&pl, &c, 1, 0), 0);
    for (int i = 0; i < pl.n; i++) {
        const struct param_tensor *t = &pl.t[i];
        memset(&s[i], 0, sizeof(s[i]));
        snprintf(s[i].name, sizeof(s[i].name), "%s", t->name);
        snprintf(s[i].dtype, sizeof(s[i].dtype), "F32");
        s[i].ndim = is_norm(t) ? 1 : 2;
        s[i].shape[0] = is_norm(t) ? t->full_cols : t->full_rows;
        s[i].shape[1] = t->full_cols;
    }
    int n = pl.n;
    param_layout_free(&pl);
    return n;
}

// Offsets back to back from the shapes (bytes per element: 2 for F16/BF16, 8 for F64, else 4).
static void pack(struct spec *s, int n) {
    long long off = 0;
    for (int i = 0; i < n; i++) {
        long long numel = 1;
        for (int d = 0; d < s[i].ndim; d++) numel *= s[i].shape[d];
        long long es = !strcmp(s[i].dtype, "F16") || !strcmp(s[i].dtype, "BF16") ? 2 : !strcmp(s[i].dtype, "F64") ? 8 : 4;
        s[i].b = off;
        s[i].e = off + numel * es;
        off = s[i].e;
    }
}

// A checkpoint directory with config.json (the tiny model) and a model.safetensors written byte by
// byte from the specs, followed by extra_data zero bytes beyond the last tensor.
static void write_bad_dir(const char *dir, const struct spec *s, int n, size_t extra_data) {
    fresh_dir(dir);
    struct llama_config c = tiny(0);
    cr_assert_eq(hf_write_config(&c, dir, ST_F32), 0, "%s", err_msg());
    char *h = malloc(65536);
    int len = snprintf(h, 65536, "{\"__metadata__\":{\"format\":\"pt\"}");
    long long end = 0;
    for (int i = 0; i < n; i++) {
        len += snprintf(h + len, (size_t)(65536 - len), ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", s[i].name, s[i].dtype);
        for (int d = 0; d < s[i].ndim; d++) len += snprintf(h + len, (size_t)(65536 - len), d ? ",%lld" : "%lld", s[i].shape[d]);
        len += snprintf(h + len, (size_t)(65536 - len), "],\"data_offsets\":[%lld,%lld]}", s[i].b, s[i].e);
        if (s[i].e > end) end = s[i].e;
    }
    len += snprintf(h + len, (size_t)(65536 - len), "}");
    char path[600];
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    FILE *fp = fopen(path, "wb");
    cr_assert(fp);
    uint64_t N = (uint64_t)len;
    for (int i = 0; i < 8; i++) fputc((int)((N >> (8 * i)) & 0xff), fp);
    fwrite(h, 1, (size_t)len, fp);
    for (long long i = 0; i < end + (long long)extra_data; i++) fputc(0, fp);
    fclose(fp);
    free(h);
}

#define BAD_DIR(name) TMP "/hf_bad_" name
#define BAD_FILE(name) TMP "/hf_bad_" name "/model.safetensors"

Test(hf, bad_control_case_is_valid) {  // the generator itself makes a good checkpoint
    struct spec s[64];
    int n = tiny_specs(s);
    pack(s, n);
    write_bad_dir(BAD_DIR("control"), s, n, 0);
    struct run r;
    run_llamac(&r, "inspect", "--hf", BAD_DIR("control"), NULL);
    cr_expect(r.exited && r.code == 0, "exit %d; stderr: %s", r.code, r.err);
    cr_expect(strstr(r.out, "weights OK"), "%s", r.out);
}

Test(hf, bad_truncated_file) {
    struct spec s[64];
    int n = tiny_specs(s);
    pack(s, n);
    write_bad_dir(BAD_DIR("truncated"), s, n, 0);
    struct stat st;
    cr_assert_eq(stat(BAD_FILE("truncated"), &st), 0);
    cr_assert_eq(truncate(BAD_FILE("truncated"), st.st_size - 100), 0);
    expect_inspect_fails(BAD_DIR("truncated"), BAD_FILE("truncated"), "extend past the end of the data");
}

Test(hf, bad_header_length_larger_than_the_file) {
    struct spec s[64];
    int n = tiny_specs(s);
    pack(s, n);
    write_bad_dir(BAD_DIR("hdrlen"), s, n, 0);
    struct stat st;
    cr_assert_eq(stat(BAD_FILE("hdrlen"), &st), 0);
    FILE *fp = fopen(BAD_FILE("hdrlen"), "r+b");
    uint64_t N = (uint64_t)st.st_size;  // more than the file holds after the length field
    for (int i = 0; i < 8; i++) fputc((int)((N >> (8 * i)) & 0xff), fp);
    fclose(fp);
    expect_inspect_fails(BAD_DIR("hdrlen"), BAD_FILE("hdrlen"), "larger than the rest of the file");
}

Test(hf, bad_overlapping_offsets) {
    struct spec s[64];
    int n = tiny_specs(s);
    pack(s, n);
    s[3].b -= 16;  // starts inside tensor 2
    s[3].e -= 16;
    write_bad_dir(BAD_DIR("overlap"), s, n, 0);
    expect_inspect_fails(BAD_DIR("overlap"), BAD_FILE("overlap"), "overlap");
}

Test(hf, bad_unknown_dtype) {
    struct spec s[64];
    int n = tiny_specs(s);
    snprintf(s[2].dtype, sizeof(s[2].dtype), "Q4_K");
    pack(s, n);
    write_bad_dir(BAD_DIR("dtype"), s, n, 0);
    expect_inspect_fails(BAD_DIR("dtype"), BAD_FILE("dtype"), "unknown dtype 'Q4_K'");
}

Test(hf, bad_unsupported_dtype) {
    struct spec s[64];
    int n = tiny_specs(s);
    snprintf(s[2].dtype, sizeof(s[2].dtype), "F64");
    pack(s, n);
    write_bad_dir(BAD_DIR("f64"), s, n, 0);
    expect_inspect_fails(BAD_DIR("f64"), BAD_FILE("f64"), "dtype F64");
}

Test(hf, bad_shape_not_matching_config) {
    struct spec s[64];
    int n = tiny_specs(s);
    for (int i = 0; i < n; i++)
        if (!strcmp(s[i].name, "model.layers.1.self_attn.k_proj.weight")) s[i].shape[0] = 16;  // MHA-sized, config says GQA
    pack(s, n);
    write_bad_dir(BAD_DIR("shape"), s, n, 0);
    expect_inspect_fails(BAD_DIR("shape"), BAD_FILE("shape"),
                         "tensor 'model.layers.1.self_attn.k_proj.weight' has shape [16, 16] but config.json implies [8, 16]");
}

Test(hf, bad_offsets_not_covering_the_data) {
    struct spec s[64];
    int n = tiny_specs(s);
    pack(s, n);
    write_bad_dir(BAD_DIR("cover"), s, n, 64);
    expect_inspect_fails(BAD_DIR("cover"), BAD_FILE("cover"), "cover the data exactly");
}

Test(hf, bad_gap_between_tensors) {
    struct spec s[64];
    int n = tiny_specs(s);
    pack(s, n);
    for (int i = 5; i < n; i++) {
        s[i].b += 8;
        s[i].e += 8;
    }
    write_bad_dir(BAD_DIR("gap"), s, n, 0);
    expect_inspect_fails(BAD_DIR("gap"), BAD_FILE("gap"), "belong to no tensor");
}

Test(hf, bad_duplicate_name) {
    struct spec s[64];
    int n = tiny_specs(s);
    snprintf(s[6].name, sizeof(s[6].name), "%s", s[5].name);
    pack(s, n);
    write_bad_dir(BAD_DIR("dup"), s, n, 0);
    char want[200];
    snprintf(want, sizeof(want), "duplicate tensor name '%s'", s[5].name);
    expect_inspect_fails(BAD_DIR("dup"), BAD_FILE("dup"), want);
}

Test(hf, bad_malformed_json) {
    fresh_dir(BAD_DIR("json"));
    struct llama_config c = tiny(0);
    cr_assert_eq(hf_write_config(&c, BAD_DIR("json"), ST_F32), 0);
    const char *h = "{\"model.norm.weight\": {\"dtype\": \"F32\", \"shape\": [16], \"data_offsets\": [0, 64]   ";
    FILE *fp = fopen(BAD_FILE("json"), "wb");
    uint64_t N = strlen(h);
    for (int i = 0; i < 8; i++) fputc((int)((N >> (8 * i)) & 0xff), fp);
    fputs(h, fp);
    for (int i = 0; i < 64; i++) fputc(0, fp);
    fclose(fp);
    expect_inspect_fails(BAD_DIR("json"), BAD_FILE("json"), "not valid JSON");
}

Test(hf, bad_missing_and_unexpected_tensors) {
    struct spec s[64];
    int n = tiny_specs(s);
    pack(s, n);
    write_bad_dir(BAD_DIR("missing"), s, n - 1, 0);  // the last tensor, lm_head.weight, left out
    expect_inspect_fails(BAD_DIR("missing"), BAD_FILE("missing"), "tensor 'lm_head.weight' is missing");

    snprintf(s[n].name, sizeof(s[n].name), "model.layers.2.mlp.up_proj.weight");  // a third layer
    snprintf(s[n].dtype, sizeof(s[n].dtype), "F32");
    s[n].ndim = 2;
    s[n].shape[0] = 32;
    s[n].shape[1] = 16;
    pack(s, n + 1);
    write_bad_dir(BAD_DIR("extra"), s, n + 1, 0);
    expect_inspect_fails(BAD_DIR("extra"), BAD_FILE("extra"), "unexpected tensor 'model.layers.2.mlp.up_proj.weight'");
}

Test(hf, bad_config_json) {
    struct spec s[64];
    int n = tiny_specs(s);
    pack(s, n);
    write_bad_dir(BAD_DIR("config"), s, n, 0);
    write_text(BAD_DIR("config") "/config.json", "{\"hidden_size\": 16, \"intermediate_size\": 32, \"num_hidden_layers\": 2,"
                                                  " \"vocab_size\": 41}");
    expect_inspect_fails(BAD_DIR("config"), BAD_DIR("config") "/config.json", "'num_attention_heads' is missing");
    write_text(BAD_DIR("config") "/config.json", "{\"hidden_size\": 16,");
    expect_inspect_fails(BAD_DIR("config"), BAD_DIR("config") "/config.json", "not valid JSON");
    fresh_dir(BAD_DIR("empty"));
    expect_inspect_fails(BAD_DIR("empty"), BAD_DIR("empty") "/config.json", "cannot open");
}

Test(hf, bad_no_weights_in_the_directory) {
    fresh_dir(BAD_DIR("noweights"));
    struct llama_config c = tiny(0);
    cr_assert_eq(hf_write_config(&c, BAD_DIR("noweights"), ST_F32), 0);
    expect_inspect_fails(BAD_DIR("noweights"), BAD_DIR("noweights"), "no model.safetensors or model.safetensors.index.json");
}

// A sharded checkpoint whose index names `shard` for one tensor; the real shards are valid, and so is a
// file at ../hf_outside.safetensors, so only the name rule can refuse it.
static void write_escaping_index(const char *dir, const char *shard) {
    fresh_dir(dir);
    struct llama_config c = tiny(0);
    struct llama a;
    init_model(&a, &c);
    random_params(&a, 8);
    cr_assert_eq(hf_write_config(&c, dir, ST_BF16), 0);
    float *pa = params_host(&a);
    struct st_write_tensor w[64];
    int n = write_list(w, &a, pa);
    char path[600];
    snprintf(path, sizeof(path), "%s/model-00001-of-00002.safetensors", dir);
    cr_assert_eq(st_write(path, w, n - 1, ST_BF16, NULL), 0);
    cr_assert_eq(st_write(TMP "/hf_outside.safetensors", w + n - 1, 1, ST_BF16, NULL), 0);
    char idx[16384];
    int len = snprintf(idx, sizeof(idx), "{\"metadata\": {}, \"weight_map\": {");
    for (int i = 0; i < n; i++)
        len += snprintf(idx + len, sizeof(idx) - (size_t)len, "%s\"%s\": \"%s\"", i ? ", " : "", w[i].name,
                        i < n - 1 ? "model-00001-of-00002.safetensors" : shard);
    snprintf(idx + len, sizeof(idx) - (size_t)len, "}}");
    snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
    write_text(path, idx);
    free(pa);
    llama_free(&a);
}

Test(hf, bad_shard_name_escaping_the_directory) {
    write_escaping_index(BAD_DIR("escape1"), "../hf_outside.safetensors");
    expect_inspect_fails(BAD_DIR("escape1"), BAD_DIR("escape1") "/model.safetensors.index.json",
                         "shard file name '../hf_outside.safetensors' (for tensor 'lm_head.weight') is not a plain file name");
    write_escaping_index(BAD_DIR("escape2"), "/etc/passwd");
    expect_inspect_fails(BAD_DIR("escape2"), BAD_DIR("escape2") "/model.safetensors.index.json",
                         "shard file name '/etc/passwd'");
    write_escaping_index(BAD_DIR("escape3"), TMP "/hf_outside.safetensors");  // absolute, and a real shard
    expect_inspect_fails(BAD_DIR("escape3"), BAD_DIR("escape3") "/model.safetensors.index.json", "not a plain file name");
    write_escaping_index(BAD_DIR("escape4"), "..");
    expect_inspect_fails(BAD_DIR("escape4"), BAD_DIR("escape4") "/model.safetensors.index.json", "not a plain file name");
    // the control: the same checkpoint with the shard inside the directory loads
    write_escaping_index(BAD_DIR("escape5"), "model-00002-of-00002.safetensors");
    cr_assert_eq(system("cp " TMP "/hf_outside.safetensors " BAD_DIR("escape5") "/model-00002-of-00002.safetensors"), 0);
    struct run r;
    run_llamac(&r, "inspect", "--hf", BAD_DIR("escape5"), NULL);
    cr_expect(r.exited && r.code == 0, "exit %d; stderr: %s", r.code, r.err);
    cr_expect(strstr(r.out, "dtype BF16; 2 files)"), "%s", r.out);
}
