/*
 * dispatcher.c - one epoll set, polled by the fiber workers themselves.
 *
 * There is no event-loop thread. The dispatcher installs its poll function
 * as the fiber runtime's idle poller: a worker that runs out of fibers calls
 * it without blocking, and one idle worker at a time blocks in epoll_wait.
 * A readable socket therefore wakes a worker directly, and the input fiber
 * the event starts lands on that worker's own run queue: the thread that saw
 * the event runs the code that reads the socket, with no handoff between
 * threads (a handoff costs tens of microseconds on the machines we target).
 * An eventfd in the same set lets the runtime wake the blocked worker when
 * other work arrives.
 *
 * weft_fd_wait() registers the fd one-shot, with a versioned waiter slot as
 * the event data, so an event that arrives after the wait gave up finds a
 * stale version and is dropped instead of touching a dead waiter.
 */
#include "net/dispatcher_internal.h"
#include "net/fd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "fiber/butex.h"
#include "fiber/clock.h"
#include "fiber/error.h"
#include "fiber/fiber.h"
#include "fiber/log.h"
#include "fiber/pool.h"

#define WAKE_DATA (~0ull)
#define MAX_EVENTS 128

static struct {
    pthread_mutex_t lock;
    int started;
    int epfd;
    int wakefd;
    pthread_t thread;   /* WEFT_DISPATCHER=thread only */
    int64_t polls;
    int64_t events;
} disp = {.lock = PTHREAD_MUTEX_INITIALIZER, .epfd = -1, .wakefd = -1};

/* ---- weft_fd_wait waiters ---- */

typedef struct {
    uint32_t version; /* bumped when a wait ends */
    uint32_t slot;
    int32_t ready;    /* butex: 1 once the event came */
} fd_waiter_t;

static void fd_waiter_init(void *obj, uint32_t slot)
{
    fd_waiter_t *w = obj;
    w->slot = slot;
    w->version = 1;
}

static weft_pool_t waiter_pool = WEFT_POOL_INITIALIZER("fd_waiter", fd_waiter_t, fd_waiter_init);

static void fd_wait_event(uint64_t data)
{
    fd_waiter_t *w = weft_pool_at(&waiter_pool, (uint32_t)data);
    uint32_t version = (uint32_t)(data >> 32) & 0x7fffffffu;
    if (!w || __atomic_load_n(&w->version, __ATOMIC_ACQUIRE) != version)
        return;
    /* The version check and the store race with the end of the wait; the
     * waiter bumps the version before recycling, and a late store into a
     * recycled waiter is reset by the next wait before it sleeps. */
    __atomic_store_n(&w->ready, 1, __ATOMIC_RELEASE);
    weft_butex_wake_all(&w->ready);
}

static int fd_wait_thread(int fd, uint32_t events, int64_t deadline_ns)
{
    struct pollfd p = {.fd = fd, .events = (short)events};
    for (;;) {
        int ms = -1;
        if (deadline_ns >= 0) {
            int64_t left = deadline_ns - weft_clock_ns();
            if (left <= 0)
                return -ETIMEDOUT;
            ms = (int)((left + WEFT_NS_PER_MS - 1) / WEFT_NS_PER_MS);
        }
        int n = poll(&p, 1, ms);
        if (n > 0)
            return 0;
        if (n == 0)
            return -ETIMEDOUT;
        if (errno != EINTR)
            return -errno;
    }
}

int weft_fd_wait(int fd, uint32_t events, int64_t deadline_ns)
{
    if (fd < 0)
        return -EBADF;
    if (!weft_fiber_in_fiber())
        return fd_wait_thread(fd, events, deadline_ns);
    int rc = weft__dispatcher_ensure();
    if (rc != 0)
        return rc;
    uint32_t slot;
    fd_waiter_t *w = weft_pool_get(&waiter_pool, &slot);
    if (!w)
        return -ENOMEM;
    __atomic_store_n(&w->ready, 0, __ATOMIC_RELAXED);
    uint32_t version = __atomic_load_n(&w->version, __ATOMIC_RELAXED);
    uint64_t data = WEFT__EPOLL_FD_WAIT_TAG | ((uint64_t)version << 32) | slot;
    struct epoll_event ev = {.events = events | EPOLLONESHOT, .data.u64 = data};
    if (epoll_ctl(disp.epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        rc = -errno;
        goto out;
    }
    while (!__atomic_load_n(&w->ready, __ATOMIC_ACQUIRE)) {
        rc = weft_butex_wait(&w->ready, 0, deadline_ns);
        if (rc == -ETIMEDOUT || rc == -EINTR)
            break;
        rc = 0;
    }
    if (__atomic_load_n(&w->ready, __ATOMIC_ACQUIRE))
        rc = 0;
    epoll_ctl(disp.epfd, EPOLL_CTL_DEL, fd, NULL);
out:
    __atomic_store_n(&w->version, (version + 1) & 0x7fffffffu ?: 1, __ATOMIC_RELEASE);
    weft_pool_put(&waiter_pool, slot);
    return rc;
}

int weft_fd_set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    int fdfl = fcntl(fd, F_GETFD);
    if (fdfl < 0 || fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0)
        return -errno;
    return 0;
}

