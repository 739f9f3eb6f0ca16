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
#include <sys/resource.h>
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
        if (strcmp(id, "io1") == 0) {
            return t->io1_;
        }
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
        host.nr_vcpus = nr_vcpus_;
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
                (1u << VIRTIO_BLK_F_FLUSH) | features0_);
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
    IOThread *io1_ = nullptr; // only DevPathMove creates it
    std::string image_;
    void *dev_ = nullptr;
    int slot_ = -1;
    unsigned nr_vcpus_ = 0;   // DeviceHost.nr_vcpus (-smp) for Create()
    uint32_t features0_ = 0;  // more feature bits 0..31 Probe() accepts
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

namespace {

// QEMU (since 5.2) gives virtio-blk-pci one queue per vCPU unless
// num-queues says otherwise; the guest reads the count in common config.
TEST_F(DevPath, NumQueuesDefaultsToTheVcpuCount)
{
    GError *err = nullptr;
    nr_vcpus_ = 3;
    dev_ = Create("virtio-blk-pci,drive=d0,iothread=io0", &err);
    ASSERT_NE(dev_, nullptr) << (err ? err->message : "");
    Probe();
    EXPECT_EQ(Mmio(common_ + VIRTIO_PCI_COMMON_NUMQ, 2), 3u);
    virtio_blk_pci_destroy(dev_);
    dev_ = nullptr;
    common_ = 0;

    dev_ = Create("virtio-blk-pci,drive=d0,iothread=io0,num-queues=2", &err);
    ASSERT_NE(dev_, nullptr) << (err ? err->message : "");
    Probe();
    EXPECT_EQ(Mmio(common_ + VIRTIO_PCI_COMMON_NUMQ, 2), 2u) << "explicit wins";
}

}  // namespace

// ---- x-blockdev-set-iothread: moving a live device between contexts ----

namespace {

// A verify guest on the host side: kSlots requests always in flight on
// queue 0, each slot owning the blocks b with b % kSlots == slot (so no two
// requests in flight touch the same block).  A slot writes its block with
// a pattern made of (seed, block, generation), reads it back, checks it,
// and goes on to its next block.  It kicks through the queue's ioeventfd
// (what KVM would signal) and polls the used ring, as a polling guest.
class VerifyDriver {
public:
    static constexpr unsigned kSlots = 16;
    static constexpr uint32_t kBlock = 4096;

    VerifyDriver(Guest &g, vtest::Ring &ring, EventNotifier *kick,
                 uint64_t seed, uint64_t nblocks)
        : g_(g), ring_(ring), kick_(kick), seed_(seed), nblocks_(nblocks)
    {
        for (unsigned s = 0; s < kSlots; s++) {
            Slot &sl = slots_[s];
            sl.hdr = g_.alloc(16);
            sl.data = g_.alloc(kBlock);
            sl.status = g_.alloc(16);
            sl.block = s;
        }
    }

    void Run()
    {
        for (unsigned s = 0; s < kSlots; s++) {
            Submit(s);
        }
        while (in_flight_ > 0 && !abandon.load()) {
            if (!Reap()) {
                std::this_thread::yield();
            }
        }
        done.store(true);
        aio_notify(main_loop_get_aio_context());
    }

    std::atomic<bool> stop{ false }, done{ false }, abandon{ false };
    // Kick only when the device asks for it (VRING_USED_F_NO_NOTIFY, or
    // avail_event with EVENT_IDX), as Linux does; else always.
    bool honor_suppression = false, event_idx = false;
    uint64_t kicks = 0;
    std::atomic<uint64_t> completed{ 0 };
    uint64_t submitted = 0, reads = 0, writes = 0;
    uint64_t verify_errors = 0, status_errors = 0, unknown_heads = 0;

private:
    struct Slot {
        uint64_t hdr, data, status;
        uint64_t block, gen = 0;
        bool reading = false, busy = false;
    };

    uint64_t Word(uint64_t block, uint64_t gen, unsigned i) const
    {
        uint64_t x = seed_ ^ (block * 0x9e3779b97f4a7c15ull) ^
                     (gen << 40) ^ i;
        x ^= x >> 31;
        x *= 0xbf58476d1ce4e5b9ull;
        return x ^ (x >> 29);
    }

