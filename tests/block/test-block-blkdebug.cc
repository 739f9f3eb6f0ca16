// blkdebug: options (inline, JSON, config file), and each iotype / errno /
// every-Nth / sector range / once combination over a null-co image and a
// real file, with exact per-request results.
#include "block-test-util.h"
#include "shardvm/rcu.h"

#include <fstream>
#include <map>
#include <sys/uio.h>

using namespace blocktest;

namespace {

// Results per request id, in completion order.
struct Results {
    std::map<int, int> ret;
    std::vector<int> order;
    struct Tag {
        Results *r;
        int id;
    };
    std::vector<Tag> tags;
    Results() : tags(1024)
    {
        for (int i = 0; i < 1024; i++) {
            tags[i] = { this, i };
        }
    }
    void *Op(int id) { return &tags[id]; }
    static void Cb(void *opaque, int ret)
    {
        Tag *t = static_cast<Tag *>(opaque);
        EXPECT_EQ(t->r->ret.count(t->id), 0u) << "completed twice: " << t->id;
        t->r->ret[t->id] = ret;
        t->r->order.push_back(t->id);
    }
};

enum Io { R, W, F, D, Z };

class Blkdebug : public ::testing::Test {
protected:
    AioContext *ctx = nullptr;
    BlockBackend *base = nullptr, *node = nullptr;
    BlockQueue *q = nullptr;
    std::vector<uint8_t> buf = std::vector<uint8_t>(4096, 0x5a);
    struct iovec iov = { buf.data(), 512 };

    void SetUp() override
    {
        shardvm_rcu_init();
        ctx = aio_context_new(nullptr);
        ASSERT_NE(ctx, nullptr);
    }
    void TearDown() override
    {
        if (q) {
            blk_queue_drain(q);
            blk_queue_free(q);
        }
        blk_unref(node);
        blk_unref(base);
        aio_context_unref(ctx);
    }

    // Open @base_spec (-blockdev) and a blkdebug node "e0" over it with
    // @rules appended to "driver=blkdebug,node-name=e0,image=base0".
    void Open(const std::string &rules,
              const std::string &base_spec =
                  "driver=null-co,node-name=base0,size=1M,read-zeroes=on")
    {
        BlockOptions bo{}, eo{};
        GError *err = nullptr;
        ASSERT_EQ(block_parse_blockdev(base_spec.c_str(), &bo, &err), 0)
            << err->message;
        base = blk_open(&bo, &err);
        ASSERT_NE(base, nullptr) << err->message;
        std::string spec = "driver=blkdebug,node-name=e0,image=base0" +
                           (rules.empty() ? "" : "," + rules);
        ASSERT_EQ(block_parse_blockdev(spec.c_str(), &eo, &err), 0)
            << err->message;
        node = blk_open_blkdebug(&eo, base, &err);
        ASSERT_NE(node, nullptr) << err->message;
        block_options_clear(&bo);
        block_options_clear(&eo);
        q = blk_queue_new(node, ctx, &err);
        ASSERT_NE(q, nullptr);
    }

    int Submit(Io io, uint64_t sector, Results &res, int id,
               uint64_t sectors = 1)
    {
        iov.iov_len = sectors * 512;
        switch (io) {
        case R:
            return blk_queue_preadv(q, sector * 512, &iov, 1, Results::Cb,
                                    res.Op(id));
        case W:
            return blk_queue_pwritev(q, sector * 512, &iov, 1, Results::Cb,
                                     res.Op(id));
        case F:
            return blk_queue_flush(q, Results::Cb, res.Op(id));
        case D:
            return blk_queue_discard(q, sector * 512, sectors * 512,
                                     Results::Cb, res.Op(id));
        default:
            return blk_queue_write_zeroes(q, sector * 512, sectors * 512,
                                          false, Results::Cb, res.Op(id));
        }
    }

    // One request, waited for: its result.
    int Do(Io io, uint64_t sector = 0, uint64_t sectors = 1)
    {
        Results res;
        EXPECT_EQ(Submit(io, sector, res, 0, sectors), 0);
        EXPECT_EQ(res.ret.size(), 0u) << "completed inside submit";
        blk_queue_drain(q);
        EXPECT_EQ(res.ret.size(), 1u);
        return res.ret[0];
    }

