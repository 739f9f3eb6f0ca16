/*
 * Character backends for the serial port (-serial stdio|file:PATH|null):
 * where the guest's output goes and where its input comes from.
 *
 * Output never blocks the writer (a vCPU thread, under the UART's mutex):
 * the fd is made non-blocking (stdout's flags are restored at the end), a
 * write goes straight to the fd while nothing is buffered, and what the fd
 * does not take is kept in a buffer of at most CHARDEV_OUT_MAX bytes, in
 * order.  When that is full, chardev_write() takes less than it was
 * offered; the UART then stops its transmitter (THRE/TEMT clear) until the
 * writable handler says there is room.  The main loop writes the buffer
 * out when the fd becomes writable (QEMU's G_IO_OUT watch).  So a console
 * that nobody reads (a stopped pager, a FIFO whose reader sleeps) can
 * never wedge a vCPU, vm_stop() or a SIGTERM.
 *
 * Input (stdio only) is read by a main-loop fd handler, only as much as
 * the consumer has room for; when it has none, stdin is no longer watched
 * (the rest stays in the pipe) until chardev_input_resume().
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

/* Output the chardev buffers at most (beyond what the fd itself holds). */
#define CHARDEV_OUT_MAX (64u * 1024)

/* Input callback: @len bytes arrived (never more than the last can-read
 * answer).  Main-loop thread, BQL held. */
typedef void ChardevInputFunc(void *opaque, const uint8_t *buf, size_t len);
/* How many input bytes the consumer can take now; 0 pauses input.
 * Main-loop thread, BQL held. */
typedef size_t ChardevCanReadFunc(void *opaque);
/* Output room again after chardev_write() took less than offered.
 * Main-loop thread, BQL held, no chardev lock held. */
typedef void ChardevWritableFunc(void *opaque);

/*
 * chardev_new: open the backend (@path for CHARDEV_FILE: created with mode
 * 0644, truncated, opened non-blocking: a FIFO without a reader is an
 * error at once, ENXIO).  Returns the chardev (chardev_free()) or NULL
 * with a message naming the file in @errp.  Main thread, after
 * main_loop_init() (without a main loop, output that the fd does not take
 * at once stays buffered).
 */
Chardev *chardev_new(ChardevBackend backend, const char *path,
                     GError **errp);

/*
 * chardev_write: queue @len bytes for output without blocking.  Returns
 * how many were taken (written or buffered), in order; fewer than @len
 * when the buffer is full (then the writable handler is called once room
 * is made).  After a write error (e.g. the reader of stdout went away) the
 * error is reported once on stderr and all output is discarded (taken).
 * Callers serialise their writes (the UART mutex does).  Any thread.
 */
size_t chardev_write(Chardev *c, const uint8_t *buf, size_t len);

/* chardev_set_writable_handler: @fn is told when a refused writer may try
 * again.  Main thread, before output starts. */
void chardev_set_writable_handler(Chardev *c, ChardevWritableFunc *fn,
                                  void *opaque);

/* chardev_get_buffered: bytes taken but not yet written (tests,
 * statistics).  Any thread. */
size_t chardev_get_buffered(Chardev *c);

/*
 * chardev_set_input: start delivering input to @fn (stdio backend only;
 * others never call it), at most @can_read(@opaque) bytes at a time; when
 * that is 0, stdin is left alone until chardev_input_resume().  Puts the terminal in raw mode (no echo, no line
 * editing, signals still work: Ctrl-C stops shardvm) when stdin is a tty;
 * chardev_free() restores it.  stdin that cannot be polled (a regular
 * file, /dev/null), or a terminal of which shardvm is not the foreground
 * process group, is left alone.  Main-loop thread, BQL held.
 */
void chardev_set_input(Chardev *c, ChardevCanReadFunc *can_read,
                       ChardevInputFunc *fn, void *opaque);

/* chardev_input_resume: the consumer has room again: watch stdin again if
 * input was paused (done in the main loop).  Any thread, no lock needed. */
void chardev_input_resume(Chardev *c);

/*
 * chardev_free: stop input, write out buffered output while the reader
 * keeps reading (given up after a second without progress, or at once
 * after a shutdown by signal, with a note on stderr), restore stdout's
 * flags and the terminal, close the file.  NULL is ignored.  Main-loop
 * thread, BQL held, after every writer has stopped.
 */
void chardev_free(Chardev *c);

#ifdef __cplusplus
}
#endif

#endif
