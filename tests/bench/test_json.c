/*
 * test_json.c - rpc/json.c: the strict parser (valid documents, invalid
 * ones with the offset of the error, the depth limit), the writer, and the
 * conversion between JSON and protobuf-c messages both ways, for a proto3
 * message with every field type (test_json.proto) and proto2 presence
 * (test_json2.proto). A counting allocator checks that failed conversions
 * free everything they allocated.
 */
#include <errno.h>
#include <locale.h>
#include <math.h>

#include "rpc/json.h"
#include "weft_test.h"

#include "test_json.pb-c.h"
#include "test_json2.pb-c.h"

/* ---- helpers ---- */

static weft_json_doc_t *parse_ok(const char *text)
{
    weft_json_doc_t *doc = NULL;
    weft_json_error_t err = {0};
    int rc = weft__json_parse(text, strlen(text), 0, &doc, &err);
    WT_ASSERT_MSG(rc == 0, "parse of %s failed: %s", text, err.message);
    return doc;
}

/* Parses text (len bytes), expecting an error at `offset` whose message
 * contains `what`. */
static void parse_bad_n(const char *text, size_t len, int max_depth, size_t offset,
                        const char *what)
{
    weft_json_doc_t *doc = NULL;
    weft_json_error_t err = {0};
    int rc = weft__json_parse(text, len, max_depth, &doc, &err);
    WT_ASSERT_MSG(rc == -EINVAL, "'%.60s' parsed (rc %d)", text, rc);
    WT_ASSERT_MSG(err.offset == offset, "'%.60s': offset %zu, expected %zu (%s)", text, err.offset,
                  offset, err.message);
    WT_ASSERT_MSG(strstr(err.message, what), "'%.60s': message '%s' lacks '%s'", text, err.message,
                  what);
    char prefix[32];
    snprintf(prefix, sizeof(prefix), "at byte %zu: ", offset);
    WT_ASSERT_MSG(strncmp(err.message, prefix, strlen(prefix)) == 0, "%s", err.message);
}

static void parse_bad(const char *text, size_t offset, const char *what)
{
    parse_bad_n(text, strlen(text), 0, offset, what);
}

/* An allocator that counts what is live, to find leaks on error paths. */
static long live_allocs;

static void *count_alloc(void *data, size_t size)
{
    (void)data;
    live_allocs++;
    return malloc(size);
}

static void count_free(void *data, void *p)
{
    (void)data;
    if (p)
        live_allocs--;
    free(p);
}

static ProtobufCAllocator counting = {count_alloc, count_free, NULL};

static ProtobufCMessage *to_msg(const ProtobufCMessageDescriptor *desc, const char *text)
{
    ProtobufCMessage *msg = NULL;
    weft_json_error_t err = {0};
    int rc = weft__json_parse_message(text, strlen(text), desc, &counting, &msg, &err);
    WT_ASSERT_MSG(rc == 0, "%s: %s", text, err.message);
    return msg;
}

static void free_msg(ProtobufCMessage *msg)
{
    protobuf_c_message_free_unpacked(msg, &counting);
    WT_EQ(live_allocs, 0);
}

/* Converting text must fail with a message containing `what`, at the
 * offset of the first occurrence of `at` in text, leaking nothing. */
static void to_msg_bad(const ProtobufCMessageDescriptor *desc, const char *text, const char *at,
                       const char *what)
{
    ProtobufCMessage *msg = NULL;
    weft_json_error_t err = {0};
    int rc = weft__json_parse_message(text, strlen(text), desc, &counting, &msg, &err);
    WT_ASSERT_MSG(rc == -EINVAL, "%s converted (rc %d)", text, rc);
    WT_ASSERT_MSG(strstr(err.message, what), "%s: message '%s' lacks '%s'", text, err.message,
                  what);
    const char *p = strstr(text, at);
    WT_ASSERT(p);
    WT_ASSERT_MSG(err.offset == (size_t)(p - text), "%s: offset %zu, expected %zu (%s)", text,
                  err.offset, (size_t)(p - text), err.message);
    WT_EQ(live_allocs, 0);
}

