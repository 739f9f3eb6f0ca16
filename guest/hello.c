/*
 * hello: boot smoke test.  Prints the command line, runs a trivial worker
 * on every vCPU, prints how many ran, and exits with exit=N (default 0).
 *
 *   HELLO cmdline="exit=3 foo=bar"
 *   HELLO cpu=0 ok            (one line per vCPU, any order)
 *   HELLO cpus=1
 *   HELLO tsc_hz=... tsc_source=pit announced=1
 *
 * pci=1 also lists bus 0, one line per function:
 *
 *   HELLO pci=00:01.0 id=8086:7000
 *
 * crash=ud or crash=pf instead ends in a CPU exception (#UD, or #PF on an
 * address past the 4 GiB identity map) after the first line, to test the
 * fault report ("GUEST FAULT ...", exit code 125).
 */
#include "guest.h"

static void hello_pci(pci_bdf_t bdf, uint32_t id, void *opaque)
{
    con_printf("HELLO pci=%02x:%02x.%x id=%04x:%04x\n", PCI_BUS(bdf), PCI_DEV(bdf),
               PCI_FN(bdf), id & 0xffff, id >> 16);
}

static void hello_worker(unsigned cpu, void *arg)
{
    con_printf("HELLO cpu=%u ok\n", cpu);
}

int guest_main(void)
{
    unsigned ran;

    const char *crash = cmdline_str("crash", "");

    con_printf("HELLO cmdline=\"%s\"\n", cmdline_get());
    if (!strcmp(crash, "ud")) {
        __asm__ volatile("ud2");
    } else if (!strcmp(crash, "pf")) {
        (void)*(volatile uint64_t *)0x500000000ull;
    }
    if (cmdline_u64("pci", 0)) {
        pci_scan(hello_pci, NULL);
    }
    ran = smp_run(hello_worker, NULL);
    con_printf("HELLO cpus=%u\n", ran);
    con_printf("HELLO tsc_hz=%lu tsc_source=%s announced=%u\n",
               (unsigned long)tsc_hz(), tsc_source_name(), smp_cpus_announced());
    return (int)cmdline_u64("exit", 0);
}
