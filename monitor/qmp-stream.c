/*
 * Incremental JSON framing for QMP: see qmp-internal.h.
 *
 * Why not json-glib's own stream parser: it wants a whole document, while
 * a QMP connection is an endless sequence of them, split anywhere by the
 * socket.  This splitter only finds the boundaries (strings, escapes and
 * nesting), plus the few checks json-glib needs done before it parses
 * (nesting depth, "\u0000", number range); every message is then parsed
 * by json-glib.
 */
#include "qmp-internal.h"

#include <errno.h>
#include <math.h>
#include <string.h>

void qmp_stream_init(QmpStream *st)
{
    st->buf = g_string_new(NULL);
    st->depth = 0;
    st->quote = 0;
    st->escape = false;
    st->uesc = 0;
    st->uval = 0;
    st->high = false;
    st->in_number = false;
    st->num_start = 0;
    st->error = NULL;
    st->overflow = false;
}

void qmp_stream_destroy(QmpStream *st)
{
    if (st->buf) {
        g_string_free(st->buf, TRUE);
        st->buf = NULL;
    }
}

/* Refuse the current message (the first reason sticks). */
static void qmp_stream_refuse(QmpStream *st, const char *why)
{
    if (!st->error) {
        st->error = why;
    }
}

/* Hand the collected message to @fn and start the next one. */
static bool qmp_stream_emit(QmpStream *st, QmpStreamFunc *fn, void *opaque)
{
    bool go_on = fn(opaque, st->buf->str, st->buf->len, st->error);
    g_string_truncate(st->buf, 0);
    st->depth = 0;
    st->error = NULL;
    st->in_number = false;
    return go_on;
}

static bool qmp_stream_is_number_char(char c)
{
    return g_ascii_isdigit(c) || c == '-' || c == '+' || c == '.' ||
           c == 'e' || c == 'E';
}

/* The number token from num_start to the end of buf is complete: json-glib
 * wraps integers past int64 and turns huge doubles into infinities (which
 * it then writes as "inf.0", not JSON), so refuse both. */
static void qmp_stream_end_number(QmpStream *st)
{
    const char *tok = st->buf->str + st->num_start;
    bool integral = !strpbrk(tok, ".eE");
    char *end = NULL;

    st->in_number = false;
    errno = 0;
    if (integral) {
        g_ascii_strtoll(tok, &end, 10);
        if (errno == ERANGE) {
            qmp_stream_refuse(st, "number out of range");
        }
    } else {
        double d = g_ascii_strtod(tok, &end);
        if (isinf(d)) {
            qmp_stream_refuse(st, "number out of range");
        }
    }
}

/* A \uXXXX escape (value in uval) is complete.  json-glib turns a
 * surrogate that is not half of a pair into bytes that are not UTF-8 and
 * swallows the next character; QEMU refuses it, and so do we. */
static void qmp_stream_end_uescape(QmpStream *st)
{
    unsigned v = st->uval;
    bool low = v >= 0xdc00 && v <= 0xdfff;

    if (v == 0) {
        qmp_stream_refuse(st, "\\u0000 is not supported");
    }
    if (low != st->high) {
        qmp_stream_refuse(st, "UTF-16 surrogate escape not in a pair");
    }
    st->high = v >= 0xd800 && v <= 0xdbff;
}

/* One byte inside a string (already appended). */
static void qmp_stream_string_byte(QmpStream *st, char c)
{
    if (st->uesc > 0) {
        if (g_ascii_isxdigit(c)) {
            st->uval = st->uval * 16 + (unsigned)g_ascii_xdigit_value(c);
            if (--st->uesc == 0) {
                qmp_stream_end_uescape(st);
            }
            return;
        }
        /* A \u escape with fewer than four hex digits: json-glib decodes
         * "\ud80T" into bytes that are not UTF-8 instead of failing. */
        st->uesc = 0;
        st->high = false;
        qmp_stream_refuse(st, "invalid escape sequence in string");
    }
    /* After a high surrogate only "\u" (of its low half) may come. */
    if (st->high && !(c == '\\' && !st->escape) && !(c == 'u' && st->escape)) {
        st->high = false;
        qmp_stream_refuse(st, "UTF-16 surrogate escape not in a pair");
    }
    if (st->quote == '\'') {
        /* json-glib's single-quoted strings know no escapes */
        if (c == '\'') {
            st->quote = 0;
        }
        return;
    }
    if (st->escape) {
        st->escape = false;
        if (c == 'u') {
            st->uesc = 4;
            st->uval = 0;
        }
    } else if (c == '\\') {
        st->escape = true;
    } else if (c == st->quote) {
        st->quote = 0;
    }
}

int qmp_stream_feed(QmpStream *st, const char *buf, size_t len,
                    QmpStreamFunc *fn, void *opaque)
{
    if (st->overflow) {
        return -EMSGSIZE;
    }
    for (size_t i = 0; i < len; i++) {
        char c = buf[i];

        if (st->quote) {
            g_string_append_c(st->buf, c);
            qmp_stream_string_byte(st, c);
            if (!st->quote && st->depth == 0 &&
                !qmp_stream_emit(st, fn, opaque)) {
                return -ECANCELED;
            }
            goto check_size;
        }
        if (st->in_number && !qmp_stream_is_number_char(c)) {
            qmp_stream_end_number(st);
        }
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            if (st->depth > 0) {
                g_string_append_c(st->buf, c);
            } else if (st->buf->len > 0 && !qmp_stream_emit(st, fn, opaque)) {
                /* a top-level scalar ends at whitespace */
                return -ECANCELED;
            }
        } else {
            bool opens = c == '{' || c == '[' || c == '"' || c == '\'';
            /* A top-level scalar ("123{...") ends where a value starts. */
            if (opens && st->depth == 0 && st->buf->len > 0 &&
                !qmp_stream_emit(st, fn, opaque)) {
                return -ECANCELED;
            }
            if (!st->in_number && (g_ascii_isdigit(c) || c == '-')) {
                st->in_number = true;
                st->num_start = st->buf->len;
            }
            g_string_append_c(st->buf, c);
            if (c == '"' || c == '\'') {
                st->quote = c;
                st->escape = false;
                st->uesc = 0;
                st->high = false;
            } else if (c == '{' || c == '[') {
                /* Counted here, refused before json-glib (which recurses
                 * per level) ever sees it. */
                if (++st->depth > QMP_MAX_NESTING) {
                    qmp_stream_refuse(st, "JSON nesting depth limit "
                                          "exceeded");
                }
            } else if (c == '}' || c == ']') {
                /* A stray closer at depth 0 is a message of its own that
                 * json-glib rejects. */
                if (st->depth > 0) {
                    st->depth--;
                }
                if (st->depth == 0 && !qmp_stream_emit(st, fn, opaque)) {
                    return -ECANCELED;
                }
            }
        }
check_size:
        if (st->buf->len > MONITOR_MAX_MESSAGE) {
            st->overflow = true;
            g_string_truncate(st->buf, 0);
            return -EMSGSIZE;
        }
    }
    return 0;
}
