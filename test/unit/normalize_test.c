/*-------------------------------------------------------------------------
 *
 * normalize_test.c
 *	  Standalone unit test of the pure-C normalization and hashing code
 *	  (src/normalize.c, src/digest.c, src/countries.c).  No PostgreSQL headers.
 *
 * Prints TAP: the plan "1..N", then one "ok N - ..." or "not ok N - ..."
 * line per check, with "# got:" / "# expected:" diagnostics on failure.
 * Exits 0 only when every check passes.
 *
 * Every expected value was worked out independently of the code under
 * test: digests with sha256sum (e.g. printf '%s' '+12133734253' | sha256sum),
 * lowercase forms from the Unicode tables, canonical IPv6 from RFC 5952.
 *
 * Build and run from the top of the repository:
 *	  make unit && ./test/unit/normalize_test
 *
 *-------------------------------------------------------------------------
 */
#define TAP_NONE "unusable"
#include "tap.h"
#include "normalize.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A string literal and its length, embedded NULs included */
#define S(lit) (lit), (sizeof(lit) - 1)

/* Digests of known inputs (sha256sum) */
#define SHA_EMPTY	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define SHA_EMPTY_UPPER "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
#define SHA_ABC		"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define SHA_PHONE_US "9f7ec22d72092cd3c0b58726ed9c2d91b92e51a3f29837508fb2948bb22dd2fd"	/* +12133734253 */
#define SHA_PHONE_US_NOPLUS "1f81adb30e11317806be982cc82769fbf8627833a89dd87cb24d282f71828830"	/* 12133734253 */
#define SHA_PHONE_GB "20b18ac9de7b3aad174961827d8e451c410af9aedfd1d699927f4b29b81aa1fa"	/* +447911123456 */
#define SHA_ALICE	"848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f"	/* alice_abc@gmail.com */
#define SHA_ELODIE	"f34116fa1fa2ab3840367c97ac2fc11e9e811bc3c424a1361abfc3d719c18e8c"	/* élodie@exemple.fr */
#define SHA_ABC_1	"173896f9bffa2cadd2e7be97b2ad66afbdc1114b3b097956a33fecf56afdf963"	/* ABC-1 */
#define SHA_ABC_1_LOWER "65397a5f96c8faed6bed9b822eb437bf8d75b866ec66fd795b55139b2acba2c5"	/* abc-1 */
/* SHA_EMPTY_UPPER cut to 63 characters, grown to 65 with a '0', and with a 'G' */
#define HEX63_UPPER "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B85"
#define HEX65_UPPER SHA_EMPTY_UPPER "0"
#define HEX64_WITH_G HEX63_UPPER "G"
#define SHA_HEX63	"af0be42f37706bd414139b504b11955169b132a0cdb209b3f1dac6ded516a74d"
#define SHA_HEX65	"c1c68b15de9f9d192fbc428cd2e255c316bf6293280e2054d2fa1a4c8133cf08"
#define SHA_HEX64_WITH_G "95b5bf41476ba92dc5660f0a870fcbdb78a0b67bbcd79bada4359c4e91801c12"

/* Digests of names, zip codes (sha256sum) */
#define SHA_ANN		"49915e0d7d4b402e3017d010bc1c0e83cac6c797d6c16e66340fe3268693a6a1"	/* ann */
#define SHA_MARY_ANN "343b97011010c3549fe7fcd6c226ed9431ea37b0b77ed78f6300a0098925faf1"	/* mary ann */
#define SHA_SW1A_1AA "c69ac90786ee96f8721452ba68d2ebbeaf7938cc797d59bc3303b41af54e02be"	/* sw1a 1aa */
#define SHA_ELODIE_NAME "36bac2631d17463d569eaf1b869e7bf8d40e4636fd8b2b778ee93f504baf6691"	/* élodie */

/* Rows in the country table (grep -c '^\s*{"' src/countries.c) */
#define COUNTRY_COUNT 244

/*
 * Wrappers around the functions under test: each returns its result as a
 * string, or NULL when the function said "unusable".  Output buffers are
 * filled with junk first, so a missing NUL terminator shows.
 */

static const char *
sha(const char *in, size_t len)
{
	static char out[TT_HASH_BUFSIZE];

	memset(out, 'X', sizeof(out));
	tt_sha256_hex(in, len, out);
	return out;
}

static const char *
trim(const char *in, size_t len)
{
	static char out[256];

	tt_trim(&in, &len);
	memcpy(out, in, len);
	out[len] = '\0';
	return out;
}

static const char *
email(const char *in, size_t len)
{
	static char out[TT_EMAIL_MAXLEN + 1];
	size_t		outlen = 0;

	memset(out, 'X', sizeof(out));
	if (!tt_normalize_email(in, len, out, &outlen))
		return NULL;
	if (outlen != strlen(out))
		return "(outlen disagrees with the NUL terminator)";
	return out;
}

