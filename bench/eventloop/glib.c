/*
 * glib (GMainContext) behind BenchLoopOps.
 *
 * Post: g_main_context_invoke() from the other thread (it attaches one idle
 * source per call and wakes the context).  Waker: a pre-allocated source
 * made ready with g_source_set_ready_time(0), which also wakes the
 * context.  Deferred: g_idle_add() from the owning thread (attaching from
 * the owner does not write the wake-up fd, set_ready_time would).
 * Timers: g_timeout_source_new() (millisecond resolution) attached per
 * arm.  fd watches: g_unix_fd_source_new().  Pool: GThreadPool with
 * exclusive threads, completions sent back with g_main_context_invoke().
 */
#include "bench-ops.h"

#include <glib-unix.h>
#include <glib.h>

typedef struct GbLoop {
    GMainContext *ctx;
    GMainLoop *ml;
} GbLoop;

static void *gb_loop_new(void)
{
    GbLoop *l = g_new(GbLoop, 1);

    l->ctx = g_main_context_new();
    l->ml = g_main_loop_new(l->ctx, FALSE);
    return l;
}

static void gb_loop_free(void *loop)
{
    GbLoop *l = loop;

    g_main_loop_unref(l->ml);
    g_main_context_unref(l->ctx);
    g_free(l);
}

static void gb_run(void *loop)
{
    g_main_loop_run(((GbLoop *)loop)->ml);
}

static void gb_stop(void *loop)
{
    g_main_loop_quit(((GbLoop *)loop)->ml);
}

static GMainContext *gb_ctx(void *loop)
{
    return ((GbLoop *)loop)->ctx;
}

typedef struct GbCb {
    BenchCb *cb;
    void *opaque;
    GSource *src; /* waker, timer, fd watch */
    GMainContext *ctx;
} GbCb;

static gboolean gb_invoke_cb(gpointer data)
{
    GbCb *c = data;

    c->cb(c->opaque);
    return G_SOURCE_REMOVE;
}

static void gb_post(void *loop, BenchCb *cb, void *opaque)
{
    GbCb *c = g_new(GbCb, 1);

    c->cb = cb;
    c->opaque = opaque;
    g_main_context_invoke_full(gb_ctx(loop), G_PRIORITY_DEFAULT,
                               gb_invoke_cb, c, g_free);
}

/* A source that is dispatched when its ready time has come. */
static gboolean gb_ready_dispatch(GSource *src, GSourceFunc fn, gpointer d)
{
    GbCb *c = d;

    g_source_set_ready_time(src, -1);
    c->cb(c->opaque);
    return G_SOURCE_CONTINUE;
}

static GSourceFuncs gb_ready_funcs = {
    .dispatch = gb_ready_dispatch,
};

static void *gb_waker_new(void *loop, BenchCb *cb, void *opaque)
{
    GbCb *c = g_new0(GbCb, 1);

    c->cb = cb;
    c->opaque = opaque;
    c->src = g_source_new(&gb_ready_funcs, sizeof(GSource));
    g_source_set_callback(c->src, NULL, c, NULL);
    g_source_attach(c->src, gb_ctx(loop));
    return c;
}

static void gb_waker_fire(void *w)
{
    g_source_set_ready_time(((GbCb *)w)->src, 0);
}

static void gb_src_free(void *p)
{
    GbCb *c = p;

    if (c->src) {
        g_source_destroy(c->src);
        g_source_unref(c->src);
    }
    g_free(c);
}

static void *gb_cb_new(void *loop, BenchCb *cb, void *opaque)
{
    GbCb *c = g_new0(GbCb, 1);

    c->cb = cb;
    c->opaque = opaque;
    c->ctx = gb_ctx(loop);
    return c;
}

static gboolean gb_idle_cb(gpointer data)
{
    GbCb *c = data;

    c->cb(c->opaque);
    return G_SOURCE_REMOVE;
}

static void gb_defer_arm(void *d)
{
    GbCb *c = d;
    GSource *s = g_idle_source_new();

    g_source_set_priority(s, G_PRIORITY_DEFAULT);
    g_source_set_callback(s, gb_idle_cb, c, NULL);
    g_source_attach(s, c->ctx);
    g_source_unref(s);
}

