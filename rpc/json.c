/*
 * json.c - see json.h.
 *
 * The parser is recursive descent over the text with one arena for the
 * tree. Arrays and objects do not know their size until they close, so
 * their items are first pushed on two scratch stacks shared by the whole
 * parse (values, members); when a container closes, its items, which are
 * the top of the stack, are copied into the arena in one piece and popped.
 * Strings are located first (the closing quote), then decoded into an
 * arena block of the raw length, which escapes only ever shrink.
 *
 * Numbers keep their text next to the double, so that integers convert
 * exactly (a double holds only 53 bits). Reading and printing doubles goes
 * through the "C" locale, whatever setlocale() the program made, so a
 * decimal point stays a point.
 *
 * The protobuf side walks protobuf-c's descriptors: each field has an
 * offset in the struct, a type, and a label that says where its presence
 * lives (a has_ flag, a oneof case, a count, a NULL pointer, or nowhere
 * for proto3). A message under construction is always in a state that
 * protobuf_c_message_free_unpacked() can free, so any error just frees it.
 */
#include "rpc/json.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/rpc_internal.h"

/* ---- the "C" locale, for numbers ---- */

static locale_t c_locale_obj;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void c_locale_init(void)
{
    c_locale_obj = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

static locale_t c_locale(void)
{
    pthread_once(&c_locale_once, c_locale_init);
    return c_locale_obj;
}

static double c_strtod(const char *s, char **end)
{
    locale_t loc = c_locale();
    return loc ? strtod_l(s, end, loc) : strtod(s, end);
}

/* The shortest "%.Ng" text of v that reads back to v (as a float if
 * is_float). Call with a finite v; buf holds at least 32 bytes. */
static void format_shortest(char *buf, size_t size, double v, bool is_float)
{
    locale_t loc = c_locale();
    locale_t old = loc ? uselocale(loc) : (locale_t)0;
    int prec = is_float ? 6 : 15, last = is_float ? 9 : 17;
    for (; prec <= last; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        double back = strtod(buf, NULL);
        if (is_float ? (float)back == (float)v : back == v)
            break;
    }
    if (loc)
        uselocale(old);
}

/* ---- errors ---- */

static int json_error(weft_json_error_t *err, size_t offset, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Fills *err (if any) and returns -EINVAL. */
static int json_error(weft_json_error_t *err, size_t offset, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->offset = offset;
        int n = snprintf(err->message, sizeof(err->message), "at byte %zu: ", offset);
        vsnprintf(err->message + n, sizeof(err->message) - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

static const char *type_name(weft_json_type_t t)
{
    static const char *const names[] = {"null",     "a boolean", "a number",
                                        "a string", "an array",  "an object"};
    return names[t];
}

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence at s (n bytes available), or 0:
 * no overlong forms, no surrogates, nothing past U+10FFFF. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t need;
    uint32_t cp, min;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 2, cp = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3, cp = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < need)
        return 0;
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return need;
}

static size_t utf8_put(char *out, uint32_t cp)
{
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | cp >> 6);
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | cp >> 12);
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | cp >> 18);
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- number syntax, shared by the parser and by numbers in strings ---- */

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Length of the JSON number at s[0..len), or 0 with *why and *at (offset
 * from s) saying what is wrong. */
static size_t scan_number(const char *s, size_t len, const char **why, size_t *at)
{
    size_t i = 0;
    if (i < len && s[i] == '-')
        i++;
    if (i >= len || !is_digit(s[i])) {
        *why = "expected a digit", *at = i;
        return 0;
    }
    if (s[i++] == '0') {
        if (i < len && is_digit(s[i])) {
            *why = "leading zeros are not allowed", *at = i;
            return 0;
        }
    } else {
        while (i < len && is_digit(s[i]))
            i++;
    }
    if (i < len && s[i] == '.') {
        if (++i >= len || !is_digit(s[i])) {
            *why = "expected a digit after the decimal point", *at = i;
            return 0;
        }
        while (i < len && is_digit(s[i]))
            i++;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        if (++i < len && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= len || !is_digit(s[i])) {
            *why = "expected a digit in the exponent", *at = i;
            return 0;
        }
        while (i < len && is_digit(s[i]))
            i++;
    }
    return i;
}

/* The integer a valid number text stands for, as a sign and a magnitude:
 * exact for plain integers; a fraction or an exponent must still give an
 * integral value. 0, -EINVAL (not integral) or -ERANGE (past 64 bits). */
static int number_to_integer(const char *text, bool *neg, uint64_t *mag)
{
    const char *p = text;
    *neg = *p == '-';
    if (*neg)
        p++;
    if (!strpbrk(p, ".eE")) {
        uint64_t m = 0;
        for (; *p; p++) {
            unsigned d = (unsigned)(*p - '0');
            if (m > (UINT64_MAX - d) / 10)
                return -ERANGE;
            m = m * 10 + d;
        }
        *mag = m;
        return 0;
    }
    double d = fabs(c_strtod(text, NULL));
    if (d != floor(d))
        return -EINVAL;
    if (d >= 18446744073709551616.0)
        return -ERANGE;
    *mag = (uint64_t)d;
    return 0;
}

static int integer_in_range(bool neg, uint64_t mag, int64_t *out)
{
    if (neg ? mag > (uint64_t)INT64_MAX + 1 : mag > (uint64_t)INT64_MAX)
        return -ERANGE;
    *out = neg ? (int64_t)(0 - mag) : (int64_t)mag;
    return 0;
}

/* ---- the parser ---- */

typedef struct vec {
    char *data;
    size_t n, cap, elt;
} vec_t;

