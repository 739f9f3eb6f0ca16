/*
 * TEMPORARY weak stand-ins for the RcuArray (rcu/) and BQL (main-loop/)
 * functions that the `threads` branch implements.  They let vcpu/ build
 * and be tested before that branch lands; being weak, the real ones win
 * as soon as they are linked in.  Remove this file once rcu/ and
 * main-loop/ are merged.
 */
#include "shardvm/main-loop.h"
#include "shardvm/rcu.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define WEAK __attribute__((weak))

static pthread_mutex_t fallback_bql = PTHREAD_MUTEX_INITIALIZER;
static __thread bool fallback_bql_held;

WEAK void bql_lock(void)
{
    pthread_mutex_lock(&fallback_bql);
    fallback_bql_held = true;
}

WEAK void bql_unlock(void)
{
    fallback_bql_held = false;
    pthread_mutex_unlock(&fallback_bql);
}

WEAK bool bql_locked(void)
{
    return fallback_bql_held;
}

WEAK RcuArray *rcu_array_new(size_t len, size_t elem_size,
                             void (*elem_destroy)(void *elem))
{
    RcuArray *a = calloc(1, sizeof(*a) + len * elem_size);
    if (!a) {
        abort();
    }
    a->len = len;
    a->elem_size = elem_size;
    a->elem_destroy = elem_destroy;
    return a;
}

WEAK void rcu_array_free_now(RcuArray *a)
{
    if (!a) {
        return;
    }
    if (a->elem_destroy) {
        for (size_t i = 0; i < a->len; i++) {
            a->elem_destroy(rcu_array_at(a, i));
        }
    }
    free(a);
}

static void fallback_array_free_rcu(struct rcu_head *head)
{
    rcu_array_free_now(caa_container_of(head, RcuArray, rcu));
}

WEAK void rcu_array_publish(RcuArray **slot, RcuArray *a)
{
    RcuArray *old = rcu_xchg_pointer(slot, a);
    if (old) {
        call_rcu(&old->rcu, fallback_array_free_rcu);
    }
}

WEAK void shardvm_rcu_init(void)
{
    rcu_register_thread();
}

WEAK void shardvm_rcu_drain(void)
{
    rcu_barrier();
}
