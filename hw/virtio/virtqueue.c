/*
 * Split virtqueues (virtio 1.x, 2.7): the descriptor-chain iterator that
 * validates everything the guest wrote, the avail/used rings, interrupt
 * suppression (NO_INTERRUPT / used_event) and notification suppression
 * (NO_NOTIFY / avail_event), and binding a queue to an AioContext.
 *
 * The rings are translated through the RCU-protected GuestMemory at every
 * operation (inside one rcu_read_lock() section); no ring pointer is kept
 * across operations.  Guest-shared ring words are read and written with
 * atomics: the avail index with acquire (pairs with the driver's write
 * barrier before it publishes the index), the used index with release
 * (pairs with the driver's read barrier after it reads the index).
 */
#include "virtio-internal.h"
#include "shardvm/rcu.h"

#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <string.h>

/* Elements of up to this many buffers come from the per-queue pool; longer
 * chains (rare: virtio-blk requests of more than 14 segments) are
 * g_malloc'ed. */
#define VQ_POOL_IOV 16

struct VirtQueue {
    VirtIODevice *vdev;           /* immutable */
    unsigned index;               /* immutable */
    uint16_t max_size;            /* immutable */
    EventNotifier host_notifier;  /* immutable (fd) */

    /* Transport registers: [vdev->lock]; read by the context only while
     * attached (attach/detach go through aio_context_run_sync, which
     * orders them). */
    uint16_t size;
    bool enabled;
    uint16_t vector;              /* atomic: the guest rewrites it while
                                   * the context interrupts through it */
    uint64_t desc_gpa, avail_gpa, used_gpa;

    /* Set by virtqueue_attach()/detach() before/after the context uses
     * them (ordered by aio_context_run_sync). */
    AioContext *ctx;
    VirtQueueHandler *handler;

    /* [ctx] ring state */
    uint16_t last_avail;          /* next avail entry to pop */
    uint16_t shadow_avail;        /* last avail idx read from the guest */
    uint16_t used_idx;            /* next used entry (published at flush) */
    uint16_t pending_used;        /* pushed since the last flush */
    uint16_t signalled_used;      /* EVENT_IDX: used idx at last decision */
    bool signalled_valid;
    bool notification;            /* guest kicks wanted */
    unsigned inuse;               /* popped, not yet pushed */
    struct iovec *scratch;        /* max_size entries, chain collection */
    GPtrArray *pool;              /* free elements of VQ_POOL_IOV */
};

/* The three rings of one queue, translated for one operation. */
typedef struct VRings {
    const VRingDesc *desc;
    uint16_t *avail;   /* [0] flags, [1] idx, [2..] ring, [2+n] used_event */
    uint8_t *used;     /* flags @0, idx @2, ring @4, avail_event @4+8n */
    uint16_t n;
} VRings;

static inline void vq_assert_home(const VirtQueue *vq)
{
#ifndef NDEBUG
    /* A queue's requests are handled only in its context's home thread. */
    assert(vq->ctx && aio_context_in_home_thread(vq->ctx));
#endif
}

static inline bool vq_broken(const VirtQueue *vq)
{
    return __atomic_load_n(&vq->vdev->broken, __ATOMIC_ACQUIRE);
}

static inline uint16_t ld16(const uint16_t *p, int order)
{
    return le16toh(__atomic_load_n(p, order));
}

static inline void st16(uint16_t *p, uint16_t v, int order)
{
    __atomic_store_n(p, htole16(v), order);
}

static inline uint16_t *used_flags(const VRings *r)
{
    return (uint16_t *)r->used;
}

static inline uint16_t *used_idx_word(const VRings *r)
{
    return (uint16_t *)(r->used + 2);
}

static inline uint16_t *avail_event_word(const VRings *r)
{
    return (uint16_t *)(r->used + 4 + 8 * (size_t)r->n);
}

/* Translate the rings; a ring outside RAM or misaligned breaks the device.
 * Inside rcu_read_lock(). */
