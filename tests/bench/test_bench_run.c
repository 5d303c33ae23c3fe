/*
 * test_bench_run.c - short real runs of weft-bench (argv[1] is its path)
 * against its own builtin server: `weft-bench --serve 127.0.0.1:0` as a
 * child, its address read from its first line of stdout; then one-second
 * runs with --input, --payload-size (with an attachment), --rate, pooled
 * connections and --print-response, each --json output parsed back with
 * rpc/json.c and checked (qps > 0, no errors, p50 <= p99 <= max, the
 * settings echoed); the text summary; a run ended early by SIGINT; an
 * open-loop run across a 0.5 s server stall, which its percentiles must
 * show; and the server stopped by SIGTERM, exiting 0.
 */
#include "bench_test_util.h"

static const char *bench;
static char server[256];

#define COMMON                                                                                     \
    "--method", "example.EchoService.Echo", "--duration", "1", "--warmup", "0.2", "--quiet"

/* Starts weft-bench --server ... with args, in the background. */
static pid_t start_client(const char *const *args, int *out, int *err)
{
    char *argv[40] = {(char *)bench, "--server", server};
    int n = 3;
    for (int i = 0; args[i] && n + 1 < 40; i++)
        argv[n++] = (char *)args[i];
    return bt_spawn(argv, out, err);
}

static bt_result_t run(const char *const *args)
{
    int out, err;
    pid_t pid = start_client(args, &out, &err);
    return bt_collect(pid, out, err, 60000);
}

/* Runs with --json and checks what every run must show; returns the
 * parsed output for more checks (free it with weft__json_free). */
static weft_json_doc_t *run_json(const char *const *args)
{
    bt_result_t r = run(args);
    WT_ASSERT_MSG(r.status == 0, "status %d, stderr: %s", r.status, r.err);
    weft_json_doc_t *doc;
    weft_json_error_t err;
    WT_ASSERT_MSG(weft__json_parse(r.out, strlen(r.out), 0, &doc, &err) == 0,
                  "not one JSON object (%s): %s", err.message, r.out);
    const weft_json_value_t *j = weft__json_root(doc);
    WT_ASSERT(j->type == WEFT_JSON_OBJECT);
    WT_ASSERT_MSG(bt_json_num(j, "qps") > 0 && bt_json_num(j, "calls") > 0 &&
                      bt_json_num(j, "errors") == 0,
                  "%s", r.out);
    WT_ASSERT_MSG(bt_json_num(j, "calls") == bt_json_num(j, "ok"), "%s", r.out);
    WT_ASSERT_MSG(bt_json_num(j, "p50_us") > 0 &&
                      bt_json_num(j, "p50_us") <= bt_json_num(j, "p90_us") &&
                      bt_json_num(j, "p90_us") <= bt_json_num(j, "p99_us") &&
                      bt_json_num(j, "p99_us") <= bt_json_num(j, "p999_us") &&
                      bt_json_num(j, "p999_us") <= bt_json_num(j, "max_us"),
                  "%s", r.out);
    WT_ASSERT(bt_json_num(j, "duration_s") > 0.9 && bt_json_num(j, "duration_s") < 1.1);
    WT_ASSERT(weft__json_get(j, "errors_by_code")->type == WEFT_JSON_OBJECT);
    WT_ASSERT(weft__json_get(j, "errors_by_code")->u.object.n == 0);
    WT_NOTE("%s %s: qps %.0f p50 %.1f us p99 %.1f us", args[0], args[1], bt_json_num(j, "qps"),
            bt_json_num(j, "p50_us"), bt_json_num(j, "p99_us"));
    bt_free(&r);
    return doc;
}

static void test_input(void)
{
    weft_json_doc_t *doc =
        run_json((const char *const[]){"--input", "{\"message\":\"hi\"}", COMMON, "--json", NULL});
    const weft_json_value_t *j = weft__json_root(doc);
    WT_EQ(bt_json_num(j, "payload_size"), 4); /* tag, length, "hi" */
    WT_EQ(bt_json_num(j, "concurrency"), 8);
    WT_STREQ(weft__json_get(j, "method")->u.string.str, "example.EchoService.Echo");
    WT_STREQ(weft__json_get(j, "server")->u.string.str, server);
    weft__json_free(doc);
}

static void test_payload_size(void)
{
    weft_json_doc_t *doc =
        run_json((const char *const[]){"--payload-size", "1000", "--attachment-size", "100",
                                       "--concurrency", "4", COMMON, "--json", NULL});
    WT_EQ(bt_json_num(weft__json_root(doc), "payload_size"), 1003);
    WT_EQ(bt_json_num(weft__json_root(doc), "attachment_size"), 100);
    weft__json_free(doc);
}

static void test_rate(void)
{
    weft_json_doc_t *doc = run_json((const char *const[]){
        "--payload-size", "10", "--rate", "400", "--concurrency", "4", COMMON, "--json", NULL});
    const weft_json_value_t *j = weft__json_root(doc);
    /* Open loop: as many calls as were due, whatever the machine. */
    WT_ASSERT_MSG(bt_json_num(j, "calls") >= 380 && bt_json_num(j, "calls") <= 420, "calls %g",
                  bt_json_num(j, "calls"));
    WT_ASSERT(bt_json_num(j, "rate") == 400 && bt_json_num(j, "lag_p50_us") >= 0);
    WT_ASSERT(weft__json_get(j, "late") != NULL);
    weft__json_free(doc);
}

