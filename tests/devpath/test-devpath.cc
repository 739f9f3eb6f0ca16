// The whole device path without KVM: a test "guest" finds a virtio-blk-pci
// device through PCI configuration mechanism #1, negotiates through the
// virtio-pci common configuration in BAR 4, lays out a split ring in
// synthetic guest RAM, enables MSI-X, and kicks through the notify area;
// the device (created by the -device constructor, virtio_blk_pci_create)
// serves the queue in an IOThread on the real block layer (a raw file,
// aio=threads), and the test checks the used ring, the MSI-X irqfd and the
// file from the host.  Only the KVM ioctls are replaced (tests/pci/fake-vm.h).
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "../pci/fake-vm.h"
#include "../virtio/virtio-test.h"
#include "shardvm/block.h"
#include "shardvm/device.h"
#include "shardvm/iothread.h"
#include "shardvm/main-loop.h"
#include "shardvm/rcu.h"
#include "shardvm/virtio-blk.h"
#include "shardvm/virtio-pci.h"

namespace {

using vtest::Guest;

constexpr uint64_t kImageSize = 4 << 20;
constexpr uint16_t kQueueSize = 64;

struct BlkReqHdr {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};

class DevPath : public ::testing::Test {
protected:
    void SetUp() override
    {
        shardvm_rcu_init();
        bql_lock();
        pio_ = address_space_new("pio", ADDRESS_SPACE_PIO);
        mmio_ = address_space_new("mmio", ADDRESS_SPACE_MMIO);
        PCIBusConfig cfg = {};
        cfg.mmio = mmio_;
        cfg.pio = pio_;
        cfg.ram_below_4g = 64ull << 20;
        cfg.vm_ops = &FakeVM::ops;
        cfg.vm_opaque = &vm_;
        bus_ = pci_bus_new(&cfg, nullptr);
        ASSERT_NE(bus_, nullptr);

        char tmpl[] = "/tmp/shardvm-devpath-XXXXXX";
        int fd = mkstemp(tmpl);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(ftruncate(fd, kImageSize), 0);
        close(fd);
        image_ = tmpl;
        BlockOptions o = {};
        o.id = g_strdup("d0");
        o.driver = BLOCK_DRIVER_FILE;
        o.filename = g_strdup(image_.c_str());
        o.aio = BLOCK_AIO_THREADS;
        o.cache_writeback = true;
        o.discard = BLOCK_DISCARD_UNMAP;
        GError *err = nullptr;
        blk_ = blk_open(&o, &err);
        block_options_clear(&o);
        ASSERT_NE(blk_, nullptr) << (err ? err->message : "");

        iot_ = iothread_new("io0", nullptr, &err);
        ASSERT_NE(iot_, nullptr);
    }

    void TearDown() override
    {
        if (dev_) {
            virtio_blk_pci_destroy(dev_);
        }
        blk_unref(dbg_);
        pci_bus_free(bus_);
        EXPECT_TRUE(vm_.ioeventfds.empty());
        address_space_free(pio_);
        address_space_free(mmio_);
        blk_unref(blk_);
        iothread_free(iot_);
        bql_unlock();
        shardvm_rcu_drain();
        unlink(image_.c_str());
    }

    static IOThread *FindIOThread(void *o, const char *id)
    {
        DevPath *t = static_cast<DevPath *>(o);
        return strcmp(id, "io0") == 0 ? t->iot_ : nullptr;
    }
    static BlockBackend *FindDrive(void *o, const char *id)
    {
        DevPath *t = static_cast<DevPath *>(o);
        return strcmp(id, "d0") == 0 ? t->blk_
               : strcmp(id, "e0") == 0 ? t->dbg_ : nullptr;
    }

    // A blkdebug node "e0" over d0 with the given rules.
    void OpenBlkdebug(const std::string &rules)
    {
        BlockOptions o = {};
        GError *err = nullptr;
        std::string spec = "driver=blkdebug,node-name=e0,image=d0," + rules;
        ASSERT_EQ(block_parse_blockdev(spec.c_str(), &o, &err), 0)
            << err->message;
        dbg_ = blk_open_blkdebug(&o, blk_, &err);
        block_options_clear(&o);
        ASSERT_NE(dbg_, nullptr) << err->message;
    }

