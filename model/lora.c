// LoRA adapters and freezing (the design is in model/lora.h).
#include "model/lora.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/fs.h"
#include "core/rng.h"
#include "model/hf.h"
#include "model/safetensors.h"

static const char *target_names[LORA_NT] = {"q", "k", "v", "o", "gate", "up", "down"};
static const char *module_names[LORA_NT] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                            "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                            "mlp.down_proj"};
static const int target_group[LORA_NT] = {0, 0, 0, 1, 2, 2, 3};

int lora_parse_targets(const char *s, unsigned *targets) {
    *targets = 0;
    char *copy = strdup(s), *save = NULL;
    int rc = 0;
    for (char *it = strtok_r(copy, ", \t", &save); it && rc == 0; it = strtok_r(NULL, ", \t", &save)) {
        if (!strcmp(it, "all")) {
            *targets = (1u << LORA_NT) - 1;
            continue;
        }
        size_t n = strlen(it);
        if (n > 5 && !strcmp(it + n - 5, "_proj")) it[n - 5] = '\0';
        int found = -1;
        for (int t = 0; t < LORA_NT; t++)
            if (!strcmp(it, target_names[t])) found = t;
        if (found < 0) rc = err_set("LoRA target '%s': use q, k, v, o, gate, up, down (or all)", it);
        else *targets |= 1u << found;
    }
    free(copy);
    if (rc == 0 && !*targets) rc = err_set("no LoRA targets in '%s'", s);
    return rc;
}

void lora_targets_str(unsigned targets, char *out, size_t n) {
    out[0] = '\0';
    for (int t = 0; t < LORA_NT; t++)
        if (targets & (1u << t)) snprintf(out + strlen(out), n - strlen(out), "%s%s", out[0] ? "," : "", target_names[t]);
}

// in, out and the column offset in its group's fused output of target t
static void target_shape(const struct llama_config *c, int NH, int KVH, int F, int t, int *in, int *out, int *col0) {
    const int C = c->dim, HS = c->head_dim;
    switch (t) {
    case LORA_Q: *in = C, *out = NH * HS, *col0 = 0; break;
    case LORA_K: *in = C, *out = KVH * HS, *col0 = NH * HS; break;
    case LORA_V: *in = C, *out = KVH * HS, *col0 = (NH + KVH) * HS; break;
    case LORA_O: *in = NH * HS, *out = C, *col0 = 0; break;
    case LORA_GATE: *in = C, *out = F, *col0 = 0; break;
    case LORA_UP: *in = C, *out = F, *col0 = F; break;
    default: *in = F, *out = C, *col0 = 0; break;
    }
}

long long lora_param_count(const struct llama_config *c, const struct lora_config *lc) {
    long long n = 0;
    for (int t = 0; t < LORA_NT; t++) {
        if (!(lc->targets & (1u << t))) continue;
        int in, out, col0;
        target_shape(c, c->n_heads, c->n_kv_heads, c->ffn_hidden, t, &in, &out, &col0);
        n += (long long)lc->rank * (in + out);
    }
    return n * c->n_layers;
}

