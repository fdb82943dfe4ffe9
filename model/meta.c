// Meta checkpoint directories -> the model (meta.h says what is read and how it is mapped). Loading runs
// in two passes, as model/hf.c does: every shard is opened (zip, pickle, storages checked) and every
// tensor's name and shape matched against the config before a byte of tensor data is read; then each
// canonical tensor is assembled from its shards, permuted when it is wq or wk, and handed to
// hf_set_param, the one place loaders write parameters.
#include "model/meta.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/fs.h"
#include "model/torch_pickle.h"

#define META_MAX_SHARDS 256

struct meta_ckpt {
    int n;                   // shards
    struct pth_file *s;      // (n) consolidated.00.pth ... in order
};

static void ckpt_close(struct meta_ckpt *ck) {
    for (int i = 0; i < ck->n; i++) pth_close(&ck->s[i]);
    free(ck->s);
    memset(ck, 0, sizeof(*ck));
}

// consolidated.NN.pth, numbered 0..n-1 without gaps (any number of digits).
static int ckpt_open(struct meta_ckpt *ck, const char *dir) {
    memset(ck, 0, sizeof(*ck));
    DIR *d = opendir(dir);
    if (!d) return err_set("%s: cannot open the directory", dir);
    char names[META_MAX_SHARDS][64];
    int have[META_MAX_SHARDS] = {0}, count = 0, rc = 0;
    for (struct dirent *de; (de = readdir(d)) != NULL && rc == 0;) {
        const char *nm = de->d_name;
        size_t len = strlen(nm);
        if (strncmp(nm, "consolidated.", 13) != 0 || len < 18 || strcmp(nm + len - 4, ".pth") != 0) continue;
        long k = 0;
        size_t i = 13;
        for (; i < len - 4 && nm[i] >= '0' && nm[i] <= '9' && k < META_MAX_SHARDS; i++) k = k * 10 + (nm[i] - '0');
        if (i != len - 4 || len - 4 - 13 > 8) continue;
        if (k >= META_MAX_SHARDS) rc = err_set("%s/%s: more than %d shards are not supported", dir, nm, META_MAX_SHARDS);
        else if (have[k]) rc = err_set("%s: shard %ld appears twice (%s and %s)", dir, k, names[k], nm);
        else {
            have[k] = 1;
            snprintf(names[k], sizeof(names[k]), "%s", nm);
            count++;
        }
    }
    closedir(d);
    if (rc) return -1;
    if (count == 0) return err_set("%s: no consolidated.NN.pth shards (not a Meta checkpoint directory?)", dir);
    for (int k = 0; k < count; k++)
        if (!have[k]) return err_set("%s: shard %d of %d is missing (shards must be numbered from 00 without gaps)", dir, k, count);
    ck->s = xcalloc((size_t)count, sizeof(*ck->s));
    for (int k = 0; k < count; k++) {
        char *path = fs_join(dir, names[k]);
        int rc = pth_open(&ck->s[k], path);
        free(path);
        if (rc != 0) return ckpt_close(ck), -1;
        ck->n++;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------------

// Meta's name of parameter p, and the dimension its shards split (-1: replicated).
static int meta_name(char *out, size_t n, const struct param_tensor *p, int embed_split) {
    static const struct { enum param_kind k; const char *name; int split; } map[] = {
        {PARAM_ATTN_NORM, "attention_norm", -1}, {PARAM_WQ, "attention.wq", 0}, {PARAM_WK, "attention.wk", 0},
        {PARAM_WV, "attention.wv", 0}, {PARAM_WO, "attention.wo", 1}, {PARAM_FFN_NORM, "ffn_norm", -1},
        {PARAM_WGATE, "feed_forward.w1", 0}, {PARAM_WUP, "feed_forward.w3", 0}, {PARAM_WDOWN, "feed_forward.w2", 1},
    };
    if (p->kind == PARAM_EMBED) return snprintf(out, n, "tok_embeddings.weight"), embed_split;
    if (p->kind == PARAM_NORM) return snprintf(out, n, "norm.weight"), -1;
    if (p->kind == PARAM_LM_HEAD) return snprintf(out, n, "output.weight"), 0;
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (map[i].k == p->kind) return snprintf(out, n, "layers.%d.%s.weight", p->layer, map[i].name), map[i].split;
    CHECKF(0, "parameter kind %d has no Meta name", (int)p->kind);
    return -1;
}

static int is_norm(enum param_kind k) { return k == PARAM_ATTN_NORM || k == PARAM_FFN_NORM || k == PARAM_NORM; }

// The split dimension of tok_embeddings: 1 (LLaMA 1/2: columns) unless a shard holds whole rows of dim.
static int embed_split(const struct meta_ckpt *ck, int dim) {
    const struct pth_tensor *t = pth_find(&ck->s[0], "tok_embeddings.weight");
    if (ck->n == 1 || !t || t->ndim != 2) return 1;
    return t->shape[1] == dim ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------------
// params.json
// ---------------------------------------------------------------------------------------------------

static int jnum(double *out, const cJSON *o, const char *key, int required, const char *path) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return required ? err_set("%s: key '%s' is missing", path, key) : 1;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return err_set("%s: key '%s' must be a number", path, key);
    *out = v->valuedouble;
    return 0;
}

static int jint(int *out, const cJSON *o, const char *key, int required, int lo, const char *path) {
    double d = 0;
    int r = jnum(&d, o, key, required, path);
    if (r) return r < 0 ? -1 : 0;
    if (d != floor(d) || d < lo || d > 2147483647.0) return err_set("%s: key '%s' must be an integer >= %d", path, key, lo);
    *out = (int)d;
    return 0;
}

static int jposf(float *out, const cJSON *o, const char *key, const char *path) {
    double d = 0;
    int r = jnum(&d, o, key, 0, path);
    if (r) return r < 0 ? -1 : 0;
    if (!(d > 0) || !isfinite((float)d)) return err_set("%s: key '%s' must be a positive number", path, key);
    *out = (float)d;
    return 0;
}

static int meta_read_params(struct llama_config *c, const char *dir, const char *path);

int meta_read_config(struct llama_config *c, const char *dir) {
    char *path = fs_join(dir, "params.json");
    int rc = meta_read_params(c, dir, path);
    free(path);
    return rc;
}

static int meta_read_params(struct llama_config *c, const char *dir, const char *path) {
    cJSON *o = hf_json_read(path);
    if (!o) return -1;
    memset(c, 0, sizeof(*c));
    llama_config_name_from_dir(c, dir);
    c->norm_eps = 1e-5f;  // Meta's ModelArgs defaults
    c->rope_theta = 10000.0f;
    c->multiple_of = 256;
    c->max_seq_len = 2048;
    c->rope_factor = 1.0f;
    c->rope_low_freq_factor = 1.0f;
    c->rope_high_freq_factor = 4.0f;
    c->rope_original_max_seq_len = 8192;
    int vocab = -1, rc = 0;
    double fm = 0;
    rc = jint(&c->dim, o, "dim", 1, 1, path);
    if (!rc) rc = jint(&c->n_layers, o, "n_layers", 1, 1, path);
    if (!rc) rc = jint(&c->n_heads, o, "n_heads", 1, 1, path);
    if (!rc) rc = jint(&c->n_kv_heads, o, "n_kv_heads", 0, 1, path);
    if (!rc) rc = jint(&vocab, o, "vocab_size", 0, -1, path);
    if (!rc && vocab == 0) rc = err_set("%s: key 'vocab_size' must be positive or -1", path);
    if (!rc) rc = jint(&c->multiple_of, o, "multiple_of", 0, 1, path);
    if (!rc) rc = jint(&c->max_seq_len, o, "max_seq_len", 0, 1, path);
    if (!rc) {
        int r = jnum(&fm, o, "ffn_dim_multiplier", 0, path);
        if (r < 0) rc = -1;
        else if (r == 0 && !(fm > 0)) rc = err_set("%s: key 'ffn_dim_multiplier' must be a positive number", path);
    }
    if (!rc) rc = jposf(&c->norm_eps, o, "norm_eps", path);
    if (!rc) rc = jposf(&c->rope_theta, o, "rope_theta", path);
    if (!rc) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "use_scaled_rope");
        if (v && !cJSON_IsNull(v) && !cJSON_IsBool(v)) rc = err_set("%s: key 'use_scaled_rope' must be true or false", path);
        else if (cJSON_IsTrue(v)) {
            c->rope_scaling = ROPE_SCALING_LLAMA3;  // Meta's apply_scaling: fixed constants
            c->rope_factor = 8.0f;
        }
    }
    cJSON_Delete(o);
    if (rc) return -1;
    if (c->n_kv_heads == 0) c->n_kv_heads = c->n_heads;
    if (c->dim % c->n_heads != 0) return err_set("%s: dim %d is not a multiple of n_heads %d", path, c->dim, c->n_heads);
    c->head_dim = c->dim / c->n_heads;
    c->ffn_dim_multiplier = (float)fm;
    c->ffn_hidden = llama_ffn_hidden(c->dim, c->multiple_of, c->ffn_dim_multiplier);

    // From the shards: tied embeddings (no output.weight) and, for vocab_size -1, the vocabulary
    struct meta_ckpt ck;
    if (ckpt_open(&ck, dir) != 0) return -1;
    const struct pth_tensor *out = pth_find(&ck.s[0], "output.weight");
    c->tie_embeddings = out == NULL;
    if (vocab < 0) {
        int es = embed_split(&ck, c->dim);
        const char *src = out ? "output.weight" : "tok_embeddings.weight";
        int split0 = out || es == 0;
        int64_t v = 0;
        for (int k = 0; k < ck.n && rc == 0; k++) {
            const struct pth_tensor *t = pth_find(&ck.s[k], src);
            if (!t || t->ndim != 2) rc = err_set("%s: tensor '%s' is missing or not a matrix (needed for vocab_size -1)", ck.s[k].z.path, src);
            else if (split0) v += t->shape[0];
            else v = t->shape[0];
            if (v > 2147483647) rc = err_set("%s: the vocabulary implied by '%s' is too large", ck.s[k].z.path, src);
        }
        vocab = (int)v;
    }
    ckpt_close(&ck);
    if (rc) return -1;
    c->vocab_size = vocab;
    return llama_config_validate(c, path);
}

