/*
 * test_socket.c - sockets, acceptor, connect and fd waits, driven through
 * the public API the way a server and its clients use them.
 *
 * Echo over TCP IPv4, IPv6 and a unix socket; endpoint parsing and
 * formatting; connect errors (refused, timed out on a full backlog, TCP and
 * unix); a peer that resets the connection in the middle of a large write;
 * a half-closed peer that must still get its replies; EOF and bad input
 * failing a socket with the right error; 10k connections opened and closed
 * without leaking fds or sockets; weft_fd_wait from fibers and pthreads;
 * stopping an acceptor while it accepts; accepting under fd exhaustion
 * (no spinning, resumes afterwards); reviving a failed client socket;
 * writes to a failed socket; and two cases aimed at suspected bugs: a
 * revive racing with the old connection's input fiber, a second acceptor
 * on a unix path that is in use, a unix connect to a full backlog, and a
 * server driven from pthreads before any fiber exists.
 *
 * Why: every server and channel above is built on these calls, and their
 * failure paths (resets, EOF, fd exhaustion, stop) are where a framework
 * leaks, hangs or crashes.
 */
#include "net_test_util.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>

/* ---- raw sockets (the peer side, without weft) ---- */

/* A plain listening TCP socket on 127.0.0.1 (port picked by the kernel). */
static int raw_listener(weft_endpoint_t *ep, int backlog)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    WT_GE(fd, 0);
    WT_EQ(weft_endpoint_parse(ep, "127.0.0.1:0"), 0);
    WT_EQ(bind(fd, (struct sockaddr *)&ep->addr, ep->len), 0);
    WT_EQ(listen(fd, backlog), 0);
    WT_EQ(weft_endpoint_from_local(ep, fd), 0);
    return fd;
}

/* Accepts one connection within timeout_ms; the fd is blocking. */
static int raw_accept(int lfd, int timeout_ms)
{
    WT_ASSERT_MSG(nt_poll(lfd, POLLIN, timeout_ms), "nothing to accept");
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    WT_ASSERT_MSG(fd >= 0, "accept: %s", strerror(errno));
    return fd;
}

