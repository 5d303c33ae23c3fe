/*
 * stack.c - fiber stacks.
 *
 * Each stack is its own mapping with PROT_NONE guard pages at the low end, so
 * an overflow faults instead of corrupting a neighbour; the scheduler's
 * SIGSEGV handler recognises a fault in the guard and names the fiber. The
 * mapping is MAP_NORESERVE and touched lazily, so a 256 KiB stack costs the
 * pages a fiber actually uses. Stacks are reused LIFO through a per-thread
 * cache and a shared list per size class, because mmap + mprotect + munmap
 * per fiber would cost more than everything else a fiber start does, and a
 * recently used stack is warm in cache and TLB. A worker never unmaps: a
 * fiber's exit returns its stack to the shared list whatever its length,
 * and the timer thread trims what the list holds beyond its limit, a few at
 * a time while no timer is due, so that a burst of thousands of fibers
 * ending does not turn into thousands of munmap calls on the workers'
 * critical path.
 */
#include "fiber/stack_internal.h"
#include "fiber/clock.h"
#include "fiber/fiber.h"
#include "fiber/log.h"
#include "fiber/sanitizer_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define GUARD_PAGES 4

static const size_t class_size[WEFT__STACK_NCLASS] = {
    32 * 1024 * WEFT_STACK_SCALE,
    256 * 1024 * WEFT_STACK_SCALE,
    8 * 1024 * 1024 * WEFT_STACK_SCALE,
};
/* How many free stacks of each class a thread keeps, and the shared list. */
static const int tls_cache_max[WEFT__STACK_NCLASS] = {64, 32, 2};
static const int shared_max[WEFT__STACK_NCLASS] = {4096, 1024, 16};
struct stack_cache {
    weft__stack_t *head;
    int n;
};

static __thread struct stack_cache tls_cache[WEFT__STACK_NCLASS];

static struct {
    pthread_mutex_t lock;
    weft__stack_t *head;
    int n;
} shared[WEFT__STACK_NCLASS] = {
    {PTHREAD_MUTEX_INITIALIZER, NULL, 0},
    {PTHREAD_MUTEX_INITIALIZER, NULL, 0},
    {PTHREAD_MUTEX_INITIALIZER, NULL, 0},
};

static int64_t stat_mapped[WEFT__STACK_NCLASS + 1];
static int64_t stat_bytes;

static size_t page_size(void)
{
    static size_t ps;
    size_t v = __atomic_load_n(&ps, __ATOMIC_RELAXED);
    if (!v) {
        v = (size_t)sysconf(_SC_PAGESIZE);
        __atomic_store_n(&ps, v, __ATOMIC_RELAXED);
    }
    return v;
}

int weft__stack_class(size_t stack_size)
{
    switch (stack_size) {
    case 0:
    case WEFT_STACK_DEFAULT:
        return WEFT__STACK_DEFAULT;
    case WEFT_STACK_SMALL:
        return WEFT__STACK_SMALL;
    case WEFT_STACK_LARGE:
        return WEFT__STACK_LARGE;
    default:
        return -1;
    }
}

