// Meta's original checkpoints (params.json + consolidated.NN.pth written by torch.save, two model-
// parallel shards; tests/ref/meta_ckpt.py): the config, the model's logits and loss equal to those of
// the same weights as a Hugging Face directory bit for bit and to Meta's own forward in PyTorch, the
// real `llamac inspect --meta` on good and bad checkpoints (a pickle calling os.system is refused
// naming the global, without running it), `model.init = meta:DIR`, and 200 seeded mutations of a
// shard: no crash, and one stderr line for each rejected file.
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

#include "core/comm.h"
#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "model/hf.h"
#include "model/llama.h"
#include "model/meta.h"
#include "model/ops/backends.h"
#include "testutil.h"
#include "train/run_config.h"

#define TMP LLAMAC_TEST_TMP
#define REF TMP "/meta_ref"

extern char **environ;

struct run { int exited, code, signaled, sig; char out[8192], err[8192]; };

static void slurp(const char *path, char *buf, size_t n) {
    FILE *fp = fopen(path, "rb");
    size_t len = fp ? fread(buf, 1, n - 1, fp) : 0;
    buf[len] = '\0';
    if (fp) fclose(fp);
}

static void run_llamac(struct run *r, const char *a1, const char *a2, const char *a3) {
    const char *outp = TMP "/meta_run.out", *errp = TMP "/meta_run.err";
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, outp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, errp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    char *argv[] = {(char *)LLAMAC_BINARY, (char *)a1, (char *)a2, (char *)a3, NULL};
    pid_t pid;
    cr_assert_eq(posix_spawn(&pid, LLAMAC_BINARY, &fa, NULL, argv, environ), 0);
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

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

// Logits (T x V) and the summed loss of a model loaded from DIR (Meta or HF) on the case's tokens.
static double logits_of(float *out, const char *dir, int meta, const int *tok, int T) {
    struct llama_config c;
    cr_assert_eq(meta ? meta_read_config(&c, dir) : hf_read_config(&c, dir), 0, "%s", err_msg());
    struct llama m;
    cr_assert_eq(llama_init(&m, &c, backend_cpu(), comm_self()), 0, "%s", err_msg());
    cr_assert_eq(meta ? meta_load_weights(&m, dir) : hf_load_weights(&m, dir), 0, "%s", err_msg());
    llama_alloc_acts(&m, 1, T, 0);
    int tgt[64];
    for (int t = 0; t < T; t++) tgt[t] = t + 1 < T ? tok[t + 1] : -1;
    long n;
    double loss = llama_forward(&m, tok, tgt, 1, T, &n);
    for (int t = 0; t < T; t++) llama_logits_at(&m, 0, t, out + (size_t)t * c.vocab_size);
    llama_free(&m);
    return loss;
}

static void compare_case(const char *name) {
    char dir[512], path[600];
    snprintf(path, sizeof(path), REF "/%s/tokens.txt", name);
    FILE *fp = fopen(path, "r");
    cr_assert(fp, "missing %s (ref_meta_gen fixture)", path);
    int T, V, tok[64];
    cr_assert_eq(fscanf(fp, "%d %d", &T, &V), 2);
    cr_assert(T > 0 && T <= 64);
    for (int t = 0; t < T; t++) cr_assert_eq(fscanf(fp, "%d", &tok[t]), 1);
    fclose(fp);
    float *a = malloc(sizeof(float) * T * V), *b = malloc(sizeof(float) * T * V), *ref = malloc(sizeof(float) * T * V);
    snprintf(dir, sizeof(dir), REF "/%s/meta", name);
    double la = logits_of(a, dir, 1, tok, T);
    snprintf(dir, sizeof(dir), REF "/%s/hf", name);
    double lb = logits_of(b, dir, 0, tok, T);
    cr_expect(memcmp(a, b, sizeof(float) * T * V) == 0, "%s: logits from the Meta directory differ from the HF directory's", name);
    cr_expect(la == lb, "%s: loss %.17g (Meta) vs %.17g (HF)", name, la, lb);
    snprintf(path, sizeof(path), REF "/%s/logits.f32", name);
    fp = fopen(path, "rb");
    cr_assert(fp);
    cr_assert_eq(fread(ref, sizeof(float), (size_t)T * V, fp), (size_t)T * V);
    fclose(fp);
    double e = rel_err(a, ref, (size_t)T * V);
    cr_expect(e < 1e-5, "%s: logits vs Meta's forward in PyTorch: relative error %.3g", name, e);
    double spread = 0;
    for (int i = 0; i < T * V; i++) spread = fmax(spread, fabs(ref[i]));
    cr_expect_gt(spread, 0.5, "the reference logits must not be trivially small");
    printf("meta %s: logits rel err vs PyTorch %.3g, loss %.9f (identical to HF)\n", name, e, la / (T - 1));
    free(a);
    free(b);
    free(ref);
}

Test(meta, config_from_params_json_and_shapes) {
    struct llama_config c;
    cr_assert_eq(meta_read_config(&c, REF "/l2/meta"), 0, "%s", err_msg());
    cr_expect_eq(c.dim, 64);
    cr_expect_eq(c.n_layers, 2);
    cr_expect_eq(c.n_heads, 4);
    cr_expect_eq(c.n_kv_heads, 2);
    cr_expect_eq(c.head_dim, 16);
    cr_expect_eq(c.ffn_hidden, 224, "int(2*4*64/3) = 170, x1.3 = 221, up to a multiple of 32 = 224");
    cr_expect_eq(c.vocab_size, 70, "vocab_size -1: from output.weight's shards");
    cr_expect_eq(c.norm_eps, 1e-5f);
    cr_expect_eq(c.rope_theta, 10000.0f);
    cr_expect_eq(c.tie_embeddings, 0);
    cr_expect_str_eq(c.name, "meta");
    cr_assert_eq(meta_read_config(&c, REF "/l3/meta"), 0, "%s", err_msg());
    cr_expect_eq(c.rope_theta, 500000.0f);
    cr_expect_eq(c.vocab_size, 70);
    cr_expect_eq(c.rope_scaling, ROPE_SCALING_NONE);

    // Llama 3.1's use_scaled_rope: llama3 RoPE scaling with Meta's constants; bad keys name the file
    const char *dir = TMP "/meta_cfg";
    cr_assert_eq(system("rm -rf " TMP "/meta_cfg && cp -r " REF "/l3/meta " TMP "/meta_cfg"), 0);
    FILE *fp = fopen(TMP "/meta_cfg/params.json", "w");
    fputs("{\"dim\": 64, \"n_layers\": 2, \"n_heads\": 4, \"n_kv_heads\": 2, \"vocab_size\": 70, \"multiple_of\": 32,\n"
          " \"ffn_dim_multiplier\": 1.3, \"norm_eps\": 1e-05, \"rope_theta\": 500000.0, \"use_scaled_rope\": true}", fp);
    fclose(fp);
    cr_assert_eq(meta_read_config(&c, dir), 0, "%s", err_msg());
    cr_expect_eq(c.rope_scaling, ROPE_SCALING_LLAMA3);
    cr_expect_eq(c.rope_factor, 8.0f);
    cr_expect_eq(c.rope_low_freq_factor, 1.0f);
    cr_expect_eq(c.rope_high_freq_factor, 4.0f);
    cr_expect_eq(c.rope_original_max_seq_len, 8192);
    const struct { const char *json, *expect; } bad[] = {
        {"{\"n_layers\": 2, \"n_heads\": 4}", "key 'dim' is missing"},
        {"{\"dim\": 64, \"n_layers\": 2, \"n_heads\": 4, \"multiple_of\": 2.5}", "'multiple_of' must be an integer"},
        {"{\"dim\": 64, \"n_layers\": 2, \"n_heads\": 5}", "not a multiple of n_heads"},
        {"{\"dim\": 64, \"n_layers\": 2, \"n_heads\": 4, \"use_scaled_rope\": 1}", "'use_scaled_rope' must be true or false"},
        {"{\"dim\": 64,", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fp = fopen(TMP "/meta_cfg/params.json", "w");
        fputs(bad[i].json, fp);
        fclose(fp);
        cr_expect_eq(meta_read_config(&c, dir), -1, "case %zu must fail", i);
        cr_expect(strstr(err_msg(), "meta_cfg/params.json") && strstr(err_msg(), bad[i].expect), "case %zu: %s", i, err_msg());
    }
}

Test(meta, llama2_layout_f32_equals_hf_and_pytorch) { compare_case("l2"); }
Test(meta, llama3_layout_bf16_equals_hf_and_pytorch) { compare_case("l3"); }

Test(meta, deflated_and_zip64_entries_load_the_same_weights) {  // zipfile's method 8; zip64 extras
    int tok[4] = {1, 2, 3, 4};
    float *a = malloc(sizeof(float) * 4 * 70), *b = malloc(sizeof(float) * 4 * 70);
    logits_of(a, REF "/l2/meta", 1, tok, 4);
    logits_of(b, REF "/l2_deflated", 1, tok, 4);
    cr_expect(memcmp(a, b, sizeof(float) * 4 * 70) == 0);
    logits_of(b, REF "/l2_zip64", 1, tok, 4);  // local header offsets in zip64 extra fields
    cr_expect(memcmp(a, b, sizeof(float) * 4 * 70) == 0);
    free(a);
    free(b);
}

Test(meta, cli_inspect_reads_every_weight) {
    struct run r;
    run_llamac(&r, "inspect", "--meta", REF "/l2/meta");
    cr_expect(r.exited && r.code == 0, "exit %d; stderr: %s", r.code, r.err);
    cr_expect_str_eq(r.err, "");
    cr_expect(strstr(r.out, "weights OK (44 tensors, dtype F32; 2 files)\n"), "%s", r.out);
    cr_expect(strstr(r.out, "shape       dim 64, layers 2, heads 4, kv heads 2, head dim 16, ffn hidden 224, vocab 70\n"), "%s", r.out);
    run_llamac(&r, "inspect", "--meta", REF "/l3/meta");
    cr_expect(r.exited && r.code == 0, "exit %d; stderr: %s", r.code, r.err);
    cr_expect(strstr(r.out, "weights OK (42 tensors, dtype BF16; 2 files)\n"), "%s", r.out);
    run_llamac(&r, "forward", "--meta", REF "/l3/meta");
    cr_expect(r.exited && r.code == 0, "exit %d; stderr: %s", r.code, r.err);
    cr_expect(strstr(r.out, "step 3: loss "), "%s", r.out);
}

static void expect_fails(const char *dir, const char *file, const char *problem) {
    struct run r;
    run_llamac(&r, "inspect", "--meta", dir);
    cr_expect(!r.signaled, "%s: killed by signal %d; stderr: %s", dir, r.sig, r.err);
    cr_expect(r.exited && r.code == 1, "%s: exit %d, expected 1; stderr: %s", dir, r.code, r.err);
    cr_expect_eq(count_lines(r.err), 1, "%s: stderr must be one line:\n%s", dir, r.err);
    cr_expect(strstr(r.err, file), "%s: stderr must name %s: %s", dir, file, r.err);
    cr_expect(strstr(r.err, problem), "%s: stderr must say '%s': %s", dir, problem, r.err);
}

Test(meta, pickle_calling_os_system_is_refused_not_run) {
    unlink(REF "/evil/PWNED");
    expect_fails(REF "/evil", "evil/consolidated.00.pth", "pickle global 'os.system' is not allowed");
    cr_expect(access(REF "/evil/PWNED", F_OK) != 0, "the pickle's command ran");
}

Test(meta, bad_checkpoints_give_one_line) {
    expect_fails(REF "/bad_noncontig", "bad_noncontig/consolidated.00.pth", "'layers.0.attention.wq.weight' is not contiguous");
    expect_fails(REF "/bad_double", "bad_double/consolidated.01.pth", "torch.DoubleStorage, which llamac does not read");
    expect_fails(REF "/bad_norm_differs", "bad_norm_differs/consolidated.01.pth", "replicated norm must be equal");
    expect_fails(REF "/bad_missing", "bad_missing/consolidated.01.pth", "'output.weight' is missing");
    expect_fails(REF "/bad_extra", "bad_extra/consolidated.00.pth", "unexpected tensor 'layers.0.attention.bias'");
    expect_fails(REF "/bad_wrong_shape", "bad_wrong_shape/consolidated.00.pth", "add up to 212 along dimension 0");
    expect_fails(TMP "/meta_no_such_dir", "meta_no_such_dir/params.json", "cannot open");
}

Test(meta, run_config_init_meta) {
    struct cfg c;
    cfg_init(&c);
    cr_assert_eq(cfg_load_string(&c, "[model]\ninit = meta:" REF "/l2/meta\n[data]\ndir = " TMP "\n[train]\nsteps = 1\nseq_len = 8\n",
                                 "t.ini"), 0, "%s", err_msg());
    struct run_config rc;
    cr_assert_eq(run_config_read(&rc, &c, "t.ini", 1), 0, "%s", err_msg());
    cr_expect_str_eq(rc.init_meta, REF "/l2/meta");
    cr_expect_eq(rc.model.ffn_hidden, 224);
    cr_expect_eq(rc.model.vocab_size, 70);
    cfg_free(&c);
}

// 200 seeded mutations of consolidated.00.pth: byte flips, truncations, inserted bytes. The real binary
// must never crash (exit < 128, no signal); every rejected file gives exactly one stderr line; a file
// that is accepted (a changed byte nothing depends on) gives none.
Test(meta, mutated_shards_never_crash, .timeout = 600) {
    const char *dir = TMP "/meta_mut";
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && cp -r '%s' '%s'", dir, REF "/l2/meta", dir);
    cr_assert_eq(system(cmd), 0);
    FILE *fp = fopen(REF "/l2/meta/consolidated.00.pth", "rb");
    cr_assert(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *orig = malloc((size_t)n), *buf = malloc((size_t)n + 64);
    cr_assert_eq(fread(orig, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    struct rng r;
    rng_seed(&r, 12345);
    int crashes = 0, rejected = 0, accepted = 0, bad_lines = 0;
    for (int k = 0; k < 200; k++) {
        long len = n;
        memcpy(buf, orig, (size_t)n);
        int kind = k % 3;
        if (kind == 0) {  // flip 1..4 bytes
            int nf = 1 + (int)(rng_u64(&r) % 4);
            for (int i = 0; i < nf; i++) buf[rng_u64(&r) % (uint64_t)n] ^= (unsigned char)(1 + rng_u64(&r) % 255);
        } else if (kind == 1) {  // truncate
            len = (long)(rng_u64(&r) % (uint64_t)n);
        } else {  // insert 1..16 random bytes
            long at = (long)(rng_u64(&r) % (uint64_t)n);
            int ni = 1 + (int)(rng_u64(&r) % 16);
            memmove(buf + at + ni, orig + at, (size_t)(n - at));
            for (int i = 0; i < ni; i++) buf[at + i] = (unsigned char)rng_u64(&r);
            len = n + ni;
        }
        char path[600];
        snprintf(path, sizeof(path), "%s/consolidated.00.pth", dir);
        fp = fopen(path, "wb");
        cr_assert(fp);
        fwrite(buf, 1, (size_t)len, fp);
        fclose(fp);
        struct run rr;
        run_llamac(&rr, "inspect", "--meta", dir);
        if (rr.signaled || !rr.exited || rr.code >= 128) {
            crashes++;
            cr_expect(0, "mutation %d (kind %d): crashed (signal %d, exit %d): %s", k, kind, rr.sig, rr.code, rr.err);
        } else if (rr.code != 0) {
            rejected++;
            if (count_lines(rr.err) != 1 || !strstr(rr.err, "consolidated.00.pth")) {
                bad_lines++;
                cr_expect(0, "mutation %d (kind %d): stderr is not one line naming the file:\n%s", k, kind, rr.err);
            }
        } else {
            accepted++;
            cr_expect_str_eq(rr.err, "", "mutation %d accepted but printed on stderr", k);
        }
    }
    printf("meta mutations: 200 runs, %d crashes, %d rejected with one line, %d accepted, %d bad stderr\n", crashes,
           rejected, accepted, bad_lines);
    cr_expect_eq(crashes, 0);
    cr_expect_eq(bad_lines, 0);
    cr_expect_eq(accepted, 0, "every mutation must be detected (CRC-32, header cross-checks, exact tiling)");
    free(orig);
    free(buf);
}

// 300 shards whose data.pkl was mutated and re-zipped with matching CRCs (tests/ref/meta_ckpt.py): the
// unpickler must turn every one into exactly one line naming the file, exit 1, never a crash.
Test(meta, mutated_pickles_never_crash, .timeout = 600) {
    int crashes = 0, good = 0;
    for (int i = 0; i < 300; i++) {
        char dir[256];
        snprintf(dir, sizeof(dir), REF "/pklfuzz/%03d", i);
        struct run r;
        run_llamac(&r, "inspect", "--meta", dir);
        int crash = r.signaled || !r.exited || r.code >= 128;
        crashes += crash;
        int ok = !crash && r.code == 1 && count_lines(r.err) == 1 && strstr(r.err, "consolidated.00.pth");
        good += ok;
        cr_expect(ok, "pickle mutation %d: exit %d signal %d, stderr:\n%s", i, r.code, r.sig, r.err);
    }
    printf("meta pickle mutations: 300 runs, %d crashes, %d rejected with one line naming the file\n", crashes, good);
}
