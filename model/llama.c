// The LLaMA forward and backward over the op table. Read llama_forward and llama_backward top to bottom:
// they are the model. Pre-norm blocks: h = x + o(attn(rope(qkv(norm(x))))), out = h + down(swiglu(gate_up(norm(h)))).
#include "model/llama.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/rng.h"
#include "model/lora.h"

// ---------------------------------------------------------------------------------------------------
// Set-up
// ---------------------------------------------------------------------------------------------------

static void rope_tables(const struct llama_config *c, float *cosb, float *sinb) {
    const int half = c->head_dim / 2;
    double *inv = xmalloc(sizeof(double) * (size_t)half);
    for (int i = 0; i < half; i++) {
        inv[i] = pow((double)c->rope_theta, -2.0 * i / c->head_dim);
        if (c->rope_scaling == ROPE_SCALING_LINEAR) {
            inv[i] /= c->rope_factor;
        } else if (c->rope_scaling == ROPE_SCALING_LLAMA3) {  // as Meta's apply_scaling for Llama 3.1
            double low_wl = c->rope_original_max_seq_len / c->rope_low_freq_factor;
            double high_wl = c->rope_original_max_seq_len / c->rope_high_freq_factor;
            double wl = 2 * M_PI / inv[i];
            if (wl > low_wl) {
                inv[i] /= c->rope_factor;
            } else if (wl >= high_wl) {
                double s = (c->rope_original_max_seq_len / wl - c->rope_low_freq_factor) /
                           (c->rope_high_freq_factor - c->rope_low_freq_factor);
                inv[i] = (1 - s) * inv[i] / c->rope_factor + s * inv[i];
            }
        }
    }
    for (int t = 0; t < c->max_seq_len; t++)
        for (int i = 0; i < half; i++) {
            cosb[(size_t)t * half + i] = (float)cos(t * inv[i]);
            sinb[(size_t)t * half + i] = (float)sin(t * inv[i]);
        }
    free(inv);
}

int llama_init(struct llama *m, const struct llama_config *cfg, const struct backend *be, struct comm *tp) {
    memset(m, 0, sizeof(*m));
    if (llama_config_validate(cfg, cfg->name[0] ? cfg->name : "model") != 0) return -1;
    m->cfg = *cfg;
    m->be = be;
    m->tp = tp;
    if (param_layout_init(&m->layout, cfg, tp->size, tp->rank) != 0) return -1;
    m->params = be->alloc(be, BUF_PARAM, m->layout.total);
    m->grads = be->alloc(be, BUF_GRAD, m->layout.total);
    size_t nrope = (size_t)cfg->max_seq_len * (cfg->head_dim / 2);
    float *cosb = xmalloc(sizeof(float) * nrope), *sinb = xmalloc(sizeof(float) * nrope);
    rope_tables(cfg, cosb, sinb);
    m->rope_cos = be->alloc(be, BUF_STATE, nrope);
    m->rope_sin = be->alloc(be, BUF_STATE, nrope);
    be->from_host(be, m->rope_cos, cosb, BUF_STATE, nrope);
    be->from_host(be, m->rope_sin, sinb, BUF_STATE, nrope);
    free(cosb);
    free(sinb);
    return 0;
}

static void llama_free_acts(struct llama *m) {
    const struct backend *be = m->be;
    if (m->acts) be->free(be, m->acts);
    if (m->acts32) be->free(be, m->acts32);
    if (m->tokens) be->free(be, m->tokens);
    if (m->targets) be->free(be, m->targets);
    if (m->docs) be->free(be, m->docs);
    free(m->layers);
    free(m->host_losses);
    m->acts = m->acts32 = m->tokens = m->targets = m->docs = NULL;
    m->docs_on = 0;
    m->layers = NULL;
    m->host_losses = NULL;
}

