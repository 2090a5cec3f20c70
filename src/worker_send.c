/*-------------------------------------------------------------------------
 *
 * worker_send.c
 *	  The pipeline: claimed events sorted out and cut into requests, up to
 *	  a window of them in flight at once, each answer judged as it
 *	  arrives; the verdict settles its events' fates, for the record.
 *
 * A request that TikTok rejected as a whole because of one event is split
 * and resent within the same attempt (see worker.h), so good events are
 * not charged for a bad neighbour.  The window is what TikTok's rate
 * limits leave: halved on throttling, grown back slowly (policy.c).
 * Each judged request is counted once in the delivery counters (stats.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/pg_prng.h"
#include "lib/stringinfo.h"
#include "pgstat.h"
#include "utils/json.h"
#include "utils/memutils.h"

#include "http.h"
#include "policy.h"
#include "tiktok_capi.h"
#include "worker.h"

/* Past TikTok's 48-hour deduplication window a resend would count twice */
#define TT_RESEND_WINDOW_MS (47.0 * 3600 * 1000)
/* Keep a request's body well under what an HTTP server takes */
#define TT_BATCH_BYTES (4 * 1024 * 1024)
/* A transport error that lasts is said again at most this often */
#define TT_UNREACHABLE_LOG_MS (60 * 1000)

/* One request's worth of one claim's events (indexes into its array) */
typedef struct Request
{
	Claim	   *claim;
	Pixel	   *pixel;
	int		   *items;
	int			nitems;
	TTHttpCall	call;
	StringInfoData body;
	TimestampTz started_at;
	bool		express;		/* a fresh order's: may exceed the window by one */
} Request;

static List *queued = NIL;		/* requests waiting for room */
static List *settled = NIL;		/* events whose fate waits for the record */
static List *news = NIL;		/* PixelNews since the last record */
static double window = 0;		/* requests in flight allowed now */
static TimestampTz last_cut = 0;
static char *url_problem = NULL;
static bool api_answered = false;
static double min_retry_ms = -1;
static int	express_out = 0;		/* express requests queued or in flight */
static MemoryContext pipeline_cxt = NULL;

static void cut_batches(Claim *claim, Pixel *pixel, int *items, int nitems,
						bool first, bool express);
static void build_body(Request *r);
static void judge(Request *r);
static void say_unreachable(const char *why);
static void settle(Claimed *ev, Fate fate, const char *error,
				   const char *request_id);
static void settle_shared(Claimed *ev, Fate fate, char *error,
						  char *request_id);
static void settle_request(Request *r, Fate fate, const char *request_id);
static Fate retry_or_fail(Claimed *ev, char *reason, double random01);
static void count_request(Request *r, TTVerdict verdict, const TTAnswer *answer,
						  int retried, int failed);
static void count_failed_alone(const char *pixel_code, int nevents);
static PixelNews *news_of(const char *code);
static bool is_paused(List *paused, const char *code);
static void pipeline_init(void);

/* The pipeline's own memory: its lists, and what answers taught */
static void
pipeline_init(void)
{
	if (pipeline_cxt == NULL)
		pipeline_cxt = AllocSetContextCreate(TopMemoryContext, "tiktok_capi pipeline",
											 ALLOCSET_SMALL_SIZES);
}

/*
 * The window's ceiling follows tiktok_capi.max_in_flight, also on reload,
 * keeping one request of it for fresh orders (express requests): a
 * backlog never fills the last slot.
 */
static double
max_window(void)
{
	return (double) Max(tt_max_in_flight - 1, 1);
}

/*
 * Take a claim into the pipeline: settle what must not be sent (pixel not
 * configured, paused or disabled; first attempt too long ago), and cut
 * the rest into requests per pixel, queued after those already waiting
 * (first: before them, for fresh orders).  paused: codes of pixels paused
 * since the claim read them.
 */
