/*
 * compress.c - gzip and zlib compression of the message part of an RPC.
 *
 * baidu_std's compress_type 2 is the gzip format (RFC 1952) and 3 the zlib
 * format (RFC 1950), both around one deflate stream; brpc makes them with
 * protobuf's GzipOutputStream and reads them with GzipInputStream, which
 * also reads several streams back to back, so we do too.
 *
 * Streaming. Input is fed to zlib one IOBuf segment at a time, so a large
 * message is never flattened; output goes through a 16 KiB staging area and
 * is appended to the result IOBuf (into its pooled blocks) each time the
 * area fills. The copy costs a few percent of inflate's time and keeps the
 * output in ordinary blocks; writing straight into blocks would need a
 * reserve/commit call that iobuf.h does not have.
 *
 * Bombs. Decompression stops with -E2BIG as soon as the output passes
 * max_out, so a stream that claims gigabytes costs at most max_out bytes of
 * memory and the time to inflate them. Every failure, that one included,
 * takes back what was appended to the output.
 *
 * Level. We compress at level 1 (Z_BEST_SPEED) where brpc uses zlib's
 * default (6): on RPC payloads level 1 is about three times faster for
 * output some 10-15% larger, and compression on the call path costs
 * latency on every call while the bytes it saves matter only on slow links.
 * Small messages also get a window and hash table sized to them (a window
 * larger than the input finds no more matches): zlib's defaults allocate
 * and clear ~256 KiB per stream, which would cost more than compressing a
 * 200-byte message. Any inflater reads streams made with smaller windows.
 */
#include "rpc/codec_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <zlib.h>

#include "rpc/controller.h"

#define STAGE_SIZE 16384
#define LEVEL Z_BEST_SPEED
#define GZIP_WBITS_OFFSET 16 /* windowBits + 16 selects the gzip wrapper */
#define MIN_WBITS 9          /* zlib refuses 8 for deflate */

/* One compression or decompression: zlib's stream, where we are in the
 * input IOBuf, and the staging area for output. On the heap: it is too big
 * for a small fiber stack. */
typedef struct zjob {
    z_stream zs;
    const weft_iobuf_t *in;
    size_t seg, nseg;   /* next input segment, number of segments */
    weft_iobuf_t *out;
    size_t out_start;   /* length of out before we began */
    uint8_t stage[STAGE_SIZE];
} zjob_t;

bool weft__compress_supported(int type)
{
    return type == WEFT_COMPRESS_NONE || type == WEFT_COMPRESS_GZIP ||
           type == WEFT_COMPRESS_ZLIB;
}

static bool is_zlib_type(int type)
{
    return type == WEFT_COMPRESS_GZIP || type == WEFT_COMPRESS_ZLIB;
}

static int wbits_for(int type, int wbits)
{
    return type == WEFT_COMPRESS_GZIP ? wbits + GZIP_WBITS_OFFSET : wbits;
}

static zjob_t *job_new(const weft_iobuf_t *in, weft_iobuf_t *out)
{
    zjob_t *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    j->in = in;
    j->nseg = weft_iobuf_segments(in);
    j->out = out;
    j->out_start = weft_iobuf_length(out);
    j->zs.next_out = j->stage;
    j->zs.avail_out = STAGE_SIZE;
    return j;
}

/* Points zlib at the next input segment once it has used up the last one.
 * Returns true while input remains. A segment always fits zlib's 32-bit
 * count: IOBuf references are 32-bit. */
static bool feed(zjob_t *j)
{
    if (j->zs.avail_in == 0 && j->seg < j->nseg) {
        size_t len;
        const void *p = weft_iobuf_segment(j->in, j->seg++, &len);
        j->zs.next_in = (Bytef *)p;
        j->zs.avail_in = (uInt)len;
    }
    return j->zs.avail_in > 0 || j->seg < j->nseg;
}

/* Bytes produced so far: appended plus staged. */
static size_t produced(const zjob_t *j)
{
    return weft_iobuf_length(j->out) - j->out_start + (STAGE_SIZE - j->zs.avail_out);
}

/* Appends the staged output to out and empties the staging area. */
static int drain(zjob_t *j)
{
    size_t n = STAGE_SIZE - j->zs.avail_out;
    if (n && weft_iobuf_append(j->out, j->stage, n) < 0)
        return -ENOMEM;
    j->zs.next_out = j->stage;
    j->zs.avail_out = STAGE_SIZE;
    return 0;
}

