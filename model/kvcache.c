// Inference with a key/value cache (model/kvcache.h). block() is llama.c's block_forward for rows at
// positions pos..pos+T-1 of one sequence: RoPE reads the tables from row pos on, and attention_decode
// stores the rows' keys and values in the layer's cache before attending to rows 0..pos+i.
#include "model/kvcache.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "model/lora.h"

#define W(kind, l) be_at(m->be, BUF_PARAM, m->params, param_get(&m->layout, (kind), (l))->offset)

struct kv_views {
    dbuf *x, *xmid, *xn, *y, *qkv, *att, *gu, *h, *logits, *rstd;
};

static size_t qkv_width(const struct llama *m) {
    return (size_t)(m->layout.NH + 2 * m->layout.KVH) * m->cfg.head_dim;
}

// Scratch layout, counted (base NULL) or carved.
static size_t carve(const struct llama *m, int chunk, dbuf *base, struct kv_views *v) {
    const size_t R = (size_t)chunk, C = (size_t)m->cfg.dim, F = (size_t)m->layout.F;
    const size_t NHS = (size_t)m->layout.NH * m->cfg.head_dim;
    size_t sizes[] = {R * C, R * C, R * C, R * C, R * qkv_width(m), R * NHS, R * 2 * F, R * F, (size_t)m->layout.Vl};
    dbuf **slots[] = {&v->x, &v->xmid, &v->xn, &v->y, &v->qkv, &v->att, &v->gu, &v->h, &v->logits};
    size_t off = 0;
    for (int i = 0; i < 9; i++) {
        if (base) *slots[i] = be_at(m->be, BUF_ACT, base, off);
        off += sizes[i];
    }
    return off;
}

void llama_kv_sizes(const struct llama *m, int cap, int chunk, size_t *act, size_t *act32) {
    struct kv_views v;
    size_t kvn = (size_t)m->cfg.n_layers * cap * m->layout.KVH * m->cfg.head_dim;
    *act = 2 * kvn + carve(m, chunk, NULL, &v);
    *act32 = (size_t)chunk;
}

int llama_kv_init(struct llama_kv *kv, struct llama *m, int cap, int chunk) {
    memset(kv, 0, sizeof(*kv));
    if (m->tp->size != 1) return err_set("sampling with a KV cache runs on one rank (tp = %d)", m->tp->size);
    if (cap < 1 || cap > m->cfg.max_seq_len)
        return err_set("KV cache of %d positions: the model has max_seq_len %d", cap, m->cfg.max_seq_len);
    if (chunk < 1 || chunk > cap) chunk = cap;
    if (m->lora) lora_merge(m);  // the cached blocks below have no LoRA hooks: W + (alpha/r) B A instead
    const struct backend *be = m->be;
    kv->m = m;
    kv->cap = cap;
    kv->chunk = chunk;
    size_t kvn = (size_t)m->cfg.n_layers * cap * m->layout.KVH * m->cfg.head_dim;
    kv->k = be->alloc(be, BUF_ACT, kvn);
    kv->v = be->alloc(be, BUF_ACT, kvn);
    struct kv_views v;
    kv->act = be->alloc(be, BUF_ACT, carve(m, chunk, NULL, &v));
    kv->act32 = be->alloc(be, BUF_ACT32, (size_t)chunk);
    kv->tok = be->alloc(be, BUF_INT, (size_t)chunk);
    kv->host_logits = xmalloc(sizeof(float) * (size_t)m->layout.Vl);
    return 0;
}

void llama_kv_free(struct llama_kv *kv) {
    if (!kv->m) return;
    const struct backend *be = kv->m->be;
    be->free(be, kv->k);
    be->free(be, kv->v);
    be->free(be, kv->act);
    be->free(be, kv->act32);
    be->free(be, kv->tok);
    free(kv->host_logits);
    memset(kv, 0, sizeof(*kv));
}