int lora_attach(struct llama *m, const struct lora_config *lc, uint64_t seed) {
    if (m->tp->size != 1) return err_set("LoRA adapters need one tensor-parallel rank (parallel.tp = 1)");
    if (lc->rank < 1 || lc->rank > 4096) return err_set("lora.rank %d: must be in 1..4096", lc->rank);
    if (!(lc->alpha > 0)) return err_set("lora.alpha %g: must be positive", lc->alpha);
    if (!(lc->dropout >= 0 && lc->dropout < 1)) return err_set("lora.dropout %g: must be in [0, 1)", lc->dropout);
    if (!lc->targets) return err_set("lora.targets: no projection chosen");
    CHECKF(m->layers, "lora_attach before llama_alloc_acts");
    struct lora *a = xcalloc(1, sizeof(*a));
    a->c = *lc;
    a->scale = lc->alpha / (float)lc->rank;
    const int L = m->cfg.n_layers, r = lc->rank;
    int nt = 0;
    for (int t = 0; t < LORA_NT; t++) nt += (lc->targets >> t) & 1;
    a->n = L * nt;
    a->ad = xcalloc((size_t)a->n, sizeof(*a->ad));
    struct param_layout *pl = &a->layout;
    pl->t = xcalloc((size_t)a->n * 2, sizeof(struct param_tensor));
    pl->n = a->n * 2;
    pl->n_layers = L;
    size_t off = 0;
    int k = 0;
    for (int l = 0; l < L; l++)
        for (int t = 0; t < LORA_NT; t++) {
            if (!(lc->targets & (1u << t))) continue;
            struct lora_adapter *ad = &a->ad[k];
            ad->layer = l;
            ad->target = t;
            ad->group = target_group[t];
            target_shape(&m->cfg, m->layout.NH, m->layout.KVH, m->layout.F, t, &ad->in, &ad->out, &ad->col0);
            for (int w = 0; w < 2; w++) {  // A (r, in), B (out, r)
                struct param_tensor *p = &pl->t[2 * k + w];
                snprintf(p->name, sizeof(p->name), "base_model.model.model.layers.%d.%s.lora_%c.weight", l,
                         module_names[t], w ? 'B' : 'A');
                p->kind = PARAM_WQ;  // not used for adapters
                p->layer = l;
                p->rows = p->full_rows = w ? ad->out : r;
                p->cols = p->full_cols = w ? r : ad->in;
                p->numel = (size_t)p->rows * p->cols;
                p->offset = off;
                p->split_dim = -1;
                p->decay = 1;
                off += p->numel;
            }
            ad->A = &pl->t[2 * k];
            ad->B = &pl->t[2 * k + 1];
            k++;
        }
    pl->total = off;
    const struct backend *be = m->be;
    a->params = be->alloc(be, BUF_PARAM, off);
    a->grads = be->alloc(be, BUF_GRAD, off);
    m->lora = a;
    lora_init_values(m, seed);
    if (m->grads) {  // the base gets no gradients
        be->free(be, m->grads);
        m->grads = NULL;
    }
    lora_alloc_acts(m);
    return 0;
}

void lora_init_values(struct llama *m, uint64_t seed) {
    struct lora *a = m->lora;
    float *host = xcalloc(a->layout.total, sizeof(float));
    for (int i = 0; i < a->n; i++) {  // A uniform in +-1/sqrt(in) (PEFT's kaiming_uniform_(a=sqrt(5))); B zero
        const struct param_tensor *p = a->ad[i].A;
        const uint64_t key = rng_hash_str(p->name, seed);
        const double bound = 1.0 / sqrt((double)a->ad[i].in);
        for (size_t e = 0; e < p->numel; e++) host[p->offset + e] = (float)(bound * (2 * rng_uniform_at(key, e) - 1));
    }
    lora_params_from_host(m, host);
    free(host);
}

void lora_alloc_acts(struct llama *m) {
    struct lora *a = m->lora;
    const struct backend *be = m->be;
    if (a->acts) be->free(be, a->acts);
    if (a->tmp) be->free(be, a->tmp);
    if (a->du) be->free(be, a->du);
    if (a->dx) be->free(be, a->dx);
    if (a->xd) be->free(be, a->xd);
    const size_t BT = (size_t)m->cap_B * m->cap_T, r = (size_t)a->c.rank;
    int max_in = 1, max_out = 1;
    for (int i = 0; i < a->n; i++) {
        if (a->ad[i].in > max_in) max_in = a->ad[i].in;
        if (a->ad[i].out > max_out) max_out = a->ad[i].out;
    }
    a->acts = be->alloc(be, BUF_ACT, BT * r * (size_t)a->n);
    for (int i = 0; i < a->n; i++) a->ad[i].u = be_at(be, BUF_ACT, a->acts, BT * r * (size_t)i);
    a->tmp = be->alloc(be, BUF_ACT, BT * (size_t)max_out);
    a->du = be->alloc(be, BUF_ACT, BT * r);
    a->dx = be->alloc(be, BUF_ACT, BT * (size_t)max_in);
    a->xd = a->c.dropout > 0 ? be->alloc(be, BUF_ACT, BT * (size_t)max_in) : NULL;
    a->cap_BT = (int)BT;
}

