// The request path: every driver x cache mode x aio mode against a 64 MiB
// image checked from the host, O_DIRECT bounce buffers, flush ordering,
// discard / write-zeroes, read-only refusal, locking, plug batching, null
// drivers, completion never inside the submit call.
#include "block-test-util.h"
#include "shardvm/rcu.h"

#include <sys/stat.h>
#include <sys/uio.h>
#include <tuple>

using namespace blocktest;

namespace {

constexpr uint64_t kImageSize = 64ull << 20;

const char *const kCacheModes[] = { "none", "writeback", "writethrough",
                                    "directsync", "unsafe" };
const BlockAioMode kAioModes[] = { BLOCK_AIO_THREADS, BLOCK_AIO_NATIVE,
                                   BLOCK_AIO_IO_URING };

class BlockIO : public ::testing::Test {
protected:
    AioContext *ctx = nullptr;
    void SetUp() override
    {
        shardvm_rcu_init();
        ctx = aio_context_new(nullptr);
        ASSERT_NE(ctx, nullptr);
    }
    void TearDown() override { aio_context_unref(ctx); }

    BlockBackend *Open(const BlockOptions &o, std::string *msg = nullptr)
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
};

// Writes patterns (batched with plug/unplug), checks them from the host,
// reads them back through the queue.
void WriteReadCheck(AioContext *ctx, BlockQueue *q, const Image &img,
                    const std::string &what)
{
    const int n = 32;
    const size_t len = 16 * 1024;
    std::vector<std::vector<uint8_t>> data(n), back(n);
    std::vector<struct iovec> wiov(n), riov(n);
    Done w, r;
    auto offset = [](int i) {
        return (uint64_t)((i * 37) % 1000) * (kImageSize / 1000 / 4096) * 4096;
    };

    blk_queue_plug(q);
    for (int i = 0; i < n; i++) {
        data[i] = Pattern(len, i + 1);
        wiov[i] = { data[i].data(), len };
        ASSERT_EQ(blk_queue_pwritev(q, offset(i), &wiov[i], 1, Done::Cb,
                                    w.Op(i)), 0) << what;
    }
    blk_queue_unplug(q);
    EXPECT_EQ(w.count, 0) << what << ": completed inside submit";
    EXPECT_EQ(blk_queue_in_flight(q), (unsigned)n);
    Done f;
    ASSERT_EQ(blk_queue_flush(q, Done::Cb, f.Op(0)), 0);
    blk_queue_drain(q);
    EXPECT_EQ(blk_queue_in_flight(q), 0u);
    EXPECT_EQ(w.count, n);
    EXPECT_EQ(w.errors, 0) << what << ": " << g_strerror(-w.last_err);
    EXPECT_EQ(f.count, 1);
    for (int i = 0; i < n; i++) {
        EXPECT_TRUE(img.Read(offset(i), len) == data[i])
            << what << ": host sees other bytes at write " << i;
    }
    for (int i = 0; i < n; i++) {
        back[i].assign(len, 0xee);
        riov[i] = { back[i].data(), len };
        ASSERT_EQ(blk_queue_preadv(q, offset(i), &riov[i], 1, Done::Cb,
                                   r.Op(i)), 0);
    }
    EXPECT_EQ(r.count, 0);
    blk_queue_drain(q);
    EXPECT_EQ(r.errors, 0) << what << ": " << g_strerror(-r.last_err);
    for (int i = 0; i < n; i++) {
        EXPECT_TRUE(back[i] == data[i]) << what << ": read back " << i;
    }
}

TEST_F(BlockIO, EveryAioAndCacheMode)
{
    if (ImageDir().empty()) {
        GTEST_SKIP() << "no directory whose file system supports O_DIRECT";
    }
    for (BlockAioMode aio : kAioModes) {
        for (const char *cache : kCacheModes) {
            Image img(kImageSize);
            BlockOptions o = FileOptions(img.path, aio, cache);
            std::string what = std::string("aio=") + std::to_string(aio) +
                               " cache=" + cache, msg;
            BlockBackend *blk = Open(o, &msg);
            if (aio == BLOCK_AIO_NATIVE && !o.cache_direct) {
                EXPECT_EQ(blk, nullptr) << what;
                EXPECT_NE(msg.find("aio=native was specified, but it "
                                   "requires cache.direct=on"),
                          std::string::npos) << msg;
                block_options_clear(&o);
                continue;
            }
            ASSERT_NE(blk, nullptr) << what << ": " << msg;
            EXPECT_EQ(blk_get_size(blk), kImageSize);
            EXPECT_EQ(blk_get_request_alignment(blk) > 1, o.cache_direct);
            BlockQueue *q = Queue(blk);
            WriteReadCheck(ctx, q, img, what);
            BlockStats st;
            blk_get_stats(blk, &st);
            EXPECT_EQ(st.wr_ops, 32u) << what;
            EXPECT_EQ(st.rd_ops, 32u) << what;
            EXPECT_EQ(st.wr_bytes, 32u * 16384) << what;
            EXPECT_EQ(st.flush_ops, 1u) << what;
            EXPECT_EQ(st.failed_ops, 0u) << what;
            blk_queue_free(q);
            blk_unref(blk);
            block_options_clear(&o);
        }
    }
}

// Unaligned memory, offsets and lengths under O_DIRECT go through bounce
// buffers (reads) and read-modify-write (writes): never an EINVAL.
TEST_F(BlockIO, UnalignedUnderODirect)
{
    if (ImageDir().empty()) {
        GTEST_SKIP() << "no directory whose file system supports O_DIRECT";
    }
    for (BlockAioMode aio : kAioModes) {
        Image img(1 << 20);
        std::vector<uint8_t> base = Pattern(1 << 20, 99);
        img.Write(0, base);
        BlockOptions o = FileOptions(img.path, aio, "none");
        BlockBackend *blk = Open(o);
        ASSERT_NE(blk, nullptr);
        ASSERT_GT(blk_get_request_alignment(blk), 1u);
        BlockQueue *q = Queue(blk);

        struct Case { uint64_t off; size_t len; size_t mem_skew; };
        const Case cases[] = {
            { 4096, 4096, 1 },        // aligned range, odd memory
            { 513, 1000, 0 },         // unaligned both ends
            { 8192 - 7, 20, 3 },      // crosses a block boundary
            { 65536, 512, 0 },        // 512-aligned, maybe not 4096
            { 100000, 70000, 5 },     // several blocks, unaligned
        };
        std::vector<uint8_t> expect = base;
        int id = 0;
        for (const Case &c : cases) {
            std::vector<uint8_t> mem(c.len + 16);
            std::vector<uint8_t> pat = Pattern(c.len, 1000 + id);
            memcpy(mem.data() + c.mem_skew, pat.data(), c.len);
            // two iovecs of odd lengths
            size_t cut = c.len / 3;
            struct iovec iov[2] = {
                { mem.data() + c.mem_skew, cut },
                { mem.data() + c.mem_skew + cut, c.len - cut },
            };
            Done d;
            ASSERT_EQ(blk_queue_pwritev(q, c.off, iov, 2, Done::Cb, d.Op(0)),
                      0);
            blk_queue_drain(q);
            ASSERT_EQ(d.errors, 0) << "aio " << aio << " write at " << c.off
                                   << ": " << g_strerror(-d.last_err);
            memcpy(expect.data() + c.off, pat.data(), c.len);

            std::vector<uint8_t> rmem(c.len + 16, 0xcc);
            struct iovec riov[2] = {
                { rmem.data() + c.mem_skew, c.len - cut },
                { rmem.data() + c.mem_skew + c.len - cut, cut },
            };
            Done r;
            ASSERT_EQ(blk_queue_preadv(q, c.off, riov, 2, Done::Cb, r.Op(0)),
                      0);
            blk_queue_drain(q);
            ASSERT_EQ(r.errors, 0);
            EXPECT_EQ(memcmp(rmem.data() + c.mem_skew, pat.data(), c.len), 0)
                << "aio " << aio << " read back at " << c.off;
            id++;
        }
        EXPECT_TRUE(img.Read(0, 1 << 20) == expect)
            << "aio " << aio << ": bytes around the writes changed";
        blk_queue_free(q);
        blk_unref(blk);
        block_options_clear(&o);
    }
}

// Neighbouring unaligned writes in flight together (one block, different
// bytes) do not undo each other: RMWs are serialised.
TEST_F(BlockIO, ConcurrentRmwInOneBlock)
{
    if (ImageDir().empty()) {
        GTEST_SKIP() << "no directory whose file system supports O_DIRECT";
    }
    Image img(1 << 20);
    BlockOptions o = FileOptions(img.path, BLOCK_AIO_THREADS, "none");
    BlockBackend *blk = Open(o);
    ASSERT_NE(blk, nullptr);
    BlockQueue *q = Queue(blk);
    std::vector<uint8_t> bytes(64);
    std::vector<struct iovec> iov(64);
    Done d;
    for (int i = 0; i < 64; i++) {
        bytes[i] = i + 1;
        iov[i] = { &bytes[i], 1 };
        ASSERT_EQ(blk_queue_pwritev(q, 100 + i * 3, &iov[i], 1, Done::Cb,
                                    d.Op(i)), 0);
    }
    blk_queue_drain(q);
    EXPECT_EQ(d.errors, 0);
    std::vector<uint8_t> got = img.Read(0, 4096);
    for (int i = 0; i < 64; i++) {
        EXPECT_EQ(got[100 + i * 3], i + 1) << "byte " << i << " lost";
    }
    blk_queue_free(q);
    blk_unref(blk);
    block_options_clear(&o);
}

// A flush completes after every write submitted before it, whatever order
// the writes complete in; writes submitted after it are not waited for.
TEST_F(BlockIO, FlushAfterEarlierWrites)
{
    for (BlockAioMode aio : kAioModes) {
        Image img(kImageSize);
        BlockOptions o = FileOptions(img.path, aio,
                                     aio == BLOCK_AIO_NATIVE ? "none"
                                                             : "writeback");
        BlockBackend *blk = Open(o);
        ASSERT_NE(blk, nullptr);
        BlockQueue *q = Queue(blk);
        std::vector<uint8_t> buf = Pattern(256 * 1024, 5);
        struct iovec iov = { buf.data(), buf.size() };
        Done d;
        for (int round = 0; round < 4; round++) {
            for (int i = 0; i < 16; i++) {
                int id = round * 100 + i;
                uint64_t off = (uint64_t)(round * 16 + i) * 262144;
                ASSERT_EQ(blk_queue_pwritev(q, off, &iov, 1, Done::Cb,
                                            d.Op(id)), 0);
            }
            ASSERT_EQ(blk_queue_flush(q, Done::Cb, d.Op(round * 100 + 99)), 0);
        }
        blk_queue_drain(q);
        ASSERT_EQ(d.errors, 0);
        ASSERT_EQ(d.count, 4 * 17);
        std::vector<int> pos(1000, -1);
        for (size_t i = 0; i < d.order.size(); i++) {
            pos[d.order[i]] = i;
        }
        for (int round = 0; round < 4; round++) {
            for (int r2 = 0; r2 <= round; r2++) {
                for (int i = 0; i < 16; i++) {
                    EXPECT_LT(pos[r2 * 100 + i], pos[round * 100 + 99])
                        << "aio " << aio << ": flush " << round
                        << " before write " << r2 * 100 + i;
                }
            }
        }
        blk_queue_free(q);
        blk_unref(blk);
        block_options_clear(&o);
    }
}

TEST_F(BlockIO, DiscardAndWriteZeroesReadBackZeroes)
{
    for (BlockAioMode aio : kAioModes) {
        for (const char *cache : { "writeback", "none" }) {
            if (aio == BLOCK_AIO_NATIVE && !strcmp(cache, "writeback")) {
                continue;
            }
            if (!strcmp(cache, "none") && ImageDir().empty()) {
                continue;
            }
            const uint64_t K = 1024;
            Image img(2048 * K);
            std::vector<uint8_t> pat = Pattern(2048 * K, 3);
            img.Write(0, pat);
            BlockOptions o = FileOptions(img.path, aio, cache);
            o.discard = BLOCK_DISCARD_UNMAP;
            BlockBackend *blk = Open(o);
            ASSERT_NE(blk, nullptr);
            BlockQueue *q = Queue(blk);
            Done d;
            ASSERT_EQ(blk_queue_discard(q, 256 * K, 256 * K, Done::Cb,
                                        d.Op(0)), 0);
            ASSERT_EQ(blk_queue_write_zeroes(q, 768 * K, 64 * K, false,
                                             Done::Cb, d.Op(1)), 0);
            ASSERT_EQ(blk_queue_write_zeroes(q, 1024 * K, 256 * K, true,
                                             Done::Cb, d.Op(2)), 0);
            // unaligned write-zeroes
            ASSERT_EQ(blk_queue_write_zeroes(q, 1536 * K + 100, 5000, false,
                                             Done::Cb, d.Op(3)), 0);
            EXPECT_EQ(d.count, 0);
            blk_queue_drain(q);
            EXPECT_EQ(d.errors, 0) << g_strerror(-d.last_err);
            std::vector<uint8_t> expect = pat;
            memset(&expect[256 * K], 0, 256 * K);
            memset(&expect[768 * K], 0, 64 * K);
            memset(&expect[1024 * K], 0, 256 * K);
            memset(&expect[1536 * K + 100], 0, 5000);
            EXPECT_TRUE(img.Read(0, 2048 * K) == expect)
                << "aio " << aio << " cache=" << cache;
            BlockStats st;
            blk_get_stats(blk, &st);
            EXPECT_EQ(st.discard_ops, 1u);
            EXPECT_EQ(st.zero_ops, 3u);
            blk_queue_free(q);
            blk_unref(blk);
            block_options_clear(&o);
        }
    }
}

// Write-zeroes on a file system without FALLOC_FL_ZERO_RANGE (tmpfs): the
// fallbacks.  may_unmap punches a hole (the space is freed); without it
// zero buffers are written; under O_DIRECT an unaligned range goes through
// a buffered descriptor of the same file, closed again.  (Mutation audit,
// issue 14.6: on the build directory's ext4 none of this runs.)
TEST_F(BlockIO, WriteZeroesFallbacksWithoutZeroRange)
{
    const char *dir = "/dev/shm";
    {
        Image probe(4096, dir);
        int fd = open(probe.path.c_str(), O_RDWR);
        ASSERT_GE(fd, 0);
        int r = fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 0, 4096);
        int err = errno;
        close(fd);
        if (r == 0 || err != EOPNOTSUPP) {
            GTEST_SKIP() << dir << " has FALLOC_FL_ZERO_RANGE";
        }
    }
    for (const char *cache : { "writeback", "none" }) {
        const uint64_t K = 1024;
        Image img(2048 * K, dir);
        std::vector<uint8_t> pat = Pattern(2048 * K, 5);
        img.Write(0, pat);
        BlockOptions o = FileOptions(img.path, BLOCK_AIO_THREADS, cache);
        o.discard = BLOCK_DISCARD_UNMAP;
        BlockBackend *blk = Open(o);
        if (!blk && !strcmp(cache, "none")) {
            block_options_clear(&o);
            continue; /* no O_DIRECT on tmpfs before Linux 6.6 */
        }
        ASSERT_NE(blk, nullptr) << cache;
        BlockQueue *q = Queue(blk);
        struct stat before, after;
        ASSERT_EQ(stat(img.path.c_str(), &before), 0);
        int fds = OpenFds();
        struct Ret {
            int v = 99;  // completions return exactly 0 or -errno
            static void Cb(void *opaque, int ret) { static_cast<Ret *>(opaque)->v = ret; }
        } r[3];
        ASSERT_EQ(blk_queue_write_zeroes(q, 256 * K, 512 * K, true, Ret::Cb, &r[0]), 0);
        ASSERT_EQ(blk_queue_write_zeroes(q, 1024 * K, 64 * K, false, Ret::Cb, &r[1]), 0);
        // unaligned by one byte only (offset and length)
        ASSERT_EQ(blk_queue_write_zeroes(q, 1536 * K + 1, 4097, false, Ret::Cb, &r[2]), 0);
        blk_queue_drain(q);
        for (int i = 0; i < 3; i++) {
            EXPECT_EQ(r[i].v, 0) << cache << " request " << i;
        }
        EXPECT_EQ(OpenFds(), fds) << cache << ": a descriptor leaked";
        ASSERT_EQ(stat(img.path.c_str(), &after), 0);
        EXPECT_LE(after.st_blocks + 512 * K / 512, before.st_blocks)
            << cache << ": may_unmap did not free the range";
        std::vector<uint8_t> expect = pat;
        memset(&expect[256 * K], 0, 512 * K);
        memset(&expect[1024 * K], 0, 64 * K);
        memset(&expect[1536 * K + 1], 0, 4097);
        EXPECT_TRUE(img.Read(0, 2048 * K) == expect) << cache;
        blk_queue_free(q);
        blk_unref(blk);
        block_options_clear(&o);
    }
}

