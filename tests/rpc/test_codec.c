/*
 * test_codec.c - tests of rpc/codec_internal.h: compression, CRC32C and the
 * protobuf nesting check.
 *
 * Each codec is checked against an independent implementation of the same
 * format rather than against itself alone: our gzip and zlib output must
 * decode with zlib's own one-shot calls, streams zlib made must decode with
 * ours, both CRC32C paths must match a bit-at-a-time reference and the
 * published vectors, and the nesting check must agree with whether
 * protobuf-c can unpack the bytes. Inputs come as contiguous and as heavily
 * fragmented IOBufs, since the codecs walk segments. Hostile inputs
 * (truncations, flipped bytes, garbage, a 1 GiB bomb, 100000 levels of
 * nesting) must give their error quickly and leave the output untouched.
 * Throughputs are printed, not checked.
 *
 * Cases run in order; naming some on the command line runs only those.
 */
#include "net/iobuf.h"
#include "rpc/codec_internal.h"
#include "rpc/controller.h"
#include "tests/weft_test.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <time.h>
#include <zlib.h>

#include "test_codec.pb-c.h"

#define KiB ((size_t)1024)
#define MiB (KiB * KiB)

static const int zlib_types[] = {WEFT_COMPRESS_GZIP, WEFT_COMPRESS_ZLIB};

/* ---- helpers ---------------------------------------------------------------- */

static uint64_t rng_state = 0x243f6a8885a308d3ull;

static uint64_t rng(void)
{
    /* xorshift64*: reproducible test data from a fixed seed. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static size_t rng_below(size_t n)
{
    return n ? (size_t)(rng() % n) : 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint8_t *xmalloc(size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    WT_ASSERT(p != NULL);
    return p;
}

enum { DATA_RANDOM, DATA_TEXT, DATA_ZEROS, DATA_KINDS };

/* Random bytes (incompressible), words and numbers (compressible about 3x,
 * like typical message text), or zeros. */
static void fill(uint8_t *p, size_t n, int kind)
{
    static const char *const words[] = {"service", "method", "request", "response", "weft",
                                        "fiber", "channel", "id", "value", "name", "status",
                                        "ok", "error", "timeout", "user", "the", "a", "of"};
    size_t i = 0;
    while (i < n) {
        if (kind == DATA_ZEROS) {
            p[i++] = 0;
        } else if (kind == DATA_RANDOM) {
            p[i++] = (uint8_t)(rng() >> 32);
        } else {
            char w[32];
            int k = rng_below(4) == 0
                        ? snprintf(w, sizeof(w), "%u ", (unsigned)rng_below(100000))
                        : snprintf(w, sizeof(w), "%s ", words[rng_below(18)]);
            for (int j = 0; j < k && i < n; j++)
                p[i++] = (uint8_t)w[j];
        }
    }
}

static void noop_deleter(void *data, void *arg)
{
    (void)data;
    (void)arg;
}

/* Puts n bytes in b: with one append (max_piece 0), or as pieces of 1 to
 * max_piece bytes that each become a segment of their own. */
static void iobuf_from(weft_iobuf_t *b, const uint8_t *d, size_t n, size_t max_piece)
{
    if (max_piece == 0) {
        WT_EQ(weft_iobuf_append(b, d, n), 0);
        return;
    }
    for (size_t off = 0; off < n;) {
        size_t k = 1 + rng_below(max_piece);
        k = k < n - off ? k : n - off;
        WT_EQ(weft_iobuf_append_external(b, (void *)(d + off), k, noop_deleter, NULL), 0);
        off += k;
    }
}

static uint8_t *flatten(const weft_iobuf_t *b, size_t *n)
{
    *n = weft_iobuf_length(b);
    uint8_t *p = xmalloc(*n);
    WT_EQ(weft_iobuf_copy_out(b, 0, p, *n), *n);
    return p;
}

/* One-shot inflate of a whole gzip stream with zlib: the independent check
 * of our gzip output. Returns the decoded length, or -1. */
static long gunzip_oneshot(const uint8_t *src, size_t n, uint8_t *dst, size_t cap)
{
    z_stream zs = {0};
    WT_EQ(inflateInit2(&zs, 16 + MAX_WBITS), Z_OK);
    zs.next_in = (Bytef *)src;
    zs.avail_in = (uInt)n;
    zs.next_out = dst;
    zs.avail_out = (uInt)cap;
    int rc = inflate(&zs, Z_FINISH);
    long out = rc == Z_STREAM_END && zs.avail_in == 0 ? (long)zs.total_out : -1;
    inflateEnd(&zs);
    return out;
}

/* Decodes a whole stream with zlib's own calls. */
static long zlib_oneshot(int type, const uint8_t *src, size_t n, uint8_t *dst, size_t cap)
{
    if (type == WEFT_COMPRESS_GZIP)
        return gunzip_oneshot(src, n, dst, cap);
    uLongf len = cap;
    return uncompress(dst, &len, src, n) == Z_OK ? (long)len : -1;
}

/* Compresses n bytes with zlib itself at level 9 (not our level or window
 * choices), in the format of type. */
static uint8_t *zlib_make(int type, const uint8_t *d, size_t n, size_t *out_n)
{
    z_stream zs = {0};
    int wbits = type == WEFT_COMPRESS_GZIP ? 16 + MAX_WBITS : MAX_WBITS;
    WT_EQ(deflateInit2(&zs, 9, Z_DEFLATED, wbits, 9, Z_DEFAULT_STRATEGY), Z_OK);
    size_t cap = deflateBound(&zs, n);
    uint8_t *out = xmalloc(cap);
    zs.next_in = (Bytef *)d;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    WT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
    *out_n = zs.total_out;
    deflateEnd(&zs);
    return out;
}

/* Decompresses the n bytes at z (fragmented as max_piece says) and checks
 * the result is exactly want[0..want_n). */
static void expect_decompress(int type, const uint8_t *z, size_t n, size_t max_piece,
                              const uint8_t *want, size_t want_n)
{
    weft_iobuf_t in = WEFT_IOBUF_INIT, out = WEFT_IOBUF_INIT;
    iobuf_from(&in, z, n, max_piece);
    int rc = weft__decompress(type, &in, &out, want_n);
    WT_ASSERT_MSG(rc == 0, "decompress type %d of %zu bytes: %d", type, n, rc);
    WT_ASSERT(weft_iobuf_equals(&out, want, want_n));
    WT_EQ(weft__iobuf_check(&out), 0);
    weft_iobuf_clear(&in);
    weft_iobuf_clear(&out);
}

/* Decompresses into a buffer that already holds a prefix and returns the
 * result; on failure the prefix must be all the buffer holds. */
static int decompress_keeps_prefix(int type, const uint8_t *z, size_t n, size_t max_out)
{
    weft_iobuf_t in = WEFT_IOBUF_INIT, out = WEFT_IOBUF_INIT;
    iobuf_from(&in, z, n, 1 + rng_below(64));
    WT_EQ(weft_iobuf_append(&out, "prefix", 6), 0);
    int rc = weft__decompress(type, &in, &out, max_out);
    if (rc != 0)
        WT_ASSERT(weft_iobuf_equals(&out, "prefix", 6));
    WT_EQ(weft__iobuf_check(&out), 0);
    weft_iobuf_clear(&in);
    weft_iobuf_clear(&out);
    return rc;
}

/* ---- compression -------------------------------------------------------------- */

/* One round trip of n bytes of one kind through type, fragmented or not;
 * the output is also decoded by zlib itself. */
static void roundtrip_one(int type, size_t n, int kind, size_t max_piece)
{
    uint8_t *d = xmalloc(n);
    fill(d, n, kind);
    weft_iobuf_t in = WEFT_IOBUF_INIT, out = WEFT_IOBUF_INIT;
    iobuf_from(&in, d, n, max_piece);
    if (max_piece)
        WT_GE(weft_iobuf_segments(&in), n / max_piece);
    WT_EQ(weft_iobuf_append(&out, "head", 4), 0);
    WT_EQ(weft__compress(type, &in, &out), 0);
    WT_EQ(weft__iobuf_check(&out), 0);
    WT_EQ(weft_iobuf_length(&in), n);
    weft_iobuf_pop_front(&out, 4);
    size_t zn;
    uint8_t *z = flatten(&out, &zn);
    if (kind != DATA_RANDOM && n >= 4 * KiB)
        WT_LT(zn, n / 2);
    if (kind == DATA_RANDOM)
        WT_LT(zn, n + n / 100 + 64); /* stored blocks, not expansion */

    uint8_t *back = xmalloc(n + 1);
    WT_EQ(zlib_oneshot(type, z, zn, back, n + 1), (long)n);
    WT_ASSERT(n == 0 || memcmp(back, d, n) == 0);

    expect_decompress(type, z, zn, 0, d, n);
    expect_decompress(type, z, zn, 1 + rng_below(n < 64 * KiB ? 16 : 4096), d, n);
    if (n > 0)
        WT_EQ(decompress_keeps_prefix(type, z, zn, n - 1), -E2BIG);
    free(back);
    free(z);
    free(d);
    weft_iobuf_clear(&in);
    weft_iobuf_clear(&out);
}

static void test_roundtrip(void)
{
    static const size_t sizes[] = {0,    1,     2,     3,     17,       100,     1000,
                                   4095, 8143,  8144,  8145,  16384,    65536,   100000,
                                   MiB,  3 * MiB + 7};
    for (size_t t = 0; t < 2; t++)
        for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++)
            for (int kind = 0; kind < DATA_KINDS; kind++) {
                roundtrip_one(zlib_types[t], sizes[s], kind, 0);
                roundtrip_one(zlib_types[t], sizes[s], kind, sizes[s] < 64 * KiB ? 32 : 1000);
            }
    /* Random sizes and fragmentations in between. */
    for (long i = 0; i < wt_scaled(200); i++) {
        size_t n = rng_below(20000);
        int kind = (int)rng_below(DATA_KINDS);
        size_t max_piece = rng_below(3) ? 1 + rng_below(300) : 0;
        roundtrip_one(zlib_types[i & 1], n, kind, max_piece);
    }
}

