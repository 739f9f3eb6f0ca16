/*
 * fd handlers on epoll, adaptive busy-polling and aio_poll().
 *
 * One pass of aio_poll(ctx, blocking):
 *   1. compute the timeout (0 if a BH is ready, notified is set or a timer
 *      expired);
 *   2. if it would block and polling is on, busy-poll for up to poll_ns:
 *      io_poll() callbacks, ctx->notified, timers.  notify_me stays low
 *      meanwhile, so other threads' aio_notify() costs no syscall;
 *   3. if nothing turned up: end the busy-poll phase (poll_notify(false)),
 *      poll the handlers once more (a virtqueue re-enabled guest
 *      notifications: a kick that came just before would otherwise be
 *      lost), raise notify_me, recompute the timeout and wait in epoll;
 *   4. lower notify_me, accept the notification, dispatch ready fds and
 *      poll-ready handlers, BHs, timers; adapt poll_ns.
 */
#include "aio-internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/*
 * A handler registered by one thread reaches the poller through the
 * kernel (epoll's data.ptr), an edge ThreadSanitizer cannot see; tell it.
 */
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define tsan_release(p) __tsan_release(p)
#define tsan_acquire(p) __tsan_acquire(p)
#else
#define tsan_release(p) ((void)(p))
#define tsan_acquire(p) ((void)(p))
#endif

/* Events taken from epoll per wait; more stay ready for the next pass. */
#define AIO_MAX_EVENTS 64
/* Passes in a row that may skip epoll because work was already known. */
#define AIO_MAX_FD_SKIPS 64
/* Passes in a row that may leave io_poll handlers alone for the same
 * reason (a stream of BHs); then the poll phase ends and they are polled. */
#define AIO_MAX_POLL_SKIPS 64
/* The first busy-poll window once polling grows from 0, as QEMU. */
#define AIO_POLL_NS_INITIAL 4000

void aio_context_get_poll_stats(AioContext *ctx, AioPollStats *out)
{
    *out = ctx->stats;
}

int64_t aio_clock_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int aio_handlers_init(AioContext *ctx)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };

    ctx->epollfd = epoll_create1(EPOLL_CLOEXEC);
    if (ctx->epollfd < 0) {
        return -errno;
    }
    if (epoll_ctl(ctx->epollfd, EPOLL_CTL_ADD, ctx->notifier.fd, &ev) < 0) {
        int r = -errno;
        close(ctx->epollfd);
        ctx->epollfd = -1;
        return r;
    }
    return 0;
}

void aio_handlers_destroy(AioContext *ctx)
{
    AioHandler *h = atomic_load(&ctx->handlers);

    while (h) {
        AioHandler *next = atomic_load(&h->next);
        g_free(h);
        h = next;
    }
    atomic_store(&ctx->handlers, NULL);
    if (ctx->epollfd >= 0) {
        close(ctx->epollfd);
        ctx->epollfd = -1;
    }
}

static AioHandler *find_handler(AioContext *ctx, int fd)
{
    for (AioHandler *h = atomic_load_explicit(&ctx->handlers, memory_order_acquire);
         h; h = atomic_load_explicit(&h->next, memory_order_acquire)) {
        if (h->fd == fd && !atomic_load_explicit(&h->deleted, memory_order_relaxed)) {
            return h;
        }
    }
    return NULL;
}

/* Unlink and free deleted handlers.  Home thread, not walking, list_lock. */
static void free_deleted_handlers_locked(AioContext *ctx)
{
    _Atomic(AioHandler *) *pp = &ctx->handlers;
    AioHandler *h;

    while ((h = atomic_load_explicit(pp, memory_order_relaxed))) {
        if (atomic_load_explicit(&h->deleted, memory_order_relaxed)) {
            atomic_store_explicit(pp, atomic_load(&h->next), memory_order_release);
            if (h->poll_ready) {
                ctx->poll_ready_cnt--;
            }
            g_free(h);
            atomic_fetch_sub(&ctx->deleted_handlers, 1);
        } else {
            pp = &h->next;
        }
    }
}

