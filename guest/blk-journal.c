/*
 * blk mode=journal: generation stamps (blk-journal.h, docs/guest.md).
 * The host side (tests/integration/vblk-harness.h) computes the same words.
 */
#include "blk-journal.h"

static uint64_t jmix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t blk_journal_word(uint64_t lba, uint64_t seed, uint64_t gen, unsigned k)
{
    switch (k) {
    case 0: return BLK_JOURNAL_MAGIC;
    case 1: return lba;
    case 2: return seed;
    case 3: return gen;
    default: return jmix64((seed ^ jmix64(lba * 64 + k)) + gen * 0x9e3779b97f4a7c15ull);
    }
}

void blk_journal_stamp(uint64_t *buf, uint64_t lba, unsigned sectors, uint64_t seed,
                       uint64_t gen)
{
    for (unsigned s = 0; s < sectors; s++) {
        for (unsigned k = 0; k < 64; k++) {
            buf[s * 64 + k] = blk_journal_word(lba + s, seed, gen, k);
        }
    }
}

uint64_t blk_journal_expect(uint64_t block, uint64_t count, uint64_t done)
{
    return done > block ? (done - 1 - block) / count + 1 : 0;
}

bool blk_journal_sector_ok(const uint64_t *buf, uint64_t lba, uint64_t seed,
                           uint64_t min_gen, uint64_t *gen)
{
    bool zero = true;

    for (unsigned k = 0; k < 64; k++) {
        zero = zero && !buf[k];
    }
    if (zero) {
        *gen = 0;
        return min_gen == 0;
    }
    *gen = buf[3];
    if (buf[3] < min_gen || !buf[3]) {
        return false;
    }
    for (unsigned k = 0; k < 64; k++) {
        if (buf[k] != blk_journal_word(lba, seed, buf[3], k)) {
            return false;
        }
    }
    return true;
}
