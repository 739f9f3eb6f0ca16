/*
 * virtio-blk: requests popped from each virtqueue are submitted to that
 * queue's BlockQueue in the queue's AioContext, a whole pass between one
 * plug/unplug; completions push to the used ring and one flush BH per
 * queue publishes a batch of them with a single virtqueue_flush().
 */
#include "shardvm/virtio-blk.h"
#include "shardvm/error.h"

#include <assert.h>
#include <stdatomic.h>
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

/* Limits the device advertises. */
#define VBLK_SIZE_MAX             (1u << 20)
#define VBLK_MAX_DISCARD_SECTORS  (1u << 21)   /* 1 GiB per request */
#define VBLK_MAX_WZ_SECTORS       (1u << 21)

typedef struct VirtIOBlockQueue VirtIOBlockQueue;

typedef struct VirtIOBlockReq {
    VirtIOBlockQueue *q;
    VirtQueueElement *elem;
    uint8_t *status;       /* last writable byte (guest RAM, valid in flight) */
    bool pooled;
    /* What was asked, kept so that werror/rerror=stop can resubmit it;
     * the vectors point into elem (edited once, at pop). */
    uint32_t type;
    uint64_t sector;
    struct iovec *out, *in;
    unsigned out_num, in_num;
    struct VirtIOBlockReq *next;   /* the queue's held list */
} VirtIOBlockReq;

struct VirtIOBlockQueue {
    VirtIOBlock *s;          /* immutable */
    VirtQueue *vq;           /* immutable */
    /* Referenced.  Written only by virtio_blk_set_queue_context() (main
     * thread, BQL + vdev->lock) while the queue is stopped; the queue's
     * context reads it after the run_sync that restarts it. */
    AioContext *ctx;
    /* [ctx] while started; set/cleared by start/stop through run_sync */
    BlockQueue *bq;
    AioBH *flush_bh;
    /* Why the last start failed: written in ctx by the start, taken by
     * the caller of vblk_queue_start() after its run_sync. */
    GError *start_err;
    /* [ctx] like flush_bh: resubmits the held list.  Deleted (so never
     * run stale) by the stop; a move re-arms it in the new context. */
    AioBH *retry_bh;
    /* Set by the main thread ("cont") before it schedules retry_bh,
     * cleared by the retry in ctx, and by a stop that drops the held
     * list: a retry asked for and not run yet survives a move. */
    atomic_bool retry_wanted;
    bool started;
    bool stopping;
    /* Main thread (BQL + vdev->lock), read by the stop in ctx through
     * run_sync: the stop is a move, so requests kept by "stop" stay on
     * the held list and go with the queue to its new context. */
    bool moving;
    VirtIOBlockReq *reqs;    /* queue-size preallocated requests */
    GPtrArray *free_reqs;    /* [ctx] */
    /* [ctx] failed requests kept by the "stop" policy, oldest first,
     * resubmitted by the retry BH */
    VirtIOBlockReq *held_head, **held_tail;
};

struct VirtIOBlock {
    VirtIODevice vdev;       /* first member */
    VirtIOBlockConfig cfg;   /* immutable copy of what matters */
    char serial[VIRTIO_BLK_ID_BYTES];
    BlockBackend *blk;
    uint64_t capacity_bytes; /* immutable: image size rounded to 512 */
    bool wce_configured;     /* immutable: the drive's cache mode, restored
                              * at every stop (reset) */
    VirtIOBlockQueue *queues;
    /* Error policy (immutable after new; AUTO resolved from the drive) */
    BlockErrorPolicy werror, rerror;
    /* Set by virtio_blk_set_error_handler before the start; immutable
     * while queues run. */
    const BlockErrorHandler *err_handler;
    char *err_id;
    atomic_uint held;        /* requests on the held lists (all queues) */
};

static inline VirtIOBlock *vblk_of(VirtIODevice *vdev)
{
    return (VirtIOBlock *)vdev;
}

static inline void vblk_assert_home(const VirtIOBlockQueue *q)
{
#ifndef NDEBUG
    assert(aio_context_in_home_thread(q->ctx));
#endif
}

/* ------------------------------------------------------------------ */
/* iovec helpers */

static size_t iov_copy_out(const struct iovec *iov, unsigned n, void *buf,
                           size_t len)
{
    size_t done = 0;

    for (unsigned i = 0; i < n && done < len; i++) {
        size_t c = MIN(iov[i].iov_len, len - done);

        memcpy((uint8_t *)buf + done, iov[i].iov_base, c);
        done += c;
    }
    return done;
}

