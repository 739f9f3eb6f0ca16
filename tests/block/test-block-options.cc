// -drive / -blockdev parsing: QEMU's spelling, defaults, JSON, errors that
// name the bad key.
#include "shardvm/block.h"

#include <gtest/gtest.h>

#include <string>

namespace {

struct Parsed {
    BlockOptions o{};
    GError *err = nullptr;
    int r = 0;
    ~Parsed()
    {
        block_options_clear(&o);
        if (err) {
            g_error_free(err);
        }
    }
    std::string msg() const { return err ? err->message : ""; }
};

void Drive(Parsed &p, const char *arg)
{
    p.r = block_parse_drive(arg, &p.o, &p.err);
}

void Blockdev(Parsed &p, const char *arg)
{
    p.r = block_parse_blockdev(arg, &p.o, &p.err);
}

TEST(BlockOptions, DriveDefaults)
{
    Parsed p;
    Drive(p, "file=disk.img,format=raw,if=none,id=d0");
    ASSERT_EQ(p.r, 0) << p.msg();
    EXPECT_STREQ(p.o.id, "d0");
    EXPECT_STREQ(p.o.filename, "disk.img");
    EXPECT_EQ(p.o.driver, BLOCK_DRIVER_FILE);
    EXPECT_EQ(p.o.aio, BLOCK_AIO_THREADS);
    EXPECT_FALSE(p.o.cache_direct);
    EXPECT_FALSE(p.o.cache_no_flush);
    EXPECT_TRUE(p.o.cache_writeback);
    EXPECT_FALSE(p.o.read_only);
    EXPECT_EQ(p.o.discard, BLOCK_DISCARD_IGNORE);
    EXPECT_EQ(p.o.locking, BLOCK_LOCKING_AUTO);
    EXPECT_FALSE(p.o.if_virtio);
}

TEST(BlockOptions, DriveCacheModes)
{
    struct {
        const char *mode;
        bool direct, no_flush, writeback;
    } cases[] = {
        { "writeback", false, false, true },
        { "none", true, false, true },
        { "writethrough", false, false, false },
        { "directsync", true, false, false },
        { "unsafe", false, true, true },
    };
    for (auto &c : cases) {
        Parsed p;
        std::string arg = std::string("file=x,cache=") + c.mode;
        Drive(p, arg.c_str());
        ASSERT_EQ(p.r, 0) << c.mode << ": " << p.msg();
        EXPECT_EQ(p.o.cache_direct, c.direct) << c.mode;
        EXPECT_EQ(p.o.cache_no_flush, c.no_flush) << c.mode;
        EXPECT_EQ(p.o.cache_writeback, c.writeback) << c.mode;
    }
}

TEST(BlockOptions, DriveEverything)
{
    Parsed p;
    Drive(p, "file=a,,b.img,if=virtio,id=vd,cache=none,aio=io_uring,"
             "readonly=on,discard=unmap,locking=off");
    ASSERT_EQ(p.r, 0) << p.msg();
    EXPECT_STREQ(p.o.filename, "a,b.img");
    EXPECT_TRUE(p.o.if_virtio);
    EXPECT_EQ(p.o.aio, BLOCK_AIO_IO_URING);
    EXPECT_TRUE(p.o.read_only);
    EXPECT_EQ(p.o.discard, BLOCK_DISCARD_UNMAP);
    EXPECT_EQ(p.o.locking, BLOCK_LOCKING_OFF);

    Parsed q;
    Drive(q, "file=a,aio=native,discard=on,cache.direct=on,locking=on");
    ASSERT_EQ(q.r, 0) << q.msg();
    EXPECT_EQ(q.o.aio, BLOCK_AIO_NATIVE);
    EXPECT_EQ(q.o.discard, BLOCK_DISCARD_UNMAP);
    EXPECT_TRUE(q.o.cache_direct);
    EXPECT_EQ(q.o.locking, BLOCK_LOCKING_ON);

    Parsed r;
    Drive(r, "file=a,discard=off,readonly=off");
    ASSERT_EQ(r.r, 0) << r.msg();
    EXPECT_EQ(r.o.discard, BLOCK_DISCARD_IGNORE);
    EXPECT_FALSE(r.o.read_only);
}

TEST(BlockOptions, DriveErrorsNameTheKey)
{
    struct {
        const char *arg;
        const char *want;
        int err;
    } cases[] = {
        { "file=x,format=qcow2", "qcow2' is not supported yet", -ENOTSUP },
        { "file=x,format=vmdk", "'format'", -EINVAL },
        { "file=x,cache=bogus", "'cache'", -EINVAL },
        { "file=x,aio=posix", "'aio'", -EINVAL },
        { "file=x,readonly=maybe", "'readonly'", -EINVAL },
        { "file=x,discard=yes", "'discard'", -EINVAL },
        { "file=x,locking=1", "'locking'", -EINVAL },
        { "file=x,if=ide", "if=ide", -ENOTSUP },
        { "file=x,serial=abc", "unknown parameter 'serial'", -EINVAL },
        { "id=d0,if=none", "'file' is missing", -EINVAL },
        { "file=x,file=y", "repeated", -EINVAL },
        { "file=x,driver=nbd", "unknown driver 'nbd'", -EINVAL },
    };
    for (auto &c : cases) {
        Parsed p;
        Drive(p, c.arg);
        EXPECT_EQ(p.r, c.err) << c.arg;
        EXPECT_NE(p.msg().find(c.want), std::string::npos)
            << c.arg << " -> " << p.msg();
        EXPECT_EQ(p.o.filename, nullptr);
        EXPECT_EQ(p.o.id, nullptr);
    }
}

TEST(BlockOptions, BlockdevFile)
{
    Parsed p;
    Blockdev(p, "driver=file,node-name=disk0,filename=/tmp/x.img,"
                "cache.direct=on,cache.no-flush=off,read-only=on,"
                "aio=native,discard=unmap,locking=auto");
    ASSERT_EQ(p.r, 0) << p.msg();
    EXPECT_STREQ(p.o.id, "disk0");
    EXPECT_STREQ(p.o.filename, "/tmp/x.img");
    EXPECT_TRUE(p.o.cache_direct);
    EXPECT_FALSE(p.o.cache_no_flush);
    EXPECT_TRUE(p.o.cache_writeback);
    EXPECT_TRUE(p.o.read_only);
    EXPECT_EQ(p.o.aio, BLOCK_AIO_NATIVE);
    EXPECT_EQ(p.o.discard, BLOCK_DISCARD_UNMAP);
}

TEST(BlockOptions, BlockdevNull)
{
    Parsed p;
    Blockdev(p, "driver=null-aio,node-name=n,read-zeroes=on,latency-ns=5000,"
                "size=64M");
    ASSERT_EQ(p.r, 0) << p.msg();
    EXPECT_EQ(p.o.driver, BLOCK_DRIVER_NULL_AIO);
    EXPECT_TRUE(p.o.null_read_zeroes);
    EXPECT_EQ(p.o.null_latency_ns, 5000u);
    EXPECT_EQ(p.o.null_size, 64ull << 20);
    EXPECT_EQ(p.o.filename, nullptr);

    Parsed d;
    Blockdev(d, "driver=null-co,node-name=n");
    ASSERT_EQ(d.r, 0) << d.msg();
    EXPECT_EQ(d.o.driver, BLOCK_DRIVER_NULL_CO);
    EXPECT_EQ(d.o.null_size, 1ull << 30);
    EXPECT_FALSE(d.o.null_read_zeroes);
}

TEST(BlockOptions, BlockdevJson)
{
    Parsed p;
    Blockdev(p, R"({"driver":"file","node-name":"d","filename":"f.img",
                    "cache":{"direct":true,"no-flush":false},
                    "read-only":false,"aio":"io_uring","discard":"unmap"})");
    ASSERT_EQ(p.r, 0) << p.msg();
    EXPECT_STREQ(p.o.filename, "f.img");
    EXPECT_TRUE(p.o.cache_direct);
    EXPECT_EQ(p.o.aio, BLOCK_AIO_IO_URING);
    EXPECT_EQ(p.o.discard, BLOCK_DISCARD_UNMAP);

