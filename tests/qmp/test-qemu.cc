// Same shape as QEMU: QEMU 7.2 (TCG, -S, -object iothread,id=io0) and the
// shardvm monitor (fake backend with the same IOThread) get the same
// commands; member names and JSON types of every reply, error and event
// must match (values may differ).  Differences are listed in
// docs/usage.md.
#include "qmp-test.h"

#include <gtest/gtest.h>

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

namespace {

// Lines until a reply ("return"/"error"), events included: shapes, plus
// class/desc of errors.
using Exchange = std::vector<std::string>;

std::string Describe(JsonNode *n)
{
    std::string s = Shape(n);
    if (Member(n, "error")) {
        s += " class=" + Str(n, "error.class") + " desc=" +
             Str(n, "error.desc");
    }
    if (Member(n, "event")) {
        s += " event=" + Str(n, "event");
    }
    return s;
}

class Qemu {
public:
    pid_t pid = -1;
    int fd = -1;
    std::string buf;

    bool Start(const std::string &sock, std::string *why)
    {
        if (system("command -v qemu-system-x86_64 >/dev/null 2>&1") != 0) {
            *why = "qemu-system-x86_64 is not installed (Debian package "
                   "qemu-system-x86): this test compares with QEMU 7.2";
            return false;
        }
        unlink(sock.c_str());
        std::string qmp = "unix:" + sock + ",server=on,wait=off";
        const char *argv[] = { "qemu-system-x86_64", "-accel", "tcg",
                               "-nodefaults", "-display", "none", "-S",
                               "-object", "iothread,id=io0", "-qmp",
                               qmp.c_str(), nullptr };
        if (posix_spawnp(&pid, argv[0], nullptr, nullptr,
                         const_cast<char **>(argv), environ) != 0) {
            *why = "cannot start qemu-system-x86_64";
            return false;
        }
        for (int i = 0; i < 3000; i++) { // QEMU needs ~0.1-1 s to listen
            fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            struct sockaddr_un sa = {};
            sa.sun_family = AF_UNIX;
            strcpy(sa.sun_path, sock.c_str());
            if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
                return true;
            }
            close(fd);
            fd = -1;
            usleep(10000);
        }
        *why = "QEMU never opened its QMP socket";
        return false;
    }
    ~Qemu()
    {
        if (fd >= 0) {
            close(fd);
        }
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, nullptr, 0);
        }
    }
    // One line, or "" on EOF.
    std::string Line()
    {
        for (;;) {
            size_t eol = buf.find("\r\n");
            if (eol != std::string::npos) {
                std::string l = buf.substr(0, eol);
                buf.erase(0, eol + 2);
                return l;
            }
            char tmp[4096];
            ssize_t n = recv(fd, tmp, sizeof(tmp), 0);
            if (n <= 0) {
                return "";
            }
            buf.append(tmp, n);
        }
    }
};

class QmpVsQemu : public ::testing::Test {
protected:
    FakeVm vm;
    Monitor *mon = nullptr;
    QmpSession *s = nullptr;
    std::string ours;
    Qemu qemu;

    static int Write(void *o, const char *b, size_t n)
    {
        static_cast<QmpVsQemu *>(o)->ours.append(b, n);
        return 0;
    }

    void SetUp() override
    {
        std::string why;
        std::string sock = std::string(g_get_tmp_dir()) + "/shardvm-qmpcmp-" +
                           std::to_string(getpid()) + ".sock";
        ASSERT_TRUE(qemu.Start(sock, &why)) << why;
        unlink(sock.c_str());
        vm.disks.clear(); // QEMU runs without drives here
        vm.state = "prelaunch";
        GError *err = nullptr;
        vm.iothreads.push_back(iothread_new("io0", nullptr, &err));
        mon = monitor_new(&FakeVm::ops, &vm);
        s = qmp_session_new(mon, Write, this);
    }
    void TearDown() override
    {
        qmp_session_free(s);
        monitor_free(mon);
    }

    std::string OurLine()
    {
        size_t eol = ours.find("\r\n");
        if (eol == std::string::npos) {
            return "";
        }
        std::string l = ours.substr(0, eol);
        ours.erase(0, eol + 2);
        return l;
    }

