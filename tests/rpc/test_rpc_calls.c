/*
 * test_rpc_calls.c - what one call can do, end to end through the public
 * API: the generated stubs (sync and async), weft_channel_call and
 * weft_channel_call_raw against a real server on 127.0.0.1.
 *
 * Why: these are the promises users build on - the reply carries the right
 * payload, the error codes of specs/baidu_std.md reach the caller (unknown
 * service or method, handler failures, missing required fields), request
 * metadata (log id, user fields, deadline, credential) reaches the handler,
 * attachments and compression and checksums round trip, limits hold, and
 * asynchronous calls finish exactly once. Cases that target suspected bugs
 * run as meson tests of their own (see meson.build).
 */
#include "rpc_test_util.h"

/* A server with default options and a channel to it. */
typedef struct fixture {
    rt_server_t *srv;
    weft_channel_t *ch;
} fixture_t;

static fixture_t fx_open(const weft_server_options_t *so, const weft_channel_options_t *co)
{
    fixture_t f;
    f.srv = rt_server_start(so, NULL, 1);
    weft_channel_options_t def = rt_opts();
    f.ch = rt_channel(f.srv->addr, co ? co : &def);
    return f;
}

static void fx_close(fixture_t *f)
{
    weft_channel_free(f->ch);
    rt_server_free(f->srv);
}

/* ---- plain calls ---- */

static void echo_calls(weft_channel_t *ch, int n)
{
    weft_controller_t *cntl = weft_controller_new();
    for (int i = 0; i < n; i++) {
        char text[32];
        snprintf(text, sizeof(text), "hello %d", i);
        weft_controller_reset(cntl);
        WT_EQ(rt_echo(ch, cntl, text), 0);
        WT_ASSERT(!weft_controller_failed(cntl));
        WT_EQ(weft_controller_retried_count(cntl), 0);
        WT_GT(weft_controller_latency_us(cntl), 0);
    }
    weft_controller_free(cntl);
}

static void echo_sync(void)
{
    fixture_t f = fx_open(NULL, NULL);
    echo_calls(f.ch, 100);
    /* bytes with zeros in them, and an empty message */
    Weft__Test__EchoRequest req = WEFT__TEST__ECHO_REQUEST__INIT;
    uint8_t bin[300];
    for (size_t i = 0; i < sizeof(bin); i++)
        bin[i] = (uint8_t)(i * 7);
    req.message = "";
    req.has_data = 1;
    req.data.data = bin;
    req.data.len = sizeof(bin);
    weft_controller_t *cntl = weft_controller_new();
    Weft__Test__EchoResponse *resp = NULL;
    WT_EQ(weft__test__test_service__echo_call(f.ch, cntl, &req, &resp), 0);
    WT_STREQ(resp->message, "");
    WT_ASSERT(resp->has_data && resp->data.len == sizeof(bin));
    WT_ASSERT(!memcmp(resp->data.data, bin, sizeof(bin)));
    WT_EQ(resp->server_id, 1);
    weft__test__echo_response__free_unpacked(resp, NULL);
    weft_controller_free(cntl);
    WT_EQ(rt_calls(f.srv, RT_ECHO), 101);
    fx_close(&f);
}

/* Synchronous calls from a plain pthread (the thread waits). */
static void echo_from_thread(void)
{
    WT_ASSERT(!weft_fiber_in_fiber());
    fixture_t f = fx_open(NULL, NULL);
    echo_calls(f.ch, 50);
    fx_close(&f);
}

/* The generic API: weft_channel_call with the descriptor, and
 * weft_channel_call_raw with serialized bytes, by full and short name. */
static void generic_and_raw(void)
{
    fixture_t f = fx_open(NULL, NULL);
    weft_controller_t *cntl = weft_controller_new();

    Weft__Test__EchoRequest req = WEFT__TEST__ECHO_REQUEST__INIT;
    req.message = "generic";
    ProtobufCMessage *out = NULL;
    WT_EQ(weft_channel_call(f.ch, &weft__test__test_service__descriptor, 0, cntl, &req.base,
                            &out),
          0);
    WT_ASSERT(out && out->descriptor == &weft__test__echo_response__descriptor);
    WT_STREQ(((Weft__Test__EchoResponse *)out)->message, "generic");
    protobuf_c_message_free_unpacked(out, NULL);

    /* a request of the wrong type is refused before anything is sent */
    Weft__Test__SleepRequest wrong = WEFT__TEST__SLEEP_REQUEST__INIT;
    weft_controller_reset(cntl);
    out = (ProtobufCMessage *)1;
    WT_NE(weft_channel_call(f.ch, &weft__test__test_service__descriptor, 0, cntl, &wrong.base,
                            &out),
          0);
    WT_ASSERT(out == NULL);
    weft_controller_reset(cntl);
    WT_NE(weft_channel_call(f.ch, &weft__test__test_service__descriptor, 99, cntl, &req.base,
                            &out),
          0);

    const char *names[] = {"weft.test.TestService", "TestService"};
    for (int i = 0; i < 2; i++) {
        weft_iobuf_t in = WEFT_IOBUF_INIT, resp = WEFT_IOBUF_INIT;
        rt_pack_echo(&in, "raw");
        weft_controller_reset(cntl);
        int rc = weft_channel_call_raw(f.ch, names[i], "Echo", cntl, &in, &resp);
        WT_ASSERT_MSG(rc == 0, "raw call to %s: %d %s", names[i], rc,
                      weft_controller_error_text(cntl));
        Weft__Test__EchoResponse *er = NULL;
        WT_EQ(weft_iobuf_unpack_pb(&resp, &weft__test__echo_response__descriptor, NULL,
                                   (ProtobufCMessage **)&er),
              0);
        WT_STREQ(er->message, "raw");
        weft__test__echo_response__free_unpacked(er, NULL);
        weft_iobuf_clear(&in);
        weft_iobuf_clear(&resp);
    }
    weft_controller_free(cntl);
    WT_EQ(rt_calls(f.srv, RT_ECHO), 3);
    fx_close(&f);
}

