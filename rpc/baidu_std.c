/*
 * baidu_std.c - the baidu_std protocol, wire-compatible with Apache brpc.
 *
 * A frame is "PRPC", body_size and meta_size (both 32-bit big-endian), an
 * RpcMeta, then the payload: the serialized message (maybe compressed) and
 * attachment_size raw bytes (see specs/baidu_std.md). Calls on a connection
 * are matched by correlation_id, so they may be answered in any order.
 *
 * The server checks a request in the order the spec gives, so a peer sees
 * the same error for the same fault as from brpc: meta, stopping, limit,
 * attachment size, service and method, message bytes, authentication, then
 * the handler. A request's memory (the unpacked message, the response, what
 * the handler allocates) lives in one arena released when the response is
 * written.
 */
#include "rpc/rpc_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fiber/clock.h"
#include "fiber/error.h"
#include "fiber/fiber.h"
#include "fiber/log.h"
#include "baidu_rpc_meta.pb-c.h"
#include "rpc/codec_internal.h"

#define HEADER_SIZE 12
#define STACK_FLAT 4096
#define CHECKSUM_CRC32C 1

enum { KIND_RPC, KIND_STREAM };

/* ---- framing ---- */

static int parse(weft_iobuf_t *in, size_t max_body, weft__rpc_msg_t **out)
{
    uint8_t h[HEADER_SIZE];
    size_t n = weft_iobuf_copy_out(in, 0, h, sizeof(h));
    int kind;
    if (n >= 4 && !memcmp(h, "PRPC", 4))
        kind = KIND_RPC;
    else if (n >= 4 && !memcmp(h, "STRM", 4))
        kind = KIND_STREAM;
    else if (n < 4 && (!memcmp(h, "PRPC", n) || !memcmp(h, "STRM", n)))
        return WEFT__PARSE_NEED_MORE;
    else
        return WEFT__PARSE_NOT_MINE;
    if (n < HEADER_SIZE)
        return WEFT__PARSE_NEED_MORE;
    uint32_t body_size, meta_size;
    memcpy(&body_size, h + 4, 4);
    memcpy(&meta_size, h + 8, 4);
    body_size = ntohl(body_size);
    meta_size = ntohl(meta_size);
    if (body_size > max_body) {
        WEFT_LOG_EVERY_SEC(WEFT_LOG_WARN, "baidu_std: body_size %u over the limit %zu", body_size,
                           max_body);
        return -WEFT_EREQUEST;
    }
    if (meta_size > body_size) {
        WEFT_LOG_EVERY_SEC(WEFT_LOG_WARN, "baidu_std: meta_size %u > body_size %u", meta_size,
                           body_size);
        return -WEFT_EREQUEST;
    }
    if (weft_iobuf_length(in) < HEADER_SIZE + (size_t)body_size)
        return WEFT__PARSE_NEED_MORE;
    weft__rpc_msg_t *m = weft__rpc_msg_new(&weft__baidu_std);
    if (!m)
        return -ENOMEM;
    weft_iobuf_pop_front(in, HEADER_SIZE);
    weft_iobuf_cutn(&m->meta, in, meta_size);
    weft_iobuf_cutn(&m->payload, in, body_size - meta_size);
    m->kind = kind;
    m->received_ns = weft_clock_ns();
    *out = m;
    return WEFT__PARSE_OK;
}

/* Header + meta + body (moved from *body) as one frame into out. */
static int frame(weft_iobuf_t *out, const Weft__Baidu__RpcMeta *meta, weft_iobuf_t *body)
{
    size_t meta_size = protobuf_c_message_get_packed_size(&meta->base);
    uint32_t be[2] = {htonl((uint32_t)(meta_size + weft_iobuf_length(body))),
                      htonl((uint32_t)meta_size)};
    int rc = weft_iobuf_append(out, "PRPC", 4);
    if (rc == 0)
        rc = weft_iobuf_append(out, be, sizeof(be));
    if (rc == 0 && weft_iobuf_append_pb(out, &meta->base) < 0)
        rc = -ENOMEM;
    if (rc == 0)
        rc = weft_iobuf_append_buf(out, body);
    weft_iobuf_clear(body);
    return rc;
}