/* Streams made by zlib itself at another level and window: one stream, two
 * streams back to back (which brpc reads as one message), and the same
 * followed by garbage. */
static void test_foreign_streams(void)
{
    for (size_t t = 0; t < 2; t++) {
        int type = zlib_types[t];
        size_t n = 200 * KiB, an, bn;
        uint8_t *d = xmalloc(2 * n);
        fill(d, 2 * n, DATA_TEXT);
        uint8_t *a = zlib_make(type, d, n, &an);
        uint8_t *b = zlib_make(type, d + n, n, &bn);
        expect_decompress(type, a, an, 0, d, n);
        expect_decompress(type, a, an, 7, d, n);

        uint8_t *ab = xmalloc(an + bn + 3);
        memcpy(ab, a, an);
        memcpy(ab + an, b, bn);
        expect_decompress(type, ab, an + bn, 0, d, 2 * n);
        expect_decompress(type, ab, an + bn, 100, d, 2 * n);
        memcpy(ab + an + bn, "xyz", 3);
        WT_EQ(decompress_keeps_prefix(type, ab, an + bn + 3, SIZE_MAX), -EINVAL);
        ab[an + bn] = 0;
        WT_EQ(decompress_keeps_prefix(type, ab, an + bn + 1, SIZE_MAX), -EINVAL);

        /* The other format's stream is not this one's. */
        int other = zlib_types[1 - t];
        WT_EQ(decompress_keeps_prefix(other, a, an, SIZE_MAX), -EINVAL);
        free(ab);
        free(a);
        free(b);
        free(d);
    }
    /* No bytes at all is no stream. */
    weft_iobuf_t empty = WEFT_IOBUF_INIT, out = WEFT_IOBUF_INIT;
    WT_EQ(weft__decompress(WEFT_COMPRESS_GZIP, &empty, &out, 100), -EINVAL);
    WT_EQ(weft__decompress(WEFT_COMPRESS_ZLIB, &empty, &out, 100), -EINVAL);
    WT_EQ(weft_iobuf_length(&out), 0);

    /* A zlib stream that needs a preset dictionary cannot be read. */
    z_stream zs = {0};
    uint8_t buf[256];
    WT_EQ(deflateInit(&zs, 6), Z_OK);
    WT_EQ(deflateSetDictionary(&zs, (const Bytef *)"dictionary", 10), Z_OK);
    zs.next_in = (Bytef *)"dictionary words";
    zs.avail_in = 16;
    zs.next_out = buf;
    zs.avail_out = sizeof(buf);
    WT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
    WT_EQ(decompress_keeps_prefix(WEFT_COMPRESS_ZLIB, buf, zs.total_out, SIZE_MAX), -EINVAL);
    deflateEnd(&zs);
}

