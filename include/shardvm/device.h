/*
 * -device: a device given on the command line, as a driver name plus a
 * generic property list, and the registry that maps a driver name to its
 * constructor.
 *
 * Both QEMU spellings parse into the same DeviceOption:
 *   -device virtio-blk-pci,drive=d0,num-queues=4
 *   -device '{"driver":"virtio-blk-pci","drive":"d0","num-queues":4,
 *             "iothread-vq-mapping":[{"iothread":"io0"}]}'
 * Property values are strings: JSON strings as they are, numbers in
 * decimal, booleans "on"/"off", arrays and objects as their JSON text
 * (a constructor parses e.g. iothread-vq-mapping again).  As in QEMU, a
 * JSON integer "addr" is a devfn (slot << 3 | function; given to the
 * table as "SLOT.FN" in hex), and duplicate keys are refused in both
 * forms; JSON nested deeper than 32 levels is refused.
 *
 * A constructor takes the properties it knows OUT of the table; the
 * machine reports any key left over as an unknown property.
 */
#ifndef SHARDVM_DEVICE_H
#define SHARDVM_DEVICE_H

#include <glib.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct PCIBus PCIBus;
typedef struct VM VM;
typedef struct IOThread IOThread;
typedef struct BlockBackend BlockBackend;
typedef struct GuestMemory GuestMemory;

/* One -device.  Owned by ShardvmOptions. */
typedef struct DeviceOption {
    char *driver;
    /* char * -> char *, g_free for both (g_hash_table_new_full). */
    GHashTable *props;
} DeviceOption;

/*
 * device_option_parse: parse a -device argument (JSON if it starts with
 * '{', else QEMU's key=value list with the driver first).  Returns the
 * option (device_option_free()) or NULL with "-device: ..." in @errp.
 * Pure; any thread.
 */
DeviceOption *device_option_parse(const char *arg, GError **errp);
void device_option_free(DeviceOption *d);

/*
 * DeviceHost: what the machine offers a constructor.  Lookups return
 * NULL when there is no such object (objects are owned by the machine and
 * outlive every device).
 */
typedef struct DeviceHost {
    VM *vm;                  /* NULL in tests */
    PCIBus *pci;             /* bus 0 */
    IOThread *(*find_iothread)(void *opaque, const char *id);
    BlockBackend *(*find_drive)(void *opaque, const char *id);
    void *opaque;
    GuestMemory *guest_memory; /* the VM's RAM map, for DMA-capable devices */
    unsigned nr_vcpus;       /* -smp: sizes "auto" queue counts; 0 = 1 */
    /* Where block devices report failed requests (werror/rerror); NULL:
     * none ("stop" then acts as "report").  Outlives every device. */
    const struct BlockErrorHandler *block_errors;
} DeviceHost;

/*
 * A device type: @create builds and plugs the device from @props (taking
 * out the keys it used) and returns it, or NULL with @errp set;
 * @destroy unplugs and frees it (vCPUs stopped).  Both on the main
 * thread with the BQL held.  @create NULL: the type is known but not
 * built into this tree.
 */
typedef void *DeviceCreateFunc(const DeviceHost *host, GHashTable *props,
                               GError **errp);
typedef void DeviceDestroyFunc(void *dev);

typedef struct DeviceType {
    const char *name;
    const char *help;        /* one line for -device help */
    DeviceCreateFunc *create;
    DeviceDestroyFunc *destroy;
} DeviceType;

/* device_type_find: the registered type called @name, or NULL.  The table
 * is static (system/device-types.c: one line per device type). */
const DeviceType *device_type_find(const char *name);

/*
 * virtio_blk_pci_create / _destroy: the virtio-blk-pci type
 * (hw/block/virtio-blk-pci.c).  Reads drive, iothread,
 * iothread-vq-mapping, num-queues, queue-size, serial, addr, block sizes,
 * discard, write-zeroes from @props (removing them); the drive and the
 * IOThreads come from @host.  Main thread, BQL held.
 */
void *virtio_blk_pci_create(const DeviceHost *host, GHashTable *props,
                            GError **errp);
void virtio_blk_pci_destroy(void *dev);
/* virtio_blk_pci_get_device: the virtio-blk device inside. */
struct VirtIOBlock *virtio_blk_pci_get_device(void *dev);

/*
 * For QMP (query-block, x-query-virtqueues, x-blockdev-set-iothread), on
 * a device virtio_blk_pci_create() returned.  Main thread, BQL held.
 *  - get_drive: the BlockBackend it uses; get_id: its -device id= or NULL.
 *  - get_num_queues / get_queue_iothread: the IOThread serving queue
 *    @index now (NULL: the main loop, or @index out of range).
 *  - set_iothread: move every queue to @iot (NULL: the main loop), live
 *    (virtio_blk_set_queue_context(), one queue at a time), and move the
 *    IOThreads' in-use counts with them.  A device with
 *    iothread-vq-mapping ends with all its queues in @iot.  Returns 0, or
 *    a negative errno with @errp set: the queues moved so far stay moved,
 *    the failed one keeps serving in its old context.
 */
BlockBackend *virtio_blk_pci_get_drive(void *dev);
const char *virtio_blk_pci_get_id(void *dev);
unsigned virtio_blk_pci_get_num_queues(void *dev);
IOThread *virtio_blk_pci_get_queue_iothread(void *dev, unsigned index);
int virtio_blk_pci_set_iothread(void *dev, IOThread *iot, GError **errp);

/*
 * device_props_take_pci_slot: take "addr" (QEMU's SLOT[.FUNCTION] in hex,
 * e.g. "5", "0x5" or "05.0"; function 0 only) out of @props.  *@slot is
 * -1 when absent (first free slot).  Returns 0 or -EINVAL with @errp set.
 */
int device_props_take_pci_slot(GHashTable *props, int *slot, GError **errp);

#ifdef __cplusplus
}
#endif

#endif
