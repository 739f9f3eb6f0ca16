// Command-line parser (system/options.c): QEMU spellings, defaults, and an
// error naming the option for every malformed input.
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <vector>

#include "shardvm/block.h"
#include "shardvm/options.h"

namespace {

class Options : public ::testing::Test {
protected:
    void TearDown() override
    {
        options_clear(&o_);
        g_clear_error(&err_);
    }

    int Parse(std::initializer_list<const char *> args)
    {
        std::vector<char *> argv = { const_cast<char *>("shardvm") };
        for (const char *a : args) {
            argv.push_back(const_cast<char *>(a));
        }
        options_clear(&o_);
        g_clear_error(&err_);
        return options_parse((int)argv.size(), argv.data(), &o_, &err_);
    }
    std::string Message() const { return err_ ? err_->message : ""; }

    ShardvmOptions o_ = {};
    GError *err_ = nullptr;
};

TEST_F(Options, Defaults)
{
    ASSERT_EQ(Parse({}), 0);
    EXPECT_EQ(o_.kernel, nullptr);
    EXPECT_EQ(o_.ram_size, 128ull << 20);
    EXPECT_EQ(o_.cpus, 1u);
    EXPECT_EQ(o_.serial, CHARDEV_STDIO);
    EXPECT_FALSE(o_.debug_exit);
    EXPECT_EQ(o_.iothreads->len, 0u);
    EXPECT_STREQ(o_.cpu_model, "host");
}

TEST_F(Options, QemuCommandLineOfTheDemo)
{
    ASSERT_EQ(Parse({ "-enable-kvm", "-cpu", "qemu64", "-m", "256M",
                      "-nographic", "-no-reboot", "-display", "none",
                      "-kernel", "guest.elf", "-append", "exit=3 x=y",
                      "-initrd", "m1 a,m2", "-device",
                      "isa-debug-exit,iobase=0xf4,iosize=0x04", "-smp", "2",
                      "-name", "vm0", "-accel", "kvm" }),
              0) << Message();
    EXPECT_STREQ(o_.kernel, "guest.elf");
    EXPECT_STREQ(o_.append, "exit=3 x=y");
    EXPECT_STREQ(o_.initrd, "m1 a,m2");
    EXPECT_EQ(o_.ram_size, 256ull << 20);
    EXPECT_TRUE(o_.nographic);
    EXPECT_TRUE(o_.debug_exit);
    EXPECT_EQ(o_.debug_exit_iobase, 0xf4);
    EXPECT_EQ(o_.debug_exit_iosize, 4);
    EXPECT_EQ(o_.cpus, 2u);
    EXPECT_STREQ(o_.name, "vm0");
    EXPECT_STREQ(o_.cpu_model, "qemu64");
}

TEST_F(Options, DoubleDashSpelling)
{
    ASSERT_EQ(Parse({ "--kernel", "k", "--m", "1G" }), 0) << Message();
    EXPECT_STREQ(o_.kernel, "k");
    EXPECT_EQ(o_.ram_size, 1ull << 30);
}

TEST_F(Options, MemorySizes)
{
    struct { const char *arg; uint64_t bytes; } ok[] = {
        { "256", 256ull << 20 },      { "256M", 256ull << 20 },
        { "256m", 256ull << 20 },     { "1G", 1ull << 30 },
        { "1.5G", 3ull << 29 },       { "size=512M", 512ull << 20 },
        { "4194304K", 4ull << 30 },   { "3145728k", 3ull << 30 },
    };
    for (auto &c : ok) {
        ASSERT_EQ(Parse({ "-m", c.arg }), 0) << c.arg << ": " << Message();
        EXPECT_EQ(o_.ram_size, c.bytes) << c.arg;
    }
}

TEST_F(Options, MemoryErrorsNameTheValue)
{
    EXPECT_EQ(Parse({ "-m", "abc" }), -EINVAL);
    EXPECT_EQ(Message(), "-m: invalid size 'abc'");
    EXPECT_EQ(Parse({ "-m", "12Q" }), -EINVAL);
    EXPECT_EQ(Message(), "-m: invalid size '12Q'");
    EXPECT_EQ(Parse({ "-m", "1" }), -EINVAL); // 1 MiB: too small
    EXPECT_NE(Message().find("out of range"), std::string::npos);
    EXPECT_EQ(Parse({ "-m", "2T" }), -EINVAL);
    EXPECT_EQ(Parse({ "-m", "4097K" }), -EINVAL);
    EXPECT_EQ(Message(), "-m: size '4097K' is not a multiple of 4 KiB");
    EXPECT_EQ(Parse({ "-m", "" }), -EINVAL);
    EXPECT_EQ(Parse({ "-m", "256M,slots=2" }), -EINVAL);
    EXPECT_EQ(Message(), "-m: unknown parameter 'slots'");
}

TEST_F(Options, SizeParser)
{
    uint64_t v;
    EXPECT_EQ(options_parse_size("4096", 1, &v), 0);
    EXPECT_EQ(v, 4096u);
    EXPECT_EQ(options_parse_size("2k", 1, &v), 0);
    EXPECT_EQ(v, 2048u);
    EXPECT_EQ(options_parse_size("10B", 1 << 20, &v), 0);
    EXPECT_EQ(v, 10u);
    EXPECT_EQ(options_parse_size("0.5", 1, &v), -EINVAL); // half a byte
    EXPECT_EQ(options_parse_size("-1", 1, &v), -EINVAL);
    EXPECT_EQ(options_parse_size("1MM", 1, &v), -EINVAL);
    EXPECT_EQ(options_parse_size("99999999999T", 1, &v), -EINVAL);
}

// Issue 8 point 10: exactly what QEMU 7.2 accepts for -m (checked with
// qemu-system-x86_64 -machine none -m X and "info memory_size_summary").
TEST_F(Options, SizeParserMatchesQemu)
{
    const uint64_t MiB = 1 << 20;
    struct { const char *s; uint64_t bytes; } ok[] = {
        { "0x100", 256 * MiB },  { "0X100", 256 * MiB },
        { "0x10M", 16 * MiB },   { "0x2g", 2ull << 30 },
        { "1.5M", 3 * MiB / 2 }, { "0.5M", MiB / 2 },
        { "256.M", 256 * MiB },  { "1.M", MiB },
        { "1.0", MiB },          { "256.0", 256 * MiB },
        { "0256", 256 * MiB },   { "+256", 256 * MiB },
        { " 256", 256 * MiB },   { "256b", 256 },
        { "2K", 2048 },          { "1P", 1ull << 50 },
        { "1.00001M", MiB + 10 }, { "3.", 3 },
    };
    for (auto &c : ok) {
        uint64_t v = 0;
        EXPECT_EQ(options_parse_size(c.s, MiB, &v), 0) << c.s;
        EXPECT_EQ(v, c.bytes) << c.s;
    }
    const char *bad[] = { "1e3", "0x1p30B", "1.5", "0.5", "0x100.5",
                          "256MiB", "256MB", "256 ", "0x", "-1", "-0x100",
                          "00x100", "1.5e3M", ".5G", "", "M", "inf", "nan",
                          "16E", "99999999999999999999" };
    for (const char *b : bad) {
        uint64_t v = 0;
        EXPECT_EQ(options_parse_size(b, MiB, &v), -EINVAL) << "'" << b << "'";
    }
    uint64_t v = 0;
    EXPECT_EQ(options_parse_size("0x1e3M", MiB, &v), 0); // hex, not 1e3
    EXPECT_EQ(v, 0x1e3 * MiB);
}

TEST_F(Options, Smp)
{
    ASSERT_EQ(Parse({ "-smp", "4" }), 0);
    EXPECT_EQ(o_.cpus, 4u);
    ASSERT_EQ(Parse({ "-smp", "cpus=2" }), 0);
    EXPECT_EQ(o_.cpus, 2u);
    ASSERT_EQ(Parse({ "-smp", "sockets=1,cores=2,threads=2" }), 0);
    EXPECT_EQ(o_.cpus, 4u);
    ASSERT_EQ(Parse({ "-smp", "2,maxcpus=2" }), 0);
    EXPECT_EQ(Parse({ "-smp", "2,maxcpus=4" }), -EINVAL);
    EXPECT_NE(Message().find("hotplug"), std::string::npos);
    EXPECT_EQ(Parse({ "-smp", "0" }), -EINVAL);
    EXPECT_EQ(Message(), "-smp: invalid cpus '0' (expected 1..64)");
    EXPECT_EQ(Parse({ "-smp", "two" }), -EINVAL);
    EXPECT_EQ(Parse({ "-smp", "2,dies=1" }), -EINVAL);
    EXPECT_EQ(Message(), "-smp: unknown parameter 'dies'");
}

TEST_F(Options, SmpLimitAndTopologyMustMatch)
{
    EXPECT_EQ(Parse({ "-smp", "256" }), -EINVAL);
    EXPECT_EQ(Message(), "-smp: invalid cpus '256' (expected 1..64)");
    EXPECT_EQ(Parse({ "-smp", "65" }), -EINVAL);
    ASSERT_EQ(Parse({ "-smp", "64" }), 0) << Message();
    // A topology that holds more (or fewer) CPUs than asked for would
    // need hotplug: docs/usage.md says maxcpus must equal the count.
    EXPECT_EQ(Parse({ "-smp", "cpus=2,sockets=4" }), -EINVAL);
    EXPECT_NE(Message().find("must equal the 2 CPUs"), std::string::npos)
        << Message();
    EXPECT_EQ(Parse({ "-smp", "4,sockets=1,cores=2" }), -EINVAL);
    ASSERT_EQ(Parse({ "-smp", "4,sockets=2,cores=2" }), 0) << Message();
    EXPECT_EQ(o_.cpus, 4u);
    ASSERT_EQ(Parse({ "-smp", "maxcpus=2,sockets=2" }), 0) << Message();
    EXPECT_EQ(o_.cpus, 2u);
}

TEST_F(Options, AccelSuboptionsAreChecked)
{
    ASSERT_EQ(Parse({ "-accel", "kvm" }), 0) << Message();
    ASSERT_EQ(Parse({ "-accel", "kvm,kernel-irqchip=on" }), 0) << Message();
    ASSERT_EQ(Parse({ "-accel", "accel=kvm" }), 0) << Message();
    EXPECT_EQ(Parse({ "-accel", "kvm,bogus=1" }), -EINVAL);
    EXPECT_EQ(Message(), "-accel: unknown parameter 'bogus'");
    EXPECT_EQ(Parse({ "-accel", "kvm,kernel-irqchip=off" }), -EINVAL);
    EXPECT_NE(Message().find("kernel-irqchip=off"), std::string::npos);
    EXPECT_EQ(Parse({ "-accel", "kvm,kernel-irqchip=split" }), -EINVAL);
    EXPECT_EQ(Parse({ "-accel", "tcg" }), -EINVAL);
}

TEST_F(Options, Serial)
{
    ASSERT_EQ(Parse({ "-serial", "file:/tmp/out.txt" }), 0);
    EXPECT_EQ(o_.serial, CHARDEV_FILE);
    EXPECT_STREQ(o_.serial_path, "/tmp/out.txt");
    ASSERT_EQ(Parse({ "-serial", "none" }), 0);
    EXPECT_EQ(o_.serial, CHARDEV_NONE);
    ASSERT_EQ(Parse({ "-serial", "null" }), 0);
    EXPECT_EQ(o_.serial, CHARDEV_NULL);
    ASSERT_EQ(Parse({ "-serial", "mon:stdio" }), 0);
    EXPECT_EQ(o_.serial, CHARDEV_STDIO);
    // -nographic does not override an explicit -serial.
    ASSERT_EQ(Parse({ "-serial", "none", "-nographic" }), 0);
    EXPECT_EQ(o_.serial, CHARDEV_NONE);
    EXPECT_EQ(Parse({ "-serial", "tcp::4444" }), -EINVAL);
    EXPECT_NE(Message().find("-serial: unsupported character device "
                             "'tcp::4444'"), std::string::npos);
    EXPECT_EQ(Parse({ "-serial", "file:" }), -EINVAL);
    EXPECT_EQ(Parse({ "-serial", "stdio", "-serial", "null" }), -EINVAL);
    EXPECT_EQ(Message(), "-serial: only one serial port is supported");
}

TEST_F(Options, DebugExitDevice)
{
    ASSERT_EQ(Parse({ "-device", "isa-debug-exit" }), 0);
    EXPECT_EQ(o_.debug_exit_iobase, 0x501); // QEMU's defaults
    EXPECT_EQ(o_.debug_exit_iosize, 2);
    ASSERT_EQ(Parse({ "-device", "driver=isa-debug-exit,iobase=244" }), 0);
    EXPECT_EQ(o_.debug_exit_iobase, 244);
    EXPECT_EQ(Parse({ "-device", "isa-debug-exit,iobase=0x1ffff" }),
              -EINVAL);
    EXPECT_NE(Message().find("-device: invalid iobase '0x1ffff'"),
              std::string::npos) << Message();
    EXPECT_EQ(Parse({ "-device", "isa-debug-exit,iosize=8" }), -EINVAL);
    EXPECT_EQ(Parse({ "-device", "isa-debug-exit,foo=1" }), -EINVAL);
    EXPECT_EQ(Message(), "-device: unknown parameter 'foo'");
    EXPECT_EQ(Parse({ "-device", "e1000,netdev=n0" }), -EINVAL);
    EXPECT_NE(Message().find("unsupported device 'e1000'"),
              std::string::npos);
    // PCI devices are kept for their constructors (tests/pci/test-device).
    ASSERT_EQ(Parse({ "-device", "virtio-blk-pci,drive=d0" }), 0);
    EXPECT_EQ(o_.devices->len, 1u);
}

TEST_F(Options, IOThreadObjects)
{
    ASSERT_EQ(Parse({ "-object", "iothread,id=io0", "-object",
                      "iothread,id=io1,poll-max-ns=0,poll-grow=4,"
                      "poll-shrink=2,aio-max-batch=16,thread-pool-min=1,"
                      "thread-pool-max=8" }),
              0) << Message();
    ASSERT_EQ(o_.iothreads->len, 2u);
    auto &a = g_array_index(o_.iothreads, IOThreadOption, 0);
    auto &b = g_array_index(o_.iothreads, IOThreadOption, 1);
    EXPECT_STREQ(a.id, "io0");
    EXPECT_EQ(a.props.poll_max_ns, -1);
    EXPECT_EQ(a.props.thread_pool_max, -1);
    EXPECT_STREQ(b.id, "io1");
    EXPECT_EQ(b.props.poll_max_ns, 0);
    EXPECT_EQ(b.props.poll_grow, 4);
    EXPECT_EQ(b.props.poll_shrink, 2);
    EXPECT_EQ(b.props.aio_max_batch, 16);
    EXPECT_EQ(b.props.thread_pool_min, 1);
    EXPECT_EQ(b.props.thread_pool_max, 8);
}

TEST_F(Options, IOThreadErrors)
{
    EXPECT_EQ(Parse({ "-object", "iothread" }), -EINVAL);
    EXPECT_EQ(Message(), "-object: iothread needs an id=");
    EXPECT_EQ(Parse({ "-object", "iothread,id=a", "-object",
                      "iothread,id=a" }), -EINVAL);
    EXPECT_EQ(Message(), "-object: duplicate id 'a'");
    EXPECT_EQ(Parse({ "-object", "iothread,id=a,poll-max-ns=-5" }),
              -EINVAL);
    EXPECT_EQ(Parse({ "-object", "iothread,id=a,id=b" }), -EINVAL);
    EXPECT_NE(Message().find("repeated parameter 'id'"), std::string::npos);
    EXPECT_EQ(Parse({ "-object", "memory-backend-ram,id=m" }), -EINVAL);
    EXPECT_NE(Message().find("unsupported object type"), std::string::npos);
}

TEST_F(Options, UnknownOptionNamesIt)
{
    EXPECT_EQ(Parse({ "-foo" }), -EINVAL);
    EXPECT_EQ(Message(), "-foo: invalid option");
    EXPECT_EQ(Parse({ "--bar", "1" }), -EINVAL);
    EXPECT_EQ(Message(), "--bar: invalid option");
    EXPECT_EQ(Parse({ "disk.img" }), -EINVAL);
    EXPECT_NE(Message().find("'disk.img': unexpected argument"),
              std::string::npos);
    EXPECT_EQ(Parse({ "-" }), -EINVAL);
}

TEST_F(Options, MissingArgument)
{
    EXPECT_EQ(Parse({ "-kernel" }), -EINVAL);
    EXPECT_EQ(Message(), "-kernel: requires an argument");
}

TEST_F(Options, AcceptedAndRejectedCompatOptions)
{
    EXPECT_EQ(Parse({ "-cpu", "host,-arch-capabilities" }), 0);
    EXPECT_STREQ(o_.cpu_model, "host");
    EXPECT_EQ(Parse({ "-cpu", "max" }), 0);
    EXPECT_EQ(Parse({ "-cpu", "Skylake-Server" }), -EINVAL);
    EXPECT_NE(Message().find("-cpu: unsupported CPU model"),
              std::string::npos);
    EXPECT_EQ(Parse({ "-accel", "tcg" }), -EINVAL);
    EXPECT_EQ(Parse({ "-accel", "accel=kvm" }), 0);
    EXPECT_EQ(Parse({ "-display", "gtk" }), -EINVAL);
    EXPECT_EQ(Parse({ "-name", "guest=vm1,debug-threads=on" }), 0);
    EXPECT_STREQ(o_.name, "vm1");
}

TEST_F(Options, HelpAndVersion)
{
    ASSERT_EQ(Parse({ "-h" }), 0);
    EXPECT_TRUE(o_.help);
    ASSERT_EQ(Parse({ "-help" }), 0);
    EXPECT_TRUE(o_.help);
    ASSERT_EQ(Parse({ "-version" }), 0);
    EXPECT_TRUE(o_.version);
    std::string usage = options_usage();
    for (const char *opt : { "-kernel", "-append", "-initrd", "-m ", "-smp",
                             "-serial", "-nographic", "-display",
                             "-no-reboot", "-enable-kvm", "-accel", "-cpu",
                             "-device", "-object", "-name", "-version",
                             "-help" }) {
        EXPECT_NE(usage.find(opt), std::string::npos) << opt;
    }
}

TEST(OptionsKeyval, SplitsWithEscapedCommas)
{
    GError *err = nullptr;
    GHashTable *kv = options_parse_keyval("x", "drv,a=1,b=x,,y,c=", "driver",
                                          &err);
    ASSERT_NE(kv, nullptr);
    EXPECT_STREQ((char *)g_hash_table_lookup(kv, "driver"), "drv");
    EXPECT_STREQ((char *)g_hash_table_lookup(kv, "a"), "1");
    EXPECT_STREQ((char *)g_hash_table_lookup(kv, "b"), "x,y");
    EXPECT_STREQ((char *)g_hash_table_lookup(kv, "c"), "");
    g_hash_table_unref(kv);

    EXPECT_EQ(options_parse_keyval("x", "a=1,b", nullptr, &err), nullptr);
    EXPECT_STREQ(err->message, "-x: invalid parameter 'b' in 'a=1,b'");
    g_clear_error(&err);
    EXPECT_EQ(options_parse_keyval("x", "=1", nullptr, &err), nullptr);
    g_clear_error(&err);
}

} // namespace

