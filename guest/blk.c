/*
 * blk: virtio-blk load generator and data-integrity checker (docs/guest.md).
 *
 *   mode=randread|randwrite|rw|flush|verify|verify-read  bs=4096 qd=1
 *   (mode=hostile case=N: misbehaving-driver cases, blk-hostile.c)
 *   (mode=journal count=N writes=N flush_every=N report=N: generation-
 *    stamped writes with completion records "J w=DONE" / "J f=DONE";
 *    mode=journal-check count=N done=DONE reads them back, blk-journal.h)
 *   seconds=N | count=N  queues=N  disk=N  seed=N  rwmix=50  flush_every=2
 *
 * Each queue is driven by its own vCPU (queue i by vCPU i), polling.  One
 * line per run:
 *
 *   RESULT mode=randread iops=.. lat_avg_ns=.. lat_p99_ns=.. errors=0 ios=..
 *          bytes=.. reads=.. writes=.. flushes=.. mismatches=0 total_ns=..
 *          bs=4096 qd=1 queues=1 disk=0 seed=1 kicks=.. tsc_hz=.. tsc_source=..
 *
 * Exit 0 when every request succeeded (and, for verify, every sector
 * matched), 1 when some failed, 2 for a bad parameter, 3 when the disk is
 * missing or cannot be started.
 */
#include "bench.h"
#include "blk-hostile.h"
#include "blk-journal.h"
#include "guest.h"
#include "mem.h"
#include "virtio-blk.h"

#define BLK_STAMP_MAGIC     0x314b4c424d564853ull      /* "SHVMBLK1" */
#define BLK_MAX_QD          341                        /* 1024 descriptors / 3 */
#define BLK_MAX_BS          (1u << 20)
#define BLK_MISMATCH_LINES  4

/* Latency histogram in TSC cycles: 16 linear buckets, then 16 per power of two. */
#define HIST_SUB_BITS       4
#define HIST_SUB            (1u << HIST_SUB_BITS)
#define HIST_N              (HIST_SUB + (64 - HIST_SUB_BITS) * HIST_SUB)

enum blk_mode {
    M_RANDREAD, M_RANDWRITE, M_RW, M_FLUSH, M_VERIFY, M_VERIFY_READ, M_JOURNAL,
    M_JOURNAL_CHECK,
};

static const char *const blk_mode_names[] = {
    "randread", "randwrite", "rw", "flush", "verify", "verify-read", "journal",
    "journal-check",
};

struct blk_params {
    enum blk_mode mode;
    uint32_t bs;
    unsigned qd, queues, disk, rwmix, flush_every;
    uint64_t seconds, count, seed;
    uint64_t writes;                /* journal: writes to issue, 0 = until stopped */
    uint64_t done;                  /* journal-check: the completed prefix to check */
    uint64_t report;                /* journal: a "J w=" line every N completions */
    uint64_t blocks;                /* bs-sized blocks on the disk */
};

/* One queue's run, written by its vCPU only; read by the BSP afterwards. */
struct blk_worker {
    struct vblk_queue *q;
    uint64_t rng;
    uint64_t picks;                 /* flush mode: requests chosen so far */
    uint64_t ios, errors, bytes, reads, writes, flushes, mismatches;
    uint64_t lat_sum;               /* cycles */
    uint64_t *t_submit;             /* per slot */
    uint64_t *slot_block;           /* per slot */
    uint8_t *slot_type;             /* per slot */
    unsigned *free_slots;
    bool broken;                    /* the device returned a bad used id */
    uint32_t hist[HIST_N];
};

static struct blk_params P;
static struct vblk B;
static struct blk_worker W[VBLK_MAX_QUEUES];
static uint32_t hist_all[HIST_N];
static unsigned mismatch_lines;     /* atomic */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

/* Word @k (0-63) of the stamp of 512-byte sector @lba. */
static uint64_t stamp_word(uint64_t lba, uint64_t seed, unsigned k)
{
    switch (k) {
    case 0: return BLK_STAMP_MAGIC;
    case 1: return lba;
    case 2: return seed;
    default: return mix64(seed ^ mix64(lba * 64 + k));
    }
}

