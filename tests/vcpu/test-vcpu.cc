// The KVM core with tiny hand-assembled guests: VM life cycle, memory,
// PIO/MMIO dispatch, HLT, kicks, pause/resume, errors, several vCPUs.
#include "../common/thread-names.h"
#include "vcpu-fixture.h"

#include <dirent.h>
#include <sys/ioctl.h>
#include <cstring>
#include <algorithm>
#include <memory>
#include <string>

static int count_fds()
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    while (d && readdir(d)) {
        n++;
    }
    if (d) {
        closedir(d);
    }
    return n;
}

TEST_F(VmTest, CreateFree)
{
    create(2);
    EXPECT_EQ(vm_get_nr_vcpus(vm_), 2);
    EXPECT_GE(vm_get_fd(vm_), 0);
    EXPECT_EQ(vcpu_get_index(vm_get_vcpu(vm_, 1)), 1);
    EXPECT_EQ(vm_get_vcpu(vm_, 2), nullptr);
    EXPECT_EQ(vm_get_ram_size(vm_), 16u << 20);
}

TEST_F(VmTest, BadConfigFails)
{
    VMConfig cfg = {};
    cfg.ram_size = 4095;
    cfg.nr_vcpus = 1;
    GError *err = nullptr;
    EXPECT_EQ(vm_new(&cfg, &err), nullptr);
    ASSERT_NE(err, nullptr);
    EXPECT_EQ(err->code, EINVAL);
    g_error_free(err);
}

TEST_F(VmTest, TwentyCyclesLeakNoFd)
{
    int before = count_fds();
    for (int i = 0; i < 20; i++) {
        create(2);
        load(GuestCode().out8(kEndPort).hlt());
        start();
        ASSERT_TRUE(wait_end(2));
        vm_free(vm_);
        vm_ = nullptr;
    }
    EXPECT_EQ(count_fds(), before);
}

TEST_F(VmTest, GuestWritesRam)
{
    create();
    // mov $0xcafef00d,%eax; mov %eax,0x2000; mov 0x3000,%eax;
    // mov %eax,0x2004; out %al,$end; hlt
    uint32_t pattern = 0x12345678;
    ASSERT_EQ(vm_memory_write(vm_, 0x3000, &pattern, 4), 0);
    load(GuestCode().mov_eax(0xcafef00d).store32(0x2000).load32(0x3000)
             .store32(0x2004).out8(kEndPort).hlt());
    start();
    ASSERT_TRUE(wait_end());
    uint32_t got[2];
    ASSERT_EQ(vm_memory_read(vm_, 0x2000, got, sizeof(got)), 0);
    EXPECT_EQ(got[0], 0xcafef00du);
    EXPECT_EQ(got[1], pattern);
    EXPECT_EQ(vm_memory_read(vm_, (16 << 20) - 2, got, 4), -EFAULT);
}

TEST_F(VmTest, RamSplitAroundPciHole)
{
    // 3.5 GiB: 3 GiB below the hole, 512 MiB at 4 GiB.  memfd +
    // MAP_NORESERVE: nothing is allocated until touched.
    create(1, 3584ull << 20);
    EXPECT_NE(vm_gpa_to_hva(vm_, 0, 4096), nullptr);
    EXPECT_NE(vm_gpa_to_hva(vm_, 0xbffff000, 4096), nullptr);
    EXPECT_EQ(vm_gpa_to_hva(vm_, 0xbffff000, 8192), nullptr);
    EXPECT_EQ(vm_gpa_to_hva(vm_, 0xc0000000, 1), nullptr);
    EXPECT_EQ(vm_gpa_to_hva(vm_, 0xfeffd000, 1), nullptr);
    uint8_t *hi = (uint8_t *)vm_gpa_to_hva(vm_, 4ull << 30, 4096);
    ASSERT_NE(hi, nullptr);
    EXPECT_EQ(hi, (uint8_t *)vm_gpa_to_hva(vm_, 0, 1) + (3ull << 30));
    EXPECT_NE(vm_gpa_to_hva(vm_, (4ull << 30) + (512 << 20) - 4096, 4096), nullptr);
    EXPECT_EQ(vm_gpa_to_hva(vm_, (4ull << 30) + (512 << 20), 1), nullptr);
    hi[0] = 0x5a;
    uint8_t v = 0;
    ASSERT_EQ(vm_memory_read(vm_, 4ull << 30, &v, 1), 0);
    EXPECT_EQ(v, 0x5a);
}

