/*
 * -device virtio-blk-pci properties (QEMU's names and defaults) into a
 * VirtIOBlockConfig, and the queue -> IOThread assignment of
 * iothread-vq-mapping.  Pure.
 */
#include "shardvm/virtio-blk.h"
#include "shardvm/error.h"

#include <errno.h>
#include <json-glib/json-glib.h>
#include <stdlib.h>
#include <string.h>

#define VBLK_MAX_QUEUES     1024
#define VBLK_MAX_QUEUE_SIZE 1024

void virtio_blk_config_init(VirtIOBlockConfig *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->num_queues = 1;          /* QEMU: the number of vCPUs */
    cfg->queue_size = 256;
    cfg->logical_block_size = 512;
    cfg->physical_block_size = 512;
    cfg->discard = true;
    cfg->write_zeroes = true;
}

void virtio_blk_config_clear(VirtIOBlockConfig *cfg)
{
    g_free(cfg->drive);
    g_free(cfg->iothread);
    g_free(cfg->serial);
    for (unsigned i = 0; i < cfg->nr_vq_mapping; i++) {
        g_free(cfg->vq_mapping[i].iothread);
        g_free(cfg->vq_mapping[i].vqs);
    }
    g_free(cfg->vq_mapping);
    virtio_blk_config_init(cfg);
}

/* Take @key out of @props: its value (owned by the caller) or NULL. */
static char *take(GHashTable *props, const char *key)
{
    gpointer k, v;

    if (!g_hash_table_steal_extended(props, key, &k, &v)) {
        return NULL;
    }
    /* The table may own its keys: free them only if it would. */
    g_free(k);
    return v;
}

static int parse_bool(const char *key, const char *v, bool *out, GError **errp)
{
    if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes")) {
        *out = true;
    } else if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "no")) {
        *out = false;
    } else {
        return shardvm_error_set(errp, -EINVAL,
                                 "virtio-blk: %s='%s': expected on or off", key, v);
    }
    return 0;
}

static int parse_uint(const char *key, const char *v, uint64_t max,
                      uint64_t *out, GError **errp)
{
    char *end;
    guint64 n;

    errno = 0;
    n = g_ascii_strtoull(v, &end, 0);
    if (!*v || *end || errno || n > max) {
        return shardvm_error_set(errp, -EINVAL,
                                 "virtio-blk: %s='%s': expected a number up to %" G_GUINT64_FORMAT,
                                 key, v, (guint64)max);
    }
    *out = n;
    return 0;
}

/* One mapping entry {"iothread": "id", "vqs": [n, ...]}. */
static int parse_mapping_entry(JsonNode *node, VirtIOBlockVqMapping *m,
                               GError **errp)
{
    JsonObject *o;
    const char *id;

    if (!node || !JSON_NODE_HOLDS_OBJECT(node)) {
        return shardvm_error_set(errp, -EINVAL,
                                 "virtio-blk: iothread-vq-mapping: entries are objects");
    }
    o = json_node_get_object(node);
    /* Look at the node's type before asking for a string: json-glib's
     * typed getters g_critical() on a node of another shape. */
    JsonNode *in = json_object_get_member(o, "iothread");
    id = in && JSON_NODE_HOLDS_VALUE(in) &&
         json_node_get_value_type(in) == G_TYPE_STRING ? json_node_get_string(in) : NULL;
    if (!id) {
        return shardvm_error_set(errp, -EINVAL,
                                 "virtio-blk: iothread-vq-mapping: entry without \"iothread\"");
    }
    m->iothread = g_strdup(id);
    if (!json_object_has_member(o, "vqs")) {
        return 0;
    }
    JsonNode *vn = json_object_get_member(o, "vqs");
    if (!vn || !JSON_NODE_HOLDS_ARRAY(vn)) {
        return shardvm_error_set(errp, -EINVAL,
                                 "virtio-blk: iothread-vq-mapping: \"vqs\" is a list");
    }
    JsonArray *a = json_node_get_array(vn);
    m->has_vqs = true;
    m->nr_vqs = json_array_get_length(a);
    m->vqs = g_new0(unsigned, m->nr_vqs ? m->nr_vqs : 1);
    for (unsigned i = 0; i < m->nr_vqs; i++) {
        JsonNode *e = json_array_get_element(a, i);

        if (!e || !JSON_NODE_HOLDS_VALUE(e) || json_node_get_value_type(e) != G_TYPE_INT64 ||
            json_node_get_int(e) < 0 || json_node_get_int(e) >= VBLK_MAX_QUEUES) {
            return shardvm_error_set(errp, -EINVAL,
                                     "virtio-blk: iothread-vq-mapping: bad vq number");
        }
        m->vqs[i] = json_node_get_int(e);
    }
    return 0;
}