static const char *
hash_email(const char *in, size_t len)
{
	static char out[TT_HASH_BUFSIZE];

	memset(out, 'X', sizeof(out));
	return tt_hash_email(in, len, out) ? out : NULL;
}

/* iso NULL: no country known */
static const TTCountry *
country_or_null(const char *iso)
{
	return iso == NULL ? NULL : tt_country_lookup(iso, strlen(iso));
}

static const char *
phone(const char *in, size_t len, const char *iso)
{
	static char out[TT_PHONE_BUFSIZE];
	const TTCountry *country = country_or_null(iso);

	if (iso != NULL && country == NULL)
		return "(test error: no such country)";
	memset(out, 'X', sizeof(out));
	return tt_normalize_phone(in, len, country, out) ? out : NULL;
}

static const char *
hash_phone(const char *in, size_t len, const char *iso)
{
	static char out[TT_HASH_BUFSIZE];
	const TTCountry *country = country_or_null(iso);

	if (iso != NULL && country == NULL)
		return "(test error: no such country)";
	memset(out, 'X', sizeof(out));
	return tt_hash_phone(in, len, country, out) ? out : NULL;
}

static const char *
hash_external_id(const char *in, size_t len)
{
	static char out[TT_HASH_BUFSIZE];

	memset(out, 'X', sizeof(out));
	return tt_hash_external_id(in, len, out) ? out : NULL;
}

static const char *
ip(const char *in, size_t len)
{
	static char out[TT_IP_BUFSIZE];

	memset(out, 'X', sizeof(out));
	return tt_normalize_ip(in, len, out) ? out : NULL;
}

static const char *
name(const char *in, size_t len)
{
	static char out[TT_NAME_MAXLEN + 1];
	size_t		outlen;

	memset(out, 'X', sizeof(out));
	if (!tt_normalize_name(in, len, out, &outlen))
		return NULL;
	return outlen == strlen(out) ? out : "(test error: length differs)";
}

static const char *
hash_name(const char *in, size_t len)
{
	static char out[TT_HASH_BUFSIZE];

	memset(out, 'X', sizeof(out));
	return tt_hash_name(in, len, out) ? out : NULL;
}

static const char *
place(const char *in, size_t len)
{
	static char out[TT_NAME_MAXLEN + 1];
	size_t		outlen;

	memset(out, 'X', sizeof(out));
	if (!tt_normalize_place(in, len, out, &outlen))
		return NULL;
	return outlen == strlen(out) ? out : "(test error: length differs)";
}

static const char *
country_code(const char *in, size_t len)
{
	static char out[TT_COUNTRY_BUFSIZE];

	memset(out, 'X', sizeof(out));
	return tt_normalize_country(in, len, out) ? out : NULL;
}

/* A country as "ISO,calling code,trunk", or NULL when not found */
static const char *
country(const char *iso, size_t len)
{
	static char out[64];
	const TTCountry *c = tt_country_lookup(iso, len);

	if (c == NULL)
		return NULL;
	snprintf(out, sizeof(out), "%s,%s,%s", c->iso, c->calling_code, c->trunk);
	return out;
}

