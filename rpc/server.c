/*
 * server.c - the server: services, connections, limits, lifecycle.
 *
 * A connection does not know its protocol until its first bytes arrive:
 * cut() tries each protocol in turn and the connection sticks to the first
 * that recognises the bytes, so one port serves them all. Requests are
 * processed by the protocol (baidu_std.c) in fibers; this file answers the
 * questions that do not depend on the protocol (is the server stopping, is
 * there room under the concurrency limit, which method does a name denote,
 * is this connection authenticated) and owns the lifecycle.
 *
 * Idle and read timeouts are enforced by one periodic timer that scans the
 * connections: cheap for the number of connections a server holds, and no
 * timer churn per request.
 */
#include "rpc/rpc_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fiber/butex.h"
#include "fiber/clock.h"
#include "fiber/error.h"
#include "fiber/fiber.h"
#include "fiber/log.h"
#include "fiber/sync.h"
#include "fiber/timer.h"
#include "net/acceptor.h"
#include "rpc/codec_internal.h"

enum { S_NEW, S_RUNNING, S_STOPPING, S_STOPPED };

/* How long join() lets queued replies drain before closing connections. */
#define REPLY_DRAIN_NS (5 * WEFT_NS_PER_SEC)
enum { AUTH_UNKNOWN, AUTH_OK, AUTH_FAILED };

typedef struct service_entry {
    const ProtobufCServiceDescriptor *desc;
    weft__method_t *methods;       /* one per method of desc */
} service_entry_t;

struct weft__server_conn {
    weft_server_t *server;
    weft_socket_id_t id;
    const weft__protocol_t *protocol; /* NULL until the first bytes decide */
    weft_mutex_t auth_lock;
    int auth;
    void *auth_ctx;
    int64_t last_active_ns;
    int64_t partial_since_ns;         /* an incomplete request waits since */
    int64_t inflight;                 /* requests being handled: not idle */
    weft__server_conn_t *next, **pprev;
};

struct weft_server {
    weft_server_options_t opts;
    service_entry_t *services;
    int nservices;
    int state;
    weft_acceptor_t *acceptor;
    weft_endpoint_t endpoint;
    weft_timer_id_t sweep_timer;
    weft_mutex_t lock;                /* guards conns */
    weft__server_conn_t *conns;
    int64_t nconns;                   /* changed under lock, read by stats without */
    int64_t inflight;
    int64_t requests;
    int64_t errors;
    int32_t drained;                  /* butex bumped when inflight or nconns drop to 0 */
};

/* ---- services ---- */

int weft_server_new(weft_server_t **out, const weft_server_options_t *opts)
{
    weft_server_t *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    if (opts)
        s->opts = *opts;
    if (!s->opts.max_body_size)
        s->opts.max_body_size = WEFT__DEFAULT_MAX_BODY;
    if (s->opts.max_nesting <= 0)
        s->opts.max_nesting = 64;
    /* The nesting check walks at most WEFT__PB_CHECK_MAX_DEPTH levels. */
    if (s->opts.max_nesting > WEFT__PB_CHECK_MAX_DEPTH)
        s->opts.max_nesting = WEFT__PB_CHECK_MAX_DEPTH;
    weft_mutex_init(&s->lock);
    *out = s;
    return 0;
}

static service_entry_t *find_service(const weft_server_t *s, const char *name)
{
    bool short_name = !strchr(name, '.');
    for (int i = 0; i < s->nservices; i++) {
        const ProtobufCServiceDescriptor *d = s->services[i].desc;
        if (!strcmp(d->name, name) || (short_name && !strcmp(d->short_name, name)))
            return &s->services[i];
    }
    return NULL;
}

static int add_service(weft_server_t *s, const ProtobufCServiceDescriptor *desc,
                       weft_method_fn *const *methods, void *arg, ProtobufCService *protoc)
{
    if (!desc || (!methods && !protoc))
        return -EINVAL;
    if (s->state != S_NEW)
        return -EBUSY;
    if (find_service(s, desc->name))
        return -EEXIST;
    weft__method_t *m = calloc(desc->n_methods ? desc->n_methods : 1, sizeof(*m));
    service_entry_t *arr = realloc(s->services, sizeof(*arr) * (size_t)(s->nservices + 1));
    if (!m || !arr) {
        free(m);
        if (arr)
            s->services = arr;
        return -ENOMEM;
    }
    for (unsigned i = 0; i < desc->n_methods; i++)
        m[i] = (weft__method_t){.service = desc, .index = i, .fn = methods ? methods[i] : NULL,
                                .arg = arg, .protoc = protoc};
    s->services = arr;
    s->services[s->nservices++] = (service_entry_t){desc, m};
    return 0;
}

