/*
 * In-process shardvm measurements through the KVM core API (vm.h): the
 * test guest pio.elf loaded by a minimal multiboot (a.out kludge) loader,
 * and tiny hand-assembled CPL0 guests for the ack round trips.
 */
#include "bench-vmm.h"

#include "shardvm/aio.h"
#include "shardvm/iothread.h"
#include "shardvm/memory.h"
#include "shardvm/vcpu.h"
#include "shardvm/vm.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define RAM_SIZE (256u << 20)

typedef struct BenchGuest {
    VM *vm;
    GString *console;         /* UART output; vCPU thread only */
    atomic_int exit_code;     /* isa-debug-exit value, -1 until written */
    atomic_bool done;
    atomic_int_fast64_t mark_ns[2];
    atomic_int marks;
    uint32_t *ack;            /* guest RAM */
    uint32_t acked;           /* vCPU thread (userspace variant) */
} BenchGuest;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* 16550 enough for a polling transmitter: LSR says "THR empty". */
static uint64_t uart_read(void *opaque, uint64_t off, unsigned size)
{
    return off == 5 ? 0x60 : 0;
}

static void uart_write(void *opaque, uint64_t off, uint64_t v, unsigned size)
{
    BenchGuest *g = opaque;
    if (off == 0) {
        g_string_append_c(g->console, (char)v);
    }
}

static const IORegionOps uart_ops = { uart_read, uart_write };

static void exit_write(void *opaque, uint64_t off, uint64_t v, unsigned size)
{
    BenchGuest *g = opaque;
    atomic_store(&g->exit_code, (int)v);
    atomic_store(&g->done, true);
}

static const IORegionOps exit_ops = { NULL, exit_write };
static const IORegionOps null_ops = { NULL, NULL };

static int guest_init(BenchGuest *g)
{
    VMConfig cfg = { .ram_size = RAM_SIZE, .nr_vcpus = 1 };
    GError *err = NULL;

    memset(g, 0, sizeof(*g));
    atomic_init(&g->exit_code, -1);
    g->console = g_string_new(NULL);
    g->vm = vm_new(&cfg, &err);
    if (!g->vm) {
        fprintf(stderr, "bench-vmm: %s\n", err->message);
        g_error_free(err);
        return -1;
    }
    AddressSpace *pio = vm_get_pio_space(g->vm);
    if (!address_space_add(pio, "uart", 0x3f8, 8, &uart_ops, g, 0, NULL) ||
        !address_space_add(pio, "debug-exit", 0xf4, 4, &exit_ops, g, 0, NULL)) {
        return -1;
    }
    return 0;
}

static void guest_fini(BenchGuest *g)
{
    vm_free(g->vm);
    g->vm = NULL;
    if (g->console) {
        g_string_free(g->console, TRUE);
        g->console = NULL;
    }
}

static bool guest_wait(BenchGuest *g, double seconds)
{
    int64_t end = now_ns() + (int64_t)(seconds * 1e9);
    while (!atomic_load(&g->done)) {
        if (now_ns() > end) {
            return false;
        }
        g_usleep(1000);
    }
    return true;
}

/* Load a multiboot v1 kernel with the a.out kludge fields (the test
 * guests have them) and set the BSP's entry state. */
static int load_multiboot(VM *vm, const char *path, const char *cmdline)
{
    gchar *img;
    gsize len;
    GError *err = NULL;

    if (!g_file_get_contents(path, &img, &len, &err)) {
        fprintf(stderr, "bench-vmm: %s\n", err->message);
        g_error_free(err);
        return -1;
    }
    int ret = -1;
    for (gsize off = 0; off + 32 <= len && off < 8192; off += 4) {
        uint32_t h[8];
        memcpy(h, img + off, sizeof(h));
        if (h[0] != 0x1BADB002 || h[0] + h[1] + h[2] != 0 ||
            !(h[1] & 0x10000)) {
            continue;
        }
        uint32_t header_addr = h[3], load_addr = h[4], load_end = h[5];
        uint32_t bss_end = h[6], entry = h[7];
        gsize file_off = off - (header_addr - load_addr);
        gsize n = load_end ? load_end - load_addr : len - file_off;
        if (file_off + n > len ||
            vm_memory_write(vm, load_addr, img + file_off, n) < 0) {
            break;
        }
        if (bss_end > load_addr + n) {
            void *bss = vm_gpa_to_hva(vm, load_addr + n,
                                      bss_end - load_addr - n);
            if (!bss) {
                break;
            }
            memset(bss, 0, bss_end - load_addr - n);
        }
        /* Multiboot info at 0x8000, command line after it. */
        uint32_t mbi[5] = { (1u << 0) | (1u << 2), 640,
                            (RAM_SIZE >> 10) - 1024, 0, 0x8100 };
        vm_memory_write(vm, 0x8000, mbi, sizeof(mbi));
        vm_memory_write(vm, 0x8100, cmdline, strlen(cmdline) + 1);
        VCPUEntry32 e = { .eip = entry, .eax = 0x2BADB002, .ebx = 0x8000,
                          .ecx = 1, .edx = 0x4D564853 };
        ret = vcpu_set_entry32(vm_get_vcpu(vm, 0), &e);
        break;
    }
    g_free(img);
    return ret;
}

