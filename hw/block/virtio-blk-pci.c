/*
 * virtio-blk-pci: the -device constructor that puts a virtio-blk device
 * (hw/block/virtio-blk.c) behind the virtio-pci transport
 * (hw/virtio/virtio-pci.c) on bus 0.  Main thread, at machine assembly.
 */
#include "shardvm/block.h"
#include "shardvm/device.h"
#include "shardvm/error.h"
#include "shardvm/iothread.h"
#include "shardvm/main-loop.h"
#include "shardvm/virtio-blk.h"
#include "shardvm/virtio-pci.h"

#include <errno.h>

/* PCI class "mass storage, other" (QEMU's virtio-blk-pci). */
#define VIRTIO_BLK_PCI_CLASS 0x018000

typedef struct VirtIOBlockPCI {
    BlockBackend *backend; /* attached to us (blk_attach_dev) */
    VirtIOBlock *blk;
    VirtIOPCIProxy *proxy;
    char *id;              /* -device id=, or NULL; immutable */
    /* The rest: main thread, BQL (changed by virtio_blk_pci_set_iothread) */
    GPtrArray *iothreads;  /* distinct IOThreads serving our queues, each
                            * counted with iothread_add_user() */
    IOThread **queue_iothreads; /* per queue: its IOThread, NULL: main loop */
    unsigned num_queues;
} VirtIOBlockPCI;

/* One AioContext per queue: its IOThread's, or the main loop's; the
 * IOThreads (NULL: main loop) in @queue_iots. */
static AioContext **queue_contexts(const DeviceHost *host,
                                   const VirtIOBlockConfig *cfg,
                                   GPtrArray *iothreads, IOThread **queue_iots,
                                   GError **errp)
{
    const char **ids = g_new0(const char *, cfg->num_queues);
    AioContext **ctxs = g_new0(AioContext *, cfg->num_queues);

    virtio_blk_queue_iothreads(cfg, ids);
    for (unsigned i = 0; i < cfg->num_queues; i++) {
        if (!ids[i]) {
            ctxs[i] = main_loop_get_aio_context();
            continue;
        }
        IOThread *iot = host->find_iothread ?
                        host->find_iothread(host->opaque, ids[i]) : NULL;
        if (!iot) {
            shardvm_error_set(errp, -ENOENT, "-device virtio-blk-pci: "
                              "IOThread '%s' not found (define it with "
                              "-object iothread,id=%s first)", ids[i], ids[i]);
            g_free(ctxs);
            ctxs = NULL;
            break;
        }
        ctxs[i] = iothread_get_aio_context(iot);
        queue_iots[i] = iot;
        if (!g_ptr_array_find(iothreads, iot, NULL)) {
            g_ptr_array_add(iothreads, iot);
        }
    }
    g_free(ids);
    return ctxs;
}

void *virtio_blk_pci_create(const DeviceHost *host, GHashTable *props,
                            GError **errp)
{
    VirtIOBlockConfig cfg;
    VirtIOBlockPCI *d = NULL;
    AioContext **ctxs = NULL;
    IOThread **queue_iots = NULL;
    GPtrArray *iothreads = g_ptr_array_new();
    char *id = NULL;
    int slot = -1;

    virtio_blk_config_init(&cfg);
    /* QEMU (since 5.2): num-queues defaults to one queue per vCPU, so each
     * vCPU can submit on its own queue. */
    if (!g_hash_table_contains(props, "num-queues")) {
        unsigned n = host->nr_vcpus ? host->nr_vcpus : 1;
        g_hash_table_insert(props, g_strdup("num-queues"),
                            g_strdup_printf("%u", n));
    }
    /* id= names the device for QMP (query-block's qdev). */
    gpointer id_key = NULL;
    if (g_hash_table_steal_extended(props, "id", &id_key, (gpointer *)&id)) {
        g_free(id_key);
    }
    if (device_props_take_pci_slot(props, &slot, errp) < 0 ||
        virtio_blk_parse_props(props, &cfg, errp) < 0) {
        goto out;
    }
    BlockBackend *blk = host->find_drive ?
                        host->find_drive(host->opaque, cfg.drive) : NULL;
    if (!blk) {
        shardvm_error_set(errp, -ENOENT, "-device virtio-blk-pci: drive '%s' "
                          "not found (define it with -drive ...,id=%s or "
                          "-blockdev ...,node-name=%s)", cfg.drive, cfg.drive,
                          cfg.drive);
        goto out;
    }
    if (!host->guest_memory) {
        shardvm_error_set(errp, -EINVAL, "-device virtio-blk-pci: no guest "
                          "memory map");
        goto out;
    }
    queue_iots = g_new0(IOThread *, cfg.num_queues);
    ctxs = queue_contexts(host, &cfg, iothreads, queue_iots, errp);
    if (!ctxs) {
        goto out;
    }
    d = g_new0(VirtIOBlockPCI, 1);
    /* One device per backend, as QEMU ("Drive 'd0' is already in use"). */
    if (blk_attach_dev(blk, d, errp) < 0) {
        g_clear_pointer(&d, g_free);
        goto out;
    }
    d->backend = blk;
    /* werror/rerror=auto: the drive's (-drive werror=/rerror=) */
    if (cfg.werror == BLOCK_ERROR_POLICY_AUTO) {
        cfg.werror = blk_get_options(blk)->werror;
    }
    if (cfg.rerror == BLOCK_ERROR_POLICY_AUTO) {
        cfg.rerror = blk_get_options(blk)->rerror;
    }
    d->blk = virtio_blk_new(&cfg, blk, ctxs, host->guest_memory, errp);
    if (!d->blk) {
        blk_detach_dev(blk, d);
        g_clear_pointer(&d, g_free);
        goto out;
    }
    virtio_blk_set_error_handler(d->blk, host->block_errors, NULL);
    d->proxy = virtio_pci_new(virtio_blk_get_vdev(d->blk),
                              VIRTIO_BLK_PCI_CLASS, 0);
    if (virtio_pci_plug(d->proxy, host->pci, slot, errp) < 0) {
        virtio_pci_free(d->proxy);
        virtio_blk_free(d->blk);
        blk_detach_dev(blk, d);
        g_clear_pointer(&d, g_free);
        goto out;
    }
    /* In use from now on: QMP object-del refuses these IOThreads. */
    for (guint i = 0; i < iothreads->len; i++) {
        iothread_add_user(g_ptr_array_index(iothreads, i));
    }
    d->iothreads = g_steal_pointer(&iothreads);
    d->queue_iothreads = g_steal_pointer(&queue_iots);
    d->num_queues = cfg.num_queues;
    d->id = g_steal_pointer(&id);
out:
    if (iothreads) {
        g_ptr_array_unref(iothreads);
    }
    g_free(queue_iots);
    g_free(id);
    g_free(ctxs);
    virtio_blk_config_clear(&cfg);
    return d;
}

