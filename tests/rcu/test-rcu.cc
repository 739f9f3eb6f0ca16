// RCU: call_rcu thread naming, grace periods, RcuArray, and a torture test
// where readers must never see a freed or half-built object.
#include "../common/thread-names.h"
#include "../common/thread-state.h"
#include "shardvm/rcu.h"
#include "shardvm/thread.h"

#include <gtest/gtest.h>

#include <atomic>
#include <sched.h>
#include <dirent.h>
#include <fstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

// Names of all threads of this process, from /proc/self/task/*/comm.
std::vector<std::string> ThreadNames()
{
    return test_thread_names();
}

class Rcu : public ::testing::Test {
protected:
    void SetUp() override { shardvm_rcu_init(); }
    void TearDown() override { shardvm_rcu_drain(); }
};

TEST_F(Rcu, CallRcuThreadIsNamed)
{
    shardvm_rcu_init(); // idempotent
    int n = 0;
    for (const auto &name : ThreadNames()) {
        n += name == "call_rcu";
    }
    EXPECT_EQ(n, 1);
}

std::atomic<int> destroyed;
void CountDestroy(void *elem)
{
    EXPECT_EQ(*(int *)elem, 7);
    destroyed++;
}

TEST_F(Rcu, ArrayPublishFreesOldAfterGracePeriod)
{
    RcuArray *slot = nullptr;
    destroyed = 0;
    for (int round = 0; round < 10; round++) {
        RcuArray *a = rcu_array_new(4, sizeof(int), CountDestroy);
        for (size_t i = 0; i < a->len; i++) {
            *(int *)rcu_array_at(a, i) = 7;
        }
        EXPECT_EQ((uintptr_t)rcu_array_at(a, 0) % 16, 0u);
        rcu_array_publish(&slot, a);
        rcu_read_lock();
        EXPECT_EQ(rcu_array_get(&slot), a);
        rcu_read_unlock();
    }
    shardvm_rcu_drain();
    EXPECT_EQ(destroyed.load(), 9 * 4);
    rcu_array_publish(&slot, nullptr);
    shardvm_rcu_drain();
    EXPECT_EQ(destroyed.load(), 10 * 4);
    EXPECT_EQ(slot, nullptr);

    RcuArray *never = rcu_array_new(2, sizeof(int), CountDestroy);
    *(int *)rcu_array_at(never, 0) = 7;
    *(int *)rcu_array_at(never, 1) = 7;
    rcu_array_free_now(never);
    EXPECT_EQ(destroyed.load(), 10 * 4 + 2);
    rcu_array_free_now(nullptr);
}

// A size that overflows is a caller bug: a loud abort, not a short array.
TEST(RcuDeathTest, ArrayNewOverflowAborts)
{
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_DEATH(rcu_array_new(SIZE_MAX / 2, 4, nullptr), "overflows");
    EXPECT_DEATH(rcu_array_new(1, SIZE_MAX - 8, nullptr), "overflows");
}

// ---- a reader held across a publish ------------------------------------
//
// The contract of rcu_array_publish(): a reader that is inside
// rcu_read_lock() keeps the array it dereferenced; nothing of it is
// reclaimed (no elem_destroy runs) until it leaves, and it is reclaimed
// once it has left and the callbacks are drained.  The reader below is
// held inside its section by the test, which publishes, checks, and only
// then lets it go.  Orderings only: no sleeps decide anything.

constexpr int kLiveElem = 7;
constexpr int kPoison = 0x5eadbeef;
std::atomic<int> reclaimed;

// elem_destroy: count, then poison, so a late reader sees garbage even
// without ASan.
void CountAndPoison(void *elem)
{
    reclaimed++;
    *(int *)elem = kPoison;
}

RcuArray *NewLiveArray(size_t len)
{
    RcuArray *a = rcu_array_new(len, sizeof(int), CountAndPoison);
    for (size_t i = 0; i < len; i++) {
        *(int *)rcu_array_at(a, i) = kLiveElem;
    }
    return a;
}

struct HeldReader {
    RcuArray **slot = nullptr;
    std::atomic<int> state{0};     // 1: inside, holding; 2: has left
    std::atomic<bool> leave{false};
    std::atomic<int> reclaimed_inside{-1}; // reclaimed count just before leaving
    std::atomic<int> bad_elems{0};         // poisoned elements seen inside
    RcuArray *seen = nullptr;
};

