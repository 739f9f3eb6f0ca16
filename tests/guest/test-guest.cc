/*
 * The test guests (build/guest/<name>.elf) boot under QEMU/KVM and behave as
 * docs/guest.md says: command line, exit status (code << 1) | 1, RESULT
 * line.  Needs qemu-system-x86_64 and /dev/kvm; fails when they are absent.
 */
#include <gtest/gtest.h>

#include "../common/need-kvm.h"

#include <unistd.h>

#include <map>
#include <sstream>

#include <errno.h>
#include <string.h>

#include "mini-vmm.h"
#include "qemu-run.h"

namespace {

constexpr int kTimeoutS = 60;

// The key=value words of a RESULT line.
std::map<std::string, std::string> result_keys(const std::string &line)
{
    std::map<std::string, std::string> kv;
    std::istringstream in(line);
    std::string w;

    while (in >> w) {
        size_t eq = w.find('=');
        if (eq != std::string::npos) {
            kv[w.substr(0, eq)] = w.substr(eq + 1);
        }
    }
    return kv;
}

class GuestQemu : public ::testing::Test {
protected:
    void SetUp() override
    {
        std::string why = qemu_missing();
        ASSERT_EQ(why, "") << why;
        hello_ = env_path("SHARDVM_GUEST_HELLO");
        pio_ = env_path("SHARDVM_GUEST_PIO");
        ASSERT_EQ(access(hello_.c_str(), R_OK), 0) << "no guest at '" << hello_ << "'";
        ASSERT_EQ(access(pio_.c_str(), R_OK), 0) << "no guest at '" << pio_ << "'";
    }

    // Boot and fail with QEMU's output on anything but a clean exit.
    QemuRun boot(const std::string &elf, const std::string &append,
                 const std::vector<std::string> &extra = {})
    {
        QemuRun r = qemu_run(elf, append, extra, kTimeoutS);
        EXPECT_TRUE(r.started) << r.error;
        EXPECT_FALSE(r.timed_out) << "QEMU killed after " << kTimeoutS
                                  << " s; output:\n" << r.output;
        return r;
    }

    std::string hello_, pio_;
};

// Also -smp 2: QEMU never starts the APs of a multiboot guest (they wait
// for a SIPI) and does not pass "SHVM" in EDX, so the guest must run on the
// BSP alone.
TEST_F(GuestQemu, HelloExitZeroSmpOnBspOnly)
{
    QemuRun r = boot(hello_, "exit=0", { "-smp", "2" });
    EXPECT_EQ(r.exit_status, 1) << r.output;
    EXPECT_TRUE(r.has_line("HELLO cmdline=\"exit=0\"")) << r.output;
    EXPECT_TRUE(r.has_line("HELLO cpu=0 ok")) << r.output;
    EXPECT_FALSE(r.has_line("HELLO cpu=1 ok")) << r.output;
    EXPECT_TRUE(r.has_line("HELLO cpus=1")) << r.output;
}

TEST_F(GuestQemu, HelloExitFiveWithOtherKeys)
{
    QemuRun r = boot(hello_, "exit=5 foo=bar pci=1");
    EXPECT_EQ(r.exit_status, (5 << 1) | 1) << r.output;
    EXPECT_TRUE(r.has_line("HELLO cmdline=\"exit=5 foo=bar pci=1\"")) << r.output;
    EXPECT_TRUE(r.has_line("HELLO cpus=1")) << r.output;
    // QEMU's pc machine: i440FX host bridge, PIIX3 ISA bridge (multi-function,
    // so its IDE function 1 is found too).
    EXPECT_TRUE(r.has_line("HELLO pci=00:00.0 id=8086:1237")) << r.output;
    EXPECT_TRUE(r.has_line("HELLO pci=00:01.0 id=8086:7000")) << r.output;
    EXPECT_TRUE(r.has_line("HELLO pci=00:01.1 id=8086:7010")) << r.output;
}

TEST_F(GuestQemu, PioOutReportsResult)
{
    QemuRun r = boot(pio_, "port=0x80 count=1000 op=out size=4");
    EXPECT_EQ(r.exit_status, 1) << r.output;
    std::string line = r.line_starting("RESULT ");
    ASSERT_EQ(line.rfind("RESULT mode=pio count=1000 ns_per_op=", 0), 0u) << r.output;
    auto kv = result_keys(line);
    EXPECT_EQ(kv["cpus"], "1");
    EXPECT_EQ(kv["op"], "out");
    EXPECT_EQ(kv["size"], "4");
    EXPECT_EQ(kv["port"], "0x80");
    EXPECT_GT(std::stoull(kv["ns_per_op"]), 0u);
    EXPECT_GT(std::stoull(kv["total_ns"]), 0u);
    // Values written are the iteration numbers 0..999.
    EXPECT_EQ(kv["checksum"], "499500");
}


}  // namespace

