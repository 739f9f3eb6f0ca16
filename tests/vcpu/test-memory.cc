// The RCU address space on its own (no KVM): table order, overlap checks,
// dispatch, unassigned accesses, the BQL rule and region lifetime.
#include "vcpu-fixture.h"
#include "../common/thread-state.h"

#include <cerrno>

class AddressSpaceTest : public ::testing::Test {
protected:
    AddressSpace *as_ = nullptr;
    void SetUp() override
    {
        static thread_local RcuThread reg;
        (void)reg;
        as_ = address_space_new("test", ADDRESS_SPACE_MMIO);
    }
    void TearDown() override
    {
        address_space_free(as_);
        shardvm_rcu_drain();
    }
    IORegion *add(uint64_t base, uint64_t size, void *opaque,
                  const IORegionOps *ops = &Recorder::ops, unsigned flags = 0,
                  int *err = nullptr)
    {
        GError *e = nullptr;
        IORegion *r = address_space_add(as_, "r", base, size, ops, opaque,
                                         flags, &e);
        if (err) {
            *err = e ? -e->code : 0;
        }
        if (e) {
            g_error_free(e);
        }
        return r;
    }
};

TEST_F(AddressSpaceTest, FindSortedRegions)
{
    Recorder a, b, c;
    // Added out of order: the table stays sorted.
    ASSERT_NE(add(0x3000, 0x100, &c), nullptr);
    ASSERT_NE(add(0x1000, 0x1000, &a), nullptr);
    ASSERT_NE(add(0x2000, 0x10, &b), nullptr);
    EXPECT_EQ(address_space_get_nr_regions(as_), 3u);

    urcu_memb_read_lock();
    EXPECT_EQ(address_space_find(as_, 0xfff), nullptr);
    ASSERT_NE(address_space_find(as_, 0x1000), nullptr);
    EXPECT_EQ(io_region_get_base(address_space_find(as_, 0x1fff)), 0x1000u);
    EXPECT_EQ(io_region_get_base(address_space_find(as_, 0x2000)), 0x2000u);
    EXPECT_EQ(address_space_find(as_, 0x2010), nullptr);
    EXPECT_EQ(io_region_get_size(address_space_find(as_, 0x30ff)), 0x100u);
    EXPECT_EQ(address_space_find(as_, 0x3100), nullptr);
    urcu_memb_read_unlock();
}

TEST_F(AddressSpaceTest, RejectsOverlapAndBadRanges)
{
    Recorder a;
    int err = 0;
    ASSERT_NE(add(0x1000, 0x100, &a), nullptr);
    EXPECT_EQ(add(0x10ff, 1, &a, &Recorder::ops, 0, &err), nullptr);
    EXPECT_EQ(err, -EEXIST);
    EXPECT_EQ(add(0xf00, 0x101, &a, &Recorder::ops, 0, &err), nullptr);
    EXPECT_EQ(err, -EEXIST);
    EXPECT_EQ(add(0x800, 0x1000, &a, &Recorder::ops, 0, &err), nullptr);
    EXPECT_EQ(err, -EEXIST);
    EXPECT_EQ(add(0x2000, 0, &a, &Recorder::ops, 0, &err), nullptr);
    EXPECT_EQ(err, -EINVAL);
    EXPECT_EQ(add(UINT64_MAX - 1, 4, &a, &Recorder::ops, 0, &err), nullptr);
    EXPECT_EQ(err, -EINVAL);
    // Adjacent is fine.
    EXPECT_NE(add(0x1100, 0x100, &a), nullptr);
    EXPECT_NE(add(0xf00, 0x100, &a), nullptr);
    EXPECT_EQ(address_space_get_nr_regions(as_), 3u);

    AddressSpace *pio = address_space_new("pio", ADDRESS_SPACE_PIO);
    GError *e = nullptr;
    EXPECT_EQ(address_space_add(pio, "big", 0xfff0, 0x20, &Recorder::ops, &a,
                                0, &e), nullptr);
    ASSERT_NE(e, nullptr);
    g_error_free(e);
    address_space_free(pio);
}

