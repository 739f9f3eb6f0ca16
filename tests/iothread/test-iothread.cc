// IOThread: naming, home thread, prompt stop that loses no BH, properties
// at creation and at runtime, 1,000 create/stop cycles.
#include "../common/thread-names.h"
#include "shardvm/iothread.h"
#include "shardvm/rcu.h"
#include "shardvm/thread-pool.h"
#include "shardvm/thread.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <dirent.h>
#include <fstream>
#include <pthread.h>
#include <string>
#include <unistd.h>

namespace {

int CountThreads(const std::string &want = "")
{
    return test_count_threads(want);
}

class IOThreadTest : public ::testing::Test {
protected:
    void SetUp() override { shardvm_rcu_init(); }
};

struct InThread {
    pthread_t thread;
    AioContext *current = nullptr;
    bool home = false;
    AioContext *ctx = nullptr;
};

void RecordThread(void *opaque)
{
    auto *r = static_cast<InThread *>(opaque);
    r->thread = pthread_self();
    r->current = aio_get_current_context();
    r->home = aio_context_in_home_thread(r->ctx);
}

TEST_F(IOThreadTest, NamedThreadPollsItsContext)
{
    GError *err = nullptr;
    IOThread *iot = iothread_new("io0", nullptr, &err);
    ASSERT_NE(iot, nullptr) << (err ? err->message : "");
    EXPECT_STREQ(iothread_get_id(iot), "io0");
    EXPECT_EQ(CountThreads("IO io0"), 1);

    InThread r;
    r.ctx = iothread_get_aio_context(iot);
    ASSERT_EQ(aio_context_run_sync(r.ctx, RecordThread, &r), 0);
    EXPECT_FALSE(pthread_equal(r.thread, pthread_self()));
    EXPECT_EQ(r.current, r.ctx);
    EXPECT_TRUE(r.home);
    EXPECT_FALSE(aio_context_in_home_thread(r.ctx));

    iothread_stop(iot);
    iothread_stop(iot); // idempotent
    EXPECT_EQ(CountThreads("IO io0"), 0);
    iothread_free(iot);
}

struct BhCount {
    std::atomic<int> ran{0};
};

void CountBh(void *opaque)
{
    static_cast<BhCount *>(opaque)->ran++;
}

TEST_F(IOThreadTest, StopRunsEveryScheduledBhThenRefuses)
{
    IOThread *iot = iothread_new("io-stop", nullptr, nullptr);
    ASSERT_NE(iot, nullptr);
    AioContext *ctx = iothread_get_aio_context(iot);
    BhCount c;
    for (int i = 0; i < 1000; i++) {
        ASSERT_EQ(aio_bh_schedule_oneshot(ctx, CountBh, &c), 0);
    }
    iothread_stop(iot);
    EXPECT_EQ(c.ran.load(), 1000);
    EXPECT_EQ(aio_bh_schedule_oneshot(ctx, CountBh, &c), -ESHUTDOWN);
    EXPECT_EQ(c.ran.load(), 1000);
    iothread_free(iot);
}

// Another thread keeps scheduling while we stop: every BH either ran or
// its scheduler got -ESHUTDOWN, never both, never neither.
struct Racer {
    AioContext *ctx;
    BhCount count;
    std::atomic<int> accepted{0};
    std::atomic<bool> done{false};
};

void *ScheduleUntilRefused(void *opaque)
{
    auto *r = static_cast<Racer *>(opaque);
    while (aio_bh_schedule_oneshot(r->ctx, CountBh, &r->count) == 0) {
        r->accepted++;
    }
    r->done = true;
    return nullptr;
}

TEST_F(IOThreadTest, NoBhLostWhenStoppingUnderLoad)
{
    for (int round = 0; round < 20; round++) {
        IOThread *iot = iothread_new("io-race", nullptr, nullptr);
        ASSERT_NE(iot, nullptr);
        Racer r;
        r.ctx = iothread_get_aio_context(iot);
        pthread_t t;
        ASSERT_EQ(shardvm_thread_create(&t, "test-racer",
                                        ScheduleUntilRefused, &r, nullptr),
                  0);
        while (r.accepted.load() < 100) {
            g_usleep(100);
        }
        iothread_stop(iot);
        pthread_join(t, nullptr);
        EXPECT_EQ(r.count.ran.load(), r.accepted.load());
        iothread_free(iot);
    }
}

TEST_F(IOThreadTest, PropertiesAtCreationAndRuntime)
{
    IOThreadProps p = IOTHREAD_PROPS_DEFAULT;
    p.poll_max_ns = 1000;
    p.aio_max_batch = 16;
    p.thread_pool_min = 1;
    p.thread_pool_max = 2;
    IOThread *iot = iothread_new("io-props", &p, nullptr);
    ASSERT_NE(iot, nullptr);
    AioContext *ctx = iothread_get_aio_context(iot);

    IOThreadProps got;
    iothread_get_props(iot, &got);
    EXPECT_EQ(got.poll_max_ns, 1000);
    EXPECT_EQ(got.poll_grow, 0);
    EXPECT_EQ(got.poll_shrink, 0);
    EXPECT_EQ(got.aio_max_batch, 16);
    EXPECT_EQ(got.thread_pool_min, 1);
    EXPECT_EQ(got.thread_pool_max, 2);
    EXPECT_EQ(aio_context_get_aio_max_batch(ctx), 16);
    EXPECT_EQ(thread_pool_get_workers(ctx), 1);

    IOThreadProps change = IOTHREAD_PROPS_DEFAULT;
    change.poll_grow = 4;
    change.aio_max_batch = 32;
    change.thread_pool_min = 2;
    ASSERT_EQ(iothread_set_props(iot, &change, nullptr), 0);
    iothread_get_props(iot, &got);
    EXPECT_EQ(got.poll_max_ns, 1000); // -1 left it alone
    EXPECT_EQ(got.poll_grow, 4);
    EXPECT_EQ(got.aio_max_batch, 32);
    EXPECT_EQ(got.thread_pool_min, 2);
    EXPECT_EQ(aio_context_get_aio_max_batch(ctx), 32);
    EXPECT_EQ(thread_pool_get_workers(ctx), 2);

    GError *err = nullptr;
    IOThreadProps bad = IOTHREAD_PROPS_DEFAULT;
    bad.thread_pool_min = 5; // above max 2
    EXPECT_EQ(iothread_set_props(iot, &bad, &err), -EINVAL);
    ASSERT_NE(err, nullptr);
    g_clear_error(&err);
    bad = IOTHREAD_PROPS_DEFAULT;
    bad.poll_shrink = -7;
    EXPECT_EQ(iothread_set_props(iot, &bad, &err), -EINVAL);
    g_clear_error(&err);
    iothread_get_props(iot, &got);
    EXPECT_EQ(got.thread_pool_min, 2); // unchanged by the failures

    // A value only the IOThread layer can reject: 2^32 + 5 workers.  The
    // pool takes an int, where it would wrap to 5 and be accepted.
    EXPECT_EQ(thread_pool_set_limits(ctx, 0, (int)((1LL << 32) + 5), 0), 0)
        << "the pool layer accepts the wrapped value";
    ASSERT_EQ(thread_pool_set_limits(ctx, 2, 2, 0), 0); // as it was
    bad = IOTHREAD_PROPS_DEFAULT;
    bad.thread_pool_max = (1LL << 32) + 5;
    EXPECT_EQ(iothread_set_props(iot, &bad, &err), -EINVAL);
    ASSERT_NE(err, nullptr);
    g_clear_error(&err);

    // A rejected set_props changes nothing, even the fields that were
    // valid in it: neither the recorded properties nor the context.
    IOThreadProps was;
    iothread_get_props(iot, &was);
    int64_t batch_was = aio_context_get_aio_max_batch(ctx);
    int workers_was = thread_pool_get_workers(ctx);
    for (int which = 0; which < 3; which++) {
        bad = IOTHREAD_PROPS_DEFAULT;
        bad.poll_max_ns = 777;
        bad.poll_grow = 3;
        bad.poll_shrink = 5;
        bad.aio_max_batch = 99;
        if (which == 0) {
            bad.thread_pool_min = 9; // above the max (2)
        } else if (which == 1) {
            bad.thread_pool_max = (1LL << 32) + 5;
        } else {
            bad.thread_pool_max = 0;
        }
        EXPECT_EQ(iothread_set_props(iot, &bad, &err), -EINVAL) << which;
        g_clear_error(&err);
        iothread_get_props(iot, &got);
        EXPECT_EQ(got.poll_max_ns, was.poll_max_ns) << which;
        EXPECT_EQ(got.poll_grow, was.poll_grow) << which;
        EXPECT_EQ(got.poll_shrink, was.poll_shrink) << which;
        EXPECT_EQ(got.aio_max_batch, was.aio_max_batch) << which;
        EXPECT_EQ(got.thread_pool_min, was.thread_pool_min) << which;
        EXPECT_EQ(got.thread_pool_max, was.thread_pool_max) << which;
        EXPECT_EQ(aio_context_get_aio_max_batch(ctx), batch_was) << which;
        EXPECT_EQ(thread_pool_get_workers(ctx), workers_was) << which;
    }

    iothread_free(iot);
    EXPECT_EQ(CountThreads("worker"), 0);

    bad = IOTHREAD_PROPS_DEFAULT;
    bad.thread_pool_max = 0;
    EXPECT_EQ(iothread_new("io-bad", &bad, &err), nullptr);
    ASSERT_NE(err, nullptr);
    EXPECT_EQ(err->code, EINVAL);
    g_clear_error(&err);
}

// Busy-poll observation: an event notifier with an io_poll callback.
struct Poller {
    EventNotifier e;
    std::atomic<long> polls{0};
    std::atomic<long> events{0};
};

bool PollCheck(void *opaque)
{
    auto *p = static_cast<Poller *>(opaque);
    p->polls++;
    return false;
}

void PollRead(EventNotifier *e)
{
    event_notifier_test_and_clear(e);
}

struct KickState {
    Poller *p;
};

void CountEvent(void *opaque)
{
    static_cast<Poller *>(opaque)->events++;
}

// Wake the IOThread @n times with short pauses: each wake is a short wait
// (well below poll-max-ns when that is large), which is what makes the
// adaptive poll time grow.
void KickIOThread(AioContext *ctx, Poller *p, int n)
{
    for (int i = 0; i < n; i++) {
        long before = p->events.load();
        ASSERT_EQ(aio_bh_schedule_oneshot(ctx, CountEvent, p), 0);
        while (p->events.load() == before) {
            g_usleep(50);
        }
        g_usleep(100);
    }
}

void RegisterPoller(void *opaque)
{
    auto *p = static_cast<Poller *>(opaque);
    aio_set_event_notifier(aio_get_current_context(), &p->e, PollRead,
                           PollCheck, PollRead);
}

void UnregisterPoller(void *opaque)
{
    auto *p = static_cast<Poller *>(opaque);
    aio_set_event_notifier(aio_get_current_context(), &p->e, nullptr,
                           nullptr, nullptr);
}

TEST_F(IOThreadTest, RuntimePollMaxNsChangesBehaviour)
{
    IOThreadProps props = IOTHREAD_PROPS_DEFAULT;
    props.poll_max_ns = 0; // no busy-polling at all
    IOThread *iot = iothread_new("io-poll", &props, nullptr);
    ASSERT_NE(iot, nullptr);
    AioContext *ctx = iothread_get_aio_context(iot);
    Poller p;
    ASSERT_EQ(event_notifier_init(&p.e, false), 0);
    ASSERT_EQ(aio_context_run_sync(ctx, RegisterPoller, &p), 0);

    KickIOThread(ctx, &p, 50);
    EXPECT_EQ(aio_context_get_poll_ns(ctx), 0);
    long polls_without = p.polls.load();

    // Allow up to 50 ms of busy-polling: waits of ~100 us now grow it.
    props = IOTHREAD_PROPS_DEFAULT;
    props.poll_max_ns = 50 * 1000 * 1000;
    ASSERT_EQ(iothread_set_props(iot, &props, nullptr), 0);
    // A wait longer than 50 ms (a preempted test on a loaded machine)
    // resets the poll time, so kick until it is seen to grow rather than
    // assume one round suffices.
    for (int round = 0; round < 100 && (aio_context_get_poll_ns(ctx) == 0 ||
                                        p.polls.load() == polls_without);
         round++) {
        KickIOThread(ctx, &p, 10);
    }
    EXPECT_GT(aio_context_get_poll_ns(ctx), 0);
    EXPECT_GT(p.polls.load(), polls_without);

    // Back to 0: polling stops, the poll time drops to 0.
    props.poll_max_ns = 0;
    ASSERT_EQ(iothread_set_props(iot, &props, nullptr), 0);
    KickIOThread(ctx, &p, 5);
    EXPECT_EQ(aio_context_get_poll_ns(ctx), 0);
    long polls_after = p.polls.load();
    KickIOThread(ctx, &p, 50);
    EXPECT_EQ(p.polls.load(), polls_after);

    ASSERT_EQ(aio_context_run_sync(ctx, UnregisterPoller, &p), 0);
    iothread_free(iot);
    event_notifier_cleanup(&p.e);
}

void NoopBh(void *) {}

TEST_F(IOThreadTest, ThousandCreateStopCycles)
{
    int baseline = CountThreads();
    for (int i = 0; i < 1000; i++) {
        char id[16];
        g_snprintf(id, sizeof(id), "c%d", i);
        IOThread *iot = iothread_new(id, nullptr, nullptr);
        ASSERT_NE(iot, nullptr);
        if (i % 2) {
            ASSERT_EQ(aio_bh_schedule_oneshot(iothread_get_aio_context(iot),
                                              NoopBh, nullptr), 0);
        }
        iothread_free(iot);
    }
    EXPECT_EQ(CountThreads(), baseline);
}

} // namespace
