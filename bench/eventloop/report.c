/* Summaries, table, BENCH lines, targets and the --smoke check. */
#include "bench-ops.h"
#include "report.h"

#include <math.h>
#include <string.h>

BenchResults *bench_results_new(int n_impls, int rounds)
{
    BenchResults *res = g_new0(BenchResults, 1);

    g_assert(n_impls <= BENCH_MAX_IMPLS);
    res->n_impls = n_impls;
    res->rounds = rounds;
    for (int m = 0; m < BENCH_N_METRICS; m++) {
        for (int i = 0; i < n_impls; i++) {
            res->values[m][i] = g_new(double, rounds);
            for (int r = 0; r < rounds; r++) {
                res->values[m][i][r] = NAN;
            }
        }
    }
    return res;
}

void bench_results_free(BenchResults *res)
{
    for (int m = 0; m < BENCH_N_METRICS; m++) {
        for (int i = 0; i < res->n_impls; i++) {
            g_free(res->values[m][i]);
        }
    }
    g_free(res);
}

void bench_results_set(BenchResults *res, int m, int impl, int r, double v)
{
    res->values[m][impl][r] = v;
}

double bench_results_median(const BenchResults *res, int m, int impl,
                            double *min, double *max)
{
    double v[res->rounds];
    int n = 0;

    for (int r = 0; r < res->rounds; r++) {
        if (!isnan(res->values[m][impl][r])) {
            v[n++] = res->values[m][impl][r];
        }
    }
    if (n == 0) {
        return NAN;
    }
    double med = bench_median(v, n); /* sorts v */
    if (min) {
        *min = v[0];
    }
    if (max) {
        *max = v[n - 1];
    }
    return med;
}

int bench_results_shardvm(const BenchResults *res)
{
    for (int i = 0; i < res->n_impls; i++) {
        if (strcmp(res->impl_names[i], "shardvm") == 0) {
            return i;
        }
    }
    return -1;
}

int bench_results_best_peer(const BenchResults *res, int m)
{
    int best = -1;
    double bv = 0;

    for (int i = 0; i < res->n_impls; i++) {
        double v = bench_results_median(res, m, i, NULL, NULL);
        if (strcmp(res->impl_names[i], "shardvm") == 0 || isnan(v)) {
            continue;
        }
        if (best < 0 || (bench_metrics[m].higher_is_better ? v > bv
                                                            : v < bv)) {
            best = i;
            bv = v;
        }
    }
    return best;
}

/* >1: shardvm better than the best peer, whichever way the metric goes. */
static double advantage(const BenchResults *res, int m)
{
    int sv = bench_results_shardvm(res), bp = bench_results_best_peer(res, m);

    if (sv < 0 || bp < 0) {
        return NAN;
    }
    double s = bench_results_median(res, m, sv, NULL, NULL);
    double b = bench_results_median(res, m, bp, NULL, NULL);
    return bench_metrics[m].higher_is_better ? s / b : b / s;
}

/* 1234567 -> "1.23M": three significant digits. */
static void format_si(char *buf, size_t len, double v)
{
    static const char *suffix[] = { "", "k", "M", "G" };
    int s = 0;

    while (fabs(v) >= 1000 && s < 3) {
        v /= 1000;
        s++;
    }
    g_snprintf(buf, len, "%.*f%s", fabs(v) >= 100 ? 0 : fabs(v) >= 10 ? 1 : 2,
               v, suffix[s]);
}

void bench_report_table(const BenchResults *res, FILE *out)
{
    fprintf(out, "\nshardvm event-loop benchmark: median of %d round(s), "
            "+-half the min..max spread in %%\n\n", res->rounds);
    fprintf(out, "%-26s %-12s", "metric", "unit");
    for (int i = 0; i < res->n_impls; i++) {
        fprintf(out, " %16s", res->impl_names[i]);
    }
    fprintf(out, " %10s\n", "vs best");
    for (int m = 0; m < BENCH_N_METRICS; m++) {
        bool any = false;
        for (int i = 0; i < res->n_impls; i++) {
            any |= !isnan(bench_results_median(res, m, i, NULL, NULL));
        }
        if (!any) {
            continue; /* not run (--workload) */
        }
        fprintf(out, "%-26s %-12s", bench_metrics[m].name,
                bench_metrics[m].unit);
        for (int i = 0; i < res->n_impls; i++) {
            double lo, hi, v = bench_results_median(res, m, i, &lo, &hi);
            char cell[32], num[16];
            if (isnan(v)) {
                g_strlcpy(cell, "-", sizeof(cell));
            } else {
                format_si(num, sizeof(num), v);
                g_snprintf(cell, sizeof(cell), "%s +-%.0f%%", num,
                           v > 0 ? (hi - lo) / 2 / v * 100 : 0);
            }
            fprintf(out, " %16s", cell);
        }
        double adv = advantage(res, m);
        if (isnan(adv)) {
            fprintf(out, " %10s\n", "-");
        } else {
            fprintf(out, " %9.2fx\n", adv);
        }
    }
    fprintf(out, "\n\"vs best\": shardvm against the best peer, >1 means "
            "shardvm is better (faster / lower latency).\n\n");
}