TEST_F(AddressSpaceTest, DispatchAndUnassigned)
{
    Recorder a;
    a.read_value = 0x1122334455667788ull;
    IORegion *r = add(0x1000, 0x100, &a);
    ASSERT_NE(r, nullptr);

    EXPECT_TRUE(address_space_write(as_, 0x1010, 2, 0xabcdef));
    EXPECT_EQ(a.last_offset.load(), 0x10u);
    EXPECT_EQ(a.last_size.load(), 2u);
    EXPECT_EQ(a.last_value.load(), 0xcdefu); // masked to the access size
    uint64_t v = 0;
    EXPECT_TRUE(address_space_read(as_, 0x1020, 4, &v));
    EXPECT_EQ(v, 0x55667788u);
    EXPECT_TRUE(address_space_read(as_, 0x1020, 8, &v));
    EXPECT_EQ(v, 0x1122334455667788ull);

    EXPECT_FALSE(address_space_read(as_, 0x2000, 2, &v));
    EXPECT_EQ(v, 0xffffu);
    EXPECT_FALSE(address_space_write(as_, 0x2000, 4, 1));
    EXPECT_EQ(address_space_get_unassigned(as_), 2u);

    address_space_remove(as_, r);
    uint64_t writes = a.writes.load();
    EXPECT_FALSE(address_space_write(as_, 0x1010, 1, 1));
    EXPECT_EQ(a.writes.load(), writes);
    EXPECT_EQ(address_space_get_nr_regions(as_), 0u);
}

TEST_F(AddressSpaceTest, NullCallbacks)
{
    static const IORegionOps none = { nullptr, nullptr };
    ASSERT_NE(add(0x1000, 4, nullptr, &none), nullptr);
    uint64_t v = 0;
    EXPECT_TRUE(address_space_read(as_, 0x1000, 4, &v));
    EXPECT_EQ(v, 0xffffffffu);
    EXPECT_TRUE(address_space_write(as_, 0x1000, 4, 5));
}

TEST_F(AddressSpaceTest, BqlRegionRunsUnderBqlOthersDoNot)
{
    Recorder locked, free_;
    bql_lock();
    ASSERT_NE(add(0x1000, 4, &locked, &Recorder::ops, IO_REGION_NEEDS_BQL),
              nullptr);
    bql_unlock();
    ASSERT_NE(add(0x2000, 4, &free_), nullptr);
    std::thread t([&] {
        RcuThread reg;
        address_space_write(as_, 0x1000, 4, 1);
        address_space_write(as_, 0x2000, 4, 1);
    });
    t.join();
    EXPECT_TRUE(locked.bql_seen.load());
    EXPECT_FALSE(locked.bql_missing.load());
    EXPECT_TRUE(free_.bql_missing.load());
    EXPECT_FALSE(free_.bql_seen.load());
}

// A dispatch that looked the region up and then waits for the BQL must
// not call the device once the BQL holder removed the region.
TEST_F(AddressSpaceTest, BqlRegionRemovedWhileDispatchWaits)
{
    Recorder dev;
    bql_lock();
    IORegion *r = add(0x1000, 4, &dev, &Recorder::ops, IO_REGION_NEEDS_BQL);
    ASSERT_NE(r, nullptr);
    std::atomic<bool> result{true}, done{false};
    std::atomic<int> tid{0};
    std::thread t([&] {
        RcuThread reg;
        tid = test_gettid();
        result = address_space_write(as_, 0x1000, 4, 1);
        done = true;
    });
    // Until the thread has found the region and sleeps waiting for the
    // BQL (it cannot finish while we hold it).
    while (!done.load() && (tid.load() == 0 || !test_thread_blocked(tid.load()))) {
        std::this_thread::yield();
    }
    EXPECT_FALSE(done.load());
    address_space_remove(as_, r);
    bql_unlock();
    t.join();
    EXPECT_FALSE(result.load());
    EXPECT_EQ(dev.writes.load(), 0u);
    EXPECT_EQ(address_space_get_unassigned(as_), 1u);
}

// Every kind of dispatch leaves the RCU read-side section it entered: a
// lock-free region, a NEEDS_BQL region (with and without the BQL held by
// the caller), an unassigned access and a split one.  A section left open
// would make this thread's next synchronize_rcu() wait for itself.
TEST_F(AddressSpaceTest, DispatchLeavesReadSideSection)
{
    Recorder lf, bq;
    ASSERT_NE(add(0x1000, 4, &lf), nullptr);
    bql_lock();
    ASSERT_NE(add(0x2000, 4, &bq, &Recorder::ops, IO_REGION_NEEDS_BQL),
              nullptr);
    bql_unlock();
    std::thread t([&] {
        RcuThread reg;
        uint64_t v;
        EXPECT_FALSE(urcu_memb_read_ongoing());
        address_space_read(as_, 0x1000, 4, &v);
        EXPECT_FALSE(urcu_memb_read_ongoing()) << "lock-free";
        address_space_write(as_, 0x2000, 4, 1);
        EXPECT_FALSE(urcu_memb_read_ongoing()) << "NEEDS_BQL";
        bql_lock();
        address_space_write(as_, 0x2000, 4, 2);
        bql_unlock();
        EXPECT_FALSE(urcu_memb_read_ongoing()) << "NEEDS_BQL, BQL held";
        address_space_read(as_, 0x9000, 4, &v);
        EXPECT_FALSE(urcu_memb_read_ongoing()) << "unassigned";
        address_space_read(as_, 0x1002, 4, &v);
        EXPECT_FALSE(urcu_memb_read_ongoing()) << "split";
    });
    t.join();
    EXPECT_EQ(bq.writes.load(), 2u);
}

