// RAM-disk fake of the block layer for the virtio suite (see fake-block.cc).
#pragma once

#include "shardvm/block.h"

#include <atomic>
#include <cstdint>

struct BlockBackend {
    uint8_t *data = nullptr;
    uint64_t size = 0;
    bool ro = false;
    int refs = 0;                  // main thread
    std::atomic<bool> wce{true};
    std::atomic<int> fail{0};      // non-zero: every request completes with it
    std::atomic<int> wrong_thread{0}, submitted{0}, flushes{0}, discards{0},
        unmaps{0}, queues{0};
    std::atomic<unsigned> max_plugged{0};  // most requests inside one plug
    std::atomic<int> max_queues{1 << 30};  // blk_queue_new fails past this many
};

struct BlockQueue {                // home thread of ctx
    BlockBackend *blk;
    AioContext *ctx;
    unsigned in_flight = 0;
    int plug = 0;
    unsigned in_plug = 0, max_plugged = 0, submitted = 0;
};

// fake_blk_new: a zeroed RAM disk of @size bytes with one reference.
BlockBackend *fake_blk_new(uint64_t size, bool ro);
