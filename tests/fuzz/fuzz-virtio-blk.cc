// libFuzzer target: virtqueues + virtio-blk over synthetic guest memory.
//
// Each input configures a device (queue size 2..256, one or two queues,
// the features the driver accepts, disk size, read-only, host errors) and
// then describes up to 16 descriptor chains, published in batches with a
// kick after each batch.  Most chains are well-formed requests; a rare
// "wrong" switch per chain breaks one thing (out-of-range sector, missing
// header/data/status, flipped writability, status length != 1, buffers
// outside RAM, zero or huge lengths, indirect tables that are nested,
// empty or oversized, loops, next index past the table, an avail index
// jumping ahead, a head reused while in flight).
//
// The queue context is a private AioContext polled here (no IOThread), the
// block layer the RAM disk of tests/virtio/fake-block.cc whose completions
// are one-shot BHs, so running the context until it makes no progress
// completes everything a batch started, deterministically.  Built with
// -DFUZZ_REAL_BLOCK (target fuzz-virtio-blk-io) it runs on the real block
// layer instead: null-co / null-aio, or the file driver with aio=threads or
// io_uring on a temporary image, waiting (aio_poll blocking) until nothing
// is in flight.
//
// Checked after every batch (abort() = a crash libFuzzer keeps):
//  - nothing outside guest memory is touched: RAM is two exactly-sized
//    allocations (ASan redzones) with a hole between them;
//  - one handler pass (plug .. unplug) pops at most queue-size heads;
//  - unless the device raised NEEDS_RESET, every published chain came back
//    in the used ring, nothing is left in flight, each head once;
//  - each used element names a head of this batch, its length is at most
//    the chain's writable bytes, and its status byte is OK, IOERR or
//    UNSUPP;
//  - a device in NEEDS_RESET is reset and works again for later batches.
#ifdef FUZZ_REAL_BLOCK
#include "shardvm/block.h"
#include <unistd.h>
#else
#include "../virtio/fake-block.h"
#endif
#include "fuzz-guest.h"

#include "shardvm/aio.h"
#include "shardvm/rcu.h"
#include "shardvm/virtio-blk.h"

#ifdef FUZZ_FDP_H
#include FUZZ_FDP_H  // gcc replay builds: clang's header by path
#else
#include <fuzzer/FuzzedDataProvider.h>
#endif

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

using namespace fuzzguest;

namespace {

constexpr unsigned kMaxChains = 16;

// ---- per-pass accounting: blk_queue_plug/unplug bracket one handler pass
// (strong definitions override fake-block.cc's weak ones; on the real
// block layer they are wrapped at link time); virtqueue_pop is wrapped at
// link time (-Wl,--wrap=virtqueue_pop).

unsigned g_pass_pops;
bool g_in_pass;
unsigned g_queue_size;

}  // namespace

extern "C" VirtQueueElement *__real_virtqueue_pop(VirtQueue *vq);

extern "C" VirtQueueElement *__wrap_virtqueue_pop(VirtQueue *vq)
{
    VirtQueueElement *e = __real_virtqueue_pop(vq);
    if (e && g_in_pass) {
        g_pass_pops++;
    }
    return e;
}

namespace {

unsigned g_plug_depth;

void PassBegin()
{
    if (g_plug_depth++ == 0) {
        CHECK(!g_in_pass, "nested pass");
        g_in_pass = true;
        g_pass_pops = 0;
    }
}

void PassEnd()
{
    CHECK(g_plug_depth > 0, "unplug without plug");
    if (--g_plug_depth == 0) {
        CHECK(g_pass_pops <= g_queue_size, "one pass popped %u heads, queue size %u",
              g_pass_pops, g_queue_size);
        g_in_pass = false;
    }
}

}  // namespace

#ifdef FUZZ_REAL_BLOCK
// The real block layer: plug/unplug wrapped at link time too.
extern "C" void __real_blk_queue_plug(BlockQueue *q);
extern "C" void __real_blk_queue_unplug(BlockQueue *q);

extern "C" void __wrap_blk_queue_plug(BlockQueue *q)
{
    PassBegin();
    __real_blk_queue_plug(q);
}

extern "C" void __wrap_blk_queue_unplug(BlockQueue *q)
{
    __real_blk_queue_unplug(q);
    PassEnd();
}
#else
extern "C" void blk_queue_plug(BlockQueue *q)
{
    q->plug++;
    PassBegin();
}