/* Window bits and memLevel for n input bytes: the window just covers the
 * input, and the hash table (2^(memLevel + 7) heads) shrinks with it. */
static void deflate_sizes(size_t n, int *wbits, int *mem_level)
{
    int w = MIN_WBITS;
    while (w < MAX_WBITS && ((size_t)1 << w) < n)
        w++;
    *wbits = w;
    *mem_level = w - 7; /* 2 for the smallest window, zlib's default 8 at 15 */
}

static int run_deflate(zjob_t *j)
{
    for (;;) {
        int flush = feed(j) ? Z_NO_FLUSH : Z_FINISH;
        int rc = deflate(&j->zs, flush);
        if (rc == Z_STREAM_END)
            return drain(j);
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            return rc == Z_MEM_ERROR ? -ENOMEM : -EINVAL;
        if (j->zs.avail_out == 0 && drain(j) < 0)
            return -ENOMEM;
    }
}

static int zlib_compress(int type, const weft_iobuf_t *in, weft_iobuf_t *out)
{
    zjob_t *j = job_new(in, out);
    if (!j)
        return -ENOMEM;
    int wbits, mem_level, rc;
    deflate_sizes(weft_iobuf_length(in), &wbits, &mem_level);
    if (deflateInit2(&j->zs, LEVEL, Z_DEFLATED, wbits_for(type, wbits), mem_level,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
        rc = -ENOMEM;
        goto out;
    }
    rc = run_deflate(j);
    deflateEnd(&j->zs);
out:
    if (rc < 0)
        weft_iobuf_pop_back(out, weft_iobuf_length(out) - j->out_start);
    free(j);
    return rc;
}

/* Inflates all of the input, stream after stream. */
static int run_inflate(zjob_t *j, size_t max_out)
{
    for (;;) {
        bool more = feed(j);
        int rc = inflate(&j->zs, Z_NO_FLUSH);
        if (produced(j) > max_out)
            return -E2BIG;
        if (j->zs.avail_out == 0 && drain(j) < 0)
            return -ENOMEM;
        switch (rc) {
        case Z_STREAM_END:
            if (!feed(j))
                return drain(j);
            /* Another stream follows, as brpc accepts. */
            if (inflateReset(&j->zs) != Z_OK)
                return -EINVAL;
            break;
        case Z_OK:
            break;
        case Z_BUF_ERROR: /* no progress possible: input ran out mid-stream */
            if (!more)
                return -EINVAL;
            break;
        case Z_MEM_ERROR:
            return -ENOMEM;
        default: /* Z_DATA_ERROR, Z_NEED_DICT (a preset dictionary) */
            return -EINVAL;
        }
    }
}

static int zlib_decompress(int type, const weft_iobuf_t *in, weft_iobuf_t *out, size_t max_out)
{
    zjob_t *j = job_new(in, out);
    if (!j)
        return -ENOMEM;
    int rc;
    if (inflateInit2(&j->zs, wbits_for(type, MAX_WBITS)) != Z_OK) {
        rc = -ENOMEM;
        goto out;
    }
    /* No input at all is no stream, not an empty one. */
    rc = j->nseg ? run_inflate(j, max_out) : -EINVAL;
    inflateEnd(&j->zs);
out:
    if (rc < 0)
        weft_iobuf_pop_back(out, weft_iobuf_length(out) - j->out_start);
    free(j);
    return rc;
}

int weft__compress(int type, const weft_iobuf_t *in, weft_iobuf_t *out)
{
    if (type == WEFT_COMPRESS_NONE)
        return weft_iobuf_append_buf(out, in);
    if (!is_zlib_type(type))
        return -ENOTSUP;
    return zlib_compress(type, in, out);
}

int weft__decompress(int type, const weft_iobuf_t *in, weft_iobuf_t *out, size_t max_out)
{
    if (type == WEFT_COMPRESS_NONE)
        return weft_iobuf_length(in) > max_out ? -E2BIG : weft_iobuf_append_buf(out, in);
    if (!is_zlib_type(type))
        return -ENOTSUP;
    return zlib_decompress(type, in, out, max_out);
}
