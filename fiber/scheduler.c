/*
 * scheduler.c - workers, run queues, and the life of a fiber.
 *
 * Each worker thread loops in its scheduler context: pick a fiber, switch to
 * it, and when the fiber switches back, carry out what it asked for (requeue
 * it after a yield, release the butex lock it parked under, recycle it after
 * it ended). Doing those steps after the switch, on the scheduler's own
 * stack, is what makes them safe: a fiber is never visible to another worker
 * while it still runs on its stack.
 *
 * Where a ready fiber goes decides the latency of everything above, because
 * on the machines we target waking a thread on another core costs tens of
 * microseconds while a switch costs nanoseconds:
 *  - a fiber readied on a worker (by another fiber, or by the poller in the
 *    idle loop) goes to that worker's own deque, LIFO: it runs next, on the
 *    core whose cache holds what it needs, and nobody is woken;
 *  - other workers steal only work that waits: two or more queued fibers,
 *    or one queued behind a fiber that has run since the thief last looked;
 *  - an idle worker is woken (futex, a syscall) only when stealable work
 *    appears and no other worker is already spinning in search of it;
 *  - an idle worker steals, runs the poller hook without blocking, spins a
 *    little, and only then parks; one parked worker blocks in the poller
 *    instead of on its futex, so an I/O event wakes a worker directly.
 * The timer thread calls weft__sched_monitor() every millisecond while any
 * worker is busy (every 10 ms while none is, since a worker may turn busy
 * right after a look), which catches a worker that sits on queued work while
 * one long fiber runs.
 */
#include "fiber/fiber_internal.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "fiber/clock.h"
#include "fiber/context_internal.h"
#include "fiber/log.h"
#include "fiber/pool.h"
#include "fiber/timer.h"
#include "fiber/butex.h"

#define MAX_WORKERS 256
#define RQ_CAPACITY 4096
#define SIGSTACK_SIZE (64 * 1024)
#define FAIR_TICK 61  /* every so many picks, look at the oldest work first */
/* A thief takes work a busy owner will soon get to only when there is a lot
 * of it; less is stolen only from an owner stuck in one fiber. Moving a
 * short fiber to another core costs more (cache lines, the socket it
 * touches contended from two cores) than running it here a bit later. */
#define STEAL_BACKLOG 64
#define POLL_STALE_NS (100 * WEFT_NS_PER_US)

enum { ACT_NONE, ACT_YIELD, ACT_WAIT, ACT_URGENT, ACT_EXIT };
enum { W_RUNNING, W_SPINNING, W_PARKED, W_POLLING };
enum { RT_NEW, RT_RUNNING, RT_STOPPING, RT_STOPPED };

struct weft__worker {
    weft__wsq_t rq;
    /* Fibers that yielded, oldest first: behind everything in rq, taken in
     * turn. Owner appends and takes; a thief may take under the lock. */
    weft__spinlock_t ylock;
    weft__fiber_t *yhead, *ytail;
    int64_t ycount;
    int index;
    int state;               /* W_*, for the monitor and stats */
    weft__fiber_t *cur;      /* running fiber, NULL in the scheduler */
    void *sched_sp;          /* scheduler context while a fiber runs */
    int action;              /* what the fiber that switched back asked */
    void *action_arg;
    uint64_t nsched;         /* fibers switched to; written by the owner */
    int spin_credit;         /* recent evidence that work returns soon after idling */
    uint64_t tick;
    uint32_t rand;
    _Alignas(64) int32_t park_word; /* 1 once a waker claimed this worker */
    uint64_t mon_nsched;     /* nsched at the monitor's last look */
    uint64_t *seen_nsched;   /* per victim: nsched at this thief's last look */
    pthread_t thread;
    void *sigstack;
    /* Figures, written by the owner only, read racily by stats. */
    int64_t st_started, st_ended, st_switches, st_steals, st_parks, st_wakeups, st_polls;
#ifdef WEFT_ASAN
    const void *asan_stack_bottom;
    size_t asan_stack_size;
#endif
#ifdef WEFT_TSAN
    void *tsan_sched;
#endif
};

static struct {
    int state;                      /* RT_* */
    pthread_mutex_t init_lock;
    int nworkers;
    int requested_workers;
    weft__worker_t *workers;
    /* Ready fibers from threads that are not workers: those resumed (woken
     * by a timer, a pthread) and those new (started by a pthread). */
    pthread_mutex_t rlock;
    struct rlist {
        weft__fiber_t *head, *tail;
    } rwoken, rnew;
    int64_t rcount;
    /* Idle workers. */
    int nspinning;
    uint64_t parked_mask[MAX_WORKERS / 64];
    int nrunning;                   /* workers not idle, for the monitor */
    /* The poller hook. */
    weft_fiber_poller_t poller;
    int poller_set;
    int poller_busy;                /* a worker is inside poll() */
    int poller_blocking;            /* ... and it may block */
    int poller_wake_pending;
    int64_t last_poll_ns;           /* when a worker last ran the poller */
    void (*batch_flush)(void);
    int64_t spin_ns;
    /* Figures of workers that exited, and of fibers started elsewhere. */
    int64_t remote_started;
    struct sigaction old_segv;
} sched = {
    .init_lock = PTHREAD_MUTEX_INITIALIZER,
    .rlock = PTHREAD_MUTEX_INITIALIZER,
};

static void fiber_obj_init(void *obj, uint32_t slot)
{
    weft__fiber_t *f = obj;
    f->slot = slot;
    f->version = 1;
}

static weft_pool_t fiber_pool = WEFT_POOL_INITIALIZER("fiber", weft__fiber_t, fiber_obj_init);

static __thread weft__worker_t *tls_worker __attribute__((tls_model("initial-exec")));

