// Hostile guest, host side (issue 13 point 2): one case per test, a driver
// does what no correct driver does to device A, through the real device
// path (conf1, virtio-pci BARs, MSI-X, split rings in guest RAM, virtio-blk
// in an IOThread, the block layer, a file).  For each case: the process
// stays up (and ASan/UBSan/TSan stay quiet), A reports NEEDS_RESET (with a
// config interrupt) or fails the request with IOERR/UNSUPP, device B on
// another IOThread completes verify passes while A is in that state and
// after, and A works again after a guest reset (status 0).  The same cases
// from inside a guest: guest/blk.c mode=hostile (docs/guest.md).
#include "hostile-bed.h"

namespace hostile {
namespace {

class Hostile : public Bed {
protected:
    uint64_t Hdr(uint32_t type, uint64_t sector)
    {
        uint64_t g = a.Alloc(16);
        BlkHdr h = { type, 0, sector };
        memcpy(guest.hva(g), &h, sizeof(h));
        return g;
    }
    uint64_t StatusBuf()
    {
        uint64_t g = a.Alloc(16);
        *(uint8_t *)guest.hva(g) = kNoStatus;
        return g;
    }
    // Descriptors are in place: publish @head, kick, expect A broken.
    void PublishExpectBroken(uint16_t head)
    {
        uint16_t before = a.ring.UsedIdx();
        a.ring.Publish(head);
        a.Kick();
        ExpectBroken(a, before);
    }
    // A chain in consecutive slots, published and kicked: A must break.
    void ChainExpectBroken(const std::vector<vtest::Ring::Buf> &bufs)
    {
        uint16_t before = a.ring.UsedIdx();
        a.ring.AddChain(bufs);
        a.Kick();
        ExpectBroken(a, before);
    }
    // A chain whose status byte is @st: wait for it, return the status.
    uint8_t ChainStatus(const std::vector<vtest::Ring::Buf> &bufs, uint64_t st)
    {
        uint16_t before = a.ring.UsedIdx();
        a.ring.AddChain(bufs);
        a.Kick();
        EXPECT_TRUE(a.WaitUsed(before)) << "request never completed";
        return __atomic_load_n((uint8_t *)guest.hva(st), __ATOMIC_ACQUIRE);
    }
    // An indirect table of @bufs in A's buffers at @gpa.
    void WriteTable(uint64_t gpa, const std::vector<vtest::Ring::Buf> &bufs)
    {
        for (size_t i = 0; i < bufs.size(); i++) {
            VRingDesc d = { bufs[i].gpa, bufs[i].len,
                            (uint16_t)((bufs[i].write ? VRING_DESC_F_WRITE : 0) |
                                       (i + 1 < bufs.size() ? VRING_DESC_F_NEXT : 0)),
                            (uint16_t)(i + 1) };
            memcpy((uint8_t *)guest.hva(gpa) + 16 * i, &d, sizeof(d));
        }
    }
    void ExpectRunning(Driver &d)
    {
        EXPECT_EQ(d.Status(), 15u) << "the device must not break";
    }
};

// ---- descriptor chains ----------------------------------------------------

TEST_F(Hostile, DescriptorLoopNeedsReset)
{
    RunCase([&] {
        uint64_t h = Hdr(VIRTIO_BLK_T_IN, 0), d = a.Alloc(512);
        a.ring.SetDesc(0, h, 16, VRING_DESC_F_NEXT, 1);
        a.ring.SetDesc(1, d, 512, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 0);
        PublishExpectBroken(0);
    });
}

TEST_F(Hostile, SelfLoopNeedsReset)
{
    RunCase([&] {
        uint64_t h = Hdr(VIRTIO_BLK_T_IN, 0);
        a.ring.SetDesc(5, h, 16, VRING_DESC_F_NEXT, 5);
        PublishExpectBroken(5);
    });
}

// Queue-size descriptors in one chain is the most there can be (and the
// device serves it); one more is a chain longer than the queue.
TEST_F(Hostile, ChainLongerThanQueueNeedsReset)
{
    RunCase([&] {
        std::vector<vtest::Ring::Buf> bufs = { { Hdr(VIRTIO_BLK_T_IN, 8), 16, false } };
        for (int i = 0; i < kQueueSize - 2; i++) {
            bufs.push_back({ a.Alloc(512), 512, true });
        }
        uint64_t st = StatusBuf();
        bufs.push_back({ st, 1, true });
        ASSERT_EQ(bufs.size(), kQueueSize);
        EXPECT_EQ(ChainStatus(bufs, st), VIRTIO_BLK_S_OK) << "64 descriptors are legal";
        // Now the same 64 with the last one pointing back into the chain.
        uint16_t head = a.ring.next_desc;
        a.ring.AddChain(bufs);
        a.ring.avail_idx--; // AddChain published; do it again below
        a.ring.SetDesc((head + kQueueSize - 1) % kQueueSize, st, 1,
                       VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, (head + 1) % kQueueSize);
        uint16_t before = a.ring.UsedIdx();
        a.ring.Publish(head);
        a.Kick();
        ExpectBroken(a, before);
    });
}

TEST_F(Hostile, IndirectChainLongerThanQueueNeedsReset)
{
    RunCase([&] {
        std::vector<vtest::Ring::Buf> bufs = { { Hdr(VIRTIO_BLK_T_IN, 8), 16, false } };
        for (int i = 0; i < kQueueSize - 1; i++) {
            bufs.push_back({ a.Alloc(512), 512, true });
        }
        bufs.push_back({ StatusBuf(), 1, true });
        uint64_t t = a.Alloc(16 * bufs.size());
        WriteTable(t, bufs);
        a.ring.SetDesc(0, t, 16 * bufs.size(), VRING_DESC_F_INDIRECT, 0);
        PublishExpectBroken(0);
    }, true);
}

TEST_F(Hostile, BufferPastRamNeedsReset)
{
    RunCase([&] {
        ChainExpectBroken({ { Hdr(VIRTIO_BLK_T_IN, 0), 16, false },
                            { 0x40000000, 512, true },
                            { StatusBuf(), 1, true } });
    });
}

TEST_F(Hostile, BufferStraddlingIntoTheHoleNeedsReset)
{
    RunCase([&] {
        ChainExpectBroken({ { Hdr(VIRTIO_BLK_T_IN, 0), 16, false },
                            { vtest::kHole - 256, 512, true },
                            { StatusBuf(), 1, true } });
    });
}

TEST_F(Hostile, BufferStraddlingTheEndOfRamNeedsReset)
{
    RunCase([&] {
        ChainExpectBroken({ { Hdr(VIRTIO_BLK_T_OUT, 0), 16, false },
                            { vtest::kRam1 + vtest::kRam1Size - 256, 512, false },
                            { StatusBuf(), 1, true } });
    });
}

TEST_F(Hostile, BufferWrappingPast2To64NeedsReset)
{
    RunCase([&] {
        ChainExpectBroken({ { Hdr(VIRTIO_BLK_T_IN, 0), 16, false },
                            { 0xffffffffffffff00ull, 512, true },
                            { StatusBuf(), 1, true } });
    });
}

TEST_F(Hostile, ZeroLengthBufferNeedsReset)
{
    RunCase([&] {
        ChainExpectBroken({ { Hdr(VIRTIO_BLK_T_IN, 0), 16, false },
                            { a.Alloc(512), 0, true },
                            { StatusBuf(), 1, true } });
    });
}

TEST_F(Hostile, ZeroLengthStatusNeedsReset)
{
    RunCase([&] {
        ChainExpectBroken({ { Hdr(VIRTIO_BLK_T_FLUSH, 0), 16, false },
                            { StatusBuf(), 0, true } });
    });
}

// A descriptor length is 32 bits: 4 GiB - 1 is the largest, at a RAM
// address (the start of RAM1) so only the length is wrong.
TEST_F(Hostile, FourGiBLengthNeedsReset)
{
    RunCase([&] {
        ChainExpectBroken({ { Hdr(VIRTIO_BLK_T_IN, 0), 16, false },
                            { vtest::kRam1, 0xffffffffu, true },
                            { StatusBuf(), 1, true } });
    });
}

TEST_F(Hostile, FourGiBHeaderNeedsReset)
{
    RunCase([&] {
        ChainExpectBroken({ { vtest::kRam0, 0xffffffffu, false },
                            { StatusBuf(), 1, true } });
    });
}

TEST_F(Hostile, ReadableAfterWritableNeedsReset)
{
    RunCase([&] {
        ChainExpectBroken({ { Hdr(VIRTIO_BLK_T_OUT, 0), 16, false },
                            { StatusBuf(), 1, true },
                            { a.Alloc(512), 512, false } });
    });
}

TEST_F(Hostile, MissingStatusByteNeedsReset)
{
    RunCase([&] {
        ChainExpectBroken({ { Hdr(VIRTIO_BLK_T_FLUSH, 0), 16, false } });
    });
}

TEST_F(Hostile, ShortHeaderNeedsReset)
{
    RunCase([&] {
        ChainExpectBroken({ { Hdr(VIRTIO_BLK_T_FLUSH, 0), 8, false },
                            { StatusBuf(), 1, true } });
    });
}

TEST_F(Hostile, NextIndexPastTableNeedsReset)
{
    RunCase([&] {
        a.ring.SetDesc(0, Hdr(VIRTIO_BLK_T_FLUSH, 0), 16, VRING_DESC_F_NEXT, 0xffff);
        PublishExpectBroken(0);
    });
}

// ---- indirect tables ------------------------------------------------------

TEST_F(Hostile, IndirectInsideIndirectNeedsReset)
{
    RunCase([&] {
        uint64_t st = StatusBuf();
        uint64_t inner = a.Alloc(32);
        WriteTable(inner, { { Hdr(VIRTIO_BLK_T_FLUSH, 0), 16, false }, { st, 1, true } });
        uint64_t outer = a.Alloc(16);
        VRingDesc d = { inner, 32, VRING_DESC_F_INDIRECT, 0 };
        memcpy(guest.hva(outer), &d, sizeof(d));
        a.ring.SetDesc(0, outer, 16, VRING_DESC_F_INDIRECT, 0);
        PublishExpectBroken(0);
    }, true);
}

TEST_F(Hostile, IndirectTableOfLengthZeroNeedsReset)
{
    RunCase([&] {
        uint64_t t = a.Alloc(32);
        WriteTable(t, { { Hdr(VIRTIO_BLK_T_FLUSH, 0), 16, false }, { StatusBuf(), 1, true } });
        a.ring.SetDesc(0, t, 0, VRING_DESC_F_INDIRECT, 0);
        PublishExpectBroken(0);
    }, true);
}

TEST_F(Hostile, IndirectTableNotAMultipleOf16NeedsReset)
{
    RunCase([&] {
        uint64_t t = a.Alloc(48);
        WriteTable(t, { { Hdr(VIRTIO_BLK_T_FLUSH, 0), 16, false }, { StatusBuf(), 1, true } });
        a.ring.SetDesc(0, t, 40, VRING_DESC_F_INDIRECT, 0);
        PublishExpectBroken(0);
    }, true);
}

TEST_F(Hostile, IndirectTableOf4GiBNeedsReset)
{
    RunCase([&] {
        a.ring.SetDesc(0, vtest::kRam1, 0xfffffff0u, VRING_DESC_F_INDIRECT, 0);
        PublishExpectBroken(0);
    }, true);
}

TEST_F(Hostile, IndirectTableOutsideRamNeedsReset)
{
    RunCase([&] {
        a.ring.SetDesc(0, vtest::kHole - 16, 32, VRING_DESC_F_INDIRECT, 0);
        PublishExpectBroken(0);
    }, true);
}

TEST_F(Hostile, IndirectWithoutTheFeatureNeedsReset)
{
    RunCase([&] {
        uint64_t t = a.Alloc(32);
        WriteTable(t, { { Hdr(VIRTIO_BLK_T_FLUSH, 0), 16, false }, { StatusBuf(), 1, true } });
        a.ring.SetDesc(0, t, 32, VRING_DESC_F_INDIRECT, 0);
        PublishExpectBroken(0);
    }, false);
}

TEST_F(Hostile, IndirectAfterADescriptorNeedsReset)
{
    RunCase([&] {
        uint64_t t = a.Alloc(32);
        WriteTable(t, { { a.Alloc(512), 512, true }, { StatusBuf(), 1, true } });
        a.ring.SetDesc(0, Hdr(VIRTIO_BLK_T_IN, 0), 16, VRING_DESC_F_NEXT, 1);
        a.ring.SetDesc(1, t, 32, VRING_DESC_F_INDIRECT, 0);
        PublishExpectBroken(0);
    }, true);
}

// Nothing requires an indirect table to be aligned: one at an odd address
// is served (and the device reads it without misaligned accesses, which
// UBSan would report).
TEST_F(Hostile, IndirectTableAtAnOddAddressIsServed)
{
    RunCase([&] {
        uint64_t st = StatusBuf(), data = a.Alloc(1024);
        uint64_t t = a.Alloc(64) + 1;
        WriteTable(t, { { Hdr(VIRTIO_BLK_T_IN, 0), 16, false },
                        { data, 1024, true }, { st, 1, true } });
        a.ring.SetDesc(0, t, 48, VRING_DESC_F_INDIRECT, 0);
        uint16_t before = a.ring.UsedIdx();
        a.ring.Publish(0);
        a.Kick();
        ASSERT_TRUE(a.WaitUsed(before));
        EXPECT_EQ(*(uint8_t *)guest.hva(st), VIRTIO_BLK_S_OK);
        EXPECT_EQ(a.ring.UsedElem(before).len, 1025u);
        ExpectRunning(a);
    }, true);
}

// ---- the avail ring -------------------------------------------------------

TEST_F(Hostile, AvailIndexJumpingAheadNeedsReset)
{
    RunCase([&] {
        uint16_t before = a.ring.UsedIdx();
        a.ring.SetAvailIdx((uint16_t)(a.ring.avail_idx + kQueueSize + 1));
        a.Kick();
        ExpectBroken(a, before);
    });
}

TEST_F(Hostile, AvailIndexGoingBackwardsNeedsReset)
{
    RunCase([&] {
        uint16_t before = a.ring.UsedIdx();
        a.ring.SetAvailIdx((uint16_t)(a.ring.avail_idx - 1));
        a.Kick();
        ExpectBroken(a, before);
    });
}

TEST_F(Hostile, AvailHeadPastQueueSizeNeedsReset)
{
    RunCase([&] {
        a.ring.SetDesc(0, Hdr(VIRTIO_BLK_T_FLUSH, 0), 16, VRING_DESC_F_NEXT, 1);
        a.ring.SetDesc(1, StatusBuf(), 1, VRING_DESC_F_WRITE, 0);
        PublishExpectBroken(kQueueSize);
    });
}

// ---- the transport --------------------------------------------------------

// Notifies of a queue the driver never set up (queue 1 of A's two), of
// queues the device does not have, and anywhere in the notify area, while
// running and before any set-up: ignored, and A keeps working.
TEST_F(Hostile, NotifiesOfQueuesNeverSetUpAreIgnored)
{
    RunCase([&] {
        for (unsigned q : { 1u, 2u, 7u, 1000u }) {
            a.SetMmio(a.NotifyAddr(0) + 4 * q % 0x1000, 2, q);
        }
        for (uint64_t off = 0; off < 0x1000; off += 2) {
            a.SetMmio(a.notify + off, 2, 0xffff);
        }
        ExpectRunning(a);
        EXPECT_TRUE(a.Verify(5)) << "kicks of other queues broke queue 0";
        a.SetStatus(0);
        a.Kick(0);
        a.Kick(1);
        EXPECT_EQ(a.Status(), 0u);
    });
}

// A queue that is disabled (not enabled before DRIVER_OK) is not served:
// its kicks are ignored; enabling it after DRIVER_OK is refused.
TEST_F(Hostile, NotifiesOfADisabledQueueAreIgnored)
{
    RunCase([&] {
        a.SetStatus(0);
        a.SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_GF, 4, 1);
        a.SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                    VIRTIO_STATUS_FEATURES_OK);
        a.SelectQueue(0);
        memset(guest.hva(a.ring_gpa), 0, 0x3000);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_DESCLO, 4, a.ring.desc);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_AVAILLO, 4, a.ring.avail);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_USEDLO, 4, a.ring.used);
        a.SetStatus(15); // DRIVER_OK with queue 0 never enabled
        a.ring.avail_idx = 0;
        a.ring.next_desc = 0;
        a.ring.AddChain({ { Hdr(VIRTIO_BLK_T_FLUSH, 0), 16, false },
                          { StatusBuf(), 1, true } });
        a.Kick(0);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1); // refused now
        EXPECT_EQ(a.Mmio(a.common + VIRTIO_PCI_COMMON_Q_ENABLE, 2), 0u);
        a.Kick(0);
        ExpectRunning(a);
        EXPECT_EQ(a.ring.UsedIdx(), 0u) << "a disabled queue was served";
    });
}

