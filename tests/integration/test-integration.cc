// End-to-end: build/shardvm runs the test guests (build/guest/*.elf) as a
// child process; its output and exit status are checked, and for one case
// compared with QEMU running the same guest with the same options.
//
// Needs /dev/kvm (and qemu-system-x86_64 for the QEMU test): without them
// the tests FAIL with a message saying what is missing.
#include <gtest/gtest.h>

#include "../common/need-kvm.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <algorithm>
#include <functional>
#include <string>
#include <vector>

namespace {

struct Result {
    int status = -1;     // exit status, or -1 when killed by a signal
    int signal = 0;      // the signal that killed it
    bool timed_out = false;
    std::string out, err;
};

std::string Env(const char *name)
{
    const char *v = getenv(name);
    return v ? v : "";
}

std::string Binary() { return Env("SHARDVM_BINARY"); }
std::string Guest(const char *name)
{
    return Env("SHARDVM_GUEST_DIR") + "/" + name;
}

double Now()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

// Run @argv with stdin from /dev/null, collecting stdout and stderr.
// @on_output (may be empty) is called as output arrives, with the pid, and
// returns true once it has done its job (e.g. sent a signal).
Result RunChild(const std::vector<std::string> &argv, double timeout_s,
           const std::function<bool(pid_t, const Result &)> &on_output = {})
{
    Result r;
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
        ADD_FAILURE() << "pipe: " << strerror(errno);
        return r;
    }
    std::vector<char *> args;
    for (auto &a : argv) {
        args.push_back(const_cast<char *>(a.c_str()));
    }
    args.push_back(nullptr);

    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_RDONLY);
        dup2(null, 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        execv(args[0], args.data());
        _exit(127);
    }
    close(out[1]);
    close(err[1]);

    double deadline = Now() + timeout_s;
    bool acted = false;
    struct pollfd pfd[2] = { { out[0], POLLIN, 0 }, { err[0], POLLIN, 0 } };
    int open_fds = 2;
    while (open_fds > 0) {
        int left_ms = (int)((deadline - Now()) * 1000);
        if (left_ms <= 0) {
            r.timed_out = true;
            kill(pid, SIGKILL);
            break;
        }
        // Short slices, so that @on_output also runs while all is quiet.
        if (poll(pfd, 2, std::min(left_ms, 100)) < 0 && errno != EINTR) {
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (pfd[i].fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP))) {
                continue;
            }
            char buf[4096];
            ssize_t n = read(pfd[i].fd, buf, sizeof(buf));
            if (n <= 0) {
                close(pfd[i].fd);
                pfd[i].fd = -1;
                open_fds--;
            } else {
                (i == 0 ? r.out : r.err).append(buf, (size_t)n);
            }
        }
        if (on_output && !acted) {
            acted = on_output(pid, r);
        }
    }
    for (auto &p : pfd) {
        if (p.fd >= 0) {
            close(p.fd);
        }
    }
    int ws;
    waitpid(pid, &ws, 0);
    if (WIFEXITED(ws)) {
        r.status = WEXITSTATUS(ws);
    } else if (WIFSIGNALED(ws)) {
        r.signal = WTERMSIG(ws);
    }
    return r;
}

// True once @pid's main thread blocks SIGTERM: shardvm's main_loop_init()
// has set up its signalfd, so SIGTERM means an orderly shutdown (before
// that the default action would kill it).  From /proc/PID/status SigBlk.
bool SigtermBlocked(pid_t pid)
{
    gchar *text = nullptr;
    std::string path = "/proc/" + std::to_string(pid) + "/status";
    if (!g_file_get_contents(path.c_str(), &text, nullptr, nullptr)) {
        return false;
    }
    const char *blk = strstr(text, "\nSigBlk:");
    unsigned long long mask = blk ? g_ascii_strtoull(blk + 8, nullptr, 16) : 0;
    g_free(text);
    return (mask >> (SIGTERM - 1)) & 1;
}

