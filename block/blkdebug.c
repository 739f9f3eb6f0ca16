/*
 * blkdebug: a node layered over another one (image=NODE) that fails
 * chosen requests with a chosen errno and passes the rest down.  Each
 * queue of the node owns a queue of the image in the same context; an
 * injected error completes from the node's queue BH (never inside the
 * submit call, like every completion).  Rules and their counters are
 * shared by all queues of the node (atomics), so "every Nth" and "once"
 * count requests of the whole node; with one queue the result is exact
 * and deterministic.
 */
#include "block-int.h"
#include "shardvm/error.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* ---- rules ----------------------------------------------------------- */

static unsigned req_iotype(BlockReqType t)
{
    switch (t) {
    case BLK_REQ_READ:
        return BLKDEBUG_IO_READ;
    case BLK_REQ_WRITE:
        return BLKDEBUG_IO_WRITE;
    case BLK_REQ_FLUSH:
        return BLKDEBUG_IO_FLUSH;
    case BLK_REQ_DISCARD:
        return BLKDEBUG_IO_DISCARD;
    default:
        return BLKDEBUG_IO_WRITE_ZEROES;
    }
}

/* Does @r's range (if any) overlap the request?  Flushes have no range:
 * a rule with a sector never matches them (as in QEMU). */
static bool range_matches(const BlockInjectRule *r, const BlockRequest *req)
{
    uint64_t first, end;

    if (r->sector < 0) {
        return true;
    }
    if (req->type == BLK_REQ_FLUSH) {
        return false;
    }
    first = (uint64_t)r->sector * 512;
    end = r->sector_count > (UINT64_MAX - first) / 512
          ? UINT64_MAX : first + r->sector_count * 512;
    return req->offset < end &&
           (req->len ? req->offset + req->len : req->offset + 1) > first;
}

/* The error the first rule that fires gives @req, or 0. */
static int rules_check(BlockBackend *blk, const BlockRequest *req)
{
    unsigned type = req_iotype(req->type);

    for (unsigned i = 0; i < blk->nr_dbg_rules; i++) {
        BlkdebugRuleState *st = &blk->dbg_rules[i];
        const BlockInjectRule *r = &st->rule;
        uint64_t n;

        if (!(r->iotypes & type) || !range_matches(r, req) ||
            atomic_load_explicit(&st->spent, memory_order_relaxed)) {
            continue;
        }
        n = atomic_fetch_add_explicit(&st->matches, 1,
                                      memory_order_relaxed) + 1;
        if (n % r->every) {
            continue;
        }
        if (r->once && atomic_exchange_explicit(&st->spent, true,
                                                memory_order_relaxed)) {
            continue; /* another queue's request took it */
        }
        return -r->error;
    }
    return 0;
}

/* ---- driver ------------------------------------------------------------ */

static void child_done(void *opaque, int ret)
{
    blk_req_done(opaque, ret);
}

static int blkdebug_attach(BlockQueue *q, GError **errp)
{
    q->child = blk_queue_new(q->blk->image, q->ctx, errp);
    return q->child ? 0 : -EINVAL;
}

static void blkdebug_detach(BlockQueue *q)
{
    blk_queue_free(q->child);
    q->child = NULL;
}

static void blkdebug_submit(BlockRequest *req)
{
    BlockQueue *q = req->q;
    int r = rules_check(q->blk, req);

    if (r < 0) {
        blk_req_complete_later(req, r);
        return;
    }
    if (q->plugged && !q->child->plugged) {
        blk_queue_plug(q->child); /* the node's unplug releases it */
    }
    switch (req->type) {
    case BLK_REQ_READ:
        r = blk_queue_preadv(q->child, req->offset, req->iov, req->iovcnt,
                             child_done, req);
        break;
    case BLK_REQ_WRITE:
        r = blk_queue_pwritev(q->child, req->offset, req->iov, req->iovcnt,
                              child_done, req);
        break;
    case BLK_REQ_FLUSH:
        r = blk_queue_flush(q->child, child_done, req);
        break;
    case BLK_REQ_DISCARD:
        r = blk_queue_discard(q->child, req->offset, req->len, child_done,
                              req);
        break;
    case BLK_REQ_ZEROES:
        r = blk_queue_write_zeroes(q->child, req->offset, req->len,
                                   req->may_unmap, child_done, req);
        break;
    }
    if (r < 0) {
        blk_req_complete_later(req, r);
    }
}

static void blkdebug_unplug(BlockQueue *q)
{
    if (q->child->plugged) {
        blk_queue_unplug(q->child);
    }
}

const BlockDriverOps blk_drv_blkdebug = {
    .name = "blkdebug",
    .attach = blkdebug_attach,
    .detach = blkdebug_detach,
    .submit = blkdebug_submit,
    .unplug = blkdebug_unplug,
};

/* ---- rule keys ----------------------------------------------------------- */

static int rule_bool(const char *key, const char *v, bool *out, GError **errp)
{
    if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes")) {
        *out = true;
    } else if (!strcmp(v, "off") || !strcmp(v, "false") ||
               !strcmp(v, "no")) {
        *out = false;
    } else {
        return shardvm_error_set(errp, -EINVAL, "blkdebug: invalid value "
                                 "'%s' for '%s' (expected on or off)", v,
                                 key);
    }
    return 0;
}

void blkdebug_rule_init(BlockInjectRule *r)
{
    memset(r, 0, sizeof(*r));
    r->iotypes = BLKDEBUG_IO_ALL;
    r->error = EIO;
    r->sector = -1;
    r->sector_count = 1;
    r->every = 1;
}

