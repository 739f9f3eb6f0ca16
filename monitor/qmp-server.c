/*
 * QMP sockets in the main loop: listeners (unix and tcp) and clients.
 * Everything runs in the main-loop thread with the BQL held, through
 * main_loop_set_fd_handler().
 *
 * Output is non-blocking: a reply goes out with send(MSG_NOSIGNAL |
 * MSG_DONTWAIT); what the socket does not take waits in the client's
 * buffer and a write handler drains it, and while anything waits the
 * client's input is not read (a client that does not read its replies
 * cannot make the monitor buffer without bound).  A client whose socket
 * fails (EPIPE, ECONNRESET) or whose event backlog passes
 * MONITOR_MAX_BACKLOG is dropped.
 */
#include "qmp-internal.h"
#include "shardvm/error.h"
#include "shardvm/main-loop.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Unsent output (events a client does not read) before it is dropped. */
#define MONITOR_MAX_BACKLOG (8u << 20)

typedef struct MonitorListener {
    Monitor *mon;
    int fd;
    char *unlink_path; /* the unix socket we created, or NULL */
} MonitorListener;

typedef struct MonitorClient {
    Monitor *mon;
    int fd;
    QmpSession *session;
    GString *out;      /* unsent output from out_off on */
    size_t out_off;
    bool writing;      /* the fd handler waits for POLLOUT, not input */
    bool dead;         /* failed: freed by the reap BH or its own handler */
} MonitorClient;

static void monitor_client_read(void *opaque);
static void monitor_client_write(void *opaque);
static void monitor_accept_resume(Monitor *mon);

Monitor *monitor_new(const MonitorBackend *backend, void *opaque)
{
    Monitor *mon = g_new0(Monitor, 1);
    mon->backend = backend;
    mon->opaque = opaque;
    mon->sessions = g_ptr_array_new();
    mon->listeners = g_ptr_array_new();
    mon->clients = g_ptr_array_new();
    mon->spare_fd = -1;
    return mon;
}

/* ---- clients ----------------------------------------------------------- */

static void monitor_client_free(MonitorClient *c)
{
    main_loop_set_fd_handler(c->fd, NULL, NULL, NULL);
    close(c->fd);
    qmp_session_free(c->session);
    g_string_free(c->out, TRUE);
    g_ptr_array_remove(c->mon->clients, c);
    /* A descriptor is free again: listeners paused for lack of them
     * resume. */
    monitor_accept_resume(c->mon);
    g_free(c);
}

/* Mark @c failed; the reap BH frees it (it may be in the middle of an
 * event broadcast, so not here). */
static void monitor_client_fail(MonitorClient *c)
{
    if (!c->dead) {
        c->dead = true;
        main_loop_set_fd_handler(c->fd, NULL, NULL, NULL);
        aio_bh_schedule(c->mon->reap_bh);
    }
}

static void monitor_reap(void *opaque)
{
    Monitor *mon = opaque;
    for (guint i = mon->clients->len; i > 0; i--) {
        MonitorClient *c = g_ptr_array_index(mon->clients, i - 1);
        if (c->dead) {
            monitor_client_free(c);
        }
    }
}

/* Read input only when no output waits. */
static void monitor_client_watch(MonitorClient *c)
{
    bool pending = c->out_off < c->out->len;
    if (c->dead || pending == c->writing) {
        return;
    }
    c->writing = pending;
    if (pending) {
        main_loop_set_fd_handler(c->fd, NULL, monitor_client_write, c);
    } else {
        main_loop_set_fd_handler(c->fd, monitor_client_read, NULL, c);
    }
}

/* Send what the socket takes.  Returns 0 or -EPIPE (the client failed). */
static int monitor_client_flush(MonitorClient *c)
{
    while (c->out_off < c->out->len) {
        ssize_t n = send(c->fd, c->out->str + c->out_off,
                         c->out->len - c->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            monitor_client_fail(c); /* EPIPE, ECONNRESET... */
            return -EPIPE;
        }
    }
    if (c->out_off == c->out->len) {
        g_string_truncate(c->out, 0);
        c->out_off = 0;
    }
    monitor_client_watch(c);
    return 0;
}

/* QmpSessionWriteFunc */
static int monitor_client_output(void *opaque, const char *buf, size_t len)
{
    MonitorClient *c = opaque;
    if (c->dead) {
        return -EPIPE;
    }
    if (c->out->len - c->out_off + len > MONITOR_MAX_BACKLOG) {
        monitor_client_fail(c);
        return -ENOBUFS;
    }
    g_string_append_len(c->out, buf, (gssize)len);
    return monitor_client_flush(c);
}

static void monitor_client_write(void *opaque)
{
    MonitorClient *c = opaque;
    monitor_client_flush(c);
}

