// The hostile suite's test bed: see hostile-bed.h.
#include "hostile-bed.h"

namespace hostile {

// ---- Driver ---------------------------------------------------------------

uint64_t Driver::Alloc(uint64_t len)
{
    len = (len + 15) & ~15ull;
    if (bump + len > buf_hi) {
        bump = buf_lo;
    }
    uint64_t g = bump;
    bump += len;
    return g;
}

uint64_t Driver::Mmio(uint64_t a, unsigned size)
{
    uint64_t v = 0;
    address_space_read(bed->mmio, a, size, &v);
    return v;
}

void Driver::SetMmio(uint64_t a, unsigned size, uint64_t v)
{
    address_space_write(bed->mmio, a, size, v);
}

uint8_t Driver::Start(bool indirect)
{
    SetStatus(0);
    SetStatus(VIRTIO_STATUS_ACKNOWLEDGE);
    SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    SetMmio(common + VIRTIO_PCI_COMMON_DFSELECT, 4, 0);
    uint64_t offered = Mmio(common + VIRTIO_PCI_COMMON_DF, 4);
    SetMmio(common + VIRTIO_PCI_COMMON_DFSELECT, 4, 1);
    offered |= Mmio(common + VIRTIO_PCI_COMMON_DF, 4) << 32;
    features = (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_BLK_F_FLUSH) |
               (1ull << VIRTIO_BLK_F_DISCARD) | (1ull << VIRTIO_BLK_F_WRITE_ZEROES);
    if (indirect) {
        features |= 1ull << VIRTIO_F_INDIRECT_DESC;
    }
    features &= offered;
    SetMmio(common + VIRTIO_PCI_COMMON_GFSELECT, 4, 0);
    SetMmio(common + VIRTIO_PCI_COMMON_GF, 4, (uint32_t)features);
    SetMmio(common + VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
    SetMmio(common + VIRTIO_PCI_COMMON_GF, 4, features >> 32);
    SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
              VIRTIO_STATUS_FEATURES_OK);
    if (!(Status() & VIRTIO_STATUS_FEATURES_OK)) {
        return Status();
    }
    memset(bed->guest.hva(ring_gpa), 0, 0x3000);
    ring = vtest::Ring();
    ring.g = &bed->guest;
    ring.n = kQueueSize;
    ring.desc = ring_gpa;
    ring.avail = ring_gpa + 0x1000;
    ring.used = ring_gpa + 0x2000;
    SetMmio(common + VIRTIO_PCI_COMMON_MSIX, 2, 0);
    SelectQueue(0);
    SetMmio(common + VIRTIO_PCI_COMMON_Q_SIZE, 2, kQueueSize);
    SetMmio(common + VIRTIO_PCI_COMMON_Q_DESCLO, 4, ring.desc);
    SetMmio(common + VIRTIO_PCI_COMMON_Q_DESCHI, 4, 0);
    SetMmio(common + VIRTIO_PCI_COMMON_Q_AVAILLO, 4, ring.avail);
    SetMmio(common + VIRTIO_PCI_COMMON_Q_AVAILHI, 4, 0);
    SetMmio(common + VIRTIO_PCI_COMMON_Q_USEDLO, 4, ring.used);
    SetMmio(common + VIRTIO_PCI_COMMON_Q_USEDHI, 4, 0);
    SetMmio(common + VIRTIO_PCI_COMMON_Q_MSIX, 2, 1);
    SetMmio(common + VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
    SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
              VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
    (void)Isr(); // start from a clear ISR
    return Status();
}

bool Driver::WaitUsed(uint16_t before)
{
    auto deadline = std::chrono::steady_clock::now() + kHangLimit;
    while (ring.UsedIdx() == before) {
        if (std::chrono::steady_clock::now() > deadline) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    return true;
}

bool Driver::WaitNeedsReset()
{
    auto deadline = std::chrono::steady_clock::now() + kHangLimit;
    while (!(Status() & VIRTIO_STATUS_NEEDS_RESET)) {
        if (std::chrono::steady_clock::now() > deadline) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    return true;
}

uint8_t Driver::Request(uint32_t type, uint64_t sector, uint64_t data,
                        uint32_t len, bool data_write)
{
    uint64_t hdr = Alloc(16), st = Alloc(1);
    BlkHdr h = { type, 0, sector };
    memcpy(bed->guest.hva(hdr), &h, sizeof(h));
    *(uint8_t *)bed->guest.hva(st) = kNoStatus;
    std::vector<vtest::Ring::Buf> bufs = { { hdr, 16, false } };
    if (len) {
        bufs.push_back({ data, len, data_write });
    }
    bufs.push_back({ st, 1, true });
    uint16_t before = ring.UsedIdx();
    ring.AddChain(bufs);
    Kick();
    if (!WaitUsed(before)) {
        return kNoStatus;
    }
    return __atomic_load_n((uint8_t *)bed->guest.hva(st), __ATOMIC_ACQUIRE);
}

bool Driver::Verify(uint64_t seed)
{
    constexpr uint32_t kLen = 16384;
    uint64_t sectors = kImageSize / 512 - kLen / 512;
    uint64_t sector = (seed * 97 % sectors) & ~7ull;
    uint64_t w = Alloc(kLen), r = Alloc(kLen);
    uint8_t *wp = (uint8_t *)bed->guest.hva(w), *rp = (uint8_t *)bed->guest.hva(r);
    for (uint32_t i = 0; i < kLen; i++) {
        wp[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 9));
    }
    memset(rp, 0, kLen);
    return Request(VIRTIO_BLK_T_OUT, sector, w, kLen, false) == VIRTIO_BLK_S_OK &&
           Request(VIRTIO_BLK_T_FLUSH, 0, 0, 0, false) == VIRTIO_BLK_S_OK &&
           Request(VIRTIO_BLK_T_IN, sector, r, kLen, true) == VIRTIO_BLK_S_OK &&
           memcmp(wp, rp, kLen) == 0;
}

// ---- Bed ------------------------------------------------------------------

static IOThread *FindIOThread(void *o, const char *id)
{
    Bed *t = static_cast<Bed *>(o);
    for (IOThread *i : t->iot) {
        if (i && strcmp(iothread_get_id(i), id) == 0) {
            return i;
        }
    }
    return nullptr;
}

static BlockBackend *FindDrive(void *o, const char *id)
{
    Bed *t = static_cast<Bed *>(o);
    for (BlockBackend *b : t->blk) {
        if (b && strcmp(blk_get_id(b), id) == 0) {
            return b;
        }
    }
    return nullptr;
}

void Bed::BuildMachine()
{
    shardvm_rcu_init();
    bql_lock();
    bql_held = true;
    pio = address_space_new("pio", ADDRESS_SPACE_PIO);
    mmio = address_space_new("mmio", ADDRESS_SPACE_MMIO);
    PCIBusConfig cfg = {};
    cfg.mmio = mmio;
    cfg.pio = pio;
    cfg.ram_below_4g = 64ull << 20;
    cfg.vm_ops = &FakeVM::ops;
    cfg.vm_opaque = &vm;
    bus = pci_bus_new(&cfg, nullptr);
    ASSERT_NE(bus, nullptr);
    for (int i = 0; i < 2; i++) {
        if (image_path[i].empty()) {
            char tmpl[] = "/tmp/shardvm-hostile-XXXXXX";
            int fd = mkstemp(tmpl);
            ASSERT_GE(fd, 0);
            ASSERT_EQ(ftruncate(fd, kImageSize), 0);
            close(fd);
            image[i] = tmpl;
        }
        BlockOptions o = {};
        o.id = g_strdup_printf("d%d", i);
        o.driver = BLOCK_DRIVER_FILE;
        o.filename = g_strdup(image[i].empty() ? image_path[i].c_str()
                                               : image[i].c_str());
        o.aio = aio_mode;
        o.cache_direct = cache_direct;
        o.cache_writeback = true;
        o.discard = BLOCK_DISCARD_UNMAP;
        GError *err = nullptr;
        blk[i] = blk_open(&o, &err);
        block_options_clear(&o);
        ASSERT_NE(blk[i], nullptr) << (err ? err->message : "");
        char id[8];
        snprintf(id, sizeof(id), "io%d", i);
        iot[i] = iothread_new(id, nullptr, &err);
        ASSERT_NE(iot[i], nullptr);
    }
}

void *Bed::CreateDevice(const std::string &arg, GError **err)
{
    DeviceOption *d = device_option_parse(arg.c_str(), err);
    if (!d) {
        return nullptr;
    }
    const DeviceType *t = device_type_find(d->driver);
    EXPECT_NE(t, nullptr);
    GHashTable *props = g_hash_table_new_full(g_str_hash, g_str_equal,
                                              g_free, g_free);
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, d->props);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        g_hash_table_insert(props, g_strdup((char *)k), g_strdup((char *)v));
    }
    DeviceHost host = {};
    host.pci = bus;
    host.find_iothread = FindIOThread;
    host.find_drive = FindDrive;
    host.opaque = this;
    host.guest_memory = guest.mem;
    void *dev = t ? t->create(&host, props, err) : nullptr;
    g_hash_table_unref(props);
    device_option_free(d);
    return dev;
}

void Bed::DestroyDevices()
{
    for (void *&d : dev) {
        if (d) {
            virtio_blk_pci_destroy(d);
            d = nullptr;
        }
    }
}

void Bed::FreeMachine()
{
    pci_bus_free(bus);
    EXPECT_TRUE(vm.ioeventfds.empty());
    address_space_free(pio);
    address_space_free(mmio);
    for (int i = 0; i < 2; i++) {
        blk_unref(blk[i]);
        iothread_free(iot[i]);
        if (!image[i].empty()) {
            unlink(image[i].c_str());
        }
    }
    bql_unlock();
    bql_held = false;
    shardvm_rcu_drain();
}

uint32_t Bed::Cfg(unsigned slot, unsigned off, unsigned size)
{
    uint64_t v = 0;
    address_space_write(pio, 0xcf8, 4, 0x80000000u | (slot << 11) | (off & 0xfc));
    address_space_read(pio, 0xcfc + (off & 3), size, &v);
    return (uint32_t)v;
}

void Bed::SetCfg(unsigned slot, unsigned off, unsigned size, uint32_t v)
{
    address_space_write(pio, 0xcf8, 4, 0x80000000u | (slot << 11) | (off & 0xfc));
    address_space_write(pio, 0xcfc + (off & 3), size, v);
}

void Bed::Probe(Driver &d, unsigned slot, uint64_t ring_gpa, uint64_t buf_lo,
                uint64_t buf_hi)
{
    d.bed = this;
    d.slot = (int)slot;
    d.ring_gpa = ring_gpa;
    d.buf_lo = d.bump = buf_lo;
    d.buf_hi = buf_hi;
    ASSERT_EQ(Cfg(slot, 0, 4), 0x10421af4u) << "no virtio-blk at slot " << slot;
    d.bar4 = (Cfg(slot, 0x20, 4) & ~0xfull) | ((uint64_t)Cfg(slot, 0x24, 4) << 32);
    d.bar1 = Cfg(slot, 0x14, 4) & ~0xfull;
    ASSERT_NE(d.bar4, 0u);
    for (unsigned c = Cfg(slot, 0x34, 1); c; c = Cfg(slot, c + 1, 1)) {
        unsigned id = Cfg(slot, c, 1);
        if (id == 0x09) {
            unsigned type = Cfg(slot, c + 3, 1);
            uint64_t off = Cfg(slot, c + 8, 4);
            if (type == VIRTIO_PCI_CAP_COMMON_CFG) d.common = d.bar4 + off;
            if (type == VIRTIO_PCI_CAP_ISR_CFG) d.isr = d.bar4 + off;
            if (type == VIRTIO_PCI_CAP_DEVICE_CFG) d.devcfg = d.bar4 + off;
            if (type == VIRTIO_PCI_CAP_NOTIFY_CFG) {
                d.notify = d.bar4 + off;
                d.mult = Cfg(slot, c + 16, 4);
            }
        } else if (id == 0x11) {
            d.msix_cap = c;
            uint32_t table = Cfg(slot, c + 4, 4);
            ASSERT_EQ(table & 7, 1u) << "MSI-X table in BAR 1";
            d.msix_table = d.bar1 + (table & ~7u);
        }
    }
    ASSERT_NE(d.common, 0u);
    ASSERT_NE(d.notify, 0u);
    ASSERT_NE(d.isr, 0u);
    ASSERT_NE(d.msix_table, 0u);
    // MSI-X on; vector 0 (config) and 1 (queue 0) routed and unmasked.
    SetCfg(slot, d.msix_cap + 2, 2, 0x8000);
    for (unsigned v = 0; v < 2; v++) {
        d.SetMmio(d.msix_table + 16 * v + 0, 4, 0xfee00000);
        d.SetMmio(d.msix_table + 16 * v + 4, 4, 0);
        d.SetMmio(d.msix_table + 16 * v + 8, 4, 0x40 + slot * 2 + v);
        d.SetMmio(d.msix_table + 16 * v + 12, 4, 0);
    }
}

void Bed::SetUp()
{
    ASSERT_NO_FATAL_FAILURE(BuildMachine());
    GError *err = nullptr;
    dev[0] = CreateDevice("virtio-blk-pci,drive=d0,iothread=io0,num-queues=2,"
                          "queue-size=64,serial=victim,addr=5", &err);
    ASSERT_NE(dev[0], nullptr) << (err ? err->message : "");
    dev[1] = CreateDevice("virtio-blk-pci,drive=d1,iothread=io1,"
                          "queue-size=64,serial=bystander,addr=6", &err);
    ASSERT_NE(dev[1], nullptr) << (err ? err->message : "");
    ASSERT_NO_FATAL_FAILURE(Probe(a, kSlotA, vtest::kRam0, vtest::kRam1,
                                  vtest::kRam1 + vtest::kRam1Size / 2));
    ASSERT_NO_FATAL_FAILURE(Probe(b, kSlotB, vtest::kRam0 + 0x10000,
                                  vtest::kRam1 + vtest::kRam1Size / 2,
                                  vtest::kRam1 + vtest::kRam1Size));
    // From here on, every access takes the BQL itself, like a vCPU.
    bql_unlock();
    bql_held = false;
    ASSERT_EQ(b.Start(), 15u);
    ASSERT_TRUE(b.Verify(0)) << "the bystander works before anything";
}

void Bed::TearDown()
{
    verifier.stop = true;
    if (verifier.t.joinable()) {
        verifier.t.join();
    }
    if (!bql_held) {
        bql_lock();
        bql_held = true;
    }
    DestroyDevices();
    FreeMachine();
}

void Bed::ExpectBroken(Driver &d, uint16_t used_before)
{
    EXPECT_TRUE(d.WaitNeedsReset()) << "status 0x" << std::hex << (int)d.Status();
    // NEEDS_RESET is set before the config interrupt is sent (the driver
    // reads the status when the interrupt comes): wait for it.
    bool config_irq = false;
    auto deadline = std::chrono::steady_clock::now() + kHangLimit;
    while (!(config_irq = d.Isr() & VIRTIO_PCI_ISR_CONFIG) &&
           std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    EXPECT_TRUE(config_irq) << "no config interrupt";
    EXPECT_EQ(d.ring.UsedIdx(), used_before) << "the bad chain was consumed";
    // Still broken for later kicks: nothing more is served until reset.
    d.Kick();
    EXPECT_TRUE(d.Status() & VIRTIO_STATUS_NEEDS_RESET);
}

bool Bed::WaitBPasses(uint64_t n)
{
    uint64_t want = verifier.passes.load() + n;
    auto deadline = std::chrono::steady_clock::now() + kHangLimit;
    while (verifier.passes.load() < want && verifier.failures.load() == 0 &&
           std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return verifier.passes.load() >= want && verifier.failures.load() == 0;
}

void Bed::RunCase(const std::function<void()> &act, bool indirect)
{
    ASSERT_EQ(a.Start(indirect), 15u);
    ASSERT_EQ(!!(a.features & (1ull << VIRTIO_F_INDIRECT_DESC)), indirect);
    ASSERT_TRUE(a.Verify(999)) << "A works before the act";
    verifier.Start(&b);
    act();
    // B serves while A is in whatever state the act left it.
    EXPECT_TRUE(WaitBPasses(1)) << "B stalled while A was attacked";
    // The guest resets A; A must work again.
    a.SetStatus(0);
    EXPECT_EQ(a.Status(), 0u) << "reset clears NEEDS_RESET";
    ASSERT_EQ(a.Start(), 15u) << "A starts again after the reset";
    EXPECT_TRUE(a.Verify(1000)) << "A works after the reset";
    EXPECT_TRUE(a.Verify(1001));
    EXPECT_EQ(a.Request(VIRTIO_BLK_T_GET_ID, 0, a.Alloc(20), 20, true),
              VIRTIO_BLK_S_OK);
    verifier.Finish();
    EXPECT_EQ(verifier.failures.load(), 0u) << "B failed a verify pass";
    EXPECT_GE(verifier.passes.load(), 3u);
    EXPECT_FALSE(b.Status() & VIRTIO_STATUS_NEEDS_RESET);
    EXPECT_TRUE(b.Verify(77)) << "B works after";
}

} // namespace hostile
