/*
 * printf-style formatting shared by the console and fmt_snprintf.
 * Conversions: %d %i %u %x %X %o %p %s %c %%, flags '-' and '0', a width
 * (digits or '*'), a precision for %s ('.N' or '.*'), and the length
 * modifiers hh h l ll z j t.  No floating point.
 */
#ifndef GUEST_FORMAT_H
#define GUEST_FORMAT_H

#include <stdarg.h>
#include <stddef.h>

/* Receives the formatted text a piece at a time. */
typedef void (*fmt_sink_fn)(void *opaque, const char *s, size_t len);

/*
 * fmt_vformat: format @fmt with @ap, handing the output to @sink.
 * Returns the number of characters produced.  Any CPU, any CPL.
 */
int fmt_vformat(fmt_sink_fn sink, void *opaque, const char *fmt, va_list ap);

/*
 * fmt_snprintf: like C snprintf: writes at most @size bytes including the
 * terminating NUL and returns the length the full output would have had.
 */
int fmt_snprintf(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
