// LoRA checkpoints through the common checkpoint code (see lora_ckpt.h).
#include "train/lora_ckpt.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/comm.h"
#include "core/config.h"
#include "core/error.h"
#include "core/fs.h"
#include "model/hf.h"
#include "model/meta.h"
#include "model/ops/backends.h"

struct llama lora_ckpt_view(const struct llama *m) {
    struct llama v;
    memset(&v, 0, sizeof(v));
    v.cfg = m->cfg;
    v.be = m->be;
    v.tp = m->tp;
    v.layout = m->lora->layout;
    v.params = m->lora->params;
    v.master = m->lora->master;
    v.master_n = m->lora->master ? m->lora->layout.total : 0;
    return v;
}

int lora_ckpt_settings(const struct ckpt_meta *meta, const char *file, struct lora_config *lc, char **init) {
    struct cfg c;
    cfg_init(&c);
    memset(lc, 0, sizeof(*lc));
    if (init) *init = NULL;
    int rc = cfg_load_string(&c, meta->run_ini ? meta->run_ini : "", file);
    if (rc == 0) {
        lc->rank = (int)cfg_int(&c, "lora.rank", 0);
        lc->alpha = (float)cfg_float(&c, "lora.alpha", 16);
        lc->dropout = (float)cfg_float(&c, "lora.dropout", 0);
        rc = lora_parse_targets(cfg_str(&c, "lora.targets", "q,v"), &lc->targets);
        if (init) *init = fs_printf("%s", cfg_str(&c, "model.init", "random"));
        if (rc) err_prefix("%s: run_config lora.targets", file);
    }
    cfg_free(&c);
    return rc;
}

// The base from model.init (init), then the adapters from the file.
static int open_base_and_adapters(struct llama *m, const struct backend *be, const char *file,
                                  const struct ckpt_meta *meta, const struct lora_config *lc, const char *init) {
    struct llama_config c = {0};
    if (llama_config_from_ini(&c, meta->model_ini, file) != 0) return -1;
    if (llama_init(m, &c, be, comm_self()) != 0) return -1;
    int rc = 0;
    if (!strncmp(init, "hf:", 3)) rc = hf_load_weights(m, init + 3);
    else if (!strncmp(init, "meta:", 5)) rc = meta_load_weights(m, init + 5);
    else return err_set("%s: a LoRA checkpoint whose base is model.init = %s: only hf:DIR or meta:DIR bases can be reopened", file, init);
    if (rc) return err_prefix("%s: its base model (model.init = %s)", file, init);
    llama_alloc_acts(m, 1, 1, 0);
    if (lora_attach(m, lc, 0) != 0) return -1;
    struct llama v = lora_ckpt_view(m);
    struct ckpt_ctx x = {MPI_COMM_SELF, 0, 0};
    return ckpt_load(&x, file, &v, NULL);
}

int lora_ckpt_open(struct llama *m, const struct backend *be, const char *file, const struct ckpt_meta *meta) {
    struct lora_config lc;
    char *init = NULL;
    if (lora_ckpt_settings(meta, file, &lc, &init) != 0) return -1;
    CHECK(lc.rank > 0);
    int rc = open_base_and_adapters(m, be, file, meta, &lc, init);
    free(init);
    return rc;
}
