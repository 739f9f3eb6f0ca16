/*
 * The QMP command table: name, argument schema, handler.  Arguments are
 * checked against the schema before a handler runs, with QEMU 7.2's
 * messages: in schema order "Parameter 'x' is missing" and "Invalid
 * parameter type for 'x', expected: T", then "Parameter 'y' is
 * unexpected" for a member the schema does not know.
 */
#include "qmp-internal.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>

typedef enum QmpType {
    QMP_T_STR,
    QMP_T_INT,
    QMP_T_BOOL,
    QMP_T_ANY,
    QMP_T_STR_OR_NULL,
} QmpType;

typedef struct QmpArg {
    const char *name;
    QmpType type;
    bool optional;
} QmpArg;

typedef JsonNode *QmpHandler(Monitor *mon, JsonObject *args, QmpError **err);

typedef struct QmpCommand {
    const char *name;
    QmpHandler *handler;
    const QmpArg *args; /* terminated by a NULL name; NULL: none */
} QmpCommand;

/* ---- errors ------------------------------------------------------------ */

const char *qmp_error_class_name(QmpErrorClass c)
{
    switch (c) {
    case QMP_ERROR_COMMAND_NOT_FOUND: return "CommandNotFound";
    case QMP_ERROR_DEVICE_NOT_FOUND: return "DeviceNotFound";
    case QMP_ERROR_GENERIC: break;
    }
    return "GenericError";
}

QmpError *qmp_error_new(QmpErrorClass cls, const char *fmt, ...)
{
    QmpError *e = g_new0(QmpError, 1);
    va_list ap;
    va_start(ap, fmt);
    e->cls = cls;
    e->desc = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    return e;
}

void qmp_error_free(QmpError *e)
{
    if (e) {
        g_free(e->desc);
        g_free(e);
    }
}

/* A GError from the backend as a GenericError (NULL @gerr: @fallback). */
static JsonNode *qmp_fail_gerror(QmpError **err, GError *gerr,
                                 const char *fallback)
{
    *err = qmp_error_new(QMP_ERROR_GENERIC, "%s",
                         gerr ? gerr->message : fallback);
    g_clear_error(&gerr);
    return NULL;
}

static JsonNode *qmp_unsupported(QmpError **err, const char *what)
{
    *err = qmp_error_new(QMP_ERROR_GENERIC, "%s is not supported by this "
                         "machine", what);
    return NULL;
}

/* ---- argument checking ------------------------------------------------- */

static bool qmp_node_is(JsonNode *n, GType t)
{
    return JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == t;
}

static bool qmp_type_ok(JsonNode *n, QmpType t)
{
    switch (t) {
    case QMP_T_STR: return qmp_node_is(n, G_TYPE_STRING);
    case QMP_T_INT: return qmp_node_is(n, G_TYPE_INT64);
    case QMP_T_BOOL: return qmp_node_is(n, G_TYPE_BOOLEAN);
    case QMP_T_STR_OR_NULL:
        return JSON_NODE_HOLDS_NULL(n) || qmp_node_is(n, G_TYPE_STRING);
    case QMP_T_ANY: return true;
    }
    return false;
}

static const char *qmp_type_name(QmpType t)
{
    switch (t) {
    case QMP_T_STR: return "string";
    case QMP_T_INT: return "integer";
    case QMP_T_BOOL: return "boolean";
    case QMP_T_STR_OR_NULL: return "string or null";
    case QMP_T_ANY: break;
    }
    return "any";
}

static bool qmp_check_args(const QmpArg *schema, JsonObject *args,
                           QmpError **err)
{
    for (const QmpArg *a = schema; a && a->name; a++) {
        JsonNode *n = args ? json_object_get_member(args, a->name) : NULL;
        if (!n) {
            if (!a->optional) {
                *err = qmp_error_new(QMP_ERROR_GENERIC,
                                     "Parameter '%s' is missing", a->name);
                return false;
            }
        } else if (!qmp_type_ok(n, a->type)) {
            *err = qmp_error_new(QMP_ERROR_GENERIC, "Invalid parameter type "
                                 "for '%s', expected: %s", a->name,
                                 qmp_type_name(a->type));
            return false;
        }
    }
    if (!args) {
        return true;
    }
    GList *names = json_object_get_members(args);
    bool ok = true;
    for (GList *l = names; l && ok; l = l->next) {
        const QmpArg *a = schema;
        while (a && a->name && strcmp(a->name, l->data) != 0) {
            a++;
        }
        if (!a || !a->name) {
            *err = qmp_error_new(QMP_ERROR_GENERIC,
                                 "Parameter '%s' is unexpected",
                                 (const char *)l->data);
            ok = false;
        }
    }
    g_list_free(names);
    return ok;
}

