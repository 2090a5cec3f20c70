/*-------------------------------------------------------------------------
 *
 * digest.c
 *	  SHA-256 as TikTok wants it (64 lowercase hex digits), and the test
 *	  for a value that already is such a digest.
 *
 * Pure C: no PostgreSQL headers (see normalize.h).  This is the hot spot
 * of every hashing function, hence the low-level OpenSSL calls and the
 * SSE2 hex encoding.
 *
 *-------------------------------------------------------------------------
 */
#include "normalize.h"

#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

/*
 * The low-level SHA-256 calls are deprecated in OpenSSL 3 but still the
 * fastest: SHA256() now goes through EVP_Q_digest, which fetches the
 * algorithm from the provider store (locks, mallocs) on every call: six
 * times the cost of hashing a short string.  Without them (OpenSSL built
 * with no-deprecated) we use SHA256().
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

static void hex_encode_digest(const unsigned char *digest, char *out);

#ifndef __SSE2__
/* "000102...feff": the two lowercase hex digits of every byte */
#define HEX_ROW(h) \
	h "0" h "1" h "2" h "3" h "4" h "5" h "6" h "7" \
	h "8" h "9" h "a" h "b" h "c" h "d" h "e" h "f"
static const char hexpairs[] =
	HEX_ROW("0") HEX_ROW("1") HEX_ROW("2") HEX_ROW("3")
	HEX_ROW("4") HEX_ROW("5") HEX_ROW("6") HEX_ROW("7")
	HEX_ROW("8") HEX_ROW("9") HEX_ROW("a") HEX_ROW("b")
	HEX_ROW("c") HEX_ROW("d") HEX_ROW("e") HEX_ROW("f");
#endif

/* Already a SHA-256 hex digest? Then it must not be hashed again. */
bool
tt_is_hashed(const char *s, size_t len)
{
	if (len != 64)
		return false;
	for (size_t i = 0; i < len; i++)
	{
		char		c = s[i];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
			  (c >= 'A' && c <= 'F')))
			return false;
	}
	return true;
}

/* Copy a 64-hex digest lowercased, with its NUL */
void
tt_lower_hex_copy(const char *in, char *out)
{
	for (int i = 0; i < 64; i++)
	{
		char		c = in[i];

		out[i] = (c >= 'A' && c <= 'F') ? (char) (c - 'A' + 'a') : c;
	}
	out[64] = '\0';
}

/*
 * A digest as 64 lowercase hex digits and a NUL.  With SSE2 (every x86-64)
 * 16 bytes at a time: their nibbles interleaved, '0' added, and 'a' - '0'
 * - 10 more where a nibble is over 9; it takes a tenth off the cost of
 * tt_hash_email.  Elsewhere two digits per byte from a table of the 256
 * pairs, half the work of a lookup per nibble.
 */
static void
hex_encode_digest(const unsigned char *digest, char *out)
{
#ifdef __SSE2__
	const __m128i low_nibble = _mm_set1_epi8(0x0F);
	const __m128i nine = _mm_set1_epi8(9);
	const __m128i zero = _mm_set1_epi8('0');
	const __m128i alpha = _mm_set1_epi8('a' - '0' - 10);

	for (int i = 0; i < SHA256_DIGEST_LENGTH; i += 16)
	{
		__m128i		v = _mm_loadu_si128((const __m128i *) (digest + i));
		__m128i		hi = _mm_and_si128(_mm_srli_epi16(v, 4), low_nibble);
		__m128i		lo = _mm_and_si128(v, low_nibble);
		__m128i		d[2];

		/* digits of bytes 0-7, then of bytes 8-15, high nibble first */
		d[0] = _mm_unpacklo_epi8(hi, lo);
		d[1] = _mm_unpackhi_epi8(hi, lo);
		for (int k = 0; k < 2; k++)
		{
			__m128i		over9 = _mm_cmpgt_epi8(d[k], nine);

			d[k] = _mm_add_epi8(_mm_add_epi8(d[k], zero),
								_mm_and_si128(over9, alpha));
			_mm_storeu_si128((__m128i *) (out + 2 * i + 16 * k), d[k]);
		}
	}
#else
	for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
		memcpy(out + 2 * i, hexpairs + 2 * digest[i], 2);
#endif
	out[64] = '\0';
}

/*
 * SHA-256 of the bytes, as TikTok wants it: 64 lowercase hex digits.
 * This is the hot spot of every hashing function (see the includes).
 */
void
tt_sha256_hex(const char *data, size_t len, char *out)
{
	unsigned char digest[SHA256_DIGEST_LENGTH];

#ifndef OPENSSL_NO_DEPRECATED_3_0
	SHA256_CTX	ctx;

	SHA256_Init(&ctx);
	SHA256_Update(&ctx, data, len);
	SHA256_Final(digest, &ctx);
#else
	SHA256((const unsigned char *) data, len, digest);
#endif
	hex_encode_digest(digest, out);
}
