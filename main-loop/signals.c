/*
 * Signals of the main loop, handled synchronously as an fd handler of the
 * fd-handler context, never in an asynchronous handler:
 *  - SIGTERM, SIGINT, SIGHUP: orderly shutdown (SHUTDOWN_HOST_SIGNAL);
 *  - SIGBUS: report and shut down (SHUTDOWN_ERROR).  Only a process-directed
 *    SIGBUS (kill(2), or a memory-failure notice, BUS_MCEERR_AO) arrives
 *    here; a SIGBUS raised by a thread's own faulting access is forced on
 *    that thread by the kernel regardless of masks and kills the process;
 *  - SIGIO, SIGALRM: counted and otherwise ignored (nothing in shardvm
 *    uses O_ASYNC or alarm(); a stray one must not kill the VMM, which
 *    their default action would).
 * The vCPU kick signal (SIGUSR1) is deliberately not in the set: each vCPU
 * thread unblocks it for itself and it must never be consumed here.
 *
 * Two paths feed the same handler with struct signalfd_siginfo records:
 * a signalfd, or (no signalfd, or forced) a compat thread blocked in
 * sigwaitinfo() that writes each record into a pipe.  Every thread blocks
 * these signals (the main thread here, shardvm threads from birth), so a
 * process-directed one stays pending until one of the two paths takes it.
 */
#include "main-loop-internal.h"
#include "shardvm/error.h"
#include "shardvm/thread.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

static const int ml_signals[] = {
    SIGTERM, SIGINT, SIGHUP, SIGBUS, SIGIO, SIGALRM,
};

/* Signals seen by the handler, per signal number; any thread reads. */
static atomic_ulong sig_counts[_NSIG];

/* State of the signal paths; main-loop thread between init and cleanup. */
static struct {
    AioContext *fd_ctx;
    sigset_t set;      /* ml_signals */
    sigset_t old_mask; /* the main thread's mask before init (on failure) */
    int read_fd;       /* signalfd, or the pipe's read end */
    bool active;       /* between a successful init and cleanup */
    /* compat thread only */
    bool compat;
    int write_fd;         /* pipe's write end; the compat thread's */
    pthread_t thread;
    atomic_bool stopping; /* set before the wake-up kill */
} sig;

static void ml_signal_dispatch(const struct signalfd_siginfo *si)
{
    int signo = (int)si->ssi_signo;

    g_assert(bql_locked());
    if (signo > 0 && signo < _NSIG) {
        atomic_fetch_add(&sig_counts[signo], 1);
    }
    switch (signo) {
    case SIGTERM:
    case SIGINT:
    case SIGHUP:
        ml_request_shutdown_signal(SHUTDOWN_HOST_SIGNAL, signo);
        break;
    case SIGBUS:
        g_printerr("shardvm: SIGBUS (code %d, address 0x%llx, from pid %u):"
                   " shutting down\n", si->ssi_code,
                   (unsigned long long)si->ssi_addr, si->ssi_pid);
        main_loop_request_shutdown(SHUTDOWN_ERROR);
        break;
    default:
        /* SIGIO, SIGALRM: counted above, nothing else to do. */
        break;
    }
}

