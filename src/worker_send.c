/*-------------------------------------------------------------------------
 *
 * worker_send.c
 *	  The claimed events sorted out and cut into batches, one request per
 *	  batch, all sent at once; and the verdict on each answer, which
 *	  settles its events' fates.
 *
 * A request that TikTok rejected as a whole because of one event is split
 * and resent within the same attempt (see worker.h), so good events are
 * not charged for a bad neighbour.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/pg_prng.h"
#include "lib/stringinfo.h"
#include "pgstat.h"
#include "utils/json.h"

#include "http.h"
#include "policy.h"
#include "tiktok_capi.h"
#include "worker.h"

/* Past TikTok's 48-hour deduplication window a resend would count twice */
#define TT_RESEND_WINDOW_MS (47.0 * 3600 * 1000)
/* Keep a request's body well under what an HTTP server takes */
#define TT_BATCH_BYTES (4 * 1024 * 1024)

/* One request's worth of events (indexes into the claimed array) */
typedef struct Batch
{
	Pixel	   *pixel;
	int		   *items;
	int			nitems;
} Batch;

static List *cut_batches(Cycle *cycle, Pixel *pixel, int *items, int nitems);
static void build_body(Cycle *cycle, Batch *batch, StringInfo body);
static void judge(Cycle *cycle, Batch *batch, TTHttpCall *call, List **resend);
static void set_fate(Claimed *ev, Fate fate, const char *error, const char *request_id);
static void retry_or_fail(Claimed *ev, const char *reason, double random01);

/*
 * Settle the events that must not be sent (pixel not configured, paused
 * or disabled; first attempt too long ago), and cut the rest into batches
 * per pixel.
 */
void
tt_sort_out(Cycle *cycle, List **batches)
{
	int		   *items = palloc(sizeof(int) * cycle->nevents);

	for (int p = 0; p < cycle->npixels; p++)
	{
		Pixel	   *pixel = &cycle->pixels[p];
		int			n = 0;

		for (int i = 0; i < cycle->nevents; i++)
		{
			Claimed    *ev = &cycle->events[i];

			if (ev->pixel != pixel)
				continue;
			if (pixel->deferred)
				set_fate(ev, FATE_DEFERRED, NULL, NULL);
			else if (ev->age_ms > TT_RESEND_WINDOW_MS)
				set_fate(ev, FATE_FAILED,
						 "not sent again: its first attempt was more than 47 hours ago, and past TikTok's 48-hour deduplication window a resend could be counted twice",
						 NULL);
			else
				items[n++] = i;
		}
		*batches = list_concat(*batches, cut_batches(cycle, pixel, items, n));
	}
	for (int i = 0; i < cycle->nevents; i++)
	{
		Claimed    *ev = &cycle->events[i];

		if (ev->pixel == NULL)
			set_fate(ev, FATE_FAILED,
					 "its pixel is not configured in tiktok_capi.pixels (add it with tt_add_pixel, then tt_requeue_failed)",
					 NULL);
	}
}

/* Cut one pixel's events into batches of batch_size events and TT_BATCH_BYTES */
static List *
cut_batches(Cycle *cycle, Pixel *pixel, int *items, int nitems)
{
	List	   *batches = NIL;
	int			start = 0;

	while (start < nitems)
	{
		Batch	   *b = palloc0(sizeof(Batch));
		size_t		bytes = 0;
		int			n = 0;

		while (start + n < nitems && n < tt_batch_size)
		{
			size_t		len = strlen(cycle->events[items[start + n]].payload) + 1;

			if (n > 0 && bytes + len > TT_BATCH_BYTES)
				break;
			bytes += len;
			n++;
		}
		b->pixel = pixel;
		b->items = palloc(sizeof(int) * n);
		memcpy(b->items, items + start, sizeof(int) * n);
		b->nitems = n;
		batches = lappend(batches, b);
		start += n;
	}
	return batches;
}

/* The request body: {"event_source":"web","event_source_id":...,"data":[...]} */
static void
build_body(Cycle *cycle, Batch *batch, StringInfo body)
{
	initStringInfo(body);
	appendStringInfoString(body, "{\"event_source\":\"web\",\"event_source_id\":");
	escape_json(body, batch->pixel->code);
	if (batch->pixel->test_event_code)
	{
		appendStringInfoString(body, ",\"test_event_code\":");
		escape_json(body, batch->pixel->test_event_code);
	}
	appendStringInfoString(body, ",\"data\":[");
	for (int i = 0; i < batch->nitems; i++)
	{
		if (i > 0)
			appendStringInfoChar(body, ',');
		appendStringInfoString(body, cycle->events[batch->items[i]].payload);
	}
	appendStringInfoString(body, "]}");
}

/*
 * Send every batch, all at once, and judge the answers.  A batch rejected
 * for one bad event comes back as two halves, sent in the next round,
 * until every bad event stands alone.
 */