std::string Describe(const Result &r)
{
    return "status=" + std::to_string(r.status) +
           " signal=" + std::to_string(r.signal) +
           (r.timed_out ? " TIMED OUT" : "") + "\n--- stdout:\n" + r.out +
           "\n--- stderr:\n" + r.err;
}

class Integration : public ::testing::Test {
protected:
    void SetUp() override
    {
        ASSERT_FALSE(Binary().empty()) << "SHARDVM_BINARY is not set";
        ASSERT_TRUE(g_file_test(Binary().c_str(), G_FILE_TEST_IS_EXECUTABLE))
            << "no shardvm binary at " << Binary();
        ASSERT_TRUE(g_file_test(Guest("hello.elf").c_str(),
                                G_FILE_TEST_EXISTS))
            << "test guest missing: " << Guest("hello.elf");
        SHARDVM_REQUIRE_KVM();
        dir_ = g_dir_make_tmp("shardvm-it-XXXXXX", nullptr);
        ASSERT_NE(dir_, nullptr);
    }
    void TearDown() override
    {
        for (auto &f : files_) {
            g_unlink(f.c_str());
        }
        if (dir_) {
            g_rmdir(dir_);
            g_free(dir_);
        }
    }

    // build/shardvm with the demo's options plus @extra.
    Result Shardvm(const std::vector<std::string> &extra,
                   double timeout_s = 60)
    {
        std::vector<std::string> argv = { Binary(), "-nographic", "-m",
                                          "256M", "-device",
                                          "isa-debug-exit,iobase=0xf4,"
                                          "iosize=0x04" };
        argv.insert(argv.end(), extra.begin(), extra.end());
        return RunChild(argv, timeout_s);
    }

    std::string Path(const char *name)
    {
        std::string p = std::string(dir_) + "/" + name;
        files_.push_back(p);
        return p;
    }
    std::string WriteFile(const char *name, const std::string &data)
    {
        std::string p = Path(name);
        EXPECT_TRUE(g_file_set_contents(p.c_str(), data.data(),
                                        (gssize)data.size(), nullptr));
        return p;
    }

    char *dir_ = nullptr;
    std::vector<std::string> files_;
};

// Start-up errors that come before /dev/kvm is opened: these run on a
// machine without KVM too (issue 8 points 2, 7, 10).
class IntegrationNoKvm : public Integration {
protected:
    void SetUp() override
    {
        ASSERT_FALSE(Binary().empty()) << "SHARDVM_BINARY is not set";
        dir_ = g_dir_make_tmp("shardvm-it-XXXXXX", nullptr);
        ASSERT_NE(dir_, nullptr);
    }
};

TEST_F(IntegrationNoKvm, FifoKernelAndDeviceModulesAreRefusedAtOnce)
{
    std::string fifo = Path("fifo");
    ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
    // Without the fix this hangs in open() until the 20 s timeout.
    Result r = Shardvm({ "-kernel", fifo }, 20);
    EXPECT_FALSE(r.timed_out) << Describe(r);
    EXPECT_EQ(r.status, 1) << Describe(r);
    EXPECT_NE(r.err.find("shardvm: cannot read kernel '" + fifo +
                         "': a FIFO, not a regular file"),
              std::string::npos) << Describe(r);

    std::string k = WriteFile("k", "not read: the module is refused first");
    r = Shardvm({ "-kernel", k, "-initrd", "/dev/zero" }, 20);
    EXPECT_FALSE(r.timed_out) << Describe(r);
    EXPECT_EQ(r.status, 1) << Describe(r);
    EXPECT_NE(r.err.find("cannot read module '/dev/zero': a character "
                         "device, not a regular file"),
              std::string::npos) << Describe(r);
}

