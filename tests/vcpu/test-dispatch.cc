// vCPU exit dispatch under load: lock-free regions while the BQL is held,
// the address space replaced while vCPUs hammer it, ioeventfd and irqfd.
#include "vcpu-fixture.h"

#include <cstddef>
#include <cstring>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <poll.h>

// A guest that writes @n times to @port, then once to the end port.
static GuestCode hammer(uint32_t n, uint8_t port)
{
    GuestCode c;
    c.mov_ecx(n);
    size_t top = c.here();
    c.out8(port).loop_to(top).out8(kEndPort).hlt();
    return c;
}

TEST_F(VmTest, LockFreeRegionRunsWhileBqlHeld)
{
    create();
    Counter dev;
    ASSERT_NE(address_space_add(vm_get_pio_space(vm_), "lockfree", 0x70, 1,
                                &Counter::ops, &dev, 0, nullptr), nullptr);
    load(hammer(100000, 0x70));
    bql_lock();
    start();
    // If a lock-free dispatch took the BQL this would never finish.
    bool ended = wait_end(1, 50.0);
    bql_unlock();
    ASSERT_TRUE(ended) << "only " << dev.writes.load() << " of 100000 exits";
    EXPECT_EQ(dev.writes.load(), 100000u);
    EXPECT_EQ(dev.bad.load(), 0u);
    VCPUStats st;
    vcpu_get_stats(vm_get_vcpu(vm_, 0), &st);
    EXPECT_GE(st.io_exits, 100001u);
}

// Two vCPUs hammer one region while another thread adds and removes
// other regions 1,000 times (each removal waits for a grace period).
TEST_F(VmTest, AddressSpaceReplacedWhileTwoVcpusHammer)
{
    create(2);
    Counter dev;
    AddressSpace *pio = vm_get_pio_space(vm_);
    ASSERT_NE(address_space_add(pio, "hammered", 0x70, 1, &Counter::ops, &dev,
                                0, nullptr), nullptr);
    const uint32_t n = 40000;
    load(hammer(n, 0x70));
    start();
    static const IORegionOps nop = { nullptr, nullptr };
    int replaced = 0;
    for (; replaced < 1000; replaced++) {
        uint64_t base = 0x100 + 8 * (replaced % 32);
        IORegion *r = address_space_add(pio, "other", base, 4, &nop, nullptr,
                                        0, nullptr);
        ASSERT_NE(r, nullptr);
        address_space_remove(pio, r);
    }
    ASSERT_TRUE(wait_end(2, 50.0)) << dev.writes.load() << " of " << 2 * n;
    EXPECT_EQ(dev.writes.load(), 2ull * n);
    EXPECT_EQ(dev.bad.load(), 0u);
    EXPECT_EQ(address_space_get_unassigned(pio), 0u);
    // Ours plus the reserved in-kernel PIC/PIT/ELCR ports.
    EXPECT_EQ(address_space_get_nr_regions(pio),
              2u + VM_NR_IN_KERNEL_PORT_RANGES);
}

// The same with a NEEDS_BQL region added and removed under the BQL while
// the vCPUs also hit it: accesses after removal are unassigned, none is
// lost or double counted.
TEST_F(VmTest, BqlRegionAddedAndRemovedUnderLoad)
{
    create(2);
    Counter dev;
    AddressSpace *pio = vm_get_pio_space(vm_);
    const uint32_t n = 4000;
    load(hammer(n, 0x70));
    start();
    for (int i = 0; end_.writes.load() < 2; i++) {
        bql_lock();
        IORegion *r = address_space_add(pio, "bql", 0x70, 1, &Counter::ops,
                                        &dev, IO_REGION_NEEDS_BQL, nullptr);
        ASSERT_NE(r, nullptr);
        bql_unlock();
        std::this_thread::sleep_for(std::chrono::microseconds(300));
        bql_lock();
        address_space_remove(pio, r);
        bql_unlock();
        ASSERT_LT(i, 200000);
    }
    EXPECT_EQ(dev.writes.load() + address_space_get_unassigned(pio), 2ull * n);
    EXPECT_EQ(dev.bad.load(), 0u);
}