static int vec_push(vec_t *v, const void *item)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 16;
        char *d = realloc(v->data, cap * v->elt);
        if (!d)
            return -ENOMEM;
        v->data = d;
        v->cap = cap;
    }
    memcpy(v->data + v->n * v->elt, item, v->elt);
    v->n++;
    return 0;
}

struct weft_json_doc {
    weft__arena_t arena;
    weft_json_value_t root;
};

typedef struct parser {
    const char *text;
    size_t len, pos;
    int depth, max_depth;
    weft__arena_t *arena;
    vec_t values, members;
    weft_json_error_t *err;
} parser_t;

#define fail_at(ps, offset, ...) json_error((ps)->err, (offset), __VA_ARGS__)

/* "'x'" for a printable character, else "byte 0xNN". */
static const char *describe(char c, char buf[16])
{
    unsigned char u = (unsigned char)c;
    if (u > 0x20 && u < 0x7f)
        snprintf(buf, 16, "'%c'", c);
    else
        snprintf(buf, 16, "byte 0x%02x", u);
    return buf;
}

static void *arena_copy(parser_t *ps, const void *src, size_t n)
{
    if (n == 0)
        return NULL;
    void *p = weft__arena_alloc(ps->arena, n);
    if (p)
        memcpy(p, src, n);
    return p;
}

/* A copy in the arena of a vector's items from `mark` to its end (an
 * object's members, an array's values, collected on the parser's stack);
 * NULL when there are none. */
static void *arena_copy_tail(parser_t *ps, const vec_t *v, size_t mark)
{
    size_t n = v->n - mark;
    return n ? arena_copy(ps, (const char *)v->data + mark * v->elt, n * v->elt) : NULL;
}

static void skip_ws(parser_t *ps)
{
    while (ps->pos < ps->len) {
        char c = ps->text[ps->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            return;
        ps->pos++;
    }
}

static int parse_value(parser_t *ps, weft_json_value_t *v);

static int hex4(const char *s, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        int d = is_digit(c)              ? c - '0'
                : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                         : -1;
        if (d < 0)
            return -1;
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return 0;
}

/* Decodes the \u escape at s[k] (a backslash; the string body ends at
 * `end`): one code unit, or a surrogate pair. Advances *k past it. */
static int decode_u_escape(parser_t *ps, size_t *k, size_t end, uint32_t *cp)
{
    const char *s = ps->text;
    size_t at = *k;
    if (at + 6 > end || hex4(s + at + 2, cp) != 0)
        return fail_at(ps, at, "\\u needs four hex digits");
    *k = at + 6;
    if (*cp >= 0xDC00 && *cp <= 0xDFFF)
        return fail_at(ps, at, "unpaired low surrogate \\u%04X", *cp);
    if (*cp < 0xD800 || *cp > 0xDBFF)
        return 0;
    uint32_t lo;
    if (at + 12 > end || s[at + 6] != '\\' || s[at + 7] != 'u' || hex4(s + at + 8, &lo) != 0 ||
        lo < 0xDC00 || lo > 0xDFFF)
        return fail_at(ps, at, "high surrogate \\u%04X is not followed by a low one", *cp);
    *cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
    *k = at + 12;
    return 0;
}

/* One escape at s[*k]; appends its bytes at out[*o]. */
static int decode_escape(parser_t *ps, size_t *k, size_t end, char *out, size_t *o)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    char e = *k + 1 < end ? ps->text[*k + 1] : '\0';
    const char *hit = e ? strchr(from, e) : NULL;
    if (hit) {
        out[(*o)++] = to[hit - from];
        *k += 2;
        return 0;
    }
    if (e != 'u') {
        char buf[16];
        return fail_at(ps, *k, "invalid escape: backslash before %s", describe(e, buf));
    }
    uint32_t cp = 0;
    int rc = decode_u_escape(ps, k, end, &cp);
    if (rc == 0)
        *o += utf8_put(out + *o, cp);
    return rc;
}

/* The string starting at the quote at ps->pos, decoded into the arena. */
static int parse_string(parser_t *ps, const char **str, size_t *len)
{
    const char *s = ps->text;
    size_t start = ps->pos + 1, end = start;
    while (end < ps->len && s[end] != '"')
        end += s[end] == '\\' ? 2 : 1;
    if (end >= ps->len)
        return fail_at(ps, ps->pos, "unterminated string");
    char *out = weft__arena_alloc(ps->arena, end - start + 1);
    if (!out)
        return -ENOMEM;
    size_t o = 0;
    for (size_t k = start; k < end;) {
        unsigned char c = (unsigned char)s[k];
        if (c == '\\') {
            int rc = decode_escape(ps, &k, end, out, &o);
            if (rc != 0)
                return rc;
        } else if (c < 0x20) {
            return fail_at(ps, k, "control character 0x%02x must be escaped in a string", c);
        } else {
            size_t n = utf8_len((const unsigned char *)s + k, end - k);
            if (n == 0)
                return fail_at(ps, k, "invalid UTF-8 in a string");
            memcpy(out + o, s + k, n);
            o += n;
            k += n;
        }
    }
    out[o] = '\0';
    *str = out;
    *len = o;
    ps->pos = end + 1;
    return 0;
}

static int parse_number(parser_t *ps, weft_json_value_t *v)
{
    const char *why = NULL;
    size_t at = 0, n = scan_number(ps->text + ps->pos, ps->len - ps->pos, &why, &at);
    if (n == 0)
        return fail_at(ps, ps->pos + at, "%s", why);
    char *text = weft__arena_alloc(ps->arena, n + 1);
    if (!text)
        return -ENOMEM;
    memcpy(text, ps->text + ps->pos, n);
    text[n] = '\0';
    v->type = WEFT_JSON_NUMBER;
    v->u.number.text = text;
    v->u.number.value = c_strtod(text, NULL);
    if (isinf(v->u.number.value))
        return fail_at(ps, ps->pos, "number %s is too large", text);
    ps->pos += n;
    return 0;
}