    void Submit(unsigned s)
    {
        Slot &sl = slots_[s];
        BlkReqHdr h = { sl.reading ? (uint32_t)VIRTIO_BLK_T_IN : (uint32_t)VIRTIO_BLK_T_OUT, 0,
                        sl.block * (kBlock / 512) };
        memcpy(g_.hva(sl.hdr), &h, sizeof(h));
        uint64_t *w = static_cast<uint64_t *>(g_.hva(sl.data));
        for (unsigned i = 0; i < kBlock / 8; i++) {
            w[i] = sl.reading ? 0 : Word(sl.block, sl.gen, i);
        }
        *static_cast<uint8_t *>(g_.hva(sl.status)) = 0xff;
        uint16_t d = (uint16_t)(3 * s);
        ring_.SetDesc(d, sl.hdr, 16, VRING_DESC_F_NEXT, d + 1);
        ring_.SetDesc(d + 1, sl.data, kBlock,
                      VRING_DESC_F_NEXT | (sl.reading ? VRING_DESC_F_WRITE : 0),
                      d + 2);
        ring_.SetDesc(d + 2, sl.status, 1, VRING_DESC_F_WRITE, 0);
        sl.busy = true;
        in_flight_++;
        submitted++;
        uint16_t old_idx = ring_.avail_idx;
        ring_.Publish(d);
        bool kick = true;
        if (honor_suppression && event_idx) {
            uint16_t ev = ring_.AvailEvent();
            kick = (uint16_t)(ring_.avail_idx - ev - 1) <
                   (uint16_t)(ring_.avail_idx - old_idx);
        } else if (honor_suppression) {
            kick = !(ring_.UsedFlags() & VRING_USED_F_NO_NOTIFY);
        }
        if (kick) {
            kicks++;
            event_notifier_set(kick_);
        }
    }

    // Take what the device put in the used ring; false if nothing.
    bool Reap()
    {
        uint16_t idx = ring_.UsedIdx();
        if (idx == ring_.last_used) {
            return false;
        }
        while (ring_.last_used != idx) {
            VRingUsedElem e = ring_.UsedElem(ring_.last_used++);
            unsigned s = e.id / 3;
            if (e.id % 3 || s >= kSlots || !slots_[s].busy) {
                unknown_heads++; // a request completed twice, or garbage
                continue;
            }
            Complete(s);
        }
        aio_notify(main_loop_get_aio_context());
        return true;
    }

    void Complete(unsigned s)
    {
        Slot &sl = slots_[s];
        sl.busy = false;
        in_flight_--;
        completed.fetch_add(1);
        if (*static_cast<uint8_t *>(g_.hva(sl.status)) != VIRTIO_BLK_S_OK) {
            status_errors++;
        }
        if (sl.reading) {
            reads++;
            const uint64_t *w = static_cast<uint64_t *>(g_.hva(sl.data));
            for (unsigned i = 0; i < kBlock / 8; i++) {
                if (w[i] != Word(sl.block, sl.gen, i)) {
                    verify_errors++;
                    break;
                }
            }
            sl.reading = false;
            sl.gen++;
            sl.block = (sl.block + kSlots) % nblocks_;
        } else {
            writes++;
            sl.reading = true;
        }
        if (!stop.load()) {
            Submit(s);
        }
    }