static bool wait_fd(int fd, int ms)
{
    struct pollfd p = { fd, POLLIN, 0 };
    return poll(&p, 1, ms) == 1;
}

TEST_F(VmTest, IoeventfdSignalsWithoutUserspaceExit)
{
    create();
    EventNotifier any, match;
    ASSERT_EQ(event_notifier_init(&any, false), 0);
    ASSERT_EQ(event_notifier_init(&match, false), 0);
    Recorder dev;
    ASSERT_NE(address_space_add(vm_get_pio_space(vm_), "dev", 0x90, 2,
                                &Recorder::ops, &dev, 0, nullptr), nullptr);
    ASSERT_EQ(vm_add_ioeventfd(vm_, &any, true, 0x90, 1, false, 0), 0);
    ASSERT_EQ(vm_add_ioeventfd(vm_, &match, true, 0x91, 1, true, 7), 0);
    EXPECT_EQ(vm_add_ioeventfd(vm_, &match, true, 0x91, 1, true, 7), -EEXIST);

    // 0x90: ioeventfd; 0x91 with 7: ioeventfd; 0x91 with 8: userspace.
    load(GuestCode().mov_eax(1).out8(0x90).mov_eax(7).out8(0x91)
             .mov_eax(8).out8(0x91).out8(kEndPort).hlt());
    start();
    ASSERT_TRUE(wait_end());
    ASSERT_TRUE(wait_fd(any.fd, 5000));
    EXPECT_TRUE(event_notifier_test_and_clear(&any));
    ASSERT_TRUE(wait_fd(match.fd, 5000));
    EXPECT_TRUE(event_notifier_test_and_clear(&match));
    std::lock_guard<std::mutex> g(dev.mu);
    ASSERT_EQ(dev.log.size(), 1u); // only the non-matching write exited
    EXPECT_EQ(dev.log[0], 1ull << 48 | 1ull << 40 | 8);

    EXPECT_EQ(vm_del_ioeventfd(vm_, &any, true, 0x90, 1, false, 0), 0);
    EXPECT_EQ(vm_del_ioeventfd(vm_, &match, true, 0x91, 1, true, 7), 0);
    EXPECT_LT(vm_del_ioeventfd(vm_, &match, true, 0x91, 1, true, 7), 0);
    EXPECT_EQ(vm_add_ioeventfd(vm_, &any, true, 0x90, 3, false, 0), -EINVAL);
    event_notifier_cleanup(&any);
    event_notifier_cleanup(&match);
}

// The device model of a virtqueue kick: each guest write sets an
// EventNotifier handled in an IOThread's AioContext, whose handler
// acknowledges through guest memory; the guest waits for every ack.
struct AckDevice {
    EventNotifier e;
    uint32_t *ack = nullptr;     // guest RAM, written by the IOThread
    std::atomic<uint32_t> handled{0};
    std::atomic<uint32_t> coalesced{0};

    static void on_kick(EventNotifier *e)
    {
        AckDevice *d = reinterpret_cast<AckDevice *>(
            reinterpret_cast<char *>(e) - offsetof(AckDevice, e));
        if (!event_notifier_test_and_clear(e)) {
            return;
        }
        uint32_t n = d->handled.fetch_add(1) + 1;
        __atomic_store_n(d->ack, n, __ATOMIC_RELEASE);
    }
    // Attach / detach in the IOThread itself: the device belongs to it
    // (and TSan cannot see the epoll_ctl -> epoll_wait hand-over of a
    // handler registered from another thread).
    static void attach(void *opaque)
    {
        auto *d = static_cast<AckDevice *>(opaque);
        aio_set_event_notifier(aio_get_current_context(), &d->e, on_kick,
                               nullptr, nullptr);
    }
    static void detach(void *opaque)
    {
        auto *d = static_cast<AckDevice *>(opaque);
        aio_set_event_notifier(aio_get_current_context(), &d->e, nullptr,
                               nullptr, nullptr);
    }
};

