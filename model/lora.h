// LoRA adapters (Hu et al.) on the projections of every block, with the base weights frozen, and plain
// freezing of chosen tensors.
//
// An adapted projection W (out, in) computes y = x W^T + (alpha / r) (x A^T) B^T, A (r, in), B (out, r);
// A starts uniform in +-1/sqrt(in) (PEFT's Kaiming-uniform default), B at zero, so training starts from
// the base model exactly. In llamac q/k/v and gate/up are fused matmuls, so an adapter writes its columns
// of the fused output (ops lora_scale_forward/backward): per adapter two small matmuls, u = x A^T kept for
// backward (B*T*r per adapter), and the scaled strided add.
//
// The adapters live in their own block (params, grads; PEFT's tensor names, listed in `layout` so that
// checkpoints and exports can name them); with adapters attached the model has no gradient block for the
// base weights at all (m->grads == NULL), every base matmul_backward computes only its input gradient,
// the embedding's and the norms' weight gradients are skipped, and the trainer's AdamW state covers the
// adapters only. Plain freezing (llama_freeze) keeps the gradient block but marks tensors frozen: their
// weight gradients are skipped and the trainer leaves them out of AdamW and the gradient norm.
//
// Dropout (PEFT's lora_dropout, one nn.Dropout per adapted module): in training an adapter computes
// y += (alpha / r) dropout(x) A^T B^T, with dropout on the adapter's input only (the base matmul sees x
// unchanged), inverted scaling 1 / (1 - p), and an independent mask per adapter. The mask is never stored:
// it is the counter-based hash of model/ops/dropout_mask.h (op dropout_forward) keyed by the micro-batch's
// key (lora_set_dropout; the trainer derives it from the run seed, the step, the micro-batch and the
// data-parallel rank: lora_dropout_key) mixed with the adapter's layer and target, so backward (and the
// forward recomputed under run.recompute) draws the same mask again, and a resumed run draws the same
// masks as an uninterrupted one. Backward: dA += du^T dropout(x) (dropout(x) recomputed into the scratch
// xd) and dx += dropout(du A) with the same key and scale, the exact gradient of the forward. Dropout is
// off unless the trainer turns it on for a micro-batch (evaluation, sampling and export never drop);
// off, or with p = 0, an adapter computes exactly what it computes without dropout.
//
// Merging: W' = W + (alpha / r) B A (lora_merge_to_host); PEFT's layout: adapter_model.safetensors with
// "base_model.model.model.layers.L.self_attn.q_proj.lora_A.weight" (r, in) and "...lora_B.weight"
// (out, r), and adapter_config.json (r, lora_alpha, lora_dropout, target_modules, peft_type "LORA").
// Limits: one tensor-parallel rank (tp = 1), no ZeRO-1.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "model/hf.h"
#include "model/llama.h"
#include "model/params.h"
#include "model/safetensors.h"

enum lora_target { LORA_Q, LORA_K, LORA_V, LORA_O, LORA_GATE, LORA_UP, LORA_DOWN, LORA_NT };

struct lora_config {
    int rank;            // r (0: no adapters)
    float alpha;         // the update is scaled by alpha / r
    float dropout;       // p in [0, 1) on the adapter's input in training (PEFT's lora_dropout)
    unsigned targets;    // bit (1 << enum lora_target) per adapted projection
};

struct lora_adapter {
    int layer, target, group;  // group: 0 qkv, 1 o, 2 gate/up, 3 down (the fused matmul it adds into)
    int in, out, col0;         // A (r, in), B (out, r); columns [col0, col0 + out) of the group's output
    const struct param_tensor *A, *B;  // in the adapter layout
    dbuf *u;                   // (cap_BT, r) x A^T, kept for backward
};

struct lora {
    struct lora_config c;
    float scale;               // alpha / r
    int n;                     // adapters
    struct lora_adapter *ad;
    struct param_layout layout;  // A then B of each adapter, PEFT names, in the adapter block
    dbuf *params, *grads;      // BUF_PARAM, BUF_GRAD: layout.total each
    dbuf *master;              // the optimizer's fp32 master weights of the block (set by the trainer), or NULL
    dbuf *acts, *tmp, *du, *dx;  // u of every adapter; scratch (BT, max out), (BT, r), (BT, max in)
    dbuf *xd;                  // scratch (BT, max in): dropout(x) of the adapter at hand (NULL when dropout 0)
    int cap_BT;
    int drop_on;               // dropout active for the next forward/backward (lora_set_dropout)
    uint64_t drop_key;         // the micro-batch's dropout key
};

