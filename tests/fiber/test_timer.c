/*
 * test_timer.c - the timer thread: run_at, run_after, run_every, cancel.
 *
 * Sleeps, timed waits and RPC deadlines all sit on these timers, and the
 * cancel contract is what lets a waiter free the memory a callback touches:
 * CANCELLED means the callback never runs, RAN means it ran and has
 * returned. So: one-shot timers fire once, never early, a few ms late at
 * most (lateness printed); periodic timers keep their rate and stop on
 * cancel, also from inside their own callback; cancel before firing returns
 * CANCELLED and the callback never runs, after it ran returns RAN; cancel
 * racing the timer thread from many threads and fibers keeps "ran" and "RAN"
 * equal for every timer, also when busy workers run the timers a starved
 * timer thread is late for; cancel while the callback runs waits for it;
 * callbacks can arm and cancel timers; and timers fire on time while every
 * worker is busy.
 */
#include "fiber_test_util.h"

#define MAX_LATE_NS wt_slack_ns(5 * WEFT_NS_PER_MS)

typedef struct {
    int64_t deadline;
    int64_t fired_at;
    int runs;
} shot_t;

static void shot_cb(void *arg)
{
    shot_t *s = arg;
    s->fired_at = wt_now();
    WT_ADD(&s->runs, 1);
}

static void case_invalid(void)
{
    weft_timer_id_t id = 0;
    int x;
    WT_EQ(weft_timer_cancel(0), -EINVAL);
    WT_EQ(weft_timer_run_every(&id, 0, shot_cb, &x), -EINVAL);
    WT_EQ(weft_timer_run_every(&id, -5, shot_cb, &x), -EINVAL);
    WT_EQ(weft_timer_run_after(&id, 1000, NULL, &x), -EINVAL);
    WT_EQ(weft_timer_run_at(NULL, wt_now(), shot_cb, &x), -EINVAL);
}

/* Timers at random delays up to 100 ms, by run_at and run_after, from this
 * thread and from a fiber: each fires once, not early, at most 5 ms late. */
typedef struct {
    shot_t *shots;
    size_t from, to;
} arm_t;

static void arm_fn(void *arg)
{
    arm_t *a = arg;
    uint64_t seed = 7 + a->from;
    for (size_t i = a->from; i < a->to; i++) {
        shot_t *s = &a->shots[i];
        int64_t delay = (int64_t)(wt_rand(&seed) % (100 * WEFT_NS_PER_MS));
        weft_timer_id_t id;
        if (i & 1) {
            s->deadline = wt_now() + delay;
            WT_EQ(weft_timer_run_at(&id, s->deadline, shot_cb, s), 0);
        } else {
            int64_t before = wt_now();
            WT_EQ(weft_timer_run_after(&id, delay, shot_cb, s), 0);
            s->deadline = before + delay; /* at or before the timer's own */
        }
        WT_NE(id, 0);
        if (i % 64 == 0)
            weft_fiber_usleep(100); /* spread the arming over time */
    }
}

static void case_one_shot(void)
{
    size_t n = (size_t)wt_scaled(2000);
    shot_t *shots = calloc(n, sizeof(*shots));
    WT_ASSERT(shots);
    arm_t a = {shots, 0, n / 2}, b = {shots, n / 2, n};
    weft_fiber_t f = wt_start(arm_fn, &a);
    arm_fn(&b);
    wt_join(f);
    weft_fiber_usleep(150 * 1000);
    int64_t *late = calloc(n, sizeof(*late));
    WT_ASSERT(late);
    size_t too_late = 0;
    for (size_t i = 0; i < n; i++) {
        WT_EQ(WT_LOAD(&shots[i].runs), 1);
        late[i] = shots[i].fired_at - shots[i].deadline;
        WT_ASSERT_MSG(late[i] >= 0, "timer %zu fired %lld ns early", i, (long long)-late[i]);
        too_late += late[i] > MAX_LATE_NS;
    }
    wt_note_percentiles("timer_lateness", late, n); /* sorts */
    if (too_late)
        WT_NOTE("timer_lateness: %zu of %zu timers fired too late", too_late, n);
    WT_TIMING_LE(late[n - 1], MAX_LATE_NS);
    free(late);
    free(shots);

    /* A deadline in the past fires at once. */
    shot_t s = {0};
    weft_timer_id_t id;
    int64_t t0 = wt_now();
    WT_EQ(weft_timer_run_at(&id, t0 - WEFT_NS_PER_SEC, shot_cb, &s), 0);
    WT_AWAIT_GE(&s.runs, 1);
    WT_TIMING_LE(s.fired_at - t0, MAX_LATE_NS);
    WT_EQ(weft_timer_cancel(id), WEFT_TIMER_RAN);
}

