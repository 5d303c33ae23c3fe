/*
 * test_metrics.c - histogram accuracy and merging, per-thread metrics under
 * threads and migrating fibers, windows, the registry and its dumps, and
 * what an update costs.
 *
 * Windows are driven by weft__metrics_tick() with the sampler timer
 * switched off, so every check on a window is exact; one test at the end
 * lets the real timer tick.
 */
#include "fiber/runtime.h"
#include "fiber/metrics_internal.h"
#include "weft_test.h"

#include <math.h>
#include <pthread.h>

/* ---- helpers ---- */

static uint64_t rng = 0x2545f4914f6cdd1dull;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double urand(void)
{
    return (double)(rnd() >> 11) * 0x1p-53;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double elapsed_ns(int64_t t0)
{
    return (double)(weft_clock_ns() - t0);
}

static void run_threads(int n, void *(*fn)(void *), void *arg)
{
    pthread_t th[16];
    WT_ASSERT(n <= 16);
    for (int i = 0; i < n; i++)
        WT_EQ(pthread_create(&th[i], NULL, fn, arg), 0);
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
}

/* |got - exact| <= 1% of exact. */
static void check_close(const char *what, double p, int64_t got, int64_t exact)
{
    int64_t diff = got > exact ? got - exact : exact - got;
    WT_ASSERT_MSG(diff * 100 <= exact, "%s p%g: got %lld, exact %lld", what, p, (long long)got,
                  (long long)exact);
}

/* ---- histogram ---- */

static int64_t gen_uniform(void) { return (int64_t)(rnd() % 1000000); }
static int64_t gen_small(void) { return (int64_t)(rnd() % 300); }
static int64_t gen_const(void) { return 123457; }
static int64_t gen_exp(void) { return (int64_t)(-log(1 - urand()) * 2000); }

/* Every octave up to 2^40: a random 64-bit value shifted right by 24..63. */
static int64_t gen_wide(void) { return (int64_t)(rnd() >> (24 + rnd() % 40)); }

static int64_t gen_lognormal(void)
{
    double z = sqrt(-2 * log(1 - urand())) * cos(2 * M_PI * urand());
    return (int64_t)exp(6 + 2 * z);
}

typedef struct {
    const char *name;
    int64_t (*gen)(void);
} dist_t;

static const dist_t dists[] = {
    {"uniform", gen_uniform}, {"small", gen_small},         {"const", gen_const},
    {"exp", gen_exp},         {"lognormal", gen_lognormal}, {"wide", gen_wide},
};

static void check_distribution(const dist_t *d)
{
    /* Percentiles in units of 1/1000 %, so the exact rank is integer math. */
    static const int64_t pm[] = {0, 1000, 10000, 25000, 50000, 75000,
                                 90000, 99000, 99900, 99990, 100000};
    int64_t n = wt_scaled(200000);
    int64_t *v = malloc((size_t)n * sizeof(*v));
    WT_ASSERT(v);
    weft_histogram_t h = WEFT_HISTOGRAM_INITIALIZER;
    int64_t sum = 0;
    for (int64_t i = 0; i < n; i++) {
        v[i] = d->gen();
        sum += v[i];
        WT_EQ(weft_histogram_record(&h, v[i]), 0);
    }
    qsort(v, (size_t)n, sizeof(*v), cmp_i64);
    WT_EQ(weft_histogram_count(&h), n);
    WT_EQ(weft_histogram_sum(&h), sum);
    WT_EQ(weft_histogram_min(&h), v[0]);
    WT_EQ(weft_histogram_max(&h), v[n - 1]);
    WT_ASSERT(fabs(weft_histogram_mean(&h) - (double)sum / (double)n) < 1e-6 * (double)sum);
    for (size_t i = 0; i < sizeof(pm) / sizeof(pm[0]); i++) {
        int64_t rank = (pm[i] * n + 99999) / 100000;
        int64_t exact = v[rank < 1 ? 0 : rank - 1];
        double p = (double)pm[i] / 1000.0;
        check_close(d->name, p, weft_histogram_percentile(&h, p), exact);
    }
    weft_histogram_destroy(&h);
    free(v);
}

static void test_histogram_accuracy(void)
{
    for (size_t i = 0; i < sizeof(dists) / sizeof(dists[0]); i++)
        check_distribution(&dists[i]);

    /* Values that cluster cost one octave each. */
    weft_histogram_t h = WEFT_HISTOGRAM_INITIALIZER;
    for (int i = 0; i < 1000; i++)
        weft_histogram_record(&h, 1000 + i % 20);
    WT_EQ(weft_histogram_memory(&h), 1024);

    /* The edges: negative counts as 0, INT64_MAX fits, empty reads 0. */
    weft_histogram_reset(&h);
    WT_EQ(weft_histogram_percentile(&h, 50), 0);
    WT_EQ(weft_histogram_min(&h), 0);
    weft_histogram_record(&h, -5);
    weft_histogram_record(&h, INT64_MAX);
    WT_EQ(weft_histogram_min(&h), 0);
    WT_EQ(weft_histogram_max(&h), INT64_MAX);
    WT_EQ(weft_histogram_percentile(&h, 50), 0);
    WT_EQ(weft_histogram_percentile(&h, 100), INT64_MAX);
    WT_ASSERT(weft_histogram_percentile(&h, 99) >= INT64_MAX / 100 * 99);
    weft_histogram_destroy(&h);
    WT_EQ(weft_histogram_memory(&h), 0);
}

/* Same values in every bucket; a missing octave counts as zeroes. */
static void assert_same(const weft_histogram_t *a, const weft_histogram_t *b)
{
    WT_EQ(weft_histogram_count(a), weft_histogram_count(b));
    WT_EQ(weft_histogram_sum(a), weft_histogram_sum(b));
    for (int o = 0; o < WEFT_HISTOGRAM_OCTAVES; o++) {
        for (int sub = 0; sub < WEFT_HISTOGRAM_SUB_COUNT; sub++) {
            uint64_t x = a->octaves[o] ? a->octaves[o][sub] : 0;
            uint64_t y = b->octaves[o] ? b->octaves[o][sub] : 0;
            WT_ASSERT_MSG(x == y, "octave %d bucket %d: %llu vs %llu", o, sub,
                          (unsigned long long)x, (unsigned long long)y);
        }
    }
}

static void test_histogram_merge(void)
{
    weft_histogram_t a = {0}, b = {0}, all = {0}, a_only = {0};
    int64_t n = wt_scaled(100000);
    for (int64_t i = 0; i < n; i++) {
        int64_t x = gen_exp(), y = gen_wide();
        weft_histogram_record(&a, x);
        weft_histogram_record(&a_only, x);
        weft_histogram_record(&b, y);
        weft_histogram_record(&all, x);
        weft_histogram_record(&all, y);
    }
    WT_EQ(weft_histogram_merge(&a, &b), 0);
    assert_same(&a, &all);
    WT_EQ(weft_histogram_min(&a), weft_histogram_min(&all));
    WT_EQ(weft_histogram_max(&a), weft_histogram_max(&all));
    for (double p = 0; p <= 100; p += 0.5)
        WT_EQ(weft_histogram_percentile(&a, p), weft_histogram_percentile(&all, p));

    /* Subtracting b gives back exactly what a held, bucket by bucket. */
    WT_EQ(weft_histogram_subtract(&a, &b), 0);
    assert_same(&a, &a_only);
    WT_ASSERT(weft_histogram_min(&a) <= weft_histogram_min(&a_only));
    WT_ASSERT(weft_histogram_max(&a) >= weft_histogram_max(&a_only));
    check_close("subtract", 50, weft_histogram_percentile(&a, 50),
                weft_histogram_percentile(&a_only, 50));
    /* b is no part of a any more. */
    WT_EQ(weft_histogram_subtract(&a, &b), -EINVAL);

    weft_histogram_destroy(&a);
    weft_histogram_destroy(&b);
    weft_histogram_destroy(&all);
    weft_histogram_destroy(&a_only);
}

/* ---- counter, gauge, passive ---- */

static weft_counter_t counter = WEFT_COUNTER_INITIALIZER;
static long counter_adds;
static int counter_done;

static void *counter_adder(void *arg)
{
    (void)arg;
    for (long i = 0; i < counter_adds; i++)
        weft_counter_add(&counter, 1);
    return NULL; /* the thread's cell is folded as it exits */
}

static void *counter_watcher(void *arg)
{
    int64_t last = 0, limit = *(int64_t *)arg;
    while (!__atomic_load_n(&counter_done, __ATOMIC_ACQUIRE)) {
        int64_t v = weft_counter_value(&counter);
        WT_ASSERT_MSG(v >= last && v <= limit, "counter read %lld after %lld", (long long)v,
                      (long long)last);
        last = v;
    }
    return NULL;
}

static void test_counter_threads(void)
{
    counter_adds = wt_scaled(1000000);
    int64_t total = 8 * counter_adds;
    pthread_t watcher;
    WT_EQ(pthread_create(&watcher, NULL, counter_watcher, &total), 0);
    run_threads(8, counter_adder, NULL);
    __atomic_store_n(&counter_done, 1, __ATOMIC_RELEASE);
    pthread_join(watcher, NULL);
    /* Every adder has exited: all of it lives on in the folded value. */
    WT_EQ(weft_counter_value(&counter), total);
    WT_ASSERT(counter.metric.cells == NULL);
}

/* A destroyed metric's id goes to the next one; cells left under that id
 * by live threads must not leak into it. */
static weft_counter_t reuse_a, reuse_b;
static weft_sem_t reuse_step, reuse_back;

static void *reuse_thread(void *arg)
{
    (void)arg;
    weft_counter_add(&reuse_a, 7);
    weft_sem_post(&reuse_back, 1);
    weft_sem_wait(&reuse_step); /* a is destroyed and b made meanwhile */
    weft_counter_add(&reuse_b, 3);
    return NULL;
}

static void test_counter_reuse(void)
{
    weft_sem_init(&reuse_step, 0);
    weft_sem_init(&reuse_back, 0);
    weft_counter_init(&reuse_a);
    weft_counter_add(&reuse_a, 5);
    pthread_t th;
    WT_EQ(pthread_create(&th, NULL, reuse_thread, NULL), 0);
    weft_sem_wait(&reuse_back);
    WT_EQ(weft_counter_value(&reuse_a), 12);
    int32_t id = reuse_a.metric.id;
    weft_metric_destroy(&reuse_a.metric);
    weft_counter_init(&reuse_b);
    weft_counter_add(&reuse_b, 1);
    WT_EQ(reuse_b.metric.id, id);
    WT_EQ(weft_counter_value(&reuse_b), 1);
    weft_sem_post(&reuse_step, 1);
    pthread_join(th, NULL);
    WT_EQ(weft_counter_value(&reuse_b), 4);
    weft_metric_destroy(&reuse_b.metric);
}

static weft_gauge_t gauge = WEFT_GAUGE_INITIALIZER;

static void *gauge_adder(void *arg)
{
    weft_gauge_add(&gauge, *(int64_t *)arg);
    return NULL;
}

static int64_t passive_fn(void *arg)
{
    return *(int64_t *)arg * 2;
}

static void test_gauge_passive(void)
{
    WT_EQ(weft_gauge_value(&gauge), 0);
    weft_gauge_set(&gauge, 100);
    weft_gauge_add(&gauge, -3);
    WT_EQ(weft_gauge_value(&gauge), 97);
    int64_t ten = 10;
    run_threads(2, gauge_adder, &ten);
    WT_EQ(weft_gauge_value(&gauge), 117);
    weft_gauge_set(&gauge, 0);
    WT_EQ(weft_gauge_value(&gauge), 0);
    weft_gauge_add(&gauge, 1);
    WT_EQ(weft_metric_value(&gauge.metric), 1);

    weft_passive_t p;
    int64_t x = 21;
    WT_EQ(weft_passive_init(&p, WEFT_METRIC_MAXER, passive_fn, &x), -EINVAL);
    WT_EQ(weft_passive_init(&p, WEFT_METRIC_GAUGE, NULL, &x), -EINVAL);
    WT_EQ(weft_passive_init(&p, WEFT_METRIC_GAUGE, passive_fn, &x), 0);
    WT_EQ(weft_passive_value(&p), 42);
    x = -4;
    WT_EQ(weft_metric_value(&p.metric), -8);
    WT_EQ(weft_metric_type(&p.metric), WEFT_METRIC_GAUGE);
    weft_metric_destroy(&p.metric);
}

/* ---- maxer and miner ---- */

static weft_maxer_t maxer = WEFT_MAXER_INITIALIZER;
static weft_miner_t miner = WEFT_MINER_INITIALIZER;

static void *extreme_updater(void *arg)
{
    int64_t base = *(int64_t *)arg;
    for (int64_t i = 0; i < wt_scaled(100000); i++) {
        weft_maxer_update(&maxer, base + i % 1000);
        weft_miner_update(&miner, base - i % 1000);
    }
    return NULL;
}

static void test_maxer_miner(void)
{
    WT_EQ(weft_maxer_value(&maxer), INT64_MIN);
    WT_EQ(weft_miner_value(&miner), INT64_MAX);
    int64_t base = 5000;
    run_threads(4, extreme_updater, &base);
    WT_EQ(weft_maxer_value(&maxer), 5999);
    WT_EQ(weft_miner_value(&miner), 4001);
    weft_maxer_update(&maxer, INT64_MAX);
    weft_miner_update(&miner, INT64_MIN);
    WT_EQ(weft_maxer_value(&maxer), INT64_MAX);
    WT_EQ(weft_miner_value(&miner), INT64_MIN);

    /* A window of 5 s: a second's extreme stays for 5 ticks. */
    weft_maxer_t wmax;
    weft_miner_t wmin;
    WT_EQ(weft_maxer_init(&wmax, -1), -EINVAL);
    WT_EQ(weft_maxer_init(&wmax, 5), 0);
    WT_EQ(weft_miner_init(&wmin, 5), 0);
    weft_maxer_update(&wmax, 100);
    weft_miner_update(&wmin, -100);
    weft__metrics_tick(); /* closes second 1 */
    weft_maxer_update(&wmax, 50);
    weft_miner_update(&wmin, -50);
    WT_EQ(weft_maxer_value(&wmax), 100);
    WT_EQ(weft_miner_value(&wmin), -100);
    for (int i = 2; i <= 5; i++)
        weft__metrics_tick();
    WT_EQ(weft_maxer_value(&wmax), 100); /* seconds 1..5 */
    weft__metrics_tick();
    WT_EQ(weft_maxer_value(&wmax), 50); /* seconds 2..6 */
    WT_EQ(weft_miner_value(&wmin), -50);
    weft__metrics_tick();
    WT_EQ(weft_maxer_value(&wmax), INT64_MIN);
    WT_EQ(weft_miner_value(&wmin), INT64_MAX);
    weft_metric_destroy(&wmax.metric);
    weft_metric_destroy(&wmin.metric);
}

/* ---- fibers ---- */

#define FIBER_ADDS 100

static weft_counter_t fiber_counter = WEFT_COUNTER_INITIALIZER;
static weft_latency_recorder_t fiber_rec;
static int fibers_moved;

static void fiber_adder(void *arg)
{
    (void)arg;
    int first = weft_fiber_worker_index(), moved = 0;
    for (int i = 0; i < FIBER_ADDS; i++) {
        weft_counter_add(&fiber_counter, 1);
        weft_latency_recorder_record(&fiber_rec, i);
        weft_fiber_yield();
        moved |= weft_fiber_worker_index() != first;
    }
    if (moved)
        __atomic_fetch_add(&fibers_moved, 1, __ATOMIC_RELAXED);
}

static int64_t test_counter_fibers(void)
{
    long n = wt_scaled(2000);
    WT_EQ(weft_latency_recorder_init(&fiber_rec, 0), 0);
    weft_fiber_t *ids = calloc((size_t)n, sizeof(*ids));
    WT_ASSERT(ids);
    for (long i = 0; i < n; i++)
        WT_EQ(weft_fiber_start_background(&ids[i], NULL, fiber_adder, NULL), 0);
    for (long i = 0; i < n; i++)
        WT_EQ(weft_fiber_join(ids[i]), 0);
    free(ids);
    int64_t total = (int64_t)n * FIBER_ADDS;
    WT_EQ(weft_counter_value(&fiber_counter), total);
    WT_EQ(weft_metric_value(&fiber_rec.metric), total);
    weft__metrics_tick();
    WT_EQ(weft_latency_recorder_percentile(&fiber_rec, 100), FIBER_ADDS - 1);
    WT_NOTE("fibers_that_changed_worker: %d of %ld (workers: %d)",
            __atomic_load_n(&fibers_moved, __ATOMIC_RELAXED), n, weft_fiber_workers());
    return total;
}

/* ---- latency recorder ---- */

static weft_latency_recorder_t rec;

static void *record_odd(void *arg)
{
    int64_t n = *(int64_t *)arg;
    for (int64_t v = 1; v <= n; v += 2)
        weft_latency_recorder_record(&rec, v);
    return NULL;
}

static void check_stats(int64_t count, int64_t p50, int64_t p90, int64_t p99, int64_t p999,
                        int64_t max)
{
    weft_latency_stats_t s;
    weft_latency_recorder_stats(&rec, &s);
    WT_EQ(s.count, count);
    check_close("rec", 50, s.p50_us, p50);
    check_close("rec", 90, s.p90_us, p90);
    check_close("rec", 99, s.p99_us, p99);
    check_close("rec", 99.9, s.p999_us, p999);
    WT_EQ(s.max_us, max);
    WT_EQ(weft_latency_recorder_percentile(&rec, 50), s.p50_us);
}

static void test_latency_recorder(void)
{
    WT_EQ(weft_latency_recorder_init(&rec, -1), -EINVAL);
    int64_t t0 = weft_clock_ns();
    WT_EQ(weft_latency_recorder_init(&rec, 0), 0);

    /* 1..10000: the odd ones from a thread that exits, the even ones here. */
    int64_t n = 10000;
    run_threads(1, record_odd, &n);
    for (int64_t v = 2; v <= n; v += 2)
        weft_latency_recorder_record(&rec, v);
    weft__metrics_tick();
    int64_t span = weft_clock_ns() - t0;
    check_stats(n, 5000, 9000, 9900, 9990, 10000);
    weft_latency_stats_t s;
    weft_latency_recorder_stats(&rec, &s);
    WT_EQ(s.sum_us, n * (n + 1) / 2);
    WT_EQ(s.avg_us, (n + 1) / 2);
    WT_ASSERT_MSG(s.qps >= (int64_t)((double)n * 1e9 / (double)span) - 1, "qps %lld",
                  (long long)s.qps);

    /* Second 2: 10000 values of 20000. */
    for (int64_t i = 0; i < n; i++)
        weft_latency_recorder_record(&rec, 20000);
    weft__metrics_tick();
    check_stats(2 * n, 10000, 20000, 20000, 20000, 20000);

    /* Nine more seconds: second 1 leaves the 10 s window. */
    for (int i = 0; i < 9; i++)
        weft__metrics_tick();
    check_stats(2 * n, 20000, 20000, 20000, 20000, 20000);
    /* Ten more: the window is empty, the totals stay. */
    for (int i = 0; i < 10; i++)
        weft__metrics_tick();
    weft_latency_recorder_stats(&rec, &s);
    WT_EQ(s.count, 2 * n);
    WT_EQ(s.qps, 0);
    WT_EQ(s.p50_us, 0);
    WT_EQ(s.max_us, 0);
    WT_EQ(s.avg_us, 0);
    WT_EQ(weft_metric_value(&rec.metric), 2 * n);
}

/* The real sampler: a timer tick a second, in a fiber. */
static void test_latency_sampler(void)
{
    weft__metrics_set_manual(0);
    weft_latency_recorder_t r;
    WT_EQ(weft_latency_recorder_init(&r, 2), 0);
    for (int i = 0; i < 1000; i++)
        weft_latency_recorder_record(&r, 500);
    weft_latency_stats_t s = {0};
    int64_t deadline = weft_clock_ns() + 5 * WEFT_NS_PER_SEC;
    while (s.p50_us == 0 && weft_clock_ns() < deadline) {
        weft_fiber_usleep(50000);
        weft_latency_recorder_stats(&r, &s);
    }
    check_close("sampler", 50, s.p50_us, 500);
    WT_EQ(s.max_us, 500);
    WT_GT(s.qps, 0);
    weft_metric_destroy(&r.metric);
}

/* ---- registry and dumps ---- */

static int collect_names(weft_metric_t *m, void *arg)
{
    weft_metrics_buf_t *b = arg;
    const char *name = weft_metric_name(m);
    weft_metrics_buf_append(b, name, strlen(name));
    weft_metrics_buf_append(b, "\n", 1);
    return 0;
}

static bool has_line(const char *text, const char *line)
{
    size_t len = strlen(line);
    for (const char *p = text; (p = strstr(p, line)); p++)
        if ((p == text || p[-1] == '\n') && (p[len] == '\n' || p[len] == '\0'))
            return true;
    return false;
}

static bool has_prefix_line(const char *text, const char *prefix)
{
    for (const char *p = text; (p = strstr(p, prefix)); p++)
        if (p == text || p[-1] == '\n')
            return true;
    return false;
}

/* Length of a metric name at s, 0 if none. */
static size_t name_len(const char *s)
{
    size_t i = 0;
    while ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || s[i] == '_' ||
           s[i] == ':' || (i > 0 && s[i] >= '0' && s[i] <= '9'))
        i++;
    return i;
}