// The shardvm SMP start protocol, driven by the reference loader in
// mini-vmm.cc (QEMU cannot: it never starts the APs of a multiboot guest).
class GuestProtocol : public ::testing::Test {
protected:
    void SetUp() override
    {
        SHARDVM_REQUIRE_KVM();
        hello_ = env_path("SHARDVM_GUEST_HELLO");
        pio_ = env_path("SHARDVM_GUEST_PIO");
        mmio_ = env_path("SHARDVM_GUEST_MMIO");
        ASSERT_EQ(access(hello_.c_str(), R_OK), 0) << "no guest at '" << hello_ << "'";
        ASSERT_EQ(access(pio_.c_str(), R_OK), 0) << "no guest at '" << pio_ << "'";
        ASSERT_EQ(access(mmio_.c_str(), R_OK), 0) << "no guest at '" << mmio_ << "'";
    }

    std::string hello_, pio_, mmio_;
};

TEST_F(GuestProtocol, HelloOnOneCpu)
{
    MiniVmmRun r = mini_vmm_run(hello_, "exit=3 foo=bar", 1, kTimeoutS);
    ASSERT_TRUE(r.ok) << r.error << "\n" << r.output;
    EXPECT_EQ(r.exit_code, 3u);
    EXPECT_TRUE(r.has_line("HELLO cmdline=\"exit=3 foo=bar\"")) << r.output;
    EXPECT_TRUE(r.has_line("HELLO cpus=1")) << r.output;
    // The loader fills CPUID 0x40000010, so the guest need not calibrate.
    EXPECT_NE(r.line_starting("HELLO tsc_hz=").find("tsc_source=kvm"), std::string::npos)
        << r.output;
}

TEST_F(GuestProtocol, HelloRunsWorkerOnEveryCpu)
{
    for (unsigned n : { 2u, 3u }) {
        MiniVmmRun r = mini_vmm_run(hello_, "exit=0", n, kTimeoutS);
        ASSERT_TRUE(r.ok) << n << " vCPUs: " << r.error << "\n" << r.output;
        EXPECT_EQ(r.exit_code, 0u);
        for (unsigned i = 0; i < n; i++) {
            EXPECT_TRUE(r.has_line("HELLO cpu=" + std::to_string(i) + " ok")) << r.output;
        }
        EXPECT_TRUE(r.has_line("HELLO cpus=" + std::to_string(n))) << r.output;
    }
}

TEST_F(GuestProtocol, PioOnAllCpus)
{
    MiniVmmRun r = mini_vmm_run(pio_, "port=0x510 count=1000 op=out size=2 cpus=all",
                                2, kTimeoutS);
    ASSERT_TRUE(r.ok) << r.error << "\n" << r.output;
    EXPECT_EQ(r.exit_code, 0u);
    EXPECT_EQ(r.outs[0x510], 2000u);
    std::string line = r.line_starting("RESULT ");
    ASSERT_EQ(line.rfind("RESULT mode=pio count=2000 ns_per_op=", 0), 0u) << r.output;
    auto kv = result_keys(line);
    EXPECT_EQ(kv["cpus"], "2");
    EXPECT_EQ(kv["size"], "2");
    EXPECT_EQ(kv["port"], "0x510");
    EXPECT_EQ(kv["checksum"], "999000");
}

TEST_F(GuestProtocol, PioInOnOneCpuOfTwo)
{
    MiniVmmRun r = mini_vmm_run(pio_, "port=0x511 count=500 op=in size=1 cpus=1",
                                2, kTimeoutS);
    ASSERT_TRUE(r.ok) << r.error << "\n" << r.output;
    EXPECT_EQ(r.ins[0x511], 500u);
    EXPECT_NE(r.line_starting("RESULT mode=pio count=500 ").find(" cpus=1 op=in size=1"),
              std::string::npos) << r.output;
}

