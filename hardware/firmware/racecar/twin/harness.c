/* racecar-twin: runs the race car firmware ELF in simavr, in real time, for the Python twin.
 *
 *   racecar-twin FIRMWARE.elf UART_FD CTL_FD [SUPPLY_MV]
 *
 * UART_FD (a stream socket or pipe pair end): bytes read from it enter the AVR's USART0 receiver
 * (at the configured baud rate, simavr's model), bytes the AVR transmits are written to it.
 * CTL_FD (a stream socket): the side channel, one line per message.
 *   harness -> twin:  {"t": SIM_S, "steer_us": US, "throttle_us": US, "lag": S, "boots": N,
 *                      "frame_t": SIM_S of the last frame delimiter fed to the UART}
 *                     every 5 ms of AVR time and whenever a pulse width changes. A pulse width is
 *                     Timer1's OCR1x / (F_CPU / prescaler), or 0 when the pin is not driven by
 *                     the timer (output compare off, pin not an output, timer stopped).
 *   twin -> harness:  "reset" (the board resets, as on a brown-out or a watchdog bite),
 *                     "supply MV" (millivolts on ADC0), "quit".
 * The AVR's clock is held to the wall clock: the harness sleeps in poll() while ahead and
 * reports in "lag" how far behind it runs when the machine is too slow.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "avr_adc.h"
#include "avr_uart.h"
#include "sim_avr.h"
#include "sim_elf.h"

#define F_CPU_HZ 16000000u
/* ATmega328P data addresses of Timer1 and port B. */
#define REG_TCCR1A 0x80
#define REG_TCCR1B 0x81
#define REG_ICR1L 0x86
#define REG_OCR1AL 0x88
#define REG_OCR1BL 0x8A
#define REG_DDRB 0x24

static avr_t *avr;
static int uart_fd, ctl_fd;
static int xon = 1;
static uint8_t pending[4096];
static size_t pending_len;
static uint8_t tx_buf[4096];
static size_t tx_len;
static unsigned boots = 1;
static avr_cycle_count_t cycle0, last_frame_cycle;

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void write_all(int fd, const void *data, size_t n)
{
    const uint8_t *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                struct pollfd pf = {fd, POLLOUT, 0};
                if (poll(&pf, 1, 100) <= 0) return; /* reader stuck: drop, never hang */
                continue;
            }
            exit(0); /* the twin went away */
        }
        p += w;
        n -= (size_t)w;
    }
}

static void on_uart_out(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq;
    (void)param;
    if (tx_len < sizeof tx_buf) tx_buf[tx_len++] = (uint8_t)value;
}

static void on_xon(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq;
    (void)value;
    (void)param;
    xon = 1;
}

static void on_xoff(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq;
    (void)value;
    (void)param;
    xon = 0;
}

static void no_sleep(avr_t *a, avr_cycle_count_t how_long)
{
    (void)a;
    (void)how_long; /* pacing is done in the main loop, where the sockets are polled */
}

static uint16_t reg16(uint16_t low)
{
    return (uint16_t)(avr->data[low] | (avr->data[low + 1] << 8));
}

static double pulse_us(uint8_t com_bit, uint8_t ddr_bit, uint16_t ocr_low)
{
    static const unsigned prescalers[8] = {0, 1, 8, 64, 256, 1024, 0, 0};
    unsigned prescaler = prescalers[avr->data[REG_TCCR1B] & 0x07];
    if (!prescaler || !(avr->data[REG_TCCR1A] & com_bit) || !(avr->data[REG_DDRB] & ddr_bit))
        return 0.0;
    return reg16(ocr_low) * (double)prescaler * 1e6 / F_CPU_HZ;
}

static void feed_uart(void)
{
    avr_irq_t *in = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_INPUT);
    size_t i = 0;
    while (i < pending_len && xon) {
        if (pending[i] == 0) last_frame_cycle = avr->cycle - cycle0;
        avr_raise_irq(in, pending[i++]);
    }
    memmove(pending, pending + i, pending_len - i);
    pending_len -= i;
}

static void set_supply(unsigned mv)
{
    avr_raise_irq(avr_io_getirq(avr, AVR_IOCTL_ADC_GETIRQ, ADC_IRQ_ADC0), mv);
}

