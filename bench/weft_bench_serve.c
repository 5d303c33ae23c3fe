/*
 * weft_bench_serve.c - `weft-bench --serve ADDR`: a builtin
 * example.EchoService (the service of brpc's echo example and of
 * examples/echo), so that one binary is enough to try weft.
 *
 * The reply is the request's message and the request's attachment, both
 * by reference (the request lives until the reply is sent). The first line
 * of stdout is the bound address and nothing else ("127.0.0.1:41234"), so
 * a script can start the server on port 0 and read where it went; the rest
 * goes to stderr: a line a second with the requests served, unless
 * --quiet. SIGINT or SIGTERM stops accepting, waits for the requests in
 * flight, and exits 0.
 */
#include "bench/weft_bench.h"

#include "fiber/clock.h"
#include "fiber/error.h"
#include "fiber/fiber.h"
#include "rpc/server.h"

#include "echo_service.h"

static int start(weft_server_t **server, const char *address)
{
    int rc = weft_server_new(server, NULL);
    if (rc != 0)
        return rc;
    rc = echo_service_register(*server);
    if (rc == 0)
        rc = weft_server_start(*server, address);
    if (rc != 0) {
        weft_server_free(*server);
        *server = NULL;
    }
    return rc;
}

/* Once a second until a signal: requests served in that second. */
static void serve_until_signal(const wb_options_t *o, weft_server_t *server)
{
    int64_t tick = weft_clock_ns() + WEFT_NS_PER_SEC;
    weft_server_stats_t last = {0}, now;
    while (!wb_wait_signal(tick)) {
        tick += WEFT_NS_PER_SEC;
        weft_server_stats(server, &now);
        if (!o->quiet && now.requests != last.requests)
            fprintf(stderr, "%s: %lld requests/s, %lld connections, %lld errors\n", WB_NAME,
                    (long long)(now.requests - last.requests), (long long)now.connections,
                    (long long)(now.errors - last.errors));
        last = now;
    }
}

int wb_serve(const wb_options_t *o)
{
    if (o->workers > 0)
        weft_fiber_set_workers(o->workers);
    weft_server_t *server;
    int rc = start(&server, o->serve);
    if (rc != 0) {
        wb_say("cannot serve on %s: %s", o->serve, weft_strerror(rc));
        weft_fiber_shutdown();
        return WB_EXIT_FAILED;
    }
    char ep[WEFT_ENDPOINT_STRLEN];
    weft_endpoint_format(weft_server_endpoint(server), ep, sizeof(ep));
    printf("%s\n", ep);
    fflush(stdout);
    if (!o->quiet)
        wb_say("serving example.EchoService on %s; SIGINT or SIGTERM stops", ep);
    serve_until_signal(o, server);
    weft_server_stop(server);
    weft_server_join(server);
    weft_server_free(server);
    weft_fiber_shutdown();
    return WB_EXIT_OK;
}
