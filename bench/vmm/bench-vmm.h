/*
 * bench-vmm: VMM exit-path figures for shardvm (in-process, through the
 * KVM core API, and through the build/shardvm binary when there is one)
 * and QEMU (qemu-system-x86_64 with the same test guest).
 */
#ifndef BENCH_VMM_H
#define BENCH_VMM_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

enum {
    IMPL_SHARDVM,
    IMPL_QEMU,
    N_IMPLS
};

enum {
    M_PIO_EXIT,          /* pio.elf (CPL3): ns per userspace PIO exit */
    M_PIO_EXIT_CPL0,     /* tiny CPL0 guest: back-to-back userspace exits */
    M_IOEVENTFD_EXIT,    /* same loop on an ioeventfd port (no exit) */
    M_IOEVENTFD_WAKEUP,  /* kick -> IOThread -> ack in guest memory */
    M_IOEVENTFD_POLLED,  /* same, the IOThread busy-polls guest memory */
    M_BOOT_TO_GUEST,     /* process start -> first guest output line */
    N_METRICS
};

typedef struct BenchVmmOpts {
    int rounds;
    uint64_t pio_count;      /* pio.elf count= */
    uint64_t ack_count;      /* iterations of the tiny ack guests */
    char *guest_dir;         /* pio.elf, hello.elf */
    char *shardvm_bin;       /* NULL: not available */
    char *qemu_bin;          /* NULL: not available */
} BenchVmmOpts;

/* inproc.c: one measurement each, in ns; a negative value on failure. */
double inproc_pio_exit_ns(const BenchVmmOpts *o);
/* @ioeventfd: the port is an ioeventfd handled in an IOThread (else a
 * userspace exit); @wait_ack: the guest waits for each ack in its memory
 * (else it writes back to back); @polled: the IOThread handler also
 * busy-polls the guest's request word (AioContext io_poll). */
double inproc_ack_ns(const BenchVmmOpts *o, bool ioeventfd, bool wait_ack,
                     bool polled);

/* spawn.c: run @bin (QEMU's command-line spelling) with @kernel and
 * @append; ns_per_op of the guest's RESULT line, or the milliseconds from
 * spawn to the first line starting with @marker.  Negative on failure. */
double spawn_pio_exit_ns(const char *bin, const BenchVmmOpts *o);
double spawn_boot_ms(const char *bin, const BenchVmmOpts *o);

#endif
