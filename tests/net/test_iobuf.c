/*
 * test_iobuf.c - tests of net/iobuf.h.
 *
 * The core is a model test: a random sequence of operations is applied both
 * to IOBufs and to plain byte arrays, and after every step the buffers must
 * hold exactly the bytes of their models and pass weft__iobuf_check(). The
 * same driver takes its choices from libFuzzer input in fuzz_iobuf.c, which
 * includes this file with WT_IOBUF_MODEL_ONLY defined. Around it: unit tests
 * of each operation's edge cases, the protobuf-c adapter, fd round trips
 * with several MiB through a pipe and a socketpair, release of blocks on
 * other threads and fibers, a multi-thread stress on shared blocks, and the
 * throughput of append+cut against memcpy (printed, not checked).
 */
#include "net/iobuf.h"
#include "tests/weft_test.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers shared with the fuzz target ---------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    /* xorshift64: enough for test data, and reproducible from the seed. */
    uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

static void fill_random(unsigned char *p, size_t n, uint64_t seed)
{
    uint64_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(rng_next(&s) >> 24);
}

/* A growable byte array: the model of an IOBuf. */
typedef struct {
    unsigned char *p;
    size_t len, cap;
} bytes_t;

static void bytes_append(bytes_t *m, const void *p, size_t n)
{
    if (m->len + n > m->cap) {
        size_t cap = m->cap * 2 > m->len + n ? m->cap * 2 : m->len + n + 64;
        m->p = realloc(m->p, cap);
        WT_ASSERT(m->p != NULL);
        m->cap = cap;
    }
    if (n)
        memcpy(m->p + m->len, p, n);
    m->len += n;
}

static void bytes_pop_front(bytes_t *m, size_t n)
{
    n = n < m->len ? n : m->len;
    if (n == 0)
        return;
    memmove(m->p, m->p + n, m->len - n);
    m->len -= n;
}

static void bytes_free(bytes_t *m)
{
    free(m->p);
    memset(m, 0, sizeof(*m));
}

/* The bytes of b must be exactly want[0..n), segment by segment. */
static void expect_bytes(const weft_iobuf_t *b, const void *want, size_t n)
{
    WT_EQ(weft__iobuf_check(b), 0);
    WT_EQ(weft_iobuf_length(b), n);
    size_t off = 0;
    for (size_t i = 0; i < weft_iobuf_segments(b); i++) {
        size_t len;
        const void *p = weft_iobuf_segment(b, i, &len);
        WT_GT(len, 0);
        WT_LE(off + len, n);
        WT_ASSERT_MSG(memcmp(p, (const char *)want + off, len) == 0,
                      "bytes differ in segment %zu at offset %zu", i, off);
        off += len;
    }
    WT_EQ(off, n);
}

/* External memory that records its deleter calls: the deleter scribbles on
 * the bytes, so a call while a reference remains shows up as wrong bytes. */
typedef struct {
    int calls;
    size_t n;
    unsigned char data[];
} ext_piece_t;

static ext_piece_t *ext_new(const void *src, size_t n)
{
    ext_piece_t *e = malloc(sizeof(*e) + n);
    WT_ASSERT(e != NULL);
    e->calls = 0;
    e->n = n;
    memcpy(e->data, src, n);
    return e;
}

static void ext_deleter(void *data, void *arg)
{
    ext_piece_t *e = arg;
    WT_ASSERT(data == (void *)e->data);
    WT_EQ(__atomic_fetch_add(&e->calls, 1, __ATOMIC_RELAXED), 0);
    memset(e->data, 0xdd, e->n);
}

/* ---- the model test ---------------------------------------------------- */

#define MODEL_NBUF 4
#define MODEL_MAX (64 * 1024) /* a buffer longer than this is cleared */
#define MODEL_MAX_EXT 4096

typedef struct {
    weft_iobuf_t buf[MODEL_NBUF];
    bytes_t model[MODEL_NBUF];
    uint32_t (*next)(void *src); /* where the choices come from */
    void *src;
    int fds[2];                  /* a non-blocking pipe */
    ext_piece_t **ext;           /* every external piece, to check at the end */
    size_t next_ext;
    unsigned char *scratch;      /* 2 * MODEL_MAX + 16 bytes */
} model_t;

enum {
    OP_APPEND, OP_APPEND_BUF, OP_EXTERNAL, OP_APPENDF, OP_CUTN, OP_POP_FRONT,
    OP_POP_BACK, OP_SWAP, OP_MOVE, OP_CLEAR, OP_COPY_OUT, OP_FETCH, OP_FIND,
    OP_EQUALS, OP_FD, OP_COUNT
};

/* How often each operation comes up, out of the sum. */
static const uint8_t op_weight[OP_COUNT] = {
    [OP_APPEND] = 12, [OP_APPEND_BUF] = 4, [OP_EXTERNAL] = 3, [OP_APPENDF] = 3,
    [OP_CUTN] = 10, [OP_POP_FRONT] = 4, [OP_POP_BACK] = 4, [OP_SWAP] = 1,
    [OP_MOVE] = 1, [OP_CLEAR] = 1, [OP_COPY_OUT] = 3, [OP_FETCH] = 3,
    [OP_FIND] = 3, [OP_EQUALS] = 2, [OP_FD] = 2,
};

static void model_init(model_t *m, uint32_t (*next)(void *), void *src)
{
    memset(m, 0, sizeof(*m));
    m->next = next;
    m->src = src;
    WT_EQ(pipe2(m->fds, O_NONBLOCK | O_CLOEXEC), 0);
    m->ext = calloc(MODEL_MAX_EXT, sizeof(*m->ext));
    m->scratch = malloc(2 * MODEL_MAX + 16);
    WT_ASSERT(m->ext && m->scratch);
}

/* A size: mostly small, sometimes across blocks, now and then large. */
static size_t model_size(model_t *m)
{
    uint32_t r = m->next(m->src);
    switch (r % 16) {
    case 0: case 1: case 2: case 3: case 4: case 5: case 6: case 7: case 8: case 9:
        return (r >> 4) % 48;
    case 10: case 11: case 12: case 13:
        return (r >> 4) % 9000;
    default:
        return (r >> 4) % 40000;
    }
}

static void model_append_bytes(model_t *m, int i, size_t n)
{
    unsigned char *tmp = m->scratch;
    fill_random(tmp, n, m->next(m->src));
    WT_EQ(weft_iobuf_append(&m->buf[i], tmp, n), 0);
    bytes_append(&m->model[i], tmp, n);
}

static void model_external(model_t *m, int i, size_t n)
{
    if (m->next_ext == MODEL_MAX_EXT || n == 0) {
        model_append_bytes(m, i, n);
        return;
    }
    fill_random(m->scratch, n, m->next(m->src));
    ext_piece_t *e = ext_new(m->scratch, n);
    m->ext[m->next_ext++] = e;
    WT_EQ(weft_iobuf_append_external(&m->buf[i], e->data, n, ext_deleter, e), 0);
    bytes_append(&m->model[i], e->data, n);
}

static void model_appendf(model_t *m, int i, size_t n)
{
    char *text = (char *)m->scratch, *want = text + MODEL_MAX;
    uint64_t s = m->next(m->src) + 1;
    n = n < MODEL_MAX - 64 ? n : MODEL_MAX - 64;
    for (size_t k = 0; k < n; k++)
        text[k] = (char)('a' + rng_next(&s) % 26);
    unsigned v = m->next(m->src);
    int len = snprintf(want, MODEL_MAX, "%u:%.*s|", v, (int)n, text);
    WT_EQ(weft_iobuf_appendf(&m->buf[i], "%u:%.*s|", v, (int)n, text), len);
    bytes_append(&m->model[i], want, (size_t)len);
}

