/*-------------------------------------------------------------------------
 *
 * normalize.c
 *	  Email, phone, external_id, IP, name and place normalization, and
 *	  the hashes of the normalized identifiers (SHA-256 itself is in
 *	  digest.c).
 *
 * The rules follow TikTok's advanced matching: email is trimmed and
 * lowercased; phone is E.164 with its '+'; external_id is trimmed; ip is
 * sent plain.  First name, last name and zip code are trimmed and
 * lowercased, then hashed; city and state are sent plain, lowercased with
 * their spaces removed; country as its lowercase ISO 3166 alpha-2 code.
 * An input that already is 64 hex characters is taken as a hash and
 * passes through lowercased, so nothing is hashed twice.
 *
 *-------------------------------------------------------------------------
 */
#include "normalize.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

static bool is_ascii_space(unsigned char c);
static size_t invisible_space_len(const unsigned char *p, size_t n);
static int	utf8_decode(const unsigned char *s, size_t len, uint32_t *cp);
static size_t utf8_encode(uint32_t cp, char *out);
static uint32_t lower_codepoint(uint32_t cp);
static bool is_invisible(uint32_t cp);
static inline bool email_byte_ok(const char *s, size_t i, unsigned char cls,
								 size_t *at, size_t *last_dot);
static inline bool email_end_ok(size_t len, size_t at, size_t last_dot);
static bool email_shape_ok(const char *s, size_t len);
static bool normalize_trimmed_email(const char *in, size_t len, char *out,
									size_t *outlen);
static bool phone_separator(unsigned char c);
static size_t normalize_phone(const char *in, size_t len,
							  const TTCountry *country, char *out);
static bool is_zero_width(uint32_t cp);
static bool lower_text(const char *in, size_t len, bool keep_spaces,
					   char *out, size_t *outlen);

/* White space we trim: ASCII, as in C's isspace, without locale */
static bool
is_ascii_space(unsigned char c)
{
	return c == ' ' || (c >= '\t' && c <= '\r');
}

/* Length of a no-break space, zero-width space or BOM at p, else 0 */
static size_t
invisible_space_len(const unsigned char *p, size_t n)
{
	if (n >= 2 && p[0] == 0xC2 && p[1] == 0xA0)
		return 2;				/* U+00A0 */
	if (n >= 3 && ((p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF) ||
				   (p[0] == 0xE2 && p[1] == 0x80 && p[2] == 0x8B)))
		return 3;				/* U+FEFF, U+200B */
	return 0;
}

/*
 * Trim ASCII white space, no-break spaces (common in values pasted from
 * web pages), zero-width spaces and byte-order marks (CSV exports) from
 * both ends, in place.
 */
void
tt_trim(const char **s, size_t *len)
{
	const unsigned char *p = (const unsigned char *) *s;
	size_t		n = *len;

	size_t		k;

	/* the common case, printable ASCII at both ends: nothing to trim */
	if (n > 0 && p[0] > ' ' && p[0] < 0x80 &&
		p[n - 1] > ' ' && p[n - 1] < 0x80)
		return;
	for (;;)
	{
		if (n >= 1 && is_ascii_space(p[0]))
			p++, n--;
		else if ((k = invisible_space_len(p, n)) > 0)
			p += k, n -= k;
		else
			break;
	}
	for (;;)
	{
		if (n >= 1 && is_ascii_space(p[n - 1]))
			n--;
		else if (n >= 2 && invisible_space_len(p + n - 2, 2) == 2)
			n -= 2;
		else if (n >= 3 && invisible_space_len(p + n - 3, 3) == 3)
			n -= 3;
		else
			break;
	}
	*s = (const char *) p;
	*len = n;
}

/*
 * Decode one strict UTF-8 sequence (no overlongs, no surrogates, nothing
 * past U+10FFFF).  Returns its length in bytes, or 0 when invalid.
 */
