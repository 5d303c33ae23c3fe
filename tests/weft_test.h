/*
 * weft_test.h - assertions for tests, safe from any thread or fiber.
 *
 * A failed check formats "file:line: expression (values)" into a stack
 * buffer, writes it with one write(2) and aborts: no stdio lock, no malloc,
 * so it works in a fiber, a worker, a timer callback or a signal-heavy test
 * alike, and the abort gives a core and a non-zero exit that meson reports.
 */
#ifndef WEFT_TEST_H
#define WEFT_TEST_H

#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((noreturn, format(printf, 3, 4))) static inline void
wt_fail(const char *file, int line, const char *fmt, ...)
{
    char buf[1024];
    int n = snprintf(buf, sizeof(buf), "%s:%d: FAILED: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (size_t)(m < 0 ? 0 : m);
    if (len > sizeof(buf) - 2)
        len = sizeof(buf) - 2;
    buf[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, buf, len);
    (void)w;
    abort();
}

#define WT_ASSERT(cond)                                                       \
    do {                                                                      \
        if (__builtin_expect(!(cond), 0))                                     \
            wt_fail(__FILE__, __LINE__, "%s", #cond);                         \
    } while (0)

#define WT_ASSERT_MSG(cond, ...)                                              \
    do {                                                                      \
        if (__builtin_expect(!(cond), 0))                                     \
            wt_fail(__FILE__, __LINE__, __VA_ARGS__);                         \
    } while (0)

/* Integer comparisons that print both sides. */
#define WT_CMP_(a, op, b)                                                     \
    do {                                                                      \
        long long wt_a_ = (long long)(a), wt_b_ = (long long)(b);             \
        if (__builtin_expect(!(wt_a_ op wt_b_), 0))                           \
            wt_fail(__FILE__, __LINE__, "%s %s %s (%lld vs %lld)", #a, #op,   \
                    #b, wt_a_, wt_b_);                                        \
    } while (0)

#define WT_EQ(a, b) WT_CMP_(a, ==, b)
#define WT_NE(a, b) WT_CMP_(a, !=, b)
#define WT_LT(a, b) WT_CMP_(a, <, b)
#define WT_LE(a, b) WT_CMP_(a, <=, b)
#define WT_GT(a, b) WT_CMP_(a, >, b)
#define WT_GE(a, b) WT_CMP_(a, >=, b)

#define WT_STREQ(a, b)                                                        \
    do {                                                                      \
        const char *wt_a_ = (a), *wt_b_ = (b);                                \
        if (!wt_a_ || !wt_b_ || strcmp(wt_a_, wt_b_) != 0)                    \
            wt_fail(__FILE__, __LINE__, "%s == %s (\"%s\" vs \"%s\")", #a,    \
                    #b, wt_a_ ? wt_a_ : "(null)", wt_b_ ? wt_b_ : "(null)");  \
    } while (0)

/* Iteration counts scale with WEFT_TEST_SCALE (percent, default 100), which
 * sanitizer builds lower so the same tests finish in bounded time. */
static inline long wt_scaled(long n)
{
    static long scale = -1;
    if (scale < 0) {
        const char *s = getenv("WEFT_TEST_SCALE");
        long v = s ? strtol(s, NULL, 10) : 100;
        scale = v > 0 ? v : 100;
    }
    long r = n * scale / 100;
    return r > 0 ? r : 1;
}

/* A test prints what it measured on stdout, one "name: value" per line. */
#define WT_NOTE(...)                                                          \
    do {                                                                      \
        printf(__VA_ARGS__);                                                  \
        printf("\n");                                                         \
        fflush(stdout);                                                       \
    } while (0)

#endif
