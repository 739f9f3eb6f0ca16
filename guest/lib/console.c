/*
 * COM1 console.  Each byte costs two PIO exits (LSR poll + THR write),
 * ~50-60 us on shardvm, so keep output to a few lines per run.
 */
#include "console.h"

#include <stdint.h>

#include "format.h"
#include "io.h"

#define COM1            0x3f8
#define UART_THR        0       /* transmit holding (DLAB=0) */
#define UART_IER        1
#define UART_FCR        2
#define UART_LCR        3
#define UART_MCR        4
#define UART_LSR        5
#define UART_DLL        0       /* divisor latch (DLAB=1) */
#define UART_DLM        1
#define LSR_THRE        0x20
#define LCR_DLAB        0x80
#define LCR_8N1         0x03

/*
 * Bound on LSR polls per byte.  A VMM whose UART never reports THRE (no
 * LSR at all reads as 0) would otherwise hang the guest: after the bound
 * the UART is taken as never-ready and later bytes are written unpolled.
 * A real-speed UART needs ~90 us per byte; one poll is a ~25 us exit.
 */
#define CON_POLL_MAX    1000

/* Set once the bound was hit; racy but monotonic, so relaxed atomics. */
static int con_lsr_dead;

/* Console lock: 0 free, 1 held.  Taken with an atomic exchange. */
static int con_lock_word;

void con_init(void)
{
    outb(COM1 + UART_IER, 0);
    outb(COM1 + UART_LCR, LCR_DLAB);
    outb(COM1 + UART_DLL, 1);               /* 115200 baud */
    outb(COM1 + UART_DLM, 0);
    outb(COM1 + UART_LCR, LCR_8N1);
    outb(COM1 + UART_FCR, 0xc7);            /* FIFO on, cleared */
    outb(COM1 + UART_MCR, 0x03);            /* DTR, RTS */
    /* Firmware (SeaBIOS) may have left a partial line: start a fresh one
     * so every guest line can be matched from its beginning. */
    con_write_unlocked("\n", 1);
}

static void con_putc(char c)
{
    if (!__atomic_load_n(&con_lsr_dead, __ATOMIC_RELAXED)) {
        int i;

        for (i = 0; i < CON_POLL_MAX; i++) {
            if (inb(COM1 + UART_LSR) & LSR_THRE) {
                break;
            }
            cpu_relax();
        }
        if (i == CON_POLL_MAX) {
            __atomic_store_n(&con_lsr_dead, 1, __ATOMIC_RELAXED);
        }
    }
    outb(COM1 + UART_THR, (uint8_t)c);
}

void con_write_unlocked(const char *s, size_t len)
{
    while (len--) {
        con_putc(*s++);
    }
}

static void con_lock(void)
{
    while (__atomic_exchange_n(&con_lock_word, 1, __ATOMIC_ACQUIRE)) {
        while (__atomic_load_n(&con_lock_word, __ATOMIC_RELAXED)) {
            cpu_relax();
        }
    }
}

static void con_unlock(void)
{
    __atomic_store_n(&con_lock_word, 0, __ATOMIC_RELEASE);
}

void con_write(const char *s, size_t len)
{
    con_lock();
    con_write_unlocked(s, len);
    con_unlock();
}

static void con_sink(void *opaque, const char *s, size_t len)
{
    con_write_unlocked(s, len);
}

int con_vprintf(const char *fmt, va_list ap)
{
    int n;

    con_lock();
    n = fmt_vformat(con_sink, NULL, fmt, ap);
    con_unlock();
    return n;
}

int con_printf(const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = con_vprintf(fmt, ap);
    va_end(ap);
    return n;
}