static char *to_json(const ProtobufCMessage *msg, unsigned flags)
{
    weft_json_buf_t b = WEFT_JSON_BUF_INIT;
    WT_EQ(weft__json_write_message(&b, msg, flags), 0);
    return b.data;
}

/* ---- the parser ---- */

static void test_valid_documents(void)
{
    weft_json_doc_t *doc = parse_ok(" {\"a\": [1, -0, 2.5e3, 1E-2, true, false, null, \"x\"],"
                                    "\t\"b\" : {}, \"c\":[], \"\": \"empty key\"}\r\n");
    const weft_json_value_t *root = weft__json_root(doc);
    WT_EQ(root->type, WEFT_JSON_OBJECT);
    WT_EQ(root->u.object.n, 4);
    WT_EQ(root->offset, 1);
    const weft_json_value_t *a = weft__json_get(root, "a");
    WT_ASSERT(a && a->type == WEFT_JSON_ARRAY && a->u.array.n == 8);
    WT_STREQ(a->u.array.items[0].u.number.text, "1");
    WT_ASSERT(a->u.array.items[1].u.number.value == 0 &&
              signbit(a->u.array.items[1].u.number.value));
    WT_ASSERT(a->u.array.items[2].u.number.value == 2500);
    WT_ASSERT(a->u.array.items[3].u.number.value == 0.01);
    WT_ASSERT(a->u.array.items[4].type == WEFT_JSON_BOOL && a->u.array.items[4].u.boolean);
    WT_ASSERT(a->u.array.items[5].type == WEFT_JSON_BOOL && !a->u.array.items[5].u.boolean);
    WT_EQ(a->u.array.items[6].type, WEFT_JSON_NULL);
    WT_STREQ(a->u.array.items[7].u.string.str, "x");
    WT_EQ(a->u.array.items[7].offset, 47);
    WT_EQ(weft__json_get(root, "b")->u.object.n, 0);
    WT_EQ(weft__json_get(root, "c")->u.array.n, 0);
    WT_STREQ(weft__json_get(root, "")->u.string.str, "empty key");
    WT_ASSERT(weft__json_get(root, "zz") == NULL);
    weft__json_free(doc);

    /* Scalars at the top, as RFC 8259 allows. */
    const char *scalars[] = {"0", "-1.5", "\"s\"", "true", "null", " 7 "};
    for (size_t i = 0; i < sizeof(scalars) / sizeof(scalars[0]); i++)
        weft__json_free(parse_ok(scalars[i]));

    /* Escapes, \u escapes, surrogate pairs and raw UTF-8. */
    doc = parse_ok("\"q\\\" b\\\\ s\\/ \\b\\f\\n\\r\\t \\u00e9 \\u20AC \\ud83d\\ude00 \xc3\xa9 "
                   "\xf0\x9f\x98\x80 \\u0000.\"");
    root = weft__json_root(doc);
    const char want[] = "q\" b\\ s/ \b\f\n\r\t \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xc3\xa9 "
                        "\xf0\x9f\x98\x80 \0.";
    WT_EQ(root->u.string.len, sizeof(want) - 1);
    WT_ASSERT(memcmp(root->u.string.str, want, sizeof(want) - 1) == 0);
    weft__json_free(doc);

    /* Not NUL-terminated: only len bytes are read. */
    weft_json_doc_t *d2;
    WT_EQ(weft__json_parse("[1]]]", 3, 0, &d2, NULL), 0);
    weft__json_free(d2);
}

