// The safetensors reader and writer. The header is untrusted input: st_open checks every rule listed in
// safetensors.h before st_read_f32 may touch the data, and every message names the file and the problem
// in one line. The writer produces exactly what the reader accepts (8-byte aligned data, ranges in
// order, no gaps).
#include "model/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/half.h"
#include "core/error.h"
#include "core/fs.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian; so must the host be");

// ---------------------------------------------------------------------------------------------------
// dtypes and scalar conversions
// ---------------------------------------------------------------------------------------------------

static const char *const dtype_names[] = {"F32", "F16", "BF16"};
static const size_t dtype_sizes[] = {4, 2, 2};

size_t st_dtype_size(enum st_dtype d) { return dtype_sizes[d]; }
const char *st_dtype_name(enum st_dtype d) { return dtype_names[d]; }

int st_dtype_parse(enum st_dtype *d, const char *s) {
    static const struct { const char *name; enum st_dtype d; } names[] = {
        {"F32", ST_F32}, {"float32", ST_F32}, {"fp32", ST_F32},
        {"F16", ST_F16}, {"float16", ST_F16}, {"fp16", ST_F16},
        {"BF16", ST_BF16}, {"bfloat16", ST_BF16},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (!strcasecmp(s, names[i].name)) {
            *d = names[i].d;
            return 0;
        }
    return -1;
}


const char *st_printable(char *out, int n, const char *s) {
    int i = 0;
    for (; s[i] && i < n - 1; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[i] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
    }
    out[i] = '\0';
    if (s[i] && n > 4) memcpy(out + n - 4, "...", 4);
    return out;
}

int64_t st_numel(const struct st_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

// ---------------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------------

// Safetensors dtypes that exist but that llamac does not read: named in the error.
static const char *const known_unsupported[] = {"BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64",
                                                "F64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2",
                                                "F4", "C64"};

// Closes f and records "PATH: message".
static int open_fail(struct st_file *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int open_fail(struct st_file *f, const char *fmt, ...) {
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    err_set("%s: %s", f->path, msg);
    st_close(f);
    return -1;
}

// Strict UTF-8 (no overlong forms, surrogates or code points above U+10FFFF), and no control bytes
// other than JSON whitespace. Returns the offset of the first bad byte, or -1 when all is well.
static long utf8_check(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') return (long)i;
            if (c == 0x7f) return (long)i;
            i++;
            continue;
        }
        int len;
        unsigned cp, min;
        if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1f; min = 0x80; }
        else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; min = 0x800; }
        else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; min = 0x10000; }
        else return (long)i;
        if (i + (size_t)len > n) return (long)i;
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return (long)i;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return (long)i;
        i += (size_t)len;
    }
    return -1;
}

// A JSON number that is a non-negative integer exactly representable in a double.
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || d != floor(d)) return -1;
    *out = (uint64_t)d;
    return 0;
}

static int pread_full(int fd, void *buf, size_t n, uint64_t off, size_t *got) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, (char *)buf + done, n - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            *got = done;
            return -1;
        }
        if (r == 0) break;
        done += (size_t)r;
    }
    *got = done;
    return done == n ? 0 : -1;
}

