/*
 * channel.c - the client: calls, connections, retries, backup requests.
 *
 * A call is an object from a type-stable pool addressed by a versioned id,
 * and that id is the correlation_id on the wire. Everything that can end a
 * call (a response, the deadline, a broken connection, a cancel) first
 * locks it by id; the first to succeed completes it and bumps its version,
 * so every later contender fails to lock it and backs off. A response that
 * arrives after its call timed out is dropped the same way. Each call
 * completes exactly once.
 *
 * Timers never do real work on the timer thread: a deadline or backup timer
 * only starts a fiber, which locks the call like anyone else. Nothing slow
 * (connecting, writing) happens with a call locked: a connection is chosen
 * first, then the call is locked and the request handed to the socket.
 *
 * Each attempt of a call (the first, a retry, a backup) is linked into the
 * connection it went out on, so a connection that breaks can fail its calls
 * at once instead of letting them wait for their deadlines.
 */
#include "rpc/rpc_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fiber/butex.h"
#include "fiber/clock.h"
#include "fiber/error.h"
#include "fiber/fiber.h"
#include "fiber/log.h"
#include "fiber/pool.h"
#include "fiber/sync.h"
#include "fiber/timer.h"
#include "rpc/codec_internal.h"

#define MAX_ATTEMPTS 2           /* at once: the request and one backup */
#define BACKOFF_MIN_NS (10 * WEFT_NS_PER_MS)
#define BACKOFF_MAX_NS (1000 * WEFT_NS_PER_MS)
#define POOL_IDLE_MAX 64

typedef struct client_conn client_conn_t;
typedef struct node node_t;

/* An attempt of a call, linked into its connection while it waits. */
typedef struct attempt {
    struct attempt *next, **pprev;
    uint64_t call_id;
    weft_socket_t *socket;       /* referenced while linked */
} attempt_t;

/* One server of the channel. */
struct node {
    weft_endpoint_t ep;
    weft_mutex_t lock;           /* serializes connecting; guards below */
    weft_socket_id_t single;     /* the shared connection (single) */
    weft_socket_id_t idle[POOL_IDLE_MAX]; /* idle connections (pooled) */
    int nidle;
    int64_t retry_after_ns;      /* no new connection before this */
    int64_t backoff_ns;
};

struct client_conn {
    weft_channel_t *channel;     /* valid while calls use the connection */
    const weft__protocol_t *protocol; /* what input needs, even after the channel is gone */
    node_t *node;
    weft_mutex_t lock;           /* guards attempts */
    attempt_t *attempts;
    int authenticated;
};

struct weft_channel {
    weft_channel_options_t opts;
    const weft__protocol_t *protocol;
    node_t *nodes;
    int nnodes;
    uint32_t rr;
    bool random;
    void *auth;                  /* our copy of opts.auth_data */
    int32_t async_calls;         /* butex: asynchronous calls not yet done */
};

/* Per-call state beyond the protocol's view (weft__call_t). */
typedef struct call_ext {
    weft__call_t base;           /* must be first */
    attempt_t attempts[MAX_ATTEMPTS];
    int retries;
} call_ext_t;

static void call_obj_init(void *obj, uint32_t slot)
{
    call_ext_t *c = obj;
    c->base.slot = slot;
    c->base.version = 1;
}

static weft_pool_t call_pool = WEFT_POOL_INITIALIZER("rpc_call", call_ext_t, call_obj_init);

const weft_channel_options_t *weft__channel_options(const weft_channel_t *ch)
{
    return &ch->opts;
}

/* ---- calls: locking by id ---- */

weft__call_t *weft__call_lock(uint64_t id)
{
    weft__call_t *c = weft_pool_at(&call_pool, (uint32_t)id);
    uint32_t version = (uint32_t)(id >> 32);
    if (!c || !version || __atomic_load_n(&c->version, __ATOMIC_ACQUIRE) != version)
        return NULL;
    weft_mutex_lock((weft_mutex_t *)&c->lock);
    if (__atomic_load_n(&c->version, __ATOMIC_ACQUIRE) != version) {
        weft_mutex_unlock((weft_mutex_t *)&c->lock);
        return NULL;
    }
    return c;
}

