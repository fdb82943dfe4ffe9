// Shards: what goes in comes out (through HDF5 and through the raw checksummed reader), rebuilds are
// byte-identical, and damaged or mismatched files give one-line errors naming the file.
#include <criterion/criterion.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/rng.h"
#include "data/shard.h"

#define DIR LLAMAC_TEST_TMP "/test_shard"
#define SHA "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void path(char *out, size_t n, const char *name) {
    mkdir(DIR, 0755);
    snprintf(out, n, "%s/%s", DIR, name);
}

// Documents of random length with random ids in [3, vocab), written with the given chunk size.
struct docs { int n; int *len; int **ids; };

static struct docs make_docs(int n, int vocab, uint64_t seed) {
    struct docs d = {n, malloc(sizeof(int) * n), malloc(sizeof(int *) * n)};
    struct rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        d.len[i] = (int)(rng_u64(&r) % 300);
        d.ids[i] = malloc(sizeof(int) * (d.len[i] + 1));
        for (int k = 0; k < d.len[i]; k++) d.ids[i][k] = 3 + (int)(rng_u64(&r) % (uint64_t)(vocab - 3));
    }
    return d;
}

static void free_docs(struct docs *d) {
    for (int i = 0; i < d->n; i++) free(d->ids[i]);
    free(d->ids);
    free(d->len);
}

static struct shard_meta meta(int vocab) {
    struct shard_meta m = {.vocab_size = vocab, .bos_id = 1, .eos_id = 2, .split = SHARD_TRAIN};
    snprintf(m.source, sizeof(m.source), "en");
    snprintf(m.language, sizeof(m.language), "en");
    snprintf(m.tokenizer_sha256, sizeof(m.tokenizer_sha256), "%s", SHA);
    return m;
}

static void write_shard(const char *p, const struct docs *d, int vocab, uint64_t chunk) {
    struct shard_meta m = meta(vocab);
    struct shard_writer *w;
    cr_assert(shard_writer_open(&w, p, &m, chunk) == 0, "%s", err_msg());
    for (int i = 0; i < d->n; i++) cr_assert(shard_writer_add_doc(w, d->ids[i], (size_t)d->len[i]) == 0, "%s", err_msg());
    uint64_t nt, nd;
    cr_assert(shard_writer_close(w, &nt, &nd) == 0, "%s", err_msg());
    cr_assert_eq(nd, (uint64_t)d->n);
}

static int files_equal(const char *a, const char *b) {
    FILE *x = fopen(a, "rb"), *y = fopen(b, "rb");
    int eq = x && y, ca, cb;
    while (eq && (ca = fgetc(x)) != EOF) {
        cb = fgetc(y);
        eq = ca == cb;
    }
    if (eq) eq = fgetc(y) == EOF;
    if (x) fclose(x);
    if (y) fclose(y);
    return eq;
}

static void check_contents(const char *p, const struct docs *d, int vocab) {
    struct shard_info s;
    cr_assert(shard_open(&s, p, p, SHA, vocab) == 0, "%s", err_msg());
    cr_assert_eq(s.n_docs, (uint64_t)d->n);
    cr_assert_eq(s.token_bytes, vocab <= 65536 ? 2 : 4);
    uint64_t *off;
    cr_assert(shard_read_doc_offsets(&s, &off) == 0, "%s", err_msg());
    int *tok = malloc(sizeof(int) * s.n_tokens), *raw = malloc(sizeof(int) * s.n_tokens);
    cr_assert(shard_read_tokens(&s, 0, s.n_tokens, tok) == 0, "%s", err_msg());
    int fd = open(p, O_RDONLY);
    uint8_t *scratch = malloc(shard_chunk_bytes(&s));
    cr_assert(shard_read_raw(&s, fd, 0, s.n_tokens, raw, scratch) == 0, "%s", err_msg());
    cr_expect(memcmp(tok, raw, sizeof(int) * s.n_tokens) == 0, "raw reads differ from HDF5 reads");
    uint64_t at = 0;
    for (int i = 0; i < d->n; i++) {  // BOS, the document, EOS, back to back
        cr_assert_eq(off[i], at, "doc_offsets[%d]", i);
        cr_assert_eq(tok[at], 1);
        cr_assert(memcmp(tok + at + 1, d->ids[i], sizeof(int) * d->len[i]) == 0, "document %d differs", i);
        cr_assert_eq(tok[at + 1 + d->len[i]], 2);
        at += (uint64_t)d->len[i] + 2;
    }
    cr_assert_eq(at, s.n_tokens);
    // a window across chunk boundaries, read raw
    uint64_t start = s.chunk_tokens - 7, n = s.chunk_tokens + 20 < s.n_tokens - start ? s.chunk_tokens + 20 : 5;
    cr_assert(shard_read_raw(&s, fd, start, n, raw, scratch) == 0, "%s", err_msg());
    cr_expect(memcmp(raw, tok + start, sizeof(int) * n) == 0);
    cr_expect(shard_verify(&s) == 0, "%s", err_msg());
    close(fd);
    free(scratch);
    free(tok);
    free(raw);
    free(off);
    shard_info_free(&s);
}

