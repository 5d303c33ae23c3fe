/*
 * test_sync.c - mutex, condition variable, countdown, semaphore and rwlock,
 * used by fibers and pthreads together.
 *
 * Each primitive is checked for the property users rely on, under load
 * where load matters: a mutex keeps a plain counter exact under 64 fibers
 * and 2 pthreads (holding it across switches); trylock and the timed
 * variants fail when they must and time out neither early nor late; a
 * producer-consumer queue on mutex + cond loses and duplicates no item;
 * countdown waits for the count to reach zero; a semaphore never admits more
 * than its value; an rwlock lets readers share, keeps writers exclusive,
 * prefers writers (a stream of readers cannot starve one) and lets readers
 * in again when a waiting writer gives up.
 */
#include "fiber_test_util.h"

#define MAX_LATE_NS wt_slack_ns(5 * WEFT_NS_PER_MS)

/* A timed call that must time out: not before the deadline, not long after. */
#define WT_TIMES_OUT(call_with_deadline, timeout_ms)                           \
    do {                                                                       \
        int64_t wt_dl_ = wt_now() + (timeout_ms) * WEFT_NS_PER_MS;             \
        int wt_rc_ = call_with_deadline(wt_dl_);                               \
        int64_t wt_late_ = wt_now() - wt_dl_;                                  \
        WT_EQ(wt_rc_, -ETIMEDOUT);                                             \
        WT_GE(wt_late_, 0);                                                    \
        WT_TIMING_LE(wt_late_, MAX_LATE_NS);                                   \
    } while (0)

/* ---- mutex ---- */

typedef struct {
    weft_mutex_t m;
    long counter;
    int inside;
    long per;
} counter_t;

static void counter_fn(void *arg)
{
    counter_t *c = arg;
    for (long i = 0; i < c->per; i++) {
        weft_mutex_lock(&c->m);
        WT_EQ(WT_XCHG(&c->inside, 1), 0);
        c->counter++; /* plain: only the mutex protects it */
        if ((i & 255) == 0)
            weft_fiber_yield(); /* hold it across a switch */
        WT_STORE(&c->inside, 0);
        weft_mutex_unlock(&c->m);
    }
}

static void case_mutex_counter(void)
{
    enum { FIBERS = 64, THREADS = 2, N = FIBERS + THREADS };
    counter_t c = {.m = WEFT_MUTEX_INITIALIZER, .per = wt_scaled(20000)};
    wt_task_t t[N];
    int64_t t0 = wt_now();
    for (int i = 0; i < N; i++)
        wt_task_start(&t[i], i < FIBERS, counter_fn, &c);
    for (int i = 0; i < N; i++)
        wt_task_join(&t[i]);
    int64_t dt = wt_now() - t0;
    WT_EQ(c.counter, (long)N * c.per);
    WT_EQ(c.m.state, 0);
    WT_NOTE("mutex_counter: %d fibers + %d pthreads, %ld increments in %.1f ms (%.0f ns each)",
            FIBERS, THREADS, c.counter, wt_ms(dt), (double)dt / (double)c.counter);
}

static weft_mutex_t g_m = WEFT_MUTEX_INITIALIZER;

static int timedlock_g(int64_t deadline)
{
    return weft_mutex_timedlock(&g_m, deadline);
}

static void mutex_held_fn(void *arg)
{
    (void)arg;
    WT_EQ(weft_mutex_trylock(&g_m), -EBUSY);
    WT_TIMES_OUT(timedlock_g, 20);
    WT_TIMES_OUT(timedlock_g, 1);
    WT_EQ(weft_mutex_timedlock(&g_m, wt_now() - 1), -ETIMEDOUT);
}

typedef struct {
    weft_mutex_t *m;
    int locked;
    int64_t hold_us;
} holder_t;

static void holder_fn(void *arg)
{
    holder_t *h = arg;
    weft_mutex_lock(h->m);
    WT_STORE(&h->locked, 1);
    weft_fiber_usleep((uint64_t)h->hold_us);
    weft_mutex_unlock(h->m);
}

