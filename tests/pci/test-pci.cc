// PCI bus 0 on free-standing address spaces with a fake VM: conf1, the
// host bridge, header masks, BAR sizing and mapping, capability lists and
// MSI-X masking with the irqfd read by the test.
#include <gtest/gtest.h>

#include <vector>

#include "fake-vm.h"
#include "shardvm/main-loop.h"
#include "shardvm/pci.h"
#include "shardvm/rcu.h"

namespace {

constexpr uint64_t kRamBelow4G = 1ull << 30;

struct TestDev {
    PCIDevice pci;
    int reads = 0;
    std::vector<std::pair<unsigned, uint64_t>> mapped;
};

uint64_t DevRead(void *opaque, uint64_t offset, unsigned size)
{
    static_cast<TestDev *>(opaque)->reads++;
    return offset;
}

const IORegionOps kDevOps = { DevRead, nullptr };

void DevBarMapped(PCIDevice *d, unsigned bar, uint64_t addr)
{
    reinterpret_cast<TestDev *>(d)->mapped.emplace_back(bar, addr);
}

const PCIDeviceOps kDevHooks = { nullptr, nullptr, DevBarMapped };

class PciTest : public ::testing::Test {
protected:
    void SetUp() override
    {
        shardvm_rcu_init();
        bql_lock(); // the main thread's view: config and BARs under the BQL
        pio_ = address_space_new("pio", ADDRESS_SPACE_PIO);
        mmio_ = address_space_new("mmio", ADDRESS_SPACE_MMIO);
        PCIBusConfig cfg = {};
        cfg.mmio = mmio_;
        cfg.pio = pio_;
        cfg.ram_below_4g = kRamBelow4G;
        cfg.vm_ops = &FakeVM::ops;
        cfg.vm_opaque = &vm_;
        GError *err = nullptr;
        bus_ = pci_bus_new(&cfg, &err);
        ASSERT_NE(bus_, nullptr) << err->message;
    }
    void TearDown() override
    {
        if (plugged_) {
            pci_bus_remove_device(bus_, &dev_.pci);
        }
        if (dev_.pci.name) {
            pci_msix_cleanup(&dev_.pci);
            pci_device_cleanup(&dev_.pci);
        }
        pci_bus_free(bus_);
        EXPECT_EQ(address_space_get_nr_regions(mmio_), 0u);
        EXPECT_EQ(address_space_get_nr_regions(pio_), 0u);
        EXPECT_TRUE(vm_.routes.empty());
        address_space_free(pio_);
        address_space_free(mmio_);
        bql_unlock();
        shardvm_rcu_drain();
    }

    // A device at slot 3: BAR0 32-bit 4 KiB, BAR2 64-bit 16 KiB
    // (prefetchable), optionally MSI-X with 4 vectors in BAR 4.
    void Plug(bool msix = false)
    {
        pci_device_init(&dev_.pci, "test", &kDevHooks, 0x1234, 0x5678,
                        0xff0000, 1);
        ASSERT_EQ(pci_device_set_bar(&dev_.pci, 0, 4096, false, false,
                                     &kDevOps, &dev_, 0), 0);
        ASSERT_EQ(pci_device_set_bar(&dev_.pci, 2, 16384, true, true,
                                     &kDevOps, &dev_, 0), 0);
        if (msix) {
            ASSERT_EQ(pci_msix_init(&dev_.pci, 4, 4), 0);
        }
        GError *err = nullptr;
        ASSERT_EQ(pci_bus_add_device(bus_, &dev_.pci, 3, &err), 3)
            << err->message;
        plugged_ = true;
    }

    void Select(unsigned slot, unsigned reg, unsigned bus = 0,
                unsigned fn = 0, bool enable = true)
    {
        uint32_t a = (enable ? PCI_CONF1_ENABLE : 0) | bus << 16 |
                     slot << 11 | fn << 8 | reg;
        ASSERT_TRUE(address_space_write(pio_, 0xcf8, 4, a));
    }
    uint64_t Read(unsigned slot, unsigned reg, unsigned size)
    {
        Select(slot, reg & ~3u);
        uint64_t v = 0;
        address_space_read(pio_, 0xcfc + (reg & 3), size, &v);
        return v;
    }
    void Write(unsigned slot, unsigned reg, unsigned size, uint64_t v)
    {
        Select(slot, reg & ~3u);
        address_space_write(pio_, 0xcfc + (reg & 3), size, v);
    }
    bool Mapped(uint64_t addr)
    {
        uint64_t v;
        return address_space_read(mmio_, addr, 4, &v);
    }