void virtio_blk_pci_destroy(void *opaque)
{
    VirtIOBlockPCI *d = opaque;

    if (!d) {
        return;
    }
    /* Unplug first (reset: the device drains), then the device. */
    virtio_pci_free(d->proxy);
    virtio_blk_free(d->blk);
    blk_detach_dev(d->backend, d);
    for (guint i = 0; i < d->iothreads->len; i++) {
        iothread_del_user(g_ptr_array_index(d->iothreads, i));
    }
    g_ptr_array_unref(d->iothreads);
    g_free(d->queue_iothreads);
    g_free(d->id);
    g_free(d);
}

BlockBackend *virtio_blk_pci_get_drive(void *dev)
{
    return ((VirtIOBlockPCI *)dev)->backend;
}

const char *virtio_blk_pci_get_id(void *dev)
{
    return ((VirtIOBlockPCI *)dev)->id;
}

unsigned virtio_blk_pci_get_num_queues(void *dev)
{
    return ((VirtIOBlockPCI *)dev)->num_queues;
}

IOThread *virtio_blk_pci_get_queue_iothread(void *dev, unsigned index)
{
    VirtIOBlockPCI *d = dev;

    return index < d->num_queues ? d->queue_iothreads[index] : NULL;
}

/* The in-use counts follow the queues: count the IOThreads serving some
 * queue now, then let go of the ones that served before (add first, so an
 * IOThread that keeps queues never drops to 0 in between). */
static void vblk_pci_recount_iothreads(VirtIOBlockPCI *d)
{
    GPtrArray *now = g_ptr_array_new();

    for (unsigned i = 0; i < d->num_queues; i++) {
        IOThread *iot = d->queue_iothreads[i];

        if (iot && !g_ptr_array_find(now, iot, NULL)) {
            g_ptr_array_add(now, iot);
            iothread_add_user(iot);
        }
    }
    for (guint i = 0; i < d->iothreads->len; i++) {
        iothread_del_user(g_ptr_array_index(d->iothreads, i));
    }
    g_ptr_array_unref(d->iothreads);
    d->iothreads = now;
}

int virtio_blk_pci_set_iothread(void *dev, IOThread *iot, GError **errp)
{
    VirtIOBlockPCI *d = dev;
    AioContext *ctx = iot ? iothread_get_aio_context(iot)
                          : main_loop_get_aio_context();
    int ret = 0;

    /* Every queue, one after the other: each is drained, unbound and
     * bound again on its own, the others keep serving the guest. */
    for (unsigned i = 0; i < d->num_queues && ret == 0; i++) {
        if (d->queue_iothreads[i] == iot) {
            continue;
        }
        ret = virtio_blk_set_queue_context(d->blk, i, ctx, errp);
        if (ret == 0) {
            d->queue_iothreads[i] = iot;
        }
    }
    vblk_pci_recount_iothreads(d);
    return ret;
}

VirtIOBlock *virtio_blk_pci_get_device(void *opaque)
{
    return ((VirtIOBlockPCI *)opaque)->blk;
}
