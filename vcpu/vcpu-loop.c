/*
 * The vCPU thread: KVM_RUN, exit dispatch, and the kick protocol described
 * in include/shardvm/vcpu.h.
 */
#include "vcpu-internal.h"

#include "shardvm/error.h"
#include "shardvm/thread.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* Set for the life of a vCPU thread: vm_pause()/vm_stop() refuse to run
 * there (they would wait for the calling vCPU itself). */
static __thread VCPU *current_vcpu;

VCPU *vcpu_current(void)
{
    return current_vcpu;
}

static void kick_signal_handler(int sig)
{
    /* Never runs in practice: the signal is only unblocked inside
     * KVM_RUN, which returns -EINTR without delivering it. */
}

static void install_once(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = kick_signal_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(VCPU_KICK_SIGNAL, &sa, NULL);
}

void vcpu_install_kick_handler(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, install_once);
}

/* Let KVM_RUN (and only KVM_RUN) be interrupted by the kick signal. */
static int vcpu_set_run_sigmask(VCPU *cpu)
{
    sigset_t set;
    pthread_sigmask(SIG_BLOCK, NULL, &set);
    sigdelset(&set, VCPU_KICK_SIGNAL);

    /* The kernel's sigset is 8 bytes on x86-64, glibc's 128. */
    struct {
        struct kvm_signal_mask hdr;
        uint8_t bits[8];
    } mask;
    mask.hdr.len = 8;
    memcpy(mask.bits, &set, 8);
    return ioctl(cpu->fd, KVM_SET_SIGNAL_MASK, &mask) < 0 ? -errno : 0;
}

/* Consume kick signals left pending (they are blocked outside KVM_RUN). */
static void vcpu_eat_kick_signals(void)
{
    sigset_t set;
    struct timespec zero = { 0, 0 };
    sigemptyset(&set);
    sigaddset(&set, VCPU_KICK_SIGNAL);
    while (sigtimedwait(&set, NULL, &zero) > 0) {
        /* keep eating */
    }
}

