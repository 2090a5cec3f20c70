/*-------------------------------------------------------------------------
 *
 * policy.h
 *	  How the delivery worker judges an answer from the Events API, how
 *	  long it waits before the next attempt, and which API URLs it may use.
 *
 * Pure C: no PostgreSQL headers, so the rules can be unit-tested, fuzzed
 * and read on their own.
 *
 * Vocabulary:
 *	- answer: what came back for one request: a transport outcome, an HTTP
 *	  status and the body's "code", "message" and "request_id".
 *	- verdict: what the worker does with the request's events.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TT_POLICY_H
#define TT_POLICY_H

#include <stdbool.h>
#include <stddef.h>

#define TT_MESSAGE_MAX 256
#define TT_REQUEST_ID_MAX 128

/* How the path of tiktok_capi.api_url ends, for hints */
#define TT_TRACK_PATH "/open_api/v1.3/event/track/"

/* The fields of an Events API answer body the worker acts on */
typedef struct TTAnswer
{
	bool		has_code;		/* false: the body was not an answer */
	long		code;
	char		message[TT_MESSAGE_MAX];	/* "" when absent; cut if longer */
	char		request_id[TT_REQUEST_ID_MAX];
} TTAnswer;

typedef enum TTVerdict
{
	TT_SENT,					/* accepted: the events are sent */
	TT_RETRY,					/* trouble on the way or at TikTok: back off */
	TT_THROTTLE,				/* too many requests: back off, and send fewer
								 * at once */
	TT_SPLIT,					/* an event failed validation: halve the
								 * request to find it */
	TT_REJECT,					/* this single event failed validation */
	TT_PAUSE_PIXEL,				/* the pixel or its token is wrong */
	TT_PAUSE_URL				/* what answered is not the Events API: the
								 * URL is wrong, for every pixel */
} TTVerdict;

extern bool tt_read_answer(const char *body, size_t len, TTAnswer *answer);
extern TTVerdict tt_judge(const char *transport_error, long http_status,
						  const TTAnswer *answer, int nevents,
						  char *reason, size_t reasonsize);
extern double tt_backoff_ms(int attempts, double base_ms, double max_ms,
							double random01);
extern bool tt_url_allowed(const char *url, const char **why);
extern bool tt_proxy_allowed(const char *url, const char **why);
extern bool tt_hide_passwords(const char *text, char *out, size_t outsize);
extern double tt_window_after(double window, double max_window, bool throttled);

#endif							/* TT_POLICY_H */
