/*
 * AioContext life cycle, bottom halves and aio_notify().
 *
 * Bottom halves are scheduled lock-free: the scheduler ORs BH_PENDING into
 * the BH's flags, and only the caller that set it pushes the BH on
 * ctx->bh_list (a Treiber stack).  The home thread takes the whole stack
 * with one exchange, reverses it (so BHs scheduled by one thread run in the
 * order they were scheduled) and runs it as a "slice".  A BH leaves
 * BH_PENDING when it is taken off its slice, before its callback runs, so
 * a BH that reschedules itself lands on ctx->bh_list again and runs on the
 * next pass, never in a loop inside this one.
 */
#include "aio-internal.h"
#include "shardvm/error.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

/* The context whose home thread the calling thread is. */
static __thread AioContext *current_ctx;
/* Its address identifies the calling thread: cheaper than pthread_self()
 * on the BH fast path.  Unique among live threads. */
static __thread char home_token;

/* ------------------------------------------------------------------ */
/* Life cycle                                                           */

AioContext *aio_context_new(GError **errp)
{
    AioContext *ctx = g_new0(AioContext, 1);
    int r;

    atomic_init(&ctx->refcnt, 1);
    ctx->epollfd = -1;
    ctx->notifier.fd = -1;
    ctx->home_notifier.fd = -1;
    pthread_mutex_init(&ctx->bh_lock, NULL);
    pthread_mutex_init(&ctx->list_lock, NULL);
    /*
     * Busy polling is off until the owner turns it on, as in QEMU, where
     * IOThreads set 32768 ns.  It buys latency (a ping-pong hop 1.1 us
     * instead of 5.4 us here) but costs throughput when the producer is on
     * another core: the consumer takes each item the moment it lands, so
     * batches shrink to one and every item pays the cache-line transfers
     * (docs/bench/eventloop.md).
     */
    atomic_init(&ctx->poll_max_ns, 0);
    atomic_init(&ctx->poll_grow, 0);
    atomic_init(&ctx->poll_shrink, 0);
    atomic_init(&ctx->poll_ns, 0);
    atomic_init(&ctx->aio_max_batch, 0);
    atomic_init(&ctx->home, (void *)&home_token);

    r = event_notifier_init(&ctx->notifier, false);
    if (r < 0) {
        shardvm_error_set(errp, r, "cannot create an eventfd: %s",
                          g_strerror(-r));
        goto fail;
    }
    r = aio_handlers_init(ctx);
    if (r < 0) {
        shardvm_error_set(errp, r, "cannot create an epoll instance: %s",
                          g_strerror(-r));
        goto fail;
    }
    /* The caller is the home thread, but its current context (say, the
     * main loop's) stays what it was: only aio_context_set_home_thread()
     * changes it. */
    return ctx;

fail:
    event_notifier_cleanup(&ctx->notifier);
    pthread_mutex_destroy(&ctx->bh_lock);
    pthread_mutex_destroy(&ctx->list_lock);
    g_free(ctx);
    return NULL;
}

void aio_context_ref(AioContext *ctx)
{
    atomic_fetch_add_explicit(&ctx->refcnt, 1, memory_order_relaxed);
}

static void bh_close_and_run(AioContext *ctx);
static void bh_free(AioBH *bh);

/* Free the BHs deleted after the close (see aio_bh_delete()); abort on a
 * BH that was never deleted. */
static void bh_free_parked(AioContext *ctx)
{
    AioBH *bh = ctx->all_bhs;

    while (bh) {
        AioBH *next = bh->all_next;

        if (!(atomic_load(&bh->flags) & BH_DELETED)) {
            g_error("AioContext %p freed with a live BH (callback %p)",
                    (void *)ctx, (void *)bh->cb);
        }
        bh_free(bh);
        bh = next;
    }
}