/*
 * The audited thread-local accessor. A fiber can block in one call and
 * resume on another worker thread, but the compiler assumes a function runs
 * on one thread throughout, so it may compute the address of a __thread
 * variable once and reuse it after the call (with the global-dynamic TLS
 * model it caches the __tls_get_addr() result; glibc even marks
 * __errno_location() and pthread_self() const). Reading the worker through
 * this function every time defeats that: it is not inlined, and the empty
 * volatile asm keeps the compiler from proving it pure and merging calls.
 * tests/fiber/test_fls.c fails if this goes wrong.
 */
__attribute__((noinline)) weft__worker_t *weft__current_worker(void)
{
    weft__worker_t *w = tls_worker;
    __asm__ volatile("" : "+r"(w)::"memory");
    return w;
}

weft__fiber_t *weft__current_fiber(void)
{
    weft__worker_t *w = weft__current_worker();
    return w ? w->cur : NULL;
}

/* Figures have one writer (the owner) and racy readers. */
#define STAT_INC(x) __atomic_store_n(&(x), (x) + 1, __ATOMIC_RELAXED)

static inline uint32_t xorshift32(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* ---- the shared queue for wakeups from non-worker threads ---- */

/* Resumed fibers go before new ones: they hold memory (a stack, what they
 * were doing) and often a caller's latency, while a new fiber costs a stack
 * to start. A burst of new fibers must not delay the wakeups behind it. */
static void remote_push(weft__fiber_t *f)
{
    struct rlist *l = f->stack ? &sched.rwoken : &sched.rnew;
    f->next = NULL;
    pthread_mutex_lock(&sched.rlock);
    if (l->tail)
        l->tail->next = f;
    else
        l->head = f;
    l->tail = f;
    __atomic_store_n(&sched.rcount, sched.rcount + 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&sched.rlock);
}

static weft__fiber_t *remote_pop(void)
{
    if (__atomic_load_n(&sched.rcount, __ATOMIC_ACQUIRE) == 0)
        return NULL;
    pthread_mutex_lock(&sched.rlock);
    struct rlist *l = sched.rwoken.head ? &sched.rwoken : &sched.rnew;
    weft__fiber_t *f = l->head;
    if (f) {
        l->head = f->next;
        if (!l->head)
            l->tail = NULL;
        __atomic_store_n(&sched.rcount, sched.rcount - 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&sched.rlock);
    return f;
}

/* ---- waking idle workers ---- */

/* Claims one futex-parked worker, or returns NULL. */
static weft__worker_t *claim_parked(void)
{
    int words = (sched.nworkers + 63) / 64;
    for (int i = 0; i < words; i++) {
        uint64_t m = __atomic_load_n(&sched.parked_mask[i], __ATOMIC_ACQUIRE);
        while (m) {
            int bit = __builtin_ctzll(m);
            if (__atomic_compare_exchange_n(&sched.parked_mask[i], &m, m & ~(1ull << bit),
                                            false, __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE))
                return &sched.workers[i * 64 + bit];
        }
    }
    return NULL;
}

/*
 * Makes sure some worker will look for work that was just queued. Free when a
 * worker is already spinning (it will find the work) or none is idle; one
 * syscall otherwise. The caller published the work before calling: the
 * seq_cst fence pairs with the one a parking worker executes between
 * announcing itself and its last look at the queues, so either it sees the
 * work or we see it parked.
 */
static void wake_idle_worker(void)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&sched.nspinning, __ATOMIC_RELAXED) != 0)
        return;
    int zero = 0;
    if (!__atomic_compare_exchange_n(&sched.nspinning, &zero, 1, false, __ATOMIC_SEQ_CST,
                                     __ATOMIC_RELAXED))
        return;
    /* The woken worker starts out spinning: we counted it already. */
    weft__worker_t *v = claim_parked();
    if (v) {
        __atomic_store_n(&v->park_word, 1, __ATOMIC_RELEASE);
        weft__futex_wake(&v->park_word, 1);
        return;
    }
    __atomic_fetch_sub(&sched.nspinning, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&sched.poller_blocking, __ATOMIC_SEQ_CST) &&
        !__atomic_exchange_n(&sched.poller_wake_pending, 1, __ATOMIC_ACQ_REL))
        sched.poller.wake(sched.poller.arg);
}

static void yield_push(weft__worker_t *w, weft__fiber_t *f)
{
    f->next = NULL;
    weft__spin_lock(&w->ylock);
    if (w->ytail)
        w->ytail->next = f;
    else
        w->yhead = f;
    w->ytail = f;
    __atomic_store_n(&w->ycount, w->ycount + 1, __ATOMIC_RELEASE);
    weft__spin_unlock(&w->ylock);
}

static weft__fiber_t *yield_pop(weft__worker_t *w)
{
    if (!__atomic_load_n(&w->ycount, __ATOMIC_ACQUIRE))
        return NULL;
    weft__spin_lock(&w->ylock);
    weft__fiber_t *f = w->yhead;
    if (f) {
        w->yhead = f->next;
        if (!w->yhead)
            w->ytail = NULL;
        __atomic_store_n(&w->ycount, w->ycount - 1, __ATOMIC_RELEASE);
    }
    weft__spin_unlock(&w->ylock);
    return f;
}

/* Queues f behind the other yielders and returns the oldest (f itself when
 * it was alone): one lock round trip for both. */
static weft__fiber_t *yield_swap(weft__worker_t *w, weft__fiber_t *f)
{
    if (!__atomic_load_n(&w->ycount, __ATOMIC_ACQUIRE))
        return f; /* nobody else yielded: no list to touch */
    f->next = NULL;
    weft__spin_lock(&w->ylock);
    weft__fiber_t *head = w->yhead;
    if (!head) {
        weft__spin_unlock(&w->ylock);
        return f;
    }
    w->ytail->next = f;
    w->ytail = f;
    w->yhead = head->next;
    weft__spin_unlock(&w->ylock);
    return head;
}

