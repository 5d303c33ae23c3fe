/*
 * metrics.c - the metric types, their per-thread cells and the sampler.
 *
 * A metric gets a small integer id on its first update; each thread keeps an
 * array, indexed by id, of pointers to its cells. The cell belongs to the
 * thread (it allocates and frees it); the metric only links it into its list
 * so readers can find it. Which metric a cell serves is in cell->owner, which
 * the thread checks on every update: when a metric is destroyed its id goes
 * back to the pool, and another metric may get it while threads still hold
 * cells under that id. Destroy clears the owner of every linked cell, so a
 * thread that meets a cell with no owner knows it is stale and replaces it.
 *
 * Locks, in the order they nest:
 *   detach_lock   orders the two ways a cell leaves a metric (thread exit,
 *                 metric destroy), so neither frees what the other reads;
 *   sampler.lock  the list of windowed metrics; one tick at a time;
 *   metric->lock  the metric's cell list and what exited threads left.
 * The update path takes none of them, except once per thread and metric.
 * They are pthread mutexes, never fiber mutexes: taking one must not switch
 * fibers, or the fiber could resume on another thread mid-update.
 */
#include "fiber/metrics.h"
#include "fiber/metrics_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fiber/clock.h"
#include "fiber/fiber.h"
#include "fiber/log.h"
#include "fiber/timer.h"

#define CELL_ALIGN 64 /* a cell never shares a cache line with another's */
#define MAX_WINDOW_S 3600

struct weft__metric_cell {
    weft_metric_t *owner;                    /* NULL once detached */
    struct weft__metric_cell *next, **pprev; /* in owner->cells, owner->lock */
    int has_hist;
    int64_t v;           /* sum (counter, gauge), max (maxer, miner, recorder's second) */
    weft_histogram_t h;  /* latency recorders only: the rest is not allocated */
};
typedef struct weft__metric_cell cell_t;

/* A maxer's or miner's last seconds. */
struct weft__window {
    int n, pos, filled;
    int64_t ring[];
};

/* A latency recorder's second. */
typedef struct {
    weft_histogram_t h;
    int64_t max;
    int64_t t_start; /* weft_clock_ns() when it began */
} second_t;

struct weft__recorder {
    int n, pos, filled;
    weft_histogram_t dead;  /* exited threads' values (metric lock) */
    weft_histogram_t prev;  /* the total at the last tick */
    weft_histogram_t cur;   /* the total now (scratch) */
    weft_histogram_t win;   /* the sum of the ring */
    int64_t last_tick;
    weft_latency_stats_t stats; /* window figures as of the last tick */
    second_t ring[];
};

static pthread_mutex_t detach_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- ids ---- */

