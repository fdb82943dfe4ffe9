// Two kinds of failure: a broken invariant aborts through a check macro, bad input returns an error.
//
// 1. A broken invariant (a failed malloc, an MPI/HDF5/CUDA call that should not fail, a size that the
//    code itself computed wrong) aborts at once through CHECK, printing file and line.
// 2. Bad input from a user (a corrupt file, a misspelt config key, a NaN loss) is an error value: the
//    function that finds it calls err_set() with one clear line naming the file and the problem and
//    returns -1; callers pass -1 up to the CLI, which prints err_msg() and exits non-zero.
#pragma once
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

// Records a one-line error message (printf-style) and returns -1, so that `return err_set(...)` reads
// naturally. The message is per thread, and one line even when it quotes untrusted text: control bytes
// (newlines, escapes) become '?'.
int err_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// Prefixes the current message with "CONTEXT: " (e.g. the file name a lower layer did not know).
int err_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *err_msg(void);
int err_has(void);  // 1 when a message is set (since the last err_clear)
void err_clear(void);

void check_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

#define CHECK(cond) \
    do { if (!(cond)) check_fail(__FILE__, __LINE__, #cond, NULL); } while (0)
#define CHECKF(cond, ...) \
    do { if (!(cond)) check_fail(__FILE__, __LINE__, #cond, __VA_ARGS__); } while (0)

// Allocation that cannot fail quietly (aborts with the size and the place).
#define xmalloc(n) xmalloc_at((n), __FILE__, __LINE__)
#define xcalloc(n, s) xcalloc_at((n), (s), __FILE__, __LINE__)
#define xrealloc(p, n) xrealloc_at((p), (n), __FILE__, __LINE__)
void *xmalloc_at(size_t n, const char *file, int line);
void *xcalloc_at(size_t n, size_t size, const char *file, int line);
void *xrealloc_at(void *p, size_t n, const char *file, int line);
// 64-byte aligned allocation for tensors (free with free()).
void *xmalloc_aligned(size_t n);