static int parse_literal(parser_t *ps, weft_json_value_t *v)
{
    static const struct {
        const char *word;
        weft_json_type_t type;
        bool value;
    } lits[] = {{"true", WEFT_JSON_BOOL, true},
                {"false", WEFT_JSON_BOOL, false},
                {"null", WEFT_JSON_NULL, false}};
    for (size_t i = 0; i < sizeof(lits) / sizeof(lits[0]); i++) {
        size_t n = strlen(lits[i].word);
        if (ps->len - ps->pos >= n && memcmp(ps->text + ps->pos, lits[i].word, n) == 0) {
            v->type = lits[i].type;
            v->u.boolean = lits[i].value;
            ps->pos += n;
            return 0;
        }
    }
    char buf[16];
    return fail_at(ps, ps->pos, "unexpected %s, expected a value",
                   describe(ps->text[ps->pos], buf));
}

static int enter(parser_t *ps)
{
    if (++ps->depth > ps->max_depth)
        return fail_at(ps, ps->pos, "nested deeper than %d levels", ps->max_depth);
    ps->pos++; /* the bracket */
    skip_ws(ps);
    return 0;
}

/* After an item of a container: skips ',' (true: another item follows) or
 * the closing bracket (false), else fails. */
static int next_item(parser_t *ps, char close, const char *what, bool *more)
{
    skip_ws(ps);
    if (ps->pos >= ps->len)
        return fail_at(ps, ps->pos, "unexpected end of the document in %s", what);
    char c = ps->text[ps->pos], buf[16];
    if (c == close) {
        ps->pos++;
        *more = false;
        return 0;
    }
    if (c != ',')
        return fail_at(ps, ps->pos, "expected ',' or '%c' in %s, got %s", close, what,
                       describe(c, buf));
    ps->pos++;
    skip_ws(ps);
    if (ps->pos < ps->len && ps->text[ps->pos] == close)
        return fail_at(ps, ps->pos, "trailing comma in %s", what);
    *more = true;
    return 0;
}

static int parse_array(parser_t *ps, weft_json_value_t *v)
{
    int rc = enter(ps);
    size_t mark = ps->values.n;
    bool more = ps->pos >= ps->len || ps->text[ps->pos] != ']';
    if (!more)
        ps->pos++;
    while (rc == 0 && more) {
        weft_json_value_t item;
        rc = parse_value(ps, &item);
        if (rc == 0)
            rc = vec_push(&ps->values, &item);
        if (rc == 0)
            rc = next_item(ps, ']', "an array", &more);
    }
    if (rc != 0)
        return rc;
    size_t n = ps->values.n - mark;
    v->type = WEFT_JSON_ARRAY;
    v->u.array.n = n;
    v->u.array.items = arena_copy_tail(ps, &ps->values, mark);
    ps->values.n = mark;
    ps->depth--;
    return n && !v->u.array.items ? -ENOMEM : 0;
}

static int parse_member(parser_t *ps, weft_json_member_t *m)
{
    char buf[16];
    if (ps->pos >= ps->len)
        return fail_at(ps, ps->pos, "unexpected end of the document in an object");
    if (ps->text[ps->pos] != '"')
        return fail_at(ps, ps->pos, "expected a string key in an object, got %s",
                       describe(ps->text[ps->pos], buf));
    int rc = parse_string(ps, &m->key, &m->key_len);
    if (rc != 0)
        return rc;
    skip_ws(ps);
    if (ps->pos >= ps->len || ps->text[ps->pos] != ':')
        return fail_at(ps, ps->pos, "expected ':' after the key \"%.40s\"", m->key);
    ps->pos++;
    return parse_value(ps, &m->value);
}

static int parse_object(parser_t *ps, weft_json_value_t *v)
{
    int rc = enter(ps);
    size_t mark = ps->members.n;
    bool more = ps->pos >= ps->len || ps->text[ps->pos] != '}';
    if (!more)
        ps->pos++;
    while (rc == 0 && more) {
        weft_json_member_t m;
        rc = parse_member(ps, &m);
        if (rc == 0)
            rc = vec_push(&ps->members, &m);
        if (rc == 0)
            rc = next_item(ps, '}', "an object", &more);
    }
    if (rc != 0)
        return rc;
    size_t n = ps->members.n - mark;
    v->type = WEFT_JSON_OBJECT;
    v->u.object.n = n;
    v->u.object.members =
        arena_copy_tail(ps, &ps->members, mark);
    ps->members.n = mark;
    ps->depth--;
    return n && !v->u.object.members ? -ENOMEM : 0;
}

static int parse_value(parser_t *ps, weft_json_value_t *v)
{
    skip_ws(ps);
    memset(v, 0, sizeof(*v));
    v->offset = ps->pos;
    if (ps->pos >= ps->len)
        return fail_at(ps, ps->pos, "unexpected end of the document, expected a value");
    char c = ps->text[ps->pos];
    switch (c) {
    case '{':
        return parse_object(ps, v);
    case '[':
        return parse_array(ps, v);
    case '"':
        v->type = WEFT_JSON_STRING;
        return parse_string(ps, &v->u.string.str, &v->u.string.len);
    default:
        if (c == '-' || is_digit(c))
            return parse_number(ps, v);
        return parse_literal(ps, v);
    }
}

int weft__json_parse(const char *text, size_t len, int max_depth, weft_json_doc_t **out,
                     weft_json_error_t *err)
{
    weft_json_doc_t *doc = calloc(1, sizeof(*doc));
    if (!doc)
        return -ENOMEM;
    parser_t ps = {
        .text = text,
        .len = len,
        .max_depth = max_depth > 0 ? max_depth : WEFT_JSON_MAX_DEPTH,
        .arena = &doc->arena,
        .err = err,
        .values = {.elt = sizeof(weft_json_value_t)},
        .members = {.elt = sizeof(weft_json_member_t)},
    };
    skip_ws(&ps);
    int rc = ps.pos >= len ? fail_at(&ps, ps.pos, "empty document") : parse_value(&ps, &doc->root);
    if (rc == 0) {
        skip_ws(&ps);
        if (ps.pos < len)
            rc = fail_at(&ps, ps.pos, "unexpected data after the JSON value");
    }
    free(ps.values.data);
    free(ps.members.data);
    if (rc != 0) {
        weft__json_free(doc);
        return rc;
    }
    *out = doc;
    return 0;
}

void weft__json_free(weft_json_doc_t *doc)
{
    if (!doc)
        return;
    weft__arena_free_all(&doc->arena);
    free(doc);
}

const weft_json_value_t *weft__json_root(const weft_json_doc_t *doc)
{
    return &doc->root;
}

const weft_json_value_t *weft__json_get(const weft_json_value_t *obj, const char *key)
{
    if (!obj || obj->type != WEFT_JSON_OBJECT)
        return NULL;
    size_t len = strlen(key);
    for (size_t i = 0; i < obj->u.object.n; i++) {
        const weft_json_member_t *m = &obj->u.object.members[i];
        if (m->key_len == len && memcmp(m->key, key, len) == 0)
            return &m->value;
    }
    return NULL;
}

int weft__json_int64(const weft_json_value_t *v, int64_t *out)
{
    bool neg;
    uint64_t mag;
    if (!v || v->type != WEFT_JSON_NUMBER)
        return -EINVAL;
    int rc = number_to_integer(v->u.number.text, &neg, &mag);
    return rc ? rc : integer_in_range(neg, mag, out);
}

int weft__json_uint64(const weft_json_value_t *v, uint64_t *out)
{
    bool neg;
    if (!v || v->type != WEFT_JSON_NUMBER)
        return -EINVAL;
    int rc = number_to_integer(v->u.number.text, &neg, out);
    if (rc == 0 && neg && *out != 0)
        rc = -ERANGE;
    return rc;
}

/* ---- the writer ---- */

static bool buf_reserve(weft_json_buf_t *b, size_t extra)
{
    if (b->oom)
        return false;
    if (b->cap - b->len > extra)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len <= extra)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        b->oom = true;
        return false;
    }
    b->data = d;
    b->cap = cap;
    return true;
}

void weft__json_buf_free(weft_json_buf_t *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

void weft__json_buf_append(weft_json_buf_t *b, const char *data, size_t n)
{
    if (!buf_reserve(b, n))
        return;
    memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void weft__json_buf_puts(weft_json_buf_t *b, const char *s)
{
    weft__json_buf_append(b, s, strlen(s));
}

void weft__json_buf_printf(weft_json_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !buf_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* The two-character escape of c, if JSON has one. */
static const char *short_escape(unsigned char c)
{
    switch (c) {
    case '"':
        return "\\\"";
    case '\\':
        return "\\\\";
    case '\b':
        return "\\b";
    case '\f':
        return "\\f";
    case '\n':
        return "\\n";
    case '\r':
        return "\\r";
    case '\t':
        return "\\t";
    default:
        return NULL;
    }
}

void weft__json_write_string(weft_json_buf_t *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    weft__json_buf_append(b, "\"", 1);
    size_t run = 0; /* s[run..i) is still to be copied as it is */
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        size_t n = c < 0x80 ? 1 : utf8_len((const unsigned char *)s + i, len - i);
        const char *esc = short_escape(c);
        if (c >= 0x20 && n > 0 && !esc) {
            i += n;
            continue;
        }
        weft__json_buf_append(b, s + run, i - run);
        if (n == 0) {
            weft__json_buf_puts(b, "\\ufffd");
        } else if (esc) {
            weft__json_buf_puts(b, esc);
        } else {
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            weft__json_buf_append(b, u, 6);
        }
        i += n ? n : 1;
        run = i;
    }
    weft__json_buf_append(b, s + run, len - run);
    weft__json_buf_append(b, "\"", 1);
}

void weft__json_write_double(weft_json_buf_t *b, double v)
{
    if (!isfinite(v)) {
        weft__json_buf_puts(b, "null");
        return;
    }
    char tmp[40];
    format_shortest(tmp, sizeof(tmp), v, false);
    weft__json_buf_puts(b, tmp);
}

/* ---- base64 (RFC 4648), for bytes fields ---- */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void write_base64(weft_json_buf_t *b, const uint8_t *p, size_t len)
{
    char quad[4];
    weft__json_buf_append(b, "\"", 1);
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < len)
            v |= p[i + 2];
        for (int k = 0; k < 4; k++)
            quad[k] = b64_alphabet[(v >> (18 - 6 * k)) & 63];
        if (i + 1 >= len)
            quad[2] = '=';
        if (i + 2 >= len)
            quad[3] = '=';
        weft__json_buf_append(b, quad, 4);
    }
    weft__json_buf_append(b, "\"", 1);
}

/* Value of a base64 character, either alphabet; -1 if none. */
static int b64_value(char c)
{
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    const char *p = c ? strchr(b64_alphabet, c) : NULL;
    return p ? (int)(p - b64_alphabet) : -1;
}