void
tt_pipeline_add(Claim *claim, List *paused, bool first)
{
	int		   *items = MemoryContextAlloc(claim->cxt, sizeof(int) * Max(1, claim->nevents));
	const char *unknown_code = NULL;
	int			unknown = 0;

	pipeline_init();
	for (int p = 0; p < claim->npixels; p++)
	{
		Pixel	   *pixel = &claim->pixels[p];
		int			n = 0;
		int			too_old = 0;

		if (is_paused(paused, pixel->code))
			pixel->deferred = true;
		for (int i = 0; i < claim->nevents; i++)
		{
			Claimed    *ev = &claim->events[i];

			if (ev->pixel != pixel)
				continue;
			if (pixel->deferred)
				settle(ev, FATE_DEFERRED, NULL, NULL);
			else if (ev->age_ms > TT_RESEND_WINDOW_MS)
			{
				settle(ev, FATE_FAILED,
					   "not sent again: its first attempt was more than 47 hours ago, and past TikTok's 48-hour deduplication window a resend could be counted twice",
					   NULL);
				too_old++;
			}
			else
				items[n++] = i;
		}
		if (too_old > 0)
			count_failed_alone(pixel->code, too_old);
		cut_batches(claim, pixel, items, n, first, first);
	}
	/* counted once for each run of events of the same unknown pixel */
	for (int i = 0; i < claim->nevents; i++)
	{
		Claimed    *ev = &claim->events[i];

		if (ev->pixel == NULL)
		{
			settle(ev, FATE_FAILED,
				   "its pixel is not configured in tiktok_capi.pixels (add it with tt_add_pixel, then tt_requeue_failed)",
				   NULL);
			if (unknown > 0 && strcmp(unknown_code, ev->pixel_code) != 0)
			{
				count_failed_alone(unknown_code, unknown);
				unknown = 0;
			}
			unknown_code = ev->pixel_code;
			unknown++;
		}
	}
	if (unknown > 0)
		count_failed_alone(unknown_code, unknown);
}

/*
 * Queue one pixel's events as requests of batch_size events and
 * TT_BATCH_BYTES; first: at the head of the queue (the halves of a split
 * request go before new work); express: a fresh order's, started even
 * when the window is full, in the slot max_window() keeps, so that it
 * does not wait for a backlog's answers.
 */
static void
cut_batches(Claim *claim, Pixel *pixel, int *items, int nitems, bool first,
			bool express)
{
	List	   *cut = NIL;
	int			start = 0;
	MemoryContext old = MemoryContextSwitchTo(claim->cxt);

	while (start < nitems)
	{
		Request    *r = palloc0(sizeof(Request));
		size_t		bytes = 0;
		int			n = 0;

		while (start + n < nitems && n < tt_batch_size)
		{
			size_t		len = strlen(claim->events[items[start + n]].payload) + 1;

			if (n > 0 && bytes + len > TT_BATCH_BYTES)
				break;
			bytes += len;
			n++;
		}
		r->claim = claim;
		r->pixel = pixel;
		r->express = express;
		express_out += express ? 1 : 0;
		r->items = palloc(sizeof(int) * n);
		memcpy(r->items, items + start, sizeof(int) * n);
		r->nitems = n;
		cut = lappend(cut, r);
		start += n;
	}
	MemoryContextSwitchTo(pipeline_cxt);
	queued = first ? list_concat(cut, queued) : list_concat(queued, cut);
	MemoryContextSwitchTo(old);
}

/* Requests that may still be claimed for: the window's room */
int
tt_pipeline_room(void)
{
	if (window <= 0)
		window = max_window();
	window = Min(window, max_window());
	return (int) window - tt_http_running() - list_length(queued);
}

/* Is a fresh order's request queued or in flight? (one at a time) */
bool
tt_pipeline_express_out(void)
{
	return express_out > 0;
}

/* Nothing in flight, queued or waiting for the record */
bool
tt_pipeline_idle(void)
{
	return tt_http_running() == 0 && queued == NIL && settled == NIL;
}

/*
 * The request body: {"event_source":...,"event_source_id":...,"data":[...]}.
 * A request holds one pixel's events, so one source and one test code.
 */
static void
build_body(Request *r)
{
	StringInfo	body = &r->body;

	initStringInfo(body);
	appendStringInfoString(body, "{\"event_source\":");
	escape_json(body, r->pixel->event_source);
	appendStringInfoString(body, ",\"event_source_id\":");
	escape_json(body, r->pixel->code);
	if (r->pixel->test_event_code)
	{
		appendStringInfoString(body, ",\"test_event_code\":");
		escape_json(body, r->pixel->test_event_code);
	}
	appendStringInfoString(body, ",\"data\":[");
	for (int i = 0; i < r->nitems; i++)
	{
		if (i > 0)
			appendStringInfoChar(body, ',');
		appendStringInfoString(body, r->claim->events[r->items[i]].payload);
	}
	appendStringInfoString(body, "]}");
}

