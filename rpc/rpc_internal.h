/*
 * rpc_internal.h - what controller.c, server.c, channel.c and the protocol
 * implementations share. Not installed.
 */
#ifndef WEFT_RPC_RPC_INTERNAL_H
#define WEFT_RPC_RPC_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "fiber/fiber.h"
#include "net/socket.h"
#include "rpc/channel.h"
#include "rpc/controller.h"
#include "rpc/server.h"

/* ---- arena: memory that goes all at once when a request is done ---- */

typedef struct weft__arena_chunk weft__arena_chunk_t;

typedef struct weft__arena {
    weft__arena_chunk_t *chunks;
    char *cur, *end;
} weft__arena_t;

void *weft__arena_alloc(weft__arena_t *a, size_t size);
void weft__arena_free_all(weft__arena_t *a);
/* A protobuf-c allocator that allocates from the arena and never frees. */
void weft__arena_pb_allocator(weft__arena_t *a, ProtobufCAllocator *out);

/* ---- controller ---- */

typedef struct weft__user_field {
    char *key, *value;
} weft__user_field_t;

#define WEFT__UNSET INT64_MIN

struct weft_controller {
    /* outcome */
    int error_code;
    char *error_text;
    /* per-call options (client) */
    int64_t timeout_ms;            /* WEFT__UNSET: the channel's */
    int max_retries;               /* < 0: the channel's */
    int compress_type;             /* client: of requests; server: of the response */
    bool has_log_id;
    int64_t log_id;
    weft__user_field_t *user_fields;
    int nuser_fields;
    weft_iobuf_t request_attachment;
    weft_iobuf_t response_attachment;
    /* what the call was */
    weft_endpoint_t remote;
    const char *service_name;
    const char *method_name;
    int64_t deadline_ns;
    int retried;
    int64_t start_ns;
    int64_t latency_us;
    void *auth_ctx;
    /* server: memory of the request being handled */
    weft__arena_t *arena;
    /* client: the call in progress, for join and cancel */
    uint64_t call_id;              /* 0 when no asynchronous call runs */
    int32_t join_expect;           /* the call's join_seq when it started */
    void (*stub_done)(void);
    bool server_side;
};

