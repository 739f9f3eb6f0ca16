// Shared by the qmp tests: a fake MonitorBackend (real IOThreads, fake
// run state, vCPUs and block devices) and JSON helpers.
#pragma once

#include "shardvm/iothread.h"
#include "shardvm/monitor.h"

#include <json-glib/json-glib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <string>
#include <vector>

struct FakeVm {
    std::string state = "prelaunch";
    int stops = 0, conts = 0, powerdowns = 0, quits = 0;
    std::vector<IOThread *> iothreads;
    std::string busy_iothread;  // object-del of it fails with -EBUSY
    std::vector<MonitorBlockDevice> disks;
    std::vector<MonitorVirtqueue> vqs;
    std::string moved_node, moved_to; // last x-blockdev-set-iothread
    std::map<std::string, std::string> vq_owner; // "virtio-disk0" -> id
    std::string name; // -name; empty: none

    FakeVm()
    {
        MonitorBlockDevice d = {};
        d.device = "";
        d.qdev = "virtio-disk0";
        d.node_name = "disk0";
        d.filename = "/tmp/disk0.img";
        d.driver = "raw";
        d.size = 1 << 20;
        d.rd_operations = 7;
        d.rd_bytes = 7 * 4096;
        d.flush_operations = 2;
        disks.push_back(d);
    }
    ~FakeVm()
    {
        for (IOThread *t : iothreads) {
            iothread_free(t);
        }
    }

    static FakeVm *Of(void *o) { return static_cast<FakeVm *>(o); }

    static const MonitorBackend ops;
};

inline const MonitorBackend FakeVm::ops = {
    /* run_state */ [](void *o) { return Of(o)->state.c_str(); },
    /* stop */
    [](void *o, GError **) {
        FakeVm *vm = Of(o);
        vm->stops++;
        if (vm->state != "running") {
            return 0;
        }
        vm->state = "paused";
        return 1;
    },
    /* cont */
    [](void *o, GError **) {
        FakeVm *vm = Of(o);
        vm->conts++;
        if (vm->state == "running") {
            return 0;
        }
        vm->state = "running";
        return 1;
    },
    /* powerdown */ [](void *o) { Of(o)->powerdowns++; },
    /* quit */ [](void *o) { Of(o)->quits++; },
    /* name */
    [](void *o) -> const char * {
        return Of(o)->name.empty() ? nullptr : Of(o)->name.c_str();
    },
    /* kvm_info */
    [](void *, bool *enabled, bool *present) {
        *enabled = false;
        *present = false;
    },
    /* vcpu_thread_ids */
    [](void *, GArray *out) {
        int tid = 4242;
        g_array_append_val(out, tid);
    },
    /* iothread_list */
    [](void *o, GPtrArray *out) {
        for (IOThread *t : Of(o)->iothreads) {
            g_ptr_array_add(out, t);
        }
    },
    /* iothread_find */
    [](void *o, const char *id) -> IOThread * {
        for (IOThread *t : Of(o)->iothreads) {
            if (!strcmp(iothread_get_id(t), id)) {
                return t;
            }
        }
        return nullptr;
    },
    /* iothread_add */
    [](void *o, const char *id, const IOThreadProps *p, GError **errp) {
        IOThread *t = iothread_new(id, p, errp);
        if (!t) {
            return -EINVAL;
        }
        Of(o)->iothreads.push_back(t);
        return 0;
    },
    /* iothread_del */
    [](void *o, const char *id, GError **) {
        FakeVm *vm = Of(o);
        if (vm->busy_iothread == id) {
            return -EBUSY;
        }
        for (auto it = vm->iothreads.begin(); it != vm->iothreads.end();
             ++it) {
            if (!strcmp(iothread_get_id(*it), id)) {
                iothread_free(*it);
                vm->iothreads.erase(it);
                return 0;
            }
        }
        return -ENOENT;
    },
    /* block_list */
    [](void *o, GArray *out) {
        for (auto &d : Of(o)->disks) {
            g_array_append_val(out, d);
        }
    },
    /* virtqueue_list */
    [](void *o, GArray *out) {
        FakeVm *vm = Of(o);
        for (unsigned q = 0; q < 2; q++) {
            MonitorVirtqueue v = {};
            v.device = "virtio-disk0";
            v.node_name = "disk0";
            v.queue = q;
            auto it = vm->vq_owner.find("virtio-disk0");
            v.iothread = it == vm->vq_owner.end() ? nullptr
                                                  : it->second.c_str();
            g_array_append_val(out, v);
        }
    },
    /* blockdev_set_iothread */
    [](void *o, const char *node, const char *iot, bool, GError **errp) {
        FakeVm *vm = Of(o);
        if (strcmp(node, "disk0") != 0) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                        "Cannot find node %s", node);
            return -ENOENT;
        }
        vm->moved_node = node;
        vm->moved_to = iot ? iot : "";
        if (iot) {
            vm->vq_owner["virtio-disk0"] = iot;
        } else {
            vm->vq_owner.erase("virtio-disk0");
        }
        return 0;
    },
};

