/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  Writing events into tiktok_capi.outbox, in the caller's transaction,
 *	  and tt_enqueue(), the SQL way to do it.
 *
 * An outbox row exists if and only if the transaction that wrote it
 * commits.  Its key, (pixel_code, event, event_id), is queued once for
 * good: once sent (and kept after retention), erased or failed after
 * attempts, a repeat of the key is a no-op.  While the event is pending,
 * the order's capture rebuilds it from the order as committed (value,
 * items, consent), or withdraws it (consent denied under skip).  An event
 * the worker has already claimed, and is sending in that moment, goes out
 * as it was claimed: the worker sends the payload it read, and records
 * that row as sent even if its payload was rebuilt meanwhile.
 * Statements run through SPI with plans prepared once per backend.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "capture.h"
#include "tiktok_capi.h"

PG_FUNCTION_INFO_V1(tt_enqueue_sql);

static SPIPlanPtr insert_plan = NULL;
static SPIPlanPtr legacy_insert_plan = NULL;
static SPIPlanPtr enqueue_plan = NULL;
static SPIPlanPtr rebuild_plan = NULL;
static SPIPlanPtr withdraw_plan = NULL;
static SPIPlanPtr owner_plan = NULL;
static SPIPlanPtr settled_plan = NULL;
static SPIPlanPtr known_plan = NULL;
static SPIPlanPtr existing_plan = NULL;
static SPIPlanPtr default_pixel_plan = NULL;
static SPIPlanPtr legacy_default_pixel_plan = NULL;
static SPIPlanPtr pixel_source_plan = NULL;
static SPIPlanPtr legacy_pixel_source_plan = NULL;

static bool write_and_wake(SPIPlanPtr plan, Datum *values, const char *nulls,
						   int expected, const char *what);
static char *key_owner(Datum *key, const char *source);
static const char *payload_string(Jsonb *event, const char *key);
static bool key_found(SPIPlanPtr plan, const char *pixel_code, const char *event,
					  const char *event_id);

/*
 * Insert one event built by tt_event; returns its id, or 0 when its key is
 * already in the outbox (queued, sent, kept or erased).  The caller is
 * connected to SPI.
 */