static void case_mutex_try_timed(void)
{
    WT_EQ(weft_mutex_trylock(&g_m), 0);
    wt_in_fiber_and_pthread(mutex_held_fn, NULL);
    weft_mutex_unlock(&g_m);
    /* Free: all succeed, even with a deadline that has passed. */
    WT_EQ(weft_mutex_timedlock(&g_m, wt_now() - 1), 0);
    weft_mutex_unlock(&g_m);
    WT_EQ(weft_mutex_trylock(&g_m), 0);
    weft_mutex_unlock(&g_m);

    /* Released before the deadline: timedlock gets it. */
    for (int fiber = 0; fiber < 2; fiber++) {
        holder_t h = {.m = &g_m, .hold_us = 10000};
        wt_task_t t;
        wt_task_start(&t, fiber, holder_fn, &h);
        WT_AWAIT_GE(&h.locked, 1);
        int64_t t0 = wt_now();
        WT_EQ(weft_mutex_timedlock(&g_m, t0 + 2 * WEFT_NS_PER_SEC), 0);
        WT_LT(wt_now() - t0, WEFT_NS_PER_SEC);
        weft_mutex_unlock(&g_m);
        wt_task_join(&t);
    }
    WT_EQ(g_m.state, 0);
}

/* ---- condition variable ---- */

enum { QCAP = 16 };

typedef struct {
    weft_mutex_t m;
    weft_cond_t not_empty, not_full;
    int64_t buf[QCAP];
    int head, len;
    bool closed;
    int64_t per_producer;
    int next_producer;
    uint8_t *seen;
    int64_t consumed;
} queue_t;

static void producer_fn(void *arg)
{
    queue_t *q = arg;
    int64_t base = WT_ADD(&q->next_producer, 1) - 1;
    for (int64_t k = 0; k < q->per_producer; k++) {
        weft_mutex_lock(&q->m);
        while (q->len == QCAP)
            weft_cond_wait(&q->not_full, &q->m);
        q->buf[(q->head + q->len++) % QCAP] = base * q->per_producer + k;
        weft_cond_signal(&q->not_empty);
        weft_mutex_unlock(&q->m);
    }
}

static void consumer_fn(void *arg)
{
    queue_t *q = arg;
    for (;;) {
        weft_mutex_lock(&q->m);
        while (q->len == 0 && !q->closed)
            weft_cond_wait(&q->not_empty, &q->m);
        if (q->len == 0) {
            weft_mutex_unlock(&q->m);
            return;
        }
        int64_t v = q->buf[q->head];
        q->head = (q->head + 1) % QCAP;
        q->len--;
        q->consumed++;
        weft_cond_signal(&q->not_full);
        weft_mutex_unlock(&q->m);
        __atomic_add_fetch(&q->seen[v], 1, __ATOMIC_RELAXED);
    }
}

static void case_cond_queue(void)
{
    enum { PF = 4, PT = 1, CF = 4, CT = 1, P = PF + PT, C = CF + CT };
    queue_t q = {.m = WEFT_MUTEX_INITIALIZER,
                 .not_empty = WEFT_COND_INITIALIZER,
                 .not_full = WEFT_COND_INITIALIZER,
                 .per_producer = wt_scaled(40000)};
    int64_t total = P * q.per_producer;
    q.seen = calloc((size_t)total, 1);
    WT_ASSERT(q.seen);
    wt_task_t prod[P], cons[C];
    int64_t t0 = wt_now();
    for (int i = 0; i < C; i++)
        wt_task_start(&cons[i], i < CF, consumer_fn, &q);
    for (int i = 0; i < P; i++)
        wt_task_start(&prod[i], i < PF, producer_fn, &q);
    for (int i = 0; i < P; i++)
        wt_task_join(&prod[i]);
    weft_mutex_lock(&q.m);
    q.closed = true;
    weft_cond_broadcast(&q.not_empty);
    weft_mutex_unlock(&q.m);
    for (int i = 0; i < C; i++)
        wt_task_join(&cons[i]);
    int64_t dt = wt_now() - t0;
    WT_EQ(q.consumed, total);
    for (int64_t i = 0; i < total; i++)
        WT_ASSERT_MSG(q.seen[i] == 1, "item %lld consumed %d times", (long long)i, q.seen[i]);
    WT_NOTE("cond_queue: %d producers, %d consumers, %lld items through a %d-slot queue "
            "in %.1f ms",
            P, C, (long long)total, QCAP, wt_ms(dt));
    free(q.seen);
}