/* A contiguous view of a buffer: into its block when it is one, else a copy
 * (on the stack when small). *heap is set when the caller must free it. */
static const uint8_t *flatten(const weft_iobuf_t *b, uint8_t *stack, uint8_t **heap)
{
    size_t n = weft_iobuf_length(b);
    *heap = NULL;
    uint8_t *buf = stack;
    if (n > STACK_FLAT) {
        if (weft_iobuf_segments(b) == 1)
            return weft_iobuf_fetch(b, NULL, n);
        buf = *heap = malloc(n);
        if (!buf)
            return NULL;
    }
    return weft_iobuf_fetch(b, buf, n);
}

static Weft__Baidu__RpcMeta *unpack_meta(const weft_iobuf_t *b)
{
    uint8_t stack[STACK_FLAT], *heap;
    const uint8_t *p = flatten(b, stack, &heap);
    if (!p && weft_iobuf_length(b))
        return NULL;
    Weft__Baidu__RpcMeta *m =
        weft__baidu__rpc_meta__unpack(NULL, weft_iobuf_length(b), p ? p : stack);
    free(heap);
    return m;
}

/* True unless the meta carries a CRC32C that the bytes do not match. */
static bool checksum_ok(const Weft__Baidu__RpcMeta *meta, const weft_iobuf_t *body)
{
    if (!meta->has_checksum_type || meta->checksum_type != CHECKSUM_CRC32C)
        return true;
    uint8_t want[4];
    weft__crc32c_store_be(weft__crc32c_mask(weft__crc32c_iobuf(body)), want);
    return meta->has_checksum_value && meta->checksum_value.len == 4 &&
           memcmp(meta->checksum_value.data, want, 4) == 0;
}

/* Checks, decompresses, depth-checks and unpacks a message part. Returns
 * the message or NULL with *why set (a text for the error reply). */
static ProtobufCMessage *decode_message(const Weft__Baidu__RpcMeta *meta, weft_iobuf_t *body,
                                        const ProtobufCMessageDescriptor *desc, size_t max_size,
                                        int max_depth, ProtobufCAllocator *alloc,
                                        const char **why)
{
    if (!checksum_ok(meta, body)) {
        *why = "checksum mismatch";
        return NULL;
    }
    weft_iobuf_t plain = WEFT_IOBUF_INIT;
    int type = meta->has_compress_type ? meta->compress_type : WEFT_COMPRESS_NONE;
    if (type != WEFT_COMPRESS_NONE) {
        int rc = weft__decompress(type, body, &plain, max_size);
        if (rc != 0) {
            *why = rc == -ENOTSUP ? "unsupported compress_type" : "cannot decompress";
            return NULL;
        }
        body = &plain;
    }
    uint8_t stack[STACK_FLAT], *heap;
    size_t len = weft_iobuf_length(body);
    const uint8_t *p = flatten(body, stack, &heap);
    ProtobufCMessage *msg = NULL;
    if (!p && len) {
        *why = "out of memory";
    } else if (weft__pb_check(desc, p ? p : stack, len, max_depth) != 0) {
        *why = "malformed or too deeply nested message";
    } else {
        msg = protobuf_c_message_unpack(desc, alloc, len, p ? p : stack);
        if (!msg)
            *why = "cannot parse the message";
    }
    free(heap);
    weft_iobuf_clear(&plain);
    return msg;
}

/* Compresses (if asked) and checksums a packed message already in *body
 * (replaced by its compressed form); fills the meta fields that describe
 * it. 0 or -errno. */
