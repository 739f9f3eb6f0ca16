// The machine's first stop event (system/machine-event.c): one atomic
// word decides the exit status, whatever races with it.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "shardvm/machine-event.h"
#include "shardvm/main-loop.h"
#include "shardvm/vm.h"

namespace {

int Status(MachineEvent *e, int reason, std::string *msg, int signo = 0)
{
    char *m = nullptr;
    int st = machine_event_exit_status(e, reason, signo, &m);
    *msg = m ? m : "";
    g_free(m);
    return st;
}

TEST(MachineEvent, DebugExitStatusWinsOverLaterEvents)
{
    MachineEvent e;
    std::string msg;
    machine_event_init(&e);
    EXPECT_TRUE(machine_event_record(&e, MACHINE_EVENT_DEBUG_EXIT, 255));
    EXPECT_FALSE(machine_event_record(&e, MACHINE_EVENT_VCPU_STOP,
                                      VM_STOP_GUEST_POWEROFF));
    EXPECT_EQ(Status(&e, SHUTDOWN_GUEST, &msg), 255);
    EXPECT_EQ(msg, "");
}

TEST(MachineEvent, ErrorThenTripleFaultIsAnError)
{
    // The race of issue 8 point 9: an internal error on one vCPU, then a
    // triple fault on another whose main-loop request won (GUEST).
    MachineEvent e;
    std::string msg;
    machine_event_init(&e);
    machine_event_record(&e, MACHINE_EVENT_VCPU_STOP, VM_STOP_INTERNAL_ERROR);
    machine_event_record(&e, MACHINE_EVENT_VCPU_STOP, VM_STOP_GUEST_SHUTDOWN);
    EXPECT_EQ(Status(&e, SHUTDOWN_GUEST, &msg), 1);
    EXPECT_EQ(msg, "stopped after a vCPU error (KVM internal error)");
}

TEST(MachineEvent, HostSignalWithoutGuestEvent)
{
    MachineEvent e;
    std::string msg;
    machine_event_init(&e);
    EXPECT_EQ(Status(&e, SHUTDOWN_HOST_SIGNAL, &msg, 15), 0);
    EXPECT_EQ(msg, "terminating on signal 15");
    // Decided: a debug-exit write after it changes nothing.
    EXPECT_FALSE(machine_event_record(&e, MACHINE_EVENT_DEBUG_EXIT, 3));
    EXPECT_EQ(Status(&e, SHUTDOWN_GUEST, &msg, 15), 0);
}

TEST(MachineEvent, HostErrorNamesNoVcpuReason)
{
    // An external SIGBUS: no vCPU stopped, so no "(reason 0)".
    MachineEvent e;
    std::string msg;
    machine_event_init(&e);
    EXPECT_EQ(Status(&e, SHUTDOWN_ERROR, &msg), 1);
    EXPECT_EQ(msg, "stopped after a host error (reported above)");
}

TEST(MachineEvent, GuestStopsGiveZero)
{
    const struct { int reason; const char *msg; } cases[] = {
        { VM_STOP_GUEST_SHUTDOWN, "guest triple fault (reset), exiting" },
        { VM_STOP_GUEST_RESET, "guest reset, exiting" },
        { VM_STOP_GUEST_POWEROFF, "guest power-off, exiting" },
    };
    for (const auto &c : cases) {
        MachineEvent e;
        std::string msg;
        machine_event_init(&e);
        machine_event_record(&e, MACHINE_EVENT_VCPU_STOP, c.reason);
        EXPECT_EQ(Status(&e, SHUTDOWN_GUEST, &msg), 0);
        EXPECT_EQ(msg, c.msg);
    }
}

TEST(MachineEvent, ConcurrentRecordersExactlyOneWins)
{
    // Many rounds of four threads racing: one winner each round, and the
    // recorded value is the winner's own (kind and value never mix).
    for (int round = 0; round < 200; round++) {
        MachineEvent e;
        machine_event_init(&e);
        std::atomic<int> wins{ 0 }, winner{ -1 };
        std::vector<std::thread> t;
        for (int i = 0; i < 4; i++) {
            t.emplace_back([&, i] {
                MachineEventKind k = i % 2 ? MACHINE_EVENT_VCPU_STOP
                                           : MACHINE_EVENT_DEBUG_EXIT;
                if (machine_event_record(&e, k, 100 + i)) {
                    wins++;
                    winner = i;
                }
            });
        }
        for (auto &th : t) {
            th.join();
        }
        ASSERT_EQ(wins.load(), 1);
        uint32_t v = 0;
        MachineEventKind k = machine_event_get(&e, &v);
        EXPECT_EQ(v, 100u + winner.load());
        EXPECT_EQ(k, winner.load() % 2 ? MACHINE_EVENT_VCPU_STOP
                                       : MACHINE_EVENT_DEBUG_EXIT);
    }
}

// The QMP SHUTDOWN event's reason follows the event that decided the
// exit: debug-exit and a monitor quit emit none here.
TEST(MachineEvent, ShutdownReasonFollowsTheWinner)
{
    struct Case {
        MachineEventKind kind;
        uint32_t value;
        int host;
        const char *reason;
        bool guest;
    } cases[] = {
        { MACHINE_EVENT_DEBUG_EXIT, 3, SHUTDOWN_GUEST, nullptr, false },
        { MACHINE_EVENT_VCPU_STOP, VM_STOP_GUEST_POWEROFF, SHUTDOWN_GUEST,
          "guest-shutdown", true },
        { MACHINE_EVENT_VCPU_STOP, VM_STOP_GUEST_SHUTDOWN, SHUTDOWN_GUEST,
          "guest-reset", true },
        { MACHINE_EVENT_VCPU_STOP, VM_STOP_GUEST_RESET, SHUTDOWN_GUEST,
          "guest-reset", true },
        { MACHINE_EVENT_VCPU_STOP, VM_STOP_INTERNAL_ERROR, SHUTDOWN_ERROR,
          "host-error", false },
        { MACHINE_EVENT_NONE, 0, SHUTDOWN_HOST_SIGNAL, "host-signal", false },
        { MACHINE_EVENT_NONE, 0, SHUTDOWN_GUEST, "guest-shutdown", true },
        { MACHINE_EVENT_NONE, 0, SHUTDOWN_ERROR, "host-error", false },
        { MACHINE_EVENT_NONE, 0, SHUTDOWN_HOST_QMP, nullptr, false },
    };
    for (const Case &c : cases) {
        MachineEvent e;
        char *msg = nullptr;
        machine_event_init(&e);
        if (c.kind != MACHINE_EVENT_NONE) {
            machine_event_record(&e, c.kind, c.value);
        }
        machine_event_exit_status(&e, c.host, 15, &msg);
        g_free(msg);
        bool guest = !c.guest;
        const char *r = machine_event_shutdown_reason(&e, &guest);
        if (c.reason) {
            ASSERT_NE(r, nullptr);
            EXPECT_STREQ(r, c.reason);
            EXPECT_EQ(guest, c.guest) << c.reason;
        } else {
            EXPECT_EQ(r, nullptr);
        }
    }
}

} // namespace

// "quit" records SHUTDOWN_HOST_QMP before it asks the main loop to stop
// (machine_qmp_quit): a guest power-off that lands before the exit then
// loses, so the exit path announces no second SHUTDOWN (the monitor sent
// host-qmp-quit already) and the status stays 0.
TEST(MachineEvent, QuitRecordedFirstSilencesALaterGuestPowerOff)
{
    MachineEvent e;
    char *msg = nullptr;
    machine_event_init(&e);
    ASSERT_TRUE(machine_event_record(&e, MACHINE_EVENT_HOST, SHUTDOWN_HOST_QMP));
    EXPECT_FALSE(machine_event_record(&e, MACHINE_EVENT_VCPU_STOP,
                                      VM_STOP_GUEST_POWEROFF));
    EXPECT_EQ(machine_event_exit_status(&e, SHUTDOWN_GUEST, 0, &msg), 0);
    EXPECT_EQ(msg, nullptr) << msg;
    g_free(msg);
    bool guest = true;
    EXPECT_EQ(machine_event_shutdown_reason(&e, &guest), nullptr);
    EXPECT_FALSE(guest);
}