static int
utf8_decode(const unsigned char *s, size_t len, uint32_t *cp)
{
	uint32_t	c = s[0];
	int			n;
	uint32_t	min;

	if (c < 0x80)
	{
		*cp = c;
		return 1;
	}
	if (c >= 0xC2 && c <= 0xDF)
		n = 2, c &= 0x1F, min = 0x80;
	else if (c >= 0xE0 && c <= 0xEF)
		n = 3, c &= 0x0F, min = 0x800;
	else if (c >= 0xF0 && c <= 0xF4)
		n = 4, c &= 0x07, min = 0x10000;
	else
		return 0;
	if (len < (size_t) n)
		return 0;
	for (int i = 1; i < n; i++)
	{
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3F);
	}
	if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
		return 0;
	*cp = c;
	return n;
}

/* Encode a code point as UTF-8; returns the bytes written */
static size_t
utf8_encode(uint32_t cp, char *out)
{
	unsigned char *o = (unsigned char *) out;

	if (cp < 0x80)
	{
		o[0] = (unsigned char) cp;
		return 1;
	}
	if (cp < 0x800)
	{
		o[0] = (unsigned char) (0xC0 | (cp >> 6));
		o[1] = (unsigned char) (0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000)
	{
		o[0] = (unsigned char) (0xE0 | (cp >> 12));
		o[1] = (unsigned char) (0x80 | ((cp >> 6) & 0x3F));
		o[2] = (unsigned char) (0x80 | (cp & 0x3F));
		return 3;
	}
	o[0] = (unsigned char) (0xF0 | (cp >> 18));
	o[1] = (unsigned char) (0x80 | ((cp >> 12) & 0x3F));
	o[2] = (unsigned char) (0x80 | ((cp >> 6) & 0x3F));
	o[3] = (unsigned char) (0x80 | (cp & 0x3F));
	return 4;
}

/*
 * Simple lowercase mapping of the scripts that show up in email addresses
 * (Latin, Greek, Cyrillic).  Fixed here rather than taken from the server's
 * locale, so the same address hashes the same in every database: the
 * hashing functions are IMMUTABLE.  No mapping makes the UTF-8 longer.
 */
static uint32_t
lower_codepoint(uint32_t c)
{
	if (c >= 'A' && c <= 'Z')
		return c + 32;
	if (c < 0xC0)
		return c;
	if (c <= 0xDE)
		return c == 0xD7 ? c : c + 32;	/* Latin-1, but the multiplication
										 * sign */
	if (c == 0x130)
		return 'i';				/* dotted capital I */
	if (c >= 0x100 && c <= 0x137)
		return (c % 2 == 0) ? c + 1 : c;
	if (c >= 0x139 && c <= 0x148)
		return (c % 2 == 1) ? c + 1 : c;
	if (c >= 0x14A && c <= 0x177)
		return (c % 2 == 0) ? c + 1 : c;
	if (c == 0x178)
		return 0xFF;
	if (c >= 0x179 && c <= 0x17E)
		return (c % 2 == 1) ? c + 1 : c;
	if (c == 0x386)
		return 0x3AC;
	if (c >= 0x388 && c <= 0x38A)
		return c + 37;
	if (c == 0x38C)
		return 0x3CC;
	if (c == 0x38E || c == 0x38F)
		return c + 63;
	if (c >= 0x391 && c <= 0x3AB && c != 0x3A2)
		return c + 32;
	if (c >= 0x400 && c <= 0x40F)
		return c + 80;
	if (c >= 0x410 && c <= 0x42F)
		return c + 32;
	if (c >= 0x460 && c <= 0x4FF)
	{
		/* Cyrillic extensions (Ukrainian, Kazakh...): mostly pairs */
		if (c == 0x4C0)
			return 0x4CF;
		if (c >= 0x4C1 && c <= 0x4CE)
			return (c % 2 == 1) ? c + 1 : c;
		if (c <= 0x481 || c >= 0x48A)
			return (c % 2 == 0) ? c + 1 : c;
		return c;
	}
	if ((c >= 0x200 && c <= 0x21F) || (c >= 0x222 && c <= 0x233) ||
		(c >= 0x1E00 && c <= 0x1E95) || (c >= 0x1EA0 && c <= 0x1EFF))
		return (c % 2 == 0) ? c + 1 : c;	/* Romanian, Vietnamese... */
	if (c == 0x1E9E)
		return 0xDF;			/* capital sharp s */
	return c;
}

/*
 * Characters that cannot be part of a real address but slip into pasted
 * values: C1 controls, Unicode spaces, zero-width characters, the BOM.
 */
static bool
is_invisible(uint32_t c)
{
	return (c >= 0x80 && c <= 0xA0) || c == 0x1680 ||
		(c >= 0x2000 && c <= 0x200F) || (c >= 0x2028 && c <= 0x202F) ||
		c == 0x205F || c == 0x3000 || c == 0xFEFF;
}

/*
 * Classes of the ASCII bytes of an email, for the shape check: plain,
 * uppercase, '@', '.', and bad (white space and controls, DEL, and the
 * specials "(),:;<>[\]", which only appear in pasted junk).  A table, not
 * strchr(): it is read once per byte of every email hashed.  Bytes from
 * 0x80 up are plain here; the UTF-8 decoder judges them.
 */
enum
{
	EB_OK,
	EB_UP,
	EB_AT,
	EB_DOT,
	EB_BAD
};

static const unsigned char email_bytes[128] = {
	/* 0x00 - 0x1F: controls */
	EB_BAD, EB_BAD, EB_BAD, EB_BAD, EB_BAD, EB_BAD, EB_BAD, EB_BAD,
	EB_BAD, EB_BAD, EB_BAD, EB_BAD, EB_BAD, EB_BAD, EB_BAD, EB_BAD,
	EB_BAD, EB_BAD, EB_BAD, EB_BAD, EB_BAD, EB_BAD, EB_BAD, EB_BAD,
	EB_BAD, EB_BAD, EB_BAD, EB_BAD, EB_BAD, EB_BAD, EB_BAD, EB_BAD,
	/* ' ' ! " # $ % & ' ( ) * + , - . / */
	EB_BAD, EB_OK, EB_BAD, EB_OK, EB_OK, EB_OK, EB_OK, EB_OK,
	EB_BAD, EB_BAD, EB_OK, EB_OK, EB_BAD, EB_OK, EB_DOT, EB_OK,
	/* 0 - 9 : ; < = > ? */
	EB_OK, EB_OK, EB_OK, EB_OK, EB_OK, EB_OK, EB_OK, EB_OK,
	EB_OK, EB_OK, EB_BAD, EB_BAD, EB_BAD, EB_OK, EB_BAD, EB_OK,
	/* @ A - Z [ \ ] ^ _ */
	EB_AT, EB_UP, EB_UP, EB_UP, EB_UP, EB_UP, EB_UP, EB_UP,
	EB_UP, EB_UP, EB_UP, EB_UP, EB_UP, EB_UP, EB_UP, EB_UP,
	EB_UP, EB_UP, EB_UP, EB_UP, EB_UP, EB_UP, EB_UP, EB_UP,
	EB_UP, EB_UP, EB_UP, EB_BAD, EB_BAD, EB_BAD, EB_OK, EB_OK,
	/* ` a - z { | } ~ DEL */
	EB_OK, EB_OK, EB_OK, EB_OK, EB_OK, EB_OK, EB_OK, EB_OK,
	EB_OK, EB_OK, EB_OK, EB_OK, EB_OK, EB_OK, EB_OK, EB_OK,
	EB_OK, EB_OK, EB_OK, EB_OK, EB_OK, EB_OK, EB_OK, EB_OK,
	EB_OK, EB_OK, EB_OK, EB_OK, EB_OK, EB_OK, EB_OK, EB_BAD
};

/*
 * The shape check of one lowercased byte s[i] of class cls, all before it
 * checked: false when the address cannot be right whatever follows.  *at
 * and *last_dot are the positions of the '@' and of the domain's last
 * '.', 0 while there is none (an '@' at 0 is refused, so neither can be
 * at 0).  Shared by the ASCII pass and email_shape_ok, so the two agree.
 */
static inline bool
email_byte_ok(const char *s, size_t i, unsigned char cls, size_t *at,
			  size_t *last_dot)
{
	if (cls == EB_BAD)
		return false;
	if (cls == EB_AT)
	{
		if (i == 0 || *at != 0)
			return false;		/* empty local part, or a second '@' */
		*at = i;
	}
	else if (cls == EB_DOT && *at != 0)
	{
		if (i == *at + 1 || s[i - 1] == '.')
			return false;		/* domain starts with a dot, or ".." */
		*last_dot = i;
	}
	return true;
}

/*
 * The end of the shape check: an '@' was seen, and a dot after it, and the
 * top-level label has two or more characters.
 */
static inline bool
email_end_ok(size_t len, size_t at, size_t last_dot)
{
	return at != 0 && last_dot != 0 && len - (last_dot + 1) >= 2;
}

/*
 * Does a trimmed, lowercased string look like local@domain?  One '@', a
 * local part, a dotted domain with a top-level label of two or more, and
 * none of the characters that only appear in pasted junk.
 */
static bool
email_shape_ok(const char *s, size_t len)
{
	size_t		at = 0;
	size_t		last_dot = 0;

	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (!email_byte_ok(s, i, c < 0x80 ? email_bytes[c] : EB_OK,
						   &at, &last_dot))
			return false;
	}
	return email_end_ok(len, at, last_dot);
}

