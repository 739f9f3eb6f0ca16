/*
 * The workloads of the event-loop benchmark, written once against
 * BenchLoopOps so that every library runs the same logic.  Each function
 * sets up fresh loops, measures one run and tears everything down.
 */
#include "bench-ops.h"

#include "shardvm/thread.h"

#include <errno.h>
#include <glib.h>
#include <semaphore.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

int64_t bench_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

double bench_quantile(double *v, int n, double q)
{
    if (n <= 0) {
        return 0;
    }
    qsort(v, n, sizeof(*v), cmp_double);
    /* Nearest rank: the smallest value with at least q*n values <= it. */
    int k = (int)(q * n + 0.999999);
    if (k < 1) {
        k = 1;
    }
    if (k > n) {
        k = n;
    }
    return v[k - 1];
}

double bench_median(double *v, int n)
{
    if (n <= 0) {
        return 0;
    }
    qsort(v, n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void sem_wait_nointr(sem_t *s)
{
    while (sem_wait(s) != 0 && errno == EINTR) {
    }
}

/* ------------------------------------------------------------------ */
/* A loop running in a thread of its own                                */

typedef struct LoopThread LoopThread;
typedef void LoopThreadHook(LoopThread *lt, void *arg);

struct LoopThread {
    const BenchLoopOps *ops;
    pthread_t tid;
    void *loop;               /* written before @ready is posted */
    LoopThreadHook *setup;    /* run in the loop thread after loop_new */
    LoopThreadHook *teardown; /* run in the loop thread before loop_free */
    void *arg;
    sem_t ready;
};

static void *lt_main(void *opaque)
{
    LoopThread *lt = opaque;

    lt->loop = lt->ops->loop_new();
    if (lt->setup) {
        lt->setup(lt, lt->arg);
    }
    sem_post(&lt->ready);
    lt->ops->run(lt->loop);
    if (lt->teardown) {
        lt->teardown(lt, lt->arg);
    }
    lt->ops->loop_free(lt->loop);
    return NULL;
}

static void lt_start(LoopThread *lt, const BenchLoopOps *ops,
                     LoopThreadHook *setup, LoopThreadHook *teardown,
                     void *arg)
{
    memset(lt, 0, sizeof(*lt));
    lt->ops = ops;
    lt->setup = setup;
    lt->teardown = teardown;
    lt->arg = arg;
    sem_init(&lt->ready, 0, 0);
    if (shardvm_thread_create(&lt->tid, "bench-loop", lt_main, lt, NULL) < 0) {
        fprintf(stderr, "bench: cannot start a loop thread\n");
        exit(1);
    }
    sem_wait_nointr(&lt->ready);
}

static void lt_stop_cb(void *opaque)
{
    LoopThread *lt = opaque;

    lt->ops->stop(lt->loop);
}

static void lt_stop(LoopThread *lt)
{
    lt->ops->post(lt->loop, lt_stop_cb, lt);
    pthread_join(lt->tid, NULL);
    sem_destroy(&lt->ready);
}

/* ------------------------------------------------------------------ */
/* (a) cross-thread wake-ups                                            */

typedef struct XThread {
    atomic_uint_fast64_t done; /* callbacks run; written by the loop thread */
    uint64_t n;
    int64_t t_end;             /* written by the loop thread before @fin */
    sem_t fin;
} XThread;

static void xthread_cb(void *opaque)
{
    XThread *x = opaque;
    uint64_t d = atomic_load_explicit(&x->done, memory_order_relaxed) + 1;

    /* Release: the producer's window check reads it with acquire. */
    atomic_store_explicit(&x->done, d, memory_order_release);
    if (d == x->n) {
        x->t_end = bench_now_ns();
        sem_post(&x->fin);
    }
}

/*
 * The producer (this thread) posts n callbacks as fast as the window
 * allows; every post must run its own callback (no coalescing).  Result:
 * callbacks per second, from the first post to the last callback.
 */
double bench_xthread(const BenchLoopOps *ops, const BenchParams *p)
{
    LoopThread lt;
    XThread x = { .n = p->xthread_n };
    uint64_t window = p->xthread_window;

    sem_init(&x.fin, 0, 0);
    lt_start(&lt, ops, NULL, NULL, NULL);
    int64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < x.n; i++) {
        while (i - atomic_load_explicit(&x.done, memory_order_acquire) >=
               window) {
            sched_yield();
        }
        ops->post(lt.loop, xthread_cb, &x);
    }
    sem_wait_nointr(&x.fin);
    lt_stop(&lt);
    sem_destroy(&x.fin);
    return x.n / ((x.t_end - t0) / 1e9);
}

/* ------------------------------------------------------------------ */
/* (b) ping-pong between two loops                                      */

typedef struct PingPong {
    const BenchLoopOps *ops;
    void *wa;        /* waker of loop A: "pong arrived"; owned by A */
    void *wb;        /* waker of loop B: "ping arrived"; owned by B */
    int64_t t0;      /* loop A only */
    int n, total, warm;
    double *samples; /* loop A only until @done */
    sem_t done;
} PingPong;

static void pp_on_ping(void *opaque)
{
    PingPong *pp = opaque;

    pp->ops->waker_fire(pp->wa);
}

static void pp_on_pong(void *opaque)
{
    PingPong *pp = opaque;
    int64_t t = bench_now_ns();
    int i = pp->n++;

    if (i >= pp->warm) {
        pp->samples[i - pp->warm] = t - pp->t0;
    }
    if (pp->n < pp->total) {
        pp->t0 = bench_now_ns();
        pp->ops->waker_fire(pp->wb);
    } else {
        sem_post(&pp->done);
    }
}

static void pp_start(void *opaque)
{
    PingPong *pp = opaque;

    pp->t0 = bench_now_ns();
    pp->ops->waker_fire(pp->wb);
}

static void pp_setup_a(LoopThread *lt, void *arg)
{
    PingPong *pp = arg;

    pp->wa = pp->ops->waker_new(lt->loop, pp_on_pong, pp);
}

static void pp_setup_b(LoopThread *lt, void *arg)
{
    PingPong *pp = arg;

    pp->wb = pp->ops->waker_new(lt->loop, pp_on_ping, pp);
}

static void pp_teardown_a(LoopThread *lt, void *arg)
{
    PingPong *pp = arg;

    pp->ops->waker_free(pp->wa);
}

static void pp_teardown_b(LoopThread *lt, void *arg)
{
    PingPong *pp = arg;

    pp->ops->waker_free(pp->wb);
}

/*
 * Two loop threads bounce one message with their pre-allocated wakers;
 * loop A timestamps each round trip.  Results: median and p99 in ns.
 */
void bench_pingpong(const BenchLoopOps *ops, const BenchParams *p,
                    double *median_ns, double *p99_ns)
{
    LoopThread a, b;
    PingPong pp = {
        .ops = ops,
        .total = p->pingpong_n + p->pingpong_warm,
        .warm = p->pingpong_warm,
    };

    pp.samples = g_new(double, p->pingpong_n);
    sem_init(&pp.done, 0, 0);
    lt_start(&a, ops, pp_setup_a, pp_teardown_a, &pp);
    lt_start(&b, ops, pp_setup_b, pp_teardown_b, &pp);
    ops->post(a.loop, pp_start, &pp);
    sem_wait_nointr(&pp.done);
    lt_stop(&b);
    lt_stop(&a);
    *median_ns = bench_quantile(pp.samples, p->pingpong_n, 0.5);
    *p99_ns = bench_quantile(pp.samples, p->pingpong_n, 0.99);
    g_free(pp.samples);
    sem_destroy(&pp.done);
}

/* ------------------------------------------------------------------ */
/* (c) same-thread deferred callbacks                                   */

typedef struct Deferred {
    const BenchLoopOps *ops;
    void *loop, *d;
    uint64_t count, n;
    int64_t t_end;
} Deferred;

static void deferred_cb(void *opaque)
{
    Deferred *df = opaque;

    if (++df->count < df->n) {
        df->ops->defer_arm(df->d);
    } else {
        df->t_end = bench_now_ns();
        df->ops->stop(df->loop);
    }
}

/* One deferred callback re-arms itself n times.  Result: callbacks/s. */
double bench_deferred(const BenchLoopOps *ops, const BenchParams *p)
{
    Deferred df = { .ops = ops, .n = p->deferred_n };

    df.loop = ops->loop_new();
    df.d = ops->defer_new(df.loop, deferred_cb, &df);
    int64_t t0 = bench_now_ns();
    ops->defer_arm(df.d);
    ops->run(df.loop);
    ops->defer_free(df.d);
    ops->loop_free(df.loop);
    return df.n / ((df.t_end - t0) / 1e9);
}

/* ------------------------------------------------------------------ */
/* (d) timers                                                           */

typedef struct Timers {
    const BenchLoopOps *ops;
    const BenchParams *p;
    void *loop;
    void **t;
    int *perm;
    uint64_t fired;
    int round;
    int64_t t_end;
} Timers;

static void timers_arm_round(Timers *tm)
{
    int k = tm->p->timers_k;
    int64_t base = bench_now_ns();

    for (int i = 0; i < k; i++) {
        tm->ops->timer_arm(tm->t[i], base - tm->p->timers_spread_ns +
                                     tm->p->timers_spread_ns * tm->perm[i] / k);
    }
}

/* The last timer of a round arms the next round, from the callback, the
 * way a loop user re-arms timers. */
static void timer_cb(void *opaque)
{
    Timers *tm = opaque;

    if (++tm->fired % tm->p->timers_k) {
        return;
    }
    if (++tm->round < tm->p->timers_rounds) {
        timers_arm_round(tm);
    } else {
        tm->t_end = bench_now_ns();
        tm->ops->stop(tm->loop);
    }
}

/*
 * Each round arms k pre-created timers with distinct deadlines spread
 * evenly over the spread_ns before "now", in a fixed pseudo-random order
 * (the same for every library, so that no timer structure gets its
 * favourite insertion order); the round ends when all fired.  The
 * deadlines are due at once on purpose: future ones would measure how
 * precisely each loop sleeps (libevent's epoll backend and libuv round
 * waits up to whole milliseconds) instead of what its timers cost.
 * Result: timers/s.
 */
double bench_timers(const BenchLoopOps *ops, const BenchParams *p)
{
    int k = p->timers_k;
    Timers tm = { .ops = ops, .p = p };
    GRand *rand = g_rand_new_with_seed(42);

    tm.loop = ops->loop_new();
    tm.t = g_new(void *, k);
    tm.perm = g_new(int, k);
    for (int i = 0; i < k; i++) {
        tm.t[i] = ops->timer_new(tm.loop, timer_cb, &tm);
        tm.perm[i] = i;
    }
    for (int i = k - 1; i > 0; i--) {
        int j = g_rand_int_range(rand, 0, i + 1), tmp = tm.perm[i];
        tm.perm[i] = tm.perm[j];
        tm.perm[j] = tmp;
    }
    int64_t t0 = bench_now_ns();
    timers_arm_round(&tm);
    ops->run(tm.loop);
    for (int i = 0; i < k; i++) {
        ops->timer_free(tm.t[i]);
    }
    ops->loop_free(tm.loop);
    g_rand_free(rand);
    g_free(tm.perm);
    g_free(tm.t);
    return tm.fired / ((tm.t_end - t0) / 1e9);
}

/* ------------------------------------------------------------------ */
/* (e) dispatch cost with idle fds                                      */

typedef struct Dispatch {
    const BenchLoopOps *ops;
    void *loop;
    uint64_t count, warm, n, idle_hits;
    int64_t t0, t1;
} Dispatch;

static void dispatch_cb(void *opaque)
{
    Dispatch *d = opaque;

    /* Warm-up passes first: glib, for one, builds its poll array then. */
    if (++d->count == d->warm) {
        d->t0 = bench_now_ns();
    } else if (d->count == d->warm + d->n) {
        d->t1 = bench_now_ns();
        d->ops->stop(d->loop);
    }
}

static void dispatch_idle_cb(void *opaque)
{
    ((Dispatch *)opaque)->idle_hits++;
}

/*
 * @idle_fds eventfds are watched for reading and never fire; one more is
 * made readable once and never drained, so each pass dispatches exactly
 * one callback.  Result: ns per dispatched callback (= per pass).
 */
double bench_dispatch(const BenchLoopOps *ops, const BenchParams *p,
                      int idle_fds)
{
    Dispatch d = { .ops = ops, .warm = 100, .n = p->dispatch_iters };
    int *fds = g_new(int, idle_fds + 1);
    void **w = g_new(void *, idle_fds + 1);
    uint64_t one = 1;

    d.loop = ops->loop_new();
    for (int i = 0; i <= idle_fds; i++) {
        fds[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (fds[i] < 0) {
            perror("bench: eventfd");
            exit(1);
        }
        w[i] = ops->fd_watch(d.loop, fds[i], i == idle_fds ? dispatch_cb
                                                           : dispatch_idle_cb,
                             &d);
    }
    if (write(fds[idle_fds], &one, sizeof(one)) != sizeof(one)) {
        perror("bench: eventfd write");
        exit(1);
    }
    ops->run(d.loop);
    if (d.idle_hits) {
        fprintf(stderr, "bench: %s dispatched an idle fd\n", ops->name);
        exit(1);
    }
    for (int i = 0; i <= idle_fds; i++) {
        ops->fd_unwatch(w[i]);
        close(fds[i]);
    }
    ops->loop_free(d.loop);
    g_free(w);
    g_free(fds);
    return (double)(d.t1 - d.t0) / d.n;
}

/* ------------------------------------------------------------------ */
/* Thread pool                                                          */

typedef struct Pool {
    const BenchLoopOps *ops;
    const BenchParams *p;
    void *loop, *pool;
    int phase;                /* 0 warm-up, 1 round trips, 2 throughput */
    uint64_t submitted, completed;
    int64_t t0, t_end;
    double *s;
} Pool;

static int pool_work(void *arg)
{
    return 0;
}

static void pool_done(void *opaque, int ret);

static void pool_submit(Pool *pl)
{
    pl->submitted++;
    pl->ops->pool_submit(pl->pool, pool_work, NULL, pool_done, pl);
}

/* Drives the three phases from the completion callbacks. */
static void pool_done(void *opaque, int ret)
{
    Pool *pl = opaque;
    const BenchParams *p = pl->p;
    int64_t t = bench_now_ns();

    pl->completed++;
    switch (pl->phase) {
    case 0:
        if (pl->completed < (uint64_t)p->pool_workers * 4) {
            return;
        }
        pl->phase = 1;
        pl->completed = pl->submitted = 0;
        pl->t0 = bench_now_ns();
        pool_submit(pl);
        return;
    case 1:
        pl->s[pl->completed - 1] = t - pl->t0;
        if (pl->completed < (uint64_t)p->pool_rt_n) {
            pl->t0 = bench_now_ns();
            pool_submit(pl);
            return;
        }
        pl->phase = 2;
        pl->completed = pl->submitted = 0;
        pl->t0 = bench_now_ns();
        for (int i = 0; i < p->pool_inflight; i++) {
            pool_submit(pl);
        }
        return;
    default:
        if (pl->submitted < (uint64_t)p->pool_tp_n) {
            pool_submit(pl);
        } else if (pl->completed == pl->submitted) {
            pl->t_end = t;
            pl->ops->stop(pl->loop);
        }
    }
}

/*
 * Empty jobs, submitted from the loop thread.  After a warm-up that
 * starts every worker: round trips with one job at a time, from submit to
 * its completion callback (median, ns); then throughput with inflight
 * jobs queued at any time (jobs/s).
 */
void bench_pool(const BenchLoopOps *ops, const BenchParams *p,
                double *rt_median_ns, double *jobs_per_s)
{
    Pool pl = { .ops = ops, .p = p };

    pl.s = g_new(double, p->pool_rt_n);
    pl.loop = ops->loop_new();
    pl.pool = ops->pool_new(pl.loop, p->pool_workers);
    for (int i = 0; i < p->pool_workers * 4; i++) {
        pool_submit(&pl);
    }
    ops->run(pl.loop);
    *rt_median_ns = bench_median(pl.s, p->pool_rt_n);
    *jobs_per_s = pl.completed / ((pl.t_end - pl.t0) / 1e9);
    ops->pool_free(pl.pool);
    ops->loop_free(pl.loop);
    g_free(pl.s);
}

/* ------------------------------------------------------------------ */
/* Wake-up of an idle I/O thread                                        */

typedef struct IotWake {
    int64_t t1; /* written by the I/O thread before @ran is posted */
    sem_t ran;
} IotWake;

static void iot_cb(void *opaque)
{
    IotWake *w = opaque;

    w->t1 = bench_now_ns();
    sem_post(&w->ran);
}

/*
 * The I/O thread idles for iot_gap_us (long enough for any busy-polling
 * to give up), then this thread posts a callback to it; the sample is the
 * time from the post until the callback starts.  Median in ns.
 */
double bench_iothread_wakeup(const BenchLoopOps *ops, const BenchParams *p)
{
    LoopThread lt;
    void *iot = NULL, *loop;
    IotWake w;
    double *s = g_new(double, p->iot_n);
    struct timespec gap = { 0, p->iot_gap_us * 1000L };

    sem_init(&w.ran, 0, 0);
    if (ops->iothread_new) {
        iot = ops->iothread_new(&loop);
    } else {
        lt_start(&lt, ops, NULL, NULL, NULL);
        loop = lt.loop;
    }
    for (int i = -10; i < p->iot_n; i++) {
        nanosleep(&gap, NULL);
        int64_t t0 = bench_now_ns();
        ops->post(loop, iot_cb, &w);
        sem_wait_nointr(&w.ran);
        if (i >= 0) {
            s[i] = w.t1 - t0;
        }
    }
    if (iot) {
        ops->iothread_free(iot);
    } else {
        lt_stop(&lt);
    }
    double m = bench_median(s, p->iot_n);
    sem_destroy(&w.ran);
    g_free(s);
    return m;
}