double inproc_pio_exit_ns(const BenchVmmOpts *o)
{
    BenchGuest g;
    double ret = -1;
    char *path = g_build_filename(o->guest_dir, "pio.elf", NULL);
    char *cmd = g_strdup_printf("%s count=%" G_GUINT64_FORMAT, path,
                                o->pio_count);

    if (guest_init(&g) < 0) {
        goto out;
    }
    /* QEMU has no device at 0x510 either: a plain userspace exit. */
    address_space_add(vm_get_pio_space(g.vm), "null", 0x510, 4, &null_ops,
                      NULL, 0, NULL);
    if (load_multiboot(g.vm, path, cmd) < 0 || vm_start(g.vm, NULL) < 0) {
        fprintf(stderr, "bench-vmm: cannot boot %s in-process\n", path);
        goto out;
    }
    if (!guest_wait(&g, 120)) {
        fprintf(stderr, "bench-vmm: pio.elf did not finish\n");
        goto out;
    }
    vm_stop(g.vm);
    const char *r = strstr(g.console->str, "ns_per_op=");
    if (r) {
        ret = g_ascii_strtod(r + strlen("ns_per_op="), NULL);
    } else {
        fprintf(stderr, "bench-vmm: no RESULT from pio.elf:\n%s\n",
                g.console->str);
    }
out:
    guest_fini(&g);
    g_free(cmd);
    g_free(path);
    return ret;
}

/* ---------------------------------------------------------------- */
/* The ack guests                                                   */

#define ACK_ADDR  0x2000
#define REQ_ADDR  0x2040
#define KICK_PORT 0x90
#define MARK_PORT 0xf0

static void mark_write(void *opaque, uint64_t off, uint64_t v, unsigned size)
{
    BenchGuest *g = opaque;
    int i = atomic_fetch_add(&g->marks, 1);
    if (i < 2) {
        atomic_store(&g->mark_ns[i], now_ns());
    }
    if (i == 1) {
        atomic_store(&g->done, true);
    }
}

static const IORegionOps mark_ops = { NULL, mark_write };

/* Userspace variant: the exit itself acknowledges (vCPU thread). */
static void kick_write(void *opaque, uint64_t off, uint64_t v, unsigned size)
{
    BenchGuest *g = opaque;
    __atomic_store_n(g->ack, ++g->acked, __ATOMIC_RELEASE);
}

static const IORegionOps kick_ops = { NULL, kick_write };

typedef struct AckNotifier {
    EventNotifier e;
    BenchGuest *g;
    uint32_t *req;            /* guest RAM: the request the guest posted */
    uint32_t acked;           /* IOThread only */
    bool polled;
} AckNotifier;

/* Acknowledge the guest's latest request (like completing a virtqueue
 * request: the guest posted it in memory before kicking). */
static void ack_pending(AckNotifier *a)
{
    uint32_t req = __atomic_load_n(a->req, __ATOMIC_ACQUIRE);
    if (req != a->acked) {
        a->acked = req;
        __atomic_store_n(a->g->ack, req, __ATOMIC_RELEASE);
    }
}

static void ack_notified(EventNotifier *e)
{
    if (event_notifier_test_and_clear(e)) {
        ack_pending((AckNotifier *)e);
    }
}

/* Busy-poll: is there a request in guest memory not yet acked?  This is
 * how a polling IOThread sees virtqueue work without waiting for a kick. */
static bool ack_poll(void *opaque)
{
    AckNotifier *a = opaque;
    return __atomic_load_n(a->req, __ATOMIC_ACQUIRE) != a->acked;
}

static void ack_poll_ready(EventNotifier *e)
{
    ack_pending((AckNotifier *)e);
}

/* The handler belongs to the IOThread: attach and detach it there. */
static void ack_attach(void *opaque)
{
    AckNotifier *a = opaque;
    aio_set_event_notifier(aio_get_current_context(), &a->e, ack_notified,
                           a->polled ? ack_poll : NULL,
                           a->polled ? ack_poll_ready : NULL);
}

static void ack_detach(void *opaque)
{
    AckNotifier *a = opaque;
    aio_set_event_notifier(aio_get_current_context(), &a->e, NULL, NULL,
                           NULL);
}

/*
 * mov $1,%eax; out %al,$MARK
 * kick: mov %eax,(REQ); out %al,$KICK
 * wait: cmp (ACK),%eax; jne wait
 *       inc %eax; cmp $N+1,%eax; jne kick
 * out %al,$MARK; hlt
 */