// Readers hammer a region while the table is rebuilt 1,000 times; a
// removed lock-free region is never called after its removal returned.
// Callbacks of ReplaceTableWhileReading's dead regions that ran after
// their removal had returned.
static std::atomic<int> dead_late{0};

TEST_F(AddressSpaceTest, ReplaceTableWhileReading)
{
    Counter stable;
    stable.expect_offset = 0;
    ASSERT_NE(add(0x8000, 1, &stable, &Counter::ops), nullptr);
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> done[2] = {{0}, {0}};
    // The base of the region being added and removed: readers aim at it,
    // so the dead region's callbacks really race with its removal.
    std::atomic<uint64_t> target{0};
    std::vector<std::thread> readers;
    for (int i = 0; i < 2; i++) {
        readers.emplace_back([&, i] {
            RcuThread reg;
            while (!stop.load()) {
                ASSERT_TRUE(address_space_write(as_, 0x8000, 1, 0));
                done[i]++;
                uint64_t v;
                uint64_t at = target.load();
                address_space_read(as_, at, 1, &v);
                address_space_write(as_, at + 1, 1, 0);
            }
        });
    }
    // A device whose state is "freed" (poisoned) right after the removal
    // returns, as a real device would free it: a callback that runs or is
    // still running after that sees the poison.
    struct Dead {
        std::atomic<bool> removed{false};
        std::atomic<int> calls{0};
        static void touch(Dead *d)
        {
            d->calls++;
            // Stay a little while inside, so a removal that does not wait
            // for the callbacks has a window to return in.
            for (int k = 0; k < 200; k++) {
                if (d->removed.load()) {
                    dead_late++;
                    return;
                }
            }
        }
        static uint64_t read_cb(void *o, uint64_t, unsigned)
        {
            touch(static_cast<Dead *>(o));
            return 0;
        }
        static void write_cb(void *o, uint64_t, uint64_t, unsigned)
        {
            touch(static_cast<Dead *>(o));
        }
    };
    static const IORegionOps dead_ops = { Dead::read_cb, Dead::write_cb };
    dead_late = 0;
    for (int i = 0; i < 100; i++) {
        Dead d;
        uint64_t base = 0x100 * (i % 64);
        IORegion *r = add(base, 0x10, &d, &dead_ops);
        ASSERT_NE(r, nullptr);
        target = base;
        // Not vacuous: the region is in use when it goes away.
        while (d.calls.load() == 0) {
            std::this_thread::yield();
        }
        address_space_remove(as_, r);
        d.removed = true;
        int calls = d.calls.load();
        EXPECT_EQ(dead_late.load(), 0) << "callback ran after removal";
        EXPECT_EQ(d.calls.load(), calls) << "callback entered after removal";
    }
    stop = true;
    for (auto &t : readers) {
        t.join();
    }
    EXPECT_EQ(dead_late.load(), 0);
    EXPECT_EQ(stable.writes.load(), done[0].load() + done[1].load());
    EXPECT_EQ(stable.bad.load(), 0u);
}

