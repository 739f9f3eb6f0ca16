// Hostile callers, guests and schedulers: the defects a review found in
// the block layer, each with the input that showed it.
#include "block-test-util.h"
#include "shardvm/iothread.h"
#include "shardvm/rcu.h"

#include <atomic>
#include <climits>
#include <csignal>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <thread>

using namespace blocktest;

namespace {

const BlockAioMode kAioModes[] = { BLOCK_AIO_THREADS, BLOCK_AIO_NATIVE,
                                   BLOCK_AIO_IO_URING };

[[maybe_unused]] const char *AioName(BlockAioMode m)
{
    return m == BLOCK_AIO_THREADS ? "threads"
         : m == BLOCK_AIO_NATIVE ? "native" : "io_uring";
}

// Kills the test (SIGALRM) instead of letting it hang forever.
struct Watchdog {
    explicit Watchdog(unsigned s) { alarm(s); }
    ~Watchdog() { alarm(0); }
};

class BlockAttack : public ::testing::Test {
protected:
    AioContext *ctx = nullptr;
    void SetUp() override
    {
        shardvm_rcu_init();
        ctx = aio_context_new(nullptr);
        ASSERT_NE(ctx, nullptr);
    }
    void TearDown() override { aio_context_unref(ctx); }

    static BlockBackend *Open(const BlockOptions &o,
                              std::string *msg = nullptr)
    {
        GError *err = nullptr;
        BlockBackend *blk = blk_open(&o, &err);
        if (msg) {
            *msg = err ? err->message : "";
        }
        if (err) {
            g_error_free(err);
        }
        return blk;
    }
    BlockQueue *Queue(BlockBackend *blk)
    {
        GError *err = nullptr;
        BlockQueue *q = blk_queue_new(blk, ctx, &err);
        EXPECT_NE(q, nullptr) << (err ? err->message : "");
        if (err) {
            g_error_free(err);
        }
        return q;
    }
    static BlockOptions Parse(const std::string &arg)
    {
        BlockOptions o{};
        GError *err = nullptr;
        EXPECT_EQ(block_parse_drive(arg.c_str(), &o, &err), 0)
            << arg << ": " << (err ? err->message : "");
        if (err) {
            g_error_free(err);
        }
        return o;
    }
};

} // namespace

// iovec lengths whose sum wraps around 2^64 looked like a 1-byte request:
// the null driver then memset() the real (huge) vector, O_DIRECT copied it
// into a 512-byte bounce buffer.  A negative iovcnt looked like 0 bytes.
TEST_F(BlockAttack, IovLengthOverflowAndNegativeCountRejected)
{
    Image img(1 << 20);
    std::vector<uint8_t> buf(8192);
    struct iovec wrap[2] = { { buf.data(), SIZE_MAX },
                             { buf.data() + 1, 2 } };
    struct iovec one = { buf.data(), 512 };
    std::string args[] = {
        "driver=null-co,read-zeroes=on,if=none",
        "file=" + img.path + ",cache=none,aio=threads",
        "file=" + img.path + ",cache=writeback,aio=io_uring",
    };
    for (auto &arg : args) {
        BlockOptions o = Parse(arg);
        BlockBackend *blk = Open(o);
        ASSERT_NE(blk, nullptr) << arg;
        BlockQueue *q = Queue(blk);
        Done d;
        EXPECT_EQ(blk_queue_preadv(q, 0, wrap, 2, Done::Cb, d.Op(0)), -EINVAL)
            << arg;
        EXPECT_EQ(blk_queue_pwritev(q, 1, wrap, 2, Done::Cb, d.Op(1)),
                  -EINVAL) << arg;
        EXPECT_EQ(blk_queue_preadv(q, 0, &one, -1, Done::Cb, d.Op(2)),
                  -EINVAL) << arg;
        EXPECT_EQ(blk_queue_pwritev(q, 0, &one, INT_MIN, Done::Cb, d.Op(3)),
                  -EINVAL) << arg;
        EXPECT_EQ(blk_queue_in_flight(q), 0u);
        blk_queue_drain(q);
        EXPECT_EQ(d.count, 0);
        blk_queue_free(q);
        blk_unref(blk);
        block_options_clear(&o);
    }
}

// Plugged submissions sat in the queue's pending batch (libaio) or in
// unsubmitted SQEs (io_uring) while drain slept in aio_poll(): a hang.
TEST_F(BlockAttack, DrainWhilePluggedSubmitsAndCompletes)
{
    if (ImageDir().empty()) {
        GTEST_SKIP() << "no directory whose file system supports O_DIRECT";
    }
    for (BlockAioMode aio : kAioModes) {
        Image img(1 << 20);
        BlockOptions o = FileOptions(img.path, aio, "none");
        BlockBackend *blk = Open(o);
        ASSERT_NE(blk, nullptr);
        BlockQueue *q = Queue(blk);
        std::vector<uint8_t> data = Pattern(4096, 7);
        struct iovec iov = { nullptr, 4096 };
        void *abuf = nullptr;
        ASSERT_EQ(posix_memalign(&abuf, 4096, 4096), 0);
        memcpy(abuf, data.data(), 4096);
        iov.iov_base = abuf;
        Done d;
        {
            Watchdog w(20);
            blk_queue_plug(q);
            blk_queue_plug(q);
            ASSERT_EQ(blk_queue_pwritev(q, 8192, &iov, 1, Done::Cb, d.Op(0)),
                      0);
            blk_queue_drain(q);
            EXPECT_EQ(d.count, 1) << AioName(aio);
            /* still plugged: later submissions are batched again */
            ASSERT_EQ(blk_queue_preadv(q, 8192, &iov, 1, Done::Cb, d.Op(1)),
                      0);
            blk_queue_unplug(q);
            blk_queue_unplug(q);
            blk_queue_drain(q);
        }
        EXPECT_EQ(d.count, 2) << AioName(aio);
        EXPECT_EQ(d.errors, 0) << AioName(aio);
        EXPECT_EQ(img.Read(8192, 4096), data) << AioName(aio);
        free(abuf);
        blk_queue_free(q);
        blk_unref(blk);
        block_options_clear(&o);
    }
}

