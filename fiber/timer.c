/*
 * timer.c - timers: a timer thread, helped by the workers.
 *
 * Adding a timer pushes it onto one of a few lock-free lists (chosen per
 * thread, so threads rarely share a cache line) and lowers `due`, the
 * earliest pending deadline, waking the timer thread only if it sleeps
 * beyond the new timer. No lock on that path: an adder preempted mid-add
 * must not stall the thread every timer depends on.
 *
 * Whoever holds run_lock owns a binary heap: it empties the lists into the
 * heap and runs what is due. The timer thread does so each round and then
 * sleeps until `due` or an earlier arrival. Workers do it too, between two
 * fibers, when they notice `due` has passed: with every core busy the timer
 * thread waits a scheduler timeslice (milliseconds) for a CPU, but a busy
 * worker passes by every few microseconds. So timers fire on time when the
 * machine is loaded, and still fire when every worker is stuck in a long
 * fiber.
 *
 * A timer's state and version share one 64-bit word, so cancel is one CAS
 * that can never hit a recycled timer. Cancelled timers stay where they are
 * and are dropped when the timer thread meets them; cancelling costs no
 * heap surgery and no wakeup.
 */
#include "fiber/timer.h"
#include "fiber/fiber_internal.h"
#include "fiber/log.h"
#include "fiber/pool.h"
#include "fiber/stack_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#define NBUCKETS 16

/* How late the timer thread must be before a worker runs its timers: it is
 * usually on time, and then the work stays off the workers. */
#define HELP_LATE_NS (200 * 1000)

/* Stack trimming (see trim_stacks): how much time it may take, how far the
 * next timer must be, and how often it runs. */
#define TRIM_BUDGET_NS (200 * 1000)
#define TRIM_MARGIN_NS (1000 * 1000)
#define TRIM_PERIOD_NS (10 * 1000 * 1000)

/* Low half of vs: state and flags; high half: version. */
enum {
    T_FREE = 0,
    T_PENDING = 1,
    T_RUNNING = 2,
    T_CANCELLED = 3,
    T_STATE_MASK = 0xff,
    T_CANCEL_REQ = 0x100, /* stop a periodic timer after this run */
    T_WAITER = 0x200,     /* someone sleeps on the low half */
    T_RAN = 0x400,        /* a periodic timer that has run at least once */
};

typedef struct entry {
    uint64_t vs;
    int64_t deadline;
    int64_t interval;
    weft_timer_fn *fn;
    void *arg;
    struct entry *next;
    uint32_t slot;
} entry_t;

typedef struct {
    entry_t *head; /* a lock-free stack: pushed by adders, taken whole */
} __attribute__((aligned(64))) tbucket_t;

static void entry_init(void *obj, uint32_t slot)
{
    entry_t *e = obj;
    e->slot = slot;
    e->vs = (uint64_t)1 << 32;
}

static weft_pool_t entry_pool = WEFT_POOL_INITIALIZER("timer", entry_t, entry_init);

static struct {
    pthread_mutex_t lock;     /* start and stop */
    int started, stopping;
    pthread_t thread;
    tbucket_t buckets[NBUCKETS];
    pthread_mutex_t run_lock; /* owns the heap: pulls and runs timers */
    int64_t due;              /* earliest pending deadline (a hint) */
    int64_t wake_at;          /* when the sleeping thread wakes; MIN while awake */
    int32_t wake_seq;
    int32_t sleeping;
    int next_bucket;
    int64_t last_trim;
    entry_t **heap;
    size_t heap_len, heap_cap;
} tt = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .run_lock = PTHREAD_MUTEX_INITIALIZER,
    .due = INT64_MAX,
    .wake_at = INT64_MIN,
};

static __thread int tls_bucket = -1;
static __thread entry_t *tls_running; /* set on the thread running a callback */

static inline uint32_t vs_version(uint64_t vs)
{
    return (uint32_t)(vs >> 32);
}

static inline uint32_t vs_low(uint64_t vs)
{
    return (uint32_t)vs;
}

static inline uint64_t make_vs(uint32_t version, uint32_t low)
{
    return ((uint64_t)version << 32) | low;
}

/* The futex word: the low half of vs (x86-64 and aarch64 are little-endian). */
static inline int32_t *vs_futex(entry_t *e)
{
    return (int32_t *)&e->vs;
}

/* ---- the heap (timer thread only) ---- */

