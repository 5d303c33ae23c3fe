/*
 * test_fiber.c - the life of a fiber, through the public API.
 *
 * Starting (a million fibers in waves, from fibers and from the main pthread;
 * from several foreign pthreads at once), joining (from pthreads and fibers;
 * ended, stale and self ids; id 0), weft_fiber_alive, how CPU-bound work
 * spreads over the workers, start_urgent, yield, stack attributes, NOSIGNAL
 * with flush, and weft_fiber_interrupt. These are the guarantees everything
 * above the runtime builds on, so each is checked where it can fail.
 * Orderings that only hold with a single worker (start_urgent runs the new
 * fiber first, yield alternates strictly) are checked in a child process
 * running with WEFT_WORKERS=1.
 */
#include <sched.h>

#include "fiber_test_util.h"

static void nop_fn(void *arg)
{
    (void)arg;
}

/* ---- ids, self, alive ---- */

typedef struct {
    weft_fiber_t self;
    bool in_fiber;
    int worker;
} self_rec_t;

static void record_self_fn(void *arg)
{
    self_rec_t *r = arg;
    r->self = weft_fiber_self();
    r->in_fiber = weft_fiber_in_fiber();
    r->worker = weft_fiber_worker_index();
}

static int expected_workers(void)
{
    const char *env = getenv("WEFT_WORKERS");
    if (env && atoi(env) > 0)
        return atoi(env) > 256 ? 256 : atoi(env);
    cpu_set_t set;
    WT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
    return CPU_COUNT(&set);
}

static void case_ids_and_alive(void)
{
    WT_EQ(weft_fiber_self(), 0);
    WT_ASSERT(!weft_fiber_in_fiber());
    WT_EQ(weft_fiber_worker_index(), -1);
    WT_EQ(weft_fiber_join(0), -EINVAL);
    WT_EQ(weft_fiber_interrupt(0), -EINVAL);
    WT_ASSERT(!weft_fiber_alive(0));

    /* Asking for the number of workers does not start the runtime. */
    weft_fiber_stats_t st;
    int n = weft_fiber_workers();
    WT_EQ(n, expected_workers());
    weft_fiber_stats(&st);
    WT_EQ(st.workers, 0);
    WT_EQ(weft_fiber_set_workers(0), -EINVAL);
    WT_EQ(weft_fiber_set_workers(n), 0); /* not started yet: allowed */
    WT_EQ(weft_fiber_init(), 0);
    WT_EQ(weft_fiber_init(), 0);
    WT_EQ(weft_fiber_set_workers(n + 1), -EBUSY); /* running now */
    WT_EQ(weft_fiber_workers(), n);
    weft_fiber_stats(&st);
    WT_EQ(st.workers, n);

    self_rec_t r = {0};
    weft_fiber_t id = wt_start(record_self_fn, &r);
    wt_join(id);
    WT_EQ(r.self, id);
    WT_ASSERT(r.in_fiber);
    WT_GE(r.worker, 0);
    WT_LT(r.worker, n);
    WT_ASSERT(!weft_fiber_alive(id));

    wt_gate_t gate = {0};
    id = wt_start(wt_gate_fiber, &gate);
    WT_ASSERT(weft_fiber_alive(id)); /* queued or waiting: alive either way */
    WT_AWAIT_GE(&gate.arrived, 1);
    WT_ASSERT(weft_fiber_alive(id));
    wt_gate_open(&gate);
    wt_join(id);
    WT_ASSERT(!weft_fiber_alive(id));

    /* Ids of fibers started one after another differ. */
    weft_fiber_t a = wt_start(nop_fn, NULL), b = wt_start(nop_fn, NULL);
    WT_NE(a, b);
    wt_join(a);
    wt_join(b);
}

/* ---- join ---- */

static void join_self_fn(void *arg)
{
    *(int *)arg = weft_fiber_join(weft_fiber_self());
}

static void case_join_self(void)
{
    int rc = 1;
    wt_join(wt_start(join_self_fn, &rc));
    WT_EQ(rc, -EDEADLK);
}

typedef struct {
    weft_fiber_t target;
    int done_seen; /* target's "done" as the joiner saw it after join */
    int *done;
} joiner_t;

static void delayed_done_fn(void *arg)
{
    weft_fiber_usleep(20000);
    WT_STORE((int *)arg, 1);
}

