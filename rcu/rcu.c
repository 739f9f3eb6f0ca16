/*
 * RCU set-up on liburcu's memb flavour: the call_rcu thread, per-thread
 * registration and the drain barrier.  See include/shardvm/rcu.h.
 */
#include "shardvm/rcu.h"
#include "shardvm/thread.h"

#include <glib.h>
#include <pthread.h>
#include <signal.h>

/* Whether the calling thread is registered with liburcu; the thread's own. */
static __thread bool rcu_registered;

#ifdef SHARDVM_RCU_TSAN
char shardvm_rcu_tsan_gp;
static char rcu_tsan_done; /* callbacks -> shardvm_rcu_drain() */

typedef struct RcuTsanCall {
    struct rcu_head rcu;
    struct rcu_head *head;
    void (*func)(struct rcu_head *head);
} RcuTsanCall;

static void rcu_tsan_trampoline(struct rcu_head *rcu)
{
    RcuTsanCall *c = caa_container_of(rcu, RcuTsanCall, rcu);

    /* Pairs with the release in shardvm_rcu_tsan_call_rcu(): liburcu's
     * queue hands @c over with atomics TSan does not see. */
    __tsan_acquire(c);
    /* The grace period is over: readers' sections happen before this. */
    __tsan_acquire(&shardvm_rcu_tsan_gp);
    c->func(c->head);
    __tsan_release(&rcu_tsan_done);
    g_free(c);
}

void shardvm_rcu_tsan_call_rcu(struct rcu_head *head,
                               void (*func)(struct rcu_head *head))
{
    RcuTsanCall *c = g_new0(RcuTsanCall, 1);

    c->head = head;
    c->func = func;
    __tsan_release(c);
    urcu_memb_call_rcu(&c->rcu, rcu_tsan_trampoline);
}
#endif

void shardvm_rcu_register_thread(void)
{
    if (!rcu_registered) {
        urcu_memb_register_thread();
        rcu_registered = true;
    }
}

void shardvm_rcu_unregister_thread(void)
{
    if (rcu_registered) {
        urcu_memb_unregister_thread();
        rcu_registered = false;
    }
}

/* Runs once on the call_rcu thread: names it from the inside. */
static void rcu_name_thread(struct rcu_head *head)
{
    shardvm_thread_set_name("call_rcu");
    g_free(head);
}

static gpointer rcu_init_once(gpointer unused)
{
    sigset_t all, old;

    /*
     * liburcu starts the call_rcu thread from the first thread that asks
     * for the default data; the thread inherits that thread's signal mask.
     * Block everything around the creation so that process-directed
     * signals (SIGTERM, SIGIO...) can never be delivered there: they
     * belong to the main loop's signalfd or compat thread.
     */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    struct call_rcu_data *crdp = get_default_call_rcu_data();
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    g_assert(crdp != NULL);

    /*
     * liburcu 0.13 has no "set default call_rcu data" call; the default
     * one created above is the one every registered thread's call_rcu()
     * uses.  Name it from a callback, then wait for that callback.
     */
    call_rcu(g_new0(struct rcu_head, 1), rcu_name_thread);
    rcu_barrier();
    return NULL;
}

void shardvm_rcu_init(void)
{
    static GOnce once = G_ONCE_INIT;

    shardvm_rcu_register_thread();
    g_once(&once, rcu_init_once, NULL);
}

void shardvm_rcu_drain(void)
{
    rcu_barrier();
#ifdef SHARDVM_RCU_TSAN
    __tsan_acquire(&rcu_tsan_done);
#endif
}