// queue_enable with the addresses never written (0): there is no RAM at
// guest address 0 in this map, so the first use breaks the device (with
// RAM at 0, as in a real VM, the rings would simply be there).
TEST_F(Hostile, QueueEnableWithZeroAddressesNeedsReset)
{
    RunCase([&] {
        a.SetStatus(0);
        a.SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_GF, 4, 1);
        a.SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                    VIRTIO_STATUS_FEATURES_OK);
        a.SelectQueue(0);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
        a.SetStatus(15);
        a.Kick(0);
        EXPECT_TRUE(a.WaitNeedsReset());
    });
}

TEST_F(Hostile, MisalignedRingsNeedReset)
{
    RunCase([&] {
        a.SetStatus(0);
        a.SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_GF, 4, 1);
        a.SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                    VIRTIO_STATUS_FEATURES_OK);
        a.SelectQueue(0);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_DESCLO, 4, a.ring.desc + 1);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_AVAILLO, 4, a.ring.avail + 1);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_USEDLO, 4, vtest::kHole - 8);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
        a.SetStatus(15);
        a.Kick(0);
        EXPECT_TRUE(a.WaitNeedsReset());
    });
}

// Queue registers written after DRIVER_OK (size, addresses, enable 0) are
// ignored: the running queue keeps its rings.
TEST_F(Hostile, QueueRegistersAfterDriverOkAreIgnored)
{
    RunCase([&] {
        a.SelectQueue(0);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_SIZE, 2, 2);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_DESCLO, 4, 0xdead0000);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_USEDHI, 4, 0xffffffff);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_ENABLE, 2, 0);
        EXPECT_EQ(a.Mmio(a.common + VIRTIO_PCI_COMMON_Q_SIZE, 2), kQueueSize);
        ExpectRunning(a);
        EXPECT_TRUE(a.Verify(6));
    });
}

