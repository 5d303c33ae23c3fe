/*
 * test_rpc_conn.c - connections and server lifecycle under calls.
 *
 * Why: the hard parts of an RPC framework are not one call but many at
 * once and the moments connections come and go. This checks that 10k
 * concurrent calls share one connection and all get their own answer; that
 * stopping a server with calls in flight loses none and answers none twice,
 * and that join() returns only when all are answered and connections are
 * closed; that idle and read timeouts close what they should (and only
 * that); that pooled and short connections behave as named; that retries
 * carry calls over a server restart and to the other server of a list,
 * while a broken connection fails its calls at once when retries are off.
 * Cases aimed at suspected bugs run as meson tests of their own.
 */
#include "rpc_test_util.h"

/* ---- many calls at once on one connection ---- */

typedef struct burst {
    weft_channel_t *ch;
    int32_t next;       /* index handed to the next fiber */
    int32_t failed;
    weft_countdown_t left;
} burst_t;

static void burst_fiber(void *arg)
{
    burst_t *b = arg;
    int i = RT_ADD(&b->next, 1) - 1;
    char text[32];
    snprintf(text, sizeof(text), "m%d", i);
    weft_controller_t *cntl = weft_controller_new();
    if (rt_echo(b->ch, cntl, text) != 0)
        RT_ADD(&b->failed, 1);
    weft_controller_free(cntl);
    weft_countdown_signal(&b->left, 1);
}

static void concurrent_fibers_10k(void)
{
    rt_server_t *srv = rt_server_start(NULL, NULL, 1);
    weft_channel_options_t o = rt_opts();
    o.timeout_ms = 60000;
    weft_channel_t *ch = rt_channel(srv->addr, &o);
    int n = (int)wt_scaled(10000);
    burst_t b = {.ch = ch};
    weft_countdown_init(&b.left, n);
    int64_t t0 = rt_now();
    for (int i = 0; i < n; i++)
        rt_fiber(burst_fiber, &b);
    weft_countdown_wait(&b.left);
    int64_t took = rt_now() - t0;
    WT_EQ(b.failed, 0);
    WT_EQ(rt_calls(srv, RT_ECHO), n);
    WT_EQ(rt_server_ports(srv), 1); /* one connection carried them all */
    WT_NOTE("%d concurrent sync calls from fibers on one connection: %.1f ms (%.0f calls/s)", n,
            rt_ms(took), n / (rt_ms(took) / 1e3));
    weft_channel_free(ch);
    rt_server_free(srv);
}

static void concurrent_async_10k(void)
{
    rt_server_t *srv = rt_server_start(NULL, NULL, 1);
    weft_channel_options_t o = rt_opts();
    o.timeout_ms = 60000;
    weft_channel_t *ch = rt_channel(srv->addr, &o);
    int n = (int)wt_scaled(10000);
    weft_countdown_t left;
    weft_countdown_init(&left, n);
    rt_async_t *a = rt_async_new(n, &left);
    int64_t t0 = rt_now();
    for (int i = 0; i < n; i++)
        WT_EQ(rt_echo_async(ch, &a[i]), 0); /* the reply is checked in rt_on_echo */
    weft_countdown_wait(&left);
    int64_t took = rt_now() - t0;
    rt_sleep_ms(20);
    for (int i = 0; i < n; i++) {
        WT_EQ(RT_LOAD(&a[i].done_runs), 1);
        WT_EQ(a[i].error, 0);
    }
    WT_EQ(rt_server_ports(srv), 1);
    WT_NOTE("%d concurrent async calls on one connection: %.1f ms (%.0f calls/s)", n, rt_ms(took),
            n / (rt_ms(took) / 1e3));
    rt_async_free(a, n);
    weft_channel_free(ch);
    rt_server_free(srv);
}

/* ---- stopping a server ---- */

typedef struct stopper {
    rt_server_t *srv;
    int64_t joined_ns;
} stopper_t;

