// Hardening of `llamac train` against what an HPC user meets (issue 10), on the real binary: a damaged
// checkpoint is refused by its checksum and the run falls back to the newest good one, a deleted `latest`
// resumes from the newest step file, every checkpoint damaged is an error (not a restart from step 0), and
// a second job on a locked run_dir is refused while a dead job's lock file does not block. Disk full and
// file size limits: tests/harden/disk_full.sh.
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "llamac_run.h"

#define TMP LLAMAC_TEST_TMP "/harden"
#define DATA LLAMAC_TEST_TMP "/train_data/data"
#define INI LLAMAC_TEST_SOURCE_DIR "/tests/configs/tiny_run.ini"

static void run_env(struct result *r, const char *env, const char *args) { llamac_run_in(r, TMP, env, args); }

static void run(struct result *r, const char *args) { run_env(r, "", args); }

static void train(struct result *r, const char *run_dir, const char *sets) {
    char args[4096];
    snprintf(args, sizeof(args), "train %s --set data.dir=%s --set run.run_dir=%s/%s --set train.eval_every=0 %s", INI, DATA,
             TMP, run_dir, sets);
    run(r, args);
}

static void rm_run(const char *run_dir) {
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "rm -rf %s/%s", TMP, run_dir);
    system(cmd);
}

static void expect_one_line_error(const struct result *r, const char *needle) {
    cr_expect_eq(r->status, 1, "exit 1 expected, got %d", r->status);
    cr_expect_eq(r->err_lines, 1, "exactly one line on stderr, got: %s", r->err);
    cr_expect(strstr(r->err, needle) != NULL, "stderr should mention '%s': %s", needle, r->err);
}

// Adds 1 to the lowest bit of element `index` of dataset `name` in the file (as `dd` would), found through
// HDF5's own record of where the contiguous data lies.
static void damage_tensor(const char *file, const char *name, long index) {
    hid_t f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(f >= 0, "%s", file);
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    cr_assert(ds >= 0, "%s in %s", name, file);
    haddr_t off = H5Dget_offset(ds);
    H5Dclose(ds);
    H5Fclose(f);
    cr_assert(off != HADDR_UNDEF);
    int fd = open(file, O_RDWR);
    unsigned char b;
    cr_assert(pread(fd, &b, 1, (off_t)off + 4 * index) == 1);
    b ^= 1;
    cr_assert(pwrite(fd, &b, 1, (off_t)off + 4 * index) == 1);
    close(fd);
}

// Replaces the first occurrence of `from` in the file's bytes by `to` (same length): an attribute's text.
static int patch_bytes(const char *file, const char *from, const char *to) {
    FILE *f = fopen(file, "r+b");
    if (!f) return 0;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    char *buf = malloc((size_t)n);
    fseek(f, 0, SEEK_SET);
    int ok = fread(buf, 1, (size_t)n, f) == (size_t)n;
    char *p = ok ? memmem(buf, (size_t)n, from, strlen(from)) : NULL;
    if (p) {
        fseek(f, p - buf, SEEK_SET);
        fwrite(to, 1, strlen(to), f);
    }
    fclose(f);
    free(buf);
    return p != NULL;
}

static void latest_of(const char *run_dir, char *out, size_t n) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s/ckpt/latest", TMP, run_dir);
    slurp(path, out, n);
    out[strcspn(out, "\n")] = '\0';
}

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

