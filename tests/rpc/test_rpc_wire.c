/*
 * test_rpc_wire.c - the server's side of the baidu_std wire contract,
 * checked byte by byte from a raw client.
 *
 * Why: weft must interoperate with brpc, and a peer's bytes must never
 * crash or confuse the server. So this test does not use weft's client: it
 * writes frames with plain POSIX sockets (headers by hand, RpcMeta packed by
 * protobuf-c from proto/baidu_rpc_meta.proto) and decodes every reply by
 * hand, checking what specs/baidu_std.md promises: the "PRPC" magic,
 * body_size = meta + payload, the correlation id echoed bit for bit (a large
 * negative int64), error replies with a code, a text and no payload, the
 * order of the server's checks, compression (gzip and zlib decoded here
 * with zlib itself), the CRC32C checksum (computed here bit by bit), and
 * that broken frames close the connection (or get 1003) while the server
 * stays healthy for everyone else.
 *
 * The client's side the other way round: a weft channel calls a server
 * written here by hand, which checks every request field the channel sets
 * and answers as a brpc server would (out of order, with error codes,
 * compressed by zlib, with checksums, and with broken frames).
 */
#include "rpc_test_util.h"

#include <zlib.h>

#define CID ((int64_t)-0x7edcba9876543210LL) /* a large negative correlation id */
#define WAIT_MS 5000

/* ---- independent codecs ---- */

/* CRC-32C, one bit at a time (Castagnoli, reflected 0x82F63B78). */
static uint32_t crc32c_bitwise(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    }
    return ~c;
}

/* The checksum_value the spec wants for these message bytes. */
static void checksum_value(const uint8_t *p, size_t n, uint8_t out[4])
{
    uint32_t c = crc32c_bitwise(p, n);
    uint32_t m = ((c >> 15) | (c << 17)) + 0xa282ead8u;
    out[0] = (uint8_t)(m >> 24);
    out[1] = (uint8_t)(m >> 16);
    out[2] = (uint8_t)(m >> 8);
    out[3] = (uint8_t)m;
}

/* zlib's own deflate/inflate: windowBits 15+16 is gzip, 15 is zlib. */
static int window_bits(int type)
{
    return type == WEFT_COMPRESS_GZIP ? 15 + 16 : 15;
}

static uint8_t *z_compress(int type, const uint8_t *in, size_t n, size_t *out_len)
{
    z_stream z = {0};
    WT_EQ(deflateInit2(&z, 6, Z_DEFLATED, window_bits(type), 8, Z_DEFAULT_STRATEGY), Z_OK);
    size_t cap = deflateBound(&z, (uLong)n) + 64;
    uint8_t *out = malloc(cap);
    WT_ASSERT(out);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    WT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
    *out_len = z.total_out;
    deflateEnd(&z);
    return out;
}

static uint8_t *z_decompress(int type, const uint8_t *in, size_t n, size_t *out_len)
{
    z_stream z = {0};
    WT_EQ(inflateInit2(&z, window_bits(type)), Z_OK);
    size_t cap = 1 << 20;
    uint8_t *out = malloc(cap);
    WT_ASSERT(out);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    int rc = inflate(&z, Z_FINISH);
    WT_ASSERT_MSG(rc == Z_STREAM_END, "the reply does not inflate as type %d: %d", type, rc);
    WT_EQ(z.avail_in, 0);
    *out_len = z.total_out;
    inflateEnd(&z);
    return out;
}

/* ---- helpers ---- */

static rt_server_t *wire_server(const weft_server_options_t *o)
{
    return rt_server_start(o, NULL, 7);
}

static int connect_to(const rt_server_t *s)
{
    return rt_raw_connect(weft_server_endpoint(s->server));
}

/* A successful Echo reply to `cid` carrying `text` (and the attachment of
 * att_len bytes, if any); checks every field the spec fixes. */
static void check_echo_reply(const rt_reply_t *r, int64_t cid, const char *text,
                             const uint8_t *att, size_t att_len)
{
    WT_EQ(rt_reply_code(r), 0);
    WT_EQ(r->meta->correlation_id, cid);
    WT_ASSERT(!r->meta->response->error_text || !r->meta->response->error_text[0]);
    WT_EQ(r->body_size, r->meta_size + r->payload_len);
    size_t a = r->meta->has_attachment_size ? (size_t)r->meta->attachment_size : 0;
    WT_EQ(a, att_len);
    WT_LE(a, r->payload_len);
    if (att_len)
        WT_ASSERT(!memcmp(r->payload + r->payload_len - a, att, a));
    const uint8_t *msg = r->payload;
    size_t msg_len = r->payload_len - a;
    uint8_t *plain = NULL;
    int type = r->meta->has_compress_type ? r->meta->compress_type : 0;
    if (type) {
        plain = z_decompress(type, msg, msg_len, &msg_len);
        msg = plain;
    }
    Weft__Test__EchoResponse *er = weft__test__echo_response__unpack(NULL, msg_len, msg);
    WT_ASSERT_MSG(er, "the reply's message does not parse");
    WT_STREQ(er->message, text);
    WT_EQ(er->server_id, 7);
    weft__test__echo_response__free_unpacked(er, NULL);
    free(plain);
}

/* One valid Echo on a fresh connection, and one through a weft channel. */
static void assert_healthy(rt_server_t *s)
{
    int fd = connect_to(s);
    size_t n;
    uint8_t *msg = rt_echo_bytes("healthy", &n);
    rt_req_t rq = {.correlation_id = 42};
    rt_frame_t f = rt_request_frame(&rq, msg, n);
    rt_reply_t r;
    WT_EQ(rt_raw_call(fd, &f, &r, WAIT_MS), 1);
    check_echo_reply(&r, 42, "healthy", NULL, 0);
    rt_reply_free(&r);
    rt_frame_free(&f);
    free(msg);
    close(fd);
    weft_channel_options_t o = rt_opts();
    weft_channel_t *ch = rt_channel(s->addr, &o);
    WT_EQ(rt_echo1(ch, "healthy too"), 0);
    weft_channel_free(ch);
}

/* Sends bytes on a new connection and expects the server to close it
 * without a single byte of reply. */
static void expect_closed(rt_server_t *s, const void *bytes, size_t n, const char *what)
{
    int fd = connect_to(s);
    rt_write_all(fd, bytes, n); /* the server may close before all is written */
    int64_t t0 = rt_now();
    WT_ASSERT_MSG(rt_raw_closed(fd, WAIT_MS), "%s: the connection was not closed", what);
    WT_LT(rt_now() - t0, 3 * WEFT_NS_PER_SEC);
    close(fd);
}

static void expect_closed_frame(rt_server_t *s, rt_frame_t f, const char *what)
{
    expect_closed(s, f.bytes, f.len, what);
    rt_frame_free(&f);
}

/* Sends one request frame on fd and checks for an error reply. */
static void expect_error(int fd, rt_frame_t f, int code, int64_t cid)
{
    rt_reply_t r;
    WT_ASSERT_MSG(rt_raw_call(fd, &f, &r, WAIT_MS) == 1, "no %d reply: the connection closed",
                  code);
    rt_check_error_reply(&r, code, cid);
    rt_reply_free(&r);
    rt_frame_free(&f);
}

