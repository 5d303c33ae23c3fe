/*
 * compress.c - gzip and zlib compression of the message part of an RPC.
 *
 * baidu_std's compress_type 2 is the gzip format (RFC 1952) and 3 the zlib
 * format (RFC 1950), both around one deflate stream; brpc makes them with
 * protobuf's GzipOutputStream and reads them with GzipInputStream, which
 * also reads several streams back to back, so we do too.
 *
 * Streaming. Input is fed to zlib one IOBuf segment at a time, so a large
 * message is never flattened; output goes through a staging area of up to
 * 64 KiB (on the heap, not the fiber stack) and is appended to the result
 * IOBuf, into its pooled blocks, each time the area fills. Writing straight
 * into blocks would save that copy but needs a reserve/commit call that
 * iobuf.h does not have; the copy is small next to inflate's own work.
 *
 * Bombs. Decompression stops with -E2BIG as soon as the output passes
 * max_out, so a stream that claims gigabytes costs at most max_out bytes of
 * memory and the time to inflate them. Every failure, that one included,
 * takes back what was appended to the output.
 *
 * Level. We compress at level 1 (Z_BEST_SPEED) where brpc uses zlib's
 * default (6): on message-like data level 1 is 1.5 to 5.5 times faster for
 * output 3 to 21% larger. Compression on the call path costs latency on
 * every call, while the bytes it saves matter only on slow links; anyone
 * who needs the last 20% is better served by a stronger codec than by
 * gzip -6. Small messages also get a window and hash table sized to them
 * (a window larger than the input finds no more matches): zlib's defaults
 * allocate and clear ~256 KiB per stream, which costs ~50 us, ten times
 * more than compressing a 200-byte message. Every inflater accepts streams
 * made with a smaller window.
 */
#include "rpc/codec_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "rpc/controller.h"

#define STAGE_MAX (64 * 1024)
#define LEVEL Z_BEST_SPEED
#define GZIP_WBITS_OFFSET 16 /* windowBits + 16 selects the gzip wrapper */
#define GZIP_OVERHEAD 18     /* gzip's header and trailer, more than zlib's */
#define MIN_WBITS 9          /* zlib refuses 8 for deflate */

/* One compression or decompression: zlib's stream, where we are in the
 * input IOBuf, and the staging area for output. */
typedef struct zjob {
    z_stream zs;
    const weft_iobuf_t *in;
    size_t seg, nseg;   /* next input segment, number of segments */
    weft_iobuf_t *out;
    size_t out_start;   /* length of out before we began */
    size_t stage_size;
    uint8_t stage[];
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

/* A job whose staging area holds `want` bytes, at most STAGE_MAX: small
 * messages get small areas. A larger area would gain little: streaming
 * inflate through 64 KiB runs within ~5% of inflating in one call. */
static zjob_t *job_new(const weft_iobuf_t *in, weft_iobuf_t *out, size_t want)
{
    size_t stage = want < STAGE_MAX ? want : STAGE_MAX;
    zjob_t *j = malloc(sizeof(*j) + stage);
    if (!j)
        return NULL;
    memset(j, 0, sizeof(*j));
    j->in = in;
    j->nseg = weft_iobuf_segments(in);
    j->out = out;
    j->out_start = weft_iobuf_length(out);
    j->stage_size = stage;
    j->zs.next_out = j->stage;
    j->zs.avail_out = (uInt)stage;
    return j;
}

/* Takes back what a failed job appended, frees the job, returns rc. */
static int job_end(zjob_t *j, int rc)
{
    if (rc < 0)
        weft_iobuf_pop_back(j->out, weft_iobuf_length(j->out) - j->out_start);
    free(j);
    return rc;
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

/* True once zlib holds the last of the input. */
static bool last_input(const zjob_t *j)
{
    return j->seg == j->nseg;
}

/* Bytes produced so far: appended plus staged. */
static size_t produced(const zjob_t *j)
{
    return weft_iobuf_length(j->out) - j->out_start + (j->stage_size - j->zs.avail_out);
}

/* Appends the staged output to out and empties the staging area. */
static int drain(zjob_t *j)
{
    size_t n = j->stage_size - j->zs.avail_out;
    if (n && weft_iobuf_append(j->out, j->stage, n) < 0)
        return -ENOMEM;
    j->zs.next_out = j->stage;
    j->zs.avail_out = (uInt)j->stage_size;
    return 0;
}

/* ---- compression ---- */

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
    size_t n = weft_iobuf_length(in);
    zjob_t *j = job_new(in, out, compressBound(n) + GZIP_OVERHEAD);
    if (!j)
        return -ENOMEM;
    int wbits, mem_level;
    deflate_sizes(n, &wbits, &mem_level);
    if (deflateInit2(&j->zs, LEVEL, Z_DEFLATED, wbits_for(type, wbits), mem_level,
                     Z_DEFAULT_STRATEGY) != Z_OK)
        return job_end(j, -ENOMEM);
    int rc = run_deflate(j);
    deflateEnd(&j->zs);
    return job_end(j, rc);
}

/* ---- decompression ---- */

/* Inflates all of the input, stream after stream. The last input goes in
 * with Z_FINISH, which spares zlib its 32 KiB window when the stream ends
 * within that call (any small message); Z_BUF_ERROR then means either
 * "output area full" or, with room left, "input ran out mid-stream". */
static int run_inflate(zjob_t *j, size_t max_out)
{
    for (;;) {
        feed(j);
        int rc = inflate(&j->zs, last_input(j) ? Z_FINISH : Z_NO_FLUSH);
        if (produced(j) > max_out)
            return -E2BIG;
        bool full = j->zs.avail_out == 0;
        if (full && drain(j) < 0)
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
        case Z_BUF_ERROR:
            if (!full && !feed(j))
                return -EINVAL; /* truncated */
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
    /* One byte more than max_out is enough to see it passed. */
    zjob_t *j = job_new(in, out, max_out < STAGE_MAX ? max_out + 1 : STAGE_MAX);
    if (!j)
        return -ENOMEM;
    if (inflateInit2(&j->zs, wbits_for(type, MAX_WBITS)) != Z_OK)
        return job_end(j, -ENOMEM);
    /* No input at all is no stream, not an empty one. */
    int rc = j->nseg ? run_inflate(j, max_out) : -EINVAL;
    inflateEnd(&j->zs);
    return job_end(j, rc);
}

/* ---- entry points ---- */

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
