/*
 * metrics_registry.c - names for metrics, the text and Prometheus dumps,
 * and the runtime's own metrics.
 *
 * The registry is one array sorted by name, so finding is a binary search
 * and a dump walks it in order. It holds every name a metric prints as, not
 * only the one it was exposed under: a latency recorder "x" prints x_count,
 * x_qps and so on, and a counter exposed as "x_count" next to it would give
 * a dump two lines of the same name, which Prometheus rejects as a whole.
 * Reserving the printed names makes that an -EEXIST at expose time instead.
 *
 * The registry lock is a fiber mutex: dumps run in HTTP handler fibers and
 * call passive callbacks and sinks that may block that fiber.
 */
#include "fiber/metrics.h"

#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fiber/fiber.h"
#include "fiber/log.h"
#include "fiber/pool.h"
#include "fiber/stack_internal.h"
#include "fiber/sync.h"

#define LINE_MAX_LEN (WEFT_METRIC_NAME_MAX + 96)

typedef struct {
    char *name;
    weft_metric_t *m;
    int base; /* the name it was exposed under, not one it prints as */
} entry_t;

static struct {
    weft_mutex_t lock;
    entry_t *v;
    size_t n, cap;
    int builtin_done;
    int npools; /* pools that have their metrics */
} reg = {.lock = WEFT_MUTEX_INITIALIZER};

/* Names a latency recorder prints as, after its own. Text lines use 1..8 in
 * this order; Prometheus uses the rest. */
enum { SFX_COUNT = 1, SFX_QPS, SFX_AVG, SFX_P50, SFX_P90, SFX_P99, SFX_P999, SFX_MAX, SFX_SUMMARY };
static const char *const latency_suffixes[] = {
    "", "_count", "_qps", "_latency_avg_us", "_latency_p50_us", "_latency_p90_us",
    "_latency_p99_us", "_latency_p999_us", "_max_latency_us",
    "_latency_us", "_latency_us_sum", "_latency_us_count",
};
static const char *const plain_suffixes[] = {""};

static size_t suffixes_of(const weft_metric_t *m, const char *const **sfx)
{
    if (m->type == WEFT_METRIC_LATENCY && !m->passive) {
        *sfx = latency_suffixes;
        return sizeof(latency_suffixes) / sizeof(latency_suffixes[0]);
    }
    *sfx = plain_suffixes;
    return 1;
}

static bool name_valid(const char *name)
{
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || len > WEFT_METRIC_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        bool ok = (ch >= 'a' && ch <= 'z') || ch == '_' || (i > 0 && ch >= '0' && ch <= '9');
        if (!ok)
            return false;
    }
    return true;
}

/* ---- the sorted array (registry lock held) ---- */

