/*
 * -device parsing into a generic property list, and the device type
 * registry: see include/shardvm/device.h.
 */
#include "shardvm/device.h"
#include "shardvm/error.h"
#include "shardvm/options.h"

#include <errno.h>
#include <json-glib/json-glib.h>
#include <string.h>

/* The registry: one line per device type. */
static const DeviceType device_types[] = {
    { "virtio-blk-pci", "virtio-blk-pci,drive=ID[,iothread=ID,num-queues=N,"
      "queue-size=N,serial=S,addr=SLOT,logical_block_size=N,"
      "physical_block_size=N,discard=on|off,write-zeroes=on|off]",
      virtio_blk_pci_create, virtio_blk_pci_destroy },
};

const DeviceType *device_type_find(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(device_types); i++) {
        if (!strcmp(device_types[i].name, name)) {
            return &device_types[i];
        }
    }
    return NULL;
}

void device_option_free(DeviceOption *d)
{
    if (!d) {
        return;
    }
    g_free(d->driver);
    if (d->props) {
        g_hash_table_unref(d->props);
    }
    g_free(d);
}

/* A JSON member as the string a key=value list would have given. */
static char *json_value_string(JsonNode *n)
{
    switch (json_node_get_node_type(n)) {
    case JSON_NODE_VALUE: {
        GType t = json_node_get_value_type(n);
        if (t == G_TYPE_STRING) {
            return g_strdup(json_node_get_string(n));
        } else if (t == G_TYPE_BOOLEAN) {
            return g_strdup(json_node_get_boolean(n) ? "on" : "off");
        } else if (t == G_TYPE_INT64) {
            return g_strdup_printf("%" G_GINT64_FORMAT, json_node_get_int(n));
        } else if (t == G_TYPE_DOUBLE) {
            char buf[G_ASCII_DTOSTR_BUF_SIZE];
            return g_strdup(g_ascii_dtostr(buf, sizeof(buf),
                                           json_node_get_double(n)));
        }
        return NULL;
    }
    case JSON_NODE_ARRAY:
    case JSON_NODE_OBJECT:
        return json_to_string(n, FALSE);
    default:
        return NULL; /* null */
    }
}

/* Deeper JSON is refused before json-glib sees it: its parser recurses
 * per level and a 128 KiB argument of '[' overflows the stack. */
#define DEVICE_JSON_MAX_DEPTH 32

/*
 * A look at @s (which starts with '{') before json-glib parses it: the
 * deepest nesting of arrays/objects (strings skipped), and whether
 * anything but white space follows the top-level object (json-glib 1.6
 * silently takes the first of several top-level values, and leaks).
 */
static unsigned json_prescan(const char *s, bool *trailing)
{
    unsigned depth = 0, max = 0;
    bool in_string = false;
    *trailing = false;
    for (; *s; s++) {
        if (in_string) {
            if (*s == '\\' && s[1]) {
                s++;
            } else if (*s == '"') {
                in_string = false;
            }
        } else if (*s == '"') {
            in_string = true;
        } else if (*s == '[' || *s == '{') {
            depth++;
            max = MAX(max, depth);
        } else if ((*s == ']' || *s == '}') && depth) {
            if (--depth == 0) {
                s++;
                break;
            }
        }
    }
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') {
        s++;
    }
    *trailing = *s != '\0';
    return max;
}

/* json-glib keeps the last of duplicate members; QEMU refuses them.
 * "object-member" fires once per member parsed, duplicates included. */
typedef struct JsonDupCheck {
    GHashTable *seen;        /* "object-pointer/name" */
    char *dup;               /* the first duplicate name, or NULL */
} JsonDupCheck;

static void json_member_parsed(JsonParser *parser, JsonObject *obj,
                               const char *name, gpointer opaque)
{
    JsonDupCheck *c = opaque;
    char *key = g_strdup_printf("%p/%s", (void *)obj, name);
    if (!g_hash_table_add(c->seen, key) && !c->dup) {
        c->dup = g_strdup(name);
    }
}

/* QEMU's JSON "addr" may be an integer: a devfn (slot << 3 | function).
 * Give it the SLOT.FN spelling device_props_take_pci_slot() reads. */