/* 1001 and 1002, through the raw API (which names methods freely). */
static int raw_call_code(weft_channel_t *ch, const char *service, const char *method)
{
    weft_iobuf_t in = WEFT_IOBUF_INIT, resp = WEFT_IOBUF_INIT;
    rt_pack_echo(&in, "x");
    weft_controller_t *cntl = weft_controller_new();
    int rc = weft_channel_call_raw(ch, service, method, cntl, &in, &resp);
    WT_EQ(rc, weft_controller_error_code(cntl));
    if (rc != 0) {
        WT_EQ(weft_iobuf_length(&resp), 0);
        WT_EQ(weft_controller_retried_count(cntl), 0); /* not retriable */
    }
    weft_controller_free(cntl);
    weft_iobuf_clear(&in);
    weft_iobuf_clear(&resp);
    return rc;
}

static void unknown_service_method(void)
{
    fixture_t f = fx_open(NULL, NULL);
    WT_EQ(raw_call_code(f.ch, "weft.test.Nope", "Echo"), WEFT_ENOSERVICE);
    WT_EQ(raw_call_code(f.ch, "Nope", "Echo"), WEFT_ENOSERVICE);
    WT_EQ(raw_call_code(f.ch, "test.TestService", "Echo"), WEFT_ENOSERVICE); /* dotted: exact */
    WT_EQ(raw_call_code(f.ch, "weft.test.TestService", "Nope"), WEFT_ENOMETHOD);
    WT_EQ(raw_call_code(f.ch, "TestService", "Nope"), WEFT_ENOMETHOD);
    WT_EQ(raw_call_code(f.ch, "weft.test.TestService", "echo"), WEFT_ENOMETHOD); /* exact case */
    WT_EQ(raw_call_code(f.ch, "TestService", "Echo"), 0);
    WT_EQ(rt_calls(f.srv, RT_ECHO), 1);
    /* the connection is still good */
    WT_EQ(rt_echo1(f.ch, "after"), 0);
    fx_close(&f);
}

/* ---- handler outcomes ---- */

static int fail_call(weft_channel_t *ch, weft_controller_t *cntl, int code, const char *text,
                     bool skip_required)
{
    Weft__Test__FailRequest req = WEFT__TEST__FAIL_REQUEST__INIT;
    req.has_code = code != 0;
    req.code = code;
    req.text = (char *)text;
    req.has_skip_required = skip_required;
    req.skip_required = skip_required;
    Weft__Test__FailResponse *resp = NULL;
    int rc = weft__test__test_service__fail_call(ch, cntl, &req, &resp);
    if (rc == 0) {
        WT_STREQ(resp->required_field, "set");
        weft__test__fail_response__free_unpacked(resp, NULL);
    } else {
        WT_ASSERT(!resp);
    }
    return rc;
}

static void handler_failures(void)
{
    fixture_t f = fx_open(NULL, NULL);
    weft_controller_t *cntl = weft_controller_new();
    WT_EQ(fail_call(f.ch, cntl, 0, NULL, false), 0);

    weft_controller_reset(cntl);
    WT_EQ(fail_call(f.ch, cntl, 5005, "boom 42", false), 5005);
    WT_STREQ(weft_controller_error_text(cntl), "boom 42");
    WT_EQ(weft_controller_retried_count(cntl), 0);

    /* a weft code from a handler reaches the client as that code */
    weft_controller_reset(cntl);
    WT_EQ(fail_call(f.ch, cntl, WEFT_EINTERNAL, "internal trouble", false), WEFT_EINTERNAL);
    WT_STREQ(weft_controller_error_text(cntl), "internal trouble");

    /* a handler that leaves a required field unset: ERESPONSE */
    weft_controller_reset(cntl);
    WT_EQ(fail_call(f.ch, cntl, 0, NULL, true), WEFT_ERESPONSE);
    WT_ASSERT(strlen(weft_controller_error_text(cntl)) > 0);

    /* failing and leaving the field unset: the handler's error wins */
    weft_controller_reset(cntl);
    WT_EQ(fail_call(f.ch, cntl, 7007, "both", true), 7007);
    WT_EQ(rt_calls(f.srv, RT_FAIL), 5);
    weft_controller_free(cntl);
    fx_close(&f);
}

/* Log id, user fields, deadline, names and the current controller reach
 * the handler. */
static void request_metadata(void)
{
    fixture_t f = fx_open(NULL, NULL);
    weft_controller_t *cntl = weft_controller_new();
    weft_controller_set_log_id(cntl, -1234567890123LL);
    WT_EQ(weft_controller_set_user_field(cntl, "k", "v1"), 0);
    WT_EQ(weft_controller_set_user_field(cntl, "other", "x"), 0);
    WT_EQ(weft_controller_set_user_field(cntl, "k", "value of k"), 0); /* replaces */
    WT_STREQ(weft_controller_user_field(cntl, "k"), "value of k");
    weft_controller_set_timeout_ms(cntl, 3000);
    Weft__Test__InspectResponse *r = rt_inspect(f.ch, cntl, "k");
    WT_EQ(r->log_id, -1234567890123LL);
    WT_STREQ(r->user_value, "value of k");
    WT_STREQ(r->service, "weft.test.TestService");
    WT_STREQ(r->method, "Inspect");
    WT_ASSERT(r->current_ok);
    WT_ASSERT(!r->auth_context);
    WT_GT(r->deadline_left_ms, 2000);
    WT_LE(r->deadline_left_ms, 3000);
    weft__test__inspect_response__free_unpacked(r, NULL);

    /* no deadline: none sent; no log id: 0; an absent user field: none */
    weft_controller_reset(cntl);
    weft_controller_set_timeout_ms(cntl, -1);
    r = rt_inspect(f.ch, cntl, "k");
    WT_EQ(r->deadline_left_ms, -1);
    WT_EQ(r->log_id, 0);
    WT_ASSERT(!r->user_value);
    weft__test__inspect_response__free_unpacked(r, NULL);
    weft_controller_free(cntl);
    fx_close(&f);
}

/* ---- nesting ---- */

static char nested_why[256]; /* error text of the last failed nested_call */

