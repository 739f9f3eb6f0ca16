/*
 * The main loop: the process's main thread (named "shardvm") iterating one
 * GMainContext to which two sources are attached, the main AioContext
 * (BHs, timers, event notifiers of devices bound to the main loop) and a
 * separate fd-handler context (QEMU's qemu_set_fd_handler analog: serial
 * input, the QMP monitor, the signalfd).
 *
 * BQL: the big lock.  The main loop holds it at all times except while it
 * is blocked in poll; any thread that touches state not bound to an
 * AioContext of its own takes it.  There is one main loop per process
 * (like QEMU): the functions below act on that one.
 */
#ifndef SHARDVM_MAIN_LOOP_H
#define SHARDVM_MAIN_LOOP_H

#include "shardvm/aio.h"

#include <glib.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * main_loop_init: make the calling thread the main-loop thread (names it
 * "shardvm", registers it with RCU), create the main AioContext, the fd
 * handler context and attach both to the GMainContext (glib's default
 * one), block the signals the main loop handles in this thread and install
 * their handler (signalfd, or the compat thread "sigwait" when signalfd
 * fails, @force_signal_compat is set or the environment has
 * SHARDVM_SIGNAL_COMPAT=1).  Clears an earlier shutdown request.  Takes the
 * BQL for the caller.  Returns 0 or a negative errno (and fills @errp);
 * -EBUSY if the main loop is already initialised.  Call it before starting
 * other threads that do not block signals themselves.
 *
 * Signals: SIGTERM/SIGINT/SIGHUP request SHUTDOWN_HOST_SIGNAL (see
 * main_loop_shutdown_signal()); a process-directed SIGBUS is reported and
 * requests SHUTDOWN_ERROR; SIGIO and SIGALRM are counted and ignored.  They
 * stay blocked in the main thread after main_loop_cleanup().  In compat
 * mode only process-directed signals (kill(2)) are seen: a signal sent to
 * the main thread itself (raise(3), tgkill) stays pending on it.  SIGUSR1
 * (the vCPU kick) is left alone.
 */
int main_loop_init(bool force_signal_compat, GError **errp);

/* main_loop_cleanup: undo main_loop_init() (stops the compat thread).
 * Every fd handler set with main_loop_set_fd_handler() must have been
 * removed.  Main-loop thread, BQL held (released on return). */
void main_loop_cleanup(void);

/* main_loop_get_aio_context: the main AioContext.  Any thread. */
AioContext *main_loop_get_aio_context(void);

/* main_loop_get_gmain_context: the GMainContext the main loop iterates
 * (glib's default context).  Any thread. */
GMainContext *main_loop_get_gmain_context(void);

/*
 * main_loop_set_fd_handler: watch @fd in the main loop's fd-handler context;
 * @read / @write run in the main-loop thread with the BQL held.  Both NULL
 * removes the handler.  Any thread (take the BQL, or be the main loop).
 */
void main_loop_set_fd_handler(int fd, AioFdFunc *read, AioFdFunc *write,
                              void *opaque);

/*
 * main_loop_wait: one iteration: drop the BQL, poll (not at all when
 * @nonblocking), retake the BQL, dispatch.  Main-loop thread, BQL held.
 */
void main_loop_wait(bool nonblocking);

/*
 * main_loop_run: main_loop_wait(false) until a shutdown is requested.
 * Returns the shutdown reason.  Main-loop thread, BQL held.
 */
int main_loop_run(void);

/* Why the main loop stops. */
enum {
    SHUTDOWN_NONE = 0,
    SHUTDOWN_HOST_SIGNAL = 1, /* SIGTERM/SIGINT/SIGHUP */
    SHUTDOWN_GUEST = 2,       /* the guest asked (debug-exit, reset...) */
    SHUTDOWN_HOST_QMP = 3,    /* a monitor command */
    SHUTDOWN_ERROR = 4,       /* an internal or device error */
};

/*
 * main_loop_request_shutdown: ask the main loop to stop with @reason (the
 * first request wins).  Any thread, no lock needed; async-signal-safe.
 */
void main_loop_request_shutdown(int reason);

/* main_loop_shutdown_requested: the pending reason, or SHUTDOWN_NONE.
 * Any thread. */
int main_loop_shutdown_requested(void);

/* main_loop_shutdown_signal: the signal number behind a SHUTDOWN_HOST_SIGNAL
 * request, 0 otherwise.  Any thread. */
int main_loop_shutdown_signal(void);

/*
 * main_loop_poll_signals: handle the signals that are pending now, without
 * waiting and without running the loop, and return the shutdown reason
 * (SHUTDOWN_NONE if none).  Startup (reading the kernel, creating the VM)
 * runs with SIGTERM/SIGINT/SIGHUP blocked and before main_loop_run(); it
 * calls this between steps so a signal ends it promptly.  Before
 * main_loop_init() it only returns the reason.  Main-loop thread, BQL
 * held.
 */
int main_loop_poll_signals(void);

/*
 * main_loop_signal_count: how many @signo the main loop's signal handler
 * has taken since main_loop_init() (tests, statistics).  Any thread.
 */
unsigned long main_loop_signal_count(int signo);

/* main_loop_signalfd_active: true when signals arrive through a signalfd,
 * false when through the compat thread (or before init).  Main-loop thread. */
bool main_loop_signalfd_active(void);

/* BQL.  bql_lock/bql_unlock: any thread; not recursive (aborts if the
 * caller already holds it / does not hold it). */
void bql_lock(void);
void bql_unlock(void);
/* bql_locked: true when the calling thread holds the BQL. */
bool bql_locked(void);

#ifdef __cplusplus
}
#endif

#endif
