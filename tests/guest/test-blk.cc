/*
 * The blk guest (build/guest/blk.elf) under QEMU with virtio-blk-pci
 * devices on scratch raw images: verify stamps every sector as
 * docs/guest.md says (checked here from the host), a second boot checks
 * them with verify-read, the I/O modes finish with errors=0 and the
 * documented RESULT keys, disk=N picks the Nth device, bad parameters give
 * a "BLK error" line and exit code 2.  TCG when /dev/kvm is absent; every
 * run is short (a few hundred requests).
 */
#include <gtest/gtest.h>

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "blk-journal-host.h"
#include "qemu-run.h"

namespace {

constexpr int kTimeoutS = 60;

std::map<std::string, std::string> keys_of(const std::string &line)
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

uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Word k of the stamp of sector @lba, as docs/guest.md defines it.
uint64_t stamp_word(uint64_t lba, uint64_t seed, unsigned k)
{
    if (k == 0) {
        return 0x314b4c424d564853ull;       // "SHVMBLK1"
    }
    if (k == 1) {
        return lba;
    }
    if (k == 2) {
        return seed;
    }
    return mix64(seed ^ mix64(lba * 64 + k));
}

std::vector<uint8_t> read_file(const std::string &path)
{
    std::ifstream f(path, std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

// Sectors [0, @stamped) carry the stamp of @seed; the rest are all zero.
// Returns the number of sectors that do not.
size_t bad_sectors(const std::string &path, uint64_t stamped, uint64_t seed)
{
    std::vector<uint8_t> d = read_file(path);
    size_t bad = 0;

    for (uint64_t lba = 0; lba < d.size() / 512; lba++) {
        for (unsigned k = 0; k < 64; k++) {
            uint64_t w;

            memcpy(&w, &d[lba * 512 + k * 8], 8);
            if (w != (lba < stamped ? stamp_word(lba, seed, k) : 0)) {
                bad++;
                break;
            }
        }
    }
    return bad;
}

class GuestBlk : public ::testing::Test {
protected:
    void SetUp() override
    {
        std::string why = qemu_missing();
        ASSERT_EQ(why, "") << why;
        blk_ = env_path("SHARDVM_GUEST_BLK");
        ASSERT_EQ(access(blk_.c_str(), R_OK), 0) << "no guest at '" << blk_ << "'";
        const char *tmp = getenv("TMPDIR");
        std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/shardvm-blk-XXXXXX";
        ASSERT_NE(mkdtemp(&tmpl[0]), nullptr);
        dir_ = tmpl;
    }

    void TearDown() override
    {
        for (const auto &p : images_) {
            unlink(p.c_str());
        }
        if (!dir_.empty()) {
            rmdir(dir_.c_str());
        }
    }

    // A zero-filled raw image of @bytes.
    std::string image(const std::string &name, off_t bytes)
    {
        std::string p = dir_ + "/" + name;
        int fd = open(p.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);

        EXPECT_GE(fd, 0);
        EXPECT_EQ(ftruncate(fd, bytes), 0);
        close(fd);
        images_.push_back(p);
        return p;
    }

    // QEMU arguments for virtio-blk-pci devices on @imgs, in PCI order.
    static std::vector<std::string> disks(const std::vector<std::string> &imgs,
                                          const std::string &dev_opts = ",disable-legacy=on")
    {
        std::vector<std::string> a = { "-nic", "none" };

        for (size_t i = 0; i < imgs.size(); i++) {
            std::string id = "d" + std::to_string(i);
            a.insert(a.end(), { "-drive", "file=" + imgs[i] + ",format=raw,if=none,id=" + id,
                                "-device", "virtio-blk-pci,drive=" + id + dev_opts });
        }
        return a;
    }

    QemuRun boot(const std::string &append, const std::vector<std::string> &extra)
    {
        QemuRun r = qemu_run(blk_, append, extra, kTimeoutS);
        EXPECT_TRUE(r.started) << r.error;
        EXPECT_FALSE(r.timed_out) << "QEMU killed after " << kTimeoutS
                                  << " s; output:\n" << r.output;
        return r;
    }

    // The RESULT line's keys, with the keys every run must have checked.
    std::map<std::string, std::string> result(const QemuRun &r, const std::string &mode)
    {
        std::string line = r.line_starting("RESULT ");
        EXPECT_EQ(line.rfind("RESULT mode=" + mode + " iops=", 0), 0u) << r.output;
        auto kv = keys_of(line);
        for (const char *k : { "iops", "lat_avg_ns", "lat_p99_ns", "errors", "ios", "bytes",
                               "reads", "writes", "flushes", "mismatches", "total_ns", "bs",
                               "qd", "queues", "disk", "seed", "kicks", "tsc_hz" }) {
            EXPECT_EQ(kv.count(k), 1u) << "no " << k << "= in " << line;
        }
        return kv;
    }

    std::string blk_, dir_;
    std::vector<std::string> images_;
};

// verify on a fresh image: 64 blocks of 4 KiB = the first 512 sectors
// stamped, the rest untouched; then a second boot with verify-read finds
// them, and one with another seed reports every sector.
TEST_F(GuestBlk, VerifyStampsSectorsAndSecondBootReadsThem)
{
    std::string img = image("verify.img", 1 << 20);
    QemuRun r = boot("mode=verify count=64 qd=4 seed=7", disks({ img }));
    EXPECT_EQ(r.exit_status, 1) << r.output;
    auto kv = result(r, "verify");
    EXPECT_EQ(kv["errors"], "0");
    EXPECT_EQ(kv["mismatches"], "0");
    EXPECT_EQ(kv["ios"], "128");
    EXPECT_EQ(kv["writes"], "64");
    EXPECT_EQ(kv["reads"], "64");
    EXPECT_EQ(kv["bytes"], std::to_string(128 * 4096));
    EXPECT_EQ(kv["seed"], "7");
    EXPECT_GT(std::stoull(kv["iops"]), 0u);
    EXPECT_GT(std::stoull(kv["lat_avg_ns"]), 0u);
    EXPECT_GT(std::stoull(kv["lat_p99_ns"]), 0u);
    EXPECT_EQ(bad_sectors(img, 512, 7), 0u);

    r = boot("mode=verify-read count=64 seed=7 bs=512", disks({ img }));
    EXPECT_EQ(r.exit_status, 1) << r.output;
    kv = result(r, "verify-read");
    EXPECT_EQ(kv["mismatches"], "0");
    EXPECT_EQ(kv["reads"], "64");
    EXPECT_EQ(kv["writes"], "0");

    r = boot("mode=verify-read count=8 seed=8", disks({ img }));
    EXPECT_EQ(r.exit_status, (1 << 1) | 1) << r.output;
    kv = result(r, "verify-read");
    EXPECT_EQ(kv["mismatches"], "64");        // 8 blocks x 8 sectors
    EXPECT_EQ(kv["errors"], "0");
    EXPECT_NE(r.line_starting("BLK mismatch lba=0 word=2 got=0x7 want=0x8"), "") << r.output;
    EXPECT_EQ(bad_sectors(img, 512, 7), 0u);  // reading changed nothing
}

TEST_F(GuestBlk, RandomModesFinishWithoutErrors)
{
    std::string img = image("rand.img", 1 << 20);
    QemuRun r = boot("mode=randread count=64 qd=4", disks({ img }));
    EXPECT_EQ(r.exit_status, 1) << r.output;
    auto kv = result(r, "randread");
    EXPECT_EQ(kv["errors"], "0");
    EXPECT_EQ(kv["ios"], "64");
    EXPECT_EQ(kv["reads"], "64");
    EXPECT_EQ(kv["bytes"], std::to_string(64 * 4096));
    EXPECT_EQ(kv["qd"], "4");
    EXPECT_EQ(kv["queues"], "1");
    EXPECT_GT(std::stoull(kv["iops"]), 0u);
    EXPECT_GT(std::stoull(kv["kicks"]), 0u);
    EXPECT_LE(std::stoull(kv["kicks"]), 64u);

    r = boot("mode=randwrite count=64 qd=8 bs=8k", disks({ img }));
    EXPECT_EQ(r.exit_status, 1) << r.output;
    kv = result(r, "randwrite");
    EXPECT_EQ(kv["errors"], "0");
    EXPECT_EQ(kv["writes"], "64");
    EXPECT_EQ(kv["bs"], "8192");

    r = boot("mode=rw count=40 qd=2 rwmix=50", disks({ img }));
    EXPECT_EQ(r.exit_status, 1) << r.output;
    kv = result(r, "rw");
    EXPECT_EQ(kv["errors"], "0");
    EXPECT_EQ(std::stoull(kv["reads"]) + std::stoull(kv["writes"]), 40u);
}

TEST_F(GuestBlk, FlushModeAlternatesWritesAndFlushes)
{
    std::string img = image("flush.img", 1 << 20);
    QemuRun r = boot("mode=flush count=20", disks({ img }));
    EXPECT_EQ(r.exit_status, 1) << r.output;
    auto kv = result(r, "flush");
    EXPECT_EQ(kv["errors"], "0");
    EXPECT_EQ(kv["flushes"], "10");
    EXPECT_EQ(kv["writes"], "10");

    r = boot("mode=flush count=5 flush_every=1", disks({ img }));
    EXPECT_EQ(r.exit_status, 1) << r.output;
    kv = result(r, "flush");
    EXPECT_EQ(kv["flushes"], "5");
    EXPECT_EQ(kv["writes"], "0");
}

// disk=1 drives the second device only; the first image stays zero.
// mode=journal (docs/guest.md): 200 generation-stamped writes over 16
// blocks at qd=4 with a FLUSH every 16 writes; the records say all 200
// completed and 192 were flushed; the host finds generation 13 or 12 in
// exactly the blocks the sequence says; journal-check on a second boot
// agrees, and reports every sector for a prefix the run never reached.
TEST_F(GuestBlk, JournalRecordsCompletionsAndCheckReadsThem)
{
    std::string img = image("journal.img", 1 << 20);
    QemuRun r = boot("mode=journal count=16 writes=200 qd=4 seed=5", disks({ img }));
    EXPECT_EQ(r.exit_status, 1) << r.output;
    auto kv = result(r, "journal");
    EXPECT_EQ(kv["errors"], "0");
    EXPECT_EQ(kv["writes"], "200");
    EXPECT_EQ(kv["flushes"], "12");
    EXPECT_EQ(blk_journal::LastRecord(r.output, "w"), 200u) << r.output;
    EXPECT_EQ(blk_journal::LastRecord(r.output, "f"), 192u) << r.output;
    EXPECT_EQ(blk_journal::CountRecords(r.output, "f"), 12u) << r.output;
    EXPECT_GE(blk_journal::CountRecords(r.output, "w"), 12u) << r.output;
    // A record the VMM's stderr ran into (guest stopped mid-line) is no record.
    EXPECT_EQ(blk_journal::LastRecord("J f=8\nJ f=1shardvm: terminating on signal 15\n",
                                      "f"), 8u);
    EXPECT_EQ(blk_journal::CountRecords("J w=4\r\nJ w=8\nJ w=12", "w"), 2u);
    blk_journal::Check c = blk_journal::CheckImage(img, 16, 4096, 5, 200);
    EXPECT_TRUE(c.readable);
    EXPECT_EQ(c.bad, 0u) << c.first_bad;
    EXPECT_EQ(c.ahead, 0u);
    // Blocks 0-7 got writes 192-199 (generation 13), 8-15 got 184-191 (12).
    EXPECT_EQ(blk_journal::Expect(0, 16, 200), 13u);
    EXPECT_EQ(blk_journal::Expect(15, 16, 200), 12u);
    c = blk_journal::CheckImage(img, 16, 4096, 5, 192);
    EXPECT_EQ(c.bad, 0u) << c.first_bad;
    EXPECT_EQ(c.ahead, 8u * 8);

    r = boot("mode=journal-check count=16 done=200 seed=5", disks({ img }));
    EXPECT_EQ(r.exit_status, 1) << r.output;
    kv = result(r, "journal-check");
    EXPECT_EQ(kv["mismatches"], "0");
    EXPECT_EQ(kv["reads"], "16");
    EXPECT_EQ(kv["writes"], "0");

    // Writes 200-215 never happened: every sector is one generation short.
    r = boot("mode=journal-check count=16 done=216 seed=5", disks({ img }));
    EXPECT_EQ(r.exit_status, 3) << r.output;
    EXPECT_EQ(result(r, "journal-check")["mismatches"], "128");
    EXPECT_NE(r.line_starting("BLK mismatch lba=0 gen=13 want_gen>=14 "), "") << r.output;
}

// journal and journal-check without count= must mean the same region
// (docs/guest.md: min(16, disk blocks)); journal-check took 256 blocks and
// expected writes 16..39 of a 40-write run in blocks 16..39, which hold
// none: 192 false mismatches.
TEST_F(GuestBlk, JournalCheckDefaultRegionIsJournals)
{
    std::string img = image("journal-dflt.img", 1 << 20);
    QemuRun r = boot("mode=journal writes=40 seed=7", disks({ img }));
    EXPECT_EQ(r.exit_status, 1) << r.output;
    EXPECT_EQ(blk_journal::LastRecord(r.output, "w"), 40u) << r.output;
    r = boot("mode=journal-check done=40 seed=7", disks({ img }));
    EXPECT_EQ(r.exit_status, 1) << r.output;
    auto kv = result(r, "journal-check");
    EXPECT_EQ(kv["mismatches"], "0") << r.output;
    EXPECT_EQ(kv["reads"], "16") << r.output;
}

// Odd but valid journal parameters end (no hang) and stay in the region:
// qd = count (every block in flight at once), flushes and reports rarer
// than the run is long, a check with qd above count, a count of 1.
TEST_F(GuestBlk, JournalOddParametersStayInTheRegion)
{
    std::string img = image("journal-odd.img", 1 << 20);
    QemuRun r = boot("mode=journal count=8 qd=8 writes=50 flush_every=1000000 "
                     "report=1099511627776 seed=3", disks({ img }));
    EXPECT_EQ(r.exit_status, 1) << r.output;
    EXPECT_EQ(result(r, "journal")["writes"], "50") << r.output;
    EXPECT_EQ(blk_journal::LastRecord(r.output, "w"), 50u) << r.output;
    blk_journal::Check c = blk_journal::CheckImage(img, 8, 4096, 3, 50);
    EXPECT_EQ(c.bad, 0u) << c.first_bad;
    r = boot("mode=journal-check count=8 qd=64 done=50 seed=3", disks({ img }));
    EXPECT_EQ(r.exit_status, 1) << r.output;
    EXPECT_EQ(result(r, "journal-check")["mismatches"], "0") << r.output;
    // Nothing past the region was written: a check of 64 blocks finds
    // blocks 8..63 zero as a 8-block journal left them.
    c = blk_journal::CheckImage(img, 64, 4096, 3, 8);
    EXPECT_EQ(c.bad, 0u) << c.first_bad;
    EXPECT_EQ(c.ahead, 8u * 8); // blocks 0..7 hold generations 6-7 > 1
    r = boot("mode=journal count=1 writes=5 flush_every=2 seed=3", disks({ img }));
    EXPECT_EQ(r.exit_status, 1) << r.output;
    EXPECT_EQ(blk_journal::LastRecord(r.output, "f"), 4u) << r.output;
}

TEST_F(GuestBlk, DiskOnePicksTheSecondDevice)
{
    std::string a = image("a.img", 1 << 20), b = image("b.img", 512 << 10);
    QemuRun r = boot("mode=verify count=8 disk=1 seed=3", disks({ a, b }));
    EXPECT_EQ(r.exit_status, 1) << r.output;
    auto kv = result(r, "verify");
    EXPECT_EQ(kv["disk"], "1");
    EXPECT_EQ(kv["mismatches"], "0");
    EXPECT_NE(r.line_starting("BLK disk=1 pci=00:04.0 capacity=1024 "), "") << r.output;
    EXPECT_EQ(bad_sectors(b, 64, 3), 0u);
    EXPECT_EQ(bad_sectors(a, 0, 0), 0u);

    r = boot("mode=verify count=8 disk=2", disks({ a, b }));
    EXPECT_EQ(r.exit_status, (3 << 1) | 1) << r.output;
    EXPECT_NE(r.line_starting("BLK error: disk=2: no such virtio-blk device"), "") << r.output;
}

// The driver copes with what a firmware-less VMM may leave: the 64-bit BAR
// unassigned (it assigns one in the PCI hole) or above 4 GiB (it maps it),
// decoding off; and with QEMU's transitional device (no disable-legacy).
TEST_F(GuestBlk, BarUnassignedAboveFourGiBAndTransitional)
{
    std::string img = image("bar.img", 256 << 10);
    QemuRun r = boot("mode=verify count=4 bar_move=0", disks({ img }));
    EXPECT_EQ(r.exit_status, 1) << r.output;
    EXPECT_NE(r.line_starting("VIRTIO bar=00:03.0/4 assigned addr=0x"), "") << r.output;
    EXPECT_EQ(result(r, "verify")["mismatches"], "0");

    r = boot("mode=verify count=4 bar_move=0x1000000000", disks({ img }));
    EXPECT_EQ(r.exit_status, 1) << r.output;
    EXPECT_NE(r.line_starting("BLK disk=0 pci=00:03.0 "), "") << r.output;
    EXPECT_EQ(keys_of(r.line_starting("BLK disk=0 "))["common_cfg"], "0x1000000000");
    EXPECT_EQ(result(r, "verify")["mismatches"], "0");

    r = boot("mode=verify count=4", disks({ img }, ""));
    EXPECT_EQ(r.exit_status, 1) << r.output;
    EXPECT_EQ(result(r, "verify")["mismatches"], "0");
}

TEST_F(GuestBlk, MalformedParametersAreRefused)
{
    std::string img = image("bad.img", 256 << 10);
    const std::pair<const char *, const char *> cases[] = {
        { "mode=randread bs=1000", "BLK error: bs=1000 (want a multiple of 512)" },
        { "mode=randread qd=abc", "BLK error: qd=abc (want a number from 1 to 341)" },
        { "mode=scribble", "BLK error: mode=scribble (want randread, randwrite, rw, flush, "
                           "verify, verify-read, journal or journal-check)" },
        { "mode=journal count=2 qd=4", "BLK error: mode=journal needs qd=4 <= count=2" },
        { "mode=journal queues=1",
          "BLK error: mode=journal runs on one queue and takes count= (blocks)" },
        { "mode=randread count=4 seconds=1", "BLK error: give seconds= or count=, not both" },
        { "mode=verify count=100", "BLK error: count=100 but the disk has 64 blocks of 4096 bytes" },
    };

    for (const auto &c : cases) {
        QemuRun r = boot(c.first, disks({ img }));
        EXPECT_EQ(r.exit_status, (2 << 1) | 1) << c.first << "\n" << r.output;
        EXPECT_TRUE(r.has_line(c.second)) << c.first << "\n" << r.output;
        EXPECT_EQ(r.line_starting("RESULT "), "") << r.output;
    }
}

}  // namespace
