/*
 * butex.c - see butex.h.
 *
 * Each bucket of the table holds a lock, a count of waiters and a FIFO list
 * of them. A waiter is a small struct on the waiting fiber's (or thread's)
 * stack. The protocol is the futex one: a waiter counts itself in the bucket
 * and checks the word under the bucket lock; a waker changes the word, then
 * (after a full fence) reads the count, and takes the lock only when someone
 * waits. So wakes with nobody waiting cost one load.
 *
 * A fiber waiter leaves the list in one of three ways, each under the bucket
 * lock, so exactly one of them wins: a wake (result 0), its timer (result
 * -ETIMEDOUT, on the timer thread), or weft_fiber_interrupt() (-EINTR). The
 * fiber cancels its timer before returning, and cancel waits for a running
 * callback, so the waiter struct on its stack outlives every path that can
 * reach it. A pthread waiter sleeps on a private futex word in its waiter;
 * the waker sets that word under the bucket lock.
 */
#include "fiber/butex.h"
#include "fiber/fiber_internal.h"
#include "fiber/timer.h"

#include <errno.h>

#define NBUCKETS 1024
#define WAKE_BATCH 32

typedef struct bucket {
    weft__spinlock_t lock;
    int32_t nwaiters;
    weft__waiter_t *head, *tail;
} __attribute__((aligned(64))) bucket_t;

struct weft__waiter {
    weft__waiter_t *next, *prev;
    int32_t *word;
    bucket_t *bucket;        /* NULL once it left the list */
    weft__fiber_t *fiber;    /* NULL for a pthread waiter */
    int32_t futex;           /* pthread waiter: 1 once woken */
    int result;
    int64_t deadline;
    weft_timer_id_t timer;
};

static bucket_t buckets[NBUCKETS];

static bucket_t *bucket_of(const int32_t *word)
{
    uint64_t h = (uint64_t)(uintptr_t)word * 0x9E3779B97F4A7C15ull;
    return &buckets[h >> (64 - 10)];
}

static void link_waiter(bucket_t *b, weft__waiter_t *wt)
{
    wt->next = NULL;
    wt->prev = b->tail;
    if (b->tail)
        b->tail->next = wt;
    else
        b->head = wt;
    b->tail = wt;
    __atomic_store_n(&wt->bucket, b, __ATOMIC_RELAXED);
}

static void unlink_waiter(bucket_t *b, weft__waiter_t *wt, int result)
{
    if (wt->prev)
        wt->prev->next = wt->next;
    else
        b->head = wt->next;
    if (wt->next)
        wt->next->prev = wt->prev;
    else
        b->tail = wt->prev;
    __atomic_store_n(&b->nwaiters, b->nwaiters - 1, __ATOMIC_RELAXED);
    __atomic_store_n(&wt->bucket, NULL, __ATOMIC_RELAXED);
    wt->result = result;
}

/* Locks the bucket the waiter is linked in; NULL (nothing locked) if it is
 * no longer linked. */
static bucket_t *lock_linked(weft__waiter_t *wt)
{
    bucket_t *b = __atomic_load_n(&wt->bucket, __ATOMIC_RELAXED);
    if (!b)
        return NULL;
    weft__spin_lock(&b->lock);
    if (__atomic_load_n(&wt->bucket, __ATOMIC_RELAXED) == b)
        return b;
    weft__spin_unlock(&b->lock);
    return NULL;
}

/* Counts a waiter in and checks the word. Returns with the bucket locked
 * when the caller should sleep, unlocked with an error otherwise. */
static int enqueue(bucket_t *b, weft__waiter_t *wt, int32_t expected)
{
    weft__spin_lock(&b->lock);
    __atomic_fetch_add(&b->nwaiters, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(wt->word, __ATOMIC_SEQ_CST) != expected) {
        __atomic_fetch_sub(&b->nwaiters, 1, __ATOMIC_RELAXED);
        weft__spin_unlock(&b->lock);
        return -EWOULDBLOCK;
    }
    if (wt->deadline >= 0 && wt->deadline <= weft_clock_ns()) {
        __atomic_fetch_sub(&b->nwaiters, 1, __ATOMIC_RELAXED);
        weft__spin_unlock(&b->lock);
        return -ETIMEDOUT;
    }
    link_waiter(b, wt);
    return 0;
}

static void on_timeout(void *arg)
{
    weft__waiter_t *wt = arg;
    bucket_t *b = lock_linked(wt);
    if (!b)
        return;
    unlink_waiter(b, wt, -ETIMEDOUT);
    weft__fiber_t *f = wt->fiber;
    weft__spin_unlock(&b->lock);
    weft__fiber_ready(f);
}