static void model_cutn(model_t *m, int dst, int src, size_t n)
{
    bytes_t *d = &m->model[dst], *s = &m->model[src];
    size_t k = n < s->len ? n : s->len;
    WT_EQ(weft_iobuf_cutn(&m->buf[dst], &m->buf[src], n), k);
    if (k)
        memcpy(m->scratch, s->p, k);
    bytes_pop_front(s, k);
    bytes_append(d, m->scratch, k);
}

static void model_append_buf(model_t *m, int dst, int src)
{
    bytes_t *s = &m->model[src];
    size_t k = s->len;
    WT_EQ(weft_iobuf_append_buf(&m->buf[dst], &m->buf[src]), 0);
    if (k)
        memcpy(m->scratch, s->p, k);
    bytes_append(&m->model[dst], m->scratch, k);
}

static void model_copy_out(model_t *m, int i)
{
    bytes_t *x = &m->model[i];
    size_t off = model_size(m) % (x->len + 3), n = model_size(m);
    size_t want = off >= x->len ? 0 : (n < x->len - off ? n : x->len - off);
    WT_EQ(weft_iobuf_copy_out(&m->buf[i], off, m->scratch, n), want);
    WT_ASSERT(want == 0 || memcmp(m->scratch, x->p + off, want) == 0);
}

static void model_fetch(model_t *m, int i)
{
    bytes_t *x = &m->model[i];
    size_t n = model_size(m) % (x->len + 2);
    const unsigned char *p = weft_iobuf_fetch(&m->buf[i], m->scratch, n);
    if (n > x->len) {
        WT_ASSERT(p == NULL);
        return;
    }
    WT_ASSERT(p != NULL);
    WT_ASSERT(n == 0 || memcmp(p, x->p, n) == 0);
    size_t len0 = 0;
    const void *seg0 = weft_iobuf_segment(&m->buf[i], 0, &len0);
    if (n > 0 && n <= len0)
        WT_ASSERT(p == seg0); /* in place when it can be */
}

static ssize_t naive_find(const bytes_t *x, const unsigned char *needle, size_t n, size_t from)
{
    if (from > x->len || n > x->len - from)
        return -ENOENT;
    if (n == 0)
        return (ssize_t)from;
    for (size_t pos = from; pos + n <= x->len; pos++)
        if (memcmp(x->p + pos, needle, n) == 0)
            return (ssize_t)pos;
    return -ENOENT;
}

static void model_find(model_t *m, int i)
{
    bytes_t *x = &m->model[i];
    unsigned char needle[12];
    uint32_t r = m->next(m->src);
    size_t n = r % 6;
    if (x->len > 0 && (r & 64)) {
        /* A piece of the content, so that it is found; maybe cross-block. */
        size_t at = (r >> 8) % x->len;
        n = n < x->len - at ? n : x->len - at;
        memcpy(needle, x->p + at, n);
    } else {
        for (size_t k = 0; k < n; k++)
            needle[k] = (unsigned char)(m->next(m->src) % 4); /* small alphabet */
    }
    size_t from = x->len ? m->next(m->src) % (x->len + 2) : 0;
    if (r & 128)
        from = 0;
    WT_EQ(weft_iobuf_find(&m->buf[i], needle, n, from), naive_find(x, needle, n, from));
}

static void model_equals(model_t *m, int i)
{
    bytes_t *x = &m->model[i];
    WT_ASSERT(weft_iobuf_equals(&m->buf[i], x->p, x->len));
    if (x->len == 0) {
        WT_ASSERT(!weft_iobuf_equals(&m->buf[i], "x", 1));
        return;
    }
    WT_ASSERT(!weft_iobuf_equals(&m->buf[i], x->p, x->len - 1));
    size_t at = m->next(m->src) % x->len;
    memcpy(m->scratch, x->p, x->len);
    m->scratch[at] ^= 0x40;
    WT_ASSERT(!weft_iobuf_equals(&m->buf[i], m->scratch, x->len));
}

/* Writes buffer src into the pipe and reads it back into dst, in chunks as
 * the pipe allows. */
static void model_fd(model_t *m, int dst, int src)
{
    weft_iobuf_t got = WEFT_IOBUF_INIT;
    weft_iobuf_t *s = &m->buf[src];
    size_t total = weft_iobuf_length(s);
    while (weft_iobuf_length(&got) < total) {
        ssize_t w = weft_iobuf_write_fd(s, m->fds[1]);
        WT_ASSERT_MSG(w >= 0 || w == -EAGAIN, "write_fd: %zd", w);
        for (;;) {
            ssize_t r = weft_iobuf_read_fd(&got, m->fds[0], 1 + model_size(m) * 4);
            if (r == -EAGAIN)
                break;
            WT_GT(r, 0);
        }
    }
    WT_ASSERT(weft_iobuf_empty(s));
    WT_EQ(weft_iobuf_length(&got), total);
    WT_EQ(weft_iobuf_cutn(&m->buf[dst], &got, total), total);
    weft_iobuf_clear(&got);
    bytes_t *x = &m->model[src];
    if (total)
        memcpy(m->scratch, x->p, total);
    x->len = 0;
    bytes_append(&m->model[dst], m->scratch, total);
}

static void model_verify(model_t *m, int i)
{
    expect_bytes(&m->buf[i], m->model[i].p, m->model[i].len);
}

static int model_pick_op(model_t *m)
{
    static int sum;
    if (!sum)
        for (int k = 0; k < OP_COUNT; k++)
            sum += op_weight[k];
    int r = (int)(m->next(m->src) % (uint32_t)sum);
    int op = 0;
    while (r >= op_weight[op])
        r -= op_weight[op++];
    return op;
}

static void model_step(model_t *m)
{
    int op = model_pick_op(m);
    uint32_t r = m->next(m->src);
    int i = (int)(r % MODEL_NBUF), j = (int)((r >> 8) % MODEL_NBUF);
    weft_iobuf_t *b = &m->buf[i];
    bytes_t *x = &m->model[i];
    switch (op) {
    case OP_APPEND:
        model_append_bytes(m, i, model_size(m));
        break;
    case OP_APPEND_BUF:
        model_append_buf(m, i, j);
        break;
    case OP_EXTERNAL:
        model_external(m, i, model_size(m));
        break;
    case OP_APPENDF:
        model_appendf(m, i, model_size(m));
        break;
    case OP_CUTN:
        model_cutn(m, i, j, model_size(m));
        break;
    case OP_POP_FRONT: {
        size_t n = model_size(m), k = n < x->len ? n : x->len;
        WT_EQ(weft_iobuf_pop_front(b, n), k);
        bytes_pop_front(x, k);
        break;
    }
    case OP_POP_BACK: {
        size_t n = model_size(m), k = n < x->len ? n : x->len;
        WT_EQ(weft_iobuf_pop_back(b, n), k);
        x->len -= k;
        break;
    }
    case OP_SWAP: {
        weft_iobuf_swap(b, &m->buf[j]);
        bytes_t t = *x;
        *x = m->model[j];
        m->model[j] = t;
        break;
    }
    case OP_MOVE:
        weft_iobuf_move(b, &m->buf[j]);
        if (i != j) {
            bytes_free(x);
            *x = m->model[j];
            memset(&m->model[j], 0, sizeof(bytes_t));
        }
        break;
    case OP_CLEAR:
        weft_iobuf_clear(b);
        x->len = 0;
        break;
    case OP_COPY_OUT:
        model_copy_out(m, i);
        break;
    case OP_FETCH:
        model_fetch(m, i);
        break;
    case OP_FIND:
        model_find(m, i);
        break;
    case OP_EQUALS:
        model_equals(m, i);
        break;
    case OP_FD:
        model_fd(m, i, j);
        break;
    }
    for (int k = 0; k < MODEL_NBUF; k++) {
        if (m->model[k].len > MODEL_MAX) {
            weft_iobuf_clear(&m->buf[k]);
            m->model[k].len = 0;
        }
    }
    model_verify(m, i);
    model_verify(m, j);
}

