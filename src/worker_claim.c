/*-------------------------------------------------------------------------
 *
 * worker_claim.c
 *	  The claim: due events read into the worker's memory with their
 *	  pixels, the oldest or the newest, never one the worker already owns;
 *	  and when the next event is due.
 *
 * The claim writes nothing (see worker.h): the events stay 'pending' in
 * the table until the record, and a worker that dies in between leaves
 * them to the next one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "tiktok_capi.h"
#include "worker.h"

/* Longest a claim cursor is followed before starting from the beginning */
#define TT_CURSOR_RESET_MS 30000

/* where the next claim starts; DT_NOBEGIN: from the first due event */
static TimestampTz cursor_time = DT_NOBEGIN;
static int64 cursor_id = 0;
static TimestampTz cursor_started = 0;
static SPIPlanPtr pixels_plan = NULL;
static SPIPlanPtr legacy_pixels_plan = NULL;
static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr newest_plan = NULL;
static SPIPlanPtr due_plan = NULL;

/*
 * Claim up to limit due pending events into claim, skipping those the
 * worker owns (claimed and not yet recorded: in flight).  Returns how many
 * rows the claim read, owned ones included: limit means more are due.
 * attempts counts this attempt; age_ms is 0 for a first attempt.
 *
 * Oldest first: while a backlog drains, each claim starts where the last
 * one ended (the cursor): the index entries of events already sent stay
 * in the due index until vacuum, and starting from the beginning each
 * time would walk them all, again and again.  An event committed late by
 * a long transaction can sort before the cursor, so the claim starts from
 * the beginning again once it has caught up (a claim short of limit) and
 * at least every TT_CURSOR_RESET_MS.
 *
 * newest: the newest due events instead (the due index walked backwards),
 * for a commit's wake-up during a backlog: the fresh order goes out within
 * a round trip, whatever the backlog ahead of it.
 */
