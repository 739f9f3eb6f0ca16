/*
 * Machine assembly: see include/shardvm/machine.h.
 */
#include "shardvm/machine.h"
#include "shardvm/chardev.h"
#include "shardvm/debug-exit.h"
#include "shardvm/error.h"
#include "shardvm/iothread.h"
#include "shardvm/main-loop.h"
#include "shardvm/memory.h"
#include "shardvm/monitor.h"
#include "shardvm/multiboot.h"
#include "shardvm/serial.h"
#include "shardvm/vcpu.h"
#include "shardvm/vm.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

struct Machine {
    VM *vm;
    Chardev *chardev;        /* NULL with -serial none */
    SerialPort *serial;      /* NULL with -serial none */
    IORegion *serial_region;
    DebugExit *debug_exit;   /* NULL without -device isa-debug-exit */
    GPtrArray *iothreads;    /* IOThread *, in command-line order */

    /* QMP (issue 12); main-loop thread, BQL. */
    Monitor *monitor;        /* NULL without -qmp / -mon */
    bool start_paused;       /* -S: vCPUs start on the first "cont" */
    bool started;            /* vm_start() done */
    char *name;              /* -name */

    /* Written by vCPU threads (first writer wins), read at exit. */
    atomic_int exit_status;  /* isa-debug-exit status, -1: none */
    atomic_int stop_reason;  /* VMStopReason of a vCPU stop, 0: none */
};

/* ---- COM1 ------------------------------------------------------------ */

/* The UART's callbacks.  They run under the port's own mutex on the vCPU
 * thread (output, IRQ) or the main loop (IRQ after input). */
static void machine_serial_output(void *opaque, const uint8_t *buf,
                                  size_t len)
{
    Machine *m = opaque;
    /*
     * QEMU exits inside the isa-debug-exit write, so a guest never prints
     * after it.  Here the vCPUs run on until the main loop stops them;
     * whatever they print meanwhile (e.g. a fault in the guest's parking
     * code) is dropped to keep the output identical.
     */
    if (atomic_load_explicit(&m->exit_status, memory_order_acquire) >= 0) {
        return;
    }
    chardev_write(m->chardev, buf, len);
}

static void machine_serial_irq(void *opaque, bool level)
{
    Machine *m = opaque;
    vm_set_irq_line(m->vm, SERIAL_COM1_IRQ, level);
}

static void machine_serial_input(void *opaque, const uint8_t *buf,
                                 size_t len)
{
    Machine *m = opaque;
    serial_receive(m->serial, buf, len);
}

/*
 * Port accesses to the UART.  The region is lock-free (no BQL): the port
 * serialises itself with its mutex, and a vCPU printing a line must not
 * wait for the main loop to finish an iteration for every byte.  Wider
 * accesses (rare: "outw" to 0x3f8) are split into bytes, low port first.
 */
static uint64_t machine_serial_pio_read(void *opaque, uint64_t offset,
                                        unsigned size)
{
    Machine *m = opaque;
    uint64_t v = 0;
    for (unsigned i = 0; i < size; i++) {
        v |= (uint64_t)serial_read(m->serial, (unsigned)(offset + i) & 7)
             << (8 * i);
    }
    return v;
}

static void machine_serial_pio_write(void *opaque, uint64_t offset,
                                     uint64_t value, unsigned size)
{
    Machine *m = opaque;
    for (unsigned i = 0; i < size; i++) {
        serial_write(m->serial, (unsigned)(offset + i) & 7,
                     (uint8_t)(value >> (8 * i)));
    }
}

static const IORegionOps machine_serial_ops = {
    .read = machine_serial_pio_read,
    .write = machine_serial_pio_write,
};

static int machine_add_serial(Machine *m, const ShardvmOptions *o,
                              GError **errp)
{
    if (o->serial == CHARDEV_NONE ||
        (o->nodefaults && !o->serial_given && !o->nographic)) {
        return 0;
    }
    m->chardev = chardev_new(o->serial, o->serial_path, errp);
    if (!m->chardev) {
        return -EINVAL;
    }
    m->serial = serial_new(machine_serial_output, machine_serial_irq, m);
    m->serial_region = address_space_add(vm_get_pio_space(m->vm), "serial",
                                         SERIAL_COM1_BASE, SERIAL_NR_REGS,
                                         &machine_serial_ops, m, 0, errp);
    return m->serial_region ? 0 : -EEXIST;
}

/* ---- stop requests ----------------------------------------------------- */

