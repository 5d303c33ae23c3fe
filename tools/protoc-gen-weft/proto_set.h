/*
 * proto_set.h - the .proto files of one protoc run, as protoc-gen-weft
 * needs to see them: each file's package and protobuf-c options, and which
 * file defines a message type.
 *
 * Names depend on the file a type is defined in: protoc-c mangles a type
 * with its own file's c_package option, so a method whose input comes from
 * an imported file must be named with that file's option, not the
 * service's.
 */
#ifndef PGW_PROTO_SET_H
#define PGW_PROTO_SET_H

#include <stdbool.h>
#include <stddef.h>

#include "google/protobuf/compiler/plugin.pb-c.h"

typedef Google__Protobuf__FileDescriptorProto pgw_file_proto_t;

typedef struct pgw_file {
    const pgw_file_proto_t *proto;
    const char *package; /* "" when the file has none */
    char *c_package;     /* protobuf-c's (pb_c_file).c_package, or NULL */
    bool no_generate;    /* protobuf-c's (pb_c_file).no_generate */
} pgw_file_t;

typedef struct proto_set {
    pgw_file_t *files; /* the request's proto_file, in its order */
    size_t n_files;
} proto_set_t;

/* 0, -ENOMEM, or -EINVAL when a file's protobuf-c options do not parse. */
int proto_set_init(proto_set_t *set, const Google__Protobuf__Compiler__CodeGeneratorRequest *req);
void proto_set_free(proto_set_t *set);

/* The file named `name` (as in an import), or NULL. */
const pgw_file_t *proto_set_file(const proto_set_t *set, const char *name);

/* The file that defines the message `type_name`, a fully qualified name
 * with a leading dot as in MethodDescriptorProto (".pkg.Outer.Inner"), or
 * NULL. */
const pgw_file_t *proto_set_message_file(const proto_set_t *set, const char *type_name);

#endif