void lora_free(struct llama *m) {
    struct lora *a = m->lora;
    if (!a) return;
    const struct backend *be = m->be;
    dbuf *bufs[] = {a->params, a->grads, a->acts, a->tmp, a->du, a->dx, a->xd};
    for (int i = 0; i < 7; i++)
        if (bufs[i]) be->free(be, bufs[i]);
    param_layout_free(&a->layout);
    free(a->ad);
    free(a);
    m->lora = NULL;
}

#define AW(p) be_at(be, BUF_PARAM, a->params, (p)->offset)
#define AG(p) be_at(be, BUF_GRAD, a->grads, (p)->offset)

void lora_set_dropout(struct llama *m, int on, uint64_t key) {
    m->lora->drop_on = on != 0;
    m->lora->drop_key = on ? key : 0;
}

uint64_t lora_dropout_key(uint64_t seed, long step, int micro, int dp_rank) {
    uint64_t k = rng_mix(seed ^ 0x6C6F72615F64726FULL);  // "lora_dro": apart from the other streams of the seed
    k = rng_mix(k + (uint64_t)step);
    k = rng_mix(k + (uint64_t)micro);
    return rng_mix(k + (uint64_t)dp_rank);
}

// Whether adapters drop now (training with lora.dropout > 0), and the mask stream of one adapter: the
// micro-batch key mixed with (layer, target), so every adapter has its own mask.
static int dropping(const struct lora *a) { return a->drop_on && a->c.dropout > 0; }

static uint64_t adapter_key(const struct lora *a, const struct lora_adapter *ad) {
    return rng_mix(a->drop_key ^ rng_mix((uint64_t)ad->layer * LORA_NT + (uint64_t)ad->target + 1));
}

// The adapter's input: x, or dropout(x) written into the scratch xd when dropping.
static const dbuf *adapter_input(struct lora *a, const struct backend *be, const struct lora_adapter *ad,
                                 const dbuf *x, int BT) {
    if (!dropping(a)) return x;
    be->ops->dropout_forward(be, a->xd, x, a->c.dropout, adapter_key(a, ad), BT, ad->in);
    return a->xd;
}

// y (BT,OCg) columns of each adapter of the group += scale * (xin A^T) B^T, xin = x or dropout(x)
void lora_forward_group(struct llama *m, int l, int g, const dbuf *x, dbuf *y, int BT, int OCg) {
    struct lora *a = m->lora;
    const struct backend *be = m->be;
    const int r = a->c.rank;
    for (int i = 0; i < a->n; i++) {
        const struct lora_adapter *ad = &a->ad[i];
        if (ad->layer != l || ad->group != g) continue;
        const dbuf *xin = adapter_input(a, be, ad, x, BT);
        be->ops->matmul_forward(be, ad->u, xin, AW(ad->A), BT, ad->in, r);       // u (BT,r) = xin A^T
        be->ops->matmul_forward(be, a->tmp, ad->u, AW(ad->B), BT, r, ad->out);   // (BT,out) = u B^T
        be->ops->lora_scale_forward(be, y, a->tmp, a->scale, BT, ad->out, OCg, ad->col0);
    }
}

