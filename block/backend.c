/*
 * BlockBackend: opening an image (flags per cache mode, O_DIRECT alignment,
 * size, locks), reference counting, accessors and statistics.
 */
#include "block-int.h"
#include "shardvm/error.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * The alignment O_DIRECT needs: a block device says (BLKSSZGET); for a
 * file, the kernel says (statx STATX_DIOALIGN, Linux 6.1+: the larger of
 * the memory and offset alignments), else try reading 512 and then 4096
 * bytes into a buffer aligned to just that size (what QEMU's
 * raw_probe_alignment does, in short).  The read probe alone is not
 * enough: some file systems take 512-byte O_DIRECT reads on 4 KiB-sector
 * disks but refuse such writes, and an empty file reads at any alignment.
 */
static uint32_t probe_alignment(int fd, bool is_blockdev)
{
    static const uint32_t sizes[] = { 512, 4096 };
    struct statx stx;
    void *buf;

    if (is_blockdev) {
        int ssz = 0;
        if (ioctl(fd, BLKSSZGET, &ssz) == 0 && ssz >= 512) {
            return ssz;
        }
    } else if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
               (stx.stx_mask & STATX_DIOALIGN) &&
               stx.stx_dio_offset_align > 0) {
        return MAX(MAX(stx.stx_dio_offset_align, stx.stx_dio_mem_align),
                   512u);
    }
    if (posix_memalign(&buf, 8192, 8192 * 2)) {
        return 4096;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(sizes); i++) {
        /* aligned to sizes[i] but not to 2 * sizes[i] */
        if (pread(fd, (char *)buf + sizes[i], sizes[i], 0) >= 0) {
            free(buf);
            return sizes[i];
        }
    }
    free(buf);
    return 4096;
}

