/*
 * BlockQueue: a backend's I/O channel in one AioContext.  Request pool,
 * validation, O_DIRECT bounce buffers, in-flight counting, flush ordering,
 * write-through, plug/unplug, deferred completion and drain.
 */
#include "block-int.h"
#include "shardvm/error.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/*
 * Flush ordering.  A flush must complete after every write submitted on
 * the queue before it.  Writes belong to the newest epoch; a flush
 * submitted while writes are in flight closes the epoch (a new one
 * starts) and waits in it until the epoch and every older one have no
 * write left; then it goes to the driver, whose fdatasync covers them.
 */
struct BlockFlushEpoch {
    unsigned writes;          /* writes of this epoch still in flight */
    BlockRequest *flushes;    /* flushes waiting for this epoch */
};

static const BlockDriverOps *driver_ops(const BlockOptions *o)
{
    if (o->driver == BLOCK_DRIVER_BLKDEBUG) {
        return &blk_drv_blkdebug;
    }
    if (o->driver != BLOCK_DRIVER_FILE) {
        return &blk_drv_null;
    }
    switch (o->aio) {
    case BLOCK_AIO_NATIVE:
        return &blk_drv_linux_aio;
    case BLOCK_AIO_IO_URING:
        return &blk_drv_io_uring;
    default:
        return &blk_drv_threads;
    }
}

static void done_bh_cb(void *opaque);

/* Completion callbacks running on this thread (blk_req_done). */
static __thread unsigned in_completion_cb;

/* The queue API belongs to the home thread of the queue's context: from
 * anywhere else it would race on every field of @q.  A caller bug, so
 * loud. */
static inline void assert_home(const BlockQueue *q, const char *fn)
{
    if (G_UNLIKELY(!aio_context_in_home_thread(q->ctx))) {
        g_error("%s: called outside the home thread of the queue's "
                "AioContext", fn);
    }
}

BlockQueue *blk_queue_new(BlockBackend *blk, AioContext *ctx, GError **errp)
{
    BlockQueue *q = g_new0(BlockQueue, 1);

    q->blk = blk;
    q->ctx = ctx;
    q->ops = driver_ops(&blk->opts);
    q->done_tail = &q->done_head;
    q->lat_tail = &q->lat_head;
    g_queue_init(&q->epochs);
    g_queue_push_tail(&q->epochs, g_new0(BlockFlushEpoch, 1));
    if (q->ops->attach && q->ops->attach(q, errp) < 0) {
        g_free(g_queue_pop_head(&q->epochs));
        g_free(q);
        return NULL;
    }
    aio_context_ref(ctx);
    q->done_bh = aio_bh_new(ctx, done_bh_cb, q);
    blk_ref(blk);
    return q;
}

void blk_queue_free(BlockQueue *q)
{
    if (!q) {
        return;
    }
    assert_home(q, __func__);
    if (q->in_flight) {
        g_error("blk_queue_free: %u requests in flight (drain first)",
                q->in_flight);
    }
    if (q->ops->detach) {
        q->ops->detach(q);
    }
    while (q->free_reqs) {
        BlockRequest *r = q->free_reqs;
        q->free_reqs = r->next;
        g_free(r);
        q->allocated--;
    }
    g_assert(q->allocated == 0);
    g_assert(g_queue_get_length(&q->epochs) == 1);
    g_free(g_queue_pop_head(&q->epochs));
    aio_bh_delete(q->done_bh);
    g_free(q->aio_pending);
    aio_context_unref(q->ctx);
    blk_unref(q->blk);
    g_free(q);
}

AioContext *blk_queue_get_context(const BlockQueue *q)
{
    return q->ctx;
}

BlockBackend *blk_queue_get_backend(const BlockQueue *q)
{
    return q->blk;
}

unsigned blk_queue_in_flight(const BlockQueue *q)
{
    return q->in_flight;
}

void blk_queue_plug(BlockQueue *q)
{
    assert_home(q, __func__);
    q->plugged++;
}

void blk_queue_unplug(BlockQueue *q)
{
    assert_home(q, __func__);
    g_assert(q->plugged > 0);
    if (--q->plugged == 0 && q->ops->unplug) {
        q->ops->unplug(q);
    }
}