static void handle_ctl_line(char *line)
{
    unsigned mv;
    if (strcmp(line, "reset") == 0) {
        avr_reset(avr);
        boots++;
        pending_len = 0;
        xon = 1;
    } else if (sscanf(line, "supply %u", &mv) == 1) {
        set_supply(mv);
    } else if (strcmp(line, "quit") == 0) {
        exit(0);
    }
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s FIRMWARE.elf UART_FD CTL_FD [SUPPLY_MV]\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    uart_fd = atoi(argv[2]);
    ctl_fd = atoi(argv[3]);
    fcntl(uart_fd, F_SETFL, fcntl(uart_fd, F_GETFL) | O_NONBLOCK);
    fcntl(ctl_fd, F_SETFL, fcntl(ctl_fd, F_GETFL) | O_NONBLOCK);

    elf_firmware_t fw;
    memset(&fw, 0, sizeof fw);
    if (elf_read_firmware(argv[1], &fw) != 0) {
        fprintf(stderr, "racecar-twin: cannot read %s\n", argv[1]);
        return 1;
    }
    strcpy(fw.mmcu, "atmega328p");
    fw.frequency = F_CPU_HZ;
    fw.vcc = fw.avcc = fw.aref = 5000;
    avr = avr_make_mcu_by_name(fw.mmcu);
    if (!avr) {
        fprintf(stderr, "racecar-twin: simavr has no atmega328p\n");
        return 1;
    }
    avr_init(avr);
    avr->log = LOG_ERROR;
    avr_load_firmware(avr, &fw);
    avr->sleep = no_sleep;

    uint32_t flags = 0;
    avr_ioctl(avr, AVR_IOCTL_UART_GET_FLAGS('0'), &flags);
    flags &= ~AVR_UART_FLAG_STDIO;
    avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0'), &flags);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT),
                            on_uart_out, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XON),
                            on_xon, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XOFF),
                            on_xoff, NULL);
    if (argc > 4) set_supply((unsigned)atoi(argv[4]));

    const avr_cycle_count_t slice = F_CPU_HZ / 2000; /* 0.5 ms of AVR time per slice */
    cycle0 = avr->cycle;
    double wall0 = wall_now(), last_report = -1.0, lag = 0.0;
    double last_steer = -1.0, last_throttle = -1.0;
    char ctl_line[256];
    size_t ctl_len = 0;

    for (;;) {
        avr_cycle_count_t target = avr->cycle + slice;
        while (avr->cycle < target) {
            int state = avr_run(avr);
            if (state == cpu_Done || state == cpu_Crashed) {
                fprintf(stderr, "racecar-twin: AVR stopped (state %d); resetting\n", state);
                avr_reset(avr);
                boots++;
            }
        }
        if (tx_len) {
            write_all(uart_fd, tx_buf, tx_len);
            tx_len = 0;
        }
        double sim_t = (double)(avr->cycle - cycle0) / F_CPU_HZ;
        double steer = pulse_us(0x80, 0x02, REG_OCR1AL);    /* COM1A1, PB1 */
        double throttle = pulse_us(0x20, 0x04, REG_OCR1BL); /* COM1B1, PB2 */
        if (steer != last_steer || throttle != last_throttle || sim_t - last_report >= 0.005) {
            char msg[160];
            int n = snprintf(msg, sizeof msg,
                             "{\"t\": %.6f, \"steer_us\": %.1f, \"throttle_us\": %.1f, "
                             "\"lag\": %.6f, \"boots\": %u, \"frame_t\": %.6f}\n",
                             sim_t, steer, throttle, lag, boots,
                             (double)last_frame_cycle / F_CPU_HZ);
            write_all(ctl_fd, msg, (size_t)n);
            last_report = sim_t;
            last_steer = steer;
            last_throttle = throttle;
        }

        double ahead = sim_t - (wall_now() - wall0);
        lag = ahead < 0 ? -ahead : 0.0;
        if (lag > 0.25) { /* too slow to catch up: keep real time, report the gap */
            wall0 = wall_now() - sim_t;
        }
        struct pollfd fds[2] = {{uart_fd, POLLIN, 0}, {ctl_fd, POLLIN, 0}};
        int timeout_ms = ahead > 0.001 ? (int)(ahead * 1000.0) : 0;
        if (poll(fds, 2, timeout_ms) < 0 && errno != EINTR) return 1;
        if (fds[0].revents & (POLLHUP | POLLERR)) return 0;
        if (fds[1].revents & (POLLHUP | POLLERR)) return 0;
        if ((fds[0].revents & POLLIN) && pending_len < sizeof pending) {
            ssize_t r = read(uart_fd, pending + pending_len, sizeof pending - pending_len);
            if (r == 0) return 0;
            if (r > 0) pending_len += (size_t)r;
        }
        if (fds[1].revents & POLLIN) {
            char buf[256];
            ssize_t r = read(ctl_fd, buf, sizeof buf);
            if (r == 0) return 0;
            for (ssize_t i = 0; i < r; i++) {
                if (buf[i] == '\n') {
                    ctl_line[ctl_len] = 0;
                    handle_ctl_line(ctl_line);
                    ctl_len = 0;
                } else if (ctl_len < sizeof ctl_line - 1) {
                    ctl_line[ctl_len++] = buf[i];
                }
            }
        }
        if (pending_len) feed_uart();
        /* Sleep the rest of the slice when ahead (poll above returned early on input). */
        ahead = sim_t - (wall_now() - wall0);
        if (ahead > 0.0005) {
            struct timespec ts = {0, (long)(ahead * 1e9)};
            nanosleep(&ts, NULL);
        }
    }
}