TEST_F(VmTest, PioWriteAndReadDispatch)
{
    create();
    Recorder dev;
    dev.read_value = 0xa1b2c3d4;
    ASSERT_NE(address_space_add(vm_get_pio_space(vm_), "dev", 0x70, 8,
                                &Recorder::ops, &dev, 0, nullptr), nullptr);
    // Writes of 1, 2, 4 bytes at offsets 1, 2, 4; then reads; each read
    // value is written back to the end port so the test can see it.
    load(GuestCode()
             .mov_eax(0x11223344).out8(0x71).out16(0x72).out32(0x74)
             .in8(0x70).out32(kEndPort)
             .in16(0x72).out32(kEndPort)
             .in32(0x74).out32(kEndPort)
             .hlt());
    start();
    ASSERT_TRUE(wait_end(3));
    std::lock_guard<std::mutex> g(dev.mu);
    ASSERT_EQ(dev.log.size(), 3u);
    EXPECT_EQ(dev.log[0], 1ull << 48 | 1ull << 40 | 0x44);
    EXPECT_EQ(dev.log[1], 2ull << 48 | 2ull << 40 | 0x3344);
    EXPECT_EQ(dev.log[2], 4ull << 48 | 4ull << 40 | 0x11223344);
    EXPECT_EQ(dev.reads.load(), 3u);
    std::lock_guard<std::mutex> g2(end_.mu);
    ASSERT_EQ(end_.log.size(), 3u);
    // The end region is 4 ports wide, so out32(kEndPort) hands it the
    // full eax.
    EXPECT_EQ(end_.log[0] & 0xffffffff, 0x112233d4u); // in %al kept eax's top
    EXPECT_EQ(end_.log[1] & 0xffffffff, 0x1122c3d4u);
    EXPECT_EQ(end_.log[2] & 0xffffffff, 0xa1b2c3d4u);
    EXPECT_EQ(dev.last_offset.load(), 4u);
    EXPECT_EQ(dev.last_size.load(), 4u);
}

TEST_F(VmTest, MmioDispatch)
{
    create();
    Recorder dev;
    dev.read_value = 0x55667788;
    const uint64_t base = 0xd0000000;
    ASSERT_NE(address_space_add(vm_get_mmio_space(vm_), "mmio", base, 0x1000,
                                &Recorder::ops, &dev, 0, nullptr), nullptr);
    load(GuestCode()
             .mov_eax(0xdeadbeef).store32(base + 0x10)
             .store8(base + 0x21)
             .load32(base + 0x40).out32(kEndPort)
             .hlt());
    start();
    ASSERT_TRUE(wait_end());
    std::lock_guard<std::mutex> g(dev.mu);
    ASSERT_EQ(dev.log.size(), 2u);
    EXPECT_EQ(dev.log[0], 0x10ull << 48 | 4ull << 40 | 0xdeadbeef);
    EXPECT_EQ(dev.log[1], 0x21ull << 48 | 1ull << 40 | 0xef);
    EXPECT_EQ(dev.reads.load(), 1u);
    EXPECT_EQ(dev.last_offset.load(), 0x40u);
    EXPECT_EQ(end_.last_value.load() & 0xffffffff, 0x55667788u);
    VCPUStats st;
    vcpu_get_stats(vm_get_vcpu(vm_, 0), &st);
    EXPECT_EQ(st.mmio_exits, 3u);
}

