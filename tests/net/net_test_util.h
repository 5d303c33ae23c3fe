/*
 * net_test_util.h - helpers shared by the socket tests of tests/net.
 *
 * Short atomics, fibers and threads that check their own start, a bounded
 * wait for a condition (from a fiber or a pthread), fd helpers (socketpairs,
 * blocking reads with a deadline, counting /proc/self/fd), a byte pattern
 * that says where each byte came from, length-prefixed framing with a
 * handler cut() for it, an echo server on an acceptor, a client socket that
 * queues what it receives, and a tiny case runner: a test program runs all
 * of its cases, or only those named on its command line, e.g.
 *   build-nettests/tests/net/test_socket echo_tcp4 fd_wait
 */
#ifndef WEFT_TESTS_NET_TEST_UTIL_H
#define WEFT_TESTS_NET_TEST_UTIL_H

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/acceptor.h"
#include "net/endpoint.h"
#include "net/fd.h"
#include "net/iobuf.h"
#include "net/socket.h"
#include "weft.h"
#include "weft_test.h"

/* ---- atomics, short names ---- */

#define NT_LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define NT_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define NT_ADD(p, v) __atomic_add_fetch((p), (v), __ATOMIC_ACQ_REL)
#define NT_SUB(p, v) __atomic_sub_fetch((p), (v), __ATOMIC_ACQ_REL)
#define NT_XCHG(p, v) __atomic_exchange_n((p), (v), __ATOMIC_ACQ_REL)

static inline int64_t nt_now(void)
{
    return weft_clock_ns();
}

static inline double nt_ms(int64_t ns)
{
    return (double)ns / 1e6;
}

/* xorshift64*: cheap, reproducible per-caller random numbers. */
static inline uint64_t nt_rand(uint64_t *state)
{
    uint64_t x = *state ? *state : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [0, n). */
static inline uint64_t nt_below(uint64_t *state, uint64_t n)
{
    return n ? nt_rand(state) % n : 0;
}

/* ---- fibers and threads ---- */

static inline weft_fiber_t nt_start(weft_fiber_fn *fn, void *arg)
{
    weft_fiber_t id = 0;
    WT_EQ(weft_fiber_start_background(&id, NULL, fn, arg), 0);
    return id;
}

static inline void nt_join(weft_fiber_t id)
{
    WT_EQ(weft_fiber_join(id), 0);
}

static inline pthread_t nt_thread(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    WT_EQ(pthread_create(&t, NULL, fn, arg), 0);
    return t;
}

static inline void nt_thread_join(pthread_t t)
{
    WT_EQ(pthread_join(t, NULL), 0);
}

/* Runs fn(arg) in a fiber and waits for it: for code that must run in one. */
static inline void nt_in_fiber(weft_fiber_fn *fn, void *arg)
{
    nt_join(nt_start(fn, arg));
}

/* Sleeps in a fiber (giving the worker away) or a pthread. */
static inline void nt_sleep_ms(int ms)
{
    weft_fiber_usleep((uint64_t)ms * 1000);
}

/* Waits until cond holds, polling every 200 us; fails the test after
 * timeout_s seconds. Usable from a fiber or a pthread. */
#define NT_AWAIT(cond, timeout_s)                                             \
    do {                                                                      \
        int64_t nt_end_ = nt_now() + (int64_t)(timeout_s) * WEFT_NS_PER_SEC;  \
        while (!(cond)) {                                                     \
            WT_ASSERT_MSG(nt_now() < nt_end_, "timed out after %d s waiting for %s", \
                          (int)(timeout_s), #cond);                           \
            weft_fiber_usleep(200);                                           \
        }                                                                     \
    } while (0)

/* ---- file descriptors ---- */

/* Open fds of this process (the directory's own fd not counted). */
static inline int nt_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    WT_ASSERT(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;
}

/* A unix stream socketpair, both ends blocking and close-on-exec. */
static inline void nt_socketpair(int sv[2])
{
    WT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
}

static inline void nt_set_blocking(int fd, bool blocking)
{
    int fl = fcntl(fd, F_GETFL);
    WT_GE(fl, 0);
    WT_EQ(fcntl(fd, F_SETFL, blocking ? fl & ~O_NONBLOCK : fl | O_NONBLOCK), 0);
}

/* Waits with poll(2) for events on fd; true if they came before timeout_ms. */
static inline bool nt_poll(int fd, short events, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = events};
    for (;;) {
        int n = poll(&p, 1, timeout_ms);
        if (n >= 0)
            return n > 0;
        WT_EQ(errno, EINTR);
    }
}

/* Reads exactly n bytes (blocking or not) unless EOF, an error or the
 * deadline comes first. Returns the bytes read, or -errno if none were. */
static inline ssize_t nt_read_full(int fd, void *buf, size_t n, int timeout_ms)
{
    int64_t end = nt_now() + (int64_t)timeout_ms * WEFT_NS_PER_MS;
    size_t got = 0;
    while (got < n) {
        int64_t left = end - nt_now();
        if (left <= 0 || !nt_poll(fd, POLLIN, (int)(left / WEFT_NS_PER_MS) + 1))
            break;
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r < 0)
            return got ? (ssize_t)got : -errno;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* Writes all n bytes to a blocking fd. */
static inline void nt_write_full(int fd, const void *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, (const char *)buf + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        WT_ASSERT_MSG(w > 0, "write: %s", strerror(errno));
        done += (size_t)w;
    }
}

/* Reads until EOF or error, discarding; returns 0 at EOF, -errno on error,
 * -ETIMEDOUT if neither came within timeout_ms. Counts bytes in *total. */
static inline int nt_drain_to_eof(int fd, int timeout_ms, size_t *total)
{
    char sink[65536];
    int64_t end = nt_now() + (int64_t)timeout_ms * WEFT_NS_PER_MS;
    for (;;) {
        int64_t left = end - nt_now();
        if (left <= 0 || !nt_poll(fd, POLLIN, (int)(left / WEFT_NS_PER_MS) + 1))
            return -ETIMEDOUT;
        ssize_t r = read(fd, sink, sizeof(sink));
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r <= 0)
            return r == 0 ? 0 : -errno;
        if (total)
            *total += (size_t)r;
    }
}

