/*
 * AioContext internals shared by the files of aio/.  Not a public API.
 */
#ifndef SHARDVM_AIO_INTERNAL_H
#define SHARDVM_AIO_INTERNAL_H

#include "shardvm/aio.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/epoll.h>

struct ThreadPool;

/* AioBH.flags bits. */
enum {
    BH_PENDING = 1 << 0,   /* on ctx->bh_list or a slice (set by the inserter) */
    BH_SCHEDULED = 1 << 1, /* should run on the next pass */
    BH_ONESHOT = 1 << 2,   /* free after running */
    BH_DELETED = 1 << 3,   /* free on the next pass, do not run */
    BH_IDLE = 1 << 4,      /* runs when idle, not counted as progress */
};

struct AioBH {
    AioContext *ctx;
    AioBHFunc *cb;
    void *opaque;
    /*
     * Next on ctx->bh_list or in a BHSlice.  Written by the inserting
     * thread before the release CAS that publishes the BH, read by the
     * home thread after its acquire exchange of the list.  Atomic (relaxed)
     * only so that TSan sees the hand-over through the list head.
     */
    _Atomic(struct AioBH *) next;
    atomic_uint flags; /* BH_* bits; any thread (atomic RMW) */
    /* ctx->all_bhs, for the leak report; ctx->bh_lock.  Not for one-shots. */
    struct AioBH *all_prev, *all_next;
};

/* A batch of BHs taken off ctx->bh_list by one aio_bh_poll(), FIFO order.
 * Lives on the stack of the aio_bh_poll() that took it; home thread only. */
typedef struct BHSlice {
    AioBH *head;
    struct BHSlice *next;
} BHSlice;

enum { PN_OFF, PN_ON, PN_SYNC };

typedef struct AioHandler {
    int fd;
    AioFdFunc *io_read;
    AioFdFunc *io_write;
    AioPollFunc *io_poll;
    AioFdFunc *io_poll_ready;
    _Atomic(AioPollNotifyFunc *) poll_notify; /* any thread sets; home reads */
    void *opaque;
    /* Set under list_lock when removed or replaced; read by the walker. */
    atomic_bool deleted;
    /*
     * What poll_notify last told this handler: PN_OFF (nothing yet, or
     * "ended"), PN_ON ("started"), PN_SYNC (replaced another handler: tell
     * it the current state at the next walk).  Set before publication,
     * then home thread only.
     */
    uint8_t notify_state;
    bool poll_ready; /* io_poll() saw work, dispatch pending; home thread */
    /* Events an epoll wait returned for this handler and nobody has
     * dispatched yet (a nested pass may take them); home thread. */
    uint32_t revents;
    bool is_notifier; /* callbacks take the EventNotifier, see below */
    EventNotifierHandler *en_read, *en_poll_ready;
    uint32_t events; /* EPOLLIN/EPOLLOUT registered with epoll */
    /*
     * Singly linked list from ctx->handlers.  Writers insert at the head
     * under list_lock with a release store; the home thread walks it with
     * acquire loads and no lock.  A node is unlinked and freed only by the
     * home thread, under list_lock, while it is not walking the list
     * (ctx->walk_depth == 0); other threads only mark it deleted.
     */
    _Atomic(struct AioHandler *) next;
} AioHandler;

struct AioContext {
    atomic_int refcnt;

    /* Home thread (the address of a per-thread token, see async.c): the
     * only one that polls.  Written by aio_context_set_home_thread()
     * before that thread polls. */
    _Atomic(void *) home;
    /* A lock whose holder may act as the home thread (the BQL for the
     * main loop's context); NULL for none.  Set once, any thread. */
    _Atomic(AioHomeLockHeldFunc *) home_lock_held;

    int epollfd;
    EventNotifier notifier; /* aio_notify() target, in epoll as NULL data */
    /*
     * With a home lock only (fd -1 otherwise): set by a lock holder at the
     * end of its aio_poll() pass while the home thread sleeps in the
     * GSource poll (notify_me bit 0).  That pass may have consumed the
     * wake-up meant for the home thread (it reads the same eventfd) and
     * changed what the home thread sleeps on (a timer armed from the lock
     * holder lands in the heap during that pass): the home thread must
     * prepare again.  Watched by the GSource only, never by epoll, so a
     * lock holder that keeps polling does not spin on it.  Cleared in the
     * GSource check.
     */
    EventNotifier home_notifier;

    /*
     * notify_me: raised by the home thread before it may block: +2 per
     * aio_poll(blocking) nesting level, bit 0 by the GSource prepare.
     * aio_notify() writes the eventfd only when it is non-zero.
     * notified: set by aio_notify(), cleared by aio_notify_accept().
     * See DESIGN.md section 2 and the barrier comments in async.c.
     */
    atomic_uint notify_me;
    atomic_bool notified;

    /* Lock-free LIFO of pending BHs; BH_LIST_CLOSED once closed. */
    _Atomic(AioBH *) bh_list;
    /* BHSlices still being run by (possibly nested) aio_bh_poll(), oldest
     * first; home thread only. */
    BHSlice *bh_slices;
    /* One-shot blocks handed back for reuse (aio/bh-recycle.c): a stack
     * pushed by the home thread, taken whole by producers. */
    _Atomic(AioBH *) recycle;
    atomic_int recycle_n;                     /* about how many on it */
    AioBH *recycle_local, *recycle_local_tail; /* home thread's batch */
    int recycle_local_n;                      /* home thread */
    /* BHs made by aio_bh_new() (and timers' BHs) not yet freed. */
    pthread_mutex_t bh_lock;
    AioBH *all_bhs; /* bh_lock */

