/*
 * PCI bus 0: the slot table, configuration mechanism #1 and BAR address
 * assignment.  The host bridge (00.0) is a plain PCIDevice.  See
 * include/shardvm/pci.h; BQL held throughout.
 */
#include "shardvm/pci.h"
#include "shardvm/error.h"
#include "pci-internal.h"
#include "shardvm/vm.h"

#include <errno.h>

#define PCI_HIGHMEM_BASE 0x100000000ull
/* The implemented bits of the 0xCF8 latch: enable, bus, device, function,
 * register (dword). */
#define PCI_CONF1_ADDR_MASK 0x80fffffcu

struct PCIBus {
    AddressSpace *mmio;          /* immutable */
    AddressSpace *pio;           /* immutable; NULL: no ports */
    IORegion *conf1_region;      /* immutable while the bus lives */
    uint64_t ram_below_4g;       /* immutable */
    uint64_t ram_above_4g;       /* immutable */
    const PCIVMOps *vm_ops;      /* immutable */
    void *vm_opaque;
    uint32_t conf1_addr;         /* [BQL] the 0xCF8 latch */
    PCIDevice *slots[PCI_NUM_SLOTS]; /* [BQL] */
    PCIDevice host;              /* 00.0 */
    uint64_t next_mem32;         /* [BQL] assignment cursors */
    uint64_t next_mem64;
    uint64_t mem64_limit;
};

AddressSpace *pci_bus_mmio(PCIBus *bus)
{
    return bus->mmio;
}

/* Fixed things in the PCI hole that are not regions of the MMIO space
 * (include/shardvm/vm.h): KVM's in-kernel IOAPIC and LAPIC (the whole MSI
 * address window), its identity-map and TSS pages.  An ioeventfd over the
 * IOAPIC would swallow its register writes. */
static const struct {
    uint64_t base, size;
    const char *what;
} pci_hole_reserved[] = {
    { 0xfec00000ull, 0x100000, "overlaps the IOAPIC" },
    { 0xfee00000ull, 0x100000, "overlaps the LAPIC/MSI window" },
    { VM_IDENTITY_MAP_ADDR, 0x4000, "overlaps KVM's private pages" },
};

const char *pci_bus_reserved(PCIBus *bus, uint64_t addr, uint64_t size)
{
    uint64_t end = addr + size; /* callers ensured no wrap */
    if (addr < bus->ram_below_4g ||
        (bus->ram_above_4g && end > PCI_HIGHMEM_BASE &&
         addr < PCI_HIGHMEM_BASE + bus->ram_above_4g)) {
        return "overlaps guest RAM";
    }
    for (size_t i = 0; i < G_N_ELEMENTS(pci_hole_reserved); i++) {
        if (addr < pci_hole_reserved[i].base + pci_hole_reserved[i].size &&
            pci_hole_reserved[i].base < end) {
            return pci_hole_reserved[i].what;
        }
    }
    return NULL;
}

void pci_bus_update_mappings(PCIBus *bus)
{
    uint64_t old[PCI_NUM_SLOTS][PCI_NUM_BARS];
    for (unsigned s = 0; s < PCI_NUM_SLOTS; s++) {
        if (bus->slots[s]) {
            pci_device_unmap_stale(bus->slots[s], old[s]);
        }
    }
    for (unsigned s = 0; s < PCI_NUM_SLOTS; s++) {
        if (bus->slots[s]) {
            pci_device_map_wanted(bus->slots[s]);
        }
    }
    /* What left an address first, on every device: a device appearing
     * where another just left must not meet its ioeventfds (KVM refuses a
     * second one on an address: -EEXIST). */
    for (unsigned s = 0; s < PCI_NUM_SLOTS; s++) {
        if (bus->slots[s]) {
            pci_device_report_left(bus->slots[s], old[s]);
        }
    }
    for (unsigned s = 0; s < PCI_NUM_SLOTS; s++) {
        if (bus->slots[s]) {
            pci_device_report_mapped(bus->slots[s], old[s]);
        }
    }
}