/* fd handler of the signalfd or the compat pipe: same record format. */
static void ml_signal_read(void *opaque)
{
    struct signalfd_siginfo si;

    for (;;) {
        ssize_t n = read(sig.read_fd, &si, sizeof(si));
        if (n == sizeof(si)) {
            ml_signal_dispatch(&si);
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        /* EAGAIN: drained.  A short read cannot happen: signalfd returns
         * whole records and pipe writes below PIPE_BUF are atomic. */
        break;
    }
}

static void *ml_signal_thread(void *opaque)
{
    siginfo_t info;

    for (;;) {
        int signo = sigwaitinfo(&sig.set, &info);
        if (atomic_load(&sig.stopping)) {
            break;
        }
        if (signo < 0) {
            continue; /* EINTR */
        }
        struct signalfd_siginfo si = {
            .ssi_signo = (uint32_t)signo,
            .ssi_errno = info.si_errno,
            .ssi_code = info.si_code,
            .ssi_pid = (uint32_t)info.si_pid,
            .ssi_uid = info.si_uid,
        };
        if (signo == SIGBUS) {
            si.ssi_addr = (uint64_t)(uintptr_t)info.si_addr;
        }
        ssize_t n;
        do {
            n = write(sig.write_fd, &si, sizeof(si));
        } while (n < 0 && errno == EINTR);
    }
    return NULL;
}

static int ml_signals_start_compat(GError **errp)
{
    int fds[2];

    if (pipe2(fds, O_CLOEXEC) < 0) {
        return shardvm_error_set(errp, -errno, "signal pipe: %s",
                                 strerror(errno));
    }
    /* Reader non-blocking (the handler drains it); the writer blocks, so a
     * busy main loop delays signals instead of losing them. */
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    sig.read_fd = fds[0];
    sig.write_fd = fds[1];
    sig.compat = true;
    atomic_store(&sig.stopping, false);
    int r = shardvm_thread_create(&sig.thread, "sigwait", ml_signal_thread,
                                  NULL, errp);
    if (r < 0) {
        close(fds[0]);
        close(fds[1]);
        sig.compat = false;
        return r;
    }
    return 0;
}

int ml_signals_init(AioContext *fd_ctx, bool force_compat, GError **errp)
{
    const char *env = getenv("SHARDVM_SIGNAL_COMPAT");
    int r;

    sig.fd_ctx = fd_ctx;
    sig.read_fd = sig.write_fd = -1;
    sigemptyset(&sig.set);
    for (size_t i = 0; i < G_N_ELEMENTS(ml_signals); i++) {
        sigaddset(&sig.set, ml_signals[i]);
    }
    for (int i = 0; i < _NSIG; i++) {
        atomic_store(&sig_counts[i], 0);
    }
    /* Block before anything else can be delivered to this thread; the
     * threads started from here on inherit the mask. */
    pthread_sigmask(SIG_BLOCK, &sig.set, &sig.old_mask);

    if (env && strcmp(env, "1") == 0) {
        force_compat = true;
    }
    if (!force_compat) {
        sig.read_fd = signalfd(-1, &sig.set, SFD_NONBLOCK | SFD_CLOEXEC);
    }
    if (sig.read_fd < 0) {
        r = ml_signals_start_compat(errp);
        if (r < 0) {
            sig.read_fd = sig.write_fd = -1;
            pthread_sigmask(SIG_SETMASK, &sig.old_mask, NULL);
            return r;
        }
    }
    aio_set_fd_handler(fd_ctx, sig.read_fd, ml_signal_read, NULL, NULL,
                       NULL, NULL);
    sig.active = true;
    return 0;
}

int main_loop_poll_signals(void)
{
    /*
     * Startup runs with the signals blocked and without the loop: take
     * what is pending now (the signalfd, or the compat pipe, is
     * non-blocking), as the fd handler would.
     */
    if (sig.active) {
        g_assert(bql_locked());
        ml_signal_read(NULL);
    }
    return main_loop_shutdown_requested();
}

void ml_signals_cleanup(void)
{
    if (!sig.active) {
        return; /* ml_signals_init() failed */
    }
    sig.active = false;
    aio_set_fd_handler(sig.fd_ctx, sig.read_fd, NULL, NULL, NULL, NULL,
                       NULL);
    if (sig.compat) {
        /* Flag first, then a thread-directed signal from its wait set
         * wakes sigwaitinfo(); the thread sees the flag and leaves. */
        atomic_store(&sig.stopping, true);
        pthread_kill(sig.thread, SIGALRM);
        pthread_join(sig.thread, NULL);
        close(sig.write_fd);
        sig.compat = false;
    }
    close(sig.read_fd);
    sig.read_fd = sig.write_fd = -1;
    /* The signals stay blocked: one arriving during teardown stays
     * pending instead of killing the process with its default action. */
}

bool main_loop_signalfd_active(void)
{
    return sig.read_fd >= 0 && !sig.compat;
}

unsigned long main_loop_signal_count(int signo)
{
    if (signo <= 0 || signo >= _NSIG) {
        return 0;
    }
    return atomic_load(&sig_counts[signo]);
}