/* Every strict prefix of a stream is truncated; a flipped byte is caught
 * by the format's checks or, where the format does not cover it (gzip's
 * mtime and OS bytes, the unused bits of the last byte), changes nothing;
 * garbage is refused. Never a crash, never a partial output. A checksum is
 * only a checksum: zlib's Adler-32 in particular lets a rare corruption
 * through with a matching sum (zlib itself accepts those streams too), so
 * those are counted against the same small allowance as the rest. */
static void test_corrupt(void)
{
    size_t n = 3000;
    uint8_t *d = xmalloc(n);
    fill(d, n, DATA_TEXT);
    for (size_t t = 0; t < 2; t++) {
        int type = zlib_types[t];
        weft_iobuf_t in = WEFT_IOBUF_INIT, out = WEFT_IOBUF_INIT;
        iobuf_from(&in, d, n, 0);
        WT_EQ(weft__compress(type, &in, &out), 0);
        size_t zn;
        uint8_t *z = flatten(&out, &zn);
        for (size_t k = 0; k < zn; k++)
            WT_EQ(decompress_keeps_prefix(type, z, k, SIZE_MAX), -EINVAL);
        size_t caught = 0, undetected = 0;
        for (size_t k = 0; k < zn; k++) {
            uint8_t saved = z[k];
            z[k] ^= (uint8_t)(1 + rng_below(255));
            weft_iobuf_t zin = WEFT_IOBUF_INIT, back = WEFT_IOBUF_INIT;
            iobuf_from(&zin, z, zn, 1 + rng_below(32));
            int rc = weft__decompress(type, &zin, &back, SIZE_MAX);
            WT_ASSERT_MSG(rc == -EINVAL || rc == 0, "type %d flip at %zu of %zu: %d", type, k, zn,
                          rc);
            caught += rc == -EINVAL;
            undetected += rc == 0 && !weft_iobuf_equals(&back, d, n);
            weft_iobuf_clear(&zin);
            weft_iobuf_clear(&back);
            z[k] = saved;
        }
        WT_GE(caught, zn - 10);
        WT_LE(undetected, 3);
        free(z);
        weft_iobuf_clear(&in);
        weft_iobuf_clear(&out);
    }
    for (long i = 0; i < wt_scaled(3000); i++) {
        size_t gn = rng_below(600);
        uint8_t *g = xmalloc(gn);
        fill(g, gn, DATA_RANDOM);
        if (gn >= 2 && (i & 1)) { /* a valid zlib header, then garbage */
            g[0] = 0x78;
            g[1] = 0x9c;
        }
        int rc = decompress_keeps_prefix(zlib_types[i & 1], g, gn, 1 + rng_below(100000));
        WT_ASSERT(rc == -EINVAL || rc == -E2BIG || rc == 0);
        free(g);
    }
    free(d);
}

/* A stream of chunks MiB of zeros, built in O(size of the stream): after a
 * full flush, deflate restarts from a clean state, so every further MiB of
 * zeros compresses to the very same bytes, which we repeat; the trailer
 * (check value, length) is computed for the whole. */
static uint8_t *make_zero_bomb(int type, size_t chunks, size_t *len)
{
    uint8_t *zeros = calloc(1, MiB), a[4096], b[4096], c[64];
    WT_ASSERT(zeros != NULL && chunks >= 2);
    z_stream zs = {0};
    int wbits = type == WEFT_COMPRESS_GZIP ? 16 + MAX_WBITS : MAX_WBITS;
    WT_EQ(deflateInit2(&zs, 9, Z_DEFLATED, wbits, 9, Z_RLE), Z_OK);
    size_t part[3];
    uint8_t *dst[3] = {a, b, c};
    size_t cap[3] = {sizeof(a), sizeof(b), sizeof(c)};
    for (int i = 0; i < 3; i++) {
        zs.next_in = zeros;
        zs.avail_in = i < 2 ? (uInt)MiB : 0;
        zs.next_out = dst[i];
        zs.avail_out = (uInt)cap[i];
        WT_EQ(deflate(&zs, i < 2 ? Z_FULL_FLUSH : Z_FINISH), i < 2 ? Z_OK : Z_STREAM_END);
        WT_GT(zs.avail_out, 0);
        part[i] = cap[i] - zs.avail_out;
    }
    deflateEnd(&zs);
    size_t tail = type == WEFT_COMPRESS_GZIP ? 8 : 4; /* trailer of c, replaced */
    *len = part[0] + (chunks - 1) * part[1] + part[2];
    uint8_t *out = xmalloc(*len), *p = out;
    memcpy(p, a, part[0]);
    p += part[0];
    for (size_t i = 1; i < chunks; i++, p += part[1])
        memcpy(p, b, part[1]);
    memcpy(p, c, part[2] - tail);
    p += part[2] - tail;
    uLong one = type == WEFT_COMPRESS_GZIP ? crc32(0, zeros, MiB) : adler32(1, zeros, MiB);
    uLong all = one;
    for (size_t i = 1; i < chunks; i++)
        all = type == WEFT_COMPRESS_GZIP ? crc32_combine(all, one, MiB)
                                         : adler32_combine(all, one, MiB);
    uint32_t size = (uint32_t)(chunks * MiB);
    for (int i = 0; i < 4; i++) /* gzip: crc and size little-endian; zlib: adler big-endian */
        *p++ = type == WEFT_COMPRESS_GZIP ? (uint8_t)(all >> (8 * i))
                                          : (uint8_t)(all >> (24 - 8 * i));
    for (int i = 0; i < 4 && type == WEFT_COMPRESS_GZIP; i++)
        *p++ = (uint8_t)(size >> (8 * i));
    free(zeros);
    return out;
}

