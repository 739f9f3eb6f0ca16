/*
 * Names, medians, the table, the BENCH lines and the gnuplot chart.
 */
#include "bench-block.h"

#include <math.h>
#include <string.h>
#include <unistd.h>

static const char *impl_names[N_IMPLS] = { "shardvm", "fio" };

const char *bench_target_name(int target)
{
    return target == TARGET_SHM ? "shm" : "disk";
}

const char *bench_engine_name(BlockAioMode aio)
{
    switch (aio) {
    case BLOCK_AIO_NATIVE:
        return "native";
    case BLOCK_AIO_IO_URING:
        return "io_uring";
    default:
        return "threads";
    }
}

const char *bench_fio_engine(BlockAioMode aio)
{
    switch (aio) {
    case BLOCK_AIO_NATIVE:
        return "libaio";
    case BLOCK_AIO_IO_URING:
        return "io_uring";
    default:
        return "psync";
    }
}

const char *bench_rw_name(const BenchPoint *p)
{
    return p->write ? "randwrite" : "randread";
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_median(GArray *a, double *lo, double *hi)
{
    if (a->len == 0) {
        *lo = *hi = NAN;
        return NAN;
    }
    g_array_sort(a, cmp_double);
    double *v = (double *)a->data;
    *lo = v[0];
    *hi = v[a->len - 1];
    return a->len % 2 ? v[a->len / 2]
                      : (v[a->len / 2 - 1] + v[a->len / 2]) / 2;
}

/* "median (min-max)" of @a, or "-" */
static void fmt_cell(char *buf, size_t n, GArray *a, int decimals)
{
    double lo, hi, m = bench_median(a, &lo, &hi);
    if (isnan(m)) {
        snprintf(buf, n, "-");
    } else {
        snprintf(buf, n, "%.*f (%.*f-%.*f)", decimals, m, decimals, lo,
                 decimals, hi);
    }
}

static double ratio(GArray *a, GArray *b)
{
    double lo, hi;
    double x = bench_median(a, &lo, &hi), y = bench_median(b, &lo, &hi);
    return (isnan(x) || isnan(y) || y == 0) ? NAN : x / y;
}

void bench_report(FILE *f, BenchPoint *pts, int n)
{
    fprintf(f, "\nmedian (min-max) over the rounds; ratio = shardvm / fio\n");
    fprintf(f, "%-4s %-8s %-9s %4s | %-26s %-26s %5s | %-20s %-20s %5s\n",
            "tgt", "engine", "rw", "qd", "shardvm IOPS", "fio IOPS", "ratio",
            "shardvm ns/IO", "fio ns/IO", "ratio");
    for (int i = 0; i < n; i++) {
        BenchPoint *p = &pts[i];
        char c[4][64];
        fmt_cell(c[0], sizeof(c[0]), p->iops[IMPL_SHARDVM], 0);
        fmt_cell(c[1], sizeof(c[1]), p->iops[IMPL_FIO], 0);
        fmt_cell(c[2], sizeof(c[2]), p->cpu_ns[IMPL_SHARDVM], 0);
        fmt_cell(c[3], sizeof(c[3]), p->cpu_ns[IMPL_FIO], 0);
        fprintf(f, "%-4s %-8s %-9s %4u | %-26s %-26s %5.2f | %-20s %-20s "
                "%5.2f\n", bench_target_name(p->target),
                bench_engine_name(p->aio), bench_rw_name(p), p->qd, c[0],
                c[1], ratio(p->iops[IMPL_SHARDVM], p->iops[IMPL_FIO]), c[2],
                c[3], ratio(p->cpu_ns[IMPL_SHARDVM], p->cpu_ns[IMPL_FIO]));
    }
    fprintf(f, "\n");
    for (int i = 0; i < n; i++) {
        BenchPoint *p = &pts[i];
        for (int im = 0; im < N_IMPLS; im++) {
            double lo, hi;
            double v[2] = { bench_median(p->iops[im], &lo, &hi),
                            bench_median(p->cpu_ns[im], &lo, &hi) };
            const char *metric[2] = { "iops", "cpu_ns_per_io" };
            const char *unit[2] = { "iops", "ns" };
            for (int m = 0; m < 2; m++) {
                if (isnan(v[m])) {
                    continue;
                }
                fprintf(f, "BENCH suite=block metric=%s impl=%s engine=%s "
                        "rw=%s qd=%u target=%s value=%.1f unit=%s\n",
                        metric[m], impl_names[im], bench_engine_name(p->aio),
                        bench_rw_name(p), p->qd, bench_target_name(p->target),
                        v[m], unit[m]);
            }
        }
    }
}

/*
 * Two panels over the same x axis (one group per point): IOPS (log) and
 * CPU ns per I/O (log), shardvm and fio side by side; error bars are the
 * min and max over the rounds.
 */
int bench_plot(const char *png, BenchPoint *pts, int n)
{
    GError *err = NULL;
    char *dir = g_dir_make_tmp("bench-block-XXXXXX", &err);
    if (!dir) {
        fprintf(stderr, "bench-block: %s\n", err->message);
        g_error_free(err);
        return -1;
    }
    char *dat = g_build_filename(dir, "data", NULL);
    char *gp = g_build_filename(dir, "plot.gp", NULL);
    GString *d = g_string_new(NULL);
    for (int i = 0; i < n; i++) {
        BenchPoint *p = &pts[i];
        g_string_append_printf(d, "\"%s %s %s qd%u\"",
                               bench_target_name(p->target),
                               bench_engine_name(p->aio),
                               p->write ? "W" : "R", p->qd);
        GArray *cols[4] = { p->iops[IMPL_SHARDVM], p->iops[IMPL_FIO],
                            p->cpu_ns[IMPL_SHARDVM], p->cpu_ns[IMPL_FIO] };
        for (int c = 0; c < 4; c++) {
            double lo, hi, m = bench_median(cols[c], &lo, &hi);
            if (isnan(m)) {
                g_string_append(d, " - - -");
            } else {
                g_string_append_printf(d, " %.1f %.1f %.1f", m, lo, hi);
            }
        }
        g_string_append_c(d, '\n');
    }
    char *script = g_strdup_printf(
        "set terminal png size 1500,1000\n"
        "set output '%s'\n"
        "set multiplot layout 2,1 title 'block layer: shardvm (one IOThread) "
        "vs fio, 4 KiB random I/O (median, min-max bars)'\n"
        "set style data histograms\n"
        "set style histogram errorbars gap 1 lw 1\n"
        "set style fill solid 0.8 border -1\n"
        "set datafile missing '-'\n"
        "set logscale y\n"
        "set grid ytics\n"
        "set key top left\n"
        "set xtics rotate by -45 font ',8'\n"
        "set ylabel 'IOPS (higher is better)'\n"
        "plot '%s' using 2:3:4:xtic(1) title 'shardvm', "
        "'' using 5:6:7 title 'fio'\n"
        "set ylabel 'CPU ns per I/O (lower is better)'\n"
        "plot '%s' using 8:9:10:xtic(1) title 'shardvm', "
        "'' using 11:12:13 title 'fio'\n"
        "unset multiplot\n",
        png, dat, dat);
    int ret = -1;
    if (g_file_set_contents(dat, d->str, -1, &err) &&
        g_file_set_contents(gp, script, -1, &err)) {
        const char *argv[] = { "gnuplot", gp, NULL };
        gint status;
        if (g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH,
                         NULL, NULL, NULL, NULL, &status, &err) &&
            g_spawn_check_wait_status(status, &err)) {
            ret = 0;
        }
    }
    if (err) {
        fprintf(stderr, "bench-block: plot: %s\n", err->message);
        g_error_free(err);
    }
    unlink(dat);
    unlink(gp);
    rmdir(dir);
    g_free(script);
    g_string_free(d, TRUE);
    g_free(gp);
    g_free(dat);
    g_free(dir);
    return ret;
}