TEST_F(Hostile, FeaturesOkWithFeaturesNeverOfferedIsRefused)
{
    RunCase([&] {
        for (uint64_t bad : { 1ull << 63, 1ull << 31, 1ull << 50 }) {
            uint64_t f = (1ull << VIRTIO_F_VERSION_1) | bad;
            a.SetStatus(0);
            a.SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
            a.SetMmio(a.common + VIRTIO_PCI_COMMON_GFSELECT, 4, 0);
            a.SetMmio(a.common + VIRTIO_PCI_COMMON_GF, 4, (uint32_t)f);
            a.SetMmio(a.common + VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
            a.SetMmio(a.common + VIRTIO_PCI_COMMON_GF, 4, f >> 32);
            a.SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                        VIRTIO_STATUS_FEATURES_OK);
            EXPECT_FALSE(a.Status() & VIRTIO_STATUS_FEATURES_OK)
                << "accepted feature bit " << __builtin_ctzll(bad);
            // DRIVER_OK on top of the refusal is ignored: nothing runs.
            a.SelectQueue(0);
            a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_DESCLO, 4, a.ring.desc);
            a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_AVAILLO, 4, a.ring.avail);
            a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_USEDLO, 4, a.ring.used);
            a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
            a.SetStatus(15);
            EXPECT_FALSE(a.Status() & VIRTIO_STATUS_DRIVER_OK);
            a.Kick(0);
        }
        // Without VERSION_1 too.
        a.SetStatus(0);
        a.SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_GFSELECT, 4, 0);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_GF, 4, 1u << VIRTIO_BLK_F_FLUSH);
        a.SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                    VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
        EXPECT_EQ(a.Status() & (VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK), 0);
    });
}

