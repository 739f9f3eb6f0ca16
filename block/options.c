/*
 * -drive and -blockdev parsing, QEMU's spelling.  Pure: strings in, a
 * BlockOptions out or a GError naming the bad key.
 *
 * Both forms end up as a flat key -> value table (the JSON form of
 * -blockdev is flattened: {"cache":{"direct":true}} becomes cache.direct=on)
 * and one function per option family takes its keys out of the table; a
 * key left over at the end is unknown.
 */
#include "block-int.h"
#include "shardvm/error.h"
#include "shardvm/options.h"

#include <errno.h>
#include <json-glib/json-glib.h>
#include <string.h>

#define NULL_DEFAULT_SIZE (1ull << 30) /* QEMU's null-co default */

void block_options_clear(BlockOptions *o)
{
    g_free(o->id);
    g_free(o->filename);
    g_free(o->image);
    g_free(o->blkdebug_config);
    g_free(o->inject);
    memset(o, 0, sizeof(*o));
}

void block_options_copy(BlockOptions *dst, const BlockOptions *src)
{
    *dst = *src;
    dst->id = g_strdup(src->id);
    dst->filename = g_strdup(src->filename);
    dst->image = g_strdup(src->image);
    dst->blkdebug_config = g_strdup(src->blkdebug_config);
    dst->inject = src->nr_inject
                  ? g_memdup2(src->inject,
                              src->nr_inject * sizeof(*src->inject))
                  : NULL;
}

/* Remove @key from @kv and return its value (caller frees), or NULL. */
static char *take(GHashTable *kv, const char *key)
{
    gpointer k, v;
    if (!g_hash_table_steal_extended(kv, key, &k, &v)) {
        return NULL;
    }
    g_free(k);
    return v;
}

static int bad_value(GError **errp, const char *opt, const char *key,
                     const char *val, const char *expected)
{
    return shardvm_error_set(errp, -EINVAL,
                             "%s: invalid value '%s' for '%s' (expected %s)",
                             opt, val, key, expected);
}

/* Take a boolean (on/off, true/false, yes/no) if present. */
static int take_bool(GHashTable *kv, const char *opt, const char *key,
                     bool *out, GError **errp)
{
    g_autofree char *v = take(kv, key);
    if (!v) {
        return 0;
    }
    if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes")) {
        *out = true;
    } else if (!strcmp(v, "off") || !strcmp(v, "false") ||
               !strcmp(v, "no")) {
        *out = false;
    } else {
        return bad_value(errp, opt, key, v, "on or off");
    }
    return 0;
}

static int take_aio(GHashTable *kv, const char *opt, BlockOptions *o,
                    GError **errp)
{
    g_autofree char *v = take(kv, "aio");
    if (!v) {
        return 0;
    }
    if (!strcmp(v, "threads")) {
        o->aio = BLOCK_AIO_THREADS;
    } else if (!strcmp(v, "native")) {
        o->aio = BLOCK_AIO_NATIVE;
    } else if (!strcmp(v, "io_uring")) {
        o->aio = BLOCK_AIO_IO_URING;
    } else {
        return bad_value(errp, opt, "aio", v, "threads, native or io_uring");
    }
    return 0;
}

static int take_discard(GHashTable *kv, const char *opt, BlockOptions *o,
                        GError **errp)
{
    g_autofree char *v = take(kv, "discard");
    if (!v) {
        return 0;
    }
    if (!strcmp(v, "ignore") || !strcmp(v, "off")) {
        o->discard = BLOCK_DISCARD_IGNORE;
    } else if (!strcmp(v, "unmap") || !strcmp(v, "on")) {
        o->discard = BLOCK_DISCARD_UNMAP;
    } else {
        return bad_value(errp, opt, "discard", v, "ignore or unmap");
    }
    return 0;
}

static int take_locking(GHashTable *kv, const char *opt, BlockOptions *o,
                        GError **errp)
{
    g_autofree char *v = take(kv, "locking");
    if (!v) {
        return 0;
    }
    if (!strcmp(v, "auto")) {
        o->locking = BLOCK_LOCKING_AUTO;
    } else if (!strcmp(v, "on")) {
        o->locking = BLOCK_LOCKING_ON;
    } else if (!strcmp(v, "off")) {
        o->locking = BLOCK_LOCKING_OFF;
    } else {
        return bad_value(errp, opt, "locking", v, "auto, on or off");
    }
    return 0;
}