    Parsed n;
    Blockdev(n, R"({"driver":"null-co","node-name":"n","size":1048576,
                    "latency-ns":100,"read-zeroes":true})");
    ASSERT_EQ(n.r, 0) << n.msg();
    EXPECT_EQ(n.o.null_size, 1048576u);
    EXPECT_EQ(n.o.null_latency_ns, 100u);
    EXPECT_TRUE(n.o.null_read_zeroes);

    Parsed bad;
    Blockdev(bad, R"({"driver":"file","node-name":"d","filename":"f",
                      "bogus":1})");
    EXPECT_EQ(bad.r, -EINVAL);
    EXPECT_NE(bad.msg().find("'bogus'"), std::string::npos) << bad.msg();

    Parsed broken;
    Blockdev(broken, R"({"driver":)");
    EXPECT_EQ(broken.r, -EINVAL);
    EXPECT_NE(broken.msg().find("invalid JSON"), std::string::npos);
}

TEST(BlockOptions, BlockdevErrors)
{
    struct {
        const char *arg;
        const char *want;
    } cases[] = {
        { "node-name=x,filename=f", "'driver' is missing" },
        { "driver=qcow2,node-name=x", "not supported yet" },
        { "driver=raw,node-name=x,file=f", "not supported yet" },
        { "driver=vvfat,node-name=x", "unknown driver 'vvfat'" },
        { "driver=file,node-name=x", "'filename' is missing" },
        { "driver=file,filename=f", "'node-name' is missing" },
        { "driver=file,node-name=x,filename=f,read-zeroes=on",
          "unknown parameter 'read-zeroes'" },
        { "driver=file,node-name=x,filename=f,cache=none",
          "unknown parameter 'cache'" },
        { "driver=null-co,node-name=x,size=1000", "multiple of 512" },
        { "driver=null-co,node-name=x,latency-ns=-1", "'latency-ns'" },
        { "driver=file,node-name=x,filename=f,cache.direct=2",
          "'cache.direct'" },
    };
    for (auto &c : cases) {
        Parsed p;
        Blockdev(p, c.arg);
        EXPECT_LT(p.r, 0) << c.arg;
        EXPECT_NE(p.msg().find(c.want), std::string::npos)
            << c.arg << " -> " << p.msg();
    }
}

} // namespace