TEST_F(IntegrationNoKvm, SparseKernelLargerThanRamIsRefusedBeforeReading)
{
    std::string p = Path("huge");
    int fd = open(p.c_str(), O_CREAT | O_WRONLY, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, 8ll << 30), 0);
    close(fd);
    Result r = RunChild({ Binary(), "-m", "128M", "-kernel", p }, 20);
    EXPECT_FALSE(r.timed_out) << Describe(r);
    EXPECT_EQ(r.status, 1) << Describe(r);
    EXPECT_NE(r.err.find("cannot read kernel '" + p + "': 8589934592 bytes "
                         "is more than the 134217728 bytes of guest RAM"),
              std::string::npos) << Describe(r);
}

TEST_F(IntegrationNoKvm, BadOptionsNamed)
{
    const struct { std::vector<std::string> args; const char *msg; } c[] = {
        { { "-accel", "kvm,bogus=1" }, "-accel: unknown parameter 'bogus'" },
        { { "-accel", "kvm,kernel-irqchip=off" }, "kernel-irqchip=off" },
        { { "-smp", "cpus=2,sockets=4" }, "must equal the 2 CPUs" },
        { { "-smp", "256" }, "-smp: invalid cpus '256' (expected 1..64)" },
        { { "-m", "1e3" }, "-m: invalid size '1e3'" },
        { { "-m", "0x1p30B" }, "-m: invalid size '0x1p30B'" },
    };
    for (const auto &t : c) {
        std::vector<std::string> argv = { Binary(), "-kernel", "k" };
        argv.insert(argv.end(), t.args.begin(), t.args.end());
        Result r = RunChild(argv, 20);
        EXPECT_EQ(r.status, 1) << Describe(r);
        EXPECT_NE(r.err.find(t.msg), std::string::npos) << Describe(r);
    }
}

// isa-debug-exit on in-kernel PIT ports can never fire: refused (needs a
// VM, so KVM).
TEST_F(Integration, DebugExitOnInKernelPortsRefused)
{
    for (const char *base : { "0x20", "0x40", "0x61", "0x4d0" }) {
        Result r = RunChild({ Binary(), "-device",
                              std::string("isa-debug-exit,iobase=") + base,
                              "-kernel", Guest("hello.elf") }, 30);
        EXPECT_EQ(r.status, 1) << Describe(r);
        EXPECT_NE(r.err.find("overlaps 'in-kernel"), std::string::npos)
            << Describe(r);
    }
}

TEST_F(Integration, HelloPrintsAndExitsWithZero)
{
    Result r = Shardvm({ "-kernel", Guest("hello.elf"), "-append",
                         "exit=0 foo=bar" });
    EXPECT_EQ(r.status, 1) << "exit=0 is (0 << 1) | 1\n" << Describe(r);
    EXPECT_NE(r.out.find("HELLO cmdline=\"exit=0 foo=bar\""),
              std::string::npos) << Describe(r);
    EXPECT_NE(r.out.find("HELLO cpu=0 ok"), std::string::npos);
    EXPECT_NE(r.out.find("HELLO cpus=1"), std::string::npos);
}

TEST_F(Integration, DebugExitStatusIsValueTimesTwoPlusOne)
{
    Result r = Shardvm({ "-kernel", Guest("hello.elf"), "-append",
                         "exit=5" });
    EXPECT_EQ(r.status, 11) << Describe(r);
}

TEST_F(Integration, SmpTwoRunsBothCpus)
{
    Result r = Shardvm({ "-smp", "2", "-kernel", Guest("hello.elf"),
                         "-append", "exit=0" });
    EXPECT_EQ(r.status, 1) << Describe(r);
    EXPECT_NE(r.out.find("HELLO cpus=2"), std::string::npos) << Describe(r);
    EXPECT_NE(r.out.find("HELLO cpu=1 ok"), std::string::npos);
}

TEST_F(Integration, IOThreadObjectAndLargeMemory)
{
    // RAM above 4 GiB (two memory slots) and an IOThread.
    Result r = RunChild({ Binary(), "-nographic", "-m", "4G", "-object",
                     "iothread,id=io0,poll-max-ns=0", "-device",
                     "isa-debug-exit,iobase=0xf4,iosize=0x04", "-kernel",
                     Guest("hello.elf"), "-append", "exit=2" }, 60);
    EXPECT_EQ(r.status, 5) << Describe(r);
}

