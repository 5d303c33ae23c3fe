/*
 * work_stealing_queue.h - bounded Chase-Lev deque of pointers.
 *
 * The owner pushes and pops at the bottom (LIFO: the fiber readied last runs
 * next, while its data is still in cache); thieves take from the top (FIFO:
 * the oldest work, the least likely to be hot anywhere). The deque is safe
 * against a thief stalled in the middle of a steal only because `top` never
 * goes down: do not add an operation that lowers it (tests/fiber/
 * test_wsq_race.c shows what breaks). Owner operations
 * touch no shared cache line unless the deque is nearly empty; a steal is one
 * CAS. Memory orders follow Lê, Pop, Cohen and Zappa Nardelli, "Correct and
 * Efficient Work-Stealing for Weak Memory Models" (PPoPP 2013), with the
 * push's release fence folded into a release store so ThreadSanitizer sees
 * the synchronisation. The capacity is fixed: a full deque refuses the push
 * and the caller puts the item elsewhere.
 */
#ifndef WEFT_FIBER_WORK_STEALING_QUEUE_H
#define WEFT_FIBER_WORK_STEALING_QUEUE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct weft__wsq {
    _Alignas(64) int64_t top;   /* next to steal; thieves CAS it */
    _Alignas(64) int64_t bottom; /* next free slot; written by the owner only */
    void **buf;
    int64_t mask;
} weft__wsq_t;

static inline int weft__wsq_init(weft__wsq_t *q, int64_t capacity_pow2)
{
    q->top = q->bottom = 0;
    q->mask = capacity_pow2 - 1;
    q->buf = calloc((size_t)capacity_pow2, sizeof(void *));
    return q->buf ? 0 : -1;
}

static inline void weft__wsq_destroy(weft__wsq_t *q)
{
    free(q->buf);
    q->buf = NULL;
}

/* Owner only. False when full. */
static inline bool weft__wsq_push(weft__wsq_t *q, void *item)
{
    int64_t b = __atomic_load_n(&q->bottom, __ATOMIC_RELAXED);
    int64_t t = __atomic_load_n(&q->top, __ATOMIC_ACQUIRE);
    if (b - t > q->mask)
        return false;
    __atomic_store_n(&q->buf[b & q->mask], item, __ATOMIC_RELAXED);
    __atomic_store_n(&q->bottom, b + 1, __ATOMIC_RELEASE);
    return true;
}

/* Owner only. NULL when empty. */
static inline void *weft__wsq_pop(weft__wsq_t *q)
{
    int64_t b = __atomic_load_n(&q->bottom, __ATOMIC_RELAXED) - 1;
    int64_t t = __atomic_load_n(&q->top, __ATOMIC_RELAXED);
    if (t > b) /* cheap exit when empty: no fence, no store */
        return NULL;
    __atomic_store_n(&q->bottom, b, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    t = __atomic_load_n(&q->top, __ATOMIC_RELAXED);
    void *item = NULL;
    if (t <= b) {
        item = __atomic_load_n(&q->buf[b & q->mask], __ATOMIC_RELAXED);
        if (t == b) {
            /* Last item: race the thieves for it. */
            if (!__atomic_compare_exchange_n(&q->top, &t, t + 1, false, __ATOMIC_SEQ_CST,
                                             __ATOMIC_RELAXED))
                item = NULL;
            __atomic_store_n(&q->bottom, b + 1, __ATOMIC_RELAXED);
        }
    } else {
        __atomic_store_n(&q->bottom, b + 1, __ATOMIC_RELAXED);
    }
    return item;
}

/* Any thread. NULL when empty or when another thief won the race. */
static inline void *weft__wsq_steal(weft__wsq_t *q)
{
    int64_t t = __atomic_load_n(&q->top, __ATOMIC_ACQUIRE);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    int64_t b = __atomic_load_n(&q->bottom, __ATOMIC_ACQUIRE);
    if (t >= b)
        return NULL;
    void *item = __atomic_load_n(&q->buf[t & q->mask], __ATOMIC_RELAXED);
    if (!__atomic_compare_exchange_n(&q->top, &t, t + 1, false, __ATOMIC_SEQ_CST,
                                     __ATOMIC_RELAXED))
        return NULL;
    return item;
}

/* Any thread; a snapshot that may be stale by the time it is used. */
static inline int64_t weft__wsq_size(const weft__wsq_t *q)
{
    int64_t b = __atomic_load_n(&q->bottom, __ATOMIC_ACQUIRE);
    int64_t t = __atomic_load_n(&q->top, __ATOMIC_ACQUIRE);
    return b > t ? b - t : 0;
}

#endif