// ---- MSI-X ---------------------------------------------------------------

TEST_F(Hostile, MsixOutOfRangeWritesAreIgnored)
{
    RunCase([&] {
        uint64_t bar_end = a.bar1 + 4096; // the MSI-X BAR is 4 KiB here
        // Entries past the table (A has 3 vectors), the PBA, the rest of
        // the BAR, sizes and alignments the table does not take.
        for (uint64_t off = 3 * 16; a.bar1 + off < bar_end; off += 4) {
            a.SetMmio(a.bar1 + off, 4, 0xdeadbeef);
        }
        for (uint64_t off = 0; off < 3 * 16; off += 1) {
            a.SetMmio(a.msix_table + off, 1, 0xff);
            a.SetMmio(a.msix_table + off, 2, 0xffff);
        }
        a.SetMmio(a.msix_table + 4, 8, ~0ull); // misaligned qword
        a.SetMmio(bar_end - 4, 8, ~0ull);      // crosses the BAR's end
        // Vectors the table does not have: read back as NO_VECTOR.
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_MSIX, 2, 3);
        EXPECT_EQ(a.Mmio(a.common + VIRTIO_PCI_COMMON_MSIX, 2), 0xffffu);
        a.SelectQueue(0);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_MSIX, 2, 2047);
        EXPECT_EQ(a.Mmio(a.common + VIRTIO_PCI_COMMON_Q_MSIX, 2), 0xffffu);
        a.SelectQueue(9);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_MSIX, 2, 1);
        a.SelectQueue(0);
        // Function mask and enable toggled through config space.
        SetCfg(a.slot, a.msix_cap + 2, 2, 0xffff);
        ExpectRunning(a);
        EXPECT_TRUE(a.Verify(7)) << "MSI-X garbage broke the queue";
        SetCfg(a.slot, a.msix_cap + 2, 2, 0);
        EXPECT_TRUE(a.Verify(8));
        SetCfg(a.slot, a.msix_cap + 2, 2, 0x8000);
        // Byte and misaligned writes changed nothing; in vector control
        // only the mask bit is defined.
        EXPECT_EQ(a.Mmio(a.msix_table + 8, 4), 0x40u + a.slot * 2);
        a.SetMmio(a.msix_table + 32 + 12, 4, 0xffffffff);
        EXPECT_EQ(a.Mmio(a.msix_table + 32 + 12, 4), 1u) << "only the mask bit";
        for (unsigned v = 0; v < 2; v++) {
            a.SetMmio(a.msix_table + 16 * v + 0, 4, 0xfee00000);
            a.SetMmio(a.msix_table + 16 * v + 4, 4, 0);
            a.SetMmio(a.msix_table + 16 * v + 8, 4, 0x40 + a.slot * 2 + v);
            a.SetMmio(a.msix_table + 16 * v + 12, 4, 0);
        }
    });
}

