/*
 * Block layer internals: the request, the queue, the backend and the
 * driver ops table.  Private to block/.
 */
#ifndef SHARDVM_BLOCK_INT_H
#define SHARDVM_BLOCK_INT_H

#include "shardvm/block.h"

#include <libaio.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#ifndef container_of
#define container_of(ptr, type, member) \
    ((type *)((char *)(ptr) - offsetof(type, member)))
#endif

typedef enum BlockReqType {
    BLK_REQ_READ,
    BLK_REQ_WRITE,
    BLK_REQ_FLUSH,
    BLK_REQ_DISCARD,
    BLK_REQ_ZEROES,
} BlockReqType;

typedef struct BlockFlushEpoch BlockFlushEpoch;

/*
 * One request, from its queue's pool.  Owned by the queue's home thread
 * except while a worker thread runs its synchronous part (the thread pool
 * hands it over and back).
 */
typedef struct BlockRequest {
    BlockQueue *q;
    BlockReqType type;        /* what the driver does now */
    BlockReqType orig_type;   /* what the caller asked (stats) */
    uint64_t offset, len;
    const struct iovec *iov;  /* what the driver transfers */
    int iovcnt;
    const struct iovec *user_iov; /* the caller's vector */
    int user_iovcnt;
    struct iovec bounce_iov;  /* O_DIRECT: the aligned bounce buffer */
    void *bounce;             /* NULL when no bounce */
    uint64_t user_offset;     /* the caller's offset and length */
    uint64_t user_len;
    uint64_t progress;        /* bytes done (short transfers resume here) */
    bool rmw;                 /* unaligned O_DIRECT write: read-modify-write */
    bool may_unmap;
    bool flush_after;         /* write-through: flush before completing */
    int64_t start_ns;
    int ret;                  /* result parked for the deferred completion */
    BlockCompletionFunc *cb;
    void *opaque;
    BlockFlushEpoch *epoch;   /* writes: the epoch a later flush waits for */
    struct BlockRequest *next; /* free list / deferred lists */
    struct iocb iocb;         /* aio=native */
} BlockRequest;

/*
 * Driver: how requests of a queue reach storage.  Every function runs in
 * the queue's home thread.  submit() must not complete the request
 * synchronously: completion goes through blk_req_done() from the event
 * loop (a BH, an eventfd handler, a thread-pool completion).
 */
typedef struct BlockDriverOps {
    const char *name;
    int (*attach)(BlockQueue *q, GError **errp);   /* per-context state */
    void (*detach)(BlockQueue *q);
    void (*submit)(BlockRequest *req);
    void (*unplug)(BlockQueue *q);                 /* may be NULL */
} BlockDriverOps;

extern const BlockDriverOps blk_drv_threads;
extern const BlockDriverOps blk_drv_linux_aio;
extern const BlockDriverOps blk_drv_io_uring;
extern const BlockDriverOps blk_drv_null;
extern const BlockDriverOps blk_drv_blkdebug;

/* blkdebug: a rule and its counters, shared by the node's queues in every
 * context (atomics). */
typedef struct BlkdebugRuleState {
    BlockInjectRule rule;     /* immutable after open */
    _Atomic uint64_t matches; /* requests the rule matched so far */
    atomic_bool spent;        /* a "once" rule that fired */
} BlkdebugRuleState;

/* blkdebug_load_config: append the [inject-error] sections of @path to
 * @rules (GArray of BlockInjectRule).  0 or -errno with *@errp set. */
int blkdebug_load_config(const char *path, GArray *rules, GError **errp);
/* blkdebug_rule_init: QEMU's defaults (any I/O, EIO, any sector, always).
 * blkdebug_rule_set: one key of an [inject-error] rule (event, iotype,
 * errno, sector, once, immediately; every, sector-count).  Pure. */
void blkdebug_rule_init(BlockInjectRule *r);
int blkdebug_rule_set(BlockInjectRule *r, const char *key, const char *v,
                      GError **errp);

