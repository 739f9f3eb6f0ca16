/*
 * CPUID as the VMM configured it.  The BSP's boot stub runs cpuid at CPL0
 * (where the hypervisor emulates it from the VMM's CPUID table) for a few
 * leaves and saves the answers; see GUEST_CPUID_SLOTS in boot/layout.h.
 */
#ifndef GUEST_CPUID_H
#define GUEST_CPUID_H

#include <stdbool.h>
#include <stdint.h>

/*
 * cpuid_vmm: the saved answer for @leaf (subleaf 0): 0, 0x15, 0x16,
 * 0x40000000 or 0x40000010.  Returns false for any other leaf.  Any vCPU.
 */
bool cpuid_vmm(uint32_t leaf, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d);

#endif
