// Issue 7, point 4: when epoll_pwait2() is missing (ENOSYS: a kernel
// before 5.11 or a seccomp filter), aio_poll() falls back to epoll_wait()
// with the timeout rounded up to whole milliseconds.  The test makes the
// syscall fail with ENOSYS through a seccomp filter in a child process.
#include "aio-test.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace {

bool deny_epoll_pwait2()
{
#ifdef __NR_epoll_pwait2
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_epoll_pwait2, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = { (unsigned short)(sizeof(filter) / sizeof(filter[0])), filter };
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
           prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
#else
    return false;
#endif
}

// Exit codes: 0 fine, 1 fd never dispatched, 2 timer needed too many
// passes (timeout rounded down: a spin), 3 setup failed.
void child_without_epoll_pwait2()
{
    if (!deny_epoll_pwait2()) {
        _exit(3);
    }
    AioContext *ctx = aio_context_new(nullptr);
    int fd[2];
    if (!ctx || pipe2(fd, O_NONBLOCK) < 0) {
        _exit(3);
    }
    std::atomic<int> reads{0};
    aio_set_fd_handler(ctx, fd[0], [](void *o) {
        static_cast<std::atomic<int> *>(o)->fetch_add(1);
    }, nullptr, nullptr, nullptr, &reads);
    std::thread t([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        if (write(fd[1], "x", 1) != 1) {
            _exit(3);
        }
    });
    // A blocking poll sleeps until the byte comes: a handful of passes,
    // not a spin.
    int passes = 0;
    while (reads.load() == 0 && passes < 100) {
        aio_poll(ctx, true);
        passes++;
    }
    t.join();
    if (reads.load() == 0) {
        _exit(1);
    }
    aio_set_fd_handler(ctx, fd[0], nullptr, nullptr, nullptr, nullptr, nullptr);

    // A timer 300 us away: the millisecond wait is rounded up, so one pass
    // (two if a wake-up comes early) suffices.
    bool fired = false;
    AioTimer *timer = aio_timer_new(ctx, [](void *o) { *static_cast<bool *>(o) = true; },
                                    &fired);
    aio_timer_mod(timer, aio_clock_ns() + 300 * 1000);
    passes = 0;
    while (!fired && passes < 1000) {
        aio_poll(ctx, true);
        passes++;
    }
    aio_timer_free(timer);
    while (aio_poll(ctx, false)) {
    }
    aio_context_unref(ctx);
    _exit(fired && passes <= 3 ? 0 : 2);
}

TEST(AioEpollFallback, WorksWithoutEpollPwait2)
{
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(child_without_epoll_pwait2(), ::testing::ExitedWithCode(0), "");
}

} // namespace
