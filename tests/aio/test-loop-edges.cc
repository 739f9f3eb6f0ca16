// Edges of the event loop checked as counts and orderings, never as
// wall-clock slack: how many passes an fd may starve behind ready BHs, the
// busy-poll window when the event comes inside it, the timeout the loop
// asks the kernel for (idle BHs, timers), and set_poll_params waking a
// sleeping poller.  AioPollStats (include/shardvm/aio.h) shows what each
// pass decided.
#include "aio-test.h"
#include "../common/thread-state.h"

#include <sched.h>

namespace {

AioPollStats Stats(AioContext *ctx)
{
    AioPollStats s;
    aio_context_get_poll_stats(ctx, &s);
    return s;
}

// A BH that is ready on every pass: it reschedules itself.
struct EndlessBh {
    AioBH *bh = nullptr;
    long runs = 0;
    static void cb(void *opaque)
    {
        auto *e = static_cast<EndlessBh *>(opaque);
        e->runs++;
        aio_bh_schedule(e->bh);
    }
};

struct FdCount {
    EventNotifier e;
    long reads = 0;
};

FdCount *fd_count; // the one of the running test (home thread)

void CountRead(EventNotifier *e)
{
    event_notifier_test_and_clear(e);
    fd_count->reads++;
}

// With a BH ready on every pass the loop may skip epoll (the pass does
// not sleep anyway), but only AIO_MAX_FD_SKIPS (64) passes in a row: a
// readable fd must be served by the 65th pass at the latest.
TEST_F(AioTest, ReadyFdServedWithinSixtyFivePassesBehindEndlessBhs)
{
    FdCount fc;
    fd_count = &fc;
    ASSERT_EQ(event_notifier_init(&fc.e, false), 0);
    aio_set_event_notifier(ctx, &fc.e, CountRead, nullptr, nullptr);
    EndlessBh spin;
    spin.bh = aio_bh_new(ctx, EndlessBh::cb, &spin);
    while (aio_poll(ctx, false)) {
    }

    aio_bh_schedule(spin.bh);
    ASSERT_EQ(event_notifier_set(&fc.e), 0);
    AioPollStats before = Stats(ctx);
    int passes = 0;
    while (fc.reads == 0 && passes < 1000) {
        aio_poll(ctx, true);
        passes++;
    }
    AioPollStats after = Stats(ctx);
    EXPECT_EQ(fc.reads, 1) << "fd starved behind ready BHs";
    EXPECT_LE(passes, 65);
    EXPECT_EQ(spin.runs, passes) << "the BH ran on every pass meanwhile";
    // The skipping itself happened (the cap is what is being tested).
    EXPECT_GT(after.skipped_waits - before.skipped_waits, 0u);

    // And again, from the middle of a skip streak: never more than 64
    // skipped passes in a row.
    for (int round = 0; round < 3; round++) {
        ASSERT_EQ(event_notifier_set(&fc.e), 0);
        long want = fc.reads + 1;
        passes = 0;
        while (fc.reads < want && passes < 1000) {
            aio_poll(ctx, true);
            passes++;
        }
        EXPECT_EQ(fc.reads, want);
        EXPECT_LE(passes, 65);
    }

    aio_bh_delete(spin.bh);
    aio_set_event_notifier(ctx, &fc.e, nullptr, nullptr, nullptr);
    event_notifier_cleanup(&fc.e);
}

// A handler whose io_poll always finds work: every event arrives inside
// the busy-poll window (at its very start), the sweet spot where the
// window must stay as it is.
std::atomic<long> poll_ready_runs;

bool AlwaysReady(void *)
{
    return true;
}

void ConsumeReady(EventNotifier *)
{
    poll_ready_runs++;
}

void NeverRead(EventNotifier *e)
{
    event_notifier_test_and_clear(e);
}

TEST_F(AioTest, PollWindowDoesNotGrowWhenEventArrivesInsideIt)
{
    // A large maximum, so a window that wrongly grows has room to.
    ASSERT_EQ(aio_context_set_poll_params(ctx, 10LL * 1000 * 1000 * 1000,
                                          2, 0), 0);
    aio_poll(ctx, false); // the notification the change sent
    // Grow the window to about a millisecond with waits of 2 ms (longer
    // than the window: the rule says grow).
    for (int i = 0; i < 100 && aio_context_get_poll_ns(ctx) < 1000000; i++) {
        aio_pass_with_wait(ctx, 2000);
    }
    ASSERT_GE(aio_context_get_poll_ns(ctx), 1000000);

    EventNotifier e;
    ASSERT_EQ(event_notifier_init(&e, false), 0);
    poll_ready_runs = 0;
    aio_set_event_notifier(ctx, &e, NeverRead, AlwaysReady, ConsumeReady);
    aio_poll(ctx, false); // brings the new handler into the poll phase

    int grew = 0;
    for (int i = 0; i < 20; i++) {
        int64_t before = aio_context_get_poll_ns(ctx);
        aio_poll(ctx, true);
        grew += aio_context_get_poll_ns(ctx) > before;
    }
    EXPECT_GT(poll_ready_runs.load(), 0);
    // A pass preempted for longer than the window may grow it legitimately
    // once or twice; a window that grows on events inside it grows on
    // every one of the 20 passes (until 10 s: more than 13 doublings).
    EXPECT_LE(grew, 3) << "window grew although events came inside it";

    aio_set_event_notifier(ctx, &e, nullptr, nullptr, nullptr);
    event_notifier_cleanup(&e);
}

struct Ran {
    int n = 0;
    static void cb(void *opaque) { static_cast<Ran *>(opaque)->n++; }
};

// An idle BH alone: the loop sleeps at most 10 ms (the timeout it asks
// epoll for), then runs it, in that same pass.
TEST_F(AioTest, IdleBhAloneMakesTheLoopWaitAtMostTenMs)
{
    Ran r;
    AioBH *bh = aio_bh_new(ctx, Ran::cb, &r);
    while (aio_poll(ctx, false)) {
    }
    ASSERT_EQ(aio_bh_schedule_idle(bh), 0);
    AioPollStats before = Stats(ctx);
    EXPECT_FALSE(aio_poll(ctx, true)); // an idle BH is no progress
    AioPollStats after = Stats(ctx);
    EXPECT_EQ(r.n, 1) << "the idle BH runs on the pass that waited for it";
    EXPECT_EQ(after.waits - before.waits, 1u);
    EXPECT_GT(after.last_wait_ns, 0);
    EXPECT_LE(after.last_wait_ns, 10 * 1000 * 1000);
    aio_bh_delete(bh);
}

// Only a deleted BH left: it is freed soon (the loop does not sleep
// forever over it), also within 10 ms.
TEST_F(AioTest, DeletedBhMakesTheLoopWaitAtMostTenMs)
{
    Ran r;
    AioBH *bh = aio_bh_new(ctx, Ran::cb, &r);
    ASSERT_EQ(aio_bh_schedule(bh), 0);
    aio_bh_delete(bh); // scheduled and deleted: freed by a later pass
    aio_poll(ctx, true);
    AioPollStats s = Stats(ctx);
    EXPECT_EQ(r.n, 0);
    EXPECT_LE(s.last_wait_ns, 10 * 1000 * 1000);
}

struct TimerRan {
    AioTimer *t = nullptr;
    int n = 0;
    static void cb(void *opaque) { static_cast<TimerRan *>(opaque)->n++; }
};

// The loop never asks the kernel to sleep past the next timer: the wait's
// timeout is at most the time left when the pass began; and the pass that
// waited for the timer runs it.
TEST_F(AioTest, WaitNeverAsksForMoreThanTheTimeToTheNextTimer)
{
    while (aio_poll(ctx, false)) {
    }
    TimerRan tr;
    tr.t = aio_timer_new(ctx, TimerRan::cb, &tr);
    for (int64_t delay_ms : {1, 3, 7}) {
        int64_t start = aio_clock_ns();
        int64_t expire = start + delay_ms * 1000 * 1000;
        ASSERT_EQ(aio_timer_mod(tr.t, expire), 0);
        int before = tr.n;
        int passes = 0;
        bool first = true;
        while (tr.n == before && passes < 100) {
            int64_t left = expire - aio_clock_ns();
            aio_poll(ctx, true);
            passes++;
            AioPollStats s = Stats(ctx);
            if (first) {
                EXPECT_GE(s.last_wait_ns, 0);
                // (+1 ms: without epoll_pwait2 waits round up to ms.)
                EXPECT_LE(s.last_wait_ns, (left > 0 ? left : 0) + 999999)
                    << "asked to sleep past the timer (" << delay_ms << " ms)";
                first = false;
            }
        }
        EXPECT_EQ(tr.n, before + 1);
        // Waits end at or after the deadline: one pass.  (A signal could
        // cut a wait short; none is sent here.)
        EXPECT_EQ(passes, 1);
    }
    aio_timer_free(tr.t);
}

// set_poll_params() from another thread wakes a poller that is asleep in
// epoll with nothing else to do (so a lowered maximum applies at once).
TEST_F(AioTest, SetPollParamsWakesSleepingPoller)
{
    while (aio_poll(ctx, false)) {
    }
    int home_tid = test_gettid();
    Watchdog wd(ctx);
    std::thread t([&] {
        // Until the home thread sleeps in its pass.
        while (!test_thread_blocked(home_tid)) {
            sched_yield();
        }
        aio_context_set_poll_params(ctx, 1000, 2, 2);
    });
    AioPollStats before = Stats(ctx);
    aio_poll(ctx, true);
    bool rescued = wd.finish();
    t.join();
    EXPECT_FALSE(rescued) << "set_poll_params did not wake the poller";
    AioPollStats after = Stats(ctx);
    EXPECT_EQ(after.passes - before.passes, 1u);
    EXPECT_EQ(after.last_wait_ns, -1) << "slept with no timeout";
}

} // namespace