// ---- BARs -----------------------------------------------------------------

// xorshift: deterministic garbage.
static uint64_t Garbage(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

TEST_F(Hostile, GarbageWritesToBar4)
{
    RunCase([&] {
        uint64_t s = 0x9e3779b97f4a7c15ull;
        static const unsigned sizes[] = { 1, 2, 4, 8 };
        // Common configuration (status included: garbage may set
        // DRIVER_OK, FAILED, ... or reset), ISR, device configuration,
        // notify area, past it.
        for (int round = 0; round < 4; round++) {
            for (uint64_t off = 0; off < 0x4000; off += (off < 0x40 ? 1 : 0x1d)) {
                unsigned size = sizes[Garbage(&s) % 4];
                a.SetMmio(a.bar4 + off, size, Garbage(&s));
                (void)a.Mmio(a.bar4 + (Garbage(&s) % 0x4000), size);
            }
        }
    });
}

TEST_F(Hostile, GarbageWritesToConfigSpace)
{
    uint32_t saved[64];
    RunCase([&] {
        for (unsigned off = 0; off < 256; off += 4) {
            saved[off / 4] = Cfg(a.slot, off, 4);
        }
        uint64_t s = 0x2545f4914f6cdd1dull;
        // BARs and command register, then every byte of the header and
        // the capabilities (the PCI_CFG window performs BAR accesses with
        // whatever its fields say).
        for (int round = 0; round < 8; round++) {
            for (unsigned off = 0x10; off < 0x28; off += 4) {
                SetCfg(a.slot, off, 4, (uint32_t)Garbage(&s));
            }
            SetCfg(a.slot, 4, 2, (uint16_t)Garbage(&s));
        }
        for (int round = 0; round < 4; round++) {
            for (unsigned off = 0; off < 256; off++) {
                SetCfg(a.slot, off, 1, (uint8_t)Garbage(&s));
                (void)Cfg(a.slot, Garbage(&s) % 256, 1);
            }
        }
        // The guest puts its BARs, command and MSI-X control back.
        for (unsigned off = 0x10; off < 0x28; off += 4) {
            SetCfg(a.slot, off, 4, saved[off / 4]);
        }
        SetCfg(a.slot, 4, 2, (uint16_t)saved[1]);
        SetCfg(a.slot, a.msix_cap + 2, 2, 0x8000);
        EXPECT_EQ(Cfg(a.slot, 0, 4), 0x10421af4u) << "IDs are read-only";
        EXPECT_EQ(Cfg(a.slot, 0x20, 4), saved[0x20 / 4]);
    });
}

TEST_F(Hostile, Bar4MovedOntoRamIsNotDecoded)
{
    RunCase([&] {
        uint32_t lo = Cfg(a.slot, 0x20, 4), hi = Cfg(a.slot, 0x24, 4);
        SetCfg(a.slot, 0x24, 4, 0);
        SetCfg(a.slot, 0x20, 4, 0x100000 | (lo & 0xf)); // 1 MiB: RAM
        EXPECT_EQ(a.Mmio(a.common + VIRTIO_PCI_COMMON_NUMQ, 2), 0xffffu)
            << "still decoded at the old address";
        // Over RAM nothing is mapped: the region table has no BAR there.
        uint64_t v = 0;
        address_space_read(mmio, 0x100000 + VIRTIO_PCI_COMMON_NUMQ, 2, &v);
        EXPECT_EQ(v, 0xffffu);
        // BAR 1 (MSI-X) onto RAM too.
        uint32_t bar1 = Cfg(a.slot, 0x14, 4);
        SetCfg(a.slot, 0x14, 4, 0x200000);
        SetCfg(a.slot, 0x14, 4, bar1);
        SetCfg(a.slot, 0x20, 4, lo);
        SetCfg(a.slot, 0x24, 4, hi);
        EXPECT_EQ(a.Mmio(a.common + VIRTIO_PCI_COMMON_NUMQ, 2), 2u) << "back";
        ExpectRunning(a);
        EXPECT_TRUE(a.Verify(9)) << "the running device survived its BAR move";
    });
}

TEST_F(Hostile, BarsMovedOntoAnotherDevicesBars)
{
    RunCase([&] {
        uint32_t lo = Cfg(a.slot, 0x20, 4), hi = Cfg(a.slot, 0x24, 4);
        uint32_t bar1 = Cfg(a.slot, 0x14, 4);
        // A's BAR 4 onto B's BAR 4, A's BAR 1 onto B's BAR 1.
        SetCfg(a.slot, 0x24, 4, Cfg(b.slot, 0x24, 4));
        SetCfg(a.slot, 0x20, 4, Cfg(b.slot, 0x20, 4));
        SetCfg(a.slot, 0x14, 4, Cfg(b.slot, 0x14, 4));
        // Half over B's BAR 4.
        EXPECT_EQ(b.Mmio(b.common + VIRTIO_PCI_COMMON_NUMQ, 2), 1u)
            << "B's registers must stay B's";
        EXPECT_TRUE(WaitBPasses(1)) << "B serves with A's BARs on top of it";
        SetCfg(a.slot, 0x20, 4, (uint32_t)(b.bar4 + 0x2000) | (lo & 0xf));
        EXPECT_EQ(b.Mmio(b.common + VIRTIO_PCI_COMMON_NUMQ, 2), 1u);
        // Kicks at the overlap reach B, not A.
        EXPECT_TRUE(WaitBPasses(1));
        SetCfg(a.slot, 0x14, 4, bar1);
        SetCfg(a.slot, 0x20, 4, lo);
        SetCfg(a.slot, 0x24, 4, hi);
        EXPECT_EQ(a.Mmio(a.common + VIRTIO_PCI_COMMON_NUMQ, 2), 2u) << "A back";
        ExpectRunning(a);
        EXPECT_TRUE(a.Verify(10));
    });
}

// A's BAR 4 parked on B's (not decoded), then B moves away: A appears at
// B's old address in the same update that moves B.  A's notify ioeventfd
// must be registered there, which KVM refuses (-EEXIST, as the fake does)
// while B's is still on that address: the devices must hear about the BAR
// that left before the one that arrived.  No verifier here: B's own
// driver is the one moving B.
TEST_F(Hostile, BarTakingOverAnAddressGetsItsIoeventfd)
{
    ASSERT_EQ(a.Start(), 15u);
    const uint64_t kNotify = 0x3000; // the notify area in BAR 4
    uint32_t a_lo = Cfg(a.slot, 0x20, 4), b_lo = Cfg(b.slot, 0x20, 4);
    ASSERT_EQ(Cfg(a.slot, 0x24, 4), Cfg(b.slot, 0x24, 4)) << "same high dword";
    uint64_t y = b.bar4, z = b.bar4 + 0x100000;
    EXPECT_EQ(vm.ioeventfds.count(a.bar4 + kNotify), 1u);
    EXPECT_EQ(vm.ioeventfds.count(y + kNotify), 1u);
    SetCfg(a.slot, 0x20, 4, b_lo);               // A onto B: not decoded
    EXPECT_EQ(vm.ioeventfds.count(a.bar4 + kNotify), 0u);
    SetCfg(b.slot, 0x20, 4, (uint32_t)z | (b_lo & 0xf)); // B leaves: A appears
    EXPECT_EQ(vm.ioeventfds.count(z + kNotify), 1u) << "B's ioeventfd moved";
    EXPECT_EQ(vm.ioeventfds.count(y + kNotify), 1u) << "A's ioeventfd at B's old place";
    EXPECT_EQ(vm.ioeventfds.size(), 2u);
    // Both back where they were; both still work.
    SetCfg(a.slot, 0x20, 4, a_lo);
    SetCfg(b.slot, 0x20, 4, b_lo);
    EXPECT_EQ(vm.ioeventfds.count(a.bar4 + kNotify), 1u);
    EXPECT_EQ(vm.ioeventfds.count(y + kNotify), 1u);
    EXPECT_EQ(vm.ioeventfds.size(), 2u);
    EXPECT_TRUE(a.Verify(20));
    EXPECT_TRUE(b.Verify(21));
}

// ---- requests past the end ----------------------------------------------

TEST_F(Hostile, SectorRangesPastTheEndFailWithIoerr)
{
    RunCase([&] {
        const uint64_t cap = kImageSize / 512;
        uint64_t buf = a.Alloc(4096);
        memset(guest.hva(buf), 0xab, 4096);
        struct { uint32_t type; uint64_t sector; uint32_t len; } cases[] = {
            { VIRTIO_BLK_T_IN, cap, 512 },
            { VIRTIO_BLK_T_OUT, cap - 1, 1024 },
            // sector * 512 + len overflows 64 bits ...
            { VIRTIO_BLK_T_IN, 0x007fffffffffffffull, 4096 },
            { VIRTIO_BLK_T_OUT, 0x007fffffffffffffull, 4096 },
            // ... sector * 512 itself wraps, to exactly 0 ...
            { VIRTIO_BLK_T_OUT, 1ull << 55, 4096 },
            { VIRTIO_BLK_T_IN, 1ull << 55, 512 },
            // ... or anywhere.
            { VIRTIO_BLK_T_OUT, ~0ull, 512 },
            { VIRTIO_BLK_T_IN, ~0ull - 7, 4096 },
        };
        for (auto &c : cases) {
            bool in = c.type == VIRTIO_BLK_T_IN;
            EXPECT_EQ(a.Request(c.type, c.sector, buf, c.len, in), VIRTIO_BLK_S_IOERR)
                << "type " << c.type << " sector 0x" << std::hex << c.sector;
        }
        // DISCARD and WRITE_ZEROES segments the same way.
        struct Seg { uint64_t sector; uint32_t num, flags; };
        Seg segs[] = { { cap, 1, 0 }, { 0x007fffffffffffffull, 16, 0 },
                       { 1ull << 55, 8, 0 }, { ~0ull, 0xffffffffu, 0 } };
        for (uint32_t type : { (uint32_t)VIRTIO_BLK_T_DISCARD,
                               (uint32_t)VIRTIO_BLK_T_WRITE_ZEROES }) {
            for (auto &sg : segs) {
                uint64_t g = a.Alloc(16);
                memcpy(guest.hva(g), &sg, 16);
                EXPECT_EQ(a.Request(type, 0, g, 16, false), VIRTIO_BLK_S_IOERR)
                    << "type " << type << " sector 0x" << std::hex << sg.sector;
            }
        }
        // Unknown types and undefined flags: UNSUPP.
        EXPECT_EQ(a.Request(0xdeadbeef, 0, 0, 0, false), VIRTIO_BLK_S_UNSUPP);
        Seg flags = { 0, 8, 0xfffffff0u };
        uint64_t g = a.Alloc(16);
        memcpy(guest.hva(g), &flags, 16);
        EXPECT_EQ(a.Request(VIRTIO_BLK_T_DISCARD, 0, g, 16, false), VIRTIO_BLK_S_UNSUPP);
        ExpectRunning(a);
        // Nothing of the 0xab buffer reached the image (a wrap to sector 0
        // would have written it there).
        std::vector<uint8_t> host(4096);
        int fd = open(image[0].c_str(), O_RDONLY);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(pread(fd, host.data(), 4096, 0), 4096);
        close(fd);
        EXPECT_NE(host[0], 0xab);
        EXPECT_NE(host[4095], 0xab);
    });
}


// ---- edges of the legal -----------------------------------------------

// Queue sizes 1 and 2 are powers of two: a size-1 queue cannot hold a
// request (two descriptors at least), a size-2 one holds exactly one.
TEST_F(Hostile, TinyQueueSizes)
{
    RunCase([&] {
        for (uint16_t size : { 1, 2 }) {
            a.SetStatus(0);
            a.SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
            a.SetMmio(a.common + VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
            a.SetMmio(a.common + VIRTIO_PCI_COMMON_GF, 4, 1);
            a.SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                        VIRTIO_STATUS_FEATURES_OK);
            memset(guest.hva(a.ring_gpa), 0, 0x3000);
            a.ring = vtest::Ring();
            a.ring.g = &guest;
            a.ring.n = size;
            a.ring.desc = a.ring_gpa;
            a.ring.avail = a.ring_gpa + 0x1000;
            a.ring.used = a.ring_gpa + 0x2000;
            a.SelectQueue(0);
            a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_SIZE, 2, size);
            ASSERT_EQ(a.Mmio(a.common + VIRTIO_PCI_COMMON_Q_SIZE, 2), size);
            a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_DESCLO, 4, a.ring.desc);
            a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_AVAILLO, 4, a.ring.avail);
            a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_USEDLO, 4, a.ring.used);
            a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
            a.SetStatus(15);
            ASSERT_EQ(a.Status(), 15u);
            uint64_t st = StatusBuf();
            uint16_t before = a.ring.UsedIdx();
            a.ring.AddChain({ { Hdr(VIRTIO_BLK_T_FLUSH, 0), 16, false }, { st, 1, true } });
            a.Kick();
            if (size == 1) {
                ExpectBroken(a, before);
            } else {
                ASSERT_TRUE(a.WaitUsed(before));
                EXPECT_EQ(*(uint8_t *)guest.hva(st), VIRTIO_BLK_S_OK);
                ExpectRunning(a);
            }
        }
    });
}