// A completion callback may free its own queue once nothing else is in
// flight (the contract allows it).  The libaio / io_uring reapers and the
// null driver's latency timer went on touching the freed state.  The
// driver's per-context state (io_uring ring, eventfds) is still released,
// once the reaper returns: no descriptor is left open (issue 14.6).
struct SelfFree {
    BlockQueue *q;
    int ret = 1;
    static void Cb(void *opaque, int ret)
    {
        SelfFree *s = static_cast<SelfFree *>(opaque);
        s->ret = ret;
        blk_queue_free(s->q);
        s->q = nullptr;
    }
};

TEST_F(BlockAttack, CallbackFreesItsOwnQueue)
{
    Image img(1 << 20);
    std::vector<std::string> args = {
        "driver=null-co,if=none",
        "driver=null-aio,if=none",
        "driver=null-co,latency-ns=1000,if=none",
    };
    for (BlockAioMode aio : kAioModes) {
        args.push_back("file=" + img.path + ",cache=" +
                       (aio == BLOCK_AIO_NATIVE ? "none" : "writeback") +
                       ",aio=" + AioName(aio));
    }
    for (auto &arg : args) {
        for (int kind = 0; kind < 2; kind++) {
            int fds = OpenFds();
            BlockOptions o = Parse(arg);
            BlockBackend *blk = Open(o);
            ASSERT_NE(blk, nullptr) << arg;
            SelfFree s;
            s.q = Queue(blk);
            void *buf = nullptr;
            ASSERT_EQ(posix_memalign(&buf, 4096, 4096), 0);
            struct iovec iov = { buf, 4096 };
            ASSERT_EQ(kind == 0 ? blk_queue_preadv(s.q, 0, &iov, 1,
                                                   SelfFree::Cb, &s)
                                : blk_queue_flush(s.q, SelfFree::Cb, &s), 0);
            Watchdog w(20);
            ASSERT_TRUE(PollUntil(ctx, [&] { return s.q == nullptr; }));
            EXPECT_EQ(s.ret, 0) << arg;
            /* the context must still work */
            aio_poll(ctx, false);
            free(buf);
            blk_unref(blk);
            block_options_clear(&o);
            EXPECT_EQ(OpenFds(), fds) << arg << ": a descriptor leaked";
        }
    }
}

// Drain from inside a completion callback is forbidden (block.h): the
// completions batched behind the running one can never run, so it used to
// sleep forever in aio_poll().  It must fail loudly instead.
struct DrainInCb {
    BlockQueue *q;
    static void Cb(void *opaque, int ret)
    {
        blk_queue_drain(static_cast<DrainInCb *>(opaque)->q);
    }
};

TEST_F(BlockAttack, DrainFromCallbackAbortsLoudly)
{
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    auto body = [&]() {
        alarm(10);
        AioContext *c = aio_context_new(nullptr);
        BlockOptions o = Parse("driver=null-co,if=none");
        BlockBackend *blk = Open(o);
        GError *err = nullptr;
        DrainInCb d{ blk_queue_new(blk, c, &err) };
        char buf[512];
        struct iovec iov = { buf, sizeof(buf) };
        blk_queue_preadv(d.q, 0, &iov, 1, DrainInCb::Cb, &d);
        blk_queue_preadv(d.q, 0, &iov, 1, DrainInCb::Cb, &d);
        for (;;) {
            aio_poll(c, true);
        }
    };
    EXPECT_DEATH(body(), "completion callback");
}

// Submitting from a thread that is not the queue context's home thread
// raced on every queue field, silently.  It is a programming error and
// must be caught.
TEST_F(BlockAttack, SubmitFromWrongThreadIsCaught)
{
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    auto body = [&]() {
        AioContext *c = aio_context_new(nullptr);
        BlockOptions o = Parse("driver=null-co,if=none");
        BlockBackend *blk = Open(o);
        BlockQueue *q = blk_queue_new(blk, c, nullptr);
        char buf[512];
        struct iovec iov = { buf, sizeof(buf) };
        std::thread t([&] {
            blk_queue_preadv(q, 0, &iov, 1, Done::Cb, nullptr);
        });
        t.join();
        _exit(0);
    };
    EXPECT_DEATH(body(), "home thread");
}

