// Hostile input against the QMP monitor: framing edge cases, JSON json-glib
// cannot take, absurd arguments, and sockets (fd exhaustion, clients that
// never read) -- each must get QEMU's error or a closed connection.
#include "qmp-test.h"
#include "shardvm/main-loop.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

// ---- a session without sockets ------------------------------------------

class QmpAttack : public ::testing::Test {
protected:
    FakeVm vm;
    Monitor *mon = nullptr;
    QmpSession *s = nullptr;
    std::string out;

    static int Write(void *o, const char *buf, size_t len)
    {
        static_cast<QmpAttack *>(o)->out.append(buf, len);
        return 0;
    }
    void SetUp() override
    {
        mon = monitor_new(&FakeVm::ops, &vm);
        s = qmp_session_new(mon, Write, this);
        out.clear();
        Feed("{\"execute\":\"qmp_capabilities\"}");
        ASSERT_EQ(Line(), "{\"return\":{}}");
    }
    void TearDown() override
    {
        qmp_session_free(s);
        monitor_free(mon);
    }
    void Feed(const std::string &in)
    {
        ASSERT_EQ(qmp_session_feed(s, in.data(), in.size()), 0);
    }
    // The next output line ("" when none).
    std::string Line()
    {
        size_t eol = out.find("\r\n");
        if (eol == std::string::npos) {
            return "";
        }
        std::string l = out.substr(0, eol);
        out.erase(0, eol + 2);
        return l;
    }
    // The next line must be valid JSON (and valid UTF-8); returns it.
    std::string JsonLine()
    {
        std::string l = Line();
        EXPECT_TRUE(g_utf8_validate(l.data(), (gssize)l.size(), nullptr))
            << l;
        JsonNode *n = ParseJson(l);
        EXPECT_TRUE(n) << "not JSON: " << l;
        if (n) {
            json_node_unref(n);
        }
        return l;
    }
    std::string ErrorDesc(const std::string &l)
    {
        JsonNode *n = ParseJson(l);
        std::string d = Str(n, "error.desc");
        if (n) {
            json_node_unref(n);
        }
        return d;
    }
};

// json-glib's parser recurses once per level: 100000 nested arrays
// overflowed the stack.  The framing layer counts the depth and refuses
// past 1024 levels (QEMU's limit) before json-glib sees the message.
TEST_F(QmpAttack, DeepNestingIsRefusedBeforeParsing)
{
    for (const char *o : { "[]", "{}" }) {
        std::string deep;
        for (int i = 0; i < 100000; i++) {
            deep += o[0] == '[' ? "[" : "{\"a\":";
        }
        deep += o[0] == '[' ? "" : "1";
        deep += std::string(100000, o[1]);
        Feed(deep);
        EXPECT_EQ(ErrorDesc(JsonLine()),
                  "JSON parse error, JSON nesting depth limit exceeded");
        EXPECT_EQ(Line(), "");
    }
    // 1024 levels are fine (json-glib parses them), and the session goes on.
    std::string ok = "{\"execute\":\"query-name\",\"id\":" +
                     std::string(1023, '[') + std::string(1023, ']') + "}";
    Feed(ok);
    EXPECT_EQ(Line().substr(0, 26), "{\"return\":{},\"id\":[[[[[[[[");
    Feed("{\"execute\":\"query-name\"}");
    EXPECT_EQ(Line(), "{\"return\":{}}");
}

