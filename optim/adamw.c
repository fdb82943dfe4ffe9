// AdamW on the host and the dispatch over ranges and backends (formulas in adamw.h; the CUDA kernel,
// with the same arithmetic, is in adamw.cu).
#include "optim/adamw.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/error.h"

void adamw_config_default(struct adamw_config *ac) {
    ac->beta1 = 0.9f;
    ac->beta2 = 0.95f;
    ac->eps = 1e-8f;
    ac->weight_decay = 0.1f;
    ac->clip = 1.0f;
}

int adamw_config_from_cfg(struct adamw_config *ac, struct cfg *c) {
    adamw_config_default(ac);
    const char *betas = cfg_str(c, "optim.betas", NULL);
    if (betas) {
        char *end;
        double b1 = strtod(betas, &end);
        while (*end == ' ' || *end == '\t') end++;
        if (end == betas || *end != ',')
            return err_set("optim.betas = '%s': expected two numbers such as 0.9, 0.95", betas);
        const char *p = end + 1;
        double b2 = strtod(p, &end);
        while (*end == ' ' || *end == '\t') end++;
        if (end == p || *end)
            return err_set("optim.betas = '%s': expected two numbers such as 0.9, 0.95", betas);
        if (!(b1 >= 0 && b1 < 1 && b2 >= 0 && b2 < 1))
            return err_set("optim.betas = '%s': each beta must be in [0, 1)", betas);
        ac->beta1 = (float)b1;
        ac->beta2 = (float)b2;
    }
    ac->eps = (float)cfg_float(c, "optim.eps", ac->eps);
    ac->weight_decay = (float)cfg_float(c, "optim.weight_decay", ac->weight_decay);
    ac->clip = (float)cfg_float(c, "optim.clip", ac->clip);
    if (!(ac->eps > 0)) return err_set("optim.eps = %g: must be positive", ac->eps);
    if (!(ac->weight_decay >= 0)) return err_set("optim.weight_decay = %g: must not be negative", ac->weight_decay);
    if (!(ac->clip >= 0)) return err_set("optim.clip = %g: must not be negative (0 turns clipping off)", ac->clip);
    return 0;
}

void adamw_update_cpu(const struct backend *be, dbuf *param_, dbuf *master, dbuf *m_, dbuf *v_, const dbuf *grad_,
                      size_t n, float lr, float beta1, float beta2, float eps, float wd, float grad_scale, long t) {
    CHECKF(t >= 1, "AdamW step %ld: steps count from 1", t);
    float *param = (float *)master, *m = (float *)m_, *v = (float *)v_;
    const float *grad = (const float *)grad_;
    const float keep = (float)(1.0 - (double)lr * wd);
    const float step_size = (float)((double)lr / (1.0 - pow(beta1, (double)t)));
    const float bc2_sqrt = (float)sqrt(1.0 - pow(beta2, (double)t));
    const float a1 = 1.0f - beta1, a2 = 1.0f - beta2;
#pragma omp parallel for simd schedule(static) if (n >= 65536)  // a norm weight is not worth a thread team
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] * grad_scale;
        float mi = beta1 * m[i] + a1 * g;
        float vi = beta2 * v[i] + a2 * g * g;
        m[i] = mi;
        v[i] = vi;
        param[i] = param[i] * keep - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
    }
    if (param_ && param_ != master) memcpy(param_, master, n * sizeof(float));
}

void adamw_state_init(struct adamw_state *s, const struct backend *be, size_t off, size_t n) {
    s->off = off;
    s->n = n;
    s->block = be->alloc(be, BUF_STATE, n ? 3 * n : 1);
    s->master = s->block;
    s->m = be_at(be, BUF_STATE, s->block, n);
    s->v = be_at(be, BUF_STATE, s->block, 2 * n);
}

void adamw_state_free(struct adamw_state *s, const struct backend *be) {
    if (s->block) be->free(be, s->block);
    memset(s, 0, sizeof(*s));
}

void adamw_step(const struct backend *be, struct adamw_state *s, dbuf *param_compute, const dbuf *grads,
                const struct adamw_range *ranges, int n_ranges, const struct adamw_config *ac, float lr,
                float grad_scale, long t) {
    CHECKF(be->elem_size[BUF_STATE] == 4 && be->elem_size[BUF_GRAD] == 4,
           "backend %s: AdamW needs fp32 state and gradients", be->name);
    for (int r = 0; r < n_ranges; r++) {
        const struct adamw_range *rg = &ranges[r];
        if (rg->n == 0) continue;
        CHECK(rg->offset + rg->n <= s->n);
        float wd = rg->decay ? ac->weight_decay : 0.0f;
        dbuf *pc = param_compute ? be_at(be, BUF_PARAM, param_compute, rg->offset) : NULL;
        be->ops->adamw_update(be, pc, be_at(be, BUF_STATE, s->master, rg->offset),
                              be_at(be, BUF_STATE, s->m, rg->offset), be_at(be, BUF_STATE, s->v, rg->offset),
                              be_at(be, BUF_GRAD, grads, rg->offset), rg->n, lr, ac->beta1, ac->beta2, ac->eps, wd,
                              grad_scale, t);
    }
}

int adamw_ranges_clip(struct adamw_range *out, const struct adamw_range *in, int n_in, size_t lo, size_t hi) {
    int k = 0;
    for (int i = 0; i < n_in; i++) {
        size_t a = in[i].offset, b = in[i].offset + in[i].n;
        if (a < lo) a = lo;
        if (b > hi) b = hi;
        if (a >= b) continue;
        out[k].offset = a - lo;
        out[k].n = b - a;
        out[k].decay = in[i].decay;
        k++;
    }
    return k;
}
