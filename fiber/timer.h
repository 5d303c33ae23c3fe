/*
 * timer.h - run a callback at a time, after a delay, or every interval.
 *
 * One timer thread serves the whole process: fiber sleeps, timed waits, RPC
 * deadlines and periodic housekeeping all end up here. Callbacks run on that
 * thread, or on a worker between two fibers when the timer thread is late
 * (never inside a fiber), so they fire even when every worker is busy; keep
 * them short and never block in them (a callback that has real work to do
 * should start a fiber). Adding a timer takes no lock and wakes the timer
 * thread only when the new timer is the earliest; cancelling is one CAS.
 *
 * All times are weft_clock_ns() nanoseconds.
 */
#ifndef WEFT_FIBER_TIMER_H
#define WEFT_FIBER_TIMER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint64_t weft_timer_id_t; /* 0 is never a valid id */
typedef void weft_timer_fn(void *arg);

/* Each returns 0 and sets *id, or -ENOMEM / -ESHUTDOWN / -EINVAL. */
int weft_timer_run_at(weft_timer_id_t *id, int64_t deadline_ns, weft_timer_fn *fn, void *arg);
int weft_timer_run_after(weft_timer_id_t *id, int64_t delay_ns, weft_timer_fn *fn, void *arg);
/* First run one interval from now; then every interval after the previous
 * scheduled time (not drifting with the callback's duration). */
int weft_timer_run_every(weft_timer_id_t *id, int64_t interval_ns, weft_timer_fn *fn, void *arg);

enum {
    WEFT_TIMER_CANCELLED = 0, /* the callback had not run and never will */
    WEFT_TIMER_RAN = 1,       /* it ran (a periodic timer: at least started);
                                 it is not running now and will not run again */
};

/* Cancels a timer. If the callback is running right now, waits until it
 * returns (unless called from that callback). Returns
 * WEFT_TIMER_CANCELLED or WEFT_TIMER_RAN; an id that was already cancelled
 * also reads as WEFT_TIMER_RAN. -EINVAL for id 0. */
int weft_timer_cancel(weft_timer_id_t id);

#ifdef __cplusplus
}
#endif
#endif
