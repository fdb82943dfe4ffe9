// Checkpoint writer and reader over parallel HDF5 (format in ckpt.h).
#include "train/ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/fs.h"

#define H5_CHECK(x) CHECKF((x) >= 0, "HDF5 call failed: %s", #x)

// ---------------------------------------------------------------------------------------------------
// Slices: which part of a canonical tensor a flat range of this rank's local tensor is
// ---------------------------------------------------------------------------------------------------

static int tensor_is_vector(const struct param_tensor *t) {
    return t->kind == PARAM_ATTN_NORM || t->kind == PARAM_FFN_NORM || t->kind == PARAM_NORM;
}

static hid_t tensor_filespace(const struct param_tensor *t) {
    hsize_t dims[2] = {(hsize_t)t->full_rows, (hsize_t)t->full_cols};
    if (tensor_is_vector(t)) return H5Screate_simple(1, &dims[1], NULL);
    return H5Screate_simple(2, dims, NULL);
}

// Selects in `space` the canonical elements of local flat range [a, b) of t (vocabulary padding rows
// excluded) and returns how many; 0 selects none. Local elements of the range map, in order, onto the
// selection in file order, so the memory side is the contiguous run local[a .. a + count).
static size_t select_local_range(hid_t space, const struct param_tensor *t, size_t a, size_t b) {
    const size_t cols = (size_t)t->cols;
    size_t end = (size_t)param_valid_rows(t) * cols;
    if (b > end) b = end;
    if (a >= b) {
        H5_CHECK(H5Sselect_none(space));
        return 0;
    }
    const size_t r0 = a / cols, c0 = a % cols, r1 = (b - 1) / cols, c1 = (b - 1) % cols + 1;
    const hsize_t row_base = t->split_dim == 0 ? (hsize_t)t->start : 0;
    const hsize_t col_base = t->split_dim == 1 ? (hsize_t)t->start : 0;
    int first = 1;
    // blocks: (row, nrows, col, ncols) in local coordinates
    size_t blocks[3][4];
    int nb = 0;
    if (r0 == r1) {
        blocks[nb][0] = r0, blocks[nb][1] = 1, blocks[nb][2] = c0, blocks[nb][3] = c1 - c0, nb++;
    } else {
        blocks[nb][0] = r0, blocks[nb][1] = 1, blocks[nb][2] = c0, blocks[nb][3] = cols - c0, nb++;
        if (r1 > r0 + 1) blocks[nb][0] = r0 + 1, blocks[nb][1] = r1 - r0 - 1, blocks[nb][2] = 0, blocks[nb][3] = cols, nb++;
        blocks[nb][0] = r1, blocks[nb][1] = 1, blocks[nb][2] = 0, blocks[nb][3] = c1, nb++;
    }
    for (int k = 0; k < nb; k++) {
        if (tensor_is_vector(t)) {
            hsize_t start = col_base + blocks[k][2], count = blocks[k][3];
            H5_CHECK(H5Sselect_hyperslab(space, first ? H5S_SELECT_SET : H5S_SELECT_OR, &start, NULL, &count, NULL));
        } else {
            hsize_t start[2] = {row_base + blocks[k][0], col_base + blocks[k][2]};
            hsize_t count[2] = {blocks[k][1], blocks[k][3]};
            H5_CHECK(H5Sselect_hyperslab(space, first ? H5S_SELECT_SET : H5S_SELECT_OR, start, NULL, count, NULL));
        }
        first = 0;
    }
    return b - a;
}

// Collective write (or read) of local[a..b) of tensor t to (from) dataset `ds`; ranks that take no part
// pass a == b.
static int transfer_range(hid_t ds, const struct param_tensor *t, float *local, size_t a, size_t b, int write) {
    hid_t fs = H5Dget_space(ds);
    size_t count = select_local_range(fs, t, a, b);
    hsize_t mdim = count ? count : 1;
    hid_t ms = H5Screate_simple(1, &mdim, NULL);
    if (!count) H5_CHECK(H5Sselect_none(ms));
    hid_t dx = H5Pcreate(H5P_DATASET_XFER);
    H5_CHECK(H5Pset_dxpl_mpio(dx, H5FD_MPIO_COLLECTIVE));
    herr_t rc = write ? H5Dwrite(ds, H5T_NATIVE_FLOAT, ms, fs, dx, local + a)
                      : H5Dread(ds, H5T_NATIVE_FLOAT, ms, fs, dx, local + a);
    H5Pclose(dx);
    H5Sclose(ms);
    H5Sclose(fs);
    return rc < 0 ? -1 : 0;
}

