/*
 * test_write_order.c - the lock-free write path: ordering, completion
 * callbacks and the unwritten-bytes limit.
 *
 * Why: weft_socket_write() promises that concurrent writers to one socket
 * never interleave bytes of different messages, that each writer's
 * messages go out in the order they were accepted, and that every accepted
 * write reports to its done() exactly once, from a fiber of its own. The
 * hard part is the hand-off when the kernel buffer fills (the owner passes
 * the list to a fiber that waits for EPOLLOUT while new writers keep
 * pushing), so the peer here reads slowly in small chunks.
 *
 * Frames: magic, writer, sequence, length, a payload whose bytes are a
 * function of (writer, sequence, offset), and an FNV checksum. The reader
 * checks every byte, per-writer order and that no frame is torn.
 * Figures printed: MB/s through the slow reader, the most bytes that were
 * waiting at once, how often writers were told EOVERCROWDED.
 */
#include "net_test_util.h"

#include <netinet/in.h>
#include <sched.h>

#define FRAME_MAGIC 0x57465431u /* "WFT1" */

enum {
    MAX_WRITERS = 8,
    MAX_BODY = 1 << 20,
    HDR = 16,
    TRAILER = 4,
};

typedef struct {
    uint32_t magic, writer, seq, len;
} hdr_t;

static uint64_t frame_seed(uint32_t w, uint32_t seq)
{
    return (((uint64_t)w << 32) | seq) * 0x9E3779B97F4A7C15ull + 1;
}

/* Mostly small bodies, some medium, a few up to 1 MiB. */
static uint32_t body_size(uint64_t *rng)
{
    uint64_t r = nt_below(rng, 100);
    if (r < 85)
        return 1 + (uint32_t)nt_below(rng, 256);
    if (r < 97)
        return 257 + (uint32_t)nt_below(rng, 64 << 10);
    return (64 << 10) + (uint32_t)nt_below(rng, MAX_BODY - (64 << 10) + 1);
}

/* ---- the test's state ---- */

typedef struct order_test order_test_t;

typedef struct {
    order_test_t *t;
    uint32_t w;
    bool fiber;
    weft_fiber_t self;
    uint64_t rng;
    int64_t overcrowded;
} writer_t;

struct order_test {
    weft_socket_t *s;
    int peer;
    int nwriters;
    int msgs;                 /* per writer */
    int32_t *done_calls;      /* [writer * msgs + seq] */
    int64_t bytes_accepted;
    int64_t max_unwritten_seen;
    int32_t done_total;
    writer_t writers[MAX_WRITERS];
    /* reader results */
    int64_t bytes_read;
    int64_t frames_read;
};

static __thread int tls_in_write; /* > 0 while this thread is in weft_socket_write */

typedef struct {
    writer_t *wr;
    int32_t *call;
} done_ctx_t;

static void order_done(void *arg, int error)
{
    done_ctx_t *d = arg;
    WT_EQ(error, 0);
    WT_EQ(NT_ADD(d->call, 1), 1);
    weft_fiber_t self = weft_fiber_self();
    WT_ASSERT_MSG(self != 0, "done() ran outside a fiber");
    WT_ASSERT_MSG(self != d->wr->self, "done() ran in the writer's own fiber");
    WT_ASSERT_MSG(tls_in_write == 0, "done() ran nested inside weft_socket_write");
    NT_ADD(&d->wr->t->done_total, 1);
    free(d);
}

/* ---- writers ---- */

static void free_external(void *data, void *arg)
{
    (void)arg;
    free(data);
}

