// What a test does when it needs /dev/kvm (or QEMU with KVM).
//
// Policy (docs/testing.md): a test that needs KVM never passes without it.
//  - /dev/kvm exists but cannot be opened, or SHARDVM_REQUIRE_KVM=1 is set:
//    the test FAILS with the reason (a broken set-up must not look green).
//  - The host kernel offers no KVM device at all (no "kvm" line in
//    /proc/misc: e.g. a nested-PVM guest whose kvm_pvm module does not
//    bind): the test is SKIPPED with "NO KVM ON THIS MACHINE: ..." so it is
//    counted in the closing "N skipped" of scripts/test, which also prints a
//    banner; it is never counted as passed.
#ifndef SHARDVM_TESTS_NEED_KVM_H
#define SHARDVM_TESTS_NEED_KVM_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fstream>
#include <string>

namespace shardvm_test {

// True when the running kernel registers a "kvm" misc device.
inline bool kernel_has_kvm()
{
    std::ifstream misc("/proc/misc");
    std::string num, name;

    while (misc >> num >> name) {
        if (name == "kvm") {
            return true;
        }
    }
    return false;
}

// "" when /dev/kvm can be opened read-write; else why not.
inline std::string kvm_unusable_reason()
{
    if (access("/dev/kvm", R_OK | W_OK) == 0) {
        return "";
    }
    return std::string("/dev/kvm is not usable (") + strerror(errno) + ")";
}

// True when a missing KVM should skip (not fail) the test: see above.
inline bool kvm_absence_skips()
{
    const char *req = getenv("SHARDVM_REQUIRE_KVM");

    if (req && strcmp(req, "1") == 0) {
        return false;
    }
    return access("/dev/kvm", F_OK) != 0 && !kernel_has_kvm();
}

}  // namespace shardvm_test

// In a TEST body or SetUp(): skip or fail (see above) unless KVM works.
#define SHARDVM_REQUIRE_KVM()                                                \
    do {                                                                     \
        std::string why_ = shardvm_test::kvm_unusable_reason();              \
        if (!why_.empty()) {                                                 \
            if (shardvm_test::kvm_absence_skips()) {                         \
                GTEST_SKIP() << "NO KVM ON THIS MACHINE: " << why_           \
                             << "; the host kernel has no KVM device";       \
            }                                                                \
            FAIL() << why_ << ": this test runs a guest under KVM";          \
        }                                                                    \
    } while (0)

#endif