static int open_file(BlockBackend *blk, GError **errp)
{
    const BlockOptions *o = &blk->opts;
    /* O_NONBLOCK: opening a FIFO read-only would wait for a writer; the
     * type check below refuses it, and clears the flag for an image. */
    int flags = (o->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK;
    struct stat st;
    int r;

    if (o->aio == BLOCK_AIO_NATIVE && !o->cache_direct) {
        /* QEMU 7.2 refuses this too: libaio is synchronous without it. */
        return shardvm_error_set(errp, -EINVAL, "aio=native was specified, "
                                 "but it requires cache.direct=on, which "
                                 "was not specified (%s)", o->filename);
    }
    if (o->cache_direct) {
        flags |= O_DIRECT;
    }
    blk->fd = open(o->filename, flags);
    if (blk->fd < 0 && errno == EINVAL && o->cache_direct) {
        return shardvm_error_set(errp, -EINVAL, "Could not open '%s': "
                                 "cache=none / cache.direct=on needs "
                                 "O_DIRECT, which its file system does not "
                                 "support", o->filename);
    }
    if (blk->fd < 0) {
        r = -errno;
        return shardvm_error_set(errp, r, "Could not open '%s': %s",
                                 o->filename, g_strerror(-r));
    }
    if (fstat(blk->fd, &st) < 0) {
        r = -errno;
        return shardvm_error_set(errp, r, "Could not stat '%s': %s",
                                 o->filename, g_strerror(-r));
    }
    if (S_ISBLK(st.st_mode)) {
        blk->is_blockdev = true;
        if (ioctl(blk->fd, BLKGETSIZE64, &blk->size) < 0) {
            r = -errno;
            return shardvm_error_set(errp, r, "'%s': BLKGETSIZE64: %s",
                                     o->filename, g_strerror(-r));
        }
    } else if (S_ISREG(st.st_mode)) {
        blk->size = st.st_size;
    } else {
        return shardvm_error_set(errp, -EINVAL, "'%s' is neither a regular "
                                 "file nor a block device", o->filename);
    }
    if (fcntl(blk->fd, F_SETFL, fcntl(blk->fd, F_GETFL) & ~O_NONBLOCK) < 0) {
        r = -errno;
        return shardvm_error_set(errp, r, "'%s': F_SETFL: %s", o->filename,
                                 g_strerror(-r));
    }
    if (blk->size % 512) {
        return shardvm_error_set(errp, -EINVAL, "'%s': size %" G_GUINT64_FORMAT
                                 " is not a multiple of 512", o->filename,
                                 blk->size);
    }
    blk->align = o->cache_direct ? probe_alignment(blk->fd, blk->is_blockdev)
                                 : 1;
    if (blk->size % blk->align) {
        /* the read-modify-write of its last block would write past the
         * end and grow the image */
        return shardvm_error_set(errp, -EINVAL, "'%s': size %"
                                 G_GUINT64_FORMAT " is not a multiple of "
                                 "%u, the O_DIRECT alignment of its file "
                                 "system (cache=none/directsync); resize it "
                                 "or use a cache mode without O_DIRECT",
                                 o->filename, blk->size, blk->align);
    }
    if (blk->is_blockdev && ioctl(blk->fd, BLKSSZGET, &blk->sector_size) < 0) {
        blk->sector_size = 512;
    }
    return blk_lock_image(blk->fd, o->filename, o->read_only, o->locking,
                          errp);
}

static BlockBackend *backend_alloc(const BlockOptions *opts)
{
    BlockBackend *blk = g_new0(BlockBackend, 1);

    atomic_init(&blk->refcnt, 1);
    blk->fd = -1;
    block_options_copy(&blk->opts, opts);
    blk->align = 1;
    atomic_init(&blk->writeback, opts->cache_writeback);
    pthread_mutex_init(&blk->rmw_lock, NULL);
    return blk;
}

BlockBackend *blk_open(const BlockOptions *opts, GError **errp)
{
    BlockBackend *blk;

    if (opts->driver == BLOCK_DRIVER_BLKDEBUG) {
        shardvm_error_set(errp, -EINVAL, "blkdebug '%s': needs the node it "
                          "is layered over (image=NODE)",
                          opts->id ? opts->id : "");
        return NULL;
    }
    blk = backend_alloc(opts);
    if (opts->driver == BLOCK_DRIVER_FILE) {
        if (!opts->filename) {
            shardvm_error_set(errp, -EINVAL, "driver 'file' needs a file name");
            goto fail;
        }
        if (open_file(blk, errp) < 0) {
            goto fail;
        }
    } else {
        if (opts->null_size % 512) {
            shardvm_error_set(errp, -EINVAL, "null driver: size %"
                              G_GUINT64_FORMAT " is not a multiple of 512",
                              opts->null_size);
            goto fail;
        }
        blk->size = opts->null_size;
    }
    return blk;

fail:
    blk_unref(blk);
    return NULL;
}

BlockBackend *blk_open_blkdebug(const BlockOptions *opts, BlockBackend *image,
                                GError **errp)
{
    g_autoptr(GArray) rules = g_array_new(FALSE, FALSE,
                                          sizeof(BlockInjectRule));
    BlockOptions o;
    BlockBackend *blk;

    if (opts->driver != BLOCK_DRIVER_BLKDEBUG || !image) {
        shardvm_error_set(errp, -EINVAL, "blkdebug: no image to layer over");
        return NULL;
    }
    g_array_append_vals(rules, opts->inject, opts->nr_inject);
    if (opts->blkdebug_config &&
        blkdebug_load_config(opts->blkdebug_config, rules, errp) < 0) {
        return NULL;
    }
    /* The image's geometry and cache; flushes and discards always reach
     * the rules (the image applies its own cache.no-flush / discard). */
    o = *opts;
    o.read_only = opts->read_only || image->opts.read_only;
    o.cache_direct = image->opts.cache_direct;
    o.cache_no_flush = false;
    o.cache_writeback = blk_get_write_cache(image);
    o.discard = BLOCK_DISCARD_UNMAP;
    blk = backend_alloc(&o);
    if (blk_attach_dev(image, blk, errp) < 0) {
        blk_unref(blk);
        return NULL;
    }
    blk_ref(image);
    blk->image = image;
    blk->size = image->size;
    blk->nr_dbg_rules = rules->len;
    blk->dbg_rules = g_new0(BlkdebugRuleState, rules->len);
    for (guint i = 0; i < rules->len; i++) {
        blk->dbg_rules[i].rule = g_array_index(rules, BlockInjectRule, i);
        atomic_init(&blk->dbg_rules[i].matches, 0);
        atomic_init(&blk->dbg_rules[i].spent, false);
    }
    return blk;
}

BlockBackend *blk_get_image(const BlockBackend *blk)
{
    return blk->image;
}

void blk_ref(BlockBackend *blk)
{
    atomic_fetch_add_explicit(&blk->refcnt, 1, memory_order_relaxed);
}

/*
 * The last reference is going: make what was written durable, as QEMU does
 * when it closes an image (bdrv_close flushes) -- with cache=writeback the
 * guest's last writes may be only in the page cache, and a clean exit
 * (quit, SIGTERM, guest power-off) must leave them on disk even if the
 * guest never flushed.  Not for read-only images or cache.no-flush
 * (cache=unsafe).  A failure is reported; nothing else can be done.
 */
static void blk_flush_at_close(BlockBackend *blk)
{
    if (blk->opts.read_only || blk->opts.cache_no_flush) {
        return;
    }
    if (fdatasync(blk->fd) < 0 && errno != EINVAL && errno != EROFS) {
        fprintf(stderr, "shardvm: flushing drive '%s' at close failed: %s\n",
                blk->opts.id ? blk->opts.id : "", strerror(errno));
    }
}

void blk_unref(BlockBackend *blk)
{
    if (!blk || atomic_fetch_sub_explicit(&blk->refcnt, 1,
                                          memory_order_acq_rel) != 1) {
        return;
    }
    if (blk->fd >= 0) {
        blk_flush_at_close(blk);
        close(blk->fd); /* drops the OFD locks with the description */
    }
    if (blk->image) {
        blk_detach_dev(blk->image, blk);
        blk_unref(blk->image);
    }
    g_free(blk->dbg_rules);
    pthread_mutex_destroy(&blk->rmw_lock);
    block_options_clear(&blk->opts);
    g_free(blk);
}

int blk_attach_dev(BlockBackend *blk, void *dev, GError **errp)
{
    if (blk->dev) {
        return shardvm_error_set(errp, -EBUSY, "Drive '%s' is already in use",
                                 blk->opts.id ? blk->opts.id : "");
    }
    blk->dev = dev;
    return 0;
}

void blk_detach_dev(BlockBackend *blk, void *dev)
{
    if (blk->dev == dev) {
        blk->dev = NULL;
    }
}

const char *blk_get_id(const BlockBackend *blk)
{
    return blk->opts.id;
}

uint64_t blk_get_size(const BlockBackend *blk)
{
    return blk->size;
}

bool blk_is_read_only(const BlockBackend *blk)
{
    return blk->opts.read_only;
}

const BlockOptions *blk_get_options(const BlockBackend *blk)
{
    return &blk->opts;
}

uint32_t blk_get_request_alignment(const BlockBackend *blk)
{
    return blk->align;
}

bool blk_get_write_cache(const BlockBackend *blk)
{
    return atomic_load_explicit(&((BlockBackend *)blk)->writeback,
                                memory_order_relaxed);
}

void blk_set_write_cache(BlockBackend *blk, bool writeback)
{
    atomic_store_explicit(&blk->writeback, writeback, memory_order_relaxed);
}

#define LOAD(f) atomic_load_explicit(&((BlockBackend *)blk)->stats.f, \
                                     memory_order_relaxed)

void blk_get_stats(const BlockBackend *blk, BlockStats *out)
{
    out->rd_ops = LOAD(rd_ops);
    out->wr_ops = LOAD(wr_ops);
    out->flush_ops = LOAD(flush_ops);
    out->discard_ops = LOAD(discard_ops);
    out->zero_ops = LOAD(zero_ops);
    out->rd_bytes = LOAD(rd_bytes);
    out->wr_bytes = LOAD(wr_bytes);
    out->rd_total_ns = LOAD(rd_total_ns);
    out->wr_total_ns = LOAD(wr_total_ns);
    out->flush_total_ns = LOAD(flush_total_ns);
    out->failed_ops = LOAD(failed_ops);
    out->submit_calls = LOAD(submit_calls);
}
