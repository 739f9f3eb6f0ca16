// The QMP server on real sockets in the main loop: socketpair and unix
// listener clients, several at once, disconnects mid-message and
// mid-reply, 100 clients coming and going.
#include "qmp-test.h"
#include "shardvm/main-loop.h"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace {

class QmpServer : public ::testing::Test {
protected:
    FakeVm *vm = nullptr;
    Monitor *mon = nullptr;
    std::string path;

    void SetUp() override
    {
        GError *err = nullptr;
        ASSERT_EQ(main_loop_init(false, &err), 0);
        vm = new FakeVm();
        mon = monitor_new(&FakeVm::ops, vm);
        path = std::string(g_get_tmp_dir()) + "/shardvm-qmp-test-" +
               std::to_string(getpid()) + ".sock";
        ASSERT_EQ(monitor_add_listener(mon, ("unix:" + path +
                                             ",server=on,wait=off").c_str(),
                                       &err), 0)
            << err->message;
    }
    void TearDown() override
    {
        monitor_free(mon);
        EXPECT_NE(access(path.c_str(), F_OK), 0) << "socket not unlinked";
        delete vm;
        main_loop_cleanup();
    }

    int Connect()
    {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {};
        sa.sun_family = AF_UNIX;
        strcpy(sa.sun_path, path.c_str());
        EXPECT_EQ(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        return fd;
    }

    // Run the main loop until @fd has a whole line; return it ("" on EOF).
    std::string ReadLine(int fd)
    {
        std::string line;
        for (;;) {
            struct pollfd p = { fd, POLLIN, 0 };
            if (poll(&p, 1, 0) == 1) {
                char c;
                ssize_t n = recv(fd, &c, 1, 0);
                if (n <= 0) {
                    return line;
                }
                line += c;
                if (line.size() >= 2 && line.compare(line.size() - 2, 2,
                                                     "\r\n") == 0) {
                    return line.substr(0, line.size() - 2);
                }
                continue;
            }
            main_loop_wait(false);
        }
    }

    void Send(int fd, const std::string &s)
    {
        ASSERT_EQ(send(fd, s.data(), s.size(), MSG_NOSIGNAL),
                  (ssize_t)s.size());
    }

    // Pump the loop until the monitor has @n clients.
    void WaitClients(unsigned n)
    {
        for (int i = 0; i < 100000 && monitor_client_count(mon) != n; i++) {
            main_loop_wait(true);
        }
        ASSERT_EQ(monitor_client_count(mon), n);
    }
};

TEST_F(QmpServer, ClientsNegotiateIndependently)
{
    int a = Connect(), b = Connect();
    EXPECT_NE(ReadLine(a).find("\"QMP\""), std::string::npos);
    EXPECT_NE(ReadLine(b).find("\"QMP\""), std::string::npos);
    Send(a, "{\"execute\":\"qmp_capabilities\"}");
    EXPECT_EQ(ReadLine(a), "{\"return\":{}}");
    Send(b, "{\"execute\":\"query-status\"}");
    EXPECT_NE(ReadLine(b).find("Expecting capabilities"), std::string::npos);
    // Events reach the negotiated client only.
    Send(a, "{\"execute\":\"cont\"}");
    EXPECT_NE(ReadLine(a).find("RESUME"), std::string::npos);
    EXPECT_EQ(ReadLine(a), "{\"return\":{}}");
    Send(b, "{\"execute\":\"qmp_capabilities\"}");
    EXPECT_EQ(ReadLine(b), "{\"return\":{}}"); // no RESUME before it
    close(a);
    close(b);
    WaitClients(0);
}

TEST_F(QmpServer, SocketpairClient)
{
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    monitor_add_client_fd(mon, sv[0]);
    EXPECT_NE(ReadLine(sv[1]).find("\"QMP\""), std::string::npos);
    Send(sv[1], "{\"execute\":\"qmp_capabilities\"}{\"execute\":");
    EXPECT_EQ(ReadLine(sv[1]), "{\"return\":{}}");
    Send(sv[1], "\"query-name\"}");
    EXPECT_EQ(ReadLine(sv[1]), "{\"return\":{}}");
    close(sv[1]);
    WaitClients(0);
}

TEST_F(QmpServer, DisconnectMidMessageAndMidReply)
{
    int a = Connect();
    ReadLine(a);
    Send(a, "{\"execute\":\"qmp_capabilities\"}{\"execute\":\"query-");
    close(a); // mid-message, with a reply unread
    WaitClients(0);

    // Mid-reply: a client that asks for a lot and never reads.
    int b = Connect();
    int sz = 4096;
    setsockopt(b, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
    ReadLine(b);
    Send(b, "{\"execute\":\"qmp_capabilities\"}");
    std::string many;
    for (int i = 0; i < 2000; i++) {
        many += "{\"execute\":\"query-commands\"}";
    }
    Send(b, many);
    for (int i = 0; i < 200; i++) {
        main_loop_wait(true);
    }
    close(b);
    // The monitor sees EPIPE/ECONNRESET or EOF and drops the client; the
    // loop and the other clients go on.
    int c = Connect();
    EXPECT_NE(ReadLine(c).find("\"QMP\""), std::string::npos);
    WaitClients(1);
    close(c);
    WaitClients(0);
}

TEST_F(QmpServer, HundredClientsComeAndGo)
{
    std::vector<int> fds;
    for (int i = 0; i < 100; i++) {
        fds.push_back(Connect());
        main_loop_wait(true); // accept: the listen backlog is 64
    }
    for (int i = 0; i < 100; i++) {
        EXPECT_NE(ReadLine(fds[i]).find("\"QMP\""), std::string::npos);
        if (i % 2) {
            Send(fds[i], "{\"execute\":\"qmp_capabilities\",\"id\":" +
                             std::to_string(i) + "}");
            EXPECT_EQ(ReadLine(fds[i]),
                      "{\"return\":{},\"id\":" + std::to_string(i) + "}");
        }
    }
    WaitClients(100);
    monitor_emit_event(mon, "STOP", nullptr);
    for (int i = 1; i < 100; i += 2) {
        EXPECT_NE(ReadLine(fds[i]).find("\"STOP\""), std::string::npos);
    }
    for (int fd : fds) {
        close(fd);
    }
    WaitClients(0);
}

TEST_F(QmpServer, TcpListener)
{
    GError *err = nullptr;
    // Port 0 is refused by the parser; find a free port first.
    int probe = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(probe, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t len = sizeof(sa);
    getsockname(probe, (struct sockaddr *)&sa, &len);
    close(probe);
    int port = ntohs(sa.sin_port);
    ASSERT_EQ(monitor_add_listener(mon, ("tcp:127.0.0.1:" +
                                         std::to_string(port) +
                                         ",server=on,wait=off").c_str(),
                                   &err), 0)
        << err->message;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_EQ(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    EXPECT_NE(ReadLine(fd).find("\"QMP\""), std::string::npos);
    close(fd);
    WaitClients(0);
}

// QEMU's "tcp::PORT" (every address) and "tcp:[::1]:PORT" forms listen,
// and a client reaches them over IPv4 and IPv6 loopback respectively.
TEST_F(QmpServer, TcpListenerEveryAddressAndIpv6)
{
    GError *err = nullptr;
    auto free_port = [](int family) {
        int probe = socket(family, SOCK_STREAM, 0);
        struct sockaddr_storage ss = {};
        socklen_t len;
        if (family == AF_INET) {
            auto *sa = (struct sockaddr_in *)&ss;
            sa->sin_family = AF_INET;
            len = sizeof(*sa);
        } else {
            auto *sa = (struct sockaddr_in6 *)&ss;
            sa->sin6_family = AF_INET6;
            sa->sin6_addr = in6addr_loopback;
            len = sizeof(*sa);
        }
        int port = -1;
        if (probe >= 0 && bind(probe, (struct sockaddr *)&ss, len) == 0 &&
            getsockname(probe, (struct sockaddr *)&ss, &len) == 0) {
            port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                           : ((struct sockaddr_in6 *)&ss)->sin6_port);
        }
        if (probe >= 0) {
            close(probe);
        }
        return port;
    };

    int port = free_port(AF_INET);
    ASSERT_GT(port, 0);
    ASSERT_EQ(monitor_add_listener(mon, ("tcp::" + std::to_string(port) +
                                         ",server,nowait").c_str(), &err), 0)
        << err->message;
    struct sockaddr_in sa = {};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(port);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_EQ(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    EXPECT_NE(ReadLine(fd).find("\"QMP\""), std::string::npos);
    close(fd);
    WaitClients(0);

    int port6 = free_port(AF_INET6);
    if (port6 <= 0) {
        GTEST_SKIP() << "no IPv6 loopback on this host";
    }
    ASSERT_EQ(monitor_add_listener(mon, ("tcp:[::1]:" + std::to_string(port6) +
                                         ",server=on,wait=off").c_str(), &err), 0)
        << err->message;
    struct sockaddr_in6 sa6 = {};
    sa6.sin6_family = AF_INET6;
    sa6.sin6_addr = in6addr_loopback;
    sa6.sin6_port = htons(port6);
    fd = socket(AF_INET6, SOCK_STREAM, 0);
    ASSERT_EQ(connect(fd, (struct sockaddr *)&sa6, sizeof(sa6)), 0);
    EXPECT_NE(ReadLine(fd).find("\"QMP\""), std::string::npos);
    close(fd);
    WaitClients(0);
}

// A unix socket path with a comma (",," in the option, as in QEMU): the
// parsed address goes to monitor_add_listener() as machine.c passes it,
// and the socket is made at that path -- not at the part before the comma
// (with "q,,server,,nowait" that was "q", and a stale socket there would
// have been unlinked).
TEST_F(QmpServer, UnixPathWithCommaFromTheOption)
{
    GError *err = nullptr;
    std::string dir = path + ".d";
    ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
    std::string want = dir + "/q,server,nowait";
    char *norm = monitor_parse_qmp(("unix:" + dir + "/q,,server,,nowait,server=on,"
                                    "wait=off").c_str(), &err);
    ASSERT_TRUE(norm) << err->message;
    int r = monitor_add_listener(mon, norm, &err);
    g_free(norm);
    EXPECT_EQ(r, 0) << (err ? err->message : "");
    g_clear_error(&err);
    EXPECT_EQ(access(want.c_str(), F_OK), 0) << "no socket at " << want;
    EXPECT_NE(access((dir + "/q").c_str(), F_OK), 0) << "socket at the cut path";
    if (r == 0) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {};
        sa.sun_family = AF_UNIX;
        strcpy(sa.sun_path, want.c_str());
        EXPECT_EQ(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        EXPECT_NE(ReadLine(fd).find("\"QMP\""), std::string::npos);
        close(fd);
        WaitClients(0);
    }
    monitor_free(mon);
    mon = monitor_new(&FakeVm::ops, vm);
    ASSERT_EQ(monitor_add_listener(mon, ("unix:" + path + ",server=on,wait=off").c_str(),
                                   &err), 0);
    unlink(want.c_str());
    unlink((dir + "/q").c_str());
    EXPECT_EQ(rmdir(dir.c_str()), 0);
}

// "tcp::PORT" listens on every address, IPv6 included: QEMU 7.2 serves a
// client of [::1] there (it listens on 0.0.0.0 and [::]); shardvm bound
// only the first address getaddrinfo() gave, 0.0.0.0.
TEST_F(QmpServer, TcpEveryAddressServesIpv4AndIpv6)
{
    int p6 = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 sa6 = {};
    sa6.sin6_family = AF_INET6;
    sa6.sin6_addr = in6addr_loopback;
    if (p6 < 0 || bind(p6, (struct sockaddr *)&sa6, sizeof(sa6)) != 0) {
        if (p6 >= 0) {
            close(p6);
        }
        GTEST_SKIP() << "no IPv6 loopback on this host";
    }
    socklen_t len = sizeof(sa6);
    getsockname(p6, (struct sockaddr *)&sa6, &len);
    close(p6);
    int port = ntohs(sa6.sin6_port);
    GError *err = nullptr;
    ASSERT_EQ(monitor_add_listener(mon, ("tcp::" + std::to_string(port) +
                                         ",server=on,wait=off").c_str(), &err), 0)
        << err->message;
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    EXPECT_EQ(connect(fd, (struct sockaddr *)&sa6, sizeof(sa6)), 0) << strerror(errno);
    EXPECT_NE(ReadLine(fd).find("\"QMP\""), std::string::npos);
    close(fd);
    struct sockaddr_in sa = {};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(port);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    EXPECT_EQ(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0) << strerror(errno);
    EXPECT_NE(ReadLine(fd).find("\"QMP\""), std::string::npos);
    close(fd);
    WaitClients(0);
}

// Hostile -qmp tcp addresses: a second listener on a port already taken
// (every address twice, and every address after one of them), a 100 KB
// host, a scope id naming no interface: each fails at once with the
// address in the error, leaving no descriptor behind.
TEST_F(QmpServer, TcpListenerRefusalsLeakNothing)
{
    auto open_fds = [] {
        int n = 0;
        for (int fd = 0; fd < 4096; fd++) {
            n += fcntl(fd, F_GETFD) >= 0;
        }
        return n;
    };
    int probe = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {};
    sa.sin_family = AF_INET;
    ASSERT_EQ(bind(probe, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t len = sizeof(sa);
    getsockname(probe, (struct sockaddr *)&sa, &len);
    close(probe);
    std::string port = std::to_string(ntohs(sa.sin_port));
    GError *err = nullptr;
    ASSERT_EQ(monitor_add_listener(mon, ("tcp::" + port + ",server,nowait").c_str(), &err), 0)
        << err->message;
    int before = open_fds();
    for (std::string a : { "tcp::" + port, "tcp:127.0.0.1:" + port,
                           "tcp:" + std::string(100000, 'h') + ":" + port,
                           "tcp:[fe80::1%no-such-if]:" + port }) {
        char *norm = monitor_parse_qmp((a + ",server=on,wait=off").c_str(), &err);
        ASSERT_TRUE(norm) << (err ? err->message : "");
        EXPECT_LT(monitor_add_listener(mon, norm, &err), 0) << a.substr(0, 40);
        ASSERT_TRUE(err);
        EXPECT_NE(std::string(err->message).find(a.substr(4, 40)), std::string::npos)
            << err->message;
        g_clear_error(&err);
        g_free(norm);
    }
    EXPECT_EQ(open_fds(), before);
    // The first listener still serves.
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_EQ(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    EXPECT_NE(ReadLine(fd).find("\"QMP\""), std::string::npos);
    close(fd);
    WaitClients(0);
}

// The spare descriptor (/dev/null, O_RDONLY) the monitor keeps for running
// out of them: the highest such fd above stdio.
int SpareFd()
{
    int best = -1;
    for (int fd = 3; fd < 1024; fd++) {
        char link[64], target[64];
        snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof(target) - 1);
        if (n > 0) {
            target[n] = 0;
            if (strcmp(target, "/dev/null") == 0) {
                best = fd;
            }
        }
    }
    return best;
}

// accept() fails with no descriptor left, not even the spare: the
// listener stops being watched (no busy loop) and is watched again when a
// client goes, so a connection queued meanwhile is served then.
TEST_F(QmpServer, ListenerPausedForLackOfFdsResumesWhenAClientGoes)
{
    int a = Connect();
    WaitClients(1);
    EXPECT_NE(ReadLine(a).find("\"QMP\""), std::string::npos);
    int spare = SpareFd();
    ASSERT_GT(spare, 2);
    int b = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(b, 0);
    struct rlimit saved, low;
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
    low = saved;
    low.rlim_cur = (rlim_t)spare; // not even the spare's own number
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
    struct sockaddr_un sa = {};
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, path.c_str());
    int rc = connect(b, (struct sockaddr *)&sa, sizeof(sa)); // queued
    for (int i = 0; i < 10; i++) {
        main_loop_wait(true); // non-blocking
    }
    unsigned during = monitor_client_count(mon);
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &saved), 0);
    ASSERT_EQ(rc, 0);
    EXPECT_EQ(during, 1u) << "accepted without a descriptor?";
    close(a);
    for (int i = 0; i < 1000 && monitor_client_count(mon) != 0; i++) {
        main_loop_wait(true); // non-blocking
    }
    ASSERT_EQ(monitor_client_count(mon), 0u) << "client a never went";
    for (int i = 0; i < 1000 && monitor_client_count(mon) != 1; i++) {
        main_loop_wait(true); // non-blocking
    }
    EXPECT_EQ(monitor_client_count(mon), 1u) << "listener never resumed";
    if (monitor_client_count(mon) == 1) {
        EXPECT_NE(ReadLine(b).find("\"QMP\""), std::string::npos);
    }
    close(b);
    for (int i = 0; i < 1000 && monitor_client_count(mon) != 0; i++) {
        main_loop_wait(true); // non-blocking
    }
}

}  // namespace
