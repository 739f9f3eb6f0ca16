/*
 * Machine assembly: see include/shardvm/machine.h.
 */
#include "shardvm/machine.h"
#include "machine-block-errors.h"
#include "shardvm/chardev.h"
#include "shardvm/debug-exit.h"
#include "shardvm/block.h"
#include "shardvm/device.h"
#include "shardvm/virtio.h"
#include "shardvm/error.h"
#include "shardvm/iothread.h"
#include "shardvm/machine-event.h"
#include "shardvm/main-loop.h"
#include "shardvm/memory.h"
#include "shardvm/monitor.h"
#include "shardvm/multiboot.h"
#include "shardvm/pci.h"
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
    PCIBus *pci;             /* bus 0, always there (host bridge 00.0) */
    GArray *devices;         /* MachineDevice, in command-line order */
    GPtrArray *drives;       /* BlockBackend *, -drive/-blockdev order */
    GuestMemory *guest_memory; /* RAM map for virtio (RCU-published) */
    unsigned anon_devices;   /* -device without id= so far (qdev names) */

    /* The first of debug-exit, vCPU stop and host stop: one atomic word,
     * written by vCPU threads and the main loop (first writer wins). */
    MachineEvent event;
    /* QMP (issue 12); main-loop thread, BQL. */
    Monitor *monitor;        /* NULL without -qmp / -mon */
    bool start_paused;       /* -S: vCPUs start on the first "cont" */
    bool started;            /* vm_start() done */
    char *name;              /* -name */
    /* -no-shutdown: a guest shutdown stops the vCPUs (run state
     * "shutdown") instead of ending the process; "quit" ends it. */
    AioBH *guest_shutdown_bh;/* -no-shutdown only (else NULL); main
                              * context; scheduled from vCPU threads */
    bool guest_shutdown;     /* BQL: stopped by a guest shutdown */
    /* The first guest stop reason under -no-shutdown (VMStopReason; 0:
     * system_powerdown).  CAS from vCPU threads, read by the BH. */
    _Atomic int guest_stop_reason;
    /* werror/rerror=stop (issue 13); main-loop thread, BQL */
    MachineBlockErrors *block_errors;
    bool io_error_paused;    /* paused by an I/O error ("io-error") */

};

/* ---- COM1 ------------------------------------------------------------ */

/* The UART's callbacks.  They run under the port's own mutex on the vCPU
 * thread (output, IRQ) or the main loop (IRQ after input). */
