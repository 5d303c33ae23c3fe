/*
 * test_bench_cli.c - weft-bench's command line, run as a child process
 * (argv[1] is its path): each bad option exits 2 with a one-line reason
 * naming the option, then the usage; --help and --list-methods exit 0; a
 * server that cannot be reached exits 1 with the reason.
 */
#include "bench_test_util.h"

static const char *bench;

#define M "--method", "example.EchoService.Echo"
#define S "--server", "127.0.0.1:1"

static bt_result_t run(const char *const *args)
{
    return bt_run_args(bench, args, NULL, 30000);
}

static void expect(int status, const char *in_stderr, const char *const *args)
{
    bt_result_t r = run(args);
    WT_ASSERT_MSG(r.status == status && strstr(r.err, in_stderr),
                  "%s ...: status %d (expected %d), stderr: %s", args[0] ? args[0] : "", r.status,
                  status, r.err);
    if (status == 2) {
        /* One line of reason, then the usage. */
        const char *nl = strchr(r.err, '\n');
        WT_ASSERT_MSG(nl && strncmp(r.err, "weft-bench: ", 12) == 0 &&
                          strncmp(nl + 1, "usage: ", 7) == 0,
                      "stderr: %s", r.err);
        WT_STREQ(r.out, "");
    }
    bt_free(&r);
}

#define EXPECT(status, text, ...) expect(status, text, (const char *const[]){__VA_ARGS__, NULL})

static void test_bad_arguments(void)
{
    EXPECT(2, "--server: missing", "--quiet");
    EXPECT(2, "--method: missing", S);
    EXPECT(2, "unknown option '--bogus'", S, M, "--bogus");
    EXPECT(2, "unknown option '-x'", S, M, "-x");
    EXPECT(2, "unexpected argument 'extra'", S, M, "extra");
    EXPECT(2, "--concurrency: needs a value", S, M, "--concurrency");
    EXPECT(2, "--concurrency: expected an integer in 1..10000, got '0'", S, M, "--concurrency",
           "0");
    EXPECT(2, "--concurrency: expected an integer", S, M, "--concurrency", "abc");
    EXPECT(2, "--concurrency: expected an integer", S, M, "--concurrency", "8x");
    EXPECT(2, "--connections: expected an integer", S, M, "--connections", "-1");
    EXPECT(2, "--connections: 4 is more than --concurrency 2", S, M, "--connections", "4",
           "--concurrency", "2");
    EXPECT(2, "--connection-type: expected single, pooled or short, got 'udp'", S, M,
           "--connection-type", "udp");
    EXPECT(2, "--duration: expected a number", S, M, "--duration", "0");
    EXPECT(2, "--duration: expected a number", S, M, "--duration", "-3");
    EXPECT(2, "--duration: expected a number", S, M, "--duration", "nan");
    EXPECT(2, "--warmup: expected a number", S, M, "--warmup", "-1");
    EXPECT(2, "--timeout: expected an integer", S, M, "--timeout", "0");
    EXPECT(2, "--rate: expected a number", S, M, "--rate", "0");
    EXPECT(2, "--rate: expected a number", S, M, "--rate", "fast");
    EXPECT(2, "--payload-size: expected an integer", S, M, "--payload-size", "99999999999");
    EXPECT(2, "--attachment-size: expected an integer", S, M, "--attachment-size", "-5");
    EXPECT(2, "--field: expected an integer", S, M, "--payload-size", "1", "--field", "0");
    EXPECT(2, "--field: only used with --payload-size", S, M, "--field", "2");
    EXPECT(2, "--max-retries: expected an integer", S, M, "--max-retries", "1000");
    EXPECT(2, "--workers: expected an integer", S, M, "--workers", "0");
    EXPECT(2, "--protocol: 'http2' is not supported", S, M, "--protocol", "http2");
    EXPECT(2, "--input and --payload-size both give the request", S, M, "--input", "{}",
           "--payload-size", "3");
    EXPECT(2, "--payload-size and --request-file both give the request", S, M, "--payload-size",
           "3", "--request-file", "/dev/null");
    EXPECT(2, "--serve runs a server", "--serve", "127.0.0.1:0", S);
    EXPECT(2, "--method: expected a full method name", S, "--method", "Echo");
    EXPECT(2, "--method: expected a full method name", S, "--method", "example.EchoService.");
    EXPECT(2, "--input: at byte 1: unexpected end", S, M, "--input", "{");
    EXPECT(2, "--input: at byte 9: unknown field \"nope\" in example.EchoRequest", S, M, "--input",
           "{\"nope\": 1}");
    EXPECT(2, "--input: at byte 0: missing required field \"message\"", S, M, "--input", "{}");
    EXPECT(2, "--input: cannot read /nonexistent/x.json", S, M, "--input", "@/nonexistent/x.json");
    EXPECT(2, "--input: a.B.C is not compiled into weft-bench", S, "--method", "a.B.C", "--input",
           "{}");
    EXPECT(2, "--request-file: cannot read /nonexistent", S, M, "--request-file", "/nonexistent");
    EXPECT(2, "--server: cannot use 'not an address' as an address", "--server", "not an address",
           M);
}

static void test_good_exits(void)
{
    bt_result_t r = run((const char *const[]){"--help", NULL});
    WT_EQ(r.status, 0);
    WT_ASSERT(strstr(r.out, "usage: weft-bench") && strstr(r.out, "--rate QPS"));
    bt_free(&r);
    r = run((const char *const[]){"--list-methods", NULL});
    WT_EQ(r.status, 0);
    WT_ASSERT(strstr(r.out, "example.EchoService.Echo(example.EchoRequest)"));
    bt_free(&r);
}

static void test_unreachable_server(void)
{
    EXPECT(1, "the first call of example.EchoService.Echo on 127.0.0.1:1 failed", S, M, "--input",
           "{\"message\": \"x\"}", "--timeout", "500", "--quiet");
}

int main(int argc, char **argv)
{
    WT_ASSERT_MSG(argc == 2, "usage: test_bench_cli PATH-OF-WEFT-BENCH");
    bench = argv[1];
    test_bad_arguments();
    test_good_exits();
    test_unreachable_server();
    WT_NOTE("bench cli: ok");
    return 0;
}
