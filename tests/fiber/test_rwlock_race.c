/*
 * test_rwlock_race.c - a reader must not sleep through the release of an
 * rwlock it waits for.
 *
 * A reader that finds a writer waiting decides to sleep on the lock word
 * with the value it read (0: free, the writer about to take it). If the
 * writer takes and releases the lock between that decision and the sleep,
 * the word is 0 again, the release woke nobody, and the reader sleeps on a
 * free lock until its deadline (for ever without one). The window is a few
 * instructions wide, but a preemption can always land in it; this test makes
 * it land there every time: it links the shared libweft and interposes
 * weft_butex_wait (the library's calls go through the PLT), pausing the
 * reader between its decision and its sleep until the writer has been in
 * and out. A correct rwlock lets the reader in after the writer leaves.
 * (weft's rwlock now sleeps on a sequence word bumped at every release, which
 * closes the window: the interposer follows the wait wherever it sleeps.)
 */
#include <dlfcn.h>
#include <sched.h>

#include "fiber_test_util.h"

static weft_rwlock_t g_rw = WEFT_RWLOCK_INITIALIZER;

enum { ROLE_NONE, ROLE_WRITER, ROLE_READER };
static __thread int tls_role;
static int g_writer_waiting, g_reader_waiting, g_reader_decided, g_writer_released;

typedef int butex_wait_fn(int32_t *word, int32_t expected, int64_t deadline_ns);

/* Spins (yielding the CPU) until *flag is set or timeout_ns passed. */
static void await_flag(const int *flag, int64_t timeout_ns)
{
    int64_t end = wt_now() + timeout_ns;
    while (!WT_LOAD(flag) && wt_now() < end)
        sched_yield();
}

int weft_butex_wait(int32_t *word, int32_t expected, int64_t deadline_ns)
{
    static butex_wait_fn *real;
    if (!real) {
        real = (butex_wait_fn *)dlsym(RTLD_NEXT, "weft_butex_wait");
        WT_ASSERT_MSG(real, "weft_butex_wait is not interposable: %s", dlerror());
    }
    if ((word != &g_rw.state && word != &g_rw.seq) || tls_role == ROLE_NONE)
        return real(word, expected, deadline_ns);
    if (tls_role == ROLE_READER) {
        static int waits;
        if (waits++ == 0) { /* its first wait, behind the holder */
            WT_STORE(&g_reader_waiting, 1);
            return real(word, expected, deadline_ns);
        }
        /* It decided to wait on a free lock because a writer waits: the
         * preemption. The writer goes in and out meanwhile. */
        WT_STORE(&g_reader_decided, 1);
        await_flag(&g_writer_released, 2 * WEFT_NS_PER_SEC);
        return real(word, expected, deadline_ns);
    }
    WT_STORE(&g_writer_waiting, 1);
    int rc = real(word, expected, deadline_ns);
    /* Woken by the holder's release: take the lock only once the reader has
     * decided (a correct rwlock may never get there: then go on anyway). */
    await_flag(&g_reader_decided, 200 * WEFT_NS_PER_MS);
    return rc;
}

static void *writer_thread(void *arg)
{
    (void)arg;
    tls_role = ROLE_WRITER;
    weft_rwlock_wrlock(&g_rw);
    weft_rwlock_unlock(&g_rw);
    WT_STORE(&g_writer_released, 1);
    return NULL;
}

typedef struct {
    int rc;
    int64_t waited;
} reader_t;

static void *reader_thread(void *arg)
{
    reader_t *r = arg;
    tls_role = ROLE_READER;
    int64_t t0 = wt_now();
    r->rc = weft_rwlock_timedrdlock(&g_rw, t0 + 500 * WEFT_NS_PER_MS);
    r->waited = wt_now() - t0;
    if (r->rc == 0)
        weft_rwlock_unlock(&g_rw);
    return NULL;
}

static void case_reader_sleeps_through_release(void)
{
    weft_rwlock_wrlock(&g_rw); /* the holder */
    pthread_t w = wt_thread(writer_thread, NULL);
    await_flag(&g_writer_waiting, 10 * WEFT_NS_PER_SEC);
    WT_ASSERT(WT_LOAD(&g_writer_waiting));
    reader_t r = {.rc = 1};
    pthread_t rt = wt_thread(reader_thread, &r);
    await_flag(&g_reader_waiting, 10 * WEFT_NS_PER_SEC);
    WT_ASSERT(WT_LOAD(&g_reader_waiting));
    weft_fiber_usleep(WT_SETTLE_US);
    weft_rwlock_unlock(&g_rw);
    wt_thread_join(w);
    wt_thread_join(rt);
    WT_NOTE("rwlock_race: reader returned %d after %.1f ms; lock state %d, writers waiting %d",
            r.rc, wt_ms(r.waited), g_rw.state, g_rw.writers_waiting);
    WT_EQ(g_rw.state, 0); /* the lock was free all along ... */
    WT_ASSERT_MSG(r.rc == 0, "the reader slept through the writer's release and timed out "
                             "on a free rwlock (rc %d)", r.rc); /* ... so it must get it */
}

static const wt_case_t cases[] = {
    WT_CASE(case_reader_sleeps_through_release),
};

int main(int argc, char **argv)
{
    wt_run_cases(argc, argv, cases, WT_NCASES(cases));
    WT_EQ(weft_fiber_shutdown(), 0);
    return 0;
}
