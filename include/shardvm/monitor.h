/*
 * The QMP monitor: QEMU 7.2's machine protocol (greeting, capabilities
 * negotiation, {"execute"...} -> {"return"...} / {"error"...}, events)
 * served on unix/tcp sockets in the main loop's fd-handler context.
 *
 * Layers (monitor/):
 *   qmp-stream.c   incremental JSON framing: bytes in, whole messages out
 *   qmp-session.c  one client's protocol state: framing, negotiation,
 *                  dispatch, reply and event encoding (no sockets)
 *   qmp-commands.c the command table and argument checking
 *   qmp-server.c   listening sockets, clients, non-blocking output
 *   qmp-addr.c     -qmp / -chardev socket / -mon option strings
 *
 * The commands reach the VM only through a MonitorBackend (an ops table
 * implemented by system/machine.c, and by a fake in tests/qmp/).
 *
 * Threads: everything here runs in the main-loop thread with the BQL held
 * (or, in tests, in the one thread that owns the Monitor), unless a
 * function says otherwise.
 */
#ifndef SHARDVM_MONITOR_H
#define SHARDVM_MONITOR_H

#include "shardvm/iothread.h"

#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The protocol level spoken, reported by the greeting and query-version. */
#define MONITOR_QEMU_MAJOR 7
#define MONITOR_QEMU_MINOR 2
#define MONITOR_QEMU_MICRO 0

/* Largest accepted message (bytes); a larger one closes the connection. */
#define MONITOR_MAX_MESSAGE (1u << 20)

/* One block device, for query-block / query-blockstats.  Strings are
 * borrowed from the backend and valid until the callback's caller returns. */
typedef struct MonitorBlockDevice {
    const char *device;     /* drive id ("" when defined with -blockdev) */
    const char *qdev;       /* the device using it, e.g. "virtio-disk0" */
    const char *node_name;  /* block node name */
    const char *filename;   /* image file */
    const char *driver;     /* "raw", "null-co"... */
    bool read_only;
    uint64_t size;          /* bytes */
    uint64_t rd_bytes, wr_bytes;
    uint64_t rd_operations, wr_operations, flush_operations;
    uint64_t rd_total_time_ns, wr_total_time_ns, flush_total_time_ns;
} MonitorBlockDevice;

/* One virtqueue and the IOThread that serves it (x-query-virtqueues). */
typedef struct MonitorVirtqueue {
    const char *device;     /* qdev id */
    const char *node_name;  /* the block node behind it, or NULL */
    unsigned queue;         /* virtqueue index */
    const char *iothread;   /* IOThread id, NULL: the main loop */
} MonitorVirtqueue;

/*
 * MonitorBackend: how commands reach the VM.  Called in the main-loop
 * thread with the BQL held.  A NULL member makes the commands that need
 * it fail with a GenericError ("not supported by this machine").
 */
typedef struct MonitorBackend {
    /* QEMU's RunState name: "prelaunch", "running", "paused",
     * "shutdown"... */
    const char *(*run_state)(void *opaque);
    /* stop: pause the vCPUs; cont: start (prelaunch) or resume them.
     * Return 1 when the run state changed (the monitor then emits STOP /
     * RESUME), 0 when there was nothing to do, or a negative errno with
     * @errp set. */
    int (*stop)(void *opaque, GError **errp);
    int (*cont)(void *opaque, GError **errp);
    /* ACPI power button (the monitor emits POWERDOWN first). */
    void (*powerdown)(void *opaque);
    /* Ask the main loop to end (the monitor emits SHUTDOWN first). */
    void (*quit)(void *opaque);
    /* -name, or NULL. */
    const char *(*name)(void *opaque);
    /* KVM: enabled for this VM / available on the host. */
    void (*kvm_info)(void *opaque, bool *enabled, bool *present);
    /* Thread ids of the vCPU threads, index order, into @out (GArray of
     * int).  0 when a vCPU thread does not run yet. */
    void (*vcpu_thread_ids)(void *opaque, GArray *out);

    /* IOThreads: the list in creation order (IOThread *, borrowed), find
     * by id, add, delete.  iothread_del fails with -EBUSY (and @errp) when
     * a device still uses it, -ENOENT when there is no such one. */
    void (*iothread_list)(void *opaque, GPtrArray *out);
    IOThread *(*iothread_find)(void *opaque, const char *id);
    int (*iothread_add)(void *opaque, const char *id,
                        const IOThreadProps *props, GError **errp);
    int (*iothread_del)(void *opaque, const char *id, GError **errp);

    /* Block devices (GArray of MonitorBlockDevice). */
    void (*block_list)(void *opaque, GArray *out);
    /* Virtqueues (GArray of MonitorVirtqueue). */
    void (*virtqueue_list)(void *opaque, GArray *out);
    /*
     * Move the device behind block node @node_name with all its queues to
     * IOThread @iothread (NULL: the main loop), live: drain, detach,
     * switch ioeventfds and handlers, attach, resume.  0 or a negative
     * errno with @errp set.
     */
    int (*blockdev_set_iothread)(void *opaque, const char *node_name,
                                 const char *iothread, bool force,
                                 GError **errp);
} MonitorBackend;

