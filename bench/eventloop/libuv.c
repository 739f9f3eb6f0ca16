/*
 * libuv behind BenchLoopOps.
 *
 * libuv has no "run this callback in that loop" call: the idiom (used by
 * libuv's own thread pool) is a mutex-protected queue plus one uv_async_t,
 * whose callback drains the queue.  uv_async_send() itself coalesces, so
 * it serves as the pre-allocated waker.  Same-thread deferred work is a
 * uv_idle_t started for one pass.  Timers have millisecond resolution.
 */
#include "bench-ops.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

typedef struct PostItem {
    BenchCb *cb;
    void *opaque;
} PostItem;

typedef struct UvLoop {
    uv_loop_t loop;
    uv_async_t post_async;  /* wakes the loop for queued posts */
    uv_mutex_t lock;
    GArray *queue;          /* PostItem; guarded by @lock */
    GArray *spare;          /* loop thread only: swapped with @queue */
} UvLoop;

static void uvb_drain(uv_async_t *a)
{
    UvLoop *l = a->data;

    uv_mutex_lock(&l->lock);
    GArray *q = l->queue;
    l->queue = l->spare;
    uv_mutex_unlock(&l->lock);
    for (guint i = 0; i < q->len; i++) {
        PostItem *it = &g_array_index(q, PostItem, i);
        it->cb(it->opaque);
    }
    g_array_set_size(q, 0);
    l->spare = q;
}

static void *uvb_loop_new(void)
{
    UvLoop *l = g_new0(UvLoop, 1);

    if (uv_loop_init(&l->loop) < 0 ||
        uv_async_init(&l->loop, &l->post_async, uvb_drain) < 0) {
        fprintf(stderr, "bench: libuv loop init failed\n");
        exit(1);
    }
    l->post_async.data = l;
    uv_mutex_init(&l->lock);
    l->queue = g_array_sized_new(FALSE, FALSE, sizeof(PostItem), 1024);
    l->spare = g_array_sized_new(FALSE, FALSE, sizeof(PostItem), 1024);
    return l;
}

static void uvb_loop_free(void *loop)
{
    UvLoop *l = loop;

    uv_close((uv_handle_t *)&l->post_async, NULL);
    uv_run(&l->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&l->loop) < 0) {
        fprintf(stderr, "bench: libuv loop still has handles\n");
        exit(1);
    }
    uv_mutex_destroy(&l->lock);
    g_array_free(l->queue, TRUE);
    g_array_free(l->spare, TRUE);
    g_free(l);
}

static void uvb_run(void *loop)
{
    uv_run(&((UvLoop *)loop)->loop, UV_RUN_DEFAULT);
}

static void uvb_stop(void *loop)
{
    uv_stop(&((UvLoop *)loop)->loop);
}

static void uvb_post(void *loop, BenchCb *cb, void *opaque)
{
    UvLoop *l = loop;
    PostItem it = { cb, opaque };

    uv_mutex_lock(&l->lock);
    g_array_append_val(l->queue, it);
    uv_mutex_unlock(&l->lock);
    uv_async_send(&l->post_async);
}

/* A uv_async_t, uv_idle_t, uv_timer_t or uv_poll_t with its callback. */
typedef struct UvHandle {
    union {
        uv_handle_t h;
        uv_async_t async;
        uv_idle_t idle;
        uv_timer_t timer;
        uv_poll_t poll;
    } u;
    UvLoop *l;
    BenchCb *cb;
    void *opaque;
} UvHandle;

static UvHandle *uvb_handle_new(void *loop, BenchCb *cb, void *opaque)
{
    UvHandle *h = g_new0(UvHandle, 1);

    h->l = loop;
    h->cb = cb;
    h->opaque = opaque;
    h->u.h.data = h;
    return h;
}

static void uvb_handle_closed(uv_handle_t *handle)
{
    g_free(handle->data);
}

/* Close and free; the memory goes when libuv is done with it. */
static void uvb_handle_free(void *p)
{
    UvHandle *h = p;

    uv_close(&h->u.h, uvb_handle_closed);
}

static void uvb_async_cb(uv_async_t *a)
{
    UvHandle *h = a->data;

    h->cb(h->opaque);
}

static void *uvb_waker_new(void *loop, BenchCb *cb, void *opaque)
{
    UvHandle *h = uvb_handle_new(loop, cb, opaque);

    uv_async_init(&h->l->loop, &h->u.async, uvb_async_cb);
    return h;
}

