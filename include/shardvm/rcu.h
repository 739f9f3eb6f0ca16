/*
 * RCU on liburcu's memb flavour.  Every shardvm thread is registered for
 * its whole life (shardvm_thread_create() does it); readers use
 * rcu_read_lock()/rcu_read_unlock()/rcu_dereference(), writers
 * rcu_assign_pointer() + call_rcu()/synchronize_rcu(); deferred frees run
 * on liburcu's call_rcu thread (named "call_rcu").
 */
#ifndef SHARDVM_RCU_H
#define SHARDVM_RCU_H

#ifndef RCU_MEMB
#define RCU_MEMB
#endif
#include <urcu.h>
#include <urcu/rculist.h>

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * shardvm_rcu_init: name liburcu's default call_rcu thread "call_rcu" and
 * register the calling thread.  Idempotent.  Main thread, at start-up.
 */
void shardvm_rcu_init(void);

/*
 * shardvm_rcu_drain: wait until every call_rcu() callback queued before
 * this call has run.  Any registered thread outside a read-side section.
 */
void shardvm_rcu_drain(void);

/*
 * RcuArray: an immutable array published through one pointer.  Writers
 * build a new array, fill it, publish it with rcu_array_publish(); readers
 * rcu_read_lock(), p = rcu_array_get(&slot), read, rcu_read_unlock().
 */
typedef struct RcuArray {
    struct rcu_head rcu;
    void (*elem_destroy)(void *elem); /* run on each element when freed */
    size_t len;
    size_t elem_size;
    _Alignas(16) unsigned char data[];
} RcuArray;

/* rcu_array_new: an unpublished array of @len zeroed elements. */
RcuArray *rcu_array_new(size_t len, size_t elem_size,
                        void (*elem_destroy)(void *elem));

/* rcu_array_at: element @i (no bounds check beyond an assertion). */
static inline void *rcu_array_at(RcuArray *a, size_t i)
{
    return a->data + i * a->elem_size;
}

/* rcu_array_get: the published array (read side, or writer's own). */
#define rcu_array_get(slot) rcu_dereference(*(slot))

/*
 * rcu_array_publish: make @a visible at *@slot and free the previous
 * array after a grace period (call_rcu).  Writers must be serialised by
 * the caller.  Any registered thread.
 */
void rcu_array_publish(RcuArray **slot, RcuArray *a);

/* rcu_array_free_now: free an array that was never published. */
void rcu_array_free_now(RcuArray *a);

#ifdef __cplusplus
}
#endif

#endif
