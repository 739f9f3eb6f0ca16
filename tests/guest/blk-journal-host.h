// The host's view of blk mode=journal (guest/blk-journal.h, docs/guest.md
// "blk mode=journal"): the generation stamp, the "J w=" / "J f=" records
// the guest prints, and a check of an image against a completed prefix.
// Header-only, shared by tests/guest and tests/integration.
#ifndef SHARDVM_TESTS_BLK_JOURNAL_HOST_H
#define SHARDVM_TESTS_BLK_JOURNAL_HOST_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

namespace blk_journal {

inline uint64_t Mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Word @k of sector @lba written with generation @gen.
inline uint64_t Word(uint64_t lba, uint64_t seed, uint64_t gen, unsigned k)
{
    switch (k) {
    case 0: return 0x314e524a4d564853ull;   // "SHVMJRN1"
    case 1: return lba;
    case 2: return seed;
    case 3: return gen;
    default: return Mix64((seed ^ Mix64(lba * 64 + k)) + gen * 0x9e3779b97f4a7c15ull);
    }
}

// The generation block @block holds at least once writes 0 .. @done-1 of a
// @count-block region completed (0: none wrote it).
inline uint64_t Expect(uint64_t block, uint64_t count, uint64_t done)
{
    return done > block ? (done - 1 - block) / count + 1 : 0;
}

// The whole lines of @out that read exactly "J @kind=N" ('\r' dropped): a
// line cut short (no '\n'), or one the VMM's own stderr message ran into
// (the guest stopped mid-line), does not count.
inline std::vector<uint64_t> Records(const std::string &out, const std::string &kind)
{
    std::string want = "J " + kind + "=";
    std::vector<uint64_t> v;
    size_t at = 0, nl;
    while ((nl = out.find('\n', at)) != std::string::npos) {
        std::string l = out.substr(at, nl - at);
        at = nl + 1;
        if (!l.empty() && l.back() == '\r') {
            l.pop_back();
        }
        if (l.size() > want.size() && l.compare(0, want.size(), want) == 0 &&
            l.find_first_not_of("0123456789", want.size()) == std::string::npos) {
            v.push_back(strtoull(l.c_str() + want.size(), nullptr, 10));
        }
    }
    return v;
}

// The number of the last "J @kind=N" record in @out, 0 when there is none.
inline uint64_t LastRecord(const std::string &out, const std::string &kind)
{
    std::vector<uint64_t> v = Records(out, kind);
    return v.empty() ? 0 : v.back();
}

// How many "J @kind=N" records @out holds.
inline size_t CountRecords(const std::string &out, const std::string &kind)
{
    return Records(out, kind).size();
}

// Result of checking an image against a completed prefix.
struct Check {
    bool readable = false;
    uint64_t bad = 0;        // sectors below the promised generation or torn
    uint64_t ahead = 0;      // sectors holding a newer generation (allowed)
    std::string first_bad;   // a description of the first bad sector
};

// Check the first @count blocks of @bs bytes of image @path: every sector
// is a complete stamp of its lba and @seed with a generation >= what
// writes 0 .. @done-1 gave it (all zero allowed only where that is 0).
inline Check CheckImage(const std::string &path, uint64_t count, uint32_t bs, uint64_t seed,
                        uint64_t done)
{
    Check c;
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        return c;
    }
    std::vector<uint8_t> d((std::istreambuf_iterator<char>(f)), {});
    if (d.size() < count * bs) {
        return c;
    }
    c.readable = true;
    for (uint64_t b = 0; b < count; b++) {
        uint64_t want = Expect(b, count, done);
        for (uint64_t s = 0; s < bs / 512; s++) {
            uint64_t lba = b * (bs / 512) + s;
            uint64_t w[64];
            memcpy(w, &d[lba * 512], 512);
            bool zero = true, ok = true;
            for (unsigned k = 0; k < 64; k++) {
                zero = zero && !w[k];
            }
            if (zero) {
                ok = want == 0;
            } else if (w[3] < want || !w[3]) {
                ok = false;
            } else {
                for (unsigned k = 0; k < 64 && ok; k++) {
                    ok = w[k] == Word(lba, seed, w[3], k);
                }
            }
            if (!ok) {
                if (!c.bad) {
                    std::ostringstream m;
                    m << "lba " << lba << " (block " << b << "): gen " << (zero ? 0 : w[3])
                      << (zero ? " (zero)" : "") << ", want >= " << want;
                    c.first_bad = m.str();
                }
                c.bad++;
            } else if (!zero && w[3] > want) {
                c.ahead++;
            }
        }
    }
    return c;
}

}  // namespace blk_journal

#endif