int weft_server_add_service(weft_server_t *s, const ProtobufCServiceDescriptor *desc,
                            weft_method_fn *const *methods, void *arg)
{
    if (!methods)
        return -EINVAL;
    return add_service(s, desc, methods, arg, NULL);
}

int weft_server_add_protoc_service(weft_server_t *s, ProtobufCService *service)
{
    if (!service)
        return -EINVAL;
    return add_service(s, service->descriptor, NULL, NULL, service);
}

/* protoc-c's generated services keep one function pointer per method right
 * after the ProtobufCService, and invoke_internal calls it unchecked: a
 * method left NULL must be refused here, or it crashes the server. */
static bool protoc_implements(const weft__method_t *m)
{
    if (!m->protoc)
        return false;
    if (m->protoc->invoke != protobuf_c_service_invoke_internal)
        return true; /* a hand-written invoke answers for itself */
    void (*const *fns)(void) = (void (*const *)(void))(m->protoc + 1);
    return fns[m->index] != NULL;
}

const weft__method_t *weft__server_find(const weft_server_t *s, const char *service,
                                        const char *method, int *error)
{
    service_entry_t *e = find_service(s, service);
    if (!e) {
        *error = WEFT_ENOSERVICE;
        return NULL;
    }
    const ProtobufCMethodDescriptor *md =
        protobuf_c_service_descriptor_get_method_by_name(e->desc, method);
    if (!md) {
        *error = WEFT_ENOMETHOD;
        return NULL;
    }
    const weft__method_t *m = &e->methods[md - e->desc->methods];
    if (!m->fn && !protoc_implements(m)) {
        *error = WEFT_ENOMETHOD;
        return NULL;
    }
    return m;
}

/* ---- the questions protocols ask ---- */

weft_server_t *weft__conn_server(const weft__server_conn_t *c)
{
    return c->server;
}

bool weft__server_stopping(const weft_server_t *s)
{
    return __atomic_load_n(&s->state, __ATOMIC_ACQUIRE) >= S_STOPPING;
}

bool weft__server_enter(weft__server_conn_t *c)
{
    weft_server_t *s = c->server;
    __atomic_fetch_add(&s->requests, 1, __ATOMIC_RELAXED);
    int64_t n = __atomic_add_fetch(&s->inflight, 1, __ATOMIC_ACQ_REL);
    if (s->opts.max_concurrency > 0 && n > s->opts.max_concurrency) {
        __atomic_fetch_sub(&s->inflight, 1, __ATOMIC_ACQ_REL);
        __atomic_fetch_add(&s->errors, 1, __ATOMIC_RELAXED);
        return false;
    }
    __atomic_fetch_add(&c->inflight, 1, __ATOMIC_RELAXED);
    return true;
}

void weft__server_count_refused(weft_server_t *s)
{
    __atomic_fetch_add(&s->requests, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&s->errors, 1, __ATOMIC_RELAXED);
}

static void bump_drained(weft_server_t *s)
{
    __atomic_fetch_add(&s->drained, 1, __ATOMIC_RELEASE);
    weft_butex_wake_all(&s->drained);
}

void weft__server_leave(weft__server_conn_t *c, bool failed)
{
    weft_server_t *s = c->server;
    if (failed)
        __atomic_fetch_add(&s->errors, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&c->last_active_ns, weft_clock_ns(), __ATOMIC_RELAXED);
    __atomic_fetch_sub(&c->inflight, 1, __ATOMIC_RELAXED);
    if (__atomic_sub_fetch(&s->inflight, 1, __ATOMIC_ACQ_REL) == 0 && weft__server_stopping(s))
        bump_drained(s);
}

int weft__server_max_nesting(const weft_server_t *s)
{
    return s->opts.max_nesting;
}

size_t weft__server_max_body(const weft_server_t *s)
{
    return s->opts.max_body_size;
}

