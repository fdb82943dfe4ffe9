// `llamac inspect` memory per rank for a dp x tp layout, through the binary: tensor parallelism divides
// the matrices (not the norms) by tp, ZeRO-1 divides the master weights and AdamW's moments by dp and adds the gradient shard,
// and bad layouts get one line on stderr.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

struct report {
    int status;
    char out[8192], err[2048];
    double params, grads, master, moments, grad_shard, acts, total;  // bytes
    long long elements;                                      // parameters per rank
};

static double to_bytes(double v, const char *unit) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    for (int k = 0; k < 5; k++, v *= 1024)
        if (!strcmp(unit, u[k])) return v;
    return -1;
}

// "  NAME   12.55 GiB" -> bytes, or -1 when the line is missing
static double figure(const char *out, const char *name) {
    char key[64];
    snprintf(key, sizeof(key), "\n  %s ", name);
    const char *p = strstr(out, key);
    double v;
    char unit[8];
    if (!p || sscanf(p + strlen(key), " %lf %7s", &v, unit) != 2) return -1;
    return to_bytes(v, unit);
}

static void inspect(struct report *r, const char *args) {
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s inspect %s >%s/inspect.out 2>%s/inspect.err", LLAMAC_BINARY, args, LLAMAC_TEST_TMP,
             LLAMAC_TEST_TMP);
    int st = system(cmd);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    char path[512];
    snprintf(path, sizeof(path), "%s/inspect.out", LLAMAC_TEST_TMP);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(r->out, 1, sizeof(r->out) - 1, f) : 0;
    r->out[n] = '\0';
    if (f) fclose(f);
    snprintf(path, sizeof(path), "%s/inspect.err", LLAMAC_TEST_TMP);
    f = fopen(path, "r");
    n = f ? fread(r->err, 1, sizeof(r->err) - 1, f) : 0;
    r->err[n] = '\0';
    if (f) fclose(f);
    r->params = figure(r->out, "parameters");
    r->grads = figure(r->out, "gradients");
    r->master = figure(r->out, "master weights");
    r->moments = figure(r->out, "AdamW moments");
    r->grad_shard = figure(r->out, "gradient shard");
    r->acts = figure(r->out, "activations");
    r->total = figure(r->out, "total");
    r->elements = -1;
    const char *e = strstr(r->out, "\n  parameters ");
    e = e ? strchr(e, '(') : NULL;
    if (e) {
        long long v = 0;
        for (e++; *e && *e != ' '; e++)
            if (*e >= '0' && *e <= '9') v = 10 * v + (*e - '0');
        r->elements = v;
    }
}

static void expect_near(double got, double want, double rtol, const char *what) {
    cr_expect(want > 0 && got > 0 && got >= want * (1 - rtol) && got <= want * (1 + rtol), "%s: %.6g, expected %.6g",
              what, got, want);
}

#define N_7B 6738415616LL
#define NORMS_7B (32LL * 2 * 4096 + 4096)

Test(inspect, tensor_parallel_divides_the_matrices_not_the_norms) {
    struct report a, b;
    inspect(&a, "--model llama-7b --batch 1 --seq 2048");
    inspect(&b, "--model llama-7b --batch 1 --seq 2048 --dp 8 --tp 2");
    cr_assert_eq(a.status, 0, "%s", a.err);
    cr_assert_eq(b.status, 0, "%s", b.err);
    cr_expect_eq(a.elements, N_7B, "one rank holds every parameter: %lld\n%s", a.elements, a.out);
    cr_expect_eq(b.elements, (N_7B - NORMS_7B) / 2 + NORMS_7B, "tp 2: half of each matrix, whole norms: %lld", b.elements);
    expect_near(a.params, 4.0 * N_7B, 0.001, "fp32 parameters at tp 1");
    expect_near(b.params, 4.0 * (double)b.elements, 0.001, "fp32 parameters at tp 2");
    expect_near(b.grads, b.params, 0.001, "gradients = parameters");
    expect_near(b.moments, 2 * b.params, 0.001, "two moments per parameter without ZeRO-1");
    expect_near(b.master, b.params, 0.001, "fp32 master weights = fp32 parameters");
    cr_expect_lt(b.grad_shard, 0, "no gradient shard without ZeRO-1:\n%s", b.out);
    cr_expect_lt(b.acts, a.acts, "activations shrink with tp");
    cr_expect(strstr(b.out, "dp 8 x tp 2"), "%s", b.out);
}