/* ---- a byte pattern that says where each byte came from ---- */

static inline uint8_t nt_pattern_byte(uint64_t seed, size_t i)
{
    uint64_t x = seed + (uint64_t)(i >> 6) * 0x9E3779B97F4A7C15ull;
    x ^= x >> 29;
    return (uint8_t)(x + i * 31u);
}

static inline void nt_fill_pattern(void *buf, size_t n, uint64_t seed)
{
    uint8_t *p = buf;
    for (size_t i = 0; i < n; i++)
        p[i] = nt_pattern_byte(seed, i);
}

/* Index of the first byte that does not match, or n. */
static inline size_t nt_check_pattern(const void *buf, size_t n, uint64_t seed)
{
    const uint8_t *p = buf;
    for (size_t i = 0; i < n; i++)
        if (p[i] != nt_pattern_byte(seed, i))
            return i;
    return n;
}

/* FNV-1a, for checksums over frames. */
static inline uint32_t nt_fnv1a(uint32_t h, const void *data, size_t n)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}
#define NT_FNV_INIT 2166136261u

/* ---- length-prefixed frames: a 4-byte big-endian length, then the body ---- */

#define NT_MAX_FRAME (64u << 20) /* longer lengths are bad input */

typedef struct nt_msg {
    weft_socket_msg_t base; /* first: what cut() returns */
    weft_iobuf_t frame;     /* the whole frame, header included */
    struct nt_msg *next;
} nt_msg_t;

static inline void nt_msg_free(nt_msg_t *m)
{
    weft_iobuf_clear(&m->frame);
    free(m);
}

/* The body length of the frame at the front of `in`, or -1 if fewer than 4
 * bytes are there. */
static inline int64_t nt_frame_body_len(const weft_iobuf_t *in)
{
    uint32_t be;
    if (weft_iobuf_copy_out(in, 0, &be, 4) < 4)
        return -1;
    return ntohl(be);
}

