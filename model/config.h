// The LLaMA model configuration: shapes and the constants of RMSNorm and RoPE.
//
// A config comes from an INI preset (configs/models/NAME.ini), from the [model] section of a run config
// (a preset plus overrides), or from a Hugging Face config.json (model/hf.c).
#pragma once
#include <stdint.h>

// Bounds of the config reader and llama_config_validate: every size stays far inside int, and products the
// code forms (vocab x dim, max_seq_len x head_dim, n_heads x head_dim) inside size_t and int64.
#define LLAMA_MAX_DIM 65536
#define LLAMA_MAX_VOCAB (1 << 24)
#define LLAMA_MAX_FFN (1 << 20)
#define LLAMA_MAX_SEQ (1 << 20)

struct cfg;

enum rope_scaling { ROPE_SCALING_NONE, ROPE_SCALING_LINEAR, ROPE_SCALING_LLAMA3 };

struct llama_config {
    char name[64];
    int dim;                   // C
    int n_layers;              // L
    int n_heads;               // NH
    int n_kv_heads;            // KVH (grouped-query attention when < NH)
    int head_dim;              // HS (dim / n_heads unless set)
    int vocab_size;            // V
    int ffn_hidden;            // F
    int multiple_of;           // F is rounded up to a multiple of this when computed from dim
    float ffn_dim_multiplier;  // 0 = none
    float norm_eps;
    float rope_theta;
    enum rope_scaling rope_scaling;
    float rope_factor;                 // linear and llama3 scaling
    float rope_low_freq_factor, rope_high_freq_factor;  // llama3 scaling
    int rope_original_max_seq_len;     // llama3 scaling
    int max_seq_len;
    int tie_embeddings;        // output layer shares the embedding matrix
};

// LLaMA's FFN hidden size: int(2*4d/3), times ffn_dim_multiplier when given, rounded up to multiple_of.
int llama_ffn_hidden(int dim, int multiple_of, float ffn_dim_multiplier);

// Fills c from the keys "SECTION.dim", ... of cfg, keeping c's current values as defaults. When
// "SECTION.preset" is given, the preset is read first (a name in configs/models/ or a path to an INI).
int llama_config_read(struct llama_config *c, struct cfg *cfg, const char *section);
// Parses INI text with a [model] section (as llama_config_to_ini writes it); origin names it in errors.
int llama_config_from_ini(struct llama_config *c, const char *text, const char *origin);
// Loads a preset by name or path.
int llama_config_preset(struct llama_config *c, const char *name_or_path);
// Checks shapes (positive sizes, heads divide, head_dim even); -1 with err_set naming `origin`.
int llama_config_validate(const struct llama_config *c, const char *origin);
// Writes the config as an INI [model] section (for checkpoints); returns chars written.
int llama_config_to_ini(const struct llama_config *c, char *out, int n);
// 1 when two configs describe the same model shapes (name ignored).
// c->name = the base name of dir, trailing slashes ignored (models loaded from a directory).
void llama_config_name_from_dir(struct llama_config *c, const char *dir);
int llama_config_same_shape(const struct llama_config *a, const struct llama_config *b, char *why, int n);

// Exact parameter count of the full (unsharded) model.
int64_t llama_param_count(const struct llama_config *c);
// Directory that holds configs/ (LLAMAC_HOME or the source tree the binary was built from).
const char *llama_configs_dir(void);