static bool heap_push(entry_t *e)
{
    if (tt.heap_len == tt.heap_cap) {
        size_t cap = tt.heap_cap ? tt.heap_cap * 2 : 1024;
        entry_t **h = realloc(tt.heap, cap * sizeof(*h));
        if (!h)
            return false;
        tt.heap = h;
        tt.heap_cap = cap;
    }
    size_t i = tt.heap_len++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (tt.heap[parent]->deadline <= e->deadline)
            break;
        tt.heap[i] = tt.heap[parent];
        i = parent;
    }
    tt.heap[i] = e;
    return true;
}

static entry_t *heap_pop(void)
{
    entry_t *top = tt.heap[0];
    entry_t *last = tt.heap[--tt.heap_len];
    size_t i = 0, n = tt.heap_len;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && tt.heap[c + 1]->deadline < tt.heap[c]->deadline)
            c++;
        if (last->deadline <= tt.heap[c]->deadline)
            break;
        tt.heap[i] = tt.heap[c];
        i = c;
    }
    if (n)
        tt.heap[i] = last;
    return top;
}

/* ---- entries ---- */

/* Retires an entry: new version (so its id goes stale), back to the pool,
 * and a wakeup for a canceller waiting on it. */
static void entry_recycle(entry_t *e)
{
    uint64_t vs = __atomic_load_n(&e->vs, __ATOMIC_RELAXED);
    uint32_t next = vs_version(vs) + 1;
    uint64_t old = __atomic_exchange_n(&e->vs, make_vs(next ? next : 1, T_FREE), __ATOMIC_ACQ_REL);
    if (vs_low(old) & T_WAITER)
        weft__futex_wake(vs_futex(e), INT32_MAX);
    weft_pool_put(&entry_pool, e->slot);
}

static void entry_run(entry_t *e, int64_t now)
{
    uint64_t vs = __atomic_load_n(&e->vs, __ATOMIC_ACQUIRE);
    uint32_t ver = vs_version(vs);
    if ((vs_low(vs) & T_STATE_MASK) != T_PENDING ||
        !__atomic_compare_exchange_n(&e->vs, &vs, make_vs(ver, T_RUNNING | (vs_low(vs) & T_RAN)),
                                     false,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        entry_recycle(e); /* cancelled */
        return;
    }
    tls_running = e;
    e->fn(e->arg);
    tls_running = NULL;
    if (e->interval > 0) {
        vs = __atomic_load_n(&e->vs, __ATOMIC_ACQUIRE);
        if (!(vs_low(vs) & T_CANCEL_REQ)) {
            do
                e->deadline += e->interval;
            while (e->deadline <= now);
            uint64_t old =
                __atomic_exchange_n(&e->vs, make_vs(ver, T_PENDING | T_RAN), __ATOMIC_ACQ_REL);
            if (vs_low(old) & T_CANCEL_REQ) {
                /* Cancelled between our load and the exchange. */
                __atomic_store_n(&e->vs, old, __ATOMIC_RELAXED);
            } else {
                if (vs_low(old) & T_WAITER)
                    weft__futex_wake(vs_futex(e), INT32_MAX);
                if (heap_push(e))
                    return;
                WEFT_LOG_ERROR("timer heap cannot grow: periodic timer dropped");
            }
        }
    }
    entry_recycle(e);
}

/* ---- the timer thread ---- */

static void pull_buckets(void)
{
    for (int i = 0; i < NBUCKETS; i++) {
        tbucket_t *b = &tt.buckets[i];
        if (!__atomic_load_n(&b->head, __ATOMIC_RELAXED))
            continue;
        entry_t *e = __atomic_exchange_n(&b->head, NULL, __ATOMIC_ACQUIRE);
        while (e) {
            entry_t *next = e->next;
            if ((vs_low(__atomic_load_n(&e->vs, __ATOMIC_ACQUIRE)) & T_STATE_MASK) != T_PENDING ||
                !heap_push(e))
                entry_recycle(e); /* cancelled already, or no memory: drop */
            e = next;
        }
    }
}

/* Surplus fiber stacks are unmapped here, not on a worker, but one munmap
 * costs tens of microseconds (plus a TLB shootdown on every core running
 * the process), and a timer thread busy unmapping is late and looks like a
 * CPU hog to the kernel's scheduler, which then stops favouring its wakeups.
 * So trimming waits for a quiet window: no timer due within the margin, a
 * bounded budget, at most once a period. Memory still comes back within
 * seconds; timers stay on time. */
static void trim_stacks(int64_t now)
{
    int64_t due = __atomic_load_n(&tt.due, __ATOMIC_RELAXED);
    if (now - tt.last_trim < TRIM_PERIOD_NS || due - now < TRIM_MARGIN_NS + TRIM_BUDGET_NS)
        return;
    tt.last_trim = now;
    weft__stack_trim(now + TRIM_BUDGET_NS);
}

static void wake_timer_thread(void)
{
    __atomic_fetch_add(&tt.wake_seq, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&tt.sleeping, __ATOMIC_SEQ_CST))
        weft__futex_wake(&tt.wake_seq, 1);
}