static void stop_inflight_run(bool check_stats)
{
    rt_server_t *srv = rt_server_start(NULL, NULL, 1);
    weft_channel_options_t o = rt_opts();
    o.max_retries = 0;
    weft_channel_t *ch = rt_channel(srv->addr, &o);
    /* some plain traffic first, for the stats: 5 ok, 2 unknown service */
    for (int i = 0; i < 5; i++)
        WT_EQ(rt_echo1(ch, "warm"), 0);
    for (int i = 0; i < 2; i++) {
        weft_iobuf_t in = WEFT_IOBUF_INIT, out = WEFT_IOBUF_INIT;
        rt_pack_echo(&in, "x");
        weft_controller_t *c = weft_controller_new();
        WT_EQ(weft_channel_call_raw(ch, "weft.test.Nope", "Echo", c, &in, &out), WEFT_ENOSERVICE);
        weft_controller_free(c);
        weft_iobuf_clear(&in);
        weft_iobuf_clear(&out);
    }

    enum { N = 200, M = 20 };
    weft_countdown_t left;
    weft_countdown_init(&left, N + M);
    rt_async_t *a = rt_async_new(N + M, &left);
    for (int i = 0; i < N; i++)
        WT_EQ(rt_sleep_async(ch, &a[i], 300), 0);
    RT_AWAIT(RT_LOAD(&srv->sleeping) == N, 5000);
    RT_AWAIT(rt_stats(srv).inflight == N, 5000); /* the warm-up calls have left */
    weft_server_stats_t st = rt_stats(srv);
    WT_EQ(st.connections, 1);

    int64_t t_stop = rt_now();
    WT_EQ(weft_server_stop(srv->server), 0);
    WT_EQ(weft_server_stop(srv->server), 0); /* twice is fine */
    /* requests that arrive now are refused with ELOGOFF */
    for (int i = N; i < N + M; i++)
        WT_EQ(rt_echo_async(ch, &a[i]), 0);
    for (int i = N; i < N + M; i++)
        WT_EQ(weft_controller_join(a[i].cntl), 0);
    WT_EQ(weft_server_join(srv->server), 0);
    int64_t joined = rt_now();
    /* join waited for the sleepers, and left no connection behind */
    WT_EQ(RT_LOAD(&srv->sleeping), 0);
    st = rt_stats(srv);
    WT_EQ(st.connections, 0);
    WT_EQ(st.inflight, 0);
    weft_countdown_wait(&left);
    rt_sleep_ms(50); /* a second done would come now */
    int ok = 0, logoff = 0;
    for (int i = 0; i < N + M; i++) {
        WT_ASSERT_MSG(RT_LOAD(&a[i].done_runs) == 1, "call %d: done ran %d times", i,
                      a[i].done_runs);
        if (i < N)
            WT_ASSERT_MSG(a[i].error == 0, "in-flight call %d failed: %d", i, a[i].error);
        else
            WT_ASSERT_MSG(a[i].error == WEFT_ELOGOFF, "late call %d: %d", i, a[i].error);
        ok += a[i].error == 0;
        logoff += a[i].error == WEFT_ELOGOFF;
    }
    WT_NOTE("stop with %d calls in flight, %d after: %d ok, %d ELOGOFF; join %.1f ms after stop",
            N, M, ok, logoff, rt_ms(joined - t_stop));
    WT_EQ(weft_server_join(srv->server), 0); /* again: at once */
    if (check_stats) {
        /* requests: 5 + 2 + N + M received; errors: 2 + M answered so */
        WT_NOTE("stats: requests %lld errors %lld (expected %d and %d)", (long long)st.requests,
                (long long)st.errors, 5 + 2 + N + M, 2 + M);
        WT_EQ(st.requests, 5 + 2 + N + M);
        WT_EQ(st.errors, 2 + M);
    }
    rt_async_free(a, N + M);
    weft_channel_free(ch);
    rt_server_free(srv);
}

