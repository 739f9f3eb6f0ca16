/*
 * virtio-pci modern transport: see include/shardvm/virtio-pci.h.
 *
 * Lock order: the BQL (BAR 4 and config space are dispatched under it),
 * then vdev->lock.  The ISR byte and the config vector are atomics because
 * VirtIOTransportOps.notify runs on any thread without either lock.
 */
#include "shardvm/virtio-pci.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#define VIRTIO_PCI_CAP_SIZE        16
#define VIRTIO_PCI_NOTIFY_CAP_SIZE 20
#define VIRTIO_PCI_CFG_CAP_SIZE    20

struct VirtIOPCIProxy {
    PCIDevice pci;                 /* first: PCIDevice * casts back */
    VirtIODevice *vdev;            /* immutable; owned by the caller */
    uint64_t bar_size;             /* immutable */
    uint8_t cfg_cap;               /* immutable: the PCI_CFG cap offset */

    uint32_t dfselect;             /* [vdev->lock] */
    uint32_t gfselect;             /* [vdev->lock] */
    uint32_t guest_features[2];    /* [vdev->lock] what the driver wrote */
    uint16_t queue_select;         /* [vdev->lock] */
    _Atomic uint16_t config_vector;/* written under vdev->lock */
    _Atomic uint8_t isr;           /* set by notify, cleared by a read */

    /* Per queue: its MSI-X vector, mirrored from the core's register
     * (which is [vdev->lock]) for notify() on any thread.  Written under
     * vdev->lock. */
    _Atomic uint16_t *vq_vector;
    uint64_t notify_addr;          /* [vdev->lock] where ioeventfds sit;
                                    * PCI_BAR_UNMAPPED: BAR 4 unmapped */
    bool *ioeventfd_on;            /* [vdev->lock] per queue: registered */
};

static VirtIOPCIProxy *proxy_of(PCIDevice *d)
{
    return (VirtIOPCIProxy *)d;
}

/* ---- interrupts (any thread) ------------------------------------------ */

static void virtio_pci_notify(void *transport, VirtQueue *vq)
{
    VirtIOPCIProxy *p = transport;
    uint16_t vector;
    if (vq) {
        atomic_fetch_or(&p->isr, VIRTIO_PCI_ISR_QUEUE);
        vector = atomic_load(&p->vq_vector[virtqueue_get_index(vq)]);
    } else {
        atomic_fetch_or(&p->isr, VIRTIO_PCI_ISR_CONFIG);
        vector = atomic_load(&p->config_vector);
    }
    if (vector != VIRTIO_PCI_NO_VECTOR) {
        pci_msix_notify(&p->pci, vector);
    }
}

static const VirtIOTransportOps virtio_pci_transport_ops = {
    .notify = virtio_pci_notify,
};

/* Status with DRIVER_OK: the guest is using the queues.  NEEDS_RESET may
 * be ORed in by virtio_error() on another thread, hence the atomic load
 * (virtio_get_status() once the core provides it). */
static bool driver_ok(VirtIODevice *vdev)
{
    return __atomic_load_n(&vdev->status, __ATOMIC_ACQUIRE) &
           VIRTIO_STATUS_DRIVER_OK;
}

/* ---- ioeventfds ------------------------------------------------------- */

/*
 * Register a KVM ioeventfd for every enabled queue while the driver is
 * running (DRIVER_OK) and BAR 4 is mapped; remove the others.  A BAR move
 * removes them at the old address first.  Without PCIVMOps (tests, no
 * KVM) the notify area's MMIO handler does the job.  vdev->lock held.
 */