static inline weft_socket_msg_t *nt_frame_cut(weft_socket_t *s, weft_iobuf_t *in, int *error)
{
    (void)s;
    *error = 0;
    int64_t len = nt_frame_body_len(in);
    if (len < 0)
        return NULL;
    if (len > NT_MAX_FRAME) {
        *error = -EBADMSG;
        return NULL;
    }
    if (weft_iobuf_length(in) < 4 + (size_t)len)
        return NULL;
    nt_msg_t *m = calloc(1, sizeof(*m));
    WT_ASSERT(m);
    WT_EQ(weft_iobuf_cutn(&m->frame, in, 4 + (size_t)len), 4 + len);
    return &m->base;
}

/* Appends one frame holding body[0..n) to b. */
static inline void nt_frame_append(weft_iobuf_t *b, const void *body, size_t n)
{
    uint32_t be = htonl((uint32_t)n);
    WT_EQ(weft_iobuf_append(b, &be, 4), 0);
    if (n)
        WT_EQ(weft_iobuf_append(b, body, n), 0);
}

/* A raw frame, header and body, in plain memory (free() it). */
static inline void *nt_frame_raw(const void *body, size_t n, size_t *total)
{
    uint8_t *p = malloc(4 + n + 1);
    WT_ASSERT(p);
    uint32_t be = htonl((uint32_t)n);
    memcpy(p, &be, 4);
    if (n)
        memcpy(p + 4, body, n);
    *total = 4 + n;
    return p;
}

/* True if the frame m carries exactly body[0..n). */
static inline bool nt_msg_body_is(const nt_msg_t *m, const void *body, size_t n)
{
    if (weft_iobuf_length(&m->frame) != 4 + n)
        return false;
    uint8_t *copy = malloc(n + 4);
    WT_ASSERT(copy);
    weft_iobuf_copy_out(&m->frame, 0, copy, n + 4);
    bool same = memcmp(copy + 4, body, n) == 0;
    free(copy);
    return same;
}

/* ---- an echo server: every frame comes back as it was ---- */

typedef struct nt_server {
    weft_acceptor_t *acc;
    weft_endpoint_t ep;
    char addr[WEFT_ENDPOINT_STRLEN];
    const weft_socket_handler_t *handler; /* for accepted sockets */
    int32_t accepted;
    int32_t failed;     /* accepted sockets that failed */
    int32_t last_error; /* the error the last of them failed with */
    int32_t recycled;
} nt_server_t;

static inline void nt_echo_process(weft_socket_msg_t *msg)
{
    nt_msg_t *m = (nt_msg_t *)msg;
    weft_socket_write(m->base.socket, &m->frame, NULL); /* fails if the socket did */
    nt_msg_free(m);
}

static inline void nt_server_on_failed(weft_socket_t *s)
{
    nt_server_t *srv = weft_socket_user(s);
    NT_STORE(&srv->last_error, weft_socket_error(s));
    NT_ADD(&srv->failed, 1);
}

static inline void nt_server_on_recycle(weft_socket_t *s)
{
    nt_server_t *srv = weft_socket_user(s);
    NT_ADD(&srv->recycled, 1);
}

static const weft_socket_handler_t nt_echo_handler = {
    .cut = nt_frame_cut,
    .process = nt_echo_process,
    .on_failed = nt_server_on_failed,
    .on_recycle = nt_server_on_recycle,
};

static inline void nt_server_accept(int fd, const weft_endpoint_t *remote, void *arg)
{
    (void)remote;
    nt_server_t *srv = arg;
    weft_socket_options_t o = {.fd = fd, .handler = srv->handler, .user = srv};
    weft_socket_id_t id;
    WT_EQ(weft_socket_create(&id, &o), 0);
    NT_ADD(&srv->accepted, 1);
}

/* Starts an echo server (or one with `handler`, if not NULL) on address.
 * Returns 0 or the acceptor's error. */
