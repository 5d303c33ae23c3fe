/*
 * test_butex.c - the butex, the one blocking primitive everything else uses.
 *
 * A lost or misdirected wakeup here hangs every lock, condition and join
 * built on top, so the checks are exact where the API is exact: wait returns
 * -EWOULDBLOCK when the word differs; fibers and pthreads wake each other in
 * all four combinations; wake returns how many it woke and wakes no waiter of
 * another word (2048 words share 1024 hash buckets); wake_one is FIFO across
 * fiber and pthread waiters; timed waits time out neither early nor more than
 * a few ms late; thousands of waiters wake at once; a pthread whose wait
 * times out while it is being woken does not leave the waker writing into
 * its stack. A stress ring passes
 * tokens between fibers and pthreads through butexes for a bounded time,
 * with short timeouts and interrupts racing the wakes, and checks that no
 * token (wakeup) was lost.
 */
#include "fiber_test_util.h"

#define MAX_LATE_NS wt_slack_ns(5 * WEFT_NS_PER_MS)

/* ---- single waits ---- */

static void wouldblock_fn(void *arg)
{
    (void)arg;
    int32_t word = 5;
    WT_EQ(weft_butex_wait(&word, 4, -1), -EWOULDBLOCK);
    WT_EQ(weft_butex_wait(&word, 4, wt_now() + WEFT_NS_PER_SEC), -EWOULDBLOCK);
    /* The value is checked first, then the deadline. */
    WT_EQ(weft_butex_wait(&word, 4, wt_now() - 1), -EWOULDBLOCK);
    int64_t t0 = wt_now();
    WT_EQ(weft_butex_wait(&word, 5, t0 - WEFT_NS_PER_MS), -ETIMEDOUT);
    WT_EQ(weft_butex_wait(&word, 5, 0), -ETIMEDOUT);
    WT_TIMING_LE(wt_now() - t0, MAX_LATE_NS);
    WT_EQ(weft_butex_wake(&word, 1), 0);
    WT_EQ(weft_butex_wake_all(&word), 0);
    WT_EQ(weft_butex_wake(&word, 0), 0);
}

static void case_wouldblock(void)
{
    wouldblock_fn(NULL);
    wt_in_fiber(wouldblock_fn, NULL);
}

typedef struct {
    int32_t word;
    int ready;
    int rc;          /* first non -EWOULDBLOCK result */
    int64_t woke_at;
} handoff_t;

static void handoff_waiter(void *arg)
{
    handoff_t *h = arg;
    WT_STORE(&h->ready, 1);
    while (WT_LOAD(&h->word) == 0) {
        int rc = weft_butex_wait(&h->word, 0, -1);
        if (rc != -EWOULDBLOCK && h->rc == 1)
            h->rc = rc;
    }
    h->woke_at = wt_now();
}

typedef struct {
    handoff_t *h;
    int woken;
    int64_t woke_sent;
} waker_t;

static void handoff_waker(void *arg)
{
    waker_t *w = arg;
    WT_AWAIT_GE(&w->h->ready, 1);
    weft_fiber_usleep(WT_SETTLE_US);
    w->woke_sent = wt_now();
    WT_STORE(&w->h->word, 1);
    w->woken = weft_butex_wake_all(&w->h->word);
}

/* A waiter and a waker, each a fiber or a pthread. */
static void case_cross_wake(void)
{
    static const char *kind[2] = {"pthread", "fiber"};
    for (int wf = 0; wf < 2; wf++) {
        for (int kf = 0; kf < 2; kf++) {
            enum { ROUNDS = 10 };
            int64_t lat[ROUNDS];
            for (int r = 0; r < ROUNDS; r++) {
                handoff_t h = {.rc = 1};
                waker_t w = {.h = &h};
                wt_task_t tw, tk;
                wt_task_start(&tw, wf, handoff_waiter, &h);
                wt_task_start(&tk, kf, handoff_waker, &w);
                wt_task_join(&tk);
                wt_task_join(&tw);
                WT_EQ(w.woken, 1);
                WT_EQ(h.rc, 0);
                lat[r] = h.woke_at - w.woke_sent;
            }
            char name[64];
            snprintf(name, sizeof(name), "wake_latency_%s_to_%s", kind[kf], kind[wf]);
            wt_note_percentiles(name, lat, ROUNDS);
        }
    }
}

/* ---- wake counts ---- */

typedef struct {
    int32_t *word;
    int *arrived;
    int *finished;
    int *order;      /* order[k] = index of the k-th waiter to return */
    int *ordered;    /* entries of order[] taken */
    int index;
    int rc;
} once_t;