// Data lengths that are not whole sectors: IOERR, not a partial transfer.
TEST_F(Hostile, PartialSectorLengthsFailWithIoerr)
{
    RunCase([&] {
        uint64_t buf = a.Alloc(1024);
        EXPECT_EQ(a.Request(VIRTIO_BLK_T_IN, 0, buf, 100, true), VIRTIO_BLK_S_IOERR);
        EXPECT_EQ(a.Request(VIRTIO_BLK_T_OUT, 0, buf, 513, false), VIRTIO_BLK_S_IOERR);
        ExpectRunning(a);
    });
}

// Only queue 1 of A's two is set up (queue 0 left disabled): queue 1
// serves, kicks of queue 0 are ignored.
TEST_F(Hostile, OnlyTheSecondQueueSetUp)
{
    RunCase([&] {
        a.SetStatus(0);
        a.SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_GF, 4, 1);
        a.SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                    VIRTIO_STATUS_FEATURES_OK);
        memset(guest.hva(a.ring_gpa), 0, 0x3000);
        a.ring = vtest::Ring();
        a.ring.g = &guest;
        a.ring.n = kQueueSize;
        a.ring.desc = a.ring_gpa;
        a.ring.avail = a.ring_gpa + 0x1000;
        a.ring.used = a.ring_gpa + 0x2000;
        a.SelectQueue(1);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_SIZE, 2, kQueueSize);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_DESCLO, 4, a.ring.desc);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_AVAILLO, 4, a.ring.avail);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_USEDLO, 4, a.ring.used);
        a.SetMmio(a.common + VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
        a.SetStatus(15);
        uint64_t st = StatusBuf();
        uint16_t before = a.ring.UsedIdx();
        a.ring.AddChain({ { Hdr(VIRTIO_BLK_T_FLUSH, 0), 16, false }, { st, 1, true } });
        a.Kick(0);
        a.Kick(1);
        ASSERT_TRUE(a.WaitUsed(before));
        EXPECT_EQ(*(uint8_t *)guest.hva(st), VIRTIO_BLK_S_OK);
        ExpectRunning(a);
    });
}

