/*
 * Block layer: raw images (and null devices) behind an asynchronous request
 * API whose completions run in the AioContext that submitted them.
 *
 * Objects:
 *  - BlockBackend: one opened image (a -drive or a -blockdev node): the
 *    file descriptor, its size, its options (cache, aio, read-only,
 *    discard), statistics.  Reference counted; shared by every context
 *    that does I/O on it.  Open and close on the main thread (BQL).
 *  - BlockQueue: a BlockBackend's I/O channel in ONE AioContext (SPDK's
 *    "I/O channel"; QEMU's per-AioContext LinuxAioState / LuringState).
 *    A device creates one per virtqueue (or per context) and submits from
 *    that context's home thread only.  Requests come from a per-queue pool
 *    (no allocation per request once warm); the queue counts requests in
 *    flight, batches submissions between plug and unplug, and delivers
 *    every completion in its context's home thread.  Queues of the same
 *    backend in the same context share that context's libaio io context /
 *    io_uring ring (created on first use, freed with the context's last
 *    queue).
 *
 * Rules (libuv's): a submit function that returns an error never calls the
 * callback; one that returns 0 calls it exactly once, always later from the
 * context's event loop (never from inside the submit call), with 0 or a
 * negative errno (-EIO, -ENOSPC, ...: what the host said).  Buffers
 * (iovecs and what they point to) must stay valid until the callback.
 */
#ifndef SHARDVM_BLOCK_H
#define SHARDVM_BLOCK_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "shardvm/aio.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct BlockBackend BlockBackend;
typedef struct BlockQueue BlockQueue;

/* Completion: @ret is 0 or a negative errno.  Runs in the queue's context. */
typedef void BlockCompletionFunc(void *opaque, int ret);

typedef enum BlockDriverKind {
    BLOCK_DRIVER_FILE = 0,   /* raw image: regular file or block device */
    BLOCK_DRIVER_NULL_CO,    /* completes without storage (QEMU null-co) */
    BLOCK_DRIVER_NULL_AIO,   /* same, completion through a BH (null-aio) */
    BLOCK_DRIVER_BLKDEBUG,   /* error injection over another node (QEMU's
                                blkdebug; block/blkdebug.c) */
} BlockDriverKind;

typedef enum BlockAioMode {
    BLOCK_AIO_THREADS = 0,   /* the context's thread pool, preadv/pwritev */
    BLOCK_AIO_NATIVE,        /* libaio */
    BLOCK_AIO_IO_URING,      /* liburing */
} BlockAioMode;

typedef enum BlockDiscardMode {
    BLOCK_DISCARD_IGNORE = 0,
    BLOCK_DISCARD_UNMAP,
} BlockDiscardMode;

/*
 * -drive werror= / rerror= and the device's properties (QEMU's
 * BlockdevOnError): what a device does when a request fails on the host.
 * AUTO exists only on the device ("take the drive's").  A drive's
 * defaults: werror=enospc, rerror=report.  Writes, flushes, discards and
 * write-zeroes follow werror, reads rerror.
 */
typedef enum BlockErrorPolicy {
    BLOCK_ERROR_POLICY_AUTO = 0,
    BLOCK_ERROR_POLICY_REPORT,   /* fail the request to the guest */
    BLOCK_ERROR_POLICY_IGNORE,   /* complete it as if it had worked */
    BLOCK_ERROR_POLICY_ENOSPC,   /* stop on ENOSPC, report the rest */
    BLOCK_ERROR_POLICY_STOP,     /* stop the VM; retry on "cont" */
} BlockErrorPolicy;

/* What one failed request leads to (QEMU's BlockErrorAction). */
typedef enum BlockErrorAction {
    BLOCK_ERROR_ACTION_REPORT = 0,
    BLOCK_ERROR_ACTION_IGNORE,
    BLOCK_ERROR_ACTION_STOP,
} BlockErrorAction;

/* block_error_policy_parse: "report", "ignore", "enospc", "stop" (and
 * "auto" when @allow_auto) -> *@out; 0 or -EINVAL.  Pure. */
int block_error_policy_parse(const char *s, bool allow_auto,
                             BlockErrorPolicy *out);
