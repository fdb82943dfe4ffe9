// Meta's original LLaMA checkpoints (LLaMA 1, Llama 2, Llama 3): a directory with params.json and
// model-parallel shards consolidated.00.pth, consolidated.01.pth, ... written by torch.save (read by
// model/torch_pickle.h, without Python).
//
// params.json: dim, n_layers, n_heads (required); n_kv_heads (absent or null = n_heads), vocab_size
// (absent or -1 = from the tensor shapes), multiple_of (256), ffn_dim_multiplier (absent or null = none),
// norm_eps (1e-5), rope_theta (10000), use_scaled_rope (false; true = Llama 3.1's llama3 RoPE scaling,
// factor 8, low 1, high 4, original 8192), max_seq_len (2048). FFN hidden = llama_ffn_hidden(dim,
// multiple_of, ffn_dim_multiplier), as Meta's model.py computes it; head_dim = dim / n_heads.
//
// Shards are concatenated along Meta's model-parallel dimension: wq, wk, wv, w1, w3 and output by rows
// (dim 0), wo and w2 by columns (dim 1), tok_embeddings by columns in LLaMA 1/2 and by rows in Llama 3
// (told apart by the shard's shape); norms are replicated and must be equal in every shard; rope.freqs
// (LLaMA 1's buffer) is ignored; without output.weight the embeddings are tied. Names become the
// canonical (Hugging Face) ones of model/params.h, and the rows of wq and wk are permuted from Meta's
// interleaved RoPE pairs to rotate-half within each head: HF row j*HS/2 + i = Meta row 2i + j (j in
// {0, 1}, i < HS/2). Every shard is validated and every name and shape matched before any tensor data
// is read; any problem is -1 with one err_set line naming the file.
#pragma once
#include "model/config.h"
#include "model/hf.h"
#include "model/llama.h"

// DIR/params.json (plus the shards' shapes, for vocab_size -1 and tied embeddings) -> c; c->name is
// the directory's base name.
int meta_read_config(struct llama_config *c, const char *dir);
// Fills m's parameters (any tp rank) from DIR's shards, through hf_set_param as Hugging Face loads do.
int meta_load_weights(struct llama *m, const char *dir);
// Every check and data read of meta_load_weights without a model (`llamac inspect --meta`).
int meta_check_weights(const struct llama_config *c, const char *dir, struct hf_weights_info *info);
