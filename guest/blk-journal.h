/*
 * blk mode=journal / mode=journal-check: the generation stamp and what a
 * completed-write prefix promises (docs/guest.md "blk mode=journal").
 *
 * Write number i (0, 1, 2, ...) of a journal run goes to block i % count
 * with generation i / count + 1; every 512-byte sector of it carries
 * blk_journal_word(lba, seed, gen, k) as its word k.
 */
#ifndef GUEST_BLK_JOURNAL_H
#define GUEST_BLK_JOURNAL_H

#include <stdbool.h>
#include <stdint.h>

#define BLK_JOURNAL_MAGIC 0x314e524a4d564853ull     /* "SHVMJRN1" */

/* Word @k (0-63) of sector @lba written with generation @gen. */
uint64_t blk_journal_word(uint64_t lba, uint64_t seed, uint64_t gen, unsigned k);

/* Fill @sectors sectors from @lba with generation @gen. */
void blk_journal_stamp(uint64_t *buf, uint64_t lba, unsigned sectors, uint64_t seed,
                       uint64_t gen);

/*
 * The generation block @block must hold at least once writes 0 .. @done-1
 * (of a region of @count blocks) completed; 0: none of them wrote it.
 */
uint64_t blk_journal_expect(uint64_t block, uint64_t count, uint64_t done);

/*
 * Check sector @buf (512 bytes read from @lba): a complete stamp of @lba
 * and @seed with a generation >= @min_gen, or all zero when @min_gen is 0.
 * Stores the generation found (0 for a zero sector) in *@gen.
 */
bool blk_journal_sector_ok(const uint64_t *buf, uint64_t lba, uint64_t seed,
                           uint64_t min_gen, uint64_t *gen);

#endif
