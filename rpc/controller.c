/*
 * controller.c - controllers and the request arena.
 *
 * The arena makes server-side memory simple: the request is unpacked into
 * it, the response is built in it, handlers allocate from it, and when the
 * response is sent it all goes with a few free() calls, whatever pointers
 * the handler stored in the response.
 */
#include "rpc/rpc_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fiber/butex.h"
#include "fiber/error.h"
#include "fiber/fiber_internal.h"

#define ARENA_CHUNK 4096

struct weft__arena_chunk {
    weft__arena_chunk_t *next;
    max_align_t data[];
};

static void *arena_chunk(weft__arena_t *a, size_t bytes)
{
    weft__arena_chunk_t *c = malloc(sizeof(*c) + bytes);
    if (!c)
        return NULL;
    c->next = a->chunks;
    a->chunks = c;
    return c->data;
}

void *weft__arena_alloc(weft__arena_t *a, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    if ((size_t)(a->end - a->cur) >= size) {
        void *p = a->cur;
        a->cur += size;
        return p;
    }
    if (size > ARENA_CHUNK / 4)
        return arena_chunk(a, size); /* its own chunk; the current one stays */
    char *mem = arena_chunk(a, ARENA_CHUNK);
    if (!mem)
        return NULL;
    a->cur = mem + size;
    a->end = mem + ARENA_CHUNK;
    return mem;
}

void weft__arena_free_all(weft__arena_t *a)
{
    weft__arena_chunk_t *c = a->chunks;
    while (c) {
        weft__arena_chunk_t *next = c->next;
        free(c);
        c = next;
    }
    a->chunks = NULL;
    a->cur = a->end = NULL;
}

static void *arena_pb_alloc(void *data, size_t size)
{
    return weft__arena_alloc(data, size);
}

static void arena_pb_free(void *data, void *ptr)
{
    (void)data;
    (void)ptr;
}

void weft__arena_pb_allocator(weft__arena_t *a, ProtobufCAllocator *out)
{
    out->alloc = arena_pb_alloc;
    out->free = arena_pb_free;
    out->allocator_data = a;
}

/* ---- controller ---- */

void weft__controller_init(weft_controller_t *c, bool server_side)
{
    memset(c, 0, sizeof(*c));
    c->timeout_ms = WEFT__UNSET;
    c->max_retries = -1;
    c->deadline_ns = -1;
    c->server_side = server_side;
    weft_iobuf_init(&c->request_attachment);
    weft_iobuf_init(&c->response_attachment);
}

static void clear_user_fields(weft_controller_t *c)
{
    for (int i = 0; i < c->nuser_fields; i++) {
        free(c->user_fields[i].key);
        free(c->user_fields[i].value);
    }
    free(c->user_fields);
    c->user_fields = NULL;
    c->nuser_fields = 0;
}

void weft__controller_destroy(weft_controller_t *c)
{
    free(c->error_text);
    c->error_text = NULL;
    clear_user_fields(c);
    weft_iobuf_clear(&c->request_attachment);
    weft_iobuf_clear(&c->response_attachment);
}

weft_controller_t *weft_controller_new(void)
{
    weft_controller_t *c = malloc(sizeof(*c));
    if (c)
        weft__controller_init(c, false);
    return c;
}

void weft_controller_free(weft_controller_t *c)
{
    if (!c)
        return;
    weft_controller_join(c);
    weft__controller_destroy(c);
    free(c);
}

void weft_controller_reset(weft_controller_t *c)
{
    weft_controller_join(c);
    weft__controller_destroy(c);
    weft__controller_init(c, c->server_side);
}

bool weft_controller_failed(const weft_controller_t *c)
{
    return c->error_code != 0;
}

int weft_controller_error_code(const weft_controller_t *c)
{
    return c->error_code;
}

const char *weft_controller_error_text(const weft_controller_t *c)
{
    if (c->error_text)
        return c->error_text;
    return c->error_code ? weft_strerror(c->error_code) : "";
}

void weft__controller_set_error(weft_controller_t *c, int code, const char *text)
{
    c->error_code = code < 0 ? -code : code;
    free(c->error_text);
    c->error_text = text ? strdup(text) : NULL;
}

static int set_errorv(weft_controller_t *c, int code, const char *fmt, va_list ap)
{
    char buf[512];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    weft__controller_set_error(c, code, buf);
    return c->error_code;
}