    // The machine's side of werror/rerror, recorded.
    struct ErrorSink {
        std::mutex lock;
        std::vector<BlockIOErrorEvent> events; // strings not kept
        std::vector<std::string> devices;
        std::vector<std::pair<void (*)(void *), void *>> resume;
        BlockErrorHandler h;
        ErrorSink()
        {
            h.io_error = IoError;
            h.add_resume = AddResume;
            h.del_resume = DelResume;
            h.opaque = this;
        }
        static void IoError(void *o, const BlockIOErrorEvent *ev)
        {
            ErrorSink *s = static_cast<ErrorSink *>(o);
            std::lock_guard<std::mutex> g(s->lock);
            s->events.push_back(*ev);
            s->devices.push_back(std::string(ev->device) + "/" +
                                 ev->node_name);
        }
        static void AddResume(void *o, void (*fn)(void *), void *arg)
        {
            static_cast<ErrorSink *>(o)->resume.push_back({ fn, arg });
        }
        static void DelResume(void *o, void (*fn)(void *), void *arg)
        {
            auto &r = static_cast<ErrorSink *>(o)->resume;
            for (size_t i = 0; i < r.size(); i++) {
                if (r[i].first == fn && r[i].second == arg) {
                    r.erase(r.begin() + i);
                    return;
                }
            }
            ADD_FAILURE() << "del_resume of an unknown function";
        }
        size_t Count()
        {
            std::lock_guard<std::mutex> g(lock);
            return events.size();
        }
        BlockIOErrorEvent Event(size_t i)
        {
            std::lock_guard<std::mutex> g(lock);
            return events.at(i);
        }
        void Resume()
        {
            for (auto &r : resume) {
                r.first(r.second);
            }
        }
    };

    // -device virtio-blk-pci,drive=d0,iothread=io0,... through the registry.
    void *Create(const std::string &arg, GError **err)
    {
        DeviceOption *d = device_option_parse(arg.c_str(), err);
        if (!d) {
            return nullptr;
        }
        const DeviceType *t = device_type_find(d->driver);
        EXPECT_NE(t, nullptr);
        EXPECT_NE(t->create, nullptr);
        GHashTable *props = g_hash_table_new_full(g_str_hash, g_str_equal,
                                                  g_free, g_free);
        GHashTableIter it;
        gpointer k, v;
        g_hash_table_iter_init(&it, d->props);
        while (g_hash_table_iter_next(&it, &k, &v)) {
            g_hash_table_insert(props, g_strdup((char *)k), g_strdup((char *)v));
        }
        DeviceHost host = {};
        host.pci = bus_;
        host.find_iothread = FindIOThread;
        host.find_drive = FindDrive;
        host.opaque = this;
        host.guest_memory = guest_.mem;
        host.block_errors = sink_ ? &sink_->h : nullptr;
        void *dev = t->create(&host, props, err);
        g_hash_table_unref(props);
        device_option_free(d);
        return dev;
    }

    // ---- the guest side: conf1 and BAR accesses ----
    uint32_t Cfg(unsigned slot, unsigned off, unsigned size)
    {
        uint64_t v = 0;
        address_space_write(pio_, 0xcf8, 4,
                            0x80000000u | (slot << 11) | (off & 0xfc));
        address_space_read(pio_, 0xcfc + (off & 3), size, &v);
        return (uint32_t)v;
    }
    void SetCfg(unsigned slot, unsigned off, unsigned size, uint32_t v)
    {
        address_space_write(pio_, 0xcf8, 4,
                            0x80000000u | (slot << 11) | (off & 0xfc));
        address_space_write(pio_, 0xcfc + (off & 3), size, v);
    }
    uint64_t Mmio(uint64_t a, unsigned size)
    {
        uint64_t v = 0;
        EXPECT_TRUE(address_space_read(mmio_, a, size, &v));
        return v;
    }
    void SetMmio(uint64_t a, unsigned size, uint64_t v)
    {
        EXPECT_TRUE(address_space_write(mmio_, a, size, v));
    }

