// `llamac train` end to end on a tiny model (tests/configs/tiny_run.ini) and the data the train_data
// fixture prepares: exact resume, crash safety of checkpoints, and each kind of bad input.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include "llamac_run.h"

#define TMP LLAMAC_TEST_TMP "/train"
#define DATA LLAMAC_TEST_TMP "/train_data/data"
#define INI LLAMAC_TEST_SOURCE_DIR "/tests/configs/tiny_run.ini"

// Runs `llamac ARGS` with env prefix ENV in TMP, capturing stdout and stderr.
static void run(struct result *r, const char *env, const char *args) { llamac_run_in(r, TMP, env, args); }

static void train(struct result *r, const char *env, const char *run_dir, const char *sets) {
    char args[2048];
    snprintf(args, sizeof(args), "train %s --set data.dir=%s --set run.run_dir=%s/%s %s", INI, DATA, TMP, run_dir, sets);
    run(r, env, args);
}

static void rm_run(const char *run_dir) {
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "rm -rf %s/%s", TMP, run_dir);
    system(cmd);
}

// The "loss" values of metrics.jsonl's train rows, as printed (%.17g: exact).
static int losses(const char *run_dir, char out[][40], int max) {
    char path[1024], line[1024];
    snprintf(path, sizeof(path), "%s/%s/metrics.jsonl", TMP, run_dir);
    FILE *f = fopen(path, "r");
    int n = 0;
    while (f && fgets(line, sizeof(line), f) && n < max) {
        char *p = strstr(line, "\"loss\": ");
        if (!p) continue;
        p += 8;
        size_t k = strcspn(p, ",}");
        snprintf(out[n++], 40, "%.*s", (int)k, p);
    }
    if (f) fclose(f);
    return n;
}

// Parameters and both AdamW moments of two checkpoints are bit-identical (h5diff with no tolerance).
static int same_tensors(const char *a, const char *b) {
    const char *groups[3] = {"/params", "/adam_m", "/adam_v"};
    for (int g = 0; g < 3; g++) {
        char cmd[2048];
        snprintf(cmd, sizeof(cmd), "h5diff -q %s/%s %s/%s %s >/dev/null 2>&1", TMP, a, TMP, b, groups[g]);
        if (system(cmd) != 0) return 0;
    }
    return 1;
}

static void latest_of(const char *run_dir, char *out, size_t n) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s/ckpt/latest", TMP, run_dir);
    slurp(path, out, n);
    out[strcspn(out, "\n")] = '\0';
}

Test(train, stopped_and_resumed_run_is_bit_identical_to_one_run, .timeout = 300) {
    struct result r;
    rm_run("whole");
    rm_run("halves");
    train(&r, "", "whole", "");
    cr_assert_eq(r.status, 0, "uninterrupted run failed: %s", r.err);
    cr_expect(strstr(r.out, "step 6/6") != NULL, "progress lines: %s", r.out);
    train(&r, "", "halves", "--set run.stop_after=3");
    cr_assert_eq(r.status, 0, "first half failed: %s", r.err);
    cr_expect(strstr(r.out, "stopped at step 3") != NULL, "%s", r.out);
    struct stat st;
    cr_expect(stat(TMP "/halves/STOPPED", &st) == 0, "STOPPED marker");
    train(&r, "", "halves", "");
    cr_assert_eq(r.status, 0, "resumed half failed: %s", r.err);
    cr_expect(strstr(r.out, "resumed from") != NULL, "%s", r.out);
    cr_expect(stat(TMP "/halves/DONE", &st) == 0, "DONE marker");

    char la[16][40], lb[16][40];
    int na = losses("whole", la, 16), nb = losses("halves", lb, 16);
    cr_assert_eq(na, 6);
    cr_assert_eq(nb, 6, "metrics.jsonl of the resumed run has one row per step");
    for (int i = 0; i < 6; i++) cr_expect_str_eq(la[i], lb[i], "loss of step %d differs after resume", i + 1);
    cr_expect(same_tensors("whole/ckpt/step_0000006.h5", "halves/ckpt/step_0000006.h5"),
              "final parameters and AdamW moments are identical");
    cr_expect(stat(TMP "/whole/loss.png", &st) == 0 && st.st_size > 1000, "loss picture drawn");
}