// The lifetime contract, deterministically: a vCPU (here a plain thread)
// is inside a lock-free region's read callback, i.e. inside its RCU
// read-side section.  address_space_remove() on another thread must not
// return until that callback has returned; the test holds the callback
// until the remover is asleep in the grace period (or, if the contract is
// broken, has returned), and then checks which one happened.
TEST_F(AddressSpaceTest, RemoveWaitsForCallbackInsideReadSection)
{
    struct Held {
        std::atomic<bool> inside{false};
        std::atomic<bool> release{false};
        std::atomic<bool> freed{false}; // "opaque freed" by the remover
        std::atomic<int> used_after_free{0};
        static uint64_t read_cb(void *o, uint64_t, unsigned)
        {
            auto *h = static_cast<Held *>(o);
            h->inside = true;
            while (!h->release.load()) {
                std::this_thread::yield();
            }
            if (h->freed.load()) {
                h->used_after_free++;
            }
            return 0x5a;
        }
    };
    static const IORegionOps held_ops = { Held::read_cb, nullptr };
    Held h;
    IORegion *r = add(0x1000, 0x10, &h, &held_ops);
    ASSERT_NE(r, nullptr);
    // A neighbour that stays: the table is replaced, not emptied.
    Recorder other;
    ASSERT_NE(add(0x2000, 0x10, &other), nullptr);

    uint64_t got = 0;
    std::thread reader([&] {
        RcuThread reg;
        address_space_read(as_, 0x1008, 1, &got);
    });
    while (!h.inside.load()) {
        std::this_thread::yield();
    }

    std::atomic<int> remover_tid{0};
    std::atomic<bool> removed{false};
    std::thread remover([&] {
        RcuThread reg;
        remover_tid = test_gettid();
        address_space_remove(as_, r);
        removed = true;
        h.freed = true; // the device would free its state now
    });
    while (!removed.load() && (remover_tid.load() == 0 ||
                               !test_thread_blocked(remover_tid.load()))) {
        std::this_thread::yield();
    }
    EXPECT_FALSE(removed.load())
        << "address_space_remove returned while a callback was running";
    // The new table is already published: new accesses miss the region.
    EXPECT_EQ(address_space_get_nr_regions(as_), 1u);

    h.release = true;
    reader.join();
    remover.join();
    EXPECT_TRUE(removed.load());
    EXPECT_EQ(got, 0x5au);
    EXPECT_EQ(h.used_after_free.load(), 0);
    uint64_t v = 0;
    EXPECT_FALSE(address_space_read(as_, 0x1008, 1, &v));
    EXPECT_EQ(v, 0xffu);
}

// A reader that looked a region up inside its read-side section keeps the
// old table and the region in it while another thread removes the region:
// the removal waits for the reader, and what it holds stays readable.
TEST_F(AddressSpaceTest, ReaderKeepsRemovedRegionUntilItLeaves)
{
    Recorder a, b;
    IORegion *ra = add(0x3000, 0x10, &a);
    ASSERT_NE(ra, nullptr);
    ASSERT_NE(add(0x4000, 0x10, &b), nullptr);
    urcu_memb_read_lock();
    IORegion *seen = address_space_find(as_, 0x3004);
    ASSERT_EQ(seen, ra);
    std::atomic<int> tid{0};
    std::atomic<bool> removed{false};
    std::thread writer([&] {
        RcuThread reg;
        tid = test_gettid();
        address_space_remove(as_, ra);
        removed = true;
    });
    while (!removed.load() &&
           (tid.load() == 0 || !test_thread_blocked(tid.load()))) {
        std::this_thread::yield();
    }
    EXPECT_FALSE(removed.load()) << "removal did not wait for the reader";
    EXPECT_EQ(io_region_get_base(seen), 0x3000u);
    EXPECT_EQ(io_region_get_size(seen), 0x10u);
    EXPECT_STREQ(io_region_get_name(seen), "r");
    urcu_memb_read_unlock();
    writer.join();
    EXPECT_TRUE(removed.load());
    EXPECT_EQ(address_space_get_nr_regions(as_), 1u);
}

// A device that answers each byte with its port's low byte plus 0x10, so a
// read shows which bytes it supplied.
struct ByteDevice {
    std::vector<std::pair<uint64_t, unsigned>> reads, writes; // off, size
    std::vector<uint64_t> values;
    static uint64_t read_cb(void *opaque, uint64_t off, unsigned size)
    {
        auto *d = static_cast<ByteDevice *>(opaque);
        d->reads.emplace_back(off, size);
        uint64_t v = 0;
        for (unsigned i = 0; i < size; i++) {
            v |= (uint64_t)(0x10 + off + i) << (8 * i);
        }
        return v;
    }
    static void write_cb(void *opaque, uint64_t off, uint64_t v, unsigned size)
    {
        auto *d = static_cast<ByteDevice *>(opaque);
        d->writes.emplace_back(off, size);
        d->values.push_back(v);
    }
    static inline const IORegionOps ops = { read_cb, write_cb };
};