TEST_F(BlockIO, DiscardIgnoredLeavesData)
{
    Image img(1 << 20);
    std::vector<uint8_t> pat = Pattern(1 << 20, 4);
    img.Write(0, pat);
    BlockOptions o = FileOptions(img.path, BLOCK_AIO_THREADS, "writeback");
    BlockBackend *blk = Open(o);
    BlockQueue *q = Queue(blk);
    Done d;
    ASSERT_EQ(blk_queue_discard(q, 0, 1 << 20, Done::Cb, d.Op(0)), 0);
    EXPECT_EQ(d.count, 0);
    blk_queue_drain(q);
    EXPECT_EQ(d.count, 1);
    EXPECT_EQ(d.errors, 0);
    EXPECT_TRUE(img.Read(0, 1 << 20) == pat);
    blk_queue_free(q);
    blk_unref(blk);
    block_options_clear(&o);
}

TEST_F(BlockIO, ReadOnlyRefusesWrites)
{
    Image img(1 << 20);
    BlockOptions o = FileOptions(img.path, BLOCK_AIO_IO_URING, "writeback");
    o.read_only = true;
    BlockBackend *blk = Open(o);
    ASSERT_NE(blk, nullptr);
    EXPECT_TRUE(blk_is_read_only(blk));
    BlockQueue *q = Queue(blk);
    std::vector<uint8_t> buf(4096);
    struct iovec iov = { buf.data(), buf.size() };
    Done d;
    EXPECT_EQ(blk_queue_pwritev(q, 0, &iov, 1, Done::Cb, d.Op(0)), -EROFS);
    EXPECT_EQ(blk_queue_discard(q, 0, 4096, Done::Cb, d.Op(0)), -EROFS);
    EXPECT_EQ(blk_queue_write_zeroes(q, 0, 4096, true, Done::Cb, d.Op(0)),
              -EROFS);
    EXPECT_EQ(blk_queue_preadv(q, 0, &iov, 1, Done::Cb, d.Op(1)), 0);
    EXPECT_EQ(blk_queue_flush(q, Done::Cb, d.Op(2)), 0);
    blk_queue_drain(q);
    EXPECT_EQ(d.count, 2);
    EXPECT_EQ(d.errors, 0);
    blk_queue_free(q);
    blk_unref(blk);
    block_options_clear(&o);
}

