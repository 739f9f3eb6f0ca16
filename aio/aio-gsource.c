/*
 * A GSource that lets a GMainContext drive an AioContext: the epoll fd is
 * the source's only poll fd, so one glib poll watches every fd handler of
 * the context.  Kept apart from the loop itself: the AioContext stands
 * alone, this file only adapts it.
 *
 * notify_me bit 0 plays the role aio_poll()'s +2 plays: raised in prepare
 * before glib may sleep, lowered in check (or at once when prepare already
 * found work, since glib then skips check).
 */
#include "aio-internal.h"

#include <limits.h>

typedef struct AioSource {
    GSource source;
    AioContext *ctx; /* one reference, dropped in finalize */
    gpointer fd_tag;
    gpointer home_tag; /* ctx->home_notifier, NULL without a home lock */
} AioSource;

static gboolean aio_source_prepare(GSource *source, gint *timeout)
{
    AioContext *ctx = ((AioSource *)source)->ctx;
    int64_t ns;

    aio_assert_home(ctx);
    /* Pairs with aio_notify(): see there. */
    atomic_fetch_or(&ctx->notify_me, 1);
    ns = aio_compute_timeout_ns(ctx);
    if (ns == 0) {
        atomic_fetch_and(&ctx->notify_me, ~1u);
        *timeout = 0;
        return TRUE;
    }
    if (ns < 0) {
        *timeout = -1;
    } else {
        int64_t ms = (ns + 999999) / 1000000; /* never wake early */
        *timeout = ms > INT_MAX ? INT_MAX : (gint)ms;
    }
    return FALSE;
}

static gboolean aio_source_check(GSource *source)
{
    AioSource *as = (AioSource *)source;
    AioContext *ctx = as->ctx;

    atomic_fetch_and_explicit(&ctx->notify_me, ~1u, memory_order_release);
    aio_notify_accept(ctx);
    if (as->home_tag && (g_source_query_unix_fd(source, as->home_tag) & G_IO_IN)) {
        /* A lock holder polled meanwhile: the next prepare sees what it
         * left (see AioContext.home_notifier). */
        event_notifier_test_and_clear(&ctx->home_notifier);
    }
    if (g_source_query_unix_fd(source, as->fd_tag) & G_IO_IN) {
        return TRUE;
    }
    return aio_compute_timeout_ns(ctx) == 0;
}

static gboolean aio_source_dispatch(GSource *source, GSourceFunc cb,
                                    gpointer user_data)
{
    aio_poll(((AioSource *)source)->ctx, false);
    return G_SOURCE_CONTINUE;
}

static void aio_source_finalize(GSource *source)
{
    aio_context_unref(((AioSource *)source)->ctx);
}

static GSourceFuncs aio_source_funcs = {
    .prepare = aio_source_prepare,
    .check = aio_source_check,
    .dispatch = aio_source_dispatch,
    .finalize = aio_source_finalize,
};

GSource *aio_context_attach_gsource(AioContext *ctx, GMainContext *gctx)
{
    GSource *source = g_source_new(&aio_source_funcs, sizeof(AioSource));
    AioSource *as = (AioSource *)source;

    aio_context_ref(ctx);
    as->ctx = ctx;
    as->fd_tag = g_source_add_unix_fd(source, ctx->epollfd, G_IO_IN);
    if (ctx->home_notifier.fd >= 0) {
        as->home_tag = g_source_add_unix_fd(source, ctx->home_notifier.fd,
                                            G_IO_IN);
    }
    g_source_set_name(source, "AioContext");
    g_source_attach(source, gctx);
    return source;
}
