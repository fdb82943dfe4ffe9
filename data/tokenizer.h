// The tokenizer: SentencePiece BPE as LLaMA uses it (byte fallback, digits split, BOS/EOS ids), behind a C
// interface. The SentencePiece library does the work (tokenizer_spm.cpp is the only C++ in llamac); this
// header is all the rest of the code sees.
//
// Two things go beyond what SentencePiece does by itself, so that decode(encode(x)) == x for every byte
// string x (SentencePiece maps invalid UTF-8 to U+FFFD and decodes a stray U+2581 as a space):
//   - bytes that are not valid UTF-8, and the character U+2581 ("▁", SentencePiece's own space mark), are
//     encoded as byte pieces <0xNN>; the valid text around them is encoded by SentencePiece (the first run
//     with the dummy prefix, later runs without), so valid UTF-8 text gets exactly SentencePiece's ids;
//   - decoding is done here from the piece table, turning byte pieces back into raw bytes.
// Encode and decode are thread-safe: prep tokenizes with one tokenizer on all cores.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct tokenizer;

// A growable array of token ids (the caller owns ids; free it with free()).
struct token_buf {
    int *ids;
    size_t n, cap;
};
void token_buf_push(struct token_buf *b, int id);

// Loads a SentencePiece model file (such as LLaMA's tokenizer.model). -1 with err_set naming the file.
int tokenizer_load(struct tokenizer **out, const char *path);
void tokenizer_free(struct tokenizer *t);

int tokenizer_vocab_size(const struct tokenizer *t);
int tokenizer_bos_id(const struct tokenizer *t);
int tokenizer_eos_id(const struct tokenizer *t);
int tokenizer_unk_id(const struct tokenizer *t);
// SHA-256 of the model file's bytes (64 hex digits): the fingerprint shards carry.
const char *tokenizer_sha256(const struct tokenizer *t);
const char *tokenizer_path(const struct tokenizer *t);
// The piece of an id as SentencePiece spells it ("▁the", "<0x0A>", "<s>"); "" when out of range.
const char *tokenizer_piece(const struct tokenizer *t, int id);

// Appends the ids of text[0..len) to out (no BOS/EOS). -1 with err_set if SentencePiece fails.
int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, struct token_buf *out);
// Decodes ids to text (BOS/EOS/other control ids produce nothing). Returns a NUL-terminated malloc'd
// string and its length in *len (it may contain NUL bytes); NULL with err_set on an id out of range.
char *tokenizer_decode(const struct tokenizer *t, const int *ids, size_t n, size_t *len);

// Training a new model (LLaMA's options: BPE, split digits, byte fallback, identity normalisation, no
// whitespace cleanup, dummy prefix; unk 0, bos 1, eos 2, no pad). Sentences are the training text (lines
// without their newline; longer ones are cut at 4096 bytes on a character boundary). Training is
// deterministic: the same sentences and options give the same model bytes.
struct tokenizer_train_opts {
    int vocab_size;
    double character_coverage;  // 0 = LLaMA's 0.99995
};
int tokenizer_train(const char *model_path, const struct tokenizer_train_opts *o, const char *const *sentences,
                    const size_t *lens, size_t n);

#ifdef __cplusplus
}
#endif
