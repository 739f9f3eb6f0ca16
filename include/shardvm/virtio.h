/*
 * virtio device core: guest memory access, split virtqueues, the device
 * status / feature state machine, and the boundary between a device
 * (virtio-blk, hw/block/) and its transport (virtio-pci, hw/virtio/).
 *
 * Threads:
 *  - Transport register accesses (common config, device config, status,
 *    feature negotiation, queue set-up, reset) come from vCPU threads and
 *    are serialised by the device's own mutex (VirtIODevice.lock); they
 *    never run concurrently with each other.
 *  - A virtqueue's requests are processed only in the AioContext the
 *    queue is bound to (an IOThread's, or the main context under the BQL).
 *    Starting, stopping and moving queues is done by scheduling work into
 *    those contexts and waiting (aio_context_run_sync); a queue is drained
 *    (nothing in flight) before it is stopped.
 *
 * This header is the contract between hw/virtio/ (transport and queues)
 * and hw/block/ (the device).  Owner: hw/virtio/.
 */
#ifndef SHARDVM_VIRTIO_H
#define SHARDVM_VIRTIO_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "shardvm/aio.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* Guest memory                                                         */

/*
 * GuestMemory: the guest's RAM as a small table of (gpa, size, hva)
 * ranges, published through RCU (a new table replaces the old one; the old
 * is freed after a grace period).  Device code translates guest addresses
 * only inside rcu_read_lock() and never keeps a host pointer past
 * rcu_read_unlock() - except for the buffers of a request in flight, which
 * stay valid because RAM is never unmapped while a device is running
 * (a memory-map change first stops the devices).
 */
typedef struct GuestMemory GuestMemory;

typedef struct GuestMemoryRange {
    uint64_t gpa;
    uint64_t size;
    void *hva;
} GuestMemoryRange;

/* guest_memory_new: a map of @nr ranges (copied).  Ranges must not
 * overlap, be empty or wrap past 2^64; NULL if they do.  Main thread. */
GuestMemory *guest_memory_new(const GuestMemoryRange *ranges, unsigned nr);
/* guest_memory_free: free the map (after a grace period for its table).
 * No device may use it any more.  Main thread. */
void guest_memory_free(GuestMemory *gm);

/*
 * guest_memory_update: publish a new table of @nr ranges (copied; same
 * rules as guest_memory_new) through RCU; the old table is freed after a
 * grace period.  Returns 0 or -EINVAL (table unchanged).  Main thread
 * (callers serialise updates).
 */
int guest_memory_update(GuestMemory *gm, const GuestMemoryRange *ranges,
                        unsigned nr);

/*
 * guest_memory_translate: host pointer for [@gpa, @gpa + @len) if that
 * whole range lies inside ONE RAM range (no wrap, no straddling into a
 * hole or MMIO); else NULL.  @len 0 is refused.  Inside rcu_read_lock(),
 * any thread.
 */
void *guest_memory_translate(GuestMemory *gm, uint64_t gpa, uint64_t len);

/* ------------------------------------------------------------------ */
/* Feature bits and status                                              */

#define VIRTIO_F_INDIRECT_DESC     28
#define VIRTIO_F_EVENT_IDX         29
#define VIRTIO_F_VERSION_1         32

#define VIRTIO_STATUS_ACKNOWLEDGE  1
#define VIRTIO_STATUS_DRIVER       2
#define VIRTIO_STATUS_DRIVER_OK    4
#define VIRTIO_STATUS_FEATURES_OK  8
#define VIRTIO_STATUS_NEEDS_RESET  64
#define VIRTIO_STATUS_FAILED       128

/* MSI-X "no vector" (queue and config vector registers). */
#define VIRTIO_NO_VECTOR           0xffff

/* Split ring layout (virtio 1.x, 2.7), little-endian in guest memory. */
#define VRING_DESC_F_NEXT          1
#define VRING_DESC_F_WRITE         2
#define VRING_DESC_F_INDIRECT      4
#define VRING_USED_F_NO_NOTIFY     1
#define VRING_AVAIL_F_NO_INTERRUPT 1

typedef struct VRingDesc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
} VRingDesc;

typedef struct VRingUsedElem {
    uint32_t id;
    uint32_t len;
} VRingUsedElem;

/* Ring sizes in bytes for a queue of @n entries (with the EVENT_IDX
 * trailer word). */
#define VRING_DESC_BYTES(n)  ((uint64_t)(n) * 16)
#define VRING_AVAIL_BYTES(n) (6 + (uint64_t)(n) * 2)
#define VRING_USED_BYTES(n)  (6 + (uint64_t)(n) * 8)

/*
 * vring_need_event: with EVENT_IDX, must the other side be notified after
 * moving its index from @old to @new_idx when it asked for an event at
 * @event_idx?  (The spec's formula; the only copy in shardvm.)
 */
static inline bool vring_need_event(uint16_t event_idx, uint16_t new_idx,
                                    uint16_t old)
{
    return (uint16_t)(new_idx - event_idx - 1) < (uint16_t)(new_idx - old);
}

