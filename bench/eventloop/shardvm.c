/*
 * shardvm's AioContext behind BenchLoopOps.
 *
 * Post: aio_bh_schedule_oneshot().  Waker and deferred callback: one
 * pre-allocated BH, aio_bh_schedule().  Timers: AioTimer (ns deadlines).
 * fd watches: aio_set_fd_handler().  A context is used with its defaults
 * (adaptive busy-polling as aio_context_new() sets it up) unless
 * --poll-max-ns says otherwise.
 * Thread pool and I/O thread: the context's own thread pool and a real
 * IOThread.
 */
#include "bench-ops.h"

#include "shardvm/aio.h"
#include "shardvm/iothread.h"
#include "shardvm/thread-pool.h"

#include <stdio.h>
#include <stdlib.h>

int64_t bench_shardvm_poll_max_ns = -1;

/* An AioContext has no run/stop of its own: its users (IOThreads, the
 * main loop) call aio_poll() until a flag says stop. */
typedef struct SvmLoop {
    AioContext *ctx;
    bool stop; /* loop thread only */
} SvmLoop;

static AioContext *svm_ctx(void *loop)
{
    return ((SvmLoop *)loop)->ctx;
}

static void *svm_loop_new(void)
{
    GError *err = NULL;
    SvmLoop *l = g_new0(SvmLoop, 1);

    l->ctx = aio_context_new(&err);
    if (!l->ctx) {
        fprintf(stderr, "bench: aio_context_new: %s\n", err->message);
        exit(1);
    }
    if (bench_shardvm_poll_max_ns >= 0) {
        aio_context_set_poll_params(l->ctx, bench_shardvm_poll_max_ns, 0, 0);
    }
    return l;
}

static void svm_loop_free(void *loop)
{
    aio_context_unref(svm_ctx(loop));
    g_free(loop);
}

static void svm_run(void *loop)
{
    SvmLoop *l = loop;

    l->stop = false;
    while (!l->stop) {
        aio_poll(l->ctx, true);
    }
}

static void svm_stop(void *loop)
{
    ((SvmLoop *)loop)->stop = true;
}

static void svm_post(void *loop, BenchCb *cb, void *opaque)
{
    if (aio_bh_schedule_oneshot(svm_ctx(loop), cb, opaque) < 0) {
        fprintf(stderr, "bench: aio_bh_schedule_oneshot failed\n");
        exit(1);
    }
}

static void *svm_bh_new(void *loop, BenchCb *cb, void *opaque)
{
    return aio_bh_new(svm_ctx(loop), cb, opaque);
}

static void svm_bh_schedule(void *bh)
{
    aio_bh_schedule(bh);
}

static void svm_bh_delete(void *bh)
{
    aio_bh_delete(bh);
}

static void *svm_timer_new(void *loop, BenchCb *cb, void *opaque)
{
    return aio_timer_new(svm_ctx(loop), cb, opaque);
}

static void svm_timer_arm(void *t, int64_t deadline_ns)
{
    aio_timer_mod(t, deadline_ns);
}

static void svm_timer_free(void *t)
{
    aio_timer_free(t);
}

typedef struct SvmFd {
    AioContext *ctx;
    int fd;
} SvmFd;

static void *svm_fd_watch(void *loop, int fd, BenchCb *cb, void *opaque)
{
    SvmFd *w = g_new(SvmFd, 1);

    w->ctx = svm_ctx(loop);
    w->fd = fd;
    aio_set_fd_handler(w->ctx, fd, cb, NULL, NULL, NULL, opaque);
    return w;
}

static void svm_fd_unwatch(void *p)
{
    SvmFd *w = p;

    aio_set_fd_handler(w->ctx, w->fd, NULL, NULL, NULL, NULL, NULL);
    g_free(w);
}

/* The pool belongs to the context; only its size is set here. */
static void *svm_pool_new(void *loop, int workers)
{
    if (thread_pool_set_limits(svm_ctx(loop), workers, workers, 0) < 0) {
        fprintf(stderr, "bench: thread_pool_set_limits failed\n");
        exit(1);
    }
    return loop;
}

static void svm_pool_submit(void *pool, BenchWorkFn *fn, void *arg,
                            BenchDoneFn *done, void *opaque)
{
    thread_pool_submit(svm_ctx(pool), fn, arg, done, opaque);
}

static void svm_pool_free(void *pool)
{
}

/* A real IOThread; the SvmLoop only carries its context for post(). */
typedef struct SvmIOThread {
    IOThread *iot;
    SvmLoop loop;
} SvmIOThread;

static void *svm_iothread_new(void **loop)
{
    GError *err = NULL;
    SvmIOThread *t = g_new0(SvmIOThread, 1);

    t->iot = iothread_new("bench", NULL, &err);
    if (!t->iot) {
        fprintf(stderr, "bench: iothread_new: %s\n", err->message);
        exit(1);
    }
    t->loop.ctx = iothread_get_aio_context(t->iot);
    *loop = &t->loop;
    return t;
}

static void svm_iothread_free(void *p)
{
    SvmIOThread *t = p;

    iothread_free(t->iot);
    g_free(t);
}

const BenchLoopOps bench_shardvm_ops = {
    .name = "shardvm",
    .loop_new = svm_loop_new,
    .loop_free = svm_loop_free,
    .run = svm_run,
    .stop = svm_stop,
    .post = svm_post,
    .waker_new = svm_bh_new,
    .waker_fire = svm_bh_schedule,
    .waker_free = svm_bh_delete,
    .defer_new = svm_bh_new,
    .defer_arm = svm_bh_schedule,
    .defer_free = svm_bh_delete,
    .timer_new = svm_timer_new,
    .timer_arm = svm_timer_arm,
    .timer_free = svm_timer_free,
    .fd_watch = svm_fd_watch,
    .fd_unwatch = svm_fd_unwatch,
    .pool_new = svm_pool_new,
    .pool_submit = svm_pool_submit,
    .pool_free = svm_pool_free,
    .iothread_new = svm_iothread_new,
    .iothread_free = svm_iothread_free,
    .has_iothread = true,
};
