// libFuzzer target: PCI configuration space (conf1 ports, and the config
// space directly) and the virtio-pci registers (BAR 4: common / ISR /
// device config / notify; BAR 1: MSI-X) of a real virtio-blk device on a
// free-standing bus with the fake VM of tests/pci (no KVM).
//
// The input is a stream of operations: conf1 address / data accesses, raw
// port accesses around 0xCF8, BAR accesses at wherever the guest moved the
// BARs, structured common-config writes (the register at its own size),
// random MMIO accesses, writes into guest RAM (so rings and requests can
// appear), a correct driver start-up, and "run the queue context until
// idle".  A notify write at an address the fake VM holds an ioeventfd for
// sets that notifier, as KVM would, instead of reaching the device.
//
// Checked: no crash, no sanitizer report, no hang; a status write of 0
// reads back 0; a reset leaves nothing in flight; at the end every MMIO
// region, ioeventfd and MSI route is gone.
#include "../pci/fake-vm.h"
#include "../virtio/fake-block.h"
#include "fuzz-guest.h"

#include "shardvm/main-loop.h"
#include "shardvm/pci.h"
#include "shardvm/virtio-blk.h"
#include "shardvm/virtio-pci.h"

#ifdef FUZZ_FDP_H
#include FUZZ_FDP_H  // gcc replay builds: clang's header by path
#else
#include <fuzzer/FuzzedDataProvider.h>
#endif

#include <vector>

using namespace fuzzguest;

namespace {

constexpr unsigned kMaxOps = 256;

const unsigned kCommonRegs[][2] = {  // offset, size
    {VIRTIO_PCI_COMMON_DFSELECT, 4}, {VIRTIO_PCI_COMMON_DF, 4},
    {VIRTIO_PCI_COMMON_GFSELECT, 4}, {VIRTIO_PCI_COMMON_GF, 4},
    {VIRTIO_PCI_COMMON_MSIX, 2},     {VIRTIO_PCI_COMMON_NUMQ, 2},
    {VIRTIO_PCI_COMMON_STATUS, 1},   {VIRTIO_PCI_COMMON_CFGGENERATION, 1},
    {VIRTIO_PCI_COMMON_Q_SELECT, 2}, {VIRTIO_PCI_COMMON_Q_SIZE, 2},
    {VIRTIO_PCI_COMMON_Q_MSIX, 2},   {VIRTIO_PCI_COMMON_Q_ENABLE, 2},
    {VIRTIO_PCI_COMMON_Q_NOFF, 2},   {VIRTIO_PCI_COMMON_Q_DESCLO, 4},
    {VIRTIO_PCI_COMMON_Q_DESCHI, 4}, {VIRTIO_PCI_COMMON_Q_AVAILLO, 4},
    {VIRTIO_PCI_COMMON_Q_AVAILHI, 4}, {VIRTIO_PCI_COMMON_Q_USEDLO, 4},
    {VIRTIO_PCI_COMMON_Q_USEDHI, 4},
};

struct Machine {
    AddressSpace *pio = nullptr, *mmio = nullptr;
    FakeVM vm;
    PCIBus *bus = nullptr;
    BlockBackend *blk = nullptr;
    VirtIOBlock *s = nullptr;
    VirtIOPCIProxy *proxy = nullptr;
    PCIDevice *pci = nullptr;
    VirtIODevice *vdev = nullptr;
    int slot = -1;
    uint64_t bar4 = 0, bar1 = 0;   // last mapped addresses

    bool Create(FuzzedDataProvider &fdp)
    {
        World *w = TheWorld();
        pio = address_space_new("pio", ADDRESS_SPACE_PIO);
        mmio = address_space_new("mmio", ADDRESS_SPACE_MMIO);
        PCIBusConfig cfg = {};
        cfg.mmio = mmio;
        cfg.pio = pio;
        cfg.ram_below_4g = 1ull << 30;
        cfg.vm_ops = &FakeVM::ops;
        cfg.vm_opaque = &vm;
        bus = pci_bus_new(&cfg, nullptr);
        CHECK(bus, "bus");

        VirtIOBlockConfig bc;
        virtio_blk_config_init(&bc);
        bc.num_queues = fdp.ConsumeIntegralInRange<unsigned>(1, 3);
        bc.queue_size = uint16_t(1u << fdp.ConsumeIntegralInRange<unsigned>(1, 8));
        blk = fake_blk_new(64 * 512, false);
        std::vector<AioContext *> ctxs(bc.num_queues, w->ctx);
        s = virtio_blk_new(&bc, blk, ctxs.data(), w->mem, nullptr);
        virtio_blk_config_clear(&bc);
        CHECK(s, "virtio-blk");
        vdev = virtio_blk_get_vdev(s);
        unsigned vectors = fdp.ConsumeIntegralInRange<unsigned>(0, 5);
        proxy = virtio_pci_new(vdev, 0x018000, vectors);
        slot = virtio_pci_plug(proxy, bus, -1, nullptr);
        CHECK(slot > 0, "plug");
        pci = virtio_pci_get_pci(proxy);
        bar4 = pci->bars[VIRTIO_PCI_BAR].mapped_addr;
        bar1 = pci->bars[VIRTIO_PCI_MSIX_BAR].mapped_addr;
        CHECK(bar4 != PCI_BAR_UNMAPPED && bar1 != PCI_BAR_UNMAPPED, "BARs not mapped at plug");
        return true;
    }

