/*
 * net_bench.c - benchmark of weft's net/ layer against a plain epoll server.
 *
 * What: a length-prefixed echo (4-byte big-endian length, then the payload)
 * served by weft (an acceptor, sockets whose cut() frames a message and
 * whose process() writes the same IOBuf back: moved, not copied) and by a
 * plain epoll server with the same framing, the "no framework" ceiling: one
 * thread, level-triggered epoll, non-blocking sockets, one read per event
 * into a per-connection buffer, complete frames echoed with one send()
 * straight from that buffer, the rest kept for EPOLLOUT. It blocks in
 * epoll_wait (no busy polling). Both set TCP_NODELAY.
 *
 * How: each server runs in a child process forked before anything starts a
 * weft runtime, so the server process is what is compared; the client runs
 * in the parent. The client is plain C with no weft in it, the same for
 * both servers: one thread, epoll over K connections, D messages in flight
 * per connection (pipelined), blocking in epoll_wait. Every message carries
 * an id in its first 8 payload bytes; the client checks the length and id
 * of every reply, and its payload bytes during warm-up. Replies may come in
 * any order (weft runs the messages of one read in fibers of their own and
 * does not keep their order); "ooo%" counts those that came after a newer
 * message's reply. A message's latency runs from the moment the client
 * queues it to the arrival of the last byte of its reply. Each run warms
 * up, then counts the replies that arrive in a timed window (msgs/s, p50
 * and p99 of their latencies from sorted samples), then drains. Rows are
 * K x D in {1x1, 1x16, 4x16} times payloads of 16 B and 64 KiB; for each
 * row weft and epoll run alternately (the order flips every repeat),
 * --repeat times, and the table shows medians and the ratio weft/epoll of
 * messages/s (target: >= 0.8 in every row). "cpu us/msg" is the server
 * process's CPU time (all its threads, from /proc/PID/task/TID/schedstat)
 * per message echoed.
 *
 * Placement: by default the kernel places the client and the servers; on a
 * small machine whether client and server share a core swings a 1x1 round
 * trip by several times (a cross-core wakeup costs tens of microseconds).
 * --pin same puts every process on one CPU (the weft server then defaults
 * to one worker), --pin split the servers on one CPU and the client on
 * another: both give steadier numbers.
 *
 * IOBuf: appending 1 MiB in pieces of 16 B or 64 KiB and cutting it back
 * into pieces (each then released), against memcpy of the same pieces into
 * a 1 MiB buffer: MB/s of payload and the ratio.
 *
 * For profiling, --serve KIND runs one server in the foreground and
 * --connect PORT runs the client rows against a server started that way.
 */
#include "bench_util.h"
#include "fiber/clock.h"
#include "fiber/error.h"
#include "fiber/fiber.h"
#include "net/acceptor.h"
#include "net/iobuf.h"
#include "net/socket.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define HDR 4                      /* frame header: payload length, big endian */
#define SEQ 8                      /* first payload bytes: the sequence number */
#define HEAD (HDR + SEQ)           /* what the client parses of a reply */
#define MAX_PAYLOAD (16u << 20)    /* the servers refuse longer frames */
#define MAX_CONNS 64
#define MAX_DEPTH 1024
#define MAX_REPEAT 99
#define CLIENT_RX (256 * 1024)     /* client read size */
#define TX_IOV 64
#define SRV_IN_MIN (256 * 1024)    /* epoll server: initial input buffer */
#define SRV_READ_MIN (16 * 1024)   /* ... compacted when less room is left */
#define SRV_OUT_HIGH (4u << 20)    /* ... stops reading past this backlog */
#define DRAIN_NS (10 * WEFT_NS_PER_SEC)
#define START_NS (10 * WEFT_NS_PER_SEC)
#define STOP_NS (5 * WEFT_NS_PER_SEC)
#define IOBUF_BATCH (1u << 20)
#define PATTERN_SIZE IOBUF_BATCH   /* >= the largest payload of a row */

enum { SRV_WEFT, SRV_EPOLL, NSERVERS };
static const char *const server_name[NSERVERS] = {"weft", "epoll"};

static struct {
    double seconds; /* timed window per run */
    int repeat;
    bool quick, json;
    const char *only;
    int workers;      /* weft server workers, 0 = its default */
    int serve;        /* --serve: server kind, -1 = none */
    int port;         /* --serve: port */
    int connect_port; /* --connect: port, 0 = none */
    int pin;          /* PIN_* */
} opt = {.serve = -1};

/* --pin: where the processes may run. */
enum { PIN_NONE, PIN_SPLIT, PIN_SAME, NPINS };
static const char *const pin_name[NPINS] = {"none", "split", "same"};

/* ---- small helpers ---- */

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "net_bench[%d]: ", (int)getpid());
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* For calls returning 0 or a negative errno-style code. */
#define CHECK(call)                                              \
    do {                                                         \
        int rc_ = (call);                                        \
        if (rc_ != 0)                                            \
            fail("%s: %s", #call, weft_strerror(rc_));           \
    } while (0)

/* For system calls returning -1 with errno. */
#define SYS(call)                                                \
    ({                                                           \
        __typeof__(call) r_ = (call);                            \
        if (r_ < 0)                                              \
            fail("%s: %s", #call, strerror(errno));              \
        r_;                                                      \
    })

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p)
        fail("out of memory");
    return p;
}

static void *xrealloc(void *p, size_t size)
{
    p = realloc(p, size);
    if (!p)
        fail("out of memory");
    return p;
}

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

static uint32_t get_be32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return ntohl(v);
}

static void put_be32(void *p, uint32_t v)
{
    v = htonl(v);
    memcpy(p, &v, sizeof(v));
}

/* Payload byte i (i >= SEQ) of every message. */
static uint8_t *pattern;

static void make_pattern(void)
{
    pattern = xcalloc(1, PATTERN_SIZE);
    for (size_t i = 0; i < PATTERN_SIZE; i++)
        pattern[i] = (uint8_t)(i * 131 + 7);
}

