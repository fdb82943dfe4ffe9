// Learning-rate schedules: linear warmup, then cosine decay, a constant plateau, or warmup-stable-decay.
//
// Every schedule is a continuous function of t = step + 1 (the number of updates made once the 0-based
// `step` is done), so the last warmup step reaches the peak and the last step of the run reaches the
// floor exactly:
//
//   warmup   (t <= warmup):  lr * t / warmup                    (= lr * (step + 1) / warmup)
//   cosine   (t >  warmup):  min_lr + 0.5 * (lr - min_lr) * (1 + cos(pi * p)),  p = (t - warmup) / (total - warmup)
//   constant (t >  warmup):  lr
//   wsd      (t >  warmup):  lr until t reaches D = (1 - decay_frac) * total, then over the last
//                            decay_frac * total steps, with p = (t - D) / (total - D):
//                              linear: lr - (lr - min_lr) * p
//                              cosine: min_lr + 0.5 * (lr - min_lr) * (1 + cos(pi * p))
//
// p is clamped to [0, 1], so steps past `total` stay at min_lr (lr for constant). LLaMA: 2000 warmup steps,
// cosine to 10% of the peak. WSD is the schedule of MiniCPM and Hägele et al. 2024: a run can be extended
// or cut by moving only the decay, which makes it the schedule for runs whose length is not known up front.
#pragma once

struct cfg;

enum sched_kind { SCHED_COSINE, SCHED_CONSTANT, SCHED_WSD };
enum sched_shape { SCHED_SHAPE_LINEAR, SCHED_SHAPE_COSINE };  // the shape of WSD's final decay

struct lr_schedule {
    enum sched_kind kind;
    double lr, min_lr;       // peak and floor
    long warmup, total;      // in steps (updates)
    double decay_frac;       // WSD: the fraction of `total` spent decaying, in (0, 1]
    enum sched_shape decay_shape;  // WSD only
};

// The learning rate of the update at 0-based `step`.
double lr_at(const struct lr_schedule *s, long step);

// Reads [optim] of a run config for a run of total_steps updates:
//   schedule    = cosine | constant | wsd          (default cosine)
//   lr          = peak learning rate               (default 3e-4, LLaMA 7B/13B)
//   min_lr      = floor                            (default 0.1 * lr)
//   warmup      = warmup steps                     (default min(2000, total_steps / 10))
//   decay_frac  = WSD's decay fraction             (default 0.2)
//   decay_shape = linear | cosine, for WSD         (default linear)
// Returns -1 with err_set on a bad value (unknown schedule, warmup longer than the run, min_lr > lr, ...).
int lr_schedule_from_cfg(struct lr_schedule *s, struct cfg *c, long total_steps);
// Checks a schedule built by hand; -1 with err_set naming the bad field.
int lr_schedule_validate(const struct lr_schedule *s);
// "cosine", "constant" or "wsd"
const char *lr_schedule_name(enum sched_kind kind);
