// poll_notify contract (issue 7, points 2 and 8), with a model of a
// virtqueue: poll_notify(true) suppresses guest notifications, (false)
// re-enables them; a guest "kick" writes the fd only while they are on.
// Notifications must never stay suppressed, and a polled handler is never
// starved by a stream of BHs.
#include "aio-test.h"

#include <fcntl.h>
#include <unistd.h>

namespace {

struct Queue {
    AioContext *ctx;
    int fd[2];
    std::atomic<bool> suppressed{false};
    std::atomic<bool> work{false};
    int on = 0, off = 0;
    int served = 0;
    std::atomic<bool> replace_armed{false};
    // BH stream (point 8)
    std::atomic<bool> stream_armed{false};
    AioBH *stream = nullptr;
    int stream_runs = 0;
    int served_at = -1;

    Queue(AioContext *c) : ctx(c) { EXPECT_EQ(pipe2(fd, O_NONBLOCK), 0); }
    ~Queue()
    {
        close(fd[0]);
        close(fd[1]);
    }
    void kick()
    {
        work.store(true);
        if (!suppressed.load()) {
            EXPECT_EQ(write(fd[1], "k", 1), 1);
        }
    }
};

void q_notify(void *o, bool started)
{
    auto *q = static_cast<Queue *>(o);
    q->suppressed.store(started);
    (started ? q->on : q->off)++;
}

void q_serve(Queue *q)
{
    char buf[16];
    while (read(q->fd[0], buf, sizeof(buf)) > 0) {
    }
    if (q->work.exchange(false)) {
        q->served++;
        if (q->served_at < 0) {
            q->served_at = q->stream_runs;
        }
    }
}

void q_read(void *o)
{
    q_serve(static_cast<Queue *>(o));
}

bool q_poll(void *o);

void q_ready(void *o)
{
    q_serve(static_cast<Queue *>(o));
}

void q_register(Queue *q)
{
    aio_set_fd_handler(q->ctx, q->fd[0], q_read, nullptr, q_poll, q_ready, q);
    aio_set_fd_poll_notify(q->ctx, q->fd[0], q_notify);
}

void q_stream_bh(void *o)
{
    auto *q = static_cast<Queue *>(o);
    if (++q->stream_runs == 5) {
        q->kick(); // arrives while notifications are suppressed
    }
    if (q->served == 0 && q->stream_runs < 5000) {
        aio_bh_schedule(q->stream);
    }
}

bool q_poll(void *o)
{
    auto *q = static_cast<Queue *>(o);
    if (q->replace_armed.exchange(false)) {
        // Mid-phase: this handler heard poll_notify(true); swap it for a
        // new one (as a device reset or a queue re-setup would).
        q_register(q);
        return false;
    }
    if (q->stream_armed.exchange(false)) {
        aio_bh_schedule(q->stream);
        return true;
    }
    return q->work.load();
}

// Point 2.
TEST_F(AioTest, HandlerReplacedMidPhaseHearsPollEnd)
{
    Queue q(ctx);
    aio_context_set_poll_params(ctx, 100 * 1000 * 1000, 0, 0);
    q_register(&q);
    ASSERT_TRUE(aio_warm_up_polling(ctx));
    q.replace_armed.store(true);
    for (int i = 0; i < 100 && q.replace_armed.load(); i++) {
        aio_pass_with_wait(ctx, 50);
    }
    ASSERT_FALSE(q.replace_armed.load());
    // Polling off: the window falls to 0, phases end.
    aio_context_set_poll_params(ctx, 0, 0, 0);
    aio_poll(ctx, false);
    for (int i = 0; i < 5; i++) {
        aio_pass_with_wait(ctx, 50);
    }
    EXPECT_EQ(aio_context_get_poll_ns(ctx), 0);
    EXPECT_FALSE(q.suppressed.load()) << "notifications left off: on " << q.on
                                      << " off " << q.off;
    // And a guest kick is now seen through the fd.
    q.kick();
    Watchdog w(ctx);
    for (int i = 0; i < 100 && q.served == 0; i++) {
        aio_poll(ctx, true);
    }
    EXPECT_FALSE(w.finish());
    EXPECT_EQ(q.served, 1);
    aio_set_fd_handler(ctx, q.fd[0], nullptr, nullptr, nullptr, nullptr, nullptr);
}

// Point 8: a BH that reschedules itself keeps every pass non-blocking; the
// kick it models lands while notifications are suppressed.  The handler
// must still be served within a bounded number of passes.
TEST_F(AioTest, BhStreamDoesNotStarvePolledHandler)
{
    Queue q(ctx);
    q.stream = aio_bh_new(ctx, q_stream_bh, &q);
    aio_context_set_poll_params(ctx, 100 * 1000 * 1000, 0, 0);
    q_register(&q);
    ASSERT_TRUE(aio_warm_up_polling(ctx));
    q.stream_armed.store(true);
    Watchdog w(ctx);
    for (int i = 0; i < 6000 && q.served == 0; i++) {
        aio_poll(ctx, true);
    }
    EXPECT_FALSE(w.finish());
    ASSERT_EQ(q.served, 1);
    EXPECT_LT(q.served_at, 5 + 2 * 64) << "served only after the BH stream";
    aio_bh_delete(q.stream);
    aio_set_fd_handler(ctx, q.fd[0], nullptr, nullptr, nullptr, nullptr, nullptr);
}

} // namespace