/* Decodes s[0..len) into out (room for len * 3 / 4 bytes). Padding is
 * optional, but if present must complete the last quantum. */
static int base64_decode(const char *s, size_t len, uint8_t *out, size_t *out_len)
{
    size_t pad = 0;
    while (len > 0 && s[len - 1] == '=' && pad < 2)
        len--, pad++;
    if ((pad && (len + pad) % 4 != 0) || len % 4 == 1)
        return -EINVAL;
    size_t o = 0;
    uint32_t acc = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value(s[i]);
        if (v < 0)
            return -EINVAL;
        acc = acc << 6 | (uint32_t)v;
        if (i % 4 == 3) {
            out[o++] = (uint8_t)(acc >> 16);
            out[o++] = (uint8_t)(acc >> 8);
            out[o++] = (uint8_t)acc;
            acc = 0;
        }
    }
    if (len % 4 == 2) {
        out[o++] = (uint8_t)(acc >> 4);
    } else if (len % 4 == 3) {
        out[o++] = (uint8_t)(acc >> 10);
        out[o++] = (uint8_t)(acc >> 2);
    }
    *out_len = o;
    return 0;
}

/* ---- protobuf-c fields ---- */

#define MEMBER(msg, off) ((void *)((char *)(msg) + (off)))
#define CMEMBER(msg, off) ((const void *)((const char *)(msg) + (off)))

static size_t elt_size(ProtobufCType type)
{
    switch (type) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    default:
        return 4;
    }
}

static bool is_pointer_type(ProtobufCType type)
{
    return type == PROTOBUF_C_TYPE_STRING || type == PROTOBUF_C_TYPE_MESSAGE;
}

/* A proto2 optional field (not in a oneof) with a has_ flag. */
static bool has_flag(const ProtobufCFieldDescriptor *f)
{
    return f->label == PROTOBUF_C_LABEL_OPTIONAL && !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
           !is_pointer_type(f->type);
}

/* protoc's JSON name: "foo_bar_baz" -> "fooBarBaz". */
static void json_name(const char *name, char *out, size_t size)
{
    size_t o = 0;
    bool upper = false;
    for (; *name && o + 1 < size; name++) {
        if (*name == '_') {
            upper = true;
            continue;
        }
        out[o++] = upper ? (char)toupper((unsigned char)*name) : *name;
        upper = false;
    }
    out[o] = '\0';
}

/* ---- JSON -> message ---- */

typedef struct conv {
    ProtobufCAllocator *alloc;
    weft_json_error_t *err;
    char path[160]; /* the field being converted: "inner.items[2].name" */
    size_t path_len;
} conv_t;