/* ------------------------------------------------------------------ */
/* Split virtqueues                                                     */

typedef struct VirtQueue VirtQueue;
typedef struct VirtIODevice VirtIODevice;

/*
 * One checked descriptor chain popped from the avail ring.  Every buffer
 * was validated (inside guest RAM, readable ones before writable ones,
 * chain length <= queue size, no loops, indirect tables checked) before
 * virtqueue_pop() returned it.  in_iov are device-writable buffers, out_iov
 * device-readable.  Owned by the device until virtqueue_push().
 */
typedef struct VirtQueueElement {
    uint16_t head;          /* descriptor index to return in the used ring */
    unsigned out_num, in_num;
    uint64_t out_len, in_len;   /* total bytes of each direction */
    struct iovec *out_iov;  /* points into iov[] */
    struct iovec *in_iov;
    unsigned capacity;      /* private to hw/virtio: iov[] entries */
    struct iovec iov[];     /* out_num + in_num entries */
} VirtQueueElement;

/*
 * Queue handler of a device: called in the queue's AioContext when the
 * guest kicked or polling found new avail entries.
 */
typedef void VirtQueueHandler(VirtIODevice *vdev, VirtQueue *vq);

/* ------------------------------------------------------------------ */
/* Device <-> transport                                                 */

typedef struct VirtIODeviceOps {
    /* Features the device offers (VERSION_1, INDIRECT_DESC and EVENT_IDX
     * are added by the core). */
    uint64_t (*get_features)(VirtIODevice *vdev);
    /* Device config space (little-endian layout), @offset + @len within
     * config_size (checked by the caller). */
    void (*read_config)(VirtIODevice *vdev, uint32_t offset, void *buf,
                        unsigned len);
    void (*write_config)(VirtIODevice *vdev, uint32_t offset,
                         const void *buf, unsigned len);
    /* DRIVER_OK: the queues are set up; start serving them (bind each
     * enabled queue to its context with virtqueue_attach()).  Returns 0 or
     * a negative errno (the device then reports NEEDS_RESET). */
    int (*start)(VirtIODevice *vdev);
    /* Reset or stop: detach every queue and wait for requests in flight
     * to complete (drain) before returning.  Idempotent. */
    void (*stop)(VirtIODevice *vdev);
} VirtIODeviceOps;

/* The transport's side, called by the core. */
typedef struct VirtIOTransportOps {
    /* Interrupt the guest for queue @vq (its MSI-X vector), or for a
     * config change when @vq is NULL.  Any thread. */
    void (*notify)(void *transport, VirtQueue *vq);
} VirtIOTransportOps;


/*
 * The device object.  A device embeds it (first member) and fills name,
 * device_id, ops, config_size and the queue count before
 * virtio_device_init().  Fields marked [lock] are guarded by @lock (taken
 * by the transport around every register access); [ctx] are touched only
 * in the queue's context while it is attached.
 */
struct VirtIODevice {
    const char *name;             /* immutable */
    uint16_t device_id;           /* virtio device id (2 = block); immutable */
    const VirtIODeviceOps *ops;   /* immutable */
    uint32_t config_size;         /* immutable */
    GuestMemory *mem;             /* immutable while running */

    const VirtIOTransportOps *transport_ops; /* set by the transport */
    void *transport;

    GMutex lock;
    /* [lock] for writers; virtio_error() also ORs in NEEDS_RESET from any
     * thread, so read it with virtio_get_status() (atomic). */
    uint8_t status;
    uint64_t host_features;       /* immutable after init */
    uint64_t guest_features;      /* [lock]; fixed once FEATURES_OK */
    uint32_t config_generation;   /* [lock] */
    bool broken;                  /* atomic: NEEDS_RESET was raised */
    int64_t error_log_ns;         /* atomic: when virtio_error last logged */

    unsigned num_queues;          /* immutable */
    VirtQueue **vqs;              /* immutable array */
};

/*
 * virtio_device_init: allocate @num_queues queues of at most @max_size
 * entries and compute host_features (ops->get_features() plus VERSION_1,
 * INDIRECT_DESC, EVENT_IDX).  Main thread.  virtio_device_cleanup() frees
 * them (the device must be stopped).
 */
void virtio_device_init(VirtIODevice *vdev, unsigned num_queues,
                        uint16_t max_size);
void virtio_device_cleanup(VirtIODevice *vdev);

/*
 * Transport-facing state machine; call with vdev->lock held (vCPU
 * thread).  virtio_set_status(): writing 0 resets (ops->stop(), then every
 * queue back to its reset state); FEATURES_OK is refused (the bit stays
 * clear) if guest_features is not a subset of host_features or lacks
 * VERSION_1; DRIVER_OK calls ops->start().  virtio_set_guest_features()
 * is ignored once FEATURES_OK is set.
 */