/* {name="value",...}: returns its length, 0 if malformed. */
static size_t labels_len(const char *s)
{
    const char *p = s + 1;
    for (;;) {
        size_t n = name_len(p);
        if (n == 0 || p[n] != '=' || p[n + 1] != '"')
            return 0;
        p += n + 2;
        while (*p && *p != '"' && *p != '\n')
            p += (*p == '\\' && p[1]) ? 2 : 1;
        if (*p++ != '"')
            return 0;
        if (*p == '}')
            return (size_t)(p + 1 - s);
        if (*p++ != ',')
            return 0;
    }
}

/*
 * Checks the Prometheus text format line by line: "# TYPE name type" once
 * per family and before its samples, samples "name{labels} value" of the
 * current family (a summary also has name_sum and name_count and needs a
 * quantile label on the rest), no sample twice.
 */
static void check_prometheus(const char *text)
{
    WT_ASSERT(*text && text[strlen(text) - 1] == '\n');
    char family[256] = "", type[32] = "";
    weft_metrics_buf_t seen = {0}, families = {0};
    int samples = 0;
    for (const char *line = text; *line; line = strchr(line, '\n') + 1) {
        int len = (int)(strchr(line, '\n') - line);
        if (strncmp(line, "# TYPE ", 7) == 0) {
            size_t n = name_len(line + 7);
            WT_ASSERT_MSG(n > 0 && n < sizeof(family) && line[7 + n] == ' ', "%.*s", len, line);
            snprintf(family, sizeof(family), "%.*s", (int)n, line + 7);
            snprintf(type, sizeof(type), "%.*s", len - 8 - (int)n, line + 8 + n);
            WT_ASSERT_MSG(!strcmp(type, "counter") || !strcmp(type, "gauge") ||
                              !strcmp(type, "summary") || !strcmp(type, "histogram") ||
                              !strcmp(type, "untyped"),
                          "%.*s", len, line);
            char key[260];
            snprintf(key, sizeof(key), "\n%s\n", family);
            WT_ASSERT_MSG(!families.data || !strstr(families.data, key), "family twice: %s",
                          family);
            weft_metrics_buf_append(&families, key, strlen(key) - 1);
            continue;
        }
        if (line[0] == '#')
            continue; /* HELP or a comment */
        size_t n = name_len(line);
        WT_ASSERT_MSG(n > 0, "bad sample: %.*s", len, line);
        size_t l = line[n] == '{' ? labels_len(line + n) : 0;
        WT_ASSERT_MSG(line[n] != '{' || l > 0, "bad labels: %.*s", len, line);
        WT_ASSERT_MSG(line[n + l] == ' ', "no value: %.*s", len, line);
        char *end;
        strtod(line + n + l + 1, &end);
        WT_ASSERT_MSG(end == line + len && end > line + n + l + 1, "bad value: %.*s", len, line);
        size_t fl = strlen(family);
        bool same = n == fl && strncmp(line, family, n) == 0;
        bool summary_part = !strcmp(type, "summary") && strncmp(line, family, fl) == 0 &&
                            (!strncmp(line + fl, "_sum ", 5) || !strncmp(line + fl, "_count ", 7));
        WT_ASSERT_MSG(same || summary_part, "sample outside its family %s: %.*s", family, len,
                      line);
        if (!strcmp(type, "summary") && same)
            WT_ASSERT_MSG(l > 0 && strstr(line, "quantile=\""), "%.*s", len, line);
        char key[512];
        snprintf(key, sizeof(key), "\n%.*s\n", (int)(n + l), line);
        WT_ASSERT_MSG(!seen.data || !strstr(seen.data, key), "sample twice: %.*s", len, line);
        weft_metrics_buf_append(&seen, key, strlen(key) - 1);
        samples++;
    }
    WT_GT(samples, 0);
    weft_metrics_buf_free(&seen);
    weft_metrics_buf_free(&families);
}

