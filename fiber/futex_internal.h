/*
 * futex_internal.h - thin wrappers over the futex(2) syscall.
 *
 * Private futexes (not shared across processes), absolute deadlines in
 * weft_clock_ns() time converted to the relative timeout FUTEX_WAIT takes.
 */
#ifndef WEFT_FIBER_FUTEX_INTERNAL_H
#define WEFT_FIBER_FUTEX_INTERNAL_H

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <linux/futex.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "fiber/clock.h"

/* Sleep while *addr == expected, until woken or the deadline (weft_clock_ns
 * time; < 0 means none). Returns 0, -EAGAIN (value differed), -ETIMEDOUT or
 * -EINTR. */
static inline int weft__futex_wait(int32_t *addr, int32_t expected, int64_t deadline_ns)
{
    struct timespec ts, *tsp = NULL;
    if (deadline_ns >= 0) {
        int64_t left = deadline_ns - weft_clock_ns();
        if (left <= 0)
            return -ETIMEDOUT;
        ts.tv_sec = left / WEFT_NS_PER_SEC;
        ts.tv_nsec = left % WEFT_NS_PER_SEC;
        tsp = &ts;
    }
    long rc = syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, tsp, NULL, 0);
    return rc == 0 ? 0 : -errno;
}

static inline int weft__futex_wake(int32_t *addr, int n)
{
    long rc = syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
    return rc >= 0 ? (int)rc : -errno;
}

static inline void weft__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield" ::: "memory");
#endif
}

/* One step of waiting for another thread to finish a few instructions (drop
 * a lock, publish a word). That thread may have been preempted in the middle
 * of them; with as many threads as cores, spinning on then keeps it off its
 * CPU for the rest of our timeslice (milliseconds). So pause a while, then
 * give the CPU away. `spins` starts at 0 for each wait. */
static inline void weft__spin_backoff(unsigned *spins)
{
    if (++*spins < 128)
        weft__cpu_relax();
    else
        sched_yield();
}

#endif