void llama_free(struct llama *m) {
    if (!m->be) return;
    llama_free_acts(m);
    lora_free(m);
    free(m->frozen);
    m->be->free(m->be, m->params);
    if (m->grads) m->be->free(m->be, m->grads);
    m->be->free(m->be, m->rope_cos);
    m->be->free(m->be, m->rope_sin);
    param_layout_free(&m->layout);
    memset(m, 0, sizeof(*m));
}

// Carves the activation blocks. With m == NULL it only counts, so that llama_act_sizes (used by
// `llamac inspect`) and llama_alloc_acts can never disagree.
struct carver {
    const struct backend *be;
    dbuf *base[2];
    size_t used[2];
};

// Every view starts on a multiple of 8 elements (16 bytes in bf16): the CUDA backend's vector loads,
// cp.async tiles and cuBLASLt's fastest kernels need 16-byte aligned operands (at most 7 elements of
// padding per view).
static dbuf *take(struct carver *cv, int is32, size_t n) {
    dbuf *p = cv->base[is32] ? be_at(cv->be, is32 ? BUF_ACT32 : BUF_ACT, cv->base[is32], cv->used[is32]) : NULL;
    cv->used[is32] += (n + 7) / 8 * 8;
    return p;
}

static void take_layer(struct carver *cv, struct llama_layer_acts *a, const struct llama_config *c,
                       const struct param_layout *pl, size_t BT, int B, int T) {
    const size_t C = (size_t)c->dim, HS = (size_t)c->head_dim;
    a->rstd1 = take(cv, 1, BT);
    a->xn1 = take(cv, 0, BT * C);
    a->qkv = take(cv, 0, BT * (size_t)(pl->NH + 2 * pl->KVH) * HS);
    a->att = take(cv, 0, BT * (size_t)pl->NH * HS);
    a->lse = take(cv, 1, (size_t)B * pl->NH * T);
    a->xmid = take(cv, 0, BT * C);
    a->rstd2 = take(cv, 1, BT);
    a->xn2 = take(cv, 0, BT * C);
    a->gu = take(cv, 0, BT * 2 * (size_t)pl->F);
    a->h = take(cv, 0, BT * (size_t)pl->F);
}

static void act_plan(struct carver *cv, struct llama *m, const struct llama_config *c, const struct param_layout *pl,
                     int B, int T, int recompute) {
    const size_t BT = (size_t)B * T, C = (size_t)c->dim, HS = (size_t)c->head_dim;
    const int L = c->n_layers;
    struct llama_layer_acts dummy;
    for (int l = 0; l <= L; l++) {
        struct llama_layer_acts *a = m ? &m->layers[l] : &dummy;
        a->x = take(cv, 0, BT * C);
        if (l < L && !recompute) take_layer(cv, a, c, pl, BT, B, T);
    }
    if (recompute) {
        struct llama_layer_acts *s = m ? &m->scratch : &dummy;
        take_layer(cv, s, c, pl, BT, B, T);
        if (m)
            for (int l = 0; l < L; l++) {
                dbuf *x = m->layers[l].x;
                m->layers[l] = *s;
                m->layers[l].x = x;
            }
    }
    dbuf *p;
#define TAKE(field, is32, n) p = take(cv, is32, n); if (m) m->field = p
    TAKE(rstdf, 1, BT);
    TAKE(xnf, 0, BT * C);
    TAKE(logits, 0, BT * (size_t)pl->Vl);
    TAKE(rowmax, 1, BT);
    TAKE(sums, 1, 2 * BT);
    TAKE(losses, 1, BT);
    TAKE(lse_ce, 1, BT);
    TAKE(y, 0, BT * C);
    TAKE(dres, 0, BT * C);
    TAKE(dxn, 0, BT * C);
    TAKE(dqkv, 0, BT * (size_t)(pl->NH + 2 * pl->KVH) * HS);
    TAKE(datt, 0, BT * (size_t)pl->NH * HS);
    TAKE(dgu, 0, BT * 2 * (size_t)pl->F);
    TAKE(dh, 0, BT * (size_t)pl->F);
#undef TAKE
}

