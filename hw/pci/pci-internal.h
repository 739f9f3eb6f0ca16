/*
 * hw/pci/ private helpers shared by the bus, device and MSI-X files.
 */
#ifndef HW_PCI_INTERNAL_H
#define HW_PCI_INTERNAL_H

#include "shardvm/pci.h"

/* The bus's MMIO address space (immutable). */
AddressSpace *pci_bus_mmio(PCIBus *bus);

/* Whether [@addr, @addr + @size) touches guest RAM. */
bool pci_bus_overlaps_ram(PCIBus *bus, uint64_t addr, uint64_t size);

/* Map/unmap/move @d's BARs to match its command and BAR registers.  BQL. */
void pci_device_update_mappings(PCIDevice *d);

#endif