void weft__call_unlock(weft__call_t *c)
{
    weft_mutex_unlock((weft_mutex_t *)&c->lock);
}

/* ---- connections ---- */

static void conn_link(client_conn_t *conn, attempt_t *a, weft_socket_t *s, uint64_t call_id)
{
    a->call_id = call_id;
    a->socket = s;
    weft_mutex_lock(&conn->lock);
    a->next = conn->attempts;
    if (a->next)
        a->next->pprev = &a->next;
    a->pprev = &conn->attempts;
    conn->attempts = a;
    weft_mutex_unlock(&conn->lock);
}

/* Unlinks an attempt; returns its socket (still referenced) or NULL. */
static weft_socket_t *conn_unlink(attempt_t *a)
{
    weft_socket_t *s = a->socket;
    if (!s)
        return NULL;
    client_conn_t *conn = weft_socket_user(s);
    weft_mutex_lock(&conn->lock);
    *a->pprev = a->next;
    if (a->next)
        a->next->pprev = a->pprev;
    weft_mutex_unlock(&conn->lock);
    a->socket = NULL;
    return s;
}

/* A connection broke: every call waiting on it learns at once. */
static void conn_failed(weft_socket_t *s)
{
    client_conn_t *conn = weft_socket_user(s);
    int error = weft_socket_error(s);
    weft_socket_id_t sid = weft_socket_id(s);
    for (;;) {
        uint64_t ids[32];
        int n = 0;
        weft_mutex_lock(&conn->lock);
        for (attempt_t *a = conn->attempts; a && n < 32; a = a->next)
            ids[n++] = a->call_id;
        weft_mutex_unlock(&conn->lock);
        if (n == 0)
            return;
        char text[128];
        snprintf(text, sizeof(text), "the connection failed: %s", weft_strerror(error));
        for (int i = 0; i < n; i++) {
            weft__call_t *c = weft__call_lock(ids[i]);
            if (c)
                weft__call_attempt_failed(c, sid, WEFT_EFAILEDSOCKET, text);
        }
    }
}

static void conn_recycle(weft_socket_t *s)
{
    free(weft_socket_user(s));
}

static weft_socket_msg_t *conn_cut(weft_socket_t *s, weft_iobuf_t *in, int *error)
{
    client_conn_t *conn = weft_socket_user(s);
    weft__rpc_msg_t *msg = NULL;
    int rc = conn->protocol->parse(in, WEFT__DEFAULT_MAX_BODY, &msg);
    if (rc == WEFT__PARSE_OK)
        return &msg->base;
    if (rc == WEFT__PARSE_NEED_MORE) {
        *error = 0;
        return NULL;
    }
    WEFT_LOG_EVERY_SEC(WEFT_LOG_WARN, "bad bytes from a server; closing the connection");
    *error = rc < 0 ? rc : -WEFT_EREQUEST;
    return NULL;
}

static void conn_process(weft_socket_msg_t *m)
{
    weft__rpc_msg_t *msg = (weft__rpc_msg_t *)m;
    msg->protocol->process_response(msg);
}

static const weft_socket_handler_t conn_handler = {
    .cut = conn_cut,
    .process = conn_process,
    .on_failed = conn_failed,
    .on_recycle = conn_recycle,
};

void weft__client_conn_authenticated(weft_socket_t *s)
{
    client_conn_t *conn = weft_socket_user(s);
    if (!__atomic_load_n(&conn->authenticated, __ATOMIC_RELAXED))
        __atomic_store_n(&conn->authenticated, 1, __ATOMIC_RELEASE);
}

/* Opens a connection to the node. After a failed connect the node backs
 * off; callers wait the backoff out when their deadline allows, else fail
 * at once. Node locked (so one caller connects, the others then share). */
