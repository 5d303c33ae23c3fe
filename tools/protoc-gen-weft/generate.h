/*
 * generate.h - writes the weft stubs of one .proto file: <base>.weft.h and
 * <base>.weft.c beside protoc-c's <base>.pb-c.h and <base>.pb-c.c.
 *
 * For each service: typed synchronous and asynchronous client calls over
 * weft_channel_call(), and a struct of plain C handler functions with a
 * function that registers them on a weft server. docs/stubs.md shows the
 * generated code.
 */
#ifndef PGW_GENERATE_H
#define PGW_GENERATE_H

#include "proto_set.h"
#include "strbuf.h"

/* Appends the header to h and the source to c. Returns 0, -ENOMEM, or
 * -EINVAL with a message for protoc appended to error when the file's
 * services cannot have stubs (a streaming method, or a method whose stub
 * names would clash with protoc-c's). */
int generate_stubs(const proto_set_t *set, const pgw_file_t *file, strbuf_t *h, strbuf_t *c,
                   strbuf_t *error);

#endif