void *HoldArray(void *opaque)
{
    auto *r = static_cast<HeldReader *>(opaque);
    rcu_read_lock();
    r->seen = rcu_array_get(r->slot);
    r->state = 1;
    while (!r->leave.load()) {
        sched_yield();
    }
    // Still inside: the old array must be whole.
    for (size_t i = 0; i < r->seen->len; i++) {
        if (*(int *)rcu_array_at(r->seen, i) != kLiveElem) {
            r->bad_elems++;
        }
    }
    r->reclaimed_inside = reclaimed.load();
    rcu_read_unlock();
    r->state = 2;
    return nullptr;
}

TEST_F(Rcu, ReaderInsideSectionKeepsOldArrayUntilItLeaves)
{
    RcuArray *slot = nullptr;
    RcuArray *old = NewLiveArray(4);
    rcu_array_publish(&slot, old);
    shardvm_rcu_drain();
    reclaimed = 0;

    HeldReader r;
    r.slot = &slot;
    pthread_t t;
    ASSERT_EQ(shardvm_thread_create(&t, "rcu-holder", HoldArray, &r,
                                    nullptr), 0);
    while (r.state.load() != 1) {
        sched_yield();
    }
    ASSERT_EQ(r.seen, old);

    // Replace it twice while the reader holds the first one; the second
    // replacement's victim was never seen by the reader, but the grace
    // period still covers the reader, so it waits too.
    rcu_array_publish(&slot, NewLiveArray(4));
    EXPECT_EQ(reclaimed.load(), 0) << "old array reclaimed under a reader";
    rcu_array_publish(&slot, NewLiveArray(4));
    EXPECT_EQ(reclaimed.load(), 0) << "old array reclaimed under a reader";

    r.leave = true;
    pthread_join(t, nullptr);
    EXPECT_EQ(r.bad_elems.load(), 0) << "reader saw poisoned elements";
    EXPECT_EQ(r.reclaimed_inside.load(), 0)
        << "elements reclaimed while the reader was inside";

    shardvm_rcu_drain();
    EXPECT_EQ(reclaimed.load(), 8) << "both old arrays freed once it left";
    rcu_array_publish(&slot, nullptr);
    shardvm_rcu_drain();
    EXPECT_EQ(reclaimed.load(), 12);
}

// The same from the publisher's side of a grace period: a call_rcu
// callback queued while the reader holds the array cannot run until the
// reader leaves, even when the test waits for it on another thread.
struct Drainer {
    std::atomic<int> tid{0};
    std::atomic<bool> done{false};
};

void *DrainInThread(void *opaque)
{
    auto *d = static_cast<Drainer *>(opaque);
    d->tid = test_gettid();
    shardvm_rcu_drain();
    d->done = true;
    return nullptr;
}

TEST_F(Rcu, DrainDuringHeldReaderWaitsForIt)
{
    RcuArray *slot = nullptr;
    rcu_array_publish(&slot, NewLiveArray(2));
    shardvm_rcu_drain();
    reclaimed = 0;

    HeldReader r;
    r.slot = &slot;
    pthread_t t, dt;
    ASSERT_EQ(shardvm_thread_create(&t, "rcu-holder", HoldArray, &r,
                                    nullptr), 0);
    while (r.state.load() != 1) {
        sched_yield();
    }
    rcu_array_publish(&slot, NewLiveArray(2));

    Drainer d;
    ASSERT_EQ(shardvm_thread_create(&dt, "rcu-drainer", DrainInThread, &d,
                                    nullptr), 0);
    // Wait until the drainer is asleep waiting for the callback (or, if
    // reclamation is broken, has already finished).
    while (!d.done.load() && (d.tid.load() == 0 ||
                              !test_thread_blocked(d.tid.load()))) {
        sched_yield();
    }
    EXPECT_FALSE(d.done.load()) << "callbacks drained under a reader";
    EXPECT_EQ(reclaimed.load(), 0);

    r.leave = true;
    pthread_join(t, nullptr);
    pthread_join(dt, nullptr);
    EXPECT_TRUE(d.done.load());
    EXPECT_EQ(reclaimed.load(), 2);
    EXPECT_EQ(r.bad_elems.load(), 0);
    rcu_array_publish(&slot, nullptr);
    shardvm_rcu_drain();
}