static void aio_context_finalize(AioContext *ctx)
{
    struct ThreadPool *pool;

    /*
     * Workers may still complete jobs, and completions are BHs: join them
     * while the context still accepts BHs, then close, which runs every
     * scheduled BH (pending one-shots included).  The pool pointer becomes
     * POOL_DEAD first, so a done callback run now cannot start a second
     * pool on the dying context (thread_pool_submit() refuses).
     */
    pool = atomic_exchange(&ctx->thread_pool, POOL_DEAD);
    if (pool) {
        thread_pool_free(pool);
    }
    bh_close_and_run(ctx);

    if (atomic_load(&ctx->live_timers) != 0) {
        g_error("AioContext %p freed with %d timer(s) alive", (void *)ctx,
                atomic_load(&ctx->live_timers));
    }
    if (atomic_load(&ctx->live_handlers) != 0) {
        g_error("AioContext %p freed with %d fd handler(s) registered",
                (void *)ctx, atomic_load(&ctx->live_handlers));
    }
    bh_free_parked(ctx);
    bh_recycle_destroy(ctx);
    aio_timers_destroy(ctx);
    aio_handlers_destroy(ctx);
    event_notifier_cleanup(&ctx->notifier);
    event_notifier_cleanup(&ctx->home_notifier);
    pthread_mutex_destroy(&ctx->bh_lock);
    pthread_mutex_destroy(&ctx->list_lock);
    if (current_ctx == ctx) {
        current_ctx = NULL;
    }
    g_free(ctx);
}

void aio_context_unref(AioContext *ctx)
{
    if (atomic_fetch_sub_explicit(&ctx->refcnt, 1, memory_order_acq_rel) == 1) {
        aio_context_finalize(ctx);
    }
}

void aio_context_set_home_thread(AioContext *ctx)
{
    atomic_store(&ctx->home, (void *)&home_token);
    current_ctx = ctx;
}

bool aio_context_in_home_thread_strict(AioContext *ctx)
{
    return atomic_load_explicit(&ctx->home, memory_order_relaxed) == &home_token;
}

bool aio_context_in_home_thread(AioContext *ctx)
{
    if (aio_context_in_home_thread_strict(ctx)) {
        return true;
    }
    AioHomeLockHeldFunc *held = atomic_load_explicit(&ctx->home_lock_held,
                                                     memory_order_acquire);
    return held && held();
}

int aio_context_set_home_lock(AioContext *ctx, AioHomeLockHeldFunc *held)
{
    if (held && ctx->home_notifier.fd < 0) {
        int r = event_notifier_init(&ctx->home_notifier, false);
        if (r < 0) {
            return r;
        }
    }
    atomic_store_explicit(&ctx->home_lock_held, held, memory_order_release);
    return 0;
}

void aio_wake_home_after_lock_holder(AioContext *ctx)
{
    /*
     * The lock holder's pass and the home thread's prepare/check all run
     * under the lock, so bit 0 is exact here: set means the home thread
     * prepared a timeout and sleeps (or is about to) on it.
     */
    if (ctx->home_notifier.fd >= 0 && !aio_context_in_home_thread_strict(ctx) &&
        (atomic_load(&ctx->notify_me) & 1)) {
        event_notifier_set(&ctx->home_notifier);
    }
}

AioContext *aio_get_current_context(void)
{
    return current_ctx;
}

/* ------------------------------------------------------------------ */
/* Notification                                                         */

void aio_notify(AioContext *ctx)
{
    /*
     * Dekker pair with aio_poll()/the GSource prepare: they store
     * notify_me and then load notified (both seq_cst); we store notified
     * and then load notify_me (both seq_cst).  At least one side sees the
     * other's store: either the poller sees notified and does not block,
     * or we see notify_me and write the eventfd.  The store of notified
     * also publishes whatever the caller did before (a BH insertion) to
     * the poller's aio_notify_accept().
     *
     * Coalescing: only the notifier that turns notified from false to true
     * may need to write the eventfd.  One that finds it already true knows
     * the poller has not accepted yet (its accept would have cleared it),
     * so the poller will see this caller's work too; libuv's uv_async_send
     * coalesces the same way.
     */
    if (atomic_load(&ctx->notified) || atomic_exchange(&ctx->notified, true)) {
        /*
         * Already set: the first notifier does the wake-up for both of us.
         * The peek is seq_cst, as are the BH insertion CAS before it and the
         * poller's accept and bh_list loads: reading true means the
         * poller's accept (the only thing that clears it) comes after our
         * insertion in the single total order, so it will see our BH.  On
         * x86 the peek is a plain load, so a producer that finds a busy
         * consumer does not even take the cache line exclusively.
         */
        return;
    }
    if (atomic_load(&ctx->notify_me)) {
        event_notifier_set(&ctx->notifier);
    }
}

