/*
 * weft_bench_load.c - the run: channels, load fibers, the live line.
 *
 * Load: --concurrency C fibers, each looping synchronous calls, so exactly
 * C calls are in flight at most. Synchronous calls in fibers rather than
 * asynchronous calls with callbacks: a waiting fiber costs a context
 * switch, not a thread; the loop reads top to bottom (time, call, record);
 * the bound on calls in flight is the number of fibers, with no semaphore;
 * and weft_channel_call_raw, which lets the tool call methods it has no
 * generated code for, is synchronous.
 *
 * Connections: --connections K makes K channels to the server, and fiber i
 * calls through channel i % K. With --connection-type single each channel
 * multiplexes its calls over one connection, so there are exactly K TCP
 * connections; with pooled each channel keeps as many connections as its
 * fibers have calls in flight (about C in all); with short every call opens
 * its own.
 *
 * Closed loop (default): a fiber calls again as soon as the last call
 * returned; latency runs from just before the call to just after it.
 *
 * Open loop (--rate R): call i is due at start + i / R. Fibers take the
 * next i from one atomic counter, sleep until it is due, call, and record
 * now - due: latency from the intended send time, not from the actual one.
 * When the server stalls, every fiber ends up waiting on it, calls become
 * overdue, and their latency includes the time they waited to be sent:
 * the stall shows in the percentiles instead of hiding behind the calls
 * the client did not make ("coordinated omission"). How late calls went
 * out is reported too (send lag; "late" counts calls more than 1 ms late):
 * if it grows, the client, not the server, limits the rate (too little
 * --concurrency, or no CPU left).
 *
 * Warm-up: calls run for --warmup seconds before the measured window and
 * are not recorded; a call counts if it started (open loop: was due) in
 * the window [start + warmup, start + warmup + duration).
 *
 * Before the load starts, one call goes through each channel from the
 * main thread: it opens the connections, and if it fails the run stops
 * there (exit 1) with the reason, instead of measuring a stream of errors.
 */
#include "bench/weft_bench.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fiber/clock.h"
#include "fiber/error.h"
#include "fiber/fiber.h"
#include "rpc/controller.h"
#include "rpc/json.h"

#define MAX_SLEEP_NS (100 * WEFT_NS_PER_MS) /* a sleeping fiber checks for a stop this often */
#define COPY_MAX 4096                       /* fibers copy bodies up to this size */
#define PROBE_ATTEMPTS 3
#define RESPONSE_TEXT_MAX 65536

typedef struct run run_t;

/* One load fiber. */
typedef struct loader {
    run_t *run;
    wb_recorder_t *rec;
    weft_channel_t *ch;
    weft_fiber_t id;
} loader_t;

struct run {
    const wb_options_t *o;
    const wb_method_t *m;
    weft_iobuf_t body, attachment; /* the request, shared by reference */
    weft_channel_t **channels;
    wb_recorder_t *recs;
    loader_t *loaders;
    int nloaders;       /* started */
    int64_t start_ns;   /* the load (warm-up first) starts */
    int64_t measure_ns; /* recording starts */
    int64_t stop_ns;    /* no call starts (or is due) from then; atomic */
    double interval_ns; /* --rate: between due times */
    /* --rate: index of the next call; written by every fiber, so alone
     * on its cache line. */
    _Alignas(64) int64_t next_ticket;
    char pad_[64 - sizeof(int64_t)];
};

static int64_t stop_ns(const run_t *run)
{
    return __atomic_load_n(&run->stop_ns, __ATOMIC_RELAXED);
}

/* ---- one fiber's calls ---- */

/* What a fiber calls with: its own controller and buffers. */
typedef struct call_state {
    weft_controller_t *cntl;
    weft_iobuf_t body, attachment, response;
} call_state_t;

/* Small requests are copied into the fiber's own buffers, so that fibers
 * do not share the reference counts of one block on every call; large
 * ones are shared by reference rather than multiplied by C. */
static void share_or_copy(weft_iobuf_t *dst, const weft_iobuf_t *src)
{
    size_t len = weft_iobuf_length(src);
    char tmp[COPY_MAX];
    if (len <= COPY_MAX && weft_iobuf_copy_out(src, 0, tmp, len) == len &&
        weft_iobuf_append(dst, tmp, len) == 0)
        return;
    weft_iobuf_append_buf(dst, src);
}

