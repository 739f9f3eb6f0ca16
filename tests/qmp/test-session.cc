// QMP protocol and commands through a QmpSession (no sockets, no main
// loop), with the fake backend: every command, every bad input.
#include "qmp-test.h"

#include <gtest/gtest.h>

#include <deque>
#include <set>

namespace {

class QmpSessionTest : public ::testing::Test {
protected:
    FakeVm vm;
    Monitor *mon = nullptr;
    QmpSession *s = nullptr;
    std::string out;  // everything written, not yet consumed as lines
    int write_result = 0;

    static int Write(void *o, const char *buf, size_t len)
    {
        auto *t = static_cast<QmpSessionTest *>(o);
        if (t->write_result < 0) {
            return t->write_result;
        }
        t->out.append(buf, len);
        return 0;
    }

    void SetUp() override
    {
        mon = monitor_new(&FakeVm::ops, &vm);
        s = qmp_session_new(mon, Write, this);
        JsonNode *g = Next();
        ASSERT_TRUE(g);
        EXPECT_EQ(Shape(g), "{QMP:{capabilities:[str],version:{package:str,"
                            "qemu:{major:int,micro:int,minor:int,},},},}");
        json_node_unref(g);
    }
    void TearDown() override
    {
        qmp_session_free(s);
        monitor_free(mon);
        EXPECT_EQ(out, "") << "unread output";
    }

    // The next output line, parsed (caller unrefs); nullptr when none.
    JsonNode *Next()
    {
        size_t eol = out.find("\r\n");
        if (eol == std::string::npos) {
            return nullptr;
        }
        std::string line = out.substr(0, eol);
        out.erase(0, eol + 2);
        JsonNode *n = ParseJson(line);
        EXPECT_TRUE(n) << line;
        return n;
    }

    std::string NextText()
    {
        JsonNode *n = Next();
        std::string r = ToJson(n);
        if (n) {
            json_node_unref(n);
        }
        return r;
    }

    void Feed(const std::string &in)
    {
        ASSERT_EQ(qmp_session_feed(s, in.data(), in.size()), 0);
    }

    // Send @in, expect exactly one reply line; returns it as JSON text.
    std::string Cmd(const std::string &in)
    {
        Feed(in);
        JsonNode *n = Next();
        std::string r = ToJson(n);
        if (n) {
            json_node_unref(n);
        }
        return r;
    }

    void Negotiate()
    {
        EXPECT_EQ(Cmd("{\"execute\":\"qmp_capabilities\"}"),
                  "{\"return\":{}}");
    }