/* Waits once (the word never changes), then records its return: its place
 * in order[] first, then the count the waker watches. */
static void wait_once_fn(void *arg)
{
    once_t *o = arg;
    WT_ADD(o->arrived, 1);
    o->rc = weft_butex_wait(o->word, 0, -1);
    if (o->order)
        WT_STORE(&o->order[WT_ADD(o->ordered, 1) - 1], o->index);
    WT_ADD(o->finished, 1);
}

/* Waits until `expect` waiters have returned, and a little longer to catch
 * any that should not have. */
static void expect_finished(int *finished, int expect)
{
    WT_AWAIT_GE(finished, expect);
    weft_fiber_usleep(WT_SETTLE_US);
    WT_EQ(WT_LOAD(finished), expect);
}

static void case_wake_counts(void)
{
    enum { FIBERS = 6, THREADS = 2, N = FIBERS + THREADS };
    int32_t word = 0;
    int arrived = 0, finished = 0;
    once_t o[N];
    wt_task_t t[N];
    for (int i = 0; i < N; i++) {
        o[i] = (once_t){.word = &word, .arrived = &arrived, .finished = &finished, .index = i};
        wt_task_start(&t[i], i < FIBERS, wait_once_fn, &o[i]);
    }
    WT_AWAIT_GE(&arrived, N);
    weft_fiber_usleep(WT_SETTLE_US);
    WT_EQ(weft_butex_wake(&word, 3), 3);
    expect_finished(&finished, 3);
    WT_EQ(weft_butex_wake(&word, 0), 0);
    WT_EQ(weft_butex_wake(&word, 2), 2);
    expect_finished(&finished, 5);
    WT_EQ(weft_butex_wake_all(&word), 3);
    expect_finished(&finished, 8);
    WT_EQ(weft_butex_wake_all(&word), 0);
    for (int i = 0; i < N; i++) {
        wt_task_join(&t[i]);
        WT_EQ(o[i].rc, 0);
    }
}

/* More words than hash buckets: a wake must only touch its own word. */
static void case_distinct_words(void)
{
    enum { N = 2048 };
    int32_t *words = calloc(N, sizeof(int32_t));
    once_t *o = calloc(N, sizeof(once_t));
    int *order = calloc(N, sizeof(int));
    weft_fiber_t *ids = calloc(N, sizeof(weft_fiber_t));
    WT_ASSERT(words && o && order && ids);
    int arrived = 0, finished = 0, ordered = 0;
    for (int i = 0; i < N; i++) {
        order[i] = -1;
        o[i] = (once_t){.word = &words[i], .arrived = &arrived, .finished = &finished,
                        .order = order, .ordered = &ordered, .index = i};
        ids[i] = wt_start_small(wait_once_fn, &o[i]);
    }
    WT_AWAIT_GE(&arrived, N);
    weft_fiber_usleep(10 * WT_SETTLE_US);
    for (int i = 0; i < N; i++) {
        WT_EQ(weft_butex_wake_all(&words[i]), 1);
        WT_AWAIT_GE(&finished, i + 1);
        WT_EQ(WT_LOAD(&order[i]), i);
    }
    WT_EQ(WT_LOAD(&finished), N);
    for (int i = 0; i < N; i++) {
        wt_join(ids[i]);
        WT_EQ(o[i].rc, 0);
    }
    free(ids);
    free(order);
    free(o);
    free(words);
}

/* wake_one wakes the oldest waiter first, fibers and pthreads alike. */
static void case_wake_one_fifo(void)
{
    enum { N = 12 };
    int32_t word = 0;
    int arrived = 0, finished = 0, ordered = 0, order[N];
    once_t o[N];
    wt_task_t t[N];
    for (int i = 0; i < N; i++) {
        order[i] = -1;
        o[i] = (once_t){.word = &word, .arrived = &arrived, .finished = &finished,
                        .order = order, .ordered = &ordered, .index = i};
        wt_task_start(&t[i], i % 2 == 0, wait_once_fn, &o[i]);
        WT_AWAIT_GE(&arrived, i + 1);
        weft_fiber_usleep(WT_SETTLE_US); /* let it queue before the next */
    }
    for (int i = 0; i < N; i++) {
        WT_EQ(weft_butex_wake_one(&word), 1);
        WT_AWAIT_GE(&finished, i + 1);
        WT_EQ(WT_LOAD(&order[i]), i);
    }
    for (int i = 0; i < N; i++)
        wt_task_join(&t[i]);
}

