/*
 * TSC frequency discovery.  QEMU's qemu64 model has neither CPUID 0x15 nor
 * 0x16 and only offers the KVM leaf 0x40000010 with invtsc/tsc-frequency,
 * so under QEMU the PIT calibration is what normally runs; shardvm fills
 * the KVM leaf from KVM_GET_TSC_KHZ (see docs/guest.md).
 */
#include "tsc.h"

#include <stdbool.h>

#include "cpuid.h"
#include "io.h"
#include "string.h"

#define PIT_HZ          1193182u
#define PIT_CH2         0x42
#define PIT_CMD         0x43
#define PIT_PORT_B      0x61            /* bit 0: ch2 gate; bit 1: speaker; bit 5: ch2 out */
#define PIT_CAL_TICKS   59659u          /* 50 ms */
#define PIT_MIN_POLLS   4               /* fewer: no PIT (OUT2 already high) */
/* Give up after this many TSC cycles (~0.4 s at 5 GHz): no PIT, or OUT2
 * never rises (a VMM without one may read port 0x61 as 0). */
#define PIT_MAX_CYCLES  (1ull << 31)
#define TSC_GUESS_HZ    1000000000ull

/* Written once by the BSP before the APs are released (release/acquire
 * through the SMP set-up flag), read-only afterwards. */
static uint64_t tsc_freq = TSC_GUESS_HZ;
static enum tsc_source tsc_src = TSC_SOURCE_NONE;

static bool tsc_from_cpuid(void)
{
    uint32_t max, a, b, c, d;

    cpuid_vmm(0, &max, &b, &c, &d);
    if (max >= 0x15) {
        cpuid_vmm(0x15, &a, &b, &c, &d);
        if (a && b && c) {
            tsc_freq = (uint64_t)c * b / a;
            tsc_src = TSC_SOURCE_CPUID_15;
            return true;
        }
    }
    if (max >= 0x16) {
        cpuid_vmm(0x16, &a, &b, &c, &d);
        if (a & 0xffff) {
            tsc_freq = (uint64_t)(a & 0xffff) * 1000000;
            tsc_src = TSC_SOURCE_CPUID_16;
            return true;
        }
    }
    return false;
}

static bool tsc_from_kvm(void)
{
    uint32_t max, sig[3], a, b, c, d;

    cpuid_vmm(0x40000000, &max, &sig[0], &sig[1], &sig[2]);
    if (memcmp(sig, "KVMKVMKVM\0\0\0", 12) || max < 0x40000010) {
        return false;
    }
    cpuid_vmm(0x40000010, &a, &b, &c, &d);
    if (!a) {
        return false;
    }
    tsc_freq = (uint64_t)a * 1000;
    tsc_src = TSC_SOURCE_KVM;
    return true;
}

/*
 * Count TSC cycles while PIT channel 2 counts PIT_CAL_TICKS down in mode 0
 * (OUT2, read at port 0x61 bit 5, goes high at terminal count).  Each poll
 * is a PIO exit (~25 us), which bounds the error to well under 0.1%.
 */
static bool tsc_from_pit(void)
{
    uint8_t b = inb(PIT_PORT_B);
    uint64_t t0, t1;
    unsigned polls = 0;

    outb(PIT_PORT_B, (b & ~0x02) | 0x01);          /* gate on, speaker off */
    outb(PIT_CMD, 0xb0);                            /* ch2, lo/hi, mode 0, binary */
    outb(PIT_CH2, PIT_CAL_TICKS & 0xff);
    outb(PIT_CH2, PIT_CAL_TICKS >> 8);
    t0 = tsc_read();
    for (;;) {
        t1 = tsc_read();
        if (inb(PIT_PORT_B) & 0x20) {
            break;
        }
        polls++;
        if (t1 - t0 > PIT_MAX_CYCLES) {
            polls = 0;
            break;
        }
    }
    outb(PIT_PORT_B, b);
    if (polls < PIT_MIN_POLLS) {
        return false;
    }
    tsc_freq = (t1 - t0) * PIT_HZ / PIT_CAL_TICKS;
    tsc_src = TSC_SOURCE_PIT;
    return tsc_freq != 0;
}

void tsc_init(void)
{
    if (tsc_from_cpuid() || tsc_from_kvm() || tsc_from_pit()) {
        return;
    }
    tsc_freq = TSC_GUESS_HZ;
    tsc_src = TSC_SOURCE_NONE;
}

uint64_t tsc_hz(void)
{
    return tsc_freq;
}

enum tsc_source tsc_source(void)
{
    return tsc_src;
}

const char *tsc_source_name(void)
{
    switch (tsc_src) {
    case TSC_SOURCE_CPUID_15: return "cpuid15";
    case TSC_SOURCE_CPUID_16: return "cpuid16";
    case TSC_SOURCE_KVM:      return "kvm";
    case TSC_SOURCE_PIT:      return "pit";
    default:                  return "none";
    }
}

/* Split so cycles * 1e9 cannot overflow for any TSC below ~18 GHz. */
uint64_t tsc_to_ns(uint64_t cycles)
{
    return cycles / tsc_freq * 1000000000ull +
           cycles % tsc_freq * 1000000000ull / tsc_freq;
}

uint64_t tsc_from_ns(uint64_t ns)
{
    return ns / 1000000000ull * tsc_freq +
           ns % 1000000000ull * tsc_freq / 1000000000ull;
}
