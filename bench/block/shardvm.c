/*
 * The shardvm side: one IOThread, one BlockQueue in its context, a closed
 * loop keeping qd 4 KiB requests in flight.  Each completion callback
 * resubmits its slot at a new random offset; for native and io_uring the
 * resubmissions of one batch of completions sit between plug and unplug
 * (the first callback of a batch plugs and schedules a BH that unplugs
 * once the batch is done), so a batch goes to the kernel as one
 * io_submit() / io_uring_submit(), as a device's virtqueue pass would.
 * aio=threads has nothing to batch (plug does nothing there), so the bench
 * does not pay for the BH.
 *
 * Measured: requests completed and the CPU time of the whole process
 * (IOThread + thread-pool workers; the main thread sleeps) over a window
 * after a warm-up.
 */
#include "bench-block.h"

#include "shardvm/iothread.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct Loop Loop;

typedef struct Slot {
    Loop *l;
    struct iovec iov;
} Slot;

struct Loop {
    /* set up by the main thread before the loop starts, then read-only */
    BlockBackend *blk;
    AioContext *ctx;
    unsigned qd;
    bool write;
    bool batch;               /* plug/unplug around a completion batch */
    uint64_t nblocks;
    Slot *slots;
    /* IOThread only */
    BlockQueue *q;
    AioBH *unplug_bh;
    bool plugged;
    uint64_t rng;
    int submit_err;
    /* written by the IOThread, read by the main thread */
    atomic_uint_fast64_t done;
    atomic_uint_fast64_t errors;
    atomic_uint outstanding;
    /* written by the main thread */
    atomic_bool stop;
};

static uint64_t next_rand(Loop *l)
{
    /* xorshift64*: cheap and good enough for offsets */
    l->rng ^= l->rng >> 12;
    l->rng ^= l->rng << 25;
    l->rng ^= l->rng >> 27;
    return l->rng * 0x2545F4914F6CDD1DULL;
}

static void complete(void *opaque, int ret);

static void submit_slot(Loop *l, Slot *s)
{
    uint64_t off = (next_rand(l) % l->nblocks) * BENCH_BS;
    int r;

    if (l->batch && !l->plugged) {
        blk_queue_plug(l->q);
        l->plugged = true;
        aio_bh_schedule(l->unplug_bh);
    }
    if (l->write) {
        r = blk_queue_pwritev(l->q, off, &s->iov, 1, complete, s);
    } else {
        r = blk_queue_preadv(l->q, off, &s->iov, 1, complete, s);
    }
    if (r < 0) {
        l->submit_err = r;
        atomic_fetch_sub(&l->outstanding, 1);
    }
}

static void complete(void *opaque, int ret)
{
    Slot *s = opaque;
    Loop *l = s->l;

    atomic_store_explicit(&l->done,
                          atomic_load_explicit(&l->done,
                                               memory_order_relaxed) + 1,
                          memory_order_relaxed);
    if (ret < 0) {
        atomic_fetch_add_explicit(&l->errors, 1, memory_order_relaxed);
    }
    if (atomic_load_explicit(&l->stop, memory_order_relaxed)) {
        atomic_fetch_sub(&l->outstanding, 1);
        return;
    }
    submit_slot(l, s);
}

static void unplug_bh_cb(void *opaque)
{
    Loop *l = opaque;

    if (l->plugged) {
        l->plugged = false;
        blk_queue_unplug(l->q);
    }
}

static void loop_start(void *opaque)
{
    Loop *l = opaque;
    GError *err = NULL;

    l->q = blk_queue_new(l->blk, l->ctx, &err);
    if (!l->q) {
        fprintf(stderr, "bench-block: %s\n", err->message);
        g_error_free(err);
        l->submit_err = -EIO;
        return;
    }
    l->unplug_bh = aio_bh_new(l->ctx, unplug_bh_cb, l);
    atomic_store(&l->outstanding, l->qd);
    blk_queue_plug(l->q);
    l->plugged = true;
    for (unsigned i = 0; i < l->qd; i++) {
        submit_slot(l, &l->slots[i]);
    }
    l->plugged = false;
    blk_queue_unplug(l->q);
}

