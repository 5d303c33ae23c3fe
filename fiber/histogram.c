/*
 * histogram.c - see histogram.h.
 *
 * Everything but recording walks the octaves that exist, 128 counters each,
 * in value order; that is all there is to merging, subtracting and finding
 * a percentile. Reads of another histogram's counters are relaxed atomic
 * loads, so a histogram can be read while its one writer records.
 */
#include "fiber/histogram.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define OCTAVE_BYTES (WEFT_HISTOGRAM_SUB_COUNT * sizeof(uint64_t))

/* Smallest value of bucket (o, sub), and the bucket's width. */
static inline uint64_t bucket_lower(unsigned o, unsigned sub)
{
    if (o == 0)
        return sub;
    return (uint64_t)(WEFT_HISTOGRAM_SUB_COUNT + sub) << (o - 1);
}

static inline uint64_t bucket_width(unsigned o)
{
    return o == 0 ? 1 : (uint64_t)1 << (o - 1);
}

static inline const uint64_t *octave_of(const weft_histogram_t *h, unsigned o)
{
    return __atomic_load_n(&h->octaves[o], __ATOMIC_ACQUIRE);
}

int weft__histogram_octave_alloc(weft_histogram_t *h, unsigned o)
{
    uint64_t *b = calloc(WEFT_HISTOGRAM_SUB_COUNT, sizeof(uint64_t));
    if (!b)
        return -ENOMEM;
    /* Release: a concurrent reader that sees the pointer sees zeroes. */
    __atomic_store_n(&h->octaves[o], b, __ATOMIC_RELEASE);
    return 0;
}

void weft_histogram_init(weft_histogram_t *h)
{
    memset(h, 0, sizeof(*h));
}

void weft_histogram_destroy(weft_histogram_t *h)
{
    for (unsigned o = 0; o < WEFT_HISTOGRAM_OCTAVES; o++)
        free(h->octaves[o]);
    memset(h, 0, sizeof(*h));
}

void weft_histogram_reset(weft_histogram_t *h)
{
    for (unsigned o = 0; o < WEFT_HISTOGRAM_OCTAVES; o++)
        if (h->octaves[o])
            memset(h->octaves[o], 0, OCTAVE_BYTES);
    h->count = 0;
    h->sum = 0;
    h->max = 0;
    h->min_comp = 0;
}

int weft_histogram_merge(weft_histogram_t *dst, const weft_histogram_t *src)
{
    int rc = 0;
    int64_t added = 0;
    for (unsigned o = 0; o < WEFT_HISTOGRAM_OCTAVES; o++) {
        const uint64_t *sb = octave_of(src, o);
        if (!sb)
            continue;
        for (unsigned sub = 0; sub < WEFT_HISTOGRAM_SUB_COUNT; sub++) {
            uint64_t c = __atomic_load_n(&sb[sub], __ATOMIC_RELAXED);
            if (c == 0)
                continue;
            if (!dst->octaves[o] && weft__histogram_octave_alloc(dst, o) != 0) {
                rc = -ENOMEM;
                break;
            }
            dst->octaves[o][sub] += c;
            added += (int64_t)c;
        }
    }
    /* The count is what the buckets say: the writer's count may run ahead of
     * or behind the bucket we just read. */
    dst->count += added;
    dst->sum = (int64_t)((uint64_t)dst->sum +
                         (uint64_t)__atomic_load_n(&src->sum, __ATOMIC_RELAXED));
    int64_t max = __atomic_load_n(&src->max, __ATOMIC_RELAXED);
    int64_t min_comp = __atomic_load_n(&src->min_comp, __ATOMIC_RELAXED);
    if (max > dst->max)
        dst->max = max;
    if (min_comp > dst->min_comp)
        dst->min_comp = min_comp;
    return rc;
}

