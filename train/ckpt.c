// Checkpoint writer and reader over parallel HDF5 (format in ckpt.h).
#define _GNU_SOURCE  // memfd_create
#include "train/ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "core/error.h"
#include "core/fs.h"
#include "core/h5err.h"
#include "data/sha256.h"

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
// Checksums
// ---------------------------------------------------------------------------------------------------

// A tensor's checksum is the sum (mod 2^64) over its canonical elements of mix(index, bits): the ranks
// that write (or read) disjoint slices add their partial sums with one all-reduce, whatever the layout,
// and any changed, swapped or zeroed element changes the sum except with probability ~2^-64.
static inline uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Partial checksum of local[a..b) of t (padding rows excluded, as in select_local_range).
static uint64_t range_checksum(const struct param_tensor *t, const float *local, size_t a, size_t b) {
    const size_t cols = (size_t)t->cols, end = (size_t)param_valid_rows(t) * cols, full_cols = (size_t)t->full_cols;
    if (b > end) b = end;
    const size_t row_base = t->split_dim == 0 ? (size_t)t->start : 0, col_base = t->split_dim == 1 ? (size_t)t->start : 0;
    uint64_t h = 0;
    const long long lo = (long long)a, hi = (long long)b;
#pragma omp parallel for reduction(+ : h) schedule(static)
    for (long long j = lo; j < hi; j++) {
        size_t r = (size_t)j / cols, c = (size_t)j % cols;
        uint32_t bits;
        memcpy(&bits, &local[j], 4);
        h += mix64(mix64((row_base + r) * full_cols + col_base + c) ^ bits);
    }
    return h;
}

// SHA-256 over every root attribute (the order and widths fixed here), stored as meta_sha256.
static void meta_digest(const struct ckpt_meta *m, int version, char hex[65]) {
    struct sha256 s;
    sha256_init(&s);
    sha256_update(&s, CKPT_FORMAT, sizeof(CKPT_FORMAT));
    int64_t v[8] = {version, m->step, m->tokens_seen, (int64_t)m->rng_state, m->saved_dp, m->saved_tp, m->saved_zero1,
                    m->loader_state_size};
    sha256_update(&s, v, sizeof(v));
    sha256_update(&s, m->loader_state, (size_t)m->loader_state_size);
    const char *mi = m->model_ini ? m->model_ini : "", *ri = m->run_ini ? m->run_ini : "";
    sha256_update(&s, mi, strlen(mi) + 1);
    sha256_update(&s, ri, strlen(ri) + 1);
    uint8_t d[32];
    sha256_final(&s, d);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

// ---------------------------------------------------------------------------------------------------
// Attributes (-1 on failure; the caller names the file)
// ---------------------------------------------------------------------------------------------------

static int attr_write(hid_t obj, const char *name, hid_t type, const void *value) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, type, value);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc < 0 ? -1 : 0;
}

static int attr_write_str(hid_t obj, const char *name, const char *s) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5_CHECK(H5Tset_size(t, strlen(s) + 1));
    int rc = attr_write(obj, name, t, s);
    H5Tclose(t);
    return rc;
}

static int attr_write_bytes(hid_t obj, const char *name, const void *p, size_t n) {
    hsize_t dim = n ? n : 1;
    uint8_t zero = 0;
    hid_t sp = H5Screate_simple(1, &dim, NULL);
    hid_t a = H5Acreate2(obj, name, H5T_NATIVE_UINT8, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_UINT8, n ? p : &zero);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc < 0 ? -1 : 0;
}

