/* Descriptors 0-2 always open (see shardvm/fds.h). */
#include "shardvm/fds.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

int shardvm_fds_ensure_std(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF) {
            continue;
        }
        /* The lowest free number is taken: fd itself, as all below it
         * are open by now. */
        int got = open("/dev/null", (fd == 0 ? O_RDONLY : O_WRONLY) | O_CLOEXEC);
        if (got < 0) {
            return -errno;
        }
        if (got != fd) {
            /* Cannot happen (fd was free and is the lowest); be safe. */
            int r = dup2(got, fd) < 0 ? -errno : 0;
            close(got);
            if (r < 0) {
                return r;
            }
        } else {
            /* The std descriptors are inherited by nothing we exec, but
             * a child expects them open: clear O_CLOEXEC. */
            fcntl(fd, F_SETFD, 0);
        }
    }
    return 0;
}