// ---------------------------------------------------------------------------------------------------
// Attributes
// ---------------------------------------------------------------------------------------------------

static void attr_write(hid_t obj, const char *name, hid_t type, const void *value) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5_CHECK(a);
    H5_CHECK(H5Awrite(a, type, value));
    H5Aclose(a);
    H5Sclose(sp);
}

static void attr_write_str(hid_t obj, const char *name, const char *s) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5_CHECK(H5Tset_size(t, strlen(s) + 1));
    attr_write(obj, name, t, s);
    H5Tclose(t);
}

static void attr_write_bytes(hid_t obj, const char *name, const void *p, size_t n) {
    hsize_t dim = n ? n : 1;
    uint8_t zero = 0;
    hid_t sp = H5Screate_simple(1, &dim, NULL);
    hid_t a = H5Acreate2(obj, name, H5T_NATIVE_UINT8, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5_CHECK(a);
    H5_CHECK(H5Awrite(a, H5T_NATIVE_UINT8, n ? p : &zero));
    H5Aclose(a);
    H5Sclose(sp);
}

static int attr_read(hid_t obj, const char *path, const char *name, hid_t type, void *out) {
    if (H5Aexists(obj, name) <= 0) return err_set("%s: not a llamac checkpoint (attribute '%s' missing)", path, name);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    herr_t rc = H5Aread(a, type, out);
    H5Aclose(a);
    return rc < 0 ? err_set("%s: cannot read attribute '%s'", path, name) : 0;
}

static char *attr_read_str(hid_t obj, const char *path, const char *name) {
    if (H5Aexists(obj, name) <= 0) {
        err_set("%s: not a llamac checkpoint (attribute '%s' missing)", path, name);
        return NULL;
    }
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t t = H5Aget_type(a);
    size_t n = H5Tget_size(t);
    char *s = xcalloc(n + 1, 1);
    hid_t mt = H5Tcopy(H5T_C_S1);
    H5Tset_size(mt, n);
    herr_t rc = H5Aread(a, mt, s);
    H5Tclose(mt);
    H5Tclose(t);
    H5Aclose(a);
    if (rc < 0) {
        free(s);
        err_set("%s: cannot read attribute '%s'", path, name);
        return NULL;
    }
    return s;
}

// ---------------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------------

static hid_t open_file(MPI_Comm comm, const char *path, int create) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5_CHECK(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL));
    hid_t f;
    H5E_BEGIN_TRY {
        f = create ? H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl) : H5Fopen(path, H5F_ACC_RDONLY, fapl);
    } H5E_END_TRY;
    H5Pclose(fapl);
    return f;
}

// Fault injection for the crash-safety test: LLAMAC_FAULT=ckpt_kill:K kills rank 0 (SIGKILL) halfway
// through writing the checkpoint of step K.
static int fault_kill_midway(int64_t step) {
    const char *f = getenv("LLAMAC_FAULT");
    return f && !strncmp(f, "ckpt_kill:", 10) && atoll(f + 10) == step;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Deletes all but the newest `keep` step_*.h5 files (names sort by step: zero-padded).
static void prune(const char *dir, int keep) {
    DIR *d = opendir(dir);
    if (!d) return;
    char **names = NULL;
    int n = 0, cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "step_", 5) != 0 || len < 4 || strcmp(e->d_name + len - 3, ".h5") != 0) continue;
        if (n == cap) names = xrealloc(names, sizeof(char *) * (size_t)(cap = cap ? 2 * cap : 16));
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof(char *), cmp_str);
    for (int i = 0; i < n; i++) {
        if (i < n - keep) {
            char p[1400];
            snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
            unlink(p);
        }
        free(names[i]);
    }
    free(names);
}

