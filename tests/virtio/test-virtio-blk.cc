// virtio-blk over a RAM-disk block layer (fake-block.cc): requests in an
// IOThread, status bytes, GET_ID, out-of-range IOERR, UNSUPP, data round
// trips, discard / write-zeroes, config space, two queues on two IOThreads,
// the device without an IOThread, one plug per pass, reset with requests in
// flight, and -device property parsing.
#include "fake-block.h"
#include "virtio-test.h"

#include "shardvm/iothread.h"
#include "shardvm/main-loop.h"
#include "shardvm/virtio-blk.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <thread>

using namespace vtest;

namespace {

constexpr uint64_t kDiskSize = 1 << 20;  // 2048 sectors

struct Req {
    uint32_t type, ioprio;
    uint64_t sector;
};

class VirtioBlkTest : public ::testing::Test {
protected:
    Guest g;
    NotifyCounter notes;
    std::vector<Ring> rings;
    std::vector<IOThread *> iots;
    AioContext *main_ctx = nullptr;   // the "main loop" (this thread)
    BlockBackend *blk = nullptr;
    VirtIOBlock *s = nullptr;
    VirtIODevice *vdev = nullptr;
    VirtIOBlockConfig cfg;
    int max_queues = 1 << 30;  // the fake block layer's limit (Create)

    void SetUp() override
    {
        shardvm_rcu_init();
        virtio_blk_config_init(&cfg);
        cfg.serial = g_strdup("sn-42");
        main_ctx = aio_context_new(nullptr);
    }
    void TearDown() override
    {
        if (s) {
            DriverReset(vdev);
            virtio_blk_free(s);
        }
        for (IOThread *t : iots) {
            iothread_free(t);
        }
        if (blk) {
            EXPECT_EQ(blk->wrong_thread.load(), 0) << "requests only in their queue's thread";
            EXPECT_EQ(blk->queues.load(), 0);
            blk_unref(blk);
        }
        aio_context_unref(main_ctx);
        virtio_blk_config_clear(&cfg);
    }

    // @iothreads: number of IOThreads (0: main loop); queues round-robin.
    // @ring: the driver's queue size.
    void Create(unsigned queues, unsigned iothreads, bool ro = false, uint64_t features = 0,
                uint16_t ring = 64)
    {
        blk = fake_blk_new(kDiskSize, ro);
        blk->max_queues = max_queues;
        cfg.num_queues = queues;
        std::vector<AioContext *> ctxs;
        for (unsigned i = 0; i < iothreads; i++) {
            char id[16];
            snprintf(id, sizeof(id), "blk%u", i);
            iots.push_back(iothread_new(id, nullptr, nullptr));
        }
        for (unsigned i = 0; i < queues; i++) {
            ctxs.push_back(iothreads ? iothread_get_aio_context(iots[i % iothreads]) : main_ctx);
        }
        GError *err = nullptr;
        s = virtio_blk_new(&cfg, blk, ctxs.data(), g.mem, &err);
        ASSERT_NE(s, nullptr) << (err ? err->message : "");
        vdev = virtio_blk_get_vdev(s);
        vdev->transport_ops = &kCountingTransport;
        vdev->transport = &notes;
        EXPECT_EQ(vdev->device_id, VIRTIO_ID_BLOCK);
        DriverInit(vdev, &g, rings, features ? features : vdev->host_features, ring);
        DriverOk(vdev);
        if (max_queues == 1 << 30) {
            ASSERT_FALSE(virtio_get_status(vdev) & VIRTIO_STATUS_NEEDS_RESET);
        }
    }

    void Kick(Ring &r) { event_notifier_set(virtqueue_get_host_notifier(r.vq)); }

    void Wait(Ring &r, uint16_t used)
    {
        gint64 until = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;  // hang guard
        while (r.UsedIdx() != used && g_get_monotonic_time() < until) {
            aio_poll(main_ctx, false);
            sched_yield();
        }
        ASSERT_EQ(r.UsedIdx(), used);
    }

    // Queue one request without kicking; returns the gpa of its status byte.
    uint64_t Queue(Ring &r, uint32_t type, uint64_t sector, std::vector<Ring::Buf> data)
    {
        uint64_t h = g.alloc(16), st = g.alloc(1);
        Req hdr = {type, 0, sector};
        memcpy(g.hva(h), &hdr, 16);
        *static_cast<uint8_t *>(g.hva(st)) = 0xff;
        std::vector<Ring::Buf> bufs = {{h, 16, false}};
        bufs.insert(bufs.end(), data.begin(), data.end());
        bufs.push_back({st, 1, true});
        r.AddChain(bufs);
        return st;
    }

    // One request, completed: its status byte.
    uint8_t Do(uint32_t type, uint64_t sector, std::vector<Ring::Buf> data, unsigned q = 0)
    {
        Ring &r = rings[q];
        uint64_t st = Queue(r, type, sector, data);
        uint16_t want = r.avail_idx;
        Kick(r);
        Wait(r, want);
        return *static_cast<uint8_t *>(g.hva(st));
    }

