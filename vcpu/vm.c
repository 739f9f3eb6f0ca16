/*
 * VM creation and teardown: /dev/kvm, the VM fd, guest RAM (one memfd,
 * split around the PCI hole), irqchip + PIT2, TSS and identity map, the
 * vCPUs; and the run-state control shared by all vCPUs (start, pause,
 * resume, stop).
 */
#include "vcpu-internal.h"

#include "shardvm/error.h"
#include "shardvm/main-loop.h"
#include "shardvm/rcu.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

static int vm_check_caps(VM *vm, GError **errp)
{
    int v = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
    if (v != KVM_API_VERSION) {
        return shardvm_error_set(errp, -ENOTSUP,
                                 "/dev/kvm: API version %d, want %d", v,
                                 KVM_API_VERSION);
    }
    static const struct { int cap; const char *name; bool irqchip; } caps[] = {
        { KVM_CAP_USER_MEMORY, "USER_MEMORY", false },
        { KVM_CAP_SET_TSS_ADDR, "SET_TSS_ADDR", false },
        { KVM_CAP_EXT_CPUID, "EXT_CPUID", false },
        { KVM_CAP_IMMEDIATE_EXIT, "IMMEDIATE_EXIT", false },
        { KVM_CAP_IOEVENTFD, "IOEVENTFD", false },
        { KVM_CAP_IRQCHIP, "IRQCHIP", true },
        { KVM_CAP_PIT2, "PIT2", true },
        { KVM_CAP_IRQFD, "IRQFD", true },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(caps); i++) {
        if (caps[i].irqchip && !vm->irqchip) {
            continue;
        }
        if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, caps[i].cap) <= 0) {
            return shardvm_error_set(errp, -ENOTSUP,
                                     "/dev/kvm lacks KVM_CAP_%s",
                                     caps[i].name);
        }
    }
    int n = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_IRQ_ROUTING);
    vm->max_gsi = n > 0 ? (unsigned)n : 0;
    return 0;
}

/* Guest RAM: [0, low) and, above 3 GiB of RAM, [4 GiB, 4 GiB + high). */
static int vm_setup_ram(VM *vm, GError **errp)
{
    vm->low_size = MIN(vm->ram_size, VM_LOWMEM_MAX);
    vm->high_size = vm->ram_size - vm->low_size;

    vm->memfd = memfd_create("shardvm-ram", MFD_CLOEXEC);
    if (vm->memfd < 0) {
        return shardvm_error_set(errp, -errno, "memfd_create: %s",
                                 strerror(errno));
    }
    if (ftruncate(vm->memfd, (off_t)vm->ram_size) < 0) {
        return shardvm_error_set(errp, -errno, "guest RAM of %" G_GUINT64_FORMAT
                                 " bytes: %s", vm->ram_size, strerror(errno));
    }
    /* NORESERVE: a large -m costs nothing until the guest touches it. */
    void *p = mmap(NULL, vm->ram_size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_NORESERVE, vm->memfd, 0);
    if (p == MAP_FAILED) {
        return shardvm_error_set(errp, -errno, "mmap guest RAM: %s",
                                 strerror(errno));
    }
    vm->ram = p;

    struct kvm_userspace_memory_region slots[2] = {
        { .slot = 0, .guest_phys_addr = 0, .memory_size = vm->low_size,
          .userspace_addr = (uintptr_t)vm->ram },
        { .slot = 1, .guest_phys_addr = VM_HIGHMEM_BASE,
          .memory_size = vm->high_size,
          .userspace_addr = (uintptr_t)(vm->ram + vm->low_size) },
    };
    for (int i = 0; i < (vm->high_size ? 2 : 1); i++) {
        if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &slots[i]) < 0) {
            return shardvm_error_set(errp, -errno,
                                     "KVM_SET_USER_MEMORY_REGION slot %d: %s",
                                     i, strerror(errno));
        }
    }
    return 0;
}

/* No callbacks: KVM answers these ports itself, a vCPU never exits for
 * them; the regions only keep devices away. */
static const IORegionOps vm_in_kernel_ops = { NULL, NULL };