Test(train, killed_checkpoint_write_leaves_the_previous_one_resumable, .timeout = 300) {
    struct result r;
    rm_run("killed");
    train(&r, "LLAMAC_FAULT=ckpt_kill:4", "killed", "");
    cr_assert_eq(r.status, 128 + 9, "the run should die by SIGKILL while writing step 4's checkpoint (got %d)", r.status);
    char latest[64];
    latest_of("killed", latest, sizeof(latest));
    cr_expect_str_eq(latest, "step_0000002.h5", "latest still names the previous checkpoint");
    struct stat st;
    cr_expect(stat(TMP "/killed/ckpt/step_0000004.h5", &st) != 0, "no half-written checkpoint under the final name");
    train(&r, "", "killed", "");
    cr_assert_eq(r.status, 0, "resume after the crash failed: %s", r.err);
    cr_expect(strstr(r.out, "resumed from") && strstr(r.out, "step 2,"), "%s", r.out);
    rm_run("whole2");
    train(&r, "", "whole2", "");
    char la[16][40], lb[16][40];
    int na = losses("whole2", la, 16), nb = losses("killed", lb, 16);
    cr_assert_eq(na, 6);
    cr_assert_eq(nb, 6);
    for (int i = 0; i < 6; i++) cr_expect_str_eq(la[i], lb[i], "loss of step %d differs after the crash", i + 1);
}

static void expect_one_line_error(const struct result *r, const char *needle) {
    cr_expect_neq(r->status, 0, "bad input must exit non-zero");
    cr_expect(r->status < 128, "no crash (status %d)", r->status);
    cr_expect_eq(r->err_lines, 1, "exactly one line on stderr, got: %s", r->err);
    cr_expect(strstr(r->err, needle) != NULL, "stderr should mention '%s': %s", needle, r->err);
}

Test(train, misspelt_config_key_is_named) {
    struct result r;
    rm_run("typo");
    train(&r, "", "typo", "--set optim.lrr=1e-3");
    expect_one_line_error(&r, "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)");
}

Test(train, missing_data_directory) {
    struct result r;
    run(&r, "", "train " INI " --set data.dir=/nonexistent/llamac-data --set run.run_dir=" TMP "/nodata");
    expect_one_line_error(&r, "/nonexistent/llamac-data");
}

Test(train, checkpoint_of_another_model_is_refused, .timeout = 120) {
    struct result r;
    rm_run("mismatch");
    train(&r, "", "mismatch", "--set train.steps=2");
    cr_assert_eq(r.status, 0, "%s", r.err);
    train(&r, "", "mismatch", "--set train.steps=4 --set model.dim=96");
    expect_one_line_error(&r, "differs from the run's config (dim");
}

Test(train, nan_gradient_stops_the_run_and_keeps_the_last_good_checkpoint, .timeout = 120) {
    struct result r;
    rm_run("nan");
    train(&r, "LLAMAC_FAULT=nan_grad:3", "nan", "--set train.ckpt_every=1");
    expect_one_line_error(&r, "NaN");
    char latest[64];
    latest_of("nan", latest, sizeof(latest));
    cr_expect_str_eq(latest, "step_0000002.h5", "the checkpoint before the NaN is the latest");
    struct stat st;
    cr_expect(stat(TMP "/nan/ckpt/step_0000003.h5", &st) != 0, "no checkpoint of the NaN step");
}

Test(train, sample_and_eval_use_a_checkpoint, .timeout = 120) {
    struct result r;
    rm_run("use");
    train(&r, "", "use", "--set train.steps=3");
    cr_assert_eq(r.status, 0, "%s", r.err);
    run(&r, "", "sample --ckpt " TMP "/use --prompt Hello --prompt Привет --max-tokens 8 --seed 3");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.out, "Hello") && strstr(r.out, "Привет"), "%s", r.out);
    run(&r, "", "eval --ckpt " TMP "/use/ckpt/step_0000003.h5");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.out, "val loss") && strstr(r.out, "perplexity"), "%s", r.out);
}

// The last "val_loss" value of a run's metrics.jsonl (first = 1: the first one), as printed.
static void val_loss_of(const char *run_dir, int first, char *out, size_t n) {
    char path[1024], line[1024];
    snprintf(path, sizeof(path), "%s/%s/metrics.jsonl", TMP, run_dir);
    FILE *f = fopen(path, "r");
    out[0] = '\0';
    while (f && fgets(line, sizeof(line), f)) {
        char *p = strstr(line, "\"val_loss\": ");
        if (!p) continue;
        p += 12;
        snprintf(out, n, "%.*s", (int)strcspn(p, ",}"), p);
        if (first) break;
    }
    if (f) fclose(f);
}

