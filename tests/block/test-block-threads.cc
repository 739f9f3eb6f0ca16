// Queues in several AioContexts at once: drain with requests in flight on
// two IOThreads, and the main context submitting concurrently to the same
// backend (run under TSan in scripts/test).
#include "block-test-util.h"
#include "shardvm/iothread.h"
#include "shardvm/rcu.h"

#include <atomic>

using namespace blocktest;

namespace {

constexpr uint64_t kImageSize = 64ull << 20;
constexpr int kReqs = 128;
constexpr size_t kLen = 16384;

// One context's share of the work: writes kReqs patterns into its own
// 8 MiB slice, drains with all of them in flight, reads them back.
struct Worker {
    BlockBackend *blk;
    int slice;
    AioContext *ctx = nullptr;
    unsigned max_in_flight = 0;
    int completed = 0;
    int errors = 0;
    bool data_ok = false;
    std::atomic<bool> finished{ false };

    uint64_t Offset(int i) const
    {
        return (uint64_t)slice * (8 << 20) + (uint64_t)i * kLen;
    }

    void Run()
    {
        ctx = aio_get_current_context();
        BlockQueue *q = blk_queue_new(blk, ctx, nullptr);
        if (!q) {
            errors = -1;
            finished = true;
            return;
        }
        std::vector<std::vector<uint8_t>> data(kReqs);
        std::vector<struct iovec> iov(kReqs);
        Done d(kReqs);
        blk_queue_plug(q);
        for (int i = 0; i < kReqs; i++) {
            data[i] = Pattern(kLen, slice * 1000 + i);
            iov[i] = { data[i].data(), kLen };
            blk_queue_pwritev(q, Offset(i), &iov[i], 1, Done::Cb, d.Op(i));
        }
        blk_queue_unplug(q);
        max_in_flight = blk_queue_in_flight(q);
        blk_queue_drain(q);
        completed = d.count;
        errors = d.errors;

        std::vector<uint8_t> back(kLen);
        struct iovec riov = { back.data(), kLen };
        data_ok = true;
        for (int i = 0; i < kReqs; i += 17) {
            Done r(1);
            blk_queue_preadv(q, Offset(i), &riov, 1, Done::Cb, r.Op(0));
            blk_queue_drain(q);
            data_ok = data_ok && r.errors == 0 && back == data[i];
        }
        blk_queue_free(q);
        finished = true;
    }
    static void Bh(void *opaque) { static_cast<Worker *>(opaque)->Run(); }
};

class BlockThreads : public ::testing::TestWithParam<int> {
protected:
    void SetUp() override { shardvm_rcu_init(); }
};

TEST_P(BlockThreads, DrainOnTwoIOThreadsAndMainAtOnce)
{
    BlockAioMode aio = (BlockAioMode)GetParam();
    const char *cache = aio == BLOCK_AIO_NATIVE ? "none" : "writeback";
    if (aio == BLOCK_AIO_NATIVE && ImageDir().empty()) {
        GTEST_SKIP() << "no directory whose file system supports O_DIRECT";
    }
    Image img(kImageSize);
    BlockOptions o = FileOptions(img.path, aio, cache);
    GError *err = nullptr;
    BlockBackend *blk = blk_open(&o, &err);
    ASSERT_NE(blk, nullptr) << err->message;

    IOThread *io[2];
    Worker w[3] = { { blk, 0 }, { blk, 1 }, { blk, 2 } };
    for (int i = 0; i < 2; i++) {
        io[i] = iothread_new(i ? "b1" : "b0", nullptr, nullptr);
        ASSERT_NE(io[i], nullptr);
        ASSERT_EQ(aio_bh_schedule_oneshot(iothread_get_aio_context(io[i]),
                                          Worker::Bh, &w[i]), 0);
    }
    AioContext *main_ctx = aio_context_new(nullptr);
    ASSERT_NE(main_ctx, nullptr);
    aio_context_set_home_thread(main_ctx); /* what Worker::Run() uses */
    w[2].Run(); // the main context, while the IOThreads run theirs
    for (int i = 0; i < 2; i++) {
        while (!w[i].finished) {
            g_usleep(1000);
        }
    }
    for (int i = 0; i < 3; i++) {
        EXPECT_EQ(w[i].completed, kReqs) << "worker " << i;
        EXPECT_EQ(w[i].errors, 0) << "worker " << i;
        EXPECT_TRUE(w[i].data_ok) << "worker " << i;
        EXPECT_GT(w[i].max_in_flight, 0u) << "worker " << i;
        for (int j = 0; j < kReqs; j += 31) {
            EXPECT_TRUE(img.Read(w[i].Offset(j), kLen) ==
                        Pattern(kLen, i * 1000 + j))
                << "worker " << i << " request " << j;
        }
    }
    BlockStats st;
    blk_get_stats(blk, &st);
    EXPECT_EQ(st.wr_ops, 3u * kReqs);
    for (auto *t : io) {
        iothread_free(t);
    }
    aio_context_unref(main_ctx);
    blk_unref(blk);
    block_options_clear(&o);
}

INSTANTIATE_TEST_SUITE_P(Aio, BlockThreads,
                         ::testing::Values((int)BLOCK_AIO_THREADS,
                                           (int)BLOCK_AIO_NATIVE,
                                           (int)BLOCK_AIO_IO_URING));

} // namespace