static void test_integers(void)
{
    weft_json_doc_t *doc =
        parse_ok("[9223372036854775807, -9223372036854775808, 9223372036854775808, "
                 "18446744073709551615, 18446744073709551616, 1e3, 2.0, 1.5, -1, -0]");
    const weft_json_value_t *v = weft__json_root(doc)->u.array.items;
    int64_t i;
    uint64_t u;
    WT_EQ(weft__json_int64(&v[0], &i), 0);
    WT_ASSERT(i == INT64_MAX);
    WT_EQ(weft__json_int64(&v[1], &i), 0);
    WT_ASSERT(i == INT64_MIN);
    WT_EQ(weft__json_int64(&v[2], &i), -ERANGE);
    WT_EQ(weft__json_uint64(&v[3], &u), 0);
    WT_ASSERT(u == UINT64_MAX);
    WT_EQ(weft__json_uint64(&v[4], &u), -ERANGE);
    WT_EQ(weft__json_int64(&v[5], &i), 0);
    WT_EQ(i, 1000);
    WT_EQ(weft__json_int64(&v[6], &i), 0);
    WT_EQ(i, 2);
    WT_EQ(weft__json_int64(&v[7], &i), -EINVAL);
    WT_EQ(weft__json_uint64(&v[8], &u), -ERANGE);
    WT_EQ(weft__json_uint64(&v[9], &u), 0);
    WT_EQ(u, 0);
    weft__json_free(doc);
}

static void test_invalid_documents(void)
{
    parse_bad("", 0, "empty document");
    parse_bad(" \n\t", 3, "empty document");
    parse_bad("{", 1, "unexpected end");
    parse_bad("[1,]", 3, "trailing comma");
    parse_bad("{\"a\":1,}", 7, "trailing comma");
    parse_bad("[1 2]", 3, "expected ',' or ']'");
    parse_bad("{\"a\" 1}", 5, "expected ':'");
    parse_bad("{a:1}", 1, "expected a string key");
    parse_bad("{\"a\":1 \"b\":2}", 7, "expected ',' or '}'");
    parse_bad("[", 1, "unexpected end");
    parse_bad("[1", 2, "unexpected end of the document in an array");
    parse_bad("01", 1, "leading zeros");
    parse_bad("-", 1, "expected a digit");
    parse_bad("1.", 2, "after the decimal point");
    parse_bad("1.e5", 2, "after the decimal point");
    parse_bad("1e", 2, "exponent");
    parse_bad("1e+", 3, "exponent");
    parse_bad("+1", 0, "unexpected '+'");
    parse_bad(".5", 0, "unexpected '.'");
    parse_bad("1e999", 0, "too large");
    parse_bad("tru", 0, "unexpected 't'");
    parse_bad("nul", 0, "unexpected 'n'");
    parse_bad("NaN", 0, "unexpected 'N'");
    parse_bad("[Infinity]", 1, "unexpected 'I'");
    parse_bad("'a'", 0, "unexpected");
    parse_bad("/* c */ 1", 0, "unexpected '/'");
    parse_bad("1 2", 2, "after the JSON value");
    parse_bad("[1]x", 3, "after the JSON value");
    parse_bad("{}{}", 2, "after the JSON value");
    parse_bad("\"abc", 0, "unterminated string");
    parse_bad("[\"abc\\\"]", 1, "unterminated string");
    parse_bad("\"a\tb\"", 2, "control character 0x09");
    parse_bad("\"a\nb\"", 2, "control character 0x0a");
    parse_bad("\"\\x\"", 1, "invalid escape");
    parse_bad("\"\\u12\"", 1, "four hex digits");
    parse_bad("\"\\u12G4\"", 1, "four hex digits");
    parse_bad("\"ab\\ud800\"", 3, "not followed by a low");
    parse_bad("\"\\ud800\\u0041\"", 1, "not followed by a low");
    parse_bad("\"\\udc00\"", 1, "unpaired low surrogate");
    parse_bad("\"ok \xff\"", 4, "invalid UTF-8");
    parse_bad("\"\xc0\xaf\"", 1, "invalid UTF-8");         /* overlong '/' */
    parse_bad("\"\xed\xa0\x80\"", 1, "invalid UTF-8");     /* a surrogate */
    parse_bad("\"\xf4\x90\x80\x80\"", 1, "invalid UTF-8"); /* past U+10FFFF */
    parse_bad("\"\xe2\x82\"", 1, "invalid UTF-8");         /* cut short */
    parse_bad_n("[1,\0]", 5, 0, 3, "byte 0x00");
    parse_bad("\xef\xbb\xbf{}", 0, "byte 0xef"); /* RFC 8259: no BOM */
}

