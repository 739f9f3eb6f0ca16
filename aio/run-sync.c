/* Run a function in a context's home thread and wait for it. */
#include "aio-internal.h"

typedef struct RunSync {
    AioBHFunc *fn;
    void *opaque;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done; /* lock */
} RunSync;

static void run_sync_bh(void *opaque)
{
    RunSync *rs = opaque;

    rs->fn(rs->opaque);
    pthread_mutex_lock(&rs->lock);
    rs->done = true;
    pthread_cond_signal(&rs->cond);
    /* The waiter may free rs as soon as we unlock. */
    pthread_mutex_unlock(&rs->lock);
}

int aio_context_run_sync(AioContext *ctx, AioBHFunc *fn, void *opaque)
{
    RunSync rs = { .fn = fn, .opaque = opaque, .done = false };
    int r;

    if (aio_context_in_home_thread(ctx)) {
        fn(opaque);
        return 0;
    }
    pthread_mutex_init(&rs.lock, NULL);
    pthread_cond_init(&rs.cond, NULL);
    r = aio_bh_schedule_oneshot(ctx, run_sync_bh, &rs);
    if (r == 0) {
        pthread_mutex_lock(&rs.lock);
        while (!rs.done) {
            pthread_cond_wait(&rs.cond, &rs.lock);
        }
        pthread_mutex_unlock(&rs.lock);
    }
    pthread_cond_destroy(&rs.cond);
    pthread_mutex_destroy(&rs.lock);
    return r;
}
