/*
 * names.c - protoc-c's name mangling (see names.h for what and why).
 */
#include "names.h"

#include <stdbool.h>
#include <string.h>

static bool is_upper(char c)
{
    return c >= 'A' && c <= 'Z';
}

static bool is_alnum(char c)
{
    return is_upper(c) || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static char to_lower(char c)
{
    return is_upper(c) ? (char)(c - 'A' + 'a') : c;
}

static char to_upper(char c)
{
    return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

void names_camel_to_lower(strbuf_t *out, const char *s, size_t n)
{
    bool was_upper = true; /* no underscore before a leading capital */
    for (size_t i = 0; i < n; i++) {
        bool upper = is_upper(s[i]);
        if (upper && !was_upper)
            strbuf_append_char(out, '_');
        strbuf_append_char(out, to_lower(s[i]));
        was_upper = upper;
    }
}

void names_to_camel(strbuf_t *out, const char *s, size_t n)
{
    bool next_upper = true;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '_') {
            next_upper = true;
        } else {
            strbuf_append_char(out, next_upper ? to_upper(s[i]) : s[i]);
            next_upper = false;
        }
    }
}

typedef void piece_fn(strbuf_t *out, const char *s, size_t n);

/* Mangles each non-empty dot-separated piece, joined by "__". */
static void full_name_map(strbuf_t *out, const char *full_name, piece_fn *piece)
{
    bool first = true;
    const char *p = full_name;
    while (*p) {
        size_t n = strcspn(p, ".");
        if (n > 0) {
            if (!first)
                strbuf_append(out, "__");
            piece(out, p, n);
            first = false;
        }
        p += n + (p[n] == '.');
    }
}

void names_full_to_lower(strbuf_t *out, const char *full_name)
{
    full_name_map(out, full_name, names_camel_to_lower);
}

void names_full_to_c(strbuf_t *out, const char *full_name)
{
    full_name_map(out, full_name, names_to_camel);
}

void names_c_full_name(strbuf_t *out, const char *full_name, const char *package,
                       const char *c_package)
{
    if (full_name[0] == '.')
        full_name++;
    if (!c_package) {
        strbuf_append(out, full_name);
        return;
    }
    /* As protoc-c does: c_package, then what follows the package. */
    strbuf_append(out, c_package);
    if (package[0] == '\0')
        strbuf_append_char(out, '.');
    size_t skip = strlen(package);
    strbuf_append(out, strlen(full_name) >= skip ? full_name + skip : "");
}

void names_file_identifier(strbuf_t *out, const char *filename)
{
    for (const char *p = filename; *p; p++) {
        if (is_alnum(*p))
            strbuf_append_char(out, *p);
        else
            strbuf_printf(out, "_%x", (unsigned)(unsigned char)*p);
    }
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

void names_strip_proto(strbuf_t *out, const char *filename)
{
    size_t n = strlen(filename);
    if (has_suffix(filename, ".protodevel"))
        n -= strlen(".protodevel");
    else if (has_suffix(filename, ".proto"))
        n -= strlen(".proto");
    strbuf_append_n(out, filename, n);
}
