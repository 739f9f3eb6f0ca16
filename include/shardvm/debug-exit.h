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
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * DebugExitFunc: the guest wrote: @status is (value << 1) | 1 (not yet
 * truncated to 8 bits).  Called on the writing vCPU's thread, no lock held
 * (the region is lock-free); typically records the status and calls
 * main_loop_request_shutdown().  Only the first write is reported.
 */
typedef void DebugExitFunc(void *opaque, int status);

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

/* debug_exit_status: the status requested so far, or -1. */
int debug_exit_status(DebugExit *d);

#ifdef __cplusplus
}
#endif

#endif
