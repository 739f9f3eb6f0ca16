/*
 * The first stop event: see include/shardvm/machine-event.h.
 */
#include "shardvm/machine-event.h"
#include "shardvm/main-loop.h"
#include "shardvm/vm.h"

#include <glib.h>

#define EVENT_SHIFT 24
#define EVENT_VALUE_MASK ((1u << EVENT_SHIFT) - 1)

void machine_event_init(MachineEvent *e)
{
    atomic_init(&e->word, 0);
}

bool machine_event_record(MachineEvent *e, MachineEventKind kind,
                          uint32_t value)
{
    uint32_t none = 0;
    uint32_t w = (uint32_t)kind << EVENT_SHIFT | (value & EVENT_VALUE_MASK);

    /* acq_rel: whoever reads the winner sees what its writer did before
     * (e.g. the serial output written before the debug-exit write). */
    return atomic_compare_exchange_strong_explicit(&e->word, &none, w,
                                                   memory_order_acq_rel,
                                                   memory_order_acquire);
}

MachineEventKind machine_event_get(MachineEvent *e, uint32_t *value)
{
    uint32_t w = atomic_load_explicit(&e->word, memory_order_acquire);

    *value = w & EVENT_VALUE_MASK;
    return (MachineEventKind)(w >> EVENT_SHIFT);
}

static const char *vcpu_stop_name(uint32_t reason)
{
    switch (reason) {
    case VM_STOP_INTERNAL_ERROR: return "KVM internal error";
    case VM_STOP_FAIL_ENTRY: return "failed VM entry";
    case VM_STOP_UNKNOWN_EXIT: return "unhandled exit";
    case VM_STOP_KVM_ERROR: return "KVM_RUN failed";
    default: return "unknown reason";
    }
}

const char *machine_event_shutdown_reason(MachineEvent *e, bool *guest)
{
    uint32_t v;

    *guest = false;
    switch (machine_event_get(e, &v)) {
    case MACHINE_EVENT_VCPU_STOP:
        switch (v) {
        case VM_STOP_GUEST_POWEROFF:
            *guest = true;
            return "guest-shutdown";
        case VM_STOP_GUEST_SHUTDOWN:
        case VM_STOP_GUEST_RESET:
            *guest = true;
            return "guest-reset";
        default:
            return "host-error";
        }
    case MACHINE_EVENT_HOST:
        switch (v) {
        case SHUTDOWN_HOST_SIGNAL:
            return "host-signal";
        case SHUTDOWN_GUEST:
            *guest = true;
            return "guest-shutdown";
        case SHUTDOWN_ERROR:
            return "host-error";
        default:
            return NULL; /* SHUTDOWN_HOST_QMP: sent by the monitor */
        }
    default:
        return NULL;
    }
}

int machine_event_exit_status(MachineEvent *e, int shutdown_reason,
                              int signo, char **msg)
{
    uint32_t v;

    machine_event_record(e, MACHINE_EVENT_HOST, (uint32_t)shutdown_reason);
    *msg = NULL;
    switch (machine_event_get(e, &v)) {
    case MACHINE_EVENT_DEBUG_EXIT:
        return (int)(v & 0xff);
    case MACHINE_EVENT_VCPU_STOP:
        switch (v) {
        case VM_STOP_GUEST_SHUTDOWN:
            *msg = g_strdup("guest triple fault (reset), exiting");
            return 0;
        case VM_STOP_GUEST_RESET:
            *msg = g_strdup("guest reset, exiting");
            return 0;
        case VM_STOP_GUEST_POWEROFF:
            *msg = g_strdup("guest power-off, exiting");
            return 0;
        default:
            *msg = g_strdup_printf("stopped after a vCPU error (%s)",
                                   vcpu_stop_name(v));
            return 1;
        }
    case MACHINE_EVENT_HOST:
        switch (v) {
        case SHUTDOWN_HOST_SIGNAL:
            *msg = g_strdup_printf("terminating on signal %d", signo);
            return 0;
        case SHUTDOWN_HOST_QMP:
            return 0;
        case SHUTDOWN_ERROR:
            *msg = g_strdup("stopped after a host error (reported above)");
            return 1;
        default:
            *msg = g_strdup_printf("stopped (shutdown reason %u)", v);
            return 1;
        }
    case MACHINE_EVENT_NONE:
    default:
        g_assert_not_reached(); /* the host event was just recorded */
    }
}