static void set_nodelay(int fd)
{
    int one = 1;
    SYS(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)));
}

static void set_nonblock(int fd)
{
    SYS(fcntl(fd, F_SETFL, SYS(fcntl(fd, F_GETFL)) | O_NONBLOCK));
}

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static void epoll_set(int ep, int op, int fd, uint32_t events, void *ptr)
{
    struct epoll_event ev = {.events = events, .data.ptr = ptr};
    SYS(epoll_ctl(ep, op, fd, &ev));
}

static void pin_to(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    SYS(sched_setaffinity(0, sizeof(set), &set));
}

/* ---- the servers ---- */

/* Tells whoever started the server which port it listens on: the parent
 * through a pipe, or the user on stdout (--serve). */
static void report_port(int fd, int port)
{
    if (fd < 0) {
        printf("%s server listening on 127.0.0.1:%d (pid %d)\n", server_name[opt.serve], port,
               (int)getpid());
        fflush(stdout);
        return;
    }
    if (write(fd, &port, sizeof(port)) != sizeof(port))
        fail("cannot report the port: %s", strerror(errno));
}

/* -- weft: acceptor + sockets -- */

typedef struct echo_msg {
    weft_socket_msg_t base;
    weft_iobuf_t frame; /* header and payload, as read */
} echo_msg_t;

static weft_socket_msg_t *echo_cut(weft_socket_t *s, weft_iobuf_t *in, int *error)
{
    (void)s;
    *error = 0;
    uint8_t buf[HDR];
    const void *hdr = weft_iobuf_fetch(in, buf, HDR);
    if (!hdr)
        return NULL;
    uint32_t len = get_be32(hdr);
    if (len > MAX_PAYLOAD) {
        *error = -EMSGSIZE;
        return NULL;
    }
    if (weft_iobuf_length(in) < HDR + (size_t)len)
        return NULL;
    echo_msg_t *m = malloc(sizeof(*m));
    if (!m) {
        *error = -ENOMEM;
        return NULL;
    }
    weft_iobuf_init(&m->frame);
    if (weft_iobuf_cutn(&m->frame, in, HDR + (size_t)len) < 0) {
        free(m);
        *error = -ENOMEM;
        return NULL;
    }
    return &m->base;
}

static void echo_process(weft_socket_msg_t *base)
{
    echo_msg_t *m = (echo_msg_t *)base;
    int rc = weft_socket_write(m->base.socket, &m->frame, NULL);
    if (rc != 0 && !weft_socket_failed(m->base.socket))
        fprintf(stderr, "net_bench: weft_socket_write: %s\n", weft_strerror(rc));
    weft_iobuf_clear(&m->frame);
    free(m);
}

static const weft_socket_handler_t echo_handler = {.cut = echo_cut, .process = echo_process};

static void weft_on_accept(int fd, const weft_endpoint_t *remote, void *arg)
{
    (void)remote;
    (void)arg;
    weft_socket_id_t id;
    weft_socket_options_t o = {.fd = fd, .handler = &echo_handler};
    int rc = weft_socket_create(&id, &o);
    if (rc != 0)
        fprintf(stderr, "net_bench: weft_socket_create: %s\n", weft_strerror(rc));
}

static void weft_serve(int port, int report_fd, const sigset_t *stop)
{
    if (opt.workers > 0)
        CHECK(weft_fiber_set_workers(opt.workers));
    /* net/ does not start the runtime by itself: without a worker nobody
     * polls the dispatcher and accepted connections are never read. */
    CHECK(weft_fiber_init());
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    weft_acceptor_t *acc;
    weft_acceptor_options_t ao = {.on_accept = weft_on_accept};
    CHECK(weft_acceptor_start(&acc, addr, &ao));
    report_port(report_fd, weft_endpoint_port(weft_acceptor_endpoint(acc)));
    int sig;
    sigwait(stop, &sig);
    weft_acceptor_stop(acc);
    CHECK(weft_fiber_shutdown());
}

/* -- plain epoll -- */

typedef struct econn econn_t;

struct econn {
    int fd;
    uint32_t events;                  /* as registered */
    char *in;                         /* in[in_start, in_end): bytes read, not echoed */
    size_t in_start, in_end, in_cap;
    char *out;                        /* out[out_start, out_end): echo the kernel refused */
    size_t out_start, out_end, out_cap;
    econn_t *prev, *next;
};

typedef struct eserver {
    int ep, lfd, sfd;
    econn_t *conns;
} eserver_t;

static void econn_close(eserver_t *sv, econn_t *c)
{
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        sv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c->in);
    free(c->out);
    free(c);
}

static void eserver_accept(eserver_t *sv)
{
    for (;;) {
        int fd = accept4(sv->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                return;
            fail("accept4: %s", strerror(errno));
        }
        set_nodelay(fd);
        econn_t *c = xcalloc(1, sizeof(*c));
        c->fd = fd;
        c->in_cap = SRV_IN_MIN;
        c->in = xrealloc(NULL, c->in_cap);
        c->events = EPOLLIN;
        c->next = sv->conns;
        if (c->next)
            c->next->prev = c;
        sv->conns = c;
        epoll_set(sv->ep, EPOLL_CTL_ADD, fd, c->events, c);
    }
}

static size_t out_pending(const econn_t *c)
{
    return c->out_end - c->out_start;
}

static void out_append(econn_t *c, const char *p, size_t n)
{
    if (c->out_start == c->out_end)
        c->out_start = c->out_end = 0;
    if (c->out_cap - c->out_end < n) {
        memmove(c->out, c->out + c->out_start, out_pending(c));
        c->out_end -= c->out_start;
        c->out_start = 0;
    }
    if (c->out_cap - c->out_end < n) {
        c->out_cap = 2 * (c->out_end + n);
        c->out = xrealloc(c->out, c->out_cap);
    }
    memcpy(c->out + c->out_end, p, n);
    c->out_end += n;
}

/* Sends what it can; false if the connection broke. */
static bool send_some(int fd, const char *p, size_t n, size_t *sent)
{
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
        *sent = 0;
        return errno == EAGAIN || errno == EINTR;
    }
    *sent = (size_t)w;
    return true;
}

