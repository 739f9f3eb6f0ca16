/*
 * libevent 2.1 behind BenchLoopOps.
 *
 * The bases are made thread-aware (evthread_use_pthreads(), called by the
 * driver before any base exists), so event_active() and event_base_once()
 * from another thread lock the base and wake it through its internal
 * notification fd.  A post is an event_base_once() with a zero timeout
 * (libevent activates it at once, one allocation per call); the waker and
 * the deferred callback are one pre-allocated event made active.
 * libevent has no thread pool.
 */
#include "bench-ops.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>

static void *evb_loop_new(void)
{
    struct event_base *b = event_base_new();

    if (!b) {
        fprintf(stderr, "bench: event_base_new failed\n");
        exit(1);
    }
    return b;
}

static void evb_loop_free(void *loop)
{
    event_base_free(loop);
}

/* NO_EXIT_ON_EMPTY: a base with nothing registered must still wait, like
 * the other loops do, until a post arrives. */
static void evb_run(void *loop)
{
    event_base_loop(loop, EVLOOP_NO_EXIT_ON_EMPTY);
}

static void evb_stop(void *loop)
{
    event_base_loopbreak(loop);
}

typedef struct EvCb {
    struct event *ev;
    BenchCb *cb;
    void *opaque;
} EvCb;

static void evb_once_cb(evutil_socket_t fd, short what, void *arg)
{
    EvCb *c = arg;

    c->cb(c->opaque);
    g_free(c);
}

static void evb_post(void *loop, BenchCb *cb, void *opaque)
{
    EvCb *c = g_new(EvCb, 1);
    struct timeval zero = { 0, 0 };

    c->cb = cb;
    c->opaque = opaque;
    if (event_base_once(loop, -1, EV_TIMEOUT, evb_once_cb, c, &zero) < 0) {
        fprintf(stderr, "bench: event_base_once failed\n");
        exit(1);
    }
}

static void evb_event_cb(evutil_socket_t fd, short what, void *arg)
{
    EvCb *c = arg;

    c->cb(c->opaque);
}

static EvCb *evb_event_new(void *loop, evutil_socket_t fd, short what,
                           BenchCb *cb, void *opaque)
{
    EvCb *c = g_new(EvCb, 1);

    c->cb = cb;
    c->opaque = opaque;
    c->ev = event_new(loop, fd, what, evb_event_cb, c);
    if (!c->ev) {
        fprintf(stderr, "bench: event_new failed\n");
        exit(1);
    }
    return c;
}

static void evb_event_free(void *p)
{
    EvCb *c = p;

    event_free(c->ev);
    g_free(c);
}

static void *evb_active_new(void *loop, BenchCb *cb, void *opaque)
{
    return evb_event_new(loop, -1, 0, cb, opaque);
}

static void evb_active_fire(void *p)
{
    event_active(((EvCb *)p)->ev, EV_TIMEOUT, 0);
}

static void *evb_timer_new(void *loop, BenchCb *cb, void *opaque)
{
    return evb_event_new(loop, -1, 0, cb, opaque);
}

/* Microsecond resolution, relative timeout: round down like libuv. */
static void evb_timer_arm(void *t, int64_t deadline_ns)
{
    int64_t us = (deadline_ns - bench_now_ns()) / 1000;
    struct timeval tv = { 0, 0 };

    if (us > 0) {
        tv.tv_sec = us / 1000000;
        tv.tv_usec = us % 1000000;
    }
    evtimer_add(((EvCb *)t)->ev, &tv);
}

static void *evb_fd_watch(void *loop, int fd, BenchCb *cb, void *opaque)
{
    EvCb *c = evb_event_new(loop, fd, EV_READ | EV_PERSIST, cb, opaque);

    event_add(c->ev, NULL);
    return c;
}

const BenchLoopOps bench_libevent_ops = {
    .name = "libevent",
    .loop_new = evb_loop_new,
    .loop_free = evb_loop_free,
    .run = evb_run,
    .stop = evb_stop,
    .post = evb_post,
    .waker_new = evb_active_new,
    .waker_fire = evb_active_fire,
    .waker_free = evb_event_free,
    .defer_new = evb_active_new,
    .defer_arm = evb_active_fire,
    .defer_free = evb_event_free,
    .timer_new = evb_timer_new,
    .timer_arm = evb_timer_arm,
    .timer_free = evb_event_free,
    .fd_watch = evb_fd_watch,
    .fd_unwatch = evb_event_free,
    .has_iothread = true,
};