static void virtio_pci_sync_ioeventfds(VirtIOPCIProxy *p, uint64_t addr,
                                       bool driver_ok)
{
    VirtIODevice *vdev = p->vdev;
    void *opaque = NULL;
    const PCIVMOps *ops = p->pci.bus ? pci_bus_get_vm_ops(p->pci.bus, &opaque)
                                     : NULL;
    bool running = driver_ok && addr != PCI_BAR_UNMAPPED && ops;

    for (unsigned q = 0; q < vdev->num_queues; q++) {
        VirtQueue *vq = virtio_get_queue(vdev, q);
        EventNotifier *e = virtqueue_get_host_notifier(vq);
        bool want = running && virtqueue_is_enabled(vq);
        if (p->ioeventfd_on[q] && (!want || addr != p->notify_addr)) {
            ops->del_ioeventfd(opaque, e, p->notify_addr +
                               VIRTIO_PCI_NOTIFY_OFFSET +
                               VIRTIO_PCI_NOTIFY_MULT * q);
            p->ioeventfd_on[q] = false;
        }
        if (want && !p->ioeventfd_on[q]) {
            int r = ops->add_ioeventfd(opaque, e, addr +
                                       VIRTIO_PCI_NOTIFY_OFFSET +
                                       VIRTIO_PCI_NOTIFY_MULT * q);
            /* On failure kicks still arrive through the MMIO exit. */
            p->ioeventfd_on[q] = r == 0;
        }
    }
    p->notify_addr = addr;
}

/* ---- common configuration ---------------------------------------------- */

static VirtQueue *selected_queue(VirtIOPCIProxy *p)
{
    return p->queue_select < p->vdev->num_queues
        ? virtio_get_queue(p->vdev, p->queue_select) : NULL;
}

static uint16_t checked_vector(VirtIOPCIProxy *p, uint16_t v)
{
    return v < pci_msix_nr_vectors(&p->pci) ? v : VIRTIO_PCI_NO_VECTOR;
}

static uint64_t common_read(VirtIOPCIProxy *p, uint64_t off)
{
    VirtIODevice *vdev = p->vdev;
    VirtQueue *vq = selected_queue(p);
    uint64_t desc = 0, avail = 0, used = 0;
    if (vq) {
        virtqueue_get_addrs(vq, &desc, &avail, &used);
    }

    switch (off) {
    case VIRTIO_PCI_COMMON_DFSELECT:
        return p->dfselect;
    case VIRTIO_PCI_COMMON_DF:
        return p->dfselect < 2
            ? (uint32_t)(vdev->host_features >> (32 * p->dfselect)) : 0;
    case VIRTIO_PCI_COMMON_GFSELECT:
        return p->gfselect;
    case VIRTIO_PCI_COMMON_GF:
        return p->gfselect < 2 ? p->guest_features[p->gfselect] : 0;
    case VIRTIO_PCI_COMMON_MSIX:
        return atomic_load(&p->config_vector);
    case VIRTIO_PCI_COMMON_NUMQ:
        return vdev->num_queues;
    case VIRTIO_PCI_COMMON_STATUS:
        /* virtio_error() may OR in NEEDS_RESET from another thread. */
        return __atomic_load_n(&vdev->status, __ATOMIC_ACQUIRE);
    case VIRTIO_PCI_COMMON_CFGGENERATION:
        return (uint8_t)vdev->config_generation;
    case VIRTIO_PCI_COMMON_Q_SELECT:
        return p->queue_select;
    case VIRTIO_PCI_COMMON_Q_SIZE:
        return vq ? virtqueue_get_size(vq) : 0;
    case VIRTIO_PCI_COMMON_Q_MSIX:
        return vq ? virtqueue_get_vector(vq) : VIRTIO_PCI_NO_VECTOR;
    case VIRTIO_PCI_COMMON_Q_ENABLE:
        return vq ? virtqueue_is_enabled(vq) : 0;
    case VIRTIO_PCI_COMMON_Q_NOFF:
        return vq ? p->queue_select : 0;
    case VIRTIO_PCI_COMMON_Q_DESCLO:
        return (uint32_t)desc;
    case VIRTIO_PCI_COMMON_Q_DESCHI:
        return desc >> 32;
    case VIRTIO_PCI_COMMON_Q_AVAILLO:
        return (uint32_t)avail;
    case VIRTIO_PCI_COMMON_Q_AVAILHI:
        return avail >> 32;
    case VIRTIO_PCI_COMMON_Q_USEDLO:
        return (uint32_t)used;
    case VIRTIO_PCI_COMMON_Q_USEDHI:
        return used >> 32;
    default:
        return 0;
    }
}

