/* The firmware's protocol and failsafe code (car.c, cobs.c, crc16.c) on the host: `make host-test`. */
#include <stdio.h>
#include <string.h>

#include "car.h"
#include "cobs.h"
#include "crc16.h"

static int failures;
#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                      \
        }                                                                    \
    } while (0)

static size_t command(uint8_t *out, uint16_t seq, uint16_t steer, uint16_t throttle, uint8_t flags)
{
    uint8_t p[CAR_COMMAND_LEN + 2] = {CAR_MSG_COMMAND, (uint8_t)seq, (uint8_t)(seq >> 8),
                                      (uint8_t)steer, (uint8_t)(steer >> 8), (uint8_t)throttle,
                                      (uint8_t)(throttle >> 8), flags};
    uint16_t crc = crc16_ccitt_false(p, CAR_COMMAND_LEN);
    p[CAR_COMMAND_LEN] = (uint8_t)crc;
    p[CAR_COMMAND_LEN + 1] = (uint8_t)(crc >> 8);
    memcpy(out, p, sizeof p);
    return sizeof p;
}

int main(void)
{
    CHECK(crc16_ccitt_false((const uint8_t *)"123456789", 9) == 0x29B1);

    /* COBS round trips, zeros and a run of 300 non-zero bytes included. */
    uint8_t in[300], enc[COBS_MAX_ENCODED(300)], dec[300];
    for (size_t i = 0; i < sizeof in; i++) in[i] = (uint8_t)(i % 7 == 0 ? 0 : i);
    size_t n = cobs_encode(in, sizeof in, enc);
    for (size_t i = 0; i < n; i++) CHECK(enc[i] != 0);
    CHECK(cobs_decode(enc, n, dec) == sizeof in && memcmp(in, dec, sizeof in) == 0);
    const uint8_t bad[] = {0x05, 0x01};
    CHECK(cobs_decode(bad, sizeof bad, dec) == (size_t)-1);

    car_t car;
    uint8_t frame[CAR_MAX_FRAME];
    car_init(&car, 0);
    CHECK(car.state == CAR_FAILSAFE && car.reason == CAR_REASON_BOOT);
    CHECK(car.throttle_us == CAR_NEUTRAL_US && car.steer_us == CAR_NEUTRAL_US);

    n = command(frame, 6, 1800, 1900, CAR_FLAG_ARM);
    car_on_frame(&car, frame, n, 5);
    CHECK(car.state == CAR_FAILSAFE && car.reason == CAR_REASON_BOOT); /* no CONFIG yet */
    uint8_t cfg[CAR_CONFIG_LEN + 2] = {CAR_MSG_CONFIG, 1, 0, 100, 0, 3};
    uint16_t crc = crc16_ccitt_false(cfg, CAR_CONFIG_LEN);
    cfg[CAR_CONFIG_LEN] = (uint8_t)crc;
    cfg[CAR_CONFIG_LEN + 1] = (uint8_t)(crc >> 8);
    car_on_frame(&car, cfg, sizeof cfg, 6);
    CHECK(car.configured && car.timeout_ms == 100);
    n = command(frame, 7, 1800, 1900, CAR_FLAG_ARM);
    car_on_frame(&car, frame, n, 10);
    CHECK(car.state == CAR_DRIVING && car.seq == 7 && car.steer_us == 1800 && car.throttle_us == 1900);
    car_tick(&car, 10 + CAR_DEFAULT_TIMEOUT_MS - 1);
    CHECK(car.state == CAR_DRIVING);
    car_tick(&car, 10 + CAR_DEFAULT_TIMEOUT_MS);
    CHECK(car.state == CAR_FAILSAFE && car.reason == CAR_REASON_TIMEOUT);
    CHECK(car.throttle_us == CAR_NEUTRAL_US && car.steer_us == 1800); /* steering held */

    n = command(frame, 8, 2500, 500, CAR_FLAG_ARM); /* clamped */
    car_on_frame(&car, frame, n, 200);
    CHECK(car.steer_us == CAR_PULSE_MAX_US && car.throttle_us == CAR_PULSE_MIN_US);
    frame[3] ^= 0x40; /* CRC no longer matches */
    for (int i = 0; i < CAR_DEFAULT_BAD_FRAME_LIMIT; i++) car_on_frame(&car, frame, n, 201);
    CHECK(car.state == CAR_FAILSAFE && car.reason == CAR_REASON_BAD_FRAMES);
    CHECK(car.bad_frames == CAR_DEFAULT_BAD_FRAME_LIMIT);

    n = command(frame, 9, 1600, 1700, 0); /* not armed: host stop */
    car_on_frame(&car, frame, n, 300);
    CHECK(car.state == CAR_FAILSAFE && car.throttle_us == CAR_NEUTRAL_US);

    uint8_t wire[CAR_STATUS_WIRE_MAX];
    n = car_status_wire(&car, 7400, 300, wire);
    CHECK(n <= CAR_STATUS_WIRE_MAX && wire[n - 1] == 0);
    CHECK(cobs_decode(wire, n - 1, dec) == CAR_STATUS_LEN + 2);
    CHECK(dec[0] == CAR_MSG_STATUS && dec[1] == 9 && dec[8] == CAR_REASON_BAD_FRAMES); /* the first reason stays */

    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("host-test: all checks passed\n");
    return 0;
}
