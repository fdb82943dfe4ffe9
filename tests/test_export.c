// `llamac export` and released weights in use (cli/export.c, model/hf.c): an exported directory loads
// back through llamac's Hugging Face reader with identical logits, one file or sharded above
// --max-shard-size; its config.json, generation_config.json, tokenizer_config.json and
// special_tokens_map.json carry the fields a Hugging Face loader reads; `sample --hf` and `eval --hf`
// run on it (greedy text equal to the checkpoint's); `init = hf:DIR` refuses data made with another
// tokenizer in one line naming both hashes. Runs on the train_data fixture.
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "core/comm.h"
#include "core/error.h"
#include "data/sha256.h"
#include "launch/grid.h"
#include "model/hf.h"
#include "model/ops/backends.h"
#include "train/sample.h"
#include "llamac_run.h"

#define TMP LLAMAC_TEST_TMP "/export"
#define DATA LLAMAC_TEST_TMP "/train_data/data"
#define OTHER LLAMAC_TEST_TMP "/train_data/data_other_tokenizer"
#define INI LLAMAC_TEST_SOURCE_DIR "/tests/configs/tiny_run.ini"

static void run(struct result *r, const char *args) { llamac_run_in(r, TMP, "", args); }

static void trained(void) {
    struct stat st;
    if (stat(TMP "/run/ckpt/latest", &st) == 0) return;
    static struct result r;
    run(&r, "train " INI " --set data.dir=" DATA " --set run.run_dir=" TMP "/run --set train.steps=4");
    cr_assert_eq(r.status, 0, "%s", r.err);
}

static void export_to(const char *dir, const char *extra) {
    static struct result r;
    char args[1024];
    snprintf(args, sizeof(args), "export --ckpt %s/run --out %s --dtype f32 %s", TMP, dir, extra);
    system("rm -rf " TMP "/hf " TMP "/hf_sharded");
    run(&r, args);
    cr_assert_eq(r.status, 0, "%s", r.err);
}

// Logits of a fixed token sequence through the checkpoint and through the directory: equal bit for bit
// (the export is f32).
static void expect_same_logits(const char *dir) {
    struct llama a = {0}, b = {0};
    struct grid g;  // checkpoints are read with MPI-IO (train/ckpt.h): one rank, as llamac sample does
    cr_assert_eq(grid_init(&g, NULL, NULL, 1), 0, "%s", err_msg());
    cr_assert_eq(ckpt_open_model(&a, TMP "/run", NULL, NULL), 0, "%s", err_msg());
    struct llama_config c;
    cr_assert_eq(hf_read_config(&c, dir), 0, "%s", err_msg());
    cr_assert_eq(llama_init(&b, &c, backend_cpu(), comm_self()), 0, "%s", err_msg());
    cr_assert_eq(hf_load_weights(&b, dir), 0, "%s", err_msg());
    enum { T = 24 };
    int tok[T];
    for (int i = 0; i < T; i++) tok[i] = (i * 37 + 5) % c.vocab_size;
    llama_alloc_acts(&a, 1, T, 0);
    llama_alloc_acts(&b, 1, T, 0);
    llama_forward(&a, tok, NULL, 1, T, NULL);
    llama_forward(&b, tok, NULL, 1, T, NULL);
    float *la = malloc(sizeof(float) * c.vocab_size), *lb = malloc(sizeof(float) * c.vocab_size);
    int differ = 0;
    for (int t = 0; t < T; t++) {
        llama_logits_at(&a, 0, t, la);
        llama_logits_at(&b, 0, t, lb);
        differ += memcmp(la, lb, sizeof(float) * c.vocab_size) != 0;
    }
    cr_expect_eq(differ, 0, "%s: %d of %d positions have logits unlike the checkpoint's", dir, differ, T);
    free(la), free(lb);
    llama_free(&a);
    llama_free(&b);
    grid_finalize(&g);
}

static cJSON *json(const char *path) {
    cJSON *j = hf_json_read(path);
    cr_assert(j, "%s", err_msg());
    return j;
}

static void expect_num(const cJSON *j, const char *key, double want, const char *file) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    cr_expect(cJSON_IsNumber(v) && v->valuedouble == want, "%s: %s should be %g", file, key, want);
}

static void expect_str(const cJSON *j, const char *key, const char *want, const char *file) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    cr_expect(cJSON_IsString(v) && !strcmp(v->valuestring, want), "%s: %s should be \"%s\"", file, key, want);
}

