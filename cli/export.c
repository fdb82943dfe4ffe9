// llamac export --ckpt PATH|RUN_DIR --out DIR [--dtype bf16|f16|f32]
// Writes a checkpoint's parameters as a Hugging Face Llama directory (config.json, model.safetensors)
// and copies the run's tokenizer.model beside them, for other tools or for `[model] init = hf:DIR`.
// A LoRA run's checkpoint (adapters only) is exported merged into the base weights, or with --lora peft as
// PEFT's adapter_model.safetensors + adapter_config.json (model/lora.h).
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/error.h"
#include "core/fs.h"
#include "launch/grid.h"
#include "model/hf.h"
#include "model/safetensors.h"
#include "model/lora.h"
#include "train/lora_ckpt.h"
#include "train/sample.h"

int cmd_export(int argc, char **argv) {
    const char *ckpt = NULL, *out = NULL, *dtype = "bf16", *lora_mode = "merge", *v;
    for (int i = 1; i < argc; i++) {
        if (cli_opt(argc, argv, &i, "--ckpt", &v)) ckpt = v;
        else if (cli_opt(argc, argv, &i, "--out", &v)) out = v;
        else if (cli_opt(argc, argv, &i, "--dtype", &v)) dtype = v;
        else if (cli_opt(argc, argv, &i, "--lora", &v)) lora_mode = v;
        else if (!strcmp(argv[i], "--help")) {
            printf("usage: llamac export --ckpt PATH|RUN_DIR --out DIR [--dtype bf16|f16|f32 (bf16)]\n"
                   "                     [--lora merge|peft (merge): for a LoRA run, W + (alpha/r) B A, or PEFT's layout]\n");
            return 0;
        } else return err_set("unknown option '%s' (see llamac export --help)", argv[i]);
    }
    if (!ckpt || !out) return err_set("--ckpt and --out are required (see llamac export --help)");
    enum st_dtype dt;
    if (st_dtype_parse(&dt, dtype) != 0) return err_set("--dtype %s: expected bf16, f16 or f32", dtype);
    struct grid g;
    if (grid_init(&g, NULL, NULL, 1) != 0) {
        grid_finalize(&g);
        return -1;
    }
    struct llama m = {0};
    char run_dir[1200], from[1300], to[1300];
    struct ckpt_meta meta = {0};
    int rc = ckpt_open_model(&m, ckpt, run_dir, sizeof(run_dir), &meta);
    if (rc == 0) rc = fs_mkdir_p(out);
    if (rc == 0 && m.lora) {  // adapters (model/lora.h)
        struct lora_config lc;
        char init[1100];
        rc = lora_ckpt_settings(&meta, ckpt, &lc, init, sizeof(init));
        if (rc == 0) rc = lora_export(&m, out, lora_mode, dt, strchr(init, ':') ? strchr(init, ':') + 1 : init);
        if (rc == 0) printf("LoRA adapters (rank %d) exported %s\n", lc.rank, strcmp(lora_mode, "peft") ? "merged" : "in PEFT's layout");
    } else if (rc == 0) {
        rc = hf_save(&m, out, dt);
    }
    ckpt_meta_free(&meta);
    if (rc == 0) {
        snprintf(from, sizeof(from), "%s/tokenizer.model", run_dir);
        snprintf(to, sizeof(to), "%s/tokenizer.model", out);
        rc = fs_copy_file(from, to);
    }
    if (rc == 0) printf("exported %s (%s) to %s\n", ckpt, dtype, out);
    if (m.be) llama_free(&m);
    grid_finalize(&g);
    return rc;
}
