/*
 * blk mode=hostile case=N: one misbehaving-driver case against virtio-blk
 * disk 0 (the victim), then a guest reset of it and a check that it works
 * again; disk 1, when present (the bystander, on another IOThread in the
 * shardvm tests), must pass a verify run after the act and after the reset.
 * The host-side twin of these cases is tests/hostile (docs/testing.md).
 *
 * One line per run (docs/guest.md):
 *
 *   HOSTILE case=N name=loop outcome=needs_reset status=0x4f used=0
 *           after_reset=ok bystander=ok result=pass
 *
 * outcome: what the device did within a bounded wait after the act:
 * needs_reset (NEEDS_RESET set), ok / ioerr / unsupp / status_N (a used
 * entry with that status byte; for multi-request cases the worst one),
 * refused (FEATURES_OK read back clear), none (nothing visible: ignored).
 * The result is pass when the victim works after the reset and the
 * bystander (if any) passed both runs; what the device answered is
 * recorded, not judged (QEMU and shardvm may differ), except that the
 * guest must still be running to print it.
 *
 * Exit 0 pass, 1 fail, 2 bad parameter, 3 no disk.
 */
#include "blk-hostile.h"
#include "guest.h"
#include "mem.h"
#include "virtio-blk.h"

#define VIRTIO_F_INDIRECT_DESC  28
#define VIRTQ_DESC_F_INDIRECT   4
#define VIRTIO_BLK_T_DISCARD    11
#define H_BS                    4096
#define H_WAIT_NS               500000000ull  /* a wait gives up after 0.5 s */

/* The TSC value at which a wait that starts now gives up. */
static uint64_t h_deadline(void)
{
    return tsc_read() + tsc_from_ns(H_WAIT_NS);
}

static struct vblk V, S;            /* victim, bystander */
static bool have_bystander;
static uint64_t ram_end;            /* end of low RAM */

static int vblk_verify_quick(struct vblk *b);

struct h_case {
    const char *name;
    bool indirect;                  /* negotiate INDIRECT_DESC */
    void (*act)(void);
};

/* ---- helpers ---------------------------------------------------------- */

static struct virtq *vq(void)
{
    return &V.q[0].vq;
}

static void *h_alloc(uint64_t size)
{
    return mem_alloc(size, 4096);
}

static uint64_t h_hdr(uint32_t type, uint64_t sector)
{
    struct vblk_hdr *h = h_alloc(sizeof(*h));

    h->type = type;
    h->sector = sector;
    return (uintptr_t)h;
}

static uint8_t *h_status_byte;

static uint64_t h_status(void)
{
    h_status_byte = h_alloc(16);
    *h_status_byte = 0xee;
    return (uintptr_t)h_status_byte;
}

static void h_desc(unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    struct virtq_desc *d = &vq()->desc[i];

    d->addr = addr;
    d->len = len;
    d->flags = flags;
    d->next = next;
}

/* Publish @head and kick (the device sees the idx whatever the flags say). */
static void h_publish(uint16_t head)
{
    struct virtq *q = vq();

    virtq_publish(q, head);
    __atomic_store_n(&q->avail->idx, q->avail_idx, __ATOMIC_RELEASE);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    *q->notify = (uint16_t)q->index;
}

/* A chain in descriptors 0.. of { addr, len, write } triples. */
struct h_buf {
    uint64_t addr;
    uint32_t len;
    bool write;
};

static void h_chain(const struct h_buf *b, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        h_desc(i, b[i].addr, b[i].len,
               (uint16_t)((b[i].write ? VIRTQ_DESC_F_WRITE : 0) |
                          (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0)), (uint16_t)(i + 1));
    }
    h_publish(0);
}