Test(export, loads_back_with_identical_logits_and_every_field, .timeout = 300) {
    trained();
    export_to(TMP "/hf", "");
    expect_same_logits(TMP "/hf");
    struct stat st;
    cr_expect(stat(TMP "/hf/model.safetensors", &st) == 0 && stat(TMP "/hf/model.safetensors.index.json", &st) != 0,
              "below the default 5GB limit: one file, no index");

    cJSON *c = json(TMP "/hf/config.json");
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(c, "architectures");
    cr_expect(cJSON_IsArray(arch) && cJSON_GetArraySize(arch) == 1 &&
              !strcmp(cJSON_GetArrayItem(arch, 0)->valuestring, "LlamaForCausalLM"));
    expect_str(c, "model_type", "llama", "config.json");
    expect_str(c, "torch_dtype", "float32", "config.json");
    expect_str(c, "hidden_act", "silu", "config.json");
    // tiny_run.ini: dim 64, 2 layers, 4 heads, 2 kv heads, vocab 512, max_seq_len 64; the 512-piece
    // SentencePiece model of the fixture has bos 1, eos 2
    expect_num(c, "hidden_size", 64, "config.json");
    expect_num(c, "num_hidden_layers", 2, "config.json");
    expect_num(c, "num_attention_heads", 4, "config.json");
    expect_num(c, "num_key_value_heads", 2, "config.json");
    expect_num(c, "head_dim", 16, "config.json");
    expect_num(c, "vocab_size", 512, "config.json");
    expect_num(c, "max_position_embeddings", 64, "config.json");
    expect_num(c, "rope_theta", 10000, "config.json");
    expect_num(c, "bos_token_id", 1, "config.json");
    expect_num(c, "eos_token_id", 2, "config.json");
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(c, "rms_norm_eps");
    cr_expect(cJSON_IsNumber(eps) && fabs(eps->valuedouble - 1e-5) < 1e-12);
    cr_expect(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(c, "tie_word_embeddings")));
    cr_expect(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(c, "rope_scaling")), "rope_scaling null when unset");
    cJSON_Delete(c);

    cJSON *g = json(TMP "/hf/generation_config.json");
    expect_num(g, "bos_token_id", 1, "generation_config.json");
    expect_num(g, "eos_token_id", 2, "generation_config.json");
    expect_num(g, "max_length", 64, "generation_config.json");
    cJSON_Delete(g);

    cJSON *t = json(TMP "/hf/tokenizer_config.json");
    expect_str(t, "tokenizer_class", "LlamaTokenizer", "tokenizer_config.json");
    expect_str(t, "bos_token", "<s>", "tokenizer_config.json");
    expect_str(t, "eos_token", "</s>", "tokenizer_config.json");
    expect_str(t, "unk_token", "<unk>", "tokenizer_config.json");
    expect_num(t, "model_max_length", 64, "tokenizer_config.json");
    const cJSON *tmpl = cJSON_GetObjectItemCaseSensitive(t, "chat_template");
    cr_expect(cJSON_IsString(tmpl) && strstr(tmpl->valuestring, "[INST] ") && strstr(tmpl->valuestring, "<<SYS>>"),
              "the Llama 2 chat template");
    cJSON_Delete(t);
    cJSON *s = json(TMP "/hf/special_tokens_map.json");
    expect_str(s, "bos_token", "<s>", "special_tokens_map.json");
    expect_str(s, "eos_token", "</s>", "special_tokens_map.json");
    cJSON_Delete(s);

    char a[65], b[65];
    cr_assert_eq(sha256_file_hex(a, TMP "/hf/tokenizer.model"), 0);
    cr_assert_eq(sha256_file_hex(b, TMP "/run/tokenizer.model"), 0);
    cr_expect_str_eq(a, b, "the run's tokenizer.model is exported as is");
}

