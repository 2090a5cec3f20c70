/*-------------------------------------------------------------------------
 *
 * policy.c
 *	  The delivery worker's rules: reading an answer body, the verdict on
 *	  a request, backoff between attempts, which API and proxy URLs are
 *	  allowed, and a URL's password hidden for printing.
 *
 * TikTok answers HTTP 200 for most errors, so the verdict comes from the
 * body's "code" first and the HTTP status second:
 *	0				sent
 *	40001, 40105	the pixel has no permission or the token is wrong: pause
 *					the pixel, not the events
 *	400xx (40002)	validation: split a batch until the bad event is alone,
 *					then reject it with TikTok's message
 *	40100, 40016, 40132, 40133	too many requests (for the developer app, the
 *					advertiser or the pixel): retry with backoff, and the
 *					whole pipeline sends fewer requests at once
 *	5xxxx			TikTok trouble: retry with backoff
 * Transport errors, HTTP 408, 429 and 5xx (whatever their body, such as a
 * load balancer's HTML page) and redirects are retried.  HTTP 404, 405 and
 * 410, and any other answer that is not the Events API's JSON with a code
 * (an HTML page, a 200 from some other server), say that api_url points
 * somewhere else: a configuration error, which pauses delivery instead of
 * spending the events' attempts.
 *
 * Pure C, no PostgreSQL headers (see policy.h).
 *
 *-------------------------------------------------------------------------
 */
#include "policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *skip_space(const char *p, const char *end);
static const char *read_string(const char *p, const char *end,
							   char *out, size_t outsize);
static const char *read_integer(const char *p, const char *end,
								long *value, bool *ok);
static const char *skip_value(const char *p, const char *end);
static bool read_answer(const char *p, const char *end, TTAnswer *answer);
static bool host_is_loopback(const char *host, size_t len);

/* Past white space as JSON defines it */
static const char *
skip_space(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/*
 * Read the JSON string starting at p (at its opening quote) into out, cut
 * to outsize - 1 bytes; out may be NULL to skip it.  Anything outside
 * printable ASCII (raw bytes or \u escapes) becomes '?': the text is
 * stored in the database, where a byte sequence cut in the middle of a
 * character, or not UTF-8 at all, would be invalid text.  Messages are for
 * people, not for byte-exact use.  Returns the position after the closing
 * quote, or NULL if malformed.
 */
static const char *
read_string(const char *p, const char *end, char *out, size_t outsize)
{
	size_t		n = 0;

	if (p >= end || *p != '"')
		return NULL;
	p++;
	while (p < end && *p != '"')
	{
		char		c = *p++;

		if ((unsigned char) c < 0x20)
			return NULL;
		if (c == '\\')
		{
			if (p >= end)
				return NULL;
			c = *p++;
			switch (c)
			{
				case '"':
				case '\\':
				case '/':
					break;
				case 'b':
				case 'f':
				case 'n':
				case 'r':
				case 't':
					c = ' ';
					break;
				case 'u':
					{
						unsigned	cp = 0;

						for (int i = 0; i < 4; i++, p++)
						{
							if (p >= end)
								return NULL;
							if (*p >= '0' && *p <= '9')
								cp = cp * 16 + (*p - '0');
							else if ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'f')
								cp = cp * 16 + ((*p | 0x20) - 'a' + 10);
							else
								return NULL;
						}
						c = (cp >= 0x20 && cp < 0x7f) ? (char) cp : '?';
					}
					break;
				default:
					return NULL;
			}
		}
		if ((unsigned char) c >= 0x7f)
			c = '?';
		if (out && n + 1 < outsize)
			out[n++] = c;
	}
	if (p >= end)
		return NULL;
	if (out && outsize > 0)
		out[n] = '\0';
	return p + 1;
}

/*
 * Read a JSON number at p; *ok is true only for an integer that fits a
 * long (a fraction or exponent makes it "not a code").
 */