void llama_act_sizes(const struct llama_config *c, const struct param_layout *pl, int B, int T, int recompute,
                     size_t *act, size_t *act32) {
    struct carver cv = {0};
    act_plan(&cv, NULL, c, pl, B, T, recompute);
    *act = cv.used[0];
    *act32 = cv.used[1];
}

void llama_alloc_acts(struct llama *m, int B, int T, int recompute) {
    CHECKF(T <= m->cfg.max_seq_len, "T %d > max_seq_len %d", T, m->cfg.max_seq_len);
    llama_free_acts(m);
    size_t n, n32;
    llama_act_sizes(&m->cfg, &m->layout, B, T, recompute, &n, &n32);
    m->cap_B = m->B = B;
    m->cap_T = m->T = T;
    m->recompute = recompute;
    m->layers = xcalloc((size_t)m->cfg.n_layers + 1, sizeof(*m->layers));
    struct carver cv = {m->be, {m->be->alloc(m->be, BUF_ACT, n), m->be->alloc(m->be, BUF_ACT32, n32)}, {0, 0}};
    m->acts = cv.base[0];
    m->acts32 = cv.base[1];
    act_plan(&cv, m, &m->cfg, &m->layout, B, T, recompute);
    m->tokens = m->be->alloc(m->be, BUF_INT, (size_t)B * T);
    m->targets = m->be->alloc(m->be, BUF_INT, (size_t)B * T);
    m->docs = m->be->alloc(m->be, BUF_INT, (size_t)B * T);
    m->host_losses = xmalloc(sizeof(float) * (size_t)B * T);
    if (m->lora) lora_alloc_acts(m);
}

void llama_init_random(struct llama *m, uint64_t seed) {
    const struct param_layout *pl = &m->layout;
    float *host = xmalloc(sizeof(float) * pl->total);
    const double std = 0.02, std_out = 0.02 / sqrt(2.0 * m->cfg.n_layers);
    for (int i = 0; i < pl->n; i++) {
        const struct param_tensor *t = &pl->t[i];
        float *dst = host + t->offset;
        if (t->kind == PARAM_ATTN_NORM || t->kind == PARAM_FFN_NORM || t->kind == PARAM_NORM) {
            for (size_t k = 0; k < t->numel; k++) dst[k] = 1.0f;
            continue;
        }
        const double s = (t->kind == PARAM_WO || t->kind == PARAM_WDOWN) ? std_out : std;
        const uint64_t key = rng_hash_str(t->name, seed);
        const int vr = param_valid_rows(t);
#pragma omp parallel for
        for (int r = 0; r < t->rows; r++)
            for (int c = 0; c < t->cols; c++) {
                if (r >= vr) { dst[(size_t)r * t->cols + c] = 0.0f; continue; }
                uint64_t R = t->split_dim == 0 ? (uint64_t)(t->start + r) : (uint64_t)r;
                uint64_t Cc = t->split_dim == 1 ? (uint64_t)(t->start + c) : (uint64_t)c;
                dst[(size_t)r * t->cols + c] = (float)(s * rng_normal_at(key, R * (uint64_t)t->full_cols + Cc));
            }
    }
    llama_params_from_host(m, host);
    free(host);
}

// ---------------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------------

#define W(kind, l) be_at(m->be, BUF_PARAM, m->params, param_get(&m->layout, (kind), (l))->offset)
#define DW(kind, l) dweight_of(m, (kind), (l))

// The gradient of a parameter tensor, or NULL when it gets none (frozen, or LoRA: no base gradients).
static dbuf *dweight_of(struct llama *m, enum param_kind kind, int l) {
    const struct param_tensor *t = param_get(&m->layout, kind, l);
    if (!m->grads || (m->frozen && m->frozen[t - m->layout.t])) return NULL;
    return be_at(m->be, BUF_GRAD, m->grads, t->offset);
}

// LoRA hooks (model/lora.h): a no-op without adapters.
#define LORA_FWD(g, x, y, OCg) \
    if (m->lora) lora_forward_group(m, l, (g), (x), (y), BT, (OCg))