// "q,k,v,o,gate,up,down" (also q_proj, ..., and "all"); -1 with err_set naming the unknown one.
int lora_parse_targets(const char *s, unsigned *targets);
// "q,v" style text of a target set (for logs and adapter_config.json); out of at least 64 bytes.
void lora_targets_str(unsigned targets, char *out, size_t n);
// Adapter parameter count of a model config.
long long lora_param_count(const struct llama_config *c, const struct lora_config *lc);

// Attaches adapters to m (after llama_init and llama_alloc_acts; tp = 1): the adapter block, A from a
// generator keyed by (seed, name), B zero; frees the base gradient block (m->grads = NULL). -1 with err_set.
int lora_attach(struct llama *m, const struct lora_config *lc, uint64_t seed);
// (Re)writes the adapters' starting values: A from a generator keyed by (seed, name), B zero (and the
// master weights when the trainer has set them).
void lora_init_values(struct llama *m, uint64_t seed);
// Sizes the adapters' activations for the model's cap_B x cap_T (llama_alloc_acts calls it).
void lora_alloc_acts(struct llama *m);
void lora_free(struct llama *m);

// Dropout in training (see above): on = 1 makes the following forward and backward drop with the
// micro-batch key `key` (a no-op when lora.dropout is 0); on = 0 turns it off (the state after attach).
void lora_set_dropout(struct llama *m, int on, uint64_t key);
// The key of micro-batch `micro` of optimizer step `step` (0-based) on data-parallel rank dp_rank of the
// run seeded `seed`: a function of these alone, so a resumed run draws the same masks.
uint64_t lora_dropout_key(uint64_t seed, long step, int micro, int dp_rank);

// Forward/backward hooks of model/llama.c: after the base matmul of group g of layer l (x (BT,in) its
// input, y (BT,OCg) its output), and after the base matmul_backward (dy the gradient of y, dx += the
// adapters' part of the input gradient).
void lora_forward_group(struct llama *m, int l, int g, const dbuf *x, dbuf *y, int BT, int OCg);
void lora_backward_group(struct llama *m, int l, int g, const dbuf *dy, const dbuf *x, dbuf *dx, int BT, int OCg);

// Adapter values from/to fp32 host memory (layout order); setting also writes the master weights.
void lora_params_to_host(const struct llama *m, float *host);
void lora_params_from_host(struct llama *m, const float *host);
void lora_grads_to_host(const struct llama *m, float *host);
// The model's parameters (layout order, fp32 host) with every adapter merged: W + (alpha/r) B A.
void lora_merge_to_host(const struct llama *m, float *host);
// Merges every adapter into its base weight (W + (alpha/r) B A) and frees the adapters: a plain model that
// computes the same, for inference paths without LoRA hooks (the KV cache of model/kvcache.h).
void lora_merge(struct llama *m);
// PEFT's layout in dir: adapter_model.safetensors + adapter_config.json (base_model_name_or_path = base).
int lora_save_peft(const struct llama *m, const char *dir, const char *base);
// `llamac export` of a model with adapters: mode "merge" writes a Hugging Face directory of the merged
// weights (hf_save_opts: dtype, shards), "peft" the adapters in PEFT's layout (base: the base model's
// path, for the config).
int lora_export(struct llama *m, const char *dir, const char *mode, const struct hf_save_opts *o, const char *base);
// Reads adapter_config.json and adapter_model.safetensors of dir into a lora_config (lora_read_peft_config)
// and into attached adapters (lora_load_peft: same rank and targets). -1 with err_set naming the file.
int lora_read_peft_config(const char *dir, struct lora_config *lc);
int lora_load_peft(struct llama *m, const char *dir);

// Plain freezing: "embeddings, layers 0-11, norm, lm_head" (also "layer 3", "layers 2-5"). Marks the
// tensors frozen in m (their weight gradients are skipped). -1 with err_set on an unknown item.
int llama_freeze(struct llama *m, const char *spec);
