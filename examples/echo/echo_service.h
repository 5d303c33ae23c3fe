/*
 * echo_service.h - example.EchoService, the service of Apache brpc's echo
 * example: served by echo_server and by `weft-bench --serve`.
 */
#ifndef WEFT_EXAMPLE_ECHO_SERVICE_H
#define WEFT_EXAMPLE_ECHO_SERVICE_H

#include <weft/weft.h>

/* Registers the echo service on a server. 0 or -errno. */
int echo_service_register(weft_server_t *server);

#endif
