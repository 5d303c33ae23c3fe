/*
 * tcp_floor.c - the fastest a TCP round trip can be on this machine.
 *
 * A benchmark of one call in flight measures a round trip, and no framework
 * can make a round trip cheaper than the system calls under it. This
 * program measures those floors with no framework at all: a client and an
 * echo server (a forked child) bounce a small message over one loopback TCP
 * connection (TCP_NODELAY), each side waiting for the other in one of three
 * ways:
 *
 *   recv-spin    recv(MSG_DONTWAIT) in a loop: one system call per wakeup,
 *                the floor of any design;
 *   epoll-spin   epoll_wait(timeout 0) in a loop, then recv: the floor of
 *                an event loop that never sleeps (weft's idle worker polls
 *                like this while calls keep coming back);
 *   epoll-block  epoll_wait(-1), then recv: an event loop that sleeps, and
 *                pays a kernel wakeup per message (gRPC and most servers).
 *
 * Each mode runs --repeat times, modes alternating, for --seconds each; the
 * table shows the median of round trips per second and of p50/p99.
 * Busy-polling modes need two idle CPUs to mean anything: on a loaded
 * machine they fight the load for the CPU.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_SIZE 4096
#define MAX_REPEAT 15

enum { RECV_SPIN, EPOLL_SPIN, EPOLL_BLOCK, NMODES };
static const char *const mode_name[NMODES] = {"recv-spin", "epoll-spin", "epoll-block"};

typedef struct {
    double rtt_per_s, p50_us, p99_us;
} result_t;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "tcp_floor: %s: %s\n", what, strerror(errno));
    exit(1);
}

typedef struct {
    int fd, ep, mode;
} peer_t;

static void peer_init(peer_t *p, int fd, int mode)
{
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
        die("TCP_NODELAY");
    p->fd = fd;
    p->mode = mode;
    p->ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET};
    if (p->ep < 0 || epoll_ctl(p->ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        die("epoll");
}

/* Waits for and reads exactly n bytes in the peer's way. false on EOF. */
static bool peer_recv(peer_t *p, char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        if (p->mode != RECV_SPIN) {
            struct epoll_event ev;
            int timeout = p->mode == EPOLL_BLOCK ? -1 : 0;
            int r = epoll_wait(p->ep, &ev, 1, timeout);
            if (r < 0 && errno != EINTR)
                die("epoll_wait");
            if (r <= 0)
                continue;
        }
        /* Edge-triggered: read until the socket says EAGAIN. */
        for (;;) {
            ssize_t r = recv(p->fd, buf + got, n - got, MSG_DONTWAIT);
            if (r > 0) {
                got += (size_t)r;
                if (got == n)
                    return true;
                continue;
            }
            if (r == 0)
                return false;
            if (errno == EAGAIN || errno == EINTR)
                break;
            die("recv");
        }
    }
    return true;
}

static void peer_send(peer_t *p, const char *buf, size_t n)
{
    size_t sent = 0;
    while (sent < n) {
        ssize_t r = send(p->fd, buf + sent, n - sent, MSG_NOSIGNAL);
        if (r < 0 && errno != EINTR && errno != EAGAIN)
            die("send");
        if (r > 0)
            sent += (size_t)r;
    }
}

