/*
 * PCI: one conventional PCI bus (bus 0) behind configuration mechanism #1
 * (ports 0xCF8 address / 0xCFC..0xCFF data), a host bridge at 00.0 with
 * the IDs of QEMU's pc machine (i440FX, 8086:1237), type-0 devices with
 * capability lists, memory BARs (32- and 64-bit) and MSI-X.
 *
 * Locking: configuration space, BAR state and the bus's slot table are
 * guarded by the BQL: the 0xCF8 region is dispatched with the BQL held
 * (IO_REGION_NEEDS_BQL), and the machine adds/removes devices with it.
 * That also makes BAR moves legal there: mapping a BAR adds/removes a
 * region of the VM's MMIO address space (published through RCU), which
 * must not happen from a lock-free region's callback.  A BAR's own region
 * is added with the flags the device gives (pci_device_set_bar()).  MSI-X
 * state has its own mutex (notify runs on any thread).
 *
 * BAR windows (pre-assigned by pci_bus_add_device(), decoding enabled, so
 * a guest without firmware finds them ready):
 *   32-bit BARs: [PCI_MEM32_BASE, PCI_MEM32_LIMIT] = 0xC0000000..0xFEBFFFFF
 *                (the PCI hole above low RAM, below the IOAPIC)
 *   64-bit BARs: from the end of RAM above 4 GiB (or 4 GiB) rounded up to
 *                1 GiB, for 64 GiB.
 * A guest may move a BAR anywhere; a placement over RAM, over the IOAPIC
 * (0xFEC00000, 1 MiB), the LAPIC/MSI window (0xFEE00000, 1 MiB), KVM's
 * private pages (0xFEFFC000, 16 KiB), over another region or at the
 * sizing pattern (all ones) leaves the BAR unmapped (accesses there hit
 * nothing) and is logged once per device.  A BAR left unmapped because
 * another BAR was in its place is mapped as soon as that one moves away
 * or stops decoding: the mapping never depends on the order of writes.
 */
#ifndef SHARDVM_PCI_H
#define SHARDVM_PCI_H

#include "shardvm/aio.h"
#include "shardvm/memory.h"

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- configuration space layout (type 0 header) ---------------------- */

#define PCI_CONFIG_SPACE_SIZE   256
#define PCI_VENDOR_ID           0x00
#define PCI_DEVICE_ID           0x02
#define PCI_COMMAND             0x04
#define  PCI_COMMAND_IO         0x0001
#define  PCI_COMMAND_MEMORY     0x0002
#define  PCI_COMMAND_MASTER     0x0004
#define  PCI_COMMAND_PARITY     0x0040
#define  PCI_COMMAND_SERR       0x0100
#define  PCI_COMMAND_INTX_DISABLE 0x0400
#define PCI_STATUS              0x06
#define  PCI_STATUS_CAP_LIST    0x0010
#define  PCI_STATUS_W1C         0xf900  /* parity..detected parity error */
#define PCI_REVISION_ID         0x08
#define PCI_CLASS_PROG          0x09
#define PCI_CACHE_LINE_SIZE     0x0c
#define PCI_LATENCY_TIMER       0x0d
#define PCI_HEADER_TYPE         0x0e
#define PCI_BASE_ADDRESS_0      0x10
#define  PCI_BASE_ADDRESS_MEM_TYPE_64  0x04
#define  PCI_BASE_ADDRESS_MEM_PREFETCH 0x08
#define PCI_SUBSYSTEM_VENDOR_ID 0x2c
#define PCI_SUBSYSTEM_ID        0x2e
#define PCI_ROM_ADDRESS         0x30
#define PCI_CAPABILITY_LIST     0x34
#define PCI_INTERRUPT_LINE      0x3c
#define PCI_INTERRUPT_PIN       0x3d
#define PCI_HEADER_END          0x40

#define PCI_CAP_ID_VNDR         0x09
#define PCI_CAP_ID_MSIX         0x11

#define PCI_NUM_BARS            6
#define PCI_NUM_SLOTS           32
#define PCI_BAR_UNMAPPED        UINT64_MAX

/* Host bridge IDs (QEMU's i440FX). */
#define PCI_HOST_VENDOR_ID      0x8086
#define PCI_HOST_DEVICE_ID      0x1237
#define PCI_HOST_REVISION       0x02
#define PCI_CLASS_BRIDGE_HOST   0x060000