static void test_depth_limit(void)
{
    char buf[300];
    for (int depth = 1; depth <= 100; depth++) {
        for (int i = 0; i < depth; i++)
            buf[i] = '[';
        for (int i = 0; i < depth; i++)
            buf[depth + i] = ']';
        size_t len = (size_t)depth * 2;
        if (depth <= WEFT_JSON_MAX_DEPTH) {
            weft_json_doc_t *doc;
            WT_EQ(weft__json_parse(buf, len, 0, &doc, NULL), 0);
            weft__json_free(doc);
        } else {
            parse_bad_n(buf, len, 0, WEFT_JSON_MAX_DEPTH, "nested deeper than 64");
        }
    }
    parse_bad_n("{\"a\":{\"b\":[1]}}", 15, 2, 10, "nested deeper than 2");
    weft_json_doc_t *doc;
    WT_EQ(weft__json_parse("{\"a\":{\"b\":[1]}}", 15, 3, &doc, NULL), 0);
    weft__json_free(doc);

    /* A hostile document: a million brackets, refused without recursing. */
    size_t n = 1000000;
    char *deep = malloc(n);
    memset(deep, '[', n);
    parse_bad_n(deep, n, 0, WEFT_JSON_MAX_DEPTH, "nested deeper");
    free(deep);
}

/* ---- the writer ---- */

static void test_writer(void)
{
    weft_json_buf_t b = WEFT_JSON_BUF_INIT;
    const char s[] = "a\"b\\c\x01\x1f\n\t\xc3\xa9\xff/\0z";
    weft__json_write_string(&b, s, sizeof(s) - 1);
    WT_STREQ(b.data, "\"a\\\"b\\\\c\\u0001\\u001f\\n\\t\xc3\xa9\\ufffd/\\u0000z\"");
    /* What the writer writes, the parser reads back (bad UTF-8 replaced). */
    weft_json_doc_t *doc = parse_ok(b.data);
    WT_EQ(weft__json_root(doc)->u.string.len, sizeof(s) - 1 + 2); /* U+FFFD is 3 bytes */
    weft__json_free(doc);
    weft__json_buf_free(&b);

    const struct {
        double v;
        const char *text;
    } doubles[] = {{0.1, "0.1"},
                   {5, "5"},
                   {-2.5, "-2.5"},
                   {1e21, "1e+21"},
                   {1.0 / 3, "0.3333333333333333"},
                   {NAN, "null"},
                   {INFINITY, "null"}};
    for (size_t i = 0; i < sizeof(doubles) / sizeof(doubles[0]); i++) {
        weft__json_write_double(&b, doubles[i].v);
        WT_STREQ(b.data, doubles[i].text);
        weft__json_buf_free(&b);
    }
    weft__json_buf_printf(&b, "%d-%s", 42, "x");
    weft__json_buf_puts(&b, "!");
    WT_STREQ(b.data, "42-x!");
    weft__json_buf_free(&b);
}

/* Numbers read and print with a '.', whatever the program's locale. */
static void test_locale(void)
{
    const char *locales[] = {"de_DE.UTF-8", "fr_FR.UTF-8", "de_DE", "fr_FR"};
    const char *set = NULL;
    for (size_t i = 0; !set && i < sizeof(locales) / sizeof(locales[0]); i++)
        set = setlocale(LC_NUMERIC, locales[i]);
    if (!set) {
        WT_NOTE("locale: no comma locale installed, skipped");
        return;
    }
    weft_json_doc_t *doc = parse_ok("1.5");
    WT_ASSERT(weft__json_root(doc)->u.number.value == 1.5);
    weft__json_free(doc);
    weft_json_buf_t b = WEFT_JSON_BUF_INIT;
    weft__json_write_double(&b, 0.25);
    WT_STREQ(b.data, "0.25");
    weft__json_buf_free(&b);
    setlocale(LC_NUMERIC, "C");
}