static void shape_str(char *out, size_t n, const int64_t *shape, int ndim) {
    size_t k = (size_t)snprintf(out, n, "[");
    for (int d = 0; d < ndim && k < n; d++) k += (size_t)snprintf(out + k, n - k, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (k < n) snprintf(out + k, n - k, "]");
}

static int cmp_offset(const void *a, const void *b) {
    const struct st_tensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

struct name_idx { const char *name; int i; };
static int cmp_name_idx(const void *a, const void *b) {
    return strcmp(((const struct name_idx *)a)->name, ((const struct name_idx *)b)->name);
}

// Fills t from one header entry; -1 with the message in msg.
static int parse_entry(struct st_tensor *t, const cJSON *e, uint64_t data_len, char *msg, size_t nmsg) {
    char pn[100];
    st_printable(pn, sizeof(pn), e->string);
    if (strlen(e->string) >= sizeof(t->name))
        return snprintf(msg, nmsg, "tensor name '%s' is longer than %zu bytes", pn, sizeof(t->name) - 1), -1;
    snprintf(t->name, sizeof(t->name), "%s", e->string);
    if (!cJSON_IsObject(e))
        return snprintf(msg, nmsg, "tensor '%s': entry is not an object", pn), -1;

    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    if (!cJSON_IsString(dt))
        return snprintf(msg, nmsg, "tensor '%s': missing or non-string \"dtype\"", pn), -1;
    int found = 0;
    for (int d = 0; d < 3; d++)
        if (!strcmp(dt->valuestring, dtype_names[d])) {
            t->dtype = (enum st_dtype)d;
            found = 1;
        }
    if (!found) {
        char pd[40];
        st_printable(pd, sizeof(pd), dt->valuestring);
        for (size_t k = 0; k < sizeof(known_unsupported) / sizeof(known_unsupported[0]); k++)
            if (!strcmp(dt->valuestring, known_unsupported[k]))
                return snprintf(msg, nmsg, "tensor '%s' has dtype %s, which llamac does not read (F32, F16 and "
                                "BF16 only)", pn, pd), -1;
        return snprintf(msg, nmsg, "tensor '%s' has unknown dtype '%s' (expected F32, F16 or BF16)", pn, pd), -1;
    }

    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    if (!cJSON_IsArray(sh))
        return snprintf(msg, nmsg, "tensor '%s': missing or non-list \"shape\"", pn), -1;
    int ndim = cJSON_GetArraySize(sh);
    if (ndim > ST_MAX_NDIM)
        return snprintf(msg, nmsg, "tensor '%s' has %d dimensions (at most %d supported)", pn, ndim, ST_MAX_NDIM), -1;
    t->ndim = ndim;
    int d = 0;
    uint64_t numel = 1;
    int overflow = 0;
    for (const cJSON *v = sh->child; v; v = v->next, d++) {
        uint64_t x;
        if (json_uint(v, &x) != 0 || x > INT64_MAX)
            return snprintf(msg, nmsg, "tensor '%s': shape must be a list of non-negative integers", pn), -1;
        t->shape[d] = (int64_t)x;
        if (__builtin_mul_overflow(numel, x, &numel)) overflow = 1;
    }
    char ss[96];
    shape_str(ss, sizeof(ss), t->shape, t->ndim);
    uint64_t bytes;
    if (overflow || __builtin_mul_overflow(numel, (uint64_t)dtype_sizes[t->dtype], &bytes) || numel > INT64_MAX)
        return snprintf(msg, nmsg, "tensor '%s': shape %s is too large (its size overflows)", pn, ss), -1;

    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    uint64_t b, en;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || json_uint(off->child, &b) != 0 ||
        json_uint(off->child->next, &en) != 0 || b > en)
        return snprintf(msg, nmsg, "tensor '%s': \"data_offsets\" must be [begin, end] with integers 0 <= begin "
                        "<= end", pn), -1;
    if (bytes != en - b)
        return snprintf(msg, nmsg, "tensor '%s': shape %s of %s needs %llu bytes but data_offsets [%llu, %llu] "
                        "span %llu", pn, ss, dtype_names[t->dtype], (unsigned long long)bytes,
                        (unsigned long long)b, (unsigned long long)en, (unsigned long long)(en - b)), -1;
    if (en > data_len)
        return snprintf(msg, nmsg, "tensor '%s': data_offsets [%llu, %llu] extend past the end of the data "
                        "(%llu bytes): truncated file?", pn, (unsigned long long)b, (unsigned long long)en,
                        (unsigned long long)data_len), -1;
    t->begin = b;  // made absolute by the caller
    t->end = en;
    return 0;
}

int st_open(struct st_file *f, const char *path) {
    memset(f, 0, sizeof(*f));
    f->fd = -1;
    f->path = strdup(path);
    CHECK(f->path);
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) return open_fail(f, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(f->fd, &st) != 0) return open_fail(f, "cannot stat: %s", strerror(errno));
    if (!S_ISREG(st.st_mode)) return open_fail(f, "not a regular file");
    f->file_size = (uint64_t)st.st_size;
    if (f->file_size < 8)
        return open_fail(f, "file is %llu bytes, too short for a safetensors file (the header length alone "
                         "takes 8)", (unsigned long long)f->file_size);

    // The header length, then the header, both checked against the file before anything else
    unsigned char lenb[8];
    size_t got;
    if (pread_full(f->fd, lenb, 8, 0, &got) != 0) return open_fail(f, "cannot read the header length");
    uint64_t N = 0;
    for (int i = 7; i >= 0; i--) N = (N << 8) | lenb[i];
    if (N > ST_MAX_HEADER)
        return open_fail(f, "header length %llu exceeds the limit of %llu bytes (corrupt or not a safetensors "
                         "file)", (unsigned long long)N, ST_MAX_HEADER);
    if (N > f->file_size - 8)
        return open_fail(f, "header length %llu is larger than the rest of the file (%llu bytes): truncated or "
                         "not a safetensors file", (unsigned long long)N, (unsigned long long)(f->file_size - 8));
    if (N < 2) return open_fail(f, "header length %llu is too short for a JSON object", (unsigned long long)N);
    f->data_start = 8 + N;
    const uint64_t data_len = f->file_size - f->data_start;

    char *hdr = xmalloc(N + 1);
    if (pread_full(f->fd, hdr, N, 8, &got) != 0) {
        free(hdr);
        return open_fail(f, "short read of the header (%zu of %llu bytes)", got, (unsigned long long)N);
    }
    hdr[N] = '\0';
    if (hdr[0] != '{') {
        free(hdr);
        return open_fail(f, "header does not start with '{' (not a safetensors file?)");
    }
    long bad = utf8_check((const unsigned char *)hdr, N);
    if (bad >= 0) {
        unsigned byte = (unsigned char)hdr[bad];
        free(hdr);
        return open_fail(f, "header is not valid UTF-8 JSON text (bad byte 0x%02x at header offset %ld)", byte, bad);
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, N, &end, 0);
    if (!root) {
        long at = end ? (long)(end - hdr) : 0;
        free(hdr);
        return open_fail(f, "header is not valid JSON (error near header offset %ld)", at);
    }
    for (const char *p = end; p < hdr + N; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            long at = (long)(p - hdr);
            cJSON_Delete(root);
            free(hdr);
            return open_fail(f, "header has bytes after the JSON object (header offset %ld); only spaces may "
                             "pad it", at);
        }
    free(hdr);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return open_fail(f, "header is not a JSON object");
    }

    // Entries
    char msg[700];
    int cap = cJSON_GetArraySize(root);
    f->t = xcalloc((size_t)(cap ? cap : 1), sizeof(*f->t));
    cJSON *meta = NULL;  // owned by root until detached after the loop
    for (cJSON *e = root->child; e; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) {
            if (meta) {
                cJSON_Delete(root);
                return open_fail(f, "duplicate \"__metadata__\"");
            }
            if (!cJSON_IsObject(e)) {
                cJSON_Delete(root);
                return open_fail(f, "\"__metadata__\" is not an object");
            }
            for (const cJSON *kv = e->child; kv; kv = kv->next)
                if (!cJSON_IsString(kv)) {
                    char pk[64];
                    st_printable(pk, sizeof(pk), kv->string);
                    cJSON_Delete(root);
                    return open_fail(f, "\"__metadata__\" must map strings to strings (key '%s' does not)", pk);
                }
            meta = e;
            continue;
        }
        if (parse_entry(&f->t[f->n], e, data_len, msg, sizeof(msg)) != 0) {
            cJSON_Delete(root);
            return open_fail(f, "%s", msg);
        }
        f->t[f->n].begin += f->data_start;
        f->t[f->n].end += f->data_start;
        f->n++;
    }
    if (meta) f->metadata = cJSON_DetachItemViaPointer(root, meta);
    cJSON_Delete(root);

    // File order, then names (unique), then coverage: sorted ranges tile the data region exactly
    qsort(f->t, (size_t)f->n, sizeof(*f->t), cmp_offset);
    struct name_idx *ni = xmalloc(sizeof(*ni) * (size_t)(f->n ? f->n : 1));
    for (int i = 0; i < f->n; i++) ni[i] = (struct name_idx){f->t[i].name, i};
    qsort(ni, (size_t)f->n, sizeof(*ni), cmp_name_idx);
    f->by_name = xmalloc(sizeof(int) * (size_t)(f->n ? f->n : 1));
    for (int i = 0; i < f->n; i++) f->by_name[i] = ni[i].i;
    free(ni);
    for (int i = 1; i < f->n; i++)
        if (!strcmp(f->t[f->by_name[i]].name, f->t[f->by_name[i - 1]].name)) {
            char pn[100];
            return open_fail(f, "duplicate tensor name '%s'", st_printable(pn, sizeof(pn), f->t[f->by_name[i]].name));
        }
    uint64_t expect = f->data_start;
    for (int i = 0; i < f->n; i++) {
        const struct st_tensor *t = &f->t[i];
        char pa[100], pb[100];
        if (t->begin < expect) {
            const struct st_tensor *p = &f->t[i - 1];
            return open_fail(f, "tensors '%s' (data_offsets [%llu, %llu]) and '%s' ([%llu, %llu]) overlap",
                             st_printable(pa, sizeof(pa), p->name), (unsigned long long)(p->begin - f->data_start),
                             (unsigned long long)(p->end - f->data_start), st_printable(pb, sizeof(pb), t->name),
                             (unsigned long long)(t->begin - f->data_start),
                             (unsigned long long)(t->end - f->data_start));
        }
        if (t->begin > expect)
            return open_fail(f, "data bytes [%llu, %llu) belong to no tensor (before '%s'); data_offsets must "
                             "cover the data exactly", (unsigned long long)(expect - f->data_start),
                             (unsigned long long)(t->begin - f->data_start), st_printable(pa, sizeof(pa), t->name));
        expect = t->end;
    }
    if (expect != f->file_size)
        return open_fail(f, "the data region has %llu bytes but the tensors cover only %llu; data_offsets must "
                         "cover the data exactly", (unsigned long long)data_len,
                         (unsigned long long)(expect - f->data_start));
    return 0;
}