/*
 * Start queued requests while the window has room.  A request whose pixel
 * was paused since its claim is not sent: its events are deferred.
 */
void
tt_pipeline_start(List *paused)
{
	int			started = 0;
	int			room;
	int			capacity;
	TTHttpRoute route = {tt_proxy, tt_no_proxy, tt_ca_file};

	pipeline_init();
	capacity = Min(tt_http_reserve(tt_max_in_flight), tt_max_in_flight);
	room = Min((int) Min(window, max_window()), capacity);
	while (queued != NIL)
	{
		Request    *r = linitial(queued);
		MemoryContext old;

		if (tt_http_running() >= (r->express ? Min(room + 1, capacity) : room))
			break;
		queued = list_delete_first(queued);
		if (r->pixel->deferred || is_paused(paused, r->pixel->code))
		{
			if (r->express)
				express_out--;
			settle_request(r, FATE_DEFERRED, NULL);
			continue;
		}
		old = MemoryContextSwitchTo(r->claim->cxt);
		build_body(r);
		r->call.access_token = r->pixel->access_token;
		r->call.body = &r->body;
		r->call.owner = r;
		r->started_at = GetCurrentTimestamp();
		tt_http_start(&r->call, tt_api_url, &route, tt_http_timeout_ms);
		MemoryContextSwitchTo(old);
		started++;
	}
	if (started > 0)
	{
		char		activity[64];

		tt_http_kick();
		snprintf(activity, sizeof(activity), "sending: %d requests in flight, %d queued",
				 tt_http_running(), list_length(queued));
		pgstat_report_activity(STATE_RUNNING, activity);
	}
}

/*
 * Wait for answers (or the latch, or timeout_ms) and judge those that
 * came.  Returns whether the latch was set.
 */
bool
tt_pipeline_wait(long timeout_ms)
{
	TTHttpCall **done;
	bool		woken;
	int			n = tt_http_wait(timeout_ms, &done, &woken);

	for (int i = 0; i < n; i++)
	{
		Request    *r = done[i]->owner;
		MemoryContext old = MemoryContextSwitchTo(r->claim->cxt);

		judge(r);
		pfree(r->body.data);
		MemoryContextSwitchTo(old);
	}
	return woken;
}

/* Turn one request's answer into its events' fates (and its pixel's) */
static void
judge(Request *r)
{
	TTHttpCall *call = &r->call;
	TTAnswer	answer;
	char		reason[TT_MESSAGE_MAX + 64];
	TTVerdict	verdict;
	PixelNews  *pn = news_of(r->pixel->code);
	const char *request_id;
	int			retried = 0;
	int			failed = 0;

	if (r->express)
		express_out--;
	tt_read_answer(call->answer.data, call->answer.len, &answer);
	verdict = tt_judge(call->transport_error, call->http_status, &answer,
					   r->nitems, reason, sizeof(reason));
	if (call->transport_error)
		say_unreachable(call->transport_error);
	request_id = answer.request_id[0] ? answer.request_id : NULL;
	if (verdict == TT_SENT)
		pn->succeeded = true;
	else
	{
		if (pn->error)
			pfree(pn->error);
		pn->error = MemoryContextStrdup(pipeline_cxt, reason);
	}
	if (verdict != TT_PAUSE_URL && call->transport_error == NULL)
		api_answered = true;
	/*
	 * One cut per window: the requests started before the last cut report
	 * the excess it already answered.
	 */
	if (verdict == TT_THROTTLE)
	{
		if (r->started_at > last_cut)
		{
			window = tt_window_after(window, max_window(), true);
			last_cut = GetCurrentTimestamp();
		}
	}
	else if (verdict == TT_SENT)
		window = tt_window_after(window, max_window(), false);

	switch (verdict)
	{
		case TT_SENT:
			settle_request(r, FATE_SENT, request_id);
			break;
		case TT_RETRY:
		case TT_THROTTLE:
			{
				/* one draw per request: its events are retried together */
				double		random01 = pg_prng_double(&pg_global_prng_state);
				char	   *shared_reason = MemoryContextStrdup(r->claim->cxt, reason);

				for (int i = 0; i < r->nitems; i++)
				{
					if (retry_or_fail(&r->claim->events[r->items[i]], shared_reason, random01) == FATE_RETRY)
						retried++;
					else
						failed++;
				}
			}
			break;
		case TT_REJECT:
			settle(&r->claim->events[r->items[0]], FATE_FAILED, reason, request_id);
			failed++;
			break;
		case TT_PAUSE_PIXEL:
			pn->pause_now = true;
			r->pixel->deferred = true;
			settle_request(r, FATE_DEFERRED, NULL);
			break;
		case TT_PAUSE_URL:
			/* the URL is wrong, not the events: they wait, as they are */
			if (url_problem == NULL)
				url_problem = MemoryContextStrdup(pipeline_cxt, reason);
			settle_request(r, FATE_HELD, NULL);
			break;
		case TT_SPLIT:
			{
				int			half = r->nitems / 2;

				/* the second half first: list order keeps the first ahead */
				cut_batches(r->claim, r->pixel, r->items + half, r->nitems - half, true, false);
				cut_batches(r->claim, r->pixel, r->items, half, true, false);
			}
			break;
	}
	count_request(r, verdict, &answer, retried, failed);
}