void blk_queue_drain(BlockQueue *q)
{
    assert_home(q, __func__);
    if (in_completion_cb) {
        /* The completions batched behind the running callback (a BH's
         * list, a reaped event array, a thread-pool batch) cannot run
         * until it returns: the drain would sleep forever. */
        g_error("blk_queue_drain: called from a completion callback "
                "(forbidden: it would never return)");
    }
    if (q->plugged && q->ops->unplug) {
        /* what a plug holds back would never complete: submit it now (the
         * queue stays plugged for later submissions) */
        q->ops->unplug(q);
    }
    while (q->in_flight) {
        aio_poll(q->ctx, true);
    }
}

/* ------------------------------------------------------------------ */
/* Requests                                                             */

static BlockRequest *req_get(BlockQueue *q)
{
    BlockRequest *req = q->free_reqs;
    if (req) {
        q->free_reqs = req->next;
    } else {
        req = g_new(BlockRequest, 1);
        q->allocated++;
    }
    memset(req, 0, offsetof(BlockRequest, iocb));
    req->q = q;
    return req;
}

static void req_put(BlockQueue *q, BlockRequest *req)
{
    req->next = q->free_reqs;
    q->free_reqs = req;
}

static bool iov_aligned(const struct iovec *iov, int iovcnt, uint32_t align)
{
    for (int i = 0; i < iovcnt; i++) {
        if (((uintptr_t)iov[i].iov_base | iov[i].iov_len) & (align - 1)) {
            return false;
        }
    }
    return true;
}

/* The bytes @iov holds; -EINVAL for a negative count or a sum that does
 * not fit in 64 bits (it would wrap to a small, valid-looking length). */
static int iov_size(const struct iovec *iov, int iovcnt, uint64_t *out)
{
    uint64_t n = 0;
    if (iovcnt < 0) {
        return -EINVAL;
    }
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len > UINT64_MAX - n) {
            return -EINVAL;
        }
        n += iov[i].iov_len;
    }
    *out = n;
    return 0;
}

/* Copy between a flat buffer and an iovec. */
static void iov_copy(const struct iovec *iov, int iovcnt, void *buf,
                     bool to_buf)
{
    char *p = buf;
    for (int i = 0; i < iovcnt; i++) {
        if (!iov[i].iov_len) {
            continue; /* its base may be NULL: no memcpy(NULL, ..., 0) */
        }
        if (to_buf) {
            memcpy(p, iov[i].iov_base, iov[i].iov_len);
        } else {
            memcpy(iov[i].iov_base, p, iov[i].iov_len);
        }
        p += iov[i].iov_len;
    }
}

/*
 * Give @req an aligned bounce buffer when O_DIRECT needs one (the caller's
 * memory, offset or length is unaligned) or when the vector has more than
 * IOV_MAX elements (preadv, libaio and io_uring all refuse those with
 * EINVAL).  Reads read the aligned range around the caller's and copy out
 * at completion; writes with aligned offset/length copy in now; unaligned
 * writes become read-modify-writes on a worker.
 */
static int req_setup_bounce(BlockRequest *req)
{
    uint32_t a = req->q->blk->align;
    uint64_t start = req->offset & ~(uint64_t)(a - 1);
    uint64_t end = (req->offset + req->len + a - 1) & ~(uint64_t)(a - 1);
    bool range_ok = start == req->offset && end == req->offset + req->len;

    if (req->iovcnt <= IOV_MAX &&
        (a <= 1 || (range_ok && iov_aligned(req->iov, req->iovcnt, a)))) {
        return 0;
    }
    if (posix_memalign(&req->bounce, MAX(a, sizeof(void *)),
                       MAX(end - start, 1))) {
        return -ENOMEM;
    }
    req->bounce_iov.iov_base = req->bounce;
    req->bounce_iov.iov_len = end - start;
    req->offset = start;
    req->len = end - start;
    req->iov = &req->bounce_iov;
    req->iovcnt = 1;
    if (req->type == BLK_REQ_WRITE) {
        if (range_ok) {
            iov_copy(req->user_iov, req->user_iovcnt, req->bounce, true);
        } else {
            req->rmw = true; /* the worker fills the bounce */
        }
    }
    return 0;
}

