/*
 * Machine: the PC that build/shardvm assembles from its command line: a
 * KVM VM with RAM and vCPUs, the COM1 UART, the optional isa-debug-exit,
 * the IOThreads of -object iothread, PCI bus 0 (host bridge at 00.0, always)
 * with the -device PCI devices, and a multiboot kernel loaded with
 * every vCPU at its entry point (COMMON.md's SMP start protocol).
 *
 * Order (QEMU's): machine_new() builds VM, memory, devices, IOThreads and
 * loads the kernel; machine_start() starts the vCPUs and serial input;
 * main_loop_run() runs until a shutdown request; machine_free() tears down
 * in reverse.  All on the main-loop thread with the BQL held.
 */
#ifndef SHARDVM_MACHINE_H
#define SHARDVM_MACHINE_H

#include "shardvm/options.h"

#include <glib.h>

#ifdef __cplusplus
extern "C" {
#endif

/* SMP start protocol values (COMMON.md). */
#define MACHINE_SMP_SIGNATURE 0x4D564853u /* "SHVM" */

typedef struct Machine Machine;

/*
 * machine_new: build the machine described by @o (not kept after the
 * call).  Returns NULL with a message in @errp when something cannot be
 * built (no /dev/kvm, an unusable kernel, a serial file that cannot be
 * created...).  Main-loop thread, BQL held, after main_loop_init().
 */
Machine *machine_new(const ShardvmOptions *o, GError **errp);

/* machine_start: start the vCPUs and serial input.  Returns 0 or a
 * negative errno (fills @errp).  Main-loop thread, BQL held. */
int machine_start(Machine *m, GError **errp);

/*
 * machine_exit_status: the process exit status for a main loop that
 * stopped with @shutdown_reason (SHUTDOWN_*, include/shardvm/main-loop.h):
 * isa-debug-exit's (value << 1) | 1; 0 for a guest reset, triple fault or
 * power-off and for SIGTERM/SIGINT/SIGHUP; 1 for a vCPU or device error.
 * Also prints a one-line reason on stderr where QEMU would.  Main-loop
 * thread.
 */
int machine_exit_status(Machine *m, int shutdown_reason);

/*
 * machine_monitor_start: the QMP monitor of -qmp / -chardev + -mon, if
 * any, serving this machine (issue 12 hook: called after main_loop_init()
 * and machine_new(), before machine_start()).  Returns 0 or a negative
 * errno with @errp set.  Main-loop thread, BQL held.
 */
int machine_monitor_start(Machine *m, const ShardvmOptions *o,
                          GError **errp);

/* machine_get_monitor: the monitor, or NULL (to emit events). */
typedef struct Monitor Monitor;
Monitor *machine_get_monitor(Machine *m);

/* machine_free: stop the vCPUs, then free devices, IOThreads and the VM.
 * NULL is ignored.  Main-loop thread, BQL held. */
void machine_free(Machine *m);

#ifdef __cplusplus
}
#endif

#endif