static long maxrss_kib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* A 1 GiB bomb against max_out 1 MiB: refused within milliseconds, the
 * output left as it was, and the peak RSS (this case runs first, while the
 * process is small) grows by about max_out, not by the bomb's claim. */
static void bomb_once(int type)
{
    size_t n;
    uint8_t *bomb = make_zero_bomb(type, 1024, &n);
    weft_iobuf_t in = WEFT_IOBUF_INIT, out = WEFT_IOBUF_INIT;
    iobuf_from(&in, bomb, n, 0);
    long rss0 = maxrss_kib();
    double t0 = now_s();
    WT_EQ(weft__decompress(type, &in, &out, MiB), -E2BIG);
    double dt = now_s() - t0;
    long grew = maxrss_kib() - rss0;
    WT_NOTE("bomb %s: %zu bytes -> 1 GiB, max_out 1 MiB: -E2BIG in %.2f ms, peak RSS +%ld KiB",
            type == WEFT_COMPRESS_GZIP ? "gzip" : "zlib", n, dt * 1e3, grew);
    WT_LT(dt, 2.0);
    WT_LT(grew, 8 * 1024);
    WT_EQ(weft_iobuf_length(&out), 0);
    weft_iobuf_clear(&out); /* its reference array may have grown */
    weft_iobuf_clear(&in);
    WT_EQ(decompress_keeps_prefix(type, bomb, n, MiB), -E2BIG); /* fragmented */
    free(bomb);
}

/* The bomb's construction, checked on a size we can afford to inflate. */
static void bomb_construction(int type)
{
    size_t n;
    uint8_t *small = make_zero_bomb(type, 8, &n);
    uint8_t *zeros = calloc(1, 8 * MiB);
    WT_ASSERT(zeros != NULL);
    expect_decompress(type, small, n, 0, zeros, 8 * MiB);
    free(zeros);
    free(small);
}

static void test_bomb(void)
{
    for (size_t t = 0; t < 2; t++)
        bomb_once(zlib_types[t]);
    for (size_t t = 0; t < 2; t++)
        bomb_construction(zlib_types[t]);
}

static void test_none_and_unsupported(void)
{
    uint8_t d[20000];
    fill(d, sizeof(d), DATA_RANDOM);
    weft_iobuf_t in = WEFT_IOBUF_INIT, out = WEFT_IOBUF_INIT;
    iobuf_from(&in, d, sizeof(d), 500);
    WT_EQ(weft__compress(WEFT_COMPRESS_NONE, &in, &out), 0);
    WT_EQ(weft_iobuf_segments(&out), weft_iobuf_segments(&in));
    size_t la, lb; /* by reference: the very same memory */
    WT_ASSERT(weft_iobuf_segment(&out, 3, &la) == weft_iobuf_segment(&in, 3, &lb));
    weft_iobuf_clear(&out);
    WT_EQ(weft__decompress(WEFT_COMPRESS_NONE, &in, &out, sizeof(d)), 0);
    WT_ASSERT(weft_iobuf_equals(&out, d, sizeof(d)));
    weft_iobuf_clear(&out);
    WT_EQ(weft__decompress(WEFT_COMPRESS_NONE, &in, &out, sizeof(d) - 1), -E2BIG);
    WT_EQ(weft_iobuf_length(&out), 0);

    static const int bad[] = {WEFT_COMPRESS_SNAPPY, 4, 5, -1, 100, INT_MAX, INT_MIN};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        WT_ASSERT(!weft__compress_supported(bad[i]));
        WT_EQ(weft__compress(bad[i], &in, &out), -ENOTSUP);
        WT_EQ(weft__decompress(bad[i], &in, &out, SIZE_MAX), -ENOTSUP);
        WT_EQ(weft_iobuf_length(&out), 0);
    }
    WT_ASSERT(weft__compress_supported(WEFT_COMPRESS_NONE));
    WT_ASSERT(weft__compress_supported(WEFT_COMPRESS_GZIP));
    WT_ASSERT(weft__compress_supported(WEFT_COMPRESS_ZLIB));
    weft_iobuf_clear(&in);
}

