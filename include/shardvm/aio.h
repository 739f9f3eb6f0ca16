/*
 * AioContext: shardvm's per-thread event loop.
 *
 * An AioContext multiplexes fd handlers (epoll), event notifiers (eventfd),
 * bottom halves (lock-free deferred callbacks) and timers (CLOCK_MONOTONIC,
 * ns deadlines), with adaptive busy-polling in front of the blocking wait.
 *
 * Threads: every context has exactly one *home thread*, the only thread that
 * may poll it (aio_poll(), the GSource adapter).  The home thread is the
 * creating thread until aio_context_set_home_thread() moves it.  Other
 * threads talk to a context through bottom halves (aio_bh_schedule*()),
 * aio_notify() and event notifiers, all of which are safe from any thread.
 */
#ifndef SHARDVM_AIO_H
#define SHARDVM_AIO_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct AioContext AioContext;
typedef struct AioBH AioBH;
typedef struct AioTimer AioTimer;

/* Callback of a bottom half, a timer or a "run in context" request. */
typedef void AioBHFunc(void *opaque);
typedef void AioTimerFunc(void *opaque);
/* fd handler: called when the fd is readable / writable. */
typedef void AioFdFunc(void *opaque);
/*
 * Busy-poll check: return true when there is work (the handler's
 * io_poll_ready is then called).  Must be cheap and free of side effects
 * that would lose the work if io_poll_ready is not called at once.
 */
typedef bool AioPollFunc(void *opaque);
/* Busy-poll phase begins (started=true) or ends (false) for this handler. */
typedef void AioPollNotifyFunc(void *opaque, bool started);

/* ------------------------------------------------------------------ */
/* Event notifiers (eventfd)                                            */

typedef struct EventNotifier {
    int fd; /* eventfd, EFD_NONBLOCK|EFD_CLOEXEC; -1 when cleaned up */
} EventNotifier;

typedef void EventNotifierHandler(EventNotifier *e);

/*
 * event_notifier_init: create the eventfd behind @e, set when @active.
 * Returns 0 or a negative errno.  Any thread.
 */
int event_notifier_init(EventNotifier *e, bool active);

/* event_notifier_cleanup: close the eventfd.  Idempotent.  Any thread. */
void event_notifier_cleanup(EventNotifier *e);

/*
 * event_notifier_set: make @e readable.  Returns 0 or a negative errno.
 * Any thread; async-signal-safe.
 */
int event_notifier_set(EventNotifier *e);

/*
 * event_notifier_test_and_clear: clear @e; true if it was set.  Any thread,
 * but normally the thread that handles @e.
 */
bool event_notifier_test_and_clear(EventNotifier *e);

/* event_notifier_get_fd: the eventfd, for KVM ioeventfd/irqfd. */
static inline int event_notifier_get_fd(const EventNotifier *e)
{
    return e->fd;
}

/* ------------------------------------------------------------------ */
/* Context life cycle                                                   */

/*
 * aio_context_new: create a context whose home thread is the caller.  The
 * caller's aio_get_current_context() does not change.  Returns NULL and
 * fills @errp (may be NULL) when epoll/eventfd fail.  Any thread.  The
 * caller owns one reference.
 */
AioContext *aio_context_new(GError **errp);

/* aio_context_ref / aio_context_unref: reference counting; any thread. */
void aio_context_ref(AioContext *ctx);
/*
 * The last unref frees the context.  Every BH created with aio_bh_new()
 * must have been deleted and every fd handler / timer removed by then:
 * a leak aborts, loudly, with the BH's callback address.  One-shot BHs
 * still pending are run first (see aio_context_close()).
 */
void aio_context_unref(AioContext *ctx);

/*
 * aio_context_set_home_thread: make the calling thread the only one that
 * may poll @ctx from now on (an IOThread calls it when it starts).  Also
 * makes @ctx the calling thread's aio_get_current_context().
 */
