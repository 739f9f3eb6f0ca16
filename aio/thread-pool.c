/*
 * Thread pool: one per AioContext, created on first use, running blocking
 * functions on "worker" threads.  Completions travel back to the context's
 * home thread through a one-shot BH.  See include/shardvm/thread-pool.h.
 */
#include "aio-internal.h"
#include "shardvm/error.h"
#include "shardvm/thread.h"
#include "shardvm/thread-pool.h"

#include <errno.h>
#include <time.h>

enum {
    JOB_QUEUED,  /* on pool->queue, no worker has it */
    JOB_RUNNING, /* a worker runs fn */
    JOB_DONE,    /* ret is valid; on pool->done */
};

struct ThreadPoolJob {
    struct ThreadPool *pool;
    ThreadPoolFunc *fn;
    void *arg;
    ThreadPoolDoneFunc *done;
    void *opaque;
    /* Written by the worker (or by thread_pool_cancel()) before the
     * release store of state = JOB_DONE; read after an acquire load. */
    int ret;
    atomic_int state; /* JOB_*; see ret */
    GList link;       /* on pool->queue or pool->done; pool->lock */
};

typedef struct ThreadPool {
    AioContext *ctx; /* not referenced: the pool dies with the context */
    /*
     * One reference for the context (dropped by thread_pool_free()) and
     * one per scheduled completion BH: at finalisation the context runs
     * pending one-shot BHs *after* freeing the pool, and that BH must
     * still find it.
     */
    atomic_int refcnt;

    pthread_mutex_t lock;
    pthread_cond_t work_cond;   /* workers wait for jobs; lock */
    pthread_cond_t exit_cond;   /* a worker exited; lock */
    GQueue queue;               /* JOB_QUEUED jobs, FIFO; lock */
    GQueue done;                /* JOB_DONE jobs awaiting their BH; lock */
    GArray *exited;             /* pthread_t of exited workers to join; lock */
    int min, max;               /* worker limits; lock */
    int idle_timeout_ms;        /* lock */
    int nworkers;               /* live workers; lock */
    int idle;                   /* workers waiting on work_cond; lock */
    bool stopping;              /* thread_pool_free() runs; lock */

    /* A completion BH is scheduled and has not started yet; workers use
     * it to schedule one BH per batch rather than one per job. */
    atomic_bool bh_scheduled;
} ThreadPool;

static void *pool_worker(void *opaque);
static void pool_destroy(ThreadPool *pool);

static void pool_unref(ThreadPool *pool)
{
    if (atomic_fetch_sub_explicit(&pool->refcnt, 1, memory_order_acq_rel) == 1) {
        pool_destroy(pool);
    }
}

