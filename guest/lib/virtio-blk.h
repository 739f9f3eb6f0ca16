/*
 * A polling virtio-blk driver on modern virtio-pci: one split virtqueue per
 * vCPU, each request three descriptors (16-byte header, data, status byte)
 * in a fixed slot, so a queue holds at most queue_size / 3 requests.
 * vblk_open() runs on the BSP; afterwards queue i belongs to one vCPU
 * (vblk_submit/vblk_kick/vblk_complete on it need no lock).
 */
#ifndef GUEST_VIRTIO_BLK_H
#define GUEST_VIRTIO_BLK_H

#include <stdbool.h>
#include <stdint.h>

#include "virtio-pci.h"
#include "virtq.h"

#define VIRTIO_BLK_T_IN         0
#define VIRTIO_BLK_T_OUT        1
#define VIRTIO_BLK_T_FLUSH      4

#define VIRTIO_BLK_S_OK         0
#define VIRTIO_BLK_S_IOERR      1
#define VIRTIO_BLK_S_UNSUPP     2

#define VIRTIO_BLK_F_SIZE_MAX   1
#define VIRTIO_BLK_F_SEG_MAX    2
#define VIRTIO_BLK_F_RO         5
#define VIRTIO_BLK_F_BLK_SIZE   6
#define VIRTIO_BLK_F_FLUSH      9
#define VIRTIO_BLK_F_MQ         12

/* Most queues (one per vCPU). */
#define VBLK_MAX_QUEUES         32

/* The header a request starts with (device-readable). */
struct vblk_hdr {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};

/* Per-slot driver memory: header and status (the data is elsewhere). */
struct vblk_slot {
    struct vblk_hdr hdr;
    uint8_t status;
    uint8_t pad[15];
};

struct vblk_queue {
    struct virtq vq;
    unsigned qd;                    /* slots */
    uint32_t bs;                    /* bytes of data per slot */
    struct vblk_slot *slots;
    uint8_t *data;                  /* qd * bs bytes, 4 KiB aligned */
};

struct vblk {
    struct vpci_dev pci;
    uint64_t capacity;              /* in 512-byte sectors */
    uint32_t blk_size;              /* logical block size (512 if not offered) */
    uint32_t size_max;              /* 0: not offered */
    uint16_t num_queues;            /* the device's (1 without MQ) */
    bool ro;
    bool flush;                     /* VIRTIO_BLK_F_FLUSH negotiated */
    unsigned queues;                /* queues set up */
    struct vblk_queue q[VBLK_MAX_QUEUES];
};

/*
 * vblk_open: find the @disk-th (0-based) modern virtio-blk device, start
 * it, set up @queues queues (0: one per vCPU, at most the device's
 * num_queues) of @qd slots of @bs bytes each, DRIVER_OK.
 * Returns 0, -1 (no such disk: nothing printed), or -2 with a
 * "VIRTIO error" / "BLK error" line printed.  BSP only.
 */
int vblk_open(struct vblk *b, unsigned disk, unsigned queues, unsigned qd, uint32_t bs);

/*
 * vblk_extra_features: feature bits vblk_open() also asks for, when the
 * device offers them (0 by default; blk mode=hostile sets INDIRECT_DESC
 * for its indirect-table cases).  BSP only, before vblk_open().
 */
extern uint64_t vblk_extra_features;

/* vblk_data: the data buffer of @slot. */
static inline void *vblk_data(struct vblk_queue *q, unsigned slot)
{
    return q->data + (uint64_t)slot * q->bs;
}

/*
 * vblk_submit: publish request @type (VIRTIO_BLK_T_*) on @slot at 512-byte
 * @sector, with bs bytes of data (none for FLUSH).  Visible to the device
 * at the next vblk_kick().  The slot must be free.
 */
void vblk_submit(struct vblk_queue *q, unsigned slot, uint32_t type, uint64_t sector);

/* vblk_kick: notify the device of everything submitted. */
static inline void vblk_kick(struct vblk_queue *q)
{
    virtq_kick(&q->vq);
}

/*
 * vblk_complete: one finished request: its slot and status byte.  False
 * when none has finished.  A used id that names no slot gives slot ~0u.
 */
bool vblk_complete(struct vblk_queue *q, unsigned *slot, uint8_t *status);

#endif
