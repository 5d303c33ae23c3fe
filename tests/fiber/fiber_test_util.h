/*
 * fiber_test_util.h - helpers shared by the fiber runtime tests.
 *
 * Checked wrappers to start and join fibers and threads, bounded waits for a
 * flag (usable from a fiber or a pthread), busy work that never yields,
 * latency percentiles, re-running the test binary as a child process with its
 * stderr captured, and a tiny case runner: a test program runs all of its
 * cases, or only those named on its command line, e.g.
 *   build-tests/tests/fiber/test_sync rwlock_reader_lost_wakeup
 */
#ifndef WEFT_TESTS_FIBER_TEST_UTIL_H
#define WEFT_TESTS_FIBER_TEST_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fiber/runtime.h"
#include "weft_test.h"

extern char **environ;

/* ---- atomics, short names ---- */

#define WT_LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define WT_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define WT_ADD(p, v) __atomic_add_fetch((p), (v), __ATOMIC_ACQ_REL)
#define WT_SUB(p, v) __atomic_sub_fetch((p), (v), __ATOMIC_ACQ_REL)
#define WT_XCHG(p, v) __atomic_exchange_n((p), (v), __ATOMIC_ACQ_REL)

/* A pause for busy-wait loops. */
static inline void wt_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline int64_t wt_now(void)
{
    return weft_clock_ns();
}

static inline double wt_ms(int64_t ns)
{
    return (double)ns / 1e6;
}

static inline pid_t wt_gettid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

