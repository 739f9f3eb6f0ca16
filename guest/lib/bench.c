/* Start/stop a timed region on all vCPUs at once, with barriers. */
#include "bench.h"

#include "console.h"
#include "string.h"
#include "tsc.h"

struct bench_ctx {
    smp_work_fn fn;
    void *arg;
    uint64_t t0, t1;            /* written by vCPU 0 only */
};

static void bench_worker(unsigned cpu, void *opaque)
{
    struct bench_ctx *b = opaque;

    smp_barrier();
    if (cpu == 0) {
        b->t0 = tsc_read();
    }
    b->fn(cpu, b->arg);
    smp_barrier();
    if (cpu == 0) {
        b->t1 = tsc_read();
    }
}

uint64_t bench_time(smp_work_fn fn, void *arg, bool all, unsigned *ran)
{
    struct bench_ctx b = { fn, arg, 0, 0 };

    if (!all) {
        smp_park_others();      /* idle APs would spin on host CPUs */
    }
    *ran = smp_run(bench_worker, &b);
    return tsc_to_ns(b.t1 - b.t0);
}

int bench_parse_cpus(const char *what, const char *cpus)
{
    if (!strcmp(cpus, "all")) {
        return 1;
    }
    if (!strcmp(cpus, "1")) {
        return 0;
    }
    con_printf("%s error: cpus=%s (want all or 1)\n", what, cpus);
    return -1;
}
