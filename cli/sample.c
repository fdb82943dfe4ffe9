// llamac sample (--ckpt PATH|RUN_DIR | --hf DIR | --meta DIR) --prompt TEXT [options]
// Generates text from a checkpoint (the run directory's newest when given a directory) or released
// weights, with a KV cache (train/sample.h), on the CPU or the CUDA backend. --chat applies the model's
// chat template (Llama 2 or Llama 3, from its tokenizer) to --system and each --prompt. The text goes to
// stdout; prefill and decode tokens/s go to stderr.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/error.h"
#include "data/tokenizer.h"
#include "launch/grid.h"
#include "model/ops/backends.h"
#include "train/sample.h"

static const char *usage =
    "usage: llamac sample (--ckpt PATH|RUN_DIR | --hf DIR | --meta DIR) --prompt TEXT [--prompt TEXT ...]\n"
    "  --temperature 0.8         0 = greedy\n"
    "  --top-k 0                 keep the k most likely tokens (0 = all)\n"
    "  --top-p 0.9               nucleus: the smallest set whose probability reaches p\n"
    "  --repetition-penalty 1    > 1 discourages tokens already in the context\n"
    "  --stop TEXT               end where TEXT appears in the output (repeatable, at most 8)\n"
    "  --max-tokens 100 --seed 1\n"
    "  --chat [--system TEXT]    apply the model's chat template (Llama 2 [INST] or Llama 3 headers)\n"
    "  --backend cpu|cuda --precision auto|fp32|bf16\n"
    "  --no-cache                recompute the whole context for every token (no KV cache)\n";

int cmd_sample(int argc, char **argv) {
    struct model_source src = {0};
    const char *v, *backend = "cpu", *precision = "auto", *system = NULL;
    const char *prompts[32];
    int n_prompts = 0, chat = 0;
    struct sample_opts o = {.temperature = 0.8f, .top_p = 0.9f, .top_k = 0, .repetition_penalty = 1.0f,
                            .max_tokens = 100, .seed = 1};
    for (int i = 1; i < argc; i++) {
        if (cli_opt(argc, argv, &i, "--ckpt", &v)) src.ckpt = v;
        else if (cli_opt(argc, argv, &i, "--hf", &v)) src.hf = v;
        else if (cli_opt(argc, argv, &i, "--meta", &v)) src.meta = v;
        else if (cli_opt(argc, argv, &i, "--prompt", &v)) {
            if (n_prompts == 32) return err_set("at most 32 --prompt");
            prompts[n_prompts++] = v;
        } else if (cli_opt(argc, argv, &i, "--system", &v)) system = v;
        else if (!strcmp(argv[i], "--chat")) chat = 1;
        else if (!strcmp(argv[i], "--no-cache")) o.no_cache = 1;
        else if (cli_opt(argc, argv, &i, "--temperature", &v)) o.temperature = (float)atof(v);
        else if (cli_opt(argc, argv, &i, "--top-p", &v)) o.top_p = (float)atof(v);
        else if (cli_opt(argc, argv, &i, "--top-k", &v)) o.top_k = atoi(v);
        else if (cli_opt(argc, argv, &i, "--repetition-penalty", &v)) o.repetition_penalty = (float)atof(v);
        else if (cli_opt(argc, argv, &i, "--stop", &v)) {
            if (o.n_stop == 8) return err_set("at most 8 --stop");
            if (!*v) return err_set("--stop: an empty stop string");
            o.stop[o.n_stop++] = v;
        } else if (cli_opt(argc, argv, &i, "--max-tokens", &v)) o.max_tokens = atoi(v);
        else if (cli_opt(argc, argv, &i, "--seed", &v)) o.seed = (uint64_t)atoll(v);
        else if (cli_opt(argc, argv, &i, "--backend", &v)) backend = v;
        else if (cli_opt(argc, argv, &i, "--precision", &v)) precision = v;
        else if (!strcmp(argv[i], "--help")) {
            fputs(usage, stdout);
            return 0;
        } else return err_set("unknown option '%s' (see llamac sample --help)", argv[i]);
    }
    if (n_prompts == 0) prompts[n_prompts++] = "";
    if (o.temperature < 0 || o.top_p <= 0 || o.top_p > 1 || o.max_tokens < 1 || o.top_k < 0 ||
        o.repetition_penalty <= 0)
        return err_set("--temperature must be >= 0, --top-p in (0, 1], --top-k >= 0, --repetition-penalty > 0, "
                       "--max-tokens >= 1");
    if (system && !chat) return err_set("--system needs --chat");
    const struct backend *be;
    if (backend_find(backend, precision, &be) != 0) return -1;
    struct grid g;
    if (grid_init(&g, NULL, NULL, 1) != 0) {
        grid_finalize(&g);
        return -1;
    }
    struct llama m = {0};
    char *tok_path = NULL;
    int rc = model_open(&m, be, &src, &tok_path, NULL);
    struct tokenizer *tok = NULL;
    if (rc == 0) rc = tokenizer_load(&tok, tok_path);
    for (int p = 0; rc == 0 && p < n_prompts; p++) {
        struct token_buf ids = {0};
        if (chat) {
            struct chat_msg msgs[2] = {{"system", system}, {"user", prompts[p]}};
            rc = system ? chat_encode(tok, msgs, 2, &ids) : chat_encode(tok, msgs + 1, 1, &ids);
        } else {
            token_buf_push(&ids, tokenizer_bos_id(tok));
            rc = tokenizer_encode(tok, prompts[p], strlen(prompts[p]), &ids);
            if (rc == 0) fputs(prompts[p], stdout);
        }
        struct sample_stats st;
        if (rc == 0) rc = sample_tokens(&m, tok, ids.ids, (int)ids.n, &o, stdout, NULL, &st);
        if (rc == 0) {
            fflush(stdout);  // the sample ends mid-line: the figures start on a line of their own
            fprintf(stderr, "\n[%s] prefill %d tokens in %.3f s (%.1f tokens/s), decode %d tokens in %.3f s (%.1f tokens/s)%s\n",
                    be->name, st.prompt_tokens, st.prefill_s, st.prompt_tokens / (st.prefill_s > 0 ? st.prefill_s : 1e-9),
                    st.decode_steps, st.decode_s, st.decode_steps / (st.decode_s > 0 ? st.decode_s : 1e-9),
                    o.no_cache ? " (no KV cache)" : "");
        }
        free(ids.ids);
        if (p + 1 < n_prompts) printf("---\n");
    }
    if (tok) tokenizer_free(tok);
    free(tok_path);
    if (m.be) llama_free(&m);
    grid_finalize(&g);
    return rc;
}
