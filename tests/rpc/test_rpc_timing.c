/*
 * test_rpc_timing.c - deadlines and backup requests, measured.
 *
 * Why: a deadline is a promise about time. A call whose server is slower
 * than its timeout must fail with ERPCTIMEDOUT close to the deadline (we
 * print the lateness and require the median within 5 ms; the worst case
 * gets a loose bound, the machine is shared), must not be retried, and the
 * late response that arrives afterwards must be dropped without disturbing
 * the calls that share its connection. A backup request must turn a slow
 * first attempt into a success at about backup_request_ms plus the fast
 * path. Runs alone (is_parallel: false in meson.build).
 */
#include "rpc_test_util.h"

#define TIMEOUT_MS 40
#define SLOW_MS 250

static void print_lateness(const char *what, int64_t *late_ns, int n)
{
    rt_sort64(late_ns, n);
    WT_NOTE("%s: deadline %d ms, lateness over %d calls: min %.2f median %.2f p90 %.2f max %.2f ms",
            what, TIMEOUT_MS, n, rt_ms(late_ns[0]), rt_ms(late_ns[n / 2]),
            rt_ms(late_ns[n * 9 / 10]), rt_ms(late_ns[n - 1]));
    WT_GE(late_ns[0], 0);
    WT_LT(late_ns[n / 2], 5 * WEFT_NS_PER_MS);
    WT_LT(late_ns[n - 1], 100 * WEFT_NS_PER_MS);
}

/* n synchronous calls that time out; checks each and the lateness. */
static void deadline_sync_run(const char *what, int n)
{
    rt_server_t *srv = rt_server_start(NULL, NULL, 1);
    weft_channel_options_t o = rt_opts();
    o.timeout_ms = TIMEOUT_MS;
    o.max_retries = 5; /* timeouts are not retried whatever this says */
    weft_channel_t *ch = rt_channel(srv->addr, &o);
    WT_EQ(rt_echo1(ch, "connect first"), 0);
    int64_t *late = calloc((size_t)n, sizeof(*late));
    weft_controller_t *cntl = weft_controller_new();
    for (int i = 0; i < n; i++) {
        weft_controller_reset(cntl);
        int64_t t0 = rt_now();
        WT_EQ(rt_sleep_call(ch, cntl, SLOW_MS, i), WEFT_ERPCTIMEDOUT);
        late[i] = rt_now() - t0 - TIMEOUT_MS * WEFT_NS_PER_MS;
        WT_EQ(weft_controller_retried_count(cntl), 0);
        int64_t lat = weft_controller_latency_us(cntl);
        WT_GE(lat, TIMEOUT_MS * 1000 - 100);
    }
    WT_EQ(rt_calls(srv, RT_SLEEP), n); /* one attempt each */
    print_lateness(what, late, n);
    free(late);
    weft_controller_free(cntl);
    weft_channel_free(ch);
    rt_server_free(srv);
}

static void deadline_sync_fiber(void)
{
    deadline_sync_run("sync call from a fiber", (int)wt_scaled(30) + 5);
}

static void deadline_sync_thread(void)
{
    deadline_sync_run("sync call from a pthread", (int)wt_scaled(30) + 5);
}