Test(harden, damaged_checkpoint_is_refused_and_the_run_falls_back_to_the_newest_good_one, .timeout = 300) {
    struct result r;
    rm_run("dmg");
    train(&r, "dmg", "--set train.steps=4 --set train.keep_ckpts=3");
    cr_assert_eq(r.status, 0, "%s", r.err);
    const char *s4 = TMP "/dmg/ckpt/step_0000004.h5";
    damage_tensor(s4, "/params/model.norm.weight", 5);

    // eval of the damaged file: one line naming the file and the tensor
    run(&r, "eval --ckpt " TMP "/dmg/ckpt/step_0000004.h5");
    expect_one_line_error(&r, "step_0000004.h5: damaged checkpoint: tensor params/model.norm.weight does not match its checksum");

    // resume: step 4 is reported, step 2 used, and the run reaches step 6
    train(&r, "dmg", "--set train.steps=6 --set train.keep_ckpts=3");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.err, "step_0000004.h5: damaged checkpoint") && strstr(r.err, "falling back"), "%s", r.err);
    cr_expect(strstr(r.out, "resumed from " TMP "/dmg/ckpt/step_0000002.h5: step 2") != NULL, "%s", r.out);
    cr_expect(strstr(r.out, "step 3/6") != NULL, "training went on from step 2: %s", r.out);
    char latest[64];
    latest_of("dmg", latest, sizeof(latest));
    cr_expect_str_eq(latest, "step_0000006.h5");
    run(&r, "eval --ckpt " TMP "/dmg/ckpt/step_0000004.h5");
    cr_expect_eq(r.status, 0, "step 4 was written again by the resumed run: %s", r.err);

    // a moment tensor and an attribute (the run config's text) are covered too
    damage_tensor(TMP "/dmg/ckpt/step_0000006.h5", "/adam_v/model.layers.1.mlp.down_proj.weight", 100);
    cr_assert(patch_bytes(TMP "/dmg/ckpt/step_0000004.h5", "seed = 7", "seed = 9"), "run_config text found");
    train(&r, "dmg", "--set train.steps=8 --set train.keep_ckpts=3");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.err, "tensor adam_v/model.layers.1.mlp.down_proj.weight does not match its checksum") != NULL, "%s", r.err);
    cr_expect(strstr(r.err, "step_0000004.h5: damaged checkpoint: its attributes do not match their checksum") != NULL, "%s", r.err);
    cr_expect(strstr(r.out, "resumed from " TMP "/dmg/ckpt/step_0000002.h5: step 2") != NULL, "%s", r.out);
}

Test(harden, every_checkpoint_damaged_is_an_error_not_a_restart_from_step_0, .timeout = 300) {
    struct result r;
    rm_run("alldmg");
    train(&r, "alldmg", "--set train.steps=4");
    cr_assert_eq(r.status, 0, "%s", r.err);
    damage_tensor(TMP "/alldmg/ckpt/step_0000004.h5", "/params/model.embed_tokens.weight", 7);
    damage_tensor(TMP "/alldmg/ckpt/step_0000002.h5", "/adam_m/model.norm.weight", 0);
    train(&r, "alldmg", "--set train.steps=6");
    cr_expect_eq(r.status, 1, "%s", r.err);
    cr_expect(strstr(r.err, "llamac train: " TMP "/alldmg/ckpt: none of its 2 checkpoints is usable") != NULL, "%s", r.err);
    cr_expect(strstr(r.out, "step 1/6") == NULL, "no training from step 0: %s", r.out);
    cr_expect(exists(TMP "/alldmg/ckpt/step_0000004.h5") && exists(TMP "/alldmg/ckpt/step_0000002.h5"),
              "nothing deleted");
}

Test(harden, deleted_latest_resumes_from_the_newest_step_file_and_prune_keeps_it, .timeout = 300) {
    struct result r;
    rm_run("nolatest");
    train(&r, "nolatest", "--set train.steps=8 --set train.keep_ckpts=3");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(exists(TMP "/nolatest/ckpt/step_0000004.h5") && exists(TMP "/nolatest/ckpt/step_0000006.h5") &&
              exists(TMP "/nolatest/ckpt/step_0000008.h5"));
    unlink(TMP "/nolatest/ckpt/latest");
    train(&r, "nolatest", "--set train.steps=10 --set train.keep_ckpts=3");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.err, "ckpt/latest is missing; trying the newest checkpoint, " TMP "/nolatest/ckpt/step_0000008.h5"),
              "%s", r.err);
    cr_expect(strstr(r.out, "resumed from " TMP "/nolatest/ckpt/step_0000008.h5: step 8") != NULL, "%s", r.out);
    char latest[64];
    latest_of("nolatest", latest, sizeof(latest));
    cr_expect_str_eq(latest, "step_0000010.h5");
    cr_expect(exists(TMP "/nolatest/ckpt/step_0000010.h5"), "what latest names exists");
    cr_expect(!exists(TMP "/nolatest/ckpt/step_0000004.h5") && exists(TMP "/nolatest/ckpt/step_0000006.h5") &&
                  exists(TMP "/nolatest/ckpt/step_0000008.h5"),
              "the newest keep_ckpts = 3 are kept, the oldest pruned");

    // latest naming a file that is gone: the same fallback, saying so
    unlink(TMP "/nolatest/ckpt/step_0000010.h5");
    train(&r, "nolatest", "--set train.steps=10 --set train.keep_ckpts=3");
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.err, "names step_0000010.h5, which does not exist") != NULL, "%s", r.err);
    cr_expect(strstr(r.out, "resumed from " TMP "/nolatest/ckpt/step_0000008.h5") != NULL, "%s", r.out);
}

