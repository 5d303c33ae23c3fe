/*
 * log.c - see log.h. One write(2) per line; no locks, no stdio buffering.
 */
#include "fiber/log.h"
#include "fiber/clock.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int weft__log_level = WEFT_LOG_INFO;

static const char level_letter[] = "DIWE";

__attribute__((constructor)) static void log_init_from_env(void)
{
    const char *s = getenv("WEFT_LOG_LEVEL");
    if (!s || !*s)
        return;
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i < 5; i++) {
        if (!strcasecmp(s, names[i]) || (s[0] == '0' + i && !s[1])) {
            weft__log_level = i;
            return;
        }
    }
}

void weft_log_set_level(int level)
{
    if (level < WEFT_LOG_DEBUG)
        level = WEFT_LOG_DEBUG;
    if (level > WEFT_LOG_OFF)
        level = WEFT_LOG_OFF;
    __atomic_store_n(&weft__log_level, level, __ATOMIC_RELAXED);
}

int weft_log_get_level(void)
{
    return __atomic_load_n(&weft__log_level, __ATOMIC_RELAXED);
}

void weft_log_write(int level, const char *file, int line, const char *fmt, ...)
{
    char buf[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    if (level < 0 || level > WEFT_LOG_ERROR)
        level = WEFT_LOG_ERROR;

    int n = snprintf(buf, sizeof(buf), "%c%02d%02d %02d:%02d:%02d.%06ld %ld %s:%d] ",
                     level_letter[level], tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000,
                     (long)syscall(SYS_gettid), base, line);
    if (n < 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof(buf) - 2) {
        len = sizeof(buf) - 5;
        memcpy(buf + len, "...", 3);
        len += 3;
    }
    buf[len++] = '\n';
    /* A short or failed write to stderr cannot be reported anywhere better. */
    ssize_t w = write(STDERR_FILENO, buf, len);
    (void)w;
}

int weft__log_limit_pass(weft_log_limit_t *limit, int64_t period_ns)
{
    int64_t now = weft_clock_ns();
    int64_t next = __atomic_load_n(&limit->next_ns, __ATOMIC_RELAXED);
    if (now < next ||
        !__atomic_compare_exchange_n(&limit->next_ns, &next, now + period_ns, 0,
                                     __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        __atomic_fetch_add(&limit->dropped, 1, __ATOMIC_RELAXED);
        return -1;
    }
    return (int)__atomic_exchange_n(&limit->dropped, 0, __ATOMIC_RELAXED);
}
