/*
 * test_bench_stats.c - weft-bench's recording and reporting path
 * (bench/weft_bench_stats.c): per-fiber recorders merged into totals equal
 * one histogram that saw every value, bucket for bucket; percentiles within
 * 1% of the exact ones for several distributions; the per-second
 * difference of two snapshots; error codes merged across recorders;
 * snapshots taken while writers record (run it under TSan too); the
 * microsecond format; and the JSON report parsed back.
 */
#include <math.h>
#include <pthread.h>

#include "bench/weft_bench.h"
#include "bench_test_util.h"

#define NREC 7

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double unit(void)
{
    return (double)(rnd() >> 11) / 9007199254740992.0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static wb_recorder_t *recorders(int n)
{
    wb_recorder_t *r = aligned_alloc(64, sizeof(wb_recorder_t) * (size_t)n);
    WT_ASSERT(r && sizeof(wb_recorder_t) % 64 == 0);
    for (int i = 0; i < n; i++)
        wb_recorder_init(&r[i]);
    return r;
}

static void free_recorders(wb_recorder_t *r, int n)
{
    for (int i = 0; i < n; i++)
        wb_recorder_destroy(&r[i]);
    free(r);
}

/* Two histograms hold the same counts in every bucket. */
static void same_buckets(const weft_histogram_t *a, const weft_histogram_t *b)
{
    WT_EQ(weft_histogram_count(a), weft_histogram_count(b));
    for (unsigned o = 0; o < WEFT_HISTOGRAM_OCTAVES; o++) {
        const uint64_t *x = a->octaves[o], *y = b->octaves[o];
        for (unsigned s = 0; s < WEFT_HISTOGRAM_SUB_COUNT; s++)
            WT_EQ(x ? x[s] : 0, y ? y[s] : 0);
    }
}

/* Nanosecond latencies of a few shapes. */
static int64_t sample(int shape)
{
    switch (shape) {
    case 0: /* uniform, 1 us .. 1 ms */
        return 1000 + (int64_t)(rnd() % 999000);
    case 1: /* exponential, mean 50 us */
        return (int64_t)(-log(1 - unit()) * 50000);
    case 2: /* bimodal: mostly 20 us, 1% around 10 ms */
        return rnd() % 100 ? 20000 + (int64_t)(rnd() % 2000) : 10000000 + (int64_t)(rnd() % 100000);
    default: /* long tail: log-uniform, 100 ns .. 10 s */
        return (int64_t)exp(log(100) + unit() * (log(1e10) - log(100)));
    }
}

static void test_merge_equals_one(void)
{
    const size_t n = (size_t)wt_scaled(200000);
    int64_t *values = malloc(n * sizeof(*values));
    for (int shape = 0; shape < 4; shape++) {
        wb_recorder_t *recs = recorders(NREC);
        weft_histogram_t one = WEFT_HISTOGRAM_INITIALIZER;
        for (size_t i = 0; i < n; i++) {
            values[i] = sample(shape);
            wb_record_ok(&recs[rnd() % NREC], values[i]);
            weft_histogram_record(&one, values[i]);
        }
        wb_totals_t t;
        wb_totals_init(&t);
        WT_EQ(wb_totals_add(&t, recs, NREC, true), 0);
        same_buckets(&t.latency, &one);
        WT_EQ(weft_histogram_max(&t.latency), weft_histogram_max(&one));
        WT_EQ(weft_histogram_min(&t.latency), weft_histogram_min(&one));
        WT_EQ(weft_histogram_sum(&t.latency), weft_histogram_sum(&one));

        qsort(values, n, sizeof(*values), cmp_i64);
        const double ps[] = {1, 10, 25, 50, 75, 90, 99, 99.9, 99.99};
        for (size_t k = 0; k < sizeof(ps) / sizeof(ps[0]); k++) {
            size_t rank = (size_t)ceil(ps[k] / 100 * (double)n);
            int64_t exact = values[rank - 1], got = weft_histogram_percentile(&t.latency, ps[k]);
            WT_EQ(got, weft_histogram_percentile(&one, ps[k]));
            WT_ASSERT_MSG(fabs((double)(got - exact)) <= 0.01 * (double)exact,
                          "shape %d p%g: %lld vs exact %lld", shape, ps[k], (long long)got,
                          (long long)exact);
        }
        WT_EQ(weft_histogram_max(&t.latency), values[n - 1]);
        wb_totals_destroy(&t);
        weft_histogram_destroy(&one);
        free_recorders(recs, NREC);
    }
    free(values);
}

/* The live line's arithmetic: a later snapshot less an earlier one is
 * what was recorded in between. */
static void test_snapshot_diff(void)
{
    wb_recorder_t *recs = recorders(NREC);
    weft_histogram_t second = WEFT_HISTOGRAM_INITIALIZER;
    wb_totals_t a, b, d;
    wb_totals_init(&a);
    wb_totals_init(&b);
    wb_totals_init(&d);
    for (int i = 0; i < 50000; i++)
        wb_record_ok(&recs[rnd() % NREC], sample(1));
    wb_record_error(&recs[0], 1008);
    WT_EQ(wb_totals_add(&a, recs, NREC, false), 0);
    for (int i = 0; i < 30000; i++) {
        int64_t v = sample(2);
        wb_record_ok(&recs[rnd() % NREC], v);
        weft_histogram_record(&second, v);
    }
    wb_record_error(&recs[3], 1009);
    wb_record_error(&recs[4], 1009);
    WT_EQ(wb_totals_add(&b, recs, NREC, false), 0);
    WT_EQ(wb_totals_diff(&d, &b, &a), 0);
    same_buckets(&d.latency, &second);
    WT_EQ(d.errors, 2);
    WT_EQ(weft_histogram_percentile(&d.latency, 50), weft_histogram_percentile(&second, 50));
    WT_EQ(weft_histogram_percentile(&d.latency, 99), weft_histogram_percentile(&second, 99));
    wb_totals_destroy(&a);
    wb_totals_destroy(&b);
    wb_totals_destroy(&d);
    weft_histogram_destroy(&second);
    free_recorders(recs, NREC);
}

static int64_t code_count(const wb_totals_t *t, int code)
{
    for (int i = 0; i < t->n_codes; i++)
        if (t->by_code[i].code == code)
            return t->by_code[i].count;
    return 0;
}

static void test_error_codes(void)
{
    wb_recorder_t *recs = recorders(3);
    for (int i = 0; i < 3; i++)
        wb_record_error(&recs[0], 1008);
    wb_record_error(&recs[0], 1009);
    wb_record_error(&recs[1], 1008);
    wb_record_error(&recs[1], 1008);
    for (int i = 0; i < 5; i++)
        wb_record_error(&recs[1], 111);
    for (int code = 1; code <= WB_ERROR_SLOTS + 4; code++) /* 4 past the table */
        wb_record_error(&recs[2], code);
    wb_totals_t t;
    wb_totals_init(&t);
    WT_EQ(wb_totals_add(&t, recs, 3, true), 0);
    WT_EQ(t.errors, 3 + 1 + 2 + 5 + WB_ERROR_SLOTS + 4);
    WT_EQ(code_count(&t, 1008), 5);
    WT_EQ(code_count(&t, 1009), 1);
    WT_EQ(code_count(&t, 111), 5);
    WT_EQ(code_count(&t, 7), 1);
    WT_EQ(t.other_codes, 4);
    WT_EQ(t.n_codes, 3 + WB_ERROR_SLOTS);
    WT_EQ(weft_histogram_count(&t.latency), 0);
    wb_totals_destroy(&t);
    free_recorders(recs, 3);
}

/* ---- snapshots while the writers record ---- */

#define WRITERS 3

typedef struct writer {
    wb_recorder_t *rec;
    long n;
} writer_t;

static void *write_values(void *arg)
{
    writer_t *w = arg;
    uint64_t x = (uint64_t)(uintptr_t)w | 1;
    for (long i = 0; i < w->n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        wb_record_ok(w->rec, (int64_t)(x % 5000000));
        if (i % 1000 == 0)
            wb_record_error(w->rec, 1008);
    }
    return NULL;
}

static void test_snapshot_while_recording(void)
{
    wb_recorder_t *recs = recorders(WRITERS);
    writer_t w[WRITERS];
    pthread_t th[WRITERS];
    long per = wt_scaled(2000000);
    for (int i = 0; i < WRITERS; i++) {
        w[i] = (writer_t){.rec = &recs[i], .n = per};
        WT_EQ(pthread_create(&th[i], NULL, write_values, &w[i]), 0);
    }
    wb_totals_t prev;
    wb_totals_init(&prev);
    int snapshots = 0;
    for (;;) {
        wb_totals_t cur, d;
        wb_totals_init(&cur);
        wb_totals_init(&d);
        WT_EQ(wb_totals_add(&cur, recs, WRITERS, false), 0);
        int64_t n = weft_histogram_count(&cur.latency);
        WT_GE(n, weft_histogram_count(&prev.latency));
        WT_LE(n, per * WRITERS);
        /* Every bucket only grew: the difference is well defined. */
        WT_EQ(wb_totals_diff(&d, &cur, &prev), 0);
        WT_EQ(weft_histogram_count(&d.latency), n - weft_histogram_count(&prev.latency));
        wb_totals_destroy(&d);
        wb_totals_destroy(&prev);
        prev = cur;
        snapshots++;
        if (n == per * WRITERS)
            break;
    }
    for (int i = 0; i < WRITERS; i++)
        pthread_join(th[i], NULL);
    wb_totals_t t;
    wb_totals_init(&t);
    WT_EQ(wb_totals_add(&t, recs, WRITERS, true), 0);
    WT_EQ(weft_histogram_count(&t.latency), per * WRITERS);
    WT_EQ(t.errors, WRITERS * ((per + 999) / 1000));
    WT_EQ(code_count(&t, 1008), t.errors);
    WT_NOTE("snapshots while recording: %d", snapshots);
    wb_totals_destroy(&t);
    wb_totals_destroy(&prev);
    free_recorders(recs, WRITERS);
}

static void test_format_us(void)
{
    char buf[32];
    WT_STREQ(wb_format_us(0, buf), "0.0");
    WT_STREQ(wb_format_us(45300, buf), "45.3");
    WT_STREQ(wb_format_us(99940, buf), "99.9");
    WT_STREQ(wb_format_us(100000, buf), "100");
    WT_STREQ(wb_format_us(123456, buf), "123");
    WT_STREQ(wb_format_us(1234567, buf), "1235");
}

/* ---- the report ---- */

static void test_report(void)
{
    wb_options_t o = {.server = "127.0.0.1:1",
                      .method = "a.B.C",
                      .protocol = "baidu_std",
                      .concurrency = 8,
                      .connections = 2,
                      .timeout_ms = 100,
                      .warmup_s = 1,
                      .rate = 1000};
    wb_recorder_t *recs = recorders(2);
    for (int i = 1; i <= 1000; i++)
        wb_record_ok(&recs[i % 2], i * 1000);
    for (int i = 0; i < 5; i++)
        wb_record_error(&recs[1], 1008);
    wb_record_lag(&recs[0], 2 * WB_LATE_NS);
    wb_totals_t t;
    wb_totals_init(&t);
    WT_EQ(wb_totals_add(&t, recs, 2, true), 0);
    wb_report_t r = {.opts = &o,
                     .request_bytes = 12,
                     .attachment_bytes = 3,
                     .elapsed_s = 2,
                     .totals = &t,
                     .response = "{\"message\":\"hi\"}"};

    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    WT_EQ(wb_report_json(f, &r), 0);
    fclose(f);
    WT_ASSERT(len > 0 && text[len - 1] == '\n');
    weft_json_doc_t *doc;
    weft_json_error_t err;
    WT_ASSERT_MSG(weft__json_parse(text, len, 0, &doc, &err) == 0, "%s: %s", err.message, text);
    const weft_json_value_t *j = weft__json_root(doc);
    WT_ASSERT(bt_json_num(j, "qps") == 500);
    WT_ASSERT(bt_json_num(j, "calls") == 1005 && bt_json_num(j, "ok") == 1000 &&
              bt_json_num(j, "errors") == 5);
    WT_ASSERT(fabs(bt_json_num(j, "p50_us") - 500) <= 500 * 0.004 &&
              bt_json_num(j, "max_us") == 1000);
    WT_ASSERT(bt_json_num(j, "p50_us") <= bt_json_num(j, "p90_us") &&
              bt_json_num(j, "p90_us") <= bt_json_num(j, "p99_us"));
    WT_ASSERT(bt_json_num(j, "p99_us") <= bt_json_num(j, "p999_us") &&
              bt_json_num(j, "p999_us") <= bt_json_num(j, "max_us"));
    WT_ASSERT(bt_json_num(j, "duration_s") == 2 && bt_json_num(j, "concurrency") == 8);
    WT_ASSERT(bt_json_num(j, "connections") == 2 && bt_json_num(j, "payload_size") == 12);
    WT_ASSERT(bt_json_num(j, "attachment_size") == 3 && bt_json_num(j, "late") == 1);
    WT_ASSERT(bt_json_num(weft__json_get(j, "errors_by_code"), "1008") == 5);
    WT_ASSERT(strstr(weft__json_get(weft__json_get(j, "error_names"), "1008")->u.string.str,
                     "ERPCTIMEDOUT"));
    WT_STREQ(weft__json_get(weft__json_get(j, "response"), "message")->u.string.str, "hi");
    WT_STREQ(weft__json_get(j, "connection_type")->u.string.str, "single");
    weft__json_free(doc);
    free(text);

    f = open_memstream(&text, &len);
    wb_report_text(f, &r);
    fclose(f);
    WT_ASSERT_MSG(strstr(text, "qps        500.0") && strstr(text, "ERPCTIMEDOUT") &&
                      strstr(text, "p50 501") && strstr(text, "open loop at 1000/s"),
                  "%s", text);
    free(text);
    wb_totals_destroy(&t);
    free_recorders(recs, 2);
}

int main(void)
{
    test_merge_equals_one();
    test_snapshot_diff();
    test_error_codes();
    test_snapshot_while_recording();
    test_format_us();
    test_report();
    WT_NOTE("bench stats: ok");
    return 0;
}