// A scalar attribute of exactly the expected class and size (so a damaged type cannot make HDF5 write
// more than `out` holds).
static int attr_read(hid_t obj, const char *path, const char *name, hid_t type, void *out) {
    if (H5Aexists(obj, name) <= 0) return err_set("%s: not a llamac checkpoint (attribute '%s' missing)", path, name);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return err_set("%s: cannot open attribute '%s'", path, name);
    hid_t sp = H5Aget_space(a);
    hssize_t np = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    if (sp >= 0) H5Sclose(sp);
    herr_t rc = np == 1 ? H5Aread(a, type, out) : -1;
    H5Aclose(a);
    return rc < 0 ? err_set("%s: cannot read attribute '%s' (damaged checkpoint)", path, name) : 0;
}

#define CKPT_STR_MAX (16 << 20)  // an INI text attribute larger than this is damage, not a config

static char *attr_read_str(hid_t obj, const char *path, const char *name) {
    if (H5Aexists(obj, name) <= 0) {
        err_set("%s: not a llamac checkpoint (attribute '%s' missing)", path, name);
        return NULL;
    }
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t t = a < 0 ? -1 : H5Aget_type(a);
    size_t n = t < 0 ? 0 : H5Tget_size(t);
    int is_str = t >= 0 && H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) == 0;
    hid_t sp = a < 0 ? -1 : H5Aget_space(a);
    hssize_t np = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    if (sp >= 0) H5Sclose(sp);
    char *s = NULL;
    herr_t rc = -1;
    if (is_str && np == 1 && n > 0 && n <= CKPT_STR_MAX) {
        s = xcalloc(n + 1, 1);
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, n);
        rc = H5Aread(a, mt, s);
        H5Tclose(mt);
    }
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    if (rc < 0) {
        free(s);
        err_set("%s: cannot read attribute '%s' (damaged checkpoint)", path, name);
        return NULL;
    }
    return s;
}

// ---------------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------------

static hid_t open_file(MPI_Comm comm, const char *path, int create, char *why, size_t nwhy) {
    h5_silence();
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5_CHECK(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL));
    hid_t f = create ? H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl) : H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (f < 0) h5_cause(why, nwhy);
    H5Pclose(fapl);
    return f;
}

// Fault injection for the crash-safety test: LLAMAC_FAULT=ckpt_kill:K kills rank 0 (SIGKILL) halfway
// through writing the checkpoint of step K.
static int fault_kill_midway(int64_t step) {
    const char *f = getenv("LLAMAC_FAULT");
    return f && !strncmp(f, "ckpt_kill:", 10) && atoll(f + 10) == step;
}

// step_NNNNNNN.h5 -> 1 (a checkpoint's name), else 0
static int is_step_name(const char *s) {
    size_t len = strlen(s);
    if (len < 9 || strncmp(s, "step_", 5) != 0 || strcmp(s + len - 3, ".h5") != 0) return 0;
    for (size_t i = 5; i < len - 3; i++)
        if (s[i] < '0' || s[i] > '9') return 0;
    return 1;
}

static int cmp_str_desc(const void *a, const void *b) { return -strcmp(*(char *const *)a, *(char *const *)b); }

// The step_*.h5 names in dir, newest first (names sort by step: zero-padded). Returns the count.
static int list_steps(const char *dir, char ***out) {
    DIR *d = opendir(dir);
    char **names = NULL;
    int n = 0, cap = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        if (!is_step_name(e->d_name)) continue;
        if (n == cap) names = xrealloc(names, sizeof(char *) * (size_t)(cap = cap ? 2 * cap : 16));
        names[n++] = strdup(e->d_name);
    }
    if (d) closedir(d);
    if (n) qsort(names, (size_t)n, sizeof(char *), cmp_str_desc);
    *out = names;
    return n;
}

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

// Deletes all but the newest `keep` step_*.h5 files, and never the one `latest` names (just published,
// even when newer step files, left by a failed save or found damaged, sort before it).
static void prune(const char *dir, const char *latest_name, int keep) {
    char **names;
    int n = list_steps(dir, &names);
    for (int i = 0, kept = 0; i < n; i++) {
        if (!strcmp(names[i], latest_name) || kept < keep) {
            kept++;
            continue;
        }
        char *p = fs_join(dir, names[i]);
        unlink(p);
        free(p);
    }
    free_names(names, n);
}

