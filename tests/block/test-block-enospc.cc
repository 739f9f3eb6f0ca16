// A host error reaches the callback as a negative errno: writes into a
// 1 MiB tmpfs (mounted in a private mount namespace of a forked child)
// fail with -ENOSPC, with every aio mode.  Needs root (or CAP_SYS_ADMIN):
// skipped, saying so, otherwise.
#include "block-test-util.h"

#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>

using namespace blocktest;

namespace {

constexpr int kSkip = 77;

// In the child: 0 when some write got -ENOSPC and nothing else failed.
int ChildFillDisk(BlockAioMode aio, std::string *why)
{
    if (unshare(CLONE_NEWNS) < 0 ||
        mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0) {
        *why = std::string("unshare/mount: ") + strerror(errno);
        return kSkip;
    }
    char dir[] = "/tmp/shardvm-enospc-XXXXXX";
    if (!mkdtemp(dir)) {
        *why = "mkdtemp";
        return 1;
    }
    if (mount("tmpfs", dir, "tmpfs", 0, "size=1M") < 0) {
        *why = std::string("mount tmpfs: ") + strerror(errno);
        rmdir(dir);
        return kSkip;
    }
    int rc = 1;
    {
        Image img(8 << 20, dir);
        BlockOptions o = FileOptions(img.path, aio,
                                     aio == BLOCK_AIO_NATIVE ? "none"
                                                             : "writeback");
        AioContext *ctx = aio_context_new(nullptr);
        GError *err = nullptr;
        BlockBackend *blk = blk_open(&o, &err);
        if (!blk) {
            *why = err->message;
            rc = aio == BLOCK_AIO_NATIVE ? kSkip : 1; // tmpfs O_DIRECT < 6.6
        } else {
            BlockQueue *q = blk_queue_new(blk, ctx, nullptr);
            void *buf = nullptr;
            if (posix_memalign(&buf, 4096, 65536) == 0) {
                memset(buf, 0x5a, 65536);
                struct iovec iov = { buf, 65536 };
                Done d(128);
                for (int i = 0; i < 64; i++) {
                    blk_queue_pwritev(q, (uint64_t)i * 65536, &iov, 1,
                                      Done::Cb, d.Op(i));
                }
                blk_queue_drain(q);
                if (d.count == 64 && d.errors > 0 &&
                    d.last_err == -ENOSPC) {
                    rc = 0;
                } else {
                    *why = "count " + std::to_string(d.count) + " errors " +
                           std::to_string(d.errors) + " last " +
                           std::to_string(d.last_err);
                }
                free(buf);
            }
            blk_queue_free(q);
            blk_unref(blk);
        }
        aio_context_unref(ctx);
        block_options_clear(&o);
    }
    umount(dir);
    rmdir(dir);
    return rc;
}

class BlockEnospc : public ::testing::TestWithParam<int> {};

TEST_P(BlockEnospc, HostErrorReachesCallback)
{
    BlockAioMode aio = (BlockAioMode)GetParam();
    int pipefd[2];
    ASSERT_EQ(pipe(pipefd), 0);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        close(pipefd[0]);
        std::string why;
        int rc = ChildFillDisk(aio, &why);
        if (write(pipefd[1], why.data(), why.size()) < 0) {
            rc = 2;
        }
        _exit(rc);
    }
    close(pipefd[1]);
    char msg[512] = "";
    ssize_t n = read(pipefd[0], msg, sizeof(msg) - 1);
    msg[n > 0 ? n : 0] = 0;
    close(pipefd[0]);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status)) << "child died: " << status;
    if (WEXITSTATUS(status) == kSkip) {
        GTEST_SKIP() << "cannot mount a small tmpfs here: " << msg;
    }
    EXPECT_EQ(WEXITSTATUS(status), 0) << msg;
}

INSTANTIATE_TEST_SUITE_P(Aio, BlockEnospc,
                         ::testing::Values((int)BLOCK_AIO_THREADS,
                                           (int)BLOCK_AIO_NATIVE,
                                           (int)BLOCK_AIO_IO_URING));

} // namespace