/* ---- periodic ---- */

enum { MAX_TICKS = 256 };

typedef struct {
    int64_t at[MAX_TICKS];
    int runs;
    int cancel_at_run;      /* cancel from inside the callback at this run */
    int cancel_rc;
    weft_timer_id_t id;
} ticker_t;

static void tick_cb(void *arg)
{
    ticker_t *t = arg;
    int k = t->runs;
    if (k < MAX_TICKS)
        t->at[k] = wt_now();
    if (k + 1 == t->cancel_at_run)
        t->cancel_rc = weft_timer_cancel(t->id);
    WT_STORE(&t->runs, k + 1);
}

static void case_run_every(void)
{
    const int64_t interval = 10 * WEFT_NS_PER_MS;
    ticker_t *t = calloc(1, sizeof(*t));
    WT_ASSERT(t);
    int64_t start = wt_now();
    WT_EQ(weft_timer_run_every(&t->id, interval, tick_cb, t), 0);
    weft_fiber_usleep(205 * 1000);
    int runs = WT_LOAD(&t->runs);
    int due = (int)((wt_now() - start) / interval); /* runs due by now */
    int64_t late[MAX_TICKS];
    for (int k = 0; k < runs; k++) {
        int64_t due = start + (k + 1) * interval;
        late[k] = t->at[k] - due;
        WT_ASSERT_MSG(late[k] >= 0, "run %d came %lld ns early", k, (long long)-late[k]);
        WT_TIMING_LE(late[k], MAX_LATE_NS);
    }
    wt_note_percentiles("periodic_lateness", late, (size_t)runs);
    WT_GE(runs, 19);
    WT_LE(runs, due);     /* none early */
    WT_GE(runs, due - 1); /* none skipped */
    int rc = weft_timer_cancel(t->id);
    int after_cancel = WT_LOAD(&t->runs);
    weft_fiber_usleep(50 * 1000);
    WT_EQ(WT_LOAD(&t->runs), after_cancel);
    WT_EQ(weft_timer_cancel(t->id), WEFT_TIMER_RAN);
    /* It ran 20 times: cancel must not claim it never ran. */
    WT_ASSERT_MSG(rc == WEFT_TIMER_RAN,
                  "cancel of a periodic timer that ran %d times returned %s", runs,
                  rc == WEFT_TIMER_CANCELLED ? "WEFT_TIMER_CANCELLED" : "an error");
    free(t);
}

static void case_run_every_cancel_in_callback(void)
{
    ticker_t *t = calloc(1, sizeof(*t));
    WT_ASSERT(t);
    t->cancel_at_run = 5;
    WT_EQ(weft_timer_run_every(&t->id, 2 * WEFT_NS_PER_MS, tick_cb, t), 0);
    WT_AWAIT_GE(&t->runs, 5);
    weft_fiber_usleep(30 * 1000);
    WT_EQ(WT_LOAD(&t->runs), 5);
    WT_EQ(t->cancel_rc, WEFT_TIMER_RAN);
    WT_EQ(weft_timer_cancel(t->id), WEFT_TIMER_RAN);
    free(t);
}

/* ---- cancel ---- */

static void case_cancel_before_and_after(void)
{
    shot_t s = {0};
    weft_timer_id_t id;
    WT_EQ(weft_timer_run_after(&id, 50 * WEFT_NS_PER_MS, shot_cb, &s), 0);
    WT_EQ(weft_timer_cancel(id), WEFT_TIMER_CANCELLED);
    weft_fiber_usleep(100 * 1000);
    WT_EQ(WT_LOAD(&s.runs), 0);
    WT_EQ(weft_timer_cancel(id), WEFT_TIMER_RAN); /* "already cancelled" reads RAN */

    /* Cancelled at once, before the timer thread even saw it. */
    for (int i = 0; i < 100; i++) {
        WT_EQ(weft_timer_run_after(&id, 0, shot_cb, &s), 0);
        int rc = weft_timer_cancel(id);
        WT_ASSERT(rc == WEFT_TIMER_CANCELLED || rc == WEFT_TIMER_RAN);
        WT_EQ(WT_LOAD(&s.runs), rc == WEFT_TIMER_RAN ? 1 : 0);
        WT_STORE(&s.runs, 0);
    }

    WT_EQ(weft_timer_run_after(&id, WEFT_NS_PER_MS, shot_cb, &s), 0);
    WT_AWAIT_GE(&s.runs, 1);
    WT_EQ(weft_timer_cancel(id), WEFT_TIMER_RAN);
    WT_EQ(weft_timer_cancel(id), WEFT_TIMER_RAN);
    WT_EQ(WT_LOAD(&s.runs), 1);
}