// The file asked directly: a page written at its end, then synced. 0, or the errno either gave.
static int probe_write(const char *tmp) {
    static const char page[4096];
    int fd = open(tmp, O_WRONLY | O_CLOEXEC), e = 0;
    if (fd < 0) return errno;
    off_t end = lseek(fd, 0, SEEK_END);
    if (end < 0 || pwrite(fd, page, sizeof(page), end) < 0) e = errno;
    else if (fsync(fd) != 0) e = errno;
    close(fd);
    return e;
}

// errno just after a failing HDF5 call, when it is one an I/O system call sets for a sick disk; *seen is
// set once (the first failure is the cause).
static void os_cause(int *seen) {
    int e = errno;
    if (!*seen && (e == EIO || e == EDQUOT || e == ENOSPC || e == EFBIG || e == EROFS || e == ESTALE)) *seen = e;
}

// Why a write failed. MPI-IO reports a full disk, a quota (EDQUOT) or a failing disk (EIO) alike, as
// MPI_ERR_OTHER, so the file system is asked: free space, the file size limit, then the errno the failing
// call left (`seen`, from os_cause), then the file itself. 1 when the cause came from there (the operating
// system's word), 0 when only HDF5's is known.
static int write_failure_cause(const char *dir, const char *tmp, double need, int seen, char *why, size_t n) {
    struct statvfs vs;
    struct rlimit rl;
    struct stat st;
    double avail = statvfs(dir, &vs) == 0 ? (double)vs.f_bavail * (double)vs.f_frsize : -1;
    int e;
    if (avail >= 0 && avail < need + (1 << 20)) {
        snprintf(why, n, "%s (%.0f KiB free)", strerror(ENOSPC), avail / 1024);
    } else if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && stat(tmp, &st) == 0 &&
               (double)st.st_size + (1 << 20) >= (double)rl.rlim_cur) {
        snprintf(why, n, "%s (the file size limit, ulimit -f, is %.0f KiB)", strerror(EFBIG), (double)rl.rlim_cur / 1024);
    } else if (seen || (e = probe_write(tmp)) != 0) {
        if (seen) e = seen;
        snprintf(why, n, "%s", strerror(e));
    } else {
        h5_cause(why, n);
        return 0;
    }
    return 1;
}

// Open MPI's OMPIO prints a line on stderr for every write that fails ("mca_fbtl_posix_pwritev: error in
// (p)write(v):Input/output error"), several per failed checkpoint and per rank, where llamac's report is
// one line (README.md, "What can go wrong"). While a checkpoint is written, stderr goes to an anonymous
// file; afterwards every line comes back except OMPIO's.
struct stderr_hold {
    int saved;  // the real stderr, or -1 when not held
    FILE *f;
};

static void stderr_hold(struct stderr_hold *h) {
    fflush(stderr);
    int fd = memfd_create("llamac-stderr", MFD_CLOEXEC);
    h->f = fd >= 0 ? fdopen(fd, "w+") : NULL;
    h->saved = h->f ? dup(2) : -1;
    if (h->saved >= 0 && dup2(fileno(h->f), 2) < 0) {
        close(h->saved);
        h->saved = -1;
    }
    if (h->saved < 0 && h->f) fclose(h->f);
}

static void stderr_release(struct stderr_hold *h) {
    if (h->saved < 0) return;
    fflush(stderr);
    dup2(h->saved, 2);
    close(h->saved);
    rewind(h->f);
    char *line = NULL;
    size_t cap = 0;
    static const char *ompio[] = {"mca_fbtl_", "mca_fcoll_", "mca_common_ompio", "mca_io_ompio", "mca_fs_"};
    while (getline(&line, &cap, h->f) > 0) {
        int theirs = 0;
        for (size_t i = 0; i < sizeof(ompio) / sizeof(ompio[0]); i++) theirs |= strstr(line, ompio[i]) != NULL;
        if (!theirs) fputs(line, stderr);
    }
    free(line);
    fclose(h->f);
    h->saved = -1;
}

