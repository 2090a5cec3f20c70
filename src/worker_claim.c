/*-------------------------------------------------------------------------
 *
 * worker_claim.c
 *	  The claim: the due events, oldest first, read into the worker's
 *	  memory with their pixels; and when the next event is due.
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
static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr due_plan = NULL;

/*
 * Claim up to limit due pending events, oldest first.  attempts counts
 * this attempt; age_ms is 0 for a first attempt.
 *
 * While a backlog drains, each claim starts where the last one ended (the
 * cursor): the index entries of events already sent stay in the due index
 * until vacuum, and starting from the beginning each time would walk them
 * all, again and again.  An event committed late by a long transaction
 * can sort before the cursor, so the claim starts from the beginning again
 * once it has caught up (a claim short of limit) and at least every
 * TT_CURSOR_RESET_MS.
 */
void
tt_claim(Cycle *cycle, int limit)
{
	Oid			argtypes[3] = {INT4OID, TIMESTAMPTZOID, INT8OID};
	Datum		values[3];
	SPIPlanPtr	plan = tt_prepare_once(&claim_plan,
									   "SELECT id, pixel_code, payload::text, attempts + 1,"
									   "   coalesce(extract(epoch FROM now() - first_attempt_at)::float8 * 1000, 0),"
									   "   next_attempt_at"
									   "  FROM tiktok_capi.outbox"
									   " WHERE status = 'pending' AND next_attempt_at <= now()"
									   "   AND (next_attempt_at, id) > ($2, $3)"
									   " ORDER BY next_attempt_at, id LIMIT $1",
									   3, argtypes, CURSOR_OPT_GENERIC_PLAN);
	MemoryContext old;
	TimestampTz now = GetCurrentTimestamp();

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
	if (SPI_execute_plan(plan, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "tiktok_capi: could not claim events");
	if (SPI_processed < limit)
	{
		cursor_time = DT_NOBEGIN;
		cursor_id = 0;
	}
	else
	{
		HeapTuple	last = SPI_tuptable->vals[SPI_processed - 1];
		bool		isnull;

		cursor_id = DatumGetInt64(SPI_getbinval(last, SPI_tuptable->tupdesc, 1, &isnull));
		cursor_time = DatumGetTimestampTz(SPI_getbinval(last, SPI_tuptable->tupdesc, 6, &isnull));
	}

	old = MemoryContextSwitchTo(cycle->cxt);
	cycle->claimed_at = GetCurrentTransactionStartTimestamp();
	cycle->nevents = SPI_processed;
	cycle->events = palloc0(sizeof(Claimed) * Max(1, SPI_processed));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		Claimed    *ev = &cycle->events[i];
		bool		isnull;

		ev->id = DatumGetInt64(SPI_getbinval(t, d, 1, &isnull));
		ev->pixel_code = SPI_getvalue(t, d, 2);
		ev->payload = TextDatumGetCString(SPI_getbinval(t, d, 3, &isnull));
		/* TikTok reads UTF-8; a LATIN1 (or other) database stores its own */
		if (GetDatabaseEncoding() != PG_UTF8 && GetDatabaseEncoding() != PG_SQL_ASCII)
			ev->payload = pg_server_to_any(ev->payload, strlen(ev->payload), PG_UTF8);
		ev->attempts = DatumGetInt32(SPI_getbinval(t, d, 4, &isnull));
		ev->age_ms = DatumGetFloat8(SPI_getbinval(t, d, 5, &isnull));
	}
	MemoryContextSwitchTo(old);
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

/* Read the pixels table into the cycle; find each claimed event's pixel */
void
tt_load_pixels(Cycle *cycle)
{
	SPIPlanPtr	plan = tt_prepare_once(&pixels_plan,
									   "SELECT pixel_code, access_token, test_event_code, enabled,"
									   "       coalesce(paused_until > now(), false)"
									   "  FROM tiktok_capi.pixels",
									   0, NULL, CURSOR_OPT_GENERIC_PLAN);
	MemoryContext cxt = cycle->cxt;

	if (SPI_execute_plan(plan, NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "tiktok_capi: could not read the pixels");
	cycle->npixels = SPI_processed;
	cycle->pixels = MemoryContextAllocZero(cxt, sizeof(Pixel) * Max(1, SPI_processed));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		Pixel	   *p = &cycle->pixels[i];
		bool		isnull;
		char	   *test_code = SPI_getvalue(t, d, 3);

		p->code = MemoryContextStrdup(cxt, SPI_getvalue(t, d, 1));
		p->access_token = MemoryContextStrdup(cxt, SPI_getvalue(t, d, 2));
		p->test_event_code = test_code ? MemoryContextStrdup(cxt, test_code) : NULL;
		p->deferred = !DatumGetBool(SPI_getbinval(t, d, 4, &isnull)) ||
			DatumGetBool(SPI_getbinval(t, d, 5, &isnull));
	}
	for (int i = 0; i < cycle->nevents; i++)
	{
		Claimed    *ev = &cycle->events[i];

		for (int p = 0; p < cycle->npixels && ev->pixel == NULL; p++)
			if (strcmp(cycle->pixels[p].code, ev->pixel_code) == 0)
				ev->pixel = &cycle->pixels[p];
	}
}

/* Milliseconds until the next pending event is due; 0 if now */
double
tt_ms_until_due(void)
{
	SPIPlanPtr	plan = tt_prepare_once(&due_plan,
									   "SELECT extract(epoch FROM min(next_attempt_at) - now())::float8 * 1000"
									   "  FROM tiktok_capi.outbox WHERE status = 'pending'",
									   0, NULL, CURSOR_OPT_GENERIC_PLAN);
	bool		isnull;
	double		ms;

	if (SPI_execute_plan(plan, NULL, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "tiktok_capi: could not look for due events");
	ms = DatumGetFloat8(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull)
		return tt_poll_interval_ms;
	return Max(ms + 1, 0);
}