static size_t iov_copy_in(const struct iovec *iov, unsigned n, const void *buf,
                          size_t len)
{
    size_t done = 0;

    for (unsigned i = 0; i < n && done < len; i++) {
        size_t c = MIN(iov[i].iov_len, len - done);

        memcpy(iov[i].iov_base, (const uint8_t *)buf + done, c);
        done += c;
    }
    return done;
}

/* Drop @len bytes from the front of *@iov (array of *@n, edited in place). */
static void iov_drop_front(struct iovec **iov, unsigned *n, size_t len)
{
    while (*n && len >= (*iov)->iov_len) {
        len -= (*iov)->iov_len;
        (*iov)++;
        (*n)--;
    }
    if (*n && len) {
        (*iov)->iov_base = (uint8_t *)(*iov)->iov_base + len;
        (*iov)->iov_len -= len;
    }
}

static uint64_t iov_bytes(const struct iovec *iov, unsigned n)
{
    uint64_t t = 0;

    for (unsigned i = 0; i < n; i++) {
        t += iov[i].iov_len;
    }
    return t;
}

/* ------------------------------------------------------------------ */
/* Requests */

static VirtIOBlockReq *req_get(VirtIOBlockQueue *q)
{
    VirtIOBlockReq *r;

    if (q->free_reqs->len) {
        return g_ptr_array_steal_index_fast(q->free_reqs, q->free_reqs->len - 1);
    }
    /* More heads in flight than the queue size: a guest that reuses heads.
     * Serve it, but from the heap. */
    r = g_new0(VirtIOBlockReq, 1);
    r->q = q;
    return r;
}

static void req_put(VirtIOBlockReq *r)
{
    if (r->pooled) {
        g_ptr_array_add(r->q->free_reqs, r);
    } else {
        g_free(r);
    }
}

/* Write the status byte, return the chain to the guest; the flush BH
 * publishes the batch. */
static void req_complete(VirtIOBlockReq *r, uint8_t status)
{
    VirtIOBlockQueue *q = r->q;

    vblk_assert_home(q);
    *r->status = status;
    virtqueue_push(q->vq, r->elem, r->elem->in_len);
    req_put(r);
    aio_bh_schedule(q->flush_bh);
}

/*
 * A request failed on the host: werror (writes, flushes, discards,
 * write-zeroes) or rerror (reads) decides.  Returns the status to
 * complete with, or -EINPROGRESS when the request is kept for a retry
 * (action "stop": the handler stops the VM and resumes it on "cont").
 */
static int vblk_on_error(VirtIOBlockReq *r, int ret)
{
    VirtIOBlockQueue *q = r->q;
    VirtIOBlock *s = q->s;
    bool is_read = r->type == VIRTIO_BLK_T_IN;
    BlockErrorAction action = block_error_action(is_read ? s->rerror
                                                         : s->werror, ret);
    const BlockErrorHandler *h = s->err_handler;

    if (action == BLOCK_ERROR_ACTION_STOP && !h) {
        action = BLOCK_ERROR_ACTION_REPORT; /* nobody would resume */
    }
    if (h && h->io_error) {
        BlockIOErrorEvent ev = {
            .device = s->err_id ? s->err_id : blk_get_id(s->blk),
            .node_name = blk_get_id(s->blk),
            .is_read = is_read,
            .action = action,
            .iostatus = s->werror == BLOCK_ERROR_POLICY_STOP ||
                        s->werror == BLOCK_ERROR_POLICY_ENOSPC ||
                        s->rerror == BLOCK_ERROR_POLICY_STOP,
            .error = ret,
        };
        h->io_error(h->opaque, &ev);
    }
    switch (action) {
    case BLOCK_ERROR_ACTION_IGNORE:
        return VIRTIO_BLK_S_OK;
    case BLOCK_ERROR_ACTION_STOP:
        r->next = NULL;
        *q->held_tail = r;
        q->held_tail = &r->next;
        atomic_fetch_add_explicit(&s->held, 1, memory_order_relaxed);
        return -EINPROGRESS;
    default:
        return VIRTIO_BLK_S_IOERR;
    }
}

static void req_done(void *opaque, int ret)
{
    VirtIOBlockReq *r = opaque;
    int st = ret == 0 ? VIRTIO_BLK_S_OK : vblk_on_error(r, ret);

    if (st != -EINPROGRESS) {
        req_complete(r, st);
    }
}

static void vblk_flush_bh(void *opaque)
{
    VirtIOBlockQueue *q = opaque;

    virtqueue_flush(q->vq);
}

