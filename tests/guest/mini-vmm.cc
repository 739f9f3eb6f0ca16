#include "mini-vmm.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

namespace {

constexpr uint64_t kMemSize = 256ull << 20;
constexpr uint32_t kMbInfoAddr = 0x9000;
constexpr uint32_t kCmdlineAddr = 0x9100;
constexpr uint32_t kShvm = 0x4D564853;

struct Vm {
    int kvm = -1, vm = -1;
    uint8_t *mem = nullptr;
    std::vector<int> vcpu_fds;
    std::vector<kvm_run *> runs;
    size_t run_size = 0;

    std::mutex lock;                    // guards everything below
    std::condition_variable cond;
    bool stop = false;
    bool debug_exit = true;             // port 0xf4 ends the run
    unsigned running = 0;               // vCPU threads not yet ended
    MiniVmmRun result;

    ~Vm()
    {
        for (size_t i = 0; i < runs.size(); i++) {
            munmap(runs[i], run_size);
        }
        for (int fd : vcpu_fds) {
            close(fd);
        }
        if (mem) {
            munmap(mem, kMemSize);
        }
        if (vm >= 0) {
            close(vm);
        }
        if (kvm >= 0) {
            close(kvm);
        }
    }
};

std::string errno_msg(const char *what)
{
    return std::string(what) + ": " + strerror(errno);
}

// Load the PT_LOAD segments of an ELF32 image; returns the entry point.
bool load_elf32(Vm &vm, const std::string &path, uint32_t *entry, std::string *err)
{
    std::ifstream f(path, std::ios::binary);
    std::vector<char> img((std::istreambuf_iterator<char>(f)),
                          std::istreambuf_iterator<char>());
    Elf32_Ehdr eh;

    if (img.size() < sizeof(eh)) {
        *err = "cannot read " + path;
        return false;
    }
    memcpy(&eh, img.data(), sizeof(eh));
    if (memcmp(eh.e_ident, ELFMAG, SELFMAG) || eh.e_ident[EI_CLASS] != ELFCLASS32 ||
        eh.e_machine != EM_386) {
        *err = path + " is not an elf32-i386 image";
        return false;
    }
    for (unsigned i = 0; i < eh.e_phnum; i++) {
        Elf32_Phdr ph;
        size_t off = eh.e_phoff + (size_t)i * eh.e_phentsize;

        if (off + sizeof(ph) > img.size()) {
            *err = "truncated program headers";
            return false;
        }
        memcpy(&ph, img.data() + off, sizeof(ph));
        if (ph.p_type != PT_LOAD) {
            continue;
        }
        if ((uint64_t)ph.p_paddr + ph.p_memsz > kMemSize ||
            (uint64_t)ph.p_offset + ph.p_filesz > img.size() || ph.p_filesz > ph.p_memsz) {
            *err = "segment out of range";
            return false;
        }
        memcpy(vm.mem + ph.p_paddr, img.data() + ph.p_offset, ph.p_filesz);
        memset(vm.mem + ph.p_paddr + ph.p_filesz, 0, ph.p_memsz - ph.p_filesz);
    }
    *entry = eh.e_entry;
    return true;
}

void write_multiboot_info(Vm &vm, const std::string &cmdline)
{
    uint32_t info[8] = {};

    info[0] = (1u << 0) | (1u << 2);            // mem_lower/upper, cmdline
    info[1] = 640;
    info[2] = (uint32_t)((kMemSize >> 10) - 1024);
    info[4] = kCmdlineAddr;
    memcpy(vm.mem + kMbInfoAddr, info, sizeof(info));
    memcpy(vm.mem + kCmdlineAddr, cmdline.c_str(), cmdline.size() + 1);
}

// struct kvm_cpuid2 with room for its entries.  Declared here because the
// uapi header's flexible-array macro gives the struct another size in C++,
// which changes the ioctl numbers and the entries' offset.
struct CpuidBuf {
    uint32_t nent;
    uint32_t padding;
    kvm_cpuid_entry2 entries[256];
};
constexpr unsigned long kGetSupportedCpuid = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x05, 8);
constexpr unsigned long kSetCpuid2 = _IOC(_IOC_WRITE, KVMIO, 0x90, 8);