/* isa-debug-exit written: on the vCPU thread. */
static void machine_debug_exit(void *opaque, int status)
{
    Machine *m = opaque;
    int none = -1;
    /* Pairs with the acquire load in machine_serial_output(). */
    atomic_compare_exchange_strong_explicit(&m->exit_status, &none, status,
                                            memory_order_acq_rel,
                                            memory_order_acquire);
    main_loop_request_shutdown(SHUTDOWN_GUEST);
}

/* A vCPU stopped on a guest event or an error (already reported with a
 * register dump by the vCPU thread). */
static void machine_vcpu_stop(void *opaque, VM *vm, int cpu_index,
                              VMStopReason reason)
{
    Machine *m = opaque;
    int none = 0;
    bool guest = reason == VM_STOP_GUEST_SHUTDOWN ||
                 reason == VM_STOP_GUEST_RESET ||
                 reason == VM_STOP_GUEST_POWEROFF;

    atomic_compare_exchange_strong(&m->stop_reason, &none, (int)reason);
    main_loop_request_shutdown(guest ? SHUTDOWN_GUEST : SHUTDOWN_ERROR);
}

/* ---- boot -------------------------------------------------------------- */

/*
 * Load the kernel into the VM's RAM (one or two ranges around the PCI hole,
 * include/shardvm/vm.h) and point every vCPU at its entry.
 */
static int machine_load_kernel(Machine *m, const ShardvmOptions *o,
                               GError **errp)
{
    uint64_t ram = vm_get_ram_size(m->vm);
    uint64_t low = MIN(ram, VM_LOWMEM_MAX);
    MultibootRam ranges[2] = {
        { 0, low, vm_gpa_to_hva(m->vm, 0, low) },
        { VM_HIGHMEM_BASE, ram - low, NULL },
    };
    size_t n = 1;
    if (ram > low) {
        ranges[1].hva = vm_gpa_to_hva(m->vm, VM_HIGHMEM_BASE, ram - low);
        n = 2;
    }
    for (size_t i = 0; i < n; i++) {
        if (!ranges[i].hva) {
            return shardvm_error_set(errp, -EFAULT, "guest RAM at 0x%"
                                     G_GINT64_MODIFIER "x is not mapped",
                                     ranges[i].gpa);
        }
    }

    MultibootBoot boot;
    int r = multiboot_load_files(o->kernel, o->append, o->initrd, ranges, n,
                                 &boot, errp);
    if (r < 0) {
        return r;
    }

    int ncpus = vm_get_nr_vcpus(m->vm);
    for (int i = 0; i < ncpus; i++) {
        VCPU *cpu = vm_get_vcpu(m->vm, i);
        VCPUEntry32 e = { .eip = boot.entry, .ecx = (uint32_t)ncpus };
        if (i == 0) {
            e.eax = MULTIBOOT_BOOTLOADER_MAGIC;
            e.ebx = boot.mbi_addr;
            e.edx = MACHINE_SMP_SIGNATURE;
        } else {
            e.eax = MACHINE_SMP_SIGNATURE;
            e.ebx = (uint32_t)i;
            e.edx = 0;
        }
        /* vcpu_set_entry32() also makes APs runnable (no INIT/SIPI). */
        r = vcpu_set_entry32(cpu, &e);
        if (r < 0) {
            return shardvm_error_set(errp, r, "vCPU %d: cannot set the entry "
                                     "state: %s", i, strerror(-r));
        }
    }
    return 0;
}

/* ---- life cycle -------------------------------------------------------- */