// BARs moved onto the interrupt controllers (the IOAPIC, the LAPIC/MSI
// window): not decoded, and back.
TEST_F(Hostile, BarsMovedOntoTheInterruptControllers)
{
    RunCase([&] {
        uint32_t bar1 = Cfg(a.slot, 0x14, 4);
        uint32_t lo = Cfg(a.slot, 0x20, 4), hi = Cfg(a.slot, 0x24, 4);
        SetCfg(a.slot, 0x14, 4, 0xfee00000);
        SetCfg(a.slot, 0x24, 4, 0);
        SetCfg(a.slot, 0x20, 4, 0xfec00000 | (lo & 0xf));
        uint64_t v = 0;
        address_space_read(mmio, 0xfec00000 + VIRTIO_PCI_COMMON_NUMQ, 2, &v);
        EXPECT_EQ(v, 0xffffu) << "BAR 4 decoded over the IOAPIC";
        address_space_read(mmio, 0xfee00000, 4, &v);
        EXPECT_EQ(v, 0xffffffffu) << "BAR 1 decoded over the LAPIC";
        SetCfg(a.slot, 0x14, 4, bar1);
        SetCfg(a.slot, 0x20, 4, lo);
        SetCfg(a.slot, 0x24, 4, hi);
        EXPECT_TRUE(a.Verify(11));
    });
}

