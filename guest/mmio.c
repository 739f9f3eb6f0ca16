/*
 * mmio: MMIO micro-benchmark and load generator, the memory-mapped twin of
 * pio.
 *
 *   addr=0xd0000000 count=100000 op=write|read size=1|2|4|8 cpus=all|1
 *   [value=V]
 *
 * @addr must lie below 4 GiB (the identity map) and be aligned to @size.
 * Each participating vCPU performs @count accesses; a write stores @value,
 * or the iteration number truncated to @size.  Then one line:
 *
 *   RESULT mode=mmio count=N ns_per_op=X total_ns=Y cpus=C op=write size=4
 *          addr=0xd0000000 checksum=S
 *
 * with the same meaning as pio's RESULT line.  Exit 0, or 2 for a bad
 * argument.
 */
#include "bench.h"
#include "guest.h"

struct mmio_job {
    uintptr_t addr;
    unsigned size;
    bool write;
    bool fixed;
    uint64_t value;
    uint64_t count;     /* per vCPU */
    uint64_t checksum;  /* summed atomically by every vCPU */
};

static uint64_t mmio_write(const struct mmio_job *j)
{
    uint64_t sum = 0;

    for (uint64_t i = 0; i < j->count; i++) {
        uint64_t v = j->fixed ? j->value : i;

        switch (j->size) {
        case 1: *(volatile uint8_t *)j->addr = (uint8_t)v; sum += (uint8_t)v; break;
        case 2: *(volatile uint16_t *)j->addr = (uint16_t)v; sum += (uint16_t)v; break;
        case 4: *(volatile uint32_t *)j->addr = (uint32_t)v; sum += (uint32_t)v; break;
        default: *(volatile uint64_t *)j->addr = v; sum += v; break;
        }
    }
    return sum;
}

static uint64_t mmio_read(const struct mmio_job *j)
{
    uint64_t sum = 0;

    for (uint64_t i = 0; i < j->count; i++) {
        switch (j->size) {
        case 1: sum += *(volatile uint8_t *)j->addr; break;
        case 2: sum += *(volatile uint16_t *)j->addr; break;
        case 4: sum += *(volatile uint32_t *)j->addr; break;
        default: sum += *(volatile uint64_t *)j->addr; break;
        }
    }
    return sum;
}

static void mmio_worker(unsigned cpu, void *arg)
{
    struct mmio_job *j = arg;
    uint64_t sum = j->write ? mmio_write(j) : mmio_read(j);

    __atomic_fetch_add(&j->checksum, sum, __ATOMIC_RELAXED);
}

int guest_main(void)
{
    static struct mmio_job job;
    const char *op = cmdline_str("op", "write");
    int all = bench_parse_cpus("MMIO", cmdline_str("cpus", "all"));
    uint64_t addr = cmdline_u64("addr", 0xd0000000);
    uint64_t total, ns;
    unsigned ran;

    job.size = (unsigned)cmdline_u64("size", 4);
    job.count = cmdline_u64("count", 100000);
    job.fixed = cmdline_has("value");
    job.value = cmdline_u64("value", 0);
    if (!strcmp(op, "write")) {
        job.write = true;
    } else if (strcmp(op, "read")) {
        con_printf("MMIO error: op=%s (want read or write)\n", op);
        return 2;
    }
    if (job.size != 1 && job.size != 2 && job.size != 4 && job.size != 8) {
        con_printf("MMIO error: size=%u (want 1, 2, 4 or 8)\n", job.size);
        return 2;
    }
    if (addr + job.size > (1ull << 32) || addr % job.size) {
        con_printf("MMIO error: addr=0x%lx (want below 4 GiB, aligned to size)\n",
                   (unsigned long)addr);
        return 2;
    }
    if (all < 0) {
        return 2;
    }
    job.addr = (uintptr_t)addr;

    ns = bench_time(mmio_worker, &job, all, &ran);
    total = job.count * ran;
    con_printf("RESULT mode=mmio count=%lu ns_per_op=%lu total_ns=%lu cpus=%u "
               "op=%s size=%u addr=0x%lx checksum=%lu\n",
               (unsigned long)total,
               (unsigned long)(total ? ns * ran / total : 0),
               (unsigned long)ns, ran, job.write ? "write" : "read", job.size,
               (unsigned long)job.addr, (unsigned long)job.checksum);
    return 0;
}
