// Shared helpers of the vcpu suite: hand-assembled 32-bit protected-mode
// guest snippets, a region that records accesses, and a VM fixture.
#pragma once

#include <gtest/gtest.h>

#include "../common/need-kvm.h"

extern "C" {
#include "shardvm/iothread.h"
#include "shardvm/main-loop.h"
#include "shardvm/memory.h"
#include "shardvm/vcpu.h"
#include "shardvm/vm.h"
// Not rcu.h: its RcuArray uses C11 _Alignas, which C++ does not parse.
#include <urcu/urcu-memb.h>
void shardvm_rcu_drain(void);
}

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <unistd.h>
#include <vector>

// Every thread that touches an address space is an RCU reader.
struct RcuThread {
    RcuThread() { urcu_memb_register_thread(); }
    ~RcuThread() { urcu_memb_unregister_thread(); }
};

// A tiny x86 assembler for the instructions the test guests use
// (32-bit protected mode, CPL0, flat segments).
class GuestCode {
public:
    std::vector<uint8_t> b;

    GuestCode &mov_eax(uint32_t v) { byte(0xb8); imm32(v); return *this; }
    GuestCode &mov_ecx(uint32_t v) { byte(0xb9); imm32(v); return *this; }
    GuestCode &mov_eax_ebx() { byte(0x89); byte(0xd8); return *this; }
    GuestCode &out8(uint8_t port) { byte(0xe6); byte(port); return *this; }
    GuestCode &out16(uint8_t port) { byte(0x66); byte(0xe7); byte(port); return *this; }
    GuestCode &out32(uint8_t port) { byte(0xe7); byte(port); return *this; }
    GuestCode &in8(uint8_t port) { byte(0xe4); byte(port); return *this; }
    GuestCode &in16(uint8_t port) { byte(0x66); byte(0xe5); byte(port); return *this; }
    GuestCode &in32(uint8_t port) { byte(0xe5); byte(port); return *this; }
    // mov %eax, (addr) / mov (addr), %eax
    GuestCode &store32(uint32_t addr) { byte(0xa3); imm32(addr); return *this; }
    GuestCode &load32(uint32_t addr) { byte(0xa1); imm32(addr); return *this; }
    GuestCode &store8(uint32_t addr) { byte(0xa2); imm32(addr); return *this; }
    GuestCode &inc_eax() { byte(0x40); return *this; }
    // cmp (addr), %eax  /  cmp $imm, %eax
    GuestCode &cmp_eax_mem(uint32_t addr) { byte(0x3b); byte(0x05); imm32(addr); return *this; }
    GuestCode &cmp_eax_imm(uint32_t v) { byte(0x3d); imm32(v); return *this; }
    // jne label (short)
    GuestCode &jne_to(size_t label)
    {
        long rel = (long)label - (long)(b.size() + 2);
        byte(0x75);
        byte((uint8_t)(int8_t)rel);
        return *this;
    }
    GuestCode &hlt() { byte(0xf4); return *this; }
    GuestCode &ud2() { byte(0x0f); byte(0x0b); return *this; }
    GuestCode &spin() { byte(0xeb); byte(0xfe); return *this; }
    // A label for loop_to(): the current offset.
    size_t here() const { return b.size(); }
    // dec %ecx; jnz label
    GuestCode &loop_to(size_t label)
    {
        byte(0x49);
        long rel = (long)label - (long)(b.size() + 2);
        byte(0x75);
        byte((uint8_t)(int8_t)rel);
        return *this;
    }
    // jmp label
    GuestCode &jmp_to(size_t label)
    {
        long rel = (long)label - (long)(b.size() + 2);
        byte(0xeb);
        byte((uint8_t)(int8_t)rel);
        return *this;
    }

private:
    void byte(uint8_t v) { b.push_back(v); }
    void imm32(uint32_t v)
    {
        for (int i = 0; i < 4; i++) {
            b.push_back((uint8_t)(v >> (8 * i)));
        }
    }
};

// Records every access to a region.
struct Recorder {
    std::atomic<uint64_t> writes{0}, reads{0};
    std::atomic<uint64_t> last_offset{0}, last_size{0}, last_value{0};
    std::atomic<uint64_t> read_value{0};
    std::atomic<bool> bql_seen{false}, bql_missing{false};
    std::mutex mu;
    std::vector<uint64_t> log; // (offset << 48) | (size << 40) | value

