/*
 * MSI-X: the capability, the vector table and the pending-bit array in one
 * 32-bit BAR, and delivery through per-vector MSI routes and irqfds.
 *
 * Masking is done in userspace: each vector has a KVM MSI route and an
 * irqfd EventNotifier (both made when the vector is first routed), but
 * the device never writes the irqfd itself;
 * pci_msix_notify() checks the masks under msix->lock and either sets the
 * irqfd (KVM injects) or sets the PBA bit.  Unmasking a vector whose PBA
 * bit is set fires it then.  A route is created when a vector is first
 * enabled and unmasked and follows later table writes (update); routes and
 * irqfds are removed only by pci_msix_cleanup().
 */
#include "shardvm/pci.h"
#include "pci-internal.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

typedef struct MsixVector {
    EventNotifier irqfd;
    int gsi;                 /* -1: no route yet */
    uint64_t route_addr;     /* what the route delivers */
    uint32_t route_data;
} MsixVector;

struct PCIMsix {
    pthread_mutex_t lock;    /* pthread, not GMutex: TSan sees it */
    PCIDevice *dev;          /* immutable */
    unsigned nr;             /* immutable */
    unsigned cap;            /* config offset; immutable */
    uint64_t pba_offset;     /* in the BAR; immutable */
    uint64_t bar_size;       /* immutable */
    uint8_t *table;          /* [lock] nr * 16 bytes, little endian */
    uint64_t *pba;           /* [lock] */
    bool enabled;            /* [lock] copy of the control bits */
    bool masked_all;         /* [lock] */
    bool warned;             /* [lock] route failure reported */
    const PCIVMOps *ops;     /* [lock] the bus's, kept from the first route
                              * so cleanup works after unplugging */
    void *ops_opaque;
    MsixVector *vec;         /* [lock] */
};

static bool msix_vector_masked(PCIMsix *m, unsigned v)
{
    return !m->enabled || m->masked_all ||
           (m->table[v * PCI_MSIX_ENTRY_SIZE + 12] &
            PCI_MSIX_ENTRY_CTRL_MASKBIT);
}

static bool msix_pending(PCIMsix *m, unsigned v)
{
    return (m->pba[v / 64] >> (v % 64)) & 1;
}

/* Create or update @v's route to match its table entry; true when the
 * vector can be delivered.  Lock held. */
static bool msix_route_sync(PCIMsix *m, unsigned v)
{
    void *opaque;
    const PCIVMOps *ops = pci_bus_get_vm_ops(m->dev->bus, &opaque);
    MsixVector *mv = &m->vec[v];
    const uint8_t *e = m->table + v * PCI_MSIX_ENTRY_SIZE;
    uint64_t addr = pci_get_long(e) | ((uint64_t)pci_get_long(e + 4) << 32);
    uint32_t data = pci_get_long(e + 8);
    int r = 0;

    if (!ops) {
        return false;
    }
    m->ops = ops;
    m->ops_opaque = opaque;
    if (mv->gsi < 0) {
        /* The eventfd too is made only for a vector the guest uses: a
         * device may have 2048 vectors, and running out of fds is a
         * route failure (the interrupt stays pending), not an abort. */
        if (event_notifier_get_fd(&mv->irqfd) < 0) {
            r = event_notifier_init(&mv->irqfd, false);
        }
        if (r < 0) {
            goto fail;
        }
        r = ops->add_msi_route(opaque, addr, data);
        if (r >= 0) {
            mv->gsi = r;
            r = ops->add_irqfd(opaque, &mv->irqfd, (unsigned)mv->gsi);
            if (r < 0) {
                ops->del_msi_route(opaque, (unsigned)mv->gsi);
                mv->gsi = -1;
            }
        }
    } else if (addr != mv->route_addr || data != mv->route_data) {
        r = ops->update_msi_route(opaque, (unsigned)mv->gsi, addr, data);
    }
fail:
    if (r < 0) {
        if (!m->warned) {
            m->warned = true;
            g_warning("pci %s: MSI-X vector %u: cannot route it (%s)",
                      m->dev->name, v, g_strerror(-r));
        }
        return false;
    }
    mv->route_addr = addr;
    mv->route_data = data;
    return true;
}