#define LORA_BWD(g, dy, x, dx, OCg) \
    if (m->lora) lora_backward_group(m, l, (g), (dy), (x), (dx), BT, (OCg))

// A tensor-parallel all-reduce of a buffer of the backend: a host communicator reads it from the host,
// so the backend is synchronized first; a device communicator orders itself on the stream (core/comm.h).
static void tp_all_reduce(struct llama *m, dbuf *x, size_t n, enum comm_dtype t, enum comm_op op) {
    if (m->tp->size == 1) return;
    if (!m->tp->on_device) m->be->sync(m->be);
    comm_all_reduce(m->tp, x, n, t, op);
}

// Tensor-parallel sum of a partial activation (after a row-parallel matmul in forward, at the input of a
// column-parallel one in backward), in the activations' dtype (bf16 in bf16 precision). A no-op on one rank.
static void tp_sum(struct llama *m, dbuf *x, size_t n) {
    tp_all_reduce(m, x, n, comm_dtype_of(m->be->elem_size[BUF_ACT]), COMM_SUM);
}

// One transformer block: a->x (B,T,C) in, out (B,T,C) (skipped when NULL, as in recomputation).
static void block_forward(struct llama *m, int l, const struct llama_layer_acts *a, dbuf *out, int B, int T) {
    const struct backend *be = m->be;
    const struct ops *op = be->ops;
    const struct param_layout *pl = &m->layout;
    const int BT = B * T, C = m->cfg.dim, HS = m->cfg.head_dim, NH = pl->NH, KVH = pl->KVH, F = pl->F;
    const int QKV = (NH + 2 * KVH) * HS;

    op->rmsnorm_forward(be, a->xn1, a->rstd1, a->x, W(PARAM_ATTN_NORM, l), BT, C, m->cfg.norm_eps);
    op->matmul_forward(be, a->qkv, a->xn1, W(PARAM_WQ, l), BT, C, QKV);  // q, k, v weights are adjacent
    LORA_FWD(0, a->xn1, a->qkv, QKV);
    op->rope_forward(be, a->qkv, m->rope_cos, m->rope_sin, m->docs_on ? m->docs : NULL, B, T, NH + KVH, HS, QKV);
    op->attention_forward(be, a->att, a->lse, a->qkv, m->docs_on ? m->docs : NULL, B, T, NH, KVH, HS);
    op->matmul_forward(be, m->y, a->att, W(PARAM_WO, l), BT, NH * HS, C);
    LORA_FWD(1, a->att, m->y, C);
    tp_sum(m, m->y, (size_t)BT * C);
    // xmid = x + y and its norm in one pass
    op->residual_rmsnorm_forward(be, a->xmid, a->xn2, a->rstd2, a->x, m->y, W(PARAM_FFN_NORM, l), BT, C,
                                 m->cfg.norm_eps);

    op->matmul_forward(be, a->gu, a->xn2, W(PARAM_WGATE, l), BT, C, 2 * F);  // gate, up weights are adjacent
    LORA_FWD(2, a->xn2, a->gu, 2 * F);
    op->swiglu_forward(be, a->h, a->gu, BT, F);
    if (!out) return;
    op->matmul_forward(be, m->y, a->h, W(PARAM_WDOWN, l), BT, F, C);
    LORA_FWD(3, a->h, m->y, C);
    tp_sum(m, m->y, (size_t)BT * C);
    op->residual_forward(be, out, a->xmid, m->y, (size_t)BT * C);
}

void llama_set_docs(struct llama *m, const int *docs, int B, int T) {
    m->docs_on = docs != NULL;
    if (!docs) return;
    CHECKF(m->layers && B <= m->cap_B && T <= m->cap_T, "docs B=%d T=%d exceed the activations (B=%d T=%d)", B, T,
           m->cap_B, m->cap_T);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {  // a document starts at t, or continues the previous token's
            int d = docs[(size_t)b * T + t];
            CHECKF(d == t || (t > 0 && d == docs[(size_t)b * T + t - 1]), "docs[%d,%d] = %d is not a document start", b,
                   t, d);
        }
    m->be->ints_from_host(m->be, m->docs, docs, (size_t)B * T);
}

