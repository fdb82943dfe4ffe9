// Byte-level BPE as Llama 3 uses it, for the tokenizer interface of data/tokenizer.h (which dispatches
// here when a model file is not SentencePiece). Two file formats hold the same tokenizer:
//   - tiktoken's, as Meta ships tokenizer.model: one line per token, "BASE64(bytes) RANK", ranks 0..n-1;
//     the 256 special tokens follow at n.. n+255 with Meta's Llama 3 names (<|begin_of_text|>,
//     <|end_of_text|>, <|reserved_special_token_0..3|>, <|start_header_id|>, <|end_header_id|>,
//     <|reserved_special_token_4|>, <|eot_id|>, <|reserved_special_token_5..250|>): 128000.. for Llama 3;
//   - Hugging Face's tokenizer.json: model.type "BPE", model.vocab (tokens spelt with GPT-2's byte ->
//     unicode mapping), model.merges ("a b" or ["a", "b"], lowest index first), model.ignore_merges,
//     added_tokens (id, content).
// Encoding: special-token strings in the text become their ids; the rest is split by the Llama 3
// pre-tokenizer pattern (PCRE2, UTF + UCP; invalid UTF-8 never matches and stays as its own piece);
// a piece that is itself a token is that token (tiktoken always, tokenizer.json when ignore_merges);
// otherwise its bytes are merged, the adjacent pair of lowest rank first (leftmost on ties). Decoding
// concatenates the tokens' bytes; special tokens decode to nothing. decode(encode(x)) == x for any
// bytes without special-token strings. Encode and decode are thread-safe.
#pragma once
#include <stddef.h>

#include "data/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

struct bpe;

// What a model file is: 1 tiktoken, 2 tokenizer.json (starts with '{'), 0 neither (SentencePiece).
int bpe_sniff(const char *data, size_t n);
// Builds the tokenizer from the file's bytes; path names it in errors (-1 with err_set).
int bpe_load(struct bpe **out, const char *path, const char *data, size_t n);
void bpe_free(struct bpe *b);
int bpe_vocab_size(const struct bpe *b);
int bpe_token_id(const struct bpe *b, const char *special);  // id of a special token's string, or -1
const char *bpe_piece(const struct bpe *b, int id);          // byte-level spelling ("Ġthe"), "" out of range
int bpe_encode(const struct bpe *b, const char *text, size_t len, struct token_buf *out);
char *bpe_decode(const struct bpe *b, const int *ids, size_t n, size_t *len);

#ifdef __cplusplus
}
#endif
