/*
 * strbuf.h - a growable string, what protoc-gen-weft builds names and
 * generated files in.
 *
 * Errors are sticky: once an allocation has failed, every later append does
 * nothing and strbuf_error() returns -ENOMEM, so code that writes a whole
 * file appends freely and checks once at the end.
 */
#ifndef PGW_STRBUF_H
#define PGW_STRBUF_H

#include <stddef.h>

typedef struct strbuf {
    char *data; /* NUL-terminated once anything was appended */
    size_t len;
    size_t cap;
    int err; /* 0, or the first error (a negative errno) */
} strbuf_t;

#define STRBUF_INIT {0}

void strbuf_append_n(strbuf_t *b, const char *s, size_t n);
void strbuf_append(strbuf_t *b, const char *s);
void strbuf_append_char(strbuf_t *b, char c);
void strbuf_printf(strbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Makes the buffer fail with err (a negative errno) unless it already
 * failed: for errors found while generating, such as a bad template. */
void strbuf_fail(strbuf_t *b, int err);

/* The text so far; "" when empty or after an error. */
const char *strbuf_str(const strbuf_t *b);
int strbuf_error(const strbuf_t *b);

/* Empties the buffer but keeps its memory (and its error). */
void strbuf_clear(strbuf_t *b);

/* Hands the text to the caller (free() it) and empties the buffer. NULL
 * after an error. */
char *strbuf_take(strbuf_t *b);

void strbuf_free(strbuf_t *b);

#endif