static size_t machine_serial_output(void *opaque, const uint8_t *buf,
                                    size_t len)
{
    Machine *m = opaque;
    /*
     * QEMU exits inside the isa-debug-exit write, so a guest never prints
     * after it.  Here the vCPUs run on until the main loop stops them;
     * whatever they print meanwhile (e.g. a fault in the guest's parking
     * code) is dropped to keep the output identical.
     */
    uint32_t v;
    if (machine_event_get(&m->event, &v) == MACHINE_EVENT_DEBUG_EXIT) {
        return len;
    }
    /* Never blocks: a full console buffer stops the UART's transmitter. */
    return chardev_write(m->chardev, buf, len);
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

/* Input backpressure: stdin is read only while the UART has room. */
static size_t machine_serial_can_read(void *opaque)
{
    Machine *m = opaque;
    return serial_rx_room(m->serial);
}

static void machine_serial_rx_space(void *opaque)
{
    Machine *m = opaque;
    chardev_input_resume(m->chardev);
}

/* The console took its backlog: restart the UART's transmitter. */
static void machine_serial_writable(void *opaque)
{
    Machine *m = opaque;
    serial_tx_retry(m->serial);
}

/*
 * Port accesses to the UART.  The region is lock-free (no BQL): the port
 * serialises itself with its mutex, and a vCPU printing a line must not
 * wait for the main loop to finish an iteration for every byte.  Wider
 * accesses (rare: "outw" to 0x3f8) are split into bytes, low port first;
 * the address space already cut off the bytes past port 0x3ff (they go
 * to whoever owns those ports), so offset + i stays below 8.
 */
static uint64_t machine_serial_pio_read(void *opaque, uint64_t offset,
                                        unsigned size)
{
    Machine *m = opaque;
    uint64_t v = 0;
    for (unsigned i = 0; i < size; i++) {
        v |= (uint64_t)serial_read(m->serial, (unsigned)(offset + i))
             << (8 * i);
    }
    return v;
}

static void machine_serial_pio_write(void *opaque, uint64_t offset,
                                     uint64_t value, unsigned size)
{
    Machine *m = opaque;
    for (unsigned i = 0; i < size; i++) {
        serial_write(m->serial, (unsigned)(offset + i),
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
    serial_set_rx_space_handler(m->serial, machine_serial_rx_space);
    chardev_set_writable_handler(m->chardev, machine_serial_writable, m);
    m->serial_region = address_space_add(vm_get_pio_space(m->vm), "serial",
                                         SERIAL_COM1_BASE, SERIAL_NR_REGS,
                                         &machine_serial_ops, m, 0, errp);
    return m->serial_region ? 0 : -EEXIST;
}

/* ---- PCI and -device ------------------------------------------------ */

/* A device built by its type's constructor. */
typedef struct MachineDevice {
    const DeviceType *type;
    void *dev;
    /* QOM path QMP reports as "qdev" (QEMU's spelling):
     * /machine/peripheral/ID/virtio-backend with id=, else
     * /machine/peripheral-anon/device[N]/virtio-backend. */
    char *qdev;
} MachineDevice;

static IOThread *machine_find_iothread(void *opaque, const char *id)
{
    Machine *m = opaque;
    for (guint i = 0; i < m->iothreads->len; i++) {
        IOThread *iot = g_ptr_array_index(m->iothreads, i);
        if (!strcmp(iothread_get_id(iot), id)) {
            return iot;
        }
    }
    return NULL;
}

static BlockBackend *machine_find_drive(void *opaque, const char *id)
{
    Machine *m = opaque;
    for (guint i = 0; i < m->drives->len; i++) {
        BlockBackend *blk = g_ptr_array_index(m->drives, i);
        if (!strcmp(blk_get_id(blk), id)) {
            return blk;
        }
    }
    return NULL;
}

/* werror/rerror=stop: pause for an I/O error (main thread, BQL). */
static bool machine_io_error_stop(void *opaque)
{
    Machine *m = opaque;
    if (!m->started || vm_is_paused(m->vm)) {
        return false;
    }
    vm_pause(m->vm);
    m->io_error_paused = true;
    return true;
}

static Monitor *machine_io_error_monitor(void *opaque)
{
    return ((Machine *)opaque)->monitor;
}

static const MachineBlockErrorsOps machine_block_errors_ops = {
    .stop_vm = machine_io_error_stop,
    .monitor = machine_io_error_monitor,
};

/* Every -drive / -blockdev, opened in command-line order (main thread). */
static int machine_open_drives(Machine *m, const ShardvmOptions *o,
                               GError **errp)
{
    for (guint i = 0; o->drives && i < o->drives->len; i++) {
        const BlockOptions *bo = g_ptr_array_index(o->drives, i);
        BlockBackend *blk;
        if (bo->driver == BLOCK_DRIVER_BLKDEBUG) {
            /* layered over a node defined before it */
            BlockBackend *image = machine_find_drive(m, bo->image);
            if (!image) {
                return shardvm_error_set(errp, -ENOENT, "blkdebug '%s': "
                                         "image '%s' not found (define it "
                                         "before, with -blockdev "
                                         "node-name= or -drive id=)",
                                         bo->id ? bo->id : "", bo->image);
            }
            blk = blk_open_blkdebug(bo, image, errp);
        } else {
            blk = blk_open(bo, errp);
        }
        if (!blk) {
            return -EINVAL;
        }
        g_ptr_array_add(m->drives, blk);
    }
    return 0;
}

/* The guest RAM map that DMA-capable devices read through (RCU). */
static GuestMemory *machine_guest_memory(VM *vm)
{
    uint64_t ram = vm_get_ram_size(vm);
    uint64_t low = MIN(ram, VM_LOWMEM_MAX);
    GuestMemoryRange r[2] = {
        { 0, low, vm_gpa_to_hva(vm, 0, low) },
        { 1ull << 32, ram - low, NULL },
    };
    if (ram > low) {
        r[1].hva = vm_gpa_to_hva(vm, 1ull << 32, ram - low);
    }
    return guest_memory_new(r, ram > low ? 2 : 1);
}

/* The device list of one machine: -device entries, then a virtio-blk-pci
 * for each -drive if=virtio (as QEMU does), in command-line order. */
static int machine_create_device(Machine *m, const DeviceHost *host,
                                 const char *driver, GHashTable *src,
                                 GError **errp);

/*
 * Bus 0 with BAR windows around the VM's RAM (include/shardvm/pci.h),
 * then every -device in command-line order.
 */
static int machine_add_pci(Machine *m, const ShardvmOptions *o,
                           GError **errp)
{
    uint64_t ram = vm_get_ram_size(m->vm);
    PCIBusConfig cfg = {
        .mmio = vm_get_mmio_space(m->vm),
        .pio = vm_get_pio_space(m->vm),
        .ram_below_4g = MIN(ram, VM_LOWMEM_MAX),
        .ram_above_4g = ram - MIN(ram, VM_LOWMEM_MAX),
        .vm_ops = &pci_vm_ops_kvm,
        .vm_opaque = m->vm,
    };
    m->pci = pci_bus_new(&cfg, errp);
    if (!m->pci) {
        return -EINVAL;
    }
    m->guest_memory = machine_guest_memory(m->vm);
    DeviceHost host = {
        .vm = m->vm,
        .pci = m->pci,
        .find_iothread = machine_find_iothread,
        .find_drive = machine_find_drive,
        .opaque = m,
        .guest_memory = m->guest_memory,
        .nr_vcpus = (unsigned)vm_get_nr_vcpus(m->vm),
        .block_errors = machine_block_errors_handler(m->block_errors),
    };
    for (guint i = 0; i < o->devices->len; i++) {
        DeviceOption *d = g_ptr_array_index(o->devices, i);
        if (machine_create_device(m, &host, d->driver, d->props, errp) < 0) {
            return -EINVAL;
        }
    }
    for (guint i = 0; o->drives && i < o->drives->len; i++) {
        BlockOptions *b = g_ptr_array_index(o->drives, i);
        if (!b->if_virtio) {
            continue;
        }
        GHashTable *props = g_hash_table_new_full(g_str_hash, g_str_equal,
                                                  g_free, g_free);
        g_hash_table_insert(props, g_strdup("drive"), g_strdup(b->id));
        int r = machine_create_device(m, &host, "virtio-blk-pci", props,
                                      errp);
        g_hash_table_unref(props);
        if (r < 0) {
            return r;
        }
    }
    return 0;
}

static bool machine_device_is_vblk(const MachineDevice *md)
{
    return md->type->create == virtio_blk_pci_create;
}

static char *machine_device_qdev(Machine *m, const MachineDevice *md)
{
    const char *id = machine_device_is_vblk(md) ?
                     virtio_blk_pci_get_id(md->dev) : NULL;
    if (id) {
        return g_strdup_printf("/machine/peripheral/%s/virtio-backend", id);
    }
    m->anon_devices++;
    return g_strdup_printf("/machine/peripheral-anon/device[%u]/"
                           "virtio-backend", m->anon_devices - 1);
}

static int machine_create_device(Machine *m, const DeviceHost *host,
                                 const char *driver, GHashTable *src,
                                 GError **errp)
{
    const DeviceType *t = device_type_find(driver);
    if (!t || !t->create) {
        return shardvm_error_set(errp, -ENOTSUP, "-device: '%s' is not "
                                 "built into this shardvm", driver);
    }
    /* The constructor takes out what it uses: work on a copy. */
    GHashTable *props = g_hash_table_new_full(g_str_hash, g_str_equal,
                                              g_free, g_free);
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, src);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        g_hash_table_insert(props, g_strdup(k), g_strdup(v));
    }
    MachineDevice md = { t, t->create(host, props, errp), NULL };
    int r = 0;
    if (md.dev) {
        md.qdev = machine_device_qdev(m, &md);
        g_array_append_val(m->devices, md);
        g_hash_table_iter_init(&it, props);
        if (g_hash_table_iter_next(&it, &k, NULL)) {
            r = shardvm_error_set(errp, -EINVAL, "-device %s: unknown "
                                  "property '%s'", driver, (char *)k);
        }
    } else {
        r = -EINVAL;
    }
    g_hash_table_unref(props);
    return r;
}

/* ---- stop requests ----------------------------------------------------- */

/* isa-debug-exit written: on the vCPU thread. */
static void machine_debug_exit(void *opaque, unsigned status)
{
    Machine *m = opaque;
    /* Pairs with the acquire load in machine_serial_output(). */
    machine_event_record(&m->event, MACHINE_EVENT_DEBUG_EXIT, status);
    main_loop_request_shutdown(SHUTDOWN_GUEST);
}

/*
 * -no-shutdown, in the main loop with the BQL: the guest shut down (or
 * system_powerdown, which stands for the ACPI button): tell the monitor
 * (SHUTDOWN, then STOP, as QEMU) and pause the vCPUs; the process stays
 * until "quit" or a signal, status "shutdown".
 */
static void machine_guest_shutdown_bh(void *opaque)
{
    Machine *m = opaque;
    if (m->guest_shutdown) {
        return;
    }
    m->guest_shutdown = true;
    if (m->monitor) {
        JsonObject *data = json_object_new();
        json_object_set_boolean_member(data, "guest", true);
        int why = atomic_load(&m->guest_stop_reason);
        json_object_set_string_member(data, "reason",
                                      why == 0 || why == VM_STOP_GUEST_POWEROFF
                                      ? "guest-shutdown" : "guest-reset");
        monitor_emit_event(m->monitor, "SHUTDOWN", data);
        json_object_unref(data);
    }
    if (m->started && !vm_is_paused(m->vm)) {
        vm_pause(m->vm);
    }
    if (m->monitor) {
        monitor_emit_event(m->monitor, "STOP", NULL);
    }
}

/* A vCPU stopped on a guest event or an error (already reported with a
 * register dump by the vCPU thread). */
static void machine_vcpu_stop(void *opaque, VM *vm, int cpu_index,
                              VMStopReason reason)
{
    Machine *m = opaque;
    bool guest = reason == VM_STOP_GUEST_SHUTDOWN ||
                 reason == VM_STOP_GUEST_RESET ||
                 reason == VM_STOP_GUEST_POWEROFF;

    if (guest && m->guest_shutdown_bh) {
        /* Not recorded: the exit status will be the later quit's. */
        int none = 0;
        atomic_compare_exchange_strong(&m->guest_stop_reason, &none,
                                       (int)reason);
        aio_bh_schedule(m->guest_shutdown_bh);
        return;
    }

    /* The exit status follows the recorded event alone; the main loop's
     * shutdown reason only says that it should stop. */
    machine_event_record(&m->event, MACHINE_EVENT_VCPU_STOP, reason);
    main_loop_request_shutdown(guest ? SHUTDOWN_GUEST : SHUTDOWN_ERROR);
}

/* ---- boot -------------------------------------------------------------- */

/*
 * Load the kernel into the VM's RAM (one or two ranges around the PCI hole,
 * include/shardvm/vm.h) and point every vCPU at its entry.
 */
static int machine_load_kernel(Machine *m, const ShardvmOptions *o,
                               const MultibootFiles *files, GError **errp)
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
    int r = multiboot_files_load(files, o->kernel, o->append, ranges, n,
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

/* A signal that arrived during startup ends it (main.c reports it as a
 * normal signal exit). */
static bool machine_startup_interrupted(GError **errp)
{
    if (main_loop_poll_signals() != SHUTDOWN_HOST_SIGNAL) {
        return false;
    }
    shardvm_error_set(errp, -EINTR, "start-up interrupted by signal %d",
                      main_loop_shutdown_signal());
    return true;
}

Machine *machine_new(const ShardvmOptions *o, GError **errp)
{
    MultibootFiles files = { 0 };
    Machine *m = g_new0(Machine, 1);
    machine_event_init(&m->event);
    m->iothreads = g_ptr_array_new();
    m->devices = g_array_new(FALSE, FALSE, sizeof(MachineDevice));
    m->start_paused = o->start_paused;
    if (o->no_shutdown) {
        m->guest_shutdown_bh = aio_bh_new(main_loop_get_aio_context(),
                                          machine_guest_shutdown_bh, m);
    }
    m->name = g_strdup(o->name);
    m->drives = g_ptr_array_new_with_free_func((GDestroyNotify)blk_unref);
    m->block_errors = machine_block_errors_new(&machine_block_errors_ops, m);

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

    /*
     * The files first: they are checked (regular, no larger than RAM) and
     * read before the VM costs anything, and a bad one is reported
     * without /dev/kvm.
     */
    if (multiboot_files_read(o->kernel, o->initrd, o->ram_size, &files,
                             errp) < 0 ||
        machine_startup_interrupted(errp)) {
        goto fail;
    }
    /* The images too (missing file, lock held by another VMM, ...). */
    if (machine_open_drives(m, o, errp) < 0) {
        goto fail;
    }

    VMConfig cfg = {
        .ram_size = o->ram_size,
        .nr_vcpus = (int)o->cpus,
        .stop_request = machine_vcpu_stop,
        .stop_opaque = m,
    };
    /* KVM_SET_USER_MEMORY_REGION of a large -m (1T: seconds) cannot be
     * interrupted; a signal meanwhile is handled right after it. */
    m->vm = vm_new(&cfg, errp);
    if (!m->vm || machine_startup_interrupted(errp)) {
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
    /* After the IOThreads: devices look them and the drives up by id. */
    if (machine_add_pci(m, o, errp) < 0) {
        goto fail;
    }
    if (machine_startup_interrupted(errp) ||
        machine_load_kernel(m, o, &files, errp) < 0) {
        goto fail;
    }
    multiboot_files_clear(&files);
    return m;

fail:
    multiboot_files_clear(&files);
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
        chardev_set_input(m->chardev, machine_serial_can_read,
                          machine_serial_input, m);
    }
    return r;
}

int machine_exit_status(Machine *m, int shutdown_reason)
{
    char *msg;
    int status = machine_event_exit_status(&m->event, shutdown_reason,
                                           main_loop_shutdown_signal(), &msg);
    bool guest;
    const char *reason = machine_event_shutdown_reason(&m->event, &guest);
    if (m->monitor && reason) {
        /* QMP clients hear why, before the monitor closes (machine_free). */
        JsonObject *data = json_object_new();
        json_object_set_boolean_member(data, "guest", guest);
        json_object_set_string_member(data, "reason", reason);
        monitor_emit_event(m->monitor, "SHUTDOWN", data);
        json_object_unref(data);
    }
    if (msg) {
        fprintf(stderr, "shardvm: %s\n", msg);
        g_free(msg);
    }
    return status;
}

void machine_free(Machine *m)
{
    if (!m) {
        return;
    }
    /* The monitor first: no command reaches a half torn-down machine. */
    if (m->guest_shutdown_bh) {
        aio_bh_delete(m->guest_shutdown_bh);
    }
    monitor_free(m->monitor);
    /* vCPUs first: after this nothing calls into the devices. */
    if (m->vm) {
        vm_stop(m->vm);
    }
    /* Devices before the IOThreads their queues run in, bus after them. */
    for (guint i = m->devices->len; i > 0; i--) {
        MachineDevice *md = &g_array_index(m->devices, MachineDevice, i - 1);
        md->type->destroy(md->dev);
        g_free(md->qdev);
    }
    g_array_free(m->devices, TRUE);
    machine_block_errors_free(m->block_errors);
    pci_bus_free(m->pci);
    /* After the devices (their queues held references) and before the
     * IOThreads (a backend's per-context state goes with its queues). */
    g_ptr_array_free(m->drives, TRUE);
    if (m->guest_memory) {
        guest_memory_free(m->guest_memory);
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
    if (m->guest_shutdown) {
        return "shutdown";
    }
    if (vm_is_paused(m->vm)) {
        return m->io_error_paused ? "io-error" : "paused";
    }
    return "running";
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
    if (m->guest_shutdown) {
        /* QEMU's answer in run state "shutdown" (no system_reset here). */
        return shardvm_error_set(errp, -EINVAL, "Resetting the Virtual "
                                 "Machine is required");
    }
    if (!m->started) {
        int r = vm_start(m->vm, errp);
        if (r < 0) {
            return r;
        }
        m->started = true;
        if (m->serial) {
            chardev_set_input(m->chardev, machine_serial_can_read,
                              machine_serial_input, m);
        }
        return 1;
    }
    if (!vm_is_paused(m->vm)) {
        return 0;
    }
    /* QEMU's order: devices retry what werror/rerror=stop kept, then the
     * vCPUs run */
    m->io_error_paused = false;
    machine_block_errors_resume(m->block_errors);
    vm_resume(m->vm);
    return 1;
}

static void machine_qmp_powerdown(void *opaque)
{
    Machine *m = opaque;
    /* No ACPI yet: the power button ends the machine as a guest
     * power-off would (or stops it, with -no-shutdown). */
    if (m->guest_shutdown_bh) {
        aio_bh_schedule(m->guest_shutdown_bh);
        return;
    }
    main_loop_request_shutdown(SHUTDOWN_GUEST);
}

static void machine_qmp_quit(void *opaque)
{
    Machine *m = opaque;
    /* The monitor has announced SHUTDOWN (host-qmp-quit): record it first,
     * so a guest power-off racing the exit neither announces a second
     * SHUTDOWN nor changes the exit status (QEMU sends one event). */
    machine_event_record(&m->event, MACHINE_EVENT_HOST, SHUTDOWN_HOST_QMP);
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
    /* 0 for a vCPU whose thread has not started (-S: before "cont"). */
    for (int i = 0; i < vm_get_nr_vcpus(m->vm); i++) {
        int tid = vcpu_get_thread_id(vm_get_vcpu(m->vm, i));
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
    if (iothread_in_use(t)) {
        return shardvm_error_set(errp, -EBUSY, "IOThread '%s' serves a "
                                 "device's queues", id);
    }
    g_ptr_array_remove(m->iothreads, t);
    iothread_free(t);
    return 0;
}

/* The virtio-blk-pci device using @blk, or NULL. */
static MachineDevice *machine_drive_device(Machine *m, BlockBackend *blk)
{
    for (guint i = 0; i < m->devices->len; i++) {
        MachineDevice *md = &g_array_index(m->devices, MachineDevice, i);
        if (machine_device_is_vblk(md) &&
            virtio_blk_pci_get_drive(md->dev) == blk) {
            return md;
        }
    }
    return NULL;
}

static const char *machine_drive_driver(const BlockOptions *o)
{
    switch (o->driver) {
    case BLOCK_DRIVER_NULL_CO:
        return "null-co";
    case BLOCK_DRIVER_NULL_AIO:
        return "null-aio";
    default:
        return "raw";
    }
}

/* query-block / query-blockstats: every drive, in command-line order,
 * with the counters the block layer keeps at completion. */
static void machine_qmp_block_list(void *opaque, GArray *out)
{
    Machine *m = opaque;
    for (guint i = 0; i < m->drives->len; i++) {
        BlockBackend *blk = g_ptr_array_index(m->drives, i);
        const BlockOptions *o = blk_get_options(blk);
        MachineDevice *md = machine_drive_device(m, blk);
        BlockStats st;
        blk_get_stats(blk, &st);
        MonitorBlockDevice d = {
            .device = blk_get_id(blk),
            .qdev = md ? md->qdev : "",
            .node_name = blk_get_id(blk),
            .filename = o->filename ? o->filename
                        : o->driver == BLOCK_DRIVER_NULL_AIO ? "null-aio://"
                        : "null-co://",
            .driver = machine_drive_driver(o),
            .read_only = blk_is_read_only(blk),
            .size = blk_get_size(blk),
            .rd_bytes = st.rd_bytes,
            .wr_bytes = st.wr_bytes,
            .rd_operations = st.rd_ops,
            .wr_operations = st.wr_ops,
            .flush_operations = st.flush_ops,
            .rd_total_time_ns = st.rd_total_ns,
            .wr_total_time_ns = st.wr_total_ns,
            .flush_total_time_ns = st.flush_total_ns,
        };
        g_array_append_val(out, d);
    }
}

/* x-query-virtqueues: every queue of every virtio-blk-pci device. */
static void machine_qmp_virtqueue_list(void *opaque, GArray *out)
{
    Machine *m = opaque;
    for (guint i = 0; i < m->devices->len; i++) {
        MachineDevice *md = &g_array_index(m->devices, MachineDevice, i);
        if (!machine_device_is_vblk(md)) {
            continue;
        }
        for (unsigned q = 0; q < virtio_blk_pci_get_num_queues(md->dev);
             q++) {
            IOThread *iot = virtio_blk_pci_get_queue_iothread(md->dev, q);
            MonitorVirtqueue v = {
                .device = md->qdev,
                .node_name = blk_get_id(virtio_blk_pci_get_drive(md->dev)),
                .queue = q,
                .iothread = iot ? iothread_get_id(iot) : NULL,
            };
            g_array_append_val(out, v);
        }
    }
}

/*
 * x-blockdev-set-iothread: the device using node @node_name moves with
 * all its queues (virtio_blk_pci_set_iothread).  @force is accepted and
 * not needed: QEMU 7.2 wants it for a node a device uses (and then
 * refuses a running virtio-blk); moving that device is what shardvm's
 * command is for.  A drive no device uses has nothing bound to a
 * context: nothing to do.
 */
static int machine_qmp_blockdev_set_iothread(void *opaque,
                                             const char *node_name,
                                             const char *iothread,
                                             bool force, GError **errp)
{
    Machine *m = opaque;
    BlockBackend *blk = machine_find_drive(m, node_name);
    IOThread *iot = NULL;
    (void)force;
    if (!blk) {
        return shardvm_error_set(errp, -ENOENT, "Failed to find node with "
                                 "node-name='%s'", node_name);
    }
    if (iothread) {
        iot = machine_find_iothread(m, iothread);
        if (!iot) {
            return shardvm_error_set(errp, -ENOENT, "Cannot find iothread "
                                     "%s", iothread);
        }
    }
    /* A node under a filter (blkdebug's image) follows its parent's
     * queues; QEMU 7.2 refuses such a node by name. */
    for (guint i = 0; i < m->drives->len; i++) {
        if (blk_get_image(g_ptr_array_index(m->drives, i)) == blk) {
            return shardvm_error_set(errp, -EINVAL, "Node %s is not a root "
                                     "node", node_name);
        }
    }
    MachineDevice *md = machine_drive_device(m, blk);
    if (!md) {
        return 0;
    }
    return virtio_blk_pci_set_iothread(md->dev, iot, errp);
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
    .block_list = machine_qmp_block_list,
    .virtqueue_list = machine_qmp_virtqueue_list,
    .blockdev_set_iothread = machine_qmp_blockdev_set_iothread,
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