static void stamp_block(uint64_t *buf, uint64_t lba, unsigned sectors, uint64_t seed)
{
    for (unsigned s = 0; s < sectors; s++) {
        for (unsigned k = 0; k < 64; k++) {
            buf[s * 64 + k] = stamp_word(lba + s, seed, k);
        }
    }
}

/* Mismatched sectors in @buf (read from @lba); the first few are printed. */
static uint64_t check_block(const uint64_t *buf, uint64_t lba, unsigned sectors, uint64_t seed)
{
    uint64_t bad = 0;

    for (unsigned s = 0; s < sectors; s++) {
        for (unsigned k = 0; k < 64; k++) {
            uint64_t want = stamp_word(lba + s, seed, k);

            if (buf[s * 64 + k] != want) {
                if (__atomic_fetch_add(&mismatch_lines, 1, __ATOMIC_RELAXED) <
                    BLK_MISMATCH_LINES) {
                    con_printf("BLK mismatch lba=%lu word=%u got=0x%lx want=0x%lx\n",
                               (unsigned long)(lba + s), k,
                               (unsigned long)buf[s * 64 + k], (unsigned long)want);
                }
                bad++;
                break;
            }
        }
    }
    return bad;
}

/*
 * journal-check: mismatched sectors of block @block, which must hold at
 * least the generation writes 0 .. done-1 gave it (blk-journal.h).
 */
static uint64_t check_journal_block(const uint64_t *buf, uint64_t block)
{
    uint64_t want = blk_journal_expect(block, P.count, P.done), bad = 0, got;
    unsigned sectors = P.bs / 512;

    for (unsigned s = 0; s < sectors; s++) {
        uint64_t lba = block * sectors + s;

        if (!blk_journal_sector_ok(buf + s * 64, lba, P.seed, want, &got)) {
            if (__atomic_fetch_add(&mismatch_lines, 1, __ATOMIC_RELAXED) <
                BLK_MISMATCH_LINES) {
                con_printf("BLK mismatch lba=%lu gen=%lu want_gen>=%lu word0=0x%lx\n",
                           (unsigned long)lba, (unsigned long)got, (unsigned long)want,
                           (unsigned long)buf[s * 64]);
            }
            bad++;
        }
    }
    return bad;
}

static unsigned hist_index(uint64_t v)
{
    unsigned e;

    if (v < HIST_SUB) {
        return (unsigned)v;
    }
    e = 63 - (unsigned)__builtin_clzll(v);
    return HIST_SUB + (e - HIST_SUB_BITS) * HIST_SUB +
           (unsigned)((v >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1));
}

/* The largest value that falls in bucket @i. */
static uint64_t hist_upper(unsigned i)
{
    unsigned e, sub;

    if (i < HIST_SUB) {
        return i;
    }
    e = (i - HIST_SUB) / HIST_SUB + HIST_SUB_BITS;
    sub = (i - HIST_SUB) % HIST_SUB;
    return (((uint64_t)(HIST_SUB + sub) << (e - HIST_SUB_BITS)) - 1) +
           (1ull << (e - HIST_SUB_BITS));
}

/* Request type for the next request of a random-I/O mode. */
static uint32_t blk_pick_type(struct blk_worker *w)
{
    switch (P.mode) {
    case M_RANDREAD:
        return VIRTIO_BLK_T_IN;
    case M_RW:
        return rng_next(&w->rng) % 100 < P.rwmix ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT;
    case M_FLUSH:
        return w->picks++ % P.flush_every == P.flush_every - 1 ?
               VIRTIO_BLK_T_FLUSH : VIRTIO_BLK_T_OUT;
    default:
        return VIRTIO_BLK_T_OUT;
    }
}

/* False (the worker marked broken) when the device returned a used id
 * that names no request. */
