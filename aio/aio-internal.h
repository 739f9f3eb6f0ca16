/*
 * AioContext internals shared by the files of aio/.  Not a public API.
 */
#ifndef SHARDVM_AIO_INTERNAL_H
#define SHARDVM_AIO_INTERNAL_H

#include "shardvm/aio.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <urcu/list.h>

struct ThreadPool;

/* AioBH.flags bits. */
enum {
    BH_PENDING = 1 << 0,   /* on ctx->bh_list (set by the inserter only) */
    BH_SCHEDULED = 1 << 1, /* should run on the next pass */
    BH_ONESHOT = 1 << 2,   /* free after running */
    BH_DELETED = 1 << 3,   /* free on the next pass, do not run */
    BH_IDLE = 1 << 4,      /* runs when idle, not counted as progress */
};

struct AioBH {
    AioContext *ctx;
    AioBHFunc *cb;
    void *opaque;
    /* Next on ctx->bh_list or on a BHSlice; written by the inserter before
     * the release CAS that publishes it, read by the home thread. */
    struct AioBH *next;
    atomic_uint flags; /* BH_* bits; any thread (atomic RMW) */
};

/* A batch of BHs taken off ctx->bh_list by one aio_bh_poll(), FIFO order. */
typedef struct BHSlice {
    AioBH *head;
    struct cds_list_head link; /* on ctx->bh_slices; home thread only */
} BHSlice;

typedef struct AioHandler {
    int fd;
    AioFdFunc *io_read;
    AioFdFunc *io_write;
    AioPollFunc *io_poll;
    AioFdFunc *io_poll_ready;
    AioPollNotifyFunc *poll_notify;
    void *opaque;
    bool deleted;       /* removed; freed when nobody walks the list */
    bool polling;       /* poll_notify(true) was called; home thread */
    uint32_t events;    /* EPOLLIN/EPOLLOUT registered with epoll */
    /* ctx->handlers; inserted with cds_list_add_rcu under list_lock,
     * unlinked only when ctx->walkers == 0 */
    struct cds_list_head link;
} AioHandler;

struct AioContext {
    atomic_int refcnt;

    /* Home thread: the only one that polls.  Written by
     * aio_context_set_home_thread() before that thread polls. */
    _Atomic pthread_t home;

    int epollfd;
    EventNotifier notifier; /* aio_notify() target */

    /*
     * notify_me: raised (by the home thread, +1 per nesting level) before
     * the poller may block; aio_notify() writes the eventfd only when it
     * is non-zero.  notified: set by aio_notify(), cleared by the poller
     * in aio_notify_accept().  See DESIGN.md section 2.
     */
    atomic_uint notify_me;
    atomic_bool notified;

    /* Lock-free LIFO of pending BHs; BH_LIST_CLOSED once closed. */
    _Atomic(AioBH *) bh_list;
    /* BHSlices being run by (possibly nested) aio_bh_poll(); home thread. */
    struct cds_list_head bh_slices;
    /* BHs created with aio_bh_new() and not yet freed; leak check. */
    atomic_int bh_count;

    /*
     * fd handlers.  list_lock serialises writers; walkers (the home thread
     * while polling and dispatching) count themselves in `walkers` under
     * list_lock and walk with the RCU list primitives without the lock.
     * A removed handler is marked deleted and unlinked and freed by the
     * last walker.
     */
    pthread_mutex_t list_lock;
    struct cds_list_head handlers; /* AioHandler.link */
    int walkers;                   /* list_lock */
    int deleted_handlers;          /* list_lock */
    atomic_int poll_handlers;      /* handlers with io_poll; list_lock writes */

    /* Adaptive polling parameters; any thread writes, home thread reads. */
    _Atomic int64_t poll_max_ns;
    _Atomic int64_t poll_grow;
    _Atomic int64_t poll_shrink;
    _Atomic int64_t poll_ns; /* current poll time; home thread writes */
    _Atomic int64_t aio_max_batch;

    /* Consecutive passes that skipped epoll because work was ready. */
    unsigned fd_skips; /* home thread */

    /* Timers: binary min-heap on expire time; home thread only. */
    AioTimer **timers;
    size_t ntimers, timers_cap;

    /* The context's worker pool, created on first use (aio/thread-pool.c). */
    _Atomic(struct ThreadPool *) thread_pool;
};

#define BH_LIST_CLOSED ((AioBH *)(uintptr_t)1)

/* async.c */
bool aio_bh_poll(AioContext *ctx);
/* Earliest BH deadline: 0 if a non-idle BH is ready, 10 ms if only idle
 * BHs are, -1 if none.  Home thread. */
int64_t aio_bh_timeout_ns(AioContext *ctx);
void aio_notify_accept(AioContext *ctx);

/* timer.c */
int64_t aio_timers_deadline_ns(AioContext *ctx); /* -1: none */
bool aio_timers_run(AioContext *ctx);
void aio_timers_destroy(AioContext *ctx);

/* aio-posix.c */
bool aio_dispatch_ready(AioContext *ctx, int64_t timeout_ns);
void aio_handlers_destroy(AioContext *ctx);
int64_t aio_compute_timeout_ns(AioContext *ctx);

/* thread-pool.c: frees the context's pool at context finalisation. */
void thread_pool_free(struct ThreadPool *pool);

static inline void aio_assert_home(AioContext *ctx)
{
    if (!aio_context_in_home_thread(ctx)) {
        g_error("AioContext %p polled outside its home thread", (void *)ctx);
    }
}

#endif