void vcpu_kick(VCPU *cpu)
{
    VM *vm = cpu->vm;

    /* The request first: the vCPU reads it after it cleared
     * immediate_exit / consumed the signal (seq_cst pairs with
     * vcpu_check_requests()). */
    atomic_fetch_add(&cpu->kick_seq, 1);

    pthread_mutex_lock(&vm->lock);
    if (cpu->halted) {
        cpu->halted = false;
        atomic_store(&cpu->halted_flag, cpu->error_parked);
        pthread_cond_broadcast(&vm->cpu_cond);
    }
    if (cpu->thread_alive && !cpu->exited) {
        __atomic_store_n(&cpu->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
        if (!pthread_equal(cpu->thread, pthread_self())) {
            /* Under vm->lock: the thread cannot be joined meanwhile. */
            pthread_kill(cpu->thread, VCPU_KICK_SIGNAL);
        }
    }
    pthread_mutex_unlock(&vm->lock);
}

static bool vcpu_must_wait_locked(VCPU *cpu)
{
    return atomic_load(&cpu->vm->pause_req) || cpu->halted ||
           cpu->error_parked;
}

/*
 * Look at requests before entering the guest.  Returns false when the
 * thread must exit.  Sleeps while paused, halted or parked after an error.
 */
static bool vcpu_check_requests(VCPU *cpu)
{
    VM *vm = cpu->vm;

    atomic_store(&cpu->st_kicks_seen, atomic_load(&cpu->kick_seq));
    /* Fast path, no lock: a request set after these loads comes with a
     * pending signal / immediate_exit, so KVM_RUN returns at once. */
    if (!atomic_load(&cpu->stop_req) && !atomic_load(&vm->pause_req) &&
        !atomic_load(&cpu->halted_flag)) {
        return true;
    }

    pthread_mutex_lock(&vm->lock);
    while (!atomic_load(&cpu->stop_req) && vcpu_must_wait_locked(cpu)) {
        cpu->parked = true;
        pthread_cond_broadcast(&vm->ctl_cond);
        pthread_cond_wait(&vm->cpu_cond, &vm->lock);
        atomic_store(&cpu->st_kicks_seen, atomic_load(&cpu->kick_seq));
    }
    cpu->parked = false;
    bool run = !atomic_load(&cpu->stop_req);
    pthread_mutex_unlock(&vm->lock);
    return run;
}

static const char *exit_reason_name(uint32_t r)
{
    switch (r) {
    case KVM_EXIT_SHUTDOWN: return "SHUTDOWN (triple fault)";
    case KVM_EXIT_INTERNAL_ERROR: return "INTERNAL_ERROR";
    case KVM_EXIT_FAIL_ENTRY: return "FAIL_ENTRY";
    case KVM_EXIT_SYSTEM_EVENT: return "SYSTEM_EVENT";
    case KVM_EXIT_EXCEPTION: return "EXCEPTION";
    case KVM_EXIT_DEBUG: return "DEBUG";
    default: return "unknown";
    }
}

/* write(2) all of @buf (a short write of a pipe or tty continues). */
static void vcpu_write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

/* A guest or KVM error: report, tell the machine, park until vm_stop(). */
static void vcpu_guest_error(VCPU *cpu, VMStopReason reason, int kvm_errno)
{
    VM *vm = cpu->vm;
    struct kvm_run *run = cpu->run;

    atomic_fetch_add_explicit(&cpu->st_errors, 1, memory_order_relaxed);
    /*
     * The report and the register dump are built in memory and written
     * with one write(2), so dumps of vCPUs that fail together do not
     * interleave line by line on stderr.
     */
    char *text = NULL;
    size_t text_len = 0;
    FILE *f = open_memstream(&text, &text_len);
    if (!f) {
        f = stderr; /* no memory: unbuffered lines are better than none */
    }
    if (reason == VM_STOP_KVM_ERROR) {
        fprintf(f, "shardvm: vCPU %d: KVM_RUN failed: %s\n", cpu->index,
                strerror(kvm_errno));
    } else {
        fprintf(f, "shardvm: vCPU %d: exit %u %s", cpu->index,
                run->exit_reason, exit_reason_name(run->exit_reason));
        if (run->exit_reason == KVM_EXIT_INTERNAL_ERROR) {
            fprintf(f, " suberror=%u", run->internal.suberror);
            for (uint32_t i = 0; i < run->internal.ndata && i < 16; i++) {
                fprintf(f, " data[%u]=0x%llx", i,
                        (unsigned long long)run->internal.data[i]);
            }
        } else if (run->exit_reason == KVM_EXIT_FAIL_ENTRY) {
            fprintf(f, " hardware_entry_failure_reason=0x%llx",
                    (unsigned long long)
                    run->fail_entry.hardware_entry_failure_reason);
        } else if (run->exit_reason == KVM_EXIT_SYSTEM_EVENT) {
            fprintf(f, " type=%u", run->system_event.type);
        }
        fprintf(f, "\n");
    }
    vcpu_dump_state(cpu, f);

    if (f != stderr) {
        fclose(f);
        vcpu_write_all(STDERR_FILENO, text, text_len);
        free(text);
    }

    pthread_mutex_lock(&vm->lock);
    cpu->error_parked = true;
    atomic_store(&cpu->halted_flag, true);
    pthread_mutex_unlock(&vm->lock);

    if (vm->cfg.stop_request) {
        vm->cfg.stop_request(vm->cfg.stop_opaque, vm, cpu->index, reason);
    }
}

static uint64_t load_le(const uint8_t *p, unsigned size)
{
    uint64_t v = 0;
    memcpy(&v, p, size); /* x86 host: little endian */
    return v;
}

static void vcpu_handle_io(VCPU *cpu)
{
    struct kvm_run *run = cpu->run;
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    unsigned size = run->io.size;
    bool out = run->io.direction == KVM_EXIT_IO_OUT;

    atomic_fetch_add_explicit(&cpu->st_io, 1, memory_order_relaxed);
    /* String I/O (rep outs/ins) hands over @count items at once. */
    for (uint32_t i = 0; i < run->io.count; i++, data += size) {
        uint64_t v = out ? load_le(data, size) : 0;
        address_space_access(cpu->vm->pio, run->io.port, size, &v, out);
        if (!out) {
            memcpy(data, &v, size);
        }
    }
}

static void vcpu_handle_mmio(VCPU *cpu)
{
    struct kvm_run *run = cpu->run;
    unsigned len = run->mmio.len;
    bool write = run->mmio.is_write;

    atomic_fetch_add_explicit(&cpu->st_mmio, 1, memory_order_relaxed);
    if (len == 1 || len == 2 || len == 4 || len == 8) {
        uint64_t v = write ? load_le(run->mmio.data, len) : 0;
        address_space_access(cpu->vm->mmio, run->mmio.phys_addr, len, &v,
                             write);
        if (!write) {
            memcpy(run->mmio.data, &v, len);
        }
        return;
    }
    /* Odd sizes (rare): byte by byte. */
    for (unsigned i = 0; i < len && i < sizeof(run->mmio.data); i++) {
        uint64_t v = run->mmio.data[i];
        address_space_access(cpu->vm->mmio, run->mmio.phys_addr + i, 1, &v,
                             write);
        if (!write) {
            run->mmio.data[i] = (uint8_t)v;
        }
    }
}

static void vcpu_handle_exit(VCPU *cpu)
{
    struct kvm_run *run = cpu->run;

    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        vcpu_handle_io(cpu);
        break;
    case KVM_EXIT_MMIO:
        vcpu_handle_mmio(cpu);
        break;
    case KVM_EXIT_HLT:
        /* Only without an in-kernel LAPIC: sleep until kicked. */
        atomic_fetch_add_explicit(&cpu->st_hlt, 1, memory_order_relaxed);
        pthread_mutex_lock(&cpu->vm->lock);
        /* A kick that came in since we entered the guest ends the halt
         * at once (vcpu_kick() bumps kick_seq before taking the lock). */
        if (atomic_load(&cpu->kick_seq) == atomic_load(&cpu->st_kicks_seen)) {
            cpu->halted = true;
            atomic_store(&cpu->halted_flag, true);
        }
        pthread_mutex_unlock(&cpu->vm->lock);
        break;
    case KVM_EXIT_INTR:
        atomic_fetch_add_explicit(&cpu->st_intr, 1, memory_order_relaxed);
        break;
    case KVM_EXIT_IRQ_WINDOW_OPEN:
        break;
    case KVM_EXIT_SHUTDOWN:
        vcpu_guest_error(cpu, VM_STOP_GUEST_SHUTDOWN, 0);
        break;
    case KVM_EXIT_SYSTEM_EVENT:
        vcpu_guest_error(cpu,
                         run->system_event.type == KVM_SYSTEM_EVENT_RESET
                         ? VM_STOP_GUEST_RESET : VM_STOP_GUEST_POWEROFF, 0);
        break;
    case KVM_EXIT_INTERNAL_ERROR:
        vcpu_guest_error(cpu, VM_STOP_INTERNAL_ERROR, 0);
        break;
    case KVM_EXIT_FAIL_ENTRY:
        vcpu_guest_error(cpu, VM_STOP_FAIL_ENTRY, 0);
        break;
    default:
        vcpu_guest_error(cpu, VM_STOP_UNKNOWN_EXIT, 0);
        break;
    }
}

