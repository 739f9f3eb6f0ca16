// The virtio-pci modern transport on a free-standing bus with a fake VM
// (tests/pci/fake-vm.h) and a small test device: IDs and capabilities,
// common configuration, status and FEATURES_OK refusal, reset, queue
// registers, notifications (MMIO and ioeventfd), MSI-X interrupts, ISR,
// device configuration and the PCI configuration access window.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <thread>
#include <vector>

#include "fake-vm.h"
#include "shardvm/main-loop.h"
#include "shardvm/rcu.h"
#include "shardvm/virtio-pci.h"

namespace {

struct TestVirtio {
    VirtIODevice vdev; // first
    uint8_t config[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
    int starts = 0, stops = 0;
};

TestVirtio *Of(VirtIODevice *v) { return reinterpret_cast<TestVirtio *>(v); }

uint64_t GetFeatures(VirtIODevice *) { return 1ull << 9; }
void ReadConfig(VirtIODevice *v, uint32_t off, void *buf, unsigned len)
{
    memcpy(buf, Of(v)->config + off, len);
}
void WriteConfig(VirtIODevice *v, uint32_t off, const void *buf,
                 unsigned len)
{
    memcpy(Of(v)->config + off, buf, len);
}
int Start(VirtIODevice *v) { Of(v)->starts++; return 0; }
void Stop(VirtIODevice *v) { Of(v)->stops++; }

const VirtIODeviceOps kOps = { GetFeatures, ReadConfig, WriteConfig, Start,
                               Stop };

class VirtioPciTest : public ::testing::Test {
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
        cfg.ram_below_4g = 1ull << 30;
        cfg.vm_ops = &FakeVM::ops;
        cfg.vm_opaque = &vm_;
        bus_ = pci_bus_new(&cfg, nullptr);
        ASSERT_NE(bus_, nullptr);

        dev_.vdev.name = "virtio-test";
        dev_.vdev.device_id = 2;
        dev_.vdev.ops = &kOps;
        dev_.vdev.config_size = sizeof(dev_.config);
        virtio_device_init(&dev_.vdev, 2, 256);
        proxy_ = virtio_pci_new(&dev_.vdev, 0x018000, 0);
        GError *err = nullptr;
        ASSERT_EQ(virtio_pci_plug(proxy_, bus_, -1, &err), 1);
        pci_ = virtio_pci_get_pci(proxy_);
        bar_ = pci_device_bar_address(pci_, VIRTIO_PCI_BAR);
        for (uint8_t c = pci_->config[PCI_CAPABILITY_LIST]; c;
             c = pci_->config[c + 1]) {
            if (pci_->config[c] == PCI_CAP_ID_VNDR) {
                caps_[pci_->config[c + VIRTIO_PCI_CAP_CFG_TYPE]] = c;
            }
        }
    }
    void TearDown() override
    {
        virtio_pci_free(proxy_);
        virtio_device_cleanup(&dev_.vdev);
        pci_bus_free(bus_);
        EXPECT_TRUE(vm_.ioeventfds.empty());
        EXPECT_TRUE(vm_.routes.empty());
        EXPECT_EQ(address_space_get_nr_regions(mmio_), 0u);
        address_space_free(pio_);
        address_space_free(mmio_);
        bql_unlock();
        shardvm_rcu_drain();
    }