static void h_table(struct virtq_desc *t, const struct h_buf *b, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        t[i].addr = b[i].addr;
        t[i].len = b[i].len;
        t[i].flags = (uint16_t)((b[i].write ? VIRTQ_DESC_F_WRITE : 0) |
                                (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
        t[i].next = (uint16_t)(i + 1);
    }
}

/* One well-formed request on the victim's queue 0, slot 0: its status
 * byte, or 0xee when nothing came back. */
static uint8_t h_request(uint32_t type, uint64_t sector)
{
    struct vblk_queue *q = &V.q[0];
    unsigned slot;
    uint8_t status;

    uint64_t end;

    vblk_submit(q, 0, type, sector);
    vblk_kick(q);
    for (end = h_deadline(); tsc_read() < end;) {
        if (vblk_complete(q, &slot, &status)) {
            return status;
        }
        if (vpci_status(&V.pci) & VIRTIO_STATUS_NEEDS_RESET) {
            return 0xee;
        }
        cpu_relax();
    }
    return 0xee;
}

/* ---- outcome ------------------------------------------------------------- */

static char h_outcome[24];
static uint8_t h_worst = VIRTIO_BLK_S_OK;   /* for multi-request cases */
static bool h_outcome_set;

static void h_set_outcome(const char *s)
{
    unsigned i = 0;

    for (; s[i] && i + 1 < sizeof(h_outcome); i++) {
        h_outcome[i] = s[i];
    }
    h_outcome[i] = 0;
    h_outcome_set = true;
}

static void h_status_outcome(uint8_t st)
{
    static const char *const names[] = { "ok", "ioerr", "unsupp" };

    if (st < 3) {
        h_set_outcome(names[st]);
    } else if (st == 0xee) {
        h_set_outcome("none");
    } else {
        h_set_outcome("status_other");
    }
}

/* Wait (bounded) for a used entry or NEEDS_RESET after an act. */
static void h_observe(void)
{
    struct virtq *q = vq();

    for (uint64_t end = h_deadline(); tsc_read() < end;) {
        if (vpci_status(&V.pci) & VIRTIO_STATUS_NEEDS_RESET) {
            h_set_outcome("needs_reset");
            return;
        }
        if (__atomic_load_n(&q->used->idx, __ATOMIC_ACQUIRE) != q->used_idx) {
            if (h_status_byte) {
                h_status_outcome(*h_status_byte);
            } else {
                h_set_outcome("used");
            }
            return;
        }
        cpu_relax();
    }
    h_set_outcome("none");
}

/* ---- the cases ------------------------------------------------------------ */

static void c_loop(void)
{
    h_desc(0, h_hdr(VIRTIO_BLK_T_IN, 0), 16, VIRTQ_DESC_F_NEXT, 1);
    h_desc(1, (uintptr_t)h_alloc(512), 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 0);
    h_publish(0);
}

static void c_chain_longer_than_queue(void)
{
    unsigned n = vq()->size;

    h_desc(0, h_hdr(VIRTIO_BLK_T_IN, 0), 16, VIRTQ_DESC_F_NEXT, 1);
    for (unsigned i = 1; i < n; i++) {
        /* the last one leads back to 1: size + 1 descriptors and more */
        h_desc(i, (uintptr_t)h_alloc(512), 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
               (uint16_t)(i + 1 < n ? i + 1 : 1));
    }
    h_publish(0);
}

static void c_past_ram(void)
{
    struct h_buf b[] = { { h_hdr(VIRTIO_BLK_T_IN, 0), 16, false },
                         { 1ull << 40, 512, true }, { h_status(), 1, true } };
    h_chain(b, 3);
}

static void c_straddle_hole(void)
{
    struct h_buf b[] = { { h_hdr(VIRTIO_BLK_T_IN, 0), 16, false },
                         { ram_end - 256, 512, true }, { h_status(), 1, true } };
    h_chain(b, 3);
}

static void c_zero_len(void)
{
    struct h_buf b[] = { { h_hdr(VIRTIO_BLK_T_IN, 0), 16, false },
                         { (uintptr_t)h_alloc(512), 0, true }, { h_status(), 1, true } };
    h_chain(b, 3);
}

static void c_len_4g(void)
{
    struct h_buf b[] = { { h_hdr(VIRTIO_BLK_T_IN, 0), 16, false },
                         { (uintptr_t)h_alloc(512), 0xffffffffu, true },
                         { h_status(), 1, true } };
    h_chain(b, 3);
}

static void c_indirect_in_indirect(void)
{
    struct virtq_desc *inner = h_alloc(32), *outer = h_alloc(16);
    struct h_buf b[] = { { h_hdr(VIRTIO_BLK_T_FLUSH, 0), 16, false }, { h_status(), 1, true } };

    h_table(inner, b, 2);
    outer->addr = (uintptr_t)inner;
    outer->len = 32;
    outer->flags = VIRTQ_DESC_F_INDIRECT;
    h_desc(0, (uintptr_t)outer, 16, VIRTQ_DESC_F_INDIRECT, 0);
    h_publish(0);
}

static void h_indirect_len(uint32_t len)
{
    struct virtq_desc *t = h_alloc(64);
    struct h_buf b[] = { { h_hdr(VIRTIO_BLK_T_FLUSH, 0), 16, false }, { h_status(), 1, true } };

    h_table(t, b, 2);
    h_desc(0, (uintptr_t)t, len, VIRTQ_DESC_F_INDIRECT, 0);
    h_publish(0);
}

static void c_indirect_len0(void)
{
    h_indirect_len(0);
}

static void c_indirect_len_odd(void)
{
    h_indirect_len(40);
}

static void c_avail_jump(void)
{
    struct virtq *q = vq();

    q->avail_idx = (uint16_t)(q->avail_idx + q->size + 1);
    __atomic_store_n(&q->avail->idx, q->avail_idx, __ATOMIC_RELEASE);
    *q->notify = (uint16_t)q->index;
}

static void c_head_past_size(void)
{
    h_desc(0, h_hdr(VIRTIO_BLK_T_FLUSH, 0), 16, VIRTQ_DESC_F_NEXT, 1);
    h_desc(1, h_status(), 1, VIRTQ_DESC_F_WRITE, 0);
    h_publish((uint16_t)vq()->size);
}

static void c_readable_after_writable(void)
{
    struct h_buf b[] = { { h_hdr(VIRTIO_BLK_T_OUT, 0), 16, false }, { h_status(), 1, true },
                         { (uintptr_t)h_alloc(512), 512, false } };
    h_chain(b, 3);
}

static void c_notify_unset_queues(void)
{
    volatile uint8_t *n = V.pci.notify;

    /* Queues the driver never set up, and ones the device does not have. */
    for (unsigned q = 1; q < 64; q++) {
        *(volatile uint16_t *)(n + (uint64_t)q * V.pci.notify_mult) = (uint16_t)q;
    }
    /* The victim must still serve queue 0 without a reset. */
    h_status_outcome(h_request(VIRTIO_BLK_T_FLUSH, 0));
}

static void c_notify_after_reset(void)
{
    V.pci.common->device_status = 0;
    while (vpci_status(&V.pci) != 0) {
        cpu_relax();
    }
    for (unsigned q = 0; q < 4; q++) {
        *(volatile uint16_t *)(V.pci.notify + (uint64_t)q * V.pci.notify_mult) = (uint16_t)q;
    }
    h_set_outcome(vpci_status(&V.pci) ? "status_changed" : "none");
}

static void c_queue_enable_zero(void)
{
    volatile struct virtio_pci_common *c = V.pci.common;

    c->device_status = 0;
    while (vpci_status(&V.pci) != 0) {
        cpu_relax();
    }
    c->device_status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;
    c->driver_feature_select = 1;
    c->driver_feature = 1;  /* VERSION_1 */
    c->device_status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                       VIRTIO_STATUS_FEATURES_OK;
    c->queue_select = 0;
    c->queue_desc_lo = c->queue_desc_hi = 0;
    c->queue_driver_lo = c->queue_driver_hi = 0;
    c->queue_device_lo = c->queue_device_hi = 0;
    c->queue_enable = 1;
    c->device_status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                       VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK;
    *vq()->notify = 0;
    for (uint64_t end = h_deadline(); tsc_read() < end &&
         !(vpci_status(&V.pci) & VIRTIO_STATUS_NEEDS_RESET);) {
        cpu_relax();
    }
    h_set_outcome(vpci_status(&V.pci) & VIRTIO_STATUS_NEEDS_RESET ? "needs_reset" : "none");
}

/* The MSI-X table's BAR (found through the capability), writes past the
 * table and over the PBA, vectors the device does not have. */
static void c_msix_out_of_range(void)
{
    pci_bdf_t bdf = V.pci.bdf;
    uint8_t cap = pci_read8(bdf, PCI_CAP_PTR) & 0xfc;
    unsigned guard = 0;

    while (cap && pci_read8(bdf, cap) != 0x11 && guard++ < 48) {
        cap = pci_read8(bdf, cap + 1) & 0xfc;
    }
    if (cap) {
        uint32_t table = pci_read32(bdf, cap + 4);
        unsigned nr = (pci_read16(bdf, cap + 2) & 0x7ff) + 1;
        struct pci_bar bar;

        pci_bar_get(bdf, table & 7, &bar);
        if (bar.addr && !bar.io && bar.addr + 0x1000 <= (1ull << 32)) {
            volatile uint32_t *t = (volatile uint32_t *)(uintptr_t)(bar.addr + (table & ~7u));

            for (unsigned i = nr * 4; i < 1024 - (table & ~7u) / 4; i++) {
                t[i] = 0xdeadbeef;          /* past the table, the PBA, the rest */
            }
            for (unsigned i = 0; i < nr * 16; i++) {
                ((volatile uint8_t *)t)[i] = 0xff; /* byte writes into the table */
            }
        }
    }
    V.pci.common->config_msix_vector = 5000;
    V.pci.common->queue_select = 0;
    V.pci.common->queue_msix_vector = 2047;
    h_status_outcome(h_request(VIRTIO_BLK_T_FLUSH, 0));
}

static uint64_t h_rng = 0x9e3779b97f4a7c15ull;

static uint64_t h_garbage(void)
{
    h_rng ^= h_rng << 13;
    h_rng ^= h_rng >> 7;
    h_rng ^= h_rng << 17;
    return h_rng;
}

/* Garbage into the common configuration (status included), the device
 * configuration and the notify area, in bytes, words and dwords. */
static void c_garbage_bar(void)
{
    volatile uint8_t *c = (volatile uint8_t *)V.pci.common, *d = V.pci.device;

    for (int round = 0; round < 4; round++) {
        for (unsigned off = 0; off < 0x38; off++) {
            switch (h_garbage() % 3) {
            case 0: c[off] = (uint8_t)h_garbage(); break;
            case 1: *(volatile uint16_t *)(c + (off & ~1u)) = (uint16_t)h_garbage(); break;
            default: *(volatile uint32_t *)(c + (off & ~3u)) = (uint32_t)h_garbage(); break;
            }
        }
        for (unsigned off = 0; off < 0x40; off += 4) {
            *(volatile uint32_t *)(d + off) = (uint32_t)h_garbage();
        }
        for (unsigned q = 0; q < 8; q++) {
            *(volatile uint16_t *)(V.pci.notify + (uint64_t)q * V.pci.notify_mult) =
                (uint16_t)h_garbage();
        }
    }
    h_set_outcome(vpci_status(&V.pci) & VIRTIO_STATUS_NEEDS_RESET ? "needs_reset" : "none");
}

/* BAR 4 (the 64-bit one holding the virtio structures) of @bdf. */
static unsigned h_bar64(pci_bdf_t bdf, struct pci_bar *bar)
{
    for (unsigned n = 0; n < 6; n++) {
        pci_bar_get(bdf, n, bar);
        if (bar->is64 && bar->addr) {
            return n;
        }
        if (bar->is64) {
            n++;
        }
    }
    return 6;
}

/* Move the victim's 64-bit BAR to @addr, poke the old place, move it back. */
static void h_bar_move(uint64_t addr)
{
    pci_bdf_t bdf = V.pci.bdf;
    struct pci_bar bar;
    unsigned n = h_bar64(bdf, &bar);
    uint64_t old = bar.addr;

    if (n == 6) {
        h_set_outcome("no_bar");
        return;
    }
    pci_write32(bdf, PCI_BAR0 + 4 * n + 4, (uint32_t)(addr >> 32));
    pci_write32(bdf, PCI_BAR0 + 4 * n, (uint32_t)addr | (pci_read32(bdf, PCI_BAR0 + 4 * n) & 0xf));
    (void)vpci_status(&V.pci);          /* the old place: nothing (all ones) */
    if (have_bystander && vblk_verify_quick(&S) != 0) {
        h_set_outcome("bystander_broke");
    }
    pci_write32(bdf, PCI_BAR0 + 4 * n, (uint32_t)old | (pci_read32(bdf, PCI_BAR0 + 4 * n) & 0xf));
    pci_write32(bdf, PCI_BAR0 + 4 * n + 4, (uint32_t)(old >> 32));
    if (!h_outcome_set) {
        h_status_outcome(h_request(VIRTIO_BLK_T_FLUSH, 0));
    }
}

static void c_bar_on_ram(void)
{
    /* 16 MiB below the end of low RAM: inside the arena, unused. */
    h_bar_move((ram_end - (16u << 20)) & ~0xfffffull);
}

static void c_bar_on_other(void)
{
    struct pci_bar bar;

    if (!have_bystander || h_bar64(S.pci.bdf, &bar) == 6) {
        h_set_outcome("skipped");
        return;
    }
    h_bar_move(bar.addr);
}

static void c_features_not_offered(void)
{
    volatile struct virtio_pci_common *c = V.pci.common;

    c->device_status = 0;
    while (vpci_status(&V.pci) != 0) {
        cpu_relax();
    }
    c->device_status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;
    c->driver_feature_select = 0;
    c->driver_feature = 0x80000000u;                /* bit 31 */
    c->driver_feature_select = 1;
    c->driver_feature = 1u | (1u << 18) | (1u << 31); /* VERSION_1, 50, 63 */
    c->device_status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                       VIRTIO_STATUS_FEATURES_OK;
    h_set_outcome(vpci_status(&V.pci) & VIRTIO_STATUS_FEATURES_OK ? "accepted" : "refused");
}

static void c_sector_past_end(void)
{
    static const uint64_t sectors[] = {
        0, 0x007fffffffffffffull, 1ull << 55, ~0ull - 7,
    };
    uint8_t worst = VIRTIO_BLK_S_OK;

    for (unsigned i = 0; i < sizeof(sectors) / sizeof(sectors[0]); i++) {
        uint64_t s = i == 0 ? V.capacity : sectors[i];
        uint8_t st = h_request(i & 1 ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN, s);

        con_printf("HOSTILE request sector=0x%lx status=%u\n", (unsigned long)s, st);
        if (st != VIRTIO_BLK_S_IOERR) {
            worst = st;
        } else if (worst == VIRTIO_BLK_S_OK) {
            worst = VIRTIO_BLK_S_IOERR;
        }
    }
    h_worst = worst;
    h_status_outcome(worst);
}

static const struct h_case h_cases[] = {
    { "loop", false, c_loop },                                  /* 1 */
    { "chain_longer_than_queue", false, c_chain_longer_than_queue },
    { "past_ram", false, c_past_ram },
    { "straddle_hole", false, c_straddle_hole },
    { "zero_len", false, c_zero_len },                          /* 5 */
    { "len_4g", false, c_len_4g },
    { "indirect_in_indirect", true, c_indirect_in_indirect },
    { "indirect_len0", true, c_indirect_len0 },
    { "indirect_len_odd", true, c_indirect_len_odd },
    { "avail_jump", false, c_avail_jump },                      /* 10 */
    { "head_past_size", false, c_head_past_size },
    { "readable_after_writable", false, c_readable_after_writable },
    { "notify_unset_queues", false, c_notify_unset_queues },
    { "notify_after_reset", false, c_notify_after_reset },
    { "queue_enable_zero", false, c_queue_enable_zero },        /* 15 */
    { "msix_out_of_range", false, c_msix_out_of_range },
    { "garbage_bar", false, c_garbage_bar },
    { "bar_on_ram", false, c_bar_on_ram },
    { "bar_on_other", false, c_bar_on_other },
    { "features_not_offered", false, c_features_not_offered },  /* 20 */
    { "sector_past_end", false, c_sector_past_end },
};

#define H_NCASES (sizeof(h_cases) / sizeof(h_cases[0]))

/* A short verify run on @b's queue 0: stamp 8 blocks, read them back. */
static int vblk_verify_quick(struct vblk *b)
{
    struct vblk_queue *q = &b->q[0];
    uint64_t *d = vblk_data(q, 0);
    unsigned slot;
    uint8_t st;

    for (unsigned blk = 0; blk < 8; blk++) {
        for (int phase = 0; phase < 2; phase++) {
            if (phase == 0) {
                for (unsigned k = 0; k < H_BS / 8; k++) {
                    d[k] = 0x5348564d00000000ull ^ ((uint64_t)blk << 20) ^ k;
                }
            } else {
                memset(d, 0, H_BS);
            }
            vblk_submit(q, 0, phase ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT, blk * (H_BS / 512));
            vblk_kick(q);
            uint64_t end = h_deadline();
            while (!vblk_complete(q, &slot, &st)) {
                if (tsc_read() > end) {
                    return -1;
                }
                cpu_relax();
            }
            if (st != VIRTIO_BLK_S_OK) {
                return -1;
            }
        }
        for (unsigned k = 0; k < H_BS / 8; k++) {
            if (d[k] != (0x5348564d00000000ull ^ ((uint64_t)blk << 20) ^ k)) {
                return -1;
            }
        }
    }
    return 0;
}

static int h_open(struct vblk *b, unsigned disk, bool indirect)
{
    vblk_extra_features = indirect ? 1ull << VIRTIO_F_INDIRECT_DESC : 0;
    *b = (struct vblk){ 0 };
    return vblk_open(b, disk, 1, 1, H_BS);
}

int blk_hostile_main(void)
{
    uint64_t n = cmdline_u64("case", 0);
    const struct h_case *c;
    const char *after, *bys = "absent";
    bool pass;
    void *probe;

    if (n < 1 || n > H_NCASES) {
        con_printf("HOSTILE error: case=%lu (want 1 to %lu)\n", (unsigned long)n,
                   (unsigned long)H_NCASES);
        return 2;
    }
    c = &h_cases[n - 1];
    probe = mem_alloc(16, 16);
    ram_end = (uintptr_t)probe + 16 + mem_arena_left();
    if (h_open(&V, 0, c->indirect) < 0) {
        con_printf("HOSTILE error: disk 0 cannot be opened\n");
        return 3;
    }
    have_bystander = h_open(&S, 1, false) == 0;
    if (vblk_verify_quick(&V) != 0) {
        con_printf("HOSTILE error: disk 0 fails before the act\n");
        return 1;
    }
    con_printf("HOSTILE start case=%lu name=%s indirect=%u features=0x%lx bystander=%u "
               "ram_end=0x%lx\n", (unsigned long)n, c->name, (unsigned)c->indirect,
               (unsigned long)V.pci.features, (unsigned)have_bystander,
               (unsigned long)ram_end);

    c->act();
    if (!h_outcome_set) {
        h_observe();
    }
    uint8_t status = vpci_status(&V.pci);
    uint16_t used = __atomic_load_n(&vq()->used->idx, __ATOMIC_ACQUIRE);
    bool bys_ok = true;

    if (have_bystander) {
        bys_ok = vblk_verify_quick(&S) == 0;     /* while the victim is broken */
    }
    /* The guest reset: vblk_open starts with status 0 and waits for it. */
    after = h_open(&V, 0, false) == 0 && vblk_verify_quick(&V) == 0 ? "ok" : "fail";
    if (have_bystander) {
        bys_ok = bys_ok && vblk_verify_quick(&S) == 0;
        bys = bys_ok ? "ok" : "fail";
    }
    pass = after[0] == 'o' && bys_ok;
    con_printf("HOSTILE case=%lu name=%s outcome=%s status=0x%x used=%u after_reset=%s "
               "bystander=%s result=%s\n", (unsigned long)n, c->name, h_outcome,
               status, used, after, bys, pass ? "pass" : "fail");
    (void)h_worst;
    return pass ? 0 : 1;
}
