/*
 * endpoint.h - socket addresses as users write them.
 *
 * "127.0.0.1:8000", "[::1]:8000", "localhost:8000", ":8000" or "*:8000"
 * (any address) and "unix:/path/to.sock" all name an endpoint. Parsing a
 * host name asks the resolver, which may block the calling thread; numeric
 * addresses never do.
 */
#ifndef WEFT_NET_ENDPOINT_H
#define WEFT_NET_ENDPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_endpoint {
    struct sockaddr_storage addr;
    socklen_t len;
} weft_endpoint_t;

/* Longest text weft_endpoint_format() writes, with the NUL. */
#define WEFT_ENDPOINT_STRLEN 128

/* Parses text into *ep. Returns 0, -EINVAL for bad syntax, or -EHOSTUNREACH
 * when a host name does not resolve. */
int weft_endpoint_parse(weft_endpoint_t *ep, const char *text);

/* Writes "1.2.3.4:80", "[::1]:80" or "unix:/path" into buf; returns buf. */
char *weft_endpoint_format(const weft_endpoint_t *ep, char *buf, size_t size);

/* The port, or -1 for unix sockets. */
int weft_endpoint_port(const weft_endpoint_t *ep);

bool weft_endpoint_equal(const weft_endpoint_t *a, const weft_endpoint_t *b);

/* Fills *ep from a connected or bound fd (the peer's or our own address). */
int weft_endpoint_from_peer(weft_endpoint_t *ep, int fd);
int weft_endpoint_from_local(weft_endpoint_t *ep, int fd);

#ifdef __cplusplus
}
#endif
#endif