Test(train, exported_weights_start_a_fine_tuning_run_where_training_ended, .timeout = 120) {
    struct result r;
    rm_run("pre");
    rm_run("ft");
    rm_run("hf_pre");
    train(&r, "", "pre", "--set train.steps=3");
    cr_assert_eq(r.status, 0, "%s", r.err);
    run(&r, "", "export --ckpt " TMP "/pre --out " TMP "/hf_pre --dtype f32");
    cr_assert_eq(r.status, 0, "%s", r.err);
    train(&r, "", "ft", "--set train.steps=2 --set model.init=hf:" TMP "/hf_pre");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.out, "initialised from Hugging Face weights") != NULL, "%s", r.out);
    char end_of_pre[64], start_of_ft[64];
    val_loss_of("pre", 0, end_of_pre, sizeof(end_of_pre));
    val_loss_of("ft", 1, start_of_ft, sizeof(start_of_ft));
    cr_expect(end_of_pre[0] && !strcmp(end_of_pre, start_of_ft),
              "the fine-tuning run starts from the exported weights: val loss %s at its step 0, %s at the end of "
              "pretraining", start_of_ft, end_of_pre);
}

Test(train, data_made_with_another_tokenizer_is_refused_on_resume, .timeout = 120) {
    struct result r;
    rm_run("tokswap");
    train(&r, "", "tokswap", "--set train.steps=2");
    cr_assert_eq(r.status, 0, "%s", r.err);
    char args[1024];
    snprintf(args, sizeof(args), "train %s --set data.dir=%s_other_tokenizer --set run.run_dir=%s/tokswap --set train.steps=4",
             INI, DATA, TMP);
    run(&r, "", args);
    expect_one_line_error(&r, "tokenizer");
}

// LoRA fine-tuning of exported weights (model/lora.h): a run stopped and resumed gives the same losses, the
// checkpoint holds the adapters and their moments only, the merged export equals the base plus the
// exported PEFT adapters' (alpha/r) B A, and full fine-tuning's checkpoint is refused by a LoRA run.
Test(train, lora_run_resumes_exactly_and_exports_merged_and_peft, .timeout = 300) {
    struct result r;
    const char *runs[] = {"lpre", "lhf", "lwhole", "lhalves", "lmerged", "lpeft"};
    for (int i = 0; i < 6; i++) rm_run(runs[i]);
    train(&r, "", "lpre", "--set train.steps=2 --set train.eval_every=0");
    cr_assert_eq(r.status, 0, "%s", r.err);
    run(&r, "", "export --ckpt " TMP "/lpre --out " TMP "/lhf --dtype f32");
    cr_assert_eq(r.status, 0, "%s", r.err);
    const char *lora = "--set model.init=hf:" TMP "/lhf --set lora.rank=4 --set lora.alpha=8 --set lora.targets=q,v,down "
                       "--set optim.lr=1e-2";
    char sets[1024];
    snprintf(sets, sizeof(sets), "%s", lora);
    train(&r, "", "lwhole", sets);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.out, "LoRA: rank 4") != NULL, "%s", r.out);
    snprintf(sets, sizeof(sets), "%s --set run.stop_after=3", lora);
    train(&r, "", "lhalves", sets);
    cr_assert_eq(r.status, 0, "%s", r.err);
    train(&r, "", "lhalves", lora);
    cr_assert_eq(r.status, 0, "%s", r.err);
    char la[16][40], lb[16][40];
    int na = losses("lwhole", la, 16), nb = losses("lhalves", lb, 16);
    cr_assert(na == 6 && nb == 6, "%d and %d losses", na, nb);
    for (int i = 0; i < 6; i++) cr_expect_str_eq(la[i], lb[i], "LoRA loss of step %d differs after resume", i + 1);
    cr_expect(same_tensors("lwhole/ckpt/step_0000006.h5", "lhalves/ckpt/step_0000006.h5"));

    // the checkpoint: adapters only (3 targets x 2 layers x A, B), no base tensor
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "h5ls %s/lwhole/ckpt/step_0000006.h5/params > %s/lora_ls.txt", TMP, TMP);
    cr_assert(system(cmd) == 0);
    char ls[8192];
    slurp(TMP "/lora_ls.txt", ls, sizeof(ls));
    int lines = 0;
    for (char *p = ls; *p; p++) lines += *p == '\n';
    cr_expect(lines == 12 && strstr(ls, "lora_A") && !strstr(ls, "embed_tokens"), "checkpoint params: %s", ls);

    run(&r, "", "export --ckpt " TMP "/lwhole --out " TMP "/lmerged --dtype f32");
    cr_assert_eq(r.status, 0, "%s", r.err);
    run(&r, "", "export --ckpt " TMP "/lwhole --out " TMP "/lpeft --lora peft");
    cr_assert_eq(r.status, 0, "%s", r.err);
    snprintf(cmd, sizeof(cmd), "%s %s/tests/ref/lora_merge_check.py %s/lhf %s/lpeft %s/lmerged", LLAMAC_PYTHON,
             LLAMAC_TEST_SOURCE_DIR, TMP, TMP, TMP);
    cr_expect(system(cmd) == 0, "the merged export is base + (alpha/r) B A of the PEFT export (%s)", cmd);

    // a LoRA run refuses a full fine-tuning checkpoint in its run_dir
    rm_run("lhalves_full");
    snprintf(cmd, sizeof(cmd), "cp -r %s/lpre %s/lhalves_full", TMP, TMP);
    cr_assert(system(cmd) == 0);
    char args[2048];
    snprintf(args, sizeof(args), "train %s --set data.dir=%s --set run.run_dir=%s/lhalves_full %s", INI, DATA, TMP, lora);
    run(&r, "", args);
    expect_one_line_error(&r, "full fine-tuning checkpoint");
}

