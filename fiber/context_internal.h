/*
 * context_internal.h - the machine-dependent part of a fiber switch.
 *
 * weft__ctx_switch() saves the callee-saved state on the current stack,
 * stores the stack pointer in *save_sp and resumes the context whose stack
 * pointer is load_sp. weft__ctx_make() lays out a fresh context on a stack so
 * that the first switch to it calls entry(arg). One assembly file per
 * architecture provides the two symbols.
 */
#ifndef WEFT_FIBER_CONTEXT_INTERNAL_H
#define WEFT_FIBER_CONTEXT_INTERNAL_H

#include <stdint.h>

void weft__ctx_switch(void **save_sp, void *load_sp);
void weft__ctx_trampoline(void);

#if defined(__x86_64__)
/* Frame popped by weft__ctx_switch: r12 r13 r14 r15 rbx rbp ret. The return
 * address lands on the trampoline with rsp 16-byte aligned, as a call
 * expects. */
static inline void *weft__ctx_make(void *stack_top, void (*entry)(void *), void *arg)
{
    uintptr_t top = ((uintptr_t)stack_top & ~(uintptr_t)15) - 16;
    uint64_t *sp = (uint64_t *)top - 7;
    sp[0] = (uint64_t)(uintptr_t)arg;      /* r12 */
    sp[1] = (uint64_t)(uintptr_t)entry;    /* r13 */
    sp[2] = sp[3] = sp[4] = sp[5] = 0;     /* r14 r15 rbx rbp */
    sp[6] = (uint64_t)(uintptr_t)weft__ctx_trampoline;
    ((uint64_t *)top)[0] = 0;              /* no caller beyond the trampoline */
    return sp;
}
#elif defined(__aarch64__)
/* Frame loaded by weft__ctx_switch: x19..x28, x29, x30, d8..d15 (20
 * words). x30 is the trampoline; sp ends at `top`, 16-byte aligned. */
static inline void *weft__ctx_make(void *stack_top, void (*entry)(void *), void *arg)
{
    uintptr_t top = (uintptr_t)stack_top & ~(uintptr_t)15;
    uint64_t *sp = (uint64_t *)top - 20;
    for (int i = 0; i < 20; i++)
        sp[i] = 0;
    sp[0] = (uint64_t)(uintptr_t)arg;      /* x19 */
    sp[1] = (uint64_t)(uintptr_t)entry;    /* x20 */
    sp[11] = (uint64_t)(uintptr_t)weft__ctx_trampoline; /* x30; x29 = 0 ends the frame chain */
    return sp;
}
#else
#error "weft: no fiber context switch for this architecture yet (add context_<arch>.S)"
#endif

#endif
