// Token shards in HDF5: writer, validating reader, and the thread-safe raw chunk reader (see shard.h).
#include "data/shard.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/h5err.h"

#define DOC_CHUNK 8192  // chunk of `doc_offsets`

// Bad input is reported by us in one line, so HDF5's own error stack printing is off during our calls.
struct h5_quiet { H5E_auto2_t fn; void *data; };
static void quiet_begin(struct h5_quiet *q) {
    H5Eget_auto2(H5E_DEFAULT, &q->fn, &q->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}
static void quiet_end(struct h5_quiet *q) { H5Eset_auto2(H5E_DEFAULT, q->fn, q->data); }

uint32_t shard_fletcher32(const void *data_, size_t n_bytes) {
    const uint8_t *data = data_;
    size_t len = n_bytes / 2;
    uint32_t sum1 = 0, sum2 = 0;
    while (len) {
        size_t tlen = len > 360 ? 360 : len;
        len -= tlen;
        do {
            sum1 += (uint32_t)(((uint16_t)data[0]) << 8) | ((uint16_t)data[1]);
            data += 2;
            sum2 += sum1;
        } while (--tlen);
        sum1 = (sum1 & 0xffff) + (sum1 >> 16);
        sum2 = (sum2 & 0xffff) + (sum2 >> 16);
    }
    if (n_bytes % 2) {
        sum1 += (uint32_t)(((uint16_t)*data) << 8);
        sum2 += sum1;
        sum1 = (sum1 & 0xffff) + (sum1 >> 16);
        sum2 = (sum2 & 0xffff) + (sum2 >> 16);
    }
    sum1 = (sum1 & 0xffff) + (sum1 >> 16);
    sum2 = (sum2 & 0xffff) + (sum2 >> 16);
    return (sum2 << 16) | sum1;
}

// ---------------------------------------------------------------------------------------------------
// Attributes
// ---------------------------------------------------------------------------------------------------
static int attr_put_str(hid_t obj, const char *name, const char *value) {
    hid_t t = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR);
    H5Tset_size(t, strlen(value) + 1);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    hid_t a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a >= 0 && H5Awrite(a, t, value) >= 0 ? 0 : -1;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return rc;
}

static int attr_put_i64(hid_t obj, const char *name, int64_t v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0 ? 0 : -1;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc;
}

// 1 found, 0 absent, -1 wrong type
static int attr_get_str(hid_t obj, const char *name, char *out, size_t n) {
    if (H5Aexists(obj, name) <= 0) return 0;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a);
    int rc = -1;
    if (H5Tget_class(ft) == H5T_STRING && !H5Tis_variable_str(ft)) {
        size_t sz = H5Tget_size(ft);
        char *buf = xcalloc(sz + 1, 1);
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, sz);
        if (H5Aread(a, mt, buf) >= 0) {
            buf[sz] = '\0';
            snprintf(out, n, "%s", buf);
            rc = 1;
        }
        H5Tclose(mt);
        free(buf);
    }
    H5Tclose(ft);
    H5Aclose(a);
    return rc;
}

static int attr_get_i64(hid_t obj, const char *name, int64_t *v) {
    if (H5Aexists(obj, name) <= 0) return 0;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a), sp = H5Aget_space(a);
    int rc = H5Tget_class(ft) == H5T_INTEGER && H5Sget_simple_extent_npoints(sp) == 1 &&
             H5Aread(a, H5T_NATIVE_INT64, v) >= 0 ? 1 : -1;
    H5Sclose(sp);
    H5Tclose(ft);
    H5Aclose(a);
    return rc;
}

// ---------------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------------
struct shard_writer {
    char *path;  // heap
    struct shard_meta meta;
    hid_t file, tokens;
    int token_bytes, max_id;
    uint64_t chunk;            // tokens per chunk
    uint64_t written;          // tokens already in the file (whole chunks)
    uint8_t *buf;              // the chunk being filled
    uint64_t fill;
    uint64_t *offsets;         // start of each document
    size_t n_docs, cap_docs;
    int masked;                // -1 unknown yet, 0 plain, 1 SFT: mask holds one byte per token
    uint8_t *mask;
    size_t mask_cap;
};

int shard_writer_open(struct shard_writer **out, const char *path, const struct shard_meta *m, uint64_t chunk_tokens) {
    *out = NULL;
    CHECK(m->vocab_size > 0);
    struct shard_writer *w = xcalloc(1, sizeof(*w));
    w->path = strdup(path);
    CHECK(w->path);
    w->meta = *m;
    w->token_bytes = m->vocab_size <= 65536 ? 2 : 4;
    w->chunk = chunk_tokens ? chunk_tokens : SHARD_CHUNK_TOKENS;
    w->buf = xmalloc(w->chunk * w->token_bytes);
    w->max_id = -1;
    w->masked = -1;
    struct h5_quiet q;
    quiet_begin(&q);
    w->file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (w->file < 0) {
        char why[256];
        h5_cause(why, sizeof(why));  // before any other HDF5 call clears the error stack
        quiet_end(&q);
        free(w->buf);
        free(w->path);
        free(w);
        return err_set("%s: cannot create shard file: %s", path, why);
    }
    hsize_t dims = 0, maxdims = H5S_UNLIMITED, chunk = w->chunk;
    hid_t sp = H5Screate_simple(1, &dims, &maxdims);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &chunk);
    H5Pset_fletcher32(dcpl);
    H5Pset_obj_track_times(dcpl, 0);
    w->tokens = H5Dcreate2(w->file, "tokens", w->token_bytes == 2 ? H5T_STD_U16LE : H5T_STD_U32LE, sp, H5P_DEFAULT,
                           dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(sp);
    quiet_end(&q);
    if (w->tokens < 0) {
        H5Fclose(w->file);
        remove(path);
        free(w->buf);
        free(w->path);
        free(w);
        return err_set("%s: cannot create the tokens dataset", path);
    }
    *out = w;
    return 0;
}

// Writes the filled part of the chunk buffer at w->written (a whole chunk, or the last partial one).
static int writer_flush(struct shard_writer *w) {
    if (w->fill == 0) return 0;
    struct h5_quiet q;
    quiet_begin(&q);
    hsize_t size = w->written + w->fill, start = w->written, count = w->fill;
    char why[256] = "";
    int ok = H5Dset_extent(w->tokens, &size) >= 0;
    hid_t fs = H5Dget_space(w->tokens), ms = H5Screate_simple(1, &count, NULL);
    ok = ok && H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL) >= 0;
    ok = ok && H5Dwrite(w->tokens, w->token_bytes == 2 ? H5T_NATIVE_UINT16 : H5T_NATIVE_UINT32, ms, fs,
                        H5P_DEFAULT, w->buf) >= 0;
    if (!ok) h5_cause(why, sizeof(why));
    H5Sclose(ms);
    H5Sclose(fs);
    quiet_end(&q);
    if (!ok) return err_set("%s: write failed: %s", w->path, why);
    w->written += w->fill;
    w->fill = 0;
    return 0;
}

static int writer_put(struct shard_writer *w, int id) {
    if (w->token_bytes == 2) ((uint16_t *)w->buf)[w->fill] = (uint16_t)id;
    else ((uint32_t *)w->buf)[w->fill] = (uint32_t)id;
    if (id > w->max_id) w->max_id = id;
    if (++w->fill == w->chunk) return writer_flush(w);
    return 0;
}

int shard_writer_add_doc(struct shard_writer *w, const int *ids, size_t n) {
    CHECKF(w->masked != 1, "%s: a plain document in a masked shard", w->path);
    w->masked = 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= w->meta.vocab_size)
            return err_set("%s: token id %d is outside the vocabulary (size %d)", w->path, ids[i], w->meta.vocab_size);
    if (w->n_docs == w->cap_docs) {
        w->cap_docs = w->cap_docs ? 2 * w->cap_docs : 1024;
        w->offsets = xrealloc(w->offsets, w->cap_docs * sizeof(uint64_t));
    }
    w->offsets[w->n_docs++] = w->written + w->fill;
    if (w->meta.bos_id >= 0 && writer_put(w, w->meta.bos_id) != 0) return -1;
    for (size_t i = 0; i < n; i++)
        if (writer_put(w, ids[i]) != 0) return -1;
    if (w->meta.eos_id >= 0 && writer_put(w, w->meta.eos_id) != 0) return -1;
    return 0;
}

