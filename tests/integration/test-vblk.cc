// End-to-end virtio-blk (issue 10 point 6): build/shardvm runs the blk test
// guest (build/guest/blk.elf, docs/guest.md) on every backend and aio mode,
// with devices on IOThreads, queues spread over IOThreads, in the main
// loop, with -smp 2 and moved between IOThreads over QMP while the guest
// verifies; what the guest stamped is checked from the host and by the
// same guest under QEMU.
//
// Needs /dev/kvm (SHARDVM_REQUIRE_KVM(): skipped on a kernel without KVM;
// scripts/kvm-in-tcg provides one, see docs/testing.md).  Every run is
// small (count= of a few blocks): nested in TCG the guest does ~50 IOPS.
//
// Images: $SHARDVM_SCRATCH_DIR (the build dir) for cache=none, because
// O_DIRECT needs a file system that has it (tmpfs has not); $TMPDIR or
// /tmp for the others.
#include "vblk-harness.h"

namespace {

// ---- 1. every backend x aio mode --------------------------------------

struct Backend {
    const char *name;
    const char *drive;   // -drive options after file=...
    bool direct;         // needs O_DIRECT
};

const Backend kFileBackends[] = {
    { "threads", "format=raw,if=none,id=d0,aio=threads", false },
    { "threads_direct", "format=raw,if=none,id=d0,cache=none,aio=threads", true },
    { "native", "format=raw,if=none,id=d0,cache=none,aio=native", true },
    { "io_uring", "format=raw,if=none,id=d0,aio=io_uring", false },
    { "io_uring_direct", "format=raw,if=none,id=d0,cache=none,aio=io_uring", true },
};

void PrintTo(const Backend &b, std::ostream *os) { *os << b.name; }

class VblkFile : public Vblk, public ::testing::WithParamInterface<Backend> {};

// verify (write, read back) through an IOThread; a second boot re-reads
// the stamps with verify-read; the host finds exactly the stamped sectors;
// QEMU's verify-read of the same image passes.
TEST_P(VblkFile, VerifyThenVerifyReadThenHostAndQemu)
{
    const Backend &b = GetParam();
    const unsigned count = 8, seed = 11;
    std::string img = Image(std::string(b.name) + ".img", 1 << 20, b.direct);
    std::vector<std::string> dev = { "-object", "iothread,id=io0",
                                     "-drive", "file=" + img + "," + b.drive,
                                     "-device", "virtio-blk-pci,drive=d0,iothread=io0" };
    QemuRun r = Boot("mode=verify count=" + std::to_string(count) + " qd=4 seed=" +
                     std::to_string(seed), dev);
    auto kv = Result(r.output, "verify");
    EXPECT_EQ(kv["writes"], std::to_string(count));
    EXPECT_EQ(kv["reads"], std::to_string(count));
    EXPECT_EQ(kv["ios"], std::to_string(2 * count));

    // Half-size blocks, twice as many: the same sectors.
    r = Boot("mode=verify-read count=" + std::to_string(2 * count) + " seed=" +
             std::to_string(seed) + " bs=2048", dev);
    kv = Result(r.output, "verify-read");
    EXPECT_EQ(kv["reads"], std::to_string(2 * count));
    EXPECT_EQ(kv["writes"], "0");

    EXPECT_EQ(BadSectors(img, count * 8, seed), 0u);
    QemuVerifyRead(img, count, seed);
}

INSTANTIATE_TEST_SUITE_P(Aio, VblkFile, ::testing::ValuesIn(kFileBackends),
                         [](const auto &info) { return std::string(info.param.name); });

// null-co / null-aio with read-zeroes: random reads complete without
// errors (nothing to verify on a null device).
class VblkNull : public Vblk, public ::testing::WithParamInterface<const char *> {};

TEST_P(VblkNull, RandreadWithReadZeroes)
{
    std::string drv = GetParam();
    QemuRun r = Boot("mode=randread count=16 qd=4",
                     { "-object", "iothread,id=io0", "-blockdev",
                       "driver=" + drv + ",node-name=n0,size=64M,read-zeroes=on",
                       "-device", "virtio-blk-pci,drive=n0,iothread=io0" });
    auto kv = Result(r.output, "randread");
    EXPECT_EQ(kv["reads"], "16");
    EXPECT_EQ(kv["bytes"], std::to_string(16 * 4096));
    EXPECT_NE(LineStarting(r.output, "BLK disk=0 ").find(" capacity=131072 "),
              std::string::npos) << r.output;
}

INSTANTIATE_TEST_SUITE_P(Drivers, VblkNull, ::testing::Values("null-co", "null-aio"),
                         [](const auto &info) {
                             std::string n = info.param;
                             std::replace(n.begin(), n.end(), '-', '_');
                             return n;
                         });

// ---- 2-5. IOThread layouts ---------------------------------------------

// Two devices, each on its own IOThread: disk=0 and disk=1 runs each stamp
// only their own image (with their own seed).
TEST_F(Vblk, TwoDevicesOnTwoIOThreads)
{
    std::string a = Image("a.img", 1 << 20), b = Image("b.img", 512 << 10);
    std::vector<std::string> dev = {
        "-object", "iothread,id=io0", "-object", "iothread,id=io1",
        "-drive", "file=" + a + ",format=raw,if=none,id=d0",
        "-device", "virtio-blk-pci,drive=d0,iothread=io0",
        "-drive", "file=" + b + ",format=raw,if=none,id=d1",
        "-device", "virtio-blk-pci,drive=d1,iothread=io1" };
    QemuRun r = Boot("mode=verify count=8 qd=2 disk=0 seed=21", dev);
    EXPECT_EQ(Result(r.output, "verify")["disk"], "0");
    EXPECT_EQ(BadSectors(a, 64, 21), 0u);
    EXPECT_EQ(BadSectors(b, 0, 0), 0u);
    r = Boot("mode=verify count=4 qd=2 disk=1 seed=22", dev);
    EXPECT_EQ(Result(r.output, "verify")["disk"], "1");
    EXPECT_NE(LineStarting(r.output, "BLK disk=1 ").find(" capacity=1024 "),
              std::string::npos) << r.output;
    EXPECT_EQ(BadSectors(a, 64, 21), 0u);
    EXPECT_EQ(BadSectors(b, 32, 22), 0u);
}

// One device, 4 queues over 2 IOThreads (iothread-vq-mapping, JSON
// -device): QMP shows queues 0,2 on io0 and 1,3 on io1 (QEMU's round
// robin); the guest drives all 4 queues (-smp 4) and verifies.
TEST_F(Vblk, FourQueuesOverTwoIOThreads)
{
    std::string img = Image("mq.img", 1 << 20), sock = Path("qmp.sock");
    Vm vm;
    ASSERT_TRUE(vm.Start(Args("mode=verify count=16 qd=2 queues=4 seed=31",
                              { "-S", "-smp", "4", "-qmp", "unix:" + sock + ",server=on,wait=off",
                                "-object", "iothread,id=io0", "-object", "iothread,id=io1",
                                "-drive", "file=" + img + ",format=raw,if=none,id=d0",
                                "-device",
                                "{\"driver\":\"virtio-blk-pci\",\"drive\":\"d0\","
                                "\"num-queues\":4,\"iothread-vq-mapping\":"
                                "[{\"iothread\":\"io0\"},{\"iothread\":\"io1\"}]}" },
                              true)));
    ASSERT_TRUE(vm.QmpConnect(sock, 120)) << vm.output();
    EXPECT_EQ(QueueOwners(vm.Qmp("{\"execute\":\"x-query-virtqueues\"}")),
              "0:io0 1:io1 2:io0 3:io1");
    ASSERT_NE(vm.Qmp("{\"execute\":\"cont\"}").find("\"return\""), std::string::npos);
    ASSERT_TRUE(vm.WaitLine("RESULT ", kBootTimeoutS)) << vm.output();
    auto kv = Result(vm.output(), "verify");
    EXPECT_EQ(kv["queues"], "4");
    EXPECT_EQ(kv["writes"], "16");
    EXPECT_NE(LineStarting(vm.output(), "BLK disk=0 ").find(" num_queues=4 "),
              std::string::npos) << vm.output();
    // Counted by the block layer over all queues.
    std::string st = vm.Qmp("{\"execute\":\"query-blockstats\"}");
    EXPECT_EQ(JsonInt(st, "wr_operations"), 16) << st;
    EXPECT_EQ(JsonInt(st, "rd_operations"), 16) << st;
    vm.Qmp("{\"execute\":\"quit\"}");
    EXPECT_EQ(vm.Finish(60), 0) << vm.output();
    EXPECT_EQ(BadSectors(img, 128, 31), 0u);
}

// Without iothread= the device runs in the main loop (under the BQL).
TEST_F(Vblk, DeviceWithoutIOThread)
{
    std::string img = Image("main.img", 1 << 20), sock = Path("qmp.sock");
    Vm vm;
    ASSERT_TRUE(vm.Start(Args("mode=verify count=8 qd=4 seed=41",
                              { "-S", "-qmp", "unix:" + sock + ",server=on,wait=off",
                                "-drive", "file=" + img + ",format=raw,if=none,id=d0",
                                "-device", "virtio-blk-pci,drive=d0" },
                              true)));
    ASSERT_TRUE(vm.QmpConnect(sock, 120)) << vm.output();
    EXPECT_EQ(QueueOwners(vm.Qmp("{\"execute\":\"x-query-virtqueues\"}")), "0:-");
    ASSERT_NE(vm.Qmp("{\"execute\":\"cont\"}").find("\"return\""), std::string::npos);
    ASSERT_TRUE(vm.WaitLine("RESULT ", kBootTimeoutS)) << vm.output();
    auto kv = Result(vm.output(), "verify");
    EXPECT_EQ(kv["writes"], "8");
    vm.Qmp("{\"execute\":\"quit\"}");
    EXPECT_EQ(vm.Finish(60), 0) << vm.output();
    EXPECT_EQ(BadSectors(img, 64, 41), 0u);
}

// -smp 2 without num-queues: the device offers 2 queues (QEMU >= 5.2's
// default) and the guest drives one per vCPU.
TEST_F(Vblk, SmpTwoGivesTwoQueues)
{
    std::string img = Image("smp.img", 1 << 20);
    QemuRun r = Boot("mode=verify count=8 qd=2 seed=51",
                     { "-smp", "2", "-object", "iothread,id=io0",
                       "-drive", "file=" + img + ",format=raw,if=none,id=d0",
                       "-device", "virtio-blk-pci,drive=d0,iothread=io0" });
    EXPECT_NE(LineStarting(r.output, "BLK disk=0 ").find(" num_queues=2 "),
              std::string::npos) << r.output;
    auto kv = Result(r.output, "verify");
    EXPECT_EQ(kv["queues"], "2");
    EXPECT_EQ(kv["writes"], "8");
    EXPECT_EQ(BadSectors(img, 64, 51), 0u);
}

// ---- 6. x-blockdev-set-iothread during a verify run --------------------

// The disk moves io0 -> io1 -> main loop -> io0 ... while the guest
// writes and reads back (until its RESULT line); no mismatch, no error, and query-blockstats
// counts exactly the guest's requests (the guest parks after RESULT, so
// the counts are final when asked).
TEST_F(Vblk, SetIOThreadBackAndForthDuringVerify)
{
    // 256 blocks at qd=1: 512 requests one after the other, so that the
    // run outlasts a few moves on a fast host too.
    const int count = 256;
    std::string img = Image("move.img", 1 << 20), sock = Path("qmp.sock");
    Vm vm;
    ASSERT_TRUE(vm.Start(Args("mode=verify count=" + std::to_string(count) +
                              " qd=1 seed=61",
                              { "-S", "-qmp", "unix:" + sock + ",server=on,wait=off",
                                "-object", "iothread,id=io0", "-object", "iothread,id=io1",
                                "-drive", "file=" + img + ",format=raw,if=none,id=d0",
                                "-device", "virtio-blk-pci,drive=d0,iothread=io0" },
                              true)));
    ASSERT_TRUE(vm.QmpConnect(sock, 120)) << vm.output();
    ASSERT_NE(vm.Qmp("{\"execute\":\"cont\"}").find("\"return\""), std::string::npos);
    // The guest's BLK line: the driver is up, requests are about to flow.
    ASSERT_TRUE(vm.WaitLine("BLK disk=0 ", kBootTimeoutS)) << vm.output();
    const char *targets[] = { "\"io1\"", "null", "\"io0\"" };
    const char *names[] = { "io1", "-", "io0" };
    int moves = 0, moves_before_result = 0;
    // Move until the guest has finished, at least 3 times, at most 30
    // (nested in TCG each move takes long: more would starve the guest).
    for (int i = 0; i < 30 && (i < 3 || LineStarting(vm.output(), "RESULT ").empty());
         i++) {
        std::string r = vm.Qmp(std::string("{\"execute\":\"x-blockdev-set-iothread\","
                                           "\"arguments\":{\"node-name\":\"d0\","
                                           "\"iothread\":") + targets[i % 3] + "}}");
        ASSERT_NE(r.find("\"return\""), std::string::npos) << r;
        moves++;
        EXPECT_EQ(QueueOwners(vm.Qmp("{\"execute\":\"x-query-virtqueues\"}")),
                  std::string("0:") + names[i % 3]);
        if (LineStarting(vm.output(), "RESULT ").empty()) {
            moves_before_result = moves;
        }
    }
    ASSERT_TRUE(vm.WaitLine("RESULT ", kBootTimeoutS)) << vm.output();
    RecordProperty("moves_before_result", moves_before_result);
    printf("moves while the guest ran: %d of %d\n", moves_before_result, moves);
    EXPECT_GE(moves_before_result, 1) << "the guest finished before the first move";
    auto kv = Result(vm.output(), "verify");
    EXPECT_EQ(kv["writes"], std::to_string(count));
    EXPECT_EQ(kv["reads"], std::to_string(count));

    std::string st = vm.Qmp("{\"execute\":\"query-blockstats\"}");
    EXPECT_EQ(JsonInt(st, "wr_operations"), count) << st;
    EXPECT_EQ(JsonInt(st, "rd_operations"), count) << st;
    EXPECT_EQ(JsonInt(st, "wr_bytes"), count * 4096) << st;
    EXPECT_EQ(JsonInt(st, "rd_bytes"), count * 4096) << st;
    std::string blk = vm.Qmp("{\"execute\":\"query-block\"}");
    EXPECT_NE(blk.find("\"device\":\"d0\""), std::string::npos) << blk;
    vm.Qmp("{\"execute\":\"quit\"}");
    EXPECT_EQ(vm.Finish(60), 0) << vm.output();
    EXPECT_EQ(BadSectors(img, count * 8, 61), 0u);
}

}  // namespace