void aio_context_set_home_thread(AioContext *ctx);

/*
 * aio_context_in_home_thread: true when the caller is @ctx's home thread,
 * or holds @ctx's home lock (aio_context_set_home_lock()).  Any thread.
 */
bool aio_context_in_home_thread(AioContext *ctx);

/* True when the calling thread holds the lock (e.g. bql_locked). */
typedef bool AioHomeLockHeldFunc(void);

/*
 * aio_context_set_home_lock: the holder of a lock may act as @ctx's home
 * thread: poll it (aio_poll), run aio_context_run_sync() inline, pass the
 * home-thread checks of the layers above.  This is QEMU's rule for the
 * main loop's context and the BQL, and it is only sound when the home
 * thread itself touches the context only while holding that same lock
 * (the main loop holds the BQL except inside its blocking poll, where it
 * only waits in the kernel).  Wake-ups are never skipped for a lock
 * holder: the real home thread may be asleep.  The home thread must sleep
 * only in the poll of a GSource (aio_context_attach_gsource()): a lock
 * holder's aio_poll() may take the wake-up meant for it, so at the end of
 * each such pass the GSource is woken on a second eventfd to compute its
 * timeout again.  Set once, before other threads use @ctx and before
 * attaching the GSource.  Returns 0, or a negative errno (no eventfd).
 */
int aio_context_set_home_lock(AioContext *ctx, AioHomeLockHeldFunc *held);

/*
 * aio_get_current_context: the context the caller last made its own with
 * aio_context_set_home_thread() (NULL once that context is freed), or
 * NULL.  The main thread's is the main loop's context after
 * main_loop_init(), an IOThread's is its context.
 */
AioContext *aio_get_current_context(void);

/*
 * aio_context_close: stop accepting bottom halves.  Runs every BH that was
 * scheduled before the close, then makes aio_bh_schedule*() on @ctx return
 * -ESHUTDOWN, so a BH either runs or its scheduler is told.  Home thread.
 * Idempotent.
 */
void aio_context_close(AioContext *ctx);

/* ------------------------------------------------------------------ */
/* Polling                                                              */

/*
 * aio_poll: run one pass of the loop: ready bottom halves, fd handlers and
 * expired timers.  With @blocking, first busy-polls (see
 * aio_context_set_poll_params()) and then sleeps until something is ready.
 * Returns true if any callback other than an idle BH ran.  Home thread
 * only (asserted).  May be nested from inside a callback: a nested pass
 * continues the outer passes' BHs and dispatches handlers their busy
 * polling found ready, never sleeps while such work is left, and never
 * runs a BH or an fd event twice (docs/ARCHITECTURE.md, nesting rules).
 */
bool aio_poll(AioContext *ctx, bool blocking);

/*
 * aio_notify: wake @ctx's home thread if it is blocked (or about to block)
 * in aio_poll() or the GSource.  Any thread; cheap when the poller is busy
 * (no syscall unless the poller has announced it is going to sleep).
 */
void aio_notify(AioContext *ctx);

/*
 * aio_context_set_poll_params: adaptive busy-polling, with QEMU's
 * semantics: @max_ns (0 disables polling, the default of a new context;
 * IOThreads default to QEMU's 32768) bounds
 * the busy-poll time; after a wait longer than the current poll time but
 * within @max_ns the poll time is multiplied by @grow (0 means 2; any
 * value is accepted, the product is capped at @max_ns); after a
 * wait longer than @max_ns it is divided by @shrink (0 means reset to 0).
 * While a handler without an io_poll callback is registered the context
 * does not busy-poll (QEMU's rule).  Any thread; takes effect at the next
 * aio_poll().  Negative values give -EINVAL.
 */
int aio_context_set_poll_params(AioContext *ctx, int64_t max_ns,
                                int64_t grow, int64_t shrink);

/* aio_context_get_poll_ns: current adaptive poll time (for tests, stats). */
int64_t aio_context_get_poll_ns(AioContext *ctx);