TEST_F(Options, MonitorAndProcessOptions)
{
    ASSERT_EQ(Parse({ "-S", "-no-shutdown", "-nodefaults", "-daemonize",
                      "-pidfile", "/tmp/p", "-serial", "null", "-display",
                      "none", "-qmp", "unix:/tmp/q.sock,server=on,wait=off",
                      "-qmp", "tcp:127.0.0.1:4444,server,nowait",
                      "-chardev", "socket,id=m0,path=/tmp/m.sock,server=on,"
                      "wait=off", "-mon", "chardev=m0,mode=control" }), 0)
        << Message();
    EXPECT_TRUE(o_.start_paused);
    EXPECT_TRUE(o_.no_shutdown);
    EXPECT_TRUE(o_.nodefaults);
    EXPECT_TRUE(o_.daemonize);
    EXPECT_STREQ(o_.pidfile, "/tmp/p");
    ASSERT_EQ(o_.qmp->len, 2u);
    EXPECT_STREQ((char *)g_ptr_array_index(o_.qmp, 0), "unix:/tmp/q.sock");
    EXPECT_STREQ((char *)g_ptr_array_index(o_.qmp, 1), "tcp:127.0.0.1:4444");
    EXPECT_STREQ((char *)g_ptr_array_index(o_.chardevs, 0),
                 "m0=unix:/tmp/m.sock");
    EXPECT_STREQ((char *)g_ptr_array_index(o_.mons, 0), "m0");
}

TEST_F(Options, MonitorErrorsNameTheOption)
{
    EXPECT_LT(Parse({ "-qmp", "unix:/tmp/q.sock,server=on" }), 0);
    EXPECT_NE(Message().find("-qmp"), std::string::npos) << Message();
    EXPECT_LT(Parse({ "-mon", "chardev=m0,mode=readline" }), 0);
    EXPECT_NE(Message().find("-mon"), std::string::npos) << Message();
    EXPECT_LT(Parse({ "-chardev", "pty,id=x" }), 0);
    EXPECT_NE(Message().find("-chardev"), std::string::npos) << Message();
}

// -chardev ids are stored as "ID=ADDR" and -mon looks them up by prefix:
// a repeated id silently took the last -chardev, and id=a=b was found by
// -mon chardev=a with "b=unix:..." as its address.  QEMU refuses both
// ("Duplicate ID", and ids that are not letters, digits, '-', '.', '_').
TEST_F(Options, ChardevIdsAreUniqueAndWellFormed)
{
    EXPECT_LT(Parse({ "-chardev", "socket,id=m,path=/tmp/a,server=on,wait=off",
                      "-chardev", "socket,id=m,path=/tmp/b,server=on,wait=off",
                      "-mon", "chardev=m,mode=control" }), 0);
    EXPECT_NE(Message().find("'m'"), std::string::npos) << Message();
    for (const char *bad : { "socket,id=a=b,path=/tmp/a,server=on,wait=off",
                             "socket,id=1a,path=/tmp/a,server=on,wait=off",
                             "socket,id=a b,path=/tmp/a,server=on,wait=off" }) {
        EXPECT_LT(Parse({ "-chardev", bad }), 0) << bad;
        EXPECT_NE(Message().find("-chardev"), std::string::npos) << Message();
    }
    EXPECT_EQ(Parse({ "-chardev", "socket,id=m.0-x_y,path=/tmp/a,server=on,wait=off",
                      "-chardev", "socket,id=m,path=/tmp/b,server=on,wait=off" }), 0)
        << Message();
}

