/*
 * A PCI function's configuration space: type-0 header with read-only /
 * writable / write-1-to-clear masks, capability list, memory BARs and
 * their mapping into the bus's MMIO address space.  See
 * include/shardvm/pci.h; everything here runs with the BQL held.
 */
#include "shardvm/pci.h"
#include "pci-internal.h"

#include <errno.h>
#include <string.h>

void pci_device_init(PCIDevice *d, const char *name, const PCIDeviceOps *ops,
                     uint16_t vendor_id, uint16_t device_id,
                     uint32_t class_code, uint8_t revision)
{
    memset(d, 0, sizeof(*d));
    d->name = g_strdup(name);
    d->ops = ops;
    d->slot = -1;
    d->cap_end = PCI_HEADER_END;
    for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
        d->bars[i].mapped_addr = PCI_BAR_UNMAPPED;
    }
    pci_set_word(d->config + PCI_VENDOR_ID, vendor_id);
    pci_set_word(d->config + PCI_DEVICE_ID, device_id);
    d->config[PCI_REVISION_ID] = revision;
    d->config[PCI_CLASS_PROG] = (uint8_t)class_code;
    pci_set_word(d->config + PCI_CLASS_PROG + 1, (uint16_t)(class_code >> 8));

    pci_set_word(d->wmask + PCI_COMMAND,
                 PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER |
                 PCI_COMMAND_PARITY | PCI_COMMAND_SERR |
                 PCI_COMMAND_INTX_DISABLE);
    pci_set_word(d->w1cmask + PCI_STATUS, PCI_STATUS_W1C);
    d->wmask[PCI_CACHE_LINE_SIZE] = 0xff;
    d->wmask[PCI_LATENCY_TIMER] = 0xff;
    d->wmask[PCI_INTERRUPT_LINE] = 0xff;
    /* No expansion ROM: 0x30 stays read-only zero, so sizing finds none. */
}

void pci_device_cleanup(PCIDevice *d)
{
    g_assert(!d->bus);
    g_assert(!d->msix);
    for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
        g_free(d->bars[i].name);
        d->bars[i].name = NULL;
    }
    g_free(d->name);
    d->name = NULL;
}

void pci_device_set_subsystem(PCIDevice *d, uint16_t vendor, uint16_t id)
{
    pci_set_word(d->config + PCI_SUBSYSTEM_VENDOR_ID, vendor);
    pci_set_word(d->config + PCI_SUBSYSTEM_ID, id);
}

int pci_device_set_bar(PCIDevice *d, unsigned bar, uint64_t size,
                       bool is_64, bool prefetch, const IORegionOps *ops,
                       void *opaque, unsigned region_flags)
{
    if (bar + (is_64 ? 1 : 0) >= PCI_NUM_BARS || size < 16 ||
        (size & (size - 1)) || (!is_64 && size > (1ull << 31)) ||
        d->bars[bar].size || (is_64 && d->bars[bar + 1].size)) {
        return -EINVAL;
    }
    PCIBar *b = &d->bars[bar];
    b->size = size;
    b->is_64 = is_64;
    b->prefetch = prefetch;
    b->ops = ops;
    b->opaque = opaque;
    b->region_flags = region_flags;
    b->name = g_strdup_printf("%s-bar%u", d->name, bar);

    uint32_t off = PCI_BASE_ADDRESS_0 + 4 * bar;
    uint32_t flags = (is_64 ? PCI_BASE_ADDRESS_MEM_TYPE_64 : 0) |
                     (prefetch ? PCI_BASE_ADDRESS_MEM_PREFETCH : 0);
    pci_set_long(d->config + off, flags);
    /* The address bits above the size are writable; the rest read 0, so
     * writing all ones reads back the size mask. */
    pci_set_long(d->wmask + off, (uint32_t)~(size - 1) & ~0xfu);
    if (is_64) {
        pci_set_long(d->config + off + 4, 0);
        pci_set_long(d->wmask + off + 4, (uint32_t)(~(size - 1) >> 32));
        d->bars[bar + 1].size = 0; /* upper half: no BAR of its own */
    }
    return 0;
}

