/*
 * VM: one KVM virtual machine: the VM fd, guest RAM, the in-kernel irqchip
 * and PIT, its vCPUs (include/shardvm/vcpu.h) and its two address spaces
 * (include/shardvm/memory.h).  Everything lives in the VM object, so a
 * process (a test) may hold several VMs.
 *
 * Guest physical memory map (x86, like QEMU's pc machine):
 *   [0, low)                       RAM, low = min(ram_size, 3 GiB)
 *   [3 GiB, 4 GiB)                 "PCI hole": no RAM; MMIO regions, the
 *                                  IOAPIC (0xfec00000), the LAPIC
 *                                  (0xfee00000), and two private pages:
 *   0xfeffc000                     KVM identity-map page (1 page)
 *   0xfeffd000                     KVM TSS (3 pages)
 *   [4 GiB, 4 GiB + ram - low)     RAM above 4 GiB, when ram_size > 3 GiB
 * RAM is one memfd (memfd_create + mmap MAP_SHARED), registered as one or
 * two KVM memory slots.
 *
 * Life cycle: vm_new() (creates vCPUs, not running) -> set the initial
 * register state of each vCPU (vcpu_set_entry32(), vcpu_set_regs(), ...)
 * and add regions -> vm_start() (one thread "CPU <n>/KVM" per vCPU) ->
 * vm_pause()/vm_resume() any number of times -> vm_stop() -> vm_free().
 *
 * Threads: unless stated otherwise, the vm_* functions are for the
 * thread that owns the VM (the main loop thread, normally with the BQL
 * held, or a test's thread).
 */
#ifndef SHARDVM_VM_H
#define SHARDVM_VM_H

#include "shardvm/aio.h"
#include "shardvm/memory.h"

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct VM VM;
typedef struct VCPU VCPU;

/* Layout constants (see the memory map above). */
#define VM_LOWMEM_MAX        0xC0000000ull   /* 3 GiB */
#define VM_HIGHMEM_BASE      0x100000000ull  /* 4 GiB */
#define VM_IDENTITY_MAP_ADDR 0xfeffc000ull
#define VM_TSS_ADDR          0xfeffd000ull
#define VM_MAX_VCPUS         64

/* Why a vCPU asks the machine layer to stop the VM. */
typedef enum VMStopReason {
    VM_STOP_GUEST_SHUTDOWN = 1, /* KVM_EXIT_SHUTDOWN: triple fault */
    VM_STOP_GUEST_RESET = 2,    /* KVM_EXIT_SYSTEM_EVENT reset */
    VM_STOP_GUEST_POWEROFF = 3, /* KVM_EXIT_SYSTEM_EVENT shutdown */
    VM_STOP_INTERNAL_ERROR = 4, /* KVM_EXIT_INTERNAL_ERROR (emulation...) */
    VM_STOP_FAIL_ENTRY = 5,     /* KVM_EXIT_FAIL_ENTRY: bad vCPU state */
    VM_STOP_UNKNOWN_EXIT = 6,   /* an exit reason the VMM does not handle */
    VM_STOP_KVM_ERROR = 7,      /* KVM_RUN itself failed (not EINTR) */
} VMStopReason;

/*
 * VMStopRequestFunc: called on the vCPU thread of @cpu_index after a guest
 * error was reported on stderr (with a register dump).  That vCPU then
 * stays parked (runs no guest code) until vm_stop().  The callback must
 * not wait for vCPUs (it typically calls main_loop_request_shutdown()).
 * No lock is held.
 */
typedef void VMStopRequestFunc(void *opaque, VM *vm, int cpu_index,
                               VMStopReason reason);

/* VMConfig: what vm_new() builds.  Zero-initialise, then fill. */
typedef struct VMConfig {
    uint64_t ram_size;     /* bytes, > 0, a multiple of 4 KiB */
    int nr_vcpus;          /* 1 .. VM_MAX_VCPUS */
    /*
     * true: no in-kernel irqchip and PIT (KVM_EXIT_HLT then reaches
     * userspace: the vCPU sleeps until kicked).  Default false: irqchip,
     * PIT2 and in-kernel HLT (the vCPU thread sleeps inside KVM_RUN).
     */
    bool no_irqchip;
    VMStopRequestFunc *stop_request; /* may be NULL: only the report */
    void *stop_opaque;
} VMConfig;