TEST_F(VmTest, IoeventfdHandledInIOThread)
{
    create();
    const uint32_t kAck = 0x2000, kN = 2000;
    GError *err = nullptr;
    IOThread *iot = iothread_new("vcpu-test", nullptr, &err);
    ASSERT_NE(iot, nullptr) << (err ? err->message : "?");
    AckDevice dev;
    ASSERT_EQ(event_notifier_init(&dev.e, false), 0);
    dev.ack = static_cast<uint32_t *>(vm_gpa_to_hva(vm_, kAck, 4));
    ASSERT_NE(dev.ack, nullptr);
    AioContext *ctx = iothread_get_aio_context(iot);
    ASSERT_EQ(aio_context_run_sync(ctx, AckDevice::attach, &dev), 0);
    ASSERT_EQ(vm_add_ioeventfd(vm_, &dev.e, true, 0x90, 1, false, 0), 0);

    GuestCode c;
    c.mov_eax(1);
    size_t kick = c.here();
    c.out8(0x90);
    size_t wait = c.here();
    c.cmp_eax_mem(kAck).jne_to(wait).inc_eax().cmp_eax_imm(kN + 1)
        .jne_to(kick).out32(kEndPort).hlt();
    load(c);
    start();
    ASSERT_TRUE(wait_end(1, 50.0)) << "acks: " << dev.handled.load();
    EXPECT_EQ(dev.handled.load(), kN);
    EXPECT_EQ(end_.last_value.load(), kN + 1);
    VCPUStats st;
    vcpu_get_stats(vm_get_vcpu(vm_, 0), &st);
    EXPECT_LT(st.io_exits, 10u) << "ioeventfd writes must not exit to userspace";

    vm_stop(vm_);
    EXPECT_EQ(vm_del_ioeventfd(vm_, &dev.e, true, 0x90, 1, false, 0), 0);
    ASSERT_EQ(aio_context_run_sync(ctx, AckDevice::detach, &dev), 0);
    iothread_free(iot);
    event_notifier_cleanup(&dev.e);
}

TEST_F(VmTest, IoeventfdMmio)
{
    create();
    EventNotifier e;
    ASSERT_EQ(event_notifier_init(&e, false), 0);
    ASSERT_EQ(vm_add_ioeventfd(vm_, &e, false, 0xd0000000, 4, false, 0), 0);
    load(GuestCode().mov_eax(3).store32(0xd0000000).out8(kEndPort).hlt());
    start();
    ASSERT_TRUE(wait_end());
    ASSERT_TRUE(wait_fd(e.fd, 5000));
    EXPECT_TRUE(event_notifier_test_and_clear(&e));
    EXPECT_EQ(address_space_get_unassigned(vm_get_mmio_space(vm_)), 0u);
    EXPECT_EQ(vm_del_ioeventfd(vm_, &e, false, 0xd0000000, 4, false, 0), 0);
    event_notifier_cleanup(&e);
}