/* Replace the 32-bit half at bit @shift of @old. */
static uint64_t set_half(uint64_t old, uint64_t v, unsigned shift)
{
    uint64_t mask = 0xffffffffull << shift;
    return (old & ~mask) | ((v << shift) & mask);
}

static void queue_addr_write(VirtQueue *vq, uint64_t off, uint64_t v)
{
    uint64_t a[3];
    virtqueue_get_addrs(vq, &a[0], &a[1], &a[2]);
    unsigned which = (unsigned)(off - VIRTIO_PCI_COMMON_Q_DESCLO) / 8;
    unsigned shift = (off & 4) ? 32 : 0;
    a[which] = set_half(a[which], v, shift);
    virtqueue_set_addrs(vq, a[0], a[1], a[2]);
}

static void virtio_pci_reset_locked(VirtIOPCIProxy *p)
{
    /* Off first: a kick racing with the reset then lands in the MMIO
     * handler, which finds the queue disabled or reset. */
    virtio_pci_sync_ioeventfds(p, p->notify_addr, false);
    virtio_reset(p->vdev);  /* stops the queues: waits for in-flight */
    p->dfselect = p->gfselect = 0;
    p->guest_features[0] = p->guest_features[1] = 0;
    p->queue_select = 0;
    atomic_store(&p->config_vector, VIRTIO_PCI_NO_VECTOR);
    for (unsigned q = 0; q < p->vdev->num_queues; q++) {
        atomic_store(&p->vq_vector[q], VIRTIO_PCI_NO_VECTOR);
    }
    atomic_store(&p->isr, 0);
}

static uint8_t current_status(VirtIODevice *vdev)
{
    return __atomic_load_n(&vdev->status, __ATOMIC_ACQUIRE);
}

/*
 * A driver status write.  Only a reset (0) clears bits (2.1.2: the driver
 * MUST NOT clear one): other writes add bits, so a stray write cannot stop
 * the device behind the core's back nor start it twice, and NEEDS_RESET
 * (the device's bit, which the driver cannot set) survives until reset.
 * DRIVER_OK before FEATURES_OK was accepted (3.1.1) is ignored: the device
 * would run on features nobody agreed on.
 */
static void status_write(VirtIOPCIProxy *p, uint8_t written)
{
    VirtIODevice *vdev = p->vdev;
    if (written == 0) {
        virtio_pci_reset_locked(p);
        return;
    }
    written &= (uint8_t)~VIRTIO_STATUS_NEEDS_RESET;
    uint8_t old = current_status(vdev);
    bool was_running = old & VIRTIO_STATUS_DRIVER_OK;
    uint8_t s = old | written;
    if ((s & VIRTIO_STATUS_DRIVER_OK) && !was_running) {
        if ((s & VIRTIO_STATUS_FEATURES_OK) &&
            !(old & VIRTIO_STATUS_FEATURES_OK)) {
            /* Both at once: FEATURES_OK first, the core may refuse it. */
            virtio_set_status(vdev, s & ~VIRTIO_STATUS_DRIVER_OK);
            old = current_status(vdev);
            s = old | (written & ~VIRTIO_STATUS_FEATURES_OK);
        }
        if (!(old & VIRTIO_STATUS_FEATURES_OK)) {
            s &= ~VIRTIO_STATUS_DRIVER_OK;
        }
    }
    if (s != old) {
        virtio_set_status(vdev, s);
    }
    if (driver_ok(vdev) != was_running) {
        virtio_pci_sync_ioeventfds(p, p->notify_addr, driver_ok(vdev));
    }
}

/* Queue set-up (size, addresses, enable) is taken while the queue is
 * disabled and the driver has not set DRIVER_OK: the device starts with
 * the queues enabled at DRIVER_OK and would never serve a later one. */
static bool queue_configurable(VirtIOPCIProxy *p, VirtQueue *vq)
{
    return vq && !virtqueue_is_enabled(vq) && !driver_ok(p->vdev);
}

