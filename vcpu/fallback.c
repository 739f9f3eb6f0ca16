/*
 * TEMPORARY weak stand-ins for the BQL functions of main-loop/ (branch
 * `threads`).  They let vcpu/ build and be tested before main-loop/ can
 * be merged (it needs the AioContext); being weak, the real ones win as
 * soon as they are linked in.  Remove this file once main-loop/ is merged.
 */
#include "shardvm/main-loop.h"

#include <pthread.h>
#include <stdbool.h>

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