static int call_state_init(call_state_t *st, const run_t *run)
{
    memset(st, 0, sizeof(*st));
    st->cntl = weft_controller_new();
    if (!st->cntl)
        return -ENOMEM;
    share_or_copy(&st->body, &run->body);
    share_or_copy(&st->attachment, &run->attachment);
    return 0;
}

static void call_state_destroy(call_state_t *st)
{
    weft_controller_free(st->cntl);
    weft_iobuf_clear(&st->body);
    weft_iobuf_clear(&st->attachment);
    weft_iobuf_clear(&st->response);
}

/* One call. The response stays in st until the next call. */
static int call_once(const run_t *run, weft_channel_t *ch, call_state_t *st)
{
    weft_iobuf_clear(&st->response);
    weft_controller_reset(st->cntl);
    if (!weft_iobuf_empty(&st->attachment))
        weft_iobuf_append_buf(weft_controller_request_attachment(st->cntl), &st->attachment);
    return weft_channel_call_raw(ch, run->m->service, run->m->name, st->cntl, &st->body,
                                 &st->response);
}

static void record(loader_t *l, int rc, int64_t latency_ns)
{
    if (rc == 0)
        wb_record_ok(l->rec, latency_ns);
    else
        wb_record_error(l->rec, rc);
}

static void closed_loop(loader_t *l, call_state_t *st)
{
    const run_t *run = l->run;
    for (;;) {
        int64_t t0 = weft_clock_ns();
        if (t0 >= stop_ns(run))
            return;
        int rc = call_once(run, l->ch, st);
        if (t0 >= run->measure_ns)
            record(l, rc, weft_clock_ns() - t0);
    }
}

/* Sleeps until due; false if the run stops first. */
static bool wait_until_due(const run_t *run, int64_t due)
{
    for (;;) {
        if (due >= stop_ns(run))
            return false;
        int64_t now = weft_clock_ns();
        if (now >= due)
            return true;
        weft_fiber_sleep_until(due - now < MAX_SLEEP_NS ? due : now + MAX_SLEEP_NS);
    }
}

static void open_loop(loader_t *l, call_state_t *st)
{
    run_t *run = l->run;
    for (;;) {
        int64_t i = __atomic_fetch_add(&run->next_ticket, 1, __ATOMIC_RELAXED);
        int64_t due = run->start_ns + (int64_t)((double)i * run->interval_ns);
        if (!wait_until_due(run, due))
            return;
        int64_t sent = weft_clock_ns();
        int rc = call_once(run, l->ch, st);
        if (due < run->measure_ns)
            continue;
        record(l, rc, weft_clock_ns() - due);
        wb_record_lag(l->rec, sent - due);
    }
}

static void loader_main(void *arg)
{
    loader_t *l = arg;
    call_state_t st;
    if (call_state_init(&st, l->run) != 0) {
        wb_record_error(l->rec, ENOMEM);
        return;
    }
    if (l->run->o->rate > 0)
        open_loop(l, &st);
    else
        closed_loop(l, &st);
    call_state_destroy(&st);
}

/* ---- setting up ---- */

static int make_channels(run_t *run)
{
    const wb_options_t *o = run->o;
    weft_channel_options_t co = WEFT_CHANNEL_OPTIONS_INIT;
    co.timeout_ms = o->timeout_ms;
    co.connect_timeout_ms = o->timeout_ms;
    co.max_retries = o->max_retries;
    co.connection_type = o->connection_type;
    co.protocol = o->protocol;
    run->channels = calloc((size_t)o->connections, sizeof(*run->channels));
    if (!run->channels)
        return WB_EXIT_FAILED;
    for (int i = 0; i < o->connections; i++) {
        int rc = weft_channel_new(&run->channels[i], o->server, &co);
        if (rc == -EINVAL)
            return wb_usage_error("--server: cannot use '%s' as an address", o->server);
        if (rc != 0) {
            wb_say("cannot use %s: %s", o->server, weft_strerror(rc));
            return WB_EXIT_FAILED;
        }
    }
    return WB_EXIT_OK;
}

