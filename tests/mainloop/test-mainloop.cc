// Main loop: fd handlers, BHs of the main AioContext, the BQL released
// while the loop sleeps, shutdown requests, thread naming.
#include "../common/thread-names.h"
#include "shardvm/iothread.h"
#include "shardvm/main-loop.h"
#include "shardvm/thread-pool.h"
#include "shardvm/thread.h"

#include <gtest/gtest.h>

#include <atomic>
#include <dirent.h>
#include <set>
#include <cerrno>
#include <fcntl.h>
#include <fstream>
#include <pthread.h>
#include <signal.h>
#include <string>
#include <unistd.h>

namespace {

std::string SelfName()
{
    std::ifstream f("/proc/thread-self/comm");
    std::string name;
    std::getline(f, name);
    return name;
}

class MainLoop : public ::testing::Test {
protected:
    void SetUp() override
    {
        GError *err = nullptr;
        ASSERT_EQ(main_loop_init(false, &err), 0)
            << (err ? err->message : "");
        ASSERT_TRUE(bql_locked());
    }
    void TearDown() override
    {
        main_loop_cleanup();
        EXPECT_FALSE(bql_locked());
    }

    // Iterate until @cond holds; fails (rather than hangs) after 30 s.
    template <typename F> void WaitUntil(F cond)
    {
        gint64 deadline = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;
        while (!cond()) {
            ASSERT_LT(g_get_monotonic_time(), deadline) << "never happened";
            main_loop_wait(false);
        }
    }
};

// Issue 7, point 9: the main context, not the fd context, is current.
TEST_F(MainLoop, MainContextIsCurrentAfterInit)
{
    EXPECT_EQ(aio_get_current_context(), main_loop_get_aio_context());
}

TEST_F(MainLoop, InitNamesThreadAndTakesBql)
{
    EXPECT_EQ(SelfName(), "shardvm");
    EXPECT_NE(main_loop_get_aio_context(), nullptr);
    EXPECT_NE(main_loop_get_gmain_context(), nullptr);
    EXPECT_TRUE(main_loop_signalfd_active());
    GError *err = nullptr;
    EXPECT_EQ(main_loop_init(false, &err), -EBUSY);
    ASSERT_NE(err, nullptr);
    g_error_free(err);
}

TEST_F(MainLoop, SignalsBlockedButNotTheVcpuKick)
{
    sigset_t cur;
    pthread_sigmask(SIG_SETMASK, nullptr, &cur);
    for (int s : {SIGTERM, SIGINT, SIGHUP, SIGBUS, SIGIO, SIGALRM}) {
        EXPECT_TRUE(sigismember(&cur, s)) << s;
    }
    EXPECT_FALSE(sigismember(&cur, SIGUSR1));
}

struct FdState {
    int fd;
    int reads = 0;
    bool had_bql = true;
    pthread_t thread;
};

void OnReadable(void *opaque)
{
    auto *s = static_cast<FdState *>(opaque);
    char buf[64];
    while (read(s->fd, buf, sizeof(buf)) > 0) {
    }
    s->reads++;
    s->had_bql &= bql_locked();
    s->thread = pthread_self();
}

TEST_F(MainLoop, FdHandlerRunsInMainThreadWithBql)
{
    int p[2];
    ASSERT_EQ(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    FdState s;
    s.fd = p[0];
    main_loop_set_fd_handler(p[0], OnReadable, nullptr, &s);
    for (int i = 1; i <= 3; i++) {
        ASSERT_EQ(write(p[1], "x", 1), 1);
        WaitUntil([&] { return s.reads == i; });
    }
    EXPECT_TRUE(s.had_bql);
    EXPECT_TRUE(pthread_equal(s.thread, pthread_self()));

    main_loop_set_fd_handler(p[0], nullptr, nullptr, nullptr);
    ASSERT_EQ(write(p[1], "x", 1), 1);
    main_loop_wait(true);
    EXPECT_EQ(s.reads, 3);
    close(p[0]);
    close(p[1]);
}

struct WritableState {
    int calls = 0;
};

void OnWritable(void *opaque)
{
    static_cast<WritableState *>(opaque)->calls++;
}

TEST_F(MainLoop, FdWriteHandler)
{
    int p[2];
    ASSERT_EQ(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    WritableState w;
    main_loop_set_fd_handler(p[1], nullptr, OnWritable, &w);
    WaitUntil([&] { return w.calls > 0; });
    main_loop_set_fd_handler(p[1], nullptr, nullptr, nullptr);
    close(p[0]);
    close(p[1]);
}

struct BhState {
    std::atomic<int> ran{0};
    bool had_bql = false;
    pthread_t thread;
};

void MainBh(void *opaque)
{
    auto *s = static_cast<BhState *>(opaque);
    s->had_bql = bql_locked();
    s->thread = pthread_self();
    s->ran++;
}

void *ScheduleFromThread(void *opaque)
{
    EXPECT_EQ(aio_bh_schedule_oneshot(main_loop_get_aio_context(), MainBh,
                                      opaque), 0);
    return nullptr;
}

TEST_F(MainLoop, BhFromAnotherThreadRunsInMainLoop)
{
    BhState s;
    pthread_t t;
    ASSERT_EQ(shardvm_thread_create(&t, "test-bh", ScheduleFromThread, &s,
                                    nullptr), 0);
    WaitUntil([&] { return s.ran.load() == 1; });
    pthread_join(t, nullptr);
    EXPECT_TRUE(s.had_bql);
    EXPECT_TRUE(pthread_equal(s.thread, pthread_self()));
}

// The other thread takes the BQL while the main loop sleeps in poll, and
// wakes it only while still holding the lock: the handler then must not
// run before the other thread released it.
struct BqlTest {
    int pipe[2];
    std::atomic<bool> took_bql{false};
    int value = 0; // BQL
    int seen = -1;
    bool handled = false;
};

void *TakeBqlWhileMainSleeps(void *opaque)
{
    auto *b = static_cast<BqlTest *>(opaque);
    bql_lock(); // would block forever if the sleeping loop kept it
    b->took_bql = true;
    EXPECT_EQ(write(b->pipe[1], "x", 1), 1);
    g_usleep(50 * 1000);
    b->value = 42;
    bql_unlock();
    return nullptr;
}

void BqlReader(void *opaque)
{
    auto *b = static_cast<BqlTest *>(opaque);
    char c;
    while (read(b->pipe[0], &c, 1) > 0) {
    }
    b->seen = b->value;
    b->handled = true;
}

TEST_F(MainLoop, BqlIsFreeWhileTheLoopSleeps)
{
    BqlTest b;
    ASSERT_EQ(pipe2(b.pipe, O_NONBLOCK | O_CLOEXEC), 0);
    main_loop_set_fd_handler(b.pipe[0], BqlReader, nullptr, &b);
    pthread_t t;
    ASSERT_EQ(shardvm_thread_create(&t, "test-bql", TakeBqlWhileMainSleeps,
                                    &b, nullptr), 0);
    WaitUntil([&] { return b.handled; });
    EXPECT_TRUE(b.took_bql.load());
    EXPECT_EQ(b.seen, 42);
    EXPECT_TRUE(bql_locked());
    main_loop_set_fd_handler(b.pipe[0], nullptr, nullptr, nullptr);
    bql_unlock();
    pthread_join(t, nullptr);
    bql_lock();
    close(b.pipe[0]);
    close(b.pipe[1]);
}

void *RequestGuestShutdown(void *)
{
    g_usleep(20 * 1000);
    main_loop_request_shutdown(SHUTDOWN_GUEST);
    main_loop_request_shutdown(SHUTDOWN_ERROR); // the first one wins
    return nullptr;
}

TEST_F(MainLoop, ShutdownFromAnotherThreadStopsRun)
{
    EXPECT_EQ(main_loop_shutdown_requested(), SHUTDOWN_NONE);
    pthread_t t;
    ASSERT_EQ(shardvm_thread_create(&t, "test-shutdown",
                                    RequestGuestShutdown, nullptr, nullptr),
              0);
    EXPECT_EQ(main_loop_run(), SHUTDOWN_GUEST);
    EXPECT_EQ(main_loop_shutdown_requested(), SHUTDOWN_GUEST);
    EXPECT_EQ(main_loop_shutdown_signal(), 0);
    pthread_join(t, nullptr);
}

TEST_F(MainLoop, InitClearsEarlierShutdown)
{
    main_loop_request_shutdown(SHUTDOWN_HOST_QMP);
    EXPECT_EQ(main_loop_run(), SHUTDOWN_HOST_QMP);
    main_loop_cleanup();
    GError *err = nullptr;
    ASSERT_EQ(main_loop_init(false, &err), 0);
    EXPECT_EQ(main_loop_shutdown_requested(), SHUTDOWN_NONE);
}

TEST_F(MainLoop, NonblockingWaitReturns)
{
    for (int i = 0; i < 100; i++) {
        main_loop_wait(true);
    }
    EXPECT_TRUE(bql_locked());
}

struct TimerState {
    int fired = 0;
    bool had_bql = false;
};

void OnTimer(void *opaque)
{
    auto *t = static_cast<TimerState *>(opaque);
    t->fired++;
    t->had_bql = bql_locked();
}

// A timer of the main AioContext wakes the sleeping loop (the GSource's
// timeout) and runs with the BQL.
TEST_F(MainLoop, MainContextTimerFires)
{
    TimerState st;
    AioTimer *t = aio_timer_new(main_loop_get_aio_context(), OnTimer, &st);
    aio_timer_mod(t, aio_clock_ns() + 5 * 1000 * 1000);
    WaitUntil([&] { return st.fired == 1; });
    EXPECT_TRUE(st.had_bql);
    aio_timer_free(t);
}

std::multiset<std::string> ThreadNames()
{
    std::vector<std::string> v = test_thread_names();
    return {v.begin(), v.end()};
}

// What `ps -T` shows for a VMM with one IOThread and a busy pool.
TEST_F(MainLoop, ThreadModelIsVisibleInProc)
{
    IOThread *iot = iothread_new("io0", nullptr, nullptr);
    ASSERT_NE(iot, nullptr);
    ASSERT_EQ(thread_pool_set_limits(main_loop_get_aio_context(), 2, 4, 0), 0);
    auto names = ThreadNames();
    // Not an exact count: sanitizer runtimes start helper threads of their
    // own, which inherit the main thread's name.
    EXPECT_EQ(SelfName(), "shardvm");
    EXPECT_GE(names.count("shardvm"), 1u);
    EXPECT_EQ(names.count("IO io0"), 1u);
    EXPECT_EQ(names.count("worker"), 2u);
    EXPECT_EQ(names.count("call_rcu"), 1u);
    iothread_free(iot);
}

} // namespace