/* Conf1 ports. */
#define PCI_CONF1_ADDR_PORT     0xcf8
#define PCI_CONF1_DATA_PORT     0xcfc
#define PCI_CONF1_ENABLE        0x80000000u

/* BAR windows (see the top of this file). */
#define PCI_MEM32_BASE          0xC0000000ull
#define PCI_MEM32_LIMIT         0xFEBFFFFFull
#define PCI_MEM64_ALIGN         (1ull << 30)
#define PCI_MEM64_SIZE          (64ull << 30)

typedef struct PCIBus PCIBus;
typedef struct PCIDevice PCIDevice;
typedef struct PCIMsix PCIMsix;

/* ---- the VM behind the bus ------------------------------------------- */

/*
 * PCIVMOps: what PCI devices need from the VM (KVM), behind an ops table
 * so tests run without KVM.  pci_vm_ops_kvm (opaque: a VM *) wraps
 * include/shardvm/vm.h.  Every callback: any thread; returns >= 0 or a
 * negative errno.
 */
typedef struct PCIVMOps {
    /* A GSI delivering MSI (@addr, @data); returns the GSI. */
    int (*add_msi_route)(void *opaque, uint64_t addr, uint32_t data);
    int (*update_msi_route)(void *opaque, unsigned gsi, uint64_t addr,
                            uint32_t data);
    int (*del_msi_route)(void *opaque, unsigned gsi);
    /* Setting @e injects @gsi. */
    int (*add_irqfd)(void *opaque, EventNotifier *e, unsigned gsi);
    int (*del_irqfd)(void *opaque, EventNotifier *e, unsigned gsi);
    /* A guest write (any length) to MMIO @addr sets @e without an exit. */
    int (*add_ioeventfd)(void *opaque, EventNotifier *e, uint64_t addr);
    int (*del_ioeventfd)(void *opaque, EventNotifier *e, uint64_t addr);
} PCIVMOps;

extern const PCIVMOps pci_vm_ops_kvm;

/* ---- bus ----------------------------------------------------------- */

typedef struct PCIBusConfig {
    AddressSpace *mmio;      /* where BARs are mapped (the VM's MMIO space) */
    AddressSpace *pio;       /* where 0xCF8..0xCFF go; NULL: not attached */
    uint64_t ram_below_4g;   /* RAM is [0, below) ... */
    uint64_t ram_above_4g;   /* ... and [4 GiB, 4 GiB + above) */
    const PCIVMOps *vm_ops;  /* may be NULL: no MSI-X delivery, no ioeventfd */
    void *vm_opaque;
} PCIBusConfig;

/*
 * pci_bus_new: bus 0 with the host bridge at 00.0, conf1 ports added to
 * @cfg->pio (when not NULL).  Returns the bus (pci_bus_free()) or NULL
 * with @errp set (ports taken).  Main thread, BQL held.
 */
PCIBus *pci_bus_new(const PCIBusConfig *cfg, GError **errp);

/* pci_bus_free: remove the conf1 ports and the host bridge.  Every other
 * device must have been removed.  NULL is ignored.  BQL held. */
void pci_bus_free(PCIBus *bus);

/*
 * pci_bus_add_device: plug @d (initialised, BARs and capabilities set)
 * into @slot (1..31), or the first free slot when @slot is -1.  Assigns
 * every BAR an address in its window, enables memory decoding and bus
 * mastering, and maps the BARs.  Returns the slot or a negative errno
 * (-EBUSY: slot taken, -ENOSPC: no slot or window full, -EINVAL) with
 * @errp set.  BQL held.
 */
int pci_bus_add_device(PCIBus *bus, PCIDevice *d, int slot, GError **errp);

/* pci_bus_remove_device: unmap @d's BARs and free its slot.  BQL held. */
void pci_bus_remove_device(PCIBus *bus, PCIDevice *d);

/* pci_bus_get_device: the device in @slot, or NULL.  BQL held. */
PCIDevice *pci_bus_get_device(PCIBus *bus, unsigned slot);

/* pci_bus_get_vm_ops: the bus's VM ops / opaque (may be NULL). */
const PCIVMOps *pci_bus_get_vm_ops(PCIBus *bus, void **opaque);