typedef struct {
    weft_mutex_t m;
    weft_cond_t c;
    int waiting;
    int tickets;
    int passed;
} herd_t;

static void ticket_fn(void *arg)
{
    herd_t *h = arg;
    weft_mutex_lock(&h->m);
    h->waiting++;
    while (h->tickets == 0)
        weft_cond_wait(&h->c, &h->m);
    h->tickets--;
    h->passed++;
    weft_mutex_unlock(&h->m);
}

static int herd_read(herd_t *h, int *field)
{
    weft_mutex_lock(&h->m);
    int v = *field;
    weft_mutex_unlock(&h->m);
    return v;
}

static void herd_await(herd_t *h, int *field, int want)
{
    int64_t end = wt_now() + 10 * WEFT_NS_PER_SEC;
    while (herd_read(h, field) < want) {
        WT_LT(wt_now(), end);
        weft_fiber_usleep(50);
    }
}

/* Signal lets one waiter through, broadcast all of them. */
static void case_cond_signal_broadcast(void)
{
    enum { FIBERS = 6, THREADS = 2, N = FIBERS + THREADS };
    herd_t h = {.m = WEFT_MUTEX_INITIALIZER, .c = WEFT_COND_INITIALIZER};
    wt_task_t t[N];
    for (int i = 0; i < N; i++)
        wt_task_start(&t[i], i % 4 != 3, ticket_fn, &h);
    herd_await(&h, &h.waiting, N);
    for (int round = 1; round <= 2; round++) {
        weft_mutex_lock(&h.m);
        h.tickets++;
        weft_cond_signal(&h.c);
        weft_mutex_unlock(&h.m);
        herd_await(&h, &h.passed, round);
    }
    weft_fiber_usleep(WT_SETTLE_US);
    WT_EQ(herd_read(&h, &h.passed), 2);
    weft_mutex_lock(&h.m);
    h.tickets += N - 2;
    weft_cond_broadcast(&h.c);
    weft_mutex_unlock(&h.m);
    for (int i = 0; i < N; i++)
        wt_task_join(&t[i]);
    WT_EQ(h.passed, N);
    WT_EQ(h.tickets, 0);
}

static weft_cond_t g_c = WEFT_COND_INITIALIZER;

static int cond_timedwait_g(int64_t deadline)
{
    return weft_cond_timedwait(&g_c, &g_m, deadline);
}

static void cond_timeout_fn(void *arg)
{
    (void)arg;
    weft_mutex_lock(&g_m);
    WT_TIMES_OUT(cond_timedwait_g, 20);
    WT_EQ(weft_mutex_trylock(&g_m), -EBUSY); /* relocked on return */
    WT_EQ(weft_cond_timedwait(&g_c, &g_m, wt_now() - 1), -ETIMEDOUT);
    WT_EQ(weft_mutex_trylock(&g_m), -EBUSY);
    weft_mutex_unlock(&g_m);
}

typedef struct {
    int ready;
    int rc;
    int64_t elapsed;
} signaled_t;

static void cond_signaled_fn(void *arg)
{
    signaled_t *s = arg;
    weft_mutex_lock(&g_m);
    WT_STORE(&s->ready, 1);
    int64_t t0 = wt_now();
    s->rc = weft_cond_timedwait(&g_c, &g_m, t0 + 2 * WEFT_NS_PER_SEC);
    s->elapsed = wt_now() - t0;
    weft_mutex_unlock(&g_m);
}

static void case_cond_timedwait(void)
{
    wt_in_fiber_and_pthread(cond_timeout_fn, NULL);
    for (int fiber = 0; fiber < 2; fiber++) {
        signaled_t s = {0};
        wt_task_t t;
        wt_task_start(&t, fiber, cond_signaled_fn, &s);
        WT_AWAIT_GE(&s.ready, 1);
        weft_mutex_lock(&g_m); /* it is waiting once it let go of the mutex */
        weft_cond_signal(&g_c);
        weft_mutex_unlock(&g_m);
        wt_task_join(&t);
        WT_EQ(s.rc, 0);
        WT_LT(s.elapsed, WEFT_NS_PER_SEC);
    }
}