/* Fibers waiting on a worker, queued or yielded. */
static int64_t queued(weft__worker_t *w)
{
    return weft__wsq_size(&w->rq) + __atomic_load_n(&w->ycount, __ATOMIC_RELAXED);
}

/* Work another worker may take: a backlog (STEAL_BACKLOG), or any waiting
 * fiber whose owner has kept running one fiber since this thief last
 * looked. */
static bool stealable(weft__worker_t *thief, weft__worker_t *v)
{
    int64_t n = queued(v);
    if (n >= STEAL_BACKLOG)
        return true;
    if (n == 0)
        return false;
    uint64_t ns = __atomic_load_n(&v->nsched, __ATOMIC_RELAXED);
    if (!thief)
        return false;
    bool stuck = thief->seen_nsched[v->index] == ns;
    thief->seen_nsched[v->index] = ns;
    return stuck;
}

static void push_local(weft__worker_t *w, weft__fiber_t *f, bool signal)
{
    if (!weft__wsq_push(&w->rq, f)) {
        remote_push(f);
        wake_idle_worker();
        return;
    }
    if (signal && weft__wsq_size(&w->rq) >= STEAL_BACKLOG)
        wake_idle_worker();
}

int64_t weft__worker_backlog(void)
{
    weft__worker_t *w = weft__current_worker();
    return w ? queued(w) : 0;
}

static inline void batch_flush(void)
{
    void (*flush)(void) = __atomic_load_n(&sched.batch_flush, __ATOMIC_ACQUIRE);
    if (flush)
        flush();
}

int weft_fiber_set_batch_hook(void (*flush)(void))
{
    void (*none)(void) = NULL;
    return flush && __atomic_compare_exchange_n(&sched.batch_flush, &none, flush, false,
                                                __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)
               ? 0
               : -EBUSY;
}

void weft__fiber_ready(weft__fiber_t *f)
{
    weft__worker_t *w = weft__current_worker();
    if (w) {
        push_local(w, f, true);
    } else {
        remote_push(f);
        wake_idle_worker();
    }
}

void weft_fiber_flush(void)
{
    weft__worker_t *w = weft__current_worker();
    if (!w || weft__wsq_size(&w->rq) > 0 || __atomic_load_n(&sched.rcount, __ATOMIC_RELAXED))
        wake_idle_worker();
}

/* ---- switching ---- */

static void fiber_entry(void *arg);

static inline void switch_to_fiber(weft__worker_t *w, weft__fiber_t *f)
{
    w->cur = f;
    __atomic_store_n(&w->nsched, w->nsched + 1, __ATOMIC_RELAXED);
    STAT_INC(w->st_switches);
#ifdef WEFT_TSAN
    __tsan_switch_to_fiber(f->stack->tsan_fiber, 0);
#endif
#ifdef WEFT_ASAN
    void *fake = NULL;
    __sanitizer_start_switch_fiber(&fake, f->stack->lo, (size_t)(f->stack->hi - f->stack->lo));
#endif
    weft__ctx_switch(&w->sched_sp, f->sp);
#ifdef WEFT_ASAN
    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
    w->cur = NULL;
}

/* Called on a fiber's stack right after a switch lands there. */
static inline void fiber_landed(weft__fiber_t *f)
{
#ifdef WEFT_ASAN
    weft__worker_t *w = weft__current_worker();
    __sanitizer_finish_switch_fiber(f->asan_fake_stack, &w->asan_stack_bottom,
                                    &w->asan_stack_size);
#else
    (void)f;
#endif
}

/* Switches from the running fiber back to its worker's scheduler, which
 * performs `action`. Returns when the fiber is resumed, possibly on another
 * worker: callers must not keep a worker pointer across this call. */
static void switch_to_scheduler(weft__fiber_t *f, int action, void *arg)
{
    weft__worker_t *w = weft__current_worker();
    w->action = action;
    w->action_arg = arg;
#ifdef WEFT_TSAN
    __tsan_switch_to_fiber(w->tsan_sched, 0);
#endif
#ifdef WEFT_ASAN
    __sanitizer_start_switch_fiber(action == ACT_EXIT ? NULL : &f->asan_fake_stack,
                                   w->asan_stack_bottom, w->asan_stack_size);
#endif
    weft__ctx_switch(&f->sp, w->sched_sp);
    fiber_landed(f);
}

static bool prepare_stack(weft__fiber_t *f)
{
    if (f->stack)
        return true;
    f->stack = weft__stack_get(f->stack_class, f->stack_bytes);
    if (!f->stack)
        return false;
#ifdef WEFT_ASAN
    f->asan_fake_stack = NULL;
#endif
    f->sp = weft__ctx_make(f->stack->hi, fiber_entry, f);
    return true;
}

static void fiber_recycle(weft__worker_t *w, weft__fiber_t *f)
{
    weft__stack_put(f->stack);
    f->stack = NULL;
    STAT_INC(w->st_ended);
    weft_pool_put(&fiber_pool, f->slot);
}

/* Carries out what the fiber that just switched back asked for; returns the
 * fiber to run next if that is already decided. */
static weft__fiber_t *after_switch(weft__worker_t *w, weft__fiber_t *f)
{
    int action = w->action;
    w->action = ACT_NONE;
    switch (action) {
    case ACT_YIELD:
        /* Behind everything that waits here, new fibers and other yielders
         * alike: yielders take turns, and a fiber started or woken a moment
         * ago still runs first. No wakeup: a yielder is not new work. */
        {
            weft__fiber_t *next = weft__wsq_pop(&w->rq) ?: remote_pop();
            if (!next)
                return yield_swap(w, f);
            yield_push(w, f);
            return next;
        }
    case ACT_WAIT:
        weft__butex_parked(w->action_arg);
        return NULL;
    case ACT_URGENT:
        push_local(w, f, true);
        return w->action_arg;
    case ACT_EXIT:
        fiber_recycle(w, f);
        return NULL;
    default:
        return NULL;
    }
}