// "\u0000" cut strings short in json-glib: "query-name\u0000junk" ran
// query-name and an id "a\u0000b" came back as "a".  QEMU refuses it.
TEST_F(QmpAttack, NulEscapeIsRefused)
{
    for (const char *in : {
             "{\"execute\":\"query-name\\u0000junk\"}",
             "{\"execute\":\"query-name\",\"id\":\"a\\u0000b\"}",
             "{\"execute\":\"query-name\",\"id\":\"\\\\\\u0000\"}",
         }) {
        Feed(in);
        EXPECT_EQ(ErrorDesc(JsonLine()),
                  "JSON parse error, \\u0000 is not supported") << in;
    }
    // Split across feeds, byte by byte.
    std::string m = "{\"execute\":\"query-name\",\"id\":\"\\u0000\"}";
    for (char c : m) {
        Feed(std::string(1, c));
    }
    EXPECT_EQ(ErrorDesc(JsonLine()),
              "JSON parse error, \\u0000 is not supported");
    // Other escapes, and a literal backslash before "u0000", are fine.
    Feed("{\"execute\":\"query-name\",\"id\":\"\\\\u0000\\u0041\\u00e9\"}");
    EXPECT_EQ(Line(), "{\"return\":{},\"id\":\"\\\\u0000A\xc3\xa9\"}");
}

// Numbers json-glib cannot hold came back wrong: an id 1e400 was echoed
// as "inf.0" (not JSON), 99999999999999999999999999 as -1.
TEST_F(QmpAttack, NumbersOutOfRangeAreRefused)
{
    for (const char *num : { "1e400", "-1e400", "99999999999999999999999999",
                             "18446744073709551615", "9223372036854775808",
                             "-9223372036854775809" }) {
        Feed(std::string("{\"execute\":\"query-name\",\"id\":") + num + "}");
        std::string l = JsonLine();
        EXPECT_EQ(ErrorDesc(l), "JSON parse error, number out of range")
            << num << " -> " << l;
    }
    // The limits themselves, and tiny or long doubles, are fine.
    for (const char *num : { "9223372036854775807", "-9223372036854775808",
                             "1e-400", "1.5e300", "-0", "0.000000000000000000000000000001" }) {
        std::string in = std::string("{\"execute\":\"query-name\",\"id\":") +
                         num + "}";
        Feed(in);
        std::string l = JsonLine();
        EXPECT_EQ(l.substr(0, 12), "{\"return\":{}") << num << " -> " << l;
    }
    // Split across feeds.
    std::string m = "{\"execute\":\"query-name\",\"id\":[1,99999999999999999999]}";
    for (char c : m) {
        Feed(std::string(1, c));
    }
    EXPECT_EQ(ErrorDesc(JsonLine()), "JSON parse error, number out of range");
}

// json-glib takes 'single-quoted' strings (without escapes); the framing
// layer did not know them and cut {"id":'}'} at the quoted brace.
TEST_F(QmpAttack, SingleQuotedStringsAreFramed)
{
    Feed("{'execute':'query-name','id':'}{\"\\'}");
    EXPECT_EQ(Line(), "{\"return\":{},\"id\":\"}{\\\"\\\\\"}");
    EXPECT_EQ(Line(), "");
}
// json-glib decodes a lone UTF-16 surrogate escape ("\udc00") into bytes
// that are not UTF-8 (ED B0 80) and drops the character after it: an id
// "\udc00x" came back as "<ED B0 80>", a reply no JSON client can read.
// QEMU refuses such a string; so does the framing layer now.
TEST_F(QmpAttack, LoneSurrogateEscapesAreRefused)
{
    for (const char *id : { "\\udc00x", "\\udfff", "a\\udc00", "\\ud800\\ud800\\udc00",
                            "\\ud800x", "\\ud800\\n" }) {
        out.clear();
        Feed(std::string("{\"execute\":\"query-name\",\"id\":\"") + id + "\"}");
        std::string l = JsonLine();
        EXPECT_TRUE(l.find("\"error\"") != std::string::npos) << id << " -> " << l;
        EXPECT_EQ(l.find("\"return\""), std::string::npos) << id << " -> " << l;
        EXPECT_EQ(Line(), "") << id;
    }
    // A proper pair (U+1F600) is fine, in either case of hex digits.
    out.clear();
    Feed("{\"execute\":\"query-name\",\"id\":\"\\ud83d\\ude00\\uD83D\\uDE00\"}");
    EXPECT_EQ(JsonLine(), "{\"return\":{},\"id\":\"\xf0\x9f\x98\x80\xf0\x9f\x98\x80\"}");
}

