// PCI bus 0 on free-standing address spaces with a fake VM: conf1, the
// host bridge, header masks, BAR sizing and mapping, capability lists and
// MSI-X masking with the irqfd read by the test.
#include <gtest/gtest.h>

#include <atomic>
#include <unistd.h>
#include <sys/resource.h>
#include <thread>
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
    // A move is reported as "left" then "arrived" (so a device taking
    // over the old address hears after this one left it).
    ASSERT_EQ(dev_.mapped.size(), 2u);
    EXPECT_EQ(dev_.mapped[0], std::make_pair(0u, (uint64_t)PCI_BAR_UNMAPPED));
    EXPECT_EQ(dev_.mapped[1], std::make_pair(0u, (uint64_t)0xd0001000u));
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


// ---- attacks: a hostile guest on conf1 and the BARs ------------------

// The latch keeps only what the register has: enable, bus, device,
// function and a dword-aligned register (bits 30:24 and 1:0 read 0).
TEST_F(PciTest, Conf1LatchReservedBitsReadZero)
{
    uint64_t v = 0;
    ASSERT_TRUE(address_space_write(pio_, 0xcf8, 4, 0xffffffffu));
    address_space_read(pio_, 0xcf8, 4, &v);
    EXPECT_EQ(v, 0x80fffffcu);
    // Bits 1:0 do not shift the data port: 0x...03 selects register 0.
    address_space_write(pio_, 0xcf8, 4, PCI_CONF1_ENABLE | 3);
    address_space_read(pio_, 0xcfc, 4, &v);
    EXPECT_EQ(v, 0x12378086u);
    // Byte/word writes to the latch are ignored, reads of them are ones.
    address_space_write(pio_, 0xcf8, 1, 0);
    address_space_write(pio_, 0xcfa, 2, 0);
    address_space_read(pio_, 0xcf8, 4, &v);
    EXPECT_EQ(v, (uint64_t)PCI_CONF1_ENABLE);
    address_space_read(pio_, 0xcf9, 1, &v);
    EXPECT_EQ(v, 0xffu);
}

// Every port offset and width (also the ones crossing 0xCFF into 0xD00),
// every register, present and absent functions, random values: no crash,
// the read-only IDs survive, absent functions read all ones.
TEST_F(PciTest, Conf1EveryOffsetAndWidth)
{
    Plug(true);
    GRand *rnd = g_rand_new_with_seed(1);
    const uint32_t targets[] = {
        0u << 11, 3u << 11, 5u << 11,             // bridge, device, empty
        3u << 11 | 1u << 8, 1u << 16 | 3u << 11,  // function 1, bus 1
        0x7f000000u | 3u << 11,                   // reserved bits set
    };
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t t : targets) {
            for (unsigned reg = 0; reg < 256; reg += 4) {
                for (unsigned port = 0; port < 8; port++) {
                    for (unsigned size : { 1u, 2u, 4u, 8u }) {
                        uint32_t latch = PCI_CONF1_ENABLE | t | reg;
                        address_space_write(pio_, 0xcf8, 4, latch);
                        uint64_t v = 0;
                        address_space_read(pio_, 0xcf8 + port, size, &v);
                        if (pass == 1 && port >= 4) {
                            address_space_write(pio_, 0xcf8 + port, size,
                                                g_rand_int(rnd));
                        }
                    }
                }
            }
        }
    }
    g_rand_free(rnd);
    EXPECT_EQ(Read(0, 0, 4), 0x12378086u);
    EXPECT_EQ(Read(3, 0, 4), 0x56781234u);
    EXPECT_EQ(Read(5, 0, 4), 0xffffffffu);
    // Words and dwords that cross the end of the data port are split by
    // the address space (as QEMU does): the data port answers its bytes,
    // the unassigned port 0xd00 reads all ones.
    Select(0, 0);
    uint64_t v = 0;
    address_space_read(pio_, 0xcff, 2, &v);
    EXPECT_EQ(v, 0xff12u);
    address_space_read(pio_, 0xcfe, 4, &v);
    EXPECT_EQ(v, 0xffff1237u);
    address_space_read(pio_, 0xcfd, 2, &v);
    EXPECT_EQ(v, 0x3780u);
}

