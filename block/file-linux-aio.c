/*
 * aio=native: Linux AIO (libaio).  One io context per AioContext, shared by
 * the context's queues, created on first use.  Every iocb carries the
 * context's eventfd; its handler reaps events with io_getevents() (zero
 * timeout), and busy-polling peeks at the completion ring in user memory.
 * Reads and writes go through libaio; flush, discard and write-zeroes go to
 * the thread pool (Linux AIO has no usable fdatasync on most file systems).
 */
#include "block-int.h"
#include "shardvm/error.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#define AIO_MAX_EVENTS 1024
#define AIO_REAP_BATCH 64

typedef struct LinuxAio {
    /* Everything: the home thread of ctx. */
    AioContext *ctx;
    io_context_t io;
    EventNotifier e;
    unsigned in_kernel;     /* iocbs submitted and not reaped */
    GPtrArray *waiting;     /* queues with iocbs refused by -EAGAIN */
    /* reap() runs completion callbacks, which may free the context's last
     * queue and so this state: freeing waits until reap() returns. */
    unsigned reaping;
    bool dead;
} LinuxAio;

static void linux_aio_free(LinuxAio *s);

/* The kernel's completion ring header, mapped at the io_context_t address. */
struct aio_ring_hdr {
    unsigned id, nr, head, tail, magic, compat_features, incompat_features;
    unsigned header_length;
};
#define AIO_RING_MAGIC 0xa10a10a1

static bool ring_has_events(LinuxAio *s)
{
    struct aio_ring_hdr *ring = (struct aio_ring_hdr *)s->io;
    if (ring->magic != AIO_RING_MAGIC) {
        return s->in_kernel > 0; /* unknown layout: let the handler look */
    }
    return __atomic_load_n(&ring->head, __ATOMIC_RELAXED) !=
           __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
}

static void aio_flush_pending(BlockQueue *q);

static void reap(LinuxAio *s)
{
    struct io_event events[AIO_REAP_BATCH];
    struct timespec zero = { 0, 0 };
    int n;

    s->reaping++;
    do {
        n = io_getevents(s->io, 0, AIO_REAP_BATCH, events, &zero);
        for (int i = 0; i < n && !s->dead; i++) {
            BlockRequest *req = container_of(events[i].obj, BlockRequest,
                                             iocb);
            long res = (long)events[i].res;
            s->in_kernel--;
            if (res < 0) {
                blk_req_done(req, (int)res);
            } else if ((uint64_t)res == req->len) {
                blk_req_done(req, 0);
            } else {
                /* short: a worker finishes it and finds the real error */
                req->progress = res;
                blk_threads_submit(req);
            }
        }
    } while (n == AIO_REAP_BATCH && !s->dead);

    /* room again for queues whose io_submit() got -EAGAIN */
    while (!s->dead && s->waiting->len && s->in_kernel < AIO_MAX_EVENTS) {
        BlockQueue *q = g_ptr_array_steal_index(s->waiting, 0);
        aio_flush_pending(q);
    }
    if (--s->reaping == 0 && s->dead) {
        linux_aio_free(s);
    }
}

static void event_read(EventNotifier *e)
{
    LinuxAio *s = container_of(e, LinuxAio, e);
    event_notifier_test_and_clear(e);
    reap(s);
}

static bool event_poll(void *opaque)
{
    LinuxAio *s = container_of((EventNotifier *)opaque, LinuxAio, e);
    return ring_has_events(s);
}

static void event_poll_ready(EventNotifier *e)
{
    reap(container_of(e, LinuxAio, e));
}

static void *linux_aio_create(AioContext *ctx, GError **errp)
{
    LinuxAio *s = g_new0(LinuxAio, 1);
    int r;

    s->ctx = ctx;
    r = event_notifier_init(&s->e, false);
    if (r < 0) {
        shardvm_error_set(errp, r, "aio=native: eventfd: %s", g_strerror(-r));
        g_free(s);
        return NULL;
    }
    r = io_setup(AIO_MAX_EVENTS, &s->io);
    if (r < 0) {
        shardvm_error_set(errp, r, "aio=native: io_setup: %s (see "
                          "/proc/sys/fs/aio-max-nr)", g_strerror(-r));
        event_notifier_cleanup(&s->e);
        g_free(s);
        return NULL;
    }
    s->waiting = g_ptr_array_new();
    aio_set_event_notifier(ctx, &s->e, event_read,
                           (AioPollFunc *)event_poll, event_poll_ready);
    return s;
}

