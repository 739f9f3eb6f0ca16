/*
 * IOThread: a "IO <id>" thread polling its own AioContext until stopped.
 * See include/shardvm/iothread.h.
 */
#include "shardvm/iothread.h"
#include "shardvm/error.h"
#include "shardvm/thread.h"
#include "shardvm/thread-pool.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

struct IOThread {
    char *id;
    AioContext *ctx; /* owned; freed by iothread_free() */
    pthread_t thread;

    /* Start-up handshake: the thread sets running once it is the
     * context's home thread.  lock. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool running;
    int tid; /* the thread's id (gettid), set before running */

    /* Set by the stop BH, in the IOThread; read by its loop.  Atomic only
     * so that tests may peek; nobody else writes it. */
    atomic_bool stopping;
    /* The thread has been joined; the caller of stop/free. */
    bool stopped;

    /* Current properties; lock (runtime changes may come from any thread). */
    IOThreadProps props;

    /* Devices serving queues here (iothread_add_user); main thread/BQL. */
    atomic_int users;
};

static const IOThreadProps iothread_defaults = {
    .poll_max_ns = 32768,
    .poll_grow = 0,
    .poll_shrink = 0,
    .aio_max_batch = 0,
    .thread_pool_min = 0,
    .thread_pool_max = 64,
};

/* @props merged over @base: -1 keeps base.  Returns 0 or -EINVAL. */
static int iothread_merge_props(const IOThreadProps *base,
                                const IOThreadProps *props,
                                IOThreadProps *out, GError **errp)
{
    *out = *base;
    if (!props) {
        return 0;
    }
    const int64_t *in = (const int64_t *)props;
    int64_t *o = (int64_t *)out;
    static const char *const names[] = {
        "poll-max-ns", "poll-grow", "poll-shrink", "aio-max-batch",
        "thread-pool-min", "thread-pool-max",
    };
    G_STATIC_ASSERT(sizeof(IOThreadProps) == 6 * sizeof(int64_t));

    for (int i = 0; i < 6; i++) {
        if (in[i] == -1) {
            continue;
        }
        if (in[i] < 0) {
            return shardvm_error_set(errp, -EINVAL,
                                     "iothread property %s: %lld is negative",
                                     names[i], (long long)in[i]);
        }
        o[i] = in[i];
    }
    if (out->thread_pool_max < 1 || out->thread_pool_max > INT_MAX ||
        out->thread_pool_min > out->thread_pool_max) {
        return shardvm_error_set(errp, -EINVAL,
                                 "iothread properties: need 0 <= "
                                 "thread-pool-min (%lld) <= thread-pool-max "
                                 "(%lld), thread-pool-max >= 1",
                                 (long long)out->thread_pool_min,
                                 (long long)out->thread_pool_max);
    }
    return 0;
}

/* Push @p into the context and its pool.  Any thread. */
static int iothread_apply_props(IOThread *iot, const IOThreadProps *p,
                                bool pool_changed, GError **errp)
{
    int r = aio_context_set_poll_params(iot->ctx, p->poll_max_ns,
                                        p->poll_grow, p->poll_shrink);
    if (r == 0) {
        r = aio_context_set_aio_max_batch(iot->ctx, p->aio_max_batch);
    }
    /* The pool is created on first use; only touch it when asked, so an
     * IOThread that never runs blocking jobs never has one. */
    if (r == 0 && pool_changed) {
        r = thread_pool_set_limits(iot->ctx, (int)p->thread_pool_min,
                                   (int)p->thread_pool_max, 0);
    }
    if (r < 0) {
        return shardvm_error_set(errp, r, "iothread %s: cannot apply "
                                 "properties: %s", iot->id, g_strerror(-r));
    }
    return 0;
}

static void *iothread_run(void *opaque)
{
    IOThread *iot = opaque;

    aio_context_set_home_thread(iot->ctx);
    pthread_mutex_lock(&iot->lock);
    iot->tid = (int)gettid();
    iot->running = true;
    pthread_cond_signal(&iot->cond);
    pthread_mutex_unlock(&iot->lock);

    while (!atomic_load(&iot->stopping)) {
        aio_poll(iot->ctx, true);
    }
    /* Run what was scheduled before the stop; refuse later schedules. */
    aio_context_close(iot->ctx);
    return NULL;
}

