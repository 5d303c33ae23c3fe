/*
 * socket.h - connections addressed by versioned ids.
 *
 * A socket wraps a connected, non-blocking fd. It is named by a
 * weft_socket_id_t (version << 32 | slot) that any thread may keep for ever:
 * weft_socket_address() turns an id into a referenced pointer, or fails once
 * the socket has failed, and it never hands out a socket that reused the slot.
 * The pointer stays valid until weft_socket_dereference(). When a socket
 * fails (EOF, an I/O error, bad bytes, or a deliberate set_failed), its
 * version moves on so every later address() fails; the last dereference then
 * closes the fd and recycles the object, exactly once.
 *
 * Reading is event driven: the layer above supplies a handler whose cut()
 * splits the bytes read into messages and whose process() handles each one
 * in a fiber of its own. Writing never blocks and takes no lock: writes to
 * one socket go out in the order weft_socket_write() accepted them.
 */
#ifndef WEFT_NET_SOCKET_H
#define WEFT_NET_SOCKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "endpoint.h"
#include "iobuf.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef uint64_t weft_socket_id_t; /* 0 is never a valid id */
typedef struct weft_socket weft_socket_t;

/* The head of every message a handler's cut() returns. The socket layer sets
 * `socket` (holding a reference for the duration of process()). */
typedef struct weft_socket_msg {
    weft_socket_t *socket;
} weft_socket_msg_t;

typedef struct weft_socket_handler {
    /* In the socket's input fiber, with all bytes read so far in `in`: cut
     * one complete message off the front and return it; or return NULL with
     * *error = 0 when more bytes are needed, or NULL with *error < 0 when the
     * bytes are bad (the socket fails with that error). */
    weft_socket_msg_t *(*cut)(weft_socket_t *s, weft_iobuf_t *in, int *error);
    /* Handles one message; owns it. Runs in a fiber of its own, except the
     * last message of a read, which runs in the input fiber after it has
     * stopped reading (so a new input fiber may already be reading). */
    void (*process)(weft_socket_msg_t *msg);
    /* Optional. Called once, right after the socket failed: in the fiber
     * that failed it (weft_socket_set_failed(), or the input fiber), except
     * when the failure was found while writing. Then it runs in a fiber of
     * its own, never inside weft_socket_write(), so a caller may write while
     * holding a lock that on_failed takes. */
    void (*on_failed)(weft_socket_t *s);
    /* Optional. The socket is being recycled: release what `user` holds. */
    void (*on_recycle)(weft_socket_t *s);
    /* Optional, replaces reading and cut/process: called in the input fiber
     * (one at a time) whenever the fd may be readable; it must consume
     * until EAGAIN. A listening socket accepts here. */
    void (*on_readable)(weft_socket_t *s);
} weft_socket_handler_t;

typedef struct weft_socket_options {
    int fd;                               /* connected; the socket owns it */
    const weft_socket_handler_t *handler; /* NULL: no input is read */
    void *user;                           /* for the handler */
    size_t max_unwritten;                 /* EOVERCROWDED past this; 0 = 64 MiB */
    bool client;                          /* we connected it (may be revived) */
} weft_socket_options_t;

/* Creates a socket owning opts->fd (made non-blocking, TCP_NODELAY for TCP)
 * and starts watching it. On failure the fd is closed. 0 or -errno. *id is
 * set (an atomic store) before the first event reaches the handler, so a
 * structure already visible to other threads may hold it; they read it
 * with an atomic load. */
int weft_socket_create(weft_socket_id_t *id, const weft_socket_options_t *opts);

/* A referenced pointer to the socket, or NULL if it failed or the id is
 * stale. Every non-NULL result needs one weft_socket_dereference(). */
weft_socket_t *weft_socket_address(weft_socket_id_t id);

/* One more reference to a socket the caller already holds. */
void weft_socket_ref(weft_socket_t *s);

/* Drops a reference. Dropping the last one of a failed socket recycles it
 * on the spot, running the handler's on_recycle: never call it (nor
 * weft_socket_address(), which may drop one) holding a lock on_recycle
 * takes. */
void weft_socket_dereference(weft_socket_t *s);

/* Whether the id names a socket that has not failed, without taking a
 * reference: a snapshot (it may fail the next instant), and safe to ask
 * under any lock. */
bool weft_socket_alive(weft_socket_id_t id);

/* Fails the socket with `error` (a positive errno or WEFT_E* code): later
 * addresses fail, writers and readers are woken, pending writes fail with
 * that error, and the peer sees the connection shut down. Returns 0, or
 * -ESRCH if it had already failed or the id is stale. */
int weft_socket_set_failed(weft_socket_id_t id, int error);

/* Brings a failed client socket back with a freshly connected fd: the same
 * id addresses it again. The caller must hold a reference (so it was not
 * recycled). 0, -EINVAL (not failed, or not a client socket) or -errno. */
int weft_socket_revive(weft_socket_t *s, int fd);

/* Per-write options. done(), when set, is called once the data was fully
 * handed to the kernel (error 0) or could not be (error > 0), in a fiber of
 * its own, never from inside weft_socket_write(). */
typedef struct weft_write_options {
    void (*done)(void *arg, int error);
    void *arg;
} weft_write_options_t;

/* Queues data (its content is moved out; *data ends empty) for writing.
 * Never blocks. Returns 0, -EOVERCROWDED when more than max_unwritten bytes
 * wait already, or the socket's error (negated) if it has failed. A write
 * that fails later reports through done(). */
int weft_socket_write(weft_socket_t *s, weft_iobuf_t *data, const weft_write_options_t *opts);

weft_socket_id_t weft_socket_id(const weft_socket_t *s);
int weft_socket_fd(const weft_socket_t *s);
void *weft_socket_user(const weft_socket_t *s);
const weft_endpoint_t *weft_socket_remote(const weft_socket_t *s);
bool weft_socket_failed(const weft_socket_t *s);
int weft_socket_error(const weft_socket_t *s);   /* 0 while healthy */
size_t weft_socket_unwritten(const weft_socket_t *s);

/* Opens a TCP or unix connection with a deadline (weft_clock_ns time, < 0
 * none) and creates a client socket on it. 0 or -errno (-ETIMEDOUT,
 * -ECONNREFUSED, ...). opts->fd is ignored. */
int weft_socket_connect(weft_socket_id_t *id, const weft_endpoint_t *remote, int64_t deadline_ns,
                        const weft_socket_options_t *opts);

/* A connected non-blocking fd (for weft_socket_revive and custom uses). */
int weft_connect_fd(const weft_endpoint_t *remote, int64_t deadline_ns);

/* Sockets alive, and their totals, for metrics. */
typedef struct weft_socket_stats {
    int64_t alive;
    int64_t created;
    int64_t recycled;
    int64_t bytes_read;
    int64_t bytes_written;
} weft_socket_stats_t;

void weft_socket_stats(weft_socket_stats_t *out);

#ifdef __cplusplus
}
#endif
#endif