static void joiner_fn(void *arg)
{
    joiner_t *j = arg;
    WT_EQ(weft_fiber_join(j->target), 0);
    j->done_seen = WT_LOAD(j->done);
}

static void *joiner_thread(void *arg)
{
    joiner_fn(arg);
    return NULL;
}

/* Several fibers and pthreads join one fiber; none returns before it ends. */
static void case_join_from_fibers_and_pthreads(void)
{
    int done = 0;
    weft_fiber_t target = wt_start(delayed_done_fn, &done);
    joiner_t j[6];
    weft_fiber_t fj[3];
    pthread_t tj[3];
    for (int i = 0; i < 6; i++)
        j[i] = (joiner_t){.target = target, .done = &done};
    for (int i = 0; i < 3; i++) {
        fj[i] = wt_start(joiner_fn, &j[i]);
        tj[i] = wt_thread(joiner_thread, &j[3 + i]);
    }
    WT_EQ(weft_fiber_join(target), 0);
    WT_EQ(WT_LOAD(&done), 1);
    for (int i = 0; i < 3; i++) {
        wt_join(fj[i]);
        wt_thread_join(tj[i]);
    }
    for (int i = 0; i < 6; i++)
        WT_EQ(j[i].done_seen, 1);

    /* A joiner of a fiber that is blocked stays blocked until it ends. */
    wt_gate_t gate = {0};
    weft_fiber_t blocked = wt_start(wt_gate_fiber, &gate);
    int gate_open = 0;
    joiner_t jb = {.target = blocked, .done = &gate_open};
    weft_fiber_t jf = wt_start(joiner_fn, &jb);
    pthread_t jt;
    joiner_t jb2 = jb;
    jt = wt_thread(joiner_thread, &jb2);
    weft_fiber_usleep(20000);
    WT_ASSERT(weft_fiber_alive(jf));
    WT_STORE(&gate_open, 1);
    wt_gate_open(&gate);
    wt_join(jf);
    wt_thread_join(jt);
    WT_EQ(jb.done_seen, 1);
    WT_EQ(jb2.done_seen, 1);
}

typedef struct {
    int64_t join_ns;     /* what joining the stale id cost */
    int interrupt_rc;
    bool alive;
    int tries;
    bool found;
    wt_gate_t occupant;  /* the new fiber in the stale id's slot */
} stale_t;

/* In a fiber, so that recycled slots come back through this worker's cache:
 * ends a fiber, then starts fibers until one reuses its slot, and checks that
 * the stale id neither joins nor interrupts the live occupant. */
static void stale_fn(void *arg)
{
    stale_t *s = arg;
    weft_fiber_t old = wt_start(nop_fn, NULL);
    wt_join(old);
    for (s->tries = 0; s->tries < 200000; s->tries++) {
        memset(&s->occupant, 0, sizeof(s->occupant));
        weft_fiber_t id = wt_start(wt_gate_fiber, &s->occupant);
        WT_NE(id, old);
        if ((uint32_t)id == (uint32_t)old) {
            WT_AWAIT_GE(&s->occupant.arrived, 1);
            weft_fiber_usleep(WT_SETTLE_US);
            int64_t t0 = wt_now();
            WT_EQ(weft_fiber_join(old), 0);
            s->join_ns = wt_now() - t0;
            s->alive = weft_fiber_alive(old);
            s->interrupt_rc = weft_fiber_interrupt(old);
            weft_fiber_usleep(WT_SETTLE_US);
            WT_ASSERT(weft_fiber_alive(id));
            wt_gate_open(&s->occupant);
            wt_join(id);
            s->found = true;
            return;
        }
        wt_gate_open(&s->occupant);
        wt_join(id);
    }
}

static void case_join_ended_and_stale(void)
{
    weft_fiber_t id = wt_start(nop_fn, NULL);
    wt_join(id);
    int64_t t0 = wt_now();
    for (int i = 0; i < 1000; i++)
        WT_EQ(weft_fiber_join(id), 0);
    WT_LT(wt_now() - t0, 50 * WEFT_NS_PER_MS);
    WT_ASSERT(!weft_fiber_alive(id));
    WT_EQ(weft_fiber_interrupt(id), -ESRCH);
    /* An id whose slot was never created. */
    weft_fiber_t never = ((uint64_t)7 << 32) | 0x3ffffffu;
    WT_EQ(weft_fiber_join(never), 0);
    WT_ASSERT(!weft_fiber_alive(never));
    WT_EQ(weft_fiber_interrupt(never), -ESRCH);

    stale_t s = {0};
    wt_in_fiber(stale_fn, &s);
    if (!s.found) {
        WT_NOTE("stale_slot_reuse: no slot reused in %d starts, part skipped", s.tries);
        return;
    }
    WT_NOTE("stale_slot_reuse: slot reused after %d starts, stale join took %.1f us", s.tries,
            (double)s.join_ns / 1e3);
    WT_LT(s.join_ns, 10 * WEFT_NS_PER_MS);
    WT_ASSERT(!s.alive);
    WT_EQ(s.interrupt_rc, -ESRCH);
    WT_EQ(s.occupant.interrupts, 0); /* the occupant was not woken */
}

