#include "model/config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "core/config.h"
#include "core/error.h"
#include "core/fs.h"

int llama_ffn_hidden(int dim, int multiple_of, float ffn_dim_multiplier) {
    // in double and 64 bits: dim and multiple_of are bounded by the config reader, the product need not be;
    // a result beyond int is returned as -1 and refused by llama_config_validate
    double h = floor(2.0 * 4 * dim / 3);
    if (ffn_dim_multiplier > 0) h = floor((double)ffn_dim_multiplier * h);
    if (multiple_of > 0) h = (double)multiple_of * ceil(h / multiple_of);
    return h > 0 && h <= LLAMA_MAX_FFN ? (int)h : -1;
}

const char *llama_configs_dir(void) {
    static char *dir;  // made once, kept for the life of the process
    if (!dir) {
        const char *home = getenv("LLAMAC_HOME");
        dir = fs_join(home ? home : LLAMAC_SOURCE_DIR, "configs");
    }
    return dir;
}

int llama_config_preset(struct llama_config *c, const char *name) {
    struct stat st;
    char *path = strchr(name, '/') || strstr(name, ".ini") ? fs_printf("%s", name)
                                                           : fs_printf("%s/models/%s.ini", llama_configs_dir(), name);
    if (stat(path, &st) != 0) {
        err_set("model preset '%s' not found (looked for %s)", name, path);
        free(path);
        return -1;
    }
    struct cfg pc;
    cfg_init(&pc);
    int rc = cfg_load_file(&pc, path);
    if (rc == 0) {
        cfg_str(&pc, "model.preset", NULL);  // a preset does not chain to another
        rc = llama_config_read(c, &pc, "model");
    }
    if (rc == 0) rc = cfg_finish(&pc);
    cfg_free(&pc);
    free(path);
    return rc;
}

int llama_config_from_ini(struct llama_config *c, const char *text, const char *origin) {
    struct cfg mc;
    cfg_init(&mc);
    int rc = cfg_load_string(&mc, text, origin);
    if (rc == 0) rc = llama_config_read(c, &mc, "model");
    if (rc == 0) rc = cfg_finish(&mc);
    cfg_free(&mc);
    return rc;
}

int llama_config_read(struct llama_config *c, struct cfg *cfg, const char *s) {
    char k[128];
#define KEY(name) (snprintf(k, sizeof(k), "%s.%s", s, name), k)
    const char *preset = cfg_str(cfg, KEY("preset"), NULL);
    if (preset && preset[0]) {
        if (llama_config_preset(c, preset) != 0) return -1;
        snprintf(c->name, sizeof(c->name), "%s", preset);
    }
    const char *name = cfg_str(cfg, KEY("name"), NULL);
    if (name) snprintf(c->name, sizeof(c->name), "%s", name);
    int dim_given = cfg_has(cfg, KEY("dim")), heads_given = cfg_has(cfg, KEY("n_heads"));
    c->dim = (int)cfg_int_in(cfg, KEY("dim"), c->dim, 1, LLAMA_MAX_DIM);
    c->n_layers = (int)cfg_int_in(cfg, KEY("n_layers"), c->n_layers, 1, 1024);
    c->n_heads = (int)cfg_int_in(cfg, KEY("n_heads"), c->n_heads, 1, 4096);
    c->n_kv_heads = (int)cfg_int_in(cfg, KEY("n_kv_heads"), heads_given && !cfg_has(cfg, KEY("n_kv_heads")) ? c->n_heads : c->n_kv_heads, 1, 4096);
    if (c->n_kv_heads == 0) c->n_kv_heads = c->n_heads;
    int hd_default = (dim_given || heads_given || c->head_dim == 0) && c->n_heads > 0 ? c->dim / c->n_heads : c->head_dim;
    c->head_dim = (int)cfg_int_in(cfg, KEY("head_dim"), hd_default, 2, 4096);
    c->vocab_size = (int)cfg_int_in(cfg, KEY("vocab_size"), c->vocab_size, 1, LLAMA_MAX_VOCAB);
    c->multiple_of = (int)cfg_int_in(cfg, KEY("multiple_of"), c->multiple_of ? c->multiple_of : 256, 1, LLAMA_MAX_DIM);
    c->ffn_dim_multiplier = (float)cfg_float_in(cfg, KEY("ffn_dim_multiplier"), c->ffn_dim_multiplier, 0, 64);
    int recompute_ffn = dim_given || cfg_has(cfg, KEY("multiple_of")) || cfg_has(cfg, KEY("ffn_dim_multiplier")) || c->ffn_hidden == 0;
    int ffn_default = recompute_ffn ? llama_ffn_hidden(c->dim, c->multiple_of, c->ffn_dim_multiplier) : c->ffn_hidden;
    c->ffn_hidden = (int)cfg_int_in(cfg, KEY("ffn_hidden"), ffn_default, 1, LLAMA_MAX_FFN);
    c->norm_eps = (float)cfg_float(cfg, KEY("norm_eps"), c->norm_eps > 0 ? c->norm_eps : 1e-5);
    c->rope_theta = (float)cfg_float(cfg, KEY("rope_theta"), c->rope_theta > 0 ? c->rope_theta : 10000.0);
    const char *rs = cfg_str(cfg, KEY("rope_scaling"), NULL);
    if (rs) {
        if (!strcasecmp(rs, "none")) c->rope_scaling = ROPE_SCALING_NONE;
        else if (!strcasecmp(rs, "linear")) c->rope_scaling = ROPE_SCALING_LINEAR;
        else if (!strcasecmp(rs, "llama3")) c->rope_scaling = ROPE_SCALING_LLAMA3;
        else return err_set("%s.rope_scaling = '%s': expected none, linear or llama3", s, rs);
    }
    c->rope_factor = (float)cfg_float(cfg, KEY("rope_factor"), c->rope_factor > 0 ? c->rope_factor : 1.0);
    c->rope_low_freq_factor = (float)cfg_float(cfg, KEY("rope_low_freq_factor"), c->rope_low_freq_factor > 0 ? c->rope_low_freq_factor : 1.0);
    c->rope_high_freq_factor = (float)cfg_float(cfg, KEY("rope_high_freq_factor"), c->rope_high_freq_factor > 0 ? c->rope_high_freq_factor : 4.0);
    c->rope_original_max_seq_len = (int)cfg_int_in(cfg, KEY("rope_original_max_seq_len"), c->rope_original_max_seq_len > 0 ? c->rope_original_max_seq_len : 8192, 1, 1L << 24);
    c->max_seq_len = (int)cfg_int_in(cfg, KEY("max_seq_len"), c->max_seq_len > 0 ? c->max_seq_len : 2048, 1, LLAMA_MAX_SEQ);
    c->tie_embeddings = cfg_bool(cfg, KEY("tie_embeddings"), c->tie_embeddings);
#undef KEY
    return 0;
}

