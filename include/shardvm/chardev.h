/*
 * Character backends for the serial port (-serial stdio|file:PATH|null):
 * where the guest's output goes and where its input comes from.
 *
 * Output is written synchronously with write(2) on the caller's thread
 * (a vCPU thread, under the UART's mutex): nothing is buffered in user
 * space, so nothing is lost or reordered and there is nothing to flush at
 * exit.  Input (stdio only) is read by a main-loop fd handler.
 */
#ifndef SHARDVM_CHARDEV_H
#define SHARDVM_CHARDEV_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ChardevBackend {
    CHARDEV_STDIO, /* stdout; stdin is the input (raw mode on a tty) */
    CHARDEV_FILE,  /* a file, created or truncated; no input */
    CHARDEV_NONE,  /* no device at all (the machine omits the port) */
    CHARDEV_NULL,  /* output discarded, no input */
} ChardevBackend;

typedef struct Chardev Chardev;

/* Input callback: @len bytes arrived.  Main-loop thread, BQL held. */
typedef void ChardevInputFunc(void *opaque, const uint8_t *buf, size_t len);

/*
 * chardev_new: open the backend (@path for CHARDEV_FILE: created with mode
 * 0644, truncated).  Returns the chardev (chardev_free()) or NULL with a
 * message naming the file in @errp.  Main thread.
 */
Chardev *chardev_new(ChardevBackend backend, const char *path,
                     GError **errp);

/*
 * chardev_write: write all @len bytes, retrying on EINTR and waiting on
 * EAGAIN.  After a write error (e.g. the reader of stdout went away) the
 * error is reported once on stderr and further output is discarded.
 * Callers serialise their writes (the UART mutex does).  Any thread.
 */
void chardev_write(Chardev *c, const uint8_t *buf, size_t len);

/*
 * chardev_set_input: start delivering input to @fn (stdio backend only;
 * others never call it).  Puts the terminal in raw mode (no echo, no line
 * editing, signals still work: Ctrl-C stops shardvm) when stdin is a tty;
 * chardev_free() restores it.  stdin that cannot be polled (a regular
 * file, /dev/null), or a terminal of which shardvm is not the foreground
 * process group, is left alone.  Main-loop thread, BQL held.
 */
void chardev_set_input(Chardev *c, ChardevInputFunc *fn, void *opaque);

/*
 * chardev_free: stop input, restore the terminal, close the file.  NULL is
 * ignored.  Main-loop thread, after every writer has stopped.
 */
void chardev_free(Chardev *c);

#ifdef __cplusplus
}
#endif

#endif
