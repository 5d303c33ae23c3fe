/*
 * channel.h - calling services.
 *
 * A channel is a client of one service endpoint or of a group of them:
 * "host:port", "unix:/path", or a naming URL such as "list://a:1,b:2"
 * (several servers; the load balancer picks one per call, "rr" round robin
 * or "random"). Calls are synchronous (the calling fiber waits; from a
 * pthread, the thread waits) or asynchronous (a done callback runs in a
 * fiber). Channels are thread-safe and meant to be shared: one per target
 * is enough for a whole program.
 *
 * Connections: "single" (default) multiplexes every call over one
 * connection per server, answered in any order; "pooled" takes a connection
 * per call from a pool; "short" opens one per call. A broken connection
 * fails the calls on it with WEFT_EFAILEDSOCKET and is reopened on demand,
 * with backoff. Connection failures are retried (max_retries), timeouts are
 * not. A backup request, when configured, goes out if the first has not
 * been answered after backup_request_ms; the first answer wins.
 */
#ifndef WEFT_RPC_CHANNEL_H
#define WEFT_RPC_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "controller.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_channel weft_channel_t;

typedef enum weft_connection_type {
    WEFT_CONNECTION_SINGLE = 0,
    WEFT_CONNECTION_POOLED = 1,
    WEFT_CONNECTION_SHORT = 2,
} weft_connection_type_t;

typedef struct weft_channel_options {
    int64_t timeout_ms;         /* per call; default 500; < 0: none */
    int64_t connect_timeout_ms; /* default 200 */
    int max_retries;            /* default 3 */
    int64_t backup_request_ms;  /* < 0 (default): no backup requests */
    weft_connection_type_t connection_type;
    int compress_type;          /* WEFT_COMPRESS_* for requests */
    bool checksum;              /* CRC32C over the message bytes */
    const void *auth_data;      /* credential sent on each new connection */
    size_t auth_len;
    const char *load_balancer;  /* "rr" (default) or "random" */
    const char *protocol;       /* "baidu_std" (default) */
} weft_channel_options_t;

/* The defaults; use it to initialise options before changing fields. */
#define WEFT_CHANNEL_OPTIONS_INIT                                                 \
    {                                                                             \
        .timeout_ms = 500, .connect_timeout_ms = 200, .max_retries = 3,           \
        .backup_request_ms = -1, .connection_type = WEFT_CONNECTION_SINGLE,       \
    }

/* opts may be NULL for the defaults. Does not connect yet. 0 or -EINVAL
 * (bad target or options) or -EHOSTUNREACH (a name did not resolve). */
int weft_channel_new(weft_channel_t **out, const char *target, const weft_channel_options_t *opts);

/* Waits for the channel's asynchronous calls to finish, then frees it. */
void weft_channel_free(weft_channel_t *ch);

/* Calls method `method_index` of `service` and waits. On success returns 0
 * and sets *response to the unpacked reply, owned by the caller (free it
 * with protobuf_c_message_free_unpacked(*response, NULL)). On failure
 * returns the error code (positive, also in cntl) and sets *response to
 * NULL. cntl may be reused after weft_controller_reset(). */
int weft_channel_call(weft_channel_t *ch, const ProtobufCServiceDescriptor *service,
                      unsigned method_index, weft_controller_t *cntl,
                      const ProtobufCMessage *request, ProtobufCMessage **response);

/* Called once when an asynchronous call finishes, in a fiber. The response
 * (NULL on failure) is the callback's to free. */
typedef void weft_call_done_fn(weft_controller_t *cntl, ProtobufCMessage *response, void *arg);

/* Starts the call and returns at once (0), or fails at once (an error code,
 * and done is not called). The request is serialized before this returns;
 * cntl must live until done has run. */
int weft_channel_call_async(weft_channel_t *ch, const ProtobufCServiceDescriptor *service,
                            unsigned method_index, weft_controller_t *cntl,
                            const ProtobufCMessage *request, weft_call_done_fn *done, void *arg);

/* Calls a method by name with a request already serialized (protobuf wire
 * bytes), for tools and proxies without generated code. On success the
 * serialized response is appended to *response. Returns 0 or the error
 * code (also in cntl). */
int weft_channel_call_raw(weft_channel_t *ch, const char *service, const char *method,
                          weft_controller_t *cntl, const weft_iobuf_t *request,
                          weft_iobuf_t *response);

#ifdef __cplusplus
}
#endif
#endif
