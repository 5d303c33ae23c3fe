/*
 * socket.c - sockets with versioned ids, the input fiber and the write list.
 *
 * The versioned reference count. A socket holds one 64-bit word: version in
 * the high half, reference count in the low half. Versions are even while
 * the socket is healthy, odd once it failed. An id carries the version the
 * socket had when created.
 *  - address(id) adds a reference first and checks the version after, so a
 *    reference is never handed out for a failed or reused socket, and the
 *    check and the increment are one atomic step;
 *  - set_failed(id) bumps the version to odd (one CAS; only one caller
 *    wins), does the failure work, and drops the reference creation took;
 *  - dereference() drops one; whoever drops the last reference of a failed
 *    socket wins a CAS that moves the version on to the next even value and
 *    recycles the object. A transient address() that raced in holds a
 *    reference at that moment, so the CAS fails and the recycle falls to
 *    that caller's own dereference.
 * Objects live in a type-stable pool, so reading the word of a recycled
 * socket is always safe.
 *
 * Input. Each epoll event bumps nevent; the event that took it from 0 starts
 * the input fiber, which reads until EAGAIN, cuts messages, and exits only
 * after a CAS of nevent back to 0 succeeds (else events came meanwhile and
 * it reads again). So there is one reader at a time and no event is lost.
 * Every message but the last of a read gets a fiber; the last runs in the
 * input fiber once it stopped reading.
 *
 * Output. Writers push requests onto a stack with one atomic exchange. The
 * writer that found the stack empty owns the socket's output: it writes at
 * once in its own fiber or thread, and if the kernel buffer fills, hands the
 * rest to a fiber that waits for EPOLLOUT. The owner reverses newly pushed
 * requests to write them oldest first, so order is the order of the pushes,
 * and it gives up ownership with a CAS of the stack head back to NULL.
 */
#include "net/socket.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fiber/butex.h"
#include "fiber/clock.h"
#include "fiber/error.h"
#include "fiber/fiber.h"
#include "fiber/fiber_internal.h"
#include "fiber/futex_internal.h"
#include "fiber/log.h"
#include "fiber/pool.h"
#include "net/dispatcher_internal.h"
#include "net/fd.h"

#define DEFAULT_MAX_UNWRITTEN (64u << 20)
#define READ_MIN (16 * 1024)
#define READ_MAX WEFT_IOBUF_READ_MAX
#define EOF_LINGER_NS (5 * WEFT_NS_PER_SEC)
#define WRITE_IOV 256
#define VERSION_LIMIT 0x7ffffffeu /* versions stay below 2^31: see dispatcher */

typedef struct wreq wreq_t;

struct wreq {
    weft_iobuf_t data;
    wreq_t *next;
    int error;    /* passed to done() */
    void (*done)(void *arg, int error);
    void *done_arg;
};

/* A pushed request whose next link is not stored yet. */
#define UNLINKED ((wreq_t *)1)

struct weft_socket {
    uint64_t vref;          /* version << 32 | references */
    uint32_t slot;
    int fd;
    int32_t error;          /* why it failed; set by whoever failed it */
    bool client;
    const weft_socket_handler_t *handler;
    void *user;
    weft_endpoint_t remote;
    size_t max_unwritten;
    /* input: the input fiber owns rbuf */
    int32_t nevent;
    int32_t inflight;       /* messages cut and not yet processed */
    int32_t quiesce;        /* butex bumped when inflight or the write list drain */
    weft_iobuf_t rbuf;
    int32_t rdhup;          /* the peer hung up: read to EOF, never stop short */
    size_t read_hint;       /* bytes to ask of the next read */
    /* output */
    wreq_t *write_head;     /* newest pushed request */
    wreq_t *write_tail;     /* owner only: last request linked oldest-first */
    int64_t unwritten;
    int32_t epollout;       /* butex bumped on EPOLLOUT and on failure */
    weft_socket_t *flush_next; /* in its worker's deferred list */
    wreq_t *flush_req;      /* the first request of a deferred flush */
};

static struct {
    int64_t created, recycled, bytes_read, bytes_written;
} st;

