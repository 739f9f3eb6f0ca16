/*
 * aio=io_uring: one ring per AioContext, shared by the context's queues,
 * created on first use.  The ring signals completions on a registered
 * eventfd; its handler (and busy-polling, which only looks at the CQ
 * tail in user memory) reaps CQEs without a syscall.  Reads, writes and
 * flushes (IORING_OP_FSYNC with DATASYNC) go through the ring; discard,
 * write-zeroes and O_DIRECT read-modify-writes go to the thread pool.
 * SQEs prepared while a queue is plugged are submitted at its outermost
 * unplug with one io_uring_submit().
 */
#include "block-int.h"
#include "shardvm/error.h"

#include <errno.h>
#include <liburing.h>

#define URING_ENTRIES 256

typedef struct IoUring {
    /* Everything: the home thread of ctx. */
    AioContext *ctx;
    struct io_uring ring;
    EventNotifier e;
    unsigned unsubmitted;     /* SQEs prepared, not yet submitted */
    BlockRequest *overflow;   /* no SQE was free: waiting for one */
    BlockRequest **overflow_tail;
    /* reap() runs completion callbacks, which may free the context's last
     * queue and so this state: freeing waits until reap() returns. */
    unsigned reaping;
    bool dead;
} IoUring;

static void uring_free(IoUring *s);

static void uring_submit_now(IoUring *s, BlockQueue *q);
static bool uring_prep(IoUring *s, BlockRequest *req);

static void reap(IoUring *s)
{
    struct io_uring_cqe *cqe;

    s->reaping++;
    while (!s->dead && io_uring_peek_cqe(&s->ring, &cqe) == 0) {
        BlockRequest *req = io_uring_cqe_get_data(cqe);
        int res = cqe->res;
        io_uring_cqe_seen(&s->ring, cqe);
        if (res < 0) {
            blk_req_done(req, res);
        } else if (req->type == BLK_REQ_FLUSH || (uint64_t)res == req->len) {
            blk_req_done(req, 0);
        } else {
            req->progress = res; /* short: a worker finishes it */
            blk_threads_submit(req);
        }
    }
    /* SQEs free again: move what overflowed into the ring */
    BlockQueue *last = NULL;
    while (!s->dead && s->overflow) {
        BlockRequest *req = s->overflow;
        if (!uring_prep(s, req)) {
            break;
        }
        s->overflow = req->next;
        last = req->q;
    }
    if (!s->overflow) {
        s->overflow_tail = &s->overflow;
    }
    if (last) {
        uring_submit_now(s, last);
    }
    if (--s->reaping == 0 && s->dead) {
        uring_free(s);
    }
}

static void event_read(EventNotifier *e)
{
    event_notifier_test_and_clear(e);
    reap(container_of(e, IoUring, e));
}

static bool event_poll(void *opaque)
{
    IoUring *s = container_of((EventNotifier *)opaque, IoUring, e);
    return io_uring_cq_ready(&s->ring) > 0;
}

static void event_poll_ready(EventNotifier *e)
{
    reap(container_of(e, IoUring, e));
}

static void *uring_create(AioContext *ctx, GError **errp)
{
    IoUring *s = g_new0(IoUring, 1);
    int r;

    s->ctx = ctx;
    s->overflow_tail = &s->overflow;
    r = event_notifier_init(&s->e, false);
    if (r < 0) {
        shardvm_error_set(errp, r, "aio=io_uring: eventfd: %s",
                          g_strerror(-r));
        g_free(s);
        return NULL;
    }
    r = io_uring_queue_init(URING_ENTRIES, &s->ring, 0);
    if (r == 0) {
        r = io_uring_register_eventfd(&s->ring, event_notifier_get_fd(&s->e));
        if (r < 0) {
            io_uring_queue_exit(&s->ring);
        }
    }
    if (r < 0) {
        shardvm_error_set(errp, r, "aio=io_uring: ring set-up: %s",
                          g_strerror(-r));
        event_notifier_cleanup(&s->e);
        g_free(s);
        return NULL;
    }
    aio_set_event_notifier(ctx, &s->e, event_read, (AioPollFunc *)event_poll,
                           event_poll_ready);
    return s;
}

static void uring_free(IoUring *s)
{
    io_uring_queue_exit(&s->ring);
    event_notifier_cleanup(&s->e);
    g_free(s);
}

static void uring_destroy(void *state)
{
    IoUring *s = state;

    g_assert(!s->overflow);
    aio_set_event_notifier(s->ctx, &s->e, NULL, NULL, NULL);
    if (s->reaping) {
        s->dead = true; /* from a completion callback: reap() frees it */
        return;
    }
    uring_free(s);
}

static int uring_attach(BlockQueue *q, GError **errp)
{
    q->drv = blk_ctx_state_get(1, q->ctx, uring_create, errp);
    return q->drv ? 0 : -EIO;
}

static void uring_detach(BlockQueue *q)
{
    blk_ctx_state_put(1, q->ctx, uring_destroy);
}

/* Fill an SQE for @req; false when the SQ is full. */
static bool uring_prep(IoUring *s, BlockRequest *req)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
    int fd = req->q->blk->fd;

    if (!sqe) {
        return false;
    }
    switch (req->type) {
    case BLK_REQ_READ:
        io_uring_prep_readv(sqe, fd, req->iov, req->iovcnt, req->offset);
        break;
    case BLK_REQ_WRITE:
        io_uring_prep_writev(sqe, fd, req->iov, req->iovcnt, req->offset);
        break;
    default:
        io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
        break;
    }
    io_uring_sqe_set_data(sqe, req);
    s->unsubmitted++;
    return true;
}

static void uring_submit_now(IoUring *s, BlockQueue *q)
{
    if (!s->unsubmitted) {
        return;
    }
    int r = io_uring_submit(&s->ring);
    atomic_fetch_add_explicit(&q->blk->stats.submit_calls, 1,
                              memory_order_relaxed);
    if (r >= 0) {
        s->unsubmitted -= MIN((unsigned)r, s->unsubmitted);
    }
    /* r < 0 (-EBUSY/-EAGAIN): the SQEs stay in the ring; the next
     * submission or reap retries them. */
}

static void uring_submit(BlockRequest *req)
{
    BlockQueue *q = req->q;
    IoUring *s = q->drv;

    if (req->type == BLK_REQ_DISCARD || req->type == BLK_REQ_ZEROES) {
        blk_threads_submit(req);
        return;
    }
    if (!uring_prep(s, req)) {
        uring_submit_now(s, q);      /* make room and try again */
        if (!uring_prep(s, req)) {
            req->next = NULL;
            *s->overflow_tail = req;
            s->overflow_tail = &req->next;
            return;
        }
    }
    if (!q->plugged) {
        uring_submit_now(s, q);
    }
}

static void uring_unplug(BlockQueue *q)
{
    uring_submit_now(q->drv, q);
}

const BlockDriverOps blk_drv_io_uring = {
    .name = "io_uring",
    .attach = uring_attach,
    .detach = uring_detach,
    .submit = uring_submit,
    .unplug = uring_unplug,
};
