// libFuzzer target: the QMP protocol layers without sockets: framing
// (qmp-stream.c), negotiation and dispatch (qmp-session.c) and every
// command's argument checking (qmp-commands.c), on the fake backend of
// tests/qmp (real IOThreads for object-add, at most 4 per input).
//
// The input is split into chunks fed one by one (a 0xff byte ends a chunk,
// so messages arrive cut anywhere).  Inputs starting with 'W' and a count
// byte have the peer go away after (count % 8) output writes.  Inputs
// (then) starting with 'N' first send qmp_capabilities, so the fuzzer
// reaches the commands at once.
//
// Checked: no crash or sanitizer report; every output line ends in "\r\n"
// and is a JSON object with exactly one of QMP / return / error / event;
// an error has a class and a description; a feed during which a write
// failed reports an error.
#include "../qmp/qmp-test.h"
#include "fuzz-guest.h"   // CHECK()

#include <string>

namespace {

struct Out {
    std::string buf;
    int writes_left = -1;   // >= 0: the peer goes away after that many
    bool failed = false;
};

int Write(void *opaque, const char *buf, size_t len)
{
    auto *o = static_cast<Out *>(opaque);
    if (o->writes_left == 0) {
        o->failed = true;
        return -EPIPE;
    }
    if (o->writes_left > 0) {
        o->writes_left--;
    }
    o->buf.append(buf, len);
    return 0;
}

void CheckLines(Out &out)
{
    size_t eol;
    while ((eol = out.buf.find('\n')) != std::string::npos) {
        std::string line = out.buf.substr(0, eol + 1);
        out.buf.erase(0, eol + 1);
        CHECK(line.size() >= 2 && line[line.size() - 2] == '\r', "line without CRLF");
        line.resize(line.size() - 2);
        JsonNode *n = ParseJson(line);
        CHECK(n && JSON_NODE_HOLDS_OBJECT(n), "output is no JSON object: %s", line.c_str());
        JsonObject *o = json_node_get_object(n);
        int kinds = json_object_has_member(o, "QMP") + json_object_has_member(o, "return") +
                    json_object_has_member(o, "error") + json_object_has_member(o, "event");
        CHECK(kinds == 1, "reply kind: %s", line.c_str());
        if (json_object_has_member(o, "error")) {
            JsonObject *e = json_object_get_object_member(o, "error");
            CHECK(e && json_object_has_member(e, "class") && json_object_has_member(e, "desc"),
                  "error shape: %s", line.c_str());
        }
        json_node_unref(n);
    }
}

// object-add of an IOThread starts a thread: cap them per input.
const MonitorBackend *Backend()
{
    static MonitorBackend b = FakeVm::ops;
    b.iothread_add = [](void *o, const char *id, const IOThreadProps *p, GError **errp) {
        if (FakeVm::Of(o)->iothreads.size() >= 4) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "fuzz: too many IOThreads");
            return -ENOSPC;
        }
        return FakeVm::ops.iothread_add(o, id, p, errp);
    };
    return &b;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FakeVm vm;
    Out out;
    if (size >= 2 && data[0] == 'W') {
        out.writes_left = data[1] % 8;
        data += 2;
        size -= 2;
    }
    Monitor *mon = monitor_new(Backend(), &vm);
    QmpSession *s = qmp_session_new(mon, Write, &out);
    CheckLines(out);
    int ret = 0;
    if (size && data[0] == 'N') {
        static const char kCaps[] = "{\"execute\":\"qmp_capabilities\"}\n";
        ret = qmp_session_feed(s, kCaps, sizeof(kCaps) - 1);
        CheckLines(out);
        data++;
        size--;
    }
    size_t start = 0;
    for (size_t i = 0; i <= size && ret == 0; i++) {
        if (i == size || data[i] == 0xff) {
            bool failed_before = out.failed;
            ret = qmp_session_feed(s, reinterpret_cast<const char *>(data + start), i - start);
            CHECK(failed_before || !out.failed || ret < 0, "a write failed, feed returned %d", ret);
            CheckLines(out);
            start = i + 1;
        }
    }
    qmp_session_free(s);
    monitor_free(mon);
    return 0;
}
