/*
 * Character backends: see include/shardvm/chardev.h.
 */
#include "shardvm/chardev.h"
#include "shardvm/error.h"
#include "shardvm/main-loop.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

struct Chardev {
    ChardevBackend backend; /* constant */
    int out_fd;             /* constant; -1 for CHARDEV_NULL/NONE */
    bool close_out;         /* we opened out_fd */
    atomic_bool broken;     /* a write failed: discard from now on */

    /* Input side: main-loop thread only. */
    ChardevInputFunc *input;
    void *input_opaque;
    bool watching_stdin;
    bool tty_saved;
    struct termios saved_tty;
};

Chardev *chardev_new(ChardevBackend backend, const char *path,
                     GError **errp)
{
    Chardev *c = g_new0(Chardev, 1);

    c->backend = backend;
    c->out_fd = -1;
    switch (backend) {
    case CHARDEV_STDIO:
        c->out_fd = STDOUT_FILENO;
        break;
    case CHARDEV_FILE:
        c->out_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                         0644);
        if (c->out_fd < 0) {
            int e = errno;
            shardvm_error_set(errp, -e, "cannot open serial output '%s': %s",
                              path, strerror(e));
            g_free(c);
            return NULL;
        }
        c->close_out = true;
        break;
    case CHARDEV_NONE:
    case CHARDEV_NULL:
        break;
    }
    return c;
}

void chardev_write(Chardev *c, const uint8_t *buf, size_t len)
{
    if (c->out_fd < 0 || atomic_load_explicit(&c->broken,
                                              memory_order_relaxed)) {
        return;
    }
    while (len > 0) {
        ssize_t n = write(c->out_fd, buf, len);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            /* stdout may be non-blocking (shared with a parent): wait. */
            struct pollfd pfd = { .fd = c->out_fd, .events = POLLOUT };
            poll(&pfd, 1, -1);
        } else {
            int e = n < 0 ? errno : EIO;
            atomic_store_explicit(&c->broken, true, memory_order_relaxed);
            fprintf(stderr, "shardvm: serial output lost: %s\n",
                    strerror(e));
            return;
        }
    }
}

/* stdin readable: hand what arrived to the device. */
static void chardev_stdin_read(void *opaque)
{
    Chardev *c = opaque;
    uint8_t buf[256];
    ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));

    if (n > 0) {
        c->input(c->input_opaque, buf, (size_t)n);
    } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        /* End of input: stop watching, or the loop would spin. */
        main_loop_set_fd_handler(STDIN_FILENO, NULL, NULL, NULL);
        c->watching_stdin = false;
    }
}

/* Raw mode: bytes reach the guest as typed, without echo or line editing.
 * Output post-processing (\n -> \r\n) and signal keys stay enabled. */
static void chardev_tty_raw(Chardev *c)
{
    struct termios t;

    if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &t) < 0) {
        return;
    }
    c->saved_tty = t;
    c->tty_saved = true;
    t.c_iflag &= ~(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR |
                   ICRNL | IXON);
    t.c_oflag |= OPOST;
    t.c_lflag &= ~(ECHO | ECHONL | ICANON | IEXTEN);
    t.c_cflag &= ~(CSIZE | PARENB);
    t.c_cflag |= CS8;
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    tcsetattr(STDIN_FILENO, TCSANOW, &t);
}

void chardev_set_input(Chardev *c, ChardevInputFunc *fn, void *opaque)
{
    struct stat st;

    if (c->backend != CHARDEV_STDIO || fstat(STDIN_FILENO, &st) < 0) {
        return;
    }
    /* epoll refuses regular files and /dev/null; they are not input. */
    if (!isatty(STDIN_FILENO) && !S_ISFIFO(st.st_mode) &&
        !S_ISSOCK(st.st_mode)) {
        return;
    }
    /*
     * A terminal we do not own (shardvm started in the background, e.g.
     * under timeout(1)): reading or changing it would stop the whole
     * process with SIGTTIN/SIGTTOU.  Leave it alone.
     */
    if (isatty(STDIN_FILENO) && tcgetpgrp(STDIN_FILENO) != getpgrp()) {
        return;
    }
    c->input = fn;
    c->input_opaque = opaque;
    chardev_tty_raw(c);
    main_loop_set_fd_handler(STDIN_FILENO, chardev_stdin_read, NULL, c);
    c->watching_stdin = true;
}

void chardev_free(Chardev *c)
{
    if (!c) {
        return;
    }
    if (c->watching_stdin) {
        main_loop_set_fd_handler(STDIN_FILENO, NULL, NULL, NULL);
    }
    if (c->tty_saved) {
        /* We may have been moved to the background meanwhile (Ctrl-Z,
         * bg): with SIGTTOU blocked the restore goes through instead of
         * stopping us. */
        sigset_t ttou, old;
        sigemptyset(&ttou);
        sigaddset(&ttou, SIGTTOU);
        pthread_sigmask(SIG_BLOCK, &ttou, &old);
        tcsetattr(STDIN_FILENO, TCSANOW, &c->saved_tty);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    if (c->close_out) {
        close(c->out_fd);
    }
    g_free(c);
}
