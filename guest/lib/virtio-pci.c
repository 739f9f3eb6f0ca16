/* Modern virtio-pci: find the function, its BARs and capabilities; status and features. */
#include "virtio-pci.h"

#include "console.h"
#include "io.h"
#include "mem.h"

#define PCI_CAP_ID_VNDR         0x09

/* virtio_pci_cap.cfg_type */
#define VPCI_CAP_COMMON         1
#define VPCI_CAP_NOTIFY         2
#define VPCI_CAP_ISR            3
#define VPCI_CAP_DEVICE         4

#define VIRTIO_MSI_NO_VECTOR    0xffff

/* Where unassigned BARs go: above RAM that QEMU's pc machine may put below
 * 4 GiB (up to 0xE0000000) and above every BAR already assigned there. */
#define VPCI_HOLE_START         0xe0000000ull
#define VPCI_HOLE_END           0xfec00000ull     /* IOAPIC */

static uint64_t vpci_hole_next;

static void vpci_hole_scan_fn(pci_bdf_t bdf, uint32_t id, void *opaque)
{
    if ((pci_read8(bdf, PCI_HEADER_TYPE) & 0x7f) != 0) {
        return;
    }
    for (unsigned n = 0; n < 6; n++) {
        struct pci_bar bar;

        pci_bar_get(bdf, n, &bar);
        if (!bar.io && bar.addr >= VPCI_HOLE_START && bar.addr < VPCI_HOLE_END) {
            pci_bar_size(bdf, n, &bar);
            if (bar.addr + bar.size > vpci_hole_next) {
                vpci_hole_next = bar.addr + bar.size;
            }
        }
        if (bar.is64) {
            n++;
        }
    }
}

/* An address for a BAR of @size (a power of two) in the hole, or 0. */
static uint64_t vpci_hole_alloc(uint64_t size)
{
    uint64_t a;

    if (!vpci_hole_next) {
        vpci_hole_next = VPCI_HOLE_START;
        pci_scan(vpci_hole_scan_fn, NULL);
    }
    a = (vpci_hole_next + size - 1) & ~(size - 1);
    if (!size || a + size > VPCI_HOLE_END) {
        return 0;
    }
    vpci_hole_next = a + size;
    return a;
}

/* The address of memory BAR @n, assigning one if the BAR is unassigned. */
static uint64_t vpci_bar_addr(pci_bdf_t bdf, unsigned n)
{
    struct pci_bar bar;
    uint16_t cmd;
    uint64_t a;

    pci_bar_get(bdf, n, &bar);
    if (bar.io) {
        return 0;
    }
    if (bar.addr) {
        return bar.addr;
    }
    pci_bar_size(bdf, n, &bar);
    a = vpci_hole_alloc(bar.size);
    if (!a) {
        return 0;
    }
    cmd = pci_read16(bdf, PCI_COMMAND);
    pci_write16(bdf, PCI_COMMAND, cmd & ~PCI_COMMAND_MEMORY);
    pci_bar_set(bdf, n, &bar, a);
    pci_write16(bdf, PCI_COMMAND, cmd);
    con_printf("VIRTIO bar=%02x:%02x.%x/%u assigned addr=0x%lx size=0x%lx\n",
               PCI_BUS(bdf), PCI_DEV(bdf), PCI_FN(bdf), n, (unsigned long)a,
               (unsigned long)bar.size);
    return a;
}

/* Map one capability's structure: BAR address + offset, mapped at CPL3. */
static volatile uint8_t *vpci_cap_map(pci_bdf_t bdf, uint8_t cap, uint32_t *len)
{
    unsigned bar = pci_read8(bdf, cap + 4);
    uint32_t off = pci_read32(bdf, cap + 8);
    uint64_t base;

    *len = pci_read32(bdf, cap + 12);
    if (bar > 5) {
        return NULL;
    }
    base = vpci_bar_addr(bdf, bar);
    if (!base || mem_map_device(base + off, *len) < 0) {
        return NULL;
    }
    return (volatile uint8_t *)(uintptr_t)(base + off);
}