    void Reset()
    {
        blk_queue_drain(q);
        blk_queue_free(q);
        q = nullptr;
        blk_unref(node);
        node = nullptr;
        blk_unref(base);
        base = nullptr;
    }
};

const char *const kIoNames[] = { "read", "write", "flush", "discard",
                                  "write-zeroes" };

TEST_F(Blkdebug, EachIotypeAndErrno)
{
    for (int t = R; t <= Z; t++) {
        for (int e : { EIO, ENOSPC, EPERM, EROFS }) {
            std::string rules = std::string("inject-error.0.iotype=") +
                                kIoNames[t] + ",inject-error.0.errno=" +
                                std::to_string(e);
            Open(rules);
            for (int u = R; u <= Z; u++) {
                EXPECT_EQ(Do((Io)u, 4), u == t ? -e : 0)
                    << "rule " << kIoNames[t] << " errno " << e << ", io "
                    << kIoNames[u];
            }
            BlockStats st;
            blk_get_stats(node, &st);
            EXPECT_EQ(st.failed_ops, 1u);
            Reset();
        }
    }
}

// blk_set_write_cache() switches write-through at run time (what a
// guest's CONFIG_WCE write does): with the cache off each write and
// write-zeroes is followed by a flush, so a flush error fails it; back on,
// writes do not flush (mutation audit, issue 14.6: backend.c's setter).
TEST_F(Blkdebug, WriteCacheOffAddsAFlushToEachWrite)
{
    Open("inject-error.0.iotype=flush,inject-error.0.errno=28");
    ASSERT_TRUE(blk_get_write_cache(node));
    EXPECT_EQ(Do(W, 4), 0) << "write-back: no flush after the write";
    blk_set_write_cache(node, false);
    EXPECT_FALSE(blk_get_write_cache(node));
    EXPECT_EQ(Do(W, 4), -ENOSPC) << "write-through: the flush after it failed";
    EXPECT_EQ(Do(Z, 4), -ENOSPC) << "write-zeroes too";
    EXPECT_EQ(Do(R, 4), 0) << "reads never flush";
    blk_set_write_cache(node, true);
    EXPECT_TRUE(blk_get_write_cache(node));
    EXPECT_EQ(Do(W, 4), 0);
}

// The node under a blkdebug layer holds its own reference: dropping the
// layer (blockdev-del e0) leaves the image open and usable (mutation
// audit, issue 14.6: blk_open_blkdebug's blk_ref of the image).
TEST_F(Blkdebug, ImageOutlivesTheLayerOverIt)
{
    Image img(1 << 20);
    Open("inject-error.0.iotype=read",
         "driver=file,node-name=base0,filename=" + img.path);
    EXPECT_EQ(Do(W, 4), 0);
    EXPECT_EQ(Do(R, 4), -EIO);
    blk_queue_drain(q);
    blk_queue_free(q);
    q = nullptr;
    blk_unref(node);
    node = nullptr;
    GError *err = nullptr;
    q = blk_queue_new(base, ctx, &err);
    ASSERT_NE(q, nullptr) << err->message;
    std::fill(buf.begin(), buf.end(), 0);
    EXPECT_EQ(Do(R, 4), 0) << "the image was closed with the layer";
    EXPECT_EQ(buf[0], 0x5a);
    EXPECT_EQ(buf[511], 0x5a);
    std::fill(buf.begin(), buf.end(), 0x6b);
    EXPECT_EQ(Do(W, 5), 0);
    EXPECT_EQ(img.Read(5 * 512, 512), std::vector<uint8_t>(512, 0x6b));
}

TEST_F(Blkdebug, DefaultsFailEveryRequestWithEio)
{
    Open("inject-error.0.errno=5");
    for (int u = R; u <= Z; u++) {
        EXPECT_EQ(Do((Io)u, 1), -EIO) << kIoNames[u];
    }
}

TEST_F(Blkdebug, EveryNth)
{
    Open("inject-error.0.iotype=write,inject-error.0.every=3,"
         "inject-error.0.errno=28");
    Results res;
    for (int i = 0; i < 10; i++) {
        ASSERT_EQ(Submit(W, i, res, i), 0);
        ASSERT_EQ(Submit(R, i, res, 100 + i), 0); // not counted
    }
    blk_queue_drain(q);
    ASSERT_EQ(res.ret.size(), 20u);
    for (int i = 0; i < 10; i++) {
        EXPECT_EQ(res.ret[i], (i + 1) % 3 == 0 ? -ENOSPC : 0) << i;
        EXPECT_EQ(res.ret[100 + i], 0);
    }
}

TEST_F(Blkdebug, SectorRange)
{
    Open("inject-error.0.sector=8,inject-error.0.sector-count=8");
    for (int s = 0; s < 24; s++) {
        EXPECT_EQ(Do(W, s), s >= 8 && s < 16 ? -EIO : 0) << s;
        EXPECT_EQ(Do(R, s), s >= 8 && s < 16 ? -EIO : 0) << s;
    }
    // overlapping at either end; flushes have no sector: never matched
    EXPECT_EQ(Do(W, 6, 3), -EIO);
    EXPECT_EQ(Do(W, 15, 4), -EIO);
    EXPECT_EQ(Do(W, 4, 4), 0);
    EXPECT_EQ(Do(Z, 0, 64), -EIO);
    EXPECT_EQ(Do(F), 0);
}

TEST_F(Blkdebug, QemuSingleSector)
{
    // QEMU's sector: one sector (sector-count defaults to 1)
    Open("inject-error.0.sector=100");
    EXPECT_EQ(Do(R, 99), 0);
    EXPECT_EQ(Do(R, 100), -EIO);
    EXPECT_EQ(Do(R, 101), 0);
    EXPECT_EQ(Do(R, 96, 8), -EIO);
}

TEST_F(Blkdebug, OnceThenPassesThrough)
{
    Open("inject-error.0.iotype=flush,inject-error.0.once=on");
    EXPECT_EQ(Do(F), -EIO);
    for (int i = 0; i < 5; i++) {
        EXPECT_EQ(Do(F), 0);
    }
}

TEST_F(Blkdebug, OnceWithEveryFiresOnTheNth)
{
    Open("inject-error.0.iotype=read,inject-error.0.every=4,"
         "inject-error.0.once=on,inject-error.0.errno=61");
    Results res;
    for (int i = 0; i < 12; i++) {
        ASSERT_EQ(Submit(R, i, res, i), 0);
    }
    blk_queue_drain(q);
    for (int i = 0; i < 12; i++) {
        EXPECT_EQ(res.ret[i], i == 3 ? -ENODATA : 0) << i;
    }
}

TEST_F(Blkdebug, FirstRuleThatFiresWins)
{
    Open("inject-error.0.iotype=write,inject-error.0.sector=0,"
         "inject-error.0.errno=28,inject-error.0.once=on,"
         "inject-error.1.iotype=write,inject-error.1.errno=5");
    EXPECT_EQ(Do(W, 0), -ENOSPC);
    EXPECT_EQ(Do(W, 0), -EIO);
    EXPECT_EQ(Do(R, 0), 0);
}

TEST_F(Blkdebug, QemuEventNames)
{
    Open("inject-error.0.event=write_aio,inject-error.0.once=on,"
         "inject-error.0.immediately=on");
    EXPECT_EQ(Do(R), 0);
    EXPECT_EQ(Do(W), -EIO);
    EXPECT_EQ(Do(W), 0);
}

TEST_F(Blkdebug, QemuDeviceLevelEventNames)
{
    Open("inject-error.0.event=pwritev_zero,inject-error.1.event=preadv,"
         "inject-error.1.errno=28,inject-error.2.event=pwritev,"
         "inject-error.2.iotype=write,inject-error.2.errno=1");
    EXPECT_EQ(Do(Z, 0, 8), -EIO);
    EXPECT_EQ(Do(R), -ENOSPC);
    EXPECT_EQ(Do(W), -EPERM);
    EXPECT_EQ(Do(F), 0);
    EXPECT_EQ(Do(D), 0);
}

// Deterministic: the same requests fail on every run.
TEST_F(Blkdebug, Deterministic)
{
    std::vector<int> first;
    for (int run = 0; run < 3; run++) {
        Open("inject-error.0.every=7,inject-error.1.sector=30,"
             "inject-error.1.sector-count=3,inject-error.1.every=2");
        Results res;
        for (int i = 0; i < 64; i++) {
            ASSERT_EQ(Submit((Io)(i % 2), i, res, i), 0);
        }
        blk_queue_drain(q);
        std::vector<int> got;
        for (int i = 0; i < 64; i++) {
            got.push_back(res.ret[i]);
        }
        if (run == 0) {
            first = got;
        }
        EXPECT_EQ(got, first);
        Reset();
    }
    int fails = 0;
    for (int r : first) {
        fails += r < 0;
    }
    // every 7th of 64 (9), plus the 2nd request of sectors 30..32 that
    // rule 0 let through (31)
    EXPECT_EQ(fails, 10);
}

// Over a real file: what passes reaches the file, a failed write does not.
TEST_F(Blkdebug, PassesDataToTheImage)
{
    Image img(1 << 20);
    Open("inject-error.0.iotype=write,inject-error.0.sector=2",
         "driver=file,node-name=base0,filename=" + img.path);
    std::vector<uint8_t> data = Pattern(512, 7);
    memcpy(buf.data(), data.data(), 512);
    EXPECT_EQ(Do(W, 1), 0);
    EXPECT_EQ(Do(W, 2), -EIO);
    EXPECT_EQ(img.Read(512, 512), data);
    EXPECT_EQ(img.Read(1024, 512), std::vector<uint8_t>(512, 0));
    memset(buf.data(), 0, 512);
    EXPECT_EQ(Do(R, 1), 0);
    EXPECT_EQ(memcmp(buf.data(), data.data(), 512), 0);
    EXPECT_EQ(Do(F), 0);
    EXPECT_EQ(blk_get_size(node), 1u << 20);
    EXPECT_EQ(blk_get_image(node), base);
}

TEST_F(Blkdebug, PlugPassesDown)
{
    Open("inject-error.0.iotype=write,inject-error.0.every=2");
    Results res;
    blk_queue_plug(q);
    for (int i = 0; i < 8; i++) {
        ASSERT_EQ(Submit(W, i, res, i), 0);
    }
    blk_queue_unplug(q);
    blk_queue_drain(q);
    ASSERT_EQ(res.ret.size(), 8u);
    for (int i = 0; i < 8; i++) {
        EXPECT_EQ(res.ret[i], i % 2 ? -EIO : 0);
    }
}

TEST_F(Blkdebug, ConfigFile)
{
    std::string path = ImageDir().empty() ? "/tmp" : ImageDir();
    path += "/blkdebug-test.conf";
    {
        std::ofstream f(path);
        f << "# QEMU's format\n[inject-error]\nevent = \"read_aio\"\n"
             "errno = \"28\"\nsector = \"5\"\nonce = \"on\"\n\n"
             "[inject-error]\niotype = \"flush\"\n";
    }
    Open("config=" + path + ",inject-error.0.iotype=discard");
    EXPECT_EQ(Do(D, 0), -EIO);  // the inline rule first
    EXPECT_EQ(Do(R, 5), -ENOSPC);
    EXPECT_EQ(Do(R, 5), 0);
    EXPECT_EQ(Do(F), -EIO);
    EXPECT_EQ(Do(W, 5), 0);
    Reset();

    {
        std::ofstream f(path);
        f << "[set-state]\nstate = \"1\"\n";
    }
    BlockOptions bo{}, eo{};
    GError *err = nullptr;
    ASSERT_EQ(block_parse_blockdev("driver=null-co,node-name=base0", &bo,
                                   nullptr), 0);
    base = blk_open(&bo, nullptr);
    std::string spec = "driver=blkdebug,node-name=e0,image=base0,config=" +
                       path;
    ASSERT_EQ(block_parse_blockdev(spec.c_str(), &eo, nullptr), 0);
    EXPECT_EQ(blk_open_blkdebug(&eo, base, &err), nullptr);
    ASSERT_NE(err, nullptr);
    EXPECT_NE(strstr(err->message, "set-state"), nullptr) << err->message;
    g_clear_error(&err);
    unlink(path.c_str());
    EXPECT_EQ(blk_open_blkdebug(&eo, base, &err), nullptr);
    EXPECT_NE(strstr(err->message, "blkdebug-test.conf"), nullptr)
        << err->message;
    g_clear_error(&err);
    block_options_clear(&bo);
    block_options_clear(&eo);
}

TEST_F(Blkdebug, ImageInUseAndBlkOpen)
{
    Open("");
    BlockOptions eo{};
    GError *err = nullptr;
    ASSERT_EQ(block_parse_blockdev("driver=blkdebug,node-name=e1,image=base0",
                                   &eo, nullptr), 0);
    EXPECT_EQ(blk_open(&eo, &err), nullptr); // needs its image
    g_clear_error(&err);
    EXPECT_EQ(blk_open_blkdebug(&eo, base, &err), nullptr); // taken by e0
    ASSERT_NE(err, nullptr);
    EXPECT_EQ(err->code, EBUSY);
    g_clear_error(&err);
    int dev;
    EXPECT_LT(blk_attach_dev(base, &dev, nullptr), 0);
    block_options_clear(&eo);
}

TEST_F(Blkdebug, ParseForms)
{
    BlockOptions o{};
    GError *err = nullptr;
    ASSERT_EQ(block_parse_blockdev(
                  "{\"driver\":\"blkdebug\",\"node-name\":\"e0\","
                  "\"image\":\"base0\",\"inject-error\":[{\"iotype\":"
                  "\"write\",\"errno\":28,\"sector\":-1},{\"iotype\":"
                  "\"read\",\"once\":true,\"every\":2}]}", &o, &err), 0)
        << err->message;
    EXPECT_EQ(o.driver, BLOCK_DRIVER_BLKDEBUG);
    EXPECT_STREQ(o.image, "base0");
    ASSERT_EQ(o.nr_inject, 2u);
    EXPECT_EQ(o.inject[0].iotypes, (unsigned)BLKDEBUG_IO_WRITE);
    EXPECT_EQ(o.inject[0].error, ENOSPC);
    EXPECT_EQ(o.inject[0].sector, -1);
    EXPECT_EQ(o.inject[1].iotypes, (unsigned)BLKDEBUG_IO_READ);
    EXPECT_TRUE(o.inject[1].once);
    EXPECT_EQ(o.inject[1].every, 2u);
    EXPECT_EQ(o.inject[1].error, EIO);
    BlockOptions c{};
    block_options_copy(&c, &o);
    EXPECT_EQ(c.inject[1].every, 2u);
    EXPECT_NE(c.inject, o.inject);
    block_options_clear(&c);
    block_options_clear(&o);

    // -drive, with werror/rerror
    ASSERT_EQ(block_parse_drive("driver=blkdebug,id=d0,image=base0,"
                                "inject-error.0.iotype=write-zeroes,"
                                "werror=stop,rerror=ignore", &o, &err), 0)
        << err->message;
    EXPECT_EQ(o.inject[0].iotypes, (unsigned)BLKDEBUG_IO_WRITE_ZEROES);
    EXPECT_EQ(o.werror, BLOCK_ERROR_POLICY_STOP);
    EXPECT_EQ(o.rerror, BLOCK_ERROR_POLICY_IGNORE);
    block_options_clear(&o);
    ASSERT_EQ(block_parse_drive("file=x.img", &o, nullptr), 0);
    EXPECT_EQ(o.werror, BLOCK_ERROR_POLICY_ENOSPC);
    EXPECT_EQ(o.rerror, BLOCK_ERROR_POLICY_REPORT);
    block_options_clear(&o);

    struct {
        const char *spec;
        const char *msg;
    } bad[] = {
        { "driver=blkdebug,node-name=e0", "image=NODE" },
        { "driver=blkdebug,node-name=e0,image=b,inject-error.0.iotype=x",
          "iotype 'x'" },
        { "driver=blkdebug,node-name=e0,image=b,"
          "inject-error.0.iotype=block-status", "block-status" },
        { "driver=blkdebug,node-name=e0,image=b,inject-error.0.errno=0",
          "errno" },
        { "driver=blkdebug,node-name=e0,image=b,inject-error.0.every=0",
          "every" },
        { "driver=blkdebug,node-name=e0,image=b,inject-error.0.state=1",
          "state" },
        { "driver=blkdebug,node-name=e0,image=b,inject-error.0.event=cor_write",
          "cor_write" },
        { "driver=blkdebug,node-name=e0,image=b,inject-error.0.bogus=1",
          "bogus" },
        { "driver=blkdebug,node-name=e0,image=b,inject-error.1.errno=5",
          "inject-error.1.errno" },
        { "driver=blkdebug,node-name=e0,image=b,set-state.0.event=x",
          "set-state" },
        { "driver=null-co,node-name=n,werror=stop", "werror" },
    };
    for (auto &b : bad) {
        EXPECT_LT(block_parse_blockdev(b.spec, &o, &err), 0) << b.spec;
        ASSERT_NE(err, nullptr) << b.spec;
        EXPECT_NE(strstr(err->message, b.msg), nullptr)
            << b.spec << ": " << err->message;
        g_clear_error(&err);
    }
    EXPECT_LT(block_parse_drive("file=x,werror=auto", &o, &err), 0);
    g_clear_error(&err);
    EXPECT_LT(block_parse_drive("file=x,rerror=bogus", &o, &err), 0);
    g_clear_error(&err);
}

TEST(BlockErrorPolicy, Actions)
{
    BlockErrorPolicy p;
    EXPECT_EQ(block_error_policy_parse("auto", false, &p), -EINVAL);
    ASSERT_EQ(block_error_policy_parse("auto", true, &p), 0);
    EXPECT_EQ(p, BLOCK_ERROR_POLICY_AUTO);
    ASSERT_EQ(block_error_policy_parse("enospc", false, &p), 0);
    EXPECT_EQ(block_error_action(p, -ENOSPC), BLOCK_ERROR_ACTION_STOP);
    EXPECT_EQ(block_error_action(p, -EIO), BLOCK_ERROR_ACTION_REPORT);
    EXPECT_EQ(block_error_action(BLOCK_ERROR_POLICY_STOP, -EIO),
              BLOCK_ERROR_ACTION_STOP);
    EXPECT_EQ(block_error_action(BLOCK_ERROR_POLICY_IGNORE, -ENOSPC),
              BLOCK_ERROR_ACTION_IGNORE);
    EXPECT_EQ(block_error_action(BLOCK_ERROR_POLICY_REPORT, -ENOSPC),
              BLOCK_ERROR_ACTION_REPORT);
    EXPECT_STREQ(block_error_action_name(BLOCK_ERROR_ACTION_STOP), "stop");
    EXPECT_STREQ(block_error_policy_name(BLOCK_ERROR_POLICY_ENOSPC), "enospc");
}

// Every policy name parses to its value and prints back the same way;
// "auto" only where allowed; anything else (a prefix, another case, an
// out-of-range value) is refused or printed as "?" (mutation audit,
// issue 14.6: error-policy.c's bounds and start index).
TEST(BlockErrorPolicy, EveryNameRoundTripsAndNothingElseParses)
{
    const struct {
        const char *name;
        BlockErrorPolicy p;
    } all[] = {
        {"report", BLOCK_ERROR_POLICY_REPORT},
        {"ignore", BLOCK_ERROR_POLICY_IGNORE},
        {"enospc", BLOCK_ERROR_POLICY_ENOSPC},
        {"stop", BLOCK_ERROR_POLICY_STOP},
    };
    for (const auto &e : all) {
        for (bool allow_auto : {false, true}) {
            BlockErrorPolicy p = BLOCK_ERROR_POLICY_AUTO;
            ASSERT_EQ(block_error_policy_parse(e.name, allow_auto, &p), 0)
                << e.name << " allow_auto=" << allow_auto;
            EXPECT_EQ(p, e.p) << e.name;
        }
        EXPECT_STREQ(block_error_policy_name(e.p), e.name);
    }
    EXPECT_STREQ(block_error_policy_name(BLOCK_ERROR_POLICY_AUTO), "auto");
    for (const char *bad : {"", "Stop", "stop ", "rep", "reports", "?"}) {
        BlockErrorPolicy p = BLOCK_ERROR_POLICY_STOP;
        EXPECT_EQ(block_error_policy_parse(bad, true, &p), -EINVAL) << bad;
        EXPECT_EQ(p, BLOCK_ERROR_POLICY_STOP) << "untouched on failure";
    }
    EXPECT_STREQ(block_error_policy_name((BlockErrorPolicy)(BLOCK_ERROR_POLICY_STOP + 1)), "?");
    EXPECT_STREQ(block_error_action_name(BLOCK_ERROR_ACTION_IGNORE), "ignore");
    EXPECT_STREQ(block_error_action_name(BLOCK_ERROR_ACTION_REPORT), "report");
}

} // namespace

