/*
 * Time from the TSC, read with rdtsc at CPL3 (no exit).  The frequency
 * comes from, in this order (first that answers wins):
 *   1. CPUID 0x15 (crystal clock * ratio), else CPUID 0x16 (base MHz)
 *   2. the KVM leaf 0x40000010 (EAX = TSC kHz), when CPUID 0x40000000
 *      says "KVMKVMKVM" and reaches that leaf
 *   3. calibration against PIT channel 2 (ports 0x42/0x43/0x61), 50 ms
 * and when all fail a guessed 1 GHz with source "none".
 */
#ifndef GUEST_TSC_H
#define GUEST_TSC_H

#include <stdint.h>

enum tsc_source {
    TSC_SOURCE_NONE,
    TSC_SOURCE_CPUID_15,
    TSC_SOURCE_CPUID_16,
    TSC_SOURCE_KVM,
    TSC_SOURCE_PIT,
};

/* tsc_init: find the TSC frequency.  BSP, once, before SMP start. */
void tsc_init(void);

/* tsc_hz: the TSC frequency in Hz (after tsc_init).  Any vCPU. */
uint64_t tsc_hz(void);

/* tsc_source / tsc_source_name: where tsc_hz came from ("cpuid15",
 * "cpuid16", "kvm", "pit", "none"). */
enum tsc_source tsc_source(void);
const char *tsc_source_name(void);

/* tsc_to_ns / tsc_from_ns: convert between cycles and nanoseconds. */
uint64_t tsc_to_ns(uint64_t cycles);
uint64_t tsc_from_ns(uint64_t ns);

/*
 * tsc_read: the TSC, not reordered before earlier loads (lfence), so a
 * measured region does not leak out of the interval.
 */
static inline uint64_t tsc_read(void)
{
    uint32_t lo, hi;

    __asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi) : : "memory");
    return ((uint64_t)hi << 32) | lo;
}

/* tsc_ns: nanoseconds since an arbitrary origin. */
static inline uint64_t tsc_ns(void)
{
    return tsc_to_ns(tsc_read());
}

#endif
