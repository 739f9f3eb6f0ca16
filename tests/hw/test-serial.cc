// 16550A UART register model, driven as a guest driver would.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "shardvm/serial.h"

namespace {

class Serial : public ::testing::Test {
protected:
    void SetUp() override { s_ = serial_new(Output, Irq, this); }
    void TearDown() override { serial_free(s_); }

    static size_t Output(void *opaque, const uint8_t *buf, size_t len)
    {
        auto *t = static_cast<Serial *>(opaque);
        size_t n = std::min(len, t->accept_);
        t->out_.append((const char *)buf, n);
        if (t->accept_ != SIZE_MAX) {
            t->accept_ -= n;
        }
        return n;
    }
    static void Irq(void *opaque, bool level)
    {
        static_cast<Serial *>(opaque)->irq_.push_back(level);
    }
    void Puts(const std::string &s)
    {
        for (char c : s) {
            // A polling driver: wait for THRE, then write.
            ASSERT_TRUE(serial_read(s_, UART_LSR) & UART_LSR_THRE);
            serial_write(s_, UART_THR, (uint8_t)c);
        }
    }
    size_t Receive(const std::string &s)
    {
        return serial_receive(s_, (const uint8_t *)s.data(), s.size());
    }

    SerialPort *s_ = nullptr;
    size_t accept_ = SIZE_MAX; // bytes the "console" still takes
    std::string out_;
    std::vector<bool> irq_;
};

TEST_F(Serial, TransmitGoesToOutputInOrder)
{
    Puts("hello\n");
    EXPECT_EQ(out_, "hello\n");
    EXPECT_EQ(serial_read(s_, UART_LSR) & (UART_LSR_THRE | UART_LSR_TEMT),
              UART_LSR_THRE | UART_LSR_TEMT);
}

TEST_F(Serial, ResetState)
{
    EXPECT_EQ(serial_read(s_, UART_IER), 0);
    EXPECT_EQ(serial_read(s_, UART_IIR), UART_IIR_NO_INT);
    EXPECT_EQ(serial_read(s_, UART_LCR), 0x03);
    EXPECT_EQ(serial_read(s_, UART_MCR), 0);
    EXPECT_EQ(serial_read(s_, UART_LSR), UART_LSR_THRE | UART_LSR_TEMT);
    EXPECT_EQ(serial_read(s_, UART_MSR),
              UART_MSR_DCD | UART_MSR_DSR | UART_MSR_CTS);
    EXPECT_TRUE(irq_.empty());
}

TEST_F(Serial, DivisorLatchBehindDlab)
{
    serial_write(s_, UART_LCR, UART_LCR_DLAB | 0x03);
    serial_write(s_, UART_DLL, 0x01); // 115200 baud
    serial_write(s_, UART_DLM, 0x00);
    EXPECT_EQ(serial_read(s_, UART_DLL), 0x01);
    EXPECT_EQ(serial_read(s_, UART_DLM), 0x00);
    serial_write(s_, UART_LCR, 0x03);
    // With DLAB clear the same offsets are THR/IER again.
    EXPECT_EQ(serial_read(s_, UART_IER), 0);
    EXPECT_TRUE(out_.empty()); // the DLL write was not transmitted
    Puts("x");
    EXPECT_EQ(out_, "x");
    serial_write(s_, UART_LCR, UART_LCR_DLAB);
    EXPECT_EQ(serial_read(s_, UART_DLL), 0x01);
}

TEST_F(Serial, ScratchRegister)
{
    serial_write(s_, UART_SCR, 0x5a);
    EXPECT_EQ(serial_read(s_, UART_SCR), 0x5a);
}

TEST_F(Serial, ReceiveSetsDataReadyAndDrains)
{
    EXPECT_EQ(Receive("ab"), 2u);
    EXPECT_TRUE(serial_read(s_, UART_LSR) & UART_LSR_DR);
    EXPECT_EQ(serial_read(s_, UART_RBR), 'a');
    EXPECT_TRUE(serial_read(s_, UART_LSR) & UART_LSR_DR);
    EXPECT_EQ(serial_read(s_, UART_RBR), 'b');
    EXPECT_FALSE(serial_read(s_, UART_LSR) & UART_LSR_DR);
}

TEST_F(Serial, OverrunDropsAndReportsOnce)
{
    std::string big(SERIAL_RX_SIZE, 'z');
    EXPECT_EQ(Receive(big), (size_t)SERIAL_RX_SIZE);
    EXPECT_EQ(Receive("more"), 0u);
    uint8_t lsr = serial_read(s_, UART_LSR);
    EXPECT_TRUE(lsr & UART_LSR_OE);
    EXPECT_TRUE(lsr & UART_LSR_DR);
    EXPECT_FALSE(serial_read(s_, UART_LSR) & UART_LSR_OE); // cleared on read
}

TEST_F(Serial, FifoControlClearsReceiver)
{
    Receive("abc");
    serial_write(s_, UART_FCR, UART_FCR_ENABLE | UART_FCR_CLEAR_RX);
    EXPECT_FALSE(serial_read(s_, UART_LSR) & UART_LSR_DR);
    EXPECT_EQ(serial_read(s_, UART_IIR) & UART_IIR_FIFO, UART_IIR_FIFO);
}

TEST_F(Serial, ReceiveInterrupt)
{
    serial_write(s_, UART_IER, UART_IER_RDI);
    EXPECT_TRUE(irq_.empty());
    Receive("q");
    ASSERT_EQ(irq_.size(), 1u);
    EXPECT_TRUE(irq_.back());
    EXPECT_EQ(serial_read(s_, UART_IIR) & 0x0f, UART_IIR_RDI);
    EXPECT_EQ(serial_read(s_, UART_RBR), 'q');
    ASSERT_EQ(irq_.size(), 2u);
    EXPECT_FALSE(irq_.back());
    EXPECT_EQ(serial_read(s_, UART_IIR) & 0x0f, UART_IIR_NO_INT);
}

TEST_F(Serial, TransmitEmptyInterrupt)
{
    // Enabling THRI with an empty THR interrupts at once.
    serial_write(s_, UART_IER, UART_IER_THRI);
    ASSERT_EQ(irq_.size(), 1u);
    EXPECT_TRUE(irq_.back());
    // Reading IIR that reports THRI acknowledges it.
    EXPECT_EQ(serial_read(s_, UART_IIR) & 0x0f, UART_IIR_THRI);
    EXPECT_FALSE(irq_.back());
    EXPECT_EQ(serial_read(s_, UART_IIR) & 0x0f, UART_IIR_NO_INT);
    // Each transmitted byte empties THR again.
    serial_write(s_, UART_THR, 'x');
    EXPECT_TRUE(irq_.back());
    EXPECT_EQ(serial_read(s_, UART_IIR) & 0x0f, UART_IIR_THRI);
    EXPECT_FALSE(irq_.back());
}

TEST_F(Serial, ReceiveHasPriorityOverTransmit)
{
    serial_write(s_, UART_IER, UART_IER_RDI | UART_IER_THRI);
    Receive("r");
    EXPECT_EQ(serial_read(s_, UART_IIR) & 0x0f, UART_IIR_RDI);
    serial_read(s_, UART_RBR);
    EXPECT_EQ(serial_read(s_, UART_IIR) & 0x0f, UART_IIR_THRI);
}

TEST_F(Serial, LoopbackEchoesAndMirrorsModemLines)
{
    serial_write(s_, UART_MCR, UART_MCR_LOOP | UART_MCR_DTR | UART_MCR_OUT2);
    serial_write(s_, UART_THR, 0xae);
    EXPECT_TRUE(out_.empty());
    EXPECT_EQ(serial_read(s_, UART_RBR), 0xae);
    EXPECT_EQ(serial_read(s_, UART_MSR), UART_MSR_DSR | UART_MSR_DCD);
    EXPECT_EQ(Receive("x"), 0u); // outside input is cut off
    serial_write(s_, UART_MCR, 0);
    Puts("y");
    EXPECT_EQ(out_, "y");
}

TEST_F(Serial, ConcurrentWritersLoseNothing)
{
    // Four "vCPUs" write 1000 bytes each; every byte arrives once.
    std::vector<std::thread> t;
    for (int i = 0; i < 4; i++) {
        t.emplace_back([this, i] {
            for (int k = 0; k < 1000; k++) {
                serial_write(s_, UART_THR, (uint8_t)('a' + i));
            }
        });
    }
    for (auto &th : t) {
        th.join();
    }
    ASSERT_EQ(out_.size(), 4000u);
    for (int i = 0; i < 4; i++) {
        EXPECT_EQ(std::count(out_.begin(), out_.end(), 'a' + i), 1000);
    }
}

// Issue 8 point 1: an output that refuses bytes stops the transmitter
// (THRE/TEMT clear, no THR-empty interrupt) instead of blocking; a retry
// sends the held byte and restarts it.
TEST_F(Serial, RefusedByteStopsTransmitterUntilRetry)
{
    serial_write(s_, UART_IER, UART_IER_THRI);
    EXPECT_EQ(serial_read(s_, UART_IIR) & 0x0f, UART_IIR_THRI); // ack
    accept_ = 2;
    Puts("ab");
    EXPECT_EQ(out_, "ab");
    serial_write(s_, UART_THR, 'c'); // refused: held in THR
    EXPECT_EQ(serial_read(s_, UART_LSR) & (UART_LSR_THRE | UART_LSR_TEMT),
              0);
    EXPECT_EQ(serial_read(s_, UART_IIR) & 0x0f, UART_IIR_NO_INT);
    serial_tx_retry(s_); // still no room: nothing changes
    EXPECT_EQ(serial_read(s_, UART_LSR) & UART_LSR_THRE, 0);
    EXPECT_EQ(out_, "ab");

    accept_ = SIZE_MAX;
    serial_tx_retry(s_);
    EXPECT_EQ(out_, "abc");
    EXPECT_EQ(serial_read(s_, UART_LSR) & (UART_LSR_THRE | UART_LSR_TEMT),
              UART_LSR_THRE | UART_LSR_TEMT);
    EXPECT_TRUE(irq_.back());
    EXPECT_EQ(serial_read(s_, UART_IIR) & 0x0f, UART_IIR_THRI);
    serial_tx_retry(s_); // nothing held: no output
    EXPECT_EQ(out_, "abc");
}

TEST_F(Serial, WriteWhileStoppedOverwritesHeldByte)
{
    accept_ = 0;
    serial_write(s_, UART_THR, 'x');
    serial_write(s_, UART_THR, 'y'); // the guest ignored THRE
    accept_ = SIZE_MAX;
    serial_tx_retry(s_);
    EXPECT_EQ(out_, "y");
}

TEST_F(Serial, RxSpaceHandlerWhenFullBufferDrains)
{
    static int calls;
    calls = 0;
    serial_set_rx_space_handler(s_, [](void *) { calls++; });
    EXPECT_EQ(serial_rx_room(s_), (size_t)SERIAL_RX_SIZE);
    Receive("ab");
    serial_read(s_, UART_RBR);
    EXPECT_EQ(calls, 0); // was not full
    std::string big(SERIAL_RX_SIZE - 1, 'z');
    EXPECT_EQ(Receive(big), big.size());
    EXPECT_EQ(serial_rx_room(s_), 0u);
    serial_read(s_, UART_RBR);
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(serial_rx_room(s_), 1u);
}

TEST(SerialNoCallbacks, DiscardsOutput)
{
    SerialPort *s = serial_new(nullptr, nullptr, nullptr);
    serial_write(s, UART_IER, UART_IER_THRI);
    serial_write(s, UART_THR, 'x');
    EXPECT_EQ(serial_read(s, UART_IIR) & 0x0f, UART_IIR_THRI);
    serial_free(s);
}

} // namespace
