// A RAM-disk stand-in for the block layer (the blk_* calls virtio-blk
// makes), following block.h's rules: completions run later, in the queue's
// context, from a one-shot BH.  Definitions are weak: if the real block
// layer is linked into the test, it wins.
#include "fake-block.h"

#include "shardvm/error.h"

#include <cassert>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#define WEAK extern "C" __attribute__((weak))

namespace {

struct FakeReq {
    BlockQueue *q;
    BlockCompletionFunc *cb;
    void *opaque;
    int ret;
};

void FakeComplete(void *opaque)
{
    auto *r = static_cast<FakeReq *>(opaque);
    r->q->in_flight--;
    r->cb(r->opaque, r->ret);
    delete r;
}

int Submit(BlockQueue *q, int ret, BlockCompletionFunc *cb, void *opaque)
{
    if (!aio_context_in_home_thread(q->ctx)) {
        q->blk->wrong_thread++;
    }
    q->submitted++;
    q->blk->submitted++;
    if (q->plug) {
        q->in_plug++;
        if (q->in_plug > q->max_plugged) {
            q->max_plugged = q->in_plug;
        }
        if (q->max_plugged > q->blk->max_plugged) {
            q->blk->max_plugged = q->max_plugged;
        }
    }
    q->in_flight++;
    int fail = q->blk->fail.load();
    aio_bh_schedule_oneshot(q->ctx, FakeComplete, new FakeReq{q, cb, opaque, fail ? fail : ret});
    return 0;
}

bool InRange(BlockBackend *b, uint64_t off, uint64_t len)
{
    return off <= b->size && len <= b->size - off;
}

}  // namespace

BlockBackend *fake_blk_new(uint64_t size, bool ro)
{
    auto *b = new BlockBackend();
    b->data = static_cast<uint8_t *>(calloc(1, size));
    b->size = size;
    b->ro = ro;
    b->refs = 1;
    return b;
}

WEAK const char *blk_get_id(const BlockBackend *blk) { return "fake"; }
WEAK uint64_t blk_get_size(const BlockBackend *blk) { return blk->size; }
WEAK bool blk_is_read_only(const BlockBackend *blk) { return blk->ro; }
WEAK bool blk_get_write_cache(const BlockBackend *blk) { return blk->wce.load(); }
WEAK void blk_set_write_cache(BlockBackend *blk, bool wb) { blk->wce.store(wb); }
WEAK void blk_ref(BlockBackend *blk) { blk->refs++; }
WEAK void blk_unref(BlockBackend *blk)
{
    if (--blk->refs == 0) {
        free(blk->data);
        delete blk;
    }
}

WEAK BlockQueue *blk_queue_new(BlockBackend *blk, AioContext *ctx, GError **errp)
{
    if (blk->queues.load() >= blk->max_queues.load()) {
        shardvm_error_set(errp, -EMFILE, "fake: no more queues");
        return nullptr;
    }
    auto *q = new BlockQueue();
    q->blk = blk;
    q->ctx = ctx;
    blk->queues++;
    return q;
}

WEAK void blk_queue_free(BlockQueue *q)
{
    if (q->in_flight) {
        abort();  // block.h: drain first
    }
    q->blk->queues--;
    delete q;
}

WEAK int blk_queue_preadv(BlockQueue *q, uint64_t offset, const struct iovec *iov,
                          int iovcnt, BlockCompletionFunc *cb, void *opaque)
{
    uint64_t off = offset;
    for (int i = 0; i < iovcnt; i++) {
        if (!InRange(q->blk, off, iov[i].iov_len)) {
            return -EINVAL;
        }
        memcpy(iov[i].iov_base, q->blk->data + off, iov[i].iov_len);
        off += iov[i].iov_len;
    }
    return Submit(q, 0, cb, opaque);
}

WEAK int blk_queue_pwritev(BlockQueue *q, uint64_t offset, const struct iovec *iov,
                           int iovcnt, BlockCompletionFunc *cb, void *opaque)
{
    uint64_t off = offset;
    if (q->blk->ro) {
        return -EROFS;
    }
    for (int i = 0; i < iovcnt; i++) {
        if (!InRange(q->blk, off, iov[i].iov_len)) {
            return -EINVAL;
        }
        memcpy(q->blk->data + off, iov[i].iov_base, iov[i].iov_len);
        off += iov[i].iov_len;
    }
    return Submit(q, 0, cb, opaque);
}

WEAK int blk_queue_flush(BlockQueue *q, BlockCompletionFunc *cb, void *opaque)
{
    q->blk->flushes++;
    return Submit(q, 0, cb, opaque);
}

WEAK int blk_queue_discard(BlockQueue *q, uint64_t offset, uint64_t len,
                           BlockCompletionFunc *cb, void *opaque)
{
    if (!InRange(q->blk, offset, len)) {
        return -EINVAL;
    }
    q->blk->discards++;
    return Submit(q, 0, cb, opaque);
}

WEAK int blk_queue_write_zeroes(BlockQueue *q, uint64_t offset, uint64_t len,
                                bool may_unmap, BlockCompletionFunc *cb, void *opaque)
{
    if (!InRange(q->blk, offset, len)) {
        return -EINVAL;
    }
    memset(q->blk->data + offset, 0, len);
    if (may_unmap) {
        q->blk->unmaps++;
    }
    return Submit(q, 0, cb, opaque);
}

WEAK void blk_queue_plug(BlockQueue *q)
{
    if (q->plug++ == 0) {
        q->in_plug = 0;
    }
}

WEAK void blk_queue_unplug(BlockQueue *q)
{
    assert(q->plug > 0);
    q->plug--;
}

WEAK unsigned blk_queue_in_flight(const BlockQueue *q) { return q->in_flight; }

WEAK void blk_queue_drain(BlockQueue *q)
{
    while (q->in_flight) {
        aio_poll(q->ctx, true);
    }
}
