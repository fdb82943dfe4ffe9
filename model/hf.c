// Hugging Face Llama directories: config.json <-> struct llama_config, and the weights (one
// model.safetensors or an index plus shards) <-> the model's parameter block.
//
// Loading runs in two passes so that nothing is read from a file that has not been validated: first
// every header is opened and checked, and the set of tensors (names, shapes, which file holds each) is
// matched against the model's layout; only then is any data read.
#include "model/hf.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "data/sha256.h"
#include "core/fs.h"

#define HF_MAX_JSON (64u << 20)  // config.json and the index are small; refuse anything absurd

// ---------------------------------------------------------------------------------------------------
// JSON files
// ---------------------------------------------------------------------------------------------------

static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

// Parses PATH as a JSON object; NULL with err_set("PATH: ...").
static cJSON *read_json_object(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        err_set("%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(fp);
        err_set("%s: not a regular file", path);
        return NULL;
    }
    if ((uint64_t)st.st_size > HF_MAX_JSON) {
        fclose(fp);
        err_set("%s: %lld bytes is too large for a JSON file here (limit %u)", path, (long long)st.st_size, HF_MAX_JSON);
        return NULL;
    }
    size_t n = (size_t)st.st_size;
    char *txt = xmalloc(n + 1);
    size_t got = fread(txt, 1, n, fp);
    fclose(fp);
    if (got != n) {
        free(txt);
        err_set("%s: short read (%zu of %zu bytes)", path, got, n);
        return NULL;
    }
    txt[n] = '\0';
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(txt, n + 1, &end, 1);  // n + 1: cJSON checks the terminator
    if (!root || !cJSON_IsObject(root)) {
        long at = root ? 0 : (end ? (long)(end - txt) : 0);
        free(txt);
        cJSON_Delete(root);
        if (at) err_set("%s: not valid JSON (error near byte %ld)", path, at);
        else err_set("%s: not a JSON object", path);
        return NULL;
    }
    free(txt);
    return root;
}

void *hf_json_read(const char *path) { return read_json_object(path); }

// The value of KEY, with null counted as absent.
static const cJSON *jget(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNull(v) ? NULL : v;
}

// An integer in [lo, INT32_MAX]; *out keeps its value when the key is absent and not required.
static int jint(int *out, const cJSON *o, const char *key, int required, int lo, const char *path, const char *pre) {
    const cJSON *v = jget(o, key);
    if (!v) return required ? err_set("%s: key '%s%s' is missing", path, pre, key) : 0;
    double d = v->valuedouble;
    if (!cJSON_IsNumber(v) || d != floor(d) || d < lo || d > 2147483647.0)
        return err_set("%s: key '%s%s' must be an integer >= %d", path, pre, key, lo);
    *out = (int)d;
    return 0;
}

// A positive finite number.
static int jpos(float *out, const cJSON *o, const char *key, int required, const char *path, const char *pre) {
    const cJSON *v = jget(o, key);
    if (!v) return required ? err_set("%s: key '%s%s' is missing", path, pre, key) : 0;
    if (!cJSON_IsNumber(v) || !(v->valuedouble > 0) || !isfinite((float)v->valuedouble))
        return err_set("%s: key '%s%s' must be a positive number", path, pre, key);
    *out = (float)v->valuedouble;
    return 0;
}