/* ---- countdown ---- */

typedef struct {
    weft_countdown_t *cd;
    int *signalled;
    int n;
} signaller_t;

static void signaller_fn(void *arg)
{
    signaller_t *s = arg;
    weft_fiber_usleep(2000);
    WT_ADD(s->signalled, s->n);
    weft_countdown_signal(s->cd, s->n);
}

typedef struct {
    weft_countdown_t *cd;
    int *signalled;
    int seen;
} cd_waiter_t;

static void cd_waiter_fn(void *arg)
{
    cd_waiter_t *w = arg;
    weft_countdown_wait(w->cd);
    w->seen = WT_LOAD(w->signalled);
}

static weft_countdown_t g_cd;

static int cd_timedwait_g(int64_t deadline)
{
    return weft_countdown_timedwait(&g_cd, deadline);
}

static void cd_times_out_fn(void *arg)
{
    (void)arg;
    WT_TIMES_OUT(cd_timedwait_g, 10);
}

static void case_countdown(void)
{
    enum { SIGNALLERS = 6 };
    weft_countdown_t cd;
    int signalled = 0;
    weft_countdown_init(&cd, SIGNALLERS + 2);
    signaller_t s[SIGNALLERS];
    wt_task_t ts[SIGNALLERS], tw[2];
    cd_waiter_t w[2] = {{&cd, &signalled, 0}, {&cd, &signalled, 0}};
    wt_task_start(&tw[0], true, cd_waiter_fn, &w[0]);
    wt_task_start(&tw[1], false, cd_waiter_fn, &w[1]);
    for (int i = 0; i < SIGNALLERS; i++) {
        s[i] = (signaller_t){&cd, &signalled, i == 0 ? 3 : 1}; /* one signals 3 */
        wt_task_start(&ts[i], i != 1, signaller_fn, &s[i]);
    }
    weft_countdown_wait(&cd);
    WT_EQ(WT_LOAD(&signalled), SIGNALLERS + 2);
    for (int i = 0; i < 2; i++) {
        wt_task_join(&tw[i]);
        WT_EQ(w[i].seen, SIGNALLERS + 2);
    }
    for (int i = 0; i < SIGNALLERS; i++)
        wt_task_join(&ts[i]);

    /* timedwait, and add. */
    weft_countdown_init(&g_cd, 1);
    wt_in_fiber_and_pthread(cd_times_out_fn, NULL);
    weft_countdown_add(&g_cd, 2);
    weft_countdown_signal(&g_cd, 2);
    wt_in_fiber_and_pthread(cd_times_out_fn, NULL); /* 1 left */
    weft_countdown_signal(&g_cd, 1);
    int64_t t0 = wt_now();
    WT_EQ(weft_countdown_timedwait(&g_cd, t0 + WEFT_NS_PER_SEC), 0);
    weft_countdown_wait(&g_cd);
    WT_TIMING_LE(wt_now() - t0, MAX_LATE_NS);
    weft_countdown_init(&g_cd, 0);
    weft_countdown_wait(&g_cd);
}

/* ---- semaphore ---- */

enum { SEM_VALUE = 3 };

typedef struct {
    weft_sem_t sem;
    int inside, max_inside;
    long rounds;
} sem_test_t;