IOThread *iothread_new(const char *id, const IOThreadProps *props,
                       GError **errp)
{
    IOThreadProps p;
    char name[16];

    if (iothread_merge_props(&iothread_defaults, props, &p, errp) < 0) {
        return NULL;
    }
    IOThread *iot = g_new0(IOThread, 1);
    iot->id = g_strdup(id);
    iot->props = p;
    pthread_mutex_init(&iot->lock, NULL);
    pthread_cond_init(&iot->cond, NULL);
    iot->ctx = aio_context_new(errp);
    if (!iot->ctx) {
        goto fail;
    }
    bool pool = props && (props->thread_pool_min != -1 ||
                          props->thread_pool_max != -1);
    if (iothread_apply_props(iot, &p, pool, errp) < 0) {
        goto fail_ctx;
    }
    g_snprintf(name, sizeof(name), "IO %s", id);
    if (shardvm_thread_create(&iot->thread, name, iothread_run, iot,
                              errp) < 0) {
        goto fail_ctx;
    }
    pthread_mutex_lock(&iot->lock);
    while (!iot->running) {
        pthread_cond_wait(&iot->cond, &iot->lock);
    }
    pthread_mutex_unlock(&iot->lock);
    return iot;

fail_ctx:
    aio_context_unref(iot->ctx);
fail:
    pthread_cond_destroy(&iot->cond);
    pthread_mutex_destroy(&iot->lock);
    g_free(iot->id);
    g_free(iot);
    return NULL;
}

int iothread_set_props(IOThread *iot, const IOThreadProps *props,
                       GError **errp)
{
    IOThreadProps p;

    pthread_mutex_lock(&iot->lock);
    int r = iothread_merge_props(&iot->props, props, &p, errp);
    if (r == 0) {
        bool pool = p.thread_pool_min != iot->props.thread_pool_min ||
                    p.thread_pool_max != iot->props.thread_pool_max;
        r = iothread_apply_props(iot, &p, pool, errp);
        if (r == 0) {
            iot->props = p;
        }
    }
    pthread_mutex_unlock(&iot->lock);
    return r;
}

void iothread_get_props(IOThread *iot, IOThreadProps *out)
{
    pthread_mutex_lock(&iot->lock);
    *out = iot->props;
    pthread_mutex_unlock(&iot->lock);
}

AioContext *iothread_get_aio_context(IOThread *iot)
{
    return iot->ctx;
}

const char *iothread_get_id(IOThread *iot)
{
    return iot->id;
}

/* Runs in the IOThread: the loop sees the flag when aio_poll() returns. */
static void iothread_stop_bh(void *opaque)
{
    IOThread *iot = opaque;

    atomic_store(&iot->stopping, true);
}

void iothread_stop(IOThread *iot)
{
    if (iot->stopped) {
        return;
    }
    if (aio_context_in_home_thread(iot->ctx)) {
        g_error("iothread_stop(%s) from the IOThread itself would deadlock",
                iot->id);
    }
    /* A BH (not a bare flag) so the thread wakes at once and every BH
     * scheduled before this one still runs in order. */
    int r = aio_bh_schedule_oneshot(iot->ctx, iothread_stop_bh, iot);
    g_assert(r == 0); /* only the IOThread closes its context */
    aio_notify(iot->ctx);
    pthread_join(iot->thread, NULL);
    iot->stopped = true;
}

void iothread_free(IOThread *iot)
{
    if (!iot) {
        return;
    }
    iothread_stop(iot);
    /* Finalisation also frees the context's thread pool (joins workers). */
    aio_context_unref(iot->ctx);
    pthread_cond_destroy(&iot->cond);
    pthread_mutex_destroy(&iot->lock);
    g_free(iot->id);
    g_free(iot);
}

int iothread_get_thread_id(IOThread *iot)
{
    pthread_mutex_lock(&iot->lock);
    int tid = iot->tid;
    pthread_mutex_unlock(&iot->lock);
    return tid;
}

void iothread_add_user(IOThread *iot)
{
    atomic_fetch_add(&iot->users, 1);
}

void iothread_del_user(IOThread *iot)
{
    int old = atomic_fetch_sub(&iot->users, 1);
    g_assert(old > 0);
}

bool iothread_in_use(IOThread *iot)
{
    return atomic_load(&iot->users) > 0;
}
