/*
 * stack_internal.h - fiber stacks: mmap'ed, guarded, pooled.
 */
#ifndef WEFT_FIBER_STACK_INTERNAL_H
#define WEFT_FIBER_STACK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "fiber/sanitizer_internal.h"

typedef struct weft__stack weft__stack_t;

struct weft__stack {
    char *lo;            /* lowest usable byte, just above the guard */
    char *hi;            /* one past the highest usable byte */
    char *map;           /* start of the mapping (the guard pages) */
    size_t map_size;
    int cls;             /* size class, or -1 for a custom size */
    weft__stack_t *next; /* in a free list */
#ifdef WEFT_TSAN
    void *tsan_fiber;    /* ThreadSanitizer's context for code on this stack */
    int tsan_uses;       /* fibers that ran on it since the context was made */
#endif
};

/* Size classes; a fiber attribute names one or gives bytes (custom). */
enum { WEFT__STACK_SMALL, WEFT__STACK_DEFAULT, WEFT__STACK_LARGE, WEFT__STACK_NCLASS };

/* Class for an attribute's stack_size, or -1 for a custom size. */
int weft__stack_class(size_t stack_size);

/* A stack of the class (or of `bytes` when cls < 0). NULL when out of memory
 * or mappings (vm.max_map_count). */
weft__stack_t *weft__stack_get(int cls, size_t bytes);
void weft__stack_put(weft__stack_t *s);

/* Unmaps stacks kept beyond the caches' limits, one at a time until the
 * clock passes `until`. Called by the timer thread, off the workers' path,
 * in a window it chooses. */
void weft__stack_trim(int64_t until);

/* Guard region of a stack, for the overflow handler. */
static inline int weft__stack_in_guard(const weft__stack_t *s, const void *addr)
{
    const char *a = (const char *)addr;
    return s && a >= s->map && a < s->lo;
}

typedef struct {
    int64_t mapped[WEFT__STACK_NCLASS + 1]; /* per class, last is custom */
    int64_t bytes_mapped;
} weft__stack_stats_t;

void weft__stack_stats(weft__stack_stats_t *out);

#endif