// Sizing every BAR: the unimplemented ones (and the upper half of the
// 64-bit one, sized as part of it) read 0 whatever is written.
TEST_F(PciTest, SizingEveryBar)
{
    Plug(true);
    const uint32_t want[PCI_NUM_BARS] = {
        0xfffff000u, 0, 0xffffc00cu, 0xffffffffu, 0xfffff000u, 0
    };
    for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
        Write(3, PCI_BASE_ADDRESS_0 + 4 * i, 4, 0xffffffffu);
        EXPECT_EQ(Read(3, PCI_BASE_ADDRESS_0 + 4 * i, 4), want[i]) << i;
    }
    for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
        Write(3, PCI_BASE_ADDRESS_0 + 4 * i, 4, 0);
    }
    EXPECT_EQ(Read(3, PCI_BASE_ADDRESS_0 + 4, 4), 0u);
    EXPECT_EQ(Read(3, PCI_BASE_ADDRESS_0 + 20, 4), 0u);
    EXPECT_EQ(address_space_get_nr_regions(mmio_), 0u); // all at 0
    // Host bridge: no BARs at all.
    for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
        Write(0, PCI_BASE_ADDRESS_0 + 4 * i, 4, 0xffffffffu);
        EXPECT_EQ(Read(0, PCI_BASE_ADDRESS_0 + 4 * i, 4), 0u);
    }
}

// Two BARs of one device trade places: BAR 0 is moved onto BAR 2 (so it
// cannot be mapped), then BAR 2 leaves.  BAR 0 must be decoded where it
// is programmed; the result must not depend on the order of the writes.
TEST_F(PciTest, BarMovedOntoItsSiblingMapsOnceTheSiblingLeaves)
{
    Plug(true);
    uint64_t bar2 = 0xe0000000u;
    Write(3, PCI_BASE_ADDRESS_0 + 8, 4, (uint32_t)bar2);
    Write(3, PCI_BASE_ADDRESS_0 + 12, 4, 0);
    ASSERT_TRUE(Mapped(bar2));
    Write(3, PCI_BASE_ADDRESS_0, 4, (uint32_t)bar2); // onto BAR 2
    EXPECT_EQ(dev_.pci.bars[0].mapped_addr, PCI_BAR_UNMAPPED);
    Write(3, PCI_BASE_ADDRESS_0 + 8, 4, 0xe0100000u); // BAR 2 leaves
    EXPECT_EQ(dev_.pci.bars[2].mapped_addr, 0xe0100000u);
    EXPECT_EQ(dev_.pci.bars[0].mapped_addr, bar2);
    EXPECT_TRUE(Mapped(bar2));
    // Also onto its own MSI-X BAR (4), then the MSI-X BAR moves away.
    uint64_t msix = pci_device_bar_address(&dev_.pci, 4);
    Write(3, PCI_BASE_ADDRESS_0, 4, (uint32_t)msix);
    EXPECT_EQ(dev_.pci.bars[0].mapped_addr, PCI_BAR_UNMAPPED);
    Write(3, PCI_BASE_ADDRESS_0 + 16, 4, 0xe0200000u);
    EXPECT_EQ(dev_.pci.bars[4].mapped_addr, 0xe0200000u);
    EXPECT_EQ(dev_.pci.bars[0].mapped_addr, msix);
}