typedef struct {
    int runs;
    int done;
} race_rec_t;

static int g_ran_on_worker; /* race callbacks a worker ran, not the timer thread */

static void race_cb(void *arg)
{
    race_rec_t *r = arg;
    WT_ADD(&r->runs, 1);
    if (weft_fiber_worker_index() >= 0)
        WT_ADD(&g_ran_on_worker, 1);
    wt_spin_ns(2000);
    WT_STORE(&r->done, 1);
}

typedef struct {
    race_rec_t *recs;
    int *results;
    int n;
    uint64_t seed;
    int yield; /* wait by yielding (a fiber), not by spinning */
    int ran, cancelled;
} racer_t;

/* Lets time pass: spinning keeps the worker, yielding passes it through
 * the scheduler, where it may run timers the timer thread is late for. */
static void racer_pause(racer_t *r, int64_t ns)
{
    if (!r->yield) {
        wt_spin_ns(ns);
        return;
    }
    int64_t end = wt_now() + ns;
    while (wt_now() < end)
        weft_fiber_yield();
}

/* Arms timers due within 300 us and cancels each after a random pause. */
static void racer_fn(void *arg)
{
    racer_t *r = arg;
    for (int i = 0; i < r->n; i++) {
        race_rec_t *rec = &r->recs[i];
        weft_timer_id_t id;
        WT_EQ(weft_timer_run_after(&id, (int64_t)(wt_rand(&r->seed) % 300000), race_cb, rec), 0);
        racer_pause(r, (int64_t)(wt_rand(&r->seed) % 300000));
        int rc = weft_timer_cancel(id);
        r->results[i] = rc;
        if (rc == WEFT_TIMER_RAN) {
            /* It ran, and has returned. */
            WT_EQ(WT_LOAD(&rec->done), 1);
            WT_EQ(WT_LOAD(&rec->runs), 1);
            r->ran++;
        } else {
            WT_EQ(rc, WEFT_TIMER_CANCELLED);
            WT_EQ(WT_LOAD(&rec->runs), 0);
            r->cancelled++;
        }
    }
}

static void *racer_thread(void *arg)
{
    racer_fn(arg);
    return NULL;
}

/* Checks each racer's timers: a callback ran exactly when cancel said RAN. */
static void check_racers(const char *name, racer_t *r, int nr)
{
    int ran = 0, cancelled = 0;
    for (int i = 0; i < nr; i++) {
        for (int k = 0; k < r[i].n; k++) {
            int runs = WT_LOAD(&r[i].recs[k].runs);
            WT_ASSERT_MSG(runs == (r[i].results[k] == WEFT_TIMER_RAN),
                          "%s: timer %d/%d: cancel said %d, callback ran %d times", name, i, k,
                          r[i].results[k], runs);
        }
        ran += r[i].ran;
        cancelled += r[i].cancelled;
        free(r[i].recs);
        free(r[i].results);
    }
    WT_NOTE("%s: %d timers, %d ran (%d of them on a worker), %d cancelled", name,
            nr * r[0].n, ran, WT_LOAD(&g_ran_on_worker), cancelled);
    WT_GT(ran, 0);
    WT_GT(cancelled, 0);
}

static void racers_init(racer_t *r, int nr, int n, int yield)
{
    for (int i = 0; i < nr; i++) {
        r[i] = (racer_t){.recs = calloc((size_t)n, sizeof(race_rec_t)),
                         .results = calloc((size_t)n, sizeof(int)),
                         .n = n,
                         .seed = 1000 + (uint64_t)i,
                         .yield = yield};
        WT_ASSERT(r[i].recs && r[i].results);
    }
    WT_STORE(&g_ran_on_worker, 0);
}