static bool out_flush(econn_t *c)
{
    size_t sent;
    if (!send_some(c->fd, c->out + c->out_start, out_pending(c), &sent))
        return false;
    c->out_start += sent;
    return true;
}

/* Echoes n bytes of complete frames: sent at once unless older bytes still
 * wait, the rest kept for EPOLLOUT. */
static bool echo_bytes(econn_t *c, const char *p, size_t n)
{
    size_t sent = 0;
    if (out_pending(c) == 0 && !send_some(c->fd, p, n, &sent))
        return false;
    if (sent < n)
        out_append(c, p + sent, n - sent);
    return true;
}

/* Bytes still missing from the frame at in_start, 0 if none is started. */
static size_t frame_missing(const econn_t *c)
{
    size_t have = c->in_end - c->in_start;
    if (have == 0)
        return 0;
    if (have < HDR)
        return HDR - have;
    return HDR + get_be32(c->in + c->in_start) - have;
}

/* Makes room to read at least SRV_READ_MIN bytes and the rest of the
 * current frame. */
static void make_room(econn_t *c)
{
    if (c->in_start == c->in_end)
        c->in_start = c->in_end = 0;
    size_t want = frame_missing(c);
    if (want < SRV_READ_MIN)
        want = SRV_READ_MIN;
    if (c->in_cap - c->in_end >= want)
        return;
    memmove(c->in, c->in + c->in_start, c->in_end - c->in_start);
    c->in_end -= c->in_start;
    c->in_start = 0;
    if (c->in_cap - c->in_end < want) {
        c->in_cap = c->in_end + want;
        c->in = xrealloc(c->in, c->in_cap);
    }
}

/* End of the last complete frame in the input, or (size_t)-1 on a frame
 * too long to serve. */
static size_t complete_frames(const econn_t *c)
{
    size_t p = c->in_start;
    while (c->in_end - p >= HDR) {
        uint32_t len = get_be32(c->in + p);
        if (len > MAX_PAYLOAD)
            return (size_t)-1;
        if (c->in_end - p < HDR + (size_t)len)
            break;
        p += HDR + len;
    }
    return p;
}

/* One read, then echo every complete frame. False: close the connection. */
static bool econn_read(econn_t *c)
{
    make_room(c);
    ssize_t r = read(c->fd, c->in + c->in_end, c->in_cap - c->in_end);
    if (r <= 0)
        return r < 0 && (errno == EAGAIN || errno == EINTR);
    c->in_end += (size_t)r;
    size_t done = complete_frames(c);
    if (done == (size_t)-1)
        return false;
    if (done > c->in_start && !echo_bytes(c, c->in + c->in_start, done - c->in_start))
        return false;
    c->in_start = done;
    return true;
}

static void econn_update_events(eserver_t *sv, econn_t *c)
{
    size_t pending = out_pending(c);
    uint32_t want = (pending ? EPOLLOUT : 0) | (pending > SRV_OUT_HIGH ? 0 : EPOLLIN);
    if (want != c->events) {
        c->events = want;
        epoll_set(sv->ep, EPOLL_CTL_MOD, c->fd, want, c);
    }
}

static void econn_event(eserver_t *sv, econn_t *c, uint32_t events)
{
    bool ok = !(events & EPOLLERR);
    if (ok && (events & EPOLLOUT))
        ok = out_flush(c);
    if (ok && (events & (EPOLLIN | EPOLLHUP)))
        ok = econn_read(c);
    if (ok)
        econn_update_events(sv, c);
    else
        econn_close(sv, c);
}

static int listen_loopback(int port)
{
    int fd = SYS(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    int one = 1;
    SYS(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)));
    struct sockaddr_in a = loopback(port);
    SYS(bind(fd, (struct sockaddr *)&a, sizeof(a)));
    SYS(listen(fd, 1024));
    return fd;
}

static int local_port(int fd)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    SYS(getsockname(fd, (struct sockaddr *)&a, &len));
    return ntohs(a.sin_port);
}

/* The listener and the signalfd are told apart from connections by the
 * addresses of these markers in the event data. */
static char listener_mark, signal_mark;

static void epoll_serve(int port, int report_fd, const sigset_t *stop)
{
    eserver_t sv = {.ep = SYS(epoll_create1(EPOLL_CLOEXEC)), .lfd = listen_loopback(port),
                    .sfd = SYS(signalfd(-1, stop, SFD_CLOEXEC))};
    epoll_set(sv.ep, EPOLL_CTL_ADD, sv.lfd, EPOLLIN, &listener_mark);
    epoll_set(sv.ep, EPOLL_CTL_ADD, sv.sfd, EPOLLIN, &signal_mark);
    report_port(report_fd, local_port(sv.lfd));
    for (;;) {
        struct epoll_event evs[64];
        int n = epoll_wait(sv.ep, evs, 64, -1);
        if (n < 0 && errno != EINTR)
            fail("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &signal_mark)
                goto out;
            if (p == &listener_mark)
                eserver_accept(&sv);
            else
                econn_event(&sv, p, evs[i].events);
        }
    }
out:
    while (sv.conns)
        econn_close(&sv, sv.conns);
    close(sv.lfd);
    close(sv.sfd);
    close(sv.ep);
}

/* Runs a server until SIGTERM or SIGINT. Those are blocked first, so every
 * thread the server starts inherits the mask and the server takes them with
 * sigwait or a signalfd, then stops cleanly. */
static void serve(int kind, int port, int report_fd)
{
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigprocmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (kind == SRV_WEFT)
        weft_serve(port, report_fd, &stop);
    else
        epoll_serve(port, report_fd, &stop);
}

/* ---- the server processes ---- */

typedef struct server {
    pid_t pid;
    int port;
} server_t;

static server_t servers[NSERVERS];
static pid_t parent_pid;
static int server_cpu, client_cpu; /* with --pin */

static int read_port(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int port = -1;
    if (poll(&p, 1, (int)(START_NS / WEFT_NS_PER_MS)) != 1 ||
        read(fd, &port, sizeof(port)) != sizeof(port))
        return -1;
    return port;
}