    static uint64_t read_cb(void *opaque, uint64_t offset, unsigned size)
    {
        auto *r = static_cast<Recorder *>(opaque);
        r->reads++;
        r->last_offset = offset;
        r->last_size = size;
        r->note_bql();
        return r->read_value.load();
    }
    static void write_cb(void *opaque, uint64_t offset, uint64_t value,
                         unsigned size)
    {
        auto *r = static_cast<Recorder *>(opaque);
        r->last_offset = offset;
        r->last_size = size;
        r->last_value = value;
        r->note_bql();
        {
            std::lock_guard<std::mutex> g(r->mu);
            r->log.push_back(offset << 48 | (uint64_t)size << 40 |
                             (value & 0xffffffffffull));
        }
        r->writes++; // last: waiters see the fields above
    }
    void note_bql()
    {
        if (bql_locked()) {
            bql_seen = true;
        } else {
            bql_missing = true;
        }
    }
    static inline const IORegionOps ops = { read_cb, write_cb };
};

// A counter region without logging, for the hammer tests.
struct Counter {
    std::atomic<uint64_t> writes{0};
    std::atomic<uint64_t> bad{0};
    uint64_t expect_offset = 0;
    static void write_cb(void *opaque, uint64_t offset, uint64_t, unsigned)
    {
        auto *c = static_cast<Counter *>(opaque);
        if (offset != c->expect_offset) {
            c->bad++;
        }
        c->writes.fetch_add(1);
    }
    static inline const IORegionOps ops = { nullptr, write_cb };
};

// Wait for @pred, at most @seconds: false on timeout.
static inline bool wait_for(const std::function<bool()> &pred,
                            double seconds = 20.0)
{
    auto end = std::chrono::steady_clock::now() +
               std::chrono::duration<double>(seconds);
    while (!pred()) {
        if (std::chrono::steady_clock::now() > end) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return true;
}

static inline bool have_kvm()
{
    return access("/dev/kvm", R_OK | W_OK) == 0;
}

// Guest code goes at 0x1000; the entry point is there too.
constexpr uint32_t kCodeAddr = 0x1000;
constexpr uint8_t kEndPort = 0xf0;

class VmTest : public ::testing::Test {
protected:
    RcuThread *rcu_ = nullptr;
    VM *vm_ = nullptr;
    Recorder end_; // kEndPort: the guest says it is done
    IORegion *end_region_ = nullptr;
    std::atomic<int> stop_requests_{0};
    std::atomic<int> stop_reason_{0};

    void SetUp() override
    {
        SHARDVM_REQUIRE_KVM();
        static thread_local RcuThread reg;
        (void)reg;
    }

    void TearDown() override
    {
        vm_free(vm_);
        vm_ = nullptr;
        shardvm_rcu_drain();
    }

    static void on_stop(void *opaque, VM *, int, VMStopReason reason)
    {
        auto *t = static_cast<VmTest *>(opaque);
        t->stop_reason_ = reason;
        t->stop_requests_++;
    }

    void create(int nr_vcpus = 1, uint64_t ram = 16 << 20,
                bool no_irqchip = false)
    {
        VMConfig cfg = {};
        cfg.ram_size = ram;
        cfg.nr_vcpus = nr_vcpus;
        cfg.no_irqchip = no_irqchip;
        cfg.stop_request = on_stop;
        cfg.stop_opaque = this;
        GError *err = nullptr;
        vm_ = vm_new(&cfg, &err);
        ASSERT_NE(vm_, nullptr) << (err ? err->message : "?");
        // 4 ports wide: the guests report with out32(kEndPort), and an
        // access crossing a region's end is split (the rest would go to
        // the unassigned gap).
        end_region_ = address_space_add(vm_get_pio_space(vm_), "end", kEndPort,
                                        4, &Recorder::ops, &end_, 0, nullptr);
        ASSERT_NE(end_region_, nullptr);
    }

    // Load @code at kCodeAddr and point every vCPU there (EBX = index).
    void load(const GuestCode &code)
    {
        ASSERT_EQ(vm_memory_write(vm_, kCodeAddr, code.b.data(), code.b.size()), 0);
        for (int i = 0; i < vm_get_nr_vcpus(vm_); i++) {
            VCPUEntry32 e = {};
            e.eip = kCodeAddr;
            e.ebx = (uint32_t)i;
            e.ecx = (uint32_t)vm_get_nr_vcpus(vm_);
            e.esp = 0x8000;
            ASSERT_EQ(vcpu_set_entry32(vm_get_vcpu(vm_, i), &e), 0);
        }
    }

    void start()
    {
        GError *err = nullptr;
        ASSERT_EQ(vm_start(vm_, &err), 0) << (err ? err->message : "?");
    }

    bool wait_end(uint64_t n = 1, double seconds = 30.0)
    {
        return wait_for([&] { return end_.writes.load() >= n; }, seconds);
    }
};