/* Appends frame (w, seq) to b; large bodies join as external memory. */
static size_t build_frame(weft_iobuf_t *b, uint32_t w, uint32_t seq, uint32_t len)
{
    hdr_t h = {FRAME_MAGIC, w, seq, len};
    uint8_t *body = malloc(len);
    WT_ASSERT(body);
    nt_fill_pattern(body, len, frame_seed(w, seq));
    uint32_t sum = nt_fnv1a(nt_fnv1a(NT_FNV_INIT, &h, sizeof(h)), body, len);
    WT_EQ(weft_iobuf_append(b, &h, sizeof(h)), 0);
    if (len > (64 << 10)) {
        WT_EQ(weft_iobuf_append_external(b, body, len, free_external, NULL), 0);
    } else {
        WT_EQ(weft_iobuf_append(b, body, len), 0);
        free(body);
    }
    WT_EQ(weft_iobuf_append(b, &sum, sizeof(sum)), 0);
    return HDR + len + TRAILER;
}

static void writer_pause(writer_t *wr, int us)
{
    if (wr->fiber)
        weft_fiber_usleep((uint64_t)us);
    else
        usleep((useconds_t)us);
}

static void writer_run(writer_t *wr)
{
    order_test_t *t = wr->t;
    wr->self = weft_fiber_self();
    for (int seq = 0; seq < t->msgs; seq++) {
        weft_iobuf_t b = WEFT_IOBUF_INIT;
        size_t n = build_frame(&b, wr->w, (uint32_t)seq, body_size(&wr->rng));
        done_ctx_t *d = malloc(sizeof(*d));
        *d = (done_ctx_t){.wr = wr, .call = &t->done_calls[wr->w * (uint32_t)t->msgs + (uint32_t)seq]};
        weft_write_options_t wo = {.done = order_done, .arg = d};
        for (;;) {
            tls_in_write++;
            int rc = weft_socket_write(t->s, &b, &wo);
            tls_in_write--;
            if (rc == 0)
                break;
            WT_ASSERT_MSG(rc == -WEFT_EOVERCROWDED, "write: %s", weft_strerror(rc));
            WT_EQ(weft_iobuf_length(&b), n); /* a refused write leaves the data */
            wr->overcrowded++;
            writer_pause(wr, 1000);
        }
        WT_ASSERT(weft_iobuf_empty(&b));
        NT_ADD(&t->bytes_accepted, (int64_t)n);
        int64_t u = (int64_t)weft_socket_unwritten(t->s);
        int64_t m = NT_LOAD(&t->max_unwritten_seen);
        while (u > m && !__atomic_compare_exchange_n(&t->max_unwritten_seen, &m, u, false,
                                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            ;
        uint64_t r = nt_below(&wr->rng, 16);
        if (r == 0)
            writer_pause(wr, 100);
        else if (r < 4)
            wr->fiber ? weft_fiber_yield() : (void)sched_yield();
    }
}

static void writer_fiber(void *p)
{
    writer_run(p);
}

static void *writer_thread(void *p)
{
    writer_run(p);
    return NULL;
}

/* ---- the slow reader ---- */

/* Parses and checks every complete frame in buf[*off, have). */
static void parse_frames(order_test_t *t, const uint8_t *buf, size_t have, size_t *off,
                         uint32_t *expect)
{
    while (have - *off >= HDR) {
        hdr_t h;
        memcpy(&h, buf + *off, sizeof(h));
        WT_ASSERT_MSG(h.magic == FRAME_MAGIC, "garbage or a torn frame at stream offset %lld",
                      (long long)(t->bytes_read - (int64_t)(have - *off)));
        WT_ASSERT_MSG(h.writer < (uint32_t)t->nwriters && h.len <= MAX_BODY,
                      "bad header: writer %u len %u", h.writer, h.len);
        WT_ASSERT_MSG(h.seq == expect[h.writer], "writer %u: got message %u, expected %u",
                      h.writer, h.seq, expect[h.writer]);
        size_t total = HDR + h.len + TRAILER;
        if (have - *off < total)
            return;
        const uint8_t *body = buf + *off + HDR;
        size_t bad = nt_check_pattern(body, h.len, frame_seed(h.writer, h.seq));
        WT_ASSERT_MSG(bad == h.len, "writer %u message %u: byte %zu of %u is wrong", h.writer,
                      h.seq, bad, h.len);
        uint32_t sum;
        memcpy(&sum, body + h.len, sizeof(sum));
        WT_EQ(sum, nt_fnv1a(nt_fnv1a(NT_FNV_INIT, &h, sizeof(h)), body, h.len));
        expect[h.writer]++;
        t->frames_read++;
        *off += total;
    }
}

static void *slow_reader(void *p)
{
    order_test_t *t = p;
    size_t cap = 4 * (size_t)MAX_BODY, have = 0, off = 0;
    uint8_t *buf = malloc(cap);
    uint32_t expect[MAX_WRITERS] = {0};
    uint64_t rng = 99;
    int64_t want = (int64_t)t->nwriters * t->msgs;
    while (t->frames_read < want) {
        size_t chunk = nt_below(&rng, 8) ? 1 + nt_below(&rng, 16384) : 65536;
        if (cap - have < chunk) {
            memmove(buf, buf + off, have - off);
            have -= off;
            off = 0;
        }
        WT_ASSERT_MSG(nt_poll(t->peer, POLLIN, 20000),
                      "nothing to read for 20 s after %lld of %lld frames",
                      (long long)t->frames_read, (long long)want);
        ssize_t r = read(t->peer, buf + have, chunk);
        if (r < 0 && errno == EINTR)
            continue;
        WT_ASSERT_MSG(r > 0, "read: %zd (%s)", r, strerror(errno));
        have += (size_t)r;
        t->bytes_read += r;
        parse_frames(t, buf, have, &off, expect);
        if (nt_below(&rng, 4) == 0)
            usleep(200);
    }
    WT_EQ(have, off); /* nothing after the last frame */
    for (int w = 0; w < t->nwriters; w++)
        WT_EQ(expect[w], (uint32_t)t->msgs);
    free(buf);
    return NULL;
}

/* ---- transports ---- */

/* Small kernel buffers, so that even a slow (sanitized) writer fills them
 * and the write path has to wait for EPOLLOUT. */
static void small_buffers(int fd)
{
    int n = 32 << 10;
    WT_EQ(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &n, sizeof(n)), 0);
    WT_EQ(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &n, sizeof(n)), 0);
}