/* ---- timed waits ---- */

typedef struct {
    int64_t late[40];
    int n;
} timed_t;

static void timed_fn(void *arg)
{
    timed_t *t = arg;
    static const int ms[] = {1, 2, 5, 10, 20};
    int32_t word = 0;
    for (int rep = 0; rep < 8; rep++) {
        for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++) {
            int64_t deadline = wt_now() + ms[i] * WEFT_NS_PER_MS;
            int rc = weft_butex_wait(&word, 0, deadline);
            int64_t late = wt_now() - deadline;
            WT_EQ(rc, -ETIMEDOUT);
            WT_ASSERT_MSG(late >= 0, "timed wait returned %lld ns early", (long long)-late);
            t->late[t->n++] = late;
        }
    }
}

static void check_timed(const char *name, timed_t *t)
{
    int64_t worst = 0;
    for (int i = 0; i < t->n; i++)
        worst = t->late[i] > worst ? t->late[i] : worst;
    wt_note_percentiles(name, t->late, (size_t)t->n);
    WT_TIMING_LE(worst, MAX_LATE_NS);
}

typedef struct {
    handoff_t h;
    int rc;
    int64_t elapsed;
} early_t;

static void timed_woken_fn(void *arg)
{
    early_t *e = arg;
    WT_STORE(&e->h.ready, 1);
    int64_t t0 = wt_now();
    e->rc = weft_butex_wait(&e->h.word, 0, t0 + 2 * WEFT_NS_PER_SEC);
    e->elapsed = wt_now() - t0;
}

static void case_timed_wait(void)
{
    timed_t tf = {.n = 0}, tp = {.n = 0};
    wt_in_fiber(timed_fn, &tf);
    timed_fn(&tp);
    check_timed("timed_wait_lateness_fiber", &tf);
    check_timed("timed_wait_lateness_pthread", &tp);

    /* Woken before its deadline: 0, at once. */
    for (int fiber = 0; fiber < 2; fiber++) {
        early_t e = {.rc = 1};
        wt_task_t t;
        wt_task_start(&t, fiber, timed_woken_fn, &e);
        WT_AWAIT_GE(&e.h.ready, 1);
        weft_fiber_usleep(WT_SETTLE_US);
        WT_STORE(&e.h.word, 1);
        WT_EQ(weft_butex_wake_all(&e.h.word), 1);
        wt_task_join(&t);
        WT_EQ(e.rc, 0);
        WT_LT(e.elapsed, WEFT_NS_PER_SEC);
    }
}

/* ---- many waiters ---- */

typedef struct {
    int32_t word;
    int arrived;
    int done;
} herd_t;

static void herd_fn(void *arg)
{
    herd_t *h = arg;
    WT_ADD(&h->arrived, 1);
    while (WT_LOAD(&h->word) == 0)
        weft_butex_wait(&h->word, 0, -1);
    WT_ADD(&h->done, 1);
}

static void case_wake_all_many(void)
{
    enum { THREADS = 4 };
    int nf = (int)wt_scaled(5000);
    herd_t h = {0};
    weft_fiber_t *ids = calloc((size_t)nf, sizeof(*ids));
    wt_task_t t[THREADS];
    WT_ASSERT(ids);
    for (int i = 0; i < nf; i++)
        ids[i] = wt_start_small(herd_fn, &h);
    for (int i = 0; i < THREADS; i++)
        wt_task_start(&t[i], false, herd_fn, &h);
    WT_AWAIT_GE(&h.arrived, nf + THREADS);
    weft_fiber_usleep(20 * WT_SETTLE_US);
    int64_t t0 = wt_now();
    WT_STORE(&h.word, 1);
    int woken = weft_butex_wake_all(&h.word);
    int64_t t1 = wt_now();
    WT_AWAIT_GE(&h.done, nf + THREADS);
    int64_t t2 = wt_now();
    WT_EQ(woken, nf + THREADS);
    for (int i = 0; i < nf; i++)
        wt_join(ids[i]);
    for (int i = 0; i < THREADS; i++)
        wt_task_join(&t[i]);
    WT_NOTE("wake_all_many: woke %d waiters in %.2f ms, all ran within %.2f ms", woken,
            wt_ms(t1 - t0), wt_ms(t2 - t0));
    free(ids);
}

