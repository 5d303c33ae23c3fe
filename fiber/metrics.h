/*
 * metrics.h - counters, gauges, maxers, miners and latency recorders that
 * cost a few nanoseconds to update from any number of threads, and a
 * registry that names them and prints them as text or for Prometheus.
 *
 * The idea is brpc's bvar: an update never touches a cache line that another
 * thread writes. Each thread updates its own cell of the metric, with a plain
 * load and a relaxed store (no lock prefix, no read-modify-write); a reader
 * walks the cells and combines them. A thread's cell is created and linked
 * into the metric, under the metric's lock, the first time that thread
 * updates the metric, and folded into the metric when the thread exits. A
 * fiber may run on another worker after each blocking call, but an update
 * never blocks or switches, so the cell of "the current thread" is the right
 * one for the whole update. Reads cost a walk over the threads; updates are
 * what must be cheap.
 *
 * Windows (the last N seconds of a maxer, the percentiles and qps of a
 * latency recorder) are cut by a sampler that runs once a second: a timer
 * starts a short fiber that snapshots every windowed metric.
 *
 * Metrics are caller-allocated values, like pthread objects. A counter,
 * gauge, maxer or miner may be set up by its static initializer and used at
 * once; the others need their init function. weft_metric_destroy() ends any
 * of them (not needed for metrics that live as long as the process).
 *
 * The registry names metrics: weft_metric_expose() gives one a unique name
 * of [a-z0-9_] (first character a letter or '_', as Prometheus requires),
 * and dumps list every named metric in name order. The first call into the
 * registry also names the runtime's own figures (scheduler, resource pools,
 * fiber stacks), all under "weft_"; see weft_metrics_register_builtin().
 */
#ifndef WEFT_FIBER_METRICS_H
#define WEFT_FIBER_METRICS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "histogram.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a metric is to a reader (and to Prometheus). */
enum weft_metric_type {
    WEFT_METRIC_COUNTER = 1, /* a total that only grows */
    WEFT_METRIC_GAUGE,       /* a value that goes up and down */
    WEFT_METRIC_MAXER,       /* the largest value seen */
    WEFT_METRIC_MINER,       /* the smallest value seen */
    WEFT_METRIC_LATENCY,     /* a latency recorder */
};

struct weft__metric_cell;

/* The part every metric starts with. Fields are private. */
typedef struct weft_metric weft_metric_t;
struct weft_metric {
    uint8_t type;                    /* WEFT_METRIC_* */
    uint8_t passive;                 /* value comes from a callback */
    int32_t id;                      /* index of this metric's cells; -1 until first update */
    pthread_mutex_t lock;            /* guards cells and folded */
    struct weft__metric_cell *cells; /* cells of live threads */
    int64_t folded;                  /* exited threads' share (and a gauge's offset) */
    const char *name;                /* exposed name, or NULL (registry lock) */
    weft_metric_t *sample_next;      /* in the sampler's list */
    weft_metric_t **sample_pprev;
};

#define WEFT__METRIC_INIT(type_, folded_)                                     \
    {                                                                         \
        .type = (type_), .id = -1, .lock = PTHREAD_MUTEX_INITIALIZER,         \
        .folded = (folded_),                                                  \
    }

/* Ends any metric: hides it, detaches the cells of every thread. No thread
 * may update or read it any more. */
void weft_metric_destroy(weft_metric_t *m);

/* enum weft_metric_type of a metric. */
int weft_metric_type(const weft_metric_t *m);

/* The value of a counter, gauge, maxer or miner; the total count of a
 * latency recorder. */
int64_t weft_metric_value(weft_metric_t *m);

/* ---- counter: a sum of adds ---- */

typedef struct weft_counter {
    weft_metric_t metric;
} weft_counter_t;

#define WEFT_COUNTER_INITIALIZER {WEFT__METRIC_INIT(WEFT_METRIC_COUNTER, 0)}

void weft_counter_init(weft_counter_t *c);
void weft_counter_add(weft_counter_t *c, int64_t n);
int64_t weft_counter_value(weft_counter_t *c);

