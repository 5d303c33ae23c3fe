/*
 * pool.c - see pool.h.
 *
 * Layout: slot = group:8 | block:10 | index:8. Groups and blocks are created
 * on demand and published with release stores, so weft_pool_at() needs no
 * lock. Each thread keeps, per pool, a cache of up to CACHE_CAP free slots;
 * a miss moves half a cache from or to the shared list under the pool lock.
 */
#include "fiber/pool.h"
#include "fiber/log.h"

#include <stdlib.h>
#include <string.h>

#define CACHE_CAP 64
#define MAX_POOLS 64

struct weft__pool_cache {
    weft_pool_t *pool;
    struct weft__pool_cache *next, **pprev; /* in pool->caches */
    int64_t live;                            /* gets minus puts, this thread */
    uint32_t n;
    uint32_t slots[CACHE_CAP];
};

static int pool_count;
static weft_pool_t *all_pools[MAX_POOLS];
static pthread_key_t cache_key;
static pthread_once_t cache_key_once = PTHREAD_ONCE_INIT;
static __thread struct weft__pool_cache *tls_caches[MAX_POOLS];
static __thread int tls_key_set;

void weft_pool_init(weft_pool_t *pool, const char *name, size_t obj_size,
                    size_t align, weft_pool_init_fn *init)
{
    memset(pool, 0, sizeof(*pool));
    pool->name = name;
    pool->obj_size = obj_size;
    pool->align = align;
    pool->init = init;
    pool->index = -1;
    pthread_mutex_init(&pool->lock, NULL);
}

static size_t pool_obj_size(weft_pool_t *pool)
{
    size_t a = pool->align < sizeof(void *) ? sizeof(void *) : pool->align;
    return (pool->obj_size + a - 1) & ~(a - 1);
}

static void cache_release_all(void *arg)
{
    (void)arg;
    for (int i = 0; i < MAX_POOLS; i++) {
        struct weft__pool_cache *c = tls_caches[i];
        if (!c)
            continue;
        weft_pool_t *pool = c->pool;
        pthread_mutex_lock(&pool->lock);
        if (c->n)
            memcpy(pool->free_slots + pool->nfree, c->slots, c->n * sizeof(uint32_t));
        pool->nfree += c->n;
        pool->dead_live += c->live;
        *c->pprev = c->next;
        if (c->next)
            c->next->pprev = c->pprev;
        pthread_mutex_unlock(&pool->lock);
        free(c);
        tls_caches[i] = NULL;
    }
}

static void cache_key_create(void)
{
    pthread_key_create(&cache_key, cache_release_all);
}

