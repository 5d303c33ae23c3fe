/*
 * fd.h - waiting on file descriptors from fibers.
 *
 * For users who drive their own non-blocking fds: weft_fd_wait() parks the
 * calling fiber (not its worker) until the fd is ready, through the same
 * epoll set that serves weft sockets. From a plain pthread it falls back to
 * poll(2).
 */
#ifndef WEFT_NET_FD_H
#define WEFT_NET_FD_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Waits until fd has any of `events` (EPOLLIN, EPOLLOUT, ...) or an error,
 * or until deadline_ns (weft_clock_ns time; < 0 means none). Returns 0,
 * -ETIMEDOUT, -EINTR (fiber interrupted), -EEXIST if the fd is already
 * watched (a weft socket's fd, or a concurrent wait on it), or -errno.
 * Like poll(2), it may report readiness that is gone by the time the caller
 * acts: retry the I/O and wait again on EAGAIN. */
int weft_fd_wait(int fd, uint32_t events, int64_t deadline_ns);

/* Makes fd non-blocking and close-on-exec. 0 or -errno. */
int weft_fd_set_nonblock(int fd);

#ifdef __cplusplus
}
#endif
#endif
