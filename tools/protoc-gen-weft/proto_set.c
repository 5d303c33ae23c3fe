/*
 * proto_set.c - the files of a protoc run and their protobuf-c options (see
 * proto_set.h).
 *
 * protobuf-c's file options travel as extension 1019 of FileOptions. The
 * descriptor.proto code that protoc-c generates does not know extensions
 * and keeps them as unknown fields, so they are decoded here with
 * c_options.proto, a copy of the fields that matter.
 */
#include "proto_set.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "c_options.pb-c.h"

enum { PB_C_FILE_EXTENSION = 1019 };

/* protobuf-c keeps an unknown length-delimited field as its varint length
 * followed by the payload. Returns the payload, or NULL if the bytes do not
 * have that shape. */
static const uint8_t *payload(const ProtobufCMessageUnknownField *u, size_t *len)
{
    uint64_t n = 0;
    for (size_t i = 0; i < u->len && i < 10; i++) {
        n |= (uint64_t)(u->data[i] & 0x7f) << (7 * i);
        if (!(u->data[i] & 0x80)) {
            if (n != u->len - (i + 1))
                return NULL;
            *len = (size_t)n;
            return u->data + i + 1;
        }
    }
    return NULL;
}

/* Applies one occurrence of the extension; a later one overrides an
 * earlier one field by field, as merging protobuf messages does. */
static int apply_c_options(pgw_file_t *f, const ProtobufCMessageUnknownField *u)
{
    size_t len;
    const uint8_t *data = payload(u, &len);
    if (!data)
        return -EINVAL;
    WeftPlugin__CFileOptions *o = weft_plugin__cfile_options__unpack(NULL, len, data);
    if (!o)
        return -EINVAL;
    int rc = 0;
    if (o->has_no_generate)
        f->no_generate = o->no_generate;
    if (o->c_package) {
        free(f->c_package);
        f->c_package = strdup(o->c_package);
        rc = f->c_package ? 0 : -ENOMEM;
    }
    weft_plugin__cfile_options__free_unpacked(o, NULL);
    return rc;
}

static int read_c_options(pgw_file_t *f)
{
    const Google__Protobuf__FileOptions *opts = f->proto->options;
    if (!opts)
        return 0;
    for (unsigned i = 0; i < opts->base.n_unknown_fields; i++) {
        const ProtobufCMessageUnknownField *u = &opts->base.unknown_fields[i];
        if (u->tag != PB_C_FILE_EXTENSION)
            continue;
        if (u->wire_type != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED)
            return -EINVAL;
        int rc = apply_c_options(f, u);
        if (rc)
            return rc;
    }
    return 0;
}

int proto_set_init(proto_set_t *set, const Google__Protobuf__Compiler__CodeGeneratorRequest *req)
{
    *set = (proto_set_t){0};
    if (req->n_proto_file == 0)
        return 0;
    set->files = calloc(req->n_proto_file, sizeof(set->files[0]));
    if (!set->files)
        return -ENOMEM;
    set->n_files = req->n_proto_file;
    for (size_t i = 0; i < set->n_files; i++) {
        pgw_file_t *f = &set->files[i];
        f->proto = req->proto_file[i];
        f->package = f->proto->package ? f->proto->package : "";
        int rc = read_c_options(f);
        if (rc) {
            proto_set_free(set);
            return rc;
        }
    }
    return 0;
}

void proto_set_free(proto_set_t *set)
{
    for (size_t i = 0; i < set->n_files; i++)
        free(set->files[i].c_package);
    free(set->files);
    *set = (proto_set_t){0};
}

const pgw_file_t *proto_set_file(const proto_set_t *set, const char *name)
{
    for (size_t i = 0; i < set->n_files; i++)
        if (set->files[i].proto->name && strcmp(set->files[i].proto->name, name) == 0)
            return &set->files[i];
    return NULL;
}

/* The part of type_name (".pkg.Outer.Inner") after the package, or NULL if
 * the type is not in that package. */
static const char *after_package(const char *type_name, const char *package)
{
    if (type_name[0] != '.')
        return NULL;
    type_name++;
    size_t n = strlen(package);
    if (n == 0)
        return type_name;
    if (strncmp(type_name, package, n) != 0 || type_name[n] != '.')
        return NULL;
    return type_name + n + 1;
}

/* Whether the dotted path ("Outer.Inner") names one of msgs or a type
 * nested in them. */
static bool has_message(Google__Protobuf__DescriptorProto *const *msgs, size_t n_msgs,
                        const char *path)
{
    size_t len = strcspn(path, ".");
    for (size_t i = 0; i < n_msgs; i++) {
        const char *name = msgs[i]->name ? msgs[i]->name : "";
        if (strlen(name) != len || strncmp(name, path, len) != 0)
            continue;
        if (path[len] == '\0')
            return true;
        return has_message(msgs[i]->nested_type, msgs[i]->n_nested_type, path + len + 1);
    }
    return false;
}

const pgw_file_t *proto_set_message_file(const proto_set_t *set, const char *type_name)
{
    for (size_t i = 0; i < set->n_files; i++) {
        const pgw_file_t *f = &set->files[i];
        const char *path = after_package(type_name, f->package);
        if (path && has_message(f->proto->message_type, f->proto->n_message_type, path))
            return f;
    }
    return NULL;
}