int shard_writer_add_doc_masked(struct shard_writer *w, const int *ids, const uint8_t *mask, size_t n) {
    CHECKF(w->masked != 0 && w->meta.bos_id >= 0 && w->meta.eos_id >= 0, "%s: a masked document in a plain shard",
           w->path);
    w->masked = 0;  // as plain, then the mask of what it stored
    uint64_t before = shard_writer_tokens(w);
    if (shard_writer_add_doc(w, ids, n) != 0) return -1;
    w->masked = 1;
    uint64_t after = shard_writer_tokens(w);
    CHECK(after - before == n + 2);
    if (after > w->mask_cap) {
        w->mask_cap = after > 2 * w->mask_cap ? after : 2 * w->mask_cap;
        w->mask = xrealloc(w->mask, w->mask_cap);
    }
    memcpy(w->mask + before, mask, n + 2);
    w->mask[before] = 0;  // BOS is never a target
    return 0;
}

uint64_t shard_writer_tokens(const struct shard_writer *w) { return w->written + w->fill; }

// The loss_mask dataset of an SFT shard, chunked like tokens, with checksums.
static int write_mask(struct shard_writer *w) {
    hsize_t nt = w->written, chunk = w->chunk < nt ? w->chunk : nt;
    hid_t sp = H5Screate_simple(1, &nt, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &chunk);
    H5Pset_fletcher32(dcpl);
    H5Pset_obj_track_times(dcpl, 0);
    hid_t d = H5Dcreate2(w->file, "loss_mask", H5T_STD_U8LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    int ok = d >= 0 && H5Dwrite(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, w->mask) >= 0;
    if (d >= 0) H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(sp);
    return ok ? 0 : -1;
}

static void writer_free(struct shard_writer *w) {
    free(w->mask);
    free(w->buf);
    free(w->offsets);
    free(w->path);
    free(w);
}

void shard_writer_abort(struct shard_writer *w) {
    if (!w) return;
    struct h5_quiet q;
    quiet_begin(&q);
    H5Dclose(w->tokens);
    H5Fclose(w->file);
    quiet_end(&q);
    remove(w->path);
    writer_free(w);
}

int shard_writer_close(struct shard_writer *w, uint64_t *n_tokens, uint64_t *n_docs) {
    if (writer_flush(w) != 0) {
        shard_writer_abort(w);
        return -1;
    }
    if (w->n_docs == 0) {
        shard_writer_abort(w);
        return err_set("internal: a shard with no documents");
    }
    struct h5_quiet q;
    quiet_begin(&q);
    const struct shard_meta *m = &w->meta;
    hid_t root = w->file;
    int ok = attr_put_str(root, "format", SHARD_FORMAT) == 0 && attr_put_i64(root, "version", SHARD_VERSION) == 0 &&
             attr_put_i64(root, "vocab_size", m->vocab_size) == 0 &&
             attr_put_str(root, "tokenizer_sha256", m->tokenizer_sha256) == 0 &&
             attr_put_i64(root, "bos_id", m->bos_id) == 0 && attr_put_i64(root, "eos_id", m->eos_id) == 0 &&
             attr_put_str(root, "source", m->source) == 0 && attr_put_str(root, "language", m->language) == 0 &&
             attr_put_str(root, "split", m->split == SHARD_VAL ? "val" : "train") == 0 &&
             attr_put_i64(root, "n_tokens", (int64_t)w->written) == 0 &&
             attr_put_i64(root, "n_docs", (int64_t)w->n_docs) == 0 &&
             attr_put_i64(root, "max_token_id", w->max_id) == 0 &&
             attr_put_i64(root, "chunk_tokens", (int64_t)w->chunk) == 0;
    hsize_t nd = w->n_docs, chunk = nd < DOC_CHUNK ? nd : DOC_CHUNK;
    hid_t sp = H5Screate_simple(1, &nd, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &chunk);
    H5Pset_fletcher32(dcpl);
    H5Pset_obj_track_times(dcpl, 0);
    hid_t d = H5Dcreate2(root, "doc_offsets", H5T_STD_U64LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    ok = ok && d >= 0 && H5Dwrite(d, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, w->offsets) >= 0;
    if (d >= 0) H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(sp);
    if (ok && w->masked == 1) ok = write_mask(w) == 0;
    ok = H5Dclose(w->tokens) >= 0 && ok;
    char why[256] = "";
    if (H5Fclose(w->file) < 0) {  // where buffered data and metadata reach the disk: the usual place to fail
        ok = 0;
        h5_cause(why, sizeof(why));
    }
    quiet_end(&q);
    if (ok) {  // durable before prep renames the output into place
        int fd = open(w->path, O_RDONLY);
        ok = fd >= 0 && fsync(fd) == 0;
        if (!ok) snprintf(why, sizeof(why), "%s", strerror(errno));
        if (fd >= 0) close(fd);
    }
    if (!ok) {
        remove(w->path);
        err_set("%s: write failed: %s", w->path, why[0] ? why : "unknown HDF5 error");
        writer_free(w);
        return -1;
    }
    if (n_tokens) *n_tokens = w->written;
    if (n_docs) *n_docs = w->n_docs;
    writer_free(w);
    return 0;
}

// ---------------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------------
static int dataset_1d(hid_t file, const char *name, hid_t *d, hsize_t *n) {
    if (H5Lexists(file, name, H5P_DEFAULT) <= 0) return 0;
    *d = H5Dopen2(file, name, H5P_DEFAULT);
    if (*d < 0) return -1;
    hid_t sp = H5Dget_space(*d);
    int rank = H5Sget_simple_extent_ndims(sp);
    if (rank == 1) H5Sget_simple_extent_dims(sp, n, NULL);
    H5Sclose(sp);
    return rank == 1 ? 1 : -1;
}

// Checks the on-disk integer type: unsigned, little-endian, of the given size.
static int is_uint_le(hid_t d, size_t size) {
    hid_t t = H5Dget_type(d);
    int ok = H5Tget_class(t) == H5T_INTEGER && H5Tget_size(t) == size && H5Tget_sign(t) == H5T_SGN_NONE &&
             H5Tget_order(t) == H5T_ORDER_LE;
    H5Tclose(t);
    return ok;
}

static int has_only_fletcher(hid_t d, hsize_t *chunk) {
    hid_t p = H5Dget_create_plist(d);
    int ok = H5Pget_layout(p) == H5D_CHUNKED && H5Pget_chunk(p, 1, chunk) == 1 && H5Pget_nfilters(p) == 1;
    if (ok) {
        unsigned flags, cd[8];
        size_t ncd = 8;
        unsigned fc;
        char nm[64];
        ok = H5Pget_filter2(p, 0, &flags, &ncd, cd, sizeof(nm), nm, &fc) == H5Z_FILTER_FLETCHER32;
    }
    H5Pclose(p);
    return ok;
}

static void short_hash(char *out, size_t n, const char *h) { snprintf(out, n, "%.12s..", h); }

// The body of shard_open; file is open, errors name s->name.
static int shard_check(struct shard_info *s, hid_t f, const char *expect_sha, int expect_vocab) {
    const char *nm = s->name;
    char format[64] = "", split[16] = "";
    int64_t version = 0, vocab = 0, bos = -1, eos = -1, nt = -1, ndoc = -1, maxid = -1, chunk_attr = 0;
    int r = attr_get_str(f, "format", format, sizeof(format));
    if (r <= 0) return err_set("%s: not a llamac shard (no 'format' attribute)", nm);
    if (strcmp(format, SHARD_FORMAT) != 0) return err_set("%s: not a llamac shard (format '%s')", nm, format);
    if (attr_get_i64(f, "version", &version) <= 0) return err_set("%s: missing or malformed attribute 'version'", nm);
    if (version != SHARD_VERSION)
        return err_set("%s: shard format version %" PRId64 ", but this llamac reads version %d", nm, version, SHARD_VERSION);
    struct { const char *name; int64_t *v; } ints[] = {
        {"vocab_size", &vocab}, {"bos_id", &bos}, {"eos_id", &eos}, {"n_tokens", &nt},
        {"n_docs", &ndoc}, {"max_token_id", &maxid}, {"chunk_tokens", &chunk_attr}};
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++)
        if (attr_get_i64(f, ints[i].name, ints[i].v) <= 0)
            return err_set("%s: missing or malformed attribute '%s'", nm, ints[i].name);
    struct { const char *name; char *v; size_t n; } strs[] = {
        {"tokenizer_sha256", s->meta.tokenizer_sha256, sizeof(s->meta.tokenizer_sha256)},
        {"source", s->meta.source, sizeof(s->meta.source)},
        {"language", s->meta.language, sizeof(s->meta.language)},
        {"split", split, sizeof(split)}};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        if (attr_get_str(f, strs[i].name, strs[i].v, strs[i].n) <= 0)
            return err_set("%s: missing or malformed attribute '%s'", nm, strs[i].name);
    if (vocab <= 0 || vocab > INT32_MAX) return err_set("%s: bad vocab_size %" PRId64, nm, vocab);
    if (bos < -1 || bos >= vocab || eos < -1 || eos >= vocab)
        return err_set("%s: bos_id %" PRId64 " / eos_id %" PRId64 " outside the vocabulary (size %" PRId64 ")", nm, bos, eos, vocab);
    if (strcmp(split, "train") && strcmp(split, "val")) return err_set("%s: bad split '%s'", nm, split);
    s->meta.vocab_size = (int)vocab;
    s->meta.bos_id = (int)bos;
    s->meta.eos_id = (int)eos;
    s->meta.split = strcmp(split, "val") == 0 ? SHARD_VAL : SHARD_TRAIN;
    if (expect_sha && strcmp(expect_sha, s->meta.tokenizer_sha256) != 0) {
        char a[32], b[32];
        short_hash(a, sizeof(a), s->meta.tokenizer_sha256);
        short_hash(b, sizeof(b), expect_sha);
        return err_set("%s: made with a different tokenizer (sha256 %s, the run's tokenizer is %s)", nm, a, b);
    }
    if (expect_vocab > 0 && expect_vocab != vocab)
        return err_set("%s: vocab_size %" PRId64 " differs from the run's vocab_size %d", nm, vocab, expect_vocab);
    if (maxid >= vocab)
        return err_set("%s: token id %" PRId64 " is outside the vocabulary (size %" PRId64 ")", nm, maxid, vocab);
    if (nt < 0 || ndoc < 1 || (uint64_t)nt < (uint64_t)ndoc * ((bos >= 0) + (eos >= 0)))
        return err_set("%s: inconsistent counts (n_tokens %" PRId64 ", n_docs %" PRId64 ")", nm, nt, ndoc);
    s->n_tokens = (uint64_t)nt;
    s->n_docs = (uint64_t)ndoc;
    s->max_token_id = (int)maxid;

    hid_t d = -1;
    hsize_t n = 0, chunk = 0;
    r = dataset_1d(f, "tokens", &d, &n);
    if (r <= 0) {
        if (d >= 0) H5Dclose(d);
        return err_set("%s: %s dataset 'tokens'", nm, r == 0 ? "no" : "malformed");
    }
    s->token_bytes = is_uint_le(d, 2) ? 2 : is_uint_le(d, 4) ? 4 : 0;
    int rc = 0;
    if (!s->token_bytes) rc = err_set("%s: 'tokens' is not uint16 or uint32 little-endian", nm);
    else if (s->token_bytes == 2 && vocab > 65536) rc = err_set("%s: uint16 tokens with vocab_size %" PRId64, nm, vocab);
    else if (n != (hsize_t)nt) rc = err_set("%s: 'tokens' holds %llu tokens, the n_tokens attribute says %" PRId64, nm, (unsigned long long)n, nt);
    else if (!has_only_fletcher(d, &chunk) || chunk == 0 || chunk != (hsize_t)chunk_attr)
        rc = err_set("%s: 'tokens' is not chunked with Fletcher-32 checksums as llamac writes it", nm);
    if (rc == 0) {
        s->chunk_tokens = chunk;
        s->n_chunks = (s->n_tokens + chunk - 1) / chunk;
        size_t stored = shard_chunk_bytes(s);
        hsize_t file_size = 0;
        H5Fget_filesize(f, &file_size);
        s->chunk_addr = xmalloc(sizeof(uint64_t) * (s->n_chunks ? s->n_chunks : 1));
        int even = 1;
        for (uint64_t k = 0; k < s->n_chunks && rc == 0; k++) {
            hsize_t off = k * chunk, size = 0;
            haddr_t addr = HADDR_UNDEF;
            unsigned mask = 0;
            if (H5Dget_chunk_info_by_coord(d, &off, &mask, &addr, &size) < 0 || addr == HADDR_UNDEF)
                rc = err_set("%s: tokens chunk %" PRIu64 " is missing", nm, k);
            else if (mask != 0 || size != stored)
                rc = err_set("%s: tokens chunk %" PRIu64 " is not stored as llamac writes it", nm, k);
            else if (addr + size > file_size)
                rc = err_set("%s: truncated (tokens chunk %" PRIu64 " lies beyond the end of the file)", nm, k);
            else {
                s->chunk_addr[k] = addr;
                if (k > 0 && addr != s->chunk_addr[0] + k * (s->chunk_addr[1] - s->chunk_addr[0])) even = 0;
            }
        }
        if (rc == 0 && even) {
            s->chunk_addr0 = s->chunk_addr[0];
            s->chunk_stride = s->n_chunks > 1 ? s->chunk_addr[1] - s->chunk_addr[0] : 0;
            free(s->chunk_addr);
            s->chunk_addr = NULL;
        }
    }
    H5Dclose(d);
    if (rc) return rc;

    r = dataset_1d(f, "doc_offsets", &d, &n);
    if (r <= 0) {
        if (d >= 0) H5Dclose(d);
        return err_set("%s: %s dataset 'doc_offsets'", nm, r == 0 ? "no" : "malformed");
    }
    if (!is_uint_le(d, 8)) rc = err_set("%s: 'doc_offsets' is not uint64", nm);
    else if (n != (hsize_t)ndoc)
        rc = err_set("%s: 'doc_offsets' holds %llu entries, the n_docs attribute says %" PRId64, nm, (unsigned long long)n, ndoc);
    else {  // the first and last offsets (the full check is shard_verify)
        uint64_t v[2];
        hsize_t pts[2] = {0, n - 1};
        hid_t fs = H5Dget_space(d), ms;
        hsize_t two = 2;
        ms = H5Screate_simple(1, &two, NULL);
        H5Sselect_elements(fs, H5S_SELECT_SET, 2, pts);
        if (H5Dread(d, H5T_NATIVE_UINT64, ms, fs, H5P_DEFAULT, v) < 0) rc = err_set("%s: cannot read 'doc_offsets' (corrupted)", nm);
        else if (v[0] != 0 || v[1] >= s->n_tokens || v[1] < v[0])
            rc = err_set("%s: 'doc_offsets' does not index 'tokens' (first %" PRIu64 ", last %" PRIu64 ", %" PRIu64 " tokens)", nm, v[0], v[1], s->n_tokens);
        H5Sclose(ms);
        H5Sclose(fs);
    }
    H5Dclose(d);
    if (rc) return rc;

    // SFT shards: the loss mask, one uint8 per token, checksummed
    r = dataset_1d(f, "loss_mask", &d, &n);
    if (r < 0) rc = err_set("%s: malformed dataset 'loss_mask'", nm);
    else if (r > 0 && !is_uint_le(d, 1)) rc = err_set("%s: 'loss_mask' is not uint8", nm);
    else if (r > 0 && n != (hsize_t)nt)
        rc = err_set("%s: 'loss_mask' holds %llu entries, the shard %" PRId64 " tokens", nm, (unsigned long long)n, nt);
    else if (r > 0 && !has_only_fletcher(d, &chunk)) rc = err_set("%s: 'loss_mask' is not checksummed as llamac writes it", nm);
    s->has_mask = r > 0;
    if (d >= 0 && r != 0) H5Dclose(d);
    return rc;
}

int shard_open(struct shard_info *s, const char *path, const char *name, const char *expect_sha256, int expect_vocab) {
    memset(s, 0, sizeof(*s));
    s->path = strdup(path);
    s->name = strdup(name ? name : path);
    CHECK(s->path && s->name);
    struct stat st;
    int rc = 0;
    if (stat(path, &st) != 0) rc = err_set("%s: cannot open: %s", s->name, strerror(errno));
    else if (access(path, R_OK) != 0) rc = err_set("%s: cannot read: %s", s->name, strerror(errno));
    if (rc) {
        shard_info_free(s);
        return rc;
    }
    struct h5_quiet q;
    quiet_begin(&q);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) rc = err_set("%s: not a readable HDF5 file (truncated or corrupted)", s->name);
    else {
        rc = shard_check(s, f, expect_sha256, expect_vocab);
        H5Fclose(f);
    }
    quiet_end(&q);
    if (rc) shard_info_free(s);
    return rc;
}

