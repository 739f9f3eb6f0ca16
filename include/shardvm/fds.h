/* Process-wide file descriptor hygiene. */
#ifndef SHARDVM_FDS_H
#define SHARDVM_FDS_H

/*
 * Makes sure file descriptors 0, 1 and 2 are open: each closed one is
 * opened on /dev/null (stdin read-only, stdout/stderr write-only).  A VMM
 * started with a closed stdio descriptor would otherwise hand that number
 * to its first epoll, eventfd or image file, and a later printf() or
 * read(0) would hit the wrong object (a guest's disk, say).
 * Call first thing in main(), before any other descriptor is opened.
 * Main thread, single-threaded.  Returns 0, or -errno if /dev/null cannot
 * be opened (the caller can only exit).
 */
int shardvm_fds_ensure_std(void);

#endif
