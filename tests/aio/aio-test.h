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
