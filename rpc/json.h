/*
 * json.h - a strict JSON parser (RFC 8259), a small JSON writer, and the
 * conversion between JSON and protobuf-c messages (proto3's JSON mapping).
 *
 * Internal to weft (weft__json_*): weft-bench fills requests from JSON and
 * prints responses as JSON with it, and the HTTP/JSON protocol will do the
 * same for servers.
 *
 * Parsing builds a small tree in one arena owned by the document: one
 * free() releases everything. The parser is strict: exactly one value,
 * surrounded by optional whitespace; no comments, no trailing commas, no
 * leading zeros, no NaN; strings must be valid UTF-8 with escaped control
 * characters, and \u escapes must pair their surrogates. Nesting is bounded
 * (max_depth), so a hostile document cannot exhaust a fiber's stack. Every
 * error names the byte offset where the document stopped making sense.
 *
 * Conversion follows proto3's JSON mapping, for proto2 and proto3 messages
 * alike: a message is an object; keys are the field names of the .proto
 * file or their lowerCamelCase JSON names; 64-bit integers are written as
 * strings and read from numbers or strings; bytes are base64 (standard or
 * URL-safe, padding optional, on input); enums are names (or numbers, on
 * input); floats also take "NaN", "Infinity" and "-Infinity"; null means
 * "not set". Unknown keys, a key given twice, two members of one oneof,
 * out-of-range numbers and missing required (proto2) fields are errors.
 * Maps are not special: protobuf-c sees them as repeated entry messages,
 * and so does this module ([{"key": .., "value": ..}]).
 */
#ifndef WEFT_RPC_JSON_H
#define WEFT_RPC_JSON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The default (and a sane) limit of nested arrays and objects. */
#define WEFT_JSON_MAX_DEPTH 64

typedef enum weft_json_type {
    WEFT_JSON_NULL,
    WEFT_JSON_BOOL,
    WEFT_JSON_NUMBER,
    WEFT_JSON_STRING,
    WEFT_JSON_ARRAY,
    WEFT_JSON_OBJECT,
} weft_json_type_t;

typedef struct weft_json_value weft_json_value_t;
typedef struct weft_json_member weft_json_member_t;

struct weft_json_value {
    weft_json_type_t type;
    size_t offset; /* byte offset of the value's first character */
    union {
        bool boolean;
        struct {
            const char *text; /* as written, NUL-terminated: exact integers */
            double value;     /* the nearest double */
        } number;
        struct {
            const char *str; /* decoded UTF-8, NUL-terminated; may hold NULs */
            size_t len;
        } string;
        struct {
            const weft_json_value_t *items;
            size_t n;
        } array;
        struct {
            const weft_json_member_t *members; /* in document order */
            size_t n;
        } object;
    } u;
};

struct weft_json_member {
    const char *key; /* decoded, NUL-terminated; may hold NULs */
    size_t key_len;
    weft_json_value_t value;
};

typedef struct weft_json_doc weft_json_doc_t;

typedef struct weft_json_error {
    size_t offset;     /* where in the text */
    char message[192]; /* "at byte 12: expected ':' after an object key" */
} weft_json_error_t;

/* ---- parsing ---- */

/*
 * Parses text[0..len) (no NUL needed). max_depth <= 0 means
 * WEFT_JSON_MAX_DEPTH. Returns 0 and *out (free it with weft__json_free),
 * -EINVAL with *err filled (err may be NULL), or -ENOMEM.
 */
int weft__json_parse(const char *text, size_t len, int max_depth, weft_json_doc_t **out,
                     weft_json_error_t *err);
void weft__json_free(weft_json_doc_t *doc);
const weft_json_value_t *weft__json_root(const weft_json_doc_t *doc);

/* The first member of an object named key, or NULL (also for non-objects). */
const weft_json_value_t *weft__json_get(const weft_json_value_t *obj, const char *key);

/* A number as an exact integer: 0, -EINVAL (not a number, or not integral)
 * or -ERANGE. "1e3" and "2.0" are integral; "1.5" is not. */
int weft__json_int64(const weft_json_value_t *v, int64_t *out);
int weft__json_uint64(const weft_json_value_t *v, uint64_t *out);

/* ---- writing ---- */

/* A growing text buffer. Appends never fail visibly: running out of memory
 * sets `oom` and later appends do nothing; check it once at the end. */
typedef struct weft_json_buf {
    char *data; /* NUL-terminated while not oom */
    size_t len, cap;
    bool oom;
} weft_json_buf_t;

#define WEFT_JSON_BUF_INIT                                                                         \
    {                                                                                              \
        0                                                                                          \
    }

void weft__json_buf_free(weft_json_buf_t *b);
void weft__json_buf_append(weft_json_buf_t *b, const char *data, size_t n);
void weft__json_buf_puts(weft_json_buf_t *b, const char *s);
void weft__json_buf_printf(weft_json_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A JSON string literal: quoted, escaped; invalid UTF-8 becomes U+FFFD. */
void weft__json_write_string(weft_json_buf_t *b, const char *s, size_t len);
/* A finite double in the fewest digits that read back to it ("null" for
 * NaN and infinities, which JSON cannot write as numbers). */
void weft__json_write_double(weft_json_buf_t *b, double v);

/* ---- protobuf ---- */

/*
 * Fills a new message of type desc from a JSON object. Memory comes from
 * allocator (NULL: malloc), so protobuf_c_message_free_unpacked(*out,
 * allocator) frees it. Returns 0, -EINVAL with *err filled (the offset is
 * that of the offending value, the message names the field path), or
 * -ENOMEM.
 */
int weft__json_to_message(const weft_json_value_t *v, const ProtobufCMessageDescriptor *desc,
                          ProtobufCAllocator *allocator, ProtobufCMessage **out,
                          weft_json_error_t *err);

/* Parse and convert in one step. */
int weft__json_parse_message(const char *text, size_t len, const ProtobufCMessageDescriptor *desc,
                             ProtobufCAllocator *allocator, ProtobufCMessage **out,
                             weft_json_error_t *err);

/* Flags of weft__json_write_message. */
#define WEFT_JSON_PROTO_NAMES 0x1u /* keys as in the .proto, not lowerCamelCase */

/*
 * Appends msg as a JSON object. Fields that are not set are left out (for
 * proto3 fields without presence: zero, empty). Unknown fields are
 * skipped. Returns 0, -ELOOP (nested deeper than WEFT_JSON_MAX_DEPTH) or
 * -ENOMEM.
 */
int weft__json_write_message(weft_json_buf_t *b, const ProtobufCMessage *msg, unsigned flags);

#ifdef __cplusplus
}
#endif
#endif