uint64_t pci_device_bar_address(PCIDevice *d, unsigned bar)
{
    PCIBar *b = &d->bars[bar];
    uint32_t off = PCI_BASE_ADDRESS_0 + 4 * bar;
    uint64_t a = pci_get_long(d->config + off) & ~0xfull;
    if (b->is_64) {
        a |= (uint64_t)pci_get_long(d->config + off + 4) << 32;
    }
    return a;
}

/* Where BAR @bar is programmed to be decoded now, or PCI_BAR_UNMAPPED. */
static uint64_t pci_bar_target(PCIDevice *d, unsigned bar)
{
    PCIBar *b = &d->bars[bar];
    uint16_t cmd = pci_get_word(d->config + PCI_COMMAND);
    if (!d->bus || !(cmd & PCI_COMMAND_MEMORY)) {
        return PCI_BAR_UNMAPPED;
    }
    uint64_t a = pci_device_bar_address(d, bar);
    uint64_t last = a + b->size - 1;
    uint64_t width_max = b->is_64 ? UINT64_MAX : UINT32_MAX;
    /* Zero, or the all-ones sizing pattern (last byte at the top of the
     * BAR's width): a BAR being sized or never assigned. */
    if (a == 0 || last == width_max || last < a) {
        return PCI_BAR_UNMAPPED;
    }
    return a;
}

static void pci_bar_warn(PCIDevice *d, unsigned bar, uint64_t a,
                         const char *why)
{
    if (!d->warned_bad_bar) {
        d->warned_bad_bar = true;
        g_warning("pci %s: BAR %u at 0x%" G_GINT64_MODIFIER "x %s: left "
                  "unmapped", d->name, bar, a, why);
    }
}

/* pci_bar_target() minus the placements the bus refuses (RAM, the
 * interrupt controllers...). */
static uint64_t pci_bar_wanted(PCIDevice *d, unsigned bar)
{
    uint64_t want = pci_bar_target(d, bar);
    const char *why;
    if (want != PCI_BAR_UNMAPPED &&
        (why = pci_bus_reserved(d->bus, want, d->bars[bar].size))) {
        pci_bar_warn(d, bar, want, why);
        want = PCI_BAR_UNMAPPED;
    }
    return want;
}

void pci_device_unmap_stale(PCIDevice *d, uint64_t old[PCI_NUM_BARS])
{
    for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
        PCIBar *b = &d->bars[i];
        old[i] = b->mapped_addr;
        if (b->size && b->region && pci_bar_wanted(d, i) != b->mapped_addr) {
            address_space_remove(pci_bus_mmio(d->bus), b->region);
            b->region = NULL;
            b->mapped_addr = PCI_BAR_UNMAPPED;
        }
    }
}

void pci_device_map_wanted(PCIDevice *d)
{
    for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
        PCIBar *b = &d->bars[i];
        uint64_t want = b->size ? pci_bar_wanted(d, i) : PCI_BAR_UNMAPPED;
        if (b->region || want == PCI_BAR_UNMAPPED) {
            continue;
        }
        GError *err = NULL;
        b->region = address_space_add(pci_bus_mmio(d->bus), b->name, want,
                                      b->size, b->ops, b->opaque,
                                      b->region_flags, &err);
        if (b->region) {
            b->mapped_addr = want;
        } else {
            /* Over another BAR: retried at every later BAR change on the
             * bus, so it appears once the other one leaves. */
            pci_bar_warn(d, i, want, err->message);
            g_error_free(err);
        }
    }
}

void pci_device_report_left(PCIDevice *d, const uint64_t old[PCI_NUM_BARS])
{
    for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
        uint64_t now = d->bars[i].mapped_addr;
        if (d->bars[i].size && old[i] != PCI_BAR_UNMAPPED &&
            now != PCI_BAR_UNMAPPED && now != old[i] &&
            d->ops && d->ops->bar_mapped) {
            d->ops->bar_mapped(d, i, PCI_BAR_UNMAPPED);
        }
    }
}