// LoRA dropout (model/lora.h): masks keyed by (seed, step, micro-batch, dp rank), so a run with
// lora.dropout = 0.1 stopped and resumed gives the same losses, adapters and moments bit for bit as one
// uninterrupted run; the masks change the run (from step 2: B starts at zero, so step 1's loss is the
// same whatever the mask); and dropout = 1 is refused by name.
Test(train, lora_dropout_run_resumes_exactly_and_differs_from_no_dropout, .timeout = 300) {
    struct result r;
    const char *runs[] = {"dpre", "dhf", "dwhole", "dhalves", "dnodrop", "dbad"};
    for (int i = 0; i < 6; i++) rm_run(runs[i]);
    train(&r, "", "dpre", "--set train.steps=2 --set train.eval_every=0");
    cr_assert_eq(r.status, 0, "%s", r.err);
    run(&r, "", "export --ckpt " TMP "/dpre --out " TMP "/dhf --dtype f32");
    cr_assert_eq(r.status, 0, "%s", r.err);
    const char *lora = "--set model.init=hf:" TMP "/dhf --set lora.rank=4 --set lora.alpha=8 --set lora.targets=q,v,down "
                       "--set optim.lr=1e-2";
    char sets[1024];
    snprintf(sets, sizeof(sets), "%s --set lora.dropout=0.1", lora);
    train(&r, "", "dwhole", sets);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.out, "LoRA: rank 4, alpha 8, dropout 0.1") != NULL, "%s", r.out);
    snprintf(sets, sizeof(sets), "%s --set lora.dropout=0.1 --set run.stop_after=3", lora);
    train(&r, "", "dhalves", sets);
    cr_assert_eq(r.status, 0, "%s", r.err);
    snprintf(sets, sizeof(sets), "%s --set lora.dropout=0.1", lora);
    train(&r, "", "dhalves", sets);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.out, "resumed from") != NULL, "%s", r.out);
    char la[16][40], lb[16][40], l0[16][40];
    int na = losses("dwhole", la, 16), nb = losses("dhalves", lb, 16);
    cr_assert(na == 6 && nb == 6, "%d and %d losses", na, nb);
    for (int i = 0; i < 6; i++) cr_expect_str_eq(la[i], lb[i], "LoRA dropout: loss of step %d differs after resume", i + 1);
    cr_expect(same_tensors("dwhole/ckpt/step_0000006.h5", "dhalves/ckpt/step_0000006.h5"),
              "LoRA dropout: adapters and AdamW moments after resume are bit-identical to one run");

    train(&r, "", "dnodrop", lora);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert_eq(losses("dnodrop", l0, 16), 6);
    cr_expect_str_eq(la[0], l0[0], "step 1: B = 0, the adapters add nothing with or without dropout");
    int differ = 0;
    for (int i = 1; i < 6; i++) differ += strcmp(la[i], l0[i]) != 0;
    cr_expect_eq(differ, 5, "dropout 0.1 changes the losses of steps 2-6 (%d of 5 differ)", differ);
    cr_expect(!same_tensors("dwhole/ckpt/step_0000006.h5", "dnodrop/ckpt/step_0000006.h5"),
              "dropout 0.1 and 0 end with different adapters");
    printf("lora dropout run: step 6 loss %s with dropout 0.1 (resumed: %s), %s without\n", la[5], lb[5], l0[5]);

    // the checkpoint's run config carries the dropout into PEFT's adapter_config.json
    rm_run("dpeft");
    run(&r, "", "export --ckpt " TMP "/dwhole --out " TMP "/dpeft --lora peft");
    cr_assert_eq(r.status, 0, "%s", r.err);
    char json[4096];
    slurp(TMP "/dpeft/adapter_config.json", json, sizeof(json));
    cr_expect(strstr(json, "\"lora_dropout\":\t0.1,") != NULL, "%s", json);

    snprintf(sets, sizeof(sets), "%s --set lora.dropout=1", lora);
    train(&r, "", "dbad", sets);
    expect_one_line_error(&r, "lora.dropout = 1 is out of range");
}