// dB += dv^T u, dA += du^T xin, dx += du A (dropout(du A) when dropping: the same mask and scale), with
// dv = scale * dy[:, cols] and du = dv B
void lora_backward_group(struct llama *m, int l, int g, const dbuf *dy, const dbuf *x, dbuf *dx, int BT, int OCg) {
    struct lora *a = m->lora;
    const struct backend *be = m->be;
    const int r = a->c.rank;
    for (int i = 0; i < a->n; i++) {
        const struct lora_adapter *ad = &a->ad[i];
        if (ad->layer != l || ad->group != g) continue;
        be->ops->lora_scale_backward(be, a->tmp, dy, a->scale, BT, ad->out, OCg, ad->col0);
        be->ops->matmul_backward(be, a->du, AG(ad->B), a->tmp, ad->u, AW(ad->B), BT, r, ad->out);
        const dbuf *xin = adapter_input(a, be, ad, x, BT);  // dropout(x) again, from the same key
        be->ops->matmul_backward(be, a->dx, AG(ad->A), a->du, xin, AW(ad->A), BT, ad->in, r);
        if (dropping(a)) {  // xd is free again: it takes the masked input gradient
            be->ops->dropout_forward(be, a->xd, a->dx, a->c.dropout, adapter_key(a, ad), BT, ad->in);
            be->ops->residual_forward(be, dx, dx, a->xd, (size_t)BT * ad->in);
        } else {
            be->ops->residual_forward(be, dx, dx, a->dx, (size_t)BT * ad->in);
        }
    }
}

void lora_params_to_host(const struct llama *m, float *host) {
    m->be->to_host(m->be, host, m->lora->params, BUF_PARAM, m->lora->layout.total);
}

void lora_params_from_host(struct llama *m, const float *host) {
    struct lora *a = m->lora;
    m->be->from_host(m->be, a->params, host, BUF_PARAM, a->layout.total);
    if (a->master) m->be->from_host(m->be, a->master, host, BUF_STATE, a->layout.total);
}

void lora_grads_to_host(const struct llama *m, float *host) {
    m->be->to_host(m->be, host, m->lora->grads, BUF_GRAD, m->lora->layout.total);
}

void lora_merge_to_host(const struct llama *m, float *host) {
    const struct lora *a = m->lora;
    llama_params_to_host(m, host);
    float *ad_host = xmalloc(sizeof(float) * a->layout.total);
    lora_params_to_host(m, ad_host);
    const int r = a->c.rank;
    for (int i = 0; i < a->n; i++) {
        const struct lora_adapter *ad = &a->ad[i];
        static const enum param_kind kinds[LORA_NT] = {PARAM_WQ, PARAM_WK, PARAM_WV, PARAM_WO,
                                                       PARAM_WGATE, PARAM_WUP, PARAM_WDOWN};
        const struct param_tensor *w = param_get(&m->layout, kinds[ad->target], ad->layer);
        const float *A = ad_host + ad->A->offset, *B = ad_host + ad->B->offset;
        float *W = host + w->offset;  // (out, in)
        for (int o = 0; o < ad->out; o++)
            for (int c = 0; c < ad->in; c++) {
                double s = 0;
                for (int k = 0; k < r; k++) s += (double)B[(size_t)o * r + k] * A[(size_t)k * ad->in + c];
                W[(size_t)o * ad->in + c] = (float)(W[(size_t)o * ad->in + c] + a->scale * s);
            }
    }
    free(ad_host);
}

// The shortest decimal that reads back as the float v (0.1f as 0.1, not 0.10000000149011612), for JSON.
static double float_decimal(float v) {
    char buf[32];
    for (int digits = 6; digits < 9; digits++) {
        snprintf(buf, sizeof(buf), "%.*g", digits, v);
        if ((float)strtod(buf, NULL) == v) return strtod(buf, NULL);
    }
    return v;
}