Test(shard, contents_are_the_documents_framed_by_bos_and_eos) {
    char p[1024];
    path(p, sizeof(p), "u16.h5");
    struct docs d = make_docs(200, 32000, 1);
    write_shard(p, &d, 32000, 1000);
    check_contents(p, &d, 32000);
    free_docs(&d);
}

Test(shard, uint32_tokens_when_the_vocabulary_exceeds_65536) {
    char p[1024];
    path(p, sizeof(p), "u32.h5");
    struct docs d = make_docs(50, 128256, 2);
    write_shard(p, &d, 128256, 777);
    check_contents(p, &d, 128256);
    free_docs(&d);
}

Test(shard, rebuilding_gives_a_byte_identical_file) {
    char a[1024], b[1024];
    path(a, sizeof(a), "same_a.h5");
    path(b, sizeof(b), "same_b.h5");
    struct docs d = make_docs(300, 1000, 3);
    write_shard(a, &d, 1000, 512);
    sleep(1);  // HDF5 would record a different modification time if times were tracked
    write_shard(b, &d, 1000, 512);
    cr_expect(files_equal(a, b), "two writes of the same documents differ");
    free_docs(&d);
}

Test(shard, writer_rejects_ids_outside_the_vocabulary) {
    char p[1024];
    path(p, sizeof(p), "reject.h5");
    struct shard_meta m = meta(1000);
    struct shard_writer *w;
    cr_assert(shard_writer_open(&w, p, &m, 0) == 0);
    int ids[] = {5, 1000};
    cr_expect(shard_writer_add_doc(w, ids, 2) == -1);
    cr_expect(strstr(err_msg(), "outside the vocabulary") && strstr(err_msg(), p), "%s", err_msg());
    shard_writer_abort(w);
    cr_expect(access(p, F_OK) != 0, "an aborted shard is left behind");
}

static void expect_open_error(const char *p, const char *expect_sha, int vocab, const char *needle) {
    struct shard_info s;
    cr_assert(shard_open(&s, p, "shards/x_00000.h5", expect_sha, vocab) == -1, "opened a bad shard (%s)", needle);
    cr_expect(strstr(err_msg(), "shards/x_00000.h5: ") == err_msg(), "message does not start with the file: %s", err_msg());
    cr_expect(strstr(err_msg(), needle), "expected '%s' in: %s", needle, err_msg());
    cr_expect(!strchr(err_msg(), '\n'), "not one line: %s", err_msg());
}

static void copy_truncated(const char *from, const char *to, long keep) {
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    for (long i = 0; i < keep; i++) {
        int c = fgetc(in);
        if (c == EOF) break;
        fputc(c, out);
    }
    fclose(in);
    fclose(out);
}

Test(shard, truncated_or_missing_files_are_reported) {
    char good[1024], bad[1024];
    path(good, sizeof(good), "trunc_src.h5");
    path(bad, sizeof(bad), "trunc.h5");
    struct docs d = make_docs(200, 1000, 4);
    write_shard(good, &d, 1000, 1000);
    struct stat st;
    stat(good, &st);
    copy_truncated(good, bad, st.st_size / 2);
    expect_open_error(bad, NULL, 0, "truncated or corrupted");
    copy_truncated(good, bad, 100);
    expect_open_error(bad, NULL, 0, "truncated or corrupted");
    path(bad, sizeof(bad), "no_such_file.h5");
    expect_open_error(bad, NULL, 0, "cannot open");
    path(bad, sizeof(bad), "not_hdf5.h5");
    FILE *f = fopen(bad, "wb");
    fputs("plain text, not HDF5\n", f);
    fclose(f);
    expect_open_error(bad, NULL, 0, "not a readable HDF5 file");
    free_docs(&d);
}