int ckpt_save(const struct ckpt_ctx *x, const char *run_dir, const struct ckpt_meta *meta, const struct llama *m,
              const struct ckpt_state *st, int keep) {
    int rank;
    MPI_Comm_rank(x->comm, &rank);
    char dir[1100], name[64], path[1200], tmp[1300];
    snprintf(dir, sizeof(dir), "%s/ckpt", run_dir);
    snprintf(name, sizeof(name), "step_%07lld.h5", (long long)meta->step);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int ok = rank == 0 ? fs_mkdir_p(dir) : 0;
    MPI_Bcast(&ok, 1, MPI_INT, 0, x->comm);
    if (ok != 0) return rank == 0 ? -1 : err_set("%s: cannot create checkpoint directory", dir);

    hid_t f = open_file(x->comm, tmp, 1);
    if (f < 0) return err_set("%s: cannot create checkpoint file", tmp);
    attr_write_str(f, "format", CKPT_FORMAT);
    int version = CKPT_VERSION;
    attr_write(f, "version", H5T_NATIVE_INT, &version);
    attr_write(f, "step", H5T_NATIVE_INT64, &meta->step);
    attr_write(f, "tokens_seen", H5T_NATIVE_INT64, &meta->tokens_seen);
    attr_write(f, "rng_state", H5T_NATIVE_UINT64, &meta->rng_state);
    attr_write_bytes(f, "loader_state", meta->loader_state, (size_t)meta->loader_state_size);
    attr_write_str(f, "model_config", meta->model_ini ? meta->model_ini : "");
    attr_write_str(f, "run_config", meta->run_ini ? meta->run_ini : "");
    attr_write(f, "saved_dp", H5T_NATIVE_INT, &meta->saved_dp);
    attr_write(f, "saved_tp", H5T_NATIVE_INT, &meta->saved_tp);
    attr_write(f, "saved_zero1", H5T_NATIVE_INT, &meta->saved_zero1);

    const struct param_layout *pl = &m->layout;
    float *host[3];  // master weights, m, v of this rank's range
    for (int g = 0; g < 3; g++) host[g] = xmalloc_aligned(sizeof(float) * (st->n ? st->n : 1));
    m->be->to_host(m->be, host[0], st->master, BUF_STATE, st->n);
    m->be->to_host(m->be, host[1], st->m, BUF_STATE, st->n);
    m->be->to_host(m->be, host[2], st->v, BUF_STATE, st->n);
    const char *groups[3] = {"params", "adam_m", "adam_v"};
    int ngroups = 3;
    int rc = 0;
    for (int g = 0; g < ngroups && rc == 0; g++) {
        hid_t grp = H5Gcreate2(f, groups[g], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5_CHECK(grp);
        for (int i = 0; i < pl->n && rc == 0; i++) {
            const struct param_tensor *t = &pl->t[i];
            hid_t fs = tensor_filespace(t);
            hid_t ds = H5Dcreate2(grp, t->name, H5T_IEEE_F32LE, fs, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            H5_CHECK(ds);
            H5Sclose(fs);
            // who writes what: replicated tensors once (tp rank 0); the state from the ranks that hold it,
            // which covers [st->offset, st->offset + st->n) of the local layout
            int mine = t->split_dim != -1 || x->tp_rank == 0;
            size_t a = 0, b = 0;
            size_t lo = st->offset > t->offset ? st->offset - t->offset : 0;
            size_t hi = st->offset + st->n < t->offset + t->numel ? st->offset + st->n - t->offset : t->numel;
            if (st->offset + st->n <= t->offset || st->offset >= t->offset + t->numel) lo = hi = 0;
            if (mine && st->writer && lo < hi) a = lo, b = hi;
            // local[a..b) of the tensor lives at state[t->offset + a - st->offset]
            float *src = host[g] + (ptrdiff_t)t->offset - (ptrdiff_t)st->offset;
            if (transfer_range(ds, t, src, a, b, 1) != 0) rc = err_set("%s: writing %s/%s failed", tmp, groups[g], t->name);
            H5Dclose(ds);
            if (g == ngroups - 1 && i == pl->n / 2 && fault_kill_midway(meta->step) && rank == 0) {
                H5Fflush(f, H5F_SCOPE_GLOBAL);
                raise(SIGKILL);
            }
        }
        H5Gclose(grp);
    }
    for (int g = 0; g < 3; g++) free(host[g]);
    if (H5Fclose(f) < 0 && rc == 0) rc = err_set("%s: closing the checkpoint failed", tmp);
    MPI_Allreduce(MPI_IN_PLACE, &rc, 1, MPI_INT, MPI_MIN, x->comm);
    if (rc != 0) {
        if (rank == 0) unlink(tmp);
        return -1;
    }

    // publish: fsync + rename the file, then latest, then prune
    int err = 0;
    if (rank == 0) {
        char latest[1200], latest_tmp[1300];
        snprintf(latest, sizeof(latest), "%s/latest", dir);
        snprintf(latest_tmp, sizeof(latest_tmp), "%s/latest.tmp", dir);
        if (fs_fsync_path(tmp) != 0 || rename(tmp, path) != 0 || fs_fsync_path(dir) != 0) {
            err = err_set("%s: cannot publish checkpoint: %s", path, strerror(errno));
        } else {
            FILE *lf = fopen(latest_tmp, "w");
            if (!lf || fprintf(lf, "%s\n", name) < 0 || fflush(lf) != 0 || fsync(fileno(lf)) != 0) err = -1;
            if (lf) fclose(lf);
            if (err || rename(latest_tmp, latest) != 0 || fs_fsync_path(dir) != 0)
                err = err_set("%s: cannot update: %s", latest, strerror(errno));
            else prune(dir, keep < 1 ? 1 : keep);
        }
    }
    MPI_Bcast(&err, 1, MPI_INT, 0, x->comm);
    if (err && rank != 0) err_set("checkpoint %s could not be published (see rank 0)", path);
    return err ? -1 : 0;
}

int ckpt_latest(const char *run_dir, char *out, size_t n) {
    char latest[1200], name[256];
    snprintf(latest, sizeof(latest), "%s/ckpt/latest", run_dir);
    FILE *f = fopen(latest, "r");
    if (!f) return 0;
    int ok = fgets(name, sizeof(name), f) != NULL;
    fclose(f);
    name[strcspn(name, "\r\n")] = '\0';
    if (!ok || strncmp(name, "step_", 5) != 0 || strchr(name, '/'))
        return err_set("%s: does not name a checkpoint file", latest);
    snprintf(out, n, "%s/ckpt/%s", run_dir, name);
    struct stat st;
    if (stat(out, &st) != 0) return err_set("%s: names %s, which does not exist", latest, name);
    return 1;
}

static int read_meta_open(hid_t f, const char *path, struct ckpt_meta *meta) {
    memset(meta, 0, sizeof(*meta));
    char *fmt = attr_read_str(f, path, "format");
    if (!fmt) return -1;
    int bad = strcmp(fmt, CKPT_FORMAT) != 0;
    free(fmt);
    if (bad) return err_set("%s: not a llamac checkpoint (format attribute differs)", path);
    int version = 0;
    if (attr_read(f, path, "version", H5T_NATIVE_INT, &version) != 0) return -1;
    if (version != CKPT_VERSION)
        return err_set("%s: checkpoint version %d, this llamac reads version %d", path, version, CKPT_VERSION);
    if (attr_read(f, path, "step", H5T_NATIVE_INT64, &meta->step) || attr_read(f, path, "tokens_seen", H5T_NATIVE_INT64, &meta->tokens_seen) ||
        attr_read(f, path, "rng_state", H5T_NATIVE_UINT64, &meta->rng_state) ||
        attr_read(f, path, "saved_dp", H5T_NATIVE_INT, &meta->saved_dp) ||
        attr_read(f, path, "saved_tp", H5T_NATIVE_INT, &meta->saved_tp) ||
        attr_read(f, path, "saved_zero1", H5T_NATIVE_INT, &meta->saved_zero1))
        return -1;
    if (H5Aexists(f, "loader_state") <= 0) return err_set("%s: attribute 'loader_state' missing", path);
    hid_t a = H5Aopen(f, "loader_state", H5P_DEFAULT);
    hid_t sp = H5Aget_space(a);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    if (n < 0 || n > CKPT_LOADER_STATE_MAX) {
        H5Aclose(a);
        return err_set("%s: loader_state has %lld bytes (at most %d)", path, (long long)n, CKPT_LOADER_STATE_MAX);
    }
    H5Aread(a, H5T_NATIVE_UINT8, meta->loader_state);
    H5Aclose(a);
    meta->loader_state_size = (int)n;
    meta->model_ini = attr_read_str(f, path, "model_config");
    meta->run_ini = attr_read_str(f, path, "run_config");
    if (!meta->model_ini || !meta->run_ini) return -1;
    return 0;
}

int ckpt_read_meta(const struct ckpt_ctx *x, const char *path, struct ckpt_meta *meta) {
    hid_t f = open_file(x->comm, path, 0);
    if (f < 0) return err_set("%s: cannot open as an HDF5 checkpoint (missing, truncated or not HDF5)", path);
    int rc = read_meta_open(f, path, meta);
    H5Fclose(f);
    return rc;
}

int ckpt_load(const struct ckpt_ctx *x, const char *path, struct llama *m, const struct ckpt_state *mom) {
    hid_t f = open_file(x->comm, path, 0);
    if (f < 0) return err_set("%s: cannot open as an HDF5 checkpoint (missing, truncated or not HDF5)", path);
    const struct param_layout *pl = &m->layout;
    float *host = xmalloc_aligned(sizeof(float) * (pl->total ? pl->total : 1));
    memset(host, 0, sizeof(float) * pl->total);
    float *hm = NULL, *hv = NULL;
    int nm = mom ? 3 : 1;
    if (nm == 3) {
        hm = xcalloc(mom->n ? mom->n : 1, sizeof(float));
        hv = xcalloc(mom->n ? mom->n : 1, sizeof(float));
    }
    const char *groups[3] = {"params", "adam_m", "adam_v"};
    int rc = 0;
    for (int g = 0; g < nm && rc == 0; g++)
        for (int i = 0; i < pl->n && rc == 0; i++) {
            const struct param_tensor *t = &pl->t[i];
            char dsname[256];
            snprintf(dsname, sizeof(dsname), "%s/%s", groups[g], t->name);
            if (H5Lexists(f, groups[g], H5P_DEFAULT) <= 0 || H5Lexists(f, dsname, H5P_DEFAULT) <= 0) {
                rc = err_set("%s: tensor %s is missing", path, dsname);
                break;
            }
            hid_t ds = H5Dopen2(f, dsname, H5P_DEFAULT);
            hid_t fs = H5Dget_space(ds);
            hsize_t dims[2] = {0, 0};
            int nd = H5Sget_simple_extent_dims(fs, dims, NULL);
            H5Sclose(fs);
            int want_nd = tensor_is_vector(t) ? 1 : 2;
            hsize_t want0 = tensor_is_vector(t) ? (hsize_t)t->full_cols : (hsize_t)t->full_rows;
            if (nd != want_nd || dims[0] != want0 || (nd == 2 && dims[1] != (hsize_t)t->full_cols)) {
                H5Dclose(ds);
                rc = err_set("%s: tensor %s has the wrong shape for this model", path, dsname);
                break;
            }
            size_t a = 0, b = t->numel;
            float *dst = host + t->offset;
            if (g > 0) {
                size_t lo = mom->offset > t->offset ? mom->offset - t->offset : 0;
                size_t hi = mom->offset + mom->n < t->offset + t->numel ? mom->offset + mom->n - t->offset : t->numel;
                if (mom->offset + mom->n <= t->offset || mom->offset >= t->offset + t->numel) lo = hi = 0;
                a = lo, b = hi;
                dst = (g == 1 ? hm : hv) + (ptrdiff_t)t->offset - (ptrdiff_t)mom->offset;
            }
            if (transfer_range(ds, t, dst, a, b, 0) != 0) rc = err_set("%s: reading %s failed", path, dsname);
            H5Dclose(ds);
        }
    H5Fclose(f);
    MPI_Allreduce(MPI_IN_PLACE, &rc, 1, MPI_INT, MPI_MIN, x->comm);
    if (rc == 0) {
        llama_params_from_host(m, host);
        if (nm == 3) {
            m->be->from_host(m->be, mom->m, hm, BUF_STATE, mom->n);
            m->be->from_host(m->be, mom->v, hv, BUF_STATE, mom->n);
        }
    } else if (!err_has()) {
        err_set("%s: loading failed on another rank", path);
    }
    free(host);
    free(hm);
    free(hv);
    return rc;
}

void ckpt_meta_free(struct ckpt_meta *meta) {
    free(meta->model_ini);
    free(meta->run_ini);
    meta->model_ini = meta->run_ini = NULL;
}