/* Helpers for optional members (the schema has checked the types). */
static const char *arg_str(JsonObject *args, const char *name)
{
    JsonNode *n = args ? json_object_get_member(args, name) : NULL;
    return n && !JSON_NODE_HOLDS_NULL(n) ? json_node_get_string(n) : NULL;
}

static JsonNode *qmp_empty(void)
{
    return qmp_node_object(json_object_new());
}

/* ---- IOThread properties (object-add, qom-*, query-iothreads) ---------- */

static const struct {
    const char *name;
    size_t offset;
} iothread_props[] = {
    { "poll-max-ns", offsetof(IOThreadProps, poll_max_ns) },
    { "poll-grow", offsetof(IOThreadProps, poll_grow) },
    { "poll-shrink", offsetof(IOThreadProps, poll_shrink) },
    { "aio-max-batch", offsetof(IOThreadProps, aio_max_batch) },
    { "thread-pool-min", offsetof(IOThreadProps, thread_pool_min) },
    { "thread-pool-max", offsetof(IOThreadProps, thread_pool_max) },
};

static int64_t *iothread_prop_field(IOThreadProps *p, size_t i)
{
    return (int64_t *)((char *)p + iothread_props[i].offset);
}

static int iothread_prop_index(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(iothread_props); i++) {
        if (!strcmp(iothread_props[i].name, name)) {
            return (int)i;
        }
    }
    return -1;
}

/* QEMU's message for a property value out of range. */
static bool iothread_prop_check(const char *name, int64_t v, QmpError **err)
{
    if (v < 0) {
        *err = qmp_error_new(QMP_ERROR_GENERIC, "%s value must be in range "
                             "[0, %" G_GINT64_FORMAT "]", name, G_MAXINT64);
        return false;
    }
    return true;
}

/* "/objects/ID" -> the IOThread, or NULL with DeviceNotFound. */
static IOThread *qom_find_iothread(Monitor *mon, const char *path,
                                   QmpError **err)
{
    IOThread *iot = NULL;
    if (g_str_has_prefix(path, "/objects/") && mon->backend->iothread_find) {
        iot = mon->backend->iothread_find(mon->opaque, path + 9);
    }
    if (!iot) {
        *err = qmp_error_new(QMP_ERROR_DEVICE_NOT_FOUND,
                             "Device '%s' not found", path);
    }
    return iot;
}

/* ---- handlers ---------------------------------------------------------- */

static JsonNode *cmd_query_version(Monitor *mon, JsonObject *args,
                                   QmpError **err)
{
    JsonObject *qemu = json_object_new();
    json_object_set_int_member(qemu, "micro", MONITOR_QEMU_MICRO);
    json_object_set_int_member(qemu, "minor", MONITOR_QEMU_MINOR);
    json_object_set_int_member(qemu, "major", MONITOR_QEMU_MAJOR);
    JsonObject *o = json_object_new();
    json_object_set_object_member(o, "qemu", qemu);
    json_object_set_string_member(o, "package",
                                  "shardvm " SHARDVM_PACKAGE_VERSION);
    return qmp_node_object(o);
}

static JsonNode *cmd_query_status(Monitor *mon, JsonObject *args,
                                  QmpError **err)
{
    const char *st = mon->backend->run_state
                     ? mon->backend->run_state(mon->opaque) : "running";
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "status", st);
    json_object_set_boolean_member(o, "singlestep", false);
    json_object_set_boolean_member(o, "running", !strcmp(st, "running"));
    return qmp_node_object(o);
}

static JsonNode *cmd_query_name(Monitor *mon, JsonObject *args,
                                QmpError **err)
{
    const char *name = mon->backend->name
                       ? mon->backend->name(mon->opaque) : NULL;
    JsonObject *o = json_object_new();
    if (name) {
        json_object_set_string_member(o, "name", name);
    }
    return qmp_node_object(o);
}

static JsonNode *cmd_query_commands(Monitor *mon, JsonObject *args,
                                    QmpError **err);

