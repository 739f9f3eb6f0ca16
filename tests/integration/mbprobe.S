/*
 * mbprobe: a tiny multiboot v1 kernel that prints what the boot loader
 * handed it, so tests/integration can compare shardvm's multiboot loader
 * with QEMU's.  32-bit protected mode only (CPL0 code is emulated on the
 * test platform, so it stays short), output on COM1, then isa-debug-exit
 * with 0x21 (process status 67).
 *
 *   MBPROBE magic=2badb002 mbi=00009500
 *   MBPROBE flags=0000024d lower=00000280 upper=0003fc00
 *   MBPROBE cmdline=<kernel path> <append>|
 *   MBPROBE loader=shardvm|
 *   MBPROBE mmap 0000000000000000 00000000000a0000 00000001   (per entry)
 *   MBPROBE mod 00103000 00103003 m1 x y|                      (per module)
 *   MBPROBE end
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
    mov $stack_top, %esp
    mov %ebx, %edi                  /* EDI = multiboot info from here on */
    push %eax                       /* magic */

    mov $s_magic, %esi
    call puts
    pop %eax
    call puthex
    mov $s_mbi, %esi
    call puts
    mov %edi, %eax
    call puthex
    call newline

    mov $s_flags, %esi
    call puts
    mov 0(%edi), %eax
    call puthex
    mov $s_lower, %esi
    call puts
    mov 4(%edi), %eax
    call puthex
    mov $s_upper, %esi
    call puts
    mov 8(%edi), %eax
    call puthex
    call newline

    mov $s_cmdline, %esi
    call puts
    mov 16(%edi), %esi
    call puts
    call bar_newline

    mov $s_loader, %esi
    call puts
    mov 64(%edi), %esi
    call puts
    call bar_newline

    /* Memory map: entries of (size, base, length, type), size excluded. */
    mov 48(%edi), %ebx              /* mmap_addr */
    mov 44(%edi), %ebp              /* mmap_length */
    add %ebx, %ebp
1:  cmp %ebp, %ebx
    jae 2f
    mov $s_mmap, %esi
    call puts
    mov 8(%ebx), %eax
    call puthex
    mov 4(%ebx), %eax
    call puthex
    call space
    mov 16(%ebx), %eax
    call puthex
    mov 12(%ebx), %eax
    call puthex
    call space
    mov 20(%ebx), %eax
    call puthex
    call newline
    mov (%ebx), %eax
    lea 4(%ebx, %eax), %ebx
    jmp 1b

2:  /* Modules: (mod_start, mod_end, string, reserved). */
    mov 24(%edi), %ebx              /* mods_addr */
    mov 20(%edi), %ebp              /* mods_count */
3:  test %ebp, %ebp
    jz 4f
    mov $s_mod, %esi
    call puts
    mov 0(%ebx), %eax
    call puthex
    call space
    mov 4(%ebx), %eax
    call puthex
    call space
    mov 8(%ebx), %esi
    call puts
    call bar_newline
    add $16, %ebx
    dec %ebp
    jmp 3b

4:  mov $s_end, %esi
    call puts
    call newline
    mov $0x21, %eax
    mov $0xf4, %dx
    out %eax, %dx
5:  hlt
    jmp 5b

/* puts: print the NUL-terminated string at ESI. */
puts:
    lodsb
    test %al, %al
    jz 1f
    call putc
    jmp puts
1:  ret

/* putc: AL to COM1 (the VMMs' UARTs transmit at once: no LSR poll). */
putc:
    push %edx
    mov $0x3f8, %dx
    out %al, %dx
    pop %edx
    ret

space:
    mov $' ', %al
    jmp putc

bar_newline:
    mov $'|', %al
    call putc
newline:
    mov $'\n', %al
    jmp putc

/* puthex: EAX as 8 hex digits. */
puthex:
    push %ecx
    mov $8, %ecx
1:  rol $4, %eax
    push %eax
    and $0xf, %eax
    mov hexdigits(%eax), %al
    call putc
    pop %eax
    loop 1b
    pop %ecx
    ret

    .section .rodata
hexdigits: .ascii "0123456789abcdef"
s_magic:   .asciz "MBPROBE magic="
s_mbi:     .asciz " mbi="
s_flags:   .asciz "MBPROBE flags="
s_lower:   .asciz " lower="
s_upper:   .asciz " upper="
s_cmdline: .asciz "MBPROBE cmdline="
s_loader:  .asciz "MBPROBE loader="
s_mmap:    .asciz "MBPROBE mmap "
s_mod:     .asciz "MBPROBE mod "
s_end:     .asciz "MBPROBE end"

    .bss
    .align 16
    .space 4096
stack_top:
