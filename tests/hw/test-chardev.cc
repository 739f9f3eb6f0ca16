// Character backend flow control without KVM: output into a FIFO that
// nobody reads never blocks the writer and stays bounded; the main loop
// writes the backlog once the reader reads, in order; stdin is read only
// while the consumer has room (issue 8 points 1 and 6).
#include <gtest/gtest.h>

#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <string>
#include <thread>
#include <vector>

#include "shardvm/chardev.h"
#include "shardvm/main-loop.h"
#include "shardvm/serial.h"

namespace {

class Chardev_ : public ::testing::Test {
protected:
    void SetUp() override
    {
        ASSERT_EQ(main_loop_init(false, nullptr), 0);
        dir_ = g_dir_make_tmp("shardvm-cd-XXXXXX", nullptr);
        fifo_ = std::string(dir_) + "/console";
        ASSERT_EQ(mkfifo(fifo_.c_str(), 0600), 0);
    }
    void TearDown() override
    {
        if (rd_ >= 0) {
            close(rd_);
        }
        g_unlink(fifo_.c_str());
        g_rmdir(dir_);
        g_free(dir_);
        main_loop_cleanup();
    }
    // Read everything the FIFO holds now.
    std::string Drain()
    {
        std::string got;
        char buf[65536];
        ssize_t n;
        while ((n = read(rd_, buf, sizeof(buf))) > 0) {
            got.append(buf, (size_t)n);
        }
        return got;
    }
    char *dir_ = nullptr;
    std::string fifo_;
    int rd_ = -1;
};

TEST_F(Chardev_, FifoWithoutReaderIsAnErrorNotAHang)
{
    GError *err = nullptr;
    Chardev *c = chardev_new(CHARDEV_FILE, fifo_.c_str(), &err);
    EXPECT_EQ(c, nullptr);
    ASSERT_NE(err, nullptr);
    EXPECT_NE(std::string(err->message).find("No such device or address"),
              std::string::npos) << err->message;
    g_error_free(err);
}

struct Uart {
    SerialPort *s;
    Chardev *c;
    static size_t Out(void *o, const uint8_t *b, size_t n)
    {
        return chardev_write(static_cast<Uart *>(o)->c, b, n);
    }
    static void Writable(void *o) { serial_tx_retry(static_cast<Uart *>(o)->s); }
};

TEST_F(Chardev_, StalledReaderStopsTheUartAndNothingIsLost)
{
    rd_ = open(fifo_.c_str(), O_RDONLY | O_NONBLOCK);
    ASSERT_GE(rd_, 0);
    GError *err = nullptr;
    Uart u;
    u.c = chardev_new(CHARDEV_FILE, fifo_.c_str(), &err);
    ASSERT_NE(u.c, nullptr) << err->message;
    u.s = serial_new(Uart::Out, nullptr, &u);
    chardev_set_writable_handler(u.c, Uart::Writable, &u);

    // A polling guest prints 1 MiB into a FIFO nobody reads.  Every THR
    // write returns (the old code blocked here for ever); once the FIFO
    // and the chardev's buffer are full, THRE stays clear.
    std::string sent;
    size_t polls_without_thre = 0;
    for (size_t i = 0; i < (1u << 20) && polls_without_thre < 1000; i++) {
        if (!(serial_read(u.s, UART_LSR) & UART_LSR_THRE)) {
            polls_without_thre++;
            i--;
            continue;
        }
        char ch = (char)('a' + sent.size() % 26);
        serial_write(u.s, UART_THR, (uint8_t)ch);
        sent.push_back(ch);
    }
    EXPECT_EQ(polls_without_thre, 1000u) << "transmitter never stopped";
    EXPECT_LT(sent.size(), 1u << 20);
    EXPECT_EQ(chardev_get_buffered(u.c), (size_t)CHARDEV_OUT_MAX);
    EXPECT_EQ(serial_read(u.s, UART_LSR) & UART_LSR_TEMT, 0);

    // The reader wakes up: the main loop writes the backlog and restarts
    // the transmitter; the guest's bytes arrive complete and in order.
    std::string got = Drain();
    for (int pass = 0; pass < 1000 && chardev_get_buffered(u.c) > 0; pass++) {
        main_loop_wait(true);
        got += Drain();
    }
    EXPECT_EQ(chardev_get_buffered(u.c), 0u);
    EXPECT_TRUE(serial_read(u.s, UART_LSR) & UART_LSR_THRE);
    serial_write(u.s, UART_THR, '!');
    sent.push_back('!');
    got += Drain();
    EXPECT_EQ(got.size(), sent.size());
    EXPECT_TRUE(got == sent) << "output reordered or lost";

    serial_free(u.s);
    chardev_free(u.c);
}

TEST_F(Chardev_, WriteNeverBlocksAndTakesAtMostTheBound)
{
    rd_ = open(fifo_.c_str(), O_RDONLY | O_NONBLOCK);
    ASSERT_GE(rd_, 0);
    GError *err = nullptr;
    Chardev *c = chardev_new(CHARDEV_FILE, fifo_.c_str(), &err);
    ASSERT_NE(c, nullptr);
    std::vector<uint8_t> mib(1 << 20, 'q');
    size_t took = chardev_write(c, mib.data(), mib.size());
    int in_pipe = 0;
    ASSERT_EQ(ioctl(rd_, FIONREAD, &in_pipe), 0);
    EXPECT_EQ(took, (size_t)in_pipe + CHARDEV_OUT_MAX);
    EXPECT_EQ(chardev_write(c, mib.data(), 1), 0u); // full: refused
    Drain(); // so that chardev_free() can write the rest out
    for (int pass = 0; pass < 100 && chardev_get_buffered(c) > 0; pass++) {
        main_loop_wait(true);
        Drain();
    }
    chardev_free(c);
}

// stdout and stderr are one pipe (2>&1) whose reader is slow.  Output
// must not block, but O_NONBLOCK must not be set on the description that
// stderr shares: our own messages ("terminating on signal 15", "serial
// output lost") would then fail with EAGAIN and vanish, and the flag
// would stay on the caller's pipe or terminal after a SIGKILL.
TEST_F(Chardev_, StdoutNonBlockingLeavesStderrBlocking)
{
    EXPECT_EXIT(
        {
            int p[2];
            if (pipe(p) < 0 || dup2(p[1], 1) < 0 || dup2(p[1], 2) < 0) {
                _exit(2);
            }
            GError *err = nullptr;
            Chardev *c = chardev_new(CHARDEV_STDIO, nullptr, &err);
            if (!c) {
                _exit(3);
            }
            bool stderr_blocking = !(fcntl(2, F_GETFL) & O_NONBLOCK);
            // Still never blocks: the pipe and the buffer fill, the rest
            // is refused.
            std::vector<uint8_t> mib(1 << 20, 'q');
            size_t took = chardev_write(c, mib.data(), mib.size());
            bool bounded = took < mib.size();
            int fl_during = fcntl(1, F_GETFL);
            // Let chardev_free() write the rest out quickly.
            if (fcntl(p[0], F_SETFL, O_NONBLOCK) < 0) {
                _exit(4);
            }
            char buf[65536];
            while (read(p[0], buf, sizeof(buf)) > 0) {
            }
            for (int pass = 0; pass < 100 && chardev_get_buffered(c) > 0;
                 pass++) {
                main_loop_wait(true);
                while (read(p[0], buf, sizeof(buf)) > 0) {
                }
            }
            chardev_free(c);
            _exit(!stderr_blocking ? 5 : !bounded ? 6
                  : (fl_during & O_NONBLOCK) ? 7 : 0);
        },
        ::testing::ExitedWithCode(0), "");
}

// At exit the backlog is written while the reader makes progress; a
// SIGTERM that comes then (after a guest power-off already asked for the
// shutdown, so it is not the recorded reason) must end the drain at once
// instead of waiting for a slow but steady reader to take everything.
TEST_F(Chardev_, SignalDuringExitDrainDropsTheRest)
{
    EXPECT_EXIT(
        {
            main_loop_request_shutdown(SHUTDOWN_GUEST);
            int rd = open(fifo_.c_str(), O_RDONLY | O_NONBLOCK);
            GError *err = nullptr;
            Chardev *c = chardev_new(CHARDEV_FILE, fifo_.c_str(), &err);
            if (rd < 0 || !c) {
                _exit(2);
            }
            std::vector<uint8_t> mib(1 << 20, 'q');
            size_t took = chardev_write(c, mib.data(), mib.size());
            fcntl(rd, F_SETFL, 0);
            // A slow reader: one page at a time, never stalled for long.
            std::atomic<size_t> got{ 0 };
            std::thread reader([&] {
                char page[4096];
                ssize_t n;
                while ((n = read(rd, page, sizeof(page))) > 0) {
                    got += (size_t)n;
                    usleep(20000);
                }
            });
            kill(getpid(), SIGTERM); // blocked by main_loop_init: pending
            chardev_free(c);         // closes the FIFO: the reader ends
            reader.join();
            _exit(got.load() < took ? 0 : 3);
        },
        ::testing::ExitedWithCode(0), "dropped at exit");
}

// stdin backpressure: the consumer has room for 100 bytes; the rest of
// what is in the pipe stays there (the old code read and dropped it, and
// with "yes |" spun at 100% CPU) until the consumer makes room.
struct Consumer {
    size_t room = 100;
    std::string got;
    static size_t CanRead(void *o) { return static_cast<Consumer *>(o)->room; }
    static void Input(void *o, const uint8_t *b, size_t n)
    {
        auto *c = static_cast<Consumer *>(o);
        EXPECT_LE(n, c->room);
        c->got.append((const char *)b, n);
        c->room -= std::min(n, c->room);
    }
};

TEST_F(Chardev_, StdinIsReadOnlyWhileTheConsumerHasRoom)
{
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    int saved_stdin = dup(0);
    ASSERT_EQ(dup2(p[0], 0), 0);
    close(p[0]);
    std::string input(1000, 'y');
    ASSERT_EQ(write(p[1], input.data(), input.size()), (ssize_t)input.size());

    GError *err = nullptr;
    Chardev *c = chardev_new(CHARDEV_STDIO, nullptr, &err);
    ASSERT_NE(c, nullptr);
    Consumer cons;
    chardev_set_input(c, Consumer::CanRead, Consumer::Input, &cons);
    for (int pass = 0; pass < 50; pass++) {
        main_loop_wait(true);
    }
    EXPECT_EQ(cons.got.size(), 100u);
    int left = 0;
    ASSERT_EQ(ioctl(0, FIONREAD, &left), 0);
    EXPECT_EQ(left, 900) << "input beyond the consumer's room was dropped";

    cons.room = 50; // the guest read 50 bytes
    chardev_input_resume(c);
    for (int pass = 0; pass < 50; pass++) {
        main_loop_wait(true);
    }
    EXPECT_EQ(cons.got.size(), 150u);
    ASSERT_EQ(ioctl(0, FIONREAD, &left), 0);
    EXPECT_EQ(left, 850);

    chardev_free(c);
    dup2(saved_stdin, 0);
    close(saved_stdin);
    close(p[1]);
}

} // namespace
