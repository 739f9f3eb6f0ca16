/*
 * Monitor option strings: -qmp ADDR,server=on,wait=off; -chardev
 * socket,id=X,path=P|host=H,port=N,server=on,wait=off; -mon
 * chardev=X,mode=control.  The result is a listener address in
 * monitor_add_listener()'s syntax: "unix:PATH" or "tcp:HOST:PORT", each
 * ',' in it doubled (",," as in the option) so that it is never taken for
 * -qmp's ",server=on,..." options.
 */
#include "qmp-internal.h"
#include "shardvm/error.h"

#include <errno.h>
#include <string.h>

/* Split "first,key=value,flag,..." (",," is a literal comma) into a table;
 * the first item goes under @implied when it has no '='.  Old-style bare
 * flags: "server" = server=on, "nowait" = wait=off, "wait" = wait=on. */
static GHashTable *addr_split(const char *opt, const char *arg,
                              const char *implied, GError **errp)
{
    GHashTable *kv = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                           g_free);
    GString *cur = g_string_new(NULL);
    GPtrArray *items = g_ptr_array_new_with_free_func(g_free);

    for (const char *s = arg; ; s++) {
        if (*s == ',' && s[1] == ',') {
            g_string_append_c(cur, ',');
            s++;
        } else if (*s == ',' || !*s) {
            g_ptr_array_add(items, g_string_free(cur, FALSE));
            cur = g_string_new(NULL);
            if (!*s) {
                break;
            }
        } else {
            g_string_append_c(cur, *s);
        }
    }
    g_string_free(cur, TRUE);

    for (guint i = 0; i < items->len; i++) {
        const char *item = g_ptr_array_index(items, i);
        const char *eq = strchr(item, '=');
        char *key, *val;
        if (i == 0 && implied && (!eq || g_str_has_prefix(item, "unix:") ||
                                  g_str_has_prefix(item, "tcp:"))) {
            key = g_strdup(implied);
            val = g_strdup(item);
        } else if (!eq && (!strcmp(item, "server") ||
                           !strcmp(item, "wait"))) {
            key = g_strdup(item);
            val = g_strdup("on");
        } else if (!eq && !strcmp(item, "nowait")) {
            key = g_strdup("wait");
            val = g_strdup("off");
        } else if (!eq || eq == item) {
            shardvm_error_set(errp, -EINVAL, "-%s: invalid parameter '%s' in "
                              "'%s'", opt, item, arg);
            goto fail;
        } else {
            key = g_strndup(item, eq - item);
            val = g_strdup(eq + 1);
        }
        if (g_hash_table_contains(kv, key)) {
            shardvm_error_set(errp, -EINVAL, "-%s: repeated parameter '%s' "
                              "in '%s'", opt, key, arg);
            g_free(key);
            g_free(val);
            goto fail;
        }
        g_hash_table_insert(kv, key, val);
    }
    g_ptr_array_unref(items);
    return kv;

fail:
    g_ptr_array_unref(items);
    g_hash_table_unref(kv);
    return NULL;
}

/* Remove @key; returns its value (g_free) or NULL. */
static char *addr_take(GHashTable *kv, const char *key)
{
    gpointer k, v;
    if (!g_hash_table_steal_extended(kv, key, &k, &v)) {
        return NULL;
    }
    g_free(k);
    return v;
}

static bool addr_bool(const char *v, bool dflt, bool *ok)
{
    if (!v) {
        return dflt;
    }
    if (!strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "true")) {
        return true;
    }
    if (!strcmp(v, "off") || !strcmp(v, "no") || !strcmp(v, "false")) {
        return false;
    }
    *ok = false;
    return dflt;
}

/* server=on and wait=off are the only supported mode; anything left in
 * @kv is unknown.  Returns 0 or -EINVAL. */