static char *json_addr_string(JsonNode *n)
{
    if (JSON_NODE_HOLDS_VALUE(n) &&
        json_node_get_value_type(n) == G_TYPE_INT64) {
        gint64 devfn = json_node_get_int(n);
        if (devfn < 0 || devfn > 0xff) {
            return NULL;
        }
        return g_strdup_printf("%x.%x", (unsigned)(devfn >> 3),
                               (unsigned)(devfn & 7));
    }
    return json_value_string(n);
}

static GHashTable *parse_json(const char *arg, GError **errp)
{
    JsonParser *parser = json_parser_new();
    GError *jerr = NULL;
    GHashTable *props = NULL;
    JsonDupCheck dups = { g_hash_table_new_full(g_str_hash, g_str_equal,
                                                g_free, NULL), NULL };

    g_signal_connect(parser, "object-member", G_CALLBACK(json_member_parsed),
                     &dups);
    bool trailing;
    if (json_prescan(arg, &trailing) > DEVICE_JSON_MAX_DEPTH) {
        shardvm_error_set(errp, -EINVAL, "-device: JSON nested deeper than "
                          "%d levels", DEVICE_JSON_MAX_DEPTH);
        goto out;
    }
    if (trailing) {
        shardvm_error_set(errp, -EINVAL, "-device: trailing characters "
                          "after the JSON object");
        goto out;
    }
    if (!json_parser_load_from_data(parser, arg, -1, &jerr)) {
        shardvm_error_set(errp, -EINVAL, "-device: invalid JSON: %s",
                          jerr->message);
        g_error_free(jerr);
        goto out;
    }
    if (dups.dup) {
        shardvm_error_set(errp, -EINVAL, "-device: duplicate key '%s'",
                          dups.dup);
        goto out;
    }
    JsonNode *root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        shardvm_error_set(errp, -EINVAL, "-device: JSON must be an object");
        goto out;
    }
    props = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    JsonObject *obj = json_node_get_object(root);
    GList *members = json_object_get_members(obj);
    for (GList *l = members; l; l = l->next) {
        const char *key = l->data;
        JsonNode *n = json_object_get_member(obj, key);
        char *v = strcmp(key, "addr") ? json_value_string(n)
                                      : json_addr_string(n);
        if (!v) {
            shardvm_error_set(errp, -EINVAL, "-device: invalid value for "
                              "'%s'", key);
            g_hash_table_unref(props);
            props = NULL;
            break;
        }
        g_hash_table_insert(props, g_strdup(key), v);
    }
    g_list_free(members);
out:
    g_object_unref(parser);
    g_hash_table_unref(dups.seen);
    g_free(dups.dup);
    return props;
}

DeviceOption *device_option_parse(const char *arg, GError **errp)
{
    GHashTable *props = arg[0] == '{'
        ? parse_json(arg, errp)
        : options_parse_keyval("device", arg, "driver", errp);
    if (!props) {
        return NULL;
    }
    gpointer k = NULL, v = NULL;
    if (!g_hash_table_steal_extended(props, "driver", &k, &v) ||
        !*(char *)v) {
        if (k) {
            g_free(k);
            g_free(v);
        }
        g_hash_table_unref(props);
        shardvm_error_set(errp, -EINVAL, "-device: no driver in '%s'", arg);
        return NULL;
    }
    g_free(k);
    DeviceOption *d = g_new0(DeviceOption, 1);
    d->driver = v;
    d->props = props;
    return d;
}

int device_props_take_pci_slot(GHashTable *props, int *slot, GError **errp)
{
    gpointer k, v;
    *slot = -1;
    if (!g_hash_table_steal_extended(props, "addr", &k, &v)) {
        return 0;
    }
    const char *s = v;
    if (g_str_has_prefix(s, "0x") || g_str_has_prefix(s, "0X")) {
        s += 2;
    }
    char *dot = strchr(s, '.');
    char *slot_s = dot ? g_strndup(s, dot - s) : g_strdup(s);
    guint64 n = 0;
    bool ok = g_ascii_string_to_unsigned(slot_s, 16, 1, 31, &n, NULL) &&
              (!dot || !strcmp(dot, ".0"));
    int r = 0;
    if (ok) {
        *slot = (int)n;
    } else {
        r = shardvm_error_set(errp, -EINVAL, "-device: invalid addr '%s' "
                              "(a slot 1..1f, function 0)", (char *)v);
    }
    g_free(slot_s);
    g_free(k);
    g_free(v);
    return r;
}