static int node_connect(weft_channel_t *ch, node_t *node, int64_t deadline, weft_socket_id_t *id)
{
    int64_t now = weft_clock_ns();
    if (now < node->retry_after_ns) {
        if (deadline >= 0 && node->retry_after_ns >= deadline)
            return -ECONNREFUSED;
        weft_fiber_sleep_until(node->retry_after_ns);
        now = weft_clock_ns();
    }
    client_conn_t *conn = calloc(1, sizeof(*conn));
    if (!conn)
        return -ENOMEM;
    conn->channel = ch;
    conn->protocol = ch->protocol;
    conn->node = node;
    weft_mutex_init(&conn->lock);
    int64_t cdl = ch->opts.connect_timeout_ms >= 0
                      ? now + ch->opts.connect_timeout_ms * WEFT_NS_PER_MS
                      : -1;
    if (deadline >= 0 && (cdl < 0 || deadline < cdl))
        cdl = deadline;
    weft_socket_options_t so = {.handler = &conn_handler, .user = conn};
    int rc = weft_socket_connect(id, &node->ep, cdl, &so);
    if (rc != 0) {
        free(conn);
        node->backoff_ns = node->backoff_ns ? node->backoff_ns * 2 : BACKOFF_MIN_NS;
        if (node->backoff_ns > BACKOFF_MAX_NS)
            node->backoff_ns = BACKOFF_MAX_NS;
        node->retry_after_ns = weft_clock_ns() + node->backoff_ns;
        return rc;
    }
    node->backoff_ns = 0;
    node->retry_after_ns = 0;
    return 0;
}

/* A referenced socket to send an attempt on, per the connection type. */
static int get_socket(weft_channel_t *ch, node_t *node, int64_t deadline, weft_socket_t **out)
{
    weft_socket_id_t id = 0;
    int rc = 0;
    weft_mutex_lock(&node->lock);
    switch (ch->opts.connection_type) {
    case WEFT_CONNECTION_SINGLE:
        *out = node->single ? weft_socket_address(node->single) : NULL;
        if (!*out) {
            rc = node_connect(ch, node, deadline, &id);
            if (rc == 0)
                node->single = id;
        }
        break;
    case WEFT_CONNECTION_POOLED:
        *out = NULL;
        while (!*out && node->nidle > 0)
            *out = weft_socket_address(node->idle[--node->nidle]);
        if (!*out)
            rc = node_connect(ch, node, deadline, &id);
        break;
    case WEFT_CONNECTION_SHORT:
        *out = NULL;
        rc = node_connect(ch, node, deadline, &id);
        break;
    }
    weft_mutex_unlock(&node->lock);
    if (rc == 0 && !*out) {
        *out = weft_socket_address(id);
        if (!*out)
            rc = -WEFT_EFAILEDSOCKET;
    }
    return rc;
}

/* After an attempt on s ended: keep, pool or close the connection. */
static void put_socket(weft_channel_t *ch, weft_socket_t *s, bool healthy)
{
    client_conn_t *conn = weft_socket_user(s);
    node_t *node = conn->node;
    switch (ch->opts.connection_type) {
    case WEFT_CONNECTION_SINGLE:
        break;
    case WEFT_CONNECTION_POOLED:
        if (healthy && !weft_socket_failed(s)) {
            weft_mutex_lock(&node->lock);
            if (node->nidle < POOL_IDLE_MAX) {
                node->idle[node->nidle++] = weft_socket_id(s);
                healthy = false; /* kept: do not close */
                s = NULL;
            }
            weft_mutex_unlock(&node->lock);
            if (!s)
                return;
        }
        weft_socket_set_failed(weft_socket_id(s), WEFT_ECLOSE);
        break;
    case WEFT_CONNECTION_SHORT:
        weft_socket_set_failed(weft_socket_id(s), WEFT_ECLOSE);
        break;
    }
    (void)healthy;
}

/* The node a call's previous attempt went to, if any. */
static node_t *previous_node(const weft__call_t *c)
{
    node_t *n = NULL;
    weft_socket_t *s = c->attempts > 0 && c->sockets[0] ? weft_socket_address(c->sockets[0]) : NULL;
    if (s) {
        n = ((client_conn_t *)weft_socket_user(s))->node;
        weft_socket_dereference(s);
    }
    return n;
}

/* The load balancer: round robin (or random) over the nodes, skipping those
 * backing off after a failed connect and, for a second attempt, the node
 * of the first, as long as another node is left. */
