/*
 * The test guests (build/guest/<name>.elf) boot under QEMU/KVM and behave as
 * docs/guest.md says: command line, exit status (code << 1) | 1, RESULT
 * line.  Needs qemu-system-x86_64 and /dev/kvm; fails when they are absent.
 */
#include <gtest/gtest.h>

#include <unistd.h>

#include <regex>

#include "qemu-run.h"

namespace {

constexpr int kTimeoutS = 60;

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

TEST_F(GuestQemu, HelloExitZero)
{
    QemuRun r = boot(hello_, "exit=0");
    EXPECT_EQ(r.exit_status, 1) << r.output;
    EXPECT_TRUE(r.has_line("HELLO cmdline=\"exit=0\"")) << r.output;
    EXPECT_TRUE(r.has_line("HELLO cpu=0 ok")) << r.output;
    EXPECT_TRUE(r.has_line("HELLO cpus=1")) << r.output;
}

TEST_F(GuestQemu, HelloExitFiveWithOtherKeys)
{
    QemuRun r = boot(hello_, "exit=5 foo=bar");
    EXPECT_EQ(r.exit_status, (5 << 1) | 1) << r.output;
    EXPECT_TRUE(r.has_line("HELLO cmdline=\"exit=5 foo=bar\"")) << r.output;
    EXPECT_TRUE(r.has_line("HELLO cpus=1")) << r.output;
}

// QEMU never starts the APs of a multiboot guest (they wait for a SIPI),
// and it does not pass "SHVM" in EDX: the guest must run on the BSP alone.
TEST_F(GuestQemu, HelloSmpOnQemuRunsOnBspOnly)
{
    QemuRun r = boot(hello_, "exit=2", { "-smp", "2" });
    EXPECT_EQ(r.exit_status, (2 << 1) | 1) << r.output;
    EXPECT_TRUE(r.has_line("HELLO cpus=1")) << r.output;
    EXPECT_FALSE(r.has_line("HELLO cpu=1 ok")) << r.output;
}

TEST_F(GuestQemu, PioOutReportsResult)
{
    QemuRun r = boot(pio_, "port=0x80 count=1000 op=out size=4");
    EXPECT_EQ(r.exit_status, 1) << r.output;
    std::string line = r.line_starting("RESULT ");
    std::smatch m;
    std::regex re("RESULT mode=pio count=(\\d+) ns_per_op=(\\d+) total_ns=(\\d+) "
                  "cpus=1 op=out size=4 port=0x80 checksum=(\\d+)");
    ASSERT_TRUE(std::regex_match(line, m, re)) << "line: '" << line << "'\n" << r.output;
    EXPECT_EQ(m[1], "1000");
    EXPECT_GT(std::stoull(m[2]), 0u);
    EXPECT_GT(std::stoull(m[3]), 0u);
    // Values written are the iteration numbers 0..999.
    EXPECT_EQ(m[4], "499500");
}

TEST_F(GuestQemu, PioRejectsBadOp)
{
    QemuRun r = boot(pio_, "op=sideways count=10");
    EXPECT_EQ(r.exit_status, (2 << 1) | 1) << r.output;
    EXPECT_EQ(r.line_starting("RESULT "), "") << r.output;
}

}  // namespace
