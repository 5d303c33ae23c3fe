/*
 * bench_test_util.h - running weft-bench as a child process from tests:
 * run it to the end capturing stdout, stderr and the exit status, or start
 * it in the background (the --serve server) and read its first line.
 *
 * A child gets SIGKILL when the test process dies, so a test that aborts
 * on a failed check never leaves a server behind. Also: a number out of a
 * parsed JSON object.
 */
#ifndef BENCH_TEST_UTIL_H
#define BENCH_TEST_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rpc/json.h"
#include "weft_test.h"

typedef struct bt_result {
    int status; /* exit status, or 128 + signal */
    char *out;  /* stdout, NUL-terminated */
    char *err;  /* stderr */
} bt_result_t;

static inline int64_t bt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Starts argv with stdout and stderr on pipes (fds returned). */
static inline pid_t bt_spawn(char *const argv[], int *out_fd, int *err_fd)
{
    int o[2], e[2];
    WT_EQ(pipe2(o, O_CLOEXEC), 0);
    WT_EQ(pipe2(e, O_CLOEXEC), 0);
    pid_t parent = getpid(), pid = fork();
    WT_ASSERT(pid >= 0);
    if (pid == 0) {
        /* Dies with the test, even one that aborts on a failed check. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        dup2(o[1], STDOUT_FILENO);
        dup2(e[1], STDERR_FILENO);
        execv(argv[0], argv);
        _exit(127);
    }
    close(o[1]);
    close(e[1]);
    *out_fd = o[0];
    *err_fd = e[0];
    return pid;
}

/* Appends what fd has to *buf; false at end of file. */
static inline bool bt_drain(int fd, char **buf, size_t *len)
{
    char tmp[4096];
    ssize_t n = read(fd, tmp, sizeof(tmp));
    if (n < 0 && errno == EINTR)
        return true;
    if (n <= 0)
        return false;
    *buf = realloc(*buf, *len + (size_t)n + 1);
    memcpy(*buf + *len, tmp, (size_t)n);
    *len += (size_t)n;
    (*buf)[*len] = '\0';
    return true;
}

static inline int bt_wait(pid_t pid)
{
    int st;
    WT_EQ(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Reads a spawned child's output to the end and reaps it; the test fails
 * if that takes more than timeout_ms. */
static inline bt_result_t bt_collect(pid_t pid, int out_fd, int err_fd, int timeout_ms)
{
    int fds[2] = {out_fd, err_fd};
    char *bufs[2] = {strdup(""), strdup("")};
    size_t lens[2] = {0, 0};
    bool open[2] = {true, true};
    int64_t deadline = bt_now_ms() + timeout_ms;
    while (open[0] || open[1]) {
        struct pollfd p[2] = {{fds[0], open[0] ? POLLIN : 0, 0}, {fds[1], open[1] ? POLLIN : 0, 0}};
        int64_t left = deadline - bt_now_ms();
        WT_ASSERT_MSG(left > 0, "child %d did not finish in %d ms", (int)pid, timeout_ms);
        poll(p, 2, (int)left);
        for (int i = 0; i < 2; i++)
            if (open[i] && (p[i].revents & (POLLIN | POLLHUP)))
                open[i] = bt_drain(fds[i], &bufs[i], &lens[i]);
    }
    close(fds[0]);
    close(fds[1]);
    return (bt_result_t){.status = bt_wait(pid), .out = bufs[0], .err = bufs[1]};
}

/* Runs argv to its end. */
static inline bt_result_t bt_run(char *const argv[], int timeout_ms)
{
    int out, err;
    pid_t pid = bt_spawn(argv, &out, &err);
    return bt_collect(pid, out, err, timeout_ms);
}

/* Runs prog with the arguments of two NULL-terminated lists (b may be
 * NULL), for at most timeout_ms. */
static inline bt_result_t bt_run_args(const char *prog, const char *const *a, const char *const *b,
                                      int timeout_ms)
{
    char *argv[64] = {(char *)prog};
    int n = 1;
    for (const char *const *l = a; l; l = l == a ? b : NULL)
        for (int i = 0; l[i]; i++) {
            WT_ASSERT(n + 1 < 64);
            argv[n++] = (char *)l[i];
        }
    return bt_run(argv, timeout_ms);
}

/* The number under key in a JSON object; the test fails without one. */
static inline double bt_json_num(const weft_json_value_t *obj, const char *key)
{
    const weft_json_value_t *v = weft__json_get(obj, key);
    WT_ASSERT_MSG(v && v->type == WEFT_JSON_NUMBER, "key %s missing or not a number", key);
    return v->u.number.value;
}

static inline void bt_free(bt_result_t *r)
{
    free(r->out);
    free(r->err);
}

/* A background child and the first line it printed. */
typedef struct bt_server {
    pid_t pid;
    int out_fd, err_fd;
    char line[256];
} bt_server_t;

static inline void bt_start_server(bt_server_t *s, char *const argv[], int timeout_ms)
{
    s->pid = bt_spawn(argv, &s->out_fd, &s->err_fd);
    size_t n = 0;
    int64_t deadline = bt_now_ms() + timeout_ms;
    while (n == 0 || s->line[n - 1] != '\n') {
        struct pollfd p = {s->out_fd, POLLIN, 0};
        int64_t left = deadline - bt_now_ms();
        WT_ASSERT_MSG(left > 0, "%s printed no line in %d ms", argv[0], timeout_ms);
        if (poll(&p, 1, (int)left) <= 0)
            continue;
        ssize_t r = read(s->out_fd, s->line + n, 1);
        WT_ASSERT_MSG(r == 1, "%s exited before printing its first line", argv[0]);
        n++;
        WT_ASSERT(n < sizeof(s->line));
    }
    s->line[n - 1] = '\0';
}

/* Sends sig and reaps the child; returns its status. */
static inline int bt_stop_server(bt_server_t *s, int sig)
{
    kill(s->pid, sig);
    int status = bt_wait(s->pid);
    close(s->out_fd);
    close(s->err_fd);
    return status;
}

#endif