/* ---- replies ---- */

static void echo_reply_bytes(void)
{
    rt_server_t *s = wire_server(NULL);
    int fd = connect_to(s);
    size_t n;
    uint8_t *msg = rt_echo_bytes("wire", &n);

    /* no attachment */
    rt_req_t rq = {.correlation_id = CID};
    rt_frame_t f = rt_request_frame(&rq, msg, n);
    rt_reply_t r;
    WT_EQ(rt_raw_call(fd, &f, &r, WAIT_MS), 1);
    check_echo_reply(&r, CID, "wire", NULL, 0);
    WT_ASSERT(!r.meta->has_compress_type || r.meta->compress_type == 0);
    WT_ASSERT(!r.meta->has_checksum_type || r.meta->checksum_type == 0);
    rt_reply_free(&r);
    rt_frame_free(&f);

    /* with an attachment, on the same connection; other extreme ids */
    uint8_t att[1000];
    for (size_t i = 0; i < sizeof(att); i++)
        att[i] = (uint8_t)(i ^ 0x5a);
    uint8_t *payload = malloc(n + sizeof(att));
    memcpy(payload, msg, n);
    memcpy(payload + n, att, sizeof(att));
    const int64_t ids[] = {INT64_MIN, -1, 0, INT64_MAX};
    for (int i = 0; i < 4; i++) {
        rt_req_t ra = {.correlation_id = ids[i], .attachment_size = (int32_t)sizeof(att)};
        f = rt_request_frame(&ra, payload, n + sizeof(att));
        WT_EQ(rt_raw_call(fd, &f, &r, WAIT_MS), 1);
        check_echo_reply(&r, ids[i], "wire", att, sizeof(att));
        rt_reply_free(&r);
        rt_frame_free(&f);
    }
    free(payload);
    free(msg);
    close(fd);
    rt_server_free(s);
}

/* Two requests in one write: the quick one is answered first (session
 * mode: matched by correlation id, not by order). */
static void pipelined_out_of_order(void)
{
    rt_server_t *s = wire_server(NULL);
    int fd = connect_to(s);
    Weft__Test__SleepRequest sr = WEFT__TEST__SLEEP_REQUEST__INIT;
    sr.ms = 300;
    uint8_t sbuf[32];
    size_t sn = protobuf_c_message_pack(&sr.base, sbuf);
    size_t en;
    uint8_t *ebuf = rt_echo_bytes("fast", &en);
    rt_req_t slow = {.method = "Sleep", .correlation_id = CID};
    rt_req_t fast = {.correlation_id = CID + 1};
    rt_frame_t f1 = rt_request_frame(&slow, sbuf, sn), f2 = rt_request_frame(&fast, ebuf, en);
    uint8_t *both = malloc(f1.len + f2.len);
    memcpy(both, f1.bytes, f1.len);
    memcpy(both + f1.len, f2.bytes, f2.len);
    WT_ASSERT(rt_write_all(fd, both, f1.len + f2.len));
    rt_reply_t r;
    WT_EQ(rt_read_reply(fd, &r, WAIT_MS), 1);
    check_echo_reply(&r, CID + 1, "fast", NULL, 0);
    rt_reply_free(&r);
    WT_EQ(rt_read_reply(fd, &r, WAIT_MS), 1);
    WT_EQ(rt_reply_code(&r), 0);
    WT_EQ(r.meta->correlation_id, CID);
    rt_reply_free(&r);
    free(both);
    free(ebuf);
    rt_frame_free(&f1);
    rt_frame_free(&f2);
    close(fd);
    rt_server_free(s);
}

static void service_errors(void)
{
    rt_server_t *s = wire_server(NULL);
    int fd = connect_to(s);
    size_t n;
    uint8_t *msg = rt_echo_bytes("x", &n);
    struct {
        const char *service, *method;
        int code;
    } cases[] = {
        {"weft.test.Nope", "Echo", WEFT_ENOSERVICE},
        {"Nope", "Echo", WEFT_ENOSERVICE},
        {"", "Echo", WEFT_ENOSERVICE},
        {"weft.test.TestService", "Nope", WEFT_ENOMETHOD},
        {"TestService", "", WEFT_ENOMETHOD},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rt_req_t rq = {.service = cases[i].service, .method = cases[i].method,
                       .correlation_id = CID - (int64_t)i};
        expect_error(fd, rt_request_frame(&rq, msg, n), cases[i].code, CID - (int64_t)i);
    }
    /* the short name works, on the same connection */
    rt_req_t rq = {.service = "TestService", .correlation_id = 5};
    rt_frame_t f = rt_request_frame(&rq, msg, n);
    rt_reply_t r;
    WT_EQ(rt_raw_call(fd, &f, &r, WAIT_MS), 1);
    check_echo_reply(&r, 5, "x", NULL, 0);
    rt_reply_free(&r);
    rt_frame_free(&f);
    free(msg);
    close(fd);
    rt_server_free(s);
}

/* ---- frames the server must close on ---- */

