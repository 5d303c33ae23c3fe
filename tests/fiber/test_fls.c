/*
 * test_fls.c - fiber-local storage, and thread-local state across switches.
 *
 * Keys behave like pthread keys, per fiber: values are independent between
 * fibers and between a fiber and the pthread that started it; destructors
 * run when a fiber (or thread) ends, for non-NULL values only, in further
 * rounds when a destructor sets a value again, and never for a deleted key;
 * a key deleted and created again does not see the old values.
 *
 * The thread-local caching test: a fiber may resume on another worker
 * thread after any switch, while the compiler assumes a function runs on one
 * thread and may cache the address of a __thread variable across calls. Many
 * fibers yield in a loop and read, between yields, the worker index and the
 * kernel thread id; the mapping index -> tid must never change, and the test
 * counts the migrations it saw to prove it exercised the case. A runtime
 * whose thread-local accessor were cached across a switch would report the
 * old worker after a migration and fail here.
 */
#include "fiber_test_util.h"

/* ---- destructors ---- */

typedef struct {
    int calls;
    intptr_t sum;      /* of the values destroyed */
    int again;         /* set the value again this many times */
    weft_fiber_key_t key;
    weft_fiber_key_t other;  /* set by the destructor, if valid */
    int set_other;
} dtor_log_t;

static dtor_log_t g_log;

static void logging_dtor(void *v)
{
    WT_ASSERT(v != NULL);
    WT_ADD(&g_log.calls, 1);
    __atomic_add_fetch(&g_log.sum, (intptr_t)v, __ATOMIC_ACQ_REL);
    if (g_log.again > 0) {
        g_log.again--;
        WT_EQ(weft_fiber_setspecific(g_log.key, v), 0);
    }
    if (g_log.set_other) {
        g_log.set_other = 0;
        WT_EQ(weft_fiber_setspecific(g_log.other, (void *)(intptr_t)1000), 0);
    }
}

typedef struct {
    weft_fiber_key_t key;
    void *values[3]; /* set in this order */
    int n;
} setter_t;

static void setter_fn(void *arg)
{
    setter_t *s = arg;
    WT_EQ(weft_fiber_getspecific(s->key), NULL); /* nothing inherited */
    for (int i = 0; i < s->n; i++) {
        WT_EQ(weft_fiber_setspecific(s->key, s->values[i]), 0);
        WT_EQ(weft_fiber_getspecific(s->key), s->values[i]);
    }
}

/* Runs a fiber that sets the values and checks the destructor calls. */
static void expect_dtor(weft_fiber_key_t key, setter_t s, int calls, intptr_t sum)
{
    memset(&g_log, 0, sizeof(g_log));
    g_log.key = key;
    s.key = key;
    wt_in_fiber(setter_fn, &s);
    WT_EQ(WT_LOAD(&g_log.calls), calls);
    WT_EQ(g_log.sum, sum);
}

static void case_destructors(void)
{
    weft_fiber_key_t key;
    WT_EQ(weft_fiber_key_create(&key, logging_dtor), 0);
    expect_dtor(key, (setter_t){.values = {(void *)7}, .n = 1}, 1, 7);
    expect_dtor(key, (setter_t){.values = {NULL}, .n = 1}, 0, 0);
    expect_dtor(key, (setter_t){.n = 0}, 0, 0);
    expect_dtor(key, (setter_t){.values = {(void *)5, NULL}, .n = 2}, 0, 0);
    expect_dtor(key, (setter_t){.values = {(void *)5, (void *)9}, .n = 2}, 1, 9);
    /* The same fiber slot, used again, starts empty (setter_fn checks). */
    for (int i = 0; i < 100; i++)
        expect_dtor(key, (setter_t){.values = {(void *)3}, .n = 1}, 1, 3);
    WT_EQ(weft_fiber_key_delete(key), 0);
}

/* A destructor that sets a value again is called again, in a later round,
 * up to a bound; one that sets another key's value gets that one run. */
static void case_destructor_rounds(void)
{
    weft_fiber_key_t key, other;
    WT_EQ(weft_fiber_key_create(&key, logging_dtor), 0);
    WT_EQ(weft_fiber_key_create(&other, logging_dtor), 0);

    memset(&g_log, 0, sizeof(g_log));
    g_log.key = key;
    g_log.again = 2;
    setter_t s = {.key = key, .values = {(void *)11}, .n = 1};
    wt_in_fiber(setter_fn, &s);
    WT_EQ(g_log.calls, 3);
    WT_EQ(g_log.sum, 33);

    /* Sets it again every time: the fiber still ends, after a few rounds. */
    memset(&g_log, 0, sizeof(g_log));
    g_log.key = key;
    g_log.again = 1000;
    wt_in_fiber(setter_fn, &s);
    WT_GE(g_log.calls, 1);
    WT_LE(g_log.calls, 4);

    memset(&g_log, 0, sizeof(g_log));
    g_log.key = key;
    g_log.other = other;
    g_log.set_other = 1;
    wt_in_fiber(setter_fn, &s);
    WT_EQ(g_log.calls, 2);
    WT_EQ(g_log.sum, 11 + 1000);

    WT_EQ(weft_fiber_key_delete(other), 0);
    WT_EQ(weft_fiber_key_delete(key), 0);
}

