/*
 * Run a guest ELF under qemu-system-x86_64 (KVM, multiboot -kernel) and
 * collect what it printed and how it ended.  Used by the guest tests.
 */
#ifndef TESTS_GUEST_QEMU_RUN_H
#define TESTS_GUEST_QEMU_RUN_H

#include <string>
#include <vector>

struct QemuRun {
    bool started = false;       // fork/exec worked
    bool timed_out = false;     // killed after the timeout
    int exit_status = -1;       // WEXITSTATUS, or -1 when killed by a signal
    std::string output;         // stdout and stderr, interleaved
    std::string error;          // why it did not start, for the test message

    // The output split into lines, '\r' removed.
    std::vector<std::string> lines() const;
    // Whether some line equals @line exactly.
    bool has_line(const std::string &line) const;
    // The first line starting with @prefix, or "" if none.
    std::string line_starting(const std::string &prefix) const;
};

// Why the QEMU tests cannot run here ("" when they can): checks the qemu
// binary from $SHARDVM_QEMU and read/write access to /dev/kvm.
std::string qemu_missing();

// The accelerator arguments: {"-enable-kvm"}, or {"-accel", "tcg"} when
// /dev/kvm cannot be opened (see tests/common/need-kvm.h).
std::vector<std::string> qemu_accel();

// The path in environment variable @name, or "" when unset.
std::string env_path(const char *name);

// Boot @elf with -append @append (plus @extra arguments) under QEMU with
// an isa-debug-exit device at 0xf4; kill QEMU after @timeout_s seconds.
QemuRun qemu_run(const std::string &elf, const std::string &append,
                 const std::vector<std::string> &extra, int timeout_s);

// Run @args (a program and its arguments: QEMU, or build/shardvm) the
// same way: output collected, killed after @timeout_s seconds.
QemuRun child_run(const std::vector<std::string> &args, int timeout_s);

#endif