static const char *
read_integer(const char *p, const char *end, long *value, bool *ok)
{
	const char *start = p;
	bool		negative = false;
	bool		integral = true;
	unsigned long v = 0;
	bool		overflow = false;

	if (p < end && *p == '-')
	{
		negative = true;
		p++;
	}
	if (p >= end || *p < '0' || *p > '9')
		return NULL;
	while (p < end && *p >= '0' && *p <= '9')
	{
		if (v > (unsigned long) 1e15)
			overflow = true;
		else
			v = v * 10 + (*p - '0');
		p++;
	}
	while (p < end && (*p == '.' || *p == 'e' || *p == 'E' || *p == '+' ||
					   *p == '-' || (*p >= '0' && *p <= '9')))
	{
		integral = false;
		p++;
	}
	*ok = integral && !overflow && p > start;
	*value = negative ? -(long) v : (long) v;
	return p;
}

/*
 * Skip one JSON value of any kind.  Nesting is tracked with a counter, not
 * recursion, so a deeply nested body cannot exhaust the stack.
 */
static const char *
skip_value(const char *p, const char *end)
{
	int			depth = 0;

	do
	{
		p = skip_space(p, end);
		if (p >= end)
			return NULL;
		if (*p == '"')
			p = read_string(p, end, NULL, 0);
		else if (*p == '{' || *p == '[')
		{
			depth++;
			p++;
		}
		else if (*p == '}' || *p == ']')
		{
			if (depth == 0)
				return NULL;
			depth--;
			p++;
		}
		else if (*p == ',' || *p == ':')
		{
			if (depth == 0)
				return NULL;
			p++;
		}
		else
		{
			const char *start = p;

			while (p < end && ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
							   *p == '-' || *p == '+' || *p == '.' || *p == 'E'))
				p++;
			if (p == start)
				return NULL;
		}
		if (p == NULL)
			return NULL;
	} while (depth > 0);
	return p;
}

/*
 * Read the top-level "code", "message" and "request_id" of an answer body.
 * Returns false, with has_code false, when the body is not a whole JSON
 * object with an integer code; message and request_id are then filled as
 * far as they could be read.
 */
bool
tt_read_answer(const char *body, size_t len, TTAnswer *answer)
{
	memset(answer, 0, sizeof(*answer));
	if (body == NULL)
		return false;
	if (read_answer(body, body + len, answer))
		return true;
	/* a code from a body that is not whole JSON is not to be trusted */
	answer->has_code = false;
	return false;
}

/* tt_read_answer's parser; true when the object closed with a code read */
static bool
read_answer(const char *p, const char *end, TTAnswer *answer)
{
	p = skip_space(p, end);
	if (p >= end || *p != '{')
		return false;
	p = skip_space(p + 1, end);
	if (p < end && *p == '}')
		return false;
	for (;;)
	{
		char		key[16];

		p = read_string(skip_space(p, end), end, key, sizeof(key));
		if (p == NULL)
			return false;
		p = skip_space(p, end);
		if (p >= end || *p != ':')
			return false;
		p = skip_space(p + 1, end);
		if (p >= end)
			return false;
		if (strcmp(key, "code") == 0 && (*p == '-' || (*p >= '0' && *p <= '9')))
		{
			bool		ok = false;

			p = read_integer(p, end, &answer->code, &ok);
			answer->has_code = ok;
		}
		else if (strcmp(key, "message") == 0 && *p == '"')
			p = read_string(p, end, answer->message, sizeof(answer->message));
		else if (strcmp(key, "request_id") == 0 && *p == '"')
			p = read_string(p, end, answer->request_id, sizeof(answer->request_id));
		else
			p = skip_value(p, end);
		if (p == NULL)
			return false;
		p = skip_space(p, end);
		if (p < end && *p == ',')
		{
			p++;
			continue;
		}
		if (p < end && *p == '}')
			return answer->has_code;
		return false;
	}
}

/*
 * The verdict on one request of nevents events, with a reason for people
 * (stored as the events' or the pixel's last_error).  transport_error is
 * NULL when an HTTP answer arrived.
 */
