// File helpers (see fs.h): mkdir -p, the one atomic-publish protocol every writer uses, and the
// run-directory lock.
#define _GNU_SOURCE
#include "core/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

char *fs_printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    CHECK(n >= 0 && s);
    return s;
}

char *fs_join(const char *a, const char *b) { return fs_printf("%s/%s", a, b); }

int fs_mkdir_p(const char *dir) {
    char *tmp = strdup(dir);
    CHECK(tmp);
    int rc = 0;
    for (char *p = tmp + 1; *p && rc == 0; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST) rc = err_set("%s: cannot create directory: %s", tmp, strerror(errno));
            *p = '/';
        }
    if (rc == 0 && mkdir(tmp, 0755) != 0 && errno != EEXIST)
        rc = err_set("%s: cannot create directory: %s", tmp, strerror(errno));
    struct stat st;
    if (rc == 0 && (stat(tmp, &st) != 0 || !S_ISDIR(st.st_mode))) rc = err_set("%s: exists and is not a directory", tmp);
    free(tmp);
    return rc;
}

int fs_fsync_path(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return fs_printf("%.*s", (int)(slash - path), path);
}

int fs_publish(const char *tmp, const char *path) {
    int rc = 0;
    if (fs_fsync_path(tmp) != 0) rc = err_set("%s: cannot sync: %s", path, strerror(errno));
    else if (rename(tmp, path) != 0) rc = err_set("%s: cannot rename into place: %s", path, strerror(errno));
    if (rc != 0) {
        unlink(tmp);
        return rc;
    }
    char *d = dir_of(path);
    if (fs_fsync_path(d) != 0) rc = err_set("%s: cannot sync its directory %s: %s", path, d, strerror(errno));
    free(d);
    return rc;
}

int fs_write_atomic(const char *path, const void *data, size_t n) {
    char *tmp = fs_printf("%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = 0;
    if (fd < 0) {
        rc = err_set("%s: cannot write: %s", path, strerror(errno));
    } else {
        const char *p = data;
        for (size_t left = n; left > 0 && rc == 0;) {
            ssize_t k = write(fd, p, left);
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) rc = err_set("%s: cannot write: %s", path, k < 0 ? strerror(errno) : "short write");
            else p += k, left -= (size_t)k;
        }
        if (close(fd) != 0 && rc == 0) rc = err_set("%s: cannot write: %s", path, strerror(errno));
        if (rc != 0) unlink(tmp);
        else rc = fs_publish(tmp, path);
    }
    free(tmp);
    return rc;
}

int fs_copy_file(const char *from, const char *to) {
    char *tmp = fs_printf("%s.tmp", to);
    FILE *in = fopen(from, "rb");
    if (!in) {
        free(tmp);
        return err_set("%s: cannot read: %s", from, strerror(errno));
    }
    FILE *out = fopen(tmp, "wb");
    if (!out) {
        int e = errno;
        fclose(in);
        free(tmp);
        return err_set("%s: cannot write: %s", to, strerror(e));
    }
    char buf[1 << 16];
    int ok = 1, e = 0;
    for (size_t n; (n = fread(buf, 1, sizeof(buf), in)) > 0;)
        if (fwrite(buf, 1, n, out) != n && ok) ok = 0, e = errno;
    if (ferror(in) && ok) ok = 0, e = errno;
    fclose(in);
    if (fclose(out) != 0 && ok) ok = 0, e = errno;
    int rc = 0;
    if (!ok) {
        unlink(tmp);
        rc = err_set("%s: copying from %s failed: %s", to, from, e ? strerror(e) : "read error");
    } else {
        rc = fs_publish(tmp, to);
    }
    free(tmp);
    return rc;
}

int fs_lock_dir(const char *dir) {
    char *path = fs_join(dir, "lock");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        int rc = err_set("%s: cannot open the run lock: %s", path, strerror(errno));
        free(path);
        return rc;
    }
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
#ifdef F_OFD_SETLK
    int got = fcntl(fd, F_OFD_SETLK, &fl);
#else
    int got = fcntl(fd, F_SETLK, &fl);
#endif
    if (got != 0) {
        int e = errno;
        char holder[256] = "";
        ssize_t k = pread(fd, holder, sizeof(holder) - 1, 0);
        holder[k > 0 ? k : 0] = '\0';
        holder[strcspn(holder, "\r\n")] = '\0';
        for (char *p = holder; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
        close(fd);
        int rc = (e == EAGAIN || e == EACCES)
                     ? err_set("%s: the run directory is in use by another job (%s); two jobs must not share a run_dir",
                               path, holder[0] ? holder : "holder unknown")
                     : err_set("%s: cannot lock: %s", path, strerror(e));
        free(path);
        return rc;
    }
    char host[256] = "?";
    gethostname(host, sizeof(host) - 1);
    char *text = fs_printf("host %s, pid %ld\n", host, (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, text, strlen(text), 0) < 0) {
        // the lock is held; its text only helps a person find the holder, so a full disk is no reason to stop
    }
    free(text);
    free(path);
    return fd;
}
