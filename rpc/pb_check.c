/*
 * pb_check.c - how deep does a peer's protobuf message nest? Asked before
 * protobuf-c unpacks it.
 *
 * protobuf_c_message_unpack recurses once per embedded message, with about
 * 1 KiB of stack per level and no limit, so 100 KB of bytes nesting 30000
 * levels deep would run any fiber's stack out. This walk reads the same
 * wire bytes without recursion: a small array of frames (descriptor, end
 * offset) stands for the chain of messages we are inside, one frame per
 * level up to max_depth, so the walk itself needs under 2 KiB of stack
 * whatever the input, and stops at the first level too many.
 *
 * The walk must descend exactly where protobuf-c will, or a crafted tag
 * could hide a deep message from it. So it reads tags, varints and lengths
 * by protobuf-c 1.4's rules, including their leniencies: a tag is a varint
 * of at most 5 bytes whose first byte is not a bare field 0 (the field
 * number is the varint shifted right by 3, truncated to 32 bits), a varint
 * value has at most 10 bytes, a length at most 5 bytes and at most INT_MAX,
 * and it must fit in the enclosing message. A field the descriptor calls a
 * message is descended into; every other field, known or not, is skipped
 * by its wire type. Each byte is read once, so the time is linear.
 */
#include "rpc/codec_internal.h"

#include <errno.h>
#include <limits.h>

#define WIRE_VARINT 0
#define WIRE_64BIT 1
#define WIRE_LENGTH 2
#define WIRE_32BIT 5

#define MAX_TAG_BYTES 5
#define MAX_VARINT_BYTES 10
#define MAX_LENGTH_BYTES 5

/* A message we are inside: its type and where its bytes end. */
typedef struct pb_frame {
    const ProtobufCMessageDescriptor *desc;
    size_t end;
} pb_frame_t;

/* Reads a varint of at most max bytes from the rem bytes at p; returns the
 * bytes it took, or 0 if it does not end within them. */
static size_t read_varint(const uint8_t *p, size_t rem, size_t max, uint64_t *v)
{
    uint64_t x = 0;
    size_t n = rem < max ? rem : max;
    for (size_t i = 0; i < n; i++) {
        x |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            *v = x;
            return i + 1;
        }
    }
    return 0;
}

/* The message type of a field, or NULL if the field is unknown or not a
 * message. */
static const ProtobufCMessageDescriptor *submessage(const ProtobufCMessageDescriptor *desc,
                                                    uint32_t number)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(desc, number);
    return f && f->type == PROTOBUF_C_TYPE_MESSAGE ? f->descriptor : NULL;
}

/* Size of the value that follows a tag of wire type `wire`, within the rem
 * bytes at p; for a length-delimited value *hdr is the size of its length
 * prefix (else 0). 0 if the value is malformed: no value is empty. */
static size_t value_size(unsigned wire, const uint8_t *p, size_t rem, size_t *hdr)
{
    uint64_t v;
    *hdr = 0;
    switch (wire) {
    case WIRE_VARINT:
        return read_varint(p, rem, MAX_VARINT_BYTES, &v);
    case WIRE_64BIT:
        return rem >= 8 ? 8 : 0;
    case WIRE_32BIT:
        return rem >= 4 ? 4 : 0;
    case WIRE_LENGTH:
        *hdr = read_varint(p, rem, MAX_LENGTH_BYTES, &v);
        return *hdr && v <= INT_MAX && v <= rem - *hdr ? *hdr + (size_t)v : 0;
    default: /* 3 and 4 (groups), 6 and 7: protobuf-c refuses them too */
        return 0;
    }
}

/* Reads the field at *pos in a message of type desc ending at end. A
 * message field leaves *pos at the start of its bytes, with *sub set to its
 * type and *sub_end to where they end; any other field is skipped whole and
 * *sub is NULL. Returns 0 or -EINVAL. */
static int next_field(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t *pos,
                      size_t end, const ProtobufCMessageDescriptor **sub, size_t *sub_end)
{
    const uint8_t *p = data + *pos;
    size_t rem = end - *pos;
    uint64_t tag;
    size_t n = read_varint(p, rem, MAX_TAG_BYTES, &tag);
    if (n == 0 || p[0] < 8) /* p[0] < 8: field 0, refused by protobuf-c */
        return -EINVAL;
    unsigned wire = tag & 7;
    size_t hdr, size = value_size(wire, p + n, rem - n, &hdr);
    if (size == 0)
        return -EINVAL;
    *sub = submessage(desc, (uint32_t)(tag >> 3));
    if (!*sub) {
        *pos += n + size;
        return 0;
    }
    if (wire != WIRE_LENGTH) /* protobuf-c refuses it too */
        return -EINVAL;
    *sub_end = *pos + n + size;
    *pos += n + hdr;
    return 0;
}

int weft__pb_check(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                   int max_depth)
{
    if (!desc || (!data && len) || max_depth < 0 || max_depth > WEFT__PB_CHECK_MAX_DEPTH)
        return -EINVAL;
    pb_frame_t frames[WEFT__PB_CHECK_MAX_DEPTH + 1];
    int depth = 0;
    size_t pos = 0;
    frames[0] = (pb_frame_t){desc, len};
    for (;;) {
        while (pos == frames[depth].end) {
            if (depth == 0)
                return 0;
            depth--;
        }
        const ProtobufCMessageDescriptor *sub;
        size_t sub_end;
        int rc = next_field(frames[depth].desc, data, &pos, frames[depth].end, &sub, &sub_end);
        if (rc < 0)
            return rc;
        if (!sub)
            continue;
        if (depth == max_depth)
            return -E2BIG;
        frames[++depth] = (pb_frame_t){sub, sub_end};
    }
}
