/*-------------------------------------------------------------------------
 *
 * normalize_fuzz.c
 *	  libFuzzer harness for the pure-C normalization and hashing code
 *	  (src/normalize.c, src/digest.c, src/countries.c): every function on every input,
 *	  with the properties their callers rely on checked, not just "no
 *	  crash".
 *
 * The first input byte picks a country (or none) for the phone functions;
 * the rest is the value.  Build and run with `make fuzz`.
 *
 *-------------------------------------------------------------------------
 */
#include "normalize.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *const countries[] = {NULL, "US", "GB", "FR", "IT", "RU", "DE", "BR", "IN", "JP"};

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* 64 lowercase hex digits and a NUL: what every hash function promises */
static void
check_hash(const char *h)
{
	for (int i = 0; i < 64; i++)
		if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f')))
			abort();
	if (h[64] != '\0')
		abort();
}

/*
 * Normalization is idempotent: a normalized value (of at most
 * TT_EMAIL_MAXLEN bytes, the longest) normalizes to itself
 */
static void
check_fixed_point(bool (*normalize) (const char *, size_t, char *, size_t *),
				  const char *out, size_t outlen)
{
	char		again[TT_EMAIL_MAXLEN + 1];
	size_t		againlen;

	if (!normalize(out, outlen, again, &againlen) ||
		againlen != outlen || memcmp(out, again, outlen) != 0)
		abort();
}

/* An email has an @ and normalizes to itself */
static void
check_email(const char *in, size_t len)
{
	char		out[TT_EMAIL_MAXLEN + 1];
	size_t		outlen;

	if (!tt_normalize_email(in, len, out, &outlen))
		return;
	if (outlen > TT_EMAIL_MAXLEN || memchr(out, '@', outlen) == NULL)
		abort();
	check_fixed_point(tt_normalize_email, out, outlen);
}

/* A phone is '+' and 8 to 15 digits, and stays so when normalized again */
static void
check_phone(const char *in, size_t len, const TTCountry *country)
{
	char		out[TT_PHONE_BUFSIZE];
	char		again[TT_PHONE_BUFSIZE];
	size_t		n;

	if (!tt_normalize_phone(in, len, country, out))
		return;
	n = strlen(out);
	if (out[0] != '+' || n < 9 || n > 16)
		abort();
	for (size_t i = 1; i < n; i++)
		if (out[i] < '0' || out[i] > '9')
			abort();
	if (!tt_normalize_phone(out, n, NULL, again) || strcmp(out, again) != 0)
		abort();
}

/*
 * A name (or zip code) is non-empty lowercase UTF-8 of at most
 * TT_NAME_MAXLEN bytes, without ASCII controls or blank ends, and
 * normalizes to itself; its hash is the hash of that form.
 */
static void
check_name(const char *in, size_t len)
{
	char		out[TT_NAME_MAXLEN + 1];
	char		hash[TT_HASH_BUFSIZE];
	char		hash_again[TT_HASH_BUFSIZE];
	size_t		outlen;

	if (!tt_normalize_name(in, len, out, &outlen))
		return;
	if (outlen == 0 || outlen > TT_NAME_MAXLEN || strlen(out) != outlen ||
		out[0] == ' ' || out[outlen - 1] == ' ')
		abort();
	for (size_t i = 0; i < outlen; i++)
		if ((unsigned char) out[i] < 0x20 || out[i] == 0x7F ||
			(out[i] >= 'A' && out[i] <= 'Z'))
			abort();
	check_fixed_point(tt_normalize_name, out, outlen);
	if (!tt_hash_name(in, len, hash) || !tt_hash_name(out, outlen, hash_again))
		abort();
	check_hash(hash);
	/* a 64-hex name is taken as its own hash, lowercased: the same either way */
	if (strcmp(hash, hash_again) != 0)
		abort();
}

/* A place has no space and no uppercase ASCII, and normalizes to itself */
static void
check_place(const char *in, size_t len)
{
	char		out[TT_NAME_MAXLEN + 1];
	size_t		outlen;

	if (!tt_normalize_place(in, len, out, &outlen))
		return;
	if (outlen == 0 || outlen > TT_NAME_MAXLEN || strlen(out) != outlen)
		abort();
	for (size_t i = 0; i < outlen; i++)
		if ((unsigned char) out[i] <= 0x20 || out[i] == 0x7F ||
			(out[i] >= 'A' && out[i] <= 'Z'))
			abort();
	check_fixed_point(tt_normalize_place, out, outlen);
}

/* A country is two lowercase letters that the country table knows */
static void
check_country(const char *in, size_t len)
{
	char		out[TT_COUNTRY_BUFSIZE];

	if (!tt_normalize_country(in, len, out))
		return;
	if (out[0] < 'a' || out[0] > 'z' || out[1] < 'a' || out[1] > 'z' ||
		out[2] != '\0' || tt_country_lookup(out, 2) == NULL)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const TTCountry *country = NULL;
	const char *in;
	size_t		len;
	char		hash[TT_HASH_BUFSIZE];
	char		ip[TT_IP_BUFSIZE];

	if (size < 1)
		return 0;
	if (countries[data[0] % 10])
		country = tt_country_lookup(countries[data[0] % 10], 2);
	in = (const char *) data + 1;
	len = size - 1;

	check_email(in, len);
	check_phone(in, len, country);
	if (tt_hash_email(in, len, hash))
		check_hash(hash);
	if (tt_hash_phone(in, len, country, hash))
		check_hash(hash);
	if (tt_hash_external_id(in, len, hash))
		check_hash(hash);
	if (tt_normalize_ip(in, len, ip) && strlen(ip) >= TT_IP_BUFSIZE)
		abort();
	(void) tt_country_lookup(in, len);
	check_name(in, len);
	check_place(in, len);
	check_country(in, len);
	{
		const char *p = in;
		size_t		n = len;

		tt_trim(&p, &n);
		if (p < in || p + n > in + len)
			abort();
	}
	return 0;
}
