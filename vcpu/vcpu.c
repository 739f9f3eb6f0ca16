/*
 * vCPU objects: creation, CPUID, register access and the register dump.
 * The thread and its KVM_RUN loop are in vcpu-loop.c.
 */
#include "vcpu-internal.h"

#include "shardvm/error.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

VCPU *vcpu_create(VM *vm, int index, GError **errp)
{
    VCPU *cpu = g_new0(VCPU, 1);

    cpu->vm = vm;
    cpu->index = index;
    cpu->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)index);
    if (cpu->fd < 0) {
        shardvm_error_set(errp, -errno, "KVM_CREATE_VCPU %d: %s", index,
                          strerror(errno));
        g_free(cpu);
        return NULL;
    }
    void *run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
                     cpu->fd, 0);
    if (run == MAP_FAILED) {
        shardvm_error_set(errp, -errno, "mmap kvm_run of vCPU %d: %s", index,
                          strerror(errno));
        close(cpu->fd);
        g_free(cpu);
        return NULL;
    }
    cpu->run = run;
    return cpu;
}

void vcpu_destroy(VCPU *cpu)
{
    munmap(cpu->run, cpu->vm->run_size);
    close(cpu->fd);
    g_free(cpu);
}

struct kvm_cpuid2 *vcpu_get_supported_cpuid(VM *vm, GError **errp)
{
    for (unsigned n = 128; n <= 4096; n *= 2) {
        struct kvm_cpuid2 *c = g_malloc0(sizeof(*c) + n * sizeof(c->entries[0]));
        c->nent = n;
        if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
            return c;
        }
        int err = errno;
        g_free(c);
        if (err != E2BIG) {
            shardvm_error_set(errp, -err, "KVM_GET_SUPPORTED_CPUID: %s",
                              strerror(err));
            return NULL;
        }
    }
    shardvm_error_set(errp, -E2BIG, "KVM_GET_SUPPORTED_CPUID: too many leaves");
    return NULL;
}

static struct kvm_cpuid_entry2 *cpuid_find(struct kvm_cpuid2 *c, uint32_t fn)
{
    for (uint32_t i = 0; i < c->nent; i++) {
        if (c->entries[i].function == fn) {
            return &c->entries[i];
        }
    }
    return NULL;
}

static struct kvm_cpuid_entry2 *cpuid_add(struct kvm_cpuid2 *c, uint32_t fn)
{
    struct kvm_cpuid_entry2 *e = &c->entries[c->nent++];
    memset(e, 0, sizeof(*e));
    e->function = fn;
    return e;
}

/*
 * The per-vCPU CPUID: KVM's supported set, with this vCPU's APIC id, the
 * hypervisor bit, and the KVM leaves the guest uses for timing.
 */
int vcpu_set_cpuid(VCPU *cpu, const struct kvm_cpuid2 *base, GError **errp)
{
    /* Room for the two leaves we may add. */
    size_t sz = sizeof(*base) + (base->nent + 2) * sizeof(base->entries[0]);
    struct kvm_cpuid2 *c = g_malloc0(sz);
    memcpy(c, base, sizeof(*base) + base->nent * sizeof(base->entries[0]));
    uint32_t id = (uint32_t)cpu->index;

    for (uint32_t i = 0; i < c->nent; i++) {
        struct kvm_cpuid_entry2 *e = &c->entries[i];
        switch (e->function) {
        case 1:
            /* Initial APIC id in EBX[31:24]; CPUID.1:ECX[31] hypervisor. */
            e->ebx = (e->ebx & 0x00ffffffu) | (id << 24);
            e->ecx |= 1u << 31;
            break;
        case 0xb:
        case 0x1f:
            e->edx = id; /* x2APIC id */
            break;
        }
    }

    struct kvm_cpuid_entry2 *sig = cpuid_find(c, 0x40000000);
    if (!sig) {
        sig = cpuid_add(c, 0x40000000);
    }
    /* "KVMKVMKVM\0\0\0" in EBX, ECX, EDX. */
    sig->ebx = 0x4b4d564b;
    sig->ecx = 0x564b4d56;
    sig->edx = 0x0000004d;
    if (cpu->vm->tsc_khz) {
        struct kvm_cpuid_entry2 *tsc = cpuid_find(c, 0x40000010);
        if (!tsc) {
            tsc = cpuid_add(c, 0x40000010);
        }
        tsc->eax = cpu->vm->tsc_khz;  /* TSC frequency in kHz */
        tsc->ebx = 1000000;           /* KVM's LAPIC timer: 1 GHz, in kHz */
        sig->eax = MAX(sig->eax, 0x40000010u);
    } else {
        sig->eax = MAX(sig->eax, 0x40000001u);
    }

    int r = 0;
    if (ioctl(cpu->fd, KVM_SET_CPUID2, c) < 0) {
        r = shardvm_error_set(errp, -errno, "KVM_SET_CPUID2 on vCPU %d: %s",
                              cpu->index, strerror(errno));
    }
    g_free(c);
    return r;
}

int vcpu_get_index(VCPU *cpu)
{
    return cpu->index;
}

VM *vcpu_get_vm(VCPU *cpu)
{
    return cpu->vm;
}

int vcpu_get_fd(VCPU *cpu)
{
    return cpu->fd;
}

int vcpu_get_thread_id(VCPU *cpu)
{
    return atomic_load_explicit(&cpu->tid, memory_order_relaxed);
}

int vcpu_get_regs(VCPU *cpu, struct kvm_regs *regs)
{
    return ioctl(cpu->fd, KVM_GET_REGS, regs) < 0 ? -errno : 0;
}

