/*
 * clock.h - cheap time.
 *
 * weft measures deadlines and latencies in nanoseconds of CLOCK_MONOTONIC.
 * On Linux that is a vDSO call reading the TSC (about 20 ns, no syscall), so
 * there is no reason to keep a private TSC calibration that could drift from
 * the clock the kernel uses for futex and epoll timeouts.
 */
#ifndef WEFT_FIBER_CLOCK_H
#define WEFT_FIBER_CLOCK_H

#include <stdint.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WEFT_NS_PER_US 1000LL
#define WEFT_NS_PER_MS 1000000LL
#define WEFT_NS_PER_SEC 1000000000LL

/* Monotonic nanoseconds since an arbitrary point (boot). */
static inline int64_t weft_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * WEFT_NS_PER_SEC + ts.tv_nsec;
}

static inline int64_t weft_clock_us(void)
{
    return weft_clock_ns() / WEFT_NS_PER_US;
}

/* Wall-clock nanoseconds since the Unix epoch, for logs and reports only:
 * it can jump, so never compute a deadline from it. */
static inline int64_t weft_clock_realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * WEFT_NS_PER_SEC + ts.tv_nsec;
}

/* A deadline `us` microseconds from now, in weft_clock_ns() time. */
static inline int64_t weft_deadline_after_us(int64_t us)
{
    return weft_clock_ns() + us * WEFT_NS_PER_US;
}

/* CPU timestamp counter, for benchmarks that time very short sections.
 * Not convertible to ns without calibration; compare cycles with cycles. */
static inline uint64_t weft_cycles(void)
{
#if defined(__x86_64__)
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
#elif defined(__aarch64__)
    uint64_t v;
    __asm__ volatile("mrs %0, cntvct_el0" : "=r"(v));
    return v;
#else
    return (uint64_t)weft_clock_ns();
#endif
}

#ifdef __cplusplus
}
#endif
#endif
