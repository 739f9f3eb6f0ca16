/*
 * Address spaces: a sorted, immutable table of IORegion pointers published
 * with RCU.  See include/shardvm/memory.h for the locking and lifetime
 * rules; the comments here say how the code keeps them.
 */
#include "shardvm/memory.h"
#include "shardvm/error.h"
#include "shardvm/main-loop.h"
#include "shardvm/rcu.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

struct IORegion {
    uint64_t base, size;        /* immutable */
    const IORegionOps *ops;     /* immutable, owned by the device */
    void *opaque;               /* immutable, owned by the device */
    unsigned flags;             /* immutable */
    char *name;                 /* immutable */
    /*
     * References: one per published table holding the region, one per
     * vCPU inside a NEEDS_BQL dispatch.  The last unref frees it.
     */
    atomic_int refcnt;
    /* NEEDS_BQL regions: set under the BQL by address_space_remove(). */
    atomic_bool removed;
};

struct AddressSpace {
    char *name;
    AddressSpaceKind kind;
    /* The published table (RcuArray of IORegion *), sorted by base.
     * Readers: rcu_read_lock(); writers: write_lock. */
    RcuArray *table;
    pthread_mutex_t write_lock;
    atomic_uint_fast64_t unassigned;
    atomic_bool unassigned_logged;
};

static void io_region_ref(IORegion *r)
{
    atomic_fetch_add_explicit(&r->refcnt, 1, memory_order_relaxed);
}

static void io_region_unref(IORegion *r)
{
    /* acq_rel: the freeing thread sees every other user's last access. */
    if (atomic_fetch_sub_explicit(&r->refcnt, 1, memory_order_acq_rel) == 1) {
        g_free(r->name);
        g_free(r);
    }
}

/* elem_destroy of the tables: a table going away drops its references. */
static void table_elem_destroy(void *elem)
{
    io_region_unref(*(IORegion **)elem);
}

static RcuArray *table_new(size_t len)
{
    return rcu_array_new(len, sizeof(IORegion *), table_elem_destroy);
}

static inline IORegion *table_at(RcuArray *t, size_t i)
{
    return *(IORegion **)rcu_array_at(t, i);
}

static inline void table_set(RcuArray *t, size_t i, IORegion *r)
{
    io_region_ref(r);
    *(IORegion **)rcu_array_at(t, i) = r;
}

/* Index of the first region whose base is > addr (binary search). */
static size_t table_upper_bound(RcuArray *t, uint64_t addr)
{
    size_t lo = 0, hi = t ? t->len : 0;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (table_at(t, mid)->base <= addr) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static IORegion *table_lookup(RcuArray *t, uint64_t addr)
{
    size_t i = table_upper_bound(t, addr);
    if (i == 0) {
        return NULL;
    }
    IORegion *r = table_at(t, i - 1);
    return addr - r->base < r->size ? r : NULL;
}

AddressSpace *address_space_new(const char *name, AddressSpaceKind kind)
{
    AddressSpace *as = g_new0(AddressSpace, 1);

    as->name = g_strdup(name);
    as->kind = kind;
    pthread_mutex_init(&as->write_lock, NULL);
    return as;
}

void address_space_free(AddressSpace *as)
{
    if (!as) {
        return;
    }
    /* Unpublish: the regions are unreferenced after a grace period. */
    pthread_mutex_lock(&as->write_lock);
    rcu_array_publish(&as->table, NULL);
    pthread_mutex_unlock(&as->write_lock);
    pthread_mutex_destroy(&as->write_lock);
    g_free(as->name);
    g_free(as);
}

IORegion *address_space_add(AddressSpace *as, const char *name,
                            uint64_t base, uint64_t size,
                            const IORegionOps *ops, void *opaque,
                            unsigned flags, GError **errp)
{
    if (size == 0 || base + size - 1 < base ||
        (as->kind == ADDRESS_SPACE_PIO && base + size > 0x10000)) {
        shardvm_error_set(errp, -EINVAL, "%s: bad range 0x%" PRIx64
                          "+0x%" PRIx64 " for region '%s'", as->name, base,
                          size, name);
        return NULL;
    }
    if (flags & IO_REGION_NEEDS_BQL) {
        g_assert(bql_locked());
    }

    IORegion *r = g_new0(IORegion, 1);
    r->base = base;
    r->size = size;
    r->ops = ops;
    r->opaque = opaque;
    r->flags = flags;
    r->name = g_strdup(name);
    atomic_init(&r->refcnt, 0);

    pthread_mutex_lock(&as->write_lock);
    RcuArray *old = as->table; /* the writer's own view: no RCU needed */
    size_t n = old ? old->len : 0;
    size_t pos = table_upper_bound(old, base);
    IORegion *prev = pos > 0 ? table_at(old, pos - 1) : NULL;
    IORegion *next = pos < n ? table_at(old, pos) : NULL;
    if ((prev && base - prev->base < prev->size) ||
        (next && next->base - base < size)) {
        IORegion *other = prev && base - prev->base < prev->size ? prev : next;
        pthread_mutex_unlock(&as->write_lock);
        shardvm_error_set(errp, -EEXIST, "%s: region '%s' 0x%" PRIx64
                          "+0x%" PRIx64 " overlaps '%s'", as->name, name,
                          base, size, other->name);
        g_free(r->name);
        g_free(r);
        return NULL;
    }

    RcuArray *t = table_new(n + 1);
    for (size_t i = 0, j = 0; i < n + 1; i++) {
        table_set(t, i, i == pos ? r : table_at(old, j++));
    }
    rcu_array_publish(&as->table, t);
    pthread_mutex_unlock(&as->write_lock);
    return r;
}

void address_space_remove(AddressSpace *as, IORegion *region)
{
    bool needs_bql = region->flags & IO_REGION_NEEDS_BQL;

    if (needs_bql) {
        g_assert(bql_locked());
    }
    pthread_mutex_lock(&as->write_lock);
    RcuArray *old = as->table;
    size_t n = old ? old->len : 0;
    RcuArray *t = n > 1 ? table_new(n - 1) : NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        IORegion *r = table_at(old, i);
        if (r != region) {
            g_assert(j < n - 1);
            table_set(t, j++, r);
        }
    }
    g_assert(j == (n ? n - 1 : 0));
    /*
     * Keep the region alive past the publish (the old table's reference
     * is dropped after a grace period, maybe before we are done here).
     */
    io_region_ref(region);
    rcu_array_publish(&as->table, t);
    if (needs_bql) {
        /* Pairs with the check under the BQL in dispatch_locked(). */
        atomic_store(&region->removed, true);
    }
    pthread_mutex_unlock(&as->write_lock);

    if (!needs_bql) {
        /* Lock-free dispatches run inside read-side sections: wait them. */
        synchronize_rcu();
    }
    io_region_unref(region);
}