static int nested_call(weft_channel_t *ch, int depth)
{
    Weft__Test__Node *chain = rt_chain(depth);
    weft_controller_t *cntl = weft_controller_new();
    Weft__Test__Node *resp = NULL;
    int rc = weft__test__test_service__nested_call(ch, cntl, chain, &resp);
    if (rc == 0) {
        WT_EQ(rt_chain_depth(resp, 0), depth);
        weft__test__node__free_unpacked(resp, NULL);
    } else {
        snprintf(nested_why, sizeof(nested_why), "%s", weft_controller_error_text(cntl));
    }
    weft_controller_free(cntl);
    free(chain);
    return rc;
}

static void nested(void)
{
    fixture_t f = fx_open(NULL, NULL);
    const int ok[] = {0, 1, 10, 63, 64};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        WT_EQ(nested_call(f.ch, ok[i]), 0);
    /* the default limit is 64 levels: one more is a bad request */
    WT_EQ(nested_call(f.ch, 65), WEFT_EREQUEST);
    WT_EQ(nested_call(f.ch, 500), WEFT_EREQUEST);
    WT_EQ(rt_calls(f.srv, RT_NESTED), 5);
    WT_EQ(rt_echo1(f.ch, "still fine"), 0);
    fx_close(&f);

    weft_server_options_t so = {.max_nesting = 8};
    f = fx_open(&so, NULL);
    WT_EQ(nested_call(f.ch, 8), 0);
    WT_EQ(nested_call(f.ch, 9), WEFT_EREQUEST);
    fx_close(&f);
}

/* A server that allows 100 levels (protobuf's own default limit) must be
 * usable at 100 levels: the request passes the server, and the client must
 * accept the same message back. */
static void nested_deep_limit(void)
{
    weft_server_options_t so = {.max_nesting = 100};
    fixture_t f = fx_open(&so, NULL);
    const int depths[] = {80, 100};
    for (int i = 0; i < 2; i++) {
        int64_t before = rt_calls(f.srv, RT_NESTED);
        int rc = nested_call(f.ch, depths[i]);
        WT_ASSERT_MSG(rc == 0, "depth %d, server max_nesting 100: %d \"%s\"; the handler %s",
                      depths[i], rc, nested_why,
                      rt_calls(f.srv, RT_NESTED) > before ? "ran, so the client refused the reply"
                                                          : "did not run");
    }
    WT_EQ(nested_call(f.ch, 101), WEFT_EREQUEST);
    fx_close(&f);
}

/* max_nesting above what the check supports (100) is capped there; it
 * must not break every call (it once did). */
static void max_nesting_over_100(void)
{
    weft_server_options_t so = {.max_nesting = 200};
    fixture_t f = fx_open(&so, NULL);
    int rc = rt_echo1(f.ch, "plain");
    WT_ASSERT_MSG(rc == 0, "a flat Echo on a server with max_nesting 200 failed: %d", rc);
    WT_EQ(nested_call(f.ch, 50), 0);
    WT_EQ(nested_call(f.ch, 101), WEFT_EREQUEST);
    WT_EQ(rt_calls(f.srv, RT_NESTED), 1);
    fx_close(&f);
}

/* ---- attachments, compression, checksum ---- */

/* Echo with `size` bytes of attachment and a compressible data field of
 * `data` bytes; checks both come back intact. */
static void echo_big(weft_channel_t *ch, int compress, size_t size, size_t data, uint64_t seed)
{
    weft_controller_t *cntl = weft_controller_new();
    weft_controller_set_timeout_ms(cntl, 30000);
    if (compress)
        weft_controller_set_compress_type(cntl, compress);
    rt_append_pattern(weft_controller_request_attachment(cntl), size, seed);
    uint8_t *d = malloc(data + 1);
    WT_ASSERT(d);
    for (size_t i = 0; i < data; i++)
        d[i] = (uint8_t)("compressible text "[i % 18]);
    Weft__Test__EchoRequest req = WEFT__TEST__ECHO_REQUEST__INIT;
    req.message = "big";
    req.has_data = 1;
    req.data.data = d;
    req.data.len = data;
    Weft__Test__EchoResponse *resp = NULL;
    int rc = weft__test__test_service__echo_call(ch, cntl, &req, &resp);
    WT_ASSERT_MSG(rc == 0, "echo of %zu+%zu bytes (compress %d): %d %s", data, size, compress, rc,
                  weft_controller_error_text(cntl));
    WT_STREQ(resp->message, "big");
    WT_EQ(resp->data.len, data);
    WT_ASSERT(data == 0 || !memcmp(resp->data.data, d, data));
    const weft_iobuf_t *att = weft_controller_response_attachment(cntl);
    WT_EQ(weft_iobuf_length(att), size);
    WT_EQ(rt_check_pattern(att, seed), size);
    weft__test__echo_response__free_unpacked(resp, NULL);
    free(d);
    weft_controller_free(cntl);
}

static void attachments_16m(void)
{
    fixture_t f = fx_open(NULL, NULL);
    int64_t t0 = rt_now();
    echo_big(f.ch, 0, 16 * RT_MiB, 0, 1);
    WT_NOTE("16 MiB attachment round trip: %.1f ms", rt_ms(rt_now() - t0));
    echo_big(f.ch, 0, 1, 0, 2);
    echo_big(f.ch, 0, 16 * RT_MiB - 1, 100, 3);
    echo_big(f.ch, 0, 0, 0, 4);
    fx_close(&f);
}

static void compression(void)
{
    fixture_t f = fx_open(NULL, NULL);
    const int types[] = {WEFT_COMPRESS_GZIP, WEFT_COMPRESS_ZLIB};
    for (int t = 0; t < 2; t++) {
        /* per call, with an attachment that must not be compressed */
        echo_big(f.ch, types[t], 10000, RT_MiB, 10 + (uint64_t)t);
        echo_big(f.ch, types[t], 0, 0, 0);
        echo_big(f.ch, types[t], 0, 1, 0);
        /* per channel */
        weft_channel_options_t o = rt_opts();
        o.compress_type = types[t];
        weft_channel_t *ch = rt_channel(f.srv->addr, &o);
        echo_big(ch, 0, 5000, 300 * RT_KiB, 20 + (uint64_t)t);
        echo_calls(ch, 20);
        weft_channel_free(ch);
    }
    /* an unsupported type: refused by the client, not sent */
    weft_controller_t *cntl = weft_controller_new();
    weft_controller_set_compress_type(cntl, WEFT_COMPRESS_SNAPPY);
    int64_t before = rt_calls(f.srv, RT_ECHO);
    WT_NE(rt_echo(f.ch, cntl, "snappy"), 0);
    WT_EQ(rt_calls(f.srv, RT_ECHO), before);
    weft_controller_free(cntl);
    weft_channel_options_t o = rt_opts();
    o.compress_type = WEFT_COMPRESS_SNAPPY;
    weft_channel_t *bad = NULL;
    WT_EQ(weft_channel_new(&bad, f.srv->addr, &o), -EINVAL);
    fx_close(&f);
}

