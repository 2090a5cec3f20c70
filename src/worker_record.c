/*-------------------------------------------------------------------------
 *
 * worker_record.c
 *	  The record: each claimed event's fate written back to the outbox,
 *	  and its pixel's health; and retention, the deletion of old sent
 *	  events.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"

#include "tiktok_capi.h"
#include "worker.h"

/* How long a paused pixel waits before it is tried again */
#define TT_PAUSE_MS (3600 * 1000)

static SPIPlanPtr record_plan = NULL;
static SPIPlanPtr pixel_health_plan = NULL;
static SPIPlanPtr pause_plan = NULL;
static SPIPlanPtr retention_plan = NULL;

static bool same_record(const Claimed *a, const Claimed *b);
static void record_group(const Claimed *lead, Datum *ids, int n);

/*
 * Write the settled events' fates.  An event held by a URL pause is not
 * written: it stays pending and due, as it was.  Events with the same
 * fate, reason, request_id, delay and claim (as a request's events mostly
 * are) are written by one UPDATE of "id = ANY (ids)", a statement whose
 * only possible plan walks the primary key: joined with unnest() instead,
 * the planner once put the outbox on the outer side and rescanned the
 * array for each of its rows.  Only rows still pending are touched (a row
 * a person changed meanwhile, or erased, keeps that change), tested as
 * "neither sent nor failed": "status = 'pending'" would let the planner
 * walk the whole due index instead, which it did, at 6,000 events/s.  The
 * first attempt's time is the claim's.
 */
void
tt_record(List *settled)
{
	int			n = list_length(settled);
	Claimed   **events = palloc(sizeof(Claimed *) * Max(1, n));
	bool	   *done = palloc0(sizeof(bool) * Max(1, n));
	Datum	   *ids = palloc(sizeof(Datum) * Max(1, n));
	ListCell   *lc;
	int			k = 0;

	foreach(lc, settled)
		events[k++] = lfirst(lc);
	for (int first = 0; first < n; first++)
	{
		Claimed    *lead = events[first];
		int			m = 0;

		if (done[first] || lead->fate == FATE_HELD)
			continue;
		for (int i = first; i < n; i++)
		{
			if (!done[i] && same_record(lead, events[i]))
			{
				done[i] = true;
				ids[m++] = Int64GetDatum(events[i]->id);
			}
		}
		record_group(lead, ids, m);
	}
}

/* Whether two events' records are written the same way */
static bool
same_record(const Claimed *a, const Claimed *b)
{
	return a->fate == b->fate && a->delay_ms == b->delay_ms &&
		a->claim->claimed_at == b->claim->claimed_at &&
		(a->error == b->error ||
		 (a->error && b->error && strcmp(a->error, b->error) == 0)) &&
		(a->request_id == b->request_id ||
		 (a->request_id && b->request_id && strcmp(a->request_id, b->request_id) == 0));
}