/* Recomputes count, min and max from the buckets. */
static void rescan(weft_histogram_t *h)
{
    int64_t count = 0;
    uint64_t lo = 0, hi = 0;
    for (unsigned o = 0; o < WEFT_HISTOGRAM_OCTAVES; o++) {
        const uint64_t *b = h->octaves[o];
        if (!b)
            continue;
        for (unsigned sub = 0; sub < WEFT_HISTOGRAM_SUB_COUNT; sub++) {
            if (b[sub] == 0)
                continue;
            if (count == 0)
                lo = bucket_lower(o, sub);
            hi = bucket_lower(o, sub) + bucket_width(o) - 1;
            count += (int64_t)b[sub];
        }
    }
    h->count = count;
    h->max = count ? (int64_t)hi : 0;
    h->min_comp = count ? INT64_MAX - (int64_t)lo : 0;
    if (!count)
        h->sum = 0;
}

int weft_histogram_subtract(weft_histogram_t *dst, const weft_histogram_t *src)
{
    int rc = 0;
    for (unsigned o = 0; o < WEFT_HISTOGRAM_OCTAVES; o++) {
        const uint64_t *sb = octave_of(src, o);
        if (!sb)
            continue;
        uint64_t *db = dst->octaves[o];
        for (unsigned sub = 0; sub < WEFT_HISTOGRAM_SUB_COUNT; sub++) {
            uint64_t c = __atomic_load_n(&sb[sub], __ATOMIC_RELAXED);
            if (c == 0)
                continue;
            if (!db || db[sub] < c) {
                rc = -EINVAL;
                if (db)
                    db[sub] = 0;
                continue;
            }
            db[sub] -= c;
        }
    }
    dst->sum = (int64_t)((uint64_t)dst->sum -
                         (uint64_t)__atomic_load_n(&src->sum, __ATOMIC_RELAXED));
    rescan(dst);
    return rc;
}

int64_t weft_histogram_count(const weft_histogram_t *h)
{
    return __atomic_load_n(&h->count, __ATOMIC_RELAXED);
}

int64_t weft_histogram_sum(const weft_histogram_t *h)
{
    return __atomic_load_n(&h->sum, __ATOMIC_RELAXED);
}

int64_t weft_histogram_min(const weft_histogram_t *h)
{
    if (weft_histogram_count(h) == 0)
        return 0;
    return INT64_MAX - __atomic_load_n(&h->min_comp, __ATOMIC_RELAXED);
}

int64_t weft_histogram_max(const weft_histogram_t *h)
{
    return __atomic_load_n(&h->max, __ATOMIC_RELAXED);
}

double weft_histogram_mean(const weft_histogram_t *h)
{
    int64_t n = weft_histogram_count(h);
    return n > 0 ? (double)weft_histogram_sum(h) / (double)n : 0.0;
}

/* Nearest rank of percentile p among n values, 1..n. The small slack keeps
 * p * n / 100 that should be an integer from rounding up to the next one. */
static uint64_t rank_of(double p, int64_t n)
{
    double r = p * (double)n / 100.0;
    double c = ceil(r - r * 1e-12);
    if (c < 1)
        return 1;
    if (c > (double)n)
        return (uint64_t)n;
    return (uint64_t)c;
}

int64_t weft_histogram_percentile(const weft_histogram_t *h, double p)
{
    int64_t n = weft_histogram_count(h);
    if (n <= 0)
        return 0;
    int64_t min = weft_histogram_min(h), max = weft_histogram_max(h);
    if (!(p > 0)) /* also NaN */
        return min;
    if (p >= 100)
        return max;
    uint64_t rank = rank_of(p, n), seen = 0;
    for (unsigned o = 0; o < WEFT_HISTOGRAM_OCTAVES; o++) {
        const uint64_t *b = octave_of(h, o);
        if (!b)
            continue;
        for (unsigned sub = 0; sub < WEFT_HISTOGRAM_SUB_COUNT; sub++) {
            seen += __atomic_load_n(&b[sub], __ATOMIC_RELAXED);
            if (seen < rank)
                continue;
            int64_t v = (int64_t)(bucket_lower(o, sub) + (bucket_width(o) - 1) / 2);
            return v < min ? min : v > max ? max : v;
        }
    }
    return max; /* a concurrent writer's count ran ahead of its buckets */
}

size_t weft_histogram_memory(const weft_histogram_t *h)
{
    size_t bytes = 0;
    for (unsigned o = 0; o < WEFT_HISTOGRAM_OCTAVES; o++)
        if (octave_of(h, o))
            bytes += OCTAVE_BYTES;
    return bytes;
}
