/*
 * External VMMs (qemu-system-x86_64, build/shardvm) run with QEMU's
 * command-line spelling and the same test guest; their serial output is
 * read from a pipe with a host timestamp per line.
 */
#include "bench-vmm.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * Run @bin on @kernel with @append; return its whole output in *@out and
 * the time from spawn to the first line starting with @marker in
 * *@marker_ns (-1 if none).  0, or -1 on spawn failure / timeout.
 */
static int run_vmm(const char *bin, const char *kernel, const char *append,
                   const char *marker, GString **out, int64_t *marker_ns)
{
    const char *argv[] = {
        bin, "-enable-kvm", "-cpu", "qemu64", "-m", "256M", "-nographic",
        "-no-reboot", "-kernel", kernel, "-append", append,
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", NULL,
    };
    GPid pid;
    int fd;
    GError *err = NULL;

    *out = g_string_new(NULL);
    *marker_ns = -1;
    int64_t t0 = now_ns();
    if (!g_spawn_async_with_pipes(NULL, (char **)argv, NULL,
                                  G_SPAWN_DO_NOT_REAP_CHILD |
                                  G_SPAWN_STDERR_TO_DEV_NULL,
                                  NULL, NULL, &pid, NULL, &fd, NULL, &err)) {
        fprintf(stderr, "bench-vmm: %s: %s\n", bin, err->message);
        g_error_free(err);
        return -1;
    }

    int ret = 0;
    size_t line_start = 0;
    int64_t deadline = t0 + 180 * (int64_t)1000000000;
    for (;;) {
        int64_t left = (deadline - now_ns()) / 1000000;
        struct pollfd p = { fd, POLLIN, 0 };
        if (left <= 0 || poll(&p, 1, (int)left) == 0) {
            fprintf(stderr, "bench-vmm: %s timed out\n", bin);
            kill(pid, SIGKILL);
            ret = -1;
            break;
        }
        char buf[4096];
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        int64_t t = now_ns();
        g_string_append_len(*out, buf, n);
        /* Check every completed line for the marker. */
        char *nl;
        while (*marker_ns < 0 &&
               (nl = memchr((*out)->str + line_start, '\n',
                            (*out)->len - line_start))) {
            if (!strncmp((*out)->str + line_start, marker, strlen(marker))) {
                *marker_ns = t - t0;
            }
            line_start = (size_t)(nl - (*out)->str) + 1;
        }
    }
    close(fd);
    int status;
    waitpid(pid, &status, 0);
    g_spawn_close_pid(pid);
    return ret;
}

double spawn_pio_exit_ns(const char *bin, const BenchVmmOpts *o)
{
    char *kernel = g_build_filename(o->guest_dir, "pio.elf", NULL);
    char *append = g_strdup_printf("count=%" G_GUINT64_FORMAT, o->pio_count);
    GString *out;
    int64_t t;
    double ret = -1;

    if (run_vmm(bin, kernel, append, "RESULT", &out, &t) == 0) {
        const char *r = strstr(out->str, "ns_per_op=");
        if (r) {
            ret = g_ascii_strtod(r + strlen("ns_per_op="), NULL);
        } else {
            fprintf(stderr, "bench-vmm: no RESULT from %s:\n%s\n", bin,
                    out->str);
        }
    }
    g_string_free(out, TRUE);
    g_free(append);
    g_free(kernel);
    return ret;
}

double spawn_boot_ms(const char *bin, const BenchVmmOpts *o)
{
    char *kernel = g_build_filename(o->guest_dir, "hello.elf", NULL);
    GString *out;
    int64_t t;
    double ret = -1;

    if (run_vmm(bin, kernel, "exit=0", "HELLO", &out, &t) == 0 && t >= 0) {
        ret = (double)t / 1e6;
    } else {
        fprintf(stderr, "bench-vmm: no HELLO line from %s\n", bin);
    }
    g_string_free(out, TRUE);
    g_free(kernel);
    return ret;
}