Machine *machine_new(const ShardvmOptions *o, GError **errp)
{
    Machine *m = g_new0(Machine, 1);
    atomic_init(&m->exit_status, -1);
    atomic_init(&m->stop_reason, 0);
    m->iothreads = g_ptr_array_new();
    m->start_paused = o->start_paused;
    m->name = g_strdup(o->name);

    if (!o->kernel) {
        shardvm_error_set(errp, -EINVAL, "no -kernel given: shardvm boots a "
                          "multiboot kernel (see -help)");
        goto fail;
    }
    if (o->cpus > VM_MAX_VCPUS) {
        shardvm_error_set(errp, -EINVAL, "-smp: %u CPUs is more than the "
                          "maximum of %d", o->cpus, VM_MAX_VCPUS);
        goto fail;
    }

    VMConfig cfg = {
        .ram_size = o->ram_size,
        .nr_vcpus = (int)o->cpus,
        .stop_request = machine_vcpu_stop,
        .stop_opaque = m,
    };
    m->vm = vm_new(&cfg, errp);
    if (!m->vm) {
        goto fail;
    }
    if (machine_add_serial(m, o, errp) < 0) {
        goto fail;
    }
    if (o->debug_exit) {
        m->debug_exit = debug_exit_new(vm_get_pio_space(m->vm),
                                       o->debug_exit_iobase,
                                       o->debug_exit_iosize,
                                       machine_debug_exit, m, errp);
        if (!m->debug_exit) {
            goto fail;
        }
    }
    for (guint i = 0; i < o->iothreads->len; i++) {
        IOThreadOption *it = &g_array_index(o->iothreads, IOThreadOption, i);
        IOThread *iot = iothread_new(it->id, &it->props, errp);
        if (!iot) {
            goto fail;
        }
        g_ptr_array_add(m->iothreads, iot);
    }
    if (machine_load_kernel(m, o, errp) < 0) {
        goto fail;
    }
    return m;

fail:
    machine_free(m);
    return NULL;
}

int machine_start(Machine *m, GError **errp)
{
    if (m->start_paused) {
        return 0; /* -S: prelaunch until QMP "cont" (machine_qmp_cont) */
    }
    int r = vm_start(m->vm, errp);
    m->started = r == 0;
    if (r == 0 && m->serial) {
        chardev_set_input(m->chardev, machine_serial_input, m);
    }
    return r;
}

int machine_exit_status(Machine *m, int shutdown_reason)
{
    int status = atomic_load(&m->exit_status);
    int stop = atomic_load(&m->stop_reason);

    if (status >= 0) {
        return status; /* isa-debug-exit: (value << 1) | 1 */
    }
    switch (shutdown_reason) {
    case SHUTDOWN_HOST_SIGNAL:
        fprintf(stderr, "shardvm: terminating on signal %d\n",
                main_loop_shutdown_signal());
        return 0;
    case SHUTDOWN_GUEST:
        fprintf(stderr, "shardvm: guest %s, exiting\n",
                stop == VM_STOP_GUEST_SHUTDOWN ? "triple fault (reset)"
                : stop == VM_STOP_GUEST_RESET ? "reset"
                : "power-off");
        return 0;
    case SHUTDOWN_HOST_QMP:
        return 0;
    default:
        fprintf(stderr, "shardvm: stopped after a vCPU error (reason %d)\n",
                stop);
        return 1;
    }
}

void machine_free(Machine *m)
{
    if (!m) {
        return;
    }
    /* The monitor first: no command reaches a half torn-down machine. */
    monitor_free(m->monitor);
    /* vCPUs first: after this nothing calls into the devices. */
    if (m->vm) {
        vm_stop(m->vm);
    }
    for (guint i = m->iothreads->len; i > 0; i--) {
        iothread_free(g_ptr_array_index(m->iothreads, i - 1));
    }
    g_ptr_array_free(m->iothreads, TRUE);
    debug_exit_free(m->debug_exit);
    if (m->serial_region) {
        address_space_remove(vm_get_pio_space(m->vm), m->serial_region);
    }
    serial_free(m->serial);
    chardev_free(m->chardev);
    vm_free(m->vm);
    g_free(m->name);
    g_free(m);
}

/* ---- QMP monitor backend (issue 12) --------------------------------------
 * The MonitorBackend of include/shardvm/monitor.h for this machine.  All
 * callbacks run in the main loop with the BQL held. */

static const char *machine_qmp_run_state(void *opaque)
{
    Machine *m = opaque;
    if (!m->started) {
        return "prelaunch";
    }
    return vm_is_paused(m->vm) ? "paused" : "running";
}

static int machine_qmp_stop(void *opaque, GError **errp)
{
    Machine *m = opaque;
    if (!m->started || vm_is_paused(m->vm)) {
        return 0;
    }
    vm_pause(m->vm);
    return 1;
}

static int machine_qmp_cont(void *opaque, GError **errp)
{
    Machine *m = opaque;
    if (!m->started) {
        int r = vm_start(m->vm, errp);
        if (r < 0) {
            return r;
        }
        m->started = true;
        if (m->serial) {
            chardev_set_input(m->chardev, machine_serial_input, m);
        }
        return 1;
    }
    if (!vm_is_paused(m->vm)) {
        return 0;
    }
    vm_resume(m->vm);
    return 1;
}

