/*
 * build/shardvm: parse the command line, build the machine, run the main
 * loop until the guest or a signal ends it, tear down in reverse order and
 * exit with QEMU's status conventions (docs/usage.md).
 */
#include "shardvm/machine.h"
#include "shardvm/main-loop.h"
#include "shardvm/options.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef SHARDVM_VERSION
#define SHARDVM_VERSION "unknown"
#endif

/* Print "shardvm: <message>" and free @err. */
static void report(GError *err)
{
    fprintf(stderr, "shardvm: %s\n", err->message);
    g_error_free(err);
}

int main(int argc, char **argv)
{
    ShardvmOptions o;
    GError *err = NULL;
    Machine *m = NULL;
    int status = 1;

    if (options_parse(argc, argv, &o, &err) < 0) {
        report(err);
        options_clear(&o);
        return 1;
    }
    if (o.help || o.version) {
        if (o.version) {
            printf("shardvm version %s (QEMU-compatible command line, KVM "
                   "only)\n", SHARDVM_VERSION);
        } else {
            fputs(options_usage(), stdout);
        }
        options_clear(&o);
        return 0;
    }

    /* A reader of our stdout that goes away must not kill us. */
    signal(SIGPIPE, SIG_IGN);

    if (main_loop_init(false, &err) < 0) {
        report(err);
        options_clear(&o);
        return 1;
    }
    /* main_loop_init() also made this thread an RCU reader and started
     * the call_rcu thread (shardvm_rcu_init()). */

    m = machine_new(&o, &err);
    if (!m || machine_start(m, &err) < 0) {
        if (main_loop_shutdown_requested() == SHUTDOWN_HOST_SIGNAL) {
            /* SIGTERM during start-up: the same exit as later on. */
            fprintf(stderr, "shardvm: terminating on signal %d\n",
                    main_loop_shutdown_signal());
            g_error_free(err);
            status = 0;
        } else {
            report(err);
        }
        goto out;
    }
    status = machine_exit_status(m, main_loop_run());

out:
    machine_free(m);
    main_loop_cleanup();
    options_clear(&o);
    return status;
}