/* [sector, sector + bytes/512) inside the image, aligned to the logical
 * block size, no 64-bit overflow. */
static bool vblk_range_ok(const VirtIOBlock *s, uint64_t sector, uint64_t bytes)
{
    uint32_t lbs = s->cfg.logical_block_size;
    uint64_t off;

    if (bytes % lbs || sector % (lbs / 512) || sector > UINT64_MAX / 512) {
        return false;
    }
    off = sector * 512;
    return off <= s->capacity_bytes && bytes <= s->capacity_bytes - off;
}

/* DISCARD and WRITE_ZEROES: one segment {le64 sector, le32 num, le32 flags}. */
static int vblk_discard_wz(VirtIOBlockReq *r, uint32_t type,
                           const struct iovec *out, unsigned out_num)
{
    VirtIOBlock *s = r->q->s;
    bool wz = type == VIRTIO_BLK_T_WRITE_ZEROES;
    struct {
        uint64_t sector;
        uint32_t num_sectors;
        uint32_t flags;
    } seg;
    uint64_t sector;
    uint32_t num, flags;

    if (!virtio_has_feature(&s->vdev, wz ? VIRTIO_BLK_F_WRITE_ZEROES
                                         : VIRTIO_BLK_F_DISCARD)) {
        return VIRTIO_BLK_S_UNSUPP;
    }
    if (iov_bytes(out, out_num) != sizeof(seg)) {
        return VIRTIO_BLK_S_UNSUPP; /* max_*_seg is 1 */
    }
    iov_copy_out(out, out_num, &seg, sizeof(seg));
    sector = le64toh(seg.sector);
    num = le32toh(seg.num_sectors);
    flags = le32toh(seg.flags);
    if (flags & ~(wz ? VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP : 0u)) {
        return VIRTIO_BLK_S_UNSUPP;
    }
    if (blk_is_read_only(s->blk) ||
        num > (wz ? VBLK_MAX_WZ_SECTORS : VBLK_MAX_DISCARD_SECTORS) ||
        !vblk_range_ok(s, sector, (uint64_t)num * 512)) {
        return VIRTIO_BLK_S_IOERR;
    }
    if (num == 0) {
        return VIRTIO_BLK_S_OK; /* nothing to do (drivers reject empty ranges) */
    }
    int ret = wz ? blk_queue_write_zeroes(r->q->bq, sector * 512, (uint64_t)num * 512,
                                          flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
                                          req_done, r)
                 : blk_queue_discard(r->q->bq, sector * 512, (uint64_t)num * 512,
                                     req_done, r);
    return ret < 0 ? VIRTIO_BLK_S_IOERR : -EINPROGRESS;
}

/*
 * Dispatch one request.  Returns a status to complete with now, or
 * -EINPROGRESS when the block layer will call req_done().
 */
static int vblk_submit(VirtIOBlockReq *r, uint32_t type, uint64_t sector,
                       struct iovec *out, unsigned out_num,
                       struct iovec *in, unsigned in_num)
{
    VirtIOBlockQueue *q = r->q;
    VirtIOBlock *s = q->s;
    uint64_t len;
    int ret;

    switch (type) {
    case VIRTIO_BLK_T_IN:
        len = iov_bytes(in, in_num);
        if (!vblk_range_ok(s, sector, len)) {
            return VIRTIO_BLK_S_IOERR;
        }
        if (len == 0) {
            return VIRTIO_BLK_S_OK;
        }
        ret = blk_queue_preadv(q->bq, sector * 512, in, in_num, req_done, r);
        break;
    case VIRTIO_BLK_T_OUT:
        len = iov_bytes(out, out_num);
        if (blk_is_read_only(s->blk) || !vblk_range_ok(s, sector, len)) {
            return VIRTIO_BLK_S_IOERR;
        }
        if (len == 0) {
            return VIRTIO_BLK_S_OK;
        }
        ret = blk_queue_pwritev(q->bq, sector * 512, out, out_num, req_done, r);
        break;
    case VIRTIO_BLK_T_FLUSH:
        ret = blk_queue_flush(q->bq, req_done, r);
        break;
    case VIRTIO_BLK_T_GET_ID:
        iov_copy_in(in, in_num, s->serial, MIN(iov_bytes(in, in_num),
                                               (uint64_t)VIRTIO_BLK_ID_BYTES));
        return VIRTIO_BLK_S_OK;
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES:
        return vblk_discard_wz(r, type, out, out_num);
    default: /* GET_LIFETIME, SECURE_ERASE, zoned, unknown */
        return VIRTIO_BLK_S_UNSUPP;
    }
    return ret < 0 ? VIRTIO_BLK_S_IOERR : -EINPROGRESS;
}