/* Calls the poller, which the caller owns (poller_busy), and gives it up.
 * Any poll may consume a wake meant for a blocked one (the wake event is
 * just readable until somebody reads it), so every poll, not only the
 * blocking one, clears poller_wake_pending after it returns: a flag left set
 * would make later wakers believe a wake is still on its way and skip
 * theirs, and the next worker to block in the poller would sleep through
 * work queued from other threads. */
static int call_poller(weft__worker_t *w, int timeout_ms)
{
    STAT_INC(w->st_polls);
    int n = sched.poller.poll(sched.poller.arg, timeout_ms);
    __atomic_store_n(&sched.last_poll_ns, weft_clock_ns(), __ATOMIC_RELAXED);
    __atomic_store_n(&sched.poller_blocking, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&sched.poller_wake_pending, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&sched.poller_busy, 0, __ATOMIC_RELEASE);
    return n;
}

/* Runs the poller if no other worker is in it. Returns events handled, or
 * -1 if it did not poll (no poller, or another worker is in it). */
static int poll_once(weft__worker_t *w, int timeout_ms)
{
    if (!__atomic_load_n(&sched.poller_set, __ATOMIC_ACQUIRE) ||
        __atomic_load_n(&sched.poller_busy, __ATOMIC_RELAXED) ||
        __atomic_exchange_n(&sched.poller_busy, 1, __ATOMIC_ACQUIRE))
        return -1;
    return call_poller(w, timeout_ms);
}

/* Busy workers never reach the idle loop, so now and then one of them polls
 * for I/O, lest sockets wait behind a queue of fibers that never empties,
 * and fires the timers that the timer thread is late for: with every core
 * busy it may wait a scheduler timeslice for a CPU. */
static void housekeep(weft__worker_t *w)
{
    bool poller = __atomic_load_n(&sched.poller_set, __ATOMIC_RELAXED);
    if (!poller && !weft__timer_pending())
        return; /* nothing to look at: spare the clock */
    int64_t now = weft_clock_ns();
    weft__timer_run_due(now);
    if (!poller)
        return;
    int64_t last = __atomic_load_n(&sched.last_poll_ns, __ATOMIC_RELAXED);
    if (now - last >= POLL_STALE_NS)
        poll_once(w, 0);
}

static void run_fibers(weft__worker_t *w, weft__fiber_t *f)
{
    while (f) {
        if (!prepare_stack(f)) {
            /* Out of stacks: let it wait for one to come back. */
            remote_push(f);
            weft__cpu_relax();
            return;
        }
        switch_to_fiber(w, f);
        f = after_switch(w, f);
        /* Batched work and I/O must not wait on a worker that never runs
         * dry (fibers yielding to each other, say). */
        if (++w->tick % FAIR_TICK == 0) {
            batch_flush();
            housekeep(w);
        }
    }
}

/* ---- finding work ---- */

static weft__fiber_t *steal_round(weft__worker_t *w)
{
    int n = sched.nworkers;
    if (n <= 1)
        return NULL;
    int start = (int)(xorshift32(&w->rand) % (uint32_t)n);
    for (int i = 0; i < n; i++) {
        weft__worker_t *v = &sched.workers[(start + i) % n];
        if (v == w || !stealable(w, v))
            continue;
        weft__fiber_t *f = weft__wsq_steal(&v->rq) ?: yield_pop(v);
        if (f) {
            STAT_INC(w->st_steals);
            return f;
        }
    }
    return NULL;
}

static bool work_visible(weft__worker_t *w)
{
    if (__atomic_load_n(&sched.rcount, __ATOMIC_ACQUIRE) || queued(w))
        return true;
    for (int i = 0; i < sched.nworkers; i++) {
        weft__worker_t *v = &sched.workers[i];
        if (v != w && stealable(w, v))
            return true;
    }
    return false;
}

static void set_state(weft__worker_t *w, int state)
{
    int old = w->state;
    if (old == state)
        return;
    if (old == W_RUNNING)
        __atomic_fetch_sub(&sched.nrunning, 1, __ATOMIC_RELAXED);
    else if (state == W_RUNNING)
        __atomic_fetch_add(&sched.nrunning, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&w->state, state, __ATOMIC_RELAXED);
}

static void park_bit(weft__worker_t *w, bool set)
{
    uint64_t bit = 1ull << (w->index % 64);
    if (set)
        __atomic_fetch_or(&sched.parked_mask[w->index / 64], bit, __ATOMIC_SEQ_CST);
    else
        __atomic_fetch_and(&sched.parked_mask[w->index / 64], ~bit, __ATOMIC_SEQ_CST);
}

/* Removes our own parked bit; false if a waker claimed us first, in which
 * case it has counted us as spinning and will set park_word. */
static bool unpark_self(weft__worker_t *w)
{
    uint64_t bit = 1ull << (w->index % 64);
    uint64_t old = __atomic_fetch_and(&sched.parked_mask[w->index / 64], ~bit, __ATOMIC_SEQ_CST);
    return (old & bit) != 0;
}

static void wait_claimed(weft__worker_t *w)
{
    while (!__atomic_load_n(&w->park_word, __ATOMIC_ACQUIRE))
        weft__futex_wait(&w->park_word, 0, -1);
    __atomic_store_n(&w->park_word, 0, __ATOMIC_RELAXED);
}

/*
 * Blocks until there may be work. Called while counted as spinning; returns
 * counted as spinning again. Either parks on the futex until a waker claims
 * this worker, or, if no other worker is in the poller, blocks in it.
 */
