/*
 * Notifications between devices and the guest that bypass userspace exits:
 * ioeventfd (guest write -> EventNotifier), irqfd (EventNotifier -> guest
 * interrupt), the MSI routing table, KVM_SIGNAL_MSI and KVM_IRQ_LINE.
 */
#include "vcpu-internal.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

static int vm_ioeventfd(VM *vm, EventNotifier *e, bool is_pio, uint64_t addr,
                        unsigned len, bool has_datamatch, uint64_t datamatch,
                        bool assign)
{
    if (len != 0 && len != 1 && len != 2 && len != 4 && len != 8) {
        return -EINVAL;
    }
    if (is_pio && len == 0) {
        return -EINVAL; /* KVM only allows len 0 for MMIO */
    }
    struct kvm_ioeventfd io = {
        .datamatch = has_datamatch ? datamatch : 0,
        .addr = addr,
        .len = len,
        .fd = event_notifier_get_fd(e),
        .flags = (is_pio ? KVM_IOEVENTFD_FLAG_PIO : 0) |
                 (has_datamatch ? KVM_IOEVENTFD_FLAG_DATAMATCH : 0) |
                 (assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN),
    };
    return ioctl(vm->vm_fd, KVM_IOEVENTFD, &io) < 0 ? -errno : 0;
}

int vm_add_ioeventfd(VM *vm, EventNotifier *e, bool is_pio, uint64_t addr,
                     unsigned len, bool has_datamatch, uint64_t datamatch)
{
    return vm_ioeventfd(vm, e, is_pio, addr, len, has_datamatch, datamatch,
                        true);
}

int vm_del_ioeventfd(VM *vm, EventNotifier *e, bool is_pio, uint64_t addr,
                     unsigned len, bool has_datamatch, uint64_t datamatch)
{
    return vm_ioeventfd(vm, e, is_pio, addr, len, has_datamatch, datamatch,
                        false);
}

int vm_add_irqfd(VM *vm, EventNotifier *e, unsigned gsi,
                 EventNotifier *resample)
{
    if (!vm->irqchip) {
        return -ENOTSUP;
    }
    struct kvm_irqfd irqfd = {
        .fd = (uint32_t)event_notifier_get_fd(e),
        .gsi = gsi,
        .flags = resample ? KVM_IRQFD_FLAG_RESAMPLE : 0,
        .resamplefd = resample ? (uint32_t)event_notifier_get_fd(resample) : 0,
    };
    return ioctl(vm->vm_fd, KVM_IRQFD, &irqfd) < 0 ? -errno : 0;
}

int vm_del_irqfd(VM *vm, EventNotifier *e, unsigned gsi)
{
    if (!vm->irqchip) {
        return -ENOTSUP;
    }
    struct kvm_irqfd irqfd = {
        .fd = (uint32_t)event_notifier_get_fd(e),
        .gsi = gsi,
        .flags = KVM_IRQFD_FLAG_DEASSIGN,
    };
    return ioctl(vm->vm_fd, KVM_IRQFD, &irqfd) < 0 ? -errno : 0;
}

typedef struct MsiRoute {
    uint64_t addr;
    uint32_t data;
} MsiRoute;

/* GSIs below this are the IOAPIC pins (and PIC inputs below 16). */
#define VM_FIRST_MSI_GSI 24

/*
 * KVM_SET_GSI_ROUTING replaces the whole table, so the default routes of
 * the IOAPIC and PIC pins that KVM installs with the irqchip are rebuilt
 * here too (GSI n -> IOAPIC pin n; n < 16 also -> PIC pin n % 8).
 */