static bool blk_used_slot_ok(struct blk_worker *w, unsigned slot)
{
    if (slot != ~0u) {
        return true;
    }
    con_printf("BLK error: queue %u returned a used id that names no request\n",
               w->q->vq.index);
    w->broken = true;
    w->errors++;
    return false;
}

static void blk_finish(struct blk_worker *w, unsigned slot, uint8_t status, uint64_t now,
                       bool check)
{
    uint64_t lat = now - w->t_submit[slot];
    uint32_t type = w->slot_type[slot];

    w->ios++;
    w->lat_sum += lat;
    w->hist[hist_index(lat)]++;
    if (status != VIRTIO_BLK_S_OK) {
        w->errors++;
        if (w->errors <= 2) {
            con_printf("BLK request error queue=%u type=%u block=%lu status=%u\n",
                       w->q->vq.index, type, (unsigned long)w->slot_block[slot], status);
        }
        return;
    }
    if (type == VIRTIO_BLK_T_FLUSH) {
        w->flushes++;
        return;
    }
    w->bytes += P.bs;
    if (type == VIRTIO_BLK_T_IN) {
        w->reads++;
        if (check && P.mode == M_JOURNAL_CHECK) {
            w->mismatches += check_journal_block(vblk_data(w->q, slot),
                                                 w->slot_block[slot]);
        } else if (check) {
            w->mismatches += check_block(vblk_data(w->q, slot),
                                         w->slot_block[slot] * (P.bs / 512),
                                         P.bs / 512, P.seed);
        }
    } else {
        w->writes++;
    }
}

/*
 * One pass on queue @w: @n requests (0: until @deadline).  Sequential
 * mode (@seq_type IN/OUT) touches blocks first, first + step, ...;
 * otherwise random blocks and types from blk_pick_type().
 */
static void blk_pass(struct blk_worker *w, uint64_t n, uint64_t deadline, int seq_type,
                     uint64_t first, uint64_t step)
{
    struct vblk_queue *q = w->q;
    unsigned nfree = q->qd, inflight = 0;
    uint64_t issued = 0;
    bool more = true;

    for (unsigned s = 0; s < q->qd; s++) {
        w->free_slots[s] = s;
    }
    while (!w->broken) {
        unsigned slot;
        uint8_t status;

        if (more) {
            more = n ? issued < n : tsc_read() < deadline;
        }
        while (more && nfree) {
            uint32_t type;
            uint64_t block;

            slot = w->free_slots[--nfree];
            if (seq_type >= 0) {
                type = (uint32_t)seq_type;
                block = first + issued * step;
            } else {
                type = blk_pick_type(w);
                block = rng_next(&w->rng) % P.blocks;
            }
            if (seq_type == VIRTIO_BLK_T_OUT) {
                stamp_block(vblk_data(q, slot), block * (P.bs / 512), P.bs / 512, P.seed);
            }
            w->slot_type[slot] = (uint8_t)type;
            w->slot_block[slot] = block;
            w->t_submit[slot] = tsc_read();
            vblk_submit(q, slot, type, block * (P.bs / 512));
            inflight++;
            issued++;
            if (n && issued == n) {
                more = false;
            }
        }
        vblk_kick(q);
        if (!inflight) {
            break;
        }
        while (!vblk_complete(q, &slot, &status)) {
            cpu_relax();
        }
        do {
            if (!blk_used_slot_ok(w, slot)) {
                break;
            }
            blk_finish(w, slot, status, tsc_read(), seq_type == VIRTIO_BLK_T_IN);
            w->free_slots[nfree++] = slot;
            inflight--;
        } while (vblk_complete(q, &slot, &status));
    }
}

/*
 * mode=journal on queue @w (queue 0 only): write i goes to block i % count
 * with generation i / count + 1, at most qd in flight and never two on the
 * same block (i < done + count).  "done" is the completed prefix: every
 * write below it has completed OK.  Every flush_every writes the queue
 * drains and a FLUSH goes out; once it completes OK, "J f=DONE" says that
 * writes 0 .. DONE-1 are durable.  "J w=DONE" lines report the prefix
 * every P.report completions.  A failed request stops the run.
 */