static int seal_message(int compress, bool checksum, Weft__Baidu__RpcMeta *meta,
                        uint8_t crc_be[4], weft_iobuf_t *body)
{
    int rc = 0;
    if (compress != WEFT_COMPRESS_NONE) {
        weft_iobuf_t packed = WEFT_IOBUF_INIT;
        weft_iobuf_move(&packed, body);
        rc = weft__compress(compress, &packed, body);
        weft_iobuf_clear(&packed);
        meta->has_compress_type = 1;
        meta->compress_type = compress;
    }
    if (rc == 0 && checksum) {
        weft__crc32c_store_be(weft__crc32c_mask(weft__crc32c_iobuf(body)), crc_be);
        meta->has_checksum_type = meta->has_checksum_value = 1;
        meta->checksum_type = CHECKSUM_CRC32C;
        meta->checksum_value.len = 4;
        meta->checksum_value.data = crc_be;
    }
    return rc;
}

/* Packs msg into *body, then seals it. */
static int encode_message(const ProtobufCMessage *msg, int compress, bool checksum,
                          Weft__Baidu__RpcMeta *meta, uint8_t crc_be[4], weft_iobuf_t *body)
{
    if (weft_iobuf_append_pb(body, msg) < 0)
        return -ENOMEM;
    return seal_message(compress, checksum, meta, crc_be, body);
}

/* ---- server ---- */

typedef struct server_call {
    weft_controller_t cntl;
    weft_closure_t done;
    weft__arena_t arena;
    weft_socket_t *socket;          /* referenced until the reply is written */
    weft__server_conn_t *conn;      /* the socket's user: lives as long */
    weft_server_t *server;
    int64_t correlation_id;
    const weft__method_t *method;
    ProtobufCMessage *request;
    ProtobufCMessage *response;
    bool checksum;                  /* the request had one: so does the reply */
    bool entered;                   /* holds a concurrency slot */
    bool close_after;               /* close the connection once replied */
    Weft__Baidu__RpcMeta *meta;     /* the request's, freed at the end */
} server_call_t;

static void server_call_free(server_call_t *sc)
{
    if (sc->entered)
        weft__server_leave(sc->conn, weft_controller_failed(&sc->cntl));
    weft_socket_dereference(sc->socket);
    if (sc->meta)
        weft__baidu__rpc_meta__free_unpacked(sc->meta, NULL);
    weft__controller_destroy(&sc->cntl);
    weft__arena_free_all(&sc->arena);
    free(sc);
}

static void close_after_write(void *arg, int error)
{
    (void)error;
    weft_socket_set_failed((weft_socket_id_t)(uintptr_t)arg, WEFT_ERPCAUTH);
}

/* Writes the reply: the response message unless the call failed. */
static void send_reply(server_call_t *sc)
{
    weft_controller_t *cntl = &sc->cntl;
    Weft__Baidu__RpcMeta meta = WEFT__BAIDU__RPC_META__INIT;
    Weft__Baidu__RpcResponseMeta rmeta = WEFT__BAIDU__RPC_RESPONSE_META__INIT;
    weft_iobuf_t body = WEFT_IOBUF_INIT;
    uint8_t crc[4];

    if (!cntl->error_code && sc->response) {
        if (!protobuf_c_message_check(sc->response))
            weft__controller_set_error(cntl, WEFT_ERESPONSE, "required fields of the response are missing");
        else if (encode_message(sc->response, cntl->compress_type, sc->checksum, &meta, crc,
                                &body) != 0)
            weft__controller_set_error(cntl, WEFT_EINTERNAL, "cannot serialize the response");
    }
    if (cntl->error_code) {
        weft_iobuf_clear(&body);
        meta.has_compress_type = meta.has_checksum_type = meta.has_checksum_value = 0;
    } else {
        size_t att = weft_iobuf_length(&cntl->response_attachment);
        if (att) {
            meta.has_attachment_size = 1;
            meta.attachment_size = (int32_t)att;
            weft_iobuf_append_buf(&body, &cntl->response_attachment);
        }
    }
    rmeta.has_error_code = 1;
    rmeta.error_code = cntl->error_code;
    if (cntl->error_code)
        rmeta.error_text = (char *)weft_controller_error_text(cntl);
    meta.response = &rmeta;
    meta.has_correlation_id = 1;
    meta.correlation_id = sc->correlation_id;

    weft_iobuf_t out = WEFT_IOBUF_INIT;
    /* After a refused credential the connection closes, but only once the
     * reply saying so has gone out. */
    weft_write_options_t wo = {.done = close_after_write,
                               .arg = (void *)(uintptr_t)weft_socket_id(sc->socket)};
    int rc = frame(&out, &meta, &body);
    if (rc == 0)
        rc = weft_socket_write(sc->socket, &out, sc->close_after ? &wo : NULL);
    if (rc != 0)
        WEFT_LOG_EVERY_SEC(WEFT_LOG_WARN, "cannot send a reply: %s", weft_strerror(rc));
    weft_iobuf_clear(&out);
}