static void free_deleted_handlers(AioContext *ctx)
{
    if (atomic_load_explicit(&ctx->deleted_handlers, memory_order_relaxed) == 0) {
        return;
    }
    pthread_mutex_lock(&ctx->list_lock);
    free_deleted_handlers_locked(ctx);
    pthread_mutex_unlock(&ctx->list_lock);
}

/* Mark @h deleted and update the counters.  list_lock held. */
static void mark_deleted_locked(AioContext *ctx, AioHandler *h)
{
    atomic_store_explicit(&h->deleted, true, memory_order_release);
    atomic_fetch_add(&ctx->deleted_handlers, 1);
    atomic_fetch_sub(&ctx->live_handlers, 1);
    if (h->io_poll) {
        atomic_fetch_sub(&ctx->poll_handlers, 1);
    } else {
        atomic_fetch_sub(&ctx->poll_disable_cnt, 1);
    }
}

/* Add, replace or (new_h == NULL) remove the handler of @fd. */
static void set_handler(AioContext *ctx, int fd, AioHandler *new_h)
{
    AioHandler *old;
    uint32_t old_events, new_events = new_h ? new_h->events : 0;
    struct epoll_event ev = { .events = new_events, .data.ptr = new_h };
    int r = 0;

    pthread_mutex_lock(&ctx->list_lock);
    old = find_handler(ctx, fd);
    old_events = old ? old->events : 0;
    if (!old && !new_h) {
        pthread_mutex_unlock(&ctx->list_lock);
        return;
    }
    /*
     * epoll keeps a pointer to the handler: MOD swaps it atomically for
     * the new one, DEL happens before we return, so after removal the fd
     * may be closed and reused at once.
     */
    if (new_h) {
        /* A replacement may take over a handler that heard "started":
         * the home thread tells it the current state (see
         * poll_notify_walk()). */
        new_h->notify_state = old ? PN_SYNC : PN_OFF;
        tsan_release(new_h);
    }
    if (old_events && new_events) {
        r = epoll_ctl(ctx->epollfd, EPOLL_CTL_MOD, fd, &ev);
    } else if (new_events) {
        r = epoll_ctl(ctx->epollfd, EPOLL_CTL_ADD, fd, &ev);
    } else if (old_events) {
        r = epoll_ctl(ctx->epollfd, EPOLL_CTL_DEL, fd, NULL);
    }
    if (r < 0 && new_h) {
        /* Regular files and the like cannot be watched: refuse loudly,
         * keep the old handler. */
        g_warning("AioContext %p: cannot watch fd %d: %s", (void *)ctx, fd,
                  g_strerror(errno));
        pthread_mutex_unlock(&ctx->list_lock);
        g_free(new_h);
        return;
    }
    if (new_h) {
        atomic_store_explicit(&new_h->next,
                              atomic_load_explicit(&ctx->handlers, memory_order_relaxed),
                              memory_order_relaxed);
        /* Release: the handler's fields before the handler. */
        atomic_store_explicit(&ctx->handlers, new_h, memory_order_release);
        atomic_fetch_add(&ctx->live_handlers, 1);
        if (new_h->io_poll) {
            atomic_fetch_add(&ctx->poll_handlers, 1);
        } else {
            atomic_fetch_add(&ctx->poll_disable_cnt, 1);
        }
    }
    if (old) {
        mark_deleted_locked(ctx, old);
        if (new_h) {
            /* After the release store that published new_h. */
            atomic_store(&ctx->poll_resync, true);
        }
        if (aio_context_in_home_thread(ctx) && ctx->walk_depth == 0) {
            free_deleted_handlers_locked(ctx);
        }
    }
    pthread_mutex_unlock(&ctx->list_lock);
    /* Let the poller see a new poll handler or free the old one. */
    if (!aio_context_in_home_thread_strict(ctx)) {
        aio_notify(ctx);
    }
}

void aio_set_fd_handler(AioContext *ctx, int fd, AioFdFunc *io_read,
                        AioFdFunc *io_write, AioPollFunc *io_poll,
                        AioFdFunc *io_poll_ready, void *opaque)
{
    AioHandler *h = NULL;

    if (io_read || io_write || io_poll || io_poll_ready) {
        h = g_new0(AioHandler, 1);
        h->fd = fd;
        h->io_read = io_read;
        h->io_write = io_write;
        h->io_poll = io_poll;
        h->io_poll_ready = io_poll_ready;
        h->opaque = opaque;
        h->events = (io_read ? EPOLLIN : 0) | (io_write ? EPOLLOUT : 0);
    }
    set_handler(ctx, fd, h);
}

