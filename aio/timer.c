/*
 * Timers: a binary min-heap of armed timers per context, on
 * CLOCK_MONOTONIC with ns deadlines.  The heap belongs to the home thread;
 * other threads arm and cancel a timer through the timer's own BH, which
 * applies the latest request in the home thread.
 */
#include "aio-internal.h"

#include <errno.h>

#define TIMER_REQ_NONE INT64_MIN /* no cross-thread request pending */
#define TIMER_REQ_DEL (-1)       /* cross-thread request: disarm */

struct AioTimer {
    AioContext *ctx;
    AioTimerFunc *cb;
    void *opaque;
    int64_t expire;  /* deadline, -1 when disarmed; home thread */
    size_t heap_idx; /* index in ctx->timers while armed; home thread */
    /* Latest request from another thread (deadline, TIMER_REQ_DEL or
     * TIMER_REQ_NONE), applied by remote_bh in the home thread. */
    _Atomic int64_t remote_req;
    AioBH *remote_bh;
};

static bool heap_less(AioTimer *a, AioTimer *b)
{
    return a->expire < b->expire;
}

static void heap_set(AioContext *ctx, size_t i, AioTimer *t)
{
    ctx->timers[i] = t;
    t->heap_idx = i;
}

static void heap_sift_up(AioContext *ctx, size_t i)
{
    AioTimer *t = ctx->timers[i];

    while (i > 0) {
        size_t parent = (i - 1) / 2;

        if (!heap_less(t, ctx->timers[parent])) {
            break;
        }
        heap_set(ctx, i, ctx->timers[parent]);
        i = parent;
    }
    heap_set(ctx, i, t);
}

static void heap_sift_down(AioContext *ctx, size_t i)
{
    AioTimer *t = ctx->timers[i];
    size_t n = ctx->ntimers;

    for (;;) {
        size_t c = 2 * i + 1;

        if (c >= n) {
            break;
        }
        if (c + 1 < n && heap_less(ctx->timers[c + 1], ctx->timers[c])) {
            c++;
        }
        if (!heap_less(ctx->timers[c], t)) {
            break;
        }
        heap_set(ctx, i, ctx->timers[c]);
        i = c;
    }
    heap_set(ctx, i, t);
}

static void heap_remove(AioContext *ctx, AioTimer *t)
{
    size_t i = t->heap_idx;
    AioTimer *last = ctx->timers[--ctx->ntimers];

    t->expire = -1;
    if (last == t) {
        return;
    }
    heap_set(ctx, i, last);
    heap_sift_down(ctx, i);
    heap_sift_up(ctx, last->heap_idx);
}

static void timer_mod_local(AioTimer *t, int64_t expire_ns)
{
    AioContext *ctx = t->ctx;

    if (expire_ns < 0) {
        expire_ns = 0;
    }
    if (t->expire >= 0) {
        bool earlier = expire_ns < t->expire;

        t->expire = expire_ns;
        if (earlier) {
            heap_sift_up(ctx, t->heap_idx);
        } else {
            heap_sift_down(ctx, t->heap_idx);
        }
        return;
    }
    if (ctx->ntimers == ctx->timers_cap) {
        ctx->timers_cap = ctx->timers_cap ? 2 * ctx->timers_cap : 16;
        ctx->timers = g_renew(AioTimer *, ctx->timers, ctx->timers_cap);
    }
    t->expire = expire_ns;
    ctx->timers[ctx->ntimers] = t;
    t->heap_idx = ctx->ntimers++;
    heap_sift_up(ctx, t->heap_idx);
}

static void timer_del_local(AioTimer *t)
{
    if (t->expire >= 0) {
        heap_remove(t->ctx, t);
    }
}

static void timer_remote_bh(void *opaque)
{
    AioTimer *t = opaque;
    int64_t req = atomic_exchange(&t->remote_req, TIMER_REQ_NONE);

    if (req == TIMER_REQ_DEL) {
        timer_del_local(t);
    } else if (req != TIMER_REQ_NONE) {
        timer_mod_local(t, req);
    }
}

AioTimer *aio_timer_new(AioContext *ctx, AioTimerFunc *cb, void *opaque)
{
    AioTimer *t = g_new0(AioTimer, 1);

    t->ctx = ctx;
    t->cb = cb;
    t->opaque = opaque;
    t->expire = -1;
    atomic_init(&t->remote_req, TIMER_REQ_NONE);
    t->remote_bh = aio_bh_new_internal(ctx, timer_remote_bh, t);
    atomic_fetch_add(&ctx->live_timers, 1);
    return t;
}

/* From another thread: record the request, let the home thread apply it. */
static int timer_request(AioTimer *t, int64_t req)
{
    atomic_store(&t->remote_req, req);
    return aio_bh_schedule(t->remote_bh);
}

int aio_timer_mod(AioTimer *t, int64_t expire_ns)
{
    if (!aio_context_in_home_thread_strict(t->ctx)) {
        return timer_request(t, expire_ns < 0 ? 0 : expire_ns);
    }
    /* A request still in flight from another thread is older than this. */
    atomic_store_explicit(&t->remote_req, TIMER_REQ_NONE, memory_order_relaxed);
    timer_mod_local(t, expire_ns);
    return 0;
}

int aio_timer_del(AioTimer *t)
{
    if (!aio_context_in_home_thread_strict(t->ctx)) {
        return timer_request(t, TIMER_REQ_DEL);
    }
    atomic_store_explicit(&t->remote_req, TIMER_REQ_NONE, memory_order_relaxed);
    timer_del_local(t);
    return 0;
}

bool aio_timer_pending(AioTimer *t)
{
    return t->expire >= 0;
}

int64_t aio_timer_expire_ns(AioTimer *t)
{
    return t->expire;
}

void aio_timer_free(AioTimer *t)
{
    if (!t) {
        return;
    }
    timer_del_local(t);
    aio_bh_delete(t->remote_bh);
    atomic_fetch_sub(&t->ctx->live_timers, 1);
    g_free(t);
}

int64_t aio_timers_deadline_ns(AioContext *ctx)
{
    return ctx->ntimers ? ctx->timers[0]->expire : -1;
}

bool aio_timers_run(AioContext *ctx)
{
    int64_t now;
    size_t budget;
    bool progress = false;

    if (ctx->ntimers == 0) {
        return false;
    }
    now = aio_clock_ns();
    /*
     * A callback may re-arm its timer in the past; the budget keeps such a
     * timer from running forever within one pass.  Nothing is held across
     * a callback, so callbacks may free any timer, their own included.
     */
    budget = ctx->ntimers;
    while (budget-- && ctx->ntimers && ctx->timers[0]->expire <= now) {
        AioTimer *t = ctx->timers[0];

        heap_remove(ctx, t);
        t->cb(t->opaque);
        progress = true;
    }
    return progress;
}

void aio_timers_destroy(AioContext *ctx)
{
    g_free(ctx->timers);
    ctx->timers = NULL;
    ctx->ntimers = ctx->timers_cap = 0;
}