static void bad_frames_close(void)
{
    weft_server_options_t o = {.max_body_size = RT_MiB};
    rt_server_t *s = wire_server(&o);
    size_t n;
    uint8_t *msg = rt_echo_bytes("x", &n);
    rt_req_t rq = {.correlation_id = CID};
    rt_frame_t good = rt_request_frame(&rq, msg, n);
    uint32_t mlen = (uint32_t)(good.len - 12 - n);
    const uint8_t *meta = good.bytes + 12;

    expect_closed(s, "XXXXXXXXXXXXXXXXXXXX", 20, "bad magic");
    expect_closed(s, "prpc\0\0\0\0\0\0\0\0", 12, "lower-case magic");
    expect_closed(s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27, "bytes of no protocol");
    /* a good frame, then garbage: the reply comes, then the close */
    {
        int fd = connect_to(s);
        uint8_t *two = malloc(good.len + 12);
        memcpy(two, good.bytes, good.len);
        memcpy(two + good.len, "ZZZZZZZZZZZZ", 12);
        WT_ASSERT(rt_write_all(fd, two, good.len + 12));
        rt_reply_t r;
        WT_EQ(rt_read_reply(fd, &r, WAIT_MS), 1);
        check_echo_reply(&r, CID, "x", NULL, 0);
        rt_reply_free(&r);
        WT_ASSERT(rt_raw_closed(fd, WAIT_MS));
        free(two);
        close(fd);
    }
    /* body_size over max_body_size: closed on the header alone */
    expect_closed_frame(s, rt_frame_raw("PRPC", (uint32_t)RT_MiB + 1, mlen, NULL, 0, NULL, 0),
                        "body_size over the limit");
    expect_closed_frame(s, rt_frame_raw("PRPC", 0xffffffffu, 8, NULL, 0, NULL, 0),
                        "body_size 4 GiB");
    /* meta_size > body_size */
    expect_closed_frame(s, rt_frame_raw("PRPC", mlen, mlen + 1, meta, mlen, NULL, 0),
                        "meta_size > body_size");
    /* a truncated meta (half of it, the rest counted as payload) */
    expect_closed_frame(s, rt_frame_raw("PRPC", mlen, mlen / 2, meta, mlen, NULL, 0),
                        "truncated meta");
    /* a meta that is not protobuf at all */
    expect_closed_frame(s, rt_frame_raw("PRPC", 6, 6, "\xff\xff\xff\xff\xff\xff", 6, NULL, 0),
                        "garbage meta");
    /* meta_size 0: no request in it */
    expect_closed_frame(s, rt_frame_raw("PRPC", (uint32_t)n, 0, NULL, 0, msg, n), "empty meta");
    /* a response meta sent to a server */
    {
        Weft__Baidu__RpcMeta m = WEFT__BAIDU__RPC_META__INIT;
        Weft__Baidu__RpcResponseMeta rm = WEFT__BAIDU__RPC_RESPONSE_META__INIT;
        m.response = &rm;
        m.has_correlation_id = 1;
        m.correlation_id = CID;
        expect_closed_frame(s, rt_frame(&m, msg, n), "a response meta");
    }
    /* a request meta without its required method_name, by hand (protobuf-c
     * would pack a NULL required string as "") */
    {
        static const char svc[] = "weft.test.TestService";
        uint8_t buf[64];
        size_t k = 0;
        buf[k++] = 0x0a; /* RpcMeta.request */
        buf[k++] = (uint8_t)(2 + sizeof(svc) - 1);
        buf[k++] = 0x0a; /* RpcRequestMeta.service_name */
        buf[k++] = (uint8_t)(sizeof(svc) - 1);
        memcpy(buf + k, svc, sizeof(svc) - 1);
        k += sizeof(svc) - 1;
        expect_closed_frame(s, rt_frame_raw("PRPC", (uint32_t)k, (uint32_t)k, buf, k, NULL, 0),
                            "method_name missing");
    }
    /* a STRM frame where no stream was opened */
    expect_closed_frame(s, rt_frame_raw("STRM", mlen, mlen, meta, mlen, NULL, 0),
                        "stray stream frame");
    /* a body exactly at max_body_size is fine */
    {
        size_t att = RT_MiB - mlen - n - 8; /* the meta grows by its attachment_size field */
        uint8_t *payload = calloc(1, n + att);
        memcpy(payload, msg, n);
        rt_req_t ra = {.correlation_id = CID, .attachment_size = (int32_t)att};
        rt_frame_t f = rt_request_frame(&ra, payload, n + att);
        WT_LE(f.len - 12, RT_MiB);
        if (f.len - 12 < RT_MiB) { /* pad the attachment to land exactly on the limit */
            size_t extra = RT_MiB - (f.len - 12);
            rt_frame_free(&f);
            free(payload);
            att += extra;
            payload = calloc(1, n + att);
            memcpy(payload, msg, n);
            ra.attachment_size = (int32_t)att;
            f = rt_request_frame(&ra, payload, n + att);
        }
        WT_EQ(f.len - 12, RT_MiB);
        int fd = connect_to(s);
        rt_reply_t r;
        WT_EQ(rt_raw_call(fd, &f, &r, WAIT_MS), 1);
        WT_EQ(rt_reply_code(&r), 0);
        WT_EQ(r.meta->attachment_size, (int32_t)att);
        rt_reply_free(&r);
        rt_frame_free(&f);
        free(payload);
        close(fd);
    }
    WT_EQ(rt_calls(s, RT_ECHO), 2);
    assert_healthy(s);
    rt_frame_free(&good);
    free(msg);
    rt_server_free(s);
}

/* ---- requests the server answers with 1003 ---- */

/* Hand-built Node bytes nesting `levels` deep: each level is field 1
 * (tag 0x0a), a varint length, and the level inside. */
static uint8_t *deep_nodes(int levels, size_t *len)
{
    size_t cap = (size_t)levels * 6 + 16;
    uint8_t *buf = malloc(cap);
    WT_ASSERT(buf);
    size_t start = cap, inner = 0;
    buf[--start] = 0x01; /* innermost: value = 1 (field 2, varint) */
    buf[--start] = 0x10;
    inner = 2;
    for (int i = 0; i < levels; i++) {
        uint8_t v[5];
        int k = 0;
        size_t x = inner;
        do {
            v[k++] = (uint8_t)((x & 0x7f) | (x > 0x7f ? 0x80 : 0));
            x >>= 7;
        } while (x);
        start -= (size_t)k;
        memcpy(buf + start, v, (size_t)k);
        buf[--start] = 0x0a;
        inner = cap - start;
    }
    *len = cap - start;
    memmove(buf, buf + start, *len);
    return buf;
}

static void bad_requests_1003(void)
{
    rt_server_t *s = wire_server(NULL);
    int fd = connect_to(s);
    size_t n;
    uint8_t *msg = rt_echo_bytes("x", &n);

    /* attachment_size larger than the payload, and negative */
    rt_req_t rq = {.correlation_id = CID, .attachment_size = (int32_t)n + 1};
    expect_error(fd, rt_request_frame(&rq, msg, n), WEFT_EREQUEST, CID);
    rq.attachment_size = -5;
    expect_error(fd, rt_request_frame(&rq, msg, n), WEFT_EREQUEST, CID);
    /* a message that does not decode */
    rq = (rt_req_t){.correlation_id = CID};
    expect_error(fd, rt_request_frame(&rq, "\xff\xff\xff\xff\xff", 5), WEFT_EREQUEST, CID);
    /* a message missing its required field (EchoRequest.message) */
    expect_error(fd, rt_request_frame(&rq, "\x12\x01z", 3), WEFT_EREQUEST, CID);
    /* a message cut short */
    expect_error(fd, rt_request_frame(&rq, msg, n - 1), WEFT_EREQUEST, CID);
    /* nesting far past max_nesting: refused, not a stack overflow */
    int64_t t0 = rt_now();
    size_t dn;
    uint8_t *deep = deep_nodes(100000, &dn);
    rt_req_t rn = {.method = "Nested", .correlation_id = CID};
    expect_error(fd, rt_request_frame(&rn, deep, dn), WEFT_EREQUEST, CID);
    WT_NOTE("100000 levels of nesting (%zu bytes) refused in %.1f ms", dn, rt_ms(rt_now() - t0));
    free(deep);
    /* and 65 levels, one past the default */
    deep = deep_nodes(65, &dn);
    expect_error(fd, rt_request_frame(&rn, deep, dn), WEFT_EREQUEST, CID);
    free(deep);
    /* 64 is fine, on the same connection */
    deep = deep_nodes(64, &dn);
    rt_frame_t f = rt_request_frame(&rn, deep, dn);
    rt_reply_t r;
    WT_EQ(rt_raw_call(fd, &f, &r, WAIT_MS), 1);
    WT_EQ(rt_reply_code(&r), 0);
    WT_EQ(r.payload_len, dn);
    WT_ASSERT(!memcmp(r.payload, deep, dn));
    rt_reply_free(&r);
    rt_frame_free(&f);
    free(deep);
    WT_EQ(rt_calls(s, RT_ECHO), 0);
    WT_EQ(rt_calls(s, RT_NESTED), 1);
    close(fd);
    free(msg);
    assert_healthy(s);
    rt_server_free(s);
}