static void *vcpu_thread_fn(void *opaque)
{
    VCPU *cpu = opaque;
    int r = vcpu_set_run_sigmask(cpu);

    atomic_store_explicit(&cpu->tid, (int)gettid(), memory_order_relaxed);
    current_vcpu = cpu;
    if (r < 0) {
        vcpu_guest_error(cpu, VM_STOP_KVM_ERROR, -r);
    }
    while (vcpu_check_requests(cpu)) {
        r = ioctl(cpu->fd, KVM_RUN, 0);
        int err = errno;
        /* Clear before looking at requests (pairs with vcpu_kick()). */
        __atomic_store_n(&cpu->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
        atomic_fetch_add_explicit(&cpu->st_exits, 1, memory_order_relaxed);
        if (r < 0) {
            if (err == EINTR || err == EAGAIN) {
                atomic_fetch_add_explicit(&cpu->st_intr, 1,
                                          memory_order_relaxed);
                vcpu_eat_kick_signals();
                continue;
            }
            vcpu_guest_error(cpu, VM_STOP_KVM_ERROR, err);
            continue;
        }
        vcpu_handle_exit(cpu);
    }

    pthread_mutex_lock(&cpu->vm->lock);
    cpu->exited = true;
    pthread_cond_broadcast(&cpu->vm->ctl_cond);
    pthread_mutex_unlock(&cpu->vm->lock);
    return NULL;
}

int vcpu_start_thread(VCPU *cpu, GError **errp)
{
    VM *vm = cpu->vm;
    char name[16];

    snprintf(name, sizeof(name), "CPU %d/KVM", cpu->index);
    /* Hold the lock so a kick never sees thread_alive with a bad id. */
    pthread_mutex_lock(&vm->lock);
    int r = shardvm_thread_create(&cpu->thread, name, vcpu_thread_fn, cpu,
                                  errp);
    if (r == 0) {
        cpu->thread_alive = true;
    }
    pthread_mutex_unlock(&vm->lock);
    return r;
}
