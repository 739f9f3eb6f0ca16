/*
 * Running code on every vCPU.  APs (vCPUs 1..n-1, started by shardvm per
 * the SMP protocol in docs/guest.md) check in during boot; afterwards they
 * spin at CPL3 waiting for work handed out by smp_run().  Under QEMU no AP
 * ever starts and everything here degenerates to the BSP alone.
 */
#ifndef GUEST_SMP_H
#define GUEST_SMP_H

#include <stdint.h>

/* A function run on each vCPU: @cpu is the vCPU index (0 = BSP). */
typedef void (*smp_work_fn)(unsigned cpu, void *arg);

/* smp_cpus: vCPUs online (the BSP plus the APs that checked in). Any vCPU. */
unsigned smp_cpus(void);

/* smp_cpus_announced: vCPUs the VMM said it started (ECX at entry; 1 on QEMU). */
unsigned smp_cpus_announced(void);

/* smp_cpu_id: index of the calling vCPU (from its stack).  Any vCPU. */
unsigned smp_cpu_id(void);

/*
 * smp_run: run @fn(cpu, @arg) on every online vCPU, the BSP included, and
 * return when all have returned.  BSP only (vCPU 0, from guest_main), not
 * nested.  Returns the number of vCPUs that ran @fn.
 */
unsigned smp_run(smp_work_fn fn, void *arg);

/*
 * smp_park_others: park every AP for good (hlt at CPL0, so their host
 * threads sleep instead of spinning) and leave the BSP alone: later
 * smp_run() calls run on the BSP only.  Use before timing anything on one
 * vCPU, so idle APs do not compete with the VMM for host CPUs.  BSP only.
 */
void smp_park_others(void);

/*
 * smp_barrier: wait until every vCPU running the current smp_run work has
 * reached the barrier.  Call from inside a work function on all of them,
 * the same number of times.
 */
void smp_barrier(void);

/* Internal: called by the runtime start code (start.c). */
void smp_bsp_start(unsigned announced, uint64_t wait_ns);
void smp_ap_main(unsigned cpu) __attribute__((noreturn));

#endif