// Issue 8 point 5: "outl 0x3fd" must not wrap inside an 8-port UART; the
// byte past its end belongs to the next owner (or nobody).
TEST_F(AddressSpaceTest, WideAccessCrossingRegionEndIsSplit)
{
    AddressSpace *pio = address_space_new("pio", ADDRESS_SPACE_PIO);
    ByteDevice uart, next;
    GError *e = nullptr;
    ASSERT_NE(address_space_add(pio, "uart", 0x3f8, 8, &ByteDevice::ops,
                                &uart, 0, &e), nullptr);
    ASSERT_NE(address_space_add(pio, "next", 0x400, 4, &ByteDevice::ops,
                                &next, 0, &e), nullptr);

    // outl 0x3fd: three bytes to the UART (offsets 5..7), one to "next".
    EXPECT_TRUE(address_space_write(pio, 0x3fd, 4, 0x44332211));
    std::vector<std::pair<uint64_t, unsigned>> want_uart = { { 5, 2 },
                                                              { 7, 1 } };
    EXPECT_EQ(uart.writes, want_uart);
    EXPECT_EQ(uart.values, (std::vector<uint64_t>{ 0x2211, 0x33 }));
    std::vector<std::pair<uint64_t, unsigned>> want_next = { { 0, 1 } };
    EXPECT_EQ(next.writes, want_next);
    EXPECT_EQ(next.values, std::vector<uint64_t>{ 0x44 });
    for (auto &w : uart.writes) {
        EXPECT_LT(w.first + w.second, 9u); // nothing wrapped to offset 0
    }

    // inl 0x3fe: two bytes from the UART, two from "next".
    uint64_t v = 0;
    EXPECT_TRUE(address_space_read(pio, 0x3fe, 4, &v));
    EXPECT_EQ(v, 0x11101716u);

    // A gap after the region reads as ones, and is counted.
    ByteDevice lone;
    ASSERT_NE(address_space_add(pio, "lone", 0x500, 2, &ByteDevice::ops,
                                &lone, 0, &e), nullptr);
    uint64_t before = address_space_get_unassigned(pio);
    EXPECT_TRUE(address_space_read(pio, 0x501, 4, &v));
    EXPECT_EQ(v, 0xffffff11u);
    EXPECT_GT(address_space_get_unassigned(pio), before);

    // An access starting in a gap reaches the region it runs into.
    lone.writes.clear();
    EXPECT_TRUE(address_space_write(pio, 0x4ff, 2, 0xaabb));
    std::vector<std::pair<uint64_t, unsigned>> want_lone = { { 0, 1 } };
    EXPECT_EQ(lone.writes, want_lone);
    EXPECT_EQ(lone.values.back(), 0xaau);

    // The last port: bytes past 0xffff are nobody's.
    ByteDevice top;
    ASSERT_NE(address_space_add(pio, "top", 0xfffe, 2, &ByteDevice::ops, &top,
                                0, &e), nullptr);
    EXPECT_TRUE(address_space_read(pio, 0xffff, 4, &v));
    EXPECT_EQ(v, 0xffffff11u);

    // Inside one region nothing changes: one access of the full size.
    uart.writes.clear();
    EXPECT_TRUE(address_space_write(pio, 0x3f8, 4, 1));
    want_uart = { { 0, 4 } };
    EXPECT_EQ(uart.writes, want_uart);

    address_space_free(pio);
}

// An access whose end wraps past the top of a 64-bit space: the last byte
// (address UINT64_MAX) used to give a piece of 0 bytes, and the split loop
// never advanced (a vCPU spinning forever).  Every byte is answered once.
TEST_F(AddressSpaceTest, WideAccessAtTopOfSpaceTerminates)
{
    ByteDevice top;
    ASSERT_NE(add(UINT64_MAX - 0xf, 0x10, &top, &ByteDevice::ops), nullptr);
    uint64_t v = 0;
    // Region at the very top: the last byte is its offset 0xf.
    EXPECT_TRUE(address_space_read(as_, UINT64_MAX - 1, 4, &v));
    EXPECT_EQ(v & 0xffff, 0x1f1eu);
    EXPECT_EQ(v >> 16, 0xffffu); // past the top: nobody's
    EXPECT_TRUE(address_space_write(as_, UINT64_MAX, 8, 0x1122334455667788));
    ASSERT_FALSE(top.writes.empty());
    EXPECT_EQ(top.writes.back(), (std::pair<uint64_t, unsigned>{ 0xf, 1 }));
    EXPECT_EQ(top.values.back(), 0x88u);

    // The same in a gap (no region at the top).
    AddressSpace *gap = address_space_new("gap", ADDRESS_SPACE_MMIO);
    EXPECT_FALSE(address_space_read(gap, UINT64_MAX - 2, 8, &v));
    EXPECT_EQ(v, UINT64_MAX);
    address_space_free(gap);
}