static void park(weft__worker_t *w)
{
    bool use_poller = __atomic_load_n(&sched.poller_set, __ATOMIC_ACQUIRE) &&
                      !__atomic_exchange_n(&sched.poller_busy, 1, __ATOMIC_ACQUIRE);
    set_state(w, use_poller ? W_POLLING : W_PARKED);
    if (!use_poller)
        park_bit(w, true);
    else
        __atomic_store_n(&sched.poller_blocking, 1, __ATOMIC_SEQ_CST);
    __atomic_fetch_sub(&sched.nspinning, 1, __ATOMIC_SEQ_CST);

    /* Last look, after announcing ourselves: see wake_idle_worker(). */
    if (work_visible(w) || __atomic_load_n(&sched.state, __ATOMIC_ACQUIRE) != RT_RUNNING) {
        if (use_poller) {
            __atomic_store_n(&sched.poller_blocking, 0, __ATOMIC_SEQ_CST);
            __atomic_store_n(&sched.poller_busy, 0, __ATOMIC_RELEASE);
            __atomic_fetch_add(&sched.nspinning, 1, __ATOMIC_SEQ_CST);
        } else if (unpark_self(w)) {
            __atomic_fetch_add(&sched.nspinning, 1, __ATOMIC_SEQ_CST);
        } else {
            wait_claimed(w);
        }
        set_state(w, W_SPINNING);
        return;
    }

    STAT_INC(w->st_parks);
    if (use_poller) {
        call_poller(w, -1);
        __atomic_fetch_add(&sched.nspinning, 1, __ATOMIC_SEQ_CST);
    } else {
        wait_claimed(w);
    }
    STAT_INC(w->st_wakeups);
    set_state(w, W_SPINNING);
}

/* Called when a spinning worker found work: if it was the last spinner and
 * more work is waiting, wake another worker to look for it. */
static void stop_spinning(weft__worker_t *w)
{
    set_state(w, W_RUNNING);
    if (__atomic_sub_fetch(&sched.nspinning, 1, __ATOMIC_SEQ_CST) == 0 &&
        (weft__wsq_size(&w->rq) >= STEAL_BACKLOG ||
         __atomic_load_n(&sched.rcount, __ATOMIC_RELAXED)))
        wake_idle_worker();
}

/* How long an idle worker spins before it parks. Spinning pays when work
 * is about to appear, where this worker can take it without a wakeup (tens
 * of microseconds of kernel latency on our machines); it wastes a CPU that
 * someone else (often the other end of a connection, on the same machine)
 * could use when no work comes. So:
 *  - as in Go's scheduler, no more workers spin than run: they wait for
 *    work the running ones will queue;
 *  - beyond that, one lone worker may spin (polling for I/O) while every
 *    worker is idle, but only on evidence: its recent idle spells ended in
 *    work within a spin's length (a request/reply exchange, say). A spin
 *    that finds nothing spends that credit; a long quiet spell earns none.
 */
#define SPIN_CREDIT_MAX 8

static int64_t spin_budget(const weft__worker_t *w)
{
    int spinning = __atomic_load_n(&sched.nspinning, __ATOMIC_RELAXED);
    int running = __atomic_load_n(&sched.nrunning, __ATOMIC_RELAXED);
    if (spinning <= running || (spinning == 1 && w->spin_credit > 0))
        return sched.spin_ns;
    return 0;
}

static void spin_credit_add(weft__worker_t *w, int delta)
{
    int c = w->spin_credit + delta;
    w->spin_credit = c < 0 ? 0 : c > SPIN_CREDIT_MAX ? SPIN_CREDIT_MAX : c;
}

/* The idle loop: steal, poll, spin, park. NULL means the runtime stops. */
static weft__fiber_t *find_idle_work(weft__worker_t *w)
{
    __atomic_fetch_add(&sched.nspinning, 1, __ATOMIC_SEQ_CST);
    set_state(w, W_SPINNING);
    for (;;) {
        int64_t budget = spin_budget(w);
        int64_t spin_until = weft_clock_ns() + budget;
        /* Alone, the poller is where work comes from: ask it every round. */
        int poll_mask = __atomic_load_n(&sched.nrunning, __ATOMIC_RELAXED) ? 3 : 0;
        for (int round = 0;; round++) {
            weft__fiber_t *f = weft__wsq_pop(&w->rq) ?: yield_pop(w);
            if (!f)
                f = remote_pop();
            if (!f)
                f = steal_round(w);
            int polled = !f && (round & poll_mask) == 0 ? poll_once(w, 0) : -1;
            if (polled > 0)
                f = weft__wsq_pop(&w->rq);
            if (f) {
                if (budget)
                    spin_credit_add(w, 1);
                stop_spinning(w);
                return f;
            }
            if (__atomic_load_n(&sched.state, __ATOMIC_ACQUIRE) != RT_RUNNING &&
                !work_visible(w)) {
                __atomic_fetch_sub(&sched.nspinning, 1, __ATOMIC_SEQ_CST);
                set_state(w, W_RUNNING);
                return NULL;
            }
            if ((round & 7) == 7) {
                int64_t now = weft_clock_ns();
                weft__timer_run_due(now);
                if (now >= spin_until)
                    break;
            }
            /* A poll is a system call, pause enough: pausing more would
             * only delay the next event (3% of a one-in-flight round trip). */
            if (polled < 0)
                for (int i = 0; i < 32; i++)
                    weft__cpu_relax();
        }
        if (budget)
            spin_credit_add(w, -2);
        int64_t parked_at = weft_clock_ns();
        park(w);
        /* Woken again within a spin's length: spinning would have paid. */
        if (weft_clock_ns() - parked_at < sched.spin_ns)
            spin_credit_add(w, 1);
    }
}