static void monitor_client_read(void *opaque)
{
    MonitorClient *c = opaque;
    char buf[65536];
    ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);

    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
                  errno == EINTR)) {
        return;
    }
    if (n <= 0 || qmp_session_feed(c->session, buf, (size_t)n) < 0) {
        /* EOF, error, oversized message or a failed reply: the client is
         * gone or going.  Freed here, in its own handler (the main loop
         * never calls a removed handler again). */
        monitor_client_free(c);
        return;
    }
}

void monitor_add_client_fd(Monitor *mon, int fd)
{
    if (!mon->reap_bh) {
        mon->reap_bh = aio_bh_new(main_loop_get_aio_context(), monitor_reap,
                                  mon);
    }
    MonitorClient *c = g_new0(MonitorClient, 1);
    c->mon = mon;
    c->fd = fd;
    c->out = g_string_new(NULL);
    c->writing = true; /* so that the watch below installs the reader */
    g_ptr_array_add(mon->clients, c);
    monitor_client_watch(c);
    c->session = qmp_session_new(mon, monitor_client_output, c);
}

unsigned monitor_client_count(Monitor *mon)
{
    unsigned n = 0;
    for (guint i = 0; i < mon->clients->len; i++) {
        n += !((MonitorClient *)g_ptr_array_index(mon->clients, i))->dead;
    }
    return n;
}

/* ---- listeners --------------------------------------------------------- */

static void monitor_accept(void *opaque);

/* Watch (or stop watching) every listener. */
static void monitor_accept_watch(Monitor *mon, bool on)
{
    for (guint i = 0; i < mon->listeners->len; i++) {
        MonitorListener *l = g_ptr_array_index(mon->listeners, i);
        main_loop_set_fd_handler(l->fd, on ? monitor_accept : NULL, NULL, l);
    }
}

static void monitor_accept_resume(Monitor *mon)
{
    if (mon->accept_paused) {
        mon->accept_paused = false;
        if (mon->spare_fd < 0) {
            mon->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        }
        monitor_accept_watch(mon, true);
    }
}

/*
 * accept() failed with @err and the connection is still queued.  The
 * listening fd is level-triggered: returning would make the main loop call
 * us again at once, forever (100% CPU).  Out of descriptors: give up the
 * spare one, accept the client and close it (it sees a closed
 * connection), take the spare back.  Otherwise, or without a spare: stop
 * watching the listeners until a client goes.
 */
static void monitor_accept_failed(MonitorListener *l, int err)
{
    Monitor *mon = l->mon;

    if ((err == EMFILE || err == ENFILE) && mon->spare_fd >= 0) {
        close(mon->spare_fd);
        int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
            close(fd);
        }
        mon->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            return;
        }
    }
    mon->accept_paused = true;
    monitor_accept_watch(mon, false);
}

static void monitor_accept(void *opaque)
{
    MonitorListener *l = opaque;
    for (;;) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                monitor_accept_failed(l, errno);
            }
            return;
        }
        monitor_add_client_fd(l->mon, fd);
    }
}

/*
 * Make room for a unix socket at @path: remove a stale socket of an
 * earlier run, but nothing else -- not a file that is no socket (a typo
 * must not delete data), not a socket a live process listens on.
 */
static int monitor_unlink_stale(const char *path,
                                const struct sockaddr_un *sa, GError **errp)
{
    struct stat st;
    if (lstat(path, &st) < 0) {
        return 0; /* nothing there (or bind() will say why) */
    }
    if (!S_ISSOCK(st.st_mode)) {
        return shardvm_error_set(errp, -EEXIST, "-qmp: '%s' exists and is "
                                 "not a socket", path);
    }
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0) {
        int live = connect(probe, (const struct sockaddr *)sa,
                           sizeof(*sa)) == 0;
        close(probe);
        if (live) {
            return shardvm_error_set(errp, -EADDRINUSE, "-qmp: '%s' is in "
                                     "use by another process", path);
        }
    }
    unlink(path);
    return 0;
}

static int monitor_listen_unix(const char *path, GError **errp)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(sa.sun_path)) {
        return shardvm_error_set(errp, -ENAMETOOLONG, "-qmp: socket path "
                                 "'%s' is too long", path);
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        return shardvm_error_set(errp, -e, "-qmp: socket: %s", strerror(e));
    }
    int r = monitor_unlink_stale(path, &sa, errp);
    if (r < 0) {
        close(fd);
        return r;
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(fd, 64) < 0) {
        int e = errno;
        close(fd);
        return shardvm_error_set(errp, -e, "-qmp: cannot listen on '%s': %s",
                                 path, strerror(e));
    }
    return fd;
}