int llama_config_validate(const struct llama_config *c, const char *origin) {
    if (c->dim <= 0 || c->n_layers <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 || c->head_dim <= 0 ||
        c->vocab_size <= 0 || c->ffn_hidden <= 0 || c->max_seq_len <= 0 || c->dim > LLAMA_MAX_DIM ||
        c->vocab_size > LLAMA_MAX_VOCAB || c->ffn_hidden > LLAMA_MAX_FFN || c->max_seq_len > LLAMA_MAX_SEQ ||
        (int64_t)c->n_heads * c->head_dim > LLAMA_MAX_FFN)
        return err_set("%s: model sizes must be positive and at most dim %d, vocab_size %d, ffn_hidden %d, "
                       "max_seq_len %d, n_heads x head_dim %d (dim %d, n_layers %d, n_heads %d, n_kv_heads %d, "
                       "head_dim %d, vocab_size %d, ffn_hidden %d, max_seq_len %d)", origin, LLAMA_MAX_DIM,
                       LLAMA_MAX_VOCAB, LLAMA_MAX_FFN, LLAMA_MAX_SEQ, LLAMA_MAX_FFN, c->dim,
                       c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size, c->ffn_hidden,
                       c->max_seq_len);
    if (c->n_heads % c->n_kv_heads != 0)
        return err_set("%s: n_heads %d is not a multiple of n_kv_heads %d", origin, c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2 != 0) return err_set("%s: head_dim %d must be even for RoPE", origin, c->head_dim);
    if (!(c->norm_eps > 0) || !(c->rope_theta > 0))
        return err_set("%s: norm_eps and rope_theta must be positive", origin);
    return 0;
}

int llama_config_to_ini(const struct llama_config *c, char *out, int n) {
    static const char *scal[] = {"none", "linear", "llama3"};
    return snprintf(out, (size_t)n,
                    "[model]\nname = %s\ndim = %d\nn_layers = %d\nn_heads = %d\nn_kv_heads = %d\nhead_dim = %d\n"
                    "vocab_size = %d\nffn_hidden = %d\nnorm_eps = %.9g\nrope_theta = %.9g\nrope_scaling = %s\n"
                    "rope_factor = %.9g\nrope_low_freq_factor = %.9g\nrope_high_freq_factor = %.9g\n"
                    "rope_original_max_seq_len = %d\nmax_seq_len = %d\ntie_embeddings = %s\n",
                    c->name, c->dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size,
                    c->ffn_hidden, c->norm_eps, c->rope_theta, scal[c->rope_scaling], c->rope_factor,
                    c->rope_low_freq_factor, c->rope_high_freq_factor, c->rope_original_max_seq_len,
                    c->max_seq_len, c->tie_embeddings ? "true" : "false");
}

int llama_config_same_shape(const struct llama_config *a, const struct llama_config *b, char *why, int n) {
#define SAME(f) if (a->f != b->f) { snprintf(why, (size_t)n, #f " %g vs %g", (double)a->f, (double)b->f); return 0; }
    SAME(dim) SAME(n_layers) SAME(n_heads) SAME(n_kv_heads) SAME(head_dim) SAME(vocab_size) SAME(ffn_hidden)
    SAME(tie_embeddings) SAME(norm_eps) SAME(rope_theta)
#undef SAME
    return 1;
}

int64_t llama_param_count(const struct llama_config *c) {
    int64_t d = c->dim, hs = c->head_dim, F = c->ffn_hidden, V = c->vocab_size;
    int64_t attn = d * c->n_heads * hs * 2 + d * c->n_kv_heads * hs * 2;  // q, o and k, v
    int64_t layer = attn + 3 * d * F + 2 * d;
    return V * d * (c->tie_embeddings ? 1 : 2) + c->n_layers * layer + d;
}

void llama_config_name_from_dir(struct llama_config *c, const char *dir) {
    char *base = fs_printf("%s", dir);
    size_t bl = strlen(base);
    while (bl > 1 && base[bl - 1] == '/') base[--bl] = '\0';
    const char *slash = strrchr(base, '/');
    snprintf(c->name, sizeof(c->name), "%s", slash && slash[1] ? slash + 1 : base);  // a name, cut to its field
    free(base);
}
