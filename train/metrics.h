// Training metrics: run_dir/metrics.jsonl (one JSON object per line: train rows with step, loss, lr,
// grad_norm, tokens_seen, tokens_per_s, mfu, elapsed_s; eval rows with step, val_loss, val_ppl) and the
// loss picture run_dir/loss.png. On resume, rows after the resumed step (logged before a crash but never
// checkpointed) are dropped, so the file always describes one uninterrupted run.
#pragma once
#include <stdio.h>

struct metrics {
    FILE *f;
    char *path, *png;  // run_dir/metrics.jsonl, run_dir/loss.png (heap)
    double *train_x, *train_y, *val_x, *val_y;
    int n_train, n_val, cap_train, cap_val;
};

// Opens run_dir/metrics.jsonl for appending, keeping only rows with step <= keep_until.
int metrics_open(struct metrics *mt, const char *run_dir, long keep_until);
void metrics_close(struct metrics *mt);
// gpu_mem_bytes < 0 (the CPU backend) leaves out the GPU's memory in use and the time the step spent in
// communication (comm_s).
void metrics_train(struct metrics *mt, long step, double loss, double lr, double grad_norm, long long tokens_seen,
                   double tokens_per_s, double mfu, double elapsed_s, double gpu_mem_bytes, double comm_s);
void metrics_eval(struct metrics *mt, long step, double val_loss);
// Redraws run_dir/loss.png from every row so far.
int metrics_plot(struct metrics *mt, const char *title);