static int vpci_caps(struct vpci_dev *d)
{
    uint8_t cap, guard = 0;

    if (!(pci_read16(d->bdf, PCI_STATUS) & PCI_STATUS_CAP_LIST)) {
        return -1;
    }
    for (cap = pci_read8(d->bdf, PCI_CAP_PTR) & 0xfc; cap && guard < 48;
         cap = pci_read8(d->bdf, cap + 1) & 0xfc, guard++) {
        uint8_t type;
        uint32_t len;
        volatile uint8_t *p;

        if (pci_read8(d->bdf, cap) != PCI_CAP_ID_VNDR) {
            continue;
        }
        type = pci_read8(d->bdf, cap + 3);
        if (type < VPCI_CAP_COMMON || type > VPCI_CAP_DEVICE) {
            continue;           /* PCI cfg access, shared memory, ... */
        }
        /* The first usable capability of each type wins (a later one may
         * be an alternative, e.g. QEMU's I/O-port notify). */
        if ((type == VPCI_CAP_COMMON && d->common) ||
            (type == VPCI_CAP_NOTIFY && d->notify) ||
            (type == VPCI_CAP_ISR && d->isr) ||
            (type == VPCI_CAP_DEVICE && d->device)) {
            continue;
        }
        p = vpci_cap_map(d->bdf, cap, &len);
        if (!p) {
            continue;
        }
        switch (type) {
        case VPCI_CAP_COMMON:
            if (len >= sizeof(struct virtio_pci_common)) {
                d->common = (volatile struct virtio_pci_common *)p;
            }
            break;
        case VPCI_CAP_NOTIFY:
            d->notify = p;
            d->notify_mult = pci_read32(d->bdf, cap + 16);
            break;
        case VPCI_CAP_ISR:
            d->isr = p;
            break;
        default:
            d->device = p;
            d->device_len = len;
            break;
        }
    }
    return d->common && d->notify && d->device ? 0 : -1;
}

/* Transitional device IDs (0x1000 + n) by virtio type; 0: none. */
static uint16_t vpci_transitional_id(uint16_t type)
{
    switch (type) {
    case 1: return 0x1000;      /* net */
    case 2: return 0x1001;      /* block */
    case 3: return 0x1003;      /* console */
    case 4: return 0x1005;      /* entropy */
    case 5: return 0x1002;      /* balloon */
    case 8: return 0x1004;      /* scsi */
    case 9: return 0x1009;      /* 9p */
    default: return 0;
    }
}

struct vpci_find_ctx {
    uint16_t modern, transitional;
    unsigned index;
    bool found;
    pci_bdf_t bdf;
};

static void vpci_find_fn(pci_bdf_t bdf, uint32_t id, void *opaque)
{
    struct vpci_find_ctx *c = opaque;
    uint16_t dev = (uint16_t)(id >> 16);

    if (c->found || (id & 0xffff) != VIRTIO_PCI_VENDOR ||
        (dev != c->modern && (!c->transitional || dev != c->transitional))) {
        return;
    }
    if (c->index-- == 0) {
        c->found = true;
        c->bdf = bdf;
    }
}

