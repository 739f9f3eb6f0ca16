// Signals reach the main loop through signalfd and through the compat
// thread.  Each case runs in a child process (fork()) that initialises the
// main loop, signals itself, runs the loop and reports through its exit
// status; the parent never starts a thread, so the fork is clean.
#include "../common/thread-names.h"
#include "shardvm/main-loop.h"

#include <gtest/gtest.h>

#include <dirent.h>
#include <fstream>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

namespace {

enum Path { kSignalfd, kCompat, kCompatEnv };

// Child exit codes: 0 = all checks passed, else which check failed.
enum { kOk = 0, kInitFailed = 10, kWrongPath, kWrongReason, kWrongSignal,
       kWrongCount, kNoCompatThread };

bool HasThreadNamed(const std::string &want)
{
    return test_count_threads(want) > 0;
}

// Runs in the child: init, deliver @sig (raise() or kill()), run the loop.
int ChildSignalShutdown(Path path, int sig, bool use_raise, int want_reason,
                        int want_signal)
{
    if (path == kCompatEnv) {
        setenv("SHARDVM_SIGNAL_COMPAT", "1", 1);
    }
    if (main_loop_init(path == kCompat, nullptr) < 0) {
        return kInitFailed;
    }
    if (main_loop_signalfd_active() != (path == kSignalfd)) {
        return kWrongPath;
    }
    if (path != kSignalfd && !HasThreadNamed("sigwait")) {
        return kNoCompatThread;
    }
    // Harmless signals first: counted, the loop goes on.
    kill(getpid(), SIGIO);
    kill(getpid(), SIGALRM);
    while (main_loop_signal_count(SIGIO) == 0 ||
           main_loop_signal_count(SIGALRM) == 0) {
        main_loop_wait(false);
    }
    if (main_loop_shutdown_requested() != SHUTDOWN_NONE) {
        return kWrongReason;
    }
    if (use_raise) {
        raise(sig);
    } else {
        kill(getpid(), sig);
    }
    int reason = main_loop_run();
    int got_signal = main_loop_shutdown_signal();
    unsigned long count = main_loop_signal_count(sig);
    main_loop_cleanup();
    if (reason != want_reason) {
        return kWrongReason;
    }
    if (got_signal != want_signal) {
        return kWrongSignal;
    }
    if (count != 1) {
        return kWrongCount;
    }
    return kOk;
}

// Fork, run @fn in the child, return its exit code (or fail the test).
template <typename F> int RunInChild(F fn)
{
    fflush(nullptr);
    pid_t pid = fork();
    if (pid == 0) {
        _exit(fn());
    }
    EXPECT_GT(pid, 0);
    int status = 0;
    gint64 deadline = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            break;
        }
        if (g_get_monotonic_time() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            ADD_FAILURE() << "child hung (signal never reached the loop)";
            return -1;
        }
        g_usleep(5000);
    }
    EXPECT_TRUE(WIFEXITED(status)) << "child died: status " << status;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

struct Case {
    Path path;
    int sig;
    bool use_raise;
};

class Signals : public ::testing::TestWithParam<Case> {};

TEST_P(Signals, HostSignalShutsDownWithReason)
{
    Case c = GetParam();
    EXPECT_EQ(RunInChild([&] {
                  return ChildSignalShutdown(c.path, c.sig, c.use_raise,
                                             SHUTDOWN_HOST_SIGNAL, c.sig);
              }),
              kOk);
}

INSTANTIATE_TEST_SUITE_P(
    Paths, Signals,
    ::testing::Values(Case{kSignalfd, SIGTERM, false},
                      Case{kSignalfd, SIGINT, false},
                      Case{kSignalfd, SIGHUP, false},
                      Case{kSignalfd, SIGTERM, true}, // thread-directed
                      Case{kCompat, SIGTERM, false},
                      Case{kCompat, SIGINT, false},
                      Case{kCompat, SIGHUP, false},
                      Case{kCompatEnv, SIGTERM, false}));

TEST(SignalsBus, SigbusReportsAndShutsDownWithError)
{
    for (Path p : {kSignalfd, kCompat}) {
        EXPECT_EQ(RunInChild([&] {
                      return ChildSignalShutdown(p, SIGBUS, false,
                                                 SHUTDOWN_ERROR, 0);
                  }),
                  kOk)
            << (p == kSignalfd ? "signalfd" : "compat");
    }
}

// Issue 8 point 2: startup (reading files, creating the VM) runs with the
// signals blocked and before main_loop_run(); main_loop_poll_signals()
// lets it see a SIGTERM at once, on both paths.  The compat thread needs
// a moment to move the signal into its pipe: the child polls (counting
// passes, no timing) until it arrives.
TEST(SignalsStartup, PollSignalsSeesPendingTermWithoutTheLoop)
{
    for (Path p : {kSignalfd, kCompat}) {
        EXPECT_EQ(RunInChild([&] {
                      if (main_loop_poll_signals() != SHUTDOWN_NONE) {
                          return (int)kWrongReason; // before init: nothing
                      }
                      if (main_loop_init(p == kCompat, nullptr) < 0) {
                          return (int)kInitFailed;
                      }
                      if (main_loop_poll_signals() != SHUTDOWN_NONE) {
                          return (int)kWrongReason;
                      }
                      kill(getpid(), SIGTERM);
                      int reason;
                      while ((reason = main_loop_poll_signals()) ==
                             SHUTDOWN_NONE) {
                          sched_yield();
                      }
                      int sig = main_loop_shutdown_signal();
                      main_loop_cleanup();
                      if (reason != SHUTDOWN_HOST_SIGNAL) {
                          return (int)kWrongReason;
                      }
                      return sig == SIGTERM ? (int)kOk : (int)kWrongSignal;
                  }),
                  kOk)
            << (p == kSignalfd ? "signalfd" : "compat");
    }
}

} // namespace
