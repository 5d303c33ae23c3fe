/*
 * dispatcher_internal.h - the process-wide epoll set, polled by the fiber
 * workers through the runtime's idle hook (see fiber.h). Not installed.
 */
#ifndef WEFT_NET_DISPATCHER_INTERNAL_H
#define WEFT_NET_DISPATCHER_INTERNAL_H

#include <stdint.h>

/* epoll data with this bit set belongs to weft_fd_wait(); socket ids never
 * have it (their versions stay below 2^31). */
#define WEFT__EPOLL_FD_WAIT_TAG (1ull << 63)

/* Starts the dispatcher on first use. 0 or -errno. */
int weft__dispatcher_ensure(void);

/* Watches fd, edge-triggered, for `events`, reporting them with `data`. */
int weft__dispatcher_add(int fd, uint64_t data, uint32_t events);
int weft__dispatcher_del(int fd);

/* Lets workers send the writes that sockets deferred (socket.c). */
void weft__socket_install_batch_hook(void);

/* Called by the dispatcher for events on a socket (data = its id). */
void weft__socket_on_events(uint64_t id, uint32_t events);

typedef struct {
    int64_t polls;
    int64_t events;
} weft__dispatcher_stats_t;

void weft__dispatcher_stats(weft__dispatcher_stats_t *out);

#endif