int lora_save_peft(const struct llama *m, const char *dir, const char *base) {
    const struct lora *a = m->lora;
    if (fs_mkdir_p(dir) != 0) return -1;
    float *host = xmalloc(sizeof(float) * a->layout.total);
    lora_params_to_host(m, host);
    struct st_write_tensor *t = xcalloc((size_t)a->layout.n, sizeof(*t));
    for (int i = 0; i < a->layout.n; i++) {
        const struct param_tensor *p = &a->layout.t[i];
        t[i] = (struct st_write_tensor){p->name, 2, {p->rows, p->cols}, host + p->offset};
    }
    char *path = fs_join(dir, "adapter_model.safetensors");
    int rc = st_write(path, t, a->layout.n, ST_F32, "{\"format\":\"pt\"}");
    free(path);
    free(t);
    free(host);
    if (rc) return -1;
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "peft_type", "LORA");
    cJSON_AddStringToObject(c, "task_type", "CAUSAL_LM");
    cJSON_AddStringToObject(c, "base_model_name_or_path", base ? base : "");
    cJSON_AddNumberToObject(c, "r", a->c.rank);
    cJSON_AddNumberToObject(c, "lora_alpha", float_decimal(a->c.alpha));
    cJSON_AddNumberToObject(c, "lora_dropout", float_decimal(a->c.dropout));
    cJSON_AddStringToObject(c, "bias", "none");
    cJSON_AddBoolToObject(c, "fan_in_fan_out", 0);
    cJSON_AddBoolToObject(c, "inference_mode", 1);
    cJSON *tm = cJSON_AddArrayToObject(c, "target_modules");
    for (int t2 = 0; t2 < LORA_NT; t2++)
        if (a->c.targets & (1u << t2)) cJSON_AddItemToArray(tm, cJSON_CreateString(strchr(module_names[t2], '.') + 1));
    char *text = cJSON_Print(c);
    cJSON_Delete(c);
    path = fs_join(dir, "adapter_config.json");
    size_t n = strlen(text);
    char *line = xmalloc(n + 2);
    memcpy(line, text, n);
    line[n] = '\n';
    free(text);
    int rc2 = fs_write_atomic(path, line, n + 1);  // core/fs.h: the one publish protocol
    free(line);
    free(path);
    return rc2;
}

void lora_merge(struct llama *m) {
    float *merged = xmalloc(sizeof(float) * m->layout.total);
    lora_merge_to_host(m, merged);
    lora_free(m);  // a plain model with the merged weights
    llama_params_from_host(m, merged);
    free(merged);
}

int lora_export(struct llama *m, const char *dir, const char *mode, const struct hf_save_opts *o, const char *base) {
    if (!strcmp(mode, "peft")) return lora_save_peft(m, dir, base);
    if (strcmp(mode, "merge") != 0) return err_set("--lora %s: expected merge or peft", mode);
    lora_merge(m);
    return hf_save_opts(m, dir, o);
}

int lora_read_peft_config(const char *dir, struct lora_config *lc) {
    char *path = fs_join(dir, "adapter_config.json");
    cJSON *c = hf_json_read(path);
    if (!c) return free(path), -1;
    memset(lc, 0, sizeof(*lc));
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(c, "peft_type");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(c, "r"), *al = cJSON_GetObjectItemCaseSensitive(c, "lora_alpha");
    const cJSON *dr = cJSON_GetObjectItemCaseSensitive(c, "lora_dropout");
    const cJSON *tm = cJSON_GetObjectItemCaseSensitive(c, "target_modules");
    int rc = 0;
    if (!cJSON_IsString(pt) || strcmp(pt->valuestring, "LORA") != 0) rc = err_set("%s: peft_type is not \"LORA\"", path);
    else if (!cJSON_IsNumber(r) || !cJSON_IsNumber(al) || !cJSON_IsArray(tm))
        rc = err_set("%s: needs numbers r and lora_alpha and a target_modules list", path);
    else {
        lc->rank = r->valueint;
        lc->alpha = (float)al->valuedouble;
        lc->dropout = cJSON_IsNumber(dr) ? (float)dr->valuedouble : 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, tm) {
            unsigned t = 0;
            if (!cJSON_IsString(it) || lora_parse_targets(it->valuestring, &t) != 0) {
                rc = err_set("%s: target_modules: %s", path, cJSON_IsString(it) ? err_msg() : "not a string");
                break;
            }
            lc->targets |= t;
        }
    }
    cJSON_Delete(c);
    free(path);
    return rc;
}

