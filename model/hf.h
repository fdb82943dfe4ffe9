// Hugging Face Llama checkpoint directories: config.json plus model.safetensors, or shards listed in
// model.safetensors.index.json ({"metadata": {...}, "weight_map": {TENSOR: FILE}}).
//
// Names and shapes are the canonical ones of model/params.h (HF's names, [out, in] matrices, rotate-half
// RoPE), so loading is a lookup plus a dtype conversion: no permutation. Every file is untrusted: the
// config's keys are type-checked, every safetensors header is validated (model/safetensors.h) before a
// byte of data is read, the index may name only plain files inside the directory, and the set of
// tensors must be exactly what config.json implies (rotary_emb.inv_freq, a buffer some exporters
// save, is ignored; with tied embeddings lm_head.weight may be absent, or present and equal).
//
// Checklist (config keys): a key read by hf_read_config is written by hf_write_config, and both are
// covered in tests/test_hf.c.
#pragma once
#include "model/config.h"
#include "model/llama.h"
#include "model/safetensors.h"

// DIR/config.json -> c. Keys: hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
// vocab_size (required); num_key_value_heads (absent or null = heads), head_dim (absent or null =
// hidden/heads), rms_norm_eps (1e-6), rope_theta (10000), rope_scaling (null, {"rope_type" or "type":
// "linear", "factor"}, {"rope_type": "llama3", "factor", "low_freq_factor", "high_freq_factor",
// "original_max_position_embeddings"}), tie_word_embeddings (false), max_position_embeddings (2048).
// model_type (when given) must be "llama", hidden_act "silu", attention_bias and mlp_bias false.
// c->name is the directory's base name. -1 with err_set naming the file and the key.
int hf_read_config(struct llama_config *c, const char *dir);
// How a model is saved: dtype of the weights, the shard size limit (0 = one model.safetensors; else
// model-NNNNN-of-MMMMM.safetensors of at most max_shard_bytes each, a larger tensor alone in its file,
// listed by model.safetensors.index.json with metadata.total_size) and the tokenizer's BOS and EOS ids
// for config.json (-1: omitted).
struct hf_save_opts {
    enum st_dtype dtype;
    uint64_t max_shard_bytes;
    int bos_id, eos_id;
};
// Writes DIR/config.json (via a temporary file and a rename): every field transformers' LlamaConfig
// reads (architectures, model_type, sizes, num_key_value_heads, head_dim, max_position_embeddings,
// rms_norm_eps, rope_theta, rope_scaling or null, tie_word_embeddings, torch_dtype, bos/eos_token_id).
int hf_write_config(const struct llama_config *c, const char *dir, enum st_dtype dtype);
int hf_write_config_opts(const struct llama_config *c, const char *dir, const struct hf_save_opts *o);

// What hf_load_weights_info found.
struct hf_weights_info {
    int n_tensors;      // tensors in the checkpoint, across all files (ignored ones included)
    int n_files;        // safetensors files read
    int n_dtype[3];     // loaded tensors per enum st_dtype
    char dtype[24];     // "BF16", or e.g. "F32+BF16" when mixed
};

// Fills m->params from DIR's weights: DIR/model.safetensors when present (as transformers prefers),
// else the shards of DIR/model.safetensors.index.json. Works on any tp rank: each canonical tensor is read whole, then
// this rank's slice is taken (param_slice_from_full) and copied to the backend. -1 with err_set naming
// the file and the problem (the parameters may then be partly overwritten).
int hf_load_weights(struct llama *m, const char *dir);
int hf_load_weights_info(struct llama *m, const char *dir, struct hf_weights_info *info);
// Every check and every data read of hf_load_weights, for the model config c describes, without
// allocating the model (what `llamac inspect --hf` runs: a 7B checkpoint needs one tensor of memory,
// not the model's).
int hf_check_weights(const struct llama_config *c, const char *dir, struct hf_weights_info *info);

// The one way loaders of released weights (this file, model/meta.c) write a parameter: p's canonical
// tensor `full` (full_rows x full_cols) -> this rank's slice (via `local`, p->numel floats of scratch)
// -> the backend's parameter block.
void hf_set_param(struct llama *m, const struct param_tensor *p, const float *full, float *local);
// PATH parsed as a JSON object (a cJSON *, freed with cJSON_Delete): regular file, at most 64 MiB, valid
// JSON, an object; NULL with err_set("PATH: problem"). Shared with model/meta.c (params.json).
void *hf_json_read(const char *path);

// Writes DIR/config.json and DIR/model.safetensors (one file, `dtype`, metadata {"format": "pt"} as
// transformers requires), creating DIR when needed. Only for m->tp->size == 1 (a tp rank holds slices);
// refuses a DIR that holds a sharded checkpoint (model.safetensors.index.json), whose stale index and
// shards would be left beside the new file.
int hf_save(const struct llama *m, const char *dir, enum st_dtype dtype);
// hf_save with options: sharded above o->max_shard_bytes (refusing a DIR whose model.safetensors would
// shadow the index), BOS/EOS ids in config.json.
int hf_save_opts(const struct llama *m, const char *dir, const struct hf_save_opts *o);

// The tokenizer file a released-weights directory (Hugging Face or Meta) ships: DIR/tokenizer.model
// (SentencePiece, or Llama 3's tiktoken file) when present, else DIR/tokenizer.json: its path (heap, free
// it), or NULL when it has neither.
char *hf_tokenizer_file(const char *dir);
// `[model] init = hf:DIR` (or meta:DIR) with prepared data: the data's tokenizer (DATA_DIR/tokenizer.model,
// which prep copies there and the manifest fingerprints) must be the one DIR ships, compared by the
// SHA-256 of DIR/tokenizer.model and of DIR/tokenizer.json (either may match: Hugging Face's Llama 2
// directories ship both). -1 with one err_set line naming both hashes when neither matches; 0 (nothing
// to compare) when DIR ships neither.
int hf_check_data_tokenizer(const char *dir, const char *data_dir);