static bool
all_digits(const char *s)
{
	for (; *s != '\0'; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

int
main(void)
{
	char		big[1100];

	tap_begin();

	/* tt_sha256_hex: known vectors (FIPS 180-2) */
	check_str("sha256 of the empty string", sha(S("")), SHA_EMPTY);
	check_str("sha256 of \"abc\"", sha(S("abc")), SHA_ABC);
	check_str("sha256 reads len bytes, not up to a NUL",
			  sha("abcdef", 3), SHA_ABC);

	/* tt_trim: ASCII white space and U+00A0 at both ends */
	check_str("trim spaces", trim(S("  a b  ")), "a b");
	check_str("trim tabs, newlines, CR, VT, FF",
			  trim(S("\t\n\r\v\fa\f\v\r\n\t")), "a");
	check_str("trim U+00A0 mixed with spaces",
			  trim(S("\xC2\xA0 \xC2\xA0" "a" " \xC2\xA0")), "a");
	check_str("trim keeps a lone 0xC2 lead byte", trim(S("a\xC2")), "a\xC2");
	check_str("trim of blanks only is empty", trim(S(" \t\xC2\xA0\n")), "");

	/* tt_is_hashed: exactly 64 hex digits, either case */
	check_bool("64 lowercase hex is hashed", tt_is_hashed(S(SHA_EMPTY)), true);
	check_bool("64 uppercase hex is hashed",
			   tt_is_hashed(S(SHA_EMPTY_UPPER)), true);
	check_bool("63 hex is not hashed", tt_is_hashed(S(HEX63_UPPER)), false);
	check_bool("65 hex is not hashed", tt_is_hashed(S(HEX65_UPPER)), false);
	check_bool("64 chars with a 'G' is not hashed",
			   tt_is_hashed(S(HEX64_WITH_G)), false);

	/* TikTok's published example: (+1)2133734253 */
	check_str("phone (+1)2133734253 normalizes to +12133734253",
			  phone(S("(+1)2133734253"), NULL), "+12133734253");
	check_str("phone (+1)2133734253 hashes as sha256(\"+12133734253\")",
			  hash_phone(S("(+1)2133734253"), NULL), SHA_PHONE_US);
	check_str("sha256 of 12133734253 without the '+'",
			  sha(S("12133734253")), SHA_PHONE_US_NOPLUS);
	check_bool("hashing without the '+' gives a different digest",
			   strcmp(SHA_PHONE_US, sha(S("12133734253"))) != 0, true);
	check_str("TikTok example email alice_abc@gmail.com hashes as itself",
			  hash_email(S("alice_abc@gmail.com")), SHA_ALICE);

	/* email: trimming */
	check_str("email kept as is", email(S("alice_abc@gmail.com")),
			  "alice_abc@gmail.com");
	check_str("email trims spaces", email(S("  alice_abc@gmail.com  ")),
			  "alice_abc@gmail.com");
	check_str("email trims tabs and newlines",
			  email(S("\t\nalice_abc@gmail.com\r\n")), "alice_abc@gmail.com");
	check_str("email trims U+00A0 no-break spaces",
			  email(S("\xC2\xA0" "alice_abc@gmail.com\xC2\xA0")),
			  "alice_abc@gmail.com");
	check_str("email reads len bytes, not up to a NUL",
			  email("alice_abc@gmail.comXYZ", 19), "alice_abc@gmail.com");

	/* email: lowercasing, ASCII and UTF-8 */
	check_str("email lowercases ASCII", email(S("Alice_ABC@Gmail.COM")),
			  "alice_abc@gmail.com");
	check_str("email lowercases Latin-1: ÉLODIE@Exemple.FR",
			  email(S("ÉLODIE@Exemple.FR")), "élodie@exemple.fr");
	check_str("email lowercases Latin Extended-A: ŁÓDŹ@Poczta.PL",
			  email(S("ŁÓDŹ@Poczta.PL")), "łódź@poczta.pl");
	check_str("email lowercases U+0130 to i: İSTANBUL@x.com.tr",
			  email(S("İSTANBUL@x.com.tr")), "istanbul@x.com.tr");
	check_str("email lowercases U+1E9E to U+00DF: STRAẞE@x.de",
			  email(S("STRAẞE@x.de")), "straße@x.de");
	check_str("email keeps the multiplication sign: a×B@x.com",
			  email(S("a×B@x.com")), "a×b@x.com");
	check_str("email lowercases Cyrillic: ИВАН@mail.ru",
			  email(S("ИВАН@mail.ru")), "иван@mail.ru");
	check_str("email lowercases Cyrillic U+0401: ЁЛКА@mail.ru",
			  email(S("ЁЛКА@mail.ru")), "ёлка@mail.ru");
	check_str("email lowercases Greek: ΑΘΗΝΑ@Mail.GR",
			  email(S("ΑΘΗΝΑ@Mail.GR")), "αθηνα@mail.gr");
	check_str("email lowercases accented Greek: ΆΝΝΑ.ΏΡΑ@mail.gr",
			  email(S("ΆΝΝΑ.ΏΡΑ@mail.gr")), "άννα.ώρα@mail.gr");
	check_str("email leaves lowercase UTF-8 alone: élodie@exemple.fr",
			  email(S("élodie@exemple.fr")), "élodie@exemple.fr");
	{
		char		out[TT_EMAIL_MAXLEN + 1];
		size_t		outlen = 0;

		tt_normalize_email(S("ÉLODIE@Exemple.FR"), out, &outlen);
		check_int("email outlen of élodie@exemple.fr is 18 bytes",
				  (long) outlen, 18);
	}
	check_str("email hash: trimmed and lowercased",
			  hash_email(S(" Alice_ABC@Gmail.com\n")), SHA_ALICE);
	check_str("email hash: UTF-8 lowercased",
			  hash_email(S("ÉLODIE@Exemple.FR")), SHA_ELODIE);

	/* email: shape rejections */
	check_str("email empty is unusable", email(S("")), NULL);
	check_str("email blank is unusable", email(S(" \t\xC2\xA0 ")), NULL);
	check_str("email without @ is unusable", email(S("alice.gmail.com")), NULL);
	check_str("email with two @ is unusable",
			  email(S("alice@bob@gmail.com")), NULL);
	check_str("email with empty local part is unusable",
			  email(S("@gmail.com")), NULL);
	check_str("email with empty domain is unusable", email(S("alice@")), NULL);
	check_str("email with undotted domain is unusable",
			  email(S("alice@localhost")), NULL);
	check_str("email with domain starting with a dot is unusable",
			  email(S("alice@.gmail.com")), NULL);
	check_str("email with .. in the domain is unusable",
			  email(S("alice@gmail..com")), NULL);
	check_str("email with one-letter TLD is unusable",
			  email(S("alice@gmail.c")), NULL);
	check_str("email with domain ending in a dot is unusable",
			  email(S("alice@gmail.com.")), NULL);
	check_str("email with a space in the local part is unusable",
			  email(S("ali ce@gmail.com")), NULL);
	check_str("email with a space in the domain is unusable",
			  email(S("alice@gm ail.com")), NULL);
	check_str("email with an inner tab is unusable",
			  email(S("alice\t@gmail.com")), NULL);
	check_str("email with a control char is unusable",
			  email(S("alice\x01@gmail.com")), NULL);
	check_str("email with DEL is unusable", email(S("alice\x7F@gmail.com")),
			  NULL);
	check_str("email in <> is unusable", email(S("<alice@gmail.com>")), NULL);
	check_str("email with display name is unusable",
			  email(S("Alice <alice@gmail.com>")), NULL);
	check_str("email list with a comma is unusable",
			  email(S("alice@gmail.com,bob@gmail.com")), NULL);
	check_str("email with a semicolon is unusable",
			  email(S("alice@gmail.com;")), NULL);
	check_str("email with quotes is unusable",
			  email(S("\"alice\"@gmail.com")), NULL);
	check_str("email with brackets is unusable",
			  email(S("alice@[192.0.2.1]")), NULL);
	check_str("email hash of a bad shape is unusable",
			  hash_email(S("alice.gmail.com")), NULL);

	/* email: length limit, 320 bytes after trimming */
	memset(big, 'a', 315);
	memcpy(big + 315, "@x.co", 5);	/* 320 bytes */
	big[320] = '\0';
	check_int("email of exactly 320 bytes is usable",
			  email(big, 320) ? (long) strlen(email(big, 320)) : -1, 320);
	memset(big, 'a', 316);
	memcpy(big + 316, "@x.co", 5);	/* 321 bytes */
	check_str("email of 321 bytes is unusable", email(big, 321), NULL);
	big[0] = ' ';				/* 320 bytes once trimmed */
	check_int("email of 321 bytes that trims to 320 is usable",
			  email(big, 321) ? (long) strlen(email(big, 321)) : -1, 320);
	memset(big, 'a', 1000);
	memcpy(big + 1000, "@x.co", 5);
	check_str("email of 1005 bytes is unusable", email(big, 1005), NULL);

	/* email: invalid UTF-8 and NUL bytes */
	check_str("email with overlong C0 AF is unusable",
			  email(S("al\xC0\xAF" "ice@gmail.com")), NULL);
	check_str("email with overlong E0 80 AF is unusable",
			  email(S("al\xE0\x80\xAF" "ice@gmail.com")), NULL);
	check_str("email with a lone continuation byte is unusable",
			  email(S("\x80" "alice@gmail.com")), NULL);
	check_str("email with surrogate ED A0 80 is unusable",
			  email(S("al\xED\xA0\x80" "ice@gmail.com")), NULL);
	check_str("email with a truncated sequence inside is unusable",
			  email(S("alice\xC3@gmail.com")), NULL);
	check_str("email with a truncated sequence at the end is unusable",
			  email(S("alice@gmail.com\xE2\x82")), NULL);
	/* the byte past len would complete the sequence: it must not be read */
	check_str("email truncated at len, mid-sequence, is unusable",
			  email("alice@gmail.com\xC3\xA9", 16), NULL);
	check_str("email with a code point past U+10FFFF is unusable",
			  email(S("al\xF4\x90\x80\x80" "ice@gmail.com")), NULL);
	check_str("email with byte FF is unusable",
			  email(S("al\xFF" "ice@gmail.com")), NULL);
	check_str("email with an embedded NUL is unusable",
			  email(S("alice\0@gmail.com")), NULL);
	check_str("email with a trailing NUL is unusable",
			  email(S("alice@gmail.com\0")), NULL);
	check_str("email hash with invalid UTF-8 is unusable",
			  hash_email(S("\x80" "alice@gmail.com")), NULL);

	/* 64-hex pass-through: lowercased, never hashed again */
	check_str("email hash passes uppercase 64-hex through lowercased",
			  hash_email(S(SHA_EMPTY_UPPER)), SHA_EMPTY);
	check_str("email hash passes trimmed 64-hex through",
			  hash_email(S("  " SHA_EMPTY_UPPER "\n")), SHA_EMPTY);
	check_str("phone hash passes uppercase 64-hex through lowercased",
			  hash_phone(S(SHA_EMPTY_UPPER), NULL), SHA_EMPTY);
	check_str("phone hash passes 64-hex through even with a country",
			  hash_phone(S(SHA_EMPTY_UPPER), "GB"), SHA_EMPTY);
	check_str("external_id hash passes uppercase 64-hex through lowercased",
			  hash_external_id(S(SHA_EMPTY_UPPER)), SHA_EMPTY);
	check_str("external_id hash passes lowercase 64-hex through",
			  hash_external_id(S(SHA_EMPTY)), SHA_EMPTY);
	check_str("email hash of 63 hex is not a digest (no @: unusable)",
			  hash_email(S(HEX63_UPPER)), NULL);
	check_str("email hash of 65 hex is not a digest (no @: unusable)",
			  hash_email(S(HEX65_UPPER)), NULL);
	check_str("phone hash of 63 hex is not a digest (letters: unusable)",
			  hash_phone(S(HEX63_UPPER), NULL), NULL);
	check_str("phone hash of 65 hex is not a digest (letters: unusable)",
			  hash_phone(S(HEX65_UPPER), NULL), NULL);
	check_str("external_id of 63 hex is hashed as is",
			  hash_external_id(S(HEX63_UPPER)), SHA_HEX63);
	check_str("external_id of 65 hex is hashed as is",
			  hash_external_id(S(HEX65_UPPER)), SHA_HEX65);
	check_str("external_id of 64 chars with a 'G' is hashed as is",
			  hash_external_id(S(HEX64_WITH_G)), SHA_HEX64_WITH_G);

	/* phone: international forms, separators dropped */
	check_str("phone +1 213-373-4253", phone(S("+1 213-373-4253"), NULL),
			  "+12133734253");
	check_str("phone +1 (213) 373.4253", phone(S("+1 (213) 373.4253"), NULL),
			  "+12133734253");
	check_str("phone +44/7911/123456", phone(S("+44/7911/123456"), NULL),
			  "+447911123456");
	check_str("phone with tabs and U+00A0 inside and around",
			  phone(S("\xC2\xA0+44\t7911\xC2\xA0" "123456 \n"), NULL),
			  "+447911123456");
	check_str("phone reads len bytes, not up to a NUL",
			  phone("+12133734253999", 12, NULL), "+12133734253");
	check_str("phone 0044 7911 123456: 00 means international",
			  phone(S("0044 7911 123456"), NULL), "+447911123456");
	check_str("phone 0044 7911 123456 with US: 00 still international",
			  phone(S("0044 7911 123456"), "US"), "+447911123456");
	check_str("phone +44 7911 123456 with FR: the + wins over the country",
			  phone(S("+44 7911 123456"), "FR"), "+447911123456");

	/* phone: national numbers, with the country's trunk prefix */
	check_str("phone 07911 123456 with GB", phone(S("07911 123456"), "GB"),
			  "+447911123456");
	check_str("phone 7911 123456 with GB (no trunk 0)",
			  phone(S("7911 123456"), "GB"), "+447911123456");
	check_str("phone (213) 373-4253 with US",
			  phone(S("(213) 373-4253"), "US"), "+12133734253");
	check_str("phone 1-213-373-4253 with US (trunk 1)",
			  phone(S("1-213-373-4253"), "US"), "+12133734253");
	check_str("phone 213.373.4253 with CA", phone(S("213.373.4253"), "CA"),
			  "+12133734253");
	check_str("phone 030 1234567 with DE", phone(S("030 1234567"), "DE"),
			  "+49301234567");
	check_str("phone 06 1234 5678 with IT keeps its 0",
			  phone(S("06 1234 5678"), "IT"), "+390612345678");
	check_str("phone 06 1 234 5678 with HU drops trunk 06",
			  phone(S("06 1 234 5678"), "HU"), "+3612345678");
	check_str("phone 8 (912) 345-67-89 with RU drops trunk 8",
			  phone(S("8 (912) 345-67-89"), "RU"), "+79123456789");
	check_str("phone 8 701 123 4567 with KZ drops trunk 8",
			  phone(S("8 701 123 4567"), "KZ"), "+77011234567");
	check_str("phone hash of 07911 123456 with GB",
			  hash_phone(S("07911 123456"), "GB"), SHA_PHONE_GB);
	check_str("phone hash of (213) 373-4253 with US",
			  hash_phone(S("(213) 373-4253"), "US"), SHA_PHONE_US);

	/* phone: unusable */
	check_str("phone national without a country is unusable",
			  phone(S("07911 123456"), NULL), NULL);
	check_str("phone US national without a country is unusable",
			  phone(S("(213) 373-4253"), NULL), NULL);
	check_str("phone hash of a national number without a country is unusable",
			  hash_phone(S("07911 123456"), NULL), NULL);
	check_str("phone empty is unusable", phone(S(""), "US"), NULL);
	check_str("phone blank is unusable", phone(S("  \t "), "US"), NULL);
	check_str("phone lone + is unusable", phone(S("+"), NULL), NULL);
	check_str("phone 555-CALL is unusable", phone(S("555-CALL"), "US"), NULL);
	check_str("phone with ext 12 is unusable",
			  phone(S("+1 213 373 4253 ext 12"), NULL), NULL);
	check_str("phone with x12 is unusable",
			  phone(S("+1 213 373 4253 x12"), NULL), NULL);
	check_str("phone with + in the middle is unusable",
			  phone(S("+1 213+373 4253"), NULL), NULL);
	check_str("phone with + after a digit is unusable",
			  phone(S("1+2133734253"), "US"), NULL);
	check_str("phone with two + is unusable", phone(S("++12133734253"), NULL),
			  NULL);
	check_str("phone with an embedded NUL is unusable",
			  phone(S("+1213\0" "3734253"), NULL), NULL);
	check_str("phone with a comma is unusable",
			  phone(S("+1 213,373,4253"), NULL), NULL);
	check_str("phone of 7 digits is unusable", phone(S("+1234567"), NULL),
			  NULL);
	check_str("phone of 8 digits is usable", phone(S("+12345678"), NULL),
			  "+12345678");
	check_str("phone of 15 digits is usable",
			  phone(S("+123456789012345"), NULL), "+123456789012345");
	check_str("phone of 16 digits is unusable",
			  phone(S("+1234567890123456"), NULL), NULL);
	check_str("phone national of 16 digits with country is unusable",
			  phone(S("23456789012345"), "GB"), NULL);
	check_str("phone +0... is unusable", phone(S("+0123456789"), NULL), NULL);
	check_str("phone 00 0... is unusable", phone(S("00 0123 456789"), NULL),
			  NULL);
	memset(big, '9', 1000);
	big[0] = '+';
	check_str("phone of 999 digits is unusable", phone(big, 1000, NULL), NULL);
	check_str("phone hash of 999 digits is unusable",
			  hash_phone(big, 1000, NULL), NULL);
	check_str("phone of 21 digits is unusable",
			  phone(S("+123456789012345678901"), NULL), NULL);

	/* external_id: trimmed, case kept */
	check_str("external_id \"  ABC-1 \" hashes as sha256(\"ABC-1\")",
			  hash_external_id(S("  ABC-1 ")), SHA_ABC_1);
	check_str("external_id trims tabs, newlines and U+00A0",
			  hash_external_id(S("\t\xC2\xA0" "ABC-1\r\n")), SHA_ABC_1);
	check_str("external_id keeps case: abc-1 hashes differently",
			  hash_external_id(S("abc-1")), SHA_ABC_1_LOWER);
	check_str("external_id reads len bytes, not up to a NUL",
			  hash_external_id("ABC-1XYZ", 5), SHA_ABC_1);
	check_str("external_id empty is unusable", hash_external_id(S("")), NULL);
	check_str("external_id blank is unusable",
			  hash_external_id(S(" \t\n\xC2\xA0 ")), NULL);

	/* tt_country_lookup: any case, white space ignored */
	check_str("country gb", country(S("gb")), "GB,44,0");
	check_str("country \" US \"", country(S(" US ")), "US,1,1");
	check_str("country Gb", country(S("Gb")), "GB,44,0");
	check_str("country \\tde\\n", country(S("\tde\n")), "DE,49,0");
	check_str("country DE", country(S("DE")), "DE,49,0");
	check_str("country JP", country(S("JP")), "JP,81,0");
	check_str("country BR", country(S("BR")), "BR,55,0");
	check_str("country IN", country(S("IN")), "IN,91,0");
	check_str("country ZA", country(S("ZA")), "ZA,27,0");
	check_str("country AE", country(S("AE")), "AE,971,0");
	check_str("country IT has no trunk", country(S("IT")), "IT,39,");
	check_str("country HU has trunk 06", country(S("HU")), "HU,36,06");
	check_str("country RU has trunk 8", country(S("RU")), "RU,7,8");
	check_str("country AD, first in the table", country(S("AD")), "AD,376,");
	check_str("country ZW, last in the table", country(S("ZW")), "ZW,263,0");
	check_str("country XX not found", country(S("XX")), NULL);
	check_str("country AA not found (before the first)", country(S("AA")),
			  NULL);
	check_str("country ZZ not found (after the last)", country(S("ZZ")), NULL);
	check_str("country G not found", country(S("G")), NULL);
	check_str("country GBR not found", country(S("GBR")), NULL);
	check_str("country empty not found", country(S("")), NULL);
	check_str("country blank not found", country(S("  ")), NULL);
	check_str("country G1 not found", country(S("G1")), NULL);
	check_str("country G with a NUL not found", country(S("G\0")), NULL);
	check_str("country GB reads len bytes", country("GBR", 2), "GB,44,0");

	/* tt_country_lookup: walk every two-letter code */
	{
		int			found = 0;
		bool		own_code = true;
		bool		lower_same = true;
		bool		codes_ok = true;

		for (char a = 'A'; a <= 'Z'; a++)
		{
			for (char b = 'A'; b <= 'Z'; b++)
			{
				char		key[2] = {a, b};
				char		lkey[2] = {(char) (a + 32), (char) (b + 32)};
				const TTCountry *c = tt_country_lookup(key, 2);

				if (c == NULL)
					continue;
				found++;
				if (c->iso[0] != a || c->iso[1] != b || c->iso[2] != '\0')
					own_code = false;
				if (tt_country_lookup(lkey, 2) != c)
					lower_same = false;
				if (strlen(c->calling_code) < 1 ||
					strlen(c->calling_code) > 3 ||
					!all_digits(c->calling_code) ||
					c->calling_code[0] == '0' ||
					!all_digits(c->trunk))
					codes_ok = false;
			}
		}
		check_int("every table row is found by its code (table sorted)",
				  found, COUNTRY_COUNT);
		check_bool("every code finds its own row", own_code, true);
		check_bool("every code finds the same row in lowercase",
				   lower_same, true);
		check_bool("every calling code is 1-3 digits, no leading 0; trunks are digits",
				   codes_ok, true);
	}

	/* tt_normalize_ip: IPv4 and IPv6, canonical text */
	check_str("ip 192.0.2.1", ip(S("192.0.2.1")), "192.0.2.1");
	check_str("ip trimmed", ip(S("  192.0.2.1\n")), "192.0.2.1");
	check_str("ip reads len bytes, not up to a NUL",
			  ip("192.0.2.1junk", 9), "192.0.2.1");
	check_str("ip 2001:DB8:0:0:0:0:0:1 canonicalized",
			  ip(S("2001:DB8:0:0:0:0:0:1")), "2001:db8::1");
	check_str("ip 2001:0db8:0000:0000:0000:ff00:0042:8329 canonicalized",
			  ip(S("2001:0db8:0000:0000:0000:ff00:0042:8329")),
			  "2001:db8::ff00:42:8329");
	check_str("ip ::1", ip(S("::1")), "::1");
	check_str("ip IPv4-mapped ::FFFF:192.0.2.1",
			  ip(S("::FFFF:192.0.2.1")), "::ffff:192.0.2.1");
	check_str("ip of 45 chars, the longest text form",
			  ip(S("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255")),
			  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
	check_str("ip of 45 chars padded with blanks",
			  ip(S("   ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255   ")),
			  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
	check_str("ip empty is unusable", ip(S("")), NULL);
	check_str("ip garbage is unusable", ip(S("not an ip")), NULL);
	check_str("ip 1.2.3.256 is unusable", ip(S("1.2.3.256")), NULL);
	check_str("ip 1.2.3 is unusable", ip(S("1.2.3")), NULL);
	check_str("ip with a prefix length is unusable", ip(S("1.2.3.4/24")),
			  NULL);
	check_str("ip fe80::1%eth0 is unusable", ip(S("fe80::1%eth0")), NULL);
	check_str("ip 2001:db8:::1 is unusable", ip(S("2001:db8:::1")), NULL);
	check_str("ip with an embedded NUL is unusable", ip(S("1.2.3.4\0")), NULL);
	memset(big, '1', 1000);
	check_str("ip of 1000 chars is unusable", ip(big, 1000), NULL);

	/* pasted junk: "(0)" trunk notation, invisible characters, more scripts */
	check_str("phone +44 (0)7911 123456 drops the optional trunk 0",
			  phone(S("+44 (0)7911 123456"), NULL), "+447911123456");
	check_str("phone +49 (0)30 1234567 drops the optional trunk 0",
			  phone(S("+49 (0)30 1234567"), NULL), "+49301234567");
	check_str("phone (0)30 1234567 with DE", phone(S("(0)30 1234567"), "DE"),
			  "+49301234567");
	check_str("email trims a BOM", email(S("\xEF\xBB\xBF" "a@x.com")), "a@x.com");
	check_str("email trims a zero-width space",
			  email(S("a@x.com\xE2\x80\x8B")), "a@x.com");
	check_str("email with an inner no-break space is unusable",
			  email(S("a\xC2\xA0" "b@x.com")), NULL);
	check_str("email with a C1 control is unusable",
			  email(S("a\xC2\x80@x.com")), NULL);
	check_str("email with an inner zero-width space is unusable",
			  email(S("a\xE2\x80\x8B" "b@x.com")), NULL);
	check_str("email lowercases Ukrainian U+0490",
			  email(S("\xD2\x90\xD0\x90@ukr.net")), "\xD2\x91\xD0\xB0@ukr.net");
	check_str("email lowercases Romanian U+0218",
			  email(S("\xC8\x98T@x.ro")), "\xC8\x99t@x.ro");
	check_str("email lowercases Vietnamese U+1EA0",
			  email(S("\xE1\xBA\xA0NH@x.vn")), "\xE1\xBA\xA1nh@x.vn");

	/* first name, last name, zip code: trimmed, lowercased, hashed */
	check_str("name trimmed and lowercased", name(S("  Ann \t")), "ann");
	check_str("name keeps its inner space", name(S("Mary Ann")), "mary ann");
	check_str("name lowercases UTF-8", name(S("\xC3\x89lodie")), "\xC3\xA9lodie");
	check_str("name keeps punctuation", name(S("O'Brien")), "o'brien");
	check_str("name: an inner no-break space becomes a space",
			  name(S("Mary\xC2\xA0" "Ann")), "mary ann");
	check_str("name: an inner zero-width space vanishes",
			  name(S("An\xE2\x80\x8Bn")), "ann");
	check_str("name: Unicode spaces at the ends go, as trimmed ones do",
			  name(S("\xE2\x80\x87" "Ex\xE2\x80\x87")), "ex");
	check_str("name with an inner tab is unusable", name(S("Mary\tAnn")), NULL);
	check_str("name with a C1 control is unusable", name(S("A\xC2\x85nn")), NULL);
	check_str("name of invalid UTF-8 is unusable", name(S("Ann\xC3")), NULL);
	check_str("blank name is unusable", name(S(" \xC2\xA0 ")), NULL);
	check_str("name of zero-width spaces only is unusable",
			  name(S("\xE2\x80\x8C\xE2\x80\x8D")), NULL);
	memset(big, 'a', TT_NAME_MAXLEN + 1);
	check_str("name of 256 bytes is unusable", name(big, TT_NAME_MAXLEN + 1), NULL);
	check_bool("name of 255 bytes is usable",
			   name(big, TT_NAME_MAXLEN) != NULL, true);
	check_str("name reads len bytes, not up to a NUL", name("AnnXYZ", 3), "ann");
	check_str("hash of Ann is sha256(\"ann\")", hash_name(S(" ANN ")), SHA_ANN);
	check_str("hash of Mary Ann is sha256(\"mary ann\")",
			  hash_name(S("Mary Ann")), SHA_MARY_ANN);
	check_str("hash of a zip code keeps its inner space",
			  hash_name(S("SW1A 1AA ")), SHA_SW1A_1AA);
	check_str("hash of \xC3\x89lodie is sha256(\"\xC3\xA9lodie\")",
			  hash_name(S("\xC3\x89lodie")), SHA_ELODIE_NAME);
	check_str("hashed name passes through lowercased",
			  hash_name(S(" " SHA_EMPTY_UPPER " ")), SHA_EMPTY);
	check_str("blank name has no hash", hash_name(S("  ")), NULL);
	check_str("a digest with a BOM inside hashes as the digest does",
			  hash_name(S("E3B0C44298FC1C149AFBF4C8996F\xEF\xBB\xBF" "B92427AE41E4649B934CA495991B7852B855")),
			  SHA_EMPTY);

	/* city, state: plain, lowercased, spaces removed */
	check_str("city lowercased, spaces removed", place(S(" New York ")), "newyork");
	check_str("city: Unicode spaces removed too",
			  place(S("S\xC3\x83O\xC2\xA0PAULO")), "s\xC3\xA3opaulo");
	check_str("city keeps punctuation", place(S("St. Louis")), "st.louis");
	check_str("state code lowercased", place(S("CA")), "ca");
	check_str("city with a line break is unusable", place(S("New\nYork")), NULL);
	check_str("blank city is unusable", place(S("   ")), NULL);
	check_str("city of invalid UTF-8 is unusable", place(S("\xFF")), NULL);

	/* country: ISO 3166 alpha-2, lowercase */
	check_str("country GB is gb", country_code(S("GB")), "gb");
	check_str("country us, trimmed, is us", country_code(S(" us ")), "us");
	check_str("country XX is unusable", country_code(S("XX")), NULL);
	check_str("country name is unusable", country_code(S("France")), NULL);
	check_str("country alpha-3 is unusable", country_code(S("USA")), NULL);
	check_str("blank country is unusable", country_code(S("")), NULL);

	return tap_end();
}