static void common_write(VirtIOPCIProxy *p, uint64_t off, uint64_t v)
{
    VirtIODevice *vdev = p->vdev;
    VirtQueue *vq = selected_queue(p);

    switch (off) {
    case VIRTIO_PCI_COMMON_DFSELECT:
        p->dfselect = (uint32_t)v;
        break;
    case VIRTIO_PCI_COMMON_GFSELECT:
        p->gfselect = (uint32_t)v;
        break;
    case VIRTIO_PCI_COMMON_GF:
        /* Fixed once FEATURES_OK was accepted: also what reads back. */
        if (p->gfselect < 2 &&
            !(current_status(vdev) & VIRTIO_STATUS_FEATURES_OK)) {
            p->guest_features[p->gfselect] = (uint32_t)v;
            virtio_set_guest_features(vdev, p->guest_features[0] |
                                      (uint64_t)p->guest_features[1] << 32);
        }
        break;
    case VIRTIO_PCI_COMMON_MSIX:
        atomic_store(&p->config_vector, checked_vector(p, (uint16_t)v));
        break;
    case VIRTIO_PCI_COMMON_STATUS:
        status_write(p, (uint8_t)v);
        break;
    case VIRTIO_PCI_COMMON_Q_SELECT:
        p->queue_select = (uint16_t)v;
        break;
    case VIRTIO_PCI_COMMON_Q_SIZE:
        /* A split ring's size is a power of 2 no larger than the max. */
        if (queue_configurable(p, vq) && v && !(v & (v - 1)) &&
            v <= virtqueue_get_max_size(vq)) {
            virtqueue_set_size(vq, (uint16_t)v);
        }
        break;
    case VIRTIO_PCI_COMMON_Q_MSIX:
        if (vq) {
            uint16_t vector = checked_vector(p, (uint16_t)v);
            virtqueue_set_vector(vq, vector);
            atomic_store(&p->vq_vector[p->queue_select], vector);
        }
        break;
    case VIRTIO_PCI_COMMON_Q_ENABLE:
        /* Drivers never write 0 (4.1.4.3.2); queues are reset by status. */
        if (queue_configurable(p, vq) && v == 1) {
            virtqueue_set_enabled(vq, true);
            virtio_pci_sync_ioeventfds(p, p->notify_addr, driver_ok(vdev));
        }
        break;
    case VIRTIO_PCI_COMMON_Q_DESCLO:
    case VIRTIO_PCI_COMMON_Q_DESCHI:
    case VIRTIO_PCI_COMMON_Q_AVAILLO:
    case VIRTIO_PCI_COMMON_Q_AVAILHI:
    case VIRTIO_PCI_COMMON_Q_USEDLO:
    case VIRTIO_PCI_COMMON_Q_USEDHI:
        if (queue_configurable(p, vq)) {
            queue_addr_write(vq, off, v);
        }
        break;
    default:
        break; /* read-only or reserved */
    }
}

/* ---- BAR 4 -------------------------------------------------------------- */

static uint64_t bar_read(void *opaque, uint64_t offset, unsigned size)
{
    VirtIOPCIProxy *p = opaque;
    VirtIODevice *vdev = p->vdev;
    uint64_t v = 0;

    if (offset >= VIRTIO_PCI_ISR_OFFSET &&
        offset < VIRTIO_PCI_ISR_OFFSET + VIRTIO_PCI_REGION_SIZE) {
        /* Reading the ISR clears it (also de-asserts INTx, which we lack). */
        return offset == VIRTIO_PCI_ISR_OFFSET ? atomic_exchange(&p->isr, 0)
                                               : 0;
    }
    g_mutex_lock(&vdev->lock);
    if (offset < VIRTIO_PCI_REGION_SIZE) {
        /* Registers are at most 32 bits: a qword is two dwords. */
        v = common_read(p, offset);
        if (size == 8) {
            v = (uint32_t)v | common_read(p, offset + 4) << 32;
        } else {
            v &= (1ull << (8 * size)) - 1;
        }
    } else if (offset >= VIRTIO_PCI_DEVICE_OFFSET &&
               offset < VIRTIO_PCI_DEVICE_OFFSET + VIRTIO_PCI_REGION_SIZE) {
        uint64_t o = offset - VIRTIO_PCI_DEVICE_OFFSET;
        uint8_t buf[8] = { 0 };
        if (o + size <= vdev->config_size) {
            vdev->ops->read_config(vdev, (uint32_t)o, buf, size);
        }
        for (unsigned i = 0; i < size; i++) {
            v |= (uint64_t)buf[i] << (8 * i);
        }
    }
    /* The notify area reads as 0. */
    g_mutex_unlock(&vdev->lock);
    return v;
}

