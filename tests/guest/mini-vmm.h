/*
 * A minimal KVM loader that boots a test guest the way shardvm is meant
 * to (docs/guest.md, "SMP start protocol"): ELF32 program headers,
 * multiboot info with a command line, every vCPU entered at the same time
 * in 32-bit protected mode with the protocol's registers, CPUID leaf
 * 0x40000010 carrying the TSC frequency.  It exists to test the guest's
 * side of the protocol, which QEMU cannot (it never starts the APs).
 *
 * Devices: COM1 output (THR at 0x3f8, LSR at 0x3fd always "ready"), the
 * debug-exit port 0xf4 (32-bit write ends the run), and a counter on every
 * other port (reads return 0) and MMIO address above the 256 MiB of RAM
 * (reads return all-ones).  No interrupt controller, no PIT.
 */
#ifndef TESTS_GUEST_MINI_VMM_H
#define TESTS_GUEST_MINI_VMM_H

#include <cstdint>
#include <map>
#include <string>

struct MiniVmmRun {
    bool ok = false;            // booted and ended by a debug-exit write
    bool all_halted = false;    // every vCPU ended in hlt (parked)
    std::string error;          // otherwise: why
    uint32_t exit_code = 0;     // value written to port 0xf4 (last one)
    std::string output;         // what the guest wrote to COM1
    std::map<uint16_t, uint64_t> outs;   // port -> number of OUT accesses
    std::map<uint16_t, uint64_t> ins;    // port -> number of IN accesses
    std::map<uint64_t, uint64_t> mmio_writes;   // address -> number of writes
    std::map<uint64_t, uint64_t> mmio_reads;    // address -> number of reads (all-ones)

    bool has_line(const std::string &line) const;
    std::string line_starting(const std::string &prefix) const;
};

// Boot @elf on @ncpus vCPUs with @cmdline; give up after @timeout_s.
// Without @debug_exit, writes to port 0xf4 are only recorded and the run
// ends when every vCPU has halted.  With @irqchip the VM gets KVM's
// in-kernel irqchip (APs then have to be made runnable explicitly, and a
// halted vCPU stays in KVM_RUN).
MiniVmmRun mini_vmm_run(const std::string &elf, const std::string &cmdline,
                        unsigned ncpus, int timeout_s, bool debug_exit = true,
                        bool irqchip = false);

#endif
