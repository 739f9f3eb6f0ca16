/*
 * Character backends: see include/shardvm/chardev.h.
 *
 * Output never blocks the writer (a vCPU): the fd is non-blocking, what
 * the fd does not take goes to a bounded buffer, and when the buffer is
 * full the writer is told so (the UART then stops its transmitter).  The
 * main loop writes the buffer out when the fd becomes writable and tells
 * the writer that there is room again (QEMU's chardev does the same with
 * a G_IO_OUT watch).  Input is read only while the consumer has room.
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

/* How long chardev_free() waits for a reader that makes no progress. */
#define CHARDEV_EXIT_DRAIN_MS 1000

struct Chardev {
    ChardevBackend backend; /* constant */
    int out_fd;             /* constant; -1 for CHARDEV_NULL/NONE */
    bool close_out;         /* we opened out_fd */
    int out_old_flags;      /* F_GETFL before we set O_NONBLOCK, or -1 */
    atomic_bool broken;     /* a write failed: discard from now on */

    /* Output side. */
    GMutex out_lock;        /* guards the fields down to out_refused */
    GByteArray *out_buf;    /* accepted, not yet written; <= OUT_MAX */
    bool out_watching;      /* the writable handler is (being) set */
    bool out_refused;       /* a writer got less than it offered */
    AioBH *out_bh;          /* arms the writable handler; constant */
    ChardevWritableFunc *writable; /* set before output starts */
    void *writable_opaque;

    /* Input side: main-loop thread only (except in_bh scheduling). */
    ChardevCanReadFunc *can_read;
    ChardevInputFunc *input;
    void *input_opaque;
    bool watching_stdin;    /* the stdin handler is set */
    bool input_paused;      /* stopped because the consumer was full */
    bool input_eof;         /* end of input or an error: never again */
    AioBH *in_bh;           /* resumes input; constant */
    bool tty_saved;
    struct termios saved_tty;
};

static void chardev_out_bh(void *opaque);
static void chardev_in_bh(void *opaque);

/*
 * The fd for stdout output.  O_NONBLOCK is a flag of the open file
 * description, which stdout shares with stderr (2>&1), with the shell's
 * terminal and with whoever else holds the pipe: setting it there would
 * make our own error messages fail with EAGAIN when the reader is slow,
 * and stay set for the others if we are killed.  So a pipe, FIFO or
 * terminal is opened again (/proc/self/fd/1: a new description of the
 * same object) and only that one is made non-blocking.  A regular file
 * never blocks and keeps the shared offset.  Where reopening fails (a
 * socket) the shared description is switched, and restored at the end.
 */
static int chardev_open_stdout(bool *close_out)
{
    struct stat st;

    *close_out = false;
    if (fstat(STDOUT_FILENO, &st) < 0 || S_ISREG(st.st_mode)) {
        return STDOUT_FILENO;
    }
    int fd = open("/proc/self/fd/1", O_WRONLY | O_NONBLOCK | O_CLOEXEC |
                                     O_NOCTTY);
    if (fd < 0) {
        return STDOUT_FILENO;
    }
    *close_out = true;
    return fd;
}

Chardev *chardev_new(ChardevBackend backend, const char *path,
                     GError **errp)
{
    Chardev *c = g_new0(Chardev, 1);

    c->backend = backend;
    c->out_fd = -1;
    c->out_old_flags = -1;
    switch (backend) {
    case CHARDEV_STDIO:
        c->out_fd = chardev_open_stdout(&c->close_out);
        break;
    case CHARDEV_FILE:
        /*
         * O_NONBLOCK: a FIFO without a reader fails at once (ENXIO)
         * instead of hanging the start-up; with one, writes never block.
         */
        c->out_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC |
                               O_NONBLOCK | O_NOCTTY, 0644);
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
    if (c->out_fd == STDOUT_FILENO) {
        /* Our stdout: non-blocking while we run, restored at the end. */
        int fl = fcntl(c->out_fd, F_GETFL);
        if (fl >= 0 && !(fl & O_NONBLOCK) &&
            fcntl(c->out_fd, F_SETFL, fl | O_NONBLOCK) == 0) {
            c->out_old_flags = fl;
        }
    }
    g_mutex_init(&c->out_lock);
    c->out_buf = g_byte_array_new();
    AioContext *ctx = main_loop_get_aio_context();
    if (ctx) {
        c->out_bh = aio_bh_new(ctx, chardev_out_bh, c);
        c->in_bh = aio_bh_new(ctx, chardev_in_bh, c);
    }
    return c;
}

