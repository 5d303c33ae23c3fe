/*
 * test_units.c - unit tests of protoc-gen-weft's helpers: protoc-c's name
 * mangling (names.c), with the cases protoc-c 1.4 was seen to produce, and
 * the $name$ templates (template.c). check_names.c checks the same names
 * end to end, against the code protoc-c really generates.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "names.h"
#include "template.h"

static int failures;

static void expect(const char *what, const char *input, strbuf_t *got, const char *want)
{
    if (strbuf_error(got) || strcmp(strbuf_str(got), want) != 0) {
        fprintf(stderr, "FAIL %s(\"%s\"): got \"%s\" (error %d), want \"%s\"\n", what, input,
                strbuf_str(got), strbuf_error(got), want);
        failures++;
    }
    strbuf_clear(got);
}

typedef void one_arg_fn(strbuf_t *out, const char *s);

static void camel_to_lower(strbuf_t *out, const char *s)
{
    names_camel_to_lower(out, s, strlen(s));
}

static void to_camel(strbuf_t *out, const char *s)
{
    names_to_camel(out, s, strlen(s));
}

static const struct {
    const char *what;
    one_arg_fn *fn;
    const char *input, *want;
} cases[] = {
    {"CamelToLower", camel_to_lower, "Echo", "echo"},
    {"CamelToLower", camel_to_lower, "EchoService", "echo_service"},
    {"CamelToLower", camel_to_lower, "HTTPServer", "httpserver"},
    {"CamelToLower", camel_to_lower, "HTTPServer_svc", "httpserver_svc"},
    {"CamelToLower", camel_to_lower, "get_URL2Thing", "get__url2_thing"},
    {"CamelToLower", camel_to_lower, "fooBar_Baz9", "foo_bar__baz9"},
    {"CamelToLower", camel_to_lower, "x2Y", "x2_y"},
    {"CamelToLower", camel_to_lower, "do_it_3x", "do_it_3x"},
    {"CamelToLower", camel_to_lower, "aBC", "a_bc"},
    {"ToCamel", to_camel, "my_pkg", "MyPkg"},
    {"ToCamel", to_camel, "HTTPStuff", "HTTPStuff"},
    {"ToCamel", to_camel, "v2", "V2"},
    {"ToCamel", to_camel, "URL_2thing", "URL2thing"},
    {"ToCamel", to_camel, "_x__y", "XY"},
    {"FullNameToLower", names_full_to_lower, ".example.EchoService", "example__echo_service"},
    {"FullNameToLower", names_full_to_lower, "new_Pkg.Sub.S", "new__pkg__sub__s"},
    {"FullNameToLower", names_full_to_lower, "lower_svc", "lower_svc"},
    {"FullNameToC", names_full_to_c, ".weft_test.my_pkg.HTTPStuff.v2.Outer.Inner",
     "WeftTest__MyPkg__HTTPStuff__V2__Outer__Inner"},
    {"FullNameToC", names_full_to_c, "new_Pkg.Sub.S", "NewPkg__Sub__S"},
    {"FilenameIdentifier", names_file_identifier, "sub/dir/nested.proto",
     "sub_2fdir_2fnested_2eproto"},
    {"FilenameIdentifier", names_file_identifier, "a-b_c.proto", "a_2db_5fc_2eproto"},
    {"StripProto", names_strip_proto, "sub/dir/nested.proto", "sub/dir/nested"},
    {"StripProto", names_strip_proto, "old.protodevel", "old"},
    {"StripProto", names_strip_proto, "not_proto.txt", "not_proto.txt"},
};

static void test_names(void)
{
    strbuf_t b = STRBUF_INIT;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cases[i].fn(&b, cases[i].input);
        expect(cases[i].what, cases[i].input, &b, cases[i].want);
    }
    /* c_package replaces the package, or is put in front when there is none. */
    names_c_full_name(&b, ".orig.pkg.Local", "orig.pkg", "new_Pkg.Sub");
    expect("OverrideFullName", ".orig.pkg.Local", &b, "new_Pkg.Sub.Local");
    names_c_full_name(&b, ".M", "", "cp");
    expect("OverrideFullName", ".M", &b, "cp.M");
    names_c_full_name(&b, ".a.b.M.Inner", "a.b", NULL);
    expect("OverrideFullName", ".a.b.M.Inner", &b, "a.b.M.Inner");
    strbuf_free(&b);
}

static void test_template(void)
{
    static const char *const names[] = {"svc", "m", "unset"};
    static const char *const values[] = {"example__echo_service", "echo", NULL};
    strbuf_t b = STRBUF_INIT;
    template_expand(&b, "int $svc$__$m$_call(void);", names, values, 3);
    expect("template", "$svc$__$m$_call", &b, "int example__echo_service__echo_call(void);");
    template_expand(&b, "no variables", names, values, 3);
    expect("template", "no variables", &b, "no variables");

    const char *bad[] = {"$nope$", "$unset$", "$svc"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        strbuf_t e = STRBUF_INIT;
        template_expand(&e, bad[i], names, values, 3);
        if (strbuf_error(&e) != -EINVAL) {
            fprintf(stderr, "FAIL template(\"%s\"): not refused\n", bad[i]);
            failures++;
        }
        strbuf_free(&e);
    }
    strbuf_free(&b);
}

int main(void)
{
    test_names();
    test_template();
    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    return 0;
}