TEST_F(BlockIO, RangeChecks)
{
    Image img(1 << 20);
    BlockOptions o = FileOptions(img.path, BLOCK_AIO_THREADS, "writeback");
    BlockBackend *blk = Open(o);
    BlockQueue *q = Queue(blk);
    std::vector<uint8_t> buf(4096);
    struct iovec iov = { buf.data(), buf.size() };
    Done d;
    EXPECT_EQ(blk_queue_preadv(q, (1 << 20) - 512, &iov, 1, Done::Cb,
                               d.Op(0)), -EINVAL);
    EXPECT_EQ(blk_queue_pwritev(q, UINT64_MAX - 100, &iov, 1, Done::Cb,
                                d.Op(0)), -EINVAL);
    EXPECT_EQ(blk_queue_discard(q, 4096, UINT64_MAX, Done::Cb, d.Op(0)),
              -EINVAL);
    EXPECT_EQ(blk_queue_in_flight(q), 0u);
    aio_poll(ctx, false);
    EXPECT_EQ(d.count, 0);
    blk_queue_free(q);
    blk_unref(blk);
    block_options_clear(&o);
}

TEST_F(BlockIO, OpenErrors)
{
    std::string msg;
    BlockOptions o = FileOptions("/nonexistent/x.img", BLOCK_AIO_THREADS,
                                 "writeback");
    EXPECT_EQ(Open(o, &msg), nullptr);
    EXPECT_NE(msg.find("/nonexistent/x.img"), std::string::npos) << msg;
    block_options_clear(&o);

    Image img(1000);
    o = FileOptions(img.path, BLOCK_AIO_THREADS, "writeback");
    EXPECT_EQ(Open(o, &msg), nullptr);
    EXPECT_NE(msg.find("not a multiple of 512"), std::string::npos) << msg;
    block_options_clear(&o);
}

