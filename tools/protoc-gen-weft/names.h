/*
 * names.h - protoc-c's name mangling, so that the stubs name exactly the
 * types and functions protoc-c generates beside them.
 *
 * Re-implemented from protobuf-c 1.4's protoc-c/c_helpers.cc (CamelToLower,
 * ToCamel, FullNameToLower, FullNameToC, OverrideFullName,
 * FilenameIdentifier, StripProto), quirks included: CamelToLower puts an
 * underscore before an upper-case letter that follows anything but an
 * upper-case letter, so "get_URL2Thing" becomes "get__url2_thing". Only
 * ASCII letters count as letters, as in the C locale protoc-c runs in.
 *
 * Every function appends to out.
 */
#ifndef PGW_NAMES_H
#define PGW_NAMES_H

#include <stddef.h>

#include "strbuf.h"

/* CamelToLower: "HTTPServer" -> "httpserver", "EchoService" -> "echo_service". */
void names_camel_to_lower(strbuf_t *out, const char *s, size_t n);

/* ToCamel: "my_pkg" -> "MyPkg", "HTTPStuff" -> "HTTPStuff". */
void names_to_camel(strbuf_t *out, const char *s, size_t n);

/* FullNameToLower and FullNameToC: the dot-separated pieces of a full name
 * (a leading dot is ignored), each mangled and joined with "__":
 * "example.EchoService" -> "example__echo_service" / "Example__EchoService". */
void names_full_to_lower(strbuf_t *out, const char *full_name);
void names_full_to_c(strbuf_t *out, const char *full_name);

/* OverrideFullName: the name protoc-c mangles for full_name, a type or
 * service of a file whose package is `package` ("" if none), when the file
 * sets protobuf-c's c_package option (NULL if not): the package part is
 * replaced by c_package. */
void names_c_full_name(strbuf_t *out, const char *full_name, const char *package,
                       const char *c_package);

/* FilenameIdentifier: "dir/a.proto" -> "dir_2fa_2eproto" (include guards). */
void names_file_identifier(strbuf_t *out, const char *filename);

/* StripProto: "dir/a.proto" -> "dir/a", the base of generated file names. */
void names_strip_proto(strbuf_t *out, const char *filename);

#endif
