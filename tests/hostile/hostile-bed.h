// The test bed of the hostile suite: two virtio-blk-pci devices on PCI bus
// 0, each on its own IOThread and its own raw image (aio=threads), driven
// the way a guest drives them: conf1 for configuration space, MMIO for the
// BARs, split rings in synthetic guest RAM.  Only the KVM ioctls are
// replaced (tests/pci/fake-vm.h), as in tests/devpath.
//
// Device A (slot 5, io0, two queues) is the victim of the hostile cases;
// device B (slot 6, io1) runs verify passes (write a pattern, flush, read it
// back, compare) in a thread of its own, a second "vCPU", while A is
// attacked, and after.  The test body runs WITHOUT the BQL: every register
// access takes it as a vCPU does (address_space_read/write), so B's driver
// and the hostile driver contend for it as two vCPUs would.
#pragma once

#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
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

namespace hostile {

constexpr uint64_t kImageSize = 1 << 20;
constexpr uint16_t kQueueSize = 64;
constexpr uint8_t kNoStatus = 0xee; // what Request returns on a timeout
constexpr unsigned kSlotA = 5, kSlotB = 6;

// Bounded waits catch hangs; nothing is asserted about how long things take.
constexpr auto kHangLimit = std::chrono::seconds(10);

struct BlkHdr {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};

struct Bed;

// The guest driver of one device.  Its rings live in RAM0 at @ring_gpa,
// its buffers in its own slice of RAM1, so the two drivers never share
// guest memory.
struct Driver {
    Bed *bed = nullptr;
    int slot = -1;
    uint64_t ring_gpa = 0;
    uint64_t buf_lo = 0, buf_hi = 0, bump = 0;
    uint64_t bar1 = 0, bar4 = 0;
    uint64_t common = 0, notify = 0, isr = 0, devcfg = 0, msix_table = 0;
    uint32_t mult = 0;
    unsigned msix_cap = 0;
    uint64_t features = 0; // negotiated by Start()
    vtest::Ring ring;

    // Buffers (16-byte aligned, wrapping inside the driver's slice).
    uint64_t Alloc(uint64_t len);

    uint64_t Mmio(uint64_t a, unsigned size);
    void SetMmio(uint64_t a, unsigned size, uint64_t v);
    uint8_t Status() { return (uint8_t)Mmio(common + VIRTIO_PCI_COMMON_STATUS, 1); }
    void SetStatus(uint8_t s) { SetMmio(common + VIRTIO_PCI_COMMON_STATUS, 1, s); }
    void SelectQueue(unsigned q) { SetMmio(common + VIRTIO_PCI_COMMON_Q_SELECT, 2, q); }
    uint8_t Isr() { return (uint8_t)Mmio(isr, 1); }

    // Reset, negotiate VERSION_1 | FLUSH | DISCARD | WRITE_ZEROES | @extra
    // (INDIRECT_DESC with @indirect), set up queue 0 in guest RAM (MSI-X
    // vector 1), DRIVER_OK.  Returns the status read back.
    uint8_t Start(bool indirect = false);
    // Queue 0's notify address.
    uint64_t NotifyAddr(unsigned q) { return notify + (uint64_t)q * mult; }
    void Kick(unsigned q = 0) { SetMmio(NotifyAddr(q), 2, q); }

    // Wait until the used idx moves past @before; false on a hang.
    bool WaitUsed(uint16_t before);
    // Wait until the status has NEEDS_RESET; false on a hang.
    bool WaitNeedsReset();

    // One well-formed request; returns the status byte (kNoStatus on a
    // timeout).
    uint8_t Request(uint32_t type, uint64_t sector, uint64_t data, uint32_t len,
                    bool data_write);
    // A verify pass: write a 16 KiB pattern (from @seed) at a sector from
    // @seed, flush, read it back, compare.  True when all of it worked.
    bool Verify(uint64_t seed);
};

// Runs verify passes on a driver in a thread (a second vCPU).
struct Verifier {
    Driver *drv = nullptr;
    std::thread t;
    std::atomic<bool> stop{ false };
    std::atomic<uint64_t> passes{ 0 }, failures{ 0 };

    void Start(Driver *d)
    {
        drv = d;
        stop = false;
        passes = failures = 0;
        t = std::thread([this] {
            shardvm_rcu_register_thread(); // address_space_* read under RCU
            for (uint64_t seed = 1; !stop.load(); seed++) {
                (drv->Verify(seed) ? passes : failures).fetch_add(1);
            }
            shardvm_rcu_unregister_thread();
        });
    }
    // Wait for @more passes after now (B still serves after the hostile
    // act), then stop.  Returns the passes counted in all.
    uint64_t Finish(uint64_t more = 2)
    {
        uint64_t want = passes.load() + more;
        auto deadline = std::chrono::steady_clock::now() + kHangLimit;
        while (passes.load() < want && failures.load() == 0 &&
               std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        stop = true;
        if (t.joinable()) {
            t.join();
        }
        return passes.load();
    }
};

struct Bed : public ::testing::Test {
    AddressSpace *pio = nullptr, *mmio = nullptr;
    PCIBus *bus = nullptr;
    FakeVM vm;
    vtest::Guest guest;
    BlockBackend *blk[2] = { nullptr, nullptr };
    IOThread *iot[2] = { nullptr, nullptr };
    std::string image[2];
    void *dev[2] = { nullptr, nullptr };
    Driver a, b;
    Verifier verifier;
    bool bql_held = false;
    // Image options and paths (tests/crash sets them before SetUp): empty
    // paths are made with mkstemp in /tmp and unlinked by FreeMachine.
    BlockAioMode aio_mode = BLOCK_AIO_THREADS;
    bool cache_direct = false;
    std::string image_path[2];

    void SetUp() override;
    void TearDown() override;

    // Bus, images, IOThreads (BQL taken).
    void BuildMachine();
    // -device virtio-blk-pci,... through the registry (BQL held).
    void *CreateDevice(const std::string &arg, GError **err);
    void DestroyDevices();
    void FreeMachine();

    // Configuration space through conf1 (takes the BQL per access).
    uint32_t Cfg(unsigned slot, unsigned off, unsigned size);
    void SetCfg(unsigned slot, unsigned off, unsigned size, uint32_t v);
    // Find @d's capabilities and BARs; MSI-X on, vectors 0 and 1 routed.
    void Probe(Driver &d, unsigned slot, uint64_t ring_gpa, uint64_t buf_lo,
               uint64_t buf_hi);

    // One hostile case: A is started (with INDIRECT_DESC if @indirect)
    // and passes a verify run; B verifies in its thread while @act attacks
    // A and must complete a pass before A is touched again; then A is reset
    // by the guest (status 0), started again and must pass verify runs; B
    // must pass runs after that too, and none may have failed.
    void RunCase(const std::function<void()> &act, bool indirect = false);
    // Inside a case: wait until B's verifier completes @n more passes
    // (false if it failed one or hung).  B's driver belongs to the
    // verifier thread while a case runs: use this, not b.Verify().
    bool WaitBPasses(uint64_t n);

    // Expect A broken: NEEDS_RESET and a config interrupt, with the used
    // index where it was (nothing of the bad chain was consumed).
    void ExpectBroken(Driver &d, uint16_t used_before);
};

} // namespace hostile
