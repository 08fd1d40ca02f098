/* COBS framing (Cheshire and Baker, 1999): no zero byte inside a frame, 0x00 ends it.
 * Same algorithm as the host's `cobs` package (cobs.cobs.encode/decode). */
#ifndef RACECAR_COBS_H
#define RACECAR_COBS_H

#include <stddef.h>
#include <stdint.h>

/* Bytes cobs_encode writes at most for n input bytes (no terminating zero included). */
#define COBS_MAX_ENCODED(n) ((n) + ((n) / 254u) + 1u)

/* Encode n bytes of in into out (COBS_MAX_ENCODED(n) bytes room); returns the length. */
size_t cobs_encode(const uint8_t *in, size_t n, uint8_t *out);

/* Decode n bytes (no terminating zero) into out (n bytes room); returns the length, or
 * (size_t)-1 when the input is not valid COBS (a zero byte, a code past the end). */
size_t cobs_decode(const uint8_t *in, size_t n, uint8_t *out);

#endif
