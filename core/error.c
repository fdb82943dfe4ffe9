#include "core/error.h"

#include <stdarg.h>
#include <string.h>

static _Thread_local char err_buf[1024];

// A message is one line whatever it quotes: a control byte (a newline in a file name a damaged manifest
// lists, an escape sequence) becomes '?'. Bytes from 0x80 up (UTF-8) stay.
static void one_line(char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) *s = '?';
}

int err_set(const char *fmt, ...) {
    char msg[sizeof(err_buf)];  // formatted aside first: an argument may be err_msg() itself
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    one_line(msg);
    memcpy(err_buf, msg, sizeof(err_buf));
    return -1;
}

int err_prefix(const char *fmt, ...) {
    char head[512], old[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof(head), fmt, ap);
    va_end(ap);
    memcpy(old, err_buf, sizeof(old));
    snprintf(err_buf, sizeof(err_buf), "%s: %s", head, old);
    one_line(err_buf);
    return -1;
}

const char *err_msg(void) { return err_buf[0] ? err_buf : "unknown error"; }
int err_has(void) { return err_buf[0] != '\0'; }
void err_clear(void) { err_buf[0] = '\0'; }

void check_fail(const char *file, int line, const char *cond, const char *fmt, ...) {
    fprintf(stderr, "llamac: internal error at %s:%d: check failed: %s", file, line, cond);
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        fputs(": ", stderr);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
    }
    fputc('\n', stderr);
    fflush(stderr);
    abort();
}

void *xmalloc_at(size_t n, const char *file, int line) {
    void *p = malloc(n ? n : 1);
    if (!p) check_fail(file, line, "malloc", "out of memory allocating %zu bytes", n);
    return p;
}

void *xcalloc_at(size_t n, size_t size, const char *file, int line) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) check_fail(file, line, "calloc", "out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *xrealloc_at(void *p, size_t n, const char *file, int line) {
    void *q = realloc(p, n ? n : 1);
    if (!q) check_fail(file, line, "realloc", "out of memory allocating %zu bytes", n);
    return q;
}

void *xmalloc_aligned(size_t n) {
    void *p = NULL;
    size_t rounded = (n + 63) / 64 * 64;
    if (posix_memalign(&p, 64, rounded ? rounded : 64) != 0)
        check_fail(__FILE__, __LINE__, "posix_memalign", "out of memory allocating %zu bytes", n);
    return p;
}