int weft__controller_set_errorf(weft_controller_t *c, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = set_errorv(c, code, fmt, ap);
    va_end(ap);
    return rc;
}

void weft_controller_set_failed(weft_controller_t *c, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_errorv(c, code ? code : WEFT_EINTERNAL, fmt, ap);
    va_end(ap);
}

void weft_controller_set_timeout_ms(weft_controller_t *c, int64_t ms)
{
    c->timeout_ms = ms;
}

void weft_controller_set_max_retries(weft_controller_t *c, int n)
{
    c->max_retries = n;
}

void weft_controller_set_compress_type(weft_controller_t *c, int type)
{
    c->compress_type = type;
}

void weft_controller_set_log_id(weft_controller_t *c, int64_t log_id)
{
    c->log_id = log_id;
    c->has_log_id = true;
}

int weft_controller_set_user_field(weft_controller_t *c, const char *key, const char *value)
{
    for (int i = 0; i < c->nuser_fields; i++) {
        if (!strcmp(c->user_fields[i].key, key)) {
            char *v = strdup(value);
            if (!v)
                return -ENOMEM;
            free(c->user_fields[i].value);
            c->user_fields[i].value = v;
            return 0;
        }
    }
    weft__user_field_t *f = realloc(c->user_fields, sizeof(*f) * (size_t)(c->nuser_fields + 1));
    if (!f)
        return -ENOMEM;
    c->user_fields = f;
    f[c->nuser_fields].key = strdup(key);
    f[c->nuser_fields].value = strdup(value);
    if (!f[c->nuser_fields].key || !f[c->nuser_fields].value) {
        free(f[c->nuser_fields].key);
        free(f[c->nuser_fields].value);
        return -ENOMEM;
    }
    c->nuser_fields++;
    return 0;
}

const char *weft_controller_user_field(const weft_controller_t *c, const char *key)
{
    for (int i = 0; i < c->nuser_fields; i++)
        if (!strcmp(c->user_fields[i].key, key))
            return c->user_fields[i].value;
    return NULL;
}

weft_iobuf_t *weft_controller_request_attachment(weft_controller_t *c)
{
    return &c->request_attachment;
}

weft_iobuf_t *weft_controller_response_attachment(weft_controller_t *c)
{
    return &c->response_attachment;
}

int64_t weft_controller_log_id(const weft_controller_t *c)
{
    return c->log_id;
}

const weft_endpoint_t *weft_controller_remote(const weft_controller_t *c)
{
    return &c->remote;
}

const char *weft_controller_service_name(const weft_controller_t *c)
{
    return c->service_name;
}

const char *weft_controller_method_name(const weft_controller_t *c)
{
    return c->method_name;
}

int64_t weft_controller_deadline_ns(const weft_controller_t *c)
{
    return c->deadline_ns;
}

int weft_controller_retried_count(const weft_controller_t *c)
{
    return c->retried;
}

int64_t weft_controller_latency_us(const weft_controller_t *c)
{
    return c->latency_us;
}

void *weft_controller_auth_context(const weft_controller_t *c)
{
    return c->auth_ctx;
}

void *weft_controller_alloc(weft_controller_t *c, size_t size)
{
    return c->arena ? weft__arena_alloc(c->arena, size) : NULL;
}

char *weft_controller_strdup(weft_controller_t *c, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = weft_controller_alloc(c, n);
    if (p)
        memcpy(p, s, n);
    return p;
}

void weft_controller_set_stub_done(weft_controller_t *c, void (*fn)(void))
{
    c->stub_done = fn;
}

void (*weft_controller_stub_done(const weft_controller_t *c))(void)
{
    return c->stub_done;
}

/* ---- the controller of the request a fiber handles ---- */

static weft_fiber_key_t current_key;
static pthread_once_t current_once = PTHREAD_ONCE_INIT;

static void current_key_create(void)
{
    weft_fiber_key_create(&current_key, NULL);
}

void weft__controller_set_current(weft_controller_t *c)
{
    pthread_once(&current_once, current_key_create);
    weft_fiber_setspecific(current_key, c);
}

weft_controller_t *weft_controller_current(void)
{
    pthread_once(&current_once, current_key_create);
    return weft_fiber_getspecific(current_key);
}

