/*
 * 16550A UART model: see include/shardvm/serial.h.
 *
 * Transmission is instantaneous while the output takes bytes: a THR write
 * reaches the output callback at once and THRE/TEMT stay set.  When the
 * output refuses the byte (its buffer is full: nobody reads the console),
 * the transmitter stops: the byte stays in THR, THRE and TEMT read clear
 * and no THR-empty interrupt comes, until serial_tx_retry() gets it out.
 * A polling guest then waits in its LSR loop, as on a real line with flow
 * control; one that writes THR anyway overwrites the held byte, as on the
 * chip.  The divisor latch, LCR framing and modem lines are stored for the
 * guest to read back but do not change behaviour.
 */
#include "shardvm/serial.h"

#include <string.h>

struct SerialPort {
    GMutex lock;             /* guards every field below */
    SerialOutputFunc *out;   /* constant after serial_new() */
    SerialIrqFunc *irq;      /* constant after serial_new() */
    SerialRxSpaceFunc *rx_space; /* set before use, then constant */
    void *opaque;            /* constant after serial_new() */

    uint8_t ier, lcr, mcr, scr, fcr;
    uint8_t dll, dlm;
    bool overrun;            /* LSR.OE, cleared by reading LSR */
    bool thr_int;            /* THR-empty interrupt pending */
    bool irq_level;          /* last level passed to @irq */
    bool tx_held;            /* THR holds a byte the output refused */
    uint8_t thr;             /* that byte */

    uint8_t rx[SERIAL_RX_SIZE]; /* ring buffer of received bytes */
    size_t rx_head, rx_count;
};

/* IIR value for the current state: highest-priority pending source. */
static uint8_t serial_iir(SerialPort *s)
{
    uint8_t fifo = (s->fcr & UART_FCR_ENABLE) ? UART_IIR_FIFO : 0;

    if ((s->ier & UART_IER_RDI) && s->rx_count) {
        return fifo | UART_IIR_RDI;
    }
    if ((s->ier & UART_IER_THRI) && s->thr_int) {
        return fifo | UART_IIR_THRI;
    }
    return fifo | UART_IIR_NO_INT;
}

/* Recompute the interrupt line; tell the callback when it changes. */
static void serial_update_irq(SerialPort *s)
{
    bool level = !(serial_iir(s) & UART_IIR_NO_INT);

    if (level != s->irq_level) {
        s->irq_level = level;
        if (s->irq) {
            s->irq(s->opaque, level);
        }
    }
}

static void serial_reset(SerialPort *s)
{
    s->ier = s->fcr = s->mcr = s->scr = 0;
    s->lcr = 0x03; /* 8N1 */
    s->dll = 0x0c; /* 9600 baud */
    s->dlm = 0;
    s->overrun = s->thr_int = s->tx_held = false;
    s->rx_head = s->rx_count = 0;
}

void serial_set_rx_space_handler(SerialPort *s, SerialRxSpaceFunc *fn)
{
    s->rx_space = fn;
}

SerialPort *serial_new(SerialOutputFunc *out, SerialIrqFunc *irq,
                       void *opaque)
{
    SerialPort *s = g_new0(SerialPort, 1);

    g_mutex_init(&s->lock);
    s->out = out;
    s->irq = irq;
    s->opaque = opaque;
    serial_reset(s);
    return s;
}

void serial_free(SerialPort *s)
{
    if (s) {
        g_mutex_clear(&s->lock);
        g_free(s);
    }
}

/* Queue one byte for the guest; false on overrun.  Lock held. */
static bool serial_rx_push(SerialPort *s, uint8_t byte)
{
    if (s->rx_count == SERIAL_RX_SIZE) {
        s->overrun = true;
        return false;
    }
    s->rx[(s->rx_head + s->rx_count) % SERIAL_RX_SIZE] = byte;
    s->rx_count++;
    return true;
}

static uint8_t serial_rx_pop(SerialPort *s)
{
    if (!s->rx_count) {
        return 0;
    }
    uint8_t byte = s->rx[s->rx_head];
    bool was_full = s->rx_count == SERIAL_RX_SIZE;
    s->rx_head = (s->rx_head + 1) % SERIAL_RX_SIZE;
    s->rx_count--;
    if (was_full && s->rx_space) {
        s->rx_space(s->opaque); /* input paused on a full buffer resumes */
    }
    return byte;
}

