/*
 * main.c - protoc-gen-weft, the protoc plugin that writes weft's typed RPC
 * stubs beside protoc-c's message code:
 *
 *   protoc --c_out=. --weft_out=. echo.proto
 *
 * protoc runs it with a CodeGeneratorRequest on stdin and reads a
 * CodeGeneratorResponse from stdout (google/protobuf/compiler/plugin.proto,
 * compiled with protoc-c at build time). For each file to generate it
 * writes <base>.weft.h and <base>.weft.c, base being the file's name
 * without ".proto", as protoc-c names <base>.pb-c.h.
 *
 * A file without services still gets the pair, with no stubs in it: build
 * rules (meson's generator, make patterns) declare the same outputs for
 * every .proto they process, and a file of shared message types goes
 * through the same rule as the files that use it. A file that protobuf-c's
 * no_generate option keeps protoc-c from writing gets nothing, since there
 * would be no .pb-c.h to include.
 *
 * Problems with the input go back to protoc in the response's error field,
 * which protoc prints and fails on; the exit status is non-zero only when
 * the plugin cannot talk to protoc at all.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "generate.h"
#include "names.h"
#include "proto_set.h"
#include "strbuf.h"

typedef Google__Protobuf__Compiler__CodeGeneratorRequest request_t;
typedef Google__Protobuf__Compiler__CodeGeneratorResponse response_t;
typedef Google__Protobuf__Compiler__CodeGeneratorResponse__File response_file_t;

/* The response and the memory it points to. */
typedef struct output {
    response_t resp;
    response_file_t **files; /* the response's files once all went well */
    size_t n_files, cap;
    strbuf_t error;
} output_t;

/* Reads all of f. 0 or -errno. */
static int read_all(FILE *f, uint8_t **data, size_t *len)
{
    strbuf_t b = STRBUF_INIT;
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        strbuf_append_n(&b, chunk, n);
    if (ferror(f)) {
        strbuf_free(&b);
        return -EIO;
    }
    *len = b.len;
    *data = (uint8_t *)strbuf_take(&b);
    return *data ? 0 : -ENOMEM;
}

/* Adds a file to the response, taking the text of name and content. */
static int add_file(output_t *out, strbuf_t *name, strbuf_t *content)
{
    if (out->n_files == out->cap) {
        size_t cap = out->cap ? 2 * out->cap : 8;
        response_file_t **files = realloc(out->files, cap * sizeof(files[0]));
        if (!files)
            return -ENOMEM;
        out->files = files;
        out->cap = cap;
    }
    response_file_t *f = malloc(sizeof(*f));
    if (!f)
        return -ENOMEM;
    google__protobuf__compiler__code_generator_response__file__init(f);
    f->name = strbuf_take(name);
    f->content = strbuf_take(content);
    out->files[out->n_files++] = f;
    if (!f->name || !f->content)
        return -ENOMEM;
    return 0;
}

/* Adds <base><suffix> with the given content. */
static int add_output(output_t *out, const char *proto, const char *suffix, strbuf_t *content)
{
    strbuf_t name = STRBUF_INIT;
    names_strip_proto(&name, proto);
    strbuf_append(&name, suffix);
    int rc = add_file(out, &name, content);
    strbuf_free(&name);
    return rc;
}

static int generate_file(output_t *out, const proto_set_t *set, const char *proto)
{
    const pgw_file_t *file = proto_set_file(set, proto);
    if (!file) {
        strbuf_printf(&out->error, "%s: protoc sent no descriptor for it", proto);
        return -EINVAL;
    }
    if (file->no_generate)
        return 0;
    strbuf_t h = STRBUF_INIT, c = STRBUF_INIT;
    int rc = generate_stubs(set, file, &h, &c, &out->error);
    if (!rc)
        rc = add_output(out, proto, ".weft.h", &h);
    if (!rc)
        rc = add_output(out, proto, ".weft.c", &c);
    strbuf_free(&h);
    strbuf_free(&c);
    return rc;
}

static int generate_all(output_t *out, const request_t *req)
{
    if (req->parameter && req->parameter[0]) {
        strbuf_printf(&out->error, "protoc-gen-weft takes no options (got \"%s\")",
                      req->parameter);
        return -EINVAL;
    }
    proto_set_t set;
    int rc = proto_set_init(&set, req);
    if (rc == -EINVAL)
        strbuf_append(&out->error, "a file's protobuf-c options (pb_c_file) do not parse");
    for (size_t i = 0; !rc && i < req->n_file_to_generate; i++)
        rc = generate_file(out, &set, req->file_to_generate[i]);
    proto_set_free(&set);
    return rc;
}

/* Fills in the response from the request bytes. 0 or -ENOMEM; any other
 * failure is reported in the response. */
static int respond(output_t *out, const uint8_t *data, size_t len)
{
    google__protobuf__compiler__code_generator_response__init(&out->resp);
    /* The stubs never look at fields, so proto3 optional fields are fine. */
    out->resp.has_supported_features = 1;
    out->resp.supported_features =
        GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_RESPONSE__FEATURE__FEATURE_PROTO3_OPTIONAL;
    int rc;
    request_t *req = google__protobuf__compiler__code_generator_request__unpack(NULL, len, data);
    if (req) {
        rc = generate_all(out, req);
        google__protobuf__compiler__code_generator_request__free_unpacked(req, NULL);
    } else {
        strbuf_append(&out->error, "cannot parse the CodeGeneratorRequest from protoc");
        rc = -EINVAL;
    }
    if (rc == 0) {
        out->resp.n_file = out->n_files;
        out->resp.file = out->files;
    } else if (rc == -EINVAL) {
        /* Only the error goes back: no half-written set of files. An empty
         * error would read as success, hence the fallback. */
        if (out->error.len == 0)
            strbuf_append(&out->error, "internal error (a bad template)");
        out->resp.error = (char *)strbuf_str(&out->error);
        rc = strbuf_error(&out->error);
    }
    return rc;
}

static int write_response(const response_t *resp, FILE *f)
{
    size_t len = google__protobuf__compiler__code_generator_response__get_packed_size(resp);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return -ENOMEM;
    google__protobuf__compiler__code_generator_response__pack(resp, buf);
    int rc = fwrite(buf, 1, len, f) == len && fflush(f) == 0 ? 0 : -EIO;
    free(buf);
    return rc;
}

static void output_free(output_t *out)
{
    for (size_t i = 0; i < out->n_files; i++) {
        free(out->files[i]->name);
        free(out->files[i]->content);
        free(out->files[i]);
    }
    free(out->files);
    strbuf_free(&out->error);
}

int main(void)
{
    uint8_t *data = NULL;
    size_t len = 0;
    output_t out = {.error = STRBUF_INIT};
    int rc = read_all(stdin, &data, &len);
    if (!rc)
        rc = respond(&out, data, len);
    if (!rc)
        rc = write_response(&out.resp, stdout);
    if (rc)
        fprintf(stderr, "protoc-gen-weft: %s\n", strerror(-rc));
    output_free(&out);
    free(data);
    return rc ? 1 : 0;
}