TEST_F(VmTest, UnassignedAccessesDoNotCrash)
{
    create();
    // out to a port with no region; in from it (all ones); MMIO read of a
    // hole address (all ones); report both.
    load(GuestCode()
             .mov_eax(0x1234).out32(0x99).mov_eax(0).in32(0x99).out32(kEndPort)
             .mov_eax(0).load32(0xd8000000).out32(kEndPort)
             .mov_eax(7).store32(0xd8000000)
             .out8(kEndPort).hlt());
    start();
    ASSERT_TRUE(wait_end(3));
    std::lock_guard<std::mutex> g(end_.mu);
    EXPECT_EQ(end_.log[0] & 0xffffffff, 0xffffffffu);
    EXPECT_EQ(end_.log[1] & 0xffffffff, 0xffffffffu);
    EXPECT_EQ(address_space_get_unassigned(vm_get_pio_space(vm_)), 2u);
    EXPECT_EQ(address_space_get_unassigned(vm_get_mmio_space(vm_)), 2u);
    EXPECT_EQ(stop_requests_.load(), 0);
}

TEST_F(VmTest, HltWithoutIrqchipSleepsUntilKicked)
{
    create(1, 16 << 20, /*no_irqchip=*/true);
    load(GuestCode().mov_eax(1).out8(kEndPort).hlt()
             .mov_eax(2).out8(kEndPort).hlt().spin());
    start();
    VCPU *cpu = vm_get_vcpu(vm_, 0);
    ASSERT_TRUE(wait_end(1));
    ASSERT_TRUE(wait_for([&] { return vcpu_is_halted(cpu); }));
    VCPUStats a, b;
    vcpu_get_stats(cpu, &a);
    EXPECT_EQ(a.hlt_exits, 1u);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    vcpu_get_stats(cpu, &b);
    EXPECT_EQ(a.exits, b.exits) << "a halted vCPU must not spin";
    EXPECT_EQ(end_.writes.load(), 1u);

    vcpu_kick(cpu);
    ASSERT_TRUE(wait_end(2));
    EXPECT_EQ(end_.last_value.load(), 2u);
    ASSERT_TRUE(wait_for([&] { return vcpu_is_halted(cpu); }));
    vcpu_get_stats(cpu, &b);
    EXPECT_EQ(b.hlt_exits, 2u);
}

