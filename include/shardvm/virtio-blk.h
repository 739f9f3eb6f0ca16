/*
 * virtio-blk (virtio 1.x, 5.2) on the block layer.  One BlockQueue per
 * virtqueue, created in the virtqueue's AioContext (an IOThread's, or the
 * main loop's under the BQL); requests of a queue are submitted and
 * completed only in that context's home thread.
 */
#ifndef SHARDVM_VIRTIO_BLK_H
#define SHARDVM_VIRTIO_BLK_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "shardvm/aio.h"
#include "shardvm/block.h"
#include "shardvm/virtio.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VIRTIO_ID_BLOCK 2

/* Feature bits (5.2.3). */
#define VIRTIO_BLK_F_SIZE_MAX      1
#define VIRTIO_BLK_F_SEG_MAX       2
#define VIRTIO_BLK_F_GEOMETRY      4
#define VIRTIO_BLK_F_RO            5
#define VIRTIO_BLK_F_BLK_SIZE      6
#define VIRTIO_BLK_F_FLUSH         9
#define VIRTIO_BLK_F_TOPOLOGY      10
#define VIRTIO_BLK_F_CONFIG_WCE    11
#define VIRTIO_BLK_F_MQ            12
#define VIRTIO_BLK_F_DISCARD       13
#define VIRTIO_BLK_F_WRITE_ZEROES  14

/* Request types and status (5.2.6). */
#define VIRTIO_BLK_T_IN            0
#define VIRTIO_BLK_T_OUT           1
#define VIRTIO_BLK_T_FLUSH         4
#define VIRTIO_BLK_T_GET_ID        8
#define VIRTIO_BLK_T_GET_LIFETIME  10
#define VIRTIO_BLK_T_DISCARD       11
#define VIRTIO_BLK_T_WRITE_ZEROES  13
#define VIRTIO_BLK_S_OK            0
#define VIRTIO_BLK_S_IOERR         1
#define VIRTIO_BLK_S_UNSUPP        2
#define VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP 1
#define VIRTIO_BLK_ID_BYTES        20

/* Device configuration layout offsets (struct virtio_blk_config). */
#define VIRTIO_BLK_CFG_CAPACITY          0   /* le64, 512-byte sectors */
#define VIRTIO_BLK_CFG_SIZE_MAX          8   /* le32 */
#define VIRTIO_BLK_CFG_SEG_MAX           12  /* le32 */
#define VIRTIO_BLK_CFG_GEOMETRY          16  /* le16 cyl, u8 heads, u8 sectors */
#define VIRTIO_BLK_CFG_BLK_SIZE          20  /* le32 */
#define VIRTIO_BLK_CFG_PHYS_BLOCK_EXP    24  /* u8 */
#define VIRTIO_BLK_CFG_ALIGNMENT_OFFSET  25  /* u8 */
#define VIRTIO_BLK_CFG_MIN_IO_SIZE       26  /* le16 */
#define VIRTIO_BLK_CFG_OPT_IO_SIZE       28  /* le32 */
#define VIRTIO_BLK_CFG_WRITEBACK         32  /* u8 */
#define VIRTIO_BLK_CFG_NUM_QUEUES        34  /* le16 */
#define VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS   36  /* le32 */
#define VIRTIO_BLK_CFG_MAX_DISCARD_SEG       40  /* le32 */
#define VIRTIO_BLK_CFG_DISCARD_ALIGNMENT     44  /* le32 */
#define VIRTIO_BLK_CFG_MAX_WZ_SECTORS        48  /* le32 */
#define VIRTIO_BLK_CFG_MAX_WZ_SEG            52  /* le32 */
#define VIRTIO_BLK_CFG_WZ_MAY_UNMAP          56  /* u8 */
#define VIRTIO_BLK_CONFIG_SIZE               60

/* One entry of iothread-vq-mapping: queues @vqs (NULL: round-robin) of
 * the device served by IOThread @iothread. */
typedef struct VirtIOBlockVqMapping {
    char *iothread;
    unsigned *vqs;
    unsigned nr_vqs;
    bool has_vqs;
} VirtIOBlockVqMapping;

/*
 * -device virtio-blk-pci properties, QEMU's names and defaults:
 *   drive (required), iothread (none: main loop), num-queues (1; QEMU's
 *   default is the number of vCPUs), queue-size (256), serial (none),
 *   logical_block_size / physical_block_size (512), discard (on),
 *   write-zeroes (on), iothread-vq-mapping (none; excludes iothread),
 *   werror / rerror (auto: the -drive's, whose defaults are enospc and
 *   report).
 */
typedef struct VirtIOBlockConfig {
    char *drive;
    char *iothread;
    unsigned num_queues;
    uint16_t queue_size;
    char *serial;
    uint32_t logical_block_size;
    uint32_t physical_block_size;
    bool discard;
    bool write_zeroes;
    VirtIOBlockVqMapping *vq_mapping;
    unsigned nr_vq_mapping;
    /* werror / rerror (QEMU's device properties; AUTO = the drive's:
     * virtio-blk-pci resolves it, virtio_blk_new() takes AUTO as QEMU's
     * drive defaults, enospc / report) */
    BlockErrorPolicy werror;
    BlockErrorPolicy rerror;
} VirtIOBlockConfig;

