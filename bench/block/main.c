/*
 * bench-block: shardvm's block layer vs fio, 4 KiB random I/O.
 *
 *   bench-block [--rounds N] [--duration S] [--quick | --smoke]
 *               [--plot FILE.png] [--disk-dir DIR] [--shm-dir DIR]
 *               [--size-mib N] [--fio PATH | --no-fio] [--only TEXT]
 *
 * Points: target shm (cache=writeback; threads, io_uring) and disk
 * (cache=none = O_DIRECT; threads, native, io_uring) x randread/randwrite
 * x qd 1, 32, 128.  In every round each point runs shardvm and fio one
 * after the other (which goes first alternates), so slow drifts of the
 * shared machine hit both.  Output: a table (median, min-max), one BENCH
 * line per point, implementation and metric, and a PNG with --plot.
 */
#include "bench-block.h"

#include "shardvm/rcu.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Create @path with @size bytes of pseudo-random data unless it already
 * has that size (then it was written by an earlier run). */
static int prepare_image(const char *path, uint64_t size)
{
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode) &&
        (uint64_t)st.st_size == size) {
        return 0;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "bench-block: %s: %s\n", path, g_strerror(errno));
        return -1;
    }
    size_t chunk = 1 << 20;
    uint64_t *buf = g_malloc(chunk);
    uint64_t x = 88172645463325252ULL;
    int ret = 0;
    for (uint64_t off = 0; off < size && ret == 0; off += chunk) {
        for (size_t i = 0; i < chunk / 8; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf[i] = x;
        }
        size_t n = MIN(chunk, size - off);
        if (pwrite(fd, buf, n, off) != (ssize_t)n) {
            fprintf(stderr, "bench-block: writing %s: %s\n", path,
                    g_strerror(errno));
            ret = -1;
        }
    }
    if (ret == 0 && fsync(fd) < 0) {
        ret = -1;
    }
    close(fd);
    g_free(buf);
    if (ret < 0) {
        unlink(path);
    }
    return ret;
}

static char *point_label(const BenchPoint *p)
{
    return g_strdup_printf("%s %s %s qd%u", bench_target_name(p->target),
                           bench_engine_name(p->aio), bench_rw_name(p),
                           p->qd);
}

static void run_one(const BenchOpts *o, BenchPoint *p, int impl)
{
    BenchResult r;
    int ret = impl == IMPL_SHARDVM ? bench_shardvm_run(o, p, &r)
                                   : bench_fio_run(o, p, &r);
    char *label = point_label(p);
    if (ret == 0) {
        g_array_append_val(p->iops[impl], r.iops);
        g_array_append_val(p->cpu_ns[impl], r.cpu_ns_per_io);
        printf("  %-28s %-7s %10.0f IOPS %8.0f ns/IO\n", label,
               impl == IMPL_SHARDVM ? "shardvm" : "fio", r.iops,
               r.cpu_ns_per_io);
    } else {
        printf("  %-28s %-7s FAILED\n", label,
               impl == IMPL_SHARDVM ? "shardvm" : "fio");
    }
    fflush(stdout);
    g_free(label);
}