static int64
enqueue_insert(const char *pixel_code, const char *event,
			   const char *event_id, TimestampTz event_time, Jsonb *payload)
{
	Oid			argtypes[5] = {TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, JSONBOID};
	Datum		values[5];
	SPIPlanPtr	plan;
	bool		isnull;
	int			rc;

	plan = tt_prepare_once(&enqueue_plan,
						   "INSERT INTO tiktok_capi.outbox"
						   " (pixel_code, event, event_id, event_time, payload)"
						   " VALUES ($1, $2, $3, $4, $5)"
						   " ON CONFLICT ON CONSTRAINT outbox_dedup_key DO NOTHING"
						   " RETURNING id",
						   5, argtypes, 0);
	values[0] = CStringGetTextDatum(pixel_code);
	values[1] = CStringGetTextDatum(event);
	values[2] = CStringGetTextDatum(event_id);
	values[3] = TimestampTzGetDatum(event_time);
	values[4] = JsonbPGetDatum(payload);

	rc = SPI_execute_plan(plan, values, NULL, false, 1);
	if (rc != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "outbox insert failed: %s", SPI_result_code_string(rc));
	tt_wake_worker_at_commit();
	if (SPI_processed == 0)
		return 0;
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Queue a captured order's event under its key, once for the order's
 * whole life.  A new key is inserted.  A key still pending (or failed
 * without a payload, when the trigger could not build it) that this
 * source queued is rebuilt from the order as it is now, keeping the
 * event_time it was first queued with: the conversion happened then.  A
 * key sent, kept after retention, erased, or failed after attempts stays
 * as it is.  A key another table queued is never touched: the order gets
 * a failed row of its own, under "source:event_id", naming both tables.
 * A failed event (failed_reason set) is queued with the payload {}; else a
 * payload NULL withdraws the pending event (consent denied under skip).
 * A backfill (only_new) writes a new key only: a key queued meanwhile by
 * the order's trigger stands, built from a newer view of the order.
 * The caller is connected to SPI.
 */
TTQueued
tt_outbox_queue(const TTQueueItem *item)
{
	Oid			argtypes[8] = {TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID,
	JSONBOID, TEXTARRAYOID, TEXTOID, TEXTOID};
	Datum		values[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	SPIPlanPtr	plan;
	char	   *other;
	TTQueueItem collided;

	values[0] = CStringGetTextDatum(item->pixel_code);
	values[1] = CStringGetTextDatum(item->event);
	values[2] = CStringGetTextDatum(item->event_id);
	values[3] = TimestampTzGetDatum(item->event_time);
	if (item->failed_reason != NULL)
		values[4] = DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
	else if (item->payload != NULL)
		values[4] = JsonbPGetDatum(item->payload);
	else
		nulls[4] = 'n';
	values[5] = tt_text_array(item->warnings, &nulls[5]);
	values[6] = item->failed_reason ? CStringGetTextDatum(item->failed_reason) : (Datum) 0;
	nulls[6] = item->failed_reason ? ' ' : 'n';
	values[7] = CStringGetTextDatum(item->source);

	/* before ALTER EXTENSION UPDATE: as 0.2.0 did, the first row stands */
	if (!tt_outbox_is_current())
	{
		if (nulls[4] == 'n')
			return TT_QUEUED_UNCHANGED;
		plan = tt_prepare_once(&legacy_insert_plan,
							   "INSERT INTO tiktok_capi.outbox"
							   " (pixel_code, event, event_id, event_time, payload, warnings,"
							   "  status, last_error)"
							   " VALUES ($1, $2, $3, $4, $5, $6,"
							   "  CASE WHEN $7 IS NULL THEN 'pending' ELSE 'failed' END, $7)"
							   " ON CONFLICT ON CONSTRAINT outbox_dedup_key DO NOTHING",
							   7, argtypes, 0);
		return write_and_wake(plan, values, nulls, SPI_OK_INSERT, "insert") ?
			TT_QUEUED_NEW : TT_QUEUED_UNCHANGED;
	}

	if (nulls[4] == 'n')
	{
		plan = tt_prepare_once(&withdraw_plan,
							   "DELETE FROM tiktok_capi.outbox o"
							   " WHERE o.pixel_code = $1 AND o.event = $2 AND o.event_id = $3"
							   "   AND o.status = 'pending' AND o.source = $8",
							   8, argtypes, 0);
		return write_and_wake(plan, values, nulls, SPI_OK_DELETE, "withdrawal") ?
			TT_QUEUED_WITHDRAWN : TT_QUEUED_UNCHANGED;
	}

	plan = tt_prepare_once(&insert_plan,
						   "INSERT INTO tiktok_capi.outbox"
						   " (pixel_code, event, event_id, event_time, payload, warnings,"
						   "  status, last_error, source)"
						   " VALUES ($1, $2, $3, $4, $5, $6,"
						   "  CASE WHEN $7 IS NULL THEN 'pending' ELSE 'failed' END, $7, $8)"
						   " ON CONFLICT ON CONSTRAINT outbox_dedup_key DO NOTHING",
						   8, argtypes, 0);
	if (write_and_wake(plan, values, nulls, SPI_OK_INSERT, "insert"))
		return TT_QUEUED_NEW;
	/* a backfill's view of the order may be older than the queued one */
	if (item->only_new)
		return TT_QUEUED_UNCHANGED;

	plan = tt_prepare_once(&rebuild_plan,
						   "UPDATE tiktok_capi.outbox o"
						   "   SET payload = n.payload, warnings = $6, last_error = $7,"
						   "       status = CASE WHEN $7 IS NULL THEN 'pending' ELSE 'failed' END"
						   "  FROM (SELECT o2.id, CASE WHEN o2.payload ? 'event_time'"
						   "                THEN jsonb_set($5, '{event_time}', o2.payload -> 'event_time')"
						   "                ELSE $5 END AS payload"
						   "          FROM tiktok_capi.outbox o2"
						   "         WHERE o2.pixel_code = $1 AND o2.event = $2 AND o2.event_id = $3) n"
						   " WHERE o.id = n.id AND o.source = $8"
						   "   AND (o.status = 'pending' OR (o.status = 'failed' AND o.payload = '{}'))"
						   "   AND (o.payload, o.warnings, o.last_error) IS DISTINCT FROM (n.payload, $6, $7)",
						   8, argtypes, 0);
	if (write_and_wake(plan, values, nulls, SPI_OK_UPDATE, "rebuild"))
		return TT_QUEUED_REBUILT;

	/* the key is settled, unchanged, or another table's */
	other = key_owner(values, item->source);
	if (other == NULL)
		return TT_QUEUED_UNCHANGED;
	collided = *item;
	collided.event_id = psprintf("%s:%s", item->source, item->event_id);
	collided.warnings = NIL;
	collided.failed_reason = psprintf("order \"%s\" of %s has the event_id of an event %s queued for pixel %s, event %s: the ids of two tables collide; give one trigger a distinct prefix with event_id_prefix=",
									  item->event_id, item->source, other,
									  item->pixel_code, item->event);
	(void) tt_outbox_queue(&collided);
	return TT_QUEUED_COLLISION;
}

/*
 * Run one write of tt_outbox_queue(); whether it wrote a row, and then the
 * worker is woken at commit
 */
static bool
write_and_wake(SPIPlanPtr plan, Datum *values, const char *nulls, int expected,
			   const char *what)
{
	int			rc = SPI_execute_plan(plan, values, nulls, false, 0);

	if (rc != expected)
		elog(ERROR, "outbox %s failed: %s", what, SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return false;
	tt_wake_worker_at_commit();
	return true;
}

/*
 * The table that queued a key, when it is another existing table than
 * source ("... from public.web_orders"); NULL when the key is source's own,
 * tt_enqueue's, or its table is gone or renamed (then it cannot be told
 * apart from source, and the key stands).
 */
static char *
key_owner(Datum *key, const char *source)
{
	SPIPlanPtr	plan;
	bool		isnull;
	Datum		d;

	plan = tt_prepare_once(&owner_plan,
						   "SELECT 'from ' || o.source FROM tiktok_capi.outbox o"
						   " WHERE o.pixel_code = $1 AND o.event = $2 AND o.event_id = $3"
						   "   AND o.source IS DISTINCT FROM $4"
						   "   AND pg_catalog.to_regclass(o.source) IS DISTINCT FROM pg_catalog.to_regclass($4)"
						   "   AND pg_catalog.to_regclass(o.source) IS NOT NULL",
						   4, (Oid[]) {TEXTOID, TEXTOID, TEXTOID, TEXTOID}, 0);
	if (SPI_execute_plan(plan, (Datum[]) {key[0], key[1], key[2], CStringGetTextDatum(source)},
						 NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "outbox key lookup failed");
	if (SPI_processed == 0)
		return NULL;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return TextDatumGetCString(d);
}

/* Does the plan, given the key, find a row? */
static bool
key_found(SPIPlanPtr plan, const char *pixel_code, const char *event,
		  const char *event_id)
{
	Datum		values[3];

	values[0] = CStringGetTextDatum(pixel_code);
	values[1] = CStringGetTextDatum(event);
	values[2] = CStringGetTextDatum(event_id);
	if (SPI_execute_plan(plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "outbox key lookup failed");
	return SPI_processed > 0;
}

/*
 * Is the key settled for good: sent, kept after retention, erased, or
 * failed with the payload it was built with (the API or the worker
 * refused it)?  Then a change to the order builds nothing.  The
 * caller is connected to SPI.
 */
bool
tt_outbox_settled(const char *pixel_code, const char *event, const char *event_id)
{
	if (!tt_outbox_is_current())
		return false;
	return key_found(tt_prepare_once(&settled_plan,
									 "SELECT 1 FROM tiktok_capi.outbox o"
									 " WHERE o.pixel_code = $1 AND o.event = $2 AND o.event_id = $3"
									 "   AND (o.status IN ('sent', 'kept', 'erased')"
									 "        OR (o.status = 'failed' AND o.payload <> '{}'))",
									 3, (Oid[]) {TEXTOID, TEXTOID, TEXTOID}, 0),
					 pixel_code, event, event_id);
}

/*
 * Is the key in the outbox at all, whatever its status (pending, sent,
 * kept, erased, failed)?  A backfill leaves such a key alone.  The caller
 * is connected to SPI.
 */
bool
tt_outbox_known(const char *pixel_code, const char *event, const char *event_id)
{
	return key_found(tt_prepare_once(&known_plan,
									 "SELECT 1 FROM tiktok_capi.outbox o"
									 " WHERE o.pixel_code = $1 AND o.event = $2 AND o.event_id = $3",
									 3, (Oid[]) {TEXTOID, TEXTOID, TEXTOID}, 0),
					 pixel_code, event, event_id);
}

/*
 * The pixel to use when none is named: the only enabled one.  NULL, with
 * *why set, when there are none or several.  The caller is connected to SPI.
 */
char *
tt_default_pixel(const char **why)
{
	TTEventSource source;

	return tt_default_pixel_source(why, &source);
}

/*
 * tt_default_pixel() with the pixel's event source, read in the same
 * lookup: a trigger without pixel= asks this for each row.  Before ALTER
 * EXTENSION UPDATE every pixel is web, as in tt_pixel_source().
 */
char *
tt_default_pixel_source(const char **why, TTEventSource *source)
{
	SPIPlanPtr	plan;
	int			rc;

	if (tt_outbox_is_current())
		plan = tt_prepare_once(&default_pixel_plan,
							   "SELECT pixel_code, event_source FROM tiktok_capi.pixels"
							   " WHERE enabled ORDER BY pixel_code LIMIT 2",
							   0, NULL, 0);
	else
		plan = tt_prepare_once(&legacy_default_pixel_plan,
							   "SELECT pixel_code, 'web' FROM tiktok_capi.pixels"
							   " WHERE enabled ORDER BY pixel_code LIMIT 2",
							   0, NULL, 0);
	rc = SPI_execute_plan(plan, NULL, NULL, true, 2);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pixel lookup failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 1)
	{
		if (!tt_event_source_from_name(SPI_getvalue(SPI_tuptable->vals[0],
													SPI_tuptable->tupdesc, 2), source))
			*source = TT_SOURCE_WEB;
		return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	}
	*why = SPI_processed == 0 ?
		"no pixel is configured: add one with tiktok_capi.tt_add_pixel()" :
		"several pixels are configured: name one with pixel=CODE";
	return NULL;
}

/* Is the pixel configured?  The caller is connected to SPI. */
bool
tt_pixel_exists(const char *pixel_code)
{
	Oid			argtype = TEXTOID;
	Datum		code = CStringGetTextDatum(pixel_code);

	if (SPI_execute_with_args("SELECT 1 FROM tiktok_capi.pixels WHERE pixel_code = $1",
							  1, &argtype, &code, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "pixel lookup failed");
	return SPI_processed == 1;
}

/*
 * A configured pixel's event source and whether it is enabled; false when
 * no such pixel.  Before ALTER EXTENSION UPDATE every pixel is web, as
 * 0.2.0 sent them.  The caller is connected to SPI.
 */
bool
tt_pixel_source(const char *pixel_code, TTEventSource *source, bool *enabled)
{
	Oid			argtype = TEXTOID;
	Datum		code = CStringGetTextDatum(pixel_code);
	SPIPlanPtr	plan;
	bool		isnull;

	if (tt_outbox_is_current())
		plan = tt_prepare_once(&pixel_source_plan,
							   "SELECT event_source, enabled FROM tiktok_capi.pixels"
							   " WHERE pixel_code = $1",
							   1, &argtype, 0);
	else
		plan = tt_prepare_once(&legacy_pixel_source_plan,
							   "SELECT 'web', enabled FROM tiktok_capi.pixels"
							   " WHERE pixel_code = $1",
							   1, &argtype, 0);

	if (SPI_execute_plan(plan, &code, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "pixel lookup failed");
	if (SPI_processed != 1)
		return false;
	if (!tt_event_source_from_name(SPI_getvalue(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, 1), source))
		*source = TT_SOURCE_WEB;
	*enabled = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 2, &isnull));
	return true;
}

/*
 * The pixel a direct call means: the one it names, which must be
 * configured, or else the only one.  An ERROR otherwise.  The caller is
 * connected to SPI; the result outlives SPI_finish.
 */
char *
tt_pixel_for_call(const char *named)
{
	const char *why = NULL;
	char	   *pixel;

	if (named == NULL)
	{
		pixel = tt_default_pixel(&why);
		if (pixel == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("no pixel given and %s", why),
					 errhint("Name it with the function's pixel argument, e.g. pixel => 'C4XX...'.")));
		named = pixel;
	}
	else if (!tt_pixel_exists(named))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("pixel \"%s\" is not configured", named),
					 errhint("Add it first with tiktok_capi.tt_add_pixel().")));
	pixel = SPI_palloc(strlen(named) + 1);
	strcpy(pixel, named);
	return pixel;
}

/* A string member of an event, or NULL when absent or not a string */
static const char *
payload_string(Jsonb *event, const char *key)
{
	JsonbValue *v = getKeyJsonValueFromContainer(&event->root, key,
												 strlen(key), NULL);

	if (v == NULL || v->type != jbvString || v->val.string.len == 0)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* tt_enqueue(pixel_code, event jsonb): queue an event built by tt_event */
Datum
tt_enqueue_sql(PG_FUNCTION_ARGS)
{
	Jsonb	   *event;
	const char *name;
	const char *event_id;
	JsonbValue *time;
	char	   *pixel;
	double		seconds;
	int64		id;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event must not be NULL")));
	event = PG_GETARG_JSONB_P(1);
	if (!JB_ROOT_IS_OBJECT(event) || JB_ROOT_IS_SCALAR(event))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event must be a JSON object built by tiktok_capi.tt_event()")));
	name = payload_string(event, "event");
	event_id = payload_string(event, "event_id");
	time = getKeyJsonValueFromContainer(&event->root, "event_time", 10, NULL);
	if (name == NULL || event_id == NULL || time == NULL || time->type != jbvNumeric)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event needs \"event\" and \"event_id\" strings and a numeric \"event_time\""),
				 errhint("Build it with tiktok_capi.tt_event().")));
	seconds = DatumGetFloat8(DirectFunctionCall1(numeric_float8,
												 NumericGetDatum(time->val.numeric)));

	SPI_connect();
	pixel = tt_pixel_for_call(PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0)));
	id = enqueue_insert(pixel, name, event_id,
						DatumGetTimestampTz(DirectFunctionCall1(float8_timestamptz,
																Float8GetDatum(seconds))),
						event);
	if (id == 0)
	{
		Oid			argtypes[3] = {TEXTOID, TEXTOID, TEXTOID};
		Datum		values[3];
		bool		isnull;
		SPIPlanPtr	plan = tt_prepare_once(&existing_plan,
										"SELECT id FROM tiktok_capi.outbox"
										" WHERE pixel_code = $1 AND event = $2 AND event_id = $3",
										3, argtypes, 0);

		values[0] = CStringGetTextDatum(pixel);
		values[1] = CStringGetTextDatum(name);
		values[2] = CStringGetTextDatum(event_id);
		if (SPI_execute_plan(plan, values, NULL, false, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "queued event not found");
		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();
	PG_RETURN_INT64(id);
}