void aio_set_event_notifier(AioContext *ctx, EventNotifier *e,
                            EventNotifierHandler *io_read,
                            AioPollFunc *io_poll,
                            EventNotifierHandler *io_poll_ready)
{
    AioHandler *h = NULL;

    if (io_read || io_poll || io_poll_ready) {
        h = g_new0(AioHandler, 1);
        h->fd = event_notifier_get_fd(e);
        h->is_notifier = true;
        h->en_read = io_read;
        h->io_poll = io_poll;
        h->en_poll_ready = io_poll_ready;
        h->opaque = e;
        h->events = io_read ? EPOLLIN : 0;
    }
    set_handler(ctx, event_notifier_get_fd(e), h);
}

void aio_set_fd_poll_notify(AioContext *ctx, int fd,
                            AioPollNotifyFunc *poll_notify)
{
    AioHandler *h;

    pthread_mutex_lock(&ctx->list_lock);
    h = find_handler(ctx, fd);
    if (!h) {
        pthread_mutex_unlock(&ctx->list_lock);
        g_critical("aio_set_fd_poll_notify: fd %d has no handler", fd);
        return;
    }
    /* The home thread reads it without the lock. */
    atomic_store_explicit(&h->poll_notify, poll_notify, memory_order_release);
    /* Bring it in line with a poll phase that may be running. */
    atomic_store(&ctx->poll_resync, true);
    pthread_mutex_unlock(&ctx->list_lock);
    if (!aio_context_in_home_thread_strict(ctx)) {
        aio_notify(ctx);
    }
}

/* ------------------------------------------------------------------ */
/* Busy polling                                                         */

static inline AioHandler *handlers_first(AioContext *ctx)
{
    return atomic_load_explicit(&ctx->handlers, memory_order_acquire);
}

static inline AioHandler *handler_next(AioHandler *h)
{
    return atomic_load_explicit(&h->next, memory_order_acquire);
}

static inline bool handler_live(AioHandler *h)
{
    return !atomic_load_explicit(&h->deleted, memory_order_acquire);
}

static AioPollNotifyFunc *handler_poll_notify(AioHandler *h)
{
    return atomic_load_explicit(&h->poll_notify, memory_order_acquire);
}

/*
 * Tell every live handler with a poll_notify callback that was told
 * otherwise (or nothing, PN_SYNC) that a busy-poll phase runs (@started)
 * or not.  So every handler that heard "started" hears "ended", including
 * one registered or replaced in the middle of a phase.  Returns true if a
 * handler heard "ended": the caller polls once more, as a kick may have
 * come while notifications were off.
 */
static bool poll_notify_walk(AioContext *ctx, bool started)
{
    uint8_t want = started ? PN_ON : PN_OFF;
    bool ended = false;

    for (AioHandler *h = handlers_first(ctx); h; h = handler_next(h)) {
        AioPollNotifyFunc *pn = handler_poll_notify(h);

        if (!pn || !handler_live(h) || h->notify_state == want) {
            continue;
        }
        h->notify_state = want;
        pn(h->opaque, started);
        ended |= !started;
    }
    return ended;
}

/* A busy-poll phase starts or ends; also runs a pending resync.  Returns
 * as poll_notify_walk(). */
static bool poll_set_started(AioContext *ctx, bool started)
{
    if (atomic_load_explicit(&ctx->poll_resync, memory_order_relaxed)) {
        /* seq_cst: pairs with the store after a handler's publication. */
        atomic_exchange(&ctx->poll_resync, false);
    } else if (ctx->poll_started == started) {
        return false;
    }
    ctx->poll_started = started;
    return poll_notify_walk(ctx, started);
}