static int jbool(int *out, const cJSON *o, const char *key, const char *path) {
    const cJSON *v = jget(o, key);
    if (!v) return 0;
    if (!cJSON_IsBool(v)) return err_set("%s: key '%s' must be true or false", path, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

// A string key that, when present, must equal `want`.
static int jexpect(const cJSON *o, const char *key, const char *want, const char *path, const char *why) {
    const cJSON *v = jget(o, key);
    if (!v) return 0;
    char p[64];
    if (!cJSON_IsString(v)) return err_set("%s: key '%s' must be a string", path, key);
    if (strcmp(v->valuestring, want) != 0)
        return err_set("%s: %s '%s' is not supported (%s)", path, key, st_printable(p, sizeof(p), v->valuestring), why);
    return 0;
}

// ---------------------------------------------------------------------------------------------------
// config.json
// ---------------------------------------------------------------------------------------------------

static int read_rope_scaling(struct llama_config *c, const cJSON *rs, const char *path) {
    c->rope_scaling = ROPE_SCALING_NONE;
    if (!rs) return 0;
    if (!cJSON_IsObject(rs)) return err_set("%s: key 'rope_scaling' must be null or an object", path);
    const cJSON *ty = jget(rs, "rope_type");
    if (!ty) ty = jget(rs, "type");
    if (!cJSON_IsString(ty)) return err_set("%s: key 'rope_scaling.rope_type' is missing or not a string", path);
    const char *t = ty->valuestring;
    if (!strcmp(t, "default")) return 0;
    if (!strcmp(t, "linear")) {
        c->rope_scaling = ROPE_SCALING_LINEAR;
        return jpos(&c->rope_factor, rs, "factor", 1, path, "rope_scaling.");
    }
    if (!strcmp(t, "llama3")) {
        c->rope_scaling = ROPE_SCALING_LLAMA3;
        if (jpos(&c->rope_factor, rs, "factor", 1, path, "rope_scaling.") ||
            jpos(&c->rope_low_freq_factor, rs, "low_freq_factor", 1, path, "rope_scaling.") ||
            jpos(&c->rope_high_freq_factor, rs, "high_freq_factor", 1, path, "rope_scaling.") ||
            jint(&c->rope_original_max_seq_len, rs, "original_max_position_embeddings", 1, 1, path, "rope_scaling."))
            return -1;
        if (!(c->rope_high_freq_factor > c->rope_low_freq_factor))
            return err_set("%s: rope_scaling.high_freq_factor must be larger than low_freq_factor", path);
        return 0;
    }
    char p[64];
    return err_set("%s: rope_scaling type '%s' is not supported (linear or llama3)", path, st_printable(p, sizeof(p), t));
}

static int hf_read_config_file(struct llama_config *c, const char *dir, const char *path);

int hf_read_config(struct llama_config *c, const char *dir) {
    char *path = fs_join(dir, "config.json");
    int rc = hf_read_config_file(c, dir, path);
    free(path);
    return rc;
}

static int hf_read_config_file(struct llama_config *c, const char *dir, const char *path) {
    cJSON *o = read_json_object(path);
    if (!o) return -1;
    memset(c, 0, sizeof(*c));
    llama_config_name_from_dir(c, dir);

    c->norm_eps = 1e-6f;  // LlamaConfig's defaults
    c->rope_theta = 10000.0f;
    c->max_seq_len = 2048;
    c->rope_factor = 1.0f;
    c->rope_low_freq_factor = 1.0f;
    c->rope_high_freq_factor = 4.0f;
    c->rope_original_max_seq_len = 8192;
    c->n_kv_heads = 0;
    c->head_dim = 0;
    int rc = jexpect(o, "model_type", "llama", path, "llamac reads Llama models only");
    if (!rc) rc = jexpect(o, "hidden_act", "silu", path, "Llama's MLP is SwiGLU");
    int abias = 0, mbias = 0;
    if (!rc) rc = jbool(&abias, o, "attention_bias", path);
    if (!rc) rc = jbool(&mbias, o, "mlp_bias", path);
    if (!rc && (abias || mbias))
        rc = err_set("%s: %s is true, but llamac's Llama has no biases", path, abias ? "attention_bias" : "mlp_bias");
    if (!rc) rc = jint(&c->dim, o, "hidden_size", 1, 1, path, "");
    if (!rc) rc = jint(&c->ffn_hidden, o, "intermediate_size", 1, 1, path, "");
    if (!rc) rc = jint(&c->n_layers, o, "num_hidden_layers", 1, 1, path, "");
    if (!rc) rc = jint(&c->n_heads, o, "num_attention_heads", 1, 1, path, "");
    if (!rc) rc = jint(&c->vocab_size, o, "vocab_size", 1, 1, path, "");
    if (!rc) rc = jint(&c->n_kv_heads, o, "num_key_value_heads", 0, 1, path, "");
    if (!rc) rc = jint(&c->head_dim, o, "head_dim", 0, 1, path, "");
    if (!rc) rc = jpos(&c->norm_eps, o, "rms_norm_eps", 0, path, "");
    if (!rc) rc = jpos(&c->rope_theta, o, "rope_theta", 0, path, "");
    if (!rc) rc = jint(&c->max_seq_len, o, "max_position_embeddings", 0, 1, path, "");
    if (!rc) rc = jbool(&c->tie_embeddings, o, "tie_word_embeddings", path);
    if (!rc) rc = read_rope_scaling(c, jget(o, "rope_scaling"), path);
    cJSON_Delete(o);
    if (rc) return -1;
    if (c->n_kv_heads == 0) c->n_kv_heads = c->n_heads;
    if (c->head_dim == 0) {
        if (c->dim % c->n_heads != 0)
            return err_set("%s: hidden_size %d is not a multiple of num_attention_heads %d and head_dim is not given",
                           path, c->dim, c->n_heads);
        c->head_dim = c->dim / c->n_heads;
    }
    return llama_config_validate(c, path);
}

// The shortest decimal that reads back as the same float (1e-05, not 9.99999975e-06).
static void fmt_float(char *out, size_t n, float v) {
    for (int p = 6; p <= 9; p++) {
        snprintf(out, n, "%.*g", p, (double)v);
        if (strtof(out, NULL) == v) break;
    }
}

int hf_write_config(const struct llama_config *c, const char *dir, enum st_dtype dtype) {
    struct hf_save_opts o = {dtype, 0, -1, -1};
    return hf_write_config_opts(c, dir, &o);
}

int hf_write_config_opts(const struct llama_config *c, const char *dir, const struct hf_save_opts *o) {
    const enum st_dtype dtype = o->dtype;
    static const char *torch_dtype[] = {"float32", "float16", "bfloat16"};
    char eps[32], theta[32], rs[512], f1[32], f2[32], f3[32];
    fmt_float(eps, sizeof(eps), c->norm_eps);
    fmt_float(theta, sizeof(theta), c->rope_theta);
    fmt_float(f1, sizeof(f1), c->rope_factor);
    fmt_float(f2, sizeof(f2), c->rope_low_freq_factor);
    fmt_float(f3, sizeof(f3), c->rope_high_freq_factor);
    if (c->rope_scaling == ROPE_SCALING_LINEAR)
        snprintf(rs, sizeof(rs), "{\"rope_type\": \"linear\", \"factor\": %s}", f1);
    else if (c->rope_scaling == ROPE_SCALING_LLAMA3)
        snprintf(rs, sizeof(rs), "{\"rope_type\": \"llama3\", \"factor\": %s, \"low_freq_factor\": %s, "
                 "\"high_freq_factor\": %s, \"original_max_position_embeddings\": %d}", f1, f2, f3,
                 c->rope_original_max_seq_len);
    else
        snprintf(rs, sizeof(rs), "null");
    char text[4096], ids[128] = "";
    if (o->bos_id >= 0 && o->eos_id >= 0)
        snprintf(ids, sizeof(ids), "  \"bos_token_id\": %d,\n  \"eos_token_id\": %d,\n", o->bos_id, o->eos_id);
    snprintf(text, sizeof(text),
             "{\n"
             "  \"architectures\": [\"LlamaForCausalLM\"],\n"
             "%s"
             "  \"model_type\": \"llama\",\n"
             "  \"hidden_act\": \"silu\",\n"
             "  \"hidden_size\": %d,\n"
             "  \"intermediate_size\": %d,\n"
             "  \"num_hidden_layers\": %d,\n"
             "  \"num_attention_heads\": %d,\n"
             "  \"num_key_value_heads\": %d,\n"
             "  \"head_dim\": %d,\n"
             "  \"vocab_size\": %d,\n"
             "  \"max_position_embeddings\": %d,\n"
             "  \"rms_norm_eps\": %s,\n"
             "  \"rope_theta\": %s,\n"
             "  \"rope_scaling\": %s,\n"
             "  \"tie_word_embeddings\": %s,\n"
             "  \"attention_bias\": false,\n"
             "  \"mlp_bias\": false,\n"
             "  \"attention_dropout\": 0.0,\n"
             "  \"initializer_range\": 0.02,\n"
             "  \"pretraining_tp\": 1,\n"
             "  \"use_cache\": true,\n"
             "  \"torch_dtype\": \"%s\"\n"
             "}\n",
             ids, c->dim, c->ffn_hidden, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size,
             c->max_seq_len, eps, theta, rs, c->tie_embeddings ? "true" : "false", torch_dtype[dtype]);
    char *path = fs_join(dir, "config.json");
    int rc = fs_write_atomic(path, text, strlen(text));
    free(path);
    return rc;
}

// ---------------------------------------------------------------------------------------------------
// The checkpoint's tensors: every file opened and validated, every tensor located
// ---------------------------------------------------------------------------------------------------

struct hf_entry {
    const char *name;
    int file;                     // index into ck->files
    const struct st_tensor *t;
};

struct hf_ckpt {
    char *source;                 // the file that lists the tensors: model.safetensors or the index (heap)
    int nfiles;
    struct st_file *files;
    int n;
    struct hf_entry *e;           // (n) sorted by name
};

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const struct hf_entry *)a)->name, ((const struct hf_entry *)b)->name);
}

