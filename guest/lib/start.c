/*
 * C entry of every vCPU (from the boot stub's iretq, at CPL3), the IDT,
 * the fault report and exit.
 */
#include "guest.h"

#include "../boot/layout.h"

/* Multiboot v1 info, the fields the runtime reads. */
struct multiboot_info {
    uint32_t flags;
    uint32_t mem_lower;
    uint32_t mem_upper;
    uint32_t boot_device;
    uint32_t cmdline;
};
#define MULTIBOOT_INFO_CMDLINE  (1u << 2)

/* What the CPU and fault_common (entry.S) pushed. */
struct guest_fault_frame {
    uint64_t vector;
    uint64_t error;
    uint64_t rip;
    uint64_t cs;
    uint64_t rflags;
    uint64_t rsp;
    uint64_t ss;
};

/* How long the BSP waits for the APs to check in. */
#define SMP_WAIT_NS     2000000000ull

extern uint32_t boot_magic;
extern uint8_t guest_idt[];
extern const uint64_t guest_fault_entries[32];
extern char kstacks[];

void guest_cpu_entry(unsigned cpu, unsigned ncpus) __attribute__((noreturn));
void guest_fault(struct guest_fault_frame *f);

/* x87 and SSE control words to their reset values (CPL3, native). */
static void fpu_init(void)
{
    uint32_t mxcsr = 0x1f80;

    __asm__ volatile("fninit; ldmxcsr %0" : : "m"(mxcsr));
}

/*
 * Fill the IDT from CPL3: it is ordinary user-writable memory, and code
 * here runs natively while the same loop at CPL0 would be emulated.
 */
static void idt_set(unsigned vec, uint64_t handler, unsigned dpl)
{
    uint8_t *e = guest_idt + vec * 16;
    uint64_t lo = (handler & 0xffff) |
                  ((uint64_t)GUEST_SEL_KCODE << 16) |
                  ((uint64_t)(0x8e | (dpl << 5)) << 40) |     /* interrupt gate */
                  ((handler >> 16 & 0xffff) << 48);
    uint64_t hi = handler >> 32;

    memcpy(e, &lo, 8);
    memcpy(e + 8, &hi, 8);
}

static void idt_init(void)
{
    for (unsigned v = 0; v < 32; v++) {
        idt_set(v, guest_fault_entries[v], 0);
    }
}

static void cmdline_from_multiboot(void)
{
    const struct multiboot_info *mb =
        (const struct multiboot_info *)(uintptr_t)boot_mb_info;

    if (boot_magic == MULTIBOOT_BOOT_MAGIC && mb &&
        (mb->flags & MULTIBOOT_INFO_CMDLINE) && mb->cmdline) {
        cmdline_init((const char *)(uintptr_t)mb->cmdline);
    } else {
        cmdline_init(NULL);
    }
}

void guest_cpu_entry(unsigned cpu, unsigned ncpus)
{
    fpu_init();
    if (cpu != 0) {
        smp_ap_main(cpu);
    }
    idt_init();
    con_init();
    cmdline_from_multiboot();
    tsc_init();
    smp_bsp_start(ncpus, SMP_WAIT_NS);
    guest_exit((uint32_t)guest_main());
}

void guest_park(void)
{
    /* Privileged at CPL3: #GP, which guest_fault() turns into a park.
     * (Neither "int N" nor syscall reach CPL0 cleanly under PVM.) */
    for (;;) {
        __asm__ volatile("hlt" : : : "memory");
    }
}

void guest_exit(uint32_t code)
{
    outl(GUEST_EXIT_PORT, code);
    guest_park();
}

/*
 * A CPU exception: runs at CPL0 (emulated, slow, but this is the end of
 * the run), says what happened and exits with GUEST_EXIT_FAULT.  The
 * console lock is not taken: the faulting vCPU may be holding it.
 * Returning parks the vCPU (fault_common in entry.S).
 */
void guest_fault(struct guest_fault_frame *f)
{
    char line[160];
    uint64_t cr2;
    int n;

    if (f->vector == 13 && (f->cs & 3) == 3 &&
        *(const uint8_t *)(uintptr_t)f->rip == 0xf4) {
        return;         /* guest_park()'s hlt: fault_common parks the vCPU */
    }
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    n = fmt_snprintf(line, sizeof(line),
                     "GUEST FAULT cpu=%u vector=%lu error=0x%lx rip=0x%lx "
                     "rsp=0x%lx cr2=0x%lx cs=0x%lx rflags=0x%lx\n",
                     (unsigned)(((uintptr_t)f - (uintptr_t)kstacks) >>
                                GUEST_KSTACK_SHIFT),
                     f->vector, f->error, f->rip, f->rsp, cr2, f->cs,
                     f->rflags);
    con_write_unlocked(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
    guest_exit(GUEST_EXIT_FAULT);
}
