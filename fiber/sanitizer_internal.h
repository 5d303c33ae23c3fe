/*
 * sanitizer_internal.h - what the sanitizers need to hear about fibers.
 *
 * ASan and TSan both assume one stack per thread. A fiber switch moves a
 * thread to another stack, so each switch is announced: ASan learns the new
 * stack bounds (or it reports false stack overflows and misses real ones),
 * TSan learns which logical thread now runs (or it merges the histories of
 * unrelated fibers). Outside sanitizer builds everything here is empty.
 */
#ifndef WEFT_FIBER_SANITIZER_INTERNAL_H
#define WEFT_FIBER_SANITIZER_INTERNAL_H

#include <stddef.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WEFT_ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define WEFT_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(WEFT_ASAN)
#define WEFT_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__) && !defined(WEFT_TSAN)
#define WEFT_TSAN 1
#endif

#ifdef WEFT_ASAN
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old,
                                     size_t *size_old);
void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
#endif

#ifdef WEFT_TSAN
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
void __tsan_set_fiber_name(void *fiber, const char *name);
#endif

/* Sanitizers enlarge stack frames several times over. */
#if defined(WEFT_ASAN) || defined(WEFT_TSAN)
#define WEFT_STACK_SCALE 4
#else
#define WEFT_STACK_SCALE 1
#endif

#endif
