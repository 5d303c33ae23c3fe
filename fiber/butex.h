/*
 * butex.h - wait for a 32-bit word to change, from a fiber or a pthread.
 *
 * A butex is any aligned int32_t: weft_butex_wait() sleeps while the word
 * holds the expected value, weft_butex_wake() wakes sleepers on that word.
 * It is the futex idea with fibers as first-class waiters: a fiber that
 * waits gives its worker to other fibers, a pthread that waits sleeps in the
 * kernel, and either may wake the other. Every lock and condition in weft is
 * built on it.
 *
 * Waiters are kept in a table hashed by address, not in the word, so a word
 * can live anywhere (in a struct, on a stack) and needs no setup or teardown.
 * As with futexes, wakeups can be spurious: re-check the condition in a loop.
 */
#ifndef WEFT_FIBER_BUTEX_H
#define WEFT_FIBER_BUTEX_H

#include <limits.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Sleeps while *word == expected, until woken, until deadline_ns
 * (weft_clock_ns() time; < 0 means none), or until weft_fiber_interrupt().
 * Returns 0 when woken, -EWOULDBLOCK if *word != expected on entry,
 * -ETIMEDOUT, or -EINTR (fibers only). */
int weft_butex_wait(int32_t *word, int32_t expected, int64_t deadline_ns);

/* Wakes up to n waiters on word, oldest first. Returns how many it woke. A
 * woken fiber runs on the waker's worker when the waker is a fiber. */
int weft_butex_wake(int32_t *word, int n);

static inline int weft_butex_wake_one(int32_t *word)
{
    return weft_butex_wake(word, 1);
}

static inline int weft_butex_wake_all(int32_t *word)
{
    return weft_butex_wake(word, INT_MAX);
}

#ifdef __cplusplus
}
#endif
#endif