/*
 * Lowercase (UTF-8 aware) and check an already trimmed email.  ASCII, by
 * far the common case, is lowercased and checked in one pass, a table
 * lookup per byte; the first non-ASCII byte hands the rest over to the
 * UTF-8 decoder, and the shape is then checked in a pass of its own.
 * out must hold TT_EMAIL_MAXLEN + 1 bytes; it is NUL-terminated.
 */
static bool
normalize_trimmed_email(const char *in, size_t len, char *out,
						size_t *outlen)
{
	const unsigned char *p = (const unsigned char *) in;
	size_t		at = 0;
	size_t		last_dot = 0;
	size_t		i;
	size_t		o;

	if (len == 0 || len > TT_EMAIL_MAXLEN)
		return false;
	for (i = 0; i < len; i++)
	{
		unsigned char c = p[i];
		unsigned char cls;

		if (c >= 0x80)
			break;
		cls = email_bytes[c];
		out[i] = (char) (cls == EB_UP ? c + ('a' - 'A') : c);
		if (cls > EB_UP && !email_byte_ok(out, i, cls, &at, &last_dot))
			return false;
	}
	if (i == len)
	{
		out[len] = '\0';
		if (!email_end_ok(len, at, last_dot))
			return false;
		*outlen = len;
		return true;
	}
	o = i;
	while (i < len)
	{
		uint32_t	cp;
		int			n = utf8_decode(p + i, len - i, &cp);

		if (n == 0 || is_invisible(cp))
			return false;
		i += n;
		o += utf8_encode(lower_codepoint(cp), out + o);
	}
	out[o] = '\0';
	if (!email_shape_ok(out, o))
		return false;
	*outlen = o;
	return true;
}

