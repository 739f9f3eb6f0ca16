/*
 * Modern virtio-pci transport (virtio 1.x), polled: no MSI-X vectors, no
 * interrupts.  Modern devices (PCI ID 0x1040 + type) and transitional ones
 * (0x1000-0x103f) are driven through the modern capabilities only; the
 * legacy I/O BAR is never used.
 * Set-up is BSP-only; after vpci_driver_ok() each queue may be used by one
 * vCPU (see virtq.h).
 */
#ifndef GUEST_VIRTIO_PCI_H
#define GUEST_VIRTIO_PCI_H

#include <stdbool.h>
#include <stdint.h>

#include "pci.h"

#define VIRTIO_PCI_VENDOR       0x1af4
#define VIRTIO_PCI_MODERN_BASE  0x1040
#define VIRTIO_ID_BLOCK         2

/* Device status bits. */
#define VIRTIO_STATUS_ACKNOWLEDGE   0x01
#define VIRTIO_STATUS_DRIVER        0x02
#define VIRTIO_STATUS_DRIVER_OK     0x04
#define VIRTIO_STATUS_FEATURES_OK   0x08
#define VIRTIO_STATUS_NEEDS_RESET   0x40
#define VIRTIO_STATUS_FAILED        0x80

#define VIRTIO_F_VERSION_1          32

/* The common configuration structure (virtio 1.1, 4.1.4.3). */
struct virtio_pci_common {
    uint32_t device_feature_select;
    uint32_t device_feature;
    uint32_t driver_feature_select;
    uint32_t driver_feature;
    uint16_t config_msix_vector;
    uint16_t num_queues;
    uint8_t device_status;
    uint8_t config_generation;
    uint16_t queue_select;
    uint16_t queue_size;
    uint16_t queue_msix_vector;
    uint16_t queue_enable;
    uint16_t queue_notify_off;
    uint32_t queue_desc_lo, queue_desc_hi;
    uint32_t queue_driver_lo, queue_driver_hi;
    uint32_t queue_device_lo, queue_device_hi;
};

struct vpci_dev {
    pci_bdf_t bdf;
    uint16_t type;                          /* virtio device type */
    volatile struct virtio_pci_common *common;
    volatile uint8_t *notify;               /* notify structure base */
    uint32_t notify_mult;                   /* notify_off_multiplier */
    volatile uint8_t *isr;
    volatile uint8_t *device;               /* device-specific config */
    uint32_t device_len;
    uint64_t features;                      /* negotiated */
};

/*
 * vpci_find: the @index-th (0-based) virtio-pci function of device @type
 * (modern or transitional ID, in bus order) on bus 0.  Enables memory decoding and bus mastering, assigns
 * unassigned BARs in the PCI hole, maps BARs above 4 GiB (mem.h), walks the
 * vendor capabilities and fills @d.  Returns 0, -1 when there is no such
 * device, -2 when it is unusable (a "VIRTIO error: ..." line is printed).
 */
int vpci_find(uint16_t type, unsigned index, struct vpci_dev *d);

/*
 * vpci_start: reset, ACKNOWLEDGE, DRIVER, and feature negotiation: accept
 * VERSION_1 (required) plus the device features in @wanted; FEATURES_OK
 * and its read-back.  Returns 0 (d->features set) or -1 with a line
 * printed and FAILED set.
 */
int vpci_start(struct vpci_dev *d, uint64_t wanted);

/* vpci_has: whether feature @bit was negotiated. */
static inline bool vpci_has(const struct vpci_dev *d, unsigned bit)
{
    return (d->features >> bit) & 1;
}

/*
 * vpci_queue_size: select queue @q, cap its size at @max (rounded down to
 * a power of two), no MSI-X vector.  Returns the size to use (0 when the
 * queue does not exist) and the notify address in *@notify.
 */
unsigned vpci_queue_size(struct vpci_dev *d, unsigned q, unsigned max,
                         volatile uint16_t **notify);

/* vpci_queue_enable: give queue @q its ring addresses and enable it. */
void vpci_queue_enable(struct vpci_dev *d, unsigned q, uint64_t desc,
                       uint64_t avail, uint64_t used);

/* vpci_driver_ok: set DRIVER_OK; returns -1 if the device then says
 * NEEDS_RESET or FAILED. */
int vpci_driver_ok(struct vpci_dev *d);

/* vpci_status: the device status byte. */
uint8_t vpci_status(const struct vpci_dev *d);

/* vpci_cfg32 / vpci_cfg64: device config reads (the 64-bit one retried
 * until config_generation is stable). */
uint32_t vpci_cfg32(const struct vpci_dev *d, unsigned off);
uint64_t vpci_cfg64(const struct vpci_dev *d, unsigned off);

#endif