IORegion *address_space_find(AddressSpace *as, uint64_t addr)
{
    return table_lookup(rcu_array_get(&as->table), addr);
}

static uint64_t size_mask(unsigned size)
{
    return size >= 8 ? UINT64_MAX : (UINT64_C(1) << (size * 8)) - 1;
}

static void unassigned_access(AddressSpace *as, uint64_t addr,
                              unsigned size, uint64_t *value, bool is_write)
{
    atomic_fetch_add_explicit(&as->unassigned, 1, memory_order_relaxed);
    if (!is_write) {
        *value = size_mask(size);
    }
    if (!atomic_exchange(&as->unassigned_logged, true)) {
        fprintf(stderr, "shardvm: %s: unassigned %u-byte %s at 0x%" PRIx64
                " (logged once)\n", as->name, size,
                is_write ? "write" : "read", addr);
    }
}

static void region_call(IORegion *r, uint64_t addr, unsigned size,
                        uint64_t *value, bool is_write)
{
    uint64_t off = addr - r->base;

    if (is_write) {
        if (r->ops->write) {
            r->ops->write(r->opaque, off, *value & size_mask(size), size);
        }
    } else {
        *value = r->ops->read ? r->ops->read(r->opaque, off, size)
                                & size_mask(size)
                              : size_mask(size);
    }
}

/* One access that lies inside one region (or inside no region at all). */
static bool access_one(AddressSpace *as, uint64_t addr, unsigned size,
                       uint64_t *value, bool is_write)
{
    rcu_read_lock();
    IORegion *r = table_lookup(rcu_array_get(&as->table), addr);
    if (!r) {
        rcu_read_unlock();
        unassigned_access(as, addr, size, value, is_write);
        return false;
    }
    if (!(r->flags & IO_REGION_NEEDS_BQL)) {
        /* Lock-free: the grace period of a removal covers this call. */
        region_call(r, addr, size, value, is_write);
        rcu_read_unlock();
        return true;
    }

    /*
     * Never wait for the BQL inside a read-side section: a BQL holder may
     * be in synchronize_rcu().  The reference keeps the IORegion struct
     * (not the device) alive; "removed" tells whether the device still is.
     */
    io_region_ref(r);
    rcu_read_unlock();
    bool took = !bql_locked();
    if (took) {
        bql_lock();
    }
    bool live = !atomic_load(&r->removed);
    if (live) {
        region_call(r, addr, size, value, is_write);
    }
    if (took) {
        bql_unlock();
    }
    io_region_unref(r);
    if (!live) {
        unassigned_access(as, addr, size, value, is_write);
    }
    return live;
}

/*
 * Where the piece of an access that starts at @addr ends: the end of the
 * region holding @addr, or the start of the next region (unassigned gap),
 * capped at @end.  Bytes at or past the end of the space are unassigned.
 */