// Files that are not images: a FIFO (must not block in open(): with
// readonly=on, O_RDONLY waits for a writer), /dev/null, a directory.
TEST_F(BlockAttack, NotAnImageIsAnErrorNotAHang)
{
    std::string dir = (ImageDir().empty() ? "/tmp" : ImageDir()) +
                      "/shardvm-fifo-XXXXXX";
    ASSERT_NE(mkdtemp(&dir[0]), nullptr);
    std::string fifo = dir + "/fifo";
    ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
    Watchdog w(20);
    for (const std::string &f : { fifo, std::string("/dev/null"), dir }) {
        for (const char *ro : { "on", "off" }) {
            BlockOptions o = Parse("file=" + f + ",readonly=" + ro);
            std::string msg;
            EXPECT_EQ(Open(o, &msg), nullptr) << f;
            EXPECT_NE(msg.find(f), std::string::npos) << msg;
            block_options_clear(&o);
        }
    }
    unlink(fifo.c_str());
    rmdir(dir.c_str());
}

// Odd shapes on every aio mode, with and without O_DIRECT: zero-length
// and one-byte requests, a buffer misaligned by one, zero-length iovecs in
// the middle, more than IOV_MAX iovecs, a request ending exactly at the
// end of the image, one crossing it.
TEST_F(BlockAttack, OddShapesEveryMode)
{
    const uint64_t size = 1 << 20;
    for (BlockAioMode aio : kAioModes) {
        for (const char *cache : { "none", "writeback" }) {
            if (aio == BLOCK_AIO_NATIVE && !strcmp(cache, "writeback")) {
                continue;
            }
            std::string what = std::string(AioName(aio)) + " " + cache;
            Image img(size);
            BlockOptions o = FileOptions(img.path, aio, cache);
            o.discard = BLOCK_DISCARD_UNMAP;
            BlockBackend *blk = Open(o);
            ASSERT_NE(blk, nullptr) << what;
            BlockQueue *q = Queue(blk);
            Done d;
            int id = 0;
            auto wait = [&] {
                blk_queue_drain(q);
                EXPECT_EQ(d.errors, 0) << what << " " << d.last_err;
                EXPECT_EQ(d.count, id) << what;
            };

            /* zero-length everything */
            struct iovec none = { nullptr, 0 };
            EXPECT_EQ(blk_queue_preadv(q, 0, &none, 0, Done::Cb, d.Op(id++)),
                      0);
            EXPECT_EQ(blk_queue_pwritev(q, 0, &none, 1, Done::Cb,
                                        d.Op(id++)), 0);
            EXPECT_EQ(blk_queue_pwritev(q, size, &none, 1, Done::Cb,
                                        d.Op(id++)), 0);
            EXPECT_EQ(blk_queue_discard(q, 4096, 0, Done::Cb, d.Op(id++)), 0);
            EXPECT_EQ(blk_queue_write_zeroes(q, 4096, 0, true, Done::Cb,
                                             d.Op(id++)), 0);
            wait();
            EXPECT_EQ(img.Read(0, 8192), std::vector<uint8_t>(8192, 0))
                << what;

            /* one byte, misaligned buffer */
            std::vector<uint8_t> raw(3 * 4096 + 1);
            uint8_t *mis = raw.data() + 1;
            mis[0] = 0xab;
            struct iovec b1 = { mis, 1 };
            EXPECT_EQ(blk_queue_pwritev(q, 777, &b1, 1, Done::Cb, d.Op(id++)),
                      0);
            wait();
            EXPECT_EQ(img.Read(777, 1)[0], 0xab) << what;
            EXPECT_EQ(img.Read(776, 1)[0], 0) << what;
            EXPECT_EQ(img.Read(778, 1)[0], 0) << what;
            mis[0] = 0;
            EXPECT_EQ(blk_queue_preadv(q, 777, &b1, 1, Done::Cb, d.Op(id++)),
                      0);
            wait();
            EXPECT_EQ(mis[0], 0xab) << what;

            /* zero-length iovecs between real ones, misaligned by one */
            std::vector<uint8_t> pat = Pattern(3 * 4096, 3);
            memcpy(mis, pat.data(), pat.size());
            struct iovec mixed[5] = { { mis, 4096 }, { mis + 5, 0 },
                                      { mis + 4096, 4096 }, { nullptr, 0 },
                                      { mis + 8192, 4096 } };
            EXPECT_EQ(blk_queue_pwritev(q, size - 3 * 4096, mixed, 5,
                                        Done::Cb, d.Op(id++)), 0);
            wait();
            EXPECT_EQ(img.Read(size - 3 * 4096, 3 * 4096), pat) << what;
            memset(mis, 0, pat.size());
            EXPECT_EQ(blk_queue_preadv(q, size - 3 * 4096, mixed, 5,
                                       Done::Cb, d.Op(id++)), 0);
            wait();
            EXPECT_EQ(memcmp(mis, pat.data(), pat.size()), 0) << what;

            /* crossing the end */
            struct iovec cross = { mis, 1024 };
            EXPECT_EQ(blk_queue_preadv(q, size - 512, &cross, 1, Done::Cb,
                                       d.Op(id)), -EINVAL);
            EXPECT_EQ(blk_queue_discard(q, size - 512, 1024, Done::Cb,
                                        d.Op(id)), -EINVAL);
            EXPECT_EQ(blk_queue_preadv(q, UINT64_MAX, &none, 1, Done::Cb,
                                       d.Op(id)), -EINVAL);

            /* IOV_MAX + 1 iovecs of 512 bytes */
            const int many = IOV_MAX + 1;
            void *abuf = nullptr;
            ASSERT_EQ(posix_memalign(&abuf, 4096, many * 512), 0);
            std::vector<uint8_t> big = Pattern(many * 512, 9);
            memcpy(abuf, big.data(), big.size());
            std::vector<struct iovec> miov(many);
            for (int i = 0; i < many; i++) {
                miov[i] = { (char *)abuf + i * 512, 512 };
            }
            EXPECT_EQ(blk_queue_pwritev(q, 65536, miov.data(), many,
                                        Done::Cb, d.Op(id++)), 0);
            wait();
            EXPECT_EQ(img.Read(65536, big.size()), big) << what;
            memset(abuf, 0, big.size());
            EXPECT_EQ(blk_queue_preadv(q, 65536, miov.data(), many,
                                       Done::Cb, d.Op(id++)), 0);
            wait();
            EXPECT_EQ(memcmp(abuf, big.data(), big.size()), 0) << what;
            free(abuf);

            EXPECT_EQ(blk_get_size(blk), size);
            blk_queue_free(q);
            blk_unref(blk);
            block_options_clear(&o);
            struct stat st;
            ASSERT_EQ(stat(img.path.c_str(), &st), 0);
            EXPECT_EQ((uint64_t)st.st_size, size) << what << ": image grew";
        }
    }
}