/* A connected TCP pair over loopback: *a and *b, blocking. */
static void tcp_pair(int *a, int *b)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    small_buffers(l); /* inherited by the accepted socket */
    weft_endpoint_t ep;
    WT_EQ(weft_endpoint_parse(&ep, "127.0.0.1:0"), 0);
    WT_EQ(bind(l, (struct sockaddr *)&ep.addr, ep.len), 0);
    WT_EQ(listen(l, 1), 0);
    WT_EQ(weft_endpoint_from_local(&ep, l), 0);
    *a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    small_buffers(*a);
    WT_EQ(connect(*a, (struct sockaddr *)&ep.addr, ep.len), 0);
    *b = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    WT_GE(*b, 0);
    close(l);
}

/* A weft socket (no input handler) on fd. */
static weft_socket_id_t socket_on(int fd, size_t max_unwritten)
{
    weft_socket_options_t o = {.fd = fd, .max_unwritten = max_unwritten};
    weft_socket_id_t id;
    WT_EQ(weft_socket_create(&id, &o), 0);
    return id;
}

/* nfibers fiber writers and nthreads pthread writers, msgs each, to one
 * socket over `transport`, read slowly at the other end. */
static void run_order(const char *transport, int nfibers, int nthreads, int msgs)
{
    int fds0 = nt_count_fds();
    int sv[2];
    if (!strcmp(transport, "tcp")) {
        tcp_pair(&sv[0], &sv[1]);
    } else {
        nt_socketpair(sv);
        small_buffers(sv[0]);
        small_buffers(sv[1]);
    }
    weft_socket_id_t id = socket_on(sv[0], 4 << 20);
    static order_test_t t;
    memset(&t, 0, sizeof(t));
    t.s = weft_socket_address(id);
    WT_ASSERT(t.s);
    t.peer = sv[1];
    t.nwriters = nfibers + nthreads;
    WT_LE(t.nwriters, MAX_WRITERS);
    t.msgs = msgs;
    t.done_calls = calloc((size_t)t.nwriters * (size_t)msgs, sizeof(int32_t));

    int64_t t0 = nt_now();
    pthread_t reader = nt_thread(slow_reader, &t);
    weft_fiber_t fibers[MAX_WRITERS];
    pthread_t threads[MAX_WRITERS];
    for (int w = 0; w < t.nwriters; w++) {
        writer_t *wr = &t.writers[w];
        *wr = (writer_t){.t = &t, .w = (uint32_t)w, .fiber = w < nfibers,
                         .rng = 1000 + (uint64_t)w};
        if (wr->fiber)
            fibers[w] = nt_start(writer_fiber, wr);
        else
            threads[w] = nt_thread(writer_thread, wr);
    }
    for (int w = 0; w < t.nwriters; w++) {
        if (t.writers[w].fiber)
            nt_join(fibers[w]);
        else
            nt_thread_join(threads[w]);
    }
    nt_thread_join(reader);
    int64_t dt = nt_now() - t0;
    NT_AWAIT(NT_LOAD(&t.done_total) == t.nwriters * msgs, 10);
    nt_sleep_ms(20);
    int64_t overcrowded = 0;
    for (int w = 0; w < t.nwriters; w++)
        overcrowded += t.writers[w].overcrowded;
    for (int i = 0; i < t.nwriters * msgs; i++)
        WT_EQ(t.done_calls[i], 1);
    WT_EQ(t.bytes_read, t.bytes_accepted);
    WT_EQ(weft_socket_unwritten(t.s), 0);
    WT_NOTE("write_order %s: %d fibers + %d threads x %d messages, %.1f MB in %.0f ms (%.1f MB/s "
            "through a slow reader); at most %.1f MB waited; %lld EOVERCROWDED retries",
            transport, nfibers, nthreads, msgs, (double)t.bytes_read / 1e6, nt_ms(dt),
            (double)t.bytes_read / 1e3 / nt_ms(dt), (double)t.max_unwritten_seen / 1e6,
            (long long)overcrowded);
    WT_ASSERT_MSG(t.max_unwritten_seen > 0, "the kernel buffer never filled: nothing was tested");
    weft_socket_dereference(t.s);
    WT_EQ(weft_socket_set_failed(id, WEFT_ECLOSE), 0);
    close(sv[1]);
    free(t.done_calls);
    NT_AWAIT(nt_count_fds() == fds0, 10);
}

