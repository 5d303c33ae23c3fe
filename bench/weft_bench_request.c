/*
 * weft_bench_request.c - which methods weft-bench knows, and the bytes of
 * the request it sends.
 *
 * Every call goes out through weft_channel_call_raw() with the request
 * already serialized: the tool packs it once, so calls spend no client CPU
 * on protobuf and any method of any server can be called, with or without
 * generated code. Generated code matters only for --input (JSON needs the
 * request's descriptor) and --print-response: the services whose
 * descriptors are compiled in are listed in known_services[] below; to
 * teach the tool another service, compile its .proto in (bench/meson.build)
 * and add its descriptor there.
 *
 * Without a descriptor, --payload-size N writes the protobuf wire bytes of
 * a message whose field --field holds N bytes: tag (field << 3 | 2), the
 * length as a varint, the bytes. Field 1 is the first string or bytes
 * field of most requests (example.EchoRequest.message). The bytes are
 * printable ASCII, so that a string field stays valid UTF-8.
 */
#include "bench/weft_bench.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fiber/error.h"
#include "rpc/json.h"

#include "echo.pb-c.h"

static const ProtobufCServiceDescriptor *const known_services[] = {
    &example__echo_service__descriptor,
};

#define NKNOWN (sizeof(known_services) / sizeof(known_services[0]))
#define MAX_FILE (64L << 20)

static int out_of_memory(void)
{
    wb_say("out of memory");
    return WB_EXIT_FAILED;
}

void wb_methods_list(FILE *out)
{
    for (size_t i = 0; i < NKNOWN; i++) {
        const ProtobufCServiceDescriptor *s = known_services[i];
        for (unsigned j = 0; j < s->n_methods; j++)
            fprintf(out, "%s.%s(%s) returns (%s)\n", s->name, s->methods[j].name,
                    s->methods[j].input->name, s->methods[j].output->name);
    }
}

static const ProtobufCMethodDescriptor *find_known(const char *service, const char *method)
{
    for (size_t i = 0; i < NKNOWN; i++)
        if (strcmp(known_services[i]->name, service) == 0)
            return protobuf_c_service_descriptor_get_method_by_name(known_services[i], method);
    return NULL;
}

int wb_method_resolve(const char *full, wb_method_t *m)
{
    memset(m, 0, sizeof(*m));
    const char *dot = strrchr(full, '.');
    size_t slen = dot ? (size_t)(dot - full) : 0;
    if (!dot || slen == 0 || !dot[1] || slen >= sizeof(m->service) ||
        strlen(dot + 1) >= sizeof(m->name))
        return wb_usage_error("--method: expected a full method name like "
                              "example.EchoService.Echo, got '%s'",
                              full);
    memcpy(m->service, full, slen);
    snprintf(m->name, sizeof(m->name), "%s", dot + 1);
    m->desc = find_known(m->service, m->name);
    return WB_EXIT_OK;
}

/* ---- request bodies ---- */

static size_t varint_encode(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        if (out)
            out[n] = (uint8_t)(b | (v ? 0x80 : 0));
        n++;
    } while (v);
    return n;
}

size_t wb_payload_encode(uint8_t *out, long field, size_t len)
{
    size_t n = varint_encode(out, (uint64_t)field << 3 | 2);
    n += varint_encode(out ? out + n : NULL, len);
    if (out)
        for (size_t i = 0; i < len; i++)
            out[n + i] = (uint8_t)('a' + i % 26);
    return n + len;
}

/* Reads a whole file. 0 or -errno (-EFBIG past MAX_FILE). */
static int read_file(const char *path, uint8_t **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (;;) {
        if (n == cap) {
            uint8_t *more = cap < (size_t)MAX_FILE ? realloc(buf, cap ? 2 * cap : 4096) : NULL;
            if (!more) {
                rc = cap < (size_t)MAX_FILE ? -ENOMEM : -EFBIG;
                break;
            }
            buf = more;
            cap = cap ? 2 * cap : 4096;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            rc = ferror(f) ? -(errno ? errno : EIO) : 0;
            break;
        }
    }
    fclose(f);
    if (rc != 0) {
        free(buf);
        return rc;
    }
    *data = buf;
    *len = n;
    return 0;
}