static node_t *pick_node(weft_channel_t *ch, const weft__call_t *c)
{
    if (ch->nnodes == 1)
        return &ch->nodes[0];
    uint32_t i = __atomic_fetch_add(&ch->rr, 1, __ATOMIC_RELAXED);
    if (ch->random)
        i = (uint32_t)((weft_cycles() ^ (weft_cycles() >> 17)) * 0x9E3779B1u >> 7);
    node_t *avoid = previous_node(c), *fallback = NULL;
    int64_t now = weft_clock_ns();
    for (int k = 0; k < ch->nnodes; k++) {
        node_t *n = &ch->nodes[(i + (uint32_t)k) % (uint32_t)ch->nnodes];
        bool backing_off = __atomic_load_n(&n->retry_after_ns, __ATOMIC_RELAXED) > now;
        if (!backing_off && n != avoid)
            return n;
        if (!fallback || (fallback == avoid && n != avoid))
            fallback = n;
    }
    return fallback;
}

/* ---- sending ---- */

bool weft__call_retriable(int error)
{
    switch (error) {
    case WEFT_EFAILEDSOCKET:
    case WEFT_ELOGOFF:
    case WEFT_ELIMIT:
    case WEFT_EEOF:
    case ECONNREFUSED:
    case ECONNRESET:
    case EPIPE:
    case ENETUNREACH:
    case EHOSTUNREACH:
        return true;
    default:
        return false;
    }
}

static int free_attempt_slot(call_ext_t *c)
{
    for (int i = 0; i < MAX_ATTEMPTS; i++)
        if (!c->attempts[i].socket)
            return i;
    return -1;
}

/* Sends one more attempt of the call `id`. Connecting happens before the
 * call is locked; the call may have completed meanwhile. */
static void send_attempt(uint64_t id)
{
    weft__call_t *c = weft__call_lock(id);
    if (!c)
        return;
    weft_channel_t *ch = c->channel;
    int64_t deadline = c->deadline_ns;
    node_t *node = pick_node(ch, c);
    weft__call_unlock(c);

    weft_socket_t *s = NULL;
    int rc = get_socket(ch, node, deadline, &s);

    c = weft__call_lock(id);
    if (!c) {
        if (s) {
            put_socket(ch, s, true);
            weft_socket_dereference(s);
        }
        return;
    }
    if (rc != 0) {
        char text[160], ep[WEFT_ENDPOINT_STRLEN];
        snprintf(text, sizeof(text), "cannot connect to %s: %s",
                 weft_endpoint_format(&node->ep, ep, sizeof(ep)), weft_strerror(rc));
        weft__call_attempt_failed(c, 0, -rc, text);
        return;
    }
    call_ext_t *cx = (call_ext_t *)c;
    int slot = free_attempt_slot(cx);
    if (slot < 0) { /* cannot happen: at most MAX_ATTEMPTS go out at once */
        weft__call_unlock(c);
        put_socket(ch, s, true);
        weft_socket_dereference(s);
        return;
    }
    client_conn_t *conn = weft_socket_user(s);
    conn_link(conn, &cx->attempts[slot], s, id);
    c->sockets[slot] = weft_socket_id(s);
    c->attempts++;
    weft_iobuf_t frame = WEFT_IOBUF_INIT;
    bool auth = !__atomic_load_n(&conn->authenticated, __ATOMIC_ACQUIRE);
    rc = ch->protocol->pack_request(&frame, c, auth);
    if (rc == 0)
        rc = weft_socket_write(s, &frame, NULL);
    weft_iobuf_clear(&frame);
    if (rc != 0) {
        weft__call_attempt_failed(c, weft_socket_id(s),
                                  rc == -WEFT_EOVERCROWDED ? WEFT_EOVERCROWDED : WEFT_EFAILEDSOCKET,
                                  weft_strerror(rc));
        return;
    }
    weft__call_unlock(c);
}

static void send_attempt_fiber(void *arg)
{
    send_attempt((uint64_t)(uintptr_t)arg);
}

static void start_attempt_fiber(uint64_t id)
{
    if (weft_fiber_start_background(NULL, NULL, send_attempt_fiber, (void *)(uintptr_t)id) != 0)
        send_attempt(id);
}

/* ---- completion ---- */

