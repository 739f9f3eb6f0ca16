/*
 * Boot stub of the shardvm test guest: multiboot v1 entry, switch to long
 * mode, per-CPU TSS, then iretq to CPL3 with IOPL=3 and IF=0.
 *
 * On this platform every instruction executed at CPL0 (and in 32-bit
 * protected mode) is emulated at ~1 us each, so the stub does the least it
 * can: the page tables and the GDT are static data, the IDT is filled in
 * later by C code running natively at CPL3 (all memory is mapped
 * user-writable), and nothing here loops.
 *
 * Entry state (multiboot v1 + the shardvm SMP protocol, see docs/guest.md):
 *   BSP: EAX = 0x2BADB002, EBX = multiboot info; on shardvm also
 *        ECX = number of vCPUs and EDX = "SHVM".
 *   AP:  EAX = "SHVM", EBX = vCPU index, ECX = number of vCPUs, EDX = 0.
 */
#include "layout.h"

#define CR0_PE          (1 << 0)
#define CR0_MP          (1 << 1)
#define CR0_EM          (1 << 2)
#define CR0_TS          (1 << 3)
#define CR0_NE          (1 << 5)
#define CR0_PG          (1 << 31)
#define CR4_PAE         (1 << 5)
#define CR4_OSFXSR      (1 << 9)
#define CR4_OSXMMEXCPT  (1 << 10)
#define MSR_EFER        0xC0000080
#define EFER_LME        (1 << 8)

#define PTE_P           0x001
#define PTE_RW          0x002
#define PTE_US          0x004
#define PTE_PWT         0x008
#define PTE_PCD         0x010
#define PTE_PS          0x080
#define PTE_DIR         (PTE_P | PTE_RW | PTE_US)

/* ---------------------------------------------------------------------- */
        .section .multiboot, "a"
        .balign 4
multiboot_header:
        .long   MULTIBOOT_HEADER_MAGIC
        /* bit 1: memory info wanted; bit 16: the address fields are valid */
        .long   0x00010002
        .long   -(MULTIBOOT_HEADER_MAGIC + 0x00010002)
        .long   multiboot_header        /* header_addr */
        .long   _image_start            /* load_addr */
        .long   _load_end               /* load_end_addr */
        .long   _bss_end                /* bss_end_addr */
        .long   _start                  /* entry_addr */

/* ---------------------------------------------------------------------- */
        .section .text.boot, "ax"
        .code32
        .globl  _start
_start:
        cli
        cld
        cmpl    $SHVM_MAGIC, %eax
        je      1f
        /* BSP: keep the multiboot info; vCPU count from shardvm, else 1. */
        movl    %eax, boot_magic
        movl    %ebx, boot_mb_info
        xorl    %esi, %esi              /* ESI = CPU index */
        movl    $1, %edi                /* EDI = number of vCPUs */
        cmpl    $SHVM_MAGIC, %edx
        jne     2f
        movl    %ecx, %edi
        jmp     2f
1:      /* AP: index in EBX.  Nothing shared to wait for here: page tables
         * and GDT are static; the C side waits for the BSP's set-up flag. */
        movl    %ebx, %esi
        movl    %ecx, %edi
        testl   %esi, %esi              /* index 0 is the BSP's: broken VMM */
        jz      park32
        cmpl    $GUEST_MAX_CPUS, %esi
        jae     park32
2:
        lgdt    gdt_ptr
        movl    %cr4, %eax
        orl     $(CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT), %eax
        movl    %eax, %cr4
        movl    $pml4, %eax
        movl    %eax, %cr3
        movl    $MSR_EFER, %ecx
        rdmsr
        orl     $EFER_LME, %eax
        wrmsr
        movl    %cr0, %eax
        andl    $~(CR0_EM | CR0_TS), %eax
        orl     $(CR0_PG | CR0_PE | CR0_MP | CR0_NE), %eax
        movl    %eax, %cr0
        ljmp    $GUEST_SEL_KCODE, $long_entry

park32:
        hlt
        jmp     park32

        .code64
