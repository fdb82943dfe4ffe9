// Stop requests from signals and from a wall-time limit; see signals.h for who sends what.
#include "launch/signals.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/timer.h"

static const int stop_signals[] = {SIGTERM, SIGUSR1, SIGINT};
#define N_STOP_SIGNALS (int)(sizeof(stop_signals) / sizeof(stop_signals[0]))

static volatile sig_atomic_t stop_sig;   // the first stop signal received, 0 when none
static volatile sig_atomic_t sigint_seen;
static struct sigaction old_actions[N_STOP_SIGNALS];
static int installed;
static struct stop_info last_info = {STOP_NONE, 0, -1, -1, 0.0, 0.0};

// Only async-signal-safe work here: set the flag; on a second SIGINT, die of SIGINT as without us.
static void on_stop_signal(int sig) {
    if (sig == SIGINT) {
        if (sigint_seen) {
            signal(SIGINT, SIG_DFL);
            raise(SIGINT);
            return;
        }
        sigint_seen = 1;
    }
    if (!stop_sig) stop_sig = sig;
}

void signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < N_STOP_SIGNALS; i++) sigaddset(&sa.sa_mask, stop_signals[i]);
    stop_clear();
    for (int i = 0; i < N_STOP_SIGNALS; i++)
        CHECK(sigaction(stop_signals[i], &sa, installed ? NULL : &old_actions[i]) == 0);
    installed = 1;
}

void signals_restore(void) {
    if (!installed) return;
    for (int i = 0; i < N_STOP_SIGNALS; i++) CHECK(sigaction(stop_signals[i], &old_actions[i], NULL) == 0);
    installed = 0;
}

int stop_requested_local(void) { return stop_sig; }

void stop_clear(void) {
    stop_sig = 0;
    sigint_seen = 0;
}

int stop_agreed(struct comm *world, double wall_limit_s, double start_time) {
    const double elapsed = time_now() - start_time;
    const int sig = stop_sig;
    const int wall = wall_limit_s > 0 && elapsed >= wall_limit_s;
    // One MAX reduction answers everything: the lowest rank with a signal travels as -rank.
    int64_t v[5] = {sig, wall, sig ? world->rank : -1, sig ? -(int64_t)world->rank : INT64_MIN,
                    (int64_t)(elapsed * 1000.0)};
    comm_all_reduce(world, v, 5, COMM_I64, COMM_MAX);
    last_info.reason = v[0] ? STOP_SIGNAL : v[1] ? STOP_WALL_TIME : STOP_NONE;
    last_info.signal = (int)v[0];
    last_info.rank_lo = v[0] ? (int)-v[3] : -1;
    last_info.rank_hi = v[0] ? (int)v[2] : -1;
    last_info.wall_limit_s = wall_limit_s;
    last_info.elapsed_s = (double)v[4] / 1000.0;
    return last_info.reason != STOP_NONE;
}

void stop_last(struct stop_info *out) { *out = last_info; }

const char *stop_signal_name(int sig) {
    static _Thread_local char buf[32];
    switch (sig) {
    case SIGTERM: return "SIGTERM";
    case SIGUSR1: return "SIGUSR1";
    case SIGINT: return "SIGINT";
    default: snprintf(buf, sizeof(buf), "signal %d", sig); return buf;
    }
}

void stop_describe(char *out, int n, const struct stop_info *info) {
    switch (info->reason) {
    case STOP_NONE:
        snprintf(out, (size_t)n, "no stop requested");
        return;
    case STOP_SIGNAL: {
        const char *name = stop_signal_name(info->signal);
        if (info->rank_lo == info->rank_hi) snprintf(out, (size_t)n, "%s received (rank %d)", name, info->rank_lo);
        else snprintf(out, (size_t)n, "%s received (ranks %d..%d)", name, info->rank_lo, info->rank_hi);
        return;
    }
    case STOP_WALL_TIME:
        snprintf(out, (size_t)n, "wall-time limit of %.0f s reached after %.0f s", info->wall_limit_s,
                 info->elapsed_s);
        return;
    }
}