static void loop_finish(void *opaque)
{
    Loop *l = opaque;

    if (l->q) {
        aio_bh_delete(l->unplug_bh);
        blk_queue_free(l->q);
        l->q = NULL;
    }
}

int bench_shardvm_run(const BenchOpts *o, const BenchPoint *p,
                      BenchResult *out)
{
    BlockOptions bo = {
        .id = (char *)"bench",
        .driver = BLOCK_DRIVER_FILE,
        .filename = o->file[p->target],
        .aio = p->aio,
        .cache_direct = p->target == TARGET_DISK,
        .cache_writeback = true,
        .locking = BLOCK_LOCKING_OFF,
    };
    GError *err = NULL;
    Loop l = { .qd = p->qd, .write = p->write,
               .batch = p->aio != BLOCK_AIO_THREADS,
               .nblocks = o->size / BENCH_BS,
               .rng = 0x9E3779B97F4A7C15ULL ^ (uint64_t)bench_now_ns() };
    int ret = -1;

    out->iops = out->cpu_ns_per_io = -1;
    l.blk = blk_open(&bo, &err);
    if (!l.blk) {
        fprintf(stderr, "bench-block: %s\n", err->message);
        g_error_free(err);
        return -1;
    }
    IOThreadProps props = IOTHREAD_PROPS_DEFAULT;
    props.poll_max_ns = o->poll_max_ns;
    IOThread *iot = iothread_new("bench", &props, &err);
    if (!iot) {
        fprintf(stderr, "bench-block: %s\n", err->message);
        g_error_free(err);
        blk_unref(l.blk);
        return -1;
    }
    l.ctx = iothread_get_aio_context(iot);
    l.slots = g_new0(Slot, p->qd);
    for (unsigned i = 0; i < p->qd; i++) {
        void *buf;
        if (posix_memalign(&buf, BENCH_BS, BENCH_BS)) {
            abort();
        }
        memset(buf, 0x5a ^ i, BENCH_BS);
        l.slots[i] = (Slot){ .l = &l, .iov = { buf, BENCH_BS } };
    }

    int64_t t0 = bench_now_ns();
    aio_context_run_sync(l.ctx, loop_start, &l);
    if (l.submit_err == 0) {
        bench_sleep_until(t0 + (int64_t)(o->warmup_s * 1e9));
        int64_t w0 = bench_now_ns();
        int64_t c0 = bench_proc_cpu_ns(getpid());
        uint64_t d0 = atomic_load(&l.done);
        bench_sleep_until(w0 + (int64_t)(o->duration_s * 1e9));
        int64_t w1 = bench_now_ns();
        int64_t c1 = bench_proc_cpu_ns(getpid());
        uint64_t d1 = atomic_load(&l.done);
        if (d1 > d0 && c0 >= 0 && c1 >= c0) {
            out->iops = (double)(d1 - d0) * 1e9 / (double)(w1 - w0);
            out->cpu_ns_per_io = (double)(c1 - c0) / (double)(d1 - d0);
            ret = 0;
        }
    }
    atomic_store(&l.stop, true);
    while (atomic_load(&l.outstanding)) {
        g_usleep(1000);
    }
    aio_context_run_sync(l.ctx, loop_finish, &l);
    if (l.submit_err) {
        fprintf(stderr, "bench-block: shardvm: submit: %s\n",
                g_strerror(-l.submit_err));
        ret = -1;
    }
    if (atomic_load(&l.errors)) {
        fprintf(stderr, "bench-block: shardvm: %" G_GUINT64_FORMAT
                " failed requests\n", (guint64)atomic_load(&l.errors));
        ret = -1;
    }
    iothread_free(iot);
    for (unsigned i = 0; i < p->qd; i++) {
        free(l.slots[i].iov.iov_base);
    }
    g_free(l.slots);
    blk_unref(l.blk);
    return ret;
}