static void release_attempts(call_ext_t *cx, bool success)
{
    for (int i = 0; i < MAX_ATTEMPTS; i++) {
        weft_socket_t *s = conn_unlink(&cx->attempts[i]);
        if (s) {
            put_socket(cx->base.channel, s, success);
            weft_socket_dereference(s);
        }
    }
}

static void call_free(weft__call_t *c)
{
    weft_iobuf_clear(&c->request);
    weft_pool_put(&call_pool, c->slot);
}

/* Runs an asynchronous call's done. done may free the controller (the
 * usual thing to do), so after it returns only the call object (pool
 * memory, never freed) and the channel's counter are touched. Joiners wait
 * on the call's join_seq; one calling from inside done does not wait. */
static void async_done_fiber(void *arg)
{
    weft__call_t *c = arg;
    weft_channel_t *ch = c->channel;
    /* Read by joiners on other threads, who only compare it with their
     * own fiber: relaxed atomics suffice. */
    __atomic_store_n(&c->done_fiber, weft_fiber_self(), __ATOMIC_RELAXED);
    c->done(c->cntl, c->response, c->done_arg);
    __atomic_store_n(&c->done_fiber, 0, __ATOMIC_RELAXED);
    /* Before the slot can carry a new call, whose joiners start from the
     * value they read then. */
    __atomic_fetch_add(&c->join_seq, 1, __ATOMIC_RELEASE);
    weft_butex_wake_all(&c->join_seq);
    call_free(c);
    /* The last touch of the channel: weft_channel_free may free it as soon
     * as it reads zero (waking a freed word's waiters only hashes its
     * address). */
    if (__atomic_sub_fetch(&ch->async_calls, 1, __ATOMIC_ACQ_REL) == 0)
        weft_butex_wake_all(&ch->async_calls);
}

int weft_controller_join(weft_controller_t *cntl)
{
    uint64_t id = cntl->call_id;
    if (!id)
        return 0;
    weft__call_t *c = weft_pool_at(&call_pool, (uint32_t)id);
    weft_fiber_t running_done = __atomic_load_n(&c->done_fiber, __ATOMIC_RELAXED);
    if (running_done && running_done == weft_fiber_self())
        return 0; /* from inside its own done: nothing to wait for */
    int32_t expect = cntl->join_expect;
    while (__atomic_load_n(&c->join_seq, __ATOMIC_ACQUIRE) == expect)
        weft_butex_wait(&c->join_seq, expect, -1);
    return 0;
}

void weft__call_complete(weft__call_t *c, int error, const char *text)
{
    call_ext_t *cx = (call_ext_t *)c;
    weft_controller_t *cntl = c->cntl;
    if (error) {
        weft__controller_set_error(cntl, error, text);
        if (c->response) {
            protobuf_c_message_free_unpacked(c->response, NULL);
            c->response = NULL;
        }
    }
    cntl->retried = cx->retries;
    cntl->latency_us = (weft_clock_ns() - cntl->start_ns) / WEFT_NS_PER_US;
    release_attempts(cx, error == 0);
    uint64_t timer = c->timer, backup = c->backup_timer;
    c->timer = c->backup_timer = 0;
    uint32_t next = c->version + 1;
    __atomic_store_n(&c->version, next ? next : 1, __ATOMIC_RELEASE);
    weft__call_unlock(c);
    /* After the unlock: a timer callback may be waiting for this lock. */
    if (timer)
        weft_timer_cancel(timer);
    if (backup)
        weft_timer_cancel(backup);
    if (c->done) {
        if (weft_fiber_start_background(NULL, NULL, async_done_fiber, c) != 0)
            async_done_fiber(c);
        return;
    }
    __atomic_store_n(&c->finished, 1, __ATOMIC_RELEASE);
    weft_butex_wake_all(&c->finished);
}

