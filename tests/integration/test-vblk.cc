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
#include <gtest/gtest.h>

#include "../common/need-kvm.h"
#include "../guest/qemu-run.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

constexpr int kBootTimeoutS = 120;   // nested in TCG a boot takes ~5-15 s

double NowS()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

// ---- the guest's output (docs/guest.md "blk") ------------------------

std::map<std::string, std::string> KeysOf(const std::string &line)
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

// The first line of @out starting with @prefix ('\r' dropped), or "".
std::string LineStarting(const std::string &out, const std::string &prefix)
{
    std::istringstream in(out);
    std::string l;
    while (std::getline(in, l)) {
        l.erase(std::remove(l.begin(), l.end(), '\r'), l.end());
        if (l.compare(0, prefix.size(), prefix) == 0) {
            return l;
        }
    }
    return "";
}

// The stamp (docs/guest.md "Stamp format"), as tests/guest/test-blk.cc.
uint64_t Mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t StampWord(uint64_t lba, uint64_t seed, unsigned k)
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
    return Mix64(seed ^ Mix64(lba * 64 + k));
}

// Sectors [0, @stamped) carry the stamp of @seed, the rest are zero;
// returns how many sectors do not (or SIZE_MAX if unreadable).
size_t BadSectors(const std::string &path, uint64_t stamped, uint64_t seed)
{
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        return SIZE_MAX;
    }
    std::vector<uint8_t> d((std::istreambuf_iterator<char>(f)), {});
    size_t bad = 0;
    for (uint64_t lba = 0; lba < d.size() / 512; lba++) {
        for (unsigned k = 0; k < 64; k++) {
            uint64_t w;
            memcpy(&w, &d[lba * 512 + k * 8], 8);
            if (w != (lba < stamped ? StampWord(lba, seed, k) : 0)) {
                bad++;
                break;
            }
        }
    }
    return bad;
}

// ---- shardvm as a child with a QMP socket ----------------------------

// build/shardvm running in the background: its stdout+stderr collected,
// optionally a QMP client on its socket.  Without isa-debug-exit the
// guest parks after its RESULT line (docs/guest.md "Exit"), so the test
// can still ask QMP about the finished run, then quits.
class Vm {
public:
    Vm() = default;
    Vm(const Vm &) = delete;
    Vm &operator=(const Vm &) = delete;
    ~Vm()
    {
        if (qmp_ >= 0) {
            close(qmp_);
        }
        if (out_ >= 0) {
            close(out_);
        }
        if (pid_ > 0) {
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
        }
    }

    bool Start(const std::vector<std::string> &args)
    {
        std::vector<char *> argv;
        for (auto &a : args) {
            argv.push_back(const_cast<char *>(a.c_str()));
        }
        argv.push_back(nullptr);
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) < 0) {
            return false;
        }
        pid_ = fork();
        if (pid_ == 0) {
            int null = open("/dev/null", O_RDONLY);
            dup2(null, 0);
            dup2(fds[1], 1);
            dup2(fds[1], 2);
            execv(argv[0], argv.data());
            _exit(127);
        }
        close(fds[1]);
        out_ = fds[0];
        return pid_ > 0;
    }

    // Read what is there within @ms milliseconds.
    void Pump(int ms)
    {
        if (out_ < 0) {
            return;
        }
        struct pollfd p = { out_, POLLIN, 0 };
        if (poll(&p, 1, ms) > 0) {
            char buf[4096];
            ssize_t n = read(out_, buf, sizeof(buf));
            if (n > 0) {
                output_.append(buf, (size_t)n);
            } else if (n == 0 || errno != EINTR) {
                close(out_);
                out_ = -1;
            }
        }
    }

    // Until a whole line starting with @prefix is in the output; false on
    // timeout or when shardvm closed its output first.
    bool WaitLine(const std::string &prefix, double timeout_s)
    {
        double end = NowS() + timeout_s;
        while (NowS() < end) {
            std::string l = LineStarting(output_, prefix);
            if (!l.empty() && output_.find(l + "\n") != std::string::npos) {
                return true;
            }
            if (out_ < 0) {
                return false;
            }
            Pump(100);
        }
        return false;
    }

    // Wait for the exit (killed after @timeout_s); the exit status or -1.
    int Finish(double timeout_s)
    {
        double end = NowS() + timeout_s;
        while (out_ >= 0 && NowS() < end) {
            Pump(100);
        }
        int ws = 0;
        for (;;) {
            pid_t w = waitpid(pid_, &ws, WNOHANG);
            if (w == pid_) {
                break;
            }
            if (NowS() >= end) {
                kill(pid_, SIGKILL);
                waitpid(pid_, &ws, 0);
                timed_out_ = true;
                break;
            }
            usleep(10000);
        }
        pid_ = -1;
        return WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
    }

    // Connect to the QMP socket (retried until shardvm listens) and
    // negotiate.
    bool QmpConnect(const std::string &path, double timeout_s)
    {
        double end = NowS() + timeout_s;
        while (NowS() < end) {
            int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            struct sockaddr_un sa = {};
            sa.sun_family = AF_UNIX;
            snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path.c_str());
            if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
                qmp_ = fd;
                break;
            }
            close(fd);
            Pump(50);
        }
        if (qmp_ < 0 || QmpLine().find("\"QMP\"") == std::string::npos) {
            return false;
        }
        return Qmp("{\"execute\":\"qmp_capabilities\"}").find("\"return\"") !=
               std::string::npos;
    }

    // Send @command, return its reply (whitespace removed; events are
    // kept in events_), "" on failure.
    std::string Qmp(const std::string &command)
    {
        std::string m = command + "\n";
        if (write(qmp_, m.data(), m.size()) != (ssize_t)m.size()) {
            return "";
        }
        for (;;) {
            std::string l = QmpLine();
            if (l.empty() || l.find("\"event\"") == std::string::npos) {
                return l;
            }
            events_.push_back(l);
        }
    }

    const std::string &output() const { return output_; }
    bool timed_out() const { return timed_out_; }
    const std::vector<std::string> &events() const { return events_; }