void
tt_send_all(Cycle *cycle, List *batches)
{
	while (batches != NIL)
	{
		int			ncalls = list_length(batches);
		TTHttpCall *calls = palloc0(sizeof(TTHttpCall) * ncalls);
		List	   *resend = NIL;
		int			nevents = 0;
		ListCell   *lc;
		int			i = 0;

		foreach(lc, batches)
		{
			Batch	   *b = lfirst(lc);

			calls[i].access_token = b->pixel->access_token;
			calls[i].body = palloc(sizeof(StringInfoData));
			build_body(cycle, b, calls[i].body);
			nevents += b->nitems;
			i++;
		}
		pgstat_report_activity(STATE_RUNNING,
								psprintf("sending %d events in %d requests", nevents, ncalls));
		tt_http_perform(calls, ncalls, tt_api_url, tt_http_timeout_ms);

		i = 0;
		foreach(lc, batches)
		{
			judge(cycle, lfirst(lc), &calls[i], &resend);
			pfree(calls[i].body->data);
			i++;
		}
		batches = resend;
	}
}

/* Turn one request's answer into its events' fates (and its pixel's) */
static void
judge(Cycle *cycle, Batch *batch, TTHttpCall *call, List **resend)
{
	TTAnswer	answer;
	char		reason[TT_MESSAGE_MAX + 64];
	TTVerdict	verdict;
	Pixel	   *pixel = batch->pixel;

	tt_read_answer(call->answer.data, call->answer.len, &answer);
	verdict = tt_judge(call->transport_error, call->http_status, &answer,
					   batch->nitems, reason, sizeof(reason));
	if (verdict == TT_SENT)
		pixel->succeeded = true;
	else
		pixel->error = pstrdup(reason);
	if (verdict != TT_PAUSE_URL && call->transport_error == NULL)
		cycle->api_answered = true;

	switch (verdict)
	{
		case TT_SENT:
			for (int i = 0; i < batch->nitems; i++)
				set_fate(&cycle->events[batch->items[i]], FATE_SENT, NULL,
						 answer.request_id[0] ? answer.request_id : NULL);
			break;
		case TT_RETRY:
			{
				/* one draw per request: its events are retried together */
				double		random01 = pg_prng_double(&pg_global_prng_state);

				for (int i = 0; i < batch->nitems; i++)
					retry_or_fail(&cycle->events[batch->items[i]], reason, random01);
			}
			break;
		case TT_REJECT:
			set_fate(&cycle->events[batch->items[0]], FATE_FAILED, reason,
					 answer.request_id[0] ? answer.request_id : NULL);
			break;
		case TT_PAUSE_PIXEL:
			pixel->pause_now = true;
			pixel->deferred = true;
			for (int i = 0; i < batch->nitems; i++)
				set_fate(&cycle->events[batch->items[i]], FATE_DEFERRED, NULL, NULL);
			break;
		case TT_PAUSE_URL:
			/* the URL is wrong, not the events: they wait, as they are */
			if (cycle->url_problem == NULL)
				cycle->url_problem = pstrdup(reason);
			for (int i = 0; i < batch->nitems; i++)
				set_fate(&cycle->events[batch->items[i]], FATE_HELD, NULL, NULL);
			break;
		case TT_SPLIT:
			{
				int			half = batch->nitems / 2;

				*resend = list_concat(*resend, cut_batches(cycle, pixel, batch->items, half));
				*resend = list_concat(*resend, cut_batches(cycle, pixel, batch->items + half,
														   batch->nitems - half));
			}
			break;
	}
}

/* Settle one event; the strings are copied */
static void
set_fate(Claimed *ev, Fate fate, const char *error, const char *request_id)
{
	ev->fate = fate;
	ev->error = error ? pstrdup(error) : NULL;
	ev->request_id = request_id ? pstrdup(request_id) : NULL;
}

/*
 * A failed attempt: try again after a backoff, unless the attempts are
 * spent or the next try would come too late for TikTok's deduplication.
 */
static void
retry_or_fail(Claimed *ev, const char *reason, double random01)
{
	double		delay = tt_backoff_ms(ev->attempts, tt_retry_delay_ms,
									  tt_retry_delay_max_ms, random01);

	if (ev->attempts >= tt_max_attempts)
		set_fate(ev, FATE_FAILED,
				 psprintf("gave up after %d attempts (tiktok_capi.max_attempts); last: %s",
						  ev->attempts, reason), NULL);
	else if (ev->age_ms + delay > TT_RESEND_WINDOW_MS)
		set_fate(ev, FATE_FAILED,
				 psprintf("gave up 47 hours after the first attempt (TikTok deduplicates for 48); last: %s",
						  reason), NULL);
	else
	{
		set_fate(ev, FATE_RETRY, reason, NULL);
		ev->delay_ms = delay;
	}
}