void weft__call_attempt_failed(weft__call_t *c, uint64_t socket, int error, const char *text)
{
    call_ext_t *cx = (call_ext_t *)c;
    int pending = 0;
    for (int i = 0; i < MAX_ATTEMPTS; i++) {
        if (!cx->attempts[i].socket)
            continue;
        if (socket && c->sockets[i] == socket) {
            weft_socket_t *s = conn_unlink(&cx->attempts[i]);
            put_socket(c->channel, s, false);
            weft_socket_dereference(s);
        } else {
            pending++;
        }
    }
    if (pending > 0) { /* another attempt (a backup) may still answer */
        weft__call_unlock(c);
        return;
    }
    bool time_left = c->deadline_ns < 0 || weft_clock_ns() < c->deadline_ns;
    if (weft__call_retriable(error) && cx->retries < c->max_retries && time_left) {
        cx->retries++;
        uint64_t id = weft__call_id(c);
        weft__call_unlock(c);
        start_attempt_fiber(id);
        return;
    }
    weft__call_complete(c, error, text);
}

/* ---- timers ---- */

static void timeout_fiber(void *arg)
{
    weft__call_t *c = weft__call_lock((uint64_t)(uintptr_t)arg);
    if (c)
        weft__call_complete(c, WEFT_ERPCTIMEDOUT, "deadline passed");
}

static void backup_fiber(void *arg)
{
    uint64_t id = (uint64_t)(uintptr_t)arg;
    weft__call_t *c = weft__call_lock(id);
    if (!c)
        return;
    bool send = c->attempts == 1 && free_attempt_slot((call_ext_t *)c) >= 0;
    weft__call_unlock(c);
    if (send)
        send_attempt(id);
}

static void timer_to_fiber(weft_fiber_fn *fn, void *arg)
{
    if (weft_fiber_start_background(NULL, NULL, fn, arg) != 0)
        WEFT_LOG_EVERY_SEC(WEFT_LOG_ERROR, "cannot start a fiber for an RPC timer");
}

static void on_deadline(void *arg)
{
    timer_to_fiber(timeout_fiber, arg);
}

static void on_backup(void *arg)
{
    timer_to_fiber(backup_fiber, arg);
}

/* ---- the call API ---- */

/* What a call asks for: a method of a descriptor with a message, or (raw)
 * a method by name with serialized bytes. */
typedef struct call_target {
    const ProtobufCServiceDescriptor *service;
    unsigned method_index;
    const ProtobufCMessage *request;
    const char *service_name, *method_name;
    const weft_iobuf_t *raw_request;
    weft_iobuf_t *raw_response;
} call_target_t;

static bool target_valid(const call_target_t *t)
{
    if (t->raw_request)
        return t->service_name && t->method_name && t->raw_response;
    return t->service && t->method_index < t->service->n_methods && t->request &&
           t->request->descriptor == t->service->methods[t->method_index].input;
}

static int call_start(weft_channel_t *ch, const call_target_t *t, weft_controller_t *cntl,
                      weft__call_t **out)
{
    if (!ch || !cntl || !target_valid(t))
        return WEFT_EREQUEST;
    uint32_t slot;
    call_ext_t *cx = weft_pool_get(&call_pool, &slot);
    if (!cx)
        return ENOMEM;
    weft__call_t *c = &cx->base;
    uint32_t version = c->version;
    int32_t join_seq = c->join_seq; /* only grows: joiners of past calls wait on it */
    memset((char *)cx + offsetof(weft__call_t, lock), 0,
           sizeof(*cx) - offsetof(weft__call_t, lock));
    c->version = version;
    c->join_seq = join_seq;
    c->slot = slot;
    c->channel = ch;
    c->cntl = cntl;
    c->service = t->service;
    c->method_index = t->method_index;
    c->service_name = t->raw_request ? t->service_name : t->service->name;
    c->method_name = t->raw_request ? t->method_name : t->service->methods[t->method_index].name;
    c->raw_response = t->raw_response;
    c->compress = cntl->compress_type ? cntl->compress_type : ch->opts.compress_type;
    c->max_retries = cntl->max_retries >= 0 ? cntl->max_retries : ch->opts.max_retries;
    int64_t timeout = cntl->timeout_ms != WEFT__UNSET ? cntl->timeout_ms : ch->opts.timeout_ms;
    cntl->start_ns = weft_clock_ns();
    c->deadline_ns = timeout >= 0 ? cntl->start_ns + timeout * WEFT_NS_PER_MS : -1;
    cntl->deadline_ns = c->deadline_ns;
    cntl->error_code = 0;
    weft_iobuf_init(&c->request);
    int rc = ch->protocol->encode_request(c, t->request, t->raw_request);
    if (rc != 0) {
        call_free(c);
        return rc == -ENOMEM ? ENOMEM : WEFT_EREQUEST;
    }
    *out = c;
    return 0;
}

