/*
 * strbuf.c - the growable string of strbuf.h.
 */
#include "strbuf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Makes room for n more bytes and the NUL. 0 or -ENOMEM (then sticky). */
static int reserve(strbuf_t *b, size_t n)
{
    if (b->err)
        return b->err;
    if (b->len + n + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) {
        strbuf_fail(b, -ENOMEM);
        return b->err;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

void strbuf_append_n(strbuf_t *b, const char *s, size_t n)
{
    if (reserve(b, n))
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void strbuf_append(strbuf_t *b, const char *s)
{
    strbuf_append_n(b, s, strlen(s));
}

void strbuf_append_char(strbuf_t *b, char c)
{
    strbuf_append_n(b, &c, 1);
}

void strbuf_printf(strbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        strbuf_fail(b, -EINVAL);
        return;
    }
    if (reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void strbuf_fail(strbuf_t *b, int err)
{
    if (!b->err)
        b->err = err;
}

const char *strbuf_str(const strbuf_t *b)
{
    return b->data && !b->err ? b->data : "";
}

int strbuf_error(const strbuf_t *b)
{
    return b->err;
}

void strbuf_clear(strbuf_t *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

char *strbuf_take(strbuf_t *b)
{
    if (b->err || reserve(b, 0)) {
        strbuf_free(b);
        return NULL;
    }
    char *s = b->data;
    *b = (strbuf_t)STRBUF_INIT;
    return s;
}

void strbuf_free(strbuf_t *b)
{
    free(b->data);
    *b = (strbuf_t)STRBUF_INIT;
}
