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

#include <assert.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * ThreadSanitizer cannot see liburcu's synchronisation: the pointer
 * publication is a volatile store behind an asm fence, and grace periods
 * are detected inside the (uninstrumented) library with membarrier.  In a
 * TSan build the macros below express the same guarantees in terms TSan
 * understands, so that real races stay visible instead of being drowned
 * in (or suppressed with) false ones:
 *  - rcu_dereference / rcu_assign_pointer / rcu_xchg_pointer become
 *    acquire loads, release stores and acq_rel exchanges;
 *  - rcu_read_unlock() releases a process-wide sync object that
 *    synchronize_rcu() (after the grace period) and every call_rcu()
 *    callback (before it runs) acquire: "every reader that was inside a
 *    critical section before the grace period has finished with it";
 *  - a call_rcu() callback releases a second sync object that
 *    shardvm_rcu_drain() acquires after rcu_barrier().
 * Other builds use liburcu's own (cheaper) primitives unchanged.
 */
#if defined(__SANITIZE_THREAD__)
#define SHARDVM_RCU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SHARDVM_RCU_TSAN 1
#endif
#endif

#ifdef SHARDVM_RCU_TSAN
#include <sanitizer/tsan_interface.h>

extern char shardvm_rcu_tsan_gp;    /* readers -> grace period */

static inline void shardvm_rcu_tsan_read_unlock(void)
{
    __tsan_release(&shardvm_rcu_tsan_gp);
    urcu_memb_read_unlock();
}

static inline void shardvm_rcu_tsan_synchronize(void)
{
    urcu_memb_synchronize_rcu();
    __tsan_acquire(&shardvm_rcu_tsan_gp);
}

/* call_rcu() through a trampoline that performs the acquire/release. */
void shardvm_rcu_tsan_call_rcu(struct rcu_head *head,
                               void (*func)(struct rcu_head *head));

#undef rcu_dereference
#define rcu_dereference(p) __atomic_load_n(&(p), __ATOMIC_ACQUIRE)
#undef rcu_assign_pointer
#define rcu_assign_pointer(p, v) __atomic_store_n(&(p), (v), __ATOMIC_RELEASE)
#undef rcu_set_pointer
#define rcu_set_pointer(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#undef rcu_xchg_pointer
#define rcu_xchg_pointer(p, v) __atomic_exchange_n((p), (v), __ATOMIC_ACQ_REL)
#undef rcu_read_unlock
#define rcu_read_unlock shardvm_rcu_tsan_read_unlock
#undef synchronize_rcu
#define synchronize_rcu shardvm_rcu_tsan_synchronize
#undef call_rcu
#define call_rcu shardvm_rcu_tsan_call_rcu
#endif

/*
 * shardvm_rcu_init: create liburcu's default call_rcu thread (with every
 * signal blocked, so process-directed signals never land there), name it
 * "call_rcu", and register the calling thread.  Idempotent, also per
 * thread: a second call from an already registered thread does nothing.
 * Any thread, normally the main thread at start-up.
 */
void shardvm_rcu_init(void);

/*
 * shardvm_rcu_register_thread / shardvm_rcu_unregister_thread: register
 * the calling thread (one not created with shardvm_thread_create(), e.g.
 * a test's std::thread) for read-side sections.  Registering twice is a
 * no-op; unregister outside any read-side section.  The calling thread.
 */
void shardvm_rcu_register_thread(void);
void shardvm_rcu_unregister_thread(void);

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
#ifdef __cplusplus
    alignas(16) unsigned char data[]; /* C++ test code includes this too */
#else
    _Alignas(16) unsigned char data[];
#endif
} RcuArray;

/*
 * rcu_array_new: an unpublished array of @len zeroed elements of
 * @elem_size bytes (each 16-byte aligned when @elem_size is a multiple of
 * 16).  @elem_destroy (may be NULL) runs on each element when the array
 * is freed.  The caller owns it until it publishes it.  Any thread.
 */
RcuArray *rcu_array_new(size_t len, size_t elem_size,
                        void (*elem_destroy)(void *elem));

/* rcu_array_at: element @i (bounds checked with an assertion). */
static inline void *rcu_array_at(RcuArray *a, size_t i)
{
    assert(i < a->len);
    return a->data + i * a->elem_size;
}

/* rcu_array_get: the published array (read side, or writer's own). */
#define rcu_array_get(slot) rcu_dereference(*(slot))

/*
 * rcu_array_publish: make @a visible at *@slot and free the previous
 * array after a grace period (call_rcu): its elem_destroy runs on each
 * element, on the call_rcu thread.  @a may be NULL (unpublish).  The slot
 * owns the published array.  Writers must be serialised by the caller.
 * Any registered thread, outside a read-side section or inside one.
 */
void rcu_array_publish(RcuArray **slot, RcuArray *a);

/* rcu_array_free_now: free an array that was never published (runs
 * elem_destroy on each element).  NULL is ignored.  Any thread. */
void rcu_array_free_now(RcuArray *a);

#ifdef __cplusplus
}
#endif

#endif