    // Expect an error reply of @cls with @desc.
    void ExpectError(const std::string &in, const std::string &cls,
                     const std::string &desc)
    {
        Feed(in);
        JsonNode *n = Next();
        ASSERT_TRUE(n) << in;
        EXPECT_EQ(Str(n, "error.class"), cls) << in;
        EXPECT_EQ(Str(n, "error.desc"), desc) << in;
        json_node_unref(n);
    }
};

TEST_F(QmpSessionTest, CommandBeforeCapabilitiesIsRefused)
{
    ExpectError("{\"execute\":\"query-status\"}", "CommandNotFound",
                "Expecting capabilities negotiation with 'qmp_capabilities'");
    Negotiate();
    ExpectError("{\"execute\":\"qmp_capabilities\"}", "CommandNotFound",
                "Capabilities negotiation is already complete, command "
                "ignored");
}

TEST_F(QmpSessionTest, IdIsEchoedVerbatim)
{
    EXPECT_EQ(Cmd("{\"execute\":\"qmp_capabilities\",\"id\":[1,{\"a\":2.5}]}"),
              "{\"return\":{},\"id\":[1,{\"a\":2.5}]}");
    EXPECT_EQ(Cmd("{\"execute\":\"query-name\",\"id\":null}"),
              "{\"return\":{},\"id\":null}");
    EXPECT_EQ(Cmd("{\"execute\":\"nope\",\"id\":\"x\"}"),
              "{\"error\":{\"class\":\"CommandNotFound\",\"desc\":\"The "
              "command nope has not been found\"},\"id\":\"x\"}");
}

TEST_F(QmpSessionTest, OobCapability)
{
    EXPECT_EQ(Cmd("{\"execute\":\"qmp_capabilities\",\"arguments\":"
                  "{\"enable\":[\"oob\"]}}"), "{\"return\":{}}");
    ExpectError("{\"exec-oob\":\"query-status\"}", "GenericError",
                "The command query-status does not support OOB");
}

TEST_F(QmpSessionTest, FramingSplitAndJoined)
{
    Negotiate();
    // One message over many feeds, byte by byte.
    std::string m = "{\"execute\": \"query-name\", \"id\": \"a}\\\"{\"}";
    for (size_t i = 0; i < m.size(); i++) {
        ASSERT_EQ(qmp_session_feed(s, &m[i], 1), 0);
        if (i + 1 < m.size()) {
            ASSERT_EQ(out, "");
        }
    }
    EXPECT_EQ(NextText(), "{\"return\":{},\"id\":\"a}\\\"{\"}");
    // Several messages in one feed.
    Feed("{\"execute\":\"query-name\",\"id\":1}{\"execute\":\"query-name\","
         "\"id\":2}\n{\"execute\":\"query-name\",\"id\":3}");
    for (int i = 1; i <= 3; i++) {
        JsonNode *n = Next();
        ASSERT_TRUE(n);
        EXPECT_EQ(json_node_get_int(Member(n, "id")), i);
        json_node_unref(n);
    }
}

TEST_F(QmpSessionTest, BadInputGetsQemuErrors)
{
    Negotiate();
    ExpectError("[1,2]", "GenericError", "QMP input must be a JSON object");
    ExpectError("\"str\"", "GenericError", "QMP input must be a JSON object");
    ExpectError("{\"foo\":1}", "GenericError",
                "QMP input member 'foo' is unexpected");
    ExpectError("{\"execute\":1}", "GenericError",
                "QMP input member 'execute' must be a string");
    ExpectError("{\"execute\":\"query-status\",\"arguments\":[]}",
                "GenericError",
                "QMP input member 'arguments' must be an object");
    ExpectError("{}", "GenericError", "QMP input lacks member 'execute'");
    ExpectError("{\"execute\":\"foo\"}", "CommandNotFound",
                "The command foo has not been found");
    ExpectError("{\"execute\":\"query-name\",\"arguments\":{\"x\":1}}",
                "GenericError", "Parameter 'x' is unexpected");
    ExpectError("{\"execute\":\"qom-get\",\"arguments\":{\"path\":\"/a\"}}",
                "GenericError", "Parameter 'property' is missing");
    ExpectError("{\"execute\":\"qom-get\",\"arguments\":{\"path\":1,"
                "\"property\":\"x\"}}", "GenericError",
                "Invalid parameter type for 'path', expected: string");
    ExpectError("{\"execute\":\"object-add\",\"arguments\":{\"qom-type\":"
                "\"iothread\",\"id\":\"x\",\"poll-max-ns\":1.5}}",
                "GenericError",
                "Invalid parameter type for 'poll-max-ns', expected: "
                "integer");
    // Malformed JSON: an error, and the session goes on.
    Feed("{\"a\":}");
    JsonNode *n = Next();
    ASSERT_TRUE(n);
    EXPECT_EQ(Str(n, "error.class"), "GenericError");
    EXPECT_TRUE(g_str_has_prefix(Str(n, "error.desc").c_str(),
                                 "JSON parse error"));
    json_node_unref(n);
    // Not UTF-8.
    ExpectError("{\"execute\":\"query-\xff\"}", "GenericError",
                "JSON parse error, invalid UTF-8 sequence");
    EXPECT_EQ(Cmd("{\"execute\":\"query-name\"}"), "{\"return\":{}}");
}

TEST_F(QmpSessionTest, OversizedMessageClosesTheSession)
{
    Negotiate();
    std::string big = "{\"execute\":\"query-name\",\"id\":\"" +
                      std::string(MONITOR_MAX_MESSAGE, 'x') + "\"}";
    EXPECT_EQ(qmp_session_feed(s, big.data(), big.size()), -EMSGSIZE);
    JsonNode *n = Next();
    EXPECT_EQ(Str(n, "error.desc"), "JSON message size limit exceeded");
    json_node_unref(n);
    // Nothing more is read from this client.
    EXPECT_LT(qmp_session_feed(s, "{}", 2), 0);
    EXPECT_EQ(out, "");
}

TEST_F(QmpSessionTest, QueryCommands)
{
    Negotiate();
    Feed("{\"execute\":\"query-version\"}");
    JsonNode *n = Next();
    EXPECT_EQ(Shape(n), "{return:{package:str,qemu:{major:int,micro:int,"
                        "minor:int,},},}");
    json_node_unref(n);
    EXPECT_EQ(Cmd("{\"execute\":\"query-status\"}"),
              "{\"return\":{\"status\":\"prelaunch\",\"singlestep\":false,"
              "\"running\":false}}");
    EXPECT_EQ(Cmd("{\"execute\":\"query-kvm\"}"),
              "{\"return\":{\"enabled\":false,\"present\":false}}");
    Feed("{\"execute\":\"query-cpus-fast\"}");
    n = Next();
    EXPECT_EQ(Shape(n), "{return:[{cpu-index:int,props:{core-id:int,"
                        "socket-id:int,thread-id:int,},qom-path:str,"
                        "target:str,thread-id:int,}],}");
    EXPECT_EQ(json_node_get_int(Member(json_array_get_element(
                  json_node_get_array(Member(n, "return")), 0),
                  "thread-id")), 4242);
    json_node_unref(n);
    Feed("{\"execute\":\"query-commands\"}");
    n = Next();
    std::string all = ToJson(n);
    for (const char *c : { "qmp_capabilities", "query-iothreads", "qom-set",
                           "x-blockdev-set-iothread", "x-query-virtqueues",
                           "quit" }) {
        EXPECT_NE(all.find(std::string("\"") + c + "\""), std::string::npos)
            << c;
    }
    json_node_unref(n);
}

TEST_F(QmpSessionTest, IOThreadsAtRuntime)
{
    Negotiate();
    EXPECT_EQ(Cmd("{\"execute\":\"query-iothreads\"}"), "{\"return\":[]}");
    EXPECT_EQ(Cmd("{\"execute\":\"object-add\",\"arguments\":{\"qom-type\":"
                  "\"iothread\",\"id\":\"io1\",\"poll-max-ns\":100}}"),
              "{\"return\":{}}");
    ExpectError("{\"execute\":\"object-add\",\"arguments\":{\"qom-type\":"
                "\"iothread\",\"id\":\"io1\"}}", "GenericError",
                "attempt to add duplicate property 'io1' to object (type "
                "'container')");
    ExpectError("{\"execute\":\"object-add\",\"arguments\":{\"qom-type\":"
                "\"nope\",\"id\":\"io4\"}}", "GenericError",
                "Parameter 'qom-type' does not accept value 'nope'");
    ExpectError("{\"execute\":\"object-add\",\"arguments\":{\"qom-type\":"
                "\"iothread\",\"id\":\"io2\",\"bogus\":1}}", "GenericError",
                "Parameter 'bogus' is unexpected");
    ExpectError("{\"execute\":\"object-add\",\"arguments\":{\"qom-type\":"
                "\"iothread\",\"id\":\"9x\"}}", "GenericError",
                "Parameter 'id' expects an identifier");
    ExpectError("{\"execute\":\"object-add\",\"arguments\":{\"qom-type\":"
                "\"iothread\",\"id\":\"io5\",\"poll-grow\":-2}}",
                "GenericError",
                "poll-grow value must be in range [0, 9223372036854775807]");

    Feed("{\"execute\":\"query-iothreads\"}");
    JsonNode *n = Next();
    EXPECT_EQ(Shape(n), "{return:[{aio-max-batch:int,id:str,poll-grow:int,"
                        "poll-max-ns:int,poll-shrink:int,thread-id:int,}],}");
    JsonNode *first = json_array_get_element(
        json_node_get_array(Member(n, "return")), 0);
    EXPECT_EQ(json_node_get_int(Member(first, "poll-max-ns")), 100);
    EXPECT_EQ(json_node_get_int(Member(first, "thread-id")),
              iothread_get_thread_id(vm.iothreads[0]));
    EXPECT_GT(json_node_get_int(Member(first, "thread-id")), 0);
    json_node_unref(n);

    // qom-set takes effect in the IOThread; qom-get reads it back.
    EXPECT_EQ(Cmd("{\"execute\":\"qom-set\",\"arguments\":{\"path\":"
                  "\"/objects/io1\",\"property\":\"poll-max-ns\",\"value\":"
                  "5000}}"), "{\"return\":{}}");
    IOThreadProps p;
    iothread_get_props(vm.iothreads[0], &p);
    EXPECT_EQ(p.poll_max_ns, 5000);
    EXPECT_EQ(Cmd("{\"execute\":\"qom-get\",\"arguments\":{\"path\":"
                  "\"/objects/io1\",\"property\":\"poll-max-ns\"}}"),
              "{\"return\":5000}");
    EXPECT_EQ(Cmd("{\"execute\":\"qom-get\",\"arguments\":{\"path\":"
                  "\"/objects/io1\",\"property\":\"type\"}}"),
              "{\"return\":\"iothread\"}");
    ExpectError("{\"execute\":\"qom-set\",\"arguments\":{\"path\":"
                "\"/objects/io1\",\"property\":\"poll-max-ns\",\"value\":-1}}",
                "GenericError",
                "poll-max-ns value must be in range [0, 9223372036854775807]");
    ExpectError("{\"execute\":\"qom-set\",\"arguments\":{\"path\":"
                "\"/objects/io1\",\"property\":\"poll-max-ns\",\"value\":"
                "\"x\"}}", "GenericError",
                "Invalid parameter type for 'poll-max-ns', expected: integer");
    ExpectError("{\"execute\":\"qom-get\",\"arguments\":{\"path\":"
                "\"/objects/nope\",\"property\":\"poll-max-ns\"}}",
                "DeviceNotFound", "Device '/objects/nope' not found");
    ExpectError("{\"execute\":\"qom-get\",\"arguments\":{\"path\":"
                "\"/objects/io1\",\"property\":\"nope\"}}", "GenericError",
                "Property 'iothread.nope' not found");
    Feed("{\"execute\":\"qom-list\",\"arguments\":{\"path\":"
         "\"/objects/io1\"}}");
    n = Next();
    EXPECT_EQ(json_array_get_length(json_node_get_array(Member(n, "return"))),
              7u);
    EXPECT_EQ(Shape(n), "{return:[{name:str,type:str,}],}");
    json_node_unref(n);

    // object-del: in use, then free, then unknown.
    vm.busy_iothread = "io1";
    ExpectError("{\"execute\":\"object-del\",\"arguments\":{\"id\":"
                "\"io1\"}}", "GenericError",
                "object 'io1' is in use, can not be deleted");
    vm.busy_iothread.clear();
    EXPECT_EQ(Cmd("{\"execute\":\"object-del\",\"arguments\":{\"id\":"
                  "\"io1\"}}"), "{\"return\":{}}");
    EXPECT_TRUE(vm.iothreads.empty());
    ExpectError("{\"execute\":\"object-del\",\"arguments\":{\"id\":"
                "\"io1\"}}", "GenericError", "object 'io1' not found");
}

TEST_F(QmpSessionTest, RunStateAndEvents)
{
    // Events go only to negotiated clients.
    monitor_emit_event(mon, "STOP", nullptr);
    EXPECT_EQ(out, "");
    Negotiate();
    Feed("{\"execute\":\"cont\"}");
    JsonNode *ev = Next();
    EXPECT_EQ(Shape(ev), "{event:str,timestamp:{microseconds:int,"
                         "seconds:int,},}");
    EXPECT_EQ(Str(ev, "event"), "RESUME");
    json_node_unref(ev);
    EXPECT_EQ(NextText(), "{\"return\":{}}");
    EXPECT_EQ(vm.state, "running");
    // A second cont changes nothing: no event.
    EXPECT_EQ(Cmd("{\"execute\":\"cont\"}"), "{\"return\":{}}");
    Feed("{\"execute\":\"stop\"}");
    ev = Next();
    EXPECT_EQ(Str(ev, "event"), "STOP");
    json_node_unref(ev);
    EXPECT_EQ(NextText(), "{\"return\":{}}");
    EXPECT_EQ(Cmd("{\"execute\":\"query-status\"}"),
              "{\"return\":{\"status\":\"paused\",\"singlestep\":false,"
              "\"running\":false}}");
    Feed("{\"execute\":\"system_powerdown\"}");
    ev = Next();
    EXPECT_EQ(Str(ev, "event"), "POWERDOWN");
    json_node_unref(ev);
    EXPECT_EQ(NextText(), "{\"return\":{}}");
    EXPECT_EQ(vm.powerdowns, 1);
    Feed("{\"execute\":\"quit\"}");
    ev = Next();
    EXPECT_EQ(Shape(ev), "{data:{guest:bool,reason:str,},event:str,"
                         "timestamp:{microseconds:int,seconds:int,},}");
    EXPECT_EQ(Str(ev, "data.reason"), "host-qmp-quit");
    json_node_unref(ev);
    EXPECT_EQ(NextText(), "{\"return\":{}}");
    EXPECT_EQ(vm.quits, 1);
}

TEST_F(QmpSessionTest, BlockQueries)
{
    Negotiate();
    Feed("{\"execute\":\"query-blockstats\"}");
    JsonNode *n = Next();
    JsonNode *st = Member(json_array_get_element(
        json_node_get_array(Member(n, "return")), 0), "stats");
    EXPECT_EQ(json_node_get_int(Member(st, "rd_operations")), 7);
    EXPECT_EQ(json_node_get_int(Member(st, "rd_bytes")), 7 * 4096);
    EXPECT_EQ(json_node_get_int(Member(st, "flush_operations")), 2);
    EXPECT_TRUE(Member(st, "wr_total_time_ns"));
    // Members QEMU always has (constants here).
    JsonNode *af = Member(st, "account_failed");
    ASSERT_TRUE(af && JSON_NODE_HOLDS_VALUE(af));
    EXPECT_TRUE(json_node_get_boolean(af));
    json_node_unref(n);
    Feed("{\"execute\":\"query-block\"}");
    n = Next();
    JsonNode *d = json_array_get_element(
        json_node_get_array(Member(n, "return")), 0);
    EXPECT_EQ(Str(d, "qdev"), "virtio-disk0");
    EXPECT_EQ(Str(d, "inserted.node-name"), "disk0");
    EXPECT_EQ(Str(d, "inserted.image.format"), "raw");
    EXPECT_EQ(Str(d, "inserted.detect_zeroes"), "off");
    json_node_unref(n);
}

TEST_F(QmpSessionTest, SetIOThreadAndVirtqueueReport)
{
    Negotiate();
    EXPECT_EQ(Cmd("{\"execute\":\"object-add\",\"arguments\":{\"qom-type\":"
                  "\"iothread\",\"id\":\"io0\"}}"), "{\"return\":{}}");
    EXPECT_EQ(Cmd("{\"execute\":\"x-query-virtqueues\"}"),
              "{\"return\":[{\"device\":\"virtio-disk0\",\"node-name\":"
              "\"disk0\",\"queue\":0},{\"device\":\"virtio-disk0\","
              "\"node-name\":\"disk0\",\"queue\":1}]}");
    EXPECT_EQ(Cmd("{\"execute\":\"x-blockdev-set-iothread\",\"arguments\":"
                  "{\"node-name\":\"disk0\",\"iothread\":\"io0\"}}"),
              "{\"return\":{}}");
    EXPECT_EQ(vm.moved_to, "io0");
    Feed("{\"execute\":\"x-query-virtqueues\"}");
    JsonNode *n = Next();
    JsonArray *a = json_node_get_array(Member(n, "return"));
    for (guint i = 0; i < json_array_get_length(a); i++) {
        EXPECT_EQ(Str(json_array_get_element(a, i), "iothread"), "io0");
    }
    json_node_unref(n);
    EXPECT_EQ(Cmd("{\"execute\":\"x-blockdev-set-iothread\",\"arguments\":"
                  "{\"node-name\":\"disk0\",\"iothread\":null}}"),
              "{\"return\":{}}");
    EXPECT_EQ(vm.moved_to, "");
    ExpectError("{\"execute\":\"x-blockdev-set-iothread\",\"arguments\":"
                "{\"node-name\":\"disk0\",\"iothread\":\"nope\"}}",
                "GenericError", "Cannot find iothread nope");
    ExpectError("{\"execute\":\"x-blockdev-set-iothread\",\"arguments\":"
                "{\"node-name\":\"nope\",\"iothread\":\"io0\"}}",
                "GenericError", "Cannot find node nope");
    ExpectError("{\"execute\":\"x-blockdev-set-iothread\",\"arguments\":"
                "{\"node-name\":\"disk0\",\"iothread\":1}}", "GenericError",
                "Invalid parameter type for 'iothread', expected: string or "
                "null");
    ExpectError("{\"execute\":\"x-blockdev-set-iothread\",\"arguments\":"
                "{\"node-name\":\"disk0\"}}", "GenericError",
                "Parameter 'iothread' is missing");
}

TEST_F(QmpSessionTest, WriteFailureStopsTheSession)
{
    Negotiate();
    write_result = -EPIPE;
    std::string m = "{\"execute\":\"query-name\"}";
    EXPECT_EQ(qmp_session_feed(s, m.data(), m.size()), -EPIPE);
    EXPECT_EQ(qmp_session_feed(s, m.data(), m.size()), -EPIPE);
    monitor_emit_event(mon, "STOP", nullptr); // no crash, nothing written
    write_result = 0;
    EXPECT_EQ(out, "");
}

// qmp_capabilities with an argument other than "enable": QEMU's error, and
// the session is still waiting for a good qmp_capabilities.
TEST_F(QmpSessionTest, CapabilitiesWithAnUnknownArgumentIsRefused)
{
    ExpectError("{\"execute\":\"qmp_capabilities\",\"arguments\":"
                "{\"enable\":[],\"foo\":1}}",
                "GenericError", "Parameter 'foo' is unexpected");
    Negotiate();
}

// query-name gives the -name it was started with.
TEST_F(QmpSessionTest, QueryNameGivesTheName)
{
    Negotiate();
    vm.name = "guest-7";
    EXPECT_EQ(Cmd("{\"execute\":\"query-name\"}"),
              "{\"return\":{\"name\":\"guest-7\"}}");
}

// qom-list: every entry has its name and its type, as in QEMU.
TEST_F(QmpSessionTest, QomListNamesAndTypesEveryEntry)
{
    Negotiate();
    EXPECT_EQ(Cmd("{\"execute\":\"object-add\",\"arguments\":{\"qom-type\":"
                  "\"iothread\",\"id\":\"io1\"}}"), "{\"return\":{}}");
    EXPECT_EQ(Cmd("{\"execute\":\"qom-list\",\"arguments\":{\"path\":"
                  "\"/objects\"}}"),
              "{\"return\":[{\"name\":\"type\",\"type\":\"string\"},"
              "{\"name\":\"io1\",\"type\":\"child<iothread>\"}]}");
    Feed("{\"execute\":\"qom-list\",\"arguments\":{\"path\":"
         "\"/objects/io1\"}}");
    JsonNode *n = Next();
    ASSERT_TRUE(n);
    JsonArray *a = json_node_get_array(Member(n, "return"));
    std::set<std::string> names;
    for (guint i = 0; i < json_array_get_length(a); i++) {
        JsonNode *e = json_array_get_element(a, i);
        EXPECT_NE(Str(e, "type"), "") << i;
        names.insert(Str(e, "name"));
    }
    EXPECT_EQ(names.size(), json_array_get_length(a)) << "distinct names";
    EXPECT_TRUE(names.count("type"));
    EXPECT_TRUE(names.count("poll-max-ns"));
    EXPECT_TRUE(names.count("poll-grow"));
    EXPECT_TRUE(names.count("poll-shrink"));
    json_node_unref(n);
}

// \u0000 is refused, but its neighbours \u0001..\u000f are ordinary
// characters (only the complete escape decides).
TEST_F(QmpSessionTest, EscapesNextToNulAreAccepted)
{
    Negotiate();
    Feed("{\"execute\":\"query-name\",\"id\":\"\\u0001\\u000f\\u0010\"}");
    JsonNode *n = Next();
    ASSERT_TRUE(n);
    EXPECT_EQ(Str(n, "id"), std::string("\x01\x0f\x10"));
    EXPECT_TRUE(Member(n, "return"));
    json_node_unref(n);
}

TEST(QmpAddr, OptionStrings)
{
    GError *err = nullptr;
    char *a = monitor_parse_qmp("unix:/tmp/q.sock,server=on,wait=off", &err);
    EXPECT_STREQ(a, "unix:/tmp/q.sock");
    g_free(a);
    a = monitor_parse_qmp("tcp:127.0.0.1:4444,server,nowait", &err);
    EXPECT_STREQ(a, "tcp:127.0.0.1:4444");
    g_free(a);
    EXPECT_FALSE(monitor_parse_qmp("unix:/tmp/q.sock,server=on", &err));
    EXPECT_TRUE(strstr(err->message, "wait=off")) << err->message;
    g_clear_error(&err);
    EXPECT_FALSE(monitor_parse_qmp("unix:/x,server=on,wait=off,foo=1", &err));
    EXPECT_TRUE(strstr(err->message, "'foo'")) << err->message;
    g_clear_error(&err);
    EXPECT_FALSE(monitor_parse_qmp("stdio", &err));
    g_clear_error(&err);
    // QEMU's other TCP spellings: every address, and IPv6 in brackets.
    a = monitor_parse_qmp("tcp::4444,server,nowait", &err);
    EXPECT_STREQ(a, "tcp::4444");
    g_free(a);
    a = monitor_parse_qmp("tcp:[::1]:4444,server=on,wait=off", &err);
    EXPECT_STREQ(a, "tcp:[::1]:4444");
    g_free(a);
    for (const char *bad : { "tcp:::1:4444,server,nowait", "tcp:[]:4444,server,nowait",
                             "tcp:[::1:4444,server,nowait", "tcp:::1]:4444,server,nowait",
                             "tcp:[::1]]:4444,server,nowait", "tcp:h:0,server,nowait",
                             "tcp:h:65536,server,nowait", "tcp:h:,server,nowait",
                             "tcp:4444,server,nowait" }) {
        EXPECT_FALSE(monitor_parse_qmp(bad, &err)) << bad;
        EXPECT_TRUE(err && strstr(err->message, "unsupported address")) << bad;
        g_clear_error(&err);
    }
    char *id = nullptr;
    a = monitor_parse_chardev("socket,id=mon0,path=/tmp/m.sock,server=on,"
                              "wait=off", &id, &err);
    EXPECT_STREQ(a, "unix:/tmp/m.sock");
    EXPECT_STREQ(id, "mon0");
    g_free(a);
    g_free(id);
    id = nullptr;
    a = monitor_parse_chardev("socket,id=m1,host=127.0.0.1,port=5555,"
                              "server=on,wait=off", &id, &err);
    EXPECT_STREQ(a, "tcp:127.0.0.1:5555");
    g_free(a);
    g_free(id);
    id = nullptr;
    a = monitor_parse_chardev("socket,id=m2,host=::1,port=5555,server=on,wait=off", &id,
                              &err);
    EXPECT_STREQ(a, "tcp:[::1]:5555");
    g_free(a);
    g_free(id);
    id = nullptr;
    // A -chardev the server checks refuse: no address, an error, no id.
    id = nullptr;
    EXPECT_FALSE(monitor_parse_chardev("socket,id=m2,path=/tmp/m.sock,"
                                       "server=on", &id, &err));
    ASSERT_TRUE(err);
    EXPECT_TRUE(strstr(err->message, "wait=off")) << err->message;
    EXPECT_EQ(id, nullptr);
    g_clear_error(&err);
    EXPECT_FALSE(monitor_parse_chardev("socket,id=m2,path=/tmp/m.sock,"
                                       "server=on,wait=off,foo=1", &id, &err));
    EXPECT_TRUE(err && strstr(err->message, "'foo'"));
    EXPECT_EQ(id, nullptr);
    g_clear_error(&err);
    a = monitor_parse_mon("chardev=mon0,mode=control,pretty=on", &err);
    EXPECT_STREQ(a, "mon0");
    g_free(a);
    EXPECT_FALSE(monitor_parse_mon("chardev=mon0", &err));
    EXPECT_TRUE(strstr(err->message, "mode=control")) << err->message;
    g_clear_error(&err);
}

}  // namespace