/*
 * AioPollStats: what aio_poll() did, as counts (for tests: they check the
 * loop's decisions as counts and orderings instead of wall-clock time).
 */
typedef struct AioPollStats {
    uint64_t passes;       /* aio_poll() calls, nested ones included */
    uint64_t waits;        /* passes that asked epoll (maybe with timeout 0) */
    uint64_t skipped_waits; /* passes that skipped epoll: work was ready */
    int64_t last_wait_ns;  /* the timeout the last wait asked of the kernel
                            * (ns, as passed: -1 forever) */
} AioPollStats;

/*
 * aio_context_get_poll_stats: copy @ctx's counts into *@out.  Home thread
 * (or any thread while no pass runs, e.g. after joining the poller).
 */
void aio_context_get_poll_stats(AioContext *ctx, AioPollStats *out);

/*
 * aio_context_set_aio_max_batch: the most requests a Linux AIO / io_uring
 * queue bound to @ctx submits at once (0: backend default).  Stored for the
 * block layer; any thread.
 */
int aio_context_set_aio_max_batch(AioContext *ctx, int64_t max_batch);
int64_t aio_context_get_aio_max_batch(AioContext *ctx);

/* ------------------------------------------------------------------ */
/* Bottom halves                                                        */

/*
 * aio_bh_new: a BH that calls @cb(@opaque) in @ctx's home thread each time
 * it is scheduled.  Any thread.  Delete it with aio_bh_delete().
 */
AioBH *aio_bh_new(AioContext *ctx, AioBHFunc *cb, void *opaque);

/*
 * aio_bh_schedule: run @bh on the next pass of its context.  Scheduling an
 * already scheduled BH does nothing; a BH rescheduled from its own callback
 * runs on the following pass.  BHs scheduled by one thread run in the order
 * they were scheduled.  Lock-free; any thread.  Returns 0, or -ESHUTDOWN if
 * the context is closed: this call scheduled nothing (a BH already queued
 * before the close still runs during the close; one that was not never
 * runs).
 */
int aio_bh_schedule(AioBH *bh);

/*
 * aio_bh_schedule_idle: like aio_bh_schedule() but the BH runs when the
 * context is otherwise idle: it does not count as progress and the poller
 * may sleep up to 10 ms before running it.  Any thread.
 */
int aio_bh_schedule_idle(AioBH *bh);

/* aio_bh_cancel: a scheduled BH will not run (unless rescheduled).  Any thread. */
void aio_bh_cancel(AioBH *bh);

/*
 * aio_bh_delete: cancel @bh and free it.  The free is deferred to the home
 * thread's next pass, so this is safe from any thread and from @bh's own
 * callback; after aio_context_close() (no next pass) it is deferred to the
 * context's finalisation.  @bh must not be used afterwards (a schedule
 * racing with the delete is harmless: it is refused or coalesced).
 */
void aio_bh_delete(AioBH *bh);

/*
 * aio_bh_schedule_oneshot: run @cb(@opaque) once in @ctx's home thread.
 * Lock-free; any thread.  Returns 0 or -ESHUTDOWN (then @cb never runs).
 */
int aio_bh_schedule_oneshot(AioContext *ctx, AioBHFunc *cb, void *opaque);

/*
 * aio_context_run_sync: run @fn(@opaque) in @ctx's home thread and wait
 * until it returned.  Runs @fn directly when called from the home thread.
 * Any thread other than a thread that @ctx's home thread is itself
 * waiting for.  Returns 0, or -ESHUTDOWN if @ctx is closed (@fn did not
 * run).
 */
int aio_context_run_sync(AioContext *ctx, AioBHFunc *fn, void *opaque);

/* ------------------------------------------------------------------ */
/* fd handlers and event notifiers                                      */