static void order_unix_fibers(void)
{
    run_order("unix", 8, 0, (int)wt_scaled(300));
}

static void order_tcp_mixed(void)
{
    run_order("tcp", 6, 2, (int)wt_scaled(300));
}

/* ---- the unwritten-bytes limit ---- */

typedef struct {
    int32_t calls;
    int32_t errors;
} done_count_t;

static void count_done(void *arg, int error)
{
    done_count_t *d = arg;
    if (error)
        NT_ADD(&d->errors, 1);
    NT_ADD(&d->calls, 1);
}

static int write_chunk(weft_socket_t *s, size_t n, done_count_t *d)
{
    static const char zeros[256 << 10];
    weft_iobuf_t b = WEFT_IOBUF_INIT;
    WT_LE(n, sizeof(zeros));
    WT_EQ(weft_iobuf_append(&b, zeros, n), 0);
    weft_write_options_t wo = {.done = count_done, .arg = d};
    int rc = weft_socket_write(s, &b, &wo);
    WT_EQ(weft_iobuf_length(&b), rc == 0 ? 0 : n);
    weft_iobuf_clear(&b);
    return rc;
}

typedef struct {
    int fd;
    int64_t want;
    int64_t got;
} drain_t;

static void *drain_thread(void *p)
{
    drain_t *d = p;
    char buf[65536];
    while (d->got < d->want) {
        WT_ASSERT_MSG(nt_poll(d->fd, POLLIN, 10000), "drain stalled at %lld of %lld",
                      (long long)d->got, (long long)d->want);
        ssize_t r = read(d->fd, buf, sizeof(buf));
        WT_GT(r, 0);
        d->got += r;
    }
    return NULL;
}