// latency-ns = INT64_MAX: the null driver's deadline (start + latency)
// overflowed (undefined behaviour; in practice the request completed at
// once instead of never).
TEST_F(BlockAttack, HugeNullLatencyDoesNotOverflow)
{
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    auto body = [&]() {
        AioContext *c = aio_context_new(nullptr);
        BlockOptions o = Parse("driver=null-co,if=none,"
                               "latency-ns=9223372036854775807");
        BlockBackend *blk = Open(o);
        BlockQueue *q = blk_queue_new(blk, c, nullptr);
        Done d;
        char buf[512];
        struct iovec iov = { buf, sizeof(buf) };
        blk_queue_preadv(q, 0, &iov, 1, Done::Cb, d.Op(0));
        for (int i = 0; i < 20; i++) {
            aio_poll(c, false);
        }
        _exit(d.count == 0 ? 42 : 1);
    };
    EXPECT_EXIT(body(), ::testing::ExitedWithCode(42), "");
}

// Option abuse: values that parsed but made no sense later.
TEST(BlockAttackOptions, Abuse)
{
    struct {
        const char *arg;
        bool json;
        const char *want; /* nullptr: must parse */
    } cases[] = {
        /* QEMU refuses latency-ns above INT64_MAX; the null driver's
         * deadline arithmetic overflowed with it */
        { "driver=null-co,node-name=n,latency-ns=9223372036854775808", false,
          "'latency-ns'" },
        { "driver=null-co,node-name=n,latency-ns=9223372036854775807", false,
          nullptr },
        /* the same key twice, once nested and once dotted */
        { R"({"driver":"file","node-name":"d","filename":"f",)"
          R"("cache":{"direct":true},"cache.direct":false})", true,
          "'cache.direct'" },
        /* wrong types */
        { R"({"driver":"null-co","node-name":"n","size":-512})", true,
          "'size'" },
        { R"({"driver":"null-co","node-name":"n","size":1.5})", true,
          "'size'" },
        { R"({"driver":"null-co","node-name":"n","read-zeroes":null})", true,
          "'read-zeroes'" },
        { R"({"driver":["file"],"node-name":"n"})", true, "'driver'" },
        { R"({"driver":"null-co","node-name":{"x":"y"}})", true,
          "node-name" },
        /* escaped commas in a file name */
        { "driver=file,node-name=n,filename=a,,b,,,,c", false, nullptr },
        /* empty values */
        { "driver=file,node-name=n,filename=f,aio=", false, "'aio'" },
        { "driver=file,node-name=n,filename=f,read-only=", false,
          "'read-only'" },
    };
    for (auto &c : cases) {
        BlockOptions o{};
        GError *err = nullptr;
        int r = block_parse_blockdev(c.arg, &o, &err);
        if (!c.want) {
            EXPECT_EQ(r, 0) << c.arg << ": " << (err ? err->message : "");
        } else {
            EXPECT_LT(r, 0) << c.arg;
            EXPECT_TRUE(err && strstr(err->message, c.want))
                << c.arg << " -> " << (err ? err->message : "(none)");
        }
        if (!strcmp(c.arg, "driver=file,node-name=n,filename=a,,b,,,,c")) {
            EXPECT_STREQ(o.filename, "a,b,,c");
        }
        if (err) {
            g_error_free(err);
        }
        block_options_clear(&o);
    }
}

// -drive with both spellings of read-only, contradicting each other.
TEST(BlockAttackOptions, DriveReadonlyTwice)
{
    BlockOptions o{};
    GError *err = nullptr;
    EXPECT_LT(block_parse_drive("file=f,readonly=on,read-only=off", &o, &err),
              0);
    EXPECT_TRUE(err && strstr(err->message, "read-only"))
        << (err ? err->message : "(none)");
    if (err) {
        g_error_free(err);
    }
    block_options_clear(&o);
}