static void spawn_server(int kind)
{
    int p[2];
    SYS(pipe2(p, O_CLOEXEC));
    fflush(NULL);
    pid_t pid = SYS(fork());
    if (pid == 0) {
        close(p[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent_pid)
            _exit(1);
        if (opt.pin != PIN_NONE)
            pin_to(server_cpu);
        serve(kind, 0, p[1]);
        fflush(NULL);
        _exit(0);
    }
    close(p[1]);
    servers[kind].pid = pid;
    servers[kind].port = read_port(p[0]);
    close(p[0]);
    if (servers[kind].port <= 0)
        fail("the %s server did not start", server_name[kind]);
}

/* Waits up to STOP_NS for the child; returns its status, or -1. */
static int reap(pid_t pid)
{
    int64_t deadline = weft_clock_ns() + STOP_NS;
    int status;
    while (weft_clock_ns() < deadline) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0)
            return -1;
        usleep(1000);
    }
    return -1;
}

/* Stops a server with SIGTERM (SIGKILL if it does not go). True if it
 * exited cleanly. */
static bool stop_server(server_t *s)
{
    if (s->pid <= 0)
        return true;
    pid_t pid = s->pid;
    s->pid = 0;
    kill(pid, SIGTERM);
    int status = reap(pid);
    if (status == -1) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        return false;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* atexit: whatever made the parent exit, its servers go with it. */
static void stop_servers_at_exit(void)
{
    if (getpid() != parent_pid)
        return;
    for (int k = 0; k < NSERVERS; k++)
        stop_server(&servers[k]);
}

/* CPU time of every thread of a process, in ns. */
static int64_t process_cpu_ns(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return 0;
    int64_t sum = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char file[64 + sizeof(e->d_name) + 16];
        snprintf(file, sizeof(file), "%s/%s/schedstat", path, e->d_name);
        FILE *f = fopen(file, "r");
        long long ns;
        if (f && fscanf(f, "%lld", &ns) == 1)
            sum += ns;
        if (f)
            fclose(f);
    }
    closedir(d);
    return sum;
}

/* ---- the client ---- */

typedef struct row {
    int conns, depth;
    size_t size;
    const char *name;
} row_t;

static const row_t rows[] = {
    {1, 1, 16, "1x1/16B"},       {1, 16, 16, "1x16/16B"},       {4, 16, 16, "4x16/16B"},
    {1, 1, 65536, "1x1/64KiB"}, {1, 16, 65536, "1x16/64KiB"}, {4, 16, 65536, "4x16/64KiB"},
};
#define NROWS (sizeof(rows) / sizeof(rows[0]))

/* A connection keeps `depth` slots, each with one message in flight: when
 * a slot's reply arrives, the slot's next message is queued. A message's
 * id (its first payload bytes) is seq << SLOT_BITS | slot, seq counting
 * the messages of the connection, so replies may come in any order. */
#define SLOT_BITS 16
#define IDLE UINT64_MAX

typedef struct cslot {
    uint64_t seq;               /* of the message in flight, IDLE if none */
    int64_t t_queued;
    uint8_t head[HEAD];         /* its header and id, as sent */
} cslot_t;

typedef struct cconn {
    int fd;
    bool want_out;              /* EPOLLOUT registered */
    cslot_t *slots;             /* [depth] */
    uint16_t *txq;              /* [depth]: slots of queued messages, by seq % depth */
    uint64_t queued;            /* messages queued (the next seq) */
    uint64_t sent;              /* messages fully written */
    size_t sent_off;            /* bytes of message `sent` written */
    uint64_t received;          /* replies complete */
    uint64_t top;               /* 1 + the highest seq replied to */
    uint64_t reordered;         /* replies that came after a newer one */
    uint8_t head[HEAD];         /* the reply being parsed: header and id */
    size_t head_got, body_left;
    cslot_t *cur;               /* ... its slot */
} cconn_t;

typedef struct run {
    const row_t *row;
    const char *server;
    int ep;
    cconn_t *conns;
    int64_t start, end;         /* the timed window */
    bool stopping;
    int64_t *lat;               /* latencies of replies in the window */
    size_t nlat, cap;
    uint8_t *rx;
} run_t;

typedef struct result {
    double msgs_per_s, p50_us, p99_us, cpu_us_per_msg;
    double reordered_pct; /* replies that came after a newer one's */
    double replies;       /* in the whole run, warm-up and drain included */
} result_t;
_Static_assert(sizeof(result_t) % sizeof(double) == 0, "result_t holds doubles only");

static size_t frame_len(const run_t *r)
{
    return HDR + r->row->size;
}

static void record(run_t *r, int64_t lat)
{
    if (r->nlat == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 65536;
        r->lat = xrealloc(r->lat, r->cap * sizeof(*r->lat));
    }
    r->lat[r->nlat++] = lat;
}

static void queue_message(run_t *r, cconn_t *c, size_t slot, int64_t now)
{
    uint64_t seq = c->queued++;
    uint64_t id = seq << SLOT_BITS | slot;
    cslot_t *sl = &c->slots[slot];
    c->txq[seq % (uint64_t)r->row->depth] = (uint16_t)slot;
    sl->seq = seq;
    sl->t_queued = now;
    put_be32(sl->head, (uint32_t)r->row->size);
    memcpy(sl->head + HDR, &id, SEQ);
}

/* iovecs for the bytes of message seq from offset off: its head, then the
 * shared pattern. Returns how many (1 or 2). */
static int message_iov(const run_t *r, const cconn_t *c, uint64_t seq, size_t off,
                       struct iovec *iov)
{
    int n = 0;
    if (off < HEAD) {
        const cslot_t *sl = &c->slots[c->txq[seq % (uint64_t)r->row->depth]];
        iov[n++] = (struct iovec){(void *)(sl->head + off), HEAD - off};
        off = HEAD;
    }
    size_t body_off = off - HDR; /* payload offset */
    if (body_off < r->row->size)
        iov[n++] = (struct iovec){pattern + body_off, r->row->size - body_off};
    return n;
}