static GByteArray *ack_guest(uint32_t n, bool wait_ack)
{
    GByteArray *c = g_byte_array_new();
    if (!wait_ack) {
        /* mov $N,%ecx; out %al,$MARK; 1: out %al,$KICK; dec %ecx; jnz 1b;
         * out %al,$MARK; hlt */
        guint8 loop[] = { 0xb9, n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff,
                          n >> 24, 0xe6, MARK_PORT, 0xe6, KICK_PORT, 0x49,
                          0x75, 0xfb, 0xe6, MARK_PORT, 0xf4 };
        g_byte_array_append(c, loop, sizeof(loop));
        return c;
    }
    guint8 head[] = { 0xb8, 1, 0, 0, 0, 0xe6, MARK_PORT };
    g_byte_array_append(c, head, sizeof(head));
    guint kick = c->len;
    guint8 out[] = { 0xa3, REQ_ADDR & 0xff, REQ_ADDR >> 8, 0, 0,
                     0xe6, KICK_PORT };
    g_byte_array_append(c, out, sizeof(out));
    guint wait = c->len;
    guint8 cmp[] = { 0x3b, 0x05, ACK_ADDR & 0xff, ACK_ADDR >> 8, 0, 0,
                     0x75, 0 };
    cmp[7] = (guint8)(int8_t)((int)wait - (int)(c->len + sizeof(cmp)));
    g_byte_array_append(c, cmp, sizeof(cmp));
    uint32_t lim = n + 1;
    guint8 tail[] = { 0x40, 0x3d, lim & 0xff, (lim >> 8) & 0xff,
                      (lim >> 16) & 0xff, lim >> 24, 0x75, 0 };
    tail[7] = (guint8)(int8_t)((int)kick - (int)(c->len + sizeof(tail)));
    g_byte_array_append(c, tail, sizeof(tail));
    guint8 end[] = { 0xe6, MARK_PORT, 0xf4 };
    g_byte_array_append(c, end, sizeof(end));
    return c;
}

double inproc_ack_ns(const BenchVmmOpts *o, bool ioeventfd, bool wait_ack,
                     bool polled)
{
    BenchGuest g;
    IOThread *iot = NULL;
    AckNotifier an = { .e = { -1 } };
    double ret = -1;
    GError *err = NULL;

    if (guest_init(&g) < 0) {
        goto out;
    }
    AddressSpace *pio = vm_get_pio_space(g.vm);
    address_space_add(pio, "mark", MARK_PORT, 1, &mark_ops, &g, 0, NULL);
    g.ack = vm_gpa_to_hva(g.vm, ACK_ADDR, 4);
    if (ioeventfd) {
        iot = iothread_new("bench", NULL, &err);
        if (!iot || event_notifier_init(&an.e, false) < 0) {
            goto out;
        }
        an.g = &g;
        an.req = vm_gpa_to_hva(g.vm, REQ_ADDR, 4);
        an.polled = polled;
        aio_context_run_sync(iothread_get_aio_context(iot), ack_attach, &an);
        if (vm_add_ioeventfd(g.vm, &an.e, true, KICK_PORT, 1, false, 0) < 0) {
            goto out;
        }
    } else {
        address_space_add(pio, "kick", KICK_PORT, 1, &kick_ops, &g, 0, NULL);
    }
    GByteArray *code = ack_guest((uint32_t)o->ack_count, wait_ack);
    vm_memory_write(g.vm, 0x1000, code->data, code->len);
    g_byte_array_free(code, TRUE);
    VCPUEntry32 e = { .eip = 0x1000, .esp = 0x8000 };
    if (vcpu_set_entry32(vm_get_vcpu(g.vm, 0), &e) < 0 ||
        vm_start(g.vm, NULL) < 0) {
        goto out;
    }
    if (!guest_wait(&g, 120)) {
        fprintf(stderr, "bench-vmm: ack guest did not finish\n");
        goto out;
    }
    ret = (double)(atomic_load(&g.mark_ns[1]) - atomic_load(&g.mark_ns[0])) /
          (double)o->ack_count;
out:
    if (err) {
        fprintf(stderr, "bench-vmm: %s\n", err->message);
        g_error_free(err);
    }
    if (g.vm) {
        vm_stop(g.vm);
        if (ioeventfd && an.e.fd >= 0) {
            vm_del_ioeventfd(g.vm, &an.e, true, KICK_PORT, 1, false, 0);
            aio_context_run_sync(iothread_get_aio_context(iot), ack_detach,
                                 &an);
        }
    }
    guest_fini(&g);
    if (iot) {
        iothread_free(iot);
    }
    if (an.e.fd >= 0) {
        event_notifier_cleanup(&an.e);
    }
    return ret;
}