TTVerdict
tt_judge(const char *transport_error, long http_status,
		 const TTAnswer *answer, int nevents, char *reason, size_t reasonsize)
{
	if (transport_error)
	{
		snprintf(reason, reasonsize, "network: %s", transport_error);
		return TT_RETRY;
	}
	if (http_status == 408 || http_status == 429 || http_status >= 500)
	{
		snprintf(reason, reasonsize, "HTTP %ld from the Events API", http_status);
		return TT_RETRY;
	}
	if (http_status >= 300 && http_status < 400)
	{
		snprintf(reason, reasonsize,
				 "HTTP %ld: the Events API redirected; redirects are not followed (check tiktok_capi.api_url)",
				 http_status);
		return TT_RETRY;
	}
	/* no such path, or no POST there: whatever the body says */
	if (http_status == 404 || http_status == 405 || http_status == 410)
	{
		snprintf(reason, reasonsize,
				 "HTTP %ld: tiktok_capi.api_url is not the Events API's track URL (it should end in " TT_TRACK_PATH ")",
				 http_status);
		return TT_PAUSE_URL;
	}
	if (!answer->has_code)
	{
		snprintf(reason, reasonsize,
				 "HTTP %ld with an answer that is not the Events API's (no JSON with a code): check tiktok_capi.api_url (it should end in " TT_TRACK_PATH ")",
				 http_status);
		return TT_PAUSE_URL;
	}
	if (answer->code == 0)
	{
		snprintf(reason, reasonsize, "OK");
		return TT_SENT;
	}
	/* tt_requeue_failed() knows TikTok's rejects by this beginning */
	snprintf(reason, reasonsize, "TikTok code %ld: %s", answer->code,
			 answer->message[0] ? answer->message : "(no message)");
	if (answer->code == 40001 || answer->code == 40105)
		return TT_PAUSE_PIXEL;
	if (answer->code == 40100 || answer->code == 40016 ||
		answer->code == 40132 || answer->code == 40133)
		return TT_THROTTLE;
	if (answer->code >= 40000 && answer->code < 40100)
		return nevents > 1 ? TT_SPLIT : TT_REJECT;
	return TT_RETRY;
}

/*
 * How many requests may be in flight after an answer: halved on
 * throttling (never below one), else grown by one per window's worth of
 * answers up to max_window ("additive increase, multiplicative decrease",
 * as TCP shares a link): the pipeline settles just under the rate TikTok
 * allows instead of hammering it.
 */
double
tt_window_after(double window, double max_window, bool throttled)
{
	if (throttled)
		window = window / 2;
	else if (window > 0)
		window = window + 1 / window;
	if (window < 1)
		window = 1;
	if (window > max_window)
		window = max_window;
	return window;
}

/*
 * Milliseconds to wait before attempt attempts + 1: "full jitter", a
 * uniform draw between 0 and base * 2^(attempts - 1), capped at max, so
 * that many events failing together do not come back together.
 */
double
tt_backoff_ms(int attempts, double base_ms, double max_ms, double random01)
{
	double		ceiling = base_ms;

	for (int i = 1; i < attempts && ceiling < max_ms; i++)
		ceiling *= 2;
	if (ceiling > max_ms)
		ceiling = max_ms;
	if (random01 < 0)
		random01 = 0;
	if (random01 > 1)
		random01 = 1;
	return ceiling * random01;
}

/* 127.0.0.0/8, ::1 or localhost */
static bool
host_is_loopback(const char *host, size_t len)
{
	int			octets = 0;
	size_t		i;

	if (len == 9 && strncmp(host, "localhost", 9) == 0)
		return true;
	if (len == 5 && strncmp(host, "[::1]", 5) == 0)
		return true;
	if (len < 9 || strncmp(host, "127.", 4) != 0)
		return false;
	/* a dotted quad of digits, each 0..255 */
	for (i = 0; i < len; octets++)
	{
		int			value = 0;
		size_t		start = i;

		while (i < len && host[i] >= '0' && host[i] <= '9' && i - start < 3)
			value = value * 10 + (host[i++] - '0');
		if (i == start || value > 255)
			return false;
		if (i < len && host[i++] != '.')
			return false;
		if (i == len && host[len - 1] == '.')
			return false;
	}
	return octets == 4;
}

/*
 * Whether events may be sent to url: https anywhere, plain http only to a
 * loopback host (a local test server).  No user:password part, nothing
 * that is not a URL.  *why says what is wrong.
 */