static int pool_index(weft_pool_t *pool)
{
    int idx = __atomic_load_n(&pool->index, __ATOMIC_ACQUIRE);
    if (idx >= 0)
        return idx;
    pthread_mutex_lock(&pool->lock);
    if (pool->index < 0) {
        int n = __atomic_fetch_add(&pool_count, 1, __ATOMIC_RELAXED);
        if (n >= MAX_POOLS) {
            WEFT_LOG_ERROR("more than %d resource pools", MAX_POOLS);
            abort();
        }
        pool->obj_size = pool_obj_size(pool);
        __atomic_store_n(&all_pools[n], pool, __ATOMIC_RELEASE);
        __atomic_store_n(&pool->index, n, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&pool->lock);
    return pool->index;
}

static struct weft__pool_cache *cache_of(weft_pool_t *pool)
{
    int idx = pool_index(pool);
    struct weft__pool_cache *c = tls_caches[idx];
    if (__builtin_expect(c != NULL, 1))
        return c;
    c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->pool = pool;
    pthread_once(&cache_key_once, cache_key_create);
    if (!tls_key_set) {
        pthread_setspecific(cache_key, (void *)1);
        tls_key_set = 1;
    }
    pthread_mutex_lock(&pool->lock);
    c->next = pool->caches;
    if (c->next)
        c->next->pprev = &c->next;
    c->pprev = &pool->caches;
    pool->caches = c;
    pthread_mutex_unlock(&pool->lock);
    tls_caches[idx] = c;
    return c;
}

/* Creates the block holding `slot` if it is missing. Pool lock held. */
static int pool_grow_to(weft_pool_t *pool, uint32_t slot)
{
    uint32_t g = slot >> (WEFT_POOL_BLOCK_SHIFT + WEFT_POOL_GROUP_SHIFT);
    uint32_t b = (slot >> WEFT_POOL_BLOCK_SHIFT) & ((1u << WEFT_POOL_GROUP_SHIFT) - 1);
    char **group = pool->groups[g];
    if (!group) {
        group = calloc(1u << WEFT_POOL_GROUP_SHIFT, sizeof(char *));
        if (!group)
            return -1;
        __atomic_store_n(&pool->groups[g], group, __ATOMIC_RELEASE);
    }
    if (group[b])
        return 0;
    size_t per_block = 1u << WEFT_POOL_BLOCK_SHIFT;
    size_t align = pool->align < 64 ? 64 : pool->align;
    size_t bytes = (per_block * pool->obj_size + align - 1) & ~(align - 1);
    char *block = aligned_alloc(align, bytes);
    if (!block)
        return -1;
    memset(block, 0, bytes);
    if (pool->init) {
        uint32_t first = slot & ~(uint32_t)(per_block - 1);
        for (size_t i = 0; i < per_block; i++)
            pool->init(block + i * pool->obj_size, first + (uint32_t)i);
    }
    __atomic_store_n(&group[b], block, __ATOMIC_RELEASE);
    return 0;
}

/* Moves up to CACHE_CAP/2 free slots into the cache, creating new ones when
 * the shared list is empty. */
static void cache_refill(weft_pool_t *pool, struct weft__pool_cache *c)
{
    pthread_mutex_lock(&pool->lock);
    uint32_t want = CACHE_CAP / 2;
    uint32_t take = pool->nfree < want ? pool->nfree : want;
    pool->nfree -= take;
    if (take)
        memcpy(c->slots, pool->free_slots + pool->nfree, take * sizeof(uint32_t));
    c->n = take;
    while (c->n < want && pool->nslots < WEFT_POOL_MAX_SLOTS) {
        uint32_t slot = pool->nslots;
        if (pool_grow_to(pool, slot) != 0)
            break;
        pool->nslots++;
        c->slots[c->n++] = slot;
    }
    /* The shared list must be able to take back every slot that exists. */
    if (pool->free_cap < pool->nslots) {
        uint32_t cap = pool->free_cap ? pool->free_cap : 1024;
        while (cap < pool->nslots)
            cap *= 2;
        uint32_t *p = realloc(pool->free_slots, cap * sizeof(uint32_t));
        if (p) {
            pool->free_slots = p;
            pool->free_cap = cap;
        } else {
            /* Keep the list big enough by not handing out the new slots. */
            pool->nslots -= c->n - take;
            c->n = take;
        }
    }
    pthread_mutex_unlock(&pool->lock);
}

void *weft_pool_get(weft_pool_t *pool, uint32_t *slot)
{
    struct weft__pool_cache *c = cache_of(pool);
    if (!c)
        return NULL;
    if (c->n == 0) {
        cache_refill(pool, c);
        if (c->n == 0)
            return NULL;
    }
    uint32_t s = c->slots[--c->n];
    __atomic_store_n(&c->live, c->live + 1, __ATOMIC_RELAXED);
    *slot = s;
    return weft_pool_at(pool, s);
}

void weft_pool_put(weft_pool_t *pool, uint32_t slot)
{
    struct weft__pool_cache *c = cache_of(pool);
    if (!c) {
        pthread_mutex_lock(&pool->lock);
        pool->free_slots[pool->nfree++] = slot;
        pool->dead_live--;
        pthread_mutex_unlock(&pool->lock);
        return;
    }
    if (c->n == CACHE_CAP) {
        uint32_t give = CACHE_CAP / 2;
        pthread_mutex_lock(&pool->lock);
        memcpy(pool->free_slots + pool->nfree, c->slots + c->n - give,
               give * sizeof(uint32_t));
        pool->nfree += give;
        pthread_mutex_unlock(&pool->lock);
        c->n -= give;
    }
    c->slots[c->n++] = slot;
    __atomic_store_n(&c->live, c->live - 1, __ATOMIC_RELAXED);
}

void weft_pool_stats(weft_pool_t *pool, weft_pool_stats_t *out)
{
    pthread_mutex_lock(&pool->lock);
    out->slots = pool->nslots;
    int64_t live = pool->dead_live;
    for (struct weft__pool_cache *c = pool->caches; c; c = c->next)
        live += __atomic_load_n(&c->live, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&pool->lock);
    out->live = live;
}

void weft_pool_foreach(void (*fn)(weft_pool_t *pool, void *arg), void *arg)
{
    int n = __atomic_load_n(&pool_count, __ATOMIC_ACQUIRE);
    for (int i = 0; i < n && i < MAX_POOLS; i++) {
        weft_pool_t *p = __atomic_load_n(&all_pools[i], __ATOMIC_ACQUIRE);
        if (p)
            fn(p, arg);
    }
}