static int vm_commit_routes_locked(VM *vm)
{
    guint n_msi = g_hash_table_size(vm->msi_routes);
    size_t n = 24 + 16 + n_msi;
    struct kvm_irq_routing *rt =
        g_malloc0(sizeof(*rt) + n * sizeof(rt->entries[0]));
    struct kvm_irq_routing_entry *e = rt->entries;

    for (uint32_t gsi = 0; gsi < 24; gsi++) {
        *e++ = (struct kvm_irq_routing_entry){
            .gsi = gsi, .type = KVM_IRQ_ROUTING_IRQCHIP,
            .u.irqchip = { .irqchip = KVM_IRQCHIP_IOAPIC, .pin = gsi },
        };
        if (gsi < 16) {
            *e++ = (struct kvm_irq_routing_entry){
                .gsi = gsi, .type = KVM_IRQ_ROUTING_IRQCHIP,
                .u.irqchip = {
                    .irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER
                                       : KVM_IRQCHIP_PIC_SLAVE,
                    .pin = gsi % 8,
                },
            };
        }
    }
    GHashTableIter it;
    gpointer key, value;
    g_hash_table_iter_init(&it, vm->msi_routes);
    while (g_hash_table_iter_next(&it, &key, &value)) {
        MsiRoute *m = value;
        *e++ = (struct kvm_irq_routing_entry){
            .gsi = GPOINTER_TO_UINT(key), .type = KVM_IRQ_ROUTING_MSI,
            .u.msi = {
                .address_lo = (uint32_t)m->addr,
                .address_hi = (uint32_t)(m->addr >> 32),
                .data = m->data,
            },
        };
    }
    rt->nr = (uint32_t)(e - rt->entries);
    int r = ioctl(vm->vm_fd, KVM_SET_GSI_ROUTING, rt) < 0 ? -errno : 0;
    g_free(rt);
    return r;
}

int vm_add_msi_route(VM *vm, uint64_t addr, uint32_t data)
{
    if (!vm->irqchip || vm->max_gsi <= VM_FIRST_MSI_GSI) {
        return -ENOTSUP;
    }
    pthread_mutex_lock(&vm->route_lock);
    unsigned gsi = VM_FIRST_MSI_GSI;
    while (gsi < vm->max_gsi &&
           g_hash_table_contains(vm->msi_routes, GUINT_TO_POINTER(gsi))) {
        gsi++;
    }
    int r = -ENOSPC;
    if (gsi < vm->max_gsi) {
        MsiRoute *m = g_new(MsiRoute, 1);
        m->addr = addr;
        m->data = data;
        g_hash_table_insert(vm->msi_routes, GUINT_TO_POINTER(gsi), m);
        r = vm_commit_routes_locked(vm);
        if (r < 0) {
            g_hash_table_remove(vm->msi_routes, GUINT_TO_POINTER(gsi));
        } else {
            r = (int)gsi;
        }
    }
    pthread_mutex_unlock(&vm->route_lock);
    return r;
}

int vm_update_msi_route(VM *vm, unsigned gsi, uint64_t addr, uint32_t data)
{
    pthread_mutex_lock(&vm->route_lock);
    MsiRoute *m = g_hash_table_lookup(vm->msi_routes, GUINT_TO_POINTER(gsi));
    int r = -ENOENT;
    if (m) {
        MsiRoute old = *m;
        m->addr = addr;
        m->data = data;
        r = vm_commit_routes_locked(vm);
        if (r < 0) {
            *m = old;
        }
    }
    pthread_mutex_unlock(&vm->route_lock);
    return r;
}

int vm_del_msi_route(VM *vm, unsigned gsi)
{
    pthread_mutex_lock(&vm->route_lock);
    int r = -ENOENT;
    if (g_hash_table_remove(vm->msi_routes, GUINT_TO_POINTER(gsi))) {
        r = vm_commit_routes_locked(vm);
    }
    pthread_mutex_unlock(&vm->route_lock);
    return r;
}

int vm_signal_msi(VM *vm, uint64_t addr, uint32_t data)
{
    struct kvm_msi msi = {
        .address_lo = (uint32_t)addr,
        .address_hi = (uint32_t)(addr >> 32),
        .data = data,
    };
    int r = ioctl(vm->vm_fd, KVM_SIGNAL_MSI, &msi);
    return r < 0 ? -errno : r;
}

int vm_set_irq_line(VM *vm, unsigned irq, bool level)
{
    if (!vm->irqchip) {
        return -ENOTSUP;
    }
    struct kvm_irq_level l = { .irq = irq, .level = level ? 1 : 0 };
    return ioctl(vm->vm_fd, KVM_IRQ_LINE, &l) < 0 ? -errno : 0;
}
