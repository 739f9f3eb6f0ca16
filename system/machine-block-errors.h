/*
 * The machine's side of werror=/rerror= (issue 13): the BlockErrorHandler
 * that block devices report failed requests to.  It emits QMP's
 * BLOCK_IO_ERROR (QEMU 7.2's members), stops the VM for the "stop"
 * action (then STOP), and on "cont" runs the devices' resume functions
 * (they retry what they kept).  Private to system/.
 */
#ifndef SHARDVM_MACHINE_BLOCK_ERRORS_H
#define SHARDVM_MACHINE_BLOCK_ERRORS_H

#include "shardvm/block.h"
#include "shardvm/monitor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct MachineBlockErrors MachineBlockErrors;

/*
 * How the machine is reached, main thread + BQL: @stop_vm pauses the
 * vCPUs for an I/O error and returns true if it did (false: not running);
 * @monitor is the monitor to emit to, or NULL.
 */
typedef struct MachineBlockErrorsOps {
    bool (*stop_vm)(void *opaque);
    Monitor *(*monitor)(void *opaque);
} MachineBlockErrorsOps;

/* machine_block_errors_new / _free: main thread (the free drops events
 * not yet delivered; call it after the devices are gone). */
MachineBlockErrors *machine_block_errors_new(const MachineBlockErrorsOps *ops,
                                             void *opaque);
void machine_block_errors_free(MachineBlockErrors *be);

/* The handler to put in DeviceHost.block_errors (lives as long as @be). */
const BlockErrorHandler *machine_block_errors_handler(MachineBlockErrors *be);

/* machine_block_errors_resume: run every registered resume function
 * (before the vCPUs resume).  Main thread, BQL. */
void machine_block_errors_resume(MachineBlockErrors *be);

/* machine_block_errors_event_data: BLOCK_IO_ERROR's "data" for @ev
 * (json_object_unref).  Pure. */
JsonObject *machine_block_errors_event_data(const BlockIOErrorEvent *ev);

#ifdef __cplusplus
}
#endif

#endif