static void blk_journal_pass(struct blk_worker *w)
{
    struct vblk_queue *q = w->q;
    unsigned nfree = q->qd, inflight = 0, slot;
    uint64_t issued = 0, done = 0, reported = 0, flushed_at = 0;
    uint8_t *ok = mem_alloc(P.count, 64), status;
    bool stop = false, flushing = false;

    if (!ok) {
        con_printf("BLK error: out of memory for the journal\n");
        w->errors++;
        return;
    }
    memset(ok, 0, P.count);
    for (unsigned s = 0; s < q->qd; s++) {
        w->free_slots[s] = s;
    }
    while (!w->broken) {
        bool more = !stop && (!P.writes || issued < P.writes);
        bool flush_due = P.flush_every && issued && issued % P.flush_every == 0 &&
                         flushed_at != issued;

        if (more && flush_due && !flushing && done == issued && nfree) {
            slot = w->free_slots[--nfree];
            w->slot_type[slot] = VIRTIO_BLK_T_FLUSH;
            w->slot_block[slot] = done;
            w->t_submit[slot] = tsc_read();
            vblk_submit(q, slot, VIRTIO_BLK_T_FLUSH, 0);
            inflight++;
            flushing = true;
        }
        while (more && !flush_due && nfree && issued - done < P.count &&
               (!P.writes || issued < P.writes)) {
            uint64_t block = issued % P.count, lba = block * (P.bs / 512);

            slot = w->free_slots[--nfree];
            blk_journal_stamp(vblk_data(q, slot), lba, P.bs / 512, P.seed,
                              issued / P.count + 1);
            w->slot_type[slot] = VIRTIO_BLK_T_OUT;
            w->slot_block[slot] = issued;
            w->t_submit[slot] = tsc_read();
            vblk_submit(q, slot, VIRTIO_BLK_T_OUT, lba);
            inflight++;
            issued++;
            flush_due = P.flush_every && issued % P.flush_every == 0;
        }
        vblk_kick(q);
        if (!inflight) {
            break;
        }
        while (!vblk_complete(q, &slot, &status)) {
            cpu_relax();
        }
        do {
            if (!blk_used_slot_ok(w, slot)) {
                break;
            }
            blk_finish(w, slot, status, tsc_read(), false);
            if (w->slot_type[slot] == VIRTIO_BLK_T_FLUSH) {
                flushing = false;
                flushed_at = w->slot_block[slot];
            }
            if (status != VIRTIO_BLK_S_OK) {
                stop = true;
            } else if (w->slot_type[slot] == VIRTIO_BLK_T_FLUSH) {
                con_printf("J f=%lu\n", (unsigned long)flushed_at);
                reported = flushed_at;
            } else {
                ok[w->slot_block[slot] % P.count] = 1;
            }
            w->free_slots[nfree++] = slot;
            inflight--;
        } while (vblk_complete(q, &slot, &status));
        while (done < issued && ok[done % P.count]) {
            ok[done % P.count] = 0;
            done++;
        }
        if (done - reported >= P.report) {
            con_printf("J w=%lu\n", (unsigned long)done);
            reported = done;
        }
    }
    if (done != reported) {
        con_printf("J w=%lu\n", (unsigned long)done);
    }
}