static void sem_user_fn(void *arg)
{
    sem_test_t *s = arg;
    for (long i = 0; i < s->rounds; i++) {
        weft_sem_wait(&s->sem);
        int in = WT_ADD(&s->inside, 1);
        WT_LE(in, SEM_VALUE);
        int m = WT_LOAD(&s->max_inside);
        while (in > m && !__atomic_compare_exchange_n(&s->max_inside, &m, in, false,
                                                      __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            ;
        if (i % 8 == 0)
            weft_fiber_usleep(20);
        else
            weft_fiber_yield();
        WT_SUB(&s->inside, 1);
        weft_sem_post(&s->sem, 1);
    }
}

static weft_sem_t g_sem;

static int sem_timedwait_g(int64_t deadline)
{
    return weft_sem_timedwait(&g_sem, deadline);
}

static void sem_empty_fn(void *arg)
{
    (void)arg;
    WT_EQ(weft_sem_trywait(&g_sem), -EAGAIN);
    WT_TIMES_OUT(sem_timedwait_g, 10);
}

static void sem_waiter_fn(void *arg)
{
    weft_sem_wait(&g_sem);
    WT_ADD((int *)arg, 1);
}

static void case_semaphore(void)
{
    enum { FIBERS = 32, THREADS = 2, N = FIBERS + THREADS };
    sem_test_t s = {.rounds = wt_scaled(2000)};
    weft_sem_init(&s.sem, SEM_VALUE);
    wt_task_t t[N];
    for (int i = 0; i < N; i++)
        wt_task_start(&t[i], i < FIBERS, sem_user_fn, &s);
    for (int i = 0; i < N; i++)
        wt_task_join(&t[i]);
    WT_EQ(s.max_inside, SEM_VALUE);
    WT_EQ(s.sem.value, SEM_VALUE);

    weft_sem_init(&g_sem, 0);
    wt_in_fiber_and_pthread(sem_empty_fn, NULL);
    weft_sem_post(&g_sem, 1);
    WT_EQ(weft_sem_trywait(&g_sem), 0);
    WT_EQ(weft_sem_trywait(&g_sem), -EAGAIN);

    /* post(2) lets exactly two of three waiters through. */
    int passed = 0;
    wt_task_t w[3];
    for (int i = 0; i < 3; i++)
        wt_task_start(&w[i], i != 1, sem_waiter_fn, &passed);
    weft_fiber_usleep(WT_SETTLE_US);
    WT_EQ(WT_LOAD(&passed), 0);
    weft_sem_post(&g_sem, 2);
    WT_AWAIT_GE(&passed, 2);
    weft_fiber_usleep(WT_SETTLE_US);
    WT_EQ(WT_LOAD(&passed), 2);
    weft_sem_post(&g_sem, 1);
    for (int i = 0; i < 3; i++)
        wt_task_join(&w[i]);
    WT_EQ(passed, 3);
    WT_EQ(g_sem.value, 0);
}

/* ---- rwlock ---- */

static weft_rwlock_t g_rw = WEFT_RWLOCK_INITIALIZER;

static int timedrdlock_g(int64_t deadline)
{
    return weft_rwlock_timedrdlock(&g_rw, deadline);
}

static int timedwrlock_g(int64_t deadline)
{
    return weft_rwlock_timedwrlock(&g_rw, deadline);
}

/* g_rw is read-locked by someone else. */
static void rw_read_held_fn(void *arg)
{
    (void)arg;
    WT_EQ(weft_rwlock_tryrdlock(&g_rw), 0);
    weft_rwlock_unlock(&g_rw);
    WT_EQ(weft_rwlock_timedrdlock(&g_rw, wt_now() - 1), 0);
    weft_rwlock_unlock(&g_rw);
    WT_EQ(weft_rwlock_trywrlock(&g_rw), -EBUSY);
    WT_TIMES_OUT(timedwrlock_g, 10);
}

/* g_rw is write-locked by someone else. */
static void rw_write_held_fn(void *arg)
{
    (void)arg;
    WT_EQ(weft_rwlock_tryrdlock(&g_rw), -EBUSY);
    WT_EQ(weft_rwlock_trywrlock(&g_rw), -EBUSY);
    WT_TIMES_OUT(timedrdlock_g, 10);
    WT_TIMES_OUT(timedwrlock_g, 10);
}

typedef struct {
    weft_rwlock_t *rw;
    weft_countdown_t *all_in;
    int rc;
} sharer_t;

static void sharer_fn(void *arg)
{
    sharer_t *s = arg;
    weft_rwlock_rdlock(s->rw);
    weft_countdown_signal(s->all_in, 1);
    /* Returns 0 only if every reader holds the lock at the same time. */
    s->rc = weft_countdown_timedwait(s->all_in, wt_now() + 5 * WEFT_NS_PER_SEC);
    weft_rwlock_unlock(s->rw);
}

static void case_rwlock_basics(void)
{
    enum { READERS = 5 };
    weft_countdown_t all_in;
    weft_countdown_init(&all_in, READERS);
    sharer_t s[READERS];
    wt_task_t t[READERS];
    for (int i = 0; i < READERS; i++) {
        s[i] = (sharer_t){&g_rw, &all_in, 1};
        wt_task_start(&t[i], i != 2, sharer_fn, &s[i]);
    }
    for (int i = 0; i < READERS; i++) {
        wt_task_join(&t[i]);
        WT_EQ(s[i].rc, 0);
    }

    weft_rwlock_rdlock(&g_rw);
    wt_in_fiber_and_pthread(rw_read_held_fn, NULL);
    weft_rwlock_unlock(&g_rw);
    WT_EQ(weft_rwlock_trywrlock(&g_rw), 0);
    wt_in_fiber_and_pthread(rw_write_held_fn, NULL);
    weft_rwlock_unlock(&g_rw);
    WT_EQ(g_rw.state, 0);
    WT_EQ(g_rw.writers_waiting, 0);
}

typedef struct {
    weft_rwlock_t rw;
    int readers, writers;
    long rounds;
    int64_t reads, writes;
    uint64_t seed;
} rw_mix_t;

static void rw_mix_fn(void *arg)
{
    rw_mix_t *x = arg;
    uint64_t seed = __atomic_add_fetch(&x->seed, 0x9E3779B97F4A7C15ull, __ATOMIC_RELAXED);
    for (long i = 0; i < x->rounds; i++) {
        if (wt_rand(&seed) % 4 == 0) {
            weft_rwlock_wrlock(&x->rw);
            WT_EQ(WT_ADD(&x->writers, 1), 1);
            WT_EQ(WT_LOAD(&x->readers), 0);
            x->writes++; /* plain: writers are exclusive */
            if (i % 16 == 0)
                weft_fiber_yield();
            WT_SUB(&x->writers, 1);
        } else {
            weft_rwlock_rdlock(&x->rw);
            WT_ADD(&x->readers, 1);
            WT_EQ(WT_LOAD(&x->writers), 0);
            __atomic_add_fetch(&x->reads, 1, __ATOMIC_RELAXED);
            if (i % 16 == 0)
                weft_fiber_yield();
            WT_SUB(&x->readers, 1);
        }
        weft_rwlock_unlock(&x->rw);
    }
}

/* Readers and writers, fibers and pthreads, at random: writers alone. */
static void case_rwlock_exclusive(void)
{
    enum { FIBERS = 8, THREADS = 2, N = FIBERS + THREADS };
    rw_mix_t x = {.rw = WEFT_RWLOCK_INITIALIZER, .rounds = wt_scaled(20000)};
    wt_task_t t[N];
    for (int i = 0; i < N; i++)
        wt_task_start(&t[i], i < FIBERS, rw_mix_fn, &x);
    for (int i = 0; i < N; i++)
        wt_task_join(&t[i]);
    WT_EQ(x.reads + x.writes, (int64_t)N * x.rounds);
    WT_EQ(x.rw.state, 0);
    WT_EQ(x.rw.writers_waiting, 0);
}

typedef struct {
    weft_rwlock_t *rw;
    int *stop;
    int64_t reads;
} streamer_t;

static void stream_reader_fn(void *arg)
{
    streamer_t *s = arg;
    while (!WT_LOAD(s->stop)) {
        weft_rwlock_rdlock(s->rw);
        wt_spin_ns(20 * WEFT_NS_PER_US);
        weft_rwlock_unlock(s->rw);
        s->reads++;
    }
}

/* Overlapping readers never leave the lock free, yet a writer gets in. */
static void case_rwlock_writer_not_starved(void)
{
    enum { FIBERS = 4, THREADS = 1, N = FIBERS + THREADS, WRITES = 10 };
    weft_rwlock_t rw = WEFT_RWLOCK_INITIALIZER;
    int stop = 0;
    streamer_t s[N];
    wt_task_t t[N];
    for (int i = 0; i < N; i++) {
        s[i] = (streamer_t){&rw, &stop, 0};
        wt_task_start(&t[i], i < FIBERS, stream_reader_fn, &s[i]);
    }
    weft_fiber_usleep(20000);
    int64_t waits[WRITES];
    for (int i = 0; i < WRITES; i++) {
        int64_t t0 = wt_now();
        WT_EQ(weft_rwlock_timedwrlock(&rw, t0 + 2 * WEFT_NS_PER_SEC), 0);
        waits[i] = wt_now() - t0;
        WT_EQ(rw.state, -1);
        weft_rwlock_unlock(&rw);
        weft_fiber_usleep(2000);
    }
    WT_STORE(&stop, 1);
    int64_t reads = 0;
    for (int i = 0; i < N; i++) {
        wt_task_join(&t[i]);
        reads += s[i].reads;
    }
    wt_note_percentiles("rwlock_writer_wait_under_reader_stream", waits, WRITES);
    WT_TIMING_LE(waits[WRITES - 1], wt_slack_ns(100 * WEFT_NS_PER_MS)); /* the worst */
    WT_GT(reads, 0);
}

typedef struct {
    weft_rwlock_t *rw;
    int started;
    int rc;
    int64_t done_at;
} rw_timed_t;

static void late_reader_fn(void *arg)
{
    rw_timed_t *r = arg;
    WT_STORE(&r->started, 1);
    weft_rwlock_rdlock(r->rw);
    r->done_at = wt_now();
    WT_STORE(&r->rc, 1);
    weft_rwlock_unlock(r->rw);
}

static void giving_up_writer_fn(void *arg)
{
    rw_timed_t *w = arg;
    WT_STORE(&w->started, 1);
    w->rc = weft_rwlock_timedwrlock(w->rw, wt_now() + 200 * WEFT_NS_PER_MS);
    w->done_at = wt_now();
}

/* A reader queued behind a waiting writer gets in when the writer gives up,
 * although the first reader still holds the lock. */
static void case_rwlock_writer_gives_up(void)
{
    for (int fiber = 0; fiber < 2; fiber++) {
        weft_rwlock_t rw = WEFT_RWLOCK_INITIALIZER;
        weft_rwlock_rdlock(&rw);
        rw_timed_t w = {.rw = &rw, .rc = 1}, r = {.rw = &rw};
        wt_task_t tw, tr;
        wt_task_start(&tw, fiber, giving_up_writer_fn, &w);
        WT_AWAIT_GE(&w.started, 1);
        weft_fiber_usleep(WT_SETTLE_US);
        WT_EQ(weft_rwlock_tryrdlock(&rw), -EBUSY); /* a writer waits */
        wt_task_start(&tr, !fiber, late_reader_fn, &r);
        WT_AWAIT_GE(&r.started, 1);
        weft_fiber_usleep(WT_SETTLE_US);
        WT_EQ(WT_LOAD(&r.rc), 0);
        wt_task_join(&tw);
        WT_EQ(w.rc, -ETIMEDOUT);
        wt_task_join(&tr);
        WT_TIMING_LE(r.done_at - w.done_at, MAX_LATE_NS);
        weft_rwlock_unlock(&rw);
        WT_EQ(rw.state, 0);
        WT_EQ(rw.writers_waiting, 0);
    }
}

static const wt_case_t cases[] = {
    WT_CASE(case_mutex_counter),
    WT_CASE(case_mutex_try_timed),
    WT_CASE(case_cond_queue),
    WT_CASE(case_cond_signal_broadcast),
    WT_CASE(case_cond_timedwait),
    WT_CASE(case_countdown),
    WT_CASE(case_semaphore),
    WT_CASE(case_rwlock_basics),
    WT_CASE(case_rwlock_exclusive),
    WT_CASE(case_rwlock_writer_not_starved),
    WT_CASE(case_rwlock_writer_gives_up),
};

int main(int argc, char **argv)
{
    wt_run_cases(argc, argv, cases, WT_NCASES(cases));
    WT_EQ(weft_fiber_shutdown(), 0);
    return 0;
}
