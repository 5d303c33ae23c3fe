/*
 * sync.c - see sync.h. Each primitive is a few atomics on a word plus
 * weft_butex_wait/wake for the slow path; the fast paths make no call into
 * the scheduler and no syscall.
 */
#include "fiber/sync.h"
#include "fiber/butex.h"
#include "fiber/futex_internal.h"

#include <errno.h>
#include <stdbool.h>

/* ---- mutex (Drepper's three-state futex mutex) ---- */

void weft_mutex_init(weft_mutex_t *m)
{
    m->state = 0;
}

int weft_mutex_trylock(weft_mutex_t *m)
{
    int32_t zero = 0;
    return __atomic_compare_exchange_n(&m->state, &zero, 1, false, __ATOMIC_ACQUIRE,
                                       __ATOMIC_RELAXED)
               ? 0
               : -EBUSY;
}

static int mutex_lock_slow(weft_mutex_t *m, int64_t deadline_ns)
{
    /* A short spin first: critical sections are usually shorter than the
     * cost of parking. */
    for (int i = 0; i < 64; i++) {
        if (__atomic_load_n(&m->state, __ATOMIC_RELAXED) == 0 && weft_mutex_trylock(m) == 0)
            return 0;
        weft__cpu_relax();
    }
    while (__atomic_exchange_n(&m->state, 2, __ATOMIC_ACQUIRE) != 0) {
        if (weft_butex_wait(&m->state, 2, deadline_ns) == -ETIMEDOUT)
            return -ETIMEDOUT;
    }
    return 0;
}

void weft_mutex_lock(weft_mutex_t *m)
{
    if (__builtin_expect(weft_mutex_trylock(m) == 0, 1))
        return;
    mutex_lock_slow(m, -1);
}

int weft_mutex_timedlock(weft_mutex_t *m, int64_t deadline_ns)
{
    if (weft_mutex_trylock(m) == 0)
        return 0;
    return mutex_lock_slow(m, deadline_ns);
}

void weft_mutex_unlock(weft_mutex_t *m)
{
    if (__atomic_exchange_n(&m->state, 0, __ATOMIC_RELEASE) == 2)
        weft_butex_wake_one(&m->state);
}

/* ---- condition variable ---- */

void weft_cond_init(weft_cond_t *c)
{
    c->seq = 0;
}

int weft_cond_timedwait(weft_cond_t *c, weft_mutex_t *m, int64_t deadline_ns)
{
    int32_t seq = __atomic_load_n(&c->seq, __ATOMIC_ACQUIRE);
    weft_mutex_unlock(m);
    int rc = weft_butex_wait(&c->seq, seq, deadline_ns);
    /* Relock as contended: other waiters woken with us queue on the mutex,
     * and our unlock must wake them. */
    while (__atomic_exchange_n(&m->state, 2, __ATOMIC_ACQUIRE) != 0)
        weft_butex_wait(&m->state, 2, -1);
    return rc == -ETIMEDOUT ? -ETIMEDOUT : 0;
}

void weft_cond_wait(weft_cond_t *c, weft_mutex_t *m)
{
    weft_cond_timedwait(c, m, -1);
}

void weft_cond_signal(weft_cond_t *c)
{
    __atomic_fetch_add(&c->seq, 1, __ATOMIC_RELEASE);
    weft_butex_wake_one(&c->seq);
}

void weft_cond_broadcast(weft_cond_t *c)
{
    __atomic_fetch_add(&c->seq, 1, __ATOMIC_RELEASE);
    weft_butex_wake_all(&c->seq);
}

/* ---- countdown event ---- */

void weft_countdown_init(weft_countdown_t *cd, int count)
{
    __atomic_store_n(&cd->count, count, __ATOMIC_RELEASE);
}

void weft_countdown_signal(weft_countdown_t *cd, int n)
{
    if (__atomic_sub_fetch(&cd->count, n, __ATOMIC_ACQ_REL) <= 0)
        weft_butex_wake_all(&cd->count);
}

void weft_countdown_add(weft_countdown_t *cd, int n)
{
    __atomic_fetch_add(&cd->count, n, __ATOMIC_ACQ_REL);
}

int weft_countdown_timedwait(weft_countdown_t *cd, int64_t deadline_ns)
{
    for (;;) {
        int32_t v = __atomic_load_n(&cd->count, __ATOMIC_ACQUIRE);
        if (v <= 0)
            return 0;
        if (weft_butex_wait(&cd->count, v, deadline_ns) == -ETIMEDOUT)
            return -ETIMEDOUT;
    }
}

void weft_countdown_wait(weft_countdown_t *cd)
{
    weft_countdown_timedwait(cd, -1);
}

/* ---- semaphore ---- */

void weft_sem_init(weft_sem_t *s, int value)
{
    __atomic_store_n(&s->value, value, __ATOMIC_RELEASE);
}