// 10,000 requests in flight: far more than the libaio context (1024
// events) or the io_uring ring (256 SQEs) holds.  They must queue, not
// fail with -EAGAIN, and not spin.
TEST_F(BlockAttack, TenThousandInFlight)
{
    const int n = 10000;
    const size_t len = 512;
    for (BlockAioMode aio : kAioModes) {
        for (bool plug : { false, true }) {
            Image img(4 << 20);
            BlockOptions o = FileOptions(img.path, aio, "none");
            BlockBackend *blk = Open(o);
            ASSERT_NE(blk, nullptr);
            BlockQueue *q = Queue(blk);
            /* one buffer per read (concurrent reads into one buffer
             * race); the writes share one, only read from */
            void *buf = nullptr;
            ASSERT_EQ(posix_memalign(&buf, 4096, len * (n + 1)), 0);
            memset(buf, 0x5a, len);
            std::vector<struct iovec> iov(n);
            for (int i = 0; i < n; i++) {
                iov[i] = { (char *)buf + (i % 3 == 0 ? 0 : (i + 1) * len),
                           len };
            }
            Done d(n);
            Watchdog w(50);
            if (plug) {
                blk_queue_plug(q);
            }
            for (int i = 0; i < n; i++) {
                int r = (i % 3 == 0)
                    ? blk_queue_pwritev(q, (i % 1024) * len, &iov[i], 1,
                                        Done::Cb, d.Op(i))
                    : blk_queue_preadv(q, (i % 1024) * len, &iov[i], 1,
                                       Done::Cb, d.Op(i));
                ASSERT_EQ(r, 0) << AioName(aio) << " request " << i;
            }
            if (plug) {
                blk_queue_unplug(q);
            }
            EXPECT_EQ(blk_queue_in_flight(q), (unsigned)n);
            blk_queue_drain(q);
            EXPECT_EQ(d.count, n) << AioName(aio);
            EXPECT_EQ(d.errors, 0) << AioName(aio) << " " << d.last_err;
            free(buf);
            blk_queue_free(q);
            blk_unref(blk);
            block_options_clear(&o);
        }
    }
}

// A callback that submits the next request (a chain of 2000), on every
// driver: completion never recurses into the submitter's stack.
struct Chain {
    BlockQueue *q;
    struct iovec iov;
    int left;
    int depth = 0, max_depth = 0, errors = 0;
    static void Cb(void *opaque, int ret)
    {
        Chain *c = static_cast<Chain *>(opaque);
        c->depth++;
        c->max_depth = std::max(c->max_depth, c->depth);
        if (ret < 0) {
            c->errors++;
        }
        if (--c->left > 0) {
            int r = (c->left & 1)
                ? blk_queue_pwritev(c->q, (c->left % 256) * 4096, &c->iov, 1,
                                    Cb, c)
                : blk_queue_preadv(c->q, (c->left % 256) * 4096, &c->iov, 1,
                                   Cb, c);
            if (r < 0) {
                c->errors++;
            }
        }
        c->depth--;
    }
};

TEST_F(BlockAttack, CallbackSubmitsMore)
{
    Image img(1 << 20);
    std::vector<std::string> args = {
        "driver=null-co,if=none", "driver=null-aio,if=none",
    };
    for (BlockAioMode aio : kAioModes) {
        args.push_back("file=" + img.path + ",cache=none,aio=" +
                       AioName(aio));
    }
    for (auto &arg : args) {
        BlockOptions o = Parse(arg);
        BlockBackend *blk = Open(o);
        ASSERT_NE(blk, nullptr) << arg;
        void *buf = nullptr;
        ASSERT_EQ(posix_memalign(&buf, 4096, 4096), 0);
        Chain c{ Queue(blk), { buf, 4096 }, 2000 };
        ASSERT_EQ(blk_queue_preadv(c.q, 0, &c.iov, 1, Chain::Cb, &c), 0);
        blk_queue_drain(c.q);
        EXPECT_EQ(c.left, 0) << arg;
        EXPECT_EQ(c.errors, 0) << arg;
        EXPECT_EQ(c.max_depth, 1) << arg;
        blk_queue_free(c.q);
        free(buf);
        blk_unref(blk);
        block_options_clear(&o);
    }
}

// An image truncated (or emptied) behind the block layer's back: reads past
// the new end see zeroes, nothing crashes, every request completes.
TEST_F(BlockAttack, TruncatedWhileOpen)
{
    for (BlockAioMode aio : kAioModes) {
        Image img(1 << 20);
        img.Write(0, Pattern(1 << 20, 1));
        BlockOptions o = FileOptions(img.path, aio, "none");
        BlockBackend *blk = Open(o);
        ASSERT_NE(blk, nullptr);
        BlockQueue *q = Queue(blk);
        ASSERT_EQ(truncate(img.path.c_str(), 4096), 0);
        void *buf = nullptr;
        ASSERT_EQ(posix_memalign(&buf, 4096, 65536), 0);
        memset(buf, 0xff, 65536);
        struct iovec iov = { buf, 65536 };
        Done d;
        ASSERT_EQ(blk_queue_preadv(q, 0, &iov, 1, Done::Cb, d.Op(0)), 0);
        blk_queue_drain(q);
        EXPECT_EQ(d.errors, 0) << AioName(aio);
        EXPECT_EQ(memcmp(buf, Pattern(4096, 1).data(), 4096), 0);
        std::vector<uint8_t> zero(65536 - 4096, 0);
        EXPECT_EQ(memcmp((char *)buf + 4096, zero.data(), zero.size()), 0)
            << AioName(aio);
        free(buf);
        blk_queue_free(q);
        blk_unref(blk);
        block_options_clear(&o);
    }
}