    Guest &g_;
    vtest::Ring &ring_;
    EventNotifier *kick_;
    uint64_t seed_, nblocks_;
    Slot slots_[kSlots];
    unsigned in_flight_ = 0;
};

class DevPathMove : public DevPath {
protected:
    void SetUp() override
    {
        DevPath::SetUp();
        GError *err = nullptr;
        io1_ = iothread_new("io1", nullptr, &err);
        ASSERT_NE(io1_, nullptr);
        bql_unlock(); // main_loop_init takes it, main_loop_cleanup drops it
        ASSERT_EQ(main_loop_init(false, &err), 0) << (err ? err->message : "");
    }
    void TearDown() override
    {
        if (dev_) {
            virtio_blk_pci_destroy(dev_);
            dev_ = nullptr;
        }
        main_loop_cleanup();
        bql_lock();
        iothread_free(io1_);
        DevPath::TearDown();
    }
    // The host notifier KVM would signal for queue 0.
    EventNotifier *Kick()
    {
        auto it = vm_.ioeventfds.find(notify_ + noff_ * mult_);
        return it == vm_.ioeventfds.end() ? nullptr : it->second;
    }
    std::string QueueIOThread(unsigned q)
    {
        IOThread *iot = virtio_blk_pci_get_queue_iothread(dev_, q);
        return iot ? iothread_get_id(iot) : "";
    }
};

// 100 moves io0 -> io1 -> main loop -> io0 ... while the verify guest keeps
// 16 requests in flight; each move waits until the guest completed more
// requests since the previous one, so every move happens under load.
TEST_F(DevPathMove, MoveBackAndForthUnderVerifyLoad)
{
    GError *err = nullptr;
    dev_ = Create("virtio-blk-pci,drive=d0,iothread=io0,queue-size=64", &err);
    ASSERT_NE(dev_, nullptr) << (err ? err->message : "");
    ASSERT_NO_FATAL_FAILURE(Probe());
    EventNotifier *kick = Kick();
    ASSERT_NE(kick, nullptr) << "no ioeventfd at the notify address";
    BlockStats before;
    blk_get_stats(blk_, &before);

    VerifyDriver drv(guest_, ring_, kick, 0x5eed, kImageSize / 4096);
    std::thread vcpu([&] { drv.Run(); });
    IOThread *targets[3] = { io1_, nullptr, iot_ };
    uint64_t seen = 0;
    int moves = 0;
    for (; moves < 100; moves++) {
        while (drv.completed.load() < seen + 8 && !drv.done.load()) {
            main_loop_wait(false);
        }
        if (drv.done.load()) {
            break;
        }
        seen = drv.completed.load();
        IOThread *to = targets[moves % 3];
        ASSERT_EQ(virtio_blk_pci_set_iothread(dev_, to, &err), 0)
            << (err ? err->message : "");
        EXPECT_EQ(QueueIOThread(0), to ? iothread_get_id(to) : "");
        EXPECT_EQ(iothread_in_use(iot_), to == iot_) << "move " << moves;
        EXPECT_EQ(iothread_in_use(io1_), to == io1_) << "move " << moves;
    }
    drv.stop.store(true);
    while (!drv.done.load()) {
        main_loop_wait(false);
    }
    vcpu.join();
    EXPECT_EQ(moves, 100);
    EXPECT_EQ(drv.verify_errors, 0u);
    EXPECT_EQ(drv.status_errors, 0u);
    EXPECT_EQ(drv.unknown_heads, 0u) << "a request completed twice";
    EXPECT_EQ(drv.completed.load(), drv.submitted);
    EXPECT_GE(drv.reads, 100u);
    BlockStats after;
    blk_get_stats(blk_, &after);
    EXPECT_EQ(after.rd_ops - before.rd_ops, drv.reads);
    EXPECT_EQ(after.wr_ops - before.wr_ops, drv.writes);
    EXPECT_EQ(after.rd_bytes - before.rd_bytes, drv.reads * 4096);
    EXPECT_EQ(after.wr_bytes - before.wr_bytes, drv.writes * 4096);
    EXPECT_EQ(after.failed_ops, before.failed_ops);
    // The 100th move (index 99) went to io1.
    EXPECT_EQ(QueueIOThread(0), "io1");
    // The device still works after the moves.
    uint64_t buf = guest_.alloc(512);
    EXPECT_EQ(Request(VIRTIO_BLK_T_IN, 0, buf, 512, true), VIRTIO_BLK_S_OK);
}

// A device that is not started yet (before DRIVER_OK) and one reset by the
// guest move too: the queues then start in the new context.  Moving to
// where the device already is changes nothing.
TEST_F(DevPathMove, MoveStoppedDeviceAndNoOpMove)
{
    GError *err = nullptr;
    dev_ = Create("virtio-blk-pci,drive=d0,iothread=io0", &err);
    ASSERT_NE(dev_, nullptr) << (err ? err->message : "");
    ASSERT_EQ(virtio_blk_pci_set_iothread(dev_, io1_, &err), 0);
    EXPECT_EQ(QueueIOThread(0), "io1");
    EXPECT_FALSE(iothread_in_use(iot_));
    EXPECT_TRUE(iothread_in_use(io1_));
    ASSERT_EQ(virtio_blk_pci_set_iothread(dev_, io1_, &err), 0);
    EXPECT_TRUE(iothread_in_use(io1_));
    ASSERT_NO_FATAL_FAILURE(Probe());
    uint64_t buf = guest_.alloc(4096);
    memset(guest_.hva(buf), 0xa5, 4096);
    EXPECT_EQ(Request(VIRTIO_BLK_T_OUT, 8, buf, 4096, false), VIRTIO_BLK_S_OK);
    // Reset by the guest, moved to the main loop while stopped, started
    // again there: the queue runs in the main loop (this thread).
    SetMmio(common_ + VIRTIO_PCI_COMMON_STATUS, 1, 0);
    ASSERT_EQ(virtio_blk_pci_set_iothread(dev_, nullptr, &err), 0);
    EXPECT_FALSE(iothread_in_use(io1_));
    ring_.avail_idx = ring_.last_used = ring_.next_desc = 0;
    memset(guest_.hva(vtest::kRam0), 0, 0x10000);
    ASSERT_NO_FATAL_FAILURE(Probe());
    memset(guest_.hva(buf), 0, 4096);
    std::atomic<bool> done{ false };
    uint8_t st = 0xff;
    std::thread vcpu([&] {
        st = Request(VIRTIO_BLK_T_IN, 8, buf, 4096, true);
        done = true;
        aio_notify(main_loop_get_aio_context());
    });
    while (!done) {
        main_loop_wait(false);
    }
    vcpu.join();
    EXPECT_EQ(st, VIRTIO_BLK_S_OK);
    EXPECT_EQ(((uint8_t *)guest_.hva(buf))[4095], 0xa5);
}

// iothread-vq-mapping spreads the queues over io0 and io1; a move puts
// every queue in the one target (QEMU 7.2 has no mapping; newer QEMU has no
// live move), and the in-use counts follow.
TEST_F(DevPathMove, MappedDeviceMovesAllQueuesToOneTarget)
{
    GError *err = nullptr;
    dev_ = Create("{\"driver\":\"virtio-blk-pci\",\"drive\":\"d0\","
                  "\"num-queues\":4,\"iothread-vq-mapping\":"
                  "[{\"iothread\":\"io0\"},{\"iothread\":\"io1\"}]}", &err);
    ASSERT_NE(dev_, nullptr) << (err ? err->message : "");
    ASSERT_EQ(virtio_blk_pci_get_num_queues(dev_), 4u);
    EXPECT_EQ(QueueIOThread(0), "io0");
    EXPECT_EQ(QueueIOThread(1), "io1");
    EXPECT_TRUE(iothread_in_use(iot_));
    EXPECT_TRUE(iothread_in_use(io1_));
    ASSERT_NO_FATAL_FAILURE(Probe()); // queue 0 enabled and running
    ASSERT_EQ(virtio_blk_pci_set_iothread(dev_, io1_, &err), 0);
    for (unsigned q = 0; q < 4; q++) {
        EXPECT_EQ(QueueIOThread(q), "io1") << "queue " << q;
    }
    EXPECT_FALSE(iothread_in_use(iot_));
    EXPECT_TRUE(iothread_in_use(io1_));
    uint64_t buf = guest_.alloc(512);
    EXPECT_EQ(Request(VIRTIO_BLK_T_IN, 0, buf, 512, true), VIRTIO_BLK_S_OK);
    EXPECT_EQ(virtio_blk_pci_get_queue_iothread(dev_, 4), nullptr);
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

namespace {

// werror=stop keeps a failed write inside the queue; a move to another
// IOThread (x-blockdev-set-iothread while the VM is stopped on the error)
// must carry it along, and "cont" retries it in the new context: the
// write reaches the image exactly once and the guest sees it complete.
TEST_F(DevPathMove, HeldRequestsMoveWithTheQueue)
{
    ErrorSink &sink = UseSink();
    ASSERT_NO_FATAL_FAILURE(OpenBlkdebug("inject-error.0.iotype=write,"
                                         "inject-error.0.once=on"));
    GError *err = nullptr;
    dev_ = Create("virtio-blk-pci,drive=e0,iothread=io0,werror=stop", &err);
    ASSERT_NE(dev_, nullptr) << (err ? err->message : "");
    ASSERT_NO_FATAL_FAILURE(Probe());
    VirtIOBlock *vblk = VblkOf(dev_);

    uint64_t wbuf = guest_.alloc(4096), rbuf = guest_.alloc(4096);
    for (int i = 0; i < 4096; i++) {
        ((uint8_t *)guest_.hva(wbuf))[i] = (uint8_t)(i * 7 + 3);
    }
    uint16_t before = ring_.UsedIdx();
    uint64_t st = Post(VIRTIO_BLK_T_OUT, 40, wbuf, 4096, false);
    ASSERT_TRUE(WaitFor([&] { return virtio_blk_held_requests(vblk) == 1; }));

    ASSERT_EQ(virtio_blk_pci_set_iothread(dev_, io1_, &err), 0)
        << (err ? err->message : "");
    EXPECT_EQ(QueueIOThread(0), "io1");
    EXPECT_EQ(virtio_blk_held_requests(vblk), 1u) << "the move dropped it";
    EXPECT_EQ(ring_.UsedIdx(), before) << "a kept request was completed";

    sink.Resume(); // "cont"
    ASSERT_TRUE(WaitFor([&] { return ring_.UsedIdx() == before + 1; }));
    EXPECT_EQ(*(uint8_t *)guest_.hva(st), VIRTIO_BLK_S_OK);
    EXPECT_EQ(virtio_blk_held_requests(vblk), 0u);
    EXPECT_EQ(Request(VIRTIO_BLK_T_IN, 40, rbuf, 4096, true), VIRTIO_BLK_S_OK);
    EXPECT_EQ(memcmp(guest_.hva(wbuf), guest_.hva(rbuf), 4096), 0);
    BlockStats image;
    blk_get_stats(blk_, &image);
    EXPECT_EQ(image.wr_ops, 1u);
}

}  // namespace

namespace {

// Attack (review of the live move): "cont" and "x-blockdev-set-iothread"
// pipelined in one QMP read run back to back on the main thread, before
// any BH.  With the queue in the main loop, the retry that "cont" asked
// for is still pending there when the move's stop runs inline; the retry
// must follow the queue to its new context (run there, once), not run
// stale in the main loop against a queue that now lives in io1.
TEST_F(DevPathMove, ContThenMoveBeforeTheRetryRanRetriesInTheNewContext)
{
    ErrorSink &sink = UseSink();
    ASSERT_NO_FATAL_FAILURE(OpenBlkdebug("inject-error.0.iotype=write,"
                                         "inject-error.0.once=on"));
    GError *err = nullptr;
    dev_ = Create("virtio-blk-pci,drive=e0,werror=stop", &err); // main loop
    ASSERT_NE(dev_, nullptr) << (err ? err->message : "");
    ASSERT_NO_FATAL_FAILURE(Probe());
    VirtIOBlock *vblk = VblkOf(dev_);

    uint64_t wbuf = guest_.alloc(4096), rbuf = guest_.alloc(4096);
    for (int i = 0; i < 4096; i++) {
        ((uint8_t *)guest_.hva(wbuf))[i] = (uint8_t)(i * 5 + 9);
    }
    uint16_t before = ring_.UsedIdx();
    uint64_t st = Post(VIRTIO_BLK_T_OUT, 48, wbuf, 4096, false);
    for (int i = 0; i < 5000 && virtio_blk_held_requests(vblk) != 1; i++) {
        main_loop_wait(true);
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_EQ(virtio_blk_held_requests(vblk), 1u);

    sink.Resume(); // "cont": the retry is scheduled in the main loop ...
    // ... and the move runs before it did.
    ASSERT_EQ(virtio_blk_pci_set_iothread(dev_, io1_, &err), 0)
        << (err ? err->message : "");
    EXPECT_EQ(QueueIOThread(0), "io1");
    for (int i = 0; i < 5000 && ring_.UsedIdx() != before + 1; i++) {
        main_loop_wait(true); // a stale retry would run here
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_EQ(ring_.UsedIdx(), (uint16_t)(before + 1))
        << "the retry asked for by cont never ran in the new context";
    EXPECT_EQ(*(uint8_t *)guest_.hva(st), VIRTIO_BLK_S_OK);
    EXPECT_EQ(virtio_blk_held_requests(vblk), 0u);
    EXPECT_EQ(Request(VIRTIO_BLK_T_IN, 48, rbuf, 4096, true), VIRTIO_BLK_S_OK);
    EXPECT_EQ(memcmp(guest_.hva(wbuf), guest_.hva(rbuf), 4096), 0);
    BlockStats image;
    blk_get_stats(blk_, &image);
    EXPECT_EQ(image.wr_ops, 1u) << "the write ran twice or never";
}

}  // namespace

namespace {

// Attack: "cont" then the device goes away (quit in the same QMP read,
// machine teardown) before the main loop ran the retry "cont" scheduled:
// nothing may run later against the freed queue (ASan: use after free).
TEST_F(DevPathMove, DestroyWithARetryPendingInTheMainLoop)
{
    ErrorSink &sink = UseSink();
    ASSERT_NO_FATAL_FAILURE(OpenBlkdebug("inject-error.0.iotype=write"));
    GError *err = nullptr;
    dev_ = Create("virtio-blk-pci,drive=e0,werror=stop", &err); // main loop
    ASSERT_NE(dev_, nullptr) << (err ? err->message : "");
    ASSERT_NO_FATAL_FAILURE(Probe());
    VirtIOBlock *vblk = VblkOf(dev_);
    uint64_t wbuf = guest_.alloc(4096);
    Post(VIRTIO_BLK_T_OUT, 8, wbuf, 4096, false);
    for (int i = 0; i < 5000 && virtio_blk_held_requests(vblk) != 1; i++) {
        main_loop_wait(true);
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_EQ(virtio_blk_held_requests(vblk), 1u);
    sink.Resume();              // "cont" ...
    virtio_blk_pci_destroy(dev_); // ... "quit": teardown
    dev_ = nullptr;
    for (int i = 0; i < 5; i++) {
        main_loop_wait(true);   // a stale retry would run here
    }
    BlockStats node;
    blk_get_stats(dbg_, &node);
    EXPECT_EQ(node.failed_ops, 1u) << "a retry ran after the unplug";
}

}  // namespace

namespace {

// Attack: the verify run with moves, but the guest kicks only when the
// device asks (EVENT_IDX's avail_event, or NO_NOTIFY without it), as a
// Linux guest does; the IOThreads busy-poll (notifications suppressed
// meanwhile).  A move that leaves the ring saying "don't kick" while
// nobody polls any more stalls the guest: bounded wait, then fail.
void MoveUnderSuppressedKicks(void *dev, Guest &guest, vtest::Ring &ring,
                              EventNotifier *kick, bool event_idx,
                              IOThread *io0, IOThread *io1)
{
    GError *err = nullptr;
    VerifyDriver drv(guest, ring, kick, 0x5eed + event_idx, kImageSize / 4096);
    drv.honor_suppression = true;
    drv.event_idx = event_idx;
    std::thread vcpu([&] { drv.Run(); });
    IOThread *targets[3] = { io1, nullptr, io0 };
    uint64_t seen = 0;
    int moves = 0;
    bool stalled = false;
    for (; moves < 60 && !stalled; moves++) {
        int spins = 0;
        while (drv.completed.load() < seen + 8 && !drv.done.load() &&
               spins++ < 20000) {
            main_loop_wait(true);
            std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
        stalled = drv.completed.load() < seen + 8;
        seen = drv.completed.load();
        ASSERT_EQ(virtio_blk_pci_set_iothread(dev, targets[moves % 3], &err),
                  0) << (err ? err->message : "");
    }
    drv.stop.store(true);
    for (int spins = 0; !drv.done.load() && spins < 20000; spins++) {
        main_loop_wait(true);
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    stalled |= !drv.done.load();
    drv.abandon.store(true);
    vcpu.join();
    EXPECT_FALSE(stalled) << "the guest stalled after move " << moves
                          << ": a kick it was told to skip was needed";
    EXPECT_EQ(moves, 60);
    EXPECT_EQ(drv.verify_errors, 0u);
    EXPECT_EQ(drv.status_errors, 0u);
    EXPECT_EQ(drv.unknown_heads, 0u);
    EXPECT_LT(drv.kicks, drv.submitted) << "suppression never happened";
}

TEST_F(DevPathMove, MovesWithEventIdxAndSuppressedKicks)
{
    features0_ = 1u << VIRTIO_F_EVENT_IDX;
    GError *err = nullptr;
    dev_ = Create("virtio-blk-pci,drive=d0,iothread=io0,queue-size=64", &err);
    ASSERT_NE(dev_, nullptr) << (err ? err->message : "");
    ASSERT_NO_FATAL_FAILURE(Probe());
    ASSERT_NE(Kick(), nullptr);
    MoveUnderSuppressedKicks(dev_, guest_, ring_, Kick(), true, iot_, io1_);
}

TEST_F(DevPathMove, MovesWithNoNotifyAndSuppressedKicks)
{
    GError *err = nullptr;
    dev_ = Create("virtio-blk-pci,drive=d0,iothread=io0,queue-size=64", &err);
    ASSERT_NE(dev_, nullptr) << (err ? err->message : "");
    ASSERT_NO_FATAL_FAILURE(Probe());
    ASSERT_NE(Kick(), nullptr);
    MoveUnderSuppressedKicks(dev_, guest_, ring_, Kick(), false, iot_, io1_);
}

}  // namespace

namespace {

struct HoldCtxQueue {
    BlockBackend *blk;
    BlockQueue *q = nullptr;
    AioContext *ctx;
};

// Attack: the target context cannot take the queue (out of file
// descriptors: aio=native needs an eventfd per context), with a request
// held by werror=stop.  The move fails with the real cause, the queue
// keeps serving from io0 with its held request, the in-use counts stay.
TEST_F(DevPathMove, FailedMoveKeepsQueueHeldRequestAndCounts)
{
    // d0 again, with aio=native (one libaio context per AioContext).
    BlockOptions o = {};
    GError *err = nullptr;
    o.id = g_strdup("d0");
    o.driver = BLOCK_DRIVER_FILE;
    o.filename = g_strdup(image_.c_str());
    o.aio = BLOCK_AIO_NATIVE;
    o.cache_direct = true;
    o.cache_writeback = true;
    o.locking = BLOCK_LOCKING_OFF;
    blk_unref(blk_);
    blk_ = blk_open(&o, &err);
    block_options_clear(&o);
    ASSERT_NE(blk_, nullptr) << (err ? err->message : "");
    ErrorSink &sink = UseSink();
    ASSERT_NO_FATAL_FAILURE(OpenBlkdebug("inject-error.0.iotype=write,"
                                         "inject-error.0.once=on"));
    dev_ = Create("virtio-blk-pci,drive=e0,iothread=io0,werror=stop", &err);
    ASSERT_NE(dev_, nullptr) << (err ? err->message : "");
    ASSERT_NO_FATAL_FAILURE(Probe());
    VirtIOBlock *vblk = VblkOf(dev_);

    // Keep io0's libaio state alive through the move (so the way back
    // needs no new descriptor).
    BlockOptions o2 = {};
    o2.id = g_strdup("keep");
    o2.driver = BLOCK_DRIVER_FILE;
    o2.filename = g_strdup(image_.c_str());
    o2.aio = BLOCK_AIO_NATIVE;
    o2.cache_direct = true;
    o2.read_only = true;
    o2.locking = BLOCK_LOCKING_OFF;
    HoldCtxQueue keep;
    keep.blk = blk_open(&o2, &err);
    block_options_clear(&o2);
    ASSERT_NE(keep.blk, nullptr) << (err ? err->message : "");
    keep.ctx = iothread_get_aio_context(iot_);
    ASSERT_EQ(aio_context_run_sync(keep.ctx, [](void *op) {
        HoldCtxQueue *k = static_cast<HoldCtxQueue *>(op);
        k->q = blk_queue_new(k->blk, k->ctx, nullptr);
    }, &keep), 0);
    ASSERT_NE(keep.q, nullptr);

    uint64_t wbuf = guest_.alloc(4096), rbuf = guest_.alloc(4096);
    memset(guest_.hva(wbuf), 0x3c, 4096);
    uint16_t before = ring_.UsedIdx();
    uint64_t st = Post(VIRTIO_BLK_T_OUT, 56, wbuf, 4096, false);
    ASSERT_TRUE(WaitFor([&] { return virtio_blk_held_requests(vblk) == 1; }));

    // No descriptor left for io1's eventfd.
    struct rlimit old_lim, lim;
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old_lim), 0);
    int lowest = dup(0);
    ASSERT_GE(lowest, 0);
    close(lowest);
    lim = old_lim;
    lim.rlim_cur = (rlim_t)lowest;
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &lim), 0);
    int ret = virtio_blk_pci_set_iothread(dev_, io1_, &err);
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old_lim), 0);

    EXPECT_LT(ret, 0);
    ASSERT_NE(err, nullptr);
    EXPECT_NE(strstr(err->message, g_strerror(EMFILE)), nullptr)
        << "the reason is lost: " << err->message;
    g_clear_error(&err);
    EXPECT_EQ(QueueIOThread(0), "io0");
    EXPECT_TRUE(iothread_in_use(iot_));
    EXPECT_FALSE(iothread_in_use(io1_));
    EXPECT_EQ(virtio_blk_held_requests(vblk), 1u) << "the failed move lost it";
    EXPECT_EQ(ring_.UsedIdx(), before);

    sink.Resume(); // "cont"
    ASSERT_TRUE(WaitFor([&] { return ring_.UsedIdx() == before + 1; }));
    EXPECT_EQ(*(uint8_t *)guest_.hva(st), VIRTIO_BLK_S_OK);
    EXPECT_EQ(Request(VIRTIO_BLK_T_IN, 56, rbuf, 4096, true), VIRTIO_BLK_S_OK);
    EXPECT_EQ(memcmp(guest_.hva(wbuf), guest_.hva(rbuf), 4096), 0);
    // And the move works once descriptors are back.
    EXPECT_EQ(virtio_blk_pci_set_iothread(dev_, io1_, &err), 0)
        << (err ? err->message : "");
    EXPECT_EQ(QueueIOThread(0), "io1");

    aio_context_run_sync(keep.ctx, [](void *op) {
        blk_queue_free(static_cast<HoldCtxQueue *>(op)->q);
    }, &keep);
    blk_unref(keep.blk);
}

}  // namespace

namespace {

// Attack: no descriptor at all during the move (RLIMIT_NOFILE below every
// open fd): neither io1 nor, after the stop released io0's libaio
// context, io0 can take the queue back.  The device says NEEDS_RESET
// (it lost its context); a request held by werror=stop is still in the
// queue.  The guest's reset and the unplug must not crash on it.
TEST_F(DevPathMove, MoveThatLosesTheContextThenResetAndUnplug)
{
    BlockOptions o = {};
    GError *err = nullptr;
    o.id = g_strdup("d0");
    o.driver = BLOCK_DRIVER_FILE;
    o.filename = g_strdup(image_.c_str());
    o.aio = BLOCK_AIO_NATIVE;
    o.cache_direct = true;
    o.cache_writeback = true;
    o.locking = BLOCK_LOCKING_OFF;
    blk_unref(blk_);
    blk_ = blk_open(&o, &err);
    block_options_clear(&o);
    ASSERT_NE(blk_, nullptr) << (err ? err->message : "");
    UseSink();
    ASSERT_NO_FATAL_FAILURE(OpenBlkdebug("inject-error.0.iotype=write"));
    dev_ = Create("virtio-blk-pci,drive=e0,iothread=io0,werror=stop", &err);
    ASSERT_NE(dev_, nullptr) << (err ? err->message : "");
    ASSERT_NO_FATAL_FAILURE(Probe());
    VirtIOBlock *vblk = VblkOf(dev_);
    uint64_t wbuf = guest_.alloc(4096);
    uint16_t before = ring_.UsedIdx();
    Post(VIRTIO_BLK_T_OUT, 64, wbuf, 4096, false);
    ASSERT_TRUE(WaitFor([&] { return virtio_blk_held_requests(vblk) == 1; }));

    struct rlimit old_lim, lim;
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old_lim), 0);
    lim = old_lim;
    lim.rlim_cur = 3;
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &lim), 0);
    int ret = virtio_blk_pci_set_iothread(dev_, io1_, &err);
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old_lim), 0);
    EXPECT_LT(ret, 0);
    g_clear_error(&err);
    EXPECT_EQ(QueueIOThread(0), "io0");
    EXPECT_TRUE(Mmio(common_ + VIRTIO_PCI_COMMON_STATUS, 1) & 0x40)
        << "NEEDS_RESET";
    EXPECT_EQ(ring_.UsedIdx(), before);

    // The guest resets, and the device works again.
    SetMmio(common_ + VIRTIO_PCI_COMMON_STATUS, 1, 0);
    EXPECT_EQ(virtio_blk_held_requests(vblk), 0u);
    ring_.avail_idx = ring_.last_used = ring_.next_desc = 0;
    memset(guest_.hva(vtest::kRam0), 0, 0x10000);
    ASSERT_NO_FATAL_FAILURE(Probe());
    uint64_t rbuf = guest_.alloc(4096);
    EXPECT_EQ(Request(VIRTIO_BLK_T_IN, 64, rbuf, 4096, true), VIRTIO_BLK_S_OK);

    // Lose it again, and unplug without a reset.
    Post(VIRTIO_BLK_T_OUT, 64, wbuf, 4096, false);
    ASSERT_TRUE(WaitFor([&] { return virtio_blk_held_requests(vblk) == 1; }));
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &lim), 0);
    ret = virtio_blk_pci_set_iothread(dev_, io1_, &err);
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old_lim), 0);
    EXPECT_LT(ret, 0);
    g_clear_error(&err);
    virtio_blk_pci_destroy(dev_);
    dev_ = nullptr;
}

}  // namespace