/* Index of name, or of where it would go; *found says which. */
static size_t lookup(const char *name, bool *found)
{
    size_t lo = 0, hi = reg.n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(reg.v[mid].name, name);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

static int insert(const char *name, weft_metric_t *m, int base)
{
    bool found;
    size_t pos = lookup(name, &found);
    if (found)
        return -EEXIST;
    if (reg.n == reg.cap) {
        size_t cap = reg.cap ? reg.cap * 2 : 64;
        entry_t *v = realloc(reg.v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        reg.v = v;
        reg.cap = cap;
    }
    char *copy = strdup(name);
    if (!copy)
        return -ENOMEM;
    memmove(&reg.v[pos + 1], &reg.v[pos], (reg.n - pos) * sizeof(entry_t));
    reg.v[pos] = (entry_t){.name = copy, .m = m, .base = base};
    reg.n++;
    return 0;
}

static void erase(const char *name)
{
    bool found;
    size_t pos = lookup(name, &found);
    if (!found)
        return;
    free(reg.v[pos].name);
    memmove(&reg.v[pos], &reg.v[pos + 1], (reg.n - pos - 1) * sizeof(entry_t));
    reg.n--;
}

static void erase_names(const char *base, const char *const *sfx, size_t n)
{
    char name[LINE_MAX_LEN];
    for (size_t i = 0; i < n; i++) {
        snprintf(name, sizeof(name), "%s%s", base, sfx[i]);
        erase(name);
    }
}

static int expose_locked(weft_metric_t *m, const char *base)
{
    if (!name_valid(base))
        return -EINVAL;
    if (m->name)
        return -EBUSY;
    const char *const *sfx;
    size_t n = suffixes_of(m, &sfx);
    char name[LINE_MAX_LEN];
    for (size_t i = 0; i < n; i++) {
        bool found;
        snprintf(name, sizeof(name), "%s%s", base, sfx[i]);
        lookup(name, &found);
        if (found)
            return -EEXIST;
    }
    for (size_t i = 0; i < n; i++) {
        snprintf(name, sizeof(name), "%s%s", base, sfx[i]);
        int rc = insert(name, m, i == 0);
        if (rc != 0) {
            erase_names(base, sfx, i);
            return rc;
        }
    }
    bool found;
    __atomic_store_n(&m->name, reg.v[lookup(base, &found)].name, __ATOMIC_RELEASE);
    return 0;
}

/* ---- the runtime's own metrics ---- */

typedef struct {
    const char *name;
    int type;
    size_t offset; /* of an int64_t in the stats struct */
} builtin_t;

static int64_t fiber_stat(void *arg)
{
    weft_fiber_stats_t st;
    weft_fiber_stats(&st);
    return *(const int64_t *)((const char *)&st + (size_t)arg);
}

static int64_t fiber_workers(void *arg)
{
    (void)arg;
    weft_fiber_stats_t st;
    weft_fiber_stats(&st);
    return st.workers;
}

static int64_t stack_stat(void *arg)
{
    weft__stack_stats_t st;
    weft__stack_stats(&st);
    return *(const int64_t *)((const char *)&st + (size_t)arg);
}

#define FIBER_STAT(n, t, f) {n, WEFT_METRIC_##t, offsetof(weft_fiber_stats_t, f)}
static const builtin_t fiber_builtins[] = {
    FIBER_STAT("weft_fiber_alive", GAUGE, fibers_alive),
    FIBER_STAT("weft_fiber_started", COUNTER, fibers_started),
    FIBER_STAT("weft_fiber_switches", COUNTER, switches),
    FIBER_STAT("weft_fiber_steals", COUNTER, steals),
    FIBER_STAT("weft_fiber_parks", COUNTER, parks),
    FIBER_STAT("weft_fiber_wakeups", COUNTER, wakeups),
    FIBER_STAT("weft_fiber_polls", COUNTER, polls),
};

#define STACK_STAT(n, f) {n, WEFT_METRIC_GAUGE, offsetof(weft__stack_stats_t, f)}
static const builtin_t stack_builtins[] = {
    STACK_STAT("weft_fiber_stacks_small", mapped[WEFT__STACK_SMALL]),
    STACK_STAT("weft_fiber_stacks_default", mapped[WEFT__STACK_DEFAULT]),
    STACK_STAT("weft_fiber_stacks_large", mapped[WEFT__STACK_LARGE]),
    STACK_STAT("weft_fiber_stacks_custom", mapped[WEFT__STACK_NCLASS]),
    STACK_STAT("weft_fiber_stack_bytes", bytes_mapped),
};

#define NBUILTIN(a) (sizeof(a) / sizeof((a)[0]))

/* Builtin metrics are never destroyed; the ones made here are static. */
static weft_passive_t fiber_passive[NBUILTIN(fiber_builtins) + 1];
static weft_passive_t stack_passive[NBUILTIN(stack_builtins)];

static int expose_passive(weft_passive_t *p, const char *name, int type, weft_metric_fn *fn,
                          void *arg)
{
    weft_passive_init(p, type, fn, arg);
    int rc = expose_locked(&p->metric, name);
    if (rc != 0)
        WEFT_LOG_WARN("metrics: cannot expose %s: %d", name, rc);
    return rc;
}

static int expose_table(weft_passive_t *p, const builtin_t *t, size_t n, weft_metric_fn *fn)
{
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        int r = expose_passive(&p[i], t[i].name, t[i].type, fn, (void *)t[i].offset);
        rc = rc ? rc : r;
    }
    return rc;
}

static int64_t pool_slots(void *arg)
{
    weft_pool_stats_t st;
    weft_pool_stats(arg, &st);
    return (int64_t)st.slots;
}

static int64_t pool_live(void *arg)
{
    weft_pool_stats_t st;
    weft_pool_stats(arg, &st);
    return st.live;
}

typedef struct {
    int index;
    int rc;
} pool_walk_t;

/* weft_pool_<name>_slots and _live for a pool, its name folded to [a-z0-9_]. */
static void pool_expose(weft_pool_t *pool, void *arg)
{
    pool_walk_t *w = arg;
    if (w->index++ < reg.npools)
        return;
    char clean[WEFT_METRIC_NAME_MAX - 20], name[WEFT_METRIC_NAME_MAX + 1];
    size_t i = 0;
    for (const char *s = pool->name ? pool->name : "anon"; *s && i < sizeof(clean) - 1; s++) {
        char ch = (*s >= 'A' && *s <= 'Z') ? (char)(*s - 'A' + 'a') : *s;
        clean[i++] = ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')) ? ch : '_';
    }
    clean[i] = '\0';
    weft_passive_t *p = calloc(2, sizeof(*p));
    if (!p) {
        w->rc = w->rc ? w->rc : -ENOMEM;
        return;
    }
    snprintf(name, sizeof(name), "weft_pool_%s_slots", clean);
    int rc = expose_passive(&p[0], name, WEFT_METRIC_GAUGE, pool_slots, pool);
    snprintf(name, sizeof(name), "weft_pool_%s_live", clean);
    int rc2 = expose_passive(&p[1], name, WEFT_METRIC_GAUGE, pool_live, pool);
    if (rc != 0 && rc2 != 0)
        free(p); /* neither is in the registry */
    /* A pool whose name is taken keeps no metrics; not worth failing for. */
}

/* Registry lock held. Pools appear as they are first used; each call picks
 * up the new ones. */
static int builtin_locked(void)
{
    int rc = 0;
    if (!reg.builtin_done) {
        reg.builtin_done = 1;
        rc = expose_table(fiber_passive, fiber_builtins, NBUILTIN(fiber_builtins), fiber_stat);
        size_t last = NBUILTIN(fiber_builtins);
        int r = expose_passive(&fiber_passive[last], "weft_fiber_workers", WEFT_METRIC_GAUGE,
                               fiber_workers, NULL);
        rc = rc ? rc : r;
        r = expose_table(stack_passive, stack_builtins, NBUILTIN(stack_builtins), stack_stat);
        rc = rc ? rc : r;
    }
    pool_walk_t w = {0, 0};
    weft_pool_foreach(pool_expose, &w);
    reg.npools = w.index;
    return rc ? rc : w.rc;
}

static void reg_lock(void)
{
    weft_mutex_lock(&reg.lock);
    builtin_locked();
}

int weft_metrics_register_builtin(void)
{
    weft_mutex_lock(&reg.lock);
    int rc = builtin_locked();
    weft_mutex_unlock(&reg.lock);
    return rc;
}

/* ---- the public registry ---- */

int weft_metric_expose(weft_metric_t *m, const char *name)
{
    reg_lock();
    int rc = expose_locked(m, name);
    weft_mutex_unlock(&reg.lock);
    return rc;
}

int weft_metric_hide(weft_metric_t *m)
{
    if (!__atomic_load_n(&m->name, __ATOMIC_ACQUIRE))
        return -ENOENT;
    weft_mutex_lock(&reg.lock);
    int rc = -ENOENT;
    if (m->name) {
        char base[WEFT_METRIC_NAME_MAX + 1];
        snprintf(base, sizeof(base), "%s", m->name);
        __atomic_store_n(&m->name, NULL, __ATOMIC_RELEASE);
        const char *const *sfx;
        size_t n = suffixes_of(m, &sfx);
        erase_names(base, sfx, n);
        rc = 0;
    }
    weft_mutex_unlock(&reg.lock);
    return rc;
}

const char *weft_metric_name(const weft_metric_t *m)
{
    return __atomic_load_n(&m->name, __ATOMIC_ACQUIRE);
}

weft_metric_t *weft_metrics_find(const char *name)
{
    weft_metric_t *m = NULL;
    bool found;
    reg_lock();
    size_t pos = name ? lookup(name, &found) : (found = false, 0);
    if (found && reg.v[pos].base)
        m = reg.v[pos].m;
    weft_mutex_unlock(&reg.lock);
    return m;
}

int weft_metrics_foreach(int (*fn)(weft_metric_t *m, void *arg), void *arg)
{
    int rc = 0;
    reg_lock();
    for (size_t i = 0; i < reg.n && rc == 0; i++)
        if (reg.v[i].base)
            rc = fn(reg.v[i].m, arg);
    weft_mutex_unlock(&reg.lock);
    return rc;
}

/* ---- dumps ---- */

/* Output staged in a buffer and handed to the sink in large pieces. */
typedef struct {
    weft_metrics_sink_fn *sink;
    void *arg;
    int rc;
    size_t len;
    char buf[8192];
} out_t;

static void out_flush(out_t *o)
{
    if (o->len && o->rc == 0)
        o->rc = o->sink(o->arg, o->buf, o->len);
    o->len = 0;
}

__attribute__((format(printf, 2, 3))) static void out_printf(out_t *o, const char *fmt, ...)
{
    if (sizeof(o->buf) - o->len < LINE_MAX_LEN)
        out_flush(o);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, sizeof(o->buf) - o->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n < sizeof(o->buf) - o->len ? (size_t)n : sizeof(o->buf) - o->len - 1;
}

/* An empty maxer or miner reads as its identity; dumps print 0. */
static int64_t printable_value(weft_metric_t *m)
{
    int64_t v = weft_metric_value(m);
    if (!m->passive && ((m->type == WEFT_METRIC_MAXER && v == INT64_MIN) ||
                        (m->type == WEFT_METRIC_MINER && v == INT64_MAX)))
        return 0;
    return v;
}

/* Text values of a recorder, in latency_suffixes order from SFX_COUNT. */
static void latency_values(weft_metric_t *m, int64_t v[SFX_MAX + 1], int64_t *sum)
{
    weft_latency_stats_t s;
    weft_latency_recorder_stats((weft_latency_recorder_t *)m, &s);
    v[SFX_COUNT] = s.count;
    v[SFX_QPS] = s.qps;
    v[SFX_AVG] = s.avg_us;
    v[SFX_P50] = s.p50_us;
    v[SFX_P90] = s.p90_us;
    v[SFX_P99] = s.p99_us;
    v[SFX_P999] = s.p999_us;
    v[SFX_MAX] = s.max_us;
    *sum = s.sum_us;
}

static void dump_text(out_t *o, const char *name, weft_metric_t *m)
{
    if (m->type != WEFT_METRIC_LATENCY || m->passive) {
        out_printf(o, "%s : %" PRId64 "\n", name, printable_value(m));
        return;
    }
    int64_t v[SFX_MAX + 1], sum;
    latency_values(m, v, &sum);
    for (int i = SFX_COUNT; i <= SFX_MAX; i++)
        out_printf(o, "%s%s : %" PRId64 "\n", name, latency_suffixes[i], v[i]);
}

static void dump_prometheus(out_t *o, const char *name, weft_metric_t *m)
{
    if (m->type != WEFT_METRIC_LATENCY || m->passive) {
        const char *type = m->type == WEFT_METRIC_COUNTER ? "counter" : "gauge";
        out_printf(o, "# TYPE %s %s\n%s %" PRId64 "\n", name, type, name, printable_value(m));
        return;
    }
    static const struct {
        int sfx;
        const char *q;
    } quantiles[] = {{SFX_P50, "0.5"}, {SFX_P90, "0.9"}, {SFX_P99, "0.99"}, {SFX_P999, "0.999"}};
    int64_t v[SFX_MAX + 1], sum;
    latency_values(m, v, &sum);
    const char *family = latency_suffixes[SFX_SUMMARY];
    out_printf(o, "# TYPE %s%s summary\n", name, family);
    for (size_t i = 0; i < sizeof(quantiles) / sizeof(quantiles[0]); i++)
        out_printf(o, "%s%s{quantile=\"%s\"} %" PRId64 "\n", name, family, quantiles[i].q,
                   v[quantiles[i].sfx]);
    out_printf(o, "%s%s_sum %" PRId64 "\n", name, family, sum);
    out_printf(o, "%s%s_count %" PRId64 "\n", name, family, v[SFX_COUNT]);
    static const int gauges[] = {SFX_QPS, SFX_MAX};
    for (size_t i = 0; i < sizeof(gauges) / sizeof(gauges[0]); i++) {
        const char *sfx = latency_suffixes[gauges[i]];
        out_printf(o, "# TYPE %s%s gauge\n%s%s %" PRId64 "\n", name, sfx, name, sfx,
                   v[gauges[i]]);
    }
}

int weft_metrics_dump(int format, const char *pattern, weft_metrics_sink_fn *sink, void *arg)
{
    if (!sink || (format != WEFT_METRICS_TEXT && format != WEFT_METRICS_PROMETHEUS))
        return -EINVAL;
    out_t *o = malloc(sizeof(*o));
    if (!o)
        return -ENOMEM;
    o->sink = sink;
    o->arg = arg;
    o->rc = 0;
    o->len = 0;
    reg_lock();
    for (size_t i = 0; i < reg.n && o->rc == 0; i++) {
        entry_t *e = &reg.v[i];
        if (!e->base || (pattern && fnmatch(pattern, e->name, 0) != 0))
            continue;
        if (format == WEFT_METRICS_TEXT)
            dump_text(o, e->name, e->m);
        else
            dump_prometheus(o, e->name, e->m);
    }
    out_flush(o);
    weft_mutex_unlock(&reg.lock);
    int rc = o->rc;
    free(o);
    return rc;
}

int weft_metrics_buf_append(void *buf, const char *data, size_t len)
{
    weft_metrics_buf_t *b = buf;
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len + 1)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p)
            return -ENOMEM;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

void weft_metrics_buf_free(weft_metrics_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