static bool vq_map(VirtQueue *vq, VRings *r)
{
    GuestMemory *mem = vq->vdev->mem;
    uint16_t n = vq->size;

    if (!vq->enabled || n == 0 || vq_broken(vq) || !mem) {
        return false;
    }
    r->n = n;
    r->desc = guest_memory_translate(mem, vq->desc_gpa, VRING_DESC_BYTES(n));
    r->avail = guest_memory_translate(mem, vq->avail_gpa, VRING_AVAIL_BYTES(n));
    r->used = guest_memory_translate(mem, vq->used_gpa, VRING_USED_BYTES(n));
    if (!r->desc || !r->avail || !r->used ||
        ((uintptr_t)r->desc & 15) || ((uintptr_t)r->avail & 1) ||
        ((uintptr_t)r->used & 3)) {
        virtio_error(vq->vdev, "queue %u: rings outside guest RAM or misaligned",
                     vq->index);
        return false;
    }
    return true;
}

/* Are there avail entries past last_avail?  Reads the guest's idx when
 * the shadow copy says no; an idx more than the queue size ahead breaks
 * the device.  Inside rcu_read_lock(). */
static bool vq_avail_pending(VirtQueue *vq, const VRings *r)
{
    uint16_t idx;

    if (vq->shadow_avail != vq->last_avail) {
        return true;
    }
    /* Acquire (entries after the idx) and seq_cst (see
     * virtqueue_set_notification()). */
    idx = ld16(&r->avail[1], __ATOMIC_SEQ_CST);
    if ((uint16_t)(idx - vq->last_avail) > r->n) {
        virtio_error(vq->vdev, "queue %u: avail idx %u is more than %u ahead of %u",
                     vq->index, idx, r->n, vq->last_avail);
        return false;
    }
    vq->shadow_avail = idx;
    return idx != vq->last_avail;
}

/* ------------------------------------------------------------------ */
/* The descriptor-chain iterator: every check on guest descriptors lives
 * here. */

typedef struct DescChain {
    VirtQueue *vq;
    const VRingDesc *table;  /* the ring's table or an indirect table */
    unsigned table_len;
    unsigned ttl;            /* descriptors left: no loop, no over-long chain */
    unsigned count;          /* descriptors yielded so far */
    uint16_t next;
    bool has_next;
    bool indirect;
    bool seen_write;
} DescChain;

static void chain_init(DescChain *c, VirtQueue *vq, const VRings *r,
                       uint16_t head)
{
    *c = (DescChain){
        .vq = vq, .table = r->desc, .table_len = r->n, .ttl = r->n,
        .next = head, .has_next = true,
    };
}