static int addr_check_server(const char *opt, const char *arg,
                             GHashTable *kv, GError **errp)
{
    char *server = addr_take(kv, "server");
    char *wait = addr_take(kv, "wait");
    bool ok = true;
    bool is_server = addr_bool(server, false, &ok);
    bool waits = addr_bool(wait, true, &ok);
    int r = 0;

    if (!ok) {
        r = shardvm_error_set(errp, -EINVAL, "-%s: server= and wait= take "
                              "on or off in '%s'", opt, arg);
    } else if (!is_server) {
        r = shardvm_error_set(errp, -EINVAL, "-%s: only server=on is "
                              "supported (shardvm listens, it does not "
                              "connect) in '%s'", opt, arg);
    } else if (waits) {
        r = shardvm_error_set(errp, -EINVAL, "-%s: only wait=off is "
                              "supported in '%s'", opt, arg);
    } else {
        GHashTableIter it;
        gpointer key;
        g_hash_table_iter_init(&it, kv);
        if (g_hash_table_iter_next(&it, &key, NULL)) {
            r = shardvm_error_set(errp, -EINVAL, "-%s: unknown parameter "
                                  "'%s' in '%s'", opt, (const char *)key,
                                  arg);
        }
    }
    g_free(server);
    g_free(wait);
    return r;
}

/* @addr (taken) with each ',' doubled. */
static char *addr_escape(char *addr)
{
    if (!addr || !strchr(addr, ',')) {
        return addr;
    }
    GString *s = g_string_new(NULL);
    for (const char *p = addr; *p; p++) {
        g_string_append_c(s, *p);
        if (*p == ',') {
            g_string_append_c(s, ',');
        }
    }
    g_free(addr);
    return g_string_free(s, FALSE);
}

char *monitor_addr_unescape(const char *addr)
{
    GString *s = g_string_new(NULL);
    for (const char *p = addr; *p; p++) {
        if (*p == ',' && p[1] != ',') {
            g_string_free(s, TRUE);
            return NULL;
        }
        g_string_append_c(s, *p);
        p += *p == ',';
    }
    return g_string_free(s, FALSE);
}

/* HOST and PORT -> normalised "tcp:HOST:PORT", or NULL.  As in QEMU, an
 * empty HOST listens on every address ("tcp::4444"), and an IPv6 HOST is
 * written in brackets ("tcp:[::1]:4444"); @host may come with or without
 * them (-chardev host=::1), an unbracketed one with a ':' from -qmp's
 * "tcp:H:P" form is ambiguous and refused by the caller. */
static char *addr_tcp(const char *host, const char *port)
{
    guint64 p;
    if (!host || !port ||
        !g_ascii_string_to_unsigned(port, 10, 1, 65535, &p, NULL)) {
        return NULL;
    }
    size_t n = strlen(host);
    bool bracketed = n >= 2 && host[0] == '[' && host[n - 1] == ']';
    if (bracketed ? (n == 2 || strpbrk(host + 1, "[") ||
                     memchr(host, ']', n - 1))
                  : strpbrk(host, "[]") != NULL) {
        return NULL;
    }
    if (!bracketed && strchr(host, ':')) {
        return g_strdup_printf("tcp:[%s]:%u", host, (unsigned)p);
    }
    return g_strdup_printf("tcp:%s:%u", host, (unsigned)p);
}

char *monitor_parse_qmp(const char *arg, GError **errp)
{
    GHashTable *kv = addr_split("qmp", arg, "addr", errp);
    if (!kv) {
        return NULL;
    }
    char *addr = addr_take(kv, "addr");
    char *out = NULL;

    if (addr && g_str_has_prefix(addr, "unix:") && addr[5]) {
        out = g_strdup(addr);
    } else if (addr && g_str_has_prefix(addr, "tcp:")) {
        const char *colon = strrchr(addr + 4, ':');
        if (colon) {
            char *host = g_strndup(addr + 4, colon - (addr + 4));
            if (host[0] == '[' || !strchr(host, ':')) {
                out = addr_tcp(host, colon + 1);
            }
            g_free(host);
        }
    }
    if (!out) {
        shardvm_error_set(errp, -EINVAL, "-qmp: unsupported address '%s' "
                          "(unix:PATH, tcp:HOST:PORT, tcp::PORT or "
                          "tcp:[IPV6]:PORT)", addr ? addr : arg);
    } else if (addr_check_server("qmp", arg, kv, errp) < 0) {
        g_clear_pointer(&out, g_free);
    }
    g_free(addr);
    g_hash_table_unref(kv);
    return addr_escape(out);
}

