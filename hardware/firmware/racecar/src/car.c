#include "car.h"

#include "cobs.h"
#include "crc16.h"

static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | ((uint16_t)p[1] << 8)); }

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static uint16_t clamp_pulse(uint16_t us)
{
    if (us < CAR_PULSE_MIN_US) return CAR_PULSE_MIN_US;
    if (us > CAR_PULSE_MAX_US) return CAR_PULSE_MAX_US;
    return us;
}

static void failsafe(car_t *car, uint8_t reason)
{
    /* Throttle to neutral, steering held: a car that keeps its line rolls out predictably. */
    car->throttle_us = CAR_NEUTRAL_US;
    if (car->state != CAR_FAILSAFE) {
        car->state = CAR_FAILSAFE;
        car->reason = reason;
        car->status_due = 1;
    }
}

void car_init(car_t *car, uint32_t now_ms)
{
    car->steer_us = CAR_NEUTRAL_US;
    car->throttle_us = CAR_NEUTRAL_US;
    car->state = CAR_FAILSAFE;
    car->reason = CAR_REASON_BOOT;
    car->seq = 0;
    car->last_command_ms = now_ms;
    car->last_status_ms = now_ms;
    car->timeout_ms = CAR_DEFAULT_TIMEOUT_MS;
    car->bad_frame_limit = CAR_DEFAULT_BAD_FRAME_LIMIT;
    car->bad_streak = 0;
    car->bad_frames = 0;
    car->status_due = 1; /* announce the boot */
    car->configured = 0;
}

void car_on_bad_frame(car_t *car, uint32_t now_ms)
{
    (void)now_ms;
    car->bad_frames++;
    if (car->bad_streak < 255) car->bad_streak++;
    if (car->bad_streak >= car->bad_frame_limit) failsafe(car, CAR_REASON_BAD_FRAMES);
}

void car_on_frame(car_t *car, const uint8_t *frame, size_t n, uint32_t now_ms)
{
    if (n < 3 || n > CAR_MAX_FRAME) {
        car_on_bad_frame(car, now_ms);
        return;
    }
    size_t len = n - 2;
    if (crc16_ccitt_false(frame, len) != get_u16(frame + len)) {
        car_on_bad_frame(car, now_ms);
        return;
    }
    uint8_t type = frame[0];
    if ((type == CAR_MSG_COMMAND && len != CAR_COMMAND_LEN) ||
        (type == CAR_MSG_CONFIG && len != CAR_CONFIG_LEN) ||
        (type == CAR_MSG_PING && len != CAR_PING_LEN) ||
        (type != CAR_MSG_COMMAND && type != CAR_MSG_CONFIG && type != CAR_MSG_PING)) {
        car_on_bad_frame(car, now_ms);
        return;
    }
    car->bad_streak = 0;
    car->seq = get_u16(frame + 1);
    car->status_due = 1;
    if (type == CAR_MSG_COMMAND) {
        uint8_t flags = frame[7];
        if ((flags & CAR_FLAG_ARM) && car->configured) {
            car->steer_us = clamp_pulse(get_u16(frame + 3));
            car->throttle_us = clamp_pulse(get_u16(frame + 5));
            car->state = CAR_DRIVING;
            car->reason = CAR_REASON_NONE;
            car->last_command_ms = now_ms;
        } else if (flags & CAR_FLAG_ARM) {
            failsafe(car, CAR_REASON_BOOT); /* not configured since boot: stay stopped */
        } else {
            car->steer_us = clamp_pulse(get_u16(frame + 3));
            failsafe(car, CAR_REASON_HOST_STOP);
        }
    } else if (type == CAR_MSG_CONFIG) {
        uint16_t timeout = get_u16(frame + 3);
        uint8_t limit = frame[5];
        if (timeout >= CAR_MIN_TIMEOUT_MS && timeout <= CAR_MAX_TIMEOUT_MS && limit >= 1) {
            car->timeout_ms = timeout;
            car->bad_frame_limit = limit;
            car->configured = 1;
        }
    }
}

void car_tick(car_t *car, uint32_t now_ms)
{
    if (car->state == CAR_DRIVING && (uint32_t)(now_ms - car->last_command_ms) >= car->timeout_ms) {
        failsafe(car, CAR_REASON_TIMEOUT);
    }
}

int car_status_due(const car_t *car, uint32_t now_ms)
{
    return car->status_due || (uint32_t)(now_ms - car->last_status_ms) >= CAR_HEARTBEAT_MS;
}

size_t car_status_wire(car_t *car, uint16_t supply_mv, uint32_t now_ms, uint8_t *out)
{
    uint8_t p[CAR_STATUS_LEN + 2];
    p[0] = CAR_MSG_STATUS;
    put_u16(p + 1, car->seq);
    put_u16(p + 3, car->steer_us);
    put_u16(p + 5, car->throttle_us);
    p[7] = (uint8_t)(car->state | (car->configured ? CAR_STATE_CONFIGURED : 0));
    p[8] = car->reason;
    put_u16(p + 9, supply_mv);
    put_u16(p + 11, (uint16_t)now_ms);
    put_u16(p + 13, (uint16_t)(now_ms >> 16));
    put_u16(p + 15, car->bad_frames);
    put_u16(p + 17, car->timeout_ms);
    p[19] = CAR_FW_MAJOR;
    p[20] = CAR_FW_MINOR;
    p[21] = CAR_FW_PATCH;
    put_u16(p + CAR_STATUS_LEN, crc16_ccitt_false(p, CAR_STATUS_LEN));
    size_t n = cobs_encode(p, sizeof p, out);
    out[n++] = 0;
    car->status_due = 0;
    car->last_status_ms = now_ms;
    return n;
}