void shard_info_free(struct shard_info *s) {
    free(s->chunk_addr);
    free(s->path);
    free(s->name);
    s->chunk_addr = NULL;
    s->path = s->name = NULL;
}

size_t shard_chunk_bytes(const struct shard_info *s) { return (size_t)s->chunk_tokens * s->token_bytes + 4; }

static int read_1d(const struct shard_info *s, const char *dset, hid_t memtype, uint64_t start, uint64_t n, void *out) {
    struct h5_quiet q;
    quiet_begin(&q);
    int ok = 0;
    hid_t f = H5Fopen(s->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f >= 0) {
        hid_t d = H5Dopen2(f, dset, H5P_DEFAULT);
        if (d >= 0) {
            hsize_t st = start, cnt = n;
            hid_t fs = H5Dget_space(d), ms = H5Screate_simple(1, &cnt, NULL);
            ok = n == 0 || (H5Sselect_hyperslab(fs, H5S_SELECT_SET, &st, NULL, &cnt, NULL) >= 0 &&
                            H5Dread(d, memtype, ms, fs, H5P_DEFAULT, out) >= 0);
            H5Sclose(ms);
            H5Sclose(fs);
            H5Dclose(d);
        }
        H5Fclose(f);
    }
    quiet_end(&q);
    if (!ok) return err_set("%s: cannot read %s [%" PRIu64 ", %" PRIu64 ") (corrupted file or checksum mismatch)", s->name, dset, start, start + n);
    return 0;
}