/* Lowers `due` to `deadline` if that is earlier, and wakes the timer thread
 * if it sleeps until later. Pairs with timer_main: it publishes wake_at and
 * then reads due, we lower due and then read wake_at (all seq_cst), so one
 * of us sees the other. */
static void due_lower(int64_t deadline)
{
    int64_t cur = __atomic_load_n(&tt.due, __ATOMIC_SEQ_CST);
    while (deadline < cur) {
        if (__atomic_compare_exchange_n(&tt.due, &cur, deadline, false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST)) {
            if (deadline < __atomic_load_n(&tt.wake_at, __ATOMIC_SEQ_CST))
                wake_timer_thread();
            return;
        }
    }
}

/* Pulls new timers into the heap and runs what is due; run_lock held. `due`
 * reads "none" while the buckets are emptied, so that a timer added after
 * the pull lowers it again. */
static void run_due_locked(void)
{
    __atomic_store_n(&tt.due, INT64_MAX, __ATOMIC_SEQ_CST);
    pull_buckets();
    int64_t now = weft_clock_ns();
    while (tt.heap_len && tt.heap[0]->deadline <= now)
        entry_run(heap_pop(), now);
    /* Most RPC deadlines are cancelled by their reply: drop those on top
     * now rather than wake up for them. */
    while (tt.heap_len && (vs_low(__atomic_load_n(&tt.heap[0]->vs, __ATOMIC_ACQUIRE)) &
                           T_STATE_MASK) == T_CANCELLED)
        entry_recycle(heap_pop());
    if (tt.heap_len)
        due_lower(tt.heap[0]->deadline);
}

bool weft__timer_pending(void)
{
    return __atomic_load_n(&tt.due, __ATOMIC_RELAXED) != INT64_MAX;
}

void weft__timer_run_due(int64_t now)
{
    if (now < __atomic_load_n(&tt.due, __ATOMIC_RELAXED) + HELP_LATE_NS ||
        pthread_mutex_trylock(&tt.run_lock) != 0)
        return;
    run_due_locked();
    pthread_mutex_unlock(&tt.run_lock);
}

