// The thread model as the kernel shows it: names of this process's threads
// from /proc/self/task/*/comm.  Shared by the tests of every module that
// starts named threads.
#pragma once

#include <dirent.h>

#include <fstream>
#include <string>
#include <vector>

// Names of the calling process's threads (one entry per thread).
inline std::vector<std::string> test_thread_names()
{
    std::vector<std::string> names;
    DIR *d = opendir("/proc/self/task");
    if (!d) {
        return names;
    }
    while (struct dirent *e = readdir(d)) {
        if (e->d_name[0] == '.') {
            continue;
        }
        std::ifstream f(std::string("/proc/self/task/") + e->d_name + "/comm");
        std::string name;
        if (std::getline(f, name)) {
            names.push_back(name);
        }
    }
    closedir(d);
    return names;
}

// How many threads are named @want (all threads when @want is empty).
inline int test_count_threads(const std::string &want = "")
{
    int n = 0;
    for (const std::string &name : test_thread_names()) {
        n += want.empty() || name == want;
    }
    return n;
}
