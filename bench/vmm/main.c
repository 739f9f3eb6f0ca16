/*
 * bench-vmm: exit-path and boot figures of shardvm against QEMU.
 *
 *   bench-vmm [--rounds N] [--quick | --smoke] [--plot FILE.png]
 *             [--guest-dir DIR] [--shardvm PATH] [--qemu PATH]
 *
 * Metrics (medians over the rounds; the implementations alternate within
 * each round):
 *   pio_exit_ns         guest pio.elf (CPL3, long mode) doing `out` to a
 *                       port without a device; the guest's own TSC figure
 *                       per access.  shardvm: in-process through the KVM
 *                       core (vm.h) with a minimal multiboot loader; QEMU:
 *                       qemu-system-x86_64 -enable-kvm -cpu qemu64.
 *   pio_exit_cpl0_ns    shardvm: a tiny CPL0 guest writes a port with a
 *                       lock-free region N times back to back (host clock
 *                       between two marker exits / N).
 *   ioeventfd_exit_ns   shardvm: the same loop on a port that is an
 *                       ioeventfd (handled in an IOThread): no userspace exit.
 *   ioeventfd_wakeup_ns shardvm: the guest writes the ioeventfd port and
 *                       spins until the IOThread's handler has written an
 *                       ack into guest memory; per round trip.
 *   ioeventfd_polled_ns shardvm: the same, with the handler also busy-polling
 *                       the request word the guest writes before each kick
 *                       (the IOThread's adaptive polling, 32 us default).
 *   boot_to_guest_ms    spawn -> first "HELLO" line of hello.elf on the
 *                       serial port.  shardvm needs the build/shardvm binary.
 * Output: a table, one "BENCH suite=vmm metric=M impl=I value=V unit=U"
 * line per measured pair, and a gnuplot chart with --plot.
 */
#include "bench-vmm.h"

#include "shardvm/rcu.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *impl_names[N_IMPLS] = { "shardvm", "qemu" };

static const struct {
    const char *name;
    const char *unit;
} metrics[N_METRICS] = {
    [M_PIO_EXIT] = { "pio_exit_ns", "ns" },
    [M_PIO_EXIT_CPL0] = { "pio_exit_cpl0_ns", "ns" },
    [M_IOEVENTFD_EXIT] = { "ioeventfd_exit_ns", "ns" },
    [M_IOEVENTFD_WAKEUP] = { "ioeventfd_wakeup_ns", "ns" },
    [M_IOEVENTFD_POLLED] = { "ioeventfd_polled_ns", "ns" },
    [M_BOOT_TO_GUEST] = { "boot_to_guest_ms", "ms" },
};

/* values[m][i]: one double per successful round. */
static GArray *values[N_METRICS][N_IMPLS];