/* ---- JSON -> message ---- */

static const char all_json[] =
    "{\"f_double\": 1.25, \"fFloat\": -0.5, \"f_int32\": -7, \"f_int64\": \"-9223372036854775808\","
    " \"f_uint32\": 4294967295, \"f_uint64\": \"18446744073709551615\", \"f_sint32\": -2147483648,"
    " \"f_sint64\": -5, \"f_fixed32\": \"12\", \"f_fixed64\": 13, \"f_sfixed32\": -14,"
    " \"f_sfixed64\": 1e3, \"f_bool\": true, \"f_string\": \"h\\u00e9llo\","
    " \"f_bytes\": \"AAEC/w==\", \"f_enum\": \"BLUE\", \"f_inner\": {\"name\": \"in\", \"id\": 3,"
    " \"child\": {\"id\": 4}},"
    " \"r_double\": [1.5, \"NaN\", \"-Infinity\"], \"r_float\": [\"Infinity\", 2],"
    " \"r_int32\": [1, -2, 3], \"r_int64\": [\"5\", 6], \"r_uint32\": [7], \"r_uint64\": [\"8\"],"
    " \"r_sint32\": [-9], \"r_sint64\": [-10], \"r_fixed32\": [11], \"r_fixed64\": [12],"
    " \"r_sfixed32\": [-13], \"r_sfixed64\": [-14], \"r_bool\": [true, false],"
    " \"r_string\": [\"a\", \"\"], \"r_bytes\": [\"_-8\", \"YQ\"], \"r_enum\": [\"RED\", 2, 99],"
    " \"r_inner\": [{\"name\": \"x\"}, {}], \"o_inner\": {\"id\": 5}, \"o_string\": null}";

static void check_all(const Jt__All *m)
{
    WT_ASSERT(m->f_double == 1.25 && m->f_float == -0.5f);
    WT_EQ(m->f_int32, -7);
    WT_ASSERT(m->f_int64 == INT64_MIN);
    WT_ASSERT(m->f_uint32 == UINT32_MAX && m->f_uint64 == UINT64_MAX);
    WT_ASSERT(m->f_sint32 == INT32_MIN);
    WT_EQ(m->f_sint64, -5);
    WT_EQ(m->f_fixed32, 12);
    WT_EQ(m->f_fixed64, 13);
    WT_EQ(m->f_sfixed32, -14);
    WT_EQ(m->f_sfixed64, 1000);
    WT_EQ(m->f_bool, 1);
    WT_STREQ(m->f_string, "h\xc3\xa9llo");
    WT_EQ(m->f_bytes.len, 4);
    WT_ASSERT(memcmp(m->f_bytes.data, "\x00\x01\x02\xff", 4) == 0);
    WT_EQ(m->f_enum, JT__COLOR__BLUE);
    WT_ASSERT(m->f_inner && m->f_inner->child);
    WT_STREQ(m->f_inner->name, "in");
    WT_EQ(m->f_inner->id, 3);
    WT_EQ(m->f_inner->child->id, 4);
    WT_EQ(m->n_r_double, 3);
    WT_ASSERT(m->r_double[0] == 1.5 && isnan(m->r_double[1]) && m->r_double[2] == -INFINITY);
    WT_ASSERT(m->n_r_float == 2 && m->r_float[0] == INFINITY && m->r_float[1] == 2);
    WT_ASSERT(m->n_r_int32 == 3 && m->r_int32[1] == -2);
    WT_ASSERT(m->n_r_int64 == 2 && m->r_int64[0] == 5 && m->r_int64[1] == 6);
    WT_ASSERT(m->n_r_uint32 == 1 && m->r_uint32[0] == 7 && m->r_uint64[0] == 8);
    WT_ASSERT(m->r_sint32[0] == -9 && m->r_sint64[0] == -10 && m->r_fixed32[0] == 11);
    WT_ASSERT(m->r_fixed64[0] == 12 && m->r_sfixed32[0] == -13 && m->r_sfixed64[0] == -14);
    WT_ASSERT(m->n_r_bool == 2 && m->r_bool[0] && !m->r_bool[1]);
    WT_ASSERT(m->n_r_string == 2);
    WT_STREQ(m->r_string[0], "a");
    WT_STREQ(m->r_string[1], "");
    WT_ASSERT(m->n_r_bytes == 2 && m->r_bytes[0].len == 2 && m->r_bytes[1].len == 1);
    WT_ASSERT(memcmp(m->r_bytes[0].data, "\xff\xef", 2) == 0 && m->r_bytes[1].data[0] == 'a');
    WT_ASSERT(m->n_r_enum == 3 && m->r_enum[0] == JT__COLOR__RED && m->r_enum[1] == 2 &&
              (int)m->r_enum[2] == 99);
    WT_ASSERT(m->n_r_inner == 2);
    WT_STREQ(m->r_inner[0]->name, "x");
    WT_EQ(m->r_inner[1]->id, 0);
    WT_EQ(m->choice_case, JT__ALL__CHOICE_O_INNER);
    WT_EQ(m->o_inner->id, 5);
}