/* After a mask or table change: route an unmasked vector and deliver its
 * pending interrupt.  Lock held. */
static void msix_vector_sync(PCIMsix *m, unsigned v)
{
    if (msix_vector_masked(m, v) || !msix_route_sync(m, v)) {
        return;
    }
    if (msix_pending(m, v)) {
        m->pba[v / 64] &= ~(1ull << (v % 64));
        event_notifier_set(&m->vec[v].irqfd);
    }
}

void pci_msix_notify(PCIDevice *d, unsigned vector)
{
    PCIMsix *m = d->msix;
    if (!m || vector >= m->nr) {
        return;
    }
    pthread_mutex_lock(&m->lock);
    if (!m->enabled) {
        /* No INTx fallback: a driver that does not enable MSI-X polls. */
    } else if (msix_vector_masked(m, vector)) {
        m->pba[vector / 64] |= 1ull << (vector % 64);
    } else if (m->vec[vector].gsi >= 0) {
        event_notifier_set(&m->vec[vector].irqfd);
    } else {
        /* Unmasked but no route (KVM refused one): keep it pending; the
         * next table or control write retries the route and delivers. */
        m->pba[vector / 64] |= 1ull << (vector % 64);
    }
    pthread_mutex_unlock(&m->lock);
}

void pci_msix_config_written(PCIDevice *d)
{
    PCIMsix *m = d->msix;
    uint16_t ctl = pci_get_word(d->config + m->cap + PCI_MSIX_FLAGS);
    pthread_mutex_lock(&m->lock);
    m->enabled = ctl & PCI_MSIX_FLAGS_ENABLE;
    m->masked_all = ctl & PCI_MSIX_FLAGS_MASKALL;
    for (unsigned v = 0; v < m->nr; v++) {
        msix_vector_sync(m, v);
    }
    pthread_mutex_unlock(&m->lock);
}

/* ---- the BAR ---------------------------------------------------------- */

/* Table and PBA take aligned dword and qword accesses only (PCIe 6.8.2:
 * anything else is undefined): others read 0 and write nothing, so e.g. a
 * byte write cannot unmask a vector. */
static bool msix_access_ok(uint64_t offset, unsigned size)
{
    return (size == 4 || size == 8) && offset % size == 0;
}

static uint64_t msix_bar_read(void *opaque, uint64_t offset, unsigned size)
{
    PCIMsix *m = opaque;
    uint64_t v = 0;
    if (!msix_access_ok(offset, size)) {
        return 0;
    }
    pthread_mutex_lock(&m->lock);
    for (unsigned i = 0; i < size; i++) {
        uint64_t o = offset + i;
        uint8_t b = 0;
        if (o < (uint64_t)m->nr * PCI_MSIX_ENTRY_SIZE) {
            b = m->table[o];
        } else if (o >= m->pba_offset &&
                   o < m->pba_offset + ((m->nr + 63) / 64) * 8) {
            uint64_t bo = o - m->pba_offset;
            b = (uint8_t)(m->pba[bo / 8] >> (8 * (bo % 8)));
        }
        v |= (uint64_t)b << (8 * i);
    }
    pthread_mutex_unlock(&m->lock);
    return v;
}

static void msix_bar_write(void *opaque, uint64_t offset, uint64_t value,
                           unsigned size)
{
    PCIMsix *m = opaque;
    uint64_t table_size = (uint64_t)m->nr * PCI_MSIX_ENTRY_SIZE;
    if (offset >= table_size || !msix_access_ok(offset, size)) {
        return; /* the PBA is read-only */
    }
    pthread_mutex_lock(&m->lock);
    unsigned first = (unsigned)(offset / PCI_MSIX_ENTRY_SIZE), last = first;
    for (unsigned i = 0; i < size && offset + i < table_size; i++) {
        uint64_t o = offset + i;
        uint8_t b = (uint8_t)(value >> (8 * i));
        unsigned field = o % PCI_MSIX_ENTRY_SIZE;
        if (field >= 12) {
            /* Vector control: only the mask bit is defined. */
            b = field == 12 ? (b & PCI_MSIX_ENTRY_CTRL_MASKBIT) : 0;
        }
        m->table[o] = b;
        last = (unsigned)(o / PCI_MSIX_ENTRY_SIZE);
    }
    for (unsigned v = first; v <= last; v++) {
        msix_vector_sync(m, v);
    }
    pthread_mutex_unlock(&m->lock);
}