/* Throughput on 4 MiB of text, and the cost of one small message. */
static void bench_compress(void)
{
    size_t n = 4 * MiB;
    uint8_t *d = xmalloc(n);
    fill(d, n, DATA_TEXT);
    weft_iobuf_t in = WEFT_IOBUF_INIT;
    iobuf_from(&in, d, n, 0);
    for (size_t t = 0; t < 2; t++) {
        int type = zlib_types[t];
        const char *name = type == WEFT_COMPRESS_GZIP ? "gzip" : "zlib";
        int reps = (int)wt_scaled(5);
        weft_iobuf_t z = WEFT_IOBUF_INIT, back = WEFT_IOBUF_INIT;
        double t0 = now_s();
        for (int r = 0; r < reps; r++) {
            weft_iobuf_clear(&z);
            WT_EQ(weft__compress(type, &in, &z), 0);
        }
        double t1 = now_s();
        for (int r = 0; r < reps; r++) {
            weft_iobuf_clear(&back);
            WT_EQ(weft__decompress(type, &z, &back, n), 0);
        }
        double t2 = now_s();
        WT_NOTE("%s 4 MiB text: ratio %.2f, compress %.0f MB/s, decompress %.0f MB/s", name,
                (double)n / (double)weft_iobuf_length(&z), reps * (double)n / (t1 - t0) / 1e6,
                reps * (double)n / (t2 - t1) / 1e6);
        weft_iobuf_clear(&z);
        weft_iobuf_clear(&back);

        weft_iobuf_t small = WEFT_IOBUF_INIT;
        iobuf_from(&small, d, 200, 0);
        long iters = wt_scaled(20000);
        t0 = now_s();
        for (long i = 0; i < iters; i++) {
            WT_EQ(weft__compress(type, &small, &z), 0);
            WT_EQ(weft__decompress(type, &z, &back, 200), 0);
            weft_iobuf_clear(&z);
            weft_iobuf_clear(&back);
        }
        WT_NOTE("%s 200 B message: compress + decompress %.2f us", name,
                (now_s() - t0) / (double)iters * 1e6);
        weft_iobuf_clear(&small);
    }
    weft_iobuf_clear(&in);
    free(d);
}

/* ---- CRC32C ------------------------------------------------------------------- */

static uint32_t crc_bitwise(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = crc & 1 ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
    }
    return ~crc;
}

static void expect_crc(const void *p, size_t n, uint32_t want)
{
    WT_EQ(weft__crc32c(0, p, n), want);
    WT_EQ(weft__crc32c_sw(0, p, n), want);
    WT_EQ(weft__crc32c_hw(0, p, n), want);
    WT_EQ(crc_bitwise(0, p, n), want);
}

