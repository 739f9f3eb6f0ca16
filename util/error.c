/* Error reporting helpers: see include/shardvm/error.h. */
#include "shardvm/error.h"

#include <stdarg.h>

G_DEFINE_QUARK(shardvm-error-quark, shardvm_error)

int shardvm_error_set(GError **errp, int err, const char *fmt, ...)
{
    if (errp) {
        va_list ap;
        va_start(ap, fmt);
        char *msg = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        g_set_error_literal(errp, SHARDVM_ERROR, err < 0 ? -err : err, msg);
        g_free(msg);
    }
    return err;
}