/* ---- many fibers ---- */

static uint8_t *g_ran;

static void mark_fn(void *arg)
{
    __atomic_add_fetch(&g_ran[(uintptr_t)arg], 1, __ATOMIC_RELAXED);
}

/* Starts fibers for indexes [lo, hi) in waves of `wave`, joining each wave. */
static void run_waves(size_t lo, size_t hi, size_t wave)
{
    weft_fiber_t *ids = malloc(wave * sizeof(*ids));
    WT_ASSERT(ids);
    for (size_t base = lo; base < hi; base += wave) {
        size_t n = hi - base < wave ? hi - base : wave;
        for (size_t i = 0; i < n; i++)
            ids[i] = wt_start_small(mark_fn, (void *)(uintptr_t)(base + i));
        for (size_t i = 0; i < n; i++)
            wt_join(ids[i]);
    }
    free(ids);
}

typedef struct {
    size_t lo, hi, wave;
} range_t;

static void waves_fn(void *arg)
{
    range_t *r = arg;
    run_waves(r->lo, r->hi, r->wave);
}

static void *waves_thread(void *arg)
{
    waves_fn(arg);
    return NULL;
}

static void check_ran_once(size_t n)
{
    for (size_t i = 0; i < n; i++)
        WT_ASSERT_MSG(g_ran[i] == 1, "fiber %zu ran %d times", i, g_ran[i]);
}

static void case_million_fibers(void)
{
    enum { STARTERS = 4 };
    size_t total = (size_t)wt_scaled(1000000);
    g_ran = calloc(total, 1);
    WT_ASSERT(g_ran);
    weft_fiber_stats_t s0, s1;
    weft_fiber_stats(&s0);

    /* Half from STARTERS fibers, half from this pthread, at the same time. */
    size_t half = total / 2, per = half / STARTERS;
    range_t r[STARTERS];
    weft_fiber_t starters[STARTERS];
    int64_t t0 = wt_now();
    for (int i = 0; i < STARTERS; i++) {
        r[i] = (range_t){.lo = (size_t)i * per, .hi = (size_t)(i + 1) * per, .wave = 2500};
        starters[i] = wt_start(waves_fn, &r[i]);
    }
    run_waves((size_t)STARTERS * per, total, 10000);
    for (int i = 0; i < STARTERS; i++)
        wt_join(starters[i]);
    int64_t dt = wt_now() - t0;
    check_ran_once(total);
    weft_fiber_stats(&s1);
    WT_GE(s1.fibers_started - s0.fibers_started, (int64_t)total);
    WT_GE(s1.switches - s0.switches, (int64_t)total);
    WT_NOTE("million_fibers: %zu fibers started and joined in %.1f ms (%.0f ns each), "
            "%lld steals",
            total, wt_ms(dt), (double)dt / (double)total,
            (long long)(s1.steals - s0.steals));
    free(g_ran);
    g_ran = NULL;
}

/* Several foreign pthreads start (and join) fibers at once. */
static void case_foreign_pthreads(void)
{
    enum { THREADS = 4 };
    size_t per = (size_t)wt_scaled(25000);
    g_ran = calloc(per * THREADS, 1);
    WT_ASSERT(g_ran);
    range_t r[THREADS];
    pthread_t t[THREADS];
    int64_t t0 = wt_now();
    for (int i = 0; i < THREADS; i++) {
        r[i] = (range_t){.lo = (size_t)i * per, .hi = (size_t)(i + 1) * per, .wave = 1000};
        t[i] = wt_thread(waves_thread, &r[i]);
    }
    for (int i = 0; i < THREADS; i++)
        wt_thread_join(t[i]);
    int64_t dt = wt_now() - t0;
    check_ran_once(per * THREADS);
    WT_NOTE("foreign_pthreads: %d threads started %zu fibers in %.1f ms (%.0f ns each)",
            THREADS, per * THREADS, wt_ms(dt), (double)dt / (double)(per * THREADS));
    free(g_ran);
    g_ran = NULL;
}

/* ---- spreading work ---- */

typedef struct {
    int worker;
} busy_t;

static void busy_fn(void *arg)
{
    busy_t *b = arg;
    b->worker = weft_fiber_worker_index();
    wt_spin_ns(10 * WEFT_NS_PER_MS);
}

/* Starts n CPU-bound fibers, joins them, returns how many workers ran them. */
static int spread(int n, busy_t *b)
{
    weft_fiber_t ids[64];
    for (int i = 0; i < n; i++)
        ids[i] = wt_start(busy_fn, &b[i]);
    for (int i = 0; i < n; i++)
        wt_join(ids[i]);
    uint64_t seen[4] = {0};
    int distinct = 0;
    for (int i = 0; i < n; i++) {
        int w = b[i].worker;
        WT_GE(w, 0);
        if (!(seen[w / 64] & (1ull << (w % 64)))) {
            seen[w / 64] |= 1ull << (w % 64);
            distinct++;
        }
    }
    return distinct;
}

typedef struct {
    int n, distinct;
    busy_t b[64];
} spread_t;

static void spread_fn(void *arg)
{
    spread_t *s = arg;
    s->distinct = spread(s->n, s->b);
}

static void case_work_spreads(void)
{
    int workers = weft_fiber_workers();
    if (workers < 2) {
        WT_NOTE("work_spreads: one worker, skipped");
        return;
    }
    spread_t s = {.n = 4 * workers > 64 ? 64 : 4 * workers};
    int from_pthread = spread(s.n, s.b);
    /* Idle a while first, so the scheduler's monitor is in its slow tick
     * when one worker turns busy: the case a fiber-started burst must
     * survive. */
    usleep(50 * 1000);
    wt_in_fiber(spread_fn, &s);
    WT_NOTE("work_spreads: %d busy fibers ran on %d workers when started from a pthread, "
            "%d when started from a fiber (of %d)",
            s.n, from_pthread, s.distinct, workers);
    WT_GT(from_pthread, 1);
    WT_GT(s.distinct, 1);
}

/* ---- start_urgent, yield ---- */

typedef struct {
    int ran;
    int worker;
} urgent_child_t;

static void urgent_child_fn(void *arg)
{
    urgent_child_t *c = arg;
    c->worker = weft_fiber_worker_index();
    WT_STORE(&c->ran, 1);
}

typedef struct {
    int rounds;
    int ran_first;     /* rounds where the child had run when start_urgent returned */
    int same_worker;   /* rounds where it ran on the caller's worker */
} urgent_t;

static void urgent_fn(void *arg)
{
    urgent_t *u = arg;
    for (int i = 0; i < u->rounds; i++) {
        urgent_child_t c = {0, -1};
        int before = weft_fiber_worker_index();
        weft_fiber_t id;
        WT_EQ(weft_fiber_start_urgent(&id, NULL, urgent_child_fn, &c), 0);
        u->ran_first += WT_LOAD(&c.ran);
        wt_join(id);
        u->same_worker += c.worker == before;
    }
}

/* With several workers the caller may be stolen and resume elsewhere before
 * the child runs, but the child always starts on the caller's worker. */
static void case_start_urgent(void)
{
    urgent_t u = {.rounds = 1000};
    wt_in_fiber(urgent_fn, &u);
    WT_NOTE("start_urgent: child ran first in %d of %d rounds", u.ran_first, u.rounds);
    WT_EQ(u.same_worker, u.rounds);
    WT_GE(u.ran_first, u.rounds * 9 / 10);

    /* From a pthread it is start_background. */
    urgent_child_t c = {0, -1};
    weft_fiber_t id;
    WT_EQ(weft_fiber_start_urgent(&id, NULL, urgent_child_fn, &c), 0);
    wt_join(id);
    WT_EQ(c.ran, 1);
}

typedef struct {
    int flag;
    int spins;
} yield_wait_t;

static void set_flag_fn(void *arg)
{
    WT_STORE((int *)arg, 1);
}

/* Yields until a fiber it started (without waking anyone) has run: only
 * yield can let that fiber onto this worker. */
static void yield_until_fn(void *arg)
{
    yield_wait_t *y = arg;
    weft_fiber_attr_t quiet = {.flags = WEFT_FIBER_NOSIGNAL};
    weft_fiber_t id = wt_start_attr(&quiet, set_flag_fn, &y->flag);
    while (!WT_LOAD(&y->flag) && y->spins < 10000000) {
        weft_fiber_yield();
        y->spins++;
    }
    wt_join(id);
}

static void case_yield_lets_others_run(void)
{
    yield_wait_t y = {0, 0};
    wt_in_fiber(yield_until_fn, &y);
    WT_EQ(y.flag, 1);
    weft_fiber_yield(); /* from a pthread: sched_yield */
}

/* ---- attributes ---- */

__attribute__((noinline)) static uint64_t use_stack(size_t depth)
{
    volatile char frame[1024];
    frame[0] = (char)depth;
    frame[sizeof(frame) - 1] = (char)(depth >> 8);
    if (depth == 0)
        return (uint8_t)frame[0];
    return use_stack(depth - 1) + (uint8_t)frame[0] + (uint8_t)frame[sizeof(frame) - 1];
}

typedef struct {
    size_t bytes;
    uint64_t sum;
    weft_fiber_t self;
} stack_job_t;

static void stack_job_fn(void *arg)
{
    stack_job_t *j = arg;
    j->sum = use_stack(j->bytes / 1024);
    j->self = weft_fiber_self();
}

static void run_with_stack(size_t stack_size, const char *name, size_t use)
{
    weft_fiber_attr_t attr = {.stack_size = stack_size, .name = name};
    stack_job_t j = {.bytes = use};
    weft_fiber_t id = wt_start_attr(&attr, stack_job_fn, &j);
    wt_join(id);
    WT_EQ(j.self, id);
    WT_GT(j.sum, 0);
}

static void case_attributes(void)
{
    run_with_stack(WEFT_STACK_SMALL, "small", 16 * 1024);
    run_with_stack(WEFT_STACK_DEFAULT, "default", 128 * 1024);
    run_with_stack(0, NULL, 128 * 1024);
    /* A deep but legal recursion: 6 MiB of the 8 MiB large stack. */
    run_with_stack(WEFT_STACK_LARGE, "large", 6 * 1024 * 1024);
    run_with_stack(1 << 20, "custom-1MiB", 768 * 1024);
    run_with_stack(3 * 1000 * 1000, "custom-3MB", 2 * 1000 * 1000);
    run_with_stack(100, "custom-tiny", 1024);

    /* NOSIGNAL from a pthread: nobody is told, flush tells them. */
    weft_fiber_attr_t quiet = {.flags = WEFT_FIBER_NOSIGNAL, .name = "quiet"};
    int flag = 0;
    weft_fiber_t id = wt_start_attr(&quiet, set_flag_fn, &flag);
    weft_fiber_flush();
    wt_join(id);
    WT_EQ(flag, 1);
}

/* ---- interrupt ---- */

typedef struct {
    int ready;
    int go;
    int rc, rc2;
    int64_t elapsed, elapsed2;
    int32_t word;
    int acquired;
    weft_mutex_t *mutex;
    weft_fiber_t target;
} intr_t;

static void intr_sleep_fn(void *arg)
{
    intr_t *t = arg;
    WT_STORE(&t->ready, 1);
    int64_t t0 = wt_now();
    t->rc = weft_fiber_usleep(10 * 1000 * 1000);
    t->elapsed = wt_now() - t0;
}

static void intr_butex_fn(void *arg)
{
    intr_t *t = arg;
    WT_STORE(&t->ready, 1);
    int64_t t0 = wt_now();
    t->rc = weft_butex_wait(&t->word, 0, -1);
    t->elapsed = wt_now() - t0;
}

static void intr_timed_butex_fn(void *arg)
{
    intr_t *t = arg;
    WT_STORE(&t->ready, 1);
    int64_t t0 = wt_now();
    t->rc = weft_butex_wait(&t->word, 0, wt_now() + 10 * WEFT_NS_PER_SEC);
    t->elapsed = wt_now() - t0;
}

/* Interrupted while running: the next blocking call returns -EINTR at once,
 * and only that one. */
static void intr_pending_fn(void *arg)
{
    intr_t *t = arg;
    WT_STORE(&t->ready, 1);
    while (!WT_LOAD(&t->go))
        __asm__ volatile("" ::: "memory");
    int64_t t0 = wt_now();
    t->rc = weft_fiber_usleep(1000 * 1000);
    t->elapsed = wt_now() - t0;
    t0 = wt_now();
    t->rc2 = weft_fiber_usleep(2000);
    t->elapsed2 = wt_now() - t0;
}

static void intr_mutex_fn(void *arg)
{
    intr_t *t = arg;
    WT_STORE(&t->ready, 1);
    weft_mutex_lock(t->mutex);
    WT_STORE(&t->acquired, 1);
    weft_mutex_unlock(t->mutex);
}

static void intr_join_fn(void *arg)
{
    intr_t *t = arg;
    WT_STORE(&t->ready, 1);
    t->rc = weft_fiber_join(t->target);
    WT_STORE(&t->acquired, 1);
}

static void interrupter_fn(void *arg)
{
    intr_t *t = arg;
    t->rc2 = weft_fiber_interrupt(t->target);
}

/* Starts fn, waits until it is (about to be) blocked, interrupts it. */
static weft_fiber_t start_and_interrupt(weft_fiber_fn *fn, intr_t *t)
{
    weft_fiber_t id = wt_start(fn, t);
    WT_AWAIT_GE(&t->ready, 1);
    weft_fiber_usleep(WT_SETTLE_US);
    WT_EQ(weft_fiber_interrupt(id), 0);
    return id;
}

static void case_interrupt(void)
{
    const int64_t quick = 1000 * WEFT_NS_PER_MS;
    intr_t t = {0};
    wt_join(start_and_interrupt(intr_sleep_fn, &t));
    WT_EQ(t.rc, -EINTR);
    WT_LT(t.elapsed, quick);

    t = (intr_t){0};
    wt_join(start_and_interrupt(intr_butex_fn, &t));
    WT_EQ(t.rc, -EINTR);
    WT_LT(t.elapsed, quick);

    t = (intr_t){0};
    wt_join(start_and_interrupt(intr_timed_butex_fn, &t));
    WT_EQ(t.rc, -EINTR);
    WT_LT(t.elapsed, quick);

    /* Pending interrupt. */
    t = (intr_t){0};
    weft_fiber_t id = wt_start(intr_pending_fn, &t);
    WT_AWAIT_GE(&t.ready, 1);
    WT_EQ(weft_fiber_interrupt(id), 0);
    WT_STORE(&t.go, 1);
    wt_join(id);
    WT_EQ(t.rc, -EINTR);
    WT_LT(t.elapsed, quick);
    WT_EQ(t.rc2, 0);
    WT_GE(t.elapsed2, 2000 * WEFT_NS_PER_US);
    /* Ended. */
    WT_EQ(weft_fiber_interrupt(id), -ESRCH);

    /* From a fiber. */
    t = (intr_t){0};
    intr_t by = {0};
    by.target = wt_start(intr_sleep_fn, &t);
    WT_AWAIT_GE(&t.ready, 1);
    weft_fiber_usleep(WT_SETTLE_US);
    wt_join(wt_start(interrupter_fn, &by));
    WT_EQ(by.rc2, 0);
    wt_join(by.target);
    WT_EQ(t.rc, -EINTR);

    /* An interrupt does not break a mutex: the fiber still waits its turn. */
    weft_mutex_t m = WEFT_MUTEX_INITIALIZER;
    weft_mutex_lock(&m);
    t = (intr_t){.mutex = &m};
    id = start_and_interrupt(intr_mutex_fn, &t);
    weft_fiber_usleep(10000);
    WT_EQ(WT_LOAD(&t.acquired), 0);
    weft_mutex_unlock(&m);
    wt_join(id);
    WT_EQ(t.acquired, 1);

    /* Nor a join. */
    wt_gate_t gate = {0};
    t = (intr_t){.target = wt_start(wt_gate_fiber, &gate)};
    id = start_and_interrupt(intr_join_fn, &t);
    weft_fiber_usleep(10000);
    WT_EQ(WT_LOAD(&t.acquired), 0);
    wt_gate_open(&gate);
    wt_join(id);
    WT_EQ(t.rc, 0);
    WT_EQ(gate.interrupts, 0);
}

/* ---- figures ---- */