    uint64_t Pattern(uint32_t len, uint8_t seed)
    {
        uint64_t a = g.alloc(len);
        for (uint32_t i = 0; i < len; i++) {
            static_cast<uint8_t *>(g.hva(a))[i] = uint8_t(seed + i * 7);
        }
        return a;
    }
};

TEST_F(VirtioBlkTest, WriteReadRoundTripInIOThread)
{
    Create(1, 1);
    uint64_t w = Pattern(4096, 3);
    EXPECT_EQ(Do(VIRTIO_BLK_T_OUT, 8, {{w, 1024, false}, {w + 1024, 3072, false}}), VIRTIO_BLK_S_OK);
    EXPECT_EQ(memcmp(blk->data + 8 * 512, g.hva(w), 4096), 0);
    uint64_t rd = g.alloc(4096);
    EXPECT_EQ(Do(VIRTIO_BLK_T_IN, 8, {{rd, 512, true}, {rd + 512, 3584, true}}), VIRTIO_BLK_S_OK);
    EXPECT_EQ(memcmp(g.hva(rd), g.hva(w), 4096), 0);
    EXPECT_EQ(rings[0].UsedElem(1).len, 4097u) << "used len: data + status";
    EXPECT_GE(notes.queue.load(), 1);
}

TEST_F(VirtioBlkTest, GetIdReturnsSerial)
{
    Create(1, 1);
    uint64_t id = g.alloc(20);
    memset(g.hva(id), 0xaa, 20);
    EXPECT_EQ(Do(VIRTIO_BLK_T_GET_ID, 0, {{id, 20, true}}), VIRTIO_BLK_S_OK);
    char want[20] = "sn-42";
    EXPECT_EQ(memcmp(g.hva(id), want, 20), 0);
}

TEST_F(VirtioBlkTest, GetIdLongSerialTruncatedTo20Bytes)
{
    g_free(cfg.serial);
    cfg.serial = g_strdup("0123456789abcdefghijKLMN");
    Create(1, 1);
    uint64_t id = g.alloc(32);
    memset(g.hva(id), 0xaa, 32);
    EXPECT_EQ(Do(VIRTIO_BLK_T_GET_ID, 0, {{id, 32, true}}), VIRTIO_BLK_S_OK);
    EXPECT_EQ(memcmp(g.hva(id), "0123456789abcdefghij", 20), 0);
    EXPECT_EQ(static_cast<uint8_t *>(g.hva(id))[20], 0xaa);
}

TEST_F(VirtioBlkTest, OutOfRangeIsIoErr)
{
    Create(1, 1);
    uint64_t b = g.alloc(1024);
    EXPECT_EQ(Do(VIRTIO_BLK_T_IN, kDiskSize / 512, {{b, 512, true}}), VIRTIO_BLK_S_IOERR);
    EXPECT_EQ(Do(VIRTIO_BLK_T_IN, kDiskSize / 512 - 1, {{b, 1024, true}}), VIRTIO_BLK_S_IOERR);
    EXPECT_EQ(Do(VIRTIO_BLK_T_OUT, UINT64_MAX / 512 + 1, {{b, 512, false}}), VIRTIO_BLK_S_IOERR)
        << "sector * 512 overflows";
    EXPECT_EQ(Do(VIRTIO_BLK_T_IN, UINT64_MAX / 512, {{b, 512, true}}), VIRTIO_BLK_S_IOERR);
    EXPECT_EQ(Do(VIRTIO_BLK_T_IN, 0, {{b, 100, true}}), VIRTIO_BLK_S_IOERR) << "not whole sectors";
    EXPECT_EQ(Do(VIRTIO_BLK_T_IN, kDiskSize / 512 - 1, {{b, 512, true}}), VIRTIO_BLK_S_OK);
    EXPECT_FALSE(virtio_get_status(vdev) & VIRTIO_STATUS_NEEDS_RESET);
}

TEST_F(VirtioBlkTest, UnknownTypesAreUnsupp)
{
    Create(1, 1);
    uint64_t b = g.alloc(512);
    EXPECT_EQ(Do(99, 0, {{b, 512, true}}), VIRTIO_BLK_S_UNSUPP);
    EXPECT_EQ(Do(VIRTIO_BLK_T_GET_LIFETIME, 0, {{b, 16, true}}), VIRTIO_BLK_S_UNSUPP);
}

TEST_F(VirtioBlkTest, FlushAndHostError)
{
    Create(1, 1);
    EXPECT_EQ(Do(VIRTIO_BLK_T_FLUSH, 0, {}), VIRTIO_BLK_S_OK);
    EXPECT_EQ(blk->flushes.load(), 1);
    blk->fail = -EIO;
    uint64_t b = g.alloc(512);
    EXPECT_EQ(Do(VIRTIO_BLK_T_IN, 0, {{b, 512, true}}), VIRTIO_BLK_S_IOERR);
    EXPECT_EQ(Do(VIRTIO_BLK_T_FLUSH, 0, {}), VIRTIO_BLK_S_IOERR);
    blk->fail = 0;
    EXPECT_EQ(Do(VIRTIO_BLK_T_IN, 0, {{b, 512, true}}), VIRTIO_BLK_S_OK);
}

TEST_F(VirtioBlkTest, DiscardAndWriteZeroes)
{
    Create(1, 1);
    memset(blk->data, 0x55, 8192);
    struct Seg {
        uint64_t sector;
        uint32_t num, flags;
    };
    uint64_t seg = g.alloc(16);
    *static_cast<Seg *>(g.hva(seg)) = {2, 4, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP};
    EXPECT_EQ(Do(VIRTIO_BLK_T_WRITE_ZEROES, 0, {{seg, 16, false}}), VIRTIO_BLK_S_OK);
    EXPECT_EQ(blk->data[2 * 512 - 1], 0x55);
    EXPECT_EQ(blk->data[2 * 512], 0);
    EXPECT_EQ(blk->data[6 * 512 - 1], 0);
    EXPECT_EQ(blk->data[6 * 512], 0x55);
    EXPECT_EQ(blk->unmaps.load(), 1);
    *static_cast<Seg *>(g.hva(seg)) = {0, 1, 2};
    EXPECT_EQ(Do(VIRTIO_BLK_T_WRITE_ZEROES, 0, {{seg, 16, false}}), VIRTIO_BLK_S_UNSUPP);
    *static_cast<Seg *>(g.hva(seg)) = {0, 8, 0};
    EXPECT_EQ(Do(VIRTIO_BLK_T_DISCARD, 0, {{seg, 16, false}}), VIRTIO_BLK_S_OK);
    EXPECT_EQ(blk->discards.load(), 1);
    *static_cast<Seg *>(g.hva(seg)) = {0, 8, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP};
    EXPECT_EQ(Do(VIRTIO_BLK_T_DISCARD, 0, {{seg, 16, false}}), VIRTIO_BLK_S_UNSUPP);
    *static_cast<Seg *>(g.hva(seg)) = {kDiskSize / 512 - 1, 2, 0};
    EXPECT_EQ(Do(VIRTIO_BLK_T_DISCARD, 0, {{seg, 16, false}}), VIRTIO_BLK_S_IOERR);
}

TEST_F(VirtioBlkTest, DiscardOffIsUnsupp)
{
    cfg.discard = false;
    Create(1, 1);
    EXPECT_FALSE(vdev->host_features & (1ULL << VIRTIO_BLK_F_DISCARD));
    uint64_t seg = g.alloc(16);
    memset(g.hva(seg), 0, 16);
    EXPECT_EQ(Do(VIRTIO_BLK_T_DISCARD, 0, {{seg, 16, false}}), VIRTIO_BLK_S_UNSUPP);
}

TEST_F(VirtioBlkTest, ReadOnlyRefusesWrites)
{
    Create(1, 1, true);
    EXPECT_TRUE(vdev->host_features & (1ULL << VIRTIO_BLK_F_RO));
    uint64_t b = Pattern(512, 1);
    EXPECT_EQ(Do(VIRTIO_BLK_T_OUT, 0, {{b, 512, false}}), VIRTIO_BLK_S_IOERR);
    EXPECT_EQ(Do(VIRTIO_BLK_T_IN, 0, {{b, 512, true}}), VIRTIO_BLK_S_OK);
}

TEST_F(VirtioBlkTest, MissingStatusByteBreaksDevice)
{
    Create(1, 1);
    uint64_t h = g.alloc(16);
    Req hdr = {VIRTIO_BLK_T_IN, 0, 0};
    memcpy(g.hva(h), &hdr, 16);
    rings[0].AddChain({{h, 16, false}});
    Kick(rings[0]);
    gint64 until = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    while (notes.config.load() == 0 && g_get_monotonic_time() < until) {
        sched_yield();
    }
    EXPECT_TRUE(virtio_get_status(vdev) & VIRTIO_STATUS_NEEDS_RESET);
    EXPECT_EQ(notes.config.load(), 1);
}

TEST_F(VirtioBlkTest, ConfigSpaceAndWriteCache)
{
    cfg.physical_block_size = 4096;
    Create(1, 1);
    uint8_t c[VIRTIO_BLK_CONFIG_SIZE];
    vdev->ops->read_config(vdev, 0, c, sizeof(c));
    uint64_t cap;
    uint32_t blk_size, seg_max;
    uint16_t nq;
    memcpy(&cap, c + VIRTIO_BLK_CFG_CAPACITY, 8);
    memcpy(&blk_size, c + VIRTIO_BLK_CFG_BLK_SIZE, 4);
    memcpy(&seg_max, c + VIRTIO_BLK_CFG_SEG_MAX, 4);
    memcpy(&nq, c + VIRTIO_BLK_CFG_NUM_QUEUES, 2);
    EXPECT_EQ(cap, kDiskSize / 512);
    EXPECT_EQ(blk_size, 512u);
    EXPECT_EQ(seg_max, 254u);
    EXPECT_EQ(nq, 1);
    EXPECT_EQ(c[VIRTIO_BLK_CFG_PHYS_BLOCK_EXP], 3);
    EXPECT_EQ(c[VIRTIO_BLK_CFG_WRITEBACK], 1);
    EXPECT_EQ(vdev->config_size, (uint32_t)VIRTIO_BLK_CONFIG_SIZE);
    uint8_t zero = 0;
    g_mutex_lock(&vdev->lock);
    vdev->ops->write_config(vdev, VIRTIO_BLK_CFG_WRITEBACK, &zero, 1);
    g_mutex_unlock(&vdev->lock);
    EXPECT_FALSE(blk->wce.load());
    vdev->ops->read_config(vdev, VIRTIO_BLK_CFG_WRITEBACK, c, 1);
    EXPECT_EQ(c[0], 0);
    uint64_t f = vdev->host_features;
    for (int b : {VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_BLK_SIZE,
                  VIRTIO_BLK_F_TOPOLOGY, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_CONFIG_WCE,
                  VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_F_INDIRECT_DESC,
                  VIRTIO_F_EVENT_IDX, VIRTIO_F_VERSION_1}) {
        EXPECT_TRUE(f & (1ULL << b)) << "feature " << b;
    }
    EXPECT_FALSE(f & (1ULL << VIRTIO_BLK_F_MQ)) << "one queue";
}

// The discard / write-zeroes limits the config space promises are the
// ones the device serves: one segment per request (two are UNSUPP), 2^21
// sectors, alignment one logical block (mutation audit, issue 14.6).
TEST_F(VirtioBlkTest, DiscardLimitsInConfigMatchWhatIsServed)
{
    Create(1, 1);
    uint8_t c[VIRTIO_BLK_CONFIG_SIZE];
    vdev->ops->read_config(vdev, 0, c, sizeof(c));
    auto le32 = [&](unsigned off) {
        uint32_t v;
        memcpy(&v, c + off, 4);
        return v;
    };
    EXPECT_EQ(le32(VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS), 1u << 21);
    EXPECT_EQ(le32(VIRTIO_BLK_CFG_MAX_DISCARD_SEG), 1u);
    EXPECT_EQ(le32(VIRTIO_BLK_CFG_DISCARD_ALIGNMENT), 1u);
    EXPECT_EQ(le32(VIRTIO_BLK_CFG_MAX_WZ_SECTORS), 1u << 21);
    EXPECT_EQ(le32(VIRTIO_BLK_CFG_MAX_WZ_SEG), 1u);
    EXPECT_EQ(c[VIRTIO_BLK_CFG_WZ_MAY_UNMAP], 1);
    // Two segments where the config says one: refused, nothing reaches
    // the block layer.
    uint64_t segs = g.alloc(32);
    uint64_t v[4] = {0, 1, 8, 1};  // {sector 0, 1 sector}, {sector 8, 1 sector}
    memcpy(g.hva(segs), v, 32);
    for (uint32_t type : {VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES}) {
        int before = blk->discards.load() + blk->submitted.load();
        EXPECT_EQ(Do(type, 0, {{segs, 32, false}}), VIRTIO_BLK_S_UNSUPP) << type;
        EXPECT_EQ(blk->discards.load() + blk->submitted.load(), before);
    }
}

// A read or write of zero bytes (header and status only) succeeds without
// reaching the block layer, as the zero-sector discard does.
TEST_F(VirtioBlkTest, ZeroLengthReadAndWriteSucceedWithoutIo)
{
    Create(1, 1);
    for (uint32_t type : {VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT}) {
        int before = blk->submitted.load();
        EXPECT_EQ(Do(type, 8, {}), VIRTIO_BLK_S_OK) << type;
        EXPECT_EQ(blk->submitted.load(), before) << "nothing reaches the block layer";
    }
}

// As many requests in flight as the queue has entries (the request pool
// runs dry on the last one), all popped in one pass: each completes once,
// OK.  The driver reuses its two chains' heads (allowed: served from the
// heap past the pool).
TEST_F(VirtioBlkTest, FullQueueInOnePassDrainsThePool)
{
    cfg.queue_size = 4;
    Create(1, 1, false, 0, 4);
    Ring &r = rings[0];
    uint64_t h = g.alloc(16), st0 = g.alloc(1), st1 = g.alloc(1);
    Req hdr = {VIRTIO_BLK_T_FLUSH, 0, 0};
    memcpy(g.hva(h), &hdr, 16);
    // Two chains {header, status} fill the 4 descriptors; four avail
    // entries name them twice, published with one avail->idx store (the
    // IOThread may be polling the ring: it sees all four or none).
    r.SetDesc(0, h, 16, VRING_DESC_F_NEXT, 1);
    r.SetDesc(1, st0, 1, VRING_DESC_F_WRITE, 0);
    r.SetDesc(2, h, 16, VRING_DESC_F_NEXT, 3);
    r.SetDesc(3, st1, 1, VRING_DESC_F_WRITE, 0);
    auto publish4 = [&] {
        const uint16_t heads[4] = {0, 2, 0, 2};
        for (unsigned i = 0; i < 4; i++) {
            r.Avail()[2 + (r.avail_idx + i) % r.n] = heads[i];
        }
        r.SetAvailIdx(r.avail_idx + 4);
    };
    publish4();
    Kick(r);
    Wait(r, 4);
    EXPECT_EQ(blk->flushes.load(), 4);
    EXPECT_EQ(blk->max_plugged.load(), 4u) << "all four in flight at once";
    EXPECT_EQ(*static_cast<uint8_t *>(g.hva(st0)), VIRTIO_BLK_S_OK);
    EXPECT_EQ(*static_cast<uint8_t *>(g.hva(st1)), VIRTIO_BLK_S_OK);
    EXPECT_FALSE(virtio_get_status(vdev) & VIRTIO_STATUS_NEEDS_RESET);
    // And again: the pool came back whole.
    memset(g.hva(st0), 0xff, 1);
    publish4();
    Kick(r);
    Wait(r, 8);
    EXPECT_EQ(blk->flushes.load(), 8);
    EXPECT_EQ(*static_cast<uint8_t *>(g.hva(st0)), VIRTIO_BLK_S_OK);
}

// DRIVER_OK with two queues where only the first can start: the device
// needs a reset, and the first queue is stopped again (its block queue
// freed), not left serving on its own.  A reset and a start with room for
// both then work.
TEST_F(VirtioBlkTest, FailedStartOfOneQueueStopsTheOthers)
{
    max_queues = 1;
    Create(2, 1);
    EXPECT_TRUE(virtio_get_status(vdev) & VIRTIO_STATUS_NEEDS_RESET);
    EXPECT_EQ(blk->queues.load(), 0) << "queue 0 kept serving after queue 1 failed";
    blk->max_queues = 1 << 30;
    DriverInit(vdev, &g, rings, vdev->host_features, 64);
    DriverOk(vdev);
    ASSERT_FALSE(virtio_get_status(vdev) & VIRTIO_STATUS_NEEDS_RESET);
    EXPECT_EQ(blk->queues.load(), 2);
    EXPECT_EQ(Do(VIRTIO_BLK_T_FLUSH, 0, {}, 0), VIRTIO_BLK_S_OK);
    EXPECT_EQ(Do(VIRTIO_BLK_T_FLUSH, 0, {}, 1), VIRTIO_BLK_S_OK);
}

TEST_F(VirtioBlkTest, TwoQueuesOnTwoIOThreads)
{
    Create(2, 2);
    EXPECT_TRUE(vdev->host_features & (1ULL << VIRTIO_BLK_F_MQ));
    EXPECT_NE(virtqueue_get_context(rings[0].vq), virtqueue_get_context(rings[1].vq));
    for (int i = 0; i < 20; i++) {
        uint64_t w = Pattern(512, uint8_t(i));
        ASSERT_EQ(Do(VIRTIO_BLK_T_OUT, i, {{w, 512, false}}, i % 2), VIRTIO_BLK_S_OK);
    }
    for (int i = 0; i < 20; i++) {
        uint64_t r = g.alloc(512);
        ASSERT_EQ(Do(VIRTIO_BLK_T_IN, i, {{r, 512, true}}, (i + 1) % 2), VIRTIO_BLK_S_OK);
        EXPECT_EQ(static_cast<uint8_t *>(g.hva(r))[5], uint8_t(i + 35));
    }
    EXPECT_EQ(blk->submitted.load(), 40);
}

TEST_F(VirtioBlkTest, FourQueuesOverTwoIOThreadsConcurrently)
{
    Create(4, 2);
    // Fill all four queues, then kick them all at once.
    std::vector<uint64_t> st;
    for (int q = 0; q < 4; q++) {
        for (int i = 0; i < 16; i++) {
            uint64_t b = g.alloc(512);
            st.push_back(Queue(rings[q], VIRTIO_BLK_T_IN, q * 16 + i, {{b, 512, true}}));
        }
    }
    for (int q = 0; q < 4; q++) {
        Kick(rings[q]);
    }
    for (int q = 0; q < 4; q++) {
        Wait(rings[q], 16);
    }
    for (uint64_t a : st) {
        EXPECT_EQ(*static_cast<uint8_t *>(g.hva(a)), VIRTIO_BLK_S_OK);
    }
}

TEST_F(VirtioBlkTest, WithoutIOThreadRunsInMainContext)
{
    Create(1, 0);
    EXPECT_EQ(virtqueue_get_context(rings[0].vq), main_ctx);
    uint64_t w = Pattern(1024, 9);
    EXPECT_EQ(Do(VIRTIO_BLK_T_OUT, 4, {{w, 1024, false}}), VIRTIO_BLK_S_OK);
    uint64_t r = g.alloc(1024);
    EXPECT_EQ(Do(VIRTIO_BLK_T_IN, 4, {{r, 1024, true}}), VIRTIO_BLK_S_OK);
    EXPECT_EQ(memcmp(g.hva(r), g.hva(w), 1024), 0);
}

// A whole pass goes to the block layer between one plug/unplug; the batch
// of completions is published with one flush (one interrupt).
TEST_F(VirtioBlkTest, OnePlugAndOneInterruptPerPass)
{
    Create(1, 0);
    int before = notes.queue.load();
    for (int i = 0; i < 8; i++) {
        Queue(rings[0], VIRTIO_BLK_T_IN, i, {{g.alloc(512), 512, true}});
    }
    Kick(rings[0]);
    Wait(rings[0], 8);
    EXPECT_EQ(blk->submitted.load(), 8);
    EXPECT_EQ(blk->max_plugged.load(), 8u) << "all eight inside one plug";
    EXPECT_EQ(notes.queue.load() - before, 1);
}

TEST_F(VirtioBlkTest, ResetWithRequestsInFlightDrains)
{
    Create(2, 2);
    for (int round = 0; round < 20; round++) {
        for (int q = 0; q < 2; q++) {
            for (int i = 0; i < 8; i++) {
                Queue(rings[q], VIRTIO_BLK_T_IN, i, {{g.alloc(512), 512, true}});
            }
            Kick(rings[q]);
        }
        DriverReset(vdev);  // stop drains; blk_queue_free aborts otherwise
        EXPECT_EQ(blk->queues.load(), 0);
        DriverInit(vdev, &g, rings, vdev->host_features, 64);
        DriverOk(vdev);
    }
}

// ------------------------------------------------------------------
// Attacks

// A driver without VIRTIO_BLK_F_FLUSH gets a write-through cache, and a
// guest may turn the cache off through CONFIG_WCE; neither may outlive a
// reset (the next driver, e.g. after a reboot, starts from the configured
// cache mode).
TEST_F(VirtioBlkTest, WriteCacheModeRestoredAtReset)
{
    blk = nullptr;
    Create(1, 1, false, 0);
    ASSERT_TRUE(blk->wce.load());
    // Reboot into a driver that does not negotiate FLUSH.
    DriverInit(vdev, &g, rings, vdev->host_features & ~(1ULL << VIRTIO_BLK_F_FLUSH), 64);
    DriverOk(vdev);
    EXPECT_FALSE(blk->wce.load()) << "write-through without FLUSH";
    DriverReset(vdev);
    EXPECT_TRUE(blk->wce.load()) << "configured mode back after reset";
    // A driver with FLUSH that turns the cache off, then a reset.
    DriverInit(vdev, &g, rings, vdev->host_features, 64);
    DriverOk(vdev);
    uint8_t zero = 0;
    g_mutex_lock(&vdev->lock);
    vdev->ops->write_config(vdev, VIRTIO_BLK_CFG_WRITEBACK, &zero, 1);
    g_mutex_unlock(&vdev->lock);
    EXPECT_FALSE(blk->wce.load());
    DriverReset(vdev);
    EXPECT_TRUE(blk->wce.load());
}

// A request with 0 sectors to discard / write zeroes is a no-op that
// succeeds, whatever the block driver makes of an empty range.
TEST_F(VirtioBlkTest, ZeroSectorDiscardAndWriteZeroesSucceed)
{
    Create(1, 1);
    for (uint32_t type : {VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES}) {
        uint64_t seg = g.alloc(16);
        uint64_t v[2] = {8, 0};  // sector 8, 0 sectors, flags 0
        memcpy(g.hva(seg), v, 16);
        int before = blk->discards.load() + blk->submitted.load();
        EXPECT_EQ(Do(type, 0, {{seg, 16, false}}), VIRTIO_BLK_S_OK);
        EXPECT_EQ(blk->discards.load() + blk->submitted.load(), before)
            << "nothing reaches the block layer";
    }
}

// The device without an IOThread serves its queues in the main loop
// under the BQL; the guest's status writes come from a vCPU thread that
// holds the BQL (NEEDS_BQL MMIO).  DRIVER_OK and reset must not wait for
// the main loop while holding the BQL it needs.
TEST(VirtioBlkMainLoop, StatusWritesFromVcpuThreadDoNotDeadlock)
{
    shardvm_rcu_init();
    ASSERT_EQ(main_loop_init(false, nullptr), 0);  // we hold the BQL now
    Guest g;
    VirtIOBlockConfig cfg;
    virtio_blk_config_init(&cfg);
    BlockBackend *blk = fake_blk_new(kDiskSize, false);
    cfg.num_queues = 1;
    AioContext *ctx = main_loop_get_aio_context();
    VirtIOBlock *s = virtio_blk_new(&cfg, blk, &ctx, g.mem, nullptr);
    ASSERT_NE(s, nullptr);
    VirtIODevice *vdev = virtio_blk_get_vdev(s);
    NotifyCounter notes;
    vdev->transport_ops = &kCountingTransport;
    vdev->transport = &notes;
    std::vector<Ring> rings;

    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    std::thread watchdog([&] {  // hang guard only: a deadlock never returns
        std::unique_lock<std::mutex> l(m);
        if (!cv.wait_for(l, std::chrono::seconds(20), [&] { return done; })) {
            fprintf(stderr, "deadlock: vCPU status write waits for the main loop\n");
            _exit(1);
        }
    });
    std::atomic<bool> vcpu_done{false};
    std::thread vcpu([&] {
        bql_lock();
        DriverInit(vdev, &g, rings, vdev->host_features, 64);
        DriverOk(vdev);
        DriverReset(vdev);
        DriverInit(vdev, &g, rings, vdev->host_features, 64);
        DriverOk(vdev);
        bql_unlock();
        vcpu_done = true;
        aio_notify(ctx);
    });
    while (!vcpu_done) {
        main_loop_wait(false);
    }
    vcpu.join();
    // The queue works, served by the main loop.
    Ring &r = rings[0];
    uint64_t st = g.alloc(1), id = g.alloc(20), h = g.alloc(16);
    Req hdr = {VIRTIO_BLK_T_GET_ID, 0, 0};
    memcpy(g.hva(h), &hdr, 16);
    r.AddChain({{h, 16, false}, {id, 20, true}, {st, 1, true}});
    event_notifier_set(virtqueue_get_host_notifier(r.vq));
    while (r.UsedIdx() != 1) {
        main_loop_wait(false);
    }
    EXPECT_EQ(*static_cast<uint8_t *>(g.hva(st)), VIRTIO_BLK_S_OK);
    {
        std::lock_guard<std::mutex> l(m);
        done = true;
    }
    cv.notify_all();
    watchdog.join();
    DriverReset(vdev);
    virtio_blk_free(s);
    blk_unref(blk);
    virtio_blk_config_clear(&cfg);
    main_loop_cleanup();
}

// ------------------------------------------------------------------
// Properties

GHashTable *Props(std::initializer_list<std::pair<const char *, const char *>> kv)
{
    GHashTable *h = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    for (auto &p : kv) {
        g_hash_table_insert(h, g_strdup(p.first), g_strdup(p.second));
    }
    return h;
}

TEST(VirtioBlkProps, DefaultsAreQemus)
{
    GHashTable *h = Props({{"drive", "d0"}, {"addr", "4"}});
    VirtIOBlockConfig c;
    ASSERT_EQ(virtio_blk_parse_props(h, &c, nullptr), 0);
    EXPECT_STREQ(c.drive, "d0");
    EXPECT_EQ(c.iothread, nullptr);
    EXPECT_EQ(c.num_queues, 1u);
    EXPECT_EQ(c.queue_size, 256);
    EXPECT_EQ(c.logical_block_size, 512u);
    EXPECT_EQ(c.physical_block_size, 512u);
    EXPECT_TRUE(c.discard);
    EXPECT_TRUE(c.write_zeroes);
    EXPECT_EQ(g_hash_table_size(h), 1u) << "addr is left for the transport";
    EXPECT_TRUE(g_hash_table_contains(h, "addr"));
    virtio_blk_config_clear(&c);
    g_hash_table_unref(h);
}

TEST(VirtioBlkProps, AllProperties)
{
    GHashTable *h = Props({{"drive", "d0"}, {"iothread", "io0"}, {"num-queues", "4"},
                           {"queue-size", "128"}, {"serial", "abc"},
                           {"logical_block_size", "4096"}, {"physical_block_size", "4096"},
                           {"discard", "off"}, {"write-zeroes", "false"}});
    VirtIOBlockConfig c;
    ASSERT_EQ(virtio_blk_parse_props(h, &c, nullptr), 0);
    EXPECT_STREQ(c.iothread, "io0");
    EXPECT_EQ(c.num_queues, 4u);
    EXPECT_EQ(c.queue_size, 128);
    EXPECT_STREQ(c.serial, "abc");
    EXPECT_EQ(c.logical_block_size, 4096u);
    EXPECT_FALSE(c.discard);
    EXPECT_FALSE(c.write_zeroes);
    const char *map[4];
    virtio_blk_queue_iothreads(&c, map);
    for (auto m : map) {
        EXPECT_STREQ(m, "io0");
    }
    EXPECT_EQ(g_hash_table_size(h), 0u);
    virtio_blk_config_clear(&c);
    g_hash_table_unref(h);
}

// discard= and write-zeroes= each set their own feature, not the other's
// (mutation audit, issue 14.6: AllProperties turns both off at once).
TEST(VirtioBlkProps, DiscardAndWriteZeroesAreSeparate)
{
    for (bool discard_off : {true, false}) {
        GHashTable *h = Props({{"drive", "d0"}, {discard_off ? "discard" : "write-zeroes", "off"}});
        VirtIOBlockConfig c;
        ASSERT_EQ(virtio_blk_parse_props(h, &c, nullptr), 0);
        EXPECT_EQ(c.discard, !discard_off);
        EXPECT_EQ(c.write_zeroes, discard_off);
        virtio_blk_config_clear(&c);
        g_hash_table_unref(h);
    }
}

TEST(VirtioBlkProps, VqMappingRoundRobinAndExplicit)
{
    GHashTable *h = Props({{"drive", "d0"}, {"num-queues", "4"},
                           {"iothread-vq-mapping", "[{\"iothread\":\"io0\"},{\"iothread\":\"io1\"}]"}});
    VirtIOBlockConfig c;
    ASSERT_EQ(virtio_blk_parse_props(h, &c, nullptr), 0);
    const char *map[4];
    virtio_blk_queue_iothreads(&c, map);
    EXPECT_STREQ(map[0], "io0");
    EXPECT_STREQ(map[1], "io1");
    EXPECT_STREQ(map[2], "io0");
    EXPECT_STREQ(map[3], "io1");
    virtio_blk_config_clear(&c);
    g_hash_table_unref(h);

    h = Props({{"drive", "d0"}, {"num-queues", "3"},
               {"iothread-vq-mapping",
                "[{\"iothread\":\"a\",\"vqs\":[2]},{\"iothread\":\"b\",\"vqs\":[0,1]}]"}});
    ASSERT_EQ(virtio_blk_parse_props(h, &c, nullptr), 0);
    const char *m3[3];
    virtio_blk_queue_iothreads(&c, m3);
    EXPECT_STREQ(m3[0], "b");
    EXPECT_STREQ(m3[1], "b");
    EXPECT_STREQ(m3[2], "a");
    virtio_blk_config_clear(&c);
    g_hash_table_unref(h);
}

TEST(VirtioBlkProps, Errors)
{
    const std::vector<std::vector<std::pair<const char *, const char *>>> bad = {
        {{"serial", "x"}},  // no drive
        {{"drive", "d"}, {"queue-size", "100"}},
        {{"drive", "d"}, {"queue-size", "2"}},
        {{"drive", "d"}, {"queue-size", "2048"}},
        {{"drive", "d"}, {"num-queues", "0"}},
        {{"drive", "d"}, {"num-queues", "x"}},
        {{"drive", "d"}, {"discard", "maybe"}},
        {{"drive", "d"}, {"logical_block_size", "1000"}},
        {{"drive", "d"}, {"logical_block_size", "4096"}, {"physical_block_size", "512"}},
        {{"drive", "d"}, {"iothread", "io0"}, {"iothread-vq-mapping", "[{\"iothread\":\"io1\"}]"}},
        {{"drive", "d"}, {"num-queues", "2"},
         {"iothread-vq-mapping", "[{\"iothread\":\"a\",\"vqs\":[0]}]"}},  // vq 1 unmapped
        {{"drive", "d"}, {"num-queues", "2"},
         {"iothread-vq-mapping", "[{\"iothread\":\"a\",\"vqs\":[0,0,1]}]"}},
        {{"drive", "d"}, {"num-queues", "2"},
         {"iothread-vq-mapping", "[{\"iothread\":\"a\",\"vqs\":[0,1]},{\"iothread\":\"b\"}]"}},
        {{"drive", "d"}, {"iothread-vq-mapping", "[]"}},
        {{"drive", "d"}, {"iothread-vq-mapping", "{"}},
        {{"drive", "d"}, {"iothread-vq-mapping", "[{\"vqs\":[0]}]"}},
        // JSON of the wrong shape: refused, never a g_critical (fatal here)
        {{"drive", "d"}, {"iothread-vq-mapping", ""}},
        {{"drive", "d"}, {"iothread-vq-mapping", "null"}},
        {{"drive", "d"}, {"iothread-vq-mapping", "{}"}},
        {{"drive", "d"}, {"iothread-vq-mapping", "[1]"}},
        {{"drive", "d"}, {"iothread-vq-mapping", "[[]]"}},
        {{"drive", "d"}, {"iothread-vq-mapping", "[null]"}},
        {{"drive", "d"}, {"iothread-vq-mapping", "[{\"iothread\":{}}]"}},
        {{"drive", "d"}, {"iothread-vq-mapping", "[{\"iothread\":[\"a\"]}]"}},
        {{"drive", "d"}, {"iothread-vq-mapping", "[{\"iothread\":null}]"}},
        {{"drive", "d"}, {"iothread-vq-mapping", "[{\"iothread\":7}]"}},
        {{"drive", "d"}, {"iothread-vq-mapping", "[{\"iothread\":\"a\",\"vqs\":\"0\"}]"}},
        {{"drive", "d"}, {"iothread-vq-mapping", "[{\"iothread\":\"a\",\"vqs\":null}]"}},
        {{"drive", "d"}, {"iothread-vq-mapping", "[{\"iothread\":\"a\",\"vqs\":[0.5]}]"}},
        {{"drive", "d"}, {"iothread-vq-mapping", "[{\"iothread\":\"a\",\"vqs\":[true]}]"}},
        {{"drive", "d"}, {"iothread-vq-mapping", "[{\"iothread\":\"a\",\"vqs\":[null]}]"}},
        {{"drive", "d"}, {"iothread-vq-mapping", "[{\"iothread\":\"a\",\"vqs\":[[0]]}]"}},
        {{"drive", "d"}, {"iothread-vq-mapping", "[{\"iothread\":\"a\",\"vqs\":[-1]}]"}},
        {{"drive", "d"}, {"iothread-vq-mapping",
                          "[{\"iothread\":\"a\",\"vqs\":[99999999999999999999]}]"}},
        {{"drive", "d"}, {"iothread-vq-mapping", "[{\"iothread\":\"a\"}] trailing"}},
        {{"drive", "d"}, {"num-queues", "-1"}},
        {{"drive", "d"}, {"num-queues", "1025"}},
        {{"drive", "d"}, {"num-queues", ""}},
        {{"drive", "d"}, {"queue-size", "0"}},
        {{"drive", "d"}, {"queue-size", "3"}},
        {{"drive", "d"}, {"queue-size", "1025"}},
        {{"drive", "d"}, {"queue-size", "32768"}},
        {{"drive", "d"}, {"logical_block_size", "3"}},
        {{"drive", "d"}, {"logical_block_size", "1048576"}},
        {{"drive", "d"}, {"physical_block_size", "256"}},
    };
    for (auto &kv : bad) {
        GHashTable *h = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        for (auto &p : kv) {
            g_hash_table_insert(h, g_strdup(p.first), g_strdup(p.second));
        }
        VirtIOBlockConfig c;
        GError *err = nullptr;
        EXPECT_LT(virtio_blk_parse_props(h, &c, &err), 0) << kv.back().first << "=" << kv.back().second;
        EXPECT_NE(err, nullptr);
        if (err) {
            g_error_free(err);
        }
        virtio_blk_config_clear(&c);
        g_hash_table_unref(h);
    }
}

}  // namespace