static JsonNode *cmd_query_kvm(Monitor *mon, JsonObject *args,
                               QmpError **err)
{
    bool enabled = false, present = false;
    if (mon->backend->kvm_info) {
        mon->backend->kvm_info(mon->opaque, &enabled, &present);
    }
    JsonObject *o = json_object_new();
    json_object_set_boolean_member(o, "enabled", enabled);
    json_object_set_boolean_member(o, "present", present);
    return qmp_node_object(o);
}

static JsonNode *cmd_query_cpus_fast(Monitor *mon, JsonObject *args,
                                     QmpError **err)
{
    GArray *tids = g_array_new(FALSE, TRUE, sizeof(int));
    if (mon->backend->vcpu_thread_ids) {
        mon->backend->vcpu_thread_ids(mon->opaque, tids);
    }
    JsonArray *a = json_array_new();
    for (guint i = 0; i < tids->len; i++) {
        JsonObject *props = json_object_new();
        json_object_set_int_member(props, "core-id", 0);
        json_object_set_int_member(props, "thread-id", 0);
        json_object_set_int_member(props, "socket-id", i);
        JsonObject *o = json_object_new();
        json_object_set_int_member(o, "thread-id",
                                   g_array_index(tids, int, i));
        json_object_set_object_member(o, "props", props);
        char *path = g_strdup_printf("/machine/unattached/device[%u]", i);
        json_object_set_string_member(o, "qom-path", path);
        g_free(path);
        json_object_set_int_member(o, "cpu-index", i);
        json_object_set_string_member(o, "target", "x86_64");
        json_array_add_object_element(a, o);
    }
    g_array_free(tids, TRUE);
    return qmp_node_array(a);
}

static JsonNode *cmd_query_iothreads(Monitor *mon, JsonObject *args,
                                     QmpError **err)
{
    GPtrArray *list = g_ptr_array_new();
    if (mon->backend->iothread_list) {
        mon->backend->iothread_list(mon->opaque, list);
    }
    JsonArray *a = json_array_new();
    for (guint i = 0; i < list->len; i++) {
        IOThread *iot = g_ptr_array_index(list, i);
        IOThreadProps p;
        iothread_get_props(iot, &p);
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "id", iothread_get_id(iot));
        json_object_set_int_member(o, "thread-id",
                                   iothread_get_thread_id(iot));
        json_object_set_int_member(o, "poll-max-ns", p.poll_max_ns);
        json_object_set_int_member(o, "poll-grow", p.poll_grow);
        json_object_set_int_member(o, "poll-shrink", p.poll_shrink);
        json_object_set_int_member(o, "aio-max-batch", p.aio_max_batch);
        json_array_add_object_element(a, o);
    }
    g_ptr_array_free(list, TRUE);
    return qmp_node_array(a);
}

static JsonNode *cmd_object_add(Monitor *mon, JsonObject *args,
                                QmpError **err)
{
    const char *type = arg_str(args, "qom-type");
    const char *id = arg_str(args, "id");
    IOThreadProps props = IOTHREAD_PROPS_DEFAULT;

    if (strcmp(type, "iothread") != 0) {
        *err = qmp_error_new(QMP_ERROR_GENERIC, "Parameter 'qom-type' does "
                             "not accept value '%s'", type);
        return NULL;
    }
    if (!qmp_id_wellformed(id)) {
        *err = qmp_error_new(QMP_ERROR_GENERIC, "Parameter 'id' expects an "
                             "identifier");
        return NULL;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(iothread_props); i++) {
        const char *name = iothread_props[i].name;
        if (json_object_has_member(args, name)) {
            int64_t v = json_object_get_int_member(args, name);
            if (!iothread_prop_check(name, v, err)) {
                return NULL;
            }
            *iothread_prop_field(&props, i) = v;
        }
    }
    if (!mon->backend->iothread_add) {
        return qmp_unsupported(err, "object-add");
    }
    if (mon->backend->iothread_find &&
        mon->backend->iothread_find(mon->opaque, id)) {
        *err = qmp_error_new(QMP_ERROR_GENERIC, "attempt to add duplicate "
                             "property '%s' to object (type 'container')",
                             id);
        return NULL;
    }
    GError *gerr = NULL;
    if (mon->backend->iothread_add(mon->opaque, id, &props, &gerr) < 0) {
        return qmp_fail_gerror(err, gerr, "object-add failed");
    }
    return qmp_empty();
}

