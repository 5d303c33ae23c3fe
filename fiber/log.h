/*
 * log.h - leveled logging to stderr.
 *
 * A log line is formatted into a stack buffer and written with one write(2),
 * so lines from many threads never interleave and logging is safe from any
 * thread or fiber (it takes no lock). Lines below the current level cost one
 * load and a branch. WEFT_LOG_EVERY_SEC() limits a noisy site (say, a peer
 * that keeps sending garbage) to one line per second and counts what it
 * dropped.
 *
 * The level starts at WEFT_LOG_INFO, or at the value of the environment
 * variable WEFT_LOG_LEVEL (debug, info, warn, error, off, or 0..4).
 */
#ifndef WEFT_FIBER_LOG_H
#define WEFT_FIBER_LOG_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum weft_log_level {
    WEFT_LOG_DEBUG = 0,
    WEFT_LOG_INFO = 1,
    WEFT_LOG_WARN = 2,
    WEFT_LOG_ERROR = 3,
    WEFT_LOG_OFF = 4,
};

extern int weft__log_level;

void weft_log_set_level(int level);
int weft_log_get_level(void);

void weft_log_write(int level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* State of one rate-limited log site. */
typedef struct {
    int64_t next_ns;    /* first time the site may log again */
    uint32_t dropped;   /* lines suppressed since the last one written */
} weft_log_limit_t;

/* Returns the number of lines dropped before this one (>= 0) when the site
 * may log now, or -1 when it must stay quiet. */
int weft__log_limit_pass(weft_log_limit_t *limit, int64_t period_ns);

#define WEFT_LOG(level, ...)                                                  \
    do {                                                                      \
        if ((level) >= weft__log_level)                                       \
            weft_log_write((level), __FILE__, __LINE__, __VA_ARGS__);         \
    } while (0)

#define WEFT_LOG_DEBUG(...) WEFT_LOG(WEFT_LOG_DEBUG, __VA_ARGS__)
#define WEFT_LOG_INFO(...) WEFT_LOG(WEFT_LOG_INFO, __VA_ARGS__)
#define WEFT_LOG_WARN(...) WEFT_LOG(WEFT_LOG_WARN, __VA_ARGS__)
#define WEFT_LOG_ERROR(...) WEFT_LOG(WEFT_LOG_ERROR, __VA_ARGS__)

/* At most one line per second from this call site. */
#define WEFT_LOG_EVERY_SEC(level, fmt, ...)                                   \
    do {                                                                      \
        static weft_log_limit_t weft__site_limit;                             \
        int weft__dropped;                                                    \
        if ((level) >= weft__log_level &&                                     \
            (weft__dropped = weft__log_limit_pass(&weft__site_limit,          \
                                                  1000000000LL)) >= 0)        \
            weft_log_write((level), __FILE__, __LINE__,                       \
                           fmt " [%d similar lines dropped]", ##__VA_ARGS__,  \
                           weft__dropped);                                    \
    } while (0)

#ifdef __cplusplus
}
#endif
#endif