/* ---- compression and checksum on the wire ---- */

static void compressed_frames(void)
{
    rt_server_t *s = wire_server(NULL);
    int fd = connect_to(s);
    char text[4000];
    for (size_t i = 0; i < sizeof(text) - 1; i++)
        text[i] = "squeeze me "[i % 11];
    text[sizeof(text) - 1] = '\0';
    size_t n;
    uint8_t *msg = rt_echo_bytes(text, &n);
    const uint8_t att[] = "raw attachment, never compressed";
    const int types[] = {WEFT_COMPRESS_GZIP, WEFT_COMPRESS_ZLIB};
    for (int t = 0; t < 2; t++) {
        size_t zn;
        uint8_t *z = z_compress(types[t], msg, n, &zn);
        WT_LT(zn, n);
        uint8_t *payload = malloc(zn + sizeof(att));
        memcpy(payload, z, zn);
        memcpy(payload + zn, att, sizeof(att));
        rt_req_t rq = {.correlation_id = CID, .compress_type = types[t],
                       .attachment_size = (int32_t)sizeof(att)};
        rt_frame_t f = rt_request_frame(&rq, payload, zn + sizeof(att));
        rt_reply_t r;
        WT_EQ(rt_raw_call(fd, &f, &r, WAIT_MS), 1);
        /* the reply is compressed the same way (and check_echo_reply
         * inflates it with zlib); the attachment is not */
        WT_ASSERT(r.meta->has_compress_type);
        WT_EQ(r.meta->compress_type, types[t]);
        WT_LT(r.payload_len, n);
        check_echo_reply(&r, CID, text, att, sizeof(att));
        rt_reply_free(&r);
        rt_frame_free(&f);
        /* a corrupt stream of that type */
        z[zn / 2] ^= 0x55;
        z[zn - 1] ^= 0xff;
        rq.attachment_size = 0;
        expect_error(fd, rt_request_frame(&rq, z, zn), WEFT_EREQUEST, CID);
        /* plain bytes claimed to be compressed */
        expect_error(fd, rt_request_frame(&rq, msg, n), WEFT_EREQUEST, CID);
        free(payload);
        free(z);
    }
    /* snappy (1), lz4 (4) and nonsense types: 1003 */
    const int unsupported[] = {WEFT_COMPRESS_SNAPPY, 4, 99, -1};
    for (int i = 0; i < 4; i++) {
        rt_req_t rq = {.correlation_id = CID, .compress_type = unsupported[i]};
        expect_error(fd, rt_request_frame(&rq, msg, n), WEFT_EREQUEST, CID);
    }
    WT_EQ(rt_calls(s, RT_ECHO), 2);
    free(msg);
    close(fd);
    assert_healthy(s);
    rt_server_free(s);
}

static void checksum_frames(void)
{
    rt_server_t *s = wire_server(NULL);
    int fd = connect_to(s);
    size_t n;
    uint8_t *msg = rt_echo_bytes("summed", &n);
    const uint8_t att[] = "attachment bytes";
    uint8_t *payload = malloc(n + sizeof(att));
    memcpy(payload, msg, n);
    memcpy(payload + n, att, sizeof(att));

    rt_req_t rq = {.correlation_id = CID, .checksum = true,
                   .attachment_size = (int32_t)sizeof(att)};
    checksum_value(msg, n, rq.checksum_value); /* over the message bytes only */
    rt_frame_t f = rt_request_frame(&rq, payload, n + sizeof(att));
    rt_reply_t r;
    WT_EQ(rt_raw_call(fd, &f, &r, WAIT_MS), 1);
    check_echo_reply(&r, CID, "summed", att, sizeof(att));
    /* the reply is checksummed too, over its message bytes */
    WT_ASSERT(r.meta->has_checksum_type && r.meta->checksum_type == 1);
    WT_ASSERT(r.meta->has_checksum_value && r.meta->checksum_value.len == 4);
    uint8_t want[4];
    checksum_value(r.payload, r.payload_len - sizeof(att), want);
    WT_ASSERT_MSG(!memcmp(r.meta->checksum_value.data, want, 4), "reply checksum %02x%02x%02x%02x",
                  r.meta->checksum_value.data[0], r.meta->checksum_value.data[1],
                  r.meta->checksum_value.data[2], r.meta->checksum_value.data[3]);
    rt_reply_free(&r);
    rt_frame_free(&f);

    /* with gzip: the sum is over the compressed bytes */
    size_t zn;
    uint8_t *z = z_compress(WEFT_COMPRESS_GZIP, msg, n, &zn);
    rt_req_t rz = {.correlation_id = CID, .checksum = true, .compress_type = WEFT_COMPRESS_GZIP};
    checksum_value(z, zn, rz.checksum_value);
    f = rt_request_frame(&rz, z, zn);
    WT_EQ(rt_raw_call(fd, &f, &r, WAIT_MS), 1);
    check_echo_reply(&r, CID, "summed", NULL, 0);
    checksum_value(r.payload, r.payload_len, want);
    WT_ASSERT(!memcmp(r.meta->checksum_value.data, want, 4));
    rt_reply_free(&r);
    rt_frame_free(&f);

    /* wrong sums: one bit off, over the plain bytes of a compressed message,
     * over message + attachment */
    rq.checksum_value[3] ^= 1;
    expect_error(fd, rt_request_frame(&rq, payload, n + sizeof(att)), WEFT_EREQUEST, CID);
    checksum_value(msg, n, rz.checksum_value);
    expect_error(fd, rt_request_frame(&rz, z, zn), WEFT_EREQUEST, CID);
    checksum_value(payload, n + sizeof(att), rq.checksum_value);
    expect_error(fd, rt_request_frame(&rq, payload, n + sizeof(att)), WEFT_EREQUEST, CID);
    WT_EQ(rt_calls(s, RT_ECHO), 2);
    free(z);
    free(payload);
    free(msg);
    close(fd);
    rt_server_free(s);
}

/* ---- authentication on the wire ---- */

static int32_t wire_auth_calls;

static int wire_authenticate(const void *cred, size_t len, const weft_endpoint_t *remote,
                             void **ctx, void *arg)
{
    (void)remote;
    (void)arg;
    RT_ADD(&wire_auth_calls, 1);
    *ctx = NULL;
    return len == 3 && !memcmp(cred, "key", 3) ? 0 : -1;
}