private:
    // One QMP line, whitespace removed; "" after 120 s or on EOF.  The
    // guest's output is pumped meanwhile (its pipe must not fill up).
    std::string QmpLine()
    {
        double end = NowS() + 120;
        for (;;) {
            size_t nl = qbuf_.find('\n');
            if (nl != std::string::npos) {
                std::string l = qbuf_.substr(0, nl);
                qbuf_.erase(0, nl + 1);
                l.erase(std::remove_if(l.begin(), l.end(), [](char c) {
                            return isspace((unsigned char)c); }), l.end());
                return l;
            }
            if (NowS() > end) {
                return "";
            }
            Pump(0);
            struct pollfd p = { qmp_, POLLIN, 0 };
            if (poll(&p, 1, 50) > 0) {
                char tmp[4096];
                ssize_t n = read(qmp_, tmp, sizeof(tmp));
                if (n <= 0) {
                    return "";
                }
                qbuf_.append(tmp, (size_t)n);
            }
        }
    }

    pid_t pid_ = -1;
    int out_ = -1, qmp_ = -1;
    bool timed_out_ = false;
    std::string output_, qbuf_;
    std::vector<std::string> events_;
};

// The integer after "key": in @obj (whitespace-free JSON), or -1.
long long JsonInt(const std::string &obj, const std::string &key)
{
    size_t at = obj.find("\"" + key + "\":");
    if (at == std::string::npos) {
        return -1;
    }
    return atoll(obj.c_str() + at + key.size() + 3);
}

// x-query-virtqueues' reply as "queue:iothread" words ("-" for the main
// loop), in reply order, e.g. "0:io0 1:io1".
std::string QueueOwners(const std::string &reply)
{
    std::string s;
    size_t at = 0;
    while ((at = reply.find('{', at + 1)) != std::string::npos) {
        size_t end = reply.find('}', at);
        std::string o = reply.substr(at, end - at + 1);
        long long q = JsonInt(o, "queue");
        if (q < 0) {
            continue;
        }
        std::string t = "-";
        size_t it = o.find("\"iothread\":\"");
        if (it != std::string::npos) {
            it += 12;
            t = o.substr(it, o.find('"', it) - it);
        }
        s += (s.empty() ? "" : " ") + std::to_string(q) + ":" + t;
        at = end;
    }
    return s;
}

// ---- fixture -----------------------------------------------------------

// $@name, else @rel from the build dir this program sits in
// (build/tests/integration/test-vblk), so it also runs without meson.
std::string FromEnvOrBuild(const char *name, const std::string &rel)
{
    std::string v = env_path(name);
    if (!v.empty()) {
        return v;
    }
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0) {
        return "";
    }
    std::string dir(exe, (size_t)n);
    dir = dir.substr(0, dir.rfind('/'));
    return rel.empty() ? dir : dir + "/../../" + rel;
}