static void fail_early(weft_controller_t *cntl, int error)
{
    weft__controller_set_error(cntl, error, NULL);
}

/* Runs a call to its end in the calling fiber or thread. */
static int call_sync(weft_channel_t *ch, const call_target_t *t, weft_controller_t *cntl,
                     ProtobufCMessage **response)
{
    weft__call_t *c;
    *response = NULL;
    int rc = call_start(ch, t, cntl, &c);
    if (rc != 0) {
        fail_early(cntl, rc);
        return rc;
    }
    uint64_t id = weft__call_id(c);
    cntl->call_id = id; /* for weft_controller_cancel() from another fiber */
    cntl->join_expect = __atomic_load_n(&c->join_seq, __ATOMIC_ACQUIRE);
    int64_t deadline = c->deadline_ns;
    int64_t backup = ch->opts.backup_request_ms >= 0
                         ? cntl->start_ns + ch->opts.backup_request_ms * WEFT_NS_PER_MS
                         : -1;
    send_attempt(id);
    /* c stays ours until `finished`: its version may move on, the object
     * is not recycled before we free it. */
    while (!__atomic_load_n(&c->finished, __ATOMIC_ACQUIRE)) {
        int64_t wake = deadline;
        if (backup >= 0 && (wake < 0 || backup < wake))
            wake = backup;
        if (weft_butex_wait(&c->finished, 0, wake) != -ETIMEDOUT)
            continue;
        if (backup >= 0 && (deadline < 0 || weft_clock_ns() < deadline)) {
            backup = -1;
            backup_fiber((void *)(uintptr_t)id);
            continue;
        }
        weft__call_t *locked = weft__call_lock(id);
        if (locked)
            weft__call_complete(locked, WEFT_ERPCTIMEDOUT, "deadline passed");
    }
    *response = c->response;
    rc = cntl->error_code;
    cntl->call_id = 0;
    __atomic_fetch_add(&c->join_seq, 1, __ATOMIC_RELEASE);
    weft_butex_wake_all(&c->join_seq);
    call_free(c);
    return rc;
}

int weft_channel_call(weft_channel_t *ch, const ProtobufCServiceDescriptor *service,
                      unsigned method_index, weft_controller_t *cntl,
                      const ProtobufCMessage *request, ProtobufCMessage **response)
{
    call_target_t t = {.service = service, .method_index = method_index, .request = request};
    return call_sync(ch, &t, cntl, response);
}

int weft_channel_call_raw(weft_channel_t *ch, const char *service, const char *method,
                          weft_controller_t *cntl, const weft_iobuf_t *request,
                          weft_iobuf_t *response)
{
    call_target_t t = {.service_name = service, .method_name = method, .raw_request = request,
                       .raw_response = response};
    ProtobufCMessage *unused;
    return call_sync(ch, &t, cntl, &unused);
}

int weft_channel_call_async(weft_channel_t *ch, const ProtobufCServiceDescriptor *service,
                            unsigned method_index, weft_controller_t *cntl,
                            const ProtobufCMessage *request, weft_call_done_fn *done, void *arg)
{
    if (!done)
        return WEFT_EREQUEST;
    weft__call_t *c;
    call_target_t t = {.service = service, .method_index = method_index, .request = request};
    int rc = call_start(ch, &t, cntl, &c);
    if (rc != 0) {
        fail_early(cntl, rc);
        return rc;
    }
    uint64_t id = weft__call_id(c);
    c->done = done;
    c->done_arg = arg;
    cntl->call_id = id;
    cntl->join_expect = __atomic_load_n(&c->join_seq, __ATOMIC_ACQUIRE);
    __atomic_fetch_add(&ch->async_calls, 1, __ATOMIC_ACQ_REL);
    /* Timers are armed with the call locked, so they are recorded before
     * anything can complete the call and cancel them. */
    weft_mutex_lock((weft_mutex_t *)&c->lock);
    if (c->deadline_ns >= 0)
        weft_timer_run_at(&c->timer, c->deadline_ns, on_deadline, (void *)(uintptr_t)id);
    if (ch->opts.backup_request_ms >= 0)
        weft_timer_run_at(&c->backup_timer,
                          cntl->start_ns + ch->opts.backup_request_ms * WEFT_NS_PER_MS, on_backup,
                          (void *)(uintptr_t)id);
    weft_mutex_unlock((weft_mutex_t *)&c->lock);
    /* Connecting may take up to connect_timeout_ms: not in the caller. */
    start_attempt_fiber(id);
    return 0;
}