// The bytes of tensor data a checkpoint holds (parameters and two moments): a lower bound of its size.
static double ckpt_data_bytes(const struct param_layout *pl) {
    double s = 0;
    for (int i = 0; i < pl->n; i++) {
        const struct param_tensor *t = &pl->t[i];
        if (t->split_dim != -1 && t->start != 0) continue;  // count each canonical tensor once
        s += (tensor_is_vector(t) ? 1.0 : (double)t->full_rows) * (double)t->full_cols;
    }
    return 3 * 4 * s;
}

// Rank 0, before writing: is there room for the data at all? (A write that fails later, on a disk that
// fills up meanwhile, is handled in ckpt_save.) A file size limit is static, so it is checked against an
// upper bound of the file (data, plus 4 KiB of HDF5 headers per dataset, plus the INI texts): HDF5 1.10
// cannot close a file it cannot extend to its end-of-allocation, and a failed close crashes at MPI_Finalize.
static int room_check(const char *dir, const char *path, double need, double most) {
    struct statvfs vs;
    struct rlimit rl;
    const char *skip = getenv("LLAMAC_CKPT_NO_ROOM_CHECK");  // tests of the disk-full write path itself
    if (statvfs(dir, &vs) == 0 && (double)vs.f_bavail * (double)vs.f_frsize < need && !(skip && *skip))
        return err_set("%s: cannot write checkpoint: %s (%.0f KiB free, it needs at least %.0f KiB)", path,
                       strerror(ENOSPC), (double)vs.f_bavail * (double)vs.f_frsize / 1024, need / 1024);
    if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && (double)rl.rlim_cur < most)
        return err_set("%s: cannot write checkpoint: %s (the file size limit, ulimit -f, is %.0f KiB; it may need "
                       "%.0f KiB)", path, strerror(EFBIG), (double)rl.rlim_cur / 1024, most / 1024);
    return 0;
}

// One failure flag for all ranks (collective), so every rank leaves a loop at the same tensor.
static int any_failed(MPI_Comm comm, int failed) {
    MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, comm);
    return failed;
}

static int write_meta(hid_t f, const struct ckpt_meta *meta) {
    char digest[65];
    meta_digest(meta, CKPT_VERSION, digest);
    int version = CKPT_VERSION, bad = 0;
    bad |= attr_write_str(f, "format", CKPT_FORMAT);
    bad |= attr_write(f, "version", H5T_NATIVE_INT, &version);
    bad |= attr_write(f, "step", H5T_NATIVE_INT64, &meta->step);
    bad |= attr_write(f, "tokens_seen", H5T_NATIVE_INT64, &meta->tokens_seen);
    bad |= attr_write(f, "rng_state", H5T_NATIVE_UINT64, &meta->rng_state);
    bad |= attr_write_bytes(f, "loader_state", meta->loader_state, (size_t)meta->loader_state_size);
    bad |= attr_write_str(f, "model_config", meta->model_ini ? meta->model_ini : "");
    bad |= attr_write_str(f, "run_config", meta->run_ini ? meta->run_ini : "");
    bad |= attr_write(f, "saved_dp", H5T_NATIVE_INT, &meta->saved_dp);
    bad |= attr_write(f, "saved_tp", H5T_NATIVE_INT, &meta->saved_tp);
    bad |= attr_write(f, "saved_zero1", H5T_NATIVE_INT, &meta->saved_zero1);
    bad |= attr_write_str(f, "meta_sha256", digest);
    return bad ? -1 : 0;
}