int vm_reserve_in_kernel_ports(AddressSpace *pio, GError **errp)
{
    static const struct { const char *name; uint16_t base, size; } r[] = {
        { "in-kernel PIC (master)", 0x20, 2 },
        { "in-kernel PIT", 0x40, 4 },
        { "in-kernel PIT speaker port", 0x61, 1 },
        { "in-kernel PIC (slave)", 0xa0, 2 },
        { "in-kernel PIC ELCR", 0x4d0, 2 },
    };
    G_STATIC_ASSERT(G_N_ELEMENTS(r) == VM_NR_IN_KERNEL_PORT_RANGES);

    for (size_t i = 0; i < G_N_ELEMENTS(r); i++) {
        if (!address_space_add(pio, r[i].name, r[i].base, r[i].size,
                               &vm_in_kernel_ops, NULL, 0, errp)) {
            return -EEXIST;
        }
    }
    return 0;
}

/* Everything that must exist before the first KVM_CREATE_VCPU. */
static int vm_setup_platform(VM *vm, GError **errp)
{
    if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)VM_TSS_ADDR) < 0) {
        return shardvm_error_set(errp, -errno, "KVM_SET_TSS_ADDR: %s",
                                 strerror(errno));
    }
    uint64_t idmap = VM_IDENTITY_MAP_ADDR;
    if (ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0) {
        return shardvm_error_set(errp, -errno, "KVM_SET_IDENTITY_MAP_ADDR: %s",
                                 strerror(errno));
    }
    if (!vm->irqchip) {
        return 0;
    }
    if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0) {
        return shardvm_error_set(errp, -errno, "KVM_CREATE_IRQCHIP: %s",
                                 strerror(errno));
    }
    /* As QEMU: the kernel also answers port 0x61 (speaker / PIT gate),
     * which a guest's PIT calibration reads. */
    struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
    if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0) {
        return shardvm_error_set(errp, -errno, "KVM_CREATE_PIT2: %s",
                                 strerror(errno));
    }
    return vm_reserve_in_kernel_ports(vm->pio, errp);
}

static int vm_create_vcpus(VM *vm, GError **errp)
{
    int r = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (r <= 0) {
        return shardvm_error_set(errp, r < 0 ? -errno : -EINVAL,
                                 "KVM_GET_VCPU_MMAP_SIZE failed");
    }
    vm->run_size = (size_t)r;
    vm->vcpus = g_new0(VCPU *, vm->nr_vcpus);
    for (int i = 0; i < vm->nr_vcpus; i++) {
        vm->vcpus[i] = vcpu_create(vm, i, errp);
        if (!vm->vcpus[i]) {
            return -EIO;
        }
    }

    /* TSC frequency for CPUID leaf 0x40000010 (same on every vCPU). */
    int khz = ioctl(vm->vcpus[0]->fd, KVM_GET_TSC_KHZ, 0);
    vm->tsc_khz = khz > 0 ? (uint32_t)khz : 0;

    struct kvm_cpuid2 *cpuid = vcpu_get_supported_cpuid(vm, errp);
    if (!cpuid) {
        return -EIO;
    }
    r = 0;
    for (int i = 0; i < vm->nr_vcpus && r == 0; i++) {
        r = vcpu_set_cpuid(vm->vcpus[i], cpuid, errp);
    }
    g_free(cpuid);
    return r;
}