/* Packed bytes of a message, for comparing two messages. */
static size_t packed(const ProtobufCMessage *m, uint8_t *out, size_t size)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    WT_ASSERT(n <= size);
    return protobuf_c_message_pack(m, out);
}

static void test_to_message_all_types(void)
{
    ProtobufCMessage *msg = to_msg(&jt__all__descriptor, all_json);
    check_all((const Jt__All *)msg);
    WT_ASSERT(protobuf_c_message_check(msg));

    /* Back to JSON, and from that JSON again: the same message. */
    for (unsigned flags = 0; flags <= WEFT_JSON_PROTO_NAMES; flags += WEFT_JSON_PROTO_NAMES) {
        char *text = to_json(msg, flags);
        ProtobufCMessage *again = to_msg(&jt__all__descriptor, text);
        static uint8_t a[4096], b[4096];
        size_t na = packed(msg, a, sizeof(a)), nb = packed(again, b, sizeof(b));
        WT_ASSERT_MSG(na == nb && memcmp(a, b, na) == 0, "round trip differs: %s", text);
        protobuf_c_message_free_unpacked(again, &counting);
        free(text);
    }

    /* The proto3 JSON mapping of the output. */
    char *text = to_json(msg, 0);
    const char *expect[] = {
        "\"fDouble\":1.25",
        "\"fFloat\":-0.5",
        "\"fInt64\":\"-9223372036854775808\"",
        "\"fUint32\":4294967295",
        "\"fUint64\":\"18446744073709551615\"",
        "\"fFixed32\":12",
        "\"fBool\":true",
        "\"fString\":\"h\xc3\xa9llo\"",
        "\"fBytes\":\"AAEC/w==\"",
        "\"fEnum\":\"BLUE\"",
        "\"fInner\":{\"name\":\"in\",\"id\":3,\"child\":{\"id\":4}}",
        "\"rDouble\":[1.5,\"NaN\",\"-Infinity\"]",
        "\"rFloat\":[\"Infinity\",2]",
        "\"rInt64\":[\"5\",\"6\"]",
        "\"rBytes\":[\"/+8=\",\"YQ==\"]",
        "\"rEnum\":[\"RED\",\"GREEN\",99]",
        "\"rInner\":[{\"name\":\"x\"},{}]",
        "\"oInner\":{\"id\":5}",
        "\"rString\":[\"a\",\"\"]",
    };
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++)
        WT_ASSERT_MSG(strstr(text, expect[i]), "%s lacks %s", text, expect[i]);
    WT_ASSERT(!strstr(text, "oString"));
    free(text);
    text = to_json(msg, WEFT_JSON_PROTO_NAMES);
    WT_ASSERT(strstr(text, "\"f_double\":1.25") && strstr(text, "\"o_inner\":{\"id\":5}"));
    free(text);
    free_msg(msg);

    /* proto3 fields at their defaults are left out; so is an empty message. */
    msg = to_msg(&jt__all__descriptor, "{\"f_int32\": 0, \"f_string\": \"\", \"r_int32\": [],"
                                       " \"f_enum\": \"COLOR_UNSPECIFIED\", \"f_inner\": null}");
    text = to_json(msg, 0);
    WT_STREQ(text, "{}");
    free(text);
    free_msg(msg);

    /* A oneof member given alone is set, with its case. */
    msg = to_msg(&jt__all__descriptor, "{\"o_int32\": 0}");
    WT_EQ(((Jt__All *)msg)->choice_case, JT__ALL__CHOICE_O_INT32);
    text = to_json(msg, 0);
    WT_STREQ(text, "{\"oInt32\":0}");
    free(text);
    free_msg(msg);
}

