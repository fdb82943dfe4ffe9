// A stand-in for `llamac train` that keeps the batch scripts' contract (launch/slurm.sbatch), used by
// tests/mpi/test_scripts.sh to run the scripts end to end under a real mpirun:
//
//   mpi_stop train RUN.ini [--set run.run_dir=DIR]
//                               (RUN.ini: [run] run_dir, [train] steps, step_ms, wall_limit_s, fail)
//
// Every rank installs the stop handlers, then rank 0 creates RUN_DIR/RUNNING (the test signals only
// after that). Each step sleeps step_ms and asks stop_agreed(); on a stop each rank writes
// RUN_DIR/stop.RANK with the step it stopped after (they must all agree) and the signal it got itself and rank 0 writes the resume
// point, RUN_DIR/STOPPED and the reason, exit 0. A run that reaches `steps` writes RUN_DIR/DONE.
// fail = 1 makes rank 0 exit 3 at once (a crash: the scripts must not requeue). A run resumes from
// RUN_DIR/progress, as the trainer resumes from its latest checkpoint.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/timer.h"
#include "launch/grid.h"
#include "launch/signals.h"

static char run_dir[512];
static long steps = 100, step_ms = 50, fail;
static double wall_limit_s;

static int read_ini(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return err_set("%s: cannot open", path);
    char line[1024], key[64], val[512];
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, " %63[a-z_] = %511s", key, val) == 2) {
            if (!strcmp(key, "run_dir")) snprintf(run_dir, sizeof(run_dir), "%s", val);
            else if (!strcmp(key, "steps")) steps = atol(val);
            else if (!strcmp(key, "step_ms")) step_ms = atol(val);
            else if (!strcmp(key, "wall_limit_s")) wall_limit_s = atof(val);
            else if (!strcmp(key, "fail")) fail = atol(val);
        }
    fclose(f);
    return run_dir[0] ? 0 : err_set("%s: no run_dir", path);
}

static void write_file(const char *name, const char *fmt, long v, long w) {
    char path[700];
    snprintf(path, sizeof(path), "%s/%s", run_dir, name);
    FILE *f = fopen(path, "w");
    CHECKF(f, "cannot write %s", path);
    fprintf(f, fmt, v, w);
    fclose(f);
}

int main(int argc, char **argv) {
    const double t0 = time_now();
    struct grid g;
    if (grid_init(&g, &argc, &argv, 1) != 0) {
        grid_finalize(&g);
        return 2;
    }
    int ok = argc >= 3 && !strcmp(argv[1], "train") && read_ini(argv[2]) == 0;
    for (int i = 3; ok && i < argc; i++)  // --set run.run_dir=X, the one override the scripts read
        if (!strcmp(argv[i], "--set") && i + 1 < argc && !strncmp(argv[i + 1], "run.run_dir=", 12))
            snprintf(run_dir, sizeof(run_dir), "%s", argv[++i] + 12);
        else
            ok = !err_set("unexpected argument %s", argv[i]);
    if (!ok) {
        if (g.world_rank == 0) fprintf(stderr, "mpi_stop: usage: mpi_stop train RUN.ini [--set run.run_dir=DIR] (%s)\n", err_msg());
        grid_finalize(&g);
        return 2;
    }
    if (fail && g.world_rank == 0) {
        fprintf(stderr, "mpi_stop: failing on purpose\n");
        return 3;  // rank 0 dies; mpirun ends the others
    }
    signals_install();
    long step = 0;
    char path[700];
    snprintf(path, sizeof(path), "%s/progress", run_dir);
    FILE *f = g.world_rank == 0 ? fopen(path, "r") : NULL;
    if (f) {
        if (fscanf(f, "%ld", &step) != 1) step = 0;
        fclose(f);
    }
    int64_t s64 = step;
    comm_broadcast(g.world, &s64, 1, COMM_I64, 0);
    step = (long)s64;
    comm_barrier(g.world);
    if (g.world_rank == 0) write_file("RUNNING", "%ld\n", step, 0);

    for (; step < steps; step++) {
        usleep((useconds_t)step_ms * 1000);
        if (stop_agreed(g.world, wall_limit_s, t0)) {
            char why[128], name[32];
            struct stop_info info;
            stop_last(&info);
            stop_describe(why, sizeof(why), &info);
            snprintf(name, sizeof(name), "stop.%d", g.world_rank);
            write_file(name, "%ld %ld\n", step + 1, stop_requested_local());
            if (g.world_rank == 0) {
                printf("mpi_stop: stopping after step %ld: %s\n", step + 1, why);
                write_file("progress", "%ld\n", step + 1, 0);
                write_file("STOPPED", "%ld\n", step + 1, 0);
            }
            grid_finalize(&g);
            return 0;
        }
    }
    if (g.world_rank == 0) {
        printf("mpi_stop: finished %ld steps\n", steps);
        write_file("progress", "%ld\n", steps, 0);
        write_file("DONE", "%ld\n", steps, 0);
    }
    grid_finalize(&g);
    return 0;
}
