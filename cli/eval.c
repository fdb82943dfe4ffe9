// llamac eval --ckpt PATH|RUN_DIR [--batches N] [--data DIR] [--backend cpu|cuda]
// llamac eval (--hf DIR | --meta DIR) --data DIR [--batch 8] [--seq 256] [--batches 10] [--seed 1234]
// Validation loss and perplexity on the held-out split of prepared data.
//
// A checkpoint is evaluated on exactly the windows its run evaluated: the trainer's validation pass
// (train/train.c, evaluate) takes eval_batches batches on each of the run's dp ranks, rank r reading
// the windows of a dp-rank-r loader, and sums the losses over ranks. Here one process runs the loaders
// of all saved_dp ranks in turn (the run config and saved_dp come from the checkpoint), so the loss is
// the run's logged val_loss at any dp, not the rank-0 share of it. Released weights have no run: the
// loader of one rank over --data with the given batch, sequence length and seed; the data's tokenizer
// must be the directory's (model/hf.h, hf_check_data_tokenizer).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/config.h"
#include "core/error.h"
#include "data/loader.h"
#include "launch/grid.h"
#include "model/hf.h"
#include "model/ops/backends.h"
#include "train/run_config.h"
#include "train/sample.h"

static const char *usage =
    "usage: llamac eval --ckpt PATH|RUN_DIR [--batches N (run's eval_batches)] [--data DIR (run's data.dir)]\n"
    "       llamac eval (--hf DIR | --meta DIR) --data DIR [--batch 8] [--seq 256] [--batches 10] [--seed 1234]\n"
    "       either: [--backend cpu|cuda] [--precision auto|fp32|bf16]\n";

// Loss sums over `batches` batches of the loaders of dp ranks 0..dp-1 (each as the trainer's rank r
// reads them), added in rank order as the trainer's all-reduce adds them.
static int eval_ranks(struct llama *m, struct loader_config *lc, int dp, int batches, double s[2]) {
    int *in = xmalloc(sizeof(int) * (size_t)lc->B * lc->T), *tg = xmalloc(sizeof(int) * (size_t)lc->B * lc->T);
    llama_alloc_acts(m, lc->B, lc->T, 0);
    s[0] = s[1] = 0;
    int rc = 0;
    for (int r = 0; r < dp && rc == 0; r++) {
        double part[2];
        lc->dp_rank = r;
        lc->dp_size = dp;
        rc = eval_loss_sums(m, lc, batches, in, tg, part);
        s[0] += part[0];
        s[1] += part[1];
    }
    free(in);
    free(tg);
    if (rc == 0 && s[1] == 0) rc = err_set("%s: no validation targets", lc->data_dir);
    return rc;
}

int cmd_eval(int argc, char **argv) {
    struct model_source src = {0};
    const char *data = NULL, *backend = "cpu", *precision = "auto", *v;
    int batches = 0, B = 8, T = 0;
    long long seed = 1234;
    for (int i = 1; i < argc; i++) {
        if (cli_opt(argc, argv, &i, "--ckpt", &v)) src.ckpt = v;
        else if (cli_opt(argc, argv, &i, "--hf", &v)) src.hf = v;
        else if (cli_opt(argc, argv, &i, "--meta", &v)) src.meta = v;
        else if (cli_opt(argc, argv, &i, "--batches", &v)) batches = atoi(v);
        else if (cli_opt(argc, argv, &i, "--batch", &v)) B = atoi(v);
        else if (cli_opt(argc, argv, &i, "--seq", &v)) T = atoi(v);
        else if (cli_opt(argc, argv, &i, "--seed", &v)) seed = atoll(v);
        else if (cli_opt(argc, argv, &i, "--data", &v)) data = v;
        else if (cli_opt(argc, argv, &i, "--backend", &v)) backend = v;
        else if (cli_opt(argc, argv, &i, "--precision", &v)) precision = v;
        else if (!strcmp(argv[i], "--help")) {
            fputs(usage, stdout);
            return 0;
        } else return err_set("unknown option '%s' (see llamac eval --help)", argv[i]);
    }
    if (!!src.ckpt + !!src.hf + !!src.meta != 1) return err_set("give one of --ckpt, --hf, --meta (see llamac eval --help)");
    if (!src.ckpt && !data) return err_set("--data DIR (prepared with the weights' tokenizer) is required with --%s",
                                           src.hf ? "hf" : "meta");
    if (B < 1 || T < 0 || batches < 0) return err_set("--batch must be >= 1, --seq >= 1, --batches >= 1");
    const struct backend *be;
    if (backend_find(backend, precision, &be) != 0) return -1;
    struct grid g;
    if (grid_init(&g, NULL, NULL, 1) != 0) {
        grid_finalize(&g);
        return -1;
    }
    struct llama m = {0};
    struct ckpt_meta meta = {0};
    char *tok_path = NULL;  // unused here: eval needs no tokenizer
    struct cfg c;
    cfg_init(&c);
    int rc = model_open(&m, be, &src, &tok_path, src.ckpt ? &meta : NULL);
    free(tok_path);
    struct loader_config lc;
    struct run_config r;  // lc points into it (data_dir): it lives as long as lc
    double s[2];
    int dp = 1;
    if (rc == 0 && src.ckpt) {
        rc = cfg_load_string(&c, meta.run_ini, src.ckpt);
        if (rc == 0 && data) cfg_put(&c, "data.dir", data, "--data");
        if (rc == 0) rc = run_config_read(&r, &c, src.ckpt, meta.saved_dp);
        if (rc == 0 && r.seq_len > m.cfg.max_seq_len)
            rc = err_set("%s: train.seq_len %d of its run config exceeds its model's max_seq_len %d", src.ckpt,
                         r.seq_len, m.cfg.max_seq_len);
        if (rc == 0) {
            if (batches <= 0) batches = r.eval_batches;
            dp = meta.saved_dp > 0 ? meta.saved_dp : 1;
            run_config_loader(&lc, &r, 0, dp, 1);
        }
    } else if (rc == 0) {
        if (batches <= 0) batches = 10;
        if (T == 0) T = m.cfg.max_seq_len < 256 ? m.cfg.max_seq_len : 256;
        if (T > m.cfg.max_seq_len) rc = err_set("--seq %d exceeds the model's max_seq_len %d", T, m.cfg.max_seq_len);
        memset(&lc, 0, sizeof(lc));
        lc.data_dir = data;
        lc.B = B;
        lc.T = T;
        lc.seed = (uint64_t)seed;
        lc.split = 1;
        lc.vocab_size = m.cfg.vocab_size;
        const char *dir = src.hf ? src.hf : src.meta;
        lc.dp_size = 1;
        if (rc == 0) rc = hf_check_data_tokenizer(dir, data);  // the data's tokenizer against the directory's
    }
    if (rc == 0) rc = eval_ranks(&m, &lc, dp, batches, s);
    if (rc == 0) {
        if (src.ckpt) printf("step %lld: ", (long long)meta.step);
        printf("val loss %.4f, perplexity %.2f (%d batches of %d x %d tokens%s) [val_loss %.17g]\n", s[0] / s[1],
               exp(s[0] / s[1]), batches, lc.B * dp, lc.T, dp > 1 ? ", the run's dp ranks together" : "", s[0] / s[1]);
    }
    cfg_free(&c);
    if (m.be) llama_free(&m);
    ckpt_meta_free(&meta);
    grid_finalize(&g);
    return rc;
}
