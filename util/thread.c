/* Thread creation with naming, signal mask and RCU registration. */
#include "shardvm/thread.h"
#include "shardvm/error.h"
#include "shardvm/rcu.h"

#include <errno.h>
#include <signal.h>
#include <string.h>

typedef struct ThreadStart {
    void *(*fn)(void *);
    void *arg;
    char name[16];
} ThreadStart;

void shardvm_thread_set_name(const char *name)
{
    char buf[16];
    g_strlcpy(buf, name, sizeof(buf));
    pthread_setname_np(pthread_self(), buf);
}

static void *thread_trampoline(void *opaque)
{
    ThreadStart ts = *(ThreadStart *)opaque;
    g_free(opaque);

    shardvm_thread_set_name(ts.name);
    shardvm_rcu_register_thread();
    void *ret = ts.fn(ts.arg);
    shardvm_rcu_unregister_thread();
    return ret;
}

int shardvm_thread_create(pthread_t *thread, const char *name,
                          void *(*fn)(void *), void *arg, GError **errp)
{
    sigset_t all, old;
    ThreadStart *ts = g_new0(ThreadStart, 1);

    ts->fn = fn;
    ts->arg = arg;
    g_strlcpy(ts->name, name, sizeof(ts->name));

    /*
     * The new thread inherits the mask: block everything, so that process
     * directed signals (SIGTERM, SIGIO, ...) go to the main loop's
     * signalfd and never interrupt a worker.  Faults raised by the thread
     * itself (SIGSEGV, SIGBUS, SIGFPE, SIGILL) are delivered regardless.
     */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = pthread_create(thread, NULL, thread_trampoline, ts);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0) {
        g_free(ts);
        return shardvm_error_set(errp, -r, "cannot start thread '%s': %s",
                                 name, strerror(r));
    }
    /* Name it from here too, so the name is visible (ps -T, /proc) as soon
     * as we return; the thread's own call may come later.  A thread that
     * already exited makes this fail harmlessly. */
    char buf[16];
    g_strlcpy(buf, name, sizeof(buf));
    pthread_setname_np(*thread, buf);
    return 0;
}