void chardev_set_writable_handler(Chardev *c, ChardevWritableFunc *fn,
                                  void *opaque)
{
    c->writable = fn;
    c->writable_opaque = opaque;
}

/*
 * Write what the fd takes now.  Returns the bytes written; on an error
 * other than EAGAIN the chardev breaks (reported once, output discarded
 * from then on) and *@broken is set.  out_lock held.
 */
static size_t chardev_write_now(Chardev *c, const uint8_t *buf, size_t len,
                                bool *broken)
{
    size_t done = 0;

    *broken = false;
    while (done < len) {
        ssize_t n = write(c->out_fd, buf + done, len - done);
        if (n > 0) {
            done += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            break;
        } else {
            int e = n < 0 ? errno : EIO;
            atomic_store_explicit(&c->broken, true, memory_order_relaxed);
            fprintf(stderr, "shardvm: serial output lost: %s\n",
                    strerror(e));
            *broken = true;
            break;
        }
    }
    return done;
}

size_t chardev_write(Chardev *c, const uint8_t *buf, size_t len)
{
    bool broken;
    size_t done = 0;

    if (c->out_fd < 0 || atomic_load_explicit(&c->broken,
                                              memory_order_relaxed)) {
        return len; /* discarded, never refused */
    }
    g_mutex_lock(&c->out_lock);
    if (c->out_buf->len == 0) {
        done = chardev_write_now(c, buf, len, &broken);
        if (broken) {
            g_mutex_unlock(&c->out_lock);
            return len;
        }
    }
    size_t room = CHARDEV_OUT_MAX - c->out_buf->len;
    size_t take = MIN(room, len - done);
    g_byte_array_append(c->out_buf, buf + done, (guint)take);
    done += take;
    if (done < len) {
        c->out_refused = true;
    }
    bool arm = c->out_buf->len > 0 && !c->out_watching && c->out_bh;
    if (arm) {
        c->out_watching = true;
    }
    g_mutex_unlock(&c->out_lock);
    if (arm) {
        /* main_loop_set_fd_handler() wants the main loop: go there. */
        aio_bh_schedule(c->out_bh);
    }
    return done;
}

size_t chardev_get_buffered(Chardev *c)
{
    g_mutex_lock(&c->out_lock);
    size_t n = c->out_buf->len;
    g_mutex_unlock(&c->out_lock);
    return n;
}

/* The fd is writable: write the buffer out, tell a refused writer. */
static void chardev_out_writable(void *opaque)
{
    Chardev *c = opaque;
    bool broken, notify = false;

    g_mutex_lock(&c->out_lock);
    size_t n = chardev_write_now(c, c->out_buf->data, c->out_buf->len,
                                 &broken);
    if (broken) {
        n = c->out_buf->len; /* drop it all */
    }
    g_byte_array_remove_range(c->out_buf, 0, (guint)n);
    if (n > 0 && c->out_refused) {
        c->out_refused = false;
        notify = true;
    }
    if (c->out_buf->len == 0 && c->out_watching) {
        c->out_watching = false;
        main_loop_set_fd_handler(c->out_fd, NULL, NULL, NULL);
    }
    g_mutex_unlock(&c->out_lock);
    if (notify && c->writable) {
        /* Without out_lock: the writer takes its own lock, then ours. */
        c->writable(c->writable_opaque);
    }
}

static void chardev_out_bh(void *opaque)
{
    Chardev *c = opaque;

    main_loop_set_fd_handler(c->out_fd, NULL, chardev_out_writable, c);
}