TEST_F(VmTest, HltInKernelDoesNotSpinAndStops)
{
    create();
    load(GuestCode().out8(kEndPort).hlt());
    start();
    ASSERT_TRUE(wait_end());
    VCPU *cpu = vm_get_vcpu(vm_, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    VCPUStats a, b;
    vcpu_get_stats(cpu, &a);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    vcpu_get_stats(cpu, &b);
    EXPECT_EQ(a.exits, b.exits) << "HLT with IF=0 sleeps inside KVM_RUN";
    // vm_free (TearDown) must get the thread out of the in-kernel HLT.
}

TEST_F(VmTest, KickSpinningVcpuThousandTimes)
{
    create();
    load(GuestCode().out8(kEndPort).spin());
    start();
    ASSERT_TRUE(wait_end());
    VCPU *cpu = vm_get_vcpu(vm_, 0);
    for (uint64_t i = 1; i <= 1000; i++) {
        vcpu_kick(cpu);
        ASSERT_TRUE(wait_for([&] {
            VCPUStats st;
            vcpu_get_stats(cpu, &st);
            return st.kicks_seen >= i;
        }, 10.0)) << "kick " << i << " was lost";
    }
    VCPUStats st;
    vcpu_get_stats(cpu, &st);
    EXPECT_GE(st.intr_exits, 1u);
    EXPECT_EQ(st.error_exits, 0u);
}

TEST_F(VmTest, PauseResume)
{
    create(2);
    Counter c;
    ASSERT_NE(address_space_add(vm_get_pio_space(vm_), "ctr", 0x70, 1,
                                &Counter::ops, &c, 0, nullptr), nullptr);
    size_t top = 0;
    load(GuestCode().out8(0x70).jmp_to(top));
    start();
    ASSERT_TRUE(wait_for([&] { return c.writes.load() > 100; }));
    for (int round = 0; round < 5; round++) {
        vm_pause(vm_);
        EXPECT_TRUE(vm_is_paused(vm_));
        uint64_t frozen = c.writes.load();
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
        EXPECT_EQ(c.writes.load(), frozen) << "a paused VM ran guest code";
        // Registers can be read while paused.
        struct kvm_regs regs;
        EXPECT_EQ(vcpu_get_regs(vm_get_vcpu(vm_, 1), &regs), 0);
        EXPECT_GE(regs.rip, kCodeAddr);
        vm_resume(vm_);
        EXPECT_FALSE(vm_is_paused(vm_));
        ASSERT_TRUE(wait_for([&] { return c.writes.load() > frozen + 50; }));
    }
    // The guest loops forever on port 0x70: stop the vCPUs before the
    // Counter on this stack frame goes away (TearDown comes too late).
    vm_stop(vm_);
}

TEST_F(VmTest, PauseWithBqlHeldWhileVcpuNeedsIt)
{
    create();
    Recorder dev;
    bql_lock();
    ASSERT_NE(address_space_add(vm_get_pio_space(vm_), "bqldev", 0x70, 1,
                                &Recorder::ops, &dev, IO_REGION_NEEDS_BQL,
                                nullptr), nullptr);
    size_t top = 0;
    load(GuestCode().out8(0x70).jmp_to(top));
    start();
    // The vCPU blocks on the BQL in its first exit; vm_pause() must drop
    // the BQL while waiting or it would deadlock.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    vm_pause(vm_);
    EXPECT_TRUE(bql_locked());
    bql_unlock();
    EXPECT_GE(dev.writes.load(), 1u);
    EXPECT_TRUE(dev.bql_seen.load());
    EXPECT_FALSE(dev.bql_missing.load());
    vm_resume(vm_);
    bql_lock();
    vm_stop(vm_);   // with the BQL held too
    EXPECT_TRUE(bql_locked());
    bql_unlock();
}

TEST_F(VmTest, TripleFaultReportsAndRequestsStop)
{
    create();
    // No IDT: #UD -> #GP -> #DF -> triple fault.
    load(GuestCode().out8(kEndPort).ud2());
    start();
    ASSERT_TRUE(wait_for([&] { return stop_requests_.load() > 0; }));
    EXPECT_EQ(stop_reason_.load(), VM_STOP_GUEST_SHUTDOWN);
    VCPU *cpu = vm_get_vcpu(vm_, 0);
    ASSERT_TRUE(wait_for([&] { return vcpu_is_halted(cpu); }));
    VCPUStats st;
    vcpu_get_stats(cpu, &st);
    EXPECT_EQ(st.error_exits, 1u);
    // Pausing and stopping a VM with a parked vCPU works.
    vm_pause(vm_);
    vm_resume(vm_);
}

TEST_F(VmTest, TwoVcpusRunTheSameEntry)
{
    create(2);
    // Each vCPU writes its index (EBX) to the end port.
    load(GuestCode().mov_eax_ebx().out32(kEndPort).hlt());
    start();
    ASSERT_TRUE(wait_end(2));
    std::lock_guard<std::mutex> g(end_.mu);
    ASSERT_EQ(end_.log.size(), 2u);
    uint64_t seen = 0;
    for (uint64_t v : end_.log) {
        seen |= 1ull << (v & 0xff);
    }
    EXPECT_EQ(seen, 3u);
}

TEST_F(VmTest, CpuidHasKvmLeavesAndApicIds)
{
    create(2);
    for (int i = 0; i < 2; i++) {
        VCPU *cpu = vm_get_vcpu(vm_, i);
        // Linux's __DECLARE_FLEX_ARRAY puts an empty struct (1 byte in
        // C++) before kvm_cpuid2::entries: use a C-layout mirror.
        struct Cpuid {
            uint32_t nent, padding;
            kvm_cpuid_entry2 entries[256];
        };
        auto c = std::make_unique<Cpuid>();
        c->nent = 256;
        ASSERT_EQ(ioctl(vcpu_get_fd(cpu),
                        _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x91, 8), c.get()),
                  0) << strerror(errno);
        bool sig = false, leaf1 = false;
        for (uint32_t j = 0; j < c->nent; j++) {
            auto &e = c->entries[j];
            if (e.function == 0x40000000) {
                char s[13] = {};
                memcpy(s, &e.ebx, 4);
                memcpy(s + 4, &e.ecx, 4);
                memcpy(s + 8, &e.edx, 4);
                EXPECT_STREQ(s, "KVMKVMKVM");
                sig = true;
            }
            if (e.function == 1) {
                EXPECT_EQ(e.ebx >> 24, (uint32_t)i);
                leaf1 = true;
            }
            if (e.function == 0x40000010) {
                EXPECT_GT(e.eax, 0u);
            }
        }
        EXPECT_TRUE(sig);
        EXPECT_TRUE(leaf1);
    }
}