static const struct hf_entry *ckpt_find(const struct hf_ckpt *ck, const char *name) {
    struct hf_entry key = {name, 0, NULL};
    return bsearch(&key, ck->e, (size_t)ck->n, sizeof(*ck->e), cmp_entry);
}

static void ckpt_close(struct hf_ckpt *ck) {
    for (int i = 0; i < ck->nfiles; i++) st_close(&ck->files[i]);
    free(ck->files);
    free(ck->e);
    free(ck->source);
    memset(ck, 0, sizeof(*ck));
}

// A shard name from the index must be a plain file name: no directory part, not "." or "..".
static int plain_file_name(const char *s) {
    if (!s[0] || !strcmp(s, ".") || !strcmp(s, "..")) return 0;
    for (const char *p = s; *p; p++)
        if (*p == '/' || *p == '\\' || (unsigned char)*p < 0x20) return 0;
    return 1;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

// (tensor, shard) pairs of the index's weight_map, sorted by tensor name.
struct wm_pair { const char *name, *file; };
static int cmp_wm(const void *a, const void *b) {
    return strcmp(((const struct wm_pair *)a)->name, ((const struct wm_pair *)b)->name);
}

static int open_index(struct hf_ckpt *ck, const char *dir) {
    const char *path = ck->source;
    cJSON *root = read_json_object(path);
    if (!root) return -1;
    int rc = 0;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(root, "metadata");
    char pn[100], pf[100];
    if (md && !cJSON_IsObject(md) && !cJSON_IsNull(md)) rc = err_set("%s: \"metadata\" must be an object", path);
    else if (!cJSON_IsObject(wm)) rc = err_set("%s: \"weight_map\" is missing or not an object", path);
    int nw = rc ? 0 : cJSON_GetArraySize(wm);
    struct wm_pair *pairs = xmalloc(sizeof(*pairs) * (size_t)(nw ? nw : 1));
    const char **names = xmalloc(sizeof(char *) * (size_t)(nw ? nw : 1));
    int k = 0;
    for (const cJSON *v = rc ? NULL : wm->child; v; v = v->next, k++) {
        st_printable(pn, sizeof(pn), v->string);
        if (!cJSON_IsString(v)) {
            rc = err_set("%s: weight_map entry '%s' is not a file name string", path, pn);
            break;
        }
        if (!plain_file_name(v->valuestring)) {
            rc = err_set("%s: shard file name '%s' (for tensor '%s') is not a plain file name inside the model "
                         "directory", path, st_printable(pf, sizeof(pf), v->valuestring), pn);
            break;
        }
        pairs[k] = (struct wm_pair){v->string, v->valuestring};
        names[k] = v->valuestring;
    }
    if (rc == 0 && nw == 0) rc = err_set("%s: weight_map lists no tensors", path);
    if (rc == 0) {
        qsort(pairs, (size_t)nw, sizeof(*pairs), cmp_wm);
        for (int i = 1; i < nw && rc == 0; i++)
            if (!strcmp(pairs[i].name, pairs[i - 1].name))
                rc = err_set("%s: weight_map lists tensor '%s' twice", path, st_printable(pn, sizeof(pn), pairs[i].name));
    }
    if (rc == 0) {  // the distinct shards, each opened (and its header validated) once
        qsort(names, (size_t)nw, sizeof(*names), cmp_str);
        int u = 0;
        for (int i = 0; i < nw; i++)
            if (i == 0 || strcmp(names[i], names[u - 1]) != 0) names[u++] = names[i];
        ck->files = xcalloc((size_t)u, sizeof(*ck->files));
        for (int i = 0; i < u && rc == 0; i++) {
            char *fp = fs_join(dir, names[i]);
            if (st_open(&ck->files[i], fp) != 0) rc = -1;
            else ck->nfiles++;
            free(fp);
        }
    }
    // Every shard holds exactly the tensors the index gives it
    for (int i = 0; i < ck->nfiles && rc == 0; i++) {
        const struct st_file *f = &ck->files[i];
        const char *fname = strrchr(f->path, '/') + 1;
        for (int j = 0; j < f->n && rc == 0; j++) {
            struct wm_pair key = {f->t[j].name, NULL};
            const struct wm_pair *p = bsearch(&key, pairs, (size_t)nw, sizeof(*pairs), cmp_wm);
            if (!p || strcmp(p->file, fname) != 0)
                rc = err_set("%s: tensor '%s' is not listed for this file in model.safetensors.index.json", f->path,
                             st_printable(pn, sizeof(pn), f->t[j].name));
        }
    }
    for (int i = 0; i < nw && rc == 0; i++) {
        char *fp = fs_join(dir, pairs[i].file);
        for (int j = 0; j < ck->nfiles; j++)
            if (!strcmp(ck->files[j].path, fp) && !st_find(&ck->files[j], pairs[i].name))
                rc = err_set("%s: the index maps tensor '%s' to %s, which does not contain it", path,
                             st_printable(pn, sizeof(pn), pairs[i].name), st_printable(pf, sizeof(pf), pairs[i].file));
        free(fp);
    }
    free(pairs);
    free(names);
    cJSON_Delete(root);
    return rc;
}

static int ckpt_open(struct hf_ckpt *ck, const char *dir) {
    memset(ck, 0, sizeof(*ck));
    char *single = fs_join(dir, "model.safetensors"), *index = fs_join(dir, "model.safetensors.index.json");
    if (is_file(single)) {
        ck->source = single;
        free(index);
        ck->files = xcalloc(1, sizeof(*ck->files));
        if (st_open(&ck->files[0], single) != 0) return ckpt_close(ck), -1;
        ck->nfiles = 1;
    } else if (is_file(index)) {
        ck->source = index;
        free(single);
        if (open_index(ck, dir) != 0) return ckpt_close(ck), -1;
    } else {
        free(single);
        free(index);
        return err_set("%s: no model.safetensors or model.safetensors.index.json (not a Hugging Face checkpoint "
                       "directory?)", dir);
    }
    for (int i = 0; i < ck->nfiles; i++) ck->n += ck->files[i].n;
    ck->e = xmalloc(sizeof(*ck->e) * (size_t)(ck->n ? ck->n : 1));
    int k = 0;
    for (int i = 0; i < ck->nfiles; i++)
        for (int j = 0; j < ck->files[i].n; j++) ck->e[k++] = (struct hf_entry){ck->files[i].t[j].name, i, &ck->files[i].t[j]};
    qsort(ck->e, (size_t)ck->n, sizeof(*ck->e), cmp_entry);
    for (int i = 1; i < ck->n; i++)
        if (!strcmp(ck->e[i].name, ck->e[i - 1].name)) {
            char pn[100];
            err_set("%s: tensor '%s' appears in both %s and %s", ck->source, st_printable(pn, sizeof(pn), ck->e[i].name),
                    ck->files[ck->e[i - 1].file].path, ck->files[ck->e[i].file].path);
            return ckpt_close(ck), -1;
        }
    return 0;
}

// ---------------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------------

static int is_norm(enum param_kind k) { return k == PARAM_ATTN_NORM || k == PARAM_FFN_NORM || k == PARAM_NORM; }

// The canonical shape of p: [full_rows, full_cols], or [C] for norms.
static int canonical_shape(const struct param_tensor *p, int64_t *shape) {
    if (is_norm(p->kind)) {
        shape[0] = p->full_cols;
        return 1;
    }
    shape[0] = p->full_rows;
    shape[1] = p->full_cols;
    return 2;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

static void fmt_shape(char *out, size_t n, const int64_t *shape, int ndim) {
    size_t k = (size_t)snprintf(out, n, "[");
    for (int d = 0; d < ndim && k < n; d++) k += (size_t)snprintf(out + k, n - k, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (k < n) snprintf(out + k, n - k, "]");
}

static int check_shape(const struct hf_ckpt *ck, const struct hf_entry *e, const int64_t *want, int nd) {
    int ok = e->t->ndim == nd;
    for (int d = 0; ok && d < nd; d++) ok = e->t->shape[d] == want[d];
    if (ok) return 0;
    char got[96], exp[96], pn[100];
    fmt_shape(got, sizeof(got), e->t->shape, e->t->ndim);
    fmt_shape(exp, sizeof(exp), want, nd);
    return err_set("%s: tensor '%s' has shape %s but config.json implies %s", ck->files[e->file].path,
                   st_printable(pn, sizeof(pn), e->name), got, exp);
}

// Loads DIR into m's parameters, or with m == NULL only checks it: the same names, shapes and data
// reads either way, so `llamac inspect --hf` validates exactly what a load would without allocating a
// model. pl is the layout of m (or of a tp = 1 model of the config).
static int load_or_check(struct llama *m, const struct param_layout *pl, int tie, const char *dir,
                         struct hf_weights_info *info) {
    struct hf_ckpt ck;
    if (ckpt_open(&ck, dir) != 0) return -1;
    char pn[100];
    int rc = 0;

    // Pass 1: names and shapes, before any data is read
    const struct hf_entry *tied_head = NULL;
    for (int i = 0; i < ck.n && rc == 0; i++) {
        const struct hf_entry *e = &ck.e[i];
        if (ends_with(e->name, "rotary_emb.inv_freq")) continue;
        const struct param_tensor *p = param_find(pl, e->name);
        if (!p && tie && !strcmp(e->name, "lm_head.weight")) {
            p = param_get(pl, PARAM_EMBED, -1);  // same shape as the embedding; must be equal (checked below)
            tied_head = e;
        }
        if (!p) {
            rc = err_set("%s: unexpected tensor '%s' (not a parameter of the Llama model config.json describes)",
                         ck.files[e->file].path, st_printable(pn, sizeof(pn), e->name));
            break;
        }
        int64_t shape[2];
        int nd = canonical_shape(p, shape);
        rc = check_shape(&ck, e, shape, nd);
    }
    for (int i = 0; i < pl->n && rc == 0; i++)
        if (!ckpt_find(&ck, pl->t[i].name))
            rc = err_set("%s: tensor '%s' is missing (config.json implies it)", ck.source, pl->t[i].name);

    // Pass 2: the data, one canonical tensor at a time, sliced for this rank
    size_t max_full = 0, max_local = 0;
    for (int i = 0; i < pl->n; i++) {
        size_t nf = (size_t)pl->t[i].full_rows * pl->t[i].full_cols;
        if (nf > max_full) max_full = nf;
        if (pl->t[i].numel > max_local) max_local = pl->t[i].numel;
    }
    float *full = rc ? NULL : xmalloc_aligned(sizeof(float) * max_full);
    float *local = rc || !m ? NULL : xmalloc_aligned(sizeof(float) * max_local);
    int n_dtype[3] = {0, 0, 0};
    for (int i = 0; i < pl->n && rc == 0; i++) {
        const struct param_tensor *p = &pl->t[i];
        const struct hf_entry *e = ckpt_find(&ck, p->name);
        if (st_read_f32(&ck.files[e->file], e->t, full) != 0) {
            rc = -1;
            break;
        }
        n_dtype[e->t->dtype]++;
        if (m) hf_set_param(m, p, full, local);
        if (p->kind == PARAM_EMBED && tied_head) {  // an lm_head saved beside tied embeddings must equal them
            float *head = xmalloc_aligned(sizeof(float) * max_full);
            rc = st_read_f32(&ck.files[tied_head->file], tied_head->t, head);
            if (rc == 0 && memcmp(head, full, sizeof(float) * (size_t)p->full_rows * p->full_cols) != 0)
                rc = err_set("%s: lm_head.weight differs from model.embed_tokens.weight, but config.json has "
                             "tie_word_embeddings true", ck.files[tied_head->file].path);
            if (rc == 0) n_dtype[tied_head->t->dtype]++;
            free(head);
        }
    }
    free(full);
    free(local);
    if (rc == 0 && info) {
        memset(info, 0, sizeof(*info));
        info->n_tensors = ck.n;
        info->n_files = ck.nfiles;
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

void hf_set_param(struct llama *m, const struct param_tensor *p, const float *full, float *local) {
    param_slice_from_full(p, local, full);
    llama_set_params(m, p->offset, local, p->numel);
}

int hf_load_weights_info(struct llama *m, const char *dir, struct hf_weights_info *info) {
    return load_or_check(m, &m->layout, m->cfg.tie_embeddings, dir, info);
}

int hf_load_weights(struct llama *m, const char *dir) { return hf_load_weights_info(m, dir, NULL); }

int hf_check_weights(const struct llama_config *c, const char *dir, struct hf_weights_info *info) {
    struct param_layout pl;
    if (param_layout_init(&pl, c, 1, 0) != 0) return -1;
    int rc = load_or_check(NULL, &pl, c->tie_embeddings, dir, info);
    param_layout_free(&pl);
    return rc;
}

// ---------------------------------------------------------------------------------------------------
// Saving
// ---------------------------------------------------------------------------------------------------

int hf_save(const struct llama *m, const char *dir, enum st_dtype dtype) {
    struct hf_save_opts o = {dtype, 0, -1, -1};
    return hf_save_opts(m, dir, &o);
}

int hf_save_opts(const struct llama *m, const char *dir, const struct hf_save_opts *o) {
    if (m->tp->size != 1)
        return err_set("%s: saving a tensor-parallel model (tp = %d) needs its slices gathered first; only tp = 1 "
                       "is supported", dir, m->tp->size);
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return err_set("%s: exists and is not a directory", dir);
    } else if (mkdir(dir, 0755) != 0) {
        return err_set("%s: cannot create directory: %s", dir, strerror(errno));
    }
    char *path = fs_join(dir, "model.safetensors.index.json");
    int sharded = is_file(path);
    if (sharded) err_set("%s: the directory holds a sharded checkpoint; save to an empty directory", path);
    free(path);
    if (sharded) return -1;

    const struct param_layout *pl = &m->layout;
    float *host = xmalloc_aligned(sizeof(float) * pl->total);
    llama_params_to_host(m, host);
    struct st_write_tensor *w = xcalloc((size_t)pl->n, sizeof(*w));
    const size_t esz = o->dtype == ST_F32 ? 4 : 2;
    // shards: tensors in layout order, a new file whenever the next tensor would pass the limit (a
    // tensor larger than the limit gets a file of its own), as transformers' save_pretrained splits
    int *shard = xcalloc((size_t)pl->n, sizeof(int)), nshards = 1;
    uint64_t cur = 0, total = 0;
    for (int i = 0; i < pl->n; i++) {
        const struct param_tensor *p = &pl->t[i];
        CHECK(p->rows == p->full_rows && p->cols == p->full_cols);  // tp = 1: every tensor whole, no padding
        w[i].name = p->name;
        w[i].ndim = canonical_shape(p, w[i].shape);
        w[i].data = host + p->offset;
        uint64_t bytes = (uint64_t)p->numel * esz;
        if (o->max_shard_bytes && cur > 0 && cur + bytes > o->max_shard_bytes) {
            nshards++;
            cur = 0;
        }
        shard[i] = nshards - 1;
        cur += bytes;
        total += bytes;
    }
    int rc = 0;
    path = fs_join(dir, "model.safetensors");
    if (nshards == 1) {
        rc = st_write(path, w, pl->n, o->dtype, "{\"format\":\"pt\"}");
    } else {
        if (is_file(path))  // transformers prefers it to the index: it would shadow the shards
            rc = err_set("%s: a single-file checkpoint is in the way of a sharded one; save to an empty directory", path);
        cJSON *index = cJSON_CreateObject(), *md = cJSON_AddObjectToObject(index, "metadata");
        cJSON *wm = cJSON_AddObjectToObject(index, "weight_map");
        cJSON_AddNumberToObject(md, "total_size", (double)total);
        for (int s = 0, first = 0; rc == 0 && s < nshards; s++) {
            int last = first;
            while (last < pl->n && shard[last] == s) last++;
            char name[64];
            snprintf(name, sizeof(name), "model-%05d-of-%05d.safetensors", s + 1, nshards);
            char *shard_path = fs_join(dir, name);
            rc = st_write(shard_path, w + first, last - first, o->dtype, "{\"format\":\"pt\"}");
            free(shard_path);
            for (int i = first; i < last; i++) cJSON_AddStringToObject(wm, w[i].name, name);
            first = last;
        }
        if (rc == 0) {
            char *text = cJSON_Print(index), *index_path = fs_join(dir, "model.safetensors.index.json");
            rc = fs_write_atomic(index_path, text, strlen(text));
            free(index_path);
            free(text);
        }
        cJSON_Delete(index);
    }
    free(path);
    free(shard);
    free(w);
    free(host);
    if (rc == 0) rc = hf_write_config_opts(&m->cfg, dir, o);
    return rc;
}

// ---------------------------------------------------------------------------------------------------
// The directory's tokenizer
// ---------------------------------------------------------------------------------------------------

char *hf_tokenizer_file(const char *dir) {
    const char *names[] = {"tokenizer.model", "tokenizer.json"};
    for (int i = 0; i < 2; i++) {
        char *p = fs_join(dir, names[i]);
        if (is_file(p)) return p;
        free(p);
    }
    return NULL;
}

int hf_check_data_tokenizer(const char *dir, const char *data_dir) {
    const char *names[] = {"tokenizer.model", "tokenizer.json"};
    char hex[65], data_sha[65], *seen[2] = {NULL, NULL};
    int n = 0, rc = 0;
    char *path = fs_join(data_dir, "tokenizer.model");
    if (!is_file(path)) {  // not prepared data: the loader says so
        free(path);
        return 0;
    }
    rc = sha256_file_hex(data_sha, path);
    free(path);
    for (int i = 0; i < 2 && rc == 0; i++) {
        path = fs_join(dir, names[i]);
        if (is_file(path) && (rc = sha256_file_hex(hex, path)) == 0) {
            if (!strcmp(hex, data_sha)) n = -1;  // a match
            else seen[n++] = fs_printf("%s (sha256 %s)", path, hex);
        }
        free(path);
        if (n < 0) break;
    }
    if (rc == 0 && n > 0)
        rc = err_set("%s: the data was made with tokenizer sha256 %s, but the weights' tokenizer is %s%s%s: prepare the "
                     "data with that tokenizer (llamac prep --tokenizer)", data_dir, data_sha, seen[0], n > 1 ? " or " : "",
                     n > 1 ? seen[1] : "");
    free(seen[0]);
    free(seen[1]);
    return rc;
}