int vpci_find(uint16_t type, unsigned index, struct vpci_dev *d)
{
    struct vpci_find_ctx c = {
        VIRTIO_PCI_MODERN_BASE + type, vpci_transitional_id(type), index, false, 0,
    };
    pci_bdf_t bdf;

    *d = (struct vpci_dev){ 0 };
    pci_scan(vpci_find_fn, &c);
    if (!c.found) {
        return -1;
    }
    bdf = c.bdf;
    d->bdf = bdf;
    d->type = type;
    if (vpci_caps(d) < 0) {
        con_printf("VIRTIO error: %02x:%02x.%x has no usable common/notify/device "
                   "capabilities in memory BARs (a legacy-only device? QEMU: "
                   "disable-legacy=on)\n",
                   PCI_BUS(bdf), PCI_DEV(bdf), PCI_FN(bdf));
        return -2;
    }
    pci_write16(bdf, PCI_COMMAND, pci_read16(bdf, PCI_COMMAND) |
                PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    return 0;
}

uint8_t vpci_status(const struct vpci_dev *d)
{
    return d->common->device_status;
}

static void vpci_fail(struct vpci_dev *d, const char *why)
{
    d->common->device_status = vpci_status(d) | VIRTIO_STATUS_FAILED;
    con_printf("VIRTIO error: %02x:%02x.%x: %s\n", PCI_BUS(d->bdf),
               PCI_DEV(d->bdf), PCI_FN(d->bdf), why);
}

int vpci_start(struct vpci_dev *d, uint64_t wanted)
{
    volatile struct virtio_pci_common *c = d->common;
    uint64_t offered;

    c->device_status = 0;
    for (unsigned i = 0; vpci_status(d) != 0; i++) {
        if (i > 1000000) {
            vpci_fail(d, "reset not completed");
            return -1;
        }
        cpu_relax();
    }
    c->device_status = VIRTIO_STATUS_ACKNOWLEDGE;
    c->device_status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;
    c->device_feature_select = 0;
    offered = c->device_feature;
    c->device_feature_select = 1;
    offered |= (uint64_t)c->device_feature << 32;
    if (!((offered >> VIRTIO_F_VERSION_1) & 1)) {
        vpci_fail(d, "VIRTIO_F_VERSION_1 not offered");
        return -1;
    }
    d->features = offered & (wanted | (1ull << VIRTIO_F_VERSION_1));
    c->driver_feature_select = 0;
    c->driver_feature = (uint32_t)d->features;
    c->driver_feature_select = 1;
    c->driver_feature = (uint32_t)(d->features >> 32);
    c->device_status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                       VIRTIO_STATUS_FEATURES_OK;
    if (!(vpci_status(d) & VIRTIO_STATUS_FEATURES_OK)) {
        vpci_fail(d, "FEATURES_OK refused");
        return -1;
    }
    c->config_msix_vector = VIRTIO_MSI_NO_VECTOR;
    return 0;
}

unsigned vpci_queue_size(struct vpci_dev *d, unsigned q, unsigned max,
                         volatile uint16_t **notify)
{
    volatile struct virtio_pci_common *c = d->common;
    unsigned size, p2 = 1;

    if (q >= c->num_queues) {
        return 0;
    }
    c->queue_select = (uint16_t)q;
    size = c->queue_size;
    if (size > max) {
        size = max;
    }
    while (p2 * 2 <= size) {
        p2 *= 2;
    }
    if (!size) {
        return 0;
    }
    c->queue_size = (uint16_t)p2;
    c->queue_msix_vector = VIRTIO_MSI_NO_VECTOR;
    *notify = (volatile uint16_t *)(d->notify + (uint64_t)c->queue_notify_off * d->notify_mult);
    return p2;
}

void vpci_queue_enable(struct vpci_dev *d, unsigned q, uint64_t desc,
                       uint64_t avail, uint64_t used)
{
    volatile struct virtio_pci_common *c = d->common;

    c->queue_select = (uint16_t)q;
    c->queue_desc_lo = (uint32_t)desc;
    c->queue_desc_hi = (uint32_t)(desc >> 32);
    c->queue_driver_lo = (uint32_t)avail;
    c->queue_driver_hi = (uint32_t)(avail >> 32);
    c->queue_device_lo = (uint32_t)used;
    c->queue_device_hi = (uint32_t)(used >> 32);
    c->queue_enable = 1;
}

int vpci_driver_ok(struct vpci_dev *d)
{
    uint8_t s;

    d->common->device_status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                               VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK;
    s = vpci_status(d);
    if (s & (VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED)) {
        con_printf("VIRTIO error: %02x:%02x.%x: status 0x%x after DRIVER_OK\n",
                   PCI_BUS(d->bdf), PCI_DEV(d->bdf), PCI_FN(d->bdf), s);
        return -1;
    }
    return 0;
}

uint32_t vpci_cfg32(const struct vpci_dev *d, unsigned off)
{
    return *(volatile uint32_t *)(d->device + off);
}

uint64_t vpci_cfg64(const struct vpci_dev *d, unsigned off)
{
    uint8_t gen;
    uint64_t v;

    do {
        gen = d->common->config_generation;
        v = vpci_cfg32(d, off) | (uint64_t)vpci_cfg32(d, off + 4) << 32;
    } while (gen != d->common->config_generation);
    return v;
}