int
tt_claim(Claim *claim, int limit, bool newest, HTAB *owned)
{
	Oid			argtypes[3] = {INT4OID, TIMESTAMPTZOID, INT8OID};
	Datum		values[3];
	SPIPlanPtr	plan;
	MemoryContext old;
	TimestampTz now = GetCurrentTimestamp();
	int			read;
	int			n = 0;

	if (newest)
		plan = tt_worker_prepare(&newest_plan,
								 "SELECT id, pixel_code, payload::text, attempts + 1,"
								 "   coalesce(extract(epoch FROM now() - first_attempt_at)::float8 * 1000, 0),"
								 "   next_attempt_at"
								 "  FROM tiktok_capi.outbox"
								 " WHERE status = 'pending' AND next_attempt_at <= now()"
								 " ORDER BY next_attempt_at DESC, id DESC LIMIT $1",
								 1, argtypes, CURSOR_OPT_GENERIC_PLAN);
	else
		plan = tt_worker_prepare(&claim_plan,
								 "SELECT id, pixel_code, payload::text, attempts + 1,"
								 "   coalesce(extract(epoch FROM now() - first_attempt_at)::float8 * 1000, 0),"
								 "   next_attempt_at"
								 "  FROM tiktok_capi.outbox"
								 " WHERE status = 'pending' AND next_attempt_at <= now()"
								 "   AND (next_attempt_at, id) > ($2, $3)"
								 " ORDER BY next_attempt_at, id LIMIT $1",
								 3, argtypes, CURSOR_OPT_GENERIC_PLAN);

	if (TimestampDifferenceExceeds(cursor_started, now, TT_CURSOR_RESET_MS))
	{
		cursor_time = DT_NOBEGIN;
		cursor_id = 0;
	}
	if (cursor_time == DT_NOBEGIN)
		cursor_started = now;
	values[0] = Int32GetDatum(limit);
	values[1] = TimestampTzGetDatum(cursor_time);
	values[2] = Int64GetDatum(cursor_id);
	if (tt_worker_execute(plan, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "tiktok_capi: could not claim events");
	read = SPI_processed;
	if (!newest && read < limit)
	{
		cursor_time = DT_NOBEGIN;
		cursor_id = 0;
	}
	else if (!newest)
	{
		HeapTuple	last = SPI_tuptable->vals[read - 1];
		bool		isnull;

		cursor_id = DatumGetInt64(SPI_getbinval(last, SPI_tuptable->tupdesc, 1, &isnull));
		cursor_time = DatumGetTimestampTz(SPI_getbinval(last, SPI_tuptable->tupdesc, 6, &isnull));
	}

	old = MemoryContextSwitchTo(claim->cxt);
	claim->claimed_at = GetCurrentTransactionStartTimestamp();
	claim->events = palloc0(sizeof(Claimed) * Max(1, read));
	for (int i = 0; i < read; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		Claimed    *ev = &claim->events[n];
		bool		isnull;
		bool		found;
		int64		id = DatumGetInt64(SPI_getbinval(t, d, 1, &isnull));

		(void) hash_search(owned, &id, HASH_ENTER, &found);
		if (found)
			continue;			/* in flight: ours already */
		ev->id = id;
		ev->claim = claim;
		ev->pixel_code = SPI_getvalue(t, d, 2);
		ev->payload = TextDatumGetCString(SPI_getbinval(t, d, 3, &isnull));
		/* TikTok reads UTF-8; a LATIN1 (or other) database stores its own */
		if (GetDatabaseEncoding() != PG_UTF8 && GetDatabaseEncoding() != PG_SQL_ASCII)
			ev->payload = pg_server_to_any(ev->payload, strlen(ev->payload), PG_UTF8);
		ev->attempts = DatumGetInt32(SPI_getbinval(t, d, 4, &isnull));
		ev->age_ms = DatumGetFloat8(SPI_getbinval(t, d, 5, &isnull));
		n++;
	}
	claim->nevents = n;
	claim->unsettled = n;
	MemoryContextSwitchTo(old);
	return read;
}

/*
 * The next claim starts from the first due event: after a URL pause, the
 * events held back come first.
 */
void
tt_claim_from_start(void)
{
	cursor_time = DT_NOBEGIN;
	cursor_id = 0;
}

/* Read the pixels table into the claim; find each claimed event's pixel */
void
tt_load_pixels(Claim *claim)
{
	SPIPlanPtr	plan;
	MemoryContext cxt = claim->cxt;

	/* before ALTER EXTENSION UPDATE every pixel is web, as 0.2.0 sent them */
	if (tt_outbox_is_current())
		plan = tt_worker_prepare(&pixels_plan,
								 "SELECT pixel_code, access_token, test_event_code, enabled,"
								 "       coalesce(paused_until > now(), false), event_source"
								 "  FROM tiktok_capi.pixels",
								 0, NULL, CURSOR_OPT_GENERIC_PLAN);
	else
		plan = tt_worker_prepare(&legacy_pixels_plan,
								 "SELECT pixel_code, access_token, test_event_code, enabled,"
								 "       coalesce(paused_until > now(), false), 'web'"
								 "  FROM tiktok_capi.pixels",
								 0, NULL, CURSOR_OPT_GENERIC_PLAN);

	if (tt_worker_execute(plan, NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "tiktok_capi: could not read the pixels");
	claim->npixels = SPI_processed;
	claim->pixels = MemoryContextAllocZero(cxt, sizeof(Pixel) * Max(1, SPI_processed));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		Pixel	   *p = &claim->pixels[i];
		bool		isnull;
		char	   *test_code = SPI_getvalue(t, d, 3);

		p->code = MemoryContextStrdup(cxt, SPI_getvalue(t, d, 1));
		p->access_token = MemoryContextStrdup(cxt, SPI_getvalue(t, d, 2));
		p->test_event_code = test_code ? MemoryContextStrdup(cxt, test_code) : NULL;
		p->event_source = MemoryContextStrdup(cxt, SPI_getvalue(t, d, 6));
		p->deferred = !DatumGetBool(SPI_getbinval(t, d, 4, &isnull)) ||
			DatumGetBool(SPI_getbinval(t, d, 5, &isnull));
	}
	for (int i = 0; i < claim->nevents; i++)
	{
		Claimed    *ev = &claim->events[i];

		for (int p = 0; p < claim->npixels && ev->pixel == NULL; p++)
			if (strcmp(claim->pixels[p].code, ev->pixel_code) == 0)
				ev->pixel = &claim->pixels[p];
	}
}

/*
 * Milliseconds until the next pending event not yet due becomes due; the
 * due ones were just claimed, or are in flight (and so owned).
 */
double
tt_ms_until_due(void)
{
	SPIPlanPtr	plan = tt_worker_prepare(&due_plan,
										 "SELECT extract(epoch FROM min(next_attempt_at) - now())::float8 * 1000"
										 "  FROM tiktok_capi.outbox WHERE status = 'pending' AND next_attempt_at > now()",
										 0, NULL, CURSOR_OPT_GENERIC_PLAN);
	bool		isnull;
	double		ms;

	if (tt_worker_execute(plan, NULL, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "tiktok_capi: could not look for due events");
	ms = DatumGetFloat8(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull)
		return tt_poll_interval_ms;
	return Max(ms + 1, 0);
}