/* One UPDATE for the n events in ids, whose record is lead's */
static void
record_group(const Claimed *lead, Datum *ids, int n)
{
	static const char *status_of[] = {"sent", "pending", "failed", "pending"};
	Oid			argtypes[7] = {INT8ARRAYOID, TEXTOID, INT4OID, TIMESTAMPTZOID,
	FLOAT8OID, TEXTOID, TEXTOID};
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	SPIPlanPtr	plan = tt_worker_prepare(&record_plan,
										 "UPDATE tiktok_capi.outbox"
										 "   SET status = $2,"
										 "       attempts = attempts + $3,"
										 "       first_attempt_at = CASE WHEN $3 = 1"
										 "            THEN coalesce(first_attempt_at, $4) ELSE first_attempt_at END,"
										 "       next_attempt_at = CASE WHEN $2 = 'pending'"
										 "            THEN now() + $5 * interval '1 millisecond' ELSE next_attempt_at END,"
										 "       last_error = $6,"
										 "       request_id = coalesce($7, request_id),"
										 "       sent_at = CASE WHEN $2 = 'sent' THEN now() END"
										 " WHERE id = ANY ($1) AND status = 'pending'",
										 7, argtypes, CURSOR_OPT_GENERIC_PLAN);

	values[0] = tt_array_datum(ids, n, INT8OID);
	values[1] = CStringGetTextDatum(status_of[lead->fate]);
	/* a deferred event's attempt does not count: its pixel was at fault */
	values[2] = Int32GetDatum(lead->fate == FATE_DEFERRED ? 0 : 1);
	values[3] = TimestampTzGetDatum(lead->claim->claimed_at);
	/* a deferred event waits for its pixel: an hour, or until it is fixed */
	values[4] = Float8GetDatum(lead->fate == FATE_DEFERRED ? TT_PAUSE_MS : lead->delay_ms);
	values[5] = lead->error ? CStringGetTextDatum(lead->error) : (Datum) 0;
	nulls[5] = lead->error ? ' ' : 'n';
	values[6] = lead->request_id ? CStringGetTextDatum(lead->request_id) : (Datum) 0;
	nulls[6] = lead->request_id ? ' ' : 'n';
	if (tt_worker_execute(plan, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "tiktok_capi: could not record delivery results");
}

/*
 * Per-pixel health: last success, last error; and for a pixel whose token
 * or permission TikTok refused, a pause, with its other pending events
 * moved past the pause so that the claim does not keep finding them.
 */
void
tt_record_pixels(List *news)
{
	Oid			argtypes[4] = {TEXTOID, BOOLOID, TEXTOID, FLOAT8OID};
	SPIPlanPtr	health = tt_worker_prepare(&pixel_health_plan,
										   "UPDATE tiktok_capi.pixels"
										   "   SET last_success_at = CASE WHEN $2 THEN now() ELSE last_success_at END,"
										   "       last_error = coalesce($3, last_error),"
										   "       last_error_at = CASE WHEN $3 IS NULL THEN last_error_at ELSE now() END,"
										   "       paused_until = CASE WHEN $4 > 0"
										   "            THEN now() + $4 * interval '1 millisecond' ELSE paused_until END"
										   " WHERE pixel_code = $1",
										   4, argtypes, CURSOR_OPT_GENERIC_PLAN);
	SPIPlanPtr	pause = tt_worker_prepare(&pause_plan,
										  "UPDATE tiktok_capi.outbox"
										  "   SET next_attempt_at = now() + $2 * interval '1 millisecond'"
										  " WHERE pixel_code = $1 AND status = 'pending'"
										  "   AND next_attempt_at < now() + $2 * interval '1 millisecond'",
										  2, (Oid[]) {TEXTOID, FLOAT8OID}, CURSOR_OPT_GENERIC_PLAN);
	ListCell   *lc;

	foreach(lc, news)
	{
		PixelNews  *pixel = lfirst(lc);
		Datum		values[4];
		char		nulls[4] = {' ', ' ', ' ', ' '};

		if (!pixel->succeeded && pixel->error == NULL)
			continue;
		values[0] = CStringGetTextDatum(pixel->code);
		values[1] = BoolGetDatum(pixel->succeeded);
		values[2] = pixel->error ? CStringGetTextDatum(pixel->error) : (Datum) 0;
		nulls[2] = pixel->error ? ' ' : 'n';
		values[3] = Float8GetDatum(pixel->pause_now ? TT_PAUSE_MS : 0);
		if (tt_worker_execute(health, values, nulls, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "tiktok_capi: could not record pixel health");
		if (pixel->pause_now)
		{
			values[1] = Float8GetDatum(TT_PAUSE_MS);
			if (tt_worker_execute(pause, values, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "tiktok_capi: could not pause a pixel's events");
			ereport(LOG,
					(errmsg("tiktok_capi: pixel %s paused for an hour: %s", pixel->code, pixel->error),
					 errhint("Fix the pixel's access token or permissions with tiktok_capi.tt_update_pixel(); its events are kept and resume at once.")));
		}
	}
}

/*
 * One slice of retention; how many rows it changed.  Sent events older
 * than tiktok_capi.retention lose their payload and become kept: their
 * key stays, so a change to the order never sends it again.  Kept keys
 * older than tiktok_capi.keep_keys go.  Erased keys stay: the person's
 * orders must never be queued again.
 */
int
tt_delete_old_sent(void)
{
	Oid			argtypes[3] = {FLOAT8OID, INT4OID, FLOAT8OID};
	Datum		values[3];
	bool		isnull;
	SPIPlanPtr	plan = tt_worker_prepare(&retention_plan,
										 "WITH kept AS ("
										 "  UPDATE tiktok_capi.outbox"
										 "     SET status = 'kept', payload = NULL, warnings = NULL, last_error = NULL"
										 "   WHERE id IN (SELECT id FROM tiktok_capi.outbox"
										 "                 WHERE status = 'sent' AND sent_at < now() - $1 * interval '1 second'"
										 "                 ORDER BY sent_at LIMIT $2)"
										 "  RETURNING 1),"
										 " gone AS ("
										 "  DELETE FROM tiktok_capi.outbox"
										 "   WHERE $3 >= 0 AND id IN (SELECT id FROM tiktok_capi.outbox"
										 "                 WHERE status = 'kept' AND sent_at < now() - $3 * interval '1 second'"
										 "                 ORDER BY sent_at LIMIT $2)"
										 "  RETURNING 1)"
										 " SELECT ((SELECT count(*) FROM kept) + (SELECT count(*) FROM gone))::int4",
										 3, argtypes, CURSOR_OPT_GENERIC_PLAN);

	/* before ALTER EXTENSION UPDATE there is no kept status: nothing to do */
	if (!tt_outbox_is_current())
		return 0;
	values[0] = Float8GetDatum((double) tt_retention_s);
	values[1] = Int32GetDatum(TT_RETENTION_ROWS);
	values[2] = Float8GetDatum((double) tt_keep_keys_s);
	if (tt_worker_execute(plan, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "tiktok_capi: could not apply the retention");
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}