static void blk_worker_fn(unsigned cpu, void *arg)
{
    struct blk_worker *w;
    uint64_t mine;

    if (cpu >= P.queues) {
        return;
    }
    w = &W[cpu];
    switch (P.mode) {
    case M_JOURNAL:
        blk_journal_pass(w);
        break;
    case M_JOURNAL_CHECK:
        blk_pass(w, P.count, 0, VIRTIO_BLK_T_IN, 0, 1);
        break;
    case M_VERIFY:
    case M_VERIFY_READ:
        /* Queue i owns blocks i, i + queues, ... below count. */
        mine = P.count > cpu ? (P.count - cpu + P.queues - 1) / P.queues : 0;
        if (mine && P.mode == M_VERIFY) {
            blk_pass(w, mine, 0, VIRTIO_BLK_T_OUT, cpu, P.queues);
        }
        if (mine) {
            blk_pass(w, mine, 0, VIRTIO_BLK_T_IN, cpu, P.queues);
        }
        break;
    default:
        mine = P.count / P.queues + (cpu < P.count % P.queues);
        if (P.count && !mine) {
            break;
        }
        blk_pass(w, mine, P.count ? 0 : tsc_read() + tsc_from_ns(P.seconds * 1000000000ull),
                 -1, 0, 0);
        break;
    }
}

/* A number parameter in [lo, hi], or an error line and false. */
static bool blk_param(const char *key, uint64_t def, uint64_t lo, uint64_t hi, uint64_t *out)
{
    const char *v = cmdline_str(key, NULL);

    if (!v) {
        *out = def;
        return true;
    }
    if (!cmdline_parse_u64(v, out) || *out < lo || *out > hi) {
        con_printf("BLK error: %s=%s (want a number from %lu to %lu)\n", key, v,
                   (unsigned long)lo, (unsigned long)hi);
        return false;
    }
    return true;
}

static bool blk_parse(void)
{
    const char *mode = cmdline_str("mode", "randread");
    uint64_t v;
    unsigned i;

    for (i = 0; i < sizeof(blk_mode_names) / sizeof(blk_mode_names[0]); i++) {
        if (!strcmp(mode, blk_mode_names[i])) {
            break;
        }
    }
    if (i == sizeof(blk_mode_names) / sizeof(blk_mode_names[0])) {
        con_printf("BLK error: mode=%s (want randread, randwrite, rw, flush, verify, "
                   "verify-read, journal or journal-check)\n", mode);
        return false;
    }
    P.mode = (enum blk_mode)i;
    if (!blk_param("bs", 4096, 512, BLK_MAX_BS, &v)) {
        return false;
    }
    if (v % 512) {
        con_printf("BLK error: bs=%lu (want a multiple of 512)\n", (unsigned long)v);
        return false;
    }
    P.bs = (uint32_t)v;
    if (!blk_param("qd", 1, 1, BLK_MAX_QD, &v)) {
        return false;
    }
    P.qd = (unsigned)v;
    if (!blk_param("queues", 0, 1, VBLK_MAX_QUEUES, &v)) {
        return false;
    }
    P.queues = (unsigned)v;
    if (!blk_param("disk", 0, 0, 255, &v)) {
        return false;
    }
    P.disk = (unsigned)v;
    if (!blk_param("rwmix", 50, 0, 100, &v)) {
        return false;
    }
    P.rwmix = (unsigned)v;
    if (!blk_param("flush_every", P.mode == M_JOURNAL ? 16 : 2,
                   P.mode == M_JOURNAL ? 0 : 1, 1000000, &v)) {
        return false;
    }
    P.flush_every = (unsigned)v;
    if (!blk_param("writes", 0, 0, 1ull << 40, &P.writes) ||
        !blk_param("done", 0, 0, ~0ull >> 1, &P.done) ||
        !blk_param("report", 8, 1, 1ull << 40, &P.report)) {
        return false;
    }
    if (!blk_param("seed", 1, 0, ~0ull, &P.seed) ||
        !blk_param("seconds", 5, 1, 1000000, &P.seconds) ||
        !blk_param("count", 0, 1, 1ull << 40, &P.count)) {
        return false;
    }
    if (cmdline_has("seconds") && cmdline_has("count")) {
        con_printf("BLK error: give seconds= or count=, not both\n");
        return false;
    }
    if (P.mode >= M_JOURNAL && (cmdline_has("seconds") || cmdline_has("queues"))) {
        con_printf("BLK error: mode=%s runs on one queue and takes count= (blocks)\n",
                   mode);
        return false;
    }
    if (P.mode >= M_JOURNAL) {
        P.queues = 1;
    }
    if ((P.mode == M_VERIFY || P.mode == M_VERIFY_READ) && cmdline_has("seconds")) {
        con_printf("BLK error: mode=%s takes count= (blocks), not seconds=\n", mode);
        return false;
    }
    return true;
}