// The same across devices: A over B stays unmapped until B moves away
// (or stops decoding); then A appears without another write to A.
TEST_F(PciTest, BarMovedOntoAnotherDeviceMapsOnceThatOneLeaves)
{
    Plug();
    TestDev other = {};
    pci_device_init(&other.pci, "other", &kDevHooks, 0x1234, 0x5679,
                    0xff0000, 1);
    ASSERT_EQ(pci_device_set_bar(&other.pci, 0, 4096, false, false,
                                 &kDevOps, &other, 0), 0);
    GError *err = nullptr;
    ASSERT_EQ(pci_bus_add_device(bus_, &other.pci, 4, &err), 4);
    uint64_t b = pci_device_bar_address(&other.pci, 0);
    ASSERT_NE(b, pci_device_bar_address(&dev_.pci, 0));
    Write(3, PCI_BASE_ADDRESS_0, 4, (uint32_t)b);
    EXPECT_EQ(dev_.pci.bars[0].mapped_addr, PCI_BAR_UNMAPPED);
    Write(4, PCI_COMMAND, 2, 0); // the other one stops decoding
    EXPECT_EQ(dev_.pci.bars[0].mapped_addr, b);
    // Now the other one cannot come back there...
    Write(4, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
    EXPECT_EQ(other.pci.bars[0].mapped_addr, PCI_BAR_UNMAPPED);
    // ... until it moves elsewhere.
    Write(4, PCI_BASE_ADDRESS_0, 4, 0xe0400000u);
    EXPECT_EQ(other.pci.bars[0].mapped_addr, 0xe0400000u);
    // Unplugging a device frees its place for a waiting one.
    Write(4, PCI_BASE_ADDRESS_0, 4, (uint32_t)b);
    EXPECT_EQ(other.pci.bars[0].mapped_addr, PCI_BAR_UNMAPPED);
    Write(3, PCI_BASE_ADDRESS_0, 4, 0xe0500000u);
    EXPECT_EQ(other.pci.bars[0].mapped_addr, b);
    pci_bus_remove_device(bus_, &other.pci);
    pci_device_cleanup(&other.pci);
}

// The interrupt controllers and KVM's private pages in the PCI hole are
// not regions of the MMIO space but must not be covered by a BAR either
// (an ioeventfd there would swallow IOAPIC writes).
TEST_F(PciTest, BarOverIoapicLapicOrKvmPagesStaysUnmapped)
{
    Plug();
    const uint32_t bad[] = { 0xfec00000u, 0xfecff000u, 0xfee00000u,
                             0xfeeff000u, 0xfeffc000u, 0xfefff000u };
    for (uint32_t a : bad) {
        Write(3, PCI_BASE_ADDRESS_0, 4, a);
        EXPECT_EQ(dev_.pci.bars[0].mapped_addr, PCI_BAR_UNMAPPED)
            << std::hex << a;
        EXPECT_FALSE(Mapped(a));
    }
    // Right next to them is fine.
    for (uint32_t a : { 0xfebff000u, 0xfed00000u, 0xfef00000u }) {
        Write(3, PCI_BASE_ADDRESS_0, 4, a);
        EXPECT_EQ(dev_.pci.bars[0].mapped_addr, a) << std::hex << a;
    }
    // A 64-bit BAR straddling 4 GiB onto the RAM above it: unmapped.
    Write(3, PCI_BASE_ADDRESS_0 + 8, 4, 0xffffc000u);
    Write(3, PCI_BASE_ADDRESS_0 + 12, 4, 0);
    EXPECT_EQ(dev_.pci.bars[2].mapped_addr, 0xffffc000u); // no RAM above
}

// A BAR placed anywhere: RAM, 0, the sizing pattern, the top of the 32-
// and 64-bit spaces, across 4 GiB, past the hole: never a crash, and
// never a region over RAM.
TEST_F(PciTest, BarPlacedAnywhere)
{
    Plug(true);
    const uint64_t addrs[] = {
        0, 0x1000, kRamBelow4G - 0x1000, kRamBelow4G, 0xbffff000u,
        0xfebff000u, 0xfffff000u, 0xffffe000u, 0x100000000ull,
        0xfffffffff000ull, 0xffffffffffffc000ull, 0x7ffffffffffff000ull,
    };
    for (uint64_t a : addrs) {
        for (unsigned bar : { 0u, 2u, 4u }) {
            uint32_t off = PCI_BASE_ADDRESS_0 + 4 * bar;
            Write(3, off, 4, (uint32_t)a);
            if (bar == 2) {
                Write(3, off + 4, 4, (uint32_t)(a >> 32));
            }
            uint64_t m = dev_.pci.bars[bar].mapped_addr;
            if (m != PCI_BAR_UNMAPPED) {
                EXPECT_GE(m, kRamBelow4G);
                EXPECT_LE(m + dev_.pci.bars[bar].size - 1,
                          bar == 2 ? UINT64_MAX - 1 : 0xfffffffeull);
            }
        }
    }
}

uint64_t AtomicRead(void *opaque, uint64_t offset, unsigned size)
{
    static_cast<std::atomic<int> *>(opaque)->fetch_add(1);
    return 0x5a5a5a5a;
}
const IORegionOps kAtomicOps = { AtomicRead, nullptr };

// "vCPUs" hammer a BAR and the MSI-X table while the main thread moves
// the BARs and toggles decoding (ASan/TSan: no use-after-free, no race).
TEST_F(PciTest, BarMovesWhileVcpusHammer)
{
    std::atomic<int> hits{ 0 };
    pci_device_init(&dev_.pci, "hammer", nullptr, 0x1234, 0x5678, 0, 0);
    ASSERT_EQ(pci_device_set_bar(&dev_.pci, 0, 4096, false, false,
                                 &kAtomicOps, &hits, 0), 0);
    ASSERT_EQ(pci_msix_init(&dev_.pci, 4, 2), 0);
    GError *err = nullptr;
    ASSERT_EQ(pci_bus_add_device(bus_, &dev_.pci, 3, &err), 3);
    plugged_ = true;
    uint8_t cap = pci_device_find_capability(&dev_.pci, PCI_CAP_ID_MSIX);
    pci_config_write(&dev_.pci, cap + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE,
                     2);
    const uint64_t spots[] = { 0xd0000000u, 0xd0001000u, 0xd0002000u };
    std::atomic<bool> stop{ false };
    bql_unlock();
    std::vector<std::thread> vcpus;
    for (int t = 0; t < 2; t++) {
        vcpus.emplace_back([&, t] {
            shardvm_rcu_register_thread();
            unsigned i = 0;
            while (!stop.load()) {
                i++;
                uint64_t a = spots[i % 3] + 8 * (i % 64);
                uint64_t v;
                address_space_read(mmio_, a, 4, &v);
                address_space_write(mmio_, a, 4, i);
                address_space_write(mmio_, a + 12, 4, i & 1);
                pci_msix_notify(&dev_.pci, (i + t) % 4);
            }
            shardvm_rcu_unregister_thread();
        });
    }
    for (int i = 0; i < 300; i++) {
        bql_lock();
        pci_config_write(&dev_.pci, PCI_BASE_ADDRESS_0, spots[i % 3], 4);
        pci_config_write(&dev_.pci, PCI_BASE_ADDRESS_0 + 8,
                         spots[(i + 1) % 3], 4);
        if (i % 7 == 0) {
            pci_config_write(&dev_.pci, PCI_COMMAND, 0, 2);
            pci_config_write(&dev_.pci, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
        }
        if (i % 11 == 0) {
            pci_config_write(&dev_.pci, cap + PCI_MSIX_FLAGS,
                             i % 2 ? PCI_MSIX_FLAGS_ENABLE
                                   : PCI_MSIX_FLAGS_MASKALL, 2);
        }
        bql_unlock();
    }
    stop = true;
    for (auto &t : vcpus) {
        t.join();
    }
    bql_lock();
    // The last placement (BAR 0 at spots[2], MSI-X at spots[0]) holds.
    EXPECT_EQ(dev_.pci.bars[0].mapped_addr, spots[299 % 3]);
    EXPECT_EQ(dev_.pci.bars[2].mapped_addr, spots[300 % 3]);
    uint64_t v = 0;
    EXPECT_TRUE(address_space_read(mmio_, spots[299 % 3], 4, &v));
    EXPECT_EQ(v, 0x5a5a5a5au);
    EXPECT_GT(hits.load(), 0);
}


// Only aligned dword and qword accesses are defined for the table and
// the PBA (PCIe 6.8.2): others are ignored (writes) or read 0, and must
// not unmask a vector by the byte.
TEST_F(MsixTest, TableAccessesOfEveryWidthAndOffset)
{
    Control(PCI_MSIX_FLAGS_ENABLE);
    Entry(0, 0xfee00000u, 0x4041, true);
    // A byte write of 0 to the control word: ignored (still masked).
    address_space_write(mmio_, table_ + 12, 1, 0);
    address_space_write(mmio_, table_ + 12, 2, 0);
    address_space_write(mmio_, table_ + 13, 4, 0); // misaligned dword
    address_space_write(mmio_, table_ + 4, 8, 0);  // misaligned qword
    uint64_t v = 0;
    address_space_read(mmio_, table_ + 12, 4, &v);
    EXPECT_EQ(v, 1u);
    address_space_read(mmio_, table_ + 8, 4, &v);
    EXPECT_EQ(v, 0x4041u);
    EXPECT_TRUE(vm_.routes.empty());
    // Misaligned / narrow reads read 0.
    address_space_read(mmio_, table_ + 8, 1, &v);
    EXPECT_EQ(v, 0u);
    address_space_read(mmio_, table_ + 10, 4, &v);
    EXPECT_EQ(v, 0u);
    // A qword write of data + control (aligned) is fine.
    address_space_write(mmio_, table_ + 8, 8, 0x4042);
    address_space_read(mmio_, table_ + 8, 8, &v);
    EXPECT_EQ(v, 0x4042u);
    EXPECT_EQ(vm_.routes.size(), 1u);
    // Every offset of the BAR at every width, read and write: no crash.
    // Entries past the vector count and the PBA read 0 and take nothing.
    uint64_t bar_size = dev_.pci.bars[4].size;
    for (uint64_t off = 0; off < bar_size; off++) {
        for (unsigned size : { 1u, 2u, 4u, 8u }) {
            address_space_read(mmio_, table_ + off, size, &v);
            if (off >= 4 * 16) {
                // An access crossing the BAR's end is split: the bytes
                // past it are unassigned (all ones).
                if ((off < 0x800 || off >= 0x808) && off + size <= bar_size) {
                    EXPECT_EQ(v, 0u) << off;
                }
                address_space_write(mmio_, table_ + off, size, ~0ull);
            }
        }
    }
    EXPECT_EQ(Pba(), 0u);
}

// Route allocation failure (-ENOSPC from KVM): no crash, and the
// interrupt is not lost: it stays pending and fires once a later table
// write gets the route.
TEST_F(MsixTest, RouteFailureKeepsTheInterruptPending)
{
    Control(PCI_MSIX_FLAGS_ENABLE);
    vm_.fail_routes = true;
    Entry(0, 0xfee00000u, 0x4041, false);
    EXPECT_TRUE(vm_.routes.empty());
    pci_msix_notify(&dev_.pci, 0);
    EXPECT_FALSE(Fired(0));
    EXPECT_TRUE(pci_msix_is_pending(&dev_.pci, 0));
    vm_.fail_routes = false;
    Entry(0, 0xfee00000u, 0x4041, false);
    EXPECT_TRUE(Fired(0));
    EXPECT_FALSE(pci_msix_is_pending(&dev_.pci, 0));
    // A failing update keeps the old route and delivers through it.
    vm_.fail_routes = true;
    Entry(0, 0xfee01000u, 0x4042, false);
    pci_msix_notify(&dev_.pci, 0);
    EXPECT_TRUE(Fired(0) || pci_msix_is_pending(&dev_.pci, 0));
    vm_.fail_routes = false;
}

// Disabling MSI-X keeps pending bits; re-enabling delivers them.  The
// function mask on a vector with a route: pending, then fired.
TEST_F(MsixTest, DisableWithPendingBits)
{
    Control(PCI_MSIX_FLAGS_ENABLE);
    Entry(3, 0xfee00000u, 0x4071, true);
    pci_msix_notify(&dev_.pci, 3);
    EXPECT_EQ(Pba(), 8u);
    Control(0);
    EXPECT_EQ(Pba(), 8u);
    address_space_write(mmio_, table_ + 3 * 16 + 12, 4, 0); // unmask
    EXPECT_FALSE(Fired(3)); // MSI-X disabled
    Control(PCI_MSIX_FLAGS_ENABLE);
    EXPECT_TRUE(Fired(3));
    EXPECT_EQ(Pba(), 0u);
}

// A notify racing with mask/unmask from a "vCPU" is never lost: after
// the last notify and a final unmask, the irqfd has fired.
TEST_F(MsixTest, NotifyRacingWithMaskIsNeverLost)
{
    Control(PCI_MSIX_FLAGS_ENABLE);
    Entry(1, 0xfee00000u, 0x4051, false);
    bql_unlock();
    for (int round = 0; round < 200; round++) {
        std::atomic<bool> go{ false };
        std::thread masker([&] {
            shardvm_rcu_register_thread();
            while (!go.load()) {
            }
            for (int i = 0; i < 20; i++) {
                address_space_write(mmio_, table_ + 16 + 12, 4, i & 1);
            }
            address_space_write(mmio_, table_ + 16 + 12, 4, 1);
            shardvm_rcu_unregister_thread();
        });
        Fired(1);
        go = true;
        pci_msix_notify(&dev_.pci, 1);
        masker.join();
        address_space_write(mmio_, table_ + 16 + 12, 4, 0);
        ASSERT_TRUE(Fired(1)) << round;
        ASSERT_FALSE(pci_msix_is_pending(&dev_.pci, 1));
    }
    bql_lock();
}


// 2048 vectors with few fds left (a user's num-queues=1024 under the
// usual 1024-fd limit): no abort at init; a vector that cannot get its
// eventfd stays pending and fires once one can be made.
TEST_F(PciTest, MsixWithFewFdsLeft)
{
    int lowest_free = dup(0); // the number the next fd would get
    ASSERT_GE(lowest_free, 0);
    close(lowest_free);
    struct rlimit saved;
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
    struct rlimit low = saved;
    low.rlim_cur = (rlim_t)lowest_free; // no room for one more
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);

    pci_device_init(&dev_.pci, "many", nullptr, 0x1234, 0x5678, 0, 0);
    int r = pci_msix_init(&dev_.pci, PCI_MSIX_MAX_VECTORS, 0);
    GError *err = nullptr;
    int slot = pci_bus_add_device(bus_, &dev_.pci, 3, &err);
    plugged_ = slot == 3;
    uint8_t cap = pci_device_find_capability(&dev_.pci, PCI_CAP_ID_MSIX);
    uint64_t table = pci_device_bar_address(&dev_.pci, 0);
    pci_config_write(&dev_.pci, cap + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE,
                     2);
    address_space_write(mmio_, table + 8, 4, 0x4041);
    address_space_write(mmio_, table + 12, 4, 0); // unmask: no fd for it
    pci_msix_notify(&dev_.pci, 0);
    bool pending = pci_msix_is_pending(&dev_.pci, 0);
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &saved), 0);

    ASSERT_EQ(r, 0);
    ASSERT_EQ(slot, 3);
    EXPECT_TRUE(pending);
    EXPECT_TRUE(vm_.routes.empty());
    address_space_write(mmio_, table + 8, 4, 0x4041); // retried: routed
    EXPECT_EQ(vm_.routes.size(), 1u);
    EXPECT_TRUE(event_notifier_test_and_clear(
        pci_msix_get_irqfd(&dev_.pci, 0)));
    EXPECT_FALSE(pci_msix_is_pending(&dev_.pci, 0));
}