/* Makes the response of a probe into the report's "response" value. */
static char *response_json(const run_t *run, const weft_iobuf_t *resp, size_t attachment_len)
{
    char *text = malloc(RESPONSE_TEXT_MAX);
    bool is_json;
    if (!text)
        return NULL;
    wb_response_describe(run->m, resp, attachment_len, text, RESPONSE_TEXT_MAX, &is_json);
    if (run->o->json && !is_json) {
        weft_json_buf_t b = WEFT_JSON_BUF_INIT;
        weft__json_write_string(&b, text, strlen(text));
        free(text);
        text = b.oom ? NULL : b.data;
    }
    return text;
}

/* One call on each channel (the first one may try a few times), before
 * the load: it connects, and shows that the method answers. */
static int probe(run_t *run, char **response)
{
    call_state_t st;
    if (call_state_init(&st, run) != 0) {
        wb_say("out of memory");
        return WB_EXIT_FAILED;
    }
    int rc = 0;
    for (int i = 0; rc == 0 && i < run->o->connections; i++) {
        for (int attempt = 0; attempt < (i ? 1 : PROBE_ATTEMPTS); attempt++)
            if ((rc = call_once(run, run->channels[i], &st)) == 0)
                break;
        if (rc == 0 && i == 0 && run->o->print_response)
            *response = response_json(
                run, &st.response, weft_iobuf_length(weft_controller_response_attachment(st.cntl)));
    }
    if (rc != 0) {
        const char *text = weft_controller_error_text(st.cntl), *name = weft_strerror(rc);
        bool same = strcmp(text, name) == 0;
        wb_say("the first call of %s on %s failed: %s (error %d%s%s)", run->o->method,
               run->o->server, text, rc, same ? "" : ", ", same ? "" : name);
    }
    call_state_destroy(&st);
    return rc ? WB_EXIT_FAILED : WB_EXIT_OK;
}

static int start_loaders(run_t *run)
{
    int n = run->o->concurrency;
    run->recs = aligned_alloc(64, sizeof(wb_recorder_t) * (size_t)n);
    run->loaders = calloc((size_t)n, sizeof(loader_t));
    if (!run->recs || !run->loaders)
        return -ENOMEM;
    for (int i = 0; i < n; i++)
        wb_recorder_init(&run->recs[i]);
    run->start_ns = weft_clock_ns();
    run->measure_ns = run->start_ns + (int64_t)(run->o->warmup_s * WEFT_NS_PER_SEC);
    run->stop_ns = run->measure_ns + (int64_t)(run->o->duration_s * WEFT_NS_PER_SEC);
    run->interval_ns = run->o->rate > 0 ? WEFT_NS_PER_SEC / run->o->rate : 0;
    for (int i = 0; i < n; i++) {
        loader_t *l = &run->loaders[i];
        *l = (loader_t){
            .run = run, .rec = &run->recs[i], .ch = run->channels[i % run->o->connections]};
        int rc = weft_fiber_start_background(&l->id, NULL, loader_main, l);
        if (rc != 0)
            return rc;
        run->nloaders++;
    }
    return 0;
}

/* ---- while it runs ---- */

static void live_line(run_t *run, wb_totals_t *prev, int64_t *prev_ns, int64_t now)
{
    wb_totals_t cur, d;
    wb_totals_init(&cur);
    wb_totals_init(&d);
    wb_totals_add(&cur, run->recs, (size_t)run->nloaders, false);
    wb_totals_diff(&d, &cur, prev);
    double secs = (double)(now - *prev_ns) / WEFT_NS_PER_SEC;
    char p50[32], p99[32];
    fprintf(stderr, "%s: %4.0fs  qps %-9.0f p50 %6s us  p99 %6s us  errors %lld\n", WB_NAME,
            (double)(now - run->measure_ns) / WEFT_NS_PER_SEC,
            secs > 0 ? (double)weft_histogram_count(&d.latency) / secs : 0,
            wb_format_us(weft_histogram_percentile(&d.latency, 50), p50),
            wb_format_us(weft_histogram_percentile(&d.latency, 99), p99), (long long)d.errors);
    wb_totals_destroy(&d);
    wb_totals_destroy(prev);
    *prev = cur;
    *prev_ns = now;
}

/* Prints the live line once a second until the end of the window or a
 * signal; returns true (and moves the stop time to now) on a signal. */
