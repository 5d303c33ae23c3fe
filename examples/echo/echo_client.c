/*
 * echo_client.c - calls example.EchoService and checks every reply.
 *
 *   echo_client --server 127.0.0.1:8000 [--calls N] [--message TEXT]
 *
 * Exits 0 only when every call succeeded with the right reply.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft/weft.h>

#include "echo.weft.h"

static void usage(void)
{
    fprintf(stderr, "usage: echo_client --server HOST:PORT [--calls N] [--message TEXT]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"server", required_argument, NULL, 's'},
        {"calls", required_argument, NULL, 'n'},
        {"message", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *server = NULL, *text = "hello from weft";
    long calls = 3;
    int c;
    while ((c = getopt_long(argc, argv, "s:n:m:h", longopts, NULL)) != -1) {
        switch (c) {
        case 's':
            server = optarg;
            break;
        case 'n':
            calls = strtol(optarg, NULL, 10);
            break;
        case 'm':
            text = optarg;
            break;
        default:
            usage();
        }
    }
    if (!server || calls <= 0 || optind != argc)
        usage();

    weft_channel_t *ch;
    int rc = weft_channel_new(&ch, server, NULL);
    if (rc != 0) {
        fprintf(stderr, "echo_client: bad server %s: %s\n", server, weft_strerror(rc));
        return 2;
    }
    weft_controller_t *cntl = weft_controller_new();
    long ok = 0;
    for (long i = 0; i < calls; i++) {
        Example__EchoRequest req = EXAMPLE__ECHO_REQUEST__INIT;
        req.message = (char *)text;
        Example__EchoResponse *resp = NULL;
        weft_controller_reset(cntl);
        rc = example__echo_service__echo_call(ch, cntl, &req, &resp);
        if (rc != 0) {
            fprintf(stderr, "echo_client: call %ld failed: %s\n", i,
                    weft_controller_error_text(cntl));
        } else if (strcmp(resp->message, text) != 0) {
            fprintf(stderr, "echo_client: call %ld: wrong reply \"%s\"\n", i, resp->message);
        } else {
            printf("echo_client: reply \"%s\" in %lld us\n", resp->message,
                   (long long)weft_controller_latency_us(cntl));
            ok++;
        }
        if (resp)
            protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    weft_controller_free(cntl);
    weft_channel_free(ch);
    weft_fiber_shutdown();
    printf("echo_client: %ld of %ld calls succeeded\n", ok, calls);
    return ok == calls ? 0 : 1;
}
