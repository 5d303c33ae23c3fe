/*
 * fiber_bench.c - benchmark of weft's fiber runtime, with pthread baselines.
 *
 * What: the cost of fiber start+join (from a fiber, from a pthread, with
 * start_urgent), a yield, a butex ping-pong round trip, weft_mutex
 * lock+unlock (alone and contended), a timer add+cancel, and the scheduling
 * delay (start_background -> the new fiber's first instruction) while every
 * worker is busy and while every worker is parked. Baselines in the same
 * run: pthread_create+join, and a raw-futex ping-pong between two pthreads
 * pinned to one CPU (like for like: the fibers share one worker) and to two.
 *
 * How: a measurement times a loop with CLOCK_MONOTONIC and divides by its
 * operations; delays are percentiles of per-sample times (sorted samples).
 * Each measurement runs once to warm up (stacks, pools, caches), then
 * --repeat times; the table shows the median of the repeats and their
 * spread (min..max), the target where there is one, and pthread/weft ratios.
 * A few rows are diagnostics that say how to read their neighbours.
 *
 * Placement matters for yield: with several workers, an idle worker steals
 * one of the two yielding fibers and each then yields to itself. So yield_ns
 * is measured with the other workers occupied by spinning fibers (both
 * yielders share one worker, as in a busy server), and yield_unpinned_ns
 * (wall time / yields) with the other workers idle; *_handoff_pct is the
 * share of yields after which the other fiber had run.
 *
 * Under load, 2 x workers fibers loop "spin 1..10 us, yield" and a probe
 * fiber that does the same starts a measured fiber every 50..150 us at a
 * random point of its task. Busy workers do not steal, so the delay grows
 * with the number of load fibers queued on the probe's worker, which the
 * runtime fixes at random when the load starts: sched_delay_probe_peers
 * reports it. Idle: the main pthread starts a fiber every 2 ms, by which
 * time the workers have parked (sched_delay_idle_parks: parks per sample).
 */
#include "bench_util.h"
#include "fiber/butex.h"
#include "fiber/clock.h"
#include "fiber/fiber.h"
#include "fiber/sync.h"
#include "fiber/timer.h"

#include <errno.h>
#include <linux/futex.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_OUT 8        /* values one measurement may produce */
#define MAX_REPEAT 1000
#define BATCH 1000       /* fibers started before joining them */

static struct {
    int repeat;
    bool quick;
    bool json;
    const char *only;
    int workers;
} opt = {.repeat = 0};

/* ---- small helpers ---- */

static void die(const char *what, int err)
{
    fprintf(stderr, "fiber_bench: %s: %s\n", what, strerror(err < 0 ? -err : err));
    exit(1);
}

static void fail(const char *what)
{
    fprintf(stderr, "fiber_bench: %s\n", what);
    exit(1);
}

/* For calls returning 0 or an error code (negative for weft, positive for
 * pthread). */