// json-glib's parse error quotes a broken string constant as it decoded
// it: "\ude" cut short by the closing quote came back as bytes that are not
// UTF-8, and the error reply was then no JSON a client could read (found by
// fuzz-qmp; tests/fuzz/corpus/fuzz-qmp/regress-parse-error-quotes-bad-escape).
TEST_F(QmpAttack, ParseErrorQuotingBadEscapesIsStillUtf8)
{
    for (const char *m : { "{\"execute\":\"query-3d\\ude\":\"x\"}",
                           "{\"execute\":\"q\\ud800\":1}",
                           "{\"execute\":\"\\udc0zx\"}",
                           // a \u escape cut short: json-glib decoded it into
                           // non-UTF-8 bytes that the id then echoed
                           "{\"execute\":\"query-name\",\"id\":\"\\ud80T\\n\"}",
                           "{\"execute\":\"query-name\",\"id\":\"\\u12\"}",
                           "{\"execute\":\"query-name\",\"id\":{\"\\ud8\":1}}" }) {
        out.clear();
        Feed(m);
        std::string l = JsonLine(); // checks UTF-8 and JSON
        EXPECT_NE(l.find("\"error\""), std::string::npos) << m << " -> " << l;
    }
    // The cut-short escape is named as such, before json-glib sees it.
    out.clear();
    Feed("{\"execute\":\"query-name\",\"id\":\"\\ud80T\"}");
    EXPECT_NE(ErrorDesc(JsonLine()).find("invalid escape sequence"), std::string::npos);
}

// json-glib keeps the last of two equal keys: {"execute":"query-status",
// "execute":"quit"} quit the VM, while a filter in front of the monitor
// that reads the first "execute" saw a harmless query.  QEMU refuses a
// duplicate key; so does the session now, at any depth.
TEST_F(QmpAttack, DuplicateKeysAreRefused)
{
    for (const char *m : { "{\"execute\":\"query-status\",\"execute\":\"quit\"}",
                           "{\"execute\":\"query-name\",\"id\":1,\"id\":2}",
                           "{\"execute\":\"query-name\",\"id\":{\"a\":1,\"a\":2}}",
                           "{\"execute\":\"query-name\",\"id\":[{\"b\":[{\"c\":0,\"c\":0}]}]}" }) {
        out.clear();
        Feed(m);
        std::string l = JsonLine();
        EXPECT_NE(ErrorDesc(l).find("duplicate key"), std::string::npos) << m << " -> " << l;
        EXPECT_EQ(l.find("SHUTDOWN"), std::string::npos) << l;
        EXPECT_EQ(Line(), "") << m;
    }
    EXPECT_EQ(vm.quits, 0);
    // Equal keys in different objects are no duplicates.
    out.clear();
    Feed("{\"execute\":\"query-name\",\"id\":{\"a\":{\"a\":1},\"b\":{\"a\":2}}}");
    EXPECT_EQ(JsonLine(), "{\"return\":{},\"id\":{\"a\":{\"a\":1},\"b\":{\"a\":2}}}");
}

// ---- sockets ---------------------------------------------------------------

