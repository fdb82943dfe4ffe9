// Compares what two training runs produced, for the end-to-end parallel tests (parallel_train.sh):
//
//   ckpt_compare tensors A.h5 B.h5 GROUPS RTOL
//       every tensor of each group (comma-separated: params,adam_m,adam_v) of two llamac checkpoints:
//       same names, same shapes, and ||a - b|| / ||a|| <= RTOL with A the reference (2-norms over the
//       whole tensor, in double); RTOL 0 asks for bit-identical tensors. A reference tensor of zeros
//       fails: it would compare nothing.
//   ckpt_compare losses A/metrics.jsonl B/metrics.jsonl FROM TO RTOL
//       the "loss" of each train row of steps FROM..TO: |a - b| / |a| <= RTOL (0: identical doubles, which
//       metrics.jsonl prints with %.17g, so the text round-trips); each step must appear exactly once
//       in both files.
//   ckpt_compare grad_norm A/metrics.jsonl B/metrics.jsonl FROM TO RTOL
//       the same for the "grad_norm" column.
//
// Why the checkpoint compares gradients: after step 1, AdamW's moments are m = (1 - beta1) c g and
// v = (1 - beta2) (c g)^2, with g the global mean gradient and c the (global) clipping coefficient, so
// /adam_m and /adam_v of step_0000001.h5 compare the first step's gradients of two layouts without a
// debug hook. The checkpoint holds canonical (unsharded) tensors whatever layout wrote it.
//
// Serial HDF5 reads: the library is the parallel build, but a file opened with the default file access
// property list needs no MPI. Prints one line per group or column; exits 0 when everything is within
// tolerance, 1 on a difference, 2 on bad arguments or unreadable files.
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STEPS 100000

static int usage(void) {
    fprintf(stderr, "usage: ckpt_compare tensors A.h5 B.h5 GROUP[,GROUP...] RTOL\n"
                    "       ckpt_compare losses|grad_norm A/metrics.jsonl B/metrics.jsonl FROM TO RTOL\n");
    return 2;
}

// ---------------------------------------------------------------------------------------------------
// Tensors
// ---------------------------------------------------------------------------------------------------

struct names {
    char **v;
    int n, cap;
};

static herr_t collect_name(hid_t g, const char *name, const H5L_info_t *info, void *ctx) {
    struct names *ns = ctx;
    if (ns->n == ns->cap) {
        ns->cap = ns->cap ? 2 * ns->cap : 64;
        ns->v = realloc(ns->v, sizeof(char *) * (size_t)ns->cap);
    }
    ns->v[ns->n++] = strdup(name);
    return 0;
}

static void names_free(struct names *ns) {
    for (int i = 0; i < ns->n; i++) free(ns->v[i]);
    free(ns->v);
}

// Reads dataset PATH of file f as float: returns the buffer (caller frees) and its dims; NULL on error.
static float *read_tensor(hid_t f, const char *file, const char *path, int *nd, hsize_t dims[2], size_t *n) {
    if (H5Lexists(f, path, H5P_DEFAULT) <= 0) {
        fprintf(stderr, "ckpt_compare: %s: no dataset %s\n", file, path);
        return NULL;
    }
    hid_t ds = H5Dopen2(f, path, H5P_DEFAULT);
    hid_t sp = H5Dget_space(ds);
    *nd = H5Sget_simple_extent_ndims(sp);
    if (*nd < 1 || *nd > 2) {
        fprintf(stderr, "ckpt_compare: %s: %s has %d dimensions\n", file, path, *nd);
        H5Sclose(sp);
        H5Dclose(ds);
        return NULL;
    }
    dims[1] = 1;
    H5Sget_simple_extent_dims(sp, dims, NULL);
    *n = (size_t)dims[0] * (*nd == 2 ? (size_t)dims[1] : 1);
    float *buf = malloc(sizeof(float) * (*n ? *n : 1));
    herr_t rc = H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    H5Sclose(sp);
    H5Dclose(ds);
    if (rc < 0) {
        fprintf(stderr, "ckpt_compare: %s: cannot read %s\n", file, path);
        free(buf);
        return NULL;
    }
    return buf;
}

// One group: returns 0 all within rtol, 1 a difference, 2 an error.
static int compare_group(hid_t fa, hid_t fb, const char *a, const char *b, const char *group, double rtol) {
    struct names na = {0}, nb = {0};
    char gpath[300];
    snprintf(gpath, sizeof(gpath), "/%s", group);
    if (H5Lexists(fa, gpath, H5P_DEFAULT) <= 0 || H5Lexists(fb, gpath, H5P_DEFAULT) <= 0) {
        fprintf(stderr, "ckpt_compare: group %s missing in %s\n", gpath, H5Lexists(fa, gpath, H5P_DEFAULT) <= 0 ? a : b);
        return 2;
    }
    H5Literate_by_name(fa, gpath, H5_INDEX_NAME, H5_ITER_INC, NULL, collect_name, &na, H5P_DEFAULT);
    H5Literate_by_name(fb, gpath, H5_INDEX_NAME, H5_ITER_INC, NULL, collect_name, &nb, H5P_DEFAULT);
    int status = 0;
    if (na.n == 0 || na.n != nb.n) {
        printf("FAIL %s: %d tensors in A, %d in B\n", group, na.n, nb.n);
        status = 1;
    }
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < na.n && status != 2; i++) {
        char path[600];
        snprintf(path, sizeof(path), "%s/%s", gpath, na.v[i]);
        int nda = 0, ndb = 0;
        hsize_t da[2], db[2];
        size_t n_a = 0, n_b = 0;
        float *x = read_tensor(fa, a, path, &nda, da, &n_a);
        float *y = x ? read_tensor(fb, b, path, &ndb, db, &n_b) : NULL;
        if (!x || !y) {
            free(x);
            status = 2;
            break;
        }
        if (nda != ndb || da[0] != db[0] || (nda == 2 && da[1] != db[1])) {
            printf("FAIL %s: shapes differ\n", path);
            status = 1;
        } else {
            double diff = 0, ref = 0;
            for (size_t k = 0; k < n_a; k++) {
                double d = (double)x[k] - (double)y[k];
                diff += d * d;
                ref += (double)x[k] * x[k];
            }
            diff = sqrt(diff), ref = sqrt(ref);
            double rel = ref > 0 ? diff / ref : INFINITY;
            int bad = ref == 0 || (rtol == 0 ? memcmp(x, y, sizeof(float) * n_a) != 0 : !(rel <= rtol));
            if (ref == 0) printf("FAIL %s: the reference tensor is all zeros\n", path);
            else if (bad) printf("FAIL %s: ||a - b|| / ||a|| = %.3e > %.1e\n", path, rel, rtol);
            if (bad) status = 1;
            if (ref > 0 && rel >= worst) worst = rel, worst_name = na.v[i];
        }
        free(x);
        free(y);
    }
    if (status != 2)
        printf("%s %-7s %d tensors, largest ||a - b|| / ||a|| = %.3e (%s), tolerance %g%s\n", status ? "FAIL" : "ok  ",
               group, na.n, worst, worst_name, rtol, rtol == 0 ? " (bit-identical)" : "");
    names_free(&na);
    names_free(&nb);
    return status;
}