static void checksum(void)
{
    weft_channel_options_t o = rt_opts();
    o.checksum = true;
    fixture_t f = fx_open(NULL, &o);
    echo_calls(f.ch, 20);
    echo_big(f.ch, 0, 100000, 50000, 5);
    echo_big(f.ch, WEFT_COMPRESS_GZIP, 1000, 200000, 6);
    echo_big(f.ch, WEFT_COMPRESS_ZLIB, 0, 10, 7);
    WT_EQ(nested_call(f.ch, 20), 0);
    fx_close(&f);
}

/* ---- authentication ---- */

typedef struct auth_state {
    int32_t calls;
    int32_t refused;
} auth_state_t;

static const char secret[] = "open sesame";
static char auth_ctx_text[] = "ctx:sesame";

static int authenticate(const void *cred, size_t len, const weft_endpoint_t *remote, void **ctx,
                        void *arg)
{
    auth_state_t *st = arg;
    WT_ASSERT(remote && weft_endpoint_port(remote) > 0);
    RT_ADD(&st->calls, 1);
    if (len == sizeof(secret) - 1 && !memcmp(cred, secret, len)) {
        *ctx = auth_ctx_text;
        return 0;
    }
    RT_ADD(&st->refused, 1);
    return -1;
}

typedef struct auth_burst {
    weft_channel_t *ch;
    int32_t ok;
} auth_burst_t;

static void auth_burst_fiber(void *arg)
{
    auth_burst_t *b = arg;
    weft_controller_t *cntl = weft_controller_new();
    Weft__Test__InspectResponse *r = rt_inspect(b->ch, cntl, NULL);
    WT_STREQ(r->auth_context, auth_ctx_text);
    weft__test__inspect_response__free_unpacked(r, NULL);
    weft_controller_free(cntl);
    RT_ADD(&b->ok, 1);
}

static weft_channel_t *auth_channel(const char *addr, const char *cred)
{
    weft_channel_options_t o = rt_opts();
    o.auth_data = cred;
    o.auth_len = cred ? strlen(cred) : 0;
    return rt_channel(addr, &o);
}

static void authentication(void)
{
    auth_state_t st = {0};
    weft_server_options_t so = {.authenticate = authenticate, .auth_arg = &st};
    rt_server_t *srv = rt_server_start(&so, NULL, 1);

    /* the right credential: 32 calls at once on a new connection, then more;
     * the authenticator runs once for the connection */
    weft_channel_t *ch = auth_channel(srv->addr, secret);
    auth_burst_t b = {ch, 0};
    weft_fiber_t ids[32];
    for (int i = 0; i < 32; i++)
        ids[i] = rt_fiber(auth_burst_fiber, &b);
    for (int i = 0; i < 32; i++)
        WT_EQ(weft_fiber_join(ids[i]), 0);
    WT_EQ(b.ok, 32);
    for (int i = 0; i < 10; i++)
        auth_burst_fiber(&b);
    WT_EQ(RT_LOAD(&st.calls), 1);
    WT_EQ(rt_server_ports(srv), 1);

    /* a wrong credential: 1004, not retried, and the connection goes */
    weft_channel_t *bad = auth_channel(srv->addr, "open barley");
    weft_controller_t *cntl = weft_controller_new();
    WT_EQ(rt_echo(bad, cntl, "x"), WEFT_ERPCAUTH);
    WT_EQ(weft_controller_retried_count(cntl), 0);
    WT_EQ(RT_LOAD(&st.calls), 2);
    RT_AWAIT(rt_stats(srv).connections == 1, 5000); /* only the good one is left */
    /* the next call opens a new connection and is refused again */
    weft_controller_reset(cntl);
    WT_EQ(rt_echo(bad, cntl, "y"), WEFT_ERPCAUTH);
    WT_EQ(RT_LOAD(&st.calls), 3);
    weft_channel_free(bad);

    /* no credential at all */
    weft_channel_t *none = auth_channel(srv->addr, NULL);
    weft_controller_reset(cntl);
    WT_EQ(rt_echo(none, cntl, "z"), WEFT_ERPCAUTH);
    weft_channel_free(none);
    WT_EQ(RT_LOAD(&st.refused), 3);
    WT_EQ(rt_calls(srv, RT_ECHO), 0); /* no refused request reached a handler */

    /* the good connection was not disturbed */
    weft_controller_reset(cntl);
    WT_EQ(rt_echo(ch, cntl, "still in"), 0);
    WT_EQ(RT_LOAD(&st.calls), 4);
    weft_controller_free(cntl);
    weft_channel_free(ch);
    rt_server_free(srv);
}

/* The credential goes with the first requests of a connection, and the
 * server decides once per connection, at step 7. A first request that
 * fails before step 7 (unknown method: 1002, bad request: 1003) must not
 * leave the right credential unchecked and the next call refused. */
static void auth_after_failed_first_call(void)
{
    auth_state_t st = {0};
    weft_server_options_t so = {.authenticate = authenticate, .auth_arg = &st};
    rt_server_t *srv = rt_server_start(&so, NULL, 1);
    const char *methods[] = {"Nope", "Echo"};
    for (int m = 0; m < 2; m++) {
        weft_channel_t *ch = auth_channel(srv->addr, secret);
        weft_iobuf_t in = WEFT_IOBUF_INIT, out = WEFT_IOBUF_INIT;
        if (m == 0)
            rt_pack_echo(&in, "x");
        else
            weft_iobuf_append(&in, "\xff\xff", 2); /* not an EchoRequest */
        weft_controller_t *cntl = weft_controller_new();
        int rc = weft_channel_call_raw(ch, "weft.test.TestService", methods[m], cntl, &in, &out);
        WT_EQ(rc, m == 0 ? WEFT_ENOMETHOD : WEFT_EREQUEST);
        weft_controller_reset(cntl);
        rc = rt_echo(ch, cntl, "now a good call");
        WT_ASSERT_MSG(rc == 0, "after a first call that failed with %d, the next call failed: %d (%s)",
                      m == 0 ? WEFT_ENOMETHOD : WEFT_EREQUEST, rc,
                      weft_controller_error_text(cntl));
        weft_controller_free(cntl);
        weft_iobuf_clear(&in);
        weft_iobuf_clear(&out);
        weft_channel_free(ch);
    }
    WT_EQ(RT_LOAD(&st.refused), 0);
    rt_server_free(srv);
}