int weft__server_authenticate(weft_server_t *s, weft_socket_t *sock, const void *data, size_t len,
                              void **ctx)
{
    if (!s->opts.authenticate)
        return 0;
    weft__server_conn_t *c = weft_socket_user(sock);
    int verdict = __atomic_load_n(&c->auth, __ATOMIC_ACQUIRE);
    if (verdict == AUTH_UNKNOWN) {
        /* Requests racing on a new connection all wait for one verdict. */
        weft_mutex_lock(&c->auth_lock);
        if (c->auth == AUTH_UNKNOWN) {
            int rc = s->opts.authenticate(data, len, weft_socket_remote(sock), &c->auth_ctx,
                                          s->opts.auth_arg);
            if (rc != 0) {
                char ep[WEFT_ENDPOINT_STRLEN];
                WEFT_LOG_EVERY_SEC(WEFT_LOG_WARN, "authentication of %s refused",
                                   weft_endpoint_format(weft_socket_remote(sock), ep, sizeof(ep)));
            }
            __atomic_store_n(&c->auth, rc == 0 ? AUTH_OK : AUTH_FAILED, __ATOMIC_RELEASE);
        }
        weft_mutex_unlock(&c->auth_lock);
        verdict = c->auth;
    }
    *ctx = c->auth_ctx;
    return verdict == AUTH_OK ? 0 : WEFT_ERPCAUTH;
}

/* ---- connections ---- */

static weft_socket_msg_t *conn_cut(weft_socket_t *sock, weft_iobuf_t *in, int *error)
{
    weft__server_conn_t *c = weft_socket_user(sock);
    weft_server_t *s = c->server;
    weft__rpc_msg_t *msg = NULL;
    int rc;
    if (c->protocol) {
        rc = c->protocol->parse(in, s->opts.max_body_size, &msg);
    } else {
        rc = WEFT__PARSE_NOT_MINE;
        for (int i = 0; weft__server_protocols[i] && rc == WEFT__PARSE_NOT_MINE; i++) {
            rc = weft__server_protocols[i]->parse(in, s->opts.max_body_size, &msg);
            if (rc == WEFT__PARSE_OK)
                c->protocol = weft__server_protocols[i];
        }
    }
    if (rc == WEFT__PARSE_OK) {
        int64_t now = msg->received_ns;
        __atomic_store_n(&c->last_active_ns, now, __ATOMIC_RELAXED);
        __atomic_store_n(&c->partial_since_ns, weft_iobuf_length(in) ? now : 0, __ATOMIC_RELAXED);
        return &msg->base;
    }
    if (rc == WEFT__PARSE_NEED_MORE) {
        /* Only bytes of a request that has begun count: an empty buffer is
         * a connection between requests, which is the idle timeout's. */
        if (weft_iobuf_length(in) && !__atomic_load_n(&c->partial_since_ns, __ATOMIC_RELAXED))
            __atomic_store_n(&c->partial_since_ns, weft_clock_ns(), __ATOMIC_RELAXED);
        *error = 0;
        return NULL;
    }
    if (rc == WEFT__PARSE_NOT_MINE) {
        char ep[WEFT_ENDPOINT_STRLEN];
        WEFT_LOG_EVERY_SEC(WEFT_LOG_WARN, "bytes from %s match no protocol; closing",
                           weft_endpoint_format(weft_socket_remote(sock), ep, sizeof(ep)));
        rc = -WEFT_EREQUEST;
    }
    *error = rc;
    return NULL;
}

static void conn_process(weft_socket_msg_t *m)
{
    weft__rpc_msg_t *msg = (weft__rpc_msg_t *)m;
    msg->protocol->process_request(msg);
}

static void conn_recycle(weft_socket_t *sock)
{
    weft__server_conn_t *c = weft_socket_user(sock);
    weft_server_t *s = c->server;
    weft_mutex_lock(&s->lock);
    *c->pprev = c->next;
    if (c->next)
        c->next->pprev = c->pprev;
    /* Under the lock: weft_server_join takes it after it sees no
     * connection left, so the server outlives this last touch of it. */
    if (__atomic_sub_fetch(&s->nconns, 1, __ATOMIC_RELAXED) == 0)
        bump_drained(s);
    weft_mutex_unlock(&s->lock);
    free(c);
}

static const weft_socket_handler_t conn_handler = {
    .cut = conn_cut,
    .process = conn_process,
    .on_recycle = conn_recycle,
};

static void on_accept(int fd, const weft_endpoint_t *remote, void *arg)
{
    (void)remote;
    weft_server_t *s = arg;
    weft__server_conn_t *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    c->server = s;
    weft_mutex_init(&c->auth_lock);
    c->last_active_ns = weft_clock_ns();
    weft_mutex_lock(&s->lock);
    c->next = s->conns;
    if (c->next)
        c->next->pprev = &c->next;
    c->pprev = &s->conns;
    s->conns = c;
    __atomic_fetch_add(&s->nconns, 1, __ATOMIC_RELAXED);
    weft_mutex_unlock(&s->lock);
    weft_socket_options_t so = {.fd = fd, .handler = &conn_handler, .user = c};
    int rc = weft_socket_create(&c->id, &so);
    if (rc != 0) {
        /* No socket, so no recycle callback: unlink by hand. */
        WEFT_LOG_EVERY_SEC(WEFT_LOG_WARN, "cannot serve an accepted connection: %s",
                           weft_strerror(rc));
        weft_mutex_lock(&s->lock);
        *c->pprev = c->next;
        if (c->next)
            c->next->pprev = c->pprev;
        __atomic_fetch_sub(&s->nconns, 1, __ATOMIC_RELAXED);
        weft_mutex_unlock(&s->lock);
        free(c);
    }
}

