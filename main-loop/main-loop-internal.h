/*
 * Main-loop internals shared by the files of main-loop/.  Not a public API.
 */
#ifndef SHARDVM_MAIN_LOOP_INTERNAL_H
#define SHARDVM_MAIN_LOOP_INTERNAL_H

#include "shardvm/main-loop.h"

#include <stdbool.h>

/* signals.c.  Main-loop thread, BQL held. */
int ml_signals_init(AioContext *fd_ctx, bool force_compat, GError **errp);
void ml_signals_cleanup(void);

/* main-loop.c: record a shutdown caused by @sig (first request wins).
 * Async-signal-safe. */
void ml_request_shutdown_signal(int reason, int sig);

#endif