/* ---- limits ---- */

static void max_concurrency(void)
{
    weft_server_options_t so = {.max_concurrency = 4};
    weft_channel_options_t o = rt_opts();
    o.max_retries = 0;
    fixture_t f = fx_open(&so, &o);
    enum { N = 10 };
    weft_countdown_t left;
    weft_countdown_init(&left, N);
    rt_async_t *a = rt_async_new(N, &left);
    for (int i = 0; i < N; i++)
        WT_EQ(rt_sleep_async(f.ch, &a[i], 400), 0);
    weft_countdown_wait(&left);
    int ok = 0, limited = 0;
    for (int i = 0; i < N; i++) {
        WT_EQ(a[i].done_runs, 1);
        ok += a[i].error == 0;
        limited += a[i].error == WEFT_ELIMIT;
    }
    WT_NOTE("max_concurrency 4, 10 calls at once: %d ok, %d ELIMIT", ok, limited);
    WT_EQ(ok, 4);
    WT_EQ(limited, N - 4);
    WT_EQ(RT_LOAD(&f.srv->max_sleeping), 4);
    /* the slots come back (just after each reply is written) */
    RT_AWAIT(rt_stats(f.srv).inflight == 0, 5000);
    for (int i = 0; i < 4; i++)
        WT_EQ(rt_echo1(f.ch, "again"), 0);
    rt_async_free(a, N);
    fx_close(&f);
}

/* ---- asynchronous calls ---- */

static void async_calls(void)
{
    fixture_t f = fx_open(NULL, NULL);
    enum { N = 200 };
    weft_countdown_t left;
    weft_countdown_init(&left, N);
    rt_async_t *a = rt_async_new(N, &left);
    for (int i = 0; i < N; i++)
        WT_EQ(rt_echo_async(f.ch, &a[i]), 0);
    weft_countdown_wait(&left);
    for (int i = 0; i < N; i++) {
        WT_EQ(weft_controller_join(a[i].cntl), 0);
        WT_EQ(a[i].error, 0);
        WT_ASSERT(a[i].in_fiber);
    }
    rt_sleep_ms(50); /* nothing runs twice */
    for (int i = 0; i < N; i++)
        WT_EQ(RT_LOAD(&a[i].done_runs), 1);
    rt_async_free(a, N);

    /* a missing done is refused at once */
    weft_controller_t *cntl = weft_controller_new();
    Weft__Test__EchoRequest req = WEFT__TEST__ECHO_REQUEST__INIT;
    req.message = "x";
    WT_NE(weft_channel_call_async(f.ch, &weft__test__test_service__descriptor, 0, cntl, &req.base,
                                  NULL, NULL),
          0);
    WT_EQ(weft_controller_join(cntl), 0); /* nothing to wait for */
    weft_controller_free(cntl);
    fx_close(&f);
}

/* join returns only after done has returned. */
typedef struct slow_done {
    int32_t entered, returned;
} slow_done_t;

static void on_sleep_slowly(weft_controller_t *cntl, Weft__Test__SleepResponse *resp, void *arg)
{
    slow_done_t *s = arg;
    WT_EQ(weft_controller_error_code(cntl), 0);
    weft__test__sleep_response__free_unpacked(resp, NULL);
    RT_STORE(&s->entered, 1);
    rt_sleep_ms(100);
    RT_STORE(&s->returned, 1);
}

static void async_join(void)
{
    fixture_t f = fx_open(NULL, NULL);
    weft_controller_t *cntl = weft_controller_new();
    slow_done_t s = {0, 0};
    Weft__Test__SleepRequest req = WEFT__TEST__SLEEP_REQUEST__INIT;
    req.ms = 30;
    WT_EQ(weft__test__test_service__sleep_call_async(f.ch, cntl, &req, on_sleep_slowly, &s), 0);
    WT_EQ(weft_controller_join(cntl), 0);
    WT_EQ(RT_LOAD(&s.entered), 1);
    WT_EQ(RT_LOAD(&s.returned), 1);
    /* reset (which joins) then reuse for a sync call */
    weft_controller_reset(cntl);
    WT_EQ(rt_echo(f.ch, cntl, "reuse"), 0);
    weft_controller_free(cntl);
    fx_close(&f);
}

static void async_cancel(void)
{
    fixture_t f = fx_open(NULL, NULL);
    rt_async_t *a = rt_async_new(1, NULL);
    WT_EQ(rt_sleep_async(f.ch, a, 500), 0);
    rt_sleep_ms(50);
    int64_t t0 = rt_now();
    weft_controller_cancel(a->cntl);
    WT_EQ(weft_controller_join(a->cntl), 0);
    int64_t took = rt_now() - t0;
    WT_EQ(RT_LOAD(&a->done_runs), 1);
    WT_EQ(a->error, ECANCELED);
    WT_NOTE("async cancel to done: %.2f ms", rt_ms(took));
    WT_LT(took, 300 * WEFT_NS_PER_MS);
    weft_controller_cancel(a->cntl); /* after the end: nothing */
    RT_AWAIT(RT_LOAD(&f.srv->sleeping) == 0, 5000);
    rt_sleep_ms(50); /* the late reply came and was dropped */
    WT_EQ(RT_LOAD(&a->done_runs), 1);
    rt_async_free(a, 1);
    /* the connection serves on */
    WT_EQ(rt_echo1(f.ch, "after cancel"), 0);
    fx_close(&f);
}

