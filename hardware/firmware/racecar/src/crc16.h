/* CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, xorout 0 (check "123456789"
 * -> 0x29B1). The host computes it with the `crc` package's Crc16.CCITT (IBM-3740). */
#ifndef RACECAR_CRC16_H
#define RACECAR_CRC16_H

#include <stddef.h>
#include <stdint.h>

uint16_t crc16_ccitt_false(const uint8_t *data, size_t n);

#endif