static JsonNode *cmd_object_del(Monitor *mon, JsonObject *args,
                                QmpError **err)
{
    const char *id = arg_str(args, "id");
    if (!mon->backend->iothread_del) {
        return qmp_unsupported(err, "object-del");
    }
    if (!mon->backend->iothread_find ||
        !mon->backend->iothread_find(mon->opaque, id)) {
        *err = qmp_error_new(QMP_ERROR_GENERIC, "object '%s' not found", id);
        return NULL;
    }
    GError *gerr = NULL;
    int r = mon->backend->iothread_del(mon->opaque, id, &gerr);
    if (r == -EBUSY) {
        g_clear_error(&gerr);
        *err = qmp_error_new(QMP_ERROR_GENERIC, "object '%s' is in use, can "
                             "not be deleted", id);
        return NULL;
    }
    if (r < 0) {
        return qmp_fail_gerror(err, gerr, "object-del failed");
    }
    return qmp_empty();
}

static JsonNode *cmd_qom_list(Monitor *mon, JsonObject *args, QmpError **err)
{
    const char *path = arg_str(args, "path");
    JsonArray *a = json_array_new();

    if (!strcmp(path, "/objects") || !strcmp(path, "/objects/")) {
        GPtrArray *list = g_ptr_array_new();
        if (mon->backend->iothread_list) {
            mon->backend->iothread_list(mon->opaque, list);
        }
        JsonObject *t = json_object_new();
        json_object_set_string_member(t, "name", "type");
        json_object_set_string_member(t, "type", "string");
        json_array_add_object_element(a, t);
        for (guint i = 0; i < list->len; i++) {
            JsonObject *o = json_object_new();
            json_object_set_string_member(
                o, "name", iothread_get_id(g_ptr_array_index(list, i)));
            json_object_set_string_member(o, "type", "child<iothread>");
            json_array_add_object_element(a, o);
        }
        g_ptr_array_free(list, TRUE);
        return qmp_node_array(a);
    }
    if (!qom_find_iothread(mon, path, err)) {
        json_array_unref(a);
        return NULL;
    }
    JsonObject *t = json_object_new();
    json_object_set_string_member(t, "name", "type");
    json_object_set_string_member(t, "type", "string");
    json_array_add_object_element(a, t);
    for (size_t i = 0; i < G_N_ELEMENTS(iothread_props); i++) {
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "name", iothread_props[i].name);
        json_object_set_string_member(o, "type", "int");
        json_array_add_object_element(a, o);
    }
    return qmp_node_array(a);
}

static JsonNode *cmd_qom_get(Monitor *mon, JsonObject *args, QmpError **err)
{
    const char *path = arg_str(args, "path");
    const char *prop = arg_str(args, "property");
    IOThread *iot = qom_find_iothread(mon, path, err);
    if (!iot) {
        return NULL;
    }
    if (!strcmp(prop, "type")) {
        return json_node_init_string(json_node_alloc(), "iothread");
    }
    int i = iothread_prop_index(prop);
    if (i < 0) {
        *err = qmp_error_new(QMP_ERROR_GENERIC, "Property 'iothread.%s' not "
                             "found", prop);
        return NULL;
    }
    IOThreadProps p;
    iothread_get_props(iot, &p);
    return json_node_init_int(json_node_alloc(),
                              *iothread_prop_field(&p, (size_t)i));
}

static JsonNode *cmd_qom_set(Monitor *mon, JsonObject *args, QmpError **err)
{
    const char *path = arg_str(args, "path");
    const char *prop = arg_str(args, "property");
    JsonNode *value = json_object_get_member(args, "value");
    IOThread *iot = qom_find_iothread(mon, path, err);
    if (!iot) {
        return NULL;
    }
    if (!strcmp(prop, "type")) {
        *err = qmp_error_new(QMP_ERROR_GENERIC, "Insufficient permission "
                             "to perform this operation");
        return NULL;
    }
    int i = iothread_prop_index(prop);
    if (i < 0) {
        *err = qmp_error_new(QMP_ERROR_GENERIC, "Property 'iothread.%s' not "
                             "found", prop);
        return NULL;
    }
    if (!qmp_node_is(value, G_TYPE_INT64)) {
        *err = qmp_error_new(QMP_ERROR_GENERIC, "Invalid parameter type for "
                             "'%s', expected: integer", prop);
        return NULL;
    }
    int64_t v = json_node_get_int(value);
    if (!iothread_prop_check(prop, v, err)) {
        return NULL;
    }
    IOThreadProps p = IOTHREAD_PROPS_DEFAULT;
    *iothread_prop_field(&p, (size_t)i) = v;
    GError *gerr = NULL;
    if (iothread_set_props(iot, &p, &gerr) < 0) {
        return qmp_fail_gerror(err, gerr, "qom-set failed");
    }
    return qmp_empty();
}