/*
 * Count a judged request in the delivery counters: once per request, so
 * that the counters' lock is not taken per event.  A split request's
 * events count in the requests that carry its halves; a paused pixel's or
 * URL's events are neither sent, failed nor retried.
 */
static void
count_request(Request *r, TTVerdict verdict, const TTAnswer *answer,
			  int retried, int failed)
{
	TTRequestOutcome outcome;

	memset(&outcome, 0, sizeof(outcome));
	outcome.is_request = true;
	outcome.events_sent = verdict == TT_SENT ? r->nitems : 0;
	outcome.events_failed = failed;
	outcome.events_retried = retried;
	outcome.throttled = verdict == TT_THROTTLE;
	outcome.succeeded = verdict == TT_SENT;
	outcome.transport_error = r->call.transport_error;
	outcome.http_status = r->call.http_status;
	outcome.has_code = r->call.transport_error == NULL && answer->has_code;
	outcome.code = answer->code;
	outcome.bytes_sent = r->call.bytes_sent;
	outcome.elapsed_ms = r->call.elapsed_ms;
	outcome.at = GetCurrentTimestamp();
	tt_stats_count(r->pixel->code, &outcome);
}

/*
 * Count events of one pixel failed without a request (no pixel, too old):
 * all at once, as count_request() does, so that a claim full of them does
 * not take the counters' lock once per event
 */
static void
count_failed_alone(const char *pixel_code, int nevents)
{
	TTRequestOutcome outcome;

	memset(&outcome, 0, sizeof(outcome));
	outcome.events_failed = nevents;
	tt_stats_count(pixel_code, &outcome);
}

/*
 * Say in the server log why the API could not be reached (a refused
 * connection, a failed TLS handshake, a proxy's refusal): once for each
 * new reason, and again at most once a minute while it lasts.  Its
 * events stay pending and are retried; their pixel's last_error says the
 * same.  The proxy is named with its password hidden.
 */
static void
say_unreachable(const char *why)
{
	static char *said = NULL;
	static TimestampTz said_at = 0;
	char		proxy[1024];

	if (said != NULL && strcmp(said, why) == 0 &&
		!TimestampDifferenceExceeds(said_at, GetCurrentTimestamp(), TT_UNREACHABLE_LOG_MS))
		return;
	if (said)
		pfree(said);
	said = MemoryContextStrdup(pipeline_cxt, why);
	said_at = GetCurrentTimestamp();
	tt_hide_passwords(tt_proxy ? tt_proxy : "", proxy, sizeof(proxy));
	ereport(LOG,
			(errmsg("tiktok_capi: could not reach the Events API: %s", why),
			 proxy[0] != '\0' ?
			 errdetail("The events stay pending and are retried.  Requests go through the proxy %s.",
					   proxy) :
			 errdetail("The events stay pending and are retried."),
			 errhint("Check tiktok_capi.api_url, tiktok_capi.proxy and tiktok_capi.ca_file.")));
}