static void pool_timeout_abs(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Join the threads of workers that have exited.  Never hold pool->lock
 * while joining: an exiting worker still needs it for a moment. */
static void pool_reap(ThreadPool *pool)
{
    pthread_mutex_lock(&pool->lock);
    GArray *exited = pool->exited;
    pool->exited = g_array_new(false, false, sizeof(pthread_t));
    pthread_mutex_unlock(&pool->lock);

    for (guint i = 0; i < exited->len; i++) {
        pthread_join(g_array_index(exited, pthread_t, i), NULL);
    }
    g_array_free(exited, true);
}

/* Start one worker.  pool->lock held.  Returns 0 or a negative errno. */
static int pool_spawn_locked(ThreadPool *pool)
{
    pthread_t t;
    GError *err = NULL;
    int r = shardvm_thread_create(&t, "worker", pool_worker, pool, &err);

    if (r < 0) {
        g_warning("thread pool: %s", err->message);
        g_error_free(err);
        return r;
    }
    /* Workers are joined through pool->exited when they leave. */
    pool->nworkers++;
    return 0;
}

/* Call the done callbacks of finished jobs, in completion order.  Home
 * thread (or the finalising thread once the home thread is gone). */
static void pool_run_completions(ThreadPool *pool)
{
    GQueue batch;

    pthread_mutex_lock(&pool->lock);
    batch = pool->done;
    g_queue_init(&pool->done);
    pthread_mutex_unlock(&pool->lock);

    GList *l;
    while ((l = g_queue_pop_head_link(&batch)) != NULL) {
        ThreadPoolJob *job = l->data;

        /* Pairs with the release store in pool_worker()/cancel: ret is
         * valid once the state says so. */
        int state = atomic_load_explicit(&job->state, memory_order_acquire);
        g_assert(state == JOB_DONE);
        job->done(job->opaque, job->ret);
        g_free(job);
    }
}

static void pool_completion_bh(void *opaque)
{
    ThreadPool *pool = opaque;

    /* Clear first: a job finishing after the steal in
     * pool_run_completions() schedules a new BH (its push comes after our
     * steal, so its exchange comes after this store). */
    atomic_store(&pool->bh_scheduled, false);
    pool_run_completions(pool);
    pool_reap(pool);
    pool_unref(pool); /* the BH's reference */
}

/* Queue @job for its done callback.  pool->lock held. */
static void pool_complete_locked(ThreadPool *pool, ThreadPoolJob *job)
{
    g_queue_push_tail_link(&pool->done, &job->link);
}

/* Make sure a completion BH will run.  Returns false when the context is
 * closed and no BH can be scheduled any more.  Any thread. */
static bool pool_kick_completion(ThreadPool *pool)
{
    if (atomic_exchange(&pool->bh_scheduled, true)) {
        return true; /* one is pending and will see our job */
    }
    atomic_fetch_add(&pool->refcnt, 1);
    if (aio_bh_schedule_oneshot(pool->ctx, pool_completion_bh, pool) < 0) {
        /* The context is closed: its home thread will not poll again.
         * thread_pool_free() delivers what is left. */
        atomic_store(&pool->bh_scheduled, false);
        pool_unref(pool);
        return false;
    }
    return true;
}

static void *pool_worker(void *opaque)
{
    ThreadPool *pool = opaque;

    pthread_mutex_lock(&pool->lock);
    while (!pool->stopping && pool->nworkers <= pool->max) {
        if (g_queue_is_empty(&pool->queue)) {
            struct timespec deadline;
            pool_timeout_abs(&deadline, pool->idle_timeout_ms);
            pool->idle++;
            int r = pthread_cond_timedwait(&pool->work_cond, &pool->lock,
                                           &deadline);
            pool->idle--;
            if (r == ETIMEDOUT && g_queue_is_empty(&pool->queue) &&
                pool->nworkers > pool->min) {
                break;
            }
            continue;
        }

        GList *l = g_queue_pop_head_link(&pool->queue);
        ThreadPoolJob *job = l->data;
        atomic_store_explicit(&job->state, JOB_RUNNING, memory_order_relaxed);
        pthread_mutex_unlock(&pool->lock);

        int ret = job->fn(job->arg);

        /* Result first, then the state that makes it valid: pairs with
         * the acquire load in pool_run_completions(). */
        job->ret = ret;
        atomic_store_explicit(&job->state, JOB_DONE, memory_order_release);
        pthread_mutex_lock(&pool->lock);
        pool_complete_locked(pool, job);
        pthread_mutex_unlock(&pool->lock);
        pool_kick_completion(pool);
        pthread_mutex_lock(&pool->lock);
    }
    pool->nworkers--;
    pthread_t self = pthread_self();
    g_array_append_val(pool->exited, self);
    pthread_cond_broadcast(&pool->exit_cond);
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

static ThreadPool *pool_new(AioContext *ctx)
{
    ThreadPool *pool = g_new0(ThreadPool, 1);
    pthread_condattr_t attr;

    pool->ctx = ctx;
    atomic_init(&pool->refcnt, 1);
    pthread_mutex_init(&pool->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&pool->work_cond, &attr);
    pthread_condattr_destroy(&attr);
    pthread_cond_init(&pool->exit_cond, NULL);
    g_queue_init(&pool->queue);
    g_queue_init(&pool->done);
    pool->exited = g_array_new(false, false, sizeof(pthread_t));
    pool->min = 0;
    pool->max = 64;
    pool->idle_timeout_ms = 10000;
    return pool;
}

/* The pool of @ctx, created on first use by whichever thread gets there
 * first (compare-and-swap; the loser frees its unused copy).  NULL once
 * the context is being finalised (POOL_DEAD). */
static ThreadPool *pool_get(AioContext *ctx)
{
    ThreadPool *pool = atomic_load_explicit(&ctx->thread_pool,
                                            memory_order_acquire);
    if (pool) {
        return pool == POOL_DEAD ? NULL : pool;
    }
    ThreadPool *fresh = pool_new(ctx);
    if (atomic_compare_exchange_strong_explicit(&ctx->thread_pool, &pool,
                                                fresh, memory_order_acq_rel,
                                                memory_order_acquire)) {
        return fresh;
    }
    thread_pool_free(fresh); /* never had a worker or a job */
    return pool == POOL_DEAD ? NULL : pool;
}

ThreadPoolJob *thread_pool_submit(AioContext *ctx, ThreadPoolFunc *fn,
                                  void *arg, ThreadPoolDoneFunc *done,
                                  void *opaque)
{
    ThreadPool *pool = pool_get(ctx);
    ThreadPoolJob *job;

    if (!pool) {
        return NULL; /* @ctx is being finalised: refused, @done never runs */
    }
    job = g_new0(ThreadPoolJob, 1);

    job->pool = pool;
    job->fn = fn;
    job->arg = arg;
    job->done = done;
    job->opaque = opaque;
    job->link.data = job;
    atomic_init(&job->state, JOB_QUEUED);

    pthread_mutex_lock(&pool->lock);
    g_queue_push_tail_link(&pool->queue, &job->link);
    /* Enough idle workers for the queue?  Otherwise grow, up to max. */
    if (pool->idle < (int)pool->queue.length &&
        pool->nworkers < pool->max) {
        int r = pool_spawn_locked(pool);
        if (r < 0 && pool->nworkers == 0) {
            /* Nobody could ever run it: complete it with the error. */
            g_queue_unlink(&pool->queue, &job->link);
            job->ret = r;
            atomic_store_explicit(&job->state, JOB_DONE,
                                  memory_order_release);
            pool_complete_locked(pool, job);
            pthread_mutex_unlock(&pool->lock);
            pool_kick_completion(pool);
            return job;
        }
    }
    pthread_cond_signal(&pool->work_cond);
    pthread_mutex_unlock(&pool->lock);
    return job;
}

bool thread_pool_cancel(ThreadPoolJob *job)
{
    ThreadPool *pool = job->pool;
    bool dequeued = false;

    pthread_mutex_lock(&pool->lock);
    if (atomic_load_explicit(&job->state, memory_order_relaxed) ==
        JOB_QUEUED) {
        g_queue_unlink(&pool->queue, &job->link);
        job->ret = -ECANCELED;
        atomic_store_explicit(&job->state, JOB_DONE, memory_order_release);
        pool_complete_locked(pool, job);
        dequeued = true;
    }
    pthread_mutex_unlock(&pool->lock);
    if (dequeued) {
        pool_kick_completion(pool);
    }
    return dequeued;
}

int thread_pool_set_limits(AioContext *ctx, int min, int max,
                           int idle_timeout_ms)
{
    if (max < 1 || min < 0 || min > max || idle_timeout_ms < 0) {
        return -EINVAL;
    }
    ThreadPool *pool = pool_get(ctx);
    int r = 0;

    if (!pool) {
        return -ESHUTDOWN;
    }
    pthread_mutex_lock(&pool->lock);
    pool->min = min;
    pool->max = max;
    if (idle_timeout_ms > 0) {
        pool->idle_timeout_ms = idle_timeout_ms;
    }
    /* Keep at least min workers alive; extra ones notice the new max or
     * timeout when woken. */
    while (pool->nworkers < pool->min && r == 0) {
        r = pool_spawn_locked(pool);
    }
    pthread_cond_broadcast(&pool->work_cond);
    pthread_mutex_unlock(&pool->lock);
    return r;
}

int thread_pool_get_workers(AioContext *ctx)
{
    ThreadPool *pool = atomic_load_explicit(&ctx->thread_pool,
                                            memory_order_acquire);
    if (!pool || pool == POOL_DEAD) {
        return 0;
    }
    pthread_mutex_lock(&pool->lock);
    int n = pool->nworkers;
    pthread_mutex_unlock(&pool->lock);
    return n;
}

static void pool_destroy(ThreadPool *pool)
{
    g_assert(g_queue_is_empty(&pool->queue) && g_queue_is_empty(&pool->done));
    g_array_free(pool->exited, true);
    pthread_cond_destroy(&pool->work_cond);
    pthread_cond_destroy(&pool->exit_cond);
    pthread_mutex_destroy(&pool->lock);
    g_free(pool);
}

void thread_pool_free(struct ThreadPool *pool)
{
    if (!pool) {
        return;
    }
    pthread_mutex_lock(&pool->lock);
    pool->stopping = true;
    /* Queued jobs will never run now: they complete with -ECANCELED.
     * Running ones finish first (we wait for their workers). */
    GList *l;
    while ((l = g_queue_pop_head_link(&pool->queue)) != NULL) {
        ThreadPoolJob *job = l->data;
        job->ret = -ECANCELED;
        atomic_store_explicit(&job->state, JOB_DONE, memory_order_release);
        pool_complete_locked(pool, job);
    }
    pthread_cond_broadcast(&pool->work_cond);
    while (pool->nworkers > 0) {
        pthread_cond_wait(&pool->exit_cond, &pool->lock);
    }
    bool have_done = !g_queue_is_empty(&pool->done);
    pthread_mutex_unlock(&pool->lock);
    pool_reap(pool);

    /*
     * Every done callback still runs exactly once.  Normally through a
     * completion BH, which the context runs as it closes during its
     * finalisation (it holds its own pool reference).  If the context was
     * closed earlier (a stopped IOThread), nobody polls it any more and
     * the finalising thread is the only one left: deliver them here.
     */
    if (have_done && !pool_kick_completion(pool)) {
        pool_run_completions(pool);
    }
    pool_unref(pool); /* the context's reference */
}
