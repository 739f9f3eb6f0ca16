/*
 * Console output on the 8250 UART at I/O port 0x3f8 (COM1), polled.
 * Lines end in "\n" only (no "\r"): the output is read by programs.
 */
#ifndef GUEST_CONSOLE_H
#define GUEST_CONSOLE_H

#include <stdarg.h>
#include <stddef.h>

/* con_init: program COM1 for 115200 8N1, FIFO on, interrupts off.
 * Called once by the BSP before guest_main(). */
void con_init(void);

/*
 * con_printf: format (see format.h) and write to COM1.  The whole call
 * holds the console lock, so lines printed by different vCPUs do not
 * interleave.  Any vCPU at CPL3.  Returns the number of characters.
 */
int con_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int con_vprintf(const char *fmt, va_list ap);

/* con_write: write @len bytes under the console lock.  Any vCPU. */
void con_write(const char *s, size_t len);

/*
 * con_write_unlocked: write without taking the lock.  For the fault path
 * only, where the faulting vCPU may already hold the lock.
 */
void con_write_unlocked(const char *s, size_t len);

#endif