    uint64_t Common(unsigned off, unsigned size)
    {
        uint64_t v = 0;
        EXPECT_TRUE(address_space_read(mmio_, bar_ + off, size, &v));
        return v;
    }
    void SetCommon(unsigned off, unsigned size, uint64_t v)
    {
        EXPECT_TRUE(address_space_write(mmio_, bar_ + off, size, v));
    }
    uint8_t Status() { return (uint8_t)Common(VIRTIO_PCI_COMMON_STATUS, 1); }
    void SetStatus(uint8_t s) { SetCommon(VIRTIO_PCI_COMMON_STATUS, 1, s); }
    void SetGuestFeatures(uint64_t f)
    {
        SetCommon(VIRTIO_PCI_COMMON_GFSELECT, 4, 0);
        SetCommon(VIRTIO_PCI_COMMON_GF, 4, (uint32_t)f);
        SetCommon(VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
        SetCommon(VIRTIO_PCI_COMMON_GF, 4, f >> 32);
    }
    // The driver's start-up sequence up to FEATURES_OK, queue 0 enabled.
    void Negotiate()
    {
        SetStatus(VIRTIO_STATUS_ACKNOWLEDGE);
        SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
        SetGuestFeatures(1ull << VIRTIO_F_VERSION_1);
        SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                  VIRTIO_STATUS_FEATURES_OK);
        ASSERT_TRUE(Status() & VIRTIO_STATUS_FEATURES_OK);
        SetCommon(VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
        SetCommon(VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
    }
    void DriverOk()
    {
        SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                  VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
    }
    EventNotifier *Kick(unsigned q)
    {
        return virtqueue_get_host_notifier(virtio_get_queue(&dev_.vdev, q));
    }

    AddressSpace *pio_ = nullptr, *mmio_ = nullptr;
    PCIBus *bus_ = nullptr;
    FakeVM vm_;
    TestVirtio dev_ = {};
    VirtIOPCIProxy *proxy_ = nullptr;
    PCIDevice *pci_ = nullptr;
    uint64_t bar_ = 0;
    std::map<unsigned, uint8_t> caps_; // cfg_type -> offset
};

TEST_F(VirtioPciTest, IdsAndCapabilities)
{
    EXPECT_EQ(pci_config_read(pci_, PCI_VENDOR_ID, 4), 0x10421af4u);
    EXPECT_EQ(pci_config_read(pci_, PCI_REVISION_ID, 4), 0x01800001u);
    EXPECT_EQ(pci_config_read(pci_, PCI_SUBSYSTEM_VENDOR_ID, 4),
              0x11001af4u);
    // BAR 4: 64-bit prefetchable memory, mapped; MSI-X in BAR 1.
    EXPECT_EQ(pci_config_read(pci_, PCI_BASE_ADDRESS_0 + 16, 4) & 0xf, 0xcu);
    EXPECT_GE(bar_, 1ull << 32);
    uint8_t msix = pci_device_find_capability(pci_, PCI_CAP_ID_MSIX);
    ASSERT_NE(msix, 0);
    EXPECT_EQ(pci_config_read(pci_, msix + PCI_MSIX_TABLE, 4) & 7, 1u);
    EXPECT_EQ(pci_config_read(pci_, msix + PCI_MSIX_FLAGS, 2), 2u); // 3 vec
    ASSERT_EQ(caps_.size(), 5u);
    const struct { unsigned type, offset; } want[] = {
        { VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_COMMON_OFFSET },
        { VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_ISR_OFFSET },
        { VIRTIO_PCI_CAP_DEVICE_CFG, VIRTIO_PCI_DEVICE_OFFSET },
        { VIRTIO_PCI_CAP_NOTIFY_CFG, VIRTIO_PCI_NOTIFY_OFFSET },
    };
    for (auto &w : want) {
        uint8_t c = caps_.at(w.type);
        EXPECT_EQ(pci_->config[c + VIRTIO_PCI_CAP_BAR], VIRTIO_PCI_BAR);
        EXPECT_EQ(pci_get_long(pci_->config + c + VIRTIO_PCI_CAP_OFFSET),
                  w.offset);
    }
    uint8_t n = caps_.at(VIRTIO_PCI_CAP_NOTIFY_CFG);
    EXPECT_EQ(pci_->config[n + 2], 20);
    EXPECT_EQ(pci_get_long(pci_->config + n + VIRTIO_PCI_NOTIFY_MULTIPLIER),
              4u);
    EXPECT_EQ(pci_->config[caps_.at(VIRTIO_PCI_CAP_PCI_CFG) + 2], 20);
}

TEST_F(VirtioPciTest, FeatureSelectWindows)
{
    uint64_t host = dev_.vdev.host_features;
    EXPECT_TRUE(host & (1ull << VIRTIO_F_VERSION_1));
    SetCommon(VIRTIO_PCI_COMMON_DFSELECT, 4, 0);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_DF, 4), (uint32_t)host);
    SetCommon(VIRTIO_PCI_COMMON_DFSELECT, 4, 1);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_DFSELECT, 4), 1u);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_DF, 4), host >> 32);
    SetCommon(VIRTIO_PCI_COMMON_DFSELECT, 4, 7);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_DF, 4), 0u);
    SetGuestFeatures((1ull << VIRTIO_F_VERSION_1) | (1ull << 9));
    EXPECT_EQ(dev_.vdev.guest_features,
              (1ull << VIRTIO_F_VERSION_1) | (1ull << 9));
    SetCommon(VIRTIO_PCI_COMMON_GFSELECT, 4, 0);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_GF, 4), 1u << 9);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_NUMQ, 2), 2u);
}

TEST_F(VirtioPciTest, FeaturesOkRefusedWithoutVersion1OrWithUnknownBits)
{
    SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    SetGuestFeatures(1ull << 9); // no VERSION_1: a legacy driver
    SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
              VIRTIO_STATUS_FEATURES_OK);
    EXPECT_FALSE(Status() & VIRTIO_STATUS_FEATURES_OK);
    SetGuestFeatures((1ull << VIRTIO_F_VERSION_1) | (1ull << 5)); // not offered
    SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
              VIRTIO_STATUS_FEATURES_OK);
    EXPECT_FALSE(Status() & VIRTIO_STATUS_FEATURES_OK);
    SetGuestFeatures(1ull << VIRTIO_F_VERSION_1);
    SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
              VIRTIO_STATUS_FEATURES_OK);
    EXPECT_TRUE(Status() & VIRTIO_STATUS_FEATURES_OK);
    // Fixed once accepted, also as the driver reads it back.
    SetGuestFeatures((1ull << VIRTIO_F_VERSION_1) | (1ull << 9));
    EXPECT_EQ(dev_.vdev.guest_features, 1ull << VIRTIO_F_VERSION_1);
    SetCommon(VIRTIO_PCI_COMMON_GFSELECT, 4, 0);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_GF, 4), 0u);
    SetCommon(VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_GF, 4), 1u);
}

TEST_F(VirtioPciTest, QueueRegisters)
{
    SetCommon(VIRTIO_PCI_COMMON_Q_SELECT, 2, 1);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_Q_SELECT, 2), 1u);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_Q_SIZE, 2), 256u);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_Q_NOFF, 2), 1u);
    SetCommon(VIRTIO_PCI_COMMON_Q_SIZE, 2, 128);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_Q_SIZE, 2), 128u);
    SetCommon(VIRTIO_PCI_COMMON_Q_SIZE, 2, 100); // not a power of 2
    SetCommon(VIRTIO_PCI_COMMON_Q_SIZE, 2, 512); // above the maximum
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_Q_SIZE, 2), 128u);
    SetCommon(VIRTIO_PCI_COMMON_Q_MSIX, 2, 2);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_Q_MSIX, 2), 2u);
    SetCommon(VIRTIO_PCI_COMMON_Q_MSIX, 2, 3); // only 3 vectors: refused
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_Q_MSIX, 2), VIRTIO_PCI_NO_VECTOR);
    SetCommon(VIRTIO_PCI_COMMON_Q_DESCLO, 4, 0x1000);
    SetCommon(VIRTIO_PCI_COMMON_Q_DESCHI, 4, 0x2);
    SetCommon(VIRTIO_PCI_COMMON_Q_AVAILLO, 8, 0x300002000ull);
    SetCommon(VIRTIO_PCI_COMMON_Q_USEDLO, 4, 0x3000);
    uint64_t d, a, u;
    virtqueue_get_addrs(virtio_get_queue(&dev_.vdev, 1), &d, &a, &u);
    EXPECT_EQ(d, 0x200001000ull);
    EXPECT_EQ(a, 0x300002000ull);
    EXPECT_EQ(u, 0x3000ull);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_Q_DESCHI, 4), 2u);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_Q_AVAILLO, 8), 0x300002000ull);
    SetCommon(VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_Q_ENABLE, 2), 1u);
    // An enabled queue's registers are frozen.
    SetCommon(VIRTIO_PCI_COMMON_Q_SIZE, 2, 64);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_Q_SIZE, 2), 128u);
    // A queue that does not exist reads size 0.
    SetCommon(VIRTIO_PCI_COMMON_Q_SELECT, 2, 5);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_Q_SIZE, 2), 0u);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_Q_MSIX, 2), VIRTIO_PCI_NO_VECTOR);
}

TEST_F(VirtioPciTest, DriverOkRegistersIoeventfdsAndResetRemovesThem)
{
    Negotiate();
    EXPECT_TRUE(vm_.ioeventfds.empty());
    DriverOk();
    EXPECT_EQ(dev_.starts, 1);
    ASSERT_EQ(vm_.ioeventfds.size(), 1u); // only queue 0 is enabled
    EXPECT_EQ(vm_.ioeventfds.at(bar_ + VIRTIO_PCI_NOTIFY_OFFSET), Kick(0));
    SetStatus(0);
    EXPECT_EQ(Status(), 0);
    EXPECT_GE(dev_.stops, 1);
    EXPECT_TRUE(vm_.ioeventfds.empty());
    SetCommon(VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_Q_ENABLE, 2), 0u);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_MSIX, 2), VIRTIO_PCI_NO_VECTOR);
    EXPECT_EQ(dev_.vdev.guest_features, 0u);
    // Reset at any time, also before FEATURES_OK.
    SetStatus(VIRTIO_STATUS_ACKNOWLEDGE);
    SetStatus(0);
    EXPECT_EQ(Status(), 0);
}

TEST_F(VirtioPciTest, NotifyWriteSetsTheQueueNotifier)
{
    SetCommon(VIRTIO_PCI_NOTIFY_OFFSET + 4, 2, 1);
    EXPECT_TRUE(event_notifier_test_and_clear(Kick(1)));
    EXPECT_FALSE(event_notifier_test_and_clear(Kick(0)));
    SetCommon(VIRTIO_PCI_NOTIFY_OFFSET, 2, 0);
    EXPECT_TRUE(event_notifier_test_and_clear(Kick(0)));
    SetCommon(VIRTIO_PCI_NOTIFY_OFFSET + 8, 2, 2); // no queue 2: ignored
}

TEST_F(VirtioPciTest, MovingBar4MovesTheIoeventfds)
{
    Negotiate();
    DriverOk();
    uint32_t bar4 = PCI_BASE_ADDRESS_0 + 4 * VIRTIO_PCI_BAR;
    pci_config_write(pci_, bar4, 0xe0000000u, 4);
    pci_config_write(pci_, bar4 + 4, 0, 4);
    ASSERT_EQ(vm_.ioeventfds.size(), 1u);
    EXPECT_EQ(vm_.ioeventfds.begin()->first,
              0xe0000000u + VIRTIO_PCI_NOTIFY_OFFSET);
    // Decoding off: nothing to notify through.
    pci_config_write(pci_, PCI_COMMAND, 0, 2);
    EXPECT_TRUE(vm_.ioeventfds.empty());
    pci_config_write(pci_, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
    EXPECT_EQ(vm_.ioeventfds.size(), 1u);
    bar_ = 0xe0000000u;
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_NUMQ, 2), 2u);
}

TEST_F(VirtioPciTest, InterruptsGoThroughMsixAndIsr)
{
    uint8_t msix = pci_device_find_capability(pci_, PCI_CAP_ID_MSIX);
    pci_config_write(pci_, msix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
    uint64_t table = pci_device_bar_address(pci_, VIRTIO_PCI_MSIX_BAR);
    address_space_write(mmio_, table + 16, 4, 0xfee00000u);
    address_space_write(mmio_, table + 16 + 8, 4, 0x4041);
    address_space_write(mmio_, table + 16 + 12, 4, 0); // unmask vector 1
    SetCommon(VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
    SetCommon(VIRTIO_PCI_COMMON_Q_MSIX, 2, 1);
    VirtQueue *vq0 = virtio_get_queue(&dev_.vdev, 0);
    dev_.vdev.transport_ops->notify(dev_.vdev.transport, vq0);
    EXPECT_TRUE(event_notifier_test_and_clear(pci_msix_get_irqfd(pci_, 1)));
    EXPECT_EQ(virtio_pci_get_isr(proxy_), VIRTIO_PCI_ISR_QUEUE);
    // Config change with no config vector: only the ISR.
    dev_.vdev.transport_ops->notify(dev_.vdev.transport, nullptr);
    EXPECT_FALSE(event_notifier_test_and_clear(pci_msix_get_irqfd(pci_, 0)));
    EXPECT_EQ(Common(VIRTIO_PCI_ISR_OFFSET, 1),
              (unsigned)(VIRTIO_PCI_ISR_QUEUE | VIRTIO_PCI_ISR_CONFIG));
    EXPECT_EQ(Common(VIRTIO_PCI_ISR_OFFSET, 1), 0u); // read clears
    // Masked: the PBA bit, then delivery on unmask.
    address_space_write(mmio_, table + 16 + 12, 4, 1);
    dev_.vdev.transport_ops->notify(dev_.vdev.transport, vq0);
    EXPECT_FALSE(event_notifier_test_and_clear(pci_msix_get_irqfd(pci_, 1)));
    EXPECT_TRUE(pci_msix_is_pending(pci_, 1));
    address_space_write(mmio_, table + 16 + 12, 4, 0);
    EXPECT_TRUE(event_notifier_test_and_clear(pci_msix_get_irqfd(pci_, 1)));
}

TEST_F(VirtioPciTest, DeviceConfigAndGeneration)
{
    EXPECT_EQ(Common(VIRTIO_PCI_DEVICE_OFFSET, 4), 0x04030201u);
    EXPECT_EQ(Common(VIRTIO_PCI_DEVICE_OFFSET + 6, 2), 0x0807u);
    EXPECT_EQ(Common(VIRTIO_PCI_DEVICE_OFFSET + 6, 4), 0u); // beyond size
    // A qword of device configuration: all eight bytes, nothing more.
    EXPECT_EQ(Common(VIRTIO_PCI_DEVICE_OFFSET, 8), 0x0807060504030201ull);
    SetCommon(VIRTIO_PCI_DEVICE_OFFSET + 1, 1, 0xaa);
    EXPECT_EQ(dev_.config[1], 0xaa);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_CFGGENERATION, 1), 0u);
    g_mutex_lock(&dev_.vdev.lock);
    dev_.vdev.config_generation = 5;
    g_mutex_unlock(&dev_.vdev.lock);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_CFGGENERATION, 1), 5u);
}

