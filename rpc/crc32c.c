/*
 * crc32c.c - CRC-32C (Castagnoli), the checksum of baidu_std messages.
 *
 * Two implementations of the same function, picked once at run time:
 *
 * - Hardware: the SSE4.2 crc32 instruction folds 8 bytes into the CRC in
 *   one instruction, but its result is needed by the next one three cycles
 *   later, so a single chain runs at a third of what the unit can do. Long
 *   runs are therefore cut in three interleaved streams whose CRCs are
 *   joined at the end: the CRC of A followed by B is the CRC of A "shifted"
 *   over |B| zero bytes, xor the CRC of B from a zero register, and a shift
 *   by a fixed length is a linear map we tabulate once (four 256-entry
 *   tables, as in Mark Adler's crc32c.c). Only that function is compiled
 *   for SSE4.2 (target attribute), so the rest of weft builds and runs on
 *   any x86-64, and the CPU is asked once whether it may be called.
 *
 * - Software: slicing-by-8, eight 256-entry tables that fold 8 bytes per
 *   step with eight independent look-ups instead of eight dependent ones.
 *
 * Tables are computed at first use (a few microseconds) rather than written
 * out as 12 KiB of constants. weft__crc32c takes and returns the finished
 * CRC (pre- and post-inverted inside), so calls chain like zlib's crc32().
 */
#include "rpc/codec_internal.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#define HAVE_HW 1
#else
#define HAVE_HW 0
#endif

#define POLY 0x82f63b78u /* Castagnoli polynomial 0x1EDC6F41, bit-reflected */

/* Lengths of the three interleaved streams of the hardware path. IOBuf
 * segments are at most ~8 KiB, so the long stride must fit three times in
 * one: 3 x 2 KiB does; the short stride catches the rest of a segment. */
#define LONG_STRIDE 2048
#define SHORT_STRIDE 256

static uint32_t slice[8][256];       /* slicing-by-8 */
static uint32_t shift_long[4][256];  /* register shifted over LONG_STRIDE zeros */
static uint32_t shift_short[4][256]; /* ... over SHORT_STRIDE zeros */
static bool hw_ok;
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* ---- tables ---- */

static void slice_tables_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
        slice[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int k = 1; k < 8; k++)
            slice[k][n] = (slice[k - 1][n] >> 8) ^ slice[0][slice[k - 1][n] & 0xff];
}

/* GF(2) 32x32 matrices, one column per bit, for the zero-shift operator. */
static uint32_t gf2_times(const uint32_t *mat, uint32_t vec)
{
    uint32_t sum = 0;
    for (; vec; vec >>= 1, mat++)
        if (vec & 1)
            sum ^= *mat;
    return sum;
}

static void gf2_square(uint32_t *square, const uint32_t *mat)
{
    for (int n = 0; n < 32; n++)
        square[n] = gf2_times(mat, mat[n]);
}

/* Tables that shift a CRC register over len zero bytes (len a power of
 * two): the operator for one zero bit, squared up to 8 * len bits, then
 * applied to each byte position of the register. */
static void shift_tables_init(uint32_t tab[4][256], size_t len)
{
    uint32_t op[32], sq[32];
    op[0] = POLY;
    for (int n = 1; n < 32; n++)
        op[n] = 1u << (n - 1);
    for (size_t bits = 1; bits < 8 * len; bits <<= 1) {
        gf2_square(sq, op);
        memcpy(op, sq, sizeof(op));
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int k = 0; k < 4; k++)
            tab[k][n] = gf2_times(op, n << (8 * k));
}

static uint32_t shift(uint32_t tab[4][256], uint32_t crc)
{
    return tab[0][crc & 0xff] ^ tab[1][(crc >> 8) & 0xff] ^ tab[2][(crc >> 16) & 0xff] ^
           tab[3][crc >> 24];
}

