/*
 * The BQL (big lock): a plain mutex plus a per-thread "do I hold it" flag,
 * so that code needing it can assert it.  See include/shardvm/main-loop.h.
 */
#include "shardvm/main-loop.h"

#include <pthread.h>

static pthread_mutex_t bql = PTHREAD_MUTEX_INITIALIZER;
/* Whether the calling thread holds bql; the thread's own. */
static __thread bool bql_held;

void bql_lock(void)
{
    if (bql_held) {
        g_error("bql_lock: the BQL is not recursive and this thread holds it");
    }
    pthread_mutex_lock(&bql);
    bql_held = true;
}

void bql_unlock(void)
{
    if (!bql_held) {
        g_error("bql_unlock: this thread does not hold the BQL");
    }
    bql_held = false;
    pthread_mutex_unlock(&bql);
}

bool bql_locked(void)
{
    return bql_held;
}