static void reply_done(weft_closure_t *done)
{
    server_call_t *sc = (server_call_t *)((char *)done - offsetof(server_call_t, done));
    send_reply(sc);
    server_call_free(sc);
}

static void reply_error(server_call_t *sc, int code, const char *text)
{
    weft__controller_set_error(&sc->cntl, code, text);
    reply_done(&sc->done);
}

/* protoc-c's closure: the implementation hands us its response, which we
 * must serialize before returning (it stays the caller's). */
static void protoc_closure(const ProtobufCMessage *msg, void *arg)
{
    server_call_t *sc = arg;
    if (!msg && !sc->cntl.error_code)
        weft__controller_set_error(&sc->cntl, WEFT_EINTERNAL, "the service returned no response");
    sc->response = (ProtobufCMessage *)msg;
    reply_done(&sc->done);
}

static void run_handler(server_call_t *sc)
{
    const weft__method_t *m = sc->method;
    weft__controller_set_current(&sc->cntl);
    if (m->protoc) {
        m->protoc->invoke(m->protoc, m->index, sc->request, protoc_closure, sc);
    } else {
        const ProtobufCMessageDescriptor *out = m->service->methods[m->index].output;
        sc->response = weft__arena_alloc(&sc->arena, out->sizeof_message);
        if (!sc->response) {
            reply_error(sc, WEFT_EINTERNAL, "out of memory");
            return;
        }
        protobuf_c_message_init(out, sc->response);
        m->fn(&sc->cntl, sc->request, sc->response, &sc->done, m->arg);
    }
    weft__controller_set_current(NULL);
}

static server_call_t *server_call_new(weft__rpc_msg_t *msg)
{
    server_call_t *sc = calloc(1, sizeof(*sc));
    if (!sc)
        return NULL;
    weft__controller_init(&sc->cntl, true);
    sc->cntl.arena = &sc->arena;
    sc->done.run = reply_done;
    sc->socket = msg->base.socket;
    weft_socket_ref(sc->socket);
    sc->conn = weft_socket_user(sc->socket);
    sc->server = weft__conn_server(sc->conn);
    sc->cntl.remote = *weft_socket_remote(sc->socket);
    sc->cntl.start_ns = msg->received_ns;
    return sc;
}

static void fill_request_info(server_call_t *sc, const Weft__Baidu__RpcMeta *meta)
{
    const Weft__Baidu__RpcRequestMeta *rq = meta->request;
    weft_controller_t *c = &sc->cntl;
    c->service_name = rq->service_name;
    c->method_name = rq->method_name;
    if (rq->has_log_id)
        weft_controller_set_log_id(c, rq->log_id);
    if (rq->has_timeout_ms && rq->timeout_ms > 0)
        c->deadline_ns = sc->cntl.start_ns + (int64_t)rq->timeout_ms * WEFT_NS_PER_MS;
    for (size_t i = 0; i < meta->n_user_fields; i++) {
        const Weft__Baidu__UserField *f = meta->user_fields[i];
        if (f->key && f->value)
            weft_controller_set_user_field(c, f->key, f->value);
    }
    /* Reply compressed as we were asked. */
    c->compress_type = meta->has_compress_type ? meta->compress_type : WEFT_COMPRESS_NONE;
    if (!weft__compress_supported(c->compress_type))
        c->compress_type = WEFT_COMPRESS_NONE;
    sc->checksum = meta->has_checksum_type && meta->checksum_type == CHECKSUM_CRC32C;
}