/*
 * aio_set_fd_handler: watch @fd in @ctx.  @io_read / @io_write are called
 * in the home thread when @fd is readable / writable.  @io_poll (optional)
 * is called during busy-polling; when it returns true @io_poll_ready is
 * called.  Calling again for the same @fd replaces the handler; all
 * callbacks NULL removes it (it is never called again after this returns
 * in the home thread).  Safe from any thread, including from inside any
 * callback of @ctx.
 */
void aio_set_fd_handler(AioContext *ctx, int fd, AioFdFunc *io_read,
                        AioFdFunc *io_write, AioPollFunc *io_poll,
                        AioFdFunc *io_poll_ready, void *opaque);

/*
 * aio_set_fd_poll_notify: tell the handler of @fd when a busy-poll phase
 * starts and ends (a virtqueue suppresses guest notifications meanwhile).
 * The handler must exist.  Same threads as aio_set_fd_handler().
 * Contract: every live handler that heard @started == true later hears
 * false.  A handler registered or replaced during a phase is brought in
 * line on the home thread's next pass: told true inside a phase, and a
 * replacement outside one is told false (even if it never heard true, as
 * the handler it replaced may have), so set @poll_notify on a replacement
 * right after aio_set_fd_handler().  Removed handlers are not called.
 * Calls come from the home thread, as with the other callbacks.
 */
void aio_set_fd_poll_notify(AioContext *ctx, int fd,
                            AioPollNotifyFunc *poll_notify);

/*
 * aio_set_event_notifier: watch @e in @ctx: @io_read(@e) runs when it is
 * set (the handler clears it with event_notifier_test_and_clear()).
 * @io_poll / @io_poll_ready as for fd handlers (they receive @e).  All NULL
 * removes it.  Same threads as aio_set_fd_handler().
 */
void aio_set_event_notifier(AioContext *ctx, EventNotifier *e,
                            EventNotifierHandler *io_read,
                            AioPollFunc *io_poll,
                            EventNotifierHandler *io_poll_ready);

/* ------------------------------------------------------------------ */
/* Timers                                                               */

/* aio_clock_ns: CLOCK_MONOTONIC in nanoseconds. */
int64_t aio_clock_ns(void);

/*
 * aio_timer_new: a disarmed timer calling @cb(@opaque) in @ctx's home
 * thread.  Any thread.
 */
AioTimer *aio_timer_new(AioContext *ctx, AioTimerFunc *cb, void *opaque);

/*
 * aio_timer_mod: arm @t to fire once at or after @expire_ns
 * (aio_clock_ns() time base), replacing an earlier deadline.  From the
 * home thread this is immediate; from another thread it is forwarded with
 * a one-shot BH (applied in order with the caller's other BHs; returns
 * -ESHUTDOWN if the context is closed).  Returns 0.
 */
int aio_timer_mod(AioTimer *t, int64_t expire_ns);

/* aio_timer_del: disarm @t.  Threads as aio_timer_mod(). */
int aio_timer_del(AioTimer *t);

/* aio_timer_pending: true while armed.  Home thread. */
bool aio_timer_pending(AioTimer *t);

/* aio_timer_expire_ns: the deadline, or -1 when disarmed.  Home thread. */
int64_t aio_timer_expire_ns(AioTimer *t);

/*
 * aio_timer_free: disarm and free @t.  Home thread (or any thread while
 * the context is not being polled).
 */
void aio_timer_free(AioTimer *t);

/* ------------------------------------------------------------------ */
/* glib integration                                                     */

/*
 * aio_context_attach_gsource: create a GSource that drives @ctx from
 * @gctx (the thread iterating @gctx must be @ctx's home thread) and attach
 * it.  Returns the source (one reference owned by the caller; destroy
 * with g_source_destroy() + g_source_unref()).  Holds a reference to @ctx
 * until the source is finalized.
 */
GSource *aio_context_attach_gsource(AioContext *ctx, GMainContext *gctx);

#ifdef __cplusplus
}
#endif

#endif /* SHARDVM_AIO_H */