    ~Machine()
    {
        if (proxy) {
            virtio_pci_free(proxy);
            for (VirtQueue **vq = vdev->vqs; vq < vdev->vqs + vdev->num_queues; vq++) {
                CHECK(virtqueue_in_flight(*vq) == 0, "in flight after unplug");
            }
        }
        if (s) {
            virtio_blk_free(s);
        }
        RunUntilIdle(TheWorld()->ctx);
        if (blk) {
            CHECK(blk->queues.load() == 0, "block queues left");
            blk_unref(blk);
        }
        pci_bus_free(bus);
        CHECK(vm.ioeventfds.empty(), "ioeventfds left");
        CHECK(vm.routes.empty(), "MSI routes left");
        CHECK(address_space_get_nr_regions(mmio) == 0, "MMIO regions left");
        CHECK(address_space_get_nr_regions(pio) == 0, "PIO regions left");
        address_space_free(pio);
        address_space_free(mmio);
    }

    // Where the BARs are mapped now (kept when unmapped: accesses there
    // then hit nothing, or whatever took the place).
    void TrackBars()
    {
        uint64_t a = pci->bars[VIRTIO_PCI_BAR].mapped_addr;
        if (a != PCI_BAR_UNMAPPED) {
            bar4 = a;
        }
        a = pci->bars[VIRTIO_PCI_MSIX_BAR].mapped_addr;
        if (a != PCI_BAR_UNMAPPED) {
            bar1 = a;
        }
    }

    // A guest MMIO write: an ioeventfd address goes to its notifier (KVM
    // does that without an exit), anything else is dispatched.
    void MmioWrite(uint64_t addr, unsigned size, uint64_t v)
    {
        auto it = vm.ioeventfds.find(addr);
        if (it != vm.ioeventfds.end()) {
            event_notifier_set(it->second);
            return;
        }
        address_space_write(mmio, addr, size, v);
    }

    void Access(AddressSpace *as, uint64_t addr, unsigned size, bool write, uint64_t v)
    {
        if (!write) {
            uint64_t r;
            address_space_read(as, addr, size, &r);
        } else if (as == mmio) {
            MmioWrite(addr, size, v);
        } else {
            address_space_write(as, addr, size, v);
        }
    }

    void Common(unsigned off, unsigned size, uint64_t v)
    {
        MmioWrite(bar4 + VIRTIO_PCI_COMMON_OFFSET + off, size, v);
        if (off == VIRTIO_PCI_COMMON_STATUS && uint8_t(v) == 0 &&
            pci->bars[VIRTIO_PCI_BAR].mapped_addr == bar4) {
            uint64_t st = 0;
            address_space_read(mmio, bar4 + VIRTIO_PCI_COMMON_STATUS, 1, &st);
            CHECK(st == 0, "status %llu after reset", (unsigned long long)st);
            for (VirtQueue **vq = vdev->vqs; vq < vdev->vqs + vdev->num_queues; vq++) {
                CHECK(virtqueue_in_flight(*vq) == 0, "in flight after reset");
            }
        }
    }

