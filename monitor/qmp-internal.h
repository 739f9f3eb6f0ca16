/*
 * Private to monitor/: the framing splitter, the command table and the
 * Monitor's insides shared by qmp-session.c and qmp-server.c.
 */
#ifndef SHARDVM_MONITOR_QMP_INTERNAL_H
#define SHARDVM_MONITOR_QMP_INTERNAL_H

#include "shardvm/monitor.h"

#include <glib.h>
#include <json-glib/json-glib.h>

/* A node holding @o / @a; takes the caller's reference. */
static inline JsonNode *qmp_node_object(JsonObject *o)
{
    JsonNode *n = json_node_init_object(json_node_alloc(), o);
    json_object_unref(o);
    return n;
}

static inline JsonNode *qmp_node_array(JsonArray *a)
{
    JsonNode *n = json_node_init_array(json_node_alloc(), a);
    json_array_unref(a);
    return n;
}

/* ---- qmp-addr.c --------------------------------------------------------
 * monitor_addr_unescape: a normalised listener address (monitor_parse_qmp()'s
 * result, every ',' doubled) with its ",," made ',' (g_free); NULL when
 * @addr has a lone ',' (it is -qmp's full syntax with options).  Pure. */
char *monitor_addr_unescape(const char *addr);
/* QEMU's id_wellformed(): a letter, then letters, digits, '-', '.', '_'
 * (-chardev ids, object-add ids).  Pure. */
bool qmp_id_wellformed(const char *id);

/* ---- qmp-stream.c: incremental JSON framing ---------------------------
 * Tracks strings ("...", and '...' without escapes as json-glib takes them),
 * escapes and {} [] nesting; a message ends when the nesting returns to
 * zero (or, for a top-level scalar, at the next delimiter).  It frames,
 * and refuses what json-glib cannot take safely (nesting deeper than
 * QMP_MAX_NESTING: its parser recurses per level; "\u0000": it cuts the
 * string; a UTF-16 surrogate escape not in a pair: it makes bytes that
 * are not UTF-8 and drops the next character; numbers out of int64 / double range: it wraps or makes "inf");
 * json-glib parses each message. */

/* Deepest {} [] nesting accepted (QEMU's MAX_NESTING). */
#define QMP_MAX_NESTING 1024

typedef struct QmpStream {
    GString *buf;     /* the message being collected */
    unsigned depth;   /* open { and [ */
    char quote;       /* in a string: its quote ('"' or '\''), else 0 */
    bool escape;      /* the previous byte in a string was a backslash */
    unsigned uesc;    /* hex digits still due in a \uXXXX escape */
    unsigned uval;    /* the \u escape's value so far */
    bool high;        /* the last \u escape was a high surrogate: a low
                       * one must follow at once */
    bool in_number;   /* a number token started at num_start in buf */
    size_t num_start;
    const char *error;/* why the current message is refused, or NULL */
    bool overflow;    /* the message passed MONITOR_MAX_MESSAGE */
} QmpStream;

/* Called once per complete message (not NUL-terminated; @len bytes).
 * @error is NULL, or why the framing layer refused the message (it must
 * then not be parsed; reply "JSON parse error, @error").
 * Return false to stop feeding (the rest of the input is dropped). */
typedef bool QmpStreamFunc(void *opaque, const char *msg, size_t len,
                           const char *error);

void qmp_stream_init(QmpStream *st);
void qmp_stream_destroy(QmpStream *st);
/* Feed @len bytes; returns -EMSGSIZE when a message grows past
 * MONITOR_MAX_MESSAGE (the stream is then unusable), -ECANCELED when @fn
 * returned false, else 0. */
int qmp_stream_feed(QmpStream *st, const char *buf, size_t len,
                    QmpStreamFunc *fn, void *opaque);

/* ---- qmp-commands.c ---------------------------------------------------- */

/* QEMU's error classes. */
typedef enum QmpErrorClass {
    QMP_ERROR_GENERIC,          /* GenericError */
    QMP_ERROR_COMMAND_NOT_FOUND,/* CommandNotFound */
    QMP_ERROR_DEVICE_NOT_FOUND, /* DeviceNotFound */
} QmpErrorClass;

const char *qmp_error_class_name(QmpErrorClass c);

/* A command's failure: class + message (qmp_error_free). */
typedef struct QmpError {
    QmpErrorClass cls;
    char *desc;
} QmpError;

QmpError *qmp_error_new(QmpErrorClass cls, const char *fmt, ...)
    G_GNUC_PRINTF(2, 3);
void qmp_error_free(QmpError *e);

/*
 * qmp_command_run: look @name up, check @args (may be NULL) against its
 * schema and run it.  Returns the "return" value (a new JsonNode) or NULL
 * with *@err set.  qmp_capabilities is handled by the session, not here.
 */
JsonNode *qmp_command_run(Monitor *mon, const char *name, JsonObject *args,
                          QmpError **err);

/* qmp_command_exists: @name is in the table (qmp_capabilities too). */
bool qmp_command_exists(const char *name);

/* ---- the Monitor (qmp-server.c) ---------------------------------------- */

struct Monitor {
    const MonitorBackend *backend;
    void *opaque;
    GPtrArray *sessions;  /* QmpSession *: every live session (events) */
    GPtrArray *listeners; /* private to qmp-server.c */
    GPtrArray *clients;   /* private to qmp-server.c */
    AioBH *reap_bh;       /* frees clients that failed (qmp-server.c) */
    int spare_fd;         /* given up to accept-and-close when out of fds
                           * (qmp-server.c), or -1 */
    bool accept_paused;   /* listeners unwatched after an accept failure;
                           * watched again when a client goes */
};

/* qmp-session.c: add/remove a session to the event list. */
void monitor_register_session(Monitor *mon, QmpSession *s);
void monitor_unregister_session(Monitor *mon, QmpSession *s);
/* Send an encoded event line to @s if it negotiated. */
void qmp_session_send_event(QmpSession *s, const char *line, size_t len);

#endif
