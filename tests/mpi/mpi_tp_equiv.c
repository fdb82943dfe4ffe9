// Tensor- and data-parallel equivalence of the whole model: every (dp, tp) layout gives the loss and
// the gradients of one rank (README.md, Distributed training).
//
// For each small config (dim 32, 2 layers, 4 heads, ffn 64, vocab 61 which no tp divides, so the padded
// vocabulary slices are exercised; MHA and GQA, tied and untied) and each layout, every rank builds the
// model over its TP group with llama_init + llama_init_random (layout-independent by design), runs
// forward and backward on its DP share of one global batch (some targets -1, one target the last real
// vocabulary id), and, with dp > 1, sums the gradients over its DP group with the bucketed dp_sync
// plugged into on_grads_ready. The root of each TP group gathers the gradient slices into canonical
// tensors (param_slice_to_full, norms from TP rank 0) and compares them with a tp = 1, dp = 1 run of the
// same global batch that it does itself with comm_self():
//   loss: relative error < 1e-5; every gradient tensor: ||g - g1|| / ||g1|| < 1e-5;
//   vocabulary padding rows: parameters and gradients exactly 0;
//   on_grads_ready: ranges cover every gradient exactly once per backward, tail first, embed last.
// Layouts on 4 ranks: (dp 1, tp 2) (run by two replica groups on the same batch), (1, 4), (2, 2), (4, 1).
//
// Run: mpirun --oversubscribe -np 4 mpi_tp_equiv
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/rng.h"
#include "launch/dp.h"
#include "launch/mpi_comm.h"
#include "model/llama.h"
#include "model/ops/backends.h"
#include "mpitest.h"

#define T_SEQ 8
#define B_LOCAL 2
#define MAX_RANGES 256
#define TOL 1e-5

static int world_rank, world_size;

struct model_case { const char *name; int n_heads, n_kv_heads, tie; };

static struct llama_config make_config(const struct model_case *mc) {
    struct llama_config c;
    memset(&c, 0, sizeof(c));
    snprintf(c.name, sizeof(c.name), "%s", mc->name);
    c.dim = 32;
    c.n_layers = 2;
    c.n_heads = mc->n_heads;
    c.n_kv_heads = mc->n_kv_heads;
    c.head_dim = c.dim / c.n_heads;
    c.vocab_size = 61;
    c.ffn_hidden = 64;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.rope_factor = 1.0f;
    c.max_seq_len = 16;
    c.tie_embeddings = mc->tie;
    return c;
}

// The global batch: B sequences of T tokens; every 5th target ignored, one target the last vocab id.
static void make_batch(int *tokens, int *targets, int B, int V, uint64_t seed) {
    struct rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < B * T_SEQ; i++) {
        tokens[i] = (int)(rng_uniform(&r) * V);
        targets[i] = i % 5 == 3 ? -1 : (int)(rng_uniform(&r) * V);
    }
    targets[1] = V - 1;
    tokens[2] = V - 1;
}

// on_grads_ready: records the ranges and passes them on to the DP sync (when there is one).
struct recorder {
    size_t off[MAX_RANGES], n[MAX_RANGES];
    int k;
    struct dp_sync *sync;
};
static void record_ready(void *ctx, size_t off, size_t n) {
    struct recorder *r = ctx;
    if (r->k < MAX_RANGES) {
        r->off[r->k] = off;
        r->n[r->k] = n;
    }
    r->k++;
    if (r->sync) dp_sync_on_ready(r->sync, off, n);
}