// With RAM above 4 GiB, a BAR may end exactly at 4 GiB or start exactly
// where that RAM ends; one into it is refused.
TEST_F(PciTest, BarNextToRamAbove4GMapsOneByteIntoItDoesNot)
{
    pci_bus_free(bus_);
    PCIBusConfig cfg = {};
    cfg.mmio = mmio_;
    cfg.pio = pio_;
    cfg.ram_below_4g = kRamBelow4G;
    cfg.ram_above_4g = 1ull << 30;
    cfg.vm_ops = &FakeVM::ops;
    cfg.vm_opaque = &vm_;
    GError *err = nullptr;
    bus_ = pci_bus_new(&cfg, &err);
    ASSERT_NE(bus_, nullptr) << err->message;
    Plug();
    const uint64_t ram_end = 0x100000000ull + (1ull << 30);
    const struct {
        uint64_t addr;
        bool maps;
    } cases[] = {
        { 0xffffc000ull, true },        // ends exactly at 4 GiB
        { 0x100000000ull, false },      // RAM
        { ram_end - 0x4000, false },    // the last 16 KiB of RAM
        { ram_end, true },              // right after it
    };
    for (const auto &c : cases) {
        Write(3, PCI_BASE_ADDRESS_0 + 8, 4, (uint32_t)c.addr);
        Write(3, PCI_BASE_ADDRESS_0 + 12, 4, (uint32_t)(c.addr >> 32));
        EXPECT_EQ(dev_.pci.bars[2].mapped_addr,
                  c.maps ? c.addr : PCI_BAR_UNMAPPED) << std::hex << c.addr;
    }
}