static inline int nt_server_start(nt_server_t *srv, const char *address,
                                  const weft_socket_handler_t *handler)
{
    memset(srv, 0, sizeof(*srv));
    srv->handler = handler ? handler : &nt_echo_handler;
    weft_acceptor_options_t ao = {.on_accept = nt_server_accept, .arg = srv};
    int rc = weft_acceptor_start(&srv->acc, address, &ao);
    if (rc != 0)
        return rc;
    srv->ep = *weft_acceptor_endpoint(srv->acc);
    weft_endpoint_format(&srv->ep, srv->addr, sizeof(srv->addr));
    return 0;
}

/* Stops accepting and waits until every accepted socket was recycled. */
static inline void nt_server_stop(nt_server_t *srv)
{
    weft_acceptor_stop(srv->acc);
    srv->acc = NULL;
    NT_AWAIT(NT_LOAD(&srv->recycled) == NT_LOAD(&srv->accepted), 20);
}

/* ---- a client socket that queues the frames it receives ---- */

typedef struct nt_client {
    weft_socket_id_t id;
    weft_mutex_t mu;
    weft_cond_t cv;
    nt_msg_t *head, *tail; /* received, oldest first; under mu */
    int32_t failed;        /* on_failed calls */
    int32_t error;         /* the error of the last failure */
    int32_t recycled;      /* on_recycle calls */
    int32_t failed_seen;   /* recv waits for failures past this count */
} nt_client_t;

static inline void nt_client_process(weft_socket_msg_t *msg)
{
    nt_msg_t *m = (nt_msg_t *)msg;
    nt_client_t *c = weft_socket_user(msg->socket);
    weft_mutex_lock(&c->mu);
    if (c->tail)
        c->tail->next = m;
    else
        c->head = m;
    c->tail = m;
    weft_cond_broadcast(&c->cv);
    weft_mutex_unlock(&c->mu);
}

static inline void nt_client_on_failed(weft_socket_t *s)
{
    nt_client_t *c = weft_socket_user(s);
    weft_mutex_lock(&c->mu);
    NT_STORE(&c->error, weft_socket_error(s));
    NT_ADD(&c->failed, 1);
    weft_cond_broadcast(&c->cv);
    weft_mutex_unlock(&c->mu);
}

static inline void nt_client_on_recycle(weft_socket_t *s)
{
    nt_client_t *c = weft_socket_user(s);
    NT_ADD(&c->recycled, 1);
}

static const weft_socket_handler_t nt_client_handler = {
    .cut = nt_frame_cut,
    .process = nt_client_process,
    .on_failed = nt_client_on_failed,
    .on_recycle = nt_client_on_recycle,
};

static inline void nt_client_init(nt_client_t *c)
{
    memset(c, 0, sizeof(*c));
    weft_mutex_init(&c->mu);
    weft_cond_init(&c->cv);
}

/* Connects c to ep (deadline timeout_ms from now). 0 or -errno. */
static inline int nt_client_connect(nt_client_t *c, const weft_endpoint_t *ep, int timeout_ms)
{
    nt_client_init(c);
    weft_socket_options_t o = {.handler = &nt_client_handler, .user = c};
    return weft_socket_connect(&c->id, ep, nt_now() + (int64_t)timeout_ms * WEFT_NS_PER_MS, &o);
}

/* Sends one frame with body[0..n). Returns what weft_socket_write did. */
static inline int nt_client_send(nt_client_t *c, const void *body, size_t n)
{
    weft_socket_t *s = weft_socket_address(c->id);
    if (!s)
        return -ESRCH;
    weft_iobuf_t b = WEFT_IOBUF_INIT;
    nt_frame_append(&b, body, n);
    int rc = weft_socket_write(s, &b, NULL);
    weft_iobuf_clear(&b);
    weft_socket_dereference(s);
    return rc;
}

/* The oldest received frame, waiting up to timeout_ms; NULL on timeout or
 * once the socket failed (more than failed_seen times) with nothing queued. */
static inline nt_msg_t *nt_client_recv(nt_client_t *c, int timeout_ms)
{
    int64_t deadline = nt_now() + (int64_t)timeout_ms * WEFT_NS_PER_MS;
    weft_mutex_lock(&c->mu);
    while (!c->head && NT_LOAD(&c->failed) == c->failed_seen)
        if (weft_cond_timedwait(&c->cv, &c->mu, deadline) == -ETIMEDOUT)
            break;
    nt_msg_t *m = c->head;
    if (m) {
        c->head = m->next;
        if (!c->head)
            c->tail = NULL;
        m->next = NULL;
    }
    weft_mutex_unlock(&c->mu);
    return m;
}