/* ---- independence ---- */

typedef struct {
    weft_fiber_key_t key;
    int rounds;
    int mismatches;
} own_t;

static void own_value_fn(void *arg)
{
    own_t *o = arg;
    int mine;
    WT_EQ(weft_fiber_getspecific(o->key), NULL);
    WT_EQ(weft_fiber_setspecific(o->key, &mine), 0);
    for (int i = 0; i < o->rounds; i++) {
        if (i % 4 == 0)
            weft_fiber_usleep(50);
        else
            weft_fiber_yield();
        if (weft_fiber_getspecific(o->key) != &mine)
            WT_ADD(&o->mismatches, 1);
    }
}

static void case_values_per_fiber(void)
{
    enum { FIBERS = 200 };
    weft_fiber_key_t key;
    WT_EQ(weft_fiber_key_create(&key, NULL), 0);
    int main_value;
    WT_EQ(weft_fiber_setspecific(key, &main_value), 0);
    own_t o = {.key = key, .rounds = 40};
    weft_fiber_t ids[FIBERS];
    for (int i = 0; i < FIBERS; i++)
        ids[i] = wt_start(own_value_fn, &o);
    for (int i = 0; i < FIBERS; i++)
        wt_join(ids[i]);
    WT_EQ(o.mismatches, 0);
    WT_EQ(weft_fiber_getspecific(key), &main_value);
    WT_EQ(weft_fiber_setspecific(key, NULL), 0);
    WT_EQ(weft_fiber_key_delete(key), 0);
}

/* ---- delete and create again ---- */

typedef struct {
    weft_fiber_key_t k1, k2;
    wt_gate_t gate;
    int set_deleted_rc;
    void *seen_new;
    int ready;
} recreate_t;

static void recreate_fn(void *arg)
{
    recreate_t *r = arg;
    WT_EQ(weft_fiber_setspecific(r->k1, (void *)21), 0);
    WT_STORE(&r->ready, 1);
    wt_gate_wait(&r->gate); /* meanwhile k1 is deleted and k2 created */
    r->seen_new = weft_fiber_getspecific(r->k2);
    r->set_deleted_rc = weft_fiber_setspecific(r->k1, (void *)22);
    WT_EQ(weft_fiber_setspecific(r->k2, (void *)23), 0);
    WT_EQ(weft_fiber_getspecific(r->k2), (void *)23);
}

static void case_delete_and_recreate(void)
{
    recreate_t *r = calloc(1, sizeof(*r));
    WT_ASSERT(r);
    WT_EQ(weft_fiber_key_create(&r->k1, logging_dtor), 0);
    WT_EQ(weft_fiber_setspecific(r->k1, (void *)31), 0); /* this pthread's */
    memset(&g_log, 0, sizeof(g_log));
    weft_fiber_t id = wt_start(recreate_fn, r);
    WT_AWAIT_GE(&r->ready, 1);
    WT_EQ(weft_fiber_key_delete(r->k1), 0);
    WT_EQ(weft_fiber_key_delete(r->k1), -EINVAL);
    WT_EQ(weft_fiber_key_create(&r->k2, logging_dtor), 0);
    WT_EQ(weft_fiber_getspecific(r->k2), NULL);
    wt_gate_open(&r->gate);
    wt_join(id);
    WT_EQ(r->seen_new, NULL);
    WT_EQ(r->set_deleted_rc, -EINVAL);
    /* Only k2's value was destroyed; k1's died with its key. */
    WT_EQ(g_log.calls, 1);
    WT_EQ(g_log.sum, 23);
    WT_EQ(weft_fiber_key_delete(r->k2), 0);
    free(r);
}

/* ---- pthreads ---- */

typedef struct {
    weft_fiber_key_t key;
    pid_t tid;
    int set;
} thread_fls_t;

static pid_t g_dtor_tid;
static void *g_dtor_value;
static int g_dtor_calls;

static void thread_dtor(void *v)
{
    g_dtor_tid = wt_gettid();
    g_dtor_value = v;
    WT_ADD(&g_dtor_calls, 1);
}

static void *fls_thread(void *arg)
{
    thread_fls_t *t = arg;
    t->tid = wt_gettid();
    WT_EQ(weft_fiber_getspecific(t->key), NULL);
    if (t->set) {
        WT_EQ(weft_fiber_setspecific(t->key, (void *)41), 0);
        WT_EQ(weft_fiber_getspecific(t->key), (void *)41);
    }
    return NULL;
}

/* Outside fibers a value belongs to the thread; its destructor runs when
 * the thread exits, on that thread. */