/* virtio_blk_config_init: QEMU's defaults.  virtio_blk_config_clear: free
 * the strings and the mapping and re-init.  Any thread. */
void virtio_blk_config_init(VirtIOBlockConfig *cfg);
void virtio_blk_config_clear(VirtIOBlockConfig *cfg);

/*
 * virtio_blk_parse_props: fill @cfg (initialised with defaults first)
 * from @props (char * -> char *, as -device gave them; booleans
 * on/off/true/false/yes/no).  "iothread-vq-mapping" holds the JSON text of
 * the list, e.g. [{"iothread":"io0","vqs":[0,2]},{"iothread":"io1"}].
 * Recognised keys are REMOVED from @props (which must own keys and values
 * with g_free: g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
 * g_free)), so what remains (addr, bus, ...) is the caller's.  Checks each value and their combination (queue
 * size a power of 2 in 4..1024, block sizes, mapping covers every queue
 * once, not both iothread and iothread-vq-mapping).  Returns 0 or a
 * negative errno with *@errp naming the property.  Pure; any thread.
 */
int virtio_blk_parse_props(GHashTable *props, VirtIOBlockConfig *cfg,
                           GError **errp);

/*
 * virtio_blk_queue_iothreads: for each of cfg->num_queues queues the id
 * of the IOThread that serves it (NULL: the main loop), in @out (array of
 * num_queues, strings owned by @cfg).  Without explicit "vqs" the mapping
 * entries take the queues round-robin.  Pure; any thread.
 */
void virtio_blk_queue_iothreads(const VirtIOBlockConfig *cfg, const char **out);

typedef struct VirtIOBlock VirtIOBlock;

/*
 * virtio_blk_new: a virtio-blk device on @blk (referenced) whose queue i
 * runs in @queue_ctxs[i] (cfg->num_queues entries; the main loop's
 * context where no IOThread serves it) and reads guest memory through
 * @mem.  The transport then sets vdev->transport_ops/transport on
 * virtio_blk_get_vdev().  Returns NULL with *@errp set on a bad
 * configuration (block sizes, image size).  Main thread.
 */
VirtIOBlock *virtio_blk_new(const VirtIOBlockConfig *cfg, BlockBackend *blk,
                            AioContext **queue_ctxs, GuestMemory *mem,
                            GError **errp);

/* virtio_blk_free: stop (drain) and free.  Main thread. */
void virtio_blk_free(VirtIOBlock *s);

/*
 * virtio_blk_set_queue_context: serve queue @index in @ctx (referenced)
 * from now on (x-blockdev-set-iothread).  A running queue is moved live:
 * in its old context the requests in flight are drained and their used
 * entries published (the guest's interrupt included), its notifier is
 * unbound; then a new BlockQueue is made in @ctx, the notifier is bound
 * there and the queue is kicked once, which picks up whatever the guest
 * published meanwhile.  The ring state (avail/used indexes, EVENT_IDX)
 * carries over, so no request is lost or run twice.  A stopped queue
 * (before DRIVER_OK, after reset) just starts in @ctx next time.
 * Returns 0, or a negative errno with *@errp set (the queue then keeps
 * running in its old context).  Main thread with the BQL; takes
 * vdev->lock, so it is serialised with the guest's status writes.
 */
int virtio_blk_set_queue_context(VirtIOBlock *s, unsigned index,
                                 AioContext *ctx, GError **errp);

/* virtio_blk_get_queue_context: the context serving queue @index (NULL
 * past the last queue).  virtio_blk_get_num_queues: the queue count.
 * Main thread (BQL). */
AioContext *virtio_blk_get_queue_context(const VirtIOBlock *s, unsigned index);
unsigned virtio_blk_get_num_queues(const VirtIOBlock *s);

/*
 * virtio_blk_set_error_handler: report failed requests to @h (kept; may
 * be NULL) under the name @id (copied; NULL: the drive id), and register
 * virtio_blk_retry_failed() as its resume function.  Without a handler
 * "stop" acts as "report" (nobody would resume the VM).  Main thread,
 * before the driver starts the device.
 */
void virtio_blk_set_error_handler(VirtIOBlock *s, const BlockErrorHandler *h,
                                  const char *id);

/*
 * virtio_blk_retry_failed: resubmit every request kept by the "stop"
 * policy, each in its queue's context (a BH per queue).  A request that
 * fails again is handled by the policy again.  Main thread.
 */
void virtio_blk_retry_failed(VirtIOBlock *s);

/* virtio_blk_held_requests: requests kept by "stop" and not yet retried,
 * over all queues (relaxed atomic counter).  Any thread. */
unsigned virtio_blk_held_requests(VirtIOBlock *s);

/* virtio_blk_get_vdev: the embedded device, for the transport. */
VirtIODevice *virtio_blk_get_vdev(VirtIOBlock *s);

#ifdef __cplusplus
}
#endif

#endif