static GArray *qmp_block_list(Monitor *mon)
{
    GArray *devs = g_array_new(FALSE, TRUE, sizeof(MonitorBlockDevice));
    if (mon->backend->block_list) {
        mon->backend->block_list(mon->opaque, devs);
    }
    return devs;
}

static JsonNode *cmd_query_block(Monitor *mon, JsonObject *args,
                                 QmpError **err)
{
    GArray *devs = qmp_block_list(mon);
    JsonArray *a = json_array_new();
    for (guint i = 0; i < devs->len; i++) {
        MonitorBlockDevice *d = &g_array_index(devs, MonitorBlockDevice, i);
        JsonObject *image = json_object_new();
        json_object_set_string_member(image, "filename", d->filename);
        json_object_set_string_member(image, "format", d->driver);
        json_object_set_int_member(image, "virtual-size", (int64_t)d->size);
        JsonObject *ins = json_object_new();
        json_object_set_string_member(ins, "file", d->filename);
        json_object_set_string_member(ins, "node-name", d->node_name);
        json_object_set_boolean_member(ins, "ro", d->read_only);
        json_object_set_string_member(ins, "drv", d->driver);
        json_object_set_boolean_member(ins, "encrypted", false);
        json_object_set_string_member(ins, "detect_zeroes", "off");
        static const char *const zero[] = { "bps", "bps_rd", "bps_wr",
                                            "iops", "iops_rd", "iops_wr",
                                            "backing_file_depth",
                                            "write_threshold" };
        for (size_t k = 0; k < G_N_ELEMENTS(zero); k++) {
            json_object_set_int_member(ins, zero[k], 0);
        }
        json_object_set_object_member(ins, "image", image);
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "device", d->device);
        json_object_set_string_member(o, "qdev", d->qdev);
        json_object_set_boolean_member(o, "locked", false);
        json_object_set_boolean_member(o, "removable", false);
        json_object_set_string_member(o, "type", "unknown");
        json_object_set_object_member(o, "inserted", ins);
        json_array_add_object_element(a, o);
    }
    g_array_free(devs, TRUE);
    return qmp_node_array(a);
}

static JsonNode *cmd_query_blockstats(Monitor *mon, JsonObject *args,
                                      QmpError **err)
{
    GArray *devs = qmp_block_list(mon);
    JsonArray *a = json_array_new();
    for (guint i = 0; i < devs->len; i++) {
        MonitorBlockDevice *d = &g_array_index(devs, MonitorBlockDevice, i);
        JsonObject *st = json_object_new();
        const struct { const char *k; uint64_t v; } f[] = {
            { "rd_bytes", d->rd_bytes }, { "wr_bytes", d->wr_bytes },
            { "rd_operations", d->rd_operations },
            { "wr_operations", d->wr_operations },
            { "flush_operations", d->flush_operations },
            { "rd_total_time_ns", d->rd_total_time_ns },
            { "wr_total_time_ns", d->wr_total_time_ns },
            { "flush_total_time_ns", d->flush_total_time_ns },
            { "rd_merged", 0 }, { "wr_merged", 0 },
            { "failed_rd_operations", 0 }, { "failed_wr_operations", 0 },
            { "failed_flush_operations", 0 },
            { "invalid_rd_operations", 0 }, { "invalid_wr_operations", 0 },
            { "invalid_flush_operations", 0 },
        };
        for (size_t k = 0; k < G_N_ELEMENTS(f); k++) {
            json_object_set_int_member(st, f[k].k, (int64_t)f[k].v);
        }
        json_object_set_boolean_member(st, "account_invalid", true);
        json_object_set_boolean_member(st, "account_failed", true);
        json_object_set_array_member(st, "timed_stats", json_array_new());
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "device", d->device);
        json_object_set_string_member(o, "qdev", d->qdev);
        json_object_set_string_member(o, "node-name", d->node_name);
        json_object_set_object_member(o, "stats", st);
        json_array_add_object_element(a, o);
    }
    g_array_free(devs, TRUE);
    return qmp_node_array(a);
}