/* Call every io_poll once; mark the ones with work.  True if any had. */
static bool poll_handlers_once(AioContext *ctx)
{
    bool progress = false;

    for (AioHandler *h = handlers_first(ctx); h; h = handler_next(h)) {
        if (h->io_poll && !h->poll_ready && handler_live(h) &&
            h->io_poll(h->opaque)) {
            h->poll_ready = true;
            ctx->poll_ready_cnt++;
            progress = true;
        }
    }
    return progress;
}

/* Is something other than fd readiness ready right now? */
static bool poll_other_work(AioContext *ctx, int64_t now)
{
    int64_t deadline;

    if (atomic_load_explicit(&ctx->notified, memory_order_acquire)) {
        return true;
    }
    deadline = aio_timers_deadline_ns(ctx);
    return deadline >= 0 && deadline <= now;
}

/*
 * Busy-poll until @deadline.  Returns true when work turned up (then it is
 * marked poll_ready or is a BH/timer the pass will run).
 */
static bool run_busy_poll(AioContext *ctx, int64_t deadline)
{
    bool have_poll = atomic_load_explicit(&ctx->poll_handlers,
                                          memory_order_relaxed) > 0;
    int64_t now;

    if (have_poll) {
        poll_set_started(ctx, true);
    }
    do {
        if (have_poll && poll_handlers_once(ctx)) {
            return true;
        }
        now = aio_clock_ns();
        if (poll_other_work(ctx, now)) {
            return true;
        }
    } while (now < deadline);
    return false;
}

/* QEMU's adaptive rule: grow after a wait a bit longer than the window,
 * shrink after a wait longer than poll_max_ns. */
static void adjust_poll_ns(AioContext *ctx, int64_t block_ns)
{
    int64_t max_ns = atomic_load_explicit(&ctx->poll_max_ns, memory_order_relaxed);
    int64_t poll_ns = atomic_load_explicit(&ctx->poll_ns, memory_order_relaxed);

    if (poll_ns > max_ns) {
        poll_ns = max_ns; /* the maximum was lowered at runtime */
    }
    if (max_ns == 0) {
        poll_ns = 0;
    } else if (block_ns <= poll_ns) {
        /* The sweet spot: the event came within the window. */
    } else if (block_ns > max_ns) {
        int64_t shrink = atomic_load_explicit(&ctx->poll_shrink, memory_order_relaxed);
        poll_ns = shrink == 0 ? 0 : poll_ns / shrink;
    } else if (poll_ns < max_ns) {
        int64_t grow = atomic_load_explicit(&ctx->poll_grow, memory_order_relaxed);

        if (poll_ns == 0) {
            poll_ns = AIO_POLL_NS_INITIAL;
        } else if (__builtin_mul_overflow(poll_ns, grow ? grow : 2, &poll_ns)) {
            poll_ns = max_ns; /* any grow factor is fine: capped */
        }
    }
    if (poll_ns > max_ns) {
        poll_ns = max_ns;
    }
    atomic_store_explicit(&ctx->poll_ns, poll_ns, memory_order_relaxed);
}

/* ------------------------------------------------------------------ */
/* Waiting and dispatch                                                 */

int64_t aio_compute_timeout_ns(AioContext *ctx)
{
    int64_t timeout, deadline;

    /* Handlers an (outer) pass's io_poll found ready are dispatched by
     * whichever pass comes first. */
    if (ctx->poll_ready_cnt > 0 || atomic_load(&ctx->notified)) {
        return 0;
    }
    timeout = aio_bh_timeout_ns(ctx);
    if (timeout == 0) {
        return 0;
    }
    deadline = aio_timers_deadline_ns(ctx);
    if (deadline >= 0) {
        int64_t dt = deadline - aio_clock_ns();

        if (dt < 0) {
            dt = 0;
        }
        if (timeout < 0 || dt < timeout) {
            timeout = dt;
        }
    }
    return timeout;
}

/* One wait with epoll_wait(): the timeout rounded up to milliseconds, so
 * a wait for a timer never ends before it (which would spin). */
static int epoll_wait_ms(AioContext *ctx, struct epoll_event *events,
                         int64_t timeout_ns)
{
    int ms = -1;

    if (timeout_ns >= 0) {
        int64_t m = timeout_ns / 1000000 + (timeout_ns % 1000000 != 0);
        ms = m > INT_MAX ? INT_MAX : (int)m;
    }
    ctx->stats.last_wait_ns = ms < 0 ? -1 : (int64_t)ms * 1000000;
    return epoll_wait(ctx->epollfd, events, AIO_MAX_EVENTS, ms);
}