static bool supervise(run_t *run)
{
    bool live = !run->o->quiet, interrupted = false;
    wb_totals_t prev;
    wb_totals_init(&prev);
    int64_t prev_ns = run->measure_ns, tick = run->measure_ns + WEFT_NS_PER_SEC;
    if (live && run->o->warmup_s > 0)
        wb_say("warming up for %g s", run->o->warmup_s);
    for (;;) {
        int64_t stop = stop_ns(run);
        if (wb_wait_signal(tick < stop ? tick : stop)) {
            __atomic_store_n(&run->stop_ns, weft_clock_ns(), __ATOMIC_RELAXED);
            interrupted = true;
            break;
        }
        int64_t now = weft_clock_ns();
        if (now >= tick && tick <= stop) {
            if (live)
                live_line(run, &prev, &prev_ns, now);
            tick += WEFT_NS_PER_SEC;
        }
        if (now >= stop)
            break;
    }
    wb_totals_destroy(&prev);
    return interrupted;
}

/* ---- the end ---- */

static int report(run_t *run, const wb_request_t *req, bool interrupted, const char *response)
{
    wb_totals_t t;
    wb_totals_init(&t);
    int rc = wb_totals_add(&t, run->recs, (size_t)run->nloaders, true);
    int64_t window = stop_ns(run) - run->measure_ns;
    wb_report_t r = {
        .opts = run->o,
        .request_bytes = req->body_len,
        .attachment_bytes = req->attachment_len,
        .elapsed_s = window > 0 ? (double)window / WEFT_NS_PER_SEC : 0,
        .interrupted = interrupted,
        .totals = &t,
        .response = response,
    };
    if (rc == 0 && run->o->json)
        rc = wb_report_json(stdout, &r);
    else if (rc == 0)
        wb_report_text(stdout, &r);
    fflush(stdout);
    wb_totals_destroy(&t);
    if (rc != 0)
        wb_say("cannot make the report: %s", weft_strerror(rc));
    return rc ? WB_EXIT_FAILED : WB_EXIT_OK;
}

static void run_destroy(run_t *run)
{
    for (int i = 0; i < run->nloaders; i++)
        wb_recorder_destroy(&run->recs[i]);
    for (int i = 0; run->channels && i < run->o->connections; i++)
        weft_channel_free(run->channels[i]);
    free(run->channels);
    free(run->recs);
    free(run->loaders);
    weft_iobuf_clear(&run->body);
    weft_iobuf_clear(&run->attachment);
}

static int run_load(run_t *run, const wb_request_t *req)
{
    char *response = NULL;
    int rc = probe(run, &response);
    if (rc != WB_EXIT_OK)
        return rc;
    if (response && !run->o->json)
        printf("%s\n", response);
    int err = start_loaders(run);
    bool interrupted = false;
    if (err != 0) {
        wb_say("cannot start %d load fibers: %s", run->o->concurrency, weft_strerror(err));
        __atomic_store_n(&run->stop_ns, weft_clock_ns(), __ATOMIC_RELAXED);
    } else {
        interrupted = supervise(run);
    }
    for (int i = 0; i < run->nloaders; i++)
        weft_fiber_join(run->loaders[i].id);
    rc = err ? WB_EXIT_FAILED : report(run, req, interrupted, run->o->json ? response : NULL);
    free(response);
    return rc;
}

int wb_run(const wb_options_t *o, const wb_method_t *m, const wb_request_t *req)
{
    if (o->workers > 0)
        weft_fiber_set_workers(o->workers);
    run_t *run = aligned_alloc(64, sizeof(run_t));
    if (!run)
        return WB_EXIT_FAILED;
    memset(run, 0, sizeof(*run));
    run->o = o;
    run->m = m;
    int rc = WB_EXIT_OK;
    if (weft_iobuf_append(&run->body, req->body, req->body_len) != 0 ||
        weft_iobuf_append(&run->attachment, req->attachment, req->attachment_len) != 0)
        rc = WB_EXIT_FAILED;
    if (rc == WB_EXIT_OK)
        rc = make_channels(run);
    if (rc == WB_EXIT_OK)
        rc = run_load(run, req);
    run_destroy(run);
    free(run);
    weft_fiber_shutdown();
    return rc;
}
