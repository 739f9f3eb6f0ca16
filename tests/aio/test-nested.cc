// Nested aio_poll() (issue 7, points 1, 5 and 6): a nested pass never
// sleeps over work an outer pass already holds (BHs of its batch, handlers
// its busy-poll found ready), and an fd event is dispatched once even when
// a BH polls in between.
#include "aio-test.h"

#include <fcntl.h>
#include <unistd.h>

namespace {

constexpr int kMaxPasses = 1000;

struct Nest {
    AioContext *ctx;
    std::atomic<bool> done{false};
    int passes = 0;
    AioBH *bh = nullptr;
    std::atomic<bool> started{false};
};

// BH A: wait, by nested blocking polls, for something else to set done.
void nest_wait_done(void *o)
{
    auto *n = static_cast<Nest *>(o);
    while (!n->done.load() && n->passes < kMaxPasses) {
        aio_poll(n->ctx, true);
        n->passes++;
    }
}

void nest_set_done(void *o)
{
    static_cast<Nest *>(o)->done.store(true);
}

// Point 1: BH B, later in A's batch, sets done.  The nested blocking poll
// must run it rather than sleep.
TEST_F(AioTest, NestedBlockingPollRunsRestOfOuterBatch)
{
    Nest n{ctx};
    aio_bh_schedule_oneshot(ctx, nest_wait_done, &n);
    aio_bh_schedule_oneshot(ctx, nest_set_done, &n);
    Watchdog w(ctx);
    aio_poll(ctx, false);
    EXPECT_FALSE(w.finish()) << "nested aio_poll slept with a BH runnable";
    EXPECT_TRUE(n.done.load());
}

// Point 1, cross-thread: B is in A's batch but cancelled; another thread
// schedules it again while A polls.  Its schedule finds B still queued
// (PENDING) and must still wake the nested poll.
TEST_F(AioTest, NestedPollWokenByRescheduleOfBatchedBh)
{
    Nest n{ctx};
    n.bh = aio_bh_new(ctx, nest_set_done, &n);
    aio_bh_schedule_oneshot(ctx, [](void *o) {
        static_cast<Nest *>(o)->started.store(true);
        nest_wait_done(o);
    }, &n);
    aio_bh_schedule(n.bh);
    aio_bh_cancel(n.bh);
    std::thread t([&] {
        while (!n.started.load()) {
            std::this_thread::yield();
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        aio_bh_schedule(n.bh);
    });
    Watchdog w(ctx);
    while (!n.done.load() && n.passes < kMaxPasses) {
        aio_poll(ctx, true);
    }
    t.join();
    EXPECT_FALSE(w.finish()) << "aio_poll slept with a BH scheduled";
    EXPECT_TRUE(n.done.load());
    aio_bh_delete(n.bh);
}

// Point 1, not nested: a BH still on the list (cancelled) is scheduled
// again by another thread while the home thread sleeps.
TEST_F(AioTest, RescheduleOfCancelledQueuedBhWakesPoller)
{
    Nest n{ctx};
    n.bh = aio_bh_new(ctx, nest_set_done, &n);
    aio_bh_schedule(n.bh);
    aio_bh_cancel(n.bh);
    std::thread t([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        aio_bh_schedule(n.bh);
    });
    Watchdog w(ctx);
    for (int i = 0; i < kMaxPasses && !n.done.load(); i++) {
        aio_poll(ctx, true);
    }
    t.join();
    EXPECT_FALSE(w.finish()) << "aio_poll slept with a BH scheduled";
    EXPECT_TRUE(n.done.load());
    aio_bh_delete(n.bh);
}

struct PollNest {
    AioContext *ctx;
    std::atomic<bool> armed{false};
    int ready = 0;
    int passes = 0;
};

void pollnest_bh(void *o)
{
    auto *p = static_cast<PollNest *>(o);
    while (p->ready == 0 && p->passes < kMaxPasses) {
        aio_poll(p->ctx, true);
        p->passes++;
    }
}

// Point 5: the outer pass's busy poll finds a handler ready and, in the
// same pass, a BH waits for that handler by nested polls.
TEST_F(AioTest, NestedPollDispatchesHandlerOuterBusyPollFound)
{
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    PollNest p{ctx};
    aio_context_set_poll_params(ctx, 100 * 1000 * 1000, 0, 0);
    aio_set_fd_handler(ctx, fds[0], nullptr, nullptr, [](void *o) {
        auto *p = static_cast<PollNest *>(o);
        if (p->armed.exchange(false)) {
            aio_bh_schedule_oneshot(p->ctx, pollnest_bh, p);
            return true;
        }
        return false;
    }, [](void *o) { static_cast<PollNest *>(o)->ready++; }, &p);
    ASSERT_TRUE(aio_warm_up_polling(ctx));
    p.armed.store(true);
    Watchdog w(ctx);
    for (int i = 0; i < kMaxPasses && p.ready == 0; i++) {
        aio_poll(ctx, true);
    }
    EXPECT_FALSE(w.finish()) << "nested aio_poll slept over a poll-ready handler";
    EXPECT_EQ(p.ready, 1) << "dispatched once";
    aio_set_fd_handler(ctx, fds[0], nullptr, nullptr, nullptr, nullptr, nullptr);
    close(fds[0]);
    close(fds[1]);
}

struct OneByte {
    int fd[2];
    int reads = 0;
    int empty_reads = 0;
    AioContext *ctx;
};

// Point 6: the outer pass's epoll saw the pipe readable; a BH of the same
// pass polls (nested), which dispatches the byte; the outer pass must not
// replay its stale event.
TEST_F(AioTest, NestedPollFromBhDoesNotReplayOuterFdEvents)
{
    OneByte b;
    b.ctx = ctx;
    ASSERT_EQ(pipe2(b.fd, O_NONBLOCK), 0);
    aio_set_fd_handler(ctx, b.fd[0], [](void *o) {
        auto *b = static_cast<OneByte *>(o);
        char c;
        b->reads++;
        if (read(b->fd[0], &c, 1) != 1) {
            b->empty_reads++;
        }
    }, nullptr, nullptr, nullptr, &b);
    ASSERT_EQ(write(b.fd[1], "x", 1), 1);
    aio_bh_schedule_oneshot(ctx, [](void *o) {
        aio_poll(static_cast<OneByte *>(o)->ctx, false);
    }, &b);
    aio_poll(ctx, false); // epoll (not skipped: non-blocking), BH, fds
    EXPECT_EQ(b.reads, 1);
    EXPECT_EQ(b.empty_reads, 0);
    aio_set_fd_handler(ctx, b.fd[0], nullptr, nullptr, nullptr, nullptr, nullptr);
    close(b.fd[0]);
    close(b.fd[1]);
}

} // namespace