Test(inspect, zero1_shards_the_moments_over_dp) {
    struct report a, z;
    inspect(&a, "--model llama-7b --batch 1 --seq 2048 --dp 8 --tp 2");
    inspect(&z, "--model llama-7b --batch 1 --seq 2048 --dp 8 --tp 2 --zero1");
    cr_assert_eq(z.status, 0, "%s", z.err);
    cr_expect(strstr(z.out, "ZeRO-1"), "%s", z.out);
    expect_near(z.moments, a.moments / 8, 0.002, "ZeRO-1 moments = 1/dp of the unsharded ones");
    expect_near(z.grad_shard, z.moments / 2, 0.002, "gradient shard = one moment's size");
    expect_near(z.params, a.params, 0.001, "parameters are not sharded");
    expect_near(z.master, a.master / 8, 0.002, "ZeRO-1 master weights = 1/dp of the unsharded ones");
    expect_near(z.total, a.total - a.moments - a.master + z.moments + z.master + z.grad_shard, 0.002,
                "total = sum of the parts");
    cr_expect_lt(z.total, a.total, "ZeRO-1 needs less memory per rank");
    cr_expect(strstr(z.out, "1/dp of 25.10 GiB"), "names the unsharded figure:\n%s", z.out);

    struct report one;
    inspect(&one, "--model llama-7b --batch 1 --seq 2048 --dp 1 --zero1");
    cr_assert_eq(one.status, 0, "%s", one.err);
    cr_expect(strstr(one.out, "ZeRO-1 shards nothing with dp 1"), "%s", one.out);
    expect_near(one.moments, 2 * one.params, 0.001, "dp 1: whole moments");
}

Test(inspect, bad_layouts_get_one_line) {
    struct report r;
    inspect(&r, "--model llama-7b --dp 0");
    cr_expect_eq(r.status, 1);
    cr_expect_str_eq(r.err, "llamac inspect: --batch, --dp and --tp must be positive integers\n");
    inspect(&r, "--model llama-7b --tp 3");
    cr_expect_eq(r.status, 1);
    cr_expect(strstr(r.err, "tp=3 does not divide the model") && strchr(r.err, '\n') == r.err + strlen(r.err) - 1,
              "one line naming tp: %s", r.err);
}

// --lora: the adapter count PEFT reports for llama2-7b with r = 8 on q_proj, v_proj (4,194,304), and the
// LoRA step needs no base gradients, master weights or moments: those lines are the adapters' only.
Test(inspect, lora_memory_beside_full_fine_tuning) {
    struct report r;
    inspect(&r, "--model llama2-7b --batch 1 --seq 4096 --lora 8");
    cr_assert_eq(r.status, 0, "%s", r.err);
    const char *l = strstr(r.out, "LoRA rank 8 on q,v: 4,194,304 trainable parameters");
    cr_assert(l, "%s", r.out);
    double full, lora, lgrad, lmom;
    char u1[8], u2[8];
    const char *t = strstr(l, "\n  total");
    cr_assert(t && sscanf(t + 8, " %lf %7s %lf %7s", &full, u1, &lora, u2) == 4, "%s", l);
    full = to_bytes(full, u1);
    lora = to_bytes(lora, u2);
    const char *g = strstr(l, "\n  gradients");
    cr_assert(g && sscanf(g + 12, " %*f %*s %lf %7s", &lgrad, u2) == 2);
    lgrad = to_bytes(lgrad, u2);
    const char *m = strstr(l, "\n  AdamW moments");
    cr_assert(m && sscanf(m + 16, " %*f %*s %lf %7s", &lmom, u2) == 2);
    lmom = to_bytes(lmom, u2);
    cr_expect(lgrad == 4194304.0 * 4 && lmom == 2 * 4194304.0 * 4, "adapter gradients %g, moments %g bytes", lgrad, lmom);
    cr_expect(lora < full / 2, "LoRA %g GiB vs full %g GiB", lora / (1 << 30), full / (1 << 30));
    inspect(&r, "--model llama2-7b --lora 8 --lora-targets q,x");
    cr_expect(r.status != 0 && strstr(r.err, "'x'"), "%s", r.err);
}
