// The machine's side of werror/rerror (system/machine-block-errors.c):
// a device reports from another thread; the main loop delivers
// BLOCK_IO_ERROR (QEMU 7.2's members) and, for "stop", pauses the VM and
// sends STOP; resume runs the devices' retry functions.  No KVM.
#include "qmp-test.h"
#include "../../system/machine-block-errors.h"
#include "shardvm/main-loop.h"

#include <gtest/gtest.h>

#include <thread>

namespace {

struct Env {
    Monitor *mon = nullptr;
    int stops = 0;
    bool running = true;
    static bool Stop(void *o)
    {
        Env *e = static_cast<Env *>(o);
        if (!e->running) {
            return false;
        }
        e->running = false;
        e->stops++;
        return true;
    }
    static Monitor *Mon(void *o) { return static_cast<Env *>(o)->mon; }
};

const MachineBlockErrorsOps kOps = { Env::Stop, Env::Mon };

class BlockErrors : public ::testing::Test {
protected:
    FakeVm vm;
    Env env;
    QmpSession *s = nullptr;
    std::string out;
    MachineBlockErrors *be = nullptr;

    static int Write(void *o, const char *buf, size_t len)
    {
        static_cast<BlockErrors *>(o)->out.append(buf, len);
        return 0;
    }
    void SetUp() override
    {
        ASSERT_EQ(main_loop_init(false, nullptr), 0);
        env.mon = monitor_new(&FakeVm::ops, &vm);
        s = qmp_session_new(env.mon, Write, this);
        const char *neg = "{\"execute\":\"qmp_capabilities\"}";
        ASSERT_EQ(qmp_session_feed(s, neg, strlen(neg)), 0);
        out.clear();
        be = machine_block_errors_new(&kOps, &env);
    }
    void TearDown() override
    {
        machine_block_errors_free(be);
        qmp_session_free(s);
        monitor_free(env.mon);
        main_loop_cleanup();
    }
    // Report @ev from another thread (as an IOThread does).
    void ReportFromThread(const BlockIOErrorEvent &ev)
    {
        const BlockErrorHandler *h = machine_block_errors_handler(be);
        std::thread t([&] { h->io_error(h->opaque, &ev); });
        t.join();
    }
    // Run the main loop until @n lines arrived; the lines.
    std::vector<std::string> Lines(size_t n)
    {
        std::vector<std::string> lines;
        for (int i = 0; i < 1000; i++) {
            size_t count = 0;
            for (size_t p = 0; (p = out.find("\r\n", p)) != std::string::npos;
                 p += 2) {
                count++;
            }
            if (count >= n) {
                break;
            }
            main_loop_wait(false);
        }
        size_t eol;
        while ((eol = out.find("\r\n")) != std::string::npos) {
            lines.push_back(out.substr(0, eol));
            out.erase(0, eol + 2);
        }
        return lines;
    }
};

TEST_F(BlockErrors, StopEmitsBlockIoErrorThenStop)
{
    BlockIOErrorEvent ev = {};
    ev.device = "d0";
    ev.node_name = "e0";
    ev.is_read = false;
    ev.action = BLOCK_ERROR_ACTION_STOP;
    ev.iostatus = true;
    ev.error = -ENOSPC;
    ReportFromThread(ev);
    std::vector<std::string> l = Lines(2);
    ASSERT_EQ(l.size(), 2u);
    JsonNode *n = ParseJson(l[0]);
    ASSERT_TRUE(n);
    EXPECT_EQ(Str(n, "event"), "BLOCK_IO_ERROR");
    EXPECT_EQ(Str(n, "data.device"), "d0");
    EXPECT_EQ(Str(n, "data.node-name"), "e0");
    EXPECT_EQ(Str(n, "data.operation"), "write");
    EXPECT_EQ(Str(n, "data.action"), "stop");
    EXPECT_EQ(Str(n, "data.reason"), g_strerror(ENOSPC));
    EXPECT_EQ(Shape(n), "{data:{action:str,device:str,node-name:str,"
                        "nospace:bool,operation:str,reason:str,},event:str,"
                        "timestamp:{microseconds:int,seconds:int,},}");
    json_node_unref(n);
    n = ParseJson(l[1]);
    EXPECT_EQ(Str(n, "event"), "STOP");
    json_node_unref(n);
    EXPECT_EQ(env.stops, 1);

    // A second stop while paused: the event, no second STOP.
    ReportFromThread(ev);
    l = Lines(1);
    ASSERT_EQ(l.size(), 1u);
    EXPECT_NE(l[0].find("BLOCK_IO_ERROR"), std::string::npos);
    EXPECT_EQ(env.stops, 1);
}

TEST_F(BlockErrors, ReportAndIgnoreOnlyEmitTheEvent)
{
    BlockIOErrorEvent ev = {};
    ev.device = "d0";
    ev.node_name = "d0";
    ev.is_read = true;
    ev.action = BLOCK_ERROR_ACTION_REPORT;
    ev.error = -EIO;
    ReportFromThread(ev);
    ev.action = BLOCK_ERROR_ACTION_IGNORE;
    ReportFromThread(ev);
    std::vector<std::string> l = Lines(2);
    ASSERT_EQ(l.size(), 2u);
    JsonNode *n = ParseJson(l[0]);
    EXPECT_EQ(Str(n, "data.action"), "report");
    EXPECT_EQ(Str(n, "data.operation"), "read");
    EXPECT_EQ(Shape(n), "{data:{action:str,device:str,node-name:str,"
                        "operation:str,reason:str,},event:str,"
                        "timestamp:{microseconds:int,seconds:int,},}");
    json_node_unref(n);
    n = ParseJson(l[1]);
    EXPECT_EQ(Str(n, "data.action"), "ignore");
    json_node_unref(n);
    EXPECT_EQ(env.stops, 0);
}

TEST_F(BlockErrors, ResumeRunsTheRegisteredFunctions)
{
    const BlockErrorHandler *h = machine_block_errors_handler(be);
    int a = 0, b = 0;
    auto inc = [](void *p) { ++*static_cast<int *>(p); };
    h->add_resume(h->opaque, inc, &a);
    h->add_resume(h->opaque, inc, &b);
    machine_block_errors_resume(be);
    h->del_resume(h->opaque, inc, &a);
    machine_block_errors_resume(be);
    EXPECT_EQ(a, 1);
    EXPECT_EQ(b, 2);
}

// Reports still queued when the machine goes away are dropped, not run.
TEST_F(BlockErrors, FreeDropsUndeliveredReports)
{
    BlockIOErrorEvent ev = {};
    ev.device = "d0";
    ev.node_name = "d0";
    ev.action = BLOCK_ERROR_ACTION_STOP;
    ev.error = -EIO;
    ReportFromThread(ev);
    machine_block_errors_free(be);
    be = nullptr;
    EXPECT_TRUE(Lines(0).empty());
    EXPECT_EQ(env.stops, 0);
}

} // namespace