static void process_request(weft__rpc_msg_t *msg)
{
    weft_socket_t *sock = msg->base.socket;
    if (msg->kind != KIND_RPC) {
        WEFT_LOG_EVERY_SEC(WEFT_LOG_WARN, "baidu_std: stream frame without a stream; closing");
        weft_socket_set_failed(weft_socket_id(sock), WEFT_EREQUEST);
        goto out;
    }
    Weft__Baidu__RpcMeta *meta = unpack_meta(&msg->meta);
    if (!meta || !meta->request) {
        /* Step 1: no reply, the connection cannot be trusted. */
        WEFT_LOG_EVERY_SEC(WEFT_LOG_WARN, "baidu_std: bad request meta; closing the connection");
        if (meta)
            weft__baidu__rpc_meta__free_unpacked(meta, NULL);
        weft_socket_set_failed(weft_socket_id(sock), WEFT_EREQUEST);
        goto out;
    }
    server_call_t *sc = server_call_new(msg);
    if (!sc) {
        weft__baidu__rpc_meta__free_unpacked(meta, NULL);
        goto out;
    }
    sc->meta = meta;
    sc->correlation_id = meta->correlation_id;
    fill_request_info(sc, meta);
    weft_server_t *server = sc->server;
    /* The credential is judged on the first request of the connection,
     * whatever becomes of that request (brpc clients send it only once);
     * a refusal is reported where the spec places it, at step 7. */
    int auth = weft__server_authenticate(
        server, sock, meta->has_authentication_data ? meta->authentication_data.data : NULL,
        meta->has_authentication_data ? meta->authentication_data.len : 0, &sc->cntl.auth_ctx);

    if (weft__server_stopping(server)) {
        weft__server_count_refused(server);
        reply_error(sc, WEFT_ELOGOFF, "the server is stopping");
        goto out;
    }
    if (!weft__server_enter(sc->conn)) {
        reply_error(sc, WEFT_ELIMIT, "the server's concurrency limit is reached");
        goto out;
    }
    sc->entered = true;
    size_t payload = weft_iobuf_length(&msg->payload);
    int32_t att = meta->has_attachment_size ? meta->attachment_size : 0;
    if (att < 0 || (size_t)att > payload) {
        reply_error(sc, WEFT_EREQUEST, "attachment_size is larger than the payload");
        goto out;
    }
    int error;
    sc->method = weft__server_find(server, meta->request->service_name,
                                   meta->request->method_name, &error);
    if (!sc->method) {
        reply_error(sc, error, error == WEFT_ENOSERVICE ? "no such service" : "no such method");
        goto out;
    }
    weft_iobuf_t body = WEFT_IOBUF_INIT;
    weft_iobuf_cutn(&body, &msg->payload, payload - (size_t)att);
    weft_iobuf_move(&sc->cntl.request_attachment, &msg->payload);
    ProtobufCAllocator alloc;
    weft__arena_pb_allocator(&sc->arena, &alloc);
    const char *why = NULL;
    sc->request = decode_message(meta, &body,
                                 sc->method->service->methods[sc->method->index].input,
                                 weft__server_max_body(server), weft__server_max_nesting(server),
                                 &alloc, &why);
    weft_iobuf_clear(&body);
    if (!sc->request) {
        reply_error(sc, WEFT_EREQUEST, why);
        goto out;
    }
    if (auth != 0) {
        sc->close_after = true;
        reply_error(sc, WEFT_ERPCAUTH, "authentication failed");
        goto out;
    }
    run_handler(sc);
out:
    weft__rpc_msg_free(msg);
}