/* Sets up a controller embedded in a larger object (server side). */
void weft__controller_init(weft_controller_t *c, bool server_side);
void weft__controller_destroy(weft_controller_t *c);
void weft__controller_set_error(weft_controller_t *c, int code, const char *text);
/* What weft_controller_current() returns in this fiber from now on. */
void weft__controller_set_current(weft_controller_t *c);
int weft__controller_set_errorf(weft_controller_t *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- protocols ---- */

enum {
    WEFT__PARSE_OK = 0,        /* *out holds a message */
    WEFT__PARSE_NEED_MORE = 1, /* a frame of this protocol, incomplete */
    WEFT__PARSE_NOT_MINE = 2,  /* these bytes are not this protocol's */
};

typedef struct weft__protocol weft__protocol_t;

/* One frame cut off a connection. */
typedef struct weft__rpc_msg {
    weft_socket_msg_t base;            /* must be first: see net/socket.h */
    const weft__protocol_t *protocol;
    weft_iobuf_t meta;
    weft_iobuf_t payload;
    int64_t received_ns;
    int kind;                          /* protocol-specific frame kind */
} weft__rpc_msg_t;

weft__rpc_msg_t *weft__rpc_msg_new(const weft__protocol_t *p);
void weft__rpc_msg_free(weft__rpc_msg_t *m);

struct weft__call;

struct weft__protocol {
    const char *name;
    /* Cuts one frame off the front of `in`. Returns WEFT__PARSE_*, or a
     * negative error for bytes that claim to be this protocol's but are
     * broken (the connection is closed). */
    int (*parse)(weft_iobuf_t *in, size_t max_body, weft__rpc_msg_t **out);
    /* Server side: handles a request frame (owns msg). */
    void (*process_request)(weft__rpc_msg_t *msg);
    /* Client side: handles a response frame (owns msg). */
    void (*process_response)(weft__rpc_msg_t *msg);
    /* Client side: serializes the message of a new call into call->request
     * (once: retries and backups reuse it). A raw call passes the bytes. */
    int (*encode_request)(struct weft__call *call, const ProtobufCMessage *request,
                          const weft_iobuf_t *raw);
    /* Client side: one frame of the call for the wire. */
    int (*pack_request)(weft_iobuf_t *out, struct weft__call *call, bool with_auth);
};

#define WEFT__DEFAULT_MAX_BODY (64u << 20)

extern const weft__protocol_t weft__baidu_std;

/* The protocols a server connection tries on its first bytes, in order. */
extern const weft__protocol_t *const weft__server_protocols[];

const weft__protocol_t *weft__protocol_find(const char *name);

/* ---- server side, for protocols ---- */

/* A registered method: what a request names, and how to run it. */
typedef struct weft__method {
    const ProtobufCServiceDescriptor *service;
    unsigned index;
    weft_method_fn *fn;          /* weft handler, or NULL for a protoc service */
    void *arg;
    ProtobufCService *protoc;    /* protoc-c implementation, or NULL */
} weft__method_t;

/* Per-connection state of a server connection (the socket's user). */
typedef struct weft__server_conn weft__server_conn_t;

weft_server_t *weft__conn_server(const weft__server_conn_t *c);

/* Steps of the server behaviour that do not depend on the protocol. */
bool weft__server_stopping(const weft_server_t *s);
/* Counts a request in on its connection and takes a concurrency slot;
 * false (nothing taken) past max_concurrency. leave() undoes it. */
bool weft__server_enter(weft__server_conn_t *c);
void weft__server_leave(weft__server_conn_t *c, bool failed);
/* A request answered without entering (the server is stopping). */
void weft__server_count_refused(weft_server_t *s);
const weft__method_t *weft__server_find(const weft_server_t *s, const char *service,
                                        const char *method, int *error);
int weft__server_max_nesting(const weft_server_t *s);
size_t weft__server_max_body(const weft_server_t *s);
/* Authenticates the connection's first request; later calls return the
 * first verdict. 0 or WEFT_ERPCAUTH. */
int weft__server_authenticate(weft_server_t *s, weft_socket_t *sock, const void *data, size_t len,
                              void **ctx);

/* ---- client side, for protocols ---- */

/* One call: the state a response, a timeout, a connection failure or a
 * cancel race to complete. Addressed by a versioned id, which is the
 * correlation id on the wire. */
typedef struct weft__call {
    uint32_t version;            /* bumped when the call completes */
    uint32_t slot;
    int32_t lock;                /* weft_mutex_t state */
    weft_channel_t *channel;
    weft_controller_t *cntl;
    const ProtobufCServiceDescriptor *service; /* NULL for a raw call */
    unsigned method_index;
    const char *service_name;    /* what the request names */
    const char *method_name;
    weft_iobuf_t *raw_response;  /* raw call: where the response bytes go */
    weft_iobuf_t request;        /* packed message (compressed), kept for retries */
    int compress;                /* WEFT_COMPRESS_* of request */
    uint32_t request_crc;        /* masked CRC32C of request, if checksummed */
    ProtobufCMessage *response;  /* on success */
    weft_call_done_fn *done;     /* async */
    void *done_arg;
    int64_t deadline_ns;
    int attempts;                /* requests sent, backups included */
    int max_retries;
    int32_t finished;            /* butex for a synchronous caller */
    int32_t join_seq;            /* bumped once an async call's done returned */
    weft_fiber_t done_fiber;     /* the fiber running an async call's done */
    uint64_t timer;              /* deadline timer (async) */
    uint64_t backup_timer;
    uint64_t sockets[2];         /* connections the attempts went out on */
} weft__call_t;

static inline uint64_t weft__call_id(const weft__call_t *c)
{
    return ((uint64_t)c->version << 32) | c->slot;
}

/* Locks the call if `id` is still current; NULL if it completed. */
weft__call_t *weft__call_lock(uint64_t id);
void weft__call_unlock(weft__call_t *c);

/* With the call locked: ends it with an error code (0 for success, with
 * c->response set). Unlocks it. */
void weft__call_complete(weft__call_t *c, int error, const char *text);

/* With the call locked: the attempt on `socket` (0: none was made) failed
 * with `error`; retry if the policy allows, else complete with error and
 * text. Unlocks it. */
void weft__call_attempt_failed(weft__call_t *c, uint64_t socket, int error, const char *text);

/* Errors a server answers that are worth another attempt (it is stopping,
 * or busy): a response carrying one goes through attempt_failed. */
bool weft__call_retriable(int error);

/* The connection's authentication was accepted (a response came). */
void weft__client_conn_authenticated(weft_socket_t *s);

const weft_channel_options_t *weft__channel_options(const weft_channel_t *ch);

#endif