static void init(void)
{
    slice_tables_init();
#if HAVE_HW
    __builtin_cpu_init();
    hw_ok = __builtin_cpu_supports("sse4.2");
    shift_tables_init(shift_long, LONG_STRIDE);
    shift_tables_init(shift_short, SHORT_STRIDE);
#endif
}

static inline void ensure_init(void)
{
    pthread_once(&once, init);
}

/* ---- software ---- */

static inline uint64_t load_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static uint32_t crc_sw(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    for (; n && ((uintptr_t)p & 7); n--)
        crc = slice[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t w = load_le64(p) ^ crc;
        crc = slice[7][w & 0xff] ^ slice[6][(w >> 8) & 0xff] ^ slice[5][(w >> 16) & 0xff] ^
              slice[4][(w >> 24) & 0xff] ^ slice[3][(w >> 32) & 0xff] ^
              slice[2][(w >> 40) & 0xff] ^ slice[1][(w >> 48) & 0xff] ^ slice[0][w >> 56];
    }
    for (; n; n--)
        crc = slice[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* ---- hardware ---- */

#if HAVE_HW
/* Folds len bytes (a multiple of 8) at p into crc0 as three streams of
 * stride bytes each, for as long as three strides remain. */
__attribute__((target("sse4.2"), always_inline)) static inline uint64_t
hw_triple(uint64_t crc0, const uint8_t **pp, size_t *np, size_t stride, uint32_t tab[4][256])
{
    const uint8_t *p = *pp;
    size_t n = *np;
    for (; n >= 3 * stride; n -= 3 * stride, p += 3 * stride) {
        uint64_t crc1 = 0, crc2 = 0, w0, w1, w2;
        for (size_t i = 0; i < stride; i += 8) {
            memcpy(&w0, p + i, 8);
            memcpy(&w1, p + stride + i, 8);
            memcpy(&w2, p + 2 * stride + i, 8);
            crc0 = _mm_crc32_u64(crc0, w0);
            crc1 = _mm_crc32_u64(crc1, w1);
            crc2 = _mm_crc32_u64(crc2, w2);
        }
        crc0 = shift(tab, (uint32_t)crc0) ^ (uint32_t)crc1;
        crc0 = shift(tab, (uint32_t)crc0) ^ (uint32_t)crc2;
    }
    *pp = p;
    *np = n;
    return crc0;
}

__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t n)
{
    uint64_t c = ~crc;
    /* Aligned 8-byte loads never straddle a cache line. */
    for (; n && ((uintptr_t)p & 7); n--)
        c = _mm_crc32_u8((uint32_t)c, *p++);
    if (n >= 3 * SHORT_STRIDE) {
        c = hw_triple(c, &p, &n, LONG_STRIDE, shift_long);
        c = hw_triple(c, &p, &n, SHORT_STRIDE, shift_short);
    }
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
    }
    for (; n; n--)
        c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}
#endif

/* ---- entry points ---- */

bool weft__crc32c_hw_available(void)
{
    ensure_init();
    return hw_ok;
}

uint32_t weft__crc32c_sw(uint32_t crc, const void *data, size_t n)
{
    ensure_init();
    return crc_sw(crc, data, n);
}

uint32_t weft__crc32c_hw(uint32_t crc, const void *data, size_t n)
{
    ensure_init();
#if HAVE_HW
    if (hw_ok)
        return crc_hw(crc, data, n);
#endif
    return crc_sw(crc, data, n);
}

uint32_t weft__crc32c(uint32_t crc, const void *data, size_t n)
{
    return weft__crc32c_hw(crc, data, n);
}

uint32_t weft__crc32c_iobuf(const weft_iobuf_t *b)
{
    uint32_t crc = 0;
    size_t nseg = weft_iobuf_segments(b);
    for (size_t i = 0; i < nseg; i++) {
        size_t len;
        const void *p = weft_iobuf_segment(b, i, &len);
        crc = weft__crc32c(crc, p, len);
    }
    return crc;
}
