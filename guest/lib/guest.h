/*
 * The shardvm test guest runtime: what a guest program (guest/<name>.c)
 * includes.  A program defines guest_main(); the runtime boots, sets up the
 * console, command line, TSC and the other vCPUs, calls guest_main() on the
 * BSP at CPL3, and exits with its return value.
 */
#ifndef GUEST_GUEST_H
#define GUEST_GUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cmdline.h"
#include "console.h"
#include "cpuid.h"
#include "format.h"
#include "io.h"
#include "pci.h"
#include "smp.h"
#include "string.h"
#include "tsc.h"

/* Port of QEMU's isa-debug-exit device (and shardvm's equivalent). */
#define GUEST_EXIT_PORT         0xf4
/* Exit code used when the guest takes a CPU exception (status 251). */
#define GUEST_EXIT_FAULT        125

/*
 * guest_main: the program, run on the BSP at CPL3 once the runtime is up.
 * Returns the exit code (0-127 keep (code << 1) | 1 within 8 bits).
 */
int guest_main(void);

/*
 * guest_exit: write @code to the debug-exit port (32-bit out), so the VMM
 * ends with status (code << 1) | 1.  Should the VMM not end the VM, parks
 * the calling vCPU.  Any vCPU, any CPL.
 */
void guest_exit(uint32_t code) __attribute__((noreturn));

/*
 * guest_park: stop the calling vCPU for good: a CPL3 hlt raises #GP, and
 * the CPL0 fault handler turns that into cli; hlt.  Any vCPU.
 */
void guest_park(void) __attribute__((noreturn));

/* Physical (= virtual) address of the multiboot info the BSP was given. */
extern uint32_t boot_mb_info;

#endif
