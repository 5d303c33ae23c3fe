/*
 * rpc_test_util.h - what the rpc/ tests share: a test server implementing
 * weft.test.TestService (test_rpc.proto) that counts what it sees, channel
 * and call helpers, a raw baidu_std client written against the spec
 * (plain POSIX sockets, frames built and decoded by hand, so the wire bytes
 * are checked independently of weft's own client), and a small case runner:
 * a test program runs all its cases, or those named on its command line,
 *   build-rpctests/tests/rpc/test_rpc_calls echo_sync nested
 *
 * Everything here may be used from a fiber or from a pthread; failed checks
 * abort through tests/weft_test.h.
 */
#ifndef WEFT_TESTS_RPC_TEST_UTIL_H
#define WEFT_TESTS_RPC_TEST_UTIL_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "weft.h"
#include "weft_test.h"

#include "baidu_rpc_meta.pb-c.h"
#include "test_rpc.weft.h"

#define RT_KiB ((size_t)1024)
#define RT_MiB (RT_KiB * RT_KiB)

/* ---- atomics and time ---- */

#define RT_LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define RT_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define RT_ADD(p, v) __atomic_add_fetch((p), (v), __ATOMIC_ACQ_REL)
#define RT_SUB(p, v) __atomic_sub_fetch((p), (v), __ATOMIC_ACQ_REL)

static inline int64_t rt_now(void)
{
    return weft_clock_ns();
}

static inline double rt_ms(int64_t ns)
{
    return (double)ns / 1e6;
}

static inline void rt_sleep_ms(int ms)
{
    weft_fiber_usleep((uint64_t)ms * 1000);
}