static void linux_aio_free(LinuxAio *s)
{
    io_destroy(s->io);
    event_notifier_cleanup(&s->e);
    g_ptr_array_unref(s->waiting);
    g_free(s);
}

static void linux_aio_destroy(void *state)
{
    LinuxAio *s = state;

    g_assert(s->in_kernel == 0);
    aio_set_event_notifier(s->ctx, &s->e, NULL, NULL, NULL);
    if (s->reaping) {
        s->dead = true; /* from a completion callback: reap() frees it */
        return;
    }
    linux_aio_free(s);
}

static int linux_aio_attach(BlockQueue *q, GError **errp)
{
    q->drv = blk_ctx_state_get(0, q->ctx, linux_aio_create, errp);
    return q->drv ? 0 : -EIO;
}

static void linux_aio_detach(BlockQueue *q)
{
    LinuxAio *s = q->drv;
    g_ptr_array_remove(s->waiting, q);
    blk_ctx_state_put(0, q->ctx, linux_aio_destroy);
}

/* io_submit() what @q has pending (one call, or a few if the batch limit
 * or a partial submission says so). */
static void aio_flush_pending(BlockQueue *q)
{
    LinuxAio *s = q->drv;
    int64_t max_batch = aio_context_get_aio_max_batch(q->ctx);
    unsigned done = 0;

    while (done < q->aio_npending) {
        long n = q->aio_npending - done;
        if (max_batch > 0 && n > max_batch) {
            n = max_batch;
        }
        int r = io_submit(s->io, n, q->aio_pending + done);
        atomic_fetch_add_explicit(&q->blk->stats.submit_calls, 1,
                                  memory_order_relaxed);
        if (r == -EAGAIN) {
            if (s->in_kernel == 0) {
                /* nothing will complete to make room: use workers */
                for (unsigned i = done; i < q->aio_npending; i++) {
                    blk_threads_submit(container_of(q->aio_pending[i],
                                                    BlockRequest, iocb));
                }
                done = q->aio_npending;
            } else if (!g_ptr_array_find(s->waiting, q, NULL)) {
                g_ptr_array_add(s->waiting, q);
            }
            break;
        }
        if (r < 0) {
            /* the first iocb is bad: fail it from the BH, go on */
            blk_req_complete_later(container_of(q->aio_pending[done],
                                                BlockRequest, iocb), r);
            done++;
            continue;
        }
        s->in_kernel += r;
        done += r;
    }
    memmove(q->aio_pending, q->aio_pending + done,
            (q->aio_npending - done) * sizeof(*q->aio_pending));
    q->aio_npending -= done;
}

static void linux_aio_submit(BlockRequest *req)
{
    BlockQueue *q = req->q;
    LinuxAio *s = q->drv;
    struct iocb *cb = &req->iocb;

    if (req->type != BLK_REQ_READ && req->type != BLK_REQ_WRITE) {
        blk_threads_submit(req);
        return;
    }
    if (req->type == BLK_REQ_READ) {
        io_prep_preadv(cb, q->blk->fd, req->iov, req->iovcnt, req->offset);
    } else {
        io_prep_pwritev(cb, q->blk->fd, req->iov, req->iovcnt, req->offset);
    }
    io_set_eventfd(cb, event_notifier_get_fd(&s->e));
    if (q->aio_npending == q->aio_cap) {
        q->aio_cap = q->aio_cap ? q->aio_cap * 2 : 64;
        q->aio_pending = g_renew(struct iocb *, q->aio_pending, q->aio_cap);
    }
    q->aio_pending[q->aio_npending++] = cb;
    if (!q->plugged) {
        aio_flush_pending(q);
    }
}

static void linux_aio_unplug(BlockQueue *q)
{
    if (q->aio_npending) {
        aio_flush_pending(q);
    }
}

const BlockDriverOps blk_drv_linux_aio = {
    .name = "native",
    .attach = linux_aio_attach,
    .detach = linux_aio_detach,
    .submit = linux_aio_submit,
    .unplug = linux_aio_unplug,
};
