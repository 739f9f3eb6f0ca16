// Thread pool: completion thread, FIFO order, min/max workers, idle exit,
// cancellation, 100,000 jobs, teardown with the context.
#include "../common/thread-names.h"
#include "shardvm/aio.h"
#include "shardvm/iothread.h"
#include "shardvm/rcu.h"
#include "shardvm/thread-pool.h"
#include "shardvm/thread.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <dirent.h>
#include <fstream>
#include <pthread.h>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

int CountThreadsNamed(const std::string &want)
{
    return test_count_threads(want);
}

class ThreadPool : public ::testing::Test {
protected:
    AioContext *ctx = nullptr;

    void SetUp() override
    {
        shardvm_rcu_init();
        ctx = aio_context_new(nullptr);
        ASSERT_NE(ctx, nullptr);
    }
    void TearDown() override
    {
        if (ctx) {
            aio_context_unref(ctx); // frees the pool: joins every worker
        }
        EXPECT_EQ(CountThreadsNamed("worker"), 0);
    }

    // Poll ctx until @cond holds; fails (rather than hangs) after 60 s.
    template <typename F> void PollUntil(F cond)
    {
        gint64 deadline = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;
        while (!cond()) {
            ASSERT_LT(g_get_monotonic_time(), deadline) << "condition never met";
            aio_poll(ctx, false);
            if (!cond()) {
                g_usleep(200);
            }
        }
    }
};

struct Gate {
    std::atomic<bool> open{false};
    std::atomic<int> running{0};
    std::atomic<int> peak{0};
};

int GatedJob(void *arg)
{
    auto *g = static_cast<Gate *>(arg);
    int now = ++g->running;
    int peak = g->peak.load();
    while (now > peak && !g->peak.compare_exchange_weak(peak, now)) {
    }
    while (!g->open.load()) {
        g_usleep(200);
    }
    g->running--;
    return 0;
}

struct DoneRecord {
    std::vector<int> rets;
    std::vector<pthread_t> threads;
    int calls = 0;
};

void RecordDone(void *opaque, int ret)
{
    auto *r = static_cast<DoneRecord *>(opaque);
    r->rets.push_back(ret);
    r->threads.push_back(pthread_self());
    r->calls++;
}

int Return42(void *) { return 42; }

TEST_F(ThreadPool, DoneRunsInHomeThreadWithResult)
{
    DoneRecord rec;
    EXPECT_EQ(thread_pool_get_workers(ctx), 0); // created on first use
    thread_pool_submit(ctx, Return42, nullptr, RecordDone, &rec);
    PollUntil([&] { return rec.calls == 1; });
    EXPECT_EQ(rec.rets[0], 42);
    EXPECT_TRUE(pthread_equal(rec.threads[0], pthread_self()));
    EXPECT_GE(thread_pool_get_workers(ctx), 1);
}

TEST_F(ThreadPool, WorkersAreNamedWorker)
{
    Gate g;
    DoneRecord rec;
    thread_pool_submit(ctx, GatedJob, &g, RecordDone, &rec);
    PollUntil([&] { return g.running.load() == 1; });
    EXPECT_EQ(CountThreadsNamed("worker"), thread_pool_get_workers(ctx));
    g.open = true;
    PollUntil([&] { return rec.calls == 1; });
}

struct OrderJob {
    std::vector<int> *ran; // appended by the (single) worker
    std::vector<int> *done;
    int index;
};

int OrderRun(void *arg)
{
    auto *j = static_cast<OrderJob *>(arg);
    j->ran->push_back(j->index);
    return j->index;
}

void OrderDone(void *opaque, int ret)
{
    auto *j = static_cast<OrderJob *>(opaque);
    EXPECT_EQ(ret, j->index);
    j->done->push_back(j->index);
}

TEST_F(ThreadPool, OneWorkerRunsAndCompletesInSubmissionOrder)
{
    constexpr int kJobs = 200;
    std::vector<int> ran, done;
    std::vector<OrderJob> jobs(kJobs);

    ASSERT_EQ(thread_pool_set_limits(ctx, 0, 1, 0), 0);
    for (int i = 0; i < kJobs; i++) {
        jobs[i] = {&ran, &done, i};
        thread_pool_submit(ctx, OrderRun, &jobs[i], OrderDone, &jobs[i]);
    }
    PollUntil([&] { return (int)done.size() == kJobs; });
    EXPECT_LE(thread_pool_get_workers(ctx), 1);
    for (int i = 0; i < kJobs; i++) {
        EXPECT_EQ(ran[i], i);
        EXPECT_EQ(done[i], i);
    }
}

