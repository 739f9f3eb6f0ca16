// virtio core: guest memory translation, every malformed descriptor shape
// (each ends in NEEDS_RESET, never a crash), status transitions, interrupt
// suppression (NO_INTERRUPT / EVENT_IDX), notification suppression, element
// pool, and the home-thread assertion.
#include "virtio-test.h"

#include "shardvm/iothread.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <thread>

using namespace vtest;

namespace {

// A device whose queues echo every chain back (used len = writable bytes).
struct TestDev {
    VirtIODevice vdev{};
    AioContext *ctx = nullptr;
    int starts = 0, stops = 0, start_ret = 0;
    bool started = false;
    unsigned popped = 0;
    std::vector<std::pair<unsigned, unsigned>> shapes;  // out_num, in_num
    uint64_t host_extra = 0;
};

TestDev *Dev(VirtIODevice *v) { return reinterpret_cast<TestDev *>(v); }

uint64_t TdFeatures(VirtIODevice *v) { return Dev(v)->host_extra; }

void TdHandler(VirtIODevice *v, VirtQueue *vq)
{
    VirtQueueElement *e;
    while ((e = virtqueue_pop(vq))) {
        Dev(v)->popped++;
        Dev(v)->shapes.push_back({e->out_num, e->in_num});
        virtqueue_push(vq, e, e->in_len);
    }
    virtqueue_flush(vq);
}

int TdStart(VirtIODevice *v)
{
    TestDev *d = Dev(v);
    d->starts++;
    if (d->start_ret < 0) {
        return d->start_ret;
    }
    for (unsigned i = 0; i < v->num_queues; i++) {
        if (virtqueue_is_enabled(v->vqs[i])) {
            virtqueue_attach(v->vqs[i], d->ctx, TdHandler);
        }
    }
    d->started = true;
    return 0;
}

void TdStop(VirtIODevice *v)
{
    TestDev *d = Dev(v);
    d->stops++;
    for (unsigned i = 0; i < v->num_queues; i++) {
        virtqueue_detach(v->vqs[i]);
    }
    d->started = false;
}

const VirtIODeviceOps kTdOps = {TdFeatures, nullptr, nullptr, TdStart, TdStop};

const uint64_t kF = (1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_F_INDIRECT_DESC);
const uint64_t kFEvent = kF | (1ULL << VIRTIO_F_EVENT_IDX);

class VirtqueueTest : public ::testing::Test {
protected:
    Guest g;
    TestDev d;
    NotifyCounter notes;
    std::vector<Ring> rings;