int main(int argc, char **argv)
{
    BenchOpts o = { .rounds = 3, .warmup_s = 0.3, .duration_s = 1.0,
                    .poll_max_ns = -1 };
    gboolean quick = FALSE, smoke = FALSE, no_fio = FALSE, verbose = FALSE;
    char *plot_file = NULL, *disk_dir = NULL, *shm_dir = NULL, *fio = NULL;
    char *only = NULL;
    int size_mib = 256;
    GError *err = NULL;
    GOptionEntry entries[] = {
        { "rounds", 0, 0, G_OPTION_ARG_INT, &o.rounds, "rounds (3)", "N" },
        { "duration", 0, 0, G_OPTION_ARG_DOUBLE, &o.duration_s,
          "measured seconds per point and implementation (1.0)", "S" },
        { "quick", 0, 0, G_OPTION_ARG_NONE, &quick, "1 round of 1 s", NULL },
        { "smoke", 0, 0, G_OPTION_ARG_NONE, &smoke,
          "tiny run (16 MiB, 0.1 s, qd 32 only); fails if a point has no "
          "value", NULL },
        { "plot", 0, 0, G_OPTION_ARG_FILENAME, &plot_file, "write a PNG",
          "FILE" },
        { "disk-dir", 0, 0, G_OPTION_ARG_FILENAME, &disk_dir,
          "folder on the disk for the O_DIRECT image (default: next to "
          "this program)", "DIR" },
        { "shm-dir", 0, 0, G_OPTION_ARG_FILENAME, &shm_dir,
          "tmpfs folder (/dev/shm)", "DIR" },
        { "size-mib", 0, 0, G_OPTION_ARG_INT, &size_mib, "image size (256)",
          "N" },
        { "fio", 0, 0, G_OPTION_ARG_FILENAME, &fio, "fio binary", "PATH" },
        { "no-fio", 0, 0, G_OPTION_ARG_NONE, &no_fio, "shardvm only", NULL },
        { "only", 0, 0, G_OPTION_ARG_STRING, &only,
          "only points whose label (e.g. 'disk io_uring randread qd32') "
          "contains TEXT", "TEXT" },
        { "poll-max-ns", 0, 0, G_OPTION_ARG_INT64, &o.poll_max_ns,
          "the IOThread's poll-max-ns (default: the IOThread default, "
          "32768)", "NS" },
        { "verbose", 0, 0, G_OPTION_ARG_NONE, &verbose,
          "keep fio's JSON output of failed runs", NULL },
        { NULL },
    };
    GOptionContext *oc = g_option_context_new("- block layer vs fio");
    g_option_context_add_main_entries(oc, entries, NULL);
    if (!g_option_context_parse(oc, &argc, &argv, &err)) {
        fprintf(stderr, "bench-block: %s\n", err->message);
        return 2;
    }
    g_option_context_free(oc);
    if (smoke) {
        o.rounds = 1;
        o.duration_s = 0.1;
        o.warmup_s = 0.1;
        size_mib = 16;
    } else if (quick) {
        o.rounds = 1;
        o.duration_s = 1.0;
    }
    o.rounds = MAX(o.rounds, 1);
    o.verbose = verbose;
    o.size = (uint64_t)MAX(size_mib, 1) << 20;
    if (!no_fio) {
        o.fio_bin = fio ? g_strdup(fio) : g_find_program_in_path("fio");
    }

    char *exe = g_file_read_link("/proc/self/exe", NULL);
    char *exe_dir = exe ? g_path_get_dirname(exe) : g_strdup(".");
    o.file[TARGET_SHM] = g_strdup_printf("%s/shardvm-bench-block-%d.img",
                                         shm_dir ? shm_dir : "/dev/shm",
                                         (int)getpid());
    o.file[TARGET_DISK] = g_strdup_printf("%s/bench-block-%dM.img",
                                          disk_dir ? disk_dir : exe_dir,
                                          size_mib);

    /* The points, in the order of the table. */
    static const unsigned qds[] = { 1, 32, 128 };
    static const BlockAioMode engines[] = { BLOCK_AIO_THREADS,
                                            BLOCK_AIO_NATIVE,
                                            BLOCK_AIO_IO_URING };
    BenchPoint pts[N_TARGETS * 3 * 2 * 3];
    int n = 0;
    for (int t = 0; t < N_TARGETS; t++) {
        for (size_t e = 0; e < G_N_ELEMENTS(engines); e++) {
            /* native needs O_DIRECT, which tmpfs cannot do: shardvm refuses
             * it (as QEMU), and fio's libaio would be synchronous */
            if (t == TARGET_SHM && engines[e] == BLOCK_AIO_NATIVE) {
                continue;
            }
            for (int w = 0; w < 2; w++) {
                for (size_t k = 0; k < G_N_ELEMENTS(qds); k++) {
                    if (smoke && qds[k] != 32) {
                        continue;
                    }
                    BenchPoint p = { .target = t, .aio = engines[e],
                                     .write = w, .qd = qds[k] };
                    char *label = point_label(&p);
                    bool keep = !only || strstr(label, only);
                    g_free(label);
                    if (!keep) {
                        continue;
                    }
                    for (int i = 0; i < N_IMPLS; i++) {
                        p.iops[i] = g_array_new(FALSE, FALSE, sizeof(double));
                        p.cpu_ns[i] = g_array_new(FALSE, FALSE,
                                                  sizeof(double));
                    }
                    pts[n++] = p;
                }
            }
        }
    }

    printf("bench-block: %d round(s) of %.2f s (+%.2f s warm-up) per point "
           "and implementation; %d points; image %d MiB\n  shm:  %s\n"
           "  disk: %s\n  fio:  %s\n", o.rounds, o.duration_s, o.warmup_s, n,
           size_mib, o.file[TARGET_SHM], o.file[TARGET_DISK],
           o.fio_bin ? o.fio_bin : "(none: shardvm only)");
    fflush(stdout);

    int ret = 0;
    shardvm_rcu_init();
    for (int t = 0; t < N_TARGETS; t++) {
        if (prepare_image(o.file[t], o.size) < 0) {
            ret = 1;
            goto out;
        }
    }
    for (int r = 0; r < o.rounds; r++) {
        printf("round %d/%d\n", r + 1, o.rounds);
        for (int i = 0; i < n; i++) {
            int first = (r + i) % 2 ? IMPL_FIO : IMPL_SHARDVM;
            for (int k = 0; k < N_IMPLS; k++) {
                int impl = k ? 1 - first : first;
                if (impl == IMPL_FIO && !o.fio_bin) {
                    continue;
                }
                run_one(&o, &pts[i], impl);
            }
        }
    }
    bench_report(stdout, pts, n);
    if (smoke) {
        for (int i = 0; i < n; i++) {
            for (int im = 0; im < N_IMPLS; im++) {
                /* fio's 0.1 s smoke windows can miss its CPU time on a
                 * loaded machine (schedstat granularity): only shardvm's
                 * side must produce a value for the smoke test to pass. */
                if (im == IMPL_FIO) {
                    continue;
                }
                if (pts[i].iops[im]->len == 0) {
                    char *label = point_label(&pts[i]);
                    fprintf(stderr, "bench-block: smoke: no value for %s "
                            "(%s)\n", label, im ? "fio" : "shardvm");
                    g_free(label);
                    ret = 1;
                }
            }
        }
    }
    if (plot_file && n) {
        char *d = g_path_get_dirname(plot_file);
        g_mkdir_with_parents(d, 0755);
        g_free(d);
        if (bench_plot(plot_file, pts, n) == 0) {
            printf("chart: %s\n", plot_file);
        } else {
            ret = 1;
        }
    }
out:
    unlink(o.file[TARGET_SHM]);   /* RAM; the disk image is kept */
    if (smoke) {
        unlink(o.file[TARGET_DISK]);
    }
    for (int i = 0; i < n; i++) {
        for (int im = 0; im < N_IMPLS; im++) {
            g_array_free(pts[i].iops[im], TRUE);
            g_array_free(pts[i].cpu_ns[im], TRUE);
        }
    }
    for (int t = 0; t < N_TARGETS; t++) {
        g_free(o.file[t]);
    }
    g_free(o.fio_bin);
    g_free(exe);
    g_free(exe_dir);
    g_free(plot_file);
    g_free(disk_dir);
    g_free(shm_dir);
    g_free(fio);
    g_free(only);
    return ret;
}
