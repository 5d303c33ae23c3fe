/*
 * weft_bench_stats.c - per-fiber recorders, their merge, and the report.
 *
 * Each load fiber owns a wb_recorder_t: a latency histogram (fiber/
 * histogram.h, log-linear, HdrHistogram's idea: 128 buckets per power of
 * two, within 0.4% of the exact value) and a few counters. Recording takes
 * no lock and touches no line another fiber writes: the recorders are
 * cache-line aligned, each histogram's counters are its own allocations,
 * and the single writer updates them with plain relaxed stores.
 *
 * The reporter never swaps or resets a recorder; it reads them. Once a
 * second it adds every recorder into a fresh total (weft_histogram_merge
 * reads a histogram with relaxed loads while its one writer records: a
 * bucket read a moment early or late, never a torn or lost count), and
 * the previous second's total subtracted from it gives the last second.
 * Counters only grow and each is read with coherent loads, so a later
 * snapshot is, bucket by bucket, at least the earlier one and the
 * difference is exact. The final report is the same merge after every
 * fiber has ended.
 */
#include "bench/weft_bench.h"

#include <errno.h>
#include <string.h>

#include "fiber/error.h"
#include "rpc/json.h"

void wb_recorder_init(wb_recorder_t *r)
{
    memset(r, 0, sizeof(*r));
}

void wb_recorder_destroy(wb_recorder_t *r)
{
    weft_histogram_destroy(&r->latency);
    weft_histogram_destroy(&r->lag);
}

void wb_record_ok(wb_recorder_t *r, int64_t latency_ns)
{
    weft_histogram_record(&r->latency, latency_ns);
}

void wb_record_lag(wb_recorder_t *r, int64_t lag_ns)
{
    weft_histogram_record(&r->lag, lag_ns);
    if (lag_ns > WB_LATE_NS)
        weft__histogram_bump(&r->late, 1); /* one writer, as for buckets */
}

/* Adds n to code's slot of a table, taking a free slot if needed. False
 * if the table is full. */
static bool count_code(wb_error_count_t *table, int slots, int *used, int code, int64_t n)
{
    for (int i = 0; i < *used; i++) {
        if (table[i].code == code) {
            table[i].count += n;
            return true;
        }
    }
    if (*used == slots)
        return false;
    table[*used].code = code;
    table[*used].count = n;
    (*used)++;
    return true;
}

void wb_record_error(wb_recorder_t *r, int code)
{
    int used = 0;
    while (used < WB_ERROR_SLOTS && r->by_code[used].count)
        used++;
    if (!count_code(r->by_code, WB_ERROR_SLOTS, &used, code, 1))
        r->other_codes++;
    weft__histogram_bump(&r->errors, 1);
}

void wb_totals_init(wb_totals_t *t)
{
    memset(t, 0, sizeof(*t));
}

void wb_totals_destroy(wb_totals_t *t)
{
    weft_histogram_destroy(&t->latency);
    weft_histogram_destroy(&t->lag);
    memset(t, 0, sizeof(*t));
}

static void add_codes(wb_totals_t *t, const wb_error_count_t *codes, int n, int64_t other)
{
    int slots = (int)(sizeof(t->by_code) / sizeof(t->by_code[0]));
    for (int i = 0; i < n && codes[i].count; i++)
        if (!count_code(t->by_code, slots, &t->n_codes, codes[i].code, codes[i].count))
            other += codes[i].count;
    t->other_codes += other;
}

int wb_totals_add(wb_totals_t *t, const wb_recorder_t *recs, size_t n, bool final)
{
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const wb_recorder_t *r = &recs[i];
        rc = weft_histogram_merge(&t->latency, &r->latency);
        if (rc == 0)
            rc = weft_histogram_merge(&t->lag, &r->lag);
        t->errors += __atomic_load_n(&r->errors, __ATOMIC_RELAXED);
        t->late += __atomic_load_n(&r->late, __ATOMIC_RELAXED);
        if (final)
            add_codes(t, r->by_code, WB_ERROR_SLOTS, r->other_codes);
    }
    return rc;
}

/* dst = a - b for one histogram: a copy of a, less b. */
static int histogram_diff(weft_histogram_t *dst, const weft_histogram_t *a,
                          const weft_histogram_t *b)
{
    int rc = weft_histogram_merge(dst, a);
    return rc ? rc : weft_histogram_subtract(dst, b);
}