static void sent_bytes(const run_t *r, cconn_t *c, size_t w)
{
    while (w > 0) {
        size_t left = frame_len(r) - c->sent_off;
        if (w < left) {
            c->sent_off += w;
            return;
        }
        w -= left;
        c->sent++;
        c->sent_off = 0;
    }
}

static void want_out(run_t *r, cconn_t *c, bool on)
{
    if (c->want_out == on)
        return;
    c->want_out = on;
    epoll_set(r->ep, EPOLL_CTL_MOD, c->fd, EPOLLIN | (on ? EPOLLOUT : 0), c);
}

/* Writes queued messages until done or the kernel buffer is full. */
static void flush_tx(run_t *r, cconn_t *c)
{
    while (c->sent < c->queued) {
        struct iovec iov[TX_IOV];
        int n = 0;
        size_t off = c->sent_off;
        for (uint64_t seq = c->sent; seq < c->queued && n + 2 <= TX_IOV; seq++, off = 0)
            n += message_iov(r, c, seq, off, iov + n);
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                fail("%s server: send: %s", r->server, strerror(errno));
            want_out(r, c, true);
            return;
        }
        sent_bytes(r, c, (size_t)w);
    }
    want_out(r, c, false);
}

/* Checks the length and id of the reply whose head just arrived. */
static void check_head(const run_t *r, cconn_t *c)
{
    uint32_t len = get_be32(c->head);
    uint64_t id;
    memcpy(&id, c->head + HDR, SEQ);
    size_t slot = id & ((1u << SLOT_BITS) - 1);
    if (len != r->row->size || slot >= (size_t)r->row->depth ||
        c->slots[slot].seq != id >> SLOT_BITS)
        fail("%s server: bad reply: length %" PRIu32 " (want %zu), id %#" PRIx64
             " (no such message in flight)",
             r->server, len, r->row->size, id);
    c->cur = &c->slots[slot];
    c->body_left = r->row->size - SEQ;
}

static void reply_done(run_t *r, cconn_t *c, int64_t now)
{
    cslot_t *sl = c->cur;
    c->received++;
    if (sl->seq < c->top)
        c->reordered++;
    else
        c->top = sl->seq + 1;
    if (now >= r->start && now < r->end)
        record(r, now - sl->t_queued);
    sl->seq = IDLE;
    if (!r->stopping)
        queue_message(r, c, (size_t)(sl - c->slots), now);
    c->head_got = 0;
}

/* Parses n reply bytes; payload bytes are compared with the pattern while
 * `verify`. */
static void consume(run_t *r, cconn_t *c, const uint8_t *p, size_t n, int64_t now, bool verify)
{
    while (n > 0) {
        size_t k;
        if (c->head_got < HEAD) {
            k = min_size(HEAD - c->head_got, n);
            memcpy(c->head + c->head_got, p, k);
            c->head_got += k;
            if (c->head_got == HEAD)
                check_head(r, c);
        } else {
            k = min_size(c->body_left, n);
            if (verify && memcmp(p, pattern + (r->row->size - c->body_left), k) != 0)
                fail("%s server: a reply's payload bytes differ", r->server);
            c->body_left -= k;
        }
        p += k;
        n -= k;
        if (c->head_got == HEAD && c->body_left == 0)
            reply_done(r, c, now);
    }
}

static void on_readable(run_t *r, cconn_t *c)
{
    ssize_t n = read(c->fd, r->rx, CLIENT_RX);
    if (n == 0)
        fail("%s server closed a connection", r->server);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return;
        fail("%s server: read: %s", r->server, strerror(errno));
    }
    int64_t now = weft_clock_ns();
    consume(r, c, r->rx, (size_t)n, now, now < r->start);
    flush_tx(r, c);
}