static void bar_write(void *opaque, uint64_t offset, uint64_t value,
                      unsigned size)
{
    VirtIOPCIProxy *p = opaque;
    VirtIODevice *vdev = p->vdev;

    if (offset >= VIRTIO_PCI_NOTIFY_OFFSET) {
        /* The no-ioeventfd path: a kick exits to us; set the notifier the
         * queue's context watches.  No lock: the notifier lives as long
         * as the device. */
        uint64_t q = (offset - VIRTIO_PCI_NOTIFY_OFFSET) /
                     VIRTIO_PCI_NOTIFY_MULT;
        if (q < vdev->num_queues) {
            event_notifier_set(
                virtqueue_get_host_notifier(virtio_get_queue(vdev, q)));
        }
        return;
    }
    g_mutex_lock(&vdev->lock);
    if (offset < VIRTIO_PCI_REGION_SIZE) {
        /* Registers are at most 32 bits: a qword is two dwords (as QEMU
         * splits it), e.g. DESCHI then AVAILLO. */
        common_write(p, offset, size == 8 ? (uint32_t)value : value);
        if (size == 8) {
            common_write(p, offset + 4, value >> 32);
        }
    } else if (offset >= VIRTIO_PCI_DEVICE_OFFSET &&
               offset < VIRTIO_PCI_DEVICE_OFFSET + VIRTIO_PCI_REGION_SIZE) {
        uint64_t o = offset - VIRTIO_PCI_DEVICE_OFFSET;
        uint8_t buf[8];
        for (unsigned i = 0; i < size; i++) {
            buf[i] = (uint8_t)(value >> (8 * i));
        }
        if (o + size <= vdev->config_size && vdev->ops->write_config) {
            vdev->ops->write_config(vdev, (uint32_t)o, buf, size);
        }
    }
    g_mutex_unlock(&vdev->lock);
}

static const IORegionOps virtio_pci_bar_ops = {
    .read = bar_read,
    .write = bar_write,
};

/* ---- configuration space hooks (BQL) --------------------------------- */

/* The PCI_CFG window: bar, offset and length name a BAR access that
 * pci_cfg_data performs (4.1.4.9).  Returns false for an access the spec
 * leaves undefined (we ignore it). */
static bool cfg_window(VirtIOPCIProxy *p, const PCIBar **bar, uint64_t *off,
                       unsigned *len)
{
    const uint8_t *c = p->pci.config + p->cfg_cap;
    unsigned b = c[VIRTIO_PCI_CAP_BAR];
    *off = pci_get_long(c + VIRTIO_PCI_CAP_OFFSET);
    *len = pci_get_long(c + VIRTIO_PCI_CAP_LENGTH);
    if (b >= PCI_NUM_BARS || !p->pci.bars[b].size ||
        (*len != 1 && *len != 2 && *len != 4) || *off % *len ||
        *off + *len > p->pci.bars[b].size) {
        return false;
    }
    *bar = &p->pci.bars[b];
    return true;
}

static bool touches_cfg_data(VirtIOPCIProxy *p, uint32_t addr, unsigned len)
{
    uint32_t data = p->cfg_cap + VIRTIO_PCI_CFG_DATA;
    return addr < data + 4 && data < addr + len;
}

static void virtio_pci_config_write(PCIDevice *d, uint32_t addr,
                                    uint32_t value, unsigned len)
{
    VirtIOPCIProxy *p = proxy_of(d);
    const PCIBar *bar;
    uint64_t off;
    unsigned n;
    if (!touches_cfg_data(p, addr, len) || !cfg_window(p, &bar, &off, &n)) {
        return;
    }
    uint32_t data = pci_get_long(d->config + p->cfg_cap + VIRTIO_PCI_CFG_DATA);
    if (bar->ops->write) {
        bar->ops->write(bar->opaque, off, data & (n == 4 ? ~0u :
                        (1u << (8 * n)) - 1), n);
    }
}

