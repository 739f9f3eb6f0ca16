/*
 * Incremental JSON framing for QMP: see qmp-internal.h.
 *
 * Why not json-glib's own stream parser: it wants a whole document, while
 * a QMP connection is an endless sequence of them, split anywhere by the
 * socket.  This splitter only finds the boundaries (strings, escapes and
 * nesting, nothing more); every message is then parsed by json-glib.
 */
#include "qmp-internal.h"

#include <errno.h>

void qmp_stream_init(QmpStream *st)
{
    st->buf = g_string_new(NULL);
    st->depth = 0;
    st->in_string = false;
    st->escape = false;
    st->overflow = false;
}

void qmp_stream_destroy(QmpStream *st)
{
    if (st->buf) {
        g_string_free(st->buf, TRUE);
        st->buf = NULL;
    }
}

/* Hand the collected message to @fn and start the next one. */
static bool qmp_stream_emit(QmpStream *st, QmpStreamFunc *fn, void *opaque)
{
    bool go_on = fn(opaque, st->buf->str, st->buf->len);
    g_string_truncate(st->buf, 0);
    st->depth = 0;
    return go_on;
}

int qmp_stream_feed(QmpStream *st, const char *buf, size_t len,
                    QmpStreamFunc *fn, void *opaque)
{
    if (st->overflow) {
        return -EMSGSIZE;
    }
    for (size_t i = 0; i < len; i++) {
        char c = buf[i];

        if (st->in_string) {
            g_string_append_c(st->buf, c);
            if (st->escape) {
                st->escape = false;
            } else if (c == '\\') {
                st->escape = true;
            } else if (c == '"') {
                st->in_string = false;
                if (st->depth == 0 && !qmp_stream_emit(st, fn, opaque)) {
                    return -ECANCELED;
                }
            }
        } else if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            if (st->depth > 0) {
                g_string_append_c(st->buf, c);
            } else if (st->buf->len > 0 && !qmp_stream_emit(st, fn, opaque)) {
                /* a top-level scalar ends at whitespace */
                return -ECANCELED;
            }
        } else {
            bool opens = c == '{' || c == '[' || c == '"';
            /* A top-level scalar ("123{...") ends where a value starts. */
            if (opens && st->depth == 0 && st->buf->len > 0 &&
                !qmp_stream_emit(st, fn, opaque)) {
                return -ECANCELED;
            }
            g_string_append_c(st->buf, c);
            if (c == '"') {
                st->in_string = true;
            } else if (c == '{' || c == '[') {
                st->depth++;
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
        if (st->buf->len > MONITOR_MAX_MESSAGE) {
            st->overflow = true;
            g_string_truncate(st->buf, 0);
            return -EMSGSIZE;
        }
    }
    return 0;
}
