/*
 * 8250/16550A UART register model (the PC's COM1 at 0x3f8, IRQ 4).
 *
 * The model is independent of KVM and of the main loop: the machine maps
 * its eight registers into the PIO address space and calls serial_read() /
 * serial_write() from the vCPU thread; bytes the guest transmits go to an
 * output callback, bytes for the guest arrive through serial_receive().
 *
 * Locking: the port has its own mutex and does not need the BQL.  A vCPU
 * writing to THR must not wait for the main loop (which holds the BQL for
 * whole iterations), and the mutex is all that orders concurrent writers:
 * the output callback runs under it, so bytes leave in the order the
 * guest wrote them.
 *
 * Flow control: the output callback may refuse a byte (return 0, e.g. the
 * console's buffer is full).  The transmitter then stops: the byte stays
 * in THR and LSR shows THRE and TEMT clear until serial_tx_retry() gets
 * it out (QEMU's serial does the same with its chardev's write watch).
 */
#ifndef SHARDVM_SERIAL_H
#define SHARDVM_SERIAL_H

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SERIAL_COM1_BASE 0x3f8
#define SERIAL_COM1_IRQ  4
#define SERIAL_NR_REGS   8

/* Receive buffer size.  A full buffer drops input and sets LSR.OE, like an
 * overrun on the real chip (whose FIFO holds 16 bytes). */
#define SERIAL_RX_SIZE 4096

/* Register offsets from the base port. */
enum {
    UART_RBR = 0, /* read, DLAB=0: receive buffer */
    UART_THR = 0, /* write, DLAB=0: transmit holding */
    UART_DLL = 0, /* DLAB=1: divisor latch low */
    UART_IER = 1, /* DLAB=0: interrupt enable */
    UART_DLM = 1, /* DLAB=1: divisor latch high */
    UART_IIR = 2, /* read: interrupt identification */
    UART_FCR = 2, /* write: FIFO control */
    UART_LCR = 3, /* line control (bit 7: DLAB) */
    UART_MCR = 4, /* modem control */
    UART_LSR = 5, /* line status */
    UART_MSR = 6, /* modem status */
    UART_SCR = 7, /* scratch */
};

/* Bits the model implements. */
#define UART_IER_RDI  0x01 /* received data available */
#define UART_IER_THRI 0x02 /* transmit holding register empty */
#define UART_IIR_NO_INT 0x01
#define UART_IIR_THRI   0x02
#define UART_IIR_RDI    0x04
#define UART_IIR_FIFO   0xc0 /* FIFOs enabled (FCR bit 0) */
#define UART_FCR_ENABLE   0x01
#define UART_FCR_CLEAR_RX 0x02
#define UART_LCR_DLAB 0x80
#define UART_MCR_DTR  0x01
#define UART_MCR_RTS  0x02
#define UART_MCR_OUT1 0x04
#define UART_MCR_OUT2 0x08
#define UART_MCR_LOOP 0x10
#define UART_LSR_DR   0x01
#define UART_LSR_OE   0x02
#define UART_LSR_THRE 0x20
#define UART_LSR_TEMT 0x40
#define UART_MSR_CTS  0x10
#define UART_MSR_DSR  0x20
#define UART_MSR_RI   0x40
#define UART_MSR_DCD  0x80

/* Guest output: @len bytes the guest transmitted, in order.  Returns how
 * many were taken; fewer stops the transmitter (see above).  Called with
 * the port's mutex held, on the thread that wrote THR (or that called
 * serial_tx_retry()). */
typedef size_t SerialOutputFunc(void *opaque, const uint8_t *buf, size_t len);
/* The receive buffer was full and the guest just made room.  Called with
 * the port's mutex held, on the vCPU thread that read; must not block. */
typedef void SerialRxSpaceFunc(void *opaque);
/* Interrupt line: called with the new level when it changes, with the
 * port's mutex held. */
typedef void SerialIrqFunc(void *opaque, bool level);

typedef struct SerialPort SerialPort;

/*
 * serial_new: a port in its reset state.  @out receives the transmitted
 * bytes (NULL: discarded); @irq (may be NULL) follows the interrupt line.
 * Any thread.  Free with serial_free().
 */
SerialPort *serial_new(SerialOutputFunc *out, SerialIrqFunc *irq,
                       void *opaque);

/* serial_free: free the port.  No other thread may use it any more. */
void serial_free(SerialPort *s);

/* serial_read: guest read of register @offset (0-7).  Any thread. */
uint8_t serial_read(SerialPort *s, unsigned offset);

/* serial_write: guest write of @val to register @offset (0-7).  Any thread;
 * a THR write calls the output callback before returning. */
void serial_write(SerialPort *s, unsigned offset, uint8_t val);

/* serial_set_rx_space_handler: call @fn(opaque) when a full receive
 * buffer gets room.  Before the port is used. */
void serial_set_rx_space_handler(SerialPort *s, SerialRxSpaceFunc *fn);

/* serial_rx_room: how many input bytes serial_receive() would take now
 * (a chardev reads no more than that).  Any thread. */
size_t serial_rx_room(SerialPort *s);

/* serial_tx_retry: the output has room again: send the byte held in THR,
 * if any; then THRE/TEMT are set and a THR-empty interrupt is raised.
 * Any thread (the main loop's writable handler). */
void serial_tx_retry(SerialPort *s);

/*
 * serial_receive: queue @len bytes of input for the guest.  Returns how
 * many were queued; the rest are dropped (overrun, LSR.OE).  Any thread
 * (the main loop's stdin handler).
 */
size_t serial_receive(SerialPort *s, const uint8_t *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif
