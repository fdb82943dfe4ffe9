#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

static int log_rank = 0, log_world = 1, log_open_line = 0;

void log_set_rank(int rank, int world) { log_rank = rank; log_world = world; }
int log_is_main(void) { return log_rank == 0; }

void log_info(const char *fmt, ...) {
    if (log_rank != 0) return;
    log_progress_end();
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

void log_warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (log_world > 1) fprintf(stderr, "llamac[rank %d]: warning: ", log_rank);
    else fprintf(stderr, "llamac: warning: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void log_progress(const char *fmt, ...) {
    if (log_rank != 0) return;
    int tty = isatty(STDOUT_FILENO);
    va_list ap;
    va_start(ap, fmt);
    if (tty) fputs("\r\033[K", stdout);
    vprintf(fmt, ap);
    va_end(ap);
    if (tty) log_open_line = 1;
    else putchar('\n');
    fflush(stdout);
}

void log_progress_end(void) {
    if (log_open_line) { putchar('\n'); log_open_line = 0; }
}

void log_fmt_duration(char *out, int n, double s) {
    if (s < 0 || s != s) { snprintf(out, n, "?"); return; }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(out, n, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60) snprintf(out, n, "%ldm%02lds", t / 60, t % 60);
    else snprintf(out, n, "%lds", t);
}