static weft__stack_t *stack_map(int cls, size_t bytes)
{
    size_t ps = page_size();
    size_t usable = cls >= 0 ? class_size[cls] : bytes * WEFT_STACK_SCALE;
    usable = (usable + ps - 1) & ~(ps - 1);
    if (usable < 4 * ps)
        usable = 4 * ps;
    size_t guard = GUARD_PAGES * ps;
    size_t total = guard + usable;
    char *map = mmap(NULL, total, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (map == MAP_FAILED) {
        WEFT_LOG_EVERY_SEC(WEFT_LOG_ERROR, "mmap of a %zu-byte fiber stack failed: %m", total);
        return NULL;
    }
    if (mprotect(map, guard, PROT_NONE) != 0) {
        WEFT_LOG_EVERY_SEC(WEFT_LOG_ERROR,
                           "mprotect of a stack guard failed (vm.max_map_count?): %m");
        munmap(map, total);
        return NULL;
    }
    /* The descriptor lives at the top of its own stack. */
    weft__stack_t *s = (weft__stack_t *)(map + total) - 1;
    s->map = map;
    s->map_size = total;
    s->lo = map + guard;
    s->hi = (char *)s;
    s->cls = cls;
    s->next = NULL;
#ifdef WEFT_TSAN
    /* One TSan context per stack, not per fiber: creating one costs tens of
     * microseconds, and fibers that share a stack never overlap anyway. */
    s->tsan_fiber = __tsan_create_fiber(0);
#endif
    __atomic_fetch_add(&stat_mapped[cls >= 0 ? cls : WEFT__STACK_NCLASS], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&stat_bytes, (int64_t)total, __ATOMIC_RELAXED);
    return s;
}

static void stack_unmap(weft__stack_t *s)
{
    int cls = s->cls;
    size_t total = s->map_size;
#ifdef WEFT_TSAN
    __tsan_destroy_fiber(s->tsan_fiber);
#endif
    munmap(s->map, total);
    __atomic_fetch_sub(&stat_mapped[cls >= 0 ? cls : WEFT__STACK_NCLASS], 1, __ATOMIC_RELAXED);
    __atomic_fetch_sub(&stat_bytes, (int64_t)total, __ATOMIC_RELAXED);
}

weft__stack_t *weft__stack_get(int cls, size_t bytes)
{
    if (cls < 0)
        return stack_map(cls, bytes);
    struct stack_cache *c = &tls_cache[cls];
    weft__stack_t *s = c->head;
    if (s) {
        c->head = s->next;
        c->n--;
        return s;
    }
    pthread_mutex_lock(&shared[cls].lock);
    s = shared[cls].head;
    if (s) {
        shared[cls].head = s->next;
        shared[cls].n--;
    }
    pthread_mutex_unlock(&shared[cls].lock);
    return s ? s : stack_map(cls, 0);
}

void weft__stack_put(weft__stack_t *s)
{
    int cls = s->cls;
#ifdef WEFT_TSAN
    /* A fiber never returns from its entry, so each one leaves frames on
     * TSan's shadow stack of this context: start a fresh one now and then
     * before they pile up. */
    if (++s->tsan_uses >= 256) {
        __tsan_destroy_fiber(s->tsan_fiber);
        s->tsan_fiber = __tsan_create_fiber(0);
        s->tsan_uses = 0;
    }
#endif
#ifdef WEFT_ASAN
    /* Frames that never returned (the fiber's entry) left poisoned redzones;
     * the next fiber on this stack must start clean. */
    __asan_unpoison_memory_region(s->lo, (size_t)(s->hi - s->lo));
#endif
    if (cls < 0) {
        stack_unmap(s);
        return;
    }
    struct stack_cache *c = &tls_cache[cls];
    if (c->n < tls_cache_max[cls]) {
        s->next = c->head;
        c->head = s;
        c->n++;
        return;
    }
    pthread_mutex_lock(&shared[cls].lock);
    s->next = shared[cls].head;
    shared[cls].head = s;
    shared[cls].n++;
    pthread_mutex_unlock(&shared[cls].lock);
}

void weft__stack_trim(int64_t until)
{
    for (int cls = 0; cls < WEFT__STACK_NCLASS; cls++) {
        while (weft_clock_ns() < until) {
            weft__stack_t *s = NULL;
            pthread_mutex_lock(&shared[cls].lock);
            if (shared[cls].n > shared_max[cls]) {
                s = shared[cls].head;
                shared[cls].head = s->next;
                shared[cls].n--;
            }
            pthread_mutex_unlock(&shared[cls].lock);
            if (!s)
                break;
            stack_unmap(s);
        }
    }
}

void weft__stack_stats(weft__stack_stats_t *out)
{
    for (int i = 0; i <= WEFT__STACK_NCLASS; i++)
        out->mapped[i] = __atomic_load_n(&stat_mapped[i], __ATOMIC_RELAXED);
    out->bytes_mapped = __atomic_load_n(&stat_bytes, __ATOMIC_RELAXED);
}