static int cmd_tensors(const char *a, const char *b, const char *groups, double rtol) {
    hid_t fa, fb = -1;
    H5E_BEGIN_TRY {
        fa = H5Fopen(a, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (fa >= 0) fb = H5Fopen(b, H5F_ACC_RDONLY, H5P_DEFAULT);
    } H5E_END_TRY;
    if (fa < 0 || fb < 0) {
        fprintf(stderr, "ckpt_compare: cannot open %s as HDF5\n", fa < 0 ? a : b);
        if (fa >= 0) H5Fclose(fa);
        return 2;
    }
    printf("tensors of %s (A) and %s (B), tolerance %g\n", a, b, rtol);
    int status = 0;
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", groups);
    for (char *save = NULL, *g = strtok_r(buf, ",", &save); g; g = strtok_r(NULL, ",", &save)) {
        int s = compare_group(fa, fb, a, b, g, rtol);
        if (s > status) status = s;
    }
    H5Fclose(fa);
    H5Fclose(fb);
    return status;
}

// ---------------------------------------------------------------------------------------------------
// metrics.jsonl columns
// ---------------------------------------------------------------------------------------------------

// Reads column KEY of the train rows: val[step] and seen[step] (times the step appears). -1 on error.
static int read_column(const char *path, const char *key, double *val, int *seen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "ckpt_compare: cannot read %s\n", path);
        return -1;
    }
    char line[4096], pat[64];
    snprintf(pat, sizeof(pat), "\"%s\": ", key);
    while (fgets(line, sizeof(line), f)) {
        char *s = strstr(line, "\"step\": "), *v = strstr(line, pat);
        if (!s || !v) continue;  // eval rows have no "loss" / "grad_norm"
        long step = strtol(s + 8, NULL, 10);
        if (step < 0 || step >= MAX_STEPS) continue;
        val[step] = strtod(v + strlen(pat), NULL);
        seen[step]++;
    }
    fclose(f);
    return 0;
}

static int cmd_column(const char *key, const char *a, const char *b, long from, long to, double rtol) {
    if (from < 1 || to < from || to >= MAX_STEPS) return usage();
    double *va = calloc(MAX_STEPS, sizeof(double)), *vb = calloc(MAX_STEPS, sizeof(double));
    int *sa = calloc(MAX_STEPS, sizeof(int)), *sb = calloc(MAX_STEPS, sizeof(int));
    int status = 0;
    if (read_column(a, key, va, sa) != 0 || read_column(b, key, vb, sb) != 0) status = 2;
    double worst = 0;
    long worst_step = from;
    for (long s = from; s <= to && status != 2; s++) {
        if (sa[s] != 1 || sb[s] != 1) {
            printf("FAIL step %ld: %d row(s) in A, %d in B (expected one each)\n", s, sa[s], sb[s]);
            status = 1;
            continue;
        }
        double rel = va[s] != 0 ? fabs(va[s] - vb[s]) / fabs(va[s]) : fabs(vb[s]);
        int bad = rtol == 0 ? va[s] != vb[s] : !(rel <= rtol);
        if (bad) {
            printf("FAIL step %ld: %s %.17g vs %.17g (relative difference %.3e)\n", s, key, va[s], vb[s], rel);
            status = 1;
        }
        if (rel >= worst) worst = rel, worst_step = s;
    }
    if (status != 2)
        printf("%s %s of steps %ld..%ld: largest relative difference %.3e (step %ld), tolerance %g%s\n",
               status ? "FAIL" : "ok  ", key, from, to, worst, worst_step, rtol, rtol == 0 ? " (identical)" : "");
    free(va);
    free(vb);
    free(sa);
    free(sb);
    return status;
}

int main(int argc, char **argv) {
    if (argc == 6 && !strcmp(argv[1], "tensors")) return cmd_tensors(argv[2], argv[3], argv[4], atof(argv[5]));
    if (argc == 7 && (!strcmp(argv[1], "losses") || !strcmp(argv[1], "grad_norm")))
        return cmd_column(!strcmp(argv[1], "losses") ? "loss" : "grad_norm", argv[2], argv[3], atol(argv[4]),
                          atol(argv[5]), atof(argv[6]));
    return usage();
}