    AddressSpace *pio_ = nullptr, *mmio_ = nullptr;
    PCIBus *bus_ = nullptr;
    FakeVM vm_;
    TestDev dev_ = {};
    bool plugged_ = false;
};

TEST_F(PciTest, HostBridgeHasI440fxIds)
{
    EXPECT_EQ(Read(0, 0, 4), 0x12378086u);
    EXPECT_EQ(Read(0, PCI_CLASS_PROG - 1, 4), 0x06000002u);
    EXPECT_EQ(Read(0, PCI_HEADER_TYPE, 1), 0u);
    EXPECT_EQ(Read(0, PCI_SUBSYSTEM_VENDOR_ID, 4), 0x11001af4u);
}

TEST_F(PciTest, Conf1ByteWordDwordAtEveryOffset)
{
    EXPECT_EQ(Read(0, 0, 1), 0x86u);
    EXPECT_EQ(Read(0, 1, 1), 0x80u);
    EXPECT_EQ(Read(0, 2, 1), 0x37u);
    EXPECT_EQ(Read(0, 3, 1), 0x12u);
    EXPECT_EQ(Read(0, 0, 2), 0x8086u);
    EXPECT_EQ(Read(0, 1, 2), 0x3780u);
    EXPECT_EQ(Read(0, 2, 2), 0x1237u);
    // A byte write at 0xCFD (reg 0x0c + 1 = latency timer).
    Write(0, PCI_LATENCY_TIMER, 1, 0x40);
    EXPECT_EQ(Read(0, PCI_CACHE_LINE_SIZE, 4) & 0xff00u, 0x4000u);
    Write(0, PCI_CACHE_LINE_SIZE, 2, 0x2010);
    EXPECT_EQ(Read(0, PCI_CACHE_LINE_SIZE, 2), 0x2010u);
    // The latch reads back as written.
    Select(0, 0x10);
    uint64_t v = 0;
    address_space_read(pio_, 0xcf8, 4, &v);
    EXPECT_EQ(v, PCI_CONF1_ENABLE | 0x10u);
}

TEST_F(PciTest, AbsentFunctionsReadAllOnes)
{
    EXPECT_EQ(Read(5, 0, 4), 0xffffffffu); // empty slot
    EXPECT_EQ(Read(5, 0, 2), 0xffffu);
    EXPECT_EQ(Read(5, 0, 1), 0xffu);
    uint64_t v = 0;
    Select(0, 0, 1); // bus 1
    address_space_read(pio_, 0xcfc, 4, &v);
    EXPECT_EQ(v, 0xffffffffu);
    Select(0, 0, 0, 1); // function 1
    address_space_read(pio_, 0xcfc, 4, &v);
    EXPECT_EQ(v, 0xffffffffu);
    Select(0, 0, 0, 0, false); // enable bit clear
    address_space_read(pio_, 0xcfc, 4, &v);
    EXPECT_EQ(v, 0xffffffffu);
    // Writes to absent functions go nowhere.
    address_space_write(pio_, 0xcfc, 4, 0);
    EXPECT_EQ(Read(0, 0, 4), 0x12378086u);
}

TEST_F(PciTest, HeaderMasks)
{
    Plug();
    Write(3, PCI_VENDOR_ID, 4, 0);
    EXPECT_EQ(Read(3, 0, 4), 0x56781234u);
    Write(3, PCI_CLASS_PROG - 1, 4, 0);
    EXPECT_EQ(Read(3, PCI_CLASS_PROG - 1, 4), 0xff000001u);
    Write(3, PCI_INTERRUPT_LINE, 2, 0xffff);
    EXPECT_EQ(Read(3, PCI_INTERRUPT_LINE, 2), 0x00ffu); // pin read-only
    Write(3, PCI_ROM_ADDRESS, 4, 0xffffffff);
    EXPECT_EQ(Read(3, PCI_ROM_ADDRESS, 4), 0u); // no expansion ROM
    // Status: write-1-to-clear, 0 leaves the bit set.
    pci_set_word(dev_.pci.config + PCI_STATUS, 0x8000 | 0x2000);
    Write(3, PCI_STATUS, 2, 0);
    EXPECT_EQ(Read(3, PCI_STATUS, 2), 0xa000u);
    Write(3, PCI_STATUS, 2, 0x8000);
    EXPECT_EQ(Read(3, PCI_STATUS, 2), 0x2000u);
    // A dword write at 0x04 reaches both command and status.
    Write(3, PCI_COMMAND, 4, 0x20000000u | PCI_COMMAND_MEMORY);
    EXPECT_EQ(Read(3, PCI_COMMAND, 4), PCI_COMMAND_MEMORY);
}

TEST_F(PciTest, BarsArePreassignedAndDecoding)
{
    Plug();
    EXPECT_EQ(Read(3, PCI_BASE_ADDRESS_0, 4), PCI_MEM32_BASE);
    // 64-bit prefetchable BAR above RAM top (4 GiB here), 1 GiB aligned.
    EXPECT_EQ(Read(3, PCI_BASE_ADDRESS_0 + 8, 4), 0x0cu);
    EXPECT_EQ(Read(3, PCI_BASE_ADDRESS_0 + 12, 4), 1u);
    EXPECT_EQ(Read(3, PCI_COMMAND, 2) &
              (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER),
              PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    EXPECT_TRUE(Mapped(PCI_MEM32_BASE));
    EXPECT_TRUE(Mapped(0x100000000ull + 16380));
    EXPECT_FALSE(Mapped(0x100000000ull + 16384));
}

TEST_F(PciTest, Bar32Sizing)
{
    Plug();
    Write(3, PCI_BASE_ADDRESS_0, 4, 0xffffffff);
    EXPECT_EQ(Read(3, PCI_BASE_ADDRESS_0, 4), 0xfffff000u);
    // The sizing pattern is never decoded, even with decoding on.
    EXPECT_FALSE(Mapped(PCI_MEM32_BASE));
    EXPECT_FALSE(Mapped(0xfffff000u));
    Write(3, PCI_BASE_ADDRESS_0, 4, PCI_MEM32_BASE);
    EXPECT_TRUE(Mapped(PCI_MEM32_BASE));
}

TEST_F(PciTest, Bar64Sizing)
{
    Plug();
    Write(3, PCI_BASE_ADDRESS_0 + 8, 4, 0xffffffff);
    Write(3, PCI_BASE_ADDRESS_0 + 12, 4, 0xffffffff);
    EXPECT_EQ(Read(3, PCI_BASE_ADDRESS_0 + 8, 4), 0xffffc00cu);
    EXPECT_EQ(Read(3, PCI_BASE_ADDRESS_0 + 12, 4), 0xffffffffu);
    // A 64-bit BAR may sit below 4 GiB.
    Write(3, PCI_BASE_ADDRESS_0 + 8, 4, 0xe0000000u);
    Write(3, PCI_BASE_ADDRESS_0 + 12, 4, 0);
    EXPECT_EQ(pci_device_bar_address(&dev_.pci, 2), 0xe0000000u);
    EXPECT_TRUE(Mapped(0xe0000000u));
}

TEST_F(PciTest, CommandRegisterGatesTheRegion)
{
    Plug();
    size_t n = address_space_get_nr_regions(mmio_);
    EXPECT_EQ(n, 2u);
    Write(3, PCI_COMMAND, 2, PCI_COMMAND_MASTER);
    EXPECT_EQ(address_space_get_nr_regions(mmio_), 0u);
    EXPECT_FALSE(Mapped(PCI_MEM32_BASE));
    // Moving a BAR while decoding is off maps nothing.
    Write(3, PCI_BASE_ADDRESS_0, 4, 0xd0000000u);
    EXPECT_FALSE(Mapped(0xd0000000u));
    Write(3, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
    EXPECT_TRUE(Mapped(0xd0000000u));
    EXPECT_FALSE(Mapped(PCI_MEM32_BASE));
    EXPECT_EQ(address_space_get_nr_regions(mmio_), 2u);
}

TEST_F(PciTest, MovingABarMovesTheRegion)
{
    Plug();
    dev_.mapped.clear();
    Write(3, PCI_BASE_ADDRESS_0, 4, 0xd0001000u);
    EXPECT_FALSE(Mapped(PCI_MEM32_BASE));
    uint64_t v = 0;
    dev_.reads = 0;
    EXPECT_TRUE(address_space_read(mmio_, 0xd0001010u, 4, &v));
    EXPECT_EQ(v, 0x10u); // offset within the BAR
    EXPECT_EQ(dev_.reads, 1);
    ASSERT_EQ(dev_.mapped.size(), 1u);
    EXPECT_EQ(dev_.mapped[0], std::make_pair(0u, (uint64_t)0xd0001000u));
}

TEST_F(PciTest, BarOverRamOrAnotherRegionStaysUnmapped)
{
    Plug();
    Write(3, PCI_BASE_ADDRESS_0, 4, 0x10000); // guest RAM
    EXPECT_EQ(Read(3, PCI_BASE_ADDRESS_0, 4), 0x10000u); // reads back
    EXPECT_EQ(dev_.pci.bars[0].mapped_addr, PCI_BAR_UNMAPPED);
    EXPECT_FALSE(Mapped(0x10000));
    // Over the 64-bit BAR (which we first move below 4 GiB).
    Write(3, PCI_BASE_ADDRESS_0 + 8, 4, 0xe0000000u);
    Write(3, PCI_BASE_ADDRESS_0 + 12, 4, 0);
    Write(3, PCI_BASE_ADDRESS_0, 4, 0xe0001000u);
    EXPECT_EQ(dev_.pci.bars[0].mapped_addr, PCI_BAR_UNMAPPED);
    // Moving it somewhere free maps it again.
    Write(3, PCI_BASE_ADDRESS_0, 4, 0xe0100000u);
    EXPECT_TRUE(Mapped(0xe0100000u));
}

TEST_F(PciTest, CapabilityListWalk)
{
    pci_device_init(&dev_.pci, "caps", nullptr, 1, 2, 0, 0);
    int a = pci_device_add_capability(&dev_.pci, PCI_CAP_ID_VNDR, 6);
    int b = pci_device_add_capability(&dev_.pci, 0x05, 10);
    int c = pci_device_add_capability(&dev_.pci, PCI_CAP_ID_VNDR, 4);
    ASSERT_EQ(a, 0x40);
    ASSERT_EQ(b, 0x48); // 4-byte aligned after 0x40 + 6
    ASSERT_EQ(c, 0x54);
    GError *err = nullptr;
    ASSERT_EQ(pci_bus_add_device(bus_, &dev_.pci, -1, &err), 1);
    plugged_ = true;
    EXPECT_TRUE(Read(1, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST);
    std::vector<std::pair<unsigned, unsigned>> walk;
    for (unsigned p = Read(1, PCI_CAPABILITY_LIST, 1); p;
         p = Read(1, p + 1, 1)) {
        walk.emplace_back(p, Read(1, p, 1));
        ASSERT_LT(walk.size(), 10u);
    }
    std::vector<std::pair<unsigned, unsigned>> want = {
        { 0x40, PCI_CAP_ID_VNDR }, { 0x48, 0x05 }, { 0x54, PCI_CAP_ID_VNDR }
    };
    EXPECT_EQ(walk, want);
    EXPECT_EQ(pci_device_find_capability(&dev_.pci, 0x05), 0x48);
    // Capabilities are read-only unless their owner says otherwise.
    Write(1, 0x48, 4, 0);
    EXPECT_EQ(Read(1, 0x48, 1), 0x05u);
}

class MsixTest : public PciTest {
protected:
    void SetUp() override
    {
        PciTest::SetUp();
        Plug(true);
        cap_ = pci_device_find_capability(&dev_.pci, PCI_CAP_ID_MSIX);
        ASSERT_NE(cap_, 0u);
        table_ = pci_device_bar_address(&dev_.pci, 4);
    }
    void Control(uint16_t v) { Write(3, cap_ + PCI_MSIX_FLAGS, 2, v); }
    void Entry(unsigned v, uint64_t addr, uint32_t data, bool masked)
    {
        uint64_t e = table_ + 16 * v;
        address_space_write(mmio_, e, 4, (uint32_t)addr);
        address_space_write(mmio_, e + 4, 4, addr >> 32);
        address_space_write(mmio_, e + 8, 4, data);
        address_space_write(mmio_, e + 12, 4, masked);
    }
    bool Fired(unsigned v)
    {
        return event_notifier_test_and_clear(pci_msix_get_irqfd(&dev_.pci,
                                                                v));
    }
    uint64_t Pba()
    {
        uint64_t v = 0;
        address_space_read(mmio_, table_ + 0x800, 8, &v);
        return v;
    }

    unsigned cap_ = 0;
    uint64_t table_ = 0;
};

TEST_F(MsixTest, CapabilityDescribesTableAndPba)
{
    EXPECT_EQ(Read(3, cap_, 1), (unsigned)PCI_CAP_ID_MSIX);
    EXPECT_EQ(Read(3, cap_ + PCI_MSIX_FLAGS, 2), 3u); // 4 vectors
    EXPECT_EQ(Read(3, cap_ + PCI_MSIX_TABLE, 4), 4u); // BIR 4, offset 0
    EXPECT_EQ(Read(3, cap_ + PCI_MSIX_PBA, 4), 0x804u);
    // Vectors start masked.
    uint64_t ctrl = 0;
    address_space_read(mmio_, table_ + 12, 4, &ctrl);
    EXPECT_EQ(ctrl, 1u);
    // Only enable and function mask are writable.
    Control(0xffff);
    EXPECT_EQ(Read(3, cap_ + PCI_MSIX_FLAGS, 2), 0xc003u);
}

TEST_F(MsixTest, UnmaskedVectorFiresItsIrqfd)
{
    Control(PCI_MSIX_FLAGS_ENABLE);
    Entry(0, 0xfee00000u, 0x4041, false);
    ASSERT_EQ(vm_.routes.size(), 1u);
    auto &r = vm_.routes.begin()->second;
    EXPECT_EQ(r.addr, 0xfee00000u);
    EXPECT_EQ(r.data, 0x4041u);
    EXPECT_EQ(r.irqfd, pci_msix_get_irqfd(&dev_.pci, 0));
    pci_msix_notify(&dev_.pci, 0);
    EXPECT_TRUE(Fired(0));
    EXPECT_FALSE(Fired(0));
    EXPECT_EQ(Pba(), 0u);
    // Reprogramming the entry updates the route.
    Entry(0, 0xfee01000u, 0x4042, false);
    EXPECT_GE(vm_.updates, 1);
    EXPECT_EQ(vm_.routes.begin()->second.data, 0x4042u);
    // Out-of-range vectors are ignored.
    pci_msix_notify(&dev_.pci, 4);
}

TEST_F(MsixTest, MaskedVectorSetsPbaAndFiresOnUnmask)
{
    Control(PCI_MSIX_FLAGS_ENABLE);
    Entry(1, 0xfee00000u, 0x4051, true);
    pci_msix_notify(&dev_.pci, 1);
    EXPECT_FALSE(Fired(1));
    EXPECT_TRUE(pci_msix_is_pending(&dev_.pci, 1));
    EXPECT_EQ(Pba(), 2u);
    address_space_write(mmio_, table_ + 0x800, 8, 0); // PBA is read-only
    EXPECT_EQ(Pba(), 2u);
    address_space_write(mmio_, table_ + 16 + 12, 4, 0); // unmask
    EXPECT_TRUE(Fired(1));
    EXPECT_EQ(Pba(), 0u);
    EXPECT_FALSE(pci_msix_is_pending(&dev_.pci, 1));
}

TEST_F(MsixTest, FunctionMask)
{
    Control(PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    Entry(2, 0xfee00000u, 0x4061, false);
    pci_msix_notify(&dev_.pci, 2);
    EXPECT_FALSE(Fired(2));
    EXPECT_EQ(Pba(), 4u);
    Control(PCI_MSIX_FLAGS_ENABLE);
    EXPECT_TRUE(Fired(2));
    EXPECT_EQ(Pba(), 0u);
}

TEST_F(MsixTest, DisabledMsixDeliversNothing)
{
    Entry(0, 0xfee00000u, 0x4041, false);
    pci_msix_notify(&dev_.pci, 0);
    EXPECT_FALSE(Fired(0));
    EXPECT_EQ(Pba(), 0u);
    EXPECT_TRUE(vm_.routes.empty()); // no route before enable
}

} // namespace