TEST_F(VirtioPciTest, PciCfgWindowReachesBar4)
{
    uint8_t c = caps_.at(VIRTIO_PCI_CAP_PCI_CFG);
    // Through conf1 like a guest: slot 1.
    auto cfg_write = [&](unsigned reg, unsigned size, uint32_t v) {
        address_space_write(pio_, 0xcf8, 4,
                            PCI_CONF1_ENABLE | 1u << 11 | (reg & ~3u));
        address_space_write(pio_, 0xcfc + (reg & 3), size, v);
    };
    auto cfg_read = [&](unsigned reg, unsigned size) {
        uint64_t v = 0;
        address_space_write(pio_, 0xcf8, 4,
                            PCI_CONF1_ENABLE | 1u << 11 | (reg & ~3u));
        address_space_read(pio_, 0xcfc + (reg & 3), size, &v);
        return v;
    };
    cfg_write(c + VIRTIO_PCI_CAP_BAR, 1, VIRTIO_PCI_BAR);
    cfg_write(c + VIRTIO_PCI_CAP_OFFSET, 4, VIRTIO_PCI_COMMON_NUMQ);
    cfg_write(c + VIRTIO_PCI_CAP_LENGTH, 4, 2);
    EXPECT_EQ(cfg_read(c + VIRTIO_PCI_CFG_DATA, 4) & 0xffff, 2u);
    cfg_write(c + VIRTIO_PCI_CAP_OFFSET, 4, VIRTIO_PCI_COMMON_Q_SELECT);
    cfg_write(c + VIRTIO_PCI_CFG_DATA, 2, 1);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_Q_SELECT, 2), 1u);
    // A misaligned window is ignored.
    cfg_write(c + VIRTIO_PCI_CAP_OFFSET, 4, VIRTIO_PCI_COMMON_Q_SELECT + 1);
    cfg_write(c + VIRTIO_PCI_CFG_DATA, 2, 0);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_Q_SELECT, 2), 1u);
    // The type/bar of the other caps stay read-only.
    uint8_t common = caps_.at(VIRTIO_PCI_CAP_COMMON_CFG);
    cfg_write(common + VIRTIO_PCI_CAP_BAR, 1, 0);
    EXPECT_EQ(pci_->config[common + VIRTIO_PCI_CAP_BAR], VIRTIO_PCI_BAR);
}


// ---- attacks: a hostile driver ----------------------------------------

// A qword access to the common configuration is two dword accesses (as
// QEMU splits it): one at DESCHI sets DESCHI and AVAILLO, not the whole
// descriptor address.
TEST_F(VirtioPciTest, QwordAtAHighHalfIsTwoDwords)
{
    SetCommon(VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
    SetCommon(VIRTIO_PCI_COMMON_Q_DESCLO, 8, 0x500001000ull);
    SetCommon(VIRTIO_PCI_COMMON_Q_AVAILLO, 8, 0x600002000ull);
    SetCommon(VIRTIO_PCI_COMMON_Q_DESCHI, 8, 0x0000000700000008ull);
    uint64_t d, a, u;
    virtqueue_get_addrs(virtio_get_queue(&dev_.vdev, 0), &d, &a, &u);
    EXPECT_EQ(d, 0x800001000ull);
    EXPECT_EQ(a, 0x600000007ull);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_Q_DESCHI, 8), 0x0000000700000008ull);
    // A qword read at DFSELECT: the select and the feature window.
    SetCommon(VIRTIO_PCI_COMMON_DFSELECT, 4, 1);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_DFSELECT, 8),
              1u | (dev_.vdev.host_features >> 32) << 32);
}

// Every register of the common configuration at every offset and width,
// with queue_select in and out of range, random values: no crash, and
// the device still comes up afterwards.
TEST_F(VirtioPciTest, CommonConfigEveryOffsetAndWidth)
{
    GRand *rnd = g_rand_new_with_seed(7);
    for (unsigned qsel : { 0u, 1u, 2u, 0x7fffu, 0xffffu }) {
        for (unsigned off = 0; off < 0x40; off++) {
            for (unsigned size : { 1u, 2u, 4u, 8u }) {
                if (off == VIRTIO_PCI_COMMON_STATUS ||
                    (off < VIRTIO_PCI_COMMON_STATUS &&
                     off + size > VIRTIO_PCI_COMMON_STATUS)) {
                    continue; // status is exercised elsewhere
                }
                SetCommon(VIRTIO_PCI_COMMON_Q_SELECT, 2, qsel);
                Common(off, size);
                if (off != VIRTIO_PCI_COMMON_Q_SELECT) {
                    SetCommon(off, size,
                              (uint64_t)g_rand_int(rnd) << 32 |
                              g_rand_int(rnd));
                }
            }
        }
    }
    g_rand_free(rnd);
    SetStatus(0);
    Negotiate();
    DriverOk();
    EXPECT_EQ(Status() & VIRTIO_STATUS_DRIVER_OK, VIRTIO_STATUS_DRIVER_OK);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_NUMQ, 2), 2u);
}

