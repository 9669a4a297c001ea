/* base64: RFC 4648 encoders and strict decoders, and lowercase hex.
 *
 * The decoders accept exactly one spelling per byte string: the alphabet
 * only (no whitespace, no mixing of the two alphabets), padding exactly as
 * the encoder writes it (required for base64, refused for base64url), and
 * zero bits where the last character carries more bits than the data. JWT
 * signatures, refresh tokens and stored hashes are compared or looked up as
 * text elsewhere, so a second spelling of the same bytes must not exist. */
#include "corral/base64.h"

#include <stdbool.h>
#include <string.h>

static const char b64_std[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void encode(struct buf *out, const uint8_t *p, size_t n,
                   const char *alpha, bool pad)
{
    buf_reserve(out, (n + 2) / 3 * 4);
    char *o = out->data + out->len;
    size_t i = 0;
    for (; n - i >= 3; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = alpha[v >> 18];
        *o++ = alpha[v >> 12 & 63];
        *o++ = alpha[v >> 6 & 63];
        *o++ = alpha[v & 63];
    }
    if (n - i > 0) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (n - i == 2)
            v |= (uint32_t)p[i + 1] << 8;
        *o++ = alpha[v >> 18];
        *o++ = alpha[v >> 12 & 63];
        if (n - i == 2)
            *o++ = alpha[v >> 6 & 63];
        else if (pad)
            *o++ = '=';
        if (pad)
            *o++ = '=';
    }
    out->len = (size_t)(o - out->data);
    out->data[out->len] = '\0';
}

void base64_encode(struct buf *out, const void *data, size_t n)
{
    encode(out, data, n, b64_std, true);
}

void base64url_encode(struct buf *out, const void *data, size_t n)
{
    encode(out, data, n, b64_url, false);
}

/* The 6-bit value of c in the chosen alphabet, or -1. */
static int b64_val(unsigned char c, bool url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

/* Decodes n alphabet characters (padding already stripped) into dst and
 * returns the byte count, or -1. */
static long decode_chars(uint8_t *dst, const char *s, size_t n, bool url)
{
    if (n % 4 == 1)
        return -1;
    uint8_t *o = dst;
    uint32_t acc = 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_val((unsigned char)s[i], url);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        if (++k == 4) {
            *o++ = (uint8_t)(acc >> 16);
            *o++ = (uint8_t)(acc >> 8);
            *o++ = (uint8_t)acc;
            acc = 0;
            k = 0;
        }
    }
    /* 2 chars = 12 bits for 1 byte, 3 chars = 18 bits for 2 bytes; the
     * leftover 4 or 2 bits must be zero. */
    if (k == 2) {
        if (acc & 0xf)
            return -1;
        *o++ = (uint8_t)(acc >> 4);
    } else if (k == 3) {
        if (acc & 0x3)
            return -1;
        *o++ = (uint8_t)(acc >> 10);
        *o++ = (uint8_t)(acc >> 2);
    }
    return (long)(o - dst);
}

/* Decodes into the spare room of out and commits only on success, so a
 * failed decode leaves out as it was. */
static int decode(struct buf *out, const char *s, size_t n, bool url)
{
    size_t max = n / 4 * 3 + 2;
    buf_reserve(out, max);
    uint8_t *dst = (uint8_t *)out->data + out->len;
    long got = decode_chars(dst, s, n, url);
    if (got < 0) {
        /* The input may be a secret (a stored hash, a token). */
        memset(dst, 0, max);
        out->data[out->len] = '\0';
        return -1;
    }
    out->len += (size_t)got;
    out->data[out->len] = '\0';
    return 0;
}

int base64_decode(struct buf *out, const char *s, size_t n)
{
    if (n % 4 != 0)
        return -1;
    /* Up to two '=' and only at the end; a '=' anywhere else is outside
     * the alphabet and fails in decode_chars. */
    size_t pad = 0;
    if (n > 0 && s[n - 1] == '=')
        pad = (n > 1 && s[n - 2] == '=') ? 2 : 1;
    return decode(out, s, n - pad, false);
}

int base64url_decode(struct buf *out, const char *s, size_t n)
{
    return decode(out, s, n, true);
}

void hex_encode(struct buf *out, const void *data, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    const uint8_t *p = data;
    buf_reserve(out, 2 * n);
    char *o = out->data + out->len;
    for (size_t i = 0; i < n; i++) {
        *o++ = digits[p[i] >> 4];
        *o++ = digits[p[i] & 0xf];
    }
    out->len += 2 * n;
    out->data[out->len] = '\0';
}

int hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int hex_decode(uint8_t *out, size_t outlen, const char *s, size_t n)
{
    if (outlen > SIZE_MAX / 2 || n != 2 * outlen)
        return -1;
    for (size_t i = 0; i < outlen; i++) {
        int hi = hex_digit((unsigned char)s[2 * i]);
        int lo = hex_digit((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            /* Leave no half-decoded key behind. */
            memset(out, 0, outlen);
            return -1;
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}