// QEMU-compatible OFD locks: a second read-write opener is refused; read-
// only openers coexist with each other; locking=off skips the check.
// The lock bytes are QEMU's (raw-posix: 100 + permission bit, 200 +
// shared-permission bit), so QEMU and qemu-img see shardvm's locks: a
// writer holds consistent-read, write and write-unchanged and denies
// write and resize to others; a reader holds consistent-read only.
// (Mutation audit, issue 14.6: file-lock.c's permission bits.)
TEST_F(BlockIO, ImageLockBytesAreQemus)
{
    Image img(1 << 20);
    auto held = [&](off_t byte) {
        int fd = open(img.path.c_str(), O_RDWR);
        struct flock fl = {};
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        fl.l_start = byte;
        fl.l_len = 1;
        EXPECT_EQ(fcntl(fd, F_OFD_GETLK, &fl), 0);
        close(fd);
        return fl.l_type != F_UNLCK;
    };
    for (bool read_only : { false, true }) {
        BlockOptions o = FileOptions(img.path, BLOCK_AIO_THREADS, "writeback");
        o.read_only = read_only;
        o.locking = BLOCK_LOCKING_ON;
        BlockBackend *b = Open(o);
        ASSERT_NE(b, nullptr);
        std::string got;
        for (off_t byte : { 100, 101, 102, 103, 200, 201, 202, 203 }) {
            got += held(byte) ? '1' : '0';
        }
        EXPECT_EQ(got, read_only ? "10000101" : "11100101")
            << "bytes 100..103, 200..203, read_only=" << read_only;
        blk_unref(b);
        block_options_clear(&o);
    }
}