static void case_cancel_race(void)
{
    enum { THREADS = 3, FIBERS = 3, R = THREADS + FIBERS };
    racer_t r[R];
    pthread_t t[THREADS];
    weft_fiber_t f[FIBERS];
    racers_init(r, R, (int)wt_scaled(2000), 0);
    for (int i = 0; i < THREADS; i++)
        t[i] = wt_thread(racer_thread, &r[i]);
    for (int i = 0; i < FIBERS; i++)
        f[i] = wt_start(racer_fn, &r[THREADS + i]);
    for (int i = 0; i < THREADS; i++)
        wt_thread_join(t[i]);
    for (int i = 0; i < FIBERS; i++)
        wt_join(f[i]);
    weft_fiber_usleep(20 * 1000); /* past every deadline */
    check_racers("cancel_race", r, R);
}

typedef struct {
    int64_t until;
} hog_thread_t;

static void *hog_thread(void *arg)
{
    hog_thread_t *h = arg;
    while (wt_now() < h->until)
        wt_spin_ns(100 * 1000);
    return NULL;
}

/* The same race, with the timer thread starved of CPU by spinning threads
 * while fibers keep passing through the scheduler: workers then run the
 * timers it is late for, and cancels from other fibers and from a thread
 * meet callbacks running on a worker. How many ran there is printed. */
static void case_cancel_race_workers_help(void)
{
    enum { FIBERS = 4, HOGS = 2, R = FIBERS + 1 };
    racer_t r[R];
    weft_fiber_t f[FIBERS];
    racers_init(r, R, (int)wt_scaled(1000), 1);
    r[FIBERS].yield = 0; /* the thread spins */
    hog_thread_t h = {wt_now() + 60 * WEFT_NS_PER_SEC};
    pthread_t hogs[HOGS];
    for (int i = 0; i < HOGS; i++)
        hogs[i] = wt_thread(hog_thread, &h);
    for (int i = 0; i < FIBERS; i++)
        f[i] = wt_start(racer_fn, &r[i]);
    pthread_t t = wt_thread(racer_thread, &r[FIBERS]);
    for (int i = 0; i < FIBERS; i++)
        wt_join(f[i]);
    wt_thread_join(t);
    WT_STORE(&h.until, 0);
    for (int i = 0; i < HOGS; i++)
        wt_thread_join(hogs[i]);
    weft_fiber_usleep(20 * 1000); /* past every deadline */
    check_racers("cancel_race_workers_help", r, R);
}

typedef struct {
    int started;
    int finished;
} slow_t;

static void slow_cb(void *arg)
{
    slow_t *s = arg;
    WT_STORE(&s->started, 1);
    weft_fiber_usleep(50 * 1000); /* never in a fiber: a plain sleep */
    WT_STORE(&s->finished, 1);
}

typedef struct {
    slow_t s;
    int rc;
    int finished_seen;
    int64_t waited;
} slow_cancel_t;

static void slow_cancel_fn(void *arg)
{
    slow_cancel_t *c = arg;
    weft_timer_id_t id;
    WT_EQ(weft_timer_run_after(&id, WEFT_NS_PER_MS, slow_cb, &c->s), 0);
    /* Neither a sleep (timers wait while slow_cb runs) nor a yield (this
     * worker could then run slow_cb itself, between two fibers, and the
     * cancel below would come after it): spin until another thread runs it. */
    while (!WT_LOAD(&c->s.started))
        wt_relax();
    int64_t t0 = wt_now();
    c->rc = weft_timer_cancel(id);
    c->finished_seen = WT_LOAD(&c->s.finished);
    c->waited = wt_now() - t0;
}

/* Cancel while the callback runs returns only after it returned. */
static void case_cancel_waits_for_callback(void)
{
    for (int fiber = 0; fiber < 2; fiber++) {
        slow_cancel_t c = {0};
        if (fiber)
            wt_in_fiber(slow_cancel_fn, &c);
        else
            slow_cancel_fn(&c);
        WT_EQ(c.rc, WEFT_TIMER_RAN);
        WT_EQ(c.finished_seen, 1);
        WT_GE(c.waited, 30 * WEFT_NS_PER_MS);
    }
}

/* ---- timers armed from timer callbacks ---- */

enum { CHAIN = 10 };

typedef struct {
    int64_t deadline[CHAIN];
    int64_t fired_at[CHAIN];
    int n;
    weft_timer_id_t victim;   /* cancelled by the last link */
    int victim_rc;
} chain_t;

