/*
 * PCI configuration space through the legacy 0xCF8/0xCFC mechanism
 * (each access is two PIO exits).  Not locked: a guest program touching
 * config space from several vCPUs at once must serialise itself.
 */
#ifndef GUEST_PCI_H
#define GUEST_PCI_H

#include <stdbool.h>
#include <stdint.h>

/* A device address: bus << 8 | device << 3 | function. */
typedef uint16_t pci_bdf_t;

#define PCI_BDF(bus, dev, fn)   ((pci_bdf_t)(((bus) << 8) | ((dev) << 3) | (fn)))
#define PCI_BUS(bdf)            ((bdf) >> 8)
#define PCI_DEV(bdf)            (((bdf) >> 3) & 0x1f)
#define PCI_FN(bdf)             ((bdf) & 7)

#define PCI_VENDOR_ID           0x00
#define PCI_DEVICE_ID           0x02
#define PCI_COMMAND             0x04
#define PCI_HEADER_TYPE         0x0e
#define PCI_BAR0                0x10
#define PCI_STATUS              0x06
#define PCI_CAP_PTR             0x34
#define PCI_STATUS_CAP_LIST     0x10
#define PCI_COMMAND_IO          0x1
#define PCI_COMMAND_MEMORY      0x2
#define PCI_COMMAND_MASTER      0x4

uint8_t pci_read8(pci_bdf_t bdf, uint8_t off);
uint16_t pci_read16(pci_bdf_t bdf, uint8_t off);
uint32_t pci_read32(pci_bdf_t bdf, uint8_t off);
void pci_write8(pci_bdf_t bdf, uint8_t off, uint8_t v);
void pci_write16(pci_bdf_t bdf, uint8_t off, uint16_t v);
void pci_write32(pci_bdf_t bdf, uint8_t off, uint32_t v);

/* A base address register as found (pci_bar_get). */
struct pci_bar {
    uint64_t addr;      /* 0 when unassigned */
    uint64_t size;      /* only filled by pci_bar_size() */
    bool io;            /* I/O space BAR */
    bool is64;          /* 64-bit memory BAR (uses BAR n + 1 too) */
};

/* pci_bar_get: read BAR @n (0-5) of a type-0 function.  No side effects. */
void pci_bar_get(pci_bdf_t bdf, unsigned n, struct pci_bar *bar);

/*
 * pci_bar_size: pci_bar_get plus the size, found by writing all ones with
 * the function's decoding turned off, then restoring BAR and command.
 */
void pci_bar_size(pci_bdf_t bdf, unsigned n, struct pci_bar *bar);

/* pci_bar_set: program memory BAR @n to @addr (decoding must be off). */
void pci_bar_set(pci_bdf_t bdf, unsigned n, const struct pci_bar *bar, uint64_t addr);

/* Called by pci_scan for each function found: @id = device << 16 | vendor. */
typedef void (*pci_scan_fn)(pci_bdf_t bdf, uint32_t id, void *opaque);

/*
 * pci_scan: call @fn for every function present on bus 0 (functions 1-7
 * only of multi-function devices), in bdf order.  Returns how many.
 */
unsigned pci_scan(pci_scan_fn fn, void *opaque);

/*
 * pci_find: scan bus 0 (every device, every function of multi-function
 * devices) for the @index-th (0-based) function with @vendor:@device;
 * 0xffff for @device matches any device of @vendor.  Returns true and sets
 * *@bdf when found.
 */
bool pci_find(uint16_t vendor, uint16_t device, unsigned index, pci_bdf_t *bdf);

#endif
