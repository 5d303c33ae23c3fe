/*
 * acceptor.h - listening for connections.
 *
 * An acceptor listens on "host:port" (IPv4 or IPv6; port 0 picks a free
 * one) or "unix:/path" and hands each accepted, non-blocking fd to a
 * callback, which usually makes a weft socket of it. Accepting runs in a
 * fiber when the listening fd becomes readable; running out of fds (EMFILE)
 * pauses accepting for a moment instead of spinning on the pending
 * connection.
 */
#ifndef WEFT_NET_ACCEPTOR_H
#define WEFT_NET_ACCEPTOR_H

#include "endpoint.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_acceptor weft_acceptor_t;

/* Owns fd from here on. Runs in the acceptor's fiber: keep it short. */
typedef void weft_accept_fn(int fd, const weft_endpoint_t *remote, void *arg);

typedef struct weft_acceptor_options {
    weft_accept_fn *on_accept;
    void *arg;
    int backlog; /* 0: 1024 */
} weft_acceptor_options_t;

/* Binds, listens and starts accepting. 0 or -errno (-EADDRINUSE, ...). */
int weft_acceptor_start(weft_acceptor_t **out, const char *address,
                        const weft_acceptor_options_t *opts);

/* The address actually bound (with the port the kernel chose for port 0). */
const weft_endpoint_t *weft_acceptor_endpoint(const weft_acceptor_t *a);

/* Stops accepting and closes the listening fd; returns once no on_accept
 * call is running any more, then frees the acceptor. */
void weft_acceptor_stop(weft_acceptor_t *a);

#ifdef __cplusplus
}
#endif
#endif