static dbuf *lm_head_weight(struct llama *m) {
    return m->cfg.tie_embeddings ? W(PARAM_EMBED, -1) : W(PARAM_LM_HEAD, -1);
}

// A region of device work for be->run_region (core/backend.h): called directly when the backend has none,
// in a tensor-parallel group (its all-reduces leave the device) or when asked to. The key covers what
// the captured work depends on besides the contents of device memory: every buffer address, the shapes
// of the config and the batch, and the caller's scalars (the loss scale; LoRA dropout's key, which changes
// every micro-batch, so that training with dropout runs its regions directly).
static void run_region(struct llama *m, int slot, unsigned long long key, int direct, void (*fn)(void *), void *arg) {
    if (m->be->run_region && m->tp->size == 1 && !direct) m->be->run_region(m->be, slot, key, fn, arg);
    else fn(arg);
}

static unsigned long long region_key(const struct llama *m, unsigned long long extra) {
    const struct llama_config *c = &m->cfg;
    const unsigned long long v[] = {(uintptr_t)m->acts, (uintptr_t)m->acts32, (uintptr_t)m->params,
                                    (uintptr_t)m->grads, (uintptr_t)m->tokens, (uintptr_t)m->targets,
                                    (unsigned long long)m->B, (unsigned long long)m->T,
                                    (unsigned long long)m->recompute, (unsigned long long)m->layout.total,
                                    (unsigned long long)c->dim, (unsigned long long)c->n_layers,
                                    (unsigned long long)c->n_heads, (unsigned long long)c->n_kv_heads,
                                    (unsigned long long)c->head_dim, (unsigned long long)c->ffn_hidden,
                                    (unsigned long long)c->vocab_size, (unsigned long long)c->tie_embeddings,
                                    (unsigned long long)(c->norm_eps * 1e9), (unsigned long long)m->docs_on,
                                    (uintptr_t)m->docs, (uintptr_t)m->lora, (uintptr_t)m->frozen,
                                    // LoRA dropout's key is a kernel argument: a new key is new work
                                    m->lora ? (unsigned long long)m->lora->drop_on : 0,
                                    m->lora ? (unsigned long long)m->lora->drop_key : 0, extra};
    unsigned long long h = 1469598103934665603ull;  // FNV-1a over the words
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) h = (h ^ v[i]) * 1099511628211ull;
    return h;
}

static double forward_loss(struct llama *m, const int *targets, int BT, long *n_counted);

// Embedding to the per-token losses, on device buffers only (tokens and targets already uploaded).
static void forward_ops(void *arg) {
    struct llama *m = arg;
    const struct backend *be = m->be;
    const struct ops *op = be->ops;
    const struct param_layout *pl = &m->layout;
    const int B = m->B, T = m->T, BT = B * T, C = m->cfg.dim, L = m->cfg.n_layers;
    op->embedding_forward(be, m->layers[0].x, m->tokens, W(PARAM_EMBED, -1), BT, C, pl->vstart, pl->Vl);
    for (int l = 0; l < L; l++) block_forward(m, l, &m->layers[l], m->layers[l + 1].x, B, T);
    op->rmsnorm_forward(be, m->xnf, m->rstdf, m->layers[L].x, W(PARAM_NORM, -1), BT, C, m->cfg.norm_eps);
    op->matmul_forward(be, m->logits, m->xnf, lm_head_weight(m), BT, C, pl->Vl);
    op->crossentropy_max(be, m->rowmax, m->logits, BT, pl->Vl, pl->vstart, m->cfg.vocab_size);
    op->crossentropy_sums(be, m->sums, m->logits, m->rowmax, m->targets, BT, pl->Vl, pl->vstart, m->cfg.vocab_size);
    op->crossentropy_loss(be, m->losses, m->lse_ce, m->rowmax, m->sums, m->targets, BT);
}

