/*
 * build/shardvm: parse the command line, build the machine, run the main
 * loop until the guest or a signal ends it, tear down in reverse order and
 * exit with QEMU's status conventions (docs/usage.md).
 */
#include "shardvm/fds.h"
#include "shardvm/machine.h"
#include "shardvm/main-loop.h"
#include "shardvm/options.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
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

/* -pidfile: write our pid (QEMU's format: the number and a newline). */
static int write_pidfile(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0) {
        fprintf(stderr, "shardvm: cannot write pid file '%s': %s\n", path,
                strerror(errno));
        return -1;
    }
    return 0;
}

/*
 * -daemonize: fork; the parent waits until the child says the machine is
 * set up (one byte on a pipe) and exits 0, or 1 if the child died first.
 * The child starts a new session and later detaches its stdio.
 */
static int daemon_fork(int *ready_fd)
{
    int p[2];
    if (pipe(p) < 0) {
        perror("shardvm: pipe");
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("shardvm: fork");
        return -1;
    }
    if (pid > 0) {
        char c;
        close(p[1]);
        ssize_t n;
        do {
            n = read(p[0], &c, 1);
        } while (n < 0 && errno == EINTR);
        _exit(n == 1 ? 0 : 1);
    }
    close(p[0]);
    setsid();
    *ready_fd = p[1];
    return 0;
}

/* The machine is up: release the -daemonize parent, detach stdio. */
static void daemon_ready(int *ready_fd)
{
    if (*ready_fd < 0) {
        return;
    }
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        close(null);
    }
    ssize_t n = write(*ready_fd, "", 1);
    (void)n;
    close(*ready_fd);
    *ready_fd = -1;
}

int main(int argc, char **argv)
{
    ShardvmOptions o;
    GError *err = NULL;
    Machine *m = NULL;
    int status = 1;
    int daemon_fd = -1;

    /* Before anything opens a descriptor: a closed 0/1/2 would be reused
     * by an epoll, eventfd or disk image, and printf would write there. */
    if (shardvm_fds_ensure_std() < 0) {
        return 1;
    }
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

    /* -daemonize forks here, before any thread exists. */
    if (o.daemonize && daemon_fork(&daemon_fd) < 0) {
        options_clear(&o);
        return 1;
    }
    if (o.pidfile && write_pidfile(o.pidfile) < 0) {
        options_clear(&o);
        return 1;
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
    /* QMP hook (issue 12): the monitor listens before the vCPUs start. */
    if (m && machine_monitor_start(m, &o, &err) < 0) {
        report(err);
        goto out;
    }
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
    daemon_ready(&daemon_fd);
    status = machine_exit_status(m, main_loop_run());

out:
    if (o.pidfile) {
        unlink(o.pidfile);
    }
    machine_free(m);
    main_loop_cleanup();
    options_clear(&o);
    return status;
}
