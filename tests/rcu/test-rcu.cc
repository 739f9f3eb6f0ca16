// RCU: call_rcu thread naming, grace periods, RcuArray, and a torture test
// where readers must never see a freed or half-built object.
#include "../common/thread-names.h"
#include "shardvm/rcu.h"
#include "shardvm/thread.h"

#include <gtest/gtest.h>

#include <atomic>
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

struct ReaderArgs {
    std::atomic<int> state{0}; // 1: inside the section, 2: about to leave
    std::atomic<bool> go{false};
};

void *HoldReadLock(void *opaque)
{
    auto *r = static_cast<ReaderArgs *>(opaque);
    rcu_read_lock();
    r->state = 1;
    while (!r->go.load()) {
        usleep(1000);
    }
    usleep(20000);
    r->state = 2;
    rcu_read_unlock();
    return nullptr;
}

TEST_F(Rcu, SynchronizeWaitsForPreexistingReaders)
{
    ReaderArgs r;
    pthread_t t;
    ASSERT_EQ(shardvm_thread_create(&t, "rcu-reader", HoldReadLock, &r,
                                    nullptr), 0);
    while (r.state.load() != 1) {
        usleep(1000);
    }
    r.go = true;
    synchronize_rcu();
    // The reader was inside its section when the grace period began.
    EXPECT_EQ(r.state.load(), 2);
    pthread_join(t, nullptr);
}

// ---- torture ----------------------------------------------------------

constexpr uint64_t kLive = 0x4c4956454c495645ull;
constexpr uint64_t kDead = 0xdeaddeaddeaddeadull;
constexpr int kPayload = 16;

struct Obj {
    struct rcu_head rcu;
    uint64_t magic;
    uint64_t seq;
    uint64_t payload[kPayload]; // payload[i] == seq * 31 + i
    uint64_t check;             // ~seq
};

Obj *torture_slot;
std::atomic<bool> torture_stop;
std::atomic<long> torture_errors;
std::atomic<long> torture_reads;

void ObjFree(struct rcu_head *head)
{
    Obj *o = caa_container_of(head, Obj, rcu);
    // Poison first: a reader that still saw it would notice even without
    // ASan; with ASan the free itself makes any late read an error.
    o->magic = kDead;
    o->check = 0;
    g_free(o);
}

void *TortureReader(void *)
{
    uint64_t last = 0;
    long reads = 0;
    while (!torture_stop.load(std::memory_order_relaxed)) {
        rcu_read_lock();
        Obj *o = rcu_dereference(torture_slot);
        if (o) {
            bool ok = o->magic == kLive && o->check == ~o->seq &&
                      o->seq >= last;
            for (int i = 0; ok && i < kPayload; i++) {
                ok = o->payload[i] == o->seq * 31 + i;
            }
            if (!ok) {
                torture_errors++;
            }
            last = o->seq;
        }
        rcu_read_unlock();
        reads++;
    }
    torture_reads += reads;
    return nullptr;
}

TEST_F(Rcu, TortureReadersNeverSeeFreedOrHalfBuiltObjects)
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
        Obj *o = g_new(Obj, 1);
        o->magic = kLive;
        o->seq = seq;
        for (int i = 0; i < kPayload; i++) {
            o->payload[i] = seq * 31 + i;
        }
        o->check = ~seq;
        Obj *old = rcu_xchg_pointer(&torture_slot, o);
        if (old) {
            call_rcu(&old->rcu, ObjFree);
        }
        // Now and then wait for a grace period too, so both reclaim paths
        // race with the readers.
        if (seq % 10000 == 0) {
            synchronize_rcu();
        }
    }
    torture_stop = true;
    for (auto &t : readers) {
        pthread_join(t, nullptr);
    }
    Obj *last = rcu_xchg_pointer(&torture_slot, (Obj *)nullptr);
    call_rcu(&last->rcu, ObjFree);
    shardvm_rcu_drain();
    EXPECT_EQ(torture_errors.load(), 0);
    EXPECT_GT(torture_reads.load(), 0);
}

} // namespace
