/*
 * isa-debug-exit: see include/shardvm/debug-exit.h.
 *
 * The region is lock-free (no IO_REGION_NEEDS_BQL): the write only records
 * a status with one atomic compare-and-swap and calls back, so it never
 * waits behind the main loop.
 */
#include "shardvm/debug-exit.h"

#include <stdatomic.h>

struct DebugExit {
    AddressSpace *pio;      /* constant */
    IORegion *region;       /* main-loop thread */
    DebugExitFunc *fn;      /* constant */
    void *opaque;           /* constant */
    atomic_int status;      /* -1 until the first write; then fixed */
};

static void debug_exit_write(void *opaque, uint64_t offset, uint64_t value,
                             unsigned size)
{
    DebugExit *d = opaque;
    int expected = -1;
    /* QEMU computes the status in an int and hands it to exit(). */
    int status = (int)(((uint32_t)value << 1) | 1);

    if (atomic_compare_exchange_strong(&d->status, &expected, status)) {
        d->fn(d->opaque, status);
    }
}

static const IORegionOps debug_exit_ops = {
    .read = NULL, /* reads return all ones, as on QEMU */
    .write = debug_exit_write,
};

DebugExit *debug_exit_new(AddressSpace *pio, uint16_t iobase,
                          uint16_t iosize, DebugExitFunc *fn, void *opaque,
                          GError **errp)
{
    DebugExit *d = g_new0(DebugExit, 1);

    d->pio = pio;
    d->fn = fn;
    d->opaque = opaque;
    atomic_init(&d->status, -1);
    d->region = address_space_add(pio, "isa-debug-exit", iobase, iosize,
                                  &debug_exit_ops, d, 0, errp);
    if (!d->region) {
        g_free(d);
        return NULL;
    }
    return d;
}

void debug_exit_free(DebugExit *d)
{
    if (d) {
        address_space_remove(d->pio, d->region);
        g_free(d);
    }
}

int debug_exit_status(DebugExit *d)
{
    return atomic_load(&d->status);
}