/* Sends body[0..n) and checks the echo comes back whole. */
static inline void nt_client_echo(nt_client_t *c, const void *body, size_t n)
{
    WT_EQ(nt_client_send(c, body, n), 0);
    nt_msg_t *m = nt_client_recv(c, 10000);
    WT_ASSERT_MSG(m, "no echo of %zu bytes (socket error %d)", n, NT_LOAD(&c->error));
    WT_ASSERT_MSG(nt_msg_body_is(m, body, n), "echo of %zu bytes differs", n);
    nt_msg_free(m);
}

/* Fails the client socket (if it has not failed yet), waits until it was
 * recycled, and frees what is left in the queue. */
static inline void nt_client_close(nt_client_t *c)
{
    weft_socket_set_failed(c->id, WEFT_ECLOSE);
    NT_AWAIT(NT_LOAD(&c->recycled) == 1, 20);
    nt_msg_t *m;
    while ((m = c->head) != NULL) {
        c->head = m->next;
        nt_msg_free(m);
    }
    c->tail = NULL;
}

/* ---- cases ---- */

typedef struct {
    const char *name;
    void (*fn)(void);
    bool fresh; /* needs a process whose runtime was not started yet */
} nt_case_t;

#define NT_CASE(fn) {#fn, fn, false}
/* A case that must be the first user of the runtime: it runs only when it is
 * the one case named on the command line. */
#define NT_FRESH_CASE(fn) {#fn, fn, true}
#define NT_NCASES(a) (sizeof(a) / sizeof((a)[0]))

/* Starts the runtime and the event dispatcher (its epoll fd and eventfd),
 * so that fd counts taken afterwards are stable. */
static inline void nt_warm_up(void)
{
    WT_EQ(weft_fiber_init(), 0);
    int sv[2];
    nt_socketpair(sv);
    weft_socket_options_t o = {.fd = sv[0]};
    weft_socket_id_t id;
    WT_EQ(weft_socket_create(&id, &o), 0);
    WT_EQ(weft_socket_set_failed(id, WEFT_ECLOSE), 0);
    close(sv[1]);
    int p[2];
    WT_EQ(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    WT_EQ(weft_fd_wait(p[1], EPOLLOUT, -1), 0);
    close(p[0]);
    close(p[1]);
    nt_sleep_ms(1);
}

/* Runs every case, or only those named in argv. Prints one line per case.
 * Fresh cases run only when named alone; the others run after
 * nt_warm_up(). */
static inline void nt_run_cases(int argc, char **argv, const nt_case_t *cases, size_t n)
{
    signal(SIGPIPE, SIG_IGN); /* raw writes to closed peers return EPIPE */
    for (int i = 1; i < argc; i++) {
        bool found = false;
        for (size_t c = 0; c < n; c++) {
            if (strcmp(argv[i], cases[c].name) != 0)
                continue;
            found = true;
            WT_ASSERT_MSG(!cases[c].fresh || argc == 2, "%s must be run alone", argv[i]);
        }
        WT_ASSERT_MSG(found, "no test case named %s", argv[i]);
    }
    bool warm = false;
    for (size_t c = 0; c < n; c++) {
        bool run = argc <= 1;
        for (int i = 1; i < argc && !run; i++)
            run = strcmp(argv[i], cases[c].name) == 0;
        if (!run)
            continue;
        if (cases[c].fresh && argc <= 1) {
            WT_NOTE("case %s: skipped (run it alone: it needs a fresh runtime)", cases[c].name);
            continue;
        }
        if (!cases[c].fresh && !warm) {
            nt_warm_up();
            warm = true;
        }
        int64_t t0 = nt_now();
        cases[c].fn();
        WT_NOTE("case %s: ok (%.1f ms)", cases[c].name, nt_ms(nt_now() - t0));
    }
}

#endif