static int check_range(BlockQueue *q, uint64_t offset, uint64_t len)
{
    uint64_t size = q->blk->size;
    if (offset > size || len > size - offset) {
        return -EINVAL;
    }
    return 0;
}

static void dispatch(BlockRequest *req)
{
    BlockQueue *q = req->q;

    if (req->type == BLK_REQ_FLUSH && q->blk->opts.cache_no_flush) {
        blk_req_complete_later(req, 0);     /* cache=unsafe */
    } else if (req->type == BLK_REQ_DISCARD &&
               q->blk->opts.discard == BLOCK_DISCARD_IGNORE) {
        blk_req_complete_later(req, 0);
    } else if ((req->type == BLK_REQ_DISCARD ||
                req->type == BLK_REQ_ZEROES) && req->len == 0) {
        blk_req_complete_later(req, 0);     /* fallocate() says EINVAL */
    } else if (req->rmw && q->ops != &blk_drv_null) {
        blk_threads_submit(req);
    } else {
        q->ops->submit(req);
    }
}

static int submit(BlockQueue *q, BlockReqType type, uint64_t offset,
                  uint64_t len, const struct iovec *iov, int iovcnt,
                  bool may_unmap, BlockCompletionFunc *cb, void *opaque)
{
    BlockRequest *req;
    int r;

    assert_home(q, "blk_queue_submit");
    if (type != BLK_REQ_READ && type != BLK_REQ_FLUSH &&
        q->blk->opts.read_only) {
        return -EROFS;
    }
    if (type != BLK_REQ_FLUSH && (r = check_range(q, offset, len)) < 0) {
        return r;
    }
    req = req_get(q);
    req->type = req->orig_type = type;
    req->offset = req->user_offset = offset;
    req->len = req->user_len = len;
    req->iov = req->user_iov = iov;
    req->iovcnt = req->user_iovcnt = iovcnt;
    req->may_unmap = may_unmap;
    req->cb = cb;
    req->opaque = opaque;
    req->start_ns = aio_clock_ns();
    if ((type == BLK_REQ_READ || type == BLK_REQ_WRITE) &&
        q->ops != &blk_drv_null && q->ops != &blk_drv_blkdebug &&
        (r = req_setup_bounce(req)) < 0) {
        req_put(q, req);
        return r;
    }
    if (type == BLK_REQ_WRITE || type == BLK_REQ_ZEROES) {
        req->flush_after = !blk_get_write_cache(q->blk);
    }
    q->in_flight++;

    BlockFlushEpoch *cur = g_queue_peek_tail(&q->epochs);
    if (type == BLK_REQ_FLUSH) {
        if (g_queue_get_length(&q->epochs) > 1 || cur->writes) {
            req->next = cur->flushes;
            cur->flushes = req;
            g_queue_push_tail(&q->epochs, g_new0(BlockFlushEpoch, 1));
            return 0;
        }
    } else if (type != BLK_REQ_READ) {
        req->epoch = cur;
        cur->writes++;
    }
    dispatch(req);
    return 0;
}

/* Release the flushes whose epochs (and all older ones) are done. */
static void epochs_advance(BlockQueue *q)
{
    BlockFlushEpoch *e;

    while ((e = g_queue_peek_head(&q->epochs)) && e->writes == 0 &&
           g_queue_get_length(&q->epochs) > 1) {
        g_queue_pop_head(&q->epochs);
        BlockRequest *f = e->flushes;
        g_free(e);
        while (f) {
            BlockRequest *next = f->next;
            dispatch(f);
            f = next;
        }
    }
}

