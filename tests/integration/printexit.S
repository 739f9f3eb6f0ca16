/*
 * printexit: a tiny multiboot v1 kernel that prints "BEFORE" on COM1,
 * writes 0x10 to isa-debug-exit (process status 33), then prints "AFTER"
 * forever.  QEMU exits inside the debug-exit write, so its output is
 * exactly "BEFORE\n"; shardvm must match it (docs/usage.md: nothing the
 * guest prints after isa-debug-exit reaches the output).
 */
    .code32
    .text
    .align 4
mb_header:
    .long 0x1BADB002                /* magic */
    .long 0x00000003                /* page-align modules, memory info */
    .long -(0x1BADB002 + 0x00000003)

    .globl _start
_start:
    /* Multiboot leaves ESP undefined (shardvm: 0; QEMU's loader happens
     * to leave a usable one): bring our own stack for the calls. */
    mov $stack_top, %esp
    mov $s_before, %esi
    call puts
    mov $0x10, %eax
    mov $0xf4, %dx
    out %eax, %dx
1:  mov $s_after, %esi
    call puts
    jmp 1b

/* puts: the NUL-terminated string at ESI to COM1. */
puts:
    mov $0x3f8, %dx
2:  lodsb
    test %al, %al
    jz 3f
    out %al, %dx
    jmp 2b
3:  ret

    .section .rodata
s_before: .asciz "BEFORE\n"
s_after:  .asciz "AFTER\n"

    .section .bss
    .align 16
stack:
    .space 4096
stack_top:
