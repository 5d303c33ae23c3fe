/*
 * server.h - serving protobuf-c services.
 *
 * A server listens on one address and serves every registered service on
 * it; one port speaks baidu_std (wire-compatible with Apache brpc) and, as
 * the protocols are added, HTTP and WebSocket: each connection sticks to the
 * protocol its first bytes match. Each request is handled in a fiber of its
 * own.
 *
 * Two ways to register a service:
 *  - weft_server_add_service(): the generated descriptor plus one function
 *    per method with weft's handler signature (controller, request,
 *    response, done). The stubs protoc-gen-weft writes wrap this with typed
 *    functions; see tools/protoc-gen-weft.
 *  - weft_server_add_protoc_service(): an implementation of protoc-c's own
 *    ProtobufCService; the controller is then weft_controller_current().
 *
 * Lifecycle: start() binds and accepts; stop() stops accepting, and requests
 * that arrive after it are answered with WEFT_ELOGOFF; join() waits until
 * every request in flight has been answered, then closes every connection
 * and waits until they are gone. free() after join().
 */
#ifndef WEFT_RPC_SERVER_H
#define WEFT_RPC_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "../net/endpoint.h"
#include "controller.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_server weft_server_t;

/* Checks the credential a client sent with the first request of a
 * connection. Returns 0 to accept (optionally setting *ctx, which handlers
 * read with weft_controller_auth_context()), anything else to refuse: the
 * request is answered with WEFT_ERPCAUTH and the connection closed. */
typedef int weft_authenticate_fn(const void *credential, size_t len, const weft_endpoint_t *remote,
                                 void **ctx, void *arg);

typedef struct weft_server_options {
    size_t max_body_size;          /* bytes of a request frame; 0: 64 MiB */
    int max_concurrency;           /* requests handled at once; 0: no limit;
                                      past it, WEFT_ELIMIT */
    int idle_timeout_s;            /* close connections idle this long; 0: never */
    int read_timeout_ms;           /* close a connection whose request stays
                                      incomplete this long; 0: never */
    int max_nesting;               /* deepest message nesting accepted; 0: 64, at most 100 */
    weft_authenticate_fn *authenticate; /* NULL: no authentication */
    void *auth_arg;
} weft_server_options_t;

/* A handler: fill *response (already initialised, in the controller's
 * arena) and call weft_closure_run(done), now or later from any fiber. On
 * failure call weft_controller_set_failed() before done. */
typedef void weft_method_fn(weft_controller_t *cntl, const ProtobufCMessage *request,
                            ProtobufCMessage *response, weft_closure_t *done, void *arg);

/* opts may be NULL for the defaults. */
int weft_server_new(weft_server_t **out, const weft_server_options_t *opts);

/* methods[i] handles desc->methods[i]; arg is passed to each. Returns 0,
 * -EEXIST (a service of that name is there), -EBUSY (already started),
 * -EINVAL. */
int weft_server_add_service(weft_server_t *s, const ProtobufCServiceDescriptor *desc,
                            weft_method_fn *const *methods, void *arg);

/* protoc-c's interface: service->invoke() is called for each request; the
 * closure it gets must be called exactly once with the response. */
int weft_server_add_protoc_service(weft_server_t *s, ProtobufCService *service);

/* "host:port" (port 0: any free port), "[::]:port", "unix:/path". */
int weft_server_start(weft_server_t *s, const char *address);

/* The address actually bound, valid after start. */
const weft_endpoint_t *weft_server_endpoint(const weft_server_t *s);

int weft_server_stop(weft_server_t *s);
int weft_server_join(weft_server_t *s);
void weft_server_free(weft_server_t *s);

typedef struct weft_server_stats {
    int64_t connections;     /* open now */
    int64_t requests;        /* received in all */
    int64_t inflight;        /* being handled now */
    int64_t errors;          /* answered with an error */
} weft_server_stats_t;

void weft_server_stats(const weft_server_t *s, weft_server_stats_t *out);

#ifdef __cplusplus
}
#endif
#endif
