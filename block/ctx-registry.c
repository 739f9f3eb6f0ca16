/*
 * Per-AioContext shared driver state (one libaio io context, one io_uring
 * ring per context, shared by every queue of the context).  AioContext has
 * no slot for it, so the block layer keeps a table keyed by (kind, ctx).
 * Entries are created and destroyed only in the context's home thread (the
 * queues' thread); the mutex protects the table itself, which queues of
 * different contexts touch concurrently.
 */
#include "block-int.h"

#include <pthread.h>

typedef struct CtxEntry {
    void *state;
    unsigned refcnt;
} CtxEntry;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static GHashTable *registry[2]; /* guarded by registry_lock; per kind */

void *blk_ctx_state_get(int kind, AioContext *ctx, BlockCtxCreateFunc *create,
                        GError **errp)
{
    CtxEntry *e;
    void *state = NULL;

    g_assert(kind >= 0 && kind < (int)G_N_ELEMENTS(registry));
    pthread_mutex_lock(&registry_lock);
    if (!registry[kind]) {
        registry[kind] = g_hash_table_new_full(NULL, NULL, NULL, g_free);
    }
    e = g_hash_table_lookup(registry[kind], ctx);
    if (!e) {
        state = create(ctx, errp);
        if (state) {
            e = g_new0(CtxEntry, 1);
            e->state = state;
            g_hash_table_insert(registry[kind], ctx, e);
        }
    }
    if (e) {
        e->refcnt++;
        state = e->state;
    }
    pthread_mutex_unlock(&registry_lock);
    return state;
}

void blk_ctx_state_put(int kind, AioContext *ctx,
                       BlockCtxDestroyFunc *destroy)
{
    CtxEntry *e;
    void *state = NULL;

    pthread_mutex_lock(&registry_lock);
    e = g_hash_table_lookup(registry[kind], ctx);
    g_assert(e && e->refcnt > 0);
    if (--e->refcnt == 0) {
        state = e->state;
        g_hash_table_remove(registry[kind], ctx);
        if (g_hash_table_size(registry[kind]) == 0) {
            g_hash_table_unref(registry[kind]);
            registry[kind] = NULL;
        }
    }
    pthread_mutex_unlock(&registry_lock);
    if (state) {
        destroy(state);
    }
}