/* Waits until cond holds (polling every ms), failing after timeout_ms. */
#define RT_AWAIT(cond, timeout_ms)                                                    \
    do {                                                                              \
        int64_t rt_end_ = rt_now() + (int64_t)(timeout_ms) * WEFT_NS_PER_MS;          \
        while (!(cond)) {                                                             \
            WT_ASSERT_MSG(rt_now() < rt_end_, "timed out after %d ms waiting for %s", \
                          (int)(timeout_ms), #cond);                                  \
            weft_fiber_usleep(1000);                                                  \
        }                                                                             \
    } while (0)

/* Starts fn(arg) in a fiber with a default stack. */
static inline weft_fiber_t rt_fiber(weft_fiber_fn *fn, void *arg)
{
    weft_fiber_t id = 0;
    WT_EQ(weft_fiber_start_background(&id, NULL, fn, arg), 0);
    return id;
}

/* Sorts int64 values in place (insertion sort: small arrays). */
static inline void rt_sort64(int64_t *v, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            int64_t t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
}

/* A byte pattern that depends on the seed and the position. */
static inline uint8_t rt_pattern(uint64_t seed, size_t i)
{
    uint64_t x = (seed + i / 251) * 0x9E3779B97F4A7C15ull;
    return (uint8_t)((x >> 29) + i);
}

static inline void rt_append_pattern(weft_iobuf_t *b, size_t n, uint64_t seed)
{
    uint8_t chunk[8192];
    for (size_t off = 0; off < n;) {
        size_t k = n - off < sizeof(chunk) ? n - off : sizeof(chunk);
        for (size_t i = 0; i < k; i++)
            chunk[i] = rt_pattern(seed, off + i);
        WT_EQ(weft_iobuf_append(b, chunk, k), 0);
        off += k;
    }
}

/* Offset of the first byte of b that breaks the pattern, or its length. */
static inline size_t rt_check_pattern(const weft_iobuf_t *b, uint64_t seed)
{
    size_t off = 0;
    for (size_t s = 0; s < weft_iobuf_segments(b); s++) {
        size_t len;
        const uint8_t *p = weft_iobuf_segment(b, s, &len);
        for (size_t i = 0; i < len; i++, off++)
            if (p[i] != rt_pattern(seed, off))
                return off;
    }
    return off;
}

/* ---- the test server ---- */

enum { RT_ECHO, RT_SLEEP, RT_FAIL, RT_NESTED, RT_INSPECT, RT_FLAKY, RT_NMETHODS };

#define RT_MAX_PORTS 4096

typedef struct rt_server {
    weft_server_t *server;
    char addr[128];          /* what a channel connects to */
    int id;                  /* echoed in responses as server_id */
    int max_sleep_ms;        /* Sleep/Flaky clamp their sleeps to this (0: none) */
    Weft__Test__TestService_Handlers handlers;
    int64_t calls[RT_NMETHODS];
    int64_t sleeping, max_sleeping; /* Sleep handlers running now / at most */
    weft_mutex_t lock;       /* guards ports */
    int ports[RT_MAX_PORTS]; /* distinct client ports seen: one per connection */
    int nports;
} rt_server_t;

static inline rt_server_t *rt_self(void *arg)
{
    return arg;
}

/* Records the client port of the call (a connection, for TCP). */
static inline void rt_note_port(rt_server_t *s, weft_controller_t *cntl)
{
    int port = weft_endpoint_port(weft_controller_remote(cntl));
    weft_mutex_lock(&s->lock);
    bool seen = false;
    for (int i = 0; i < s->nports && !seen; i++)
        seen = s->ports[i] == port;
    if (!seen && s->nports < RT_MAX_PORTS)
        s->ports[s->nports++] = port;
    weft_mutex_unlock(&s->lock);
}

static inline int rt_server_ports(rt_server_t *s)
{
    weft_mutex_lock(&s->lock);
    int n = s->nports;
    weft_mutex_unlock(&s->lock);
    return n;
}

static inline void rt_server_forget_ports(rt_server_t *s)
{
    weft_mutex_lock(&s->lock);
    s->nports = 0;
    weft_mutex_unlock(&s->lock);
}

static inline void rt_count(rt_server_t *s, int method, weft_controller_t *cntl)
{
    RT_ADD(&s->calls[method], 1);
    rt_note_port(s, cntl);
}

static inline int64_t rt_calls(rt_server_t *s, int method)
{
    return RT_LOAD(&s->calls[method]);
}

static inline void rt_h_echo(weft_controller_t *cntl, const Weft__Test__EchoRequest *req,
                             Weft__Test__EchoResponse *resp, weft_closure_t *done, void *arg)
{
    rt_server_t *s = rt_self(arg);
    rt_count(s, RT_ECHO, cntl);
    resp->message = req->message; /* the request lives until the reply is sent */
    resp->has_data = req->has_data;
    resp->data = req->data;
    resp->has_server_id = 1;
    resp->server_id = s->id;
    WT_EQ(weft_iobuf_append_buf(weft_controller_response_attachment(cntl),
                                weft_controller_request_attachment(cntl)),
          0);
    weft_closure_run(done);
}

/* Sleep answers from another fiber, after the handler returned. */
typedef struct rt_sleeper {
    rt_server_t *s;
    weft_controller_t *cntl;
    const Weft__Test__SleepRequest *req;
    Weft__Test__SleepResponse *resp;
    weft_closure_t *done;
    int64_t call_no;
} rt_sleeper_t;

static inline int rt_clamp_sleep(rt_server_t *s, int ms)
{
    if (ms < 0)
        ms = 0;
    return s->max_sleep_ms > 0 && ms > s->max_sleep_ms ? s->max_sleep_ms : ms;
}

static inline void rt_sleeper_fiber(void *arg)
{
    rt_sleeper_t *z = arg;
    int64_t now = RT_ADD(&z->s->sleeping, 1), max;
    while (now > (max = RT_LOAD(&z->s->max_sleeping)))
        if (__atomic_compare_exchange_n(&z->s->max_sleeping, &max, now, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            break;
    rt_sleep_ms(rt_clamp_sleep(z->s, z->req->ms));
    RT_SUB(&z->s->sleeping, 1);
    z->resp->tag = z->req->has_tag ? z->req->tag : 0;
    z->resp->has_call_no = 1;
    z->resp->call_no = z->call_no;
    z->resp->has_server_id = 1;
    z->resp->server_id = z->s->id;
    WT_EQ(weft_iobuf_append_buf(weft_controller_response_attachment(z->cntl),
                                weft_controller_request_attachment(z->cntl)),
          0);
    weft_closure_run(z->done); /* frees the arena z lives in: last */
}

static inline void rt_h_sleep(weft_controller_t *cntl, const Weft__Test__SleepRequest *req,
                              Weft__Test__SleepResponse *resp, weft_closure_t *done, void *arg)
{
    rt_server_t *s = rt_self(arg);
    rt_count(s, RT_SLEEP, cntl);
    rt_sleeper_t *z = weft_controller_alloc(cntl, sizeof(*z));
    WT_ASSERT(z);
    *z = (rt_sleeper_t){s, cntl, req, resp, done, rt_calls(s, RT_SLEEP)};
    rt_fiber(rt_sleeper_fiber, z);
}

static inline void rt_h_fail(weft_controller_t *cntl, const Weft__Test__FailRequest *req,
                             Weft__Test__FailResponse *resp, weft_closure_t *done, void *arg)
{
    rt_count(rt_self(arg), RT_FAIL, cntl);
    if (req->has_code && req->code)
        weft_controller_set_failed(cntl, req->code, "%s", req->text ? req->text : "");
    if (!(req->has_skip_required && req->skip_required))
        resp->required_field = weft_controller_strdup(cntl, "set");
    weft_closure_run(done);
}

static inline void rt_h_nested(weft_controller_t *cntl, const Weft__Test__Node *req,
                               Weft__Test__Node *resp, weft_closure_t *done, void *arg)
{
    rt_count(rt_self(arg), RT_NESTED, cntl);
    resp->child = req->child;
    resp->has_value = req->has_value;
    resp->value = req->value;
    weft_closure_run(done);
}

static inline void rt_h_inspect(weft_controller_t *cntl, const Weft__Test__InspectRequest *req,
                                Weft__Test__InspectResponse *resp, weft_closure_t *done,
                                void *arg)
{
    rt_server_t *s = rt_self(arg);
    rt_count(s, RT_INSPECT, cntl);
    resp->has_log_id = 1;
    resp->log_id = weft_controller_log_id(cntl);
    if (req->user_key) {
        const char *v = weft_controller_user_field(cntl, req->user_key);
        resp->user_value = v ? weft_controller_strdup(cntl, v) : NULL;
    }
    resp->auth_context = weft_controller_auth_context(cntl);
    resp->service = (char *)weft_controller_service_name(cntl);
    resp->method = (char *)weft_controller_method_name(cntl);
    int64_t dl = weft_controller_deadline_ns(cntl);
    resp->has_deadline_left_ms = 1;
    resp->deadline_left_ms = dl < 0 ? -1 : (dl - rt_now()) / WEFT_NS_PER_MS;
    resp->has_remote_port = 1;
    resp->remote_port = weft_endpoint_port(weft_controller_remote(cntl));
    resp->has_current_ok = 1;
    resp->current_ok = weft_controller_current() == cntl;
    resp->has_server_id = 1;
    resp->server_id = s->id;
    weft_closure_run(done);
}

static inline void rt_h_flaky(weft_controller_t *cntl, const Weft__Test__SleepRequest *req,
                              Weft__Test__SleepResponse *resp, weft_closure_t *done, void *arg)
{
    rt_server_t *s = rt_self(arg);
    rt_count(s, RT_FLAKY, cntl);
    int64_t n = rt_calls(s, RT_FLAKY);
    if (n % 2 == 1)
        rt_sleep_ms(rt_clamp_sleep(s, req->ms));
    resp->tag = req->has_tag ? req->tag : 0;
    resp->has_call_no = 1;
    resp->call_no = n;
    resp->has_server_id = 1;
    resp->server_id = s->id;
    weft_closure_run(done);
}

/* A server with TestService on `listen` ("127.0.0.1:0" when NULL). */
static inline rt_server_t *rt_server_start(const weft_server_options_t *opts, const char *listen,
                                           int id)
{
    rt_server_t *s = calloc(1, sizeof(*s));
    WT_ASSERT(s);
    s->id = id;
    weft_mutex_init(&s->lock);
    s->handlers = (Weft__Test__TestService_Handlers){
        .arg = s,
        .echo = rt_h_echo,
        .sleep = rt_h_sleep,
        .fail = rt_h_fail,
        .nested = rt_h_nested,
        .inspect = rt_h_inspect,
        .flaky = rt_h_flaky,
    };
    WT_EQ(weft_server_new(&s->server, opts), 0);
    WT_EQ(weft__test__test_service__register(s->server, &s->handlers), 0);
    int rc = weft_server_start(s->server, listen ? listen : "127.0.0.1:0");
    WT_ASSERT_MSG(rc == 0, "cannot start a server on %s: %s", listen ? listen : "127.0.0.1:0",
                  weft_strerror(rc));
    weft_endpoint_format(weft_server_endpoint(s->server), s->addr, sizeof(s->addr));
    return s;
}

static inline int rt_server_port(const rt_server_t *s)
{
    return weft_endpoint_port(weft_server_endpoint(s->server));
}

static inline weft_server_stats_t rt_stats(const rt_server_t *s)
{
    weft_server_stats_t st;
    weft_server_stats(s->server, &st);
    return st;
}

/* Stops, joins and frees the server; the counters stay readable. */
static inline void rt_server_shut(rt_server_t *s)
{
    if (!s->server)
        return;
    WT_EQ(weft_server_stop(s->server), 0);
    WT_EQ(weft_server_join(s->server), 0);
    weft_server_free(s->server);
    s->server = NULL;
}

static inline void rt_server_free(rt_server_t *s)
{
    rt_server_shut(s);
    free(s);
}

/* ---- channels and calls ---- */

static inline weft_channel_options_t rt_opts(void)
{
    weft_channel_options_t o = WEFT_CHANNEL_OPTIONS_INIT;
    o.timeout_ms = 10000; /* a loaded machine: tests that time things set their own */
    return o;
}

static inline weft_channel_t *rt_channel(const char *target, const weft_channel_options_t *o)
{
    weft_channel_t *ch = NULL;
    int rc = weft_channel_new(&ch, target, o);
    WT_ASSERT_MSG(rc == 0, "weft_channel_new(%s): %s", target, weft_strerror(rc));
    return ch;
}

/* Echo of `text`; checks the reply when the call succeeds. Returns the
 * call's code. */
static inline int rt_echo(weft_channel_t *ch, weft_controller_t *cntl, const char *text)
{
    Weft__Test__EchoRequest req = WEFT__TEST__ECHO_REQUEST__INIT;
    req.message = (char *)text;
    Weft__Test__EchoResponse *resp = NULL;
    int rc = weft__test__test_service__echo_call(ch, cntl, &req, &resp);
    WT_EQ(rc, weft_controller_error_code(cntl));
    if (rc == 0) {
        WT_ASSERT(resp);
        WT_STREQ(resp->message, text);
        weft__test__echo_response__free_unpacked(resp, NULL);
    } else {
        WT_ASSERT(!resp);
    }
    return rc;
}

/* An echo with a fresh controller; returns the code. */
static inline int rt_echo1(weft_channel_t *ch, const char *text)
{
    weft_controller_t *cntl = weft_controller_new();
    int rc = rt_echo(ch, cntl, text);
    weft_controller_free(cntl);
    return rc;
}

/* Sleep(ms) with tag; returns the code (the reply's tag is checked). */
static inline int rt_sleep_call(weft_channel_t *ch, weft_controller_t *cntl, int ms, int tag)
{
    Weft__Test__SleepRequest req = WEFT__TEST__SLEEP_REQUEST__INIT;
    req.ms = ms;
    req.has_tag = 1;
    req.tag = tag;
    Weft__Test__SleepResponse *resp = NULL;
    int rc = weft__test__test_service__sleep_call(ch, cntl, &req, &resp);
    if (rc == 0) {
        WT_EQ(resp->tag, tag);
        weft__test__sleep_response__free_unpacked(resp, NULL);
    }
    return rc;
}

/* Inspect, returning the response (the caller frees it) or NULL. */
static inline Weft__Test__InspectResponse *rt_inspect(weft_channel_t *ch, weft_controller_t *cntl,
                                                      const char *user_key)
{
    Weft__Test__InspectRequest req = WEFT__TEST__INSPECT_REQUEST__INIT;
    req.user_key = (char *)user_key;
    Weft__Test__InspectResponse *resp = NULL;
    int rc = weft__test__test_service__inspect_call(ch, cntl, &req, &resp);
    WT_ASSERT_MSG(rc == 0, "Inspect failed: %d %s", rc, weft_controller_error_text(cntl));
    return resp;
}

/* The client port of the connection a call on ch goes out on. */
static inline int rt_conn_port(weft_channel_t *ch)
{
    weft_controller_t *cntl = weft_controller_new();
    Weft__Test__InspectResponse *r = rt_inspect(ch, cntl, NULL);
    int port = r->remote_port;
    weft__test__inspect_response__free_unpacked(r, NULL);
    weft_controller_free(cntl);
    return port;
}

/* Serialized EchoRequest{message=text} for the raw APIs. */
static inline void rt_pack_echo(weft_iobuf_t *out, const char *text)
{
    Weft__Test__EchoRequest req = WEFT__TEST__ECHO_REQUEST__INIT;
    req.message = (char *)text;
    WT_GE(weft_iobuf_append_pb(out, &req.base), 0);
}

/* A chain of `depth` + 1 nodes (depth levels below the top), values 0.. */
static inline Weft__Test__Node *rt_chain(int depth)
{
    Weft__Test__Node *nodes = calloc((size_t)depth + 1, sizeof(*nodes));
    WT_ASSERT(nodes);
    for (int i = 0; i <= depth; i++) {
        weft__test__node__init(&nodes[i]);
        nodes[i].has_value = 1;
        nodes[i].value = i;
        nodes[i].child = i < depth ? &nodes[i + 1] : NULL;
    }
    return nodes;
}

/* Levels of a chain below n, checking the values count up from first. */
static inline int rt_chain_depth(const Weft__Test__Node *n, int first)
{
    int d = 0;
    for (; n->child; n = n->child, d++)
        WT_EQ(n->value, first + d);
    WT_EQ(n->value, first + d);
    return d;
}

/* ---- asynchronous calls: a record per call, counting done runs ---- */

typedef struct rt_async {
    weft_controller_t *cntl;
    int32_t done_runs;     /* must end at exactly 1 */
    int error;
    int tag;               /* what the reply must carry */
    bool in_fiber;
    int64_t done_ns;
    void *response;        /* kept when keep_response */
    bool keep_response;
    weft_countdown_t *left; /* signalled once per done, if set */
} rt_async_t;

static inline void rt_async_done(weft_controller_t *cntl, ProtobufCMessage *resp, rt_async_t *a)
{
    WT_ASSERT(cntl == a->cntl);
    a->error = weft_controller_error_code(cntl);
    a->in_fiber = weft_fiber_in_fiber();
    a->done_ns = rt_now();
    WT_EQ(a->error != 0, resp == NULL);
    if (resp && a->keep_response)
        a->response = resp;
    else if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    RT_ADD(&a->done_runs, 1);
    if (a->left)
        weft_countdown_signal(a->left, 1);
}

static inline void rt_on_echo(weft_controller_t *cntl, Weft__Test__EchoResponse *resp, void *arg)
{
    rt_async_t *a = arg;
    if (resp) {
        char want[32];
        snprintf(want, sizeof(want), "m%d", a->tag);
        WT_STREQ(resp->message, want);
    }
    rt_async_done(cntl, resp ? &resp->base : NULL, a);
}

static inline void rt_on_sleep(weft_controller_t *cntl, Weft__Test__SleepResponse *resp, void *arg)
{
    rt_async_t *a = arg;
    if (resp)
        WT_EQ(resp->tag, a->tag);
    rt_async_done(cntl, resp ? &resp->base : NULL, a);
}

/* Starts an async Echo of "m<tag>" (0 or the code it failed with at once). */
static inline int rt_echo_async(weft_channel_t *ch, rt_async_t *a)
{
    char text[32];
    snprintf(text, sizeof(text), "m%d", a->tag);
    Weft__Test__EchoRequest req = WEFT__TEST__ECHO_REQUEST__INIT;
    req.message = text;
    return weft__test__test_service__echo_call_async(ch, a->cntl, &req, rt_on_echo, a);
}

static inline int rt_sleep_async(weft_channel_t *ch, rt_async_t *a, int ms)
{
    Weft__Test__SleepRequest req = WEFT__TEST__SLEEP_REQUEST__INIT;
    req.ms = ms;
    req.has_tag = 1;
    req.tag = a->tag;
    return weft__test__test_service__sleep_call_async(ch, a->cntl, &req, rt_on_sleep, a);
}

/* n records with fresh controllers and tags 0..n-1. */
static inline rt_async_t *rt_async_new(int n, weft_countdown_t *left)
{
    rt_async_t *a = calloc((size_t)n, sizeof(*a));
    WT_ASSERT(a);
    for (int i = 0; i < n; i++) {
        a[i].cntl = weft_controller_new();
        a[i].tag = i;
        a[i].left = left;
    }
    return a;
}

static inline void rt_async_free(rt_async_t *a, int n)
{
    for (int i = 0; i < n; i++) {
        weft_controller_free(a[i].cntl);
        if (a[i].response)
            protobuf_c_message_free_unpacked(a[i].response, NULL);
    }
    free(a);
}

/* ---- a raw baidu_std client: frames by hand, checked by hand ---- */

/* A blocking TCP or unix connection to ep, with SO_RCVTIMEO as a safety. */
static inline int rt_raw_connect(const weft_endpoint_t *ep)
{
    int fd = socket(ep->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    WT_GE(fd, 0);
    WT_ASSERT_MSG(connect(fd, (const struct sockaddr *)&ep->addr, ep->len) == 0, "connect: %s",
                  strerror(errno));
    if (ep->addr.ss_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return fd;
}

/* Writes all n bytes; false if the peer closed first (EPIPE/ECONNRESET). */
static inline bool rt_write_all(int fd, const void *buf, size_t n)
{
    for (size_t done = 0; done < n;) {
        ssize_t w = send(fd, (const char *)buf + done, n - done, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EPIPE || errno == ECONNRESET))
            return false;
        WT_ASSERT_MSG(w > 0, "send: %s", strerror(errno));
        done += (size_t)w;
    }
    return true;
}

/* Reads exactly n bytes. Returns n, fewer at EOF/reset, or -ETIMEDOUT if
 * the deadline passed first. */
static inline ssize_t rt_read_full(int fd, void *buf, size_t n, int timeout_ms)
{
    int64_t end = rt_now() + (int64_t)timeout_ms * WEFT_NS_PER_MS;
    size_t got = 0;
    while (got < n) {
        int64_t left = end - rt_now();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0)
            return -ETIMEDOUT;
        int k = poll(&p, 1, (int)(left / WEFT_NS_PER_MS) + 1);
        if (k < 0 && errno == EINTR)
            continue;
        WT_GE(k, 0);
        if (k == 0)
            continue;
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r <= 0) /* EOF or ECONNRESET: the peer closed */
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* True if the peer closes the connection (EOF or reset, with no byte
 * before it) within timeout_ms. */
static inline bool rt_raw_closed(int fd, int timeout_ms)
{
    char c;
    return rt_read_full(fd, &c, 1, timeout_ms) == 0;
}

/* A frame: "PRPC", body_size, meta_size (big-endian), meta, payload.
 * body_size and meta_size are what the bytes hold, so they can lie. */
typedef struct rt_frame {
    uint8_t *bytes;
    size_t len;
} rt_frame_t;

static inline void rt_frame_free(rt_frame_t *f)
{
    free(f->bytes);
    f->bytes = NULL;
    f->len = 0;
}

static inline rt_frame_t rt_frame_raw(const char magic[4], uint32_t body_size, uint32_t meta_size,
                                      const void *meta, size_t meta_len, const void *payload,
                                      size_t payload_len)
{
    rt_frame_t f = {malloc(12 + meta_len + payload_len + 1), 12 + meta_len + payload_len};
    WT_ASSERT(f.bytes);
    uint32_t be[2] = {htonl(body_size), htonl(meta_size)};
    memcpy(f.bytes, magic, 4);
    memcpy(f.bytes + 4, be, 8);
    if (meta_len)
        memcpy(f.bytes + 12, meta, meta_len);
    if (payload_len)
        memcpy(f.bytes + 12 + meta_len, payload, payload_len);
    return f;
}

/* An honest frame around a packed meta. */
static inline rt_frame_t rt_frame(const Weft__Baidu__RpcMeta *meta, const void *payload,
                                  size_t payload_len)
{
    size_t mlen = protobuf_c_message_get_packed_size(&meta->base);
    uint8_t *m = malloc(mlen + 1);
    WT_ASSERT(m);
    WT_EQ(protobuf_c_message_pack(&meta->base, m), mlen);
    rt_frame_t f = rt_frame_raw("PRPC", (uint32_t)(mlen + payload_len), (uint32_t)mlen, m, mlen,
                                payload, payload_len);
    free(m);
    return f;
}

/* Request meta fields a test sets; the rest take their defaults. */
typedef struct rt_req {
    const char *service, *method;
    int64_t correlation_id;
    int32_t attachment_size;      /* set when non-zero */
    int compress_type;            /* set when non-zero */
    const void *auth;             /* authentication_data when non-NULL */
    size_t auth_len;
    bool checksum;                /* checksum_type 1 with checksum_value below */
    uint8_t checksum_value[4];
} rt_req_t;

static inline rt_frame_t rt_request_frame(const rt_req_t *r, const void *payload, size_t len)
{
    Weft__Baidu__RpcMeta meta = WEFT__BAIDU__RPC_META__INIT;
    Weft__Baidu__RpcRequestMeta rq = WEFT__BAIDU__RPC_REQUEST_META__INIT;
    rq.service_name = (char *)(r->service ? r->service : "weft.test.TestService");
    rq.method_name = (char *)(r->method ? r->method : "Echo");
    meta.request = &rq;
    meta.has_correlation_id = 1;
    meta.correlation_id = r->correlation_id;
    if (r->attachment_size) {
        meta.has_attachment_size = 1;
        meta.attachment_size = r->attachment_size;
    }
    if (r->compress_type) {
        meta.has_compress_type = 1;
        meta.compress_type = r->compress_type;
    }
    if (r->auth) {
        meta.has_authentication_data = 1;
        meta.authentication_data.data = (uint8_t *)r->auth;
        meta.authentication_data.len = r->auth_len;
    }
    if (r->checksum) {
        meta.has_checksum_type = meta.has_checksum_value = 1;
        meta.checksum_type = 1;
        meta.checksum_value.data = (uint8_t *)r->checksum_value;
        meta.checksum_value.len = 4;
    }
    return rt_frame(&meta, payload, len);
}

/* A reply as the bytes say it. */
typedef struct rt_reply {
    uint32_t body_size, meta_size;
    Weft__Baidu__RpcMeta *meta;   /* unpacked by protobuf-c, or NULL */
    uint8_t *payload;             /* body_size - meta_size bytes */
    size_t payload_len;
} rt_reply_t;

static inline void rt_reply_free(rt_reply_t *r)
{
    if (r->meta)
        weft__baidu__rpc_meta__free_unpacked(r->meta, NULL);
    free(r->payload);
    memset(r, 0, sizeof(*r));
}

/* Reads one reply frame: 1, 0 if the connection closed before a header
 * byte, -ETIMEDOUT. A reply that breaks the spec's frame rules fails. */
static inline int rt_read_reply(int fd, rt_reply_t *r, int timeout_ms)
{
    memset(r, 0, sizeof(*r));
    uint8_t h[12];
    ssize_t n = rt_read_full(fd, h, 12, timeout_ms);
    if (n == -ETIMEDOUT)
        return -ETIMEDOUT;
    if (n == 0)
        return 0;
    WT_EQ(n, 12);
    WT_ASSERT_MSG(!memcmp(h, "PRPC", 4), "reply magic %02x%02x%02x%02x", h[0], h[1], h[2], h[3]);
    uint32_t be[2];
    memcpy(be, h + 4, 8);
    r->body_size = ntohl(be[0]);
    r->meta_size = ntohl(be[1]);
    WT_LE(r->meta_size, r->body_size);
    uint8_t *body = malloc(r->body_size + 1);
    WT_ASSERT(body);
    WT_EQ(rt_read_full(fd, body, r->body_size, timeout_ms), r->body_size);
    r->meta = weft__baidu__rpc_meta__unpack(NULL, r->meta_size, body);
    WT_ASSERT_MSG(r->meta, "the reply's meta does not parse");
    WT_ASSERT_MSG(!r->meta->request && r->meta->response, "a reply carries a response meta only");
    WT_ASSERT(r->meta->has_correlation_id);
    r->payload_len = r->body_size - r->meta_size;
    r->payload = malloc(r->payload_len + 1);
    WT_ASSERT(r->payload);
    memcpy(r->payload, body + r->meta_size, r->payload_len);
    free(body);
    return 1;
}

static inline int rt_reply_code(const rt_reply_t *r)
{
    const Weft__Baidu__RpcResponseMeta *rm = r->meta->response;
    return rm->has_error_code ? rm->error_code : 0;
}

/* Checks an error reply as the spec wants it: the code, the correlation
 * id bit for bit, a text, and no payload at all. */
static inline void rt_check_error_reply(const rt_reply_t *r, int code, int64_t correlation_id)
{
    WT_EQ(rt_reply_code(r), code);
    WT_EQ(r->meta->correlation_id, correlation_id);
    WT_ASSERT_MSG(r->meta->response->error_text && r->meta->response->error_text[0],
                  "error reply %d without error_text", code);
    WT_EQ(r->body_size, r->meta_size);
    WT_EQ(r->payload_len, 0);
    WT_ASSERT(!r->meta->has_attachment_size || r->meta->attachment_size == 0);
}

/* Sends one request frame and reads its reply (1), or sees the connection
 * close (0). */
static inline int rt_raw_call(int fd, const rt_frame_t *f, rt_reply_t *r, int timeout_ms)
{
    if (!rt_write_all(fd, f->bytes, f->len))
        return 0;
    int rc = rt_read_reply(fd, r, timeout_ms);
    WT_ASSERT_MSG(rc != -ETIMEDOUT, "no reply and no close within %d ms", timeout_ms);
    return rc;
}

/* The serialized EchoRequest{message} as plain bytes (malloc'ed). */
static inline uint8_t *rt_echo_bytes(const char *text, size_t *len)
{
    Weft__Test__EchoRequest req = WEFT__TEST__ECHO_REQUEST__INIT;
    req.message = (char *)text;
    *len = protobuf_c_message_get_packed_size(&req.base);
    uint8_t *b = malloc(*len + 1);
    WT_ASSERT(b);
    WT_EQ(protobuf_c_message_pack(&req.base, b), *len);
    return b;
}

/* ---- cases ---- */

typedef struct rt_case {
    const char *name;
    void (*fn)(void);
    bool in_thread; /* run in the main pthread instead of a fiber */
} rt_case_t;

/* A case run in a fiber, as weft programs mostly call (handlers, channels
 * and servers exercised from fibers). */
#define RT_CASE(fn) {#fn, fn, false}
/* A case run in the main pthread: those that block in plain POSIX calls
 * (raw sockets), which must not hold a worker, and calls from a thread. */
#define RT_THREAD_CASE(fn) {#fn, fn, true}
#define RT_NCASES(a) (sizeof(a) / sizeof((a)[0]))

static inline void rt_case_fiber(void *arg)
{
    ((const rt_case_t *)arg)->fn();
}

/* Runs every case, or those named in argv, printing one line each. */
static inline void rt_run_cases(int argc, char **argv, const rt_case_t *cases, size_t n)
{
    signal(SIGPIPE, SIG_IGN);
    for (int i = 1; i < argc; i++) {
        bool found = false;
        for (size_t c = 0; c < n; c++)
            found = found || !strcmp(argv[i], cases[c].name);
        WT_ASSERT_MSG(found, "no test case named %s", argv[i]);
    }
    for (size_t c = 0; c < n; c++) {
        bool run = argc <= 1;
        for (int i = 1; i < argc && !run; i++)
            run = !strcmp(argv[i], cases[c].name);
        if (!run)
            continue;
        int64_t t0 = rt_now();
        if (cases[c].in_thread)
            cases[c].fn();
        else
            WT_EQ(weft_fiber_join(rt_fiber(rt_case_fiber, (void *)&cases[c])), 0);
        WT_NOTE("case %s: ok (%.1f ms)", cases[c].name, rt_ms(rt_now() - t0));
    }
}

#endif
