/*
 * weft_bench_args.c - weft-bench's command line.
 *
 * Long options only (getopt_long), each value checked for its type and
 * range, then the combination checked as a whole. Any mistake prints one
 * line naming the option and what was wrong, then the short usage, on
 * stderr, and the program exits 2: a benchmark that silently ran with a
 * setting other than the one asked for would report the wrong thing.
 */
#include "bench/weft_bench.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

enum {
    O_SERVER = 256,
    O_METHOD,
    O_SERVE,
    O_PROTOCOL,
    O_INPUT,
    O_REQUEST_FILE,
    O_PAYLOAD_SIZE,
    O_FIELD,
    O_ATTACHMENT_SIZE,
    O_CONCURRENCY,
    O_CONNECTIONS,
    O_CONNECTION_TYPE,
    O_DURATION,
    O_WARMUP,
    O_TIMEOUT,
    O_RATE,
    O_MAX_RETRIES,
    O_WORKERS,
    O_JSON,
    O_QUIET,
    O_PRINT_RESPONSE,
    O_LIST_METHODS,
    O_HELP = 'h',
};

static const struct option longopts[] = {
    {"server", required_argument, NULL, O_SERVER},
    {"method", required_argument, NULL, O_METHOD},
    {"serve", required_argument, NULL, O_SERVE},
    {"protocol", required_argument, NULL, O_PROTOCOL},
    {"input", required_argument, NULL, O_INPUT},
    {"request-file", required_argument, NULL, O_REQUEST_FILE},
    {"payload-size", required_argument, NULL, O_PAYLOAD_SIZE},
    {"field", required_argument, NULL, O_FIELD},
    {"attachment-size", required_argument, NULL, O_ATTACHMENT_SIZE},
    {"concurrency", required_argument, NULL, O_CONCURRENCY},
    {"connections", required_argument, NULL, O_CONNECTIONS},
    {"connection-type", required_argument, NULL, O_CONNECTION_TYPE},
    {"duration", required_argument, NULL, O_DURATION},
    {"warmup", required_argument, NULL, O_WARMUP},
    {"timeout", required_argument, NULL, O_TIMEOUT},
    {"rate", required_argument, NULL, O_RATE},
    {"max-retries", required_argument, NULL, O_MAX_RETRIES},
    {"workers", required_argument, NULL, O_WORKERS},
    {"json", no_argument, NULL, O_JSON},
    {"quiet", no_argument, NULL, O_QUIET},
    {"print-response", no_argument, NULL, O_PRINT_RESPONSE},
    {"list-methods", no_argument, NULL, O_LIST_METHODS},
    {"help", no_argument, NULL, O_HELP},
    {NULL, 0, NULL, 0},
};

#define MAX_BYTES (64L << 20) /* payload and attachment sizes */

static const char short_usage[] =
    "usage: " WB_NAME " --server ADDR --method SERVICE.METHOD [options]\n"
    "       " WB_NAME " --serve ADDR\n"
    "       (" WB_NAME " --help lists the options)\n";

static const char long_usage[] =
    "usage: " WB_NAME " --server ADDR --method SERVICE.METHOD [options]\n"
    "       " WB_NAME " --serve ADDR [--workers N] [--quiet]\n"
    "\n"
    "Calls one method of a server, either as fast as it answers with --concurrency\n"
    "calls in flight (closed loop), or at a fixed --rate (open loop: each latency is\n"
    "measured from the time the call was due, so a stalled server cannot hide), and\n"
    "reports QPS and latency percentiles. A live line goes to stderr every second,\n"
    "the summary to stdout.\n"
    "\n"
    "target:\n"
    "  --server ADDR          host:port, unix:/path or list://host:port,host:port\n"
    "  --method NAME          full method name, e.g. example.EchoService.Echo\n"
    "  --protocol NAME        baidu_std (default)\n"
    "request (at most one; without any, an empty message):\n"
    "  --input JSON|@FILE     the request as JSON; methods with compiled-in\n"
    "                         descriptors only (see --list-methods)\n"
    "  --payload-size N       a request whose field --field holds N bytes (any method)\n"
    "  --field N              field number for --payload-size (default 1)\n"
    "  --request-file FILE    the serialized request\n"
    "  --attachment-size N    N bytes of attachment with each call (default 0)\n"
    "load:\n"
    "  --concurrency C        calls in flight at most (default 8; with --rate 64)\n"
    "  --connections K        channels; the load fibers are spread over them (default 1)\n"
    "  --connection-type T    single (default), pooled or short\n"
    "  --rate QPS             open loop at QPS calls per second (default: closed loop)\n"
    "  --duration S           seconds measured (default 10)\n"
    "  --warmup S             seconds of calls before, not measured (default 1)\n"
    "  --timeout MS           deadline of each call (default 1000)\n"
    "  --max-retries N        retries of calls whose connection failed (default 0)\n"
    "  --workers N            fiber worker threads (default: one per CPU)\n"
    "output:\n"
    "  --json                 the summary as one JSON object\n"
    "  --quiet                no live line\n"
    "  --print-response       show the first response (as JSON when the method is known)\n"
    "  --list-methods         the methods with compiled-in descriptors\n"
    "  --help\n"
    "server:\n"
    "  --serve ADDR           serve example.EchoService on ADDR (port 0: any free port)\n"
    "                         until SIGINT or SIGTERM; stdout's first line is the address\n"
    "\n"
    "Exit status: 0 after a run (failed calls are in the summary), 1 if the run could\n"
    "not start (no connection, or the first call failed), 2 for bad arguments.\n";

