// -device parsing into a generic property list (system/device.c): the
// key=value and JSON forms give the same table; the registry; addr=.
#include <gtest/gtest.h>

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

} // namespace