/* Disk-dependent checks and defaults, after the device is open. */
static bool blk_check_disk(void)
{
    if (P.bs % B.blk_size) {
        con_printf("BLK error: bs=%u is not a multiple of the device's block size %u\n",
                   P.bs, B.blk_size);
        return false;
    }
    P.blocks = B.capacity * 512 / P.bs;
    if (!P.blocks) {
        con_printf("BLK error: the disk (%lu sectors) is smaller than bs=%u\n",
                   (unsigned long)B.capacity, P.bs);
        return false;
    }
    /* journal-check must read the region journal wrote: the same default. */
    if (P.mode >= M_JOURNAL && !P.count) {
        P.count = P.blocks < 16 ? P.blocks : 16;
    }
    if (P.mode == M_JOURNAL && P.qd > P.count) {
        con_printf("BLK error: mode=journal needs qd=%u <= count=%lu\n", P.qd,
                   (unsigned long)P.count);
        return false;
    }
    if (P.mode == M_VERIFY || P.mode == M_VERIFY_READ || P.mode >= M_JOURNAL) {
        if (!P.count) {
            P.count = P.blocks < 256 ? P.blocks : 256;
        }
        if (P.count > P.blocks) {
            con_printf("BLK error: count=%lu but the disk has %lu blocks of %u bytes\n",
                       (unsigned long)P.count, (unsigned long)P.blocks, P.bs);
            return false;
        }
    }
    if (P.mode != M_RANDREAD && P.mode != M_VERIFY_READ && B.ro) {
        con_printf("BLK error: mode=%s writes but the disk is read-only\n",
                   blk_mode_names[P.mode]);
        return false;
    }
    if ((P.mode == M_FLUSH || (P.mode == M_JOURNAL && P.flush_every)) && !B.flush) {
        con_printf("BLK error: mode=%s flushes but the device does not offer "
                   "VIRTIO_BLK_F_FLUSH (cache=writethrough? flush_every=0 for none)\n",
                   blk_mode_names[P.mode]);
        return false;
    }
    return true;
}

static bool blk_alloc_workers(void)
{
    for (unsigned i = 0; i < P.queues; i++) {
        struct blk_worker *w = &W[i];

        w->q = &B.q[i];
        w->rng = mix64(P.seed + i + 1) | 1;
        w->t_submit = mem_alloc(8ull * P.qd, 64);
        w->slot_block = mem_alloc(8ull * P.qd, 64);
        w->slot_type = mem_alloc(P.qd, 64);
        w->free_slots = mem_alloc(sizeof(unsigned) * P.qd, 64);
        if (!w->t_submit || !w->slot_block || !w->slot_type || !w->free_slots) {
            con_printf("BLK error: out of memory for queue %u\n", i);
            return false;
        }
    }
    return true;
}

/*
 * Test hook bar_move=ADDR: move the disk's 64-bit memory BARs to ADDR (0:
 * leave them unassigned) and turn memory decoding off, as a VMM without
 * firmware might, before the driver looks at the device.  Modern IDs only.
 */
static void blk_bar_move(uint64_t addr)
{
    pci_bdf_t bdf;
    uint16_t cmd;

    if (!pci_find(VIRTIO_PCI_VENDOR, VIRTIO_PCI_MODERN_BASE + VIRTIO_ID_BLOCK, P.disk, &bdf)) {
        return;
    }
    cmd = pci_read16(bdf, PCI_COMMAND);
    pci_write16(bdf, PCI_COMMAND, cmd & ~(PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER));
    for (unsigned n = 0; n < 6; n++) {
        struct pci_bar bar;

        pci_bar_size(bdf, n, &bar);
        if (bar.is64 && bar.size) {
            pci_bar_set(bdf, n, &bar, addr);
            con_printf("BLK bar_move bar=%u addr=0x%lx size=0x%lx\n", n,
                       (unsigned long)addr, (unsigned long)bar.size);
            addr += addr ? bar.size : 0;
            n++;
        }
    }
}

