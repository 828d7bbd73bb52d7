/* The digests of the SQS face, in C: MD5 (RFC 1321: the MD5s SQS returns and the SDKs check),
   SipHash-2-4 (the keyed tag of a receipt handle) and URL-safe base64 without padding (the
   handle's text). Included by wonderq/sqs/_digest.pyx and wonderq/sqs/_fast.pyx; checked
   against hashlib, the SipHash paper's test vector and the base64 module in
   tests/test_sqs_fast.py. Byte order is spelt out (loads and stores byte by byte), so any
   host computes the same; compilers turn those into plain loads on little-endian machines. */
#ifndef WQ_SQS_DIGEST_H
#define WQ_SQS_DIGEST_H

#include <stdint.h>
#include <string.h>

static inline uint32_t wq_load32le(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static inline uint64_t wq_load64le(const uint8_t *p) {
    return (uint64_t)wq_load32le(p) | ((uint64_t)wq_load32le(p + 4) << 32);
}

/* ---- MD5 ------------------------------------------------------------------------------ */
#define WQ_ROTL32(x, n) (((x) << (n)) | ((x) >> (32 - (n))))
#define WQ_MD5_F(x, y, z) ((z) ^ ((x) & ((y) ^ (z))))
#define WQ_MD5_G(x, y, z) ((y) ^ ((z) & ((x) ^ (y))))
#define WQ_MD5_H(x, y, z) ((x) ^ (y) ^ (z))
#define WQ_MD5_I(x, y, z) ((y) ^ ((x) | ~(z)))
#define WQ_MD5_STEP(f, a, b, c, d, xk, t, s) \
    (a) += f((b), (c), (d)) + (xk) + (t); \
    (a) = WQ_ROTL32((a), (s)) + (b);

/* One 64-byte block into the state h[4]. The 64 constants are floor(|sin(i + 1)| * 2^32). */
static void wq_md5_block(uint32_t h[4], const uint8_t *p) {
    uint32_t x[16];
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
    int i;
    for (i = 0; i < 16; i++) x[i] = wq_load32le(p + 4 * i);
    WQ_MD5_STEP(WQ_MD5_F, a, b, c, d, x[0], 0xd76aa478u, 7);
    WQ_MD5_STEP(WQ_MD5_F, d, a, b, c, x[1], 0xe8c7b756u, 12);
    WQ_MD5_STEP(WQ_MD5_F, c, d, a, b, x[2], 0x242070dbu, 17);
    WQ_MD5_STEP(WQ_MD5_F, b, c, d, a, x[3], 0xc1bdceeeu, 22);
    WQ_MD5_STEP(WQ_MD5_F, a, b, c, d, x[4], 0xf57c0fafu, 7);
    WQ_MD5_STEP(WQ_MD5_F, d, a, b, c, x[5], 0x4787c62au, 12);
    WQ_MD5_STEP(WQ_MD5_F, c, d, a, b, x[6], 0xa8304613u, 17);
    WQ_MD5_STEP(WQ_MD5_F, b, c, d, a, x[7], 0xfd469501u, 22);
    WQ_MD5_STEP(WQ_MD5_F, a, b, c, d, x[8], 0x698098d8u, 7);
    WQ_MD5_STEP(WQ_MD5_F, d, a, b, c, x[9], 0x8b44f7afu, 12);
    WQ_MD5_STEP(WQ_MD5_F, c, d, a, b, x[10], 0xffff5bb1u, 17);
    WQ_MD5_STEP(WQ_MD5_F, b, c, d, a, x[11], 0x895cd7beu, 22);
    WQ_MD5_STEP(WQ_MD5_F, a, b, c, d, x[12], 0x6b901122u, 7);
    WQ_MD5_STEP(WQ_MD5_F, d, a, b, c, x[13], 0xfd987193u, 12);
    WQ_MD5_STEP(WQ_MD5_F, c, d, a, b, x[14], 0xa679438eu, 17);
    WQ_MD5_STEP(WQ_MD5_F, b, c, d, a, x[15], 0x49b40821u, 22);
    WQ_MD5_STEP(WQ_MD5_G, a, b, c, d, x[1], 0xf61e2562u, 5);
    WQ_MD5_STEP(WQ_MD5_G, d, a, b, c, x[6], 0xc040b340u, 9);
    WQ_MD5_STEP(WQ_MD5_G, c, d, a, b, x[11], 0x265e5a51u, 14);
    WQ_MD5_STEP(WQ_MD5_G, b, c, d, a, x[0], 0xe9b6c7aau, 20);
    WQ_MD5_STEP(WQ_MD5_G, a, b, c, d, x[5], 0xd62f105du, 5);
    WQ_MD5_STEP(WQ_MD5_G, d, a, b, c, x[10], 0x02441453u, 9);
    WQ_MD5_STEP(WQ_MD5_G, c, d, a, b, x[15], 0xd8a1e681u, 14);
    WQ_MD5_STEP(WQ_MD5_G, b, c, d, a, x[4], 0xe7d3fbc8u, 20);
    WQ_MD5_STEP(WQ_MD5_G, a, b, c, d, x[9], 0x21e1cde6u, 5);
    WQ_MD5_STEP(WQ_MD5_G, d, a, b, c, x[14], 0xc33707d6u, 9);
    WQ_MD5_STEP(WQ_MD5_G, c, d, a, b, x[3], 0xf4d50d87u, 14);
    WQ_MD5_STEP(WQ_MD5_G, b, c, d, a, x[8], 0x455a14edu, 20);
    WQ_MD5_STEP(WQ_MD5_G, a, b, c, d, x[13], 0xa9e3e905u, 5);
    WQ_MD5_STEP(WQ_MD5_G, d, a, b, c, x[2], 0xfcefa3f8u, 9);
    WQ_MD5_STEP(WQ_MD5_G, c, d, a, b, x[7], 0x676f02d9u, 14);
    WQ_MD5_STEP(WQ_MD5_G, b, c, d, a, x[12], 0x8d2a4c8au, 20);
    WQ_MD5_STEP(WQ_MD5_H, a, b, c, d, x[5], 0xfffa3942u, 4);
    WQ_MD5_STEP(WQ_MD5_H, d, a, b, c, x[8], 0x8771f681u, 11);
    WQ_MD5_STEP(WQ_MD5_H, c, d, a, b, x[11], 0x6d9d6122u, 16);
    WQ_MD5_STEP(WQ_MD5_H, b, c, d, a, x[14], 0xfde5380cu, 23);
    WQ_MD5_STEP(WQ_MD5_H, a, b, c, d, x[1], 0xa4beea44u, 4);
    WQ_MD5_STEP(WQ_MD5_H, d, a, b, c, x[4], 0x4bdecfa9u, 11);
    WQ_MD5_STEP(WQ_MD5_H, c, d, a, b, x[7], 0xf6bb4b60u, 16);
    WQ_MD5_STEP(WQ_MD5_H, b, c, d, a, x[10], 0xbebfbc70u, 23);
    WQ_MD5_STEP(WQ_MD5_H, a, b, c, d, x[13], 0x289b7ec6u, 4);
    WQ_MD5_STEP(WQ_MD5_H, d, a, b, c, x[0], 0xeaa127fau, 11);
    WQ_MD5_STEP(WQ_MD5_H, c, d, a, b, x[3], 0xd4ef3085u, 16);
    WQ_MD5_STEP(WQ_MD5_H, b, c, d, a, x[6], 0x04881d05u, 23);
    WQ_MD5_STEP(WQ_MD5_H, a, b, c, d, x[9], 0xd9d4d039u, 4);
    WQ_MD5_STEP(WQ_MD5_H, d, a, b, c, x[12], 0xe6db99e5u, 11);
    WQ_MD5_STEP(WQ_MD5_H, c, d, a, b, x[15], 0x1fa27cf8u, 16);
    WQ_MD5_STEP(WQ_MD5_H, b, c, d, a, x[2], 0xc4ac5665u, 23);
    WQ_MD5_STEP(WQ_MD5_I, a, b, c, d, x[0], 0xf4292244u, 6);
    WQ_MD5_STEP(WQ_MD5_I, d, a, b, c, x[7], 0x432aff97u, 10);
    WQ_MD5_STEP(WQ_MD5_I, c, d, a, b, x[14], 0xab9423a7u, 15);
    WQ_MD5_STEP(WQ_MD5_I, b, c, d, a, x[5], 0xfc93a039u, 21);
    WQ_MD5_STEP(WQ_MD5_I, a, b, c, d, x[12], 0x655b59c3u, 6);
    WQ_MD5_STEP(WQ_MD5_I, d, a, b, c, x[3], 0x8f0ccc92u, 10);
    WQ_MD5_STEP(WQ_MD5_I, c, d, a, b, x[10], 0xffeff47du, 15);
    WQ_MD5_STEP(WQ_MD5_I, b, c, d, a, x[1], 0x85845dd1u, 21);
    WQ_MD5_STEP(WQ_MD5_I, a, b, c, d, x[8], 0x6fa87e4fu, 6);
    WQ_MD5_STEP(WQ_MD5_I, d, a, b, c, x[15], 0xfe2ce6e0u, 10);
    WQ_MD5_STEP(WQ_MD5_I, c, d, a, b, x[6], 0xa3014314u, 15);
    WQ_MD5_STEP(WQ_MD5_I, b, c, d, a, x[13], 0x4e0811a1u, 21);
    WQ_MD5_STEP(WQ_MD5_I, a, b, c, d, x[4], 0xf7537e82u, 6);
    WQ_MD5_STEP(WQ_MD5_I, d, a, b, c, x[11], 0xbd3af235u, 10);
    WQ_MD5_STEP(WQ_MD5_I, c, d, a, b, x[2], 0x2ad7d2bbu, 15);
    WQ_MD5_STEP(WQ_MD5_I, b, c, d, a, x[9], 0xeb86d391u, 21);
    h[0] += a; h[1] += b; h[2] += c; h[3] += d;
}

/* The 32 lowercase hex digits of MD5(p[0:n]) into out. */
static void wq_md5_hex(char *out, const uint8_t *p, size_t n) {
    static const char digits[] = "0123456789abcdef";
    uint32_t h[4] = {0x67452301u, 0xefcdab89u, 0x98badcfeu, 0x10325476u};
    uint8_t tail[128];
    uint64_t bits = (uint64_t)n * 8;
    size_t full = n & ~(size_t)63, rest = n - full, end, i;
    int w, k;
    for (i = 0; i < full; i += 64) wq_md5_block(h, p + i);
    memcpy(tail, p + full, rest);
    tail[rest] = 0x80;
    end = rest < 56 ? 64 : 128;
    memset(tail + rest + 1, 0, end - rest - 1);
    for (k = 0; k < 8; k++) tail[end - 8 + k] = (uint8_t)(bits >> (8 * k));
    wq_md5_block(h, tail);
    if (end == 128) wq_md5_block(h, tail + 64);
    for (w = 0; w < 4; w++) {
        for (k = 0; k < 4; k++) {
            uint8_t byte = (uint8_t)(h[w] >> (8 * k));
            *out++ = digits[byte >> 4];
            *out++ = digits[byte & 15];
        }
    }
}

/* ---- MD5 of several messages at once ---------------------------------------------------- */
/* A batch (a receive of 10, a batch send of 10) hashes its bodies four at a time: the same
   steps on four lanes of SSE2 registers, each lane one message. A lane whose message has
   fewer blocks idles (its state is kept by a mask) while the others go on. */
#if defined(__SSE2__)
#include <emmintrin.h>
#define WQ_V_ROTL(x, n) _mm_or_si128(_mm_slli_epi32((x), (n)), _mm_srli_epi32((x), 32 - (n)))
#define WQ_V_F(x, y, z) _mm_xor_si128((z), _mm_and_si128((x), _mm_xor_si128((y), (z))))
#define WQ_V_G(x, y, z) _mm_xor_si128((y), _mm_and_si128((z), _mm_xor_si128((x), (y))))
#define WQ_V_H(x, y, z) _mm_xor_si128(_mm_xor_si128((x), (y)), (z))
#define WQ_V_I(x, y, z) _mm_xor_si128((y), _mm_or_si128((x), _mm_xor_si128((z), ones)))
#define WQ_V_STEP(f, a, b, c, d, xk, t, s) \
    (a) = _mm_add_epi32((a), _mm_add_epi32(f((b), (c), (d)), \
                                           _mm_add_epi32((xk), _mm_set1_epi32((int)(t))))); \
    (a) = _mm_add_epi32(WQ_V_ROTL((a), (s)), (b));

/* One block of each lane (blk[j]) into h; lanes outside mask keep their state. */
static void wq_md5_block4(__m128i h[4], const uint8_t *const blk[4], __m128i mask) {
    const __m128i ones = _mm_set1_epi32(-1);
    __m128i x[16];
    __m128i a = h[0], b = h[1], c = h[2], d = h[3];
    int i;
    for (i = 0; i < 16; i++)
        x[i] = _mm_set_epi32((int)wq_load32le(blk[3] + 4 * i), (int)wq_load32le(blk[2] + 4 * i),
                             (int)wq_load32le(blk[1] + 4 * i), (int)wq_load32le(blk[0] + 4 * i));
    WQ_V_STEP(WQ_V_F, a, b, c, d, x[0], 0xd76aa478u, 7);
    WQ_V_STEP(WQ_V_F, d, a, b, c, x[1], 0xe8c7b756u, 12);
    WQ_V_STEP(WQ_V_F, c, d, a, b, x[2], 0x242070dbu, 17);
    WQ_V_STEP(WQ_V_F, b, c, d, a, x[3], 0xc1bdceeeu, 22);
    WQ_V_STEP(WQ_V_F, a, b, c, d, x[4], 0xf57c0fafu, 7);
    WQ_V_STEP(WQ_V_F, d, a, b, c, x[5], 0x4787c62au, 12);
    WQ_V_STEP(WQ_V_F, c, d, a, b, x[6], 0xa8304613u, 17);
    WQ_V_STEP(WQ_V_F, b, c, d, a, x[7], 0xfd469501u, 22);
    WQ_V_STEP(WQ_V_F, a, b, c, d, x[8], 0x698098d8u, 7);
    WQ_V_STEP(WQ_V_F, d, a, b, c, x[9], 0x8b44f7afu, 12);
    WQ_V_STEP(WQ_V_F, c, d, a, b, x[10], 0xffff5bb1u, 17);
    WQ_V_STEP(WQ_V_F, b, c, d, a, x[11], 0x895cd7beu, 22);
    WQ_V_STEP(WQ_V_F, a, b, c, d, x[12], 0x6b901122u, 7);
    WQ_V_STEP(WQ_V_F, d, a, b, c, x[13], 0xfd987193u, 12);
    WQ_V_STEP(WQ_V_F, c, d, a, b, x[14], 0xa679438eu, 17);
    WQ_V_STEP(WQ_V_F, b, c, d, a, x[15], 0x49b40821u, 22);
    WQ_V_STEP(WQ_V_G, a, b, c, d, x[1], 0xf61e2562u, 5);
    WQ_V_STEP(WQ_V_G, d, a, b, c, x[6], 0xc040b340u, 9);
    WQ_V_STEP(WQ_V_G, c, d, a, b, x[11], 0x265e5a51u, 14);
    WQ_V_STEP(WQ_V_G, b, c, d, a, x[0], 0xe9b6c7aau, 20);
    WQ_V_STEP(WQ_V_G, a, b, c, d, x[5], 0xd62f105du, 5);
    WQ_V_STEP(WQ_V_G, d, a, b, c, x[10], 0x02441453u, 9);
    WQ_V_STEP(WQ_V_G, c, d, a, b, x[15], 0xd8a1e681u, 14);
    WQ_V_STEP(WQ_V_G, b, c, d, a, x[4], 0xe7d3fbc8u, 20);
    WQ_V_STEP(WQ_V_G, a, b, c, d, x[9], 0x21e1cde6u, 5);
    WQ_V_STEP(WQ_V_G, d, a, b, c, x[14], 0xc33707d6u, 9);
    WQ_V_STEP(WQ_V_G, c, d, a, b, x[3], 0xf4d50d87u, 14);
    WQ_V_STEP(WQ_V_G, b, c, d, a, x[8], 0x455a14edu, 20);
    WQ_V_STEP(WQ_V_G, a, b, c, d, x[13], 0xa9e3e905u, 5);
    WQ_V_STEP(WQ_V_G, d, a, b, c, x[2], 0xfcefa3f8u, 9);
    WQ_V_STEP(WQ_V_G, c, d, a, b, x[7], 0x676f02d9u, 14);
    WQ_V_STEP(WQ_V_G, b, c, d, a, x[12], 0x8d2a4c8au, 20);
    WQ_V_STEP(WQ_V_H, a, b, c, d, x[5], 0xfffa3942u, 4);
    WQ_V_STEP(WQ_V_H, d, a, b, c, x[8], 0x8771f681u, 11);
    WQ_V_STEP(WQ_V_H, c, d, a, b, x[11], 0x6d9d6122u, 16);
    WQ_V_STEP(WQ_V_H, b, c, d, a, x[14], 0xfde5380cu, 23);
    WQ_V_STEP(WQ_V_H, a, b, c, d, x[1], 0xa4beea44u, 4);
    WQ_V_STEP(WQ_V_H, d, a, b, c, x[4], 0x4bdecfa9u, 11);
    WQ_V_STEP(WQ_V_H, c, d, a, b, x[7], 0xf6bb4b60u, 16);
    WQ_V_STEP(WQ_V_H, b, c, d, a, x[10], 0xbebfbc70u, 23);
    WQ_V_STEP(WQ_V_H, a, b, c, d, x[13], 0x289b7ec6u, 4);
    WQ_V_STEP(WQ_V_H, d, a, b, c, x[0], 0xeaa127fau, 11);
    WQ_V_STEP(WQ_V_H, c, d, a, b, x[3], 0xd4ef3085u, 16);
    WQ_V_STEP(WQ_V_H, b, c, d, a, x[6], 0x04881d05u, 23);
    WQ_V_STEP(WQ_V_H, a, b, c, d, x[9], 0xd9d4d039u, 4);
    WQ_V_STEP(WQ_V_H, d, a, b, c, x[12], 0xe6db99e5u, 11);
    WQ_V_STEP(WQ_V_H, c, d, a, b, x[15], 0x1fa27cf8u, 16);
    WQ_V_STEP(WQ_V_H, b, c, d, a, x[2], 0xc4ac5665u, 23);
    WQ_V_STEP(WQ_V_I, a, b, c, d, x[0], 0xf4292244u, 6);
    WQ_V_STEP(WQ_V_I, d, a, b, c, x[7], 0x432aff97u, 10);
    WQ_V_STEP(WQ_V_I, c, d, a, b, x[14], 0xab9423a7u, 15);
    WQ_V_STEP(WQ_V_I, b, c, d, a, x[5], 0xfc93a039u, 21);
    WQ_V_STEP(WQ_V_I, a, b, c, d, x[12], 0x655b59c3u, 6);
    WQ_V_STEP(WQ_V_I, d, a, b, c, x[3], 0x8f0ccc92u, 10);
    WQ_V_STEP(WQ_V_I, c, d, a, b, x[10], 0xffeff47du, 15);
    WQ_V_STEP(WQ_V_I, b, c, d, a, x[1], 0x85845dd1u, 21);
    WQ_V_STEP(WQ_V_I, a, b, c, d, x[8], 0x6fa87e4fu, 6);
    WQ_V_STEP(WQ_V_I, d, a, b, c, x[15], 0xfe2ce6e0u, 10);
    WQ_V_STEP(WQ_V_I, c, d, a, b, x[6], 0xa3014314u, 15);
    WQ_V_STEP(WQ_V_I, b, c, d, a, x[13], 0x4e0811a1u, 21);
    WQ_V_STEP(WQ_V_I, a, b, c, d, x[4], 0xf7537e82u, 6);
    WQ_V_STEP(WQ_V_I, d, a, b, c, x[11], 0xbd3af235u, 10);
    WQ_V_STEP(WQ_V_I, c, d, a, b, x[2], 0x2ad7d2bbu, 15);
    WQ_V_STEP(WQ_V_I, b, c, d, a, x[9], 0xeb86d391u, 21);
    a = _mm_add_epi32(a, h[0]);
    b = _mm_add_epi32(b, h[1]);
    c = _mm_add_epi32(c, h[2]);
    d = _mm_add_epi32(d, h[3]);
    h[0] = _mm_or_si128(_mm_and_si128(mask, a), _mm_andnot_si128(mask, h[0]));
    h[1] = _mm_or_si128(_mm_and_si128(mask, b), _mm_andnot_si128(mask, h[1]));
    h[2] = _mm_or_si128(_mm_and_si128(mask, c), _mm_andnot_si128(mask, h[2]));
    h[3] = _mm_or_si128(_mm_and_si128(mask, d), _mm_andnot_si128(mask, h[3]));
}

/* The hex MD5s of p[j][0:n[j]] for j < lanes (1 to 4) into out + 32 * j. */
static void wq_md5_hex4(char *out, const uint8_t *const *p, const size_t *n, int lanes) {
    static const char digits[] = "0123456789abcdef";
    static const uint8_t idle[64] = {0};
    uint8_t tail[4][128];
    size_t full[4], blocks[4], most = 0, blk_no;
    const uint8_t *blk[4];
    uint32_t words[4][4];
    __m128i h[4];
    int j, w, k;
    for (j = 0; j < 4; j++) {
        if (j < lanes) {
            size_t rest, end;
            uint64_t bits = (uint64_t)n[j] * 8;
            full[j] = n[j] / 64;
            rest = n[j] - full[j] * 64;
            memcpy(tail[j], p[j] + full[j] * 64, rest);
            tail[j][rest] = 0x80;
            end = rest < 56 ? 64 : 128;
            memset(tail[j] + rest + 1, 0, end - rest - 1);
            for (k = 0; k < 8; k++) tail[j][end - 8 + k] = (uint8_t)(bits >> (8 * k));
            blocks[j] = full[j] + end / 64;
        } else {
            full[j] = blocks[j] = 0;
        }
        if (blocks[j] > most) most = blocks[j];
    }
    h[0] = _mm_set1_epi32((int)0x67452301u);
    h[1] = _mm_set1_epi32((int)0xefcdab89u);
    h[2] = _mm_set1_epi32((int)0x98badcfeu);
    h[3] = _mm_set1_epi32((int)0x10325476u);
    for (blk_no = 0; blk_no < most; blk_no++) {
        int on[4];
        for (j = 0; j < 4; j++) {
            on[j] = blk_no < blocks[j] ? -1 : 0;
            if (blk_no < full[j]) blk[j] = p[j] + 64 * blk_no;
            else if (on[j]) blk[j] = tail[j] + 64 * (blk_no - full[j]);
            else blk[j] = idle;
        }
        wq_md5_block4(h, blk, _mm_set_epi32(on[3], on[2], on[1], on[0]));
    }
    for (w = 0; w < 4; w++) _mm_storeu_si128((__m128i *)words[w], h[w]);
    for (j = 0; j < lanes; j++) {
        char *o = out + 32 * j;
        for (w = 0; w < 4; w++) {
            for (k = 0; k < 4; k++) {
                uint8_t byte = (uint8_t)(words[w][j] >> (8 * k));
                *o++ = digits[byte >> 4];
                *o++ = digits[byte & 15];
            }
        }
    }
}
#endif

/* The hex MD5s of p[j][0:n[j]] for j < count into out + 32 * j: four at a time where SSE2
   is there, a lone one (and every one elsewhere) by wq_md5_hex. */
static void wq_md5_hex_many(char *out, const uint8_t *const *p, const size_t *n, int count) {
    int j = 0;
#if defined(__SSE2__)
    for (; j + 2 <= count; j += 4) {
        int lanes = count - j < 4 ? count - j : 4;
        wq_md5_hex4(out + 32 * j, p + j, n + j, lanes);
    }
#endif
    for (; j < count; j++) wq_md5_hex(out + 32 * j, p[j], n[j]);
}

/* ---- SipHash-2-4 ------------------------------------------------------------------------ */
#define WQ_ROTL64(x, n) (((x) << (n)) | ((x) >> (64 - (n))))
#define WQ_SIPROUND \
    v0 += v1; v1 = WQ_ROTL64(v1, 13); v1 ^= v0; v0 = WQ_ROTL64(v0, 32); \
    v2 += v3; v3 = WQ_ROTL64(v3, 16); v3 ^= v2; \
    v0 += v3; v3 = WQ_ROTL64(v3, 21); v3 ^= v0; \
    v2 += v1; v1 = WQ_ROTL64(v1, 17); v1 ^= v2; v2 = WQ_ROTL64(v2, 32);

/* SipHash-2-4 of p[0:n] under the 128-bit key (k0, k1), each read little-endian. */
static uint64_t wq_siphash24(uint64_t k0, uint64_t k1, const uint8_t *p, size_t n) {
    uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
    uint64_t m, last = (uint64_t)n << 56;
    size_t full = n & ~(size_t)7, i;
    for (i = 0; i < full; i += 8) {
        m = wq_load64le(p + i);
        v3 ^= m;
        WQ_SIPROUND WQ_SIPROUND
        v0 ^= m;
    }
    for (i = 0; i < (n & 7); i++) last |= (uint64_t)p[full + i] << (8 * i);
    v3 ^= last;
    WQ_SIPROUND WQ_SIPROUND
    v0 ^= last;
    v2 ^= 0xff;
    WQ_SIPROUND WQ_SIPROUND WQ_SIPROUND WQ_SIPROUND
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- URL-safe base64, no padding ---------------------------------------------------------- */
static const char wq_b64_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Writes the encoding of p[0:n] (no "=") into out; returns its length. */
static size_t wq_b64url_encode(char *out, const uint8_t *p, size_t n) {
    char *o = out;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8) | p[i + 2];
        *o++ = wq_b64_chars[v >> 18];
        *o++ = wq_b64_chars[(v >> 12) & 63];
        *o++ = wq_b64_chars[(v >> 6) & 63];
        *o++ = wq_b64_chars[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        *o++ = wq_b64_chars[v >> 18];
        *o++ = wq_b64_chars[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8);
        *o++ = wq_b64_chars[v >> 18];
        *o++ = wq_b64_chars[(v >> 12) & 63];
        *o++ = wq_b64_chars[(v >> 6) & 63];
    }
    return (size_t)(o - out);
}

/* The value of each URL-safe base64 character, -1 for any other byte. */
static const signed char wq_b64url_values[256] = {
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -1, -1, -1,
    -1,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14,
    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, 63,
    -1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1
};

/* Decodes s[0:n] (URL-safe alphabet only, no "=") into out, as Python's
   base64.urlsafe_b64decode does once the padding is added: leftover bits of the last
   character are dropped. Returns the byte count, or -1 for a character outside the alphabet
   or a length of 4k + 1. */
static long wq_b64url_decode(uint8_t *out, const uint8_t *s, size_t n) {
    uint8_t *o = out;
    uint32_t acc = 0;
    int bits = 0, v;
    size_t i;
    if (n % 4 == 1) return -1;
    for (i = 0; i < n; i++) {
        v = wq_b64url_values[s[i]];
        if (v < 0) return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            *o++ = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    return (long)(o - out);
}

/* ---- receipt handles ----------------------------------------------------------------------- */
/* A handle is URL-safe base64 (no padding) of: version (1) | id (8, big-endian) | receives (4,
   big-endian) | queue name (UTF-8) | tag (8: SipHash-2-4 of what precedes, little-endian). */
#define WQ_HANDLE_VERSION 2
#define WQ_HANDLE_HEAD 13
#define WQ_HANDLE_TAG 8
#define WQ_HANDLE_MIN_CHARS 20    /* shorter or longer text is no handle */
#define WQ_HANDLE_MAX_CHARS 1024
#define WQ_HANDLE_MAX_RAW 768     /* the bytes WQ_HANDLE_MAX_CHARS decode to */
#define WQ_HANDLE_MAX_QUEUE 255   /* longest queue name encode takes (names are <= 80) */

/* The handle text of (queue, id, receives) into out (room for 4 * (WQ_HANDLE_HEAD +
   WQ_HANDLE_MAX_QUEUE + WQ_HANDLE_TAG) / 3 + 4 characters); returns its length, or 0 when the
   queue name is longer than WQ_HANDLE_MAX_QUEUE. */
static size_t wq_handle_encode(char *out, uint64_t k0, uint64_t k1, const uint8_t *queue,
                               size_t queue_len, uint64_t id, uint32_t receives) {
    uint8_t raw[WQ_HANDLE_HEAD + WQ_HANDLE_MAX_QUEUE + WQ_HANDLE_TAG];
    uint64_t tag;
    size_t n = WQ_HANDLE_HEAD + queue_len;
    int k;
    if (queue_len > WQ_HANDLE_MAX_QUEUE) return 0;
    raw[0] = WQ_HANDLE_VERSION;
    for (k = 0; k < 8; k++) raw[1 + k] = (uint8_t)(id >> (56 - 8 * k));
    for (k = 0; k < 4; k++) raw[9 + k] = (uint8_t)(receives >> (24 - 8 * k));
    memcpy(raw + WQ_HANDLE_HEAD, queue, queue_len);
    tag = wq_siphash24(k0, k1, raw, n);
    for (k = 0; k < 8; k++) raw[n + k] = (uint8_t)(tag >> (8 * k));
    return wq_b64url_encode(out, raw, n + WQ_HANDLE_TAG);
}

/* 1 when s[0:n] is a handle this key issued (version 2): *id and *receives are set and the
   queue name is raw[WQ_HANDLE_HEAD:WQ_HANDLE_HEAD + *queue_len] (raw has WQ_HANDLE_MAX_RAW
   bytes); 0 otherwise. The tag is compared in constant time. */
static int wq_handle_decode(uint64_t k0, uint64_t k1, const uint8_t *s, size_t n, uint8_t *raw,
                            uint64_t *id, uint32_t *receives, size_t *queue_len) {
    long got;
    size_t body;
    uint64_t tag, given = 0, diff;
    int k;
    if (n < WQ_HANDLE_MIN_CHARS || n > WQ_HANDLE_MAX_CHARS) return 0;
    got = wq_b64url_decode(raw, s, n);
    if (got < WQ_HANDLE_HEAD + 1 + WQ_HANDLE_TAG || raw[0] != WQ_HANDLE_VERSION) return 0;
    body = (size_t)got - WQ_HANDLE_TAG;
    tag = wq_siphash24(k0, k1, raw, body);
    for (k = 0; k < 8; k++) given |= (uint64_t)raw[body + k] << (8 * k);
    diff = tag ^ given;
    if (diff != 0) return 0;
    *id = 0;
    for (k = 0; k < 8; k++) *id = (*id << 8) | raw[1 + k];
    *receives = 0;
    for (k = 0; k < 4; k++) *receives = (*receives << 8) | raw[9 + k];
    *queue_len = body - WQ_HANDLE_HEAD;
    return 1;
}

#endif
