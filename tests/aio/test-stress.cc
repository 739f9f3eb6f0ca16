// Stress: 4 producer threads schedule 1,000,000 one-shot BHs plus BH
// reschedules, timer requests and bare notifications into one polling
// context.  Exact counts, no hang.  CI also runs it under TSan.
#include "aio-test.h"

#include <errno.h>

#include <vector>

namespace {

constexpr int kProducers = 4;
constexpr int kPerProducer = 250000;

struct Shared {
    std::atomic<long> oneshots{0};
    long per_producer_last[kProducers] = {};
    std::atomic<long> order_errors{0};
};

struct Msg {
    Shared *s;
    int producer;
    long seq;
};

void oneshot_cb(void *o)
{
    auto *m = static_cast<Msg *>(o);
    // Per-producer FIFO: BHs scheduled by one thread run in order.
    // (Runs only in the home thread: the array needs no lock.)
    if (m->seq != m->s->per_producer_last[m->producer] + 1) {
        m->s->order_errors.fetch_add(1);
    }
    m->s->per_producer_last[m->producer] = m->seq;
    m->s->oneshots.fetch_add(1, std::memory_order_relaxed);
}

void run_stress(int64_t poll_max_ns)
{
    AioContext *ctx = aio_context_new(nullptr);
    ASSERT_NE(ctx, nullptr);
    aio_context_set_poll_params(ctx, poll_max_ns, 0, 0);
    Shared s;
    std::vector<std::vector<Msg>> msgs(kProducers);
    for (int p = 0; p < kProducers; p++) {
        msgs[p].resize(kPerProducer);
        for (long i = 0; i < kPerProducer; i++) {
            msgs[p][i] = {&s, p, i + 1};
        }
    }
    // A shared BH that producers hammer: coalesced, so only "ran at least
    // once after the last schedule" is exact.
    std::atomic<long> shared_runs{0};
    AioBH *shared = aio_bh_new(ctx, [](void *o) {
        static_cast<std::atomic<long> *>(o)->fetch_add(1);
    }, &shared_runs);

    std::atomic<bool> go{false};
    std::vector<std::thread> producers;
    for (int p = 0; p < kProducers; p++) {
        producers.emplace_back([&, p] {
            while (!go.load()) {
                std::this_thread::yield();
            }
            for (long i = 0; i < kPerProducer; i++) {
                ASSERT_EQ(aio_bh_schedule_oneshot(ctx, oneshot_cb, &msgs[p][i]), 0);
                if ((i & 7) == 0) {
                    aio_notify(ctx);
                }
                if ((i & 63) == 0) {
                    aio_bh_schedule(shared);
                }
            }
        });
    }
    go.store(true);
    const long total = (long)kProducers * kPerProducer;
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(240);
    while (s.oneshots.load() < total && std::chrono::steady_clock::now() < end) {
        aio_poll(ctx, true);
    }
    for (auto &t : producers) {
        t.join();
    }
    // Everything scheduled has been scheduled; drain the rest.
    while (aio_poll(ctx, false)) {
    }
    EXPECT_EQ(s.oneshots.load(), total) << "hang or lost BH";
    EXPECT_EQ(s.order_errors.load(), 0);
    EXPECT_GE(shared_runs.load(), 1);
    for (int p = 0; p < kProducers; p++) {
        EXPECT_EQ(s.per_producer_last[p], kPerProducer);
    }
    aio_bh_delete(shared);
    aio_poll(ctx, false);
    aio_context_unref(ctx);
}

TEST(AioStress, MillionBhsFourProducersNoPolling)
{
    run_stress(0);
}

TEST(AioStress, MillionBhsFourProducersBusyPolling)
{
    run_stress(32768);
}

// Producers also notify an event notifier handled in the context: every
// set is followed by a handler run that observes it (eventfd counts are
// summed exactly).
TEST(AioStress, EventNotifierCountsAreExact)
{
    AioContext *ctx = aio_context_new(nullptr);
    static EventNotifier e;
    static std::atomic<long> seen{0};
    seen.store(0);
    ASSERT_EQ(event_notifier_init(&e, false), 0);
    aio_set_event_notifier(ctx, &e, [](EventNotifier *en) {
        uint64_t v;
        while (read(event_notifier_get_fd(en), &v, sizeof(v)) == sizeof(v)) {
            seen.fetch_add((long)v);
        }
    }, nullptr, nullptr);
    const int per = 50000;
    std::vector<std::thread> producers;
    for (int p = 0; p < kProducers; p++) {
        producers.emplace_back([] {
            for (int i = 0; i < per; i++) {
                event_notifier_set(&e);
            }
        });
    }
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (seen.load() < (long)kProducers * per && std::chrono::steady_clock::now() < end) {
        aio_poll(ctx, true);
    }
    for (auto &t : producers) {
        t.join();
    }
    EXPECT_EQ(seen.load(), (long)kProducers * per);
    aio_set_event_notifier(ctx, &e, nullptr, nullptr, nullptr);
    event_notifier_cleanup(&e);
    aio_context_unref(ctx);
}

// Two threads meet at each round's start (spinning: both run at once).
class SpinBarrier {
public:
    explicit SpinBarrier(int n) : n_(n) {}
    void wait()
    {
        int gen = gen_.load();
        if (count_.fetch_add(1) + 1 == n_) {
            count_.store(0);
            gen_.fetch_add(1);
            return;
        }
        while (gen_.load() == gen) {
        }
    }

private:
    const int n_;
    std::atomic<int> count_{0}, gen_{0};
};

// Issue 7, point 7: on a closed context, concurrent schedules of one BH are
// all refused (none is told 0 for a BH that never runs), and a schedule
// racing with aio_bh_delete() neither leaks the BH (finalisation aborts on
// a live BH) nor touches freed memory (ASan).
TEST(AioStress, ScheduleDeleteRaceOnClosedContext)
{
    constexpr int kRounds = 300;
    AioContext *ctx = aio_context_new(nullptr);
    aio_context_close(ctx);
    std::atomic<int> ran{0}, wrong_rc{0};
    auto count = [](void *o) { static_cast<std::atomic<int> *>(o)->fetch_add(1); };
    std::vector<AioBH *> both(kRounds), racy(kRounds);
    for (int r = 0; r < kRounds; r++) {
        both[r] = aio_bh_new(ctx, count, &ran);
        racy[r] = aio_bh_new(ctx, count, &ran);
    }
    SpinBarrier barrier(2);
    auto worker = [&](bool deleter) {
        for (int r = 0; r < kRounds; r++) {
            barrier.wait();
            if (aio_bh_schedule(both[r]) != -ESHUTDOWN) {
                wrong_rc.fetch_add(1);
            }
            barrier.wait();
            if (deleter) {
                aio_bh_delete(racy[r]);
            } else if (aio_bh_schedule(racy[r]) != -ESHUTDOWN) {
                wrong_rc.fetch_add(1);
            }
        }
    };
    std::thread t1(worker, false), t2(worker, true);
    t1.join();
    t2.join();
    for (AioBH *bh : both) {
        aio_bh_delete(bh);
    }
    EXPECT_EQ(wrong_rc.load(), 0) << "a schedule on a closed context was accepted";
    EXPECT_EQ(ran.load(), 0);
    aio_context_unref(ctx); // aborts on a leaked (live) BH
}

} // namespace