// The driver may not clear status bits (2.1.2): a write without
// DRIVER_OK does not stop the device, a second DRIVER_OK does not start
// it twice, and NEEDS_RESET (the device's bit) survives driver writes.
TEST_F(VirtioPciTest, StatusBitsOnlyClearedByReset)
{
    Negotiate();
    DriverOk();
    EXPECT_EQ(dev_.starts, 1);
    SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
              VIRTIO_STATUS_FEATURES_OK);
    EXPECT_TRUE(Status() & VIRTIO_STATUS_DRIVER_OK);
    EXPECT_EQ(vm_.ioeventfds.size(), 1u);
    DriverOk();
    EXPECT_EQ(dev_.starts, 1);
    g_mutex_lock(&dev_.vdev.lock);
    dev_.vdev.status |= VIRTIO_STATUS_NEEDS_RESET;
    g_mutex_unlock(&dev_.vdev.lock);
    DriverOk(); // without NEEDS_RESET
    EXPECT_TRUE(Status() & VIRTIO_STATUS_NEEDS_RESET);
    SetStatus(0);
    EXPECT_EQ(Status(), 0);
    // The driver cannot set NEEDS_RESET itself.
    SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_NEEDS_RESET);
    EXPECT_EQ(Status(), VIRTIO_STATUS_ACKNOWLEDGE);
}

// DRIVER_OK without FEATURES_OK (never set, or refused) does not start
// the device with features nobody agreed on.
TEST_F(VirtioPciTest, DriverOkWithoutFeaturesOkIsRefused)
{
    SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    SetCommon(VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
    SetCommon(VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
    SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
              VIRTIO_STATUS_DRIVER_OK);
    EXPECT_EQ(dev_.starts, 0);
    EXPECT_FALSE(Status() & VIRTIO_STATUS_DRIVER_OK);
    EXPECT_TRUE(vm_.ioeventfds.empty());
    SetGuestFeatures(1ull << 5); // refused: no VERSION_1
    SetStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
              VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
    EXPECT_EQ(dev_.starts, 0);
    EXPECT_FALSE(Status() & VIRTIO_STATUS_DRIVER_OK);
}

// Queue set-up after DRIVER_OK (enable, size, addresses) is refused: the
// device started without that queue and would never serve it, while its
// ioeventfd swallowed the kicks.
TEST_F(VirtioPciTest, QueueSetupAfterDriverOkIsRefused)
{
    Negotiate();
    DriverOk();
    SetCommon(VIRTIO_PCI_COMMON_Q_SELECT, 2, 1);
    SetCommon(VIRTIO_PCI_COMMON_Q_SIZE, 2, 64);
    SetCommon(VIRTIO_PCI_COMMON_Q_DESCLO, 4, 0x1000);
    SetCommon(VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_Q_ENABLE, 2), 0u);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_Q_SIZE, 2), 256u);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_Q_DESCLO, 4), 0u);
    EXPECT_EQ(vm_.ioeventfds.size(), 1u);
    // queue_size 0, not a power of 2, above the maximum: refused.
    SetStatus(0);
    SetCommon(VIRTIO_PCI_COMMON_Q_SELECT, 2, 1);
    for (unsigned bad : { 0u, 3u, 255u, 257u, 512u, 0x8000u, 0xffffu }) {
        SetCommon(VIRTIO_PCI_COMMON_Q_SIZE, 2, bad);
        EXPECT_EQ(Common(VIRTIO_PCI_COMMON_Q_SIZE, 2), 256u) << bad;
    }
}

// Notifications to queues that do not exist or are disabled, at every
// offset of the notify area and past it, any value: no crash; only an
// existing queue's notifier is set.
TEST_F(VirtioPciTest, NotifyAreaAttack)
{
    uint64_t size = pci_->bars[VIRTIO_PCI_BAR].size;
    for (uint64_t off = VIRTIO_PCI_NOTIFY_OFFSET; off < size; off += 2) {
        SetCommon(off, 2, off & 0xffff);
    }
    EXPECT_TRUE(event_notifier_test_and_clear(Kick(0)));
    EXPECT_TRUE(event_notifier_test_and_clear(Kick(1)));
    // The value written (a queue number with NOTIFICATION_DATA) does not
    // redirect the kick: queue 0's address with "1" kicks queue 0.
    SetCommon(VIRTIO_PCI_NOTIFY_OFFSET, 4, 1);
    EXPECT_TRUE(event_notifier_test_and_clear(Kick(0)));
    EXPECT_FALSE(event_notifier_test_and_clear(Kick(1)));
    // Reads of the whole BAR, every width: no crash.
    for (uint64_t off = 0; off < size; off++) {
        if (off == VIRTIO_PCI_ISR_OFFSET) {
            continue;
        }
        for (unsigned w : { 1u, 2u, 4u, 8u }) {
            Common(off, w);
        }
    }
}