// ---- JSON helpers ---------------------------------------------------------

// Parse one JSON text; nullptr when it is not JSON.
inline JsonNode *ParseJson(const std::string &s)
{
    JsonParser *p = json_parser_new();
    JsonNode *n = nullptr;
    if (json_parser_load_from_data(p, s.data(), (gssize)s.size(), nullptr)) {
        n = json_node_copy(json_parser_get_root(p));
    }
    g_object_unref(p);
    return n;
}

// The "shape" of a JSON value: member names and JSON types, values left
// out.  Arrays show the shape of their first element.
inline std::string Shape(JsonNode *n)
{
    if (!n || JSON_NODE_HOLDS_NULL(n)) {
        return "null";
    }
    if (JSON_NODE_HOLDS_OBJECT(n)) {
        JsonObject *o = json_node_get_object(n);
        GList *names = json_object_get_members(o);
        std::vector<std::string> keys;
        for (GList *l = names; l; l = l->next) {
            keys.push_back(static_cast<const char *>(l->data));
        }
        g_list_free(names);
        std::sort(keys.begin(), keys.end());
        std::string s = "{";
        for (auto &k : keys) {
            s += k + ":" + Shape(json_object_get_member(o, k.c_str())) + ",";
        }
        return s + "}";
    }
    if (JSON_NODE_HOLDS_ARRAY(n)) {
        JsonArray *a = json_node_get_array(n);
        return "[" + (json_array_get_length(a)
                      ? Shape(json_array_get_element(a, 0)) : "") + "]";
    }
    GType t = json_node_get_value_type(n);
    return t == G_TYPE_INT64 ? "int" : t == G_TYPE_BOOLEAN ? "bool"
           : t == G_TYPE_STRING ? "str" : "number";
}

// A member by dotted path ("error.class"); nullptr when absent.
inline JsonNode *Member(JsonNode *n, const std::string &path)
{
    size_t start = 0;
    while (n && start <= path.size()) {
        size_t dot = path.find('.', start);
        std::string k = path.substr(start, dot - start);
        if (!JSON_NODE_HOLDS_OBJECT(n)) {
            return nullptr;
        }
        n = json_object_get_member(json_node_get_object(n), k.c_str());
        if (dot == std::string::npos) {
            break;
        }
        start = dot + 1;
    }
    return n;
}

inline std::string Str(JsonNode *n, const std::string &path)
{
    JsonNode *m = Member(n, path);
    return m && JSON_NODE_HOLDS_VALUE(m) &&
                   json_node_get_value_type(m) == G_TYPE_STRING
               ? json_node_get_string(m) : "<none>";
}

inline std::string ToJson(JsonNode *n)
{
    if (!n) {
        return "<null>";
    }
    JsonGenerator *g = json_generator_new();
    json_generator_set_root(g, n);
    char *s = json_generator_to_data(g, nullptr);
    std::string r = s;
    g_free(s);
    g_object_unref(g);
    return r;
}
