// A clean exit flushes the images (issue 13 point 4, SIGTERM): shardvm's
// SIGTERM / quit / power-off path tears the machine down (machine_free:
// vCPUs stopped, devices reset -- their queues drained, every in-flight
// request completed -- then the drives unreferenced).  With cache=writeback
// the guest's completed writes may still be only in the page cache; QEMU
// flushes an image when it closes it, and so must the last blk_unref.
// Observed by interposing fdatasync(2) in this test program: the flushes
// of the file descriptors that name the test's image are counted.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <string>

#include "shardvm/block.h"

namespace {
std::mutex g_lock;
std::string g_watch;      // guarded by g_lock
unsigned g_watch_syncs;   // guarded by g_lock
}

// Every fdatasync in this program (the block layer's, the tests') comes
// here: count the ones on the watched file, then do it.
extern "C" int fdatasync(int fd)
{
    char link[64], path[4096];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof(path) - 1);
    if (n > 0) {
        path[n] = 0;
        std::lock_guard<std::mutex> g(g_lock);
        if (!g_watch.empty() && g_watch == path) {
            g_watch_syncs++;
        }
    }
    return (int)syscall(SYS_fdatasync, fd);
}

namespace {

class ExitFlush : public ::testing::Test {
protected:
    std::string path_;
    void SetUp() override
    {
        char tmpl[] = "/tmp/shardvm-exitflush-XXXXXX";
        int fd = mkstemp(tmpl);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(ftruncate(fd, 1 << 20), 0);
        close(fd);
        path_ = tmpl;
        std::lock_guard<std::mutex> g(g_lock);
        g_watch = path_;
        g_watch_syncs = 0;
    }
    void TearDown() override
    {
        std::lock_guard<std::mutex> g(g_lock);
        g_watch.clear();
        unlink(path_.c_str());
    }
    unsigned Syncs()
    {
        std::lock_guard<std::mutex> g(g_lock);
        return g_watch_syncs;
    }
    // Open the image with @cache (QEMU's cache= modes), unref it; returns
    // the fdatasyncs seen on it.
    unsigned OpenClose(bool writeback, bool no_flush, bool read_only)
    {
        BlockOptions o = {};
        o.id = g_strdup("d0");
        o.driver = BLOCK_DRIVER_FILE;
        o.filename = g_strdup(path_.c_str());
        o.aio = BLOCK_AIO_THREADS;
        o.cache_writeback = writeback;
        o.cache_no_flush = no_flush;
        o.read_only = read_only;
        GError *err = nullptr;
        BlockBackend *blk = blk_open(&o, &err);
        block_options_clear(&o);
        EXPECT_NE(blk, nullptr) << (err ? err->message : "");
        if (!blk) {
            g_clear_error(&err);
            return ~0u;
        }
        unsigned before = Syncs();
        blk_unref(blk);
        return Syncs() - before;
    }
};

// cache=writeback: the last unref flushes (failed before: the fd was closed
// with the guest's last writes possibly only in the page cache).
TEST_F(ExitFlush, WritebackImageIsFlushedAtClose)
{
    EXPECT_EQ(OpenClose(true, false, false), 1u);
}

// cache=writethrough / directsync: flushed too (cheap; QEMU does the same).
TEST_F(ExitFlush, WritethroughImageIsFlushedAtClose)
{
    EXPECT_EQ(OpenClose(false, false, false), 1u);
}

// cache=unsafe (cache.no-flush=on) promises nothing: no flush.
TEST_F(ExitFlush, NoFlushImageIsNotFlushed)
{
    EXPECT_EQ(OpenClose(true, true, false), 0u);
}

TEST_F(ExitFlush, ReadOnlyImageIsNotFlushed)
{
    EXPECT_EQ(OpenClose(true, false, true), 0u);
}

// Only the last reference flushes (a queue holds one).
TEST_F(ExitFlush, OnlyTheLastReferenceFlushes)
{
    BlockOptions o = {};
    o.id = g_strdup("d0");
    o.driver = BLOCK_DRIVER_FILE;
    o.filename = g_strdup(path_.c_str());
    o.cache_writeback = true;
    GError *err = nullptr;
    BlockBackend *blk = blk_open(&o, &err);
    block_options_clear(&o);
    ASSERT_NE(blk, nullptr);
    blk_ref(blk);
    blk_unref(blk);
    EXPECT_EQ(Syncs(), 0u);
    blk_unref(blk);
    EXPECT_EQ(Syncs(), 1u);
}

} // namespace
