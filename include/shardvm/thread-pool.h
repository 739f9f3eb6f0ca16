/*
 * Thread pool: one per AioContext, created on first use, running blocking
 * functions on worker threads (named "worker"); each job's completion
 * callback runs back in the context's home thread, as a BH.
 */
#ifndef SHARDVM_THREAD_POOL_H
#define SHARDVM_THREAD_POOL_H

#include "shardvm/aio.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ThreadPoolJob ThreadPoolJob;

/* Runs on a worker thread; its return value goes to the done callback. */
typedef int ThreadPoolFunc(void *arg);
/* Runs in the context's home thread: @ret is the job's return value, or
 * -ECANCELED when the job was cancelled before it started. */
typedef void ThreadPoolDoneFunc(void *opaque, int ret);

/*
 * thread_pool_submit: queue @fn(@arg) on @ctx's pool; @done(@opaque, ret)
 * then runs in @ctx's home thread (always exactly once).  Returns a handle
 * valid until @done has been called.  Home thread of @ctx.
 *
 * At @ctx's finalisation queued jobs complete with -ECANCELED and running
 * ones are waited for; their @done runs during the finalisation (in the
 * finalising thread when @ctx was already closed, e.g. a stopped IOThread).
 * A submission made while @ctx is being finalised (from such a @done) is
 * refused: it returns NULL and @done is never called.
 */
ThreadPoolJob *thread_pool_submit(AioContext *ctx, ThreadPoolFunc *fn,
                                  void *arg, ThreadPoolDoneFunc *done,
                                  void *opaque);

/*
 * thread_pool_cancel: if @job has not started, dequeue it; its @done runs
 * with -ECANCELED.  A running or finished job is not affected.  Returns
 * true if it was dequeued.  Home thread of the job's context.
 */
bool thread_pool_cancel(ThreadPoolJob *job);

/*
 * thread_pool_set_limits: at least @min and at most @max workers (@max >= 1,
 * @min <= @max; else -EINVAL); idle workers above @min exit after
 * @idle_timeout_ms (0 keeps the current timeout, default 10000).  Any
 * thread.  -ESHUTDOWN while @ctx is being finalised.
 */
int thread_pool_set_limits(AioContext *ctx, int min, int max,
                           int idle_timeout_ms);

/* thread_pool_get_workers: live worker count (tests).  Any thread. */
int thread_pool_get_workers(AioContext *ctx);

#ifdef __cplusplus
}
#endif

#endif