static void deadline_async(void)
{
    rt_server_t *srv = rt_server_start(NULL, NULL, 1);
    weft_channel_options_t o = rt_opts();
    o.timeout_ms = TIMEOUT_MS;
    weft_channel_t *ch = rt_channel(srv->addr, &o);
    WT_EQ(rt_echo1(ch, "connect first"), 0);
    int n = (int)wt_scaled(30) + 5;
    int64_t *late = calloc((size_t)n, sizeof(*late));
    rt_async_t *a = rt_async_new(n, NULL);
    /* one at a time, so that each measures the timer path alone */
    for (int i = 0; i < n; i++) {
        int64_t t0 = rt_now();
        WT_EQ(rt_sleep_async(ch, &a[i], SLOW_MS), 0);
        WT_EQ(weft_controller_join(a[i].cntl), 0);
        WT_EQ(a[i].error, WEFT_ERPCTIMEDOUT);
        late[i] = a[i].done_ns - t0 - TIMEOUT_MS * WEFT_NS_PER_MS;
    }
    print_lateness("async call", late, n);
    /* many at once: all time out, each once */
    int m = (int)wt_scaled(500) + 10;
    weft_countdown_t left;
    weft_countdown_init(&left, m);
    rt_async_t *b = rt_async_new(m, &left);
    int64_t t0 = rt_now();
    for (int i = 0; i < m; i++)
        WT_EQ(rt_sleep_async(ch, &b[i], SLOW_MS), 0);
    weft_countdown_wait(&left);
    int64_t worst = 0;
    for (int i = 0; i < m; i++) {
        WT_EQ(b[i].error, WEFT_ERPCTIMEDOUT);
        worst = b[i].done_ns - t0 > worst ? b[i].done_ns - t0 : worst;
    }
    WT_NOTE("%d async calls at once: the last timed out %.2f ms after the first was made", m,
            rt_ms(worst));
    rt_sleep_ms(SLOW_MS + 50); /* the late replies come and go */
    for (int i = 0; i < m; i++)
        WT_EQ(RT_LOAD(&b[i].done_runs), 1);
    for (int i = 0; i < n; i++)
        WT_EQ(RT_LOAD(&a[i].done_runs), 1);
    WT_EQ(rt_calls(srv, RT_SLEEP), n + m);
    rt_async_free(a, n);
    rt_async_free(b, m);
    free(late);
    weft_channel_free(ch);
    rt_server_free(srv);
}

/* The late reply of a timed-out call is dropped, and the connection it
 * shares goes on serving correct answers. */
static void late_response_dropped(void)
{
    rt_server_t *srv = rt_server_start(NULL, NULL, 1);
    weft_channel_options_t o = rt_opts();
    weft_channel_t *ch = rt_channel(srv->addr, &o);
    int port = rt_conn_port(ch);
    for (int round = 0; round < 3; round++) {
        weft_controller_t *cntl = weft_controller_new();
        weft_controller_set_timeout_ms(cntl, 30);
        WT_EQ(rt_sleep_call(ch, cntl, 120, 1000 + round), WEFT_ERPCTIMEDOUT);
        /* calls keep going while the late reply arrives; each gets its own
         * answer (rt_sleep_call checks the tag) */
        int calls = 0;
        while (RT_LOAD(&srv->sleeping) > 0 || calls < 10) {
            weft_controller_reset(cntl);
            WT_EQ(rt_sleep_call(ch, cntl, 0, calls), 0);
            char text[32];
            snprintf(text, sizeof(text), "after %d", calls);
            weft_controller_reset(cntl);
            WT_EQ(rt_echo(ch, cntl, text), 0);
            calls++;
        }
        weft_controller_free(cntl);
    }
    WT_EQ(rt_conn_port(ch), port); /* same connection all along */
    weft_channel_free(ch);
    rt_server_free(srv);
}

/* ---- backup requests ---- */

static int flaky_call(weft_channel_t *ch, weft_controller_t *cntl, int64_t *call_no)
{
    Weft__Test__SleepRequest req = WEFT__TEST__SLEEP_REQUEST__INIT;
    req.ms = 600;
    Weft__Test__SleepResponse *resp = NULL;
    int rc = weft__test__test_service__flaky_call(ch, cntl, &req, &resp);
    if (rc == 0) {
        *call_no = resp->call_no;
        weft__test__sleep_response__free_unpacked(resp, NULL);
    }
    return rc;
}

#define BACKUP_MS 40

static weft_channel_t *backup_channel(rt_server_t *srv)
{
    weft_channel_options_t o = rt_opts();
    o.timeout_ms = 3000;
    o.backup_request_ms = BACKUP_MS;
    return rt_channel(srv->addr, &o);
}