// Supported CPUID plus the KVM leaves with the TSC frequency in 0x40000010.
bool set_cpuid(Vm &vm, int fd, std::string *err)
{
    const unsigned max = 256;
    std::unique_ptr<CpuidBuf> cpuid(new CpuidBuf());
    int khz;

    cpuid->nent = max;
    if (ioctl(vm.kvm, kGetSupportedCpuid, cpuid.get()) < 0) {
        *err = errno_msg("KVM_GET_SUPPORTED_CPUID");
        return false;
    }
    khz = ioctl(fd, KVM_GET_TSC_KHZ, 0);
    if (khz > 0) {
        bool have_0x10 = false;

        for (unsigned i = 0; i < cpuid->nent; i++) {
            kvm_cpuid_entry2 &e = cpuid->entries[i];

            if (e.function == 0x40000000) {
                e.eax = 0x40000010;
                memcpy(&e.ebx, "KVMKVMKVM\0\0\0", 12);
            } else if (e.function == 0x40000010) {
                e.eax = (uint32_t)khz;
                have_0x10 = true;
            }
        }
        if (!have_0x10 && cpuid->nent < max) {
            kvm_cpuid_entry2 &e = cpuid->entries[cpuid->nent++];

            memset(&e, 0, sizeof(e));
            e.function = 0x40000010;
            e.eax = (uint32_t)khz;
        }
    }
    if (ioctl(fd, kSetCpuid2, cpuid.get()) < 0) {
        *err = errno_msg("KVM_SET_CPUID2");
        return false;
    }
    return true;
}

// 32-bit flat protected mode, paging off, as multiboot v1 specifies.
bool set_entry_state(int fd, uint32_t entry, uint32_t eax, uint32_t ebx,
                     uint32_t ecx, uint32_t edx, std::string *err)
{
    kvm_sregs s;
    kvm_regs r = {};
    kvm_segment code = {}, data = {};

    if (ioctl(fd, KVM_GET_SREGS, &s) < 0) {
        *err = errno_msg("KVM_GET_SREGS");
        return false;
    }
    code.base = 0;
    code.limit = 0xffffffff;
    code.selector = 0x08;
    code.type = 0xb;            // execute/read, accessed
    code.present = 1;
    code.s = 1;
    code.db = 1;
    code.g = 1;
    data = code;
    data.selector = 0x10;
    data.type = 0x3;            // read/write, accessed
    s.cs = code;
    s.ds = s.es = s.fs = s.gs = s.ss = data;
    s.cr0 = 0x11;               // PE, ET
    s.cr4 = 0;
    s.efer = 0;
    if (ioctl(fd, KVM_SET_SREGS, &s) < 0) {
        *err = errno_msg("KVM_SET_SREGS");
        return false;
    }
    r.rip = entry;
    r.rflags = 0x2;
    r.rax = eax;
    r.rbx = ebx;
    r.rcx = ecx;
    r.rdx = edx;
    if (ioctl(fd, KVM_SET_REGS, &r) < 0) {
        *err = errno_msg("KVM_SET_REGS");
        return false;
    }
    return true;
}

void end_vcpu(Vm &vm, const std::string &error)
{
    std::lock_guard<std::mutex> g(vm.lock);

    if (!error.empty() && vm.result.error.empty() && !vm.stop) {
        vm.result.error = error;
        vm.stop = true;
    }
    vm.running--;
    vm.cond.notify_all();
}

