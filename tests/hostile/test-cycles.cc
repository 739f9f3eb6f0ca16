// Issue 13 point 5, first item: 1,000 create/destroy cycles of an IOThread
// and a virtio-blk-pci device on it, through the same device path as the
// hostile cases (conf1 probe, MSI-X routes, DRIVER_OK, a request, guest
// reset, device destroy, IOThread free).  Run under ASan, LeakSanitizer
// reports any leak at exit; the test itself checks what LSan cannot see:
// file descriptors (eventfds, epoll fds, image fds), MSI routes, irqfds
// and ioeventfds all come back to where they were.
#include <dirent.h>

#include "hostile-bed.h"

namespace hostile {
namespace {

// 1,000 as issue 13 asks (plain and ASan builds: 2-5 s); TSan's ~4x
// slowdown would make that ~8 s, so it runs a quarter of them (the races
// are the same in every cycle).
#if defined(__SANITIZE_THREAD__)
constexpr unsigned kCycles = 250;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr unsigned kCycles = 250;
#else
constexpr unsigned kCycles = 1000;
#endif
#else
constexpr unsigned kCycles = 1000;
#endif

unsigned OpenFds()
{
    unsigned n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d) {
        return 0;
    }
    while (readdir(d)) {
        n++;
    }
    closedir(d);
    return n;
}

class Cycles : public Bed {
protected:
    void SetUp() override { ASSERT_NO_FATAL_FAILURE(BuildMachine()); }
    void TearDown() override
    {
        DestroyDevices();
        FreeMachine();
    }

    // One cycle: a new IOThread io0, a device on it, used, reset, gone.
    void Cycle(unsigned i)
    {
        GError *err = nullptr;
        iothread_free(iot[0]);
        iot[0] = iothread_new("io0", nullptr, &err);
        ASSERT_NE(iot[0], nullptr) << (err ? err->message : "");
        dev[0] = CreateDevice("virtio-blk-pci,drive=d0,iothread=io0,num-queues=2,"
                              "queue-size=64,addr=5", &err);
        ASSERT_NE(dev[0], nullptr) << (err ? err->message : "");
        ASSERT_NO_FATAL_FAILURE(Probe(a, kSlotA, vtest::kRam0, vtest::kRam1,
                                      vtest::kRam1 + vtest::kRam1Size / 2));
        ASSERT_EQ(a.Start(i % 2 == 1), 15u);
        if (i % 100 == 0) {
            ASSERT_TRUE(a.Verify(i)) << "cycle " << i;
        } else if (i % 10 == 0) {
            ASSERT_EQ(a.Request(VIRTIO_BLK_T_FLUSH, 0, 0, 0, false), VIRTIO_BLK_S_OK)
                << "cycle " << i;
        }
        if (i % 3 == 0) {
            // Leave requests in flight for the destroy to drain.
            for (int j = 0; j < 4; j++) {
                a.ring.AddChain({ { a.Alloc(16), 16, false }, { a.Alloc(16), 1, true } });
            }
            a.Kick();
        }
        if (i % 2 == 0) {
            a.SetStatus(0); // guest reset first; odd cycles destroy a running device
        }
        DestroyDevices();
        EXPECT_FALSE(iothread_in_use(iot[0]));
    }
};

TEST_F(Cycles, ThousandIOThreadAndDeviceLifecycles)
{
    // The first cycle warms what lives as long as the process (the block
    // layer's context registry, glib's caches): count from after it.
    ASSERT_NO_FATAL_FAILURE(Cycle(1));
    unsigned fds = OpenFds();
    size_t routes = vm.routes.size();
    for (unsigned i = 2; i <= kCycles; i++) {
        ASSERT_NO_FATAL_FAILURE(Cycle(i));
    }
    EXPECT_EQ(OpenFds(), fds) << "file descriptors leaked over " << kCycles << " cycles";
    EXPECT_EQ(vm.routes.size(), routes) << "MSI routes leaked";
    EXPECT_TRUE(vm.routes.empty());
    EXPECT_TRUE(vm.ioeventfds.empty()) << "ioeventfds left behind";
}

} // namespace
} // namespace hostile