/*
 * pci_bus_conf1_read / _write: what the guest's accesses to port
 * PCI_CONF1_ADDR_PORT + @port_offset (0..7) do; @size 1, 2 or 4.  Also
 * the callbacks of the ports.  BQL held.
 */
uint64_t pci_bus_conf1_read(PCIBus *bus, unsigned port_offset,
                            unsigned size);
void pci_bus_conf1_write(PCIBus *bus, unsigned port_offset, uint64_t value,
                         unsigned size);

/* ---- device ---------------------------------------------------------- */

/* Optional hooks of a device.  All with the BQL held. */
typedef struct PCIDeviceOps {
    /* After the default handling of a config write (masks applied). */
    void (*config_write)(PCIDevice *d, uint32_t addr, uint32_t value,
                         unsigned len);
    /* After the default read: may replace @value (little endian). */
    uint32_t (*config_read)(PCIDevice *d, uint32_t addr, uint32_t value,
                            unsigned len);
    /* BAR @bar was mapped at @addr, or unmapped (PCI_BAR_UNMAPPED).  A
     * BAR moved from one address to another is reported twice, unmapped
     * then mapped: every device on the bus hears of what left an address
     * before any hears of what arrived (pci_bus_update_mappings). */
    void (*bar_mapped)(PCIDevice *d, unsigned bar, uint64_t addr);
} PCIDeviceOps;

/* One BAR as the device declared it plus its decoding state. */
typedef struct PCIBar {
    uint64_t size;           /* 0: not implemented; else a power of 2 */
    bool is_64;              /* also occupies the next BAR */
    bool prefetch;
    const IORegionOps *ops;
    void *opaque;
    unsigned region_flags;   /* address_space_add() flags */
    char *name;
    IORegion *region;        /* [BQL] mapped region, or NULL */
    uint64_t mapped_addr;    /* [BQL] PCI_BAR_UNMAPPED when not mapped */
} PCIBar;

/*
 * A PCI function (function 0 of a slot).  Devices embed it and call
 * pci_device_init() first.  Fields are [BQL] unless marked.
 */
struct PCIDevice {
    char *name;                  /* immutable */
    const PCIDeviceOps *ops;     /* immutable; may be NULL */
    PCIBus *bus;                 /* NULL until plugged */
    int slot;
    uint8_t config[PCI_CONFIG_SPACE_SIZE];
    uint8_t wmask[PCI_CONFIG_SPACE_SIZE];   /* writable bits */
    uint8_t w1cmask[PCI_CONFIG_SPACE_SIZE]; /* write-1-to-clear bits */
    PCIBar bars[PCI_NUM_BARS];
    uint8_t cap_end;             /* next free config offset for a cap */
    bool warned_bad_bar;         /* one message per device */
    PCIMsix *msix;               /* NULL without MSI-X */
};

/*
 * pci_device_init: a type-0 header with the IDs, @class_code (24 bits:
 * base class, subclass, prog-if) and @revision; standard read-only and
 * writable masks; no capabilities.  Main thread.  pci_device_cleanup()
 * frees what init and pci_device_set_bar() allocated (the device must be
 * unplugged; MSI-X is freed with pci_msix_cleanup() first).
 */
void pci_device_init(PCIDevice *d, const char *name, const PCIDeviceOps *ops,
                     uint16_t vendor_id, uint16_t device_id,
                     uint32_t class_code, uint8_t revision);
void pci_device_cleanup(PCIDevice *d);

/* pci_device_set_subsystem: subsystem vendor and id (read-only). */
void pci_device_set_subsystem(PCIDevice *d, uint16_t vendor, uint16_t id);

/*
 * pci_device_set_bar: declare memory BAR @bar of @size bytes (a power of
 * 2, >= 16); @is_64 also uses BAR @bar + 1.  The region, added to the
 * bus's MMIO space while mapped, calls @ops with @opaque (@region_flags:
 * 0 or IO_REGION_NEEDS_BQL).  Before pci_bus_add_device().  Returns 0 or
 * -EINVAL.
 */
int pci_device_set_bar(PCIDevice *d, unsigned bar, uint64_t size,
                       bool is_64, bool prefetch, const IORegionOps *ops,
                       void *opaque, unsigned region_flags);

/* pci_device_bar_address: the address programmed in BAR @bar (whether
 * decoding is on or not).  BQL held. */
uint64_t pci_device_bar_address(PCIDevice *d, unsigned bar);