// The PCI configuration access window with nonsense bar/offset/length:
// ignored (the data reads back as written), never a crash.
TEST_F(VirtioPciTest, PciCfgWindowAttack)
{
    uint8_t c = caps_.at(VIRTIO_PCI_CAP_PCI_CFG);
    struct { uint8_t bar; uint32_t off, len; } bad[] = {
        { 5, 0, 4 }, { 6, 0, 4 }, { 255, 0, 4 }, { 2, 0, 4 },
        { 4, 0, 0 }, { 4, 0, 3 }, { 4, 0, 5 }, { 4, 0, 8 },
        { 4, 0, 0xffffffffu }, { 4, 0x4000, 4 }, { 4, 0x3ffe, 4 },
        { 4, 0xfffffffcu, 4 }, { 1, 0x1000, 4 }, { 0, 0, 4 },
    };
    for (auto &b : bad) {
        pci_config_write(pci_, c + VIRTIO_PCI_CAP_BAR, b.bar, 1);
        pci_config_write(pci_, c + VIRTIO_PCI_CAP_OFFSET, b.off, 4);
        pci_config_write(pci_, c + VIRTIO_PCI_CAP_LENGTH, b.len, 4);
        pci_config_write(pci_, c + VIRTIO_PCI_CFG_DATA, 0x12345678u, 4);
        EXPECT_EQ(pci_config_read(pci_, c + VIRTIO_PCI_CFG_DATA, 4),
                  0x12345678u) << (int)b.bar << " " << b.off << " " << b.len;
    }
    // Every byte of the cap at every width, read and write.
    for (unsigned off = c; off < c + 20u; off++) {
        for (unsigned w : { 1u, 2u, 4u }) {
            if (off + w <= PCI_CONFIG_SPACE_SIZE) {
                pci_config_read(pci_, off, w);
                pci_config_write(pci_, off, 0xffffffffu, w);
            }
        }
    }
    // Through the window into the MSI-X BAR with a byte: ignored.
    pci_config_write(pci_, c + VIRTIO_PCI_CAP_BAR, VIRTIO_PCI_MSIX_BAR, 1);
    pci_config_write(pci_, c + VIRTIO_PCI_CAP_OFFSET, 12, 4);
    pci_config_write(pci_, c + VIRTIO_PCI_CAP_LENGTH, 1, 4);
    pci_config_write(pci_, c + VIRTIO_PCI_CFG_DATA, 0, 4);
    pci_config_write(pci_, c + VIRTIO_PCI_CAP_LENGTH, 4, 4);
    EXPECT_EQ(pci_config_read(pci_, c + VIRTIO_PCI_CFG_DATA, 4), 1u);
}

// notify() reads each queue's MSI-X vector on an IOThread while the
// driver rewrites it on a vCPU: the vector is read atomically, not from
// the queue register the core guards with vdev->lock (TSan).
TEST_F(VirtioPciTest, NotifyRacesWithVectorWrites)
{
    uint8_t msix = pci_device_find_capability(pci_, PCI_CAP_ID_MSIX);
    pci_config_write(pci_, msix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
    SetCommon(VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
    bql_unlock();
    std::atomic<bool> stop{ false };
    std::thread iothread([&] {
        shardvm_rcu_register_thread();
        VirtQueue *vq0 = virtio_get_queue(&dev_.vdev, 0);
        while (!stop.load()) {
            dev_.vdev.transport_ops->notify(dev_.vdev.transport, vq0);
        }
        shardvm_rcu_unregister_thread();
    });
    for (int i = 0; i < 2000; i++) {
        SetCommon(VIRTIO_PCI_COMMON_Q_MSIX, 2, i % 3);
    }
    stop = true;
    iothread.join();
    bql_lock();
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_Q_MSIX, 2), 1999u % 3);
}


// num-queues comes from the user: more queues than MSI-X has vectors
// (2048) must not abort; the table is capped and the extra queues get no
// vector.
TEST_F(VirtioPciTest, MoreQueuesThanMsixVectors)
{
    TestVirtio big = {};
    big.vdev.name = "virtio-big";
    big.vdev.device_id = 2;
    big.vdev.ops = &kOps;
    big.vdev.config_size = sizeof(big.config);
    virtio_device_init(&big.vdev, 2100, 256);
    VirtIOPCIProxy *p = virtio_pci_new(&big.vdev, 0x018000, 0);
    ASSERT_NE(p, nullptr);
    GError *err = nullptr;
    ASSERT_EQ(virtio_pci_plug(p, bus_, -1, &err), 2);
    PCIDevice *d = virtio_pci_get_pci(p);
    EXPECT_EQ(pci_msix_nr_vectors(d), (unsigned)PCI_MSIX_MAX_VECTORS);
    uint64_t bar = pci_device_bar_address(d, VIRTIO_PCI_BAR);
    address_space_write(mmio_, bar + VIRTIO_PCI_COMMON_Q_SELECT, 2, 2099);
    address_space_write(mmio_, bar + VIRTIO_PCI_COMMON_Q_MSIX, 2, 2099);
    uint64_t v = 0;
    address_space_read(mmio_, bar + VIRTIO_PCI_COMMON_Q_MSIX, 2, &v);
    EXPECT_EQ(v, VIRTIO_PCI_NO_VECTOR);
    address_space_read(mmio_, bar + VIRTIO_PCI_COMMON_NUMQ, 2, &v);
    EXPECT_EQ(v, 2100u);
    // Its last queue's notify address kicks it.
    address_space_write(mmio_, bar + VIRTIO_PCI_NOTIFY_OFFSET + 4 * 2099, 2,
                        2099);
    EXPECT_TRUE(event_notifier_test_and_clear(virtqueue_get_host_notifier(
        virtio_get_queue(&big.vdev, 2099))));
    virtio_pci_free(p);
    virtio_device_cleanup(&big.vdev);
}


