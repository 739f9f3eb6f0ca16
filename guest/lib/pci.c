/* Configuration mechanism #1: address to 0xCF8, data at 0xCFC + (off & 3). */
#include "pci.h"

#include "io.h"

#define PCI_CONFIG_ADDR 0xcf8
#define PCI_CONFIG_DATA 0xcfc

static void pci_select(pci_bdf_t bdf, uint8_t off)
{
    outl(PCI_CONFIG_ADDR, 0x80000000u | ((uint32_t)bdf << 8) | (off & 0xfc));
}

uint8_t pci_read8(pci_bdf_t bdf, uint8_t off)
{
    pci_select(bdf, off);
    return inb(PCI_CONFIG_DATA + (off & 3));
}

uint16_t pci_read16(pci_bdf_t bdf, uint8_t off)
{
    pci_select(bdf, off);
    return inw(PCI_CONFIG_DATA + (off & 2));
}

uint32_t pci_read32(pci_bdf_t bdf, uint8_t off)
{
    pci_select(bdf, off);
    return inl(PCI_CONFIG_DATA);
}

void pci_write8(pci_bdf_t bdf, uint8_t off, uint8_t v)
{
    pci_select(bdf, off);
    outb(PCI_CONFIG_DATA + (off & 3), v);
}

void pci_write16(pci_bdf_t bdf, uint8_t off, uint16_t v)
{
    pci_select(bdf, off);
    outw(PCI_CONFIG_DATA + (off & 2), v);
}

void pci_write32(pci_bdf_t bdf, uint8_t off, uint32_t v)
{
    pci_select(bdf, off);
    outl(PCI_CONFIG_DATA, v);
}

unsigned pci_scan(pci_scan_fn fn, void *opaque)
{
    unsigned found = 0;

    for (unsigned dev = 0; dev < 32; dev++) {
        unsigned nfn = 1;

        for (unsigned f = 0; f < nfn; f++) {
            pci_bdf_t b = PCI_BDF(0, dev, f);
            uint32_t id = pci_read32(b, PCI_VENDOR_ID);

            if ((id & 0xffff) == 0xffff) {
                continue;
            }
            if (f == 0 && (pci_read8(b, PCI_HEADER_TYPE) & 0x80)) {
                nfn = 8;        /* multi-function device */
            }
            fn(b, id, opaque);
            found++;
        }
    }
    return found;
}

struct pci_find_ctx {
    uint16_t vendor, device;
    unsigned index;
    bool found;
    pci_bdf_t bdf;
};

static void pci_find_one(pci_bdf_t bdf, uint32_t id, void *opaque)
{
    struct pci_find_ctx *c = opaque;

    if (!c->found && (id & 0xffff) == c->vendor &&
        (c->device == 0xffff || (id >> 16) == c->device) && c->index-- == 0) {
        c->found = true;
        c->bdf = bdf;
    }
}

bool pci_find(uint16_t vendor, uint16_t device, unsigned index, pci_bdf_t *bdf)
{
    struct pci_find_ctx c = { vendor, device, index, false, 0 };

    pci_scan(pci_find_one, &c);
    if (c.found) {
        *bdf = c.bdf;
    }
    return c.found;
}

void pci_bar_get(pci_bdf_t bdf, unsigned n, struct pci_bar *bar)
{
    uint8_t off = (uint8_t)(PCI_BAR0 + 4 * n);
    uint32_t lo = pci_read32(bdf, off);

    bar->size = 0;
    bar->io = lo & 1;
    bar->is64 = !bar->io && ((lo >> 1) & 3) == 2 && n < 5;
    if (bar->io) {
        bar->addr = lo & ~3u;
        return;
    }
    bar->addr = lo & ~0xfu;
    if (bar->is64) {
        bar->addr |= (uint64_t)pci_read32(bdf, off + 4) << 32;
    }
}

void pci_bar_size(pci_bdf_t bdf, unsigned n, struct pci_bar *bar)
{
    uint8_t off = (uint8_t)(PCI_BAR0 + 4 * n);
    uint16_t cmd = pci_read16(bdf, PCI_COMMAND);
    uint32_t lo = pci_read32(bdf, off), hi = 0;
    uint64_t mask;

    pci_bar_get(bdf, n, bar);
    pci_write16(bdf, PCI_COMMAND, cmd & ~(PCI_COMMAND_IO | PCI_COMMAND_MEMORY));
    pci_write32(bdf, off, 0xffffffffu);
    mask = pci_read32(bdf, off) & (bar->io ? ~3u : ~0xfu);
    if (bar->is64) {
        hi = pci_read32(bdf, off + 4);
        pci_write32(bdf, off + 4, 0xffffffffu);
        mask |= (uint64_t)pci_read32(bdf, off + 4) << 32;
        pci_write32(bdf, off + 4, hi);
    } else {
        mask |= bar->io ? 0xffffffffffff0000ull : 0xffffffff00000000ull;
    }
    pci_write32(bdf, off, lo);
    pci_write16(bdf, PCI_COMMAND, cmd);
    /* Nothing writable: the BAR is not implemented. */
    bar->size = (uint32_t)mask || (bar->is64 && (mask >> 32)) ? ~mask + 1 : 0;
    if (bar->io) {
        bar->size &= 0xffff;
    }
}

void pci_bar_set(pci_bdf_t bdf, unsigned n, const struct pci_bar *bar, uint64_t addr)
{
    uint8_t off = (uint8_t)(PCI_BAR0 + 4 * n);
    uint32_t flags = pci_read32(bdf, off) & 0xf;

    pci_write32(bdf, off, (uint32_t)addr | flags);
    if (bar->is64) {
        pci_write32(bdf, off + 4, (uint32_t)(addr >> 32));
    }
}
