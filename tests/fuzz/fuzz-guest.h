// Shared by the fuzz targets: a synthetic guest (two exactly-sized RAM
// allocations with a hole between them, so ASan's redzones catch any access
// past either end), the AioContext the device queues run in (polled by the
// fuzzing thread), and CHECK().
#pragma once

#include "shardvm/aio.h"
#include "shardvm/rcu.h"
#include "shardvm/virtio.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#define CHECK(cond, ...)                                                 \
    do {                                                                 \
        if (!(cond)) {                                                   \
            fprintf(stderr, "fuzz: check failed: %s: ", #cond);          \
            fprintf(stderr, __VA_ARGS__);                                \
            fprintf(stderr, "\n");                                       \
            abort();                                                     \
        }                                                                \
    } while (0)

namespace fuzzguest {

// Guest physical layout: RAM0 (rings, indirect tables) and RAM1 (request
// buffers), a hole between them.
constexpr uint64_t kRam0 = 0x10000, kRam0Size = 0x8000;
constexpr uint64_t kHole = kRam0 + kRam0Size;
constexpr uint64_t kRam1 = 0x20000, kRam1Size = 0x80000;

struct World {
    uint8_t *ram0, *ram1;
    GuestMemory *mem;
    AioContext *ctx;   // the queues' context; this thread is its home
};

inline World *TheWorld()
{
    static World *w;
    if (!w) {
        w = new World();
        shardvm_rcu_init();
        w->ram0 = static_cast<uint8_t *>(aligned_alloc(4096, kRam0Size));
        w->ram1 = static_cast<uint8_t *>(aligned_alloc(4096, kRam1Size));
        GuestMemoryRange r[2] = {{kRam0, kRam0Size, w->ram0}, {kRam1, kRam1Size, w->ram1}};
        w->mem = guest_memory_new(r, 2);
        w->ctx = aio_context_new(nullptr);
    }
    return w;
}

inline void ClearRam()
{
    World *w = TheWorld();
    memset(w->ram0, 0, kRam0Size);
    memset(w->ram1, 0, kRam1Size);
}

// [gpa, gpa + len) inside one RAM range.
inline bool InRam(uint64_t gpa, uint64_t len)
{
    auto in = [&](uint64_t base, uint64_t size) {
        return gpa >= base && gpa - base < size && len <= size - (gpa - base);
    };
    return len && (in(kRam0, kRam0Size) || in(kRam1, kRam1Size));
}

// Host address of a harness-chosen gpa (which must be in RAM).
inline uint8_t *Hva(uint64_t gpa)
{
    World *w = TheWorld();
    if (gpa >= kRam0 && gpa < kRam0 + kRam0Size) {
        return w->ram0 + (gpa - kRam0);
    }
    CHECK(gpa >= kRam1 && gpa < kRam1 + kRam1Size, "harness gpa 0x%llx",
          (unsigned long long)gpa);
    return w->ram1 + (gpa - kRam1);
}

// Run @ctx until a pass makes no progress; abort if it never settles.
inline void RunUntilIdle(AioContext *ctx)
{
    unsigned spins = 0;
    while (aio_poll(ctx, false)) {
        CHECK(++spins < 100000, "the context never goes idle");
    }
}

}  // namespace fuzzguest