TEST_F(VmTest, KickVcpuHaltedInKernel)
{
    create();
    load(GuestCode().out8(kEndPort).hlt().spin());
    start();
    ASSERT_TRUE(wait_end());
    VCPU *cpu = vm_get_vcpu(vm_, 0);
    for (uint64_t i = 1; i <= 100; i++) {
        vcpu_kick(cpu);
        ASSERT_TRUE(wait_for([&] {
            VCPUStats st;
            vcpu_get_stats(cpu, &st);
            return st.kicks_seen >= i;
        }, 10.0)) << "kick " << i << " was lost";
    }
}

static std::vector<std::string> thread_names()
{
    return test_thread_names();
}

TEST_F(VmTest, VcpuThreadsAreNamedAndJoined)
{
    create(2);
    load(GuestCode().out8(kEndPort).hlt());
    start();
    ASSERT_TRUE(wait_end(2));
    auto names = thread_names();
    EXPECT_EQ(std::count(names.begin(), names.end(), "CPU 0/KVM"), 1);
    EXPECT_EQ(std::count(names.begin(), names.end(), "CPU 1/KVM"), 1);
    vm_stop(vm_);
    vm_stop(vm_); // idempotent
    names = thread_names();
    EXPECT_EQ(std::count(names.begin(), names.end(), "CPU 0/KVM"), 0);
    EXPECT_EQ(std::count(names.begin(), names.end(), "CPU 1/KVM"), 0);
}

// On this platform CPL0 code is emulated and KVM's emulator does not know
// rdrand: KVM_EXIT_INTERNAL_ERROR (emulation failure).  Where CPL0 runs
// natively the guest simply continues; either way the VMM must not crash.
TEST_F(VmTest, EmulationFailureReportsInternalError)
{
    create();
    GuestCode c;
    c.out8(kEndPort);
    c.b.insert(c.b.end(), { 0x0f, 0xc7, 0xf0 }); // rdrand %eax
    c.out8(kEndPort).hlt();
    load(c);
    start();
    ASSERT_TRUE(wait_for([&] {
        return stop_requests_.load() > 0 || end_.writes.load() >= 2;
    }));
    if (stop_requests_.load() == 0) {
        GTEST_SKIP() << "rdrand ran natively on this host: no emulation "
                        "failure to observe";
    }
    EXPECT_EQ(stop_reason_.load(), VM_STOP_INTERNAL_ERROR);
    VCPU *cpu = vm_get_vcpu(vm_, 0);
    ASSERT_TRUE(wait_for([&] { return vcpu_is_halted(cpu); }));
    VCPUStats st;
    vcpu_get_stats(cpu, &st);
    EXPECT_EQ(st.error_exits, 1u);
    EXPECT_EQ(end_.writes.load(), 1u);
}