/* block_error_policy_name / block_error_action_name: QEMU's spelling. */
const char *block_error_policy_name(BlockErrorPolicy p);
const char *block_error_action_name(BlockErrorAction a);
/* block_error_action: the action @policy (not AUTO) takes for a request
 * that failed with @err (a negative errno).  Pure. */
BlockErrorAction block_error_action(BlockErrorPolicy policy, int err);

/*
 * A failed request as a device reports it (QEMU's BLOCK_IO_ERROR event).
 * Strings are borrowed for the duration of the call.
 */
typedef struct BlockIOErrorEvent {
    const char *device;        /* the device's id, or the drive id */
    const char *node_name;     /* the backend's id (node-name / drive id) */
    bool is_read;              /* operation: read (else write) */
    BlockErrorAction action;
    bool iostatus;             /* werror/rerror can stop (QEMU then sends
                                  "nospace") */
    int error;                 /* negative errno */
} BlockIOErrorEvent;

/*
 * BlockErrorHandler: how a device model reports failed requests to the
 * machine (which emits the QMP event and stops the VM for
 * BLOCK_ERROR_ACTION_STOP) without knowing the monitor.  The machine
 * fills it in and keeps it alive longer than every device.
 */
typedef struct BlockErrorHandler {
    /* Any thread (a queue's context): one failed request.  Must not
     * block or wait for the main loop (defer the work to a BH). */
    void (*io_error)(void *opaque, const BlockIOErrorEvent *ev);
    /* Main thread: @fn(@fn_opaque) is to run in the main thread each time
     * the VM resumes after being stopped (the device retries the requests
     * it kept); del_resume undoes it. */
    void (*add_resume)(void *opaque, void (*fn)(void *), void *fn_opaque);
    void (*del_resume)(void *opaque, void (*fn)(void *), void *fn_opaque);
    void *opaque;
} BlockErrorHandler;

/*
 * blkdebug: one [inject-error] rule (QEMU's BlkdebugInjectErrorOptions
 * plus two shardvm extensions, every and sector-count).  A request
 * matches when its type is in @iotypes and, with @sector >= 0, its byte
 * range overlaps sectors [sector, sector + sector_count).  Every
 * @every-th matching request (1: each one) fails with -@error; with @once
 * the rule then retires.  Rules are tried in order, the first that fires
 * wins.
 */
#define BLKDEBUG_IO_READ         (1u << 0)
#define BLKDEBUG_IO_WRITE        (1u << 1)
#define BLKDEBUG_IO_FLUSH        (1u << 2)
#define BLKDEBUG_IO_DISCARD      (1u << 3)
#define BLKDEBUG_IO_WRITE_ZEROES (1u << 4)
#define BLKDEBUG_IO_ALL          0x1fu

typedef struct BlockInjectRule {
    unsigned iotypes;          /* BLKDEBUG_IO_* mask */
    int error;                 /* positive errno (default EIO) */
    int64_t sector;            /* -1: any request */
    uint64_t sector_count;     /* with @sector: range length (default 1) */
    uint64_t every;            /* fire on every Nth match (default 1) */
    bool once;                 /* retire after firing once */
    bool immediately;          /* accepted; completion is always deferred */
} BlockInjectRule;

typedef enum BlockLocking {
    BLOCK_LOCKING_AUTO = 0,
    BLOCK_LOCKING_ON,
    BLOCK_LOCKING_OFF,
} BlockLocking;

/*
 * What -drive / -blockdev said, after parsing.  QEMU's cache modes map to
 * two booleans (QEMU's cache.direct / cache.no-flush) plus write-cache:
 *   writeback    direct=off no_flush=off writeback=on   (QEMU's default)
 *   none         direct=on  no_flush=off writeback=on
 *   writethrough direct=off no_flush=off writeback=off
 *   directsync   direct=on  no_flush=off writeback=off
 *   unsafe       direct=off no_flush=on  writeback=on
 * writeback=off means every write is followed by a flush before it
 * completes (the guest sees a write-through cache; virtio-blk's WCE=0).
 */