extern "C" void blk_queue_unplug(BlockQueue *q)
{
    CHECK(q->plug > 0, "unplug without plug");
    q->plug--;
    PassEnd();
}
#endif

namespace {

struct Seg {
    uint64_t gpa;
    uint32_t len;
    bool write;
};

// One published chain as the driver knows it.
struct Chain {
    uint16_t head;
    uint64_t writable;      // bytes the device may write
    uint8_t *status;        // last byte of the last writable buffer, or null
    bool used;
};

struct Driver {
    VirtQueue *vq;
    uint16_t n;
    uint64_t desc, avail, used;
    uint16_t avail_idx, last_used;
    unsigned next_desc;     // free ring descriptors from here (per batch)
    unsigned indirect_tables;
    std::vector<Chain> chains;  // this batch

    uint16_t *Avail() { return reinterpret_cast<uint16_t *>(Hva(avail)); }
    uint8_t *Used() { return Hva(used); }
    void SetDesc(uint64_t table, unsigned i, const Seg &s, uint16_t flags, uint16_t next)
    {
        VRingDesc d = {s.gpa, s.len, flags, next};
        memcpy(Hva(table + 16 * i), &d, sizeof(d));
    }
};

enum Wrong {
    W_NONE,
    W_SECTOR,         // out-of-range or overflowing sector
    W_NO_DATA,        // data descriptors left out
    W_FLIP,           // one buffer's writability flipped
    W_STATUS_LEN,     // status buffer of 0 or 2..17 bytes
    W_NO_HEADER,      // header missing or short
    W_ADDR,           // a buffer outside RAM / straddling the hole / wrapping
    W_LEN,            // a zero or 4 GiB - 1 length
    W_LOOP,           // the last descriptor points back into the chain
    W_NEXT_PAST,      // next index past the table
    W_NESTED_INDIRECT,
    W_INDIRECT_LEN,   // indirect table length 0 / not a multiple of 16 / > size
    W_AVAIL_JUMP,     // avail idx moved ahead by more than the queue size
    W_REUSE_HEAD,     // a head still in flight published again
    W_COUNT
};

struct Input {
    FuzzedDataProvider fdp;
    Input(const uint8_t *d, size_t n) : fdp(d, n) {}
    bool Rare() { return fdp.ConsumeIntegral<uint8_t>() < 12; }  // ~5%
};

uint64_t g_bump;   // RAM1 allocator, reset per batch

uint64_t Alloc(uint64_t len)
{
    uint64_t g = (g_bump + 15) & ~15ULL;
    if (g + len > kRam1 + kRam1Size) {
        return 0;
    }
    g_bump = g + len;
    return g;
}

#ifdef FUZZ_REAL_BLOCK
// One image file for every input (resized to the disk size): the file
// driver with aio=threads or io_uring, or null-co / null-aio.
const char *ImagePath()
{
    static char path[4096];
    if (!path[0]) {
        snprintf(path, sizeof(path), "%s/shardvm-fuzz-%d.img", g_get_tmp_dir(), int(getpid()));
        atexit([] { unlink(ImagePath()); });
    }
    return path;
}

BlockBackend *OpenBackend(Input &in, uint64_t size, bool ro)
{
    static const char *const kDrives[] = {
        "driver=null-co,read-zeroes=on", "driver=null-aio,read-zeroes=on",
        "driver=file,aio=threads,locking=off", "driver=file,aio=io_uring,locking=off",
    };
    unsigned kind = in.fdp.ConsumeIntegralInRange<unsigned>(0, 3);
    char *arg;
    if (kind >= 2) {
        FILE *f = fopen(ImagePath(), "w");
        CHECK(f && ftruncate(fileno(f), off_t(size)) == 0, "image");
        fclose(f);
        arg = g_strdup_printf("%s,file=%s,id=fz%s", kDrives[kind], ImagePath(),
                              ro ? ",readonly=on" : "");
    } else {
        arg = g_strdup_printf("%s,size=%llu,id=fz%s", kDrives[kind], (unsigned long long)size,
                              ro ? ",readonly=on" : "");
    }
    BlockOptions o = {};
    GError *err = nullptr;
    BlockBackend *blk = nullptr;
    if (block_parse_drive(arg, &o, &err) == 0) {
        blk = blk_open(&o, &err);
    }
    // io_uring may be refused by the host: no input, skip.
    g_clear_error(&err);
    block_options_clear(&o);
    g_free(arg);
    return blk;
}
#endif

class Harness {
public:
    BlockBackend *blk = nullptr;
    VirtIOBlock *s = nullptr;
    VirtIODevice *vdev = nullptr;
    VirtIOBlockConfig cfg;
    std::vector<Driver> drv;
    uint64_t features = 0;
    uint16_t driver_size = 0;
    uint64_t disk_sectors = 0;