void aio_notify_accept(AioContext *ctx)
{
    /*
     * The exchange reads the value stored by aio_notify(), so what the
     * notifier did before it (inserting a BH) is visible to the loads of
     * bh_list that follow.  If it reads false, any later aio_notify() is
     * left set for the next pass and makes that pass non-blocking.
     */
    if (atomic_load_explicit(&ctx->notified, memory_order_relaxed)) {
        atomic_exchange(&ctx->notified, false);
    }
}

/* ------------------------------------------------------------------ */
/* Polling parameters                                                   */

int aio_context_set_poll_params(AioContext *ctx, int64_t max_ns,
                                int64_t grow, int64_t shrink)
{
    if (max_ns < 0 || grow < 0 || shrink < 0) {
        return -EINVAL;
    }
    atomic_store(&ctx->poll_grow, grow);
    atomic_store(&ctx->poll_shrink, shrink);
    atomic_store(&ctx->poll_max_ns, max_ns);
    /* The home thread clamps poll_ns to the new maximum on its next pass;
     * wake it so a shrink takes effect now. */
    aio_notify(ctx);
    return 0;
}

int64_t aio_context_get_poll_ns(AioContext *ctx)
{
    return atomic_load(&ctx->poll_ns);
}

int aio_context_set_aio_max_batch(AioContext *ctx, int64_t max_batch)
{
    if (max_batch < 0) {
        return -EINVAL;
    }
    atomic_store(&ctx->aio_max_batch, max_batch);
    return 0;
}

int64_t aio_context_get_aio_max_batch(AioContext *ctx)
{
    return atomic_load(&ctx->aio_max_batch);
}

/* ------------------------------------------------------------------ */
/* Bottom halves                                                        */

static AioBH *bh_alloc(AioContext *ctx, AioBHFunc *cb, void *opaque,
                       unsigned flags)
{
    AioBH *bh = (flags & BH_ONESHOT) ? bh_recycle_alloc(ctx) : NULL;

    if (!bh) {
        bh = g_new(AioBH, 1);
    }

    bh->ctx = ctx;
    bh->cb = cb;
    bh->opaque = opaque;
    atomic_init(&bh->next, NULL);
    atomic_init(&bh->flags, flags);
    bh->all_prev = bh->all_next = NULL;
    return bh;
}

AioBH *aio_bh_new_internal(AioContext *ctx, AioBHFunc *cb, void *opaque)
{
    AioBH *bh = bh_alloc(ctx, cb, opaque, 0);

    pthread_mutex_lock(&ctx->bh_lock);
    bh->all_next = ctx->all_bhs;
    if (ctx->all_bhs) {
        ctx->all_bhs->all_prev = bh;
    }
    ctx->all_bhs = bh;
    pthread_mutex_unlock(&ctx->bh_lock);
    return bh;
}

AioBH *aio_bh_new(AioContext *ctx, AioBHFunc *cb, void *opaque)
{
    return aio_bh_new_internal(ctx, cb, opaque);
}

static void bh_free(AioBH *bh)
{
    AioContext *ctx = bh->ctx;

    if (atomic_load_explicit(&bh->flags, memory_order_relaxed) & BH_ONESHOT) {
        g_free(bh);
        return;
    }
    pthread_mutex_lock(&ctx->bh_lock);
    if (bh->all_prev) {
        bh->all_prev->all_next = bh->all_next;
    } else {
        ctx->all_bhs = bh->all_next;
    }
    if (bh->all_next) {
        bh->all_next->all_prev = bh->all_prev;
    }
    pthread_mutex_unlock(&ctx->bh_lock);
    g_free(bh);
}

/*
 * Push @bh (already marked BH_PENDING by the caller) on the context's
 * list and wake the poller.  Returns 0, or -ESHUTDOWN when the context is
 * closed: then @bh is not queued; a one-shot is freed (nobody else knows
 * it); a deleted BH is parked until the finalisation frees it, so that a
 * scheduler racing with the delete never touches freed memory.
 */
