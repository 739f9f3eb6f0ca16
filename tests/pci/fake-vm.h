// A fake PCIVMOps for tests/pci: records MSI routes, irqfds and
// ioeventfds instead of calling KVM.  Tests read the irqfd eventfds.
#pragma once

#include <map>
#include <utility>

#include "shardvm/pci.h"

struct FakeVM {
    struct Route {
        uint64_t addr;
        uint32_t data;
        EventNotifier *irqfd;
    };
    std::map<unsigned, Route> routes;          // gsi -> route
    std::map<uint64_t, EventNotifier *> ioeventfds; // addr -> notifier
    unsigned next_gsi = 24;
    int updates = 0;
    bool fail_routes = false; // AddRoute/UpdateRoute fail with -ENOSPC

    static const PCIVMOps ops;

    static FakeVM *Of(void *o) { return static_cast<FakeVM *>(o); }
    static int AddRoute(void *o, uint64_t addr, uint32_t data)
    {
        if (Of(o)->fail_routes) {
            return -ENOSPC;
        }
        unsigned gsi = Of(o)->next_gsi++;
        Of(o)->routes[gsi] = Route{ addr, data, nullptr };
        return (int)gsi;
    }
    static int UpdateRoute(void *o, unsigned gsi, uint64_t addr,
                           uint32_t data)
    {
        auto it = Of(o)->routes.find(gsi);
        if (Of(o)->fail_routes) {
            return -ENOSPC;
        }
        if (it == Of(o)->routes.end()) {
            return -ENOENT;
        }
        it->second.addr = addr;
        it->second.data = data;
        Of(o)->updates++;
        return 0;
    }
    static int DelRoute(void *o, unsigned gsi)
    {
        return Of(o)->routes.erase(gsi) ? 0 : -ENOENT;
    }
    static int AddIrqfd(void *o, EventNotifier *e, unsigned gsi)
    {
        auto it = Of(o)->routes.find(gsi);
        if (it == Of(o)->routes.end() || it->second.irqfd) {
            return -EINVAL;
        }
        it->second.irqfd = e;
        return 0;
    }
    static int DelIrqfd(void *o, EventNotifier *e, unsigned gsi)
    {
        auto it = Of(o)->routes.find(gsi);
        if (it == Of(o)->routes.end() || it->second.irqfd != e) {
            return -ENOENT;
        }
        it->second.irqfd = nullptr;
        return 0;
    }
    static int AddIoeventfd(void *o, EventNotifier *e, uint64_t addr)
    {
        return Of(o)->ioeventfds.emplace(addr, e).second ? 0 : -EEXIST;
    }
    static int DelIoeventfd(void *o, EventNotifier *e, uint64_t addr)
    {
        auto it = Of(o)->ioeventfds.find(addr);
        if (it == Of(o)->ioeventfds.end() || it->second != e) {
            return -ENOENT;
        }
        Of(o)->ioeventfds.erase(it);
        return 0;
    }
};

inline const PCIVMOps FakeVM::ops = {
    FakeVM::AddRoute, FakeVM::UpdateRoute, FakeVM::DelRoute,
    FakeVM::AddIrqfd, FakeVM::DelIrqfd, FakeVM::AddIoeventfd,
    FakeVM::DelIoeventfd,
};
