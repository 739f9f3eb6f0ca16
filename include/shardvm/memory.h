/*
 * Address spaces: the PIO and MMIO regions a vCPU dispatches its I/O exits
 * to.  Each VM has two (vm_get_pio_space(), vm_get_mmio_space()).
 *
 * The region table is an immutable array sorted by address, published with
 * RCU (RcuArray, include/shardvm/rcu.h).  A vCPU finds the region of an
 * exit by binary search inside rcu_read_lock() without taking any lock.
 * Adding or removing a region builds a new table and publishes it; writers
 * are serialised by a mutex private to the address space, and the old
 * table is freed by call_rcu.
 *
 * BQL rule: a region created with IO_REGION_NEEDS_BQL is dispatched with
 * the BQL held (bql_lock()/bql_unlock(), include/shardvm/main-loop.h): the
 * vCPU takes a reference on the region, leaves the RCU read-side section,
 * takes the BQL, checks the region was not removed meanwhile, calls it,
 * drops the BQL and the reference.  Any other region is "lock-free": its
 * callbacks run on the vCPU thread inside an RCU read-side section, with no
 * lock held; they must be thread-safe against the device's other users and
 * must not block for long, nor call synchronize_rcu() or
 * address_space_remove() (hand such work to the device's AioContext with
 * a BH).
 *
 * Region lifetime: when address_space_remove() returns, no vCPU is inside
 * or will enter the region's callbacks, so the caller may free @opaque.
 * For a lock-free region this is a synchronize_rcu(); for a NEEDS_BQL
 * region the removal must happen with the BQL held and marks the region
 * dead under it, so a vCPU that looked it up before the removal sees the
 * mark once it has the BQL and treats the access as unassigned.
 *
 * An access that crosses a region boundary (e.g. "outl" to 0x3fd, of which
 * 0x3fd-0x3ff belong to the UART and 0x400 to something else) is split: each
 * region, or gap, gets the bytes it owns, as accesses of 4, 2 or 1 bytes,
 * low address first, so a device never sees an offset past its size.
 * Bytes past the end of the space (port 0xffff) are unassigned.
 *
 * Accesses that hit no region: reads return all ones, writes are ignored;
 * both are counted (address_space_get_unassigned()) and the first one of
 * each address space is logged on stderr.
 */
#ifndef SHARDVM_MEMORY_H
#define SHARDVM_MEMORY_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct AddressSpace AddressSpace;
typedef struct IORegion IORegion;

/*
 * IORegionOps: the callbacks of a device region.  @offset is relative to
 * the region base; @size is 1, 2, 4 or 8 bytes.  Values are little endian
 * integers in the low @size bytes.  Either callback may be NULL: a NULL
 * read returns all ones, a NULL write ignores the access.  They run on the
 * vCPU thread of the access (with the BQL held if the region was added
 * with IO_REGION_NEEDS_BQL), or on the caller's thread of
 * address_space_read()/address_space_write().
 */
typedef struct IORegionOps {
    uint64_t (*read)(void *opaque, uint64_t offset, unsigned size);
    void (*write)(void *opaque, uint64_t offset, uint64_t value,
                  unsigned size);
} IORegionOps;

/* Flags of address_space_add(). */
enum {
    /* Dispatch with the BQL held (add and remove with the BQL held too). */
    IO_REGION_NEEDS_BQL = 1u << 0,
};

/* Which kind of space: port I/O (16-bit ports) or MMIO (guest physical). */
typedef enum AddressSpaceKind {
    ADDRESS_SPACE_PIO = 0,
    ADDRESS_SPACE_MMIO = 1,
} AddressSpaceKind;

/*
 * address_space_new: an empty address space named @name (for messages).
 * A VM creates its own two; tests may create free-standing ones.
 * Returns the space, owned by the caller (address_space_free()).  Any
 * thread.
 */
AddressSpace *address_space_new(const char *name, AddressSpaceKind kind);

/*
 * address_space_free: free @as and every region still in it.  No vCPU or
 * other thread may use @as any more.  Any registered RCU thread outside a
 * read-side section.
 */
void address_space_free(AddressSpace *as);

/*
 * address_space_add: add the region [@base, @base + @size) named @name
 * calling @ops with @opaque (the caller keeps owning @ops and @opaque;
 * both must stay valid until address_space_remove() returns).  @flags: 0
 * or IO_REGION_NEEDS_BQL (then the caller holds the BQL).  Returns the
 * region handle (owned by @as; valid until removed), or NULL and fills
 * @errp: -EINVAL for an empty or wrapping range, -EEXIST when it overlaps
 * an existing region.  Any RCU-registered thread outside a read-side
 * section (not from a lock-free region's callback).
 */
IORegion *address_space_add(AddressSpace *as, const char *name,
                            uint64_t base, uint64_t size,
                            const IORegionOps *ops, void *opaque,
                            unsigned flags, GError **errp);

/*
 * address_space_remove: remove @region from @as.  On return no thread is
 * running, or will run, the region's callbacks (see the lifetime rule at
 * the top of this file), and @region is no longer valid.  A NEEDS_BQL
 * region must be removed with the BQL held.  May wait for an RCU grace
 * period.  Same threads as address_space_add(); also fine from a NEEDS_BQL
 * region's own callback.
 */
void address_space_remove(AddressSpace *as, IORegion *region);

/*
 * address_space_find: the region containing @addr, or NULL.  The result is
 * only valid inside the caller's rcu_read_lock() section.  Any registered
 * thread.  (For tests and introspection; vCPUs use the dispatch calls.)
 */
IORegion *address_space_find(AddressSpace *as, uint64_t addr);

/*
 * address_space_read / address_space_write: dispatch one access of @size
 * bytes (1, 2, 4 or 8) at @addr exactly as a vCPU exit does (binary search
 * under RCU, BQL for NEEDS_BQL regions).  A read that hits no region
 * returns all ones in *@value; an access across a region boundary is
 * split (see the top of this file).  Return true when a region took the
 * access (or part of it), false when it was wholly unassigned.  Any RCU-registered thread outside a
 * read-side section; a caller that holds the BQL gets NEEDS_BQL regions
 * called under its hold (the BQL is not taken twice).
 */
bool address_space_read(AddressSpace *as, uint64_t addr, unsigned size,
                        uint64_t *value);
bool address_space_write(AddressSpace *as, uint64_t addr, unsigned size,
                         uint64_t value);

/* address_space_get_unassigned: accesses that hit no region so far. */
uint64_t address_space_get_unassigned(AddressSpace *as);

/* address_space_get_nr_regions: regions in the published table. */
size_t address_space_get_nr_regions(AddressSpace *as);

/* io_region_get_base / io_region_get_size / io_region_get_name: accessors,
 * valid while the region is (or inside an RCU section). */
uint64_t io_region_get_base(const IORegion *region);
uint64_t io_region_get_size(const IORegion *region);
const char *io_region_get_name(const IORegion *region);

#ifdef __cplusplus
}
#endif

#endif