static int cmp_size(const void *a, const void *b) {
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

// Exactly-once cover of [0, total), the tail (offset tail_offset) first and embed (offset 0) last.
static int check_ranges(const struct recorder *r, const struct param_layout *pl, const char *what) {
    if (!mpitest_expect(r->k > 0 && r->k <= MAX_RANGES, "%s: %d ranges reported", what, r->k)) return 0;
    int ok = mpitest_expect(r->off[0] == pl->tail_offset && r->off[r->k - 1] == 0,
                            "%s: first range at %zu (tail at %zu), last at %zu (expected 0)", what, r->off[0],
                            pl->tail_offset, r->off[r->k - 1]);
    size_t (*s)[2] = malloc(sizeof(*s) * (size_t)r->k);
    for (int i = 0; i < r->k; i++) {
        s[i][0] = r->off[i];
        s[i][1] = r->n[i];
    }
    qsort(s, (size_t)r->k, sizeof(*s), cmp_size);
    size_t end = 0;
    for (int i = 0; i < r->k; i++) {
        ok &= mpitest_expect(s[i][0] == end, "%s: range at %zu but the previous ended at %zu (%s)", what, s[i][0], end,
                             s[i][0] < end ? "overlap" : "gap");
        end = s[i][0] + s[i][1];
    }
    ok &= mpitest_expect(end == pl->total, "%s: ranges end at %zu, gradients at %zu", what, end, pl->total);
    free(s);
    return ok;
}

// Runs forward + backward on B sequences; returns the mean loss over the counted targets of the whole
// DP group (*n_counted gets their number) and leaves the (DP-summed) gradients in m->grads.
static double step(struct llama *m, struct comm *dp, struct recorder *rec, const int *tokens, const int *targets,
                   int B, long *n_counted) {
    llama_alloc_acts(m, B, T_SEQ, 0);
    llama_zero_grads(m);
    long n_local = 0;
    double sum = llama_forward(m, tokens, targets, B, T_SEQ, &n_local);
    double n = comm_all_reduce_f64(dp, (double)n_local, COMM_SUM);
    sum = comm_all_reduce_f64(dp, sum, COMM_SUM);
    memset(rec, 0, sizeof(*rec));
    float *grads_host = NULL;
    if (dp->size > 1) {  // the CPU backend's gradient block is host fp32: sync it in place
        grads_host = (float *)m->grads;
        rec->sync = dp_sync_create(dp, grads_host, m->layout.total, 0.002);  // 524-element buckets
    }
    m->on_grads_ready = record_ready;
    m->on_grads_ready_ctx = rec;
    llama_backward(m, (float)(1.0 / n));
    if (rec->sync) {
        dp_sync_finish(rec->sync);
        mpitest_expect(rec->sync->n_overlapped == rec->sync->n_buckets, "dp sync: %d of %d buckets overlapped",
                       rec->sync->n_overlapped, rec->sync->n_buckets);
        dp_sync_destroy(rec->sync);
        rec->sync = NULL;
    }
    *n_counted = (long)n;
    return sum / n;
}

// Canonical gradients of the whole model on the TP root: one buffer per tensor, concatenated in layout
// order of the tp = 1 layout (which is the canonical one).
static float *gather_canonical(const struct llama *m, struct comm *tp, const struct param_layout *ref_pl) {
    const struct param_layout *pl = &m->layout;
    float *local = malloc(sizeof(float) * pl->total);
    llama_grads_to_host(m, local);
    float *out = tp->rank == 0 ? malloc(sizeof(float) * ref_pl->total) : NULL;
    for (int i = 0; i < pl->n; i++) {
        const struct param_tensor *t = &pl->t[i];
        const struct param_tensor *rt = &ref_pl->t[i];
        CHECK(!strcmp(t->name, rt->name));
        const size_t nf = (size_t)t->full_rows * t->full_cols;
        float *full = calloc(nf, sizeof(float));
        if (t->split_dim >= 0 || tp->rank == 0) param_slice_to_full(t, full, local + t->offset);
        // Padding rows of a vocabulary slice must hold no gradient.
        int vr = param_valid_rows(t);
        size_t nonzero = 0;
        for (size_t k = (size_t)vr * t->cols; k < t->numel; k++) nonzero += local[t->offset + k] != 0.0f;
        mpitest_expect(nonzero == 0, "%s: %zu nonzero gradients in %d padding rows", t->name, nonzero, t->rows - vr);
        if (tp->size > 1)
            MPI_CHECK(MPI_Reduce(tp->rank == 0 ? MPI_IN_PLACE : full, full, (int)nf, MPI_FLOAT, MPI_SUM, 0,
                                 comm_mpi_handle(tp)));
        if (out) memcpy(out + rt->offset, full, sizeof(float) * nf);
        free(full);
    }
    free(local);
    return out;
}

static void check_padding_params(const struct llama *m) {
    const struct param_layout *pl = &m->layout;
    float *p = malloc(sizeof(float) * pl->total);
    llama_params_to_host(m, p);
    for (int i = 0; i < pl->n; i++) {
        const struct param_tensor *t = &pl->t[i];
        size_t nonzero = 0;
        for (size_t k = (size_t)param_valid_rows(t) * t->cols; k < t->numel; k++) nonzero += p[t->offset + k] != 0.0f;
        mpitest_expect(nonzero == 0, "%s: %zu nonzero parameters in padding rows", t->name, nonzero);
    }
    free(p);
}

static int run_layout(const struct model_case *mc, int dp_size, int tp_size) {
    const struct llama_config cfg = make_config(mc);
    char what[128];
    snprintf(what, sizeof(what), "%s (dp %d, tp %d)", mc->name, dp_size, tp_size);
    const int before = mpitest_failures;

    // TP innermost; with dp_size * tp_size < world, the remaining ranks are replica groups on the same batch.
    MPI_Comm tpc, dpc;
    MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, world_rank / tp_size, world_rank, &tpc));
    MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, dp_size > 1 ? world_rank % tp_size : world_rank, world_rank, &dpc));
    struct comm *tp = tp_size > 1 ? comm_mpi_create(tpc) : comm_self();
    struct comm *dp = dp_size > 1 ? comm_mpi_create(dpc) : comm_self();
    MPI_CHECK(MPI_Comm_free(&tpc));
    MPI_CHECK(MPI_Comm_free(&dpc));

    const int BG = B_LOCAL * dp_size;
    int *tokens = malloc(sizeof(int) * (size_t)BG * T_SEQ), *targets = malloc(sizeof(int) * (size_t)BG * T_SEQ);
    make_batch(tokens, targets, BG, cfg.vocab_size, 1234);
    const uint64_t seed = 42;
    const size_t share = (size_t)dp->rank * B_LOCAL * T_SEQ;

    struct llama m;
    if (llama_init(&m, &cfg, backend_cpu(), tp) != 0) {
        mpitest_expect(0, "%s: llama_init: %s", what, err_msg());
        return 0;
    }
    llama_init_random(&m, seed);
    check_padding_params(&m);
    struct recorder rec;
    long n;
    double loss = step(&m, dp, &rec, tokens + share, targets + share, B_LOCAL, &n);
    snprintf(what + strlen(what), sizeof(what) - strlen(what), " rank %d", world_rank);
    check_ranges(&rec, &m.layout, what);

    // The one-rank reference on each TP root, and the comparison.
    struct llama ref;
    CHECK(llama_init(&ref, &cfg, backend_cpu(), comm_self()) == 0);
    float *g = gather_canonical(&m, tp, &ref.layout);
    if (tp->rank == 0) {
        llama_init_random(&ref, seed);
        struct recorder rrec;
        long n1;
        double loss1 = step(&ref, comm_self(), &rrec, tokens, targets, BG, &n1);
        check_ranges(&rrec, &ref.layout, "reference");
        float *g1 = malloc(sizeof(float) * ref.layout.total);
        llama_grads_to_host(&ref, g1);
        double lerr = fabs(loss - loss1) / fabs(loss1), worst = 0;
        const char *worst_name = "";
        mpitest_expect(n == n1, "%s: %ld counted targets, reference %ld", what, n, n1);
        mpitest_expect(lerr < TOL, "%s: loss %.9g vs %.9g (relative error %.3g)", what, loss, loss1, lerr);
        int bad = 0;
        double *errs = malloc(sizeof(double) * (size_t)ref.layout.n);
        for (int i = 0; i < ref.layout.n; i++) {
            const struct param_tensor *t = &ref.layout.t[i];
            double d = 0, s = 0;
            for (size_t k = 0; k < t->numel; k++) {
                double a = g[t->offset + k], b = g1[t->offset + k];
                d += (a - b) * (a - b);
                s += b * b;
            }
            errs[i] = s > 0 ? sqrt(d / s) : sqrt(d);
            if (!(errs[i] < TOL) || s == 0) bad++;
            if (!(errs[i] <= worst)) {
                worst = errs[i];
                worst_name = t->name;
            }
        }
        if (!mpitest_expect(bad == 0, "%s: %d gradient tensors differ from the one-rank run (or are all zero):", what,
                            bad))
            for (int i = 0; i < ref.layout.n; i++)
                fprintf(stderr, "    %-48s rel err %.3g%s\n", ref.layout.t[i].name, errs[i], errs[i] < TOL ? "" : "  <--");
        if (mpitest_failures == before)
            printf("  ok  %s: loss %.6f (rel err %.1e, %ld targets), %d gradient tensors (worst rel err %.1e, %s), "
                   "%d ranges\n", what, loss, lerr, n, ref.layout.n, worst, worst_name, rec.k);
        fflush(stdout);
        free(errs);
        free(g1);
    }
    free(g);
    llama_free(&ref);
    llama_free(&m);
    free(tokens);
    free(targets);
    if (tp_size > 1) comm_mpi_destroy(tp);
    if (dp_size > 1) comm_mpi_destroy(dp);
    return mpitest_failures == before;
}