TEST_F(BlockAttack, EmptyImage)
{
    for (BlockAioMode aio : kAioModes) {
        Image img(0);
        BlockOptions o = FileOptions(img.path, aio, "none");
        std::string msg;
        BlockBackend *blk = Open(o, &msg);
        ASSERT_NE(blk, nullptr) << msg;
        EXPECT_EQ(blk_get_size(blk), 0u);
        BlockQueue *q = Queue(blk);
        char c;
        struct iovec iov = { &c, 1 };
        Done d;
        EXPECT_EQ(blk_queue_preadv(q, 0, &iov, 1, Done::Cb, d.Op(0)),
                  -EINVAL);
        EXPECT_EQ(blk_queue_flush(q, Done::Cb, d.Op(0)), 0);
        blk_queue_drain(q);
        EXPECT_EQ(d.count, 1);
        EXPECT_EQ(d.errors, 0);
        blk_queue_free(q);
        blk_unref(blk);
        block_options_clear(&o);
    }
}

// Two processes on one image: a forked child opening it read-write while
// the parent holds it is refused; once the parent closes, it gets it.
TEST_F(BlockAttack, LockConflictWithAnotherProcess)
{
    Image img(1 << 20);
    BlockOptions o = FileOptions(img.path, BLOCK_AIO_THREADS, "writeback");
    auto child_open = [&](bool ro) {
        pid_t pid = fork();
        if (pid == 0) {
            BlockOptions c = o;
            c.read_only = ro;
            GError *err = nullptr;
            BlockBackend *b = blk_open(&c, &err);
            _exit(b ? 0 : (err && strstr(err->message, "lock") ? 1 : 2));
        }
        int st;
        waitpid(pid, &st, 0);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 3;
    };
    BlockBackend *blk = Open(o);
    ASSERT_NE(blk, nullptr);
    EXPECT_EQ(child_open(false), 1);
    EXPECT_EQ(child_open(true), 1);
    blk_unref(blk);
    EXPECT_EQ(child_open(false), 0);
    block_options_clear(&o);
}

// libaio / io_uring set-up failing (here: no file descriptor left) is a
// clean error from blk_queue_new, and the next attempt works.
TEST_F(BlockAttack, DriverSetupFailureIsCleanError)
{
    if (ImageDir().empty()) {
        GTEST_SKIP() << "no directory whose file system supports O_DIRECT";
    }
    for (BlockAioMode aio : { BLOCK_AIO_NATIVE, BLOCK_AIO_IO_URING }) {
        Image img(1 << 20);
        BlockOptions o = FileOptions(img.path, aio, "none");
        BlockBackend *blk = Open(o);
        ASSERT_NE(blk, nullptr);
        struct rlimit old, none;
        ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
        /* use up every descriptor below a tiny limit */
        std::vector<int> fds;
        for (;;) {
            int fd = dup(0);
            if (fd < 0 || fd > 4096) {
                if (fd >= 0) {
                    close(fd);
                }
                break;
            }
            fds.push_back(fd);
        }
        none = old;
        none.rlim_cur = fds.empty() ? 3 : fds.back() + 1;
        ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &none), 0);
        GError *err = nullptr;
        BlockQueue *q = blk_queue_new(blk, ctx, &err);
        ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
        for (int fd : fds) {
            close(fd);
        }
        EXPECT_EQ(q, nullptr) << AioName(aio);
        EXPECT_NE(err, nullptr);
        if (err) {
            EXPECT_NE(strstr(err->message, AioName(aio)), nullptr)
                << err->message;
            g_error_free(err);
        }
        blk_queue_free(q);
        q = Queue(blk);
        ASSERT_NE(q, nullptr);
        void *buf = nullptr;
        ASSERT_EQ(posix_memalign(&buf, 4096, 4096), 0);
        struct iovec iov = { buf, 4096 };
        Done d;
        ASSERT_EQ(blk_queue_preadv(q, 0, &iov, 1, Done::Cb, d.Op(0)), 0);
        blk_queue_drain(q);
        EXPECT_EQ(d.count, 1);
        EXPECT_EQ(d.errors, 0);
        free(buf);
        blk_queue_free(q);
        blk_unref(blk);
        block_options_clear(&o);
    }
}

// Two IOThreads writing single bytes into the same O_DIRECT blocks (every
// write a read-modify-write), in write-through mode toggled by the main
// thread meanwhile, stats read concurrently (TSan): every byte lands.
struct ByteWriter {
    BlockBackend *blk;
    int which;  /* writes bytes whose index % 2 == which */
    int errors = 0, completed = 0;
    std::atomic<bool> finished{ false };
    static constexpr int kBytes = 2048; /* offsets below are unique */

    void Run()
    {
        BlockQueue *q = blk_queue_new(blk, aio_get_current_context(),
                                      nullptr);
        if (!q) {
            errors = -1;
            finished = true;
            return;
        }
        std::vector<uint8_t> val(kBytes);
        std::vector<struct iovec> iov(kBytes);
        Done d(kBytes);
        blk_queue_plug(q);
        for (int i = which, n = 0; i < kBytes; i += 2, n++) {
            val[i] = 0x40 + which;
            iov[i] = { &val[i], 1 };
            /* bytes spread over 4 sectors, 8 apart */
            uint64_t off = (uint64_t)(i % 4) * 512 + i / 4;
            if (blk_queue_pwritev(q, off, &iov[i], 1, Done::Cb,
                                  d.Op(n)) < 0) {
                errors++;
            }
            if (n % 16 == 15) {
                blk_queue_flush(q, Done::Cb, d.Op(++n));
            }
        }
        blk_queue_unplug(q);
        blk_queue_drain(q);
        completed = d.count;
        errors += d.errors;
        blk_queue_free(q);
        finished = true;
    }
    static void Bh(void *opaque) { static_cast<ByteWriter *>(opaque)->Run(); }
};