static void overcrowded(void)
{
    const size_t max = 1 << 20, chunk = 64 << 10;
    int sv[2];
    nt_socketpair(sv);
    weft_socket_id_t id = socket_on(sv[0], max);
    weft_socket_t *s = weft_socket_address(id);
    done_count_t d = {0};
    int64_t accepted = 0;
    int naccepted = 0, rc;
    while ((rc = write_chunk(s, chunk, &d)) == 0) {
        accepted += (int64_t)chunk;
        naccepted++;
        /* Refused once more than max waits: at most one write beyond it. */
        WT_LE(weft_socket_unwritten(s), max + chunk);
        WT_LT(accepted, 64 << 20);
    }
    WT_EQ(rc, -WEFT_EOVERCROWDED);
    size_t waiting = weft_socket_unwritten(s);
    WT_GT(waiting, max);
    WT_LE(waiting, max + chunk);

    /* The peer still reads nothing: every further write is refused and
     * memory does not grow. */
    weft_iobuf_stats_t st0, st1;
    weft_iobuf_stats(&st0);
    int tries = (int)wt_scaled(2000);
    for (int i = 0; i < tries; i++)
        WT_EQ(write_chunk(s, chunk, &d), -WEFT_EOVERCROWDED);
    weft_iobuf_stats(&st1);
    WT_EQ(weft_socket_unwritten(s), waiting);
    WT_LE(st1.blocks - st0.blocks, 16);

    /* The peer drains: everything arrives, and writes are accepted again. */
    drain_t dr = {.fd = sv[1], .want = accepted};
    pthread_t t = nt_thread(drain_thread, &dr);
    nt_thread_join(t);
    NT_AWAIT(weft_socket_unwritten(s) == 0, 10);
    NT_AWAIT(NT_LOAD(&d.calls) == naccepted, 10);
    WT_EQ(d.errors, 0);
    WT_EQ(write_chunk(s, chunk, &d), 0);
    dr.want += (int64_t)chunk;
    t = nt_thread(drain_thread, &dr);
    nt_thread_join(t);
    WT_EQ(dr.got, accepted + (int64_t)chunk);
    NT_AWAIT(NT_LOAD(&d.calls) == naccepted + 1, 10);
    WT_NOTE("overcrowded: max_unwritten 1 MiB: %d writes of 64 KiB accepted (%.1f MB, %.1f MB "
            "waiting) before EOVERCROWDED; %d refused writes grew IOBuf blocks by %lld",
            naccepted, (double)accepted / 1e6, (double)waiting / 1e6, tries,
            (long long)(st1.blocks - st0.blocks));
    weft_socket_dereference(s);
    WT_EQ(weft_socket_set_failed(id, WEFT_ECLOSE), 0);
    close(sv[1]);
}

/* socket.h: "-EOVERCROWDED when more than max_unwritten bytes wait
 * already". With fewer waiting, a write is accepted, whatever its size. */