/*
 * Normalize an email: trim, lowercase (UTF-8 aware), check its shape.
 * out must hold TT_EMAIL_MAXLEN + 1 bytes; it is NUL-terminated.
 */
bool
tt_normalize_email(const char *in, size_t len, char *out, size_t *outlen)
{
	tt_trim(&in, &len);
	return normalize_trimmed_email(in, len, out, outlen);
}

/* Separators dropped from phone numbers; a switch, as it runs per byte */
static bool
phone_separator(unsigned char c)
{
	switch (c)
	{
		case ' ':
		case '\t':
		case '-':
		case '.':
		case '(':
		case ')':
		case '/':
			return true;
		default:
			return false;
	}
}

/*
 * Normalize a phone number to E.164 with its '+'.  Separators (spaces,
 * dashes, dots, brackets, slashes) are dropped; a '+' or a "00" prefix
 * means the number carries its country code; otherwise it is a national
 * number and needs the country, whose trunk prefix is removed.  8 to 15
 * digits in the end, or unusable.  out must hold TT_PHONE_BUFSIZE bytes.
 * Returns the length written, '+' included, or 0 when unusable, so that
 * tt_hash_phone need not strlen() it.
 */
static size_t
normalize_phone(const char *in, size_t len, const TTCountry *country,
				char *out)
{
	char		digits[20];
	size_t		nd = 0;
	bool		plus = false;
	const char *num;
	size_t		numlen;
	const char *cc = "";
	size_t		cclen;
	size_t		total;

	tt_trim(&in, &len);
	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) in[i];

		if (c >= '0' && c <= '9')
		{
			if (nd == sizeof(digits))
				return 0;
			digits[nd++] = (char) c;
		}
		else if (c == '+')
		{
			if (plus || nd > 0)
				return 0;
			plus = true;
		}
		else if (c == '(' && i + 2 < len && in[i + 1] == '0' && in[i + 2] == ')')
			i += 2;				/* "+44 (0)20...": the optional trunk 0 */
		else if (c == 0xC2 && i + 1 < len && (unsigned char) in[i + 1] == 0xA0)
			i++;				/* no-break space */
		else if (!phone_separator(c))
			return 0;
	}

	num = digits;
	numlen = nd;
	if (!plus && nd >= 2 && digits[0] == '0' && digits[1] == '0')
	{
		num += 2;
		numlen -= 2;
	}
	else if (!plus)
	{
		size_t		trunklen;

		if (country == NULL)
			return 0;
		trunklen = strlen(country->trunk);
		if (trunklen > 0 && numlen > trunklen &&
			memcmp(num, country->trunk, trunklen) == 0)
		{
			num += trunklen;
			numlen -= trunklen;
		}
		cc = country->calling_code;
	}

	cclen = strlen(cc);
	total = cclen + numlen;
	if (total < 8 || total > 15)
		return 0;
	out[0] = '+';
	memcpy(out + 1, cc, cclen);
	memcpy(out + 1 + cclen, num, numlen);
	out[1 + total] = '\0';
	/* no country code starts with 0 */
	return (out[1] != '0') ? 1 + total : 0;
}

