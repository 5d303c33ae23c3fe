/*
 * histogram.h - log-linear histogram of non-negative 64-bit values.
 *
 * Values are counted in buckets whose width grows with the value, so every
 * bucket is at most 1/128 of the values it holds wide: octave 0 counts 0..127
 * exactly, and octave o >= 1 splits [2^(o+6), 2^(o+7)) into 128 equal
 * buckets. A percentile is read back as the middle of its bucket, within
 * 0.4% of the exact value, from any int64 range (a nanosecond or a day). The
 * idea is HdrHistogram's: the bucket of a value is its top bit (clz) and the
 * 7 bits below it (a shift), so recording costs a few instructions, with no
 * division, no floating point and no search.
 *
 * The 128 counters of an octave are allocated the first time a value falls
 * in it: latencies that cluster within a few powers of two cost a few KiB.
 *
 * A histogram is a plain value: zeroed memory (or WEFT_HISTOGRAM_INITIALIZER)
 * is an empty histogram, it has no lock and no link to anything else. Give
 * one to each thread or fiber and merge them at the end. One writer may
 * record while other threads merge it into their own histogram (that is how
 * the latency recorder of metrics.h reads per-thread histograms): the writer
 * stores with relaxed atomics and the readers load with them, which costs
 * nothing extra on x86-64 and aarch64. Anything else needs a lock.
 */
#ifndef WEFT_FIBER_HISTOGRAM_H
#define WEFT_FIBER_HISTOGRAM_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WEFT_HISTOGRAM_SUB_BITS 7
#define WEFT_HISTOGRAM_SUB_COUNT (1 << WEFT_HISTOGRAM_SUB_BITS) /* buckets per octave */
#define WEFT_HISTOGRAM_OCTAVES (64 - WEFT_HISTOGRAM_SUB_BITS)   /* up to INT64_MAX */

typedef struct weft_histogram {
    int64_t count;
    int64_t sum;      /* wraps past INT64_MAX; the mean is then meaningless */
    int64_t max;      /* 0 while empty: values are >= 0 */
    int64_t min_comp; /* INT64_MAX - min, so that zero means "no value yet" */
    uint64_t *octaves[WEFT_HISTOGRAM_OCTAVES]; /* NULL until first used */
} weft_histogram_t;

#define WEFT_HISTOGRAM_INITIALIZER {0}

/* Allocates the counters of octave o. Internal; 0 or -ENOMEM. */
int weft__histogram_octave_alloc(weft_histogram_t *h, unsigned o);

/* Same as zeroing it. */
void weft_histogram_init(weft_histogram_t *h);

/* Frees the counters; the histogram is then empty and may be used again. */
void weft_histogram_destroy(weft_histogram_t *h);

/* Forgets every value but keeps the counters allocated. */
void weft_histogram_reset(weft_histogram_t *h);

/* One writer, maybe concurrent readers: load, add, store, all relaxed. No
 * read-modify-write instruction, and no data race for the readers. */
static inline void weft__histogram_bump(int64_t *p, uint64_t n)
{
    uint64_t v = (uint64_t)__atomic_load_n(p, __ATOMIC_RELAXED);
    __atomic_store_n(p, (int64_t)(v + n), __ATOMIC_RELAXED);
}

/*
 * Counts one value; negative values count as 0. Returns 0, or -ENOMEM when
 * the value's octave could not be allocated (the value is then dropped).
 */
static inline int weft_histogram_record(weft_histogram_t *h, int64_t value)
{
    int64_t v = value > 0 ? value : 0;
    unsigned o = 0, sub = (unsigned)v;
    if (v >= WEFT_HISTOGRAM_SUB_COUNT) {
        unsigned top = 63u - (unsigned)__builtin_clzll((uint64_t)v);
        o = top - (WEFT_HISTOGRAM_SUB_BITS - 1);
        sub = (unsigned)(v >> (top - WEFT_HISTOGRAM_SUB_BITS)) & (WEFT_HISTOGRAM_SUB_COUNT - 1);
    }
    uint64_t *b = h->octaves[o];
    if (__builtin_expect(b == NULL, 0)) {
        if (weft__histogram_octave_alloc(h, o) != 0)
            return -ENOMEM;
        b = h->octaves[o];
    }
    weft__histogram_bump((int64_t *)&b[sub], 1);
    weft__histogram_bump(&h->count, 1);
    weft__histogram_bump(&h->sum, (uint64_t)v);
    if (v > __atomic_load_n(&h->max, __ATOMIC_RELAXED))
        __atomic_store_n(&h->max, v, __ATOMIC_RELAXED);
    if (INT64_MAX - v > __atomic_load_n(&h->min_comp, __ATOMIC_RELAXED))
        __atomic_store_n(&h->min_comp, INT64_MAX - v, __ATOMIC_RELAXED);
    return 0;
}

/* Adds every value of src to dst. src may be recorded into meanwhile by its
 * one writer. Returns 0 or -ENOMEM (dst then holds part of src). */
int weft_histogram_merge(weft_histogram_t *dst, const weft_histogram_t *src);

/*
 * Removes from dst the values of src, which must be part of dst (dst was
 * src plus more, bucket by bucket): a cumulative histogram minus an earlier
 * copy of itself gives the values recorded in between. min and max become
 * the bounds of the first and last non-empty buckets. Returns 0, or -EINVAL
 * if src was not part of dst (such buckets are left at zero).
 */
int weft_histogram_subtract(weft_histogram_t *dst, const weft_histogram_t *src);

int64_t weft_histogram_count(const weft_histogram_t *h);
int64_t weft_histogram_sum(const weft_histogram_t *h);
int64_t weft_histogram_min(const weft_histogram_t *h); /* 0 when empty */
int64_t weft_histogram_max(const weft_histogram_t *h); /* 0 when empty */
double weft_histogram_mean(const weft_histogram_t *h);  /* 0 when empty */

/*
 * The value at percentile p (0..100): the smallest value v such that at
 * least p% of the values are <= v ("nearest rank"), within 0.4%. p <= 0
 * gives the minimum, p >= 100 the maximum, an empty histogram 0.
 */
int64_t weft_histogram_percentile(const weft_histogram_t *h, double p);

/* Bytes of counters allocated (not counting the struct itself). */
size_t weft_histogram_memory(const weft_histogram_t *h);

#ifdef __cplusplus
}
#endif
#endif