    void SetUp() override
    {
        shardvm_rcu_init();
        d.ctx = aio_context_new(nullptr);
        d.vdev.name = "test-dev";
        d.vdev.device_id = 42;
        d.vdev.ops = &kTdOps;
        d.vdev.mem = g.mem;
        d.vdev.transport_ops = &kCountingTransport;
        d.vdev.transport = &notes;
        virtio_device_init(&d.vdev, 1, 8);
    }
    void TearDown() override
    {
        DriverReset(&d.vdev);
        virtio_device_cleanup(&d.vdev);
        aio_context_unref(d.ctx);
    }
    void Start(uint64_t features = kF)
    {
        DriverInit(&d.vdev, &g, rings, features, 8);
        DriverOk(&d.vdev);
        Run();
    }
    void Run()
    {
        if (!aio_context_in_home_thread(d.ctx)) {
            return;  // an IOThread polls it
        }
        for (int i = 0; i < 5; i++) {
            aio_poll(d.ctx, false);
        }
    }
    // Publish, kick, run: did the device break?
    bool KickBreaks()
    {
        event_notifier_set(virtqueue_get_host_notifier(rings[0].vq));
        Run();
        return (virtio_get_status(&d.vdev) & VIRTIO_STATUS_NEEDS_RESET) != 0;
    }
    Ring &R() { return rings[0]; }
    VirtQueue *R0() { return virtio_get_queue(&d.vdev, 0); }
    void ExpectBroken()
    {
        EXPECT_TRUE(KickBreaks());
        EXPECT_EQ(notes.config.load(), 1) << "one config interrupt";
        EXPECT_EQ(R().UsedIdx(), 0) << "nothing used from a bad chain";
        // Broken: further kicks are ignored.
        R().AddChain({{g.alloc(16), 16, false}});
        EXPECT_TRUE(KickBreaks());
        EXPECT_EQ(d.popped, 0u);
        EXPECT_EQ(notes.config.load(), 1) << "logged and notified once";
    }
};

// ------------------------------------------------------------------
// Guest memory

TEST(GuestMemory, TranslateBounds)
{
    shardvm_rcu_init();
    Guest g;
    rcu_read_lock();
    EXPECT_EQ(guest_memory_translate(g.mem, kRam0, 16), g.ram0);
    EXPECT_EQ(guest_memory_translate(g.mem, kRam0 + kRam0Size - 4, 4),
              g.ram0 + kRam0Size - 4);
    EXPECT_EQ(guest_memory_translate(g.mem, kRam0 + kRam0Size - 4, 5), nullptr) << "into hole";
    EXPECT_EQ(guest_memory_translate(g.mem, kHole, 1), nullptr);
    EXPECT_EQ(guest_memory_translate(g.mem, kRam0 - 1, 2), nullptr);
    EXPECT_EQ(guest_memory_translate(g.mem, 0, 1), nullptr);
    EXPECT_EQ(guest_memory_translate(g.mem, kRam0, 0), nullptr) << "length 0";
    EXPECT_EQ(guest_memory_translate(g.mem, UINT64_MAX, 2), nullptr) << "wraps";
    EXPECT_EQ(guest_memory_translate(g.mem, kRam1, kRam1Size), g.ram1);
    EXPECT_EQ(guest_memory_translate(g.mem, kRam0, 0x100000000ULL), nullptr);
    rcu_read_unlock();
}

TEST(GuestMemory, RejectsBadTablesAndUpdatesThroughRcu)
{
    shardvm_rcu_init();
    static uint8_t a[64], b[64];
    GuestMemoryRange overlap[2] = {{0x1000, 0x100, a}, {0x10ff, 0x10, b}};
    EXPECT_EQ(guest_memory_new(overlap, 2), nullptr);
    GuestMemoryRange wrap[1] = {{UINT64_MAX - 8, 64, a}};
    EXPECT_EQ(guest_memory_new(wrap, 1), nullptr);
    GuestMemoryRange one[1] = {{0x1000, 64, a}};
    GuestMemory *gm = guest_memory_new(one, 1);
    ASSERT_NE(gm, nullptr);
    rcu_read_lock();
    EXPECT_EQ(guest_memory_translate(gm, 0x1008, 8), a + 8);
    rcu_read_unlock();
    GuestMemoryRange moved[1] = {{0x8000, 64, b}};
    EXPECT_EQ(guest_memory_update(gm, moved, 1), 0);
    EXPECT_EQ(guest_memory_update(gm, overlap, 2), -EINVAL);
    rcu_read_lock();
    EXPECT_EQ(guest_memory_translate(gm, 0x1008, 8), nullptr);
    EXPECT_EQ(guest_memory_translate(gm, 0x8008, 8), b + 8);
    rcu_read_unlock();
    guest_memory_free(gm);
    shardvm_rcu_drain();
}

// ------------------------------------------------------------------
// Well-formed chains

TEST_F(VirtqueueTest, ChainsDirectAndIndirect)
{
    Start();
    R().AddChain({{g.alloc(16), 16, false}, {g.alloc(512), 512, true}, {g.alloc(1), 1, true}});
    // Indirect table of 3 entries in RAM1.
    uint64_t t = g.alloc(48);
    VRingDesc tbl[3] = {{g.alloc(16), 16, VRING_DESC_F_NEXT, 1},
                        {g.alloc(64), 64, VRING_DESC_F_NEXT, 2},
                        {g.alloc(1), 1, VRING_DESC_F_WRITE, 0}};
    memcpy(g.hva(t), tbl, sizeof(tbl));
    R().SetDesc(3, t, 48, VRING_DESC_F_INDIRECT, 0);
    R().Publish(3);
    EXPECT_FALSE(KickBreaks());
    ASSERT_EQ(d.popped, 2u);
    EXPECT_EQ(d.shapes[0], std::make_pair(1u, 2u));
    EXPECT_EQ(d.shapes[1], std::make_pair(2u, 1u));
    EXPECT_EQ(R().UsedIdx(), 2);
    EXPECT_EQ(R().UsedElem(0).id, 0u);
    EXPECT_EQ(R().UsedElem(0).len, 513u);
    EXPECT_EQ(R().UsedElem(1).id, 3u);
}

TEST_F(VirtqueueTest, ChainOfQueueSizeIsAccepted)
{
    Start();
    std::vector<Ring::Buf> bufs;
    for (int i = 0; i < 8; i++) {
        bufs.push_back({g.alloc(8), 8, i >= 4});
    }
    R().AddChain(bufs);
    EXPECT_FALSE(KickBreaks());
    EXPECT_EQ(d.popped, 1u);
    EXPECT_EQ(d.shapes[0], std::make_pair(4u, 4u));
}

// ------------------------------------------------------------------
// Malformed chains: each ends in NEEDS_RESET

TEST_F(VirtqueueTest, LoopBreaksDevice)
{
    Start();
    R().SetDesc(0, g.alloc(8), 8, VRING_DESC_F_NEXT, 1);
    R().SetDesc(1, g.alloc(8), 8, VRING_DESC_F_NEXT, 0);
    R().Publish(0);
    ExpectBroken();
}

TEST_F(VirtqueueTest, SelfLoopBreaksDevice)
{
    Start();
    R().SetDesc(2, g.alloc(8), 8, VRING_DESC_F_NEXT, 2);
    R().Publish(2);
    ExpectBroken();
}

TEST_F(VirtqueueTest, NextIndexPastTableBreaksDevice)
{
    Start();
    R().SetDesc(0, g.alloc(8), 8, VRING_DESC_F_NEXT, 8);
    R().Publish(0);
    ExpectBroken();
}

TEST_F(VirtqueueTest, HeadPastQueueSizeBreaksDevice)
{
    Start();
    R().Publish(9);
    ExpectBroken();
}

TEST_F(VirtqueueTest, ChainLongerThanQueueBreaksDevice)
{
    Start();
    // An indirect table of 9 entries in a queue of 8.
    uint64_t t = g.alloc(9 * 16);
    for (int i = 0; i < 9; i++) {
        VRingDesc e = {g.alloc(8), 8, uint16_t(i < 8 ? VRING_DESC_F_NEXT : 0), uint16_t(i + 1)};
        memcpy(static_cast<uint8_t *>(g.hva(t)) + 16 * i, &e, 16);
    }
    R().SetDesc(0, t, 9 * 16, VRING_DESC_F_INDIRECT, 0);
    R().Publish(0);
    ExpectBroken();
}

TEST_F(VirtqueueTest, AddressPastRamBreaksDevice)
{
    Start();
    R().AddChain({{kRam1 + kRam1Size - 4, 8, false}});
    ExpectBroken();
}

TEST_F(VirtqueueTest, BufferStraddlingHoleBreaksDevice)
{
    Start();
    R().AddChain({{kRam0 + kRam0Size - 8, 16, false}});
    ExpectBroken();
}

TEST_F(VirtqueueTest, BufferInHoleBreaksDevice)
{
    Start();
    R().AddChain({{kHole + 0x100, 16, true}});
    ExpectBroken();
}

TEST_F(VirtqueueTest, ZeroLengthBreaksDevice)
{
    Start();
    R().AddChain({{g.alloc(8), 0, false}});
    ExpectBroken();
}

TEST_F(VirtqueueTest, FourGiBLengthBreaksDevice)
{
    Start();
    R().AddChain({{kRam0, 0xffffffffu, true}});
    ExpectBroken();
}

TEST_F(VirtqueueTest, WrappingAddressBreaksDevice)
{
    Start();
    R().AddChain({{UINT64_MAX - 4, 16, false}});
    ExpectBroken();
}

TEST_F(VirtqueueTest, IndirectInIndirectBreaksDevice)
{
    Start();
    uint64_t inner = g.alloc(16), outer = g.alloc(16);
    VRingDesc in = {g.alloc(8), 8, 0, 0};
    VRingDesc out = {inner, 16, VRING_DESC_F_INDIRECT, 0};
    memcpy(g.hva(inner), &in, 16);
    memcpy(g.hva(outer), &out, 16);
    R().SetDesc(0, outer, 16, VRING_DESC_F_INDIRECT, 0);
    R().Publish(0);
    ExpectBroken();
}

TEST_F(VirtqueueTest, IndirectLengthZeroBreaksDevice)
{
    Start();
    R().SetDesc(0, g.alloc(16), 0, VRING_DESC_F_INDIRECT, 0);
    R().Publish(0);
    ExpectBroken();
}

TEST_F(VirtqueueTest, IndirectLengthNotMultipleOf16BreaksDevice)
{
    Start();
    uint64_t t = g.alloc(32);
    VRingDesc e = {g.alloc(8), 8, 0, 0};
    memcpy(g.hva(t), &e, 16);
    R().SetDesc(0, t, 24, VRING_DESC_F_INDIRECT, 0);
    R().Publish(0);
    ExpectBroken();
}

TEST_F(VirtqueueTest, IndirectNextOutsideTableBreaksDevice)
{
    Start();
    uint64_t t = g.alloc(32);
    VRingDesc e[2] = {{g.alloc(8), 8, VRING_DESC_F_NEXT, 1},
                      {g.alloc(8), 8, VRING_DESC_F_NEXT, 2}};
    memcpy(g.hva(t), e, 32);
    R().SetDesc(0, t, 32, VRING_DESC_F_INDIRECT, 0);
    R().Publish(0);
    ExpectBroken();
}

TEST_F(VirtqueueTest, IndirectTableInHoleBreaksDevice)
{
    Start();
    R().SetDesc(0, kHole, 32, VRING_DESC_F_INDIRECT, 0);
    R().Publish(0);
    ExpectBroken();
}

TEST_F(VirtqueueTest, IndirectWithoutFeatureBreaksDevice)
{
    Start(1ULL << VIRTIO_F_VERSION_1);
    uint64_t t = g.alloc(16);
    VRingDesc e = {g.alloc(8), 8, 0, 0};
    memcpy(g.hva(t), &e, 16);
    R().SetDesc(0, t, 16, VRING_DESC_F_INDIRECT, 0);
    R().Publish(0);
    ExpectBroken();
}

TEST_F(VirtqueueTest, IndirectWithNextBreaksDevice)
{
    Start();
    uint64_t t = g.alloc(16);
    VRingDesc e = {g.alloc(8), 8, 0, 0};
    memcpy(g.hva(t), &e, 16);
    R().SetDesc(0, t, 16, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT, 1);
    R().SetDesc(1, g.alloc(8), 8, 0, 0);
    R().Publish(0);
    ExpectBroken();
}

TEST_F(VirtqueueTest, ReadableAfterWritableBreaksDevice)
{
    Start();
    R().AddChain({{g.alloc(8), 8, false}, {g.alloc(8), 8, true}, {g.alloc(8), 8, false}});
    ExpectBroken();
}

TEST_F(VirtqueueTest, AvailIdxJumpingAheadBreaksDevice)
{
    Start();
    R().SetAvailIdx(9);  // queue of 8, nothing consumed
    ExpectBroken();
}

TEST_F(VirtqueueTest, RingsOutsideRamBreakDevice)
{
    DriverInit(&d.vdev, &g, rings, kF, 8);
    g_mutex_lock(&d.vdev.lock);
    virtqueue_set_addrs(R().vq, kHole, R().avail, R().used);
    g_mutex_unlock(&d.vdev.lock);
    DriverOk(&d.vdev);
    Run();
    EXPECT_TRUE(KickBreaks());
}

TEST_F(VirtqueueTest, ResetRecoversFromNeedsReset)
{
    Start();
    R().SetAvailIdx(100);
    EXPECT_TRUE(KickBreaks());
    DriverReset(&d.vdev);
    EXPECT_EQ(virtio_get_status(&d.vdev), 0);
    Start();
    R().AddChain({{g.alloc(8), 8, true}});
    EXPECT_FALSE(KickBreaks());
    EXPECT_EQ(d.popped, 1u);
}

// ------------------------------------------------------------------
// Status and features

TEST_F(VirtqueueTest, FeaturesOkRefusedWithoutVersion1)
{
    g_mutex_lock(&d.vdev.lock);
    virtio_set_status(&d.vdev, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    virtio_set_guest_features(&d.vdev, 1ULL << VIRTIO_F_INDIRECT_DESC);
    virtio_set_status(&d.vdev, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                                   VIRTIO_STATUS_FEATURES_OK);
    EXPECT_FALSE(virtio_get_status(&d.vdev) & VIRTIO_STATUS_FEATURES_OK);
    // DRIVER_OK without FEATURES_OK does not start the device.
    virtio_set_status(&d.vdev, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                                   VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
    EXPECT_FALSE(virtio_get_status(&d.vdev) & VIRTIO_STATUS_DRIVER_OK);
    EXPECT_EQ(d.starts, 0);
    g_mutex_unlock(&d.vdev.lock);
}

TEST_F(VirtqueueTest, FeaturesOkRefusedForUnofferedBits)
{
    g_mutex_lock(&d.vdev.lock);
    virtio_set_status(&d.vdev, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    virtio_set_guest_features(&d.vdev, kF | (1ULL << 5));
    virtio_set_status(&d.vdev, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                                   VIRTIO_STATUS_FEATURES_OK);
    EXPECT_FALSE(virtio_get_status(&d.vdev) & VIRTIO_STATUS_FEATURES_OK);
    // Retry with a subset: accepted, then the features are frozen.
    virtio_set_guest_features(&d.vdev, kF);
    virtio_set_status(&d.vdev, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                                   VIRTIO_STATUS_FEATURES_OK);
    EXPECT_TRUE(virtio_get_status(&d.vdev) & VIRTIO_STATUS_FEATURES_OK);
    virtio_set_guest_features(&d.vdev, kFEvent);
    EXPECT_EQ(d.vdev.guest_features, kF);
    g_mutex_unlock(&d.vdev.lock);
}

TEST_F(VirtqueueTest, HostFeaturesIncludeCoreBits)
{
    EXPECT_EQ(d.vdev.host_features & kFEvent, kFEvent);
}

TEST_F(VirtqueueTest, DriverOkStartsAndResetStopsAndClearsQueues)
{
    Start(kFEvent);
    EXPECT_EQ(d.starts, 1);
    EXPECT_TRUE(d.started);
    EXPECT_EQ(virtqueue_get_context(R().vq), d.ctx);
    g_mutex_lock(&d.vdev.lock);
    virtqueue_set_vector(R().vq, 3);
    g_mutex_unlock(&d.vdev.lock);
    R().AddChain({{g.alloc(8), 8, true}});
    EXPECT_FALSE(KickBreaks());
    int stops = d.stops;
    DriverReset(&d.vdev);
    EXPECT_EQ(d.stops, stops + 1);
    EXPECT_FALSE(d.started);
    EXPECT_EQ(virtio_get_status(&d.vdev), 0);
    EXPECT_EQ(d.vdev.guest_features, 0u);
    EXPECT_FALSE(virtqueue_is_enabled(R().vq));
    EXPECT_EQ(virtqueue_get_size(R().vq), 8);
    EXPECT_EQ(virtqueue_get_vector(R().vq), VIRTIO_NO_VECTOR);
    uint64_t a, b, c;
    virtqueue_get_addrs(R().vq, &a, &b, &c);
    EXPECT_EQ(a | b | c, 0u);
    EXPECT_EQ(virtqueue_get_context(R().vq), nullptr);
    // The ring starts over at index 0 after re-initialisation.
    Start();
    R().AddChain({{g.alloc(8), 8, true}});
    EXPECT_FALSE(KickBreaks());
    EXPECT_EQ(R().UsedIdx(), 1);
}

TEST_F(VirtqueueTest, StartFailureSetsNeedsReset)
{
    d.start_ret = -ENOMEM;
    Start();
    EXPECT_TRUE(virtio_get_status(&d.vdev) & VIRTIO_STATUS_NEEDS_RESET);
    EXPECT_EQ(notes.config.load(), 1);
}

TEST_F(VirtqueueTest, NeedsResetIsStickyUntilReset)
{
    Start();
    virtio_error(&d.vdev, "test %d", 1);
    g_mutex_lock(&d.vdev.lock);
    virtio_set_status(&d.vdev, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                                   VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
    EXPECT_TRUE(virtio_get_status(&d.vdev) & VIRTIO_STATUS_NEEDS_RESET);
    g_mutex_unlock(&d.vdev.lock);
    virtio_error(&d.vdev, "again");
    EXPECT_EQ(notes.config.load(), 1);
}

TEST_F(VirtqueueTest, QueueSizeMustBePowerOfTwoWithinMax)
{
    g_mutex_lock(&d.vdev.lock);
    virtqueue_set_size(R0(), 6);
    EXPECT_EQ(virtqueue_get_size(R0()), 0);
    virtqueue_set_size(R0(), 16);
    EXPECT_EQ(virtqueue_get_size(R0()), 0);
    virtqueue_set_size(R0(), 4);
    EXPECT_EQ(virtqueue_get_size(R0()), 4);
    EXPECT_EQ(virtqueue_get_max_size(R0()), 8);
    EXPECT_EQ(virtio_get_queue(&d.vdev, 1), nullptr);
    g_mutex_unlock(&d.vdev.lock);
}

// ------------------------------------------------------------------
// Interrupt decisions

TEST_F(VirtqueueTest, FlushBatchesAndInterruptsOnce)
{
    Start();
    for (int i = 0; i < 3; i++) {
        R().AddChain({{g.alloc(8), 8, true}});
    }
    EXPECT_FALSE(KickBreaks());
    EXPECT_EQ(R().UsedIdx(), 3);
    EXPECT_EQ(notes.queue.load(), 1) << "three pushes, one flush, one interrupt";
}

TEST_F(VirtqueueTest, NoInterruptFlagSuppresses)
{
    Start();
    R().SetAvailFlags(VRING_AVAIL_F_NO_INTERRUPT);
    R().AddChain({{g.alloc(8), 8, true}});
    EXPECT_FALSE(KickBreaks());
    EXPECT_EQ(R().UsedIdx(), 1);
    EXPECT_EQ(notes.queue.load(), 0);
    R().SetAvailFlags(0);
    R().AddChain({{g.alloc(8), 8, true}});
    EXPECT_FALSE(KickBreaks());
    EXPECT_EQ(notes.queue.load(), 1);
}

TEST_F(VirtqueueTest, EventIdxUsedEvent)
{
    Start(kFEvent);
    // First flush always interrupts (nothing signalled yet).
    R().SetUsedEvent(100);
    R().AddChain({{g.alloc(8), 8, true}});
    EXPECT_FALSE(KickBreaks());
    EXPECT_EQ(notes.queue.load(), 1);
    // used_event far ahead: no interrupt for entries 1 and 2.
    R().AddChain({{g.alloc(8), 8, true}});
    EXPECT_FALSE(KickBreaks());
    R().AddChain({{g.alloc(8), 8, true}});
    EXPECT_FALSE(KickBreaks());
    EXPECT_EQ(R().UsedIdx(), 3);
    EXPECT_EQ(notes.queue.load(), 1);
    // used_event = 3: interrupt when used idx moves past 3 (to 4).
    R().SetUsedEvent(3);
    R().AddChain({{g.alloc(8), 8, true}});
    EXPECT_FALSE(KickBreaks());
    EXPECT_EQ(notes.queue.load(), 2);
    // Already past: used_event 3 again, idx 4 -> 5: no interrupt.
    R().AddChain({{g.alloc(8), 8, true}});
    EXPECT_FALSE(KickBreaks());
    EXPECT_EQ(notes.queue.load(), 2);
    // The device asks to be kicked after what it took (avail_event).
    EXPECT_EQ(R().AvailEvent(), 5);
}

TEST(VringNeedEvent, Arithmetic)
{
    EXPECT_TRUE(vring_need_event(0, 1, 0));
    EXPECT_FALSE(vring_need_event(1, 1, 0));
    EXPECT_TRUE(vring_need_event(5, 8, 3));
    EXPECT_FALSE(vring_need_event(9, 8, 3));
    EXPECT_TRUE(vring_need_event(0xffff, 2, 0xfffe)) << "wraps";
}

// ------------------------------------------------------------------
// Notification suppression (busy polling)

TEST_F(VirtqueueTest, SetNotificationFlagAndRecheck)
{
    Start();
    EXPECT_TRUE(virtqueue_get_notification(R().vq)) << "on after start";
    virtqueue_set_notification(R().vq, false);
    EXPECT_EQ(R().UsedFlags() & VRING_USED_F_NO_NOTIFY, VRING_USED_F_NO_NOTIFY);
    EXPECT_FALSE(virtqueue_get_notification(R().vq));
    // An entry published while suppressed is reported on re-enable.
    R().AddChain({{g.alloc(8), 8, true}});
    EXPECT_TRUE(virtqueue_set_notification(R().vq, true));
    EXPECT_EQ(R().UsedFlags() & VRING_USED_F_NO_NOTIFY, 0);
    EXPECT_TRUE(virtqueue_get_notification(R().vq));
    // The guest did not kick for it: the caller processes it (aio_poll's
    // last io_poll after poll_notify(false) does; here the test does).
    EXPECT_FALSE(KickBreaks());
    EXPECT_EQ(d.popped, 1u);
    EXPECT_FALSE(virtqueue_set_notification(R().vq, true));
}

TEST_F(VirtqueueTest, SetNotificationEventIdx)
{
    Start(kFEvent);
    virtqueue_set_notification(R().vq, false);
    R().AddChain({{g.alloc(8), 8, true}});
    R().AddChain({{g.alloc(8), 8, true}});
    EXPECT_EQ(R().UsedFlags(), 0) << "EVENT_IDX uses avail_event, not the flag";
    EXPECT_TRUE(virtqueue_set_notification(R().vq, true));
    EXPECT_EQ(R().AvailEvent(), 2);
}

// Busy polling in an IOThread: while it polls, poll_notify suppresses
// guest kicks (VRING_USED_F_NO_NOTIFY); a driver that kicks only when the
// flag is clear (after a full barrier, as the spec says) loses no request.
TEST_F(VirtqueueTest, BusyPollingSuppressionLosesNoRequest)
{
    IOThread *iot = iothread_new("vq-poll", nullptr, nullptr);
    ASSERT_NE(iot, nullptr);
    aio_context_set_poll_params(iothread_get_aio_context(iot), 1000000000LL, 0, 0);
    aio_context_unref(d.ctx);
    d.ctx = iothread_get_aio_context(iot);
    aio_context_ref(d.ctx);
    Start();
    int kicks = 0, suppressed = 0;
    for (int i = 0; i < 100; i++) {
        R().AddChain({{g.alloc(8), 8, true}});  // publish + full barrier
        if (R().UsedFlags() & VRING_USED_F_NO_NOTIFY) {
            suppressed++;
        } else {
            kicks++;
            event_notifier_set(virtqueue_get_host_notifier(R().vq));
        }
        // Hang guard only (no timing is asserted).
        gint64 until = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
        while (R().UsedIdx() != uint16_t(i + 1) && g_get_monotonic_time() < until) {
            sched_yield();
        }
        ASSERT_EQ(R().UsedIdx(), uint16_t(i + 1)) << "request " << i << " lost";
    }
    printf("kicks %d, suppressed %d\n", kicks, suppressed);
    DriverReset(&d.vdev);
    iothread_free(iot);
}

// ------------------------------------------------------------------
// Element pool and thread ownership

TEST_F(VirtqueueTest, ElementsComeFromPoolOnceWarm)
{
    Start();
    R().AddChain({{g.alloc(8), 8, true}});
    EXPECT_FALSE(KickBreaks());
    VirtQueueElement *seen = nullptr;
    // Pop manually from the home thread (the test's) and check reuse.
    for (int i = 0; i < 3; i++) {
        R().AddChain({{g.alloc(8), 8, false}, {g.alloc(8), 8, true}});
        VirtQueueElement *e = virtqueue_pop(R().vq);
        ASSERT_NE(e, nullptr);
        if (seen) {
            EXPECT_EQ(e, seen) << "same pooled element";
        }
        seen = e;
        EXPECT_EQ(virtqueue_in_flight(R().vq), 1u);
        virtqueue_push(R().vq, e, 8);
        virtqueue_flush(R().vq);
    }
    event_notifier_test_and_clear(virtqueue_get_host_notifier(R().vq));
}

// ------------------------------------------------------------------
// Attacks (a hostile guest)

// A driver cannot have more than queue-size chains outstanding; a guest that
// republishes a head still in flight would grow the device's in-flight
// state (elements, block requests) without bound.  It breaks the device.
TEST_F(VirtqueueTest, MoreHeadsInFlightThanQueueSizeBreaksDevice)
{
    Start();
    R().SetDesc(0, g.alloc(8), 8, VRING_DESC_F_WRITE, 0);
    std::vector<VirtQueueElement *> held;
    for (int i = 0; i < 8; i++) {
        R().Publish(0);
        VirtQueueElement *e = virtqueue_pop(R().vq);
        ASSERT_NE(e, nullptr) << i;
        held.push_back(e);
    }
    EXPECT_FALSE(virtio_get_status(&d.vdev) & VIRTIO_STATUS_NEEDS_RESET);
    R().Publish(0);  // the ninth head while eight are in flight
    VirtQueueElement *e = virtqueue_pop(R().vq);
    EXPECT_EQ(e, nullptr) << "more heads in flight than the queue has";
    if (e) {
        held.push_back(e);
    }
    EXPECT_TRUE(virtio_get_status(&d.vdev) & VIRTIO_STATUS_NEEDS_RESET);
    EXPECT_EQ(virtqueue_in_flight(R().vq), 8u);
    for (VirtQueueElement *x : held) {
        virtqueue_detach_element(R().vq, x);
    }
    event_notifier_test_and_clear(virtqueue_get_host_notifier(R().vq));
}

// The 16-bit avail and used indices wrap (65535 -> 0) under EVENT_IDX:
// nothing is lost and the guest is interrupted exactly when its
// used_event asks (once per batch here).
TEST_F(VirtqueueTest, IndicesWrapWithEventIdx)
{
    Start(kFEvent);
    uint64_t buf = g.alloc(8);
    const int batches = 70000 / 8 + 1;
    int before = notes.queue.load();
    for (int b = 0; b < batches; b++) {
        // Interrupt me when the device moves past what I have seen.
        R().SetUsedEvent(R().UsedIdx());
        for (int i = 0; i < 8; i++) {
            R().SetDesc(i, buf, 8, VRING_DESC_F_WRITE, 0);
            R().Publish(uint16_t(i));
        }
        event_notifier_set(virtqueue_get_host_notifier(R().vq));
        aio_poll(d.ctx, false);
        ASSERT_EQ(R().UsedIdx(), uint16_t((b + 1) * 8)) << "batch " << b;
        ASSERT_FALSE(virtio_get_status(&d.vdev) & VIRTIO_STATUS_NEEDS_RESET);
    }
    EXPECT_EQ(notes.queue.load() - before, batches);
    EXPECT_EQ(d.popped, unsigned(batches * 8));
}

// virtio-blk's reset drains inside a run_sync BH: a blocking aio_poll()
// nested in a BH must run the BHs queued behind it in the same batch
// (here: the completion the drain waits for), not sleep.
TEST(AioNested, BlockingPollInBhRunsBhsQueuedBehindIt)
{
    AioContext *ctx = aio_context_new(nullptr);
    static bool completed;
    completed = false;
    std::atomic<bool> done{false};
    std::thread watchdog([&] {  // hang guard only
        for (int i = 0; i < 2000 && !done; i++) {
            g_usleep(10000);
        }
        if (!done) {
            fprintf(stderr, "nested aio_poll slept with a BH ready behind it\n");
            _exit(1);
        }
    });
    aio_bh_schedule_oneshot(ctx, [](void *c) {
        while (!completed) {
            aio_poll(static_cast<AioContext *>(c), true);
        }
    }, ctx);
    aio_bh_schedule_oneshot(ctx, [](void *) { completed = true; }, nullptr);
    aio_poll(ctx, true);
    EXPECT_TRUE(completed);
    done = true;
    watchdog.join();
    aio_context_unref(ctx);
}

// Ranges that end exactly at 2^64 still may not overlap the next one.
TEST(GuestMemory, OverlapWithRangeEndingAt2Pow64IsRefused)
{
    shardvm_rcu_init();
    static uint8_t a[64], b[64];
    GuestMemoryRange r[2] = {{UINT64_MAX - 0xfff, 0x1000, a}, {UINT64_MAX - 0xf, 0x10, b}};
    GuestMemory *gm = guest_memory_new(r, 2);
    EXPECT_EQ(gm, nullptr);
    guest_memory_free(gm);
}

// The guest writes a queue's MSI-X vector at any time (vCPU thread, under
// vdev->lock) while the queue's IOThread interrupts through it: no data
// race (TSan).
void VectorNotify(void *opaque, VirtQueue *vq)
{
    auto *c = static_cast<NotifyCounter *>(opaque);
    if (vq) {
        (void)virtqueue_get_vector(vq);
        c->queue.fetch_add(1);
    } else {
        c->config.fetch_add(1);
    }
}
const VirtIOTransportOps kVectorTransport = {VectorNotify};

TEST_F(VirtqueueTest, VectorRewrittenWhileIOThreadInterrupts)
{
    IOThread *iot = iothread_new("vq-vec", nullptr, nullptr);
    ASSERT_NE(iot, nullptr);
    aio_context_unref(d.ctx);
    d.ctx = iothread_get_aio_context(iot);
    aio_context_ref(d.ctx);
    d.vdev.transport_ops = &kVectorTransport;
    Start();
    for (int i = 0; i < 50; i++) {
        R().AddChain({{g.alloc(8), 8, true}});
        event_notifier_set(virtqueue_get_host_notifier(R().vq));
        g_mutex_lock(&d.vdev.lock);
        virtqueue_set_vector(R().vq, uint16_t(i & 3));
        g_mutex_unlock(&d.vdev.lock);
        gint64 until = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;  // hang guard
        while (R().UsedIdx() != uint16_t(i + 1) && g_get_monotonic_time() < until) {
            sched_yield();
        }
        ASSERT_EQ(R().UsedIdx(), uint16_t(i + 1));
    }
    DriverReset(&d.vdev);
    iothread_free(iot);
}

#ifndef NDEBUG
TEST_F(VirtqueueTest, PopFromForeignThreadAsserts)
{
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    Start();
    EXPECT_DEATH(
        {
            std::thread t([&] { virtqueue_pop(R().vq); });
            t.join();
        },
        "");
}
// Push and detach check their thread like pop does (a device that completes
// from the wrong thread would race the queue's home context).
TEST_F(VirtqueueTest, PushFromForeignThreadAsserts)
{
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    Start();
    R().AddChain({{g.alloc(8), 8, true}});
    VirtQueueElement *e = virtqueue_pop(R().vq);
    ASSERT_NE(e, nullptr);
    EXPECT_DEATH(
        {
            std::thread t([&] { virtqueue_push(R().vq, e, 8); });
            t.join();
        },
        "");
    virtqueue_push(R().vq, e, 8);
    virtqueue_flush(R().vq);
    EXPECT_EQ(R().UsedIdx(), 1);
    event_notifier_test_and_clear(virtqueue_get_host_notifier(R().vq));
}

TEST_F(VirtqueueTest, DetachFromForeignThreadAsserts)
{
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    Start();
    R().AddChain({{g.alloc(8), 8, true}});
    VirtQueueElement *e = virtqueue_pop(R().vq);
    ASSERT_NE(e, nullptr);
    EXPECT_DEATH(
        {
            std::thread t([&] { virtqueue_detach_element(R().vq, e); });
            t.join();
        },
        "");
    virtqueue_detach_element(R().vq, e);
    EXPECT_EQ(virtqueue_in_flight(R().vq), 0u);
    event_notifier_test_and_clear(virtqueue_get_host_notifier(R().vq));
}

#endif

// An empty guest memory (no RAM registered yet) translates nothing: the
// search must not look at a first range that is not there (ASan).
TEST(GuestMemory, EmptyTableTranslatesNothing)
{
    shardvm_rcu_init();
    GuestMemory *gm = guest_memory_new(nullptr, 0);
    ASSERT_NE(gm, nullptr);
    rcu_read_lock();
    for (uint64_t gpa : {uint64_t(0), uint64_t(0x1000), uint64_t(0x100000), uint64_t(UINT64_MAX - 16)}) {
        EXPECT_EQ(guest_memory_translate(gm, gpa, 8), nullptr) << gpa;
    }
    rcu_read_unlock();
    guest_memory_free(gm);
    shardvm_rcu_drain();
}

}  // namespace