static void case_stats(void)
{
    weft_fiber_stats_t s0, s1;
    WT_EQ(weft_fiber_init(), 0);
    weft_fiber_stats(&s0);
    WT_EQ(s0.workers, weft_fiber_workers());
    weft_fiber_t ids[100];
    for (int i = 0; i < 100; i++)
        ids[i] = wt_start(nop_fn, NULL);
    for (int i = 0; i < 100; i++)
        wt_join(ids[i]);
    /* A joined fiber is counted as ended a moment after its joiner wakes
     * (and so may be one of an earlier case, counted in s0). */
    int64_t end = wt_now() + WEFT_NS_PER_SEC;
    do {
        weft_fiber_stats(&s1);
        if (s1.fibers_alive <= s0.fibers_alive)
            break;
        weft_fiber_usleep(100);
    } while (wt_now() < end);
    WT_LE(s1.fibers_alive, s0.fibers_alive);
    WT_GE(s1.fibers_started - s0.fibers_started, 100);
    WT_GE(s1.switches - s0.switches, 100);
    WT_NOTE("stats: alive=%lld started=%lld switches=%lld steals=%lld parks=%lld wakeups=%lld",
            (long long)s1.fibers_alive, (long long)s1.fibers_started,
            (long long)s1.switches, (long long)s1.steals, (long long)s1.parks,
            (long long)s1.wakeups);
}

/* ---- with one worker (child process) ---- */

static void urgent_strict_fn(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++) {
        urgent_child_t c = {0, -1};
        weft_fiber_t id;
        WT_EQ(weft_fiber_start_urgent(&id, NULL, urgent_child_fn, &c), 0);
        WT_EQ(WT_LOAD(&c.ran), 1); /* it ran before we continued */
        wt_join(id);

        /* start_background queues it behind us: it runs once we yield. */
        int flag = 0;
        id = wt_start(set_flag_fn, &flag);
        WT_EQ(WT_LOAD(&flag), 0);
        weft_fiber_yield();
        WT_EQ(WT_LOAD(&flag), 1);
        wt_join(id);
    }
}

enum { ALT_ROUNDS = 1000 };

typedef struct {
    char log[2 * ALT_ROUNDS];
    int len;
} alt_log_t;

typedef struct {
    alt_log_t *log;
    char tag;
} alt_t;

static void alternate_fn(void *arg)
{
    alt_t *a = arg;
    for (int i = 0; i < ALT_ROUNDS; i++) {
        a->log->log[a->log->len++] = a->tag; /* one worker: no race */
        weft_fiber_yield();
    }
}

static void alternate_parent_fn(void *arg)
{
    alt_log_t *log = arg;
    alt_t a = {log, 'a'}, b = {log, 'b'};
    weft_fiber_t ia = wt_start(alternate_fn, &a), ib = wt_start(alternate_fn, &b);
    wt_join(ia);
    wt_join(ib);
}

static void one_worker_child(void)
{
    WT_EQ(weft_fiber_set_workers(1), 0);
    WT_EQ(weft_fiber_workers(), 1);
    wt_in_fiber(urgent_strict_fn, NULL);

    alt_log_t log = {.len = 0};
    wt_in_fiber(alternate_parent_fn, &log);
    WT_EQ(log.len, 2 * ALT_ROUNDS);
    for (int i = 1; i < log.len; i++)
        WT_ASSERT_MSG(log.log[i] != log.log[i - 1], "yield did not alternate at %d: %.*s", i,
                      log.len - i + 1 > 16 ? 16 : log.len - i + 1, log.log + i - 1);
}

static void case_one_worker_ordering(void)
{
    wt_child_t *c = malloc(sizeof(*c));
    WT_ASSERT(c);
    wt_run_self(c, (char *[]){"--one-worker", NULL}, (char *[]){"WEFT_WORKERS=1", NULL});
    WT_CHILD_OK(c);
    free(c);
}

/* ---- yield storm, more workers than CPUs (child process) ----
 *
 * Fibers that yield (and now and then sleep or start a fiber) on 8 workers
 * that spin for work instead of parking, on however few CPUs: thieves get
 * preempted in the middle of a steal while the owner keeps pushing, popping
 * and re-queuing yielders. No fiber may ever run on two workers at once, and
 * none may be lost: a watchdog reports the fibers that stopped making
 * progress. */

enum { STORM_FIBERS = 64, STORM_CHILDREN = 64 };

typedef struct {
    int inside;      /* > 1: two workers run this fiber */
    long progress;
    int children_done;
} storm_fiber_t;

