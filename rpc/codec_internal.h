/*
 * codec_internal.h - the byte-level codecs under baidu_std: compression of
 * the message part, the CRC32C checksum, and the nesting check run on a
 * peer's protobuf bytes before protobuf-c unpacks them.
 *
 * All three work on bytes a peer chose, so none of them trusts a length or
 * a size it reads: bad bytes give -EINVAL, too much output or nesting gives
 * -E2BIG, and nothing here crashes, recurses without bound or allocates in
 * proportion to what the peer claims. None of them blocks, so all are safe
 * from fibers, and none needs more than a few KiB of stack.
 */
#ifndef WEFT_RPC_CODEC_INTERNAL_H
#define WEFT_RPC_CODEC_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "net/iobuf.h"

/* --- compression (compress.c) -------------------------------------------- */

/* Types are the WEFT_COMPRESS_* values of rpc/controller.h, which are the
 * compress_type numbers of the wire: 0 none, 2 gzip (RFC 1952), 3 zlib
 * (RFC 1950). Snappy (1), lz4 (4) and anything else are not supported. */
bool weft__compress_supported(int type);

/* Appends the compressed form of in to out (type 0: in itself, by
 * reference). Returns 0, -ENOTSUP for an unsupported type or -ENOMEM; on
 * failure out is as it was. */
int weft__compress(int type, const weft_iobuf_t *in, weft_iobuf_t *out);

/* Appends the decompressed form of in to out. Returns 0; -EINVAL if in is
 * not one complete stream of that format (corrupt, truncated, trailing
 * garbage; several gzip members or zlib streams back to back are accepted,
 * as brpc accepts them); -E2BIG as soon as the output would pass max_out
 * bytes, so a small bomb costs at most max_out bytes and the time to make
 * them; -ENOTSUP for an unsupported type; -ENOMEM. On failure out is as it
 * was. */
int weft__decompress(int type, const weft_iobuf_t *in, weft_iobuf_t *out, size_t max_out);

/* --- CRC32C (crc32c.c) --------------------------------------------------- */

/* CRC-32C (Castagnoli, as in iSCSI and ext4) of n bytes, continuing from
 * crc, the CRC of the bytes before them (0 to start): crc32c(crc32c(0, a),
 * b) is the CRC of a followed by b. Uses the SSE4.2 crc32 instruction when
 * the CPU has it, a table otherwise. */
uint32_t weft__crc32c(uint32_t crc, const void *data, size_t n);

/* CRC32C of all the bytes of b. */
uint32_t weft__crc32c_iobuf(const weft_iobuf_t *b);

/* The two implementations, for tests and benchmarks. weft__crc32c_hw falls
 * back to the table when weft__crc32c_hw_available() is false. */
uint32_t weft__crc32c_sw(uint32_t crc, const void *data, size_t n);
uint32_t weft__crc32c_hw(uint32_t crc, const void *data, size_t n);
bool weft__crc32c_hw_available(void);

/* baidu_std (like LevelDB) stores a "masked" CRC: a CRC of bytes that hold
 * CRCs is badly behaved, so the stored value is rotated and offset. */
static inline uint32_t weft__crc32c_mask(uint32_t crc)
{
    return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

static inline uint32_t weft__crc32c_unmask(uint32_t masked)
{
    uint32_t rot = masked - 0xa282ead8u;
    return (rot >> 17) | (rot << 15);
}

/* checksum_value holds the masked CRC as 4 bytes, big-endian. */
static inline void weft__crc32c_store_be(uint32_t v, uint8_t out[4])
{
    out[0] = (uint8_t)(v >> 24);
    out[1] = (uint8_t)(v >> 16);
    out[2] = (uint8_t)(v >> 8);
    out[3] = (uint8_t)v;
}

static inline uint32_t weft__crc32c_load_be(const uint8_t in[4])
{
    return (uint32_t)in[0] << 24 | (uint32_t)in[1] << 16 | (uint32_t)in[2] << 8 | in[3];
}

/* --- protobuf nesting check (pb_check.c) --------------------------------- */

/* The largest max_depth weft__pb_check takes (protobuf's own default
 * recursion limit). */
#define WEFT__PB_CHECK_MAX_DEPTH 100

/* Walks the wire bytes of a message of type desc, descending into the
 * fields the descriptor says are messages, without recursion and in time
 * linear in len. Returns 0 if no embedded message lies more than max_depth
 * levels below the top one (a message with no message fields set is at
 * depth 0), -E2BIG at the first one that does, -EINVAL if the bytes are
 * malformed (bad tag or varint, length past the end of its message, wire
 * type 3, 4, 6 or 7, a message field that is not length-delimited) or an
 * argument is (max_depth outside 0..WEFT__PB_CHECK_MAX_DEPTH). Bytes that
 * protobuf_c_message_unpack would accept never give -EINVAL, and it
 * recurses exactly where this check descends, so after a 0 unpacking
 * nests at most max_depth + 1 calls deep (protobuf-c uses about 1 KiB of
 * stack per level). Unknown fields and bytes are not looked into. */
int weft__pb_check(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                   int max_depth);

#endif