double llama_forward(struct llama *m, const int *tokens, const int *targets, int B, int T, long *n_counted) {
    CHECKF(m->layers && B <= m->cap_B && T <= m->cap_T, "forward B=%d T=%d exceeds the activations (B=%d T=%d)", B,
           T, m->cap_B, m->cap_T);
    const struct backend *be = m->be;
    const struct ops *op = be->ops;
    const struct param_layout *pl = &m->layout;
    const int BT = B * T, C = m->cfg.dim, L = m->cfg.n_layers;
    m->B = B;  // backward uses the sizes of the last forward
    m->T = T;

    be->ints_from_host(be, m->tokens, tokens, (size_t)BT);
    if (targets && m->tp->size == 1 && be->run_region) {  // one region from the embedding to the losses
        be->ints_from_host(be, m->targets, targets, (size_t)BT);
        run_region(m, 0, region_key(m, 0), 0, forward_ops, m);
        return forward_loss(m, targets, BT, n_counted);
    }
    op->embedding_forward(be, m->layers[0].x, m->tokens, W(PARAM_EMBED, -1), BT, C, pl->vstart, pl->Vl);
    tp_sum(m, m->layers[0].x, (size_t)BT * C);
    for (int l = 0; l < L; l++) block_forward(m, l, &m->layers[l], m->layers[l + 1].x, B, T);
    op->rmsnorm_forward(be, m->xnf, m->rstdf, m->layers[L].x, W(PARAM_NORM, -1), BT, C, m->cfg.norm_eps);
    op->matmul_forward(be, m->logits, m->xnf, lm_head_weight(m), BT, C, pl->Vl);
    if (!targets) {
        if (n_counted) *n_counted = 0;
        return 0.0;
    }

    // Vocab-parallel cross-entropy: max, then sum-exp and target logit, reduced across the tp group.
    be->ints_from_host(be, m->targets, targets, (size_t)BT);
    op->crossentropy_max(be, m->rowmax, m->logits, BT, pl->Vl, pl->vstart, m->cfg.vocab_size);
    tp_all_reduce(m, m->rowmax, (size_t)BT, COMM_F32, COMM_MAX);
    op->crossentropy_sums(be, m->sums, m->logits, m->rowmax, m->targets, BT, pl->Vl, pl->vstart, m->cfg.vocab_size);
    tp_all_reduce(m, m->sums, 2 * (size_t)BT, COMM_F32, COMM_SUM);
    op->crossentropy_loss(be, m->losses, m->lse_ce, m->rowmax, m->sums, m->targets, BT);
    return forward_loss(m, targets, BT, n_counted);
}

// The sum of the counted per-token losses (downloaded) and their number.
static double forward_loss(struct llama *m, const int *targets, int BT, long *n_counted) {
    const struct backend *be = m->be;
    be->to_host(be, m->host_losses, m->losses, BUF_ACT32, (size_t)BT);
    double sum = 0.0;
    long n = 0;
    for (int i = 0; i < BT; i++)
        if (targets[i] >= 0) {
            sum += m->host_losses[i];
            n++;
        }
    if (n_counted) *n_counted = n;
    return sum;
}

// ---------------------------------------------------------------------------------------------------
// Backward: the forward read bottom to top. m->dres carries the gradient of the residual stream.
// ---------------------------------------------------------------------------------------------------

static void grads_ready(struct llama *m, size_t off, size_t n) {
    if (m->on_grads_ready) {
        if (!m->on_grads_ready_ordered) m->be->sync(m->be);
        m->on_grads_ready(m->on_grads_ready_ctx, off, n);
    }
}