/* -drive cache=MODE: see the table in block.h. */
static int take_cache_mode(GHashTable *kv, const char *opt, BlockOptions *o,
                           GError **errp)
{
    static const struct {
        const char *name;
        bool direct, no_flush, writeback;
    } modes[] = {
        { "writeback", false, false, true },
        { "none", true, false, true },
        { "writethrough", false, false, false },
        { "directsync", true, false, false },
        { "unsafe", false, true, true },
    };
    g_autofree char *v = take(kv, "cache");
    if (!v) {
        return 0;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(modes); i++) {
        if (!strcmp(v, modes[i].name)) {
            o->cache_direct = modes[i].direct;
            o->cache_no_flush = modes[i].no_flush;
            o->cache_writeback = modes[i].writeback;
            return 0;
        }
    }
    return bad_value(errp, opt, "cache", v,
                     "none, writeback, writethrough, directsync or unsafe");
}

static int take_uint(GHashTable *kv, const char *opt, const char *key,
                     bool size_suffix, uint64_t max, uint64_t *out,
                     GError **errp)
{
    g_autofree char *v = take(kv, key);
    guint64 u;
    if (!v) {
        return 0;
    }
    if (size_suffix) {
        if (options_parse_size(v, 1, out) < 0) {
            return bad_value(errp, opt, key, v, "a size");
        }
        return 0;
    }
    if (!g_ascii_string_to_unsigned(v, 10, 0, max, &u, NULL)) {
        return bad_value(errp, opt, key, v, "a number");
    }
    *out = u;
    return 0;
}

/* driver=: the drivers we have, and clear words for the ones we lack. */
static int parse_driver(const char *opt, const char *key, const char *v,
                        BlockOptions *o, GError **errp)
{
    if (!strcmp(v, "file") || !strcmp(v, "host_device")) {
        o->driver = BLOCK_DRIVER_FILE;
    } else if (!strcmp(v, "null-co")) {
        o->driver = BLOCK_DRIVER_NULL_CO;
    } else if (!strcmp(v, "null-aio")) {
        o->driver = BLOCK_DRIVER_NULL_AIO;
    } else if (!strcmp(v, "blkdebug")) {
        o->driver = BLOCK_DRIVER_BLKDEBUG;
    } else if (!strcmp(v, "qcow2") || !strcmp(v, "raw")) {
        return shardvm_error_set(errp, -ENOTSUP,
                                 "%s: %s '%s' is not supported yet (raw "
                                 "images only: driver=file)", opt, key, v);
    } else {
        return shardvm_error_set(errp, -EINVAL,
                                 "%s: unknown %s '%s' (expected file, "
                                 "null-co, null-aio or blkdebug)", opt, key,
                                 v);
    }
    return 0;
}

/* Take the keys starting with @prefix out of @kv into a new table whose
 * keys lack the prefix; NULL when there are none. */
static GHashTable *take_prefixed(GHashTable *kv, const char *prefix)
{
    GHashTable *sub = NULL;
    GHashTableIter it;
    gpointer k, v;
    size_t pl = strlen(prefix);

    g_hash_table_iter_init(&it, kv);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        if (strncmp(k, prefix, pl) != 0) {
            continue;
        }
        if (!sub) {
            sub = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                        g_free);
        }
        g_hash_table_insert(sub, g_strdup((char *)k + pl), v);
        g_hash_table_iter_steal(&it);
        g_free(k);
    }
    return sub;
}

#define BLKDEBUG_MAX_RULES 64

/*
 * blkdebug: image=NODE, config=FILE, inject-error.N.KEY=VALUE (QEMU's
 * list syntax: N from 0 without gaps; the JSON form's array flattens to
 * the same keys).
 */
