/*
 * bench-eventloop: shardvm's AioContext against libuv, libevent and glib.
 *
 *   bench-eventloop [--quick | --smoke] [--rounds N] [--impl a,b,...]
 *                   [--workload NAME] [--poll-max-ns NS] [--plot FILE.png]
 *
 * Every round runs every workload once per implementation, the order of
 * the implementations rotating from round to round; the figure reported
 * for a metric is the median over rounds, with the spread (min..max).
 * Output: a table, one "BENCH suite=eventloop metric=M impl=I value=V
 * unit=U" line per figure, the targets, and optionally a PNG chart.
 * --smoke runs tiny sizes once and checks that every implementation gave
 * every metric it supports in well-formed BENCH lines (exit status 1 if
 * not); it is what `meson test --suite bench` runs.
 */
#include "bench-ops.h"
#include "report.h"

#include <event2/thread.h>
#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

const BenchMetric bench_metrics[BENCH_N_METRICS] = {
    [M_XTHREAD] = { "xthread_wakeups_per_s", "wakeups/s", true },
    [M_PP_MEDIAN] = { "pingpong_median_ns", "ns", false },
    [M_PP_P99] = { "pingpong_p99_ns", "ns", false },
    [M_DEFERRED] = { "deferred_per_s", "callbacks/s", true },
    [M_TIMERS] = { "timers_per_s", "timers/s", true },
    [M_FDS_1] = { "dispatch_ns_fds_1", "ns", false },
    [M_FDS_10] = { "dispatch_ns_fds_10", "ns", false },
    [M_FDS_100] = { "dispatch_ns_fds_100", "ns", false },
    [M_FDS_1000] = { "dispatch_ns_fds_1000", "ns", false },
    [M_POOL_RT] = { "pool_roundtrip_median_ns", "ns", false },
    [M_POOL_TP] = { "pool_jobs_per_s", "jobs/s", true },
    [M_IOT_WAKE] = { "iothread_wakeup_median_ns", "ns", false },
};

static const BenchLoopOps *const all_impls[] = {
    &bench_shardvm_ops,
    &bench_libuv_ops,
    &bench_libevent_ops,
    &bench_glib_ops,
};

static const BenchParams params_full = {
    .xthread_n = 200000, .xthread_window = 1024,
    .pingpong_n = 5000, .pingpong_warm = 200,
    .deferred_n = 1000000,
    .timers_k = 1000, .timers_rounds = 100, .timers_spread_ns = 20000,
    .dispatch_iters = 10000,
    .pool_workers = 4, .pool_rt_n = 2000, .pool_tp_n = 100000,
    .pool_inflight = 64,
    .iot_n = 500, .iot_gap_us = 200,
};

static const BenchParams params_quick = {
    .xthread_n = 20000, .xthread_window = 1024,
    .pingpong_n = 1000, .pingpong_warm = 100,
    .deferred_n = 100000,
    .timers_k = 1000, .timers_rounds = 10, .timers_spread_ns = 20000,
    .dispatch_iters = 2000,
    .pool_workers = 4, .pool_rt_n = 300, .pool_tp_n = 10000,
    .pool_inflight = 64,
    .iot_n = 100, .iot_gap_us = 200,
};

static const BenchParams params_smoke = {
    .xthread_n = 2000, .xthread_window = 64,
    .pingpong_n = 50, .pingpong_warm = 5,
    .deferred_n = 1000,
    .timers_k = 100, .timers_rounds = 2, .timers_spread_ns = 20000,
    .dispatch_iters = 100,
    .pool_workers = 2, .pool_rt_n = 20, .pool_tp_n = 200,
    .pool_inflight = 8,
    .iot_n = 10, .iot_gap_us = 100,
};

static bool metric_supported(const BenchLoopOps *ops, int m)
{
    switch (m) {
    case M_POOL_RT:
    case M_POOL_TP:
        return ops->pool_new != NULL;
    case M_IOT_WAKE:
        return ops->has_iothread;
    default:
        return true;
    }
}

/* One run of every workload for @ops; figures go to round @r of @res. */
/* --workload: NULL runs everything. */
static const char *only_workload;

static bool want(const char *workload)
{
    return !only_workload || strcmp(only_workload, workload) == 0;
}

static void run_impl(const BenchLoopOps *ops, const BenchParams *p,
                     BenchResults *res, int impl, int r)
{
    static const int fds[] = { 1, 10, 100, 1000 };
    double a, b;

    fprintf(stderr, " %s", ops->name);
    if (want("xthread")) {
        bench_results_set(res, M_XTHREAD, impl, r, bench_xthread(ops, p));
    }
    if (want("pingpong")) {
        bench_pingpong(ops, p, &a, &b);
        bench_results_set(res, M_PP_MEDIAN, impl, r, a);
        bench_results_set(res, M_PP_P99, impl, r, b);
    }
    if (want("deferred")) {
        bench_results_set(res, M_DEFERRED, impl, r, bench_deferred(ops, p));
    }
    if (want("timers")) {
        bench_results_set(res, M_TIMERS, impl, r, bench_timers(ops, p));
    }
    for (int i = 0; i < 4 && want("dispatch"); i++) {
        bench_results_set(res, M_FDS_1 + i, impl, r,
                          bench_dispatch(ops, p, fds[i]));
    }
    if (metric_supported(ops, M_POOL_RT) && want("pool")) {
        bench_pool(ops, p, &a, &b);
        bench_results_set(res, M_POOL_RT, impl, r, a);
        bench_results_set(res, M_POOL_TP, impl, r, b);
    }
    if (metric_supported(ops, M_IOT_WAKE) && want("iothread")) {
        bench_results_set(res, M_IOT_WAKE, impl, r,
                          bench_iothread_wakeup(ops, p));
    }
}

/* 1000 idle fds per loop plus eventfds of the library itself. */
static void raise_fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    gboolean quick = FALSE, smoke = FALSE;
    gint rounds = 0;
    gchar *plot = NULL, *only = NULL, *workload = NULL;
    GOptionEntry entries[] = {
        { "quick", 0, 0, G_OPTION_ARG_NONE, &quick, "short run", NULL },
        { "smoke", 0, 0, G_OPTION_ARG_NONE, &smoke,
          "tiny run that checks the output (for the test suite)", NULL },
        { "rounds", 0, 0, G_OPTION_ARG_INT, &rounds,
          "rounds (default 11; --quick 3)", "N" },
        { "impl", 0, 0, G_OPTION_ARG_STRING, &only,
          "only these implementations (comma-separated)", "LIST" },
        { "plot", 0, 0, G_OPTION_ARG_FILENAME, &plot, "write a PNG chart",
          "FILE" },
        { "poll-max-ns", 0, 0, G_OPTION_ARG_INT64,
          &bench_shardvm_poll_max_ns,
          "busy-poll limit of shardvm's contexts (default: theirs)", "NS" },
        { "workload", 0, 0, G_OPTION_ARG_STRING, &workload,
          "only this workload (xthread pingpong deferred timers dispatch "
          "pool iothread), for profiling", "NAME" },
        { NULL },
    };
    GOptionContext *oc = g_option_context_new("- event loop benchmark");
    GError *err = NULL;

    g_option_context_add_main_entries(oc, entries, NULL);
    if (!g_option_context_parse(oc, &argc, &argv, &err)) {
        fprintf(stderr, "bench-eventloop: %s\n", err->message);
        return 2;
    }
    g_option_context_free(oc);
    only_workload = workload;

    const BenchParams *p = smoke ? &params_smoke
                           : quick ? &params_quick : &params_full;
    if (rounds <= 0) {
        rounds = smoke ? 1 : quick ? 3 : 11;
    }

    const BenchLoopOps *impls[G_N_ELEMENTS(all_impls)];
    int n_impls = 0;
    for (size_t i = 0; i < G_N_ELEMENTS(all_impls); i++) {
        if (!only || strstr(only, all_impls[i]->name)) {
            impls[n_impls++] = all_impls[i];
        }
    }
    if (n_impls == 0) {
        fprintf(stderr, "bench-eventloop: no implementation selected\n");
        return 2;
    }

    /* Process-wide set-up of the peers, before any of their loops exist:
     * libevent locking for cross-thread use, libuv's pool size (the same
     * worker count every pool gets). */
    evthread_use_pthreads();
    char nw[16];
    g_snprintf(nw, sizeof(nw), "%d", p->pool_workers);
    g_setenv("UV_THREADPOOL_SIZE", nw, TRUE);
    raise_fd_limit();

    BenchResults *res = bench_results_new(n_impls, rounds);
    for (int i = 0; i < n_impls; i++) {
        res->impl_names[i] = impls[i]->name;
        for (int m = 0; m < BENCH_N_METRICS; m++) {
            res->supported[m][i] = metric_supported(impls[i], m);
        }
    }
    for (int r = 0; r < rounds; r++) {
        fprintf(stderr, "round %d/%d:", r + 1, rounds);
        for (int k = 0; k < n_impls; k++) {
            int i = (k + r) % n_impls;
            run_impl(impls[i], p, res, i, r);
        }
        fprintf(stderr, "\n");
    }

    bench_report_table(res, stdout);
    GPtrArray *lines = bench_report_lines(res);
    for (guint i = 0; i < lines->len; i++) {
        printf("%s\n", (char *)lines->pdata[i]);
    }
    bench_report_targets(res, stdout);
    fflush(stdout);

    int status = 0;
    if (smoke && !workload && !bench_check_lines(res, lines)) {
        status = 1;
    }
    if (plot && !smoke && bench_plot(res, plot) < 0) {
        status = 1;
    }
    g_ptr_array_free(lines, TRUE);
    bench_results_free(res);
    g_free(plot);
    g_free(only);
    g_free(workload);
    return status;
}
