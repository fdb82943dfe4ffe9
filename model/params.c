#include "model/params.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

static void add(struct param_layout *pl, int *cap, const char *name, enum param_kind kind, int layer, int rows,
                int cols, int full_rows, int full_cols, int split_dim, int start, int decay) {
    if (pl->n == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        pl->t = xrealloc(pl->t, (size_t)*cap * sizeof(*pl->t));
    }
    struct param_tensor *t = &pl->t[pl->n++];
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->kind = kind;
    t->layer = layer;
    t->rows = rows;
    t->cols = cols;
    t->full_rows = full_rows;
    t->full_cols = full_cols;
    t->split_dim = split_dim;
    t->start = start;
    t->decay = decay;
    t->offset = pl->total;
    t->numel = (size_t)rows * cols;
    pl->total += t->numel;
}

int param_layout_init(struct param_layout *pl, const struct llama_config *c, int tp, int r) {
    memset(pl, 0, sizeof(*pl));
    if (c->n_heads % tp || c->n_kv_heads % tp || c->ffn_hidden % tp)
        return err_set("tensor parallel tp=%d does not divide the model: n_heads %d, n_kv_heads %d and ffn_hidden %d "
                       "must all be multiples of tp", tp, c->n_heads, c->n_kv_heads, c->ffn_hidden);
    const int C = c->dim, HS = c->head_dim;
    pl->n_layers = c->n_layers;
    pl->NH = c->n_heads / tp;
    pl->KVH = c->n_kv_heads / tp;
    pl->F = c->ffn_hidden / tp;
    pl->Vp = (c->vocab_size + tp - 1) / tp * tp;
    pl->Vl = pl->Vp / tp;
    pl->vstart = r * pl->Vl;
    const int split = tp > 1;
    int cap = 0;
    char name[96];
    add(pl, &cap, "model.embed_tokens.weight", PARAM_EMBED, -1, pl->Vl, C, c->vocab_size, C, split ? 0 : -1,
        pl->vstart, 1);
    for (int l = 0; l < c->n_layers; l++) {
        if (l == 0) pl->layer_offset0 = pl->total;
        if (l == 1) pl->layer_stride = pl->total - pl->layer_offset0;
#define NAME(fmt) (snprintf(name, sizeof(name), "model.layers.%d." fmt, l), name)
        add(pl, &cap, NAME("input_layernorm.weight"), PARAM_ATTN_NORM, l, 1, C, 1, C, -1, 0, 0);
        add(pl, &cap, NAME("self_attn.q_proj.weight"), PARAM_WQ, l, pl->NH * HS, C, c->n_heads * HS, C,
            split ? 0 : -1, r * pl->NH * HS, 1);
        add(pl, &cap, NAME("self_attn.k_proj.weight"), PARAM_WK, l, pl->KVH * HS, C, c->n_kv_heads * HS, C,
            split ? 0 : -1, r * pl->KVH * HS, 1);
        add(pl, &cap, NAME("self_attn.v_proj.weight"), PARAM_WV, l, pl->KVH * HS, C, c->n_kv_heads * HS, C,
            split ? 0 : -1, r * pl->KVH * HS, 1);
        add(pl, &cap, NAME("self_attn.o_proj.weight"), PARAM_WO, l, C, pl->NH * HS, C, c->n_heads * HS,
            split ? 1 : -1, r * pl->NH * HS, 1);
        add(pl, &cap, NAME("post_attention_layernorm.weight"), PARAM_FFN_NORM, l, 1, C, 1, C, -1, 0, 0);
        add(pl, &cap, NAME("mlp.gate_proj.weight"), PARAM_WGATE, l, pl->F, C, c->ffn_hidden, C, split ? 0 : -1,
            r * pl->F, 1);
        add(pl, &cap, NAME("mlp.up_proj.weight"), PARAM_WUP, l, pl->F, C, c->ffn_hidden, C, split ? 0 : -1,
            r * pl->F, 1);
        add(pl, &cap, NAME("mlp.down_proj.weight"), PARAM_WDOWN, l, C, pl->F, C, c->ffn_hidden, split ? 1 : -1,
            r * pl->F, 1);
#undef NAME
    }
    if (c->n_layers == 1) pl->layer_stride = pl->total - pl->layer_offset0;
    pl->tail_offset = pl->total;
    add(pl, &cap, "model.norm.weight", PARAM_NORM, -1, 1, C, 1, C, -1, 0, 0);
    if (!c->tie_embeddings)
        add(pl, &cap, "lm_head.weight", PARAM_LM_HEAD, -1, pl->Vl, C, c->vocab_size, C, split ? 0 : -1, pl->vstart, 1);
    // Norm weights are stored as (1, C) rows above only to share the code; canonical shape is (C).
    return 0;
}

void param_layout_free(struct param_layout *pl) {
    free(pl->t);
    memset(pl, 0, sizeof(*pl));
}

const struct param_tensor *param_find(const struct param_layout *pl, const char *name) {
    for (int i = 0; i < pl->n; i++)
        if (!strcmp(pl->t[i].name, name)) return &pl->t[i];
    return NULL;
}

// The layout is regular (embed, 9 tensors per layer in enum order, norm, lm_head), so the index is
// computed, not searched: the model looks tensors up for every op of every step.
const struct param_tensor *param_get(const struct param_layout *pl, enum param_kind kind, int layer) {
    const int per_layer = PARAM_WDOWN - PARAM_ATTN_NORM + 1, L = pl->n_layers;
    int i;
    if (kind == PARAM_EMBED) i = 0;
    else if (kind == PARAM_NORM) i = 1 + L * per_layer;
    else if (kind == PARAM_LM_HEAD) i = 2 + L * per_layer;
    else i = (layer >= 0 && layer < L) ? 1 + layer * per_layer + (int)(kind - PARAM_ATTN_NORM) : -1;
    if (i < 0 || i >= pl->n || pl->t[i].kind != kind || pl->t[i].layer != layer) return NULL;
    return &pl->t[i];
}

int param_valid_rows(const struct param_tensor *t) {
    if (t->split_dim != 0) return t->rows;
    int n = t->full_rows - t->start;
    return n < 0 ? 0 : (n < t->rows ? n : t->rows);
}

void param_slice_from_full(const struct param_tensor *t, float *local, const float *full) {
    if (t->split_dim == 1) {
        for (int r = 0; r < t->rows; r++)
            memcpy(local + (size_t)r * t->cols, full + (size_t)r * t->full_cols + t->start, sizeof(float) * (size_t)t->cols);
        return;
    }
    size_t row0 = t->split_dim == 0 ? (size_t)t->start : 0;
    int vr = param_valid_rows(t);
    memcpy(local, full + row0 * t->cols, sizeof(float) * (size_t)vr * t->cols);
    memset(local + (size_t)vr * t->cols, 0, sizeof(float) * (size_t)(t->rows - vr) * t->cols);
}

void param_slice_to_full(const struct param_tensor *t, float *full, const float *local) {
    if (t->split_dim == 1) {
        for (int r = 0; r < t->rows; r++)
            memcpy(full + (size_t)r * t->full_cols + t->start, local + (size_t)r * t->cols, sizeof(float) * (size_t)t->cols);
        return;
    }
    size_t row0 = t->split_dim == 0 ? (size_t)t->start : 0;
    memcpy(full + row0 * t->cols, local, sizeof(float) * (size_t)param_valid_rows(t) * t->cols);
}