// The MSI-X BAR moved onto BAR 4 cannot be mapped; once BAR 4 moves
// away the MSI-X table appears where it is programmed (without another
// write to BAR 1), and the ioeventfds follow BAR 4.
TEST_F(VirtioPciTest, MsixBarOverBar4ThenFreed)
{
    Negotiate();
    DriverOk();
    uint32_t bar4 = PCI_BASE_ADDRESS_0 + 4 * VIRTIO_PCI_BAR;
    uint32_t bar1 = PCI_BASE_ADDRESS_0 + 4 * VIRTIO_PCI_MSIX_BAR;
    pci_config_write(pci_, bar4 + 4, 0, 4);
    pci_config_write(pci_, bar4, 0xe0000000u, 4);
    pci_config_write(pci_, bar1, 0xe0000000u, 4);
    EXPECT_EQ(pci_->bars[VIRTIO_PCI_MSIX_BAR].mapped_addr, PCI_BAR_UNMAPPED);
    pci_config_write(pci_, bar4, 0xe0100000u, 4);
    EXPECT_EQ(pci_->bars[VIRTIO_PCI_MSIX_BAR].mapped_addr, 0xe0000000u);
    uint64_t v = 0;
    EXPECT_TRUE(address_space_read(mmio_, 0xe0000000u + 12, 4, &v));
    EXPECT_EQ(v, 1u); // vector 0 control: masked
    ASSERT_EQ(vm_.ioeventfds.size(), 1u);
    EXPECT_EQ(vm_.ioeventfds.begin()->first,
              0xe0100000u + VIRTIO_PCI_NOTIFY_OFFSET);
    bar_ = 0xe0100000u;
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_NUMQ, 2), 2u);
}

// Resets (and whole bring-ups) racing with kicks through the notify area
// from a "vCPU" and interrupts from an "IOThread": nothing crashes, the
// final state is consistent (ASan/TSan).
TEST_F(VirtioPciTest, ResetDuringIo)
{
    uint8_t msix = pci_device_find_capability(pci_, PCI_CAP_ID_MSIX);
    pci_config_write(pci_, msix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
    bql_unlock();
    std::atomic<bool> stop{ false };
    std::thread vcpu([&] {
        shardvm_rcu_register_thread();
        for (unsigned i = 0; !stop.load(); i++) {
            address_space_write(mmio_, bar_ + VIRTIO_PCI_NOTIFY_OFFSET +
                                4 * (i % 3), 2, i % 3);
            uint64_t v;
            address_space_read(mmio_, bar_ + VIRTIO_PCI_ISR_OFFSET, 1, &v);
        }
        shardvm_rcu_unregister_thread();
    });
    std::thread iothread([&] {
        shardvm_rcu_register_thread();
        for (unsigned i = 0; !stop.load(); i++) {
            dev_.vdev.transport_ops->notify(
                dev_.vdev.transport,
                i % 3 == 2 ? nullptr : virtio_get_queue(&dev_.vdev, i % 2));
        }
        shardvm_rcu_unregister_thread();
    });
    for (int i = 0; i < 100; i++) {
        Negotiate();
        SetCommon(VIRTIO_PCI_COMMON_Q_MSIX, 2, 1);
        SetCommon(VIRTIO_PCI_COMMON_MSIX, 2, 0);
        if (i % 2) {
            DriverOk();
        }
        SetStatus(0);
    }
    stop = true;
    vcpu.join();
    iothread.join();
    bql_lock();
    EXPECT_EQ(Status(), 0);
    EXPECT_TRUE(vm_.ioeventfds.empty());
    EXPECT_EQ(dev_.starts, 50);
}

// A qword at Q_SIZE is Q_SIZE (low dword) then Q_ENABLE (high dword): the
// size register sees only the low 32 bits, not a 64-bit value it would
// refuse as "not a power of 2".
TEST_F(VirtioPciTest, QwordAtQueueSizeIsSizeThenEnable)
{
    SetCommon(VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
    SetCommon(VIRTIO_PCI_COMMON_Q_SIZE, 8, 1ull << 32 | 64);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_Q_SIZE, 2), 64u);
    EXPECT_EQ(Common(VIRTIO_PCI_COMMON_Q_ENABLE, 2), 1u);
}

} // namespace
