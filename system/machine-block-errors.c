/*
 * werror=/rerror= on the machine side: see machine-block-errors.h.
 *
 * Devices report from their queues' contexts (IOThreads): the report is
 * copied into a list under a mutex and a main-context BH delivers it with
 * the BQL held (emit the event, stop the VM), as QEMU's vmstop request
 * is deferred to the main loop.  Nothing here waits for the main loop,
 * so a device reporting while the main thread drains it cannot deadlock.
 */
#include "machine-block-errors.h"
#include "shardvm/main-loop.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

typedef struct PendingError {
    char *device, *node_name;
    bool is_read, iostatus;
    BlockErrorAction action;
    int error;
} PendingError;

typedef struct ResumeFn {
    void (*fn)(void *);
    void *opaque;
} ResumeFn;

struct MachineBlockErrors {
    BlockErrorHandler handler;     /* immutable */
    const MachineBlockErrorsOps *ops;
    void *opaque;
    pthread_mutex_t lock;
    GQueue pending;                /* PendingError *, [lock] */
    AioBH *bh;                     /* main context */
    GArray *resume;                /* ResumeFn, main thread */
};

static void pending_free(PendingError *p)
{
    g_free(p->device);
    g_free(p->node_name);
    g_free(p);
}

JsonObject *machine_block_errors_event_data(const BlockIOErrorEvent *ev)
{
    JsonObject *d = json_object_new();

    json_object_set_string_member(d, "device", ev->device ? ev->device : "");
    if (ev->node_name) {
        json_object_set_string_member(d, "node-name", ev->node_name);
    }
    json_object_set_string_member(d, "operation",
                                  ev->is_read ? "read" : "write");
    json_object_set_string_member(d, "action",
                                  block_error_action_name(ev->action));
    if (ev->iostatus) {
        /* QEMU sends nospace only while the device keeps an io-status */
        json_object_set_boolean_member(d, "nospace", ev->error == -ENOSPC);
    }
    json_object_set_string_member(d, "reason", g_strerror(-ev->error));
    return d;
}

/* Main context, BQL: deliver what the devices reported, in order. */
static void deliver_bh(void *opaque)
{
    MachineBlockErrors *be = opaque;

    for (;;) {
        pthread_mutex_lock(&be->lock);
        PendingError *p = g_queue_pop_head(&be->pending);
        pthread_mutex_unlock(&be->lock);
        if (!p) {
            break;
        }
        BlockIOErrorEvent ev = {
            .device = p->device, .node_name = p->node_name,
            .is_read = p->is_read, .action = p->action,
            .iostatus = p->iostatus, .error = p->error,
        };
        Monitor *mon = be->ops->monitor(be->opaque);
        if (mon) {
            JsonObject *d = machine_block_errors_event_data(&ev);
            monitor_emit_event(mon, "BLOCK_IO_ERROR", d);
            json_object_unref(d);
        }
        if (p->action == BLOCK_ERROR_ACTION_STOP &&
            be->ops->stop_vm(be->opaque)) {
            mon = be->ops->monitor(be->opaque);
            if (mon) {
                monitor_emit_event(mon, "STOP", NULL);
            }
        }
        pending_free(p);
    }
}

/* Any thread. */
static void handler_io_error(void *opaque, const BlockIOErrorEvent *ev)
{
    MachineBlockErrors *be = opaque;
    PendingError *p = g_new0(PendingError, 1);

    p->device = g_strdup(ev->device);
    p->node_name = g_strdup(ev->node_name);
    p->is_read = ev->is_read;
    p->iostatus = ev->iostatus;
    p->action = ev->action;
    p->error = ev->error;
    pthread_mutex_lock(&be->lock);
    g_queue_push_tail(&be->pending, p);
    pthread_mutex_unlock(&be->lock);
    aio_bh_schedule(be->bh);
}

static void handler_add_resume(void *opaque, void (*fn)(void *), void *arg)
{
    MachineBlockErrors *be = opaque;
    ResumeFn r = { fn, arg };

    g_array_append_val(be->resume, r);
}

static void handler_del_resume(void *opaque, void (*fn)(void *), void *arg)
{
    MachineBlockErrors *be = opaque;

    for (guint i = 0; i < be->resume->len; i++) {
        ResumeFn *r = &g_array_index(be->resume, ResumeFn, i);
        if (r->fn == fn && r->opaque == arg) {
            g_array_remove_index(be->resume, i);
            return;
        }
    }
}

MachineBlockErrors *machine_block_errors_new(const MachineBlockErrorsOps *ops,
                                             void *opaque)
{
    MachineBlockErrors *be = g_new0(MachineBlockErrors, 1);

    be->ops = ops;
    be->opaque = opaque;
    be->handler.io_error = handler_io_error;
    be->handler.add_resume = handler_add_resume;
    be->handler.del_resume = handler_del_resume;
    be->handler.opaque = be;
    pthread_mutex_init(&be->lock, NULL);
    g_queue_init(&be->pending);
    be->bh = aio_bh_new(main_loop_get_aio_context(), deliver_bh, be);
    be->resume = g_array_new(FALSE, FALSE, sizeof(ResumeFn));
    return be;
}

void machine_block_errors_free(MachineBlockErrors *be)
{
    if (!be) {
        return;
    }
    aio_bh_delete(be->bh);
    g_queue_clear_full(&be->pending, (GDestroyNotify)pending_free);
    g_array_free(be->resume, TRUE);
    pthread_mutex_destroy(&be->lock);
    g_free(be);
}

const BlockErrorHandler *machine_block_errors_handler(MachineBlockErrors *be)
{
    return &be->handler;
}

void machine_block_errors_resume(MachineBlockErrors *be)
{
    /* a copy: a resume function may not, but could, unregister */
    g_autoptr(GArray) fns = g_array_copy(be->resume);

    for (guint i = 0; i < fns->len; i++) {
        ResumeFn *r = &g_array_index(fns, ResumeFn, i);
        r->fn(r->opaque);
    }
}
