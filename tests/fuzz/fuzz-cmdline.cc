// libFuzzer target: the command-line parsers.  The first byte picks one:
//   0  options_parse() on argv split at '\n' (every option of build/shardvm;
//      each -device virtio-blk-pci then also through its property parser)
//   1  block_parse_drive()          (-drive)
//   2  block_parse_blockdev()       (-blockdev, key=value or JSON)
//   3  device_option_parse() + the virtio-blk-pci property parser
//      (virtio_blk_parse_props(), addr=, iothread-vq-mapping JSON)
//   4  options_parse_size() and options_parse_keyval()
//   5  monitor_parse_qmp() / _chardev() / _mon()
// Checked: no crash or sanitizer report; a success leaves values inside
// their documented ranges; a failure always has a message.
#include "fuzz-guest.h"   // CHECK()

#include "shardvm/block.h"
#include "shardvm/device.h"
#include "shardvm/monitor.h"
#include "shardvm/options.h"
#include "shardvm/virtio-blk.h"

#include <string>
#include <vector>

namespace {

void CheckError(int ret, GError *err)
{
    if (ret < 0) {
        CHECK(err && err->message && err->message[0], "failure without a message");
    }
    g_clear_error(&err);
}

// The virtio-blk-pci constructor's parsing steps on @props (consumed).
void BlkProps(GHashTable *props)
{
    GError *err = nullptr;
    int slot = -2;
    int ret = device_props_take_pci_slot(props, &slot, &err);
    if (ret == 0) {
        CHECK(slot == -1 || (slot >= 0 && slot < 32), "slot %d", slot);
    }
    CheckError(ret, err);
    err = nullptr;
    VirtIOBlockConfig cfg;
    virtio_blk_config_init(&cfg);
    ret = virtio_blk_parse_props(props, &cfg, &err);
    if (ret == 0) {
        CHECK(cfg.num_queues >= 1, "num-queues %u", cfg.num_queues);
        CHECK(cfg.queue_size >= 4 && cfg.queue_size <= 1024 &&
                  !(cfg.queue_size & (cfg.queue_size - 1)),
              "queue-size %u", cfg.queue_size);
        std::vector<const char *> ids(cfg.num_queues);
        virtio_blk_queue_iothreads(&cfg, ids.data());
        if (cfg.iothread) {
            for (const char *id : ids) {
                CHECK(id && !strcmp(id, cfg.iothread), "queue not on the iothread");
            }
        }
    }
    CheckError(ret, err);
    virtio_blk_config_clear(&cfg);
}

void ParseArgv(const std::string &text)
{
    std::vector<std::string> args = {"shardvm"};
    size_t start = 0;
    for (size_t i = 0; i <= text.size(); i++) {
        if (i == text.size() || text[i] == '\n') {
            args.push_back(text.substr(start, i - start));
            start = i + 1;
        }
    }
    std::vector<char *> argv;
    for (std::string &a : args) {
        argv.push_back(a.data());
    }
    argv.push_back(nullptr);
    ShardvmOptions o;
    GError *err = nullptr;
    int ret = options_parse(int(args.size()), argv.data(), &o, &err);
    if (ret == 0) {
        CHECK(o.ram_size >= OPTIONS_MIN_RAM && o.ram_size <= OPTIONS_MAX_RAM, "-m %llu",
              (unsigned long long)o.ram_size);
        CHECK(o.cpus >= 1 && o.cpus <= OPTIONS_MAX_CPUS, "-smp %u", o.cpus);
        for (guint i = 0; o.devices && i < o.devices->len; i++) {
            auto *d = static_cast<DeviceOption *>(g_ptr_array_index(o.devices, i));
            if (!strcmp(d->driver, "virtio-blk-pci")) {
                BlkProps(d->props);
            }
        }
    }
    CheckError(ret, err);
    options_clear(&o);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    unsigned mode = data[0] % 6;
    // NUL-terminated text of the rest (an embedded NUL ends it, as argv).
    std::string text(reinterpret_cast<const char *>(data + 1), size - 1);
    text = text.c_str();
    GError *err = nullptr;

    switch (mode) {
    case 0:
        ParseArgv(text);
        break;
    case 1:
    case 2: {
        BlockOptions o = {};
        int ret = mode == 1 ? block_parse_drive(text.c_str(), &o, &err)
                            : block_parse_blockdev(text.c_str(), &o, &err);
        if (ret == 0) {
            CHECK(o.driver != BLOCK_DRIVER_FILE || o.filename, "file driver without filename");
            CHECK(o.null_latency_ns <= INT64_MAX, "latency");
        }
        CheckError(ret, err);
        block_options_clear(&o);
        break;
    }
    case 3: {
        DeviceOption *d = device_option_parse(text.c_str(), &err);
        CheckError(d ? 0 : -1, err);
        if (d) {
            CHECK(d->driver && d->props, "device without driver");
            BlkProps(d->props);
            device_option_free(d);
        }
        break;
    }
    case 4: {
        uint64_t v;
        options_parse_size(text.c_str(), 1, &v);
        options_parse_size(text.c_str(), 1 << 20, &v);
        GHashTable *t = options_parse_keyval("-fuzz", text.c_str(), "id", &err);
        CheckError(t ? 0 : -1, err);
        if (t) {
            g_hash_table_unref(t);
        }
        break;
    }
    default: {
        char *id = nullptr;
        g_free(monitor_parse_qmp(text.c_str(), nullptr));
        g_free(monitor_parse_chardev(text.c_str(), &id, nullptr));
        g_free(id);
        g_free(monitor_parse_mon(text.c_str(), nullptr));
        break;
    }
    }
    return 0;
}
