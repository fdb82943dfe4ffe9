// Stop requests (launch/signals.c) in one process: signals set the flag, the first one is kept, a
// second Ctrl-C kills, the previous handlers come back, and stop_agreed over comm_self() answers from
// the flag and the wall-time limit. The multi-rank agreement runs under mpirun in tests/mpi (mpi_stop
// through test_scripts.sh). Criterion runs each test in its own process, so raising signals is safe.
#include <criterion/criterion.h>
#include <signal.h>
#include <string.h>

#include "core/timer.h"
#include "launch/signals.h"

Test(signals, sigusr1_sets_the_flag) {
    signals_install();
    cr_expect_eq(stop_requested_local(), 0);
    raise(SIGUSR1);
    cr_expect_eq(stop_requested_local(), SIGUSR1, "flag %d after SIGUSR1", stop_requested_local());
}

Test(signals, sigterm_sets_the_flag) {
    signals_install();
    raise(SIGTERM);
    cr_expect_eq(stop_requested_local(), SIGTERM);
}

Test(signals, one_sigint_is_a_graceful_stop) {
    signals_install();
    raise(SIGINT);
    cr_expect_eq(stop_requested_local(), SIGINT);  // and the process is still alive
}

Test(signals, a_second_sigint_kills, .signal = SIGINT) {
    signals_install();
    raise(SIGINT);
    raise(SIGINT);
    cr_assert_fail("still alive after two SIGINTs");
}

Test(signals, the_first_signal_is_kept_and_clear_forgets_it) {
    signals_install();
    raise(SIGUSR1);
    raise(SIGTERM);
    cr_expect_eq(stop_requested_local(), SIGUSR1);
    stop_clear();
    cr_expect_eq(stop_requested_local(), 0);
    raise(SIGTERM);
    cr_expect_eq(stop_requested_local(), SIGTERM);
}

static volatile sig_atomic_t previous_handler_calls;
static void previous_handler(int sig) { previous_handler_calls++; }

Test(signals, restore_puts_the_previous_handler_back) {
    signal(SIGUSR1, previous_handler);
    signals_install();
    struct sigaction sa;
    sigaction(SIGTERM, NULL, &sa);
    cr_expect(sa.sa_flags & SA_RESTART, "handlers must restart interrupted system calls");
    raise(SIGUSR1);
    cr_expect_eq(previous_handler_calls, 0);
    signals_restore();
    stop_clear();
    raise(SIGUSR1);
    cr_expect_eq(previous_handler_calls, 1, "the previous SIGUSR1 handler did not come back");
    cr_expect_eq(stop_requested_local(), 0);
}

Test(signals, stop_agreed_on_one_rank) {
    signals_install();
    struct stop_info info;
    char line[128];
    const double now = time_now();

    cr_expect_eq(stop_agreed(comm_self(), 0, now - 1e6), 0, "no limit (<= 0) and no signal: keep going");
    cr_expect_eq(stop_agreed(comm_self(), 3600, now), 0, "limit far away");
    stop_last(&info);
    cr_expect_eq(info.reason, STOP_NONE);
    stop_describe(line, sizeof(line), &info);
    cr_expect_str_eq(line, "no stop requested");

    cr_expect_eq(stop_agreed(comm_self(), 10, now - 11), 1, "wall-time limit passed");
    stop_last(&info);
    cr_expect_eq(info.reason, STOP_WALL_TIME);
    cr_expect(info.elapsed_s >= 11 && info.elapsed_s < 12, "elapsed %g", info.elapsed_s);
    stop_describe(line, sizeof(line), &info);
    cr_expect(strstr(line, "wall-time limit of 10 s reached after 11 s") != NULL, "%s", line);

    raise(SIGUSR1);
    cr_expect_eq(stop_agreed(comm_self(), 10, now - 11), 1);
    stop_last(&info);
    cr_expect_eq(info.reason, STOP_SIGNAL, "a signal wins over the wall time in the report");
    cr_expect_eq(info.signal, SIGUSR1);
    cr_expect(info.rank_lo == 0 && info.rank_hi == 0);
    stop_describe(line, sizeof(line), &info);
    cr_expect_str_eq(line, "SIGUSR1 received (rank 0)");
    cr_expect_eq(stop_agreed(comm_self(), 0, now), 1, "the flag stays set until stop_clear");
}

Test(signals, names) {
    cr_expect_str_eq(stop_signal_name(SIGUSR1), "SIGUSR1");
    cr_expect_str_eq(stop_signal_name(SIGTERM), "SIGTERM");
    cr_expect_str_eq(stop_signal_name(SIGINT), "SIGINT");
    cr_expect_str_eq(stop_signal_name(SIGHUP), "signal 1");
}