static void socket_obj_init(void *obj, uint32_t slot)
{
    weft_socket_t *s = obj;
    s->slot = slot;
    s->vref = (uint64_t)2 << 32;
    s->fd = -1;
}

static weft_pool_t socket_pool = WEFT_POOL_INITIALIZER("socket", weft_socket_t, socket_obj_init);

static inline uint32_t vref_version(uint64_t v)
{
    return (uint32_t)(v >> 32);
}

static inline uint32_t vref_nref(uint64_t v)
{
    return (uint32_t)v;
}

static inline uint64_t make_vref(uint32_t version, uint32_t nref)
{
    return ((uint64_t)version << 32) | nref;
}

static inline uint32_t id_version(weft_socket_id_t id)
{
    return (uint32_t)(id >> 32);
}

/* The version after a failed one: the next healthy incarnation's. */
static inline uint32_t version_after_failed(uint32_t failed)
{
    return failed + 1 > VERSION_LIMIT ? 2 : failed + 1;
}

/* ---- the versioned reference count ---- */

static void socket_recycle(weft_socket_t *s)
{
    if (s->handler && s->handler->on_recycle)
        s->handler->on_recycle(s);
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
    weft_iobuf_clear(&s->rbuf);
    /* Release: whoever sees the count sees what on_recycle did. */
    __atomic_fetch_add(&st.recycled, 1, __ATOMIC_RELEASE);
    weft_pool_put(&socket_pool, s->slot);
}