static void *timer_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "weft-timer");
    /* Sleep to the microsecond, not to the default 50 us slack. */
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    while (!__atomic_load_n(&tt.stopping, __ATOMIC_ACQUIRE)) {
        pthread_mutex_lock(&tt.run_lock);
        run_due_locked();
        pthread_mutex_unlock(&tt.run_lock);
        int64_t tick = weft__sched_monitor();
        trim_stacks(weft_clock_ns());

        int32_t seq = __atomic_load_n(&tt.wake_seq, __ATOMIC_SEQ_CST);
        int64_t now = weft_clock_ns();
        int64_t next = __atomic_load_n(&tt.due, __ATOMIC_SEQ_CST);
        if (tick > 0 && now + tick < next)
            next = now + tick;
        __atomic_store_n(&tt.wake_at, next, __ATOMIC_SEQ_CST);
        if (next > now && __atomic_load_n(&tt.due, __ATOMIC_SEQ_CST) >= next) {
            __atomic_store_n(&tt.sleeping, 1, __ATOMIC_SEQ_CST);
            if (__atomic_load_n(&tt.wake_seq, __ATOMIC_SEQ_CST) == seq &&
                !__atomic_load_n(&tt.stopping, __ATOMIC_ACQUIRE))
                weft__futex_wait(&tt.wake_seq, seq, next == INT64_MAX ? -1 : next);
            __atomic_store_n(&tt.sleeping, 0, __ATOMIC_SEQ_CST);
        }
        __atomic_store_n(&tt.wake_at, INT64_MIN, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

int weft__timer_start(void)
{
    if (__builtin_expect(__atomic_load_n(&tt.started, __ATOMIC_ACQUIRE), 1))
        return __atomic_load_n(&tt.stopping, __ATOMIC_RELAXED) ? -ESHUTDOWN : 0;
    pthread_mutex_lock(&tt.lock);
    int rc = 0;
    if (!tt.started) {
        rc = -pthread_create(&tt.thread, NULL, timer_main, NULL);
        if (rc == 0)
            __atomic_store_n(&tt.started, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&tt.lock);
    return rc;
}

void weft__timer_shutdown(void)
{
    pthread_mutex_lock(&tt.lock);
    if (tt.started && !tt.stopping) {
        __atomic_store_n(&tt.stopping, 1, __ATOMIC_SEQ_CST);
        wake_timer_thread();
        weft__futex_wake(&tt.wake_seq, 1);
        pthread_join(tt.thread, NULL);
    }
    tt.stopping = 1;
    tt.started = 1;
    pthread_mutex_unlock(&tt.lock);
}

static int timer_add(weft_timer_id_t *id, int64_t deadline, int64_t interval, weft_timer_fn *fn,
                     void *arg)
{
    if (!fn || !id)
        return -EINVAL;
    int rc = weft__timer_start();
    if (rc != 0)
        return rc;
    uint32_t slot;
    entry_t *e = weft_pool_get(&entry_pool, &slot);
    if (!e)
        return -ENOMEM;
    e->deadline = deadline;
    e->interval = interval;
    e->fn = fn;
    e->arg = arg;
    uint32_t ver = vs_version(__atomic_load_n(&e->vs, __ATOMIC_RELAXED));
    __atomic_store_n(&e->vs, make_vs(ver, T_PENDING), __ATOMIC_RELEASE);
    *id = ((uint64_t)ver << 32) | slot;

    if (tls_bucket < 0)
        tls_bucket = __atomic_fetch_add(&tt.next_bucket, 1, __ATOMIC_RELAXED) % NBUCKETS;
    tbucket_t *b = &tt.buckets[tls_bucket];
    entry_t *head = __atomic_load_n(&b->head, __ATOMIC_RELAXED);
    do
        e->next = head;
    while (!__atomic_compare_exchange_n(&b->head, &head, e, true, __ATOMIC_SEQ_CST,
                                        __ATOMIC_RELAXED));

    /* Pushed first, announced second: whoever pulled the bucket before
     * our push had reset `due` before pulling, so lowering it now counts. */
    due_lower(deadline);
    return 0;
}

int weft_timer_run_at(weft_timer_id_t *id, int64_t deadline_ns, weft_timer_fn *fn, void *arg)
{
    return timer_add(id, deadline_ns, 0, fn, arg);
}

int weft_timer_run_after(weft_timer_id_t *id, int64_t delay_ns, weft_timer_fn *fn, void *arg)
{
    return timer_add(id, weft_clock_ns() + (delay_ns > 0 ? delay_ns : 0), 0, fn, arg);
}

int weft_timer_run_every(weft_timer_id_t *id, int64_t interval_ns, weft_timer_fn *fn, void *arg)
{
    if (interval_ns <= 0)
        return -EINVAL;
    return timer_add(id, weft_clock_ns() + interval_ns, interval_ns, fn, arg);
}

int weft_timer_cancel(weft_timer_id_t id)
{
    if (id == 0)
        return -EINVAL;
    entry_t *e = weft_pool_at(&entry_pool, (uint32_t)id);
    if (!e)
        return -EINVAL;
    uint32_t ver = (uint32_t)(id >> 32);
    for (;;) {
        uint64_t vs = __atomic_load_n(&e->vs, __ATOMIC_ACQUIRE);
        if (vs_version(vs) != ver)
            return WEFT_TIMER_RAN;
        uint32_t low = vs_low(vs);
        switch (low & T_STATE_MASK) {
        case T_PENDING:
            if (__atomic_compare_exchange_n(&e->vs, &vs, make_vs(ver, T_CANCELLED), false,
                                            __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
                return (low & T_RAN) ? WEFT_TIMER_RAN : WEFT_TIMER_CANCELLED;
            continue;
        case T_RUNNING: {
            if (tls_running == e) {
                /* Cancelled from its own callback: no further runs. */
                __atomic_fetch_or(&e->vs, (uint64_t)T_CANCEL_REQ, __ATOMIC_ACQ_REL);
                return WEFT_TIMER_RAN;
            }
            uint32_t want = low | T_CANCEL_REQ | T_WAITER;
            if (!__atomic_compare_exchange_n(&e->vs, &vs, make_vs(ver, want), false,
                                             __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
                continue;
            weft__futex_wait(vs_futex(e), (int32_t)want, -1);
            continue;
        }
        default: /* cancelled before, or free */
            return WEFT_TIMER_RAN;
        }
    }
}
