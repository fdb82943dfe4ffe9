// Zip reader for torch.save files. Nothing in the archive is trusted: every field is checked before it
// is used, with overflow-safe arithmetic, and a problem is one err_set line naming the file (see
// zip.h for the list). zlib is used only for deflated entries (torch itself stores them uncompressed)
// and only through its in-memory inflate API, which prints nothing.
#include "model/zip.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "core/error.h"
#include "model/safetensors.h"  // st_printable

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_LOC64 0x07064b50u

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static int pread_all(int fd, void *buf, size_t n, uint64_t off) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, (char *)buf + done, n - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        done += (size_t)r;
    }
    return 0;
}

// Closes z and records "PATH: message".
static int zfail(struct zip_file *z, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int zfail(struct zip_file *z, const char *fmt, ...) {
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    err_set("%s: %s", z->path, msg);
    zip_close(z);
    return -1;
}

// Finds the end-of-central-directory record: the last signature within the final 22 + 65535 bytes
// whose comment length reaches exactly to the end of the file.
static int find_eocd(struct zip_file *z, uint64_t *eocd) {
    uint64_t tail = z->size < 22 + 65535 ? z->size : 22 + 65535;
    unsigned char *buf = xmalloc(tail);
    if (pread_all(z->fd, buf, tail, z->size - tail) != 0) {
        free(buf);
        return -1;
    }
    int found = -1;
    for (uint64_t i = tail - 22 + 1; i-- > 0;)
        if (rd32(buf + i) == SIG_EOCD && i + 22 + rd16(buf + i + 20) == tail) {
            *eocd = z->size - tail + i;
            found = 0;
            break;
        }
    free(buf);
    return found;
}

struct range { uint64_t b, e; int i; };
static int cmp_range(const void *a, const void *b) {
    const struct range *x = a, *y = b;
    return x->b < y->b ? -1 : x->b > y->b ? 1 : 0;
}

static const struct zip_file *sort_ctx;
static int cmp_by_name(const void *a, const void *b) {
    return strcmp(sort_ctx->e[*(const int *)a].name, sort_ctx->e[*(const int *)b].name);
}

int zip_open(struct zip_file *z, const char *path) {
    memset(z, 0, sizeof(*z));
    z->path = strdup(path);
    CHECK(z->path);
    z->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (z->fd < 0) {
        int e = errno;
        z->fd = -1;
        return zfail(z, "cannot open: %s", strerror(e));
    }
    struct stat st;
    if (fstat(z->fd, &st) != 0 || !S_ISREG(st.st_mode)) return zfail(z, "not a regular file");
    z->size = (uint64_t)st.st_size;
    if (z->size < 22) return zfail(z, "%llu bytes is too short for a zip archive (not a torch.save file?)", (unsigned long long)z->size);
    uint64_t eocd;
    if (find_eocd(z, &eocd) != 0)
        return zfail(z, "no zip end-of-central-directory record (truncated, or not a torch.save file?)");
    unsigned char r[56];
    if (pread_all(z->fd, r, 22, eocd) != 0) return zfail(z, "cannot read the end of the central directory");
    if (rd16(r + 4) != 0 || rd16(r + 6) != 0 || rd16(r + 8) != rd16(r + 10))
        return zfail(z, "multi-disk zip archives are not supported");
    uint64_t n = rd16(r + 10), cd_size = rd32(r + 12), cd_off = rd32(r + 16);
    uint64_t cd_end_limit = eocd;  // the central directory ends where the (zip64) end records begin
    // zip64 (torch writes its end records always): a locator right before the end record
    int has64 = eocd >= 20 && pread_all(z->fd, r, 20, eocd - 20) == 0 && rd32(r) == SIG_LOC64;
    if (!has64 && (n == 0xffff || cd_size == 0xffffffffu || cd_off == 0xffffffffu))
        return zfail(z, "zip64 end-of-central-directory locator missing");
    if (has64) {
        uint64_t e64 = rd64(r + 8);
        if (rd32(r + 4) != 0 || rd32(r + 16) > 1) return zfail(z, "multi-disk zip archives are not supported");
        if (e64 > eocd - 20 || eocd - 20 - e64 < 56) return zfail(z, "zip64 end-of-central-directory offset out of range");
        if (pread_all(z->fd, r, 56, e64) != 0 || rd32(r) != SIG_EOCD64)
            return zfail(z, "zip64 end-of-central-directory record missing at offset %llu", (unsigned long long)e64);
        if (rd32(r + 16) != 0 || rd32(r + 20) != 0 || rd64(r + 24) != rd64(r + 32))
            return zfail(z, "multi-disk zip archives are not supported");
        n = rd64(r + 32);
        cd_size = rd64(r + 40);
        cd_off = rd64(r + 48);
        cd_end_limit = e64;
    }
    if (cd_off > cd_end_limit || cd_size != cd_end_limit - cd_off)
        return zfail(z, "central directory (offset %llu, %llu bytes) does not end where the end records begin (%llu)",
                     (unsigned long long)cd_off, (unsigned long long)cd_size, (unsigned long long)cd_end_limit);
    if (n == 0) return zfail(z, "the zip archive is empty");
    if (n > ZIP_MAX_ENTRIES || n > cd_size / 46)
        return zfail(z, "central directory claims %llu entries in %llu bytes", (unsigned long long)n, (unsigned long long)cd_size);

    unsigned char *cd = xmalloc(cd_size);
    if (pread_all(z->fd, cd, cd_size, cd_off) != 0) {
        free(cd);
        return zfail(z, "cannot read the central directory");
    }
    z->e = xcalloc(n, sizeof(*z->e));
    char msg[700] = "";
    uint64_t p = 0;
    for (uint64_t i = 0; i < n && !msg[0]; i++) {
        struct zip_entry *e = &z->e[i];
        if (cd_size - p < 46 || rd32(cd + p) != SIG_CENTRAL) {
            snprintf(msg, sizeof(msg), "central directory entry %llu is damaged (bad signature or truncated)", (unsigned long long)i);
            break;
        }
        const unsigned char *h = cd + p;
        uint16_t flags = rd16(h + 8), method = rd16(h + 10), nlen = rd16(h + 28), xlen = rd16(h + 30), clen = rd16(h + 32);
        uint64_t csize = rd32(h + 20), usize = rd32(h + 24), loff = rd32(h + 42);
        uint32_t crc = rd32(h + 16);
        if (cd_size - p - 46 < (uint64_t)nlen + xlen + clen) {
            snprintf(msg, sizeof(msg), "central directory entry %llu runs past the directory", (unsigned long long)i);
            break;
        }
        if (nlen == 0 || memchr(h + 46, 0, nlen)) {
            snprintf(msg, sizeof(msg), "central directory entry %llu has an empty name or a NUL byte in it", (unsigned long long)i);
            break;
        }
        e->name = xmalloc((size_t)nlen + 1);
        memcpy(e->name, h + 46, nlen);
        e->name[nlen] = '\0';
        z->n++;
        char pn[100];
        st_printable(pn, sizeof(pn), e->name);
        // zip64 extended information: the fields that are 0xffffffff, in this order
        const unsigned char *x = h + 46 + nlen, *xe = x + xlen;
        while (!msg[0] && xe - x >= 4) {
            uint16_t id = rd16(x), len = rd16(x + 2);
            if ((size_t)(xe - x - 4) < len) break;
            if (id == 0x0001) {
                const unsigned char *q = x + 4, *qe = q + len;
                uint64_t *fields[3] = {&usize, &csize, &loff};
                for (int k = 0; k < 3; k++)
                    if (*fields[k] == 0xffffffffu) {
                        if (qe - q < 8) {
                            snprintf(msg, sizeof(msg), "entry '%s': zip64 extra field too short", pn);
                            break;
                        }
                        *fields[k] = rd64(q);
                        q += 8;
                    }
            }
            x += 4 + len;
        }
        if (msg[0]) break;
        if (x != xe) {
            snprintf(msg, sizeof(msg), "entry '%s': malformed extra field in the central directory", pn);
            break;
        }
        if (flags & 0x41) {
            snprintf(msg, sizeof(msg), "entry '%s' is encrypted", pn);
            break;
        }
        if (method != 0 && method != 8) {
            snprintf(msg, sizeof(msg), "entry '%s' uses compression method %u (only stored and deflated are read)", pn, method);
            break;
        }
        if (method == 0 && csize != usize) {
            snprintf(msg, sizeof(msg), "entry '%s' is stored but its sizes differ (%llu and %llu bytes)", pn,
                     (unsigned long long)csize, (unsigned long long)usize);
            break;
        }
        if (method == 8 && (usize / 1032 > csize + 1)) {  // deflate expands at most ~1032:1
            snprintf(msg, sizeof(msg), "entry '%s' claims %llu bytes from %llu compressed (impossible for deflate)", pn,
                     (unsigned long long)usize, (unsigned long long)csize);
            break;
        }
        // The local header: same name, method, flags, time, date; CRC and sizes unless deferred
        unsigned char lh[30];
        if (loff > cd_off || cd_off - loff < 30 || pread_all(z->fd, lh, 30, loff) != 0 || rd32(lh) != SIG_LOCAL) {
            snprintf(msg, sizeof(msg), "entry '%s': no local header at offset %llu", pn, (unsigned long long)loff);
            break;
        }
        uint16_t lnlen = rd16(lh + 26), lxlen = rd16(lh + 28);
        uint64_t data = loff + 30 + lnlen + lxlen;
        if (data > cd_off) {
            snprintf(msg, sizeof(msg), "entry '%s': local header runs into the central directory", pn);
            break;
        }
        unsigned char *lname = xmalloc((size_t)lnlen + lxlen + 1);
        int bad = pread_all(z->fd, lname, (size_t)lnlen + lxlen, loff + 30) != 0 || lnlen != nlen ||
                  memcmp(lname, e->name, nlen) != 0;
        // local extra records must tile the field; torch's "FB" padding is all 'Z'
        const unsigned char *lx = lname + lnlen, *lxe = lx + lxlen;
        while (!bad && lxe - lx >= 4) {
            uint16_t id = rd16(lx), len = rd16(lx + 2);
            if ((size_t)(lxe - lx - 4) < len) break;
            if (id == 0x4246)  // "FB"
                for (uint16_t k = 0; k < len; k++) bad |= lx[4 + k] != 'Z';
            lx += 4 + len;
        }
        if (lx != lxe) bad = 1;
        free(lname);
        if (bad) {
            snprintf(msg, sizeof(msg), "entry '%s': its local header does not match the central directory (name or extra field)", pn);
            break;
        }
        uint32_t lcrc = rd32(lh + 14), lcs = rd32(lh + 18), lus = rd32(lh + 22);
        int deferred = (flags & 8) != 0;
        int sizes_ok = (lcs == csize || lcs == 0xffffffffu || (deferred && lcs == 0)) &&
                       (lus == usize || lus == 0xffffffffu || (deferred && lus == 0));
        if (rd16(lh + 4) != rd16(h + 6) || rd16(h + 34) != 0 || rd16(lh + 6) != flags || rd16(lh + 8) != method || rd32(lh + 10) != rd32(h + 12) ||
            !(lcrc == crc || (deferred && lcrc == 0)) || !sizes_ok) {
            snprintf(msg, sizeof(msg), "entry '%s': local header (flags, method, time, CRC or sizes) disagrees with the "
                     "central directory", pn);
            break;
        }
        if (csize > cd_off - data) {
            snprintf(msg, sizeof(msg), "entry '%s': %llu bytes of data at offset %llu run past the archive's data "
                     "(truncated?)", pn, (unsigned long long)csize, (unsigned long long)data);
            break;
        }
        // The data descriptor after deferred data: [PK\7\8] CRC, sizes (4 or 8 bytes each), equal to the above
        uint64_t dd = 0;
        if (deferred) {
            unsigned char d[24];
            uint64_t avail = cd_off - data - csize;
            size_t k = avail < 24 ? (size_t)avail : 24;
            memset(d, 0, sizeof(d));
            if (pread_all(z->fd, d, k, data + csize) != 0) k = 0;
            size_t sig = k >= 4 && rd32(d) == 0x08074b50u ? 4 : 0;
            if (k >= sig + 12 && rd32(d + sig) == crc && rd32(d + sig + 4) == csize && rd32(d + sig + 8) == usize)
                dd = sig + 12;
            else if (k >= sig + 20 && rd32(d + sig) == crc && rd64(d + sig + 4) == csize && rd64(d + sig + 12) == usize)
                dd = sig + 20;
            else {
                snprintf(msg, sizeof(msg), "entry '%s': its data descriptor is missing or disagrees with the central "
                         "directory", pn);
                break;
            }
        }
        e->loff = loff;
        e->end = data + csize + dd;
        e->method = method;
        e->crc = crc;
        e->csize = csize;
        e->usize = usize;
        e->data_off = data;
        p += 46 + (uint64_t)nlen + xlen + clen;
    }
    free(cd);
    if (msg[0]) return zfail(z, "%s", msg);
    if (p != cd_size) return zfail(z, "central directory has %llu bytes after its last entry", (unsigned long long)(cd_size - p));

    // The entries (local header, data, descriptor) tile the bytes before the central directory exactly:
    // no overlaps, no unaccounted bytes
    struct range *rg = xmalloc(sizeof(*rg) * (size_t)z->n);
    for (int i = 0; i < z->n; i++) rg[i] = (struct range){z->e[i].loff, z->e[i].end, i};
    qsort(rg, (size_t)z->n, sizeof(*rg), cmp_range);
    uint64_t expect = 0;
    for (int i = 0; i < z->n; i++) {
        if (rg[i].b != expect) {
            char a[100];
            st_printable(a, sizeof(a), z->e[rg[i].i].name);
            free(rg);
            return zfail(z, "entry '%s' starts at offset %llu, expected %llu: entries %s", a, (unsigned long long)rg[i].b,
                         (unsigned long long)expect, rg[i].b < expect ? "overlap" : "leave unaccounted bytes");
        }
        expect = rg[i].e;
    }
    free(rg);
    if (expect != cd_off)
        return zfail(z, "%llu unaccounted bytes between the last entry and the central directory",
                     (unsigned long long)(cd_off - expect));
    z->by_name = xmalloc(sizeof(int) * (size_t)z->n);
    for (int i = 0; i < z->n; i++) z->by_name[i] = i;
    sort_ctx = z;  // qsort has no context argument; zip_open is not called concurrently
    qsort(z->by_name, (size_t)z->n, sizeof(int), cmp_by_name);
    for (int i = 1; i < z->n; i++)
        if (!strcmp(z->e[z->by_name[i]].name, z->e[z->by_name[i - 1]].name)) {
            char a[100];
            return zfail(z, "entry '%s' appears twice", st_printable(a, sizeof(a), z->e[z->by_name[i]].name));
        }
    return 0;
}

void zip_close(struct zip_file *z) {
    if (z->fd >= 0) close(z->fd);
    for (int i = 0; i < z->n; i++) free(z->e[i].name);
    free(z->e);
    free(z->by_name);
    free(z->path);
    memset(z, 0, sizeof(*z));
    z->fd = -1;
}

const struct zip_entry *zip_find(const struct zip_file *z, const char *name) {
    int lo = 0, hi = z->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(z->e[z->by_name[mid]].name, name);
        if (c == 0) return &z->e[z->by_name[mid]];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

int zip_read(const struct zip_file *z, const struct zip_entry *e, void *out) {
    char pn[100];
    st_printable(pn, sizeof(pn), e->name);
    uLong crc = crc32(0L, Z_NULL, 0);
    if (e->method == 0) {
        if (pread_all(z->fd, out, (size_t)e->usize, e->data_off) != 0)
            return err_set("%s: entry '%s': short read (truncated or changed since it was opened?)", z->path, pn);
        for (uint64_t i = 0; i < e->usize; i += 1u << 30) {
            uint64_t k = e->usize - i < (1u << 30) ? e->usize - i : (1u << 30);
            crc = crc32(crc, (const Bytef *)out + i, (uInt)k);
        }
    } else {
        z_stream s;
        memset(&s, 0, sizeof(s));
        CHECK(inflateInit2(&s, -MAX_WBITS) == Z_OK);
        enum { CHUNK = 1 << 20 };
        unsigned char *in = xmalloc(CHUNK);
        uint64_t done_in = 0, done_out = 0;
        int zr = Z_OK, io = 0;
        while (zr != Z_STREAM_END) {
            if (s.avail_in == 0) {
                if (done_in == e->csize) break;
                size_t k = e->csize - done_in < CHUNK ? (size_t)(e->csize - done_in) : CHUNK;
                if (pread_all(z->fd, in, k, e->data_off + done_in) != 0) {
                    io = 1;
                    break;
                }
                done_in += k;
                s.next_in = in;
                s.avail_in = (uInt)k;
            }
            uint64_t room = e->usize - done_out;
            unsigned char one;
            s.next_out = room ? (Bytef *)out + done_out : &one;  // room 0: any output is an error
            s.avail_out = room ? (uInt)(room < (1u << 30) ? room : (1u << 30)) : 1;
            uInt before = s.avail_out;
            zr = inflate(&s, Z_NO_FLUSH);
            if (!room && s.avail_out != before) {
                zr = Z_DATA_ERROR;
                break;
            }
            done_out += before - s.avail_out;
            if (zr != Z_OK && zr != Z_STREAM_END) break;
        }
        inflateEnd(&s);
        free(in);
        if (io) return err_set("%s: entry '%s': short read (truncated or changed since it was opened?)", z->path, pn);
        if (zr != Z_STREAM_END || done_out != e->usize)
            return err_set("%s: entry '%s': deflated data is corrupt or does not give %llu bytes", z->path, pn,
                           (unsigned long long)e->usize);
        for (uint64_t i = 0; i < e->usize; i += 1u << 30) {
            uint64_t k = e->usize - i < (1u << 30) ? e->usize - i : (1u << 30);
            crc = crc32(crc, (const Bytef *)out + i, (uInt)k);
        }
    }
    if ((uint32_t)crc != e->crc)
        return err_set("%s: entry '%s': CRC-32 mismatch (stored %08x, data gives %08x): the file is corrupt", z->path, pn,
                       e->crc, (uint32_t)crc);
    return 0;
}
