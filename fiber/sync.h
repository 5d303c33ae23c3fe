/*
 * sync.h - mutex, condition variable, countdown event, semaphore and rwlock
 * for fibers and threads alike.
 *
 * All are built on butex: one or two 32-bit words each, no allocation, no
 * teardown, static initializers. A fiber that waits gives its worker to
 * other fibers; a pthread that waits sleeps in the kernel; either may wake
 * the other. Deadlines are weft_clock_ns() times, < 0 meaning none.
 * Functions return 0 or a negative errno (-ETIMEDOUT, -EBUSY, -EAGAIN).
 */
#ifndef WEFT_FIBER_SYNC_H
#define WEFT_FIBER_SYNC_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Mutex: 0 unlocked, 1 locked, 2 locked with waiters. */
typedef struct weft_mutex {
    int32_t state;
} weft_mutex_t;
#define WEFT_MUTEX_INITIALIZER {0}

void weft_mutex_init(weft_mutex_t *m);
void weft_mutex_lock(weft_mutex_t *m);
int weft_mutex_trylock(weft_mutex_t *m);                       /* 0 or -EBUSY */
int weft_mutex_timedlock(weft_mutex_t *m, int64_t deadline_ns); /* 0 or -ETIMEDOUT */
void weft_mutex_unlock(weft_mutex_t *m);

/* Condition variable, used with a weft_mutex_t. */
typedef struct weft_cond {
    int32_t seq;
} weft_cond_t;
#define WEFT_COND_INITIALIZER {0}

void weft_cond_init(weft_cond_t *c);
void weft_cond_wait(weft_cond_t *c, weft_mutex_t *m);
int weft_cond_timedwait(weft_cond_t *c, weft_mutex_t *m, int64_t deadline_ns);
void weft_cond_signal(weft_cond_t *c);
void weft_cond_broadcast(weft_cond_t *c);

/* Countdown event: waiters wait until the count reaches zero. */
typedef struct weft_countdown {
    int32_t count;
} weft_countdown_t;

void weft_countdown_init(weft_countdown_t *cd, int count);
void weft_countdown_signal(weft_countdown_t *cd, int n);  /* count -= n */
void weft_countdown_add(weft_countdown_t *cd, int n);     /* count += n */
void weft_countdown_wait(weft_countdown_t *cd);
int weft_countdown_timedwait(weft_countdown_t *cd, int64_t deadline_ns);

/* Counting semaphore. */
typedef struct weft_sem {
    int32_t value;
} weft_sem_t;

void weft_sem_init(weft_sem_t *s, int value);
void weft_sem_post(weft_sem_t *s, int n);
void weft_sem_wait(weft_sem_t *s);
int weft_sem_trywait(weft_sem_t *s);                        /* 0 or -EAGAIN */
int weft_sem_timedwait(weft_sem_t *s, int64_t deadline_ns); /* 0 or -ETIMEDOUT */

/* Reader-writer lock, writer-preferring: once a writer waits, new readers
 * wait behind it. */
typedef struct weft_rwlock {
    int32_t state;           /* readers holding it, or -1 for a writer */
    int32_t writers_waiting;
    int32_t seq;             /* waiters sleep on it; bumped at each release */
} weft_rwlock_t;
#define WEFT_RWLOCK_INITIALIZER {0, 0, 0}

void weft_rwlock_init(weft_rwlock_t *rw);
void weft_rwlock_rdlock(weft_rwlock_t *rw);
int weft_rwlock_tryrdlock(weft_rwlock_t *rw);
int weft_rwlock_timedrdlock(weft_rwlock_t *rw, int64_t deadline_ns);
void weft_rwlock_wrlock(weft_rwlock_t *rw);
int weft_rwlock_trywrlock(weft_rwlock_t *rw);
int weft_rwlock_timedwrlock(weft_rwlock_t *rw, int64_t deadline_ns);
void weft_rwlock_unlock(weft_rwlock_t *rw);

#ifdef __cplusplus
}
#endif
#endif
