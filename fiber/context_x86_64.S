/*
 * context_x86_64.S - fiber context switch for x86-64 (System V ABI).
 *
 * A context is just a saved stack pointer. Switching pushes the callee-saved
 * registers (rbp, rbx, r12-r15) on the current stack, stores the stack
 * pointer, loads the other one and pops the same frame. The caller-saved
 * registers are, by the ABI, already dead across the call, so this is the
 * whole state. No signal mask is touched: that is what makes it ~20x cheaper
 * than swapcontext().
 *
 * The FPU control words (MXCSR, x87 CW) are not switched: saving them cost
 * 8 ns per switch here, about a quarter of a yield, and fibers of a worker
 * share the thread's rounding mode as threads of a process share it by
 * convention. A fiber that changes it must restore it before it blocks.
 *
 * A fresh context (see weft__ctx_make in context_internal.h) is a fake frame
 * whose return address is weft__ctx_trampoline, with the entry function in
 * r13 and its argument in r12.
 */
    .text

/* void weft__ctx_switch(void **save_sp, void *load_sp) */
    .globl  weft__ctx_switch
    .hidden weft__ctx_switch
    .type   weft__ctx_switch, @function
    .p2align 4
weft__ctx_switch:
    .cfi_startproc
    pushq   %rbp
    pushq   %rbx
    pushq   %r15
    pushq   %r14
    pushq   %r13
    pushq   %r12
    movq    %rsp, (%rdi)
    movq    %rsi, %rsp
    popq    %r12
    popq    %r13
    popq    %r14
    popq    %r15
    popq    %rbx
    popq    %rbp
    ret
    .cfi_endproc
    .size   weft__ctx_switch, .-weft__ctx_switch

/* First code a fresh context runs: entry(arg). The entry never returns; the
 * ud2 makes a broken one fail loudly. rip is marked undefined so debuggers
 * and unwinders stop here instead of walking off the stack. */
    .globl  weft__ctx_trampoline
    .hidden weft__ctx_trampoline
    .type   weft__ctx_trampoline, @function
    .p2align 4
weft__ctx_trampoline:
    .cfi_startproc
    .cfi_undefined rip
    movq    %r12, %rdi
    callq   *%r13
    ud2
    .cfi_endproc
    .size   weft__ctx_trampoline, .-weft__ctx_trampoline

    .section .note.GNU-stack,"",@progbits
