/*
 * Timing a loop on one or on every vCPU, for the micro-benchmark guests.
 */
#ifndef GUEST_BENCH_H
#define GUEST_BENCH_H

#include <stdbool.h>
#include <stdint.h>

#include "smp.h"

/*
 * bench_time: run @fn(cpu, @arg) on every online vCPU (@all) or on the BSP
 * alone (the APs are parked first, see smp_park_others), all starting
 * together after a barrier.  Returns the wall time in ns on vCPU 0 from
 * the start barrier to the end barrier; *@ran gets the number of vCPUs.
 * BSP only.
 */
uint64_t bench_time(smp_work_fn fn, void *arg, bool all, unsigned *ran);

/*
 * bench_parse_cpus: "all" -> true, "1" -> false; anything else prints a
 * "<WHAT> error" line and returns -1.
 */
int bench_parse_cpus(const char *what, const char *cpus);

#endif