static void vblk_handle_request(VirtIOBlockQueue *q, VirtQueueElement *elem)
{
    struct {
        uint32_t type;
        uint32_t ioprio;
        uint64_t sector;
    } hdr;
    struct iovec *out = elem->out_iov, *in = elem->in_iov;
    unsigned out_num = elem->out_num, in_num = elem->in_num;
    VirtIOBlockReq *r;
    int st;

    /* 5.2.6: header first (device-readable), status last (writable). */
    if (iov_copy_out(out, out_num, &hdr, sizeof(hdr)) < sizeof(hdr) ||
        in_num == 0 || in[in_num - 1].iov_len < 1) {
        virtio_error(&q->s->vdev, "virtio-blk: request without header or status byte");
        virtqueue_detach_element(q->vq, elem);
        return;
    }
    r = req_get(q);
    r->elem = elem;
    r->status = (uint8_t *)in[in_num - 1].iov_base + in[in_num - 1].iov_len - 1;
    iov_drop_front(&out, &out_num, sizeof(hdr));
    if (--in[in_num - 1].iov_len == 0) {
        in_num--;
    }
    r->type = le32toh(hdr.type);
    r->sector = le64toh(hdr.sector);
    r->out = out;
    r->out_num = out_num;
    r->in = in;
    r->in_num = in_num;
    st = vblk_submit(r, r->type, r->sector, out, out_num, in, in_num);
    if (st != -EINPROGRESS) {
        req_complete(r, st);
    }
}

/* A guest kick or a poll hit: everything available (at most one queue's
 * worth per call), as one plugged batch. */
static void vblk_handle_vq(VirtIODevice *vdev, VirtQueue *vq)
{
    VirtIOBlockQueue *q = &vblk_of(vdev)->queues[virtqueue_get_index(vq)];
    bool suppress = virtqueue_get_notification(vq);
    unsigned budget = virtqueue_get_size(vq);
    VirtQueueElement *elem;

    vblk_assert_home(q);
    if (q->stopping) {
        return;
    }
    blk_queue_plug(q->bq);
    for (;;) {
        if (suppress) {
            virtqueue_set_notification(vq, false);
        }
        while (budget && (elem = virtqueue_pop(vq))) {
            budget--;
            vblk_handle_request(q, elem);
        }
        if (!(suppress && virtqueue_set_notification(vq, true)) || budget == 0) {
            break;
        }
    }
    blk_queue_unplug(q->bq);
    if (budget == 0 && !virtqueue_empty(vq)) {
        /* Let other handlers of this context run, then continue. */
        event_notifier_set(virtqueue_get_host_notifier(vq));
    }
}

/* ------------------------------------------------------------------ */
/* werror/rerror=stop: held requests */

/* Take the held list of @q (its context). */
static VirtIOBlockReq *vblk_take_held(VirtIOBlockQueue *q)
{
    VirtIOBlockReq *list = q->held_head;
    unsigned n = 0;

    q->held_head = NULL;
    q->held_tail = &q->held_head;
    for (VirtIOBlockReq *r = list; r; r = r->next) {
        n++;
    }
    atomic_fetch_sub_explicit(&q->s->held, n, memory_order_relaxed);
    return list;
}

/* In the queue's context: resubmit what "stop" kept, in order, as one
 * plugged batch.  A request that fails again meets the policy again. */
static void vblk_retry_bh(void *opaque)
{
    VirtIOBlockQueue *q = opaque;
    VirtIOBlockReq *list;

    vblk_assert_home(q);
    if (!q->bq || q->stopping) {
        return; /* in a stop's drain: a move re-arms it, a reset drops */
    }
    if (!atomic_exchange(&q->retry_wanted, false)) {
        return;
    }
    list = vblk_take_held(q);
    blk_queue_plug(q->bq);
    while (list) {
        VirtIOBlockReq *r = list;
        int st;

        list = r->next;
        st = vblk_submit(r, r->type, r->sector, r->out, r->out_num, r->in,
                         r->in_num);
        if (st != -EINPROGRESS) {
            req_complete(r, st);
        }
    }
    blk_queue_unplug(q->bq);
}