static uint32_t virtio_pci_config_read(PCIDevice *d, uint32_t addr,
                                       uint32_t value, unsigned len)
{
    VirtIOPCIProxy *p = proxy_of(d);
    const PCIBar *bar;
    uint64_t off;
    unsigned n;
    if (!touches_cfg_data(p, addr, len) || !cfg_window(p, &bar, &off, &n)) {
        return value;
    }
    uint32_t v = bar->ops->read ? (uint32_t)bar->ops->read(bar->opaque, off, n)
                                : UINT32_MAX;
    uint8_t bytes[4];
    pci_set_long(bytes, v);
    uint32_t data = p->cfg_cap + VIRTIO_PCI_CFG_DATA;
    for (unsigned i = 0; i < len; i++) {
        uint32_t a = addr + i;
        if (a >= data && a < data + 4) {
            value &= ~(0xffu << (8 * i));
            value |= (uint32_t)bytes[a - data] << (8 * i);
        }
    }
    return value;
}

static void virtio_pci_bar_mapped(PCIDevice *d, unsigned bar, uint64_t addr)
{
    VirtIOPCIProxy *p = proxy_of(d);
    if (bar != VIRTIO_PCI_BAR) {
        return;
    }
    g_mutex_lock(&p->vdev->lock);
    virtio_pci_sync_ioeventfds(p, addr, driver_ok(p->vdev));
    g_mutex_unlock(&p->vdev->lock);
}

static const PCIDeviceOps virtio_pci_dev_ops = {
    .config_write = virtio_pci_config_write,
    .config_read = virtio_pci_config_read,
    .bar_mapped = virtio_pci_bar_mapped,
};

/* ---- construction ------------------------------------------------------ */

static int add_virtio_cap(VirtIOPCIProxy *p, uint8_t type, uint8_t cap_len,
                          uint32_t offset, uint32_t length)
{
    int cap = pci_device_add_capability(&p->pci, PCI_CAP_ID_VNDR, cap_len);
    g_assert(cap > 0); /* a handful of caps always fit in 192 bytes */
    uint8_t *c = p->pci.config + cap;
    c[2] = cap_len;
    c[VIRTIO_PCI_CAP_CFG_TYPE] = type;
    c[VIRTIO_PCI_CAP_BAR] = type == VIRTIO_PCI_CAP_PCI_CFG ? 0
                                                           : VIRTIO_PCI_BAR;
    pci_set_long(c + VIRTIO_PCI_CAP_OFFSET, offset);
    pci_set_long(c + VIRTIO_PCI_CAP_LENGTH, length);
    return cap;
}