/* Rounds, since whether a reply is still queued when join closes the
 * connection depends on timing. */
static void server_stop_inflight(void)
{
    for (long i = 0; i < wt_scaled(5); i++)
        stop_inflight_run(false);
}

/* weft_server_stats counts every request received and every error reply,
 * ELOGOFF ones included. */
static void server_stats(void)
{
    stop_inflight_run(true);
}

/* join must not cut a reply that is still being written: a 16 MiB reply
 * to a call in flight when the server stops must arrive whole. */
static void stop_large_reply(void)
{
    rt_server_t *srv = rt_server_start(NULL, NULL, 1);
    weft_channel_options_t o = rt_opts();
    o.max_retries = 0;
    weft_channel_t *ch = rt_channel(srv->addr, &o);
    rt_async_t *a = rt_async_new(1, NULL);
    size_t size = 16 * RT_MiB;
    rt_append_pattern(weft_controller_request_attachment(a->cntl), size, 77);
    WT_EQ(rt_sleep_async(ch, a, 100), 0);
    RT_AWAIT(RT_LOAD(&srv->sleeping) == 1, 10000);
    rt_server_shut(srv);
    WT_EQ(weft_controller_join(a->cntl), 0);
    WT_ASSERT_MSG(a->error == 0, "the call in flight failed with %d (%s)", a->error,
                  weft_controller_error_text(a->cntl));
    const weft_iobuf_t *att = weft_controller_response_attachment(a->cntl);
    WT_EQ(weft_iobuf_length(att), size);
    WT_EQ(rt_check_pattern(att, 77), size);
    rt_async_free(a, 1);
    weft_channel_free(ch);
    rt_server_free(srv);
}

/* ---- idle and read timeouts ---- */

static void idle_timeout(void)
{
    weft_server_options_t so = {.idle_timeout_s = 1};
    rt_server_t *srv = rt_server_start(&so, NULL, 1);
    weft_channel_options_t o = rt_opts();
    weft_channel_t *ch = rt_channel(srv->addr, &o);
    int p1 = rt_conn_port(ch);
    WT_EQ(rt_stats(srv).connections, 1);
    int64_t t0 = rt_now();
    RT_AWAIT(rt_stats(srv).connections == 0, 5000);
    int64_t closed = rt_now() - t0;
    WT_NOTE("idle connection closed after %.0f ms (idle_timeout_s 1)", rt_ms(closed));
    WT_GE(closed, 900 * WEFT_NS_PER_MS);
    /* the client reconnects by itself */
    weft_controller_t *cntl = weft_controller_new();
    WT_EQ(rt_echo(ch, cntl, "again"), 0);
    weft_controller_free(cntl);
    int p2 = rt_conn_port(ch);
    WT_NE(p1, p2);
    /* a connection in use is not idle */
    for (int i = 0; i < 8; i++) {
        WT_EQ(rt_conn_port(ch), p2);
        rt_sleep_ms(250);
    }
    weft_channel_free(ch);
    rt_server_free(srv);
}

/* A connection whose request is being handled is not idle: a call that
 * takes longer than idle_timeout_s must be answered. */
static void idle_timeout_busy(void)
{
    weft_server_options_t so = {.idle_timeout_s = 1};
    rt_server_t *srv = rt_server_start(&so, NULL, 1);
    weft_channel_options_t o = rt_opts();
    o.max_retries = 0;
    weft_channel_t *ch = rt_channel(srv->addr, &o);
    weft_controller_t *cntl = weft_controller_new();
    int rc = rt_sleep_call(ch, cntl, 2000, 5);
    WT_ASSERT_MSG(rc == 0, "a 2 s call under idle_timeout_s 1 failed: %d (%s)", rc,
                  weft_controller_error_text(cntl));
    weft_controller_free(cntl);
    weft_channel_free(ch);
    rt_server_free(srv);
}