void virtio_blk_retry_failed(VirtIOBlock *s)
{
    for (unsigned i = 0; i < s->vdev.num_queues; i++) {
        VirtIOBlockQueue *q = &s->queues[i];

        /* retry_bh lives while the queue is started (BQL: a start or
         * stop cannot run meanwhile); a stop deletes it, so it never runs
         * against a queue that moved or went away (a oneshot BH did: in
         * the main loop, a move or unplug stops the queue inline, before
         * BHs already scheduled there). */
        if (q->started) {
            atomic_store(&q->retry_wanted, true);
            aio_bh_schedule(q->retry_bh);
        }
    }
}

static void vblk_resume_cb(void *opaque)
{
    virtio_blk_retry_failed(opaque);
}

void virtio_blk_set_error_handler(VirtIOBlock *s, const BlockErrorHandler *h,
                                  const char *id)
{
    if (s->err_handler && s->err_handler->del_resume) {
        s->err_handler->del_resume(s->err_handler->opaque, vblk_resume_cb, s);
    }
    g_free(s->err_id);
    s->err_id = g_strdup(id);
    s->err_handler = h;
    if (h && h->add_resume) {
        h->add_resume(h->opaque, vblk_resume_cb, s);
    }
}

unsigned virtio_blk_held_requests(VirtIOBlock *s)
{
    return atomic_load_explicit(&s->held, memory_order_relaxed);
}

/* ------------------------------------------------------------------ */
/* Start / stop, in each queue's context */

static void vblk_queue_start_fn(void *opaque)
{
    VirtIOBlockQueue *q = opaque;

    q->bq = blk_queue_new(q->s->blk, q->ctx, &q->start_err);
    if (!q->bq) {
        return;
    }
    q->flush_bh = aio_bh_new(q->ctx, vblk_flush_bh, q);
    q->retry_bh = aio_bh_new(q->ctx, vblk_retry_bh, q);
    q->stopping = false;
}

static void vblk_queue_stop_fn(void *opaque)
{
    VirtIOBlockQueue *q = opaque;

    q->stopping = true;  /* kicks during the drain are ignored */
    blk_queue_drain(q->bq);
    /* A reset (or unplug) drops what "stop" kept: the driver that would
     * see the completion is gone.  A move keeps them: the guest still
     * waits for them, and "cont" retries them in the new context. */
    for (VirtIOBlockReq *r = q->moving ? NULL : vblk_take_held(q), *next;
         r; r = next) {
        next = r->next;
        virtqueue_detach_element(q->vq, r->elem);
        req_put(r);
    }
    if (!q->moving) {
        atomic_store(&q->retry_wanted, false);
    }
    virtqueue_flush(q->vq);
    aio_bh_delete(q->flush_bh);
    q->flush_bh = NULL;
    aio_bh_delete(q->retry_bh);
    q->retry_bh = NULL;
    blk_queue_free(q->bq);
    q->bq = NULL;
}

/* Quiesce one started queue: drain its requests in its context, publish
 * their used entries, then unbind its notifier.  Kicks arriving meanwhile
 * are swallowed (the handler ignores them while stopping); the next
 * vblk_queue_start() kicks the queue itself, so no avail entry is lost. */
static void vblk_queue_stop(VirtIOBlockQueue *q)
{
    aio_context_run_sync(q->ctx, vblk_queue_stop_fn, q);
    virtqueue_detach(q->vq);
    q->started = false;
}

/* Serve one enabled queue in q->ctx (virtqueue_attach kicks it once, for
 * what the guest published while it was not served).  On failure, why in
 * *@errp (NULL: printed on stderr, for a start the guest asked for). */
static int vblk_queue_start(VirtIOBlockQueue *q, GError **errp)
{
    int ret = aio_context_run_sync(q->ctx, vblk_queue_start_fn, q);

    if (ret == 0 && !q->bq) {
        GError *e = q->start_err;

        q->start_err = NULL;
        ret = e && e->code > 0 ? -e->code : -ENOMEM;
        if (!errp) {
            fprintf(stderr, "shardvm: %s: %s\n", q->s->vdev.name,
                    e ? e->message : g_strerror(-ret));
            g_clear_error(&e);
        } else if (e) {
            g_propagate_error(errp, e);
        } else {
            shardvm_error_set(errp, ret, "%s", g_strerror(-ret));
        }
        return ret;
    }
    if (ret < 0) {
        return shardvm_error_set(errp, ret, "%s: context closed: %s",
                                 q->s->vdev.name, g_strerror(-ret));
    }
    q->started = true;
    ret = virtqueue_attach(q->vq, q->ctx, vblk_handle_vq);
    if (ret < 0) {
        aio_context_run_sync(q->ctx, vblk_queue_stop_fn, q);
        q->started = false;
        shardvm_error_set(errp, ret, "%s: cannot attach the queue: %s",
                          q->s->vdev.name, g_strerror(-ret));
    } else if (atomic_load(&q->retry_wanted)) {
        /* A move: "cont" asked for a retry the old context did not run
         * (once attached: a completion pushes to the used ring). */
        aio_bh_schedule(q->retry_bh);
    }
    return ret;
}