void weft_socket_dereference(weft_socket_t *s)
{
    uint64_t old = __atomic_fetch_sub(&s->vref, 1, __ATOMIC_ACQ_REL);
    if (vref_nref(old) != 1)
        return;
    uint32_t ver = vref_version(old);
    if (!(ver & 1))
        return; /* a transient address() of a free slot */
    uint64_t expected = old - 1;
    if (__atomic_compare_exchange_n(&s->vref, &expected, make_vref(version_after_failed(ver), 0),
                                    false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
        socket_recycle(s);
}

weft_socket_t *weft_socket_address(weft_socket_id_t id)
{
    weft_socket_t *s = weft_pool_at(&socket_pool, (uint32_t)id);
    if (!s)
        return NULL;
    uint64_t old = __atomic_fetch_add(&s->vref, 1, __ATOMIC_ACQUIRE);
    if (vref_version(old) == id_version(id))
        return s;
    weft_socket_dereference(s);
    return NULL;
}

bool weft_socket_alive(weft_socket_id_t id)
{
    weft_socket_t *s = weft_pool_at(&socket_pool, (uint32_t)id);
    return s && vref_version(__atomic_load_n(&s->vref, __ATOMIC_ACQUIRE)) == id_version(id);
}

void weft_socket_ref(weft_socket_t *s)
{
    __atomic_fetch_add(&s->vref, 1, __ATOMIC_RELAXED);
}

weft_socket_id_t weft_socket_id(const weft_socket_t *s)
{
    uint32_t ver = vref_version(__atomic_load_n(&s->vref, __ATOMIC_RELAXED));
    return ((uint64_t)(ver & ~1u) << 32) | s->slot;
}

static void bump_and_wake(int32_t *word)
{
    __atomic_fetch_add(word, 1, __ATOMIC_RELEASE);
    weft_butex_wake_all(word);
}

/* The handler of a socket that failed while being written to, which must not
 * run on the writer's stack; the creation reference came along. */
static void failed_fiber(void *arg)
{
    weft_socket_t *s = arg;
    s->handler->on_failed(s);
    weft_socket_dereference(s);
}

/* Fails s if it is still at `version`. `writing`: we are on a writer's stack
 * (inside weft_socket_write(), whose caller may hold locks the handler takes,
 * or in the scheduler's batch flush, where nothing may block), so on_failed
 * runs in a fiber of its own; otherwise in the caller's. */
static int socket_fail(weft_socket_t *s, uint32_t version, int error, bool writing)
{
    uint64_t v = __atomic_load_n(&s->vref, __ATOMIC_RELAXED);
    do {
        if (vref_version(v) != version)
            return -ESRCH;
    } while (!__atomic_compare_exchange_n(&s->vref, &v, make_vref(version + 1, vref_nref(v)), false,
                                          __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
    /* We won: the creation reference is ours to drop, and keeps s alive.
     * Only the winner records the reason (a stale caller must never touch a
     * socket that reused the slot); readers wait the instant it takes. */
    __atomic_store_n(&s->error, error ? error : EINVAL, __ATOMIC_RELEASE);
    shutdown(s->fd, SHUT_RDWR);
    bump_and_wake(&s->epollout);
    bump_and_wake(&s->quiesce);
    if (s->handler && s->handler->on_failed) {
        if (writing && weft_fiber_start_background(NULL, NULL, failed_fiber, s) == 0)
            return 0;
        s->handler->on_failed(s);
    }
    weft_socket_dereference(s);
    return 0;
}

int weft_socket_set_failed(weft_socket_id_t id, int error)
{
    weft_socket_t *s = weft_pool_at(&socket_pool, (uint32_t)id);
    if (!s || id == 0)
        return -ESRCH;
    return socket_fail(s, id_version(id), error < 0 ? -error : error, false);
}

/* Fails a socket we hold a reference to, whatever its id. */
static void fail_held(weft_socket_t *s, int error, bool writing)
{
    uint32_t ver = vref_version(__atomic_load_n(&s->vref, __ATOMIC_RELAXED));
    if (!(ver & 1))
        socket_fail(s, ver, error, writing);
}

bool weft_socket_failed(const weft_socket_t *s)
{
    return vref_version(__atomic_load_n(&s->vref, __ATOMIC_ACQUIRE)) & 1;
}

int weft_socket_error(const weft_socket_t *s)
{
    unsigned spins = 0;
    for (;;) {
        if (!weft_socket_failed(s))
            return 0;
        int e = __atomic_load_n(&s->error, __ATOMIC_ACQUIRE);
        if (e)
            return e;
        /* Failed an instant ago: the winner is about to store why. */
        weft__spin_backoff(&spins);
    }
}

int weft_socket_fd(const weft_socket_t *s)
{
    return s->fd;
}

void *weft_socket_user(const weft_socket_t *s)
{
    return s->user;
}

const weft_endpoint_t *weft_socket_remote(const weft_socket_t *s)
{
    return &s->remote;
}

size_t weft_socket_unwritten(const weft_socket_t *s)
{
    int64_t n = __atomic_load_n(&s->unwritten, __ATOMIC_RELAXED);
    return n > 0 ? (size_t)n : 0;
}

static void start_input(weft_socket_t *s);

/* ---- creation ---- */

static int prepare_fd(int fd)
{
    int rc = weft_fd_set_nonblock(fd);
    if (rc != 0)
        return rc;
    int one = 1;
    /* Fails harmlessly on unix sockets. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return 0;
}

static int watch(weft_socket_t *s, uint32_t version)
{
    uint32_t events = EPOLLOUT;
    if (s->handler)
        events |= EPOLLIN | EPOLLRDHUP;
    return weft__dispatcher_add(s->fd, ((uint64_t)version << 32) | s->slot, events);
}

int weft_socket_create(weft_socket_id_t *id, const weft_socket_options_t *opts)
{
    int fd = opts ? opts->fd : -1;
    int rc = fd < 0 ? -EBADF : prepare_fd(fd);
    if (rc == 0)
        rc = weft__dispatcher_ensure();
    if (rc != 0)
        goto fail_fd;
    uint32_t slot;
    weft_socket_t *s = weft_pool_get(&socket_pool, &slot);
    if (!s) {
        rc = -ENOMEM;
        goto fail_fd;
    }
    s->fd = fd;
    s->error = 0;
    s->client = opts->client;
    s->handler = opts->handler;
    s->user = opts->user;
    s->max_unwritten = opts->max_unwritten ? opts->max_unwritten : DEFAULT_MAX_UNWRITTEN;
    s->nevent = 0;
    s->inflight = 0;
    s->rdhup = 0;
    s->read_hint = READ_MIN;
    weft_iobuf_init(&s->rbuf);
    s->write_head = s->write_tail = NULL;
    s->unwritten = 0;
    if (weft_endpoint_from_peer(&s->remote, fd) != 0)
        memset(&s->remote, 0, sizeof(s->remote));
    /* The creation reference: added, never stored, since a stale address()
     * may hold a transient reference to this free slot right now. */
    uint64_t old = __atomic_fetch_add(&s->vref, 1, __ATOMIC_ACQ_REL);
    uint32_t version = vref_version(old);
    __atomic_fetch_add(&st.created, 1, __ATOMIC_RELAXED);
    /* The id is out before the first event can reach a handler, and
     * atomically: the caller may have published *id's address already. */
    __atomic_store_n(id, ((uint64_t)version << 32) | slot, __ATOMIC_RELEASE);
    rc = watch(s, version);
    if (rc != 0) {
        socket_fail(s, version, -rc, false);
        __atomic_store_n(id, 0, __ATOMIC_RELEASE);
        return rc;
    }
    return 0;
fail_fd:
    if (fd >= 0)
        close(fd);
    return rc;
}

int weft_socket_revive(weft_socket_t *s, int fd)
{
    if (!s->client || fd < 0)
        return -EINVAL;
    uint64_t v = __atomic_load_n(&s->vref, __ATOMIC_ACQUIRE);
    if (!(vref_version(v) & 1))
        return -EINVAL;
    if (__atomic_load_n(&s->write_head, __ATOMIC_ACQUIRE) ||
        __atomic_load_n(&s->inflight, __ATOMIC_ACQUIRE))
        return -EBUSY;
    /* Claim the input as an event would, so that no input fiber of the old
     * fd runs while the fd changes under it. */
    int32_t idle = 0;
    if (!__atomic_compare_exchange_n(&s->nevent, &idle, 1, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_RELAXED))
        return -EBUSY;
    int rc = prepare_fd(fd);
    if (rc != 0) {
        __atomic_store_n(&s->nevent, 0, __ATOMIC_RELEASE);
        return rc;
    }
    close(s->fd);
    __atomic_store_n(&s->fd, fd, __ATOMIC_RELEASE);
    weft_iobuf_clear(&s->rbuf);
    s->rdhup = 0;
    weft_endpoint_from_peer(&s->remote, fd);
    /* Back to the healthy version the id carries, with a creation ref;
     * only then may the error read 0. */
    uint32_t version = vref_version(v) - 1;
    while (!__atomic_compare_exchange_n(&s->vref, &v, make_vref(version, vref_nref(v) + 1), false,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        if (vref_version(v) != version + 1) {
            __atomic_store_n(&s->nevent, 0, __ATOMIC_RELEASE);
            return -EINVAL;
        }
    }
    __atomic_store_n(&s->error, 0, __ATOMIC_RELEASE);
    rc = watch(s, version);
    if (rc != 0) {
        __atomic_store_n(&s->nevent, 0, __ATOMIC_RELEASE);
        socket_fail(s, version, -rc, false);
        return rc;
    }
    /* Give the input back; events that came meanwhile need a reader. */
    int32_t one = 1;
    if (!__atomic_compare_exchange_n(&s->nevent, &one, 0, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_RELAXED))
        start_input(s);
    return 0;
}

/* ---- input ---- */

static void message_done(weft_socket_t *s)
{
    if (__atomic_sub_fetch(&s->inflight, 1, __ATOMIC_ACQ_REL) == 0)
        bump_and_wake(&s->quiesce);
    weft_socket_dereference(s);
}

static void process_fiber(void *arg)
{
    weft_socket_msg_t *msg = arg;
    weft_socket_t *s = msg->socket;
    s->handler->process(msg);
    message_done(s);
}

static void dispatch(weft_socket_msg_t *msg)
{
    weft_fiber_attr_t attr = {.name = "weft-message"};
    if (weft_fiber_start_background(NULL, &attr, process_fiber, msg) != 0)
        process_fiber(msg); /* no fiber to be had: do it here */
}

/* Starts fibers for a batch of messages, newest first: the run queue pops
 * newest first, so they begin in the order they arrived. */
static void dispatch_batch(weft_socket_msg_t **batch, int n)
{
    while (n > 0)
        dispatch(batch[--n]);
}

/* Cuts every complete message out of rbuf. The first of a read round waits
 * in *first, to run in the input fiber once it stops reading; the others
 * go to fibers of their own. Returns -error on bad bytes. */
static int cut_messages(weft_socket_t *s, weft_socket_msg_t **first)
{
    weft_socket_msg_t *batch[64];
    int n = 0, rc = 0;
    for (;;) {
        int error = 0;
        weft_socket_msg_t *msg = s->handler->cut(s, &s->rbuf, &error);
        if (!msg) {
            rc = error;
            break;
        }
        msg->socket = s;
        weft_socket_ref(s);
        __atomic_fetch_add(&s->inflight, 1, __ATOMIC_RELAXED);
        if (!*first) {
            *first = msg;
            continue;
        }
        batch[n++] = msg;
        if (n == (int)(sizeof(batch) / sizeof(batch[0]))) {
            dispatch_batch(batch, n);
            n = 0;
        }
    }
    dispatch_batch(batch, n);
    return rc;
}

/* Reads until the kernel has nothing more. Returns 0, or why the socket
 * must fail. A read that returns less than asked means the socket is
 * drained: with edge-triggered events, more data raises a new event (and
 * nevent), so there is no need for the extra read that would say EAGAIN,
 * except after a hang-up, which must be read to its EOF. */
static int read_available(weft_socket_t *s, weft_socket_msg_t **first)
{
    while (!weft_socket_failed(s)) {
        size_t want = s->read_hint;
        ssize_t n = weft_iobuf_read_fd(&s->rbuf, s->fd, want);
        if (n > 0) {
            __atomic_fetch_add(&st.bytes_read, n, __ATOMIC_RELAXED);
            if ((size_t)n == want && want < READ_MAX)
                s->read_hint = want * 2 < READ_MAX ? want * 2 : READ_MAX;
            else if ((size_t)n < want / 4 && want > READ_MIN)
                s->read_hint = want / 2;
            int rc = cut_messages(s, first);
            if (rc < 0)
                return -rc;
            if ((size_t)n < want && !__atomic_load_n(&s->rdhup, __ATOMIC_ACQUIRE))
                return 0;
            continue;
        }
        if (n == 0)
            return WEFT_EEOF;
        if (n == -EAGAIN)
            return 0;
        return (int)-n;
    }
    return 0;
}

/* The peer shut its side: let requests already received be answered and
 * their replies written (bounded by EOF_LINGER_NS) before closing ours. */
static void linger_after_eof(weft_socket_t *s)
{
    int64_t deadline = weft_clock_ns() + EOF_LINGER_NS;
    for (;;) {
        int32_t seq = __atomic_load_n(&s->quiesce, __ATOMIC_ACQUIRE);
        if (weft_socket_failed(s) ||
            (!__atomic_load_n(&s->inflight, __ATOMIC_ACQUIRE) &&
             !__atomic_load_n(&s->write_head, __ATOMIC_ACQUIRE)))
            return;
        if (weft_butex_wait(&s->quiesce, seq, deadline) == -ETIMEDOUT)
            return;
    }
}

static void input_fiber(void *arg)
{
    weft_socket_t *s = arg;
    weft_socket_msg_t *first = NULL;
    int32_t seen = __atomic_load_n(&s->nevent, __ATOMIC_ACQUIRE);
    int why = 0;
    for (;;) {
        if (s->handler->on_readable)
            s->handler->on_readable(s);
        else
            why = read_available(s, &first);
        if (why || weft_socket_failed(s))
            break;
        if (__atomic_compare_exchange_n(&s->nevent, &seen, 0, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            break;
    }
    if (first) {
        s->handler->process(first);
        message_done(s);
    }
    if (why == WEFT_EEOF)
        linger_after_eof(s);
    if (why) {
        if (why != WEFT_EEOF)
            WEFT_LOG_EVERY_SEC(WEFT_LOG_WARN, "socket fd=%d failed on input: %s", s->fd,
                               weft_strerror(why));
        fail_held(s, why, false);
    }
    /* A failed socket reads no more: let a revive claim the input. */
    if (weft_socket_failed(s))
        __atomic_store_n(&s->nevent, 0, __ATOMIC_RELEASE);
    weft_socket_dereference(s);
}

/* Starts an input fiber for s, which gets a reference of its own. */
static void start_input(weft_socket_t *s)
{
    weft_fiber_attr_t attr = {.name = "weft-input"};
    weft_socket_ref(s);
    if (weft_fiber_start_background(NULL, &attr, input_fiber, s) != 0) {
        fail_held(s, ENOMEM, false);
        weft_socket_dereference(s);
    }
}

void weft__socket_on_events(uint64_t id, uint32_t events)
{
    weft_socket_t *s = weft_socket_address(id);
    if (!s)
        return;
    if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
        bump_and_wake(&s->epollout);
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        __atomic_store_n(&s->rdhup, 1, __ATOMIC_RELEASE);
    if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) && s->handler &&
        __atomic_fetch_add(&s->nevent, 1, __ATOMIC_ACQ_REL) == 0)
        start_input(s);
    weft_socket_dereference(s);
}

/* ---- output ---- */

static void done_fiber(void *arg)
{
    wreq_t *req = arg;
    req->done(req->done_arg, req->error);
    free(req);
}

/* Finishes a request: accounts for it and reports to its done(), in a fiber
 * of its own so that done() never runs nested in a write or a callback. */
static void complete(weft_socket_t *s, wreq_t *req, int error)
{
    size_t left = weft_iobuf_length(&req->data);
    __atomic_fetch_sub(&s->unwritten, (int64_t)left, __ATOMIC_RELAXED);
    weft_iobuf_clear(&req->data);
    if (req->done) {
        req->error = error;
        if (weft_fiber_start_background(NULL, NULL, done_fiber, req) == 0)
            return;
        req->done(req->done_arg, error);
    }
    free(req);
}

/* Owner only: links the requests pushed since `tail` behind it, oldest
 * first (the stack holds them newest first), and returns the new tail. */
static wreq_t *link_pushed(weft_socket_t *s, wreq_t *tail)
{
    wreq_t *head = __atomic_load_n(&s->write_head, __ATOMIC_ACQUIRE);
    if (head == tail)
        return tail;
    wreq_t *p = head, *prev = NULL;
    while (p != tail) {
        wreq_t *older;
        unsigned spins = 0;
        while ((older = __atomic_load_n(&p->next, __ATOMIC_ACQUIRE)) == UNLINKED)
            weft__spin_backoff(&spins);
        p->next = prev;
        prev = p;
        p = older;
    }
    tail->next = prev;
    return head;
}

/* After `cur` is written: the next request in push order, or NULL when none
 * is left, in which case output ownership was given up. */
static wreq_t *next_request(weft_socket_t *s, wreq_t *cur)
{
    if (!cur->next) {
        /* Cleared while still the owner: the moment the CAS gives ownership
         * up, a new owner may set it. */
        s->write_tail = NULL;
        wreq_t *expected = cur;
        if (__atomic_compare_exchange_n(&s->write_head, &expected, NULL, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            bump_and_wake(&s->quiesce);
            return NULL;
        }
        s->write_tail = link_pushed(s, cur);
    }
    return cur->next;
}

/* One sendmsg of as much of the queue as fits in WRITE_IOV segments, from
 * req on. Bytes written, or -errno (-EAGAIN when the kernel is full). */
static ssize_t send_chain(weft_socket_t *s, wreq_t *req)
{
    struct iovec iov[WRITE_IOV];
    size_t n = 0;
    s->write_tail = link_pushed(s, s->write_tail ? s->write_tail : req);
    for (wreq_t *r = req; r && n < WRITE_IOV; r = r->next)
        n += weft_iobuf_fill_iov(&r->data, iov + n, WRITE_IOV - n);
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = n};
    for (;;) {
        ssize_t w = sendmsg(s->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w >= 0)
            return w;
        if (errno != EINTR)
            return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

/* Takes w written bytes off the queue from req on, completing the requests
 * they finish. Returns the first request with bytes left, or NULL once the
 * queue is empty and ownership given up. */
static wreq_t *consume(weft_socket_t *s, wreq_t *req, size_t w)
{
    __atomic_fetch_sub(&s->unwritten, (int64_t)w, __ATOMIC_RELAXED);
    __atomic_fetch_add(&st.bytes_written, (int64_t)w, __ATOMIC_RELAXED);
    while (req) {
        w -= weft_iobuf_pop_front(&req->data, w);
        if (weft_iobuf_length(&req->data))
            return req;
        wreq_t *next = next_request(s, req);
        complete(s, req, 0);
        req = next;
    }
    return NULL;
}

/* Fails req and everything queued behind it, giving up output ownership. */
static void fail_requests(weft_socket_t *s, wreq_t *req, int error)
{
    while (req) {
        wreq_t *next = next_request(s, req);
        complete(s, req, error);
        req = next;
    }
}

/* Owns the output from req on: writes, waits for EPOLLOUT when the kernel
 * is full, and stops when the queue is empty (ownership given up). When it
 * may not block, returns the request it stopped at (ownership kept) for a
 * fiber to continue. */
static wreq_t *drive_output(weft_socket_t *s, wreq_t *req, bool may_block)
{
    while (req) {
        int32_t seq = __atomic_load_n(&s->epollout, __ATOMIC_ACQUIRE);
        int error = weft_socket_error(s);
        ssize_t w = error ? -error : send_chain(s, req);
        if (w >= 0) {
            req = consume(s, req, (size_t)w);
            continue;
        }
        if (w == -EAGAIN) {
            if (!may_block)
                return req;
            weft_butex_wait(&s->epollout, seq, -1);
            continue;
        }
        if (!error) {
            WEFT_LOG_EVERY_SEC(WEFT_LOG_WARN, "socket fd=%d failed on output: %s", s->fd,
                               weft_strerror((int)w));
            fail_held(s, (int)-w, true);
        }
        int why = weft_socket_error(s);
        fail_requests(s, req, why ? why : (int)-w);
        return NULL;
    }
    return NULL;
}

typedef struct {
    weft_socket_t *s;
    wreq_t *req;
} keep_write_t;

static void keep_writing(void *arg)
{
    keep_write_t *kw = arg;
    drive_output(kw->s, kw->req, true);
    weft_socket_dereference(kw->s);
    free(kw);
}

static void keep_writing(void *arg);

/* Output continues in a fiber of its own (ownership and a reference go to
 * it) once the writer that owns it cannot go on without blocking. */
static void continue_output(weft_socket_t *s, wreq_t *rest)
{
    keep_write_t *kw = malloc(sizeof(*kw));
    if (kw) {
        kw->s = s;
        kw->req = rest;
        if (weft_fiber_start_background(NULL, NULL, keep_writing, kw) == 0)
            return;
        free(kw);
    }
    fail_held(s, ENOMEM, true);
    fail_requests(s, rest, ENOMEM);
    weft_socket_dereference(s);
}

/*
 * Deferred writes. A fiber that becomes the owner of a socket's output
 * while other fibers wait to run on its worker does not write at once: it
 * leaves the socket on the worker's list, and the worker writes it when it
 * runs dry (or after a few dozen fibers, see weft_fiber_set_batch_hook).
 * The fibers waiting are typically the other messages of the same read,
 * whose replies then leave in the same sendmsg: one system call for a
 * burst of pipelined requests instead of one each. With nothing else to
 * run, the writer writes at once, so a lone request pays nothing.
 */
static __thread weft_socket_t *tls_deferred;

static void defer_output(weft_socket_t *s, wreq_t *req)
{
    weft_socket_ref(s);
    s->flush_req = req;
    s->flush_next = tls_deferred;
    tls_deferred = s;
}

static void flush_deferred(void)
{
    weft_socket_t *s;
    while ((s = tls_deferred) != NULL) {
        tls_deferred = s->flush_next;
        wreq_t *rest = drive_output(s, s->flush_req, false);
        if (rest)
            continue_output(s, rest);
        else
            weft_socket_dereference(s);
    }
}

void weft__socket_install_batch_hook(void)
{
    weft_fiber_set_batch_hook(flush_deferred);
}

int weft_socket_write(weft_socket_t *s, weft_iobuf_t *data, const weft_write_options_t *opts)
{
    int error = weft_socket_error(s);
    if (error)
        return -error;
    size_t len = weft_iobuf_length(data);
    /* Refused when more than the limit waits already, as socket.h says: a
     * write bigger than the room left still goes, or a large message could
     * never pass a steady trickle of small ones. */
    int64_t before = __atomic_fetch_add(&s->unwritten, (int64_t)len, __ATOMIC_RELAXED);
    if (before > 0 && (size_t)before > s->max_unwritten) {
        __atomic_fetch_sub(&s->unwritten, (int64_t)len, __ATOMIC_RELAXED);
        return -WEFT_EOVERCROWDED;
    }
    wreq_t *req = malloc(sizeof(*req));
    if (!req) {
        __atomic_fetch_sub(&s->unwritten, (int64_t)len, __ATOMIC_RELAXED);
        return -ENOMEM;
    }
    weft_iobuf_init(&req->data);
    weft_iobuf_swap(&req->data, data);
    req->error = 0;
    req->done = opts ? opts->done : NULL;
    req->done_arg = opts ? opts->arg : NULL;
    req->next = UNLINKED;

    wreq_t *prev = __atomic_exchange_n(&s->write_head, req, __ATOMIC_ACQ_REL);
    if (prev) {
        /* Someone owns the output and will get to us. */
        __atomic_store_n(&req->next, prev, __ATOMIC_RELEASE);
        return 0;
    }
    req->next = NULL;
    s->write_tail = req;
    if (weft__worker_backlog() > 0 && weft_fiber_in_fiber()) {
        defer_output(s, req);
        return 0;
    }
    wreq_t *rest = drive_output(s, req, false);
    if (rest) {
        weft_socket_ref(s);
        continue_output(s, rest);
    }
    return 0;
}

/* ---- connecting ---- */

int weft_connect_fd(const weft_endpoint_t *remote, int64_t deadline_ns)
{
    int fd = socket(remote->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = 0;
    int64_t pause = 1000; /* us, for a unix listener whose backlog is full */
    while (connect(fd, (const struct sockaddr *)&remote->addr, remote->len) != 0) {
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN && remote->addr.ss_family == AF_UNIX) {
            /* Unix sockets report a full backlog at once instead of waiting
             * like TCP: wait here, until the deadline. */
            int64_t now = weft_clock_ns(), until = now + pause * WEFT_NS_PER_US;
            if (deadline_ns >= 0 && now >= deadline_ns) {
                rc = -ETIMEDOUT;
                goto fail;
            }
            weft_fiber_sleep_until(deadline_ns >= 0 && until > deadline_ns ? deadline_ns : until);
            pause = pause < 64000 ? pause * 2 : pause;
            continue;
        }
        if (errno != EINPROGRESS) {
            rc = -errno;
            goto fail;
        }
        rc = weft_fd_wait(fd, EPOLLOUT, deadline_ns);
        if (rc != 0)
            goto fail;
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err) {
            rc = -err;
            goto fail;
        }
        break;
    }
    return fd;
fail:
    close(fd);
    return rc;
}

int weft_socket_connect(weft_socket_id_t *id, const weft_endpoint_t *remote, int64_t deadline_ns,
                        const weft_socket_options_t *opts)
{
    int fd = weft_connect_fd(remote, deadline_ns);
    if (fd < 0)
        return fd;
    weft_socket_options_t o = opts ? *opts : (weft_socket_options_t){0};
    o.fd = fd;
    o.client = true;
    return weft_socket_create(id, &o);
}

void weft_socket_stats(weft_socket_stats_t *out)
{
    out->created = __atomic_load_n(&st.created, __ATOMIC_RELAXED);
    out->recycled = __atomic_load_n(&st.recycled, __ATOMIC_ACQUIRE);
    out->alive = out->created - out->recycled;
    out->bytes_read = __atomic_load_n(&st.bytes_read, __ATOMIC_RELAXED);
    out->bytes_written = __atomic_load_n(&st.bytes_written, __ATOMIC_RELAXED);
}
