/*
 * test_shutdown.c - stopping the runtime.
 *
 * weft_fiber_shutdown() is what lets a program (or a test) end cleanly: it
 * must refuse to run inside a fiber (-EPERM: it would wait for its own
 * worker), let every ready fiber finish, abandon the fibers still blocked
 * (sleeping for long, or waiting on a butex nobody will wake) instead of
 * waiting for them, return in bounded time, and leave the runtime refusing
 * new fibers (-ESHUTDOWN) while butexes and sleeps keep working for plain
 * threads. A child process checks shutdown of a runtime that never started.
 */
#include <dirent.h>

#include "fiber_test_util.h"

static void shutdown_in_fiber_fn(void *arg)
{
    *(int *)arg = weft_fiber_shutdown();
}

static void nop_fn(void *arg)
{
    (void)arg;
}

typedef struct {
    int *finished;
    int yields;
} busy_t;

/* Ready work: yields a few times (staying ready), then counts itself done. */
static void ready_fn(void *arg)
{
    busy_t *b = arg;
    for (int i = 0; i < b->yields; i++)
        weft_fiber_yield();
    WT_ADD(b->finished, 1);
}

typedef struct {
    busy_t *b;
    int n;
} starter_t;

/* Queues ready fibers on its worker's own queue, and ends. */
static void starter_fn(void *arg)
{
    starter_t *s = arg;
    for (int i = 0; i < s->n; i++)
        wt_start(ready_fn, s->b);
}

static void long_sleeper_fn(void *arg)
{
    WT_ADD((int *)arg, 1);
    weft_fiber_usleep(60ull * 1000 * 1000);
    WT_ASSERT_MSG(false, "a fiber abandoned at shutdown woke up");
}

static int32_t g_never; /* nobody wakes it */

static void blocked_fn(void *arg)
{
    WT_ADD((int *)arg, 1);
    weft_butex_wait(&g_never, 0, -1);
    WT_ASSERT_MSG(false, "a fiber blocked for ever at shutdown came back");
}

/* Threads of this process whose name starts with prefix. */
static int count_threads(const char *prefix)
{
    int n = 0;
    char path[300], comm[32];
    DIR *d = opendir("/proc/self/task");
    WT_ASSERT(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue; /* exited meanwhile */
        if (fgets(comm, sizeof(comm), f) && strncmp(comm, prefix, strlen(prefix)) == 0)
            n++;
        fclose(f);
    }
    closedir(d);
    return n;
}

/* Threads named prefix once the ones already joined are gone: pthread_join
 * returns when a thread has stopped running, and the kernel may list it
 * under /proc for a moment longer (long enough to see under qemu-user). */
static int count_threads_settled(const char *prefix)
{
    int64_t deadline = wt_now() + 2 * WEFT_NS_PER_SEC;
    int n;
    while ((n = count_threads(prefix)) > 0 && wt_now() < deadline)
        usleep(1000);
    return n;
}

static void check_after_shutdown(void)
{
    WT_EQ(count_threads_settled("weft-worker"), 0);
    WT_EQ(count_threads_settled("weft-timer"), 0);
    weft_fiber_t id = 0;
    WT_EQ(weft_fiber_start_background(&id, NULL, nop_fn, NULL), -ESHUTDOWN);
    WT_EQ(weft_fiber_start_urgent(&id, NULL, nop_fn, NULL), -ESHUTDOWN);
    WT_EQ(weft_fiber_init(), -ESHUTDOWN);
    weft_timer_id_t tid;
    int x;
    WT_EQ(weft_timer_run_after(&tid, WEFT_NS_PER_MS, nop_fn, &x), -ESHUTDOWN);
    /* Plain threads still sleep and wait. */
    int64_t t0 = wt_now();
    WT_EQ(weft_fiber_usleep(2000), 0);
    WT_GE(wt_now() - t0, 2 * WEFT_NS_PER_MS);
    int32_t word = 0;
    WT_EQ(weft_butex_wait(&word, 0, wt_now() + 2 * WEFT_NS_PER_MS), -ETIMEDOUT);
    WT_EQ(weft_butex_wait(&word, 1, -1), -EWOULDBLOCK);
    WT_EQ(weft_butex_wake_all(&word), 0);
    /* Again: harmless. */
    WT_EQ(weft_fiber_shutdown(), 0);
}

static void case_shutdown(void)
{
    enum { READY = 500, SLEEPERS = 100, BLOCKED = 100 };
    int rc = 1;
    wt_join(wt_start(shutdown_in_fiber_fn, &rc));
    WT_EQ(rc, -EPERM);

    int started = 0, finished = 0;
    busy_t b = {.finished = &finished, .yields = 20};
    for (int i = 0; i < SLEEPERS; i++)
        wt_start(long_sleeper_fn, &started);
    for (int i = 0; i < BLOCKED; i++)
        wt_start_small(blocked_fn, &started);
    WT_AWAIT_GE(&started, SLEEPERS + BLOCKED);
    /* Plenty of ready fibers, queued from a fiber and from here. */
    starter_t st = {&b, READY / 2};
    wt_join(wt_start(starter_fn, &st));
    for (int i = 0; i < READY - READY / 2; i++)
        wt_start(ready_fn, &b);

    int64_t t0 = wt_now();
    WT_EQ(weft_fiber_shutdown(), 0);
    int64_t dt = wt_now() - t0;
    WT_NOTE("shutdown: took %.2f ms with %d ready, %d sleeping and %d blocked fibers", wt_ms(dt),
            READY, SLEEPERS, BLOCKED);
    WT_LT(dt, 2 * WEFT_NS_PER_SEC);
    WT_EQ(WT_LOAD(&finished), READY); /* every ready fiber ran to its end */
    check_after_shutdown();
}

static void count_cb(void *arg)
{
    WT_ADD((int *)arg, 1);
}

/* Shutdown of a runtime whose fibers never started; with timers_used, the
 * timer thread did start (timers work without fibers). */
static void never_started_child(bool timers_used)
{
    if (timers_used) {
        int fired = 0;
        weft_timer_id_t id;
        WT_EQ(weft_timer_run_after(&id, WEFT_NS_PER_MS, count_cb, &fired), 0);
        WT_AWAIT_GE(&fired, 1);
        WT_EQ(count_threads("weft-timer"), 1);
    }
    WT_EQ(count_threads("weft-worker"), 0);
    WT_EQ(weft_fiber_shutdown(), 0);
    check_after_shutdown();
}

static void run_child(const char *mode)
{
    wt_child_t *c = malloc(sizeof(*c));
    WT_ASSERT(c);
    wt_run_self(c, (char *[]){(char *)mode, NULL}, NULL);
    WT_CHILD_OK(c);
    free(c);
}

static void case_never_started(void)
{
    run_child("--never-started");
}

static void case_timers_only(void)
{
    run_child("--timers-only");
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--never-started") == 0) {
        never_started_child(false);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "--timers-only") == 0) {
        never_started_child(true);
        return 0;
    }
    /* The runtime of this process first (a child inherits nothing from it:
     * posix_spawn execs at once), then the children. */
    static const wt_case_t cases[] = {WT_CASE(case_shutdown), WT_CASE(case_never_started),
                                      WT_CASE(case_timers_only)};
    wt_run_cases(argc, argv, cases, WT_NCASES(cases));
    WT_EQ(weft_fiber_shutdown(), 0);
    return 0;
}