typedef struct Monitor Monitor;

/*
 * monitor_new: a monitor with no listener yet.  @backend (static storage)
 * and @opaque are kept.  Main-loop thread (or the test's thread).
 */
Monitor *monitor_new(const MonitorBackend *backend, void *opaque);

/*
 * monitor_free: close every listener and client (clients see EOF), unlink
 * unix socket paths it created, free.  NULL is ignored.
 */
void monitor_free(Monitor *mon);

/*
 * monitor_add_listener: listen on @addr in the main loop's fd-handler
 * context: "unix:PATH,server=on,wait=off" or
 * "tcp:HOST:PORT,server=on,wait=off" (-qmp's argument), or what
 * monitor_parse_qmp() / monitor_parse_chardev() return.  Each accepted
 * client gets the greeting and negotiates on its own.  Returns 0 or a
 * negative errno with @errp set.  Needs main_loop_init().
 */
int monitor_add_listener(Monitor *mon, const char *addr, GError **errp);

/*
 * monitor_add_client_fd: serve one already connected stream socket @fd
 * (taken over; closed on EOF or by monitor_free()).  The greeting is sent
 * at once.  Needs main_loop_init().
 */
void monitor_add_client_fd(Monitor *mon, int fd);

/* monitor_client_count: clients currently connected. */
unsigned monitor_client_count(Monitor *mon);

/*
 * monitor_emit_event: send {"event": @name, "data": @data, "timestamp":
 * {"seconds", "microseconds"}} to every client past negotiation.  @data
 * may be NULL (no "data" member); it is not taken (the caller unrefs).
 */
void monitor_emit_event(Monitor *mon, const char *name, JsonObject *data);

/*
 * Option strings.  monitor_parse_addr: check -qmp's argument (or a
 * -chardev socket's) and return a normalised listener address in
 * monitor_add_listener()'s syntax, each ',' in it doubled as in the
 * option (g_free), or NULL with @errp set; *@id_out (may be NULL) gets the -chardev id.  Pure; any thread.
 */
char *monitor_parse_qmp(const char *arg, GError **errp);
char *monitor_parse_chardev(const char *arg, char **id_out, GError **errp);
/* -mon chardev=ID[,mode=control][,pretty=on|off]: the chardev id (g_free)
 * or NULL with @errp set (mode=readline is refused: no HMP). */
char *monitor_parse_mon(const char *arg, GError **errp);

/* ---- the protocol without sockets (tests, and qmp-server.c) ---------- */

typedef struct QmpSession QmpSession;

/* Where a session's output goes: whole lines ("...\r\n").  Returns 0, or
 * a negative errno when the peer is gone (the session then stops). */
typedef int QmpSessionWriteFunc(void *opaque, const char *buf, size_t len);

/*
 * qmp_session_new: a client's protocol state.  Writes the greeting
 * through @write at once.  The session is registered with @mon for events.
 */
QmpSession *qmp_session_new(Monitor *mon, QmpSessionWriteFunc *write,
                            void *opaque);

/*
 * qmp_session_feed: bytes from the client.  Every complete message is
 * dispatched and answered before it returns.  Returns 0, or a negative
 * errno when the connection must be closed (message over
 * MONITOR_MAX_MESSAGE: -EMSGSIZE after an error reply; a write failed).
 */
int qmp_session_feed(QmpSession *s, const char *buf, size_t len);

/* qmp_session_free: unregister from the monitor and free. */
void qmp_session_free(QmpSession *s);

#ifdef __cplusplus
}
#endif

#endif
