// fd handlers and event notifiers: dispatch, replace, removal during
// dispatch, cross-thread registration, busy-poll callbacks, many fds.
#include "aio-test.h"

#include <fcntl.h>
#include <unistd.h>

#include <vector>

namespace {

struct Pipe {
    int fd[2];
    Pipe() { EXPECT_EQ(pipe2(fd, O_NONBLOCK | O_CLOEXEC), 0); }
    ~Pipe()
    {
        close(fd[0]);
        close(fd[1]);
    }
    void put() { EXPECT_EQ(write(fd[1], "x", 1), 1); }
    void drain()
    {
        char buf[64];
        while (read(fd[0], buf, sizeof(buf)) > 0) {
        }
    }
};

struct ReadRec {
    Pipe *p;
    int n = 0;
};

void read_cb(void *opaque)
{
    auto *r = static_cast<ReadRec *>(opaque);
    r->p->drain();
    r->n++;
}

TEST_F(AioTest, ReadHandlerFires)
{
    Pipe p;
    ReadRec r{&p};
    aio_set_fd_handler(ctx, p.fd[0], read_cb, nullptr, nullptr, nullptr, &r);
    EXPECT_FALSE(aio_poll(ctx, false));
    p.put();
    EXPECT_TRUE(aio_poll(ctx, false));
    EXPECT_EQ(r.n, 1);
    EXPECT_FALSE(aio_poll(ctx, false));
    aio_set_fd_handler(ctx, p.fd[0], nullptr, nullptr, nullptr, nullptr, nullptr);
    p.put();
    EXPECT_FALSE(aio_poll(ctx, false));
    EXPECT_EQ(r.n, 1);
}

TEST_F(AioTest, WriteHandlerFires)
{
    Pipe p;
    int n = 0;
    aio_set_fd_handler(ctx, p.fd[1], nullptr, [](void *o) { (*static_cast<int *>(o))++; },
                       nullptr, nullptr, &n);
    EXPECT_TRUE(aio_poll(ctx, false));
    EXPECT_EQ(n, 1);
    aio_set_fd_handler(ctx, p.fd[1], nullptr, nullptr, nullptr, nullptr, nullptr);
}

TEST_F(AioTest, BlockingPollWakesOnFd)
{
    Pipe p;
    ReadRec r{&p};
    aio_set_fd_handler(ctx, p.fd[0], read_cb, nullptr, nullptr, nullptr, &r);
    std::thread t([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        p.put();
    });
    EXPECT_TRUE(poll_until(ctx, [&] { return r.n == 1; }));
    t.join();
    aio_set_fd_handler(ctx, p.fd[0], nullptr, nullptr, nullptr, nullptr, nullptr);
}

TEST_F(AioTest, ReplaceHandler)
{
    Pipe p;
    ReadRec a{&p}, b{&p};
    aio_set_fd_handler(ctx, p.fd[0], read_cb, nullptr, nullptr, nullptr, &a);
    aio_set_fd_handler(ctx, p.fd[0], read_cb, nullptr, nullptr, nullptr, &b);
    p.put();
    aio_poll(ctx, false);
    EXPECT_EQ(a.n, 0);
    EXPECT_EQ(b.n, 1);
    aio_set_fd_handler(ctx, p.fd[0], nullptr, nullptr, nullptr, nullptr, nullptr);
}

struct Mutual {
    AioContext *ctx;
    Pipe *mine, *other;
    int n = 0;
};

void mutual_cb(void *opaque)
{
    auto *m = static_cast<Mutual *>(opaque);
    m->n++;
    // Remove the other handler (ready in the same batch) and ourselves.
    aio_set_fd_handler(m->ctx, m->other->fd[0], nullptr, nullptr, nullptr, nullptr, nullptr);
    aio_set_fd_handler(m->ctx, m->mine->fd[0], nullptr, nullptr, nullptr, nullptr, nullptr);
}

TEST_F(AioTest, RemoveDuringDispatch)
{
    Pipe p1, p2;
    Mutual a{ctx, &p1, &p2}, b{ctx, &p2, &p1};
    aio_set_fd_handler(ctx, p1.fd[0], mutual_cb, nullptr, nullptr, nullptr, &a);
    aio_set_fd_handler(ctx, p2.fd[0], mutual_cb, nullptr, nullptr, nullptr, &b);
    p1.put();
    p2.put();
    aio_poll(ctx, false);
    EXPECT_EQ(a.n + b.n, 1); // the first one removed the second
    aio_poll(ctx, false);
    EXPECT_EQ(a.n + b.n, 1);
}

struct Adder {
    AioContext *ctx;
    Pipe *mine, *next;
    ReadRec *next_rec;
    int n = 0;
};

void adder_cb(void *opaque)
{
    auto *a = static_cast<Adder *>(opaque);
    a->n++;
    a->mine->drain();
    aio_set_fd_handler(a->ctx, a->next->fd[0], read_cb, nullptr, nullptr, nullptr, a->next_rec);
}

TEST_F(AioTest, AddFromCallback)
{
    Pipe p1, p2;
    ReadRec r2{&p2};
    Adder a{ctx, &p1, &p2, &r2};
    aio_set_fd_handler(ctx, p1.fd[0], adder_cb, nullptr, nullptr, nullptr, &a);
    p1.put();
    aio_poll(ctx, false);
    EXPECT_EQ(a.n, 1);
    aio_set_fd_handler(ctx, p1.fd[0], nullptr, nullptr, nullptr, nullptr, nullptr);
    p2.put();
    aio_poll(ctx, false);
    EXPECT_EQ(r2.n, 1);
    aio_set_fd_handler(ctx, p2.fd[0], nullptr, nullptr, nullptr, nullptr, nullptr);
}

TEST_F(AioTest, RegisterFromOtherThreadWhilePolling)
{
    Pipe p;
    std::atomic<int> n{0};
    PollerThread poller(ctx);
    std::thread t([&] {
        aio_set_fd_handler(ctx, p.fd[0], [](void *o) {
            auto *n = static_cast<std::atomic<int> *>(o);
            n->fetch_add(1);
        }, nullptr, nullptr, nullptr, &n);
        p.put();
    });
    t.join();
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (n.load() == 0 && std::chrono::steady_clock::now() < end) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_GE(n.load(), 1);
    std::thread t2([&] {
        aio_set_fd_handler(ctx, p.fd[0], nullptr, nullptr, nullptr, nullptr, nullptr);
    });
    t2.join();
    poller.stop();
}

struct EnRec {
    int n = 0;
    EventNotifier e;
};

TEST_F(AioTest, EventNotifierHandler)
{
    static EnRec rec;
    rec.n = 0;
    ASSERT_EQ(event_notifier_init(&rec.e, false), 0);
    aio_set_event_notifier(ctx, &rec.e, [](EventNotifier *e) {
        EXPECT_EQ(e, &rec.e);
        EXPECT_TRUE(event_notifier_test_and_clear(e));
        rec.n++;
    }, nullptr, nullptr);
    EXPECT_FALSE(aio_poll(ctx, false));
    event_notifier_set(&rec.e);
    event_notifier_set(&rec.e);
    EXPECT_TRUE(aio_poll(ctx, false));
    EXPECT_EQ(rec.n, 1);
    EXPECT_FALSE(event_notifier_test_and_clear(&rec.e));
    aio_set_event_notifier(ctx, &rec.e, nullptr, nullptr, nullptr);
    event_notifier_cleanup(&rec.e);
    event_notifier_cleanup(&rec.e); // idempotent
}

TEST_F(AioTest, EventNotifierActiveAtInit)
{
    EventNotifier e;
    ASSERT_EQ(event_notifier_init(&e, true), 0);
    EXPECT_TRUE(event_notifier_test_and_clear(&e));
    EXPECT_FALSE(event_notifier_test_and_clear(&e));
    event_notifier_cleanup(&e);
}

// Busy polling: io_poll finds work that never touches the fd.
struct PollRec {
    std::atomic<bool> work{false};
    std::atomic<int> polls{0};
    int ready = 0;
    int notify_on = 0, notify_off = 0;
    bool set_work_on_end = false;
};

bool rec_poll(void *o)
{
    auto *r = static_cast<PollRec *>(o);
    r->polls.fetch_add(1, std::memory_order_relaxed);
    return r->work.load();
}

void rec_ready(void *o)
{
    auto *r = static_cast<PollRec *>(o);
    r->work.store(false);
    r->ready++;
}

void rec_notify(void *o, bool started)
{
    auto *r = static_cast<PollRec *>(o);
    if (started) {
        r->notify_on++;
    } else {
        r->notify_off++;
        if (r->set_work_on_end) {
            // A kick that arrived just as notifications were re-enabled.
            r->set_work_on_end = false;
            r->work.store(true);
        }
    }
}

TEST_F(AioTest, BusyPollFindsWorkWithoutFd)
{
    Pipe p;
    PollRec r;
    aio_context_set_poll_params(ctx, 50 * 1000 * 1000, 0, 0);
    aio_set_fd_handler(ctx, p.fd[0], nullptr, nullptr, rec_poll, rec_ready, &r);
    aio_poll(ctx, false);
    // Grow poll_ns: a few passes that wait briefly.
    for (int i = 0; i < 20 && aio_context_get_poll_ns(ctx) < 1000000; i++) {
        aio_bh_schedule_oneshot(ctx, [](void *) {}, nullptr);
        aio_poll(ctx, true);
        std::thread t([&] {
            std::this_thread::sleep_for(std::chrono::microseconds(200));
            aio_notify(ctx);
        });
        aio_poll(ctx, true);
        t.join();
    }
    EXPECT_GT(aio_context_get_poll_ns(ctx), 0);
    std::thread t([&] {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
        r.work.store(true);
        // No fd becomes ready: only a busy-poll pass can find the work.
        // The notification only ends a sleep that began before the store.
        aio_notify(ctx);
    });
    EXPECT_TRUE(poll_until(ctx, [&] { return r.ready == 1; }, std::chrono::seconds(10)));
    t.join();
    EXPECT_GT(r.polls.load(), 0);
    aio_set_fd_handler(ctx, p.fd[0], nullptr, nullptr, nullptr, nullptr, nullptr);
}

TEST_F(AioTest, PollNotifyAndLastPollBeforeBlocking)
{
    Pipe p;
    PollRec r;
    aio_context_set_poll_params(ctx, 100 * 1000 * 1000, 0, 0);
    aio_poll(ctx, false);
    aio_set_fd_handler(ctx, p.fd[0], nullptr, nullptr, rec_poll, rec_ready, &r);
    aio_set_fd_poll_notify(ctx, p.fd[0], rec_notify);
    // Warm up so poll_ns > 0.
    for (int i = 0; i < 10 && aio_context_get_poll_ns(ctx) == 0; i++) {
        std::thread t([&] {
            std::this_thread::sleep_for(std::chrono::microseconds(20));
            aio_notify(ctx);
        });
        aio_poll(ctx, true);
        t.join();
    }
    ASSERT_GT(aio_context_get_poll_ns(ctx), 0);
    // Now nothing happens during the busy-poll window; the handler hears
    // that polling ends, a "kick" arrives at that moment, and the last
    // poll before blocking must see it (otherwise aio_poll would sleep
    // forever: the watchdog fails the test).
    r.set_work_on_end = true;
    std::atomic<bool> finished{false};
    std::thread watchdog([&] {
        for (int i = 0; i < 1000 && !finished.load(); i++) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        if (!finished.load()) {
            ADD_FAILURE() << "kick lost: aio_poll blocked";
            aio_notify(ctx);
        }
    });
    aio_poll(ctx, true);
    finished.store(true);
    watchdog.join();
    EXPECT_EQ(r.ready, 1);
    EXPECT_GE(r.notify_on, 1);
    EXPECT_GE(r.notify_off, 1);
    aio_set_fd_handler(ctx, p.fd[0], nullptr, nullptr, nullptr, nullptr, nullptr);
}

TEST_F(AioTest, ThousandIdleFdsOneActive)
{
    std::vector<Pipe *> pipes;
    std::vector<ReadRec *> recs;
    for (int i = 0; i < 1000; i++) {
        pipes.push_back(new Pipe);
        recs.push_back(new ReadRec{pipes.back()});
        aio_set_fd_handler(ctx, pipes[i]->fd[0], read_cb, nullptr, nullptr, nullptr, recs[i]);
    }
    for (int round = 0; round < 100; round++) {
        int i = (round * 37) % 1000;
        pipes[i]->put();
        EXPECT_TRUE(aio_poll(ctx, true));
    }
    int total = 0;
    for (auto *r : recs) {
        total += r->n;
    }
    EXPECT_EQ(total, 100);
    for (int i = 0; i < 1000; i++) {
        aio_set_fd_handler(ctx, pipes[i]->fd[0], nullptr, nullptr, nullptr, nullptr, nullptr);
        delete recs[i];
        delete pipes[i];
    }
}

} // namespace
