/*
 * test_sleep.c - sleeping fibers and threads wake on time.
 *
 * Every timed wait in weft (RPC deadlines, retries, idle reaping) rides on
 * the same path as a fiber sleep: a timer readies the fiber (on the timer
 * thread, or on a busy worker between two fibers), a worker runs it. So 10k
 * fibers sleep to random deadlines 0-200 ms away, by weft_fiber_usleep and by
 * weft_fiber_sleep_until, while the workers are still busy starting the
 * later ones (each needs a fresh stack); each must wake no earlier than its
 * deadline and at most 5 ms after it, in one of two rounds. The distribution
 * of the lateness is printed. Plain pthreads sleep through the same calls.
 */
#include "fiber_test_util.h"

#define MAX_LATE_NS wt_slack_ns(5 * WEFT_NS_PER_MS)
#define SPAN_US 200000

static int g_asleep; /* fibers that reached their sleep */

typedef struct {
    uint64_t seed;
    int64_t late;   /* wake time minus deadline */
    int rc;
    int use_until;
} sleeper_t;

/* Sleeps to a random deadline up to SPAN_US away; records the lateness. */
static void sleep_once(sleeper_t *s)
{
    int64_t us = (int64_t)(wt_rand(&s->seed) % (SPAN_US + 1));
    int64_t start = wt_now();
    int64_t deadline = start + us * WEFT_NS_PER_US;
    WT_ADD(&g_asleep, 1);
    s->rc = s->use_until ? weft_fiber_sleep_until(deadline) : weft_fiber_usleep((uint64_t)us);
    s->late = wt_now() - deadline;
}

static void sleeper_fn(void *arg)
{
    sleep_once(arg);
}

/* Checks the sleepers woke on time. With `tries_left`, a timing miss only
 * returns false (the caller runs the round again): one late wakeup can be a
 * vCPU the host took away, which no runtime can help; two rounds in a row
 * cannot. Waking early, or an error, always fails. */
static bool check_lateness(const char *name, sleeper_t *s, size_t n, int tries_left)
{
    WT_GT(n, 0);
    int64_t *late = malloc(n * sizeof(*late));
    WT_ASSERT(late);
    size_t too_late = 0;
    for (size_t i = 0; i < n; i++) {
        WT_EQ(s[i].rc, 0);
        WT_ASSERT_MSG(s[i].late >= 0, "%s: sleeper %zu woke %lld ns early", name, i,
                      (long long)-s[i].late);
        too_late += s[i].late > MAX_LATE_NS;
        late[i] = s[i].late;
    }
    wt_note_percentiles(name, late, n); /* sorts: late[n - 1] is the worst */
    int64_t worst = late[n - 1];
    free(late);
    if (too_late)
        WT_NOTE("%s: %zu of %zu sleepers woke too late%s", name, too_late, n,
                tries_left ? "; once more" : "");
    if (too_late && tries_left)
        return false;
    WT_TIMING_LE(worst, MAX_LATE_NS);
    return true;
}

static bool many_fibers_once(int tries_left)
{
    size_t n = (size_t)wt_scaled(10000);
    sleeper_t *s = calloc(n, sizeof(*s));
    weft_fiber_t *ids = calloc(n, sizeof(*ids));
    WT_ASSERT(s && ids);
    WT_STORE(&g_asleep, 0);
    int64_t t0 = wt_now();
    for (size_t i = 0; i < n; i++) {
        s[i].seed = 0x1234567ull + i;
        s[i].use_until = (int)(i & 1);
        ids[i] = wt_start_small(sleeper_fn, &s[i]);
    }
    int64_t t1 = wt_now();
    WT_AWAIT_GE(&g_asleep, (int)n);
    /* How long the burst of starts took to get every fiber running: a
     * woken sleeper queues behind the fibers not started yet. */
    WT_NOTE("fiber_sleep_start_burst: %zu fibers started in %.1f ms, all asleep after %.1f ms",
            n, wt_ms(t1 - t0), wt_ms(wt_now() - t0));
    for (size_t i = 0; i < n; i++)
        wt_join(ids[i]);
    bool ok = check_lateness("fiber_sleep_lateness", s, n, tries_left);
    free(ids);
    free(s);
    return ok;
}

static void case_many_fibers(void)
{
    if (!many_fibers_once(1))
        many_fibers_once(0);
}

static void *sleeper_thread(void *arg)
{
    sleeper_t *s = arg;
    uint64_t seed = s[0].seed;
    for (int i = 0; i < 10; i++) {
        s[i].seed = seed + (uint64_t)i;
        s[i].use_until = i & 1;
        sleep_once(&s[i]);
    }
    return NULL;
}

/* Pthreads sleep through the same calls (a nanosleep underneath). */
static void case_pthreads(void)
{
    enum { THREADS = 4, EACH = 10 };
    sleeper_t s[THREADS][EACH];
    memset(s, 0, sizeof(s));
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        s[i][0].seed = 99 + (uint64_t)i;
        t[i] = wt_thread(sleeper_thread, s[i]);
    }
    for (int i = 0; i < THREADS; i++)
        wt_thread_join(t[i]);
    check_lateness("pthread_sleep_lateness", &s[0][0], THREADS * EACH, 0);
}

typedef struct {
    int64_t zero_ns, past_ns;
    int rc_zero, rc_past;
} instant_t;

static void instant_fn(void *arg)
{
    instant_t *t = arg;
    int64_t t0 = wt_now();
    t->rc_zero = weft_fiber_usleep(0);
    t->zero_ns = wt_now() - t0;
    t0 = wt_now();
    t->rc_past = weft_fiber_sleep_until(t0 - WEFT_NS_PER_SEC);
    t->past_ns = wt_now() - t0;
}

/* Sleeps of zero, or to a deadline that has passed, return at once. */
static void case_instant(void)
{
    instant_t t;
    wt_in_fiber(instant_fn, &t);
    WT_EQ(t.rc_zero, 0);
    WT_EQ(t.rc_past, 0);
    WT_TIMING_LE(t.zero_ns, MAX_LATE_NS);
    WT_TIMING_LE(t.past_ns, MAX_LATE_NS);
    instant_fn(&t);
    WT_EQ(t.rc_zero, 0);
    WT_EQ(t.rc_past, 0);
    WT_TIMING_LE(t.past_ns, MAX_LATE_NS);
}

static const wt_case_t cases[] = {
    WT_CASE(case_instant),
    WT_CASE(case_pthreads),
    WT_CASE(case_many_fibers),
};

int main(int argc, char **argv)
{
    wt_run_cases(argc, argv, cases, WT_NCASES(cases));
    WT_EQ(weft_fiber_shutdown(), 0);
    return 0;
}