static int take_blkdebug(GHashTable *kv, const char *opt, BlockOptions *o,
                         GError **errp)
{
    GArray *rules;
    int r = 0;

    o->image = take(kv, "image");
    o->blkdebug_config = take(kv, "config");
    if (!o->image || !*o->image) {
        return shardvm_error_set(errp, -EINVAL, "%s: blkdebug needs "
                                 "image=NODE (the node-name of a -blockdev "
                                 "or the id of a -drive defined before it)",
                                 opt);
    }
    rules = g_array_new(FALSE, FALSE, sizeof(BlockInjectRule));
    for (unsigned n = 0; n < BLKDEBUG_MAX_RULES; n++) {
        g_autofree char *prefix = g_strdup_printf("inject-error.%u.", n);
        GHashTable *sub = take_prefixed(kv, prefix);
        GHashTableIter it;
        gpointer k, v;
        BlockInjectRule rule;

        if (!sub) {
            break;
        }
        blkdebug_rule_init(&rule);
        g_hash_table_iter_init(&it, sub);
        while (r == 0 && g_hash_table_iter_next(&it, &k, &v)) {
            GError *kerr = NULL;
            r = blkdebug_rule_set(&rule, k, v, &kerr);
            if (r < 0) {
                shardvm_error_set(errp, r, "%s: inject-error.%u: %s", opt, n,
                                  kerr->message);
                g_error_free(kerr);
            }
        }
        g_hash_table_unref(sub);
        if (r < 0) {
            break;
        }
        g_array_append_val(rules, rule);
    }
    o->nr_inject = rules->len;
    o->inject = (BlockInjectRule *)g_array_free(rules, rules->len == 0);
    return r;
}

/* Keys -drive and -blockdev share; null-driver keys only where allowed. */
static int take_common(GHashTable *kv, const char *opt, BlockOptions *o,
                       GError **errp)
{
    int r;
    if ((r = take_aio(kv, opt, o, errp)) < 0 ||
        (r = take_discard(kv, opt, o, errp)) < 0 ||
        (r = take_locking(kv, opt, o, errp)) < 0 ||
        (r = take_bool(kv, opt, "cache.direct", &o->cache_direct,
                       errp)) < 0 ||
        (r = take_bool(kv, opt, "cache.no-flush", &o->cache_no_flush,
                       errp)) < 0) {
        return r;
    }
    if (o->driver == BLOCK_DRIVER_BLKDEBUG) {
        return take_blkdebug(kv, opt, o, errp);
    }
    if (o->driver != BLOCK_DRIVER_FILE) {
        if ((r = take_bool(kv, opt, "read-zeroes", &o->null_read_zeroes,
                           errp)) < 0 ||
            /* QEMU's limit: latency-ns is an int64 there */
            (r = take_uint(kv, opt, "latency-ns", false, G_MAXINT64,
                           &o->null_latency_ns, errp)) < 0 ||
            (r = take_uint(kv, opt, "size", true, G_MAXUINT64, &o->null_size,
                           errp)) < 0) {
            return r;
        }
        if (o->null_size % 512) {
            return shardvm_error_set(errp, -EINVAL,
                                     "%s: size %" G_GUINT64_FORMAT " is not "
                                     "a multiple of 512", opt, o->null_size);
        }
    }
    return 0;
}

static int check_empty(GHashTable *kv, const char *opt, GError **errp)
{
    GHashTableIter it;
    gpointer key;

    g_hash_table_iter_init(&it, kv);
    if (g_hash_table_iter_next(&it, &key, NULL)) {
        return shardvm_error_set(errp, -EINVAL, "%s: unknown parameter '%s'",
                                 opt, (const char *)key);
    }
    return 0;
}

static void set_defaults(BlockOptions *o)
{
    memset(o, 0, sizeof(*o));
    o->cache_writeback = true;
    o->null_size = NULL_DEFAULT_SIZE;
    o->werror = BLOCK_ERROR_POLICY_ENOSPC;
    o->rerror = BLOCK_ERROR_POLICY_REPORT;
}