const PCIVMOps *pci_bus_get_vm_ops(PCIBus *bus, void **opaque)
{
    *opaque = bus->vm_opaque;
    return bus->vm_ops;
}

/* The function addressed by the conf1 latch, and the register offset;
 * NULL when disabled, not bus 0, not function 0 or an empty slot. */
static PCIDevice *conf1_target(PCIBus *bus, uint32_t *reg)
{
    uint32_t a = bus->conf1_addr;
    if (!(a & PCI_CONF1_ENABLE) || ((a >> 16) & 0xff) != 0 ||
        ((a >> 8) & 7) != 0) {
        return NULL;
    }
    *reg = a & 0xfc;
    return bus->slots[(a >> 11) & 0x1f];
}

uint64_t pci_bus_conf1_read(PCIBus *bus, unsigned port_offset, unsigned size)
{
    uint64_t ones = size >= 8 ? UINT64_MAX : (1ull << (8 * size)) - 1;
    if (port_offset < 4) {
        /* The latch is a dword register; narrower reads (e.g. 0xCF9,
         * the PIIX reset control) are not emulated. */
        return port_offset == 0 && size == 4 ? bus->conf1_addr : ones;
    }
    uint32_t reg;
    unsigned k = port_offset - 4;
    PCIDevice *d = conf1_target(bus, &reg);
    if (!d || k + size > 4) {
        return ones;
    }
    return pci_config_read(d, reg + k, size);
}

void pci_bus_conf1_write(PCIBus *bus, unsigned port_offset, uint64_t value,
                         unsigned size)
{
    if (port_offset < 4) {
        if (port_offset == 0 && size == 4) {
            /* Bits 30:24 and 1:0 are reserved: read-only zero. */
            bus->conf1_addr = (uint32_t)value & PCI_CONF1_ADDR_MASK;
        }
        return;
    }
    uint32_t reg;
    unsigned k = port_offset - 4;
    PCIDevice *d = conf1_target(bus, &reg);
    if (d && k + size <= 4) {
        pci_config_write(d, reg + k, (uint32_t)value, size);
    }
}

static uint64_t conf1_io_read(void *opaque, uint64_t offset, unsigned size)
{
    return pci_bus_conf1_read(opaque, (unsigned)offset, size);
}

static void conf1_io_write(void *opaque, uint64_t offset, uint64_t value,
                           unsigned size)
{
    pci_bus_conf1_write(opaque, (unsigned)offset, value, size);
}

static const IORegionOps conf1_ops = {
    .read = conf1_io_read,
    .write = conf1_io_write,
};

PCIBus *pci_bus_new(const PCIBusConfig *cfg, GError **errp)
{
    PCIBus *bus = g_new0(PCIBus, 1);
    bus->mmio = cfg->mmio;
    bus->pio = cfg->pio;
    bus->ram_below_4g = cfg->ram_below_4g;
    bus->ram_above_4g = cfg->ram_above_4g;
    bus->vm_ops = cfg->vm_ops;
    bus->vm_opaque = cfg->vm_opaque;
    bus->next_mem32 = PCI_MEM32_BASE;
    uint64_t top = PCI_HIGHMEM_BASE + cfg->ram_above_4g;
    bus->next_mem64 = (top + PCI_MEM64_ALIGN - 1) & ~(PCI_MEM64_ALIGN - 1);
    bus->mem64_limit = bus->next_mem64 + PCI_MEM64_SIZE - 1;

    if (bus->pio) {
        /* NEEDS_BQL: a config write may move a BAR, which adds and removes
         * MMIO regions (not allowed from a lock-free callback). */
        bus->conf1_region = address_space_add(bus->pio, "pci-conf1",
                                              PCI_CONF1_ADDR_PORT, 8,
                                              &conf1_ops, bus,
                                              IO_REGION_NEEDS_BQL, errp);
        if (!bus->conf1_region) {
            g_free(bus);
            return NULL;
        }
    }
    pci_device_init(&bus->host, "i440fx", NULL, PCI_HOST_VENDOR_ID,
                    PCI_HOST_DEVICE_ID, PCI_CLASS_BRIDGE_HOST,
                    PCI_HOST_REVISION);
    pci_device_set_subsystem(&bus->host, 0x1af4, 0x1100); /* as QEMU */
    int r = pci_bus_add_device(bus, &bus->host, 0, errp);
    g_assert(r == 0);
    return bus;
}