static void record(int m, int i, double v)
{
    if (v > 0 && isfinite(v)) {
        g_array_append_val(values[m][i], v);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(GArray *a, double *lo, double *hi)
{
    if (a->len == 0) {
        return NAN;
    }
    g_array_sort(a, cmp_double);
    double *v = (double *)a->data;
    *lo = v[0];
    *hi = v[a->len - 1];
    return a->len % 2 ? v[a->len / 2]
                      : (v[a->len / 2 - 1] + v[a->len / 2]) / 2;
}

/* @rel under the build dir (bench-vmm lives in BUILD/bench/vmm/), else
 * @fallback relative to the current directory, else NULL. */
static char *find_file(const char *exe_dir, const char *rel,
                       const char *fallback)
{
    char *p = g_build_filename(exe_dir, "..", "..", rel, NULL);
    if (g_file_test(p, G_FILE_TEST_EXISTS)) {
        char *c = g_canonicalize_filename(p, NULL);
        g_free(p);
        return c;
    }
    g_free(p);
    return g_file_test(fallback, G_FILE_TEST_EXISTS)
           ? g_canonicalize_filename(fallback, NULL) : NULL;
}

static void print_report(FILE *f)
{
    fprintf(f, "\n%-22s %-8s %14s %14s %14s %7s\n", "metric", "impl",
            "median", "min", "max", "rounds");
    for (int m = 0; m < N_METRICS; m++) {
        for (int i = 0; i < N_IMPLS; i++) {
            double lo, hi, med = median(values[m][i], &lo, &hi);
            if (isnan(med)) {
                continue;
            }
            fprintf(f, "%-22s %-8s %11.1f %-2s %11.1f %-2s %11.1f %-2s %7u\n",
                    metrics[m].name, impl_names[i], med, metrics[m].unit,
                    lo, metrics[m].unit, hi, metrics[m].unit,
                    values[m][i]->len);
        }
    }
    fprintf(f, "\n");
    for (int m = 0; m < N_METRICS; m++) {
        for (int i = 0; i < N_IMPLS; i++) {
            double lo, hi, med = median(values[m][i], &lo, &hi);
            if (!isnan(med)) {
                fprintf(f, "BENCH suite=vmm metric=%s impl=%s value=%.1f "
                        "unit=%s\n", metrics[m].name, impl_names[i], med,
                        metrics[m].unit);
            }
        }
    }
}

/* Grouped bars, one group per metric, log scale in microseconds. */
static int plot(const char *png)
{
    GError *err = NULL;
    char *dir = g_dir_make_tmp("bench-vmm-XXXXXX", &err);
    if (!dir) {
        fprintf(stderr, "bench-vmm: %s\n", err->message);
        g_error_free(err);
        return -1;
    }
    char *dat = g_build_filename(dir, "data", NULL);
    char *gp = g_build_filename(dir, "plot.gp", NULL);
    GString *d = g_string_new(NULL);
    for (int m = 0; m < N_METRICS; m++) {
        char *label = g_strdup(metrics[m].name);
        g_strdelimit(label, "_", '-');
        g_string_append(d, label);
        g_free(label);
        for (int i = 0; i < N_IMPLS; i++) {
            double lo, hi, med = median(values[m][i], &lo, &hi);
            double us = med / (strcmp(metrics[m].unit, "ms") ? 1e3 : 1e-3);
            if (isnan(med)) {
                g_string_append(d, " -");
            } else {
                g_string_append_printf(d, " %.3f", us);
            }
        }
        g_string_append_c(d, '\n');
    }
    char *script = g_strdup_printf(
        "set terminal png size 1100,600\n"
        "set output '%s'\n"
        "set title 'shardvm vs QEMU: exit paths and boot (median, lower is better)'\n"
        "set style data histograms\n"
        "set style histogram clustered gap 1\n"
        "set style fill solid 0.8 border -1\n"
        "set logscale y\n"
        "set ylabel 'microseconds (log scale)'\n"
        "set key top left\n"
        "set datafile missing '-'\n"
        "set grid ytics\n"
        "plot '%s' using 2:xtic(1) title 'shardvm', '' using 3 title 'qemu'\n",
        png, dat);
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
        fprintf(stderr, "bench-vmm: plot: %s\n", err->message);
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

/* The kernel registers a "kvm" misc device (see tests/common/need-kvm.h). */
static bool kernel_has_kvm(void)
{
    char *misc = NULL;
    bool found = false;

    if (g_file_get_contents("/proc/misc", &misc, NULL, NULL)) {
        char **lines = g_strsplit(misc, "\n", -1);
        for (char **l = lines; *l && !found; l++) {
            found = g_str_has_suffix(g_strstrip(*l), " kvm");
        }
        g_strfreev(lines);
    }
    g_free(misc);
    return found;
}

int main(int argc, char **argv)
{
    BenchVmmOpts o = { .rounds = 3, .pio_count = 20000, .ack_count = 20000 };
    gboolean quick = FALSE, smoke = FALSE;
    char *plot_file = NULL;
    GError *err = NULL;
    GOptionEntry entries[] = {
        { "rounds", 0, 0, G_OPTION_ARG_INT, &o.rounds, "rounds (3)", "N" },
        { "quick", 0, 0, G_OPTION_ARG_NONE, &quick, "small counts, 1 round",
          NULL },
        { "smoke", 0, 0, G_OPTION_ARG_NONE, &smoke,
          "tiny in-process run (no QEMU, no binary); fails if a metric is "
          "missing", NULL },
        { "plot", 0, 0, G_OPTION_ARG_FILENAME, &plot_file, "write a PNG",
          "FILE" },
        { "guest-dir", 0, 0, G_OPTION_ARG_FILENAME, &o.guest_dir,
          "folder with pio.elf and hello.elf", "DIR" },
        { "shardvm", 0, 0, G_OPTION_ARG_FILENAME, &o.shardvm_bin,
          "the shardvm binary (for boot_to_guest_ms)", "PATH" },
        { "qemu", 0, 0, G_OPTION_ARG_FILENAME, &o.qemu_bin,
          "qemu-system-x86_64", "PATH" },
        { NULL },
    };
    GOptionContext *oc = g_option_context_new("- shardvm vs QEMU exit paths");
    g_option_context_add_main_entries(oc, entries, NULL);
    if (!g_option_context_parse(oc, &argc, &argv, &err)) {
        fprintf(stderr, "bench-vmm: %s\n", err->message);
        return 2;
    }
    g_option_context_free(oc);
    if (smoke && access("/dev/kvm", F_OK) != 0 && !kernel_has_kvm() &&
        !(getenv("SHARDVM_REQUIRE_KVM") &&
          !strcmp(getenv("SHARDVM_REQUIRE_KVM"), "1"))) {
        /* docs/testing.md: a kernel without KVM skips (meson's 77), loudly. */
        printf("bench-vmm: SKIPPED: NO KVM ON THIS MACHINE (/dev/kvm absent, "
               "no kvm device in /proc/misc)\n");
        return 77;
    }
    if (smoke) {
        o.rounds = 1;
        o.pio_count = 200;
        o.ack_count = 200;
        g_clear_pointer(&o.shardvm_bin, g_free);
        g_clear_pointer(&o.qemu_bin, g_free);
    } else if (quick) {
        o.rounds = 1;
        o.pio_count = 2000;
        o.ack_count = 2000;
    }
    if (o.rounds < 1) {
        o.rounds = 1;
    }

    char *exe = g_file_read_link("/proc/self/exe", NULL);
    char *exe_dir = g_path_get_dirname(exe);
    if (!o.guest_dir) {
        char *d = find_file(exe_dir, "guest/pio.elf", "build/guest/pio.elf");
        o.guest_dir = d ? g_path_get_dirname(d) : NULL;
        g_free(d);
    }
    if (!o.shardvm_bin && !smoke) {
        o.shardvm_bin = find_file(exe_dir, "shardvm", "build/shardvm");
    }
    if (!o.qemu_bin && !smoke) {
        o.qemu_bin = g_find_program_in_path("qemu-system-x86_64");
    }
    printf("bench-vmm: %d round(s); guest dir %s; shardvm binary %s; qemu %s\n",
           o.rounds, o.guest_dir ? o.guest_dir : "(none: guest metrics skipped)",
           o.shardvm_bin ? o.shardvm_bin : "(none: boot_to_guest_ms skipped)",
           o.qemu_bin ? o.qemu_bin : "(none)");

    shardvm_rcu_init();
    for (int m = 0; m < N_METRICS; m++) {
        for (int i = 0; i < N_IMPLS; i++) {
            values[m][i] = g_array_new(FALSE, FALSE, sizeof(double));
        }
    }

    for (int r = 0; r < o.rounds; r++) {
        printf("round %d/%d\n", r + 1, o.rounds);
        fflush(stdout);
        if (o.guest_dir) {
            record(M_PIO_EXIT, IMPL_SHARDVM, inproc_pio_exit_ns(&o));
            if (o.qemu_bin) {
                record(M_PIO_EXIT, IMPL_QEMU,
                       spawn_pio_exit_ns(o.qemu_bin, &o));
            }
        }
        record(M_PIO_EXIT_CPL0, IMPL_SHARDVM,
               inproc_ack_ns(&o, false, false, false));
        record(M_IOEVENTFD_EXIT, IMPL_SHARDVM,
               inproc_ack_ns(&o, true, false, false));
        record(M_IOEVENTFD_WAKEUP, IMPL_SHARDVM,
               inproc_ack_ns(&o, true, true, false));
        record(M_IOEVENTFD_POLLED, IMPL_SHARDVM,
               inproc_ack_ns(&o, true, true, true));
        if (o.guest_dir) {
            if (o.shardvm_bin) {
                record(M_BOOT_TO_GUEST, IMPL_SHARDVM,
                       spawn_boot_ms(o.shardvm_bin, &o));
            }
            if (o.qemu_bin) {
                record(M_BOOT_TO_GUEST, IMPL_QEMU,
                       spawn_boot_ms(o.qemu_bin, &o));
            }
        }
    }

    print_report(stdout);
    int ret = 0;
    if (smoke) {
        /* Every in-process metric must have produced a value. */
        int need[] = { M_PIO_EXIT_CPL0, M_IOEVENTFD_EXIT, M_IOEVENTFD_WAKEUP,
                       M_IOEVENTFD_POLLED, M_PIO_EXIT };
        for (size_t k = 0; k < G_N_ELEMENTS(need); k++) {
            if (need[k] == M_PIO_EXIT && !o.guest_dir) {
                continue;
            }
            if (values[need[k]][IMPL_SHARDVM]->len == 0) {
                fprintf(stderr, "bench-vmm: smoke: no %s\n",
                        metrics[need[k]].name);
                ret = 1;
            }
        }
    }
    if (plot_file) {
        char *d = g_path_get_dirname(plot_file);
        g_mkdir_with_parents(d, 0755);
        g_free(d);
        if (plot(plot_file) == 0) {
            printf("chart: %s\n", plot_file);
        } else {
            ret = 1;
        }
    }
    for (int m = 0; m < N_METRICS; m++) {
        for (int i = 0; i < N_IMPLS; i++) {
            g_array_free(values[m][i], TRUE);
        }
    }
    g_free(exe);
    g_free(exe_dir);
    return ret;
}