/* xorshift64*: cheap per-caller random numbers. */
static inline uint64_t wt_rand(uint64_t *state)
{
    uint64_t x = *state ? *state : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* A timing tolerance: base_ns in a normal build, multiplied by 100 / scale
 * (at most 10) in builds that lower WEFT_TEST_SCALE because everything runs
 * several times slower there (sanitizers), and by WEFT_TEST_SLACK (default
 * 1) on a machine known to be loaded. */
static inline int64_t wt_slack_ns(int64_t base_ns)
{
    static int64_t factor = 0;
    if (!factor) {
        long scale = wt_scaled(100);
        int64_t f = scale < 100 ? (100 + scale - 1) / scale : 1;
        f = f > 10 ? 10 : f;
        const char *env = getenv("WEFT_TEST_SLACK");
        if (env && atoi(env) > 0)
            f *= atoi(env);
        factor = f;
    }
    return base_ns * factor;
}

/* The worst lateness of 20 plain 1 ms nanosleeps of this thread: what the
 * machine itself allows right now, to tell a slow runtime from a loaded
 * machine when a timing check fails. */
static inline int64_t wt_os_sleep_lateness_ns(void)
{
    int64_t worst = 0;
    for (int i = 0; i < 20; i++) {
        int64_t t0 = wt_now();
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        int64_t late = wt_now() - t0 - 1000000;
        worst = late > worst ? late : worst;
    }
    return worst;
}

/* A timing check (a lateness, a wait) against a bound from wt_slack_ns(). */
#define WT_TIMING_LE(value, bound)                                            \
    do {                                                                      \
        int64_t wt_v_ = (value), wt_b_ = (bound);                             \
        if (__builtin_expect(wt_v_ > wt_b_, 0))                               \
            wt_fail(__FILE__, __LINE__,                                       \
                    "%s = %.3f ms, more than %.3f ms (plain 1 ms sleeps of "  \
                    "this machine are late by up to %.3f ms right now; "      \
                    "WEFT_TEST_SLACK=n relaxes timing checks n times)",       \
                    #value, (double)wt_v_ / 1e6, (double)wt_b_ / 1e6,         \
                    (double)wt_os_sleep_lateness_ns() / 1e6);                 \
    } while (0)

/* Spins for ns without yielding: keeps a worker (or thread) busy. */
static inline void wt_spin_ns(int64_t ns)
{
    int64_t end = wt_now() + ns;
    while (wt_now() < end)
        __asm__ volatile("" ::: "memory");
}

/* ---- fibers and threads ---- */

static inline weft_fiber_t wt_start_attr(const weft_fiber_attr_t *attr, weft_fiber_fn *fn,
                                         void *arg)
{
    weft_fiber_t id = 0;
    int rc = weft_fiber_start_background(&id, attr, fn, arg);
    WT_EQ(rc, 0);
    WT_NE(id, 0);
    return id;
}

static inline weft_fiber_t wt_start(weft_fiber_fn *fn, void *arg)
{
    return wt_start_attr(NULL, fn, arg);
}

static inline weft_fiber_t wt_start_small(weft_fiber_fn *fn, void *arg)
{
    weft_fiber_attr_t attr = {.stack_size = WEFT_STACK_SMALL};
    return wt_start_attr(&attr, fn, arg);
}

static inline void wt_join(weft_fiber_t id)
{
    WT_EQ(weft_fiber_join(id), 0);
}

static inline pthread_t wt_thread(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    WT_EQ(pthread_create(&t, NULL, fn, arg), 0);
    return t;
}

static inline void wt_thread_join(pthread_t t)
{
    WT_EQ(pthread_join(t, NULL), 0);
}

/* Runs fn(arg) in a fiber and waits for it: for checks that must be made
 * from inside a fiber. */
static inline void wt_in_fiber(weft_fiber_fn *fn, void *arg)
{
    wt_join(wt_start(fn, arg));
}

/* A task runs fn(arg) in a new fiber or a new pthread, for checks that
 * must hold for both kinds of caller; wt_task_join() waits for it. */
typedef struct {
    bool fiber;
    weft_fiber_t id;
    pthread_t thread;
    weft_fiber_fn *fn;
    void *arg;
} wt_task_t;

static inline void *wt_task_thread_(void *arg)
{
    wt_task_t *t = arg;
    t->fn(t->arg);
    return NULL;
}

static inline void wt_task_start(wt_task_t *t, bool fiber, weft_fiber_fn *fn, void *arg)
{
    *t = (wt_task_t){.fiber = fiber, .fn = fn, .arg = arg};
    if (fiber)
        t->id = wt_start(fn, arg);
    else
        t->thread = wt_thread(wt_task_thread_, t);
}

static inline void wt_task_join(wt_task_t *t)
{
    if (t->fiber)
        wt_join(t->id);
    else
        wt_thread_join(t->thread);
}

/* Runs fn(arg) once in a fiber and once in this pthread. */
static inline void wt_in_fiber_and_pthread(weft_fiber_fn *fn, void *arg)
{
    wt_in_fiber(fn, arg);
    fn(arg);
}

/* Waits until *p >= want, polling; false after timeout_ns. Works from a
 * fiber (sleeps give the worker away) and from a pthread. */
static inline bool wt_await_ge(const int *p, int want, int64_t timeout_ns)
{
    int64_t end = wt_now() + timeout_ns;
    while (WT_LOAD(p) < want) {
        if (wt_now() > end)
            return false;
        weft_fiber_usleep(50);
    }
    return true;
}

#define WT_AWAIT_GE(p, want)                                                  \
    WT_ASSERT_MSG(wt_await_ge((p), (want), 10 * WEFT_NS_PER_SEC),             \
                  "timed out waiting for %s >= %d (it is %d)", #p, (int)(want), \
                  WT_LOAD(p))

/* Waiting in a blocking call cannot be observed from outside: callers mark
 * "about to block" and then give the waiter this long to get there. */
#define WT_SETTLE_US 3000

/* A gate: fibers or threads wait until it opens. Counts the waiters that
 * arrived and the -EINTR returns they saw on the way. */
typedef struct {
    int32_t word;
    int arrived;
    int interrupts;
} wt_gate_t;

static inline void wt_gate_wait(wt_gate_t *g)
{
    WT_ADD(&g->arrived, 1);
    while (!WT_LOAD(&g->word)) {
        int rc = weft_butex_wait(&g->word, 0, -1);
        if (rc == -EINTR)
            WT_ADD(&g->interrupts, 1);
        else
            WT_ASSERT_MSG(rc == 0 || rc == -EWOULDBLOCK, "butex_wait: %d", rc);
    }
}

static inline void wt_gate_open(wt_gate_t *g)
{
    WT_STORE(&g->word, 1);
    weft_butex_wake_all(&g->word);
}

/* Fiber body: waits at the gate given as arg. */
static inline void wt_gate_fiber(void *arg)
{
    wt_gate_wait(arg);
}

static inline void *wt_gate_thread(void *arg)
{
    wt_gate_wait(arg);
    return NULL;
}

/* ---- figures ---- */

static int wt_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sorts v and prints "name: n=.. p50=.. p90=.. p99=.. max=.. us". */
static inline void wt_note_percentiles(const char *name, int64_t *v, size_t n)
{
    if (n == 0)
        return;
    qsort(v, n, sizeof(v[0]), wt_cmp_i64);
#define WT_PCT_(p) ((double)v[(size_t)((double)(n - 1) * (p))] / 1e3)
    WT_NOTE("%s: n=%zu min=%.1f p50=%.1f p90=%.1f p99=%.1f max=%.1f us", name, n,
            (double)v[0] / 1e3, WT_PCT_(0.50), WT_PCT_(0.90), WT_PCT_(0.99),
            (double)v[n - 1] / 1e3);
#undef WT_PCT_
}

/* ---- child processes ---- */

typedef struct {
    int status;       /* as from waitpid */
    char err[16384];  /* the child's stderr, NUL-terminated, truncated */
    size_t err_len;
} wt_child_t;

/* Runs /proc/self/exe with the given arguments (NULL-terminated) and extra
 * environment entries ("NAME=value", NULL-terminated, may be NULL), with
 * stderr captured; stdout is shared with ours. */
static inline void wt_run_self(wt_child_t *out, char *const args[], char *const extra_env[])
{
    int fds[2];
    WT_EQ(pipe2(fds, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    WT_EQ(posix_spawn_file_actions_init(&fa), 0);
    WT_EQ(posix_spawn_file_actions_adddup2(&fa, fds[1], STDERR_FILENO), 0);

    /* A program run by an emulator (a cross build under qemu-user) must
     * run its children through it too: WEFT_TEST_EXEC_WRAPPER names it,
     * and the emulator resolves /proc/self/exe to the emulated program. */
    const char *wrapper = getenv("WEFT_TEST_EXEC_WRAPPER");
    char self[PATH_MAX];
    char *argv[16];
    size_t argc = 0;
    if (wrapper && *wrapper) {
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        WT_GT(n, 0);
        self[n] = 0;
        argv[argc++] = (char *)wrapper;
        argv[argc++] = self;
    } else {
        argv[argc++] = (char *)"/proc/self/exe";
    }
    for (size_t i = 0; args[i]; i++) {
        WT_LT(argc, 15);
        argv[argc++] = args[i];
    }
    argv[argc] = NULL;

    size_t nenv = 0, nextra = 0;
    while (environ[nenv])
        nenv++;
    while (extra_env && extra_env[nextra])
        nextra++;
    char **envp = calloc(nenv + nextra + 1, sizeof(char *));
    WT_ASSERT(envp);
    size_t k = 0;
    for (size_t i = 0; i < nenv; i++) {
        bool replaced = false;
        for (size_t j = 0; j < nextra; j++) {
            size_t len = (size_t)(strchr(extra_env[j], '=') - extra_env[j]) + 1;
            if (strncmp(environ[i], extra_env[j], len) == 0)
                replaced = true;
        }
        if (!replaced)
            envp[k++] = environ[i];
    }
    for (size_t j = 0; j < nextra; j++)
        envp[k++] = extra_env[j];
    envp[k] = NULL;

    pid_t pid;
    int rc = wrapper && *wrapper ? posix_spawnp(&pid, wrapper, &fa, NULL, argv, envp)
                                 : posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, envp);
    WT_EQ(rc, 0);
    posix_spawn_file_actions_destroy(&fa);
    free(envp);
    close(fds[1]);

    out->err_len = 0;
    for (;;) {
        ssize_t r = read(fds[0], out->err + out->err_len, sizeof(out->err) - 1 - out->err_len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        out->err_len += (size_t)r;
        if (out->err_len == sizeof(out->err) - 1) {
            char sink[4096]; /* drain the rest so the child never blocks */
            while (read(fds[0], sink, sizeof(sink)) > 0)
                ;
            break;
        }
    }
    out->err[out->err_len] = '\0';
    close(fds[0]);
    while (waitpid(pid, &out->status, 0) < 0)
        WT_EQ(errno, EINTR);
}

/* Fails, showing the child's stderr, unless it exited with status 0. */
#define WT_CHILD_OK(c)                                                        \
    WT_ASSERT_MSG(WIFEXITED((c)->status) && WEXITSTATUS((c)->status) == 0,    \
                  "child failed (status %#x), its stderr:\n%s", (c)->status,  \
                  (c)->err)

/* ---- cases ---- */

typedef struct {
    const char *name;
    void (*fn)(void);
} wt_case_t;

#define WT_CASE(fn) {#fn, fn}

/* Runs every case, or only those named in argv (arguments that start with
 * "--" are left to the caller). Prints one line per case. */
static inline void wt_run_cases(int argc, char **argv, const wt_case_t *cases, size_t n)
{
    int named = 0;
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--", 2) == 0)
            continue;
        named++;
        bool found = false;
        for (size_t c = 0; c < n; c++)
            found |= strcmp(argv[i], cases[c].name) == 0;
        WT_ASSERT_MSG(found, "no test case named %s", argv[i]);
    }
    for (size_t c = 0; c < n; c++) {
        bool run = named == 0;
        for (int i = 1; i < argc && !run; i++)
            run = strcmp(argv[i], cases[c].name) == 0;
        if (!run)
            continue;
        int64_t t0 = wt_now();
        cases[c].fn();
        WT_NOTE("case %s: ok (%.1f ms)", cases[c].name, wt_ms(wt_now() - t0));
    }
}

#define WT_NCASES(a) (sizeof(a) / sizeof((a)[0]))

#endif