TEST_F(Integration, SerialToFile)
{
    std::string out = Path("serial.txt");
    Result r = Shardvm({ "-serial", "file:" + out, "-kernel",
                         Guest("hello.elf"), "-append", "exit=0" });
    EXPECT_EQ(r.status, 1) << Describe(r);
    EXPECT_EQ(r.out.find("HELLO"), std::string::npos) << Describe(r);
    gchar *text = nullptr;
    ASSERT_TRUE(g_file_get_contents(out.c_str(), &text, nullptr, nullptr));
    EXPECT_NE(std::string(text).find("HELLO cpus=1"), std::string::npos)
        << text;
    g_free(text);
}

TEST_F(Integration, SerialNone)
{
    Result r = Shardvm({ "-serial", "none", "-kernel", Guest("hello.elf"),
                         "-append", "exit=1" });
    EXPECT_EQ(r.status, 3) << Describe(r);
    EXPECT_EQ(r.out.find("HELLO"), std::string::npos) << Describe(r);
}

TEST_F(Integration, MissingKernelFile)
{
    std::string p = std::string(dir_) + "/nonexistent.elf";
    Result r = Shardvm({ "-kernel", p });
    EXPECT_EQ(r.status, 1) << Describe(r);
    EXPECT_NE(r.err.find("shardvm: cannot read kernel '" + p +
                         "': No such file or directory"),
              std::string::npos) << Describe(r);
}

TEST_F(Integration, TruncatedKernel)
{
    gchar *data = nullptr;
    gsize size = 0;
    ASSERT_TRUE(g_file_get_contents(Guest("hello.elf").c_str(), &data, &size,
                                    nullptr));
    ASSERT_GT(size, 9000u);
    // Keep the headers and the multiboot header, cut the segment data.
    std::string cut(data, 9000);
    g_free(data);
    std::string p = WriteFile("truncated.elf", cut);
    Result r = Shardvm({ "-kernel", p });
    EXPECT_EQ(r.status, 1) << Describe(r);
    EXPECT_NE(r.err.find("truncated"), std::string::npos) << Describe(r);
    EXPECT_EQ(r.signal, 0);
}

TEST_F(Integration, TextFileIsNotAKernel)
{
    std::string p = WriteFile("notes.txt", "just some text\n");
    Result r = Shardvm({ "-kernel", p });
    EXPECT_EQ(r.status, 1) << Describe(r);
    EXPECT_NE(r.err.find("no multiboot header"), std::string::npos)
        << Describe(r);
}

TEST_F(Integration, BzImageRefusedByName)
{
    std::string bz(0x1000, '\0');
    bz.replace(0x202, 4, "HdrS");
    std::string p = WriteFile("bzImage", bz);
    Result r = Shardvm({ "-kernel", p });
    EXPECT_EQ(r.status, 1) << Describe(r);
    EXPECT_NE(r.err.find("a Linux bzImage is not supported: shardvm boots "
                         "multiboot v1 kernels"),
              std::string::npos) << Describe(r);
}

TEST_F(Integration, UnknownOptionNamed)
{
    Result r = RunChild({ Binary(), "-foo", "-kernel", Guest("hello.elf") }, 30);
    EXPECT_EQ(r.status, 1) << Describe(r);
    EXPECT_NE(r.err.find("shardvm: -foo: invalid option"), std::string::npos)
        << Describe(r);

    r = RunChild({ Binary(), "-m", "abc" }, 30);
    EXPECT_EQ(r.status, 1) << Describe(r);
    EXPECT_NE(r.err.find("shardvm: -m: invalid size 'abc'"),
              std::string::npos) << Describe(r);
}

TEST_F(Integration, NoKernel)
{
    Result r = RunChild({ Binary(), "-m", "64M" }, 30);
    EXPECT_EQ(r.status, 1) << Describe(r);
    EXPECT_NE(r.err.find("no -kernel"), std::string::npos) << Describe(r);
}

TEST_F(Integration, HelpAndVersion)
{
    Result r = RunChild({ Binary(), "-version" }, 30);
    EXPECT_EQ(r.status, 0);
    EXPECT_NE(r.out.find("shardvm version"), std::string::npos);
    r = RunChild({ Binary(), "-help" }, 30);
    EXPECT_EQ(r.status, 0);
    EXPECT_NE(r.out.find("-kernel"), std::string::npos);
}

TEST_F(Integration, SigtermStopsASpinningGuest)
{
    // pio with a huge count exits to userspace forever on both vCPUs (it
    // prints nothing before the end); a second after the start, and once
    // shardvm takes SIGTERM through its signalfd (a slow machine, e.g.
    // KVM nested in TCG, may still be loading libraries after a second),
    // SIGTERM must end shardvm in order, with status 0 like QEMU.
    std::vector<std::string> argv = {
        Binary(), "-nographic", "-m", "128M", "-smp", "2", "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04", "-kernel", Guest("pio.elf"),
        "-append", "port=0x510 count=100000000000 op=out size=1" };
    double start = Now();
    Result r = RunChild(argv, 60, [start](pid_t pid, const Result &res) {
        if (Now() - start > 1.0 && SigtermBlocked(pid)) {
            kill(pid, SIGTERM);
            return true;
        }
        return false;
    });
    EXPECT_FALSE(r.timed_out) << Describe(r);
    EXPECT_EQ(r.signal, 0) << Describe(r);
    EXPECT_EQ(r.status, 0) << Describe(r);
    EXPECT_NE(r.err.find("terminating on signal 15"), std::string::npos)
        << Describe(r);
}

TEST_F(Integration, SameStatusAndOutputAsQemu)
{
    const char *qemu = "/usr/bin/qemu-system-x86_64";
    ASSERT_EQ(access(qemu, X_OK), 0)
        << qemu << " is missing: install qemu-system-x86 (scripts/lib.sh)";
    std::vector<std::string> common = {
        "-nographic", "-m", "256M", "-no-reboot", "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04", "-kernel",
        Guest("hello.elf"), "-append", "exit=3 who=both" };
    std::vector<std::string> qargv = { qemu, "-enable-kvm", "-cpu",
                                       "qemu64" };
    qargv.insert(qargv.end(), common.begin(), common.end());
    std::vector<std::string> sargv = { Binary(), "-enable-kvm", "-cpu",
                                       "qemu64" };
    sargv.insert(sargv.end(), common.begin(), common.end());

    Result q = RunChild(qargv, 120);
    Result s = RunChild(sargv, 60);
    EXPECT_EQ(q.status, 7) << Describe(q);
    EXPECT_EQ(s.status, 7) << Describe(s);
    const std::string line = "HELLO cmdline=\"exit=3 who=both\"";
    EXPECT_NE(q.out.find(line), std::string::npos) << Describe(q);
    EXPECT_NE(s.out.find(line), std::string::npos) << Describe(s);
    EXPECT_NE(q.out.find("HELLO cpus=1"), std::string::npos);
    EXPECT_NE(s.out.find("HELLO cpus=1"), std::string::npos);
}

// The lines of @out containing @prefix, from @prefix on (QEMU's firmware
// leaves text without a newline before the guest's first line).
std::vector<std::string> Lines(const std::string &out, const char *prefix)
{
    std::vector<std::string> v;
    gchar **lines = g_strsplit(out.c_str(), "\n", -1);
    for (gchar **l = lines; *l; l++) {
        const char *at = strstr(*l, prefix);
        if (at) {
            std::string line = at;
            if (!line.empty() && line.back() == '\r') {
                line.pop_back();
            }
            v.push_back(line);
        }
    }
    g_strfreev(lines);
    return v;
}

