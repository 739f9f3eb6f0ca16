// The GSource adapter: a GMainContext drives an AioContext.
#include "aio-test.h"

#include <fcntl.h>
#include <unistd.h>

namespace {

class GSourceTest : public AioTest {
protected:
    GMainContext *gctx = nullptr;
    GSource *src = nullptr;
    void SetUp() override
    {
        AioTest::SetUp();
        gctx = g_main_context_new();
        src = aio_context_attach_gsource(ctx, gctx);
    }
    void TearDown() override
    {
        g_source_destroy(src);
        g_source_unref(src);
        g_main_context_unref(gctx);
        AioTest::TearDown();
    }
    bool iterate_until(const std::function<bool()> &done)
    {
        auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (!done()) {
            if (std::chrono::steady_clock::now() > end) {
                return false;
            }
            g_main_context_iteration(gctx, TRUE);
        }
        return true;
    }
};

TEST_F(GSourceTest, BhRunsFromIteration)
{
    int n = 0;
    aio_bh_schedule_oneshot(ctx, [](void *o) { (*static_cast<int *>(o))++; }, &n);
    EXPECT_TRUE(g_main_context_iteration(gctx, FALSE));
    EXPECT_EQ(n, 1);
}

TEST_F(GSourceTest, FdHandlerRunsFromIteration)
{
    int fds[2];
    ASSERT_EQ(pipe2(fds, O_NONBLOCK), 0);
    int n = 0;
    struct Arg {
        int fd;
        int *n;
    } arg{fds[0], &n};
    aio_set_fd_handler(ctx, fds[0], [](void *o) {
        auto *a = static_cast<Arg *>(o);
        char c;
        while (read(a->fd, &c, 1) > 0) {
        }
        (*a->n)++;
    }, nullptr, nullptr, nullptr, &arg);
    ASSERT_EQ(write(fds[1], "x", 1), 1);
    EXPECT_TRUE(iterate_until([&] { return n == 1; }));
    aio_set_fd_handler(ctx, fds[0], nullptr, nullptr, nullptr, nullptr, nullptr);
    close(fds[0]);
    close(fds[1]);
}

TEST_F(GSourceTest, TimerFiresThroughGlibTimeout)
{
    int n = 0;
    AioTimer *t = aio_timer_new(ctx, [](void *o) { (*static_cast<int *>(o))++; }, &n);
    int64_t deadline = aio_clock_ns() + 5 * 1000 * 1000;
    aio_timer_mod(t, deadline);
    EXPECT_TRUE(iterate_until([&] { return n == 1; }));
    EXPECT_GE(aio_clock_ns(), deadline);
    aio_timer_free(t);
}

TEST_F(GSourceTest, CrossThreadBhWakesBlockingIteration)
{
    std::atomic<int> n{0};
    std::thread t([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        aio_bh_schedule_oneshot(ctx, [](void *o) {
            static_cast<std::atomic<int> *>(o)->fetch_add(1);
        }, &n);
    });
    EXPECT_TRUE(iterate_until([&] { return n.load() == 1; }));
    t.join();
}

TEST_F(GSourceTest, ManyCrossThreadWakeups)
{
    std::atomic<int> n{0};
    const int total = 20000;
    std::thread t([&] {
        for (int i = 0; i < total; i++) {
            aio_bh_schedule_oneshot(ctx, [](void *o) {
                static_cast<std::atomic<int> *>(o)->fetch_add(1);
            }, &n);
            if (i % 64 == 0) {
                std::this_thread::yield();
            }
        }
    });
    EXPECT_TRUE(iterate_until([&] { return n.load() == total; }));
    t.join();
}

} // namespace