/*
 * vm_new: open /dev/kvm, create the VM, its RAM, irqchip, PIT2, TSS and
 * identity map, and @cfg->nr_vcpus vCPUs with CPUID set (KVM's supported
 * CPUID, APIC ids = vCPU index, the KVM signature leaf 0x40000000 and the
 * TSC frequency leaf 0x40000010).  No thread is started.  Returns the VM
 * (owned by the caller, vm_free()) or NULL and fills @errp (a message that
 * names /dev/kvm when it is missing).  Any RCU-registered thread.
 */
VM *vm_new(const VMConfig *cfg, GError **errp);

/*
 * vm_start: start one thread "CPU <n>/KVM" per vCPU running KVM_RUN from
 * the state set so far.  Returns 0 or a negative errno (fills @errp); on
 * failure no thread is left running.  Once per VM.
 */
int vm_start(VM *vm, GError **errp);

/*
 * vm_pause: make every vCPU leave KVM_RUN and park; returns when all are
 * parked (or stopped).  While paused, vCPU registers may be read and set
 * from this thread.  If the caller holds the BQL it is released while
 * waiting (a vCPU may need it to finish an exit) and re-taken.  Nesting is
 * not counted: one vm_resume() undoes any number of vm_pause().  Not from
 * a vCPU thread (it would wait for itself): a device callback that wants
 * the VM paused asks the main loop to do it (a BH).
 */
void vm_pause(VM *vm);

/* vm_resume: let paused vCPUs run again.  No-op if not paused. */
void vm_resume(VM *vm);

/* vm_is_paused: true between vm_pause() and vm_resume(). */
bool vm_is_paused(VM *vm);

/*
 * vm_kick_all: vcpu_kick() every vCPU (each leaves KVM_RUN once and goes
 * back in).  Any thread.
 */
void vm_kick_all(VM *vm);

/*
 * vm_stop: stop and join every vCPU thread (a running vCPU is kicked out
 * of KVM_RUN; a vCPU waiting in a device callback finishes it first).
 * Releases the BQL while waiting if the caller holds it.  Idempotent; fine
 * before vm_start().  Not from a vCPU thread (vm_pause() and vm_stop()
 * detect that, complain with g_critical() and return).
 */
void vm_stop(VM *vm);

/*
 * vm_free: vm_stop(), then close every fd (vCPUs, VM, /dev/kvm, memfd),
 * unmap RAM and free both address spaces with their remaining regions.
 * NULL is ignored.  Same thread rules as vm_stop().
 */
void vm_free(VM *vm);

/* vm_get_nr_vcpus: number of vCPUs.  Any thread. */
int vm_get_nr_vcpus(VM *vm);

/* vm_get_vcpu: vCPU @index (0-based), or NULL if out of range.  Owned by
 * @vm.  Any thread. */
VCPU *vm_get_vcpu(VM *vm, int index);

/*
 * Ports the in-kernel irqchip and PIT answer without a userspace exit:
 * PIC 0x20-0x21 and 0xa0-0xa1, PIT 0x40-0x43, the PIT gate / speaker port
 * 0x61 (KVM_PIT_SPEAKER_DUMMY) and the ELCR 0x4d0-0x4d1.  A device put
 * there would never see an access, so they are reserved as regions of
 * the port space (accesses never reach them; vm_new() adds them when the
 * irqchip is on) and adding an overlapping region fails, naming them.
 */
#define VM_NR_IN_KERNEL_PORT_RANGES 5

/*
 * vm_reserve_in_kernel_ports: add the reserved regions above to @pio
 * (a VM's port space, or a free-standing one in tests).  Returns 0 or a
 * negative errno with @errp set (a port already taken).  Same threads as
 * address_space_add().
 */
int vm_reserve_in_kernel_ports(AddressSpace *pio, GError **errp);

/* vm_get_fd: the KVM VM fd (for ioctls the VM API does not wrap). */
int vm_get_fd(VM *vm);

/* vm_get_pio_space / vm_get_mmio_space: the VM's address spaces (owned by
 * @vm, valid until vm_free()).  Any thread. */
AddressSpace *vm_get_pio_space(VM *vm);
AddressSpace *vm_get_mmio_space(VM *vm);

/* ------------------------------------------------------------------ */
/* Guest RAM                                                            */