/* ---- client ---- */

static int pack_request(weft_iobuf_t *out, weft__call_t *call, bool with_auth)
{
    weft_controller_t *cntl = call->cntl;
    weft_channel_t *ch = call->channel;
    const weft_channel_options_t *opts = weft__channel_options(ch);
    Weft__Baidu__RpcMeta meta = WEFT__BAIDU__RPC_META__INIT;
    Weft__Baidu__RpcRequestMeta rq = WEFT__BAIDU__RPC_REQUEST_META__INIT;
    rq.service_name = (char *)call->service_name;
    rq.method_name = (char *)call->method_name;
    if (cntl->has_log_id) {
        rq.has_log_id = 1;
        rq.log_id = cntl->log_id;
    }
    if (call->deadline_ns >= 0) {
        int64_t left = (call->deadline_ns - weft_clock_ns()) / WEFT_NS_PER_MS;
        rq.has_timeout_ms = 1;
        rq.timeout_ms = left < 1 ? 1 : (left > INT32_MAX ? INT32_MAX : (int32_t)left);
    }
    meta.request = &rq;
    meta.has_correlation_id = 1;
    meta.correlation_id = (int64_t)weft__call_id(call);
    if (call->compress != WEFT_COMPRESS_NONE) {
        meta.has_compress_type = 1;
        meta.compress_type = call->compress;
    }
    uint8_t crc[4];
    if (opts->checksum) {
        weft__crc32c_store_be(call->request_crc, crc);
        meta.has_checksum_type = meta.has_checksum_value = 1;
        meta.checksum_type = CHECKSUM_CRC32C;
        meta.checksum_value.len = 4;
        meta.checksum_value.data = crc;
    }
    if (with_auth && opts->auth_data) {
        meta.has_authentication_data = 1;
        meta.authentication_data.data = (uint8_t *)opts->auth_data;
        meta.authentication_data.len = opts->auth_len;
    }
    Weft__Baidu__UserField fields[cntl->nuser_fields ? cntl->nuser_fields : 1];
    Weft__Baidu__UserField *fieldp[cntl->nuser_fields ? cntl->nuser_fields : 1];
    for (int i = 0; i < cntl->nuser_fields; i++) {
        weft__baidu__user_field__init(&fields[i]);
        fields[i].key = cntl->user_fields[i].key;
        fields[i].value = cntl->user_fields[i].value;
        fieldp[i] = &fields[i];
    }
    meta.n_user_fields = (size_t)cntl->nuser_fields;
    meta.user_fields = fieldp;
    size_t att = weft_iobuf_length(&cntl->request_attachment);
    if (att) {
        meta.has_attachment_size = 1;
        meta.attachment_size = (int32_t)att;
    }
    weft_iobuf_t body = WEFT_IOBUF_INIT;
    int rc = weft_iobuf_append_buf(&body, &call->request);
    if (rc == 0 && att)
        rc = weft_iobuf_append_buf(&body, &cntl->request_attachment);
    if (rc != 0) {
        weft_iobuf_clear(&body);
        return rc;
    }
    return frame(out, &meta, &body);
}

static int encode_request(weft__call_t *call, const ProtobufCMessage *request,
                          const weft_iobuf_t *raw)
{
    Weft__Baidu__RpcMeta unused = WEFT__BAIDU__RPC_META__INIT;
    uint8_t crc[4];
    bool checksum = weft__channel_options(call->channel)->checksum;
    int rc = raw ? weft_iobuf_append_buf(&call->request, raw)
                 : (weft_iobuf_append_pb(&call->request, request) < 0 ? -ENOMEM : 0);
    if (rc == 0)
        rc = seal_message(call->compress, checksum, &unused, crc, &call->request);
    if (rc == 0 && checksum)
        call->request_crc = weft__crc32c_mask(weft__crc32c_iobuf(&call->request));
    return rc;
}

