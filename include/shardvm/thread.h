/*
 * shardvm threads: every thread the VMM starts is created here, so that it
 * carries its DESIGN.md name (pthread_setname_np, at most 15 characters),
 * blocks the signals that only the main loop handles, and is registered
 * with RCU (liburcu memb flavour) for its whole life.
 */
#ifndef SHARDVM_THREAD_H
#define SHARDVM_THREAD_H

#include <glib.h>
#include <pthread.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * shardvm_thread_create: start @fn(@arg) in a new joinable thread named
 * @name (truncated to 15 bytes), with every signal blocked except the
 * synchronous ones (SIGSEGV, SIGBUS from faults are still delivered to the
 * faulting thread; a vCPU thread unblocks its kick signal itself).  The
 * thread is RCU-registered before @fn runs and unregistered after.
 * Returns 0 or a negative errno (and fills @errp).  Any thread.
 */
int shardvm_thread_create(pthread_t *thread, const char *name,
                          void *(*fn)(void *), void *arg, GError **errp);

/*
 * shardvm_thread_set_name: name the calling thread (at most 15 bytes
 * kept).  Any thread.
 */
void shardvm_thread_set_name(const char *name);

#ifdef __cplusplus
}
#endif

#endif