    ~Harness()
    {
        if (s) {
            Reset();
            virtio_blk_free(s);
        }
        if (blk) {
#ifndef FUZZ_REAL_BLOCK
            CHECK(blk->queues.load() == 0, "block queues left");
            CHECK(blk->wrong_thread.load() == 0, "request outside the queue's thread");
#endif
            blk_unref(blk);
        }
        virtio_blk_config_clear(&cfg);
    }

    bool Create(Input &in)
    {
        World *w = TheWorld();
        virtio_blk_config_init(&cfg);
        unsigned max_log2 = in.fdp.ConsumeIntegralInRange<unsigned>(1, 8);
        cfg.queue_size = uint16_t(1u << max_log2);
        driver_size = uint16_t(1u << in.fdp.ConsumeIntegralInRange<unsigned>(1, max_log2));
        cfg.num_queues = in.fdp.ConsumeIntegralInRange<unsigned>(1, 2);
        uint8_t opts = in.fdp.ConsumeIntegral<uint8_t>();
        cfg.discard = opts & 1;
        cfg.write_zeroes = opts & 2;
        if ((opts & 0x0c) == 0x0c) {
            cfg.logical_block_size = cfg.physical_block_size = 4096;
        }
        if (opts & 0x10) {
            cfg.serial = g_strdup("fuzz-serial-0123456789");
        }
        disk_sectors = 8 * in.fdp.ConsumeIntegralInRange<uint64_t>(1, 64);
#ifdef FUZZ_REAL_BLOCK
        blk = OpenBackend(in, disk_sectors * 512, (opts & 0xe0) == 0xe0);
        if (!blk) {
            return false;
        }
#else
        blk = fake_blk_new(disk_sectors * 512, (opts & 0xe0) == 0xe0);
        if ((opts & 0xe0) == 0xc0) {
            blk->fail = -EIO;
        }
#endif
        std::vector<AioContext *> ctxs(cfg.num_queues, w->ctx);
        GError *err = nullptr;
        s = virtio_blk_new(&cfg, blk, ctxs.data(), w->mem, &err);
        if (!s) {
            g_clear_error(&err);   // e.g. 4 KiB blocks on a disk that is not a multiple
            return false;
        }
        vdev = virtio_blk_get_vdev(s);
        features = (vdev->host_features & in.fdp.ConsumeIntegral<uint64_t>()) |
                   (1ULL << VIRTIO_F_VERSION_1);
        return Start();
    }