/* -drive werror= / rerror= (no "auto": that is the device's). */
static int take_error_policy(GHashTable *kv, const char *key,
                             BlockErrorPolicy *out, GError **errp)
{
    g_autofree char *v = take(kv, key);
    if (v && block_error_policy_parse(v, false, out) < 0) {
        return bad_value(errp, "-drive", key, v,
                         "report, ignore, enospc or stop");
    }
    return 0;
}

static int parse_drive_kv(GHashTable *kv, BlockOptions *o, GError **errp)
{
    const char *opt = "-drive";
    g_autofree char *format = take(kv, "format");
    g_autofree char *iface = take(kv, "if");
    g_autofree char *driver = take(kv, "driver");
    g_autofree char *media = take(kv, "media");
    bool ro = false;
    int r;

    if (format && strcmp(format, "raw") != 0) {
        if (!strcmp(format, "qcow2")) {
            return shardvm_error_set(errp, -ENOTSUP,
                                     "-drive: format 'qcow2' is not "
                                     "supported yet (raw images only)");
        }
        return bad_value(errp, opt, "format", format, "raw");
    }
    if (iface && !strcmp(iface, "virtio")) {
        o->if_virtio = true;
    } else if (iface && strcmp(iface, "none") != 0) {
        return shardvm_error_set(errp, -ENOTSUP,
                                 "-drive: if=%s is not supported (expected "
                                 "none or virtio)", iface);
    }
    if (media && strcmp(media, "disk") != 0) {
        return bad_value(errp, opt, "media", media, "disk");
    }
    if (driver && (r = parse_driver(opt, "driver", driver, o, errp)) < 0) {
        return r;
    }
    o->id = take(kv, "id");
    o->filename = take(kv, "file");
    if (g_hash_table_contains(kv, "readonly") &&
        g_hash_table_contains(kv, "read-only")) {
        return shardvm_error_set(errp, -EINVAL, "-drive: 'readonly' and "
                                 "'read-only' are the same parameter: give "
                                 "one");
    }
    if ((r = take_cache_mode(kv, opt, o, errp)) < 0 ||
        (r = take_bool(kv, opt, "readonly", &ro, errp)) < 0 ||
        (r = take_bool(kv, opt, "read-only", &ro, errp)) < 0 ||
        (r = take_common(kv, opt, o, errp)) < 0) {
        return r;
    }
    o->read_only = ro;
    if ((r = take_error_policy(kv, "werror", &o->werror, errp)) < 0 ||
        (r = take_error_policy(kv, "rerror", &o->rerror, errp)) < 0) {
        return r;
    }
    if (o->driver == BLOCK_DRIVER_FILE && (!o->filename || !*o->filename)) {
        return shardvm_error_set(errp, -EINVAL,
                                 "-drive: parameter 'file' is missing");
    }
    if (o->id && !*o->id) {
        return bad_value(errp, opt, "id", "", "a name");
    }
    return check_empty(kv, opt, errp);
}

static int parse_blockdev_kv(GHashTable *kv, BlockOptions *o, GError **errp)
{
    const char *opt = "-blockdev";
    g_autofree char *driver = take(kv, "driver");
    int r;

    if (!driver) {
        return shardvm_error_set(errp, -EINVAL,
                                 "-blockdev: parameter 'driver' is missing");
    }
    if ((r = parse_driver(opt, "driver", driver, o, errp)) < 0) {
        return r;
    }
    o->id = take(kv, "node-name");
    if (o->driver == BLOCK_DRIVER_FILE) {
        o->filename = take(kv, "filename");
        if (!o->filename || !*o->filename) {
            return shardvm_error_set(errp, -EINVAL, "-blockdev: parameter "
                                     "'filename' is missing");
        }
    }
    if ((r = take_bool(kv, opt, "read-only", &o->read_only, errp)) < 0 ||
        (r = take_common(kv, opt, o, errp)) < 0) {
        return r;
    }
    if (!o->id || !*o->id) {
        return shardvm_error_set(errp, -EINVAL,
                                 "-blockdev: parameter 'node-name' is missing");
    }
    return check_empty(kv, opt, errp);
}

