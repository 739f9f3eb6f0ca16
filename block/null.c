/*
 * null-co and null-aio (QEMU's): requests complete without storage; reads
 * fill zeroes with read-zeroes=on.  null-co completes through the queue's
 * own BH (one BH pass completes a whole batch), null-aio through a one-shot
 * BH per request (QEMU's null-aio).  With latency-ns=N both complete N ns
 * after submission through a per-queue timer (deadlines are FIFO since the
 * latency is constant).
 */
#include "block-int.h"

#include <stdint.h>
#include <string.h>

/* read-zeroes=on: fill the reader's vector (NULL bases of empty iovecs
 * are fine). */
static void fill_zeroes(BlockRequest *req)
{
    if (req->type == BLK_REQ_READ && req->q->blk->opts.null_read_zeroes) {
        for (int i = 0; i < req->iovcnt; i++) {
            if (req->iov[i].iov_len) {
                memset(req->iov[i].iov_base, 0, req->iov[i].iov_len);
            }
        }
    }
}

static void complete(BlockRequest *req)
{
    fill_zeroes(req);
    blk_req_done(req, 0);
}

/* When @req is due: start + latency, saturating (latency-ns may be as
 * large as INT64_MAX). */
static int64_t due_ns(const BlockRequest *req, uint64_t lat)
{
    if (lat > (uint64_t)(INT64_MAX - req->start_ns)) {
        return INT64_MAX;
    }
    return req->start_ns + (int64_t)lat;
}

static void oneshot_cb(void *opaque)
{
    complete(opaque);
}

static void latency_timer_cb(void *opaque)
{
    BlockQueue *q = opaque;
    int64_t now = aio_clock_ns();
    uint64_t lat = q->blk->opts.null_latency_ns;
    BlockRequest *due = NULL, **due_tail = &due;

    /* Take the due requests off the queue and re-arm first: a callback
     * may free @q (and its timer) once the last request has completed. */
    while (q->lat_head && due_ns(q->lat_head, lat) <= now) {
        BlockRequest *req = q->lat_head;
        q->lat_head = req->next;
        if (!q->lat_head) {
            q->lat_tail = &q->lat_head;
        }
        req->next = NULL;
        *due_tail = req;
        due_tail = &req->next;
    }
    if (q->lat_head) {
        aio_timer_mod(q->lat_timer, due_ns(q->lat_head, lat));
    }
    while (due) {
        BlockRequest *req = due;
        due = req->next;
        complete(req);
    }
}

static int null_attach(BlockQueue *q, GError **errp)
{
    if (q->blk->opts.null_latency_ns) {
        q->lat_timer = aio_timer_new(q->ctx, latency_timer_cb, q);
    }
    return 0;
}

static void null_detach(BlockQueue *q)
{
    if (q->lat_timer) {
        aio_timer_free(q->lat_timer);
    }
}

static void null_submit(BlockRequest *req)
{
    BlockQueue *q = req->q;
    const BlockOptions *o = &q->blk->opts;

    if (o->null_latency_ns) {
        req->next = NULL;
        *q->lat_tail = req;
        q->lat_tail = &req->next;
        if (q->lat_head == req) {
            aio_timer_mod(q->lat_timer, due_ns(req, o->null_latency_ns));
        }
    } else if (o->driver == BLOCK_DRIVER_NULL_AIO) {
        aio_bh_schedule_oneshot(q->ctx, oneshot_cb, req);
    } else {
        fill_zeroes(req);
        blk_req_complete_later(req, 0);
    }
}

const BlockDriverOps blk_drv_null = {
    .name = "null",
    .attach = null_attach,
    .detach = null_detach,
    .submit = null_submit,
};
