/*-------------------------------------------------------------------------
 *
 * policy_test.c
 *	  Standalone unit test of the delivery worker's rules (src/policy.c):
 *	  reading an answer body, the verdict on a request, backoff between
 *	  attempts, and which API URLs are allowed.  No PostgreSQL headers.
 *
 * Prints TAP: the plan "1..N", then one "ok N - ..." or "not ok N - ..."
 * line per check, with "# got:" / "# expected:" diagnostics on failure.
 * Exits 0 only when every check passes.
 *
 * Every expected value was worked out by hand, never by calling the code
 * under test: verdicts from the response codes table of the Events API
 * as TikTok documents it (HTTP 200 with a body code) and the rules stated in
 * policy.h and at the top of policy.c, parsed fields from the JSON grammar
 * (RFC 8259), backoff ceilings as base * 2^(attempts - 1) capped at max.
 *
 * Every body is read from a malloc'd copy of exactly its length, so that
 * valgrind reports any read past the end.
 *
 * Build and run from the top of the repository:
 *	  gcc -std=c99 -D_DEFAULT_SOURCE -Wall -Wextra -Isrc \
 *		  -o policy_test test/unit/policy_test.c src/policy.c && ./policy_test
 *
 *-------------------------------------------------------------------------
 */
#define TAP_NONE "(none)"
#include "tap.h"
#include "policy.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A string literal and its length, embedded NULs included */
#define S(lit) (lit), (sizeof(lit) - 1)

/* TikTok's documented answers (tiktok-events-api.md, "The response") */
#define BODY_OK \
	"{\"code\":0,\"message\":\"OK\"," \
	"\"request_id\":\"202501011200003C3A6F1C3B0E7D2A4F11\",\"data\":{}}"
#define MSG_40002	"Invalid value for event_id: not a valid string."
#define BODY_40002 \
	"{\"code\":40002,\"message\":\"" MSG_40002 "\"," \
	"\"request_id\":\"20250101120000ABCDEF0123456789ABCD\"}"

/*
 * Braces, brackets, quotes, escaped quotes and a "code" inside strings and
 * nested values, all before the top-level "code".  As JSON:
 *	{"data":{"list":[{"s":"}]{["},{"t":"\"code\":1,"}],"x":"\\"},
 *	 "note":"{\"code\":2}","arr":[[],{},"]"],"code":40002,"message":"m"}
 */
#define BODY_NESTED \
	"{\"data\":{\"list\":[{\"s\":\"}]{[\"},{\"t\":\"\\\"code\\\":1,\"}]," \
	"\"x\":\"\\\\\"},\"note\":\"{\\\"code\\\":2}\",\"arr\":[[],{},\"]\"]," \
	"\"code\":40002,\"message\":\"m\"}"

/*
 * Escapes in a message.  As JSON:
 *	"\u0041\u0062c caf\u00e9 \ud83d\ude00 \u0000 \u001f\u007e\u007f \"q\" a\\b \/"
 * ASCII \u escapes (0x20..0x7E) are kept, others become '?'; \u0000 must
 * not end the C string early.
 */
#define BODY_ESCAPES \
	"{\"code\":40002,\"message\":\"\\u0041\\u0062c caf\\u00e9 " \
	"\\ud83d\\ude00 \\u0000 \\u001f\\u007e\\u007f \\\"q\\\" a\\\\b \\/\"}"
#define MSG_ESCAPES	"Abc caf? ?" "? ? ?~? \"q\" a\\b /"

/* A 502 page from a proxy in front of the API */
#define BODY_HTML_502 \
	"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n" \
	"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"

#define TIKTOK_URL	"https://business-api.tiktok.com/open_api/v1.3/event/track/"

/* A double compared exactly: every expected value is exact in binary */
static void
check_double(const char *desc, double got, double expected)
{
	char		gbuf[64];
	char		ebuf[64];

	snprintf(gbuf, sizeof(gbuf), "%.17g", got);
	snprintf(ebuf, sizeof(ebuf), "%.17g", expected);
	report(desc, got == expected, gbuf, ebuf);
}

/* A copy of len bytes in a block of exactly len bytes (valgrind's bounds) */
static char *
exact_copy(const char *s, size_t len)
{
	char	   *copy = malloc(len);

	if (copy == NULL && len > 0)
	{
		perror("malloc");
		exit(2);
	}
	if (len > 0)
		memcpy(copy, s, len);
	return copy;
}

/*
 * tt_read_answer on an exact-length copy of body, into *answer filled with
 * junk first (so fields it forgets to reset show).
 */
static bool
read_exact(const char *body, size_t len, TTAnswer *answer)
{
	char	   *copy = exact_copy(body, len);
	bool		ok;

	memset(answer, 0x5A, sizeof(*answer));
	ok = tt_read_answer(copy, len, answer);
	free(copy);
	return ok;
}

/* Whether both text fields of an answer end within their arrays */
static bool
fields_terminated(const TTAnswer *answer)
{
	return memchr(answer->message, '\0', sizeof(answer->message)) != NULL &&
		memchr(answer->request_id, '\0', sizeof(answer->request_id)) != NULL;
}

/*
 * An answer body's fields as "code=C message=[M] request_id=[R]", or NULL
 * when tt_read_answer says the body is not an answer.
 */
static const char *
answer(const char *body, size_t len)
{
	static char out[TT_MESSAGE_MAX + TT_REQUEST_ID_MAX + 64];
	TTAnswer	a;
	bool		ok = read_exact(body, len, &a);

	if (!fields_terminated(&a))
		return "(a field is not NUL-terminated)";
	if (!ok)
		return NULL;
	if (!a.has_code)
		return "(true returned without has_code)";
	snprintf(out, sizeof(out), "code=%ld message=[%s] request_id=[%s]",
			 a.code, a.message, a.request_id);
	return out;
}

/*
 * How many prefixes body[0..n), n < len, tt_read_answer takes for an
 * answer (each from an exact-length copy), or -1 if a field of one of
 * them was left without a NUL terminator.
 */
