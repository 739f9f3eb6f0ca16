/* A small printf engine: enough for result lines and diagnostics. */
#include "format.h"

#include <stdint.h>

#include "string.h"

struct fmt_spec {
    int left;           /* '-' flag */
    int zero;           /* '0' flag */
    int width;
    int precision;      /* -1: none */
};

static int fmt_pad(fmt_sink_fn sink, void *opaque, char c, int n)
{
    int done = 0;

    for (; n > 0; n--, done++) {
        sink(opaque, &c, 1);
    }
    return done;
}

/* Emit @s (length @len) padded to the spec's width. */
static int fmt_field(fmt_sink_fn sink, void *opaque, const struct fmt_spec *sp,
                     const char *s, size_t len)
{
    int pad = sp->width > (int)len ? sp->width - (int)len : 0;
    int done = 0;

    if (!sp->left) {
        done += fmt_pad(sink, opaque, ' ', pad);
    }
    sink(opaque, s, len);
    done += (int)len;
    if (sp->left) {
        done += fmt_pad(sink, opaque, ' ', pad);
    }
    return done;
}

static int fmt_number(fmt_sink_fn sink, void *opaque, const struct fmt_spec *sp,
                      uint64_t v, int negative, unsigned base, int upper,
                      const char *prefix)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char buf[24];
    int n = 0, done = 0, plen = (int)strlen(prefix) + negative;
    int pad;

    do {
        buf[n++] = digits[v % base];
        v /= base;
    } while (v);
    pad = sp->width - n - plen;
    if (!sp->left && !sp->zero) {
        done += fmt_pad(sink, opaque, ' ', pad);
    }
    if (negative) {
        sink(opaque, "-", 1);
    }
    sink(opaque, prefix, strlen(prefix));
    done += plen;
    if (!sp->left && sp->zero) {
        done += fmt_pad(sink, opaque, '0', pad);
    }
    while (n) {
        sink(opaque, &buf[--n], 1);
        done++;
    }
    if (sp->left) {
        done += fmt_pad(sink, opaque, ' ', pad);
    }
    return done;
}

int fmt_vformat(fmt_sink_fn sink, void *opaque, const char *fmt, va_list ap)
{
    int done = 0;

    while (*fmt) {
        struct fmt_spec sp = { .precision = -1 };
        const char *start = fmt;
        int lng = 0;   /* 0: int, 1: long, 2: long long / size_t / intmax */

        while (*fmt && *fmt != '%') {
            fmt++;
        }
        if (fmt != start) {
            sink(opaque, start, (size_t)(fmt - start));
            done += (int)(fmt - start);
        }
        if (!*fmt) {
            break;
        }
        fmt++;
        for (;; fmt++) {
            if (*fmt == '-') {
                sp.left = 1;
            } else if (*fmt == '0') {
                sp.zero = 1;
            } else {
                break;
            }
        }
        if (*fmt == '*') {
            sp.width = va_arg(ap, int);
            fmt++;
        } else {
            while (*fmt >= '0' && *fmt <= '9') {
                sp.width = sp.width * 10 + (*fmt++ - '0');
            }
        }
        if (*fmt == '.') {
            fmt++;
            sp.precision = 0;
            if (*fmt == '*') {
                sp.precision = va_arg(ap, int);
                fmt++;
            } else {
                while (*fmt >= '0' && *fmt <= '9') {
                    sp.precision = sp.precision * 10 + (*fmt++ - '0');
                }
            }
        }
        for (;; fmt++) {
            if (*fmt == 'l') {
                lng++;
            } else if (*fmt == 'z' || *fmt == 'j' || *fmt == 't') {
                lng = 2;
            } else if (*fmt != 'h') {
                break;
            }
        }

        switch (*fmt) {
        case 'd':
        case 'i': {
            int64_t v = lng ? (lng == 1 ? va_arg(ap, long) : va_arg(ap, long long))
                            : va_arg(ap, int);
            uint64_t mag = v < 0 ? -(uint64_t)v : (uint64_t)v;
            done += fmt_number(sink, opaque, &sp, mag, v < 0, 10, 0, "");
            break;
        }
        case 'u':
        case 'x':
        case 'X':
        case 'o': {
            uint64_t v = lng ? (lng == 1 ? va_arg(ap, unsigned long)
                                         : va_arg(ap, unsigned long long))
                             : va_arg(ap, unsigned int);
            unsigned base = *fmt == 'u' ? 10 : *fmt == 'o' ? 8 : 16;
            done += fmt_number(sink, opaque, &sp, v, 0, base, *fmt == 'X', "");
            break;
        }
        case 'p':
            done += fmt_number(sink, opaque, &sp,
                               (uint64_t)(uintptr_t)va_arg(ap, void *), 0, 16, 0,
                               "0x");
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            size_t len;

            if (!s) {
                s = "(null)";
            }
            len = strlen(s);
            if (sp.precision >= 0 && (size_t)sp.precision < len) {
                len = (size_t)sp.precision;
            }
            done += fmt_field(sink, opaque, &sp, s, len);
            break;
        }
        case 'c': {
            char c = (char)va_arg(ap, int);
            done += fmt_field(sink, opaque, &sp, &c, 1);
            break;
        }
        case '%':
            sink(opaque, "%", 1);
            done++;
            break;
        case '\0':
            return done;
        default:
            /* Unknown conversion: show it verbatim rather than guess. */
            sink(opaque, fmt, 1);
            done++;
            break;
        }
        fmt++;
    }
    return done;
}

struct fmt_buf {
    char *buf;
    size_t size;
    size_t pos;
};

static void fmt_buf_sink(void *opaque, const char *s, size_t len)
{
    struct fmt_buf *b = opaque;

    for (; len; len--, s++, b->pos++) {
        if (b->pos + 1 < b->size) {
            b->buf[b->pos] = *s;
        }
    }
}

int fmt_snprintf(char *buf, size_t size, const char *fmt, ...)
{
    struct fmt_buf b = { buf, size, 0 };
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = fmt_vformat(fmt_buf_sink, &b, fmt, ap);
    va_end(ap);
    if (size) {
        buf[b.pos < size ? b.pos : size - 1] = '\0';
    }
    return n;
}
