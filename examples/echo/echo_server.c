/*
 * echo_server.c - serves example.EchoService (echo_service.c) until
 * SIGINT or SIGTERM, then stops and drains the server cleanly.
 *
 *   echo_server --port 8000
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft/weft.h>

#include "echo_service.h"

static int32_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    __atomic_store_n(&stop_requested, 1, __ATOMIC_RELEASE);
}

static void usage(void)
{
    fprintf(stderr, "usage: echo_server [--port N] [--address HOST:PORT]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"port", required_argument, NULL, 'p'},
        {"address", required_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    char address[128] = "0.0.0.0:8000";
    int c;
    while ((c = getopt_long(argc, argv, "p:a:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'p':
            snprintf(address, sizeof(address), "0.0.0.0:%s", optarg);
            break;
        case 'a':
            snprintf(address, sizeof(address), "%s", optarg);
            break;
        default:
            usage();
        }
    }
    if (optind != argc)
        usage();

    weft_server_t *server;
    int rc = weft_server_new(&server, NULL);
    if (rc == 0)
        rc = echo_service_register(server);
    if (rc == 0)
        rc = weft_server_start(server, address);
    if (rc != 0) {
        fprintf(stderr, "echo_server: cannot serve on %s: %s\n", address, weft_strerror(rc));
        return 1;
    }
    char ep[WEFT_ENDPOINT_STRLEN];
    printf("echo_server: serving on %s\n",
           weft_endpoint_format(weft_server_endpoint(server), ep, sizeof(ep)));
    fflush(stdout);

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    while (!__atomic_load_n(&stop_requested, __ATOMIC_ACQUIRE))
        weft_fiber_usleep(100 * 1000);

    weft_server_stop(server);
    weft_server_join(server);
    weft_server_free(server);
    weft_fiber_shutdown();
    return 0;
}