int vcpu_set_regs(VCPU *cpu, const struct kvm_regs *regs)
{
    return ioctl(cpu->fd, KVM_SET_REGS, regs) < 0 ? -errno : 0;
}

int vcpu_get_sregs(VCPU *cpu, struct kvm_sregs *sregs)
{
    return ioctl(cpu->fd, KVM_GET_SREGS, sregs) < 0 ? -errno : 0;
}

int vcpu_set_sregs(VCPU *cpu, const struct kvm_sregs *sregs)
{
    return ioctl(cpu->fd, KVM_SET_SREGS, sregs) < 0 ? -errno : 0;
}

static struct kvm_segment flat_segment(uint16_t selector, uint8_t type)
{
    return (struct kvm_segment){
        .base = 0, .limit = 0xffffffff, .selector = selector,
        .type = type, .present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0,
        .g = 1,
    };
}

int vcpu_set_entry32(VCPU *cpu, const VCPUEntry32 *entry)
{
    struct kvm_sregs sregs;
    int r = vcpu_get_sregs(cpu, &sregs);
    if (r < 0) {
        return r;
    }
    sregs.cs = flat_segment(0x08, 0xb);   /* execute/read, accessed */
    sregs.ds = flat_segment(0x10, 0x3);   /* read/write, accessed */
    sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
    /* A busy 32-bit TSS: VM entry checks TR even when nothing uses it. */
    sregs.tr = (struct kvm_segment){
        .base = 0, .limit = 0xffff, .type = 0xb, .present = 1,
    };
    sregs.gdt.base = sregs.gdt.limit = 0;
    sregs.idt.base = sregs.idt.limit = 0;
    /* PE and ET; paging, caches-disabled and write-through off. */
    sregs.cr0 = 0x11;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    r = vcpu_set_sregs(cpu, &sregs);
    if (r < 0) {
        return r;
    }

    /*
     * With the in-kernel LAPIC an AP starts in "wait for INIT/SIPI"; the
     * SMP start protocol has every vCPU enter at once, so make it runnable.
     */
    if (cpu->vm->irqchip) {
        struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_RUNNABLE };
        if (ioctl(cpu->fd, KVM_SET_MP_STATE, &mp) < 0) {
            return -errno;
        }
    }

    struct kvm_regs regs = {
        .rip = entry->eip, .rax = entry->eax, .rbx = entry->ebx,
        .rcx = entry->ecx, .rdx = entry->edx, .rsp = entry->esp,
        .rflags = 0x2,
    };
    return vcpu_set_regs(cpu, &regs);
}

static void dump_seg(FILE *f, const char *name, const struct kvm_segment *s)
{
    fprintf(f, "%-3s sel=%04x base=%016llx limit=%08x type=%x p=%u dpl=%u "
            "db=%u s=%u l=%u g=%u\n", name, s->selector,
            (unsigned long long)s->base, s->limit, s->type, s->present,
            s->dpl, s->db, s->s, s->l, s->g);
}

void vcpu_dump_state(VCPU *cpu, FILE *f)
{
    struct kvm_regs r;
    struct kvm_sregs s;

    fprintf(f, "vCPU %d state:\n", cpu->index);
    if (vcpu_get_regs(cpu, &r) < 0 || vcpu_get_sregs(cpu, &s) < 0) {
        fprintf(f, "  (cannot read registers: %s)\n", strerror(errno));
        return;
    }
    fprintf(f, "RAX=%016llx RBX=%016llx RCX=%016llx RDX=%016llx\n"
            "RSI=%016llx RDI=%016llx RBP=%016llx RSP=%016llx\n"
            "R8 =%016llx R9 =%016llx R10=%016llx R11=%016llx\n"
            "R12=%016llx R13=%016llx R14=%016llx R15=%016llx\n"
            "RIP=%016llx RFL=%08llx\n",
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp,
            r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15,
            r.rip, r.rflags);
    dump_seg(f, "CS", &s.cs);
    dump_seg(f, "SS", &s.ss);
    dump_seg(f, "DS", &s.ds);
    dump_seg(f, "ES", &s.es);
    dump_seg(f, "FS", &s.fs);
    dump_seg(f, "GS", &s.gs);
    dump_seg(f, "TR", &s.tr);
    dump_seg(f, "LDT", &s.ldt);
    fprintf(f, "GDT=%016llx/%04x IDT=%016llx/%04x\n"
            "CR0=%016llx CR2=%016llx CR3=%016llx CR4=%016llx\n"
            "EFER=%016llx APIC_BASE=%016llx\n",
            s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit,
            s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.apic_base);
}

void vcpu_get_stats(VCPU *cpu, VCPUStats *st)
{
    st->exits = atomic_load_explicit(&cpu->st_exits, memory_order_relaxed);
    st->io_exits = atomic_load_explicit(&cpu->st_io, memory_order_relaxed);
    st->mmio_exits = atomic_load_explicit(&cpu->st_mmio, memory_order_relaxed);
    st->hlt_exits = atomic_load_explicit(&cpu->st_hlt, memory_order_relaxed);
    st->intr_exits = atomic_load_explicit(&cpu->st_intr, memory_order_relaxed);
    st->kicks_seen = atomic_load(&cpu->st_kicks_seen);
    st->error_exits = atomic_load_explicit(&cpu->st_errors,
                                           memory_order_relaxed);
}

bool vcpu_is_halted(VCPU *cpu)
{
    return atomic_load(&cpu->halted_flag);
}
