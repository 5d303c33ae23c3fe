/*
 * fiber.h - fibers: cheap user-space threads on a work-stealing scheduler.
 *
 * A fiber is a function running on its own small stack. W worker threads
 * (one per CPU by default) run all fibers; a fiber that waits (on a butex,
 * a mutex, a sleep, a socket) gives its worker to another fiber instead of
 * blocking the thread. Starting a fiber costs a few hundred nanoseconds and
 * no system call, so a program can start one per request, per connection or
 * per message.
 *
 * The runtime starts itself on first use. Everything here can be called from
 * a fiber or from any plain pthread; where the two differ, it says so.
 *
 * Fiber ids are versioned (version << 32 | slot): an id stays a valid
 * argument for ever, and joining or interrupting a fiber that has ended
 * returns at once.
 */
#ifndef WEFT_FIBER_FIBER_H
#define WEFT_FIBER_FIBER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint64_t weft_fiber_t; /* 0 is never a valid id */

/* stack_size in weft_fiber_attr_t: one of these, or a size in bytes. */
#define WEFT_STACK_SMALL ((size_t)1)   /* 32 KiB: simple, shallow code */
#define WEFT_STACK_DEFAULT ((size_t)2) /* 256 KiB */
#define WEFT_STACK_LARGE ((size_t)3)   /* 8 MiB: deep recursion */

/* Flags in weft_fiber_attr_t. */
#define WEFT_FIBER_NOSIGNAL 0x1u /* queue without waking an idle worker;
                                    weft_fiber_flush() wakes one later */

typedef struct weft_fiber_attr {
    size_t stack_size; /* 0 or WEFT_STACK_* or bytes */
    const char *name;  /* static string shown in crash reports, or NULL */
    unsigned flags;    /* WEFT_FIBER_* */
} weft_fiber_attr_t;

typedef void weft_fiber_fn(void *arg);

/* Starts fn(arg) in a new fiber that runs when a worker gets to it; the
 * caller keeps running. attr may be NULL. *id (if id is not NULL) receives
 * the new fiber's id. Returns 0, -ENOMEM, or -ESHUTDOWN after
 * weft_fiber_shutdown(). */
int weft_fiber_start_background(weft_fiber_t *id, const weft_fiber_attr_t *attr,
                                weft_fiber_fn *fn, void *arg);

/* Like start_background, but when called from a fiber the new fiber runs at
 * once on this worker and the caller is queued to resume soon after. Use it
 * when the new fiber is the more urgent (say, it handles a message that just
 * arrived). From a pthread it is start_background. */
int weft_fiber_start_urgent(weft_fiber_t *id, const weft_fiber_attr_t *attr,
                            weft_fiber_fn *fn, void *arg);

/* Wakes an idle worker if fibers started with WEFT_FIBER_NOSIGNAL wait. */
void weft_fiber_flush(void);

/* Waits until the fiber has ended. Returns 0 (also when it had already ended
 * or the id is stale), -EINVAL for id 0, -EDEADLK when a fiber joins itself.
 * From a pthread, blocks the thread; from a fiber, only the fiber. */
int weft_fiber_join(weft_fiber_t id);

/* The calling fiber's id, 0 when called from a pthread. */
weft_fiber_t weft_fiber_self(void);

/* Lets other ready fibers run first; sched_yield() from a pthread. */
void weft_fiber_yield(void);

/* Sleeps for us microseconds / until a weft_clock_ns() deadline. A fiber
 * gives its worker away meanwhile; a pthread sleeps. Returns 0, or -EINTR
 * if weft_fiber_interrupt() woke the fiber early. */
int weft_fiber_usleep(uint64_t us);
int weft_fiber_sleep_until(int64_t deadline_ns);

/* Wakes the fiber out of the blocking call it is in (a butex wait, a sleep,
 * anything built on them), which then returns -EINTR; if it is not blocked,
 * its next blocking call returns -EINTR at once. Returns 0, -EINVAL for id 0,
 * -ESRCH if the fiber has ended. */
int weft_fiber_interrupt(weft_fiber_t id);

/* True while the fiber runs or waits; false once it has ended. */
bool weft_fiber_alive(weft_fiber_t id);

/* Number of workers (that the runtime has, or will start with).
 * weft_fiber_set_workers() works only before the runtime starts (-EBUSY
 * after); the environment variable WEFT_WORKERS overrides the default, which
 * is the number of CPUs this process may run on. */
int weft_fiber_set_workers(int n);
int weft_fiber_workers(void);

/* Starts the runtime now instead of at first use. Returns 0 or -errno. */
int weft_fiber_init(void);

/* Stops the runtime: lets every ready fiber run until none is ready, then
 * stops the workers and the timer thread and returns. Fibers still blocked
 * are abandoned. Call it from a pthread, not from a fiber (-EPERM). After it,
 * starting a fiber fails with -ESHUTDOWN. */
int weft_fiber_shutdown(void);

/* Index of the worker running the caller, -1 outside workers. Only a hint:
 * a fiber may move to another worker at its next blocking call. */
int weft_fiber_worker_index(void);

/* True when the caller runs in a fiber. */
bool weft_fiber_in_fiber(void);

/*
 * The idle poller hook. When a worker runs out of fibers it steals from the
 * others, then calls poll(arg, 0) to collect I/O events without blocking,
 * then spins briefly, and only then parks. One idle worker at a time, instead
 * of parking, blocks in poll(arg, -1); wake(arg) must make that call return
 * soon (an eventfd in the same epoll set does). Fibers that poll() starts run
 * on the worker that polled, so the thread that saw an event runs its
 * handler: no thread handoff. The runtime itself does no I/O; net/ installs
 * its epoll loop here. Set once; -EBUSY if a poller is already set.
 */
typedef struct weft_fiber_poller {
    int (*poll)(void *arg, int timeout_ms); /* events handled, or -errno */
    void (*wake)(void *arg);
    void *arg;
} weft_fiber_poller_t;

int weft_fiber_set_poller(const weft_fiber_poller_t *poller);

/*
 * The batch hook. Each worker calls flush() in its scheduler context when
 * its run queue runs dry, and at least every few dozen fibers otherwise: a
 * place to finish work batched per worker while its fibers ran (net/ sends
 * the replies fibers wrote, several in one system call). Set once; -EBUSY
 * after.
 */
int weft_fiber_set_batch_hook(void (*flush)(void));

/*
 * Fiber-local storage: like pthread keys, per fiber. A value set from a
 * pthread (outside any fiber) belongs to that thread. Destructors run when
 * the fiber (or thread) ends, for non-NULL values, up to 4 rounds.
 */
typedef struct weft_fiber_key {
    uint32_t index;
    uint32_t version;
} weft_fiber_key_t;

int weft_fiber_key_create(weft_fiber_key_t *key, void (*dtor)(void *value));
int weft_fiber_key_delete(weft_fiber_key_t key);
int weft_fiber_setspecific(weft_fiber_key_t key, void *value);
void *weft_fiber_getspecific(weft_fiber_key_t key);

/* Scheduler figures, summed over workers (also exported as metrics). */
typedef struct weft_fiber_stats {
    int64_t fibers_alive;   /* started and not yet ended */
    int64_t fibers_started;
    int64_t switches;       /* switches into fibers */
    int64_t steals;         /* fibers taken from another worker's queue */
    int64_t parks;          /* times a worker went to sleep */
    int64_t wakeups;        /* times a sleeping worker was woken */
    int64_t polls;          /* poller calls from idle workers */
    int workers;
} weft_fiber_stats_t;

void weft_fiber_stats(weft_fiber_stats_t *out);

#ifdef __cplusplus
}
#endif
#endif
