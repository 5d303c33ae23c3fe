/*
 * template.c - $name$ substitution (see template.h).
 */
#include "template.h"

#include <errno.h>
#include <string.h>

static const char *lookup(const char *name, size_t len, const char *const *names,
                          const char *const *values, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(names[i]) == len && strncmp(names[i], name, len) == 0)
            return values[i];
    return NULL;
}

void template_expand(strbuf_t *out, const char *tmpl, const char *const *names,
                     const char *const *values, size_t n)
{
    const char *p = tmpl;
    for (;;) {
        const char *open = strchr(p, '$');
        if (!open) {
            strbuf_append(out, p);
            return;
        }
        const char *close = strchr(open + 1, '$');
        const char *value = close ? lookup(open + 1, (size_t)(close - open - 1), names, values, n)
                                  : NULL;
        if (!value) {
            strbuf_fail(out, -EINVAL);
            return;
        }
        strbuf_append_n(out, p, (size_t)(open - p));
        strbuf_append(out, value);
        p = close + 1;
    }
}