static void check_backup_latency(const char *what, int64_t *lat_ns, int n)
{
    rt_sort64(lat_ns, n);
    WT_NOTE("%s: backup_request_ms %d, %d calls: min %.2f median %.2f max %.2f ms", what,
            BACKUP_MS, n, rt_ms(lat_ns[0]), rt_ms(lat_ns[n / 2]), rt_ms(lat_ns[n - 1]));
    WT_GE(lat_ns[0], (BACKUP_MS - 1) * WEFT_NS_PER_MS);
    WT_LT(lat_ns[n / 2], (BACKUP_MS + 10) * WEFT_NS_PER_MS);
    WT_LT(lat_ns[n - 1], 300 * WEFT_NS_PER_MS); /* far below the slow path's 600 ms */
}

static void backup_request_sync(void)
{
    rt_server_t *srv = rt_server_start(NULL, NULL, 1);
    weft_channel_t *ch = backup_channel(srv);
    enum { N = 8 };
    int64_t lat[N];
    weft_controller_t *cntl = weft_controller_new();
    for (int i = 0; i < N; i++) {
        weft_controller_reset(cntl);
        int64_t call_no = 0, t0 = rt_now();
        WT_EQ(flaky_call(ch, cntl, &call_no), 0);
        lat[i] = rt_now() - t0;
        WT_EQ(call_no, 2 * (i + 1)); /* the second attempt (the backup) answered */
    }
    WT_EQ(rt_calls(srv, RT_FLAKY), 2 * N);
    check_backup_latency("sync", lat, N);
    weft_controller_free(cntl);
    weft_channel_free(ch);
    rt_server_free(srv);
}

static void backup_request_async(void)
{
    rt_server_t *srv = rt_server_start(NULL, NULL, 1);
    weft_channel_t *ch = backup_channel(srv);
    enum { N = 8 };
    int64_t lat[N];
    rt_async_t *a = rt_async_new(N, NULL);
    for (int i = 0; i < N; i++) {
        Weft__Test__SleepRequest req = WEFT__TEST__SLEEP_REQUEST__INIT;
        req.ms = 600;
        req.has_tag = 1;
        req.tag = i;
        a[i].keep_response = true;
        int64_t t0 = rt_now();
        WT_EQ(weft__test__test_service__flaky_call_async(ch, a[i].cntl, &req, rt_on_sleep, &a[i]),
              0);
        WT_EQ(weft_controller_join(a[i].cntl), 0);
        WT_EQ(a[i].error, 0);
        lat[i] = a[i].done_ns - t0;
        WT_EQ(((Weft__Test__SleepResponse *)a[i].response)->call_no, 2 * (i + 1));
    }
    check_backup_latency("async", lat, N);
    rt_sleep_ms(100);
    for (int i = 0; i < N; i++)
        WT_EQ(RT_LOAD(&a[i].done_runs), 1);
    rt_async_free(a, N);
    weft_channel_free(ch);
    rt_server_free(srv);
}

/* A call answered before backup_request_ms sends no backup. */
static void backup_not_needed(void)
{
    rt_server_t *srv = rt_server_start(NULL, NULL, 1);
    weft_channel_t *ch = backup_channel(srv);
    for (int i = 0; i < 20; i++)
        WT_EQ(rt_echo1(ch, "quick"), 0);
    rt_sleep_ms(BACKUP_MS * 2);
    WT_EQ(rt_calls(srv, RT_ECHO), 20);
    weft_channel_free(ch);
    rt_server_free(srv);
}

static const rt_case_t cases[] = {
    RT_CASE(deadline_sync_fiber),
    RT_THREAD_CASE(deadline_sync_thread),
    RT_CASE(deadline_async),
    RT_CASE(late_response_dropped),
    RT_CASE(backup_request_sync),
    RT_CASE(backup_request_async),
    RT_CASE(backup_not_needed),
};

int main(int argc, char **argv)
{
    rt_run_cases(argc, argv, cases, RT_NCASES(cases));
    WT_EQ(weft_fiber_shutdown(), 0);
    return 0;
}