/* stdin readable: hand over as much as the consumer has room for. */
static void chardev_stdin_read(void *opaque)
{
    Chardev *c = opaque;
    uint8_t buf[256];
    size_t room = c->can_read ? c->can_read(c->input_opaque) : sizeof(buf);

    if (room == 0) {
        /* Backpressure: leave the rest in stdin until the guest reads
         * (chardev_input_resume()); watching it would spin. */
        main_loop_set_fd_handler(STDIN_FILENO, NULL, NULL, NULL);
        c->watching_stdin = false;
        c->input_paused = true;
        return;
    }
    ssize_t n = read(STDIN_FILENO, buf, MIN(room, sizeof(buf)));
    if (n > 0) {
        c->input(c->input_opaque, buf, (size_t)n);
    } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        /* End of input: stop watching, or the loop would spin. */
        main_loop_set_fd_handler(STDIN_FILENO, NULL, NULL, NULL);
        c->watching_stdin = false;
        c->input_eof = true;
    }
}

static void chardev_in_bh(void *opaque)
{
    Chardev *c = opaque;

    if (c->input_paused && !c->input_eof && c->input) {
        c->input_paused = false;
        c->watching_stdin = true;
        main_loop_set_fd_handler(STDIN_FILENO, chardev_stdin_read, NULL, c);
    }
}

void chardev_input_resume(Chardev *c)
{
    if (c->in_bh) {
        aio_bh_schedule(c->in_bh);
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

void chardev_set_input(Chardev *c, ChardevCanReadFunc *can_read,
                       ChardevInputFunc *fn, void *opaque)
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
    c->can_read = can_read;
    c->input = fn;
    c->input_opaque = opaque;
    chardev_tty_raw(c);
    main_loop_set_fd_handler(STDIN_FILENO, chardev_stdin_read, NULL, c);
    c->watching_stdin = true;
}

/*
 * A host signal asks us to stop: one that ended the run, or one that came
 * after another shutdown request (a guest power-off, a debug-exit) won.
 * The latter is not recorded anywhere (the first request wins), but the
 * main thread blocks these signals and nothing reads the signalfd while
 * we drain at exit, so it is still pending.
 */
static bool chardev_signalled(void)
{
    sigset_t pending;

    if (main_loop_shutdown_requested() == SHUTDOWN_HOST_SIGNAL) {
        return true;
    }
    if (sigpending(&pending) < 0) {
        return false;
    }
    return sigismember(&pending, SIGTERM) == 1 ||
           sigismember(&pending, SIGINT) == 1 ||
           sigismember(&pending, SIGHUP) == 1;
}

/*
 * At exit: write out what is buffered while the reader keeps reading; a
 * reader that takes nothing for CHARDEV_EXIT_DRAIN_MS, or a shutdown by
 * signal, drops the rest (a stalled console must not hold the exit).
 */
static void chardev_drain_at_exit(Chardev *c)
{
    bool broken = false;

    while (c->out_buf->len > 0 && !broken) {
        size_t n = chardev_write_now(c, c->out_buf->data, c->out_buf->len,
                                     &broken);
        g_byte_array_remove_range(c->out_buf, 0, (guint)n);
        if (c->out_buf->len == 0 || broken || chardev_signalled()) {
            break;
        }
        struct pollfd pfd = { .fd = c->out_fd, .events = POLLOUT };
        if (n == 0 && poll(&pfd, 1, CHARDEV_EXIT_DRAIN_MS) <= 0) {
            break;
        }
    }
    if (c->out_buf->len > 0 && !broken) {
        fprintf(stderr, "shardvm: %u bytes of serial output dropped at exit "
                "(the reader is not reading)\n", c->out_buf->len);
    }
}

void chardev_free(Chardev *c)
{
    if (!c) {
        return;
    }
    if (c->watching_stdin) {
        main_loop_set_fd_handler(STDIN_FILENO, NULL, NULL, NULL);
    }
    if (c->out_watching) {
        main_loop_set_fd_handler(c->out_fd, NULL, NULL, NULL);
    }
    if (c->out_bh) {
        aio_bh_delete(c->out_bh);
        aio_bh_delete(c->in_bh);
    }
    if (c->out_fd >= 0 && !atomic_load(&c->broken)) {
        chardev_drain_at_exit(c);
    }
    if (c->out_old_flags >= 0) {
        fcntl(c->out_fd, F_SETFL, c->out_old_flags);
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
    g_byte_array_unref(c->out_buf);
    g_mutex_clear(&c->out_lock);
    g_free(c);
}