int blkdebug_rule_set(BlockInjectRule *r, const char *key, const char *v,
                      GError **errp)
{
    static const struct {
        const char *name;
        unsigned mask;
    } iotypes[] = {
        { "read", BLKDEBUG_IO_READ },
        { "write", BLKDEBUG_IO_WRITE },
        { "flush", BLKDEBUG_IO_FLUSH },
        { "discard", BLKDEBUG_IO_DISCARD },
        { "write-zeroes", BLKDEBUG_IO_WRITE_ZEROES },
    }, events[] = {
        /* QEMU's events that mean "this kind of I/O reaches the node" */
        { "read_aio", BLKDEBUG_IO_READ },
        { "preadv", BLKDEBUG_IO_READ },
        { "write_aio", BLKDEBUG_IO_WRITE },
        { "pwritev", BLKDEBUG_IO_WRITE },
        { "pwritev_zero", BLKDEBUG_IO_WRITE_ZEROES },
        { "flush_to_disk", BLKDEBUG_IO_FLUSH },
        { "flush_to_os", BLKDEBUG_IO_FLUSH },
    };
    gint64 n;
    guint64 u;

    if (!strcmp(key, "iotype") || !strcmp(key, "event")) {
        bool ev = key[0] == 'e';
        size_t count = ev ? G_N_ELEMENTS(events) : G_N_ELEMENTS(iotypes);
        for (size_t i = 0; i < count; i++) {
            if (!strcmp(v, ev ? events[i].name : iotypes[i].name)) {
                r->iotypes &= ev ? events[i].mask : iotypes[i].mask;
                return 0;
            }
        }
        return shardvm_error_set(errp, -ENOTSUP, "blkdebug: %s '%s' is not "
                                 "supported (expected %s)", key, v,
                                 ev ? "read_aio, preadv, write_aio, pwritev, "
                                      "pwritev_zero, flush_to_disk or "
                                      "flush_to_os"
                                    : "read, write, flush, discard or "
                                      "write-zeroes");
    }
    if (!strcmp(key, "errno")) {
        if (!g_ascii_string_to_signed(v, 10, 1, 4095, &n, NULL)) {
            goto bad_number;
        }
        r->error = (int)n;
    } else if (!strcmp(key, "sector")) {
        if (!g_ascii_string_to_signed(v, 10, -1, G_MAXINT64 / 512, &n,
                                      NULL)) {
            goto bad_number;
        }
        r->sector = n;
    } else if (!strcmp(key, "sector-count") || !strcmp(key, "every")) {
        if (!g_ascii_string_to_unsigned(v, 10, 1, G_MAXUINT64, &u, NULL)) {
            goto bad_number;
        }
        *(key[0] == 's' ? &r->sector_count : &r->every) = u;
    } else if (!strcmp(key, "once")) {
        return rule_bool(key, v, &r->once, errp);
    } else if (!strcmp(key, "immediately")) {
        return rule_bool(key, v, &r->immediately, errp);
    } else if (!strcmp(key, "state")) {
        return shardvm_error_set(errp, -ENOTSUP, "blkdebug: 'state' is not "
                                 "supported (no set-state rules)");
    } else {
        return shardvm_error_set(errp, -EINVAL, "blkdebug: unknown "
                                 "inject-error parameter '%s'", key);
    }
    return 0;

bad_number:
    return shardvm_error_set(errp, -EINVAL, "blkdebug: invalid value '%s' "
                             "for '%s'", v, key);
}

/* ---- config file ---------------------------------------------------------- */

/*
 * QEMU's blkdebug config: "[inject-error]" sections of "key = value"
 * lines, values optionally in double quotes; '#' starts a comment line.
 * Other sections (set-state) are refused.
 */
int blkdebug_load_config(const char *path, GArray *rules, GError **errp)
{
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    GError *ferr = NULL;
    BlockInjectRule *cur = NULL;

    if (!g_file_get_contents(path, &text, NULL, &ferr)) {
        int r = ferr->domain == G_FILE_ERROR &&
                ferr->code == G_FILE_ERROR_NOENT ? -ENOENT : -EIO;
        shardvm_error_set(errp, r, "blkdebug: cannot read config '%s': %s",
                          path, ferr->message);
        g_error_free(ferr);
        return r;
    }
    lines = g_strsplit(text, "\n", -1);
    for (unsigned ln = 0; lines[ln]; ln++) {
        char *l = g_strstrip(lines[ln]);
        char *eq;

        if (!*l || *l == '#' || *l == ';') {
            continue;
        }
        if (*l == '[') {
            if (strcmp(l, "[inject-error]") != 0) {
                return shardvm_error_set(errp, -ENOTSUP, "blkdebug: %s:%u: "
                                         "section %s is not supported "
                                         "(only [inject-error])", path,
                                         ln + 1, l);
            }
            BlockInjectRule r;
            blkdebug_rule_init(&r);
            g_array_append_val(rules, r);
            cur = &g_array_index(rules, BlockInjectRule, rules->len - 1);
            continue;
        }
        eq = strchr(l, '=');
        if (!cur || !eq) {
            return shardvm_error_set(errp, -EINVAL, "blkdebug: %s:%u: "
                                     "expected [inject-error] or key = "
                                     "value", path, ln + 1);
        }
        *eq = '\0';
        char *key = g_strstrip(l), *val = g_strstrip(eq + 1);
        size_t vl = strlen(val);
        if (vl >= 2 && val[0] == '"' && val[vl - 1] == '"') {
            val[vl - 1] = '\0';
            val++;
        }
        GError *kerr = NULL;
        int r = blkdebug_rule_set(cur, key, val, &kerr);
        if (r < 0) {
            shardvm_error_set(errp, r, "%s:%u: %s", path, ln + 1,
                              kerr->message);
            g_error_free(kerr);
            return r;
        }
    }
    return 0;
}
