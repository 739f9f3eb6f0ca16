/*
 * Constants shared by the boot stub (entry.S) and the C runtime.
 * Plain #defines only: this header is included from assembly.
 */
#ifndef GUEST_BOOT_LAYOUT_H
#define GUEST_BOOT_LAYOUT_H

/* Where the image is linked and loaded (physical == virtual, identity map). */
#define GUEST_LOAD_ADDR         0x100000

/* Highest number of vCPUs the guest can run on; more are parked at CPL0. */
#define GUEST_MAX_CPUS          32

/* Per-CPU CPL3 stack (C code) and CPL0 stack (fault handler), as shifts. */
#define GUEST_USTACK_SHIFT      16      /* 64 KiB */
#define GUEST_KSTACK_SHIFT      13      /* 8 KiB */
#define GUEST_USTACK_SIZE       (1 << GUEST_USTACK_SHIFT)
#define GUEST_KSTACK_SIZE       (1 << GUEST_KSTACK_SHIFT)

/*
 * One 64-bit TSS per CPU, 16 KiB apart: 104 bytes of TSS, then an I/O
 * permission bitmap of 8192 zero bytes (every port allowed at CPL3) and
 * the 0xff byte the CPU wants after it.
 */
#define GUEST_TSS_SHIFT         14
#define GUEST_TSS_IOMAP         104
#define GUEST_TSS_LIMIT         (GUEST_TSS_IOMAP + 8192)

/* GDT selectors (see gdt in entry.S). */
#define GUEST_SEL_KCODE         0x08
#define GUEST_SEL_KDATA         0x10
#define GUEST_SEL_UDATA         0x1b    /* 0x18 | RPL 3 */
#define GUEST_SEL_UCODE         0x23    /* 0x20 | RPL 3 */
#define GUEST_SEL_TSS0          0x28    /* CPU n uses 0x28 + 16 * n */

/* Number of IDT entries: CPU exceptions 0-31 (the rest stay empty). */
#define GUEST_IDT_ENTRIES       32

/*
 * CPUID leaves the BSP's stub executes at CPL0 and saves (16 bytes each:
 * EAX, EBX, ECX, EDX) for the C code: under PVM a CPL3 cpuid runs natively
 * and reports the host CPU, not the VMM's CPUID table.  Slot order.
 */
#define GUEST_CPUID_SLOTS       5       /* 0, 0x15, 0x16, 0x40000000, 0x40000010 */

/* Boot protocol magics. */
#define MULTIBOOT_HEADER_MAGIC  0x1BADB002
#define MULTIBOOT_BOOT_MAGIC    0x2BADB002
#define SHVM_MAGIC              0x4D564853      /* "SHVM" */

#endif
