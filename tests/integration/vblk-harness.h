// The harness of the blk-guest integration tests (test-vblk.cc,
// test-vblk-rel.cc): shardvm as a child with a QMP client, the guest's
// output, the stamp, and the Vblk fixture (images, arguments, boots).
// Everything sits in an anonymous namespace: each test file that
// includes it gets its own copy.
#ifndef SHARDVM_TESTS_VBLK_HARNESS_H
#define SHARDVM_TESTS_VBLK_HARNESS_H

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
#include <functional>
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
        term_signal_ = WIFSIGNALED(ws) ? WTERMSIG(ws) : 0;
        return WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
    }

    // Send signal @sig to shardvm; false when it is not running.
    bool Signal(int sig) { return pid_ > 0 && kill(pid_, sig) == 0; }

    // Pump the output until @done(output) is true; false on timeout or when
    // shardvm closed its output first.
    bool WaitOutput(const std::function<bool(const std::string &)> &done, double timeout_s)
    {
        double end = NowS() + timeout_s;
        while (!done(output_)) {
            if (out_ < 0 || NowS() >= end) {
                return false;
            }
            Pump(100);
        }
        return true;
    }

    // The first QMP event named @name (one seen earlier included), read
    // until @timeout_s passes; "" if none came.
    std::string WaitEvent(const std::string &name, double timeout_s)
    {
        std::string key = "\"event\":\"" + name + "\"";
        double end = NowS() + timeout_s;
        for (;;) {
            for (const auto &e : events_) {
                if (e.find(key) != std::string::npos) {
                    return e;
                }
            }
            if (NowS() >= end) {
                return "";
            }
            std::string l = QmpLine();
            if (l.empty()) {
                return "";
            }
            if (l.find("\"event\"") != std::string::npos) {
                events_.push_back(l);
            }
        }
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
    // The signal that ended shardvm (after Finish), 0 if it exited.
    int term_signal() const { return term_signal_; }
    const std::vector<std::string> &events() const { return events_; }
    void ClearEvents() { events_.clear(); }

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
    int term_signal_ = 0;
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
[[maybe_unused]] std::string QueueOwners(const std::string &reply)
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

}  // namespace

#endif