#define CHECK(call)                   \
    do {                              \
        int rc_ = (call);             \
        if (rc_ != 0)                 \
            die(#call, rc_);          \
    } while (0)

static long iters(long full)
{
    return opt.quick ? (full / 20 > 0 ? full / 20 : 1) : full;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield" ::: "memory");
#endif
}

static inline uint32_t xorshift(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* A per-fiber random seed, never 0. */
static uint32_t fiber_seed(void)
{
    uint64_t id = weft_fiber_self();
    return (uint32_t)((id ^ (id >> 29)) * 2654435761u) | 1u;
}

/* Busy for 1..10 us: the "short task" of the load fibers. */
static int64_t task_ns(uint32_t *seed)
{
    return 1000 + (int64_t)(xorshift(seed) % 9001);
}

static void spin_until(int64_t deadline)
{
    while (weft_clock_ns() < deadline)
        cpu_relax();
}

static void sleep_ns(int64_t ns)
{
    struct timespec ts = {ns / WEFT_NS_PER_SEC, ns % WEFT_NS_PER_SEC};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void noop(void *arg)
{
    (void)arg;
}

static void *noop_thread(void *arg)
{
    return arg;
}

static void spawn(weft_fiber_t *id, weft_fiber_fn *fn, void *arg)
{
    CHECK(weft_fiber_start_background(id, NULL, fn, arg));
}

/* Starts n fibers fn(args + i * stride) and returns; join_all waits. */
static void spawn_n(weft_fiber_t *ids, int n, weft_fiber_fn *fn, void *args, size_t stride)
{
    for (int i = 0; i < n; i++)
        spawn(&ids[i], fn, (char *)args + (size_t)i * stride);
}

static void join_all(const weft_fiber_t *ids, int n)
{
    for (int i = 0; i < n; i++)
        CHECK(weft_fiber_join(ids[i]));
}

/* Runs fn(arg) in a fiber and waits for it. */
static void run_in_fiber(weft_fiber_fn *fn, void *arg)
{
    weft_fiber_t id;
    spawn(&id, fn, arg);
    CHECK(weft_fiber_join(id));
}

/* ---- loops timed per operation ---- */

/* A loop body: does about n units of work, returns the operations done. */
typedef long loop_fn(long n);

typedef struct timed {
    loop_fn *body;
    long n, ops;
    int64_t elapsed;
} timed_t;

static void timed_entry(void *arg)
{
    timed_t *t = arg;
    int64_t t0 = weft_clock_ns();
    t->ops = t->body(t->n);
    t->elapsed = weft_clock_ns() - t0;
}

/* ns per operation of body(n), run in a fiber or on this pthread. */
static double ns_per_op(loop_fn *body, long n, bool in_fiber)
{
    timed_t t = {.body = body, .n = n};
    if (in_fiber)
        run_in_fiber(timed_entry, &t);
    else
        timed_entry(&t);
    return (double)t.elapsed / (double)t.ops;
}

static long start_join_loop(long batches)
{
    weft_fiber_t ids[BATCH];
    for (long b = 0; b < batches; b++) {
        spawn_n(ids, BATCH, noop, NULL, 0);
        join_all(ids, BATCH);
    }
    return batches * BATCH;
}

static long urgent_join_loop(long n)
{
    for (long i = 0; i < n; i++) {
        weft_fiber_t id;
        CHECK(weft_fiber_start_urgent(&id, NULL, noop, NULL));
        CHECK(weft_fiber_join(id));
    }
    return n;
}

static long mutex_loop(long n)
{
    static weft_mutex_t m = WEFT_MUTEX_INITIALIZER;
    for (long i = 0; i < n; i++) {
        weft_mutex_lock(&m);
        weft_mutex_unlock(&m);
    }
    return n;
}

static long timer_loop(long n)
{
    for (long i = 0; i < n; i++) {
        weft_timer_id_t id;
        CHECK(weft_timer_run_after(&id, 3600 * WEFT_NS_PER_SEC, noop, NULL));
        if (weft_timer_cancel(id) != WEFT_TIMER_CANCELLED)
            fail("weft_timer_cancel: a far-off timer was not pending");
    }
    return n;
}

static long pthread_create_loop(long n)
{
    for (long i = 0; i < n; i++) {
        pthread_t t;
        CHECK(pthread_create(&t, NULL, noop_thread, NULL));
        CHECK(pthread_join(t, NULL));
    }
    return n;
}

/* ---- ping-pong through two words, with fibers (butex) or pthreads (futex) ---- */

typedef struct pingpong {
    int32_t ping, pong; /* round numbers */
    int32_t rounds;
    int64_t elapsed;
    void (*wait)(int32_t *word, int32_t expected);
    void (*wake)(int32_t *word);
} pingpong_t;

static void butex_wait_op(int32_t *w, int32_t expected)
{
    weft_butex_wait(w, expected, -1);
}

static void butex_wake_op(int32_t *w)
{
    weft_butex_wake_one(w);
}

static void futex_wait_op(int32_t *w, int32_t expected)
{
    syscall(SYS_futex, w, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake_op(int32_t *w)
{
    syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* Publishes round i on *word and wakes the other side. */
static void pp_send(pingpong_t *p, int32_t *word, int32_t i)
{
    __atomic_store_n(word, i, __ATOMIC_RELEASE);
    p->wake(word);
}

static void pp_recv(pingpong_t *p, int32_t *word, int32_t i)
{
    while (__atomic_load_n(word, __ATOMIC_ACQUIRE) != i)
        p->wait(word, i - 1);
}

static void pp_client(void *arg)
{
    pingpong_t *p = arg;
    int64_t t0 = weft_clock_ns();
    for (int32_t i = 1; i <= p->rounds; i++) {
        pp_send(p, &p->ping, i);
        pp_recv(p, &p->pong, i);
    }
    p->elapsed = weft_clock_ns() - t0;
}

static void pp_server(void *arg)
{
    pingpong_t *p = arg;
    for (int32_t i = 1; i <= p->rounds; i++) {
        pp_recv(p, &p->ping, i);
        pp_send(p, &p->pong, i);
    }
}

typedef struct call {
    weft_fiber_fn *fn;
    void *arg;
} call_t;

static void *call_thread(void *arg)
{
    call_t *c = arg;
    c->fn(c->arg);
    return NULL;
}

/* Starts c on a new thread, pinned to cpu unless cpu < 0. */
static void start_thread_on(pthread_t *t, call_t *c, int cpu)
{
    pthread_attr_t attr;
    cpu_set_t set;
    CPU_ZERO(&set);
    CHECK(pthread_attr_init(&attr));
    if (cpu >= 0) {
        CPU_SET(cpu, &set);
        CHECK(pthread_attr_setaffinity_np(&attr, sizeof(set), &set));
    }
    CHECK(pthread_create(t, &attr, call_thread, c));
    pthread_attr_destroy(&attr);
}

/* Round trip of a ping-pong between two fibers (cpus NULL), or two pthreads
 * pinned to cpus[0] and cpus[1]. */
static double pingpong_ns(const int *cpus, long rounds)
{
    pingpong_t p = {.rounds = (int32_t)rounds};
    p.wait = cpus ? futex_wait_op : butex_wait_op;
    p.wake = cpus ? futex_wake_op : butex_wake_op;
    if (!cpus) {
        weft_fiber_t ids[2];
        spawn(&ids[0], pp_server, &p);
        spawn(&ids[1], pp_client, &p);
        join_all(ids, 2);
    } else {
        call_t calls[2] = {{pp_server, &p}, {pp_client, &p}};
        pthread_t t[2];
        for (int i = 0; i < 2; i++)
            start_thread_on(&t[i], &calls[i], cpus[i]);
        for (int i = 0; i < 2; i++)
            CHECK(pthread_join(t[i], NULL));
    }
    return (double)p.elapsed / (double)rounds;
}

static void bench_butex_pingpong(double *out)
{
    out[0] = pingpong_ns(NULL, iters(200000));
}

/* Left to itself the kernel puts the two threads on one CPU in some runs
 * and on two in others (about 5 vs 45 us here), so both are pinned: one
 * CPU, the like-for-like baseline of two fibers on one worker; and two
 * CPUs, a cross-core wakeup per message (NaN with a single CPU). */
static void bench_pthread_pingpong(double *out)
{
    int same[2] = {bench_allowed_cpu(0), bench_allowed_cpu(0)};
    int cross[2] = {bench_allowed_cpu(0), bench_allowed_cpu(1)};
    out[0] = pingpong_ns(same, iters(20000));
    out[1] = cross[1] >= 0 ? pingpong_ns(cross, iters(10000)) : NAN;
}

/* ---- yield ---- */

/* Spinning fibers that keep other workers from stealing. */
typedef struct hogs {
    int32_t arrived, stop;
    int n;
    weft_fiber_t ids[64];
} hogs_t;

static void hog(void *arg)
{
    hogs_t *h = arg;
    __atomic_fetch_add(&h->arrived, 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&h->stop, __ATOMIC_ACQUIRE))
        cpu_relax();
}

/* From a fiber: returns once a hog runs on every other worker. Each worker
 * runs one fiber at a time, so when n hogs and the caller all run, they
 * are on n + 1 different workers. */
static void hogs_start(hogs_t *h, int n)
{
    h->n = n < 64 ? n : 64;
    spawn_n(h->ids, h->n, hog, h, 0);
    while (__atomic_load_n(&h->arrived, __ATOMIC_ACQUIRE) < h->n)
        weft_fiber_usleep(100);
}

static void hogs_stop(hogs_t *h)
{
    __atomic_store_n(&h->stop, 1, __ATOMIC_RELEASE);
    join_all(h->ids, h->n);
}

typedef struct yielders {
    long n;
    bool pinned;
    int32_t last;      /* which yielder ran last */
    long handoffs;     /* yields after which the other one had run */
    double ns, handoff_pct;
} yielders_t;

typedef struct yielder {
    yielders_t *y;
    int32_t me;
} yielder_t;

static void yielder(void *arg)
{
    yielder_t *a = arg;
    yielders_t *y = a->y;
    long handoffs = 0;
    for (long i = 0; i < y->n; i++) {
        __atomic_store_n(&y->last, a->me, __ATOMIC_RELAXED);
        weft_fiber_yield();
        handoffs += __atomic_load_n(&y->last, __ATOMIC_RELAXED) != a->me;
    }
    __atomic_fetch_add(&y->handoffs, handoffs, __ATOMIC_RELAXED);
}

static void yield_driver(void *arg)
{
    yielders_t *y = arg;
    hogs_t hogs = {0};
    if (y->pinned)
        hogs_start(&hogs, opt.workers - 1);
    yielder_t a[2] = {{y, 1}, {y, 2}};
    weft_fiber_t ids[2];
    int64_t t0 = weft_clock_ns();
    spawn_n(ids, 2, yielder, a, sizeof(a[0]));
    join_all(ids, 2);
    y->ns = (double)(weft_clock_ns() - t0) / (double)(2 * y->n);
    if (y->pinned)
        hogs_stop(&hogs);
    y->handoff_pct = 100.0 * (double)y->handoffs / (double)(2 * y->n);
}

static void yield_bench(double *out, bool pinned)
{
    yielders_t y = {.n = iters(1000000), .pinned = pinned};
    run_in_fiber(yield_driver, &y);
    out[0] = y.ns;
    out[1] = y.handoff_pct;
}

static void bench_yield(double *out)
{
    yield_bench(out, true);
}

static void bench_yield_unpinned(double *out)
{
    yield_bench(out, false);
}

/* ---- contended mutex ---- */

typedef struct contended {
    weft_mutex_t m;
    long n, counter;
    uint64_t workers; /* bit i: a contender ran on worker i (i < 64) */
} contended_t;

static void contender(void *arg)
{
    contended_t *c = arg;
    uint64_t seen = 0;
    for (long i = 0; i < c->n; i++) {
        weft_mutex_lock(&c->m);
        c->counter++;
        weft_mutex_unlock(&c->m);
        if (i % 256 == 0)
            seen |= 1ull << (weft_fiber_worker_index() & 63);
    }
    __atomic_fetch_or(&c->workers, seen, __ATOMIC_RELAXED);
}

/* 2 x workers fibers on one mutex; also reports on how many workers they
 * ran, since the lock is only really contended across workers. */
static void bench_mutex_contended(double *out)
{
    int nf = 2 * opt.workers;
    contended_t c = {.m = WEFT_MUTEX_INITIALIZER, .n = iters(200000)};
    weft_fiber_t *ids = calloc((size_t)nf, sizeof(*ids));
    if (!ids)
        die("calloc", ENOMEM);
    int64_t t0 = weft_clock_ns();
    spawn_n(ids, nf, contender, &c, 0);
    join_all(ids, nf);
    out[0] = (double)(weft_clock_ns() - t0) / (double)(nf * c.n);
    out[1] = __builtin_popcountll(c.workers);
    free(ids);
    if (c.counter != nf * c.n)
        fail("mutex_contended: lost updates");
}

/* ---- scheduling delay ---- */

typedef struct sample {
    int64_t t0, delay;
} sample_t;

static void measured(void *arg)
{
    sample_t *s = arg;
    s->delay = weft_clock_ns() - s->t0;
}

static void start_measured(sample_t *s, weft_fiber_t *id)
{
    s->t0 = weft_clock_ns();
    spawn(id, measured, s);
}

typedef struct delays {
    int n;
    sample_t *s;
    weft_fiber_t *ids;
} delays_t;

static delays_t delays_new(int n)
{
    delays_t d = {n, calloc((size_t)n, sizeof(sample_t)), calloc((size_t)n, sizeof(weft_fiber_t))};
    if (!d.s || !d.ids)
        die("calloc", ENOMEM);
    return d;
}

/* Joins the measured fibers, writes p50, p90, p99, p99.9 and max in us,
 * and frees d. */
static void delays_report(delays_t *d, double *out)
{
    static const double pct[] = {0.50, 0.90, 0.99, 0.999};
    join_all(d->ids, d->n);
    int64_t *v = malloc((size_t)d->n * sizeof(*v));
    if (!v)
        die("malloc", ENOMEM);
    for (int i = 0; i < d->n; i++)
        v[i] = d->s[i].delay;
    qsort(v, (size_t)d->n, sizeof(*v), bench_cmp_i64);
    for (int k = 0; k < 4; k++) {
        long rank = (long)ceil(pct[k] * d->n); /* nearest rank, 1-based */
        out[k] = (double)v[rank > 0 ? rank - 1 : 0] / WEFT_NS_PER_US;
    }
    out[4] = (double)v[d->n - 1] / WEFT_NS_PER_US;
    free(v);
    free(d->s);
    free(d->ids);
}

#define MAX_LOAD 64

typedef struct load load_t;

typedef struct load_slot {
    load_t *l;
    int32_t worker; /* where this load fiber last ran */
} load_slot_t;

struct load {
    int32_t stop;
    int nload;
    load_slot_t slot[MAX_LOAD];
    delays_t d;
    long peers; /* summed over samples: load fibers on the probe's worker */
};

/* A load fiber: short tasks of 1..10 us, each followed by a yield. */
static void load_fiber(void *arg)
{
    load_slot_t *me = arg;
    uint32_t seed = fiber_seed();
    while (!__atomic_load_n(&me->l->stop, __ATOMIC_ACQUIRE)) {
        spin_until(weft_clock_ns() + task_ns(&seed));
        weft_fiber_yield();
        __atomic_store_n(&me->worker, weft_fiber_worker_index(), __ATOMIC_RELAXED);
    }
}

/* Load fibers queued on the caller's worker (busy workers do not steal, so
 * the ones that last ran here wait here). */
static int load_peers(load_t *l)
{
    int w = weft_fiber_worker_index(), n = 0;
    for (int i = 0; i < l->nload; i++)
        n += __atomic_load_n(&l->slot[i].worker, __ATOMIC_RELAXED) == w;
    return n;
}

/* The probe works like a load fiber, and every 50..150 us (at a random
 * point of its task) starts a measured fiber. */
static void probe_fiber(void *arg)
{
    load_t *l = arg;
    uint32_t seed = fiber_seed();
    int64_t next = weft_clock_ns() + 2 * WEFT_NS_PER_MS; /* let the load spread */
    int i = 0;
    while (i < l->d.n) {
        int64_t end = weft_clock_ns() + task_ns(&seed), now;
        while ((now = weft_clock_ns()) < end) {
            if (now >= next && i < l->d.n) {
                start_measured(&l->d.s[i], &l->d.ids[i]);
                l->peers += load_peers(l);
                i++;
                next = now + 50000 + (int64_t)(xorshift(&seed) % 100001);
            }
            cpu_relax();
        }
        weft_fiber_yield();
    }
}

static void bench_sched_delay_load(double *out)
{
    load_t l = {.nload = 2 * opt.workers < MAX_LOAD ? 2 * opt.workers : MAX_LOAD,
                .d = delays_new((int)iters(3000))};
    weft_fiber_t ids[MAX_LOAD + 1];
    weft_fiber_stats_t st0, st1;
    for (int i = 0; i < l.nload; i++)
        l.slot[i] = (load_slot_t){&l, -1};
    spawn_n(ids, l.nload, load_fiber, l.slot, sizeof(l.slot[0]));
    weft_fiber_stats(&st0);
    spawn(&ids[l.nload], probe_fiber, &l);
    CHECK(weft_fiber_join(ids[l.nload]));
    weft_fiber_stats(&st1);
    __atomic_store_n(&l.stop, 1, __ATOMIC_RELEASE);
    join_all(ids, l.nload);
    out[5] = (double)(st1.parks - st0.parks); /* ~0: every worker stayed busy */
    out[6] = (double)l.peers / l.d.n;
    delays_report(&l.d, out);
}

/* From the main pthread, after long enough a pause that every worker parked
 * (they spin about 50 us first). */
static void bench_sched_delay_idle(double *out)
{
    delays_t d = delays_new((int)iters(400));
    weft_fiber_stats_t st0, st1;
    weft_fiber_stats(&st0);
    for (int i = 0; i < d.n; i++) {
        sleep_ns(2 * WEFT_NS_PER_MS);
        start_measured(&d.s[i], &d.ids[i]);
    }
    weft_fiber_stats(&st1);
    out[5] = (double)(st1.parks - st0.parks) / d.n; /* >= 1: workers did park */
    delays_report(&d, out);
}

/* ---- measurements and results ---- */

typedef struct metric {
    const char *key, *unit;
    double target;          /* met when value <= target; 0: none */
    const char *baseline;   /* pthread metric to show a ratio against */
    double med, lo, hi;
    bool set;
} metric_t;

#define M(key_, unit_, target_, baseline_) \
    {.key = key_, .unit = unit_, .target = target_, .baseline = baseline_}
static metric_t metrics[] = {
    M("start_join_ns", "ns", 500, "pthread_create_join_ns"),
    M("start_join_pthread_caller_ns", "ns", 0, "pthread_create_join_ns"),
    M("urgent_join_ns", "ns", 0, "pthread_create_join_ns"),
    M("yield_ns", "ns", 50, NULL),
    M("yield_handoff_pct", "%", 0, NULL),
    M("yield_unpinned_ns", "ns", 0, NULL),
    M("yield_unpinned_handoff_pct", "%", 0, NULL),
    M("butex_pingpong_ns", "ns", 1500, "pthread_pingpong_ns"),
    M("mutex_uncontended_ns", "ns", 0, NULL),
    M("mutex_contended_ns", "ns", 0, NULL),
    M("mutex_contended_workers", "", 0, NULL),
    M("timer_add_cancel_ns", "ns", 0, NULL),
    M("sched_delay_p50_us", "us", 10, NULL),
    M("sched_delay_p90_us", "us", 0, NULL),
    M("sched_delay_p99_us", "us", 100, NULL),
    M("sched_delay_p999_us", "us", 0, NULL),
    M("sched_delay_max_us", "us", 0, NULL),
    M("sched_delay_worker_parks", "", 0, NULL),
    M("sched_delay_probe_peers", "", 0, NULL),
    M("sched_delay_idle_p50_us", "us", 0, NULL),
    M("sched_delay_idle_p90_us", "us", 0, NULL),
    M("sched_delay_idle_p99_us", "us", 0, NULL),
    M("sched_delay_idle_p999_us", "us", 0, NULL),
    M("sched_delay_idle_max_us", "us", 0, NULL),
    M("sched_delay_idle_parks", "", 0, NULL),
    M("pthread_create_join_ns", "ns", 0, NULL),
    M("pthread_pingpong_ns", "ns", 0, NULL),
    M("pthread_pingpong_cross_cpu_ns", "ns", 0, NULL),
};
#undef M
#define NMETRICS (sizeof(metrics) / sizeof(metrics[0]))

/* A measurement: either fn, writing one value per key, or a loop timed per
 * operation. */
typedef struct bench {
    const char *keys[MAX_OUT];
    void (*fn)(double *out);
    loop_fn *loop;
    long n;
    bool in_fiber;
} bench_t;

static const bench_t benches[] = {
    {.keys = {"start_join_ns"}, .loop = start_join_loop, .n = 100, .in_fiber = true},
    {.keys = {"start_join_pthread_caller_ns"}, .loop = start_join_loop, .n = 100},
    {.keys = {"urgent_join_ns"}, .loop = urgent_join_loop, .n = 100000, .in_fiber = true},
    {.keys = {"yield_ns", "yield_handoff_pct"}, .fn = bench_yield},
    {.keys = {"yield_unpinned_ns", "yield_unpinned_handoff_pct"}, .fn = bench_yield_unpinned},
    {.keys = {"butex_pingpong_ns"}, .fn = bench_butex_pingpong},
    {.keys = {"mutex_uncontended_ns"}, .loop = mutex_loop, .n = 10000000, .in_fiber = true},
    {.keys = {"mutex_contended_ns", "mutex_contended_workers"}, .fn = bench_mutex_contended},
    {.keys = {"timer_add_cancel_ns"}, .loop = timer_loop, .n = 1000000, .in_fiber = true},
    {.keys = {"sched_delay_p50_us", "sched_delay_p90_us", "sched_delay_p99_us",
              "sched_delay_p999_us", "sched_delay_max_us", "sched_delay_worker_parks",
              "sched_delay_probe_peers"},
     .fn = bench_sched_delay_load},
    {.keys = {"sched_delay_idle_p50_us", "sched_delay_idle_p90_us", "sched_delay_idle_p99_us",
              "sched_delay_idle_p999_us", "sched_delay_idle_max_us", "sched_delay_idle_parks"},
     .fn = bench_sched_delay_idle},
    {.keys = {"pthread_create_join_ns"}, .loop = pthread_create_loop, .n = 2000},
    {.keys = {"pthread_pingpong_ns", "pthread_pingpong_cross_cpu_ns"},
     .fn = bench_pthread_pingpong},
};
#define NBENCHES (sizeof(benches) / sizeof(benches[0]))

static metric_t *metric(const char *key)
{
    for (size_t i = 0; i < NMETRICS; i++)
        if (strcmp(metrics[i].key, key) == 0)
            return &metrics[i];
    fprintf(stderr, "fiber_bench: no metric %s\n", key);
    abort();
}

static int nkeys(const bench_t *b)
{
    int n = 0;
    while (n < MAX_OUT && b->keys[n])
        n++;
    return n;
}

static void run_once(const bench_t *b, double *out)
{
    if (b->fn)
        b->fn(out);
    else
        out[0] = ns_per_op(b->loop, iters(b->n), b->in_fiber);
}

/* Runs b once to warm up, then opt.repeat times; stores the median and the
 * spread of each of its values (none for a value that came out NaN: not
 * measurable here). */
static void measure(const bench_t *b)
{
    int nk = nkeys(b);
    double out[MAX_OUT];
    static double runs[MAX_OUT][MAX_REPEAT];
    run_once(b, out);
    for (int r = 0; r < opt.repeat; r++) {
        run_once(b, out);
        for (int k = 0; k < nk; k++)
            runs[k][r] = out[k];
    }
    for (int k = 0; k < nk; k++) {
        double *v = runs[k];
        int n = opt.repeat;
        if (isnan(v[0]))
            continue;
        metric_t *m = metric(b->keys[k]);
        m->med = bench_median(v, n);
        m->lo = v[0];
        m->hi = v[n - 1];
        m->set = true;
    }
}

static bool selected(const bench_t *b)
{
    if (!opt.only)
        return true;
    for (int k = 0; k < nkeys(b); k++)
        if (strncmp(b->keys[k], opt.only, strlen(opt.only)) == 0)
            return true;
    return false;
}

/* pthread/weft for metrics with a measured baseline, else 0. */
static double ratio(const metric_t *m)
{
    if (!m->baseline || !m->set)
        return 0;
    const metric_t *b = metric(m->baseline);
    return b->set && m->med > 0 ? b->med / m->med : 0;
}

static void print_row(const metric_t *m)
{
    int prec = strcmp(m->unit, "us") == 0 ? 2 : 1;
    char spread[64], target[32] = "", r[32] = "";
    snprintf(spread, sizeof(spread), "%.*f .. %.*f", prec, m->lo, prec, m->hi);
    if (m->target > 0)
        snprintf(target, sizeof(target), "<= %g %s", m->target,
                 m->med <= m->target ? "ok" : "MISS");
    if (ratio(m) > 0)
        snprintf(r, sizeof(r), "%.1fx", ratio(m));
    printf("%-30s %12.*f %-3s %-24s %-14s %s\n", m->key, prec, m->med, m->unit, spread, target, r);
}

static void print_table(void)
{
    printf("weft fiber_bench: %d workers, median of %d runs%s\n", opt.workers, opt.repeat,
           opt.quick ? " (quick)" : "");
    printf("%-30s %12s %-3s %-24s %-14s %s\n", "name", "median", "", "spread (min .. max)",
           "target", "pthread/weft");
    for (size_t i = 0; i < NMETRICS; i++)
        if (metrics[i].set)
            print_row(&metrics[i]);
}

static void print_json(void)
{
    printf("{\"workers\": %d, \"repeat\": %d, \"quick\": %s", opt.workers, opt.repeat,
           opt.quick ? "true" : "false");
    for (size_t i = 0; i < NMETRICS; i++)
        if (metrics[i].set)
            printf(", \"%s\": %.3f", metrics[i].key, metrics[i].med);
    for (size_t i = 0; i < NMETRICS; i++)
        if (ratio(&metrics[i]) > 0) /* "start_join_ns" -> "start_join_pthread_ratio" */
            printf(", \"%.*s_pthread_ratio\": %.3f", (int)strlen(metrics[i].key) - 3,
                   metrics[i].key, ratio(&metrics[i]));
    printf(", \"spread\": {");
    const char *sep = "";
    for (size_t i = 0; i < NMETRICS; i++) {
        if (metrics[i].set) {
            printf("%s\"%s\": [%.3f, %.3f]", sep, metrics[i].key, metrics[i].lo, metrics[i].hi);
            sep = ", ";
        }
    }
    printf("}}\n");
}

/* ---- main ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: fiber_bench [--json] [--repeat N] [--quick] [--only PREFIX] [--help]\n"
            "  --json        print one JSON object instead of the table\n"
            "  --repeat N    runs per measurement, median reported (default 5; 3 with --quick)\n"
            "  --quick       about 1/20 of the iterations: a smoke run of a few seconds\n"
            "  --only PREFIX run only the measurements with a key starting with PREFIX\n"
            "  --help        this text\n"
            "WEFT_WORKERS sets the number of workers (default: the CPUs).\n");
}

static bool parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0) {
            opt.json = true;
        } else if (strcmp(a, "--quick") == 0) {
            opt.quick = true;
        } else if (strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "--repeat") == 0 && i + 1 < argc) {
            char *end;
            long n = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || n < 1 || n > MAX_REPEAT)
                return false;
            opt.repeat = (int)n;
        } else if (strcmp(a, "--only") == 0 && i + 1 < argc) {
            opt.only = argv[++i];
        } else {
            return false;
        }
    }
    if (opt.repeat == 0)
        opt.repeat = opt.quick ? 3 : 5;
    return true;
}

int main(int argc, char **argv)
{
    if (!parse_args(argc, argv)) {
        usage(stderr);
        return 2;
    }
    CHECK(weft_fiber_init());
    opt.workers = weft_fiber_workers();
    int ran = 0;
    for (size_t i = 0; i < NBENCHES; i++) {
        if (selected(&benches[i])) {
            measure(&benches[i]);
            ran++;
        }
    }
    if (ran == 0) {
        fprintf(stderr, "fiber_bench: no measurement matches --only %s\n", opt.only);
        weft_fiber_shutdown();
        return 2;
    }
    if (opt.json)
        print_json();
    else
        print_table();
    CHECK(weft_fiber_shutdown());
    return 0;
}