static void chain_cb(void *arg)
{
    chain_t *c = arg;
    int k = c->n;
    c->fired_at[k] = wt_now();
    if (k + 1 < CHAIN) {
        c->deadline[k + 1] = wt_now() + 3 * WEFT_NS_PER_MS;
        weft_timer_id_t id;
        WT_EQ(weft_timer_run_at(&id, c->deadline[k + 1], chain_cb, c), 0);
    } else {
        c->victim_rc = weft_timer_cancel(c->victim);
    }
    WT_STORE(&c->n, k + 1);
}

/* A callback that arms the next timer (a retry, a keepalive) and one that
 * cancels another timer, both on the timer thread itself. */
static void case_timers_from_callbacks(void)
{
    chain_t *c = calloc(1, sizeof(*c));
    shot_t victim = {0};
    WT_ASSERT(c);
    WT_EQ(weft_timer_run_after(&c->victim, 10 * WEFT_NS_PER_SEC, shot_cb, &victim), 0);
    c->deadline[0] = wt_now() + 3 * WEFT_NS_PER_MS;
    weft_timer_id_t id;
    WT_EQ(weft_timer_run_at(&id, c->deadline[0], chain_cb, c), 0);
    WT_AWAIT_GE(&c->n, CHAIN);
    int64_t late[CHAIN];
    for (int k = 0; k < CHAIN; k++) {
        late[k] = c->fired_at[k] - c->deadline[k];
        WT_GE(late[k], 0);
    }
    wt_note_percentiles("chained_timer_lateness", late, CHAIN);
    WT_TIMING_LE(late[CHAIN - 1], MAX_LATE_NS);
    WT_EQ(c->victim_rc, WEFT_TIMER_CANCELLED);
    WT_EQ(WT_LOAD(&victim.runs), 0);
    free(c);
}

/* ---- busy workers ---- */

typedef struct {
    int *spinning;
    int64_t until;
} hog_t;

static void hog_fn(void *arg)
{
    hog_t *h = arg;
    WT_ADD(h->spinning, 1);
    while (wt_now() < h->until)
        __asm__ volatile("" ::: "memory");
}

static void case_fires_while_workers_busy(void)
{
    int workers = weft_fiber_workers();
    int spinning = 0;
    hog_t h = {&spinning, wt_now() + 400 * WEFT_NS_PER_MS};
    weft_fiber_t ids[256];
    for (int i = 0; i < workers; i++)
        ids[i] = wt_start(hog_fn, &h);
    WT_AWAIT_GE(&spinning, workers);
    enum { SHOTS = 10 };
    shot_t s[SHOTS];
    int64_t late[SHOTS];
    for (int i = 0; i < SHOTS; i++) {
        s[i] = (shot_t){.deadline = wt_now() + (i + 1) * 20 * WEFT_NS_PER_MS};
        weft_timer_id_t id;
        WT_EQ(weft_timer_run_at(&id, s[i].deadline, shot_cb, &s[i]), 0);
    }
    /* One sleep, not polling: this thread stays out of the CPUs' way. */
    weft_fiber_sleep_until(s[SHOTS - 1].deadline + 20 * WEFT_NS_PER_MS);
    WT_LT(wt_now(), h.until); /* still busy: the timers fired meanwhile */
    for (int i = 0; i < SHOTS; i++) {
        WT_EQ(WT_LOAD(&s[i].runs), 1);
        late[i] = s[i].fired_at - s[i].deadline;
        WT_GE(late[i], 0);
    }
    for (int i = 0; i < workers; i++)
        wt_join(ids[i]);
    wt_note_percentiles("timer_lateness_workers_busy", late, SHOTS);
    /* Every CPU is busy, so the kernel may let the timer thread wait for up
     * to a scheduler tick (4 ms at HZ=250) before it runs. */
    WT_TIMING_LE(late[SHOTS - 1], 2 * MAX_LATE_NS); /* sorted: the worst */
}

static const wt_case_t cases[] = {
    WT_CASE(case_invalid),
    WT_CASE(case_one_shot),
    WT_CASE(case_run_every_cancel_in_callback),
    WT_CASE(case_cancel_before_and_after),
    WT_CASE(case_cancel_race),
    WT_CASE(case_cancel_race_workers_help),
    WT_CASE(case_cancel_waits_for_callback),
    WT_CASE(case_timers_from_callbacks),
    WT_CASE(case_fires_while_workers_busy),
    WT_CASE(case_run_every),
};

int main(int argc, char **argv)
{
    wt_run_cases(argc, argv, cases, WT_NCASES(cases));
    WT_EQ(weft_fiber_shutdown(), 0);
    return 0;
}