TEST_F(VmTest, IrqfdAndMsiRoutes)
{
    create();
    EventNotifier e, resample;
    ASSERT_EQ(event_notifier_init(&e, false), 0);
    ASSERT_EQ(event_notifier_init(&resample, false), 0);
    ASSERT_EQ(vm_add_irqfd(vm_, &e, 5, nullptr), 0);
    EXPECT_EQ(event_notifier_set(&e), 0); // injects IRQ 5 (masked: no-op)
    EXPECT_EQ(vm_del_irqfd(vm_, &e, 5), 0);
    EXPECT_EQ(vm_add_irqfd(vm_, &e, 10, &resample), 0);
    EXPECT_EQ(vm_del_irqfd(vm_, &e, 10), 0);

    int gsi = vm_add_msi_route(vm_, 0xfee00000, 0x4030);
    ASSERT_GE(gsi, 24);
    int gsi2 = vm_add_msi_route(vm_, 0xfee01000, 0x4031);
    ASSERT_GE(gsi2, 24);
    EXPECT_NE(gsi, gsi2);
    EXPECT_EQ(vm_add_irqfd(vm_, &e, (unsigned)gsi, nullptr), 0);
    EXPECT_EQ(event_notifier_set(&e), 0);
    EXPECT_EQ(vm_update_msi_route(vm_, (unsigned)gsi, 0xfee00000, 0x4032), 0);
    EXPECT_EQ(vm_del_irqfd(vm_, &e, (unsigned)gsi), 0);
    EXPECT_EQ(vm_del_msi_route(vm_, (unsigned)gsi), 0);
    EXPECT_EQ(vm_del_msi_route(vm_, (unsigned)gsi), -ENOENT);
    EXPECT_EQ(vm_update_msi_route(vm_, (unsigned)gsi, 0, 0), -ENOENT);
    // The freed GSI is reused.
    EXPECT_EQ(vm_add_msi_route(vm_, 0xfee00000, 0x4033), gsi);

    EXPECT_GE(vm_signal_msi(vm_, 0xfee00000, 0x4030), 0);
    EXPECT_EQ(vm_set_irq_line(vm_, 4, true), 0);
    EXPECT_EQ(vm_set_irq_line(vm_, 4, false), 0);
    event_notifier_cleanup(&e);
    event_notifier_cleanup(&resample);
}

// ---- delivery, seen by host-side KVM probes (issue 14 point 2) ---------
//
// The vCPU never runs: KVM keeps what arrives pending, and the test reads
// it back: the local APIC's IRR (KVM_GET_LAPIC) for MSIs, the IOAPIC's
// IRR (KVM_GET_IRQCHIP) for interrupt lines.  An MSI to a local APIC is
// only accepted while the APIC is software-enabled (SVR bit 8), which the
// guest would do first; here the test does it.

// vCPU 0's local APIC register at @off.
static uint32_t LapicReg(VM *vm, unsigned off)
{
    struct kvm_lapic_state st = {};
    EXPECT_EQ(ioctl(vcpu_get_fd(vm_get_vcpu(vm, 0)), KVM_GET_LAPIC, &st), 0);
    uint32_t v;
    memcpy(&v, &st.regs[off], sizeof(v));
    return v;
}

static void LapicSoftwareEnable(VM *vm)
{
    int fd = vcpu_get_fd(vm_get_vcpu(vm, 0));
    struct kvm_lapic_state st = {};
    ASSERT_EQ(ioctl(fd, KVM_GET_LAPIC, &st), 0);
    uint32_t svr;
    memcpy(&svr, &st.regs[0xf0], sizeof(svr));
    svr |= 0x100 | 0xff; // APIC enabled, spurious vector 0xff
    memcpy(&st.regs[0xf0], &svr, sizeof(svr));
    ASSERT_EQ(ioctl(fd, KVM_SET_LAPIC, &st), 0);
}

// Vector @vec pending in vCPU 0's IRR (0x200 + 0x10 per 32 vectors).
static bool LapicIrr(VM *vm, unsigned vec)
{
    return (LapicReg(vm, 0x200 + (vec / 32) * 0x10) >> (vec % 32)) & 1;
}

// IOAPIC input @pin asserted (its IRR bit; set even while masked).
static bool IoapicIrr(VM *vm, unsigned pin)
{
    struct kvm_irqchip chip = {};
    chip.chip_id = KVM_IRQCHIP_IOAPIC;
    EXPECT_EQ(ioctl(vm_get_fd(vm), KVM_GET_IRQCHIP, &chip), 0);
    return (chip.chip.ioapic.irr >> pin) & 1;
}