bool
tt_url_allowed(const char *url, const char **why)
{
	const char *host;
	size_t		hostlen;
	bool		https;

	if (url == NULL || url[0] == '\0')
	{
		*why = "the URL is empty";
		return false;
	}
	if (strncmp(url, "https://", 8) == 0)
		https = true;
	else if (strncmp(url, "http://", 7) == 0)
		https = false;
	else
	{
		*why = "the URL must start with https://";
		return false;
	}
	host = url + (https ? 8 : 7);
	if (host[0] == '[')
		hostlen = strcspn(host, "]") + 1;
	else
		hostlen = strcspn(host, ":/?#@");
	/* a host, and after it only a port, a path, a query or the end */
	if (hostlen == 0 || hostlen > strlen(host) || host[hostlen - 1] == '\0' ||
		(host[0] == '[' && hostlen <= 2) ||
		(host[hostlen] != '\0' && strchr(":/?#", host[hostlen]) == NULL))
	{
		*why = "the URL has no host";
		return false;
	}
	if (strcspn(url, "@ \t\r\n") != strlen(url))
	{
		*why = "the URL must not contain credentials or white space";
		return false;
	}
	if (!https && !host_is_loopback(host, hostlen))
	{
		*why = "plain http is allowed only to a loopback host (127.0.0.1, ::1, localhost); use https";
		return false;
	}
	return true;
}

/*
 * Whether url may be tiktok_capi.proxy: empty (no proxy), or an http:// or
 * https:// proxy URL with a host and a port (without one, curl takes 1080,
 * which is nobody's HTTP proxy).  curl's other proxy kinds (socks) are
 * refused: the worker speaks to a proxy only in HTTP, CONNECT for https.
 * *why says what is wrong, without the URL (it may hold a password).
 */
bool
tt_proxy_allowed(const char *url, const char **why)
{
	const char *host;
	const char *port;
	size_t		authority;

	if (url == NULL || url[0] == '\0')
		return true;
	if (strncmp(url, "https://", 8) == 0)
		host = url + 8;
	else if (strncmp(url, "http://", 7) == 0)
		host = url + 7;
	else
	{
		*why = "the proxy URL must start with http:// or https://";
		return false;
	}
	if (strcspn(url, " \t\r\n") != strlen(url))
	{
		*why = "the proxy URL must not contain white space";
		return false;
	}
	/* the host follows the user part, if any: after the authority's last @ */
	authority = strcspn(host, "/?#");
	for (size_t i = authority; i > 0; i--)
	{
		if (host[i - 1] == '@')
		{
			host += i;
			authority -= i;
			break;
		}
	}
	if (authority == 0 || host[0] == ':')
	{
		*why = "the proxy URL has no host";
		return false;
	}
	/* the port after the host (after the brackets of an IPv6 address) */
	port = host[0] == '[' ? memchr(host, ']', authority) : host;
	if (port != NULL)
		port = memchr(port, ':', authority - (port - host));
	if (port == NULL || port + 1 == host + authority ||
		strspn(port + 1, "0123456789") != (size_t) (host + authority - port - 1))
	{
		*why = "the proxy URL must end its host with a port, such as :3128 (curl would take 1080)";
		return false;
	}
	return true;
}

/*
 * Copy text to out (outsize bytes, always terminated, cut if short) with
 * the password of every URL in it replaced by ***: "http://user:secret@host"
 * becomes "http://user:***@host".  The user part is taken up to the last @
 * before the path, which hides more than curl would read, never less.
 * Returns whether anything was hidden.  An out of 2 * strlen(text) + 8
 * bytes is never short.
 */
bool
tt_hide_passwords(const char *text, char *out, size_t outsize)
{
	size_t		o = 0;
	bool		hidden = false;
	const char *p = text;

	if (outsize == 0)
		return false;
	while (*p)
	{
		const char *scheme_end = strstr(p, "://");
		const char *user;
		const char *colon = NULL;
		const char *at = NULL;
		const char *copy_to;
		size_t		authority;

		if (scheme_end == NULL)
			break;
		user = scheme_end + 3;
		/* the authority ends where the path, query, fragment or text does */
		authority = strcspn(user, "/?#\"' \t\r\n");
		for (size_t i = 0; i < authority; i++)
		{
			if (user[i] == '@')
				at = user + i;
		}
		if (at != NULL)
			colon = memchr(user, ':', at - user);
		copy_to = colon ? colon + 1 : user;
		while (p < copy_to && o + 1 < outsize)
			out[o++] = *p++;
		p = copy_to;
		if (colon != NULL)
		{
			for (const char *s = "***"; *s && o + 1 < outsize; s++)
				out[o++] = *s;
			p = at;
			hidden = true;
		}
	}
	while (*p && o + 1 < outsize)
		out[o++] = *p++;
	out[o] = '\0';
	return hidden;
}