static int epoll_wait_ns(AioContext *ctx, struct epoll_event *events,
                         int64_t timeout_ns)
{
    struct timespec ts, *tsp = NULL;
    int n;

    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000LL;
        ts.tv_nsec = timeout_ns % 1000000000LL;
        tsp = &ts;
    }
    ctx->stats.waits++;
    for (;;) {
        if (!ctx->no_epoll_pwait2) {
            ctx->stats.last_wait_ns = tsp ? (int64_t)ts.tv_sec * 1000000000LL +
                                            ts.tv_nsec : -1;
            n = epoll_pwait2(ctx->epollfd, events, AIO_MAX_EVENTS, tsp, NULL);
            if (n < 0 && errno == ENOSYS) {
                /* Kernel before 5.11 or a seccomp filter: for good. */
                ctx->no_epoll_pwait2 = true;
                continue;
            }
        } else {
            n = epoll_wait_ms(ctx, events, timeout_ns);
        }
        if (n >= 0) {
            return n;
        }
        if (errno != EINTR) {
            /* Our own epoll fd and buffer: an internal invariant broke. */
            g_error("AioContext %p: epoll wait failed: %s", (void *)ctx,
                    g_strerror(errno));
        }
        if (timeout_ns >= 0) {
            return 0; /* a signal: the caller computes a new timeout */
        }
    }
}

/* Record what epoll returned on the handlers themselves: a nested pass
 * whose own wait returns the same handler dispatches and clears it, and
 * the outer pass then skips its stale copy (an event runs once). */
static void take_fd_events(struct epoll_event *events, int n)
{
    for (int i = 0; i < n; i++) {
        AioHandler *h = events[i].data.ptr;

        if (h) {
            tsan_acquire(h);
            h->revents |= events[i].events;
        }
    }
}

/* Run the handlers of @n epoll events.  True if a handler ran. */
static bool dispatch_fds(AioContext *ctx, struct epoll_event *events, int n)
{
    bool progress = false;

    for (int i = 0; i < n; i++) {
        AioHandler *h = events[i].data.ptr;
        uint32_t ev = events[i].events;

        if (!h) {
            event_notifier_test_and_clear(&ctx->notifier);
            continue;
        }
        ev = h->revents;
        h->revents = 0;
        if (!ev) {
            continue; /* a nested pass dispatched it already */
        }
        if (handler_live(h) && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
            if (h->is_notifier && h->en_read) {
                h->en_read(h->opaque);
                progress = true;
            } else if (!h->is_notifier && h->io_read) {
                h->io_read(h->opaque);
                progress = true;
            }
        }
        /* The read callback may have removed the handler. */
        if (handler_live(h) && !h->is_notifier && h->io_write &&
            (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR))) {
            h->io_write(h->opaque);
            progress = true;
        }
    }
    return progress;
}

/* Call io_poll_ready for handlers whose io_poll saw work. */
static bool dispatch_poll_ready(AioContext *ctx)
{
    bool progress = false;

    for (AioHandler *h = handlers_first(ctx); h; h = handler_next(h)) {
        if (!h->poll_ready) {
            continue;
        }
        h->poll_ready = false;
        ctx->poll_ready_cnt--;
        if (!handler_live(h)) {
            continue;
        }
        if (h->is_notifier && h->en_poll_ready) {
            h->en_poll_ready(h->opaque);
        } else if (!h->is_notifier && h->io_poll_ready) {
            h->io_poll_ready(h->opaque);
        }
        progress = true;
    }
    return progress;
}

/*
 * Work was ready, so this pass neither busy-polled nor ended the poll
 * phase before sleeping.  Every AIO_MAX_POLL_SKIPS such passes in a row,
 * end the phase (notifications back on) and poll the handlers once, so a
 * stream of BHs cannot starve them.  True if a handler has work.
 */