int ckpt_save(const struct ckpt_ctx *x, const char *run_dir, const struct ckpt_meta *meta, const struct llama *m,
              const struct ckpt_state *st, int keep) {
    int rank;
    MPI_Comm_rank(x->comm, &rank);
    struct stderr_hold held = {-1, NULL};
    char name[64];
    snprintf(name, sizeof(name), "step_%07lld.h5", (long long)meta->step);
    char *dir = fs_join(run_dir, "ckpt"), *path = fs_join(dir, name), *tmp = fs_printf("%s.tmp", path);
    const struct param_layout *pl = &m->layout;
    const double need = ckpt_data_bytes(pl);
    int rc = rank == 0 ? fs_mkdir_p(dir) : 0;
    const double most = need + 3.0 * pl->n * 4096 + 65536 + (meta->model_ini ? strlen(meta->model_ini) : 0) +
                        (meta->run_ini ? strlen(meta->run_ini) : 0);
    if (rank == 0 && rc == 0) rc = room_check(dir, path, need, most);
    MPI_Bcast(&rc, 1, MPI_INT, 0, x->comm);
    if (rc != 0) {
        if (rank != 0) err_set("%s: cannot write checkpoint (see rank 0)", path);
        goto done;
    }

    stderr_hold(&held);
    char why[512] = "";
    hid_t f = open_file(x->comm, tmp, 1, why, sizeof(why));
    if (any_failed(x->comm, f < 0)) {
        if (f >= 0) H5Fclose(f);
        rc = err_set("%s: cannot create checkpoint file: %s", tmp, why[0] ? why : "failed on another rank");
        if (rank == 0) unlink(tmp);
        goto done;
    }
    int seen = 0;  // the operating system's errno right after the first failing call, when it is an I/O one
    int failed = write_meta(f, meta) != 0;
    if (failed) os_cause(&seen), h5_cause(why, sizeof(why));

    float *host[3];  // master weights, m, v of this rank's range
    for (int g = 0; g < 3; g++) host[g] = xmalloc_aligned(sizeof(float) * (st->n ? st->n : 1));
    m->be->to_host(m->be, host[0], st->master, BUF_STATE, st->n);
    m->be->to_host(m->be, host[1], st->m, BUF_STATE, st->n);
    m->be->to_host(m->be, host[2], st->v, BUF_STATE, st->n);
    const char *groups[3] = {"params", "adam_m", "adam_v"};
    for (int g = 0; g < 3 && !any_failed(x->comm, failed); g++) {
        hid_t grp = H5Gcreate2(f, groups[g], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (grp < 0) {
            failed = 1;
            h5_cause(why, sizeof(why));
            continue;
        }
        for (int i = 0; i < pl->n && !any_failed(x->comm, failed); i++) {
            const struct param_tensor *t = &pl->t[i];
            hid_t fs = tensor_filespace(t);
            hid_t ds = H5Dcreate2(grp, t->name, H5T_IEEE_F32LE, fs, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            H5Sclose(fs);
            if (any_failed(x->comm, ds < 0)) {
                if (ds < 0) h5_cause(why, sizeof(why));
                if (ds >= 0) H5Dclose(ds);
                failed = 1;
                break;
            }
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
            uint64_t sum = a < b ? range_checksum(t, src, a, b) : 0;
            MPI_Allreduce(MPI_IN_PLACE, &sum, 1, MPI_UINT64_T, MPI_SUM, x->comm);
            if (transfer_range(ds, t, src, a, b, 1) != 0 && !failed) failed = 1, os_cause(&seen), h5_cause(why, sizeof(why));
            if (attr_write(ds, "checksum", H5T_NATIVE_UINT64, &sum) != 0 && !failed) failed = 1, h5_cause(why, sizeof(why));
            H5Dclose(ds);
            if (g == 2 && i == pl->n / 2 && fault_kill_midway(meta->step) && rank == 0) {
                H5Fflush(f, H5F_SCOPE_GLOBAL);
                raise(SIGKILL);
            }
        }
        H5Gclose(grp);
    }
    for (int g = 0; g < 3; g++) free(host[g]);
    // HDF5 1.10 cannot take a failed H5Fclose back: the file stays open in the library (whose clean-up at
    // exit is off for that reason, core/h5err.h). So metadata is flushed first; if that or any write
    // failed, rank 0 empties the file, which gives a full disk back the space the close needs, and the .tmp
    // is removed afterwards.
    if (!any_failed(x->comm, failed) && H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) failed = 1, os_cause(&seen), h5_cause(why, sizeof(why));
    if (any_failed(x->comm, failed)) {
        if (rank == 0) {
            char cause[512];
            if (write_failure_cause(dir, tmp, need, seen, cause, sizeof(cause)) || !failed || !why[0])
                snprintf(why, sizeof(why), "%s", cause);
            if (truncate(tmp, 0) != 0) {
                // nothing more to free; the close may still fail and is reported the same way
            }
        }
        H5Fclose(f);
        if (rank == 0) unlink(tmp);
        rc = rank == 0 ? err_set("%s: cannot write checkpoint: %s", path, why)
                       : err_set("%s: cannot write checkpoint (see rank 0)", path);
        goto done;
    }
    if (any_failed(x->comm, H5Fclose(f) < 0)) {
        if (rank == 0) unlink(tmp);
        rc = err_set("%s: cannot write checkpoint: closing failed", path);
        goto done;
    }

    // publish: the file, then latest, then prune (rank 0; the others learn the outcome)
    if (rank == 0) {
        char *latest = fs_join(dir, "latest"), line[80];
        snprintf(line, sizeof(line), "%s\n", name);
        rc = fs_publish(tmp, path);
        if (rc == 0) rc = fs_write_atomic(latest, line, strlen(line));
        if (rc == 0) prune(dir, name, keep < 1 ? 1 : keep);
        free(latest);
    }
    MPI_Bcast(&rc, 1, MPI_INT, 0, x->comm);
    if (rc && rank != 0) err_set("checkpoint %s could not be published (see rank 0)", path);
done:
    stderr_release(&held);
    free(dir);
    free(path);
    free(tmp);
    return rc ? -1 : 0;
}

int ckpt_candidates(const char *run_dir, char ***paths, char *note, size_t nnote) {
    char *dir = fs_join(run_dir, "ckpt"), *latest = fs_join(dir, "latest");
    char **names;
    int n = list_steps(dir, &names);
    note[0] = '\0';
    char name[256] = "";
    FILE *f = fopen(latest, "r");
    int have_latest = f != NULL;
    if (f) {
        if (!fgets(name, sizeof(name), f)) name[0] = '\0';
        fclose(f);
        name[strcspn(name, "\r\n")] = '\0';
    }
    int named = -1;
    for (int i = 0; i < n; i++)
        if (!strcmp(names[i], name)) named = i;
    if (n > 0 && named < 0) {
        char shown[64];
        snprintf(shown, sizeof(shown), "%s", name);
        for (char *p = shown; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
        if (!have_latest) snprintf(note, nnote, "%s is missing", latest);
        else if (!is_step_name(name)) snprintf(note, nnote, "%s does not name a checkpoint file ('%s')", latest, shown);
        else snprintf(note, nnote, "%s names %s, which does not exist", latest, shown);
    }
    // the one latest names first (it is the newest a finished save published), then the others newest first
    char **out = xmalloc(sizeof(char *) * (size_t)(n ? n : 1));
    int k = 0;
    if (named >= 0) out[k++] = fs_join(dir, names[named]);
    for (int i = 0; i < n; i++)
        if (i != named) out[k++] = fs_join(dir, names[i]);
    free_names(names, n);
    free(dir);
    free(latest);
    *paths = out;
    return k;
}

void ckpt_candidates_free(char **paths, int n) { free_names(paths, n); }

int ckpt_latest(const char *run_dir, char **out) {
    char **paths, note[1024];
    int k = ckpt_candidates(run_dir, &paths, note, sizeof(note));
    *out = k > 0 ? strdup(paths[0]) : NULL;
    CHECK(k == 0 || *out);
    ckpt_candidates_free(paths, k);
    return k > 0;
}

static int read_meta_open(hid_t f, const char *path, struct ckpt_meta *meta, int *version_out) {
    memset(meta, 0, sizeof(*meta));
    char *fmt = attr_read_str(f, path, "format");
    if (!fmt) return -1;
    int bad = strcmp(fmt, CKPT_FORMAT) != 0;
    free(fmt);
    if (bad) return err_set("%s: not a llamac checkpoint (format attribute differs)", path);
    int version = 0;
    if (attr_read(f, path, "version", H5T_NATIVE_INT, &version) != 0) return -1;
    if (version != CKPT_VERSION && version != 1)
        return err_set("%s: checkpoint version %d, this llamac reads versions 1 and %d", path, version, CKPT_VERSION);
    *version_out = version;
    if (attr_read(f, path, "step", H5T_NATIVE_INT64, &meta->step) || attr_read(f, path, "tokens_seen", H5T_NATIVE_INT64, &meta->tokens_seen) ||
        attr_read(f, path, "rng_state", H5T_NATIVE_UINT64, &meta->rng_state) ||
        attr_read(f, path, "saved_dp", H5T_NATIVE_INT, &meta->saved_dp) ||
        attr_read(f, path, "saved_tp", H5T_NATIVE_INT, &meta->saved_tp) ||
        attr_read(f, path, "saved_zero1", H5T_NATIVE_INT, &meta->saved_zero1))
        return -1;
    if (H5Aexists(f, "loader_state") <= 0) return err_set("%s: attribute 'loader_state' missing", path);
    hid_t a = H5Aopen(f, "loader_state", H5P_DEFAULT);
    hid_t sp = a < 0 ? -1 : H5Aget_space(a);
    hssize_t n = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    if (sp >= 0) H5Sclose(sp);
    if (n < 0 || n > CKPT_LOADER_STATE_MAX) {
        if (a >= 0) H5Aclose(a);
        return err_set("%s: loader_state has %lld bytes (at most %d)", path, (long long)n, CKPT_LOADER_STATE_MAX);
    }
    herr_t r = H5Aread(a, H5T_NATIVE_UINT8, meta->loader_state);
    H5Aclose(a);
    if (r < 0) return err_set("%s: cannot read attribute 'loader_state' (damaged checkpoint)", path);
    meta->loader_state_size = (int)n;
    meta->model_ini = attr_read_str(f, path, "model_config");
    meta->run_ini = meta->model_ini ? attr_read_str(f, path, "run_config") : NULL;
    if (!meta->model_ini || !meta->run_ini) return -1;
    if (version >= 2) {
        char want[65], *got = attr_read_str(f, path, "meta_sha256");
        if (!got) return -1;
        meta_digest(meta, version, want);
        int same = !strcmp(want, got);
        free(got);
        if (!same) return err_set("%s: damaged checkpoint: its attributes do not match their checksum", path);
    }
    return 0;
}

int ckpt_read_meta(const struct ckpt_ctx *x, const char *path, struct ckpt_meta *meta) {
    char why[512];
    memset(meta, 0, sizeof(*meta));
    hid_t f = open_file(x->comm, path, 0, why, sizeof(why));
    if (f < 0) return err_set("%s: cannot open as an HDF5 checkpoint (%s)", path, why);
    int version = 0;
    int rc = read_meta_open(f, path, meta, &version);
    H5Fclose(f);
    if (rc != 0) ckpt_meta_free(meta);
    return rc;
}

int ckpt_load(const struct ckpt_ctx *x, const char *path, struct llama *m, const struct ckpt_state *mom) {
    char why[512];
    hid_t f = open_file(x->comm, path, 0, why, sizeof(why));
    if (any_failed(x->comm, f < 0)) {
        if (f >= 0) H5Fclose(f);
        return err_set("%s: cannot open as an HDF5 checkpoint (%s)", path, f < 0 ? why : "failed on another rank");
    }
    int version = 0;
    if (H5Aexists(f, "version") > 0) attr_read(f, path, "version", H5T_NATIVE_INT, &version);
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
    for (int g = 0; g < nm && !any_failed(x->comm, rc != 0); g++)
        for (int i = 0; i < pl->n && !any_failed(x->comm, rc != 0); i++) {
            const struct param_tensor *t = &pl->t[i];
            char dsname[256];
            snprintf(dsname, sizeof(dsname), "%s/%s", groups[g], t->name);
            if (H5Lexists(f, groups[g], H5P_DEFAULT) <= 0 || H5Lexists(f, dsname, H5P_DEFAULT) <= 0) {
                rc = err_set("%s: tensor %s is missing", path, dsname);
                continue;
            }
            hid_t ds = H5Dopen2(f, dsname, H5P_DEFAULT);
            hid_t fs = ds < 0 ? -1 : H5Dget_space(ds);
            hid_t ty = ds < 0 ? -1 : H5Dget_type(ds);
            hsize_t dims[2] = {0, 0};
            int nd = fs < 0 || H5Sget_simple_extent_ndims(fs) > 2 ? -1 : H5Sget_simple_extent_dims(fs, dims, NULL);
            int is_float = ty >= 0 && H5Tget_class(ty) == H5T_FLOAT;
            if (fs >= 0) H5Sclose(fs);
            if (ty >= 0) H5Tclose(ty);
            int want_nd = tensor_is_vector(t) ? 1 : 2;
            hsize_t want0 = tensor_is_vector(t) ? (hsize_t)t->full_cols : (hsize_t)t->full_rows;
            if (ds < 0 || !is_float || nd != want_nd || dims[0] != want0 || (nd == 2 && dims[1] != (hsize_t)t->full_cols)) {
                if (ds >= 0) H5Dclose(ds);
                rc = err_set("%s: tensor %s has the wrong shape or type for this model", path, dsname);
                // every rank still takes part in the collective reads of the other tensors: skip to the check
                continue;
            }
            size_t a = 0, b = t->numel;
            float *dst = host + t->offset;
            int counts = x->dp_rank == 0 && (t->split_dim != -1 || x->tp_rank == 0);  // as the writer's ranks
            if (g > 0) {
                size_t lo = mom->offset > t->offset ? mom->offset - t->offset : 0;
                size_t hi = mom->offset + mom->n < t->offset + t->numel ? mom->offset + mom->n - t->offset : t->numel;
                if (mom->offset + mom->n <= t->offset || mom->offset >= t->offset + t->numel) lo = hi = 0;
                a = lo, b = hi;
                dst = (g == 1 ? hm : hv) + (ptrdiff_t)t->offset - (ptrdiff_t)mom->offset;
                counts = mom->writer && (t->split_dim != -1 || x->tp_rank == 0);
            }
            if (transfer_range(ds, t, dst, a, b, 0) != 0) rc = err_set("%s: reading %s failed (%s)", path, dsname, h5_cause(why, sizeof(why)));
            uint64_t sum = counts && a < b && rc == 0 ? range_checksum(t, dst, a, b) : 0, want = 0;
            MPI_Allreduce(MPI_IN_PLACE, &sum, 1, MPI_UINT64_T, MPI_SUM, x->comm);
            int has = version >= 2 && H5Aexists(ds, "checksum") > 0;
            if (version >= 2 && rc == 0 && (!has || attr_read(ds, path, "checksum", H5T_NATIVE_UINT64, &want) != 0 || want != sum))
                rc = err_set("%s: damaged checkpoint: tensor %s does not match its checksum", path, dsname);
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