#define chain_fail(c, fmt, ...) \
    (virtio_error((c)->vq->vdev, "queue %u: " fmt, (c)->vq->index, \
                  ##__VA_ARGS__), -EINVAL)

/* Switch @c to the indirect table described by @d (checked). */
static int chain_enter_indirect(DescChain *c, const VRingDesc *d, uint16_t flags)
{
    uint32_t len = le32toh(d->len);
    const void *t;

    if (!virtio_has_feature(c->vq->vdev, VIRTIO_F_INDIRECT_DESC)) {
        return chain_fail(c, "indirect descriptor without INDIRECT_DESC");
    }
    if (c->indirect) {
        return chain_fail(c, "indirect descriptor inside an indirect table");
    }
    if (c->count != 0 || (flags & VRING_DESC_F_NEXT)) {
        return chain_fail(c, "indirect descriptor must be alone in its chain");
    }
    if (len == 0 || len % sizeof(VRingDesc) != 0) {
        return chain_fail(c, "indirect table length %u not a non-zero multiple of 16",
                          len);
    }
    if (len / sizeof(VRingDesc) > c->vq->size) {
        return chain_fail(c, "indirect table of %zu entries exceeds queue size %u",
                          len / sizeof(VRingDesc), c->vq->size);
    }
    t = guest_memory_translate(c->vq->vdev->mem, le64toh(d->addr), len);
    if (!t) {
        return chain_fail(c, "indirect table 0x%" G_GINT64_MODIFIER "x+%u outside guest RAM",
                          (guint64)le64toh(d->addr), len);
    }
    c->table = t;
    c->table_len = len / sizeof(VRingDesc);
    c->ttl = c->table_len;
    c->next = 0;
    c->indirect = true;
    return 0;
}

/*
 * chain_next: the next buffer of the chain: 1 with @iov filled and
 * *@write set, 0 at the end of the chain, -EINVAL after virtio_error().
 * Inside rcu_read_lock().
 */
static int chain_next(DescChain *c, struct iovec *iov, bool *write)
{
    VRingDesc d;
    uint16_t flags;
    uint32_t len;
    uint64_t addr;
    void *hva;

    for (;;) {
        if (!c->has_next) {
            return 0;
        }
        if (c->ttl == 0) {
            return chain_fail(c, "descriptor chain longer than %u (loop?)",
                              c->table_len);
        }
        c->ttl--;
        if (c->next >= c->table_len) {
            return chain_fail(c, "descriptor index %u past table of %u",
                              c->next, c->table_len);
        }
        /* One copy: the guest may rewrite the table while we look. */
        memcpy(&d, &c->table[c->next], sizeof(d));
        flags = le16toh(d.flags);
        if (!(flags & VRING_DESC_F_INDIRECT)) {
            break;
        }
        if (chain_enter_indirect(c, &d, flags) < 0) {
            return -EINVAL;
        }
    }
    len = le32toh(d.len);
    addr = le64toh(d.addr);
    hva = len ? guest_memory_translate(c->vq->vdev->mem, addr, len) : NULL;
    if (!hva) {
        return chain_fail(c, "buffer 0x%" G_GINT64_MODIFIER "x+%u outside guest RAM",
                          (guint64)addr, len);
    }
    *write = flags & VRING_DESC_F_WRITE;
    if (*write) {
        c->seen_write = true;
    } else if (c->seen_write) {
        return chain_fail(c, "device-readable buffer after a writable one");
    }
    c->has_next = flags & VRING_DESC_F_NEXT;
    c->next = le16toh(d.next);
    c->count++;
    iov->iov_base = hva;
    iov->iov_len = len;
    return 1;
}

/* ------------------------------------------------------------------ */
/* Element pool */

static VirtQueueElement *elem_get(VirtQueue *vq, unsigned n)
{
    VirtQueueElement *e;
    unsigned cap = n <= VQ_POOL_IOV ? VQ_POOL_IOV : n;

    if (cap == VQ_POOL_IOV && vq->pool->len) {
        return g_ptr_array_steal_index_fast(vq->pool, vq->pool->len - 1);
    }
    e = g_malloc(sizeof(*e) + cap * sizeof(e->iov[0]));
    e->capacity = cap;
    return e;
}

static void elem_put(VirtQueue *vq, VirtQueueElement *e)
{
    if (e->capacity == VQ_POOL_IOV && vq->pool->len < vq->max_size) {
        g_ptr_array_add(vq->pool, e);
    } else {
        g_free(e);
    }
}

/* ------------------------------------------------------------------ */
/* Pop, push, flush */

VirtQueueElement *virtqueue_pop(VirtQueue *vq)
{
    VirtQueueElement *e = NULL;
    unsigned out = 0, in = 0, n;
    uint64_t out_len = 0, in_len = 0;
    DescChain c;
    VRings r;
    uint16_t head;
    bool write;
    int ret;

    vq_assert_home(vq);
    rcu_read_lock();
    if (!vq_map(vq, &r) || !vq_avail_pending(vq, &r)) {
        goto out;
    }
    if (vq->inuse >= r.n) {
        /* A driver has at most queue-size chains outstanding; more means
         * it republished heads still in flight, which would grow the
         * device's in-flight state without bound. */
        virtio_error(vq->vdev, "queue %u: more than %u chains in flight",
                     vq->index, r.n);
        goto out;
    }
    /* The entry is read after the idx (acquire above). */
    head = ld16(&r.avail[2 + vq->last_avail % r.n], __ATOMIC_RELAXED);
    if (head >= r.n) {
        virtio_error(vq->vdev, "queue %u: avail head %u past queue size %u",
                     vq->index, head, r.n);
        goto out;
    }
    /* Readable buffers come first, so one array in order is out[] + in[]. */
    chain_init(&c, vq, &r, head);
    while ((ret = chain_next(&c, &vq->scratch[out + in], &write)) > 0) {
        uint64_t len = vq->scratch[out + in].iov_len;

        if (write) {
            in++;
            in_len += len;
        } else {
            out++;
            out_len += len;
        }
    }
    if (ret < 0) {
        goto out;
    }
    n = out + in;
    e = elem_get(vq, n);
    memcpy(e->iov, vq->scratch, n * sizeof(e->iov[0]));
    e->head = head;
    e->out_num = out;
    e->in_num = in;
    e->out_len = out_len;
    e->in_len = in_len;
    e->out_iov = e->iov;
    e->in_iov = e->iov + out;
    vq->last_avail++;
    vq->inuse++;
    if (vq->notification && virtio_has_feature(vq->vdev, VIRTIO_F_EVENT_IDX)) {
        /* Kick me when you publish past what I have taken. */
        st16(avail_event_word(&r), vq->last_avail, __ATOMIC_RELAXED);
    }
out:
    rcu_read_unlock();
    return e;
}

void virtqueue_push(VirtQueue *vq, VirtQueueElement *elem, uint32_t len)
{
    VRings r;

    vq_assert_home(vq);
    rcu_read_lock();
    if (vq_map(vq, &r)) {
        VRingUsedElem *u = (VRingUsedElem *)(r.used + 4) + vq->used_idx % r.n;

        u->id = htole32(elem->head);
        u->len = htole32(len);
        vq->used_idx++;
        vq->pending_used++;
    }
    rcu_read_unlock();
    assert(vq->inuse > 0);
    vq->inuse--;
    elem_put(vq, elem);
}

void virtqueue_detach_element(VirtQueue *vq, VirtQueueElement *elem)
{
    vq_assert_home(vq);
    assert(vq->inuse > 0);
    vq->inuse--;
    elem_put(vq, elem);
}

/* Should the guest be interrupted for used entries up to @new_idx?
 * Inside rcu_read_lock(), after the full barrier. */
static bool vq_should_notify(VirtQueue *vq, const VRings *r, uint16_t new_idx)
{
    if (virtio_has_feature(vq->vdev, VIRTIO_F_EVENT_IDX)) {
        uint16_t event = ld16(&r->avail[2 + r->n], __ATOMIC_SEQ_CST);
        uint16_t old = vq->signalled_used;
        bool valid = vq->signalled_valid;

        vq->signalled_used = new_idx;
        vq->signalled_valid = true;
        return !valid || vring_need_event(event, new_idx, old);
    }
    return !(ld16(&r->avail[0], __ATOMIC_SEQ_CST) & VRING_AVAIL_F_NO_INTERRUPT);
}

void virtqueue_flush(VirtQueue *vq)
{
    VirtIODevice *vdev = vq->vdev;
    bool notify = false;
    VRings r;

    vq_assert_home(vq);
    if (vq->pending_used == 0) {
        return;
    }
    vq->pending_used = 0;
    rcu_read_lock();
    if (vq_map(vq, &r)) {
        /* Entries before the index (release: pairs with the driver's read
         * barrier after it reads used->idx).  seq_cst, as is the read of
         * flags / used_event after it: the index is visible before we look
         * (pairs with the driver's barrier between writing used_event and
         * re-reading used->idx).  A seq_cst store and load instead of a
         * fence, which ThreadSanitizer does not model. */
        st16(used_idx_word(&r), vq->used_idx, __ATOMIC_SEQ_CST);
        notify = vq_should_notify(vq, &r, vq->used_idx);
    }
    rcu_read_unlock();
    if (notify && vdev->transport_ops && vdev->transport_ops->notify) {
        vdev->transport_ops->notify(vdev->transport, vq);
    }
}

bool virtqueue_set_notification(VirtQueue *vq, bool enable)
{
    bool pending = false;
    VRings r;

    vq->notification = enable;
    rcu_read_lock();
    if (!vq_map(vq, &r)) {
        goto out;
    }
    if (virtio_has_feature(vq->vdev, VIRTIO_F_EVENT_IDX)) {
        /* Disabled: avail_event stays behind (pop stops moving it). */
        if (enable) {
            st16(avail_event_word(&r), ld16(&r.avail[1], __ATOMIC_RELAXED),
                 __ATOMIC_SEQ_CST);
        }
    } else {
        uint16_t f = ld16(used_flags(&r), __ATOMIC_RELAXED);

        f = enable ? (f & ~VRING_USED_F_NO_NOTIFY) : (f | VRING_USED_F_NO_NOTIFY);
        st16(used_flags(&r), f, __ATOMIC_SEQ_CST);
    }
    if (enable) {
        /* Flag/avail_event (seq_cst store above) before re-reading
         * avail->idx (seq_cst load in vq_avail_pending): pairs with the
         * driver's barrier between publishing avail->idx and reading the
         * flag.  Entries published before it are not kicked for: report. */
        vq->shadow_avail = vq->last_avail;
        pending = vq_avail_pending(vq, &r);
    }
out:
    rcu_read_unlock();
    return pending;
}

bool virtqueue_get_notification(const VirtQueue *vq)
{
    return vq->notification;
}

bool virtqueue_empty(VirtQueue *vq)
{
    bool pending;
    VRings r;

    rcu_read_lock();
    pending = vq_map(vq, &r) && vq_avail_pending(vq, &r);
    rcu_read_unlock();
    return !pending;
}

unsigned virtqueue_in_flight(const VirtQueue *vq)
{
    return vq->inuse;
}

/* ------------------------------------------------------------------ */
/* Binding to an AioContext */

static VirtQueue *vq_of_notifier(EventNotifier *e)
{
    return caa_container_of(e, VirtQueue, host_notifier);
}

static void vq_run_handler(VirtQueue *vq)
{
    if (!vq_broken(vq) && vq->handler) {
        vq->handler(vq->vdev, vq);
    }
}

static void vq_host_notifier_read(EventNotifier *e)
{
    if (event_notifier_test_and_clear(e)) {
        vq_run_handler(vq_of_notifier(e));
    }
}

static bool vq_io_poll(void *opaque)
{
    VirtQueue *vq = vq_of_notifier(opaque);

    return !vq_broken(vq) && !virtqueue_empty(vq);
}

static void vq_io_poll_ready(EventNotifier *e)
{
    vq_run_handler(vq_of_notifier(e));
}

/* While the context busy-polls the avail index, the guest need not kick.
 * At the end aio_poll() calls vq_io_poll() once more, which catches
 * entries published before notifications were re-enabled. */
static void vq_poll_notify(void *opaque, bool started)
{
    virtqueue_set_notification(vq_of_notifier(opaque), !started);
}

static void vq_attach_fn(void *opaque)
{
    VirtQueue *vq = opaque;
    int fd = event_notifier_get_fd(&vq->host_notifier);

    aio_set_event_notifier(vq->ctx, &vq->host_notifier, vq_host_notifier_read,
                           vq_io_poll, vq_io_poll_ready);
    aio_set_fd_poll_notify(vq->ctx, fd, vq_poll_notify);
    /* Requests already in the ring when the driver said DRIVER_OK. */
    event_notifier_set(&vq->host_notifier);
}

static void vq_detach_fn(void *opaque)
{
    VirtQueue *vq = opaque;

    aio_set_event_notifier(vq->ctx, &vq->host_notifier, NULL, NULL, NULL);
    vq->notification = true;
}

int virtqueue_attach(VirtQueue *vq, AioContext *ctx, VirtQueueHandler *handler)
{
    int ret;

    assert(!vq->ctx);
    vq->ctx = ctx;
    vq->handler = handler;
    vq->notification = true;
    ret = aio_context_run_sync(ctx, vq_attach_fn, vq);
    if (ret < 0) {
        vq->ctx = NULL;
        vq->handler = NULL;
    }
    return ret;
}

void virtqueue_detach(VirtQueue *vq)
{
    if (!vq->ctx) {
        return;
    }
    aio_context_run_sync(vq->ctx, vq_detach_fn, vq);
    vq->ctx = NULL;
    vq->handler = NULL;
}

AioContext *virtqueue_get_context(const VirtQueue *vq)
{
    return vq->ctx;
}

/* ------------------------------------------------------------------ */
/* Registers and life cycle */

VirtQueue *virtqueue_new(VirtIODevice *vdev, unsigned index, uint16_t max_size)
{
    VirtQueue *vq = g_new0(VirtQueue, 1);
    int ret;

    vq->vdev = vdev;
    vq->index = index;
    vq->max_size = max_size;
    vq->scratch = g_new(struct iovec, max_size);
    vq->pool = g_ptr_array_sized_new(max_size);
    ret = event_notifier_init(&vq->host_notifier, false);
    if (ret < 0) {
        g_error("virtqueue: eventfd: %s", g_strerror(-ret)); /* out of fds at start-up */
    }
    virtqueue_reset(vq);
    return vq;
}

void virtqueue_free(VirtQueue *vq)
{
    if (!vq) {
        return;
    }
    assert(!vq->ctx && vq->inuse == 0);
    event_notifier_cleanup(&vq->host_notifier);
    for (unsigned i = 0; i < vq->pool->len; i++) {
        g_free(g_ptr_array_index(vq->pool, i));
    }
    g_ptr_array_free(vq->pool, true);
    g_free(vq->scratch);
    g_free(vq);
}

void virtqueue_reset(VirtQueue *vq)
{
    assert(!vq->ctx && vq->inuse == 0);
    vq->size = vq->max_size;
    vq->enabled = false;
    virtqueue_set_vector(vq, VIRTIO_NO_VECTOR);
    vq->desc_gpa = vq->avail_gpa = vq->used_gpa = 0;
    vq->last_avail = vq->shadow_avail = 0;
    vq->used_idx = vq->pending_used = 0;
    vq->signalled_used = 0;
    vq->signalled_valid = false;
    vq->notification = true;
    event_notifier_test_and_clear(&vq->host_notifier);
}

uint16_t virtqueue_get_max_size(const VirtQueue *vq)
{
    return vq->max_size;
}

uint16_t virtqueue_get_size(const VirtQueue *vq)
{
    return vq->size;
}

void virtqueue_set_size(VirtQueue *vq, uint16_t size)
{
    /* The transport checks power of 2 <= max; a bad value disables the
     * queue rather than trusting it. */
    if (size == 0 || size > vq->max_size || (size & (size - 1))) {
        size = 0;
    }
    vq->size = size;
}

void virtqueue_set_addrs(VirtQueue *vq, uint64_t desc, uint64_t avail,
                         uint64_t used)
{
    vq->desc_gpa = desc;
    vq->avail_gpa = avail;
    vq->used_gpa = used;
}

void virtqueue_get_addrs(const VirtQueue *vq, uint64_t *desc,
                         uint64_t *avail, uint64_t *used)
{
    *desc = vq->desc_gpa;
    *avail = vq->avail_gpa;
    *used = vq->used_gpa;
}

bool virtqueue_is_enabled(const VirtQueue *vq)
{
    return vq->enabled;
}

void virtqueue_set_enabled(VirtQueue *vq, bool enabled)
{
    vq->enabled = enabled;
}

uint16_t virtqueue_get_vector(const VirtQueue *vq)
{
    return __atomic_load_n(&vq->vector, __ATOMIC_RELAXED);
}

void virtqueue_set_vector(VirtQueue *vq, uint16_t vector)
{
    __atomic_store_n(&vq->vector, vector, __ATOMIC_RELAXED);
}

unsigned virtqueue_get_index(const VirtQueue *vq)
{
    return vq->index;
}

EventNotifier *virtqueue_get_host_notifier(VirtQueue *vq)
{
    return &vq->host_notifier;
}
