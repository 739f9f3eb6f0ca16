#include "qemu-run.h"

#include "../common/need-kvm.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <sstream>

std::vector<std::string> QemuRun::lines() const
{
    std::vector<std::string> out;
    std::istringstream in(output);
    std::string l;

    while (std::getline(in, l)) {
        l.erase(std::remove(l.begin(), l.end(), '\r'), l.end());
        out.push_back(l);
    }
    return out;
}

bool QemuRun::has_line(const std::string &line) const
{
    for (const auto &l : lines()) {
        if (l == line) {
            return true;
        }
    }
    return false;
}

std::string QemuRun::line_starting(const std::string &prefix) const
{
    for (const auto &l : lines()) {
        if (l.compare(0, prefix.size(), prefix) == 0) {
            return l;
        }
    }
    return "";
}

std::string env_path(const char *name)
{
    const char *v = getenv(name);

    return v ? v : "";
}

std::string qemu_missing()
{
    std::string qemu = env_path("SHARDVM_QEMU");

    if (qemu.empty() || access(qemu.c_str(), X_OK) != 0) {
        return "qemu-system-x86_64 not found (SHARDVM_QEMU='" + qemu +
               "'): install qemu-system-x86 (scripts/lib.sh lists it)";
    }
    if (access("/dev/kvm", R_OK | W_OK) != 0 &&
        !shardvm_test::kvm_absence_skips()) {
        // /dev/kvm exists but is broken (or SHARDVM_REQUIRE_KVM=1): fail.
        return std::string("/dev/kvm is not usable: ") + strerror(errno);
    }
    return "";
}

// "-enable-kvm", or TCG on a machine whose kernel has no KVM at all (the
// guest is the same; only its speed differs).  See tests/common/need-kvm.h.
std::vector<std::string> qemu_accel()
{
    if (access("/dev/kvm", R_OK | W_OK) == 0) {
        return { "-enable-kvm" };
    }
    return { "-accel", "tcg" };
}

static double now_s()
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

QemuRun qemu_run(const std::string &elf, const std::string &append,
                 const std::vector<std::string> &extra, int timeout_s)
{
    std::string qemu = env_path("SHARDVM_QEMU");
    std::vector<std::string> args = {
        qemu, "-cpu", "qemu64", "-m", "256M", "-nographic",
        "-no-reboot", "-kernel", elf, "-append", append,
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
    };

    std::vector<std::string> accel = qemu_accel();
    args.insert(args.begin() + 1, accel.begin(), accel.end());
    args.insert(args.end(), extra.begin(), extra.end());
    return child_run(args, timeout_s);
}

QemuRun child_run(const std::vector<std::string> &args, int timeout_s)
{
    QemuRun r;
    std::vector<char *> argv;
    int fds[2], status;
    pid_t pid;

    for (auto &a : args) {
        argv.push_back(const_cast<char *>(a.c_str()));
    }
    argv.push_back(nullptr);

    if (pipe2(fds, O_CLOEXEC) < 0) {
        r.error = std::string("pipe: ") + strerror(errno);
        return r;
    }
    pid = fork();
    if (pid < 0) {
        r.error = std::string("fork: ") + strerror(errno);
        close(fds[0]);
        close(fds[1]);
        return r;
    }
    if (pid == 0) {
        int null = open("/dev/null", O_RDONLY);

        dup2(null, 0);
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        execv(argv[0], argv.data());
        _exit(127);
    }
    close(fds[1]);
    r.started = true;

    double deadline = now_s() + timeout_s;
    for (;;) {
        struct pollfd p = { fds[0], POLLIN, 0 };
        double left = deadline - now_s();
        char buf[4096];
        ssize_t n;

        if (left <= 0) {
            r.timed_out = true;
            kill(pid, SIGKILL);
            break;
        }
        if (poll(&p, 1, (int)(left * 1000) + 1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        if (!p.revents) {
            continue;
        }
        n = read(fds[0], buf, sizeof(buf));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;      // EOF: QEMU has exited (or closed its output)
        }
        r.output.append(buf, (size_t)n);
    }
    close(fds[0]);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    r.exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}
