/*
 * Split virtqueue driven by polling: the driver fills descriptors, publishes
 * them in the avail ring, kicks the notify address (unless the device said
 * VRING_USED_F_NO_NOTIFY) and polls the used ring.  The avail ring carries
 * VRING_AVAIL_F_NO_INTERRUPT.  One vCPU per queue after set-up: no locks.
 */
#ifndef GUEST_VIRTQ_H
#define GUEST_VIRTQ_H

#include <stdbool.h>
#include <stdint.h>

#include "virtio-pci.h"

#define VIRTQ_DESC_F_NEXT       1
#define VIRTQ_DESC_F_WRITE      2
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY  1

/* The largest queue allocated (a device offering more is capped). */
#define VIRTQ_MAX_SIZE          1024

struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

struct virtq_avail {
    uint16_t flags;
    uint16_t idx;
    uint16_t ring[];
};

struct virtq_used_elem {
    uint32_t id;
    uint32_t len;
};

struct virtq_used {
    uint16_t flags;
    uint16_t idx;
    struct virtq_used_elem ring[];
};

struct virtq {
    unsigned index;                 /* queue number in the device */
    unsigned size;                  /* entries (power of two) */
    struct virtq_desc *desc;
    struct virtq_avail *avail;
    struct virtq_used *used;
    volatile uint16_t *notify;
    uint16_t avail_idx;             /* next avail index to publish */
    uint16_t used_idx;              /* next used entry to consume */
    uint16_t kicked_idx;            /* avail index at the last kick check */
    uint64_t kicks;                 /* notify writes done */
};

/*
 * virtq_init: set up queue @index of @d with at most @max entries (rings in
 * the arena, mem.h) and enable it.  Returns 0, or -1 with a
 * "VIRTIO error" line (no such queue, out of memory).  BSP, between
 * vpci_start() and vpci_driver_ok().
 */
int virtq_init(struct virtq *q, struct vpci_dev *d, unsigned index, unsigned max);

/* virtq_publish: put the chain headed by descriptor @head in the avail
 * ring (not yet visible to the device: see virtq_kick). */
static inline void virtq_publish(struct virtq *q, uint16_t head)
{
    q->avail->ring[q->avail_idx & (q->size - 1)] = head;
    q->avail_idx++;
}

/*
 * virtq_kick: make every published chain visible (avail->idx, release)
 * and notify the device unless it asked not to be (used->flags).
 */
void virtq_kick(struct virtq *q);

/*
 * virtq_poll: the next used element, or false when none is there yet.
 * Reads used->idx with acquire semantics.
 */
bool virtq_poll(struct virtq *q, struct virtq_used_elem *e);

#endif