static uint64_t piece_end(AddressSpace *as, uint64_t addr, uint64_t end)
{
    rcu_read_lock();
    RcuArray *t = rcu_array_get(&as->table);
    size_t i = table_upper_bound(t, addr);
    uint64_t limit = end;
    if (i > 0) {
        IORegion *r = table_at(t, i - 1);
        if (addr - r->base < r->size && r->size - (addr - r->base) <
                                        end - addr) {
            limit = addr + (r->size - (addr - r->base));
        }
    }
    if (i < (t ? t->len : 0)) {
        uint64_t next = table_at(t, i)->base;
        limit = MIN(limit, next);
    }
    rcu_read_unlock();
    return limit;
}

/*
 * An access that crosses a region boundary: each region (or gap) gets the
 * bytes it owns, as accesses of 4, 2 or 1 bytes, low address first; the
 * value is put together little endian.  (QEMU does the same: the bytes
 * past a device's range go to whoever owns them, or to "unassigned".)
 */
static bool access_split(AddressSpace *as, uint64_t addr, unsigned size,
                         uint64_t *value, bool is_write)
{
    uint64_t out = 0;
    bool any = false;
    unsigned done = 0;

    while (done < size) {
        uint64_t a = addr + done;
        unsigned left = size - done;
        unsigned n;
        if (a < addr || (as->kind == ADDRESS_SPACE_PIO && a > 0xffff)) {
            n = left; /* past the end of the space: nobody's */
        } else {
            uint64_t end = addr + size < addr ? UINT64_MAX : addr + size;
            if (as->kind == ADDRESS_SPACE_PIO) {
                end = MIN(end, (uint64_t)0x10000);
            }
            n = (unsigned)(piece_end(as, a, end) - a);
            /* "end" is exclusive, so when the access wraps past the top
             * of the space UINT64_MAX stands for 2^64 and the last byte
             * (a == UINT64_MAX) gets an empty piece: give it its byte,
             * or this loop never advances. */
            if (n == 0) {
                n = 1;
            }
        }
        while (n > 0) {
            unsigned chunk = n >= 4 ? 4 : n >= 2 ? 2 : 1;
            uint64_t v = is_write ? (*value >> (8 * done)) & size_mask(chunk)
                                  : 0;
            if (a < addr || (as->kind == ADDRESS_SPACE_PIO && a > 0xffff)) {
                unassigned_access(as, a, chunk, &v, is_write);
            } else {
                any |= access_one(as, a, chunk, &v, is_write);
            }
            if (!is_write) {
                out |= (v & size_mask(chunk)) << (8 * done);
            }
            done += chunk;
            a += chunk;
            n -= chunk;
        }
    }
    if (!is_write) {
        *value = out;
    }
    return any;
}

bool address_space_access(AddressSpace *as, uint64_t addr, unsigned size,
                          uint64_t *value, bool is_write)
{
    /* The common case: the whole access inside one region (or none). */
    rcu_read_lock();
    RcuArray *t = rcu_array_get(&as->table);
    size_t i = table_upper_bound(t, addr);
    IORegion *r = i > 0 ? table_at(t, i - 1) : NULL;
    bool inside = r && addr - r->base < r->size &&
                  size <= r->size - (addr - r->base);
    bool in_gap = !(r && addr - r->base < r->size) &&
                  (i >= (t ? t->len : 0) ||
                   table_at(t, i)->base - addr >= size) &&
                  addr + size - 1 >= addr &&
                  (as->kind != ADDRESS_SPACE_PIO || addr + size <= 0x10000);
    rcu_read_unlock();
    if (size <= 1 || inside || in_gap) {
        return access_one(as, addr, size, value, is_write);
    }
    return access_split(as, addr, size, value, is_write);
}

bool address_space_read(AddressSpace *as, uint64_t addr, unsigned size,
                        uint64_t *value)
{
    return address_space_access(as, addr, size, value, false);
}

bool address_space_write(AddressSpace *as, uint64_t addr, unsigned size,
                         uint64_t value)
{
    return address_space_access(as, addr, size, &value, true);
}

uint64_t address_space_get_unassigned(AddressSpace *as)
{
    return atomic_load_explicit(&as->unassigned, memory_order_relaxed);
}

size_t address_space_get_nr_regions(AddressSpace *as)
{
    rcu_read_lock();
    RcuArray *t = rcu_array_get(&as->table);
    size_t n = t ? t->len : 0;
    rcu_read_unlock();
    return n;
}

uint64_t io_region_get_base(const IORegion *region)
{
    return region->base;
}

uint64_t io_region_get_size(const IORegion *region)
{
    return region->size;
}

const char *io_region_get_name(const IORegion *region)
{
    return region->name;
}
