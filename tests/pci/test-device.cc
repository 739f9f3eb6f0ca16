// -device parsing into a generic property list (system/device.c): the
// key=value and JSON forms give the same table; the registry; addr=.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "shardvm/device.h"
#include "shardvm/options.h"

namespace {

std::string Prop(const DeviceOption *d, const char *key)
{
    const char *v = (const char *)g_hash_table_lookup(d->props, key);
    return v ? v : "<none>";
}

TEST(Device, KeyValueForm)
{
    GError *err = nullptr;
    DeviceOption *d = device_option_parse(
        "virtio-blk-pci,drive=d0,iothread=io0,num-queues=4,queue-size=128,"
        "serial=SN,,1,addr=0x5,logical_block_size=4096,discard=off",
        &err);
    ASSERT_NE(d, nullptr) << err->message;
    EXPECT_STREQ(d->driver, "virtio-blk-pci");
    EXPECT_EQ(Prop(d, "drive"), "d0");
    EXPECT_EQ(Prop(d, "num-queues"), "4");
    EXPECT_EQ(Prop(d, "serial"), "SN,1");
    EXPECT_EQ(Prop(d, "discard"), "off");
    EXPECT_EQ(g_hash_table_size(d->props), 8u); // driver taken out
    device_option_free(d);
}

TEST(Device, JsonFormGivesStrings)
{
    GError *err = nullptr;
    DeviceOption *d = device_option_parse(
        "{\"driver\":\"virtio-blk-pci\",\"drive\":\"d0\",\"num-queues\":4,"
        "\"discard\":false,\"write-zeroes\":true,"
        "\"iothread-vq-mapping\":[{\"iothread\":\"io0\",\"vqs\":[0,2]},"
        "{\"iothread\":\"io1\"}]}",
        &err);
    ASSERT_NE(d, nullptr) << err->message;
    EXPECT_STREQ(d->driver, "virtio-blk-pci");
    EXPECT_EQ(Prop(d, "drive"), "d0");
    EXPECT_EQ(Prop(d, "num-queues"), "4");
    EXPECT_EQ(Prop(d, "discard"), "off");
    EXPECT_EQ(Prop(d, "write-zeroes"), "on");
    EXPECT_EQ(Prop(d, "iothread-vq-mapping"),
              "[{\"iothread\":\"io0\",\"vqs\":[0,2]},{\"iothread\":\"io1\"}]");
    device_option_free(d);
}

TEST(Device, MalformedInput)
{
    const char *bad[] = { "{\"drive\":\"d0\"}", "{\"driver\":\"x\",",
                          "{}", "{\"driver\":\"x\",\"a\":null}", "a=1",
                          "" };
    for (const char *arg : bad) {
        GError *err = nullptr;
        EXPECT_EQ(device_option_parse(arg, &err), nullptr) << arg;
        ASSERT_NE(err, nullptr) << arg;
        EXPECT_EQ(std::string(err->message).rfind("-device", 0), 0u)
            << err->message;
        g_error_free(err);
    }
}

TEST(Device, RegistryAndOptions)
{
    EXPECT_NE(device_type_find("virtio-blk-pci"), nullptr);
    EXPECT_EQ(device_type_find("virtio-net-pci"), nullptr);
    ShardvmOptions o = {};
    GError *err = nullptr;
    const char *argv[] = { "shardvm", "-device",
                           "{\"driver\":\"virtio-blk-pci\",\"drive\":\"a\"}",
                           "-device", "virtio-blk-pci,drive=b",
                           "-device", "{\"driver\":\"isa-debug-exit\","
                           "\"iobase\":244}" };
    ASSERT_EQ(options_parse(G_N_ELEMENTS(argv), (char **)argv, &o, &err), 0)
        << err->message;
    ASSERT_EQ(o.devices->len, 2u);
    EXPECT_EQ(Prop((DeviceOption *)g_ptr_array_index(o.devices, 0), "drive"),
              "a");
    EXPECT_EQ(Prop((DeviceOption *)g_ptr_array_index(o.devices, 1), "drive"),
              "b");
    EXPECT_TRUE(o.debug_exit);
    EXPECT_EQ(o.debug_exit_iobase, 244);
    options_clear(&o);
}

TEST(Device, PciSlotFromAddr)
{
    struct { const char *addr; int slot; } ok[] = {
        { "5", 5 }, { "0x1f", 31 }, { "05.0", 5 }, { "a", 10 },
    };
    for (auto &c : ok) {
        GHashTable *p = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                              g_free);
        g_hash_table_insert(p, g_strdup("addr"), g_strdup(c.addr));
        int slot = 0;
        EXPECT_EQ(device_props_take_pci_slot(p, &slot, nullptr), 0) << c.addr;
        EXPECT_EQ(slot, c.slot) << c.addr;
        EXPECT_EQ(g_hash_table_size(p), 0u);
        g_hash_table_unref(p);
    }
    for (const char *addr : { "0", "20", "5.1", "x", "" }) {
        GHashTable *p = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                              g_free);
        g_hash_table_insert(p, g_strdup("addr"), g_strdup(addr));
        int slot = 0;
        GError *err = nullptr;
        EXPECT_EQ(device_props_take_pci_slot(p, &slot, &err), -EINVAL)
            << addr;
        g_clear_error(&err);
        g_hash_table_unref(p);
    }
    GHashTable *p = g_hash_table_new(g_str_hash, g_str_equal);
    int slot = 0;
    EXPECT_EQ(device_props_take_pci_slot(p, &slot, nullptr), 0);
    EXPECT_EQ(slot, -1);
    g_hash_table_unref(p);
}