/* Cancelling a synchronous call from another fiber. */
typedef struct sync_cancel {
    weft_channel_t *ch;
    weft_controller_t *cntl;
    int rc;
    int64_t end_ns;
} sync_cancel_t;

static void sync_sleeper(void *arg)
{
    sync_cancel_t *s = arg;
    s->rc = rt_sleep_call(s->ch, s->cntl, 500, 1);
    s->end_ns = rt_now();
}

static void sync_cancel(void)
{
    fixture_t f = fx_open(NULL, NULL);
    sync_cancel_t s = {f.ch, weft_controller_new(), -1, 0};
    weft_fiber_t id = rt_fiber(sync_sleeper, &s);
    RT_AWAIT(RT_LOAD(&f.srv->sleeping) == 1, 5000);
    int64_t t0 = rt_now();
    weft_controller_cancel(s.cntl);
    WT_EQ(weft_fiber_join(id), 0);
    WT_EQ(s.rc, ECANCELED);
    WT_LT(s.end_ns - t0, 300 * WEFT_NS_PER_MS);
    weft_controller_free(s.cntl);
    fx_close(&f);
}

/* weft_channel_free waits for the channel's asynchronous calls. */
static void channel_free_waits(void)
{
    rt_server_t *srv = rt_server_start(NULL, NULL, 1);
    weft_channel_options_t o = rt_opts();
    weft_channel_t *ch = rt_channel(srv->addr, &o);
    enum { N = 20 };
    rt_async_t *a = rt_async_new(N, NULL);
    int64_t t0 = rt_now();
    for (int i = 0; i < N; i++)
        WT_EQ(rt_sleep_async(ch, &a[i], 150), 0);
    weft_channel_free(ch);
    int64_t took = rt_now() - t0;
    for (int i = 0; i < N; i++) {
        WT_EQ(RT_LOAD(&a[i].done_runs), 1);
        WT_EQ(a[i].error, 0);
    }
    WT_GE(took, 140 * WEFT_NS_PER_MS);
    rt_async_free(a, N);
    rt_server_free(srv);
}

/* weft_channel_call_async "starts the call and returns at once": also when
 * the server is down and its node is backing off between connects. */
static void async_returns_at_once(void)
{
    rt_server_t *srv = rt_server_start(NULL, NULL, 1);
    char addr[128];
    snprintf(addr, sizeof(addr), "%s", srv->addr);
    rt_server_free(srv); /* nobody listens there now */
    weft_channel_options_t o = rt_opts();
    o.timeout_ms = 3000;
    weft_channel_t *ch = rt_channel(addr, &o);
    enum { N = 12 };
    weft_countdown_t left;
    weft_countdown_init(&left, N);
    rt_async_t *a = rt_async_new(N, &left);
    int64_t worst = 0, total = 0;
    for (int i = 0; i < N; i++) {
        int64_t t0 = rt_now();
        WT_EQ(rt_echo_async(ch, &a[i]), 0);
        int64_t took = rt_now() - t0;
        total += took;
        worst = took > worst ? took : worst;
    }
    WT_NOTE("%d async calls to a dead server: call_async took %.1f ms in all, %.1f ms at most",
            N, rt_ms(total), rt_ms(worst));
    WT_LT(worst, 20 * WEFT_NS_PER_MS);
    weft_countdown_wait(&left);
    for (int i = 0; i < N; i++)
        WT_ASSERT(a[i].error == ECONNREFUSED || a[i].error == WEFT_ERPCTIMEDOUT);
    rt_async_free(a, N);
    weft_channel_free(ch);
}

/* Channels to a unix socket path. */
static void unix_socket(void)
{
    char path[128];
    snprintf(path, sizeof(path), "unix:/tmp/weft-rpc-test-%d.sock", (int)getpid());
    unlink(path + 5);
    rt_server_t *srv = rt_server_start(NULL, path, 1);
    WT_STREQ(srv->addr, path);
    weft_channel_options_t o = rt_opts();
    weft_channel_t *ch = rt_channel(path, &o);
    echo_calls(ch, 20);
    echo_big(ch, 0, 4 * RT_MiB, 1000, 8);
    weft_channel_free(ch);
    rt_server_free(srv);
    unlink(path + 5);
}

/* A done callback that frees its own controller, as brpc programs do
 * (`std::unique_ptr<Controller> guard(cntl)`): the framework must not use
 * the controller once done has returned, nor deadlock in free. */
typedef struct self_free {
    int32_t freed;
} self_free_t;

static void on_echo_free_cntl(weft_controller_t *cntl, Weft__Test__EchoResponse *resp, void *arg)
{
    self_free_t *s = arg;
    if (resp)
        weft__test__echo_response__free_unpacked(resp, NULL);
    weft_controller_free(cntl);
    RT_ADD(&s->freed, 1);
}

static void async_free_cntl_in_done(void)
{
    fixture_t f = fx_open(NULL, NULL);
    enum { N = 50 };
    self_free_t s = {0};
    for (int i = 0; i < N; i++) {
        weft_controller_t *cntl = weft_controller_new();
        Weft__Test__EchoRequest req = WEFT__TEST__ECHO_REQUEST__INIT;
        req.message = "self";
        WT_EQ(weft__test__test_service__echo_call_async(f.ch, cntl, &req, on_echo_free_cntl, &s),
              0);
    }
    int64_t end = rt_now() + 3 * WEFT_NS_PER_SEC;
    while (RT_LOAD(&s.freed) < N && rt_now() < end)
        rt_sleep_ms(1);
    WT_ASSERT_MSG(RT_LOAD(&s.freed) == N,
                  "only %d of %d done callbacks returned from weft_controller_free(cntl)",
                  RT_LOAD(&s.freed), N);
    fx_close(&f);
}

/* The usual shutdown: wait for the last done to signal, then free the
 * channel at once. The framework's own bookkeeping after done must not
 * touch the freed channel (run under ASan to see it). */
static void on_echo_post(weft_controller_t *cntl, Weft__Test__EchoResponse *resp, void *arg)
{
    WT_EQ(weft_controller_error_code(cntl), 0);
    weft__test__echo_response__free_unpacked(resp, NULL);
    weft_sem_post(arg, 1);
}

