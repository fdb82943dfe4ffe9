// failio: an LD_PRELOAD library for the tests only (tests/harden/io_errors.sh), never linked into llamac.
// It makes writes or syncs of the files under one path prefix fail the way a failing disk or a quota
// does, which a full tmpfs cannot: EIO (a disk, or a network file system, that fails), EDQUOT (a quota),
// or any errno. Writes: once the first failure is injected, every later matching write fails too (a quota
// stays exceeded, a dead disk stays dead). Syncs: exactly one fails, so that a test can walk through every
// sync of a run in turn.
//
//   FAILIO_PREFIX=/abs/path  only files whose path (as /proc/self/fd names it) starts with this
//   FAILIO_ERRNO=EIO         EIO, EDQUOT, ENOSPC, EFBIG or a number
//   FAILIO_CALLS=write       write (write, pwrite, pwrite64, writev, pwritev) or fsync (fsync, fdatasync)
//   FAILIO_AFTER=N           write: the write that would take the bytes written under the prefix past N
//                            fails (default 0: the first)
//   FAILIO_SKIP=N            fsync: N syncs pass, the next one fails, the later ones pass (default 0)
//   FAILIO_LOG=FILE          appends "CALL PATH" for each failure injected (the test checks that one was)
//
// These are the calls Open MPI's OMPIO (HDF5's MPI-IO driver: pwrite, pwritev, fsync) and llamac's own
// writers (core/fs.c: write, fsync) make. Everything else passes through untouched.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static _Atomic long long written;  // bytes written under the prefix so far (all threads)
static _Atomic long long syncs;    // syncs under the prefix so far
static _Atomic int tripped;        // a write failure was injected: every later matching write fails

static long long env_ll(const char *name) {
    const char *s = getenv(name);
    return s ? atoll(s) : 0;
}

static int fail_errno(void) {
    const char *s = getenv("FAILIO_ERRNO");
    if (!s || !*s || !strcmp(s, "EIO")) return EIO;
    if (!strcmp(s, "EDQUOT")) return EDQUOT;
    if (!strcmp(s, "ENOSPC")) return ENOSPC;
    if (!strcmp(s, "EFBIG")) return EFBIG;
    return atoi(s);
}

// The path of fd into buf; 1 when it starts with FAILIO_PREFIX.
static int watched(int fd, char *buf, size_t n) {
    const char *prefix = getenv("FAILIO_PREFIX");
    if (!prefix || !*prefix) return 0;
    char link[64];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t k = readlink(link, buf, n - 1);
    if (k <= 0) return 0;
    buf[k] = '\0';
    return strncmp(buf, prefix, strlen(prefix)) == 0;
}

static int inject(const char *call, const char *path) {
    atomic_store(&tripped, 1);
    const char *log = getenv("FAILIO_LOG");
    if (log) {
        int lf = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (lf >= 0) {
            dprintf(lf, "%s %s\n", call, path);
            close(lf);
        }
    }
    errno = fail_errno();
    return -1;
}

static int is_mode(const char *mode) {
    const char *m = getenv("FAILIO_CALLS");
    return !strcmp(m && *m ? m : "write", mode);
}

// A write of n bytes to fd: 0 to let it through, else -1 with errno set.
static int on_write(const char *call, int fd, size_t n) {
    char path[4096];
    if (!is_mode("write") || !watched(fd, path, sizeof(path))) return 0;
    long long before = atomic_fetch_add(&written, (long long)n);
    if (!atomic_load(&tripped) && before + (long long)n <= env_ll("FAILIO_AFTER")) return 0;
    return inject(call, path);
}

static int on_sync(const char *call, int fd) {
    char path[4096];
    if (!is_mode("fsync") || !watched(fd, path, sizeof(path))) return 0;
    if (atomic_fetch_add(&syncs, 1) != env_ll("FAILIO_SKIP")) return 0;
    return inject(call, path);
}

// The libc function an interposed one forwards to, found once.
#define REAL(name) static __typeof__(&name) real_##name; if (!real_##name) real_##name = dlsym(RTLD_NEXT, #name)

ssize_t write(int fd, const void *buf, size_t n) {
    REAL(write);
    return on_write("write", fd, n) ? -1 : real_write(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    REAL(pwrite);
    return on_write("pwrite", fd, n) ? -1 : real_pwrite(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    REAL(pwrite64);
    return on_write("pwrite64", fd, n) ? -1 : real_pwrite64(fd, buf, n, off);
}

static size_t iov_bytes(const struct iovec *iov, int cnt) {
    size_t n = 0;
    for (int i = 0; i < cnt; i++) n += iov[i].iov_len;
    return n;
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    REAL(writev);
    return on_write("writev", fd, iov_bytes(iov, cnt)) ? -1 : real_writev(fd, iov, cnt);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    REAL(pwritev);
    return on_write("pwritev", fd, iov_bytes(iov, cnt)) ? -1 : real_pwritev(fd, iov, cnt, off);
}

int fsync(int fd) {
    REAL(fsync);
    return on_sync("fsync", fd) ? -1 : real_fsync(fd);
}

int fdatasync(int fd) {
    REAL(fdatasync);
    return on_sync("fdatasync", fd) ? -1 : real_fdatasync(fd);
}