static weft__fiber_t *next_fiber(weft__worker_t *w)
{
    weft__fiber_t *f;
    if (w->tick % FAIR_TICK == 0) {
        /* LIFO is fast but unfair: now and then take the oldest. */
        f = remote_pop() ?: yield_pop(w) ?: weft__wsq_steal(&w->rq);
        if (f)
            return f;
    }
    f = weft__wsq_pop(&w->rq) ?: remote_pop() ?: yield_pop(w);
    if (f)
        return f;
    /* Dry: finish what the fibers that just ran batched, which may also
     * start fibers (a writer that must wait for the kernel). */
    batch_flush();
    f = weft__wsq_pop(&w->rq);
    return f ? f : find_idle_work(w);
}

/* ---- stack overflow reports ---- */

static void segv_handler(int sig, siginfo_t *info, void *uctx)
{
    weft__worker_t *w = tls_worker;
    weft__fiber_t *f = w ? w->cur : NULL;
    if (f && weft__stack_in_guard(f->stack, info->si_addr)) {
        char buf[256];
        int n = snprintf(buf, sizeof(buf),
                         "weft: fiber %#llx \"%s\" overflowed its stack of %zu bytes "
                         "(fault at %p); give it a larger stack_size\n",
                         (unsigned long long)weft__fiber_id(f), f->name ? f->name : "?",
                         (size_t)(f->stack->hi - f->stack->lo), info->si_addr);
        ssize_t r = write(STDERR_FILENO, buf, (size_t)n);
        (void)r;
        signal(SIGABRT, SIG_DFL);
        abort();
    }
    /* Not ours: hand it to whoever was there before (a sanitizer, the
     * default action). */
    if (sched.old_segv.sa_flags & SA_SIGINFO) {
        sched.old_segv.sa_sigaction(sig, info, uctx);
    } else if (sched.old_segv.sa_handler != SIG_DFL && sched.old_segv.sa_handler != SIG_IGN) {
        sched.old_segv.sa_handler(sig);
    } else {
        signal(SIGSEGV, SIG_DFL);
        /* Returning re-executes the faulting access, now fatal. */
    }
}

static void install_segv_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = segv_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &sched.old_segv);
}

static void worker_sigstack(weft__worker_t *w)
{
    w->sigstack = mmap(NULL, SIGSTACK_SIZE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (w->sigstack == MAP_FAILED) {
        w->sigstack = NULL;
        return;
    }
    stack_t ss = {.ss_sp = w->sigstack, .ss_size = SIGSTACK_SIZE, .ss_flags = 0};
    sigaltstack(&ss, NULL);
}

/* ---- workers ---- */

static void *worker_main(void *arg)
{
    weft__worker_t *w = arg;
    tls_worker = w;
    worker_sigstack(w);
#ifdef WEFT_TSAN
    w->tsan_sched = __tsan_get_current_fiber();
#endif
    char name[16];
    snprintf(name, sizeof(name), "weft-worker-%d", w->index);
    pthread_setname_np(pthread_self(), name);
    for (;;) {
        weft__fiber_t *f = next_fiber(w);
        if (!f)
            break;
        run_fibers(w, f);
    }
    if (w->sigstack) {
        stack_t ss = {.ss_flags = SS_DISABLE};
        sigaltstack(&ss, NULL);
        munmap(w->sigstack, SIGSTACK_SIZE);
    }
    tls_worker = NULL;
    return NULL;
}

static int default_workers(void)
{
    const char *env = getenv("WEFT_WORKERS");
    if (env && atoi(env) > 0)
        return atoi(env) > MAX_WORKERS ? MAX_WORKERS : atoi(env);
    if (sched.requested_workers > 0)
        return sched.requested_workers;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set) > MAX_WORKERS ? MAX_WORKERS : CPU_COUNT(&set);
    return 1;
}

static int runtime_start_locked(void)
{
    int n = default_workers();
    const char *spin = getenv("WEFT_SPIN_US");
    sched.spin_ns = (spin ? atoll(spin) : 50) * WEFT_NS_PER_US;
    sched.workers = aligned_alloc(64, sizeof(weft__worker_t) * (size_t)n);
    if (!sched.workers)
        return -ENOMEM;
    memset(sched.workers, 0, sizeof(weft__worker_t) * (size_t)n);
    sched.nworkers = n;
    for (int i = 0; i < n; i++) {
        weft__worker_t *w = &sched.workers[i];
        w->index = i;
        w->rand = 0x9e3779b9u * (uint32_t)(i + 1);
        w->state = W_RUNNING;
        w->seen_nsched = calloc((size_t)n, sizeof(uint64_t));
        if (weft__wsq_init(&w->rq, RQ_CAPACITY) != 0 || !w->seen_nsched)
            return -ENOMEM;
    }
    sched.nrunning = n;
    install_segv_handler();
    __atomic_store_n(&sched.state, RT_RUNNING, __ATOMIC_RELEASE);
    for (int i = 0; i < n; i++) {
        int rc = pthread_create(&sched.workers[i].thread, NULL, worker_main, &sched.workers[i]);
        if (rc != 0) {
            WEFT_LOG_ERROR("cannot start worker %d: %s", i, strerror(rc));
            abort();
        }
    }
    /* The monitor runs on the timer thread, which timers alone would start
     * only when first used; without it a worker sits on queued work for as
     * long as one fiber runs. */
    int rc = n > 1 ? weft__timer_start() : 0;
    if (rc != 0)
        WEFT_LOG_WARN("cannot start the timer thread: %s", strerror(-rc));
    return 0;
}

int weft__runtime_ensure(void)
{
    int st = __atomic_load_n(&sched.state, __ATOMIC_ACQUIRE);
    if (__builtin_expect(st == RT_RUNNING, 1))
        return 0;
    if (st != RT_NEW)
        return -ESHUTDOWN;
    pthread_mutex_lock(&sched.init_lock);
    int rc = 0;
    if (sched.state == RT_NEW)
        rc = runtime_start_locked();
    else if (sched.state != RT_RUNNING)
        rc = -ESHUTDOWN;
    pthread_mutex_unlock(&sched.init_lock);
    return rc;
}

