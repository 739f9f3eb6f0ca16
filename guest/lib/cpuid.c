/* Lookup in the CPUID answers the boot stub saved at CPL0. */
#include "cpuid.h"

#include "../boot/layout.h"

/* Written by the BSP's stub before any C code runs; read-only after. */
extern const uint32_t boot_cpuid[GUEST_CPUID_SLOTS][4];

static const uint32_t cpuid_leaves[GUEST_CPUID_SLOTS] = {
    0, 0x15, 0x16, 0x40000000, 0x40000010,
};

bool cpuid_vmm(uint32_t leaf, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d)
{
    for (int i = 0; i < GUEST_CPUID_SLOTS; i++) {
        if (cpuid_leaves[i] == leaf) {
            *a = boot_cpuid[i][0];
            *b = boot_cpuid[i][1];
            *c = boot_cpuid[i][2];
            *d = boot_cpuid[i][3];
            return true;
        }
    }
    return false;
}