// ---- attacks: hostile command lines ------------------------------------

// JSON nested as deep as a command line allows (128 KiB): a clean error,
// not a stack overflow in the parser.
TEST(Device, DeeplyNestedJsonIsRefused)
{
    for (const char *open : { "[", "{\"a\":" }) {
        std::string arg = "{\"driver\":\"virtio-blk-pci\",\"x\":";
        std::string close;
        while (arg.size() < 120000) {
            arg += open;
            close += open[0] == '[' ? "]" : "}";
        }
        arg += "1" + close + "}";
        GError *err = nullptr;
        DeviceOption *d = device_option_parse(arg.c_str(), &err);
        EXPECT_EQ(d, nullptr);
        ASSERT_NE(err, nullptr);
        EXPECT_EQ(std::string(err->message).rfind("-device", 0), 0u);
        g_error_free(err);
    }
    // Reasonable nesting still parses.
    GError *err = nullptr;
    DeviceOption *d = device_option_parse(
        "{\"driver\":\"virtio-blk-pci\",\"x\":[[[[{\"a\":[1]}]]]]}", &err);
    ASSERT_NE(d, nullptr) << err->message;
    device_option_free(d);
}

// Duplicate keys: QEMU refuses them in both forms; taking one of them
// silently would hide a typo'd command line.
TEST(Device, DuplicateKeysAreRefused)
{
    for (const char *arg : {
             "{\"driver\":\"virtio-blk-pci\",\"drive\":\"a\",\"drive\":\"b\"}",
             "{\"driver\":\"virtio-blk-pci\",\"driver\":\"virtio-blk-pci\"}",
             "virtio-blk-pci,drive=a,drive=b",
             "virtio-blk-pci,driver=virtio-blk-pci" }) {
        GError *err = nullptr;
        DeviceOption *d = device_option_parse(arg, &err);
        EXPECT_EQ(d, nullptr) << arg;
        if (d) {
            device_option_free(d);
        } else {
            ASSERT_NE(err, nullptr);
            g_error_free(err);
        }
    }
}