static void vblk_queue_drop_held_fn(void *opaque)
{
    VirtIOBlockQueue *q = opaque;

    for (VirtIOBlockReq *r = vblk_take_held(q), *next; r; r = next) {
        next = r->next;
        virtqueue_detach_element(q->vq, r->elem);
        req_put(r);
    }
    atomic_store(&q->retry_wanted, false);
}

/* A queue that lost its context in a move (no start worked, here or back
 * in the old one) may still hold requests "stop" kept: drop them as a
 * stop does, in q->ctx with the queue bound there (no handler) for the
 * while, so that the virtqueue can be reset or freed. */
static void vblk_queue_drop_orphans(VirtIOBlockQueue *q)
{
    if (!q->held_head || virtqueue_attach(q->vq, q->ctx, NULL) < 0) {
        return;
    }
    aio_context_run_sync(q->ctx, vblk_queue_drop_held_fn, q);
    virtqueue_detach(q->vq);
}

static void vblk_stop(VirtIODevice *vdev)
{
    VirtIOBlock *s = vblk_of(vdev);

    for (unsigned i = 0; i < vdev->num_queues; i++) {
        VirtIOBlockQueue *q = &s->queues[i];

        if (q->started) {
            vblk_queue_stop(q);
        } else {
            vblk_queue_drop_orphans(q);
        }
    }
    /* What a driver did to the cache (write-through without FLUSH, a
     * CONFIG_WCE write) ends with it: the next one starts from the
     * drive's mode. */
    blk_set_write_cache(s->blk, s->wce_configured);
}