static void machine_qmp_powerdown(void *opaque)
{
    /* No ACPI yet: the power button ends the machine as a guest
     * power-off would. */
    main_loop_request_shutdown(SHUTDOWN_GUEST);
}

static void machine_qmp_quit(void *opaque)
{
    main_loop_request_shutdown(SHUTDOWN_HOST_QMP);
}

static const char *machine_qmp_name(void *opaque)
{
    Machine *m = opaque;
    return m->name;
}

static void machine_qmp_kvm_info(void *opaque, bool *enabled, bool *present)
{
    *enabled = true;
    *present = true;
}

static void machine_qmp_vcpu_thread_ids(void *opaque, GArray *out)
{
    Machine *m = opaque;
    /* The vcpu module does not expose thread ids yet: 0 each. */
    for (int i = 0; i < vm_get_nr_vcpus(m->vm); i++) {
        int tid = 0;
        g_array_append_val(out, tid);
    }
}

static void machine_qmp_iothread_list(void *opaque, GPtrArray *out)
{
    Machine *m = opaque;
    for (guint i = 0; i < m->iothreads->len; i++) {
        g_ptr_array_add(out, g_ptr_array_index(m->iothreads, i));
    }
}

static IOThread *machine_qmp_iothread_find(void *opaque, const char *id)
{
    Machine *m = opaque;
    for (guint i = 0; i < m->iothreads->len; i++) {
        IOThread *t = g_ptr_array_index(m->iothreads, i);
        if (!strcmp(iothread_get_id(t), id)) {
            return t;
        }
    }
    return NULL;
}

static int machine_qmp_iothread_add(void *opaque, const char *id,
                                    const IOThreadProps *props,
                                    GError **errp)
{
    Machine *m = opaque;
    IOThread *t = iothread_new(id, props, errp);
    if (!t) {
        return -EINVAL;
    }
    g_ptr_array_add(m->iothreads, t);
    return 0;
}

static int machine_qmp_iothread_del(void *opaque, const char *id,
                                    GError **errp)
{
    Machine *m = opaque;
    IOThread *t = machine_qmp_iothread_find(m, id);
    if (!t) {
        return -ENOENT;
    }
    /* TODO(lead, virtio-blk merge): -EBUSY while a device uses it. */
    g_ptr_array_remove(m->iothreads, t);
    iothread_free(t);
    return 0;
}

static const MonitorBackend machine_qmp_backend = {
    .run_state = machine_qmp_run_state,
    .stop = machine_qmp_stop,
    .cont = machine_qmp_cont,
    .powerdown = machine_qmp_powerdown,
    .quit = machine_qmp_quit,
    .name = machine_qmp_name,
    .kvm_info = machine_qmp_kvm_info,
    .vcpu_thread_ids = machine_qmp_vcpu_thread_ids,
    .iothread_list = machine_qmp_iothread_list,
    .iothread_find = machine_qmp_iothread_find,
    .iothread_add = machine_qmp_iothread_add,
    .iothread_del = machine_qmp_iothread_del,
    /* block_list, virtqueue_list, blockdev_set_iothread: wired with
     * virtio-blk (the block and virtio branches). */
};

int machine_monitor_start(Machine *m, const ShardvmOptions *o,
                          GError **errp)
{
    bool any = (o->qmp && o->qmp->len) || (o->mons && o->mons->len);
    if (!any) {
        return 0;
    }
    m->monitor = monitor_new(&machine_qmp_backend, m);
    for (guint i = 0; o->qmp && i < o->qmp->len; i++) {
        int r = monitor_add_listener(m->monitor, g_ptr_array_index(o->qmp, i),
                                     errp);
        if (r < 0) {
            return r;
        }
    }
    for (guint i = 0; o->mons && i < o->mons->len; i++) {
        const char *id = g_ptr_array_index(o->mons, i);
        const char *addr = NULL;
        size_t idlen = strlen(id);
        for (guint k = 0; o->chardevs && k < o->chardevs->len; k++) {
            const char *cd = g_ptr_array_index(o->chardevs, k);
            if (!strncmp(cd, id, idlen) && cd[idlen] == '=') {
                addr = cd + idlen + 1;
            }
        }
        if (!addr) {
            return shardvm_error_set(errp, -EINVAL, "-mon: chardev '%s' not "
                                     "found", id);
        }
        int r = monitor_add_listener(m->monitor, addr, errp);
        if (r < 0) {
            return r;
        }
    }
    return 0;
}

Monitor *machine_get_monitor(Machine *m)
{
    return m->monitor;
}