GPtrArray *bench_report_lines(const BenchResults *res)
{
    GPtrArray *lines = g_ptr_array_new_with_free_func(g_free);

    for (int m = 0; m < BENCH_N_METRICS; m++) {
        for (int i = 0; i < res->n_impls; i++) {
            double v = bench_results_median(res, m, i, NULL, NULL);
            if (isnan(v)) {
                continue;
            }
            g_ptr_array_add(lines, g_strdup_printf(
                "BENCH suite=eventloop metric=%s impl=%s value=%.1f unit=%s",
                bench_metrics[m].name, res->impl_names[i], v,
                bench_metrics[m].unit));
        }
    }
    return lines;
}

void bench_report_targets(const BenchResults *res, FILE *out)
{
    int sv = bench_results_shardvm(res);

    if (sv < 0 || isnan(advantage(res, M_XTHREAD)) ||
        isnan(advantage(res, M_DEFERRED)) ||
        isnan(advantage(res, M_PP_MEDIAN)) ||
        isnan(bench_results_median(res, M_FDS_1, sv, NULL, NULL))) {
        return; /* some workload not run (--workload, --impl) */
    }
    fprintf(out, "\ntargets (shown, not asserted):\n");
    double a = advantage(res, M_XTHREAD);
    fprintf(out, "  (a) cross-thread wake-ups >= 1.5x best peer: %.2fx  %s\n",
            a, a >= 1.5 ? "met" : "NOT met");
    double c = advantage(res, M_DEFERRED);
    fprintf(out, "  (c) deferred callbacks   >= 1.5x best peer: %.2fx  %s\n",
            c, c >= 1.5 ? "met" : "NOT met");
    double b = advantage(res, M_PP_MEDIAN);
    fprintf(out, "  (b) ping-pong median     <= best peer:      %.2fx  %s\n",
            b, b >= 1.0 ? "met" : "NOT met");
    for (int i = 0; i < res->n_impls; i++) {
        double g = bench_results_median(res, M_FDS_1000, i, NULL, NULL) /
                   bench_results_median(res, M_FDS_1, i, NULL, NULL);
        if (i == sv) {
            fprintf(out, "  (e) dispatch 1 -> 1000 idle fds <= 1.2x:    "
                    "%.2fx  %s\n", g, g <= 1.2 ? "met" : "NOT met");
        }
    }
    fprintf(out, "      (growth 1 -> 1000 idle fds:");
    for (int i = 0; i < res->n_impls; i++) {
        fprintf(out, " %s %.2fx", res->impl_names[i],
                bench_results_median(res, M_FDS_1000, i, NULL, NULL) /
                bench_results_median(res, M_FDS_1, i, NULL, NULL));
    }
    fprintf(out, ")\n");
}

bool bench_check_lines(const BenchResults *res, GPtrArray *lines)
{
    GRegex *re = g_regex_new(
        "^BENCH suite=eventloop metric=([a-z0-9_]+) impl=([a-z]+) "
        "value=([0-9]+\\.[0-9]) unit=([a-z/]+)$", 0, 0, NULL);
    int seen[BENCH_N_METRICS][BENCH_MAX_IMPLS] = { { 0 } };
    bool ok = true;

    for (guint k = 0; k < lines->len; k++) {
        const char *line = lines->pdata[k];
        GMatchInfo *mi;
        if (!g_regex_match(re, line, 0, &mi)) {
            fprintf(stderr, "smoke: malformed line: %s\n", line);
            ok = false;
            g_match_info_free(mi);
            continue;
        }
        char *metric = g_match_info_fetch(mi, 1);
        char *impl = g_match_info_fetch(mi, 2);
        char *value = g_match_info_fetch(mi, 3);
        char *unit = g_match_info_fetch(mi, 4);
        int m, i;
        for (m = 0; m < BENCH_N_METRICS; m++) {
            if (strcmp(metric, bench_metrics[m].name) == 0) {
                break;
            }
        }
        for (i = 0; i < res->n_impls; i++) {
            if (strcmp(impl, res->impl_names[i]) == 0) {
                break;
            }
        }
        if (m == BENCH_N_METRICS || i == res->n_impls ||
            strcmp(unit, bench_metrics[m].unit) != 0) {
            fprintf(stderr, "smoke: unknown metric/impl/unit: %s\n", line);
            ok = false;
        } else {
            seen[m][i]++;
            double v = g_ascii_strtod(value, NULL);
            if (!(v > 0) || !isfinite(v)) {
                fprintf(stderr, "smoke: bad value: %s\n", line);
                ok = false;
            }
        }
        g_free(metric);
        g_free(impl);
        g_free(value);
        g_free(unit);
        g_match_info_free(mi);
    }
    for (int m = 0; m < BENCH_N_METRICS; m++) {
        for (int i = 0; i < res->n_impls; i++) {
            int want = res->supported[m][i] ? 1 : 0;
            if (seen[m][i] != want) {
                fprintf(stderr, "smoke: metric %s impl %s: %d line(s), "
                        "expected %d\n", bench_metrics[m].name,
                        res->impl_names[i], seen[m][i], want);
                ok = false;
            }
        }
    }
    g_regex_unref(re);
    fprintf(stderr, "smoke: %s (%u BENCH lines)\n", ok ? "ok" : "FAILED",
            lines->len);
    return ok;
}