int main(int argc, char **argv) {
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    if (world_size != 4) {
        if (world_rank == 0) fprintf(stderr, "mpi_tp_equiv: run with 4 ranks (got %d)\n", world_size);
        MPI_Finalize();
        return 1;
    }
    const struct model_case mha = {"MHA 4/4 untied", 4, 4, 0}, mha_tied = {"MHA 4/4 tied", 4, 4, 1};
    const struct model_case gqa = {"GQA 4/2 untied", 4, 2, 0}, gqa_tied = {"GQA 4/2 tied", 4, 2, 1};
    const struct model_case *all[] = {&mha, &mha_tied, &gqa, &gqa_tied};
    for (int i = 0; i < 4; i++) {
        run_layout(all[i], 1, 2);
        if (all[i]->n_kv_heads % 4 == 0) run_layout(all[i], 1, 4);
        run_layout(all[i], 2, 2);
        run_layout(all[i], 4, 1);
    }
    // A layout the model does not fit is refused with a message naming the cause.
    struct llama_config c = make_config(&gqa);
    MPI_Comm tpc;
    MPI_Comm_dup(MPI_COMM_WORLD, &tpc);
    struct comm *tp4 = comm_mpi_create(tpc);
    struct llama m;
    int rc = llama_init(&m, &c, backend_cpu(), tp4);
    mpitest_expect(rc == -1 && strstr(err_msg(), "n_kv_heads 2"), "GQA 4/2 at tp 4: llama_init returned %d (%s)", rc,
                   rc ? err_msg() : "accepted");
    if (world_rank == 0 && rc == -1) printf("  ok  GQA 4/2 at tp 4 refused: %s\n", err_msg());
    comm_mpi_destroy(tp4);
    MPI_Comm_free(&tpc);

    int status = mpitest_finish("mpi_tp_equiv");
    MPI_Finalize();
    return status;
}
