/*
 * acceptor.c - see acceptor.h. The listening fd is a weft socket whose
 * on_readable hook accepts until EAGAIN, so accepting inherits the socket's
 * one-reader-at-a-time input fiber and its versioned lifetime.
 */
#include "net/acceptor.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fiber/butex.h"
#include "fiber/clock.h"
#include "fiber/error.h"
#include "fiber/log.h"
#include "fiber/timer.h"
#include "net/dispatcher_internal.h"
#include "net/socket.h"

#define EMFILE_PAUSE_NS (100 * WEFT_NS_PER_MS)

struct weft_acceptor {
    weft_acceptor_options_t opts;
    weft_endpoint_t local;
    weft_socket_id_t id;
    int32_t recycled;           /* butex: 1 once the listening socket is gone */
    int32_t paused;             /* a resume timer is pending */
    weft_timer_id_t resume_timer; /* the last one armed, if any */
    dev_t unix_dev;             /* the socket file we bound, to remove only ours */
    ino_t unix_ino;
};

static void resume_accepting(void *arg)
{
    weft_acceptor_t *a = arg;
    weft_socket_id_t id = a->id;
    __atomic_store_n(&a->paused, 0, __ATOMIC_RELEASE);
    /* As if the fd had become readable again. */
    weft__socket_on_events(id, EPOLLIN);
}

static void accept_all(weft_socket_t *s)
{
    weft_acceptor_t *a = weft_socket_user(s);
    for (;;) {
        weft_endpoint_t remote;
        remote.len = sizeof(remote.addr);
        int fd = accept4(weft_socket_fd(s), (struct sockaddr *)&remote.addr, &remote.len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            a->opts.on_accept(fd, &remote, a->opts.arg);
            continue;
        }
        switch (errno) {
        case EINTR:
        case ECONNABORTED:
        case EPROTO:
            continue;
        case EAGAIN:
            return;
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM: {
            /* The pending connection keeps the fd readable: retrying now
             * would spin. Come back when some fds may have been freed. */
            WEFT_LOG_EVERY_SEC(WEFT_LOG_ERROR, "accept on %d paused: %m", weft_socket_fd(s));
            if (!__atomic_exchange_n(&a->paused, 1, __ATOMIC_ACQ_REL) &&
                weft_timer_run_after(&a->resume_timer, EMFILE_PAUSE_NS, resume_accepting, a) != 0)
                __atomic_store_n(&a->paused, 0, __ATOMIC_RELEASE);
            return;
        }
        default:
            if (!weft_socket_failed(s))
                WEFT_LOG_ERROR("accept on %d failed: %m", weft_socket_fd(s));
            return;
        }
    }
}

static void listener_recycled(weft_socket_t *s)
{
    weft_acceptor_t *a = weft_socket_user(s);
    const struct sockaddr_un *un = (const void *)&a->local.addr;
    struct stat sb;
    /* Remove the socket file only if it is still the one we bound. */
    if (un->sun_family == AF_UNIX && stat(un->sun_path, &sb) == 0 && sb.st_dev == a->unix_dev &&
        sb.st_ino == a->unix_ino)
        unlink(un->sun_path);
    __atomic_store_n(&a->recycled, 1, __ATOMIC_RELEASE);
    weft_butex_wake_all(&a->recycled);
}

static const weft_socket_handler_t listener_handler = {
    .on_readable = accept_all,
    .on_recycle = listener_recycled,
};

/* A socket file that nobody listens on any more (left by a process that
 * died) would block bind; one somebody serves must stay: EADDRINUSE. */
static bool stale_unix_socket(const weft_endpoint_t *ep)
{
    const struct sockaddr_un *un = (const void *)&ep->addr;
    struct stat sb;
    if (stat(un->sun_path, &sb) != 0 || !S_ISSOCK(sb.st_mode))
        return false;
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (probe < 0)
        return false;
    bool stale = connect(probe, (const struct sockaddr *)&ep->addr, ep->len) != 0 &&
                 errno == ECONNREFUSED;
    close(probe);
    return stale;
}

static int listen_fd(const weft_endpoint_t *ep, int backlog)
{
    int fd = socket(ep->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ep->addr.ss_family == AF_UNIX && stale_unix_socket(ep))
        unlink(((const struct sockaddr_un *)(const void *)&ep->addr)->sun_path);
    if (bind(fd, (const struct sockaddr *)&ep->addr, ep->len) != 0 || listen(fd, backlog) != 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

int weft_acceptor_start(weft_acceptor_t **out, const char *address,
                        const weft_acceptor_options_t *opts)
{
    if (!out || !address || !opts || !opts->on_accept)
        return -EINVAL;
    weft_acceptor_t *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->opts = *opts;
    int rc = weft_endpoint_parse(&a->local, address);
    if (rc != 0)
        goto fail;
    int fd = listen_fd(&a->local, opts->backlog > 0 ? opts->backlog : 1024);
    if (fd < 0) {
        rc = fd;
        goto fail;
    }
    if (a->local.addr.ss_family != AF_UNIX) {
        weft_endpoint_from_local(&a->local, fd);
    } else {
        struct stat sb;
        if (stat(((const struct sockaddr_un *)(const void *)&a->local.addr)->sun_path, &sb) == 0) {
            a->unix_dev = sb.st_dev;
            a->unix_ino = sb.st_ino;
        }
    }
    weft_socket_options_t so = {.fd = fd, .handler = &listener_handler, .user = a};
    rc = weft_socket_create(&a->id, &so);
    if (rc != 0)
        goto fail;
    *out = a;
    return 0;
fail:
    free(a);
    return rc;
}

const weft_endpoint_t *weft_acceptor_endpoint(const weft_acceptor_t *a)
{
    return &a->local;
}

void weft_acceptor_stop(weft_acceptor_t *a)
{
    if (!a)
        return;
    weft_socket_set_failed(a->id, WEFT_ECLOSE);
    while (!__atomic_load_n(&a->recycled, __ATOMIC_ACQUIRE))
        weft_butex_wait(&a->recycled, 0, -1);
    /* No accept runs any more, so no new timer: cancel (or wait out) the
     * last one armed, which points at us, whether or not it has fired. */
    if (a->resume_timer)
        weft_timer_cancel(a->resume_timer);
    free(a);
}
