/*
 * Results of the event-loop benchmark: per metric, implementation and
 * round; summaries (median, spread), the table, the BENCH lines, the
 * targets and the chart.
 */
#ifndef BENCH_EVENTLOOP_REPORT_H
#define BENCH_EVENTLOOP_REPORT_H

#include <glib.h>
#include <stdbool.h>
#include <stdio.h>

enum {
    M_XTHREAD,
    M_PP_MEDIAN,
    M_PP_P99,
    M_DEFERRED,
    M_TIMERS,
    M_FDS_1,
    M_FDS_10,
    M_FDS_100,
    M_FDS_1000,
    M_POOL_RT,
    M_POOL_TP,
    M_IOT_WAKE,
    BENCH_N_METRICS
};

typedef struct BenchMetric {
    const char *name;
    const char *unit;
    bool higher_is_better;
} BenchMetric;

extern const BenchMetric bench_metrics[BENCH_N_METRICS];

#define BENCH_MAX_IMPLS 4

typedef struct BenchResults {
    int n_impls, rounds;
    const char *impl_names[BENCH_MAX_IMPLS];
    bool supported[BENCH_N_METRICS][BENCH_MAX_IMPLS];
    /* values[m][i][r]; NAN until measured */
    double *values[BENCH_N_METRICS][BENCH_MAX_IMPLS];
} BenchResults;

BenchResults *bench_results_new(int n_impls, int rounds);
void bench_results_free(BenchResults *res);
void bench_results_set(BenchResults *res, int m, int impl, int r, double v);

/* Median over rounds (NAN if not measured); min and max when non-NULL. */
double bench_results_median(const BenchResults *res, int m, int impl,
                            double *min, double *max);

/* Index of "shardvm", or -1. */
int bench_results_shardvm(const BenchResults *res);
/* Index of the best implementation other than shardvm for @m, or -1. */
int bench_results_best_peer(const BenchResults *res, int m);

void bench_report_table(const BenchResults *res, FILE *out);
/* The BENCH lines (strings owned by the array). */
GPtrArray *bench_report_lines(const BenchResults *res);
void bench_report_targets(const BenchResults *res, FILE *out);
/* --smoke: every supported (metric, impl) has exactly one well-formed
 * line with a positive finite value.  Prints what is wrong. */
bool bench_check_lines(const BenchResults *res, GPtrArray *lines);

/* Grouped bar chart via gnuplot; 0 or -1. */
int bench_plot(const BenchResults *res, const char *png);

#endif