static void test_crc_vectors(void)
{
    uint8_t b[48];
    expect_crc("123456789", 9, 0xE3069283u);
    expect_crc("", 0, 0);
    /* RFC 3720 (iSCSI), B.4 */
    memset(b, 0, 32);
    expect_crc(b, 32, 0x8A9136AAu);
    memset(b, 0xff, 32);
    expect_crc(b, 32, 0x62A8AB43u);
    for (int i = 0; i < 32; i++)
        b[i] = (uint8_t)i;
    expect_crc(b, 32, 0x46DD794Eu);
    for (int i = 0; i < 32; i++)
        b[i] = (uint8_t)(31 - i);
    expect_crc(b, 32, 0x113FDB5Cu);
    static const uint8_t read10[48] = {
        0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
        0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    expect_crc(read10, sizeof(read10), 0xD9963A56u);

    /* Chaining: the CRC of a then b continues from the CRC of a. */
    WT_EQ(weft__crc32c(weft__crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);

    /* Masking as baidu_std (and LevelDB) store it. */
    WT_EQ(weft__crc32c_mask(0), 0xa282ead8u);
    WT_EQ(weft__crc32c_mask(0xE3069283u), 0xc78ab0e5u);
    for (int i = 0; i < 1000; i++) {
        uint32_t c = (uint32_t)rng();
        WT_EQ(weft__crc32c_unmask(weft__crc32c_mask(c)), c);
        uint8_t be[4];
        weft__crc32c_store_be(c, be);
        WT_EQ(be[0], c >> 24);
        WT_EQ(be[3], c & 0xff);
        WT_EQ(weft__crc32c_load_be(be), c);
    }
}

/* Both paths against the reference at every alignment and length up to
 * 1 KiB, and on long buffers that exercise the three-stream hardware path. */
static void test_crc_paths(void)
{
    WT_NOTE("crc32c hardware path: %s", weft__crc32c_hw_available() ? "sse4.2" : "unavailable");
    size_t cap = 64 * KiB + 64;
    uint8_t *buf = xmalloc(cap);
    fill(buf, cap, DATA_RANDOM);
    for (size_t align = 0; align < 16; align++)
        for (size_t n = 0; n <= 1024; n++) {
            uint32_t seed = (uint32_t)rng();
            uint32_t want = crc_bitwise(seed, buf + align, n);
            WT_EQ(weft__crc32c_sw(seed, buf + align, n), want);
            WT_EQ(weft__crc32c_hw(seed, buf + align, n), want);
        }
    for (int i = 0; i < 200; i++) {
        size_t align = rng_below(64), n = rng_below(cap - 64);
        uint32_t want = crc_bitwise(0, buf + align, n);
        WT_EQ(weft__crc32c_sw(0, buf + align, n), want);
        WT_EQ(weft__crc32c_hw(0, buf + align, n), want);
    }
    free(buf);
}

static void test_crc_iobuf(void)
{
    size_t n = 300 * KiB;
    uint8_t *d = xmalloc(n);
    fill(d, n, DATA_RANDOM);
    static const size_t pieces[] = {0, 1, 7, 64, 1000, 9000, 100000};
    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
        size_t len = rng_below(n);
        weft_iobuf_t b = WEFT_IOBUF_INIT;
        iobuf_from(&b, d, len, pieces[i]);
        WT_EQ(weft__crc32c_iobuf(&b), weft__crc32c_sw(0, d, len));
        weft_iobuf_clear(&b);
    }
    weft_iobuf_t empty = WEFT_IOBUF_INIT;
    WT_EQ(weft__crc32c_iobuf(&empty), 0);
    free(d);
}

static void bench_crc(void)
{
    size_t n = 64 * KiB;
    uint8_t *d = xmalloc(n);
    fill(d, n, DATA_RANDOM);
    long reps = wt_scaled(4000);
    struct {
        const char *name;
        uint32_t (*fn)(uint32_t, const void *, size_t);
    } paths[] = {{"software (slicing-by-8)", weft__crc32c_sw},
                 {"hardware (sse4.2)", weft__crc32c_hw}};
    for (size_t i = 0; i < 2; i++) {
        if (i == 1 && !weft__crc32c_hw_available())
            continue;
        uint32_t c = 0;
        double t0 = now_s();
        for (long r = 0; r < reps; r++)
            c = paths[i].fn(c, d, n);
        double dt = now_s() - t0;
        WT_NOTE("crc32c %s: %.0f MB/s on 64 KiB buffers (%08x)", paths[i].name,
                (double)reps * (double)n / dt / 1e6, c);
    }
    free(d);
}

/* ---- protobuf nesting check ------------------------------------------------------ */

#define NODE (&weft_test__node__descriptor)

/* A growable byte string, built from the end towards the front so that a
 * nested message can be wrapped in its tag and length in O(1) per level. */
typedef struct {
    uint8_t *p;   /* bytes live at p[start..cap) */
    size_t start, cap;
} rbuf_t;

static void rb_init(rbuf_t *b, size_t cap)
{
    b->p = xmalloc(cap);
    b->start = b->cap = cap;
}

static size_t rb_len(const rbuf_t *b)
{
    return b->cap - b->start;
}

static const uint8_t *rb_data(const rbuf_t *b)
{
    return b->p + b->start;
}

static void rb_prepend(rbuf_t *b, const void *d, size_t n)
{
    WT_ASSERT(n <= b->start);
    b->start -= n;
    memcpy(b->p + b->start, d, n);
}

static size_t varint(uint64_t v, uint8_t out[10])
{
    size_t n = 0;
    do {
        out[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v)
            out[n] |= 0x80;
        n++;
    } while (v);
    return n;
}

/* Wraps everything in b as the body of a length-delimited field. */
static void rb_wrap(rbuf_t *b, uint32_t field)
{
    uint8_t h[20];
    size_t k = varint((uint64_t)field << 3 | 2, h);
    k += varint(rb_len(b), h + k);
    rb_prepend(b, h, k);
}

/* depth levels of Node below the top one, alternating child (1) and kids
 * (3), the innermost holding v = 7. */
static void build_nested(rbuf_t *b, size_t depth)
{
    rb_init(b, 16 + depth * 6);
    rb_prepend(b, (const uint8_t[]){0x20, 0x07}, 2);
    for (size_t i = 0; i < depth; i++)
        rb_wrap(b, i & 1 ? 3 : 1);
}

static size_t tree_depth(const WeftTest__Node *n)
{
    size_t d = 0, k;
    if (n->child && (k = 1 + tree_depth(n->child)) > d)
        d = k;
    for (size_t i = 0; i < n->n_kids; i++)
        if ((k = 1 + tree_depth(n->kids[i])) > d)
            d = k;
    return d;
}

/* The check, and whether protobuf-c unpacks the same bytes, must agree:
 * depth within the limit and well-formed means unpackable at that depth.
 * Unpacks only what the check let through (or known-shallow input). */
static int check_vs_unpack(const uint8_t *p, size_t n, int max_depth)
{
    int rc = weft__pb_check(NODE, p, n, max_depth);
    WT_ASSERT(rc == 0 || rc == -EINVAL || rc == -E2BIG);
    if (rc == -E2BIG)
        return rc;
    WeftTest__Node *m = weft_test__node__unpack(NULL, n, p);
    if (rc == -EINVAL)
        WT_ASSERT_MSG(m == NULL, "check says malformed, protobuf-c unpacked %zu bytes", n);
    if (m) {
        WT_EQ(rc, 0);
        WT_LE(tree_depth(m), (size_t)max_depth);
        weft_test__node__free_unpacked(m, NULL);
    }
    return rc;
}

static void test_pb_nesting(void)
{
    static const size_t depths[] = {0, 1, 10, 63, 64, 65, 100, 101};
    for (size_t i = 0; i < sizeof(depths) / sizeof(depths[0]); i++) {
        rbuf_t b;
        build_nested(&b, depths[i]);
        int want64 = depths[i] <= 64 ? 0 : -E2BIG;
        WT_EQ(check_vs_unpack(rb_data(&b), rb_len(&b), 64), want64);
        WT_EQ(weft__pb_check(NODE, rb_data(&b), rb_len(&b), 100), depths[i] <= 100 ? 0 : -E2BIG);
        WT_EQ(weft__pb_check(NODE, rb_data(&b), rb_len(&b), 0), depths[i] == 0 ? 0 : -E2BIG);
        /* Shallow enough to unpack here: protobuf-c sees the same depth. */
        WeftTest__Node *m = weft_test__node__unpack(NULL, rb_len(&b), rb_data(&b));
        WT_ASSERT(m != NULL);
        WT_EQ(tree_depth(m), depths[i]);
        weft_test__node__free_unpacked(m, NULL);
        free(b.p);
    }

    /* 100000 levels: refused at level 65, long before the end, with no
     * recursion (a recursive walk would need ~100 MB of stack). */
    rbuf_t deep;
    build_nested(&deep, 100000);
    double t0 = now_s();
    WT_EQ(weft__pb_check(NODE, rb_data(&deep), rb_len(&deep), 64), -E2BIG);
    WT_EQ(weft__pb_check(NODE, rb_data(&deep), rb_len(&deep), 100), -E2BIG);
    WT_NOTE("pb_check 100000 levels (%zu bytes): -E2BIG in %.1f us", rb_len(&deep),
            (now_s() - t0) / 2 * 1e6);

    /* The same bytes inside a string or an unknown field are not looked at. */
    rbuf_t hidden;
    rb_init(&hidden, rb_len(&deep) + 64);
    rb_prepend(&hidden, rb_data(&deep), rb_len(&deep));
    rb_wrap(&hidden, 2); /* name */
    WT_EQ(check_vs_unpack(rb_data(&hidden), rb_len(&hidden), 64), 0);
    hidden.start = hidden.cap - rb_len(&deep);
    rb_wrap(&hidden, 1000); /* unknown */
    WT_EQ(check_vs_unpack(rb_data(&hidden), rb_len(&hidden), 64), 0);
    free(hidden.p);
    free(deep.p);

    /* Bad arguments. */
    WT_EQ(weft__pb_check(NODE, (const uint8_t *)"", 0, -1), -EINVAL);
    WT_EQ(weft__pb_check(NODE, (const uint8_t *)"", 0, WEFT__PB_CHECK_MAX_DEPTH + 1), -EINVAL);
    WT_EQ(weft__pb_check(NULL, (const uint8_t *)"", 0, 10), -EINVAL);
    WT_EQ(weft__pb_check(NODE, NULL, 1, 10), -EINVAL);
    WT_EQ(weft__pb_check(NODE, NULL, 0, 10), 0);
}

/* A tag written with more bytes than it needs names the same field for
 * protobuf-c, so the check must descend into it too. */
static void test_pb_overlong_tags(void)
{
    rbuf_t b;
    rb_init(&b, 65 * 12 + 16);
    rb_prepend(&b, (const uint8_t[]){0x20, 0x07}, 2);
    for (int i = 0; i < 65; i++) {
        uint8_t h[16];
        size_t k = 0;
        /* field 1, wire 2 as a 1- to 5-byte varint */
        int extra = i % 5;
        h[k++] = 0x0a | (extra ? 0x80 : 0);
        for (int e = 0; e < extra; e++)
            h[k++] = e + 1 < extra ? 0x80 : 0x00;
        /* the length, also padded */
        uint8_t l[10];
        size_t lk = varint(rb_len(&b), l);
        if (lk < 5 && i % 2) {
            l[lk - 1] |= 0x80;
            l[lk++] = 0x00;
        }
        memcpy(h + k, l, lk);
        rb_prepend(&b, h, k + lk);
        if (i == 63) {
            WT_EQ(check_vs_unpack(rb_data(&b), rb_len(&b), 64), 0);
            WeftTest__Node *m = weft_test__node__unpack(NULL, rb_len(&b), rb_data(&b));
            WT_ASSERT(m != NULL);
            WT_EQ(tree_depth(m), 64);
            weft_test__node__free_unpacked(m, NULL);
        }
    }
    WT_EQ(weft__pb_check(NODE, rb_data(&b), rb_len(&b), 64), -E2BIG);
    WeftTest__Node *m = weft_test__node__unpack(NULL, rb_len(&b), rb_data(&b));
    WT_ASSERT(m != NULL);
    WT_EQ(tree_depth(m), 65);
    weft_test__node__free_unpacked(m, NULL);
    free(b.p);
}

typedef struct {
    const char *what;
    size_t n;
    uint8_t bytes[24];
} pb_case_t;

static void test_pb_malformed(void)
{
    static const pb_case_t bad[] = {
        {"truncated varint value", 3, {0x20, 0x80, 0x80}},
        {"11-byte varint", 12, {0x20, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}},
        {"truncated tag", 2, {0x80, 0x80}},
        {"6-byte tag", 7, {0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00}},
        {"field 0", 2, {0x00, 0x01}},
        {"length past the end", 3, {0x12, 0x05, 'a'}},
        {"truncated length", 2, {0x12, 0x80}},
        {"6-byte length", 7, {0x12, 0x81, 0x80, 0x80, 0x80, 0x80, 0x00}},
        {"length over INT_MAX", 6, {0x12, 0x80, 0x80, 0x80, 0x80, 0x08}},
        {"wire type 3 (start group)", 2, {0x0b, 0x0c}},
        {"wire type 4 (end group)", 1, {0x0c}},
        {"wire type 6", 2, {0x0e, 0x00}},
        {"wire type 7", 2, {0x0f, 0x00}},
        {"truncated fixed64", 5, {0x29, 1, 2, 3, 4}},
        {"truncated fixed32", 3, {0x2d, 1, 2}},
        {"unknown field, length past the end", 4, {0xc2, 0x3e, 0x09, 0x00}},
        {"message field as a varint", 2, {0x08, 0x01}},
        {"message field as fixed32", 5, {0x0d, 0, 0, 0, 0}},
        {"child's field crosses its end", 6, {0x0a, 0x02, 0x12, 0x03, 'a', 'b'}},
        {"bad bytes two levels down", 6, {0x0a, 0x04, 0x1a, 0x02, 0x20, 0x80}},
        {"group inside a child", 4, {0x0a, 0x02, 0x33, 0x34}},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = weft__pb_check(NODE, bad[i].bytes, bad[i].n, 64);
        WT_ASSERT_MSG(rc == -EINVAL, "%s: %d", bad[i].what, rc);
        WeftTest__Node *m = weft_test__node__unpack(NULL, bad[i].n, bad[i].bytes);
        WT_ASSERT_MSG(m == NULL, "%s: protobuf-c unpacks it", bad[i].what);
    }
    static const pb_case_t good[] = {
        {"empty", 0, {0}},
        {"10-byte varint", 11, {0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
        {"unknown varint, fixed64, fixed32", 16, {0x28, 0x05, 0x31, 1, 2, 3, 4, 5, 6, 7, 8, 0x3d, 1, 2, 3, 4}},
        {"unknown field 1000000", 5, {0x82, 0xa4, 0xe8, 0x03, 0x00}},
        {"tag with the top bits set", 7, {0xfa, 0xff, 0xff, 0xff, 0x7f, 0x01, 'x'}},
        {"empty child and kid", 4, {0x0a, 0x00, 0x1a, 0x00}},
        {"int32 field as length-delimited", 4, {0x22, 0x02, 0x01, 0x02}},
        {"child given twice", 8, {0x0a, 0x02, 0x20, 0x01, 0x0a, 0x02, 0x0a, 0x00}},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        int rc = weft__pb_check(NODE, good[i].bytes, good[i].n, 64);
        WT_ASSERT_MSG(rc == 0, "%s: %d", good[i].what, rc);
        check_vs_unpack(good[i].bytes, good[i].n, 64);
    }
}

/* A random tree of at most `depth` levels below n. */
static WeftTest__Node *random_tree(int depth, size_t *budget)
{
    WeftTest__Node *n = calloc(1, sizeof(*n));
    WT_ASSERT(n != NULL);
    weft_test__node__init(n);
    if (rng_below(3) == 0) {
        n->has_v = 1;
        n->v = (int32_t)rng();
    }
    if (rng_below(4) == 0)
        n->name = "node";
    if (depth > 0 && *budget > 0 && rng_below(3) != 0) {
        --*budget;
        n->child = random_tree(depth - 1 - (int)rng_below(2), budget);
    }
    size_t kids = depth > 0 && *budget > 0 ? rng_below(3) : 0;
    if (kids) {
        n->kids = calloc(kids, sizeof(*n->kids));
        WT_ASSERT(n->kids != NULL);
        for (size_t i = 0; i < kids; i++, n->n_kids++) {
            *budget -= *budget > 0;
            n->kids[i] = random_tree(depth - 1 - (int)rng_below(4), budget);
        }
    }
    return n;
}

static void free_tree(WeftTest__Node *n)
{
    if (n->child)
        free_tree(n->child);
    for (size_t i = 0; i < n->n_kids; i++)
        free_tree(n->kids[i]);
    free(n->kids);
    free(n);
}

/* Random valid messages must pass exactly when shallow enough; the same
 * bytes mutated must never be called malformed if protobuf-c reads them. */
static void test_pb_random(void)
{
    long iters = wt_scaled(3000);
    size_t verdicts[3] = {0};
    for (long i = 0; i < iters; i++) {
        size_t budget = 1 + rng_below(200);
        WeftTest__Node *t = random_tree((int)rng_below(80), &budget);
        size_t d = tree_depth(t), n = weft_test__node__get_packed_size(t);
        uint8_t *p = xmalloc(n + 16);
        WT_EQ(weft_test__node__pack(t, p), n);
        int max = (int)rng_below(WEFT__PB_CHECK_MAX_DEPTH + 1);
        WT_EQ(weft__pb_check(NODE, p, n, max), d <= (size_t)max ? 0 : -E2BIG);
        check_vs_unpack(p, n, WEFT__PB_CHECK_MAX_DEPTH);
        for (int k = 0; k < 8; k++) {
            size_t m = n;
            uint8_t saved[3];
            size_t at[3];
            for (int j = 0; j < 3; j++) {
                at[j] = rng_below(n + 1);
                saved[j] = p[at[j]];
                p[at[j]] = (uint8_t)rng();
            }
            if (rng_below(4) == 0)
                m = rng_below(n + 1);
            int rc = check_vs_unpack(p, m, max);
            verdicts[rc == 0 ? 0 : rc == -EINVAL ? 1 : 2]++;
            for (int j = 2; j >= 0; j--)
                p[at[j]] = saved[j];
        }
        free(p);
        free_tree(t);
    }
    WT_NOTE("pb_check on mutated messages: %zu ok, %zu malformed, %zu too deep", verdicts[0],
            verdicts[1], verdicts[2]);
}

static void bench_pb_check(void)
{
    /* A flat message (many small fields) and a nested one, per byte. */
    size_t budget = 400;
    rng_state = 42;
    WeftTest__Node *t = random_tree(40, &budget);
    size_t n = weft_test__node__get_packed_size(t);
    uint8_t *p = xmalloc(n);
    weft_test__node__pack(t, p);
    long iters = wt_scaled(20000);
    double t0 = now_s();
    for (long i = 0; i < iters; i++)
        WT_EQ(weft__pb_check(NODE, p, n, 100), 0);
    double dcheck = now_s() - t0;
    t0 = now_s();
    for (long i = 0; i < iters; i++)
        weft_test__node__free_unpacked(weft_test__node__unpack(NULL, n, p), NULL);
    double dunpack = now_s() - t0;
    WT_NOTE("pb_check on a %zu-byte tree of depth %zu: %.0f MB/s (%.2f us; unpack %.2f us)", n,
            tree_depth(t), (double)iters * (double)n / dcheck / 1e6, dcheck / (double)iters * 1e6,
            dunpack / (double)iters * 1e6);
    free(p);
    free_tree(t);
}

int main(int argc, char **argv)
{
    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"bomb", test_bomb},
        {"roundtrip", test_roundtrip},
        {"foreign_streams", test_foreign_streams},
        {"corrupt", test_corrupt},
        {"none_and_unsupported", test_none_and_unsupported},
        {"bench_compress", bench_compress},
        {"crc_vectors", test_crc_vectors},
        {"crc_paths", test_crc_paths},
        {"crc_iobuf", test_crc_iobuf},
        {"bench_crc", bench_crc},
        {"pb_nesting", test_pb_nesting},
        {"pb_overlong_tags", test_pb_overlong_tags},
        {"pb_malformed", test_pb_malformed},
        {"pb_random", test_pb_random},
        {"bench_pb_check", bench_pb_check},
    };
    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
        bool run = argc < 2;
        for (int a = 1; a < argc; a++)
            run |= strcmp(argv[a], tests[i].name) == 0;
        if (!run)
            continue;
        double t0 = now_s();
        tests[i].fn();
        WT_NOTE("ok %s (%.3f s)", tests[i].name, now_s() - t0);
    }
    return 0;
}