static void test_pooled(void)
{
    weft_json_doc_t *doc = run_json(
        (const char *const[]){"--payload-size", "10", "--connection-type", "pooled",
                              "--connections", "2", "--concurrency", "4", COMMON, "--json", NULL});
    WT_STREQ(weft__json_get(weft__json_root(doc), "connection_type")->u.string.str, "pooled");
    WT_EQ(bt_json_num(weft__json_root(doc), "connections"), 2);
    weft__json_free(doc);
}

static void test_print_response(void)
{
    weft_json_doc_t *doc = run_json((const char *const[]){
        "--input", "{\"message\":\"echo me\"}", "--print-response", COMMON, "--json", NULL});
    const weft_json_value_t *resp = weft__json_get(weft__json_root(doc), "response");
    WT_ASSERT(resp && resp->type == WEFT_JSON_OBJECT);
    WT_STREQ(weft__json_get(resp, "message")->u.string.str, "echo me");
    weft__json_free(doc);

    bt_result_t r = run((const char *const[]){"--input", "{\"message\":\"again\"}",
                                              "--print-response", COMMON, NULL});
    WT_EQ(r.status, 0);
    WT_ASSERT_MSG(strncmp(r.out, "{\"message\":\"again\"}\n", 20) == 0, "%s", r.out);
    bt_free(&r);
}

static void test_text_summary(void)
{
    bt_result_t r = run((const char *const[]){"--payload-size", "16", COMMON, NULL});
    WT_ASSERT_MSG(r.status == 0, "%s", r.err);
    WT_ASSERT_MSG(strstr(r.out, "  qps ") && strstr(r.out, "  latency ") &&
                      strstr(r.out, " ok, 0 errors)") && strstr(r.out, "closed loop"),
                  "%s", r.out);
    bt_free(&r);
}

static weft_json_doc_t *parse_output(const bt_result_t *r)
{
    weft_json_doc_t *doc;
    weft_json_error_t err;
    WT_ASSERT_MSG(r->status == 0, "status %d: %s", r->status, r->err);
    WT_ASSERT_MSG(weft__json_parse(r->out, strlen(r->out), 0, &doc, &err) == 0, "%s: %s",
                  err.message, r->out);
    return doc;
}

/* SIGINT ends a run early, with a summary. */
static void test_interrupt(void)
{
    int out, err;
    pid_t pid = start_client((const char *const[]){"--method", "example.EchoService.Echo",
                                                   "--payload-size", "8", "--duration", "60",
                                                   "--warmup", "0", "--json", "--quiet", NULL},
                             &out, &err);
    usleep(1500 * 1000);
    kill(pid, SIGINT);
    bt_result_t r = bt_collect(pid, out, err, 5000);
    weft_json_doc_t *doc = parse_output(&r);
    const weft_json_value_t *j = weft__json_root(doc);
    WT_ASSERT(weft__json_get(j, "interrupted")->u.boolean);
    WT_ASSERT(bt_json_num(j, "duration_s") > 1 && bt_json_num(j, "duration_s") < 10);
    WT_ASSERT(bt_json_num(j, "qps") > 0);
    weft__json_free(doc);
    bt_free(&r);
}

/* The point of the open loop: the server stops answering for 0.5 s (it is
 * SIGSTOPped) during a 2 s run at 1000 calls/s. A quarter of the calls
 * were due during the stall, so the 90th percentile of latency measured
 * from the due times must show it (about 300 ms), where a closed loop
 * would show it only in its maximum. */
static void test_stall(pid_t server_pid)
{
    int out, err;
    pid_t pid =
        start_client((const char *const[]){"--method", "example.EchoService.Echo", "--payload-size",
                                           "8", "--rate", "1000", "--duration", "2", "--warmup",
                                           "0", "--timeout", "5000", "--json", "--quiet", NULL},
                     &out, &err);
    usleep(700 * 1000);
    kill(server_pid, SIGSTOP);
    usleep(500 * 1000);
    kill(server_pid, SIGCONT);
    bt_result_t r = bt_collect(pid, out, err, 20000);
    weft_json_doc_t *doc = parse_output(&r);
    const weft_json_value_t *j = weft__json_root(doc);
    WT_NOTE("stall of 500 ms at 1000/s: p50 %.1f us, p90 %.1f us, p99 %.1f us, late %g",
            bt_json_num(j, "p50_us"), bt_json_num(j, "p90_us"), bt_json_num(j, "p99_us"),
            bt_json_num(j, "late"));
    WT_ASSERT_MSG(bt_json_num(j, "p90_us") > 100000, "%s", r.out);
    WT_ASSERT(bt_json_num(j, "errors") == 0 && bt_json_num(j, "late") > 100);
    weft__json_free(doc);
    bt_free(&r);
}

int main(int argc, char **argv)
{
    WT_ASSERT_MSG(argc == 2, "usage: test_bench_run PATH-OF-WEFT-BENCH");
    bench = argv[1];
    bt_server_t srv;
    char *serve[] = {(char *)bench, "--serve", "127.0.0.1:0", "--quiet", NULL};
    bt_start_server(&srv, serve, 15000);
    WT_ASSERT_MSG(strncmp(srv.line, "127.0.0.1:", 10) == 0 && atoi(srv.line + 10) > 0,
                  "first line: %s", srv.line);
    snprintf(server, sizeof(server), "%s", srv.line);

    test_input();
    test_payload_size();
    test_rate();
    test_pooled();
    test_print_response();
    test_text_summary();
    test_interrupt();
    test_stall(srv.pid);

    WT_EQ(bt_stop_server(&srv, SIGTERM), 0);
    WT_NOTE("bench run: ok");
    return 0;
}