.macro  CPUID_SAVE leaf, slot
        movl    $\leaf, %eax
        xorl    %ecx, %ecx
        cpuid
        movl    %eax, boot_cpuid + \slot * 16
        movl    %ebx, boot_cpuid + \slot * 16 + 4
        movl    %ecx, boot_cpuid + \slot * 16 + 8
        movl    %edx, boot_cpuid + \slot * 16 + 12
.endm

long_entry:
        movl    $GUEST_SEL_KDATA, %eax
        movl    %eax, %ds
        movl    %eax, %es
        movl    %eax, %ss
        movl    %esi, %esi              /* zero-extend index */
        testl   %esi, %esi
        jnz     1f
        /* BSP: save the CPUID leaves the C code needs (see layout.h). */
        CPUID_SAVE 0, 0
        CPUID_SAVE 0x15, 1
        CPUID_SAVE 0x16, 2
        CPUID_SAVE 0x40000000, 3
        CPUID_SAVE 0x40000010, 4
1:
        /* CPL0 stack (used by the fault handler via TSS.RSP0). */
        leaq    1(%rsi), %rax
        shlq    $GUEST_KSTACK_SHIFT, %rax
        leaq    kstacks(%rax), %rsp
        /* TSS of this CPU: RSP0 and an all-zero I/O permission bitmap.
         * IOPL=3 alone is not enough: the PVM hypervisor here does not
         * pass IOPL on to CPL3, but it does honour the bitmap. */
        movq    %rsi, %rbx
        shlq    $GUEST_TSS_SHIFT, %rbx
        leaq    tss_area(%rbx), %rbx
        movq    %rsp, 4(%rbx)
        movw    $GUEST_TSS_IOMAP, 102(%rbx)
        movb    $0xff, GUEST_TSS_LIMIT(%rbx)
        /* Its 16-byte system descriptor at GDT offset 0x28 + 16 * index:
         * type 0x89 (present, available 64-bit TSS). */
        movq    %rsi, %rcx
        shlq    $4, %rcx
        movq    %rbx, %rax
        andl    $0xffffff, %eax
        shlq    $16, %rax               /* base[23:0] -> bits 16..39 */
        movq    %rbx, %rdx
        shrq    $24, %rdx
        shlq    $56, %rdx               /* base[31:24] -> bits 56..63 */
        orq     %rdx, %rax
        movabsq $((0x89 << 40) | GUEST_TSS_LIMIT), %rdx
        orq     %rdx, %rax
        movq    %rax, gdt + GUEST_SEL_TSS0(%rcx)
        movq    %rbx, %rax
        shrq    $32, %rax
        movq    %rax, gdt + GUEST_SEL_TSS0 + 8(%rcx)
        leal    GUEST_SEL_TSS0(%ecx), %eax
        ltr     %ax
        lidt    idt_ptr
        /* CPL3 stack; a zero "return address" keeps the ABI alignment. */
        leaq    1(%rsi), %rax
        shlq    $GUEST_USTACK_SHIFT, %rax
        leaq    ustacks - 8(%rax), %rax
        /* iretq to guest_cpu_entry(index, ncpus) at CPL3, IOPL=3, IF=0. */
        pushq   $GUEST_SEL_UDATA
        pushq   %rax
        pushq   $0x3002
        pushq   $GUEST_SEL_UCODE
        pushq   $guest_cpu_entry
        movl    %edi, %edx
        movq    %rsi, %rdi
        movl    %edx, %esi
        iretq

/* ---------------------------------------------------------------------- */
/*
 * CPL0 interrupt entry points; lib/start.c writes the IDT entries at CPL3.
 * Exceptions: push a dummy error code where the CPU pushes none, push the
 * vector, and call guest_fault() (C, runs emulated at CPL0), which either
 * exits the VM or returns to have this vCPU parked.
 */
        .text
        .balign 16
        /* Parks a vCPU for good; reached from guest_fault() (a CPL3 hlt). */
        .globl  guest_park_entry
guest_park_entry:
        cli
        hlt
        jmp     guest_park_entry

.macro  FAULT vec, has_err
        .balign 16
fault_\vec:
        .if \has_err == 0
        pushq   $0
        .endif
        pushq   $\vec
        jmp     fault_common