/* Clears everything; every external piece must have been deleted once. */
static void model_fini(model_t *m)
{
    for (int k = 0; k < MODEL_NBUF; k++) {
        model_verify(m, k);
        weft_iobuf_clear(&m->buf[k]);
        bytes_free(&m->model[k]);
    }
    for (size_t k = 0; k < m->next_ext; k++) {
        WT_EQ(m->ext[k]->calls, 1);
        free(m->ext[k]);
    }
    free(m->ext);
    free(m->scratch);
    close(m->fds[0]);
    close(m->fds[1]);
}

#ifndef WT_IOBUF_MODEL_ONLY

#include "fiber/fiber.h"
#include "test_iobuf.pb-c.h"

/* Appends data in pieces of 1..maxpiece bytes that do not merge into one
 * reference (a byte appended to `junk` in between moves the share block's
 * frontier), so the buffer is fragmented. */
static void append_fragmented(weft_iobuf_t *b, const void *data, size_t n,
                              size_t maxpiece, uint64_t *rng)
{
    weft_iobuf_t junk = WEFT_IOBUF_INIT;
    const char *p = data;
    while (n > 0) {
        size_t k = 1 + rng_next(rng) % maxpiece;
        k = k < n ? k : n;
        WT_EQ(weft_iobuf_append(&junk, "j", 1), 0);
        WT_EQ(weft_iobuf_append(b, p, k), 0);
        p += k;
        n -= k;
    }
    weft_iobuf_clear(&junk);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Blocks in use (not cached) by this process, with this thread's flushed. */
static int64_t blocks_in_use(void)
{
    weft__iobuf_thread_flush();
    weft_iobuf_stats_t st;
    weft_iobuf_stats(&st);
    return st.blocks - st.blocks_cached;
}

static uint32_t rng_source(void *arg)
{
    return (uint32_t)(rng_next(arg) >> 17);
}

/* ---- unit tests -------------------------------------------------------- */

static void count_deleter(void *data, void *arg)
{
    (void)data;
    __atomic_fetch_add((int *)arg, 1, __ATOMIC_RELAXED);
}

static void test_empty(void)
{
    weft_iobuf_t b = WEFT_IOBUF_INIT, c;
    weft_iobuf_init(&c);
    char out[8];
    struct iovec iov[2];
    WT_EQ(weft__iobuf_check(&b), 0);
    WT_ASSERT(weft_iobuf_empty(&b));
    WT_EQ(weft_iobuf_pop_front(&b, 10), 0);
    WT_EQ(weft_iobuf_pop_back(&b, 10), 0);
    WT_EQ(weft_iobuf_cutn(&c, &b, 5), 0);
    WT_EQ(weft_iobuf_cutn(&b, &b, 5), 0);
    WT_EQ(weft_iobuf_copy_out(&b, 0, out, 8), 0);
    WT_ASSERT(weft_iobuf_fetch(&b, out, 0) == out);
    WT_ASSERT(weft_iobuf_fetch(&b, out, 1) == NULL);
    WT_ASSERT(weft_iobuf_equals(&b, "", 0));
    WT_ASSERT(!weft_iobuf_equals(&b, "a", 1));
    WT_EQ(weft_iobuf_find(&b, "", 0, 0), 0);
    WT_EQ(weft_iobuf_find(&b, "", 0, 1), -ENOENT);
    WT_EQ(weft_iobuf_find(&b, "a", 1, 0), -ENOENT);
    WT_EQ(weft_iobuf_segments(&b), 0);
    size_t len = 99;
    WT_ASSERT(weft_iobuf_segment(&b, 0, &len) == NULL && len == 0);
    WT_EQ(weft_iobuf_fill_iov(&b, iov, 2), 0);
    WT_EQ(weft_iobuf_append(&b, NULL, 0), 0);
    WT_EQ(weft_iobuf_appendf(&b, "%s", ""), 0);
    WT_EQ(weft_iobuf_append_buf(&b, &c), 0);
    WT_EQ(weft_iobuf_append_buf(&b, &b), 0);
    WT_EQ(weft_iobuf_segments(&b), 0);
    int calls = 0;
    WT_EQ(weft_iobuf_append_external(&b, out, 0, count_deleter, &calls), 0);
    WT_EQ(calls, 1); /* nothing refers to it: deleted at once */
    WT_EQ(weft_iobuf_append_external(&b, out, (size_t)UINT32_MAX + 1, count_deleter, &calls),
          -EINVAL);
    WT_EQ(calls, 1);
    int p[2];
    WT_EQ(pipe2(p, O_NONBLOCK), 0);
    WT_EQ(weft_iobuf_write_fd(&b, p[1]), 0);
    WT_EQ(weft_iobuf_read_fd(&b, p[0], 100), -EAGAIN);
    WT_EQ(weft_iobuf_read_fd(&b, p[0], 0), -EINVAL);
    close(p[1]);
    WT_EQ(weft_iobuf_read_fd(&b, p[0], 100), 0); /* end of file */
    close(p[0]);
    WT_EQ(weft_iobuf_read_fd(&b, -1, 100), -EBADF);
    WT_EQ(weft_iobuf_write_fd(&b, -1), 0); /* nothing to write, no syscall */
    weft_iobuf_move(&b, &c);
    weft_iobuf_swap(&b, &c);
    weft_iobuf_clear(&b);
    weft_iobuf_clear(&b);
    WT_ASSERT(weft_iobuf_empty(&b) && weft_iobuf_empty(&c));
    WT_EQ(weft__iobuf_check(&b), 0);
}

static void test_small_appends(void)
{
    /* Many tiny appends to one buffer extend one reference per block. */
    weft_iobuf_t b = WEFT_IOBUF_INIT;
    bytes_t want = {0};
    for (int i = 0; i < 3000; i++) {
        char piece[8];
        int n = snprintf(piece, sizeof(piece), "%d,", i);
        WT_EQ(weft_iobuf_append(&b, piece, (size_t)n), 0);
        bytes_append(&want, piece, (size_t)n);
    }
    expect_bytes(&b, want.p, want.len);
    WT_LE(weft_iobuf_segments(&b), want.len / (WEFT_IOBUF_BLOCK_SIZE - 64) + 2);

    /* Small messages from many buffers share blocks. */
    int64_t before = blocks_in_use();
    enum { NMSG = 1000 };
    static weft_iobuf_t msgs[NMSG];
    for (int i = 0; i < NMSG; i++) {
        WT_EQ(weft_iobuf_appendf(&msgs[i], "message %05d.......", i), 20);
        WT_EQ(weft_iobuf_segments(&msgs[i]), 1);
    }
    int64_t used = blocks_in_use() - before;
    WT_LE(used, NMSG * 20 / (WEFT_IOBUF_BLOCK_SIZE - 64) + 2);
    for (int i = 0; i < NMSG; i++) {
        char s[32];
        snprintf(s, sizeof(s), "message %05d.......", i);
        WT_ASSERT(weft_iobuf_equals(&msgs[i], s, 20));
        weft_iobuf_clear(&msgs[i]);
    }
    WT_EQ(blocks_in_use(), before);
    weft_iobuf_clear(&b);
    bytes_free(&want);
}

static void test_large_appends(void)
{
    uint64_t rng = 7;
    size_t n = 3 * WEFT_IOBUF_BLOCK_SIZE + 123;
    unsigned char *data = malloc(n), *out = malloc(n);
    fill_random(data, n, 1);
    weft_iobuf_t b = WEFT_IOBUF_INIT;
    WT_EQ(weft_iobuf_append(&b, data, n), 0);
    expect_bytes(&b, data, n);
    WT_GE(weft_iobuf_segments(&b), 4);

    /* fetch: in place within the first segment, copied across. */
    size_t len0;
    const void *seg0 = weft_iobuf_segment(&b, 0, &len0);
    WT_ASSERT(weft_iobuf_fetch(&b, out, len0) == seg0);
    WT_ASSERT(weft_iobuf_fetch(&b, out, len0 + 1) == out);
    WT_ASSERT(memcmp(out, data, len0 + 1) == 0);
    WT_ASSERT(weft_iobuf_fetch(&b, out, n + 1) == NULL);

    /* iovecs cover the bytes in order; a short array stops early. */
    struct iovec iov[16];
    size_t k = weft_iobuf_fill_iov(&b, iov, 16), off = 0;
    for (size_t i = 0; i < k; i++) {
        WT_ASSERT(memcmp(iov[i].iov_base, data + off, iov[i].iov_len) == 0);
        off += iov[i].iov_len;
    }
    WT_EQ(off, n);
    WT_EQ(weft_iobuf_fill_iov(&b, iov, 2), 2);

    /* copy_out from every kind of offset. */
    for (int t = 0; t < 200; t++) {
        size_t at = rng_next(&rng) % (n + 5), len = rng_next(&rng) % 20000;
        size_t want = at >= n ? 0 : (len < n - at ? len : n - at);
        WT_EQ(weft_iobuf_copy_out(&b, at, out, len), want);
        WT_ASSERT(want == 0 || memcmp(out, data + at, want) == 0);
    }

    /* Appending a buffer to itself, and fragmenting. */
    WT_EQ(weft_iobuf_append_buf(&b, &b), 0);
    WT_EQ(weft_iobuf_length(&b), 2 * n);
    WT_EQ(weft_iobuf_copy_out(&b, n, out, n), n);
    WT_ASSERT(memcmp(out, data, n) == 0);
    weft_iobuf_clear(&b);
    append_fragmented(&b, data, n, 50, &rng);
    expect_bytes(&b, data, n);
    WT_GT(weft_iobuf_segments(&b), n / 50);
    weft_iobuf_clear(&b);
    free(data);
    free(out);
}

static void test_cut_pop(void)
{
    uint64_t rng = 11;
    size_t n = 50000;
    unsigned char *data = malloc(n);
    fill_random(data, n, 2);
    for (int round = 0; round < 50; round++) {
        weft_iobuf_t a = WEFT_IOBUF_INIT, c = WEFT_IOBUF_INIT;
        if (round & 1)
            append_fragmented(&a, data, n, 3000, &rng);
        else
            WT_EQ(weft_iobuf_append(&a, data, n), 0);
        /* cut in random pieces, across block boundaries */
        size_t done = 0;
        while (done < n) {
            size_t k = rng_next(&rng) % 12000;
            size_t got = (size_t)weft_iobuf_cutn(&c, &a, k);
            WT_EQ(got, k < n - done ? k : n - done);
            done += got;
            expect_bytes(&c, data, done);
            expect_bytes(&a, data + done, n - done);
        }
        WT_EQ(weft_iobuf_cutn(&a, &c, n + 1000), n); /* more than there is */
        expect_bytes(&a, data, n);
        WT_ASSERT(weft_iobuf_empty(&c));
        /* pop exactly one segment, then across segments, from both ends */
        size_t len0;
        weft_iobuf_segment(&a, 0, &len0);
        WT_EQ(weft_iobuf_pop_front(&a, len0), len0);
        size_t front = len0, back = 0;
        for (int t = 0; t < 10; t++) {
            size_t kf = rng_next(&rng) % 5000, kb = rng_next(&rng) % 5000;
            size_t left = n - front - back;
            size_t pf = weft_iobuf_pop_front(&a, kf);
            WT_EQ(pf, kf < left ? kf : left);
            front += pf;
            left -= pf;
            size_t pb = weft_iobuf_pop_back(&a, kb);
            WT_EQ(pb, kb < left ? kb : left);
            back += pb;
            expect_bytes(&a, data + front, n - front - back);
        }
        /* rotate: cut the front onto the back of the same buffer */
        size_t left = weft_iobuf_length(&a), k = left / 3;
        WT_EQ(weft_iobuf_cutn(&a, &a, k), k);
        unsigned char *rot = malloc(left + 1);
        memcpy(rot, data + front + k, left - k);
        memcpy(rot + left - k, data + front, k);
        expect_bytes(&a, rot, left);
        free(rot);
        WT_EQ(weft_iobuf_pop_back(&a, n), left);
        WT_ASSERT(weft_iobuf_empty(&a));
        weft_iobuf_clear(&a);
        weft_iobuf_clear(&c);
    }
    free(data);
}

static void test_find(void)
{
    uint64_t rng = 3;
    const char *needle = "\r\n\r\n";
    char text[64];
    /* The needle at every position, in pieces of 1..3 bytes. */
    for (size_t pos = 0; pos + 4 <= sizeof(text); pos++) {
        memset(text, 'a', sizeof(text));
        text[pos / 2] = '\r'; /* a decoy that does not match */
        memcpy(text + pos, needle, 4);
        weft_iobuf_t b = WEFT_IOBUF_INIT;
        append_fragmented(&b, text, sizeof(text), 3, &rng);
        WT_EQ(weft_iobuf_find(&b, needle, 4, 0), pos);
        WT_EQ(weft_iobuf_find(&b, needle, 4, pos), pos);
        WT_EQ(weft_iobuf_find(&b, needle, 4, pos + 1), -ENOENT);
        WT_EQ(weft_iobuf_find(&b, "\r\n", 2, pos + 2), pos + 2);
        bytes_t flat = {(unsigned char *)text, sizeof(text), sizeof(text)};
        WT_EQ(weft_iobuf_find(&b, "aaa", 3, 0), naive_find(&flat, (const unsigned char *)"aaa", 3, 0));
        WT_EQ(weft_iobuf_find(&b, "\r", 1, 0), naive_find(&flat, (const unsigned char *)"\r", 1, 0));
        WT_EQ(weft_iobuf_find(&b, needle, 4, sizeof(text) + 1), -ENOENT);
        WT_EQ(weft_iobuf_find(&b, "", 0, sizeof(text)), sizeof(text));
        weft_iobuf_clear(&b);
    }
    /* Longer needle than the buffer. */
    weft_iobuf_t b = WEFT_IOBUF_INIT;
    WT_EQ(weft_iobuf_append(&b, "abc", 3), 0);
    WT_EQ(weft_iobuf_find(&b, "abcd", 4, 0), -ENOENT);
    WT_EQ(weft_iobuf_find(&b, "abc", 3, 0), 0);
    WT_EQ(weft_iobuf_find(&b, "c", 1, 2), 2);
    weft_iobuf_clear(&b);
}

static weft_iobuf_t reentrant_sink;

static void reentrant_deleter(void *data, void *arg)
{
    /* A deleter may use IOBufs itself. */
    WT_EQ(weft_iobuf_append(&reentrant_sink, data, 5), 0);
    count_deleter(data, arg);
}

static void *release_thread(void *arg)
{
    weft_iobuf_clear(arg);
    return NULL;
}

static void test_external(void)
{
    static char data[1000];
    memset(data, 'e', sizeof(data));
    int calls = 0;
    weft_iobuf_stats_t st0, st;
    weft_iobuf_stats(&st0);
    weft_iobuf_t a = WEFT_IOBUF_INIT, b = WEFT_IOBUF_INIT, c = WEFT_IOBUF_INIT;
    WT_EQ(weft_iobuf_append(&a, "head", 4), 0);
    WT_EQ(weft_iobuf_append_external(&a, data, sizeof(data), count_deleter, &calls), 0);
    WT_EQ(weft_iobuf_append(&a, "tail", 4), 0);
    weft_iobuf_stats(&st);
    WT_EQ(st.external, st0.external + 1);
    WT_EQ(weft_iobuf_append_buf(&b, &a), 0); /* b holds a reference */
    WT_EQ(weft_iobuf_cutn(&c, &a, 500), 500); /* c holds one, a too (split) */
    weft_iobuf_clear(&a);
    WT_EQ(calls, 0);
    weft_iobuf_clear(&c);
    WT_EQ(calls, 0);
    WT_EQ(weft_iobuf_pop_front(&b, 4 + 999), 1003); /* one byte left */
    WT_EQ(calls, 0);
    WT_ASSERT(weft_iobuf_equals(&b, "etail", 5));
    WT_EQ(weft_iobuf_pop_back(&b, 4), 4);
    WT_EQ(calls, 0);
    weft_iobuf_clear(&b);
    WT_EQ(calls, 1);
    weft_iobuf_stats(&st);
    WT_EQ(st.external, st0.external);

    /* The last reference dropped on another thread. */
    WT_EQ(weft_iobuf_append_external(&a, data, 10, count_deleter, &calls), 0);
    WT_EQ(weft_iobuf_append_buf(&b, &a), 0);
    weft_iobuf_clear(&a);
    pthread_t th;
    WT_EQ(pthread_create(&th, NULL, release_thread, &b), 0);
    WT_EQ(pthread_join(th, NULL), 0);
    WT_EQ(calls, 2);
    WT_ASSERT(weft_iobuf_empty(&b));

    /* A deleter that appends to another buffer; NULL deleter. */
    WT_EQ(weft_iobuf_append_external(&a, data, 100, reentrant_deleter, &calls), 0);
    WT_EQ(weft_iobuf_append_external(&a, (void *)"static", 6, NULL, NULL), 0);
    WT_ASSERT(weft_iobuf_equals(&a, NULL, 0) == false);
    WT_EQ(weft_iobuf_length(&a), 106);
    weft_iobuf_clear(&a);
    WT_EQ(calls, 3);
    WT_ASSERT(weft_iobuf_equals(&reentrant_sink, "eeeee", 5));
    weft_iobuf_clear(&reentrant_sink);
    weft_iobuf_stats(&st);
    WT_EQ(st.external, st0.external);
}

static void test_appendf(void)
{
    weft_iobuf_t b = WEFT_IOBUF_INIT;
    bytes_t want = {0};
    char line[64];
    for (int i = 0; i < 2000; i++) {
        int n = snprintf(line, sizeof(line), "%d %s %.3f\n", i, "x", i / 7.0);
        WT_EQ(weft_iobuf_appendf(&b, "%d %s %.3f\n", i, "x", i / 7.0), n);
        bytes_append(&want, line, (size_t)n);
    }
    expect_bytes(&b, want.p, want.len);
    /* Texts about a block long, and longer than a block. */
    size_t sizes[] = {WEFT_IOBUF_BLOCK_SIZE - 100, WEFT_IOBUF_BLOCK_SIZE, 3 * WEFT_IOBUF_BLOCK_SIZE};
    for (size_t s = 0; s < 3; s++) {
        char *text = malloc(sizes[s] + 1);
        memset(text, 'a' + (int)s, sizes[s]);
        text[sizes[s]] = 0;
        WT_EQ(weft_iobuf_appendf(&b, "<%s>", text), sizes[s] + 2);
        bytes_append(&want, "<", 1);
        bytes_append(&want, text, sizes[s]);
        bytes_append(&want, ">", 1);
        free(text);
    }
    expect_bytes(&b, want.p, want.len);
    weft_iobuf_clear(&b);
    bytes_free(&want);
}

/* ---- protobuf-c -------------------------------------------------------- */

static void pb_fill(WeftTest__IobufMsg *m, WeftTest__IobufItem *items,
                    WeftTest__IobufItem **item_ptrs, int32_t *numbers, int64_t *deltas,
                    unsigned char *blob, size_t blob_len, int nitems)
{
    weft_test__iobuf_msg__init(m);
    m->seq = 0x123456789abcull;
    m->text = "hello, iobuf";
    m->has_blob = 1;
    m->blob.data = blob;
    m->blob.len = blob_len;
    fill_random(blob, blob_len, blob_len);
    for (int i = 0; i < nitems; i++) {
        weft_test__iobuf_item__init(&items[i]);
        items[i].has_id = 1;
        items[i].id = i * 1000 - 7;
        items[i].name = i % 2 ? "odd" : "even item";
        item_ptrs[i] = &items[i];
        numbers[i] = i * i - 50;
        deltas[i] = (int64_t)i * -123456789;
    }
    m->n_items = (size_t)nitems;
    m->items = item_ptrs;
    m->n_numbers = (size_t)nitems;
    m->numbers = numbers;
    m->n_deltas = (size_t)nitems;
    m->deltas = deltas;
    m->has_value = 1;
    m->value = 3.25;
}

static void pb_check_same(const WeftTest__IobufMsg *a, const WeftTest__IobufMsg *b)
{
    WT_EQ(a->seq, b->seq);
    WT_STREQ(a->text, b->text);
    WT_EQ(a->blob.len, b->blob.len);
    WT_ASSERT(a->blob.len == 0 || memcmp(a->blob.data, b->blob.data, a->blob.len) == 0);
    WT_EQ(a->n_items, b->n_items);
    for (size_t i = 0; i < a->n_items; i++) {
        WT_EQ(a->items[i]->id, b->items[i]->id);
        WT_STREQ(a->items[i]->name, b->items[i]->name);
    }
    WT_EQ(a->n_numbers, b->n_numbers);
    WT_ASSERT(a->n_numbers == 0 ||
              memcmp(a->numbers, b->numbers, a->n_numbers * sizeof(int32_t)) == 0);
    WT_EQ(a->n_deltas, b->n_deltas);
    for (size_t i = 0; i < a->n_deltas; i++)
        WT_EQ(a->deltas[i], b->deltas[i]);
    WT_ASSERT(a->value == b->value);
}

static void test_pb_one(size_t blob_len, int nitems)
{
    uint64_t rng = blob_len + 1;
    WeftTest__IobufMsg m;
    WeftTest__IobufItem items[64], *item_ptrs[64];
    int32_t numbers[64];
    int64_t deltas[64];
    unsigned char *blob = malloc(blob_len + 1);
    pb_fill(&m, items, item_ptrs, numbers, deltas, blob, blob_len, nitems);

    size_t size = weft_test__iobuf_msg__get_packed_size(&m);
    uint8_t *flat = malloc(size);
    WT_EQ(weft_test__iobuf_msg__pack(&m, flat), size);

    /* Through the ProtobufCBuffer adapter, after some other bytes. */
    weft_iobuf_t b = WEFT_IOBUF_INIT;
    WT_EQ(weft_iobuf_append(&b, "pre", 3), 0);
    weft_iobuf_pb_buffer_t pb;
    weft_iobuf_pb_buffer_init(&pb, &b);
    WT_EQ(protobuf_c_message_pack_to_buffer(&m.base, &pb.base), size);
    WT_EQ(pb.error, 0);
    WT_EQ(weft_iobuf_pop_front(&b, 3), 3);
    WT_ASSERT(weft_iobuf_equals(&b, flat, size));
    weft_iobuf_clear(&b);

    /* Through append_pb (in place when it fits a block). */
    WT_EQ(weft_iobuf_append(&b, "pre", 3), 0);
    WT_EQ(weft_iobuf_append_pb(&b, &m.base), size);
    WT_EQ(weft_iobuf_pop_front(&b, 3), 3);
    WT_ASSERT(weft_iobuf_equals(&b, flat, size));

    /* Unpack from it, and from a fragmented copy of it. */
    ProtobufCMessage *out = NULL;
    WT_EQ(weft_iobuf_unpack_pb(&b, &weft_test__iobuf_msg__descriptor, NULL, &out), 0);
    pb_check_same(&m, (WeftTest__IobufMsg *)out);
    protobuf_c_message_free_unpacked(out, NULL);
    weft_iobuf_clear(&b);
    append_fragmented(&b, flat, size, 7, &rng);
    WT_GT(weft_iobuf_segments(&b), 1);
    out = NULL;
    WT_EQ(weft_iobuf_unpack_pb(&b, &weft_test__iobuf_msg__descriptor, NULL, &out), 0);
    pb_check_same(&m, (WeftTest__IobufMsg *)out);
    protobuf_c_message_free_unpacked(out, NULL);

    /* Truncated bytes are an error, not a crash. */
    weft_iobuf_pop_back(&b, 1);
    WT_EQ(weft_iobuf_unpack_pb(&b, &weft_test__iobuf_msg__descriptor, NULL, &out), -EBADMSG);
    weft_iobuf_clear(&b);
    free(flat);
    free(blob);
}

static void test_pb(void)
{
    test_pb_one(0, 0);
    test_pb_one(10, 3);
    test_pb_one(5000, 64);                       /* fits a block: packed in place */
    test_pb_one(3 * WEFT_IOBUF_BLOCK_SIZE, 20);  /* adapter path */
    test_pb_one(200 * 1024, 64);

    /* An empty buffer is an empty message, which lacks the required seq. */
    weft_iobuf_t b = WEFT_IOBUF_INIT;
    ProtobufCMessage *out = NULL;
    WT_EQ(weft_iobuf_unpack_pb(&b, &weft_test__iobuf_msg__descriptor, NULL, &out), -EBADMSG);
    WT_EQ(weft_iobuf_unpack_pb(&b, &weft_test__iobuf_item__descriptor, NULL, &out), 0);
    protobuf_c_message_free_unpacked(out, NULL);
    WT_EQ(weft_iobuf_append(&b, "\xff\xff\xff", 3), 0);
    WT_EQ(weft_iobuf_unpack_pb(&b, &weft_test__iobuf_msg__descriptor, NULL, &out), -EBADMSG);
    weft_iobuf_clear(&b);
}

/* ---- file descriptors -------------------------------------------------- */

typedef struct {
    int fd;
    bool nonblocking;
    weft_iobuf_t *bufs[3];
    size_t nbufs;
} writer_arg_t;

static void wait_fd(int fd, short events)
{
    struct pollfd p = {.fd = fd, .events = events};
    WT_GE(poll(&p, 1, 10000), 1);
}

static void *fd_writer(void *arg)
{
    writer_arg_t *w = arg;
    for (;;) {
        size_t left = 0;
        for (size_t j = 0; j < w->nbufs; j++)
            left += weft_iobuf_length(w->bufs[j]);
        if (left == 0)
            break;
        ssize_t rc = w->nbufs == 1 ? weft_iobuf_write_fd(w->bufs[0], w->fd)
                                   : weft_iobuf_write_fd_many(w->fd, w->bufs, w->nbufs);
        if (rc == -EAGAIN && w->nonblocking) {
            wait_fd(w->fd, POLLOUT);
            continue;
        }
        WT_ASSERT_MSG(rc > 0, "write_fd: %zd", rc);
    }
    close(w->fd);
    return NULL;
}

/* Sends `total` bytes made of random pieces (copied, external, formatted)
 * from a writer thread through fds[1] and checks every byte read from
 * fds[0]. */
static void fd_round_trip(int fds[2], size_t total, bool nonblocking, size_t nbufs, uint64_t seed)
{
    uint64_t rng = seed;
    bytes_t want = {0};
    weft_iobuf_t bufs[3] = {WEFT_IOBUF_INIT, WEFT_IOBUF_INIT, WEFT_IOBUF_INIT};
    unsigned char *piece = malloc(70000);
    ext_piece_t *exts[64];
    size_t next_ext = 0;
    for (size_t sum = 0; sum < total;) {
        weft_iobuf_t *b = &bufs[rng_next(&rng) % nbufs];
        size_t k = rng_next(&rng) % 4 ? rng_next(&rng) % 2000 : rng_next(&rng) % 70000;
        fill_random(piece, k, rng_next(&rng));
        if (k && next_ext < 64 && rng_next(&rng) % 8 == 0) {
            ext_piece_t *e = ext_new(piece, k);
            exts[next_ext++] = e;
            WT_EQ(weft_iobuf_append_external(b, e->data, k, ext_deleter, e), 0);
        } else {
            WT_EQ(weft_iobuf_append(b, piece, k), 0);
        }
        sum += k;
    }
    free(piece);
    for (size_t j = 0; j < nbufs; j++) {
        size_t n = weft_iobuf_length(&bufs[j]);
        unsigned char *tmp = malloc(n + 1);
        WT_EQ(weft_iobuf_copy_out(&bufs[j], 0, tmp, n), n);
        bytes_append(&want, tmp, n);
        free(tmp);
    }
    writer_arg_t w = {.fd = fds[1], .nonblocking = nonblocking, .nbufs = nbufs};
    for (size_t j = 0; j < nbufs; j++)
        w.bufs[j] = &bufs[j];
    pthread_t th;
    WT_EQ(pthread_create(&th, NULL, fd_writer, &w), 0);

    weft_iobuf_t got = WEFT_IOBUF_INIT;
    for (;;) {
        size_t max = 1 + rng_next(&rng) % (256 * 1024);
        ssize_t rc = weft_iobuf_read_fd(&got, fds[0], max);
        if (rc == -EAGAIN && nonblocking) {
            wait_fd(fds[0], POLLIN);
            continue;
        }
        WT_GE(rc, 0);
        WT_LE((size_t)rc, max);
        if (rc == 0)
            break;
    }
    WT_EQ(pthread_join(th, NULL), 0);
    close(fds[0]);
    expect_bytes(&got, want.p, want.len);
    weft_iobuf_clear(&got);
    for (size_t j = 0; j < nbufs; j++)
        weft_iobuf_clear(&bufs[j]);
    for (size_t k = 0; k < next_ext; k++) {
        WT_EQ(exts[k]->calls, 1);
        free(exts[k]);
    }
    bytes_free(&want);
}

static void test_fd(void)
{
    size_t total = (size_t)wt_scaled(6 << 20);
    if (total < (1u << 20))
        total = 1u << 20;
    int fds[2];
    WT_EQ(pipe(fds), 0);
    fd_round_trip(fds, total, false, 1, 1);
    WT_EQ(pipe2(fds, O_NONBLOCK), 0);
    fd_round_trip(fds, total, true, 3, 2);
    WT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    fd_round_trip(fds, total, false, 2, 3);
    WT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
    fd_round_trip(fds, total, true, 1, 4);
}

static void test_eagain(void)
{
    /* Fill a non-blocking pipe: the unwritten rest stays in the buffer. */
    int fds[2];
    WT_EQ(pipe2(fds, O_NONBLOCK), 0);
    size_t n = 1 << 20;
    unsigned char *data = malloc(n);
    fill_random(data, n, 9);
    weft_iobuf_t b = WEFT_IOBUF_INIT, got = WEFT_IOBUF_INIT;
    WT_EQ(weft_iobuf_append(&b, data, n), 0);
    size_t written = 0;
    ssize_t rc;
    while ((rc = weft_iobuf_write_fd(&b, fds[1])) > 0)
        written += (size_t)rc;
    WT_EQ(rc, -EAGAIN);
    WT_GT(written, 0);
    expect_bytes(&b, data + written, n - written);
    while ((rc = weft_iobuf_read_fd(&got, fds[0], 1 << 20)) > 0)
        ;
    WT_EQ(rc, -EAGAIN);
    expect_bytes(&got, data, written);
    close(fds[0]);
    WT_EQ(weft_iobuf_write_fd(&b, fds[1]), -EPIPE); /* SIGPIPE is ignored */
    expect_bytes(&b, data + written, n - written);
    close(fds[1]);
    weft_iobuf_clear(&b);
    weft_iobuf_clear(&got);
    free(data);
}

/* ---- the model test, random -------------------------------------------- */

static void test_model(void)
{
    uint64_t seed = 1;
    const char *s = getenv("WEFT_TEST_SEED");
    if (s)
        seed = strtoull(s, NULL, 0);
    long steps = wt_scaled(20000);
    for (int run = 0; run < 4; run++) {
        uint64_t rng = seed + (uint64_t)run * 7919;
        model_t m;
        model_init(&m, rng_source, &rng);
        for (long k = 0; k < steps / 4; k++)
            model_step(&m);
        model_fini(&m);
    }
    WT_NOTE("iobuf model: %ld steps from seed %llu", steps, (unsigned long long)seed);
}

/* ---- threads and fibers ------------------------------------------------ */

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    weft_iobuf_t bufs[64];
    uint64_t seeds[64];
    int head, tail; /* queue of filled buffers */
    bool done;
} handoff_t;

