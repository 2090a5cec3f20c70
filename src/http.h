/*-------------------------------------------------------------------------
 *
 * http.h
 *	  The delivery worker's HTTP transport: POST request bodies to the
 *	  Events API over kept-alive libcurl connections, many in flight at
 *	  once, each finished as its answer arrives.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TT_HTTP_H
#define TT_HTTP_H

#include "lib/stringinfo.h"

/* One POST: its token and body in, the outcome out */
typedef struct TTHttpCall
{
	const char *access_token;
	StringInfo	body;
	void	   *owner;			/* the caller's, to find its request again */

	/* NULL when an HTTP answer arrived, else what went wrong on the way */
	const char *transport_error;
	long		http_status;
	StringInfoData answer;		/* the answer body, cut at TT_ANSWER_MAX */
	double		elapsed_ms;		/* from its start to its end, as curl timed it */
	int64		bytes_sent;		/* of its body, as far as it went */
} TTHttpCall;

/*
 * How requests leave besides their URL: through an HTTP proxy (NULL or ""
 * for none; CONNECT tunnels), except to the no_proxy hosts, trusting the
 * CAs in ca_file besides the system's (NULL or "" for none).
 */
typedef struct TTHttpRoute
{
	const char *proxy;
	const char *no_proxy;
	const char *ca_file;
} TTHttpRoute;

/* Answer bodies are short; more than this is cut (and so unreadable) */
#define TT_ANSWER_MAX (64 * 1024)

extern int	tt_http_reserve(int n);
extern int	tt_http_running(void);
extern void tt_http_start(TTHttpCall *call, const char *url,
						  const TTHttpRoute *route, int timeout_ms);
extern void tt_http_kick(void);
extern int	tt_http_wait(long timeout_ms, TTHttpCall ***done, bool *woken);

#endif							/* TT_HTTP_H */
