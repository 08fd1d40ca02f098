/* Race car firmware for an ATmega328P at 16 MHz (Arduino Uno or Nano).
 *
 *   D9  (PB1, OC1A)  steering servo signal     Timer1 fast PWM, 50 Hz, 0.5 us steps
 *   D10 (PB2, OC1B)  ESC throttle signal
 *   A0  (ADC0)       supply voltage through a divider (optional, CAR_VBAT_* below)
 *   D0/D1            UART to the host (USB bridge), CAR_BAUD 8N1
 *
 * Timer2 ticks a millisecond clock; the UART receive interrupt fills a ring buffer; the main
 * loop decodes frames (car.c), writes the pulse widths, answers with status frames and sleeps
 * until the next interrupt. The watchdog resets the board if the loop ever hangs, and a reset
 * boots into failsafe.
 */
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/sleep.h>
#include <avr/wdt.h>
#include <stdint.h>

#include "car.h"
#include "cobs.h"

#ifndef F_CPU
#error "F_CPU must be set (the Makefile does)"
#endif
#ifndef CAR_BAUD
#define CAR_BAUD 115200UL
#endif
/* Supply divider on A0: supply_mV = adc * 5000 * NUM / (1023 * DEN); NUM 0 = not wired. */
#ifndef CAR_VBAT_NUM
#define CAR_VBAT_NUM 0
#endif
#ifndef CAR_VBAT_DEN
#define CAR_VBAT_DEN 1
#endif

#define RX_RING 128 /* power of two */
static volatile uint8_t rx_ring[RX_RING];
static volatile uint8_t rx_head, rx_tail, rx_overrun;
static volatile uint32_t millis_now;

/* Timer2 CTC: one interrupt per millisecond (16 MHz / 64 / 250). */
ISR(TIMER2_COMPA_vect) { millis_now++; }

ISR(USART_RX_vect)
{
    uint8_t status = UCSR0A;
    uint8_t byte = UDR0;
    uint8_t next = (uint8_t)((rx_head + 1) & (RX_RING - 1));
    if ((status & (_BV(FE0) | _BV(DOR0))) || next == rx_tail) {
        rx_overrun = 1; /* the frame in progress is lost: counted as a bad frame */
        if (next == rx_tail) return;
    }
    rx_ring[rx_head] = byte;
    rx_head = next;
}

static uint32_t millis(void)
{
    uint8_t sreg = SREG;
    cli();
    uint32_t now = millis_now;
    SREG = sreg;
    return now;
}

static void uart_init(void)
{
    /* Double speed: 115200 baud is 2.1 % fast at 16 MHz (the Arduino core does the same). */
    uint16_t ubrr = (uint16_t)((F_CPU / (8UL * CAR_BAUD)) - 1UL);
    UBRR0H = (uint8_t)(ubrr >> 8);
    UBRR0L = (uint8_t)ubrr;
    UCSR0A = _BV(U2X0);
    UCSR0B = _BV(RXEN0) | _BV(TXEN0) | _BV(RXCIE0);
    UCSR0C = _BV(UCSZ01) | _BV(UCSZ00);
}

static void uart_write(const uint8_t *data, uint8_t n)
{
    while (n--) {
        while (!(UCSR0A & _BV(UDRE0))) {
        }
        UDR0 = *data++;
    }
}

static void pwm_init(void)
{
    /* Timer1 mode 14 (fast PWM, TOP = ICR1), clear OC1A/OC1B on match, prescaler 8:
     * 0.5 us per count, 40000 counts = 20 ms = 50 Hz. */
    ICR1 = 39999;
    OCR1A = CAR_NEUTRAL_US * 2;
    OCR1B = CAR_NEUTRAL_US * 2;
    TCCR1A = _BV(COM1A1) | _BV(COM1B1) | _BV(WGM11);
    TCCR1B = _BV(WGM13) | _BV(WGM12) | _BV(CS11);
    DDRB |= _BV(PB1) | _BV(PB2);
}

static void pwm_write(uint16_t steer_us, uint16_t throttle_us)
{
    /* 16-bit writes with interrupts off (the shared TEMP register); OCR1x is double-buffered
     * in fast PWM, so a pulse in progress is never cut. */
    uint8_t sreg = SREG;
    cli();
    OCR1A = (uint16_t)(steer_us * 2u);
    OCR1B = (uint16_t)(throttle_us * 2u);
    SREG = sreg;
}

static void clock_init(void)
{
    TCCR2A = _BV(WGM21);
    TCCR2B = _BV(CS22); /* /64 */
    OCR2A = 249;
    TIMSK2 = _BV(OCIE2A);
}

static uint16_t supply_mv(void)
{
#if CAR_VBAT_NUM == 0
    return CAR_SUPPLY_NOT_WIRED;
#else
    ADMUX = _BV(REFS0); /* AVcc reference, ADC0 */
    ADCSRA = _BV(ADEN) | _BV(ADSC) | _BV(ADPS2) | _BV(ADPS1) | _BV(ADPS0);
    while (ADCSRA & _BV(ADSC)) {
    }
    uint32_t adc = ADC;
    return (uint16_t)((adc * 5000UL * CAR_VBAT_NUM) / (1023UL * CAR_VBAT_DEN));
#endif
}

int main(void)
{
    MCUSR = 0;
    wdt_disable();
    pwm_init(); /* neutral pulses from the first period: ESCs arm on neutral */
    clock_init();
    uart_init();
    set_sleep_mode(SLEEP_MODE_IDLE);
    wdt_enable(WDTO_250MS);
    sei();

    static car_t car;
    static uint8_t frame[CAR_MAX_FRAME + 2];
    static uint8_t decoded[CAR_MAX_FRAME + 2];
    static uint8_t wire[CAR_STATUS_WIRE_MAX + 2];
    uint8_t length = 0, dropping = 0;
    car_init(&car, millis());

    for (;;) {
        wdt_reset();
        uint32_t now = millis();
        while (rx_tail != rx_head) {
            uint8_t byte = rx_ring[rx_tail];
            rx_tail = (uint8_t)((rx_tail + 1) & (RX_RING - 1));
            if (rx_overrun) {
                rx_overrun = 0;
                dropping = 1;
            }
            if (byte == 0) {
                if (dropping || length > CAR_MAX_FRAME + 1) {
                    car_on_bad_frame(&car, now);
                } else if (length > 0) {
                    size_t n = cobs_decode(frame, length, decoded);
                    if (n == (size_t)-1) {
                        car_on_bad_frame(&car, now);
                    } else {
                        car_on_frame(&car, decoded, n, now);
                    }
                }
                length = 0;
                dropping = 0;
            } else if (length < sizeof frame) {
                frame[length++] = byte;
            } else {
                dropping = 1;
            }
        }
        car_tick(&car, now);
        pwm_write(car.steer_us, car.throttle_us);
        if (car_status_due(&car, now)) {
            uint8_t n = (uint8_t)car_status_wire(&car, supply_mv(), now, wire);
            uart_write(wire, n);
        }
        cli();
        if (rx_tail == rx_head) {
            sleep_enable();
            sei();
            sleep_cpu(); /* woken by the 1 ms tick or a received byte */
            sleep_disable();
        }
        sei();
    }
}
