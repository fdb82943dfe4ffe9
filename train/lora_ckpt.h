// LoRA runs' checkpoints (model/lora.h): the checkpoint file of train/ckpt.h holding the adapters only.
//
// A LoRA run saves its adapters and their AdamW moments under /params, /adam_m, /adam_v with PEFT's tensor
// names, through the same ckpt_save/ckpt_load as every run: they are given a view of the model whose
// parameter layout is the adapters' (lora_ckpt_view). The base weights are not stored: the checkpoint's
// run_config (model.init and the [lora] section) is the reference to them, and they are read from there
// again on resume, by `llamac sample`, `eval` and `export`.
#pragma once
#include <stddef.h>

#include "model/llama.h"
#include "model/lora.h"
#include "train/ckpt.h"

// A model whose parameter layout, parameters and master weights are m's adapters (for ckpt_save/load).
struct llama lora_ckpt_view(const struct llama *m);
// The [lora] settings and model.init (into *init, heap: free it; may be NULL when not wanted) of a
// checkpoint's run config; lc->rank 0 when it is not a LoRA run.
int lora_ckpt_settings(const struct ckpt_meta *meta, const char *file, struct lora_config *lc, char **init);
// Opens a LoRA checkpoint for inference on backend `be`: the base from model.init, the adapters from the file.
int lora_ckpt_open(struct llama *m, const struct backend *be, const char *file, const struct ckpt_meta *meta);
