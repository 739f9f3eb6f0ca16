// Whether another thread of this process is blocked in the kernel, from
// /proc/self/task/TID/stat.  Lets a test wait for "the other thread is now
// waiting (e.g. in synchronize_rcu)" as an ordering, without a sleep: the
// caller waits until the thread has either finished its step or is
// sleeping, then checks which one happened.
#pragma once

#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <string>

// The calling thread's kernel id.
inline int test_gettid()
{
    return (int)syscall(SYS_gettid);
}

// The state letter of thread @tid ('R', 'S', 'D', ...), or 0 if gone.
inline char test_thread_state(int tid)
{
    std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/stat");
    std::string line;
    if (!std::getline(f, line)) {
        return 0;
    }
    // "tid (comm) S ...": comm may hold spaces and parentheses.
    size_t close = line.rfind(')');
    if (close == std::string::npos || close + 2 >= line.size()) {
        return 0;
    }
    return line[close + 2];
}

// Thread @tid sleeps in the kernel (futex, poll...): 'S' or 'D'.
inline bool test_thread_blocked(int tid)
{
    char s = test_thread_state(tid);
    return s == 'S' || s == 'D';
}