// -drive if=virtio without id= gets a made-up id; it must never take an id
// the user gave another drive, before or after it on the command line.
TEST_F(Options, AutoDriveIdsNeverCollideWithUserIds)
{
    ASSERT_EQ(Parse({ "-drive", "file=a.img,format=raw,if=none,id=drive1",
                      "-drive", "file=b.img,format=raw,if=virtio" }), 0)
        << Message();
    ASSERT_EQ(o_.drives->len, 2u);
    const char *a = ((BlockOptions *)g_ptr_array_index(o_.drives, 0))->id;
    const char *b = ((BlockOptions *)g_ptr_array_index(o_.drives, 1))->id;
    EXPECT_STRNE(a, b);

    ASSERT_EQ(Parse({ "-drive", "file=b.img,format=raw,if=virtio",
                      "-drive", "file=a.img,format=raw,if=none,id=drive0" }), 0)
        << Message();
    ASSERT_EQ(o_.drives->len, 2u);
    a = ((BlockOptions *)g_ptr_array_index(o_.drives, 0))->id;
    b = ((BlockOptions *)g_ptr_array_index(o_.drives, 1))->id;
    EXPECT_STRNE(a, b);
    EXPECT_STREQ(b, "drive0");

    // A real duplicate is still an error, also across -drive and -blockdev.
    EXPECT_LT(Parse({ "-drive", "file=a.img,format=raw,if=none,id=d0",
                      "-blockdev", "driver=file,filename=b.img,node-name=d0" }),
              0);
    EXPECT_NE(Message().find("d0"), std::string::npos) << Message();
    EXPECT_LT(Parse({ "-drive", "file=a.img,format=raw,if=none" }), 0);
}