void handle_io(Vm &vm, kvm_run *run)
{
    uint8_t *data = reinterpret_cast<uint8_t *>(run) + run->io.data_offset;
    uint16_t port = run->io.port;
    std::lock_guard<std::mutex> g(vm.lock);

    for (unsigned i = 0; i < run->io.count; i++, data += run->io.size) {
        if (run->io.direction == KVM_EXIT_IO_OUT) {
            vm.result.outs[port]++;
            if (port == 0x3f8) {
                vm.result.output.push_back((char)data[0]);
            } else if (port == 0xf4 && run->io.size == 4 && !vm.stop) {
                memcpy(&vm.result.exit_code, data, 4);
                if (vm.debug_exit) {
                    vm.result.ok = true;
                    vm.stop = true;
                    vm.cond.notify_all();
                }
            }
        } else {
            vm.result.ins[port]++;
            memset(data, 0, run->io.size);
            if (port == 0x3fd) {
                data[0] = 0x60;         // THR empty, transmitter idle
            }
        }
    }
}

void vcpu_thread(Vm &vm, unsigned index)
{
    int fd = vm.vcpu_fds[index];
    kvm_run *run = vm.runs[index];

    for (;;) {
        {
            std::lock_guard<std::mutex> g(vm.lock);
            if (vm.stop) {
                break;
            }
        }
        if (ioctl(fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            end_vcpu(vm, errno_msg("KVM_RUN"));
            return;
        }
        switch (run->exit_reason) {
        case KVM_EXIT_IO:
            handle_io(vm, run);
            break;
        case KVM_EXIT_HLT:
            end_vcpu(vm, "");       // parked
            return;
        case KVM_EXIT_MMIO: {
            std::lock_guard<std::mutex> g(vm.lock);

            if (run->mmio.is_write) {
                vm.result.mmio_writes[run->mmio.phys_addr]++;
            } else {
                vm.result.mmio_reads[run->mmio.phys_addr]++;
                memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
            }
            break;
        }
        case KVM_EXIT_INTR:
            break;
        default: {
            std::ostringstream m;
            m << "vCPU " << index << ": exit reason " << run->exit_reason;
            if (run->exit_reason == KVM_EXIT_INTERNAL_ERROR) {
                m << " suberror " << run->internal.suberror;
            }
            end_vcpu(vm, m.str());
            return;
        }
        }
    }
    end_vcpu(vm, "");
}

void on_kick(int) {}

}  // namespace

bool MiniVmmRun::has_line(const std::string &line) const
{
    std::istringstream in(output);
    std::string l;

    while (std::getline(in, l)) {
        if (l == line) {
            return true;
        }
    }
    return false;
}

std::string MiniVmmRun::line_starting(const std::string &prefix) const
{
    std::istringstream in(output);
    std::string l;

    while (std::getline(in, l)) {
        if (l.compare(0, prefix.size(), prefix) == 0) {
            return l;
        }
    }
    return "";
}