Test(export, sharded_above_the_limit, .timeout = 300) {
    trained();
    export_to(TMP "/hf_sharded", "--max-shard-size 100KB");
    expect_same_logits(TMP "/hf_sharded");
    struct stat st;
    cr_expect(stat(TMP "/hf_sharded/model.safetensors", &st) != 0, "no single file beside the shards");
    cJSON *ix = json(TMP "/hf_sharded/model.safetensors.index.json");
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(ix, "weight_map");
    const cJSON *total = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(ix, "metadata"), "total_size");
    cr_assert(cJSON_IsObject(wm) && cJSON_IsNumber(total));
    // tiny_run.ini's parameters in f32: the 512 x 64 embedding and lm_head, 2 layers of attention and MLP
    cr_expect_eq(cJSON_GetArraySize(wm), 2 + 2 * 9 + 1, "every tensor in the weight map");
    // every shard named in the map exists; shards hold <= 100 kB of data unless one tensor is larger
    int files = 0;
    double data = 0;
    DIR *d = opendir(TMP "/hf_sharded");
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "model-", 6) != 0) continue;
        files++;
        char path[1200];
        snprintf(path, sizeof(path), "%s/%s", TMP "/hf_sharded", e->d_name);
        struct st_file f;
        cr_assert_eq(st_open(&f, path), 0, "%s", err_msg());
        double bytes = 0;
        for (int i = 0; i < f.n; i++) bytes += (double)(f.t[i].end - f.t[i].begin);
        cr_expect(bytes <= 100000 || f.n == 1, "%s: %g bytes in %d tensors, over the limit", e->d_name, bytes, f.n);
        data += bytes;
        st_close(&f);
        cr_expect(strstr(e->d_name, "-of-00006.safetensors") != NULL, "%s", e->d_name);
    }
    closedir(d);
    cr_expect_eq(files, 6, "%d shards", files);
    cr_expect_eq(data, total->valuedouble, "metadata.total_size %g, the shards hold %g", total->valuedouble, data);
    cJSON_Delete(ix);
    static struct result r;
    run(&r, "export --ckpt " TMP "/run --out " TMP "/hf_sharded --max-shard-size 5XB");
    cr_expect(r.status != 0 && r.err_lines == 1 && strstr(r.err, "--max-shard-size 5XB"), "%s", r.err);
}

Test(export, sample_and_eval_read_the_directory, .timeout = 300) {
    trained();
    export_to(TMP "/hf", "");
    static struct result a, b;
    run(&a, "sample --ckpt " TMP "/run --prompt 'Der Weg' --temperature 0 --max-tokens 24");
    run(&b, "sample --hf " TMP "/hf --prompt 'Der Weg' --temperature 0 --max-tokens 24");
    cr_assert(a.status == 0 && b.status == 0, "%s%s", a.err, b.err);
    cr_expect_str_eq(a.out, b.out, "greedy text of the checkpoint and of its export");
    run(&b, "eval --hf " TMP "/hf --data " DATA " --batch 4 --seq 32 --batches 2");
    cr_expect(b.status == 0 && strstr(b.out, "val loss"), "%s", b.err);
    run(&b, "eval --hf " TMP "/hf --data " OTHER " --batch 4 --seq 32 --batches 2");
    cr_expect(b.status != 0 && b.err_lines == 1 && strstr(b.err, "tokenizer"), "%s", b.err);
}

Test(export, init_hf_refuses_data_made_with_another_tokenizer, .timeout = 300) {
    trained();
    export_to(TMP "/hf", "");
    static struct result r;
    system("rm -rf " TMP "/ft");
    run(&r, "train " INI " --set data.dir=" OTHER " --set run.run_dir=" TMP "/ft --set train.steps=2 "
            "--set model.vocab_size=512 --set model.init=hf:" TMP "/hf");
    char dir_sha[65], data_sha[65];
    cr_assert_eq(sha256_file_hex(dir_sha, TMP "/hf/tokenizer.model"), 0);
    cr_assert_eq(sha256_file_hex(data_sha, OTHER "/tokenizer.model"), 0);
    cr_expect(r.status != 0 && r.err_lines == 1, "one line, non-zero exit (%d):\n%s", r.status, r.err);
    cr_expect(strstr(r.err, dir_sha) && strstr(r.err, data_sha), "the line names both hashes (%s, %s): %s", dir_sha,
              data_sha, r.err);
    // the same data as the directory's tokenizer is accepted
    system("rm -rf " TMP "/ft");
    run(&r, "train " INI " --set data.dir=" DATA " --set run.run_dir=" TMP "/ft --set train.steps=2 "
            "--set model.init=hf:" TMP "/hf");
    cr_expect(r.status == 0 && strstr(r.out, "initialised from Hugging Face weights"), "%s", r.err);
}
