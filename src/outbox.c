/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  Writing events into tiktok_capi.outbox, in the caller's transaction,
 *	  and tt_enqueue(), the SQL way to do it.
 *
 * An outbox row exists if and only if the transaction that wrote it
 * commits.  A repeat of a (pixel_code, event, event_id) key is a no-op:
 * TikTok would count it once anyway, and the first row already carries it.
 * Statements run through SPI with plans prepared once per backend.
 *
 * The one exception to "the first row stands" is consent: when an order's
 * consent changes while its event is still pending, the trigger replaces
 * the pending row's payload (identifiers withheld or restored) or deletes
 * it (tiktok_capi.consent_denied = skip).  Rows already sent or failed are
 * never touched.  An event the worker has already claimed, and is sending
 * in that moment, goes out as it was claimed: the worker sends the payload
 * it read, and records that row as sent even if its payload was replaced
 * meanwhile.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "tiktok_capi.h"

PG_FUNCTION_INFO_V1(tt_enqueue_sql);

static SPIPlanPtr insert_plan = NULL;
static SPIPlanPtr replace_plan = NULL;
static SPIPlanPtr withdraw_plan = NULL;
static SPIPlanPtr existing_plan = NULL;
static SPIPlanPtr default_pixel_plan = NULL;

static const char *payload_string(Jsonb *event, const char *key);

/*
 * Insert one event; returns its id, or 0 when its key is already queued.
 * warnings (a List of char *) are the builder's notes; failed_reason, when
 * set, records the event as failed from the start (a configuration problem
 * a person must fix).  The caller is connected to SPI.
 */
int64
tt_outbox_insert(const char *pixel_code, const char *event,
				 const char *event_id, TimestampTz event_time, Jsonb *payload,
				 List *warnings, const char *failed_reason)
{
	Oid			argtypes[7] = {TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID,
	JSONBOID, TEXTARRAYOID, TEXTOID};
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	SPIPlanPtr	plan;
	bool		isnull;
	int			rc;

	plan = tt_prepare_once(&insert_plan,
						"INSERT INTO tiktok_capi.outbox"
						" (pixel_code, event, event_id, event_time, payload, warnings,"
						"  status, last_error)"
						" VALUES ($1, $2, $3, $4, $5, $6,"
						"  CASE WHEN $7 IS NULL THEN 'pending' ELSE 'failed' END, $7)"
						" ON CONFLICT ON CONSTRAINT outbox_dedup_key DO NOTHING"
						" RETURNING id",
						7, argtypes, 0);
	values[0] = CStringGetTextDatum(pixel_code);
	values[1] = CStringGetTextDatum(event);
	values[2] = CStringGetTextDatum(event_id);
	values[3] = TimestampTzGetDatum(event_time);
	values[4] = JsonbPGetDatum(payload);
	values[5] = tt_text_array(warnings, &nulls[5]);
	if (failed_reason != NULL)
		values[6] = CStringGetTextDatum(failed_reason);
	else
		nulls[6] = 'n';

	rc = SPI_execute_plan(plan, values, nulls, false, 1);
	if (rc != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "outbox insert failed: %s", SPI_result_code_string(rc));
	tt_wake_worker_at_commit();
	if (SPI_processed == 0)
		return 0;
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Bring a still pending event in line with a change of the customer's
 * consent: replace its payload and warnings with the ones built from the
 * order as it is now, or, when payload is NULL, delete it (the consent
 * policy is to queue nothing without consent).  The queued event_time
 * stands, in the row and in the payload: the conversion happened when it
 * was first queued.  Returns whether a pending row was found; rows already
 * sent or failed are never touched.  The caller is connected to SPI.
 * Only tt_capture() calls this, under its pinned search_path.
 */
bool
tt_outbox_replace_pending(const char *pixel_code, const char *event,
						  const char *event_id, Jsonb *payload,
						  List *warnings)
{
	Oid			argtypes[5] = {TEXTOID, TEXTOID, TEXTOID, JSONBOID, TEXTARRAYOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	SPIPlanPtr	plan;
	int			rc;

	values[0] = CStringGetTextDatum(pixel_code);
	values[1] = CStringGetTextDatum(event);
	values[2] = CStringGetTextDatum(event_id);
	if (payload == NULL)
	{
		plan = tt_prepare_once(&withdraw_plan,
							"DELETE FROM tiktok_capi.outbox o"
							" WHERE o.pixel_code = $1"
							"   AND o.event = $2"
							"   AND o.event_id = $3"
							"   AND o.status = 'pending'",
							3, argtypes, 0);
		rc = SPI_execute_plan(plan, values, nulls, false, 0);
		if (rc != SPI_OK_DELETE)
			elog(ERROR, "outbox withdrawal failed: %s", SPI_result_code_string(rc));
		return SPI_processed > 0;
	}

	plan = tt_prepare_once(&replace_plan,
						"UPDATE tiktok_capi.outbox o"
						"   SET payload = jsonb_set($4, '{event_time}',"
						"         COALESCE(o.payload -> 'event_time',"
						"                    $4 -> 'event_time')),"
						"       warnings = $5"
						" WHERE o.pixel_code = $1"
						"   AND o.event = $2"
						"   AND o.event_id = $3"
						"   AND o.status = 'pending'",
						5, argtypes, 0);
	values[3] = JsonbPGetDatum(payload);
	values[4] = tt_text_array(warnings, &nulls[4]);
	rc = SPI_execute_plan(plan, values, nulls, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "outbox replacement failed: %s", SPI_result_code_string(rc));
	tt_wake_worker_at_commit();
	return SPI_processed > 0;
}

/*
 * The pixel to use when none is named: the only enabled one.  NULL, with
 * *why set, when there are none or several.  The caller is connected to SPI.
 */
char *
tt_default_pixel(const char **why)
{
	SPIPlanPtr	plan;
	int			rc;

	plan = tt_prepare_once(&default_pixel_plan,
						"SELECT pixel_code FROM tiktok_capi.pixels"
						" WHERE enabled ORDER BY pixel_code LIMIT 2",
						0, NULL, 0);
	rc = SPI_execute_plan(plan, NULL, NULL, true, 2);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pixel lookup failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 1)
		return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	*why = SPI_processed == 0 ?
		"no pixel is configured: add one with tiktok_capi.tt_add_pixel()" :
		"several pixels are configured: name one with pixel=CODE";
	return NULL;
}

/*
 * The pixel a direct call means: the one it names, which must be
 * configured, or else the only one.  An ERROR otherwise.  The caller is
 * connected to SPI; the result outlives SPI_finish.
 */
char *
tt_pixel_for_call(const char *named)
{
	Oid			argtype = TEXTOID;
	Datum		code;
	const char *why = NULL;
	char	   *pixel;

	if (named == NULL)
	{
		pixel = tt_default_pixel(&why);
		if (pixel == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("no pixel given and %s", why)));
		named = pixel;
	}
	else
	{
		code = CStringGetTextDatum(named);
		if (SPI_execute_with_args("SELECT 1 FROM tiktok_capi.pixels WHERE pixel_code = $1",
								  1, &argtype, &code, NULL, true, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("pixel \"%s\" is not configured", named),
					 errhint("Add it first with tiktok_capi.tt_add_pixel().")));
	}
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
	id = tt_outbox_insert(pixel, name, event_id,
						  DatumGetTimestampTz(DirectFunctionCall1(float8_timestamptz,
																  Float8GetDatum(seconds))),
						  event, NIL, NULL);
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
