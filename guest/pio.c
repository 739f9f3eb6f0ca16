/*
 * pio: port I/O micro-benchmark and load generator.
 *
 *   port=0x510 count=100000 op=out|in size=1|2|4 cpus=all|1 [value=V]
 *
 * Each participating vCPU performs @count accesses to @port (so the total
 * is count * cpus), all starting together after a barrier.  With cpus=1
 * the other vCPUs are parked first (halted, not spinning).  An "out"
 * writes @value, or the iteration number (truncated to @size) when no
 * value is given.  Then one line:
 *
 *   RESULT mode=pio count=N ns_per_op=X total_ns=Y cpus=C op=out size=4
 *          port=0x510 checksum=S
 *
 * (one line) where N is the total number of accesses, Y the wall time from
 * the start barrier to the end barrier on vCPU 0, X = Y * C / N (the mean
 * time of one access on one vCPU), and S the 64-bit sum of all values
 * written or read.  Exit code 0, or 2 for a bad argument.
 */
#include "bench.h"
#include "guest.h"

struct pio_job {
    uint16_t port;
    unsigned size;
    bool out;
    bool fixed;         /* value given: write it every time */
    uint32_t value;
    uint64_t count;     /* per vCPU */
    uint64_t checksum;  /* summed atomically by every vCPU */
};

static uint64_t pio_out(const struct pio_job *j)
{
    uint64_t sum = 0;

    for (uint64_t i = 0; i < j->count; i++) {
        uint32_t v = j->fixed ? j->value : (uint32_t)i;

        switch (j->size) {
        case 1: outb(j->port, (uint8_t)v); sum += (uint8_t)v; break;
        case 2: outw(j->port, (uint16_t)v); sum += (uint16_t)v; break;
        default: outl(j->port, v); sum += v; break;
        }
    }
    return sum;
}

static uint64_t pio_in(const struct pio_job *j)
{
    uint64_t sum = 0;

    for (uint64_t i = 0; i < j->count; i++) {
        switch (j->size) {
        case 1: sum += inb(j->port); break;
        case 2: sum += inw(j->port); break;
        default: sum += inl(j->port); break;
        }
    }
    return sum;
}

static void pio_worker(unsigned cpu, void *arg)
{
    struct pio_job *j = arg;
    uint64_t sum = j->out ? pio_out(j) : pio_in(j);

    __atomic_fetch_add(&j->checksum, sum, __ATOMIC_RELAXED);
}

int guest_main(void)
{
    static struct pio_job job;
    const char *op = cmdline_str("op", "out");
    int all = bench_parse_cpus("PIO", cmdline_str("cpus", "all"));
    uint64_t total, ns;
    unsigned ran;

    job.port = (uint16_t)cmdline_u64("port", 0x510);
    job.size = (unsigned)cmdline_u64("size", 4);
    job.count = cmdline_u64("count", 100000);
    job.fixed = cmdline_has("value");
    job.value = (uint32_t)cmdline_u64("value", 0);
    if (!strcmp(op, "out")) {
        job.out = true;
    } else if (strcmp(op, "in")) {
        con_printf("PIO error: op=%s (want in or out)\n", op);
        return 2;
    }
    if (job.size != 1 && job.size != 2 && job.size != 4) {
        con_printf("PIO error: size=%u (want 1, 2 or 4)\n", job.size);
        return 2;
    }
    if (all < 0) {
        return 2;
    }

    ns = bench_time(pio_worker, &job, all, &ran);
    total = job.count * ran;
    con_printf("RESULT mode=pio count=%lu ns_per_op=%lu total_ns=%lu cpus=%u "
               "op=%s size=%u port=0x%x checksum=%lu\n",
               (unsigned long)total,
               (unsigned long)(total ? ns * ran / total : 0),
               (unsigned long)ns, ran, job.out ? "out" : "in", job.size,
               job.port, (unsigned long)job.checksum);
    return 0;
}
