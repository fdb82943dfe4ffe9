// Corpus preparation (`llamac prep`): text, fortune, blank-line and JSONL inputs (optionally gzip'd) →
// tokenizer.model + shards/ + val/ + manifest.json.
//
// The pipeline reads documents on the calling thread, in input order, in chunks of about a megabyte;
// worker threads tokenize chunks as they come; the calling thread writes finished chunks to the shards
// strictly in order. So the output does not depend on the number of threads: the same inputs and settings
// give byte-identical files. Documents go to the held-out split by a hash of (seed, source, document
// index), so the split is stable when more inputs are appended to a source.
//
// Output, written under OUT/.prep-tmp-PID/ and moved into place only when everything succeeded:
//   OUT/tokenizer.model          copied or trained
//   OUT/shards/SOURCE_NNNNN.h5   training documents (data/shard.h)
//   OUT/val/SOURCE_NNNNN.h5      held-out documents
//   OUT/manifest.json            "llamac-data" v1: tokenizer, per-source counts, the list of shards
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "data/sft.h"

#define PREP_MAX_SOURCES 16   // the loader's mixture holds at most 16 sources
#define PREP_NAME_MAX 32      // source and language names: [A-Za-z0-9_.-], at most 31 characters
#define MANIFEST_FORMAT "llamac-data"
#define MANIFEST_VERSION 1

enum prep_format { PREP_AUTO, PREP_TEXT, PREP_FORTUNE, PREP_BLANK, PREP_JSONL };

struct prep_source {
    char name[PREP_NAME_MAX];
    char language[PREP_NAME_MAX];
    enum prep_format format;
    int n_paths;
    char **paths;
};

struct prep_config {
    const char *out_dir;
    const char *tokenizer;       // an existing model (SentencePiece, tiktoken or tokenizer.json), or NULL to train one
    int vocab_size;              // when training
    double sample_mb;            // text sampled for training (0 = 64 MB)
    double character_coverage;   // when training (0 = 0.99995)
    struct prep_source *sources;
    int n_sources;
    uint64_t shard_tokens;       // target tokens per shard (0 = 2^25)
    double val_fraction;         // share of documents held out (0..0.5)
    uint64_t seed;
    int threads;                 // 0 = all cores
    const char *text_field;      // JSONL field (NULL = "text")
    int progress;                // print the progress line
    // Fine-tuning data (data/sft.h): every input is JSONL records rendered with this chat template, and
    // the shards get a loss mask. SFT_NONE: plain text.
    enum sft_template sft;
    int train_on_prompt;         // with sft: every token but BOS is a target
};

// Stats of a finished run (for the CLI summary and the benchmark).
struct prep_stats {
    uint64_t bytes, docs, tokens;  // text bytes read, documents, stored tokens (BOS/EOS included)
    uint64_t targets;              // sft: tokens whose loss mask is 1
    int shards;
    double seconds;                // tokenization pipeline only (not tokenizer training)
};

const char *prep_format_name(enum prep_format f);
int prep_format_parse(const char *s, enum prep_format *f);  // -1 (err_set) when unknown
int prep_name_valid(const char *s);                        // source/language name check

int prep_run(const struct prep_config *c, struct prep_stats *stats);

// ---------------------------------------------------------------------------------------------------
// Reading documents (also used by the tests and the benchmark)
// ---------------------------------------------------------------------------------------------------
struct doc_reader;
// Opens a file (plain or gzip) in the given format (PREP_AUTO decides by name and content). For JSONL,
// text_field "" returns each whole record (a JSON object) as the document (fine-tuning data).
int doc_reader_open(struct doc_reader **out, const char *path, enum prep_format format, const char *text_field);
// Next document: 1 (doc/len valid until the next call), 0 at the end, -1 with err_set ("FILE:LINE: ...").
int doc_reader_next(struct doc_reader *r, const char **doc, size_t *len);
enum prep_format doc_reader_format(const struct doc_reader *r);
uint64_t doc_reader_offset(const struct doc_reader *r);   // bytes of the file consumed (compressed)
uint64_t doc_reader_line(const struct doc_reader *r);     // line number of the last document's end
const char *doc_reader_path(const struct doc_reader *r);
void doc_reader_close(struct doc_reader *r);