/* The scheduler calls this once the waiting fiber is off its stack. */
void weft__butex_parked(weft__waiter_t *wt)
{
    bucket_t *b = wt->bucket; /* still linked: we hold its lock */
    if (wt->deadline >= 0 &&
        weft_timer_run_at(&wt->timer, wt->deadline, on_timeout, wt) != 0) {
        /* No timer, no way to honour the deadline: time out now. */
        unlink_waiter(b, wt, -ETIMEDOUT);
        weft__spin_unlock(&b->lock);
        weft__fiber_ready(wt->fiber);
        return;
    }
    weft__spin_unlock(&b->lock);
}

void weft__butex_interrupt(weft__fiber_t *f)
{
    weft__waiter_t *wt = f->waiter;
    if (!wt)
        return;
    bucket_t *b = lock_linked(wt);
    if (!b)
        return;
    unlink_waiter(b, wt, -EINTR);
    f->interrupted = 0; /* consumed by this wait */
    weft__spin_unlock(&b->lock);
    weft__fiber_ready(f);
}

static int fiber_wait(weft__fiber_t *f, weft__waiter_t *wt, int32_t expected)
{
    bucket_t *b = bucket_of(wt->word);
    weft__spin_lock(&f->lock);
    if (f->interrupted) {
        f->interrupted = 0;
        weft__spin_unlock(&f->lock);
        return -EINTR;
    }
    int rc = enqueue(b, wt, expected);
    if (rc != 0) {
        weft__spin_unlock(&f->lock);
        return rc;
    }
    f->waiter = wt;
    weft__spin_unlock(&f->lock);

    weft__fiber_block(f, wt);

    if (wt->timer)
        weft_timer_cancel(wt->timer);
    weft__spin_lock(&f->lock);
    f->waiter = NULL;
    weft__spin_unlock(&f->lock);
    return wt->result;
}

static int thread_wait(weft__waiter_t *wt, int32_t expected)
{
    bucket_t *b = bucket_of(wt->word);
    int rc = enqueue(b, wt, expected);
    if (rc != 0)
        return rc;
    weft__spin_unlock(&b->lock);
    for (;;) {
        rc = weft__futex_wait(&wt->futex, 0, wt->deadline);
        if (__atomic_load_n(&wt->futex, __ATOMIC_ACQUIRE))
            return wt->result;
        if (rc == -ETIMEDOUT) {
            b = lock_linked(wt);
            if (b) {
                unlink_waiter(b, wt, -ETIMEDOUT);
                weft__spin_unlock(&b->lock);
                return -ETIMEDOUT;
            }
            /* A waker unlinked us and is about to set futex, still under
             * its lock: returning before it has would let it write into
             * this frame once it is gone. */
            unsigned spins = 0;
            while (!__atomic_load_n(&wt->futex, __ATOMIC_ACQUIRE))
                weft__spin_backoff(&spins);
            return wt->result;
        }
    }
}

int weft_butex_wait(int32_t *word, int32_t expected, int64_t deadline_ns)
{
    weft__waiter_t wt = {.word = word, .deadline = deadline_ns < 0 ? -1 : deadline_ns};
    weft__fiber_t *f = weft__current_fiber();
    if (f) {
        wt.fiber = f;
        return fiber_wait(f, &wt, expected);
    }
    return thread_wait(&wt, expected);
}

int weft_butex_wake(int32_t *word, int n)
{
    bucket_t *b = bucket_of(word);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&b->nwaiters, __ATOMIC_RELAXED) == 0)
        return 0;
    int woken = 0;
    while (woken < n) {
        /* Collected under the lock; once it is released a pthread waiter
         * may return and its waiter struct is gone, so keep only what the
         * wakeup itself needs. */
        weft__fiber_t *fibers[WAKE_BATCH];
        int32_t *futexes[WAKE_BATCH];
        int nf = 0, nt = 0;
        weft__spin_lock(&b->lock);
        weft__waiter_t *wt = b->head;
        while (wt && woken < n && nf + nt < WAKE_BATCH) {
            weft__waiter_t *next = wt->next;
            if (wt->word == word) {
                unlink_waiter(b, wt, 0);
                if (wt->fiber) {
                    fibers[nf++] = wt->fiber;
                } else {
                    __atomic_store_n(&wt->futex, 1, __ATOMIC_RELEASE);
                    futexes[nt++] = &wt->futex;
                }
                woken++;
            }
            wt = next;
        }
        bool more = wt != NULL && woken < n;
        weft__spin_unlock(&b->lock);
        for (int i = 0; i < nf; i++)
            weft__fiber_ready(fibers[i]);
        for (int i = 0; i < nt; i++)
            weft__futex_wake(futexes[i], 1);
        if (!more)
            break;
    }
    return woken;
}
