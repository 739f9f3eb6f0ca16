/*
 * Private to vcpu/: the VM and VCPU structures and the functions the
 * files of this folder share.
 */
#ifndef SHARDVM_VCPU_INTERNAL_H
#define SHARDVM_VCPU_INTERNAL_H

#include "shardvm/memory.h"
#include "shardvm/vcpu.h"
#include "shardvm/vm.h"

#include <linux/kvm.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

struct VCPU {
    VM *vm;                 /* immutable */
    int index;              /* immutable */
    int fd;                 /* immutable until vm_free() */
    struct kvm_run *run;    /* shared with KVM; owned by the vCPU thread,
                             * except run->immediate_exit (see kick) */
    pthread_t thread;       /* valid while thread_alive */

    /* Guarded by vm->lock. */
    bool thread_alive;      /* started and not yet joined */
    bool parked;            /* sleeping in vcpu_wait_requests() */
    bool halted;            /* userspace HLT sleep: cleared by a kick */
    bool error_parked;      /* parked for good after a guest error */
    bool exited;            /* the thread left its loop */

    /* Kick requests: written by any thread, read by the vCPU thread. */
    _Atomic uint64_t kick_seq;
    _Atomic bool stop_req;

    /* Counters: written by the vCPU thread, read anywhere (relaxed). */
    _Atomic uint64_t st_exits, st_io, st_mmio, st_hlt, st_intr;
    _Atomic uint64_t st_kicks_seen, st_errors;
    _Atomic bool halted_flag; /* mirror of halted || error_parked */
    /* The thread's kernel id (gettid), stored by the thread itself when
     * it starts; 0 before.  Read anywhere (QMP query-cpus-fast). */
    _Atomic int tid;
};

struct VM {
    int kvm_fd;             /* /dev/kvm; immutable */
    int vm_fd;              /* immutable */
    int memfd;              /* guest RAM; immutable */
    uint8_t *ram;           /* mmap of memfd, ram_size bytes */
    uint64_t ram_size, low_size, high_size;
    size_t run_size;        /* KVM_GET_VCPU_MMAP_SIZE */
    bool irqchip;
    uint32_t tsc_khz;       /* 0 when KVM_GET_TSC_KHZ failed */
    VMConfig cfg;
    int nr_vcpus;
    VCPU **vcpus;           /* immutable array after vm_new() */
    AddressSpace *pio, *mmio;

    /*
     * Run state.  lock guards the VCPU fields marked so and the fields
     * below; vCPUs sleep on cpu_cond, the controlling thread on ctl_cond.
     */
    pthread_mutex_t lock;
    pthread_cond_t cpu_cond;
    pthread_cond_t ctl_cond;
    bool started;
    _Atomic bool pause_req; /* written under lock, read lock-free too */

    /* MSI routes, guarded by route_lock. */
    pthread_mutex_t route_lock;
    GHashTable *msi_routes;  /* gsi -> MsiRoute* */
    unsigned max_gsi;        /* KVM_CAP_IRQ_ROUTING */
};

/* vcpu.c */
VCPU *vcpu_create(VM *vm, int index, GError **errp);
void vcpu_destroy(VCPU *cpu);
struct kvm_cpuid2 *vcpu_get_supported_cpuid(VM *vm, GError **errp);
int vcpu_set_cpuid(VCPU *cpu, const struct kvm_cpuid2 *base, GError **errp);

/* vcpu-loop.c */
int vcpu_start_thread(VCPU *cpu, GError **errp);
/* The vCPU whose thread is calling, or NULL. */
VCPU *vcpu_current(void);
void vcpu_install_kick_handler(void);

/* memory.c: dispatch from a vCPU exit (no BQL held, outside RCU). */
bool address_space_access(AddressSpace *as, uint64_t addr, unsigned size,
                          uint64_t *value, bool is_write);

#endif