void pci_bus_free(PCIBus *bus)
{
    if (!bus) {
        return;
    }
    pci_bus_remove_device(bus, &bus->host);
    pci_device_cleanup(&bus->host);
    for (unsigned i = 0; i < PCI_NUM_SLOTS; i++) {
        g_assert(!bus->slots[i]);
    }
    if (bus->conf1_region) {
        address_space_remove(bus->pio, bus->conf1_region);
    }
    g_free(bus);
}

/* Take @size bytes (naturally aligned) from a window cursor. */
static uint64_t window_take(uint64_t *cursor, uint64_t limit, uint64_t size)
{
    uint64_t a = (*cursor + size - 1) & ~(size - 1);
    if (a < *cursor || a + size - 1 > limit) {
        return 0;
    }
    *cursor = a + size;
    return a;
}

int pci_bus_add_device(PCIBus *bus, PCIDevice *d, int slot, GError **errp)
{
    if (slot < 0) {
        for (slot = 1; slot < PCI_NUM_SLOTS && bus->slots[slot]; slot++) {
        }
        if (slot == PCI_NUM_SLOTS) {
            return shardvm_error_set(errp, -ENOSPC, "pci: no free slot for "
                                     "%s", d->name);
        }
    }
    if (slot >= PCI_NUM_SLOTS || (slot == 0 && d != &bus->host)) {
        return shardvm_error_set(errp, -EINVAL, "pci: invalid slot %d for "
                                 "%s (1..31)", slot, d->name);
    }
    if (bus->slots[slot]) {
        return shardvm_error_set(errp, -EBUSY, "pci: slot %d is taken by %s",
                                 slot, bus->slots[slot]->name);
    }
    /* Largest BARs first would pack better; devices have one or two. */
    uint64_t save32 = bus->next_mem32, save64 = bus->next_mem64;
    for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
        PCIBar *b = &d->bars[i];
        if (!b->size) {
            continue;
        }
        uint64_t a = b->is_64
            ? window_take(&bus->next_mem64, bus->mem64_limit, b->size)
            : window_take(&bus->next_mem32, PCI_MEM32_LIMIT, b->size);
        if (!a) {
            bus->next_mem32 = save32;
            bus->next_mem64 = save64;
            return shardvm_error_set(errp, -ENOSPC, "pci: no room for BAR %u "
                                     "of %s in the %s window", i, d->name,
                                     b->is_64 ? "64-bit" : "32-bit");
        }
        uint32_t off = PCI_BASE_ADDRESS_0 + 4 * i;
        uint32_t low = pci_get_long(d->config + off) & 0xf;
        pci_set_long(d->config + off, (uint32_t)a | low);
        if (b->is_64) {
            pci_set_long(d->config + off + 4, (uint32_t)(a >> 32));
        }
    }
    d->bus = bus;
    d->slot = slot;
    bus->slots[slot] = d;
    uint16_t cmd = pci_get_word(d->config + PCI_COMMAND);
    pci_set_word(d->config + PCI_COMMAND,
                 cmd | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    pci_bus_update_mappings(bus);
    return slot;
}

void pci_bus_remove_device(PCIBus *bus, PCIDevice *d)
{
    g_assert(d->bus == bus && bus->slots[d->slot] == d);
    uint16_t cmd = pci_get_word(d->config + PCI_COMMAND);
    pci_set_word(d->config + PCI_COMMAND, cmd & ~PCI_COMMAND_MEMORY);
    pci_bus_update_mappings(bus); /* others may take its place */
    bus->slots[d->slot] = NULL;
    d->bus = NULL;
    d->slot = -1;
}

PCIDevice *pci_bus_get_device(PCIBus *bus, unsigned slot)
{
    return slot < PCI_NUM_SLOTS ? bus->slots[slot] : NULL;
}