int wb_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", WB_NAME);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n%s", short_usage);
    va_end(ap);
    return WB_EXIT_USAGE;
}

const char *wb_connection_type_name(weft_connection_type_t t)
{
    static const char *const names[] = {"single", "pooled", "short"};
    return (unsigned)t < 3 ? names[t] : "?";
}

static int long_arg(const char *name, const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < min || v > max)
        return wb_usage_error("--%s: expected an integer in %ld..%ld, got '%s'", name, min, max, s);
    *out = v;
    return WB_EXIT_OK;
}

static int int_arg(const char *name, const char *s, long min, long max, int *out)
{
    long v = 0;
    int rc = long_arg(name, s, min, max, &v);
    if (rc == WB_EXIT_OK)
        *out = (int)v;
    return rc;
}

static int double_arg(const char *name, const char *s, double min, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v) || v < min || v > max)
        return wb_usage_error("--%s: expected a number in %g..%g, got '%s'", name, min, max, s);
    *out = v;
    return WB_EXIT_OK;
}

static int connection_type_arg(const char *s, weft_connection_type_t *out)
{
    for (int t = WEFT_CONNECTION_SINGLE; t <= WEFT_CONNECTION_SHORT; t++) {
        if (strcmp(s, wb_connection_type_name((weft_connection_type_t)t)) == 0) {
            *out = (weft_connection_type_t)t;
            return WB_EXIT_OK;
        }
    }
    return wb_usage_error("--connection-type: expected single, pooled or short, got '%s'", s);
}

/* A protocol is supported if a channel can be made with it (channels do
 * not connect until the first call). */
static int protocol_arg(const char *s)
{
    weft_channel_options_t co = WEFT_CHANNEL_OPTIONS_INIT;
    co.protocol = s;
    weft_channel_t *ch;
    if (weft_channel_new(&ch, "127.0.0.1:1", &co) != 0)
        return wb_usage_error("--protocol: '%s' is not supported by this build of weft", s);
    weft_channel_free(ch);
    return WB_EXIT_OK;
}

/* Options that take a number. */
static int numeric_option(int id, const char *name, const char *v, wb_options_t *o)
{
    switch (id) {
    case O_PAYLOAD_SIZE:
        return long_arg(name, v, 0, MAX_BYTES, &o->payload_size);
    case O_FIELD:
        return long_arg(name, v, 1, (1L << 29) - 1, &o->field);
    case O_ATTACHMENT_SIZE:
        return long_arg(name, v, 0, MAX_BYTES, &o->attachment_size);
    case O_CONCURRENCY:
        return int_arg(name, v, 1, 10000, &o->concurrency);
    case O_CONNECTIONS:
        return int_arg(name, v, 1, 10000, &o->connections);
    case O_DURATION:
        return double_arg(name, v, 0.001, 1e6, &o->duration_s);
    case O_WARMUP:
        return double_arg(name, v, 0, 1e6, &o->warmup_s);
    case O_TIMEOUT:
        return long_arg(name, v, 1, 3600L * 1000, &o->timeout_ms);
    case O_RATE:
        return double_arg(name, v, 0.001, 1e8, &o->rate);
    case O_MAX_RETRIES:
        return int_arg(name, v, 0, 100, &o->max_retries);
    case O_WORKERS:
        return int_arg(name, v, 1, 1024, &o->workers);
    }
    return -1; /* not numeric */
}

