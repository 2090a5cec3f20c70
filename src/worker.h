/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  What the stages of the delivery worker share: the loop and its
 *	  transactions (worker.c), the claim (worker_claim.c), the requests
 *	  and their verdicts (worker_send.c) and the record (worker_record.c).
 *
 * Vocabulary:
 *	- claim: a short read-only transaction that takes the due events,
 *	  oldest first, into the worker's memory.  It writes nothing: there is
 *	  one worker, which owns what it claimed until it records the results,
 *	  and its lease is its own life.  If it dies in between, the events are
 *	  still 'pending' in the table and the next worker sends them again.
 *	  No transaction is open while requests are in flight.
 *	- batch: the events of one pixel sent in one request (at most
 *	  tiktok_capi.batch_size, and at most TT_BATCH_BYTES of JSON).
 *	- attempt: one claim of an event.  A request that TikTok rejected as
 *	  a whole because of one event is split and resent within the same
 *	  attempt, so good events are not charged for a bad neighbour.
 *	- record: a short transaction that writes each claimed event's fate,
 *	  counting the attempt: sent; pending again after a backoff; failed
 *	  with a reason; or deferred (its pixel is paused or disabled: no
 *	  attempt is counted).  On the success path this is the one write per
 *	  event besides its insert: each write is a new row version and a new
 *	  entry in every index, which is what delivery throughput is made of.
 *	- URL pause: what answered at tiktok_capi.api_url is not the Events API
 *	  (HTTP 404, an HTML page, JSON without a code).  That is the
 *	  configuration's fault, not the events' nor one pixel's: the worker
 *	  says so once, claims nothing until api_url changes or TT_URL_PAUSE_MS
 *	  has passed, and the events it held are not recorded at all: they stay
 *	  pending and due, their attempts untouched.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TT_WORKER_H
#define TT_WORKER_H

#include "nodes/pg_list.h"
#include "utils/timestamp.h"

/* Sent events deleted per retention transaction */
#define TT_RETENTION_ROWS 5000

/*
 * How long a URL pause lasts before the worker tries api_url again.  Not an
 * hour as for a pixel: a proxy or load balancer can answer 404 or a page of
 * its own for a minute while it reloads, and a try costs one claim's
 * requests, which TikTok never sees.  A changed api_url ends it at once.
 */
#define TT_URL_PAUSE_MS (5 * 60 * 1000)

/* One pixel's configuration and what this cycle learned about it */
typedef struct Pixel
{
	char	   *code;
	char	   *access_token;
	char	   *test_event_code;	/* NULL: none */
	bool		deferred;		/* disabled, paused, or paused just now */
	bool		pause_now;		/* this cycle saw 40001/40105 */
	bool		succeeded;
	char	   *error;			/* last error this cycle, or NULL */
} Pixel;

typedef enum Fate
{
	FATE_SENT,
	FATE_RETRY,
	FATE_FAILED,
	FATE_DEFERRED,
	FATE_HELD					/* URL pause: not recorded, stays due */
} Fate;

/* One claimed event */
typedef struct Claimed
{
	int64		id;
	char	   *pixel_code;
	Pixel	   *pixel;			/* NULL: not configured */
	char	   *payload;		/* the event's JSON text */
	int			attempts;		/* counting this one */
	double		age_ms;			/* since its first attempt */
	Fate		fate;
	double		delay_ms;		/* FATE_RETRY: wait before the next attempt */
	char	   *error;
	char	   *request_id;
} Claimed;

/* Everything one cycle works on; lives in cxt */
typedef struct Cycle
{
	Pixel	   *pixels;
	int			npixels;
	Claimed    *events;
	int			nevents;
	TimestampTz claimed_at;
	char	   *url_problem;	/* an answer was not the Events API's: why */
	bool		api_answered;	/* an HTTP answer was judged another way */
	MemoryContext cxt;			/* where the cycle's data lives */
} Cycle;

/* in worker_claim.c */
extern void tt_claim(Cycle *cycle, int limit);
extern void tt_load_pixels(Cycle *cycle);
extern double tt_ms_until_due(void);
extern void tt_claim_from_start(void);

/* in worker_send.c */
extern void tt_sort_out(Cycle *cycle, List **batches);
extern void tt_send_all(Cycle *cycle, List *batches);

/* in worker_record.c */
extern void tt_record(Cycle *cycle);
extern int	tt_delete_old_sent(void);

#endif							/* TT_WORKER_H */
