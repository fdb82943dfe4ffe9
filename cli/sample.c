// llamac sample --ckpt PATH|RUN_DIR --prompt TEXT [--temperature 0.8] [--top-p 0.9] [--max-tokens 100] [--seed 1]
// Generates text from a checkpoint (the run directory's newest when given a directory).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/error.h"
#include "data/tokenizer.h"
#include "launch/grid.h"
#include "train/sample.h"

int cmd_sample(int argc, char **argv) {
    const char *ckpt = NULL, *v;
    const char *prompts[32];
    int n_prompts = 0;
    struct sample_opts o = {0.8f, 0.9f, 100, 1};
    for (int i = 1; i < argc; i++) {
        if (cli_opt(argc, argv, &i, "--ckpt", &v)) ckpt = v;
        else if (cli_opt(argc, argv, &i, "--prompt", &v)) {
            if (n_prompts == 32) return err_set("at most 32 --prompt");
            prompts[n_prompts++] = v;
        } else if (cli_opt(argc, argv, &i, "--temperature", &v)) o.temperature = (float)atof(v);
        else if (cli_opt(argc, argv, &i, "--top-p", &v)) o.top_p = (float)atof(v);
        else if (cli_opt(argc, argv, &i, "--max-tokens", &v)) o.max_tokens = atoi(v);
        else if (cli_opt(argc, argv, &i, "--seed", &v)) o.seed = (uint64_t)atoll(v);
        else if (!strcmp(argv[i], "--help")) {
            printf("usage: llamac sample --ckpt PATH|RUN_DIR --prompt TEXT [--prompt TEXT ...] [--temperature 0.8]\n"
                   "                     [--top-p 0.9] [--max-tokens 100] [--seed 1]\n");
            return 0;
        } else return err_set("unknown option '%s' (see llamac sample --help)", argv[i]);
    }
    if (!ckpt) return err_set("--ckpt PATH|RUN_DIR is required");
    if (n_prompts == 0) prompts[n_prompts++] = "";
    if (o.temperature < 0 || o.top_p <= 0 || o.top_p > 1 || o.max_tokens < 1)
        return err_set("--temperature must be >= 0, --top-p in (0, 1], --max-tokens >= 1");
    struct grid g;
    if (grid_init(&g, NULL, NULL, 1) != 0) {
        grid_finalize(&g);
        return -1;
    }
    struct llama m = {0};
    char run_dir[1200], tok_path[1300];
    int rc = ckpt_open_model(&m, ckpt, run_dir, sizeof(run_dir), NULL);
    struct tokenizer *tok = NULL;
    if (rc == 0) {
        snprintf(tok_path, sizeof(tok_path), "%s/tokenizer.model", run_dir);
        rc = tokenizer_load(&tok, tok_path);
    }
    for (int p = 0; rc == 0 && p < n_prompts; p++) {
        rc = sample_generate(&m, tok, prompts[p], &o, stdout);
        if (p + 1 < n_prompts) printf("---\n");
    }
    if (tok) tokenizer_free(tok);
    if (m.be) llama_free(&m);
    grid_finalize(&g);
    return rc;
}