/* Settle one event (the strings are copied), for the next record */
static void
settle(Claimed *ev, Fate fate, const char *error, const char *request_id)
{
	MemoryContext cxt = ev->claim->cxt;

	settle_shared(ev, fate, error ? MemoryContextStrdup(cxt, error) : NULL,
				  request_id ? MemoryContextStrdup(cxt, request_id) : NULL);
}

/*
 * Settle one event with strings already in its claim's memory, which the
 * events of one request share: a request's thousand events need not copy
 * its reason or request_id a thousand times, and the record groups them
 * by comparing pointers before text.
 */
static void
settle_shared(Claimed *ev, Fate fate, char *error, char *request_id)
{
	MemoryContext old = MemoryContextSwitchTo(pipeline_cxt);

	ev->fate = fate;
	ev->error = error;
	ev->request_id = request_id;
	settled = lappend(settled, ev);
	MemoryContextSwitchTo(old);
	if (fate == FATE_RETRY && (min_retry_ms < 0 || ev->delay_ms < min_retry_ms))
		min_retry_ms = ev->delay_ms;
}

/*
 * Settle every event of a request alike: the verdicts that concern the
 * request as a whole (sent, its pixel paused, the URL paused)
 */
static void
settle_request(Request *r, Fate fate, const char *request_id)
{
	char	   *shared_id = request_id ? MemoryContextStrdup(r->claim->cxt, request_id) : NULL;

	for (int i = 0; i < r->nitems; i++)
		settle_shared(&r->claim->events[r->items[i]], fate, NULL, shared_id);
}

/*
 * A failed attempt: try again after a backoff, unless the attempts are
 * spent or the next try would come too late for TikTok's deduplication.
 * reason is in the claim's memory, shared by the request's retried
 * events.  Returns the fate given: FATE_RETRY or FATE_FAILED.
 */
static Fate
retry_or_fail(Claimed *ev, char *reason, double random01)
{
	double		delay = tt_backoff_ms(ev->attempts, tt_retry_delay_ms,
									  tt_retry_delay_max_ms, random01);

	if (ev->attempts >= tt_max_attempts)
		settle(ev, FATE_FAILED,
			   psprintf("gave up after %d attempts (tiktok_capi.max_attempts); last: %s",
						ev->attempts, reason), NULL);
	else if (ev->age_ms + delay > TT_RESEND_WINDOW_MS)
		settle(ev, FATE_FAILED,
			   psprintf("gave up 47 hours after the first attempt (TikTok deduplicates for 48); last: %s",
						reason), NULL);
	else
	{
		ev->delay_ms = delay;
		settle_shared(ev, FATE_RETRY, reason, NULL);
	}
	return ev->fate;
}

/* The news of a pixel since the last record, made when first needed */
static PixelNews *
news_of(const char *code)
{
	ListCell   *lc;
	PixelNews  *pn;
	MemoryContext old;

	foreach(lc, news)
	{
		pn = lfirst(lc);
		if (strcmp(pn->code, code) == 0)
			return pn;
	}
	old = MemoryContextSwitchTo(pipeline_cxt);
	pn = palloc0(sizeof(PixelNews));
	pn->code = pstrdup(code);
	news = lappend(news, pn);
	MemoryContextSwitchTo(old);
	return pn;
}

/* Is code among the pixels paused since the last claim? */
static bool
is_paused(List *paused, const char *code)
{
	ListCell   *lc;

	foreach(lc, paused)
		if (strcmp((char *) lfirst(lc), code) == 0)
			return true;
	return false;
}

/* The settled events, for the record; the pipeline forgets them */
List *
tt_pipeline_take_settled(void)
{
	List	   *taken = settled;

	settled = NIL;
	return taken;
}

/* What the answers said about pixels since the last take */
List *
tt_pipeline_take_news(void)
{
	List	   *taken = news;

	news = NIL;
	return taken;
}

/*
 * Whether an answer said api_url is not the Events API (why, else NULL),
 * and whether one said it is; both are forgotten once asked.
 */
char *
tt_pipeline_url_problem(bool *answered)
{
	char	   *problem = url_problem;

	*answered = api_answered;
	url_problem = NULL;
	api_answered = false;
	return problem;
}

/* The shortest backoff settled since the last ask (-1: none) */
double
tt_pipeline_min_retry_ms(void)
{
	double		ms = min_retry_ms;

	min_retry_ms = -1;
	return ms;
}
