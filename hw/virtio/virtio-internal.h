/*
 * Between virtio.c (device state machine) and virtqueue.c (rings).
 * Private to hw/virtio/.
 */
#ifndef SHARDVM_HW_VIRTIO_INTERNAL_H
#define SHARDVM_HW_VIRTIO_INTERNAL_H

#include "shardvm/virtio.h"

/* virtqueue_new: queue @index of @vdev with at most @max_size entries, in
 * its reset state, host notifier created.  Main thread. */
VirtQueue *virtqueue_new(VirtIODevice *vdev, unsigned index, uint16_t max_size);

/* virtqueue_free: free a detached queue and its pool.  Main thread. */
void virtqueue_free(VirtQueue *vq);

/* virtqueue_reset: registers and ring state back to reset values (the
 * queue must be detached and have nothing in flight).  vdev->lock held. */
void virtqueue_reset(VirtQueue *vq);

#endif