static void case_pthread_storage(void)
{
    weft_fiber_key_t key;
    WT_EQ(weft_fiber_key_create(&key, thread_dtor), 0);
    thread_fls_t t = {.key = key, .set = 1};
    wt_thread_join(wt_thread(fls_thread, &t));
    WT_EQ(g_dtor_calls, 1);
    WT_EQ(g_dtor_tid, t.tid);
    WT_EQ(g_dtor_value, (void *)41);

    t.set = 0;
    wt_thread_join(wt_thread(fls_thread, &t));
    WT_EQ(g_dtor_calls, 1);
    WT_EQ(weft_fiber_key_delete(key), 0);
}

static void case_key_limit(void)
{
    enum { MAX = 4096 };
    weft_fiber_key_t *keys = calloc(MAX, sizeof(*keys));
    WT_ASSERT(keys);
    int n = 0;
    int rc;
    while (n < MAX && (rc = weft_fiber_key_create(&keys[n], NULL)) == 0)
        n++;
    WT_EQ(rc, -EAGAIN);
    WT_GE(n, 1000);
    WT_NOTE("key_limit: %d keys could be created", n);
    /* Every key has its own slot. */
    WT_EQ(weft_fiber_setspecific(keys[0], (void *)1), 0);
    WT_EQ(weft_fiber_setspecific(keys[n - 1], (void *)2), 0);
    WT_EQ(weft_fiber_getspecific(keys[0]), (void *)1);
    WT_EQ(weft_fiber_getspecific(keys[n - 1]), (void *)2);
    WT_EQ(weft_fiber_setspecific(keys[0], NULL), 0);
    WT_EQ(weft_fiber_setspecific(keys[n - 1], NULL), 0);
    for (int i = 0; i < n; i++)
        WT_EQ(weft_fiber_key_delete(keys[i]), 0);
    weft_fiber_key_t k;
    WT_EQ(weft_fiber_key_create(&k, NULL), 0);
    WT_EQ(weft_fiber_key_delete(k), 0);
    free(keys);
}

/* ---- thread-local state across switches ---- */

enum { TLS_FIBERS = 64 };

typedef struct {
    pid_t tid_of_worker[256];
    weft_fiber_key_t key;
    int rounds;
    int64_t reads, migrations;
} tls_test_t;

static void tls_fn(void *arg)
{
    tls_test_t *t = arg;
    int prev = -1;
    int64_t migrations = 0;
    WT_EQ(weft_fiber_setspecific(t->key, &prev), 0);
    for (int i = 0; i < t->rounds; i++) {
        int idx = weft_fiber_worker_index();
        pid_t tid = wt_gettid();
        WT_GE(idx, 0);
        WT_LT(idx, 256);
        pid_t first = 0;
        if (!__atomic_compare_exchange_n(&t->tid_of_worker[idx], &first, tid, false,
                                         __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            WT_ASSERT_MSG(first == tid,
                          "worker %d ran on thread %d before and now reports thread %d: "
                          "a thread-local read was cached across a switch",
                          idx, (int)first, (int)tid);
        if (prev >= 0 && prev != idx)
            migrations++;
        prev = idx;
        WT_EQ(weft_fiber_getspecific(t->key), &prev); /* fiber's, not thread's */
        if (i % 16 == 15)
            weft_fiber_usleep(10); /* woken by the timer thread: any worker */
        else
            weft_fiber_yield();
    }
    __atomic_add_fetch(&t->reads, t->rounds, __ATOMIC_RELAXED);
    __atomic_add_fetch(&t->migrations, migrations, __ATOMIC_RELAXED);
}

static void case_thread_local_caching(void)
{
    tls_test_t *t = calloc(1, sizeof(*t));
    WT_ASSERT(t);
    t->rounds = (int)wt_scaled(2000);
    WT_EQ(weft_fiber_key_create(&t->key, NULL), 0);
    weft_fiber_t ids[TLS_FIBERS];
    for (int i = 0; i < TLS_FIBERS; i++)
        ids[i] = wt_start(tls_fn, t);
    for (int i = 0; i < TLS_FIBERS; i++)
        wt_join(ids[i]);
    int workers = weft_fiber_workers(), seen = 0;
    for (int i = 0; i < 256; i++)
        seen += t->tid_of_worker[i] != 0;
    WT_NOTE("thread_local_caching: %lld reads by %d fibers on %d workers, %lld migrations",
            (long long)t->reads, TLS_FIBERS, seen, (long long)t->migrations);
    WT_LE(seen, workers);
    if (workers >= 2)
        WT_GT(t->migrations, 0); /* otherwise the test proved nothing */
    WT_EQ(weft_fiber_key_delete(t->key), 0);
    free(t);
}

static const wt_case_t cases[] = {
    WT_CASE(case_destructors),
    WT_CASE(case_destructor_rounds),
    WT_CASE(case_values_per_fiber),
    WT_CASE(case_delete_and_recreate),
    WT_CASE(case_pthread_storage),
    WT_CASE(case_key_limit),
    WT_CASE(case_thread_local_caching),
};

int main(int argc, char **argv)
{
    wt_run_cases(argc, argv, cases, WT_NCASES(cases));
    WT_EQ(weft_fiber_shutdown(), 0);
    return 0;
}