class QmpAttackServer : public ::testing::Test {
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
        path = std::string(g_get_tmp_dir()) + "/shardvm-qmp-attack-" +
               std::to_string(getpid()) + ".sock";
        ASSERT_EQ(monitor_add_listener(mon, ("unix:" + path +
                                             ",server=on,wait=off").c_str(),
                                       &err), 0)
            << err->message;
    }
    void TearDown() override
    {
        monitor_free(mon);
        delete vm;
        main_loop_cleanup();
    }
    int Socket()
    {
        return socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    }
    int ConnectFd(int fd)
    {
        struct sockaddr_un sa = {};
        sa.sun_family = AF_UNIX;
        strcpy(sa.sun_path, path.c_str());
        return connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    }
    // Pump the loop (non-blocking passes) until @fd is readable; then
    // what one recv() returns: "" for EOF, "<none>" when never readable.
    std::string Poll(int fd, int passes = 200)
    {
        for (int i = 0; i < passes; i++) {
            struct pollfd p = { fd, POLLIN, 0 };
            if (poll(&p, 1, 0) == 1) {
                char buf[4096];
                ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
                return n <= 0 ? "" : std::string(buf, (size_t)n);
            }
            main_loop_wait(true);
        }
        return "<none>";
    }
};

// With the process out of file descriptors, accept() fails with EMFILE
// and the connection stays queued: the level-triggered listening socket
// stayed readable and the main loop spun at 100% CPU, never answering
// the client.  Now the pending client is accepted and closed at once (a
// spare descriptor is given up for that), and the listener works again
// once descriptors are free.  In a child: it lowers RLIMIT_NOFILE.
TEST_F(QmpAttackServer, AcceptOutOfFdsDoesNotSpin)
{
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        struct rlimit rl = { 64, 64 };
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            _exit(10);
        }
        int a = Socket(), b = Socket();
        std::vector<int> filler;
        for (;;) {
            int fd = dup(0);
            if (fd < 0) {
                break;
            }
            filler.push_back(fd);
        }
        if (errno != EMFILE) {
            _exit(11);
        }
        if (ConnectFd(a) < 0) {
            _exit(12);
        }
        // The main loop has only blocking waits that return because of
        // the listener; bounded passes, then the verdict.
        if (Poll(a, 100) != "") {
            _exit(13); // not closed: the listener would spin
        }
        close(a);
        for (int fd : filler) {
            close(fd);
        }
        if (ConnectFd(b) < 0) {
            _exit(14);
        }
        std::string g = Poll(b, 100);
        if (g.find("\"QMP\"") == std::string::npos) {
            _exit(15);
        }
        close(b);
        monitor_free(mon);
        mon = monitor_new(&FakeVm::ops, vm); // for TearDown
        _exit(0);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status)) << "child died: " << status;
    EXPECT_EQ(WEXITSTATUS(status), 0);
}

// -qmp unix:PATH unlinked whatever was at PATH: a regular file (a typo
// in the path, or a file an attacker-chosen option names) was deleted,
// and a monitor socket another live process serves was stolen.  Only a
// stale socket (nobody listening) is replaced now.
TEST(QmpAttackAddr, UnixPathOnlyReplacesStaleSockets)
{
    GError *err = nullptr;
    ASSERT_EQ(main_loop_init(false, &err), 0);
    FakeVm vm;
    Monitor *mon = monitor_new(&FakeVm::ops, &vm);
    std::string dir = std::string(g_get_tmp_dir()) + "/shardvm-qmp-addr-" +
                      std::to_string(getpid());
    ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
    std::string file = dir + "/file", live = dir + "/live",
                stale = dir + "/stale";

    ASSERT_TRUE(g_file_set_contents(file.c_str(), "keep", -1, nullptr));
    EXPECT_LT(monitor_add_listener(mon, ("unix:" + file).c_str(), &err), 0);
    g_clear_error(&err);
    char *text = nullptr;
    ASSERT_TRUE(g_file_get_contents(file.c_str(), &text, nullptr, nullptr));
    EXPECT_STREQ(text, "keep");
    g_free(text);

    // A socket someone listens on.
    Monitor *other = monitor_new(&FakeVm::ops, &vm);
    ASSERT_EQ(monitor_add_listener(other, ("unix:" + live).c_str(), &err), 0);
    EXPECT_LT(monitor_add_listener(mon, ("unix:" + live).c_str(), &err), 0);
    g_clear_error(&err);

    // A stale one (bound, then its process went away) is replaced.
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {};
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, stale.c_str());
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
    EXPECT_EQ(monitor_add_listener(mon, ("unix:" + stale).c_str(), &err), 0);
    g_clear_error(&err);

    monitor_free(other);
    monitor_free(mon);
    unlink(file.c_str());
    EXPECT_EQ(rmdir(dir.c_str()), 0); // both monitors unlinked theirs
    main_loop_cleanup();
}