int wb_totals_diff(wb_totals_t *t, const wb_totals_t *a, const wb_totals_t *b)
{
    int rc = histogram_diff(&t->latency, &a->latency, &b->latency);
    if (rc == 0)
        rc = histogram_diff(&t->lag, &a->lag, &b->lag);
    t->errors = a->errors - b->errors;
    t->late = a->late - b->late;
    return rc;
}

const char *wb_format_us(int64_t ns, char buf[32])
{
    if (ns < 100 * 1000)
        snprintf(buf, 32, "%.1f", (double)ns / 1000.0);
    else
        snprintf(buf, 32, "%lld", (long long)((ns + 500) / 1000));
    return buf;
}

/* ---- the report ---- */

static const double percentiles[] = {50, 90, 99, 99.9};
static const char *const percentile_keys[] = {"p50_us", "p90_us", "p99_us", "p999_us"};
#define NPCT (sizeof(percentiles) / sizeof(percentiles[0]))

static int64_t calls_ok(const wb_report_t *r)
{
    return weft_histogram_count(&r->totals->latency);
}

static double qps_of(const wb_report_t *r)
{
    return r->elapsed_s > 0 ? (double)calls_ok(r) / r->elapsed_s : 0;
}

static void text_settings(FILE *out, const wb_report_t *r)
{
    const wb_options_t *o = r->opts;
    fprintf(out, "%s: %s on %s (%s), %d in flight over %d %s connection%s, ", WB_NAME, o->method,
            o->server, o->protocol, o->concurrency, o->connections,
            wb_connection_type_name(o->connection_type), o->connections > 1 ? "s" : "");
    if (o->rate > 0)
        fprintf(out, "open loop at %g/s", o->rate);
    else
        fprintf(out, "closed loop");
    fprintf(out, ", %.1f s measured after %g s of warm-up%s\n", r->elapsed_s, o->warmup_s,
            r->interrupted ? " (interrupted)" : "");
    fprintf(out, "  request    %zu bytes", r->request_bytes);
    if (r->attachment_bytes)
        fprintf(out, " + %zu bytes of attachment", r->attachment_bytes);
    fprintf(out, ", timeout %ld ms\n", o->timeout_ms);
}

static void text_latency(FILE *out, const char *label, const weft_histogram_t *h, bool all)
{
    char buf[32];
    fprintf(out, "  %-10s", label);
    for (size_t i = 0; i < NPCT; i++)
        if (all || percentiles[i] == 50 || percentiles[i] == 99)
            fprintf(out, " p%g %s ", percentiles[i],
                    wb_format_us(weft_histogram_percentile(h, percentiles[i]), buf));
    fprintf(out, " max %s us\n", wb_format_us(weft_histogram_max(h), buf));
}

static void text_errors(FILE *out, const wb_totals_t *t)
{
    for (int i = 0; i < t->n_codes; i++)
        fprintf(out, "  error      %6lld x [%d] %s\n", (long long)t->by_code[i].count,
                t->by_code[i].code, weft_strerror(t->by_code[i].code));
    if (t->other_codes)
        fprintf(out, "  error      %6lld x other codes\n", (long long)t->other_codes);
}

void wb_report_text(FILE *out, const wb_report_t *r)
{
    const wb_totals_t *t = r->totals;
    text_settings(out, r);
    fprintf(out, "  calls      %lld (%lld ok, %lld errors)\n", (long long)(calls_ok(r) + t->errors),
            (long long)calls_ok(r), (long long)t->errors);
    fprintf(out, "  qps        %.1f\n", qps_of(r));
    text_latency(out, "latency", &t->latency, true);
    if (r->opts->rate > 0) {
        text_latency(out, "send lag", &t->lag, false);
        if (t->late)
            fprintf(out,
                    "  late       %lld calls went out more than 1 ms after their due time: every "
                    "fiber was waiting on the server (a stall, or too little --concurrency), or "
                    "the client lacked CPU\n",
                    (long long)t->late);
    }
    text_errors(out, t);
}

/* ---- JSON ---- */