VirtIOPCIProxy *virtio_pci_new(VirtIODevice *vdev, uint32_t class_code,
                               unsigned nr_vectors)
{
    VirtIOPCIProxy *p = g_new0(VirtIOPCIProxy, 1);
    char *name = g_strdup_printf("%s-pci", vdev->name);
    p->vdev = vdev;
    p->notify_addr = PCI_BAR_UNMAPPED;
    p->ioeventfd_on = g_new0(bool, vdev->num_queues);
    p->vq_vector = g_new(_Atomic uint16_t, vdev->num_queues);
    for (unsigned q = 0; q < vdev->num_queues; q++) {
        atomic_init(&p->vq_vector[q], VIRTIO_PCI_NO_VECTOR);
    }
    atomic_init(&p->config_vector, VIRTIO_PCI_NO_VECTOR);
    atomic_init(&p->isr, 0);

    pci_device_init(&p->pci, name, &virtio_pci_dev_ops, VIRTIO_PCI_VENDOR_ID,
                    VIRTIO_PCI_DEVICE_ID_BASE + vdev->device_id, class_code,
                    VIRTIO_PCI_REVISION);
    g_free(name);
    pci_device_set_subsystem(&p->pci, VIRTIO_PCI_VENDOR_ID,
                             VIRTIO_PCI_SUBSYS_ID);
    p->pci.config[PCI_INTERRUPT_PIN] = 1; /* INTA#, as QEMU (unused) */

    uint64_t notify_len = MAX((uint64_t)VIRTIO_PCI_REGION_SIZE,
                              (uint64_t)vdev->num_queues *
                              VIRTIO_PCI_NOTIFY_MULT);
    p->bar_size = 1;
    while (p->bar_size < VIRTIO_PCI_NOTIFY_OFFSET + notify_len) {
        p->bar_size <<= 1;
    }
    /* NEEDS_BQL: a status write starts/stops queues and waits. */
    int r = pci_device_set_bar(&p->pci, VIRTIO_PCI_BAR, p->bar_size, true,
                               true, &virtio_pci_bar_ops, p,
                               IO_REGION_NEEDS_BQL);
    g_assert(r == 0);

    add_virtio_cap(p, VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_CAP_SIZE,
                   VIRTIO_PCI_COMMON_OFFSET, 0x38);
    add_virtio_cap(p, VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_CAP_SIZE,
                   VIRTIO_PCI_ISR_OFFSET, 1);
    add_virtio_cap(p, VIRTIO_PCI_CAP_DEVICE_CFG, VIRTIO_PCI_CAP_SIZE,
                   VIRTIO_PCI_DEVICE_OFFSET,
                   MAX(vdev->config_size, 4u));
    int n = add_virtio_cap(p, VIRTIO_PCI_CAP_NOTIFY_CFG,
                           VIRTIO_PCI_NOTIFY_CAP_SIZE,
                           VIRTIO_PCI_NOTIFY_OFFSET, (uint32_t)notify_len);
    pci_set_long(p->pci.config + n + VIRTIO_PCI_NOTIFY_MULTIPLIER,
                 VIRTIO_PCI_NOTIFY_MULT);
    int c = add_virtio_cap(p, VIRTIO_PCI_CAP_PCI_CFG, VIRTIO_PCI_CFG_CAP_SIZE,
                           0, 0);
    p->cfg_cap = (uint8_t)c;
    /* The window's bar, offset, length and data are the driver's. */
    p->pci.wmask[c + VIRTIO_PCI_CAP_BAR] = 0xff;
    memset(p->pci.wmask + c + VIRTIO_PCI_CAP_OFFSET, 0xff, 8);
    memset(p->pci.wmask + c + VIRTIO_PCI_CFG_DATA, 0xff, 4);

    /* num-queues and vectors come from the user: more vectors than MSI-X
     * has are capped (queues past the table get VIRTIO_PCI_NO_VECTOR). */
    unsigned vectors = nr_vectors ? nr_vectors : vdev->num_queues + 1;
    r = pci_msix_init(&p->pci, MIN(vectors, (unsigned)PCI_MSIX_MAX_VECTORS),
                      VIRTIO_PCI_MSIX_BAR);
    g_assert(r == 0); /* 1..2048 vectors in a free BAR 1: cannot fail */

    vdev->transport_ops = &virtio_pci_transport_ops;
    vdev->transport = p;
    return p;
}

int virtio_pci_plug(VirtIOPCIProxy *p, PCIBus *bus, int slot, GError **errp)
{
    return pci_bus_add_device(bus, &p->pci, slot, errp);
}

void virtio_pci_free(VirtIOPCIProxy *p)
{
    if (!p) {
        return;
    }
    g_mutex_lock(&p->vdev->lock);
    virtio_pci_reset_locked(p);
    g_mutex_unlock(&p->vdev->lock);
    if (p->pci.bus) {
        /* Unmapping BAR 4 also drops any ioeventfd left (bar_mapped). */
        pci_bus_remove_device(p->pci.bus, &p->pci);
    }
    pci_msix_cleanup(&p->pci);
    pci_device_cleanup(&p->pci);
    p->vdev->transport_ops = NULL;
    p->vdev->transport = NULL;
    g_free(p->ioeventfd_on);
    g_free(p->vq_vector);
    g_free(p);
}

PCIDevice *virtio_pci_get_pci(VirtIOPCIProxy *p)
{
    return &p->pci;
}

uint8_t virtio_pci_get_isr(VirtIOPCIProxy *p)
{
    return atomic_load(&p->isr);
}