int weft_fiber_init(void)
{
    return weft__runtime_ensure();
}

int weft_fiber_set_workers(int n)
{
    if (n <= 0 || n > MAX_WORKERS)
        return -EINVAL;
    pthread_mutex_lock(&sched.init_lock);
    int rc = sched.state == RT_NEW ? 0 : -EBUSY;
    if (rc == 0)
        sched.requested_workers = n;
    pthread_mutex_unlock(&sched.init_lock);
    return rc;
}

int weft_fiber_workers(void)
{
    /* A question, not a reason to start the runtime. */
    pthread_mutex_lock(&sched.init_lock);
    int n = sched.state == RT_NEW ? default_workers() : sched.nworkers;
    pthread_mutex_unlock(&sched.init_lock);
    return n;
}

int weft_fiber_shutdown(void)
{
    if (weft__current_worker())
        return -EPERM;
    pthread_mutex_lock(&sched.init_lock);
    if (sched.state != RT_RUNNING) {
        /* No workers to stop, but timers may have been used on their own. */
        weft__timer_shutdown();
        sched.state = RT_STOPPED;
        pthread_mutex_unlock(&sched.init_lock);
        return 0;
    }
    __atomic_store_n(&sched.state, RT_STOPPING, __ATOMIC_SEQ_CST);
    for (int i = 0; i < sched.nworkers; i++) {
        weft__worker_t *w = &sched.workers[i];
        if (unpark_self(w)) { /* claims it, as a waker would */
            __atomic_fetch_add(&sched.nspinning, 1, __ATOMIC_SEQ_CST);
            __atomic_store_n(&w->park_word, 1, __ATOMIC_RELEASE);
            weft__futex_wake(&w->park_word, 1);
        }
    }
    if (__atomic_load_n(&sched.poller_set, __ATOMIC_ACQUIRE))
        sched.poller.wake(sched.poller.arg);
    for (int i = 0; i < sched.nworkers; i++)
        pthread_join(sched.workers[i].thread, NULL);
    weft__timer_shutdown();
    __atomic_store_n(&sched.state, RT_STOPPED, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&sched.init_lock);
    return 0;
}

