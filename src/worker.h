/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  What the stages of the delivery worker share: the loop and its
 *	  transactions (worker.c), the claim (worker_claim.c), the pipeline of
 *	  requests and their verdicts (worker_send.c) and the record
 *	  (worker_record.c).
 *
 * Vocabulary:
 *	- claim: a short read-only transaction that takes due events into the
 *	  worker's memory: the oldest (from a cursor, while a backlog drains),
 *	  or, when a commit wakes the worker during a backlog, the newest, so a
 *	  fresh order does not wait behind a million old ones.  It writes
 *	  nothing: there is one worker, which owns what it claimed until it
 *	  records the results, and its lease is its own life.  If it dies in
 *	  between, the events are still 'pending' in the table and the next
 *	  worker sends them again.  An event the worker owns is never claimed
 *	  again (the owned set), so no event is in two requests at once.
 *	- batch, request: the events of one pixel sent in one request (at most
 *	  tiktok_capi.batch_size, and at most TT_BATCH_BYTES of JSON).
 *	- pipeline: up to a window of requests in flight at once, at most
 *	  tiktok_capi.max_in_flight; claims run whenever there is room, and
 *	  each answer is recorded when it arrives.  The window halves when
 *	  TikTok throttles and grows back one request per window of answers.
 *	  No transaction is open while requests are in flight.
 *	- attempt: one claim of an event.  A request that TikTok rejected as
 *	  a whole because of one event is split and resent within the same
 *	  attempt, so good events are not charged for a bad neighbour.
 *	- settled: an event whose fate is known and waits for the record.
 *	- record: a short transaction that writes settled events' fates,
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

#include "executor/spi.h"
#include "nodes/pg_list.h"
#include "utils/hsearch.h"
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

/* One pixel as a claim read it */
typedef struct Pixel
{
	char	   *code;
	char	   *access_token;
	char	   *test_event_code;	/* NULL: none */
	char	   *event_source;	/* web, app, offline or crm */
	bool		deferred;		/* disabled, paused, or paused since */
} Pixel;

typedef enum Fate
{
	FATE_SENT,
	FATE_RETRY,
	FATE_FAILED,
	FATE_DEFERRED,
	FATE_HELD					/* URL pause: not recorded, stays due */
} Fate;

typedef struct Claim Claim;

/* One claimed event */
typedef struct Claimed
{
	int64		id;
	char	   *pixel_code;
	Pixel	   *pixel;			/* NULL: not configured */
	char	   *payload;		/* the event's JSON text */
	int			attempts;		/* counting this one */
	double		age_ms;			/* since its first attempt */
	Claim	   *claim;
	Fate		fate;
	double		delay_ms;		/* FATE_RETRY: wait before the next attempt */
	char	   *error;
	char	   *request_id;
} Claimed;

/* What one claim took; lives in cxt until its last event is recorded */
struct Claim
{
	Pixel	   *pixels;
	int			npixels;
	Claimed    *events;
	int			nevents;
	int			unsettled;		/* events not yet recorded */
	TimestampTz claimed_at;		/* their first attempt's time */
	Oid			extension;		/* whose outbox they came from */
	MemoryContext cxt;
};

/* What answers taught about a pixel since the last record */
typedef struct PixelNews
{
	char	   *code;
	bool		succeeded;
	char	   *error;			/* the last error, or NULL */
	bool		pause_now;		/* 40001/40105: pause it */
} PixelNews;

/* in worker.c */
extern SPIPlanPtr tt_worker_prepare(SPIPlanPtr *plan, const char *sql, int nargs,
									Oid *argtypes, int cursor_options);
extern int	tt_worker_execute(SPIPlanPtr plan, Datum *values, const char *nulls,
							  bool read_only, long count);

/* in worker_claim.c */
extern int	tt_claim(Claim *claim, int limit, bool newest, HTAB *owned);
extern void tt_load_pixels(Claim *claim);
extern double tt_ms_until_due(void);
extern void tt_claim_from_start(void);

/* in worker_send.c */
extern void tt_pipeline_add(Claim *claim, List *paused, bool first);
extern int	tt_pipeline_room(void);
extern bool tt_pipeline_idle(void);
extern bool tt_pipeline_express_out(void);
extern void tt_pipeline_start(List *paused);
extern bool tt_pipeline_wait(long timeout_ms);
extern List *tt_pipeline_take_settled(void);
extern List *tt_pipeline_take_news(void);
extern char *tt_pipeline_url_problem(bool *api_answered);
extern double tt_pipeline_min_retry_ms(void);

/* in worker_record.c */
extern void tt_record(List *settled);
extern void tt_record_pixels(List *news);
extern int	tt_delete_old_sent(void);

#endif							/* TT_WORKER_H */
