/*
 * virtio device core: queues, feature negotiation and the device status
 * state machine (virtio 1.x, 2.1 and 3.1), and virtio_error().
 */
#include "virtio-internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

/* A device that keeps breaking (reset, break, reset...) logs at most once
 * per this interval. */
#define VIRTIO_ERROR_LOG_INTERVAL_NS 1000000000LL

void virtio_device_init(VirtIODevice *vdev, unsigned num_queues,
                        uint16_t max_size)
{
    g_mutex_init(&vdev->lock);
    vdev->status = 0;
    vdev->guest_features = 0;
    vdev->config_generation = 0;
    vdev->broken = false;
    vdev->error_log_ns = 0;
    vdev->num_queues = num_queues;
    vdev->vqs = g_new0(VirtQueue *, num_queues);
    for (unsigned i = 0; i < num_queues; i++) {
        vdev->vqs[i] = virtqueue_new(vdev, i, max_size);
    }
    vdev->host_features = (vdev->ops->get_features ? vdev->ops->get_features(vdev) : 0) |
                          (1ULL << VIRTIO_F_VERSION_1) |
                          (1ULL << VIRTIO_F_INDIRECT_DESC) |
                          (1ULL << VIRTIO_F_EVENT_IDX);
}

void virtio_device_cleanup(VirtIODevice *vdev)
{
    for (unsigned i = 0; i < vdev->num_queues; i++) {
        virtqueue_free(vdev->vqs[i]);
    }
    g_free(vdev->vqs);
    vdev->vqs = NULL;
    vdev->num_queues = 0;
    g_mutex_clear(&vdev->lock);
}

uint8_t virtio_get_status(VirtIODevice *vdev)
{
    return __atomic_load_n(&vdev->status, __ATOMIC_ACQUIRE);
}

static void status_store(VirtIODevice *vdev, uint8_t v)
{
    __atomic_store_n(&vdev->status, v, __ATOMIC_RELEASE);
}

void virtio_set_guest_features(VirtIODevice *vdev, uint64_t features)
{
    if (virtio_get_status(vdev) & VIRTIO_STATUS_FEATURES_OK) {
        return; /* fixed once accepted (3.1.1 step 5) */
    }
    vdev->guest_features = features;
}

static bool features_acceptable(const VirtIODevice *vdev)
{
    return !(vdev->guest_features & ~vdev->host_features) &&
           (vdev->guest_features & (1ULL << VIRTIO_F_VERSION_1));
}

void virtio_reset(VirtIODevice *vdev)
{
    /* Stop first: the device drains what is in flight, so nothing touches
     * the rings while they go back to their reset values. */
    if (vdev->ops->stop) {
        vdev->ops->stop(vdev);
    }
    for (unsigned i = 0; i < vdev->num_queues; i++) {
        virtqueue_reset(vdev->vqs[i]);
    }
    vdev->guest_features = 0;
    vdev->config_generation++;
    __atomic_store_n(&vdev->broken, false, __ATOMIC_RELEASE);
    status_store(vdev, 0);
}

void virtio_set_status(VirtIODevice *vdev, uint8_t val)
{
    uint8_t old = virtio_get_status(vdev);

    if (val == 0) {
        virtio_reset(vdev);
        return;
    }
    if ((val & VIRTIO_STATUS_FEATURES_OK) && !(old & VIRTIO_STATUS_FEATURES_OK) &&
        !features_acceptable(vdev)) {
        /* Refused: the driver reads the bit back clear (3.1.1 step 6). */
        val &= ~VIRTIO_STATUS_FEATURES_OK;
    }
    if (!(val & VIRTIO_STATUS_FEATURES_OK)) {
        val &= ~VIRTIO_STATUS_DRIVER_OK; /* no DRIVER_OK before FEATURES_OK */
    }
    /* NEEDS_RESET is the device's bit: sticky until reset, and
     * virtio_error() may set it from a queue's context meanwhile. */
    uint8_t cur = old, next;
    do {
        next = (val & ~VIRTIO_STATUS_NEEDS_RESET) | (cur & VIRTIO_STATUS_NEEDS_RESET);
    } while (!__atomic_compare_exchange_n(&vdev->status, &cur, next, false,
                                          __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
    val = next;

    if ((val & VIRTIO_STATUS_DRIVER_OK) && !(old & VIRTIO_STATUS_DRIVER_OK)) {
        int ret = vdev->ops->start ? vdev->ops->start(vdev) : 0;

        if (ret < 0) {
            virtio_error(vdev, "cannot start: %s", g_strerror(-ret));
        }
    } else if (!(val & VIRTIO_STATUS_DRIVER_OK) && (old & VIRTIO_STATUS_DRIVER_OK)) {
        /* A driver must not clear DRIVER_OK; if it does, stop serving. */
        if (vdev->ops->stop) {
            vdev->ops->stop(vdev);
        }
    }
}

void virtio_error(VirtIODevice *vdev, const char *fmt, ...)
{
    uint8_t status;
    int64_t now, last;
    va_list ap;

    if (__atomic_exchange_n(&vdev->broken, true, __ATOMIC_ACQ_REL)) {
        return; /* already broken: logged and notified once */
    }
    status = __atomic_or_fetch(&vdev->status, VIRTIO_STATUS_NEEDS_RESET,
                               __ATOMIC_ACQ_REL);
    now = g_get_monotonic_time() * 1000;
    last = __atomic_load_n(&vdev->error_log_ns, __ATOMIC_RELAXED);
    if (last == 0 || now - last >= VIRTIO_ERROR_LOG_INTERVAL_NS) {
        char *msg;

        __atomic_store_n(&vdev->error_log_ns, now, __ATOMIC_RELAXED);
        va_start(ap, fmt);
        msg = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        fprintf(stderr, "shardvm: %s: guest error, device needs reset: %s\n",
                vdev->name ? vdev->name : "virtio", msg);
        g_free(msg);
    }
    /* 2.1.2: after DRIVER_OK, NEEDS_RESET comes with a config interrupt. */
    if ((status & VIRTIO_STATUS_DRIVER_OK) && vdev->transport_ops &&
        vdev->transport_ops->notify) {
        vdev->transport_ops->notify(vdev->transport, NULL);
    }
}

VirtQueue *virtio_get_queue(VirtIODevice *vdev, unsigned index)
{
    return index < vdev->num_queues ? vdev->vqs[index] : NULL;
}
