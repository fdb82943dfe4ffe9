// The whole model against PyTorch autograd (tests/ref/gen_model_ref.py, an independent implementation
// run in float64): same Hugging Face weights, same tokens; llamac's loss must agree within 1e-5 relative
// and every parameter gradient within 1e-4 (norm of the difference over the norm of PyTorch's).
// Cases: grouped-query attention, rope_theta 500000, tied embeddings, masked targets; each also with
// activation recomputation.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/comm.h"
#include "core/error.h"
#include "model/hf.h"
#include "model/llama.h"
#include "model/ops/backends.h"
#include "model/safetensors.h"
#include "testutil.h"

#define REF_DIR LLAMAC_TEST_TMP "/model_ref"

static void check_case(const char *name, int recompute) {
    char dir[512], path[600];
    snprintf(dir, sizeof(dir), "%s/%s", REF_DIR, name);

    struct llama_config c = {0};
    cr_assert(hf_read_config(&c, dir) == 0, "%s", err_msg());
    struct llama m;
    cr_assert(llama_init(&m, &c, backend_cpu(), comm_self()) == 0, "%s", err_msg());
    cr_assert(hf_load_weights(&m, dir) == 0, "%s", err_msg());

    snprintf(path, sizeof(path), "%s/tokens.txt", dir);
    FILE *f = fopen(path, "r");
    cr_assert(f, "missing %s (the ref_model_gen fixture writes it)", path);
    int B, T;
    double ref_loss;
    cr_assert(fscanf(f, "%d %d %lf", &B, &T, &ref_loss) == 3);
    int *tok = malloc(sizeof(int) * B * T), *tgt = malloc(sizeof(int) * B * T);
    for (int i = 0; i < B * T; i++) cr_assert(fscanf(f, "%d", &tok[i]) == 1);
    for (int i = 0; i < B * T; i++) cr_assert(fscanf(f, "%d", &tgt[i]) == 1);
    fclose(f);

    llama_alloc_acts(&m, B, T, recompute);
    llama_zero_grads(&m);
    long n;
    double loss = llama_forward(&m, tok, tgt, B, T, &n) / (double)n;
    llama_backward(&m, 1.0f / (float)n);
    double lerr = fabs(loss - ref_loss) / fabs(ref_loss);
    cr_expect(lerr < 1e-5, "%s: loss %.9f vs PyTorch %.9f (relative error %.3g)", name, loss, ref_loss, lerr);

    struct st_file ref;
    snprintf(path, sizeof(path), "%s/ref.safetensors", dir);
    cr_assert(st_open(&ref, path) == 0, "%s", err_msg());
    float *grads = malloc(sizeof(float) * m.layout.total);
    llama_grads_to_host(&m, grads);
    int checked = 0;
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < m.layout.n; i++) {
        const struct param_tensor *t = &m.layout.t[i];
        char gname[160];
        snprintf(gname, sizeof(gname), "grad.%s", t->name);
        const struct st_tensor *st = st_find(&ref, gname);
        cr_assert(st, "%s: PyTorch has no gradient for %s", name, t->name);
        float *want = malloc(sizeof(float) * t->numel);
        cr_assert(st_read_f32(&ref, st, want) == 0, "%s", err_msg());
        double e = rel_err(grads + t->offset, want, t->numel);
        cr_expect(e < 1e-4, "%s%s: gradient of %s differs from PyTorch: relative error %.3g", name,
                  recompute ? " (recompute)" : "", t->name, e);
        if (e > worst) worst = e, worst_name = t->name;
        free(want);
        checked++;
    }
    cr_expect(checked == m.layout.n && checked >= 20, "every tensor compared (%d)", checked);
    printf("model_ref %s%s: loss %.9f (PyTorch %.9f, relative error %.2g); worst gradient relative error %.2g (%s)\n",
           name, recompute ? " (recompute)" : "", loss, ref_loss, lerr, worst, worst_name);
    st_close(&ref);
    free(grads);
    free(tok);
    free(tgt);
    llama_free(&m);
}

Test(model_ref, grouped_query_attention) { check_case("gqa", 0); }
Test(model_ref, rope_theta_500000) { check_case("theta500k", 0); }
Test(model_ref, tied_embeddings) { check_case("tied", 0); }
Test(model_ref, masked_targets) { check_case("masked", 0); }
Test(model_ref, grouped_query_attention_recompute) { check_case("gqa", 1); }
Test(model_ref, masked_targets_recompute) { check_case("masked", 1); }