/* tt_normalize_phone: normalize_phone's answer as a bool */
bool
tt_normalize_phone(const char *in, size_t len, const TTCountry *country,
				   char *out)
{
	return normalize_phone(in, len, country, out) > 0;
}

/*
 * Check an IP address (v4 or v6) and write it in its canonical text form.
 * out must hold TT_IP_BUFSIZE bytes.
 */
bool
tt_normalize_ip(const char *in, size_t len, char *out)
{
	char		buf[TT_IP_BUFSIZE];
	unsigned char addr[16];

	tt_trim(&in, &len);
	if (len == 0 || len >= sizeof(buf) || memchr(in, '\0', len) != NULL)
		return false;
	memcpy(buf, in, len);
	buf[len] = '\0';
	if (inet_pton(AF_INET, buf, addr) == 1)
		return inet_ntop(AF_INET, addr, out, TT_IP_BUFSIZE) != NULL;
	if (inet_pton(AF_INET6, buf, addr) == 1)
		return inet_ntop(AF_INET6, addr, out, TT_IP_BUFSIZE) != NULL;
	return false;
}

/*
 * Zero-width characters, direction marks and the BOM: nothing to see, so
 * nothing kept
 */
static bool
is_zero_width(uint32_t c)
{
	return (c >= 0x200B && c <= 0x200F) || (c >= 0x202A && c <= 0x202E) ||
		c == 0x2060 || c == 0xFEFF;
}

/*
 * Lowercase trimmed UTF-8 text (the fixed mapping of lower_codepoint, so
 * the same name hashes the same in every database).  Spaces, the Unicode
 * ones too, become one ASCII space each when keep_spaces, else vanish;
 * zero-width characters vanish; any other control character, or invalid
 * UTF-8, makes the text unusable, as does nothing left or more than
 * TT_NAME_MAXLEN bytes.  out must hold TT_NAME_MAXLEN + 1 bytes; it is
 * NUL-terminated.
 */