static void block_backward(struct llama *m, int l, int B, int T) {
    const struct backend *be = m->be;
    const struct ops *op = be->ops;
    const struct param_layout *pl = &m->layout;
    const int BT = B * T, C = m->cfg.dim, HS = m->cfg.head_dim, NH = pl->NH, KVH = pl->KVH, F = pl->F;
    const int QKV = (NH + 2 * KVH) * HS;
    const struct llama_layer_acts *a = &m->layers[l];
    if (m->recompute) block_forward(m, l, a, NULL, B, T);

    // out = xmid + down(swiglu(gate_up(norm(xmid)))). The residual add hands dres unchanged to both of its
    // inputs (residual_backward's rule), so dres is the gradient of down's output and keeps flowing
    // down the stream, where each rmsnorm_backward adds its branch's part (+=).
    op->matmul_backward(be, m->dh, DW(PARAM_WDOWN, l), m->dres, a->h, W(PARAM_WDOWN, l), BT, F, C);
    LORA_BWD(3, m->dres, a->h, m->dh, C);
    op->swiglu_backward(be, m->dgu, m->dh, a->gu, BT, F);
    op->matmul_backward(be, m->dxn, DW(PARAM_WGATE, l), m->dgu, a->xn2, W(PARAM_WGATE, l), BT, C, 2 * F);
    LORA_BWD(2, m->dgu, a->xn2, m->dxn, 2 * F);
    tp_sum(m, m->dxn, (size_t)BT * C);
    op->rmsnorm_backward(be, m->dres, DW(PARAM_FFN_NORM, l), m->dxn, a->xmid, W(PARAM_FFN_NORM, l), a->rstd2, BT, C);

    // xmid = x + o(attention(rope(qkv(norm(x)))))
    op->matmul_backward(be, m->datt, DW(PARAM_WO, l), m->dres, a->att, W(PARAM_WO, l), BT, NH * HS, C);
    LORA_BWD(1, m->dres, a->att, m->datt, C);
    op->attention_backward(be, m->dqkv, m->datt, a->qkv, a->att, a->lse, m->docs_on ? m->docs : NULL, B, T, NH, KVH, HS);
    op->rope_backward(be, m->dqkv, m->rope_cos, m->rope_sin, m->docs_on ? m->docs : NULL, B, T, NH + KVH, HS, QKV);
    op->matmul_backward(be, m->dxn, DW(PARAM_WQ, l), m->dqkv, a->xn1, W(PARAM_WQ, l), BT, C, QKV);
    LORA_BWD(0, m->dqkv, a->xn1, m->dxn, QKV);
    tp_sum(m, m->dxn, (size_t)BT * C);
    op->rmsnorm_backward(be, m->dres, DW(PARAM_ATTN_NORM, l), m->dxn, a->x, W(PARAM_ATTN_NORM, l), a->rstd1, BT, C);

    grads_ready(m, pl->layer_offset0 + (size_t)l * pl->layer_stride, pl->layer_stride);
}

struct backward_args {
    struct llama *m;
    float dloss;
};

// Backward from the losses down to the gradient of the embedding's output (m->dres), device work only.
static void backward_ops(void *arg) {
    const struct backward_args *a = arg;
    struct llama *m = a->m;
    const float dloss = a->dloss;
    const struct backend *be = m->be;
    const struct ops *op = be->ops;
    const struct param_layout *pl = &m->layout;
    const int B = m->B, T = m->T, BT = B * T, C = m->cfg.dim, L = m->cfg.n_layers;

    // loss -> logits -> lm_head -> final norm
    op->crossentropy_backward(be, m->logits, m->logits, m->lse_ce, m->targets, dloss, BT, pl->Vl, pl->vstart,
                              m->cfg.vocab_size);
    dbuf *dlm = m->cfg.tie_embeddings ? DW(PARAM_EMBED, -1) : DW(PARAM_LM_HEAD, -1);
    op->matmul_backward(be, m->dxn, dlm, m->logits, m->xnf, lm_head_weight(m), BT, C, pl->Vl);
    tp_sum(m, m->dxn, (size_t)BT * C);
    be->zero(be, m->dres, BUF_ACT, (size_t)BT * C);
    op->rmsnorm_backward(be, m->dres, DW(PARAM_NORM, -1), m->dxn, m->layers[L].x, W(PARAM_NORM, -1), m->rstdf, BT, C);
    grads_ready(m, pl->tail_offset, pl->total - pl->tail_offset);

    for (int l = L - 1; l >= 0; l--) block_backward(m, l, B, T);
}

