/*
 * The blocking half of the file driver: what a worker thread does for a
 * request (aio=threads, and for every aio= mode the operations that
 * libaio/io_uring do not cover well: discard, write-zeroes, O_DIRECT
 * read-modify-write, the rest of a short transfer).
 */
#include "block-int.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define ZERO_CHUNK (1u << 20)

/* Vector I/O for @req from req->progress on, retrying short transfers. */
static int do_rw(BlockRequest *req, int fd)
{
    bool write = req->type == BLK_REQ_WRITE;
    struct iovec local[IOV_MAX < 64 ? IOV_MAX : 64];
    struct iovec *iov = req->iovcnt <= (int)G_N_ELEMENTS(local)
                        ? local : g_new(struct iovec, req->iovcnt);
    int ret = 0;

    while (req->progress < req->len) {
        /* the part of the vector not done yet */
        uint64_t skip = req->progress;
        int n = 0;
        for (int i = 0; i < req->iovcnt; i++) {
            size_t l = req->iov[i].iov_len;
            if (skip >= l) {
                skip -= l;
                continue;
            }
            iov[n].iov_base = (char *)req->iov[i].iov_base + skip;
            iov[n].iov_len = l - skip;
            skip = 0;
            n++;
        }
        off_t off = req->offset + req->progress;
        ssize_t r = write ? pwritev(fd, iov, n > IOV_MAX ? IOV_MAX : n, off)
                          : preadv(fd, iov, n > IOV_MAX ? IOV_MAX : n, off);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            ret = -errno;
            break;
        }
        if (r == 0) {
            if (write) {
                ret = -EIO;
                break;
            }
            /* past the end of the file: reads see zeroes */
            for (int i = 0; i < n; i++) {
                if (iov[i].iov_len) {
                    memset(iov[i].iov_base, 0, iov[i].iov_len);
                }
            }
            req->progress = req->len;
            break;
        }
        req->progress += r;
    }
    if (iov != local) {
        g_free(iov);
    }
    return ret;
}

static int pread_full(int fd, void *buf, size_t len, off_t off)
{
    while (len) {
        ssize_t r = pread(fd, buf, len, off);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            return -errno;
        }
        if (r == 0) {
            memset(buf, 0, len);
            return 0;
        }
        buf = (char *)buf + r;
        len -= r;
        off += r;
    }
    return 0;
}

/*
 * O_DIRECT write with an unaligned offset or length: read the first and
 * last aligned blocks into the bounce, lay the caller's data over them,
 * write the aligned range.  RMWs of a backend are serialised by
 * blk->rmw_lock so two of them on neighbouring bytes of one block do not
 * undo each other.  An aligned write in flight over the same block at the
 * same time is not ordered against an RMW (documented in ARCHITECTURE.md).
 */
static int do_rmw(BlockRequest *req, int fd)
{
    BlockBackend *blk = req->q->blk;
    uint32_t a = blk->align;
    char *b = req->bounce;
    int ret;

    pthread_mutex_lock(&blk->rmw_lock);
    ret = pread_full(fd, b, a, req->offset);
    if (!ret && req->len > a) {
        ret = pread_full(fd, b + req->len - a, a, req->offset + req->len - a);
    }
    if (!ret) {
        char *dst = b + (req->user_offset - req->offset);
        for (int i = 0; i < req->user_iovcnt; i++) {
            if (req->user_iov[i].iov_len) { /* a NULL base is fine then */
                memcpy(dst, req->user_iov[i].iov_base,
                       req->user_iov[i].iov_len);
            }
            dst += req->user_iov[i].iov_len;
        }
        req->type = BLK_REQ_WRITE;
        ret = do_rw(req, fd);
    }
    pthread_mutex_unlock(&blk->rmw_lock);
    return ret;
}

static int do_discard(BlockRequest *req, int fd)
{
    BlockBackend *blk = req->q->blk;
    int r;

    if (blk->is_blockdev) {
        /* BLKDISCARD takes whole logical blocks only (EINVAL otherwise):
         * discard is a hint, so drop the partial blocks at either end */
        uint64_t ss = blk->sector_size > 0 ? blk->sector_size : 512;
        uint64_t start = (req->offset + ss - 1) / ss * ss;
        uint64_t end = (req->offset + req->len) / ss * ss;
        if (start >= end) {
            return 0;
        }
        uint64_t range[2] = { start, end - start };
        r = ioctl(fd, BLKDISCARD, range);
    } else {
        r = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                      req->offset, req->len);
    }
    if (r < 0 && (errno == EOPNOTSUPP || errno == ENOTTY)) {
        return 0; /* discard is a hint: nothing to do is fine */
    }
    return r < 0 ? -errno : 0;
}

static int write_zero_buffers(BlockRequest *req, int fd)
{
    uint64_t done = 0;
    void *zero;
    int ret = 0;

    if (posix_memalign(&zero, 4096, ZERO_CHUNK)) {
        return -ENOMEM;
    }
    memset(zero, 0, ZERO_CHUNK);
    while (done < req->len) {
        size_t n = MIN((uint64_t)ZERO_CHUNK, req->len - done);
        ssize_t r = pwrite(fd, zero, n, req->offset + done);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            ret = r < 0 ? -errno : -EIO;
            break;
        }
        done += r;
    }
    free(zero);
    return ret;
}

static int do_write_zeroes(BlockRequest *req, int fd)
{
    BlockBackend *blk = req->q->blk;
    bool unmap = req->may_unmap && blk->opts.discard == BLOCK_DISCARD_UNMAP;
    int r = -1;

    errno = EOPNOTSUPP;
    if (blk->is_blockdev) {
        uint64_t range[2] = { req->offset, req->len };
        r = ioctl(fd, BLKZEROOUT, range);
    } else {
        r = fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                      req->offset, req->len);
        if (r < 0 && errno == EOPNOTSUPP && unmap) {
            r = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                          req->offset, req->len);
        }
    }
    if (r == 0) {
        return 0;
    }
    if (errno != EOPNOTSUPP && errno != ENOTTY && errno != EINVAL) {
        return -errno;
    }
    /* O_DIRECT is fine: offset and length are whatever the caller gave,
     * so fall back to a buffered descriptor when they are unaligned. */
    if (blk->align > 1 && ((req->offset | req->len) & (blk->align - 1))) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        int bfd = open(path, O_WRONLY | O_CLOEXEC);
        if (bfd < 0) {
            return -errno;
        }
        r = write_zero_buffers(req, bfd);
        if (!r && fdatasync(bfd) < 0) {
            r = -errno;
        }
        close(bfd);
        return r;
    }
    return write_zero_buffers(req, fd);
}

int blk_req_run_sync(BlockRequest *req)
{
    int fd = req->q->blk->fd;

    if (req->rmw) {
        return do_rmw(req, fd);
    }
    switch (req->type) {
    case BLK_REQ_READ:
    case BLK_REQ_WRITE:
        return do_rw(req, fd);
    case BLK_REQ_FLUSH:
        return fdatasync(fd) < 0 ? -errno : 0;
    case BLK_REQ_DISCARD:
        return do_discard(req, fd);
    case BLK_REQ_ZEROES:
        return do_write_zeroes(req, fd);
    }
    return -EINVAL;
}
