// isa-debug-exit on a free-standing port address space (no KVM): the
// status QEMU would exit with, first write wins, reads are all ones.
#include <gtest/gtest.h>

#include <vector>

#include "shardvm/debug-exit.h"
#include "shardvm/rcu.h"
#include "shardvm/vm.h"

#include <string>

namespace {

class DebugExitTest : public ::testing::Test {
protected:
    void SetUp() override
    {
        shardvm_rcu_init(); // registers this thread; idempotent
        pio_ = address_space_new("pio", ADDRESS_SPACE_PIO);
    }
    void TearDown() override
    {
        debug_exit_free(dev_);
        address_space_free(pio_);
        shardvm_rcu_drain();
    }
    static void Exit(void *opaque, unsigned status)
    {
        static_cast<DebugExitTest *>(opaque)->calls_.push_back(status);
    }
    void Create(uint16_t base = 0xf4, uint16_t size = 4)
    {
        GError *err = nullptr;
        dev_ = debug_exit_new(pio_, base, size, Exit, this, &err);
        ASSERT_NE(dev_, nullptr) << (err ? err->message : "");
    }

    AddressSpace *pio_ = nullptr;
    DebugExit *dev_ = nullptr;
    std::vector<unsigned> calls_;
};

TEST_F(DebugExitTest, StatusIsValueShiftedOrOne)
{
    Create();
    unsigned st = 1234;
    EXPECT_FALSE(debug_exit_get_status(dev_, &st));
    EXPECT_TRUE(address_space_write(pio_, 0xf4, 4, 5));
    ASSERT_EQ(calls_, std::vector<unsigned>{ 11 });
    ASSERT_TRUE(debug_exit_get_status(dev_, &st));
    EXPECT_EQ(st, 11u);
}

// QEMU: exit((v << 1) | 1), of which the OS keeps 8 bits.  Bits 30 and 31
// must not turn a failing guest into status 0 or "not written".
TEST_F(DebugExitTest, HighBitsGiveQemusTruncatedStatus)
{
    EXPECT_EQ(debug_exit_status_of(0xffffffffu), 255u);
    EXPECT_EQ(debug_exit_status_of(0x40000000u), 1u);
    EXPECT_EQ(debug_exit_status_of(0x80000000u), 1u);
    EXPECT_EQ(debug_exit_status_of(0x7fu), 255u);
    EXPECT_EQ(debug_exit_status_of(0x80u), 1u);
    Create();
    unsigned st = 0;
    EXPECT_TRUE(address_space_write(pio_, 0xf4, 4, 0xffffffffu));
    ASSERT_EQ(calls_, std::vector<unsigned>{ 255 });
    ASSERT_TRUE(debug_exit_get_status(dev_, &st));
    EXPECT_EQ(st, 255u);
}

TEST_F(DebugExitTest, Bit30WriteIsRecordedAndLaterWritesIgnored)
{
    Create();
    unsigned st = 0;
    EXPECT_TRUE(address_space_write(pio_, 0xf4, 4, 0x40000000u));
    EXPECT_TRUE(address_space_write(pio_, 0xf4, 4, 3));
    ASSERT_EQ(calls_, std::vector<unsigned>{ 1 });
    ASSERT_TRUE(debug_exit_get_status(dev_, &st));
    EXPECT_EQ(st, 1u);
}

TEST_F(DebugExitTest, FirstWriteWins)
{
    Create();
    address_space_write(pio_, 0xf4, 1, 0);
    address_space_write(pio_, 0xf5, 1, 3);
    EXPECT_EQ(calls_, std::vector<unsigned>{ 1 });
    unsigned st = 0;
    ASSERT_TRUE(debug_exit_get_status(dev_, &st));
    EXPECT_EQ(st, 1u);
}

TEST_F(DebugExitTest, ReadsAllOnesAndPortsOutsideAreNotTaken)
{
    Create(0x501, 2);
    uint64_t v = 0;
    EXPECT_TRUE(address_space_read(pio_, 0x501, 1, &v));
    EXPECT_EQ(v, 0xffu);
    EXPECT_FALSE(address_space_write(pio_, 0x503, 1, 1));
    EXPECT_TRUE(calls_.empty());
}

TEST_F(DebugExitTest, TakenPortsAreAnError)
{
    Create();
    GError *err = nullptr;
    DebugExit *again = debug_exit_new(pio_, 0xf6, 2, Exit, this, &err);
    EXPECT_EQ(again, nullptr);
    ASSERT_NE(err, nullptr);
    g_error_free(err);
}

// Issue 8 point 8: the in-kernel PIC, PIT, speaker port and ELCR answer
// their ports inside KVM, so a debug-exit there could never fire: refused
// with a message naming the owner.  (No KVM needed: the reservation is a
// plain port-space call that vm_new() makes.)
TEST_F(DebugExitTest, InKernelDevicePortsAreRefused)
{
    GError *err = nullptr;
    ASSERT_EQ(vm_reserve_in_kernel_ports(pio_, &err), 0);
    const struct { uint16_t base, size; const char *owner; } taken[] = {
        { 0x20, 1, "PIC (master)" }, { 0x1e, 4, "PIC (master)" },
        { 0x21, 1, "PIC (master)" }, { 0xa0, 2, "PIC (slave)" },
        { 0x40, 4, "PIT" },          { 0x43, 1, "PIT" },
        { 0x61, 1, "PIT speaker" },  { 0x60, 2, "PIT speaker" },
        { 0x4d0, 2, "ELCR" },        { 0x4cf, 4, "ELCR" },
    };
    for (const auto &t : taken) {
        err = nullptr;
        DebugExit *d = debug_exit_new(pio_, t.base, t.size, Exit, this, &err);
        EXPECT_EQ(d, nullptr) << std::hex << t.base;
        ASSERT_NE(err, nullptr) << std::hex << t.base;
        EXPECT_NE(std::string(err->message).find(t.owner), std::string::npos)
            << err->message;
        EXPECT_EQ(err->code, EEXIST);
        g_error_free(err);
        debug_exit_free(d);
    }
    Create(0xf4, 4); // the usual place is free
}

} // namespace