// ---- races a guest can start -------------------------------------------

// A reset while a queue's worth of requests is in flight: the reset waits
// for them (drain), nothing they complete touches freed state.
TEST_F(Hostile, ResetWithRequestsInFlight)
{
    RunCase([&] {
        uint64_t data = a.Alloc(64 * 1024);
        for (int i = 0; i < kQueueSize / 3; i++) {
            uint64_t st = StatusBuf();
            a.ring.AddChain({ { Hdr(i % 2 ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT, 16 * i), 16, false },
                              { data + 2048 * i, 2048, i % 2 != 0 },
                              { st, 1, true } });
        }
        a.Kick();
        a.SetStatus(0); // no waiting for the used ring
        EXPECT_EQ(a.Status(), 0u);
    });
}

// One head published a queue's worth of times (a driver reusing a chain
// still in flight), then as many again: the device serves them or breaks
// (more chains in flight than the queue holds), and survives either way.
// Writes only: the copies read the same guest buffer at once.
TEST_F(Hostile, SameHeadPublishedOverAndOver)
{
    RunCase([&] {
        uint64_t data = a.Alloc(4096), st = StatusBuf();
        a.ring.SetDesc(0, Hdr(VIRTIO_BLK_T_OUT, 64), 16, VRING_DESC_F_NEXT, 1);
        a.ring.SetDesc(1, data, 4096, VRING_DESC_F_NEXT, 2);
        a.ring.SetDesc(2, st, 1, VRING_DESC_F_WRITE, 0);
        for (int round = 0; round < 4; round++) {
            for (int i = 0; i < kQueueSize; i++) {
                a.ring.Publish(0);
            }
            a.Kick();
            // The device must have taken the lot before more may come
            // (the avail idx may not run more than a queue ahead).
            auto deadline = std::chrono::steady_clock::now() + kHangLimit;
            while (a.ring.UsedIdx() != a.ring.avail_idx &&
                   !(a.Status() & VIRTIO_STATUS_NEEDS_RESET) &&
                   std::chrono::steady_clock::now() < deadline) {
                std::this_thread::sleep_for(std::chrono::microseconds(100));
            }
            if (a.Status() & VIRTIO_STATUS_NEEDS_RESET) {
                break;
            }
            EXPECT_EQ(a.ring.UsedIdx(), a.ring.avail_idx) << "round " << round;
        }
    });
}

// Kicks from a second vCPU (the ioeventfd path: the queue's notifier set
// with no lock) while the first one resets and restarts the device over
// and over, with requests in flight.
TEST_F(Hostile, KicksFromAnotherVcpuDuringResets)
{
    RunCase([&] {
        std::atomic<bool> stop{ false };
        std::atomic<uint64_t> kicks{ 0 };
        std::thread kicker([&] {
            shardvm_rcu_register_thread();
            while (!stop.load()) {
                for (unsigned q = 0; q < 3; q++) {
                    a.SetMmio(a.NotifyAddr(q), 2, q);
                }
                kicks.fetch_add(1);
            }
            shardvm_rcu_unregister_thread();
        });
        for (int i = 0; i < 20; i++) {
            ASSERT_EQ(a.Start(i % 2 == 0), 15u);
            for (int j = 0; j < 8; j++) {
                a.ring.AddChain({ { Hdr(VIRTIO_BLK_T_OUT, 8 * j), 16, false },
                                  { a.Alloc(4096), 4096, false },
                                  { StatusBuf(), 1, true } });
            }
            // No kick of our own: the other vCPU's are enough.
            if (i % 3 == 0) {
                a.ring.SetDesc(a.ring.next_desc, Hdr(0, 0), 16, VRING_DESC_F_NEXT,
                               a.ring.next_desc); // and sometimes a loop
                a.ring.Publish(a.ring.next_desc);
            }
            a.SetStatus(0);
        }
        stop = true;
        kicker.join();
        EXPECT_GT(kicks.load(), 0u);
    });
}

} // namespace
} // namespace hostile
