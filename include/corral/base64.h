/* base64: standard (RFC 4648 §4, padded) and base64url (§5, unpadded)
 * encoders and strict decoders, plus lowercase hex. Decoders reject any
 * character outside the alphabet, bad padding, and non-zero trailing bits. */
#ifndef CORRAL_BASE64_H
#define CORRAL_BASE64_H

#include <stddef.h>
#include <stdint.h>

#include "corral/buf.h"

void base64_encode(struct buf *out, const void *data, size_t n);
void base64url_encode(struct buf *out, const void *data, size_t n);
/* Append decoded bytes to out. 0, or -1 on malformed input (out unchanged). */
int base64_decode(struct buf *out, const char *s, size_t n);
int base64url_decode(struct buf *out, const char *s, size_t n);
void hex_encode(struct buf *out, const void *data, size_t n);
/* The value of one hex digit (either case), or -1. */
int hex_digit(int c);
/* Decodes exactly outlen bytes from 2*outlen hex digits. 0 or -1. */
int hex_decode(uint8_t *out, size_t outlen, const char *s, size_t n);

#endif
