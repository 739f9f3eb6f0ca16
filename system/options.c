/*
 * Command-line parser: see include/shardvm/options.h.
 *
 * One table row per option: its name, whether it takes an argument, the
 * handler that stores it and its -help line.  Suboptions ("a,b=c,d=e") go
 * through options_parse_keyval(); handlers take the keys they know out of
 * the table and report any key left over, so a typo is always an error.
 */
#include "shardvm/options.h"
#include "shardvm/block.h"
#include "shardvm/device.h"
#include "shardvm/error.h"
#include "shardvm/monitor.h"

#include <errno.h>
#include <string.h>

typedef int OptionHandler(ShardvmOptions *o, const char *opt,
                          const char *arg, GError **errp);

typedef struct OptionDesc {
    const char *name;      /* without the leading '-' */
    bool has_arg;
    OptionHandler *handler;
    const char *usage;     /* "-name ARG   what it does" */
} OptionDesc;

static int invalid(GError **errp, const char *opt, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

/* Fill @errp with "-opt: <message>" and return -EINVAL. */
static int invalid(GError **errp, const char *opt, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    shardvm_error_set(errp, -EINVAL, "-%s: %s", opt, msg);
    g_free(msg);
    return -EINVAL;
}

/* QEMU's size suffixes: B K M G T P E, any case, powers of 1024; 0 if
 * @c is not one. */
static uint64_t size_suffix(char c)
{
    switch (g_ascii_toupper(c)) {
    case 'B': return 1;
    case 'K': return 1ull << 10;
    case 'M': return 1ull << 20;
    case 'G': return 1ull << 30;
    case 'T': return 1ull << 40;
    case 'P': return 1ull << 50;
    case 'E': return 1ull << 60;
    default: return 0;
    }
}

/*
 * The size syntax of QEMU 7.2 (util/cutils.c do_strtosz, checked against
 * the binary): leading blanks and '+' allowed, '-' never; a decimal
 * integer, or 0x hex without a fraction; an optional fraction after a
 * decimal integer ("1.5", "256.", but no exponent: "1e3" is 1 EiB
 * followed by junk); an optional suffix; nothing after it.  A fraction
 * needs a unit larger than a byte; fractional bytes are truncated.
 */
int options_parse_size(const char *s, uint64_t unit, uint64_t *out)
{
    const char *p = s, *end;
    guint64 val;
    double fraction = 0;
    bool hex = false;

    if (!s) {
        return -EINVAL;
    }
    while (g_ascii_isspace(*p)) {
        p++;
    }
    if (*p == '+') {
        p++;
    }
    if (!g_ascii_isdigit(*p)) {
        return -EINVAL;
    }
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        if (!g_ascii_isxdigit(p[2])) {
            return -EINVAL;
        }
        hex = true;
        p += 2;
    }
    errno = 0;
    val = g_ascii_strtoull(p, (char **)&end, hex ? 16 : 10);
    if (errno || end == p) {
        return -EINVAL;
    }
    if (*end == '.') {
        if (hex) {
            return -EINVAL;
        }
        const char *f = end;
        end++; /* "256." or "1.M": no digits is a zero fraction */
        if (g_ascii_isdigit(*end)) {
            while (g_ascii_isdigit(*end)) {
                end++;
            }
            char *tmp = g_strndup(f, end - f);
            fraction = g_ascii_strtod(tmp, NULL);
            g_free(tmp);
            if (*end == 'e' || *end == 'E') {
                /* strtod would take an exponent; QEMU refuses it */
                if (g_ascii_isdigit(end[1]) ||
                    ((end[1] == '+' || end[1] == '-') &&
                     g_ascii_isdigit(end[2]))) {
                    return -EINVAL;
                }
            }
        }
    }
    uint64_t mul = *end ? size_suffix(*end) : 0;
    if (mul) {
        end++;
    } else {
        mul = 1;
    }
    if (*end) {
        return -EINVAL;
    }
    if (mul == 1 && fraction != 0) {
        return -EINVAL; /* a fraction of a byte */
    }
    if (val > UINT64_MAX / mul) {
        return -EINVAL;
    }
    uint64_t bytes = val * mul;
    uint64_t frac = (uint64_t)(fraction * (double)mul);
    if (bytes > UINT64_MAX - frac) {
        return -EINVAL;
    }
    bytes += frac;
    /* QEMU's legacy rule: a value ending in a digit is in @unit. */
    size_t len = strlen(s);
    if (unit > 1 && len && g_ascii_isdigit(s[len - 1])) {
        if (bytes > UINT64_MAX / unit) {
            return -EINVAL;
        }
        bytes *= unit;
    }
    *out = bytes;
    return 0;
}