TEST_F(ThreadPool, NeverMoreThanMaxWorkers)
{
    Gate g;
    DoneRecord rec;
    ASSERT_EQ(thread_pool_set_limits(ctx, 0, 3, 0), 0);
    for (int i = 0; i < 10; i++) {
        thread_pool_submit(ctx, GatedJob, &g, RecordDone, &rec);
    }
    PollUntil([&] { return g.running.load() == 3; });
    EXPECT_EQ(thread_pool_get_workers(ctx), 3);
    g.open = true;
    PollUntil([&] { return rec.calls == 10; });
    EXPECT_EQ(g.peak.load(), 3);
    EXPECT_LE(thread_pool_get_workers(ctx), 3);
}

TEST_F(ThreadPool, MinWorkersStayIdleOnesAboveMinExit)
{
    Gate g;
    DoneRecord rec;
    ASSERT_EQ(thread_pool_set_limits(ctx, 2, 4, 50), 0);
    EXPECT_EQ(thread_pool_get_workers(ctx), 2); // min started eagerly
    for (int i = 0; i < 4; i++) {
        thread_pool_submit(ctx, GatedJob, &g, RecordDone, &rec);
    }
    PollUntil([&] { return g.running.load() == 4; });
    EXPECT_EQ(thread_pool_get_workers(ctx), 4);
    g.open = true;
    PollUntil([&] { return rec.calls == 4; });
    // Idle for 50 ms: the two above min leave, the two of min stay.
    PollUntil([&] { return thread_pool_get_workers(ctx) == 2; });
    g_usleep(200 * 1000);
    EXPECT_EQ(thread_pool_get_workers(ctx), 2);
    EXPECT_EQ(CountThreadsNamed("worker"), 2);

    // Lowering the limits lets the rest go too.
    ASSERT_EQ(thread_pool_set_limits(ctx, 0, 4, 0), 0);
    PollUntil([&] { return thread_pool_get_workers(ctx) == 0; });
}

TEST_F(ThreadPool, InvalidLimits)
{
    EXPECT_EQ(thread_pool_set_limits(ctx, 0, 0, 0), -EINVAL);
    EXPECT_EQ(thread_pool_set_limits(ctx, 3, 2, 0), -EINVAL);
    EXPECT_EQ(thread_pool_set_limits(ctx, -1, 2, 0), -EINVAL);
    EXPECT_EQ(thread_pool_set_limits(ctx, 0, 2, -5), -EINVAL);
}

TEST_F(ThreadPool, CancelQueuedJobsOnly)
{
    Gate g;
    DoneRecord running, queued, cancelled;
    ASSERT_EQ(thread_pool_set_limits(ctx, 0, 1, 0), 0);
    ThreadPoolJob *a = thread_pool_submit(ctx, GatedJob, &g, RecordDone,
                                          &running);
    PollUntil([&] { return g.running.load() == 1; });
    ThreadPoolJob *b = thread_pool_submit(ctx, Return42, nullptr, RecordDone,
                                          &cancelled);
    thread_pool_submit(ctx, Return42, nullptr, RecordDone, &queued);

    EXPECT_TRUE(thread_pool_cancel(b));
    EXPECT_EQ(cancelled.calls, 0); // done comes later, as a BH
    EXPECT_FALSE(thread_pool_cancel(a)); // running: not affected
    PollUntil([&] { return cancelled.calls == 1; });
    EXPECT_EQ(cancelled.rets[0], -ECANCELED);
    EXPECT_TRUE(pthread_equal(cancelled.threads[0], pthread_self()));

    g.open = true;
    PollUntil([&] { return running.calls == 1 && queued.calls == 1; });
    EXPECT_EQ(running.rets[0], 0);
    EXPECT_EQ(queued.rets[0], 42);
    EXPECT_EQ(cancelled.calls, 1); // exactly once
}

std::atomic<long> job_sum;

int SumJob(void *arg)
{
    long i = (long)(intptr_t)arg;
    job_sum += i;
    return (int)(i % 1000);
}

struct SumDone {
    long sum = 0;
    long calls = 0;
};

void SumDoneCb(void *opaque, int ret)
{
    auto *s = static_cast<SumDone *>(opaque);
    s->sum += ret;
    s->calls++;
}

TEST_F(ThreadPool, HundredThousandJobs)
{
    constexpr long kJobs = 100000;
    SumDone s;
    long expect_ret = 0, expect_sum = 0;
    job_sum = 0;
    ASSERT_EQ(thread_pool_set_limits(ctx, 0, 4, 0), 0);
    for (long i = 0; i < kJobs; i++) {
        thread_pool_submit(ctx, SumJob, (void *)(intptr_t)i, SumDoneCb, &s);
        expect_ret += i % 1000;
        expect_sum += i;
        if (i % 1000 == 999) {
            aio_poll(ctx, false); // let completions interleave
        }
    }
    PollUntil([&] { return s.calls == kJobs; });
    EXPECT_EQ(s.sum, expect_ret);
    EXPECT_EQ(job_sum.load(), expect_sum);
    EXPECT_LE(thread_pool_get_workers(ctx), 4);
}