/* A connection's socket id: set by weft_socket_create while the connection
 * is already on the server's list. */
static weft_socket_id_t conn_id(const weft__server_conn_t *c)
{
    return __atomic_load_n(&c->id, __ATOMIC_ACQUIRE);
}

/* Fails every connection matching `pred` (all of them when NULL). */
static void fail_conns(weft_server_t *s, bool (*pred)(const weft__server_conn_t *, int64_t),
                       int error)
{
    int64_t now = weft_clock_ns();
    weft_socket_id_t ids[64];
    int n;
    do {
        n = 0;
        weft_mutex_lock(&s->lock);
        for (weft__server_conn_t *c = s->conns; c && n < 64; c = c->next) {
            /* Skip what already failed (and only waits to be recycled),
             * or the scan would find the same connections for ever. No
             * reference is taken under the lock: dropping one may recycle
             * the connection, and conn_recycle takes the lock. */
            weft_socket_id_t id = conn_id(c);
            if ((!pred || pred(c, now)) && weft_socket_alive(id))
                ids[n++] = id;
        }
        weft_mutex_unlock(&s->lock);
        for (int i = 0; i < n; i++)
            weft_socket_set_failed(ids[i], error);
    } while (n == 64);
}

static bool conn_idle(const weft__server_conn_t *c, int64_t now)
{
    int64_t limit = (int64_t)c->server->opts.idle_timeout_s * WEFT_NS_PER_SEC;
    return limit > 0 && !__atomic_load_n(&c->inflight, __ATOMIC_RELAXED) &&
           now - __atomic_load_n(&c->last_active_ns, __ATOMIC_RELAXED) > limit;
}

static bool conn_read_stalled(const weft__server_conn_t *c, int64_t now)
{
    int64_t limit = (int64_t)c->server->opts.read_timeout_ms * WEFT_NS_PER_MS;
    int64_t since = __atomic_load_n(&c->partial_since_ns, __ATOMIC_RELAXED);
    return limit > 0 && since && now - since > limit;
}

static bool conn_timed_out(const weft__server_conn_t *c, int64_t now)
{
    return conn_idle(c, now) || conn_read_stalled(c, now);
}

static void sweep(void *arg)
{
    fail_conns(arg, conn_timed_out, ETIMEDOUT);
}

int weft_server_start(weft_server_t *s, const char *address)
{
    if (s->state != S_NEW)
        return -EBUSY;
    weft_acceptor_options_t ao = {.on_accept = on_accept, .arg = s};
    int rc = weft_acceptor_start(&s->acceptor, address, &ao);
    if (rc != 0)
        return rc;
    s->endpoint = *weft_acceptor_endpoint(s->acceptor);
    int64_t period = 0;
    if (s->opts.idle_timeout_s > 0)
        period = (int64_t)s->opts.idle_timeout_s * WEFT_NS_PER_SEC / 4;
    if (s->opts.read_timeout_ms > 0) {
        int64_t r = (int64_t)s->opts.read_timeout_ms * WEFT_NS_PER_MS / 4;
        period = period && period < r ? period : r;
    }
    if (period > 0) {
        if (period < WEFT_NS_PER_MS)
            period = WEFT_NS_PER_MS;
        weft_timer_run_every(&s->sweep_timer, period, sweep, s);
    }
    __atomic_store_n(&s->state, S_RUNNING, __ATOMIC_RELEASE);
    return 0;
}

const weft_endpoint_t *weft_server_endpoint(const weft_server_t *s)
{
    return &s->endpoint;
}

int weft_server_stop(weft_server_t *s)
{
    int st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
    if (st != S_RUNNING)
        return st == S_NEW ? -EINVAL : 0;
    __atomic_store_n(&s->state, S_STOPPING, __ATOMIC_RELEASE);
    weft_acceptor_stop(s->acceptor);
    s->acceptor = NULL;
    return 0;
}