// The PBA of 64 vectors is one qword: the bytes after it read 0 (never the
// next qword of the pending array, which does not exist: ASan).
TEST_F(PciTest, MsixPbaOfSixtyFourVectorsIsOneQword)
{
    pci_device_init(&dev_.pci, "pba64", nullptr, 0x1234, 0x5678, 0, 0);
    ASSERT_EQ(pci_msix_init(&dev_.pci, 64, 0), 0);
    GError *err = nullptr;
    ASSERT_EQ(pci_bus_add_device(bus_, &dev_.pci, 3, &err), 3);
    plugged_ = true;
    uint8_t cap = pci_device_find_capability(&dev_.pci, PCI_CAP_ID_MSIX);
    uint64_t bar = pci_device_bar_address(&dev_.pci, 0);
    pci_config_write(&dev_.pci, cap + PCI_MSIX_FLAGS,
                     PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL, 2);
    for (unsigned v = 0; v < 64; v += 9) {
        pci_msix_notify(&dev_.pci, v); // function masked: pending
    }
    uint64_t pba = 0, after = 1;
    address_space_read(mmio_, bar + 0x800, 8, &pba);
    EXPECT_EQ(pba, 0x8040201008040201ull);
    address_space_read(mmio_, bar + 0x808, 8, &after);
    EXPECT_EQ(after, 0u);
    address_space_read(mmio_, bar + 0x80c, 4, &after);
    EXPECT_EQ(after, 0u);
}

} // namespace