static void gb_plain_free(void *p)
{
    g_free(p);
}

static gboolean gb_timer_cb(gpointer data)
{
    GbCb *c = data;

    g_source_unref(c->src);
    c->src = NULL;
    c->cb(c->opaque);
    return G_SOURCE_REMOVE;
}

/* Millisecond resolution: round down like libuv. */
static void gb_timer_arm(void *t, int64_t deadline_ns)
{
    GbCb *c = t;
    int64_t ms = (deadline_ns - bench_now_ns()) / 1000000;

    if (c->src) {
        g_source_destroy(c->src);
        g_source_unref(c->src);
    }
    c->src = g_timeout_source_new(ms > 0 ? ms : 0);
    g_source_set_callback(c->src, gb_timer_cb, c, NULL);
    g_source_attach(c->src, c->ctx);
}

static gboolean gb_fd_cb(gint fd, GIOCondition cond, gpointer data)
{
    GbCb *c = data;

    c->cb(c->opaque);
    return G_SOURCE_CONTINUE;
}

static void *gb_fd_watch(void *loop, int fd, BenchCb *cb, void *opaque)
{
    GbCb *c = gb_cb_new(loop, cb, opaque);

    c->src = g_unix_fd_source_new(fd, G_IO_IN);
    g_source_set_callback(c->src, (GSourceFunc)(void (*)(void))gb_fd_cb, c,
                          NULL);
    g_source_attach(c->src, gb_ctx(loop));
    return c;
}

/* GThreadPool; the completion is invoked in the loop's context. */
typedef struct GbPool {
    GThreadPool *tp;
    GMainContext *ctx;
} GbPool;

typedef struct GbJob {
    GbPool *pool;
    BenchWorkFn *fn;
    void *arg;
    BenchDoneFn *done;
    void *opaque;
    int ret;
} GbJob;

static gboolean gb_job_done(gpointer data)
{
    GbJob *j = data;

    j->done(j->opaque, j->ret);
    return G_SOURCE_REMOVE;
}

static void gb_job_run(gpointer data, gpointer user_data)
{
    GbJob *j = data;

    j->ret = j->fn(j->arg);
    g_main_context_invoke_full(j->pool->ctx, G_PRIORITY_DEFAULT, gb_job_done,
                               j, g_free);
}

static void *gb_pool_new(void *loop, int workers)
{
    GbPool *p = g_new(GbPool, 1);

    p->ctx = gb_ctx(loop);
    /* exclusive: its own threads, all started now, like the other pools
     * once warmed up. */
    p->tp = g_thread_pool_new(gb_job_run, p, workers, TRUE, NULL);
    return p;
}

static void gb_pool_submit(void *pool, BenchWorkFn *fn, void *arg,
                           BenchDoneFn *done, void *opaque)
{
    GbPool *p = pool;
    GbJob *j = g_new(GbJob, 1);

    *j = (GbJob){ .pool = p, .fn = fn, .arg = arg, .done = done,
                  .opaque = opaque };
    g_thread_pool_push(p->tp, j, NULL);
}

static void gb_pool_free(void *pool)
{
    GbPool *p = pool;

    g_thread_pool_free(p->tp, FALSE, TRUE);
    g_free(p);
}

const BenchLoopOps bench_glib_ops = {
    .name = "glib",
    .loop_new = gb_loop_new,
    .loop_free = gb_loop_free,
    .run = gb_run,
    .stop = gb_stop,
    .post = gb_post,
    .waker_new = gb_waker_new,
    .waker_fire = gb_waker_fire,
    .waker_free = gb_src_free,
    .defer_new = gb_cb_new,
    .defer_arm = gb_defer_arm,
    .defer_free = gb_plain_free,
    .timer_new = gb_cb_new,
    .timer_arm = gb_timer_arm,
    .timer_free = gb_src_free,
    .fd_watch = gb_fd_watch,
    .fd_unwatch = gb_src_free,
    .pool_new = gb_pool_new,
    .pool_submit = gb_pool_submit,
    .pool_free = gb_pool_free,
    .has_iothread = true,
};