static struct {
    pthread_mutex_t lock;
    int32_t next;
    int32_t *free;
    int32_t nfree, cap;
} ids = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int32_t metric_id(weft_metric_t *m)
{
    int32_t id = __atomic_load_n(&m->id, __ATOMIC_ACQUIRE);
    if (id >= 0)
        return id;
    pthread_mutex_lock(&ids.lock);
    id = m->id;
    if (id < 0) {
        id = ids.nfree ? ids.free[--ids.nfree] : ids.next < INT32_MAX ? ids.next++ : -1;
        if (id >= 0)
            __atomic_store_n(&m->id, id, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&ids.lock);
    return id;
}

static void id_release(weft_metric_t *m)
{
    int32_t id = m->id;
    if (id < 0)
        return;
    pthread_mutex_lock(&ids.lock);
    if (ids.nfree == ids.cap) {
        int32_t cap = ids.cap ? ids.cap * 2 : 64;
        int32_t *p = realloc(ids.free, (size_t)cap * sizeof(*p));
        if (p) {
            ids.free = p;
            ids.cap = cap;
        }
    }
    if (ids.nfree < ids.cap) /* else the id is lost, nothing worse */
        ids.free[ids.nfree++] = id;
    pthread_mutex_unlock(&ids.lock);
    __atomic_store_n(&m->id, -1, __ATOMIC_RELEASE);
}

/* ---- this thread's cells ---- */

typedef struct {
    uint32_t cap;
    int key_set;
    cell_t **cells; /* by metric id */
} tls_cells_t;

/* initial-exec, as in scheduler.c: the default model for -fPIC code calls
 * __tls_get_addr() on every access, which would double the cost of an
 * update. */
static __thread tls_cells_t tls_cells __attribute__((tls_model("initial-exec")));
static pthread_key_t exit_key;
static pthread_once_t exit_key_once = PTHREAD_ONCE_INIT;

/*
 * A fiber may resume on another thread after any blocking call, and the
 * compiler may keep the address of a __thread variable across calls. Going
 * through this function (not inlined, opaque result) makes every update
 * find the thread it runs on now. See weft__current_worker() in scheduler.c.
 */
__attribute__((noinline)) static tls_cells_t *tls_get(void)
{
    tls_cells_t *t = &tls_cells;
    __asm__ volatile("" : "+r"(t)::"memory");
    return t;
}

static void cell_free(cell_t *c)
{
    if (c->has_hist)
        weft_histogram_destroy(&c->h);
    free(c);
}

static cell_t *cell_new(weft_metric_t *m)
{
    int has_hist = m->type == WEFT_METRIC_LATENCY;
    size_t size = has_hist ? sizeof(cell_t) : offsetof(cell_t, h);
    size = (size + CELL_ALIGN - 1) & ~(size_t)(CELL_ALIGN - 1);
    cell_t *c = aligned_alloc(CELL_ALIGN, size);
    if (!c)
        return NULL;
    memset(c, 0, size);
    c->has_hist = has_hist;
    c->v = (m->type == WEFT_METRIC_MAXER || m->type == WEFT_METRIC_MINER) ? INT64_MIN : 0;
    return c;
}

/* Adds what a thread's cell holds to what the metric keeps of exited
 * threads. Metric lock held. */
static void cell_fold(weft_metric_t *m, cell_t *c)
{
    int64_t v = __atomic_load_n(&c->v, __ATOMIC_RELAXED);
    if (m->type == WEFT_METRIC_COUNTER || m->type == WEFT_METRIC_GAUGE) {
        m->folded = (int64_t)((uint64_t)m->folded + (uint64_t)v);
        return;
    }
    /* A maxer's max, or the max of a recorder's current second. */
    if (v > m->folded)
        m->folded = v;
    if (m->type == WEFT_METRIC_LATENCY &&
        weft_histogram_merge(&((weft_latency_recorder_t *)m)->rec->dead, &c->h) != 0)
        WEFT_LOG_WARN("metrics: out of memory, latencies of an exiting thread lost");
}

static void cell_unlink(cell_t *c)
{
    *c->pprev = c->next;
    if (c->next)
        c->next->pprev = c->pprev;
    c->next = NULL;
    c->pprev = NULL;
}

/* The pthread key destructor: a thread leaves its values to the metrics. */
static void thread_exit(void *unused)
{
    (void)unused;
    tls_cells_t *t = tls_get();
    pthread_mutex_lock(&detach_lock);
    for (uint32_t i = 0; i < t->cap; i++) {
        cell_t *c = t->cells[i];
        if (!c)
            continue;
        weft_metric_t *m = __atomic_load_n(&c->owner, __ATOMIC_ACQUIRE);
        if (m) {
            pthread_mutex_lock(&m->lock);
            cell_fold(m, c);
            cell_unlink(c);
            __atomic_store_n(&c->owner, NULL, __ATOMIC_RELAXED);
            pthread_mutex_unlock(&m->lock);
        }
        cell_free(c);
    }
    pthread_mutex_unlock(&detach_lock);
    free(t->cells);
    t->cells = NULL;
    t->cap = 0;
    t->key_set = 0; /* an update by a later destructor registers again */
}

static void exit_key_create(void)
{
    if (pthread_key_create(&exit_key, thread_exit) != 0)
        WEFT_LOG_ERROR("metrics: no pthread key: values of exiting threads will be lost");
}

static int tls_grow(tls_cells_t *t, uint32_t id)
{
    uint32_t cap = t->cap ? t->cap : 16;
    while (cap <= id)
        cap *= 2;
    cell_t **p = realloc(t->cells, cap * sizeof(*p));
    if (!p)
        return -ENOMEM;
    memset(p + t->cap, 0, (cap - t->cap) * sizeof(*p));
    t->cells = p;
    t->cap = cap;
    return 0;
}

/* The slow path of an update: the thread's first update of this metric. */
static __attribute__((noinline)) cell_t *cell_attach(weft_metric_t *m)
{
    int32_t id = metric_id(m);
    if (id < 0)
        return NULL;
    tls_cells_t *t = tls_get();
    if ((uint32_t)id >= t->cap && tls_grow(t, (uint32_t)id) != 0)
        return NULL;
    cell_t *old = t->cells[id];
    if (old) {
        /* Left by a destroyed metric that had this id: destroy unlinked it
         * and cleared the owner as its last touch (acquire pairs with it). */
        if (__atomic_load_n(&old->owner, __ATOMIC_ACQUIRE) == m)
            return old;
        cell_free(old);
        t->cells[id] = NULL;
    }
    cell_t *c = cell_new(m);
    if (!c)
        return NULL;
    pthread_mutex_lock(&m->lock);
    c->next = m->cells;
    if (c->next)
        c->next->pprev = &c->next;
    c->pprev = &m->cells;
    m->cells = c;
    __atomic_store_n(&c->owner, m, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&m->lock);
    t->cells[id] = c;
    if (!t->key_set) {
        pthread_once(&exit_key_once, exit_key_create);
        pthread_setspecific(exit_key, (void *)1);
        t->key_set = 1;
    }
    return c;
}

/* The calling thread's cell of m, or NULL when out of memory. */
static inline cell_t *cell_of(weft_metric_t *m)
{
    uint32_t id = (uint32_t)__atomic_load_n(&m->id, __ATOMIC_RELAXED);
    tls_cells_t *t = tls_get();
    if (__builtin_expect(id < t->cap, 1)) {
        cell_t *c = t->cells[id];
        if (__builtin_expect(c && __atomic_load_n(&c->owner, __ATOMIC_RELAXED) == m, 1))
            return c;
    }
    return cell_attach(m);
}

/* Only this thread writes c->v: a relaxed load and store, no RMW. */
static inline void cell_add(cell_t *c, int64_t n)
{
    uint64_t v = (uint64_t)__atomic_load_n(&c->v, __ATOMIC_RELAXED);
    __atomic_store_n(&c->v, (int64_t)(v + (uint64_t)n), __ATOMIC_RELAXED);
}

static inline void cell_max(cell_t *c, int64_t v)
{
    if (v > __atomic_load_n(&c->v, __ATOMIC_RELAXED))
        __atomic_store_n(&c->v, v, __ATOMIC_RELAXED);
}

/* Unlinks every cell of m; their threads will notice the missing owner. */
static void detach_cells(weft_metric_t *m)
{
    pthread_mutex_lock(&detach_lock);
    pthread_mutex_lock(&m->lock);
    cell_t *c = m->cells;
    while (c) {
        cell_t *next = c->next;
        c->next = NULL;
        c->pprev = NULL;
        __atomic_store_n(&c->owner, NULL, __ATOMIC_RELEASE); /* last touch */
        c = next;
    }
    m->cells = NULL;
    pthread_mutex_unlock(&m->lock);
    pthread_mutex_unlock(&detach_lock);
}

/* ---- common ---- */

static void metric_init(weft_metric_t *m, int type, int64_t folded)
{
    memset(m, 0, sizeof(*m));
    m->type = (uint8_t)type;
    m->id = -1;
    m->folded = folded;
    pthread_mutex_init(&m->lock, NULL);
}

int weft_metric_type(const weft_metric_t *m)
{
    return m->type;
}

static int64_t sum_cells(weft_metric_t *m)
{
    int64_t s = 0;
    for (cell_t *c = m->cells; c; c = c->next)
        s = (int64_t)((uint64_t)s + (uint64_t)__atomic_load_n(&c->v, __ATOMIC_RELAXED));
    return s;
}

static int64_t max_cells(weft_metric_t *m, int64_t max)
{
    for (cell_t *c = m->cells; c; c = c->next) {
        int64_t v = __atomic_load_n(&c->v, __ATOMIC_RELAXED);
        if (v > max)
            max = v;
    }
    return max;
}

static int64_t adder_value(weft_metric_t *m)
{
    pthread_mutex_lock(&m->lock);
    int64_t v = (int64_t)((uint64_t)m->folded + (uint64_t)sum_cells(m));
    pthread_mutex_unlock(&m->lock);
    return v;
}

static int64_t maxer_value(weft_metric_t *m, struct weft__window *w)
{
    pthread_mutex_lock(&m->lock);
    int64_t v = max_cells(m, m->folded);
    for (int i = 0; w && i < w->filled; i++)
        if (w->ring[i] > v)
            v = w->ring[i];
    pthread_mutex_unlock(&m->lock);
    return v;
}

static int64_t recorder_count(weft_latency_recorder_t *r, int64_t *sum)
{
    weft_metric_t *m = &r->metric;
    pthread_mutex_lock(&m->lock);
    int64_t n = weft_histogram_count(&r->rec->dead);
    int64_t s = weft_histogram_sum(&r->rec->dead);
    for (cell_t *c = m->cells; c; c = c->next) {
        n += weft_histogram_count(&c->h);
        s += weft_histogram_sum(&c->h);
    }
    pthread_mutex_unlock(&m->lock);
    if (sum)
        *sum = s;
    return n;
}

int64_t weft_metric_value(weft_metric_t *m)
{
    if (m->passive)
        return ((weft_passive_t *)m)->fn(((weft_passive_t *)m)->arg);
    switch (m->type) {
    case WEFT_METRIC_COUNTER:
    case WEFT_METRIC_GAUGE:
        return adder_value(m);
    case WEFT_METRIC_MAXER:
        return maxer_value(m, ((weft_maxer_t *)m)->win);
    case WEFT_METRIC_MINER:
        return ~maxer_value(m, ((weft_miner_t *)m)->win);
    case WEFT_METRIC_LATENCY:
        return recorder_count((weft_latency_recorder_t *)m, NULL);
    }
    return 0;
}

/* ---- counter and gauge ---- */

void weft_counter_init(weft_counter_t *c)
{
    metric_init(&c->metric, WEFT_METRIC_COUNTER, 0);
}

void weft_counter_add(weft_counter_t *c, int64_t n)
{
    cell_t *cell = cell_of(&c->metric);
    if (__builtin_expect(cell != NULL, 1))
        cell_add(cell, n);
}

int64_t weft_counter_value(weft_counter_t *c)
{
    return adder_value(&c->metric);
}

void weft_gauge_init(weft_gauge_t *g)
{
    metric_init(&g->metric, WEFT_METRIC_GAUGE, 0);
}

void weft_gauge_add(weft_gauge_t *g, int64_t n)
{
    cell_t *cell = cell_of(&g->metric);
    if (__builtin_expect(cell != NULL, 1))
        cell_add(cell, n);
}

/* The cells keep counting; the offset makes their sum read as v now. */
void weft_gauge_set(weft_gauge_t *g, int64_t v)
{
    weft_metric_t *m = &g->metric;
    pthread_mutex_lock(&m->lock);
    m->folded = (int64_t)((uint64_t)v - (uint64_t)sum_cells(m));
    pthread_mutex_unlock(&m->lock);
}

int64_t weft_gauge_value(weft_gauge_t *g)
{
    return adder_value(&g->metric);
}

/* ---- passive ---- */

int weft_passive_init(weft_passive_t *p, int type, weft_metric_fn *fn, void *arg)
{
    if (!fn || (type != WEFT_METRIC_COUNTER && type != WEFT_METRIC_GAUGE))
        return -EINVAL;
    metric_init(&p->metric, type, 0);
    p->metric.passive = 1;
    p->fn = fn;
    p->arg = arg;
    return 0;
}

int64_t weft_passive_value(weft_passive_t *p)
{
    return p->fn(p->arg);
}

/* ---- the sampler ---- */

static struct {
    pthread_mutex_t lock;
    weft_metric_t *head;
    int timer_started;
    int busy;   /* a tick is queued or running */
    int manual; /* ticks only from weft__metrics_tick() */
} sampler = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void window_tick(weft_metric_t *m, struct weft__window *w);
static void recorder_tick(weft_latency_recorder_t *r, int64_t now);

void weft__metrics_tick(void)
{
    pthread_mutex_lock(&sampler.lock);
    int64_t now = weft_clock_ns();
    for (weft_metric_t *m = sampler.head; m; m = m->sample_next) {
        if (m->type == WEFT_METRIC_LATENCY)
            recorder_tick((weft_latency_recorder_t *)m, now);
        else
            window_tick(m, ((weft_maxer_t *)m)->win);
    }
    pthread_mutex_unlock(&sampler.lock);
}

void weft__metrics_set_manual(int manual)
{
    __atomic_store_n(&sampler.manual, manual, __ATOMIC_RELAXED);
}

static void sampler_fiber(void *arg)
{
    (void)arg;
    weft__metrics_tick();
    __atomic_store_n(&sampler.busy, 0, __ATOMIC_RELEASE);
}

/* On the timer thread, which must not be held up: the tick runs in a fiber.
 * A program that never started the runtime ticks here instead, as starting
 * worker threads behind its back would be rude. A late tick makes a longer
 * second; qps divides by real time, so it stays right. */
static void sampler_timer(void *arg)
{
    (void)arg;
    if (__atomic_load_n(&sampler.manual, __ATOMIC_RELAXED) ||
        __atomic_exchange_n(&sampler.busy, 1, __ATOMIC_ACQUIRE))
        return;
    weft_fiber_stats_t st;
    weft_fiber_stats(&st);
    if (st.workers > 0 && weft_fiber_start_background(NULL, NULL, sampler_fiber, NULL) == 0)
        return;
    sampler_fiber(NULL);
}

static void sampler_add(weft_metric_t *m)
{
    pthread_mutex_lock(&sampler.lock);
    m->sample_next = sampler.head;
    if (m->sample_next)
        m->sample_next->sample_pprev = &m->sample_next;
    m->sample_pprev = &sampler.head;
    sampler.head = m;
    if (!sampler.timer_started) {
        weft_timer_id_t id;
        int rc = weft_timer_run_every(&id, WEFT_NS_PER_SEC, sampler_timer, NULL);
        if (rc == 0)
            sampler.timer_started = 1;
        else
            WEFT_LOG_WARN("metrics: no sampler timer (%d): windows will not move", rc);
    }
    pthread_mutex_unlock(&sampler.lock);
}

static void sampler_remove(weft_metric_t *m)
{
    pthread_mutex_lock(&sampler.lock);
    if (m->sample_pprev) {
        *m->sample_pprev = m->sample_next;
        if (m->sample_next)
            m->sample_next->sample_pprev = m->sample_pprev;
        m->sample_next = NULL;
        m->sample_pprev = NULL;
    }
    pthread_mutex_unlock(&sampler.lock);
}

/* ---- maxer and miner ---- */

/* A miner is a maxer of ~v: ~ reverses the order of int64 and, unlike
 * negation, cannot overflow. */

static int maxer_init(weft_metric_t *m, struct weft__window **win, int type, int window_s)
{
    if (window_s < 0 || window_s > MAX_WINDOW_S)
        return -EINVAL;
    metric_init(m, type, INT64_MIN);
    *win = NULL;
    if (window_s == 0)
        return 0;
    struct weft__window *w = calloc(1, sizeof(*w) + (size_t)window_s * sizeof(int64_t));
    if (!w)
        return -ENOMEM;
    w->n = window_s;
    *win = w;
    sampler_add(m);
    return 0;
}

/* Closes a second: swap every cell back to empty and keep their max. The
 * swap is the reader's; an owner racing with it either stored its value
 * before (it counts in this second) or compared against the old max (its
 * value was no larger, and this second has that one). */
static void window_tick(weft_metric_t *m, struct weft__window *w)
{
    pthread_mutex_lock(&m->lock);
    int64_t max = m->folded;
    m->folded = INT64_MIN;
    for (cell_t *c = m->cells; c; c = c->next) {
        int64_t v = __atomic_exchange_n(&c->v, INT64_MIN, __ATOMIC_RELAXED);
        if (v > max)
            max = v;
    }
    w->ring[w->pos] = max;
    w->pos = (w->pos + 1) % w->n;
    if (w->filled < w->n)
        w->filled++;
    pthread_mutex_unlock(&m->lock);
}

int weft_maxer_init(weft_maxer_t *x, int window_s)
{
    return maxer_init(&x->metric, &x->win, WEFT_METRIC_MAXER, window_s);
}

void weft_maxer_update(weft_maxer_t *x, int64_t v)
{
    cell_t *cell = cell_of(&x->metric);
    if (__builtin_expect(cell != NULL, 1))
        cell_max(cell, v);
}

int64_t weft_maxer_value(weft_maxer_t *x)
{
    return maxer_value(&x->metric, x->win);
}

int weft_miner_init(weft_miner_t *x, int window_s)
{
    return maxer_init(&x->metric, &x->win, WEFT_METRIC_MINER, window_s);
}

void weft_miner_update(weft_miner_t *x, int64_t v)
{
    cell_t *cell = cell_of(&x->metric);
    if (__builtin_expect(cell != NULL, 1))
        cell_max(cell, ~v);
}

int64_t weft_miner_value(weft_miner_t *x)
{
    return ~maxer_value(&x->metric, x->win);
}

/* ---- latency recorder ---- */

int weft_latency_recorder_init(weft_latency_recorder_t *r, int window_s)
{
    if (window_s == 0)
        window_s = WEFT_LATENCY_WINDOW_S;
    if (window_s < 0 || window_s > MAX_WINDOW_S)
        return -EINVAL;
    metric_init(&r->metric, WEFT_METRIC_LATENCY, 0);
    struct weft__recorder *rec = calloc(1, sizeof(*rec) + (size_t)window_s * sizeof(second_t));
    if (!rec)
        return -ENOMEM;
    rec->n = window_s;
    rec->last_tick = weft_clock_ns();
    r->rec = rec;
    sampler_add(&r->metric);
    return 0;
}

void weft_latency_recorder_record(weft_latency_recorder_t *r, int64_t latency_us)
{
    cell_t *cell = cell_of(&r->metric);
    if (__builtin_expect(cell == NULL, 0))
        return;
    weft_histogram_record(&cell->h, latency_us);
    cell_max(cell, latency_us);
}

static void recorder_stats(struct weft__recorder *rec, int64_t now)
{
    weft_latency_stats_t *s = &rec->stats;
    const weft_histogram_t *w = &rec->win;
    int64_t n = weft_histogram_count(w);
    s->avg_us = n ? weft_histogram_sum(w) / n : 0;
    s->p50_us = weft_histogram_percentile(w, 50);
    s->p90_us = weft_histogram_percentile(w, 90);
    s->p99_us = weft_histogram_percentile(w, 99);
    s->p999_us = weft_histogram_percentile(w, 99.9);
    s->max_us = 0;
    for (int i = 0; i < rec->filled; i++)
        if (rec->ring[i].max > s->max_us)
            s->max_us = rec->ring[i].max;
    /* pos is now the oldest second once the ring is full. */
    int64_t start = rec->ring[rec->filled == rec->n ? rec->pos : 0].t_start;
    s->qps = now > start ? (int64_t)((double)n * 1e9 / (double)(now - start) + 0.5) : 0;
}

/* Closes a second: total now minus total at the last tick is the second's
 * histogram (each thread's counters only grow, and an exiting thread hands
 * over its final ones, so the difference is never negative); it replaces
 * the oldest second in the ring and in the window's sum. */
static void recorder_tick(weft_latency_recorder_t *r, int64_t now)
{
    weft_metric_t *m = &r->metric;
    struct weft__recorder *rec = r->rec;
    int rc = 0;
    pthread_mutex_lock(&m->lock);
    weft_histogram_reset(&rec->cur);
    rc |= weft_histogram_merge(&rec->cur, &rec->dead);
    int64_t max = m->folded;
    m->folded = 0;
    for (cell_t *c = m->cells; c; c = c->next) {
        rc |= weft_histogram_merge(&rec->cur, &c->h);
        int64_t v = __atomic_exchange_n(&c->v, 0, __ATOMIC_RELAXED);
        if (v > max)
            max = v;
    }
    second_t *sec = &rec->ring[rec->pos];
    if (rec->filled == rec->n)
        rc |= weft_histogram_subtract(&rec->win, &sec->h);
    weft_histogram_reset(&sec->h);
    rc |= weft_histogram_merge(&sec->h, &rec->cur);
    rc |= weft_histogram_subtract(&sec->h, &rec->prev);
    rc |= weft_histogram_merge(&rec->win, &sec->h);
    sec->max = max;
    sec->t_start = rec->last_tick;
    rec->last_tick = now;
    weft_histogram_t t = rec->prev;
    rec->prev = rec->cur;
    rec->cur = t;
    rec->pos = (rec->pos + 1) % rec->n;
    if (rec->filled < rec->n)
        rec->filled++;
    recorder_stats(rec, now);
    pthread_mutex_unlock(&m->lock);
    if (rc)
        WEFT_LOG_EVERY_SEC(WEFT_LOG_WARN, "metrics: out of memory, latency window inexact");
}

void weft_latency_recorder_stats(weft_latency_recorder_t *r, weft_latency_stats_t *out)
{
    pthread_mutex_lock(&r->metric.lock);
    *out = r->rec->stats;
    pthread_mutex_unlock(&r->metric.lock);
    out->count = recorder_count(r, &out->sum_us);
}

int64_t weft_latency_recorder_percentile(weft_latency_recorder_t *r, double p)
{
    pthread_mutex_lock(&r->metric.lock);
    int64_t v = weft_histogram_percentile(&r->rec->win, p);
    pthread_mutex_unlock(&r->metric.lock);
    return v;
}

static void recorder_free(struct weft__recorder *rec)
{
    if (!rec)
        return;
    weft_histogram_destroy(&rec->dead);
    weft_histogram_destroy(&rec->prev);
    weft_histogram_destroy(&rec->cur);
    weft_histogram_destroy(&rec->win);
    for (int i = 0; i < rec->n; i++)
        weft_histogram_destroy(&rec->ring[i].h);
    free(rec);
}

/* ---- destroy ---- */

void weft_metric_destroy(weft_metric_t *m)
{
    weft_metric_hide(m);
    sampler_remove(m);
    detach_cells(m);
    id_release(m);
    if (m->passive)
        return;
    switch (m->type) {
    case WEFT_METRIC_MAXER:
    case WEFT_METRIC_MINER:
        free(((weft_maxer_t *)m)->win);
        ((weft_maxer_t *)m)->win = NULL;
        break;
    case WEFT_METRIC_LATENCY:
        recorder_free(((weft_latency_recorder_t *)m)->rec);
        ((weft_latency_recorder_t *)m)->rec = NULL;
        break;
    }
}