/* vm_get_ram_size: guest RAM in bytes (both slots together). */
uint64_t vm_get_ram_size(VM *vm);

/*
 * vm_gpa_to_hva: host pointer for guest physical [@gpa, @gpa + @len), or
 * NULL when that range is not entirely inside one RAM slot (e.g. it
 * crosses into the PCI hole).  Valid until vm_free().  Any thread.
 */
void *vm_gpa_to_hva(VM *vm, uint64_t gpa, uint64_t len);

/*
 * vm_memory_write / vm_memory_read: copy to / from guest RAM.  Return 0 or
 * -EFAULT when the range is not RAM.  Any thread (no synchronisation with
 * running vCPUs beyond what the caller arranges).
 */
int vm_memory_write(VM *vm, uint64_t gpa, const void *buf, size_t len);
int vm_memory_read(VM *vm, uint64_t gpa, void *buf, size_t len);

/* ------------------------------------------------------------------ */
/* ioeventfd, irqfd, MSI, interrupt lines                               */

/*
 * vm_add_ioeventfd: make a guest write of @len bytes (1, 2, 4 or 8; 0 for
 * an MMIO "any length" match) to @addr (a port if @is_pio, else a guest
 * physical address) set @e inside KVM, without a userspace exit.  With
 * @has_datamatch only writes of exactly @datamatch match; other writes
 * exit to userspace as usual.  The caller owns @e and decides which
 * AioContext handles it (aio_set_event_notifier(ctx, e, ...)); @e must
 * stay initialised until vm_del_ioeventfd().  Returns 0 or a negative
 * errno (-EEXIST for a duplicate).  Any thread.
 */
int vm_add_ioeventfd(VM *vm, EventNotifier *e, bool is_pio, uint64_t addr,
                     unsigned len, bool has_datamatch, uint64_t datamatch);

/* vm_del_ioeventfd: undo vm_add_ioeventfd() (same arguments).  Returns 0
 * or a negative errno.  Any thread. */
int vm_del_ioeventfd(VM *vm, EventNotifier *e, bool is_pio, uint64_t addr,
                     unsigned len, bool has_datamatch, uint64_t datamatch);

/*
 * vm_add_irqfd: setting @e injects GSI @gsi (an IOAPIC pin 0-23, or a GSI
 * returned by vm_add_msi_route()) inside KVM.  @resample (may be NULL)
 * makes the GSI level-triggered: KVM sets @resample when the guest EOIs
 * it.  Needs the in-kernel irqchip.  Returns 0 or a negative errno.  Any
 * thread.
 */
int vm_add_irqfd(VM *vm, EventNotifier *e, unsigned gsi,
                 EventNotifier *resample);

/* vm_del_irqfd: undo vm_add_irqfd().  Returns 0 or a negative errno. */
int vm_del_irqfd(VM *vm, EventNotifier *e, unsigned gsi);

/*
 * vm_add_msi_route: allocate a GSI (>= 24) that delivers the MSI
 * (@addr, @data) and commit the routing table (KVM_SET_GSI_ROUTING, with
 * the default IOAPIC/PIC routes kept).  Returns the GSI or a negative
 * errno.  Any thread (serialised internally).
 */
int vm_add_msi_route(VM *vm, uint64_t addr, uint32_t data);

/* vm_update_msi_route: change the message of @gsi (guest reprogrammed the
 * MSI-X entry).  Returns 0 or a negative errno.  Any thread. */
int vm_update_msi_route(VM *vm, unsigned gsi, uint64_t addr, uint32_t data);

/* vm_del_msi_route: free @gsi (remove its irqfd first).  Any thread. */
int vm_del_msi_route(VM *vm, unsigned gsi);

/*
 * vm_signal_msi: inject one MSI now (KVM_SIGNAL_MSI).  Returns > 0 when
 * delivered, 0 when the guest blocked it, or a negative errno.  Any
 * thread.
 */
int vm_signal_msi(VM *vm, uint64_t addr, uint32_t data);

/*
 * vm_set_irq_line: drive IOAPIC/PIC input @irq to @level (KVM_IRQ_LINE),
 * e.g. the UART's IRQ 4.  Returns 0 or a negative errno.  Any thread.
 */
int vm_set_irq_line(VM *vm, unsigned irq, bool level);

#ifdef __cplusplus
}
#endif

#endif