static void channel_free_right_after_done(void)
{
    rt_server_t *srv = rt_server_start(NULL, NULL, 1);
    weft_channel_options_t o = rt_opts();
    weft_controller_t *cntl = weft_controller_new();
    weft_sem_t sem;
    weft_sem_init(&sem, 0);
    long n = wt_scaled(2000);
    for (long i = 0; i < n; i++) {
        weft_channel_t *ch = rt_channel(srv->addr, &o);
        weft_controller_reset(cntl);
        Weft__Test__EchoRequest req = WEFT__TEST__ECHO_REQUEST__INIT;
        req.message = "bye";
        WT_EQ(weft__test__test_service__echo_call_async(ch, cntl, &req, on_echo_post, &sem), 0);
        weft_sem_wait(&sem);
        weft_channel_free(ch);
    }
    weft_controller_free(cntl);
    rt_server_free(srv);
}

/* ---- a protoc-c style service ---- */

typedef struct protoc_impl {
    Weft__Test__TestService_Service base;
    int32_t calls;
} protoc_impl_t;

static protoc_impl_t *impl_of(Weft__Test__TestService_Service *svc)
{
    return (protoc_impl_t *)svc;
}

/* Every method checks that weft_controller_current() describes it. */
static weft_controller_t *current_for(Weft__Test__TestService_Service *svc, const char *method)
{
    RT_ADD(&impl_of(svc)->calls, 1);
    weft_controller_t *cntl = weft_controller_current();
    WT_ASSERT(cntl);
    WT_STREQ(weft_controller_method_name(cntl), method);
    WT_STREQ(weft_controller_service_name(cntl), "weft.test.TestService");
    return cntl;
}

static void p_echo(Weft__Test__TestService_Service *svc, const Weft__Test__EchoRequest *in,
                   Weft__Test__EchoResponse_Closure closure, void *data)
{
    weft_controller_t *cntl = current_for(svc, "Echo");
    Weft__Test__EchoResponse out = WEFT__TEST__ECHO_RESPONSE__INIT;
    char *msg = weft_controller_alloc(cntl, strlen(in->message) + 3);
    sprintf(msg, "p:%s", in->message);
    out.message = msg;
    WT_EQ(weft_iobuf_append_buf(weft_controller_response_attachment(cntl),
                                weft_controller_request_attachment(cntl)),
          0);
    closure(&out, data);
}

/* Answers from another fiber, with the response on that fiber's stack. */
typedef struct p_later {
    Weft__Test__SleepResponse_Closure closure;
    void *data;
    int ms, tag;
} p_later_t;

static void p_later_fiber(void *arg)
{
    p_later_t z = *(p_later_t *)arg;
    free(arg);
    rt_sleep_ms(z.ms);
    WT_ASSERT(!weft_controller_current());
    Weft__Test__SleepResponse out = WEFT__TEST__SLEEP_RESPONSE__INIT;
    out.tag = z.tag;
    z.closure(&out, z.data);
}

static void p_sleep(Weft__Test__TestService_Service *svc, const Weft__Test__SleepRequest *in,
                    Weft__Test__SleepResponse_Closure closure, void *data)
{
    current_for(svc, "Sleep");
    p_later_t *z = malloc(sizeof(*z));
    WT_ASSERT(z);
    *z = (p_later_t){closure, data, in->ms, in->has_tag ? in->tag : 0};
    rt_fiber(p_later_fiber, z);
}

static void p_fail(Weft__Test__TestService_Service *svc, const Weft__Test__FailRequest *in,
                   Weft__Test__FailResponse_Closure closure, void *data)
{
    weft_controller_t *cntl = current_for(svc, "Fail");
    if (in->has_code && in->code) {
        weft_controller_set_failed(cntl, in->code, "%s", in->text ? in->text : "");
        closure(NULL, data);
        return;
    }
    Weft__Test__FailResponse out = WEFT__TEST__FAIL_RESPONSE__INIT;
    if (!in->skip_required)
        out.required_field = "set";
    closure(&out, data);
}

static void p_nested(Weft__Test__TestService_Service *svc, const Weft__Test__Node *in,
                     Weft__Test__Node_Closure closure, void *data)
{
    current_for(svc, "Nested");
    closure(in, data);
}

/* Returns no response and sets no error: an internal failure. */
static void p_inspect(Weft__Test__TestService_Service *svc, const Weft__Test__InspectRequest *in,
                      Weft__Test__InspectResponse_Closure closure, void *data)
{
    (void)in;
    current_for(svc, "Inspect");
    closure(NULL, data);
}

static void p_flaky(Weft__Test__TestService_Service *svc, const Weft__Test__SleepRequest *in,
                    Weft__Test__SleepResponse_Closure closure, void *data)
{
    current_for(svc, "Flaky");
    Weft__Test__SleepResponse out = WEFT__TEST__SLEEP_RESPONSE__INIT;
    out.tag = in->tag;
    closure(&out, data);
}

static void p_destroy(Weft__Test__TestService_Service *svc)
{
    (void)svc;
}

static weft_server_t *protoc_server(protoc_impl_t *impl, char *addr, size_t addrlen)
{
    *impl = (protoc_impl_t){.base = WEFT__TEST__TEST_SERVICE__INIT(p_)};
    impl->base.base.destroy = (void (*)(ProtobufCService *))p_destroy;
    weft_server_t *s;
    WT_EQ(weft_server_new(&s, NULL), 0);
    WT_EQ(weft_server_add_protoc_service(s, &impl->base.base), 0);
    WT_EQ(weft_server_add_protoc_service(s, &impl->base.base), -EEXIST);
    WT_EQ(weft_server_start(s, "127.0.0.1:0"), 0);
    WT_EQ(weft_server_add_protoc_service(s, &impl->base.base), -EBUSY);
    weft_endpoint_format(weft_server_endpoint(s), addr, addrlen);
    return s;
}