namespace {

// Attack: blkdebug over blkdebug (e1 over e0 over base0): both layers'
// rules apply, the inner one's for what the outer passes down; a failure
// of the inner layer reaches the outer caller once; the data path
// through two layers stays intact; the range edge behaves per layer.
TEST_F(Blkdebug, NestedNodesApplyBothLayers)
{
    Open("inject-error.0.iotype=write,inject-error.0.sector=0");
    BlockOptions eo{};
    GError *err = nullptr;
    ASSERT_EQ(block_parse_blockdev("driver=blkdebug,node-name=e1,image=e0,"
                                   "inject-error.0.iotype=read,"
                                   "inject-error.0.errno=61,"
                                   "inject-error.0.every=2", &eo, &err), 0)
        << err->message;
    // The queue of e0 goes: e1 is layered over e0 and owns it now.
    blk_queue_drain(q);
    blk_queue_free(q);
    q = nullptr;
    BlockBackend *outer = blk_open_blkdebug(&eo, node, &err);
    block_options_clear(&eo);
    ASSERT_NE(outer, nullptr) << err->message;
    q = blk_queue_new(outer, ctx, &err);
    ASSERT_NE(q, nullptr) << err->message;
    EXPECT_EQ(Do(W, 0), -EIO);       // inner rule
    EXPECT_EQ(Do(W, 1), 0);
    EXPECT_EQ(Do(R, 0), 0);          // outer rule: 1st read passes
    EXPECT_EQ(Do(R, 0), -ENODATA);   // 2nd fails
    EXPECT_EQ(Do(F), 0);
    BlockStats so, si;
    blk_get_stats(outer, &so);
    blk_get_stats(node, &si);
    EXPECT_EQ(so.failed_ops, 2u);
    EXPECT_EQ(si.failed_ops, 1u);
    EXPECT_EQ(si.rd_ops, 1u) << "the failed read reached the inner node";
    blk_queue_drain(q);
    blk_queue_free(q);
    q = nullptr;
    blk_unref(outer);
}

// Attack: a config file with odd but valid content (CRLF, blanks, quotes,
// comments, no final newline) and broken content (key before a section,
// a line without '=', an out-of-range number): a clear error naming the
// line, nothing half-loaded crashes.
TEST_F(Blkdebug, ConfigFileOddAndBrokenContent)
{
    std::string path = ImageDir().empty() ? "/tmp" : ImageDir();
    path += "/blkdebug-attack.conf";
    auto load = [&](const std::string &text, GError **e) {
        {
            std::ofstream f(path, std::ios::binary);
            f << text;
        }
        BlockOptions eo{};
        std::string spec = "driver=blkdebug,node-name=e9,image=base0,"
                           "config=" + path;
        EXPECT_EQ(block_parse_blockdev(spec.c_str(), &eo, nullptr), 0);
        BlockBackend *b = blk_open_blkdebug(&eo, base, e);
        block_options_clear(&eo);
        if (!b) {
            return -1;
        }
        blk_unref(b);
        return 0;
    };
    Open("");
    blk_queue_drain(q);
    blk_queue_free(q);
    q = nullptr;
    blk_unref(node); // base0 free for the nodes opened here
    node = nullptr;
    GError *err = nullptr;
    EXPECT_EQ(load("\r\n  [inject-error]  \r\n\terrno = \"28\"\r\n"
                   "; comment\r\n[inject-error]\r\nsector=7", &err), 0)
        << (err ? err->message : "");
    g_clear_error(&err);
    EXPECT_EQ(load("", &err), 0);
    struct {
        const char *text;
        const char *msg;
    } bad[] = {
        { "errno = 5\n", ":1:" },
        { "[inject-error]\nerrno\n", ":2:" },
        { "[inject-error]\nerrno = 4096\n", "errno" },
        { "[inject-error]\nerrno = -5\n", "errno" },
        { "[inject-error]\nsector = 18014398509481984\n", "sector" },
        { "[inject-error]\nevery = 0\n", "every" },
        { "[inject-error]\nsector-count = -1\n", "sector-count" },
        { "[inject-error]\n= 5\n", "''" },
        { "[inject-error\n", "section" },
    };
    for (auto &b : bad) {
        EXPECT_LT(load(b.text, &err), 0) << b.text;
        ASSERT_NE(err, nullptr) << b.text;
        EXPECT_NE(strstr(err->message, b.msg), nullptr)
            << b.text << ": " << err->message;
        g_clear_error(&err);
    }
    unlink(path.c_str());
}

}  // namespace
