/*
 * isa-debug-exit: see include/shardvm/debug-exit.h.
 *
 * The region is lock-free (no IO_REGION_NEEDS_BQL): the write only records
 * a status with one atomic compare-and-swap and calls back, so it never
 * waits behind the main loop.
 */
#include "shardvm/debug-exit.h"

#include <stdatomic.h>

#define DEBUG_EXIT_WRITTEN 0x100u

struct DebugExit {
    AddressSpace *pio;      /* constant */
    IORegion *region;       /* main-loop thread */
    DebugExitFunc *fn;      /* constant */
    void *opaque;           /* constant */
    /*
     * 0 until the first write, then DEBUG_EXIT_WRITTEN | status, fixed.
     * One word, so "written" and the status are published together and
     * no status value can be mistaken for "not written".
     */
    atomic_uint state;
};

static void debug_exit_write(void *opaque, uint64_t offset, uint64_t value,
                             unsigned size)
{
    DebugExit *d = opaque;
    unsigned expected = 0;
    /* QEMU calls exit((value << 1) | 1); the OS keeps the low 8 bits. */
    unsigned status = debug_exit_status_of(value);

    if (atomic_compare_exchange_strong(&d->state, &expected,
                                       DEBUG_EXIT_WRITTEN | status)) {
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
    atomic_init(&d->state, 0);
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

bool debug_exit_get_status(DebugExit *d, unsigned *status)
{
    unsigned v = atomic_load(&d->state);

    if (!(v & DEBUG_EXIT_WRITTEN)) {
        return false;
    }
    *status = v & 0xff;
    return true;
}