static void protoc_service(void)
{
    protoc_impl_t impl;
    char addr[128];
    weft_server_t *s = protoc_server(&impl, addr, sizeof(addr));
    weft_channel_options_t o = rt_opts();
    weft_channel_t *ch = rt_channel(addr, &o);
    weft_controller_t *cntl = weft_controller_new();

    Weft__Test__EchoRequest req = WEFT__TEST__ECHO_REQUEST__INIT;
    req.message = "hi";
    rt_append_pattern(weft_controller_request_attachment(cntl), 70000, 9);
    Weft__Test__EchoResponse *resp = NULL;
    WT_EQ(weft__test__test_service__echo_call(ch, cntl, &req, &resp), 0);
    WT_STREQ(resp->message, "p:hi");
    WT_EQ(rt_check_pattern(weft_controller_response_attachment(cntl), 9), 70000);
    weft__test__echo_response__free_unpacked(resp, NULL);

    weft_controller_reset(cntl);
    WT_EQ(rt_sleep_call(ch, cntl, 20, 77), 0);

    weft_controller_reset(cntl);
    WT_EQ(fail_call(ch, cntl, 4321, "protoc says no", false), 4321);
    WT_STREQ(weft_controller_error_text(cntl), "protoc says no");
    weft_controller_reset(cntl);
    WT_EQ(fail_call(ch, cntl, 0, NULL, true), WEFT_ERESPONSE);
    weft_controller_reset(cntl);
    WT_EQ(fail_call(ch, cntl, 0, NULL, false), 0);

    Weft__Test__Node *chain = rt_chain(30);
    Weft__Test__Node *nresp = NULL;
    weft_controller_reset(cntl);
    WT_EQ(weft__test__test_service__nested_call(ch, cntl, chain, &nresp), 0);
    WT_EQ(rt_chain_depth(nresp, 0), 30);
    weft__test__node__free_unpacked(nresp, NULL);
    free(chain);

    Weft__Test__InspectRequest ireq = WEFT__TEST__INSPECT_REQUEST__INIT;
    Weft__Test__InspectResponse *iresp = NULL;
    weft_controller_reset(cntl);
    WT_EQ(weft__test__test_service__inspect_call(ch, cntl, &ireq, &iresp), WEFT_EINTERNAL);
    WT_EQ(RT_LOAD(&impl.calls), 7);

    weft_controller_free(cntl);
    weft_channel_free(ch);
    WT_EQ(weft_server_stop(s), 0);
    WT_EQ(weft_server_join(s), 0);
    weft_server_free(s);
}

/* protoc-c's service struct may leave a method NULL (not implemented):
 * a request for it must get ENOMETHOD, not crash the server. */
static void protoc_null_method(void)
{
    protoc_impl_t impl;
    char addr[128];
    weft_server_t *s = protoc_server(&impl, addr, sizeof(addr));
    impl.base.flaky = NULL;
    weft_channel_options_t o = rt_opts();
    o.max_retries = 0;
    weft_channel_t *ch = rt_channel(addr, &o);
    weft_controller_t *cntl = weft_controller_new();
    Weft__Test__SleepRequest req = WEFT__TEST__SLEEP_REQUEST__INIT;
    Weft__Test__SleepResponse *resp = NULL;
    WT_EQ(weft__test__test_service__flaky_call(ch, cntl, &req, &resp), WEFT_ENOMETHOD);
    weft_controller_reset(cntl);
    /* The server still serves the other methods (this service prefixes
     * its echoes with "p:"). */
    Weft__Test__EchoRequest ereq = WEFT__TEST__ECHO_REQUEST__INIT;
    ereq.message = "still up";
    Weft__Test__EchoResponse *eresp = NULL;
    WT_EQ(weft__test__test_service__echo_call(ch, cntl, &ereq, &eresp), 0);
    WT_STREQ(eresp->message, "p:still up");
    weft__test__echo_response__free_unpacked(eresp, NULL);
    weft_controller_free(cntl);
    weft_channel_free(ch);
    WT_EQ(weft_server_stop(s), 0);
    WT_EQ(weft_server_join(s), 0);
    weft_server_free(s);
}

/* Stub handlers left NULL answer ENOMETHOD (docs/stubs.md). */
static void stub_unimplemented(void)
{
    static const Weft__Test__TestService_Handlers only_echo = {.echo = NULL};
    weft_server_t *s;
    WT_EQ(weft_server_new(&s, NULL), 0);
    WT_EQ(weft__test__test_service__register(s, &only_echo), 0);
    WT_EQ(weft__test__test_service__register(s, &only_echo), -EEXIST);
    WT_EQ(weft_server_start(s, "127.0.0.1:0"), 0);
    char addr[128];
    weft_endpoint_format(weft_server_endpoint(s), addr, sizeof(addr));
    weft_channel_options_t o = rt_opts();
    weft_channel_t *ch = rt_channel(addr, &o);
    weft_controller_t *cntl = weft_controller_new();
    WT_EQ(rt_echo(ch, cntl, "nobody"), WEFT_ENOMETHOD);
    WT_ASSERT(strstr(weft_controller_error_text(cntl), "not implemented"));
    weft_controller_free(cntl);
    weft_channel_free(ch);
    weft_server_free(s); /* joins a started server */
}

static const rt_case_t cases[] = {
    RT_CASE(echo_sync),
    RT_THREAD_CASE(echo_from_thread),
    RT_CASE(generic_and_raw),
    RT_CASE(unknown_service_method),
    RT_CASE(handler_failures),
    RT_CASE(request_metadata),
    RT_CASE(nested),
    RT_CASE(nested_deep_limit),
    RT_CASE(max_nesting_over_100),
    RT_CASE(attachments_16m),
    RT_CASE(compression),
    RT_CASE(checksum),
    RT_CASE(authentication),
    RT_CASE(auth_after_failed_first_call),
    RT_CASE(max_concurrency),
    RT_CASE(async_calls),
    RT_CASE(async_join),
    RT_CASE(async_cancel),
    RT_CASE(sync_cancel),
    RT_CASE(channel_free_waits),
    RT_CASE(async_returns_at_once),
    RT_CASE(unix_socket),
    RT_THREAD_CASE(async_free_cntl_in_done),
    RT_THREAD_CASE(channel_free_right_after_done),
    RT_CASE(protoc_service),
    RT_CASE(protoc_null_method),
    RT_CASE(stub_unimplemented),
};

int main(int argc, char **argv)
{
    rt_run_cases(argc, argv, cases, RT_NCASES(cases));
    WT_EQ(weft_fiber_shutdown(), 0);
    return 0;
}