// synchronize_rcu() returns only after a reader that was inside when it
// began has left: the reader stays until the synchroniser is asleep in the
// grace period, then checks it has not returned.
struct SyncReader {
    int sync_tid = 0;
    std::atomic<bool> inside{false};
    std::atomic<bool> sync_returned{false};
    std::atomic<bool> returned_while_inside{false};
};

void *ReadUntilSyncSleeps(void *opaque)
{
    auto *r = static_cast<SyncReader *>(opaque);
    rcu_read_lock();
    r->inside = true;
    while (!r->sync_returned.load() && !test_thread_blocked(r->sync_tid)) {
        sched_yield();
    }
    r->returned_while_inside = r->sync_returned.load();
    rcu_read_unlock();
    return nullptr;
}

TEST_F(Rcu, SynchronizeWaitsForPreexistingReaders)
{
    SyncReader r;
    r.sync_tid = test_gettid();
    pthread_t t;
    ASSERT_EQ(shardvm_thread_create(&t, "rcu-reader", ReadUntilSyncSleeps,
                                    &r, nullptr), 0);
    while (!r.inside.load()) {
        sched_yield();
    }
    synchronize_rcu();
    r.sync_returned = true;
    pthread_join(t, nullptr);
    EXPECT_FALSE(r.returned_while_inside.load());
}

// ---- torture ----------------------------------------------------------
//
// RcuArray under fire: a writer replaces the array 100000 times while
// readers check every element of the one they hold.  elem_destroy poisons,
// so a reclamation that does not wait for the readers shows up as a bad
// element (and as a use after free under ASan).

constexpr uint64_t kDead = 0xdeaddeaddeaddeadull;
constexpr size_t kPayload = 16;

RcuArray *torture_slot;
std::atomic<bool> torture_stop;
std::atomic<long> torture_errors;
std::atomic<long> torture_reads;

void PoisonU64(void *elem)
{
    *(uint64_t *)elem = kDead;
}

// Element 0 is the sequence number, element i is seq * 31 + i.
RcuArray *TortureArray(uint64_t seq)
{
    RcuArray *a = rcu_array_new(kPayload, sizeof(uint64_t), PoisonU64);
    *(uint64_t *)rcu_array_at(a, 0) = seq;
    for (size_t i = 1; i < kPayload; i++) {
        *(uint64_t *)rcu_array_at(a, i) = seq * 31 + i;
    }
    return a;
}

void *TortureReader(void *)
{
    uint64_t last = 0;
    long reads = 0;
    while (!torture_stop.load(std::memory_order_relaxed)) {
        rcu_read_lock();
        RcuArray *a = rcu_array_get(&torture_slot);
        if (a) {
            uint64_t seq = *(uint64_t *)rcu_array_at(a, 0);
            bool ok = a->len == kPayload && seq != kDead && seq >= last;
            for (size_t i = 1; ok && i < kPayload; i++) {
                ok = *(uint64_t *)rcu_array_at(a, i) == seq * 31 + i;
            }
            if (!ok) {
                torture_errors++;
            }
            last = seq;
        }
        rcu_read_unlock();
        reads++;
    }
    torture_reads += reads;
    return nullptr;
}

TEST_F(Rcu, TortureReadersNeverSeeFreedOrHalfBuiltArrays)
{
    constexpr int kReaders = 3;
    constexpr uint64_t kUpdates = 100000;
    pthread_t readers[kReaders];

    torture_slot = nullptr;
    torture_stop = false;
    torture_errors = 0;
    torture_reads = 0;
    for (auto &t : readers) {
        ASSERT_EQ(shardvm_thread_create(&t, "rcu-torture", TortureReader,
                                        nullptr, nullptr), 0);
    }
    for (uint64_t seq = 1; seq <= kUpdates; seq++) {
        rcu_array_publish(&torture_slot, TortureArray(seq));
        // Now and then wait for the queued frees, so reclamation keeps
        // racing with the readers instead of piling up.
        if (seq % 10000 == 0) {
            shardvm_rcu_drain();
        }
    }
    torture_stop = true;
    for (auto &t : readers) {
        pthread_join(t, nullptr);
    }
    rcu_array_publish(&torture_slot, nullptr);
    shardvm_rcu_drain();
    EXPECT_EQ(torture_errors.load(), 0);
    EXPECT_GT(torture_reads.load(), 0);
}

} // namespace
