/*-------------------------------------------------------------------------
 *
 * normalize.h
 *	  Normalization and hashing of customer identifiers, as TikTok's
 *	  advanced matching wants them.
 *
 * Pure C: no PostgreSQL headers, so the rules can be unit-tested, fuzzed
 * and read on their own.  Every function takes a byte string with its
 * length (it need not be NUL-terminated) and says "unusable" by returning
 * false; none of them allocates memory.
 *
 * Vocabulary:
 *	- normalized: the exact bytes TikTok expects before hashing
 *	  (trimmed lowercase email, E.164 phone with its leading '+').
 *	- name: a first name, last name or zip code; hashed, like email, after
 *	  trimming and lowercasing.
 *	- place: a city or state; sent plain, lowercased, spaces removed.  A
 *	  country is sent as its lowercase ISO 3166 alpha-2 code.
 *	- hashed: lowercase hex SHA-256 of the normalized bytes, 64 characters.
 *	  A value that already is 64 hex characters is taken as hashed.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TT_NORMALIZE_H
#define TT_NORMALIZE_H

#include <stdbool.h>
#include <stddef.h>

/* 64 hex digits and a NUL */
#define TT_HASH_BUFSIZE 65
/* '+', at most 15 digits, NUL */
#define TT_PHONE_BUFSIZE 17
/* longest email we accept, in bytes (RFC 5321: 64 + 1 + 255) */
#define TT_EMAIL_MAXLEN 320
/* longest textual IP address plus NUL (INET6_ADDRSTRLEN) */
#define TT_IP_BUFSIZE 46
/* longest first name, last name, zip code, city or state, in bytes */
#define TT_NAME_MAXLEN 255
/* ISO 3166 alpha-2, lowercase, and a NUL */
#define TT_COUNTRY_BUFSIZE 3

/* One row of the country table: ISO 3166 alpha-2, calling code, trunk prefix */
typedef struct TTCountry
{
	const char *iso;			/* "GB" */
	const char *calling_code;	/* "44" */
	const char *trunk;			/* "0"; "" where the national number keeps
								 * its leading digits (Italy) */
} TTCountry;

/* in countries.c */
extern const TTCountry *tt_country_lookup(const char *iso, size_t len);

/* in digest.c */
extern bool tt_is_hashed(const char *s, size_t len);
extern void tt_lower_hex_copy(const char *in, char *out);
extern void tt_sha256_hex(const char *data, size_t len, char *out);

/* in normalize.c */
extern void tt_trim(const char **s, size_t *len);
extern bool tt_normalize_email(const char *in, size_t len, char *out,
							   size_t *outlen);
extern bool tt_normalize_phone(const char *in, size_t len,
							   const TTCountry *country, char *out);
extern bool tt_normalize_ip(const char *in, size_t len, char *out);
extern bool tt_normalize_name(const char *in, size_t len, char *out,
							  size_t *outlen);
extern bool tt_normalize_place(const char *in, size_t len, char *out,
							   size_t *outlen);
extern bool tt_normalize_country(const char *in, size_t len, char *out);

extern bool tt_hash_email(const char *in, size_t len, char *out);
extern bool tt_hash_phone(const char *in, size_t len,
						  const TTCountry *country, char *out);
extern bool tt_hash_external_id(const char *in, size_t len, char *out);
extern bool tt_hash_name(const char *in, size_t len, char *out);

#endif							/* TT_NORMALIZE_H */
