/* Split virtqueue: ring memory, publishing and kicking, used-ring polling. */
#include "virtq.h"

#include "console.h"
#include "mem.h"

int virtq_init(struct virtq *q, struct vpci_dev *d, unsigned index, unsigned max)
{
    unsigned size = vpci_queue_size(d, index, max < VIRTQ_MAX_SIZE ? max : VIRTQ_MAX_SIZE,
                                     &q->notify);

    if (!size) {
        con_printf("VIRTIO error: the device has no queue %u (num_queues=%u)\n",
                   index, d->common->num_queues);
        return -1;
    }
    q->index = index;
    q->size = size;
    q->desc = mem_alloc(16 * size, 4096);
    q->avail = mem_alloc(6 + 2 * size, 64);
    q->used = mem_alloc(6 + 8 * size, 4096);
    if (!q->desc || !q->avail || !q->used) {
        con_printf("VIRTIO error: out of memory for queue %u\n", index);
        return -1;
    }
    q->avail->flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
    q->avail_idx = q->used_idx = q->kicked_idx = 0;
    q->kicks = 0;
    vpci_queue_enable(d, index, (uintptr_t)q->desc, (uintptr_t)q->avail,
                      (uintptr_t)q->used);
    return 0;
}

void virtq_kick(struct virtq *q)
{
    if (q->avail_idx == q->kicked_idx) {
        return;
    }
    __atomic_store_n(&q->avail->idx, q->avail_idx, __ATOMIC_RELEASE);
    q->kicked_idx = q->avail_idx;
    /* The idx store must be visible before used->flags is read (the device
     * clears NO_NOTIFY and then re-checks avail->idx). */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (!(__atomic_load_n(&q->used->flags, __ATOMIC_RELAXED) & VIRTQ_USED_F_NO_NOTIFY)) {
        *q->notify = (uint16_t)q->index;
        q->kicks++;
    }
}

bool virtq_poll(struct virtq *q, struct virtq_used_elem *e)
{
    if (__atomic_load_n(&q->used->idx, __ATOMIC_ACQUIRE) == q->used_idx) {
        return false;
    }
    *e = q->used->ring[q->used_idx & (q->size - 1)];
    q->used_idx++;
    return true;
}