static void json_key(weft_json_buf_t *b, const char *key)
{
    weft__json_buf_printf(b, "%s\"%s\":", b->len > 1 ? "," : "", key);
}

static void json_str(weft_json_buf_t *b, const char *key, const char *value)
{
    json_key(b, key);
    weft__json_write_string(b, value, strlen(value));
}

static void json_int(weft_json_buf_t *b, const char *key, long long value)
{
    json_key(b, key);
    weft__json_buf_printf(b, "%lld", value);
}

static void json_num(weft_json_buf_t *b, const char *key, double value)
{
    json_key(b, key);
    weft__json_write_double(b, value);
}

/* Microseconds with one decimal, from nanoseconds. */
static void json_us(weft_json_buf_t *b, const char *key, int64_t ns)
{
    json_key(b, key);
    weft__json_buf_printf(b, "%.1f", (double)ns / 1000.0);
}

static void json_settings(weft_json_buf_t *b, const wb_report_t *r)
{
    const wb_options_t *o = r->opts;
    json_str(b, "server", o->server);
    json_str(b, "method", o->method);
    json_str(b, "protocol", o->protocol);
    json_str(b, "connection_type", wb_connection_type_name(o->connection_type));
    json_int(b, "concurrency", o->concurrency);
    json_int(b, "connections", o->connections);
    json_num(b, "rate", o->rate);
    json_num(b, "warmup_s", o->warmup_s);
    json_int(b, "timeout_ms", o->timeout_ms);
    json_int(b, "payload_size", (long long)r->request_bytes);
    json_int(b, "attachment_size", (long long)r->attachment_bytes);
    json_num(b, "duration_s", r->elapsed_s);
    json_key(b, "interrupted");
    weft__json_buf_puts(b, r->interrupted ? "true" : "false");
}

static void json_latency(weft_json_buf_t *b, const weft_histogram_t *h)
{
    for (size_t i = 0; i < NPCT; i++)
        json_us(b, percentile_keys[i], weft_histogram_percentile(h, percentiles[i]));
    json_us(b, "max_us", weft_histogram_max(h));
    json_us(b, "mean_us", (int64_t)weft_histogram_mean(h));
}

static void json_errors(weft_json_buf_t *b, const wb_totals_t *t)
{
    char code[16];
    for (int pass = 0; pass < 2; pass++) {
        json_key(b, pass ? "error_names" : "errors_by_code");
        weft__json_buf_puts(b, "{");
        for (int i = 0; i < t->n_codes; i++) {
            snprintf(code, sizeof(code), "%d", t->by_code[i].code);
            weft__json_buf_printf(b, "%s\"%s\":", i ? "," : "", code);
            if (pass)
                weft__json_write_string(b, weft_strerror(t->by_code[i].code),
                                        strlen(weft_strerror(t->by_code[i].code)));
            else
                weft__json_buf_printf(b, "%lld", (long long)t->by_code[i].count);
        }
        weft__json_buf_puts(b, "}");
    }
    json_int(b, "errors_other_codes", t->other_codes);
}

int wb_report_json(FILE *out, const wb_report_t *r)
{
    const wb_totals_t *t = r->totals;
    weft_json_buf_t b = WEFT_JSON_BUF_INIT;
    weft__json_buf_puts(&b, "{");
    json_num(&b, "qps", qps_of(r));
    json_int(&b, "calls", calls_ok(r) + t->errors);
    json_int(&b, "ok", calls_ok(r));
    json_int(&b, "errors", t->errors);
    json_latency(&b, &t->latency);
    json_errors(&b, t);
    if (r->opts->rate > 0) {
        json_us(&b, "lag_p50_us", weft_histogram_percentile(&t->lag, 50));
        json_us(&b, "lag_p99_us", weft_histogram_percentile(&t->lag, 99));
        json_us(&b, "lag_max_us", weft_histogram_max(&t->lag));
        json_int(&b, "late", t->late);
    }
    json_settings(&b, r);
    if (r->response) {
        json_key(&b, "response");
        weft__json_buf_puts(&b, r->response);
    }
    weft__json_buf_puts(&b, "}\n");
    int rc = b.oom ? -ENOMEM : 0;
    if (rc == 0)
        fputs(b.data, out);
    weft__json_buf_free(&b);
    return rc;
}