void weft_controller_cancel(weft_controller_t *cntl)
{
    weft__call_t *c = cntl->call_id ? weft__call_lock(cntl->call_id) : NULL;
    if (c)
        weft__call_complete(c, ECANCELED, "cancelled");
}

/* ---- channels ---- */

static int add_node(weft_channel_t *ch, const char *addr, size_t len)
{
    char buf[256];
    if (len == 0 || len >= sizeof(buf))
        return -EINVAL;
    memcpy(buf, addr, len);
    buf[len] = '\0';
    node_t *nodes = realloc(ch->nodes, sizeof(*nodes) * (size_t)(ch->nnodes + 1));
    if (!nodes)
        return -ENOMEM;
    ch->nodes = nodes;
    node_t *n = &nodes[ch->nnodes];
    memset(n, 0, sizeof(*n));
    int rc = weft_endpoint_parse(&n->ep, buf);
    if (rc != 0)
        return rc;
    weft_mutex_init(&n->lock);
    ch->nnodes++;
    return 0;
}

static int parse_target(weft_channel_t *ch, const char *target)
{
    if (strncmp(target, "list://", 7) != 0)
        return add_node(ch, target, strlen(target));
    const char *p = target + 7;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        int rc = add_node(ch, p, len);
        if (rc != 0)
            return rc;
        p += len + (comma ? 1 : 0);
    }
    return ch->nnodes ? 0 : -EINVAL;
}

int weft_channel_new(weft_channel_t **out, const char *target, const weft_channel_options_t *opts)
{
    if (!out || !target)
        return -EINVAL;
    weft_channel_t *ch = calloc(1, sizeof(*ch));
    if (!ch)
        return -ENOMEM;
    weft_channel_options_t defaults = WEFT_CHANNEL_OPTIONS_INIT;
    ch->opts = opts ? *opts : defaults;
    int rc = -EINVAL;
    ch->protocol = weft__protocol_find(ch->opts.protocol);
    if (!ch->protocol || !ch->protocol->pack_request)
        goto fail;
    if (ch->opts.load_balancer && strcmp(ch->opts.load_balancer, "rr") != 0) {
        if (strcmp(ch->opts.load_balancer, "random") != 0)
            goto fail;
        ch->random = true;
    }
    if (!weft__compress_supported(ch->opts.compress_type))
        goto fail;
    if (ch->opts.auth_data && ch->opts.auth_len) {
        ch->auth = malloc(ch->opts.auth_len);
        if (!ch->auth) {
            rc = -ENOMEM;
            goto fail;
        }
        memcpy(ch->auth, ch->opts.auth_data, ch->opts.auth_len);
        ch->opts.auth_data = ch->auth;
    }
    rc = parse_target(ch, target);
    if (rc != 0)
        goto fail;
    *out = ch;
    return 0;
fail:
    free(ch->nodes);
    free(ch->auth);
    free(ch);
    return rc;
}

void weft_channel_free(weft_channel_t *ch)
{
    if (!ch)
        return;
    int32_t n;
    while ((n = __atomic_load_n(&ch->async_calls, __ATOMIC_ACQUIRE)) != 0)
        weft_butex_wait(&ch->async_calls, n, -1);
    for (int i = 0; i < ch->nnodes; i++) {
        node_t *n = &ch->nodes[i];
        if (n->single)
            weft_socket_set_failed(n->single, WEFT_ECLOSE);
        for (int j = 0; j < n->nidle; j++)
            weft_socket_set_failed(n->idle[j], WEFT_ECLOSE);
    }
    free(ch->nodes);
    free(ch->auth);
    free(ch);
}