/* stop / cont: the backend says whether the state changed. */
static JsonNode *qmp_run_change(Monitor *mon, bool stop, QmpError **err)
{
    int (*fn)(void *, GError **) = stop ? mon->backend->stop
                                        : mon->backend->cont;
    if (!fn) {
        return qmp_unsupported(err, stop ? "stop" : "cont");
    }
    GError *gerr = NULL;
    int r = fn(mon->opaque, &gerr);
    if (r < 0) {
        return qmp_fail_gerror(err, gerr, stop ? "stop failed"
                                               : "cont failed");
    }
    if (r > 0) {
        monitor_emit_event(mon, stop ? "STOP" : "RESUME", NULL);
    }
    return qmp_empty();
}

static JsonNode *cmd_stop(Monitor *mon, JsonObject *args, QmpError **err)
{
    return qmp_run_change(mon, true, err);
}

static JsonNode *cmd_cont(Monitor *mon, JsonObject *args, QmpError **err)
{
    return qmp_run_change(mon, false, err);
}

static JsonNode *cmd_system_powerdown(Monitor *mon, JsonObject *args,
                                      QmpError **err)
{
    if (!mon->backend->powerdown) {
        return qmp_unsupported(err, "system_powerdown");
    }
    monitor_emit_event(mon, "POWERDOWN", NULL);
    mon->backend->powerdown(mon->opaque);
    return qmp_empty();
}

static JsonNode *cmd_quit(Monitor *mon, JsonObject *args, QmpError **err)
{
    if (!mon->backend->quit) {
        return qmp_unsupported(err, "quit");
    }
    JsonObject *data = json_object_new();
    json_object_set_boolean_member(data, "guest", false);
    json_object_set_string_member(data, "reason", "host-qmp-quit");
    monitor_emit_event(mon, "SHUTDOWN", data);
    json_object_unref(data);
    mon->backend->quit(mon->opaque);
    return qmp_empty();
}

static JsonNode *cmd_x_blockdev_set_iothread(Monitor *mon, JsonObject *args,
                                             QmpError **err)
{
    const char *node = arg_str(args, "node-name");
    const char *iothread = arg_str(args, "iothread"); /* NULL: main loop */
    JsonNode *f = json_object_get_member(args, "force");
    bool force = f && json_node_get_boolean(f);

    if (!mon->backend->blockdev_set_iothread) {
        return qmp_unsupported(err, "x-blockdev-set-iothread");
    }
    if (iothread && (!mon->backend->iothread_find ||
                     !mon->backend->iothread_find(mon->opaque, iothread))) {
        *err = qmp_error_new(QMP_ERROR_GENERIC, "Cannot find iothread %s",
                             iothread);
        return NULL;
    }
    GError *gerr = NULL;
    if (mon->backend->blockdev_set_iothread(mon->opaque, node, iothread,
                                            force, &gerr) < 0) {
        return qmp_fail_gerror(err, gerr, "x-blockdev-set-iothread failed");
    }
    return qmp_empty();
}

/* x-query-virtqueues: [{"device", "node-name"?, "queue", "iothread"?}];
 * "iothread" is absent for a queue served by the main loop. */
static JsonNode *cmd_x_query_virtqueues(Monitor *mon, JsonObject *args,
                                        QmpError **err)
{
    GArray *vqs = g_array_new(FALSE, TRUE, sizeof(MonitorVirtqueue));
    if (mon->backend->virtqueue_list) {
        mon->backend->virtqueue_list(mon->opaque, vqs);
    }
    JsonArray *a = json_array_new();
    for (guint i = 0; i < vqs->len; i++) {
        MonitorVirtqueue *q = &g_array_index(vqs, MonitorVirtqueue, i);
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "device", q->device);
        if (q->node_name) {
            json_object_set_string_member(o, "node-name", q->node_name);
        }
        json_object_set_int_member(o, "queue", q->queue);
        if (q->iothread) {
            json_object_set_string_member(o, "iothread", q->iothread);
        }
        json_array_add_object_element(a, o);
    }
    g_array_free(vqs, TRUE);
    return qmp_node_array(a);
}

