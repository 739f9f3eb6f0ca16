/*
 * RcuArray: an immutable array replaced as a whole and freed after a grace
 * period.  See include/shardvm/rcu.h.
 */
#include "shardvm/rcu.h"

#include <glib.h>

RcuArray *rcu_array_new(size_t len, size_t elem_size,
                        void (*elem_destroy)(void *elem))
{
    size_t bytes;

    /* A huge @len is a caller bug, not guest input: abort loudly. */
    if (!g_size_checked_mul(&bytes, len, elem_size) ||
        !g_size_checked_add(&bytes, bytes, sizeof(RcuArray))) {
        g_error("rcu_array_new: %zu x %zu bytes overflows", len, elem_size);
    }
    /* malloc's 16-byte alignment keeps data[] 16-byte aligned. */
    RcuArray *a = g_malloc0(bytes);
    a->len = len;
    a->elem_size = elem_size;
    a->elem_destroy = elem_destroy;
    return a;
}

void rcu_array_free_now(RcuArray *a)
{
    if (!a) {
        return;
    }
    if (a->elem_destroy) {
        for (size_t i = 0; i < a->len; i++) {
            a->elem_destroy(rcu_array_at(a, i));
        }
    }
    g_free(a);
}

/* call_rcu callback: no reader can still hold the array. */
static void rcu_array_reclaim(struct rcu_head *head)
{
    rcu_array_free_now(caa_container_of(head, RcuArray, rcu));
}

void rcu_array_publish(RcuArray **slot, RcuArray *a)
{
    /* The exchange orders the caller's writes to @a before its publication
     * (liburcu's rcu_xchg_pointer is a full barrier). */
    RcuArray *old = rcu_xchg_pointer(slot, a);

    if (old) {
        call_rcu(&old->rcu, rcu_array_reclaim);
    }
}