static void auth_frames(void)
{
    weft_server_options_t o = {.authenticate = wire_authenticate};
    rt_server_t *s = wire_server(&o);
    size_t n;
    uint8_t *msg = rt_echo_bytes("who", &n);
    rt_reply_t r;

    /* right key on the first request; later requests need none */
    int fd = connect_to(s);
    rt_req_t good = {.correlation_id = CID, .auth = "key", .auth_len = 3};
    rt_req_t bare = {.correlation_id = CID + 1};
    rt_frame_t f = rt_request_frame(&good, msg, n);
    WT_EQ(rt_raw_call(fd, &f, &r, WAIT_MS), 1);
    check_echo_reply(&r, CID, "who", NULL, 0);
    rt_reply_free(&r);
    rt_frame_free(&f);
    for (int i = 0; i < 3; i++) {
        f = rt_request_frame(&bare, msg, n);
        WT_EQ(rt_raw_call(fd, &f, &r, WAIT_MS), 1);
        check_echo_reply(&r, CID + 1, "who", NULL, 0);
        rt_reply_free(&r);
        rt_frame_free(&f);
    }
    WT_EQ(RT_LOAD(&wire_auth_calls), 1);
    close(fd);

    /* wrong key: 1004 with the id, then the connection closes */
    fd = connect_to(s);
    rt_req_t wrong = {.correlation_id = CID, .auth = "kez", .auth_len = 3};
    expect_error(fd, rt_request_frame(&wrong, msg, n), WEFT_ERPCAUTH, CID);
    WT_ASSERT_MSG(rt_raw_closed(fd, WAIT_MS), "still open after a refused credential");
    close(fd);

    /* no key at all */
    fd = connect_to(s);
    expect_error(fd, rt_request_frame(&bare, msg, n), WEFT_ERPCAUTH, CID + 1);
    WT_ASSERT(rt_raw_closed(fd, WAIT_MS));
    close(fd);
    WT_EQ(RT_LOAD(&wire_auth_calls), 3);
    WT_EQ(rt_calls(s, RT_ECHO), 4);
    free(msg);
    rt_server_free(s);
}

/* ---- the order of the server's checks (specs/baidu_std.md) ---- */

static void check_order(void)
{
    weft_server_options_t o = {.authenticate = wire_authenticate, .max_concurrency = 1};
    rt_server_t *s = wire_server(&o);
    int32_t auth_before = RT_LOAD(&wire_auth_calls);
    size_t n;
    uint8_t *msg = rt_echo_bytes("order", &n);
    int fd = connect_to(s);
    /* 4 before 5: a bad attachment_size to an unknown service. The
     * connection's first request carries the credential, which is judged
     * now (once per connection) whatever becomes of the request. */
    rt_req_t rq = {.service = "weft.test.Nope", .correlation_id = CID, .attachment_size = 999,
                   .auth = "key", .auth_len = 3};
    expect_error(fd, rt_request_frame(&rq, msg, n), WEFT_EREQUEST, CID);
    WT_EQ(RT_LOAD(&wire_auth_calls), auth_before + 1);
    /* 5 before 6: bad message bytes to an unknown service or method */
    rq = (rt_req_t){.service = "weft.test.Nope", .correlation_id = CID};
    expect_error(fd, rt_request_frame(&rq, "\xff\xff", 2), WEFT_ENOSERVICE, CID);
    rq = (rt_req_t){.method = "Nope", .correlation_id = CID};
    expect_error(fd, rt_request_frame(&rq, "\xff\xff", 2), WEFT_ENOMETHOD, CID);
    /* 6 before 7: on another connection, bad bytes with a wrong key get
     * 1003, not 1004; the refusal comes with the next request, which
     * reaches step 7, and the connection closes */
    int fd2 = connect_to(s);
    rq = (rt_req_t){.correlation_id = CID, .auth = "bad", .auth_len = 3};
    expect_error(fd2, rt_request_frame(&rq, "\xff\xff", 2), WEFT_EREQUEST, CID);
    rq = (rt_req_t){.correlation_id = CID};
    expect_error(fd2, rt_request_frame(&rq, msg, n), WEFT_ERPCAUTH, CID);
    close(fd2);
    WT_EQ(RT_LOAD(&wire_auth_calls), auth_before + 2);
    /* the first connection's good credential holds for its later requests */
    rq = (rt_req_t){.correlation_id = CID, .auth = "key", .auth_len = 3};
    rt_frame_t f = rt_request_frame(&rq, msg, n);
    rt_reply_t r;
    WT_EQ(rt_raw_call(fd, &f, &r, WAIT_MS), 1);
    check_echo_reply(&r, CID, "order", NULL, 0);
    rt_reply_free(&r);
    rt_frame_free(&f);
    /* 3 before 4: with the one slot taken, a bad attachment gets ELIMIT */
    Weft__Test__SleepRequest sr = WEFT__TEST__SLEEP_REQUEST__INIT;
    sr.ms = 300;
    uint8_t sb[16];
    size_t sn = protobuf_c_message_pack(&sr.base, sb);
    rt_req_t sleep = {.method = "Sleep", .correlation_id = 1};
    f = rt_request_frame(&sleep, sb, sn);
    WT_ASSERT(rt_write_all(fd, f.bytes, f.len));
    rt_frame_free(&f);
    RT_AWAIT(RT_LOAD(&s->sleeping) == 1, WAIT_MS);
    rq = (rt_req_t){.correlation_id = CID, .attachment_size = 999};
    expect_error(fd, rt_request_frame(&rq, msg, n), WEFT_ELIMIT, CID);
    WT_EQ(rt_read_reply(fd, &r, WAIT_MS), 1); /* the Sleep */
    WT_EQ(r.meta->correlation_id, 1);
    WT_EQ(rt_reply_code(&r), 0);
    rt_reply_free(&r);
    /* 2 before 3 and the rest: a stopping server answers ELOGOFF to all */
    rq = (rt_req_t){.service = "weft.test.Nope", .correlation_id = CID, .attachment_size = 999};
    WT_EQ(weft_server_stop(s->server), 0);
    expect_error(fd, rt_request_frame(&rq, msg, n), WEFT_ELOGOFF, CID);
    rq = (rt_req_t){.correlation_id = CID + 7};
    expect_error(fd, rt_request_frame(&rq, msg, n), WEFT_ELOGOFF, CID + 7);
    /* join closes the connection */
    WT_EQ(weft_server_join(s->server), 0);
    WT_ASSERT(rt_raw_closed(fd, WAIT_MS));
    close(fd);
    free(msg);
    rt_server_free(s);
}

/* ---- the client's side: a weft channel against a raw server ---- */

/* A server written by hand in a pthread of its own: it listens on an
 * ephemeral port and runs `script`, which reads the channel's request
 * frames and writes the replies a brpc server would, byte by byte. */
typedef struct raw_server {
    int lfd;
    char addr[32];
    pthread_t thread;
    void (*script)(struct raw_server *);
} raw_server_t;

static void *raw_server_main(void *arg)
{
    raw_server_t *rs = arg;
    rs->script(rs);
    return NULL;
}