// T rows at positions pos..pos+T-1 through layer l: v->x (T,C) in and out.
static void block(struct llama_kv *kv, const struct kv_views *v, int l, int T) {
    struct llama *m = kv->m;
    const struct backend *be = m->be;
    const struct ops *op = be->ops;
    const struct param_layout *pl = &m->layout;
    const int C = m->cfg.dim, HS = m->cfg.head_dim, NH = pl->NH, KVH = pl->KVH, F = pl->F, pos = kv->pos;
    const int QKV = (int)qkv_width(m);
    const size_t layer = (size_t)l * kv->cap * KVH * HS, half = (size_t)HS / 2;

    op->rmsnorm_forward(be, v->xn, v->rstd, v->x, W(PARAM_ATTN_NORM, l), T, C, m->cfg.norm_eps);
    op->matmul_forward(be, v->qkv, v->xn, W(PARAM_WQ, l), T, C, QKV);
    op->rope_forward(be, v->qkv, be_at(be, BUF_STATE, m->rope_cos, (size_t)pos * half),
                     be_at(be, BUF_STATE, m->rope_sin, (size_t)pos * half), NULL, 1, T, NH + KVH, HS, QKV);
    op->attention_decode(be, v->att, be_at(be, BUF_ACT, kv->k, layer), be_at(be, BUF_ACT, kv->v, layer), v->qkv, T,
                         pos, NH, KVH, HS);
    op->matmul_forward(be, v->y, v->att, W(PARAM_WO, l), T, NH * HS, C);
    op->residual_forward(be, v->xmid, v->x, v->y, (size_t)T * C);

    op->rmsnorm_forward(be, v->xn, v->rstd, v->xmid, W(PARAM_FFN_NORM, l), T, C, m->cfg.norm_eps);
    op->matmul_forward(be, v->gu, v->xn, W(PARAM_WGATE, l), T, C, 2 * F);
    op->swiglu_forward(be, v->h, v->gu, T, F);
    op->matmul_forward(be, v->y, v->h, W(PARAM_WDOWN, l), T, F, C);
    op->residual_forward(be, v->x, v->xmid, v->y, (size_t)T * C);  // the next layer's input
}

void llama_kv_forward(struct llama_kv *kv, const int *tokens, int n, float *logits) {
    struct llama *m = kv->m;
    CHECKF(n >= 1 && kv->pos + n <= kv->cap, "KV cache: %d + %d tokens exceed its %d positions", kv->pos, n, kv->cap);
    const struct backend *be = m->be;
    const struct ops *op = be->ops;
    const struct param_layout *pl = &m->layout;
    const int C = m->cfg.dim;
    struct kv_views v;
    carve(m, kv->chunk, kv->act, &v);
    v.rstd = kv->act32;
    int T = 0;
    for (int done = 0; done < n; done += T) {
        T = n - done < kv->chunk ? n - done : kv->chunk;
        be->ints_from_host(be, kv->tok, tokens + done, (size_t)T);
        op->embedding_forward(be, v.x, kv->tok, W(PARAM_EMBED, -1), T, C, pl->vstart, pl->Vl);
        for (int l = 0; l < m->cfg.n_layers; l++) block(kv, &v, l, T);
        kv->pos += T;
    }
    // the last row only: final norm and lm_head
    dbuf *last = be_at(be, BUF_ACT, v.x, (size_t)(T - 1) * C);
    op->rmsnorm_forward(be, v.xn, v.rstd, last, W(PARAM_NORM, -1), 1, C, m->cfg.norm_eps);
    dbuf *head = m->cfg.tie_embeddings ? W(PARAM_EMBED, -1) : W(PARAM_LM_HEAD, -1);
    op->matmul_forward(be, v.logits, v.xn, head, 1, C, pl->Vl);
    be->to_host(be, kv->host_logits, v.logits, BUF_ACT, (size_t)pl->Vl);
    memcpy(logits, kv->host_logits, sizeof(float) * (size_t)m->cfg.vocab_size);
}