/* ---- the poller ---- */

static int dispatcher_poll(void *arg, int timeout_ms)
{
    (void)arg;
    struct epoll_event evs[MAX_EVENTS];
    int n = epoll_wait(disp.epfd, evs, MAX_EVENTS, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    __atomic_fetch_add(&disp.polls, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&disp.events, n, __ATOMIC_RELAXED);
    for (int i = 0; i < n; i++) {
        uint64_t data = evs[i].data.u64;
        if (data == WAKE_DATA) {
            uint64_t v;
            ssize_t r = read(disp.wakefd, &v, sizeof(v));
            (void)r;
        } else if (data & WEFT__EPOLL_FD_WAIT_TAG) {
            fd_wait_event(data);
        } else {
            weft__socket_on_events(data, evs[i].events);
        }
    }
    return n;
}

static void dispatcher_wake(void *arg)
{
    (void)arg;
    uint64_t one = 1;
    ssize_t r = write(disp.wakefd, &one, sizeof(one));
    (void)r;
}

/*
 * The alternative, for measurement: WEFT_DISPATCHER=thread runs epoll on a
 * thread of its own, as classic event loops do, and every event becomes a
 * fiber that a worker must be handed (the cross-thread wakeup the default
 * avoids). bench/net_bench compares the two; docs/benchmarks.md has the
 * figures that made the workers' own polling the default.
 */
static bool dispatcher_thread_wanted(void)
{
    const char *e = getenv("WEFT_DISPATCHER");
    return e && !strcmp(e, "thread");
}

static void *dispatcher_thread(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "weft-dispatch");
    for (;;)
        dispatcher_poll(NULL, -1);
    return NULL;
}

int weft__dispatcher_ensure(void)
{
    if (__builtin_expect(__atomic_load_n(&disp.started, __ATOMIC_ACQUIRE), 1))
        return 0;
    /* Sockets are served by fibers: no point in one without workers. */
    int rc = weft_fiber_init();
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&disp.lock);
    if (disp.started)
        goto out;
    disp.epfd = epoll_create1(EPOLL_CLOEXEC);
    disp.wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (disp.epfd < 0 || disp.wakefd < 0) {
        rc = -errno;
        goto fail;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = WAKE_DATA};
    if (epoll_ctl(disp.epfd, EPOLL_CTL_ADD, disp.wakefd, &ev) != 0) {
        rc = -errno;
        goto fail;
    }
    if (dispatcher_thread_wanted()) {
        rc = -pthread_create(&disp.thread, NULL, dispatcher_thread, NULL);
    } else {
        weft_fiber_poller_t poller = {.poll = dispatcher_poll, .wake = dispatcher_wake};
        rc = weft_fiber_set_poller(&poller);
    }
    if (rc != 0)
        goto fail;
    weft__socket_install_batch_hook();
    __atomic_store_n(&disp.started, 1, __ATOMIC_RELEASE);
    goto out;
fail:
    WEFT_LOG_ERROR("cannot start the event dispatcher: %s", weft_strerror(rc));
    if (disp.epfd >= 0)
        close(disp.epfd);
    if (disp.wakefd >= 0)
        close(disp.wakefd);
    disp.epfd = disp.wakefd = -1;
out:
    pthread_mutex_unlock(&disp.lock);
    return rc;
}

int weft__dispatcher_add(int fd, uint64_t data, uint32_t events)
{
    int rc = weft__dispatcher_ensure();
    if (rc != 0)
        return rc;
    struct epoll_event ev = {.events = events | EPOLLET, .data.u64 = data};
    return epoll_ctl(disp.epfd, EPOLL_CTL_ADD, fd, &ev) == 0 ? 0 : -errno;
}

int weft__dispatcher_del(int fd)
{
    return epoll_ctl(disp.epfd, EPOLL_CTL_DEL, fd, NULL) == 0 ? 0 : -errno;
}

void weft__dispatcher_stats(weft__dispatcher_stats_t *out)
{
    out->polls = __atomic_load_n(&disp.polls, __ATOMIC_RELAXED);
    out->events = __atomic_load_n(&disp.events, __ATOMIC_RELAXED);
}