static const IORegionOps msix_bar_ops = {
    .read = msix_bar_read,
    .write = msix_bar_write,
};

int pci_msix_init(PCIDevice *d, unsigned nr_vectors, unsigned bar)
{
    if (nr_vectors == 0 || nr_vectors > PCI_MSIX_MAX_VECTORS || d->msix) {
        return -EINVAL;
    }
    PCIMsix *m = g_new0(PCIMsix, 1);
    uint64_t table_size = (uint64_t)nr_vectors * PCI_MSIX_ENTRY_SIZE;
    uint64_t pba_size = ((nr_vectors + 63) / 64) * 8;
    m->pba_offset = MAX(0x800, table_size);
    m->bar_size = 4096;
    while (m->bar_size < m->pba_offset + pba_size) {
        m->bar_size <<= 1;
    }
    /* Lock-free region: msix->lock serialises, and a table write only
     * updates routes (ioctls), never the address space. */
    int r = pci_device_set_bar(d, bar, m->bar_size, false, false,
                               &msix_bar_ops, m, 0);
    if (r < 0) {
        g_free(m);
        return r;
    }
    int cap = pci_device_add_capability(d, PCI_CAP_ID_MSIX,
                                        PCI_MSIX_CAP_SIZE);
    if (cap < 0) {
        g_free(m);
        return cap;
    }
    pthread_mutex_init(&m->lock, NULL);
    m->dev = d;
    m->nr = nr_vectors;
    m->cap = (unsigned)cap;
    m->table = g_malloc0(table_size);
    m->pba = g_new0(uint64_t, (nr_vectors + 63) / 64);
    m->vec = g_new0(MsixVector, nr_vectors);
    for (unsigned v = 0; v < nr_vectors; v++) {
        m->table[v * PCI_MSIX_ENTRY_SIZE + 12] = PCI_MSIX_ENTRY_CTRL_MASKBIT;
        m->vec[v].gsi = -1;
        m->vec[v].irqfd.fd = -1; /* created with the route */
    }
    pci_set_word(d->config + cap + PCI_MSIX_FLAGS, (uint16_t)(nr_vectors - 1));
    pci_set_word(d->wmask + cap + PCI_MSIX_FLAGS,
                 PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    pci_set_long(d->config + cap + PCI_MSIX_TABLE, bar);
    pci_set_long(d->config + cap + PCI_MSIX_PBA,
                 (uint32_t)m->pba_offset | bar);
    d->msix = m;
    return 0;
}

void pci_msix_cleanup(PCIDevice *d)
{
    PCIMsix *m = d->msix;
    if (!m) {
        return;
    }
    const PCIVMOps *ops = m->ops;
    void *opaque = m->ops_opaque;
    for (unsigned v = 0; v < m->nr; v++) {
        MsixVector *mv = &m->vec[v];
        if (mv->gsi >= 0 && ops) {
            ops->del_irqfd(opaque, &mv->irqfd, (unsigned)mv->gsi);
            ops->del_msi_route(opaque, (unsigned)mv->gsi);
        }
        event_notifier_cleanup(&mv->irqfd);
    }
    pthread_mutex_destroy(&m->lock);
    g_free(m->vec);
    g_free(m->table);
    g_free(m->pba);
    g_free(m);
    d->msix = NULL;
}

unsigned pci_msix_nr_vectors(PCIDevice *d)
{
    return d->msix ? d->msix->nr : 0;
}

bool pci_msix_is_pending(PCIDevice *d, unsigned vector)
{
    PCIMsix *m = d->msix;
    if (!m || vector >= m->nr) {
        return false;
    }
    pthread_mutex_lock(&m->lock);
    bool p = msix_pending(m, vector);
    pthread_mutex_unlock(&m->lock);
    return p;
}

EventNotifier *pci_msix_get_irqfd(PCIDevice *d, unsigned vector)
{
    PCIMsix *m = d->msix;
    return m && vector < m->nr ? &m->vec[vector].irqfd : NULL;
}