static int bh_push(AioBH *bh, unsigned flags)
{
    AioContext *ctx = bh->ctx;
    AioBH *head = atomic_load_explicit(&ctx->bh_list, memory_order_relaxed);

    do {
        if (head == BH_LIST_CLOSED) {
            if (flags & BH_ONESHOT) {
                bh_free(bh);
            } else if (!(flags & BH_DELETED)) {
                /*
                 * Give up our PENDING.  A delete that came meanwhile saw
                 * PENDING and left the BH to us: it stays parked as
                 * deleted (the flags keep BH_DELETED).  Schedulers that
                 * saw our PENDING were refused in bh_enqueue().
                 */
                atomic_fetch_and(&bh->flags,
                                 ~(unsigned)(BH_PENDING | BH_SCHEDULED | BH_IDLE));
            }
            return -ESHUTDOWN;
        }
        atomic_store_explicit(&bh->next, head, memory_order_relaxed);
        /* seq_cst (release would publish the BH): see aio_notify(). */
    } while (!atomic_compare_exchange_weak_explicit(&ctx->bh_list, &head, bh,
                                                    memory_order_seq_cst,
                                                    memory_order_relaxed));
    /*
     * The home thread scheduling into its own context is not asleep: its
     * next pass finds the BH when it computes the timeout.  Everyone else
     * must wake it.
     */
    if (!aio_context_in_home_thread_strict(ctx)) {
        aio_notify(ctx);
    }
    return 0;
}

/*
 * Set @new_flags (plus BH_PENDING) and, if we are the one who set
 * BH_PENDING, push @bh.  Returns 0 or -ESHUTDOWN (see bh_push()).
 */
static int bh_enqueue(AioBH *bh, unsigned new_flags)
{
    unsigned old = atomic_fetch_or(&bh->flags, BH_PENDING | new_flags);

    if (old & BH_PENDING) {
        AioContext *ctx = bh->ctx;

        /*
         * Someone else holds PENDING.  On a closed context that is either
         * a push about to be refused or a BH the close is running: either
         * way this call schedules nothing (seq_cst load after the RMW: a
         * close before our RMW is seen).
         */
        if (atomic_load(&ctx->bh_list) == BH_LIST_CLOSED) {
            return -ESHUTDOWN;
        }
        /*
         * Already queued (or in a slice not yet reached): it will see the
         * new flags when it is taken off.  If it was queued but not
         * scheduled (cancelled), the poller may have decided to sleep
         * without it: wake it.  Pairs with the seq_cst flag loads in
         * aio_bh_timeout_ns(), as bh_push() pairs with the list loads.
         */
        if ((new_flags & BH_SCHEDULED) && !(old & BH_SCHEDULED) &&
            !aio_context_in_home_thread_strict(ctx)) {
            aio_notify(ctx);
        }
        return 0;
    }
    return bh_push(bh, old | new_flags);
}

int aio_bh_schedule(AioBH *bh)
{
    return bh_enqueue(bh, BH_SCHEDULED);
}

int aio_bh_schedule_idle(AioBH *bh)
{
    return bh_enqueue(bh, BH_SCHEDULED | BH_IDLE);
}

void aio_bh_cancel(AioBH *bh)
{
    atomic_fetch_and(&bh->flags, ~(unsigned)(BH_SCHEDULED | BH_IDLE));
}

void aio_bh_delete(AioBH *bh)
{
    /* The home thread frees it when it takes it off the list: that is the
     * only point where nobody else can be looking at it.  Once the context
     * is closed, bh_push() parks it and the finalisation frees it. */
    bh_enqueue(bh, BH_DELETED);
}

int aio_bh_schedule_oneshot(AioContext *ctx, AioBHFunc *cb, void *opaque)
{
    /* Nobody else can see a new one-shot: no RMW needed for its flags. */
    unsigned flags = BH_ONESHOT | BH_PENDING | BH_SCHEDULED;

    return bh_push(bh_alloc(ctx, cb, opaque, flags), flags);
}

/* Take the first BH of @s; its PENDING bit is cleared before it runs. */
static AioBH *bh_dequeue(BHSlice *s, unsigned *flags)
{
    AioBH *bh = s->head;

    if (!bh) {
        return NULL;
    }
    /* Read next before clearing PENDING: after that, another thread may
     * push the BH again and overwrite it. */
    s->head = atomic_load_explicit(&bh->next, memory_order_relaxed);
    *flags = atomic_load_explicit(&bh->flags, memory_order_relaxed);
    if (!(*flags & BH_ONESHOT)) {
        /* One-shots are private to their slice (nobody holds a handle to
         * them); others may be rescheduled by any thread. */
        *flags = atomic_fetch_and(&bh->flags,
                                  ~(unsigned)(BH_PENDING | BH_SCHEDULED | BH_IDLE));
    }
    return bh;
}