MiniVmmRun mini_vmm_run(const std::string &elf, const std::string &cmdline,
                        unsigned ncpus, int timeout_s, bool debug_exit, bool irqchip)
{
    Vm vm;
    uint32_t entry = 0;
    std::string err;
    std::vector<std::thread> threads;
    struct sigaction sa = {};
    kvm_userspace_memory_region region = {};

    // SIGUSR1 only knocks a vCPU thread out of KVM_RUN (no SA_RESTART).
    sa.sa_handler = on_kick;
    sigaction(SIGUSR1, &sa, nullptr);
    vm.debug_exit = debug_exit;

    vm.kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (vm.kvm < 0) {
        vm.result.error = errno_msg("open /dev/kvm");
        return vm.result;
    }
    vm.vm = ioctl(vm.kvm, KVM_CREATE_VM, 0);
    if (vm.vm < 0) {
        vm.result.error = errno_msg("KVM_CREATE_VM");
        return vm.result;
    }
    if (irqchip && ioctl(vm.vm, KVM_CREATE_IRQCHIP, 0) < 0) {
        vm.result.error = errno_msg("KVM_CREATE_IRQCHIP");
        return vm.result;
    }
    void *mem = mmap(nullptr, kMemSize, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) {
        vm.result.error = errno_msg("mmap guest memory");
        return vm.result;
    }
    vm.mem = static_cast<uint8_t *>(mem);
    region.memory_size = kMemSize;
    region.userspace_addr = (uintptr_t)vm.mem;
    if (ioctl(vm.vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) {
        vm.result.error = errno_msg("KVM_SET_USER_MEMORY_REGION");
        return vm.result;
    }
    if (!load_elf32(vm, elf, &entry, &err)) {
        vm.result.error = err;
        return vm.result;
    }
    write_multiboot_info(vm, cmdline);

    vm.run_size = (size_t)ioctl(vm.kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    for (unsigned i = 0; i < ncpus; i++) {
        int fd = ioctl(vm.vm, KVM_CREATE_VCPU, i);
        void *run;

        if (fd < 0) {
            vm.result.error = errno_msg("KVM_CREATE_VCPU");
            return vm.result;
        }
        vm.vcpu_fds.push_back(fd);
        run = mmap(nullptr, vm.run_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (run == MAP_FAILED) {
            vm.result.error = errno_msg("mmap kvm_run");
            return vm.result;
        }
        vm.runs.push_back(static_cast<kvm_run *>(run));
        if (!set_cpuid(vm, fd, &err) ||
            !(i == 0 ? set_entry_state(fd, entry, 0x2BADB002, kMbInfoAddr, ncpus, kShvm, &err)
                     : set_entry_state(fd, entry, kShvm, i, ncpus, 0, &err))) {
            vm.result.error = err;
            return vm.result;
        }
        // With an in-kernel LAPIC, KVM creates APs waiting for INIT/SIPI;
        // the protocol starts them directly.
        kvm_mp_state mp = { KVM_MP_STATE_RUNNABLE };
        if (irqchip && ioctl(fd, KVM_SET_MP_STATE, &mp) < 0) {
            vm.result.error = errno_msg("KVM_SET_MP_STATE");
            return vm.result;
        }
    }

    vm.running = ncpus;
    for (unsigned i = 0; i < ncpus; i++) {
        threads.emplace_back(vcpu_thread, std::ref(vm), i);
    }
    {
        std::unique_lock<std::mutex> g(vm.lock);
        bool done = vm.cond.wait_for(g, std::chrono::seconds(timeout_s),
                                     [&] { return vm.stop || vm.running == 0; });
        if (!done) {
            vm.result.error = "timed out";
        } else if (!vm.stop && vm.result.error.empty()) {
            vm.result.all_halted = true;
            vm.result.error = "every vCPU halted without a debug-exit write";
        }
        vm.stop = true;
    }
    // Knock the vCPUs still in the guest out of KVM_RUN; immediate_exit
    // covers a thread that has not entered KVM_RUN yet.
    for (unsigned i = 0; i < ncpus; i++) {
        vm.runs[i]->immediate_exit = 1;
    }
    for (unsigned i = 0; i < ncpus; i++) {
        pthread_kill(threads[i].native_handle(), SIGUSR1);
    }
    for (auto &t : threads) {
        t.join();
    }
    if (!vm.result.ok) {
        // Where each vCPU was, for the failure message.
        for (unsigned i = 0; i < ncpus; i++) {
            kvm_regs r;
            kvm_sregs s;
            std::ostringstream m;

            if (ioctl(vm.vcpu_fds[i], KVM_GET_REGS, &r) == 0 &&
                ioctl(vm.vcpu_fds[i], KVM_GET_SREGS, &s) == 0) {
                m << std::hex << "\nvCPU " << i << ": rip=0x" << r.rip << " rsp=0x" << r.rsp
                  << " rflags=0x" << r.rflags << " cs=0x" << s.cs.selector
                  << " cr0=0x" << s.cr0 << " cr4=0x" << s.cr4 << " efer=0x" << s.efer;
                vm.result.error += m.str();
            }
        }
    }
    return vm.result;
}
