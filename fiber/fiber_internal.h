/*
 * fiber_internal.h - what the scheduler shares with butex.c, fls.c and the
 * other parts of the runtime. Not installed.
 */
#ifndef WEFT_FIBER_FIBER_INTERNAL_H
#define WEFT_FIBER_FIBER_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "fiber/fiber.h"
#include "fiber/futex_internal.h"
#include "fiber/sanitizer_internal.h"
#include "fiber/stack_internal.h"
#include "fiber/work_stealing_queue.h"

typedef struct weft__fiber weft__fiber_t;
typedef struct weft__worker weft__worker_t;
typedef struct weft__waiter weft__waiter_t;
struct weft__fls;

/* A test-and-test-and-set lock for critical sections of a few instructions. */
typedef struct {
    int32_t v;
} weft__spinlock_t;

static inline void weft__spin_lock(weft__spinlock_t *l)
{
    unsigned spins = 0;
    for (;;) {
        if (!__atomic_exchange_n(&l->v, 1, __ATOMIC_ACQUIRE))
            return;
        while (__atomic_load_n(&l->v, __ATOMIC_RELAXED))
            weft__spin_backoff(&spins);
    }
}

static inline void weft__spin_unlock(weft__spinlock_t *l)
{
    __atomic_store_n(&l->v, 0, __ATOMIC_RELEASE);
}

struct weft__fiber {
    void *sp;                /* saved stack pointer while switched out */
    weft__stack_t *stack;    /* NULL until the fiber first runs */
    weft_fiber_fn *fn;
    void *arg;
    int32_t version;         /* this incarnation's version; joiners wait on it */
    uint32_t slot;
    int32_t sleep_word;      /* a butex that never changes, for sleeps */
    int stack_class;
    size_t stack_bytes;
    const char *name;
    struct weft__fls *fls;   /* fiber-local values, or NULL */
    weft__spinlock_t lock;   /* guards interrupted and waiter */
    int interrupted;
    weft__waiter_t *waiter;  /* the wait this fiber is blocked in */
    weft__fiber_t *next;     /* in the remote queue */
#ifdef WEFT_ASAN
    void *asan_fake_stack;
#endif
};

static inline weft_fiber_t weft__fiber_id(const weft__fiber_t *f)
{
    return ((uint64_t)(uint32_t)f->version << 32) | f->slot;
}

/* The worker running the caller, NULL on other threads. The one audited way
 * to read the scheduler's thread-local state: see scheduler.c. */
weft__worker_t *weft__current_worker(void);

/* The running fiber, NULL outside fibers. */
weft__fiber_t *weft__current_fiber(void);

/* Makes a blocked fiber runnable again: onto this worker's queue when called
 * on a worker, else onto the shared queue. */
void weft__fiber_ready(weft__fiber_t *f);

/* Parks the running fiber f in a butex wait. The caller holds the lock of the
 * waiter's bucket; the scheduler calls weft__butex_parked(w) once f is off
 * its stack, which arms the timeout and releases the lock. Returns when f
 * has been readied and runs again. */
void weft__fiber_block(weft__fiber_t *f, weft__waiter_t *w);
void weft__butex_parked(weft__waiter_t *w);

/* Wakes f out of the butex wait it is in, if any, with -EINTR. Called with
 * f->lock held. */
void weft__butex_interrupt(weft__fiber_t *f);

/* Starts the timer thread if it is not running: 0 or -errno. */
int weft__timer_start(void);

/* Stops the timer thread (at runtime shutdown). */
void weft__timer_shutdown(void);

/* Runs the timers that are due, unless none is or another thread is at it.
 * Workers call it between fibers with the time they read anyway. */
void weft__timer_run_due(int64_t now);

/* Whether any timer is pending (a hint, for skipping the clock). */
bool weft__timer_pending(void);

/* Fiber-local storage of a fiber that ends (runs the destructors). */
void weft__fls_destroy(struct weft__fls **fls);

/* Timer-thread tick: lets the scheduler notice a worker stuck in one long
 * fiber while work waits. Returns the longest the timer thread may sleep
 * before calling it again, in ns. */
int64_t weft__sched_monitor(void);

/* Fibers queued on the calling worker (0 off the workers): how much work
 * will run here before the worker is free again. */
int64_t weft__worker_backlog(void);

/* The runtime must be running (starts it on first use). 0 or -errno. */
int weft__runtime_ensure(void);

#endif