// Without a debug-exit device guest_exit() parks the vCPU (a CPL3 hlt,
// turned into hlt at CPL0 by the fault handler) instead of faulting.
TEST_F(GuestProtocol, ExitWithoutDeviceParks)
{
    MiniVmmRun r = mini_vmm_run(hello_, "exit=6", 1, kTimeoutS, false);
    EXPECT_TRUE(r.all_halted) << r.error << "\n" << r.output;
    EXPECT_EQ(r.exit_code, 6u);
    EXPECT_TRUE(r.has_line("HELLO cpus=1")) << r.output;
    EXPECT_EQ(r.line_starting("GUEST FAULT"), "") << r.output;
}

TEST_F(GuestProtocol, FaultIsReported)
{
    MiniVmmRun r = mini_vmm_run(hello_, "crash=pf", 1, kTimeoutS);
    ASSERT_TRUE(r.ok) << r.error << "\n" << r.output;
    EXPECT_EQ(r.exit_code, 125u);
    std::string line = r.line_starting("GUEST FAULT ");
    EXPECT_NE(line.find("vector=14 "), std::string::npos) << r.output;
    EXPECT_NE(line.find("cr2=0x500000000 "), std::string::npos) << r.output;
}

TEST_F(GuestProtocol, PioRejectsBadArguments)
{
    for (const char *args : { "op=sideways", "size=3", "cpus=2" }) {
        MiniVmmRun r = mini_vmm_run(pio_, std::string(args) + " count=10", 1, kTimeoutS);
        ASSERT_TRUE(r.ok) << args << ": " << r.error << "\n" << r.output;
        EXPECT_EQ(r.exit_code, 2u) << args;
        EXPECT_NE(r.line_starting("PIO error: "), "") << r.output;
        EXPECT_EQ(r.line_starting("RESULT "), "") << r.output;
    }
}

TEST_F(GuestProtocol, MmioWriteOnAllCpus)
{
    MiniVmmRun r = mini_vmm_run(mmio_, "addr=0xd0000000 count=500 op=write size=4 cpus=all",
                                2, kTimeoutS);
    ASSERT_TRUE(r.ok) << r.error << "\n" << r.output;
    EXPECT_EQ(r.exit_code, 0u);
    EXPECT_EQ(r.mmio_writes[0xd0000000], 1000u);
    std::string line = r.line_starting("RESULT ");
    ASSERT_EQ(line.rfind("RESULT mode=mmio count=1000 ns_per_op=", 0), 0u) << r.output;
    auto kv = result_keys(line);
    EXPECT_EQ(kv["cpus"], "2");
    EXPECT_EQ(kv["op"], "write");
    EXPECT_EQ(kv["addr"], "0xd0000000");
    EXPECT_EQ(kv["checksum"], "249500");   // 2 * (0 + 1 + ... + 499)
}

TEST_F(GuestProtocol, MmioReadOnOneCpu)
{
    MiniVmmRun r = mini_vmm_run(mmio_, "addr=0xfee01000 count=100 op=read size=8 cpus=1",
                                2, kTimeoutS);
    ASSERT_TRUE(r.ok) << r.error << "\n" << r.output;
    EXPECT_EQ(r.mmio_reads[0xfee01000], 100u);
    auto kv = result_keys(r.line_starting("RESULT "));
    EXPECT_EQ(kv["mode"], "mmio");
    EXPECT_EQ(kv["count"], "100");
    EXPECT_EQ(kv["cpus"], "1");
    EXPECT_EQ(kv["size"], "8");
    // 100 reads of all-ones, summed modulo 2^64.
    EXPECT_EQ(kv["checksum"], std::to_string(uint64_t(0) - 100));
}

TEST_F(GuestProtocol, MmioRejectsAddressAbove4G)
{
    MiniVmmRun r = mini_vmm_run(mmio_, "addr=0x100000000 count=1", 1, kTimeoutS);
    ASSERT_TRUE(r.ok) << r.error << "\n" << r.output;
    EXPECT_EQ(r.exit_code, 2u);
    EXPECT_NE(r.line_starting("MMIO error: addr="), "") << r.output;
}

// The same protocol on a VM with KVM's in-kernel irqchip, as shardvm has:
// the APs must be made runnable by the VMM, not by INIT/SIPI.
TEST_F(GuestProtocol, HelloWithInKernelIrqchip)
{
    MiniVmmRun r = mini_vmm_run(hello_, "exit=1", 2, kTimeoutS, true, true);
    ASSERT_TRUE(r.ok) << r.error << "\n" << r.output;
    EXPECT_EQ(r.exit_code, 1u);
    EXPECT_TRUE(r.has_line("HELLO cpu=1 ok")) << r.output;
    EXPECT_TRUE(r.has_line("HELLO cpus=2")) << r.output;
}