typedef struct BlockOptions {
    char *id;                  /* -drive id= / -blockdev node-name= */
    BlockDriverKind driver;
    char *filename;            /* file driver only */
    BlockAioMode aio;
    bool cache_direct;         /* O_DIRECT */
    bool cache_no_flush;       /* flush completes at once, does nothing */
    bool cache_writeback;      /* false: writes are made durable first */
    bool read_only;
    BlockDiscardMode discard;
    BlockLocking locking;
    bool null_read_zeroes;     /* null drivers: reads fill zeroes */
    uint64_t null_latency_ns;  /* null drivers: completion delay (the
                                  parser caps it at INT64_MAX) */
    uint64_t null_size;        /* null drivers: size in bytes (default 1 GiB) */
    /* blkdebug: the node it is layered over (image=NODE), a QEMU config
     * file of [inject-error] sections (config=FILE, read by blk_open) and
     * the rules given inline (inject-error.N.KEY=...) */
    char *image;
    char *blkdebug_config;
    BlockInjectRule *inject;   /* g_free'd by block_options_clear */
    unsigned nr_inject;
    /* -drive werror= / rerror= (REPORT/ENOSPC defaults; -blockdev: the
     * defaults, as QEMU has them only on -drive) */
    BlockErrorPolicy werror;
    BlockErrorPolicy rerror;
    /* -drive if=virtio: create a virtio-blk-pci device for it */
    bool if_virtio;
} BlockOptions;

/* block_options_clear: free the strings of @o and zero it.  Any thread. */
void block_options_clear(BlockOptions *o);
/* block_options_copy: deep copy of @src into @dst (not cleared first).
 * Any thread. */
void block_options_copy(BlockOptions *dst, const BlockOptions *src);

/*
 * block_parse_drive / block_parse_blockdev: parse a -drive or -blockdev
 * argument ("key=value,..." in QEMU's spelling; -blockdev also as JSON
 * "{...}") into @out (overwritten, not freed: clear a reused one first;
 * left zeroed on error).  Defaults: cache=writeback, aio=threads,
 * null size 1 GiB.  Errors name the bad key or value:
 * unknown driver, format=qcow2 (not supported), bad cache= or aio=.
 * Returns 0 or a negative errno with *@errp set.  Pure; any thread.
 */
int block_parse_drive(const char *arg, BlockOptions *out, GError **errp);
int block_parse_blockdev(const char *arg, BlockOptions *out, GError **errp);

/*
 * blk_open: open the image @opts names (copied; the caller keeps @opts).
 * Checks what can be checked before any I/O: the file exists, its size is
 * a multiple of 512, O_DIRECT works, the image lock (locking=) is free,
 * aio=native without cache.direct (QEMU: refused; see docs/usage.md).
 * Returns a backend with one reference, or NULL with *@errp set (the
 * message names the file).  Main thread.
 */
BlockBackend *blk_open(const BlockOptions *opts, GError **errp);

/*
 * blk_open_blkdebug: open the blkdebug node @opts (driver=blkdebug) over
 * @image (referenced, and marked in use with blk_attach_dev so no device
 * takes it as well; released when the node closes).  Reads @opts'
 * config file, if any (rules from it come after the inline ones).  Size,
 * read-only and cache modes are the image's.  Returns the node or NULL
 * with *@errp set (-EBUSY when @image is already in use).  Main thread.
 * blk_open() refuses driver=blkdebug (it has no image to look up).
 */
BlockBackend *blk_open_blkdebug(const BlockOptions *opts, BlockBackend *image,
                                GError **errp);

/* blk_get_image: the node a filter (blkdebug) is layered over, or NULL. */
BlockBackend *blk_get_image(const BlockBackend *blk);

/* blk_ref / blk_unref: reference counting (atomic: queues take and drop
 * theirs in their own context's thread); the last unref closes.  The
 * owner's last unref belongs to the main thread. */
void blk_ref(BlockBackend *blk);
void blk_unref(BlockBackend *blk);

/*
 * blk_attach_dev: record @dev as the one device model using @blk.
 * Returns 0, or -EBUSY with *@errp set ("Drive 'ID' is already in use",
 * as QEMU) when another device has it.  blk_detach_dev(): @dev lets go
 * (no-op if @dev is not the one attached).  Main thread.
 */
int blk_attach_dev(BlockBackend *blk, void *dev, GError **errp);
void blk_detach_dev(BlockBackend *blk, void *dev);

/* Accessors; any thread (immutable after blk_open, except the write-cache
 * flag, which is atomic). */