uint8_t serial_read(SerialPort *s, unsigned offset)
{
    bool dlab;
    uint8_t v = 0xff;

    g_mutex_lock(&s->lock);
    dlab = s->lcr & UART_LCR_DLAB;
    switch (offset) {
    case UART_RBR:
        v = dlab ? s->dll : serial_rx_pop(s);
        break;
    case UART_IER:
        v = dlab ? s->dlm : s->ier;
        break;
    case UART_IIR:
        v = serial_iir(s);
        /* Reading IIR acknowledges a THR-empty interrupt it reports. */
        if ((v & 0x0f) == UART_IIR_THRI) {
            s->thr_int = false;
        }
        break;
    case UART_LCR:
        v = s->lcr;
        break;
    case UART_MCR:
        v = s->mcr;
        break;
    case UART_LSR:
        v = s->tx_held ? 0 : UART_LSR_THRE | UART_LSR_TEMT;
        v |= s->rx_count ? UART_LSR_DR : 0;
        v |= s->overrun ? UART_LSR_OE : 0;
        s->overrun = false;
        break;
    case UART_MSR:
        if (s->mcr & UART_MCR_LOOP) {
            /* Loopback: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD. */
            v = ((s->mcr & UART_MCR_DTR) ? UART_MSR_DSR : 0) |
                ((s->mcr & UART_MCR_RTS) ? UART_MSR_CTS : 0) |
                ((s->mcr & UART_MCR_OUT1) ? UART_MSR_RI : 0) |
                ((s->mcr & UART_MCR_OUT2) ? UART_MSR_DCD : 0);
        } else {
            /* A connected line: carrier, data set ready, clear to send. */
            v = UART_MSR_DCD | UART_MSR_DSR | UART_MSR_CTS;
        }
        break;
    case UART_SCR:
        v = s->scr;
        break;
    }
    serial_update_irq(s);
    g_mutex_unlock(&s->lock);
    return v;
}

void serial_write(SerialPort *s, unsigned offset, uint8_t val)
{
    bool dlab;

    g_mutex_lock(&s->lock);
    dlab = s->lcr & UART_LCR_DLAB;
    switch (offset) {
    case UART_THR:
        if (dlab) {
            s->dll = val;
        } else if (s->mcr & UART_MCR_LOOP) {
            serial_rx_push(s, val);
            s->thr_int = true;
        } else if (s->tx_held) {
            s->thr = val; /* transmitter stopped: overwrite, as the chip */
        } else if (!s->out || s->out(s->opaque, &val, 1) == 1) {
            /* Sent at once: the holding register is empty again. */
            s->thr_int = true;
        } else {
            s->thr = val;
            s->tx_held = true;
            s->thr_int = false;
        }
        break;
    case UART_IER:
        if (dlab) {
            s->dlm = val;
        } else {
            /* Enabling THRI with an empty THR raises the interrupt. */
            if ((val & UART_IER_THRI) && !(s->ier & UART_IER_THRI) &&
                !s->tx_held) {
                s->thr_int = true;
            }
            s->ier = val & 0x0f;
        }
        break;
    case UART_FCR:
        if (val & UART_FCR_CLEAR_RX) {
            bool was_full = s->rx_count == SERIAL_RX_SIZE;
            s->rx_head = s->rx_count = 0;
            if (was_full && s->rx_space) {
                s->rx_space(s->opaque);
            }
        }
        s->fcr = val & UART_FCR_ENABLE;
        break;
    case UART_LCR:
        s->lcr = val;
        break;
    case UART_MCR:
        s->mcr = val & 0x1f;
        break;
    case UART_LSR:
    case UART_MSR:
        break; /* read-only */
    case UART_SCR:
        s->scr = val;
        break;
    }
    serial_update_irq(s);
    g_mutex_unlock(&s->lock);
}

size_t serial_receive(SerialPort *s, const uint8_t *buf, size_t len)
{
    size_t n = 0;

    g_mutex_lock(&s->lock);
    /* In loopback the line is disconnected from the outside. */
    if (!(s->mcr & UART_MCR_LOOP)) {
        while (n < len && serial_rx_push(s, buf[n])) {
            n++;
        }
    }
    serial_update_irq(s);
    g_mutex_unlock(&s->lock);
    return n;
}

size_t serial_rx_room(SerialPort *s)
{
    g_mutex_lock(&s->lock);
    size_t room = SERIAL_RX_SIZE - s->rx_count;
    g_mutex_unlock(&s->lock);
    return room;
}

void serial_tx_retry(SerialPort *s)
{
    g_mutex_lock(&s->lock);
    if (s->tx_held && s->out(s->opaque, &s->thr, 1) == 1) {
        s->tx_held = false;
        s->thr_int = true;
        serial_update_irq(s);
    }
    g_mutex_unlock(&s->lock);
}
