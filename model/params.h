// The parameter layout: every tensor of the model, by its Hugging Face name, as one rank holds it.
//
// All parameters live in one block, in this order: embed_tokens, then per layer input_layernorm,
// q_proj, k_proj, v_proj, o_proj, post_attention_layernorm, gate_proj, up_proj, down_proj, then norm and
// lm_head (absent when tied). q/k/v are adjacent, so together they are one (NH+2KVH)*HS x C matrix
// (one GEMM); so are gate/up (2F x C). Gradients use the same layout in their own block.
//
// Under tensor parallelism (tp ranks) each rank holds a slice of the canonical tensor: rows of q/k/v
// (by heads), gate/up (by ffn hidden), embed_tokens/lm_head (by vocabulary, padded to a multiple of tp);
// columns of o_proj and down_proj; norms whole. `start` is the first canonical row (or column) held.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "model/config.h"

enum param_kind {
    PARAM_EMBED, PARAM_ATTN_NORM, PARAM_WQ, PARAM_WK, PARAM_WV, PARAM_WO,
    PARAM_FFN_NORM, PARAM_WGATE, PARAM_WUP, PARAM_WDOWN, PARAM_NORM, PARAM_LM_HEAD,
};

struct param_tensor {
    char name[96];          // canonical (HF) name
    enum param_kind kind;
    int layer;              // -1 outside the blocks
    size_t offset, numel;   // in this rank's block
    int rows, cols;         // this rank's shape (rows include vocabulary padding)
    int full_rows, full_cols;  // canonical shape
    int split_dim;          // -1 whole, 0 rows split, 1 columns split
    int start;              // first canonical row (split_dim 0) or column (split_dim 1) held here
    int decay;              // AdamW weight decay applies (matrices, not norms)
};

struct param_layout {
    struct param_tensor *t;
    int n;
    size_t total;           // elements in this rank's block
    size_t layer_offset0, layer_stride;  // block of layer l starts at layer_offset0 + l * layer_stride
    size_t tail_offset;     // norm (and lm_head): everything after the last layer
    int n_layers;
    // Local sizes on this rank
    int NH, KVH, F, Vl, Vp, vstart;
};

// Builds rank `tp_rank` of `tp`'s layout. -1 with err_set when heads or kv heads do not divide by tp.
int param_layout_init(struct param_layout *pl, const struct llama_config *c, int tp, int tp_rank);
void param_layout_free(struct param_layout *pl);
const struct param_tensor *param_find(const struct param_layout *pl, const char *name);
const struct param_tensor *param_get(const struct param_layout *pl, enum param_kind kind, int layer);

// Rows of the local slice that are real (not vocabulary padding).
int param_valid_rows(const struct param_tensor *t);
// Copies between the canonical tensor `full` (full_rows x full_cols, fp32) and this rank's slice.
void param_slice_from_full(const struct param_tensor *t, float *local, const float *full);
void param_slice_to_full(const struct param_tensor *t, float *full, const float *local);