int lora_load_peft(struct llama *m, const char *dir) {
    struct lora *a = m->lora;
    char *path = fs_join(dir, "adapter_model.safetensors");
    struct st_file f;
    if (st_open(&f, path) != 0) return free(path), -1;
    float *host = xcalloc(a->layout.total, sizeof(float));
    int rc = 0;
    for (int i = 0; i < a->layout.n && rc == 0; i++) {
        const struct param_tensor *p = &a->layout.t[i];
        const struct st_tensor *t = st_find(&f, p->name);
        if (!t) rc = err_set("%s: no tensor %s", path, p->name);
        else if (st_numel(t) != (int64_t)p->numel || t->ndim != 2 || t->shape[0] != p->rows || t->shape[1] != p->cols)
            rc = err_set("%s: %s is not [%d, %d]", path, p->name, p->rows, p->cols);
        else rc = st_read_f32(&f, t, host + p->offset);
    }
    if (rc == 0 && f.n != a->layout.n)
        rc = err_set("%s: %d tensors, the adapters of this model have %d", path, f.n, a->layout.n);
    if (rc == 0) lora_params_from_host(m, host);
    free(host);
    st_close(&f);
    free(path);
    return rc;
}

// ---------------------------------------------------------------------------------------------------
// Plain freezing
// ---------------------------------------------------------------------------------------------------
int llama_freeze(struct llama *m, const char *spec) {
    const struct param_layout *pl = &m->layout;
    if (!m->frozen) m->frozen = xcalloc((size_t)pl->n, 1);
    char *copy = strdup(spec), *save = NULL;
    int rc = 0;
    for (char *it = strtok_r(copy, ",", &save); it && rc == 0; it = strtok_r(NULL, ",", &save)) {
        while (*it == ' ' || *it == '\t') it++;
        char *e = it + strlen(it);
        while (e > it && (e[-1] == ' ' || e[-1] == '\t')) *--e = '\0';
        if (!*it) continue;
        int lo = -2, hi = -2;  // a layer range, or -2 for the named tensors
        enum param_kind kinds[2];
        int nk = 0;
        if (!strcmp(it, "embeddings") || !strcmp(it, "embed_tokens")) kinds[nk++] = PARAM_EMBED;
        else if (!strcmp(it, "lm_head")) kinds[nk++] = PARAM_LM_HEAD;
        else if (!strcmp(it, "norm")) kinds[nk++] = PARAM_NORM;
        else if (sscanf(it, "layers %d-%d", &lo, &hi) == 2 || sscanf(it, "layers %d", &lo) == 1 ||
                 sscanf(it, "layer %d", &lo) == 1) {
            if (hi == -2) hi = lo;
            if (lo < 0 || hi < lo || hi >= m->cfg.n_layers)
                rc = err_set("train.freeze: '%s': layers are 0..%d", it, m->cfg.n_layers - 1);
        } else {
            rc = err_set("train.freeze: '%s': expected embeddings, lm_head, norm, or layers A-B", it);
        }
        for (int i = 0; rc == 0 && i < pl->n; i++) {
            const struct param_tensor *t = &pl->t[i];
            int hit = lo >= 0 ? t->layer >= lo && t->layer <= hi : 0;
            for (int k = 0; k < nk; k++) hit |= t->kind == kinds[k];
            if (hit) m->frozen[i] = 1;
        }
    }
    free(copy);
    return rc;
}