.endm

        FAULT 0,0;  FAULT 1,0;  FAULT 2,0;  FAULT 3,0
        FAULT 4,0;  FAULT 5,0;  FAULT 6,0;  FAULT 7,0
        FAULT 8,1;  FAULT 9,0;  FAULT 10,1; FAULT 11,1
        FAULT 12,1; FAULT 13,1; FAULT 14,1; FAULT 15,0
        FAULT 16,0; FAULT 17,1; FAULT 18,0; FAULT 19,0
        FAULT 20,0; FAULT 21,1; FAULT 22,0; FAULT 23,0
        FAULT 24,0; FAULT 25,0; FAULT 26,0; FAULT 27,0
        FAULT 28,0; FAULT 29,1; FAULT 30,1; FAULT 31,0

fault_common:
        /* Frame: vector, error, rip, cs, rflags, rsp, ss (struct guest_fault_frame). */
        movq    %rsp, %rdi
        andq    $-16, %rsp
        call    guest_fault
        jmp     guest_park_entry

        .section .rodata
        .balign 8
        .globl  guest_fault_entries
guest_fault_entries:
        .irp    v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        .quad   fault_\v
        .endr

/* ---------------------------------------------------------------------- */
        .data
        .balign 8
        .globl  boot_magic, boot_mb_info, boot_cpuid
boot_magic:     .long 0
boot_mb_info:   .long 0
boot_cpuid:     .fill GUEST_CPUID_SLOTS * 4, 4, 0

        .balign 16
gdt_ptr:
        .word   gdt_end - gdt - 1
        .quad   gdt
idt_ptr:
        .word   GUEST_IDT_ENTRIES * 16 - 1
        .quad   guest_idt

        .balign 16
        .globl  gdt
gdt:
        .quad   0
        .quad   0x00209A0000000000      /* 0x08 kernel code, 64-bit */
        .quad   0x0000920000000000      /* 0x10 kernel data */
        .quad   0x0000F20000000000      /* 0x18 user data, DPL 3 */
        .quad   0x0020FA0000000000      /* 0x20 user code, 64-bit, DPL 3 */
        .fill   GUEST_MAX_CPUS * 2, 8, 0 /* 0x28: one TSS descriptor per CPU */
gdt_end:

/*
 * Identity map of the first 4 GiB with 2 MiB pages, user-accessible and
 * writable (CPL3 code fills the IDT and may touch any device MMIO).  The
 * last GiB (0xC0000000-0xFFFFFFFF: the PCI hole, IOAPIC, LAPIC) is
 * uncached (PCD | PWT, PAT entry 3 = UC).  Static so no CPL0 loop has to
 * build it; lib/mem.c adds device windows above 4 GiB at CPL3.
 */
        .balign 4096
        .globl  pml4
pml4:
        .quad   pdpt + PTE_DIR
        .fill   511, 8, 0
pdpt:
        .quad   pd + 0x0000 + PTE_DIR
        .quad   pd + 0x1000 + PTE_DIR
        .quad   pd + 0x2000 + PTE_DIR
        .quad   pd + 0x3000 + PTE_DIR
        .fill   508, 8, 0
pd:
        .set    i, 0
        .rept   2048
        .if     i >= 1536
        .quad   (i << 21) | PTE_DIR | PTE_PS | PTE_PCD | PTE_PWT
        .else
        .quad   (i << 21) | PTE_DIR | PTE_PS
        .endif
        .set    i, i + 1
        .endr

/* ---------------------------------------------------------------------- */
        .bss
        .balign 4096
        .globl  guest_idt, ustacks, kstacks, tss_area
guest_idt:
        .skip   GUEST_IDT_ENTRIES * 16
tss_area:
        .skip   GUEST_MAX_CPUS << GUEST_TSS_SHIFT
        .balign 4096
kstacks:
        .skip   GUEST_MAX_CPUS << GUEST_KSTACK_SHIFT
ustacks:
        .skip   GUEST_MAX_CPUS << GUEST_USTACK_SHIFT
        .section .note.GNU-stack, "", @progbits
