/*
 * template.h - fills in the text of generated code.
 *
 * Generated code is written as C text with $name$ placeholders, in the
 * manner of protoc's own io::Printer, so that the code generator reads like
 * the code it generates.
 */
#ifndef PGW_TEMPLATE_H
#define PGW_TEMPLATE_H

#include <stddef.h>

#include "strbuf.h"

/* Appends tmpl to out with each $name$ replaced by values[i] where
 * names[i] is name. A name that is not there, or whose value is NULL, is a
 * bug in the generator: out then fails with -EINVAL. */
void template_expand(strbuf_t *out, const char *tmpl, const char *const *names,
                     const char *const *values, size_t n);

#endif