int guest_main(void)
{
    uint64_t ios = 0, errors = 0, bytes = 0, reads = 0, writes = 0, flushes = 0;
    uint64_t mismatches = 0, lat_sum = 0, kicks = 0, p99 = 0, seen = 0, ns;
    unsigned ran;
    int r;

    if (!strcmp(cmdline_str("mode", ""), "hostile")) {
        return blk_hostile_main();
    }
    if (!blk_parse()) {
        return 2;
    }
    if (cmdline_has("bar_move")) {
        blk_bar_move(cmdline_u64("bar_move", 0));
    }
    r = vblk_open(&B, P.disk, P.queues, P.qd, P.bs);
    if (r == -1) {
        con_printf("BLK error: disk=%u: no such virtio-blk device "
                   "(PCI 1af4:1042 or 1af4:1001)\n", P.disk);
        return 3;
    }
    if (r < 0) {
        return 3;
    }
    P.queues = B.queues;
    if (P.queues > smp_cpus()) {
        con_printf("BLK error: queues=%u but only %u vCPUs (one vCPU per queue)\n",
                   P.queues, smp_cpus());
        return 2;
    }
    if (!blk_check_disk() || !blk_alloc_workers()) {
        return 2;
    }
    con_printf("BLK disk=%u pci=%02x:%02x.%x capacity=%lu blk_size=%u num_queues=%u "
               "queue_size=%u features=0x%lx common_cfg=0x%lx\n", P.disk, PCI_BUS(B.pci.bdf),
               PCI_DEV(B.pci.bdf), PCI_FN(B.pci.bdf), (unsigned long)B.capacity,
               B.blk_size, B.num_queues, B.q[0].vq.size, (unsigned long)B.pci.features,
               (unsigned long)(uintptr_t)B.pci.common);

    ns = bench_time(blk_worker_fn, NULL, P.queues > 1, &ran);

    for (unsigned i = 0; i < P.queues; i++) {
        struct blk_worker *w = &W[i];

        ios += w->ios;
        errors += w->errors;
        bytes += w->bytes;
        reads += w->reads;
        writes += w->writes;
        flushes += w->flushes;
        mismatches += w->mismatches;
        lat_sum += w->lat_sum;
        kicks += w->q->vq.kicks;
        for (unsigned h = 0; h < HIST_N; h++) {
            hist_all[h] += w->hist[h];
        }
    }
    for (unsigned h = 0; h < HIST_N && ios; h++) {
        seen += hist_all[h];
        if (seen * 100 >= ios * 99) {
            p99 = hist_upper(h);
            break;
        }
    }
    con_printf("RESULT mode=%s iops=%lu lat_avg_ns=%lu lat_p99_ns=%lu errors=%lu ios=%lu "
               "bytes=%lu reads=%lu writes=%lu flushes=%lu mismatches=%lu total_ns=%lu "
               "bs=%u qd=%u queues=%u disk=%u seed=%lu kicks=%lu tsc_hz=%lu tsc_source=%s\n",
               blk_mode_names[P.mode],
               (unsigned long)(ns ? ios * 1000000000ull / ns : 0),
               (unsigned long)(ios ? tsc_to_ns(lat_sum / ios) : 0),
               (unsigned long)tsc_to_ns(p99), (unsigned long)errors, (unsigned long)ios,
               (unsigned long)bytes, (unsigned long)reads, (unsigned long)writes,
               (unsigned long)flushes, (unsigned long)mismatches, (unsigned long)ns,
               P.bs, P.qd, P.queues, P.disk, (unsigned long)P.seed, (unsigned long)kicks,
               (unsigned long)tsc_hz(), tsc_source_name());
    return errors || mismatches ? 1 : 0;
}
