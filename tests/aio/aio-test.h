// Helpers shared by the AioContext tests.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>

#include "shardvm/aio.h"

// A fresh context owned by the test's thread.
class AioTest : public ::testing::Test {
protected:
    AioContext *ctx = nullptr;
    void SetUp() override
    {
        ctx = aio_context_new(nullptr);
        ASSERT_NE(ctx, nullptr);
    }
    void TearDown() override
    {
        // Run what is left (deferred deletes), then the leak check.
        while (aio_poll(ctx, false)) {
        }
        aio_context_unref(ctx);
    }
};

// Polls a context in its own thread until stopped.
class PollerThread {
public:
    explicit PollerThread(AioContext *ctx) : ctx_(ctx)
    {
        std::atomic<bool> started{false};
        thread_ = std::thread([this, &started] {
            aio_context_set_home_thread(ctx_);
            started.store(true);
            while (!stop_.load(std::memory_order_acquire)) {
                aio_poll(ctx_, true);
            }
            while (aio_poll(ctx_, false)) {
            }
        });
        while (!started.load()) {
            std::this_thread::yield();
        }
    }
    ~PollerThread() { stop(); }
    void stop()
    {
        if (!thread_.joinable()) {
            return;
        }
        aio_bh_schedule_oneshot(ctx_, [](void *p) {
            static_cast<PollerThread *>(p)->stop_.store(true, std::memory_order_release);
        }, this);
        thread_.join();
        // The test thread owns the context again.
        aio_context_set_home_thread(ctx_);
    }

private:
    AioContext *ctx_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

// Poll @ctx (blocking) until @done() or @timeout; true if done.
static inline bool poll_until(AioContext *ctx, const std::function<bool()> &done,
                              std::chrono::milliseconds timeout = std::chrono::seconds(30))
{
    auto end = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
        if (std::chrono::steady_clock::now() > end) {
            return false;
        }
        aio_poll(ctx, true);
    }
    return true;
}

// Turns a hang of the home thread into a failure: if finish() is not called
// within @limit, it records that it had to step in and keeps waking @ctx
// (aio_notify) until finish(), so the bounded loop under test can end.
class Watchdog {
public:
    explicit Watchdog(AioContext *ctx,
                      std::chrono::milliseconds limit = std::chrono::seconds(5))
        : ctx_(ctx)
    {
        thread_ = std::thread([this, limit] {
            auto end = std::chrono::steady_clock::now() + limit;
            while (!done_.load() && std::chrono::steady_clock::now() < end) {
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
            while (!done_.load()) {
                rescued_.store(true);
                aio_notify(ctx_);
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
        });
    }
    ~Watchdog() { finish(); }
    // Stop watching; true if the watchdog had to wake the context.
    bool finish()
    {
        done_.store(true);
        if (thread_.joinable()) {
            thread_.join();
        }
        return rescued_.load();
    }

private:
    AioContext *ctx_;
    std::atomic<bool> done_{false}, rescued_{false};
    std::thread thread_;
};

// One blocking pass during which another thread notifies after @wait_us.
static inline void aio_pass_with_wait(AioContext *ctx, int wait_us)
{
    std::thread t([ctx, wait_us] {
        std::this_thread::sleep_for(std::chrono::microseconds(wait_us));
        aio_notify(ctx);
    });
    aio_poll(ctx, true);
    t.join();
}

// Grow the busy-poll window above 0 (the context needs poll params set).
// The non-blocking pass first takes the notification that setting the
// params sent: otherwise every pass would find the previous pass's late
// notification and never wait.
static inline bool aio_warm_up_polling(AioContext *ctx)
{
    aio_poll(ctx, false);
    for (int i = 0; i < 200 && aio_context_get_poll_ns(ctx) == 0; i++) {
        aio_pass_with_wait(ctx, 20);
    }
    return aio_context_get_poll_ns(ctx) > 0;
}