static void make_message(weft_iobuf_t *b, uint64_t seed, const weft_iobuf_t *shared)
{
    unsigned char piece[3000];
    uint64_t rng = seed;
    size_t n = 1 + rng_next(&rng) % sizeof(piece);
    fill_random(piece, n, seed);
    WT_EQ(weft_iobuf_append(b, piece, n), 0);
    WT_EQ(weft_iobuf_append_buf(b, shared), 0);
    WT_GT(weft_iobuf_appendf(b, "#%llu", (unsigned long long)seed), 0);
}

static void check_message(const weft_iobuf_t *b, uint64_t seed, const weft_iobuf_t *shared)
{
    weft_iobuf_t want = WEFT_IOBUF_INIT;
    make_message(&want, seed, shared);
    size_t n = weft_iobuf_length(&want);
    unsigned char *w = malloc(n);
    weft_iobuf_copy_out(&want, 0, w, n);
    expect_bytes(b, w, n);
    free(w);
    weft_iobuf_clear(&want);
}

static weft_iobuf_t shared_part;

static void *consumer(void *arg)
{
    handoff_t *h = arg;
    pthread_mutex_lock(&h->lock);
    for (;;) {
        while (h->head == h->tail && !h->done)
            pthread_cond_wait(&h->cond, &h->lock);
        if (h->head == h->tail)
            break;
        int slot = h->head % 64;
        weft_iobuf_t b = WEFT_IOBUF_INIT;
        weft_iobuf_move(&b, &h->bufs[slot]);
        uint64_t seed = h->seeds[slot];
        h->head++;
        pthread_cond_broadcast(&h->cond);
        pthread_mutex_unlock(&h->lock);
        check_message(&b, seed, &shared_part);
        weft_iobuf_clear(&b); /* blocks allocated by the producer */
        pthread_mutex_lock(&h->lock);
    }
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

static void test_cross_thread(void)
{
    int64_t before = blocks_in_use();
    int calls = 0;
    static char ext[5000];
    memset(ext, 'x', sizeof(ext));
    WT_EQ(weft_iobuf_append(&shared_part, "shared:", 7), 0);
    WT_EQ(weft_iobuf_append_external(&shared_part, ext, sizeof(ext), count_deleter, &calls), 0);
    handoff_t h = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    pthread_t th;
    WT_EQ(pthread_create(&th, NULL, consumer, &h), 0);
    long n = wt_scaled(20000);
    for (long i = 0; i < n; i++) {
        weft_iobuf_t b = WEFT_IOBUF_INIT;
        make_message(&b, (uint64_t)i + 1, &shared_part);
        pthread_mutex_lock(&h.lock);
        while (h.tail - h.head == 64)
            pthread_cond_wait(&h.cond, &h.lock);
        weft_iobuf_move(&h.bufs[h.tail % 64], &b);
        h.seeds[h.tail % 64] = (uint64_t)i + 1;
        h.tail++;
        pthread_cond_broadcast(&h.cond);
        pthread_mutex_unlock(&h.lock);
    }
    pthread_mutex_lock(&h.lock);
    h.done = true;
    pthread_cond_broadcast(&h.cond);
    pthread_mutex_unlock(&h.lock);
    WT_EQ(pthread_join(th, NULL), 0);
    WT_EQ(calls, 0);
    weft_iobuf_clear(&shared_part);
    WT_EQ(calls, 1);
    /* The consumer's exit gave its cache back: nothing is left in use. */
    WT_EQ(blocks_in_use(), before);
}

/* Several threads share a read-only buffer, build messages on it, trade them
 * through mailboxes and release what they get: refcounts of shared blocks
 * change on all threads at once, and blocks die far from home. */
#define STRESS_SLOTS 8

typedef struct {
    pthread_mutex_t lock;
    weft_iobuf_t buf;
    uint64_t seed;
} mailbox_t;

static mailbox_t mailboxes[STRESS_SLOTS];
static weft_iobuf_t stress_template;

static void *stress_thread(void *arg)
{
    uint64_t rng = (uintptr_t)arg * 977 + 5;
    long iters = wt_scaled(30000);
    for (long i = 0; i < iters; i++) {
        uint64_t seed = rng_next(&rng) | 1;
        weft_iobuf_t mine = WEFT_IOBUF_INIT, head = WEFT_IOBUF_INIT;
        make_message(&mine, seed, &stress_template);
        /* Cut and glue back: the bytes must come out the same. */
        size_t k = rng_next(&rng) % (weft_iobuf_length(&mine) + 1);
        WT_EQ(weft_iobuf_cutn(&head, &mine, k), k);
        WT_EQ(weft_iobuf_append_buf(&head, &mine), 0);
        weft_iobuf_clear(&mine);
        mailbox_t *mb = &mailboxes[rng_next(&rng) % STRESS_SLOTS];
        pthread_mutex_lock(&mb->lock);
        weft_iobuf_swap(&mb->buf, &head);
        uint64_t got = mb->seed;
        mb->seed = seed;
        pthread_mutex_unlock(&mb->lock);
        if (got)
            check_message(&head, got, &stress_template);
        weft_iobuf_clear(&head);
    }
    return NULL;
}

static void test_stress(void)
{
    int64_t before = blocks_in_use();
    int calls = 0;
    static char ext[300];
    memset(ext, 'T', sizeof(ext));
    uint64_t rng = 99;
    unsigned char tmp[20000];
    fill_random(tmp, sizeof(tmp), 4);
    append_fragmented(&stress_template, tmp, sizeof(tmp), 4000, &rng);
    WT_EQ(weft_iobuf_append_external(&stress_template, ext, sizeof(ext), count_deleter, &calls), 0);
    for (int i = 0; i < STRESS_SLOTS; i++)
        pthread_mutex_init(&mailboxes[i].lock, NULL);
    enum { NTHREADS = 4 };
    pthread_t th[NTHREADS];
    double t0 = now_s();
    for (uintptr_t i = 0; i < NTHREADS; i++)
        WT_EQ(pthread_create(&th[i], NULL, stress_thread, (void *)i), 0);
    for (int i = 0; i < NTHREADS; i++)
        WT_EQ(pthread_join(th[i], NULL), 0);
    double dt = now_s() - t0;
    for (int i = 0; i < STRESS_SLOTS; i++) {
        if (mailboxes[i].seed)
            check_message(&mailboxes[i].buf, mailboxes[i].seed, &stress_template);
        weft_iobuf_clear(&mailboxes[i].buf);
        pthread_mutex_destroy(&mailboxes[i].lock);
    }
    WT_EQ(calls, 0);
    weft_iobuf_clear(&stress_template);
    WT_EQ(calls, 1);
    WT_EQ(blocks_in_use(), before);
    WT_NOTE("iobuf stress: %d threads x %ld messages in %.3f s", NTHREADS, wt_scaled(30000), dt);
}

/* Fibers: a buffer is built across a yield (maybe on two workers) and
 * released by another fiber. */
typedef struct {
    weft_iobuf_t buf;
    uint64_t seed;
    int *released;
} fiber_msg_t;

static void fiber_release(void *arg)
{
    fiber_msg_t *m = arg;
    check_message(&m->buf, m->seed, &shared_part);
    weft_iobuf_clear(&m->buf);
    __atomic_fetch_add(m->released, 1, __ATOMIC_RELAXED);
}

static void fiber_build(void *arg)
{
    fiber_msg_t *m = arg;
    weft_iobuf_t head = WEFT_IOBUF_INIT;
    make_message(&m->buf, m->seed, &shared_part);
    size_t k = weft_iobuf_length(&m->buf) / 2;
    WT_EQ(weft_iobuf_cutn(&head, &m->buf, k), k);
    weft_fiber_yield();
    WT_EQ(weft_iobuf_append_buf(&head, &m->buf), 0);
    weft_iobuf_move(&m->buf, &head);
    weft_fiber_t id;
    WT_EQ(weft_fiber_start_background(&id, NULL, fiber_release, m), 0);
}

static void test_fibers(void)
{
    int64_t before = blocks_in_use();
    WT_EQ(weft_iobuf_append(&shared_part, "fiber-shared", 12), 0);
    long n = wt_scaled(20000);
    fiber_msg_t *msgs = calloc((size_t)n, sizeof(*msgs));
    int released = 0;
    weft_fiber_t *ids = calloc((size_t)n, sizeof(*ids));
    for (long i = 0; i < n; i++) {
        msgs[i].seed = (uint64_t)i + 1;
        msgs[i].released = &released;
        WT_EQ(weft_fiber_start_background(&ids[i], NULL, fiber_build, &msgs[i]), 0);
    }
    for (long i = 0; i < n; i++)
        WT_EQ(weft_fiber_join(ids[i]), 0);
    while (__atomic_load_n(&released, __ATOMIC_RELAXED) < n)
        usleep(1000);
    WT_EQ(weft_fiber_shutdown(), 0);
    weft_iobuf_clear(&shared_part);
    /* The workers are gone, and gave back their share and cached blocks. */
    WT_EQ(blocks_in_use(), before);
    free(msgs);
    free(ids);
}

/* ---- throughput -------------------------------------------------------- */

static void bench_piece(size_t piece)
{
    size_t total = (size_t)wt_scaled(piece < 1024 ? 64 << 20 : 1 << 30);
    long iters = (long)(total / piece);
    unsigned char *src = malloc(piece), *dst = malloc(1 << 20);
    fill_random(src, piece, 5);
    weft_iobuf_t a = WEFT_IOBUF_INIT, b = WEFT_IOBUF_INIT;
    double t0 = now_s();
    for (long i = 0; i < iters; i++) {
        weft_iobuf_append(&a, src, piece);
        weft_iobuf_cutn(&b, &a, piece);
        weft_iobuf_clear(&b);
    }
    double t_iobuf = now_s() - t0;
    size_t off = 0;
    t0 = now_s();
    for (long i = 0; i < iters; i++) {
        if (off + piece > (1 << 20))
            off = 0;
        memcpy(dst + off, src, piece);
        __asm__ volatile("" ::"r"(dst) : "memory");
        off += piece;
    }
    double t_memcpy = now_s() - t0;
    double mb = (double)iters * (double)piece / 1e6;
    WT_NOTE("iobuf append+cut %zu B pieces: %.0f MB/s (%.1f ns/piece); memcpy: %.0f MB/s",
            piece, mb / t_iobuf, t_iobuf * 1e9 / (double)iters, mb / t_memcpy);
    weft_iobuf_clear(&a);
    free(src);
    free(dst);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"empty", test_empty},
        {"small_appends", test_small_appends},
        {"large_appends", test_large_appends},
        {"cut_pop", test_cut_pop},
        {"find", test_find},
        {"external", test_external},
        {"appendf", test_appendf},
        {"pb", test_pb},
        {"fd", test_fd},
        {"eagain", test_eagain},
        {"model", test_model},
        {"cross_thread", test_cross_thread},
        {"stress", test_stress},
        {"fibers", test_fibers},
    };
    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
        double t0 = now_s();
        tests[i].fn();
        WT_NOTE("ok %s (%.3f s)", tests[i].name, now_s() - t0);
    }
    bench_piece(16);
    bench_piece(64 * 1024);
    weft_iobuf_stats_t st;
    weft__iobuf_thread_flush();
    weft_iobuf_stats(&st);
    WT_EQ(st.external, 0);
    return 0;
}

#endif /* WT_IOBUF_MODEL_ONLY */
