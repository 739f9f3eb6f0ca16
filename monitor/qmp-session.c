/*
 * One QMP client's protocol state: framing, capabilities negotiation,
 * dispatch, replies and events.  No sockets here (qmp-server.c owns them),
 * so tests can drive a session with plain byte strings.
 */
#include "qmp-internal.h"

#include <errno.h>
#include <string.h>

struct QmpSession {
    Monitor *mon;
    QmpSessionWriteFunc *write;
    void *opaque;
    QmpStream stream;
    bool negotiated; /* qmp_capabilities accepted: commands and events */
    bool oob;        /* the client enabled the "oob" capability */
    bool dead;       /* a write failed: say nothing more */
};

/* ---- output ------------------------------------------------------------ */

/* Encode @root as one line "<json>\r\n" (QEMU ends lines with CRLF). */
static char *qmp_encode(JsonNode *root, size_t *len)
{
    JsonGenerator *gen = json_generator_new();
    json_generator_set_root(gen, root);
    gsize n = 0;
    char *text = json_generator_to_data(gen, &n);
    g_object_unref(gen);
    char *line = g_malloc(n + 3);
    memcpy(line, text, n);
    memcpy(line + n, "\r\n", 3);
    g_free(text);
    *len = n + 2;
    return line;
}

static void qmp_session_write_line(QmpSession *s, const char *line,
                                   size_t len)
{
    if (!s->dead && s->write(s->opaque, line, len) < 0) {
        s->dead = true;
    }
}

/* Send @obj (taken). */
static void qmp_session_send(QmpSession *s, JsonObject *obj)
{
    JsonNode *root = qmp_node_object(obj);
    size_t len;
    char *line = qmp_encode(root, &len);
    json_node_unref(root);
    qmp_session_write_line(s, line, len);
    g_free(line);
}

/* {"error": {"class", "desc"}[, "id"]} */
static void qmp_session_send_error(QmpSession *s, QmpErrorClass cls,
                                   const char *desc, JsonNode *id)
{
    JsonObject *err = json_object_new();
    json_object_set_string_member(err, "class", qmp_error_class_name(cls));
    /* A desc may quote the client's bytes (json-glib's parse errors quote
     * a broken string constant as it decoded it): the reply must stay
     * UTF-8 whatever they were. */
    char *valid = g_utf8_validate(desc, -1, NULL) ? NULL
                                                   : g_utf8_make_valid(desc, -1);
    json_object_set_string_member(err, "desc", valid ? valid : desc);
    g_free(valid);
    JsonObject *reply = json_object_new();
    json_object_set_object_member(reply, "error", err);
    if (id) {
        json_object_set_member(reply, "id", json_node_copy(id));
    }
    qmp_session_send(s, reply);
}

/* {"return": @ret (taken)[, "id"]} */
static void qmp_session_send_return(QmpSession *s, JsonNode *ret,
                                    JsonNode *id)
{
    JsonObject *reply = json_object_new();
    json_object_set_member(reply, "return", ret);
    if (id) {
        json_object_set_member(reply, "id", json_node_copy(id));
    }
    qmp_session_send(s, reply);
}

static void qmp_session_send_greeting(QmpSession *s)
{
    JsonObject *qemu = json_object_new();
    json_object_set_int_member(qemu, "micro", MONITOR_QEMU_MICRO);
    json_object_set_int_member(qemu, "minor", MONITOR_QEMU_MINOR);
    json_object_set_int_member(qemu, "major", MONITOR_QEMU_MAJOR);
    JsonObject *version = json_object_new();
    json_object_set_object_member(version, "qemu", qemu);
    json_object_set_string_member(version, "package",
                                  "shardvm " SHARDVM_PACKAGE_VERSION);
    JsonArray *caps = json_array_new();
    json_array_add_string_element(caps, "oob");
    JsonObject *qmp = json_object_new();
    json_object_set_object_member(qmp, "version", version);
    json_object_set_array_member(qmp, "capabilities", caps);
    JsonObject *greeting = json_object_new();
    json_object_set_object_member(greeting, "QMP", qmp);
    qmp_session_send(s, greeting);
}

/* ---- commands ---------------------------------------------------------- */