static storm_fiber_t g_storm[STORM_FIBERS];
static long g_storm_rounds;
static int g_storm_finished;

static void storm_child_fn(void *arg)
{
    WT_ADD((int *)arg, 1);
}

static void storm_fn(void *arg)
{
    storm_fiber_t *s = arg;
    weft_fiber_t children[STORM_CHILDREN];
    int nchildren = 0;
    for (long k = 0; k < g_storm_rounds; k++) {
        WT_ASSERT_MSG(WT_ADD(&s->inside, 1) == 1, "fiber %d runs on two workers at once",
                      (int)(s - g_storm));
        WT_SUB(&s->inside, 1);
        WT_STORE(&s->progress, k);
        if (k % 512 == 511 && nchildren < STORM_CHILDREN)
            children[nchildren++] = wt_start(storm_child_fn, &s->children_done);
        if (k % 64 == 63)
            weft_fiber_usleep(20);
        else
            weft_fiber_yield();
    }
    for (int i = 0; i < nchildren; i++)
        wt_join(children[i]);
    WT_EQ(WT_LOAD(&s->children_done), nchildren);
    WT_ADD(&g_storm_finished, 1);
}

static void *storm_watchdog(void *arg)
{
    int64_t deadline = wt_now() + *(int64_t *)arg;
    while (WT_LOAD(&g_storm_finished) < STORM_FIBERS) {
        if (wt_now() > deadline) {
            for (int i = 0; i < STORM_FIBERS; i++)
                if (WT_LOAD(&g_storm[i].progress) < g_storm_rounds - 1)
                    fprintf(stderr, "fiber %d stuck after %ld of %ld rounds, %d children done\n",
                            i, WT_LOAD(&g_storm[i].progress), g_storm_rounds,
                            WT_LOAD(&g_storm[i].children_done));
            WT_ASSERT_MSG(false, "only %d of %d fibers finished: fibers were lost",
                          WT_LOAD(&g_storm_finished), STORM_FIBERS);
        }
        weft_fiber_usleep(10000);
    }
    return NULL;
}

static void yield_storm_child(void)
{
    g_storm_rounds = wt_scaled(20000);
    int64_t limit = 60 * WEFT_NS_PER_SEC;
    pthread_t dog = wt_thread(storm_watchdog, &limit);
    weft_fiber_t ids[STORM_FIBERS];
    int64_t t0 = wt_now();
    for (int i = 0; i < STORM_FIBERS; i++)
        ids[i] = wt_start(storm_fn, &g_storm[i]);
    for (int i = 0; i < STORM_FIBERS; i++)
        wt_join(ids[i]);
    wt_thread_join(dog);
    weft_fiber_stats_t st;
    weft_fiber_stats(&st);
    WT_NOTE("yield_storm: %d fibers x %ld rounds on %d workers in %.0f ms, %lld steals",
            STORM_FIBERS, g_storm_rounds, st.workers, wt_ms(wt_now() - t0),
            (long long)st.steals);
}

static void case_yield_storm(void)
{
    wt_child_t *c = malloc(sizeof(*c));
    WT_ASSERT(c);
    wt_run_self(c, (char *[]){"--yield-storm", NULL},
                (char *[]){"WEFT_WORKERS=8", "WEFT_SPIN_US=100000", NULL});
    WT_CHILD_OK(c);
    free(c);
}

static const wt_case_t cases[] = {
    WT_CASE(case_ids_and_alive),
    WT_CASE(case_join_self),
    WT_CASE(case_join_from_fibers_and_pthreads),
    WT_CASE(case_join_ended_and_stale),
    WT_CASE(case_million_fibers),
    WT_CASE(case_foreign_pthreads),
    WT_CASE(case_work_spreads),
    WT_CASE(case_start_urgent),
    WT_CASE(case_yield_lets_others_run),
    WT_CASE(case_one_worker_ordering),
    WT_CASE(case_attributes),
    WT_CASE(case_interrupt),
    WT_CASE(case_stats),
    WT_CASE(case_yield_storm),
};

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--one-worker") == 0)
        one_worker_child();
    else if (argc > 1 && strcmp(argv[1], "--yield-storm") == 0)
        yield_storm_child();
    else
        wt_run_cases(argc, argv, cases, WT_NCASES(cases));
    WT_EQ(weft_fiber_shutdown(), 0);
    return 0;
}