// An MSI route delivers the vector its data names, to APIC 0; after
// vm_update_msi_route() the same irqfd delivers the new vector.
TEST_F(VmTest, MsiRouteUpdateChangesTheVector)
{
    create();
    LapicSoftwareEnable(vm_);
    EventNotifier e;
    ASSERT_EQ(event_notifier_init(&e, false), 0);
    // Fixed delivery, edge, physical destination APIC 0.
    int gsi = vm_add_msi_route(vm_, 0xfee00000, 0x0041);
    ASSERT_GE(gsi, 24);
    ASSERT_EQ(vm_add_irqfd(vm_, &e, (unsigned)gsi, nullptr), 0);
    EXPECT_FALSE(LapicIrr(vm_, 0x41));

    ASSERT_EQ(event_notifier_set(&e), 0);
    EXPECT_TRUE(wait_for([&] { return LapicIrr(vm_, 0x41); }))
        << "the MSI did not arrive on vector 0x41";
    EXPECT_FALSE(LapicIrr(vm_, 0x52));

    ASSERT_EQ(vm_update_msi_route(vm_, (unsigned)gsi, 0xfee00000, 0x0052), 0);
    ASSERT_EQ(event_notifier_set(&e), 0);
    EXPECT_TRUE(wait_for([&] { return LapicIrr(vm_, 0x52); }))
        << "after the update the MSI did not arrive on vector 0x52";

    EXPECT_EQ(vm_del_irqfd(vm_, &e, (unsigned)gsi), 0);
    EXPECT_EQ(vm_del_msi_route(vm_, (unsigned)gsi), 0);
    event_notifier_cleanup(&e);
}

// vm_signal_msi() delivers directly, without a route.
TEST_F(VmTest, SignalMsiDeliversItsVector)
{
    create();
    LapicSoftwareEnable(vm_);
    EXPECT_FALSE(LapicIrr(vm_, 0x63));
    EXPECT_GE(vm_signal_msi(vm_, 0xfee00000, 0x0063), 0);
    EXPECT_TRUE(LapicIrr(vm_, 0x63));
}

// vm_set_irq_line() drives the IOAPIC input: asserted, then deasserted.
TEST_F(VmTest, IrqLineDeliversToGuest)
{
    create();
    EXPECT_FALSE(IoapicIrr(vm_, 4));
    EXPECT_EQ(vm_set_irq_line(vm_, 4, true), 0);
    EXPECT_TRUE(IoapicIrr(vm_, 4)) << "KVM_IRQ_LINE did not assert pin 4";
    EXPECT_EQ(vm_set_irq_line(vm_, 4, false), 0);
    EXPECT_FALSE(IoapicIrr(vm_, 4));
}

// With a resample notifier the irqfd is level-triggered: the line stays
// asserted after the event until the guest's EOI (which never comes
// here).  Without it, the irqfd only pulses the line.
TEST_F(VmTest, IrqfdResampleKeepsLineAssertedUntilEoi)
{
    create();
    EventNotifier e, resample;
    ASSERT_EQ(event_notifier_init(&e, false), 0);
    ASSERT_EQ(event_notifier_init(&resample, false), 0);
    ASSERT_EQ(vm_add_irqfd(vm_, &e, 10, &resample), 0);
    EXPECT_FALSE(IoapicIrr(vm_, 10));
    ASSERT_EQ(event_notifier_set(&e), 0);
    EXPECT_TRUE(wait_for([&] { return IoapicIrr(vm_, 10); }))
        << "a resampling irqfd must keep GSI 10 asserted until the EOI";
    EXPECT_FALSE(event_notifier_test_and_clear(&resample)); // no EOI yet
    EXPECT_EQ(vm_del_irqfd(vm_, &e, 10), 0);
    event_notifier_cleanup(&e);
    event_notifier_cleanup(&resample);
}

TEST_F(VmTest, IrqfdNeedsIrqchip)
{
    create(1, 16 << 20, /*no_irqchip=*/true);
    EventNotifier e;
    ASSERT_EQ(event_notifier_init(&e, false), 0);
    EXPECT_EQ(vm_add_irqfd(vm_, &e, 5, nullptr), -ENOTSUP);
    EXPECT_EQ(vm_add_msi_route(vm_, 0xfee00000, 0x4030), -ENOTSUP);
    event_notifier_cleanup(&e);
}