static void raw_server_start(raw_server_t *rs, void (*script)(raw_server_t *))
{
    rs->script = script;
    rs->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    WT_GE(rs->lfd, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    WT_EQ(bind(rs->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    WT_EQ(listen(rs->lfd, 16), 0);
    socklen_t len = sizeof(sin);
    WT_EQ(getsockname(rs->lfd, (struct sockaddr *)&sin, &len), 0);
    snprintf(rs->addr, sizeof(rs->addr), "127.0.0.1:%d", ntohs(sin.sin_port));
    WT_EQ(pthread_create(&rs->thread, NULL, raw_server_main, rs), 0);
}

static void raw_server_join(raw_server_t *rs)
{
    WT_EQ(pthread_join(rs->thread, NULL), 0);
    close(rs->lfd);
}

/* The next connection from the channel, within WAIT_MS. */
static int raw_accept(raw_server_t *rs)
{
    struct pollfd p = {.fd = rs->lfd, .events = POLLIN};
    WT_ASSERT_MSG(poll(&p, 1, WAIT_MS) == 1, "the channel did not connect");
    int fd = accept4(rs->lfd, NULL, NULL, SOCK_CLOEXEC);
    WT_GE(fd, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* A request frame as the bytes say it, checked against the frame rules. */
typedef struct raw_request {
    Weft__Baidu__RpcMeta *meta;
    uint8_t *payload; /* message, then attachment */
    size_t payload_len;
    size_t msg_len;   /* payload_len - attachment_size */
} raw_request_t;

static void raw_request_free(raw_request_t *q)
{
    weft__baidu__rpc_meta__free_unpacked(q->meta, NULL);
    free(q->payload);
    memset(q, 0, sizeof(*q));
}

static void raw_read_request(int fd, raw_request_t *q)
{
    uint8_t h[12];
    WT_EQ(rt_read_full(fd, h, 12, WAIT_MS), 12);
    WT_ASSERT_MSG(!memcmp(h, "PRPC", 4), "request magic %02x%02x%02x%02x", h[0], h[1], h[2], h[3]);
    uint32_t be[2];
    memcpy(be, h + 4, 8);
    uint32_t body_size = ntohl(be[0]), meta_size = ntohl(be[1]);
    WT_LE(meta_size, body_size);
    uint8_t *body = malloc(body_size + 1);
    WT_ASSERT(body);
    WT_EQ(rt_read_full(fd, body, body_size, WAIT_MS), body_size);
    q->meta = weft__baidu__rpc_meta__unpack(NULL, meta_size, body);
    WT_ASSERT_MSG(q->meta, "the request's meta does not parse");
    WT_ASSERT_MSG(q->meta->request && !q->meta->response, "a request carries a request meta only");
    WT_ASSERT(q->meta->has_correlation_id);
    q->payload_len = body_size - meta_size;
    q->payload = malloc(q->payload_len + 1);
    WT_ASSERT(q->payload);
    memcpy(q->payload, body + meta_size, q->payload_len);
    size_t att = q->meta->has_attachment_size ? (size_t)q->meta->attachment_size : 0;
    WT_ASSERT(!q->meta->has_attachment_size || q->meta->attachment_size > 0);
    WT_LE(att, q->payload_len);
    q->msg_len = q->payload_len - att;
    free(body);
}

/* The request's Echo message, decompressed as its meta says. */
static char *raw_request_text(const raw_request_t *q)
{
    const uint8_t *msg = q->payload;
    size_t len = q->msg_len;
    uint8_t *plain = NULL;
    int type = q->meta->has_compress_type ? q->meta->compress_type : 0;
    if (type) {
        plain = z_decompress(type, msg, len, &len);
        msg = plain;
    }
    Weft__Test__EchoRequest *er = weft__test__echo_request__unpack(NULL, len, msg);
    WT_ASSERT_MSG(er, "the request's message does not parse");
    char *text = strdup(er->message);
    weft__test__echo_request__free_unpacked(er, NULL);
    free(plain);
    return text;
}

/* What a reply carries besides the correlation id. */
typedef struct raw_reply {
    int error_code;
    const char *error_text;
    const char *text;        /* EchoResponse.message, when no error */
    const uint8_t *att;      /* response attachment */
    size_t att_len;
    int compress_type;       /* of the message, done here with zlib */
    int checksum;            /* 0 none, 1 the right CRC32C, -1 a wrong one */
    const uint8_t *raw_msg;  /* message bytes as they are, instead of text */
    size_t raw_len;
} raw_reply_t;

static void raw_write_reply(int fd, int64_t cid, const raw_reply_t *rp)
{
    Weft__Baidu__RpcMeta meta = WEFT__BAIDU__RPC_META__INIT;
    Weft__Baidu__RpcResponseMeta rm = WEFT__BAIDU__RPC_RESPONSE_META__INIT;
    meta.response = &rm;
    meta.has_correlation_id = 1;
    meta.correlation_id = cid;
    uint8_t *msg = NULL, *packed = NULL;
    size_t msg_len = 0;
    uint8_t crc[4];
    if (rp->error_code) {
        rm.has_error_code = 1;
        rm.error_code = rp->error_code;
        rm.error_text = (char *)rp->error_text;
    } else if (rp->raw_msg) {
        msg = (uint8_t *)rp->raw_msg;
        msg_len = rp->raw_len;
    } else {
        Weft__Test__EchoResponse er = WEFT__TEST__ECHO_RESPONSE__INIT;
        er.message = (char *)rp->text;
        msg_len = protobuf_c_message_get_packed_size(&er.base);
        msg = packed = malloc(msg_len + 1);
        WT_ASSERT(msg);
        WT_EQ(protobuf_c_message_pack(&er.base, msg), msg_len);
        if (rp->compress_type) {
            msg = z_compress(rp->compress_type, packed, msg_len, &msg_len);
            free(packed);
            packed = msg;
            meta.has_compress_type = 1;
            meta.compress_type = rp->compress_type;
        }
    }
    if (rp->checksum) {
        checksum_value(msg, msg_len, crc);
        crc[3] ^= rp->checksum < 0;
        meta.has_checksum_type = meta.has_checksum_value = 1;
        meta.checksum_type = 1;
        meta.checksum_value.data = crc;
        meta.checksum_value.len = 4;
    }
    if (rp->att_len) {
        meta.has_attachment_size = 1;
        meta.attachment_size = (int32_t)rp->att_len;
    }
    uint8_t *payload = malloc(msg_len + rp->att_len + 1);
    WT_ASSERT(payload);
    if (msg_len)
        memcpy(payload, msg, msg_len);
    if (rp->att_len)
        memcpy(payload + msg_len, rp->att, rp->att_len);
    rt_frame_t f = rt_frame(&meta, payload, msg_len + rp->att_len);
    WT_ASSERT(rt_write_all(fd, f.bytes, f.len));
    rt_frame_free(&f);
    free(payload);
    free(packed);
}

/* Echo reply of the request's own text with "!" appended. */
static void raw_echo_back(int fd, const raw_request_t *q)
{
    char *text = raw_request_text(q), *out = NULL;
    WT_GE(asprintf(&out, "%s!", text), 0);
    raw_write_reply(fd, q->meta->correlation_id, &(raw_reply_t){.text = out});
    free(out);
    free(text);
}

/* Reads the next request and echoes it back. */
static void raw_echo_next(int fd)
{
    raw_request_t q;
    raw_read_request(fd, &q);
    raw_echo_back(fd, &q);
    raw_request_free(&q);
}

/* A raw server running `script`, and a channel to it with a controller. */
typedef struct client_env {
    raw_server_t rs;
    weft_channel_t *ch;
    weft_controller_t *cntl;
} client_env_t;

static void client_env_open(client_env_t *e, void (*script)(raw_server_t *),
                            const weft_channel_options_t *o)
{
    raw_server_start(&e->rs, script);
    e->ch = rt_channel(e->rs.addr, o);
    e->cntl = weft_controller_new();
}

/* Frees the channel (closing its connections) and waits for the script. */
static void client_env_close(client_env_t *e)
{
    weft_controller_free(e->cntl);
    weft_channel_free(e->ch);
    raw_server_join(&e->rs);
}

/* A synchronous Echo from this pthread; checks the "!" reply on success. */
static int client_echo(weft_channel_t *ch, weft_controller_t *cntl, const char *text)
{
    Weft__Test__EchoRequest req = WEFT__TEST__ECHO_REQUEST__INIT;
    req.message = (char *)text;
    Weft__Test__EchoResponse *resp = NULL;
    int rc = weft__test__test_service__echo_call(ch, cntl, &req, &resp);
    if (rc == 0) {
        size_t n = strlen(text);
        WT_EQ(strlen(resp->message), n + 1);
        WT_ASSERT(!memcmp(resp->message, text, n) && resp->message[n] == '!');
        weft__test__echo_response__free_unpacked(resp, NULL);
    }
    return rc;
}

static uint8_t *pattern_bytes(size_t n, uint64_t seed)
{
    uint8_t *p = malloc(n);
    WT_ASSERT(p);
    for (size_t i = 0; i < n; i++)
        p[i] = rt_pattern(seed, i);
    return p;
}

#define REQ_ATT 3000
#define RESP_ATT 5000

/* Every request field the channel sets, as the spec names them; the
 * credential goes with the first request of a connection only; a reply's
 * attachment reaches the caller. */
static void request_script(raw_server_t *rs)
{
    int fd = raw_accept(rs);
    raw_request_t q;
    raw_read_request(fd, &q);
    const Weft__Baidu__RpcRequestMeta *rq = q.meta->request;
    WT_STREQ(rq->service_name, "weft.test.TestService");
    WT_STREQ(rq->method_name, "Echo");
    WT_ASSERT(rq->has_log_id);
    WT_EQ(rq->log_id, (int64_t)0x123456789abcLL);
    WT_ASSERT_MSG(rq->has_timeout_ms && rq->timeout_ms > 0 && rq->timeout_ms <= 2000,
                  "timeout_ms %d", rq->timeout_ms);
    WT_ASSERT(q.meta->has_authentication_data);
    WT_EQ(q.meta->authentication_data.len, 4);
    WT_ASSERT(!memcmp(q.meta->authentication_data.data, "cred", 4));
    WT_ASSERT(!q.meta->has_compress_type || q.meta->compress_type == 0);
    WT_ASSERT(!q.meta->has_checksum_type || q.meta->checksum_type == 0);
    WT_EQ(q.meta->attachment_size, REQ_ATT);
    for (size_t i = 0; i < REQ_ATT; i++)
        WT_EQ(q.payload[q.msg_len + i], rt_pattern(1, i));
    WT_EQ(q.meta->n_user_fields, 1);
    WT_STREQ(q.meta->user_fields[0]->key, "tenant");
    WT_STREQ(q.meta->user_fields[0]->value, "blue");
    char *text = raw_request_text(&q);
    WT_STREQ(text, "hello");
    free(text);
    uint8_t *att = pattern_bytes(RESP_ATT, 2);
    raw_write_reply(fd, q.meta->correlation_id,
                    &(raw_reply_t){.text = "hello!", .att = att, .att_len = RESP_ATT});
    free(att);
    int64_t first_cid = q.meta->correlation_id;
    raw_request_free(&q);

    /* the second call: same connection, a new id, no credential */
    raw_read_request(fd, &q);
    WT_NE(q.meta->correlation_id, first_cid);
    WT_ASSERT(!q.meta->has_authentication_data);
    WT_ASSERT(!q.meta->has_attachment_size);
    raw_echo_back(fd, &q);
    raw_request_free(&q);
    close(fd);
}

static void client_request_bytes(void)
{
    client_env_t e;
    weft_channel_options_t o = rt_opts();
    o.timeout_ms = 2000;
    o.max_retries = 0;
    o.auth_data = "cred";
    o.auth_len = 4;
    client_env_open(&e, request_script, &o);
    weft_controller_set_log_id(e.cntl, 0x123456789abcLL);
    WT_EQ(weft_controller_set_user_field(e.cntl, "tenant", "blue"), 0);
    rt_append_pattern(weft_controller_request_attachment(e.cntl), REQ_ATT, 1);
    WT_EQ(client_echo(e.ch, e.cntl, "hello"), 0);
    const weft_iobuf_t *ra = weft_controller_response_attachment(e.cntl);
    WT_EQ(weft_iobuf_length(ra), RESP_ATT);
    WT_EQ(rt_check_pattern(ra, 2), RESP_ATT);
    weft_controller_reset(e.cntl);
    WT_EQ(client_echo(e.ch, e.cntl, "again"), 0);
    client_env_close(&e);
}

#define NPIPE 8

/* NPIPE calls in flight are answered last first, after a reply to an id
 * nobody used: each call gets its own reply (session mode), the stray one
 * is dropped. */
static void reorder_script(raw_server_t *rs)
{
    int fd = raw_accept(rs);
    raw_request_t q[NPIPE];
    for (int i = 0; i < NPIPE; i++)
        raw_read_request(fd, &q[i]);
    for (int i = 0; i < NPIPE; i++)
        for (int j = 0; j < i; j++)
            WT_NE(q[i].meta->correlation_id, q[j].meta->correlation_id);
    raw_write_reply(fd, CID, &(raw_reply_t){.text = "stray"});
    for (int i = NPIPE - 1; i >= 0; i--) {
        char *text = raw_request_text(&q[i]);
        raw_write_reply(fd, q[i].meta->correlation_id, &(raw_reply_t){.text = text});
        free(text);
        raw_request_free(&q[i]);
    }
    /* the channel closes the connection when it is freed */
    WT_ASSERT(rt_raw_closed(fd, WAIT_MS));
    close(fd);
}

static void client_replies_reordered(void)
{
    client_env_t e;
    weft_channel_options_t o = rt_opts();
    client_env_open(&e, reorder_script, &o);
    weft_countdown_t left;
    weft_countdown_init(&left, NPIPE);
    rt_async_t *a = rt_async_new(NPIPE, &left);
    for (int i = 0; i < NPIPE; i++)
        WT_EQ(rt_echo_async(e.ch, &a[i]), 0);
    weft_countdown_wait(&left);
    for (int i = 0; i < NPIPE; i++) {
        WT_EQ(a[i].error, 0);
        WT_EQ(RT_LOAD(&a[i].done_runs), 1);
    }
    rt_async_free(a, NPIPE);
    client_env_close(&e);
}

/* Error replies reach the caller as they were sent, and are not retried
 * (the next frame the server reads is the next call, not a retry). */
static const int error_codes[] = {WEFT_ENOSERVICE, WEFT_ENOMETHOD, WEFT_EREQUEST,
                                  WEFT_EINTERNAL,  WEFT_ERESPONSE, 4242};
#define NCODES (sizeof(error_codes) / sizeof(error_codes[0]))

static void error_script(raw_server_t *rs)
{
    int fd = raw_accept(rs);
    const int *codes = error_codes;
    for (size_t i = 0; i < NCODES; i++) {
        raw_request_t q;
        raw_read_request(fd, &q);
        char *text = raw_request_text(&q);
        char want[32], why[64];
        snprintf(want, sizeof(want), "call %zu", i);
        WT_STREQ(text, want);
        snprintf(why, sizeof(why), "the server says no (%d)", codes[i]);
        raw_write_reply(fd, q.meta->correlation_id,
                        &(raw_reply_t){.error_code = codes[i], .error_text = why});
        free(text);
        raw_request_free(&q);
    }
    raw_echo_next(fd);
    close(fd);
}

static void client_error_replies(void)
{
    client_env_t e;
    weft_channel_options_t o = rt_opts();
    client_env_open(&e, error_script, &o);
    for (size_t i = 0; i < NCODES; i++) {
        char text[32], why[64];
        snprintf(text, sizeof(text), "call %zu", i);
        snprintf(why, sizeof(why), "the server says no (%d)", error_codes[i]);
        weft_controller_reset(e.cntl);
        WT_EQ(client_echo(e.ch, e.cntl, text), error_codes[i]);
        WT_EQ(weft_controller_error_code(e.cntl), error_codes[i]);
        WT_ASSERT_MSG(strstr(weft_controller_error_text(e.cntl), why), "error text \"%s\"",
                      weft_controller_error_text(e.cntl));
        WT_EQ(weft_controller_retried_count(e.cntl), 0);
    }
    weft_controller_reset(e.cntl);
    WT_EQ(client_echo(e.ch, e.cntl, "after"), 0);
    client_env_close(&e);
}

/* Requests compressed as the channel asks (checked by zlib itself), and
 * replies compressed by zlib in the other format, decoded by the channel;
 * CRC32C both ways, computed here bit by bit; a reply whose checksum or
 * message is wrong fails its call with 1003. */
static void codec_script(raw_server_t *rs)
{
    int fd = raw_accept(rs);
    static const int types[] = {WEFT_COMPRESS_GZIP, WEFT_COMPRESS_ZLIB};
    for (int i = 0; i < 2; i++) {
        raw_request_t q;
        raw_read_request(fd, &q);
        WT_EQ(q.meta->compress_type, types[i]);
        WT_EQ(q.meta->checksum_type, 1);
        uint8_t want[4];
        checksum_value(q.payload, q.msg_len, want);
        WT_EQ(q.meta->checksum_value.len, 4);
        WT_ASSERT_MSG(!memcmp(q.meta->checksum_value.data, want, 4), "request checksum");
        char *text = raw_request_text(&q), *out = NULL;
        WT_GE(asprintf(&out, "%s!", text), 0);
        raw_write_reply(fd, q.meta->correlation_id,
                        &(raw_reply_t){.text = out, .compress_type = types[1 - i],
                                       .checksum = 1});
        free(out);
        free(text);
        raw_request_free(&q);
    }
    raw_request_t q;
    raw_read_request(fd, &q); /* a wrong checksum */
    raw_write_reply(fd, q.meta->correlation_id, &(raw_reply_t){.text = "x", .checksum = -1});
    raw_request_free(&q);
    raw_read_request(fd, &q); /* bytes that are no EchoResponse */
    raw_write_reply(fd, q.meta->correlation_id,
                    &(raw_reply_t){.raw_msg = (const uint8_t *)"\x0a\xff\xff", .raw_len = 3});
    raw_request_free(&q);
    raw_echo_next(fd); /* the connection still serves */
    close(fd);
}

static void client_codecs(void)
{
    client_env_t e;
    weft_channel_options_t o = rt_opts();
    o.checksum = true;
    o.compress_type = WEFT_COMPRESS_GZIP;
    client_env_open(&e, codec_script, &o);
    char text[1000];
    for (size_t i = 0; i + 1 < sizeof(text); i++)
        text[i] = "compressible "[i % 13];
    text[sizeof(text) - 1] = 0;
    static const struct {
        int compress; /* -1: the channel's */
        const char *text;
        int code;
    } calls[] = {{-1, NULL, 0},
                 {WEFT_COMPRESS_ZLIB, NULL, 0},
                 {WEFT_COMPRESS_NONE, "x", WEFT_EREQUEST},
                 {WEFT_COMPRESS_NONE, "y", WEFT_EREQUEST},
                 {WEFT_COMPRESS_NONE, "z", 0}};
    for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
        weft_controller_reset(e.cntl);
        if (calls[i].compress >= 0)
            weft_controller_set_compress_type(e.cntl, calls[i].compress);
        WT_EQ(client_echo(e.ch, e.cntl, calls[i].text ? calls[i].text : text), calls[i].code);
    }
    client_env_close(&e);
}

/* A reply that breaks the frame rules fails the connection and its call
 * at once (not at the deadline); the next call connects again. */
static void broken_script(raw_server_t *rs)
{
    int fd = raw_accept(rs);
    raw_request_t q;
    raw_read_request(fd, &q);
    WT_ASSERT(rt_write_all(fd, "PRPX\0\0\0\0\0\0\0\0", 12));
    raw_request_free(&q);
    WT_ASSERT(rt_raw_closed(fd, WAIT_MS));
    close(fd);
    fd = raw_accept(rs);
    raw_echo_next(fd);
    close(fd);
}

static void client_broken_reply(void)
{
    client_env_t e;
    weft_channel_options_t o = rt_opts();
    o.max_retries = 0;
    client_env_open(&e, broken_script, &o);
    int64_t t0 = rt_now();
    int rc = client_echo(e.ch, e.cntl, "broken");
    WT_ASSERT_MSG(rc != 0 && rc != WEFT_ERPCTIMEDOUT, "a broken reply gave %d", rc);
    WT_LT(rt_now() - t0, 3 * WEFT_NS_PER_SEC);
    WT_NOTE("a bad reply frame fails the call with %d (%s)", rc, weft_strerror(rc));
    weft_controller_reset(e.cntl);
    WT_EQ(client_echo(e.ch, e.cntl, "mended"), 0);
    client_env_close(&e);
}

static const rt_case_t cases[] = {
    RT_THREAD_CASE(echo_reply_bytes),
    RT_THREAD_CASE(pipelined_out_of_order),
    RT_THREAD_CASE(service_errors),
    RT_THREAD_CASE(bad_frames_close),
    RT_THREAD_CASE(bad_requests_1003),
    RT_THREAD_CASE(compressed_frames),
    RT_THREAD_CASE(checksum_frames),
    RT_THREAD_CASE(auth_frames),
    RT_THREAD_CASE(check_order),
    RT_THREAD_CASE(client_request_bytes),
    RT_THREAD_CASE(client_replies_reordered),
    RT_THREAD_CASE(client_error_replies),
    RT_THREAD_CASE(client_codecs),
    RT_THREAD_CASE(client_broken_reply),
};

int main(int argc, char **argv)
{
    rt_run_cases(argc, argv, cases, RT_NCASES(cases));
    WT_EQ(weft_fiber_shutdown(), 0);
    return 0;
}