static int conv_fail(conv_t *c, const weft_json_value_t *v, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int conv_fail(conv_t *c, const weft_json_value_t *v, const char *fmt, ...)
{
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return json_error(c->err, v->offset, "%s%s%s", c->path, c->path_len ? ": " : "", what);
}

/* Appends ".name" (or "name" first) or "[i]" to the path and returns the
 * old length, for path_pop. A path too long for the buffer is cut short. */
static size_t path_append(conv_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static size_t path_append(conv_t *c, const char *fmt, ...)
{
    size_t old = c->path_len, room = sizeof(c->path) - old;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(c->path + old, room, fmt, ap);
    va_end(ap);
    c->path_len = n < 0 ? old : (size_t)n >= room ? sizeof(c->path) - 1 : old + (size_t)n;
    return old;
}

static void path_pop(conv_t *c, size_t old)
{
    c->path_len = old;
    c->path[old] = '\0';
}

static void *pb_alloc(conv_t *c, size_t size)
{
    if (size == 0)
        size = 1;
    return c->alloc ? c->alloc->alloc(c->alloc->allocator_data, size) : malloc(size);
}

static void pb_free(conv_t *c, void *p)
{
    if (c->alloc)
        c->alloc->free(c->alloc->allocator_data, p);
    else
        free(p);
}

static int new_message(conv_t *c, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out)
{
    ProtobufCMessage *msg = pb_alloc(c, desc->sizeof_message);
    if (!msg)
        return -ENOMEM;
    protobuf_c_message_init(desc, msg);
    *out = msg;
    return 0;
}

static int fill_message(conv_t *c, const weft_json_value_t *v, ProtobufCMessage *msg);

/* An integer from a number or a string holding one, in [min, max]
 * (max_u for unsigned types, with min 0). */
static int get_integer(conv_t *c, const weft_json_value_t *v, bool is_signed, const char *type,
                       uint64_t max_u, int64_t min, int64_t max, uint64_t *out)
{
    const char *text, *why;
    size_t at;
    if (v->type == WEFT_JSON_NUMBER) {
        text = v->u.number.text;
    } else if (v->type == WEFT_JSON_STRING && v->u.string.len > 0 &&
               scan_number(v->u.string.str, v->u.string.len, &why, &at) == v->u.string.len) {
        text = v->u.string.str;
    } else {
        return conv_fail(c, v, "expected an integer (%s), got %s", type, type_name(v->type));
    }
    bool neg;
    uint64_t mag;
    int64_t s;
    int rc = number_to_integer(text, &neg, &mag);
    if (rc == -EINVAL)
        return conv_fail(c, v, "%s is not an integer", text);
    if (rc == 0 && !is_signed && (!neg || mag == 0) && mag <= max_u) {
        *out = mag;
        return 0;
    }
    if (rc == 0 && is_signed && integer_in_range(neg, mag, &s) == 0 && s >= min && s <= max) {
        *out = (uint64_t)s;
        return 0;
    }
    return conv_fail(c, v, "%s is out of range for %s", text, type);
}

static int get_double(conv_t *c, const weft_json_value_t *v, bool is_float, double *out)
{
    const char *type = is_float ? "float" : "double";
    if (v->type == WEFT_JSON_NUMBER) {
        *out = v->u.number.value;
    } else if (v->type == WEFT_JSON_STRING) {
        const char *s = v->u.string.str, *why;
        size_t at;
        if (strcmp(s, "NaN") == 0)
            *out = NAN;
        else if (strcmp(s, "Infinity") == 0 || strcmp(s, "-Infinity") == 0)
            *out = s[0] == '-' ? -INFINITY : INFINITY;
        else if (v->u.string.len && scan_number(s, v->u.string.len, &why, &at) == v->u.string.len)
            *out = c_strtod(s, NULL);
        else
            return conv_fail(c, v, "\"%.40s\" is not a %s", s, type);
        if (isinf(*out) && s[0] != 'I' && s[1] != 'I')
            return conv_fail(c, v, "%s is out of range for %s", s, type);
    } else {
        return conv_fail(c, v, "expected a number (%s), got %s", type, type_name(v->type));
    }
    if (is_float && isfinite(*out) && fabs(*out) > FLT_MAX)
        return conv_fail(c, v, "%g is out of range for float", *out);
    return 0;
}

static int get_enum(conv_t *c, const weft_json_value_t *v, const ProtobufCEnumDescriptor *ed,
                    int32_t *out)
{
    if (v->type == WEFT_JSON_STRING) {
        const ProtobufCEnumValue *ev =
            strlen(v->u.string.str) == v->u.string.len
                ? protobuf_c_enum_descriptor_get_value_by_name(ed, v->u.string.str)
                : NULL;
        if (!ev)
            return conv_fail(c, v, "\"%.40s\" is not a value of enum %s", v->u.string.str,
                             ed->name);
        *out = ev->value;
        return 0;
    }
    uint64_t u;
    if (v->type != WEFT_JSON_NUMBER)
        return conv_fail(c, v, "expected an enum name or number (%s), got %s", ed->name,
                         type_name(v->type));
    int rc = get_integer(c, v, true, "enum", 0, INT32_MIN, INT32_MAX, &u);
    *out = (int32_t)(int64_t)u;
    return rc;
}

static int get_string(conv_t *c, const weft_json_value_t *v, char **out)
{
    if (v->type != WEFT_JSON_STRING)
        return conv_fail(c, v, "expected a string, got %s", type_name(v->type));
    if (strlen(v->u.string.str) != v->u.string.len)
        return conv_fail(c, v, "a string field cannot hold a NUL character");
    char *s = pb_alloc(c, v->u.string.len + 1);
    if (!s)
        return -ENOMEM;
    memcpy(s, v->u.string.str, v->u.string.len + 1);
    *out = s;
    return 0;
}

static int get_bytes(conv_t *c, const weft_json_value_t *v, ProtobufCBinaryData *out)
{
    if (v->type != WEFT_JSON_STRING)
        return conv_fail(c, v, "expected a base64 string, got %s", type_name(v->type));
    uint8_t *data = pb_alloc(c, v->u.string.len / 4 * 3 + 3);
    if (!data)
        return -ENOMEM;
    size_t len;
    if (base64_decode(v->u.string.str, v->u.string.len, data, &len) != 0) {
        pb_free(c, data);
        return conv_fail(c, v, "not valid base64");
    }
    out->data = data;
    out->len = len;
    return 0;
}

static int get_message(conv_t *c, const weft_json_value_t *v, const ProtobufCMessageDescriptor *md,
                       ProtobufCMessage **slot)
{
    if (v->type != WEFT_JSON_OBJECT)
        return conv_fail(c, v, "expected an object (%s), got %s", md->name, type_name(v->type));
    /* In the parent before it is filled: an error frees it with the parent. */
    int rc = new_message(c, md, slot);
    return rc ? rc : fill_message(c, v, *slot);
}

/* Converts v to one value of field f's type, stored at dst. */
static int set_value(conv_t *c, const ProtobufCFieldDescriptor *f, const weft_json_value_t *v,
                     void *dst)
{
    uint64_t u = 0;
    double d = 0;
    int32_t e = 0;
    int rc;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        rc = get_integer(c, v, true, "int32", 0, INT32_MIN, INT32_MAX, &u);
        *(int32_t *)dst = (int32_t)(int64_t)u;
        return rc;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        rc = get_integer(c, v, false, "uint32", UINT32_MAX, 0, 0, &u);
        *(uint32_t *)dst = (uint32_t)u;
        return rc;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        rc = get_integer(c, v, true, "int64", 0, INT64_MIN, INT64_MAX, &u);
        *(int64_t *)dst = (int64_t)u;
        return rc;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        rc = get_integer(c, v, false, "uint64", UINT64_MAX, 0, 0, &u);
        *(uint64_t *)dst = u;
        return rc;
    case PROTOBUF_C_TYPE_FLOAT:
        rc = get_double(c, v, true, &d);
        *(float *)dst = (float)d;
        return rc;
    case PROTOBUF_C_TYPE_DOUBLE:
        rc = get_double(c, v, false, &d);
        *(double *)dst = d;
        return rc;
    case PROTOBUF_C_TYPE_BOOL:
        if (v->type != WEFT_JSON_BOOL)
            return conv_fail(c, v, "expected true or false, got %s", type_name(v->type));
        *(protobuf_c_boolean *)dst = v->u.boolean;
        return 0;
    case PROTOBUF_C_TYPE_ENUM:
        rc = get_enum(c, v, f->descriptor, &e);
        *(int32_t *)dst = e;
        return rc;
    case PROTOBUF_C_TYPE_STRING:
        return get_string(c, v, (char **)dst);
    case PROTOBUF_C_TYPE_BYTES:
        return get_bytes(c, v, (ProtobufCBinaryData *)dst);
    case PROTOBUF_C_TYPE_MESSAGE:
        return get_message(c, v, f->descriptor, (ProtobufCMessage **)dst);
    }
    return conv_fail(c, v, "unsupported field type %d", (int)f->type);
}

static int set_repeated(conv_t *c, ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f,
                        const weft_json_value_t *v)
{
    if (v->type != WEFT_JSON_ARRAY)
        return conv_fail(c, v, "expected an array, got %s", type_name(v->type));
    size_t n = v->u.array.n, size = elt_size(f->type);
    if (n == 0)
        return 0;
    char *arr = pb_alloc(c, n * size);
    if (!arr)
        return -ENOMEM;
    memset(arr, 0, n * size);
    *(void **)MEMBER(msg, f->offset) = arr;
    *(size_t *)MEMBER(msg, f->quantifier_offset) = n;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const weft_json_value_t *item = &v->u.array.items[i];
        size_t old = path_append(c, "[%zu]", i);
        rc = item->type == WEFT_JSON_NULL ? conv_fail(c, item, "null in a repeated field")
                                          : set_value(c, f, item, arr + i * size);
        path_pop(c, old);
    }
    return rc;
}

