/*
 * The main loop: the "shardvm" thread iterating a GMainContext that drives
 * the main AioContext and the fd-handler context, with the BQL released
 * exactly around the blocking poll.  See include/shardvm/main-loop.h.
 */
#include "main-loop-internal.h"
#include "shardvm/error.h"
#include "shardvm/rcu.h"
#include "shardvm/thread.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>

/*
 * One main loop per process (QEMU's model: signals and the BQL are
 * process-wide).  Written by main_loop_init()/main_loop_cleanup() on the
 * main-loop thread; the pointers are read by other threads only between
 * the two (they are published before any other thread can know of them).
 */
static struct {
    /* Between init and cleanup; read by main_loop_request_shutdown(). */
    atomic_bool initialised;
    /* BHs, timers and event notifiers of things bound to the main loop. */
    AioContext *ctx;
    /*
     * fd handlers only (QEMU's iohandler_ctx): kept out of the main
     * AioContext so that a nested aio_poll(ctx) (a device draining its
     * requests) never dispatches the monitor, the serial input or the
     * signalfd behind the caller's back.  Only the GMainContext runs it.
     */
    AioContext *fd_ctx;
    GMainContext *gctx;
    GSource *ctx_source;
    GSource *fd_source;
    GPollFunc saved_poll;
    EventNotifier wakeup; /* set by main_loop_request_shutdown() */
} ml;

/*
 * Shutdown request: reason in bits 0-7, signal number above.  One atomic
 * word so the first request wins as a whole (reason and signal together);
 * a lock-free CAS keeps it async-signal-safe.
 */
static atomic_int ml_shutdown;

static gint ml_poll(GPollFD *fds, guint nfds, gint timeout)
{
    /* The BQL is released exactly while we may block, so that vCPU and
     * IOThread code that needs it can run while the main loop sleeps. */
    if (timeout == 0 || !bql_locked()) {
        return g_poll(fds, nfds, timeout);
    }
    bql_unlock();
    gint r = g_poll(fds, nfds, timeout);
    bql_lock();
    return r;
}

static void ml_wakeup_read(void *opaque)
{
    event_notifier_test_and_clear(&ml.wakeup);
}

int main_loop_init(bool force_signal_compat, GError **errp)
{
    int r;

    if (ml.initialised) {
        return shardvm_error_set(errp, -EBUSY, "main loop already running");
    }
    shardvm_thread_set_name("shardvm");
    shardvm_rcu_init();
    atomic_store(&ml_shutdown, SHUTDOWN_NONE);

    ml.ctx = aio_context_new(errp);
    if (!ml.ctx) {
        return -ENOMEM;
    }
    ml.fd_ctx = aio_context_new(errp);
    if (!ml.fd_ctx) {
        r = -ENOMEM;
        goto fail_ctx;
    }
    /* This thread polls both; code that asks for its current context
     * (aio_get_current_context()) means the main one. */
    aio_context_set_home_thread(ml.ctx);
    r = event_notifier_init(&ml.wakeup, false);
    if (r < 0) {
        shardvm_error_set(errp, r, "main loop: eventfd: %s", g_strerror(-r));
        goto fail_fd_ctx;
    }
    aio_set_fd_handler(ml.fd_ctx, ml.wakeup.fd, ml_wakeup_read, NULL, NULL,
                       NULL, NULL);
    /*
     * The BQL holder may act as the main context's home thread (QEMU's
     * rule): a vCPU thread that holds the BQL (a device register write)
     * can start, stop and drain a device served by the main loop without
     * waiting for the main loop, which itself needs the BQL.  Sound
     * because this thread touches ml.ctx only with the BQL held.
     */
    r = aio_context_set_home_lock(ml.ctx, bql_locked);
    if (r < 0) {
        shardvm_error_set(errp, r, "main loop: eventfd: %s", g_strerror(-r));
        aio_set_fd_handler(ml.fd_ctx, ml.wakeup.fd, NULL, NULL, NULL, NULL,
                           NULL);
        event_notifier_cleanup(&ml.wakeup);
        goto fail_fd_ctx;
    }

    ml.gctx = g_main_context_ref(g_main_context_default());
    ml.saved_poll = g_main_context_get_poll_func(ml.gctx);
    g_main_context_set_poll_func(ml.gctx, ml_poll);
    ml.ctx_source = aio_context_attach_gsource(ml.ctx, ml.gctx);
    ml.fd_source = aio_context_attach_gsource(ml.fd_ctx, ml.gctx);

    bql_lock();
    ml.initialised = true;
    r = ml_signals_init(ml.fd_ctx, force_signal_compat, errp);
    if (r < 0) {
        main_loop_cleanup();
        return r;
    }
    return 0;

fail_fd_ctx:
    aio_context_unref(ml.fd_ctx);
fail_ctx:
    aio_context_unref(ml.ctx);
    ml.ctx = ml.fd_ctx = NULL;
    return r;
}

void main_loop_cleanup(void)
{
    g_assert(ml.initialised && bql_locked());

    ml_signals_cleanup();
    aio_set_fd_handler(ml.fd_ctx, ml.wakeup.fd, NULL, NULL, NULL, NULL,
                       NULL);
    g_source_destroy(ml.fd_source);
    g_source_unref(ml.fd_source);
    g_source_destroy(ml.ctx_source);
    g_source_unref(ml.ctx_source);
    g_main_context_set_poll_func(ml.gctx, ml.saved_poll);
    g_main_context_unref(ml.gctx);
    aio_context_unref(ml.fd_ctx);
    aio_context_unref(ml.ctx);
    event_notifier_cleanup(&ml.wakeup);
    ml.ctx = ml.fd_ctx = NULL;
    ml.gctx = NULL;
    ml.ctx_source = ml.fd_source = NULL;
    ml.initialised = false;
    bql_unlock();
}

AioContext *main_loop_get_aio_context(void)
{
    return ml.ctx;
}

GMainContext *main_loop_get_gmain_context(void)
{
    return ml.gctx;
}

void main_loop_set_fd_handler(int fd, AioFdFunc *read, AioFdFunc *write,
                              void *opaque)
{
    g_assert(bql_locked());
    aio_set_fd_handler(ml.fd_ctx, fd, read, write, NULL, NULL, opaque);
}

void main_loop_wait(bool nonblocking)
{
    g_assert(bql_locked());
    /* ml_poll() drops the BQL around the blocking poll; prepare, check and
     * dispatch (every fd handler, BH and timer) run with it held. */
    g_main_context_iteration(ml.gctx, !nonblocking);
}

int main_loop_run(void)
{
    int reason;

    while ((reason = main_loop_shutdown_requested()) == SHUTDOWN_NONE) {
        main_loop_wait(false);
    }
    return reason;
}

void ml_request_shutdown_signal(int reason, int sig)
{
    int expected = SHUTDOWN_NONE;

    if (atomic_compare_exchange_strong(&ml_shutdown, &expected,
                                       (reason & 0xff) | (sig << 8)) &&
        ml.initialised) {
        /* write(2) on an eventfd: async-signal-safe. */
        event_notifier_set(&ml.wakeup);
    }
}

void main_loop_request_shutdown(int reason)
{
    ml_request_shutdown_signal(reason, 0);
}

int main_loop_shutdown_requested(void)
{
    return atomic_load(&ml_shutdown) & 0xff;
}

int main_loop_shutdown_signal(void)
{
    int v = atomic_load(&ml_shutdown);

    return (v & 0xff) == SHUTDOWN_HOST_SIGNAL ? v >> 8 : 0;
}
