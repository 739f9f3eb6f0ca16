// shardvm_fds_ensure_std: closed stdio descriptors come back on /dev/null,
// so nothing opened later can take their numbers.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>


extern "C" {
#include "shardvm/fds.h"
}

namespace {

// In a child: closes the descriptors named by mask, runs the fix, and
// reports through the exit status whether 0-2 are /dev/null afterwards and
// a new descriptor is numbered above 2.
int run_child(unsigned mask)
{
    pid_t pid = fork();
    if (pid == 0) {
        for (int fd = 0; fd <= 2; fd++) {
            if (mask & (1u << fd)) {
                close(fd);
            }
        }
        int bad = 0;
        if (shardvm_fds_ensure_std() != 0) {
            bad |= 1;
        }
        struct stat null_st, st;
        if (stat("/dev/null", &null_st) != 0) {
            bad |= 2;
        }
        for (int fd = 0; fd <= 2; fd++) {
            if (fstat(fd, &st) != 0) {
                bad |= 4;
            } else if ((mask & (1u << fd)) && st.st_rdev != null_st.st_rdev) {
                bad |= 8;
            }
            if (fcntl(fd, F_GETFD) & FD_CLOEXEC) {
                bad |= 16;
            }
        }
        int fresh = open("/dev/null", O_RDONLY);
        if (fresh <= 2) {
            bad |= 32;
        }
        _exit(bad);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 255;
}

TEST(Fds, EveryCombinationOfClosedStdioIsReopened)
{
    for (unsigned mask = 0; mask < 8; mask++) {
        EXPECT_EQ(run_child(mask), 0) << "closed mask " << mask;
    }
}

} // namespace