TEST_F(BlockIO, ImageLocking)
{
    Image img(1 << 20);
    std::string msg;
    BlockOptions rw = FileOptions(img.path, BLOCK_AIO_THREADS, "writeback");
    BlockOptions ro = rw;
    ro.read_only = true;
    BlockOptions off = rw;
    off.locking = BLOCK_LOCKING_OFF;

    BlockBackend *a = Open(rw);
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(Open(rw, &msg), nullptr);
    EXPECT_NE(msg.find("Failed to get"), std::string::npos) << msg;
    EXPECT_NE(msg.find(img.path), std::string::npos) << msg;
    EXPECT_EQ(Open(ro, &msg), nullptr) << "a reader while a writer runs";
    BlockBackend *c = Open(off, &msg);
    EXPECT_NE(c, nullptr) << msg;
    blk_unref(c);
    blk_unref(a);

    BlockBackend *r1 = Open(ro, &msg);
    ASSERT_NE(r1, nullptr) << msg;
    BlockBackend *r2 = Open(ro, &msg);
    EXPECT_NE(r2, nullptr) << msg;
    EXPECT_EQ(Open(rw, &msg), nullptr) << "a writer while readers run";
    blk_unref(r2);
    blk_unref(r1);
    a = Open(rw, &msg);
    EXPECT_NE(a, nullptr) << "locks go with the last close: " << msg;
    blk_unref(a);
    block_options_clear(&rw);
}