// rep outsb / rep insb: KVM hands several items over in one exit.
TEST_F(VmTest, StringIo)
{
    create();
    Recorder dev;
    dev.read_value = 0x5a;
    ASSERT_NE(address_space_add(vm_get_pio_space(vm_), "dev", 0x70, 1,
                                &Recorder::ops, &dev, 0, nullptr), nullptr);
    const char msg[] = "hello, string";
    ASSERT_EQ(vm_memory_write(vm_, 0x3000, msg, sizeof(msg) - 1), 0);
    GuestCode c;
    auto raw = [&](std::initializer_list<uint8_t> b) { c.b.insert(c.b.end(), b); };
    raw({ 0xbe, 0x00, 0x30, 0, 0 });                   // mov $0x3000,%esi
    c.mov_ecx(sizeof(msg) - 1);
    raw({ 0x66, 0xba, 0x70, 0x00 });                   // mov $0x70,%dx
    raw({ 0xf3, 0x6e });                               // rep outsb
    raw({ 0xbf, 0x00, 0x40, 0, 0 });                   // mov $0x4000,%edi
    c.mov_ecx(8);
    raw({ 0xf3, 0x6c });                               // rep insb
    c.out8(kEndPort).hlt();
    load(c);
    start();
    ASSERT_TRUE(wait_end());
    std::lock_guard<std::mutex> g(dev.mu);
    ASSERT_EQ(dev.log.size(), sizeof(msg) - 1);
    for (size_t i = 0; i < sizeof(msg) - 1; i++) {
        EXPECT_EQ(dev.log[i], 1ull << 40 | (uint8_t)msg[i]) << i;
    }
    EXPECT_EQ(dev.reads.load(), 8u);
    uint8_t in[9] = {};
    ASSERT_EQ(vm_memory_read(vm_, 0x4000, in, sizeof(in)), 0);
    for (int i = 0; i < 8; i++) {
        EXPECT_EQ(in[i], 0x5a) << i;
    }
    EXPECT_EQ(in[8], 0);
}

// vm_pause()/vm_stop() from a vCPU thread would wait for that vCPU itself:
// they complain (g_critical) and return instead of deadlocking.
struct SelfPause {
    VM *vm = nullptr;
    std::atomic<int> calls{0};
    static void write_cb(void *opaque, uint64_t, uint64_t, unsigned)
    {
        auto *s = static_cast<SelfPause *>(opaque);
        vm_pause(s->vm);
        vm_stop(s->vm);
        s->calls++;
    }
    static inline const IORegionOps ops = { nullptr, write_cb };
};

static std::atomic<int> criticals{0};

static void count_critical(const gchar *, GLogLevelFlags, const gchar *,
                           gpointer)
{
    criticals++;
}

TEST_F(VmTest, PauseFromVcpuThreadIsRefused)
{
    create();
    SelfPause sp;
    sp.vm = vm_;
    ASSERT_NE(address_space_add(vm_get_pio_space(vm_), "self", 0x70, 1,
                                &SelfPause::ops, &sp, 0, nullptr), nullptr);
    // The suite runs with G_DEBUG=fatal-criticals: expect these two.
    GLogLevelFlags old = g_log_set_always_fatal((GLogLevelFlags)G_LOG_FATAL_MASK);
    guint id = g_log_set_handler(nullptr, G_LOG_LEVEL_CRITICAL, count_critical,
                                 nullptr);
    load(GuestCode().out8(0x70).out8(kEndPort).hlt());
    start();
    bool ended = wait_end();
    g_log_remove_handler(nullptr, id);
    g_log_set_always_fatal(old);
    ASSERT_TRUE(ended);
    EXPECT_EQ(sp.calls.load(), 1);
    EXPECT_EQ(criticals.load(), 2);
}