/*
 * Run every slice of the context, oldest first.  Nested aio_poll() calls
 * from a BH continue the outer slices here, so no BH waits behind a nested
 * loop.  Returns true if a non-idle BH ran.
 */
static bool bh_run_slices(AioContext *ctx)
{
    bool progress = false;
    BHSlice *s;

    while ((s = ctx->bh_slices)) {
        unsigned flags;
        AioBH *bh = bh_dequeue(s, &flags);

        if (!bh) {
            ctx->bh_slices = s->next;
            continue;
        }
        if ((flags & (BH_SCHEDULED | BH_DELETED)) == BH_SCHEDULED) {
            if (!(flags & BH_IDLE)) {
                progress = true;
            }
            bh->cb(bh->opaque);
        }
        if (flags & BH_ONESHOT) {
            bh_recycle_put(ctx, bh);
        } else if (flags & BH_DELETED) {
            bh_free(bh);
        }
    }
    bh_recycle_flush(ctx);
    return progress;
}

/* Reverse the LIFO @list into FIFO order and append it as slice @s. */
static void bh_add_slice(AioContext *ctx, BHSlice *s, AioBH *list)
{
    AioBH *fifo = NULL;
    BHSlice **tail;

    while (list) {
        AioBH *next = atomic_load_explicit(&list->next, memory_order_relaxed);
        atomic_store_explicit(&list->next, fifo, memory_order_relaxed);
        fifo = list;
        list = next;
    }
    s->head = fifo;
    s->next = NULL;
    for (tail = &ctx->bh_slices; *tail; tail = &(*tail)->next) {
    }
    *tail = s;
}

bool aio_bh_poll(AioContext *ctx)
{
    AioBH *list = atomic_load(&ctx->bh_list); /* seq_cst: see aio_notify() */
    BHSlice slice;

    /* Only the home thread empties or closes the list, so a non-empty,
     * open list stays non-empty and open until our exchange. */
    if (list && list != BH_LIST_CLOSED) {
        list = atomic_exchange_explicit(&ctx->bh_list, NULL,
                                        memory_order_acquire);
        bh_add_slice(ctx, &slice, list);
    } else if (!ctx->bh_slices) {
        return false;
    }
    return bh_run_slices(ctx);
}

/* Close the list and run everything that was on it.  Idempotent. */
static void bh_close_and_run(AioContext *ctx)
{
    AioBH *list = atomic_exchange_explicit(&ctx->bh_list, BH_LIST_CLOSED,
                                           memory_order_acquire);
    BHSlice slice;

    if (list == BH_LIST_CLOSED) {
        return;
    }
    bh_add_slice(ctx, &slice, list);
    bh_run_slices(ctx);
}

void aio_context_close(AioContext *ctx)
{
    aio_assert_home(ctx);
    bh_close_and_run(ctx);
}

int64_t aio_bh_timeout_ns(AioContext *ctx)
{
    AioBH *bh;
    int64_t timeout = -1;

    /*
     * Slices of outer passes (we are nested in one of their BHs): their
     * rest runs on this pass, so never sleep over it.  Whatever their
     * flags say: a BH there may be scheduled again by another thread
     * without a wake-up (its PENDING is still set).
     */
    for (BHSlice *s = ctx->bh_slices; s; s = s->next) {
        if (s->head) {
            return 0;
        }
    }
    bh = atomic_load(&ctx->bh_list); /* seq_cst: see aio_notify() */
    if (bh == BH_LIST_CLOSED) {
        return -1;
    }
    /* Nodes behind the head never change until the home thread (us)
     * takes the list. */
    for (; bh; bh = atomic_load_explicit(&bh->next, memory_order_relaxed)) {
        /* seq_cst: pairs with a reschedule of a cancelled BH, which only
         * sets the flag (see bh_enqueue()). */
        unsigned flags = atomic_load(&bh->flags);

        if ((flags & (BH_SCHEDULED | BH_DELETED)) == BH_SCHEDULED) {
            if (!(flags & BH_IDLE)) {
                return 0;
            }
            timeout = 10 * 1000 * 1000; /* idle BHs: within 10 ms */
        } else if (flags & BH_DELETED) {
            /* A deleted BH must be freed soon, but not at once. */
            if (timeout < 0) {
                timeout = 10 * 1000 * 1000;
            }
        }
    }
    return timeout;
}