    // Until (and with) the reply or the greeting.
    template <typename F> Exchange Collect(F next)
    {
        Exchange ex;
        for (;;) {
            std::string l = next();
            if (l.empty()) {
                ex.push_back("<EOF>");
                return ex;
            }
            JsonNode *n = ParseJson(l);
            ex.push_back(Describe(n));
            bool done = !Member(n, "event");
            json_node_unref(n);
            if (done) {
                return ex;
            }
        }
    }

    void Compare(const std::string &cmd)
    {
        if (!cmd.empty()) {
            ASSERT_EQ(send(qemu.fd, cmd.data(), cmd.size(), MSG_NOSIGNAL),
                      (ssize_t)cmd.size());
            ASSERT_EQ(qmp_session_feed(s, cmd.data(), cmd.size()), 0);
        }
        Exchange theirs = Collect([this] { return qemu.Line(); });
        Exchange mine = Collect([this] { return OurLine(); });
        EXPECT_EQ(mine, theirs) << "command: " << cmd;
    }
};

TEST_F(QmpVsQemu, SameShapes)
{
    const char *const cmds[] = {
        "", // the greeting
        "{\"execute\":\"query-status\"}",
        "{\"execute\":\"qmp_capabilities\",\"id\":{\"x\":[1]}}",
        "{\"execute\":\"qmp_capabilities\"}",
        "{\"execute\":\"query-version\"}",
        "{\"execute\":\"query-status\"}",
        "{\"execute\":\"query-name\"}",
        "{\"execute\":\"query-kvm\"}",
        "{\"execute\":\"query-cpus-fast\"}",
        "{\"execute\":\"query-iothreads\"}",
        "{\"execute\":\"query-commands\"}",
        "{\"execute\":\"query-block\"}",
        "{\"execute\":\"query-blockstats\"}",
        "{\"execute\":\"qom-list\",\"arguments\":{\"path\":\"/objects/io0\"}}",
        "{\"execute\":\"qom-get\",\"arguments\":{\"path\":\"/objects/io0\","
        "\"property\":\"poll-max-ns\"}}",
        "{\"execute\":\"qom-set\",\"arguments\":{\"path\":\"/objects/io0\","
        "\"property\":\"poll-max-ns\",\"value\":1000}}",
        "{\"execute\":\"qom-set\",\"arguments\":{\"path\":\"/objects/io0\","
        "\"property\":\"poll-max-ns\",\"value\":-1}}",
        "{\"execute\":\"qom-get\",\"arguments\":{\"path\":\"/objects/nope\","
        "\"property\":\"poll-max-ns\"}}",
        "{\"execute\":\"qom-get\",\"arguments\":{\"path\":\"/objects/io0\","
        "\"property\":\"nope\"}}",
        "{\"execute\":\"object-add\",\"arguments\":{\"qom-type\":"
        "\"iothread\",\"id\":\"io1\",\"poll-max-ns\":100}}",
        "{\"execute\":\"object-add\",\"arguments\":{\"qom-type\":"
        "\"iothread\",\"id\":\"io1\"}}",
        "{\"execute\":\"object-add\",\"arguments\":{\"qom-type\":"
        "\"iothread\",\"id\":\"io2\",\"bogus\":1}}",
        "{\"execute\":\"object-add\",\"arguments\":{\"qom-type\":"
        "\"iothread\",\"id\":\"io3\",\"poll-max-ns\":\"x\"}}",
        "{\"execute\":\"object-add\",\"arguments\":{\"qom-type\":"
        "\"nope\",\"id\":\"io4\"}}",
        "{\"execute\":\"object-del\",\"arguments\":{\"id\":\"io1\"}}",
        "{\"execute\":\"object-del\",\"arguments\":{\"id\":\"io1\"}}",
        "{\"execute\":\"foo\",\"id\":7}",
        "{\"execute\":\"query-name\",\"arguments\":{\"x\":1}}",
        "{\"execute\":\"qom-get\",\"arguments\":{\"path\":\"/objects/io0\"}}",
        "{\"execute\":\"qom-get\",\"arguments\":{\"path\":1,\"property\":"
        "\"x\"}}",
        "[1]",
        "{\"foo\":1}",
        "{\"execute\":1}",
        "{\"execute\":\"query-status\",\"arguments\":[]}",
        "{\"execute\":\"cont\"}",
        "{\"execute\":\"stop\"}",
        "{\"execute\":\"system_powerdown\"}",
        "{\"execute\":\"quit\"}",
    };
    for (const char *c : cmds) {
        Compare(c);
    }
}

}  // namespace
