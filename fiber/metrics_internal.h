/*
 * metrics_internal.h - hooks of metrics.c for tests. Not installed.
 */
#ifndef WEFT_FIBER_METRICS_INTERNAL_H
#define WEFT_FIBER_METRICS_INTERNAL_H

/* Runs one sampler tick now, on the calling thread, as if a second had
 * passed: every windowed metric closes its current second. Ticks never
 * overlap; this waits for one in progress. Lets tests check windows without
 * sleeping. */
void weft__metrics_tick(void);

/* With manual set, the once-a-second timer stops ticking, so that only
 * weft__metrics_tick() moves windows: tests get exact windows. */
void weft__metrics_set_manual(int manual);

#endif