/* QEMU's id_wellformed(): a letter, then letters, digits, '-', '.', '_'. */
bool qmp_id_wellformed(const char *id)
{
    if (!g_ascii_isalpha(id[0])) {
        return false;
    }
    for (const char *p = id; *p; p++) {
        if (!g_ascii_isalnum(*p) && !strchr("-._", *p)) {
            return false;
        }
    }
    return true;
}

char *monitor_parse_chardev(const char *arg, char **id_out, GError **errp)
{
    GHashTable *kv = addr_split("chardev", arg, "backend", errp);
    if (!kv) {
        return NULL;
    }
    char *backend = addr_take(kv, "backend");
    char *id = addr_take(kv, "id");
    char *path = addr_take(kv, "path");
    char *host = addr_take(kv, "host");
    char *port = addr_take(kv, "port");
    char *out = NULL;

    if (!backend || strcmp(backend, "socket") != 0) {
        shardvm_error_set(errp, -EINVAL, "-chardev: unsupported backend '%s' "
                          "(socket)", backend ? backend : arg);
    } else if (!id || !*id) {
        shardvm_error_set(errp, -EINVAL, "-chardev: socket needs an id=");
    } else if (!qmp_id_wellformed(id)) {
        shardvm_error_set(errp, -EINVAL, "-chardev: id '%s' must start with a "
                          "letter and hold only letters, digits, '-', '.' and "
                          "'_'", id);
    } else if (path && !host && !port && *path) {
        out = g_strdup_printf("unix:%s", path);
    } else if (!path && port) {
        out = addr_tcp(host ? host : "0.0.0.0", port);
    }
    if (!out && !(errp && *errp)) {
        shardvm_error_set(errp, -EINVAL, "-chardev: socket needs path=PATH "
                          "or host=HOST,port=PORT in '%s'", arg);
    }
    if (out && addr_check_server("chardev", arg, kv, errp) < 0) {
        g_clear_pointer(&out, g_free);
    }
    if (out && id_out) {
        *id_out = g_strdup(id);
    }
    g_free(backend);
    g_free(id);
    g_free(path);
    g_free(host);
    g_free(port);
    g_hash_table_unref(kv);
    return addr_escape(out);
}

char *monitor_parse_mon(const char *arg, GError **errp)
{
    GHashTable *kv = addr_split("mon", arg, "chardev", errp);
    if (!kv) {
        return NULL;
    }
    char *chardev = addr_take(kv, "chardev");
    char *mode = addr_take(kv, "mode");
    char *pretty = addr_take(kv, "pretty");
    bool ok = true;
    char *out = NULL;

    addr_bool(pretty, false, &ok);
    if (!chardev || !*chardev) {
        shardvm_error_set(errp, -EINVAL, "-mon: needs chardev=ID");
    } else if (!mode || strcmp(mode, "control") != 0) {
        shardvm_error_set(errp, -EINVAL, "-mon: only mode=control (QMP) is "
                          "supported; shardvm has no human monitor");
    } else if (!ok) {
        shardvm_error_set(errp, -EINVAL, "-mon: pretty= takes on or off");
    } else if (g_hash_table_size(kv) > 0) {
        GHashTableIter it;
        gpointer key;
        g_hash_table_iter_init(&it, kv);
        g_hash_table_iter_next(&it, &key, NULL);
        shardvm_error_set(errp, -EINVAL, "-mon: unknown parameter '%s'",
                          (const char *)key);
    } else {
        out = g_strdup(chardev);
    }
    g_free(chardev);
    g_free(mode);
    g_free(pretty);
    g_hash_table_unref(kv);
    return out;
}