class Vblk : public ::testing::Test {
protected:
    void SetUp() override
    {
        bin_ = FromEnvOrBuild("SHARDVM_BINARY", "shardvm");
        blk_ = FromEnvOrBuild("SHARDVM_GUEST_DIR", "guest") + "/blk.elf";
        ASSERT_EQ(access(bin_.c_str(), X_OK), 0) << "no shardvm at " << bin_;
        ASSERT_EQ(access(blk_.c_str(), R_OK), 0) << "no guest at " << blk_;
        SHARDVM_REQUIRE_KVM();
        const char *tmp = getenv("TMPDIR");
        tmp_ = MakeDir(tmp && *tmp ? tmp : "/tmp");
        direct_ = MakeDir(FromEnvOrBuild("SHARDVM_SCRATCH_DIR", ""));
        ASSERT_FALSE(tmp_.empty());
        ASSERT_FALSE(direct_.empty());
    }
    void TearDown() override
    {
        for (auto &p : files_) {
            unlink(p.c_str());
        }
        for (auto &d : { tmp_, direct_ }) {
            if (!d.empty()) {
                rmdir(d.c_str());
            }
        }
    }

    static std::string MakeDir(const std::string &parent)
    {
        std::string t = parent + "/shardvm-vblk-XXXXXX";
        return mkdtemp(&t[0]) ? t : "";
    }

    // A zero-filled raw image of @bytes; on a file system with O_DIRECT
    // when @direct.
    std::string Image(const std::string &name, off_t bytes, bool direct = false)
    {
        std::string p = (direct ? direct_ : tmp_) + "/" + name;
        int fd = open(p.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
        EXPECT_GE(fd, 0) << p << ": " << strerror(errno);
        EXPECT_EQ(ftruncate(fd, bytes), 0);
        close(fd);
        files_.push_back(p);
        return p;
    }
    std::string Path(const std::string &name)
    {
        std::string p = tmp_ + "/" + name;
        files_.push_back(p);
        return p;
    }

    // shardvm's arguments for the blk guest with -append @append, then
    // @extra; with isa-debug-exit unless @park (the guest then parks after
    // its RESULT line).
    std::vector<std::string> Args(const std::string &append,
                                  const std::vector<std::string> &extra,
                                  bool park = false)
    {
        std::vector<std::string> a = { bin_, "-nographic", "-m", "256M",
                                       "-kernel", blk_, "-append", append };
        if (!park) {
            a.insert(a.end(), { "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04" });
        }
        a.insert(a.end(), extra.begin(), extra.end());
        return a;
    }

    // Boot to the guest's exit; shardvm's status must be the guest's
    // exit code 0, i.e. 1.
    QemuRun Boot(const std::string &append, const std::vector<std::string> &extra)
    {
        QemuRun r = child_run(Args(append, extra), kBootTimeoutS);
        EXPECT_TRUE(r.started) << r.error;
        EXPECT_FALSE(r.timed_out) << "killed after " << kBootTimeoutS << " s:\n" << r.output;
        EXPECT_EQ(r.exit_status, 1) << r.output;
        return r;
    }

    // The RESULT line's keys, checked for mode @mode, errors=0 and
    // mismatches=0.
    static std::map<std::string, std::string> Result(const std::string &out,
                                                     const std::string &mode)
    {
        std::string line = LineStarting(out, "RESULT ");
        EXPECT_EQ(line.rfind("RESULT mode=" + mode + " ", 0), 0u) << out;
        auto kv = KeysOf(line);
        EXPECT_EQ(kv["errors"], "0") << line;
        EXPECT_EQ(kv["mismatches"], "0") << line;
        return kv;
    }

    // The same image read back by blk.elf verify-read under QEMU (KVM
    // where /dev/kvm works, else TCG).
    void QemuVerifyRead(const std::string &img, unsigned count, unsigned seed)
    {
        if (env_path("SHARDVM_QEMU").empty()) {
            setenv("SHARDVM_QEMU", "/usr/bin/qemu-system-x86_64", 1);
        }
        std::string why = qemu_missing();
        ASSERT_EQ(why, "") << why;
        QemuRun q = qemu_run(blk_, "mode=verify-read count=" + std::to_string(count) +
                                   " seed=" + std::to_string(seed),
                             { "-nic", "none", "-drive",
                               "file=" + img + ",format=raw,if=none,id=d0,file.locking=off",
                               "-device", "virtio-blk-pci,drive=d0,disable-legacy=on" },
                             kBootTimeoutS);
        ASSERT_TRUE(q.started) << q.error;
        EXPECT_FALSE(q.timed_out) << q.output;
        EXPECT_EQ(q.exit_status, 1) << q.output;
        auto kv = Result(q.output, "verify-read");
        EXPECT_EQ(kv["reads"], std::to_string(count)) << q.output;
    }

    std::string bin_, blk_, tmp_, direct_;
    std::vector<std::string> files_;
};

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