/* Statistics, updated with relaxed atomics at completion. */
typedef struct BlockStatsAtomic {
    _Atomic uint64_t rd_ops, wr_ops, flush_ops, discard_ops, zero_ops;
    _Atomic uint64_t rd_bytes, wr_bytes;
    _Atomic uint64_t rd_total_ns, wr_total_ns, flush_total_ns;
    _Atomic uint64_t failed_ops;
    _Atomic uint64_t submit_calls;  /* io_submit / io_uring_submit calls */
} BlockStatsAtomic;

struct BlockBackend {
    atomic_uint refcnt;       /* queues take theirs in their own thread */
    BlockOptions opts;        /* immutable after open (strings owned) */
    int fd;                   /* -1 for the null drivers */
    bool is_blockdev;
    /* The device model using the backend (blk_attach_dev()), NULL for
     * none.  Main thread (machine assembly and teardown). */
    void *dev;
    uint64_t size;            /* bytes, immutable */
    uint32_t align;           /* O_DIRECT alignment, 1 without */
    int sector_size;          /* block device: logical block size */
    atomic_bool writeback;    /* virtio-blk WCE; any thread */
    pthread_mutex_t rmw_lock; /* serialises O_DIRECT read-modify-writes
                                 (pthread, not GMutex: TSan sees it) */
    BlockStatsAtomic stats;
    /* blkdebug: the node below (referenced, attached to us) and the
     * rules; immutable after open. */
    BlockBackend *image;
    BlkdebugRuleState *dbg_rules;
    unsigned nr_dbg_rules;
};

struct BlockQueue {
    /* Everything here: the home thread of ctx, unless said otherwise. */
    BlockBackend *blk;
    AioContext *ctx;
    const BlockDriverOps *ops;
    void *drv;                /* driver state (per-context, shared) */
    unsigned in_flight;
    unsigned plugged;         /* nesting depth of blk_queue_plug() */
    BlockRequest *free_reqs;  /* the pool */
    unsigned allocated;       /* requests ever allocated (all freed at end) */
    BlockRequest *done_head;  /* completed, waiting for done_bh */
    BlockRequest **done_tail;
    AioBH *done_bh;
    GQueue epochs;            /* BlockFlushEpoch*, oldest first */
    /* aio=native: iocbs waiting for the next io_submit() */
    struct iocb **aio_pending;
    unsigned aio_npending, aio_cap;
    /* null drivers with latency-ns: FIFO of requests waiting for a timer */
    BlockRequest *lat_head, **lat_tail;
    AioTimer *lat_timer;
    /* blkdebug: the image's queue in the same context */
    BlockQueue *child;
};

/* blk_req_done: the driver's completion, in the home thread. */
void blk_req_done(BlockRequest *req, int ret);

/* blk_req_complete_later: complete @req with @ret from the queue's BH. */
void blk_req_complete_later(BlockRequest *req, int ret);

/* blk_req_run_sync: do @req with blocking syscalls (worker threads). */
int blk_req_run_sync(BlockRequest *req);

/* blk_threads_submit: hand @req to the context's thread pool. */
void blk_threads_submit(BlockRequest *req);

/*
 * Per-AioContext shared state (libaio context, io_uring ring): a registry
 * keyed by (kind, ctx), refcounted by the queues using it.  @create runs
 * under the registry lock on first use.  Home thread of @ctx.
 */
typedef void *BlockCtxCreateFunc(AioContext *ctx, GError **errp);
typedef void BlockCtxDestroyFunc(void *state);
void *blk_ctx_state_get(int kind, AioContext *ctx, BlockCtxCreateFunc *create,
                        GError **errp);
void blk_ctx_state_put(int kind, AioContext *ctx,
                       BlockCtxDestroyFunc *destroy);

/* Image locking (file-lock.c).  Returns 0 or a negative errno + errp. */
int blk_lock_image(int fd, const char *filename, bool read_only,
                   BlockLocking locking, GError **errp);

#endif
