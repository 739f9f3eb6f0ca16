/*
 * Image locking, compatible with QEMU's scheme (see QEMU's
 * docs/devel/... "image locking" and block/file-posix.c raw_apply_lock_bytes):
 * open file description (OFD) locks on single bytes of the image:
 *   byte 100 + i: "I use permission i"             (shared/read lock)
 *   byte 200 + i: "I do not let others have perm i" (shared/read lock)
 * with QEMU's permission numbering (0 consistent-read, 1 write,
 * 2 write-unchanged, 3 resize).  An opener takes its bytes, then asks the
 * kernel (F_OFD_GETLK with a write lock) whether another description holds
 * 200 + i for a permission it uses, or 100 + i for one it denies: either
 * is a conflict.  So a second shardvm or a QEMU opening the image
 * read-write is refused, while several read-only openers coexist.
 *
 * What shardvm takes:
 *   read-write: uses consistent-read, write, write-unchanged; denies
 *               write and resize to others (QEMU's default for a disk).
 *   read-only:  uses consistent-read; denies write and resize.
 * The locks go away with the file description (close()).
 */
#include "block-int.h"
#include "shardvm/error.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#define LOCK_PERM_BASE 100
#define LOCK_SHARED_BASE 200

enum {
    PERM_CONSISTENT_READ = 1 << 0,
    PERM_WRITE = 1 << 1,
    PERM_WRITE_UNCHANGED = 1 << 2,
    PERM_RESIZE = 1 << 3,
    PERM_COUNT = 4,
};

static const char *const perm_names[PERM_COUNT] = {
    "consistent read", "write", "write unchanged", "resize",
};

static int lock_byte(int fd, off_t byte)
{
    struct flock fl = {
        .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1,
    };
    return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* True when another description holds a lock on @byte. */
static int byte_taken(int fd, off_t byte)
{
    struct flock fl = {
        .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1,
    };
    if (fcntl(fd, F_OFD_GETLK, &fl) < 0) {
        return -errno;
    }
    return fl.l_type != F_UNLCK;
}

int blk_lock_image(int fd, const char *filename, bool read_only,
                   BlockLocking locking, GError **errp)
{
    unsigned perm = PERM_CONSISTENT_READ;
    unsigned denied = PERM_WRITE | PERM_RESIZE;
    int r;

    if (locking == BLOCK_LOCKING_OFF) {
        return 0;
    }
    if (!read_only) {
        perm |= PERM_WRITE | PERM_WRITE_UNCHANGED;
    }
    for (int i = 0; i < PERM_COUNT; i++) {
        r = 0;
        if (perm & (1u << i)) {
            r = lock_byte(fd, LOCK_PERM_BASE + i);
        }
        if (!r && (denied & (1u << i))) {
            r = lock_byte(fd, LOCK_SHARED_BASE + i);
        }
        if (r == -EINVAL && locking == BLOCK_LOCKING_AUTO) {
            return 0; /* no OFD locks here: auto means off (QEMU's rule) */
        }
        if (r < 0) {
            return shardvm_error_set(errp, r, "Failed to lock byte %d of "
                                     "'%s': %s", LOCK_PERM_BASE + i, filename,
                                     g_strerror(-r));
        }
    }
    for (int i = 0; i < PERM_COUNT; i++) {
        const char *what = NULL;
        if ((perm & (1u << i)) &&
            (r = byte_taken(fd, LOCK_SHARED_BASE + i)) != 0) {
            what = "Failed to get \"%s\" lock";
        } else if ((denied & (1u << i)) &&
                   (r = byte_taken(fd, LOCK_PERM_BASE + i)) != 0) {
            what = "Failed to get shared \"%s\" lock";
        }
        if (r < 0) {
            return shardvm_error_set(errp, r, "'%s': lock test: %s",
                                     filename, g_strerror(-r));
        }
        if (what) {
            g_autofree char *head = g_strdup_printf(what, perm_names[i]);
            return shardvm_error_set(errp, -EBUSY, "%s: is another process "
                                     "(shardvm or QEMU) using the image "
                                     "'%s'? (locking=off disables the "
                                     "check)", head, filename);
        }
    }
    return 0;
}