/* Half a frame, then silence: closed after read_timeout_ms. */
static void read_timeout_half_frame(void)
{
    weft_server_options_t so = {.read_timeout_ms = 300};
    rt_server_t *srv = rt_server_start(&so, NULL, 1);
    size_t n;
    uint8_t *msg = rt_echo_bytes("half", &n);
    rt_req_t rq = {.correlation_id = 1};
    rt_frame_t f = rt_request_frame(&rq, msg, n);
    const size_t cuts[] = {3, 12, 15, f.len - 1};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        int fd = rt_raw_connect(weft_server_endpoint(srv->server));
        int64_t t0 = rt_now();
        WT_ASSERT(rt_write_all(fd, f.bytes, cuts[i]));
        WT_ASSERT_MSG(rt_raw_closed(fd, 5000), "%zu of %zu bytes: not closed", cuts[i], f.len);
        int64_t took = rt_now() - t0;
        WT_NOTE("read_timeout_ms 300, %zu of %zu bytes sent: closed after %.0f ms", cuts[i], f.len,
                rt_ms(took));
        WT_GE(took, 290 * WEFT_NS_PER_MS);
        WT_LT(took, 2000 * WEFT_NS_PER_MS);
        close(fd);
    }
    /* bytes that trickle in but complete the frame in time are fine */
    int fd = rt_raw_connect(weft_server_endpoint(srv->server));
    for (size_t off = 0; off < f.len; off += 8) {
        WT_ASSERT(rt_write_all(fd, f.bytes + off, f.len - off < 8 ? f.len - off : 8));
        usleep(10000);
    }
    rt_reply_t r;
    WT_EQ(rt_read_reply(fd, &r, 5000), 1);
    WT_EQ(rt_reply_code(&r), 0);
    rt_reply_free(&r);
    close(fd);
    rt_frame_free(&f);
    free(msg);
    rt_server_free(srv);
}

/* read_timeout_ms is about half-received requests: an idle connection
 * with nothing pending, or one waiting for a slow handler, stays open. */
static void read_timeout_idle(void)
{
    weft_server_options_t so = {.read_timeout_ms = 200};
    rt_server_t *srv = rt_server_start(&so, NULL, 1);
    weft_channel_options_t o = rt_opts();
    o.max_retries = 0;
    weft_channel_t *ch = rt_channel(srv->addr, &o);
    int p1 = rt_conn_port(ch);
    rt_sleep_ms(700);
    WT_ASSERT_MSG(rt_stats(srv).connections == 1,
                  "an idle connection without a partial request was closed by read_timeout");
    WT_EQ(rt_conn_port(ch), p1);
    weft_controller_t *cntl = weft_controller_new();
    int rc = rt_sleep_call(ch, cntl, 600, 1);
    WT_ASSERT_MSG(rc == 0, "a 600 ms call under read_timeout_ms 200 failed: %d (%s)", rc,
                  weft_controller_error_text(cntl));
    weft_controller_free(cntl);
    weft_channel_free(ch);
    rt_server_free(srv);
}

/* ---- connection types ---- */

typedef struct worker {
    weft_channel_t *ch;
    int calls;
    int32_t failed;
    weft_countdown_t *left;
} worker_t;

static void worker_fiber(void *arg)
{
    worker_t *w = arg;
    weft_controller_t *cntl = weft_controller_new();
    for (int i = 0; i < w->calls; i++) {
        weft_controller_reset(cntl);
        if (rt_echo(w->ch, cntl, "pool") != 0)
            RT_ADD(&w->failed, 1);
    }
    weft_controller_free(cntl);
    weft_countdown_signal(w->left, 1);
}

/* k fibers making `calls` calls each on ch; returns the failures. */
static int run_workers(weft_channel_t *ch, int k, int calls)
{
    weft_countdown_t left;
    weft_countdown_init(&left, k);
    worker_t w = {ch, calls, 0, &left};
    for (int i = 0; i < k; i++)
        rt_fiber(worker_fiber, &w);
    weft_countdown_wait(&left);
    return w.failed;
}

