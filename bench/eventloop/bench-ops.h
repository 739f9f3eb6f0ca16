/*
 * Event-loop benchmark: the ops table every compared loop (shardvm's
 * AioContext, libuv, libevent, glib) implements, and the workloads that
 * the driver runs on top of it.  The workloads are written once against
 * this table, so every implementation runs exactly the same benchmark
 * logic; an implementation file only maps each primitive to the idiom its
 * library offers for it.
 */
#ifndef BENCH_EVENTLOOP_OPS_H
#define BENCH_EVENTLOOP_OPS_H

#include <stdbool.h>
#include <stdint.h>

typedef void BenchCb(void *opaque);
typedef int BenchWorkFn(void *arg);
typedef void BenchDoneFn(void *opaque, int ret);

typedef struct BenchLoopOps {
    const char *name;

    /* Create / destroy a loop.  Both are called in the thread that runs
     * the loop (its home thread), never while it is being run. */
    void *(*loop_new)(void);
    void (*loop_free)(void *loop);

    /* Run the loop the way the library's users do (uv_run,
     * event_base_loop, g_main_loop_run, aio_poll in a loop) until stop()
     * is called.  Loop thread only. */
    void (*run)(void *loop);
    /* Make run() return after the current pass.  Loop thread only (from a
     * callback); other threads post() a callback that calls it. */
    void (*stop)(void *loop);

    /* Any thread: run @cb(@opaque) once in the loop thread.  Every call
     * gives its own callback invocation (no coalescing). */
    void (*post)(void *loop, BenchCb *cb, void *opaque);

    /* A pre-allocated wake-up handle: waker_fire() from any thread makes
     * @cb run in the loop thread; fires before the callback ran may
     * coalesce.  new/free in the loop thread. */
    void *(*waker_new)(void *loop, BenchCb *cb, void *opaque);
    void (*waker_fire)(void *w);
    void (*waker_free)(void *w);

    /* A same-thread deferred callback: defer_arm() (loop thread, also
     * from the callback itself) makes @cb run once on a later pass. */
    void *(*defer_new)(void *loop, BenchCb *cb, void *opaque);
    void (*defer_arm)(void *d);
    void (*defer_free)(void *d);

    /* One-shot timers: timer_arm() (loop thread) makes @cb run once at or
     * after @deadline_ns (CLOCK_MONOTONIC), at the library's resolution. */
    void *(*timer_new)(void *loop, BenchCb *cb, void *opaque);
    void (*timer_arm)(void *t, int64_t deadline_ns);
    void (*timer_free)(void *t);

    /* Level-triggered read watch on @fd: @cb runs on each pass while the
     * fd is readable.  Loop thread. */
    void *(*fd_watch)(void *loop, int fd, BenchCb *cb, void *opaque);
    void (*fd_unwatch)(void *w);

    /* Thread pool of @workers threads whose completions run in the loop
     * thread.  NULL when the library has none.  Loop thread. */
    void *(*pool_new)(void *loop, int workers);
    void (*pool_submit)(void *pool, BenchWorkFn *fn, void *arg,
                        BenchDoneFn *done, void *opaque);
    void (*pool_free)(void *pool);

    /* The library's own dedicated I/O thread, if it has one: start it and
     * return its loop (post() works on it).  NULL: the driver runs
     * loop_new()/run_once() in a thread of its own. */
    void *(*iothread_new)(void **loop);
    void (*iothread_free)(void *iot);
    /* false: the iothread_wakeup metric is not measured for this impl. */
    bool has_iothread;
} BenchLoopOps;

extern const BenchLoopOps bench_shardvm_ops;
/* --poll-max-ns: busy-poll limit given to every AioContext the benchmark
 * creates (not the IOThread's); -1 keeps the context's default. */
extern int64_t bench_shardvm_poll_max_ns;
extern const BenchLoopOps bench_libuv_ops;
extern const BenchLoopOps bench_libevent_ops;
extern const BenchLoopOps bench_glib_ops;

/* bench_now_ns: CLOCK_MONOTONIC in ns; the one clock all workloads use. */
int64_t bench_now_ns(void);

/* Sizes of one run of each workload; see workloads.c. */
typedef struct BenchParams {
    uint64_t xthread_n;     /* posts per cross-thread run */
    int xthread_window;     /* posted but not yet run, at most */
    int pingpong_n;         /* round trips measured */
    int pingpong_warm;      /* round trips discarded first */
    uint64_t deferred_n;    /* deferred callbacks per run */
    int timers_k;           /* timers armed per round */
    int timers_rounds;      /* rounds per run */
    int64_t timers_spread_ns; /* deadlines spread over this window, past */
    int dispatch_iters;     /* loop iterations timed per fd count */
    int pool_workers;       /* threads in every pool */
    int pool_rt_n;          /* round trips measured (one job in flight) */
    int pool_tp_n;          /* jobs per throughput run */
    int pool_inflight;      /* jobs in flight during the throughput run */
    int iot_n;              /* IOThread wake-ups measured */
    int iot_gap_us;         /* idle time before each wake-up */
} BenchParams;

/* Workloads: each runs once and returns its figure (see workloads.c). */
double bench_xthread(const BenchLoopOps *ops, const BenchParams *p);
void bench_pingpong(const BenchLoopOps *ops, const BenchParams *p,
                    double *median_ns, double *p99_ns);
double bench_deferred(const BenchLoopOps *ops, const BenchParams *p);
double bench_timers(const BenchLoopOps *ops, const BenchParams *p);
double bench_dispatch(const BenchLoopOps *ops, const BenchParams *p,
                      int idle_fds);
void bench_pool(const BenchLoopOps *ops, const BenchParams *p,
                double *rt_median_ns, double *jobs_per_s);
double bench_iothread_wakeup(const BenchLoopOps *ops, const BenchParams *p);

/* Median of @n doubles (sorts @v in place). */
double bench_median(double *v, int n);
/* The @q quantile (0..1) of @n doubles (sorts @v in place). */
double bench_quantile(double *v, int n, double q);

#endif
