/* The race car's command protocol and failsafe: plain C, no hardware access.
 *
 * The same file runs on the ATmega328P (main.c feeds it bytes and a millisecond clock and
 * writes its pulse widths to Timer1) and in host tests. Frame layout: docs/hardware/racecar.md.
 *
 * Every frame on the wire is COBS(payload || crc16_le(payload)) followed by one 0x00 byte;
 * multi-byte fields are little-endian. The car drives only while valid, armed commands keep
 * arriving; it goes to failsafe (throttle neutral, steering held where it was) at boot, when
 * no valid command came for timeout_ms, after bad_frame_limit bad frames in a row, and when
 * the host sends a command without the ARM flag. After a boot it arms only once a CONFIG frame
 * has come (the host's handshake), so a board that reset mid-run stays stopped until the host
 * has noticed and connected again.
 */
#ifndef RACECAR_CAR_H
#define RACECAR_CAR_H

#include <stddef.h>
#include <stdint.h>

#define CAR_FW_MAJOR 1
#define CAR_FW_MINOR 0
#define CAR_FW_PATCH 0

/* Pulse widths, microseconds (standard RC servo/ESC range), and the neutral of both. */
#ifndef CAR_PULSE_MIN_US
#define CAR_PULSE_MIN_US 1000
#endif
#ifndef CAR_PULSE_MAX_US
#define CAR_PULSE_MAX_US 2000
#endif
#ifndef CAR_NEUTRAL_US
#define CAR_NEUTRAL_US 1500
#endif
/* Defaults of the runtime settings (a CONFIG frame changes them until the next reset). */
#ifndef CAR_DEFAULT_TIMEOUT_MS
#define CAR_DEFAULT_TIMEOUT_MS 100
#endif
#ifndef CAR_DEFAULT_BAD_FRAME_LIMIT
#define CAR_DEFAULT_BAD_FRAME_LIMIT 3
#endif
#define CAR_MIN_TIMEOUT_MS 20
#define CAR_MAX_TIMEOUT_MS 5000
/* Unsolicited status frames while no command arrives, ms. */
#define CAR_HEARTBEAT_MS 100

/* Message types (first payload byte). */
enum {
    CAR_MSG_COMMAND = 0x01, /* u8 type, u16 seq, u16 steer_us, u16 throttle_us, u8 flags */
    CAR_MSG_CONFIG = 0x02,  /* u8 type, u16 seq, u16 timeout_ms, u8 bad_frame_limit */
    CAR_MSG_PING = 0x03,    /* u8 type, u16 seq */
    CAR_MSG_STATUS = 0x81   /* see car_status_payload */
};
#define CAR_FLAG_ARM 0x01

#define CAR_COMMAND_LEN 8
#define CAR_CONFIG_LEN 6
#define CAR_PING_LEN 3
#define CAR_STATUS_LEN 22
/* The longest frame either side sends, payload + CRC. */
#define CAR_MAX_FRAME 32
/* Status frame on the wire: COBS of 24 bytes plus the delimiter. */
#define CAR_STATUS_WIRE_MAX (CAR_STATUS_LEN + 2 + 2 + 1)

enum { CAR_DRIVING = 0, CAR_FAILSAFE = 1 };
/* Status byte 7: bit 0 failsafe, bit 1 configured. */
#define CAR_STATE_CONFIGURED 0x02
enum {
    CAR_REASON_NONE = 0,
    CAR_REASON_BOOT = 1,
    CAR_REASON_TIMEOUT = 2,
    CAR_REASON_BAD_FRAMES = 3,
    CAR_REASON_HOST_STOP = 4
};
#define CAR_SUPPLY_NOT_WIRED 0xFFFF

typedef struct {
    uint16_t steer_us;     /* applied steering pulse */
    uint16_t throttle_us;  /* applied throttle pulse */
    uint8_t state;         /* CAR_DRIVING or CAR_FAILSAFE */
    uint8_t reason;        /* why the last failsafe began (kept while driving is 0) */
    uint16_t seq;          /* sequence number of the last valid frame */
    uint32_t last_command_ms;
    uint32_t last_status_ms;
    uint16_t timeout_ms;
    uint8_t bad_frame_limit;
    uint8_t bad_streak;
    uint16_t bad_frames;   /* bad frames since boot (wraps) */
    uint8_t status_due;    /* a status frame answers the last valid frame */
    uint8_t configured;    /* a CONFIG frame came since boot: only then do commands arm */
} car_t;

void car_init(car_t *car, uint32_t now_ms);
/* A decoded frame (payload and its two CRC bytes). */
void car_on_frame(car_t *car, const uint8_t *frame, size_t n, uint32_t now_ms);
/* A frame that could not be decoded (bad COBS, too long, receive overrun). */
void car_on_bad_frame(car_t *car, uint32_t now_ms);
/* Time passes: the command timeout and the heartbeat. */
void car_tick(car_t *car, uint32_t now_ms);
/* Whether a status frame should go out now (an answer, or the heartbeat). */
int car_status_due(const car_t *car, uint32_t now_ms);
/* The status frame on the wire (COBS, CRC, 0x00); returns its length. Clears status_due. */
size_t car_status_wire(car_t *car, uint16_t supply_mv, uint32_t now_ms, uint8_t *out);

#endif