/* qmp_capabilities [enable: ["oob"]] */
static void qmp_session_capabilities(QmpSession *s, JsonObject *args,
                                     JsonNode *id)
{
    bool oob = false;
    if (args) {
        GList *names = json_object_get_members(args);
        for (GList *l = names; l; l = l->next) {
            const char *k = l->data;
            if (strcmp(k, "enable") != 0) {
                char *d = g_strdup_printf("Parameter '%s' is unexpected", k);
                qmp_session_send_error(s, QMP_ERROR_GENERIC, d, id);
                g_free(d);
                g_list_free(names);
                return;
            }
        }
        g_list_free(names);
        JsonNode *en = json_object_get_member(args, "enable");
        if (en && !JSON_NODE_HOLDS_ARRAY(en)) {
            qmp_session_send_error(s, QMP_ERROR_GENERIC,
                                   "Invalid parameter type for 'enable', "
                                   "expected: array", id);
            return;
        }
        JsonArray *a = en ? json_node_get_array(en) : NULL;
        for (guint i = 0; a && i < json_array_get_length(a); i++) {
            JsonNode *e = json_array_get_element(a, i);
            const char *v = JSON_NODE_HOLDS_VALUE(e) &&
                            json_node_get_value_type(e) == G_TYPE_STRING ?
                            json_node_get_string(e) : NULL;
            if (!v) {
                qmp_session_send_error(s, QMP_ERROR_GENERIC,
                                       "Invalid parameter type for "
                                       "'enable[0]', expected: string", id);
                return;
            }
            if (strcmp(v, "oob") != 0) {
                char *d = g_strdup_printf("Parameter 'enable' does not "
                                          "accept value '%s'", v);
                qmp_session_send_error(s, QMP_ERROR_GENERIC, d, id);
                g_free(d);
                return;
            }
            oob = true;
        }
    }
    s->negotiated = true;
    s->oob = oob;
    qmp_session_send_return(s, qmp_node_object(json_object_new()), id);
}

/* A string member, or NULL when it is not a JSON string. */
static const char *qmp_member_string(JsonNode *n)
{
    if (!n || !JSON_NODE_HOLDS_VALUE(n) ||
        json_node_get_value_type(n) != G_TYPE_STRING) {
        return NULL;
    }
    return json_node_get_string(n);
}

/* One request object: check its members the way QEMU's qmp_dispatch
 * does, then run it. */
static void qmp_session_request(QmpSession *s, JsonObject *req)
{
    JsonNode *id = json_object_get_member(req, "id");
    JsonNode *exec = json_object_get_member(req, "execute");
    JsonNode *oob = json_object_get_member(req, "exec-oob");
    JsonNode *argn = json_object_get_member(req, "arguments");
    const char *bad = NULL;
    char *desc = NULL;

    GList *names = json_object_get_members(req);
    for (GList *l = names; l && !bad; l = l->next) {
        const char *k = l->data;
        if (strcmp(k, "execute") && strcmp(k, "arguments") &&
            strcmp(k, "id") && (strcmp(k, "exec-oob") || !s->oob)) {
            bad = k;
        }
    }
    if (exec && !qmp_member_string(exec)) {
        desc = g_strdup("QMP input member 'execute' must be a string");
    } else if (oob && s->oob && !qmp_member_string(oob)) {
        desc = g_strdup("QMP input member 'exec-oob' must be a string");
    } else if (argn && !JSON_NODE_HOLDS_OBJECT(argn)) {
        desc = g_strdup("QMP input member 'arguments' must be an object");
    } else if (bad) {
        desc = g_strdup_printf("QMP input member '%s' is unexpected", bad);
    } else if (exec && oob) {
        desc = g_strdup("QMP input member 'execute' and 'exec-oob' are "
                        "mutually exclusive");
    } else if (!exec && !oob) {
        desc = g_strdup("QMP input lacks member 'execute'");
    }
    g_list_free(names);
    if (desc) {
        qmp_session_send_error(s, QMP_ERROR_GENERIC, desc, id);
        g_free(desc);
        return;
    }

    const char *name = qmp_member_string(exec ? exec : oob);
    JsonObject *args = argn ? json_node_get_object(argn) : NULL;

    if (!s->negotiated) {
        if (strcmp(name, "qmp_capabilities") != 0) {
            qmp_session_send_error(s, QMP_ERROR_COMMAND_NOT_FOUND,
                                   "Expecting capabilities negotiation with "
                                   "'qmp_capabilities'", id);
        } else {
            qmp_session_capabilities(s, args, id);
        }
        return;
    }
    if (!strcmp(name, "qmp_capabilities")) {
        qmp_session_send_error(s, QMP_ERROR_COMMAND_NOT_FOUND,
                               "Capabilities negotiation is already "
                               "complete, command ignored", id);
        return;
    }
    if (oob) {
        /* No shardvm command runs out of band (as most of QEMU's). */
        desc = qmp_command_exists(name)
               ? g_strdup_printf("The command %s does not support OOB", name)
               : g_strdup_printf("The command %s has not been found", name);
        qmp_session_send_error(s, qmp_command_exists(name)
                               ? QMP_ERROR_GENERIC
                               : QMP_ERROR_COMMAND_NOT_FOUND, desc, id);
        g_free(desc);
        return;
    }

    QmpError *err = NULL;
    /* The command may emit events (STOP...) to every client, this one
     * included, before its reply: QEMU's order. */
    JsonNode *ret = qmp_command_run(s->mon, name, args, &err);
    if (ret) {
        qmp_session_send_return(s, ret, id);
    } else {
        qmp_session_send_error(s, err->cls, err->desc, id);
        qmp_error_free(err);
    }
}