/* ---- gauge: a value set, or moved by adds ---- */

/* Adds are as cheap as a counter's. Set walks the threads under a lock, so
 * it is for values set now and then; an add racing with a set may count
 * before or after it. */
typedef struct weft_gauge {
    weft_metric_t metric;
} weft_gauge_t;

#define WEFT_GAUGE_INITIALIZER {WEFT__METRIC_INIT(WEFT_METRIC_GAUGE, 0)}

void weft_gauge_init(weft_gauge_t *g);
void weft_gauge_add(weft_gauge_t *g, int64_t n);
void weft_gauge_set(weft_gauge_t *g, int64_t v);
int64_t weft_gauge_value(weft_gauge_t *g);

/* ---- passive: a gauge or counter read from a callback ---- */

/* Called by readers, on their thread, maybe several at once; it must not
 * call into the registry (expose, hide, find, dump), which holds its lock. */
typedef int64_t weft_metric_fn(void *arg);

typedef struct weft_passive {
    weft_metric_t metric;
    weft_metric_fn *fn;
    void *arg;
} weft_passive_t;

/* type: WEFT_METRIC_GAUGE, or WEFT_METRIC_COUNTER for a total that only
 * grows. Returns 0 or -EINVAL. */
int weft_passive_init(weft_passive_t *p, int type, weft_metric_fn *fn, void *arg);
int64_t weft_passive_value(weft_passive_t *p);

/* ---- maxer and miner: the extreme of the values seen ---- */

/*
 * Without a window (window_s 0, or the static initializer) the extreme since
 * init; with one, the extreme of the last window_s seconds (to one second
 * of precision: the sampler closes a second by swapping each thread's cell
 * back to empty). An empty maxer reads INT64_MIN, an empty miner INT64_MAX.
 */
struct weft__window;

typedef struct weft_maxer {
    weft_metric_t metric;
    struct weft__window *win;
} weft_maxer_t;

typedef struct weft_miner {
    weft_metric_t metric;
    struct weft__window *win;
} weft_miner_t;

#define WEFT_MAXER_INITIALIZER {WEFT__METRIC_INIT(WEFT_METRIC_MAXER, INT64_MIN), NULL}
#define WEFT_MINER_INITIALIZER {WEFT__METRIC_INIT(WEFT_METRIC_MINER, INT64_MIN), NULL}

/* 0, -EINVAL (window_s < 0 or > 3600) or -ENOMEM. */
int weft_maxer_init(weft_maxer_t *x, int window_s);
void weft_maxer_update(weft_maxer_t *x, int64_t v);
int64_t weft_maxer_value(weft_maxer_t *x);

int weft_miner_init(weft_miner_t *x, int window_s);
void weft_miner_update(weft_miner_t *x, int64_t v);
int64_t weft_miner_value(weft_miner_t *x);

/* ---- latency recorder ---- */

#define WEFT_LATENCY_WINDOW_S 10

/*
 * Each thread records into its own histogram (histogram.h). Once a second
 * the sampler adds them up, subtracts the previous total to get that second's
 * histogram, and keeps the last window_s seconds in a ring; their sum is the
 * window the percentiles, average, maximum and qps describe.
 */
struct weft__recorder;

typedef struct weft_latency_recorder {
    weft_metric_t metric;
    struct weft__recorder *rec;
} weft_latency_recorder_t;

typedef struct weft_latency_stats {
    int64_t count;   /* values recorded since init */
    int64_t sum_us;  /* their sum */
    /* Over the window, as of the last sampler tick: */
    int64_t qps;     /* values per second */
    int64_t avg_us;
    int64_t p50_us, p90_us, p99_us, p999_us;
    int64_t max_us;
} weft_latency_stats_t;