static void uvb_waker_fire(void *w)
{
    uv_async_send(&((UvHandle *)w)->u.async);
}

static void uvb_idle_cb(uv_idle_t *i)
{
    UvHandle *h = i->data;

    uv_idle_stop(i);
    h->cb(h->opaque);
}

static void *uvb_defer_new(void *loop, BenchCb *cb, void *opaque)
{
    UvHandle *h = uvb_handle_new(loop, cb, opaque);

    uv_idle_init(&h->l->loop, &h->u.idle);
    return h;
}

static void uvb_defer_arm(void *d)
{
    uv_idle_start(&((UvHandle *)d)->u.idle, uvb_idle_cb);
}

static void uvb_timer_cb(uv_timer_t *t)
{
    UvHandle *h = t->data;

    h->cb(h->opaque);
}

static void *uvb_timer_new(void *loop, BenchCb *cb, void *opaque)
{
    UvHandle *h = uvb_handle_new(loop, cb, opaque);

    uv_timer_init(&h->l->loop, &h->u.timer);
    return h;
}

/* Millisecond resolution: round down, so a deadline less than 1 ms away
 * is due on the next pass (rounding up would make libuv sleep). */
static void uvb_timer_arm(void *t, int64_t deadline_ns)
{
    int64_t ms = (deadline_ns - (int64_t)uv_hrtime()) / 1000000;

    uv_timer_start(&((UvHandle *)t)->u.timer, uvb_timer_cb,
                   ms > 0 ? (uint64_t)ms : 0, 0);
}

static void uvb_poll_cb(uv_poll_t *p, int status, int events)
{
    UvHandle *h = p->data;

    h->cb(h->opaque);
}

static void *uvb_fd_watch(void *loop, int fd, BenchCb *cb, void *opaque)
{
    UvHandle *h = uvb_handle_new(loop, cb, opaque);

    if (uv_poll_init(&h->l->loop, &h->u.poll, fd) < 0) {
        fprintf(stderr, "bench: uv_poll_init failed\n");
        exit(1);
    }
    uv_poll_start(&h->u.poll, UV_READABLE, uvb_poll_cb);
    return h;
}

/* Thread pool: uv_queue_work on libuv's global pool (UV_THREADPOOL_SIZE,
 * set by the driver before the first use). */
typedef struct UvWork {
    uv_work_t req;
    BenchWorkFn *fn;
    void *arg;
    BenchDoneFn *done;
    void *opaque;
    int ret;
} UvWork;

static void *uvb_pool_new(void *loop, int workers)
{
    return loop;
}

static void uvb_work_cb(uv_work_t *req)
{
    UvWork *w = req->data;

    w->ret = w->fn(w->arg);
}

static void uvb_after_work_cb(uv_work_t *req, int status)
{
    UvWork *w = req->data;

    w->done(w->opaque, status < 0 ? status : w->ret);
    g_free(w);
}

static void uvb_pool_submit(void *pool, BenchWorkFn *fn, void *arg,
                            BenchDoneFn *done, void *opaque)
{
    UvLoop *l = pool;
    UvWork *w = g_new(UvWork, 1);

    *w = (UvWork){ .fn = fn, .arg = arg, .done = done, .opaque = opaque };
    w->req.data = w;
    uv_queue_work(&l->loop, &w->req, uvb_work_cb, uvb_after_work_cb);
}

static void uvb_pool_free(void *pool)
{
}

const BenchLoopOps bench_libuv_ops = {
    .name = "libuv",
    .loop_new = uvb_loop_new,
    .loop_free = uvb_loop_free,
    .run = uvb_run,
    .stop = uvb_stop,
    .post = uvb_post,
    .waker_new = uvb_waker_new,
    .waker_fire = uvb_waker_fire,
    .waker_free = uvb_handle_free,
    .defer_new = uvb_defer_new,
    .defer_arm = uvb_defer_arm,
    .defer_free = uvb_handle_free,
    .timer_new = uvb_timer_new,
    .timer_arm = uvb_timer_arm,
    .timer_free = uvb_handle_free,
    .fd_watch = uvb_fd_watch,
    .fd_unwatch = uvb_handle_free,
    .pool_new = uvb_pool_new,
    .pool_submit = uvb_pool_submit,
    .pool_free = uvb_pool_free,
    .has_iothread = true,
};
