// The streaming loader: batches of B windows of T+1 tokens from the shards `llamac prep` wrote.
//
// The stream of a source is the concatenation of its shards (in manifest order), in which every document
// is already framed as BOS, tokens, EOS. Window w of a source is stream[w*T, w*T + T + 1): inputs are its
// first T tokens, targets the last T. The windows of a source are visited in a pseudo-random permutation
// (a Feistel network keyed by seed, source and epoch, so it needs no memory), a new one each epoch.
//
// Global samples: sample g of the run is the g-th window of the global batch sequence, the same whatever
// the number of ranks. Data-parallel rank r of dp_size gets samples g0 + r*B .. g0 + r*B + B-1 of each
// global batch of B*dp_size, so the ranks together read every sample exactly once; tensor-parallel ranks
// pass the same dp_rank and get the same batch. Sample g's source comes from the mixture weights by a
// "randomised deficit" rule: among the sources whose count is behind weight*(g+1), one is drawn with
// probability proportional to how far behind it is (a hash of (seed, g) is the dice). Every source's count
// stays within n_sources of weight*g at every step, so weights hold over short and long runs alike.
//
// The whole position is struct loader_state: the global sample, the samples drawn per source, the seed
// and a fingerprint of the data. A checkpoint stores it; loader_set_state resumes with exactly the batches
// that would have come, also with another dp_size (samples are global).
//
// Packed windows (fine-tuning data, whose manifest has "sft" and whose shards carry a loss mask): examples
// are whole documents, packed greedily in order into windows of T positions (an example of n tokens takes
// n - 1 positions: inputs are its first n - 1 tokens, targets its last n - 1, those whose loss mask is 0
// given as -1); an example longer than T + 1 tokens is cut to its first T + 1 (or dropped with
// drop_long), and one with no target left is dropped; both are counted (loader_info). The rest of a window
// is padding (input EOS, target -1). loader_next_docs also gives each position's document start (the index
// in its row where its example begins), for attention and RoPE within examples (core/backend.h). The
// examples are read into memory when the loader opens (5 bytes per token); windows are then what the
// permutation, the mixture and the state work on, exactly as for plain windows.
// Plain data with doc_mask: the same document starts, taken from the BOS tokens in each window.
//
// Reading: a background thread prepares the next batches (two ahead) with pread() of just the checksummed
// chunks that hold each window, so memory stays at a few batches whatever the corpus size. HDF5 is only
// called by loader_open, on the caller's thread (the HDF5 build is not thread-safe and the trainer uses it
// for checkpoints). Every chunk's Fletcher-32 checksum and every token id is checked as it is read.
#pragma once
#include <stdint.h>

#define LOADER_MAX_SOURCES 16

struct loader_config {
    const char *data_dir;          // the directory prep wrote (manifest.json, shards/, val/)
    int B, T;                      // windows per rank per batch, tokens per window (+1 read)
    uint64_t seed;
    int dp_rank, dp_size;
    int split;                     // 0 train (shards/), 1 validation (val/)
    int n_sources;                 // 0 = every source in the manifest
    char source_names[LOADER_MAX_SOURCES][32];
    double weights[LOADER_MAX_SOURCES];  // mixture weights (any scale); all 0 = proportional to tokens
    int vocab_size;                // expected (0 = do not check)
    const char *tokenizer_sha256;  // expected fingerprint of the run's tokenizer, or NULL
    int doc_mask;                  // plain data: document starts from BOS positions (loader_next_docs)
    int drop_long;                 // packed data: drop examples longer than T + 1 tokens instead of cutting them
};

// All fields are uint64 so that a checkpoint can store the state as an array (LOADER_STATE_WORDS).
struct loader_state {
    uint64_t global_sample;        // samples consumed by all ranks together
    uint64_t epoch;                // complete passes over the source that has been read least (informational)
    uint64_t seed;
    uint64_t fingerprint;          // the data, split and T the state belongs to
    uint64_t mixture;              // a hash of the mixture weights (a change is allowed, with a warning)
    uint64_t n_sources;
    uint64_t source_samples[LOADER_MAX_SOURCES];  // samples drawn from each source so far
};
#define LOADER_STATE_WORDS (sizeof(struct loader_state) / sizeof(uint64_t))

// Where one row of a batch came from (for logs and tests).
struct loader_row {
    uint64_t global_sample;
    int source;                    // index into loader_info.names
    uint64_t window;               // window index within the source
    uint64_t epoch;                // the source's epoch
};

struct loader_info {
    int n_sources;
    char names[LOADER_MAX_SOURCES][32];
    double weights[LOADER_MAX_SOURCES];     // normalised
    uint64_t tokens[LOADER_MAX_SOURCES];    // stream length (BOS/EOS included)
    uint64_t windows[LOADER_MAX_SOURCES];
    int n_shards;
    char tokenizer_sha256[65];
    int vocab_size, bos_id, eos_id;
    // packed (fine-tuning) data
    int packed;
    uint64_t examples, truncated, dropped;  // packed examples, of which cut to T + 1 tokens; dropped ones
    uint64_t targets, positions;            // target tokens and positions (T per window) of all windows
};

struct loader;

// Fills n_sources, source_names and weights from a mixture spec such as "en:0.4, ru:0.3, de:0.3" (weights
// of any scale), "en, ru" (those sources, by tokens) or "" (every source, by tokens). -1 with err_set.
int loader_parse_mixture(struct loader_config *c, const char *spec);

// Opens the data; -1 with err_set naming the file and the problem (manifest, shard, tokenizer).
int loader_open(struct loader **out, const struct loader_config *c);
// The next batch of this rank: inputs and targets (B*T each, row-major). -1 with err_set on a read error
// (the position does not advance).
int loader_next(struct loader *l, int *inputs, int *targets);
// The same, also describing each row (rows: B entries; may be NULL).
int loader_next_rows(struct loader *l, int *inputs, int *targets, struct loader_row *rows);
// The same with each position's document start (B*T; packed data, or doc_mask). Without either, docs
// gets 0 everywhere (one document per row).
int loader_next_docs(struct loader *l, int *inputs, int *targets, int *docs);
// Whether batches come with document starts (packed data or doc_mask).
int loader_has_docs(const struct loader *l);
// Position after the last batch returned.
void loader_get_state(const struct loader *l, struct loader_state *s);
// Resumes from a state (of this data, split, T and weights; any dp_size). -1 with err_set on a mismatch.
int loader_set_state(struct loader *l, const struct loader_state *s);
// Back to the first batch (for evaluation on the first N validation batches).
int loader_reset(struct loader *l);
void loader_get_info(const struct loader *l, struct loader_info *info);
void loader_close(struct loader *l);

// Whether the split of the data in dir has anything to read at window length T (for validation: a small
// fine-tuning set may hold out nothing). *has 0 or 1; -1 with err_set when the manifest cannot be read.
int loader_split_has_data(const char *dir, int split, int T, int *has);

// Checks a prepared directory end to end: manifest, tokenizer.model, and every shard read in full (ids
// in the vocabulary, BOS/EOS framing, checksums). -1 with err_set on the first problem.
int data_verify(const char *data_dir, int progress);