/* Marks f as the member of its oneof that is set; fails if another is. */
static int claim_oneof(conv_t *c, ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f,
                       const weft_json_value_t *v)
{
    if (!(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
        return 0;
    uint32_t *which = MEMBER(msg, f->quantifier_offset);
    if (*which != 0 && *which != f->id) {
        const ProtobufCFieldDescriptor *other =
            protobuf_c_message_descriptor_get_field(msg->descriptor, *which);
        return conv_fail(c, v, "\"%s\" is in the same oneof as \"%s\", which is set already",
                         f->name, other ? other->name : "?");
    }
    *which = f->id;
    return 0;
}

static int set_field(conv_t *c, ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f,
                     const weft_json_value_t *v)
{
    size_t old = path_append(c, "%s%s", c->path_len ? "." : "", f->name);
    int rc;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        rc = set_repeated(c, msg, f, v);
    } else {
        rc = claim_oneof(c, msg, f, v);
        if (rc == 0)
            rc = set_value(c, f, v, MEMBER(msg, f->offset));
        if (rc == 0 && has_flag(f))
            *(protobuf_c_boolean *)MEMBER(msg, f->quantifier_offset) = 1;
    }
    path_pop(c, old);
    return rc;
}

/* The field a key names: its .proto name or its JSON name. */
static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *desc,
                                                  const char *key, size_t len)
{
    if (strlen(key) != len)
        return NULL;
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(desc, key);
    for (unsigned i = 0; !f && i < desc->n_fields; i++) {
        char name[256];
        json_name(desc->fields[i].name, name, sizeof(name));
        if (strcmp(name, key) == 0)
            f = &desc->fields[i];
    }
    return f;
}

/* What fill_message saw of each field. */
enum { FIELD_ABSENT, FIELD_NULL, FIELD_SET };

static int check_required(conv_t *c, const weft_json_value_t *v,
                          const ProtobufCMessageDescriptor *desc, const char *seen)
{
    for (unsigned i = 0; i < desc->n_fields; i++)
        if (desc->fields[i].label == PROTOBUF_C_LABEL_REQUIRED && seen[i] != FIELD_SET)
            return conv_fail(c, v, "missing required field \"%s\" of %s", desc->fields[i].name,
                             desc->name);
    return 0;
}

static int fill_message(conv_t *c, const weft_json_value_t *v, ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *desc = msg->descriptor;
    if (v->type != WEFT_JSON_OBJECT)
        return conv_fail(c, v, "expected an object (%s), got %s", desc->name, type_name(v->type));
    char *seen = calloc(desc->n_fields + 1, 1);
    if (!seen)
        return -ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < v->u.object.n && rc == 0; i++) {
        const weft_json_member_t *m = &v->u.object.members[i];
        const ProtobufCFieldDescriptor *f = find_field(desc, m->key, m->key_len);
        if (!f) {
            rc = conv_fail(c, &m->value, "unknown field \"%.60s\" in %s", m->key, desc->name);
        } else if (seen[f - desc->fields] != FIELD_ABSENT) {
            rc = conv_fail(c, &m->value, "field \"%s\" is given twice", f->name);
        } else if (m->value.type == WEFT_JSON_NULL) {
            seen[f - desc->fields] = FIELD_NULL;
        } else {
            seen[f - desc->fields] = FIELD_SET;
            rc = set_field(c, msg, f, &m->value);
        }
    }
    if (rc == 0)
        rc = check_required(c, v, desc, seen);
    free(seen);
    return rc;
}

int weft__json_to_message(const weft_json_value_t *v, const ProtobufCMessageDescriptor *desc,
                          ProtobufCAllocator *allocator, ProtobufCMessage **out,
                          weft_json_error_t *err)
{
    conv_t c = {.alloc = allocator, .err = err};
    ProtobufCMessage *msg;
    if (v->type != WEFT_JSON_OBJECT)
        return conv_fail(&c, v, "expected an object (%s), got %s", desc->name, type_name(v->type));
    int rc = new_message(&c, desc, &msg);
    if (rc != 0)
        return rc;
    rc = fill_message(&c, v, msg);
    if (rc != 0) {
        protobuf_c_message_free_unpacked(msg, allocator);
        return rc;
    }
    *out = msg;
    return 0;
}