static int
prefixes_taken(const char *body, size_t len)
{
	int			taken = 0;

	for (size_t n = 0; n < len; n++)
	{
		TTAnswer	a;

		if (read_exact(body, n, &a))
			taken++;
		if (!fields_terminated(&a))
			return -1;
	}
	return taken;
}

/* Whether s is well-formed UTF-8 (lead and continuation bytes) */
static bool
utf8_valid(const char *s)
{
	const unsigned char *p = (const unsigned char *) s;

	while (*p != '\0')
	{
		int			follow;

		if (*p < 0x80)
			follow = 0;
		else if (*p >= 0xC2 && *p <= 0xDF)
			follow = 1;
		else if (*p >= 0xE0 && *p <= 0xEF)
			follow = 2;
		else if (*p >= 0xF0 && *p <= 0xF4)
			follow = 3;
		else
			return false;
		p++;
		for (; follow > 0; follow--, p++)
			if ((*p & 0xC0) != 0x80)
				return false;
	}
	return true;
}

/*
 * A message cut in the middle of a UTF-8 character: it must start with
 * keep bytes of 'x' and be well-formed UTF-8 (whether the broken character
 * is dropped or replaced is not prescribed).  The diagnostic shows its tail.
 */
static void
check_cut(const char *desc, const char *message, size_t keep)
{
	char		gbuf[64];
	char		ebuf[96];
	size_t		mlen = strlen(message);
	bool		ok = mlen >= keep && utf8_valid(message);

	for (size_t i = 0; ok && i < keep; i++)
		ok = (message[i] == 'x');
	snprintf(ebuf, sizeof(ebuf),
			 "valid UTF-8 starting with %zu 'x' (e.g. just those)", keep);
	report(desc, ok, show(message + (mlen > 4 ? mlen - 4 : 0), gbuf,
						  sizeof(gbuf)), ebuf);
}

/* Whether s has exactly n bytes, all equal to c */
static bool
all_of(const char *s, size_t n, char c)
{
	if (strlen(s) != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] != c)
			return false;
	return true;
}

/*
 * A body made of head, then n copies of fill, then tail, in a malloc'd
 * buffer (not NUL-terminated); *len gets its length.
 */
static char *
build(const char *head, char fill, size_t n, const char *tail, size_t *len)
{
	size_t		hl = strlen(head);
	size_t		tl = strlen(tail);
	char	   *b = malloc(hl + n + tl);

	if (b == NULL)
	{
		perror("malloc");
		exit(2);
	}
	memcpy(b, head, hl);
	memset(b + hl, fill, n);
	memcpy(b + hl + n, tail, tl);
	*len = hl + n + tl;
	return b;
}

/* An answer as the judge sees it, built by hand */
static TTAnswer
make_answer(bool has_code, long code, const char *message)
{
	TTAnswer	a;

	memset(&a, 0, sizeof(a));
	a.has_code = has_code;
	a.code = code;
	snprintf(a.message, sizeof(a.message), "%s", message);
	return a;
}

static const char *
verdict_name(TTVerdict v)
{
	switch (v)
	{
		case TT_SENT:
			return "SENT";
		case TT_RETRY:
			return "RETRY";
		case TT_THROTTLE:
			return "THROTTLE";
		case TT_SPLIT:
			return "SPLIT";
		case TT_REJECT:
			return "REJECT";
		case TT_PAUSE_PIXEL:
			return "PAUSE_PIXEL";
		case TT_PAUSE_URL:
			return "PAUSE_URL";
	}
	return "(not a verdict)";
}

/* The reason of the last judge() call */
static char reason[TT_MESSAGE_MAX + 64];

/* tt_judge's verdict as a name; its reason is left in reason[] */
static const char *
judge(const char *transport_error, long http_status, const TTAnswer *a,
	  int nevents)
{
	memset(reason, 'X', sizeof(reason));
	return verdict_name(tt_judge(transport_error, http_status, a, nevents,
								 reason, sizeof(reason)));
}

/*
 * tt_judge's verdict on a body as it came off the network, read by
 * tt_read_answer first, as the worker does
 */
static const char *
judge_body(long http_status, const char *body, size_t len, int nevents)
{
	TTAnswer	a;

	read_exact(body, len, &a);
	return judge(NULL, http_status, &a, nevents);
}

/* Whether the last judge() call left a reason containing part */
static bool
reason_has(const char *part)
{
	return memchr(reason, '\0', sizeof(reason)) != NULL &&
		strstr(reason, part) != NULL;
}

/*
 * One check of a URL rule (tt_url_allowed, tt_proxy_allowed): the result
 * must be expected, and when it is false, why must be set to a non-empty
 * string.
 */
static void
check_rule(bool (*rule) (const char *, const char **), const char *desc,
		   const char *url, bool expected)
{
	const char *why = NULL;
	bool		got = rule(url, &why);
	char		gbuf[300];

	if (got)
		snprintf(gbuf, sizeof(gbuf), "allowed");
	else
		snprintf(gbuf, sizeof(gbuf), "refused, why: %s",
				 why == NULL ? "(not set)" : why[0] == '\0' ? "(empty)" : why);
	report(desc,
		   got == expected && (got || (why != NULL && why[0] != '\0')),
		   gbuf, expected ? "allowed" : "refused, with a reason");
}

/* One check of tt_url_allowed */
static void
check_url(const char *desc, const char *url, bool expected)
{
	check_rule(tt_url_allowed, desc, url, expected);
}

/* One check of tt_proxy_allowed */
static void
check_proxy(const char *desc, const char *url, bool expected)
{
	check_rule(tt_proxy_allowed, desc, url, expected);
}

/* One check of tt_hide_passwords: text in, expected out, and whether hidden */
static void
check_hidden(const char *desc, const char *text, const char *expected,
			 bool expected_hidden)
{
	char		out[256];
	bool		hidden = tt_hide_passwords(text, out, 2 * strlen(text) + 8);
	char		gbuf[300];
	char		ebuf[300];

	report(desc, strcmp(out, expected) == 0 && hidden == expected_hidden,
		   show(out, gbuf, sizeof(gbuf)), show(expected, ebuf, sizeof(ebuf)));
}