static weft_channel_t *typed_channel(const rt_server_t *srv, weft_connection_type_t type)
{
    weft_channel_options_t o = rt_opts();
    o.connection_type = type;
    return rt_channel(srv->addr, &o);
}

static void pooled_connections(void)
{
    rt_server_t *srv = rt_server_start(NULL, NULL, 1);
    weft_channel_t *ch = typed_channel(srv, WEFT_CONNECTION_POOLED);
    /* one at a time: one connection, reused */
    WT_EQ(run_workers(ch, 1, 20), 0);
    WT_EQ(rt_server_ports(srv), 1);
    /* 16 at a time: at most 16 connections, reused */
    enum { K = 16, CALLS = 25 };
    WT_EQ(run_workers(ch, K, CALLS), 0);
    int ports = rt_server_ports(srv);
    WT_NOTE("pooled: %d calls from %d fibers used %d connections", K * CALLS + 20, K, ports);
    WT_LE(ports, K + 1);
    WT_EQ(rt_calls(srv, RT_ECHO), K * CALLS + 20);
    weft_channel_free(ch);
    RT_AWAIT(rt_stats(srv).connections == 0, 5000); /* the pool was closed */
    rt_server_free(srv);
}

static void short_connections(void)
{
    rt_server_t *srv = rt_server_start(NULL, NULL, 1);
    weft_channel_t *ch = typed_channel(srv, WEFT_CONNECTION_SHORT);
    enum { K = 8, CALLS = 10 };
    WT_EQ(run_workers(ch, K, CALLS), 0);
    int ports = rt_server_ports(srv);
    WT_NOTE("short: %d calls from %d fibers used %d connections", K * CALLS, K, ports);
    WT_EQ(ports, K * CALLS);
    RT_AWAIT(rt_stats(srv).connections == 0, 5000); /* each was closed after its call */
    weft_channel_free(ch);
    rt_server_free(srv);
}

/* ---- retries ---- */

typedef struct restart_call {
    weft_channel_t *ch;
    int rc;
    int retried;
    int64_t latency_us;
} restart_call_t;

static void restart_call_fiber(void *arg)
{
    restart_call_t *r = arg;
    weft_controller_t *cntl = weft_controller_new();
    weft_controller_set_max_retries(cntl, 15);
    weft_controller_set_timeout_ms(cntl, 5000);
    r->rc = rt_echo(r->ch, cntl, "survivor");
    r->retried = weft_controller_retried_count(cntl);
    r->latency_us = weft_controller_latency_us(cntl);
    weft_controller_free(cntl);
}

static void restart_retries(void)
{
    rt_server_t *a = rt_server_start(NULL, NULL, 1);
    char addr[128];
    snprintf(addr, sizeof(addr), "%s", a->addr);
    weft_channel_options_t o = rt_opts();
    weft_channel_t *ch = rt_channel(addr, &o);
    WT_EQ(rt_echo1(ch, "before"), 0);
    rt_server_free(a); /* stop + join: the connection is closed */

    enum { K = 6 };
    restart_call_t calls[K];
    weft_fiber_t ids[K];
    for (int i = 0; i < K; i++) {
        calls[i] = (restart_call_t){ch, -1, 0, 0};
        ids[i] = rt_fiber(restart_call_fiber, &calls[i]);
    }
    rt_sleep_ms(100);
    rt_server_t *b = rt_server_start(NULL, addr, 2);
    for (int i = 0; i < K; i++)
        WT_EQ(weft_fiber_join(ids[i]), 0);
    int max_retried = 0;
    for (int i = 0; i < K; i++) {
        WT_ASSERT_MSG(calls[i].rc == 0, "call %d across the restart failed: %d", i, calls[i].rc);
        max_retried = calls[i].retried > max_retried ? calls[i].retried : max_retried;
        WT_NOTE("restart: call %d succeeded after %d retries in %.1f ms", i, calls[i].retried,
                calls[i].latency_us / 1e3);
    }
    WT_GT(max_retried, 0);
    WT_EQ(rt_calls(b, RT_ECHO), K);
    WT_EQ(rt_echo1(ch, "after"), 0);
    weft_channel_free(ch);
    rt_server_free(b);
}