// JSON of the wrong shapes and types: errors, never a crash.
TEST(Device, JsonOfWrongShapes)
{
    const char *bad[] = {
        "[1,2]", "{\"driver\":null}", "{\"driver\":\"\"}", "{ }",
        "{\"driver\":\"x\"} trailing", "{\"driver\":\"x\"}{}",
        "{\"driver\":\"x\",\"a\":}", "{\"driver\":\"x\",\"\\u0000\":1}",
        "{\"driver\":\"x\",1:2}", "{\"driver\":\"x\",\"a\":1e99999}",
        "{\"driver\":\"x\",\"a\":\"\\ud800\"}", "{", "{\"", "{\"driver\"",
    };
    for (const char *arg : bad) {
        GError *err = nullptr;
        DeviceOption *d = device_option_parse(arg, &err);
        if (d) { // some are valid JSON; then they are a driver + props
            device_option_free(d);
        } else {
            ASSERT_NE(err, nullptr) << arg;
            g_error_free(err);
        }
    }
    // Several top-level values: refused (json-glib took the first one).
    for (const char *arg : { "{\"driver\":\"virtio-blk-pci\"}{}",
                             "{\"driver\":\"virtio-blk-pci\"} {\"a\":1}",
                             "{\"driver\":\"virtio-blk-pci\"}]",
                             "{\"driver\":\"virtio-blk-pci\"}\n" }) {
        GError *err = nullptr;
        DeviceOption *d = device_option_parse(arg, &err);
        bool want_ok = arg[strlen(arg) - 1] == '\n';
        EXPECT_EQ(d != nullptr, want_ok) << arg;
        device_option_free(d);
        g_clear_error(&err);
    }
    // A huge value is fine.
    std::string big = "{\"driver\":\"virtio-blk-pci\",\"serial\":\"" +
                      std::string(100000, 'x') + "\"}";
    GError *err = nullptr;
    DeviceOption *d = device_option_parse(big.c_str(), &err);
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(Prop(d, "serial").size(), 100000u);
    device_option_free(d);
}

// In QEMU's JSON form an integer "addr" is a devfn (slot << 3 | fn), not
// a hexadecimal slot: {"addr": 24} is slot 3, {"addr": 16} is slot 2.
TEST(Device, JsonIntegerAddrIsADevfn)
{
    struct { const char *json; int slot; } ok[] = {
        { "24", 3 }, { "16", 2 }, { "248", 31 }, { "\"0x3\"", 3 },
        { "\"10\"", 16 },
    };
    for (auto &c : ok) {
        std::string arg = std::string("{\"driver\":\"virtio-blk-pci\","
                                      "\"addr\":") + c.json + "}";
        GError *err = nullptr;
        DeviceOption *d = device_option_parse(arg.c_str(), &err);
        ASSERT_NE(d, nullptr) << err->message;
        int slot = -2;
        EXPECT_EQ(device_props_take_pci_slot(d->props, &slot, &err), 0)
            << c.json;
        g_clear_error(&err);
        EXPECT_EQ(slot, c.slot) << c.json;
        device_option_free(d);
    }
    for (const char *json : { "25", "0", "-8", "256", "8.5", "true" }) {
        std::string arg = std::string("{\"driver\":\"virtio-blk-pci\","
                                      "\"addr\":") + json + "}";
        GError *err = nullptr;
        DeviceOption *d = device_option_parse(arg.c_str(), &err);
        if (!d) {
            g_clear_error(&err);
            continue;
        }
        int slot = -2;
        EXPECT_EQ(device_props_take_pci_slot(d->props, &slot, &err), -EINVAL)
            << json << " gave slot " << slot;
        g_clear_error(&err);
        device_option_free(d);
    }
}

TEST(Device, AddrGarbage)
{
    for (const char *addr : { "+5", " 5", "5 ", "0x", "0x3.1", "3.0.0",
                              "32", "0x20", "-1", "1f.", ".0", "0x.0",
                              "00", "0x0", "5.00", "5.0x0", "ffffffffff",
                              "1f.8", "0x1f.0.0" }) {
        GHashTable *p = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                              g_free);
        g_hash_table_insert(p, g_strdup("addr"), g_strdup(addr));
        int slot = 0;
        GError *err = nullptr;
        EXPECT_EQ(device_props_take_pci_slot(p, &slot, &err), -EINVAL)
            << addr << " gave " << slot;
        g_clear_error(&err);
        g_hash_table_unref(p);
    }
    for (const char *addr : { "01.0", "0x1f", "1F", "0x3.0", "0X3" }) {
        GHashTable *p = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                              g_free);
        g_hash_table_insert(p, g_strdup("addr"), g_strdup(addr));
        int slot = 0;
        EXPECT_EQ(device_props_take_pci_slot(p, &slot, nullptr), 0) << addr;
        g_hash_table_unref(p);
    }
}

} // namespace