Test(shard, a_corrupted_chunk_fails_its_checksum) {
    char p[1024];
    path(p, sizeof(p), "corrupt.h5");
    struct docs d = make_docs(200, 1000, 5);
    write_shard(p, &d, 1000, 1000);
    struct shard_info s;
    cr_assert(shard_open(&s, p, "shards/x_00000.h5", SHA, 1000) == 0, "%s", err_msg());
    // flip one byte inside the third chunk of tokens
    uint64_t addr = s.chunk_addr ? s.chunk_addr[2] : s.chunk_addr0 + 2 * s.chunk_stride;
    int fd = open(p, O_RDWR);
    uint8_t b;
    cr_assert(pread(fd, &b, 1, (off_t)addr + 101) == 1);
    b ^= 0x10;
    cr_assert(pwrite(fd, &b, 1, (off_t)addr + 101) == 1);
    int *out = malloc(sizeof(int) * s.n_tokens);
    uint8_t *scratch = malloc(shard_chunk_bytes(&s));
    cr_expect(shard_read_raw(&s, fd, 0, 100, out, scratch) == 0, "an intact chunk: %s", err_msg());
    cr_expect(shard_read_raw(&s, fd, 2 * s.chunk_tokens + 10, 20, out, scratch) == -1);
    cr_expect(strstr(err_msg(), "shards/x_00000.h5: checksum mismatch in tokens chunk 2"), "%s", err_msg());
    cr_expect(shard_verify(&s) == -1, "HDF5 reads pass a corrupted chunk");
    cr_expect(strstr(err_msg(), "shards/x_00000.h5") && strstr(err_msg(), "checksum"), "%s", err_msg());
    close(fd);
    free(out);
    free(scratch);
    shard_info_free(&s);
    free_docs(&d);
}

static void set_attr_i64(const char *p, const char *name, int64_t v) {
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert(f >= 0);
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    cr_assert(a >= 0);
    cr_assert(H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0);
    H5Aclose(a);
    H5Fclose(f);
}

static void set_attr_str(const char *p, const char *name, const char *v) {
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert(f >= 0);
    H5Adelete(f, name);
    hid_t t = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR);
    H5Tset_size(t, strlen(v) + 1);
    hid_t a = H5Acreate2(f, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(a >= 0 && H5Awrite(a, t, v) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    H5Fclose(f);
}

Test(shard, a_shard_made_with_another_tokenizer_or_vocabulary_is_refused) {
    char p[1024];
    path(p, sizeof(p), "other_tok.h5");
    struct docs d = make_docs(20, 1000, 6);
    write_shard(p, &d, 1000, 0);
    expect_open_error(p, "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", 1000, "different tokenizer");
    expect_open_error(p, SHA, 32000, "vocab_size 1000 differs from the run's vocab_size 32000");
    free_docs(&d);
}

Test(shard, token_ids_outside_the_vocabulary_are_caught) {
    char p[1024];
    path(p, sizeof(p), "oov.h5");
    struct docs d = make_docs(100, 1000, 7);
    write_shard(p, &d, 1000, 1000);
    // the file claims a smaller vocabulary than its ids: caught on open by max_token_id...
    set_attr_i64(p, "vocab_size", 500);
    expect_open_error(p, NULL, 0, "outside the vocabulary (size 500)");
    // ...and, when max_token_id lies too, by the reads themselves
    set_attr_i64(p, "max_token_id", 499);
    struct shard_info s;
    cr_assert(shard_open(&s, p, "shards/x_00000.h5", NULL, 0) == 0, "%s", err_msg());
    int *out = malloc(sizeof(int) * s.n_tokens);
    uint8_t *scratch = malloc(shard_chunk_bytes(&s));
    int fd = open(p, O_RDONLY);
    cr_expect(shard_read_raw(&s, fd, 0, s.n_tokens, out, scratch) == -1);
    cr_expect(strstr(err_msg(), "shards/x_00000.h5: token id") && strstr(err_msg(), "outside the vocabulary (size 500)"),
              "%s", err_msg());
    cr_expect(shard_verify(&s) == -1);
    cr_expect(strstr(err_msg(), "outside the vocabulary"), "%s", err_msg());
    close(fd);
    free(out);
    free(scratch);
    shard_info_free(&s);
    free_docs(&d);
}

Test(shard, wrong_format_version_or_counts_are_refused) {
    char p[1024];
    path(p, sizeof(p), "attrs.h5");
    struct docs d = make_docs(30, 1000, 8);
    write_shard(p, &d, 1000, 0);
    set_attr_str(p, "format", "something-else");
    expect_open_error(p, NULL, 0, "not a llamac shard");
    set_attr_str(p, "format", SHARD_FORMAT);
    set_attr_i64(p, "version", 99);
    expect_open_error(p, NULL, 0, "version 99");
    set_attr_i64(p, "version", SHARD_VERSION);
    set_attr_i64(p, "n_tokens", 12345);
    expect_open_error(p, NULL, 0, "the n_tokens attribute says 12345");
    free_docs(&d);
}
