// The whole model against PyTorch autograd (tests/ref/gen_model_ref.py, an independent implementation
// run in float64): same Hugging Face weights, same tokens; llamac's loss must agree within 1e-5 relative
// and every parameter gradient within 1e-4 (norm of the difference over the norm of PyTorch's).
// Cases: grouped-query attention, rope_theta 500000, tied embeddings, masked targets; each also with
// activation recomputation. The masked loss is also run as one micro-batch per row with the trainer's
// rule (every micro-batch's backward with dloss = 1 / targets counted in all of them, gradients summed: the
// same sum a data-parallel group makes), and must give the same mean and gradients. "packed" is a window
// of several documents (llama_set_docs) against PyTorch's block-diagonal causal mask with positions
// restarting per document; the last test runs each of its documents alone through llamac and checks that
// their loss sum equals the packed window's.
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

struct ref_case {
    int B, T;
    double loss;
    int *tok, *tgt, *docs;  // docs NULL unless the case is packed
};

static void read_case(const char *dir, struct ref_case *rc) {
    char path[600];
    snprintf(path, sizeof(path), "%s/tokens.txt", dir);
    FILE *f = fopen(path, "r");
    cr_assert(f, "missing %s (the ref_model_gen fixture writes it)", path);
    cr_assert(fscanf(f, "%d %d %lf", &rc->B, &rc->T, &rc->loss) == 3);
    const int n = rc->B * rc->T;
    rc->tok = malloc(sizeof(int) * n);
    rc->tgt = malloc(sizeof(int) * n);
    rc->docs = malloc(sizeof(int) * n);
    for (int i = 0; i < n; i++) cr_assert(fscanf(f, "%d", &rc->tok[i]) == 1);
    for (int i = 0; i < n; i++) cr_assert(fscanf(f, "%d", &rc->tgt[i]) == 1);
    int k = 0;
    while (k < n && fscanf(f, "%d", &rc->docs[k]) == 1) k++;
    cr_assert(k == 0 || k == n, "%s: %d document starts for %d tokens", path, k, n);
    if (k == 0) {
        free(rc->docs);
        rc->docs = NULL;
    }
    fclose(f);
}

// micro > 1: the B rows run as `micro` micro-batches of B/micro rows, accumulated as the trainer does.
static void check_case_micro(const char *name, int recompute, int micro) {
    char dir[512], path[600];
    snprintf(dir, sizeof(dir), "%s/%s", REF_DIR, name);

    struct llama_config c = {0};
    cr_assert(hf_read_config(&c, dir) == 0, "%s", err_msg());
    struct llama m;
    cr_assert(llama_init(&m, &c, backend_cpu(), comm_self()) == 0, "%s", err_msg());
    cr_assert(hf_load_weights(&m, dir) == 0, "%s", err_msg());

    struct ref_case rc;
    read_case(dir, &rc);
    const int B = rc.B, T = rc.T, Bm = rc.B / micro;
    const double ref_loss = rc.loss;
    int *tok = rc.tok, *tgt = rc.tgt;
    cr_assert(Bm * micro == B);

    llama_alloc_acts(&m, Bm, T, recompute);
    llama_zero_grads(&m);
    long n = 0;  // counted targets of all micro-batches, known before the first backward (train/train.c)
    for (int i = 0; i < B * T; i++) n += tgt[i] >= 0;
    double sum = 0;
    for (int k = 0; k < micro; k++) {
        const size_t off = (size_t)k * Bm * T;
        llama_set_docs(&m, rc.docs ? rc.docs + off : NULL, Bm, T);
        long nk;
        sum += llama_forward(&m, tok + off, tgt + off, Bm, T, &nk);
        llama_backward(&m, 1.0f / (float)n);
    }
    double loss = sum / (double)n;
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
    free(rc.docs);
    llama_free(&m);
}

static void check_case(const char *name, int recompute) { check_case_micro(name, recompute, 1); }

Test(model_ref, grouped_query_attention) { check_case("gqa", 0); }
Test(model_ref, rope_theta_500000) { check_case("theta500k", 0); }
Test(model_ref, tied_embeddings) { check_case("tied", 0); }
Test(model_ref, masked_targets) { check_case("masked", 0); }
Test(model_ref, grouped_query_attention_recompute) { check_case("gqa", 1); }
Test(model_ref, masked_targets_recompute) { check_case("masked", 1); }
Test(model_ref, masked_targets_accumulated_over_micro_batches) { check_case_micro("masked", 0, 3); }
Test(model_ref, packed_documents) { check_case("packed", 0); }
Test(model_ref, packed_documents_recompute) { check_case("packed", 1); }
Test(model_ref, packed_documents_accumulated_over_micro_batches) { check_case_micro("packed", 0, 2); }

// llamac alone: the packed window's loss sum equals its documents run one by one (B = 1, no docs).
Test(model_ref, packed_window_equals_documents_one_by_one) {
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/packed", REF_DIR);
    struct llama_config c = {0};
    cr_assert(hf_read_config(&c, dir) == 0, "%s", err_msg());
    struct llama m;
    cr_assert(llama_init(&m, &c, backend_cpu(), comm_self()) == 0, "%s", err_msg());
    cr_assert(hf_load_weights(&m, dir) == 0, "%s", err_msg());
    struct ref_case rc;
    read_case(dir, &rc);
    cr_assert(rc.docs);
    llama_alloc_acts(&m, rc.B, rc.T, 0);
    llama_set_docs(&m, rc.docs, rc.B, rc.T);
    long n;
    double packed = llama_forward(&m, rc.tok, rc.tgt, rc.B, rc.T, &n), alone = 0;
    llama_set_docs(&m, NULL, 0, 0);
    int docs = 0;
    for (int b = 0; b < rc.B; b++)
        for (int s = 0; s < rc.T;) {
            int e = s;
            while (e < rc.T && rc.docs[b * rc.T + e] == s) e++;
            long k;
            alone += llama_forward(&m, rc.tok + b * rc.T + s, rc.tgt + b * rc.T + s, 1, e - s, &k);
            docs++;
            s = e;
        }
    cr_expect(docs > rc.B, "the case packs several documents per row (%d documents)", docs);
    cr_expect(fabs(packed - alone) <= 1e-5 * fabs(alone), "packed loss sum %.9f vs documents one by one %.9f", packed,
              alone);
    printf("model_ref packed: %d documents, loss sum %.9f packed, %.9f one by one\n", docs, packed, alone);
    free(rc.tok);
    free(rc.tgt);
    free(rc.docs);
    llama_free(&m);
}