static void serve(int fd, int mode, size_t size)
{
    peer_t p;
    char buf[MAX_SIZE];
    peer_init(&p, fd, mode);
    while (peer_recv(&p, buf, size))
        peer_send(&p, buf, size);
    _exit(0);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* One run: a fresh server process and connection, --seconds of round trips. */
static result_t run_once(int mode, size_t size, double seconds, int64_t *lat, size_t cap)
{
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(ls, 1) != 0 ||
        getsockname(ls, (struct sockaddr *)&a, &alen) != 0)
        die("listen");
    pid_t child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        int fd = accept(ls, NULL, NULL);
        if (fd < 0)
            die("accept");
        serve(fd, mode, size);
    }
    close(ls);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        die("connect");
    peer_t p;
    peer_init(&p, fd, mode);
    char buf[MAX_SIZE];
    memset(buf, 'x', size);

    int64_t warm_until = now_ns() + (int64_t)(seconds * 0.25e9);
    while (now_ns() < warm_until) {
        peer_send(&p, buf, size);
        if (!peer_recv(&p, buf, size))
            die("echo server closed");
    }
    size_t n = 0;
    int64_t t0 = now_ns(), end = t0 + (int64_t)(seconds * 1e9), t = t0;
    while (t < end && n < cap) {
        peer_send(&p, buf, size);
        if (!peer_recv(&p, buf, size))
            die("echo server closed");
        int64_t t1 = now_ns();
        lat[n++] = t1 - t;
        t = t1;
    }
    close(fd);
    close(p.ep);
    waitpid(child, NULL, 0);

    qsort(lat, n, sizeof(*lat), cmp_i64);
    result_t r = {
        .rtt_per_s = (double)n / ((double)(t - t0) / 1e9),
        .p50_us = (double)lat[n / 2] / 1e3,
        .p99_us = (double)lat[n * 99 / 100] / 1e3,
    };
    return r;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: tcp_floor [--seconds S] [--repeat N] [--size BYTES] [--json]\n"
                 "  --seconds S   timed window of each run (default 2)\n"
                 "  --repeat N    runs per mode, medians reported (default 3, at most %d)\n"
                 "  --size BYTES  message size (default 16, at most %d)\n"
                 "  --json        one JSON object instead of the table\n",
                 MAX_REPEAT, MAX_SIZE);
}

int main(int argc, char **argv)
{
    double seconds = 2;
    int repeat = 3, json = 0;
    long size = 16;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(arg, "--json")) {
            json = 1;
        } else if (!strcmp(arg, "--help")) {
            usage(stdout);
            return 0;
        } else if (val && !strcmp(arg, "--seconds")) {
            seconds = atof(val), i++;
        } else if (val && !strcmp(arg, "--repeat")) {
            repeat = atoi(val), i++;
        } else if (val && !strcmp(arg, "--size")) {
            size = atol(val), i++;
        } else {
            fprintf(stderr, "tcp_floor: bad argument %s\n", arg);
            usage(stderr);
            return 2;
        }
    }
    if (!(seconds > 0 && seconds <= 3600) || repeat < 1 || repeat > MAX_REPEAT || size < 1 ||
        size > MAX_SIZE) {
        fprintf(stderr, "tcp_floor: --seconds, --repeat or --size out of range\n");
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    size_t cap = (size_t)(seconds * 2e6) + 1024; /* round trips take > 0.5 us */
    int64_t *lat = malloc(cap * sizeof(*lat));
    if (!lat)
        die("malloc");

    double rate[NMODES][MAX_REPEAT], p50[NMODES][MAX_REPEAT], p99[NMODES][MAX_REPEAT];
    for (int k = 0; k < repeat; k++) {
        for (int j = 0; j < NMODES; j++) {
            int m = (j + k) % NMODES; /* rotate, so no mode always runs first */
            result_t r = run_once(m, (size_t)size, seconds, lat, cap);
            rate[m][k] = r.rtt_per_s;
            p50[m][k] = r.p50_us;
            p99[m][k] = r.p99_us;
            fprintf(stderr, "tcp_floor: %-11s run %d/%d  %8.0f round trips/s  p50 %6.1f us  p99 %6.1f us\n",
                    mode_name[m], k + 1, repeat, r.rtt_per_s, r.p50_us, r.p99_us);
        }
    }
    free(lat);

    if (json)
        printf("{\"size\": %ld, \"seconds\": %g, \"repeat\": %d, \"rows\": [", size, seconds, repeat);
    else
        printf("%ld-byte round trips over loopback TCP, one in flight; medians of %d runs of %g s\n"
               "%-12s %14s %10s %10s\n",
               size, repeat, seconds, "mode", "round trips/s", "p50 us", "p99 us");
    for (int m = 0; m < NMODES; m++) {
        double r = median(rate[m], repeat), a = median(p50[m], repeat),
               b = median(p99[m], repeat);
        if (json)
            printf("%s{\"mode\": \"%s\", \"round_trips_per_s\": %.0f, \"p50_us\": %.2f, "
                   "\"p99_us\": %.2f}",
                   m ? ", " : "", mode_name[m], r, a, b);
        else
            printf("%-12s %14.0f %10.1f %10.1f\n", mode_name[m], r, a, b);
    }
    if (json)
        printf("]}\n");
    return 0;
}