int shard_read_tokens(const struct shard_info *s, uint64_t start, uint64_t n, int *out) {
    if (start + n > s->n_tokens || start + n < start)
        return err_set("%s: tokens [%" PRIu64 ", %" PRIu64 ") out of range (%" PRIu64 " tokens)", s->name, start, start + n, s->n_tokens);
    return read_1d(s, "tokens", H5T_NATIVE_INT, start, n, out);
}

int shard_read_mask(const struct shard_info *s, uint64_t start, uint64_t n, uint8_t *out) {
    CHECK(s->has_mask);
    if (start + n > s->n_tokens || start + n < start)
        return err_set("%s: loss_mask [%" PRIu64 ", %" PRIu64 ") out of range (%" PRIu64 " tokens)", s->name, start, start + n, s->n_tokens);
    return read_1d(s, "loss_mask", H5T_NATIVE_UINT8, start, n, out);
}

int shard_read_doc_offsets(const struct shard_info *s, uint64_t **out) {
    *out = xmalloc(sizeof(uint64_t) * (s->n_docs ? s->n_docs : 1));
    if (read_1d(s, "doc_offsets", H5T_NATIVE_UINT64, 0, s->n_docs, *out) != 0) {
        free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

int shard_verify(const struct shard_info *s) {
    uint64_t *off;
    if (shard_read_doc_offsets(s, &off) != 0) return -1;
    const uint64_t piece = 1 << 20;
    int *tok = xmalloc(sizeof(int) * piece);
    int rc = 0, max_id = -1, prev = -1, bos = s->meta.bos_id, eos = s->meta.eos_id;
    uint64_t doc = 0;  // the next document, whose BOS we expect at off[doc]
    for (uint64_t at = 0; at < s->n_tokens && rc == 0; at += piece) {
        uint64_t n = s->n_tokens - at < piece ? s->n_tokens - at : piece;
        if (shard_read_tokens(s, at, n, tok) != 0) { rc = -1; break; }
        for (uint64_t i = 0; i < n && rc == 0; i++) {
            uint64_t p = at + i;
            int id = tok[i];
            if (id < 0 || id >= s->meta.vocab_size) {
                rc = err_set("%s: token id %d at position %" PRIu64 " is outside the vocabulary (size %d)", s->name, id, p,
                             s->meta.vocab_size);
                break;
            }
            if (id > max_id) max_id = id;
            if (doc < s->n_docs && off[doc] < p)
                rc = err_set("%s: doc_offsets[%" PRIu64 "] = %" PRIu64 " is not increasing", s->name, doc, off[doc]);
            else if (doc < s->n_docs && off[doc] == p) {
                if (bos >= 0 && id != bos)
                    rc = err_set("%s: document %" PRIu64 " does not start with BOS (token %d at %" PRIu64 ")", s->name, doc, id, p);
                else if (eos >= 0 && doc > 0 && prev != eos)
                    rc = err_set("%s: document %" PRIu64 " does not end with EOS", s->name, doc - 1);
                doc++;
            }
            prev = id;
        }
    }
    if (rc == 0 && doc != s->n_docs)
        rc = err_set("%s: doc_offsets[%" PRIu64 "] = %" PRIu64 " is not increasing or out of range", s->name, doc, off[doc]);
    if (rc == 0 && eos >= 0 && prev != eos)
        rc = err_set("%s: document %" PRIu64 " does not end with EOS", s->name, s->n_docs - 1);
    if (rc == 0 && max_id != s->max_token_id)
        rc = err_set("%s: max_token_id attribute %d, but the largest id is %d", s->name, s->max_token_id, max_id);
    free(tok);
    free(off);
    return rc;
}

// ---------------------------------------------------------------------------------------------------
// Raw reads (no HDF5 calls; safe on any thread)
// ---------------------------------------------------------------------------------------------------
int shard_read_raw(const struct shard_info *s, int fd, uint64_t start, uint64_t n, int *out, uint8_t *scratch) {
    if (start + n > s->n_tokens || start + n < start)
        return err_set("%s: tokens [%" PRIu64 ", %" PRIu64 ") out of range (%" PRIu64 " tokens)", s->name, start, start + n, s->n_tokens);
    size_t data_bytes = (size_t)s->chunk_tokens * s->token_bytes, stored = data_bytes + 4;
    uint64_t end = start + n;
    while (start < end) {
        uint64_t k = start / s->chunk_tokens, c0 = k * s->chunk_tokens;
        uint64_t lo = start - c0, hi = end - c0 < s->chunk_tokens ? end - c0 : s->chunk_tokens;
        uint64_t addr = s->chunk_addr ? s->chunk_addr[k] : s->chunk_addr0 + k * s->chunk_stride;
        size_t got = 0;
        while (got < stored) {
            ssize_t r = pread(fd, scratch + got, stored - got, (off_t)(addr + got));
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) return err_set("%s: read error: %s", s->name, strerror(errno));
            if (r == 0) return err_set("%s: truncated (tokens chunk %" PRIu64 " ends beyond the end of the file)", s->name, k);
            got += (size_t)r;
        }
        const uint8_t *c = scratch + data_bytes;
        uint32_t want = (uint32_t)c[0] | (uint32_t)c[1] << 8 | (uint32_t)c[2] << 16 | (uint32_t)c[3] << 24;
        if (shard_fletcher32(scratch, data_bytes) != want)
            return err_set("%s: checksum mismatch in tokens chunk %" PRIu64 " (tokens %" PRIu64 "..%" PRIu64 "): the file is corrupted",
                           s->name, k, c0, c0 + s->chunk_tokens);
        for (uint64_t i = lo; i < hi; i++) {
            int id;
            if (s->token_bytes == 2) id = scratch[2 * i] | scratch[2 * i + 1] << 8;
            else {
                uint32_t v = (uint32_t)scratch[4 * i] | (uint32_t)scratch[4 * i + 1] << 8 |
                             (uint32_t)scratch[4 * i + 2] << 16 | (uint32_t)scratch[4 * i + 3] << 24;
                id = v > INT32_MAX ? -1 : (int)v;
            }
            if (id < 0 || id >= s->meta.vocab_size)
                return err_set("%s: token id %lld at position %" PRIu64 " is outside the vocabulary (size %d)", s->name,
                               id < 0 ? -1LL : (long long)id, c0 + i, s->meta.vocab_size);
            *out++ = id;
        }
        start = c0 + hi;
    }
    return 0;
}
