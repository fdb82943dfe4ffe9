// Token shards: the HDF5 files `llamac prep` writes and the loader streams from.
//
// A shard holds whole documents of one source, each stored framed as BOS, its tokens, EOS, so that the
// concatenation of all shards of a source is exactly the stream the loader cuts windows from:
//   tokens       uint16 (vocab <= 65536) or uint32, little-endian, 1-D, chunked with Fletcher-32 checksums
//   doc_offsets  uint64, start of each document (the index of its BOS) in `tokens`, chunked, Fletcher-32
//   attributes   format "llamac-shard", version, vocab_size, tokenizer_sha256, bos_id, eos_id, source,
//                language, split ("train"/"val"), n_tokens, n_docs, max_token_id, chunk_tokens
// SFT shards (`llamac prep --sft`) add one dataset, whose absence means "train on every token":
//   loss_mask    uint8, one per token of `tokens`, chunked, Fletcher-32: 1 where the token is a training
//                target (its prediction from the token before it counts in the loss), 0 where it is
//                prompt or template framing; 0 at every BOS
// Writes are deterministic (no timestamps, fixed chunking, every chunk written once, in order), so the same
// documents give a byte-identical file.
//
// A shard is never trusted: shard_open() checks the format, the version, the attributes against each other
// and against the datasets, the layout of the chunks and the checksum filter, and reports the first problem
// as one line naming the file. Reading tokens goes either through HDF5 (shard_read_tokens, for tools and
// tests) or, in the loader's background thread, through plain pread() of the checksummed chunks
// (shard_read_raw): the HDF5 library in use is not thread-safe, and the trainer calls HDF5 (checkpoints)
// on its own thread while the loader prefetches, so the background thread never calls HDF5.
//
// Checklist when the format changes: SHARD_VERSION, shard_writer_*, shard_open, shard_read_raw, the
// description in data/README.md, and the loader's expectations (loader.c).
#pragma once
#include <stddef.h>
#include <stdint.h>

#define SHARD_FORMAT "llamac-shard"
#define SHARD_VERSION 1
#define SHARD_CHUNK_TOKENS 32768  // default chunk of `tokens` (64 KiB as uint16)

enum shard_split { SHARD_TRAIN = 0, SHARD_VAL = 1 };

struct shard_meta {
    char source[64];
    char language[64];
    char tokenizer_sha256[65];
    int vocab_size, bos_id, eos_id;
    int split;  // enum shard_split
};

// ---------------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------------
struct shard_writer;
// Creates the file (replacing any file at path). chunk_tokens 0 = SHARD_CHUNK_TOKENS.
int shard_writer_open(struct shard_writer **out, const char *path, const struct shard_meta *m, uint64_t chunk_tokens);
// Appends one document as BOS, ids, EOS. Ids must lie in [0, vocab_size) (-1 with err_set otherwise).
int shard_writer_add_doc(struct shard_writer *w, const int *ids, size_t n);
// The same with its loss mask: mask (n + 2) covers BOS, the ids and EOS as stored. A shard's documents are
// either all masked (it gets a loss_mask dataset) or none.
int shard_writer_add_doc_masked(struct shard_writer *w, const int *ids, const uint8_t *mask, size_t n);
uint64_t shard_writer_tokens(const struct shard_writer *w);  // stored so far, BOS/EOS included
// Finishes and closes the file; frees w whatever happens. -1 with err_set on an I/O error.
int shard_writer_close(struct shard_writer *w, uint64_t *n_tokens, uint64_t *n_docs);
// Closes and deletes the file (on an error elsewhere).
void shard_writer_abort(struct shard_writer *w);

// ---------------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------------
struct shard_info {
    char *path;        // as opened (heap; shard_info_free)
    char *name;        // as named in messages (e.g. "shards/en_00003.h5"; heap)
    struct shard_meta meta;
    uint64_t n_tokens, n_docs;
    int max_token_id;
    int token_bytes;   // 2 or 4
    // Where the chunks of `tokens` lie in the file (for shard_read_raw): chunk k holds tokens
    // [k*chunk_tokens, (k+1)*chunk_tokens) followed by its 4-byte checksum, at chunk_addr[k] (or at
    // chunk_addr0 + k*chunk_stride when they are evenly spaced, chunk_addr == NULL).
    uint64_t chunk_tokens, n_chunks;
    uint64_t chunk_addr0, chunk_stride;
    uint64_t *chunk_addr;
    int has_mask;      // a loss_mask dataset (SFT shard)
};

// Opens and validates a shard; name is how messages call it. Expectations (any may be 0/NULL to skip):
// the tokenizer fingerprint and vocabulary size of the run. -1 with err_set ("NAME: problem").
int shard_open(struct shard_info *s, const char *path, const char *name, const char *expect_sha256, int expect_vocab);
void shard_info_free(struct shard_info *s);

// Reads tokens [start, start + n) through HDF5 (calling thread; not concurrently with other HDF5 use).
int shard_read_tokens(const struct shard_info *s, uint64_t start, uint64_t n, int *out);
// Reads loss_mask [start, start + n) through HDF5 (has_mask shards only).
int shard_read_mask(const struct shard_info *s, uint64_t start, uint64_t n, uint8_t *out);
// Reads all doc_offsets (malloc'd, s->n_docs entries) through HDF5.
int shard_read_doc_offsets(const struct shard_info *s, uint64_t **out);
// Reads the whole shard and checks every token id, the document offsets and the BOS/EOS framing.
int shard_verify(const struct shard_info *s);

// Reads tokens [start, start + n) with pread() on fd (the shard's file opened O_RDONLY), checking each
// chunk's Fletcher-32 checksum and each id against the vocabulary. scratch holds one stored chunk
// (shard_chunk_bytes(s)). Thread-safe: no HDF5 calls, no shared state.
int shard_read_raw(const struct shard_info *s, int fd, uint64_t start, uint64_t n, int *out, uint8_t *scratch);
size_t shard_chunk_bytes(const struct shard_info *s);
uint32_t shard_fletcher32(const void *data, size_t n);  // HDF5's Fletcher-32 (H5_checksum_fletcher32)
