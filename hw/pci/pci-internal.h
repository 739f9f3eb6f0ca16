/*
 * hw/pci/ private helpers shared by the bus, device and MSI-X files.
 */
#ifndef HW_PCI_INTERNAL_H
#define HW_PCI_INTERNAL_H

#include "shardvm/pci.h"

/* The bus's MMIO address space (immutable). */
AddressSpace *pci_bus_mmio(PCIBus *bus);

/* Why [@addr, @addr + @size) may not hold a BAR (guest RAM, the IOAPIC,
 * the LAPIC / MSI window, KVM's private pages), or NULL when it may. */
const char *pci_bus_reserved(PCIBus *bus, uint64_t addr, uint64_t size);

/*
 * pci_bus_update_mappings: make every BAR of every device on @bus decoded
 * where its command and BAR registers say, as far as possible: first
 * remove every region that must move or go, then add the missing ones (a
 * BAR programmed over another one stays unmapped until that one leaves;
 * this retries it at every change), then report the changes to the
 * devices' bar_mapped hooks: first PCI_BAR_UNMAPPED for every BAR that
 * moved, then the new addresses, so a device that takes over an address
 * in this update (and registers ioeventfds there) never finds the previous
 * owner's still registered.  The result does not depend on the order of
 * the guest's writes.  BQL.
 */
void pci_bus_update_mappings(PCIBus *bus);

/* The passes of pci_bus_update_mappings() for one device; @old receives /
 * gives the mapped addresses before the update.  report_left tells
 * bar_mapped(PCI_BAR_UNMAPPED) for each BAR moved from one address to
 * another (one that went away entirely hears it from report_mapped). */
void pci_device_unmap_stale(PCIDevice *d, uint64_t old[PCI_NUM_BARS]);
void pci_device_map_wanted(PCIDevice *d);
void pci_device_report_left(PCIDevice *d, const uint64_t old[PCI_NUM_BARS]);
void pci_device_report_mapped(PCIDevice *d, const uint64_t old[PCI_NUM_BARS]);

#endif