void llama_backward(struct llama *m, float dloss) {
    const struct backend *be = m->be;
    const struct param_layout *pl = &m->layout;
    const int BT = m->B * m->T, C = m->cfg.dim;
    struct backward_args a = {m, dloss};
    unsigned int bits;
    memcpy(&bits, &dloss, sizeof bits);
    // a region unless the trainer takes gradients as they are ready (its callback leaves the device)
    run_region(m, 1, region_key(m, bits), m->on_grads_ready != NULL, backward_ops, &a);
    // the embedding's backward groups the tokens on the host: outside the region
    dbuf *demb = DW(PARAM_EMBED, -1);  // NULL when frozen
    if (demb) be->ops->embedding_backward(be, demb, m->dres, m->tokens, BT, C, pl->vstart, pl->Vl);
    grads_ready(m, 0, pl->layer_offset0);
}

void llama_zero_grads(struct llama *m) {
    if (m->grads) m->be->zero(m->be, m->grads, BUF_GRAD, m->layout.total);
    if (m->lora) m->be->zero(m->be, m->lora->grads, BUF_GRAD, m->lora->layout.total);
}

void llama_pad_blocks(struct llama *m, size_t n) {
    CHECK(n >= m->layout.total);
    m->be->free(m->be, m->params);
    if (m->grads) m->be->free(m->be, m->grads);
    m->params = m->be->alloc(m->be, BUF_PARAM, n);
    m->grads = m->be->alloc(m->be, BUF_GRAD, n);
}

void llama_params_to_host(const struct llama *m, float *host) {
    m->be->to_host(m->be, host, m->params, BUF_PARAM, m->layout.total);
}
void llama_params_from_host(struct llama *m, const float *host) { llama_set_params(m, 0, host, m->layout.total); }

void llama_set_params(struct llama *m, size_t off, const float *host, size_t n) {
    const struct backend *be = m->be;
    be->from_host(be, be_at(be, BUF_PARAM, m->params, off), host, BUF_PARAM, n);
    if (!m->master) return;
    size_t lo = off > m->master_off ? off : m->master_off;
    size_t hi = off + n < m->master_off + m->master_n ? off + n : m->master_off + m->master_n;
    if (lo < hi) be->from_host(be, be_at(be, BUF_STATE, m->master, lo - m->master_off), host + (lo - off), BUF_STATE, hi - lo);
}
void llama_grads_to_host(const struct llama *m, float *host) {
    CHECKF(m->grads, "the model has no base gradients (LoRA adapters: lora_grads_to_host)");
    m->be->to_host(m->be, host, m->grads, BUF_GRAD, m->layout.total);
}

void llama_logits_at(struct llama *m, int b, int t, float *out) {
    const struct param_layout *pl = &m->layout;
    const struct backend *be = m->be;
    const int V = m->cfg.vocab_size;
    dbuf *row = be_at(be, BUF_ACT, m->logits, ((size_t)b * m->T + t) * pl->Vl);
    if (m->tp->size == 1) {
        be->to_host(be, out, row, BUF_ACT, (size_t)V);
        return;
    }
    // sampling only: gather the slices in a buffer of the backend (the communicator's kind of buffer),
    // padding dropped
    dbuf *all = be->alloc(be, BUF_ACT, (size_t)pl->Vp);
    float *host = xmalloc(sizeof(float) * (size_t)pl->Vp);
    be->sync(be);
    comm_all_gather(m->tp, all, row, (size_t)pl->Vl, comm_dtype_of(be->elem_size[BUF_ACT]));
    be->to_host(be, host, all, BUF_ACT, (size_t)pl->Vp);
    memcpy(out, host, sizeof(float) * (size_t)V);
    free(host);
    be->free(be, all);
}