/* A test-owned server that accepts, reads a request and hangs up, with a
 * FIN or with a reset. */
typedef struct fake_server {
    int lfd;
    int port;
    bool reset;
    int32_t stop;
    int32_t accepted;
    pthread_t thread;
} fake_server_t;

static void *fake_server_main(void *arg)
{
    fake_server_t *f = arg;
    while (!RT_LOAD(&f->stop)) {
        struct pollfd p = {.fd = f->lfd, .events = POLLIN};
        if (poll(&p, 1, 20) <= 0)
            continue;
        int fd = accept(f->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        RT_ADD(&f->accepted, 1);
        /* read the whole request (so that close sends a FIN, not the reset
         * unread bytes would cause): the call is pending now */
        uint8_t h[12];
        if (rt_read_full(fd, h, 12, 2000) == 12) {
            uint32_t body;
            memcpy(&body, h + 4, 4);
            char *buf = malloc(ntohl(body) + 1);
            rt_read_full(fd, buf, ntohl(body), 2000);
            free(buf);
        }
        usleep(20000);
        if (f->reset) {
            struct linger l = {1, 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
        }
        close(fd);
    }
    return NULL;
}

static fake_server_t *fake_server_start(bool reset)
{
    fake_server_t *f = calloc(1, sizeof(*f));
    f->reset = reset;
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    WT_EQ(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    WT_EQ(listen(f->lfd, 64), 0);
    socklen_t len = sizeof(sa);
    WT_EQ(getsockname(f->lfd, (struct sockaddr *)&sa, &len), 0);
    f->port = ntohs(sa.sin_port);
    WT_EQ(pthread_create(&f->thread, NULL, fake_server_main, f), 0);
    return f;
}

static void fake_server_stop(fake_server_t *f)
{
    RT_STORE(&f->stop, 1);
    WT_EQ(pthread_join(f->thread, NULL), 0);
    close(f->lfd);
    free(f);
}

static void broken_connection_run(bool reset)
{
    fake_server_t *f = fake_server_start(reset);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", f->port);
    weft_channel_options_t o = rt_opts();
    o.timeout_ms = 5000;
    weft_channel_t *ch = rt_channel(addr, &o);
    /* no retries: fails at once, with EFAILEDSOCKET, long before the deadline */
    weft_controller_t *cntl = weft_controller_new();
    weft_controller_set_max_retries(cntl, 0);
    int64_t t0 = rt_now();
    int rc = rt_sleep_call(ch, cntl, 1, 1);
    int64_t took = rt_now() - t0;
    WT_NOTE("%s by the peer: call failed with %d (%s) after %.1f ms", reset ? "reset" : "closed",
            rc, weft_strerror(rc), rt_ms(took));
    WT_EQ(rc, WEFT_EFAILEDSOCKET);
    WT_LT(took, 1000 * WEFT_NS_PER_MS);
    WT_EQ(weft_controller_retried_count(cntl), 0);
    WT_EQ(RT_LOAD(&f->accepted), 1);
    /* with retries: each retry is another connection, then the same error */
    weft_controller_reset(cntl);
    weft_controller_set_max_retries(cntl, 2);
    rc = rt_sleep_call(ch, cntl, 1, 1);
    WT_EQ(rc, WEFT_EFAILEDSOCKET);
    WT_EQ(weft_controller_retried_count(cntl), 2);
    WT_EQ(RT_LOAD(&f->accepted), 4);
    weft_controller_free(cntl);
    weft_channel_free(ch);
    fake_server_stop(f);
}

static void broken_connection(void)
{
    broken_connection_run(false);
}

/* channel.h: "A broken connection fails the calls on it with
 * WEFT_EFAILEDSOCKET" - also when it breaks with a reset. */
static void broken_connection_reset(void)
{
    broken_connection_run(true);
}

/* Nobody listening: refused, retried, and the error says so. */
static void connection_refused(void)
{
    rt_server_t *s = rt_server_start(NULL, NULL, 1);
    char addr[128];
    snprintf(addr, sizeof(addr), "%s", s->addr);
    rt_server_free(s);
    weft_channel_options_t o = rt_opts();
    o.timeout_ms = 2000;
    o.max_retries = 2;
    weft_channel_t *ch = rt_channel(addr, &o);
    weft_controller_t *cntl = weft_controller_new();
    int64_t t0 = rt_now();
    WT_EQ(rt_echo(ch, cntl, "anyone?"), ECONNREFUSED);
    WT_EQ(weft_controller_retried_count(cntl), 2);
    WT_LT(rt_now() - t0, 1500 * WEFT_NS_PER_MS);
    weft_controller_free(cntl);
    weft_channel_free(ch);
}

/* ---- two servers behind one channel ---- */

static char *list_target(rt_server_t *a, rt_server_t *b)
{
    char *t = malloc(300);
    snprintf(t, 300, "list://%s,%s", a->addr, b->addr);
    return t;
}

static int echo_server_id(weft_channel_t *ch, int *retried)
{
    weft_controller_t *cntl = weft_controller_new();
    Weft__Test__EchoRequest req = WEFT__TEST__ECHO_REQUEST__INIT;
    req.message = "who";
    Weft__Test__EchoResponse *resp = NULL;
    int rc = weft__test__test_service__echo_call(ch, cntl, &req, &resp);
    WT_ASSERT_MSG(rc == 0, "call failed: %d %s", rc, weft_controller_error_text(cntl));
    int id = resp->server_id;
    if (retried)
        *retried = weft_controller_retried_count(cntl);
    weft__test__echo_response__free_unpacked(resp, NULL);
    weft_controller_free(cntl);
    return id;
}

static void list_rr(void)
{
    rt_server_t *a = rt_server_start(NULL, NULL, 1), *b = rt_server_start(NULL, NULL, 2);
    char *target = list_target(a, b);
    const char *lbs[] = {NULL, "rr", "random"};
    for (int l = 0; l < 3; l++) {
        weft_channel_options_t o = rt_opts();
        o.load_balancer = lbs[l];
        weft_channel_t *ch = rt_channel(target, &o);
        int hits[3] = {0, 0, 0};
        enum { N = 100 };
        for (int i = 0; i < N; i++)
            hits[echo_server_id(ch, NULL)]++;
        WT_NOTE("%s: %d calls -> server 1: %d, server 2: %d", lbs[l] ? lbs[l] : "default", N,
                hits[1], hits[2]);
        if (l < 2) { /* round robin alternates */
            WT_EQ(hits[1], N / 2);
            WT_EQ(hits[2], N / 2);
        } else {
            WT_GT(hits[1], N / 5);
            WT_GT(hits[2], N / 5);
        }
        weft_channel_free(ch);
    }
    weft_channel_options_t o = rt_opts();
    o.load_balancer = "fancy";
    weft_channel_t *bad = NULL;
    WT_EQ(weft_channel_new(&bad, target, &o), -EINVAL);
    WT_EQ(weft_channel_new(&bad, "list://", &o), -EINVAL);
    free(target);
    rt_server_free(a);
    rt_server_free(b);
}

/* Calls with one of two servers down; returns the slowest call. */
static int64_t one_down_calls(int n, int64_t limit_ns)
{
    rt_server_t *a = rt_server_start(NULL, NULL, 1), *b = rt_server_start(NULL, NULL, 2);
    char *target = list_target(a, b);
    weft_channel_options_t o = rt_opts();
    o.timeout_ms = 3000;
    weft_channel_t *ch = rt_channel(target, &o);
    WT_EQ(echo_server_id(ch, NULL) + echo_server_id(ch, NULL), 3);
    rt_server_shut(b);
    int retried_calls = 0;
    int64_t t0 = rt_now(), worst = 0;
    for (int i = 0; i < n; i++) {
        int retried = 0;
        int64_t c0 = rt_now();
        WT_EQ(echo_server_id(ch, &retried), 1);
        int64_t took = rt_now() - c0;
        worst = took > worst ? took : worst;
        retried_calls += retried > 0;
        WT_ASSERT_MSG(took < limit_ns, "call %d with one server down took %.1f ms (retried %d)",
                      i, rt_ms(took), retried);
    }
    WT_NOTE("one of two servers down: %d calls ok (%d retried) in %.1f ms, slowest %.1f ms", n,
            retried_calls, rt_ms(rt_now() - t0), rt_ms(worst));
    WT_GT(retried_calls, 0);
    weft_channel_free(ch);
    free(target);
    rt_server_free(a);
    rt_server_free(b);
    return worst;
}

/* They succeed through retries. */
static void list_one_down(void)
{
    one_down_calls(6, 3 * WEFT_NS_PER_SEC);
}

/* ... and quickly: a server known to be down (its node is backing off)
 * should not cost every call a wait for the backoff while the other
 * server is up. */
static void list_one_down_latency(void)
{
    one_down_calls(20, 200 * WEFT_NS_PER_MS);
}

/* A server that is stopping answers ELOGOFF, which channel.c lists as
 * retriable: with another server in the list, the call must succeed. */
static void elogoff_retried(void)
{
    rt_server_t *a = rt_server_start(NULL, NULL, 1), *b = rt_server_start(NULL, NULL, 2);
    char *target = list_target(a, b);
    weft_channel_options_t o = rt_opts();
    o.max_retries = 3;
    weft_channel_t *ch = rt_channel(target, &o);
    WT_EQ(echo_server_id(ch, NULL) + echo_server_id(ch, NULL), 3); /* both connected */
    WT_EQ(weft_server_stop(a->server), 0); /* stopping, connections still open */
    for (int i = 0; i < 6; i++) {
        weft_controller_t *cntl = weft_controller_new();
        int rc = rt_echo(ch, cntl, "elsewhere");
        WT_ASSERT_MSG(rc == 0, "call %d: %d (%s), retried %d times", i, rc,
                      weft_controller_error_text(cntl), weft_controller_retried_count(cntl));
        weft_controller_free(cntl);
    }
    weft_channel_free(ch);
    free(target);
    rt_server_free(a);
    rt_server_free(b);
}

static const rt_case_t cases[] = {
    RT_CASE(concurrent_fibers_10k),
    RT_CASE(concurrent_async_10k),
    RT_CASE(server_stop_inflight),
    RT_CASE(server_stats),
    RT_CASE(stop_large_reply),
    RT_CASE(idle_timeout),
    RT_CASE(idle_timeout_busy),
    RT_THREAD_CASE(read_timeout_half_frame),
    RT_CASE(read_timeout_idle),
    RT_CASE(pooled_connections),
    RT_CASE(short_connections),
    RT_CASE(restart_retries),
    RT_CASE(broken_connection),
    RT_CASE(broken_connection_reset),
    RT_CASE(connection_refused),
    RT_CASE(list_rr),
    RT_CASE(list_one_down),
    RT_CASE(list_one_down_latency),
    RT_CASE(elogoff_retried),
};

int main(int argc, char **argv)
{
    rt_run_cases(argc, argv, cases, RT_NCASES(cases));
    WT_EQ(weft_fiber_shutdown(), 0);
    return 0;
}
