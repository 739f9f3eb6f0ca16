#!/usr/bin/env python3
"""Write the hand-made seeds of the binary fuzz targets (fuzz-virtio-blk,
fuzz-virtio-pci).  Those targets read their input with libFuzzer's
FuzzedDataProvider, which takes integers from the END of the input; Fdp
below records values in the order the harness asks for them and emits the
bytes that make FuzzedDataProvider return exactly those values.  Keep the
call order in step with the harness (a seed that drifts is still a valid
input, only a less meaningful one).  Run from this directory."""
import os, struct


class Fdp:
    def __init__(self):
        self.consumed = []          # bytes in the order they are consumed

    def rng(self, lo, hi, v):
        """ConsumeIntegralInRange(lo, hi) returning v."""
        assert lo <= v <= hi
        r, n = hi - lo, 0
        while n < 8 and (r >> (8 * n)) > 0:
            n += 1
        x = v - lo
        self.consumed += [(x >> (8 * (n - 1 - i))) & 0xff for i in range(n)]

    def u8(self, v): self.rng(0, 0xff, v)
    def u16(self, v): self.rng(0, 0xffff, v)
    def u32(self, v): self.rng(0, 0xffffffff, v)
    def u64(self, v): self.rng(0, 2**64 - 1, v)
    def bool(self, v): self.u8(1 if v else 0)

    def data(self):
        return bytes(reversed(self.consumed))


# ---- fuzz-virtio-blk ------------------------------------------------------
IN, OUT, FLUSH, GET_ID, DISCARD, WZ, LIFETIME, BAD = range(8)
F_INDIRECT, F_EVENT_IDX = 1 << 28, 1 << 29
F_FLUSH, F_DISCARD, F_WZ = 1 << 9, 1 << 13, 1 << 14


