/*
 * context_aarch64.S - fiber context switch for AArch64 (AAPCS64).
 *
 * The same idea as context_x86_64.S: a context is a saved stack pointer,
 * and switching stores the callee-saved state in a frame on the current
 * stack, swaps stack pointers and loads the other frame. AAPCS64 makes
 * x19-x28, the frame pointer x29, the link register x30 and the low 64
 * bits of v8-v15 (d8-d15) callee-saved: 20 words, a 160-byte frame, so sp
 * stays 16-byte aligned as the architecture requires. The return goes
 * through x30, which the frame restored.
 *
 * FPCR (rounding mode) is not switched, for the reason given for MXCSR in
 * context_x86_64.S. Pointer authentication and BTI are not used: a build
 * with -mbranch-protection would need a `bti c` landing pad in the
 * trampoline and signed return addresses in fresh frames.
 *
 * A fresh context (weft__ctx_make in context_internal.h) is a frame whose
 * x30 is weft__ctx_trampoline, with the argument in x19 and the entry
 * function in x20.
 */
    .text

/* void weft__ctx_switch(void **save_sp, void *load_sp) */
    .globl  weft__ctx_switch
    .hidden weft__ctx_switch
    .type   weft__ctx_switch, %function
    .p2align 4
weft__ctx_switch:
    .cfi_startproc
    sub     sp, sp, #160
    stp     x19, x20, [sp, #0]
    stp     x21, x22, [sp, #16]
    stp     x23, x24, [sp, #32]
    stp     x25, x26, [sp, #48]
    stp     x27, x28, [sp, #64]
    stp     x29, x30, [sp, #80]
    stp     d8, d9, [sp, #96]
    stp     d10, d11, [sp, #112]
    stp     d12, d13, [sp, #128]
    stp     d14, d15, [sp, #144]
    mov     x9, sp
    str     x9, [x0]
    mov     sp, x1
    ldp     x19, x20, [sp, #0]
    ldp     x21, x22, [sp, #16]
    ldp     x23, x24, [sp, #32]
    ldp     x25, x26, [sp, #48]
    ldp     x27, x28, [sp, #64]
    ldp     x29, x30, [sp, #80]
    ldp     d8, d9, [sp, #96]
    ldp     d10, d11, [sp, #112]
    ldp     d12, d13, [sp, #128]
    ldp     d14, d15, [sp, #144]
    add     sp, sp, #160
    ret
    .cfi_endproc
    .size   weft__ctx_switch, .-weft__ctx_switch

/* First code a fresh context runs: entry(arg). The entry never returns; the
 * brk makes a broken one fail loudly. x30 is marked undefined so debuggers
 * and unwinders stop here. */
    .globl  weft__ctx_trampoline
    .hidden weft__ctx_trampoline
    .type   weft__ctx_trampoline, %function
    .p2align 4
weft__ctx_trampoline:
    .cfi_startproc
    .cfi_undefined x30
    mov     x0, x19
    blr     x20
    brk     #0
    .cfi_endproc
    .size   weft__ctx_trampoline, .-weft__ctx_trampoline

    .section .note.GNU-stack,"",%progbits