static int parse_mapping(const char *text, VirtIOBlockConfig *cfg, GError **errp)
{
    JsonParser *p = json_parser_new();
    GError *jerr = NULL;
    JsonArray *a;
    int ret = 0;

    if (!json_parser_load_from_data(p, text, -1, &jerr)) {
        ret = shardvm_error_set(errp, -EINVAL, "virtio-blk: iothread-vq-mapping: %s",
                                jerr->message);
        g_error_free(jerr);
        goto out;
    }
    /* An empty text parses to no root at all. */
    if (!json_parser_get_root(p) || !JSON_NODE_HOLDS_ARRAY(json_parser_get_root(p)) ||
        json_array_get_length(json_node_get_array(json_parser_get_root(p))) == 0) {
        ret = shardvm_error_set(errp, -EINVAL,
                                "virtio-blk: iothread-vq-mapping: a non-empty list");
        goto out;
    }
    a = json_node_get_array(json_parser_get_root(p));
    cfg->nr_vq_mapping = json_array_get_length(a);
    cfg->vq_mapping = g_new0(VirtIOBlockVqMapping, cfg->nr_vq_mapping);
    for (unsigned i = 0; i < cfg->nr_vq_mapping && ret == 0; i++) {
        ret = parse_mapping_entry(json_array_get_element(a, i), &cfg->vq_mapping[i], errp);
    }
out:
    g_object_unref(p);
    return ret;
}

/* QEMU's rules: all entries list vqs or none does; each queue once. */
static int check_mapping(const VirtIOBlockConfig *cfg, GError **errp)
{
    bool with = cfg->vq_mapping[0].has_vqs;
    g_autofree bool *seen = g_new0(bool, cfg->num_queues);
    unsigned total = 0;

    if (cfg->iothread) {
        return shardvm_error_set(errp, -EINVAL,
                                 "virtio-blk: iothread and iothread-vq-mapping are exclusive");
    }
    for (unsigned i = 0; i < cfg->nr_vq_mapping; i++) {
        const VirtIOBlockVqMapping *m = &cfg->vq_mapping[i];

        if (m->has_vqs != with) {
            return shardvm_error_set(errp, -EINVAL,
                                     "virtio-blk: iothread-vq-mapping: \"vqs\" in all entries or none");
        }
        for (unsigned j = 0; j < m->nr_vqs; j++) {
            if (m->vqs[j] >= cfg->num_queues || seen[m->vqs[j]]) {
                return shardvm_error_set(errp, -EINVAL,
                                         "virtio-blk: iothread-vq-mapping: vq %u out of range or "
                                         "listed twice", m->vqs[j]);
            }
            seen[m->vqs[j]] = true;
            total++;
        }
    }
    if (with && total != cfg->num_queues) {
        return shardvm_error_set(errp, -EINVAL,
                                 "virtio-blk: iothread-vq-mapping: every vq must be mapped");
    }
    return 0;
}