int
main(void)
{
	TTAnswer	a;
	char	   *body;
	size_t		len;
	char		longmsg[400];

	tap_begin();

	/* tt_read_answer: TikTok's documented answers */
	check_str("answer: TikTok's success body", answer(S(BODY_OK)),
			  "code=0 message=[OK] request_id=[202501011200003C3A6F1C3B0E7D2A4F11]");
	check_str("answer: TikTok's 40002 body with its message",
			  answer(S(BODY_40002)),
			  "code=40002 message=[" MSG_40002 "] request_id=[20250101120000ABCDEF0123456789ABCD]");
	check_str("answer: keys in another order",
			  answer(S("{\"request_id\":\"r1\",\"data\":{},\"message\":\"OK\",\"code\":0}")),
			  "code=0 message=[OK] request_id=[r1]");
	check_str("answer: white space everywhere",
			  answer(S(" \t\r\n{ \n \"code\" \t :\r\n 40002 \t,\n\"message\"\r:\t\"bad\" , \"request_id\" :\"r2\"\n}\n ")),
			  "code=40002 message=[bad] request_id=[r2]");
	check_str("answer: code alone, no message nor request_id",
			  answer(S("{\"code\":40100}")),
			  "code=40100 message=[] request_id=[]");
	check_str("answer: braces, quotes, escaped quotes and nesting before code",
			  answer(S(BODY_NESTED)), "code=40002 message=[m] request_id=[]");
	check_str("answer: a code inside data is not the top-level code",
			  answer(S("{\"data\":{\"code\":40001},\"code\":0}")),
			  "code=0 message=[] request_id=[]");
	check_str("answer: a code inside data after the top-level code",
			  answer(S("{\"code\":40002,\"data\":{\"code\":0,\"message\":\"no\"},\"message\":\"yes\"}")),
			  "code=40002 message=[yes] request_id=[]");
	check_str("answer: a code only inside data is not an answer",
			  answer(S("{\"data\":{\"code\":0}}")), NULL);
	check_str("answer: a code only inside an array is not an answer",
			  answer(S("{\"data\":[{\"code\":0}]}")), NULL);
	check_str("answer: a key spelt with \\u escapes is that key",
			  answer(S("{\"\\u0063ode\":7}")), "code=7 message=[] request_id=[]");

	/* tt_read_answer: the message's escapes */
	check_str("answer: \\u escapes: ASCII kept, others '?', \\u0000 no cut",
			  answer(S(BODY_ESCAPES)),
			  "code=40002 message=[" MSG_ESCAPES "] request_id=[]");
	check_str("answer: \\u escapes in either case of hex",
			  answer(S("{\"code\":1,\"message\":\"\\u004a\\u004A\\u006B\"}")),
			  "code=1 message=[JJk] request_id=[]");
	check_str("answer: \\b \\f \\n \\r \\t become spaces",
			  answer(S("{\"code\":1,\"message\":\"a\\nb\\tc\\rd\\be\\ff\"}")),
			  "code=1 message=[a b c d e f] request_id=[]");
	check_str("answer: raw bytes outside ASCII in a message become '?'",
			  answer(S("{\"code\":1,\"message\":\"caf\xC3\xA9\"}")),
			  "code=1 message=[caf??] request_id=[]");
	check_str("answer: a body cut after its code is not an answer",
			  answer(S("{\"code\":0,\"message\":\"OK\"")), NULL);
	check_str("answer: a raw newline inside a string is not JSON",
			  answer(S("{\"code\":0,\"message\":\"a\nb\"}")), NULL);
	check_str("answer: an unknown escape is not JSON",
			  answer(S("{\"code\":0,\"message\":\"a\\xb\"}")), NULL);
	check_str("answer: \\u with 2 hex digits is not JSON",
			  answer(S("{\"code\":0,\"message\":\"\\u12\"}")), NULL);
	check_str("answer: \\u with a non-hex digit is not JSON",
			  answer(S("{\"code\":0,\"message\":\"\\u12G4\"}")), NULL);

	/* tt_read_answer: long message and request_id */
	body = build("{\"code\":40002,\"message\":\"", 'x', 300,
				 "\",\"request_id\":\"r\"}", &len);
	read_exact(body, len, &a);
	check_bool("answer: a 300-byte message is cut to TT_MESSAGE_MAX - 1 bytes",
			   all_of(a.message, TT_MESSAGE_MAX - 1, 'x'), true);
	memset(longmsg, 'x', TT_MESSAGE_MAX - 1);
	strcpy(longmsg + TT_MESSAGE_MAX - 1, "] request_id=[r]");
	check_bool("answer: fields after a cut message are still read",
			   answer(body, len) != NULL &&
			   strncmp(answer(body, len), "code=40002 message=[", 20) == 0 &&
			   strcmp(answer(body, len) + 20, longmsg) == 0, true);
	free(body);
	body = build("{\"code\":40002,\"message\":\"", 'x', TT_MESSAGE_MAX - 1,
				 "\"}", &len);
	read_exact(body, len, &a);
	check_bool("answer: a message of TT_MESSAGE_MAX - 1 bytes is kept whole",
			   all_of(a.message, TT_MESSAGE_MAX - 1, 'x'), true);
	free(body);
	body = build("{\"code\":40002,\"message\":\"", 'x', TT_MESSAGE_MAX,
				 "\"}", &len);
	read_exact(body, len, &a);
	check_bool("answer: a message of TT_MESSAGE_MAX bytes loses its last byte",
			   all_of(a.message, TT_MESSAGE_MAX - 1, 'x'), true);
	free(body);
	body = build("{\"code\":40002,\"message\":\"", 'x', TT_MESSAGE_MAX - 2,
				 "\\u0041\\u0042\\u0043\"}", &len);
	read_exact(body, len, &a);
	memset(longmsg, 'x', TT_MESSAGE_MAX - 2);
	strcpy(longmsg + TT_MESSAGE_MAX - 2, "A");
	check_str("answer: \\u escapes across the cut", a.message, longmsg);
	free(body);

	/*
	 * A cut must not leave half a UTF-8 character: the message becomes an
	 * event's and a pixel's last_error, a text column.
	 */
	body = build("{\"code\":40002,\"message\":\"", 'x', TT_MESSAGE_MAX - 2,
				 "\xC3\xA9tail\"}", &len);
	read_exact(body, len, &a);
	check_cut("answer: a cut message does not split a 2-byte UTF-8 character",
			  a.message, TT_MESSAGE_MAX - 2);
	free(body);
	body = build("{\"code\":40002,\"message\":\"", 'x', TT_MESSAGE_MAX - 3,
				 "\xE2\x82\xACtail\"}", &len);
	read_exact(body, len, &a);
	check_cut("answer: a cut message does not split a 3-byte UTF-8 character",
			  a.message, TT_MESSAGE_MAX - 3);
	free(body);

	body = build("{\"code\":0,\"request_id\":\"", '7', 200, "\"}", &len);
	read_exact(body, len, &a);
	check_bool("answer: a 200-byte request_id is cut to TT_REQUEST_ID_MAX - 1 bytes",
			   all_of(a.request_id, TT_REQUEST_ID_MAX - 1, '7'), true);
	check_bool("answer: a body with a cut request_id is still an answer",
			   answer(body, len) != NULL, true);
	free(body);

	/* tt_read_answer: what is and is not a code */
	check_str("answer: code as a string \"0\" is not a code",
			  answer(S("{\"code\":\"0\",\"message\":\"OK\"}")), NULL);
	check_str("answer: code 0.5 is not a code",
			  answer(S("{\"code\":0.5}")), NULL);
	check_str("answer: code 40002.0 is not a code",
			  answer(S("{\"code\":40002.0}")), NULL);
	check_str("answer: code 1e5 is not a code",
			  answer(S("{\"code\":1e5}")), NULL);
	check_str("answer: code 4E4 is not a code",
			  answer(S("{\"code\":4E4}")), NULL);
	check_str("answer: code 4e+4 is not a code",
			  answer(S("{\"code\":4e+4}")), NULL);
	check_str("answer: code true is not a code",
			  answer(S("{\"code\":true}")), NULL);
	check_str("answer: code null is not a code",
			  answer(S("{\"code\":null}")), NULL);
	check_str("answer: code +1 is not a code",
			  answer(S("{\"code\":+1}")), NULL);
	check_str("answer: code 0x10 is not a code",
			  answer(S("{\"code\":0x10}")), NULL);
	check_str("answer: code - alone is not a code",
			  answer(S("{\"code\":-}")), NULL);
	check_str("answer: negative code -1",
			  answer(S("{\"code\":-1}")), "code=-1 message=[] request_id=[]");
	check_str("answer: negative code -40002",
			  answer(S("{\"code\":-40002}")),
			  "code=-40002 message=[] request_id=[]");
	check_str("answer: code 99999999999999999999 (overflow) is not a code",
			  answer(S("{\"code\":99999999999999999999}")), NULL);
	check_str("answer: code -99999999999999999999 (overflow) is not a code",
			  answer(S("{\"code\":-99999999999999999999}")), NULL);
	check_str("answer: code 18446744073709551616 (2^64) is not a code",
			  answer(S("{\"code\":18446744073709551616}")), NULL);

	/* tt_read_answer: bodies that are not answers */
	check_str("answer: empty body", answer(S("")), NULL);
	check_str("answer: blank body", answer(S(" \r\n\t")), NULL);
	check_bool("answer: NULL body", tt_read_answer(NULL, 0, &a), false);
	check_bool("answer: NULL body leaves no code", a.has_code, false);
	check_str("answer: []", answer(S("[]")), NULL);
	check_str("answer: {}", answer(S("{}")), NULL);
	check_str("answer: null", answer(S("null")), NULL);
	check_str("answer: 0", answer(S("0")), NULL);
	check_str("answer: a bare string", answer(S("\"code\"")), NULL);
	check_str("answer: an array holding an answer",
			  answer(S("[{\"code\":0}]")), NULL);
	check_str("answer: an unquoted key", answer(S("{code:0}")), NULL);
	check_str("answer: a missing colon", answer(S("{\"code\" 0}")), NULL);
	check_str("answer: a trailing comma", answer(S("{\"code\":0,}")), NULL);
	check_str("answer: two values without a comma",
			  answer(S("{\"code\":0 \"message\":\"OK\"}")), NULL);
	check_str("answer: an HTML 502 page", answer(S(BODY_HTML_502)), NULL);
	check_str("answer: an embedded NUL inside a string",
			  answer(S("{\"code\":0,\"message\":\"O\0K\"}")), NULL);
	check_str("answer: an embedded NUL between tokens",
			  answer(S("{\"code\":\0 0}")), NULL);
	check_str("answer: a NUL before the body", answer(S("\0{\"code\":0}")),
			  NULL);
	check_str("answer: reads len bytes, not up to a NUL",
			  answer("{\"code\":0}", 9), NULL);
	read_exact(S("{}"), &a);
	check_bool("answer: {} resets every field",
			   !a.has_code && a.message[0] == '\0' && a.request_id[0] == '\0',
			   true);

	/* tt_read_answer: every truncation is not an answer, and stays in bounds */
	check_int("answer: no prefix of the success body is an answer",
			  prefixes_taken(S(BODY_OK)), 0);
	check_int("answer: no prefix of the 40002 body is an answer",
			  prefixes_taken(S(BODY_40002)), 0);
	check_int("answer: no prefix of the nested body is an answer",
			  prefixes_taken(S(BODY_NESTED)), 0);
	check_int("answer: no prefix of the escapes body is an answer",
			  prefixes_taken(S(BODY_ESCAPES)), 0);
	check_str("answer: the white-space body itself",
			  answer(S(" {\"message\" : \"a\\\"b\" , \"code\" : -12 }")),
			  "code=-12 message=[a\"b] request_id=[]");
	check_int("answer: no prefix of the white-space body is an answer",
			  prefixes_taken(S(" {\"message\" : \"a\\\"b\" , \"code\" : -12 }")),
			  0);

	/* tt_read_answer: deep nesting (skipped iteratively, not recursively) */
	body = malloc(6 + 20000 + 11);
	if (body == NULL)
		return 2;
	memcpy(body, "{\"a\":", 5);
	memset(body + 5, '[', 10000);
	memset(body + 5 + 10000, ']', 10000);
	memcpy(body + 5 + 20000, ",\"code\":0}", 10);
	check_str("answer: 10,000 nested '[' before the code",
			  answer(body, 5 + 20000 + 10), "code=0 message=[] request_id=[]");
	free(body);
	body = build("{\"a\":", '[', 10000, "\"code\":0}", &len);
	check_str("answer: 10,000 unclosed '[' before the code",
			  answer(body, len), NULL);
	free(body);
	body = build("", '[', 10000, "{\"code\":0}", &len);
	check_str("answer: 10,000 '[' around an answer", answer(body, len), NULL);
	free(body);
	body = build("{\"a\":", '[', 1000000, "", &len);
	check_str("answer: 1,000,000 unclosed '['", answer(body, len), NULL);
	free(body);

	/* tt_read_answer: keys longer than its key buffer */
	check_str("answer: a key longer than 16 bytes starting with \"code\"",
			  answer(S("{\"code_from_upstream_x\":5,\"code\":40002}")),
			  "code=40002 message=[] request_id=[]");
	check_str("answer: only a long key starting with \"code\" is not an answer",
			  answer(S("{\"codecodecodecodecode\":0}")), NULL);
	check_str("answer: a long key starting with \"message\"",
			  answer(S("{\"message_for_the_developer\":\"no\",\"code\":1}")),
			  "code=1 message=[] request_id=[]");

	/* tt_judge: trouble on the way or at TikTok is retried */
	{
		TTAnswer	none = make_answer(false, 0, "");
		TTAnswer	ok = make_answer(true, 0, "OK");

		check_str("judge: transport error is RETRY",
				  judge("Connection timed out after 10001 milliseconds", 0,
						&none, 5), "RETRY");
		check_str("judge: transport error reason is \"network: ...\"",
				  reason, "network: Connection timed out after 10001 milliseconds");
		check_str("judge: transport error wins over a readable answer",
				  judge("Recv failure: Connection reset by peer", 200, &ok, 1),
				  "RETRY");
		check_str("judge: HTTP 429 is RETRY", judge(NULL, 429, &none, 5),
				  "RETRY");
		check_bool("judge: HTTP 429 reason names the status", reason_has("429"),
				   true);
		check_str("judge: HTTP 500 is RETRY", judge(NULL, 500, &none, 5),
				  "RETRY");
		check_str("judge: HTTP 503 is RETRY", judge(NULL, 503, &none, 1),
				  "RETRY");
		check_str("judge: HTTP 503 with a code 0 body is RETRY",
				  judge(NULL, 503, &ok, 1), "RETRY");
		check_str("judge: HTTP 302 is RETRY", judge(NULL, 302, &none, 5),
				  "RETRY");
		check_bool("judge: HTTP 302 reason mentions the redirect",
				   reason_has("redirect"), true);
		check_str("judge: HTTP 200 code 0 is SENT", judge(NULL, 200, &ok, 5),
				  "SENT");
	}

	/*
	 * tt_judge: an answer that is not the Events API's says api_url points
	 * elsewhere, for every pixel; a proxy's error page in front of the API
	 * (5xx, 408, 429) stays trouble on the way, retried
	 */
	{
		TTAnswer	none = make_answer(false, 0, "");
		TTAnswer	ok = make_answer(true, 0, "OK");
		TTAnswer	c40105 = make_answer(true, 40105, "Access token is incorrect or has been revoked");

		check_str("judge: HTTP 404 with a text body is PAUSE_URL",
				  judge_body(404, S("not found"), 5), "PAUSE_URL");
		check_bool("judge: HTTP 404 reason names the status",
				   reason_has("HTTP 404"), true);
		check_bool("judge: HTTP 404 reason names tiktok_capi.api_url",
				   reason_has("tiktok_capi.api_url"), true);
		check_bool("judge: HTTP 404 reason gives the path api_url should end in",
				   reason_has("/open_api/v1.3/event/track/"), true);
		check_str("judge: HTTP 404 with 1 event is PAUSE_URL",
				  judge(NULL, 404, &none, 1), "PAUSE_URL");
		check_str("judge: HTTP 404 with a code 0 body is PAUSE_URL, not SENT",
				  judge(NULL, 404, &ok, 5), "PAUSE_URL");
		check_str("judge: HTTP 404 with a code 40105 body is PAUSE_URL",
				  judge(NULL, 404, &c40105, 5), "PAUSE_URL");
		check_str("judge: HTTP 405 (no POST there) is PAUSE_URL",
				  judge(NULL, 405, &none, 5), "PAUSE_URL");
		check_str("judge: HTTP 410 (gone) is PAUSE_URL",
				  judge(NULL, 410, &none, 5), "PAUSE_URL");
		check_str("judge: HTTP 200 with an HTML page is PAUSE_URL",
				  judge_body(200, S("<!DOCTYPE html><html><body>Welcome</body></html>"), 5),
				  "PAUSE_URL");
		check_bool("judge: HTTP 200 HTML reason names the status",
				   reason_has("HTTP 200"), true);
		check_bool("judge: HTTP 200 HTML reason says it is not the API's answer",
				   reason_has("not the Events API's"), true);
		check_bool("judge: HTTP 200 HTML reason gives the path api_url should end in",
				   reason_has("tiktok_capi.api_url") &&
				   reason_has("/open_api/v1.3/event/track/"), true);
		check_str("judge: HTTP 200 with JSON without a code is PAUSE_URL",
				  judge_body(200, S("{\"status\":\"ok\",\"message\":\"hello\"}"), 5),
				  "PAUSE_URL");
		check_str("judge: HTTP 200 with an empty body is PAUSE_URL",
				  judge_body(200, S(""), 5), "PAUSE_URL");
		check_str("judge: HTTP 200 with a truncated answer is PAUSE_URL",
				  judge_body(200, S("{\"code\":0,\"message\":\"O"), 5), "PAUSE_URL");
		check_str("judge: HTTP 401 without a code (a proxy's login) is PAUSE_URL",
				  judge_body(401, S("<html>Unauthorized</html>"), 5), "PAUSE_URL");
		check_str("judge: HTTP 403 HTML page is PAUSE_URL",
				  judge_body(403, S("<html><h1>403 Forbidden</h1></html>"), 1),
				  "PAUSE_URL");
		check_str("judge: HTTP 401 with code 40105 is still PAUSE_PIXEL",
				  judge(NULL, 401, &c40105, 5), "PAUSE_PIXEL");
		check_str("judge: HTTP 502 HTML page from a load balancer is RETRY",
				  judge_body(502, S(BODY_HTML_502), 5), "RETRY");
		check_bool("judge: HTTP 502 reason names the status",
				   reason_has("502"), true);
		check_str("judge: HTTP 503 HTML page is RETRY",
				  judge_body(503, S("<html><body>Service Unavailable</body></html>"), 1),
				  "RETRY");
		check_str("judge: HTTP 504 with an empty body is RETRY",
				  judge_body(504, S(""), 5), "RETRY");
		check_str("judge: HTTP 429 HTML page is RETRY (throttling)",
				  judge_body(429, S("<html>Too Many Requests</html>"), 5), "RETRY");
		check_str("judge: HTTP 408 (a proxy's request timeout) is RETRY",
				  judge_body(408, S("<html>Request Timeout</html>"), 5), "RETRY");
		check_str("judge: HTTP 302 with an empty body stays RETRY",
				  judge_body(302, S(""), 5), "RETRY");
		check_str("judge: HTTP 200 code 40100 is THROTTLE",
				  judge_body(200, S("{\"code\":40100,\"message\":\"Too many requests\"}"), 5),
				  "THROTTLE");
		check_str("judge: a transport error with no answer is RETRY",
				  judge("Connection refused", 0, &none, 5), "RETRY");
	}

	/* tt_judge: TikTok's codes (tiktok-events-api.md, "The response") */
	{
		TTAnswer	c40001 = make_answer(true, 40001, "No permission to operate pixel");
		TTAnswer	c40105 = make_answer(true, 40105, "Access token is incorrect or has been revoked");
		TTAnswer	c40002 = make_answer(true, 40002, MSG_40002);
		TTAnswer	c40002_bare = make_answer(true, 40002, "");
		TTAnswer	c40003 = make_answer(true, 40003, "Invalid parameter");
		TTAnswer	c40099 = make_answer(true, 40099, "x");
		TTAnswer	c40100 = make_answer(true, 40100, "Too many requests");
		TTAnswer	c41000 = make_answer(true, 41000, "x");
		TTAnswer	c50002 = make_answer(true, 50002, "Internal error");
		char		small[16 + 8];
		char		full[TT_MESSAGE_MAX + 64];
		TTVerdict	v;

		check_str("judge: 40001 with 1 event is PAUSE_PIXEL",
				  judge(NULL, 200, &c40001, 1), "PAUSE_PIXEL");
		check_str("judge: 40001 with 5 events is PAUSE_PIXEL",
				  judge(NULL, 200, &c40001, 5), "PAUSE_PIXEL");
		check_bool("judge: 40001 reason has TikTok's message",
				   reason_has("No permission to operate pixel"), true);
		check_str("judge: 40105 with 1 event is PAUSE_PIXEL",
				  judge(NULL, 200, &c40105, 1), "PAUSE_PIXEL");
		check_str("judge: 40105 with 1000 events is PAUSE_PIXEL",
				  judge(NULL, 200, &c40105, 1000), "PAUSE_PIXEL");
		check_str("judge: 40105 behind HTTP 401 is PAUSE_PIXEL",
				  judge(NULL, 401, &c40105, 5), "PAUSE_PIXEL");
		check_str("judge: 40002 with 5 events is SPLIT",
				  judge(NULL, 200, &c40002, 5), "SPLIT");
		check_str("judge: 40002 with 2 events is SPLIT",
				  judge(NULL, 200, &c40002, 2), "SPLIT");
		check_str("judge: 40002 with 1 event is REJECT",
				  judge(NULL, 200, &c40002, 1), "REJECT");
		check_bool("judge: 40002 reason has TikTok's message",
				   reason_has(MSG_40002), true);
		check_str("judge: 40002 without a message is REJECT",
				  judge(NULL, 200, &c40002_bare, 1), "REJECT");
		check_bool("judge: 40002 without a message still has a reason",
				   reason[0] != '\0', true);
		check_str("judge: unknown 40003 with 5 events is SPLIT",
				  judge(NULL, 200, &c40003, 5), "SPLIT");
		check_str("judge: unknown 40003 with 1 event is REJECT",
				  judge(NULL, 200, &c40003, 1), "REJECT");
		check_str("judge: 40099 with 1 event is REJECT",
				  judge(NULL, 200, &c40099, 1), "REJECT");
		check_str("judge: 40100 (too many requests) is THROTTLE",
				  judge(NULL, 200, &c40100, 5), "THROTTLE");
		check_str("judge: 40100 with 1 event is THROTTLE",
				  judge(NULL, 200, &c40100, 1), "THROTTLE");
		{
			TTAnswer	c40016 = make_answer(true, 40016, "Too many requests for this advertiser");
			TTAnswer	c40132 = make_answer(true, 40132, "Pixel QPS limit");
			TTAnswer	c40133 = make_answer(true, 40133, "Advertiser QPS limit");

			/* a 400xx, but throttling: never a rejected event */
			check_str("judge: 40016 with 1 event is THROTTLE, not REJECT",
					  judge(NULL, 200, &c40016, 1), "THROTTLE");
			check_str("judge: 40132 (pixel QPS) is THROTTLE",
					  judge(NULL, 200, &c40132, 5), "THROTTLE");
			check_str("judge: 40133 (advertiser QPS) is THROTTLE",
					  judge(NULL, 200, &c40133, 5), "THROTTLE");
		}
		/* the window: halved on throttling, never below 1, grown slowly */
		check_bool("window: 16 throttled is 8", tt_window_after(16, 16, true) == 8, true);
		check_bool("window: 1 throttled stays 1", tt_window_after(1, 16, true) == 1, true);
		check_bool("window: 4 grows by a quarter", tt_window_after(4, 16, false) == 4.25, true);
		check_bool("window: never above the most in flight",
				   tt_window_after(16, 16, false) == 16, true);
		{
			double		w = 1;
			int			answers = 0;

			while (w < 16 && answers < 1000)
			{
				w = tt_window_after(w, 16, false);
				answers++;
			}
			/* about w^2/2 answers: a few round trips of answers, not one */
			check_bool("window: 1 back to 16 takes between 60 and 200 answers",
					   answers >= 60 && answers <= 200, true);
		}
		check_str("judge: 41000 is RETRY", judge(NULL, 200, &c41000, 5),
				  "RETRY");
		check_str("judge: 50002 is RETRY", judge(NULL, 200, &c50002, 5),
				  "RETRY");
		check_str("judge: 50002 with 1 event is RETRY",
				  judge(NULL, 200, &c50002, 1), "RETRY");

		/* a reason buffer smaller than the message is cut, NUL-terminated */
		tt_judge(NULL, 200, &c40002, 1, full, sizeof(full));
		memset(small, 'Z', sizeof(small));
		v = tt_judge(NULL, 200, &c40002, 1, small, 16);
		check_str("judge: 40002 into a 16-byte reason is still REJECT",
				  verdict_name(v), "REJECT");
		check_bool("judge: a 16-byte reason is cut to 15 bytes of the full one",
				   memchr(small, '\0', 16) == small + 15 &&
				   strncmp(small, full, 15) == 0, true);
		check_bool("judge: a 16-byte reason is not overrun",
				   memcmp(small + 16, "ZZZZZZZZ", 8) == 0, true);
		memset(small, 'Z', sizeof(small));
		v = tt_judge("Could not resolve host: business-api.tiktok.com", 0,
					 &c40002, 5, small, 1);
		check_bool("judge: a 1-byte reason is just the NUL",
				   v == TT_RETRY && small[0] == '\0' && small[1] == 'Z', true);
	}

	/* tt_backoff_ms: full jitter under base * 2^(attempts - 1), capped */
	{
		clock_t		start;
		double		got;
		double		seconds;

		check_double("backoff: random 0 is 0",
					 tt_backoff_ms(5, 1000, 300000, 0), 0);
		check_double("backoff: attempt 1, random 1 is base",
					 tt_backoff_ms(1, 1000, 300000, 1), 1000);
		check_double("backoff: attempt 2, random 1 is 2 * base",
					 tt_backoff_ms(2, 1000, 300000, 1), 2000);
		check_double("backoff: attempt 3, random 1 is 4 * base",
					 tt_backoff_ms(3, 1000, 300000, 1), 4000);
		check_double("backoff: attempt 9, random 1 is 256 * base",
					 tt_backoff_ms(9, 1000, 300000, 1), 256000);
		check_double("backoff: attempt 10, random 1 is capped at max",
					 tt_backoff_ms(10, 1000, 300000, 1), 300000);
		check_double("backoff: attempt 3, random 0.25 is 1000",
					 tt_backoff_ms(3, 1000, 300000, 0.25), 1000);
		check_double("backoff: attempt 2 over a max of 1.5 * base is max",
					 tt_backoff_ms(2, 1000, 1500, 1), 1500);
		check_double("backoff: base above max is capped at max",
					 tt_backoff_ms(1, 5000, 1000, 1), 1000);
		check_double("backoff: attempts 0 is taken as 1",
					 tt_backoff_ms(0, 1000, 300000, 1), 1000);
		check_double("backoff: attempts -5 is taken as 1",
					 tt_backoff_ms(-5, 1000, 300000, 1), 1000);
		check_double("backoff: attempts INT_MIN is taken as 1",
					 tt_backoff_ms(INT_MIN, 1000, 300000, 1), 1000);
		start = clock();
		got = tt_backoff_ms(1000000, 1000, 300000, 1);
		seconds = (double) (clock() - start) / CLOCKS_PER_SEC;
		check_double("backoff: attempts 1e6, random 1 is max", got, 300000);
		check_bool("backoff: attempts 1e6 returns within 0.1 s",
				   seconds < 0.1, true);
		check_double("backoff: attempts 1e6, random 0.5 is max / 2",
					 tt_backoff_ms(1000000, 1000, 300000, 0.5), 150000);
		check_double("backoff: attempts INT_MAX, random 1 is max",
					 tt_backoff_ms(INT_MAX, 1000, 300000, 1), 300000);
		check_double("backoff: random -0.5 is clamped to 0",
					 tt_backoff_ms(2, 1000, 300000, -0.5), 0);
		check_double("backoff: random 1.5 is clamped to 1",
					 tt_backoff_ms(2, 1000, 300000, 1.5), 2000);
		check_double("backoff: random 1e300 is clamped to 1",
					 tt_backoff_ms(10, 1000, 300000, 1e300), 300000);
	}

	/* tt_url_allowed: https anywhere, plain http only to loopback */
	check_url("url: TikTok's https URL", TIKTOK_URL, true);
	check_url("url: https to any host", "https://example.com/x", true);
	check_url("url: http://[::1].evil.com/ (text after the brackets)",
			  "http://[::1].evil.com/", false);
	check_url("url: http://[::1]evil.com/", "http://[::1]evil.com/", false);
	check_url("url: https://[]/ (empty brackets)", "https://[]/", false);
	check_url("url: http://127.0.0.1:8080/x", "http://127.0.0.1:8080/x", true);
	check_url("url: http://127.0.0.1/", "http://127.0.0.1/", true);
	check_url("url: http://127.255.0.1/ (all of 127/8)", "http://127.255.0.1/",
			  true);
	check_url("url: http://localhost:1/", "http://localhost:1/", true);
	check_url("url: http://localhost/", "http://localhost/", true);
	check_url("url: http://[::1]:9/", "http://[::1]:9/", true);
	check_url("url: http://example.com/", "http://example.com/", false);
	check_url("url: http://203.0.113.9/ (not loopback)", "http://203.0.113.9/", false);
	check_url("url: http://127.0.0.1.evil.com/", "http://127.0.0.1.evil.com/",
			  false);
	check_url("url: http://127.0.0.1@evil.com/", "http://127.0.0.1@evil.com/",
			  false);
	check_url("url: http://localhost@evil.com/", "http://localhost@evil.com/",
			  false);
	check_url("url: http://localhost.evil.com/", "http://localhost.evil.com/",
			  false);
	check_url("url: http://1270.0.0.1/", "http://1270.0.0.1/", false);
	check_url("url: http://127.0.0/ (three octets)", "http://127.0.0/", false);
	check_url("url: http://127.0.0.1./ (trailing dot)", "http://127.0.0.1./",
			  false);
	check_url("url: http://127.0.0.1.1/ (five octets)", "http://127.0.0.1.1/",
			  false);
	check_url("url: http://127.0.0.256/", "http://127.0.0.256/", false);
	check_url("url: http://[::2]/", "http://[::2]/", false);
	check_url("url: http://[::1/ (unclosed bracket)", "http://[::1/", false);
	check_url("url: ftp://x", "ftp://x", false);
	check_url("url: empty", "", false);
	check_url("url: NULL", NULL, false);
	check_url("url: https:// (no host)", "https://", false);
	check_url("url: http:// (no host)", "http://", false);
	check_url("url: https://:443/ (no host)", "https://:443/", false);
	check_url("url: https:///x (no host)", "https:///x", false);
	check_url("url: https://user:pw@host/", "https://user:pw@host/", false);
	check_url("url: a URL with a space",
			  "https://business-api.tiktok.com/open api/", false);
	check_url("url: a URL with a newline",
			  "https://business-api.tiktok.com/\n", false);

	/*
	 * The scheme is compared case-sensitively (strncmp with "https://" and
	 * "http://"), so an upper-case scheme is refused, even for https.  That
	 * is the safe side: such a URL is refused, never sent in the clear.
	 */
	check_url("url: HTTP://127.0.0.1/ (upper-case scheme refused)",
			  "HTTP://127.0.0.1/", false);
	check_url("url: HTTPS:// TikTok URL (upper-case scheme refused)",
			  "HTTPS://business-api.tiktok.com/open_api/v1.3/event/track/",
			  false);


	/* tt_proxy_allowed: none, or an http(s) proxy with a host */
	check_proxy("proxy: empty (none)", "", true);
	check_proxy("proxy: http://127.0.0.1:3128", "http://127.0.0.1:3128", true);
	check_proxy("proxy: https://proxy.example:443/", "https://proxy.example:443/", true);
	check_proxy("proxy: http://user:secret@proxy:8080", "http://user:secret@proxy:8080", true);
	check_proxy("proxy: socks5://proxy:1080 (refused)", "socks5://proxy:1080", false);
	check_proxy("proxy: proxy:3128 (no scheme)", "proxy:3128", false);
	check_proxy("proxy: http:// (no host)", "http://", false);
	check_proxy("proxy: http://user:pw@ (no host)", "http://user:pw@", false);
	check_proxy("proxy: http://user:pw@:3128 (no host)", "http://user:pw@:3128", false);
	check_proxy("proxy: white space", "http://proxy :3128", false);
	check_proxy("proxy: http://proxy (no port)", "http://proxy", false);
	check_proxy("proxy: http://proxy:/ (empty port)", "http://proxy:/", false);
	check_proxy("proxy: http://proxy:31x8 (not a port)", "http://proxy:31x8", false);
	check_proxy("proxy: http://[::1]:3128", "http://[::1]:3128", true);
	check_proxy("proxy: http://[::1] (no port)", "http://[::1]", false);
	check_proxy("proxy: http://u:p@[::1]:8080/", "http://u:p@[::1]:8080/", true);

	/* tt_hide_passwords: every URL's password becomes *** */
	check_hidden("hide: a proxy URL's password", "http://user:secret@127.0.0.1:3128",
				 "http://user:***@127.0.0.1:3128", true);
	check_hidden("hide: a URL without a password is kept", "http://user@proxy:3128/x",
				 "http://user@proxy:3128/x", false);
	check_hidden("hide: a URL without a user is kept", "https://proxy:3128/a@b",
				 "https://proxy:3128/a@b", false);
	check_hidden("hide: an @ in the password hides up to the last @",
				 "http://u:p@ss@host:1", "http://u:***@host:1", true);
	check_hidden("hide: an empty password", "http://u:@host", "http://u:***@host", true);
	check_hidden("hide: inside a log line, twice",
				 "parameter \"tiktok_capi.proxy\" changed to \"https://a:b@h\" from \"http://c:d@i:1\"",
				 "parameter \"tiktok_capi.proxy\" changed to \"https://a:***@h\" from \"http://c:***@i:1\"",
				 true);
	check_hidden("hide: text without a URL", "no proxy here", "no proxy here", false);
	{
		char		small[12];

		tt_hide_passwords("http://u:secret@host", small, sizeof(small));
		report("hide: a short buffer is cut and terminated, no password in it",
			   strlen(small) == 11 && strstr(small, "secret") == NULL, small, "http://u:**");
	}

	return tap_end();
}
