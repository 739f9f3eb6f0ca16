/*
 * The first stop event of a machine, kept as ONE atomic word so that the
 * event and its value are decided together: the first of "the guest wrote
 * isa-debug-exit", "a vCPU stopped (triple fault, internal error...)" and
 * "the host asked to stop (signal, error)" wins, whatever races with it,
 * and the exit status is derived from that winner alone.
 *
 * Pure (no KVM, no main loop), so tests drive it directly; system/machine.c
 * uses it for build/shardvm's exit status (docs/usage.md, "Exit status").
 */
#ifndef SHARDVM_MACHINE_EVENT_H
#define SHARDVM_MACHINE_EVENT_H

#ifdef __cplusplus
#include <atomic>
#else
#include <stdatomic.h>
#endif
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum MachineEventKind {
    MACHINE_EVENT_NONE = 0,
    MACHINE_EVENT_DEBUG_EXIT = 1, /* value: the exit status (0..255) */
    MACHINE_EVENT_VCPU_STOP = 2,  /* value: a VMStopReason */
    MACHINE_EVENT_HOST = 3,       /* value: a SHUTDOWN_* reason */
} MachineEventKind;

/* kind << 24 | value; 0 until the first event.  Any thread. */
typedef struct MachineEvent {
#ifdef __cplusplus
    std::atomic<uint32_t> word;
#else
    _Atomic uint32_t word;
#endif
} MachineEvent;

/* machine_event_init: no event yet.  Before any thread uses @e. */
void machine_event_init(MachineEvent *e);

/*
 * machine_event_record: record @kind with @value (< 2^24) if no event is
 * recorded yet.  Returns true when this call was the first (it won).
 * One compare-and-swap; any thread, lock-free, async-signal-safe.
 */
bool machine_event_record(MachineEvent *e, MachineEventKind kind,
                          uint32_t value);

/* machine_event_get: the first event (its value in *@value), or NONE. */
MachineEventKind machine_event_get(MachineEvent *e, uint32_t *value);

/*
 * machine_event_exit_status: the process exit status once the main loop
 * stopped with @shutdown_reason (SHUTDOWN_*; for SHUTDOWN_HOST_SIGNAL,
 * @signo says which).  First records the host reason, so an event that a
 * vCPU records later loses.  Then: debug-exit -> its status; guest triple
 * fault, reset or power-off -> 0; a vCPU error -> 1; a signal or monitor
 * -> 0; a host error (e.g. SIGBUS) -> 1.  *@msg gets the one-line reason
 * to print on stderr (g_free()), or NULL when there is none.  Any thread.
 */
int machine_event_exit_status(MachineEvent *e, int shutdown_reason,
                              int signo, char **msg);

/*
 * machine_event_shutdown_reason: after machine_event_exit_status(), the
 * QMP SHUTDOWN event's "reason" for the event that won (QEMU 7.2's
 * ShutdownCause names), *@guest its "guest" member; NULL when no SHUTDOWN
 * is due: isa-debug-exit (QEMU exits inside the port write, no event), a
 * monitor "quit" (the monitor sent it with the reply), or no event.
 *   guest power-off / system_powerdown -> "guest-shutdown", guest true
 *   triple fault or guest reset (shardvm acts as -no-reboot) ->
 *     "guest-reset", guest true
 *   SIGTERM/SIGINT/SIGHUP -> "host-signal"; a vCPU or host error ->
 *     "host-error"; guest false.
 * Any thread.
 */
const char *machine_event_shutdown_reason(MachineEvent *e, bool *guest);

#ifdef __cplusplus
}
#endif

#endif