static void test_proto2_presence(void)
{
    ProtobufCMessage *msg = to_msg(&jt2__req__descriptor, "{\"name\": \"n\", \"id\": 0}");
    Jt2__Req *r = (Jt2__Req *)msg;
    WT_STREQ(r->name, "n");
    WT_STREQ(r->note, "none"); /* the default */
    WT_ASSERT(!r->has_big && !r->has_blob && !r->has_flag && r->flag && !r->sub);
    char *text = to_json(msg, 0);
    WT_STREQ(text, "{\"name\":\"n\",\"id\":0}");
    free(text);
    free_msg(msg);

    msg = to_msg(&jt2__req__descriptor, "{\"name\": \"n\", \"id\": 1, \"note\": \"x\", \"big\": 0,"
                                        " \"blob\": \"\", \"flag\": false, \"sub\": {},"
                                        " \"nums\": [1, 2]}");
    r = (Jt2__Req *)msg;
    WT_ASSERT(r->has_big && r->has_blob && r->has_flag && !r->flag && r->sub && r->n_nums == 2);
    text = to_json(msg, 0);
    WT_STREQ(text, "{\"name\":\"n\",\"id\":1,\"note\":\"x\",\"big\":\"0\",\"blob\":\"\","
                   "\"flag\":false,\"sub\":{},\"nums\":[1,2]}");
    free(text);
    free_msg(msg);

    to_msg_bad(&jt2__req__descriptor, "{\"name\": \"n\"}", "{", "missing required field \"id\"");
    to_msg_bad(&jt2__req__descriptor, "{\"id\": 1, \"name\": null}", "{",
               "missing required field \"name\"");
}

