// The safetensors container (Hugging Face's weight file format), read and written without trusting it.
//
// Layout of a file (the safetensors format):
//   bytes [0, 8)        N, the header length, little-endian uint64
//   bytes [8, 8+N)      UTF-8 JSON object, starting with '{', possibly padded with trailing spaces:
//                         {"NAME": {"dtype": "BF16", "shape": [R, C], "data_offsets": [b, e]}, ...,
//                          "__metadata__": {"key": "value", ...}}            (metadata optional)
//   bytes [8+N, size)   the data region; [b, e) are relative to its first byte; C order, little-endian.
//
// st_open validates the whole header against the file before a byte of data is read: N <= 100,000,000
// (the reference reader's cap) and N <= size - 8; valid UTF-8; JSON that parses to an object; every
// entry has a known dtype (F32, F16, BF16; others, such as I8 or F64, are refused by name), at most 4
// non-negative dimensions and integer offsets with b <= e; numel * dtype size == e - b (with overflow
// checks); no duplicate names; the ranges, sorted, start at 0, neither overlap nor leave gaps, and end
// exactly at the end of the file. Any violation is -1 with one err_set line "PATH: problem".
//
// Checklist (reader and writer must agree): a change to the header rules above goes into both
// st_open and st_write, and into the bad-file tests of tests/test_safetensors.c and tests/test_hf.c.
#pragma once
#include <stddef.h>
#include <stdint.h>

enum st_dtype { ST_F32, ST_F16, ST_BF16 };

#define ST_MAX_HEADER 100000000ull  // bytes; the reference reader's cap
#define ST_MAX_NDIM 4

struct st_tensor {
    char name[128];
    enum st_dtype dtype;
    int ndim;                // 0 (a scalar) .. ST_MAX_NDIM
    int64_t shape[4];        // shape[0..ndim)
    uint64_t begin, end;     // absolute file offsets of the data: [begin, end)
};

struct st_file {
    char *path;              // as opened (heap)
    int fd;
    uint64_t file_size;
    uint64_t data_start;     // 8 + N
    int n;
    struct st_tensor *t;     // (n), in file order (by offset)
    int *by_name;            // (n) indices into t sorted by name, for st_find
    void *metadata;          // the "__metadata__" object (a cJSON *) or NULL
};

// Opens and validates PATH; -1 with err_set("PATH: problem") on any invalid header (f is then closed).
int st_open(struct st_file *f, const char *path);
void st_close(struct st_file *f);
// The tensor called NAME, or NULL.
const struct st_tensor *st_find(const struct st_file *f, const char *name);
// The "__metadata__" value for KEY, or NULL.
const char *st_metadata(const struct st_file *f, const char *key);
// Reads tensor t into out (numel floats), converting F16 and BF16 exactly; -1 with err_set on a short
// read or an I/O error.
int st_read_f32(const struct st_file *f, const struct st_tensor *t, float *out);

int64_t st_numel(const struct st_tensor *t);
size_t st_dtype_size(enum st_dtype d);
const char *st_dtype_name(enum st_dtype d);  // "F32", "F16", "BF16"
// Parses "F32" / "f16" / "bf16" (any case; also "float32", "float16", "bfloat16"); -1 when unknown.
int st_dtype_parse(enum st_dtype *d, const char *s);

// Writer: tensors given as fp32 host arrays, stored as `dtype` (F16 and BF16 round to nearest even;
// NaN stays NaN, overflow becomes +-inf). metadata_json is a JSON object of string values (e.g.
// {"format":"pt"}, which Hugging Face transformers requires) or NULL. The header is padded with spaces
// to a multiple of 8 bytes so that the data is aligned. Writes PATH.tmp, fsyncs it, then renames it to
// PATH, so an existing PATH is never left half-written.
struct st_write_tensor {
    const char *name;
    int ndim;
    int64_t shape[4];
    const float *data;       // (numel)
};
int st_write(const char *path, const struct st_write_tensor *t, int n, enum st_dtype dtype, const char *metadata_json);

// Copies s into out (n bytes) for an error message: control bytes become '?', long strings end in
// "...", so that a name from an untrusted file can never break the one-line rule.
const char *st_printable(char *out, int n, const char *s);
