/*
 * bench-block: the block layer (block/) driven from one IOThread with no
 * guest, against Debian's fio with the matching engine, on a file in
 * /dev/shm and a file on the disk.  See docs/bench/block.md.
 */
#ifndef BENCH_BLOCK_H
#define BENCH_BLOCK_H

#include "shardvm/block.h"

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define BENCH_BS 4096u

enum { IMPL_SHARDVM, IMPL_FIO, N_IMPLS };
enum { TARGET_SHM, TARGET_DISK, N_TARGETS };

/* One measured configuration. */
typedef struct BenchPoint {
    int target;               /* TARGET_* */
    BlockAioMode aio;         /* shardvm aio=; fio: psync/libaio/io_uring */
    bool write;               /* randwrite (else randread) */
    unsigned qd;
    GArray *iops[N_IMPLS];    /* double per successful round */
    GArray *cpu_ns[N_IMPLS];  /* CPU ns per I/O, per round */
} BenchPoint;

typedef struct BenchOpts {
    int rounds;
    double warmup_s;          /* before the measured window */
    double duration_s;        /* the measured window */
    uint64_t size;            /* image bytes */
    char *file[N_TARGETS];    /* the two images */
    char *fio_bin;            /* NULL: fio not run */
    bool verbose;
    int64_t poll_max_ns;      /* IOThread poll-max-ns; -1: default */
} BenchOpts;

/* One run's result: < 0 fields when it failed. */
typedef struct BenchResult {
    double iops;
    double cpu_ns_per_io;
} BenchResult;

/* shardvm.c: closed loop of @p->qd requests on one IOThread. */
int bench_shardvm_run(const BenchOpts *o, const BenchPoint *p,
                      BenchResult *out);

/* fio.c: the same workload with fio --thread. */
int bench_fio_run(const BenchOpts *o, const BenchPoint *p, BenchResult *out);

/* cpu.c: on-CPU nanoseconds of every thread of @pid so far, summed from
 * /proc/PID/task/(star)/schedstat; negative on error. */
int64_t bench_proc_cpu_ns(pid_t pid);
/* Sleep until CLOCK_MONOTONIC reaches @deadline_ns. */
void bench_sleep_until(int64_t deadline_ns);
int64_t bench_now_ns(void);

/* report.c */
const char *bench_target_name(int target);
const char *bench_engine_name(BlockAioMode aio);    /* threads native io_uring */
const char *bench_fio_engine(BlockAioMode aio);     /* psync libaio io_uring */
const char *bench_rw_name(const BenchPoint *p);     /* randread randwrite */
double bench_median(GArray *a, double *lo, double *hi);
void bench_report(FILE *f, BenchPoint *pts, int n);
int bench_plot(const char *png, BenchPoint *pts, int n);

#endif