void virtio_set_status(VirtIODevice *vdev, uint8_t status);
/* virtio_get_status: the device status register (atomic load; includes
 * NEEDS_RESET raised by virtio_error()).  Any thread. */
uint8_t virtio_get_status(VirtIODevice *vdev);
void virtio_set_guest_features(VirtIODevice *vdev, uint64_t features);
void virtio_reset(VirtIODevice *vdev);
static inline bool virtio_has_feature(const VirtIODevice *vdev, unsigned bit)
{
    return (vdev->guest_features >> bit) & 1;
}

/*
 * virtio_error: the guest broke the protocol: set NEEDS_RESET, send a
 * config interrupt, log once (rate-limited) with the device name.  The
 * device stops processing its queues until reset.  Any thread.
 */
void virtio_error(VirtIODevice *vdev, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

/* Queue registers, for the transport (vdev->lock held). */
VirtQueue *virtio_get_queue(VirtIODevice *vdev, unsigned index);
uint16_t virtqueue_get_max_size(const VirtQueue *vq);
uint16_t virtqueue_get_size(const VirtQueue *vq);
void virtqueue_set_size(VirtQueue *vq, uint16_t size); /* power of 2 <= max */
void virtqueue_set_addrs(VirtQueue *vq, uint64_t desc, uint64_t avail,
                         uint64_t used);
void virtqueue_get_addrs(const VirtQueue *vq, uint64_t *desc,
                         uint64_t *avail, uint64_t *used);
bool virtqueue_is_enabled(const VirtQueue *vq);
void virtqueue_set_enabled(VirtQueue *vq, bool enabled);
/* The queue's MSI-X vector: atomic, so the transport's notify may read it
 * on any thread while the guest rewrites it. */
uint16_t virtqueue_get_vector(const VirtQueue *vq);
void virtqueue_set_vector(VirtQueue *vq, uint16_t vector);
unsigned virtqueue_get_index(const VirtQueue *vq);
/* The EventNotifier the transport binds to the queue's notify address
 * (KVM ioeventfd); initialised by virtio_device_init(). */
EventNotifier *virtqueue_get_host_notifier(VirtQueue *vq);

/*
 * Device side, in the queue's context.
 *
 * virtqueue_attach: serve @vq in @ctx: its host notifier becomes an event
 * notifier of @ctx with an io_poll callback (new avail entries) and
 * poll_notify (guest notifications suppressed while @ctx busy-polls);
 * @handler runs for every kick / poll hit.  Any thread (schedules into
 * @ctx and waits).  virtqueue_detach undoes it; the device drains its own
 * requests first.
 */
int virtqueue_attach(VirtQueue *vq, AioContext *ctx, VirtQueueHandler *handler);
void virtqueue_detach(VirtQueue *vq);
AioContext *virtqueue_get_context(const VirtQueue *vq);

/*
 * virtqueue_pop: the next available chain, validated; NULL when the ring
 * is empty or the queue is broken (virtio_error() was called for a bad
 * chain, or for a head beyond queue-size chains in flight).  The element is g_malloc'ed
 * or from the queue's pool; give it back with virtqueue_push().
 */
VirtQueueElement *virtqueue_pop(VirtQueue *vq);

/*
 * virtqueue_push: put @elem in the used ring with @len bytes written,
 * and release it.  Used-index publication and the guest interrupt are
 * batched: virtqueue_flush() publishes and interrupts once (unless the
 * guest asked for no interrupt: VRING_AVAIL_F_NO_INTERRUPT / used_event).
 */
void virtqueue_push(VirtQueue *vq, VirtQueueElement *elem, uint32_t len);
void virtqueue_flush(VirtQueue *vq);

/*
 * virtqueue_detach_element: give @elem back without using it (no used
 * ring entry; for a queue that is broken or being reset).  Queue's
 * context.
 */
void virtqueue_detach_element(VirtQueue *vq, VirtQueueElement *elem);

/*
 * virtqueue_set_notification: ask the guest to kick (@enable) or not
 * (VRING_USED_F_NO_NOTIFY, or with EVENT_IDX the avail_event word).  On
 * enable a full barrier follows and the avail index is read again: returns
 * true if entries arrived meanwhile (the caller must process them, the
 * guest may not kick for them).  Queue's context.
 */
bool virtqueue_set_notification(VirtQueue *vq, bool enable);

/* virtqueue_get_notification: false while notifications are suppressed
 * (busy polling, or a handler's own pass).  A handler that suppresses
 * notifications during its pass does so only when this is true (QEMU's
 * rule), so it never re-enables them under a busy-polling context.
 * Queue's context. */
bool virtqueue_get_notification(const VirtQueue *vq);

/* virtqueue_empty: no new avail entries (also true when broken).  Queue's
 * context. */
bool virtqueue_empty(VirtQueue *vq);

/* virtqueue_in_flight: popped and not yet pushed/detached.  Queue's
 * context. */
unsigned virtqueue_in_flight(const VirtQueue *vq);

#ifdef __cplusplus
}
#endif

#endif