/* One framed message: the framing layer's verdict, UTF-8 check, json-glib
 * parse, dispatch. */

/* Duplicate keys: json-glib reports each member it parses ("object-member")
 * and then each object ("object-end"); an object with fewer members than
 * were parsed into it had two equal keys. */
typedef struct QmpKeyCount {
    GHashTable *members; /* JsonObject * -> members parsed so far */
    bool duplicate;
} QmpKeyCount;

static void qmp_key_counted(JsonParser *p, JsonObject *o, const char *name,
                            gpointer opaque)
{
    QmpKeyCount *kc = opaque;
    guint n = GPOINTER_TO_UINT(g_hash_table_lookup(kc->members, o));
    g_hash_table_insert(kc->members, o, GUINT_TO_POINTER(n + 1));
}

static void qmp_key_check(JsonParser *p, JsonObject *o, gpointer opaque)
{
    QmpKeyCount *kc = opaque;
    guint n = GPOINTER_TO_UINT(g_hash_table_lookup(kc->members, o));
    if (n > json_object_get_size(o)) {
        kc->duplicate = true;
    }
    g_hash_table_remove(kc->members, o);
}

/* True when every string (member names too) under @n is UTF-8: the
 * stream refuses the escapes json-glib decodes into other bytes, and this
 * keeps a reply echoing the id readable should one more such case exist. */
static bool qmp_json_is_utf8(JsonNode *n)
{
    switch (json_node_get_node_type(n)) {
    case JSON_NODE_OBJECT: {
        JsonObjectIter it;
        const char *name;
        JsonNode *v;
        json_object_iter_init(&it, json_node_get_object(n));
        while (json_object_iter_next(&it, &name, &v)) {
            if (!g_utf8_validate(name, -1, NULL) || !qmp_json_is_utf8(v)) {
                return false;
            }
        }
        return true;
    }
    case JSON_NODE_ARRAY: {
        JsonArray *a = json_node_get_array(n);
        for (guint i = 0; i < json_array_get_length(a); i++) {
            if (!qmp_json_is_utf8(json_array_get_element(a, i))) {
                return false;
            }
        }
        return true;
    }
    case JSON_NODE_VALUE:
        return json_node_get_value_type(n) != G_TYPE_STRING ||
               g_utf8_validate(json_node_get_string(n), -1, NULL);
    default:
        return true;
    }
}