static void test_to_message_errors(void)
{
    const ProtobufCMessageDescriptor *d = &jt__all__descriptor;
    to_msg_bad(d, "[1]", "[", "expected an object (jt.All), got an array");
    to_msg_bad(d, "{\"nope\": 1}", "1", "unknown field \"nope\" in jt.All");
    to_msg_bad(d, "{\"FInt32\": 1}", "1", "unknown field");
    to_msg_bad(d, "{\"f_int32\": 1, \"fInt32\": 2}", "2}", "given twice");
    to_msg_bad(d, "{\"f_int32\": \"abc\"}", "\"abc\"", "f_int32: expected an integer (int32)");
    to_msg_bad(d, "{\"f_int32\": 1.5}", "1.5", "f_int32: 1.5 is not an integer");
    to_msg_bad(d, "{\"f_int32\": 2147483648}", "2147483648", "out of range for int32");
    to_msg_bad(d, "{\"f_int32\": -2147483649}", "-2147483649", "out of range for int32");
    to_msg_bad(d, "{\"f_uint32\": -1}", "-1", "out of range for uint32");
    to_msg_bad(d, "{\"f_uint32\": 4294967296}", "4294967296", "out of range for uint32");
    to_msg_bad(d, "{\"f_int64\": \"9223372036854775808\"}", "\"9", "out of range for int64");
    to_msg_bad(d, "{\"f_uint64\": \"18446744073709551616\"}", "\"1", "out of range for uint64");
    to_msg_bad(d, "{\"f_int64\": \" 5\"}", "\" 5\"", "expected an integer");
    to_msg_bad(d, "{\"f_int64\": true}", "true", "expected an integer");
    to_msg_bad(d, "{\"f_float\": 1e39}", "1e39", "out of range for float");
    to_msg_bad(d, "{\"f_double\": \"1e999\"}", "\"1e999\"", "out of range for double");
    to_msg_bad(d, "{\"f_double\": \"nan\"}", "\"nan\"", "is not a double");
    to_msg_bad(d, "{\"f_double\": [1]}", "[1]", "expected a number (double), got an array");
    to_msg_bad(d, "{\"f_bool\": 1}", "1", "expected true or false, got a number");
    to_msg_bad(d, "{\"f_bool\": \"true\"}", "\"true\"", "expected true or false");
    to_msg_bad(d, "{\"f_string\": 5}", "5", "expected a string, got a number");
    to_msg_bad(d, "{\"f_string\": \"a\\u0000b\"}", "\"a", "NUL");
    to_msg_bad(d, "{\"f_bytes\": \"!!!!\"}", "\"!!!!\"", "not valid base64");
    to_msg_bad(d, "{\"f_bytes\": \"A\"}", "\"A\"", "not valid base64");
    to_msg_bad(d, "{\"f_bytes\": \"AA=\"}", "\"AA=\"", "not valid base64");
    to_msg_bad(d, "{\"f_enum\": \"PURPLE\"}", "\"PURPLE\"",
               "\"PURPLE\" is not a value of enum jt.Color");
    to_msg_bad(d, "{\"f_enum\": 1.5}", "1.5", "not an integer");
    to_msg_bad(d, "{\"f_enum\": {}}", "{}", "expected an enum name or number");
    to_msg_bad(d, "{\"f_inner\": 5}", "5", "f_inner: expected an object (jt.Inner), got a number");
    to_msg_bad(d, "{\"r_int32\": 5}", "5", "r_int32: expected an array, got a number");
    to_msg_bad(d, "{\"r_int32\": [1, null]}", "null", "r_int32[1]: null in a repeated field");
    to_msg_bad(d, "{\"r_string\": [\"a\", 2]}", "2]", "r_string[1]: expected a string");
    to_msg_bad(d, "{\"f_inner\": {\"child\": {\"child\": {\"id\": \"x\"}}}}", "\"x\"",
               "f_inner.child.child.id: expected an integer");
    to_msg_bad(d, "{\"r_inner\": [{}, {\"name\": \"a\", \"id\": true}]}", "true",
               "r_inner[1].id: expected an integer");
    to_msg_bad(d, "{\"r_inner\": [{\"child\": {\"zz\": 1}}]}", "1}",
               "unknown field \"zz\" in jt.Inner");
    to_msg_bad(d, "{\"o_string\": \"a\", \"o_int32\": 1}", "1}",
               "\"o_int32\" is in the same oneof as \"o_string\"");
    to_msg_bad(d, "{\"o_inner\": {\"id\": 1}, \"o_string\": \"a\"}", "\"a\"", "same oneof");
    /* Errors after much was allocated still free it all (checked inside). */
    to_msg_bad(d,
               "{\"f_string\": \"s\", \"f_bytes\": \"AAAA\", \"r_inner\": [{\"name\": \"a\"}],"
               " \"r_string\": [\"x\", \"y\"], \"f_inner\": {\"name\": \"q\", \"child\": {}},"
               " \"o_string\": \"o\", \"r_bytes\": [\"AA\"], \"zz\": 0}",
               "0}", "unknown field \"zz\"");
    /* Syntax errors come through parse_message with their offsets. */
    to_msg_bad(d, "{\"f_int32\": }", "}", "expected a value");
}

int main(void)
{
    test_valid_documents();
    test_integers();
    test_invalid_documents();
    test_depth_limit();
    test_writer();
    test_locale();
    test_to_message_all_types();
    test_proto2_presence();
    test_to_message_errors();
    WT_NOTE("json: ok");
    return 0;
}