static bool
lower_text(const char *in, size_t len, bool keep_spaces, char *out,
		   size_t *outlen)
{
	const unsigned char *p = (const unsigned char *) in;
	size_t		i = 0;
	size_t		o = 0;

	if (len == 0 || len > TT_NAME_MAXLEN)
		return false;
	while (i < len)
	{
		uint32_t	cp;
		int			n = utf8_decode(p + i, len - i, &cp);

		if (n == 0)
			return false;
		i += n;
		if (cp == ' ' || (is_invisible(cp) && cp >= 0xA0 && !is_zero_width(cp)))
		{
			/* a Unicode space at an end, which tt_trim leaves, goes too */
			if (keep_spaces && o > 0)
				out[o++] = ' ';
		}
		else if (is_zero_width(cp))
			continue;
		else if (cp < 0x20 || cp == 0x7F || is_invisible(cp))
			return false;		/* controls: tabs, line breaks, C1 */
		else
			o += utf8_encode(lower_codepoint(cp), out + o);
	}
	while (o > 0 && out[o - 1] == ' ')
		o--;
	out[o] = '\0';
	*outlen = o;
	return o > 0;
}

/*
 * Normalize a first name, last name or zip code: trim, lowercase (UTF-8
 * aware); inner spaces are kept ("mary ann", "sw1a 1aa").  out must hold
 * TT_NAME_MAXLEN + 1 bytes; it is NUL-terminated.
 */
bool
tt_normalize_name(const char *in, size_t len, char *out, size_t *outlen)
{
	tt_trim(&in, &len);
	return lower_text(in, len, true, out, outlen);
}

/*
 * Normalize a city or state as sent, plain: lowercase, every space
 * removed ("new york" -> "newyork").  out must hold TT_NAME_MAXLEN + 1
 * bytes; it is NUL-terminated.
 */
bool
tt_normalize_place(const char *in, size_t len, char *out, size_t *outlen)
{
	tt_trim(&in, &len);
	return lower_text(in, len, false, out, outlen);
}

/*
 * Normalize a country to its lowercase ISO 3166 alpha-2 code; a code that
 * is not in the country table is unusable.  out must hold
 * TT_COUNTRY_BUFSIZE bytes.
 */
bool
tt_normalize_country(const char *in, size_t len, char *out)
{
	const TTCountry *c = tt_country_lookup(in, len);

	if (c == NULL)
		return false;
	out[0] = (char) (c->iso[0] - 'A' + 'a');
	out[1] = (char) (c->iso[1] - 'A' + 'a');
	out[2] = '\0';
	return true;
}

/* Hashed email: a digest passes through, anything else is normalized */
bool
tt_hash_email(const char *in, size_t len, char *out)
{
	char		norm[TT_EMAIL_MAXLEN + 1];
	size_t		normlen;

	tt_trim(&in, &len);
	if (tt_is_hashed(in, len))
	{
		tt_lower_hex_copy(in, out);
		return true;
	}
	if (!normalize_trimmed_email(in, len, norm, &normlen))
		return false;
	tt_sha256_hex(norm, normlen, out);
	return true;
}

/* Hashed phone, of the E.164 form with its '+' */
bool
tt_hash_phone(const char *in, size_t len, const TTCountry *country, char *out)
{
	char		norm[TT_PHONE_BUFSIZE];
	size_t		normlen;

	tt_trim(&in, &len);
	if (tt_is_hashed(in, len))
	{
		tt_lower_hex_copy(in, out);
		return true;
	}
	normlen = normalize_phone(in, len, country, norm);
	if (normlen == 0)
		return false;
	tt_sha256_hex(norm, normlen, out);
	return true;
}

/* Hashed external id: trimmed, case kept (ids are the shop's own) */
bool
tt_hash_external_id(const char *in, size_t len, char *out)
{
	tt_trim(&in, &len);
	if (len == 0)
		return false;
	if (tt_is_hashed(in, len))
		tt_lower_hex_copy(in, out);
	else
		tt_sha256_hex(in, len, out);
	return true;
}

/*
 * Hashed first name, last name or zip code, of the trimmed lowercase form;
 * a digest passes through
 */
bool
tt_hash_name(const char *in, size_t len, char *out)
{
	char		norm[TT_NAME_MAXLEN + 1];
	size_t		normlen;

	/*
	 * The digest test comes after normalizing, so that a value and its
	 * normalized form always hash alike (a zero-width character inside a
	 * digest is dropped first).
	 */
	if (!tt_normalize_name(in, len, norm, &normlen))
		return false;
	if (tt_is_hashed(norm, normlen))
		memcpy(out, norm, TT_HASH_BUFSIZE);
	else
		tt_sha256_hex(norm, normlen, out);
	return true;
}