def blk_seed(max_log2, drv_log2, nq, opts, sectors8, features, chains, io=None):
    """io: None for fuzz-virtio-blk; for fuzz-virtio-blk-io the backend
    (0 null-co, 1 null-aio, 2 file aio=threads, 3 file aio=io_uring)."""
    f = Fdp()
    f.rng(1, 8, max_log2)
    f.rng(1, max_log2, drv_log2)
    f.rng(1, 2, nq)
    f.u8(opts)
    f.rng(1, 64, sectors8)
    if io is not None:
        f.rng(0, 3, io)
    f.u64(features)
    ds = 8 * sectors8
    for c in chains:
        q, typ, sector, segs, indirect, kick = c
        f.rng(0, nq - 1, q)
        f.u8(200)                   # not rare: no "wrong" switch
        f.rng(0, 7, typ)
        f.rng(0, ds, sector)
        f.rng(0, 4, len(segs) if typ != FLUSH else 0)
        if features & F_INDIRECT:
            f.bool(indirect)
        if typ in (DISCARD, WZ):
            f.rng(0, ds + 2, sector)
            f.rng(0, 64, 8)
            f.rng(0, 2, 0)
            f.bool(True)            # 16-byte segment
        else:
            if typ == FLUSH:
                f.rng(0, 1, 0)
            for ln in segs:
                if ln % 512 == 0 and ln <= 2048:
                    f.bool(True)
                    f.rng(1, 4, ln // 512)
                else:
                    f.bool(False)
                    f.rng(1, 2048, ln)
        if features & F_EVENT_IDX:
            f.u16(0)
        else:
            f.bool(False)
        f.u8(10 if kick else 200)   # < 64: kick after this chain
    return f.data()


def write_blk():
    d = 'fuzz-virtio-blk'
    os.makedirs(d, exist_ok=True)
    dio = 'fuzz-virtio-blk-io'
    os.makedirs(dio, exist_ok=True)
    rw = [(0, OUT, 8, [2048, 2048], False, False), (0, IN, 8, [512, 1536, 2048], False, True),
          (0, FLUSH, 0, [], False, True), (0, GET_ID, 0, [20], False, True)]
    seeds = {
        'rw-plain': blk_seed(8, 8, 1, 0x13, 64, F_FLUSH, rw),
        'rw-indirect-eventidx': blk_seed(8, 6, 1, 0x13, 64,
                                         F_FLUSH | F_INDIRECT | F_EVENT_IDX,
                                         [(0, OUT, 0, [512] * 4, True, False),
                                          (0, IN, 0, [1024, 1024], True, True)] + rw),
        'two-queues': blk_seed(4, 4, 2, 0x03, 16, F_FLUSH | F_DISCARD | F_WZ,
                               [(0, OUT, 1, [512], False, False),
                                (1, IN, 1, [512], False, False),
                                (0, DISCARD, 0, [], False, False),
                                (1, WZ, 8, [], False, True)]),
        'small-queue-many': blk_seed(1, 1, 1, 0x00, 8, F_EVENT_IDX,
                                     [(0, IN, i, [512], False, i % 5 == 4) for i in range(16)]),
        'odd-lengths': blk_seed(8, 8, 1, 0x00, 64, 0,
                                [(0, IN, 3, [100, 412], False, False),
                                 (0, OUT, 60, [2048, 2048], False, False),
                                 (0, LIFETIME, 0, [16], False, False),
                                 (0, BAD, 0, [7], False, True)]),
        'readonly-4k': blk_seed(8, 8, 1, 0xec, 64, F_FLUSH,
                                [(0, OUT, 0, [2048, 2048], False, False),
                                 (0, IN, 8, [2048, 2048], False, True)]),
    }
    for name, data in seeds.items():
        open(os.path.join(d, name), 'wb').write(data)
    mix = rw + [(0, DISCARD, 0, [], False, False), (0, WZ, 8, [], False, True)]
    feats = F_FLUSH | F_DISCARD | F_WZ | F_INDIRECT
    for io, name in enumerate(['null-co', 'null-aio', 'file-threads', 'file-io-uring']):
        open(os.path.join(dio, name), 'wb').write(
            blk_seed(8, 8, 1, 0x13, 64, feats, mix, io=io))
    open(os.path.join(dio, 'file-two-queues-eventidx'), 'wb').write(
        blk_seed(4, 4, 2, 0x03, 16, feats | F_EVENT_IDX,
                 [(0, OUT, 1, [512], False, False), (1, IN, 1, [512], False, False),
                  (0, FLUSH, 0, [], False, False), (1, WZ, 8, [], False, True)], io=3))


# ---- fuzz-virtio-pci ------------------------------------------------------
RAM0, RAM1 = 0x10000, 0x20000


class Pci:
    SIZES = [1, 2, 4, 8]

    def __init__(self, nq=1, qlog2=8, vectors=0):
        self.f = Fdp()
        self.f.rng(1, 3, nq)
        self.f.rng(1, 8, qlog2)
        self.f.rng(0, 5, vectors)

    def op(self, kind, size=4, write=True):
        self.f.rng(0, 11, kind)
        self.f.rng(0, 3, self.SIZES.index(size))
        self.f.bool(write)

    def conf1_select(self, which, reg):  # which: 0 host bridge, 1 our slot
        self.op(0)
        self.f.rng(0, 2, which)
        self.f.u8(0)                      # enable bit set
        self.f.u8(reg)
        self.f.u8(200)                    # no bus/function bits

    def conf1_data(self, off, size, write, v=0):
        self.op(1, size, write)
        self.f.rng(0, 3, off)
        self.f.u32(v)

    def config(self, off, size, write, v=0):
        self.op(7, size, write)
        self.f.rng(0, 256 - size, off)
        if write:
            self.f.u32(v)

    def ram(self, gpa, size, v):
        self.op(8, size, True)
        if gpa < RAM1:
            self.f.bool(True)
            self.f.rng(0, 0x2ff8, gpa - RAM0)
        else:
            self.f.bool(False)
            self.f.rng(0, 0xff8, gpa - RAM1)
        self.f.u64(v)

    def driver_start(self, features_lo, qlog2, vector):
        self.op(9)
        self.f.u32(features_lo)
        self.f.rng(1, 8, qlog2)
        self.f.rng(0, 3, vector)

    def kick(self, q):
        self.op(10)
        self.f.rng(0, 3, q)

    def run(self):
        self.op(11)

    def common_read(self, idx):
        self.op(4, 4, False)
        self.f.rng(0, 18, idx)
        self.f.bool(True)
        self.f.rng(0, 16, 0)

    def data(self):
        return self.f.data()


def desc(p, i, addr, ln, flags, nxt):
    base = RAM0 + 16 * i
    p.ram(base, 8, addr)
    p.ram(base + 8, 8, ln | flags << 32 | nxt << 48)


def write_pci():
    d = 'fuzz-virtio-pci'
    os.makedirs(d, exist_ok=True)
    # A driver that starts the device and reads one sector.
    p = Pci()
    p.driver_start(1 << 9 | 1 << 28, 8, 1)
    desc(p, 0, RAM1, 16, 1, 1)                 # header (IN, sector 0 = zeroes)
    desc(p, 1, RAM1 + 0x100, 512, 3, 2)        # data, writable
    desc(p, 2, RAM1 + 0x400, 1, 2, 0)          # status
    p.ram(RAM0 + 0x1000 + 4, 2, 0)             # avail ring[0] = head 0
    p.ram(RAM0 + 0x1000 + 2, 2, 1)             # avail idx = 1
    p.kick(0)
    p.run()
    p.common_read(6)
    open(os.path.join(d, 'driver-read'), 'wb').write(p.data())
    # Config space through conf1: IDs, command, BAR sizing, BAR 4 moved.
    p = Pci(nq=2, qlog2=4, vectors=3)
    p.conf1_select(0, 0)
    p.conf1_data(0, 4, False)
    p.conf1_select(1, 0x04)
    p.conf1_data(0, 2, True, 0x0006)
    p.conf1_select(1, 0x20)
    p.conf1_data(0, 4, True, 0xffffffff)
    p.conf1_data(0, 4, False)
    p.conf1_data(0, 4, True, 0xd0000000)
    p.config(0x24, 4, True, 0)
    p.config(0x34, 1, False)
    p.driver_start(0, 2, 0)
    p.common_read(9)
    open(os.path.join(d, 'conf1-bars'), 'wb').write(p.data())
    # MSI-X: enable in the capability, write a table entry, kick.
    p = Pci(nq=1, qlog2=8, vectors=2)
    p.driver_start(1 << 29, 8, 0)
    p.op(5, 4, True); p.f.rng(0, 0x1007, 0); p.f.u64(0xfee00000)
    p.op(5, 4, True); p.f.rng(0, 0x1007, 8); p.f.u64(0x4041)
    p.op(5, 4, True); p.f.rng(0, 0x1007, 12); p.f.u64(0)
    p.kick(0)
    p.run()
    open(os.path.join(d, 'msix'), 'wb').write(p.data())


if __name__ == '__main__':
    write_blk()
    write_pci()