Test(harden, second_job_on_a_run_dir_is_refused_and_a_dead_jobs_lock_does_not_block, .timeout = 300) {
    struct result r;
    rm_run("locked");
    mkdir(TMP "/locked", 0755);
    // this test process is "the first job": it holds the lock as llamac does
    int fd = open(TMP "/locked/lock", O_RDWR | O_CREAT, 0644);
    cr_assert(fd >= 0);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    cr_assert_eq(fcntl(fd, F_OFD_SETLK, &fl), 0);
    char text[64];
    int n = snprintf(text, sizeof(text), "host testhost, pid %ld\n", (long)getpid());
    cr_assert_eq(pwrite(fd, text, (size_t)n, 0), n);
    train(&r, "locked", "--set train.steps=2");
    char want[160];
    snprintf(want, sizeof(want), "/locked/lock: the run directory is in use by another job (host testhost, pid %ld)",
             (long)getpid());
    expect_one_line_error(&r, want);
    cr_expect(!exists(TMP "/locked/metrics.jsonl") && !exists(TMP "/locked/ckpt"), "the second job wrote nothing");
    close(fd);  // the first job ends; its lock file stays, naming a dead process
    train(&r, "locked", "--set train.steps=2");
    cr_expect_eq(r.status, 0, "a stale lock file does not block: %s", r.err);
    char lock[256];
    slurp(TMP "/locked/lock", lock, sizeof(lock));
    cr_expect(strstr(lock, "host ") && strstr(lock, ", pid "), "the lock names host and pid: %s", lock);
}

Test(harden, run_dir_of_300_characters_trains_resumes_and_evaluates, .timeout = 300) {
    // Open MPI's OMPIO lockedfile component aborted on names over ~220 characters (cli/main.c avoids it)
    char dir[400], args[2048];
    int n = snprintf(dir, sizeof(dir), "%s/long", TMP);
    while (n < 300) n += snprintf(dir + n, sizeof(dir) - (size_t)n, "/%.40s", "directory-name-of-forty-characters-xxxxx");
    cr_assert_geq(strlen(dir), 300);
    rm_run("long");
    snprintf(args, sizeof(args), "train %s --set data.dir=%s --set run.run_dir=%s --set train.eval_every=0 --set train.steps=2",
             INI, DATA, dir);
    struct result r;
    run(&r, args);
    cr_assert_eq(r.status, 0, "%s", r.err);
    // the run config stored in the checkpoint has a 300-character line: it must parse when read back
    snprintf(args, sizeof(args), "train %s --set data.dir=%s --set run.run_dir=%s --set train.eval_every=0 --set train.steps=4",
             INI, DATA, dir);
    run(&r, args);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.out, "resumed from") != NULL, "%s", r.out);
    snprintf(args, sizeof(args), "eval --ckpt %s/ckpt/step_0000004.h5", dir);
    run(&r, args);
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.out, "step 4: val loss") != NULL, "%s", r.out);
}