static int connect_loopback(int port)
{
    int fd = SYS(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    struct sockaddr_in a = loopback(port);
    SYS(connect(fd, (struct sockaddr *)&a, sizeof(a)));
    set_nonblock(fd);
    set_nodelay(fd);
    return fd;
}

static void open_conns(run_t *r, int port)
{
    int depth = r->row->depth;
    r->conns = xcalloc((size_t)r->row->conns, sizeof(*r->conns));
    for (int i = 0; i < r->row->conns; i++) {
        cconn_t *c = &r->conns[i];
        c->fd = connect_loopback(port);
        c->slots = xcalloc((size_t)depth, sizeof(*c->slots));
        c->txq = xcalloc((size_t)depth, sizeof(*c->txq));
        epoll_set(r->ep, EPOLL_CTL_ADD, c->fd, EPOLLIN, c);
    }
}

static void close_conns(run_t *r)
{
    for (int i = 0; i < r->row->conns; i++) {
        close(r->conns[i].fd);
        free(r->conns[i].slots);
        free(r->conns[i].txq);
    }
    free(r->conns);
}

static bool drained(const run_t *r)
{
    for (int i = 0; i < r->row->conns; i++)
        if (r->conns[i].received != r->conns[i].queued)
            return false;
    return true;
}

static uint64_t replies(const run_t *r, uint64_t *reordered)
{
    uint64_t n = 0;
    *reordered = 0;
    for (int i = 0; i < r->row->conns; i++) {
        n += r->conns[i].received;
        *reordered += r->conns[i].reordered;
    }
    return n;
}

static int ms_until(int64_t deadline, int64_t now)
{
    return deadline <= now ? 0 : (int)((deadline - now + WEFT_NS_PER_MS - 1) / WEFT_NS_PER_MS);
}

/* Keeps every connection `depth` deep until the window ends, then waits
 * for the replies still due. */
static void client_loop(run_t *r)
{
    int64_t drain_deadline = 0;
    for (;;) {
        int64_t now = weft_clock_ns();
        if (!r->stopping && now >= r->end) {
            r->stopping = true;
            drain_deadline = now + DRAIN_NS;
        }
        if (r->stopping && drained(r))
            return;
        if (r->stopping && now >= drain_deadline)
            fail("%s server: replies stopped coming", r->server);
        struct epoll_event evs[MAX_CONNS];
        int n = epoll_wait(r->ep, evs, MAX_CONNS,
                           ms_until(r->stopping ? drain_deadline : r->end, now));
        if (n < 0 && errno != EINTR)
            fail("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            cconn_t *c = evs[i].data.ptr;
            if (evs[i].events & EPOLLOUT)
                flush_tx(r, c);
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                on_readable(r, c);
        }
    }
}

static double percentile_us(const int64_t *sorted, size_t n, double pct)
{
    if (n == 0)
        return 0;
    size_t rank = (size_t)(pct * (double)n + 0.999999); /* nearest rank, 1-based */
    return (double)sorted[rank > 0 ? rank - 1 : 0] / WEFT_NS_PER_US;
}

static double warmup_seconds(void)
{
    return opt.seconds / 4 < 0.1 ? 0.1 : opt.seconds / 4;
}

/* One run of a row against the server on port (pid: for its CPU time, 0 if
 * unknown). */
static result_t run_row(const row_t *row, const char *server, int port, pid_t pid)
{
    run_t r = {.row = row, .server = server, .ep = SYS(epoll_create1(EPOLL_CLOEXEC))};
    r.rx = xrealloc(NULL, CLIENT_RX);
    open_conns(&r, port);
    int64_t cpu0 = pid ? process_cpu_ns(pid) : 0;
    int64_t now = weft_clock_ns();
    r.start = now + (int64_t)(warmup_seconds() * WEFT_NS_PER_SEC);
    r.end = r.start + (int64_t)(opt.seconds * WEFT_NS_PER_SEC);
    for (int i = 0; i < row->conns; i++) {
        for (int d = 0; d < row->depth; d++)
            queue_message(&r, &r.conns[i], (size_t)d, now);
        flush_tx(&r, &r.conns[i]);
    }
    client_loop(&r);
    int64_t cpu = pid ? process_cpu_ns(pid) - cpu0 : 0;
    qsort(r.lat, r.nlat, sizeof(*r.lat), bench_cmp_i64);
    uint64_t reordered, n = replies(&r, &reordered);
    result_t res = {
        .msgs_per_s = (double)r.nlat / opt.seconds,
        .p50_us = percentile_us(r.lat, r.nlat, 0.50),
        .p99_us = percentile_us(r.lat, r.nlat, 0.99),
        .cpu_us_per_msg = (double)cpu / WEFT_NS_PER_US / (double)n,
        .reordered_pct = 100.0 * (double)reordered / (double)n,
        .replies = (double)n,
    };
    close_conns(&r);
    close(r.ep);
    free(r.lat);
    free(r.rx);
    return res;
}

/* ---- rows: both servers, alternately, medians ---- */

typedef struct row_result {
    result_t med[NSERVERS];
} row_result_t;

static row_result_t results[NROWS];

static bool selected(const row_t *row)
{
    return !opt.only || strncmp(row->name, opt.only, strlen(opt.only)) == 0;
}

/* The median of each field of result_t (all doubles) over n runs. */
static result_t median_result(const result_t *runs, int n)
{
    enum { NFIELDS = sizeof(result_t) / sizeof(double) };
    double v[NFIELDS][MAX_REPEAT], out[NFIELDS];
    for (int f = 0; f < NFIELDS; f++) {
        for (int i = 0; i < n; i++)
            v[f][i] = ((const double *)&runs[i])[f];
        out[f] = bench_median(v[f], n);
    }
    result_t res;
    memcpy(&res, out, sizeof(res));
    return res;
}

static void measure_row(size_t i)
{
    result_t runs[NSERVERS][MAX_REPEAT];
    for (int rep = 0; rep < opt.repeat; rep++) {
        for (int j = 0; j < NSERVERS; j++) {
            int k = rep % 2 ? NSERVERS - 1 - j : j; /* weft first, then epoll first, ... */
            runs[k][rep] = run_row(&rows[i], server_name[k], servers[k].port, servers[k].pid);
        }
    }
    for (int k = 0; k < NSERVERS; k++)
        results[i].med[k] = median_result(runs[k], opt.repeat);
}

static double row_ratio(size_t i)
{
    const result_t *m = results[i].med;
    return m[SRV_EPOLL].msgs_per_s > 0 ? m[SRV_WEFT].msgs_per_s / m[SRV_EPOLL].msgs_per_s : 0;
}

/* ---- IOBuf against memcpy ---- */

typedef struct iobuf_result {
    size_t piece;
    double iobuf_mb_s, memcpy_mb_s;
} iobuf_result_t;

static iobuf_result_t iobuf_results[2] = {{.piece = 16}, {.piece = 65536}};

/* Appends IOBUF_BATCH bytes in pieces, then cuts them off again one piece
 * at a time and releases each. */
static void iobuf_round(size_t piece, uint8_t *dst)
{
    (void)dst;
    weft_iobuf_t b = WEFT_IOBUF_INIT, one = WEFT_IOBUF_INIT;
    for (size_t off = 0; off < IOBUF_BATCH; off += piece)
        CHECK(weft_iobuf_append(&b, pattern + off, piece));
    for (size_t off = 0; off < IOBUF_BATCH; off += piece) {
        if (weft_iobuf_cutn(&one, &b, piece) != (ssize_t)piece)
            fail("weft_iobuf_cutn: short cut");
        weft_iobuf_clear(&one);
    }
    weft_iobuf_clear(&b); /* empty, but may hold its reference array */
}

static void memcpy_round(size_t piece, uint8_t *dst)
{
    for (size_t off = 0; off < IOBUF_BATCH; off += piece)
        memcpy(dst + off, pattern + off, piece);
    __asm__ volatile("" ::"r"(dst) : "memory"); /* the copies are used */
}

typedef void round_fn(size_t piece, uint8_t *dst);

/* MB/s (of 10^6 bytes) of fn over about `seconds`. */
static double mb_per_s(round_fn *fn, size_t piece, uint8_t *dst, double seconds)
{
    int64_t t0 = weft_clock_ns(), deadline = t0 + (int64_t)(seconds * WEFT_NS_PER_SEC), t;
    long rounds = 0;
    do {
        fn(piece, dst);
        rounds++;
    } while ((t = weft_clock_ns()) < deadline);
    return (double)rounds * IOBUF_BATCH / ((double)(t - t0) / WEFT_NS_PER_SEC) / 1e6;
}

static void measure_iobuf(iobuf_result_t *res)
{
    double seconds = opt.quick ? 0.05 : 0.3;
    uint8_t *dst = xcalloc(1, IOBUF_BATCH);
    double v[2][MAX_REPEAT];
    mb_per_s(iobuf_round, res->piece, dst, seconds / 4); /* warm-up */
    mb_per_s(memcpy_round, res->piece, dst, seconds / 4);
    for (int rep = 0; rep < opt.repeat; rep++) {
        bool flip = rep % 2;
        v[flip][rep] = mb_per_s(flip ? memcpy_round : iobuf_round, res->piece, dst, seconds);
        v[!flip][rep] = mb_per_s(flip ? iobuf_round : memcpy_round, res->piece, dst, seconds);
    }
    res->iobuf_mb_s = bench_median(v[0], opt.repeat);
    res->memcpy_mb_s = bench_median(v[1], opt.repeat);
    free(dst);
}

/* ---- output ---- */

static void print_table(void)
{
    char workers[16] = "default";
    if (opt.workers > 0)
        snprintf(workers, sizeof(workers), "%d", opt.workers);
    printf("weft net_bench: length-prefixed echo over loopback; median of %d runs of %.2g s "
           "(+%.2g s warm-up) per server and row, alternating\n",
           opt.repeat, opt.seconds, warmup_seconds());
    printf("servers: weft (%s workers), plain epoll (1 thread, blocks in epoll_wait, no busy "
           "polling); client: 1 thread, epoll; %ld CPUs, --pin %s\n",
           workers, sysconf(_SC_NPROCESSORS_ONLN), pin_name[opt.pin]);
    printf("%-11s %11s %11s %7s  %16s  %16s  %13s  %5s\n", "KxD/size", "weft msg/s",
           "epoll msg/s", "ratio", "weft p50/p99 us", "epoll p50/p99 us", "cpu us/msg", "ooo%");
    for (size_t i = 0; i < NROWS; i++) {
        if (!selected(&rows[i]))
            continue;
        const result_t *w = &results[i].med[SRV_WEFT], *e = &results[i].med[SRV_EPOLL];
        char wl[32], el[32], cpu[32];
        snprintf(wl, sizeof(wl), "%.1f / %.1f", w->p50_us, w->p99_us);
        snprintf(el, sizeof(el), "%.1f / %.1f", e->p50_us, e->p99_us);
        snprintf(cpu, sizeof(cpu), "%.2f / %.2f", w->cpu_us_per_msg, e->cpu_us_per_msg);
        printf("%-11s %11.0f %11.0f %6.2fx  %16s  %16s  %13s  %5.1f%s\n", rows[i].name,
               w->msgs_per_s, e->msgs_per_s, row_ratio(i), wl, el, cpu, w->reordered_pct,
               row_ratio(i) < 0.8 ? "  < 0.8x" : "");
    }
    printf("ratio: weft/epoll msg/s, target >= 0.8x in every row; cpu us/msg: server process\n"
           "CPU time per message, weft / epoll; ooo%%: weft replies that came after a newer\n"
           "message's reply on their connection (the epoll server answers in order)\n\n");
    printf("%-14s %12s %12s %8s\n", "iobuf piece", "iobuf MB/s", "memcpy MB/s", "ratio");
    for (size_t i = 0; i < 2; i++) {
        const iobuf_result_t *b = &iobuf_results[i];
        printf("%-14zu %12.0f %12.0f %7.2fx\n", b->piece, b->iobuf_mb_s, b->memcpy_mb_s,
               b->iobuf_mb_s / b->memcpy_mb_s);
    }
    printf("(iobuf: append 1 MiB in pieces, cut it back into pieces, release them; "
           "memcpy: the same pieces into a 1 MiB buffer)\n");
}

static void print_json(void)
{
    printf("{\"rows\": [");
    const char *sep = "";
    for (size_t i = 0; i < NROWS; i++) {
        if (!selected(&rows[i]))
            continue;
        const result_t *w = &results[i].med[SRV_WEFT], *e = &results[i].med[SRV_EPOLL];
        printf("%s{\"conns\": %d, \"depth\": %d, \"size\": %zu, \"weft_msgs_per_s\": %.1f, "
               "\"epoll_msgs_per_s\": %.1f, \"ratio\": %.3f, \"weft_p50_us\": %.2f, "
               "\"weft_p99_us\": %.2f, \"epoll_p50_us\": %.2f, \"epoll_p99_us\": %.2f, "
               "\"weft_cpu_us_per_msg\": %.3f, \"epoll_cpu_us_per_msg\": %.3f, "
               "\"weft_reordered_pct\": %.2f, \"epoll_reordered_pct\": %.2f}",
               sep, rows[i].conns, rows[i].depth, rows[i].size, w->msgs_per_s, e->msgs_per_s,
               row_ratio(i), w->p50_us, w->p99_us, e->p50_us, e->p99_us, w->cpu_us_per_msg,
               e->cpu_us_per_msg, w->reordered_pct, e->reordered_pct);
        sep = ", ";
    }
    printf("], \"iobuf\": {");
    for (size_t i = 0; i < 2; i++) {
        const iobuf_result_t *b = &iobuf_results[i];
        printf("%s\"%zu\": {\"iobuf_mb_per_s\": %.1f, \"memcpy_mb_per_s\": %.1f, "
               "\"ratio\": %.3f}",
               i ? ", " : "", b->piece, b->iobuf_mb_s, b->memcpy_mb_s,
               b->iobuf_mb_s / b->memcpy_mb_s);
    }
    printf("}, \"seconds\": %.3f, \"repeat\": %d, \"quick\": %s, \"pin\": \"%s\"}\n",
           opt.seconds, opt.repeat, opt.quick ? "true" : "false", pin_name[opt.pin]);
}

/* --connect: each selected row once against someone else's server. */
static void connect_only(void)
{
    printf("%-11s %11s %16s %10s\n", "KxD/size", "msg/s", "p50/p99 us", "replies");
    for (size_t i = 0; i < NROWS; i++) {
        if (!selected(&rows[i]))
            continue;
        result_t res = run_row(&rows[i], "external", opt.connect_port, 0);
        char lat[32];
        snprintf(lat, sizeof(lat), "%.1f / %.1f", res.p50_us, res.p99_us);
        printf("%-11s %11.0f %16s %10.0f\n", rows[i].name, res.msgs_per_s, lat, res.replies);
        fflush(stdout);
    }
}

/* ---- main ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: net_bench [--json] [--seconds S] [--repeat N] [--quick] [--only ROW]\n"
            "                 [--workers N] [--pin none|split|same] [--help]\n"
            "       net_bench --serve weft|epoll [--port N] [--workers N]\n"
            "       net_bench --connect PORT [--seconds S] [--only ROW]\n"
            "  --json         print one JSON object instead of the tables\n"
            "  --seconds S    timed window of each run (default 2; 0.3 with --quick)\n"
            "  --repeat N     runs per server and row, medians reported (default 3)\n"
            "  --quick        short runs, a smoke test of a few seconds\n"
            "  --only ROW     only the rows whose name starts with ROW (e.g. 4x16/64KiB)\n"
            "  --workers N    workers of the weft server (default: the runtime's default)\n"
            "  --pin P        none: the kernel places the processes (default); split: the\n"
            "                 servers on the first CPU, the client on the second; same: all\n"
            "                 on the first CPU\n"
            "  --serve KIND   run only that server, in the foreground, until SIGINT/SIGTERM\n"
            "  --port N       its port (default 0: any free port, printed)\n"
            "  --connect PORT run the client rows once against a server on 127.0.0.1:PORT\n"
            "  --help         this text\n");
}

static bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static bool parse_arg(int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    const char *val = *i + 1 < argc ? argv[*i + 1] : NULL;
    long n;
    if (strcmp(a, "--json") == 0) {
        opt.json = true;
        return true;
    }
    if (strcmp(a, "--quick") == 0) {
        opt.quick = true;
        return true;
    }
    if (!val)
        return false;
    ++*i;
    if (strcmp(a, "--seconds") == 0) {
        char *end;
        opt.seconds = strtod(val, &end);
        return end != val && !*end && opt.seconds >= 0.01 && opt.seconds <= 3600;
    }
    if (strcmp(a, "--repeat") == 0 && parse_long(val, 1, MAX_REPEAT, &n)) {
        opt.repeat = (int)n;
        return true;
    }
    if (strcmp(a, "--workers") == 0 && parse_long(val, 1, 256, &n)) {
        opt.workers = (int)n;
        return true;
    }
    if (strcmp(a, "--port") == 0 && parse_long(val, 0, 65535, &n)) {
        opt.port = (int)n;
        return true;
    }
    if (strcmp(a, "--connect") == 0 && parse_long(val, 1, 65535, &n)) {
        opt.connect_port = (int)n;
        return true;
    }
    if (strcmp(a, "--only") == 0) {
        opt.only = val;
        return true;
    }
    if (strcmp(a, "--pin") == 0) {
        for (opt.pin = 0; opt.pin < NPINS && strcmp(val, pin_name[opt.pin]) != 0; opt.pin++)
            ;
        return opt.pin < NPINS;
    }
    if (strcmp(a, "--serve") == 0) {
        opt.serve = strcmp(val, "weft") == 0 ? SRV_WEFT : strcmp(val, "epoll") == 0 ? SRV_EPOLL : -1;
        return opt.serve >= 0;
    }
    return false;
}

static bool parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (!parse_arg(argc, argv, &i))
            return false;
    }
    if (opt.seconds == 0)
        opt.seconds = opt.quick ? 0.3 : 2.0;
    if (opt.repeat == 0)
        opt.repeat = 3;
    return !(opt.serve >= 0 && opt.connect_port);
}

static bool any_selected(void)
{
    for (size_t i = 0; i < NROWS; i++)
        if (selected(&rows[i]))
            return true;
    return false;
}

int main(int argc, char **argv)
{
    if (!parse_args(argc, argv)) {
        usage(stderr);
        return 2;
    }
    if (!any_selected()) {
        fprintf(stderr, "net_bench: no row matches --only %s\n", opt.only);
        return 2;
    }
    if (opt.serve >= 0) {
        serve(opt.serve, opt.port, -1);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    make_pattern();
    if (opt.connect_port) {
        connect_only();
        return 0;
    }
    /* The servers are forked before anything in this process could start a
     * weft runtime (the IOBuf part below starts none either). */
    parent_pid = getpid();
    server_cpu = bench_allowed_cpu(0);
    client_cpu = bench_allowed_cpu(opt.pin == PIN_SPLIT ? 1 : 0);
    if (opt.pin != PIN_NONE && client_cpu < 0)
        fail("--pin split needs two CPUs");
    atexit(stop_servers_at_exit);
    for (int k = 0; k < NSERVERS; k++)
        spawn_server(k);
    if (opt.pin != PIN_NONE)
        pin_to(client_cpu);
    for (size_t i = 0; i < NROWS; i++)
        if (selected(&rows[i]))
            measure_row(i);
    bool clean = true;
    for (int k = 0; k < NSERVERS; k++)
        if (!stop_server(&servers[k])) {
            fprintf(stderr, "net_bench: the %s server did not exit cleanly\n", server_name[k]);
            clean = false;
        }
    for (size_t i = 0; i < 2; i++)
        measure_iobuf(&iobuf_results[i]);
    if (opt.json)
        print_json();
    else
        print_table();
    CHECK(weft_fiber_shutdown());
    return clean ? 0 : 1;
}
