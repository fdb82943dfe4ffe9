// LR schedules; the formulas are in schedule.h, and tests/ref/optim_ref.py writes them again in Python.
#include "optim/schedule.h"

#include <math.h>
#include <strings.h>

#include "core/config.h"
#include "core/error.h"

static double clamp01(double x) { return x < 0 ? 0 : x > 1 ? 1 : x; }

static double cosine_between(double hi, double lo, double p) {
    return lo + 0.5 * (hi - lo) * (1.0 + cos(M_PI * p));
}

double lr_at(const struct lr_schedule *s, long step) {
    double t = (double)step + 1.0;
    if (t <= s->warmup) return s->lr * t / (double)s->warmup;
    double total = (double)s->total;
    switch (s->kind) {
    case SCHED_CONSTANT:
        return s->lr;
    case SCHED_COSINE: {
        double span = total - (double)s->warmup;
        double p = span > 0 ? clamp01((t - (double)s->warmup) / span) : 1.0;
        return cosine_between(s->lr, s->min_lr, p);
    }
    case SCHED_WSD: {
        double d0 = (1.0 - s->decay_frac) * total;
        double span = total - d0;
        double p = span > 0 ? clamp01((t - d0) / span) : 1.0;
        if (s->decay_shape == SCHED_SHAPE_COSINE) return cosine_between(s->lr, s->min_lr, p);
        return s->lr - (s->lr - s->min_lr) * p;
    }
    }
    CHECKF(0, "unknown schedule kind %d", (int)s->kind);
}

const char *lr_schedule_name(enum sched_kind kind) {
    switch (kind) {
    case SCHED_COSINE: return "cosine";
    case SCHED_CONSTANT: return "constant";
    case SCHED_WSD: return "wsd";
    }
    return "?";
}

int lr_schedule_validate(const struct lr_schedule *s) {
    if (!(s->lr > 0)) return err_set("optim.lr = %g: the learning rate must be positive", s->lr);
    if (!(s->min_lr >= 0) || s->min_lr > s->lr)
        return err_set("optim.min_lr = %g: must be between 0 and optim.lr = %g", s->min_lr, s->lr);
    if (s->total <= 0) return err_set("the run has %ld steps: a schedule needs at least one", s->total);
    if (s->warmup < 0) return err_set("optim.warmup = %ld: must not be negative", s->warmup);
    if (s->warmup > s->total)
        return err_set("optim.warmup = %ld is longer than the run (%ld steps)", s->warmup, s->total);
    if (s->kind == SCHED_WSD) {
        if (!(s->decay_frac > 0 && s->decay_frac <= 1))
            return err_set("optim.decay_frac = %g: must be in (0, 1]", s->decay_frac);
        double d0 = (1.0 - s->decay_frac) * (double)s->total;
        if ((double)s->warmup > d0 + 1e-9)
            return err_set("optim.warmup = %ld overlaps the WSD decay, which starts at step %.0f "
                           "(decay_frac %g of %ld steps)", s->warmup, d0, s->decay_frac, s->total);
    }
    return 0;
}

int lr_schedule_from_cfg(struct lr_schedule *s, struct cfg *c, long total_steps) {
    const char *name = cfg_str(c, "optim.schedule", "cosine");
    if (!strcasecmp(name, "cosine")) s->kind = SCHED_COSINE;
    else if (!strcasecmp(name, "constant")) s->kind = SCHED_CONSTANT;
    else if (!strcasecmp(name, "wsd")) s->kind = SCHED_WSD;
    else return err_set("optim.schedule = '%s': expected cosine, constant or wsd", name);
    s->lr = cfg_float(c, "optim.lr", 3e-4);
    s->min_lr = cfg_float(c, "optim.min_lr", 0.1 * s->lr);
    s->total = total_steps;
    long wdef = total_steps / 10 < 2000 ? total_steps / 10 : 2000;
    s->warmup = cfg_int(c, "optim.warmup", wdef);
    s->decay_frac = cfg_float(c, "optim.decay_frac", 0.2);
    const char *shape = cfg_str(c, "optim.decay_shape", "linear");
    if (!strcasecmp(shape, "linear")) s->decay_shape = SCHED_SHAPE_LINEAR;
    else if (!strcasecmp(shape, "cosine")) s->decay_shape = SCHED_SHAPE_COSINE;
    else return err_set("optim.decay_shape = '%s': expected linear or cosine", shape);
    return lr_schedule_validate(s);
}