// A client that sends thousands of commands and reads nothing until the
// end: the monitor stops reading it while replies wait (its buffer stays
// bounded), answers every one in order, and an event broadcast to a client
// that has just gone harms no one else.
TEST_F(QmpAttackServer, NeverReadingClientThenDisconnectMidBroadcast)
{
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int small = 4096;
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    monitor_add_client_fd(mon, sv[0]);
    std::string cmd = "{\"execute\":\"qmp_capabilities\",\"id\":0}";
    int sent = 0;
    size_t off = 0;
    std::string pending = cmd;
    // Send until the socket (and so the monitor) pushes back for good.
    for (int idle = 0; idle < 50 && sent < 20000;) {
        ssize_t n = send(sv[1], pending.data() + off, pending.size() - off,
                         MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            if (off == pending.size()) {
                sent++;
                pending = "{\"execute\":\"query-commands\",\"id\":" +
                          std::to_string(sent) + "}";
                off = 0;
            }
            idle = 0;
        } else {
            idle++;
        }
        main_loop_wait(true);
    }
    ASSERT_GT(sent, 10);
    ASSERT_LT(sent, 20000) << "the monitor never pushed back";
    // Now read everything: greeting + one reply per command, in order.
    std::string in;
    int got = -1, want_id = 0;
    bool ok = true;
    char buf[65536];
    for (int idle = 0; idle < 1000 && got < sent;) {
        ssize_t n = recv(sv[1], buf, sizeof(buf), 0);
        if (n > 0) {
            in.append(buf, (size_t)n);
            size_t eol;
            while ((eol = in.find("\r\n")) != std::string::npos) {
                std::string line = in.substr(0, eol);
                in.erase(0, eol + 2);
                if (got >= 0) {
                    std::string tag = ",\"id\":" + std::to_string(want_id) + "}";
                    ok = ok && line.size() > tag.size() &&
                         line.compare(line.size() - tag.size(), tag.size(),
                                      tag) == 0;
                    want_id++;
                }
                got++;
            }
            idle = 0;
        } else {
            idle++;
        }
        main_loop_wait(true);
    }
    EXPECT_EQ(got, sent);
    EXPECT_TRUE(ok) << "replies out of order";

    // Three negotiated clients; the middle one goes before a broadcast.
    int c[3];
    for (int i = 0; i < 3; i++) {
        c[i] = Socket();
        ASSERT_EQ(ConnectFd(c[i]), 0);
        ASSERT_NE(Poll(c[i]).find("QMP"), std::string::npos);
        send(c[i], "{\"execute\":\"qmp_capabilities\"}", 30, MSG_NOSIGNAL);
        ASSERT_EQ(Poll(c[i]), "{\"return\":{}}\r\n");
    }
    close(c[1]);
    for (int i = 0; i < 3; i++) {
        monitor_emit_event(mon, "STOP", nullptr);
    }
    for (int i : { 0, 2 }) {
        std::string all;
        while (std::count(all.begin(), all.end(), '\n') < 3) {
            std::string r = Poll(c[i]);
            ASSERT_NE(r, "<none>");
            ASSERT_NE(r, "");
            all += r;
        }
        close(c[i]);
    }
    close(sv[1]);
    for (int i = 0; i < 200 && monitor_client_count(mon) > 0; i++) {
        main_loop_wait(true);
    }
    EXPECT_EQ(monitor_client_count(mon), 0u);
}

}  // namespace
