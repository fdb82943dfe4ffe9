#include "train/metrics.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/fs.h"
#include "train/plot.h"

static void push(double **x, double **y, int *n, int *cap, double a, double b) {
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 256;
        *x = xrealloc(*x, sizeof(double) * (size_t)*cap);
        *y = xrealloc(*y, sizeof(double) * (size_t)*cap);
    }
    (*x)[*n] = a;
    (*y)[*n] = b;
    (*n)++;
}

int metrics_open(struct metrics *mt, const char *run_dir, long keep_until) {
    memset(mt, 0, sizeof(*mt));
    mt->path = fs_join(run_dir, "metrics.jsonl");
    mt->png = fs_join(run_dir, "loss.png");
    // keep the rows up to keep_until: read them, then rewrite the file through a temporary
    char *tmp = fs_printf("%s.tmp", mt->path);
    FILE *in = fopen(mt->path, "r");
    FILE *out = fopen(tmp, "w");
    if (!out) {
        int e = errno;
        if (in) fclose(in);
        err_set("%s: cannot write: %s", tmp, strerror(e));
        free(tmp);
        return -1;
    }
    int ok = 1;
    if (in) {
        char *line = NULL;
        size_t cap = 0;
        while (getline(&line, &cap, in) > 0) {
            cJSON *j = cJSON_Parse(line);
            cJSON *st = j ? cJSON_GetObjectItem(j, "step") : NULL;
            if (st && cJSON_IsNumber(st) && st->valuedouble <= keep_until) {
                if (fputs(line, out) < 0) ok = 0;
                cJSON *l = cJSON_GetObjectItem(j, "loss"), *v = cJSON_GetObjectItem(j, "val_loss");
                if (l && cJSON_IsNumber(l)) push(&mt->train_x, &mt->train_y, &mt->n_train, &mt->cap_train, st->valuedouble, l->valuedouble);
                if (v && cJSON_IsNumber(v)) push(&mt->val_x, &mt->val_y, &mt->n_val, &mt->cap_val, st->valuedouble, v->valuedouble);
            }
            cJSON_Delete(j);
        }
        free(line);
        fclose(in);
    }
    // the rows are only replaced once the copy is whole (a full disk must not cut the history short)
    int e = errno;
    if (fclose(out) != 0 && ok) ok = 0, e = errno;
    if (!ok) unlink(tmp);
    int rc = ok ? fs_publish(tmp, mt->path) : err_set("%s: cannot rewrite: %s", mt->path, strerror(e));
    free(tmp);
    if (rc != 0) return -1;
    mt->f = fopen(mt->path, "a");
    if (!mt->f) return err_set("%s: cannot append", mt->path);
    return 0;
}

void metrics_close(struct metrics *mt) {
    if (mt->f) fclose(mt->f);
    free(mt->train_x);
    free(mt->train_y);
    free(mt->val_x);
    free(mt->val_y);
    free(mt->path);
    free(mt->png);
    memset(mt, 0, sizeof(*mt));
}

void metrics_train(struct metrics *mt, long step, double loss, double lr, double grad_norm, long long tokens_seen,
                   double tokens_per_s, double mfu, double elapsed_s, double gpu_mem_bytes, double comm_s) {
    // %.17g: losses round-trip exactly, so two runs can be compared bit for bit
    fprintf(mt->f,
            "{\"step\": %ld, \"loss\": %.17g, \"lr\": %.9g, \"grad_norm\": %.9g, \"tokens_seen\": %lld, "
            "\"tokens_per_s\": %.1f, \"mfu\": %.5f, \"elapsed_s\": %.3f",
            step, loss, lr, grad_norm, tokens_seen, tokens_per_s, mfu, elapsed_s);
    if (gpu_mem_bytes >= 0) fprintf(mt->f, ", \"gpu_mem_bytes\": %.0f, \"comm_s\": %.6f", gpu_mem_bytes, comm_s);
    fprintf(mt->f, "}\n");
    fflush(mt->f);
    push(&mt->train_x, &mt->train_y, &mt->n_train, &mt->cap_train, (double)step, loss);
}

void metrics_eval(struct metrics *mt, long step, double val_loss) {
    fprintf(mt->f, "{\"step\": %ld, \"val_loss\": %.17g, \"val_ppl\": %.6g}\n", step, val_loss, exp(val_loss));
    fflush(mt->f);
    push(&mt->val_x, &mt->val_y, &mt->n_val, &mt->cap_val, (double)step, val_loss);
}

int metrics_plot(struct metrics *mt, const char *title) {
    return plot_loss_png(mt->png, mt->train_x, mt->train_y, mt->n_train, mt->val_x, mt->val_y, mt->n_val, title);
}