VM *vm_new(const VMConfig *cfg, GError **errp)
{
    if (cfg->ram_size == 0 || cfg->ram_size % 4096 ||
        cfg->nr_vcpus < 1 || cfg->nr_vcpus > VM_MAX_VCPUS) {
        shardvm_error_set(errp, -EINVAL, "bad VM configuration: %d vCPUs, "
                          "%" G_GUINT64_FORMAT " bytes of RAM",
                          cfg->nr_vcpus, cfg->ram_size);
        return NULL;
    }

    VM *vm = g_new0(VM, 1);
    vm->cfg = *cfg;
    vm->kvm_fd = vm->vm_fd = vm->memfd = -1;
    vm->ram_size = cfg->ram_size;
    vm->nr_vcpus = cfg->nr_vcpus;
    vm->irqchip = !cfg->no_irqchip;
    pthread_mutex_init(&vm->lock, NULL);
    pthread_cond_init(&vm->cpu_cond, NULL);
    pthread_cond_init(&vm->ctl_cond, NULL);
    pthread_mutex_init(&vm->route_lock, NULL);
    vm->msi_routes = g_hash_table_new_full(NULL, NULL, NULL, g_free);
    vm->pio = address_space_new("pio", ADDRESS_SPACE_PIO);
    vm->mmio = address_space_new("mmio", ADDRESS_SPACE_MMIO);
    vcpu_install_kick_handler();

    vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (vm->kvm_fd < 0) {
        shardvm_error_set(errp, -errno, "cannot open /dev/kvm: %s",
                          strerror(errno));
        goto fail;
    }
    if (vm_check_caps(vm, errp) < 0) {
        goto fail;
    }
    vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
    if (vm->vm_fd < 0) {
        shardvm_error_set(errp, -errno, "KVM_CREATE_VM: %s", strerror(errno));
        goto fail;
    }
    if (vm_setup_ram(vm, errp) < 0 || vm_setup_platform(vm, errp) < 0 ||
        vm_create_vcpus(vm, errp) < 0) {
        goto fail;
    }
    return vm;

fail:
    vm_free(vm);
    return NULL;
}

int vm_start(VM *vm, GError **errp)
{
    pthread_mutex_lock(&vm->lock);
    if (vm->started) {
        pthread_mutex_unlock(&vm->lock);
        return shardvm_error_set(errp, -EBUSY, "VM already started");
    }
    vm->started = true;
    pthread_mutex_unlock(&vm->lock);

    for (int i = 0; i < vm->nr_vcpus; i++) {
        int r = vcpu_start_thread(vm->vcpus[i], errp);
        if (r < 0) {
            vm_stop(vm);
            return r;
        }
    }
    return 0;
}

/* Wait on ctl_cond with vm->lock held, without holding the BQL meanwhile:
 * a vCPU may need the BQL to finish the exit it is handling. */
static void vm_wait_ctl(VM *vm, bool *dropped_bql)
{
    if (!*dropped_bql && bql_locked()) {
        /* Lock order is BQL -> vm->lock: drop both, retake vm->lock. */
        pthread_mutex_unlock(&vm->lock);
        bql_unlock();
        *dropped_bql = true;
        pthread_mutex_lock(&vm->lock);
        return; /* re-check the condition before sleeping */
    }
    pthread_cond_wait(&vm->ctl_cond, &vm->lock);
}

static bool vm_all_parked_locked(VM *vm)
{
    for (int i = 0; i < vm->nr_vcpus; i++) {
        VCPU *cpu = vm->vcpus[i];
        if (cpu->thread_alive && !cpu->exited && !cpu->parked) {
            return false;
        }
    }
    return true;
}

void vm_pause(VM *vm)
{
    bool dropped_bql = false;

    if (vcpu_current()) {
        g_critical("vm_pause() called from vCPU thread %d",
                   vcpu_get_index(vcpu_current()));
        return;
    }
    pthread_mutex_lock(&vm->lock);
    atomic_store(&vm->pause_req, true);
    pthread_mutex_unlock(&vm->lock);
    vm_kick_all(vm);

    pthread_mutex_lock(&vm->lock);
    while (!vm_all_parked_locked(vm)) {
        vm_wait_ctl(vm, &dropped_bql);
    }
    pthread_mutex_unlock(&vm->lock);
    if (dropped_bql) {
        bql_lock();
    }
}

void vm_resume(VM *vm)
{
    pthread_mutex_lock(&vm->lock);
    atomic_store(&vm->pause_req, false);
    pthread_cond_broadcast(&vm->cpu_cond);
    pthread_mutex_unlock(&vm->lock);
}

bool vm_is_paused(VM *vm)
{
    return atomic_load(&vm->pause_req);
}

void vm_kick_all(VM *vm)
{
    for (int i = 0; i < vm->nr_vcpus; i++) {
        if (vm->vcpus && vm->vcpus[i]) {
            vcpu_kick(vm->vcpus[i]);
        }
    }
}