int virtio_blk_parse_props(GHashTable *props, VirtIOBlockConfig *cfg,
                           GError **errp)
{
    static const char *const bools[] = { "discard", "write-zeroes" };
    char *v;
    uint64_t n = 0;
    int ret = 0;

    virtio_blk_config_init(cfg);
    cfg->drive = take(props, "drive");
    cfg->iothread = take(props, "iothread");
    cfg->serial = take(props, "serial");
    if (!cfg->drive) {
        return shardvm_error_set(errp, -EINVAL, "virtio-blk: drive= is required");
    }
    if ((v = take(props, "num-queues"))) {
        ret = parse_uint("num-queues", v, VBLK_MAX_QUEUES, &n, errp);
        cfg->num_queues = n;
        if (ret == 0 && n == 0) {
            ret = shardvm_error_set(errp, -EINVAL, "virtio-blk: num-queues must be at least 1");
        }
        g_free(v);
    }
    if (ret == 0 && (v = take(props, "queue-size"))) {
        ret = parse_uint("queue-size", v, VBLK_MAX_QUEUE_SIZE, &n, errp);
        if (ret == 0 && (n <= 2 || (n & (n - 1)))) {
            ret = shardvm_error_set(errp, -EINVAL,
                                    "virtio-blk: queue-size=%s: a power of 2 in 4..1024", v);
        }
        cfg->queue_size = n;
        g_free(v);
    }
    const char *bs_keys[] = { "logical_block_size", "physical_block_size" };
    uint32_t *bs_out[] = { &cfg->logical_block_size, &cfg->physical_block_size };
    for (unsigned i = 0; ret == 0 && i < 2; i++) {
        if ((v = take(props, bs_keys[i]))) {
            ret = parse_uint(bs_keys[i], v, 32768, &n, errp);
            if (ret == 0 && (n < 512 || (n & (n - 1)))) {
                ret = shardvm_error_set(errp, -EINVAL,
                                        "virtio-blk: %s=%s: a power of 2 in 512..32768",
                                        bs_keys[i], v);
            }
            *bs_out[i] = n;
            g_free(v);
        }
    }
    if (ret == 0 && cfg->physical_block_size < cfg->logical_block_size) {
        ret = shardvm_error_set(errp, -EINVAL,
                                "virtio-blk: physical_block_size below logical_block_size");
    }
    for (unsigned i = 0; ret == 0 && i < G_N_ELEMENTS(bools); i++) {
        if ((v = take(props, bools[i]))) {
            ret = parse_bool(bools[i], v, i == 0 ? &cfg->discard : &cfg->write_zeroes, errp);
            g_free(v);
        }
    }
    const char *err_keys[] = { "werror", "rerror" };
    BlockErrorPolicy *err_out[] = { &cfg->werror, &cfg->rerror };
    for (unsigned i = 0; ret == 0 && i < 2; i++) {
        if ((v = take(props, err_keys[i]))) {
            if (block_error_policy_parse(v, true, err_out[i]) < 0) {
                ret = shardvm_error_set(errp, -EINVAL, "virtio-blk: %s='%s': "
                                        "expected report, ignore, enospc, "
                                        "stop or auto", err_keys[i], v);
            }
            g_free(v);
        }
    }
    if (ret == 0 && (v = take(props, "iothread-vq-mapping"))) {
        ret = parse_mapping(v, cfg, errp);
        g_free(v);
        if (ret == 0) {
            ret = check_mapping(cfg, errp);
        }
    }
    if (ret < 0) {
        virtio_blk_config_clear(cfg);
    }
    return ret;
}

void virtio_blk_queue_iothreads(const VirtIOBlockConfig *cfg, const char **out)
{
    for (unsigned i = 0; i < cfg->num_queues; i++) {
        out[i] = cfg->iothread;
    }
    if (cfg->nr_vq_mapping == 0) {
        return;
    }
    if (cfg->vq_mapping[0].has_vqs) {
        for (unsigned i = 0; i < cfg->nr_vq_mapping; i++) {
            for (unsigned j = 0; j < cfg->vq_mapping[i].nr_vqs; j++) {
                out[cfg->vq_mapping[i].vqs[j]] = cfg->vq_mapping[i].iothread;
            }
        }
    } else {
        for (unsigned i = 0; i < cfg->num_queues; i++) {
            out[i] = cfg->vq_mapping[i % cfg->nr_vq_mapping].iothread;
        }
    }
}
