/*
 * IOThread: a thread named "IO <id>" that polls its own AioContext until
 * stopped.  Devices and virtqueues bound to it (-object iothread,id=...,
 * -device ...,iothread=...) run their handlers there.
 */
#ifndef SHARDVM_IOTHREAD_H
#define SHARDVM_IOTHREAD_H

#include "shardvm/aio.h"

#include <glib.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct IOThread IOThread;

/*
 * IOThread properties, QEMU's names: poll-max-ns, poll-grow, poll-shrink,
 * aio-max-batch, thread-pool-min, thread-pool-max.  A field set to -1
 * keeps the default (or, at runtime, the current value).
 */
typedef struct IOThreadProps {
    int64_t poll_max_ns;     /* default 32768 */
    int64_t poll_grow;       /* default 0 (= double) */
    int64_t poll_shrink;     /* default 0 (= reset) */
    int64_t aio_max_batch;   /* default 0 (backend default) */
    int64_t thread_pool_min; /* default 0 */
    int64_t thread_pool_max; /* default 64 */
} IOThreadProps;

/* IOTHREAD_PROPS_DEFAULT: every field -1 (keep defaults). */
#define IOTHREAD_PROPS_DEFAULT \
    ((IOThreadProps){ -1, -1, -1, -1, -1, -1 })

/*
 * iothread_new: start an IOThread named "IO <@id>" polling a new
 * AioContext; returns once the thread polls.  @props may be NULL.
 * Returns NULL and fills @errp on bad properties or thread failure.
 * Main-loop thread (BQL held) or a test's thread.
 */
IOThread *iothread_new(const char *id, const IOThreadProps *props,
                       GError **errp);

/*
 * iothread_set_props: change properties at runtime (fields of -1 are left
 * alone).  Returns 0 or -EINVAL (and fills @errp).  Any thread.
 */
int iothread_set_props(IOThread *iot, const IOThreadProps *props,
                       GError **errp);

/* iothread_get_props: current properties. */
void iothread_get_props(IOThread *iot, IOThreadProps *out);

/* iothread_get_aio_context: the IOThread's context.  Any thread. */
AioContext *iothread_get_aio_context(IOThread *iot);

/* iothread_get_id: the id given at creation. */
const char *iothread_get_id(IOThread *iot);

/* iothread_get_thread_id: the thread's kernel id (gettid(), what QMP's
 * query-iothreads reports as thread-id).  Any thread. */
int iothread_get_thread_id(IOThread *iot);

/*
 * iothread_stop: make the thread leave its loop and join it.  Every BH
 * scheduled before the stop runs; later aio_bh_schedule*() calls return
 * -ESHUTDOWN.  Prompt (no timeout involved).  Idempotent.  Not from the
 * IOThread itself.
 */
void iothread_stop(IOThread *iot);

/*
 * iothread_add_user / iothread_del_user: a device starts / stops serving
 * queues in @iot's context (counted); iothread_in_use() is true while any
 * does, and QMP's object-del refuses such an IOThread.  Main thread.
 */
void iothread_add_user(IOThread *iot);
void iothread_del_user(IOThread *iot);
bool iothread_in_use(IOThread *iot);

/* iothread_free: stop (if needed) and free.  Not from the IOThread. */
void iothread_free(IOThread *iot);

#ifdef __cplusplus
}
#endif

#endif