/* Flatten one JSON member into @kv ("prefix.key" -> string). */
static int json_flatten(GHashTable *kv, const char *prefix, JsonNode *node,
                        GError **errp)
{
    if (JSON_NODE_HOLDS_OBJECT(node)) {
        JsonObject *obj = json_node_get_object(node);
        g_autoptr(GList) members = json_object_get_members(obj);
        for (GList *m = members; m; m = m->next) {
            const char *name = m->data;
            g_autofree char *key = prefix ? g_strdup_printf("%s.%s", prefix,
                                                            name)
                                          : g_strdup(name);
            int r = json_flatten(kv, key, json_object_get_member(obj, name),
                                 errp);
            if (r < 0) {
                return r;
            }
        }
        return 0;
    }
    if (prefix && JSON_NODE_HOLDS_ARRAY(node)) {
        /* [a, b] -> prefix.0, prefix.1 (QEMU's list flattening) */
        JsonArray *arr = json_node_get_array(node);
        for (guint i = 0; i < json_array_get_length(arr); i++) {
            g_autofree char *key = g_strdup_printf("%s.%u", prefix, i);
            int r = json_flatten(kv, key, json_array_get_element(arr, i),
                                 errp);
            if (r < 0) {
                return r;
            }
        }
        return 0;
    }
    if (!prefix || !JSON_NODE_HOLDS_VALUE(node)) {
        return shardvm_error_set(errp, -EINVAL, "-blockdev: invalid JSON "
                                 "value for '%s'", prefix ? prefix : "");
    }
    GType type = json_node_get_value_type(node);
    char *val;
    if (type == G_TYPE_BOOLEAN) {
        val = g_strdup(json_node_get_boolean(node) ? "on" : "off");
    } else if (type == G_TYPE_INT64) {
        val = g_strdup_printf("%" G_GINT64_FORMAT, json_node_get_int(node));
    } else if (type == G_TYPE_STRING) {
        val = g_strdup(json_node_get_string(node));
    } else {
        return shardvm_error_set(errp, -EINVAL, "-blockdev: invalid JSON "
                                 "value for '%s'", prefix);
    }
    if (g_hash_table_contains(kv, prefix)) {
        /* {"cache":{"direct":true},"cache.direct":false}: which one? */
        g_free(val);
        return shardvm_error_set(errp, -EINVAL, "-blockdev: repeated "
                                 "parameter '%s'", prefix);
    }
    g_hash_table_insert(kv, g_strdup(prefix), val);
    return 0;
}

static GHashTable *json_to_kv(const char *arg, GError **errp)
{
    g_autoptr(JsonParser) parser = json_parser_new();
    GError *jerr = NULL;
    GHashTable *kv;

    if (!json_parser_load_from_data(parser, arg, -1, &jerr)) {
        shardvm_error_set(errp, -EINVAL, "-blockdev: invalid JSON: %s",
                          jerr->message);
        g_error_free(jerr);
        return NULL;
    }
    JsonNode *root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        shardvm_error_set(errp, -EINVAL, "-blockdev: JSON must be an object");
        return NULL;
    }
    kv = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    if (json_flatten(kv, NULL, root, errp) < 0) {
        g_hash_table_unref(kv);
        return NULL;
    }
    return kv;
}

int block_parse_drive(const char *arg, BlockOptions *out, GError **errp)
{
    GHashTable *kv;
    int r;

    set_defaults(out);
    kv = options_parse_keyval("drive", arg, NULL, errp);
    if (!kv) {
        return -EINVAL;
    }
    r = parse_drive_kv(kv, out, errp);
    g_hash_table_unref(kv);
    if (r < 0) {
        block_options_clear(out);
    }
    return r;
}

int block_parse_blockdev(const char *arg, BlockOptions *out, GError **errp)
{
    GHashTable *kv;
    int r;

    set_defaults(out);
    while (g_ascii_isspace(*arg)) {
        arg++;
    }
    kv = *arg == '{' ? json_to_kv(arg, errp)
                     : options_parse_keyval("blockdev", arg, NULL, errp);
    if (!kv) {
        return -EINVAL;
    }
    r = parse_blockdev_kv(kv, out, errp);
    g_hash_table_unref(kv);
    if (r < 0) {
        block_options_clear(out);
    }
    return r;
}
