/*
 * isa-debug-exit (QEMU's -device isa-debug-exit,iobase=0xf4,iosize=0x04):
 * a guest write of value v to the port asks the VMM to exit with status
 * (v << 1) | 1, so a test guest can report success or failure through the
 * process exit code.
 */
#ifndef SHARDVM_DEBUG_EXIT_H
#define SHARDVM_DEBUG_EXIT_H

#include "shardvm/memory.h"

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * DebugExitFunc: the guest wrote: @status is the process exit status QEMU
 * gives for it, ((value << 1) | 1) & 0xff (0xffffffff -> 255,
 * 0x40000000 -> 1: always odd, never 0).  Called on the writing vCPU's
 * thread, no lock held (the region is lock-free); typically records the
 * status and calls main_loop_request_shutdown().  Only the first write is
 * reported.
 */
typedef void DebugExitFunc(void *opaque, unsigned status);

/* debug_exit_status_of: the exit status for a guest write of @value. */
static inline unsigned debug_exit_status_of(uint64_t value)
{
    return (unsigned)((((uint32_t)value << 1) | 1) & 0xff);
}

typedef struct DebugExit DebugExit;

/*
 * debug_exit_new: add the device's region [@iobase, @iobase + @iosize) to
 * the port space @pio.  Returns the device (debug_exit_free()) or NULL
 * with @errp set (e.g. the ports are taken).  Main-loop thread.
 */
DebugExit *debug_exit_new(AddressSpace *pio, uint16_t iobase,
                          uint16_t iosize, DebugExitFunc *fn, void *opaque,
                          GError **errp);

/* debug_exit_free: remove the region (waits for vCPUs inside it) and
 * free.  NULL is ignored.  Main-loop thread. */
void debug_exit_free(DebugExit *d);

/*
 * debug_exit_get_status: true when the guest has written (then *@status is
 * the exit status of the first write), false when it has not.  Any thread.
 */
bool debug_exit_get_status(DebugExit *d, unsigned *status);

#ifdef __cplusplus
}
#endif

#endif