/*
 * Listen on every address "HOST:PORT", "[IPV6]:PORT" or ":PORT" resolves
 * to, as QEMU does ("tcp::PORT" gets both 0.0.0.0 and [::]; an IPv6
 * socket is IPv6-only so that the two coexist).  Appends the fds to
 * @fds; fails (negative errno) only when no address listens.
 */
static int monitor_listen_tcp(const char *hostport, GArray *fds,
                              GError **errp)
{
    const char *colon = strrchr(hostport, ':');
    char *host = g_strndup(hostport, colon - hostport);
    size_t hn = strlen(host);
    if (hn >= 2 && host[0] == '[' && host[hn - 1] == ']') {
        memmove(host, host + 1, hn - 2);
        host[hn - 2] = '\0';
    }
    struct addrinfo hints = { .ai_family = AF_UNSPEC,
                              .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE };
    struct addrinfo *res = NULL;
    int e = 0;
    guint before = fds->len;

    int gr = getaddrinfo(*host ? host : NULL, colon + 1, &hints, &res);
    g_free(host);
    if (gr != 0) {
        return shardvm_error_set(errp, -EINVAL, "-qmp: address '%s': %s",
                                 hostport, gai_strerror(gr));
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK |
                        SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            e = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (ai->ai_family == AF_INET6) {
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        }
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
            listen(fd, 64) < 0) {
            e = errno;
            close(fd);
            continue;
        }
        g_array_append_val(fds, fd);
    }
    freeaddrinfo(res);
    if (fds->len == before) {
        return shardvm_error_set(errp, -e, "-qmp: cannot listen on '%s': %s",
                                 hostport, strerror(e));
    }
    return 0;
}

int monitor_add_listener(Monitor *mon, const char *addr, GError **errp)
{
    /* Accept both -qmp's full syntax and the normalised one (where a
     * ',' is always doubled). */
    char *norm = monitor_addr_unescape(addr);
    int fd;

    if (!norm) {
        char *parsed = monitor_parse_qmp(addr, errp);
        if (!parsed) {
            return -EINVAL;
        }
        norm = monitor_addr_unescape(parsed);
        g_free(parsed);
    }
    GArray *fds = g_array_new(FALSE, FALSE, sizeof(int));
    if (g_str_has_prefix(norm, "unix:")) {
        fd = monitor_listen_unix(norm + 5, errp);
        if (fd >= 0) {
            g_array_append_val(fds, fd);
        }
    } else if (g_str_has_prefix(norm, "tcp:") && strchr(norm + 4, ':')) {
        fd = monitor_listen_tcp(norm + 4, fds, errp);
    } else {
        fd = shardvm_error_set(errp, -EINVAL, "-qmp: unsupported address "
                               "'%s'", addr);
    }
    if (fd < 0) {
        g_array_unref(fds);
        g_free(norm);
        return fd;
    }
    /* One listener per socket (a tcp address may have several). */
    for (guint i = 0; i < fds->len; i++) {
        MonitorListener *l = g_new0(MonitorListener, 1);
        l->mon = mon;
        l->fd = g_array_index(fds, int, i);
        if (g_str_has_prefix(norm, "unix:")) {
            l->unlink_path = g_strdup(norm + 5);
        }
        g_ptr_array_add(mon->listeners, l);
        if (!mon->accept_paused) {
            main_loop_set_fd_handler(l->fd, monitor_accept, NULL, l);
        }
    }
    g_array_unref(fds);
    g_free(norm);
    if (mon->spare_fd < 0) {
        mon->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    return 0;
}

void monitor_free(Monitor *mon)
{
    if (!mon) {
        return;
    }
    for (guint i = 0; i < mon->listeners->len; i++) {
        MonitorListener *l = g_ptr_array_index(mon->listeners, i);
        main_loop_set_fd_handler(l->fd, NULL, NULL, NULL);
        close(l->fd);
        if (l->unlink_path) {
            unlink(l->unlink_path);
            g_free(l->unlink_path);
        }
        g_free(l);
    }
    g_ptr_array_set_size(mon->listeners, 0);
    mon->accept_paused = false;
    while (mon->clients->len > 0) {
        monitor_client_free(g_ptr_array_index(mon->clients,
                                              mon->clients->len - 1));
    }
    if (mon->spare_fd >= 0) {
        close(mon->spare_fd);
    }
    if (mon->reap_bh) {
        aio_bh_delete(mon->reap_bh);
    }
    /* Sessions made with qmp_session_new() directly belong to their
     * creator, who must free them first. */
    g_assert(mon->sessions->len == 0);
    g_ptr_array_free(mon->sessions, TRUE);
    g_ptr_array_free(mon->listeners, TRUE);
    g_ptr_array_free(mon->clients, TRUE);
    g_free(mon);
}