static void wait_until_zero(weft_server_t *s, int64_t *counter)
{
    for (;;) {
        int32_t seq = __atomic_load_n(&s->drained, __ATOMIC_ACQUIRE);
        if (__atomic_load_n(counter, __ATOMIC_ACQUIRE) <= 0)
            return;
        weft_butex_wait(&s->drained, seq, weft_clock_ns() + 100 * WEFT_NS_PER_MS);
    }
}

static bool id_has_unsent(weft_socket_id_t id)
{
    weft_socket_t *sock = weft_socket_address(id);
    bool unsent = sock && weft_socket_unwritten(sock) > 0;
    if (sock)
        weft_socket_dereference(sock);
    return unsent;
}

/* The ids of the server's connections, taken under the lock; the caller
 * frees the array. NULL when there are none or no memory. The sockets are
 * addressed after the lock is released (see fail_conns). */
static weft_socket_id_t *conn_snapshot(weft_server_t *s, size_t *n)
{
    weft_mutex_lock(&s->lock);
    size_t cap = (size_t)__atomic_load_n(&s->nconns, __ATOMIC_RELAXED), k = 0;
    weft_socket_id_t *ids = cap ? malloc(cap * sizeof(*ids)) : NULL;
    for (weft__server_conn_t *c = s->conns; ids && c && k < cap; c = c->next)
        ids[k++] = conn_id(c);
    weft_mutex_unlock(&s->lock);
    *n = k;
    return ids;
}

/* Waits until no connection holds unsent bytes, or the deadline passes (a
 * client that stopped reading must not hold a server's join for ever). */
static void wait_replies_sent(weft_server_t *s, int64_t deadline)
{
    while (weft_clock_ns() < deadline) {
        size_t n;
        weft_socket_id_t *ids = conn_snapshot(s, &n);
        bool unsent = false;
        for (size_t i = 0; i < n && !unsent; i++)
            unsent = id_has_unsent(ids[i]);
        free(ids);
        if (!unsent)
            return; /* also when out of memory: the wait is best effort */
        weft_fiber_usleep(1000);
    }
}

int weft_server_join(weft_server_t *s)
{
    if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) == S_NEW)
        return -EINVAL;
    weft_server_stop(s);
    wait_until_zero(s, &s->inflight);
    if (s->sweep_timer) {
        weft_timer_cancel(s->sweep_timer);
        s->sweep_timer = 0;
    }
    /* Every request is answered, but replies may still wait in a socket's
     * queue (deferred to its worker, or behind a full kernel buffer). */
    wait_replies_sent(s, weft_clock_ns() + REPLY_DRAIN_NS);
    fail_conns(s, NULL, WEFT_ELOGOFF);
    wait_until_zero(s, &s->nconns);
    /* The last connection's recycle counted down under the lock and may
     * still hold it: once we had it, nothing touches the server any more,
     * and the caller may free it. */
    weft_mutex_lock(&s->lock);
    weft_mutex_unlock(&s->lock);
    __atomic_store_n(&s->state, S_STOPPED, __ATOMIC_RELEASE);
    return 0;
}

void weft_server_free(weft_server_t *s)
{
    if (!s)
        return;
    if (s->state == S_RUNNING || s->state == S_STOPPING)
        weft_server_join(s);
    for (int i = 0; i < s->nservices; i++)
        free(s->services[i].methods);
    free(s->services);
    free(s);
}

void weft_server_stats(const weft_server_t *s, weft_server_stats_t *out)
{
    out->connections = __atomic_load_n(&s->nconns, __ATOMIC_RELAXED);
    out->requests = __atomic_load_n(&s->requests, __ATOMIC_RELAXED);
    out->inflight = __atomic_load_n(&s->inflight, __ATOMIC_RELAXED);
    out->errors = __atomic_load_n(&s->errors, __ATOMIC_RELAXED);
}

/* ---- protocols ---- */

const weft__protocol_t *const weft__server_protocols[] = {
    &weft__baidu_std,
    NULL,
};

const weft__protocol_t *weft__protocol_find(const char *name)
{
    if (!name || !*name)
        return &weft__baidu_std;
    for (int i = 0; weft__server_protocols[i]; i++)
        if (!strcmp(weft__server_protocols[i]->name, name))
            return weft__server_protocols[i];
    return NULL;
}

weft__rpc_msg_t *weft__rpc_msg_new(const weft__protocol_t *p)
{
    weft__rpc_msg_t *m = calloc(1, sizeof(*m));
    if (m)
        m->protocol = p;
    return m;
}

void weft__rpc_msg_free(weft__rpc_msg_t *m)
{
    weft_iobuf_clear(&m->meta);
    weft_iobuf_clear(&m->payload);
    free(m);
}