static void overcrowded_threshold(void)
{
    const size_t max = 1 << 20, chunk = 64 << 10;
    int sv[2];
    nt_socketpair(sv);
    weft_socket_id_t id = socket_on(sv[0], max);
    weft_socket_t *s = weft_socket_address(id);
    done_count_t d = {0};
    int writes = 0;
    /* Fill the kernel, then queue up to just below the limit. */
    while (weft_socket_unwritten(s) == 0 && ++writes)
        WT_EQ(write_chunk(s, chunk, &d), 0);
    while (weft_socket_unwritten(s) + chunk <= max && ++writes)
        WT_EQ(write_chunk(s, chunk, &d), 0);
    size_t waiting = weft_socket_unwritten(s);
    WT_LE(waiting, max);
    int rc = write_chunk(s, 2 * chunk, &d);
    writes += rc == 0;
    WT_NOTE("overcrowded_threshold: %zu bytes waiting (limit %zu): a write of %zu bytes got %s",
            waiting, max, 2 * chunk, rc ? weft_strerror(rc) : "0");
    WT_ASSERT_MSG(rc == 0, "refused with %zu bytes waiting, not more than max_unwritten (%zu)",
                  waiting, max);
    /* Now more than the limit waits: refused. */
    WT_EQ(write_chunk(s, 1, &d), -WEFT_EOVERCROWDED);
    weft_socket_dereference(s);
    WT_EQ(weft_socket_set_failed(id, WEFT_ECLOSE), 0);
    /* Every accepted write reports, with an error now: d must outlive them. */
    NT_AWAIT(NT_LOAD(&d.calls) == writes, 10);
    close(sv[1]);
}

/* done() from writes made by a pthread and by a fiber while the kernel
 * accepts everything at once: still a fiber of its own, never nested. */
typedef struct {
    weft_socket_t *s;
    writer_t wr;
    int32_t calls[64];
} quick_t;

static void quick_writes(quick_t *q)
{
    q->wr.self = weft_fiber_self();
    for (int i = 0; i < 64; i++) {
        weft_iobuf_t b = WEFT_IOBUF_INIT;
        WT_EQ(weft_iobuf_append(&b, "x", 1), 0);
        done_ctx_t *d = malloc(sizeof(*d));
        *d = (done_ctx_t){.wr = &q->wr, .call = &q->calls[i]};
        weft_write_options_t wo = {.done = order_done, .arg = d};
        tls_in_write++;
        WT_EQ(weft_socket_write(q->s, &b, &wo), 0);
        tls_in_write--;
    }
}

static void quick_fiber(void *p)
{
    quick_writes(p);
}

static void done_semantics(void)
{
    int sv[2];
    nt_socketpair(sv);
    weft_socket_id_t id = socket_on(sv[0], 0);
    static quick_t q;
    static order_test_t t;
    memset(&q, 0, sizeof(q));
    memset(&t, 0, sizeof(t));
    q.s = weft_socket_address(id);
    q.wr.t = &t;
    for (int round = 0; round < 2; round++) {
        memset(q.calls, 0, sizeof(q.calls));
        t.done_total = 0;
        q.wr.fiber = round == 0;
        if (q.wr.fiber)
            nt_in_fiber(quick_fiber, &q);
        else
            quick_writes(&q);
        NT_AWAIT(NT_LOAD(&t.done_total) == 64, 10);
        char buf[64];
        WT_EQ(nt_read_full(sv[1], buf, 64, 2000), 64);
    }
    nt_sleep_ms(10);
    for (int i = 0; i < 64; i++)
        WT_EQ(q.calls[i], 1);
    weft_socket_dereference(q.s);
    WT_EQ(weft_socket_set_failed(id, WEFT_ECLOSE), 0);
    close(sv[1]);
}

int main(int argc, char **argv)
{
    static const nt_case_t cases[] = {
        NT_CASE(done_semantics),
        NT_CASE(order_unix_fibers),
        NT_CASE(order_tcp_mixed),
        NT_CASE(overcrowded),
        NT_CASE(overcrowded_threshold),
    };
    nt_run_cases(argc, argv, cases, NT_NCASES(cases));
    WT_EQ(weft_fiber_shutdown(), 0);
    return 0;
}