TEST_F(BlockAttack, ConcurrentRmwAcrossIOThreadsWithWriteCacheToggling)
{
    if (ImageDir().empty()) {
        GTEST_SKIP() << "no directory whose file system supports O_DIRECT";
    }
    for (BlockAioMode aio : kAioModes) {
        Image img(1 << 20);
        BlockOptions o = FileOptions(img.path, aio, "directsync");
        BlockBackend *blk = Open(o);
        ASSERT_NE(blk, nullptr);
        ByteWriter w[2] = { { blk, 0 }, { blk, 1 } };
        IOThread *io[2];
        for (int i = 0; i < 2; i++) {
            io[i] = iothread_new(i ? "rmw1" : "rmw0", nullptr, nullptr);
            ASSERT_NE(io[i], nullptr);
            ASSERT_EQ(aio_bh_schedule_oneshot(
                          iothread_get_aio_context(io[i]), ByteWriter::Bh,
                          &w[i]), 0);
        }
        uint64_t toggles = 0;
        while (!w[0].finished || !w[1].finished) {
            blk_set_write_cache(blk, toggles++ & 1);
            BlockStats st;
            blk_get_stats(blk, &st);
            g_usleep(100);
        }
        for (auto *t : io) {
            iothread_free(t);
        }
        for (auto &x : w) {
            EXPECT_EQ(x.errors, 0) << AioName(aio);
        }
        std::vector<uint8_t> got = img.Read(0, 2048);
        int wrong = 0;
        for (int i = 0; i < ByteWriter::kBytes; i++) {
            uint64_t off = (uint64_t)(i % 4) * 512 + i / 4;
            wrong += got[off] != 0x40 + (i % 2);
        }
        EXPECT_EQ(wrong, 0) << AioName(aio);
        blk_unref(blk);
        block_options_clear(&o);
    }
}

// {NULL, 0} iovecs are legal: nothing may hand their NULL base to memcpy()
// or memset() (undefined even with length 0; UBSan stops there): bounce
// copies, read-modify-write, read-zeroes of the null drivers.
TEST_F(BlockAttack, NullBaseEmptyIovecs)
{
    Image img(1 << 20);
    std::string args[] = {
        "driver=null-co,read-zeroes=on,if=none",
        "driver=null-aio,read-zeroes=on,if=none",
        "driver=null-co,read-zeroes=on,latency-ns=1,if=none",
        "file=" + img.path + ",cache=none,aio=threads",
    };
    for (auto &arg : args) {
        BlockOptions o = Parse(arg);
        BlockBackend *blk = Open(o);
        ASSERT_NE(blk, nullptr) << arg;
        BlockQueue *q = Queue(blk);
        char byte = 'x';
        struct iovec iov[3] = { { nullptr, 0 }, { &byte, 1 }, { nullptr, 0 } };
        Done d;
        ASSERT_EQ(blk_queue_pwritev(q, 3, iov, 3, Done::Cb, d.Op(0)), 0);
        blk_queue_drain(q);
        ASSERT_EQ(blk_queue_preadv(q, 3, iov, 3, Done::Cb, d.Op(1)), 0);
        blk_queue_drain(q);
        EXPECT_EQ(d.count, 2) << arg;
        EXPECT_EQ(d.errors, 0) << arg;
        EXPECT_EQ(byte, arg[0] == 'f' ? 'x' : 0) << arg;
        blk_queue_free(q);
        blk_unref(blk);
        block_options_clear(&o);
    }
}