    // What a correct driver does: reset, features, queue 0 with rings at
    // RAM0, DRIVER_OK.
    void DriverStart(FuzzedDataProvider &fdp)
    {
        Common(VIRTIO_PCI_COMMON_STATUS, 1, 0);
        Common(VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
        Common(VIRTIO_PCI_COMMON_GFSELECT, 4, 0);
        Common(VIRTIO_PCI_COMMON_GF, 4, fdp.ConsumeIntegral<uint32_t>());
        Common(VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
        Common(VIRTIO_PCI_COMMON_GF, 4, 1);   // VERSION_1
        Common(VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                                                VIRTIO_STATUS_FEATURES_OK);
        Common(VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
        Common(VIRTIO_PCI_COMMON_Q_SIZE, 2, 1u << fdp.ConsumeIntegralInRange<unsigned>(1, 8));
        Common(VIRTIO_PCI_COMMON_Q_MSIX, 2, fdp.ConsumeIntegralInRange<unsigned>(0, 3));
        Common(VIRTIO_PCI_COMMON_Q_DESCLO, 4, kRam0);
        Common(VIRTIO_PCI_COMMON_Q_AVAILLO, 4, kRam0 + 0x1000);
        Common(VIRTIO_PCI_COMMON_Q_USEDLO, 4, kRam0 + 0x2000);
        Common(VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
        Common(VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                                                VIRTIO_STATUS_FEATURES_OK |
                                                VIRTIO_STATUS_DRIVER_OK);
    }

    void Op(FuzzedDataProvider &fdp)
    {
        static const unsigned kSizes[] = {1, 2, 4, 8};
        unsigned kind = fdp.ConsumeIntegralInRange<unsigned>(0, 11);
        unsigned size = kSizes[fdp.ConsumeIntegralInRange<unsigned>(0, 3)];
        bool write = fdp.ConsumeBool();
        switch (kind) {
        case 0: {   // conf1 address: host bridge, our slot or any
            unsigned sl = fdp.ConsumeIntegralInRange<unsigned>(0, 2);
            sl = sl == 0 ? 0 : sl == 1 ? unsigned(slot) : fdp.ConsumeIntegralInRange<unsigned>(0, 31);
            uint32_t a = (fdp.ConsumeIntegral<uint8_t>() < 240 ? PCI_CONF1_ENABLE : 0) |
                         sl << 11 | fdp.ConsumeIntegral<uint8_t>();
            if (fdp.ConsumeIntegral<uint8_t>() < 16) {
                a |= fdp.ConsumeIntegral<uint32_t>() & 0x7fff0700;  // bus, function
            }
            address_space_write(pio, PCI_CONF1_ADDR_PORT, 4, a);
            break;
        }
        case 1:     // conf1 data
            Access(pio, PCI_CONF1_DATA_PORT + fdp.ConsumeIntegralInRange<unsigned>(0, 3),
                   size == 8 ? 4 : size, write, fdp.ConsumeIntegral<uint32_t>());
            break;
        case 2:     // any port around conf1
            Access(pio, 0xcf0 + fdp.ConsumeIntegralInRange<unsigned>(0, 0x1f), size, write,
                   fdp.ConsumeIntegral<uint64_t>());
            break;
        case 3:     // BAR 4, anywhere
            Access(mmio, bar4 + fdp.ConsumeIntegralInRange<uint64_t>(0, 0x4007), size, write,
                   fdp.ConsumeIntegral<uint64_t>());
            break;
        case 4: {   // a common-config register at its own size
            const unsigned *r = kCommonRegs[fdp.ConsumeIntegralInRange<size_t>(
                0, sizeof(kCommonRegs) / sizeof(kCommonRegs[0]) - 1)];
            uint64_t v = fdp.ConsumeBool() ? fdp.ConsumeIntegralInRange<uint64_t>(0, 16)
                                           : fdp.ConsumeIntegral<uint32_t>();
            if (write) {
                Common(r[0], r[1], v);
            } else {
                Access(mmio, bar4 + r[0], r[1], false, 0);
            }
            break;
        }
        case 5:     // BAR 1: MSI-X table and PBA
            Access(mmio, bar1 + fdp.ConsumeIntegralInRange<uint64_t>(0, 0x1007), size, write,
                   fdp.ConsumeIntegral<uint64_t>());
            break;
        case 6: {   // MMIO anywhere near the BAR windows
            static const uint64_t kBases[] = {0, PCI_MEM32_BASE, 0xfebff000ull, 1ull << 32,
                                              (1ull << 30) - 0x1000};
            uint64_t base = kBases[fdp.ConsumeIntegralInRange<unsigned>(0, 4)];
            Access(mmio, base + fdp.ConsumeIntegral<uint16_t>(), size, write,
                   fdp.ConsumeIntegral<uint64_t>());
            break;
        }
        case 7: {   // the device's config space directly
            unsigned len = size == 8 ? 4 : size;
            uint32_t off = fdp.ConsumeIntegralInRange<uint32_t>(0, PCI_CONFIG_SPACE_SIZE - len);
            off &= ~(len - 1);
            if (write) {
                pci_config_write(pci, off, fdp.ConsumeIntegral<uint32_t>(), len);
            } else {
                pci_config_read(pci, off, len);
            }
            break;
        }
        case 8: {   // guest RAM: ring words and request bytes
            uint64_t gpa = fdp.ConsumeBool()
                               ? kRam0 + fdp.ConsumeIntegralInRange<uint64_t>(0, 0x2ff8)
                               : kRam1 + fdp.ConsumeIntegralInRange<uint64_t>(0, 0xff8);
            uint64_t v = fdp.ConsumeIntegral<uint64_t>();
            memcpy(Hva(gpa), &v, size);
            break;
        }
        case 9:
            DriverStart(fdp);
            break;
        case 10:    // kick queue q through the notify area
            MmioWrite(bar4 + VIRTIO_PCI_NOTIFY_OFFSET +
                          VIRTIO_PCI_NOTIFY_MULT * fdp.ConsumeIntegralInRange<unsigned>(0, 3),
                      2, 0);
            break;
        default:
            RunUntilIdle(TheWorld()->ctx);
            break;
        }
        TrackBars();
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    TheWorld();
    ClearRam();
    FuzzedDataProvider fdp(data, size);
    bql_lock();
    {
        Machine m;
        m.Create(fdp);
        for (unsigned i = 0; i < kMaxOps && fdp.remaining_bytes(); i++) {
            m.Op(fdp);
        }
        RunUntilIdle(TheWorld()->ctx);
    }
    bql_unlock();
    // No shardvm_rcu_drain() per input (rcu_barrier: ~14 ms); the old
    // region tables are freed by call_rcu in the background.
    return 0;
}