void st_close(struct st_file *f) {
    if (f->fd >= 0) close(f->fd);
    free(f->t);
    free(f->by_name);
    free(f->path);
    if (f->metadata) cJSON_Delete(f->metadata);
    memset(f, 0, sizeof(*f));
    f->fd = -1;
}

const struct st_tensor *st_find(const struct st_file *f, const char *name) {
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(f->t[f->by_name[mid]].name, name);
        if (c == 0) return &f->t[f->by_name[mid]];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

const char *st_metadata(const struct st_file *f, const char *key) {
    if (!f->metadata) return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive((const cJSON *)f->metadata, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int st_read_f32(const struct st_file *f, const struct st_tensor *t, float *out) {
    const uint64_t bytes = t->end - t->begin;
    const size_t n = (size_t)(bytes / dtype_sizes[t->dtype]);
    size_t got;
    char pn[100];
    errno = 0;
    if (t->dtype == ST_F32) {
        if (pread_full(f->fd, out, (size_t)bytes, t->begin, &got) != 0)
            return err_set("%s: short read of tensor '%s' (%zu of %llu bytes%s%s): truncated or changed since it "
                           "was opened?", f->path, st_printable(pn, sizeof(pn), t->name), got,
                           (unsigned long long)bytes, errno ? ", " : "", errno ? strerror(errno) : "");
        return 0;
    }
    enum { CHUNK = 1 << 20 };
    uint16_t *buf = xmalloc(sizeof(uint16_t) * CHUNK);
    for (size_t i = 0; i < n; i += CHUNK) {
        size_t k = n - i < CHUNK ? n - i : CHUNK;
        errno = 0;
        if (pread_full(f->fd, buf, 2 * k, t->begin + 2 * (uint64_t)i, &got) != 0) {
            free(buf);
            return err_set("%s: short read of tensor '%s' (%llu of %llu bytes%s%s): truncated or changed since "
                           "it was opened?", f->path, st_printable(pn, sizeof(pn), t->name),
                           (unsigned long long)(2 * (uint64_t)i + got), (unsigned long long)bytes,
                           errno ? ", " : "", errno ? strerror(errno) : "");
        }
        if (t->dtype == ST_BF16)
            for (size_t j = 0; j < k; j++) out[i + j] = bf16_to_f32(buf[j]);
        else
            for (size_t j = 0; j < k; j++) out[i + j] = f16_to_f32(buf[j]);
    }
    free(buf);
    return 0;
}

// ---------------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------------

struct sbuf { char *s; size_t len, cap; };

static void sb_put(struct sbuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->s = xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    CHECK(n >= 0 && (size_t)n < sizeof(tmp));
    sb_put(b, tmp, (size_t)n);
}

static void sb_json_string(struct sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sb_put(b, e, 2);
        } else if (c < 0x20) {
            sb_printf(b, "\\u%04x", c);
        } else {
            sb_put(b, (const char *)&c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static int write_full(int fd, const void *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p = (const char *)p + w;
        n -= (size_t)w;
    }
    return 0;
}

int st_write(const char *path, const struct st_write_tensor *t, int n, enum st_dtype dtype, const char *metadata_json) {
    if ((unsigned)dtype > ST_BF16) return err_set("%s: unknown dtype %d", path, (int)dtype);
    // The header: entries in the order given, data ranges back to back
    struct sbuf h = {0};
    sb_put(&h, "{", 1);
    if (metadata_json) {
        cJSON *md = cJSON_Parse(metadata_json);
        int ok = cJSON_IsObject(md);
        for (const cJSON *kv = ok ? md->child : NULL; kv; kv = kv->next)
            if (!cJSON_IsString(kv)) ok = 0;
        if (!ok) {
            cJSON_Delete(md);
            free(h.s);
            return err_set("%s: metadata must be a JSON object of string values", path);
        }
        char *txt = cJSON_PrintUnformatted(md);
        CHECK(txt);
        sb_put(&h, "\"__metadata__\":", 15);
        sb_put(&h, txt, strlen(txt));
        free(txt);
        cJSON_Delete(md);
    }
    const size_t es = dtype_sizes[dtype];
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        char pn[100];
        st_printable(pn, sizeof(pn), t[i].name ? t[i].name : "(null)");
        if (!t[i].name || strlen(t[i].name) >= sizeof(((struct st_tensor *)0)->name) || !strcmp(t[i].name, "__metadata__") ||
            utf8_check((const unsigned char *)t[i].name, strlen(t[i].name)) >= 0) {
            free(h.s);
            return err_set("%s: invalid tensor name '%s'", path, pn);
        }
        for (int j = 0; j < i; j++)
            if (!strcmp(t[i].name, t[j].name)) {
                free(h.s);
                return err_set("%s: duplicate tensor name '%s'", path, pn);
            }
        if (t[i].ndim < 0 || t[i].ndim > ST_MAX_NDIM) {
            free(h.s);
            return err_set("%s: tensor '%s' has %d dimensions (0..%d supported)", path, pn, t[i].ndim, ST_MAX_NDIM);
        }
        uint64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) {
            CHECKF(t[i].shape[d] >= 0, "tensor %s: negative dimension", t[i].name);
            numel *= (uint64_t)t[i].shape[d];
        }
        if (h.len > 1) sb_put(&h, ",", 1);
        sb_json_string(&h, t[i].name);
        sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", dtype_names[dtype]);
        for (int d = 0; d < t[i].ndim; d++) sb_printf(&h, d ? ",%lld" : "%lld", (long long)t[i].shape[d]);
        sb_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                  (unsigned long long)(off + numel * es));
        off += numel * es;
    }
    sb_put(&h, "}", 1);
    while ((8 + h.len) % 8) sb_put(&h, " ", 1);  // align the data region to 8 bytes
    if (h.len > ST_MAX_HEADER) {
        free(h.s);
        return err_set("%s: header of %zu bytes exceeds the safetensors limit", path, h.len);
    }

    char *tmp = fs_printf("%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        free(h.s);
        err_set("%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    unsigned char lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
    int rc = write_full(fd, lenb, 8) || write_full(fd, h.s, h.len) ? -1 : 0;
    free(h.s);

    enum { CHUNK = 1 << 20 };
    uint16_t *buf = dtype == ST_F32 ? NULL : xmalloc(sizeof(uint16_t) * CHUNK);
    for (int i = 0; i < n && rc == 0; i++) {
        size_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) numel *= (size_t)t[i].shape[d];
        if (dtype == ST_F32) {
            rc = write_full(fd, t[i].data, numel * 4);
            continue;
        }
        for (size_t j = 0; j < numel && rc == 0; j += CHUNK) {
            size_t k = numel - j < CHUNK ? numel - j : CHUNK;
            if (dtype == ST_BF16)
                for (size_t q = 0; q < k; q++) buf[q] = f32_to_bf16(t[i].data[j + q]);
            else
                for (size_t q = 0; q < k; q++) buf[q] = f32_to_f16(t[i].data[j + q]);
            rc = write_full(fd, buf, 2 * k);
        }
    }
    free(buf);
    if (rc == 0 && fsync(fd) != 0) rc = -1;
    int saved = errno;
    if (close(fd) != 0 && rc == 0) {
        rc = -1;
        saved = errno;
    }
    if (rc != 0) {
        unlink(tmp);
        err_set("%s: write failed: %s", tmp, strerror(saved));
    } else {
        rc = fs_publish(tmp, path);  // core/fs.h: rename, then the directory synced
    }
    free(tmp);
    return rc;
}
