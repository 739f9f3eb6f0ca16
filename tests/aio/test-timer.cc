// Timers: firing, order, lateness bound, mod/del, re-arm and free from the
// callback, arming from another thread.
#include "aio-test.h"

#include <algorithm>
#include <random>
#include <vector>

namespace {

struct Fired {
    AioTimer *t = nullptr;
    int64_t deadline = 0;
    int64_t fired_at = -1;
    int n = 0;
    std::vector<int> *order = nullptr;
    int id = 0;
};

void fired_cb(void *o)
{
    auto *f = static_cast<Fired *>(o);
    f->fired_at = aio_clock_ns();
    f->n++;
    if (f->order) {
        f->order->push_back(f->id);
    }
}

TEST_F(AioTest, TimerFiresAfterDeadlineWithBoundedLateness)
{
    Fired f;
    f.t = aio_timer_new(ctx, fired_cb, &f);
    EXPECT_FALSE(aio_timer_pending(f.t));
    EXPECT_EQ(aio_timer_expire_ns(f.t), -1);
    f.deadline = aio_clock_ns() + 20 * 1000 * 1000;
    aio_timer_mod(f.t, f.deadline);
    EXPECT_TRUE(aio_timer_pending(f.t));
    EXPECT_EQ(aio_timer_expire_ns(f.t), f.deadline);
    int64_t left = f.deadline - aio_clock_ns();
    aio_poll(ctx, true);
    // One pass: it asked the kernel for no more than the time left, woke at or after
    // the deadline and ran the timer.  Lateness itself is a speed figure:
    // bench/.
    AioPollStats st;
    aio_context_get_poll_stats(ctx, &st);
    EXPECT_GE(st.last_wait_ns, 0);
    // (+1 ms: without epoll_pwait2 the wait is rounded up to whole ms.)
    EXPECT_LE(st.last_wait_ns, left + 999999);
    EXPECT_EQ(f.n, 1);
    EXPECT_TRUE(poll_until(ctx, [&] { return f.n == 1; }));
    EXPECT_GE(f.fired_at, f.deadline);
    EXPECT_FALSE(aio_timer_pending(f.t));
    aio_timer_free(f.t);
}

TEST_F(AioTest, TimersFireInDeadlineOrder)
{
    std::vector<int> order;
    std::vector<Fired> fs(200);
    std::mt19937 rng(42);
    int64_t now = aio_clock_ns();
    for (int i = 0; i < 200; i++) {
        fs[i].order = &order;
        fs[i].id = i;
        fs[i].t = aio_timer_new(ctx, fired_cb, &fs[i]);
        fs[i].deadline = now + 1000000 + (int64_t)(rng() % 20000000);
        aio_timer_mod(fs[i].t, fs[i].deadline);
    }
    EXPECT_TRUE(poll_until(ctx, [&] { return order.size() == 200; }));
    for (size_t i = 1; i < order.size(); i++) {
        EXPECT_LE(fs[order[i - 1]].deadline, fs[order[i]].deadline);
    }
    for (auto &f : fs) {
        EXPECT_GE(f.fired_at, f.deadline);
        aio_timer_free(f.t);
    }
}

TEST_F(AioTest, TimerModAndDel)
{
    Fired a, b;
    a.t = aio_timer_new(ctx, fired_cb, &a);
    b.t = aio_timer_new(ctx, fired_cb, &b);
    int64_t now = aio_clock_ns();
    aio_timer_mod(a.t, now + 3600LL * 1000000000);
    aio_timer_mod(a.t, now + 1000000); // earlier
    aio_timer_mod(b.t, now + 1000000);
    aio_timer_del(b.t);
    EXPECT_TRUE(poll_until(ctx, [&] { return a.n == 1; }));
    aio_poll(ctx, false);
    EXPECT_EQ(b.n, 0);
    aio_timer_mod(b.t, 0); // in the past: fires on the next pass
    aio_poll(ctx, true);
    EXPECT_EQ(b.n, 1);
    aio_timer_free(a.t);
    aio_timer_free(b.t);
}

struct Periodic {
    AioTimer *t;
    int n = 0;
};

TEST_F(AioTest, TimerRearmFromCallback)
{
    Periodic p;
    p.t = aio_timer_new(ctx, [](void *o) {
        auto *p = static_cast<Periodic *>(o);
        if (++p->n < 5) {
            aio_timer_mod(p->t, aio_clock_ns() + 100000);
        }
    }, &p);
    aio_timer_mod(p.t, aio_clock_ns());
    EXPECT_TRUE(poll_until(ctx, [&] { return p.n == 5; }));
    aio_timer_free(p.t);
}

TEST_F(AioTest, TimerRearmInPastDoesNotSpinForever)
{
    Periodic p;
    p.t = aio_timer_new(ctx, [](void *o) {
        auto *p = static_cast<Periodic *>(o);
        p->n++;
        aio_timer_mod(p->t, 0);
    }, &p);
    aio_timer_mod(p.t, 0);
    aio_poll(ctx, false); // returns: one run per pass
    EXPECT_EQ(p.n, 1);
    aio_poll(ctx, false);
    EXPECT_EQ(p.n, 2);
    aio_timer_free(p.t);
}

TEST_F(AioTest, TimerFreeFromCallback)
{
    struct Self {
        AioTimer *t;
        int n = 0;
    } s;
    s.t = aio_timer_new(ctx, [](void *o) {
        auto *s = static_cast<Self *>(o);
        s->n++;
        aio_timer_free(s->t);
    }, &s);
    aio_timer_mod(s.t, 0);
    aio_poll(ctx, false);
    EXPECT_EQ(s.n, 1);
}

TEST_F(AioTest, TimerArmedFromOtherThread)
{
    std::atomic<int> n{0};
    struct Arg {
        std::atomic<int> *n;
    } arg{&n};
    AioTimer *t = aio_timer_new(ctx, [](void *o) { static_cast<Arg *>(o)->n->fetch_add(1); }, &arg);
    PollerThread poller(ctx);
    std::thread other([&] {
        EXPECT_EQ(aio_timer_mod(t, aio_clock_ns() + 2000000), 0);
    });
    other.join();
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (n.load() == 0 && std::chrono::steady_clock::now() < end) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_EQ(n.load(), 1);
    // Cancel from the other thread: arm far away, then delete remotely.
    std::thread other2([&] {
        aio_timer_mod(t, aio_clock_ns() + 3600LL * 1000000000);
        aio_timer_del(t);
    });
    other2.join();
    poller.stop();
    aio_poll(ctx, false);
    EXPECT_FALSE(aio_timer_pending(t));
    aio_timer_free(t);
}

} // namespace