int weft_fiber_set_poller(const weft_fiber_poller_t *poller)
{
    if (!poller || !poller->poll || !poller->wake)
        return -EINVAL;
    pthread_mutex_lock(&sched.init_lock);
    int rc = sched.poller_set ? -EBUSY : 0;
    if (rc == 0) {
        sched.poller = *poller;
        __atomic_store_n(&sched.poller_set, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&sched.init_lock);
    /* Parked workers may now serve the poller. */
    if (rc == 0 && sched.state == RT_RUNNING)
        wake_idle_worker();
    return rc;
}

int64_t weft__sched_monitor(void)
{
    if (__atomic_load_n(&sched.state, __ATOMIC_ACQUIRE) != RT_RUNNING)
        return -1;
    bool busy = false, wake = false;
    for (int i = 0; i < sched.nworkers; i++) {
        weft__worker_t *v = &sched.workers[i];
        if (__atomic_load_n(&v->state, __ATOMIC_RELAXED) != W_RUNNING)
            continue;
        busy = true;
        uint64_t ns = __atomic_load_n(&v->nsched, __ATOMIC_RELAXED);
        /* One fiber has run since the last tick: work queued behind it, or
         * I/O nobody polls, waits for it. */
        if (ns == v->mon_nsched &&
            (queued(v) > 0 ||
             (__atomic_load_n(&sched.poller_set, __ATOMIC_RELAXED) &&
              !__atomic_load_n(&sched.poller_busy, __ATOMIC_RELAXED))))
            wake = true;
        v->mon_nsched = ns;
    }
    if (wake)
        wake_idle_worker();
    /* Idle, look again soon anyway: telling the monitor that a worker turned
     * busy would cost the wake path a syscall, so the bound on how long work
     * can sit behind a long fiber after a quiet spell is this tick. */
    return busy ? WEFT_NS_PER_MS : 10 * WEFT_NS_PER_MS;
}

/* ---- fibers ---- */

static void fiber_entry(void *arg)
{
    weft__fiber_t *f = arg;
    fiber_landed(f);
    f->fn(f->arg);
    if (f->fls)
        weft__fls_destroy(&f->fls);
    /* The version moves on before joiners are woken: a joiner that wakes
     * spuriously sees the new value and returns. */
    weft__spin_lock(&f->lock);
    int32_t next = f->version + 1;
    __atomic_store_n(&f->version, next ? next : 1, __ATOMIC_RELEASE);
    weft__spin_unlock(&f->lock);
    weft_butex_wake(&f->version, INT_MAX);
    switch_to_scheduler(f, ACT_EXIT, NULL);
    __builtin_unreachable();
}

static int fiber_create(weft__fiber_t **out, weft_fiber_t *id, const weft_fiber_attr_t *attr,
                        weft_fiber_fn *fn, void *arg)
{
    int rc = weft__runtime_ensure();
    if (rc != 0)
        return rc;
    uint32_t slot;
    weft__fiber_t *f = weft_pool_get(&fiber_pool, &slot);
    if (!f)
        return -ENOMEM;
    f->fn = fn;
    f->arg = arg;
    f->stack = NULL;
    f->fls = NULL;
    f->interrupted = 0;
    f->waiter = NULL;
    f->name = attr ? attr->name : NULL;
    size_t ss = attr ? attr->stack_size : 0;
    f->stack_class = weft__stack_class(ss);
    f->stack_bytes = ss;
    if (id)
        *id = weft__fiber_id(f);
    *out = f;
    return 0;
}

static int fiber_start(weft_fiber_t *id, const weft_fiber_attr_t *attr, weft_fiber_fn *fn,
                       void *arg, bool urgent)
{
    weft__fiber_t *f;
    int rc = fiber_create(&f, id, attr, fn, arg);
    if (rc != 0)
        return rc;
    weft__worker_t *w = weft__current_worker();
    if (!w) {
        __atomic_fetch_add(&sched.remote_started, 1, __ATOMIC_RELAXED);
        remote_push(f);
        if (!(attr && (attr->flags & WEFT_FIBER_NOSIGNAL)))
            wake_idle_worker();
        return 0;
    }
    STAT_INC(w->st_started);
    if (urgent && w->cur) {
        switch_to_scheduler(w->cur, ACT_URGENT, f);
        return 0;
    }
    push_local(w, f, !(attr && (attr->flags & WEFT_FIBER_NOSIGNAL)));
    return 0;
}

int weft_fiber_start_background(weft_fiber_t *id, const weft_fiber_attr_t *attr,
                                weft_fiber_fn *fn, void *arg)
{
    return fiber_start(id, attr, fn, arg, false);
}

int weft_fiber_start_urgent(weft_fiber_t *id, const weft_fiber_attr_t *attr, weft_fiber_fn *fn,
                            void *arg)
{
    return fiber_start(id, attr, fn, arg, true);
}

/* The fiber behind an id, whether or not the id is still current. */
static weft__fiber_t *fiber_at(weft_fiber_t id)
{
    return weft_pool_at(&fiber_pool, (uint32_t)id);
}

static int32_t id_version(weft_fiber_t id)
{
    return (int32_t)(id >> 32);
}

int weft_fiber_join(weft_fiber_t id)
{
    if (id == 0)
        return -EINVAL;
    weft__fiber_t *f = fiber_at(id);
    if (!f)
        return 0;
    if (f == weft__current_fiber() && f->version == id_version(id))
        return -EDEADLK;
    int32_t v = id_version(id);
    while (__atomic_load_n(&f->version, __ATOMIC_ACQUIRE) == v)
        weft_butex_wait(&f->version, v, -1);
    return 0;
}

bool weft_fiber_alive(weft_fiber_t id)
{
    weft__fiber_t *f = id ? fiber_at(id) : NULL;
    return f && __atomic_load_n(&f->version, __ATOMIC_ACQUIRE) == id_version(id);
}

weft_fiber_t weft_fiber_self(void)
{
    weft__fiber_t *f = weft__current_fiber();
    return f ? weft__fiber_id(f) : 0;
}

bool weft_fiber_in_fiber(void)
{
    return weft__current_fiber() != NULL;
}

int weft_fiber_worker_index(void)
{
    weft__worker_t *w = weft__current_worker();
    return w ? w->index : -1;
}

void weft_fiber_yield(void)
{
    weft__fiber_t *f = weft__current_fiber();
    if (!f) {
        sched_yield();
        return;
    }
    switch_to_scheduler(f, ACT_YIELD, NULL);
}

void weft__fiber_block(weft__fiber_t *f, weft__waiter_t *wt)
{
    switch_to_scheduler(f, ACT_WAIT, wt);
}

int weft_fiber_sleep_until(int64_t deadline_ns)
{
    weft__fiber_t *f = weft__current_fiber();
    if (!f) {
        struct timespec ts = {deadline_ns / WEFT_NS_PER_SEC, deadline_ns % WEFT_NS_PER_SEC};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
        return 0;
    }
    for (;;) {
        int rc = weft_butex_wait(&f->sleep_word, 0, deadline_ns);
        if (rc == -ETIMEDOUT)
            return 0;
        if (rc == -EINTR)
            return rc;
        /* Nobody wakes sleep_word except by mistake: sleep on. */
    }
}

int weft_fiber_usleep(uint64_t us)
{
    return weft_fiber_sleep_until(weft_clock_ns() + (int64_t)us * WEFT_NS_PER_US);
}

int weft_fiber_interrupt(weft_fiber_t id)
{
    if (id == 0)
        return -EINVAL;
    weft__fiber_t *f = fiber_at(id);
    if (!f)
        return -ESRCH;
    weft__spin_lock(&f->lock);
    if (f->version != id_version(id)) {
        weft__spin_unlock(&f->lock);
        return -ESRCH;
    }
    f->interrupted = 1;
    weft__butex_interrupt(f); /* wakes it if it waits; lock held */
    weft__spin_unlock(&f->lock);
    return 0;
}

void weft_fiber_stats(weft_fiber_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    int n = __atomic_load_n(&sched.state, __ATOMIC_ACQUIRE) == RT_NEW ? 0 : sched.nworkers;
    int64_t ended = 0;
    out->fibers_started = __atomic_load_n(&sched.remote_started, __ATOMIC_RELAXED);
    for (int i = 0; i < n; i++) {
        weft__worker_t *w = &sched.workers[i];
        out->fibers_started += __atomic_load_n(&w->st_started, __ATOMIC_RELAXED);
        ended += __atomic_load_n(&w->st_ended, __ATOMIC_RELAXED);
        out->switches += __atomic_load_n(&w->st_switches, __ATOMIC_RELAXED);
        out->steals += __atomic_load_n(&w->st_steals, __ATOMIC_RELAXED);
        out->parks += __atomic_load_n(&w->st_parks, __ATOMIC_RELAXED);
        out->wakeups += __atomic_load_n(&w->st_wakeups, __ATOMIC_RELAXED);
        out->polls += __atomic_load_n(&w->st_polls, __ATOMIC_RELAXED);
    }
    /* Started and ended are read at different moments: never below 0. */
    out->fibers_alive = out->fibers_started > ended ? out->fibers_started - ended : 0;
    out->workers = n;
}