// ---------------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------------

static void fmt_shape(char *out, size_t n, const int64_t *shape, int ndim) {
    size_t k = (size_t)snprintf(out, n, "[");
    for (int d = 0; d < ndim && k < n; d++) k += (size_t)snprintf(out + k, n - k, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (k < n) snprintf(out + k, n - k, "]");
}

// Pass 1 for one parameter: every shard holds Meta's tensor with a shape that concatenates to the
// canonical one. part[k] is shard k's extent along the split dimension.
static int check_param(const struct meta_ckpt *ck, const struct param_tensor *p, const char *mname, int split,
                       int64_t *part) {
    int nd = is_norm(p->kind) ? 1 : 2;
    int64_t full[2] = {nd == 1 ? p->full_cols : p->full_rows, p->full_cols}, sum = 0;
    for (int k = 0; k < ck->n; k++) {
        const struct pth_tensor *t = pth_find(&ck->s[k], mname);
        if (!t) return err_set("%s: tensor '%s' is missing (params.json implies it)", ck->s[k].z.path, mname);
        int ok = t->ndim == nd;
        for (int d = 0; ok && d < nd; d++)
            if (d != split || ck->n == 1) ok = t->shape[d] == full[d];
        if (ok && split >= 0) {
            part[k] = ck->n == 1 ? full[split] : t->shape[split];
            sum += part[k];
        }
        if (!ok) {
            char got[96], exp[96];
            fmt_shape(got, sizeof(got), t->shape, t->ndim);
            fmt_shape(exp, sizeof(exp), full, nd);
            return err_set("%s: tensor '%s' has shape %s, which does not fit %s (params.json, %d shard%s%s)",
                           ck->s[k].z.path, mname, got, exp, ck->n, ck->n == 1 ? "" : "s",
                           split < 0 ? ", replicated" : split == 0 ? ", split by rows" : ", split by columns");
        }
    }
    if (split >= 0 && sum != full[split])
        return err_set("%s: the shards of '%s' add up to %lld along dimension %d, but params.json implies %lld",
                       ck->s[0].z.path, mname, (long long)sum, split, (long long)full[split]);
    return 0;
}

// Meta's interleaved RoPE pairs -> rotate-half, per head of hs rows: out row j*hs/2 + i = in row 2i + j.
static void permute_rope_rows(float *out, const float *in, int rows, int cols, int hs) {
    for (int h = 0; h < rows / hs; h++)
        for (int i = 0; i < hs / 2; i++)
            for (int j = 0; j < 2; j++)
                memcpy(out + ((size_t)h * hs + (size_t)j * hs / 2 + i) * cols, in + ((size_t)h * hs + 2 * i + j) * cols,
                       sizeof(float) * (size_t)cols);
}

static int load_or_check(struct llama *m, const struct param_layout *pl, const struct llama_config *c, const char *dir,
                         struct hf_weights_info *info) {
    struct meta_ckpt ck;
    if (ckpt_open(&ck, dir) != 0) return -1;
    int rc = 0, es = embed_split(&ck, c->dim);
    char mname[128];
    int64_t *parts = xcalloc((size_t)pl->n * (size_t)ck.n, sizeof(int64_t));

    // Pass 1: every expected tensor present with a fitting shape; nothing else in any shard
    for (int i = 0; i < pl->n && rc == 0; i++) {
        int split = meta_name(mname, sizeof(mname), &pl->t[i], es);
        rc = check_param(&ck, &pl->t[i], mname, split, parts + (size_t)i * ck.n);
    }
    int n_tensors = 0;
    for (int k = 0; k < ck.n && rc == 0; k++)
        for (int j = 0; j < ck.s[k].n && rc == 0; j++) {
            const char *nm = ck.s[k].t[j].name;
            n_tensors++;
            if (!strcmp(nm, "rope.freqs")) continue;
            int known = 0;
            for (int i = 0; i < pl->n && !known; i++) {
                meta_name(mname, sizeof(mname), &pl->t[i], es);
                known = !strcmp(mname, nm);
            }
            if (!known) {
                char pn[100];
                rc = err_set("%s: unexpected tensor '%s' (not a parameter of the model params.json describes)",
                             ck.s[k].z.path, st_printable(pn, sizeof(pn), nm));
            }
        }
    if (rc == 0 && c->tie_embeddings != (pth_find(&ck.s[0], "output.weight") == NULL))
        rc = err_set("%s: output.weight is %s, but the config has %s embeddings", ck.s[0].z.path,
                     c->tie_embeddings ? "present" : "missing", c->tie_embeddings ? "tied" : "untied");

    // Pass 2: each canonical tensor assembled from the shards, permuted if wq/wk, written
    size_t max_full = 0, max_local = 0;
    for (int i = 0; i < pl->n; i++) {
        size_t nf = (size_t)pl->t[i].full_rows * pl->t[i].full_cols;
        if (nf > max_full) max_full = nf;
        if (pl->t[i].numel > max_local) max_local = pl->t[i].numel;
    }
    float *full = rc ? NULL : xmalloc_aligned(sizeof(float) * max_full);
    float *part = rc ? NULL : xmalloc_aligned(sizeof(float) * max_full);
    float *local = rc || !m ? NULL : xmalloc_aligned(sizeof(float) * max_local);
    int n_dtype[3] = {0, 0, 0};
    for (int i = 0; i < pl->n && rc == 0; i++) {
        const struct param_tensor *p = &pl->t[i];
        int split = meta_name(mname, sizeof(mname), p, es);
        const int64_t *pk = parts + (size_t)i * ck.n;
        const int R = is_norm(p->kind) ? 1 : p->full_rows, C = p->full_cols;
        int64_t at = 0;
        for (int k = 0; k < ck.n && rc == 0; k++) {
            const struct pth_tensor *t = pth_find(&ck.s[k], mname);
            // rows split: straight into place; replicated: shard 0 into place, the others compared
            float *dst = split == 0 ? full + (size_t)at * C : split < 0 && k == 0 ? full : part;
            if (pth_read_f32(&ck.s[k], t, dst) != 0) {
                rc = -1;
                break;
            }
            if (k == 0) n_dtype[t->dtype]++;
            if (split < 0 && k > 0 && memcmp(part, full, sizeof(float) * (size_t)C) != 0)
                rc = err_set("%s: '%s' differs from shard 0's; a replicated norm must be equal in every shard",
                             ck.s[k].z.path, mname);
            if (split == 1)  // columns [at, at + pk[k]) of every row
                for (int r = 0; r < R; r++)
                    memcpy(full + (size_t)r * C + at, part + (size_t)r * pk[k], sizeof(float) * (size_t)pk[k]);
            at += split >= 0 ? pk[k] : 0;
        }
        if (rc) break;
        if (p->kind == PARAM_WQ || p->kind == PARAM_WK) {
            memcpy(part, full, sizeof(float) * (size_t)R * C);
            permute_rope_rows(full, part, R, C, c->head_dim);
        }
        if (m) hf_set_param(m, p, full, local);
    }
    free(full);
    free(part);
    free(local);
    free(parts);
    if (rc == 0 && info) {
        memset(info, 0, sizeof(*info));
        info->n_tensors = n_tensors;
        info->n_files = ck.n;
        memcpy(info->n_dtype, n_dtype, sizeof(n_dtype));
        for (int d = 0; d < 3; d++)
            if (n_dtype[d]) {
                size_t len = strlen(info->dtype);
                snprintf(info->dtype + len, sizeof(info->dtype) - len, "%s%s", len ? "+" : "", st_dtype_name((enum st_dtype)d));
            }
    }
    ckpt_close(&ck);
    return rc;
}

int meta_load_weights(struct llama *m, const char *dir) { return load_or_check(m, &m->layout, &m->cfg, dir, NULL); }

int meta_check_weights(const struct llama_config *c, const char *dir, struct hf_weights_info *info) {
    struct param_layout pl;
    if (param_layout_init(&pl, c, 1, 0) != 0) return -1;
    int rc = load_or_check(NULL, &pl, c, dir, info);
    param_layout_free(&pl);
    return rc;
}