static void stats_account(BlockRequest *req, int ret)
{
    BlockStatsAtomic *s = &req->q->blk->stats;
    uint64_t ns = aio_clock_ns() - req->start_ns;

#define ADD(f, v) atomic_fetch_add_explicit(&s->f, (v), memory_order_relaxed)
    if (ret < 0) {
        ADD(failed_ops, 1);
        return;
    }
    switch (req->orig_type) {
    case BLK_REQ_READ:
        ADD(rd_ops, 1);
        ADD(rd_bytes, req->user_len);
        ADD(rd_total_ns, ns);
        break;
    case BLK_REQ_WRITE:
        ADD(wr_ops, 1);
        ADD(wr_bytes, req->user_len);
        ADD(wr_total_ns, ns);
        break;
    case BLK_REQ_FLUSH:
        ADD(flush_ops, 1);
        ADD(flush_total_ns, ns);
        break;
    case BLK_REQ_DISCARD:
        ADD(discard_ops, 1);
        break;
    case BLK_REQ_ZEROES:
        ADD(zero_ops, 1);
        break;
    }
#undef ADD
}

void blk_req_done(BlockRequest *req, int ret)
{
    BlockQueue *q = req->q;
    BlockFlushEpoch *epoch = req->epoch;

    if (ret == 0 && req->flush_after) {
        /* write-through: the write is done, now make it durable */
        req->flush_after = false;
        req->type = BLK_REQ_FLUSH;
        dispatch(req);
        return;
    }
    if (req->bounce) {
        if (ret == 0 && req->orig_type == BLK_REQ_READ) {
            const struct iovec *iov = req->user_iov;
            char *src = (char *)req->bounce + (req->user_offset - req->offset);
            iov_copy(iov, req->user_iovcnt, src, false);
        }
        free(req->bounce);
        req->bounce = NULL;
    }
    stats_account(req, ret);

    BlockCompletionFunc *cb = req->cb;
    void *opaque = req->opaque;
    req_put(q, req);
    q->in_flight--;
    if (epoch) {
        epoch->writes--;
        epochs_advance(q);
    }
    in_completion_cb++;
    cb(opaque, ret);
    in_completion_cb--;
}

static void done_bh_cb(void *opaque)
{
    BlockQueue *q = opaque;
    BlockRequest *list = q->done_head;

    q->done_head = NULL;
    q->done_tail = &q->done_head;
    while (list) {
        BlockRequest *req = list;
        list = req->next;
        blk_req_done(req, req->ret);
    }
}

void blk_req_complete_later(BlockRequest *req, int ret)
{
    BlockQueue *q = req->q;

    req->ret = ret;
    req->next = NULL;
    *q->done_tail = req;
    q->done_tail = &req->next;
    aio_bh_schedule(q->done_bh);
}

/* ------------------------------------------------------------------ */
/* Public submission functions                                          */

int blk_queue_preadv(BlockQueue *q, uint64_t offset, const struct iovec *iov,
                     int iovcnt, BlockCompletionFunc *cb, void *opaque)
{
    uint64_t len;
    int r = iov_size(iov, iovcnt, &len);
    return r < 0 ? r : submit(q, BLK_REQ_READ, offset, len, iov, iovcnt,
                              false, cb, opaque);
}

int blk_queue_pwritev(BlockQueue *q, uint64_t offset, const struct iovec *iov,
                      int iovcnt, BlockCompletionFunc *cb, void *opaque)
{
    uint64_t len;
    int r = iov_size(iov, iovcnt, &len);
    return r < 0 ? r : submit(q, BLK_REQ_WRITE, offset, len, iov, iovcnt,
                              false, cb, opaque);
}

int blk_queue_flush(BlockQueue *q, BlockCompletionFunc *cb, void *opaque)
{
    return submit(q, BLK_REQ_FLUSH, 0, 0, NULL, 0, false, cb, opaque);
}

int blk_queue_discard(BlockQueue *q, uint64_t offset, uint64_t len,
                      BlockCompletionFunc *cb, void *opaque)
{
    return submit(q, BLK_REQ_DISCARD, offset, len, NULL, 0, false, cb,
                  opaque);
}

int blk_queue_write_zeroes(BlockQueue *q, uint64_t offset, uint64_t len,
                           bool may_unmap, BlockCompletionFunc *cb,
                           void *opaque)
{
    return submit(q, BLK_REQ_ZEROES, offset, len, NULL, 0, may_unmap, cb,
                  opaque);
}