Test(harden, long_ini_lines_parse_and_an_over_long_path_names_the_limit, .timeout = 120) {
    char ini[] = TMP "/long_line.ini", big[1300];
    mkdir(TMP, 0755);
    FILE *f = fopen(ini, "w");
    cr_assert(f);
    // a 260-byte run_dir line (inih stopped at 200) and a comment after it
    fprintf(f, "[model]\npreset = tiny-1m\nvocab_size = 512\n[run]\nrun_dir = %s/%0240d ; where it goes\n[data]\ndir = %s\n"
               "[train]\nsteps = 1\neval_every = 0\nbatch_size = 2\nseq_len = 16\n", TMP, 0, DATA);
    fclose(f);
    struct result r;
    char args[2048];
    snprintf(args, sizeof(args), "train %s", ini);
    run(&r, args);
    cr_expect_eq(r.status, 0, "%s", r.err);
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    snprintf(args, sizeof(args), "train %s --set run.run_dir=/tmp/%s", ini, big);
    run(&r, args);
    expect_one_line_error(&r, "run.run_dir is a path of 1304 bytes; llamac takes at most 1023");
}

// Each out-of-range value is one line naming the key, the value and the range, before anything trains.
Test(harden, out_of_range_config_values_are_refused_by_name, .timeout = 300) {
    static const char *cases[][2] = {
        {"train.batch_size=4294967297", "train.batch_size = 4294967297 is out of range (1 to 65536)"},
        {"model.max_seq_len=2147483647", "model.max_seq_len = 2147483647 is out of range (1 to 1048576)"},
        {"model.vocab_size=2147483647", "model.vocab_size = 2147483647 is out of range (1 to 16777216)"},
        {"model.multiple_of=2147483647", "model.multiple_of = 2147483647 is out of range (1 to 65536)"},
        {"model.dim=-64", "model.dim = -64 is out of range (1 to 65536)"},
        {"run.seed=-1", "run.seed = -1 is out of range (0 to 9223372036854775807)"},
        {"train.global_batch_tokens=1e12", "train.global_batch_tokens = 1e12 is out of range (1 to 2147483648)"},
        {"train.keep_ckpts=0", "train.keep_ckpts = 0 is out of range (1 to 1048576)"},
        {"parallel.bucket_mb=-1", "parallel.bucket_mb = -1 is out of range"},
        {"model.ffn_dim_multiplier=1e30", "model.ffn_dim_multiplier = 1e30 is out of range (0 to 64)"},
        {"train.steps=99999999999999999999", "train.steps = '99999999999999999999' is not an integer"},
        {"optim.lr=\x01\x1b[31m", "optim.lr = '??[31m' is not a number"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct result r;
        char sets[256];
        snprintf(sets, sizeof(sets), "--set '%s'", cases[i][0]);
        rm_run("range");
        train(&r, "range", sets);
        expect_one_line_error(&r, cases[i][1]);
        cr_expect(!exists(TMP "/range/ckpt"), "%s: nothing trained", cases[i][0]);
    }
}

Test(harden, another_seed_on_resume_is_refused, .timeout = 120) {
    struct result r;
    rm_run("seed");
    train(&r, "seed", "--set train.steps=2");
    cr_assert_eq(r.status, 0, "%s", r.err);
    train(&r, "seed", "--set train.steps=4 --set run.seed=8");
    expect_one_line_error(&r, "step_0000002.h5: run.seed = 8 differs from the checkpoint's 7");
}

// A shard whose bytes differ from what manifest.json records is refused before libhdf5 parses it (a
// one-byte change in a shard's attribute made libhdf5 1.10.8 read past a heap buffer).
Test(harden, damaged_shard_is_refused_before_hdf5_parses_it, .timeout = 120) {
    struct result r;
    rm_run("dmgdata");
    rm_run("dmgshard");
    system("cp -r " DATA " " TMP "/dmgdata");
    // one byte of the format attribute of the first English shard
    cr_assert(patch_bytes(TMP "/dmgdata/shards/en_00000.h5", "llamac-shard", "llamac-shbrd"), "format attribute found");
    char args[1024];
    snprintf(args, sizeof(args), "train %s --set data.dir=%s/dmgdata --set run.run_dir=%s/dmgshard --set train.steps=2", INI, TMP, TMP);
    run(&r, args);
    expect_one_line_error(&r, "dmgdata/shards/en_00000.h5: sha256 ");
    cr_expect(strstr(r.err, "differs from the") && strstr(r.err, "that manifest.json records (a damaged or replaced shard)"),
              "%s", r.err);
}

// OpenBLAS's generic kernels on a CPU with AVX2 (as Debian's 0.3.21 picks on CPUs newer than it knows,
// 5x slower): llamac re-executes itself with OPENBLAS_CORETYPE and the run header says so. The choice is
// simulated (LLAMAC_BLAS_TEST_CORENAME); the core after the re-exec is what OpenBLAS itself reports.
Test(harden, generic_openblas_core_is_replaced_and_the_header_says_so, .timeout = 120) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) cr_skip_test("this CPU has no AVX2+FMA");
    const char *want = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                               __builtin_cpu_supports("avx512vl") ? "SkylakeX" : "Haswell";
    struct result r;
    char args[2048], line[256];
    rm_run("blas");
    snprintf(args, sizeof(args), "train %s --set data.dir=%s --set run.run_dir=%s/blas --set train.eval_every=0 --set train.steps=2",
             INI, DATA, TMP);
    run_env(&r, "LLAMAC_BLAS_TEST_CORENAME=Prescott", args);
    cr_assert_eq(r.status, 0, "%s", r.err);
    snprintf(line, sizeof(line), "OpenBLAS core %s (selected by llamac: OpenBLAS chose Prescott on this CPU)", want);
    cr_expect(strstr(r.out, line) != NULL, "%s", r.out);
    rm_run("blas");
    run_env(&r, "LLAMAC_BLAS_TEST_CORENAME=Prescott OPENBLAS_CORETYPE=Prescott", args);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.out, "OpenBLAS core Prescott: generic kernels, slow") != NULL, "a user's choice stands, with a word: %s", r.out);
}

