/*
 * virtio-pci, modern interface only (virtio 1.x, 4.1): no legacy I/O BAR,
 * VIRTIO_F_VERSION_1 required.  Layout, like QEMU's:
 *   BAR 1 (32-bit, 4 KiB): MSI-X table (offset 0) and PBA (0x800)
 *   BAR 4 (64-bit, 16 KiB, prefetchable):
 *     0x0000 common configuration   (VIRTIO_PCI_CAP_COMMON_CFG)
 *     0x1000 ISR status             (VIRTIO_PCI_CAP_ISR_CFG)
 *     0x2000 device configuration   (VIRTIO_PCI_CAP_DEVICE_CFG)
 *     0x3000 notifications          (VIRTIO_PCI_CAP_NOTIFY_CFG), queue q at
 *            0x3000 + 4 * q (queue_notify_off = q, multiplier 4)
 *   plus VIRTIO_PCI_CAP_PCI_CFG, the configuration-space window onto the
 *   BARs.
 * IDs: vendor 0x1af4, device 0x1040 + virtio device id, revision 1,
 * subsystem 0x1af4 / 0x1100 (as QEMU).
 *
 * Guest rules enforced here: a qword access to the common configuration
 * is two dword accesses; a status write only adds bits (0 resets; the
 * driver cannot set NEEDS_RESET; DRIVER_OK before FEATURES_OK is accepted
 * is ignored); queue size / addresses / enable are taken only while the
 * queue is disabled and before DRIVER_OK.  Anything else a driver writes
 * wrongly is ignored, never fatal.
 *
 * Threads: BAR 4 is dispatched with the BQL held (a status write may start
 * or stop queues, which waits for their contexts); each access also takes
 * vdev->lock (lock order: BQL, then vdev->lock).  Queue notifications do
 * not come here at all when a KVM ioeventfd is registered: the guest's
 * write sets the queue's host notifier inside KVM.  Without ioeventfds
 * (or before DRIVER_OK) a write to the notify area sets the notifier from
 * the vCPU thread.  Interrupts: VirtIOTransportOps.notify -> the queue's
 * (or config) MSI-X vector, from any thread.
 */
#ifndef SHARDVM_VIRTIO_PCI_H
#define SHARDVM_VIRTIO_PCI_H

#include "shardvm/pci.h"
#include "shardvm/virtio.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VIRTIO_PCI_VENDOR_ID         0x1af4
#define VIRTIO_PCI_DEVICE_ID_BASE    0x1040
#define VIRTIO_PCI_SUBSYS_ID         0x1100
#define VIRTIO_PCI_REVISION          1

/* virtio_pci_cap.cfg_type */
#define VIRTIO_PCI_CAP_COMMON_CFG    1
#define VIRTIO_PCI_CAP_NOTIFY_CFG    2
#define VIRTIO_PCI_CAP_ISR_CFG       3
#define VIRTIO_PCI_CAP_DEVICE_CFG    4
#define VIRTIO_PCI_CAP_PCI_CFG       5

/* struct virtio_pci_cap field offsets */
#define VIRTIO_PCI_CAP_CFG_TYPE      3
#define VIRTIO_PCI_CAP_BAR           4
#define VIRTIO_PCI_CAP_OFFSET        8
#define VIRTIO_PCI_CAP_LENGTH        12
#define VIRTIO_PCI_NOTIFY_MULTIPLIER 16   /* in the notify cap */
#define VIRTIO_PCI_CFG_DATA          16   /* in the pci_cfg cap */

/* struct virtio_pci_common_cfg offsets */
#define VIRTIO_PCI_COMMON_DFSELECT   0x00
#define VIRTIO_PCI_COMMON_DF         0x04
#define VIRTIO_PCI_COMMON_GFSELECT   0x08
#define VIRTIO_PCI_COMMON_GF         0x0c
#define VIRTIO_PCI_COMMON_MSIX       0x10
#define VIRTIO_PCI_COMMON_NUMQ       0x12
#define VIRTIO_PCI_COMMON_STATUS     0x14
#define VIRTIO_PCI_COMMON_CFGGENERATION 0x15
#define VIRTIO_PCI_COMMON_Q_SELECT   0x16
#define VIRTIO_PCI_COMMON_Q_SIZE     0x18
#define VIRTIO_PCI_COMMON_Q_MSIX     0x1a
#define VIRTIO_PCI_COMMON_Q_ENABLE   0x1c
#define VIRTIO_PCI_COMMON_Q_NOFF     0x1e
#define VIRTIO_PCI_COMMON_Q_DESCLO   0x20
#define VIRTIO_PCI_COMMON_Q_DESCHI   0x24
#define VIRTIO_PCI_COMMON_Q_AVAILLO  0x28
#define VIRTIO_PCI_COMMON_Q_AVAILHI  0x2c
#define VIRTIO_PCI_COMMON_Q_USEDLO   0x30
#define VIRTIO_PCI_COMMON_Q_USEDHI   0x34

/* BAR 4 layout */
#define VIRTIO_PCI_BAR               4
#define VIRTIO_PCI_MSIX_BAR          1
#define VIRTIO_PCI_COMMON_OFFSET     0x0000
#define VIRTIO_PCI_ISR_OFFSET        0x1000
#define VIRTIO_PCI_DEVICE_OFFSET     0x2000
#define VIRTIO_PCI_NOTIFY_OFFSET     0x3000
#define VIRTIO_PCI_REGION_SIZE       0x1000
#define VIRTIO_PCI_NOTIFY_MULT       4

#define VIRTIO_PCI_NO_VECTOR         0xffff

#define VIRTIO_PCI_ISR_QUEUE         1
#define VIRTIO_PCI_ISR_CONFIG        2

typedef struct VirtIOPCIProxy VirtIOPCIProxy;

/*
 * virtio_pci_new: the PCI function of @vdev (initialised with
 * virtio_device_init(); the caller keeps owning it and frees it after
 * virtio_pci_free()) with PCI class @class_code (block: 0x018000) and
 * @nr_vectors MSI-X vectors (0: one per queue plus one for config, as
 * QEMU; at most PCI_MSIX_MAX_VECTORS, more are capped).  Sets
 * vdev->transport_ops / transport.  Returns the proxy (virtio_pci_free()).
 * Main thread.
 */
VirtIOPCIProxy *virtio_pci_new(VirtIODevice *vdev, uint32_t class_code,
                               unsigned nr_vectors);

/*
 * virtio_pci_plug: put the function into @slot (-1: first free) of @bus
 * (BARs assigned and mapped).  Returns the slot or a negative errno with
 * @errp set.  BQL held.
 */
int virtio_pci_plug(VirtIOPCIProxy *p, PCIBus *bus, int slot, GError **errp);

/*
 * virtio_pci_free: reset the device (stops its queues), unplug it and
 * free the proxy.  NULL is ignored.  BQL held; no vCPU may be running
 * (or the device is unplugged first, which waits for them).
 */
void virtio_pci_free(VirtIOPCIProxy *p);

/* virtio_pci_get_pci: the embedded PCI function (tests, the machine). */
PCIDevice *virtio_pci_get_pci(VirtIOPCIProxy *p);

/* virtio_pci_get_isr: the ISR status without clearing it (tests). */
uint8_t virtio_pci_get_isr(VirtIOPCIProxy *p);

#ifdef __cplusplus
}
#endif

#endif
