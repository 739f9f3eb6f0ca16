/*
 * hello: boot smoke test.  Prints the command line, runs a trivial worker
 * on every vCPU, prints how many ran, and exits with exit=N (default 0).
 *
 *   HELLO cmdline="exit=3 foo=bar"
 *   HELLO cpu=0 ok            (one line per vCPU, any order)
 *   HELLO cpus=1
 *   HELLO tsc_hz=... tsc_source=pit
 */
#include "guest.h"

static void hello_worker(unsigned cpu, void *arg)
{
    con_printf("HELLO cpu=%u ok\n", cpu);
}

int guest_main(void)
{
    unsigned ran;

    con_printf("HELLO cmdline=\"%s\"\n", cmdline_get());
    ran = smp_run(hello_worker, NULL);
    con_printf("HELLO cpus=%u\n", ran);
    con_printf("HELLO tsc_hz=%lu tsc_source=%s announced=%u\n",
               (unsigned long)tsc_hz(), tsc_source_name(), smp_cpus_announced());
    return (int)cmdline_u64("exit", 0);
}