// A checkpoint whose model has a max_seq_len below its run's train.seq_len (an older llamac's version-1
// file, without checksums, whose model_config says 16 while its run trained on 32): `eval` runs the run's
// windows, so it must refuse in one line, not abort on a CHECK inside attention (it used to).
Test(harden, eval_of_a_checkpoint_whose_max_seq_len_is_below_its_seq_len_is_one_line, .timeout = 120) {
    struct result r;
    rm_run("msl");
    train(&r, "msl", "--set train.steps=2");
    cr_assert_eq(r.status, 0, "%s", r.err);
    const char *file = TMP "/msl/ckpt/step_0000002.h5";
    cr_assert(patch_bytes(file, "\nmax_seq_len = 64\n", "\nmax_seq_len = 16\n"), "max_seq_len found");
    hid_t f = H5Fopen(file, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert(f >= 0);
    int version = 1;  // version 1: no meta_sha256 and no tensor checksums to contradict the change
    hid_t a = H5Aopen(f, "version", H5P_DEFAULT);
    cr_assert(a >= 0 && H5Awrite(a, H5T_NATIVE_INT, &version) >= 0);
    H5Aclose(a);
    cr_assert(H5Adelete(f, "meta_sha256") >= 0);
    // the patch landed in the model's config, not in the run's
    a = H5Aopen(f, "model_config", H5P_DEFAULT);
    hid_t t = H5Aget_type(a);
    size_t n = H5Tget_size(t);
    char *text = calloc(n + 1, 1);
    cr_assert(H5Aread(a, t, text) >= 0);
    cr_assert(strstr(text, "\nmax_seq_len = 16\n") != NULL, "%s", text);
    free(text);
    H5Tclose(t);
    H5Aclose(a);
    H5Fclose(f);
    char args[1024];
    snprintf(args, sizeof(args), "eval --ckpt %s --data %s", file, DATA);
    run(&r, args);
    expect_one_line_error(&r, "train.seq_len 32 of its run config exceeds its model's max_seq_len 16");
}
