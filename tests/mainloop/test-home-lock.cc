// The BQL holder acting as the main context's home thread
// (aio_context_set_home_lock): a "vCPU" thread takes the BQL and works on
// the main loop's AioContext while the main loop thread sleeps in its
// GMainContext poll with the BQL dropped.  Whatever the lock holder leaves
// behind (an armed timer, a BH) must still run in the main loop once the
// lock holder lets go: the main loop must not sleep on a stale timeout.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "shardvm/aio.h"
#include "shardvm/main-loop.h"
#include "shardvm/rcu.h"

namespace {

class HomeLock : public ::testing::Test {
protected:
    void SetUp() override
    {
        GError *err = nullptr;
        ASSERT_EQ(main_loop_init(false, &err), 0) << (err ? err->message : "");
        ctx_ = main_loop_get_aio_context();
    }
    void TearDown() override { main_loop_cleanup(); }

    // Run the main loop until @pred holds; false if it did not within a
    // generous bound (a lost wake-up: the main loop sleeps forever).
    // A watchdog wakes the main loop once the bound has passed, so a
    // lost wake-up fails the test instead of hanging it.
    template <typename P> bool RunUntil(P pred)
    {
        auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::seconds(10);
        std::mutex mu;
        std::condition_variable cv;
        bool finished = false;
        std::thread watchdog([&] {
            std::unique_lock<std::mutex> l(mu);
            if (!cv.wait_until(l, deadline, [&] { return finished; })) {
                aio_bh_schedule_oneshot(ctx_, [](void *) {}, nullptr);
            }
        });
        bool ok = true;
        while (!pred()) {
            if (std::chrono::steady_clock::now() > deadline) {
                ok = false;
                break;
            }
            main_loop_wait(false);
        }
        {
            std::lock_guard<std::mutex> l(mu);
            finished = true;
        }
        cv.notify_one();
        watchdog.join();
        return ok;
    }

    AioContext *ctx_ = nullptr;
};

// The lock holder arms a timer and polls the context (a device draining
// its requests): the poll applies the arm request and consumes the
// context's wake-up, while the main loop already sleeps with no timer in
// view.  The timer must fire in the main loop all the same.
TEST_F(HomeLock, TimerArmedAndPolledByLockHolderFiresInMainLoop)
{
    constexpr int kRounds = 200;
    std::atomic<int> fired{ 0 };
    std::atomic<int> armed{ 0 };
    std::atomic<bool> stop{ false };
    AioTimer *t = aio_timer_new(
        ctx_, [](void *o) { ++*static_cast<std::atomic<int> *>(o); }, &fired);

    std::thread vcpu([&] {
        for (int i = 0; i < kRounds && !stop; i++) {
            while (fired.load() < i && !stop) {
                std::this_thread::yield();
            }
            bql_lock();
            aio_timer_mod(t, aio_clock_ns() + 200 * 1000);
            aio_poll(ctx_, false);
            aio_poll(ctx_, false);
            armed++;
            bql_unlock();
        }
    });
    bool ok = RunUntil([&] { return fired.load() >= kRounds; });
    stop = true;
    bql_unlock();
    vcpu.join();
    bql_lock();
    EXPECT_TRUE(ok) << "fired " << fired.load() << " of " << armed.load()
                    << " armed: the main loop slept over a timer the BQL "
                       "holder armed";
    aio_timer_free(t);
}

}  // namespace