/* "name : integer" lines with distinct names. */
static void check_text(const char *text)
{
    weft_metrics_buf_t seen = {0};
    for (const char *line = text; *line; line = strchr(line, '\n') + 1) {
        const char *nl = strchr(line, '\n');
        WT_ASSERT(nl);
        size_t n = name_len(line);
        WT_ASSERT_MSG(n > 0 && !strncmp(line + n, " : ", 3), "%.*s", (int)(nl - line), line);
        char *end;
        strtoll(line + n + 3, &end, 10);
        WT_ASSERT_MSG(end == nl && end > line + n + 3, "%.*s", (int)(nl - line), line);
        char key[256];
        snprintf(key, sizeof(key), "\n%.*s\n", (int)n, line);
        WT_ASSERT_MSG(!seen.data || !strstr(seen.data, key), "twice: %s", key + 1);
        weft_metrics_buf_append(&seen, key, strlen(key) - 1);
    }
    weft_metrics_buf_free(&seen);
}

static int failing_sink(void *arg, const char *data, size_t len)
{
    (void)arg;
    (void)data;
    (void)len;
    return -EIO;
}

static void test_registry(void)
{
    weft_counter_t c = WEFT_COUNTER_INITIALIZER, other = WEFT_COUNTER_INITIALIZER;
    weft_maxer_t mx = WEFT_MAXER_INITIALIZER;
    weft_miner_t mn = WEFT_MINER_INITIALIZER;
    weft_counter_add(&c, 42);

    WT_EQ(weft_metric_expose(&c.metric, "test_requests"), 0);
    WT_EQ(weft_metric_expose(&other.metric, "test_requests"), -EEXIST);
    WT_EQ(weft_metric_expose(&c.metric, "test_requests2"), -EBUSY);
    const char *bad[] = {"", "Bad", "a-b", "9lives", "x y", "é"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        WT_EQ(weft_metric_expose(&other.metric, bad[i]), -EINVAL);
    char longname[WEFT_METRIC_NAME_MAX + 2];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    WT_EQ(weft_metric_expose(&other.metric, longname), -EINVAL);
    longname[WEFT_METRIC_NAME_MAX] = '\0';
    WT_EQ(weft_metric_expose(&other.metric, longname), 0);
    WT_EQ(weft_metric_hide(&other.metric), 0);
    WT_EQ(weft_metric_hide(&other.metric), -ENOENT);

    /* A builtin's name, and names a recorder prints as, are taken. */
    WT_EQ(weft_metric_expose(&other.metric, "weft_fiber_alive"), -EEXIST);
    WT_EQ(weft_metric_expose(&rec.metric, "test_rpc"), 0);
    WT_EQ(weft_metric_expose(&other.metric, "test_rpc_count"), -EEXIST);
    WT_EQ(weft_metric_expose(&other.metric, "test_rpc_latency_us_sum"), -EEXIST);
    WT_EQ(weft_metric_expose(&other.metric, "test_rpc"), -EEXIST);
    WT_EQ(weft_metric_expose(&other.metric, "test_rpc_x"), 0);
    weft_maxer_update(&mx, -7);
    WT_EQ(weft_metric_expose(&mx.metric, "test_max"), 0);
    WT_EQ(weft_metric_expose(&mn.metric, "test_min_empty"), 0);

    WT_ASSERT(weft_metrics_find("test_requests") == &c.metric);
    WT_ASSERT(weft_metrics_find("test_rpc") == &rec.metric);
    WT_ASSERT(weft_metrics_find("test_rpc_count") == NULL);
    WT_ASSERT(weft_metrics_find("nope") == NULL);
    WT_STREQ(weft_metric_name(&c.metric), "test_requests");

    /* foreach: name order, builtins included. */
    weft_metrics_buf_t names = {0};
    WT_EQ(weft_metrics_foreach(collect_names, &names), 0);
    for (char *p = names.data, *nl; (nl = strchr(p, '\n')) && nl[1]; p = nl + 1)
        WT_ASSERT_MSG(strncmp(p, nl + 1, (size_t)(nl - p) + 1) < 0, "order at %.40s", p);
    const char *want[] = {"test_requests", "test_rpc", "weft_fiber_alive", "weft_fiber_switches",
                          "weft_fiber_workers", "weft_fiber_stack_bytes",
                          "weft_pool_fiber_live", "weft_pool_fiber_slots"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        WT_ASSERT_MSG(has_line(names.data, want[i]), "no %s", want[i]);
    weft_metrics_buf_free(&names);

    /* Text. */
    weft_metrics_buf_t out = {0};
    WT_EQ(weft_metrics_dump(WEFT_METRICS_TEXT, NULL, weft_metrics_buf_append, &out), 0);
    check_text(out.data);
    WT_ASSERT(has_line(out.data, "test_requests : 42"));
    WT_ASSERT(has_line(out.data, "test_max : -7"));
    WT_ASSERT(has_line(out.data, "test_min_empty : 0"));
    WT_ASSERT(has_line(out.data, "test_rpc_count : 20000"));
    const char *rec_lines[] = {"test_rpc_qps : ", "test_rpc_latency_avg_us : ",
                               "test_rpc_latency_p50_us : ", "test_rpc_latency_p90_us : ",
                               "test_rpc_latency_p99_us : ", "test_rpc_latency_p999_us : ",
                               "test_rpc_max_latency_us : ", "weft_fiber_workers : ",
                               "weft_pool_fiber_live : "};
    for (size_t i = 0; i < sizeof(rec_lines) / sizeof(rec_lines[0]); i++)
        WT_ASSERT_MSG(has_prefix_line(out.data, rec_lines[i]), "no %s", rec_lines[i]);
    weft_metrics_buf_free(&out);

    /* A pattern picks lines. */
    WT_EQ(weft_metrics_dump(WEFT_METRICS_TEXT, "test_r*", weft_metrics_buf_append, &out), 0);
    WT_ASSERT(has_line(out.data, "test_requests : 42"));
    WT_ASSERT(!strstr(out.data, "weft_") && !strstr(out.data, "test_max"));
    weft_metrics_buf_free(&out);

    /* Prometheus. */
    WT_EQ(weft_metrics_dump(WEFT_METRICS_PROMETHEUS, NULL, weft_metrics_buf_append, &out), 0);
    check_prometheus(out.data);
    WT_ASSERT(has_line(out.data, "# TYPE test_requests counter"));
    WT_ASSERT(has_line(out.data, "test_requests 42"));
    WT_ASSERT(has_line(out.data, "# TYPE test_max gauge"));
    WT_ASSERT(has_line(out.data, "# TYPE weft_fiber_alive gauge"));
    WT_ASSERT(has_line(out.data, "# TYPE weft_fiber_switches counter"));
    WT_ASSERT(has_line(out.data, "# TYPE test_rpc_latency_us summary"));
    WT_ASSERT(has_prefix_line(out.data, "test_rpc_latency_us{quantile=\"0.99\"} "));
    WT_ASSERT(has_line(out.data, "test_rpc_latency_us_count 20000"));
    WT_ASSERT(has_line(out.data, "test_rpc_latency_us_sum 250005000"));
    WT_ASSERT(has_line(out.data, "# TYPE test_rpc_qps gauge"));
    WT_ASSERT(has_line(out.data, "# TYPE test_rpc_max_latency_us gauge"));
    weft_metrics_buf_free(&out);

    WT_EQ(weft_metrics_dump(WEFT_METRICS_TEXT, NULL, failing_sink, NULL), -EIO);
    WT_EQ(weft_metrics_dump(42, NULL, weft_metrics_buf_append, &out), -EINVAL);

    /* Hidden or destroyed metrics leave the registry and free their names. */
    WT_EQ(weft_metric_hide(&c.metric), 0);
    WT_ASSERT(weft_metrics_find("test_requests") == NULL);
    WT_EQ(weft_metric_expose(&other.metric, "test_requests"), -EBUSY);
    weft_metric_destroy(&rec.metric);
    WT_ASSERT(weft_metrics_find("test_rpc") == NULL);
    WT_EQ(weft_metric_expose(&c.metric, "test_rpc_count"), 0);
    WT_EQ(weft_metrics_dump(WEFT_METRICS_TEXT, "test_*", weft_metrics_buf_append, &out), 0);
    WT_ASSERT(has_line(out.data, "test_rpc_count : 42"));
    WT_ASSERT(!strstr(out.data, "test_rpc_qps"));
    weft_metrics_buf_free(&out);
    weft_metric_destroy(&c.metric);
    weft_metric_destroy(&other.metric);
    weft_metric_destroy(&mx.metric);
    weft_metric_destroy(&mn.metric);
    WT_EQ(weft_metrics_dump(WEFT_METRICS_TEXT, "test_*", weft_metrics_buf_append, &out), 0);
    WT_ASSERT(out.data == NULL);
}

/* ---- costs ---- */

static weft_counter_t bench_counter = WEFT_COUNTER_INITIALIZER;
static int64_t shared_word;
static long bench_n;

static void *bench_counter_thread(void *arg)
{
    (void)arg;
    for (long i = 0; i < bench_n; i++)
        weft_counter_add(&bench_counter, 1);
    return NULL;
}

static void *bench_shared_thread(void *arg)
{
    (void)arg;
    for (long i = 0; i < bench_n; i++)
        __atomic_fetch_add(&shared_word, 1, __ATOMIC_RELAXED);
    return NULL;
}

static double ns_per_op(int threads, void *(*fn)(void *))
{
    int64_t t0 = weft_clock_ns();
    run_threads(threads, fn, NULL);
    return elapsed_ns(t0) / (double)bench_n;
}

static void test_costs(void)
{
    bench_n = wt_scaled(20000000);
    bench_counter_thread(NULL); /* attach the cell, warm up */
    WT_NOTE("counter_add_ns_1_thread: %.2f", ns_per_op(1, bench_counter_thread));
    WT_NOTE("counter_add_ns_2_threads: %.2f", ns_per_op(2, bench_counter_thread));
    WT_NOTE("shared_atomic_add_ns_2_threads: %.2f", ns_per_op(2, bench_shared_thread));
    WT_EQ(weft_counter_value(&bench_counter), 4 * bench_n);

    long n = wt_scaled(10000000);
    int64_t *v = malloc(4096 * sizeof(*v));
    WT_ASSERT(v);
    for (int i = 0; i < 4096; i++)
        v[i] = gen_exp();
    weft_histogram_t h = WEFT_HISTOGRAM_INITIALIZER;
    int64_t t0 = weft_clock_ns();
    for (long i = 0; i < n; i++)
        weft_histogram_record(&h, v[i & 4095]);
    WT_NOTE("histogram_record_ns: %.2f", elapsed_ns(t0) / (double)n);
    WT_EQ(weft_histogram_count(&h), n);
    weft_histogram_destroy(&h);

    weft_latency_recorder_t r;
    WT_EQ(weft_latency_recorder_init(&r, 0), 0);
    t0 = weft_clock_ns();
    for (long i = 0; i < n; i++)
        weft_latency_recorder_record(&r, v[i & 4095]);
    WT_NOTE("latency_record_ns: %.2f", elapsed_ns(t0) / (double)n);
    weft_maxer_t mx = WEFT_MAXER_INITIALIZER;
    t0 = weft_clock_ns();
    for (long i = 0; i < n; i++)
        weft_maxer_update(&mx, v[i & 4095]);
    WT_NOTE("maxer_update_ns: %.2f", elapsed_ns(t0) / (double)n);
    t0 = weft_clock_ns();
    weft__metrics_tick();
    WT_NOTE("sampler_tick_us: %.1f", elapsed_ns(t0) / 1e3);
    weft_metric_destroy(&r.metric);
    weft_metric_destroy(&mx.metric);
    free(v);
}

int main(void)
{
    test_histogram_accuracy();
    test_histogram_merge();

    weft__metrics_set_manual(1);
    test_counter_threads();
    test_counter_reuse();
    test_gauge_passive();
    test_maxer_miner();
    int64_t fiber_total = test_counter_fibers();
    test_latency_recorder();
    test_registry();
    test_costs();
    test_latency_sampler();

    WT_EQ(weft_fiber_shutdown(), 0);
    /* The workers have exited: what fibers added on them was handed over. */
    WT_EQ(weft_counter_value(&fiber_counter), fiber_total);
    WT_EQ(weft_metric_value(&fiber_rec.metric), fiber_total);
    WT_ASSERT(fiber_counter.metric.cells == NULL && fiber_rec.metric.cells == NULL);
    return 0;
}
