/*
 * weft_bench.h - what the parts of weft-bench share.
 *
 * weft_bench.c       main: arguments, then a run or --serve
 * weft_bench_args.c  the command line, checked strictly (exit 2 on errors)
 * weft_bench_request.c  methods the tool has descriptors for; request bodies
 * weft_bench_load.c  channels, load fibers, the live line, the run
 * weft_bench_stats.c per-fiber recorders, their merge, the summary
 * weft_bench_serve.c the builtin echo server (--serve)
 */
#ifndef WEFT_BENCH_H
#define WEFT_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <protobuf-c/protobuf-c.h>

#include "fiber/histogram.h"
#include "net/iobuf.h"
#include "rpc/channel.h"

#define WB_NAME "weft-bench"

/* Exit statuses. */
enum { WB_EXIT_OK = 0, WB_EXIT_FAILED = 1, WB_EXIT_USAGE = 2 };

/* ---- settings ---- */

typedef struct wb_options {
    const char *server;       /* --server */
    const char *method;       /* --method, "package.Service.Method" */
    const char *serve;        /* --serve ADDR, or NULL */
    const char *protocol;     /* --protocol */
    const char *input;        /* --input JSON or @FILE */
    const char *request_file; /* --request-file */
    long payload_size;        /* --payload-size, -1 if not given */
    long field;               /* --field */
    long attachment_size;     /* --attachment-size */
    int concurrency;          /* --concurrency */
    int connections;          /* --connections */
    weft_connection_type_t connection_type;
    double duration_s, warmup_s;
    long timeout_ms;
    double rate; /* --rate, 0: closed loop */
    int max_retries;
    int workers; /* --workers, 0: the runtime's default */
    bool json, quiet, print_response, list_methods;
} wb_options_t;

/* Parses argv into *o. Returns WB_EXIT_OK to go on, WB_EXIT_USAGE after
 * printing why to stderr; --help prints the usage and sets *done. */
int wb_parse_args(int argc, char **argv, wb_options_t *o, bool *done);

const char *wb_connection_type_name(weft_connection_type_t t);

/* Prints "weft-bench: <message>" and the short usage on stderr; returns
 * WB_EXIT_USAGE. */
int wb_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prints "weft-bench: <message>" on stderr. */
void wb_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- methods and requests (weft_bench_request.c) ---- */

typedef struct wb_method {
    char service[256];                     /* "example.EchoService" */
    char name[128];                        /* "Echo" */
    const ProtobufCMethodDescriptor *desc; /* NULL: not compiled in */
} wb_method_t;

/* Splits a full method name and looks it up among the compiled-in
 * descriptors. WB_EXIT_OK, or WB_EXIT_USAGE after printing why. */
int wb_method_resolve(const char *full, wb_method_t *m);

/* Prints the methods the tool has descriptors for, one a line. */
void wb_methods_list(FILE *out);

/* The serialized request and the attachment every call sends. */
typedef struct wb_request {
    uint8_t *body;
    size_t body_len;
    uint8_t *attachment;
    size_t attachment_len;
} wb_request_t;

/* Builds the request from the options. WB_EXIT_OK, or WB_EXIT_USAGE after
 * printing why (bad JSON, unreadable file, --input without a descriptor). */
int wb_request_build(const wb_options_t *o, const wb_method_t *m, wb_request_t *r);
void wb_request_free(wb_request_t *r);

/* Appends a response as JSON (a descriptor is known) or as its size and
 * first bytes in hex. */
void wb_response_describe(const wb_method_t *m, const weft_iobuf_t *response, size_t attachment_len,
                          char *out, size_t size, bool *is_json);

/* Writes the protobuf wire bytes of a message holding only field `field`
 * with `len` bytes (tag, varint length, bytes): a request for any method
 * whose field `field` is string or bytes. Returns the size; out NULL just
 * measures. */
size_t wb_payload_encode(uint8_t *out, long field, size_t len);

/* ---- recording (weft_bench_stats.c) ---- */

#define WB_ERROR_SLOTS 16

typedef struct wb_error_count {
    int code;
    int64_t count;
} wb_error_count_t;

/*
 * What one load fiber records. Only that fiber writes it, with relaxed
 * atomic stores (histogram.h); the reporter reads it meanwhile with relaxed
 * loads. Cache-line aligned so that two fibers' recorders never share a
 * line.
 */
typedef struct wb_recorder {
    weft_histogram_t latency; /* ns, calls that succeeded */
    weft_histogram_t lag;     /* ns a call was sent after it was due (--rate) */
    int64_t errors;           /* calls that failed */
    int64_t late;             /* calls sent more than WB_LATE_NS after due */
    /* Read only once the fiber has ended: */
    wb_error_count_t by_code[WB_ERROR_SLOTS];
    int64_t other_codes; /* errors whose code found no free slot */
} __attribute__((aligned(64))) wb_recorder_t;

#define WB_LATE_NS (1000 * 1000LL)

void wb_recorder_init(wb_recorder_t *r);
void wb_recorder_destroy(wb_recorder_t *r);
void wb_record_ok(wb_recorder_t *r, int64_t latency_ns);
void wb_record_error(wb_recorder_t *r, int code);
void wb_record_lag(wb_recorder_t *r, int64_t lag_ns);

/* The recorders of all fibers added up. */
typedef struct wb_totals {
    weft_histogram_t latency, lag;
    int64_t errors, late;
    wb_error_count_t by_code[WB_ERROR_SLOTS * 2];
    int n_codes;
    int64_t other_codes;
} wb_totals_t;

void wb_totals_init(wb_totals_t *t);
void wb_totals_destroy(wb_totals_t *t);

/* Adds n recorders to t. Read-only on the recorders, so it may run while
 * their fibers record (the live line); with final, also the error codes,
 * which are only read once the fibers have ended. 0 or -ENOMEM. */
int wb_totals_add(wb_totals_t *t, const wb_recorder_t *recs, size_t n, bool final);

/* t = a - b, where b is an earlier snapshot of the same recorders: what
 * was recorded in between. 0 or -EINVAL/-ENOMEM. */
int wb_totals_diff(wb_totals_t *t, const wb_totals_t *a, const wb_totals_t *b);

/* "45.3" under 100 us, "1234" above: microseconds from nanoseconds. */
const char *wb_format_us(int64_t ns, char buf[32]);

/* Everything the final report shows. */
typedef struct wb_report {
    const wb_options_t *opts;
    size_t request_bytes, attachment_bytes;
    double elapsed_s; /* measured window */
    bool interrupted; /* ended early by a signal */
    const wb_totals_t *totals;
    const char *response; /* --print-response with --json: the JSON */
} wb_report_t;

void wb_report_text(FILE *out, const wb_report_t *r);
/* One JSON object and a newline. 0 or -ENOMEM. */
int wb_report_json(FILE *out, const wb_report_t *r);

/* ---- running ---- */

/* weft_bench_load.c: the benchmark. Returns an exit status. */
int wb_run(const wb_options_t *o, const wb_method_t *m, const wb_request_t *req);

/* weft_bench_serve.c: the builtin server. Returns an exit status. */
int wb_serve(const wb_options_t *o);

/* Waits for SIGINT or SIGTERM (blocked in every thread since main began)
 * until deadline, a weft_clock_ns() time: true if one came, and then a
 * second one kills the process. */
bool wb_wait_signal(int64_t deadline_ns);

#endif
