// Bottom halves: scheduling, order, re-entrancy, one-shots, idle, cancel,
// deferred delete, close, run_sync.
#include "aio-test.h"

#include <errno.h>

#include <vector>

namespace {

struct Counter {
    int n = 0;
};

void count_cb(void *p)
{
    static_cast<Counter *>(p)->n++;
}

TEST_F(AioTest, BhScheduleRunsOnceOnNextPass)
{
    Counter c;
    AioBH *bh = aio_bh_new(ctx, count_cb, &c);
    EXPECT_EQ(aio_bh_schedule(bh), 0);
    EXPECT_EQ(aio_bh_schedule(bh), 0); // already scheduled: no effect
    EXPECT_EQ(c.n, 0);
    EXPECT_TRUE(aio_poll(ctx, false));
    EXPECT_EQ(c.n, 1);
    EXPECT_FALSE(aio_poll(ctx, false));
    EXPECT_EQ(c.n, 1);
    aio_bh_delete(bh);
}

struct OrderRec {
    std::vector<int> *order;
    int id;
};

void order_cb(void *p)
{
    auto *r = static_cast<OrderRec *>(p);
    r->order->push_back(r->id);
}

TEST_F(AioTest, BhRunInSchedulingOrder)
{
    std::vector<int> order;
    std::vector<OrderRec> recs(50);
    std::vector<AioBH *> bhs;
    for (int i = 0; i < 50; i++) {
        recs[i] = {&order, i};
        bhs.push_back(aio_bh_new(ctx, order_cb, &recs[i]));
    }
    for (int i = 0; i < 50; i++) {
        aio_bh_schedule(bhs[i]);
    }
    aio_poll(ctx, false);
    ASSERT_EQ(order.size(), 50u);
    for (int i = 0; i < 50; i++) {
        EXPECT_EQ(order[i], i);
    }
    for (auto *bh : bhs) {
        aio_bh_delete(bh);
    }
}

TEST_F(AioTest, OneshotOrderAcrossKinds)
{
    std::vector<int> order;
    std::vector<OrderRec> recs(10);
    for (int i = 0; i < 10; i++) {
        recs[i] = {&order, i};
        ASSERT_EQ(aio_bh_schedule_oneshot(ctx, order_cb, &recs[i]), 0);
    }
    aio_poll(ctx, false);
    ASSERT_EQ(order.size(), 10u);
    for (int i = 0; i < 10; i++) {
        EXPECT_EQ(order[i], i);
    }
}

struct Resched {
    AioBH *bh;
    int runs = 0;
    int limit = 0;
};

void resched_cb(void *p)
{
    auto *r = static_cast<Resched *>(p);
    r->runs++;
    if (r->runs < r->limit) {
        aio_bh_schedule(r->bh);
    }
}

TEST_F(AioTest, BhRescheduledFromOwnCallbackRunsNextPass)
{
    Resched r;
    r.limit = 3;
    r.bh = aio_bh_new(ctx, resched_cb, &r);
    aio_bh_schedule(r.bh);
    EXPECT_TRUE(aio_poll(ctx, false));
    EXPECT_EQ(r.runs, 1);
    EXPECT_TRUE(aio_poll(ctx, false));
    EXPECT_EQ(r.runs, 2);
    EXPECT_TRUE(aio_poll(ctx, true)); // must not block: the BH is ready
    EXPECT_EQ(r.runs, 3);
    EXPECT_FALSE(aio_poll(ctx, false));
    aio_bh_delete(r.bh);
}

TEST_F(AioTest, BhCancel)
{
    Counter c;
    AioBH *bh = aio_bh_new(ctx, count_cb, &c);
    aio_bh_schedule(bh);
    aio_bh_cancel(bh);
    aio_poll(ctx, false);
    EXPECT_EQ(c.n, 0);
    aio_bh_schedule(bh); // may be scheduled again after a cancel
    aio_poll(ctx, false);
    EXPECT_EQ(c.n, 1);
    aio_bh_delete(bh);
}

TEST_F(AioTest, BhDeleteScheduledDoesNotRun)
{
    Counter c;
    AioBH *bh = aio_bh_new(ctx, count_cb, &c);
    aio_bh_schedule(bh);
    aio_bh_delete(bh);
    aio_poll(ctx, false);
    EXPECT_EQ(c.n, 0);
}

struct SelfDelete {
    AioBH *bh;
    int runs = 0;
};

void self_delete_cb(void *p)
{
    auto *s = static_cast<SelfDelete *>(p);
    s->runs++;
    aio_bh_delete(s->bh); // deferred: safe inside the callback
}

TEST_F(AioTest, BhDeleteFromOwnCallback)
{
    SelfDelete s;
    s.bh = aio_bh_new(ctx, self_delete_cb, &s);
    aio_bh_schedule(s.bh);
    aio_poll(ctx, false);
    aio_poll(ctx, false);
    EXPECT_EQ(s.runs, 1);
}

TEST_F(AioTest, BhDeleteFromOtherThread)
{
    Counter c;
    AioBH *bh = aio_bh_new(ctx, count_cb, &c);
    std::thread t([bh] { aio_bh_delete(bh); });
    t.join();
    aio_poll(ctx, false);
    EXPECT_EQ(c.n, 0);
}

TEST_F(AioTest, IdleBhRunsButIsNotProgress)
{
    Counter c;
    AioBH *bh = aio_bh_new(ctx, count_cb, &c);
    aio_bh_schedule_idle(bh);
    // Blocking: an idle BH waits at most 10 ms (the timeout the pass asks
    // epoll for), then runs in that same pass.
    EXPECT_FALSE(aio_poll(ctx, true));
    EXPECT_EQ(c.n, 1);
    AioPollStats st;
    aio_context_get_poll_stats(ctx, &st);
    EXPECT_GT(st.last_wait_ns, 0);
    EXPECT_LE(st.last_wait_ns, 10 * 1000 * 1000);
    aio_bh_delete(bh);
}

TEST_F(AioTest, ScheduleFromOtherThreadWakesBlockingPoll)
{
    Counter c;
    AioBH *bh = aio_bh_new(ctx, count_cb, &c);
    std::thread t([bh] {
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
        aio_bh_schedule(bh);
    });
    EXPECT_TRUE(poll_until(ctx, [&] { return c.n == 1; }));
    t.join();
    aio_bh_delete(bh);
}

struct Nested {
    AioContext *ctx;
    std::vector<int> *order;
    OrderRec inner;
};

void nested_cb(void *p)
{
    auto *n = static_cast<Nested *>(p);
    n->order->push_back(100);
    // A nested pass continues the outer slice first.
    aio_poll(n->ctx, false);
    n->order->push_back(101);
}

TEST_F(AioTest, NestedPollContinuesOuterBatch)
{
    std::vector<int> order;
    Nested n{ctx, &order, {&order, 1}};
    OrderRec second{&order, 2};
    aio_bh_schedule_oneshot(ctx, nested_cb, &n);
    aio_bh_schedule_oneshot(ctx, order_cb, &second);
    aio_poll(ctx, false);
    std::vector<int> want{100, 2, 101};
    EXPECT_EQ(order, want);
}

TEST_F(AioTest, CloseRunsScheduledAndRefusesLater)
{
    Counter c;
    AioBH *bh = aio_bh_new(ctx, count_cb, &c);
    aio_bh_schedule(bh);
    aio_bh_schedule_oneshot(ctx, count_cb, &c);
    aio_context_close(ctx);
    EXPECT_EQ(c.n, 2);
    EXPECT_EQ(aio_bh_schedule(bh), -ESHUTDOWN);
    EXPECT_EQ(aio_bh_schedule_oneshot(ctx, count_cb, &c), -ESHUTDOWN);
    aio_poll(ctx, false);
    EXPECT_EQ(c.n, 2);
    aio_context_close(ctx); // idempotent
    aio_bh_delete(bh);      // freed at once on a closed context
}

TEST_F(AioTest, UnrefRunsPendingOneshots)
{
    Counter c;
    AioContext *other = aio_context_new(nullptr);
    ASSERT_NE(other, nullptr);
    aio_bh_schedule_oneshot(other, count_cb, &c);
    aio_context_unref(other);
    EXPECT_EQ(c.n, 1);
    aio_context_set_home_thread(ctx);
}

TEST_F(AioTest, RunSyncFromOtherThreadRunsInHomeThread)
{
    PollerThread poller(ctx);
    struct Arg {
        AioContext *ctx;
        bool in_home = false;
    } arg{ctx};
    std::thread t([&] {
        EXPECT_EQ(aio_context_run_sync(ctx, [](void *p) {
            auto *a = static_cast<Arg *>(p);
            a->in_home = aio_context_in_home_thread(a->ctx);
        }, &arg), 0);
    });
    t.join();
    EXPECT_TRUE(arg.in_home);
    poller.stop();
}

TEST_F(AioTest, RunSyncFromHomeThreadRunsDirectly)
{
    Counter c;
    EXPECT_EQ(aio_context_run_sync(ctx, count_cb, &c), 0);
    EXPECT_EQ(c.n, 1);
}

TEST_F(AioTest, RunSyncOnClosedContextFails)
{
    Counter c;
    aio_context_close(ctx);
    std::thread t([&] { EXPECT_EQ(aio_context_run_sync(ctx, count_cb, &c), -ESHUTDOWN); });
    t.join();
    EXPECT_EQ(c.n, 0);
}

TEST_F(AioTest, CurrentContextFollowsHomeThread)
{
    aio_context_set_home_thread(ctx);
    EXPECT_EQ(aio_get_current_context(), ctx);
    EXPECT_TRUE(aio_context_in_home_thread(ctx));
    std::thread t([&] { EXPECT_FALSE(aio_context_in_home_thread(ctx)); });
    t.join();
}

// Issue 7, point 9: creating (and freeing) a context leaves the creating
// thread's current context alone.
TEST_F(AioTest, NewContextKeepsCurrentContext)
{
    aio_context_set_home_thread(ctx);
    AioContext *other = aio_context_new(nullptr);
    ASSERT_NE(other, nullptr);
    EXPECT_EQ(aio_get_current_context(), ctx);
    aio_context_unref(other);
    EXPECT_EQ(aio_get_current_context(), ctx);
}

// Issue 7, point 9: after the close there is no next pass; a deleted BH is
// freed by the finalisation (no leak report, never run).
TEST(AioClosed, DeleteAfterCloseIsFreedAtFinalisation)
{
    Counter c;
    AioContext *c2 = aio_context_new(nullptr);
    AioBH *bh = aio_bh_new(c2, count_cb, &c);
    aio_context_close(c2);
    EXPECT_EQ(aio_bh_schedule(bh), -ESHUTDOWN);
    aio_bh_delete(bh);
    EXPECT_EQ(aio_bh_schedule(bh), -ESHUTDOWN); // still valid memory
    aio_context_unref(c2);
    EXPECT_EQ(c.n, 0);
}

#if !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__)
TEST(AioDeathTest, LeakedBhAbortsAtFree)
{
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_DEATH({
        AioContext *c = aio_context_new(nullptr);
        aio_bh_new(c, count_cb, nullptr);
        aio_context_unref(c);
    }, "live BH");
}

TEST(AioDeathTest, PollOutsideHomeThreadAborts)
{
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_DEATH({
        AioContext *c = aio_context_new(nullptr);
        std::thread t([c] { aio_poll(c, false); });
        t.join();
    }, "outside its home thread");
}
#endif

} // namespace
