#include "cobs.h"

size_t cobs_encode(const uint8_t *in, size_t n, uint8_t *out)
{
    size_t read = 0, write = 1, code_at = 0;
    uint8_t code = 1;
    while (read < n) {
        if (in[read] == 0) {
            out[code_at] = code;
            code = 1;
            code_at = write++;
        } else {
            out[write++] = in[read];
            if (++code == 0xFF) {
                out[code_at] = code;
                code = 1;
                code_at = write++;
            }
        }
        read++;
    }
    out[code_at] = code;
    return write;
}

size_t cobs_decode(const uint8_t *in, size_t n, uint8_t *out)
{
    size_t read = 0, write = 0;
    while (read < n) {
        uint8_t code = in[read];
        if (code == 0 || read + code > n) {
            return (size_t)-1;
        }
        read++;
        for (uint8_t i = 1; i < code; i++) {
            if (in[read] == 0) {
                return (size_t)-1;
            }
            out[write++] = in[read++];
        }
        if (code != 0xFF && read < n) {
            out[write++] = 0;
        }
    }
    return write;
}