static bool qmp_session_message(void *opaque, const char *msg, size_t len,
                                const char *error)
{
    QmpSession *s = opaque;

    if (error) {
        char *d = g_strdup_printf("JSON parse error, %s", error);
        qmp_session_send_error(s, QMP_ERROR_GENERIC, d, NULL);
        g_free(d);
        return !s->dead;
    }
    if (!g_utf8_validate(msg, (gssize)len, NULL)) {
        qmp_session_send_error(s, QMP_ERROR_GENERIC,
                               "JSON parse error, invalid UTF-8 sequence",
                               NULL);
        return !s->dead;
    }
    JsonParser *p = json_parser_new_immutable();
    GError *gerr = NULL;
    QmpKeyCount kc = { g_hash_table_new(NULL, NULL), false };
    g_signal_connect(p, "object-member", G_CALLBACK(qmp_key_counted), &kc);
    g_signal_connect(p, "object-end", G_CALLBACK(qmp_key_check), &kc);
    bool parsed = json_parser_load_from_data(p, msg, (gssize)len, &gerr);
    g_hash_table_unref(kc.members);
    if (!parsed) {
        char *d = g_strdup_printf("JSON parse error, %s", gerr->message);
        qmp_session_send_error(s, QMP_ERROR_GENERIC, d, NULL);
        g_free(d);
        g_error_free(gerr);
    } else if (json_parser_get_root(p) &&
               !qmp_json_is_utf8(json_parser_get_root(p))) {
        qmp_session_send_error(s, QMP_ERROR_GENERIC,
                               "JSON parse error, invalid UTF-8 sequence",
                               NULL);
    } else if (kc.duplicate) {
        /* json-glib keeps the last of equal keys: {"execute":"query-status",
         * "execute":"quit"} would quit while a filter reading the first
         * one saw a query.  QEMU refuses it. */
        qmp_session_send_error(s, QMP_ERROR_GENERIC,
                               "JSON parse error, duplicate key", NULL);
    } else {
        JsonNode *root = json_parser_get_root(p);
        if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
            qmp_session_send_error(s, QMP_ERROR_GENERIC,
                                   "QMP input must be a JSON object", NULL);
        } else {
            qmp_session_request(s, json_node_get_object(root));
        }
    }
    g_object_unref(p);
    return !s->dead;
}

/* ---- life cycle -------------------------------------------------------- */

QmpSession *qmp_session_new(Monitor *mon, QmpSessionWriteFunc *write,
                            void *opaque)
{
    QmpSession *s = g_new0(QmpSession, 1);
    s->mon = mon;
    s->write = write;
    s->opaque = opaque;
    qmp_stream_init(&s->stream);
    monitor_register_session(mon, s);
    qmp_session_send_greeting(s);
    return s;
}

int qmp_session_feed(QmpSession *s, const char *buf, size_t len)
{
    if (s->dead) {
        return -EPIPE;
    }
    int r = qmp_stream_feed(&s->stream, buf, len, qmp_session_message, s);
    if (r == -EMSGSIZE) {
        qmp_session_send_error(s, QMP_ERROR_GENERIC,
                               "JSON message size limit exceeded", NULL);
        s->dead = true;
        return r;
    }
    return s->dead ? -EPIPE : 0;
}

void qmp_session_free(QmpSession *s)
{
    if (!s) {
        return;
    }
    monitor_unregister_session(s->mon, s);
    qmp_stream_destroy(&s->stream);
    g_free(s);
}

void qmp_session_send_event(QmpSession *s, const char *line, size_t len)
{
    if (s->negotiated) {
        qmp_session_write_line(s, line, len);
    }
}

void monitor_register_session(Monitor *mon, QmpSession *s)
{
    g_ptr_array_add(mon->sessions, s);
}

void monitor_unregister_session(Monitor *mon, QmpSession *s)
{
    g_ptr_array_remove(mon->sessions, s);
}

void monitor_emit_event(Monitor *mon, const char *name, JsonObject *data)
{
    gint64 now = g_get_real_time();
    JsonObject *ts = json_object_new();
    json_object_set_int_member(ts, "seconds", now / G_USEC_PER_SEC);
    json_object_set_int_member(ts, "microseconds", now % G_USEC_PER_SEC);
    JsonObject *ev = json_object_new();
    json_object_set_object_member(ev, "timestamp", ts);
    json_object_set_string_member(ev, "event", name);
    if (data) {
        json_object_set_object_member(ev, "data", json_object_ref(data));
    }
    JsonNode *root = qmp_node_object(ev);
    size_t len;
    char *line = qmp_encode(root, &len);
    json_node_unref(root);
    /* A write failure only marks a session dead; nothing is removed from
     * the array during the walk. */
    for (guint i = 0; i < mon->sessions->len; i++) {
        qmp_session_send_event(g_ptr_array_index(mon->sessions, i), line,
                               len);
    }
    g_free(line);
}