/* Options given, where their absence means something. */
typedef struct given {
    bool field, concurrency;
} given_t;

static int one_option(int id, const char *name, const char *v, wb_options_t *o, given_t *given)
{
    int rc = numeric_option(id, name, v, o);
    if (rc >= 0) {
        given->field |= id == O_FIELD;
        given->concurrency |= id == O_CONCURRENCY;
        return rc;
    }
    switch (id) {
    case O_SERVER:
        o->server = v;
        break;
    case O_METHOD:
        o->method = v;
        break;
    case O_SERVE:
        o->serve = v;
        break;
    case O_PROTOCOL:
        o->protocol = v;
        return protocol_arg(v);
    case O_INPUT:
        o->input = v;
        break;
    case O_REQUEST_FILE:
        o->request_file = v;
        break;
    case O_CONNECTION_TYPE:
        return connection_type_arg(v, &o->connection_type);
    case O_JSON:
        o->json = true;
        break;
    case O_QUIET:
        o->quiet = true;
        break;
    case O_PRINT_RESPONSE:
        o->print_response = true;
        break;
    case O_LIST_METHODS:
        o->list_methods = true;
        break;
    }
    return WB_EXIT_OK;
}

static const char *option_name(int val)
{
    for (const struct option *p = longopts; p->name; p++)
        if (p->val == val)
            return p->name;
    return "?";
}

/* The request options, of which at most one may be given. */
static int check_body(const wb_options_t *o, const given_t *given)
{
    const char *bodies[3];
    int n = 0;
    if (o->input)
        bodies[n++] = "--input";
    if (o->payload_size >= 0)
        bodies[n++] = "--payload-size";
    if (o->request_file)
        bodies[n++] = "--request-file";
    if (n > 1)
        return wb_usage_error("%s and %s both give the request; use one", bodies[0], bodies[1]);
    if (given->field && o->payload_size < 0)
        return wb_usage_error("--field: only used with --payload-size");
    if (o->input && !o->input[0])
        return wb_usage_error("--input: empty");
    return WB_EXIT_OK;
}

static int check_combination(wb_options_t *o, const given_t *given)
{
    if (o->list_methods)
        return WB_EXIT_OK;
    if (o->serve)
        return o->server || o->method
                   ? wb_usage_error("--serve runs a server: it takes no --server or --method")
                   : WB_EXIT_OK;
    if (!o->server)
        return wb_usage_error("--server: missing (the address to call)");
    if (!o->method)
        return wb_usage_error("--method: missing (e.g. --method example.EchoService.Echo)");
    /* Open loop: room for calls to pile up at a slow server, as they
     * would from independent clients, before the schedule slips. */
    if (o->rate > 0 && !given->concurrency)
        o->concurrency = 64;
    if (o->connections > o->concurrency)
        return wb_usage_error("--connections: %d is more than --concurrency %d; the extra "
                              "connections would carry no calls",
                              o->connections, o->concurrency);
    return check_body(o, given);
}

static void set_defaults(wb_options_t *o)
{
    memset(o, 0, sizeof(*o));
    o->protocol = "baidu_std";
    o->payload_size = -1;
    o->field = 1;
    o->concurrency = 8;
    o->connections = 1;
    o->connection_type = WEFT_CONNECTION_SINGLE;
    o->duration_s = 10;
    o->warmup_s = 1;
    o->timeout_ms = 1000;
}

int wb_parse_args(int argc, char **argv, wb_options_t *o, bool *done)
{
    set_defaults(o);
    *done = false;
    given_t given = {0};
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        int rc = WB_EXIT_OK;
        if (c == O_HELP) {
            fputs(long_usage, stdout);
            *done = true;
            return WB_EXIT_OK;
        } else if (c == '?') {
            rc = wb_usage_error("unknown option '%s'", argv[optind - 1]);
        } else if (c == ':') {
            rc = wb_usage_error("--%s: needs a value", option_name(optopt));
        } else {
            rc = one_option(c, option_name(c), optarg, o, &given);
        }
        if (rc != WB_EXIT_OK)
            return rc;
    }
    if (optind < argc)
        return wb_usage_error("unexpected argument '%s'", argv[optind]);
    return check_combination(o, &given);
}
