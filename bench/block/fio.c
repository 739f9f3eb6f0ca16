/*
 * The fio side: Debian's fio on the same file, same block size, same
 * depth, run with --thread (one process: its CPU is measured like
 * shardvm's, schedstat of every thread over a window after the warm-up).
 *
 * Engines: threads -> psync with numjobs=QD (QD synchronous jobs, one
 * pread/pwrite each in flight: the same concurrency as QD pool workers);
 * native -> libaio, io_uring -> io_uring, one job with iodepth=QD.
 * IOPS come from fio's JSON (sum over its jobs, ramp time excluded).
 */
#include "bench-block.h"

#include <errno.h>
#include <json-glib/json-glib.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static double job_iops(JsonObject *job)
{
    double sum = 0;
    const char *dirs[] = { "read", "write" };
    for (size_t i = 0; i < G_N_ELEMENTS(dirs); i++) {
        if (json_object_has_member(job, dirs[i])) {
            JsonObject *d = json_object_get_object_member(job, dirs[i]);
            if (d && json_object_has_member(d, "iops")) {
                sum += json_object_get_double_member(d, "iops");
            }
        }
    }
    return sum;
}

/* Sum of the jobs' IOPS in fio's JSON output @path; -1 on error. */
static double parse_iops(const char *path)
{
    JsonParser *parser = json_parser_new();
    GError *err = NULL;
    double iops = -1;
    char *text = NULL;
    gsize len;

    /* fio may print notes before the JSON object: start at the first '{' */
    if (!g_file_get_contents(path, &text, &len, &err)) {
        goto out;
    }
    char *brace = strchr(text, '{');
    if (!brace || !json_parser_load_from_data(parser, brace, -1, &err)) {
        goto out;
    }
    JsonNode *root = json_parser_get_root(parser);
    if (!JSON_NODE_HOLDS_OBJECT(root)) {
        goto out;
    }
    JsonArray *jobs = json_object_get_array_member(
        json_node_get_object(root), "jobs");
    if (!jobs) {
        goto out;
    }
    iops = 0;
    for (guint i = 0; i < json_array_get_length(jobs); i++) {
        JsonObject *job = json_array_get_object_element(jobs, i);
        if (json_object_has_member(job, "error") &&
            json_object_get_int_member(job, "error") != 0) {
            fprintf(stderr, "bench-block: fio job error %d\n",
                    (int)json_object_get_int_member(job, "error"));
            iops = -1;
            break;
        }
        iops += job_iops(job);
    }
out:
    if (err) {
        fprintf(stderr, "bench-block: fio output %s: %s\n", path,
                err->message);
        g_error_free(err);
    }
    g_free(text);
    g_object_unref(parser);
    return iops;
}

int bench_fio_run(const BenchOpts *o, const BenchPoint *p, BenchResult *out)
{
    GError *err = NULL;
    char *outfile = g_strdup_printf("%s/bench-block-fio-%d.json",
                                    g_get_tmp_dir(), (int)getpid());
    bool psync = p->aio == BLOCK_AIO_THREADS;
    /* fio's runtime does not count ramp_time; leave a margin after the
     * window so fio is still in its steady state when it closes. */
    int ramp_ms = (int)(o->warmup_s * 1000);
    int run_ms = (int)(o->duration_s * 1000) + 300;
    GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
    int ret = -1;

#define ARG(...) g_ptr_array_add(argv, g_strdup_printf(__VA_ARGS__))
    ARG("%s", o->fio_bin);
    ARG("--name=bench");
    ARG("--filename=%s", o->file[p->target]);
    ARG("--size=%" G_GUINT64_FORMAT, (guint64)o->size);
    ARG("--bs=%u", BENCH_BS);
    ARG("--rw=%s", bench_rw_name(p));
    ARG("--ioengine=%s", bench_fio_engine(p->aio));
    ARG("--iodepth=%u", psync ? 1 : p->qd);
    ARG("--numjobs=%u", psync ? p->qd : 1);
    ARG("--direct=%d", p->target == TARGET_DISK);
    ARG("--thread");
    ARG("--time_based");
    ARG("--ramp_time=%dms", ramp_ms);
    ARG("--runtime=%dms", run_ms);
    ARG("--norandommap");
    ARG("--randrepeat=0");
    ARG("--invalidate=0");
    ARG("--fallocate=none");
    ARG("--create_on_open=0");
    ARG("--allow_file_create=0");
    ARG("--disk_util=0");
    ARG("--output-format=json");
    ARG("--output=%s", outfile);
#undef ARG
    g_ptr_array_add(argv, NULL);

    out->iops = out->cpu_ns_per_io = -1;
    GPid pid;
    int64_t t0 = bench_now_ns();
    if (!g_spawn_async(NULL, (char **)argv->pdata, NULL,
                       G_SPAWN_DO_NOT_REAP_CHILD |
                       G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, &pid, &err)) {
        fprintf(stderr, "bench-block: fio: %s\n", err->message);
        g_error_free(err);
        goto out;
    }
    /* fio needs a few ms to start its jobs: the window opens a little
     * later than shardvm's, still inside fio's ramp + runtime */
    bench_sleep_until(t0 + (int64_t)(o->warmup_s * 1e9) + 50000000);
    int64_t w0 = bench_now_ns();
    int64_t c0 = bench_proc_cpu_ns(pid);
    bench_sleep_until(w0 + (int64_t)(o->duration_s * 1e9));
    int64_t w1 = bench_now_ns();
    int64_t c1 = bench_proc_cpu_ns(pid);
    int status;
    bool early = waitpid(pid, &status, WNOHANG) == pid;
    if (!early && waitpid(pid, &status, 0) != pid) {
        fprintf(stderr, "bench-block: fio: waitpid: %s\n", g_strerror(errno));
        goto out;
    }
    if (early) {
        fprintf(stderr, "bench-block: fio ended before the window closed\n");
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench-block: fio failed (status 0x%x): %s\n",
                status, outfile);
    } else {
        double iops = parse_iops(outfile);
        if (iops > 0 && c0 >= 0 && c1 > c0) {
            out->iops = iops;
            out->cpu_ns_per_io = (double)(c1 - c0) /
                                 (iops * (double)(w1 - w0) / 1e9);
            ret = 0;
        } else {
            fprintf(stderr, "bench-block: fio: no I/O or no CPU time in the "
                    "window (iops %.0f, cpu %" G_GINT64_FORMAT " ns)\n", iops,
                    (gint64)(c1 - c0));
        }
    }
out:
    if (ret == 0 || !o->verbose) {
        unlink(outfile);
    }
    g_free(outfile);
    g_ptr_array_unref(argv);
    return ret;
}
