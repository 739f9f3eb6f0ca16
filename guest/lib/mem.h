/*
 * Guest RAM for buffers (a bump arena after the image) and device windows
 * above 4 GiB (page-table entries added at CPL3).  Both BSP-only, before
 * smp_run() hands memory out to other vCPUs.
 */
#ifndef GUEST_MEM_H
#define GUEST_MEM_H

#include <stddef.h>
#include <stdint.h>

/*
 * mem_alloc: @size zeroed bytes aligned to @align (a power of two) from
 * the arena [8 MiB, end of low RAM) (end from the multiboot mem_upper, 32
 * MiB when the loader gave none, at most 3 GiB).  Physical = virtual, so
 * the pointer is also the DMA address.  Never freed.  NULL when the arena
 * is exhausted.  BSP only.
 */
void *mem_alloc(size_t size, size_t align);

/* mem_arena_left: bytes the arena still has (before alignment). */
uint64_t mem_arena_left(void);

/*
 * mem_map_device: make [@phys, @phys + @size) accessible at CPL3 as
 * uncached memory.  Below 4 GiB nothing to do (the static identity map
 * covers it, 3-4 GiB uncached).  Above it, 2 MiB pages are added to the
 * identity map from a small pool of page tables; the entries were not
 * present before, so no TLB flush is needed.  Returns 0 or -1 when the
 * pool is exhausted or @phys is beyond 48 bits.  BSP only.
 */
int mem_map_device(uint64_t phys, uint64_t size);

#endif
