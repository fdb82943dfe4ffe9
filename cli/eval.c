// llamac eval --ckpt PATH|RUN_DIR [--batches N] [--data DIR]
// Validation loss and perplexity of a checkpoint on the held-out split of its run's data.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/config.h"
#include "core/error.h"
#include "launch/grid.h"
#include "train/run_config.h"
#include "train/sample.h"

int cmd_eval(int argc, char **argv) {
    const char *ckpt = NULL, *data = NULL, *v;
    int batches = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_opt(argc, argv, &i, "--ckpt", &v)) ckpt = v;
        else if (cli_opt(argc, argv, &i, "--batches", &v)) batches = atoi(v);
        else if (cli_opt(argc, argv, &i, "--data", &v)) data = v;
        else if (!strcmp(argv[i], "--help")) {
            printf("usage: llamac eval --ckpt PATH|RUN_DIR [--batches N (run's eval_batches)] [--data DIR (run's data.dir)]\n");
            return 0;
        } else return err_set("unknown option '%s' (see llamac eval --help)", argv[i]);
    }
    if (!ckpt) return err_set("--ckpt PATH|RUN_DIR is required");
    struct grid g;
    if (grid_init(&g, NULL, NULL, 1) != 0) {
        grid_finalize(&g);
        return -1;
    }
    struct llama m = {0};
    struct ckpt_meta meta = {0};
    char run_dir[1200];
    int rc = ckpt_open_model(&m, ckpt, run_dir, sizeof(run_dir), &meta);
    struct run_config r;
    struct cfg c;
    cfg_init(&c);
    if (rc == 0) {
        rc = cfg_load_string(&c, meta.run_ini, ckpt);
        if (rc == 0 && data) cfg_put(&c, "data.dir", data, "--data");
        if (rc == 0) rc = run_config_read(&r, &c, ckpt, meta.saved_dp);
        if (rc == 0 && r.seq_len > m.cfg.max_seq_len)
            rc = err_set("%s: train.seq_len %d of its run config exceeds its model's max_seq_len %d", ckpt, r.seq_len,
                         m.cfg.max_seq_len);
    }
    if (rc == 0) {
        if (batches <= 0) batches = r.eval_batches;
        struct loader_config lc;
        run_config_loader(&lc, &r, 0, 1, 1);
        int *in = malloc(sizeof(int) * (size_t)r.batch_size * r.seq_len);
        int *tg = malloc(sizeof(int) * (size_t)r.batch_size * r.seq_len);
        llama_alloc_acts(&m, r.batch_size, r.seq_len, 0);
        double s[2];
        rc = eval_loss_sums(&m, &lc, batches, in, tg, s);
        if (rc == 0)
            printf("step %lld: val loss %.4f, perplexity %.2f (%d batches of %d x %d tokens)\n", (long long)meta.step,
                   s[0] / s[1], exp(s[0] / s[1]), batches, r.batch_size, r.seq_len);
        free(in);
        free(tg);
    }
    cfg_free(&c);
    if (m.be) llama_free(&m);
    ckpt_meta_free(&meta);
    grid_finalize(&g);
    return rc;
}