/* window_s: 0 for WEFT_LATENCY_WINDOW_S, else 1..3600. 0, -EINVAL or -ENOMEM. */
int weft_latency_recorder_init(weft_latency_recorder_t *r, int window_s);
void weft_latency_recorder_record(weft_latency_recorder_t *r, int64_t latency_us);
void weft_latency_recorder_stats(weft_latency_recorder_t *r, weft_latency_stats_t *out);
/* Any percentile (0..100) of the window, as of the last tick. */
int64_t weft_latency_recorder_percentile(weft_latency_recorder_t *r, double p);

/* ---- registry ---- */

#define WEFT_METRIC_NAME_MAX 96

/*
 * Names a metric. The name must be new, and so must every name the metric
 * prints as: a latency recorder "x" also takes x_count, x_qps,
 * x_latency_avg_us, x_latency_p50_us, x_latency_p90_us, x_latency_p99_us,
 * x_latency_p999_us, x_max_latency_us and, for Prometheus, x_latency_us with
 * x_latency_us_sum and x_latency_us_count. Returns 0, -EINVAL (bad name),
 * -EEXIST (taken), -EBUSY (this metric already has a name) or -ENOMEM.
 */
int weft_metric_expose(weft_metric_t *m, const char *name);

/* Takes the name away (the metric keeps working). 0 or -ENOENT. */
int weft_metric_hide(weft_metric_t *m);

/* The metric's name, or NULL. */
const char *weft_metric_name(const weft_metric_t *m);

/* The metric exposed under name, or NULL. The pointer is only as good as
 * the caller's knowledge that the metric is not being destroyed. */
weft_metric_t *weft_metrics_find(const char *name);

/* Calls fn for every exposed metric in name order, under the registry lock
 * (fn must not call into the registry). Stops at, and returns, the first
 * non-zero value fn returns; else 0. */
int weft_metrics_foreach(int (*fn)(weft_metric_t *m, void *arg), void *arg);

/*
 * Registers the runtime's own metrics: scheduler figures (weft_fiber_*),
 * fiber stacks (weft_fiber_stack_*), and for every resource pool
 * weft_pool_<name>_slots and weft_pool_<name>_live. The first call into the
 * registry does it anyway; pools that appear later are added by the next
 * dump, find or foreach. Returns 0 or -ENOMEM.
 */
int weft_metrics_register_builtin(void);

/* ---- dumps ---- */

enum weft_metrics_format {
    WEFT_METRICS_TEXT,       /* "name : value" lines, for /vars */
    WEFT_METRICS_PROMETHEUS, /* text exposition format 0.0.4, for /metrics */
};

/* Receives output. Returns 0 to go on, or a negative errno that stops the
 * dump and is returned by it. Called under the registry lock. */
typedef int weft_metrics_sink_fn(void *arg, const char *data, size_t len);

/*
 * Prints the exposed metrics whose names match the fnmatch(3) pattern (NULL:
 * all) in name order. Returns 0, or what the sink returned.
 *
 * For Prometheus, counters are "counter", gauges, maxers and miners "gauge",
 * and a latency recorder x is a "summary" x_latency_us with quantiles 0.5,
 * 0.9, 0.99 and 0.999 over the window and cumulative _sum and _count, plus
 * gauges x_qps and x_max_latency_us. A summary is what Prometheus client
 * libraries export for windowed quantiles, every scraper accepts it, and
 * rate(x_latency_us_count) and rate(_sum)/rate(_count) give qps and mean
 * over any range. Its quantiles cannot be aggregated across instances;
 * exporting the 7000 fine buckets as a Prometheus histogram would allow that
 * but make every scrape enormous.
 */
int weft_metrics_dump(int format, const char *pattern, weft_metrics_sink_fn *sink, void *arg);

/* A growable, NUL-terminated string; weft_metrics_buf_append is a sink. */
typedef struct weft_metrics_buf {
    char *data;
    size_t len, cap;
} weft_metrics_buf_t;

int weft_metrics_buf_append(void *buf, const char *data, size_t len);
void weft_metrics_buf_free(weft_metrics_buf_t *b);

#ifdef __cplusplus
}
#endif
#endif
