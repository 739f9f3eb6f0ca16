/*
 * Guest RAM as seen by devices: a sorted table of (gpa, size, hva) ranges
 * published through RCU.  Readers translate inside rcu_read_lock(); an
 * update publishes a new table and frees the old one after a grace period.
 */
#include "shardvm/virtio.h"
#include "shardvm/rcu.h"

#include <errno.h>
#include <string.h>

typedef struct GuestMemoryTable {
    struct rcu_head rcu;
    unsigned nr;
    GuestMemoryRange r[];     /* sorted by gpa, disjoint */
} GuestMemoryTable;

struct GuestMemory {
    GuestMemoryTable *table;  /* RCU; written by the main thread */
};

static int range_cmp(const void *a, const void *b)
{
    const GuestMemoryRange *x = a, *y = b;

    return x->gpa < y->gpa ? -1 : x->gpa > y->gpa;
}

/* A sorted copy of @ranges, or NULL if one is empty, wraps or overlaps. */
static GuestMemoryTable *table_new(const GuestMemoryRange *ranges, unsigned nr)
{
    GuestMemoryTable *t = g_malloc0(sizeof(*t) + nr * sizeof(t->r[0]));

    t->nr = nr;
    if (nr) {
        memcpy(t->r, ranges, nr * sizeof(t->r[0]));
    }
    qsort(t->r, nr, sizeof(t->r[0]), range_cmp);
    for (unsigned i = 0; i < nr; i++) {
        const GuestMemoryRange *r = &t->r[i];

        /* Overlap as a difference: the previous range may end exactly at
         * 2^64, where gpa + size wraps to 0. */
        if (r->size == 0 || !r->hva || r->gpa + r->size - 1 < r->gpa ||
            (i > 0 && r->gpa - t->r[i - 1].gpa < t->r[i - 1].size)) {
            g_free(t);
            return NULL;
        }
    }
    return t;
}

static void table_free_rcu(struct rcu_head *head)
{
    g_free(caa_container_of(head, GuestMemoryTable, rcu));
}

GuestMemory *guest_memory_new(const GuestMemoryRange *ranges, unsigned nr)
{
    GuestMemoryTable *t = table_new(ranges, nr);
    GuestMemory *gm;

    if (!t) {
        return NULL;
    }
    gm = g_new0(GuestMemory, 1);
    rcu_assign_pointer(gm->table, t);
    return gm;
}

void guest_memory_free(GuestMemory *gm)
{
    if (!gm) {
        return;
    }
    GuestMemoryTable *t = rcu_xchg_pointer(&gm->table, NULL);
    if (t) {
        call_rcu(&t->rcu, table_free_rcu);
    }
    g_free(gm);
}

int guest_memory_update(GuestMemory *gm, const GuestMemoryRange *ranges,
                        unsigned nr)
{
    GuestMemoryTable *t = table_new(ranges, nr);

    if (!t) {
        return -EINVAL;
    }
    t = rcu_xchg_pointer(&gm->table, t);
    if (t) {
        call_rcu(&t->rcu, table_free_rcu);
    }
    return 0;
}

void *guest_memory_translate(GuestMemory *gm, uint64_t gpa, uint64_t len)
{
    GuestMemoryTable *t = rcu_dereference(gm->table);
    unsigned lo = 0, hi;

    if (!t || len == 0 || gpa + len - 1 < gpa) {
        return NULL;
    }
    /* Binary search for the last range starting at or below @gpa. */
    hi = t->nr;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;

        if (t->r[mid].gpa <= gpa) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo == 0) {
        return NULL;
    }
    const GuestMemoryRange *r = &t->r[lo - 1];
    uint64_t off = gpa - r->gpa;
    if (off >= r->size || len > r->size - off) {
        return NULL;
    }
    return (uint8_t *)r->hva + off;
}
