/*
 * The chart: one group of bars per metric, one bar per implementation,
 * each normalised to the best peer of that metric and oriented so that
 * higher is better (rates: v / best; latencies: best / v).  Log scale, so
 * 2x better and 2x worse are the same distance from the 1.0 line.
 */
#include "report.h"

#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

static char *plot_data(const BenchResults *res)
{
    GString *s = g_string_new("metric");

    for (int i = 0; i < res->n_impls; i++) {
        g_string_append_printf(s, " %s", res->impl_names[i]);
    }
    g_string_append_c(s, '\n');
    for (int m = 0; m < BENCH_N_METRICS; m++) {
        int bp = bench_results_best_peer(res, m);
        if (bp < 0) {
            continue;
        }
        double best = bench_results_median(res, m, bp, NULL, NULL);
        /* Underscores would be subscripts in gnuplot's enhanced text. */
        char *label = g_strdup(bench_metrics[m].name);
        g_strdelimit(label, "_", '-');
        g_string_append(s, label);
        g_free(label);
        for (int i = 0; i < res->n_impls; i++) {
            double v = bench_results_median(res, m, i, NULL, NULL);
            if (isnan(v) || v <= 0) {
                g_string_append(s, " -");
            } else {
                g_string_append_printf(s, " %.4f",
                    bench_metrics[m].higher_is_better ? v / best : best / v);
            }
        }
        g_string_append_c(s, '\n');
    }
    return g_string_free(s, FALSE);
}

/* Debian's gnuplot-nox has both; prefer cairo's anti-aliased output. */
static const char *png_terminal(void)
{
    const char *argv[] = { "gnuplot", "-e", "set terminal pngcairo", NULL };
    gint status;

    if (g_spawn_sync(NULL, (char **)argv, NULL,
                     G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL |
                     G_SPAWN_STDERR_TO_DEV_NULL,
                     NULL, NULL, NULL, NULL, &status, NULL) &&
        g_spawn_check_wait_status(status, NULL)) {
        return "pngcairo size 1400,700 font 'Sans,10'";
    }
    return "png size 1400,700";
}

int bench_plot(const BenchResults *res, const char *png)
{
    GError *err = NULL;
    char *dir = g_dir_make_tmp("bench-eventloop-XXXXXX", &err);
    int ret = -1;

    if (!dir) {
        fprintf(stderr, "bench: %s\n", err->message);
        g_error_free(err);
        return -1;
    }
    char *dat = g_build_filename(dir, "data", NULL);
    char *gp = g_build_filename(dir, "plot.gp", NULL);
    char *data = plot_data(res);
    GString *script = g_string_new(NULL);

    g_string_append_printf(script,
        "set terminal %s\n"
        "set output '%s'\n"
        "set title 'shardvm event loop vs libuv, libevent, glib "
        "(median of %d rounds; 1.0 = best peer; higher is better)'\n"
        "set style data histogram\n"
        "set style histogram clustered gap 1\n"
        "set style fill solid 0.85 border -1\n"
        "set boxwidth 0.9\n"
        "set logscale y 2\n"
        "set yrange [0.015625:64]\n"
        "set ytics ('1/64' 0.015625, '1/16' 0.0625, '1/4' 0.25, "
        "'1/2' 0.5, '1' 1, '2' 2, '4' 4, '16' 16, '64' 64)\n"
        "set ylabel 'relative to the best peer (log scale, "
        "clipped to 1/64..64)'\n"
        "set grid ytics\n"
        "set xtics rotate by 30 right noenhanced\n"
        "set key top left\n"
        "set datafile missing '-'\n"
        "set arrow from graph 0, first 1 to graph 1, first 1 nohead "
        "lw 2 dt 2\n"
        "set bmargin 8\n"
        "plot ", png_terminal(), png, res->rounds);
    for (int i = 0; i < res->n_impls; i++) {
        g_string_append_printf(script, "%s'%s' using %d%s title columnhead",
                               i ? ", " : "", dat, i + 2,
                               i ? "" : ":xtic(1)");
    }
    g_string_append_c(script, '\n');

    if (!g_file_set_contents(dat, data, -1, &err) ||
        !g_file_set_contents(gp, script->str, -1, &err)) {
        fprintf(stderr, "bench: %s\n", err->message);
        g_error_free(err);
        goto out;
    }
    const char *argv[] = { "gnuplot", gp, NULL };
    gint status;
    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL,
                      NULL, NULL, NULL, &status, &err) ||
        !g_spawn_check_wait_status(status, &err)) {
        fprintf(stderr, "bench: gnuplot: %s\n", err->message);
        g_error_free(err);
        goto out;
    }
    fprintf(stderr, "bench: wrote %s\n", png);
    ret = 0;
out:
    g_unlink(dat);
    g_unlink(gp);
    g_rmdir(dir);
    g_free(data);
    g_string_free(script, TRUE);
    g_free(dat);
    g_free(gp);
    g_free(dir);
    return ret;
}