void vm_stop(VM *vm)
{
    bool dropped_bql = false;

    if (!vm->vcpus) {
        return;
    }
    if (vcpu_current()) {
        g_critical("vm_stop() called from vCPU thread %d",
                   vcpu_get_index(vcpu_current()));
        return;
    }
    pthread_mutex_lock(&vm->lock);
    for (int i = 0; i < vm->nr_vcpus; i++) {
        if (vm->vcpus[i]) {
            atomic_store(&vm->vcpus[i]->stop_req, true);
        }
    }
    pthread_cond_broadcast(&vm->cpu_cond);
    pthread_mutex_unlock(&vm->lock);
    vm_kick_all(vm);

    for (int i = 0; i < vm->nr_vcpus; i++) {
        VCPU *cpu = vm->vcpus[i];
        pthread_mutex_lock(&vm->lock);
        if (!cpu || !cpu->thread_alive) {
            pthread_mutex_unlock(&vm->lock);
            continue;
        }
        while (!cpu->exited) {
            vm_wait_ctl(vm, &dropped_bql);
        }
        pthread_t th = cpu->thread;
        /* No kick may signal a joined thread: see vcpu_kick(). */
        cpu->thread_alive = false;
        pthread_mutex_unlock(&vm->lock);
        pthread_join(th, NULL);
    }
    if (dropped_bql) {
        bql_lock();
    }
}

void vm_free(VM *vm)
{
    if (!vm) {
        return;
    }
    vm_stop(vm);
    if (vm->vcpus) {
        for (int i = 0; i < vm->nr_vcpus; i++) {
            if (vm->vcpus[i]) {
                vcpu_destroy(vm->vcpus[i]);
            }
        }
        g_free(vm->vcpus);
    }
    if (vm->vm_fd >= 0) {
        close(vm->vm_fd);
    }
    if (vm->kvm_fd >= 0) {
        close(vm->kvm_fd);
    }
    if (vm->ram) {
        munmap(vm->ram, vm->ram_size);
    }
    if (vm->memfd >= 0) {
        close(vm->memfd);
    }
    address_space_free(vm->pio);
    address_space_free(vm->mmio);
    g_hash_table_destroy(vm->msi_routes);
    pthread_mutex_destroy(&vm->route_lock);
    pthread_cond_destroy(&vm->ctl_cond);
    pthread_cond_destroy(&vm->cpu_cond);
    pthread_mutex_destroy(&vm->lock);
    g_free(vm);
}

int vm_get_nr_vcpus(VM *vm)
{
    return vm->nr_vcpus;
}

VCPU *vm_get_vcpu(VM *vm, int index)
{
    return index >= 0 && index < vm->nr_vcpus ? vm->vcpus[index] : NULL;
}

int vm_get_fd(VM *vm)
{
    return vm->vm_fd;
}

AddressSpace *vm_get_pio_space(VM *vm)
{
    return vm->pio;
}

AddressSpace *vm_get_mmio_space(VM *vm)
{
    return vm->mmio;
}

uint64_t vm_get_ram_size(VM *vm)
{
    return vm->ram_size;
}

void *vm_gpa_to_hva(VM *vm, uint64_t gpa, uint64_t len)
{
    if (gpa < vm->low_size) {
        return len <= vm->low_size - gpa ? vm->ram + gpa : NULL;
    }
    if (gpa >= VM_HIGHMEM_BASE && gpa - VM_HIGHMEM_BASE < vm->high_size) {
        uint64_t off = gpa - VM_HIGHMEM_BASE;
        return len <= vm->high_size - off ? vm->ram + vm->low_size + off
                                          : NULL;
    }
    return NULL;
}

int vm_memory_write(VM *vm, uint64_t gpa, const void *buf, size_t len)
{
    void *p = vm_gpa_to_hva(vm, gpa, len);
    if (!p) {
        return -EFAULT;
    }
    memcpy(p, buf, len);
    return 0;
}

int vm_memory_read(VM *vm, uint64_t gpa, void *buf, size_t len)
{
    void *p = vm_gpa_to_hva(vm, gpa, len);
    if (!p) {
        return -EFAULT;
    }
    memcpy(buf, p, len);
    return 0;
}