static int vblk_start(VirtIODevice *vdev)
{
    VirtIOBlock *s = vblk_of(vdev);

    /* A driver that cannot flush gets a write-through cache (5.2.5). */
    if (!virtio_has_feature(vdev, VIRTIO_BLK_F_FLUSH)) {
        blk_set_write_cache(s->blk, false);
    }
    for (unsigned i = 0; i < vdev->num_queues; i++) {
        VirtIOBlockQueue *q = &s->queues[i];
        int ret;

        if (!virtqueue_is_enabled(q->vq)) {
            continue;
        }
        ret = vblk_queue_start(q, NULL);
        if (ret < 0) {
            vblk_stop(vdev);
            return ret;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Moving queues between contexts (x-blockdev-set-iothread) */

int virtio_blk_set_queue_context(VirtIOBlock *s, unsigned index,
                                 AioContext *ctx, GError **errp)
{
    VirtIOBlockQueue *q;
    AioContext *old;
    bool was_started;
    int ret = 0;

    if (index >= s->vdev.num_queues) {
        return shardvm_error_set(errp, -EINVAL, "virtio-blk: no queue %u",
                                 index);
    }
    q = &s->queues[index];
    if (q->ctx == ctx) {
        return 0;
    }
    /* vdev->lock: a guest reset or DRIVER_OK (vCPU thread) cannot start
     * or stop the queue halfway through the move. */
    g_mutex_lock(&s->vdev.lock);
    old = q->ctx;
    was_started = q->started;
    /* The held list survives the stop, and the stop of a start that
     * fails halfway (until the queue runs again, here or back in @old). */
    q->moving = true;
    if (was_started) {
        vblk_queue_stop(q);   /* drained: nothing in flight in @old */
    }
    aio_context_ref(ctx);
    q->ctx = ctx;
    if (was_started) {
        GError *why = NULL;

        ret = vblk_queue_start(q, &why);
        if (ret < 0) {
            /* Back where it was, so the guest keeps its disk. */
            aio_context_unref(ctx);
            q->ctx = old;
            old = NULL;
            if (vblk_queue_start(q, NULL) < 0) {
                virtio_error(&s->vdev, "virtio-blk: queue %u lost its "
                             "context in a move", index);
            }
            shardvm_error_set(errp, ret, "virtio-blk: cannot start queue %u "
                              "in the new context: %s", index,
                              why ? why->message : g_strerror(-ret));
            g_clear_error(&why);
        }
    }
    q->moving = false;
    g_mutex_unlock(&s->vdev.lock);
    if (old) {
        aio_context_unref(old);
    }
    return ret;
}

AioContext *virtio_blk_get_queue_context(const VirtIOBlock *s, unsigned index)
{
    return index < s->vdev.num_queues ? s->queues[index].ctx : NULL;
}

unsigned virtio_blk_get_num_queues(const VirtIOBlock *s)
{
    return s->vdev.num_queues;
}

/* ------------------------------------------------------------------ */
/* Features and configuration space */

static uint64_t vblk_get_features(VirtIODevice *vdev)
{
    VirtIOBlock *s = vblk_of(vdev);
    uint64_t f = (1ULL << VIRTIO_BLK_F_SEG_MAX) | (1ULL << VIRTIO_BLK_F_SIZE_MAX) |
                 (1ULL << VIRTIO_BLK_F_BLK_SIZE) | (1ULL << VIRTIO_BLK_F_TOPOLOGY) |
                 (1ULL << VIRTIO_BLK_F_FLUSH) | (1ULL << VIRTIO_BLK_F_CONFIG_WCE);

    if (blk_is_read_only(s->blk)) {
        f |= 1ULL << VIRTIO_BLK_F_RO;
    }
    if (s->cfg.num_queues > 1) {
        f |= 1ULL << VIRTIO_BLK_F_MQ;
    }
    if (s->cfg.discard) {
        f |= 1ULL << VIRTIO_BLK_F_DISCARD;
    }
    if (s->cfg.write_zeroes) {
        f |= 1ULL << VIRTIO_BLK_F_WRITE_ZEROES;
    }
    return f;
}

static void put32(uint8_t *c, unsigned off, uint32_t v)
{
    v = htole32(v);
    memcpy(c + off, &v, 4);
}

static void vblk_read_config(VirtIODevice *vdev, uint32_t offset, void *buf,
                             unsigned len)
{
    VirtIOBlock *s = vblk_of(vdev);
    uint8_t c[VIRTIO_BLK_CONFIG_SIZE] = { 0 };
    uint64_t cap = htole64(s->capacity_bytes / 512);
    uint16_t nq = htole16(s->cfg.num_queues);
    uint32_t sectors_per_lb = s->cfg.logical_block_size / 512;

    memcpy(c + VIRTIO_BLK_CFG_CAPACITY, &cap, 8);
    put32(c, VIRTIO_BLK_CFG_SIZE_MAX, VBLK_SIZE_MAX);
    put32(c, VIRTIO_BLK_CFG_SEG_MAX, s->cfg.queue_size - 2);
    put32(c, VIRTIO_BLK_CFG_BLK_SIZE, s->cfg.logical_block_size);
    c[VIRTIO_BLK_CFG_PHYS_BLOCK_EXP] =
        g_bit_nth_msf(s->cfg.physical_block_size / s->cfg.logical_block_size, -1);
    c[VIRTIO_BLK_CFG_WRITEBACK] = blk_get_write_cache(s->blk);
    memcpy(c + VIRTIO_BLK_CFG_NUM_QUEUES, &nq, 2);
    put32(c, VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS, VBLK_MAX_DISCARD_SECTORS);
    put32(c, VIRTIO_BLK_CFG_MAX_DISCARD_SEG, 1);
    put32(c, VIRTIO_BLK_CFG_DISCARD_ALIGNMENT, sectors_per_lb);
    put32(c, VIRTIO_BLK_CFG_MAX_WZ_SECTORS, VBLK_MAX_WZ_SECTORS);
    put32(c, VIRTIO_BLK_CFG_MAX_WZ_SEG, 1);
    c[VIRTIO_BLK_CFG_WZ_MAY_UNMAP] = s->cfg.discard;
    memcpy(buf, c + offset, len);
}

static void vblk_write_config(VirtIODevice *vdev, uint32_t offset,
                              const void *buf, unsigned len)
{
    VirtIOBlock *s = vblk_of(vdev);

    /* Only the writeback byte is writable, and only with CONFIG_WCE. */
    if (offset <= VIRTIO_BLK_CFG_WRITEBACK && offset + len > VIRTIO_BLK_CFG_WRITEBACK &&
        virtio_has_feature(vdev, VIRTIO_BLK_F_CONFIG_WCE)) {
        uint8_t wce = ((const uint8_t *)buf)[VIRTIO_BLK_CFG_WRITEBACK - offset];

        blk_set_write_cache(s->blk, wce != 0);
    }
}

static const VirtIODeviceOps vblk_ops = {
    .get_features = vblk_get_features,
    .read_config = vblk_read_config,
    .write_config = vblk_write_config,
    .start = vblk_start,
    .stop = vblk_stop,
};

/* ------------------------------------------------------------------ */
/* Life cycle */

VirtIOBlock *virtio_blk_new(const VirtIOBlockConfig *cfg, BlockBackend *blk,
                            AioContext **queue_ctxs, GuestMemory *mem,
                            GError **errp)
{
    VirtIOBlock *s;
    uint32_t lbs = cfg->logical_block_size, pbs = cfg->physical_block_size;

    if (lbs < 512 || lbs > 32768 || (lbs & (lbs - 1)) || pbs < lbs ||
        (pbs & (pbs - 1))) {
        shardvm_error_set(errp, -EINVAL,
                          "virtio-blk: bad logical_block_size %u / physical_block_size %u",
                          lbs, pbs);
        return NULL;
    }
    if (cfg->num_queues == 0 || cfg->queue_size < 2 ||
        (cfg->queue_size & (cfg->queue_size - 1))) {
        shardvm_error_set(errp, -EINVAL, "virtio-blk: bad num-queues or queue-size");
        return NULL;
    }
    if (blk_get_size(blk) % lbs) {
        shardvm_error_set(errp, -EINVAL,
                          "virtio-blk: drive '%s' size is not a multiple of %u",
                          blk_get_id(blk), lbs);
        return NULL;
    }
    s = g_new0(VirtIOBlock, 1);
    s->cfg = *cfg;
    s->cfg.drive = s->cfg.iothread = s->cfg.serial = NULL;
    s->cfg.vq_mapping = NULL;
    s->cfg.nr_vq_mapping = 0;
    if (cfg->serial) {
        /* 20 bytes, NUL-padded, not necessarily terminated (5.2.6). */
        memcpy(s->serial, cfg->serial, MIN(strlen(cfg->serial), sizeof(s->serial)));
    }
    blk_ref(blk);
    s->blk = blk;
    s->capacity_bytes = blk_get_size(blk);
    s->wce_configured = blk_get_write_cache(blk);
    /* AUTO (the drive's) is resolved by the constructor that knows the
     * drive (virtio-blk-pci); what is left gets QEMU's drive defaults */
    s->werror = cfg->werror;
    s->rerror = cfg->rerror;
    if (s->werror == BLOCK_ERROR_POLICY_AUTO) {
        s->werror = BLOCK_ERROR_POLICY_ENOSPC;
    }
    if (s->rerror == BLOCK_ERROR_POLICY_AUTO) {
        s->rerror = BLOCK_ERROR_POLICY_REPORT;
    }
    atomic_init(&s->held, 0);

    s->vdev.name = "virtio-blk";
    s->vdev.device_id = VIRTIO_ID_BLOCK;
    s->vdev.ops = &vblk_ops;
    s->vdev.config_size = VIRTIO_BLK_CONFIG_SIZE;
    s->vdev.mem = mem;
    virtio_device_init(&s->vdev, cfg->num_queues, cfg->queue_size);

    s->queues = g_new0(VirtIOBlockQueue, cfg->num_queues);
    for (unsigned i = 0; i < cfg->num_queues; i++) {
        VirtIOBlockQueue *q = &s->queues[i];

        q->s = s;
        q->vq = virtio_get_queue(&s->vdev, i);
        q->ctx = queue_ctxs[i];
        q->held_tail = &q->held_head;
        atomic_init(&q->retry_wanted, false);
        aio_context_ref(q->ctx);
        q->reqs = g_new0(VirtIOBlockReq, cfg->queue_size);
        q->free_reqs = g_ptr_array_sized_new(cfg->queue_size);
        for (unsigned j = 0; j < cfg->queue_size; j++) {
            q->reqs[j].q = q;
            q->reqs[j].pooled = true;
            g_ptr_array_add(q->free_reqs, &q->reqs[j]);
        }
    }
    return s;
}

void virtio_blk_free(VirtIOBlock *s)
{
    if (!s) {
        return;
    }
    vblk_stop(&s->vdev);
    virtio_blk_set_error_handler(s, NULL, NULL);
    for (unsigned i = 0; i < s->vdev.num_queues; i++) {
        VirtIOBlockQueue *q = &s->queues[i];

        g_ptr_array_free(q->free_reqs, true);
        g_free(q->reqs);
        aio_context_unref(q->ctx);
    }
    g_free(s->queues);
    virtio_device_cleanup(&s->vdev);
    blk_unref(s->blk);
    g_free(s);
}

VirtIODevice *virtio_blk_get_vdev(VirtIOBlock *s)
{
    return &s->vdev;
}