GHashTable *options_parse_keyval(const char *opt, const char *arg,
                                 const char *implied_key, GError **errp)
{
    GHashTable *kv = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                           g_free);
    GPtrArray *items = g_ptr_array_new_with_free_func(g_free);
    GString *cur = g_string_new(NULL);

    /* Split at single commas; ",," is an escaped comma. */
    for (const char *s = arg; *s; s++) {
        if (*s == ',' && s[1] == ',') {
            g_string_append_c(cur, ',');
            s++;
        } else if (*s == ',') {
            g_ptr_array_add(items, g_string_free(cur, FALSE));
            cur = g_string_new(NULL);
        } else {
            g_string_append_c(cur, *s);
        }
    }
    g_ptr_array_add(items, g_string_free(cur, FALSE));

    for (guint i = 0; i < items->len; i++) {
        const char *item = g_ptr_array_index(items, i);
        const char *eq = strchr(item, '=');
        char *key, *val;

        if (!eq) {
            if (i != 0 || !implied_key || !*item) {
                invalid(errp, opt, "invalid parameter '%s' in '%s'", item,
                        arg);
                goto fail;
            }
            key = g_strdup(implied_key);
            val = g_strdup(item);
        } else {
            key = g_strndup(item, eq - item);
            val = g_strdup(eq + 1);
        }
        if (!*key || g_hash_table_contains(kv, key)) {
            invalid(errp, opt, "%s parameter '%s' in '%s'",
                    *key ? "repeated" : "empty", key, arg);
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

/* Remove @key from @kv and return its value (caller frees), or NULL. */
static char *kv_take(GHashTable *kv, const char *key)
{
    gpointer k, v;
    if (!g_hash_table_steal_extended(kv, key, &k, &v)) {
        return NULL;
    }
    g_free(k);
    return v;
}

/* Error when @kv still holds a key no handler took. */
static int kv_check_empty(GHashTable *kv, const char *opt, GError **errp)
{
    GHashTableIter it;
    gpointer key;

    g_hash_table_iter_init(&it, kv);
    if (g_hash_table_iter_next(&it, &key, NULL)) {
        return invalid(errp, opt, "unknown parameter '%s'",
                       (const char *)key);
    }
    return 0;
}

/* Parse an unsigned integer (decimal or 0x hex) in [min, max]. */
static int parse_uint(const char *opt, const char *key, const char *s,
                      uint64_t min, uint64_t max, uint64_t *out,
                      GError **errp)
{
    guint64 v;
    bool hex = g_str_has_prefix(s, "0x") || g_str_has_prefix(s, "0X");
    if (!g_ascii_string_to_unsigned(s + (hex ? 2 : 0), hex ? 16 : 10, min,
                                    max, &v, NULL)) {
        return invalid(errp, opt, "invalid %s '%s' (expected %"
                       G_GUINT64_FORMAT "..%" G_GUINT64_FORMAT ")",
                       key, s, min, max);
    }
    *out = v;
    return 0;
}

/* -kernel, -append, -initrd, -name, -cpu: store a string. */
static int set_string(char **field, const char *arg)
{
    g_free(*field);
    *field = g_strdup(arg);
    return 0;
}

static int opt_kernel(ShardvmOptions *o, const char *opt, const char *arg,
                      GError **errp)
{
    return set_string(&o->kernel, arg);
}

static int opt_append(ShardvmOptions *o, const char *opt, const char *arg,
                      GError **errp)
{
    return set_string(&o->append, arg);
}

static int opt_initrd(ShardvmOptions *o, const char *opt, const char *arg,
                      GError **errp)
{
    return set_string(&o->initrd, arg);
}

/* -m [size=]SIZE: a bare number is MiB. */
static int opt_memory(ShardvmOptions *o, const char *opt, const char *arg,
                      GError **errp)
{
    GHashTable *kv = options_parse_keyval(opt, arg, "size", errp);
    if (!kv) {
        return -EINVAL;
    }
    char *size = kv_take(kv, "size");
    int r = kv_check_empty(kv, opt, errp);
    uint64_t bytes = 0;
    if (r == 0 && (!size || options_parse_size(size, 1ull << 20, &bytes) < 0)) {
        r = invalid(errp, opt, "invalid size '%s'", size ? size : arg);
    }
    if (r == 0 && (bytes < OPTIONS_MIN_RAM || bytes > OPTIONS_MAX_RAM)) {
        r = invalid(errp, opt, "size '%s' out of range (2M..1T)", size);
    }
    if (r == 0 && bytes % 4096) {
        r = invalid(errp, opt, "size '%s' is not a multiple of 4 KiB", size);
    }
    if (r == 0) {
        o->ram_size = bytes;
    }
    g_free(size);
    g_hash_table_unref(kv);
    return r;
}

/* -smp [cpus=]N[,sockets=S,cores=C,threads=T,maxcpus=M]: no hotplug, so
 * maxcpus must equal cpus, and a topology, when given, must hold exactly
 * that many CPUs (QEMU: sockets * cores * threads = maxcpus). */
static int opt_smp(ShardvmOptions *o, const char *opt, const char *arg,
                   GError **errp)
{
    static const char *const keys[] = { "cpus", "sockets", "cores",
                                        "threads", "maxcpus" };
    uint64_t v[G_N_ELEMENTS(keys)] = { 0 };
    GHashTable *kv = options_parse_keyval(opt, arg, "cpus", errp);
    int r = kv ? 0 : -EINVAL;

    for (size_t i = 0; r == 0 && i < G_N_ELEMENTS(keys); i++) {
        char *s = kv_take(kv, keys[i]);
        if (s) {
            r = parse_uint(opt, keys[i], s, 1, OPTIONS_MAX_CPUS, &v[i], errp);
        }
        g_free(s);
    }
    if (r == 0) {
        r = kv_check_empty(kv, opt, errp);
    }
    if (r == 0) {
        bool has_topo = v[1] || v[2] || v[3];
        uint64_t topo = (v[1] ? v[1] : 1) * (v[2] ? v[2] : 1) *
                        (v[3] ? v[3] : 1);
        uint64_t cpus = v[0] ? v[0] : v[4] ? v[4] : topo;
        if (cpus > OPTIONS_MAX_CPUS) {
            r = invalid(errp, opt, "%" G_GUINT64_FORMAT " CPUs is more than "
                        "the maximum of %d", cpus, OPTIONS_MAX_CPUS);
        } else if (v[4] && v[4] != cpus) {
            r = invalid(errp, opt, "maxcpus must equal cpus (no CPU "
                        "hotplug)");
        } else if (has_topo && topo != cpus) {
            r = invalid(errp, opt, "sockets (%" G_GUINT64_FORMAT ") * cores "
                        "(%" G_GUINT64_FORMAT ") * threads (%"
                        G_GUINT64_FORMAT ") = %" G_GUINT64_FORMAT " must "
                        "equal the %" G_GUINT64_FORMAT " CPUs (no CPU "
                        "hotplug: maxcpus = cpus)", v[1] ? v[1] : 1,
                        v[2] ? v[2] : 1, v[3] ? v[3] : 1, topo, cpus);
        } else {
            o->cpus = (unsigned)cpus;
        }
    }
    if (kv) {
        g_hash_table_unref(kv);
    }
    return r;
}

/* -serial stdio|mon:stdio|file:PATH|none|null */
static int opt_serial(ShardvmOptions *o, const char *opt, const char *arg,
                      GError **errp)
{
    if (o->serial_given) {
        return invalid(errp, opt, "only one serial port is supported");
    }
    if (!strcmp(arg, "stdio") || !strcmp(arg, "mon:stdio")) {
        o->serial = CHARDEV_STDIO;
    } else if (g_str_has_prefix(arg, "file:") && arg[5]) {
        o->serial = CHARDEV_FILE;
        set_string(&o->serial_path, arg + 5);
    } else if (!strcmp(arg, "none")) {
        o->serial = CHARDEV_NONE;
    } else if (!strcmp(arg, "null")) {
        o->serial = CHARDEV_NULL;
    } else {
        return invalid(errp, opt, "unsupported character device '%s' "
                       "(stdio, file:PATH, null or none)", arg);
    }
    o->serial_given = true;
    return 0;
}

static int opt_nographic(ShardvmOptions *o, const char *opt, const char *arg,
                         GError **errp)
{
    o->nographic = true;
    return 0;
}

/* -display none: shardvm has no display; anything else is an error. */
static int opt_display(ShardvmOptions *o, const char *opt, const char *arg,
                       GError **errp)
{
    if (strcmp(arg, "none") != 0) {
        return invalid(errp, opt, "unsupported display '%s' (only 'none')",
                       arg);
    }
    return 0;
}

/* Accepted and ignored: -no-reboot (a guest reset always ends shardvm),
 * -enable-kvm (KVM is the only accelerator). */
static int opt_ignore(ShardvmOptions *o, const char *opt, const char *arg,
                      GError **errp)
{
    return 0;
}

/* -accel kvm[,kernel-irqchip=on] / -accel accel=kvm: shardvm always uses
 * the in-kernel irqchip, so "on" is the only value; any other suboption
 * of QEMU's (kvm-shadow-mem, dirty-ring-size...) or a typo is an error. */
static int opt_accel(ShardvmOptions *o, const char *opt, const char *arg,
                     GError **errp)
{
    GHashTable *kv = options_parse_keyval(opt, arg, "accel", errp);
    if (!kv) {
        return -EINVAL;
    }
    char *accel = kv_take(kv, "accel");
    char *irqchip = kv_take(kv, "kernel-irqchip");
    int r = 0;
    if (!accel || strcmp(accel, "kvm") != 0) {
        r = invalid(errp, opt, "unsupported accelerator '%s' (only 'kvm')",
                    accel ? accel : arg);
    }
    if (r == 0 && irqchip && strcmp(irqchip, "on") != 0) {
        r = invalid(errp, opt, "kernel-irqchip=%s is not supported (shardvm "
                    "always uses the in-kernel irqchip: only 'on')", irqchip);
    }
    if (r == 0) {
        r = kv_check_empty(kv, opt, errp);
    }
    g_free(accel);
    g_free(irqchip);
    g_hash_table_unref(kv);
    return r;
}

/* -cpu MODEL[,+feat,-feat,...]: the guest always sees the CPUID that KVM
 * supports on this host, so the model only needs to be a known name. */
static int opt_cpu(ShardvmOptions *o, const char *opt, const char *arg,
                   GError **errp)
{
    static const char *const models[] = { "host", "max", "qemu64", "kvm64" };
    char *model = g_strndup(arg, strcspn(arg, ","));
    for (size_t i = 0; i < G_N_ELEMENTS(models); i++) {
        if (!strcmp(model, models[i])) {
            g_free(o->cpu_model);
            o->cpu_model = model;
            return 0;
        }
    }
    int r = invalid(errp, opt, "unsupported CPU model '%s' (host, max, "
                    "qemu64 or kvm64)", model);
    g_free(model);
    return r;
}

/* -device isa-debug-exit[,iobase=N][,iosize=N] (QEMU's defaults 0x501/2) */
static int device_debug_exit(ShardvmOptions *o, const char *opt,
                             GHashTable *kv, GError **errp)
{
    char *base = kv_take(kv, "iobase"), *size = kv_take(kv, "iosize");
    uint64_t b = 0x501, n = 2;
    int r = 0;

    if (o->debug_exit) {
        r = invalid(errp, opt, "only one isa-debug-exit is supported");
    }
    if (r == 0 && base) {
        r = parse_uint(opt, "iobase", base, 0, 0xffff, &b, errp);
    }
    if (r == 0 && size) {
        r = parse_uint(opt, "iosize", size, 1, 4, &n, errp);
    }
    if (r == 0 && b + n > 0x10000) {
        r = invalid(errp, opt, "iobase+iosize beyond port 0xffff");
    }
    if (r == 0) {
        r = kv_check_empty(kv, opt, errp);
    }
    if (r == 0) {
        o->debug_exit = true;
        o->debug_exit_iobase = (uint16_t)b;
        o->debug_exit_iosize = (uint16_t)n;
    }
    g_free(base);
    g_free(size);
    return r;
}

/* -device DRIVER,key=value... or -device '{"driver":...}' (JSON, as QEMU
 * accepts it): isa-debug-exit is configured here; every other driver is
 * kept as a generic property list for its constructor (device.h). */
static int opt_device(ShardvmOptions *o, const char *opt, const char *arg,
                      GError **errp)
{
    DeviceOption *d = device_option_parse(arg, errp);
    if (!d) {
        return -EINVAL;
    }
    int r = 0;
    if (!strcmp(d->driver, "isa-debug-exit")) {
        r = device_debug_exit(o, opt, d->props, errp);
        device_option_free(d);
    } else if (!device_type_find(d->driver)) {
        r = invalid(errp, opt, "unsupported device '%s' (isa-debug-exit, "
                    "virtio-blk-pci)", d->driver);
        device_option_free(d);
    } else {
        g_ptr_array_add(o->devices, d);
    }
    return r;
}

/* -drive / -blockdev: parsed by the block layer (block_parse_*); an id is
 * required (QEMU invents one for if=virtio drives; shardvm names them
 * drive0, drive1, ... likewise, skipping ids given anywhere on the command
 * line).  Ids must be unique. */
static int add_drive(ShardvmOptions *o, const char *opt, BlockOptions *b,
                     GError **errp)
{
    if (!b->id) {
        if (!b->if_virtio) {
            block_options_clear(b);
            g_free(b);
            return invalid(errp, opt, "%s", !strcmp(opt, "drive") ?
                           "id= is required with if=none" :
                           "node-name= is required");
        }
        /* Named once the whole command line is read (name_drives()):
         * the made-up id must not take one a later option gives. */
        g_ptr_array_add(o->drives, b);
        return 0;
    }
    for (guint i = 0; i < o->drives->len; i++) {
        BlockOptions *other = g_ptr_array_index(o->drives, i);
        if (other->id && !strcmp(other->id, b->id)) {
            int r = invalid(errp, opt, "duplicate id '%s'", b->id);
            block_options_clear(b);
            g_free(b);
            return r;
        }
    }
    g_ptr_array_add(o->drives, b);
    return 0;
}

/* Give each id-less if=virtio drive the first driveN no drive has. */
static void name_drives(ShardvmOptions *o)
{
    unsigned next = 0;

    for (guint i = 0; i < o->drives->len; i++) {
        BlockOptions *b = g_ptr_array_index(o->drives, i);
        bool taken;

        if (b->id) {
            continue;
        }
        do {
            g_free(b->id);
            b->id = g_strdup_printf("drive%u", next++);
            taken = false;
            for (guint j = 0; j < o->drives->len && !taken; j++) {
                BlockOptions *other = g_ptr_array_index(o->drives, j);
                taken = j != i && other->id && !strcmp(other->id, b->id);
            }
        } while (taken);
    }
}

static int opt_drive(ShardvmOptions *o, const char *opt, const char *arg,
                     GError **errp)
{
    BlockOptions *b = g_new0(BlockOptions, 1);
    int r = block_parse_drive(arg, b, errp);
    if (r < 0) {
        block_options_clear(b);
        g_free(b);
        return r;
    }
    return add_drive(o, opt, b, errp);
}

static int opt_blockdev(ShardvmOptions *o, const char *opt, const char *arg,
                        GError **errp)
{
    BlockOptions *b = g_new0(BlockOptions, 1);
    int r = block_parse_blockdev(arg, b, errp);
    if (r < 0) {
        block_options_clear(b);
        g_free(b);
        return r;
    }
    return add_drive(o, opt, b, errp);
}

static void drive_free(void *p)
{
    block_options_clear(p);
    g_free(p);
}

/* -object iothread,id=ID[,poll-max-ns=..,poll-grow=..,...] */
static int object_iothread(ShardvmOptions *o, const char *opt,
                           GHashTable *kv, GError **errp)
{
    static const struct {
        const char *key;
        size_t offset;
    } props[] = {
        { "poll-max-ns", offsetof(IOThreadProps, poll_max_ns) },
        { "poll-grow", offsetof(IOThreadProps, poll_grow) },
        { "poll-shrink", offsetof(IOThreadProps, poll_shrink) },
        { "aio-max-batch", offsetof(IOThreadProps, aio_max_batch) },
        { "thread-pool-min", offsetof(IOThreadProps, thread_pool_min) },
        { "thread-pool-max", offsetof(IOThreadProps, thread_pool_max) },
    };
    IOThreadOption it = { NULL, IOTHREAD_PROPS_DEFAULT };
    int r = 0;

    it.id = kv_take(kv, "id");
    if (!it.id || !*it.id) {
        r = invalid(errp, opt, "iothread needs an id=");
    }
    for (guint i = 0; r == 0 && i < o->iothreads->len; i++) {
        if (!strcmp(g_array_index(o->iothreads, IOThreadOption, i).id,
                    it.id)) {
            r = invalid(errp, opt, "duplicate id '%s'", it.id);
        }
    }
    for (size_t i = 0; r == 0 && i < G_N_ELEMENTS(props); i++) {
        char *s = kv_take(kv, props[i].key);
        uint64_t v = 0;
        if (s) {
            r = parse_uint(opt, props[i].key, s, 0, INT64_MAX, &v, errp);
            if (r == 0) {
                *(int64_t *)((char *)&it.props + props[i].offset) =
                    (int64_t)v;
            }
        }
        g_free(s);
    }
    if (r == 0) {
        r = kv_check_empty(kv, opt, errp);
    }
    if (r == 0) {
        g_array_append_val(o->iothreads, it);
    } else {
        g_free(it.id);
    }
    return r;
}

static int opt_object(ShardvmOptions *o, const char *opt, const char *arg,
                      GError **errp)
{
    GHashTable *kv = options_parse_keyval(opt, arg, "qom-type", errp);
    if (!kv) {
        return -EINVAL;
    }
    char *type = kv_take(kv, "qom-type");
    int r;
    if (type && !strcmp(type, "iothread")) {
        r = object_iothread(o, opt, kv, errp);
    } else {
        r = invalid(errp, opt, "unsupported object type '%s' (iothread)",
                    type ? type : arg);
    }
    g_free(type);
    g_hash_table_unref(kv);
    return r;
}

/* -name NAME or -name guest=NAME[,debug-threads=on|off] */
static int opt_name(ShardvmOptions *o, const char *opt, const char *arg,
                    GError **errp)
{
    GHashTable *kv = options_parse_keyval(opt, arg, "guest", errp);
    if (!kv) {
        return -EINVAL;
    }
    char *guest = kv_take(kv, "guest");
    g_free(kv_take(kv, "debug-threads")); /* threads are always named */
    int r = kv_check_empty(kv, opt, errp);
    if (r == 0) {
        set_string(&o->name, guest ? guest : "");
    }
    g_free(guest);
    g_hash_table_unref(kv);
    return r;
}

/* ---- monitor and process options (issue 12) ----------------------------
 * -qmp, -chardev socket and -mon are checked by monitor/qmp-addr.c and
 * stored normalised; system/monitor-hook.c creates the listeners. */

static void push_string(GPtrArray **arr, char *s)
{
    if (!*arr) {
        *arr = g_ptr_array_new_with_free_func(g_free);
    }
    g_ptr_array_add(*arr, s);
}

static int opt_qmp(ShardvmOptions *o, const char *opt, const char *arg,
                   GError **errp)
{
    char *addr = monitor_parse_qmp(arg, errp);
    if (!addr) {
        return -EINVAL;
    }
    push_string(&o->qmp, addr);
    return 0;
}

static int opt_chardev(ShardvmOptions *o, const char *opt, const char *arg,
                       GError **errp)
{
    char *id = NULL;
    char *addr = monitor_parse_chardev(arg, &id, errp);
    if (!addr) {
        return -EINVAL;
    }
    size_t n = strlen(id);
    for (guint i = 0; o->chardevs && i < o->chardevs->len; i++) {
        const char *cd = g_ptr_array_index(o->chardevs, i);
        if (!strncmp(cd, id, n) && cd[n] == '=') {
            shardvm_error_set(errp, -EINVAL, "-chardev: duplicate ID '%s'",
                              id);
            g_free(id);
            g_free(addr);
            return -EINVAL;
        }
    }
    push_string(&o->chardevs, g_strdup_printf("%s=%s", id, addr));
    g_free(id);
    g_free(addr);
    return 0;
}

static int opt_mon(ShardvmOptions *o, const char *opt, const char *arg,
                   GError **errp)
{
    char *id = monitor_parse_mon(arg, errp);
    if (!id) {
        return -EINVAL;
    }
    push_string(&o->mons, id);
    return 0;
}

static int opt_flag(ShardvmOptions *o, const char *opt, const char *arg,
                    GError **errp)
{
    if (!strcmp(opt, "S")) {
        o->start_paused = true;
    } else if (!strcmp(opt, "no-shutdown")) {
        o->no_shutdown = true;
    } else if (!strcmp(opt, "nodefaults")) {
        o->nodefaults = true;
    } else if (!strcmp(opt, "daemonize")) {
        o->daemonize = true;
    }
    return 0;
}

static int opt_pidfile(ShardvmOptions *o, const char *opt, const char *arg,
                       GError **errp)
{
    return set_string(&o->pidfile, arg);
}

static int opt_help(ShardvmOptions *o, const char *opt, const char *arg,
                    GError **errp)
{
    o->help = true;
    return 0;
}

static int opt_version(ShardvmOptions *o, const char *opt, const char *arg,
                       GError **errp)
{
    o->version = true;
    return 0;
}

static const OptionDesc options[] = {
    { "kernel", true, opt_kernel,
      "-kernel FILE      multiboot v1 kernel (ELF32/ELF64, or a.out kludge)" },
    { "append", true, opt_append,
      "-append CMDLINE   kernel command line (after the kernel path)" },
    { "initrd", true, opt_initrd,
      "-initrd \"F1 ARGS,F2\"  multiboot modules, comma separated" },
    { "m", true, opt_memory,
      "-m SIZE           guest RAM (256M, 1G; a bare number is MiB)" },
    { "smp", true, opt_smp,
      "-smp N            number of vCPUs (also cpus=N)" },
    { "serial", true, opt_serial,
      "-serial DEV       stdio (default), file:PATH, null or none" },
    { "nographic", false, opt_nographic,
      "-nographic        serial on stdio (shardvm has no display anyway)" },
    { "display", true, opt_display,
      "-display none     accepted" },
    { "no-reboot", false, opt_ignore,
      "-no-reboot        accepted: a guest reset always ends shardvm" },
    { "enable-kvm", false, opt_ignore,
      "-enable-kvm       accepted: KVM is the only accelerator" },
    { "accel", true, opt_accel,
      "-accel kvm[,kernel-irqchip=on]  accepted" },
    { "cpu", true, opt_cpu,
      "-cpu MODEL        host, max, qemu64, kvm64: all give the host's "
      "KVM CPUID" },
    { "device", true, opt_device,
      "-device isa-debug-exit,iobase=0xf4,iosize=0x04" },
    /* The same option's second line: the PCI devices (device.h). */
    { "device", true, opt_device,
      "-device virtio-blk-pci,drive=ID[,iothread=ID,num-queues=N,...] "
      "or -device '{\"driver\":\"virtio-blk-pci\",...}'" },
    { "drive", true, opt_drive,
      "-drive file=PATH,format=raw,if=none|virtio,id=ID[,cache=..,aio=..,"
      "readonly=on|off,discard=ignore|unmap,locking=..]" },
    { "blockdev", true, opt_blockdev,
      "-blockdev driver=file|null-co|null-aio,node-name=ID[,filename=..,"
      "cache.direct=..,cache.no-flush=..,aio=..]" },
    { "object", true, opt_object,
      "-object iothread,id=ID[,poll-max-ns=N,poll-grow=N,poll-shrink=N,"
      "aio-max-batch=N,thread-pool-min=N,thread-pool-max=N]" },
    { "name", true, opt_name,
      "-name NAME        guest name" },
    { "qmp", true, opt_qmp,
      "-qmp unix:PATH,server=on,wait=off | tcp:HOST:PORT,server=on,wait=off"
      "  QMP monitor" },
    { "chardev", true, opt_chardev,
      "-chardev socket,id=ID,path=PATH|host=H,port=N,server=on,wait=off" },
    { "mon", true, opt_mon,
      "-mon chardev=ID,mode=control  QMP monitor on a -chardev" },
    { "S", false, opt_flag,
      "-S                start paused (status prelaunch; QMP cont starts)" },
    { "no-shutdown", false, opt_flag,
      "-no-shutdown      on guest power-off stop the vCPUs, keep running" },
    { "nodefaults", false, opt_flag,
      "-nodefaults       no default serial port" },
    { "pidfile", true, opt_pidfile,
      "-pidfile FILE     write the process id to FILE" },
    { "daemonize", false, opt_flag,
      "-daemonize        detach once the machine is set up" },
    { "version", false, opt_version,
      "-version          print the version and exit" },
    { "h", false, opt_help, NULL },
    { "help", false, opt_help,
      "-h, -help         print this help and exit" },
};

const char *options_usage(void)
{
    static char *text;

    if (g_once_init_enter(&text)) {
        GString *s = g_string_new("usage: shardvm [options] -kernel FILE\n"
                                  "QEMU-compatible options:\n");
        for (size_t i = 0; i < G_N_ELEMENTS(options); i++) {
            if (options[i].usage) {
                g_string_append_printf(s, "  %s\n", options[i].usage);
            }
        }
        g_once_init_leave(&text, g_string_free(s, FALSE));
    }
    return text;
}

int options_parse(int argc, char **argv, ShardvmOptions *o, GError **errp)
{
    memset(o, 0, sizeof(*o));
    o->ram_size = OPTIONS_DEFAULT_RAM;
    o->cpus = 1;
    o->serial = CHARDEV_STDIO;
    o->cpu_model = g_strdup("host");
    o->iothreads = g_array_new(FALSE, TRUE, sizeof(IOThreadOption));
    o->devices = g_ptr_array_new_with_free_func(
        (GDestroyNotify)device_option_free);
    o->drives = g_ptr_array_new_with_free_func(drive_free);

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const OptionDesc *d = NULL;

        if (a[0] != '-' || !a[1]) {
            return shardvm_error_set(errp, -EINVAL, "'%s': unexpected "
                                     "argument (options start with '-')", a);
        }
        /* QEMU accepts --opt as well as -opt. */
        const char *name = a + 1 + (a[1] == '-');
        for (size_t k = 0; k < G_N_ELEMENTS(options); k++) {
            if (!strcmp(name, options[k].name)) {
                d = &options[k];
                break;
            }
        }
        if (!d) {
            return shardvm_error_set(errp, -EINVAL, "%s: invalid option", a);
        }
        const char *arg = NULL;
        if (d->has_arg) {
            if (i + 1 >= argc) {
                return invalid(errp, d->name, "requires an argument");
            }
            arg = argv[++i];
        }
        int r = d->handler(o, d->name, arg, errp);
        if (r < 0) {
            return r;
        }
    }
    name_drives(o);
    return 0;
}

void options_clear(ShardvmOptions *o)
{
    g_free(o->kernel);
    g_free(o->append);
    g_free(o->initrd);
    g_free(o->serial_path);
    g_free(o->name);
    g_free(o->cpu_model);
    g_free(o->pidfile);
    g_clear_pointer(&o->qmp, g_ptr_array_unref);
    g_clear_pointer(&o->chardevs, g_ptr_array_unref);
    g_clear_pointer(&o->mons, g_ptr_array_unref);
    if (o->iothreads) {
        for (guint i = 0; i < o->iothreads->len; i++) {
            g_free(g_array_index(o->iothreads, IOThreadOption, i).id);
        }
        g_array_free(o->iothreads, TRUE);
    }
    if (o->devices) {
        g_ptr_array_unref(o->devices);
    }
    if (o->drives) {
        g_ptr_array_unref(o->drives);
    }
    memset(o, 0, sizeof(*o));
}