TEST_F(ThreadPool, PoolsArePerContext)
{
    AioContext *other = aio_context_new(nullptr);
    ASSERT_NE(other, nullptr);
    ASSERT_EQ(thread_pool_set_limits(other, 1, 2, 0), 0);
    EXPECT_EQ(thread_pool_get_workers(other), 1);
    EXPECT_EQ(thread_pool_get_workers(ctx), 0);
    aio_context_unref(other); // joins its worker
    EXPECT_EQ(CountThreadsNamed("worker"), 0);
}

void *OpenGateLater(void *opaque)
{
    g_usleep(100 * 1000);
    static_cast<Gate *>(opaque)->open = true;
    return nullptr;
}

// Finalising the context with jobs in flight: the running one completes,
// queued ones are cancelled, and every done callback runs exactly once.
TEST_F(ThreadPool, FinalisationDeliversEveryDoneExactlyOnce)
{
    Gate g;
    DoneRecord a, b, c;
    ASSERT_EQ(thread_pool_set_limits(ctx, 0, 1, 0), 0);
    thread_pool_submit(ctx, GatedJob, &g, RecordDone, &a);
    PollUntil([&] { return g.running.load() == 1; });
    thread_pool_submit(ctx, Return42, nullptr, RecordDone, &b);
    thread_pool_submit(ctx, Return42, nullptr, RecordDone, &c);
    pthread_t t;
    ASSERT_EQ(shardvm_thread_create(&t, "test-gate", OpenGateLater, &g,
                                    nullptr), 0);
    aio_context_unref(ctx); // waits for the running job
    ctx = nullptr;
    pthread_join(t, nullptr);
    EXPECT_EQ(a.calls, 1);
    EXPECT_EQ(a.rets[0], 0);
    for (DoneRecord *r : {&b, &c}) {
        ASSERT_EQ(r->calls, 1);
        EXPECT_TRUE(r->rets[0] == 42 || r->rets[0] == -ECANCELED)
            << r->rets[0];
    }
}

struct IOThreadJobs {
    Gate *gate;
    DoneRecord *rec;
};

void SubmitInIOThread(void *opaque)
{
    auto *j = static_cast<IOThreadJobs *>(opaque);
    thread_pool_submit(aio_get_current_context(), GatedJob, j->gate,
                       RecordDone, j->rec);
}

// The IOThread stops (its context closes) while a job runs: the done
// callback cannot come as a BH any more, so the thread that frees the
// context delivers it.
TEST_F(ThreadPool, JobOutlivingItsIOThreadStillCompletes)
{
    Gate g;
    DoneRecord rec;
    IOThread *iot = iothread_new("io-pool", nullptr, nullptr);
    ASSERT_NE(iot, nullptr);
    IOThreadJobs j{&g, &rec};
    ASSERT_EQ(aio_context_run_sync(iothread_get_aio_context(iot),
                                   SubmitInIOThread, &j), 0);
    while (g.running.load() != 1) {
        g_usleep(200);
    }
    iothread_stop(iot);
    EXPECT_EQ(rec.calls, 0);
    g.open = true;
    iothread_free(iot); // joins the worker, then delivers
    ASSERT_EQ(rec.calls, 1);
    EXPECT_EQ(rec.rets[0], 0);
    EXPECT_TRUE(pthread_equal(rec.threads[0], pthread_self()));
}

// Issue 7, point 3: a done callback run during the context's finalisation
// submits again.  The submission is refused (NULL, its done never runs):
// no second pool on the dying context, whose worker would later schedule a
// BH on freed memory (ASan).
struct Resubmit {
    AioContext *ctx;
    int first_done = 0;
    int second_done = 0;
    bool refused = false;
};

void ResubmitSecondDone(void *opaque, int ret)
{
    static_cast<Resubmit *>(opaque)->second_done++;
}

void ResubmitFirstDone(void *opaque, int ret)
{
    auto *r = static_cast<Resubmit *>(opaque);
    r->first_done++;
    ThreadPoolJob *j = thread_pool_submit(r->ctx, Return42, nullptr,
                                          ResubmitSecondDone, r);
    r->refused = (j == nullptr);
}

TEST_F(ThreadPool, SubmitFromDoneDuringFinalisationIsRefused)
{
    Resubmit r{ctx};
    thread_pool_submit(ctx, Return42, nullptr, ResubmitFirstDone, &r);
    aio_context_unref(ctx); // waits for the job, runs its done callback
    ctx = nullptr;
    EXPECT_EQ(r.first_done, 1);
    EXPECT_TRUE(r.refused);
    EXPECT_EQ(r.second_done, 0);
    EXPECT_EQ(CountThreadsNamed("worker"), 0);
}

} // namespace
