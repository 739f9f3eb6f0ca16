/*
 * A stand-in for the virtio core (hw/virtio/virtio.c on the virtio
 * branch) with the semantics include/shardvm/virtio.h promises to the
 * transport: queue registers, status state machine with FEATURES_OK
 * refusal, reset.  Built into test-virtio-pci only while the real core is
 * not in the tree (tests/pci/meson.build).
 */
#include "shardvm/virtio.h"

struct VirtQueue {
    VirtIODevice *vdev;
    unsigned index;
    uint16_t max_size, size, vector;
    bool enabled;
    uint64_t desc, avail, used;
    EventNotifier notifier;
};

static void vq_reset(VirtQueue *vq)
{
    vq->size = vq->max_size;
    vq->vector = 0xffff;
    vq->enabled = false;
    vq->desc = vq->avail = vq->used = 0;
}

void virtio_device_init(VirtIODevice *vdev, unsigned num_queues,
                        uint16_t max_size)
{
    g_mutex_init(&vdev->lock);
    vdev->num_queues = num_queues;
    vdev->vqs = g_new0(VirtQueue *, num_queues);
    for (unsigned i = 0; i < num_queues; i++) {
        VirtQueue *vq = g_new0(VirtQueue, 1);
        vq->vdev = vdev;
        vq->index = i;
        vq->max_size = max_size;
        vq_reset(vq);
        event_notifier_init(&vq->notifier, false);
        vdev->vqs[i] = vq;
    }
    vdev->host_features = vdev->ops->get_features(vdev) |
                          (1ull << VIRTIO_F_VERSION_1) |
                          (1ull << VIRTIO_F_INDIRECT_DESC) |
                          (1ull << VIRTIO_F_EVENT_IDX);
}

void virtio_device_cleanup(VirtIODevice *vdev)
{
    for (unsigned i = 0; i < vdev->num_queues; i++) {
        event_notifier_cleanup(&vdev->vqs[i]->notifier);
        g_free(vdev->vqs[i]);
    }
    g_free(vdev->vqs);
    g_mutex_clear(&vdev->lock);
}

void virtio_reset(VirtIODevice *vdev)
{
    vdev->ops->stop(vdev);
    for (unsigned i = 0; i < vdev->num_queues; i++) {
        vq_reset(vdev->vqs[i]);
    }
    vdev->status = 0;
    vdev->guest_features = 0;
    vdev->broken = false;
}

void virtio_set_status(VirtIODevice *vdev, uint8_t status)
{
    uint8_t old = vdev->status;
    if (status == 0) {
        virtio_reset(vdev);
        return;
    }
    if ((status & VIRTIO_STATUS_FEATURES_OK) &&
        !(old & VIRTIO_STATUS_FEATURES_OK) &&
        ((vdev->guest_features & ~vdev->host_features) ||
         !virtio_has_feature(vdev, VIRTIO_F_VERSION_1))) {
        status &= ~VIRTIO_STATUS_FEATURES_OK;
    }
    vdev->status = status;
    if ((status & VIRTIO_STATUS_DRIVER_OK) &&
        !(old & VIRTIO_STATUS_DRIVER_OK) &&
        vdev->ops->start(vdev) < 0) {
        vdev->status |= VIRTIO_STATUS_NEEDS_RESET;
    }
}

void virtio_set_guest_features(VirtIODevice *vdev, uint64_t features)
{
    if (!(vdev->status & VIRTIO_STATUS_FEATURES_OK)) {
        vdev->guest_features = features;
    }
}

VirtQueue *virtio_get_queue(VirtIODevice *vdev, unsigned index)
{
    return index < vdev->num_queues ? vdev->vqs[index] : NULL;
}

uint16_t virtqueue_get_max_size(const VirtQueue *vq) { return vq->max_size; }
uint16_t virtqueue_get_size(const VirtQueue *vq) { return vq->size; }
void virtqueue_set_size(VirtQueue *vq, uint16_t size) { vq->size = size; }

void virtqueue_set_addrs(VirtQueue *vq, uint64_t desc, uint64_t avail,
                         uint64_t used)
{
    vq->desc = desc;
    vq->avail = avail;
    vq->used = used;
}

void virtqueue_get_addrs(const VirtQueue *vq, uint64_t *desc,
                         uint64_t *avail, uint64_t *used)
{
    *desc = vq->desc;
    *avail = vq->avail;
    *used = vq->used;
}

bool virtqueue_is_enabled(const VirtQueue *vq) { return vq->enabled; }
void virtqueue_set_enabled(VirtQueue *vq, bool e) { vq->enabled = e; }
uint16_t virtqueue_get_vector(const VirtQueue *vq) { return vq->vector; }
void virtqueue_set_vector(VirtQueue *vq, uint16_t v) { vq->vector = v; }
unsigned virtqueue_get_index(const VirtQueue *vq) { return vq->index; }

EventNotifier *virtqueue_get_host_notifier(VirtQueue *vq)
{
    return &vq->notifier;
}