TEST_F(Integration, MultibootInfoMatchesQemu)
{
    // The probe kernel prints the multiboot information it was given; the
    // command line and the module list (addresses, strings) must be what
    // QEMU 7.2 gives, the rest is documented in docs/usage.md.
    const char *qemu = "/usr/bin/qemu-system-x86_64";
    ASSERT_EQ(access(qemu, X_OK), 0)
        << qemu << " is missing: install qemu-system-x86 (scripts/lib.sh)";
    std::string probe = Env("SHARDVM_MBPROBE");
    ASSERT_TRUE(g_file_test(probe.c_str(), G_FILE_TEST_EXISTS))
        << "probe kernel missing: '" << probe << "'";
    std::string m1 = WriteFile("m1", "hi\n");
    std::string m2 = WriteFile("m2", std::string(5000, 'x'));
    std::string initrd = m1 + " x y," + m2;
    std::vector<std::string> common = {
        "-nographic", "-m", "256M", "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04", "-kernel", probe,
        "-append", "a b=c", "-initrd", initrd };
    std::vector<std::string> qargv = { qemu, "-enable-kvm", "-cpu", "qemu64",
                                       "-no-reboot" };
    qargv.insert(qargv.end(), common.begin(), common.end());
    std::vector<std::string> sargv = { Binary() };
    sargv.insert(sargv.end(), common.begin(), common.end());

    Result q = RunChild(qargv, 120);
    Result s = RunChild(sargv, 60);
    ASSERT_EQ(q.status, 67) << Describe(q);
    ASSERT_EQ(s.status, 67) << Describe(s);

    for (const char *p : { "MBPROBE magic=", "MBPROBE cmdline=",
                           "MBPROBE mod ", "MBPROBE end" }) {
        auto ql = Lines(q.out, p), sl = Lines(s.out, p);
        EXPECT_FALSE(sl.empty()) << p << "\n" << Describe(s);
        EXPECT_EQ(ql, sl) << p;
    }
    auto cmd = Lines(s.out, "MBPROBE cmdline=");
    ASSERT_EQ(cmd.size(), 1u);
    EXPECT_EQ(cmd[0], "MBPROBE cmdline=" + probe + " a b=c|");
    EXPECT_EQ(Lines(s.out, "MBPROBE mod ").size(), 2u);
    EXPECT_EQ(Lines(s.out, "MBPROBE loader="),
              std::vector<std::string>{ "MBPROBE loader=shardvm|" });
    EXPECT_EQ(Lines(s.out, "MBPROBE flags="),
              std::vector<std::string>{
                  "MBPROBE flags=0000024d lower=00000280 upper=0003fc00" });
    std::vector<std::string> mmap = {
        "MBPROBE mmap 0000000000000000 00000000000a0000 00000001",
        "MBPROBE mmap 00000000000a0000 0000000000060000 00000002",
        "MBPROBE mmap 0000000000100000 000000000ff00000 00000001",
    };
    EXPECT_EQ(Lines(s.out, "MBPROBE mmap "), mmap);
}

TEST_F(Integration, TripleFaultEndsWithStatusZero)
{
    // A flat a.out-kludge kernel that loads a selector beyond the (empty)
    // GDT: #GP with no IDT, #DF, triple fault.  QEMU with -no-reboot exits
    // 0 there.  (int3 would be simpler, but the platform's CPL0 emulator
    // reports it as an internal error.)
    const uint32_t load = 0x100000, entry = load + 32;
    uint32_t hdr[8] = { 0x1BADB002u, 1u << 16, 0, load, load, 0, 0, entry };
    hdr[2] = -(hdr[0] + hdr[1]);
    std::string img((const char *)hdr, sizeof(hdr));
    // mov $0x1234, %ax; mov %ax, %ds; jmp .
    img += std::string("\x66\xb8\x34\x12\x8e\xd8\xeb\xfe", 8);
    std::string p = WriteFile("gp.bin", img);
    Result r = Shardvm({ "-kernel", p });
    EXPECT_EQ(r.status, 0) << Describe(r);
    EXPECT_NE(r.err.find("shardvm: guest triple fault"), std::string::npos)
        << Describe(r);
}

} // namespace
