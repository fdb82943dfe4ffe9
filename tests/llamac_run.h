// Runs the llamac binary from a Criterion test, as a user would in a shell: `cd DIR && ENV llamac ARGS`,
// with stdout and stderr captured (files DIR/out.txt, DIR/err.txt). LLAMAC_BINARY comes from CMake.
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

struct result {
    int status;  // exit status, or 128 + signal
    char out[65536], err[8192];
    int err_lines;
};

// The file at path, at most n - 1 bytes of it, NUL-terminated ("" when it cannot be read).
static void slurp(const char *path, char *buf, size_t n) {
    FILE *f = fopen(path, "r");
    size_t k = f ? fread(buf, 1, n - 1, f) : 0;
    buf[k] = '\0';
    if (f) fclose(f);
}

static void llamac_run_in(struct result *r, const char *dir, const char *env, const char *args) {
    mkdir(dir, 0755);
    const size_t n = 3 * strlen(dir) + strlen(env) + strlen(LLAMAC_BINARY) + strlen(args) + 64;
    char *cmd = malloc(n), *out = malloc(strlen(dir) + 16), *err = malloc(strlen(dir) + 16);
    snprintf(cmd, n, "cd %s && %s %s %s >%s/out.txt 2>%s/err.txt", dir, env, LLAMAC_BINARY, args, dir, dir);
    int st = system(cmd);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    sprintf(out, "%s/out.txt", dir);
    sprintf(err, "%s/err.txt", dir);
    slurp(out, r->out, sizeof(r->out));
    slurp(err, r->err, sizeof(r->err));
    r->err_lines = 0;
    for (char *p = r->err; *p; p++) r->err_lines += *p == '\n';
    free(cmd);
    free(out);
    free(err);
}
