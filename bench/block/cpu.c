/*
 * CPU time of a whole process (every thread) from schedstat: the first
 * field of /proc/PID/task/TID/schedstat is the thread's on-CPU time in
 * nanoseconds (sum_exec_runtime), exact, unlike the tick-sampled
 * utime/stime of /proc/PID/stat.  Both shardvm (this process) and fio (the
 * child, run with --thread) are measured this way, over the same window.
 */
#include "bench-block.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int64_t bench_proc_cpu_ns(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d) {
        return -1;
    }
    int64_t sum = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') {
            continue;
        }
        char p[320];
        snprintf(p, sizeof(p), "/proc/%d/task/%s/schedstat", (int)pid,
                 de->d_name);
        FILE *f = fopen(p, "r");
        if (!f) {
            continue; /* the thread just exited */
        }
        unsigned long long ns;
        if (fscanf(f, "%llu", &ns) == 1) {
            sum += (int64_t)ns;
        }
        fclose(f);
    }
    closedir(d);
    return sum;
}

int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void bench_sleep_until(int64_t deadline_ns)
{
    struct timespec ts = {
        .tv_sec = deadline_ns / 1000000000,
        .tv_nsec = deadline_ns % 1000000000,
    };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL)) {
    }
}