static bool poll_catch_up(AioContext *ctx)
{
    if (atomic_load_explicit(&ctx->poll_handlers, memory_order_relaxed) == 0 ||
        ++ctx->poll_skips < AIO_MAX_POLL_SKIPS) {
        return false;
    }
    ctx->poll_skips = 0;
    poll_set_started(ctx, false);
    return poll_handlers_once(ctx);
}

bool aio_poll(AioContext *ctx, bool blocking)
{
    struct epoll_event events[AIO_MAX_EVENTS];
    int64_t timeout, start = 0, poll_ns = 0;
    bool raised = false, polled = false;
    int n = 0;
    bool progress;

    aio_assert_home(ctx);
    ctx->walk_depth++;
    ctx->stats.passes++;

    if (atomic_load_explicit(&ctx->poll_resync, memory_order_relaxed) &&
        poll_set_started(ctx, ctx->poll_started)) {
        poll_handlers_once(ctx);
    }

    timeout = blocking ? aio_compute_timeout_ns(ctx) : 0;
    if (blocking && timeout != 0) {
        int64_t max_ns = atomic_load_explicit(&ctx->poll_max_ns, memory_order_relaxed);

        poll_ns = atomic_load_explicit(&ctx->poll_ns, memory_order_relaxed);
        if (poll_ns > max_ns) {
            poll_ns = max_ns;
        }
        if (max_ns == 0) {
            atomic_store_explicit(&ctx->poll_ns, 0, memory_order_relaxed);
        } else if (atomic_load_explicit(&ctx->poll_disable_cnt,
                                        memory_order_relaxed) == 0) {
            /* As QEMU: a handler that cannot be polled disables busy
             * polling (its fd would wait for epoll until the window
             * ends), and the window is not adapted meanwhile. */
            start = aio_clock_ns();
        }
        if (start && poll_ns > 0) {
            int64_t deadline;

            if (timeout > 0 && timeout < poll_ns) {
                poll_ns = timeout;
            }
            if (__builtin_add_overflow(start, poll_ns, &deadline)) {
                deadline = INT64_MAX;
            }
            polled = true;
            if (run_busy_poll(ctx, deadline)) {
                timeout = 0;
            }
        }
        if (timeout != 0) {
            /* Going to sleep: end the poll phase, then poll once more. */
            if (ctx->poll_started) {
                polled = true;
                if (poll_set_started(ctx, false) | poll_handlers_once(ctx)) {
                    timeout = 0;
                }
            }
        }
        if (timeout != 0) {
            /* Pairs with aio_notify(): see there. */
            atomic_fetch_add(&ctx->notify_me, 2);
            raised = true;
            timeout = aio_compute_timeout_ns(ctx);
        }
    }
    if (polled || timeout != 0) {
        ctx->poll_skips = 0;
    } else {
        poll_catch_up(ctx);
    }

    if (blocking && timeout == 0 && ctx->fd_skips < AIO_MAX_FD_SKIPS) {
        /* Work is known to be ready: do not pay for epoll this time. */
        ctx->fd_skips++;
        ctx->stats.skipped_waits++;
    } else {
        ctx->fd_skips = 0;
        n = epoll_wait_ns(ctx, events, timeout);
        take_fd_events(events, n);
    }

    if (raised) {
        atomic_fetch_sub_explicit(&ctx->notify_me, 2, memory_order_release);
    }
    aio_notify_accept(ctx);

    /* A pass that found work without waiting says nothing about how long
     * waits are: leave the window alone (and skip the clock reads). */
    if (start) {
        adjust_poll_ns(ctx, aio_clock_ns() - start);
    }

    /*
     * Order: BHs (continuing the slices of outer passes), then this pass's
     * fd events not taken by a nested pass meanwhile, then every handler
     * an io_poll found ready (this pass's or an outer one's), then timers.
     */
    progress = aio_bh_poll(ctx);
    progress |= dispatch_fds(ctx, events, n);
    if (ctx->poll_ready_cnt > 0) {
        progress |= dispatch_poll_ready(ctx);
    }
    progress |= aio_timers_run(ctx);

    if (--ctx->walk_depth == 0) {
        free_deleted_handlers(ctx);
    }
    aio_wake_home_after_lock_holder(ctx);
    return progress;
}