const char *blk_get_id(const BlockBackend *blk);
uint64_t blk_get_size(const BlockBackend *blk);             /* bytes */
bool blk_is_read_only(const BlockBackend *blk);
const BlockOptions *blk_get_options(const BlockBackend *blk);
/* Alignment O_DIRECT needs (memory and offset/length), 1 without it. */
uint32_t blk_get_request_alignment(const BlockBackend *blk);
bool blk_get_write_cache(const BlockBackend *blk);
/* blk_set_write_cache: virtio-blk's CONFIG_WCE writes this at runtime. */
void blk_set_write_cache(BlockBackend *blk, bool writeback);

/* Statistics for query-blockstats; updated at completion.  Any thread. */
typedef struct BlockStats {
    uint64_t rd_ops, wr_ops, flush_ops, discard_ops, zero_ops;
    uint64_t rd_bytes, wr_bytes;
    uint64_t rd_total_ns, wr_total_ns, flush_total_ns;
    uint64_t failed_ops;
    /* io_submit() / io_uring_submit() calls (plug/unplug batching) */
    uint64_t submit_calls;
} BlockStats;
void blk_get_stats(const BlockBackend *blk, BlockStats *out);

/*
 * blk_queue_new: a queue for @blk in @ctx (blk is referenced).  Call from
 * @ctx's home thread (or before the context runs: an IOThread's context
 * via aio_context_run_sync).  Returns NULL with *@errp set if the
 * context's libaio/io_uring set-up failed.
 */
BlockQueue *blk_queue_new(BlockBackend *blk, AioContext *ctx, GError **errp);

/*
 * blk_queue_free: free a queue with nothing in flight (abort() otherwise:
 * drain first).  Home thread of the queue's context.
 */
void blk_queue_free(BlockQueue *q);

AioContext *blk_queue_get_context(const BlockQueue *q);
BlockBackend *blk_queue_get_backend(const BlockQueue *q);

/*
 * Requests.  Home thread of @q's context (checked: from another thread
 * they abort with a message, as do free, plug, unplug and drain).  @offset
 * and lengths are bytes.
 * Immediate errors (the callback is then NOT called): -EINVAL (range past
 * the end of the image or overflowing, a negative iovcnt, iovec lengths
 * whose sum overflows), -EROFS (write/discard/zeroes on a
 * read-only backend), -ENOMEM.  Unaligned buffers/offsets under O_DIRECT
 * are not an error: they go through an aligned bounce buffer.
 */
int blk_queue_preadv(BlockQueue *q, uint64_t offset, const struct iovec *iov,
                     int iovcnt, BlockCompletionFunc *cb, void *opaque);
int blk_queue_pwritev(BlockQueue *q, uint64_t offset, const struct iovec *iov,
                      int iovcnt, BlockCompletionFunc *cb, void *opaque);
/* Completes after every write that completed before it was submitted is
 * durable (what a guest's FLUSH means). */
int blk_queue_flush(BlockQueue *q, BlockCompletionFunc *cb, void *opaque);
/* discard=ignore: completes with 0 and does nothing. */
int blk_queue_discard(BlockQueue *q, uint64_t offset, uint64_t len,
                      BlockCompletionFunc *cb, void *opaque);
/* Reads back as zeroes afterwards; @may_unmap lets it punch a hole when
 * discard=unmap. */
int blk_queue_write_zeroes(BlockQueue *q, uint64_t offset, uint64_t len,
                           bool may_unmap, BlockCompletionFunc *cb,
                           void *opaque);

/*
 * blk_queue_plug / blk_queue_unplug: between them, submissions are
 * queued and go to the kernel as one io_submit() / io_uring_submit() at
 * the outermost unplug (nesting is counted).  Home thread.
 */
void blk_queue_plug(BlockQueue *q);
void blk_queue_unplug(BlockQueue *q);

/* blk_queue_in_flight: requests submitted and not yet completed (their
 * callbacks not yet run).  Home thread. */
unsigned blk_queue_in_flight(const BlockQueue *q);

/*
 * blk_queue_drain: run the context's loop (aio_poll) until nothing is in
 * flight on @q; completions run their callbacks meanwhile.  A plugged
 * queue's held-back submissions go to the kernel first (the plug stays,
 * for later submissions).  Home thread; never from inside a completion
 * callback (any queue's: the completions batched behind it could not run;
 * it aborts with a message rather than hang).
 */
void blk_queue_drain(BlockQueue *q);

#ifdef __cplusplus
}
#endif

#endif
