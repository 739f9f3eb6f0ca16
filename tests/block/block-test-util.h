// Helpers for the block tests: an image directory whose file system takes
// O_DIRECT, images, completions, polling.
#pragma once

#include "shardvm/aio.h"
#include "shardvm/block.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <string>
#include <unistd.h>
#include <vector>

namespace blocktest {

// A directory for images whose file system supports O_DIRECT (tmpfs did
// not before Linux 6.6): $SHARDVM_BLOCK_TEST_DIR, the build directory
// (the tests' working directory), /var/tmp, /tmp.  Empty if none.
inline std::string ImageDir()
{
    static std::string dir = [] {
        std::vector<std::string> cands;
        if (const char *e = getenv("SHARDVM_BLOCK_TEST_DIR")) {
            cands.push_back(e);
        }
        char cwd[4096];
        if (getcwd(cwd, sizeof(cwd))) {
            cands.push_back(cwd);
        }
        cands.push_back("/var/tmp");
        cands.push_back("/tmp");
        for (auto &d : cands) {
            std::string t = d + "/shardvm-odirect-XXXXXX";
            int fd = mkstemp(&t[0]);
            if (fd < 0) {
                continue;
            }
            close(fd);
            fd = open(t.c_str(), O_RDWR | O_DIRECT);
            unlink(t.c_str());
            if (fd >= 0) {
                close(fd);
                return d;
            }
        }
        return std::string();
    }();
    return dir;
}

// A sparse image of @size bytes, removed at destruction.
struct Image {
    std::string path;
    explicit Image(uint64_t size, const std::string &dir = ImageDir())
    {
        path = (dir.empty() ? std::string("/tmp") : dir) +
               "/shardvm-blk-XXXXXX";
        int fd = mkstemp(&path[0]);
        EXPECT_GE(fd, 0);
        EXPECT_EQ(ftruncate(fd, size), 0);
        close(fd);
    }
    ~Image() { unlink(path.c_str()); }
    // Read from the host, bypassing the block layer.
    std::vector<uint8_t> Read(uint64_t off, size_t len) const
    {
        std::vector<uint8_t> buf(len);
        int fd = open(path.c_str(), O_RDONLY);
        EXPECT_EQ(pread(fd, buf.data(), len, off), (ssize_t)len);
        close(fd);
        return buf;
    }
    void Write(uint64_t off, const std::vector<uint8_t> &data) const
    {
        int fd = open(path.c_str(), O_WRONLY);
        EXPECT_EQ(pwrite(fd, data.data(), data.size(), off),
                  (ssize_t)data.size());
        close(fd);
    }
};

// Open descriptors of this process (a count, for leak checks).
inline int OpenFds()
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    while (d && readdir(d)) {
        n++;
    }
    if (d) {
        closedir(d);
    }
    return n;
}

inline std::vector<uint8_t> Pattern(size_t len, unsigned seed)
{
    std::vector<uint8_t> v(len);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        v[i] = x >> 24;
    }
    return v;
}

// Counts completions and remembers results and their order.
struct Done {
    int count = 0;
    int errors = 0;
    int last_err = 0;
    std::vector<int> order;
    struct Tag {
        Done *d;
        int id;
    };
    std::vector<Tag> tags;
    explicit Done(int n = 4096)
    {
        tags.resize(n);
        for (int i = 0; i < n; i++) {
            tags[i] = { this, i };
        }
    }
    void *Op(int id) { return &tags[id]; }
    static void Cb(void *opaque, int ret)
    {
        Tag *t = static_cast<Tag *>(opaque);
        t->d->count++;
        t->d->order.push_back(t->id);
        if (ret < 0) {
            t->d->errors++;
            t->d->last_err = ret;
        }
    }
};

// Poll @ctx until @cond holds; fails (rather than hangs) after 60 s.
template <typename F> bool PollUntil(AioContext *ctx, F cond)
{
    gint64 deadline = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;
    while (!cond()) {
        if (g_get_monotonic_time() > deadline) {
            ADD_FAILURE() << "condition never met";
            return false;
        }
        aio_poll(ctx, true);
    }
    return true;
}

inline BlockOptions FileOptions(const std::string &path, BlockAioMode aio,
                                const char *cache)
{
    BlockOptions o{};
    std::string arg = "file=" + path + ",cache=" + cache + ",aio=" +
                      (aio == BLOCK_AIO_THREADS ? "threads"
                       : aio == BLOCK_AIO_NATIVE ? "native" : "io_uring");
    GError *err = nullptr;
    EXPECT_EQ(block_parse_drive(arg.c_str(), &o, &err), 0)
        << (err ? err->message : "");
    if (err) {
        g_error_free(err);
    }
    return o;
}

} // namespace blocktest