// Between plug and unplug, submissions become one io_submit() /
// io_uring_submit().
TEST_F(BlockIO, PlugBatchesSubmissions)
{
    if (ImageDir().empty()) {
        GTEST_SKIP() << "no directory whose file system supports O_DIRECT";
    }
    for (BlockAioMode aio : { BLOCK_AIO_NATIVE, BLOCK_AIO_IO_URING }) {
        Image img(kImageSize);
        BlockOptions o = FileOptions(img.path, aio, "none");
        BlockBackend *blk = Open(o);
        ASSERT_NE(blk, nullptr);
        BlockQueue *q = Queue(blk);
        void *mem = nullptr;
        ASSERT_EQ(posix_memalign(&mem, 4096, 32 * 4096), 0);
        std::vector<struct iovec> iov(32);
        Done d;
        BlockStats before, after;
        blk_get_stats(blk, &before);
        blk_queue_plug(q);
        blk_queue_plug(q); // nested
        for (int i = 0; i < 32; i++) {
            iov[i] = { (char *)mem + i * 4096, 4096 };
            ASSERT_EQ(blk_queue_preadv(q, i * 65536, &iov[i], 1, Done::Cb,
                                       d.Op(i)), 0);
        }
        blk_queue_unplug(q);
        blk_get_stats(blk, &after);
        EXPECT_EQ(after.submit_calls, before.submit_calls)
            << "inner unplug submitted";
        blk_queue_unplug(q);
        blk_get_stats(blk, &after);
        EXPECT_EQ(after.submit_calls - before.submit_calls, 1u) << "aio " << aio;
        blk_queue_drain(q);
        EXPECT_EQ(d.count, 32);
        EXPECT_EQ(d.errors, 0);

        // unplugged: one submission per request
        blk_get_stats(blk, &before);
        for (int i = 0; i < 4; i++) {
            ASSERT_EQ(blk_queue_preadv(q, i * 65536, &iov[i], 1, Done::Cb,
                                       d.Op(i)), 0);
        }
        blk_get_stats(blk, &after);
        EXPECT_EQ(after.submit_calls - before.submit_calls, 4u);
        blk_queue_drain(q);
        free(mem);
        blk_queue_free(q);
        blk_unref(blk);
        block_options_clear(&o);
    }
}