// A disk with 4 KiB logical sectors (a loop device, in a forked child with
// a private mount namespace; needs root, losetup and mkfs.ext4, skipped
// otherwise).  On the raw device, an unaligned discard was -EINVAL
// (BLKDISCARD takes whole sectors; discard is a hint).  On ext4 on it, the
// read probe said 512 (512-byte O_DIRECT reads work there, writes do not),
// so unaligned guest writes failed with -EINVAL; and an image whose size is
// not a multiple of 4096 grew on a write to its last sector.
static int FourKChild(std::string *why)
{
    if (geteuid() != 0 || system("command -v losetup >/dev/null && "
                                 "command -v mkfs.ext4 >/dev/null") != 0) {
        *why = "needs root, losetup and mkfs.ext4";
        return 77;
    }
    if (unshare(CLONE_NEWNS) < 0 ||
        mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0) {
        *why = "unshare/mount";
        return 77;
    }
    char dir[] = "/tmp/shardvm-4k-XXXXXX";
    if (!mkdtemp(dir)) {
        return 1;
    }
    std::string backing = std::string(dir) + "/disk", mnt = std::string(dir)
                          + "/mnt";
    mkdir(mnt.c_str(), 0700);
    if (truncate(backing.c_str(), 0) < 0 && errno != ENOENT) {
        return 1;
    }
    int bfd = open(backing.c_str(), O_CREAT | O_RDWR, 0600);
    if (bfd < 0 || ftruncate(bfd, 16 << 20) < 0) {
        return 1;
    }
    close(bfd);
    std::string cmd = "losetup --find --show --sector-size 4096 " + backing;
    FILE *p = popen(cmd.c_str(), "r");
    char dev[64] = "";
    if (!p || !fgets(dev, sizeof(dev), p) || pclose(p) != 0) {
        *why = "losetup failed";
        return 77;
    }
    dev[strcspn(dev, "\n")] = 0;
    int rc = 0;
    auto fail = [&](const std::string &m) {
        *why += m + "; ";
        rc = 1;
    };
    AioContext *ctx = aio_context_new(nullptr);
    auto open_blk = [&](const std::string &arg, std::string *msg) {
        BlockOptions o{};
        GError *err = nullptr;
        BlockBackend *b = nullptr;
        if (block_parse_drive(arg.c_str(), &o, &err) == 0) {
            b = blk_open(&o, &err);
        }
        *msg = err ? err->message : "";
        if (err) {
            g_error_free(err);
        }
        block_options_clear(&o);
        return b;
    };
    std::string msg;
    {
        /* the raw device: a discard of partial sectors is a no-op, the
         * whole sectors inside it go */
        BlockBackend *b = open_blk(std::string("file=") + dev +
                                   ",cache=none,discard=unmap", &msg);
        if (!b) {
            fail("open " + std::string(dev) + ": " + msg);
        } else {
            BlockQueue *q = blk_queue_new(b, ctx, nullptr);
            Done d;
            blk_queue_discard(q, 100, 1000, Done::Cb, d.Op(0));
            blk_queue_discard(q, 100, 3 * 4096, Done::Cb, d.Op(1));
            blk_queue_drain(q);
            if (d.errors) {
                fail("discard: " + std::to_string(d.last_err));
            }
            blk_queue_free(q);
            blk_unref(b);
        }
    }
    if (system(("mkfs.ext4 -q -F " + std::string(dev) + " >/dev/null 2>&1")
                   .c_str()) != 0 ||
        mount(dev, mnt.c_str(), "ext4", 0, nullptr) < 0) {
        *why = "mkfs.ext4/mount failed";
        rc = rc ? rc : 77;
    } else {
        std::string img = mnt + "/img", odd = mnt + "/odd";
        if (truncate(img.c_str(), 0) < 0) {
            int fd = open(img.c_str(), O_CREAT | O_RDWR, 0600);
            close(fd);
        }
        int fd = open(odd.c_str(), O_CREAT | O_RDWR, 0600);
        if (ftruncate(fd, 16 * 4096 + 512) < 0) {
            fail("ftruncate");
        }
        close(fd);
        if (truncate(img.c_str(), 16 * 4096) < 0) {
            fail("truncate");
        }
        for (const char *aio : { "threads", "native", "io_uring" }) {
            BlockBackend *b = open_blk("file=" + img + ",cache=none,aio=" +
                                       aio, &msg);
            if (!b) {
                fail("open img: " + msg);
                continue;
            }
            if (blk_get_request_alignment(b) != 4096) {
                fail("alignment " +
                     std::to_string(blk_get_request_alignment(b)));
            }
            BlockQueue *q = blk_queue_new(b, ctx, nullptr);
            char buf[512];
            memset(buf, aio[0], sizeof(buf));
            struct iovec iov = { buf, sizeof(buf) };
            Done d;
            blk_queue_pwritev(q, 512, &iov, 1, Done::Cb, d.Op(0));
            blk_queue_drain(q);
            memset(buf, 0, sizeof(buf));
            blk_queue_preadv(q, 512, &iov, 1, Done::Cb, d.Op(1));
            blk_queue_drain(q);
            if (d.errors || buf[0] != aio[0] || buf[511] != aio[0]) {
                fail(std::string(aio) + ": 512-byte write: " +
                     std::to_string(d.last_err));
            }
            blk_queue_free(q);
            blk_unref(b);
        }
        BlockBackend *b = open_blk("file=" + odd + ",cache=none", &msg);
        if (b) {
            fail("an image of 16 * 4096 + 512 bytes opened with O_DIRECT");
            blk_unref(b);
        } else if (msg.find("multiple of 4096") == std::string::npos) {
            fail("message: " + msg);
        }
        umount(mnt.c_str());
    }
    aio_context_unref(ctx);
    if (system(("losetup -d " + std::string(dev)).c_str()) != 0) {
        fail("losetup -d");
    }
    unlink(backing.c_str());
    rmdir(mnt.c_str());
    rmdir(dir);
    return rc;
}

TEST_F(BlockAttack, FourKSectorDisk)
{
#ifdef __SANITIZE_THREAD__
    GTEST_SKIP() << "the child starts threads after a fork: TSan refuses";
#endif
    int pipefd[2];
    ASSERT_EQ(pipe(pipefd), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(pipefd[0]);
        std::string why;
        int rc = FourKChild(&why);
        if (write(pipefd[1], why.data(), why.size()) < 0) {
            rc = 1;
        }
        _exit(rc);
    }
    close(pipefd[1]);
    std::string why;
    char b[256];
    ssize_t n;
    while ((n = read(pipefd[0], b, sizeof(b))) > 0) {
        why.append(b, n);
    }
    close(pipefd[0]);
    int st;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    ASSERT_TRUE(WIFEXITED(st)) << "child killed";
    if (WEXITSTATUS(st) == 77) {
        GTEST_SKIP() << why;
    }
    EXPECT_EQ(WEXITSTATUS(st), 0) << why;
}
