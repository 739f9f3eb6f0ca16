/*
 * VCPU: one KVM vCPU and, once vm_start() ran, its thread "CPU <n>/KVM"
 * looping on KVM_RUN and dispatching exits:
 *   KVM_EXIT_IO, KVM_EXIT_MMIO  -> the VM's PIO / MMIO address space
 *                                  (include/shardvm/memory.h)
 *   KVM_EXIT_HLT                -> (only without in-kernel irqchip) the
 *                                  thread sleeps until kicked
 *   KVM_EXIT_SHUTDOWN, _INTERNAL_ERROR, _FAIL_ENTRY, SYSTEM_EVENT, unknown
 *                               -> register dump on stderr, the VM's
 *                                  stop_request callback, the vCPU parks
 *   KVM_RUN -EINTR              -> a kick: look at pause/stop requests.
 *
 * Kick protocol (no lost kick): the vCPU thread keeps SIGUSR1 blocked
 * while it runs userspace code, and KVM_SET_SIGNAL_MASK unblocks it for
 * the duration of KVM_RUN only.  vcpu_kick() first publishes its request
 * (a sequence number, pause or stop flag), then wakes a userspace sleeper
 * (condition variable), sets kvm_run->immediate_exit and sends SIGUSR1 with
 * pthread_kill.  A signal sent while the thread is in userspace stays
 * pending and makes the next KVM_RUN return -EINTR at once, so a request
 * published after the thread looked at its requests is never missed; the
 * thread consumes the pending signal with sigtimedwait() after -EINTR.
 * Device callbacks on the vCPU thread are thus never interrupted by
 * SIGUSR1 (no EINTR surprises in device code).
 */
#ifndef SHARDVM_VCPU_H
#define SHARDVM_VCPU_H

#include "shardvm/vm.h"

#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The signal used to kick vCPU threads out of KVM_RUN. */
#define VCPU_KICK_SIGNAL SIGUSR1

/* vcpu_get_index: 0-based index (also the APIC id).  Any thread. */
int vcpu_get_index(VCPU *cpu);

/* vcpu_get_vm: the VM owning @cpu.  Any thread. */
VM *vcpu_get_vm(VCPU *cpu);

/* vcpu_get_thread_id: the kernel thread id of "CPU <n>/KVM" (what QMP's
 * query-cpus-fast reports as thread-id), 0 until the thread started.
 * Any thread. */
int vcpu_get_thread_id(VCPU *cpu);

/* vcpu_get_fd: the KVM vCPU fd (for ioctls this API does not wrap). */
int vcpu_get_fd(VCPU *cpu);

/*
 * VCPUEntry32: a 32-bit protected-mode entry state as the multiboot v1
 * spec defines it: CS a flat 4 GiB 32-bit code segment (selector 0x08),
 * DS/ES/FS/GS/SS flat 4 GiB data segments (selector 0x10), CR0.PE=1 and
 * paging off, EFLAGS = 0x2 (IF=0, VM=0), no GDT/IDT loaded (limit 0).
 * The general registers below are set as given, all others are 0.
 */
typedef struct VCPUEntry32 {
    uint32_t eip;
    uint32_t eax, ebx, ecx, edx;
    uint32_t esp;               /* multiboot leaves it undefined; 0 is fine */
} VCPUEntry32;

/*
 * vcpu_set_entry32: load @entry (sregs + regs).  With the in-kernel
 * irqchip it also makes the vCPU runnable (an AP would otherwise wait for
 * INIT/SIPI), so every vCPU enters at vm_start(), as the SMP start protocol
 * wants.  Only while @cpu is not running: before vm_start() or while the
 * VM is paused; called from the thread that owns the VM.  Returns 0 or a
 * negative errno.
 */
int vcpu_set_entry32(VCPU *cpu, const VCPUEntry32 *entry);

/*
 * vcpu_get_regs / vcpu_set_regs / vcpu_get_sregs / vcpu_set_sregs: raw
 * KVM_GET/SET_(S)REGS.  Same thread rules as vcpu_set_entry32().  Return 0
 * or a negative errno.
 */
int vcpu_get_regs(VCPU *cpu, struct kvm_regs *regs);
int vcpu_set_regs(VCPU *cpu, const struct kvm_regs *regs);
int vcpu_get_sregs(VCPU *cpu, struct kvm_sregs *sregs);
int vcpu_set_sregs(VCPU *cpu, const struct kvm_sregs *sregs);

/*
 * vcpu_dump_state: print general, segment and control registers to @f.
 * Same thread rules as vcpu_get_regs(), or the vCPU's own thread.
 */
void vcpu_dump_state(VCPU *cpu, FILE *f);

/*
 * vcpu_kick: make @cpu leave KVM_RUN (or a userspace HLT sleep) once, look
 * at its pending requests and go back into the guest.  Never lost: see the
 * protocol above.  Asynchronous (returns at once).  Any thread, including
 * @cpu's own (then it only marks the request).
 */
void vcpu_kick(VCPU *cpu);

/* Per-vCPU counters.  Read with vcpu_get_stats() from any thread. */
typedef struct VCPUStats {
    uint64_t exits;          /* KVM_RUN returns, all reasons */
    uint64_t io_exits;       /* KVM_EXIT_IO (each, even string I/O) */
    uint64_t mmio_exits;     /* KVM_EXIT_MMIO */
    uint64_t hlt_exits;      /* KVM_EXIT_HLT (no in-kernel irqchip) */
    uint64_t intr_exits;     /* KVM_RUN -EINTR or KVM_EXIT_INTR (kicks) */
    uint64_t kicks_seen;     /* vcpu_kick() calls the thread has acted on */
    uint64_t error_exits;    /* exits reported with VMStopRequestFunc */
} VCPUStats;

/*
 * vcpu_get_stats: a snapshot of @cpu's counters (each field read
 * atomically; the set is not one consistent snapshot).  Any thread.
 * kicks_seen counts kicks the thread has observed: after vcpu_kick() has
 * been called N times from one thread, kicks_seen eventually reaches N.
 */
void vcpu_get_stats(VCPU *cpu, VCPUStats *stats);

/*
 * vcpu_is_halted: true while the vCPU sleeps in userspace on a HLT exit
 * (only without in-kernel irqchip), or is parked after a guest error.
 * Any thread.
 */
bool vcpu_is_halted(VCPU *cpu);

#ifdef __cplusplus
}
#endif

#endif