TEST_F(BlockIO, NullDrivers)
{
    for (const char *spec :
         { "driver=null-co,node-name=n,size=64M,read-zeroes=on",
           "driver=null-aio,node-name=n,size=64M,read-zeroes=on",
           "driver=null-co,node-name=n,size=64M,read-zeroes=on,latency-ns=1000",
           "driver=null-aio,node-name=n,read-zeroes=off,latency-ns=20000" }) {
        BlockOptions o{};
        ASSERT_EQ(block_parse_blockdev(spec, &o, nullptr), 0);
        BlockBackend *blk = Open(o);
        ASSERT_NE(blk, nullptr);
        EXPECT_EQ(blk_get_size(blk), o.null_size);
        BlockQueue *q = Queue(blk);
        std::vector<uint8_t> buf(4096, 0xab);
        struct iovec iov = { buf.data(), buf.size() };
        Done d;
        for (int i = 0; i < 100; i++) {
            ASSERT_EQ(blk_queue_preadv(q, i * 4096, &iov, 1, Done::Cb,
                                       d.Op(i)), 0);
        }
        ASSERT_EQ(blk_queue_pwritev(q, 0, &iov, 1, Done::Cb, d.Op(100)), 0);
        ASSERT_EQ(blk_queue_flush(q, Done::Cb, d.Op(101)), 0);
        EXPECT_EQ(d.count, 0) << spec;
        blk_queue_drain(q);
        EXPECT_EQ(d.count, 102);
        EXPECT_EQ(d.errors, 0);
        EXPECT_EQ(buf[17], o.null_read_zeroes ? 0 : 0xab) << spec;
        // completions in submission order (FIFO)
        for (int i = 0; i < 100; i++) {
            EXPECT_EQ(d.order[i], i) << spec;
        }
        blk_queue_free(q);
        blk_unref(blk);
        block_options_clear(&o);
    }
}

// Two queues of one backend in one context share the context's ring.
TEST_F(BlockIO, TwoQueuesOneContext)
{
    Image img(kImageSize);
    for (BlockAioMode aio : { BLOCK_AIO_IO_URING, BLOCK_AIO_THREADS }) {
        BlockOptions o = FileOptions(img.path, aio, "writeback");
        BlockBackend *blk = Open(o);
        ASSERT_NE(blk, nullptr);
        BlockQueue *q1 = Queue(blk), *q2 = Queue(blk);
        std::vector<uint8_t> a = Pattern(65536, 1), b = Pattern(65536, 2);
        struct iovec ia = { a.data(), a.size() }, ib = { b.data(), b.size() };
        Done d;
        ASSERT_EQ(blk_queue_pwritev(q1, 0, &ia, 1, Done::Cb, d.Op(0)), 0);
        ASSERT_EQ(blk_queue_pwritev(q2, 65536, &ib, 1, Done::Cb, d.Op(1)), 0);
        blk_queue_drain(q1);
        blk_queue_drain(q2);
        EXPECT_EQ(d.count, 2);
        EXPECT_TRUE(img.Read(0, 65536) == a);
        EXPECT_TRUE(img.Read(65536, 65536) == b);
        blk_queue_free(q1);
        blk_queue_free(q2);
        blk_unref(blk);
        block_options_clear(&o);
    }
}

} // namespace