/* A blocking connected socket. */
static int raw_connect(const weft_endpoint_t *ep)
{
    int fd = socket(ep->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    WT_GE(fd, 0);
    WT_ASSERT_MSG(connect(fd, (const struct sockaddr *)&ep->addr, ep->len) == 0, "connect: %s",
                  strerror(errno));
    return fd;
}

/* Reads one frame from a blocking fd into a malloc'ed body. */
static uint8_t *raw_read_frame(int fd, size_t *len, int timeout_ms)
{
    uint32_t be;
    ssize_t r = nt_read_full(fd, &be, 4, timeout_ms);
    WT_ASSERT_MSG(r == 4, "frame header: got %zd bytes", r);
    *len = ntohl(be);
    uint8_t *body = malloc(*len + 1);
    WT_ASSERT(body);
    r = nt_read_full(fd, body, *len, timeout_ms);
    WT_ASSERT_MSG(r == (ssize_t)*len, "frame body: got %zd of %zu bytes", r, *len);
    return body;
}

static void raw_write_frame(int fd, const void *body, size_t n)
{
    size_t total;
    void *raw = nt_frame_raw(body, n, &total);
    nt_write_full(fd, raw, total);
    free(raw);
}

static void unix_path(char *buf, size_t size, const char *what)
{
    static int seq;
    snprintf(buf, size, "/tmp/weft-nettest-%d-%s-%d.sock", (int)getpid(), what,
             NT_ADD(&seq, 1));
}

static int64_t sockets_alive(void)
{
    weft_socket_stats_t st;
    weft_socket_stats(&st);
    return st.alive;
}

/* ---- endpoints ---- */

static void check_round_trip(const char *text)
{
    weft_endpoint_t ep, ep2;
    char buf[WEFT_ENDPOINT_STRLEN];
    WT_ASSERT_MSG(weft_endpoint_parse(&ep, text) == 0, "parse %s", text);
    WT_STREQ(weft_endpoint_format(&ep, buf, sizeof(buf)), text);
    WT_EQ(weft_endpoint_parse(&ep2, buf), 0);
    WT_ASSERT_MSG(weft_endpoint_equal(&ep, &ep2), "%s does not round-trip", text);
}

static void endpoint_parse_format(void)
{
    static const char *good[] = {
        "127.0.0.1:80",      "1.2.3.4:0",       "255.255.255.255:65535", "0.0.0.0:8000",
        "[::1]:8000",        "[::]:0",          "[2001:db8::1]:443",     "[fe80::1:2]:1",
        "[::ffff:1.2.3.4]:9", "unix:/tmp/x.sock", "unix:relative.sock",
    };
    for (size_t i = 0; i < NT_NCASES(good); i++)
        check_round_trip(good[i]);

    weft_endpoint_t ep, ep2;
    char buf[WEFT_ENDPOINT_STRLEN];
    /* Any-address spellings. */
    WT_EQ(weft_endpoint_parse(&ep, ":8000"), 0);
    WT_STREQ(weft_endpoint_format(&ep, buf, sizeof(buf)), "0.0.0.0:8000");
    WT_EQ(weft_endpoint_parse(&ep2, "*:8000"), 0);
    WT_ASSERT(weft_endpoint_equal(&ep, &ep2));
    WT_EQ(weft_endpoint_port(&ep), 8000);

    /* Ports and equality. */
    WT_EQ(weft_endpoint_parse(&ep, "[::1]:65535"), 0);
    WT_EQ(weft_endpoint_port(&ep), 65535);
    WT_EQ(weft_endpoint_parse(&ep2, "[::1]:65534"), 0);
    WT_ASSERT(!weft_endpoint_equal(&ep, &ep2));
    WT_EQ(weft_endpoint_parse(&ep2, "127.0.0.1:65535"), 0);
    WT_ASSERT(!weft_endpoint_equal(&ep, &ep2));
    WT_EQ(weft_endpoint_parse(&ep, "unix:/tmp/a"), 0);
    WT_EQ(weft_endpoint_port(&ep), -1);
    WT_EQ(weft_endpoint_parse(&ep2, "unix:/tmp/b"), 0);
    WT_ASSERT(!weft_endpoint_equal(&ep, &ep2));

    /* A host name resolves (localhost is in /etc/hosts everywhere). */
    WT_EQ(weft_endpoint_parse(&ep, "localhost:8080"), 0);
    WT_EQ(weft_endpoint_port(&ep), 8080);
    weft_endpoint_format(&ep, buf, sizeof(buf));
    WT_ASSERT_MSG(!strcmp(buf, "127.0.0.1:8080") || !strcmp(buf, "[::1]:8080"), "localhost is %s",
                  buf);
    WT_EQ(weft_endpoint_parse(&ep, "no-such-host.invalid:80"), -EHOSTUNREACH);

    /* A short buffer gets a truncated, terminated text. */
    WT_EQ(weft_endpoint_parse(&ep, "255.255.255.255:65535"), 0);
    memset(buf, 'x', sizeof(buf));
    weft_endpoint_format(&ep, buf, 8);
    WT_EQ(strlen(buf), 7);

    /* Longest unix path that fits, and one byte more. */
    char path[200];
    memset(path, 'p', sizeof(path));
    struct sockaddr_un un;
    size_t maxlen = sizeof(un.sun_path) - 1;
    memcpy(path, "unix:/", 6);
    path[5 + maxlen] = '\0';
    WT_EQ(weft_endpoint_parse(&ep, path), 0);
    WT_LT(strlen(weft_endpoint_format(&ep, buf, sizeof(buf))), WEFT_ENDPOINT_STRLEN);
    WT_STREQ(buf, path);
    memset(path, 'p', sizeof(path));
    memcpy(path, "unix:/", 6);
    path[5 + maxlen + 1] = '\0';
    WT_EQ(weft_endpoint_parse(&ep, path), -EINVAL);

    char longhost[320];
    memset(longhost, 'h', sizeof(longhost));
    strcpy(longhost + 300, ":80");
    static const char *bad[] = {
        "",           "127.0.0.1",       "127.0.0.1:",  "127.0.0.1:65536", "127.0.0.1:-1",
        "127.0.0.1:80x", "127.0.0.1:0x50", "[::1]",     "[::1]80",         "[::1:80",
        "::1]:80x",   "unix:",           "[not-an-ip]:80", "[1:2:3]:80",
    };
    for (size_t i = 0; i < NT_NCASES(bad); i++)
        WT_ASSERT_MSG(weft_endpoint_parse(&ep, bad[i]) == -EINVAL, "\"%s\" parsed", bad[i]);
    WT_EQ(weft_endpoint_parse(&ep, longhost), -EINVAL);
    WT_EQ(weft_endpoint_parse(&ep, NULL), -EINVAL);
    WT_EQ(weft_endpoint_parse(NULL, "1.2.3.4:5"), -EINVAL);
}

/* ---- echo over each transport ---- */

typedef struct {
    const weft_endpoint_t *ep;
    int pipelined; /* frames sent before reading the echoes */
} echo_arg_t;

static void echo_client(void *p)
{
    echo_arg_t *a = p;
    nt_client_t c;
    WT_EQ(nt_client_connect(&c, a->ep, 5000), 0);
    weft_socket_t *s = weft_socket_address(c.id);
    WT_ASSERT(s);
    WT_ASSERT_MSG(weft_endpoint_equal(weft_socket_remote(s), a->ep),
                  "the client socket's remote is not the server's address");
    WT_ASSERT(!weft_socket_failed(s));
    WT_EQ(weft_socket_error(s), 0);
    WT_EQ(weft_socket_id(s), c.id);
    WT_EQ(weft_socket_user(s), &c);
    weft_socket_dereference(s);

    static const size_t sizes[] = {0, 1, 3, 100, 4096, 8191, 8192, 8193, 65536, 100000, 3 << 20};
    size_t maxn = 3 << 20;
    uint8_t *body = malloc(maxn);
    WT_ASSERT(body);
    for (size_t i = 0; i < NT_NCASES(sizes); i++) {
        nt_fill_pattern(body, sizes[i], i + 1);
        nt_client_echo(&c, body, sizes[i]);
    }

    /* Pipelined: the server may answer out of order (each message gets a
     * fiber), so check every echo comes back once. */
    uint8_t *seen = calloc((size_t)a->pipelined, 1);
    for (int i = 0; i < a->pipelined; i++) {
        size_t n = 4 + (size_t)(i * 977) % 20000;
        nt_fill_pattern(body, n, 1000 + (uint64_t)i);
        memcpy(body, &i, sizeof(i));
        WT_EQ(nt_client_send(&c, body, n), 0);
    }
    for (int k = 0; k < a->pipelined; k++) {
        nt_msg_t *m = nt_client_recv(&c, 10000);
        WT_ASSERT_MSG(m, "only %d of %d pipelined echoes came back", k, a->pipelined);
        int i;
        weft_iobuf_copy_out(&m->frame, 4, &i, sizeof(i));
        WT_ASSERT(i >= 0 && i < a->pipelined && !seen[i]);
        seen[i] = 1;
        size_t n = 4 + (size_t)(i * 977) % 20000;
        nt_fill_pattern(body, n, 1000 + (uint64_t)i);
        memcpy(body, &i, sizeof(i));
        WT_ASSERT_MSG(nt_msg_body_is(m, body, n), "pipelined echo %d differs", i);
        nt_msg_free(m);
    }
    free(seen);
    free(body);
    nt_client_close(&c);
    WT_EQ(c.failed, 1);
    WT_EQ(c.error, WEFT_ECLOSE);
}

/* Echo on `address` from a fiber and from a pthread at once. */
static void echo_on(const char *address)
{
    int64_t alive0 = sockets_alive();
    nt_server_t srv;
    WT_EQ(nt_server_start(&srv, address, NULL), 0);
    echo_arg_t a = {.ep = &srv.ep, .pipelined = (int)wt_scaled(500)};
    weft_fiber_t f = nt_start(echo_client, &a);
    echo_client(&a);
    nt_join(f);
    nt_server_stop(&srv);
    WT_EQ(srv.accepted, 2);
    NT_AWAIT(sockets_alive() == alive0, 10);
}

static void echo_tcp4(void)
{
    echo_on("127.0.0.1:0");
}

static void echo_tcp6(void)
{
    nt_server_t probe;
    int rc = nt_server_start(&probe, "[::1]:0", NULL);
    if (rc != 0) {
        WT_NOTE("echo_tcp6: skipped, no IPv6 loopback (%s)", weft_strerror(rc));
        return;
    }
    WT_EQ(probe.ep.addr.ss_family, AF_INET6);
    nt_server_stop(&probe);
    echo_on("[::1]:0");
}

static void echo_unix(void)
{
    char path[108], addr[128];
    unix_path(path, sizeof(path), "echo");
    snprintf(addr, sizeof(addr), "unix:%s", path);
    echo_on(addr);
    WT_ASSERT_MSG(access(path, F_OK) != 0, "%s left behind after the acceptor stopped", path);
}

/* ---- connect errors ---- */

typedef struct {
    const weft_endpoint_t *ep;
    int timeout_ms;
    int rc;
    int64_t elapsed;
} connect_arg_t;

static void connect_once(void *p)
{
    connect_arg_t *a = p;
    nt_client_t c;
    int64_t t0 = nt_now();
    a->rc = nt_client_connect(&c, a->ep, a->timeout_ms);
    a->elapsed = nt_now() - t0;
    if (a->rc == 0)
        nt_client_close(&c);
}

/* Connects from a fiber and from this pthread; both must give `want`. */
static void expect_connect(const weft_endpoint_t *ep, int timeout_ms, int want)
{
    connect_arg_t a = {.ep = ep, .timeout_ms = timeout_ms};
    nt_in_fiber(connect_once, &a);
    WT_ASSERT_MSG(a.rc == want, "in a fiber: %s, expected %s (after %.1f ms)",
                  weft_strerror(a.rc), weft_strerror(want), nt_ms(a.elapsed));
    connect_once(&a);
    WT_ASSERT_MSG(a.rc == want, "in a pthread: %s, expected %s (after %.1f ms)",
                  weft_strerror(a.rc), weft_strerror(want), nt_ms(a.elapsed));
}

static void connect_refused(void)
{
    int fds0 = nt_count_fds();
    /* A bound port that does not listen refuses. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    weft_endpoint_t ep;
    WT_EQ(weft_endpoint_parse(&ep, "127.0.0.1:0"), 0);
    WT_EQ(bind(fd, (struct sockaddr *)&ep.addr, ep.len), 0);
    WT_EQ(weft_endpoint_from_local(&ep, fd), 0);
    expect_connect(&ep, 2000, -ECONNREFUSED);
    WT_EQ(weft_connect_fd(&ep, nt_now() + 2 * WEFT_NS_PER_SEC), -ECONNREFUSED);
    close(fd);

    /* A unix path nobody listens on (none, then a dead socket file). */
    char path[108], addr[128];
    unix_path(path, sizeof(path), "refused");
    snprintf(addr, sizeof(addr), "unix:%s", path);
    WT_EQ(weft_endpoint_parse(&ep, addr), 0);
    expect_connect(&ep, 2000, -ENOENT);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    WT_EQ(bind(fd, (struct sockaddr *)&ep.addr, ep.len), 0);
    expect_connect(&ep, 2000, -ECONNREFUSED);
    close(fd);
    unlink(path);
    WT_EQ(nt_count_fds(), fds0);
}

/* Opens connections to lfd (never accepted) until one cannot complete: the
 * accept queue is full. The fds go into fill[] (*n of them). */
static void fill_backlog(const weft_endpoint_t *ep, int *fill, int *n, int max)
{
    *n = 0;
    while (*n < max) {
        int fd = socket(ep->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        WT_GE(fd, 0);
        fill[(*n)++] = fd;
        int rc = connect(fd, (const struct sockaddr *)&ep->addr, ep->len);
        if (rc != 0 && errno == EAGAIN)
            return; /* unix: the backlog is full */
        WT_ASSERT_MSG(rc == 0 || errno == EINPROGRESS, "connect: %s", strerror(errno));
        if (rc != 0 && !nt_poll(fd, POLLOUT, 300))
            return; /* TCP: the SYN was dropped */
    }
    WT_ASSERT_MSG(false, "the backlog never filled after %d connections", max);
}

/* Connects (from a fiber, then a pthread) with a 300 ms deadline to a
 * listener whose backlog we fill; both must time out in time. The fds it
 * opened are closed, and `cleanup` (a socket file, or NULL) unlinked and
 * `lfd` closed, before anything is asserted, so a failure leaves nothing. */
static void connect_timeout_on(const weft_endpoint_t *ep, const char *what, int lfd,
                               const char *cleanup)
{
    int fds0 = nt_count_fds();
    int fill[64], nfill;
    fill_backlog(ep, fill, &nfill, 64);
    const int timeout_ms = 300;
    connect_arg_t a[2];
    for (int round = 0; round < 2; round++) {
        a[round] = (connect_arg_t){.ep = ep, .timeout_ms = timeout_ms};
        if (round == 0)
            nt_in_fiber(connect_once, &a[round]);
        else
            connect_once(&a[round]);
    }
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    int fds1 = nt_count_fds();
    close(lfd);
    if (cleanup)
        unlink(cleanup);
    for (int round = 0; round < 2; round++) {
        const char *where = round == 0 ? "fiber" : "pthread";
        WT_NOTE("connect_timeout %s (%s): %s after %.1f ms (deadline %d ms, %d fds filled the "
                "backlog)",
                what, where, weft_strerror(a[round].rc), nt_ms(a[round].elapsed), timeout_ms,
                nfill);
        WT_ASSERT_MSG(a[round].rc == -ETIMEDOUT, "%s connect to a full backlog from a %s: %s",
                      what, where, weft_strerror(a[round].rc));
        WT_GE(a[round].elapsed, (timeout_ms - 5) * WEFT_NS_PER_MS);
        WT_LE(a[round].elapsed, (timeout_ms + 1500) * WEFT_NS_PER_MS);
    }
    WT_EQ(fds1, fds0);
}

static void connect_timeout(void)
{
    weft_endpoint_t ep;
    int lfd = raw_listener(&ep, 0);
    connect_timeout_on(&ep, "tcp", lfd, NULL);
}

/* A unix listener's full backlog: a non-blocking connect says EAGAIN at once,
 * which is no reason to give up before the deadline. */
static void connect_timeout_unix(void)
{
    char path[108], addr[128];
    unix_path(path, sizeof(path), "backlog");
    snprintf(addr, sizeof(addr), "unix:%s", path);
    weft_endpoint_t ep;
    WT_EQ(weft_endpoint_parse(&ep, addr), 0);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    WT_EQ(bind(lfd, (struct sockaddr *)&ep.addr, ep.len), 0);
    WT_EQ(listen(lfd, 0), 0);
    connect_timeout_on(&ep, "unix", lfd, path);
}

/* ---- failures in the middle of a connection ---- */

typedef struct {
    int32_t calls;
    int32_t error;
} done_rec_t;

static void done_record(void *arg, int error)
{
    done_rec_t *d = arg;
    NT_STORE(&d->error, error);
    NT_ADD(&d->calls, 1);
}

static int done_calls(done_rec_t *d, int n)
{
    int sum = 0;
    for (int i = 0; i < n; i++)
        sum += NT_LOAD(&d[i].calls);
    return sum;
}

static void peer_reset_during_write(void)
{
    weft_endpoint_t ep;
    int lfd = raw_listener(&ep, 8);
    nt_client_t c;
    WT_EQ(nt_client_connect(&c, &ep, 2000), 0);
    int peer = raw_accept(lfd, 2000);
    int small = 4096;
    setsockopt(peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));

    weft_socket_t *s = weft_socket_address(c.id);
    WT_ASSERT(s);
    enum { NWRITES = 8, CHUNK = 2 << 20 };
    done_rec_t done[NWRITES] = {{0}};
    uint8_t *body = malloc(CHUNK);
    nt_fill_pattern(body, CHUNK, 7);
    for (int i = 0; i < NWRITES; i++) {
        weft_iobuf_t b = WEFT_IOBUF_INIT;
        nt_frame_append(&b, body, CHUNK);
        weft_write_options_t wo = {.done = done_record, .arg = &done[i]};
        WT_EQ(weft_socket_write(s, &b, &wo), 0);
        WT_ASSERT(weft_iobuf_empty(&b));
    }
    free(body);
    /* The kernel is full and a fiber waits for EPOLLOUT. */
    NT_AWAIT(weft_socket_unwritten(s) > 0, 10);

    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    WT_EQ(setsockopt(peer, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    close(peer); /* RST */

    NT_AWAIT(NT_LOAD(&c.failed) == 1, 10);
    NT_AWAIT(done_calls(done, NWRITES) == NWRITES, 10);
    int failed_writes = 0;
    for (int i = 0; i < NWRITES; i++) {
        WT_GE(done[i].error, 0);
        failed_writes += done[i].error != 0;
    }
    WT_GE(failed_writes, 1);
    WT_EQ(done[NWRITES - 1].error, weft_socket_error(s));
    int err = weft_socket_error(s);
    WT_NOTE("peer_reset_during_write: socket failed with %s, %d of %d writes failed", weft_strerror(err),
            failed_writes, NWRITES);
    WT_ASSERT_MSG(err == ECONNRESET || err == EPIPE, "unexpected error %s", weft_strerror(err));
    WT_ASSERT(weft_socket_address(c.id) == NULL);
    WT_EQ(weft_socket_unwritten(s), 0);

    /* Later writes fail at once with the error and do not call done(). */
    done_rec_t late = {0};
    weft_iobuf_t b = WEFT_IOBUF_INIT;
    nt_frame_append(&b, "late", 4);
    weft_write_options_t wo = {.done = done_record, .arg = &late};
    WT_EQ(weft_socket_write(s, &b, &wo), -err);
    weft_iobuf_clear(&b);
    weft_socket_dereference(s);
    nt_client_close(&c);
    nt_sleep_ms(20);
    WT_EQ(done_calls(done, NWRITES), NWRITES); /* exactly once each */
    WT_EQ(late.calls, 0);
    close(lfd);
}

/* The client sends its requests, shuts down its sending side, and must
 * still get every reply (one needs several EPOLLOUT rounds) before the
 * server closes. */
static void half_close(void)
{
    nt_server_t srv;
    WT_EQ(nt_server_start(&srv, "127.0.0.1:0", NULL), 0);
    int fd = raw_connect(&srv.ep);
    static const size_t sizes[] = {10, 300000, 4 << 20};
    uint8_t *body = malloc(4 << 20);
    for (size_t i = 0; i < NT_NCASES(sizes); i++) {
        nt_fill_pattern(body, sizes[i], 100 + i);
        raw_write_frame(fd, body, sizes[i]);
    }
    WT_EQ(shutdown(fd, SHUT_WR), 0);
    /* Replies may come in any order (all but the last message get fibers). */
    bool seen[3] = {false};
    for (size_t k = 0; k < NT_NCASES(sizes); k++) {
        size_t len;
        uint8_t *got = raw_read_frame(fd, &len, 10000);
        size_t i = 0;
        while (i < NT_NCASES(sizes) && sizes[i] != len)
            i++;
        WT_ASSERT_MSG(i < NT_NCASES(sizes) && !seen[i], "unexpected reply of %zu bytes", len);
        seen[i] = true;
        WT_EQ(nt_check_pattern(got, len, 100 + i), len);
        free(got);
    }
    WT_EQ(nt_drain_to_eof(fd, 10000, NULL), 0);
    NT_AWAIT(NT_LOAD(&srv.failed) == 1, 10);
    WT_EQ(srv.last_error, WEFT_EEOF);
    close(fd);
    free(body);
    nt_server_stop(&srv);
}

/* The peer closes: the socket fails with WEFT_EEOF after delivering what
 * came before the FIN. */
static void eof_error(void)
{
    weft_endpoint_t ep;
    int lfd = raw_listener(&ep, 8);
    nt_client_t c;
    WT_EQ(nt_client_connect(&c, &ep, 2000), 0);
    int peer = raw_accept(lfd, 2000);
    weft_socket_t *s = weft_socket_address(c.id);
    WT_ASSERT(s);
    raw_write_frame(peer, "last words", 10);
    close(peer);
    nt_msg_t *m = nt_client_recv(&c, 5000);
    WT_ASSERT(m && nt_msg_body_is(m, "last words", 10));
    nt_msg_free(m);
    NT_AWAIT(NT_LOAD(&c.failed) == 1, 10);
    WT_EQ(c.error, WEFT_EEOF);
    WT_ASSERT(weft_socket_failed(s));
    WT_EQ(weft_socket_error(s), WEFT_EEOF);
    WT_ASSERT(weft_socket_address(c.id) == NULL);
    WT_EQ(weft_socket_set_failed(c.id, WEFT_ECLOSE), -ESRCH);
    weft_socket_dereference(s);
    nt_client_close(&c);
    close(lfd);
}

/* A frame the handler's cut() rejects closes the connection. */
static void bad_input(void)
{
    nt_server_t srv;
    WT_EQ(nt_server_start(&srv, "127.0.0.1:0", NULL), 0);
    int fd = raw_connect(&srv.ep);
    raw_write_frame(fd, "hello", 5);
    size_t len;
    uint8_t *got = raw_read_frame(fd, &len, 5000);
    WT_ASSERT(len == 5 && !memcmp(got, "hello", 5));
    free(got);
    uint8_t garbage[16] = {0xff, 0xff, 0xff, 0xf0, 'j', 'u', 'n', 'k'};
    nt_write_full(fd, garbage, sizeof(garbage));
    int rc = nt_drain_to_eof(fd, 5000, NULL);
    WT_ASSERT_MSG(rc == 0 || rc == -ECONNRESET, "connection not closed on bad input: %s",
                  weft_strerror(rc));
    NT_AWAIT(NT_LOAD(&srv.failed) == 1, 10);
    WT_EQ(srv.last_error, EBADMSG);
    close(fd);
    nt_server_stop(&srv);
}

/* ---- many connections ---- */

typedef struct {
    const weft_endpoint_t *ep;
    int32_t *connected;
} conn_arg_t;

static void one_connection(void *p)
{
    conn_arg_t *a = p;
    nt_client_t c;
    int rc = nt_client_connect(&c, a->ep, 10000);
    WT_ASSERT_MSG(rc == 0, "connect: %s", weft_strerror(rc));
    nt_client_echo(&c, "ping-pong-ping-pong", 19);
    nt_client_close(&c);
    NT_ADD(a->connected, 1);
}

static void many_connections(void)
{
    enum { BATCH = 100 };
    int total = (int)((wt_scaled(10000) + BATCH - 1) / BATCH * BATCH);
    int fds0 = nt_count_fds();
    int64_t alive0 = sockets_alive();
    nt_server_t srv;
    WT_EQ(nt_server_start(&srv, "127.0.0.1:0", NULL), 0);
    int32_t connected = 0;
    conn_arg_t a = {.ep = &srv.ep, .connected = &connected};
    weft_fiber_t f[BATCH];
    int64_t t0 = nt_now();
    for (int done = 0; done < total; done += BATCH) {
        for (int i = 0; i < BATCH; i++)
            f[i] = nt_start(one_connection, &a);
        for (int i = 0; i < BATCH; i++)
            nt_join(f[i]);
    }
    int64_t dt = nt_now() - t0;
    nt_server_stop(&srv);
    WT_EQ(connected, total);
    WT_EQ(srv.accepted, total);
    NT_AWAIT(sockets_alive() == alive0, 20);
    int fds1 = nt_count_fds();
    WT_NOTE("many_connections: %d connections (%d at a time) in %.0f ms, %.1f us each; fds %d -> "
            "%d",
            total, BATCH, nt_ms(dt), (double)dt / 1e3 / total, fds0, fds1);
    WT_LE(fds1, fds0 + 2);
}

/* ---- weft_fd_wait ---- */

static void make_pipe(int p[2])
{
    WT_EQ(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
}

typedef struct {
    int fd;
    int delay_ms;
} delayed_write_t;

static void delayed_write(void *p)
{
    delayed_write_t *d = p;
    nt_sleep_ms(d->delay_ms);
    WT_EQ(write(d->fd, "x", 1), 1);
}

static void *delayed_write_thread(void *p)
{
    delayed_write(p);
    return NULL;
}

/* Timeout, then a wakeup by a write from a fiber and from a thread. */
static void fd_wait_basics(void *unused)
{
    (void)unused;
    int p[2];
    make_pipe(p);
    char c;
    int64_t t0 = nt_now();
    WT_EQ(weft_fd_wait(p[0], EPOLLIN, t0 + 50 * WEFT_NS_PER_MS), -ETIMEDOUT);
    int64_t dt = nt_now() - t0;
    WT_GE(dt, 49 * WEFT_NS_PER_MS);
    WT_LE(dt, 2000 * WEFT_NS_PER_MS);

    delayed_write_t d = {.fd = p[1], .delay_ms = 30};
    for (int round = 0; round < 2; round++) {
        weft_fiber_t f = 0;
        pthread_t t = 0;
        if (round == 0)
            f = nt_start(delayed_write, &d);
        else
            t = nt_thread(delayed_write_thread, &d);
        t0 = nt_now();
        WT_EQ(weft_fd_wait(p[0], EPOLLIN, t0 + 5 * WEFT_NS_PER_SEC), 0);
        dt = nt_now() - t0;
        WT_GE(dt, 20 * WEFT_NS_PER_MS);
        WT_EQ(read(p[0], &c, 1), 1);
        if (round == 0)
            nt_join(f);
        else
            nt_thread_join(t);
    }
    /* Ready already: no wait. The write end is writable. No deadline. */
    WT_EQ(write(p[1], "y", 1), 1);
    WT_EQ(weft_fd_wait(p[0], EPOLLIN, nt_now() + WEFT_NS_PER_SEC), 0);
    WT_EQ(read(p[0], &c, 1), 1);
    WT_EQ(weft_fd_wait(p[1], EPOLLOUT, -1), 0);
    /* Bad fds. */
    WT_EQ(weft_fd_wait(-1, EPOLLIN, -1), -EBADF);
    int closed = dup(p[0]);
    close(closed);
    WT_EQ(weft_fd_wait(closed, EPOLLIN, nt_now() + WEFT_NS_PER_SEC), -EBADF);
    close(p[0]);
    close(p[1]);
}

static void fd_wait_thread_basics(void)
{
    int p[2];
    make_pipe(p);
    char c;
    int64_t t0 = nt_now();
    WT_EQ(weft_fd_wait(p[0], EPOLLIN, t0 + 50 * WEFT_NS_PER_MS), -ETIMEDOUT);
    WT_GE(nt_now() - t0, 49 * WEFT_NS_PER_MS);
    delayed_write_t d = {.fd = p[1], .delay_ms = 30};
    weft_fiber_t f = nt_start(delayed_write, &d);
    WT_EQ(weft_fd_wait(p[0], EPOLLIN, nt_now() + 5 * WEFT_NS_PER_SEC), 0);
    WT_EQ(read(p[0], &c, 1), 1);
    nt_join(f);
    WT_EQ(weft_fd_wait(p[1], EPOLLOUT, -1), 0);
    close(p[0]);
    close(p[1]);
}

typedef struct {
    int fd;
    int rc;
    int32_t started;
} waiter_t;

static void wait_forever(void *p)
{
    waiter_t *w = p;
    NT_STORE(&w->started, 1);
    w->rc = weft_fd_wait(w->fd, EPOLLIN, nt_now() + 20 * WEFT_NS_PER_SEC);
}

/* Interrupts, a second waiter on the same fd, a weft socket's fd. */
static void fd_wait_conflicts(void *unused)
{
    (void)unused;
    int p[2];
    make_pipe(p);
    waiter_t w = {.fd = p[0]};
    weft_fiber_t f = nt_start(wait_forever, &w);
    NT_AWAIT(NT_LOAD(&w.started), 5);
    nt_sleep_ms(10);
    WT_EQ(weft_fd_wait(p[0], EPOLLIN, nt_now() + WEFT_NS_PER_SEC), -EEXIST);
    WT_EQ(weft_fiber_interrupt(f), 0);
    nt_join(f);
    WT_EQ(w.rc, -EINTR);
    /* After the interrupted wait, the fd can be waited on again. */
    w.started = 0;
    f = nt_start(wait_forever, &w);
    NT_AWAIT(NT_LOAD(&w.started), 5);
    nt_sleep_ms(10);
    WT_EQ(write(p[1], "z", 1), 1);
    nt_join(f);
    WT_EQ(w.rc, 0);
    close(p[0]);
    close(p[1]);

    int sv[2];
    nt_socketpair(sv);
    weft_socket_id_t id;
    weft_socket_options_t o = {.fd = sv[0]};
    WT_EQ(weft_socket_create(&id, &o), 0);
    WT_EQ(weft_fd_wait(sv[0], EPOLLIN, nt_now() + WEFT_NS_PER_SEC), -EEXIST);
    WT_EQ(weft_socket_set_failed(id, WEFT_ECLOSE), 0);
    close(sv[1]);
}

/* Many fibers, each on its own pipe, all woken; then one pipe waited on
 * over and over, alternating timeouts and wakeups: a late event from an
 * earlier wait must not wake a later one. */
static void fd_wait_many(void *unused)
{
    (void)unused;
    enum { N = 200 };
    static int pipes[N][2];
    static waiter_t w[N];
    weft_fiber_t f[N];
    for (int i = 0; i < N; i++) {
        make_pipe(pipes[i]);
        w[i] = (waiter_t){.fd = pipes[i][0], .rc = 1};
        f[i] = nt_start(wait_forever, &w[i]);
    }
    for (int i = 0; i < N; i++)
        NT_AWAIT(NT_LOAD(&w[i].started), 5);
    nt_sleep_ms(5);
    for (int i = 0; i < N; i++)
        WT_EQ(write(pipes[i][1], "w", 1), 1);
    for (int i = 0; i < N; i++) {
        nt_join(f[i]);
        WT_EQ(w[i].rc, 0);
        close(pipes[i][0]);
        close(pipes[i][1]);
    }

    int p[2];
    make_pipe(p);
    int rounds = (int)wt_scaled(3000), spurious = 0, timeouts = 0;
    uint64_t rng = 42;
    for (int i = 0; i < rounds; i++) {
        bool wrote = nt_below(&rng, 2);
        if (wrote)
            WT_EQ(write(p[1], "r", 1), 1);
        int rc = weft_fd_wait(p[0], EPOLLIN, nt_now() + (wrote ? 2000 : 100) * WEFT_NS_PER_US);
        char c;
        ssize_t r = read(p[0], &c, 1);
        if (rc == 0 && r != 1)
            spurious++;
        if (rc == -ETIMEDOUT)
            timeouts++;
        WT_ASSERT_MSG(rc == 0 || rc == -ETIMEDOUT, "fd_wait: %s", weft_strerror(rc));
        WT_EQ(r == 1, wrote);
    }
    WT_NOTE("fd_wait_many: %d alternating waits, %d timed out, %d readiness reports with nothing "
            "to read",
            rounds, timeouts, spurious);
    close(p[0]);
    close(p[1]);
}

static void fd_wait_pipe(void)
{
    int fds0 = nt_count_fds();
    nt_in_fiber(fd_wait_basics, NULL);
    fd_wait_thread_basics();
    nt_in_fiber(fd_wait_conflicts, NULL);
    nt_in_fiber(fd_wait_many, NULL);
    NT_AWAIT(nt_count_fds() == fds0, 5);
}

/* ---- the acceptor ---- */

typedef struct {
    weft_acceptor_t *acc;
    weft_endpoint_t ep;
    int32_t in_accept;  /* on_accept calls running */
    int32_t calls;
    int32_t stopped;    /* set once weft_acceptor_stop returned */
    int32_t late_calls; /* on_accept calls that started after that */
    int32_t clients_stop;
    int32_t connects;
} stop_round_t;

static void counting_accept(int fd, const weft_endpoint_t *remote, void *arg)
{
    (void)remote;
    stop_round_t *r = arg;
    NT_ADD(&r->in_accept, 1);
    if (NT_LOAD(&r->stopped))
        NT_ADD(&r->late_calls, 1);
    if (NT_ADD(&r->calls, 1) % 8 == 0)
        weft_fiber_usleep(300); /* sometimes slow: stop must wait for it */
    close(fd);
    NT_SUB(&r->in_accept, 1);
}

static void stop_client(void *p)
{
    stop_round_t *r = p;
    while (!NT_LOAD(&r->clients_stop)) {
        int fd = weft_connect_fd(&r->ep, nt_now() + 200 * WEFT_NS_PER_MS);
        if (fd >= 0) {
            NT_ADD(&r->connects, 1);
            close(fd);
        } else {
            WT_ASSERT_MSG(fd == -ECONNREFUSED || fd == -ETIMEDOUT || fd == -ECONNRESET,
                          "connect: %s", weft_strerror(fd));
            nt_sleep_ms(1);
        }
    }
}

static void *stop_client_thread(void *p)
{
    stop_client(p);
    return NULL;
}

static void stop_acceptor_fiber(void *p)
{
    stop_round_t *r = p;
    weft_acceptor_stop(r->acc);
}

static void acceptor_stop_while_accepting(void)
{
    int fds0 = nt_count_fds();
    int rounds = (int)wt_scaled(20);
    int64_t total_calls = 0, total_connects = 0;
    for (int i = 0; i < rounds; i++) {
        stop_round_t r = {0};
        weft_acceptor_options_t ao = {.on_accept = counting_accept, .arg = &r};
        WT_EQ(weft_acceptor_start(&r.acc, "127.0.0.1:0", &ao), 0);
        r.ep = *weft_acceptor_endpoint(r.acc);
        weft_fiber_t f[4];
        pthread_t t[2];
        for (int k = 0; k < 4; k++)
            f[k] = nt_start(stop_client, &r);
        for (int k = 0; k < 2; k++)
            t[k] = nt_thread(stop_client_thread, &r);
        NT_AWAIT(NT_LOAD(&r.calls) >= 5, 10);
        if (i % 2)
            nt_in_fiber(stop_acceptor_fiber, &r);
        else
            weft_acceptor_stop(r.acc);
        WT_EQ(NT_LOAD(&r.in_accept), 0);
        NT_STORE(&r.stopped, 1);
        int32_t calls = NT_LOAD(&r.calls);
        nt_sleep_ms(20);
        WT_EQ(NT_LOAD(&r.late_calls), 0);
        WT_EQ(NT_LOAD(&r.calls), calls);
        NT_STORE(&r.clients_stop, 1);
        for (int k = 0; k < 4; k++)
            nt_join(f[k]);
        for (int k = 0; k < 2; k++)
            nt_thread_join(t[k]);
        total_calls += calls;
        total_connects += r.connects;
    }
    WT_NOTE("acceptor_stop_while_accepting: %d rounds, %lld accepted, %lld connects", rounds,
            (long long)total_calls, (long long)total_connects);
    NT_AWAIT(nt_count_fds() == fds0, 5);
}

typedef struct {
    int32_t n;
    int fds[64];
} emfile_accepted_t;

static void keep_accepted(int fd, const weft_endpoint_t *remote, void *arg)
{
    (void)remote;
    emfile_accepted_t *e = arg;
    int i = NT_ADD(&e->n, 1) - 1;
    WT_LT(i, 64);
    e->fds[i] = fd;
}

static int highest_fd(void)
{
    DIR *d = opendir("/proc/self/fd");
    WT_ASSERT(d);
    int hi = -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.' && atoi(e->d_name) > hi)
            hi = atoi(e->d_name);
    closedir(d);
    return hi;
}

static int64_t cpu_ns(void)
{
    struct rusage ru;
    WT_EQ(getrusage(RUSAGE_SELF, &ru), 0);
    return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * WEFT_NS_PER_SEC +
           ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * WEFT_NS_PER_US;
}

/* Runs out of fds with connections waiting to be accepted: the acceptor
 * must not spin on them, and must accept them once fds are free again. */
static void accept_emfile(void)
{
    enum { K = 4 };
    struct rlimit old;
    WT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
    emfile_accepted_t e = {0};
    weft_acceptor_t *acc;
    weft_acceptor_options_t ao = {.on_accept = keep_accepted, .arg = &e};
    WT_EQ(weft_acceptor_start(&acc, "127.0.0.1:0", &ao), 0);
    weft_endpoint_t ep = *weft_acceptor_endpoint(acc);
    int cl[K];
    for (int i = 0; i < K; i++) {
        cl[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        WT_GE(cl[i], 0);
    }

    /* Use up every fd the (lowered) limit allows. */
    struct rlimit lim = {.rlim_cur = (rlim_t)highest_fd() + 1 + 16, .rlim_max = old.rlim_max};
    WT_EQ(setrlimit(RLIMIT_NOFILE, &lim), 0);
    int *fill = malloc(sizeof(int) * lim.rlim_cur);
    int nfill = 0, f;
    while ((f = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
        fill[nfill++] = f;
    WT_EQ(errno, EMFILE);

    for (int i = 0; i < K; i++) {
        int rc = connect(cl[i], (struct sockaddr *)&ep.addr, ep.len);
        WT_ASSERT(rc == 0 || errno == EINPROGRESS);
    }
    for (int i = 0; i < K; i++) {
        WT_ASSERT(nt_poll(cl[i], POLLOUT, 2000));
        int err = 0;
        socklen_t len = sizeof(err);
        WT_EQ(getsockopt(cl[i], SOL_SOCKET, SO_ERROR, &err, &len), 0);
        WT_EQ(err, 0);
    }
    nt_sleep_ms(100); /* the acceptor has met EMFILE by now */
    WT_EQ(NT_LOAD(&e.n), 0);
    int64_t cpu0 = cpu_ns(), t0 = nt_now();
    nt_sleep_ms(300);
    int64_t cpu = cpu_ns() - cpu0, wall = nt_now() - t0;
    WT_EQ(NT_LOAD(&e.n), 0);

    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    free(fill);
    WT_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
    int64_t t1 = nt_now();
    NT_AWAIT(NT_LOAD(&e.n) == K, 10);
    int64_t resume = nt_now() - t1;
    WT_NOTE("accept_emfile: %.1f ms of CPU over %.1f ms out of fds (%d fds filled); accepting "
            "resumed %.1f ms after fds were freed",
            nt_ms(cpu), nt_ms(wall), nfill, nt_ms(resume));
    WT_ASSERT_MSG(cpu < wall / 3, "the process burnt %.1f ms of CPU in %.1f ms while out of fds",
                  nt_ms(cpu), nt_ms(wall));
    WT_LT(resume, 3 * WEFT_NS_PER_SEC);
    weft_acceptor_stop(acc);
    for (int i = 0; i < K; i++) {
        close(e.fds[i]);
        close(cl[i]);
    }
}

/* A second acceptor on a unix path that a live one uses must fail, not
 * take the path over (after which stopping the first removes the second's
 * socket file). */
static void unix_path_in_use(void)
{
    char path[108], addr[128];
    unix_path(path, sizeof(path), "inuse");
    snprintf(addr, sizeof(addr), "unix:%s", path);
    nt_server_t a, b;
    WT_EQ(nt_server_start(&a, addr, NULL), 0);
    int rc = nt_server_start(&b, addr, NULL);
    if (rc == 0) {
        nt_server_stop(&a);
        bool exists = access(path, F_OK) == 0;
        nt_server_stop(&b);
        WT_ASSERT_MSG(false,
                      "a second acceptor on %s started (expected -EADDRINUSE); stopping the first "
                      "then %s the second's socket file",
                      path, exists ? "kept" : "removed");
    }
    WT_EQ(rc, -EADDRINUSE);
    /* The first one still serves. */
    nt_client_t c;
    WT_EQ(nt_client_connect(&c, &a.ep, 2000), 0);
    nt_client_echo(&c, "still here", 10);
    nt_client_close(&c);
    nt_server_stop(&a);
    WT_ASSERT(access(path, F_OK) != 0);
}

/* ---- revive and failed sockets ---- */

static int revive_retrying(weft_socket_t *s, int fd)
{
    int64_t end = nt_now() + 5 * WEFT_NS_PER_SEC;
    int rc;
    while ((rc = weft_socket_revive(s, fd)) == -EBUSY && nt_now() < end)
        nt_sleep_ms(1);
    return rc;
}

static void revive_in_fiber(void *unused)
{
    (void)unused;
    nt_server_t srv;
    WT_EQ(nt_server_start(&srv, "127.0.0.1:0", NULL), 0);
    nt_client_t c;
    WT_EQ(nt_client_connect(&c, &srv.ep, 2000), 0);
    nt_client_echo(&c, "before", 6);
    weft_socket_t *s = weft_socket_address(c.id);
    WT_ASSERT(s);

    /* Not failed: refused, and the fd stays ours. */
    int fd = weft_connect_fd(&srv.ep, nt_now() + 2 * WEFT_NS_PER_SEC);
    WT_GE(fd, 0);
    WT_EQ(weft_socket_revive(s, fd), -EINVAL);
    WT_EQ(close(fd), 0);

    WT_EQ(weft_socket_set_failed(c.id, ECONNABORTED), 0);
    WT_EQ(weft_socket_set_failed(c.id, ECONNABORTED), -ESRCH);
    WT_ASSERT(weft_socket_address(c.id) == NULL);
    WT_EQ(weft_socket_error(s), ECONNABORTED);
    NT_AWAIT(NT_LOAD(&c.failed) == 1, 5);
    WT_EQ(weft_socket_revive(s, -1), -EINVAL);

    fd = weft_connect_fd(&srv.ep, nt_now() + 2 * WEFT_NS_PER_SEC);
    WT_GE(fd, 0);
    WT_EQ(revive_retrying(s, fd), 0);
    c.failed_seen = NT_LOAD(&c.failed);
    weft_socket_t *again = weft_socket_address(c.id);
    WT_ASSERT(again == s);
    weft_socket_dereference(again);
    WT_ASSERT(!weft_socket_failed(s));
    WT_EQ(weft_socket_error(s), 0);
    WT_EQ(weft_socket_id(s), c.id);
    WT_EQ(weft_socket_fd(s), fd);
    nt_client_echo(&c, "after", 5);
    uint8_t *big = malloc(1 << 20);
    nt_fill_pattern(big, 1 << 20, 5);
    nt_client_echo(&c, big, 1 << 20);
    free(big);
    weft_socket_dereference(s);
    nt_client_close(&c);
    WT_EQ(c.failed, 2);
    WT_EQ(c.recycled, 1);
    nt_server_stop(&srv);
    WT_EQ(srv.accepted, 3);

    /* Not a client socket: refused. */
    int sv[2], sv2[2];
    nt_socketpair(sv);
    nt_socketpair(sv2);
    weft_socket_id_t id;
    weft_socket_options_t o = {.fd = sv[0]};
    WT_EQ(weft_socket_create(&id, &o), 0);
    s = weft_socket_address(id);
    WT_EQ(weft_socket_set_failed(id, WEFT_ECLOSE), 0);
    WT_EQ(weft_socket_revive(s, sv2[0]), -EINVAL);
    weft_socket_dereference(s);
    close(sv[1]);
    close(sv2[0]);
    close(sv2[1]);
}

static void revive(void)
{
    int64_t alive0 = sockets_alive();
    nt_in_fiber(revive_in_fiber, NULL);
    NT_AWAIT(sockets_alive() == alive0, 10);
}

static void write_after_failed(void)
{
    int64_t alive0 = sockets_alive();
    int sv[2];
    nt_socketpair(sv);
    weft_socket_id_t id;
    weft_socket_options_t o = {.fd = sv[0], .handler = NULL};
    WT_EQ(weft_socket_create(&id, &o), 0);
    weft_socket_t *s = weft_socket_address(id);
    WT_ASSERT(s);
    WT_ASSERT(weft_socket_alive(id));
    weft_iobuf_t b = WEFT_IOBUF_INIT;
    WT_EQ(weft_iobuf_append(&b, "ok", 2), 0);
    WT_EQ(weft_socket_write(s, &b, NULL), 0);
    char buf[2];
    WT_EQ(nt_read_full(sv[1], buf, 2, 2000), 2);

    WT_EQ(weft_socket_set_failed(id, -EPIPE), 0); /* the sign does not matter */
    WT_ASSERT(!weft_socket_alive(id)); /* failed, though still referenced */
    WT_EQ(weft_socket_set_failed(id, EPIPE), -ESRCH);
    WT_EQ(weft_socket_error(s), EPIPE);
    done_rec_t d = {0};
    weft_write_options_t wo = {.done = done_record, .arg = &d};
    WT_EQ(weft_iobuf_append(&b, "no", 2), 0);
    WT_EQ(weft_socket_write(s, &b, &wo), -EPIPE);
    WT_EQ(weft_socket_write(s, &b, NULL), -EPIPE);
    weft_iobuf_clear(&b);
    WT_EQ(weft_socket_unwritten(s), 0);
    /* The peer sees the connection shut down. */
    WT_EQ(nt_drain_to_eof(sv[1], 2000, NULL), 0);
    weft_socket_dereference(s);
    NT_AWAIT(sockets_alive() == alive0, 10);
    WT_EQ(d.calls, 0);
    WT_ASSERT(weft_socket_address(id) == NULL);
    WT_ASSERT(!weft_socket_alive(id));
    WT_ASSERT(!weft_socket_alive(0));
    WT_EQ(weft_socket_set_failed(id, EPIPE), -ESRCH);
    WT_EQ(weft_socket_set_failed(0, EPIPE), -ESRCH);
    close(sv[1]);
}

/* A write that finds the peer gone fails the socket, and on_failed must
 * not run on the writer's stack: an RPC client writes while holding the
 * call's lock, and its on_failed takes the lock of every call on the
 * connection (a self-deadlock, seen when a server restarted under load). */
typedef struct {
    weft_mutex_t lock;      /* held by the writer across weft_socket_write */
    weft_fiber_t writer;
    weft_fiber_t failed_in; /* the fiber on_failed ran in */
    int lock_was_free;      /* on_failed could take the lock at once */
    int calls;
    weft_socket_id_t id;
} write_fail_t;

static void write_fail_readable(weft_socket_t *s)
{
    (void)s; /* no reading: only the write may find the peer gone */
}

static void write_fail_on_failed(weft_socket_t *s)
{
    write_fail_t *w = weft_socket_user(s);
    w->failed_in = weft_fiber_self();
    if (weft_mutex_trylock(&w->lock) == 0) {
        w->lock_was_free = 1;
        weft_mutex_unlock(&w->lock);
    }
    NT_ADD(&w->calls, 1);
}

static const weft_socket_handler_t write_fail_handler = {
    .on_readable = write_fail_readable,
    .on_failed = write_fail_on_failed,
};

static void write_fail_fiber(void *arg)
{
    write_fail_t *w = arg;
    weft_socket_t *s = weft_socket_address(w->id);
    WT_ASSERT(s);
    w->writer = weft_fiber_self();
    weft_mutex_lock(&w->lock);
    weft_iobuf_t b = WEFT_IOBUF_INIT;
    WT_EQ(weft_iobuf_append(&b, "to nobody", 9), 0);
    WT_EQ(weft_socket_write(s, &b, NULL), 0); /* failures come through on_failed */
    weft_iobuf_clear(&b);
    weft_mutex_unlock(&w->lock);
    weft_socket_dereference(s);
}

static void failed_while_writing(void)
{
    int64_t alive0 = sockets_alive();
    int sv[2];
    nt_socketpair(sv);
    close(sv[1]);
    write_fail_t w = {0};
    weft_mutex_init(&w.lock);
    weft_socket_options_t o = {.fd = sv[0], .handler = &write_fail_handler, .user = &w};
    WT_EQ(weft_socket_create(&w.id, &o), 0);
    nt_in_fiber(write_fail_fiber, &w);
    NT_AWAIT(NT_LOAD(&w.calls) == 1, 10);
    NT_AWAIT(sockets_alive() == alive0, 10);
    WT_EQ(w.calls, 1);
    WT_NE(w.failed_in, 0);
    WT_ASSERT_MSG(w.failed_in != w.writer, "on_failed ran inside weft_socket_write");
    WT_EQ(w.lock_was_free, 1);
    WT_EQ(weft_socket_set_failed(w.id, EPIPE), -ESRCH);
}

/* revive() while the old connection's input fiber is still inside cut():
 * the input fiber must not go on reading the new connection side by side
 * with the new one's input fiber (cut() must never run twice at once). */
typedef struct {
    nt_client_t c; /* first: the client handlers take the user as this */
    int32_t gate;
    int32_t blocked;
    int32_t gated_once;
    int32_t in_cut;
    int32_t max_in_cut;
} gated_t;

static weft_socket_msg_t *gated_cut(weft_socket_t *s, weft_iobuf_t *in, int *error)
{
    gated_t *g = weft_socket_user(s);
    int32_t n = NT_ADD(&g->in_cut, 1);
    int32_t m = NT_LOAD(&g->max_in_cut);
    while (n > m && !__atomic_compare_exchange_n(&g->max_in_cut, &m, n, false, __ATOMIC_ACQ_REL,
                                                 __ATOMIC_ACQUIRE))
        ;
    if (!NT_XCHG(&g->gated_once, 1)) {
        NT_STORE(&g->blocked, 1);
        int64_t end = nt_now() + 10 * WEFT_NS_PER_SEC;
        while (!NT_LOAD(&g->gate) && nt_now() < end)
            weft_butex_wait(&g->gate, 0, end);
    }
    weft_socket_msg_t *msg = nt_frame_cut(s, in, error);
    NT_SUB(&g->in_cut, 1);
    return msg;
}

static const weft_socket_handler_t gated_handler = {
    .cut = gated_cut,
    .process = nt_client_process,
    .on_failed = nt_client_on_failed,
    .on_recycle = nt_client_on_recycle,
};

static void revive_while_reading(void)
{
    weft_endpoint_t ep;
    int lfd = raw_listener(&ep, 8);
    static gated_t g;
    memset(&g, 0, sizeof(g));
    nt_client_init(&g.c);
    weft_socket_options_t o = {.handler = &gated_handler, .user = &g};
    WT_EQ(weft_socket_connect(&g.c.id, &ep, nt_now() + 2 * WEFT_NS_PER_SEC, &o), 0);
    int peer1 = raw_accept(lfd, 2000);
    nt_write_full(peer1, "\0\0", 2); /* half a header: cut() is called, and waits */
    NT_AWAIT(NT_LOAD(&g.blocked), 5);

    weft_socket_t *s = weft_socket_address(g.c.id);
    WT_ASSERT(s);
    WT_EQ(weft_socket_set_failed(g.c.id, ECONNABORTED), 0);
    int fd = weft_connect_fd(&ep, nt_now() + 2 * WEFT_NS_PER_SEC);
    WT_GE(fd, 0);
    int peer2 = raw_accept(lfd, 2000);
    int rc = weft_socket_revive(s, fd);
    WT_ASSERT_MSG(rc == 0 || rc == -EBUSY, "revive: %s", weft_strerror(rc));
    bool revived_early = rc == 0;
    g.c.failed_seen = 1;
    if (revived_early) {
        /* The new connection gets a frame while the old input fiber is
         * still in cut(). */
        raw_write_frame(peer2, "new", 3);
        nt_msg_t *m = nt_client_recv(&g.c, 2000);
        if (m)
            nt_msg_free(m);
    }
    NT_STORE(&g.gate, 1);
    weft_butex_wake_all(&g.gate);
    if (!revived_early) {
        WT_EQ(revive_retrying(s, fd), 0);
        raw_write_frame(peer2, "new", 3);
        nt_msg_t *m = nt_client_recv(&g.c, 2000);
        WT_ASSERT(m && nt_msg_body_is(m, "new", 3));
        nt_msg_free(m);
    }
    nt_sleep_ms(20);
    WT_NOTE("revive_while_reading: revive returned %s while the old input fiber was in cut(); "
            "cut() ran %d at once",
            revived_early ? "0" : "-EBUSY", NT_LOAD(&g.max_in_cut));
    weft_socket_dereference(s);
    nt_client_close(&g.c);
    close(peer1);
    close(peer2);
    close(lfd);
    WT_ASSERT_MSG(NT_LOAD(&g.max_in_cut) == 1,
                  "cut() ran %d times at once on one socket: revive() let the old input fiber "
                  "live on next to the new connection's",
                  NT_LOAD(&g.max_in_cut));
}

/* Writes to a failed client socket while another thread revives it: each
 * write must either be refused with the socket's error (data left with the
 * caller) or be accepted (data taken, done() called later). */
typedef struct {
    weft_socket_t *s;
    int32_t go;       /* round to run, set by main */
    int32_t reported; /* round finished */
    int32_t stop;
    int32_t refused, accepted, dones;
    int32_t kept;     /* returned 0 but left the data with the caller */
} revive_writer_t;

static void revive_writer_done(void *arg, int error)
{
    (void)error;
    revive_writer_t *w = arg;
    NT_ADD(&w->dones, 1);
}

static void *revive_writer(void *p)
{
    revive_writer_t *w = p;
    int32_t round = 0;
    while (!NT_LOAD(&w->stop)) {
        if (NT_LOAD(&w->go) == round) {
            sched_yield();
            continue;
        }
        round = NT_LOAD(&w->go);
        for (;;) {
            weft_iobuf_t b = WEFT_IOBUF_INIT;
            nt_frame_append(&b, "w", 1);
            weft_write_options_t wo = {.done = revive_writer_done, .arg = w};
            int rc = weft_socket_write(w->s, &b, &wo);
            bool kept = !weft_iobuf_empty(&b);
            weft_iobuf_clear(&b);
            if (rc == 0) {
                NT_ADD(kept ? &w->kept : &w->accepted, 1);
                break;
            }
            WT_ASSERT_MSG(rc == -ECONNABORTED && kept, "write: %s", weft_strerror(rc));
            NT_ADD(&w->refused, 1);
        }
        NT_STORE(&w->reported, round);
    }
    return NULL;
}

static void write_during_revive(void)
{
    nt_server_t srv;
    WT_EQ(nt_server_start(&srv, "127.0.0.1:0", NULL), 0);
    nt_client_t c;
    WT_EQ(nt_client_connect(&c, &srv.ep, 2000), 0);
    static revive_writer_t w;
    memset(&w, 0, sizeof(w));
    w.s = weft_socket_address(c.id);
    WT_ASSERT(w.s);
    pthread_t t = nt_thread(revive_writer, &w);
    int rounds = 5000, i; /* bounded by time, not scaled: a race detector */
    int64_t end = nt_now() + 4 * WEFT_NS_PER_SEC;
    for (i = 1; i <= rounds && nt_now() < end; i++) {
        WT_EQ(weft_socket_set_failed(c.id, ECONNABORTED), 0);
        NT_STORE(&w.go, i);
        int fd = weft_connect_fd(&srv.ep, nt_now() + 2 * WEFT_NS_PER_SEC);
        WT_GE(fd, 0);
        WT_EQ(revive_retrying(w.s, fd), 0);
        NT_AWAIT(NT_LOAD(&w.reported) == i, 10);
    }
    NT_STORE(&w.stop, 1);
    nt_thread_join(t);
    NT_AWAIT(NT_LOAD(&w.dones) == NT_LOAD(&w.accepted), 10);
    WT_NOTE("write_during_revive: %d revives; writes: %d refused, %d accepted, %d returned 0 but "
            "kept the data (never written, no done())",
            i - 1, w.refused, w.accepted, w.kept);
    /* Still works: skip the echoes of the accepted writes up to ours. */
    c.failed_seen = NT_LOAD(&c.failed);
    WT_EQ(nt_client_send(&c, "alive", 5), 0);
    for (bool ours = false; !ours;) {
        nt_msg_t *m = nt_client_recv(&c, 5000);
        WT_ASSERT_MSG(m, "no echo from the revived socket");
        ours = nt_msg_body_is(m, "alive", 5);
        nt_msg_free(m);
    }
    weft_socket_dereference(w.s);
    nt_client_close(&c);
    nt_server_stop(&srv);
    WT_ASSERT_MSG(w.kept == 0,
                  "%d writes to a socket being revived returned 0 without taking the data",
                  w.kept);
}

/* A server run from plain pthreads, with no fiber started yet: its sockets'
 * events must be served all the same (the runtime starts on first use). */
static void server_without_fibers(void)
{
    nt_server_t srv;
    WT_EQ(nt_server_start(&srv, "127.0.0.1:0", NULL), 0);
    int fd = raw_connect(&srv.ep);
    raw_write_frame(fd, "hello", 5);
    uint32_t be;
    ssize_t r = nt_read_full(fd, &be, 4, 3000);
    WT_ASSERT_MSG(r == 4,
                  "no echo within 3 s from a server started before any fiber (%d connections "
                  "accepted)",
                  NT_LOAD(&srv.accepted));
    char body[5];
    WT_EQ(nt_read_full(fd, body, 5, 3000), 5);
    WT_ASSERT(!memcmp(body, "hello", 5));
    close(fd);
    nt_server_stop(&srv);
}

int main(int argc, char **argv)
{
    static const nt_case_t cases[] = {
        NT_CASE(endpoint_parse_format),
        NT_CASE(echo_tcp4),
        NT_CASE(echo_tcp6),
        NT_CASE(echo_unix),
        NT_CASE(connect_refused),
        NT_CASE(connect_timeout),
        NT_CASE(peer_reset_during_write),
        NT_CASE(half_close),
        NT_CASE(eof_error),
        NT_CASE(bad_input),
        NT_CASE(write_after_failed),
        NT_CASE(failed_while_writing),
        NT_CASE(revive),
        NT_CASE(fd_wait_pipe),
        NT_CASE(many_connections),
        NT_CASE(acceptor_stop_while_accepting),
        NT_CASE(accept_emfile),
        /* Cases aimed at suspected bugs (see the file comment). */
        NT_CASE(connect_timeout_unix),
        NT_CASE(unix_path_in_use),
        NT_CASE(revive_while_reading),
        NT_CASE(write_during_revive),
        NT_FRESH_CASE(server_without_fibers),
    };
    nt_run_cases(argc, argv, cases, NT_NCASES(cases));
    WT_EQ(weft_fiber_shutdown(), 0);
    return 0;
}
