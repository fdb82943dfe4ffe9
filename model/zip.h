// Read-only zip archives, as torch.save writes them (the container of Meta's consolidated.NN.pth):
// entries stored uncompressed (method 0), possibly deflated (method 8) by other writers, zip64 for
// archives or entries over 4 GiB, data descriptors (flag bit 3), and local "FB" extra fields that pad
// each entry's data to a 64-byte boundary.
//
// The archive is untrusted input (README.md, "Models"): zip_open reads the end-of-central-
// directory record (zip64 when present) and every central directory entry, and checks each one against
// its local header (signature, name, method, flags, time and date, CRC and sizes unless deferred to a
// data descriptor) and against the file (every offset and size in range, overflow-safe; no two entries'
// data overlapping; no entry data inside the central directory; no duplicate names; no encryption, no
// multi-disk archives), and checks that the entries (local header, data, data descriptor) tile the
// bytes before the central directory exactly. zip_read then reads one entry's bytes and checks their CRC-32. Every problem is
// -1 with one err_set line "PATH: problem" (entry names are quoted printable).
#pragma once
#include <stddef.h>
#include <stdint.h>

#define ZIP_MAX_ENTRIES 1000000
#define ZIP_MAX_NAME 1024

struct zip_entry {
    char *name;              // NUL-terminated; no NUL bytes inside
    int method;              // 0 stored, 8 deflated
    uint32_t crc;
    uint64_t csize, usize;   // compressed (as stored in the file) and uncompressed bytes
    uint64_t data_off;       // absolute file offset of the (compressed) data
    uint64_t loff, end;      // the entry's bytes in the file: local header to the end of its data descriptor
};

struct zip_file {
    char *path;              // as opened (heap)
    int fd;
    uint64_t size;
    int n;
    struct zip_entry *e;     // (n) in central directory order
    int *by_name;            // (n) indices into e sorted by name
};

// Opens and validates PATH; -1 with err_set("PATH: problem") (z is then closed).
int zip_open(struct zip_file *z, const char *path);
void zip_close(struct zip_file *z);
// The entry called NAME, or NULL.
const struct zip_entry *zip_find(const struct zip_file *z, const char *name);
// Reads entry e uncompressed into out (e->usize bytes) and checks its CRC-32; -1 with err_set naming
// the file and the entry.
int zip_read(const struct zip_file *z, const struct zip_entry *e, void *out);
