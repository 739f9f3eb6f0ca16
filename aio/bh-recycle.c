/*
 * Recycling of one-shot BH blocks.
 *
 * aio_bh_schedule_oneshot() is the cross-thread "run this there" call, and
 * a block allocated by the producer and freed by the home thread made
 * malloc/free the largest cost of a cross-thread wake-up.  Instead:
 *   - the home thread collects the one-shots it ran in a private batch and
 *     hands the batch back to its context with one CAS (ctx->recycle, a
 *     Treiber stack pushed only by the home thread);
 *   - a producer whose thread-local cache is empty takes the context's
 *     whole stack with one exchange into its cache.  Taking everything
 *     (never popping one node) is what keeps the stack free of ABA.
 * Blocks are plain memory: a producer may use a block from one context for
 * another.  The stack is bounded; beyond the bound blocks are freed.  Under
 * ASan nothing is recycled, so a use after free stays visible.
 */
#include "aio-internal.h"

#define RECYCLE_MAX 4096 /* blocks parked per context, roughly */
#define RECYCLE_BATCH 64 /* blocks per hand-back */

#if defined(__SANITIZE_ADDRESS__)
#define RECYCLE_ENABLED 0
#else
#define RECYCLE_ENABLED 1
#endif

/* This thread's spare blocks; freed when the thread exits. */
typedef struct BHCache {
    AioBH *head;
} BHCache;

static __thread BHCache bh_cache;

static void bh_cache_free(gpointer p)
{
    BHCache *c = p;

    while (c->head) {
        AioBH *next = atomic_load_explicit(&c->head->next, memory_order_relaxed);
        g_free(c->head);
        c->head = next;
    }
}

/* Registers the thread-exit destructor of bh_cache once per thread. */
static GPrivate bh_cache_key = G_PRIVATE_INIT(bh_cache_free);

AioBH *bh_recycle_alloc(AioContext *ctx)
{
    AioBH *bh = bh_cache.head;

    if (!RECYCLE_ENABLED) {
        return NULL;
    }
    if (!bh) {
        if (!atomic_load_explicit(&ctx->recycle, memory_order_relaxed)) {
            return NULL;
        }
        /* Acquire: pairs with the release CAS in bh_recycle_flush(). */
        bh = atomic_exchange_explicit(&ctx->recycle, NULL, memory_order_acquire);
        if (!bh) {
            return NULL;
        }
        atomic_store_explicit(&ctx->recycle_n, 0, memory_order_relaxed);
        if (!g_private_get(&bh_cache_key)) {
            g_private_set(&bh_cache_key, &bh_cache);
        }
    }
    bh_cache.head = atomic_load_explicit(&bh->next, memory_order_relaxed);
    return bh;
}

void bh_recycle_flush(AioContext *ctx)
{
    AioBH *head;

    if (!ctx->recycle_local) {
        return;
    }
    if (atomic_load_explicit(&ctx->recycle_n, memory_order_relaxed) >= RECYCLE_MAX) {
        /* Nobody is taking them: give the memory back. */
        bh_recycle_free_list(ctx->recycle_local);
    } else {
        head = atomic_load_explicit(&ctx->recycle, memory_order_relaxed);
        do {
            atomic_store_explicit(&ctx->recycle_local_tail->next, head,
                                  memory_order_relaxed);
        } while (!atomic_compare_exchange_weak_explicit(&ctx->recycle, &head,
                                                        ctx->recycle_local,
                                                        memory_order_release,
                                                        memory_order_relaxed));
        atomic_fetch_add_explicit(&ctx->recycle_n, ctx->recycle_local_n,
                                  memory_order_relaxed);
    }
    ctx->recycle_local = ctx->recycle_local_tail = NULL;
    ctx->recycle_local_n = 0;
}

void bh_recycle_put(AioContext *ctx, AioBH *bh)
{
    if (!RECYCLE_ENABLED) {
        g_free(bh);
        return;
    }
    atomic_store_explicit(&bh->next, ctx->recycle_local, memory_order_relaxed);
    if (!ctx->recycle_local) {
        ctx->recycle_local_tail = bh;
    }
    ctx->recycle_local = bh;
    if (++ctx->recycle_local_n >= RECYCLE_BATCH) {
        bh_recycle_flush(ctx);
    }
}

void bh_recycle_free_list(AioBH *bh)
{
    while (bh) {
        AioBH *next = atomic_load_explicit(&bh->next, memory_order_relaxed);
        g_free(bh);
        bh = next;
    }
}

void bh_recycle_destroy(AioContext *ctx)
{
    bh_recycle_free_list(ctx->recycle_local);
    ctx->recycle_local = ctx->recycle_local_tail = NULL;
    ctx->recycle_local_n = 0;
    bh_recycle_free_list(atomic_exchange(&ctx->recycle, NULL));
}