/*
 * pci_device_add_capability: append a capability @cap_id of @size bytes
 * (>= 2, 4-byte aligned start) to the list; its bytes start zeroed and
 * read-only (the caller then fills config[] and sets wmask[] bits).
 * Returns its config offset, or -ENOSPC.  Before plugging.
 */
int pci_device_add_capability(PCIDevice *d, uint8_t cap_id, uint8_t size);

/* pci_device_find_capability: offset of the first @cap_id, or 0. */
uint8_t pci_device_find_capability(PCIDevice *d, uint8_t cap_id);

/*
 * pci_config_read / pci_config_write: an access of @len (1, 2 or 4)
 * bytes at @addr (@addr + @len <= 256), as the guest makes it through
 * conf1.  Writes honour wmask/w1cmask, then update BAR mappings and MSI-X
 * and call the device's hook.  BQL held.
 */
uint32_t pci_config_read(PCIDevice *d, uint32_t addr, unsigned len);
void pci_config_write(PCIDevice *d, uint32_t addr, uint32_t value,
                      unsigned len);

/* Little-endian helpers on config[]. */
static inline void pci_set_word(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void pci_set_long(uint8_t *p, uint32_t v)
{
    pci_set_word(p, (uint16_t)v);
    pci_set_word(p + 2, (uint16_t)(v >> 16));
}
static inline uint16_t pci_get_word(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t pci_get_long(const uint8_t *p)
{
    return pci_get_word(p) | ((uint32_t)pci_get_word(p + 2) << 16);
}

/* ---- MSI-X -------------------------------------------------------- */

#define PCI_MSIX_FLAGS          2       /* message control, in the cap */
#define  PCI_MSIX_FLAGS_QSIZE   0x07ff
#define  PCI_MSIX_FLAGS_MASKALL 0x4000
#define  PCI_MSIX_FLAGS_ENABLE  0x8000
#define PCI_MSIX_TABLE          4
#define PCI_MSIX_PBA            8
#define PCI_MSIX_CAP_SIZE       12
#define PCI_MSIX_ENTRY_SIZE     16
#define  PCI_MSIX_ENTRY_CTRL_MASKBIT 1
#define PCI_MSIX_MAX_VECTORS    2048

/*
 * pci_msix_init: give @d an MSI-X capability with @nr_vectors vectors
 * whose table (at offset 0) and PBA (at offset max(0x800, table size))
 * fill the 32-bit BAR @bar (>= 4 KiB), which this
 * declares (lock-free region: MSI-X has its own mutex).  Every vector
 * starts masked, MSI-X disabled.  Interrupts go through the bus's
 * PCIVMOps (one MSI route + one irqfd EventNotifier per vector, both
 * made when the vector is first enabled and unmasked, so unused vectors
 * cost no fd).  Returns 0 or a
 * negative errno.  Before plugging; main thread.
 */
int pci_msix_init(PCIDevice *d, unsigned nr_vectors, unsigned bar);

/* pci_msix_cleanup: remove the routes and irqfds, free the state.  After
 * pci_bus_remove_device() (the BAR is unmapped), before
 * pci_device_cleanup().  Main thread. */
void pci_msix_cleanup(PCIDevice *d);

/*
 * pci_msix_notify: interrupt the guest with @vector: if MSI-X is enabled
 * and neither the function nor the vector is masked, set the vector's
 * irqfd; if masked (or KVM refused its route), set its PBA bit instead
 * (delivered when unmasked / routed by a later table write).
 * Disabled MSI-X or an out-of-range vector: nothing (no INTx).  Any
 * thread.
 */
void pci_msix_notify(PCIDevice *d, unsigned vector);

/* pci_msix_nr_vectors: the table size (0 without MSI-X).  Any thread. */
unsigned pci_msix_nr_vectors(PCIDevice *d);

/* pci_msix_is_pending: the vector's PBA bit.  Any thread (tests). */
bool pci_msix_is_pending(PCIDevice *d, unsigned vector);

/* pci_msix_get_irqfd: the vector's irqfd notifier (tests read it); its
 * eventfd exists (fd >= 0) once the vector was first routed. */
EventNotifier *pci_msix_get_irqfd(PCIDevice *d, unsigned vector);

/* Internal to hw/pci/: called by the config-write path. */
void pci_msix_config_written(PCIDevice *d);

#ifdef __cplusplus
}
#endif

#endif