/* A raw call's response: checked and decompressed, not unpacked. Returns
 * NULL or why it is bad. */
static const char *decode_raw(const Weft__Baidu__RpcMeta *meta, weft_iobuf_t *body,
                              weft_iobuf_t *out)
{
    if (!checksum_ok(meta, body))
        return "checksum mismatch";
    int type = meta->has_compress_type ? meta->compress_type : WEFT_COMPRESS_NONE;
    if (type == WEFT_COMPRESS_NONE)
        return weft_iobuf_append_buf(out, body) == 0 ? NULL : "out of memory";
    int rc = weft__decompress(type, body, out, WEFT__DEFAULT_MAX_BODY);
    return rc == 0 ? NULL : rc == -ENOTSUP ? "unsupported compress_type" : "cannot decompress";
}

static void process_response(weft__rpc_msg_t *msg)
{
    weft_socket_t *sock = msg->base.socket;
    if (msg->kind != KIND_RPC) {
        WEFT_LOG_EVERY_SEC(WEFT_LOG_WARN, "baidu_std: unexpected stream frame from a server");
        goto out;
    }
    Weft__Baidu__RpcMeta *meta = unpack_meta(&msg->meta);
    if (!meta || !meta->has_correlation_id) {
        WEFT_LOG_EVERY_SEC(WEFT_LOG_WARN, "baidu_std: bad response meta; closing the connection");
        if (meta)
            weft__baidu__rpc_meta__free_unpacked(meta, NULL);
        weft_socket_set_failed(weft_socket_id(sock), WEFT_EREQUEST);
        goto out;
    }
    weft__client_conn_authenticated(sock);
    weft__call_t *call = weft__call_lock((uint64_t)meta->correlation_id);
    if (!call) {
        /* Its call timed out or was answered by a backup: drop it. */
        weft__baidu__rpc_meta__free_unpacked(meta, NULL);
        goto out;
    }
    weft_controller_t *cntl = call->cntl;
    int code = meta->response && meta->response->has_error_code ? meta->response->error_code : 0;
    if (code != 0) {
        /* A server stopping or at its limit is worth another attempt. */
        if (weft__call_retriable(code))
            weft__call_attempt_failed(call, weft_socket_id(sock), code, meta->response->error_text);
        else
            weft__call_complete(call, code, meta->response->error_text);
        weft__baidu__rpc_meta__free_unpacked(meta, NULL);
        goto out;
    }
    size_t payload = weft_iobuf_length(&msg->payload);
    int32_t att = meta->has_attachment_size ? meta->attachment_size : 0;
    if (att < 0 || (size_t)att > payload) {
        weft__call_complete(call, WEFT_EREQUEST, "attachment_size is larger than the payload");
        weft__baidu__rpc_meta__free_unpacked(meta, NULL);
        goto out;
    }
    weft_iobuf_t body = WEFT_IOBUF_INIT;
    weft_iobuf_cutn(&body, &msg->payload, payload - (size_t)att);
    weft_iobuf_clear(&cntl->response_attachment);
    weft_iobuf_move(&cntl->response_attachment, &msg->payload);
    const char *why = NULL;
    if (call->raw_response)
        why = decode_raw(meta, &body, call->raw_response);
    else
        call->response = decode_message(meta, &body,
                                        call->service->methods[call->method_index].output,
                                        WEFT__DEFAULT_MAX_BODY, WEFT__PB_CHECK_MAX_DEPTH, NULL,
                                        &why);
    weft_iobuf_clear(&body);
    weft__baidu__rpc_meta__free_unpacked(meta, NULL);
    weft__call_complete(call, why ? WEFT_EREQUEST : 0, why);
out:
    weft__rpc_msg_free(msg);
}

const weft__protocol_t weft__baidu_std = {
    .name = "baidu_std",
    .parse = parse,
    .process_request = process_request,
    .process_response = process_response,
    .encode_request = encode_request,
    .pack_request = pack_request,
};