int weft__json_parse_message(const char *text, size_t len, const ProtobufCMessageDescriptor *desc,
                             ProtobufCAllocator *allocator, ProtobufCMessage **out,
                             weft_json_error_t *err)
{
    weft_json_doc_t *doc;
    int rc = weft__json_parse(text, len, 0, &doc, err);
    if (rc != 0)
        return rc;
    rc = weft__json_to_message(weft__json_root(doc), desc, allocator, out, err);
    weft__json_free(doc);
    return rc;
}

/* ---- message -> JSON ---- */

static bool value_is_zero(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return !s || !*s;
    }
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)p)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(ProtobufCMessage *const *)p == NULL;
    default: {
        static const char zero[8];
        return memcmp(p, zero, elt_size(f->type)) == 0;
    }
    }
}

/* Whether a field is set, by the rule of its label. */
static bool field_present(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f)
{
    const void *p = CMEMBER(msg, f->offset);
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
        return *(const size_t *)CMEMBER(msg, f->quantifier_offset) > 0;
    bool null_ptr = is_pointer_type(f->type) && *(void *const *)p == NULL;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        return *(const uint32_t *)CMEMBER(msg, f->quantifier_offset) == f->id && !null_ptr;
    switch (f->label) {
    case PROTOBUF_C_LABEL_REQUIRED:
        return !null_ptr;
    case PROTOBUF_C_LABEL_OPTIONAL:
        if (is_pointer_type(f->type))
            return !null_ptr && *(void *const *)p != f->default_value;
        return *(const protobuf_c_boolean *)CMEMBER(msg, f->quantifier_offset);
    default:
        return !value_is_zero(f, p);
    }
}

static void write_float(weft_json_buf_t *b, double v, bool is_float)
{
    if (isnan(v)) {
        weft__json_buf_puts(b, "\"NaN\"");
    } else if (isinf(v)) {
        weft__json_buf_puts(b, v < 0 ? "\"-Infinity\"" : "\"Infinity\"");
    } else {
        char tmp[40];
        format_shortest(tmp, sizeof(tmp), v, is_float);
        weft__json_buf_puts(b, tmp);
    }
}

static int write_message(weft_json_buf_t *b, const ProtobufCMessage *msg, unsigned flags,
                         int depth);

static int write_value(weft_json_buf_t *b, const ProtobufCFieldDescriptor *f, const void *p,
                       unsigned flags, int depth)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        weft__json_buf_printf(b, "%d", *(const int32_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        weft__json_buf_printf(b, "%u", *(const uint32_t *)p);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        weft__json_buf_printf(b, "\"%lld\"", (long long)*(const int64_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        weft__json_buf_printf(b, "\"%llu\"", (unsigned long long)*(const uint64_t *)p);
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        write_float(b, *(const float *)p, true);
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        write_float(b, *(const double *)p, false);
        break;
    case PROTOBUF_C_TYPE_BOOL:
        weft__json_buf_puts(b, *(const protobuf_c_boolean *)p ? "true" : "false");
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        int32_t v = *(const int32_t *)p;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
        if (ev)
            weft__json_write_string(b, ev->name, strlen(ev->name));
        else
            weft__json_buf_printf(b, "%d", v);
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        weft__json_write_string(b, s ? s : "", s ? strlen(s) : 0);
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *bd = p;
        write_base64(b, bd->data, bd->len);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
        if (!sub) {
            weft__json_buf_puts(b, "null");
            break;
        }
        return write_message(b, sub, flags, depth + 1);
    }
    }
    return 0;
}

static int write_field(weft_json_buf_t *b, const ProtobufCMessage *msg,
                       const ProtobufCFieldDescriptor *f, unsigned flags, int depth)
{
    char name[256];
    if (flags & WEFT_JSON_PROTO_NAMES)
        snprintf(name, sizeof(name), "%s", f->name);
    else
        json_name(f->name, name, sizeof(name));
    weft__json_write_string(b, name, strlen(name));
    weft__json_buf_append(b, ":", 1);
    const void *p = CMEMBER(msg, f->offset);
    if (f->label != PROTOBUF_C_LABEL_REPEATED)
        return write_value(b, f, p, flags, depth);
    size_t n = *(const size_t *)CMEMBER(msg, f->quantifier_offset), size = elt_size(f->type);
    const char *arr = *(const char *const *)p;
    int rc = 0;
    weft__json_buf_append(b, "[", 1);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (i)
            weft__json_buf_append(b, ",", 1);
        rc = write_value(b, f, arr + i * size, flags, depth);
    }
    weft__json_buf_append(b, "]", 1);
    return rc;
}

static int write_message(weft_json_buf_t *b, const ProtobufCMessage *msg, unsigned flags, int depth)
{
    if (depth > WEFT_JSON_MAX_DEPTH)
        return -ELOOP;
    const ProtobufCMessageDescriptor *desc = msg->descriptor;
    bool first = true;
    int rc = 0;
    weft__json_buf_append(b, "{", 1);
    for (unsigned i = 0; i < desc->n_fields && rc == 0; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];
        if (!field_present(msg, f))
            continue;
        if (!first)
            weft__json_buf_append(b, ",", 1);
        first = false;
        rc = write_field(b, msg, f, flags, depth);
    }
    weft__json_buf_append(b, "}", 1);
    return rc;
}

int weft__json_write_message(weft_json_buf_t *b, const ProtobufCMessage *msg, unsigned flags)
{
    int rc = write_message(b, msg, flags, 1);
    return rc ? rc : b->oom ? -ENOMEM : 0;
}
