/*
 * pool.h - resource pool: objects addressed by a 32-bit slot, recycled under
 * a 32-bit version.
 *
 * A pool hands out fixed-size objects by slot number. Memory is type-stable:
 * once a slot exists its memory is never unmapped or handed to another type,
 * so code holding a stale id can still read the slot, see that the version
 * moved on, and back off, instead of touching freed memory. That is what
 * makes ids like fiber ids and SocketIds (version << 32 | slot) safe to keep
 * for ever. The pool does not know where an object keeps its version: it
 * lives in the object (an atomic word the owner bumps on recycle), and get()
 * does not clear memory, so the version survives recycling.
 *
 * Allocation and release go through a small per-thread cache of free slots,
 * refilled from and drained to a shared list in batches, so the common case
 * takes no lock and touches no shared cache line.
 */
#ifndef WEFT_FIBER_POOL_H
#define WEFT_FIBER_POOL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WEFT_POOL_BLOCK_SHIFT 8   /* objects per block: 256 */
#define WEFT_POOL_GROUP_SHIFT 10  /* blocks per group: 1024 */
#define WEFT_POOL_MAX_GROUPS 256  /* at most 2^26 objects per pool */
#define WEFT_POOL_MAX_SLOTS \
    (1u << (WEFT_POOL_BLOCK_SHIFT + WEFT_POOL_GROUP_SHIFT + 8))

typedef struct weft_pool weft_pool_t;

/* Called once for each object when its memory is first created (to set up
 * a lock or a version word); never again when it is recycled. */
typedef void weft_pool_init_fn(void *obj, uint32_t slot);

struct weft_pool {
    const char *name;
    size_t obj_size;            /* rounded up to the alignment */
    size_t align;
    weft_pool_init_fn *init;
    int index;                  /* position in the per-thread cache table */
    char **groups[WEFT_POOL_MAX_GROUPS]; /* published with release stores */
    pthread_mutex_t lock;       /* guards everything below */
    uint32_t nslots;            /* slots ever created */
    uint32_t *free_slots;       /* shared free list (a stack) */
    uint32_t nfree, free_cap;
    int64_t dead_live;          /* live-count deltas of exited threads */
    struct weft__pool_cache *caches; /* every thread's cache, for stats */
};

#define WEFT_POOL_INITIALIZER(name_, type_, init_)                              \
    {                                                                           \
        .name = (name_), .obj_size = sizeof(type_), .align = _Alignof(type_),   \
        .init = (init_), .index = -1, .lock = PTHREAD_MUTEX_INITIALIZER,        \
    }

/* Sets up a pool at run time (a static pool may use WEFT_POOL_INITIALIZER
 * instead). align must be a power of two. */
void weft_pool_init(weft_pool_t *pool, const char *name, size_t obj_size,
                    size_t align, weft_pool_init_fn *init);

/* A free object and its slot, or NULL with *slot untouched when the pool is
 * full (2^26 objects) or memory ran out. */
void *weft_pool_get(weft_pool_t *pool, uint32_t *slot);

/* Gives the slot back. The object must not be used through this slot again
 * except by code that checks a version first. */
void weft_pool_put(weft_pool_t *pool, uint32_t slot);

/* The object at a slot, whether in use or free; NULL if the slot was never
 * created. Lock-free and safe from any thread. */
static inline void *weft_pool_at(weft_pool_t *pool, uint32_t slot)
{
    uint32_t g = slot >> (WEFT_POOL_BLOCK_SHIFT + WEFT_POOL_GROUP_SHIFT);
    if (g >= WEFT_POOL_MAX_GROUPS)
        return NULL;
    char **group = __atomic_load_n(&pool->groups[g], __ATOMIC_ACQUIRE);
    if (!group)
        return NULL;
    uint32_t b = (slot >> WEFT_POOL_BLOCK_SHIFT) & ((1u << WEFT_POOL_GROUP_SHIFT) - 1);
    char *block = __atomic_load_n(&group[b], __ATOMIC_ACQUIRE);
    if (!block)
        return NULL;
    return block + (size_t)(slot & ((1u << WEFT_POOL_BLOCK_SHIFT) - 1)) * pool->obj_size;
}

typedef struct {
    uint64_t slots;   /* slots ever created (memory held) */
    int64_t live;     /* objects handed out and not yet put back */
} weft_pool_stats_t;

void weft_pool_stats(weft_pool_t *pool, weft_pool_stats_t *out);

/* Calls fn for every pool that has handed out an object, for metrics. */
void weft_pool_foreach(void (*fn)(weft_pool_t *pool, void *arg), void *arg);

#ifdef __cplusplus
}
#endif
#endif