/* ---- the table --------------------------------------------------------- */

static const QmpArg args_object_add[] = {
    { "qom-type", QMP_T_STR, false },
    { "id", QMP_T_STR, false },
    { "poll-max-ns", QMP_T_INT, true },
    { "poll-grow", QMP_T_INT, true },
    { "poll-shrink", QMP_T_INT, true },
    { "aio-max-batch", QMP_T_INT, true },
    { "thread-pool-min", QMP_T_INT, true },
    { "thread-pool-max", QMP_T_INT, true },
    { NULL },
};
static const QmpArg args_id[] = { { "id", QMP_T_STR, false }, { NULL } };
static const QmpArg args_path[] = { { "path", QMP_T_STR, false }, { NULL } };
static const QmpArg args_qom_get[] = {
    { "path", QMP_T_STR, false },
    { "property", QMP_T_STR, false },
    { NULL },
};
static const QmpArg args_qom_set[] = {
    { "path", QMP_T_STR, false },
    { "property", QMP_T_STR, false },
    { "value", QMP_T_ANY, false },
    { NULL },
};
static const QmpArg args_query_block[] = {
    { "flat", QMP_T_BOOL, true },
    { NULL },
};
static const QmpArg args_query_blockstats[] = {
    { "query-nodes", QMP_T_BOOL, true },
    { NULL },
};
static const QmpArg args_set_iothread[] = {
    { "node-name", QMP_T_STR, false },
    { "iothread", QMP_T_STR_OR_NULL, false },
    { "force", QMP_T_BOOL, true },
    { NULL },
};

static const QmpCommand qmp_commands[] = {
    { "query-version", cmd_query_version, NULL },
    { "query-status", cmd_query_status, NULL },
    { "query-name", cmd_query_name, NULL },
    { "query-commands", cmd_query_commands, NULL },
    { "query-kvm", cmd_query_kvm, NULL },
    { "query-cpus-fast", cmd_query_cpus_fast, NULL },
    { "query-iothreads", cmd_query_iothreads, NULL },
    { "object-add", cmd_object_add, args_object_add },
    { "object-del", cmd_object_del, args_id },
    { "qom-list", cmd_qom_list, args_path },
    { "qom-get", cmd_qom_get, args_qom_get },
    { "qom-set", cmd_qom_set, args_qom_set },
    { "query-block", cmd_query_block, args_query_block },
    { "query-blockstats", cmd_query_blockstats, args_query_blockstats },
    { "stop", cmd_stop, NULL },
    { "cont", cmd_cont, NULL },
    { "system_powerdown", cmd_system_powerdown, NULL },
    { "quit", cmd_quit, NULL },
    { "x-blockdev-set-iothread", cmd_x_blockdev_set_iothread,
      args_set_iothread },
    { "x-query-virtqueues", cmd_x_query_virtqueues, NULL },
};

static JsonNode *cmd_query_commands(Monitor *mon, JsonObject *args,
                                    QmpError **err)
{
    JsonArray *a = json_array_new();
    JsonObject *cap = json_object_new();
    json_object_set_string_member(cap, "name", "qmp_capabilities");
    json_array_add_object_element(a, cap);
    for (size_t i = 0; i < G_N_ELEMENTS(qmp_commands); i++) {
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "name", qmp_commands[i].name);
        json_array_add_object_element(a, o);
    }
    return qmp_node_array(a);
}

static const QmpCommand *qmp_command_find(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(qmp_commands); i++) {
        if (!strcmp(qmp_commands[i].name, name)) {
            return &qmp_commands[i];
        }
    }
    return NULL;
}

bool qmp_command_exists(const char *name)
{
    return !strcmp(name, "qmp_capabilities") || qmp_command_find(name);
}

JsonNode *qmp_command_run(Monitor *mon, const char *name, JsonObject *args,
                          QmpError **err)
{
    const QmpCommand *c = qmp_command_find(name);
    if (!c) {
        *err = qmp_error_new(QMP_ERROR_COMMAND_NOT_FOUND,
                             "The command %s has not been found", name);
        return NULL;
    }
    if (!qmp_check_args(c->args, args, err)) {
        return NULL;
    }
    return c->handler(mon, args, err);
}
