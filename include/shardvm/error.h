/*
 * Errors a person reads: a GError in the SHARDVM_ERROR domain whose code is
 * a positive errno.  Functions return a negative errno and, where a user
 * will see the reason, also fill a "GError **errp" (which may be NULL).
 */
#ifndef SHARDVM_ERROR_H
#define SHARDVM_ERROR_H

#include <glib.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SHARDVM_ERROR (shardvm_error_quark())
GQuark shardvm_error_quark(void);

/*
 * shardvm_error_set: fill *@errp (when @errp is not NULL) with a message
 * and @err (a negative errno; stored as its positive value).  Returns @err
 * so callers can write "return shardvm_error_set(errp, -EINVAL, ...)".
 * Any thread.
 */
int shardvm_error_set(GError **errp, int err, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

#ifdef __cplusplus
}
#endif

#endif