int weft_sem_trywait(weft_sem_t *s)
{
    int32_t v = __atomic_load_n(&s->value, __ATOMIC_RELAXED);
    while (v > 0) {
        if (__atomic_compare_exchange_n(&s->value, &v, v - 1, false, __ATOMIC_ACQUIRE,
                                        __ATOMIC_RELAXED))
            return 0;
    }
    return -EAGAIN;
}

int weft_sem_timedwait(weft_sem_t *s, int64_t deadline_ns)
{
    while (weft_sem_trywait(s) != 0) {
        if (weft_butex_wait(&s->value, 0, deadline_ns) == -ETIMEDOUT)
            return weft_sem_trywait(s) == 0 ? 0 : -ETIMEDOUT;
    }
    return 0;
}

void weft_sem_wait(weft_sem_t *s)
{
    weft_sem_timedwait(s, -1);
}

void weft_sem_post(weft_sem_t *s, int n)
{
    __atomic_fetch_add(&s->value, n, __ATOMIC_RELEASE);
    weft_butex_wake(&s->value, n);
}

/* ---- rwlock ----
 *
 * Waiters sleep on `seq`, not on `state`: state can leave a value and come
 * back to it (a writer takes and releases a free lock) between a waiter's
 * look and its sleep, and a waiter sleeping on the old value would miss
 * that release. seq only grows: every release that may let someone in
 * bumps it after changing state.
 */

void weft_rwlock_init(weft_rwlock_t *rw)
{
    rw->state = 0;
    rw->writers_waiting = 0;
    rw->seq = 0;
}

static void rwlock_released(weft_rwlock_t *rw)
{
    __atomic_fetch_add(&rw->seq, 1, __ATOMIC_RELEASE);
    weft_butex_wake_all(&rw->seq);
}

int weft_rwlock_tryrdlock(weft_rwlock_t *rw)
{
    int32_t s = __atomic_load_n(&rw->state, __ATOMIC_RELAXED);
    while (s >= 0 && __atomic_load_n(&rw->writers_waiting, __ATOMIC_ACQUIRE) == 0) {
        if (__atomic_compare_exchange_n(&rw->state, &s, s + 1, false, __ATOMIC_ACQUIRE,
                                        __ATOMIC_RELAXED))
            return 0;
    }
    return -EBUSY;
}

int weft_rwlock_timedrdlock(weft_rwlock_t *rw, int64_t deadline_ns)
{
    for (;;) {
        int32_t seq = __atomic_load_n(&rw->seq, __ATOMIC_ACQUIRE);
        if (weft_rwlock_tryrdlock(rw) == 0)
            return 0;
        if (weft_butex_wait(&rw->seq, seq, deadline_ns) == -ETIMEDOUT)
            return weft_rwlock_tryrdlock(rw) == 0 ? 0 : -ETIMEDOUT;
    }
}

void weft_rwlock_rdlock(weft_rwlock_t *rw)
{
    weft_rwlock_timedrdlock(rw, -1);
}

int weft_rwlock_trywrlock(weft_rwlock_t *rw)
{
    int32_t zero = 0;
    return __atomic_compare_exchange_n(&rw->state, &zero, -1, false, __ATOMIC_ACQUIRE,
                                       __ATOMIC_RELAXED)
               ? 0
               : -EBUSY;
}

int weft_rwlock_timedwrlock(weft_rwlock_t *rw, int64_t deadline_ns)
{
    if (weft_rwlock_trywrlock(rw) == 0)
        return 0;
    __atomic_fetch_add(&rw->writers_waiting, 1, __ATOMIC_SEQ_CST);
    for (;;) {
        int32_t seq = __atomic_load_n(&rw->seq, __ATOMIC_ACQUIRE);
        if (weft_rwlock_trywrlock(rw) == 0) {
            __atomic_fetch_sub(&rw->writers_waiting, 1, __ATOMIC_SEQ_CST);
            return 0;
        }
        if (weft_butex_wait(&rw->seq, seq, deadline_ns) == -ETIMEDOUT) {
            int rc = weft_rwlock_trywrlock(rw) == 0 ? 0 : -ETIMEDOUT;
            __atomic_fetch_sub(&rw->writers_waiting, 1, __ATOMIC_SEQ_CST);
            /* Readers may have waited only because we did. */
            if (rc != 0)
                rwlock_released(rw);
            return rc;
        }
    }
}

void weft_rwlock_wrlock(weft_rwlock_t *rw)
{
    weft_rwlock_timedwrlock(rw, -1);
}

void weft_rwlock_unlock(weft_rwlock_t *rw)
{
    int32_t s = __atomic_load_n(&rw->state, __ATOMIC_RELAXED);
    if (s == -1) {
        __atomic_store_n(&rw->state, 0, __ATOMIC_RELEASE);
        rwlock_released(rw);
    } else if (__atomic_sub_fetch(&rw->state, 1, __ATOMIC_RELEASE) == 0) {
        rwlock_released(rw);
    }
}