    // The driver's start-up: reset, features, queues, DRIVER_OK.
    bool Start()
    {
        g_mutex_lock(&vdev->lock);
        virtio_set_status(vdev, 0);
        virtio_set_status(vdev, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
        virtio_set_guest_features(vdev, features);
        virtio_set_status(vdev, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                                    VIRTIO_STATUS_FEATURES_OK);
        CHECK(virtio_get_status(vdev) & VIRTIO_STATUS_FEATURES_OK, "features refused");
        drv.assign(vdev->num_queues, Driver());
        for (unsigned q = 0; q < vdev->num_queues; q++) {
            Driver &d = drv[q];
            d.vq = virtio_get_queue(vdev, q);
            d.n = driver_size;
            d.desc = kRam0 + q * 0x4000;
            d.avail = d.desc + 0x1000;
            d.used = d.desc + 0x2000;
            memset(Hva(d.desc), 0, 0x4000);
            virtqueue_set_size(d.vq, d.n);
            virtqueue_set_addrs(d.vq, d.desc, d.avail, d.used);
            virtqueue_set_enabled(d.vq, true);
        }
        virtio_set_status(vdev, virtio_get_status(vdev) | VIRTIO_STATUS_DRIVER_OK);
        g_mutex_unlock(&vdev->lock);
        g_queue_size = driver_size;
        return !(virtio_get_status(vdev) & VIRTIO_STATUS_NEEDS_RESET);
    }

    void Reset()
    {
        g_mutex_lock(&vdev->lock);
        virtio_set_status(vdev, 0);
        g_mutex_unlock(&vdev->lock);
        for (Driver &d : drv) {
            CHECK(virtqueue_in_flight(d.vq) == 0, "in flight after reset");
        }
    }

    bool Broken() { return virtio_get_status(vdev) & VIRTIO_STATUS_NEEDS_RESET; }

    // Build one chain from the input into queue @q.  Returns false when it
    // does not fit this batch (the caller kicks first).
    bool AddChain(Input &in, unsigned q, Wrong wrong);

    // Kick every queue with something published, run the context until
    // idle, check the used rings.
    void Kick();
};

bool Harness::AddChain(Input &in, unsigned q, Wrong wrong)
{
    Driver &d = drv[q];
    static const uint32_t kTypes[] = {
        VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
        VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_T_GET_LIFETIME, 99,
    };
    uint32_t type = kTypes[in.fdp.ConsumeIntegralInRange<unsigned>(0, 7)];
    uint64_t sector = in.fdp.ConsumeIntegralInRange<uint64_t>(0, disk_sectors);
    unsigned ndata = in.fdp.ConsumeIntegralInRange<unsigned>(0, 4);
    bool indirect = (features >> VIRTIO_F_INDIRECT_DESC & 1) && in.fdp.ConsumeBool();

    if (wrong == W_SECTOR) {
        static const uint64_t kBad[] = {0, 1, UINT64_MAX / 512, UINT64_MAX / 512 + 1,
                                        UINT64_MAX, (1ULL << 55) - 1};
        sector = disk_sectors + kBad[in.fdp.ConsumeIntegralInRange<unsigned>(0, 5)];
    }

    std::vector<Seg> segs;
    // Header.
    uint64_t h = Alloc(16);
    uint32_t hdr_len = 16;
    if (!h) {
        return false;
    }
    if (wrong == W_NO_HEADER) {
        hdr_len = in.fdp.ConsumeIntegralInRange<uint32_t>(0, 15);
    }
    struct {
        uint32_t type, ioprio;
        uint64_t sector;
    } hdr = {htole32(type), 0, htole64(sector)};
    memcpy(Hva(h), &hdr, 16);
    if (hdr_len) {
        segs.push_back({h, hdr_len, false});
    }
    // Payload.
    if (type == VIRTIO_BLK_T_DISCARD || type == VIRTIO_BLK_T_WRITE_ZEROES) {
        struct {
            uint64_t sector;
            uint32_t num, flags;
        } seg = {htole64(in.fdp.ConsumeIntegralInRange<uint64_t>(0, disk_sectors + 2)),
                 htole32(in.fdp.ConsumeIntegralInRange<uint32_t>(0, 64)),
                 htole32(in.fdp.ConsumeIntegralInRange<uint32_t>(0, 2))};
        uint32_t len = in.fdp.ConsumeBool() ? 16 : in.fdp.ConsumeIntegralInRange<uint32_t>(1, 32);
        uint64_t g = Alloc(32);
        if (!g) {
            return false;
        }
        memcpy(Hva(g), &seg, 16);
        segs.push_back({g, len, false});
    } else if (wrong != W_NO_DATA) {
        bool write = type != VIRTIO_BLK_T_OUT;
        if (type == VIRTIO_BLK_T_FLUSH) {
            ndata = in.fdp.ConsumeIntegralInRange<unsigned>(0, 1);
        }
        for (unsigned i = 0; i < ndata; i++) {
            uint32_t len = in.fdp.ConsumeBool()
                               ? 512 * in.fdp.ConsumeIntegralInRange<uint32_t>(1, 4)
                               : in.fdp.ConsumeIntegralInRange<uint32_t>(1, 2048);
            uint64_t g = Alloc(len);
            if (!g) {
                break;
            }
            // Distinct contents so a wrong copy shows up in the disk.
            memset(Hva(g), int(0x40 + i), len);
            segs.push_back({g, len, write});
        }
    }
    // Status.
    uint32_t st_len = 1;
    if (wrong == W_STATUS_LEN) {
        st_len = in.fdp.ConsumeIntegralInRange<uint32_t>(0, 17);
        if (st_len == 1) {
            st_len = 0;
        }
    }
    if (st_len) {
        uint64_t g = Alloc(st_len);
        if (!g) {
            return false;
        }
        memset(Hva(g), 0xff, st_len);
        segs.push_back({g, st_len, true});
    }
    if (segs.empty()) {
        segs.push_back({h, 16, false});
    }
    if (wrong == W_FLIP) {
        segs[in.fdp.ConsumeIntegralInRange<size_t>(0, segs.size() - 1)].write ^= true;
    }
    if (wrong == W_ADDR || wrong == W_LEN) {
        Seg &sg = segs[in.fdp.ConsumeIntegralInRange<size_t>(0, segs.size() - 1)];
        if (wrong == W_ADDR) {
            static const uint64_t kAddrs[] = {
                kHole - 8, kHole, kRam1 - 1, kRam1 + kRam1Size - 8, kRam1 + kRam1Size,
                0, UINT64_MAX - 7, 1ULL << 32, (1ULL << 47) - 4,
            };
            sg.gpa = kAddrs[in.fdp.ConsumeIntegralInRange<unsigned>(0, 8)];
        } else {
            sg.len = in.fdp.ConsumeBool() ? 0 : UINT32_MAX;
        }
    }

    // Writable bytes and the status byte, as the device will see them.
    if (getenv("FUZZ_DEBUG")) {
        fprintf(stderr, "chain q%u type %u sector %llu wrong %d indirect %d:", q, type,
                (unsigned long long)sector, int(wrong), int(indirect));
        for (const Seg &sg : segs) {
            fprintf(stderr, " %llx+%u%s", (unsigned long long)sg.gpa, sg.len, sg.write ? "w" : "r");
        }
        fprintf(stderr, "\n");
    }
    Chain c = {};
    for (const Seg &sg : segs) {
        if (sg.write) {
            c.writable += sg.len;
            if (InRam(sg.gpa, sg.len)) {
                c.status = Hva(sg.gpa + sg.len - 1);
            } else {
                c.status = nullptr;
            }
        }
    }

    // Lay the chain out: in the ring, or in an indirect table.
    unsigned ring_descs = indirect ? 1 : unsigned(segs.size());
    if (d.chains.size() >= d.n || d.next_desc + ring_descs > d.n ||
        (indirect && d.indirect_tables >= kMaxChains)) {
        return false;
    }
    uint64_t table = d.desc;
    unsigned base = d.next_desc;
    if (indirect) {
        table = d.desc + 0x3000 + 256 * d.indirect_tables++;
        base = 0;
        if (segs.size() > 16) {
            segs.resize(16);
        }
    }
    for (size_t i = 0; i < segs.size(); i++) {
        bool last = i + 1 == segs.size();
        uint16_t flags = (segs[i].write ? VRING_DESC_F_WRITE : 0) | (last ? 0 : VRING_DESC_F_NEXT);
        uint16_t next = uint16_t(base + i + 1);
        if (last && wrong == W_LOOP) {
            flags |= VRING_DESC_F_NEXT;
            next = uint16_t(base + in.fdp.ConsumeIntegralInRange<size_t>(0, i));
        }
        if (last && wrong == W_NEXT_PAST) {
            flags |= VRING_DESC_F_NEXT;
            next = uint16_t((indirect ? segs.size() : d.n) +
                            in.fdp.ConsumeIntegralInRange<unsigned>(0, 3));
        }
        if (i == 0 && wrong == W_NESTED_INDIRECT && indirect) {
            flags |= VRING_DESC_F_INDIRECT;
        }
        d.SetDesc(table, base + i, segs[i], flags, next);
    }
    c.head = uint16_t(d.next_desc);
    if (indirect) {
        uint32_t tlen = uint32_t(16 * segs.size());
        if (wrong == W_INDIRECT_LEN) {
            static const uint32_t kLens[] = {0, 8, 17, 16 * 257, 0xfffffff0};
            tlen = kLens[in.fdp.ConsumeIntegralInRange<unsigned>(0, 4)];
        }
        d.SetDesc(d.desc, d.next_desc, {table, tlen, false}, VRING_DESC_F_INDIRECT, 0);
    }
    d.next_desc += ring_descs;

    uint16_t head = c.head;
    if (wrong == W_REUSE_HEAD && !d.chains.empty()) {
        // The device serves the old chain twice: expect its bytes.
        c = d.chains[in.fdp.ConsumeIntegralInRange<size_t>(0, d.chains.size() - 1)];
        c.used = false;
        head = c.head;
    }
    d.chains.push_back(c);
    d.Avail()[2 + d.avail_idx % d.n] = htole16(head);
    d.avail_idx++;
    if (wrong == W_AVAIL_JUMP) {
        d.avail_idx += uint16_t(d.n + in.fdp.ConsumeIntegralInRange<unsigned>(1, 0x8000));
    }
    if (features >> VIRTIO_F_EVENT_IDX & 1) {
        // used_event: interrupt suppression only, any value is legal.
        d.Avail()[2 + d.n] = htole16(in.fdp.ConsumeIntegral<uint16_t>());
    } else {
        d.Avail()[0] = htole16(in.fdp.ConsumeBool() ? VRING_AVAIL_F_NO_INTERRUPT : 0);
    }
    __atomic_store_n(&d.Avail()[1], htole16(d.avail_idx), __ATOMIC_SEQ_CST);
    return true;
}

void Harness::Kick()
{
    World *w = TheWorld();
    for (Driver &d : drv) {
        if (!d.chains.empty()) {
            event_notifier_set(virtqueue_get_host_notifier(d.vq));
        }
    }
    RunUntilIdle(w->ctx);
#ifdef FUZZ_REAL_BLOCK
    // File I/O completes from worker threads / the kernel: wait for it.
    for (;;) {
        unsigned inflight = 0;
        for (Driver &d : drv) {
            inflight += virtqueue_in_flight(d.vq);
        }
        if (!inflight) {
            break;
        }
        aio_poll(w->ctx, true);
    }
    RunUntilIdle(w->ctx);
#endif
    bool broken = Broken();
    for (Driver &d : drv) {
        uint16_t used_idx = le16toh(__atomic_load_n(
            reinterpret_cast<uint16_t *>(d.Used() + 2), __ATOMIC_SEQ_CST));
        uint16_t n_used = uint16_t(used_idx - d.last_used);
        CHECK(n_used <= d.chains.size(), "%u used entries for %zu chains", n_used,
              d.chains.size());
        for (uint16_t i = 0; i < n_used; i++) {
            VRingUsedElem e;
            memcpy(&e, d.Used() + 4 + 8 * ((d.last_used + i) % d.n), sizeof(e));
            uint32_t id = le32toh(e.id), len = le32toh(e.len);
            Chain *c = nullptr;
            for (Chain &x : d.chains) {
                if (x.head == id && !x.used) {
                    c = &x;
                    break;
                }
            }
            CHECK(c, "used id %u is no head in flight", id);
            c->used = true;
            CHECK(len <= c->writable, "used len %u > %llu writable bytes", len,
                  (unsigned long long)c->writable);
            CHECK(c->status, "a chain without a status byte completed");
            CHECK(*c->status <= VIRTIO_BLK_S_UNSUPP, "status %u", *c->status);
        }
        d.last_used = used_idx;
        if (!broken) {
            CHECK(n_used == d.chains.size(), "%u of %zu chains completed, device not broken",
                  n_used, d.chains.size());
            CHECK(virtqueue_in_flight(d.vq) == 0, "in flight after the batch");
        }
        d.chains.clear();
        d.next_desc = 0;
        d.indirect_tables = 0;
    }
    g_bump = kRam1;
    if (broken) {
        // NEEDS_RESET: the driver resets and starts over; it must work.
        Reset();
        CHECK(Start(), "device broken right after a reset");
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    World *w = TheWorld();
    ClearRam();
    g_bump = kRam1;
    Input in(data, size);
    {
        Harness hs;
        if (!hs.Create(in)) {
            return 0;
        }
        for (unsigned i = 0; i < kMaxChains && in.fdp.remaining_bytes(); i++) {
            unsigned q = in.fdp.ConsumeIntegralInRange<unsigned>(0, hs.cfg.num_queues - 1);
            Wrong wrong = W_NONE;
            if (in.Rare()) {
                wrong = Wrong(in.fdp.ConsumeIntegralInRange<int>(1, W_COUNT - 1));
            }
            if (!hs.AddChain(in, q, wrong)) {
                hs.Kick();
                if (!hs.AddChain(in, q, wrong)) {
                    continue;
                }
            }
            if (in.fdp.ConsumeIntegral<uint8_t>() < 64) {
                hs.Kick();
            }
        }
        hs.Kick();
        // One clean request after everything: the device still serves.
        unsigned q = 0;
        Input tail(reinterpret_cast<const uint8_t *>("\0\0\0\0"), 4);
        if (hs.AddChain(tail, q, W_NONE)) {
            hs.Kick();
        }
    }
    // Deferred frees of the device's BHs.
    RunUntilIdle(w->ctx);
    return 0;
}
