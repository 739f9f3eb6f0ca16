/*
 * Port I/O and small CPU helpers for CPL3 guest code (IOPL is 3, so in/out
 * run without a #GP; each one is a VM exit).
 */
#ifndef GUEST_IO_H
#define GUEST_IO_H

#include <stdint.h>

static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outw(uint16_t port, uint16_t v)
{
    __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outl(uint16_t port, uint32_t v)
{
    __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline uint16_t inw(uint16_t port)
{
    uint16_t v;
    __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline uint32_t inl(uint16_t port)
{
    uint32_t v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

/* Spin-wait hint; keeps a polling vCPU from hogging its sibling thread. */
static inline void cpu_relax(void)
{
    __asm__ volatile("pause" : : : "memory");
}

/*
 * cpuid: CPUID executed here, at CPL3.  Under the PVM hypervisor of the
 * project's machines that runs natively and reports the host CPU, not the
 * VMM's CPUID table: for what the VMM says (e.g. the KVM TSC leaf) use
 * cpuid_vmm() (cpuid.h).
 */
static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t *a,
                         uint32_t *b, uint32_t *c, uint32_t *d)
{
    __asm__ volatile("cpuid"
                     : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d)
                     : "a"(leaf), "c"(sub));
}

#endif