/* ---- pthread timeouts racing wakes ----
 *
 * A pthread whose timed wait runs out while a waker is unlinking it must not
 * return before the waker is done with its waiter struct (on the waiting
 * thread's stack): the waker still writes the result and the "woken" flag
 * there. Waiters with 20 us deadlines race a waker that wakes at random
 * moments; after each wait the waiter fills the stack where its waiter was
 * with a pattern and checks that nobody wrote into it. ThreadSanitizer sees
 * the unsynchronized writes at once; a release build sees them only when a
 * waker is preempted at the wrong instruction. */

enum { RACE_WAITERS = 2 };

typedef struct {
    int32_t word;
    int stop;
    int64_t waits, timeouts, corrupted;
    int64_t woken;
} tw_race_t;

__attribute__((noinline)) static int stack_canary(void)
{
    volatile uint32_t buf[256];
    for (int i = 0; i < 256; i++)
        buf[i] = 0xA5A5A5A5u;
    for (volatile int k = 0; k < 500; k++)
        ;
    int bad = 0;
    for (int i = 0; i < 256; i++)
        bad += buf[i] != 0xA5A5A5A5u;
    return bad;
}

static void *tw_waiter(void *arg)
{
    tw_race_t *r = arg;
    while (!WT_LOAD(&r->stop)) {
        int rc = weft_butex_wait(&r->word, 0, wt_now() + 20 * WEFT_NS_PER_US);
        WT_ASSERT_MSG(rc == 0 || rc == -ETIMEDOUT, "butex_wait: %d", rc);
        __atomic_add_fetch(&r->waits, 1, __ATOMIC_RELAXED);
        if (rc == -ETIMEDOUT)
            __atomic_add_fetch(&r->timeouts, 1, __ATOMIC_RELAXED);
        if (stack_canary())
            __atomic_add_fetch(&r->corrupted, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void *tw_waker(void *arg)
{
    tw_race_t *r = arg;
    uint64_t seed = 17;
    while (!WT_LOAD(&r->stop)) {
        wt_spin_ns((int64_t)(wt_rand(&seed) % (40 * WEFT_NS_PER_US)));
        r->woken += weft_butex_wake_all(&r->word);
    }
    return NULL;
}

static void case_pthread_timeout_races_wake(void)
{
    tw_race_t r = {0};
    pthread_t w[RACE_WAITERS], k;
    for (int i = 0; i < RACE_WAITERS; i++)
        w[i] = wt_thread(tw_waiter, &r);
    k = wt_thread(tw_waker, &r);
    weft_fiber_usleep(500 * 1000); /* not scaled: the race needs the time */
    WT_STORE(&r.stop, 1);
    wt_thread_join(k);
    for (int i = 0; i < RACE_WAITERS; i++) {
        while (pthread_tryjoin_np(w[i], NULL) != 0) {
            weft_butex_wake_all(&r.word);
            weft_fiber_usleep(100);
        }
    }
    WT_NOTE("pthread_timeout_races_wake: %lld waits, %lld timed out, %lld woken, "
            "%lld with their stack written after return",
            (long long)r.waits, (long long)r.timeouts, (long long)r.woken,
            (long long)r.corrupted);
    WT_GT(r.timeouts, 0); /* both outcomes happened: the race was run */
    WT_GT(r.woken, 0);
    WT_EQ(r.corrupted, 0);
}

/* ---- stress: a token ring of fibers and pthreads ---- */

enum { RING_FIBERS = 24, RING_THREADS = 4, RING_N = RING_FIBERS + RING_THREADS, TOKENS = 8 };
#define LONG_WAIT_NS (500 * WEFT_NS_PER_MS)

typedef struct ring ring_t;

typedef struct {
    ring_t *ring;
    int index;
    bool fiber;
    bool short_waits; /* wait with 200 us deadlines, retrying on timeout */
    int64_t passes, timeouts, interrupts;
    wt_task_t task;
} member_t;

struct ring {
    _Alignas(64) int32_t words[RING_N][16]; /* one cache line each */
    member_t m[RING_N];
    int stop;
    int exited;
};

static void member_fn(void *arg)
{
    member_t *m = arg;
    ring_t *r = m->ring;
    int32_t *mine = &r->words[m->index][0];
    int32_t *next = &r->words[(m->index + 1) % RING_N][0];
    while (!WT_LOAD(&r->stop)) {
        int32_t held = WT_XCHG(mine, 0);
        if (held > 0) {
            WT_ADD(next, held);
            weft_butex_wake_one(next);
            m->passes += held;
            continue;
        }
        int64_t deadline = wt_now() + (m->short_waits ? 200 * WEFT_NS_PER_US : LONG_WAIT_NS);
        int rc = weft_butex_wait(mine, 0, deadline);
        if (rc == -ETIMEDOUT) {
            /* Tokens go round in microseconds: a long wait that runs out
             * means a token (and its wakeup) went missing on the way. */
            m->timeouts++;
            WT_ASSERT_MSG(m->short_waits || WT_LOAD(&r->stop),
                          "ring member %d (%s) got no token for %lld ms (its word is %d): "
                          "a wakeup was lost",
                          m->index, m->fiber ? "fiber" : "pthread",
                          (long long)(LONG_WAIT_NS / WEFT_NS_PER_MS), WT_LOAD(mine));
        } else if (rc == -EINTR) {
            m->interrupts++;
        } else {
            WT_ASSERT_MSG(rc == 0 || rc == -EWOULDBLOCK, "butex_wait: %d", rc);
        }
    }
    WT_ADD(&r->exited, 1);
}

typedef struct {
    ring_t *ring;
    int64_t sent;
} interrupter_t;

static void *interrupter_thread(void *arg)
{
    interrupter_t *it = arg;
    uint64_t seed = 42;
    while (!WT_LOAD(&it->ring->stop)) {
        member_t *m = &it->ring->m[wt_rand(&seed) % RING_N];
        if (m->fiber && weft_fiber_interrupt(m->task.id) == 0)
            it->sent++;
        weft_fiber_usleep(100);
    }
    return NULL;
}

static void case_stress_ring(void)
{
    ring_t *r = aligned_alloc(64, sizeof(ring_t));
    WT_ASSERT(r);
    memset(r, 0, sizeof(*r));
    /* Fibers and pthreads interleaved, so tokens cross between the two. */
    for (int i = 0; i < RING_N; i++) {
        member_t *m = &r->m[i];
        m->ring = r;
        m->index = i;
        m->fiber = i % (RING_N / RING_THREADS) != 0;
        m->short_waits = i % 3 == 1;
    }
    for (int i = 0; i < TOKENS; i++)
        r->words[i * (RING_N / TOKENS)][0] = 1;
    for (int i = 0; i < RING_N; i++)
        wt_task_start(&r->m[i].task, r->m[i].fiber, member_fn, &r->m[i]);
    interrupter_t it = {.ring = r};
    pthread_t ti = wt_thread(interrupter_thread, &it);

    int64_t run_ns = wt_scaled(1500) * WEFT_NS_PER_MS;
    weft_fiber_usleep((uint64_t)(run_ns / WEFT_NS_PER_US));
    WT_STORE(&r->stop, 1);
    /* Members check `stop` before they wait: keep waking until all left. */
    int64_t end = wt_now() + 10 * WEFT_NS_PER_SEC;
    while (WT_LOAD(&r->exited) < RING_N) {
        WT_LT(wt_now(), end);
        for (int i = 0; i < RING_N; i++)
            weft_butex_wake_all(&r->words[i][0]);
        weft_fiber_usleep(200);
    }
    wt_thread_join(ti);
    int64_t passes = 0, timeouts = 0, interrupts = 0, tokens = 0;
    for (int i = 0; i < RING_N; i++) {
        wt_task_join(&r->m[i].task);
        WT_GT(r->m[i].passes, 0);
        passes += r->m[i].passes;
        timeouts += r->m[i].timeouts;
        interrupts += r->m[i].interrupts;
        tokens += r->words[i][0];
    }
    WT_EQ(tokens, TOKENS); /* none lost, none made up */
    WT_NOTE("stress_ring: %d fibers + %d pthreads, %d tokens: %lld hops in %.0f ms "
            "(%.0f ns/hop), %lld short-wait timeouts, %lld interrupts sent, %lld seen",
            RING_FIBERS, RING_THREADS, TOKENS, (long long)passes, wt_ms(run_ns),
            (double)run_ns / (double)passes, (long long)timeouts, (long long)it.sent,
            (long long)interrupts);
    free(r);
}

static const wt_case_t cases[] = {
    WT_CASE(case_wouldblock),
    WT_CASE(case_cross_wake),
    WT_CASE(case_wake_counts),
    WT_CASE(case_distinct_words),
    WT_CASE(case_wake_one_fifo),
    WT_CASE(case_timed_wait),
    WT_CASE(case_wake_all_many),
    WT_CASE(case_pthread_timeout_races_wake),
    WT_CASE(case_stress_ring),
};

int main(int argc, char **argv)
{
    wt_run_cases(argc, argv, cases, WT_NCASES(cases));
    WT_EQ(weft_fiber_shutdown(), 0);
    return 0;
}
