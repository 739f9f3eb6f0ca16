// Test support for the virtio suite: a synthetic guest (two RAM ranges with
// a hole between them) and a driver that negotiates features, lays out
// split rings and builds descriptor chains in it, as a guest would.
#pragma once

#include "shardvm/rcu.h"
#include "shardvm/virtio.h"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace vtest {

// Guest physical layout: RAM0 [0x10000, +1 MiB), hole, RAM1 [0x200000, +2 MiB).
constexpr uint64_t kRam0 = 0x10000, kRam0Size = 1 << 20;
constexpr uint64_t kHole = kRam0 + kRam0Size;
constexpr uint64_t kRam1 = 0x200000, kRam1Size = 2 << 20;

struct Guest {
    uint8_t *ram0, *ram1;
    GuestMemory *mem;
    uint64_t bump = kRam1;   // data buffer allocator (RAM1)

    Guest()
    {
        ram0 = static_cast<uint8_t *>(aligned_alloc(4096, kRam0Size));
        ram1 = static_cast<uint8_t *>(aligned_alloc(4096, kRam1Size));
        memset(ram0, 0, kRam0Size);
        memset(ram1, 0, kRam1Size);
        GuestMemoryRange r[2] = {{kRam0, kRam0Size, ram0}, {kRam1, kRam1Size, ram1}};
        mem = guest_memory_new(r, 2);
    }
    ~Guest()
    {
        guest_memory_free(mem);
        shardvm_rcu_drain();
        free(ram0);
        free(ram1);
    }
    void *hva(uint64_t gpa)
    {
        if (gpa >= kRam0 && gpa < kRam0 + kRam0Size) {
            return ram0 + (gpa - kRam0);
        }
        return ram1 + (gpa - kRam1);
    }
    // A buffer in RAM1, 16-byte aligned.
    uint64_t alloc(uint64_t len)
    {
        uint64_t g = bump;
        bump += (len + 15) & ~15ULL;
        if (bump > kRam1 + kRam1Size) {
            bump = kRam1;
            g = bump;
            bump += (len + 15) & ~15ULL;
        }
        return g;
    }
};

inline uint16_t Load16(const void *p)
{
    return __atomic_load_n(static_cast<const uint16_t *>(p), __ATOMIC_SEQ_CST);
}
inline void Store16(void *p, uint16_t v)
{
    __atomic_store_n(static_cast<uint16_t *>(p), v, __ATOMIC_SEQ_CST);
}

// One split queue as the driver sees it.  Rings of queue q live in RAM0 at
// kRam0 + q * 0x10000.
struct Ring {
    Guest *g = nullptr;
    VirtQueue *vq = nullptr;
    uint16_t n = 0;
    uint64_t desc = 0, avail = 0, used = 0;
    uint16_t avail_idx = 0;     // driver's shadow
    uint16_t next_desc = 0;     // next free descriptor slot (round robin)
    uint16_t last_used = 0;

    VRingDesc *Desc(unsigned i) { return static_cast<VRingDesc *>(g->hva(desc)) + i; }
    uint16_t *Avail() { return static_cast<uint16_t *>(g->hva(avail)); }
    uint8_t *Used() { return static_cast<uint8_t *>(g->hva(used)); }
    uint16_t UsedIdx() { return Load16(Used() + 2); }
    uint16_t UsedFlags() { return Load16(Used()); }
    uint16_t AvailEvent() { return Load16(Used() + 4 + 8 * n); }
    VRingUsedElem UsedElem(uint16_t i)
    {
        VRingUsedElem e;
        memcpy(&e, Used() + 4 + 8 * (i % n), sizeof(e));
        return e;
    }
    void SetAvailFlags(uint16_t f) { Store16(&Avail()[0], f); }
    void SetUsedEvent(uint16_t v) { Store16(&Avail()[2 + n], v); }

    void SetDesc(unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
    {
        VRingDesc d = {addr, len, flags, next};
        memcpy(Desc(i), &d, sizeof(d));
    }
    // Publish head @head (one avail entry).
    void Publish(uint16_t head)
    {
        Avail()[2 + avail_idx % n] = head;
        avail_idx++;
        // seq_cst store, then seq_cst loads of the device's flag / event
        // (the driver's full barrier, without a fence TSan cannot model).
        Store16(&Avail()[1], avail_idx);
    }
    // Move avail->idx without writing entries (malformed tests).
    void SetAvailIdx(uint16_t v)
    {
        avail_idx = v;
        Store16(&Avail()[1], v);
    }

    struct Buf {
        uint64_t gpa;
        uint32_t len;
        bool write;
    };
    // Build a chain of @bufs in consecutive slots and publish it.  Returns
    // the head.
    uint16_t AddChain(const std::vector<Buf> &bufs)
    {
        uint16_t head = next_desc;
        for (size_t i = 0; i < bufs.size(); i++) {
            uint16_t slot = (head + i) % n;
            bool last = i + 1 == bufs.size();
            SetDesc(slot, bufs[i].gpa, bufs[i].len,
                    (bufs[i].write ? VRING_DESC_F_WRITE : 0) | (last ? 0 : VRING_DESC_F_NEXT),
                    (slot + 1) % n);
        }
        next_desc = (head + bufs.size()) % n;
        Publish(head);
        return head;
    }
};

// Feature negotiation and queue set-up, as a driver does through the
// transport (vdev->lock held around each step).
inline void DriverInit(VirtIODevice *vdev, Guest *g, std::vector<Ring> &rings,
                       uint64_t features, uint16_t size)
{
    g_mutex_lock(&vdev->lock);
    virtio_set_status(vdev, 0);
    virtio_set_status(vdev, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    virtio_set_guest_features(vdev, features);
    virtio_set_status(vdev, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                                VIRTIO_STATUS_FEATURES_OK);
    rings.resize(vdev->num_queues);
    for (unsigned q = 0; q < vdev->num_queues; q++) {
        Ring &r = rings[q];
        r = Ring();
        r.g = g;
        r.n = size;
        r.vq = virtio_get_queue(vdev, q);
        r.desc = kRam0 + q * 0x10000;
        r.avail = r.desc + 0x4000;
        r.used = r.desc + 0x8000;
        memset(g->hva(r.desc), 0, 0x10000);
        virtqueue_set_size(r.vq, size);
        virtqueue_set_addrs(r.vq, r.desc, r.avail, r.used);
        virtqueue_set_enabled(r.vq, true);
    }
    g_mutex_unlock(&vdev->lock);
}

inline void DriverOk(VirtIODevice *vdev)
{
    g_mutex_lock(&vdev->lock);
    virtio_set_status(vdev, virtio_get_status(vdev) | VIRTIO_STATUS_DRIVER_OK);
    g_mutex_unlock(&vdev->lock);
}

inline void DriverReset(VirtIODevice *vdev)
{
    g_mutex_lock(&vdev->lock);
    virtio_set_status(vdev, 0);
    g_mutex_unlock(&vdev->lock);
}

// Counts the transport's interrupts.
struct NotifyCounter {
    std::atomic<int> queue{0}, config{0};
};

inline void CountNotify(void *opaque, VirtQueue *vq)
{
    auto *c = static_cast<NotifyCounter *>(opaque);
    (vq ? c->queue : c->config).fetch_add(1);
}

inline const VirtIOTransportOps kCountingTransport = {CountNotify};

}  // namespace vtest
