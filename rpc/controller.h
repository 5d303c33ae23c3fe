/*
 * controller.h - the state of one RPC, on either side.
 *
 * A client makes a controller, sets per-call options on it (timeout, log id,
 * request attachment, compression), makes the call, and reads the outcome
 * from it (error code and text, response attachment, latency). A server
 * hands one to each handler: the handler reads the request's metadata from
 * it, may set the response attachment, and reports a failure through it.
 *
 * Handler memory: a server-side controller carries an arena. The response
 * message the handler fills, and anything the handler allocates with
 * weft_controller_alloc() or weft_controller_strdup(), live until the
 * response has been sent; then they go at once. Fields of the response may
 * also point into the request, which lives as long. The framework never
 * frees a field of the response by itself, so static strings are fine too.
 *
 * Errors are weft's: 0 for success, else a WEFT_E* code (see
 * fiber/error.h) or an errno, as a positive number, with a text.
 */
#ifndef WEFT_RPC_CONTROLLER_H
#define WEFT_RPC_CONTROLLER_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../net/endpoint.h"
#include "../net/iobuf.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_controller weft_controller_t;

/* What a handler calls, once, when its response is ready (or it failed). It
 * may be called from any fiber or thread, after the handler returned. */
typedef struct weft_closure {
    void (*run)(struct weft_closure *self);
} weft_closure_t;

static inline void weft_closure_run(weft_closure_t *done)
{
    done->run(done);
}

/* Compression of the message part (never of the attachment). */
enum {
    WEFT_COMPRESS_NONE = 0,
    WEFT_COMPRESS_SNAPPY = 1, /* understood on the wire, not supported */
    WEFT_COMPRESS_GZIP = 2,
    WEFT_COMPRESS_ZLIB = 3,
};

weft_controller_t *weft_controller_new(void);
void weft_controller_free(weft_controller_t *c);

/* Makes a used client controller ready for the next call. */
void weft_controller_reset(weft_controller_t *c);

/* ---- outcome (both sides) ---- */

bool weft_controller_failed(const weft_controller_t *c);
int weft_controller_error_code(const weft_controller_t *c);
const char *weft_controller_error_text(const weft_controller_t *c);

/* Fails the call: a handler reports an error to its client this way. The
 * text is formatted like printf. code must be non-zero. */
void weft_controller_set_failed(weft_controller_t *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- per-call options (client) ---- */

/* Overrides the channel's timeout for this call; < 0: no deadline. */
void weft_controller_set_timeout_ms(weft_controller_t *c, int64_t ms);
void weft_controller_set_max_retries(weft_controller_t *c, int n);
void weft_controller_set_compress_type(weft_controller_t *c, int type);
void weft_controller_set_log_id(weft_controller_t *c, int64_t log_id);

/* Free-form key/value pairs sent with the request (user_fields). */
int weft_controller_set_user_field(weft_controller_t *c, const char *key, const char *value);
const char *weft_controller_user_field(const weft_controller_t *c, const char *key);

/* ---- attachments: raw bytes beside the message, never compressed ---- */

weft_iobuf_t *weft_controller_request_attachment(weft_controller_t *c);
weft_iobuf_t *weft_controller_response_attachment(weft_controller_t *c);

/* ---- what the call was ---- */

int64_t weft_controller_log_id(const weft_controller_t *c);
/* Client: the server called. Server: the client. */
const weft_endpoint_t *weft_controller_remote(const weft_controller_t *c);
/* Server: "package.Service" and "Method" of the request being handled. */
const char *weft_controller_service_name(const weft_controller_t *c);
const char *weft_controller_method_name(const weft_controller_t *c);
/* Server: the client's deadline (weft_clock_ns time) if it sent one, else
 * -1. Client: the call's deadline. */
int64_t weft_controller_deadline_ns(const weft_controller_t *c);
/* Client: retries made, and the latency of a finished call. */
int weft_controller_retried_count(const weft_controller_t *c);
int64_t weft_controller_latency_us(const weft_controller_t *c);
/* Server: what the authenticator attached to this connection. */
void *weft_controller_auth_context(const weft_controller_t *c);

/* ---- handler memory (server) ---- */

void *weft_controller_alloc(weft_controller_t *c, size_t size);
char *weft_controller_strdup(weft_controller_t *c, const char *s);

/* The controller of the request the calling fiber is handling, for
 * handlers written against protoc-c's own service interface (which has no
 * controller argument). NULL outside a handler. */
weft_controller_t *weft_controller_current(void);

/* ---- asynchronous calls (client) ---- */

/* Waits until an asynchronous call made with this controller has finished
 * and its done callback has returned. 0 at once if none is running. */
int weft_controller_join(weft_controller_t *c);

/* Ends the call now with ECANCELED if it has not finished. */
void weft_controller_cancel(weft_controller_t *c);

/* For generated stubs (protoc-gen-weft): a typed done callback kept on the
 * controller while an asynchronous call runs. */
void weft_controller_set_stub_done(weft_controller_t *c, void (*fn)(void));
void (*weft_controller_stub_done(const weft_controller_t *c))(void);

#ifdef __cplusplus
}
#endif
#endif