void pci_device_report_mapped(PCIDevice *d, const uint64_t old[PCI_NUM_BARS])
{
    for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
        if (d->bars[i].size && d->bars[i].mapped_addr != old[i] &&
            d->ops && d->ops->bar_mapped) {
            d->ops->bar_mapped(d, i, d->bars[i].mapped_addr);
        }
    }
}

int pci_device_add_capability(PCIDevice *d, uint8_t cap_id, uint8_t size)
{
    unsigned off = (d->cap_end + 3u) & ~3u;
    if (size < 2 || off + size > PCI_CONFIG_SPACE_SIZE) {
        return -ENOSPC;
    }
    /* Append: walk to the last capability and link it. */
    uint8_t *link = &d->config[PCI_CAPABILITY_LIST];
    while (*link) {
        link = &d->config[*link + 1];
    }
    *link = (uint8_t)off;
    memset(d->config + off, 0, size);
    d->config[off] = cap_id;
    d->config[off + 1] = 0;
    d->cap_end = (uint8_t)MIN(off + size, 0xffu);
    pci_set_word(d->config + PCI_STATUS,
                 pci_get_word(d->config + PCI_STATUS) | PCI_STATUS_CAP_LIST);
    return (int)off;
}

uint8_t pci_device_find_capability(PCIDevice *d, uint8_t cap_id)
{
    uint8_t off = d->config[PCI_CAPABILITY_LIST];
    /* At most 48 capabilities fit in 192 bytes: bound the walk. */
    for (int n = 0; off && n < 48; n++) {
        if (d->config[off] == cap_id) {
            return off;
        }
        off = d->config[off + 1];
    }
    return 0;
}

uint32_t pci_config_read(PCIDevice *d, uint32_t addr, unsigned len)
{
    uint32_t v = 0;
    g_assert(addr + len <= PCI_CONFIG_SPACE_SIZE && len >= 1 && len <= 4);
    for (unsigned i = 0; i < len; i++) {
        v |= (uint32_t)d->config[addr + i] << (8 * i);
    }
    if (d->ops && d->ops->config_read) {
        v = d->ops->config_read(d, addr, v, len);
    }
    return v;
}

/* Does [@addr, @addr + @len) touch [@start, @start + @size)? */
static bool ranges_overlap(uint32_t addr, unsigned len, uint32_t start,
                           uint32_t size)
{
    return addr < start + size && start < addr + len;
}

void pci_config_write(PCIDevice *d, uint32_t addr, uint32_t value,
                      unsigned len)
{
    g_assert(addr + len <= PCI_CONFIG_SPACE_SIZE && len >= 1 && len <= 4);
    for (unsigned i = 0; i < len; i++) {
        uint8_t b = (uint8_t)(value >> (8 * i));
        uint8_t wm = d->wmask[addr + i], w1c = d->w1cmask[addr + i];
        uint8_t *c = &d->config[addr + i];
        *c = (uint8_t)((*c & ~wm) | (b & wm));
        *c &= (uint8_t)~(b & w1c);
    }
    if (ranges_overlap(addr, len, PCI_COMMAND, 2) ||
        ranges_overlap(addr, len, PCI_BASE_ADDRESS_0, 4 * PCI_NUM_BARS)) {
        if (d->bus) {
            pci_bus_update_mappings(d->bus);
        }
    }
    if (d->msix) {
        uint8_t cap = pci_device_find_capability(d, PCI_CAP_ID_MSIX);
        if (ranges_overlap(addr, len, cap + PCI_MSIX_FLAGS, 2)) {
            pci_msix_config_written(d);
        }
    }
    if (d->ops && d->ops->config_write) {
        d->ops->config_write(d, addr, value, len);
    }
}
