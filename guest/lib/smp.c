/*
 * SMP bring-up and work dispatch, all at CPL3 with spinning (no IPIs: the
 * guest has no interrupts).
 *
 * Check-in: smp_state holds the number of APs that checked in plus the
 * SMP_CLOSED bit.  An AP increments the count with a CAS only while the
 * bit is clear; the BSP sets the bit when it stops waiting, so an AP that
 * arrives late parks instead of half-joining later smp_run() calls.
 */
#include "smp.h"

#include <stdbool.h>

#include "../boot/layout.h"
#include "guest.h"
#include "io.h"
#include "tsc.h"

#define SMP_CLOSED      0x80000000u

extern char ustacks[];

/* Set (release) by the BSP once its shared set-up is done; APs acquire. */
static int smp_setup_done;
/* AP check-in count | SMP_CLOSED; see above. */
static unsigned smp_state;
/* Written by the BSP before SMP_CLOSED, read-only afterwards (except that
 * smp_park_others() drops smp_online to 1 once the APs are gone). */
static unsigned smp_announced = 1;
static unsigned smp_online = 1;

/*
 * Work hand-off.  The BSP writes fn/arg/done, then bumps gen (release);
 * an AP that sees a new gen (acquire) reads fn/arg, runs it and bumps done
 * (release); the BSP waits for done (acquire) == number of APs.
 */
static struct {
    smp_work_fn fn;
    void *arg;
    unsigned gen;
    unsigned done;
    unsigned barrier_count;     /* arrivals at the current barrier */
    unsigned barrier_gen;       /* bumped when all have arrived */
    unsigned nrun;              /* vCPUs running the current work */
} smp_work;

unsigned smp_cpus(void)
{
    return smp_online;
}

unsigned smp_cpus_announced(void)
{
    return smp_announced;
}

unsigned smp_cpu_id(void)
{
    uintptr_t sp = (uintptr_t)__builtin_frame_address(0);

    return (unsigned)((sp - (uintptr_t)ustacks) >> GUEST_USTACK_SHIFT);
}

void smp_bsp_start(unsigned announced, uint64_t wait_ns)
{
    uint64_t deadline;
    unsigned state;

    if (announced < 1) {
        announced = 1;
    }
    if (announced > GUEST_MAX_CPUS) {
        announced = GUEST_MAX_CPUS;
    }
    smp_announced = announced;
    __atomic_store_n(&smp_setup_done, 1, __ATOMIC_RELEASE);

    deadline = tsc_read() + tsc_from_ns(wait_ns);
    while (__atomic_load_n(&smp_state, __ATOMIC_ACQUIRE) < announced - 1 &&
           tsc_read() < deadline) {
        cpu_relax();
    }
    state = __atomic_fetch_or(&smp_state, SMP_CLOSED, __ATOMIC_ACQ_REL);
    smp_online = 1 + (state & ~SMP_CLOSED);
}

void smp_ap_main(unsigned cpu)
{
    unsigned seen = 0, state;

    while (!__atomic_load_n(&smp_setup_done, __ATOMIC_ACQUIRE)) {
        cpu_relax();
    }
    state = __atomic_load_n(&smp_state, __ATOMIC_RELAXED);
    do {
        if (state & SMP_CLOSED) {
            guest_park();       /* too late: the BSP stopped counting */
        }
    } while (!__atomic_compare_exchange_n(&smp_state, &state, state + 1, false,
                                          __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
    for (;;) {
        unsigned gen = __atomic_load_n(&smp_work.gen, __ATOMIC_ACQUIRE);

        if (gen == seen) {
            cpu_relax();
            continue;
        }
        seen = gen;
        if (!smp_work.fn) {
            __atomic_fetch_add(&smp_work.done, 1, __ATOMIC_RELEASE);
            guest_park();       /* smp_park_others() */
        }
        smp_work.fn(cpu, smp_work.arg);
        __atomic_fetch_add(&smp_work.done, 1, __ATOMIC_RELEASE);
    }
}

unsigned smp_run(smp_work_fn fn, void *arg)
{
    unsigned aps = smp_online - 1;

    smp_work.fn = fn;
    smp_work.arg = arg;
    smp_work.nrun = smp_online;
    smp_work.barrier_count = 0;
    __atomic_store_n(&smp_work.done, 0, __ATOMIC_RELAXED);
    __atomic_fetch_add(&smp_work.gen, 1, __ATOMIC_RELEASE);
    fn(0, arg);
    while (__atomic_load_n(&smp_work.done, __ATOMIC_ACQUIRE) < aps) {
        cpu_relax();
    }
    return smp_online;
}

void smp_park_others(void)
{
    unsigned aps = smp_online - 1;

    if (!aps) {
        return;
    }
    smp_work.fn = NULL;
    __atomic_store_n(&smp_work.done, 0, __ATOMIC_RELAXED);
    __atomic_fetch_add(&smp_work.gen, 1, __ATOMIC_RELEASE);
    /* Wait until they have seen it: smp_work is reused afterwards. */
    while (__atomic_load_n(&smp_work.done, __ATOMIC_ACQUIRE) < aps) {
        cpu_relax();
    }
    smp_online = 1;
}

void smp_barrier(void)
{
    unsigned gen = __atomic_load_n(&smp_work.barrier_gen, __ATOMIC_ACQUIRE);

    if (__atomic_add_fetch(&smp_work.barrier_count, 1, __ATOMIC_ACQ_REL) ==
        smp_work.nrun) {
        __atomic_store_n(&smp_work.barrier_count, 0, __ATOMIC_RELAXED);
        __atomic_fetch_add(&smp_work.barrier_gen, 1, __ATOMIC_RELEASE);
        return;
    }
    while (__atomic_load_n(&smp_work.barrier_gen, __ATOMIC_ACQUIRE) == gen) {
        cpu_relax();
    }
}