    /* fd handlers: see AioHandler.next. */
    pthread_mutex_t list_lock;
    _Atomic(AioHandler *) handlers;
    int walk_depth;               /* home thread: nesting of list walks */
    atomic_int deleted_handlers;  /* marked deleted, not yet unlinked */
    atomic_int poll_handlers; /* live handlers with io_poll; list_lock writes */
    atomic_int live_handlers; /* live handlers; list_lock writes */
    /* Live handlers without io_poll: while any exists the context does not
     * busy-poll (their fds are only seen by epoll, which busy-polling
     * would delay by a whole window).  list_lock writes. */
    atomic_int poll_disable_cnt;

    /* Adaptive polling parameters; any thread writes, home thread reads. */
    _Atomic int64_t poll_max_ns;
    _Atomic int64_t poll_grow;
    _Atomic int64_t poll_shrink;
    _Atomic int64_t poll_ns; /* current poll time; home thread writes */
    _Atomic int64_t aio_max_batch;
    bool poll_started; /* poll_notify(true) sent to handlers; home thread */
    /* A handler in PN_SYNC state may exist (replaced, or poll_notify set):
     * the home thread walks the handlers.  Any thread sets, home clears. */
    atomic_bool poll_resync;
    /* Handlers with poll_ready set, any pass (nested too); home thread. */
    int poll_ready_cnt;
    /* Consecutive passes that did not look at io_poll handlers because
     * work was ready; home thread. */
    unsigned poll_skips;
    /* epoll_pwait2() gave ENOSYS: use epoll_wait() from now on; home. */
    bool no_epoll_pwait2;

    /* Consecutive passes that skipped epoll because work was ready. */
    unsigned fd_skips; /* home thread */
    AioPollStats stats; /* counts for tests; home thread */

    /* Timers: binary min-heap on expire time; home thread only. */
    AioTimer **timers;
    size_t ntimers, timers_cap;
    atomic_int live_timers; /* aio_timer_new() minus aio_timer_free() */

    /* The context's worker pool, created on first use (aio/thread-pool.c). */
    _Atomic(struct ThreadPool *) thread_pool;
};

#define BH_LIST_CLOSED ((AioBH *)(uintptr_t)1)
/* ctx->thread_pool once the context is being finalised: no new pool. */
#define POOL_DEAD ((struct ThreadPool *)(uintptr_t)1)

/* async.c */
bool aio_bh_poll(AioContext *ctx);
/* Earliest BH deadline: 0 if a non-idle BH is ready, 10 ms if only idle
 * BHs are, -1 if none.  Home thread. */
int64_t aio_bh_timeout_ns(AioContext *ctx);
void aio_notify_accept(AioContext *ctx);
/* aio_bh_new() without the home-thread check, for timers. */
AioBH *aio_bh_new_internal(AioContext *ctx, AioBHFunc *cb, void *opaque);

/* bh-recycle.c */
/* A spare one-shot block for @ctx, or NULL (then allocate).  Any thread. */
AioBH *bh_recycle_alloc(AioContext *ctx);
/* Keep a one-shot block that ran.  Home thread. */
void bh_recycle_put(AioContext *ctx, AioBH *bh);
/* Hand the home thread's batch back to producers.  Home thread. */
void bh_recycle_flush(AioContext *ctx);
void bh_recycle_free_list(AioBH *bh);
/* Free every parked block.  Finalisation. */
void bh_recycle_destroy(AioContext *ctx);

/* timer.c */
int64_t aio_timers_deadline_ns(AioContext *ctx); /* -1: none */
bool aio_timers_run(AioContext *ctx);
void aio_timers_destroy(AioContext *ctx);

/* aio-posix.c */
int aio_handlers_init(AioContext *ctx);
void aio_handlers_destroy(AioContext *ctx);
/* Timeout for the next wait, in ns: 0 when work is ready, -1 forever. */
int64_t aio_compute_timeout_ns(AioContext *ctx);

/* thread-pool.c: frees the context's pool at context finalisation. */
void thread_pool_free(struct ThreadPool *pool);

/*
 * aio_context_in_home_thread_strict: the calling thread IS the home thread
 * (not merely the holder of the home lock).  Decisions that skip a wake-up
 * use this one: the real home thread may be asleep in epoll while a lock
 * holder works on the context, and must still be woken.
 */
bool aio_context_in_home_thread_strict(AioContext *ctx);

/*
 * aio_wake_home_after_lock_holder: end of an aio_poll() pass; from a lock
 * holder (not the home thread itself) whose home thread sleeps in the
 * GSource poll, wake it to prepare again (see home_notifier).
 */
void aio_wake_home_after_lock_holder(AioContext *ctx);

static inline void aio_assert_home(AioContext *ctx)
{
    if (!aio_context_in_home_thread(ctx)) {
        g_error("AioContext %p polled outside its home thread", (void *)ctx);
    }
}

#endif
