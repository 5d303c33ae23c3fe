/*
 * weft_bench.c - weft-bench, the benchmark tool of weft (in the spirit of
 * brpc's rpc_press, with wrk2's open loop).
 *
 *   weft-bench --server 127.0.0.1:8000 --method example.EchoService.Echo \
 *              --input '{"message":"hi"}' [--concurrency 8] [--rate 20000] [--json]
 *   weft-bench --serve 127.0.0.1:0
 *
 * It calls one method of any server and reports QPS and latency
 * percentiles; --serve starts a builtin example.EchoService, so that one
 * binary is enough to try weft. This file is the entry: it reads the
 * command line and hands over to the run (weft_bench_load.c) or the server
 * (weft_bench_serve.c); weft_bench.h says where everything else lives.
 *
 * Signals: SIGINT and SIGTERM are blocked first thing, so that every
 * thread the runtime starts inherits the mask, and the main thread takes
 * them with sigtimedwait() between its once-a-second reports. No handler
 * runs, so nothing has to be async-signal-safe: the first signal ends the
 * run (with its summary) or the server. Then the main thread unblocks
 * them, so that a second one, if the end takes too long, kills as usual.
 */
#include "bench/weft_bench.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <time.h>

#include "fiber/clock.h"

void wb_say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", WB_NAME);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static sigset_t stop_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    return set;
}

bool wb_wait_signal(int64_t deadline_ns)
{
    sigset_t set = stop_signals();
    for (;;) {
        int64_t left = deadline_ns - weft_clock_ns();
        if (left <= 0)
            return false;
        struct timespec ts = {.tv_sec = left / WEFT_NS_PER_SEC, .tv_nsec = left % WEFT_NS_PER_SEC};
        if (sigtimedwait(&set, NULL, &ts) > 0) {
            pthread_sigmask(SIG_UNBLOCK, &set, NULL);
            return true;
        }
        if (errno != EINTR && errno != EAGAIN)
            return false;
    }
}

int main(int argc, char **argv)
{
    sigset_t set = stop_signals();
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    wb_options_t o;
    bool done;
    int rc = wb_parse_args(argc, argv, &o, &done);
    if (rc != WB_EXIT_OK || done)
        return rc;
    if (o.list_methods) {
        wb_methods_list(stdout);
        return WB_EXIT_OK;
    }
    if (o.serve)
        return wb_serve(&o);
    wb_method_t m;
    rc = wb_method_resolve(o.method, &m);
    if (rc != WB_EXIT_OK)
        return rc;
    wb_request_t req;
    rc = wb_request_build(&o, &m, &req);
    if (rc == WB_EXIT_OK)
        rc = wb_run(&o, &m, &req);
    wb_request_free(&req);
    return rc;
}