    // Find the device, read its capabilities, bring it to DRIVER_OK with
    // one queue in guest RAM and MSI-X on.  Returns false on failure.
    void Probe()
    {
        slot_ = -1;
        for (unsigned s = 0; s < 32; s++) {
            if (Cfg(s, 0, 4) == 0x10421af4u) {
                slot_ = (int)s;
            }
        }
        ASSERT_GE(slot_, 0) << "no 1af4:1042 on bus 0";
        EXPECT_EQ(Cfg(0, 0, 4), 0x12378086u) << "host bridge";
        EXPECT_EQ(Cfg(slot_, 8, 4) >> 8, 0x018000u) << "class";
        uint64_t bar4 = (Cfg(slot_, 0x20, 4) & ~0xfull) |
                        ((uint64_t)Cfg(slot_, 0x24, 4) << 32);
        ASSERT_NE(bar4, 0u) << "BAR 4 pre-assigned";
        ASSERT_TRUE(Cfg(slot_, 4, 2) & 2) << "memory decoding on";
        for (unsigned c = Cfg(slot_, 0x34, 1); c; c = Cfg(slot_, c + 1, 1)) {
            unsigned id = Cfg(slot_, c, 1);
            if (id == 0x09) { // vendor-specific: virtio
                unsigned type = Cfg(slot_, c + 3, 1);
                uint64_t off = Cfg(slot_, c + 8, 4);
                if (type == VIRTIO_PCI_CAP_COMMON_CFG) common_ = bar4 + off;
                if (type == VIRTIO_PCI_CAP_NOTIFY_CFG) {
                    notify_ = bar4 + off;
                    mult_ = Cfg(slot_, c + 16, 4);
                }
                if (type == VIRTIO_PCI_CAP_DEVICE_CFG) devcfg_ = bar4 + off;
            } else if (id == 0x11) { // MSI-X
                msix_cap_ = c;
                uint32_t table = Cfg(slot_, c + 4, 4);
                unsigned bir = table & 7;
                uint64_t bar = Cfg(slot_, 0x10 + 4 * bir, 4) & ~0xfull;
                msix_table_ = bar + (table & ~7u);
            }
        }
        ASSERT_NE(common_, 0u);
        ASSERT_NE(notify_, 0u);
        ASSERT_NE(msix_table_, 0u);

        // MSI-X: enable, vector 1 -> some address/data, unmasked.
        SetCfg(slot_, msix_cap_ + 2, 2, 0x8000);
        SetMmio(msix_table_ + 16 + 0, 4, 0xfee00000);
        SetMmio(msix_table_ + 16 + 8, 4, 0x41);
        SetMmio(msix_table_ + 16 + 12, 4, 0); // unmask

        SetMmio(common_ + VIRTIO_PCI_COMMON_STATUS, 1, 0);
        SetMmio(common_ + VIRTIO_PCI_COMMON_STATUS, 1, 3);
        SetMmio(common_ + VIRTIO_PCI_COMMON_DFSELECT, 4, 1);
        ASSERT_TRUE(Mmio(common_ + VIRTIO_PCI_COMMON_DF, 4) & 1) << "VERSION_1";
        SetMmio(common_ + VIRTIO_PCI_COMMON_GFSELECT, 4, 0);
        SetMmio(common_ + VIRTIO_PCI_COMMON_GF, 4,
                1u << VIRTIO_BLK_F_FLUSH);
        SetMmio(common_ + VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
        SetMmio(common_ + VIRTIO_PCI_COMMON_GF, 4, 1);
        SetMmio(common_ + VIRTIO_PCI_COMMON_STATUS, 1, 3 | 8);
        ASSERT_TRUE(Mmio(common_ + VIRTIO_PCI_COMMON_STATUS, 1) & 8);

        SetMmio(common_ + VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
        ASSERT_GE(Mmio(common_ + VIRTIO_PCI_COMMON_Q_SIZE, 2), kQueueSize);
        SetMmio(common_ + VIRTIO_PCI_COMMON_Q_SIZE, 2, kQueueSize);
        ring_.g = &guest_;
        ring_.n = kQueueSize;
        ring_.desc = vtest::kRam0;
        ring_.avail = ring_.desc + 16 * kQueueSize;
        ring_.used = (ring_.avail + 6 + 2 * kQueueSize + 4095) & ~4095ull;
        SetMmio(common_ + VIRTIO_PCI_COMMON_Q_DESCLO, 4, ring_.desc);
        SetMmio(common_ + VIRTIO_PCI_COMMON_Q_DESCHI, 4, 0);
        SetMmio(common_ + VIRTIO_PCI_COMMON_Q_AVAILLO, 4, ring_.avail);
        SetMmio(common_ + VIRTIO_PCI_COMMON_Q_AVAILHI, 4, 0);
        SetMmio(common_ + VIRTIO_PCI_COMMON_Q_USEDLO, 4, ring_.used);
        SetMmio(common_ + VIRTIO_PCI_COMMON_Q_USEDHI, 4, 0);
        SetMmio(common_ + VIRTIO_PCI_COMMON_Q_MSIX, 2, 1);
        ASSERT_EQ(Mmio(common_ + VIRTIO_PCI_COMMON_Q_MSIX, 2), 1u);
        noff_ = Mmio(common_ + VIRTIO_PCI_COMMON_Q_NOFF, 2);
        SetMmio(common_ + VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
        SetMmio(common_ + VIRTIO_PCI_COMMON_STATUS, 1, 3 | 8 | 4);
        ASSERT_EQ(Mmio(common_ + VIRTIO_PCI_COMMON_STATUS, 1), 15u);
    }

    // One request without waiting: header, optional data, status; kick.
    // Returns the status byte's guest address (0xff until completed).
    uint64_t Post(uint32_t type, uint64_t sector, uint64_t data_gpa,
                  uint32_t len, bool data_write)
    {
        uint64_t hdr = guest_.alloc(16), st = guest_.alloc(1);
        BlkReqHdr h = { type, 0, sector };
        memcpy(guest_.hva(hdr), &h, sizeof(h));
        *(uint8_t *)guest_.hva(st) = 0xff;
        std::vector<vtest::Ring::Buf> bufs = { { hdr, 16, false } };
        if (len) {
            bufs.push_back({ data_gpa, len, data_write });
        }
        bufs.push_back({ st, 1, true });
        ring_.AddChain(bufs);
        SetMmio(notify_ + noff_ * mult_, 2, 0);
        return st;
    }

    // Wait (bounded) until @cond holds; false if it never did.
    template <typename F> static bool WaitFor(F cond)
    {
        for (int i = 0; i < 5000 && !cond(); i++) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        return cond();
    }

    // One request: header, optional data, status; kick; wait for used.
    uint8_t Request(uint32_t type, uint64_t sector, uint64_t data_gpa,
                    uint32_t len, bool data_write)
    {
        uint64_t hdr = guest_.alloc(16), st = guest_.alloc(1);
        BlkReqHdr h = { type, 0, sector };
        memcpy(guest_.hva(hdr), &h, sizeof(h));
        *(uint8_t *)guest_.hva(st) = 0xff;
        std::vector<vtest::Ring::Buf> bufs = { { hdr, 16, false } };
        if (len) {
            bufs.push_back({ data_gpa, len, data_write });
        }
        bufs.push_back({ st, 1, true });
        uint16_t before = ring_.UsedIdx();
        ring_.AddChain(bufs);
        // The kick: a plain MMIO write to the queue's notify address (the
        // path without ioeventfd); with KVM the same address is an
        // ioeventfd that sets the same notifier.
        SetMmio(notify_ + noff_ * mult_, 2, 0);
        for (int i = 0; i < 5000 && ring_.UsedIdx() == before; i++) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        EXPECT_NE(ring_.UsedIdx(), before) << "request never completed";
        return *(uint8_t *)guest_.hva(st);
    }

    // The MSI-X vector 1 irqfd fired (and clear it).
    bool IrqFired()
    {
        for (auto &r : vm_.routes) {
            if (r.second.irqfd && r.second.data == 0x41) {
                return event_notifier_test_and_clear(r.second.irqfd);
            }
        }
        return false;
    }

    AddressSpace *pio_ = nullptr, *mmio_ = nullptr;
    PCIBus *bus_ = nullptr;
    FakeVM vm_;
    Guest guest_;
    vtest::Ring ring_;
    BlockBackend *blk_ = nullptr;
    BlockBackend *dbg_ = nullptr;   // blkdebug "e0" over d0, if opened
    ErrorSink *sink_ = nullptr;     // DeviceHost.block_errors, if set
    std::unique_ptr<ErrorSink> sink_owner_; // outlives the device (TearDown)
    ErrorSink &UseSink()
    {
        sink_owner_.reset(new ErrorSink());
        sink_ = sink_owner_.get();
        return *sink_;
    }
    IOThread *iot_ = nullptr;
    std::string image_;
    void *dev_ = nullptr;
    int slot_ = -1;
    uint64_t common_ = 0, notify_ = 0, devcfg_ = 0, msix_table_ = 0;
    uint32_t mult_ = 0, noff_ = 0;
    unsigned msix_cap_ = 0;
};

TEST_F(DevPath, GuestWritesAndReadsThroughPciAndIOThread)
{
    GError *err = nullptr;
    dev_ = Create("virtio-blk-pci,drive=d0,iothread=io0,serial=devpath,"
                  "queue-size=128,addr=5", &err);
    ASSERT_NE(dev_, nullptr) << (err ? err->message : "");
    EXPECT_TRUE(iothread_in_use(iot_)) << "object-del must refuse io0 now";
    ASSERT_NO_FATAL_FAILURE(Probe());
    EXPECT_EQ(slot_, 5);
    // Capacity in the device config (sectors).
    EXPECT_EQ(Mmio(devcfg_, 4) | (Mmio(devcfg_ + 4, 4) << 32),
              kImageSize / 512);

    // Write 8 KiB at sector 16, then read it back into another buffer.
    uint64_t wbuf = guest_.alloc(8192), rbuf = guest_.alloc(8192);
    for (int i = 0; i < 8192; i++) {
        ((uint8_t *)guest_.hva(wbuf))[i] = (uint8_t)(i * 7 + 3);
    }
    EXPECT_EQ(Request(VIRTIO_BLK_T_OUT, 16, wbuf, 8192, false), VIRTIO_BLK_S_OK);
    EXPECT_TRUE(IrqFired()) << "MSI-X vector 1 irqfd not set";
    EXPECT_EQ(Request(VIRTIO_BLK_T_FLUSH, 0, 0, 0, false), VIRTIO_BLK_S_OK);
    EXPECT_EQ(Request(VIRTIO_BLK_T_IN, 16, rbuf, 8192, true), VIRTIO_BLK_S_OK);
    EXPECT_EQ(memcmp(guest_.hva(wbuf), guest_.hva(rbuf), 8192), 0);
    EXPECT_EQ(ring_.UsedElem(ring_.UsedIdx() - 1).len, 8192u + 1);

    // The host sees the data in the file.
    std::vector<uint8_t> host(8192);
    int fd = open(image_.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(pread(fd, host.data(), 8192, 16 * 512), 8192);
    close(fd);
    EXPECT_EQ(memcmp(host.data(), guest_.hva(wbuf), 8192), 0);

    // GET_ID returns the serial; out of range is IOERR, unknown UNSUPP.
    uint64_t id = guest_.alloc(20);
    EXPECT_EQ(Request(VIRTIO_BLK_T_GET_ID, 0, id, 20, true), VIRTIO_BLK_S_OK);
    EXPECT_EQ(std::string((char *)guest_.hva(id), 7), "devpath");
    EXPECT_EQ(Request(VIRTIO_BLK_T_IN, kImageSize / 512, rbuf, 512, true),
              VIRTIO_BLK_S_IOERR);
    EXPECT_EQ(Request(99, 0, 0, 0, false), VIRTIO_BLK_S_UNSUPP);

    // Reset through the status register, then the device is gone quiet.
    SetMmio(common_ + VIRTIO_PCI_COMMON_STATUS, 1, 0);
    EXPECT_EQ(Mmio(common_ + VIRTIO_PCI_COMMON_STATUS, 1), 0u);
}

// Without iothread= the queue is served by the main loop under the BQL,
// while the guest's register writes come from a vCPU thread: DRIVER_OK
// (which attaches the queue to the main context) and reset (which drains
// it) must not wait for the main loop while holding what the main loop
// needs (the BQL).
TEST_F(DevPath, MainLoopDeviceDrivenFromAVcpuThread)
{
    GError *err = nullptr;
    bql_unlock(); // main_loop_init takes it, main_loop_cleanup drops it
    ASSERT_EQ(main_loop_init(false, &err), 0) << (err ? err->message : "");
    dev_ = Create("virtio-blk-pci,drive=d0", &err);
    ASSERT_NE(dev_, nullptr) << (err ? err->message : "");

    std::atomic<bool> done{ false };
    std::thread vcpu([&] {
        Probe();
        uint64_t buf = guest_.alloc(4096);
        memset(guest_.hva(buf), 0x5a, 4096);
        EXPECT_EQ(Request(VIRTIO_BLK_T_OUT, 8, buf, 4096, false),
                  VIRTIO_BLK_S_OK);
        EXPECT_EQ(Request(VIRTIO_BLK_T_IN, 8, buf, 4096, true),
                  VIRTIO_BLK_S_OK);
        SetMmio(common_ + VIRTIO_PCI_COMMON_STATUS, 1, 0);
        done = true;
        // The main loop may sleep with no timeout: wake it to see done.
        aio_notify(main_loop_get_aio_context());
    });
    // The main loop (BQL held except while it polls), for at most 20 s.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!done && std::chrono::steady_clock::now() < deadline) {
        main_loop_wait(false);
    }
    if (!done) {
        ADD_FAILURE() << "the vCPU thread is stuck (BQL/main-loop deadlock)";
        fflush(stdout);
        _exit(1);
    }
    vcpu.join();
    virtio_blk_pci_destroy(dev_);
    dev_ = nullptr;
    main_loop_cleanup();
    bql_lock();
}

TEST_F(DevPath, ConstructorErrorsNameTheProblem)
{
    GError *err = nullptr;
    EXPECT_EQ(Create("virtio-blk-pci,drive=nope", &err), nullptr);
    ASSERT_NE(err, nullptr);
    EXPECT_NE(std::string(err->message).find("'nope'"), std::string::npos)
        << err->message;
    g_clear_error(&err);
    EXPECT_EQ(Create("virtio-blk-pci,drive=d0,iothread=io9", &err), nullptr);
    ASSERT_NE(err, nullptr);
    EXPECT_NE(std::string(err->message).find("io9"), std::string::npos)
        << err->message;
    g_clear_error(&err);
    EXPECT_EQ(Create("virtio-blk-pci,drive=d0,queue-size=3", &err), nullptr);
    ASSERT_NE(err, nullptr);
    g_clear_error(&err);
}

}  // namespace

namespace {

// QEMU refuses a second device on one backend ("Drive 'd0' is already in
// use"): two virtio-blk devices on one image would each keep their own
// write cache state and queues.  Once the first device is gone, the drive
// is free again.
TEST_F(DevPath, DriveUsedTwiceIsRefused)
{
    GError *err = nullptr;
    dev_ = Create("virtio-blk-pci,drive=d0,iothread=io0", &err);
    ASSERT_NE(dev_, nullptr) << (err ? err->message : "");
    void *second = Create("virtio-blk-pci,drive=d0,iothread=io0", &err);
    EXPECT_EQ(second, nullptr);
    if (second) {
        virtio_blk_pci_destroy(second);
    }
    ASSERT_NE(err, nullptr);
    EXPECT_NE(std::string(err->message).find("already in use"),
              std::string::npos) << err->message;
    g_clear_error(&err);
    EXPECT_TRUE(iothread_in_use(iot_)) << "the refused device took no share";
    virtio_blk_pci_destroy(dev_);
    dev_ = nullptr;
    EXPECT_FALSE(iothread_in_use(iot_)) << "destroy releases io0";
    dev_ = Create("virtio-blk-pci,drive=d0,iothread=io0,num-queues=2", &err);
    EXPECT_NE(dev_, nullptr) << (err ? err->message : "");
    EXPECT_TRUE(iothread_in_use(iot_));
    g_clear_error(&err);
}

}  // namespace

// ---- werror / rerror (issue 13, point 3) ---------------------------------

namespace {

VirtIOBlock *VblkOf(void *dev)
{
    return virtio_blk_pci_get_device(dev);
}

} // namespace

TEST_F(DevPath, WerrorReportFailsTheRequestToTheGuest)
{
    ErrorSink &sink = UseSink();
    ASSERT_NO_FATAL_FAILURE(OpenBlkdebug("inject-error.0.iotype=write"));
    GError *err = nullptr;
    dev_ = Create("virtio-blk-pci,drive=e0,iothread=io0,werror=report", &err);
    ASSERT_NE(dev_, nullptr) << (err ? err->message : "");
    ASSERT_NO_FATAL_FAILURE(Probe());
    uint64_t buf = guest_.alloc(4096);
    EXPECT_EQ(Request(VIRTIO_BLK_T_OUT, 8, buf, 4096, false),
              VIRTIO_BLK_S_IOERR);
    EXPECT_EQ(Request(VIRTIO_BLK_T_IN, 8, buf, 4096, true), VIRTIO_BLK_S_OK);
    ASSERT_EQ(sink.Count(), 1u);
    BlockIOErrorEvent ev = sink.Event(0);
    EXPECT_FALSE(ev.is_read);
    EXPECT_EQ(ev.action, BLOCK_ERROR_ACTION_REPORT);
    EXPECT_EQ(ev.error, -EIO);
    EXPECT_FALSE(ev.iostatus); // werror=report, rerror=report
    EXPECT_EQ(sink.devices[0], "e0/e0");
}

TEST_F(DevPath, RerrorIgnoreCompletesAsOk)
{
    ErrorSink &sink = UseSink();
    ASSERT_NO_FATAL_FAILURE(OpenBlkdebug("inject-error.0.iotype=read,"
                                         "inject-error.0.errno=61"));
    GError *err = nullptr;
    dev_ = Create("virtio-blk-pci,drive=e0,iothread=io0,rerror=ignore", &err);
    ASSERT_NE(dev_, nullptr) << (err ? err->message : "");
    ASSERT_NO_FATAL_FAILURE(Probe());
    uint64_t buf = guest_.alloc(4096);
    EXPECT_EQ(Request(VIRTIO_BLK_T_IN, 0, buf, 4096, true), VIRTIO_BLK_S_OK);
    EXPECT_EQ(Request(VIRTIO_BLK_T_IN, 8, buf, 4096, true), VIRTIO_BLK_S_OK);
    ASSERT_EQ(sink.Count(), 2u);
    EXPECT_TRUE(sink.Event(1).is_read);
    EXPECT_EQ(sink.Event(1).action, BLOCK_ERROR_ACTION_IGNORE);
    EXPECT_EQ(sink.Event(1).error, -ENODATA);
}

// werror=stop: the request is kept (no used entry), the handler hears
// "stop"; after the resume it is retried once and completes OK (the rule
// was "once"): one failure and one success in the node's statistics, one
// write in the image's, nothing lost, nothing run twice.
TEST_F(DevPath, WerrorStopKeepsTheRequestAndRetriesOnResume)
{
    ErrorSink &sink = UseSink();
    ASSERT_NO_FATAL_FAILURE(OpenBlkdebug("inject-error.0.iotype=write,"
                                         "inject-error.0.once=on"));
    GError *err = nullptr;
    dev_ = Create("virtio-blk-pci,drive=e0,iothread=io0,werror=stop", &err);
    ASSERT_NE(dev_, nullptr) << (err ? err->message : "");
    ASSERT_NO_FATAL_FAILURE(Probe());
    VirtIOBlock *vblk = VblkOf(dev_);
    ASSERT_EQ(sink.resume.size(), 1u);

    uint64_t wbuf = guest_.alloc(4096), rbuf = guest_.alloc(4096);
    for (int i = 0; i < 4096; i++) {
        ((uint8_t *)guest_.hva(wbuf))[i] = (uint8_t)(i * 13 + 1);
    }
    uint16_t before = ring_.UsedIdx();
    uint64_t st = Post(VIRTIO_BLK_T_OUT, 32, wbuf, 4096, false);
    ASSERT_TRUE(WaitFor([&] { return virtio_blk_held_requests(vblk) == 1; }));
    EXPECT_EQ(ring_.UsedIdx(), before) << "a kept request was completed";
    EXPECT_EQ(*(uint8_t *)guest_.hva(st), 0xff);
    ASSERT_EQ(sink.Count(), 1u);
    EXPECT_EQ(sink.Event(0).action, BLOCK_ERROR_ACTION_STOP);
    EXPECT_FALSE(sink.Event(0).is_read);
    EXPECT_TRUE(sink.Event(0).iostatus);

    // Reads still work meanwhile (the IOThread keeps serving).
    EXPECT_EQ(Request(VIRTIO_BLK_T_IN, 0, rbuf, 512, true), VIRTIO_BLK_S_OK);
    EXPECT_EQ(ring_.UsedIdx(), (uint16_t)(before + 1));

    sink.Resume(); // "cont"
    ASSERT_TRUE(WaitFor([&] { return ring_.UsedIdx() == before + 2; }));
    EXPECT_EQ(*(uint8_t *)guest_.hva(st), VIRTIO_BLK_S_OK);
    EXPECT_EQ(virtio_blk_held_requests(vblk), 0u);
    EXPECT_EQ(sink.Count(), 1u);
    EXPECT_EQ(Request(VIRTIO_BLK_T_IN, 32, rbuf, 4096, true), VIRTIO_BLK_S_OK);
    EXPECT_EQ(memcmp(guest_.hva(wbuf), guest_.hva(rbuf), 4096), 0);

    BlockStats node, image;
    blk_get_stats(dbg_, &node);
    blk_get_stats(blk_, &image);
    EXPECT_EQ(node.failed_ops, 1u);
    EXPECT_EQ(node.wr_ops, 1u);
    EXPECT_EQ(image.wr_ops, 1u);
    EXPECT_EQ(image.failed_ops, 0u);
    EXPECT_EQ(node.rd_ops, 2u);
    // A second resume has nothing to retry.
    sink.Resume();
    EXPECT_EQ(Request(VIRTIO_BLK_T_FLUSH, 0, 0, 0, false), VIRTIO_BLK_S_OK);
    blk_get_stats(dbg_, &node);
    EXPECT_EQ(node.wr_ops, 1u);
}

// A request that fails again after the resume is kept again (and reported
// again); several kept requests are retried in order.
TEST_F(DevPath, WerrorStopFailsAgainAndKeepsAgain)
{
    ErrorSink &sink = UseSink();
    ASSERT_NO_FATAL_FAILURE(OpenBlkdebug("inject-error.0.iotype=flush,"
                                         "inject-error.0.every=1"));
    GError *err = nullptr;
    dev_ = Create("virtio-blk-pci,drive=e0,iothread=io0,werror=stop", &err);
    ASSERT_NE(dev_, nullptr) << (err ? err->message : "");
    ASSERT_NO_FATAL_FAILURE(Probe());
    VirtIOBlock *vblk = VblkOf(dev_);
    uint16_t before = ring_.UsedIdx();
    Post(VIRTIO_BLK_T_FLUSH, 0, 0, 0, false);
    Post(VIRTIO_BLK_T_FLUSH, 0, 0, 0, false);
    ASSERT_TRUE(WaitFor([&] { return virtio_blk_held_requests(vblk) == 2; }));
    sink.Resume();
    ASSERT_TRUE(WaitFor([&] { return sink.Count() == 4; }));
    ASSERT_TRUE(WaitFor([&] { return virtio_blk_held_requests(vblk) == 2; }));
    EXPECT_EQ(ring_.UsedIdx(), before);
    // Reset drops what is kept; the device works afterwards.
    SetMmio(common_ + VIRTIO_PCI_COMMON_STATUS, 1, 0);
    EXPECT_EQ(virtio_blk_held_requests(vblk), 0u);
    EXPECT_EQ(ring_.UsedIdx(), before);
}

// werror=enospc (the default): ENOSPC stops, EIO is reported.
TEST_F(DevPath, WerrorEnospcStopsOnlyOnEnospc)
{
    ErrorSink &sink = UseSink();
    ASSERT_NO_FATAL_FAILURE(OpenBlkdebug(
        "inject-error.0.iotype=write,inject-error.0.sector=0,"
        "inject-error.0.errno=28,inject-error.0.once=on,"
        "inject-error.1.iotype=write,inject-error.1.sector=8,"
        "inject-error.1.errno=5"));
    GError *err = nullptr;
    dev_ = Create("virtio-blk-pci,drive=e0,iothread=io0", &err);
    ASSERT_NE(dev_, nullptr) << (err ? err->message : "");
    ASSERT_NO_FATAL_FAILURE(Probe());
    VirtIOBlock *vblk = VblkOf(dev_);
    uint64_t buf = guest_.alloc(4096);
    EXPECT_EQ(Request(VIRTIO_BLK_T_OUT, 8, buf, 4096, false),
              VIRTIO_BLK_S_IOERR);
    uint16_t before = ring_.UsedIdx();
    uint64_t st = Post(VIRTIO_BLK_T_OUT, 0, buf, 4096, false);
    ASSERT_TRUE(WaitFor([&] { return virtio_blk_held_requests(vblk) == 1; }));
    ASSERT_EQ(sink.Count(), 2u);
    EXPECT_EQ(sink.Event(0).action, BLOCK_ERROR_ACTION_REPORT);
    EXPECT_EQ(sink.Event(1).action, BLOCK_ERROR_ACTION_STOP);
    EXPECT_EQ(sink.Event(1).error, -ENOSPC);
    // reads follow rerror (report)
    EXPECT_EQ(Request(VIRTIO_BLK_T_IN, 8, buf, 512, true), VIRTIO_BLK_S_OK);
    sink.Resume();
    ASSERT_TRUE(WaitFor([&] { return ring_.UsedIdx() == before + 2; }));
    EXPECT_EQ(*(uint8_t *)guest_.hva(st), VIRTIO_BLK_S_OK);
}

// Without a handler nobody would resume: stop acts as report.
TEST_F(DevPath, WerrorStopWithoutHandlerReports)
{
    ASSERT_NO_FATAL_FAILURE(OpenBlkdebug("inject-error.0.iotype=write"));
    GError *err = nullptr;
    dev_ = Create("virtio-blk-pci,drive=e0,iothread=io0,werror=stop", &err);
    ASSERT_NE(dev_, nullptr) << (err ? err->message : "");
    ASSERT_NO_FATAL_FAILURE(Probe());
    uint64_t buf = guest_.alloc(512);
    EXPECT_EQ(Request(VIRTIO_BLK_T_OUT, 0, buf, 512, false),
              VIRTIO_BLK_S_IOERR);
}

TEST_F(DevPath, ErrorPolicyPropertiesAreChecked)
{
    GError *err = nullptr;
    EXPECT_EQ(Create("virtio-blk-pci,drive=d0,werror=sometimes", &err),
              nullptr);
    ASSERT_NE(err, nullptr);
    EXPECT_NE(strstr(err->message, "werror"), nullptr) << err->message;
    g_clear_error(&err);
    dev_ = Create("virtio-blk-pci,drive=d0,iothread=io0,werror=auto,"
                  "rerror=stop", &err);
    EXPECT_NE(dev_, nullptr) << (err ? err->message : "");
}
