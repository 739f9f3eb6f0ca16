/* virtio-blk: configuration, queues, three-descriptor requests. */
#include "virtio-blk.h"

#include "console.h"
#include "mem.h"
#include "smp.h"

/* Device configuration offsets (virtio 1.1, 5.2.4). */
#define VBLK_CFG_CAPACITY       0x00
#define VBLK_CFG_SIZE_MAX       0x08
#define VBLK_CFG_BLK_SIZE       0x14
#define VBLK_CFG_NUM_QUEUES     0x22

uint64_t vblk_extra_features;

static int vblk_start(struct vblk *b, unsigned disk)
{
    uint64_t want = (1ull << VIRTIO_BLK_F_SIZE_MAX) | (1ull << VIRTIO_BLK_F_SEG_MAX) |
                    (1ull << VIRTIO_BLK_F_RO) | (1ull << VIRTIO_BLK_F_BLK_SIZE) |
                    (1ull << VIRTIO_BLK_F_FLUSH) | (1ull << VIRTIO_BLK_F_MQ) |
                    vblk_extra_features;
    int r = vpci_find(VIRTIO_ID_BLOCK, disk, &b->pci);

    if (r < 0) {
        return r;
    }
    if (vpci_start(&b->pci, want) < 0) {
        return -2;
    }
    b->capacity = vpci_cfg64(&b->pci, VBLK_CFG_CAPACITY);
    b->size_max = vpci_has(&b->pci, VIRTIO_BLK_F_SIZE_MAX) ?
                  vpci_cfg32(&b->pci, VBLK_CFG_SIZE_MAX) : 0;
    b->blk_size = vpci_has(&b->pci, VIRTIO_BLK_F_BLK_SIZE) ?
                  vpci_cfg32(&b->pci, VBLK_CFG_BLK_SIZE) : 512;
    if (b->blk_size < 512 || (b->blk_size & (b->blk_size - 1))) {
        b->blk_size = 512;
    }
    b->num_queues = vpci_has(&b->pci, VIRTIO_BLK_F_MQ) ?
                    *(volatile uint16_t *)(b->pci.device + VBLK_CFG_NUM_QUEUES) : 1;
    if (!b->num_queues) {
        b->num_queues = 1;
    }
    b->ro = vpci_has(&b->pci, VIRTIO_BLK_F_RO);
    b->flush = vpci_has(&b->pci, VIRTIO_BLK_F_FLUSH);
    return 0;
}

static int vblk_queue_init(struct vblk *b, unsigned i, unsigned qd, uint32_t bs)
{
    struct vblk_queue *q = &b->q[i];

    if (virtq_init(&q->vq, &b->pci, i, VIRTQ_MAX_SIZE) < 0) {
        return -2;
    }
    if (qd * 3 > q->vq.size) {
        con_printf("BLK error: qd=%u needs %u descriptors, queue %u has %u "
                   "(3 per request)\n", qd, qd * 3, i, q->vq.size);
        return -2;
    }
    q->qd = qd;
    q->bs = bs;
    q->slots = mem_alloc(sizeof(struct vblk_slot) * qd, 64);
    q->data = mem_alloc((uint64_t)qd * bs, 4096);
    if (!q->slots || !q->data) {
        con_printf("BLK error: no memory for %u x %u-byte buffers on queue %u "
                   "(%lu bytes left)\n", qd, bs, i, (unsigned long)mem_arena_left());
        return -2;
    }
    for (unsigned s = 0; s < qd; s++) {
        struct virtq_desc *d = &q->vq.desc[3 * s];

        d[0].addr = (uintptr_t)&q->slots[s].hdr;
        d[0].len = sizeof(struct vblk_hdr);
        d[1].addr = (uintptr_t)vblk_data(q, s);
        d[1].len = bs;
        d[2].addr = (uintptr_t)&q->slots[s].status;
        d[2].len = 1;
        d[2].flags = VIRTQ_DESC_F_WRITE;
    }
    return 0;
}

int vblk_open(struct vblk *b, unsigned disk, unsigned queues, unsigned qd, uint32_t bs)
{
    int r = vblk_start(b, disk);

    if (r < 0) {
        return r;
    }
    if (!queues) {
        queues = smp_cpus() < b->num_queues ? smp_cpus() : b->num_queues;
    }
    if (queues < 1 || queues > VBLK_MAX_QUEUES || queues > b->num_queues) {
        con_printf("BLK error: queues=%u but the device has %u (max %u)\n",
                   queues, b->num_queues, VBLK_MAX_QUEUES);
        return -2;
    }
    if (b->size_max && bs > b->size_max) {
        con_printf("BLK error: bs=%u above the device's size_max %u\n", bs, b->size_max);
        return -2;
    }
    b->queues = queues;
    for (unsigned i = 0; i < queues; i++) {
        r = vblk_queue_init(b, i, qd, bs);
        if (r < 0) {
            return r;
        }
    }
    return vpci_driver_ok(&b->pci) < 0 ? -2 : 0;
}

void vblk_submit(struct vblk_queue *q, unsigned slot, uint32_t type, uint64_t sector)
{
    struct virtq_desc *d = &q->vq.desc[3 * slot];
    struct vblk_slot *s = &q->slots[slot];

    s->hdr.type = type;
    s->hdr.reserved = 0;
    s->hdr.sector = sector;
    s->status = 0xff;
    if (type == VIRTIO_BLK_T_FLUSH) {
        d[0].flags = VIRTQ_DESC_F_NEXT;
        d[0].next = (uint16_t)(3 * slot + 2);
    } else {
        d[0].flags = VIRTQ_DESC_F_NEXT;
        d[0].next = (uint16_t)(3 * slot + 1);
        d[1].flags = VIRTQ_DESC_F_NEXT |
                     (type == VIRTIO_BLK_T_IN ? VIRTQ_DESC_F_WRITE : 0);
        d[1].next = (uint16_t)(3 * slot + 2);
    }
    virtq_publish(&q->vq, (uint16_t)(3 * slot));
}

bool vblk_complete(struct vblk_queue *q, unsigned *slot, uint8_t *status)
{
    struct virtq_used_elem e;

    if (!virtq_poll(&q->vq, &e)) {
        return false;
    }
    if (e.id % 3 || e.id / 3 >= q->qd) {
        *slot = ~0u;
        *status = 0xff;
        return true;
    }
    *slot = e.id / 3;
    *status = __atomic_load_n(&q->slots[*slot].status, __ATOMIC_ACQUIRE);
    return true;
}