/* --input: JSON text, or @FILE holding it, packed with the descriptor. */
static int body_from_json(const wb_options_t *o, const wb_method_t *m, wb_request_t *r)
{
    if (!m->desc)
        return wb_usage_error("--input: %s is not compiled into %s, so JSON cannot be converted "
                              "(see --list-methods); use --payload-size or --request-file",
                              o->method, WB_NAME);
    uint8_t *text = (uint8_t *)o->input;
    size_t len = strlen(o->input);
    if (o->input[0] == '@') {
        int rc = read_file(o->input + 1, &text, &len);
        if (rc != 0)
            return wb_usage_error("--input: cannot read %s: %s", o->input + 1, weft_strerror(rc));
    }
    ProtobufCMessage *msg = NULL;
    weft_json_error_t err;
    int rc = weft__json_parse_message((const char *)text, len, m->desc->input, NULL, &msg, &err);
    if (text != (const uint8_t *)o->input)
        free(text);
    if (rc != 0)
        return wb_usage_error("--input: %s", rc == -ENOMEM ? "out of memory" : err.message);
    r->body_len = protobuf_c_message_get_packed_size(msg);
    r->body = malloc(r->body_len + 1);
    if (r->body)
        protobuf_c_message_pack(msg, r->body);
    protobuf_c_message_free_unpacked(msg, NULL);
    return r->body ? WB_EXIT_OK : out_of_memory();
}

static int body_from_payload(const wb_options_t *o, wb_request_t *r)
{
    size_t n = wb_payload_encode(NULL, o->field, (size_t)o->payload_size);
    r->body = malloc(n);
    if (!r->body)
        return out_of_memory();
    r->body_len = wb_payload_encode(r->body, o->field, (size_t)o->payload_size);
    return WB_EXIT_OK;
}

static int body_from_file(const wb_options_t *o, wb_request_t *r)
{
    int rc = read_file(o->request_file, &r->body, &r->body_len);
    if (rc != 0)
        return wb_usage_error("--request-file: cannot read %s: %s", o->request_file,
                              weft_strerror(rc));
    return WB_EXIT_OK;
}

int wb_request_build(const wb_options_t *o, const wb_method_t *m, wb_request_t *r)
{
    memset(r, 0, sizeof(*r));
    int rc = WB_EXIT_OK;
    if (o->input)
        rc = body_from_json(o, m, r);
    else if (o->payload_size >= 0)
        rc = body_from_payload(o, r);
    else if (o->request_file)
        rc = body_from_file(o, r);
    if (rc == WB_EXIT_OK && o->attachment_size > 0) {
        r->attachment_len = (size_t)o->attachment_size;
        r->attachment = malloc(r->attachment_len);
        if (!r->attachment)
            return out_of_memory();
        for (size_t i = 0; i < r->attachment_len; i++)
            r->attachment[i] = (uint8_t)i;
    }
    return rc;
}

void wb_request_free(wb_request_t *r)
{
    free(r->body);
    free(r->attachment);
    memset(r, 0, sizeof(*r));
}

/* ---- responses ---- */

static void describe_raw(const weft_iobuf_t *response, size_t attachment_len, char *out,
                         size_t size)
{
    uint8_t head[32];
    size_t n = weft_iobuf_copy_out(response, 0, head, sizeof(head));
    int w = snprintf(out, size, "%zu bytes of response, %zu of attachment; first bytes:",
                     weft_iobuf_length(response), attachment_len);
    for (size_t i = 0; i < n && w > 0 && (size_t)w < size; i++)
        w += snprintf(out + w, size - (size_t)w, " %02x", head[i]);
}

void wb_response_describe(const wb_method_t *m, const weft_iobuf_t *response, size_t attachment_len,
                          char *out, size_t size, bool *is_json)
{
    ProtobufCMessage *msg = NULL;
    *is_json = false;
    if (!m->desc || weft_iobuf_unpack_pb(response, m->desc->output, NULL, &msg) != 0) {
        describe_raw(response, attachment_len, out, size);
        return;
    }
    weft_json_buf_t b = WEFT_JSON_BUF_INIT;
    if (weft__json_write_message(&b, msg, 0) == 0 && b.len < size) {
        memcpy(out, b.data, b.len + 1);
        *is_json = true;
    } else {
        describe_raw(response, attachment_len, out, size);
    }
    weft__json_buf_free(&b);
    protobuf_c_message_free_unpacked(msg, NULL);
}
