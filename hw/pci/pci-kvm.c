/*
 * PCIVMOps on a KVM VM (include/shardvm/vm.h): MSI routes, irqfds and
 * MMIO ioeventfds (any length, no datamatch).
 */
#include "shardvm/pci.h"
#include "shardvm/vm.h"

static int kvm_add_msi_route(void *opaque, uint64_t addr, uint32_t data)
{
    return vm_add_msi_route(opaque, addr, data);
}

static int kvm_update_msi_route(void *opaque, unsigned gsi, uint64_t addr,
                                uint32_t data)
{
    return vm_update_msi_route(opaque, gsi, addr, data);
}

static int kvm_del_msi_route(void *opaque, unsigned gsi)
{
    return vm_del_msi_route(opaque, gsi);
}

static int kvm_add_irqfd(void *opaque, EventNotifier *e, unsigned gsi)
{
    return vm_add_irqfd(opaque, e, gsi, NULL);
}

static int kvm_del_irqfd(void *opaque, EventNotifier *e, unsigned gsi)
{
    return vm_del_irqfd(opaque, e, gsi);
}

static int kvm_add_ioeventfd(void *opaque, EventNotifier *e, uint64_t addr)
{
    return vm_add_ioeventfd(opaque, e, false, addr, 0, false, 0);
}

static int kvm_del_ioeventfd(void *opaque, EventNotifier *e, uint64_t addr)
{
    return vm_del_ioeventfd(opaque, e, false, addr, 0, false, 0);
}

const PCIVMOps pci_vm_ops_kvm = {
    .add_msi_route = kvm_add_msi_route,
    .update_msi_route = kvm_update_msi_route,
    .del_msi_route = kvm_del_msi_route,
    .add_irqfd = kvm_add_irqfd,
    .del_irqfd = kvm_del_irqfd,
    .add_ioeventfd = kvm_add_ioeventfd,
    .del_ioeventfd = kvm_del_ioeventfd,
};
