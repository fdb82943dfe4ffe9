// Supervised fine-tuning data: instruction and chat records rendered with a chat template into tokens and a
// per-token loss mask (`llamac prep --sft TEMPLATE`, data/README.md "Fine-tuning data").
//
// A record is one JSON object per line, in one of three layouts (told apart by their fields):
//   {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}   chat, several turns
//   {"instruction": "...", "input": "..." (optional), "output": "..."}               alpaca
//   {"prompt": "...", "response": "..." (or "completion"), "system": "..." (optional)}
// Messages: an optional system message first, then user and assistant turns alternating, starting with a
// user turn and ending with an assistant turn. An alpaca user turn is the instruction, then a blank line
// and the input when there is one.
//
// A rendered record is a list of segments (text, or the BOS/EOS ids), each marked trained or not; the
// tokens are the segments' encodings one after the other (each text segment encoded on its own, so that
// the boundary between prompt and response is a token boundary). The sequence starts with BOS exactly
// once and ends with EOS; the loss mask is 1 on the tokens that are targets: the assistant contents and
// the end-of-turn token after each (EOS, or Llama 3's <|eot_id|>); everything else (BOS, system and user
// turns, template framing) is 0, unless train_on_prompt makes every token but BOS a target.
//
// Templates (contents stripped of surrounding white space, as Meta's reference code does):
//   llama2  BOS "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]" " {assistant} " EOS
//               "[INST] {user} [/INST]" " {assistant} " EOS ...
//           Meta's generation.py puts BOS before every (user, assistant) pair; llamac puts BOS once, at
//           the start of the record, and keeps one EOS after each assistant turn (data/README.md).
//   llama3  <|begin_of_text|> then per message "<|start_header_id|>{role}<|end_header_id|>\n\n"
//           "{content}" "<|eot_id|>", then <|end_of_text|> (the tokenizer's EOS; not a target). Needs a
//           tokenizer with Llama 3's special tokens (data/tokenizer_bpe.c).
//   plain   BOS "{system}\n\n" then per turn "### Instruction:\n{user}\n\n### Response:\n" "{assistant}" EOS
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "data/tokenizer.h"

enum sft_template { SFT_NONE = 0, SFT_PLAIN, SFT_LLAMA2, SFT_LLAMA3 };
enum sft_role { SFT_SYSTEM, SFT_USER, SFT_ASSISTANT };

#define SFT_MAX_MESSAGES 256

struct sft_message {
    enum sft_role role;
    const char *content;   // stripped; owned by the record
    size_t len;
};

struct sft_record {
    struct sft_message m[SFT_MAX_MESSAGES];
    int n;
    void *json;            // the parsed line (cJSON), which the contents point into
    char *owned;           // the alpaca user turn (instruction + input)
};

const char *sft_template_name(enum sft_template t);
// "llama2", "llama3" or "plain"; -1 with err_set otherwise.
int sft_template_parse(const char *s, enum sft_template *t);

// Parses one JSON line into a record. -1 with err_set "WHERE: problem" (WHERE is "FILE:LINE").
int sft_parse(struct sft_record *r, const char *line, size_t len, const char *where);
void sft_record_free(struct sft_record *r);

// Renders a record: ids (appended) holds BOS, the tokens, EOS; mask (appended, same length) 1 on targets.
// -1 with err_set when the tokenizer lacks what the template needs.
int sft_render(const struct tokenizer *tok, enum sft_template t, const struct sft_record *r, int train_on_prompt,
               struct token_buf *ids, struct token_buf *mask);
// The same record as text, for tests and for reading: segments joined, BOS/EOS spelled as the template's
// tokens ("<s>", "</s>"; "<|begin_of_text|>", "<|end_of_text|>"), and each target segment wrapped in
// "{{" "}}" when mark_targets. Returns malloc'd text.
char *sft_render_text(enum sft_template t, const struct sft_record *r, int mark_targets);
// Whether the tokenizer can render template t (Llama 3's special tokens, BOS and EOS). -1 with err_set.
int sft_check_tokenizer(const struct tokenizer *tok, enum sft_template t);
